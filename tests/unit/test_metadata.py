"""A1111 infotext: format, parse, and embed in PNG / JPEG / WebP files (imagegen.metadata)."""

from __future__ import annotations

import dataclasses
import io
import json

import pytest
from PIL import ExifTags, Image, PngImagePlugin

from imagegen.errors import InvalidRequest
from imagegen.metadata import (
    Infotext,
    extra_value,
    format_infotext,
    metadata_save_options,
    parse_infotext,
    read_infotext,
    write_image,
)

EXAMPLE_LINE = (
    "Steps: 20, Sampler: DPM++ 2M, Schedule type: Karras, CFG scale: 7, Seed: 1234, Size: 1024x1024, "
    "Model hash: 31e35c80fc, Model: sd_xl_base_1.0, Denoising strength: 0.3, "
    "Refiner: sd_xl_refiner_1.0 [7440042bbd], Refiner switch at: 0.8, Version: v1.10.1"
)
EXAMPLE = Infotext(
    steps=20,
    sampler="DPM++ 2M",
    schedule_type="Karras",
    cfg_scale=7,
    seed=1234,
    width=1024,
    height=1024,
    model_hash="31e35c80fc",
    model="sd_xl_base_1.0",
    denoising_strength=0.3,
    refiner="sd_xl_refiner_1.0 [7440042bbd]",
    refiner_switch_at=0.8,
    version="v1.10.1",
)
# An SD 1.5 hires-fix infotext in A1111 1.10's own layout: extras with their A1111 places (VAE, Clip skip) and a
# JSON-quoted value (Lora hashes holds ':' and ',').
HIRES_TEXT = (
    "masterpiece, a castle on a hill, <lora:add_detail:0.5>\n"
    "Negative prompt: blurry, lowres\n"
    "Steps: 25, Sampler: DPM++ 2M, Schedule type: Karras, CFG scale: 7.5, Seed: 3141592653, Size: 512x768, "
    "Model hash: 6ce0161689, Model: v1-5-pruned-emaonly, VAE hash: 735e4c3a44, "
    "VAE: vae-ft-mse-840000-ema-pruned.safetensors, Denoising strength: 0.45, Clip skip: 2, Hires upscale: 2, "
    'Hires steps: 10, Hires upscaler: Latent, Lora hashes: "add_detail: 7c6bad76eb54, other: 0123456789ab", '
    "Version: v1.10.1"
)
# Enough parameters that the last line always reads as parameters (A1111's rule: at least 3 pairs).
PARAMS = {"steps": 30, "sampler": "Euler a", "cfg_scale": 7.5, "seed": 42, "width": 512, "height": 512}

ROUND_TRIP_CASES = {
    "empty prompt": Infotext(**PARAMS),
    "prompt only params": Infotext(prompt="a cat", **PARAMS),
    "negative without prompt": Infotext(negative_prompt="blurry", **PARAMS),
    "multi-line prompt": Infotext(prompt="a cat\non a mat\n\nat night", negative_prompt="ugly", **PARAMS),
    "multi-line negative": Infotext(prompt="a cat", negative_prompt="blurry,\nlowres\n\njpeg", **PARAMS),
    "prompt with trailing newline": Infotext(prompt="a cat\n", negative_prompt="x\n", **PARAMS),
    "prompt with surrounding spaces": Infotext(prompt="  a cat  ", negative_prompt="  spaced  ", **PARAMS),
    "params text inside prompt": Infotext(
        prompt="a cat, Steps: 20, Sampler: x, CFG scale: 3, Seed: 1\nholding a sign", **PARAMS
    ),
    "params text as last prompt line": Infotext(
        prompt="a cat\nSteps: 20, Sampler: x, CFG scale: 3", negative_prompt="Steps: 1, Seed: 2, Size: 3x4", **PARAMS
    ),
    "emoji cjk rtl": Infotext(prompt="🐱 猫 قطة חתול \u202eevil\u202c", negative_prompt="😡 ぼやけた", **PARAMS),
    "nul and control characters": Infotext(prompt="a\0b\tc\rd", negative_prompt="\x1b[0m", **PARAMS),
    "values with commas colons quotes": Infotext(
        prompt="x",
        sampler='My "best", sampler: v2',
        model='"quoted"',
        model_hash="trailing\\backslash",
        version="v1.0\nsecond line",
        steps=1,
        seed=2,
    ),
    "values with outer spaces": Infotext(sampler=" Euler ", model="\tm", schedule_type="", steps=1),
    "float formatting": Infotext(cfg_scale=7.0, denoising_strength=0.1, refiner_switch_at=1e-7, steps=0),
    "large and negative numbers": Infotext(seed=2**64 + 1, steps=-1, cfg_scale=1e20, width=0, height=100000),
    "refiner": Infotext(
        prompt="castle", refiner="sd_xl_refiner_1.0 [7440042bbd]", refiner_switch_at=0.8, model="sd_xl_base_1.0"
    ),
    "extras": Infotext(
        prompt="p",
        extra={
            "Hires upscale": "2",
            "Lora hashes": "add_detail: 7c6bad76eb54",
            "Emphasis": 'say "hi"',
            "a/b-c d": "",
            "Größe": "groß",
        },
        **PARAMS,
    ),
    "extras with A1111 places": Infotext(extra={"Clip skip": "2", "VAE": "v.safetensors", "ENSD": "31337"}, **PARAMS),
    "unparsable known values kept in extra": Infotext(extra={"Steps": "many", "Size": "big", "CFG scale": "nan"}),
    # Indented, the line is prompt text: not parameters (it starts like the negative prompt) nor the negative prompt.
    "indented negative prompt lookalike": Infotext(prompt="p\n  Negative prompt: ugly, Steps: 2, Seed: 3"),
    "forge-style extras": Infotext(version="f2.0.1v1.10.1", extra={"Module 1": "ae", "Beta schedule alpha": "0.6"}),
    "everything": dataclasses.replace(
        EXAMPLE, prompt="a\nb", negative_prompt="c\nd", extra={"Clip skip": "2", "Hires steps": "10"}
    ),
}


@pytest.mark.parametrize("info", ROUND_TRIP_CASES.values(), ids=ROUND_TRIP_CASES.keys())
def test_format_then_parse_round_trips(info):
    text = format_infotext(info)
    assert parse_infotext(text) == info
    # Through a PNG file too, minus NUL characters (PNG text cannot hold them; the write drops them).
    buffer = io.BytesIO()
    write_image(Image.new("RGB", (4, 4)), text, buffer)
    without_nul = dataclasses.replace(
        info, prompt=info.prompt.replace("\0", ""), negative_prompt=info.negative_prompt.replace("\0", "")
    )
    assert parse_infotext(read_infotext(io.BytesIO(buffer.getvalue()))) == without_nul


def test_format_example_line_byte_for_byte():
    assert format_infotext(EXAMPLE) == EXAMPLE_LINE
    full = dataclasses.replace(EXAMPLE, prompt="a castle", negative_prompt="blurry")
    assert format_infotext(full) == f"a castle\nNegative prompt: blurry\n{EXAMPLE_LINE}"


def test_parse_example_line():
    info = parse_infotext(f"a castle\nNegative prompt: blurry\n{EXAMPLE_LINE}")
    assert info == dataclasses.replace(EXAMPLE, prompt="a castle", negative_prompt="blurry")
    assert info.cfg_scale == 7.0
    assert isinstance(info.cfg_scale, float)
    assert info.extra == {}


def test_parse_hires_fix_sample():
    info = parse_infotext(HIRES_TEXT)
    assert info.prompt == "masterpiece, a castle on a hill, <lora:add_detail:0.5>"
    assert info.negative_prompt == "blurry, lowres"
    assert (info.steps, info.sampler, info.schedule_type, info.cfg_scale) == (25, "DPM++ 2M", "Karras", 7.5)
    assert (info.seed, info.width, info.height) == (3141592653, 512, 768)
    assert (info.model_hash, info.model, info.denoising_strength) == ("6ce0161689", "v1-5-pruned-emaonly", 0.45)
    assert info.version == "v1.10.1"
    assert list(info.extra.items()) == [
        ("VAE hash", "735e4c3a44"),
        ("VAE", "vae-ft-mse-840000-ema-pruned.safetensors"),
        ("Clip skip", "2"),
        ("Hires upscale", "2"),
        ("Hires steps", "10"),
        ("Hires upscaler", "Latent"),
        ("Lora hashes", "add_detail: 7c6bad76eb54, other: 0123456789ab"),
    ]
    # Extras that have an A1111 place (VAE before Denoising strength, Clip skip after it) are written back there.
    assert format_infotext(info) == HIRES_TEXT


@pytest.mark.parametrize(
    ("cfg_scale", "written"),
    [
        (7, "7"),
        (7.0, "7"),
        (7.5, "7.5"),
        (0.1, "0.1"),
        (12.25, "12.25"),
        (-1.0, "-1"),
        # Whole numbers are written as integers below 1e16, where repr() switches to exponent notation.
        (9999999999999998.0, "9999999999999998"),
        (1e16, "1e+16"),
        (-1e16, "-1e+16"),
    ],
)
def test_cfg_scale_is_written_like_a1111(cfg_scale, written):
    text = format_infotext(Infotext(cfg_scale=cfg_scale))
    assert text == f"CFG scale: {written}"
    assert parse_infotext(f"{text}, Steps: 1, Seed: 2").cfg_scale == cfg_scale


@pytest.mark.parametrize(
    ("value", "default", "written"),
    [
        (None, 0.8, None),  # None and False say nothing, whatever the field's default
        (False, None, None),
        (True, None, "True"),  # as A1111 writes a bool
        (0, None, "0"),  # falsy values other than None and False are written
        ("", None, ""),
        (1.5, None, "1.5"),
        (1e16, None, "1e+16"),
        (0.8, 0.8, None),  # at its default: says nothing
        (0.5, 0.8, "0.5"),
        (2.0, None, "2"),  # A1111 writes whole numbers without ".0"
        (3, 1, "3"),
        ("Original", "x", "Original"),
    ],
)
def test_extra_value(value, default, written):
    assert extra_value(value, default) == written


def test_float_fields_are_stored_as_floats():
    # Every float field, not only the first one set: cfg_scale is None here.
    info = Infotext(denoising_strength=1, refiner_switch_at=0)
    assert type(info.denoising_strength) is float
    assert type(info.refiner_switch_at) is float
    assert info == Infotext(denoising_strength=1.0, refiner_switch_at=0.0)


def test_values_are_json_quoted_only_when_needed():
    info = Infotext(
        sampler="Euler a",
        model="with, comma",
        model_hash="with: colon",
        version="two\nlines",
        extra={"Emphasis": 'say "hi"', "Note": '"starts with quote', "Comment": "café, crème"},
    )
    line = format_infotext(info)
    assert "Sampler: Euler a," in line
    assert 'Model: "with, comma"' in line
    assert 'Model hash: "with: colon"' in line
    assert 'Version: "two\\nlines"' in line
    assert 'Emphasis: say "hi",' in line
    assert 'Note: "\\"starts with quote"' in line
    assert 'Comment: "café, crème"' in line  # non-ASCII stays as it is inside quotes, as A1111 writes it
    assert "\n" not in line  # the newline is escaped, so the parameters stay on one line
    assert json.loads(line.split("Version: ", 1)[1]) == "two\nlines"


def test_none_fields_and_empty_prompts_are_left_out():
    assert format_infotext(Infotext()) == ""
    assert format_infotext(Infotext(prompt="a cat")) == "a cat"
    assert format_infotext(Infotext(prompt="a cat", steps=20, seed=1, width=8, height=8)) == (
        "a cat\nSteps: 20, Seed: 1, Size: 8x8"
    )
    assert format_infotext(Infotext(negative_prompt="ugly", steps=1, sampler="x", seed=2)) == (
        "Negative prompt: ugly\nSteps: 1, Sampler: x, Seed: 2"
    )


def test_version_is_last_and_refiner_precedes_extras():
    info = dataclasses.replace(EXAMPLE, extra={"Hires upscale": "2", "Clip skip": "2", "Mask blur": "4"})
    line = format_infotext(info)
    keys = [pair.split(": ", 1)[0] for pair in line.split(", ")]
    assert keys[-1] == "Version"
    assert keys.index("Denoising strength") < keys.index("Clip skip") < keys.index("Refiner")
    assert keys.index("Refiner switch at") < keys.index("Hires upscale") < keys.index("Mask blur")


def test_unparsable_known_values_land_in_extra():
    info = parse_infotext("p\nSteps: many, Sampler: Euler, CFG scale: nan, Seed: 1.5, Size: big, Denoising strength: ")
    assert (info.steps, info.cfg_scale, info.seed, info.width, info.height, info.denoising_strength) == (None,) * 6
    assert info.sampler == "Euler"
    assert dict(info.extra) == {
        "Steps": "many",
        "CFG scale": "nan",
        "Seed": "1.5",
        "Size": "big",
        "Denoising strength": "",
    }


def test_last_line_needs_three_pairs_to_be_parameters():
    # A1111's rule, kept so our files read the same there: 1 or 2 pairs are prompt text (documented limitation).
    assert parse_infotext("a cat\nSteps: 20, Seed: 1") == Infotext(prompt="a cat\nSteps: 20, Seed: 1")
    assert parse_infotext("a cat\nSteps: 20, Seed: 1, Sampler: x").steps == 20
    two = Infotext(prompt="a cat", steps=20, seed=1)
    assert parse_infotext(format_infotext(two)) == Infotext(prompt="a cat\nSteps: 20, Seed: 1")


def test_parse_is_tolerant():
    assert parse_infotext("") == Infotext()
    assert parse_infotext("just a prompt") == Infotext(prompt="just a prompt")
    # Trailing blank lines after the parameters, and a parameters-only text.
    assert parse_infotext(f"{EXAMPLE_LINE}\n\n") == EXAMPLE
    # A repeated key keeps its last value, as in A1111.
    assert parse_infotext("Steps: 1, Steps: 2, Seed: 3, Foo: a, Foo: b").steps == 2
    assert parse_infotext("Steps: 1, Seed: 3, Foo: a, Foo: b").extra == {"Foo": "b"}
    # Malformed JSON quoting is kept verbatim instead of failing.
    assert parse_infotext('Steps: 1, Seed: 2, Foo: "a\\q"').extra == {"Foo": '"a\\q"'}
    # Quoted values are unquoted down to the empty string; a lone quote is a value of its own.
    assert parse_infotext('Steps: 1, Seed: 2, Foo: "", Bar: "a"').extra == {"Foo": "", "Bar": "a"}
    assert parse_infotext('Steps: 1, Seed: 2, Foo: "').extra == {"Foo": '"'}
    # A pair whose key cannot be written back is skipped; the pairs after it are still read.
    assert parse_infotext("x : 1, Steps: 2, Seed: 3, Sampler: y") == Infotext(steps=2, seed=3, sampler="y")
    # A negative prompt whose only line holds pairs is still the negative prompt.
    assert parse_infotext("p\nNegative prompt: ugly, Steps: 2, Seed: 3") == Infotext(
        prompt="p", negative_prompt="ugly, Steps: 2, Seed: 3"
    )


@pytest.mark.parametrize(
    "text",
    [
        "\n",
        ":",
        ",,,",
        '"',
        'a: "',
        "Negative prompt:",
        "x : 1, y : 2, z : 3",
        "Size: 1x, Size: x1, Size: 0x0",
        "\ud800",
    ],
)
def test_parse_never_raises_on_odd_text(text):
    info = parse_infotext(text)
    assert parse_infotext(format_infotext(info)) is not None


KEY_RULE = "use letters, digits, '_', '-', '/' and inner spaces (2+ chars)"


@pytest.mark.parametrize(
    ("kwargs", "field", "message"),
    [
        ({"prompt": 3}, "prompt", "must be a string, got int"),
        ({"negative_prompt": b"x"}, "negative_prompt", "must be a string, got bytes"),
        ({"width": 512}, "width", "width and height must be both set or both None, got 512xNone"),
        ({"height": 8}, "width", "width and height must be both set or both None, got Nonex8"),
        ({"cfg_scale": float("nan")}, "cfg_scale", "must be a finite number or None, got nan"),
        ({"cfg_scale": True}, "cfg_scale", "must be a finite number or None, got True"),
        ({"cfg_scale": "7"}, "cfg_scale", "must be a finite number or None, got '7'"),
        ({"refiner_switch_at": float("inf")}, "refiner_switch_at", "must be a finite number or None, got inf"),
        ({"steps": 2.5}, "steps", "must be an integer or None, got 2.5"),
        ({"steps": True}, "steps", "must be an integer or None, got True"),
        ({"seed": "1"}, "seed", "must be an integer or None, got '1'"),
        ({"sampler": 3}, "sampler", "must be a string or None, got int"),
        ({"extra": [("Clip skip", "2")]}, "extra", "must be a mapping of str to str, got list"),
        ({"extra": {"x": "1"}}, "extra", f"key 'x' cannot be written: {KEY_RULE}"),  # one character: unreadable
        ({"extra": {"bad:key": "1"}}, "extra", f"key 'bad:key' cannot be written: {KEY_RULE}"),
        ({"extra": {" Lead": "1"}}, "extra", f"key ' Lead' cannot be written: {KEY_RULE}"),
        ({"extra": {2: "1"}}, "extra", f"key 2 cannot be written: {KEY_RULE}"),
        ({"extra": {"Clip skip": 2}}, "extra", "value of 'Clip skip' must be a string, got int"),
        ({"steps": 20, "extra": {"Steps": "20"}}, "extra", "key 'Steps' duplicates a field that is already set"),
        (
            {"width": 8, "height": 8, "extra": {"Size": "8x8"}},
            "extra",
            "key 'Size' duplicates a field that is already set",
        ),
        # Would read back as steps=20 / version="v1" (any Version value is a version).
        ({"extra": {"Steps": "20"}}, "extra", "Steps: '20' belongs in its Infotext field, not in extra"),
        ({"extra": {"Version": "v1"}}, "extra", "Version: 'v1' belongs in its Infotext field, not in extra"),
    ],
)
def test_invalid_infotext_names_the_field_and_the_value(kwargs, field, message):
    with pytest.raises(InvalidRequest) as caught:
        Infotext(**kwargs)
    assert (caught.value.field, caught.value.message) == (field, message)


def test_infotext_is_frozen_and_hashable():
    info = Infotext(prompt="p", extra={"Clip skip": "2"})
    with pytest.raises(dataclasses.FrozenInstanceError):
        info.prompt = "q"  # type: ignore[misc]
    with pytest.raises(TypeError):
        info.extra["Clip skip"] = "3"  # type: ignore[index]
    assert hash(info) == hash(Infotext(prompt="p", extra={"Clip skip": "2"}))
    assert Infotext(cfg_scale=7) == Infotext(cfg_scale=7.0)


def _png_chunk_types(data: bytes) -> list[bytes]:
    types, position = [], 8
    while position < len(data):
        length = int.from_bytes(data[position : position + 4], "big")
        types.append(data[position + 4 : position + 8])
        position += 12 + length
    return types


ASCII_TEXT = f"a castle\nNegative prompt: blurry\n{EXAMPLE_LINE}"
UTF8_TEXT = f"城堡 🏰 قلعة ✨\nNegative prompt: ぼやけた\n{EXAMPLE_LINE}"


@pytest.mark.parametrize(("text", "chunk"), [(ASCII_TEXT, b"tEXt"), (UTF8_TEXT, b"iTXt")])
def test_png_round_trip_through_bytesio(text, chunk):
    buffer = io.BytesIO()
    write_image(Image.new("RGB", (8, 8), "red"), text, buffer)
    data = buffer.getvalue()
    # Latin-1 text goes in tEXt, as A1111 writes it; anything else in UTF-8 iTXt, so it is not mangled.
    assert chunk in _png_chunk_types(data)
    assert chunk + b"parameters\0" in data
    assert read_infotext(io.BytesIO(data)) == text
    with Image.open(io.BytesIO(data)) as image:
        assert image.info["parameters"] == text
        assert read_infotext(image) == text


@pytest.mark.parametrize("text", [ASCII_TEXT, UTF8_TEXT])
def test_png_round_trip_through_file(tmp_path, text):
    path = tmp_path / "out.png"
    write_image(Image.new("RGBA", (8, 8)), text, path)
    assert read_infotext(path) == text
    assert read_infotext(str(path)) == text
    assert parse_infotext(read_infotext(path)).prompt == text.split("\n")[0]


def test_png_compressed_text_chunk_is_read():
    pnginfo = PngImagePlugin.PngInfo()
    pnginfo.add_text("parameters", ASCII_TEXT, zip=True)
    buffer = io.BytesIO()
    Image.new("L", (4, 4)).save(buffer, format="PNG", pnginfo=pnginfo)
    assert b"zTXt" in _png_chunk_types(buffer.getvalue())
    assert read_infotext(io.BytesIO(buffer.getvalue())) == ASCII_TEXT


def test_png_drops_nul_and_lone_surrogates():
    buffer = io.BytesIO()
    write_image(Image.new("RGB", (4, 4)), "a\0b \ud800 c\nSteps: 1, Seed: 2, Sampler: x", buffer)
    assert read_infotext(io.BytesIO(buffer.getvalue())) == "ab \ufffd c\nSteps: 1, Seed: 2, Sampler: x"


@pytest.mark.parametrize("fmt", ["JPEG", "WEBP", "jpg", "webp"])
@pytest.mark.parametrize("text", [ASCII_TEXT, UTF8_TEXT])
def test_jpeg_and_webp_round_trip(tmp_path, fmt, text):
    path = tmp_path / f"out.{fmt.lower()}"
    write_image(Image.new("RGBA", (16, 16), (10, 20, 30, 128)), text, path, format=fmt)
    assert read_infotext(path) == text
    with Image.open(path) as image:
        assert image.format == {"jpg": "JPEG", "webp": "WEBP"}.get(fmt, fmt)
        exif = image.getexif()
        comment = exif.get_ifd(ExifTags.IFD.Exif)[ExifTags.Base.UserComment]
    # As A1111 (piexif) writes it: UNICODE prefix, big-endian UTF-16 under a big-endian TIFF header.
    assert exif.endian == ">"
    assert comment == b"UNICODE\0" + text.encode("utf-16-be")


def _image_with_user_comment(comment: bytes, *, endian: str = ">") -> Image.Image:
    exif = Image.Exif()
    exif.endian = endian
    exif[ExifTags.IFD.Exif] = {ExifTags.Base.UserComment: comment}
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8)).save(buffer, format="JPEG", exif=exif.tobytes())
    return Image.open(io.BytesIO(buffer.getvalue()))


@pytest.mark.parametrize(
    ("comment", "endian"),
    [
        (b"UNICODE\0" + "Größe 🐱, Steps: 1".encode("utf-16-le"), "<"),  # little-endian without a BOM
        (b"UNICODE\0" + "Größe 🐱, Steps: 1".encode("utf-16"), "<"),  # with a BOM
        (b"ASCII\0\0\0" + "Größe 🐱, Steps: 1".encode(), ">"),  # UTF-8 behind the ASCII code, as many tools do
        (b"\0" * 8 + "Größe 🐱, Steps: 1".encode(), ">"),
        ("Größe 🐱, Steps: 1".encode(), ">"),  # no character code at all
        (b"UNICODE\0" + "Größe 🐱, Steps: 1".encode("utf-16-be") + b"\0\0", ">"),  # NUL padded
    ],
)
def test_exif_user_comment_encodings_are_decoded(comment, endian):
    with _image_with_user_comment(comment, endian=endian) as image:
        assert read_infotext(image) == "Größe 🐱, Steps: 1"


def test_jpeg_falls_back_to_utf8_when_utf16_does_not_fit():
    text = "a" * 40_000  # 80,000 bytes as UTF-16: more than a JPEG EXIF segment holds
    buffer = io.BytesIO()
    write_image(Image.new("RGB", (8, 8)), text, buffer, format="JPEG")
    assert read_infotext(io.BytesIO(buffer.getvalue())) == text
    with pytest.raises(InvalidRequest) as caught:
        metadata_save_options("a" * 70_000, "JPEG")
    assert caught.value.field == "infotext"
    # WebP and PNG have no such limit.
    buffer = io.BytesIO()
    write_image(Image.new("RGB", (8, 8)), "é" * 70_000, buffer, format="WEBP")
    assert read_infotext(io.BytesIO(buffer.getvalue())) == "é" * 70_000


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "WEBP"])
def test_image_without_metadata_reads_none(fmt):
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8)).save(buffer, format=fmt)
    assert read_infotext(io.BytesIO(buffer.getvalue())) is None
    assert read_infotext(Image.new("RGB", (8, 8))) is None


def test_empty_infotext_reads_none():
    buffer = io.BytesIO()
    write_image(Image.new("RGB", (8, 8)), "", buffer, format="JPEG")
    assert read_infotext(io.BytesIO(buffer.getvalue())) is None


@pytest.mark.filterwarnings("ignore:Corrupt EXIF data")
def test_broken_exif_reads_none():
    image = Image.new("RGB", (8, 8))
    image.info["exif"] = b"Exif\0\0MM\0*garbage"
    assert read_infotext(image) is None


def test_read_infotext_refuses_non_images():
    with pytest.raises(InvalidRequest) as caught:
        read_infotext(io.BytesIO(b"%PDF-1.7 not an image"))
    assert caught.value.field == "image"


def test_write_image_refuses_unknown_format():
    with pytest.raises(InvalidRequest) as caught:
        write_image(Image.new("RGB", (8, 8)), "x", io.BytesIO(), format="GIF")
    assert caught.value.field == "format"
    assert "PNG, JPEG, WEBP" in caught.value.message
