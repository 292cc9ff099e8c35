"""``imagegen serve`` arguments -> ServerSettings (no server is started here)."""

from __future__ import annotations

from pathlib import Path

import pytest

from imagegen.cli import _serve_settings, build_parser, main


def _settings(*argv):
    return _serve_settings(build_parser().parse_args(["serve", *argv]))


def test_flags_and_environment_make_the_settings(monkeypatch, tmp_path):
    monkeypatch.setenv("IMAGEGEN_API_KEYS", "k2, k3,,k1")
    settings = _settings(
        *("--host", "0.0.0.0", "--port", "8080", "--model", "a", "--model", "b/c"),
        *("--data-dir", str(tmp_path), "--api-key", "k1", "--api-auth", "alice:pw,bob:x:y"),
        *("--max-queue", "5", "--workers", "2", "--max-body-mb", "1", "--job-retries", "0", "--job-timeout", "0"),
    )
    assert (settings.host, settings.port) == ("0.0.0.0", 8080)
    assert settings.models == ("a", "b/c")
    assert settings.data_dir == Path(tmp_path)
    assert settings.api_keys == ("k1", "k2", "k3")
    assert settings.basic_auth == (("alice", "pw"), ("bob", "x:y"))
    assert (settings.max_queue, settings.workers, settings.job_retries) == (5, 2, 0)
    assert settings.max_body_bytes == 1024 * 1024
    assert settings.job_timeout is None


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--host", "0.0.0.0"], "argument --api-key: refusing to listen on 0.0.0.0 without authentication"),
        (["--api-auth", "alice"], "argument --api-auth"),
        (["--max-queue", "0"], "argument --max-queue"),
        (["--port", "70000"], "argument --port"),
    ],
)
def test_bad_serve_arguments_exit_2_naming_the_argument(monkeypatch, capsys, tmp_path, argv, message):
    monkeypatch.delenv("IMAGEGEN_API_KEYS", raising=False)
    with pytest.raises(SystemExit) as exit_:
        main(["serve", "--data-dir", str(tmp_path), *argv])
    assert exit_.value.code == 2
    assert message in capsys.readouterr().err


def test_serving_nothing_is_a_usage_error(monkeypatch, capsys, tmp_path):
    monkeypatch.setattr("imagegen.server.service.builtin_models", lambda: {})
    with pytest.raises(SystemExit) as exit_:
        main(["serve", "--data-dir", str(tmp_path / "data"), "--models-dir", str(tmp_path / "empty")])
    assert exit_.value.code == 2
    assert "no models to serve" in capsys.readouterr().err
