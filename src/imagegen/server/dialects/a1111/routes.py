"""The A1111-compatible ``/sdapi/v1/*`` API (stable-diffusion-webui 1.10 shapes) on imagegen's shared job queue.

``txt2img`` and ``img2img`` translate the request (:mod:`.translate`), run it through the dialect core like any other
job (``dialect="a1111"``: A1111 clients and native clients share one fair queue) and block until it ends. Errors use
A1111's shape ``{"error", "detail", "body", "errors"}``; validation errors are 422 and ``detail`` starts with the
A1111 field name. Interrupted jobs (``/interrupt``, ``/skip``, or a native DELETE) answer 409: imagegen keeps no
partial image. ``/interrupt`` and ``/skip`` cancel the running jobs of this dialect only, never a native or OpenAI
client's job; ``/skip`` cancels a batch as a whole (the engine has no per-image skip).

``extra-single-image`` and ``extra-batch-images`` (Extras: upscaling) are upscale jobs on the same queue (see
:mod:`.extras`); ``/progress`` reports them as job ``extras``.
"""

from __future__ import annotations

import base64
import os
import time
from collections.abc import Mapping
from types import MappingProxyType
from typing import Annotated, Any

from fastapi import APIRouter, Body, FastAPI, Request
from fastapi.responses import JSONResponse, Response
from starlette.concurrency import run_in_threadpool

from imagegen.errors import InvalidRequest
from imagegen.samplers import list_samplers, list_schedule_types
from imagegen.server import networks
from imagegen.server.deps import Catalog, Queue, ServicesDep, Upscalers
from imagegen.server.dialects import core
from imagegen.server.dialects.a1111.extras import (
    check_face_restoration,
    extras_submission,
    html_info,
    result_image,
)
from imagegen.server.dialects.a1111.options import (
    CHECKPOINT,
    CHECKPOINT_HASH,
    A1111Options,
    check_option,
    current_values,
)
from imagegen.server.dialects.a1111.schemas import (
    A1111ExtrasBatchImagesRequest,
    A1111ExtrasBatchImagesResponse,
    A1111ExtrasSingleImageRequest,
    A1111ExtrasSingleImageResponse,
    A1111FaceRestorer,
    A1111GenerationRequest,
    A1111ImageResponse,
    A1111Img2ImgRequest,
    A1111LatentUpscaleMode,
    A1111Model,
    A1111PngInfoRequest,
    A1111PngInfoResponse,
    A1111ProgressResponse,
    A1111ProgressState,
    A1111RealesrganModel,
    A1111Txt2ImgRequest,
    A1111Upscaler,
)
from imagegen.server.dialects.a1111.translate import (
    DIALECT,
    current_checkpoint,
    image_response,
    png_info,
    translate,
)
from imagegen.server.errors import ErrorInfo, register_dialect_errors
from imagegen.server.jobs.model import UPSCALE, Job
from imagegen.server.jobs.queue import JobQueue
from imagegen.server.services import Services
from imagegen.server.settings import ServerSettings

__all__ = ["PREFIX", "install_a1111", "render_a1111_error", "router"]

PREFIX = "/sdapi/v1"
#: Where ``/options`` persists, in the data directory (A1111 keeps them in its config.json).
OPTIONS_FILE = "a1111-options.json"
router = APIRouter(prefix=PREFIX, tags=["A1111 compatible"])

_ERROR_TYPES: Mapping[int, str] = MappingProxyType(
    {422: "RequestValidationError", 401: "HTTPException", 404: "HTTPException", 409: "Interrupted"}
)


def render_a1111_error(request: Request, info: ErrorInfo) -> Response:
    """A1111's error body ``{"error", "detail", "body", "errors"}``; request-validation errors are 422 as in A1111.

    ``body`` stays empty: echoing a request could mean echoing megabytes of base64 back."""
    status = 422 if info.status == 400 and info.code == "invalid_request" else info.status
    kind = _ERROR_TYPES.get(status, "HTTPException" if status < 500 else "RuntimeError")
    content = {"error": kind, "detail": info.message, "body": "", "errors": info.message}
    return JSONResponse(content, status_code=status, headers=dict(info.headers))


def install_a1111(app: FastAPI, settings: ServerSettings) -> None:
    """Answer ``/sdapi/`` paths in A1111's shape, and keep A1111's ``/options`` in the data directory."""
    register_dialect_errors(app, ("/sdapi/",), render_a1111_error)
    app.state.a1111_options = A1111Options(settings.data_dir / OPTIONS_FILE)


def a1111_options(request: Request) -> A1111Options:
    """The app's A1111 ``/options`` (see :func:`install_a1111`)."""
    options: A1111Options = request.app.state.a1111_options
    return options


# --------------------------------------------------------------------------------------------------------------------
# Generation.


async def _generate(
    request: Request, services: Services, body: A1111GenerationRequest, *, img2img: bool
) -> A1111ImageResponse:
    options = a1111_options(request)
    names: list[str] = []
    if img2img and body.script_name:  # the SD upscale script names its upscaler by its index in /upscalers
        names = [info.name for info in await run_in_threadpool(services.upscalers.available)]
    translation = translate(
        body, catalog=services.catalog, stored_options=options.values(), img2img=img2img, upscalers=names
    )
    job = await core.run(services.queue, services.settings.limits, translation.submission)
    if not body.override_settings_restore_afterwards and translation.overrides:
        options.update(translation.overrides)  # A1111 keeps such overrides as the new options
    return await run_in_threadpool(image_response, services.queue, job, translation.body, translation.options)


@router.post("/txt2img", response_model=A1111ImageResponse)
async def txt2img(request: Request, services: ServicesDep, body: A1111Txt2ImgRequest) -> A1111ImageResponse:
    """Text to image; blocks until the job ends (it waits in the same queue as every other job)."""
    return await _generate(request, services, body, img2img=False)


@router.post("/img2img", response_model=A1111ImageResponse)
async def img2img(request: Request, services: ServicesDep, body: A1111Img2ImgRequest) -> A1111ImageResponse:
    """Image to image from ``init_images[0]``; blocks until the job ends."""
    return await _generate(request, services, body, img2img=True)


# --------------------------------------------------------------------------------------------------------------------
# Extras (upscaling).


@router.post("/extra-single-image", response_model=A1111ExtrasSingleImageResponse)
async def extra_single_image(
    services: ServicesDep, upscalers: Upscalers, body: A1111ExtrasSingleImageRequest
) -> A1111ExtrasSingleImageResponse:
    """Upscale one image (an upscale job in the shared queue); blocks until it ends."""
    check_face_restoration(body, [r["name"] or "" for r in await run_in_threadpool(upscalers.face_restorers)])
    submission = extras_submission(body, body.image, image_field="image")
    job = await core.submit_upscale(services.queue, services.settings.limits, upscalers, submission)
    job = await core.succeeded(services.queue, job, names=submission.names)
    image, infotext = await run_in_threadpool(result_image, services.queue, job)
    return A1111ExtrasSingleImageResponse(html_info=html_info(infotext), image=image)


@router.post("/extra-batch-images", response_model=A1111ExtrasBatchImagesResponse)
async def extra_batch_images(
    services: ServicesDep, upscalers: Upscalers, body: A1111ExtrasBatchImagesRequest
) -> A1111ExtrasBatchImagesResponse:
    """Upscale each image of ``imageList`` (one job per image, in order); blocks until all have ended. Every image is
    checked and decoded before any job is queued; when one job fails, the others are cancelled."""
    check_face_restoration(body, [r["name"] or "" for r in await run_in_threadpool(upscalers.face_restorers)])
    queue, limits = services.queue, services.settings.limits
    submissions = [
        extras_submission(body, item.data, image_field=f"imageList[{i}].data") for i, item in enumerate(body.imageList)
    ]
    # 1. Check and decode every image, 2. queue one job each, in order, 3. wait for each.
    requests = [await core.prepare_upscale(limits, upscalers, submission) for submission in submissions]
    jobs: list[Job] = []
    try:
        for request, submission in zip(requests, submissions, strict=True):
            jobs.append(await core.enqueue_upscale(queue, request, submission))
        done = [await core.succeeded(queue, job, names=s.names) for job, s in zip(jobs, submissions, strict=True)]
    except BaseException:
        # Nobody will collect the rest (the client gets an error, or went away): free the workers for others.
        # Called directly: after a cancellation of this handler, every further await would be cancelled too.
        for job in jobs:
            queue.cancel(job.id)
        raise
    results = [await run_in_threadpool(result_image, queue, job) for job in done]
    return A1111ExtrasBatchImagesResponse(
        html_info=html_info(results[-1][1]) if results else "", images=[image for image, _ in results]
    )


# --------------------------------------------------------------------------------------------------------------------
# Progress and control.


def _timestamp(seconds: float | None) -> str:
    return time.strftime("%Y%m%d%H%M%S", time.localtime(seconds or 0))


def _job_name(record: Mapping[str, Any]) -> str:
    """A1111's name of the kind of job (its ``shared.state.job``)."""
    if record.get("operation") == UPSCALE:
        return "extras"
    return "img2img" if record.get("init_image") else "txt2img"


@router.get("/progress", response_model=A1111ProgressResponse)
def progress(queue: Queue, skip_current_image: bool = False) -> A1111ProgressResponse:
    """The running job's progress (A1111 has one global job; imagegen reports the one a worker runs first)."""
    job = queue.current()
    if job is None:
        return A1111ProgressResponse(progress=0.0, eta_relative=0.0, state=A1111ProgressState())
    fraction = min(max(float(job.progress), 0.0), 1.0)
    eta = 0.0
    if job.started_at and fraction > 0:
        elapsed = max(time.time() - job.started_at, 0.0)
        eta = elapsed / fraction - elapsed
    state = A1111ProgressState(
        interrupted=job.cancel_requested,
        job=_job_name(job.request),
        job_count=1,
        job_no=0,
        job_timestamp=_timestamp(job.started_at),
        sampling_step=job.step,
        sampling_steps=job.total_steps,
    )
    return A1111ProgressResponse(
        progress=fraction,
        eta_relative=eta,
        state=state,
        current_image=None if skip_current_image else _current_image(queue, job),
        textinfo=f"job {job.id}: step {job.step}/{job.total_steps}",
        current_task=job.id,
    )


def _current_image(queue: JobQueue, job: Job) -> str | None:
    """The running job's latest live preview, base64 (a JPEG, whatever ``live_previews_image_format`` says)."""
    preview = queue.preview(job.id)
    return base64.b64encode(preview.image).decode("ascii") if preview is not None else None


@router.post("/interrupt")
async def interrupt(queue: Queue) -> dict[str, Any]:
    """Cancel the running A1111 job (its blocking caller gets a 409). Queued jobs, and jobs submitted through the
    native or OpenAI API, are not touched."""
    await run_in_threadpool(queue.interrupt, dialect=DIALECT)
    return {}


@router.post("/skip")
async def skip(queue: Queue) -> None:
    """Same as ``/interrupt``: the engine has no per-image skip, so the running A1111 job is cancelled as a whole."""
    await run_in_threadpool(queue.interrupt, dialect=DIALECT)


# --------------------------------------------------------------------------------------------------------------------
# Options and models.


@router.get("/options")
def get_options(request: Request, catalog: Catalog) -> dict[str, Any]:
    """Every option this server knows, with its current value (``sd_model_checkpoint``: the default model's title)."""
    values = current_values(a1111_options(request).values())
    current = current_checkpoint(catalog, values)
    return {**values, CHECKPOINT: current.title, CHECKPOINT_HASH: current.hash}


@router.post("/options")
def set_options(request: Request, catalog: Catalog, options: Annotated[dict[str, Any], Body()]) -> None:
    """Set options (all or none: every key is checked first). Unknown keys and values imagegen cannot honour are a
    422 naming the key; the checkpoint must be a served model."""
    store = a1111_options(request)
    changes: dict[str, object] = {}
    for key, value in options.items():
        checked = check_option(key, value, field=key)
        if key == CHECKPOINT:
            checked = catalog.find(str(checked), field=CHECKPOINT).title
        elif key == CHECKPOINT_HASH:
            current = current_checkpoint(catalog, current_values(store.values()))
            if value not in (None, current.hash):
                raise InvalidRequest(key, "is read-only: it follows sd_model_checkpoint, which selects the model")
            continue
        changes[key] = checked
    store.update(changes)


@router.get("/sd-models", response_model=list[A1111Model])
def sd_models(catalog: Catalog) -> list[A1111Model]:
    """The served models; ``title`` (``name [hash]``) is what sd_model_checkpoint accepts."""
    return [
        A1111Model(title=info.title, model_name=info.ref, hash=info.hash, filename=info.path.name)
        for info in catalog.models()
    ]


@router.post("/refresh-checkpoints")
async def refresh_checkpoints(catalog: Catalog) -> None:
    """Rescan the models directory: models dropped into it since the start are served from now on."""
    await run_in_threadpool(catalog.refresh)


@router.post("/unload-checkpoint")
def unload_checkpoint() -> dict[str, Any]:
    """No-op: the workers own the loaded models and load them on demand."""
    return {}


@router.post("/reload-checkpoint")
def reload_checkpoint() -> dict[str, Any]:
    """No-op: the workers load models on demand."""
    return {}


@router.get("/samplers")
def samplers() -> list[dict[str, Any]]:
    return list_samplers()


@router.get("/schedulers")
def schedulers() -> list[dict[str, Any]]:
    return list_schedule_types()


@router.get("/upscalers", response_model=list[A1111Upscaler])
async def upscalers(catalog: Upscalers) -> list[A1111Upscaler]:
    """The upscalers that can run here (None, Lanczos, Nearest first; see the native ``/v1/upscalers`` for the
    unavailable ones and why); ``upscaler_1``, ``upscaler_2`` and ``hr_upscaler`` take their names."""
    infos = await run_in_threadpool(catalog.available)
    return [
        A1111Upscaler(name=i.name, model_name=i.model_name, model_path=i.model_path, model_url=None, scale=i.scale)
        for i in infos
    ]


@router.get("/latent-upscale-modes", response_model=list[A1111LatentUpscaleMode])
def latent_upscale_modes(catalog: Upscalers) -> list[A1111LatentUpscaleMode]:
    """The latent upscalers ``hr_upscaler`` takes (the hires fix upscales the latents instead of the image)."""
    return [A1111LatentUpscaleMode(name=name) for name in catalog.latent_modes()]


@router.get("/realesrgan-models", response_model=list[A1111RealesrganModel])
async def realesrgan_models(catalog: Upscalers) -> list[A1111RealesrganModel]:
    """The Real-ESRGAN upscalers that can run here."""
    infos = await run_in_threadpool(catalog.available)
    return [
        A1111RealesrganModel(name=i.name, path=i.model_path, scale=int(i.scale))
        for i in infos
        if i.name.startswith("R-ESRGAN")
    ]


@router.get("/sd-vae")
def sd_vae() -> list[dict[str, Any]]:
    """Empty: each model uses its own VAE."""
    return []


@router.get("/loras")
async def loras(services: ServicesDep) -> list[dict[str, Any]]:
    """The LoRA files of the server's LoRA folders (use them with ``<lora:name:weight>`` in the prompt)."""
    entries = await run_in_threadpool(networks.list_loras, services.settings.engine)
    return [{"name": e.name, "alias": e.alias, "path": e.path, "metadata": e.metadata} for e in entries]


@router.post("/refresh-loras")
def refresh_loras() -> None:
    """Nothing to do: the LoRA folders are read on every request, so new files are usable at once."""
    return None


@router.get("/hypernetworks")
def hypernetworks() -> list[dict[str, Any]]:
    return []


@router.get("/face-restorers", response_model=list[A1111FaceRestorer])
async def face_restorers(catalog: Upscalers) -> list[A1111FaceRestorer]:
    """The face restorers whose weights are installed (none ship with imagegen, and none can run yet)."""
    found = await run_in_threadpool(catalog.face_restorers)
    return [A1111FaceRestorer(name=r["name"] or "", cmd_dir=r["cmd_dir"]) for r in found]


@router.get("/prompt-styles")
async def prompt_styles(services: ServicesDep) -> list[dict[str, Any]]:
    """The styles of the server's styles file (A1111 ``styles.csv``), for the ``styles`` request field."""
    styles = await run_in_threadpool(networks.list_styles, services.settings.engine)
    return [{"name": s.name, "prompt": s.prompt, "negative_prompt": s.negative_prompt} for s in styles]


@router.get("/embeddings")
async def embeddings(request: Request, services: ServicesDep, catalog: Catalog) -> dict[str, Any]:
    """Textual-inversion embeddings, loaded (usable with the current model) or skipped (with the reason)."""
    options = current_values(a1111_options(request).values())
    model = current_checkpoint(catalog, options)
    entries = await run_in_threadpool(networks.list_embeddings, services.settings.engine, model)
    return {
        "loaded": {e.name: networks.a1111_embedding(e) for e in entries if e.skipped is None},
        "skipped": {e.name: networks.a1111_embedding(e) for e in entries if e.skipped is not None},
    }


@router.post("/refresh-embeddings")
def refresh_embeddings() -> None:
    """Nothing to do: the embedding folders are read on every request."""
    return None


@router.get("/scripts")
def scripts() -> dict[str, list[str]]:
    return {"txt2img": [], "img2img": []}


@router.get("/cmd-flags")
def cmd_flags(services: ServicesDep) -> dict[str, Any]:
    """The few A1111 flags that describe this server (credentials are never reported)."""
    settings = services.settings
    return {"api": True, "nowebui": True, "port": settings.port, "api_auth": bool(settings.auth_enabled)}


def _ram() -> dict[str, Any]:
    try:
        page = os.sysconf("SC_PAGE_SIZE")
        total = os.sysconf("SC_PHYS_PAGES") * page
        free = os.sysconf("SC_AVPHYS_PAGES") * page
    except (ValueError, OSError, AttributeError):
        # os.sysconf has no such names on some platforms (macOS lacks SC_AVPHYS_PAGES).
        return {"error": "host memory is not available on this platform"}
    return {"free": free, "used": total - free, "total": total}


@router.get("/memory")
def memory() -> dict[str, Any]:
    """Host RAM; device memory belongs to the worker processes, which the API process does not query."""
    return {
        "ram": _ram(),
        "cuda": {"error": "generation runs in worker processes; the API process does not report device memory"},
    }


@router.post("/png-info", response_model=A1111PngInfoResponse)
async def png_info_route(services: ServicesDep, body: A1111PngInfoRequest) -> A1111PngInfoResponse:
    """The infotext embedded in an image (PNG text chunk or EXIF UserComment), parsed."""
    answer = await run_in_threadpool(png_info, body.image, max_bytes=services.settings.limits.max_input_bytes)
    return A1111PngInfoResponse(**answer)
