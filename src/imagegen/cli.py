"""The ``imagegen`` command line: arguments → GenerationRequest → Engine → PNG files.

Exit codes: 0 success, 2 bad arguments (the message names the argument), 1 runtime failure (one-line cause).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from imagegen.errors import ImagegenError, InvalidRequest, ModelNotFound, UnsafeModelFile
from imagegen.fields import FIELDS, dialect_names, field_names
from imagegen.options import EngineOptions, Offload
from imagegen.requests import MAX_IMAGES, MAX_STEPS, GenerationRequest, GenerationResult, Limits

if TYPE_CHECKING:
    import socket
    from types import FrameType

    import uvicorn

    from imagegen.engine import Engine, ProgressEvent
    from imagegen.loading import ModelInfo
    from imagegen.requests import UpscaleRequest, UpscaleResult
    from imagegen.server.services import Services
    from imagegen.server.settings import ServerSettings

#: Argument (request field or setting) → the CLI argument that sets it, so errors name what the user typed.
FLAGS: Mapping[str, str] = MappingProxyType(
    {
        **dialect_names("cli"),
        "device": "--device",
        "dtype": "--dtype",
        "offload": "--offload",
        "max_loaded": "--max-loaded",
        "threads": "--threads",
        "from": "--from",
        "api_key": "--api-key",
        "api_auth": "--api-auth",
        "host": "--host",
        "port": "--port",
        "max_queue": "--max-queue",
        "workers": "--workers",
        "max_batch": "--max-batch",
        "max_batch_images": "--max-batch-images",
        "max_body_bytes": "--max-body-mb",
        "job_retries": "--job-retries",
        "job_timeout": "--job-timeout",
        "url_ttl": "--url-ttl",
        "keep_results_hours": "--keep-results",
        "default_model": "--model",
        "store": "--store",
    }
)
_REQUEST_DEFAULTS: Mapping[str, object] = MappingProxyType(
    {f.name: f.default for f in dataclasses.fields(GenerationRequest)}
)
#: Request fields whose CLI argument is not a plain ``--flag VALUE`` (a positional, ``--size WxH``, a file path).
_OWN_ARGUMENTS = frozenset(
    {"prompt", "width", "height", "init_image", "loras", "styles", "mask", "outpaint", "hr_resize_x", "hr_resize_y"}
)
#: Metavars of the plain flags by value kind (argparse would otherwise show the field name).
_METAVARS: Mapping[type | str, str] = MappingProxyType(
    {int: "N", float: "F", str: "TEXT", "model": "REF", "refiner": "REF", "sampler": "NAME", "schedule_type": "NAME"}
)


#: Commands whose code lives beside the runtime package (``imagegen_shapes``, in a clone of the repository): imported
#: only when one of them runs, so ``imagegen generate`` never loads training code. Name -> (module, help).
TRAINING_COMMANDS: Mapping[str, tuple[str, str]] = MappingProxyType(
    {
        "train-demo": ("imagegen_shapes.train", "train the built-in shapes model from scratch (CPU, ~2 h)"),
        "eval-demo": ("imagegen_shapes.evaluate", "score a shapes model with the rule-based analyser"),
        "train-lora": ("imagegen_shapes.train_lora", "train a small LoRA for the shapes model (CPU, minutes)"),
    }
)


class UsageError(Exception):
    """A bad command-line argument (exit code 2)."""

    def __init__(self, argument: str, message: str) -> None:
        super().__init__(f"argument {argument}: {message}")


def _sides(text: str) -> tuple[int, int, int, int]:
    """``--outpaint LEFT,RIGHT,TOP,BOTTOM`` (pixels; one number grows every side by it)."""
    try:
        values = [int(part) for part in text.split(",")]
    except ValueError:
        values = []
    if len(values) == 1:
        values *= 4
    if len(values) != 4 or min(values) < 0:
        raise argparse.ArgumentTypeError(f"must be LEFT,RIGHT,TOP,BOTTOM pixel counts, e.g. 64,64,0,0, got {text!r}")
    return values[0], values[1], values[2], values[3]


def _size(text: str) -> tuple[int, int]:
    try:
        width, height = (int(part) for part in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be WIDTHxHEIGHT, e.g. 1024x1024, got {text!r}") from None
    return width, height


#: Smallest size limit ``serve`` accepts: below it no model makes a useful image.
_MIN_LIMIT_SIDE = 64


def _limit_size(text: str) -> tuple[int, int]:
    """``--max-size WxH``: both sides multiples of 8, at least 64."""
    width, height = _size(text)
    if min(width, height) < _MIN_LIMIT_SIDE or width % 8 or height % 8:
        raise argparse.ArgumentTypeError(
            f"width and height must be multiples of 8 of at least {_MIN_LIMIT_SIDE}, e.g. 1024x1024, got {text!r}"
        )
    return width, height


def _limit_pixels(text: str) -> int:
    """``--max-pixels`` / ``--max-input-pixels``: a pixel count, or WxH meaning W × H."""
    try:
        pixels = int(text) if "x" not in text.lower() else _product(_size(text))
    except (ValueError, argparse.ArgumentTypeError):
        raise argparse.ArgumentTypeError(
            f"must be a number of pixels or WIDTHxHEIGHT, e.g. 1048576 or 1024x1024, got {text!r}"
        ) from None
    low = _MIN_LIMIT_SIDE * _MIN_LIMIT_SIDE
    if pixels < low:
        raise argparse.ArgumentTypeError(
            f"must be at least {low} pixels ({_MIN_LIMIT_SIDE}x{_MIN_LIMIT_SIDE}), got {text!r}"
        )
    return pixels


def _product(size: tuple[int, int]) -> int:
    return size[0] * size[1]


def _bounded_int(low: int, high: int) -> Callable[[str], int]:
    """An argparse type: a whole number in ``[low, high]``."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be a whole number between {low} and {high}, got {text!r}") from None
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"must be between {low} and {high}, got {value}")
        return value

    return parse


def _megabytes(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number of MiB, got {text!r}") from None
    # At least 1 KiB: a smaller limit would refuse every file, which is surely a typo.
    if not 1 / 1024 <= value < float("inf"):
        raise argparse.ArgumentTypeError(f"must be a number of MiB of at least 0.001 (1 KiB), got {text!r}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="imagegen", description="Generate images with open diffusion models.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    gen = sub.add_parser("generate", help="text-to-image or image-to-image; writes PNGs and prints their paths")
    _request_arguments(gen)

    info = sub.add_parser("info", help="print the generation parameters embedded in an image")
    info.add_argument("image", type=Path, metavar="IMAGE")
    info.add_argument("--json", action="store_true", help="print JSON")

    models = sub.add_parser("models", help="list local models, or hub text-to-image models with --hub")
    models.add_argument(
        "--hub",
        nargs="?",
        const="",
        default=None,
        metavar="QUERY",
        help="list the hub's text-to-image models by downloads (honours HF_ENDPOINT)",
    )
    models.add_argument("--limit", type=int, default=20, help="rows for --hub (default 20)")
    models.add_argument("--models-dir", type=Path, default=None, metavar="DIR")
    models.add_argument("--json", action="store_true", help="print JSON")
    demo = sub.add_parser("demo", help="generate a gallery with the built-in shapes model")
    demo.add_argument("--out", type=Path, default=Path("outputs"), metavar="DIR", help="output folder")
    demo.add_argument("--seed", type=int, default=1, help="seed of every gallery image (default 1)")
    _engine_options(demo)
    for name, (_, text) in TRAINING_COMMANDS.items():
        # Listed here for `imagegen --help`; main() hands their arguments to their own parser before this one runs.
        sub.add_parser(name, help=text, add_help=False)
    _serve_options(sub.add_parser("serve", help="run the HTTP service (native job API, A1111 and OpenAI dialects)"))
    _upscale_arguments(sub.add_parser("upscale", help="upscale images (A1111's Extras); writes PNGs, prints paths"))
    _upscalers_arguments(sub.add_parser("upscalers", help="list the upscalers, available here or not (with why)"))
    return parser


def _serve_options(serve: argparse.ArgumentParser) -> None:
    serve.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    serve.add_argument("--port", type=int, default=7860, metavar="PORT", help="port (default 7860, A1111's)")
    serve.add_argument(
        "--model",
        dest="models",
        action="append",
        default=[],
        metavar="REF",
        help="a model to serve (repeatable; the first is the default); the models directory and the demo model too",
    )
    serve.add_argument("--data-dir", type=Path, default=None, metavar="DIR", help="job database and result images")
    serve.add_argument(
        "--store",
        default=None,
        metavar="URL",
        help="job store shared by several servers: postgresql://USER:PASS@HOST:PORT/DB "
        "(default $IMAGEGEN_STORE, else the SQLite database in the data dir)",
    )
    serve.add_argument(
        "--api-key",
        dest="api_keys",
        action="append",
        default=[],
        metavar="KEY",
        help="accepted Bearer key (repeatable); $IMAGEGEN_API_KEYS (comma-separated) keeps keys out of `ps`",
    )
    serve.add_argument(
        "--api-auth",
        default=None,
        metavar="USER:PASS[,USER:PASS]",
        help="HTTP Basic credentials for /sdapi, like A1111's --api-auth",
    )
    serve.add_argument("--max-queue", type=int, default=64, metavar="N", help="jobs waiting before 429 (default 64)")
    serve.add_argument(
        "--workers", type=int, default=1, metavar="N", help="worker processes, one per device (default 1)"
    )
    serve.add_argument(
        "--max-batch",
        type=int,
        default=8,
        metavar="N",
        help="compatible queued jobs a worker denoises as one batch (default 8; 1 turns batching off)",
    )
    serve.add_argument(
        "--max-batch-images", type=int, default=16, metavar="N", help="most images in one batch (default 16)"
    )
    serve.add_argument(
        "--max-body-mb", type=float, default=45.0, metavar="MB", help="largest request body in MiB (default 45)"
    )
    defaults = Limits()
    serve.add_argument(
        "--max-size",
        type=_limit_size,
        default=None,
        metavar="WxH",
        help=f"largest width and height a request may ask for (default {defaults.max_width}x{defaults.max_height}); "
        "also caps the pixel count at W×H unless --max-pixels is given",
    )
    serve.add_argument(
        "--max-pixels",
        type=_limit_pixels,
        default=None,
        metavar="N|WxH",
        help=f"most pixels per image, width × height (default: W×H of --max-size, else {defaults.max_pixels})",
    )
    serve.add_argument(
        "--max-steps",
        type=_bounded_int(1, MAX_STEPS),
        default=None,
        metavar="N",
        help=f"most denoising steps per request (default {defaults.max_steps}, at most {MAX_STEPS})",
    )
    serve.add_argument(
        "--max-images",
        type=_bounded_int(1, MAX_IMAGES),
        default=None,
        metavar="N",
        help=f"most images per request (default {defaults.max_images})",
    )
    serve.add_argument(
        "--max-input-pixels",
        type=_limit_pixels,
        default=None,
        metavar="N|WxH",
        help=f"largest input image (img2img, edits), checked before decoding (default {defaults.max_input_pixels})",
    )
    serve.add_argument(
        "--max-input-mb",
        type=_megabytes,
        default=None,
        metavar="MB",
        help=f"largest input image file in MiB (default {defaults.max_input_bytes / 2**20:g})",
    )
    serve.add_argument(
        "--job-retries", type=int, default=1, metavar="N", help="re-runs of a job whose worker died (default 1)"
    )
    serve.add_argument(
        "--job-timeout", type=float, default=3600.0, metavar="S", help="seconds before a job is stopped (default 3600)"
    )
    serve.add_argument(
        "--url-ttl",
        type=int,
        default=3600,
        metavar="SECONDS",
        help="lifetime of the signed image URLs handed out, which work without the API key "
        "(default 3600, at most 604800 = 7 days)",
    )
    serve.add_argument(
        "--keep-results",
        type=float,
        default=168.0,
        metavar="HOURS",
        help="delete finished jobs, their images and Idempotency-Keys this long after they end "
        "(default 168 = 7 days; 0 keeps them forever)",
    )
    serve.add_argument(
        "--ray",
        nargs="?",
        const="local",
        default=None,
        metavar="ADDRESS",
        help="run on Ray Serve: engines on replicas that Ray places and scales (a new local cluster, or the one at "
        "ADDRESS, e.g. auto or ray://head:10001); needs the 'ray' extra",
    )
    serve.add_argument(
        "--replicas",
        type=_replica_range,
        default=(1, 1),
        metavar="MIN[:MAX]",
        help="with --ray: engine replicas; with MAX above MIN, Ray adds replicas while jobs wait (default 1)",
    )
    serve.add_argument(
        "--gpus-per-replica",
        type=float,
        default=None,
        metavar="N",
        help="with --ray: GPUs per engine replica (default 1 with --device cuda, else 0)",
    )
    serve.add_argument(
        "--scale-down-delay",
        type=float,
        default=60.0,
        metavar="S",
        help="with --ray: seconds without waiting jobs before an extra replica is removed (default 60)",
    )
    _engine_options(serve)
    serve.add_argument("--engine-factory", default=None, metavar="MODULE:CALLABLE", help=argparse.SUPPRESS)
    serve.add_argument("--log-level", default="info", choices=("debug", "info", "warning", "error"))


def _request_arguments(gen: argparse.ArgumentParser) -> None:
    """The request's flags, from :data:`imagegen.fields.FIELDS` (names and help), plus ``--from`` and ``--out``."""
    gen.add_argument("prompt", nargs="?", default=None, metavar="PROMPT", help=_help("prompt"))
    for spec in FIELDS:
        if spec.cli is None or spec.field in _OWN_ARGUMENTS:
            continue
        flags = spec.cli.split("/")
        help = spec.help + _default_text(spec.field)
        if spec.kind is bool:
            # --flag / --no-flag: the second turns off what a --from image turned on.
            gen.add_argument(*flags, dest=spec.field, action=argparse.BooleanOptionalAction, default=None, help=help)
        else:
            metavar = _METAVARS.get(spec.field) or _METAVARS[spec.kind]
            gen.add_argument(*flags, dest=spec.field, type=spec.kind, default=None, metavar=metavar, help=help)
    gen.add_argument(
        "--size", type=_size, default=None, metavar="WxH", help="image size, multiples of 8 (default: the model's)"
    )
    gen.add_argument("--init-image", type=Path, default=None, metavar="PATH", help=_help("init_image"))
    gen.add_argument("--mask", type=Path, default=None, metavar="PATH", help=_help("mask"))
    gen.add_argument("--outpaint", type=_sides, default=None, metavar="L,R,T,B", help=_help("outpaint"))
    gen.add_argument(
        "--hr-resize", type=_size, default=None, metavar="WxH", help="hires fix: target size instead of --hr-scale"
    )
    gen.add_argument(
        "--lora",
        dest="loras",
        type=_lora_argument,
        action="append",
        default=None,
        metavar="NAME[:WEIGHT]",
        help=_help("loras") + " (repeatable)",
    )
    gen.add_argument(
        "--style", dest="styles", action="append", default=None, metavar="NAME", help=_help("styles") + " (repeatable)"
    )
    gen.add_argument(
        "--from",
        dest="from_image",
        type=Path,
        default=None,
        metavar="IMAGE",
        help="regenerate from the parameters embedded in IMAGE (other options override them)",
    )
    gen.add_argument(
        "--out", type=Path, default=Path("outputs"), metavar="DIR", help="output folder (default outputs/)"
    )
    _engine_options(gen)


def _default_text(field: str) -> str:
    """`` (default X)`` for a request field with a fixed default (None means "the model's", said in its help)."""
    default = _REQUEST_DEFAULTS.get(field)
    return "" if default in (None, "", False) else f" (default {default})"


def _help(field: str) -> str:
    spec = field_names(field)
    return spec.help if spec is not None else ""


def _engine_options(parser: argparse.ArgumentParser) -> None:
    """The :class:`~imagegen.options.EngineOptions` flags, the same for ``generate``, ``demo`` and ``serve``."""
    parser.add_argument("--device", default=None, help="auto (default), cpu, cuda, cuda:N, mps")
    parser.add_argument(
        "--dtype",
        default=None,
        help="auto (default): float16 on GPUs; on a CPU bfloat16 for full-size models where the CPU has it in "
        "hardware, else float32. Or float32, float16, bfloat16",
    )
    parser.add_argument(
        "--models-dir",
        type=Path,
        default=None,
        metavar="DIR",
        help="folder of models referenced by name (default $IMAGEGEN_MODELS_DIR)",
    )
    parser.add_argument("--allow-pickle", action="store_true", help="allow .ckpt/.bin pickle files (can run code)")
    parser.add_argument(
        "--offload",
        default=Offload.NONE.value,
        choices=[o.value for o in Offload],
        help="CPU offload to save GPU memory",
    )
    parser.add_argument("--vae-slicing", action="store_true", help="decode a batch one image at a time")
    parser.add_argument("--vae-tiling", action="store_true", help="decode large images in tiles")
    parser.add_argument(
        "--compile", action="store_true", help="torch.compile the UNet at load (minutes; for GPUs, fixed sizes)"
    )
    parser.add_argument(
        "--threads",
        type=_bounded_int(1, 1024),
        default=None,
        metavar="N",
        help="CPU threads for torch (default: every core; serve's workers leave the API process one core)",
    )
    parser.add_argument(
        "--lora-dir",
        dest="lora_dirs",
        type=Path,
        action="append",
        default=[],
        metavar="DIR",
        help="a LoRA folder searched before <models-dir>/Lora (repeatable)",
    )
    parser.add_argument(
        "--embeddings-dir",
        dest="embeddings_dirs",
        type=Path,
        action="append",
        default=[],
        metavar="DIR",
        help="a textual-inversion folder searched before <models-dir>/embeddings (repeatable)",
    )
    parser.add_argument(
        "--styles-file",
        type=Path,
        default=None,
        metavar="CSV",
        help="A1111 styles.csv (name,prompt,negative_prompt; default <models-dir>/styles.csv)",
    )


def engine_options(args: argparse.Namespace) -> EngineOptions:
    """The engine options of a parsed ``generate``, ``demo`` or ``serve`` command line."""
    return EngineOptions(
        device=args.device,
        dtype=args.dtype,
        models_dir=args.models_dir,
        allow_pickle=args.allow_pickle,
        offload=Offload(args.offload),
        vae_slicing=args.vae_slicing,
        vae_tiling=args.vae_tiling,
        compile=args.compile,
        threads=args.threads,
        lora_dirs=tuple(args.lora_dirs),
        embeddings_dirs=tuple(args.embeddings_dirs),
        styles_file=args.styles_file,
    )


def _lora_argument(text: str) -> dict[str, object]:
    """``NAME`` or ``NAME:WEIGHT`` or ``NAME:TE_WEIGHT:UNET_WEIGHT`` (as in A1111's tag) → a ``loras`` entry."""
    name, *weights = text.split(":")
    try:
        numbers = [float(w) for w in weights]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: weights must be numbers (NAME:0.8 or NAME:TE:UNET)") from None
    if len(numbers) > 2:
        raise argparse.ArgumentTypeError(f"{text!r}: at most two weights (NAME:TE:UNET)")
    entry: dict[str, object] = {"name": name}
    if len(numbers) == 1:
        entry["weight"] = numbers[0]
    elif len(numbers) == 2:
        entry["te_weight"], entry["unet_weight"] = numbers
    return entry


def main(argv: Sequence[str] | None = None) -> int:
    words = list(sys.argv[1:] if argv is None else argv)
    if words and words[0] in TRAINING_COMMANDS:
        return _run_training_command(words[0], words[1:])
    parser = build_parser()
    args = parser.parse_args(words)
    try:
        if args.command == "generate":
            return _generate(args)
        if args.command == "info":
            return _info(args)
        if args.command == "demo":
            return _demo(args)
        if args.command == "serve":
            return _serve(args)
        if args.command == "upscale":
            return _upscale(args)
        if args.command == "upscalers":
            return _upscalers(args)
        return _models(args)
    except UsageError as exc:
        parser.exit(2, f"imagegen: error: {exc}\n")
    except InvalidRequest as exc:
        parser.exit(2, f"imagegen: error: argument {FLAGS.get(exc.field, exc.field)}: {exc.message}\n")
    except (ModelNotFound, UnsafeModelFile) as exc:
        parser.exit(2, f"imagegen: error: argument --model: {exc}\n")
    except ImagegenError as exc:
        parser.exit(1, f"imagegen: {exc.code}: {exc}\n")
    except KeyboardInterrupt:
        parser.exit(130, "imagegen: interrupted\n")


def _run_training_command(name: str, argv: list[str]) -> int:
    import importlib

    module_name, _ = TRAINING_COMMANDS[name]
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        print(
            f"imagegen: error: {name} needs the demo model's training code (imagegen_shapes), which is not installed: "
            f"run it from a clone of the imagegen repository after `make install` there ({exc})",
            file=sys.stderr,
        )
        return 2
    result: int = module.main(argv)
    return result


# generate --------------------------------------------------------------------------------------------------------


def _request_fields(args: argparse.Namespace, limits: Limits) -> dict[str, Any]:  # GenerationRequest's kwargs
    """Request fields from ``--from IMAGE`` (if given), overridden by the arguments the user typed."""
    from imagegen.imageio import read_image_file
    from imagegen.metadata import read_infotext, request_fields_from_infotext

    fields: dict[str, Any] = {}
    if args.from_image is not None:
        try:
            text = read_infotext(args.from_image)
        except OSError as exc:
            raise UsageError("--from", f"cannot read {args.from_image}: {exc}") from None
        if not text:
            raise UsageError("--from", f"{args.from_image} carries no generation parameters")
        fields = request_fields_from_infotext(text)
        if "strength" in fields and args.init_image is None and not fields.get("enable_hr"):
            raise UsageError(
                "--from",
                f"{args.from_image} was made with image-to-image (denoising strength {fields['strength']}); "
                "pass the source image with --init-image",
            )
    typed: dict[str, object] = {
        spec.field: getattr(args, spec.field) for spec in FIELDS if spec.cli and spec.field not in _OWN_ARGUMENTS
    }
    typed["prompt"] = args.prompt
    if args.size is not None:
        typed["width"], typed["height"] = args.size
    if args.sampler is not None and args.eta is None:
        # A reused image's eta belongs to the sampler that made it; another sampler starts from its own default.
        fields.pop("eta", None)
    fields.update({key: value for key, value in typed.items() if value is not None})
    if args.loras:
        fields["loras"] = args.loras
    if args.styles:
        fields["styles"] = args.styles
    if args.outpaint is not None:
        fields["outpaint"] = args.outpaint
    if args.hr_resize is not None:
        fields["hr_resize_x"], fields["hr_resize_y"] = args.hr_resize
    for name in ("init_image", "mask"):
        path = getattr(args, name)
        if path is not None:
            fields[name] = read_image_file(
                path,
                field=name,
                max_pixels=limits.max_input_pixels,
                max_bytes=limits.max_input_bytes,
                keep_alpha=name == "mask",
            )
    if "mask_blur" in fields and args.from_image is not None and "mask" not in fields and "outpaint" not in fields:
        raise UsageError("--from", f"{args.from_image} was made by inpainting; pass the mask with --mask")
    if "prompt" not in fields:
        raise UsageError("PROMPT", "a prompt is required (or --from IMAGE to reuse one)")
    return fields


def _generate(args: argparse.Namespace) -> int:
    limits = Limits()
    request = GenerationRequest(**_request_fields(args, limits))
    engine = engine_options(args).engine(limits=limits)
    result = _run_with_progress(engine, request)
    for warning in result.warnings:
        print(f"imagegen: warning: {warning}", file=sys.stderr)
    for path in result.save(args.out):
        print(path)
    return 0


def _demo(args: argparse.Namespace) -> int:
    from imagegen.demo.gallery import make_gallery

    engine = engine_options(args).engine()
    _, sheet = make_gallery(engine, args.out, seed=args.seed, log=lambda line: print(line, file=sys.stderr))
    print(sheet)
    return 0


def _run_with_progress(engine: Engine, request: GenerationRequest) -> GenerationResult:
    from tqdm import tqdm

    with tqdm(total=0, unit="step", desc="generating", file=sys.stderr, disable=None, leave=False) as bar:

        def on_progress(event: ProgressEvent) -> None:
            bar.total = event.total
            bar.set_description(event.stage)
            bar.update(event.step - bar.n)

        return engine.generate(request, progress=on_progress)


# upscale / upscalers ---------------------------------------------------------------------------------------------

#: ``upscale``'s output limits: above the server's defaults, since a local photo upscaled 4x is often over 2048 px.
UPSCALE_LIMITS = Limits(max_width=8192, max_height=8192, max_pixels=8192 * 8192)
#: UpscaleRequest field -> the ``upscale`` argument that sets it, so errors name what the user typed.
UPSCALE_FLAGS: Mapping[str, str] = MappingProxyType(
    {
        "image": "IMAGE",
        "upscaler": "--upscaler",
        "scale": "--scale",
        "width": "--size",
        "height": "--size",
        "crop": "--no-crop",
        "upscaler_2": "--upscaler-2",
        "upscaler_2_visibility": "--upscaler-2-visibility",
    }
)


def _upscale_arguments(parser: argparse.ArgumentParser) -> None:
    from imagegen.requests import UpscaleRequest

    defaults = {f.name: f.default for f in dataclasses.fields(UpscaleRequest)}
    parser.add_argument("images", nargs="+", type=Path, metavar="IMAGE", help="PNG, JPEG or WebP files")
    parser.add_argument(
        "--upscaler",
        default=defaults["upscaler"],
        metavar="NAME",
        help=f"upscaler (see `imagegen upscalers`; default {defaults['upscaler']})",
    )
    size = parser.add_mutually_exclusive_group()
    size.add_argument(
        "--scale", type=float, default=None, metavar="F", help=f"upscale factor (default {defaults['scale']:g})"
    )
    size.add_argument("--size", type=_size, default=None, metavar="WxH", help="upscale to this size instead")
    parser.add_argument(
        "--no-crop",
        dest="crop",
        action="store_false",
        help="with --size: keep the aspect ratio (the result covers WxH) instead of cropping to exactly WxH",
    )
    parser.add_argument(
        "--upscaler-2", default=defaults["upscaler_2"], metavar="NAME", help="a second upscaler blended over the first"
    )
    parser.add_argument(
        "--upscaler-2-visibility",
        type=float,
        default=defaults["upscaler_2_visibility"],
        metavar="F",
        help="--upscaler-2's share of the result, 0 (off, the default) to 1",
    )
    parser.add_argument(
        "--out", type=Path, default=Path("outputs"), metavar="DIR", help="output folder (default outputs/)"
    )
    parser.add_argument("--device", default=None, help="for model files: auto (default), cpu, cuda, cuda:N, mps")
    parser.add_argument(
        "--threads", type=_bounded_int(1, 1024), default=None, metavar="N", help="CPU threads for torch"
    )
    _upscaler_folder_arguments(parser)


def _upscalers_arguments(parser: argparse.ArgumentParser) -> None:
    _upscaler_folder_arguments(parser)
    parser.add_argument("--json", action="store_true", help="print JSON")


def _upscaler_folder_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--models-dir",
        type=Path,
        default=None,
        metavar="DIR",
        help="models folder whose ESRGAN/ and RealESRGAN/ hold upscaler model files (default $IMAGEGEN_MODELS_DIR)",
    )
    parser.add_argument("--allow-pickle", action="store_true", help="allow .pth/.pt pickle files (can run code)")


def _upscale(args: argparse.Namespace) -> int:
    """Upscale each IMAGE; writes ``<stem>-<upscaler>-x<scale>.png`` (or ``-<W>x<H>``) with its infotext."""
    from imagegen.imageio import read_image_file
    from imagegen.metadata import write_image
    from imagegen.requests import UpscaleRequest
    from imagegen.rules import check_upscale

    if not args.crop and args.size is None:
        raise UsageError("--no-crop", "only applies with --size")
    fields: dict[str, Any] = {
        "upscaler": args.upscaler,
        "upscaler_2": args.upscaler_2,
        "upscaler_2_visibility": args.upscaler_2_visibility,
        "crop": args.crop,
    }
    if args.size is not None:
        fields["width"], fields["height"] = args.size
    elif args.scale is not None:
        fields["scale"] = args.scale
    limits = UPSCALE_LIMITS
    try:
        # 1. Read and check every image before any work, so a bad last argument costs no upscaling of the first.
        requests = []
        for path in args.images:
            image = read_image_file(
                path, field="image", max_pixels=limits.max_input_pixels, max_bytes=limits.max_input_bytes
            )
            request = UpscaleRequest(image=image, **fields)
            check_upscale(request, limits)
            requests.append(request)
        # 2. Upscale each (the engine checks the upscaler names before its first tile).
        options = EngineOptions(
            device=args.device, models_dir=args.models_dir, allow_pickle=args.allow_pickle, threads=args.threads
        )
        engine = options.engine(limits=limits)
        for path, request in zip(args.images, requests, strict=True):
            result = _upscale_with_progress(engine, request)
            out = _upscale_path(args.out, path, request, result.images[0].size)
            try:
                args.out.mkdir(parents=True, exist_ok=True)
                write_image(result.images[0], result.infotexts[0], out)
            except OSError as exc:
                raise UsageError("--out", f"cannot write {out}: {exc.strerror or exc}") from None
            print(out)
    except InvalidRequest as exc:
        raise UsageError(UPSCALE_FLAGS.get(exc.field, exc.field), exc.message) from None
    return 0


def _upscale_with_progress(engine: Engine, request: UpscaleRequest) -> UpscaleResult:
    from tqdm import tqdm

    with tqdm(total=0, unit="tile", desc="upscaling", file=sys.stderr, disable=None, leave=False) as bar:

        def on_progress(event: ProgressEvent) -> None:
            bar.total = event.total
            bar.update(event.step - bar.n)

        return engine.upscale(request, progress=on_progress)


def _upscale_path(folder: Path, source: Path, request: UpscaleRequest, size: tuple[int, int]) -> Path:
    """``<stem>-<upscaler slug>-x<scale>.png`` (``-<W>x<H>`` with a target size); ``-2``, ``-3``, ... rather than
    overwriting a file."""
    import re

    from imagegen.metadata import format_number

    slug = re.sub(r"[^a-z0-9]+", "-", request.upscaler.lower()).strip("-") or "upscaled"
    what = f"x{format_number(request.scale)}" if request.width is None else f"{size[0]}x{size[1]}"
    stem = f"{source.stem}-{slug}-{what}"
    path = folder / f"{stem}.png"
    number = 1
    while path.exists():
        number += 1
        path = folder / f"{stem}-{number}.png"
    return path


def _upscalers(args: argparse.Namespace) -> int:
    from imagegen.metadata import format_number
    from imagegen.upscalers import Upscalers

    options = EngineOptions(models_dir=args.models_dir, allow_pickle=args.allow_pickle)
    infos = Upscalers(folders=options.upscaler_folders(), allow_pickle=options.allow_pickle).list()
    if args.json:
        print(json.dumps([dataclasses.asdict(info) for info in infos], indent=2))
        return 0
    width = max(len(info.name) for info in infos)
    for info in infos:
        state = "available" if info.available else f"unavailable: {info.reason}"
        print(f"{info.name:{width}}  x{format_number(float(info.scale)):<3} {state}")
    return 0


# serve -----------------------------------------------------------------------------------------------------------


def _serve_settings(args: argparse.Namespace) -> ServerSettings:
    import os

    from imagegen.server.settings import DEFAULT_ENGINE_FACTORY, ServerSettings, default_data_dir

    keys = [*args.api_keys, *(k.strip() for k in os.environ.get("IMAGEGEN_API_KEYS", "").split(",") if k.strip())]
    basic = []
    for pair in (args.api_auth or "").split(","):
        if pair.strip():
            user, sep, password = pair.strip().partition(":")
            if not sep:
                raise UsageError("--api-auth", "must be USER:PASSWORD[,USER:PASSWORD...]")
            basic.append((user, password))
    return ServerSettings(
        limits=_serve_limits(args),
        host=args.host,
        port=args.port,
        models=tuple(args.models),
        engine=engine_options(args),
        data_dir=args.data_dir or default_data_dir(),
        store_url=args.store or os.environ.get("IMAGEGEN_STORE") or None,
        api_keys=tuple(dict.fromkeys(keys)),
        basic_auth=tuple(basic),
        max_queue=args.max_queue,
        workers=args.workers,
        max_batch=args.max_batch,
        max_batch_images=args.max_batch_images,
        max_body_bytes=int(args.max_body_mb * 1024 * 1024),
        job_retries=args.job_retries,
        job_timeout=args.job_timeout if args.job_timeout > 0 else None,
        url_ttl=args.url_ttl,
        keep_results_hours=args.keep_results,
        engine_factory=args.engine_factory or DEFAULT_ENGINE_FACTORY,
    )


def _replica_range(text: str) -> tuple[int, int]:
    low, _, high = text.partition(":")
    try:
        bounds = int(low), int(high or low)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be MIN or MIN:MAX (whole numbers), got {text!r}") from None
    if bounds[0] < 1 or bounds[1] < bounds[0]:
        raise argparse.ArgumentTypeError(f"needs 1 <= MIN <= MAX, got {text!r}")
    return bounds


def _serve_limits(args: argparse.Namespace) -> Limits:
    """The per-request limits from ``--max-*`` (each flag left out keeps :class:`Limits`' default)."""
    changes: dict[str, int] = {}
    if args.max_size is not None:
        changes["max_width"], changes["max_height"] = args.max_size
        # A smaller box lowers the pixel cap with it; a larger one raises it, so that WxH itself is allowed.
        changes["max_pixels"] = _product(args.max_size)
    if args.max_pixels is not None:
        changes["max_pixels"] = args.max_pixels
    if args.max_steps is not None:
        changes["max_steps"] = args.max_steps
    if args.max_images is not None:
        changes["max_images"] = args.max_images
    if args.max_input_pixels is not None:
        changes["max_input_pixels"] = args.max_input_pixels
    if args.max_input_mb is not None:
        changes["max_input_bytes"] = int(args.max_input_mb * 1024 * 1024)
    return dataclasses.replace(Limits(), **changes)


def _serve(args: argparse.Namespace) -> int:
    """Run uvicorn on the app; SIGTERM/Ctrl-C drain (not ready, new work 503, running jobs finish), twice: stop now."""
    import threading

    try:
        import uvicorn

        from imagegen.server.app import create_app
        from imagegen.server.logs import configure_logging
        from imagegen.server.services import Services
    except ImportError as exc:
        raise UsageError(
            "serve", f"the server needs the 'serve' extra: pip install 'imagegen[serve]' ({exc})"
        ) from None
    settings = _serve_settings(args)
    configure_logging(args.log_level)
    if args.ray is not None:
        return _serve_on_ray(args, settings)
    services = Services(settings)
    app = create_app(settings, services=services)
    # Before binding, so that these fail with one clear line instead of a startup traceback.
    services.claim_data_dir()
    if not services.catalog.refresh():
        raise UsageError(
            "--model",
            "no models to serve: pass --model REF or --models-dir DIR (the built-in demo model is not installed)",
        )
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        log_level=args.log_level,
        access_log=False,  # imagegen.access logs each request as JSON instead
        timeout_graceful_shutdown=10,
    )

    class DrainingServer(uvicorn.Server):
        draining = False

        def handle_exit(self, sig: int, frame: FrameType | None) -> None:
            # Not uvicorn's handler: it re-raises the signal after shutdown, and a drained server exits 0.
            if self.draining:
                # Second signal: stop now. The normal shutdown still runs, so the workers are stopped and their
                # jobs go back to the queue without counting an attempt; a third signal skips even that.
                if self.should_exit:
                    self.force_exit = True
                self.should_exit = True
                return
            self.draining = True
            print(
                "imagegen serve: draining: running jobs finish, new jobs get 503 (signal again to stop now)",
                file=sys.stderr,
            )
            services.begin_drain()

            def exit_when_drained() -> None:
                services.wait_drained(settings.drain_timeout)
                self.should_exit = True

            threading.Thread(target=exit_when_drained, name="drain", daemon=True).start()

        async def startup(self, sockets: list[socket.socket] | None = None) -> None:
            await super().startup(sockets)
            if self.started:
                _banner(settings, services, self)

    server = DrainingServer(config)
    server.run()
    return 0 if server.started else 1


def _serve_on_ray(args: argparse.Namespace, settings: ServerSettings) -> int:
    if args.workers != 1:
        raise UsageError("--workers", "with --ray, engines are Ray replicas: use --replicas MIN[:MAX]")
    try:
        from imagegen.server.rayserve.app import Scaling
        from imagegen.server.rayserve.cluster import serve_on_ray
    except ImportError as exc:
        raise UsageError("--ray", f"Ray Serve is not installed: pip install 'imagegen[ray]' ({exc})") from None
    low, high = args.replicas
    scaling = Scaling(
        min_replicas=low, max_replicas=high, gpus=args.gpus_per_replica, downscale_delay_s=args.scale_down_delay
    )
    address = None if args.ray == "local" else args.ray
    return serve_on_ray(settings, scaling, address=address, log_level=args.log_level)


def _banner(settings: ServerSettings, services: Services, server: uvicorn.Server) -> None:
    from imagegen.server.settings import redact_url

    host = f"[{settings.host}]" if ":" in settings.host else settings.host
    port = settings.port
    for bound in getattr(server, "servers", ()):
        for sock in getattr(bound, "sockets", ()):
            port = sock.getsockname()[1]
    models = services.catalog.models()
    default = models[0].ref if models else "none"
    if settings.auth_enabled:
        auth = f"on ({len(settings.api_keys)} API key(s), {len(settings.basic_auth)} Basic user(s))"
    else:
        auth = f"OFF (allowed only because {settings.host} is loopback; pass --api-key to enable)"
    hours = settings.keep_results_hours
    keep = f"deleted {hours:g} h after their job ends" if hours > 0 else "kept forever"
    lines = [
        f"imagegen serve: http://{host}:{port}  (API docs: http://{host}:{port}/docs)",
        f"  models:  {', '.join(m.ref for m in models) or 'none'} (default: {default})",
        f"  auth:    {auth}",
        f"  data:    {settings.data_dir}",
        f"  store:   {redact_url(settings.store_url) if settings.store_url else settings.database}",
        f"  workers: {settings.workers}, queue bound {settings.max_queue}, job retries {settings.job_retries}, "
        f"batches of up to {settings.max_batch} jobs / {settings.max_batch_images} images",
        f"  limits:  {_limits_line(settings.limits)}",
        f"  results: {keep}; image URLs valid {settings.url_ttl} s",
        *(f"  warning: {warning}" for warning in settings.warnings()),
    ]
    print("\n".join(lines), file=sys.stderr, flush=True)


def _limits_line(limits: Limits) -> str:
    return (
        f"{limits.max_width}x{limits.max_height} ({limits.max_pixels} pixels), {limits.max_steps} steps, "
        f"{limits.max_images} images per request; input images {limits.max_input_pixels} pixels, "
        f"{limits.max_input_bytes / 2**20:g} MiB"
    )


# info / models ---------------------------------------------------------------------------------------------------


def _info(args: argparse.Namespace) -> int:
    from imagegen.metadata import parse_infotext, read_infotext

    try:
        text = read_infotext(args.image)
    except OSError as exc:
        raise UsageError("IMAGE", f"cannot read {args.image}: {exc}") from None
    if not text:
        print(f"imagegen: {args.image} carries no generation parameters", file=sys.stderr)
        return 1
    if not args.json:
        print(text)
        return 0
    info = parse_infotext(text)
    data = {key: value for key, value in vars(info).items() if value not in (None, "", {})}
    if info.extra:
        data["extra"] = dict(info.extra)
    print(json.dumps(data, indent=2, ensure_ascii=False))
    return 0


def _models(args: argparse.Namespace) -> int:
    from imagegen.loading import iter_local_models, search_hub

    if args.hub is not None:
        rows = search_hub(args.hub, limit=args.limit)
        if args.json:
            print(json.dumps([vars(row) for row in rows], indent=2))
        for row in rows if not args.json else ():
            print(f"{row.id:60} {row.downloads:>12,} downloads  {row.likes:>7,} likes")
        return 0
    models = list(iter_local_models(args.models_dir))
    if args.json:
        print(json.dumps([_model_json(m) for m in models], indent=2))
        return 0
    if not models:
        print("no local models; pass --model with a hub id, folder or .safetensors file", file=sys.stderr)
    for m in models:
        size = f"{m.defaults.width}x{m.defaults.height}"
        print(f"{m.ref:50} {m.family.value:13} {m.kind:12} {size:>9}  {m.path}")
    return 0


def _model_json(model: ModelInfo) -> dict[str, object]:
    return {
        "ref": model.ref,
        "family": model.family.value,
        "kind": model.kind,
        "path": str(model.path),
        "hash": model.hash,
        "prediction_type": model.prediction_type,
        "width": model.defaults.width,
        "height": model.defaults.height,
    }


if __name__ == "__main__":
    sys.exit(main())
