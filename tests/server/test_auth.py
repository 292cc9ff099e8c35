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


def test_public_routes_are_only_probes_and_docs(secured):
    assert set(PUBLIC_PATHS) <= {"/healthz", "/readyz", "/docs", "/docs/oauth2-redirect", "/redoc", "/openapi.json"}
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
