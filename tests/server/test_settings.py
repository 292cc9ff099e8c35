"""ServerSettings checks and the settings a worker process receives."""

from __future__ import annotations

from pathlib import Path

import pytest

from imagegen.errors import InvalidRequest
from imagegen.requests import Limits
from imagegen.server.errors import ErrorInfo, QueueFull, Unauthorized, error_info
from imagegen.server.settings import ServerSettings, is_loopback


def test_worker_settings_round_trip_without_secrets(tmp_path):
    settings = ServerSettings(
        host="0.0.0.0",
        api_keys=("sk-secret",),
        basic_auth=(("alice", "pw-secret"),),
        data_dir=str(tmp_path),
        models=["a", "b"],
        limits=Limits(max_steps=20),
        job_timeout=None,
    )
    text = settings.worker_json()
    assert "sk-secret" not in text
    assert "pw-secret" not in text
    worker = ServerSettings.from_worker_json(text)
    assert worker.data_dir == Path(tmp_path)
    assert worker.models == ("a", "b")
    assert worker.limits == Limits(max_steps=20)
    assert worker.job_timeout is None
    assert worker.api_keys == ()


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"max_queue": 0}, "max_queue"),
        ({"workers": 0}, "workers"),
        ({"job_retries": -1}, "job_retries"),
        ({"job_timeout": 0}, "job_timeout"),
        ({"engine_factory": "no-colon"}, "engine_factory"),
        ({"api_keys": ("",)}, "api_key"),
        ({"basic_auth": (("alice", ""),)}, "api_auth"),
        ({"port": -1}, "port"),
    ],
)
def test_bad_settings_name_the_setting(tmp_path, overrides, field):
    with pytest.raises(InvalidRequest) as error:
        ServerSettings(data_dir=tmp_path, **overrides)
    assert error.value.field == field


def test_loopback_detection():
    assert all(is_loopback(h) for h in ("127.0.0.1", "127.8.9.10", "::1", "[::1]", "localhost", "LOCALHOST"))
    assert not any(is_loopback(h) for h in ("0.0.0.0", "::", "192.168.1.2", "example.com", ""))


def test_error_info_statuses_and_headers():
    full = error_info(QueueFull("full", retry_after=7))
    assert (full.status, full.code, full.headers["Retry-After"]) == (429, "queue_full", "7")
    assert error_info(Unauthorized(scheme="Basic")).headers["WWW-Authenticate"].startswith("Basic")
    invalid = error_info(InvalidRequest("width", "must be a multiple of 8, got 7"))
    assert (invalid.status, invalid.field) == (400, "width")
    unexpected = error_info(RuntimeError("/secret/path exploded"))
    assert unexpected == ErrorInfo(status=500, code="internal_error", message=unexpected.message)
    assert "/secret/path" not in unexpected.message
