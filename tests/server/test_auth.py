"""Reliability case 1: every route but the public probes and docs needs credentials; no secret is ever echoed.

The routes are enumerated from the app, so a route added later without authentication fails here."""

from __future__ import annotations

import base64
import re

import pytest

from imagegen.errors import InvalidRequest
from imagegen.server.auth import PUBLIC_PATHS
from imagegen.server.settings import ServerSettings

KEY = "sk-test-0123456789"
WRONG = "sk-wrong-secret-value"


@pytest.fixture
def secured(make_client):
    return make_client(api_keys=(KEY,), basic_auth=(("alice", "wonderland"),))


def _routes(app):
    """(method, concrete path, template) of every HTTP route, including routes of included routers.

    FastAPI versions differ: older ones copy included routes into ``app.routes`` as ``APIRoute``s, newer ones keep an
    included-router entry whose ``effective_route_contexts()`` yields them."""
    found = []
    for route in app.routes:
        contexts = route.effective_route_contexts() if hasattr(route, "effective_route_contexts") else [route]
        for context in contexts:
            methods = getattr(context, "methods", None) or set()
            for method in sorted(set(methods) - {"HEAD", "OPTIONS"}):
                found.append((method, re.sub(r"\{[^}]+\}", "x", context.path), context.path))
    return found


def test_route_enumeration_sees_every_documented_operation(secured):
    # OpenAPI writes "{name}" where the route says "{name:path}".
    seen = {(method, re.sub(r"\{(\w+):\w+\}", r"{\1}", template)) for method, _, template in _routes(secured.app)}
    documented = {
        (method.upper(), path) for path, operations in secured.app.openapi()["paths"].items() for method in operations
    }
    assert documented <= seen


def _basic(user, password):
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def test_every_route_needs_credentials(secured):
    routes = list(_routes(secured.app))
    assert len(routes) >= 10  # the native API at least; the dialects add theirs
    assert any(path.startswith("/sdapi/") for _, path, _ in routes)
    assert any(path.startswith("/v1/images/generations") for _, path, _ in routes)
    for method, path, template in routes:
        if template in PUBLIC_PATHS:
            continue
        for headers in ({}, {"Authorization": f"Bearer {WRONG}"}, {"Authorization": _basic("alice", WRONG)}):
            response = secured.request(method, path, headers=headers)
            assert response.status_code == 401, (method, path, headers, response.status_code)
            assert WRONG not in response.text
            assert "www-authenticate" in response.headers


def test_public_routes_are_only_probes_docs_and_the_page(secured):
    assert set(PUBLIC_PATHS) <= {
        "/healthz",
        "/readyz",
        "/docs",
        "/docs/oauth2-redirect",
        "/redoc",
        "/openapi.json",
        "/",
    }
    # The page's files hold no data; its data comes from the API, which wants the key.
    assert secured.get("/").status_code == 200
    assert secured.get("/v1/jobs").status_code == 401
    assert secured.get("/healthz").status_code == 200
    assert secured.get("/readyz").status_code == 200
    assert secured.get("/openapi.json").status_code == 200


def test_right_credentials_pass(secured):
    bearer = {"Authorization": f"Bearer {KEY}"}
    assert secured.get("/v1/models", headers=bearer).status_code == 200
    assert secured.post("/v1/jobs", json={"prompt": "x"}, headers=bearer).status_code == 202
    # Basic is for A1111 clients only; the native API wants the Bearer key.
    assert secured.get("/v1/models", headers={"Authorization": _basic("alice", "wonderland")}).status_code == 401
    for auth in (_basic("alice", "wonderland"), _basic("anyone", KEY), f"Bearer {KEY}"):
        assert secured.get("/sdapi/v1/sd-models", headers={"Authorization": auth}).status_code == 200, auth
    assert secured.get("/sdapi/v1/sd-models", headers={"Authorization": _basic("bob", "wonderland")}).status_code == 401


def test_auth_off_is_refused_off_loopback(tmp_path):
    with pytest.raises(InvalidRequest) as error:
        ServerSettings(host="0.0.0.0", data_dir=tmp_path)
    assert error.value.field == "api_key"
    assert ServerSettings(host="0.0.0.0", data_dir=tmp_path, api_keys=(KEY,)).auth_enabled
    for host in ("127.0.0.1", "localhost", "::1", "127.0.0.2"):
        assert not ServerSettings(host=host, data_dir=tmp_path).auth_enabled


def test_open_server_on_loopback_needs_no_key(client):
    assert client.get("/v1/models").status_code == 200


def _body_routes(app):
    """(method, concrete path) of every protected route that takes a request body."""
    return [
        (method, path)
        for method, path, template in _routes(app)
        if method in ("POST", "PUT", "PATCH") and template not in PUBLIC_PATHS
    ]


def test_malformed_bodies_without_credentials_are_401_on_every_body_route(secured):
    # Authentication comes before the body is parsed: a broken body must not turn a 401 into a 422/400.
    routes = _body_routes(secured.app)
    assert {"/v1/jobs", "/sdapi/v1/txt2img", "/v1/images/generations", "/v1/images/edits"} <= {p for _, p in routes}
    for method, path in routes:
        for headers in ({}, {"Authorization": f"Bearer {WRONG}"}, {"Authorization": _basic("alice", WRONG)}):
            response = secured.request(
                method, path, content=b"{not json", headers={"content-type": "application/json", **headers}
            )
            assert response.status_code == 401, (method, path, headers, response.status_code, response.text)
            assert "www-authenticate" in response.headers
            assert WRONG not in response.text


def test_an_unauthenticated_body_is_never_read(tmp_path):
    """At the ASGI level: the app answers 401 without calling ``receive`` once, even for a body over the limit."""
    import asyncio

    from imagegen.server.app import create_app

    app = create_app(ServerSettings(data_dir=tmp_path, api_keys=(KEY,)))  # no lifespan: nothing may need the service

    async def call(method, path):
        reads = 0
        sent = []

        async def receive():
            nonlocal reads
            reads += 1
            return {"type": "http.request", "body": b"{not json", "more_body": False}

        async def send(message):
            sent.append(message)

        scope = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": method,
            "scheme": "http",
            "path": path,
            "raw_path": path.encode(),
            "root_path": "",
            "query_string": b"",
            "headers": [(b"content-type", b"application/json"), (b"content-length", str(100 * 1024 * 1024).encode())],
            "client": ("127.0.0.1", 40000),
            "server": ("testserver", 80),
        }
        await app(scope, receive, send)
        return reads, sent[0]["status"]

    for method, path in _body_routes(app):
        assert asyncio.run(call(method, path)) == (0, 401), (method, path)


def test_signed_url_exception_is_decided_before_routing_too(tmp_path):
    """The middleware applies the signed-URL rule to GET/HEAD of /v1/images/{name} only: a signature on the OpenAI
    POST routes is not a credential, and a bad one on the image route is a 403, not a 401."""
    from fastapi.testclient import TestClient

    from imagegen.server.app import create_app
    from imagegen.server.jobs.urls import URLSigner

    app = create_app(ServerSettings(data_dir=tmp_path, api_keys=(KEY,)))
    signer = URLSigner(b"k" * 32, ttl=60)
    app.state.services._urls = signer  # the lifespan would load the key; nothing else is needed here
    client = TestClient(app, raise_server_exceptions=False)
    query = signer.sign("generations").query
    assert client.post(f"/v1/images/generations?{query}", json={"prompt": "x"}).status_code == 401
    assert client.get("/v1/images/0123.png?expires=1&sig=00").status_code == 403
    # A valid signature passes authentication; the image itself does not exist here.
    assert client.get(f"/v1/images/{'a' * 32}-0.png?{signer.sign('a' * 32 + '-0.png').query}").status_code == 404


def test_a_401_from_the_models_list_parses_as_an_openai_error(secured):
    # The OpenAI SDK's client.models.list() calls GET /v1/models, a native route.
    error = secured.get("/v1/models", headers={"Authorization": f"Bearer {WRONG}"}).json()["error"]
    assert error["type"] == "invalid_request_error"
    assert error["param"] is None
    assert error["message"]
    assert error["code"] == "unauthorized"


# --------------------------------------------------------------------------------------------------------------------
# Without keys: only loopback Host headers (DNS rebinding).

EVIL = {"Host": "rebind.attacker.example:7860"}


@pytest.mark.parametrize(
    ("host", "ok"),
    [
        ("localhost", True),
        ("LocalHost:7860", True),
        ("127.0.0.1", True),
        ("127.0.0.1:7860", True),
        ("[::1]", True),
        ("[::1]:7860", True),
        ("127.0.0.2:8000", True),  # a loopback address too (the server may be bound there)
        ("", False),
        ("::1", False),  # IPv6 in a Host header must be bracketed
        ("attacker.example", False),
        ("localhost.attacker.example", False),
        ("127.0.0.1.nip.io:7860", False),
        ("attacker.example:127.0.0.1", False),
        ("localhost:7860:1", False),
        ("[::2]:7860", False),
        ("0.0.0.0:7860", False),
    ],
)
def test_loopback_host_headers(host, ok):
    from imagegen.server.auth import is_loopback_host_header

    assert is_loopback_host_header(host) is ok


def test_open_server_refuses_foreign_host_headers_in_each_dialects_shape(client):
    native = client.get("/v1/models", headers=EVIL)
    assert native.status_code == 421
    error = native.json()["error"]
    assert error["code"] == "misdirected_host"
    assert "Host header" in error["message"]
    assert "--api-key" in error["message"]
    a1111 = client.get("/sdapi/v1/sd-models", headers=EVIL)
    assert a1111.status_code == 421
    assert set(a1111.json()) == {"error", "detail", "body", "errors"}
    # A multipart upload needs no CORS preflight: the route a web page could reach first.
    files = {"image": ("in.png", b"\x89PNG", "image/png")}
    openai = client.post("/v1/images/edits", headers=EVIL, files=files, data={"prompt": "x"})
    assert openai.status_code == 421
    assert openai.json()["error"]["type"] == "invalid_request_error"
    assert client.get("/v1/jobs").json()["total"] == 0  # nothing got through
    # Probes answer whatever the Host; loopback names pass everywhere.
    assert client.get("/healthz", headers=EVIL).status_code == 200
    assert client.get("/readyz", headers=EVIL).status_code == 200
    for host in ("localhost:7860", "127.0.0.1:7860", "[::1]:7860"):
        assert client.get("/v1/models", headers={"Host": host}).status_code == 200, host


def test_host_header_is_not_checked_with_authentication_on(secured):
    response = secured.get("/v1/models", headers={**EVIL, "Authorization": f"Bearer {KEY}"})
    assert response.status_code == 200
    assert secured.get("/v1/models", headers=EVIL).status_code == 401


# --------------------------------------------------------------------------------------------------------------------
# Key comparison.


def test_keys_are_compared_as_equal_length_digests(tmp_path, monkeypatch):
    """``compare_digest`` returns early when lengths differ: it must only ever see digests, never the raw values."""
    import hmac

    from imagegen.server.auth import Authenticator

    authenticator = Authenticator(
        ServerSettings(data_dir=tmp_path, api_keys=("k" * 5, "k" * 80), basic_auth=(("alice", "wonderland"),))
    )
    compared = []
    real = hmac.compare_digest

    def spy(a, b):
        compared.append((len(a), len(b)))
        return real(a, b)

    monkeypatch.setattr(hmac, "compare_digest", spy)
    assert not authenticator.bearer_ok("Bearer kkk")
    assert authenticator.bearer_ok(f"Bearer {'k' * 80}")
    assert authenticator.basic_ok(_basic("alice", "wonderland"))
    assert authenticator.basic_ok(_basic("anyone", "k" * 5))
    assert not authenticator.basic_ok(_basic("alice", "wonder"))
    assert compared
    assert set(compared) == {(32, 32)}
