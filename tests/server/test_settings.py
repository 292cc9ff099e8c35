"""ServerSettings checks and the settings a worker process receives."""

from __future__ import annotations

import threading
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
        ({"worker_lease": 0.5}, "worker_lease"),
        ({"worker_lease": 3601}, "worker_lease"),
        ({"worker_lease": float("nan")}, "worker_lease"),
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


def test_an_unreachable_or_full_store_is_a_503_or_507_that_names_no_database(caplog):
    import errno

    from imagegen.server.jobs.store import StoreUnavailable

    down = error_info(StoreUnavailable("cannot reach postgresql://imagegen:***@db.internal:5432/jobs"))
    assert (down.status, down.code, down.headers["Retry-After"]) == (503, "store_unavailable", "5")
    assert "db.internal" not in down.message
    assert "db.internal" in caplog.text  # the operator sees where
    full = StoreUnavailable("the database could not write")
    full.__cause__ = OSError(errno.ENOSPC, "No space left on device")
    assert (error_info(full).status, error_info(full).code) == (507, "disk_full")


def test_worker_environment_drops_imagegen_secrets():
    from imagegen.server.jobs.supervisor import worker_environment

    environ = {
        "PATH": "/usr/bin",
        "IMAGEGEN_API_KEYS": "sk-1,sk-2",
        "imagegen_api_keys": "sk-lower",
        "IMAGEGEN_HF_TOKEN": "hf-secret",
        "IMAGEGEN_HOME": "/data",
        "IMAGEGEN_MODELS_DIR": "/models",
        "IMAGEGEN_FAKE_STEP_SLEEP": "0.1",
        "HF_HOME": "/hf",
    }
    assert worker_environment(environ) == {
        "PATH": "/usr/bin",
        "IMAGEGEN_HOME": "/data",
        "IMAGEGEN_MODELS_DIR": "/models",
        "IMAGEGEN_FAKE_STEP_SLEEP": "0.1",
        "HF_HOME": "/hf",
    }


def test_spawned_workers_do_not_inherit_the_api_keys_variable(monkeypatch, tmp_path):
    import subprocess
    from types import SimpleNamespace

    from imagegen.server.jobs import supervisor as supervisor_module
    from imagegen.server.jobs.store import JobStore

    monkeypatch.setenv("IMAGEGEN_API_KEYS", "sk-from-the-environment")
    monkeypatch.setenv("IMAGEGEN_HOME", str(tmp_path / "home"))
    environments = []

    class FakePopen:
        def __init__(self, args, *, env, **kwargs):
            environments.append(env)
            self.pid = 0
            self.stdin = None

    monkeypatch.setattr(supervisor_module, "subprocess", SimpleNamespace(Popen=FakePopen, PIPE=subprocess.PIPE))
    settings = ServerSettings(data_dir=tmp_path, api_keys=("sk-from-the-environment",))
    supervisor = supervisor_module.WorkerSupervisor(
        settings, JobStore(tmp_path / "jobs.sqlite3"), default_model=lambda: None, draining=threading.Event()
    )
    supervisor._spawn(supervisor_module._Slot(index=0))
    [env] = environments
    assert "IMAGEGEN_API_KEYS" not in env
    assert not any("sk-from-the-environment" in value for value in env.values())
    assert env["IMAGEGEN_HOME"] == str(tmp_path / "home")  # the rest is inherited
    assert env["PYTHONUNBUFFERED"] == "1"


def test_short_retention_with_long_url_ttl_is_warned_about(tmp_path, capsys):
    from types import SimpleNamespace

    from imagegen.cli import _banner

    assert ServerSettings(data_dir=tmp_path).warnings() == ()
    assert ServerSettings(data_dir=tmp_path, keep_results_hours=0, url_ttl=7 * 24 * 3600).warnings() == ()
    short = ServerSettings(data_dir=tmp_path, keep_results_hours=0.5, url_ttl=7200)
    [warning] = short.warnings()
    assert "--keep-results 0.5 h" in warning
    assert "--url-ttl 7200 s" in warning
    assert "404" in warning
    _banner(short, SimpleNamespace(catalog=SimpleNamespace(models=list)), object())
    assert f"warning: {warning}" in capsys.readouterr().err


def test_runtime_modules_hold_no_mutable_module_state():
    """Constants are tuples, frozensets or MappingProxyType, never a dict/list/set a caller could change: every
    module of the runtime package (server, dialects and jobs included)."""
    import importlib
    import pkgutil

    import imagegen

    found = []
    for info in pkgutil.walk_packages(imagegen.__path__, prefix="imagegen."):
        module = importlib.import_module(info.name)
        for name, value in vars(module).items():
            if not name.startswith("__") and type(value) in (dict, list, set, bytearray):
                found.append(f"{module.__name__}.{name}")
    assert found == []
