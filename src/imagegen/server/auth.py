"""API keys and HTTP Basic credentials, compared in constant time.

Credentials are checked twice. :class:`AuthenticationMiddleware` checks them from the method, path and headers alone,
before routing: a request without them gets its 401 before its body is read or parsed (a malformed body is a 401, not
a 422, and nobody without a key can make the server parse megabytes of JSON). The app-wide dependency
(:func:`authenticate`) checks them again after routing, with the route's template, so a route added by any router is
protected even without the middleware. The native and OpenAI APIs take ``Authorization: Bearer KEY``; the A1111 API
(``/sdapi``) also takes HTTP Basic like A1111's ``--api-auth``: a configured user and password, or any user with an API
key as password.
Only :data:`PUBLIC_PATHS` are open: liveness/readiness probes (they reveal no data), the API description and the web
page (``/`` and its files under :data:`PAGE_PREFIX`, which hold no data: the page asks for a key).
With no key configured (allowed on loopback only, see :class:`ServerSettings`), everything is open.

The one exception is :data:`SIGNED_PATHS`, the result image route: a request there carrying a URL signature
(``?expires=...&sig=...``, see :mod:`imagegen.server.jobs.urls`) is judged by the signature alone, for the image named
in the path: valid and unexpired → served without credentials; altered, for another image or expired → 403, whatever
credentials came with it. Without a signature, the usual rule applies.

A server without authentication (loopback only) also checks the ``Host`` header (:class:`LoopbackHostMiddleware`):
a web page on a domain that resolves to 127.0.0.1 (DNS rebinding) could otherwise drive it from the user's browser.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
from collections.abc import Callable, Iterable

from fastapi import Request
from starlette.types import ASGIApp, Receive, Scope, Send

from imagegen.errors import ImagegenError
from imagegen.server.errors import MisdirectedHost, Unauthorized, render_error
from imagegen.server.jobs.urls import EXPIRES_PARAM, SIGNATURE_PARAM, URLSigner
from imagegen.server.settings import ServerSettings, is_loopback

PUBLIC_PATHS = ("/healthz", "/readyz", "/docs", "/docs/oauth2-redirect", "/redoc", "/openapi.json", "/")
#: The web page's static files (:mod:`imagegen.server.page`): code and style, no data; the page asks for a key.
PAGE_PREFIX = "/ui/"
#: Paths that accept HTTP Basic (A1111 clients send it).
BASIC_PREFIXES = ("/sdapi/",)
#: Route templates that accept a URL signature instead of credentials, each for the path parameter ``name`` only.
SIGNED_PATHS = ("/v1/images/{name}",)
#: The concrete paths of :data:`SIGNED_PATHS` before routing: one path segment, the ``name``. Only GET/HEAD reach the
#: image route; other methods on such a path are the OpenAI routes (``POST /v1/images/generations``) or a 405.
_SIGNED_PATH = re.compile(r"/v1/images/(?P<name>[^/]+)")
_SIGNED_METHODS = ("GET", "HEAD")
#: Liveness/readiness probes answer whatever the Host header: they reveal nothing, and supervisors probe by address.
PROBE_PATHS = ("/healthz", "/readyz")
#: A Host header: a name or IPv4 address, or a bracketed IPv6 address, then an optional port.
_HOST_HEADER = re.compile(r"(?P<host>\[[0-9A-Fa-f:.]+\]|[^:\[\]]+)(?::[0-9]{1,5})?")


def _route_path(scope: Scope) -> str:
    """The path the router matches: Starlette keeps a mount prefix (``root_path``) in ``path``; routes see the rest."""
    path: str = scope["path"]
    root: str = scope.get("root_path", "")
    return path[len(root) :] if root and path.startswith(root) else path


def _digest(secret: bytes) -> bytes:
    return hashlib.sha256(secret).digest()


def _any_equal(candidate: bytes, secrets: Iterable[bytes]) -> bool:
    """True if ``candidate`` is one of ``secrets`` (given as :func:`_digest` values).

    Digests are compared, not the bytes: ``compare_digest`` returns early on a length mismatch, so comparing the raw
    values would tell an attacker how long each key is. Every secret is compared without stopping early, so timing
    reveals neither which one matched nor how many there are."""
    digest = _digest(candidate)
    matched = False
    for secret in secrets:
        matched |= hmac.compare_digest(digest, secret)
    return matched


def is_loopback_host_header(value: str) -> bool:
    """True for a ``Host`` header naming this machine: ``localhost``, a loopback address (``127.0.0.1``,
    ``[::1]``), with or without a port."""
    match = _HOST_HEADER.fullmatch(value)
    return match is not None and is_loopback(match.group("host"))


class Authenticator:
    def __init__(self, settings: ServerSettings, *, url_signer: Callable[[], URLSigner] | None = None) -> None:
        self._keys = tuple(_digest(key.encode()) for key in settings.api_keys)
        self._basic = tuple(_digest(f"{user}:{password}".encode()) for user, password in settings.basic_auth)
        self.enabled = settings.auth_enabled
        #: The running service's signer (a callable: the key is loaded when the service starts, after this exists).
        self._url_signer = url_signer

    def bearer_ok(self, authorization: str | None) -> bool:
        scheme, _, token = (authorization or "").partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            return False
        return _any_equal(token.strip().encode(), self._keys)

    def basic_ok(self, authorization: str | None) -> bool:
        scheme, _, token = (authorization or "").partition(" ")
        if scheme.lower() != "basic":
            return False
        try:
            pair = base64.b64decode(token.strip(), validate=True)
        except (binascii.Error, ValueError):
            return False
        _, sep, password = pair.partition(b":")
        if not sep:
            return False
        # Evaluate both checks: no short cut that would time differently for the two kinds of credential.
        as_pair = _any_equal(pair, self._basic)
        as_key = _any_equal(password, self._keys)
        return as_pair or as_key

    def check(self, request: Request) -> None:
        """Raise :class:`Unauthorized` unless the request may use its route (a bad URL signature: ``Forbidden``).

        For a routed request (the dependency): the route's template decides whether a URL signature applies."""
        route = request.scope.get("route")
        path = getattr(route, "path", None) or request.url.path
        signed_name = str(request.path_params.get("name", "")) if path in SIGNED_PATHS else None
        self._check(request, path, signed_name)

    def check_unrouted(self, request: Request) -> None:
        """The same decision as :meth:`check` from the method and path alone, before routing (the middleware)."""
        path = _route_path(request.scope)
        match = _SIGNED_PATH.fullmatch(path) if request.method in _SIGNED_METHODS else None
        self._check(request, path, match.group("name") if match else None)

    def _check(self, request: Request, path: str, signed_name: str | None) -> None:
        if signed_name is not None and self._url_signer is not None and self._signed(request):
            # Checked even with authentication off, so that a URL behaves the same on every server: it expires.
            params = request.query_params
            expires, sig = params.getlist(EXPIRES_PARAM), params.getlist(SIGNATURE_PARAM)
            self._url_signer().verify(
                signed_name,
                expires=expires[0] if len(expires) == 1 else None,
                sig=sig[0] if len(sig) == 1 else None,
            )
            return
        if not self.enabled:
            return
        if path in PUBLIC_PATHS or path.startswith(PAGE_PREFIX):
            return
        authorization = request.headers.get("authorization")
        if path.startswith(BASIC_PREFIXES):
            if self.basic_ok(authorization) or self.bearer_ok(authorization):
                return
            raise Unauthorized("missing or invalid credentials (HTTP Basic or Bearer API key)", scheme="Basic")
        if self.bearer_ok(authorization):
            return
        raise Unauthorized("missing or invalid API key: send 'Authorization: Bearer KEY'", scheme="Bearer")

    @staticmethod
    def _signed(request: Request) -> bool:
        return EXPIRES_PARAM in request.query_params or SIGNATURE_PARAM in request.query_params


async def authenticate(request: Request) -> None:
    """The app-wide dependency installed by :func:`imagegen.server.app.create_app` (the second line of defence)."""
    request.app.state.authenticator.check(request)


class AuthenticationMiddleware:
    """Check credentials before routing, so a request without them is answered 401 before its body is read.

    Pure ASGI: it never touches ``receive``. A refused request is answered here, in the error shape of the dialect
    that owns its path (:func:`imagegen.server.errors.render_error`), because exceptions raised outside the routes
    would not reach the app's exception handlers."""

    def __init__(self, app: ASGIApp, *, authenticator: Authenticator) -> None:
        self.app = app
        self.authenticator = authenticator

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request = Request(scope)
        try:
            self.authenticator.check_unrouted(request)
        except ImagegenError as exc:
            await render_error(request, exc)(scope, receive, send)
            return
        await self.app(scope, receive, send)


class LoopbackHostMiddleware:
    """Installed only when authentication is off: refuse (421) requests whose ``Host`` header is not a loopback name.

    Such a server listens on loopback only, but a web page whose domain an attacker re-points to 127.0.0.1 (DNS
    rebinding) can make the user's browser send it requests with the page's ``Host``; multipart uploads need no CORS
    preflight. Local clients (curl, SDKs, A1111 tools) address ``localhost``/``127.0.0.1``/``[::1]`` and pass. A request
    without a ``Host`` header (HTTP/1.0) passes: browsers always send one. :data:`PROBE_PATHS` are exempt."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or _route_path(scope) in PROBE_PATHS:
            await self.app(scope, receive, send)
            return
        for name, value in scope.get("headers", ()):
            if name == b"host" and not is_loopback_host_header(value.decode("latin-1")):
                shown = value.decode("latin-1")[:100]
                error = MisdirectedHost(
                    f"the Host header {shown!r} is not localhost, 127.0.0.1 or [::1]: this server runs without "
                    "authentication, so it only answers requests addressed to this machine by a loopback name "
                    "(protection against DNS rebinding). To serve other host names, start it with --api-key KEY "
                    "(or IMAGEGEN_API_KEYS), which also allows binding other addresses with --host"
                )
                await render_error(Request(scope), error)(scope, receive, send)
                return
        await self.app(scope, receive, send)
