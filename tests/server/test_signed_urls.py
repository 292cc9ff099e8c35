"""Signed image URLs: without the API key they open exactly one image until they expire; anything else is 403.

The app runs with real worker processes and the fake engine; time is a :class:`FakeClock`, never a sleep."""

from __future__ import annotations

import io
import os
import re
import stat
from dataclasses import replace
from urllib.parse import parse_qs, urlsplit

import pytest
from PIL import Image
from service_app import FakeClock, running_app, service_of

from imagegen.cli import _serve_settings, build_parser, main
from imagegen.errors import InvalidRequest
from imagegen.server.auth import PUBLIC_PATHS, SIGNED_PATHS
from imagegen.server.errors import URLExpired, URLSignatureInvalid
from imagegen.server.jobs.urls import KEY_BYTES, URLKeyError, URLSigner, load_or_create_key
from imagegen.server.settings import ServerSettings
from support.server_harness import wait_job

KEY = "sk-signed-urls-0123456789"
BEARER = {"Authorization": f"Bearer {KEY}"}


@pytest.fixture
def clock():
    return FakeClock()


@pytest.fixture
def secured(settings, clock):
    with running_app(replace(settings, api_keys=(KEY,)), clock=clock) as client:
        yield client


def _job(client, **body):
    """A succeeded job, submitted and read with the API key."""
    response = client.post("/v1/jobs", json={"prompt": "signed", **body}, headers=BEARER)
    assert response.status_code == 202, response.text
    job = wait_job(lambda path: client.get(path, headers=BEARER), response.json()["id"])
    assert job["status"] == "succeeded", job
    return job


def _query(url):
    return {name: values[0] for name, values in parse_qs(urlsplit(url).query).items()}


def _path(url):
    return urlsplit(url).path


def _assert_png(response):
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "image/png"
    with Image.open(io.BytesIO(response.content)) as image:
        assert image.format == "PNG"


def _assert_forbidden(response, code, word):
    assert response.status_code == 403, (response.status_code, response.text)
    error = response.json()["error"]  # the native shape: this is the native image route
    assert error["code"] == code
    assert word in error["message"]
    return error


def test_job_image_urls_are_signed_and_open_without_the_key(secured, clock):
    job = _job(secured, num_images=2)
    for index, url in enumerate(job["images"]):
        query = _query(url)
        assert set(query) == {"expires", "sig"}
        assert int(query["expires"]) == int(clock.now) + 3600  # the default --url-ttl
        assert re.fullmatch(r"[0-9a-f]{64}", query["sig"])
        assert _path(url).endswith(f"-{index}.png")
        _assert_png(secured.get(url))  # no credentials at all
    # Without a signature, the usual rule: the key.
    plain = _path(job["images"][0])
    assert secured.get(plain).status_code == 401
    _assert_png(secured.get(plain, headers=BEARER))


def test_openai_url_response_opens_without_the_key(secured):
    response = secured.post(
        "/v1/images/generations",
        json={"model": "dall-e-2", "prompt": "a lighthouse", "size": "64x64", "response_format": "url"},
        headers=BEARER,
    )
    assert response.status_code == 200, response.text
    url = response.json()["data"][0]["url"]
    assert url.startswith("http://127.0.0.1/v1/images/")  # the base URL running_app addresses
    assert set(_query(url)) == {"expires", "sig"}
    _assert_png(secured.get(url))


def test_altered_or_foreign_signatures_are_403_invalid(secured):
    first, second = _job(secured, num_images=2)["images"]
    query = _query(first)
    expires, sig = query["expires"], query["sig"]
    flipped = sig[:10] + ("0" if sig[10] != "0" else "1") + sig[11:]
    bad = {
        "flipped signature": f"{_path(first)}?expires={expires}&sig={flipped}",
        "other image's signature": f"{_path(second)}?expires={expires}&sig={sig}",
        "later expiry": f"{_path(first)}?expires={int(expires) + 1}&sig={sig}",
        "expiry only": f"{_path(first)}?expires={expires}",
        "signature only": f"{_path(first)}?sig={sig}",
        "not hex": f"{_path(first)}?expires={expires}&sig={'z' * 64}",
        "twice": f"{_path(first)}?expires={expires}&sig={sig}&sig={sig}",
        "empty": f"{_path(first)}?expires=&sig=",
    }
    for case, url in bad.items():
        error = _assert_forbidden(secured.get(url), "invalid_signature", "invalid")
        assert "expired" not in error["message"], case
        # A signature, once present, decides: a valid key does not rescue a bad one (and is not needed by a good one).
        _assert_forbidden(secured.get(url, headers=BEARER), "invalid_signature", "invalid")
    _assert_png(secured.get(first))


def test_expired_url_is_403_expired_and_a_fresh_one_works(secured, clock):
    job = _job(secured)
    url = job["images"][0]
    expires = int(_query(url)["expires"])
    clock.now = expires  # valid through its last second
    _assert_png(secured.get(url))
    clock.now = expires + 1
    error = _assert_forbidden(secured.get(url), "url_expired", "expired")
    assert "invalid" not in error["message"]
    fresh = secured.get(f"/v1/jobs/{job['id']}", headers=BEARER).json()["images"][0]
    assert int(_query(fresh)["expires"]) == expires + 1 + 3600
    _assert_png(secured.get(fresh))


def test_only_the_image_route_accepts_a_signature(secured):
    """The one explicit exception to 'every route needs credentials' (test_auth): a valid signature for the path's
    own value opens no other route."""
    assert SIGNED_PATHS == ("/v1/images/{name}",)
    signed = service_of(secured).urls.sign("x").query
    routes = []
    for route in secured.app.routes:
        contexts = route.effective_route_contexts() if hasattr(route, "effective_route_contexts") else [route]
        for context in contexts:
            for method in sorted(set(getattr(context, "methods", None) or ()) - {"HEAD", "OPTIONS"}):
                routes.append((method, context.path))
    assert ("GET", "/v1/images/{name}") in routes
    checked = 0
    for method, template in routes:
        if template in PUBLIC_PATHS or template in SIGNED_PATHS:
            continue
        path = re.sub(r"\{[^}]+\}", "x", template)
        response = secured.request(method, f"{path}?{signed}")
        assert response.status_code == 401, (method, path, response.status_code)
        checked += 1
    assert checked >= 10
    # On the image route the same signature is accepted (no 401); the image "x" does not exist.
    assert secured.get(f"/v1/images/x?{signed}").status_code == 404


def test_open_loopback_server_signs_urls_too(client):
    response = client.post("/v1/jobs", json={"prompt": "open"})
    url = wait_job(client.get, response.json()["id"])["images"][0]
    assert set(_query(url)) == {"expires", "sig"}
    _assert_png(client.get(url))
    _assert_png(client.get(_path(url)))  # no key needed here without a signature either
    # A URL behaves the same on every server: an altered one is refused.
    _assert_forbidden(client.get(url.replace("sig=", "sig=0")), "invalid_signature", "invalid")


def test_key_is_random_private_and_survives_a_restart(settings, tmp_path):
    secured = replace(settings, api_keys=(KEY,))
    with running_app(secured) as client:
        url = _job(client)["images"][0]
    path = settings.url_key_path
    key = path.read_bytes()
    assert len(key) == KEY_BYTES
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert KEY.encode() not in key
    assert [p.name for p in path.parent.iterdir() if p.name.endswith(".partial")] == []
    # Another API key after the restart: the URL still opens, so its signature does not depend on the API keys.
    with running_app(replace(settings, api_keys=("sk-another-key-987654",))) as client:
        _assert_png(client.get(url))
    assert path.read_bytes() == key
    # A server on another data directory has another key: the URL's signature is invalid there.
    with running_app(replace(secured, data_dir=tmp_path / "other")) as client:
        _assert_forbidden(client.get(url), "invalid_signature", "invalid")


def test_load_or_create_key(tmp_path):
    path = tmp_path / "url-signing.key"
    key = load_or_create_key(path)
    assert len(key) == KEY_BYTES
    assert load_or_create_key(path) == key
    assert load_or_create_key(tmp_path / "second.key") != key
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    path.write_bytes(b"short")
    with pytest.raises(URLKeyError, match=r"holds 5 bytes.*delete it"):
        load_or_create_key(path)


def test_servers_starting_at_once_agree_on_one_key(tmp_path, monkeypatch):
    import imagegen.server.jobs.urls as urls

    path = tmp_path / "url-signing.key"
    real_read = urls._read_key
    raced = []

    def first_read(where):
        if not raced:
            raced.append(True)
            other = load_or_create_key(where)  # another server creates the key between our read and our write
            raced.append(other)
            raise FileNotFoundError(where)
        return real_read(where)

    monkeypatch.setattr(urls, "_read_key", first_read)
    mine = load_or_create_key(path)
    assert mine == raced[1] == path.read_bytes()
    assert [p.name for p in tmp_path.iterdir()] == ["url-signing.key"]  # no partial file left behind


def test_signer_binds_name_and_expiry():
    clock = FakeClock(1_000_000.0)
    signer = URLSigner(b"k" * 32, ttl=60, clock=clock)
    signed = signer.sign("a.png")
    assert signed.expires == 1_000_060
    signer.verify("a.png", expires=str(signed.expires), sig=signed.sig)
    signer.verify("a.png", expires=str(signed.expires), sig=signed.sig.upper())
    other_key = URLSigner(b"j" * 32, ttl=60, clock=clock)
    for verifier, name in ((signer, "b.png"), (other_key, "a.png")):
        with pytest.raises(URLSignatureInvalid):
            verifier.verify(name, expires=str(signed.expires), sig=signed.sig)
    clock.advance(61)
    with pytest.raises(URLExpired):
        signer.verify("a.png", expires=str(signed.expires), sig=signed.sig)


@pytest.mark.parametrize("ttl", [0, -5, 1.5, True, "60"])
def test_url_ttl_must_be_positive_whole_seconds(tmp_path, ttl):
    with pytest.raises(InvalidRequest) as error:
        ServerSettings(data_dir=tmp_path, url_ttl=ttl)
    assert error.value.field == "url_ttl"
    assert "at least 1" in error.value.message


def test_url_ttl_flag(monkeypatch, capsys, tmp_path):
    monkeypatch.delenv("IMAGEGEN_API_KEYS", raising=False)
    parse = build_parser().parse_args
    assert _serve_settings(parse(["serve", "--data-dir", str(tmp_path)])).url_ttl == 3600
    assert _serve_settings(parse(["serve", "--data-dir", str(tmp_path), "--url-ttl", "60"])).url_ttl == 60
    with pytest.raises(SystemExit) as exit_:
        main(["serve", "--data-dir", str(tmp_path), "--url-ttl", "0"])
    assert exit_.value.code == 2
    assert "argument --url-ttl: must be a whole number of seconds of at least 1, got 0" in capsys.readouterr().err


def test_url_ttl_is_at_most_seven_days(tmp_path, monkeypatch, capsys):
    from imagegen.server.settings import MAX_URL_TTL

    assert MAX_URL_TTL == 7 * 24 * 3600
    assert ServerSettings(data_dir=tmp_path, url_ttl=MAX_URL_TTL).url_ttl == MAX_URL_TTL
    for ttl in (MAX_URL_TTL + 1, 10**13):
        with pytest.raises(InvalidRequest) as error:
            ServerSettings(data_dir=tmp_path, url_ttl=ttl)
        assert error.value.field == "url_ttl"
        assert "at most 604800" in error.value.message
    monkeypatch.delenv("IMAGEGEN_API_KEYS", raising=False)
    with pytest.raises(SystemExit) as exit_:
        main(["serve", "--data-dir", str(tmp_path), "--url-ttl", str(10**13)])
    assert exit_.value.code == 2
    assert "argument --url-ttl: must be at most 604800 seconds" in capsys.readouterr().err


def test_signer_never_hands_out_a_url_its_verifier_refuses():
    from imagegen.server.settings import MAX_URL_TTL

    for ttl in (0, MAX_URL_TTL + 1, 10**13):
        with pytest.raises(ValueError, match="URL lifetime"):
            URLSigner(b"k" * 32, ttl=ttl)
    # The longest lifetime from today verifies.
    signer = URLSigner(b"k" * 32, ttl=MAX_URL_TTL)
    signed = signer.sign("a.png")
    signer.verify("a.png", expires=str(signed.expires), sig=signed.sig)
    # A clock so far off that expires would not fit the verifier's 12 digits: refuse to sign.
    with pytest.raises(ValueError, match="cannot sign"):
        URLSigner(b"k" * 32, ttl=60, clock=FakeClock(10.0**12)).sign("a.png")
