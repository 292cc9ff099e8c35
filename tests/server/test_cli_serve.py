"""``imagegen serve`` arguments -> ServerSettings (no server is started here)."""

from __future__ import annotations

from pathlib import Path

import pytest

from imagegen.cli import _serve_settings, build_parser, main
from imagegen.requests import Limits


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
    engine = _settings("--device", "cpu", "--offload", "model", "--vae-tiling", "--threads", "3").engine
    assert (engine.device, engine.offload.value, engine.vae_tiling, engine.vae_slicing, engine.threads) == (
        "cpu",
        "model",
        True,
        False,
        3,
    )
    assert engine.compile is False
    assert _settings("--compile", "--dtype", "bfloat16").engine.compile is True
    assert _settings("--compile", "--dtype", "bfloat16").engine.dtype == "bfloat16"


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--host", "0.0.0.0"], "argument --api-key: refusing to listen on 0.0.0.0 without authentication"),
        (["--api-auth", "alice"], "argument --api-auth"),
        (["--max-queue", "0"], "argument --max-queue"),
        (["--port", "70000"], "argument --port"),
        (["--ray", "--replicas", "0"], "argument --replicas"),
        (["--ray", "--replicas", "3:2"], "argument --replicas: needs 1 <= MIN <= MAX"),
        (["--ray", "--replicas", "a:b"], "argument --replicas: must be MIN or MIN:MAX"),
        (["--ray", "--workers", "2"], "--workers: with --ray, engines are Ray replicas"),
    ],
)
def test_bad_serve_arguments_exit_2_naming_the_argument(monkeypatch, capsys, tmp_path, argv, message):
    _assert_serve_exits_2(monkeypatch, capsys, tmp_path, argv, message)


def _assert_serve_exits_2(monkeypatch, capsys, tmp_path, argv, message):
    monkeypatch.delenv("IMAGEGEN_API_KEYS", raising=False)
    with pytest.raises(SystemExit) as exit_:
        main(["serve", "--data-dir", str(tmp_path), *argv])
    assert exit_.value.code == 2
    assert message in capsys.readouterr().err


def test_serving_nothing_is_a_usage_error(monkeypatch, capsys, tmp_path):
    monkeypatch.setattr("imagegen.server.catalog.builtin_models", lambda: {})
    with pytest.raises(SystemExit) as exit_:
        main(["serve", "--data-dir", str(tmp_path / "data"), "--models-dir", str(tmp_path / "empty")])
    assert exit_.value.code == 2
    assert "no models to serve" in capsys.readouterr().err


def test_limit_flags_make_the_limits(monkeypatch, tmp_path):
    monkeypatch.delenv("IMAGEGEN_API_KEYS", raising=False)
    base = ("--data-dir", str(tmp_path))
    assert _settings(*base).limits == Limits()  # no flag: the defaults
    limits = _settings(
        *base,
        *("--max-size", "1024x768", "--max-steps", "60", "--max-images", "2"),
        *("--max-input-pixels", "2048x2048", "--max-input-mb", "8"),
    ).limits
    assert (limits.max_width, limits.max_height) == (1024, 768)
    assert limits.max_pixels == 1024 * 768  # the size box caps the pixels too
    assert (limits.max_steps, limits.max_images) == (60, 2)
    assert limits.max_input_pixels == 2048 * 2048
    assert limits.max_input_bytes == 8 * 1024 * 1024
    assert limits.max_guidance_scale == Limits().max_guidance_scale  # untouched
    # --max-pixels overrides the box's product, as a count or as WxH.
    wide = _settings(*base, "--max-size", "4096x4096", "--max-pixels", "1048576").limits
    assert (wide.max_width, wide.max_pixels) == (4096, 1048576)
    assert _settings(*base, "--max-pixels", "512x512").limits.max_pixels == 512 * 512
    assert _settings(*base, "--max-pixels", "512x512").limits.max_width == Limits().max_width


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--max-size", "100x100"], "argument --max-size: width and height must be multiples of 8"),
        (["--max-size", "32x32"], "argument --max-size: width and height must be multiples of 8 of at least 64"),
        (["--max-size", "big"], "argument --max-size: must be WIDTHxHEIGHT"),
        (["--max-pixels", "10"], "argument --max-pixels: must be at least 4096 pixels"),
        (["--max-pixels", "lots"], "argument --max-pixels: must be a number of pixels or WIDTHxHEIGHT"),
        (["--max-steps", "0"], "argument --max-steps: must be between 1 and 1000, got 0"),
        (["--max-steps", "5000"], "argument --max-steps: must be between 1 and 1000, got 5000"),
        (["--max-steps", "ten"], "argument --max-steps: must be a whole number between 1 and 1000"),
        (["--max-images", "0"], "argument --max-images: must be between 1 and 1000, got 0"),
        (["--max-input-pixels", "8x8"], "argument --max-input-pixels: must be at least 4096 pixels"),
        (["--max-input-mb", "0"], "argument --max-input-mb: must be a number of MiB of at least 0.001"),
        (["--max-input-mb", "nan"], "argument --max-input-mb: must be a number of MiB of at least 0.001"),
        (["--max-input-mb", "x"], "argument --max-input-mb: must be a number of MiB, got 'x'"),
    ],
)
def test_bad_limit_flags_exit_2_naming_the_flag(monkeypatch, capsys, tmp_path, argv, message):
    _assert_serve_exits_2(monkeypatch, capsys, tmp_path, argv, message)


def test_limit_flags_are_in_the_help(capsys):
    with pytest.raises(SystemExit):
        main(["serve", "--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    for flag in ("--max-size WxH", "--max-pixels N|WxH", "--max-steps N", "--max-images N", "--max-input-pixels N|WxH"):
        assert flag in help_text
    assert "--max-input-mb MB" in help_text


def test_ray_flags_make_the_scaling(monkeypatch, tmp_path):
    pytest.importorskip("ray.serve", reason="Ray Serve is not installed (the 'ray' extra)")
    monkeypatch.delenv("IMAGEGEN_API_KEYS", raising=False)
    seen = {}

    def fake_serve_on_ray(settings, scaling, *, address, log_level):
        seen.update(settings=settings, scaling=scaling, address=address)
        return 0

    monkeypatch.setattr("imagegen.server.rayserve.cluster.serve_on_ray", fake_serve_on_ray)
    argv = ["serve", "--data-dir", str(tmp_path), "--ray", "--replicas", "2:4", "--scale-down-delay", "30"]
    assert main(argv) == 0
    scaling = seen["scaling"]
    assert (scaling.min_replicas, scaling.max_replicas, scaling.downscale_delay_s) == (2, 4, 30.0)
    assert (scaling.gpus, seen["address"], seen["settings"].data_dir) == (None, None, tmp_path)
    assert main(["serve", "--data-dir", str(tmp_path), "--ray", "auto", "--gpus-per-replica", "0.5"]) == 0
    assert (seen["address"], seen["scaling"].gpus, seen["scaling"].min_replicas) == ("auto", 0.5, 1)
