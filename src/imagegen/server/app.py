"""The FastAPI application: ``create_app(settings)`` wires the service, auth, limits, logs and the three dialects.

Nothing happens at import: the job service (store, model catalog, worker processes) starts in the app's lifespan and
stops with it.
"""

from __future__ import annotations

import logging
import re
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import Depends, FastAPI
from starlette.concurrency import run_in_threadpool
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from imagegen import __version__
from imagegen.server.auth import AuthenticationMiddleware, Authenticator, LoopbackHostMiddleware, authenticate
from imagegen.server.errors import PayloadTooLarge, install_error_handlers
from imagegen.server.logs import REQUEST_ID
from imagegen.server.services import Services
from imagegen.server.settings import ServerSettings

access_logger = logging.getLogger("imagegen.access")
#: Client-supplied request ids are logged only when they cannot forge log lines.
_REQUEST_ID = re.compile(rb"[A-Za-z0-9._-]{1,128}")

_DESCRIPTION = """\
imagegen's own asynchronous job API (below), plus an A1111-compatible API under `/sdapi/v1` and an
OpenAI-compatible one under `/v1/images`. Submit with `POST /v1/jobs`, follow with `GET /v1/jobs/{id}` or the
Server-Sent Events of `GET /v1/jobs/{id}/events`, fetch the PNGs (with their A1111 infotext) from the job's `images`.
Authenticate with `Authorization: Bearer KEY` when the server has API keys. Image URLs handed out are signed
(`?expires=...&sig=...`) and work without the key until they expire; finished jobs are deleted after the retention
period (`imagegen serve --keep-results`).
"""


class BodyLimitMiddleware:
    """Refuse request bodies over ``limit`` bytes with 413, without reading them.

    A declared Content-Length over the limit fails on the first read; a chunked body fails as soon as the bytes read
    pass the limit. The error is raised from the body reader as an HTTP exception, so each dialect's error handler
    renders it in its own shape."""

    def __init__(self, app: ASGIApp, *, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = None
        for name, value in scope.get("headers", ()):
            if name == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    declared = None
        received = 0

        async def limited_receive() -> Message:
            nonlocal received
            if declared is not None and declared > self.limit:
                raise PayloadTooLarge(self.limit)
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.limit:
                    raise PayloadTooLarge(self.limit)
            return message

        await self.app(scope, limited_receive, send)


class AccessLogMiddleware:
    """One JSON line per request: method, path (never the query string, which may carry secrets), status, time and
    a request id (the client's ``X-Request-ID`` when it is a sane token, else a new one), echoed in the response."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500
        given = next((value for name, value in scope.get("headers", ()) if name == b"x-request-id"), b"")
        request_id = given.decode("latin-1") if _REQUEST_ID.fullmatch(given) else uuid.uuid4().hex

        token = REQUEST_ID.set(request_id)

        async def record_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", ()), (b"x-request-id", request_id.encode())]
            await send(message)

        try:
            await self.app(scope, receive, record_status)
        finally:
            REQUEST_ID.reset(token)
            client = scope.get("client")
            access_logger.info(
                "request",
                extra={
                    "method": scope["method"],
                    "path": scope["path"],
                    "status": status,
                    "ms": round((time.perf_counter() - started) * 1000, 1),
                    "client": client[0] if client else None,
                    "request_id": request_id,
                },
            )


def create_app(settings: ServerSettings, *, services: Services | None = None) -> FastAPI:
    """The service's ASGI app. ``services`` replaces the default :class:`Services` (tests move its clock)."""
    running = services if services is not None else Services(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # Resolving models and spawning workers block: keep the event loop free while they run.
        await run_in_threadpool(running.start)
        try:
            yield
        finally:
            await run_in_threadpool(running.stop)

    app = FastAPI(
        title="imagegen",
        version=__version__,
        description=_DESCRIPTION,
        lifespan=lifespan,
        dependencies=[Depends(authenticate)],
    )
    app.state.settings = settings
    app.state.services = running
    authenticator = Authenticator(settings, url_signer=lambda: running.urls)
    app.state.authenticator = authenticator
    install_error_handlers(app)
    # Outermost last: access log -> Host check (auth off only) -> authentication (before routing, so no body is read
    # for a 401) -> body limit.
    app.add_middleware(BodyLimitMiddleware, limit=settings.max_body_bytes)
    app.add_middleware(AuthenticationMiddleware, authenticator=authenticator)
    if not settings.auth_enabled:
        app.add_middleware(LoopbackHostMiddleware)
    app.add_middleware(AccessLogMiddleware)

    from imagegen.server.dialects.a1111 import routes as a1111
    from imagegen.server.dialects.native import routes as native
    from imagegen.server.dialects.openai import routes as openai
    from imagegen.server.page import add_page

    app.include_router(native.router)
    app.include_router(a1111.router)
    app.include_router(openai.router)
    add_page(app)
    # Each dialect renders errors on its own paths in its own shape (imagegen.server.errors.register_dialect_errors).
    a1111.install_a1111(app, settings)
    openai.install_openai(app)
    return app
