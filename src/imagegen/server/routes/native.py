"""imagegen's own API: asynchronous jobs, their events and images, the served models, health.

``POST /v1/jobs`` answers 202 at once with the job; ``GET /v1/jobs/{id}`` and the Server-Sent Events of
``GET /v1/jobs/{id}/events`` follow it; ``DELETE /v1/jobs/{id}`` cancels it. Errors are
``{"error": {"code", "message", "field", "type", "param"}}`` (``type`` and ``param`` for OpenAI SDK clients).
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import AsyncIterator
from types import MappingProxyType
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Header, Query, Request, Response
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field

from imagegen.errors import InvalidRequest
from imagegen.loading import ModelInfo
from imagegen.requests import GenerationRequest
from imagegen.server.deps import get_service
from imagegen.server.errors import JobNotFound
from imagegen.server.jobs import Job, JobStatus
from imagegen.server.service import JobService

router = APIRouter()
#: Seconds of silence after which an event stream gets a comment line (idle proxies close streams after ~60 s).
KEEPALIVE_SECONDS = 15.0
#: Largest ``offset`` of ``GET /v1/jobs``: SQLite binds 64-bit integers only, so a huge one must be a 422, not a 500.
MAX_LIST_OFFSET = 10**9
Service = Annotated[JobService, Depends(get_service)]


class JobCreate(BaseModel):
    """A text-to-image or image-to-image job. Names follow diffusers; unset values take the model's defaults."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {"prompt": "a lighthouse at dawn, oil painting", "seed": 1234, "num_inference_steps": 30},
                {"prompt": "the same, at night", "init_image": "data:image/png;base64,...", "strength": 0.6},
            ]
        },
    )

    prompt: str = ""
    negative_prompt: str = ""
    seed: int = Field(-1, description="-1 picks a random seed; image i of a batch uses seed + i")
    num_inference_steps: int | None = None
    guidance_scale: float | None = None
    width: int | None = Field(None, description="multiple of 8; default: the model's native size")
    height: int | None = None
    num_images: int = 1
    sampler: str | None = Field(None, description="A1111 name, e.g. 'DPM++ 2M', 'Euler a'")
    schedule_type: str | None = Field(None, description="Automatic, Karras, Exponential, SGM Uniform, ...")
    init_image: str | None = Field(None, description="image-to-image input: base64 or a data: URI (PNG, JPEG, WebP)")
    strength: float = Field(0.75, description="image-to-image: fraction of the steps re-run on the input")
    model: str | None = Field(None, description="one of GET /v1/models; default: the server's default model")
    refiner: str | None = Field(None, description="SDXL refiner continuing the base's latents")
    denoising_end: float = Field(0.8, description="where the SDXL base hands over to the refiner")
    eta: float | None = Field(
        None, description="DDIM only (sampler 'DDIM'): 0 (default) is deterministic, up to 1 adds fresh noise per step"
    )


class ErrorDetail(BaseModel):
    code: str = Field(description="stable machine-readable code, e.g. invalid_request, queue_full, not_found")
    message: str
    field: str | None = Field(None, description="the request field at fault, when there is one")
    type: str = Field(
        description="OpenAI's error type (invalid_request_error, requests, server_error), for OpenAI SDK clients"
    )
    param: str | None = Field(None, description="the same as field, under OpenAI's name")


class ErrorOut(BaseModel):
    error: ErrorDetail


class JobErrorOut(BaseModel):
    code: str = Field(description="out_of_memory, worker_lost, timeout, model_load_error, internal_error, ...")
    message: str | None


class JobOut(BaseModel):
    id: str
    object: Literal["job"] = "job"
    status: JobStatus
    dialect: str = Field(description="native, a1111 or openai: every dialect shares one queue")
    model: str | None
    created_at: float = Field(description="unix seconds")
    started_at: float | None
    finished_at: float | None
    progress: float = Field(ge=0.0, le=1.0)
    step: int
    total_steps: int
    queue_position: int | None = Field(description="0 = next to run; null unless queued")
    attempts: int = Field(description="times a worker started it (a job whose worker died runs again once)")
    cancel_requested: bool
    error: JobErrorOut | None
    images: list[str] = Field(
        description="signed URLs of the result PNGs (with their A1111 infotext): fetchable without the API key until "
        "they expire; each read of the job gives fresh ones"
    )
    seeds: list[int]
    infotexts: list[str]
    warnings: list[str]
    timings: dict[str, float] = Field(description="seconds per phase: load, denoise, refine, decode, total")
    request: dict[str, Any] = Field(description="what was asked, with the model resolved (init_image: present?)")


class JobList(BaseModel):
    object: Literal["list"] = "list"
    data: list[JobOut]
    total: int
    limit: int
    offset: int
    has_more: bool


class ModelOut(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str
    family: str = Field(description="sd1, sd2, sdxl or sdxl-refiner")
    width: int = Field(description="native width")
    height: int = Field(description="native height")


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelOut]


#: What each error status of the native routes means (the OpenAPI description).
_ERRORS = MappingProxyType(
    {
        400: "a bad value; error.field names it",
        401: "missing or wrong API key",
        403: "image URL signature expired (error.code url_expired) or invalid (invalid_signature)",
        404: "no such job or image",
        409: "Idempotency-Key reused with another body",
        413: "body over the size limit",
        421: "the Host header is not a loopback name (servers without authentication only)",
        422: "malformed body or unknown field",
        429: "queue full; see Retry-After",
        503: "shutting down; see Retry-After",
    }
)


def _errors(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` for a route: 401, 421 and ``statuses``, each a fresh dict (FastAPI may keep what it
    gets)."""
    return {status: {"model": ErrorOut, "description": _ERRORS[status]} for status in (401, 421, *statuses)}


def image_url(request: Request, name: str, service: JobService) -> str:
    """Absolute signed URL of a result image (``GET /v1/images/{name}?expires=...&sig=...``), valid for
    ``url_ttl`` seconds without credentials."""
    return f"{request.url_for('get_image', name=name)}?{service.url_signer.sign(name).query}"


def job_json(job: Job, request: Request, service: JobService) -> dict[str, Any]:
    """The native representation of a job."""
    public_request = {k: v for k, v in job.request.items() if k != "init_image"}
    public_request["init_image"] = bool(job.request.get("init_image"))
    return {
        "id": job.id,
        "object": "job",
        "status": job.status.value,
        "dialect": job.dialect,
        "model": job.model,
        "created_at": job.created_at,
        "started_at": job.started_at,
        "finished_at": job.finished_at,
        "progress": round(job.progress, 4),
        "step": job.step,
        "total_steps": job.total_steps,
        "queue_position": service.queue_position(job.id) if job.status is JobStatus.QUEUED else None,
        "attempts": job.attempts,
        "cancel_requested": job.cancel_requested,
        "error": {"code": job.error_code, "message": job.error_message} if job.error_code else None,
        "images": [image_url(request, name, service) for name in job.images],
        "seeds": list(job.seeds),
        "infotexts": list(job.infotexts),
        "warnings": list(job.warnings),
        "timings": dict(job.timings),
        "request": public_request,
    }


def _job_or_404(service: JobService, job_id: str) -> Job:
    job = service.get(job_id)
    if job is None:
        raise JobNotFound(f"no job {job_id[:100]!r}")
    return job


def _request(body: JobCreate, service: JobService) -> GenerationRequest:
    from imagegen.imageio import decode_base64, decode_image

    limits = service.settings.limits
    # 1. The cheap checks (field values, steps/size/count limits) on the request without its image, so a bad step
    #    count is refused before megabytes of base64 are decoded.
    request = GenerationRequest(**{**body.model_dump(), "init_image": None})
    limits.check(request)
    if body.init_image is None:
        return request
    # 2. Only then decode the init image (bounded in bytes and pixels).
    data = decode_base64(body.init_image, field="init_image")
    image = decode_image(data, field="init_image", max_pixels=limits.max_input_pixels, max_bytes=limits.max_input_bytes)
    return dataclasses.replace(request, init_image=image)


@router.post(
    "/v1/jobs",
    status_code=202,
    tags=["jobs"],
    summary="Submit a job",
    response_model=JobOut,
    responses=_errors(400, 409, 413, 422, 429, 503),
)
def create_job(
    body: JobCreate,
    request: Request,
    response: Response,
    service: Service,
    idempotency_key: Annotated[str | None, Header(alias="Idempotency-Key")] = None,
) -> dict[str, Any]:
    """Validate and enqueue; 202 with the job. The same ``Idempotency-Key`` and body return the same job; the same
    key with another body is 409. A full queue is 429 with ``Retry-After``."""
    job = service.submit(_request(body, service), dialect="native", idempotency_key=idempotency_key)
    response.headers["Location"] = str(request.url_for("get_job", job_id=job.id))
    return job_json(job, request, service)


@router.get(
    "/v1/jobs", tags=["jobs"], summary="List jobs, newest first", response_model=JobList, responses=_errors(422)
)
def list_jobs(
    request: Request,
    service: Service,
    status: JobStatus | None = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    offset: Annotated[int, Query(ge=0, le=MAX_LIST_OFFSET)] = 0,
) -> dict[str, Any]:
    jobs = service.list(status=status, limit=limit, offset=offset)
    total = service.count(status=status)
    return {
        "object": "list",
        "data": [job_json(job, request, service) for job in jobs],
        "total": total,
        "limit": limit,
        "offset": offset,
        "has_more": offset + len(jobs) < total,
    }


@router.get(
    "/v1/jobs/{job_id}",
    tags=["jobs"],
    summary="A job's status, progress, timings, errors and images",
    response_model=JobOut,
    responses=_errors(404),
)
def get_job(job_id: str, request: Request, service: Service) -> dict[str, Any]:
    return job_json(_job_or_404(service, job_id), request, service)


@router.delete(
    "/v1/jobs/{job_id}", tags=["jobs"], summary="Cancel a job", response_model=JobOut, responses=_errors(404)
)
def cancel_job(job_id: str, request: Request, service: Service) -> dict[str, Any]:
    """A queued job is cancelled at once; a running one stops within a step and ends ``cancelled``.
    Cancelling an ended job changes nothing."""
    _job_or_404(service, job_id)
    job = service.cancel(job_id)
    if job is None:
        raise JobNotFound(f"no job {job_id[:100]!r}")
    return job_json(job, request, service)


@router.get(
    "/v1/jobs/{job_id}/events",
    tags=["jobs"],
    summary="Server-Sent Events of a job",
    response_class=StreamingResponse,
    responses={200: {"content": {"text/event-stream": {}}}, **_errors(404)},
)
def job_events(job_id: str, request: Request, service: Service) -> StreamingResponse:
    """``queued``, ``started``, ``progress`` (with ``step``/``total_steps``), then ``done``, ``failed`` or
    ``cancelled``; the stream ends with the job. Each event's data is the job, as ``GET /v1/jobs/{id}`` returns it."""
    _job_or_404(service, job_id)

    async def stream() -> AsyncIterator[str]:
        number = 0
        async for event in service.events(job_id, keepalive=KEEPALIVE_SECONDS):
            if event.event == "keepalive":
                yield ": keepalive\n\n"  # an SSE comment: clients ignore it, proxies see traffic
                continue
            number += 1
            data = json.dumps(job_json(event.job, request, service), ensure_ascii=False)
            yield f"id: {number}\nevent: {event.event}\ndata: {data}\n\n"

    return StreamingResponse(
        stream(), media_type="text/event-stream", headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
    )


@router.get(
    "/v1/images/{name}",
    tags=["images"],
    summary="A result PNG (with its A1111 infotext)",
    response_class=Response,
    responses={200: {"content": {"image/png": {}}}, **_errors(403, 404)},
)
def get_image(
    name: str,
    service: Service,
    expires: Annotated[str | None, Query(description="signed URLs: expiry, unix seconds")] = None,
    sig: Annotated[str | None, Query(description="signed URLs: HMAC-SHA256 of the name and expiry, hex")] = None,
) -> Response:
    """The PNG. With the API key, or without it through a signed URL (as in a job's ``images``) until it expires.
    ``expires`` and ``sig`` are checked by the app-wide authentication (:data:`imagegen.server.auth.SIGNED_PATHS`)
    before this runs; an expired one is 403 ``url_expired``, an altered one 403 ``invalid_signature``."""
    path = service.image_path(name)
    try:
        # Read here rather than streamed later (FileResponse): retention may delete the file at any moment, and a
        # file gone between the lookup and the send must be a 404, not a 500 in the middle of a response.
        data = path.read_bytes() if path is not None else None
    except FileNotFoundError:
        data = None
    if data is None:
        raise JobNotFound(f"no image {name[:100]!r}")
    # Names are unique per job and never rewritten once a job has succeeded.
    return Response(data, media_type="image/png", headers={"Cache-Control": "private, max-age=86400"})


def model_json(info: ModelInfo) -> dict[str, Any]:
    try:
        created = int(info.path.stat().st_mtime)
    except OSError:
        created = 0
    owner = info.ref.split("/", 1)[0] if info.kind == "hub" else "imagegen" if info.kind == "builtin" else "local"
    return {
        "id": info.ref,
        "object": "model",
        "created": created,
        "owned_by": owner,
        "family": info.family.value,
        "width": info.defaults.width,
        "height": info.defaults.height,
    }


@router.get(
    "/v1/models",
    tags=["models"],
    summary="The models this server serves (OpenAI's list shape)",
    response_model=ModelList,
    responses=_errors(),
)
def list_models(service: Service) -> dict[str, Any]:
    return {"object": "list", "data": [model_json(info) for info in service.models()]}


@router.get(
    "/v1/models/{model_id:path}",
    tags=["models"],
    summary="One served model (OpenAI's model shape)",
    response_model=ModelOut,
    responses=_errors(404),
)
def get_model(model_id: str, service: Service) -> dict[str, Any]:
    """By id (hub ids contain a slash), A1111 title or name without extension; only served models exist here."""
    try:
        return model_json(service.resolve_model(model_id))
    except InvalidRequest:
        raise JobNotFound(f"no served model {model_id[:200]!r}; see GET /v1/models") from None


@router.get("/healthz", tags=["health"], summary="Liveness: the API process answers")
def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/readyz", tags=["health"], summary="Readiness: a worker is up with the default model loaded")
def readyz(service: Service) -> JSONResponse:
    ready, reason = service.readiness()
    body = {"ready": ready, "reason": reason, "workers": service.workers()}
    return JSONResponse(body, status_code=200 if ready else 503)
