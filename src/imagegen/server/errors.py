"""Service errors, their HTTP status, and the exception handlers that render them.

Every error becomes an :class:`ErrorInfo` (status, stable code, message, field, headers) through :func:`error_info`.
The native API renders it as ``{"error": {"code", "message", "field", "type", "param"}}``. The A1111 and OpenAI
dialects answer in their own shapes: either their routes catch errors themselves (an ``APIRoute`` subclass), or they
call :func:`register_dialect_errors` with their path prefixes and a renderer, which the app-wide handlers installed by
:func:`install_error_handlers` then use for those paths (404s of unknown paths and 413s included).
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from http import HTTPStatus
from types import MappingProxyType

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException

from imagegen.errors import (
    Cancelled,
    DiskFull,
    GenerationFailed,
    ImagegenError,
    InvalidRequest,
    ModelLoadError,
    ModelNotFound,
    ResourceExhausted,
    UnsafeModelFile,
    is_disk_full,
)
from imagegen.server.jobs.store import StoreUnavailable

logger = logging.getLogger("imagegen.server")


class QueueFull(ImagegenError):
    """The queue holds ``max_queue`` jobs; try again after ``retry_after`` seconds."""

    code = "queue_full"

    def __init__(self, message: str, *, retry_after: int) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class IdempotencyConflict(ImagegenError):
    """An Idempotency-Key was reused with a different request body."""

    code = "idempotency_conflict"


class ServiceUnavailable(ImagegenError):
    """The server is shutting down (draining) or has no worker; try again later."""

    code = "unavailable"

    def __init__(self, message: str, *, retry_after: int = 30) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class Unauthorized(ImagegenError):
    """Missing or wrong credentials. The message never repeats what was sent."""

    code = "unauthorized"

    def __init__(self, message: str = "missing or invalid API key", *, scheme: str = "Bearer") -> None:
        super().__init__(message)
        self.scheme = scheme


class Forbidden(ImagegenError):
    """The request names what it wants, but the permission it carries (a signed URL) is not good for it."""

    code = "forbidden"


class URLExpired(Forbidden):
    """A signed image URL whose ``expires`` time has passed."""

    code = "url_expired"


class URLSignatureInvalid(Forbidden):
    """A signed image URL whose signature does not match (altered, for another image, or signed with another key)."""

    code = "invalid_signature"


class JobNotFound(ImagegenError, LookupError):
    code = "not_found"


class JobNotEnded(ImagegenError):
    """A queued or running job cannot be deleted: cancel it first (``DELETE /v1/jobs/{id}``)."""

    code = "job_not_ended"


class NoPreview(ImagegenError):
    """A job has no live preview now: it did not ask for previews, has not made one yet, or has ended."""

    code = "no_preview"


class MisdirectedHost(ImagegenError):
    """A request to a server without authentication whose ``Host`` header is not a loopback name (DNS rebinding)."""

    code = "misdirected_host"


class PayloadTooLarge(HTTPException):
    """Raised from the body reader when a request body is over ``max_body_bytes``."""

    def __init__(self, limit: int) -> None:
        super().__init__(status_code=413, detail=f"request body must be at most {limit} bytes")


#: Seconds a client is asked to wait after a 507 (disk full): an operator has to free space.
DISK_FULL_RETRY_AFTER = 30

#: Status of each error class; the first matching base class wins, so subclasses come first.
_STATUS: tuple[tuple[type[ImagegenError], int], ...] = (
    (InvalidRequest, 400),
    (ModelNotFound, 400),
    (UnsafeModelFile, 400),
    (Unauthorized, 401),
    (Forbidden, 403),
    (JobNotFound, 404),
    (NoPreview, 404),
    (MisdirectedHost, 421),
    (IdempotencyConflict, 409),
    (JobNotEnded, 409),
    (Cancelled, 409),
    (QueueFull, 429),
    (ModelLoadError, 500),
    (GenerationFailed, 500),
    (ResourceExhausted, 503),
    (ServiceUnavailable, 503),
    (DiskFull, 507),
)
#: Seconds a client is told to wait when the job store cannot be reached (a database restart, a fail-over).
STORE_RETRY_AFTER = 5
_HTTP_CODES = MappingProxyType(
    {400: "invalid_request", 401: "unauthorized", 404: "not_found", 405: "method_not_allowed", 413: "payload_too_large"}
)


@dataclass(frozen=True, kw_only=True)
class ErrorInfo:
    """What any dialect needs to render an error."""

    status: int
    code: str
    message: str
    field: str | None = None
    headers: Mapping[str, str] = dataclasses.field(default_factory=lambda: MappingProxyType({}))


ErrorRenderer = Callable[[Request, ErrorInfo], Response]


def error_info(exc: Exception) -> ErrorInfo:
    """Status, code, message, field and headers of any exception (unexpected ones say nothing about internals)."""
    if is_disk_full(exc) and not isinstance(exc, DiskFull):  # a full disk under the store's own error (PostgreSQL)
        return _disk_full_info()
    if isinstance(exc, StoreUnavailable):  # the detail (the database's address) is for the server log
        logger.error("job store unavailable: %s", exc)
        return ErrorInfo(
            status=503,
            code=exc.code,
            message="the job store cannot be reached; retry shortly",
            headers={"Retry-After": str(STORE_RETRY_AFTER)},
        )
    if isinstance(exc, ImagegenError):
        status = next((s for cls, s in _STATUS if isinstance(exc, cls)), 500)
        headers: dict[str, str] = {}
        if isinstance(exc, (QueueFull, ServiceUnavailable)):
            headers["Retry-After"] = str(exc.retry_after)
        if isinstance(exc, DiskFull):
            headers["Retry-After"] = str(DISK_FULL_RETRY_AFTER)
        if isinstance(exc, Unauthorized):
            headers["WWW-Authenticate"] = f'{exc.scheme} realm="imagegen"'
        if isinstance(exc, InvalidRequest):
            return ErrorInfo(status=status, code=exc.code, message=str(exc), field=exc.field, headers=headers)
        return ErrorInfo(status=status, code=exc.code, message=str(exc), headers=headers)
    if isinstance(exc, RequestValidationError):
        return _validation_info(exc)
    if isinstance(exc, HTTPException):
        code = _HTTP_CODES.get(exc.status_code, "http_error")
        message = exc.detail if isinstance(exc.detail, str) else HTTPStatus(exc.status_code).phrase
        return ErrorInfo(status=exc.status_code, code=code, message=message, headers=exc.headers or {})
    if is_disk_full(exc):  # a write of any route (the job database, an image): nothing the client can fix
        return _disk_full_info()
    return ErrorInfo(status=500, code="internal_error", message="internal server error (see the server log)")


def _disk_full_info() -> ErrorInfo:
    return ErrorInfo(
        status=507,
        code=DiskFull.code,
        message="the server has no disk space left; retry once space is freed",
        headers={"Retry-After": str(DISK_FULL_RETRY_AFTER)},
    )


#: Pydantic error types meaning "the body as a whole is not an object" (absent, an array, a string, form data, ...).
_NOT_AN_OBJECT = frozenset({"model_attributes_type", "model_type", "dict_type", "missing"})
#: What a client whose body is not a JSON object should do. Bodies without ``Content-Type: application/json`` are not
#: parsed as JSON (FastAPI's check, which keeps browsers' cross-site "simple" form posts out), so say that too.
BODY_NOT_AN_OBJECT = "must be a JSON object, sent with the header Content-Type: application/json"


def _validation_info(exc: RequestValidationError) -> ErrorInfo:
    errors = exc.errors()
    if not errors:
        return ErrorInfo(status=422, code="invalid_request", message="invalid request")
    first = errors[0]
    loc = tuple(first.get("loc", ()))
    if first.get("type") == "json_invalid":
        return ErrorInfo(status=422, code="invalid_request", message="body: is not valid JSON", field="body")
    if loc == ("body",) and first.get("type") in _NOT_AN_OBJECT:
        return ErrorInfo(status=422, code="invalid_request", message=f"body: {BODY_NOT_AN_OBJECT}", field="body")
    # loc is ("body", "width") or ("query", "limit"); the last string part is the field the user sent.
    names = [str(part) for part in loc if isinstance(part, str) and part not in ("body", "query")]
    name = names[-1] if names else None
    message = f"{name}: {first.get('msg', 'invalid value')}" if name else str(first.get("msg", "invalid request"))
    return ErrorInfo(status=422, code="invalid_request", message=message, field=name)


def error_type(status: int) -> str:
    """OpenAI's ``error.type`` for an HTTP status (``invalid_request_error``, ``requests``, ``server_error``)."""
    if status == 429:
        return "requests"
    if status >= 500:
        return "server_error"
    return "invalid_request_error"


def native_error_response(info: ErrorInfo) -> JSONResponse:
    """The native shape: ``{"error": {"code", "message", "field", "type", "param"}}``.

    ``type`` and ``param`` (= ``field``) are OpenAI's names: OpenAI SDKs read them from every error of a ``base_url``,
    and ``GET /v1/models`` (``client.models.list()``) is a native route."""
    error = {
        "code": info.code,
        "message": info.message,
        "field": info.field,
        "type": error_type(info.status),
        "param": info.field,
    }
    return JSONResponse({"error": error}, status_code=info.status, headers=dict(info.headers))


def register_dialect_errors(app: FastAPI, prefixes: tuple[str, ...], renderer: ErrorRenderer) -> None:
    """Render errors on paths starting with any of ``prefixes`` with ``renderer`` instead of the native shape."""
    renderers = getattr(app.state, "error_renderers", ())
    app.state.error_renderers = (*renderers, (prefixes, renderer))


def render_error(request: Request, exc: Exception) -> Response:
    """The response for ``exc`` in the shape of the dialect that owns ``request``'s path."""
    info = error_info(exc)
    if info.status >= 500:
        logger.error("%s %s failed: %s: %s", request.method, request.url.path, type(exc).__name__, exc)
    path = request.url.path
    renderers: tuple[tuple[tuple[str, ...], ErrorRenderer], ...] = getattr(request.app.state, "error_renderers", ())
    for prefixes, renderer in renderers:
        if path.startswith(prefixes):
            return renderer(request, info)
    return native_error_response(info)


async def _handle(request: Request, exc: Exception) -> Response:
    return render_error(request, exc)


def install_error_handlers(app: FastAPI) -> None:
    """App-wide handlers for imagegen errors, request validation, HTTP errors and unexpected exceptions."""
    app.add_exception_handler(ImagegenError, _handle)
    app.add_exception_handler(RequestValidationError, _handle)
    app.add_exception_handler(HTTPException, _handle)
    app.add_exception_handler(Exception, _handle)
