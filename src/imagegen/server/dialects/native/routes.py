"""imagegen's own API: asynchronous jobs, their events and images, the served models, health.

``POST /v1/jobs`` answers 202 at once with the job; ``GET /v1/jobs/{id}`` and the Server-Sent Events of
``GET /v1/jobs/{id}/events`` follow it; ``DELETE /v1/jobs/{id}`` cancels it. Errors are
``{"error": {"code", "message", "field", "type", "param"}}`` (``type`` and ``param`` for OpenAI SDK clients).
``POST /v1/upscales`` queues an upscale job, followed and cancelled the same way.
"""

from __future__ import annotations

import base64
import hashlib
import json
import time
from collections.abc import AsyncIterator
from types import MappingProxyType
from typing import Annotated, Any

from fastapi import APIRouter, Header, Query, Request, Response
from fastapi.responses import JSONResponse, StreamingResponse
from starlette.concurrency import run_in_threadpool

from imagegen.errors import InvalidRequest
from imagegen.loading import ModelInfo
from imagegen.metadata import request_fields_from_infotext
from imagegen.samplers import list_samplers, list_schedule_types
from imagegen.server import networks
from imagegen.server.deps import Catalog, ServicesDep, Settings, Upscalers
from imagegen.server.dialects import core
from imagegen.server.dialects.native.schemas import (
    EmbeddingList,
    EmbeddingOut,
    ErrorOut,
    JobCreate,
    JobList,
    JobOut,
    LoraList,
    LoraOut,
    ModelList,
    ModelOut,
    PngInfoIn,
    PngInfoOut,
    ReadinessOut,
    SamplerList,
    SamplerOut,
    StyleList,
    StyleOut,
    UpscaleCreate,
    UpscalerList,
    UpscalerOut,
    WorkerOut,
)
from imagegen.server.errors import JobNotFound, NoPreview
from imagegen.server.jobs.model import (
    IMAGE_FIELDS,
    PREVIEW_EVERY,
    REQUEST_ID_FIELD,
    Job,
    JobStatus,
    Preview,
    preview_interval,
)
from imagegen.server.jobs.queue import JobQueue, result_image_path
from imagegen.server.services import Services

router = APIRouter()
#: Seconds of silence after which an event stream gets a comment line (idle proxies close streams after ~60 s).
KEEPALIVE_SECONDS = 15.0
#: Longest long poll of ``GET /v1/jobs/{id}?wait=``: under common proxy timeouts (60 s).
MAX_WAIT_SECONDS = 55.0
#: Largest ``offset`` of ``GET /v1/jobs``: SQLite binds 64-bit integers only, so a huge one must be a 422, not a 500.
MAX_LIST_OFFSET = 10**9

#: What each error status of the native routes means (the OpenAPI description).
_ERRORS = MappingProxyType(
    {
        400: "a bad value; error.field names it",
        401: "missing or wrong API key",
        403: "image URL signature expired (error.code url_expired) or invalid (invalid_signature)",
        404: "no such job or image",
        409: "Idempotency-Key reused with another body, or (purge) the job has not ended",
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


def image_url(request: Request, name: str, services: Services) -> str:
    """Absolute signed URL of a result image (``GET /v1/images/{name}?expires=...&sig=...``), valid for
    ``url_ttl`` seconds without credentials."""
    return f"{request.url_for('get_image', name=name)}?{services.urls.sign(name).query}"


def job_json(job: Job, request: Request, services: Services) -> dict[str, Any]:
    """The native representation of a job, as :class:`JobOut` describes it (built as plain data: status reads are
    the most frequent request, and a poll must cost the worker's cores as little as possible)."""
    public_request = {k: (bool(v) if k in IMAGE_FIELDS else v) for k, v in job.request.items() if k != REQUEST_ID_FIELD}
    queue: JobQueue = services.queue
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
        "queue_position": queue.queue_position(job.id) if job.status is JobStatus.QUEUED else None,
        "attempts": job.attempts,
        "cancel_requested": job.cancel_requested,
        "error": {"code": job.error_code, "message": job.error_message} if job.error_code else None,
        "images": [image_url(request, name, services) for name in job.images],
        "seeds": list(job.seeds),
        "infotexts": list(job.infotexts),
        "warnings": list(job.warnings),
        "timings": dict(job.timings),
        "request": public_request,
        "request_id": job.request.get(REQUEST_ID_FIELD),
    }


def job_out(job: Job, request: Request, services: Services) -> JobOut:
    return JobOut.model_validate(job_json(job, request, services))


def job_etag(data: dict[str, Any]) -> str:
    """A weak ETag of a job as :func:`job_json` shows it: it changes whenever anything shown changes. The image URLs
    are signed afresh at each read, so they are left out, and a job with images gets a new ETag every minute: a client
    answered 304 never holds URLs more than a minute older than a fresh read's."""
    shown = {key: value for key, value in data.items() if key != "images"}
    minute = int(time.time() // 60) if data["images"] else 0
    digest = hashlib.sha256(json.dumps([shown, minute], sort_keys=True, default=str).encode()).hexdigest()
    return f'W/"{data["id"]}-{digest[:16]}"'


@router.post(
    "/v1/jobs",
    status_code=202,
    tags=["jobs"],
    summary="Submit a job",
    response_model=JobOut,
    responses=_errors(400, 409, 413, 422, 429, 503),
)
async def create_job(
    body: JobCreate,
    request: Request,
    response: Response,
    services: ServicesDep,
    idempotency_key: Annotated[str | None, Header(alias="Idempotency-Key")] = None,
) -> JobOut:
    """Validate and enqueue; 202 with the job. The same ``Idempotency-Key`` and body return the same job; the same
    key with another body is 409. A full queue is 429 with ``Retry-After``."""
    fields = body.model_dump()
    submission = core.Submission(
        fields={k: v for k, v in fields.items() if k not in IMAGE_FIELDS and k != PREVIEW_EVERY},
        init_image=fields["init_image"],
        mask=fields["mask"],
        dialect="native",
        idempotency_key=idempotency_key,
        preview_every=fields[PREVIEW_EVERY],
    )
    job = await core.submit(services.queue, services.settings.limits, submission)
    response.headers["Location"] = str(request.url_for("get_job", job_id=job.id))
    return job_out(job, request, services)


@router.post(
    "/v1/upscales",
    status_code=202,
    tags=["jobs"],
    summary="Submit an upscale job",
    response_model=JobOut,
    responses=_errors(400, 409, 413, 422, 429, 503),
)
async def create_upscale(
    body: UpscaleCreate,
    request: Request,
    response: Response,
    services: ServicesDep,
    upscalers: Upscalers,
    idempotency_key: Annotated[str | None, Header(alias="Idempotency-Key")] = None,
) -> JobOut:
    """Check the upscaler names and sizes, enqueue; 202 with the job, which ``/v1/jobs/{id}`` follows (progress in
    tiles) and cancels. Idempotency-Key as for ``POST /v1/jobs``."""
    fields = body.model_dump()
    submission = core.UpscaleSubmission(
        fields={k: v for k, v in fields.items() if k != "image"},
        image=fields["image"],
        dialect="native",
        idempotency_key=idempotency_key,
    )
    job = await core.submit_upscale(services.queue, services.settings.limits, upscalers, submission)
    response.headers["Location"] = str(request.url_for("get_job", job_id=job.id))
    return job_out(job, request, services)


@router.get(
    "/v1/jobs", tags=["jobs"], summary="List jobs, newest first", response_model=JobList, responses=_errors(422)
)
def list_jobs(
    request: Request,
    services: ServicesDep,
    status: JobStatus | None = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    offset: Annotated[int, Query(ge=0, le=MAX_LIST_OFFSET)] = 0,
) -> JobList:
    jobs = services.queue.list_jobs(status=status, limit=limit, offset=offset)
    total = services.queue.count(status=status)
    return JobList(
        data=[job_out(job, request, services) for job in jobs],
        total=total,
        limit=limit,
        offset=offset,
        has_more=offset + len(jobs) < total,
    )


@router.get(
    "/v1/jobs/{job_id}",
    tags=["jobs"],
    summary="A job's status, progress, timings, errors and images",
    response_model=JobOut,
    responses={304: {"description": "not modified since the ETag sent in If-None-Match"}, **_errors(404, 422)},
)
async def get_job(
    job_id: str,
    request: Request,
    services: ServicesDep,
    wait: Annotated[
        float,
        Query(ge=0, le=MAX_WAIT_SECONDS, description="long poll: answer when the job ends, or after this many seconds"),
    ] = 0,
    if_none_match: Annotated[str | None, Header(alias="If-None-Match")] = None,
) -> Response:
    """The job. Cheaper than polling fast: ``?wait=30`` answers as soon as the job ends (or after 30 s), the events
    stream (``/events``) pushes every change, and ``If-None-Match`` with the last ``ETag`` answers 304 while nothing
    changed."""
    queue = services.queue
    job = queue.require(job_id)
    if wait > 0 and not job.terminal:
        job = await queue.wait(job_id, timeout=wait)
    data = job_json(job, request, services)
    etag = job_etag(data)
    if if_none_match is not None and etag in (tag.strip() for tag in if_none_match.split(",")):
        return Response(status_code=304, headers={"ETag": etag})
    body = json.dumps(data, ensure_ascii=False).encode()
    return Response(body, media_type="application/json", headers={"ETag": etag, "Cache-Control": "no-cache"})


@router.delete(
    "/v1/jobs/{job_id}",
    tags=["jobs"],
    summary="Cancel a job (or delete an ended one with purge=true)",
    response_model=JobOut,
    responses={204: {"description": "purge=true: the job is deleted"}, **_errors(404, 409)},
)
def cancel_job(
    job_id: str,
    request: Request,
    services: ServicesDep,
    purge: Annotated[
        bool, Query(description="delete the ended job, its images and its Idempotency-Key (204); 409 until it ends")
    ] = False,
) -> Response:
    """A queued job is cancelled at once; a running one stops within a step and ends ``cancelled``.
    Cancelling an ended job changes nothing. With ``purge=true`` an ended job is deleted instead (the page's
    history "Delete"): its image URLs answer 404 from then on; a queued or running one is a 409 (cancel it first)."""
    if purge:
        services.queue.delete(job_id)
        return Response(status_code=204)
    return JSONResponse(job_json(services.queue.cancel(job_id), request, services))


@router.get(
    "/v1/jobs/{job_id}/events",
    tags=["jobs"],
    summary="Server-Sent Events of a job",
    response_class=StreamingResponse,
    responses={200: {"content": {"text/event-stream": {}}}, **_errors(404)},
)
def job_events(job_id: str, request: Request, services: ServicesDep) -> StreamingResponse:
    """``queued``, ``started``, ``progress`` (with ``step``/``total_steps``), then ``done``, ``failed`` or
    ``cancelled``; the stream ends with the job. Each event's data is the job, as ``GET /v1/jobs/{id}`` returns it.
    A job submitted with ``preview_every`` also gets ``preview`` events, whose data is ``{"id", "step",
    "total_steps", "image"}`` (``image``: a ``data:image/jpeg;base64,...`` URL of the approximate picture)."""
    services.queue.require(job_id)

    async def stream() -> AsyncIterator[str]:
        number = 0
        async for event in services.queue.events(job_id, keepalive=KEEPALIVE_SECONDS):
            if event.event == "keepalive":
                yield ": keepalive\n\n"  # an SSE comment: clients ignore it, proxies see traffic
                continue
            number += 1
            if event.preview is not None:
                data = json.dumps(preview_json(event.job, event.preview))
            else:
                data = json.dumps(job_json(event.job, request, services), ensure_ascii=False)
            yield f"id: {number}\nevent: {event.event}\ndata: {data}\n\n"

    return StreamingResponse(
        stream(), media_type="text/event-stream", headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
    )


def preview_json(job: Job, preview: Preview) -> dict[str, Any]:
    """A ``preview`` event's data: the picture inline, as a data URL an ``<img>`` shows as it is."""
    encoded = base64.b64encode(preview.image).decode("ascii")
    return {
        "id": job.id,
        "step": preview.step,
        "total_steps": preview.total_steps,
        "image": f"data:{preview.media_type};base64,{encoded}",
    }


@router.get(
    "/v1/jobs/{job_id}/preview",
    tags=["jobs"],
    summary="A running job's latest live preview",
    response_class=Response,
    responses={200: {"content": {"image/jpeg": {}}}, **_errors(404)},
)
def job_preview(job_id: str, services: ServicesDep) -> Response:
    """The latest approximate picture of a running job submitted with ``preview_every`` (JPEG; ``X-Step`` and
    ``X-Total-Steps`` say when it was taken). 404 ``no_preview`` before the first one and once the job has ended
    (its images are then in the job)."""
    job = services.queue.require(job_id)
    preview = services.queue.preview(job.id)
    if preview is None:
        raise NoPreview(f"job {job.id} has no live preview ({_no_preview_reason(job)})")
    return Response(
        preview.image,
        media_type=preview.media_type,
        headers={"Cache-Control": "no-store", "X-Step": str(preview.step), "X-Total-Steps": str(preview.total_steps)},
    )


def _no_preview_reason(job: Job) -> str:
    if not preview_interval(job.request):
        return 'it was submitted without preview_every; submit with "preview_every": N for a preview every N steps'
    if job.status is JobStatus.RUNNING:
        return "none made yet; the first comes after preview_every steps (follow /events for each one)"
    if job.status is JobStatus.QUEUED:
        return "it is queued; previews come once it runs"
    return f"it is {job.status.value}; its images are in the job"


@router.get(
    "/v1/images/{name}",
    tags=["images"],
    summary="A result PNG (with its A1111 infotext)",
    response_class=Response,
    responses={200: {"content": {"image/png": {}}}, **_errors(403, 404)},
)
def get_image(
    name: str,
    settings: Settings,
    expires: Annotated[str | None, Query(description="signed URLs: expiry, unix seconds")] = None,
    sig: Annotated[str | None, Query(description="signed URLs: HMAC-SHA256 of the name and expiry, hex")] = None,
) -> Response:
    """The PNG. With the API key, or without it through a signed URL (as in a job's ``images``) until it expires.
    ``expires`` and ``sig`` are checked by the app-wide authentication (:data:`imagegen.server.auth.SIGNED_PATHS`)
    before this runs; an expired one is 403 ``url_expired``, an altered one 403 ``invalid_signature``."""
    data = core.read_image_file(lambda: result_image_path(settings, name), name)
    # Names are unique per job and never rewritten once a job has succeeded.
    return Response(data, media_type="image/png", headers={"Cache-Control": "private, max-age=86400"})


def model_out(info: ModelInfo) -> ModelOut:
    try:
        created = int(info.path.stat().st_mtime)
    except OSError:
        created = 0
    owner = info.ref.split("/", 1)[0] if info.kind == "hub" else "imagegen" if info.kind == "builtin" else "local"
    return ModelOut(
        id=info.ref,
        created=created,
        owned_by=owner,
        family=info.family.value,
        width=info.defaults.width,
        height=info.defaults.height,
    )


@router.get(
    "/v1/models",
    tags=["models"],
    summary="The models this server serves (OpenAI's list shape)",
    response_model=ModelList,
    responses=_errors(),
)
def list_models(catalog: Catalog) -> ModelList:
    return ModelList(data=[model_out(info) for info in catalog.models()])


@router.get(
    "/v1/loras",
    tags=["models"],
    summary="The LoRAs a request can name (loras field, or <lora:name:weight> in the prompt)",
    response_model=LoraList,
    responses=_errors(),
)
async def list_loras(settings: Settings) -> LoraList:
    entries = await run_in_threadpool(networks.list_loras, settings.engine)
    return LoraList(
        data=[
            LoraOut(name=e.name, family=e.family, format=e.format, parts=list(e.parts), size=e.size, error=e.error)
            for e in entries
        ]
    )


@router.get(
    "/v1/embeddings",
    tags=["models"],
    summary="Textual-inversion embeddings (write the name in the prompt), usable or not with the given model",
    response_model=EmbeddingList,
    responses=_errors(400),
)
async def list_embeddings(catalog: Catalog, settings: Settings, model: str | None = None) -> EmbeddingList:
    info = catalog.resolve(model)
    entries = await run_in_threadpool(networks.list_embeddings, settings.engine, info)
    return EmbeddingList(
        model=info.ref,
        data=[
            EmbeddingOut(
                name=e.name,
                vectors=e.embedding.vectors if e.embedding else None,
                usable=e.skipped is None,
                reason=e.skipped,
            )
            for e in entries
        ],
    )


@router.get(
    "/v1/styles",
    tags=["models"],
    summary="The prompt styles of the styles file (styles field)",
    response_model=StyleList,
    responses=_errors(),
)
async def list_styles(settings: Settings) -> StyleList:
    styles = await run_in_threadpool(networks.list_styles, settings.engine)
    return StyleList(data=[StyleOut(name=s.name, prompt=s.prompt, negative_prompt=s.negative_prompt) for s in styles])


@router.get(
    "/v1/upscalers",
    tags=["models"],
    summary="The upscalers an upscale job (and the hires fix) can name, available here or not (with the reason)",
    response_model=UpscalerList,
    responses=_errors(),
)
async def list_upscalers(upscalers: Upscalers) -> UpscalerList:
    infos = await run_in_threadpool(upscalers.list)
    return UpscalerList(
        data=[
            UpscalerOut(name=i.name, scale=i.scale, model_name=i.model_name, available=i.available, reason=i.reason)
            for i in infos
        ],
        latent_modes=upscalers.latent_modes(),
    )


@router.get(
    "/v1/samplers",
    tags=["models"],
    summary="The samplers and schedule types a job can name (sampler, schedule_type, hr_sampler, hr_schedule_type)",
    response_model=SamplerList,
    responses=_errors(),
)
def list_samplers_route() -> SamplerList:
    return SamplerList(
        data=[SamplerOut.model_validate({"name": s["name"], "aliases": s["aliases"]}) for s in list_samplers()],
        schedule_types=[str(t["label"]) for t in list_schedule_types()],
    )


@router.post(
    "/v1/png-info",
    tags=["images"],
    summary="The generation settings embedded in an image (A1111 infotext), as this API's job fields",
    response_model=PngInfoOut,
    responses=_errors(400, 413, 422),
)
async def png_info(body: PngInfoIn, services: ServicesDep) -> PngInfoOut:
    """Reads the infotext of a PNG text chunk or a JPEG/WebP EXIF UserComment, never the pixels. ``fields`` are the
    job fields that regenerate the image (null when the image carries no infotext): an infotext cannot carry the
    init image or mask of an image-to-image job."""
    limit = services.settings.limits.max_input_bytes
    text, items = await run_in_threadpool(core.image_text, body.image, max_bytes=limit)
    fields = request_fields_from_infotext(text) if text else None
    return PngInfoOut(infotext=text, fields=fields, items=items)


@router.get(
    "/v1/models/{model_id:path}",
    tags=["models"],
    summary="One served model (OpenAI's model shape)",
    response_model=ModelOut,
    responses=_errors(404),
)
def get_model(model_id: str, catalog: Catalog) -> ModelOut:
    """By id (hub ids contain a slash), A1111 title or name without extension; only served models exist here."""
    try:
        return model_out(catalog.resolve(model_id))
    except InvalidRequest:
        raise JobNotFound(f"no served model {model_id[:200]!r}; see GET /v1/models") from None


@router.get(
    "/metrics",
    tags=["health"],
    summary="Prometheus metrics",
    response_class=Response,
    responses={200: {"content": {"text/plain": {}}}},
)
async def metrics(services: ServicesDep) -> Response:
    """Queue depth, jobs by status, workers by state and restarts, and from the workers: jobs ended by outcome,
    images, step and job seconds, batch sizes (Prometheus text format; needs the API key when keys are on)."""
    from imagegen.server.metrics import CONTENT_TYPE, scrape

    return Response(await run_in_threadpool(scrape, services), media_type=CONTENT_TYPE)


@router.get("/healthz", tags=["health"], summary="Liveness: the API process answers")
def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get(
    "/readyz",
    tags=["health"],
    summary="Readiness: a worker is up with the default model loaded",
    response_model=ReadinessOut,
    responses={503: {"model": ReadinessOut, "description": "not ready (reason says why)"}},
)
def readyz(services: ServicesDep) -> JSONResponse:
    reason = services.readiness()
    workers = [WorkerOut(index=w.index, alive=w.alive, state=w.state) for w in services.workers()]
    body = ReadinessOut(ready=reason == "ready", reason=reason, workers=workers)
    return JSONResponse(body.model_dump(), status_code=200 if body.ready else 503)
