"""A1111 "infotext": the generation-parameters text that stable-diffusion-webui writes into every image.

Layout (see ``shared/reference/a1111-api.md``, section "PNG infotext")::

    <prompt, any number of lines>
    Negative prompt: <negative prompt, any number of lines>      (line omitted when empty)
    Steps: 20, Sampler: DPM++ 2M, CFG scale: 7, Seed: 1234, Size: 1024x1024, ..., Version: v1.10.1

PNG files carry it in the ``parameters`` text chunk, JPEG and WebP files in the EXIF UserComment tag.

Round trip: ``parse_infotext(format_infotext(info)) == info`` holds except in the cases the format itself cannot
tell apart (A1111 has the same ambiguities, and its files must stay readable by A1111):

- a prompt line that starts with ``Negative prompt:`` is read as the start of the negative prompt;
- an infotext is read as having parameters only when its last line holds at least 3 ``key: value`` pairs, so an
  :class:`Infotext` with exactly 1 or 2 parameters reads back as prompt text, and one with no parameters whose
  last prompt line holds 3 or more pairs reads back as parameters;
- unquoted values lose leading/trailing whitespace (our formatter quotes such values, A1111's does not).

NUL characters survive :func:`format_infotext` / :func:`parse_infotext`, but PNG text chunks cannot hold them
(PNG spec, tEXt/iTXt), so :func:`write_image` removes them; it also replaces lone UTF-16 surrogates (which no
UTF encoding can store) with U+FFFD.
"""

from __future__ import annotations

import codecs
import json
import math
import os
import re
import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, BinaryIO

from PIL import ExifTags, Image, PngImagePlugin, UnidentifiedImageError

from imagegen.errors import InvalidRequest

if TYPE_CHECKING:
    from imagegen.requests import GenerationRequest, UpscaleRequest

__all__ = [
    "Infotext",
    "format_infotext",
    "metadata_save_options",
    "parse_infotext",
    "read_infotext",
    "save_images",
    "write_image",
]

#: The PNG text chunk key A1111 writes and reads.
PNG_KEY = "parameters"
NEGATIVE_PROMPT_PREFIX = "Negative prompt:"

# A1111's parameter pattern (modules/infotext_utils.py): a key of word characters, spaces, '-' and '/', then either
# a JSON string or anything up to the next comma. Using the same pattern keeps us reading exactly what A1111 reads.
_PARAM_RE = re.compile(r'\s*(\w[\w \-/]+):\s*("(?:\\.|[^\\"])+"|[^,]*)(?:,|$)')
_KEY_RE = re.compile(r"\w[\w \-/]+")
_SIZE_RE = re.compile(r"(\d+)x(\d+)")
_INT_RE = re.compile(r"-?\d+")
_FLOAT_RE = re.compile(r"-?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?")
_MIN_PARAMS = 3  # A1111: the last line is parameters only when it holds at least this many pairs

# Where each key goes on the parameters line, in A1111's order. Keys without an Infotext field (VAE, Clip skip, ...)
# come from ``extra`` but still take their A1111 place; every other extra key follows these, then Version (a field,
# never in ``extra``).
_CANONICAL_ORDER = (
    "Steps",
    "Sampler",
    "Schedule type",
    "CFG scale",
    "Seed",
    "Size",
    "Model hash",
    "Model",
    "VAE hash",
    "VAE",
    "Variation seed",
    "Variation seed strength",
    "Denoising strength",
    "Clip skip",
    "Refiner",
    "Refiner switch at",
)
_VERSION_KEY = "Version"

# Infotext field -> infotext key, per value kind. Size (width, height) is handled on its own.
_INT_FIELDS = MappingProxyType({"steps": "Steps", "seed": "Seed"})
_FLOAT_FIELDS = MappingProxyType(
    {"cfg_scale": "CFG scale", "denoising_strength": "Denoising strength", "refiner_switch_at": "Refiner switch at"}
)
_STR_FIELDS = MappingProxyType(
    {
        "sampler": "Sampler",
        "schedule_type": "Schedule type",
        "model_hash": "Model hash",
        "model": "Model",
        "refiner": "Refiner",
        "version": _VERSION_KEY,
    }
)

# Infotext key -> field, for parsing.
_INT_KEYS = MappingProxyType({key: name for name, key in _INT_FIELDS.items()})
_FLOAT_KEYS = MappingProxyType({key: name for name, key in _FLOAT_FIELDS.items()})
_STR_KEYS = MappingProxyType({key: name for name, key in _STR_FIELDS.items()})

# EXIF UserComment starts with an 8-byte character-code prefix (EXIF 2.3, section 4.6.5).
_EXIF_UNICODE = b"UNICODE\0"
_EXIF_ASCII = b"ASCII\0\0\0"
_EXIF_JIS = b"JIS\0\0\0\0\0"
_EXIF_UNDEFINED = b"\0" * 8

_FORMATS = MappingProxyType({"PNG": "PNG", "JPEG": "JPEG", "JPG": "JPEG", "WEBP": "WEBP"})
# JPEG stores no alpha or palette; A1111 also flattens to RGB before saving a JPEG.
_JPEG_MODES = ("RGB", "L", "CMYK")
# A JPEG APP1 segment holds at most 65,533 bytes, "Exif\0\0" header included (Pillow refuses more).
_JPEG_MAX_EXIF_BYTES = 65533


@dataclass(frozen=True, kw_only=True)
class Infotext:
    """The parsed content of an A1111 infotext. ``None`` fields are left out of the text.

    ``extra`` holds every other ``key: value`` pair in order (e.g. ``{"Clip skip": "2", "Hires upscale": "2"}``),
    stored read-only. It holds a field's key (``"Steps"``) only with a value that field cannot take, and only while
    the field is ``None``: the parser keeps a known key whose value does not parse (``Steps: many``) there rather
    than failing.
    """

    prompt: str = ""
    negative_prompt: str = ""
    steps: int | None = None
    sampler: str | None = None
    schedule_type: str | None = None
    cfg_scale: float | None = None
    seed: int | None = None
    width: int | None = None
    height: int | None = None
    model_hash: str | None = None
    model: str | None = None
    denoising_strength: float | None = None
    refiner: str | None = None
    refiner_switch_at: float | None = None
    version: str | None = None
    # hash=False: a mapping is not hashable, and equal infotexts still hash equal without it.
    extra: Mapping[str, str] = field(default_factory=dict, hash=False)

    def __post_init__(self) -> None:
        for name in ("prompt", "negative_prompt"):
            if not isinstance(getattr(self, name), str):
                raise InvalidRequest(name, f"must be a string, got {type(getattr(self, name)).__name__}")
        for name in (*_INT_FIELDS, "width", "height"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
                raise InvalidRequest(name, f"must be an integer or None, got {value!r}")
        if (self.width is None) != (self.height is None):
            raise InvalidRequest(
                "width", f"width and height must be both set or both None, got {self.width}x{self.height}"
            )
        for name in _FLOAT_FIELDS:
            value = getattr(self, name)
            if value is None:
                continue
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise InvalidRequest(name, f"must be a finite number or None, got {value!r}")
            # Store floats, so that Infotext(cfg_scale=7) and the parsed "CFG scale: 7" are the same value.
            object.__setattr__(self, name, float(value))
        for name in _STR_FIELDS:
            value = getattr(self, name)
            if value is not None and not isinstance(value, str):
                raise InvalidRequest(name, f"must be a string or None, got {type(value).__name__}")
        object.__setattr__(self, "extra", MappingProxyType(dict(self._checked_extra())))

    def _checked_extra(self) -> list[tuple[str, str]]:
        if not isinstance(self.extra, Mapping):
            raise InvalidRequest("extra", f"must be a mapping of str to str, got {type(self.extra).__name__}")
        taken = {key for key, value in _field_values(self).items() if value is not None}
        pairs = []
        for key, value in self.extra.items():
            if not isinstance(key, str) or not _KEY_RE.fullmatch(key) or key != key.strip():
                raise InvalidRequest(
                    "extra",
                    f"key {key!r} cannot be written: use letters, digits, '_', '-', '/' and inner spaces (2+ chars)",
                )
            if not isinstance(value, str):
                raise InvalidRequest("extra", f"value of {key!r} must be a string, got {type(value).__name__}")
            if key in taken:
                raise InvalidRequest("extra", f"key {key!r} duplicates a field that is already set")
            if _field_items(key, value) is not None:
                # It would read back into the field, not into extra: the caller should set the field instead.
                raise InvalidRequest("extra", f"{key}: {value!r} belongs in its Infotext field, not in extra")
            pairs.append((key, value))
        return pairs


def format_number(value: float) -> str:
    """A1111 writes whole numbers without ".0" (``CFG scale: 7``) and keeps fractions (``CFG scale: 7.5``)."""
    if value.is_integer() and abs(value) < 1e16:
        return str(int(value))
    return repr(value)  # the shortest text that parses back to the same float


def _field_values(info: Infotext) -> dict[str, str | None]:
    """Each known key's formatted value (None when its field is unset), Size included."""
    values: dict[str, str | None] = {}
    for name, key in _INT_FIELDS.items():
        number = getattr(info, name)
        values[key] = None if number is None else str(number)
    for name, key in _FLOAT_FIELDS.items():
        number = getattr(info, name)
        values[key] = None if number is None else format_number(float(number))
    for name, key in _STR_FIELDS.items():
        values[key] = getattr(info, name)
    values["Size"] = None if info.width is None else f"{info.width}x{info.height}"
    return values


def _quote(value: str) -> str:
    """JSON-quote a value that would not read back as itself unquoted.

    A1111 quotes values holding ``,`` ``:`` or a newline. We also quote control characters, leading/trailing
    whitespace (the parser strips unquoted values) and a leading ``"`` (which the parser would take for a quote).
    A1111 reads all of these back correctly.
    """
    needs_quotes = (
        "," in value
        or ":" in value
        or any(ord(ch) < 0x20 for ch in value)
        or value != value.strip()
        or value.startswith('"')
    )
    return json.dumps(value, ensure_ascii=False) if needs_quotes else value


def _unquote(value: str) -> str:
    if len(value) >= 2 and value[0] == '"' and value[-1] == '"':
        try:
            decoded = json.loads(value)
        except ValueError:
            return value
        if isinstance(decoded, str):
            return decoded
    return value


def format_infotext(info: Infotext) -> str:
    """The A1111 infotext for ``info``: prompt, ``Negative prompt:`` line, parameters line."""
    values = _field_values(info)
    pairs: list[tuple[str, str]] = []
    for key in _CANONICAL_ORDER:
        value = values.get(key)
        if value is None:
            value = info.extra.get(key)
        if value is not None:
            pairs.append((key, value))
    pairs.extend((key, value) for key, value in info.extra.items() if key not in _CANONICAL_ORDER)
    version = values[_VERSION_KEY]
    if version is not None:
        pairs.append((_VERSION_KEY, version))

    parts = []
    if info.prompt:
        parts.append(info.prompt)
    if info.negative_prompt:
        parts.append(f"{NEGATIVE_PROMPT_PREFIX} {info.negative_prompt}")
    if pairs:
        parts.append(", ".join(f"{key}: {_quote(value)}" for key, value in pairs))
    return "\n".join(parts)


def _is_params_line(line: str) -> bool:
    # A last line that starts the negative prompt is never parameters, even when the negative prompt holds pairs.
    return not line.lstrip().startswith(NEGATIVE_PROMPT_PREFIX) and len(_PARAM_RE.findall(line)) >= _MIN_PARAMS


def _split_prompts(body: str) -> tuple[str, str]:
    lines = body.split("\n")
    for index, line in enumerate(lines):
        if line.startswith(NEGATIVE_PROMPT_PREFIX):
            first = line[len(NEGATIVE_PROMPT_PREFIX) :]
            # Drop only the one space the formatter writes, so a negative prompt's own leading spaces survive.
            first = first.removeprefix(" ")
            return "\n".join(lines[:index]), "\n".join([first, *lines[index + 1 :]])
    return body, ""


def _field_items(key: str, value: str) -> dict[str, Any] | None:
    """The Infotext fields that ``key: value`` sets, or None when it belongs in ``extra`` (unknown key, bad value)."""
    if key == "Size":
        size = _SIZE_RE.fullmatch(value)
        return None if size is None else {"width": int(size.group(1)), "height": int(size.group(2))}
    if key in _INT_KEYS:
        return {_INT_KEYS[key]: int(value)} if _INT_RE.fullmatch(value) else None
    if key in _FLOAT_KEYS:
        if _FLOAT_RE.fullmatch(value) and math.isfinite(float(value)):
            return {_FLOAT_KEYS[key]: float(value)}
        return None
    if key in _STR_KEYS:
        return {_STR_KEYS[key]: value}
    return None


def _parse_params(line: str) -> tuple[dict[str, Any], dict[str, str]]:
    """Known fields (typed) and the other pairs (strings, in order). Unparsable known values go to the others."""
    pairs: dict[str, str] = {}
    for raw_key, raw in _PARAM_RE.findall(line):
        key = raw_key.strip()
        if not _KEY_RE.fullmatch(key):
            continue  # "x : 1" gives the key "x " (A1111's pattern); "x" alone could never be written back
        # A repeated key keeps the last value, as in A1111 (a dict there too).
        pairs[key] = _unquote(raw.strip())
    fields: dict[str, Any] = {}
    extra: dict[str, str] = {}
    for key, value in pairs.items():
        items = _field_items(key, value)
        if items is None:
            extra[key] = value
        else:
            fields.update(items)
    return fields, extra


def parse_infotext(text: str) -> Infotext:
    """Parse an A1111 infotext. Never raises on a string: keys it does not know, and known keys whose value does not
    parse, land in ``extra`` as strings."""
    head, _, last = text.rstrip().rpartition("\n")
    if not _is_params_line(last):
        prompt, negative_prompt = _split_prompts(text)
        return Infotext(prompt=prompt, negative_prompt=negative_prompt)
    prompt, negative_prompt = _split_prompts(head)
    fields, extra = _parse_params(last)
    return Infotext(prompt=prompt, negative_prompt=negative_prompt, extra=extra, **fields)


def _storable(text: str) -> str:
    """Text that PNG iTXt (UTF-8) and EXIF UTF-16 can hold: no NUL, no lone surrogates."""
    text = text.replace("\0", "")
    return "".join("\ufffd" if 0xD800 <= ord(ch) <= 0xDFFF else ch for ch in text)


def _user_comment(infotext: str, *, compact: bool) -> bytes:
    if not compact:
        return _EXIF_UNICODE + infotext.encode("utf-16-be")
    # UTF-8 takes half the room of UTF-16 for ASCII; EXIF has no UTF-8 code, so non-ASCII text goes under
    # "undefined", which our reader (and most others) decode as UTF-8.
    prefix = _EXIF_ASCII if infotext.isascii() else _EXIF_UNDEFINED
    return prefix + infotext.encode()


def _exif_bytes(infotext: str, *, compact: bool = False) -> bytes:
    # Pillow writes a big-endian TIFF header unless told otherwise, so the UTF-16 byte order matches it: A1111 (piexif)
    # writes the same, and EXIF readers such as exiftool take the UNICODE comment's byte order from the header.
    exif = Image.Exif()
    exif[ExifTags.IFD.Exif] = {ExifTags.Base.UserComment: _user_comment(infotext, compact=compact)}
    return exif.tobytes()


def metadata_save_options(infotext: str, format: str) -> dict[str, Any]:
    """Keyword arguments for ``Image.save`` that embed ``infotext``: ``pnginfo`` for PNG, ``exif`` for JPEG/WebP.

    Raises :class:`InvalidRequest` (field ``infotext``) when a JPEG cannot hold the text: its EXIF block is limited
    to 64 KiB, so A1111's UTF-16 is swapped for UTF-8 when that fits and PNG or WebP is needed when it does not.
    """
    kind = _image_format(format)
    text = _storable(infotext)
    if kind == "PNG":
        pnginfo = PngImagePlugin.PngInfo()
        # Pillow writes tEXt when the text is Latin-1 (as A1111 does) and switches to UTF-8 iTXt otherwise.
        pnginfo.add_text(PNG_KEY, text)
        return {"pnginfo": pnginfo}
    if kind != "JPEG":
        return {"exif": _exif_bytes(text)}
    for compact in (False, True):
        exif = _exif_bytes(text, compact=compact)
        if len(exif) <= _JPEG_MAX_EXIF_BYTES:
            return {"exif": exif}
    raise InvalidRequest(
        "infotext",
        f"{len(text)} characters do not fit in a JPEG's EXIF block ({_JPEG_MAX_EXIF_BYTES} bytes); save as PNG or WebP",
    )


def _image_format(format: str) -> str:
    kind = _FORMATS.get(format.upper()) if isinstance(format, str) else None
    if kind is None:
        raise InvalidRequest("format", f"must be one of PNG, JPEG, WEBP, got {format!r}")
    return kind


def write_image(
    image: Image.Image,
    infotext: str,
    fp: str | os.PathLike[str] | BinaryIO,
    *,
    format: str = "PNG",
) -> None:
    """Save ``image`` to ``fp`` as PNG, JPEG or WebP with ``infotext`` embedded where A1111 puts it."""
    kind = _image_format(format)
    if kind == "JPEG" and image.mode not in _JPEG_MODES:
        image = image.convert("RGB")
    image.save(fp, format=kind, **metadata_save_options(infotext, kind))


def save_images(
    images: Sequence[Image.Image], infotexts: Sequence[str], seeds: Sequence[int], folder: str | os.PathLike[str]
) -> list[Path]:
    """Write PNGs (infotext embedded) named ``NNNNN-SEED.png``, A1111 style: numbering continues in ``folder``."""
    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    numbers = [int(p.name.split("-", 1)[0]) for p in out.glob("*.png") if p.name.split("-", 1)[0].isdigit()]
    number = max(numbers, default=-1) + 1
    paths = []
    for image, infotext, seed in zip(images, infotexts, seeds, strict=True):
        path = out / f"{number:05d}-{seed}.png"
        write_image(image, infotext, path)
        paths.append(path)
        number += 1
    return paths


def _decode_user_comment(data: bytes) -> str:
    prefix, body = data[:8], data[8:]
    if prefix == _EXIF_UNICODE:
        if body[:2] not in (codecs.BOM_UTF16_BE, codecs.BOM_UTF16_LE):
            # No BOM to give the byte order. A1111 writes big-endian; some tools write little-endian. Mostly-ASCII
            # text has its zero bytes first in each pair when big-endian, second when little-endian.
            little_endian = body[1::2].count(0) > body[0::2].count(0)
            body = (codecs.BOM_UTF16_LE if little_endian else codecs.BOM_UTF16_BE) + body
        text = body.decode("utf-16", errors="replace")
    elif prefix == _EXIF_JIS:
        text = body.decode("shift_jis", errors="replace")
    elif prefix in (_EXIF_ASCII, _EXIF_UNDEFINED):
        # Many writers put UTF-8 behind the ASCII prefix; UTF-8 reads plain ASCII the same.
        text = body.decode(errors="replace")
    else:
        text = data.decode(errors="replace")  # no prefix at all, as A1111's fallback reads it
    return text.rstrip("\0")


def _infotext_of(image: Image.Image) -> str | None:
    # Only image.info is read, never pixels: text chunks that precede the image data (where Pillow and A1111 put
    # them) are there right after opening, so reading an untrusted file never decodes it.
    text = image.info.get(PNG_KEY)
    if isinstance(text, bytes):
        text = text.decode(errors="replace")
    if isinstance(text, str) and text:
        return text
    raw_exif = image.info.get("exif")
    if not isinstance(raw_exif, bytes):
        return None
    try:
        exif = Image.Exif()
        exif.load(raw_exif)
        comment = exif.get_ifd(ExifTags.IFD.Exif).get(ExifTags.Base.UserComment)
    except (SyntaxError, ValueError, TypeError, KeyError, IndexError, OSError, struct.error):
        # Pillow signals a malformed EXIF block with these; a broken block holds no readable infotext.
        return None
    if isinstance(comment, str):
        # Pillow decodes a comment stored as EXIF type ASCII (not UNDEFINED) with Latin-1: undo that to get its bytes.
        comment = comment.encode("latin-1")
    if not isinstance(comment, bytes):
        return None
    return _decode_user_comment(comment) or None


def read_infotext(image: Image.Image | str | os.PathLike[str] | BinaryIO) -> str | None:
    """The infotext embedded in an image (PNG ``parameters`` text, else EXIF UserComment), or None when absent.

    Raises :class:`InvalidRequest` (field ``image``) when ``image`` is not an image Pillow can open.
    """
    if isinstance(image, Image.Image):
        return _infotext_of(image)
    try:
        with Image.open(image) as opened:
            return _infotext_of(opened)
    except (UnidentifiedImageError, Image.DecompressionBombError, ValueError) as error:
        # ValueError: Pillow's guard against oversized text chunks (PngImagePlugin.MAX_TEXT_MEMORY).
        raise InvalidRequest("image", f"not a readable PNG, JPEG or WebP image: {error}") from error


#: The keys an :class:`Infotext` stores in its own fields (the rest live in ``extra``).
FIELD_KEYS: frozenset[str] = frozenset(
    {*_INT_FIELDS.values(), *_FLOAT_FIELDS.values(), *_STR_FIELDS.values(), "Size", "Size-1", "Size-2"}
)


def extra_value(value: object, default: object) -> str | None:
    """How A1111 writes a request value under its own infotext key, or None when it is not written: a value left at
    its no-op default (``None``, ``False``, the field's default) says nothing and is left out."""
    if value is None or value is False or value == default:
        return None
    if isinstance(value, float):
        return format_number(value)
    return str(value)  # True as "True", as A1111 writes it


def infotext_values(info: Infotext) -> dict[str, Any]:
    """Every ``key: value`` of an infotext, typed where the key is known (``Steps`` an int, ``CFG scale`` a float),
    ``Size`` as A1111's parser gives it (``Size-1``, ``Size-2``), other keys as text."""
    values: dict[str, Any] = {}
    for name, key in (*_INT_FIELDS.items(), *_FLOAT_FIELDS.items(), *_STR_FIELDS.items()):
        value = getattr(info, name)
        if value is not None:
            values[key] = value
    if info.width is not None:
        values["Size-1"], values["Size-2"] = info.width, info.height
    values.update(info.extra)
    return values


def request_fields_from_infotext(text: str) -> dict[str, Any]:
    """Keyword arguments for :class:`~imagegen.requests.GenerationRequest` that regenerate the image an infotext
    describes, by the infotext keys of :data:`imagegen.fields.FIELDS`. A refiner title ``name [hash]`` becomes its
    name; ``Denoising strength`` becomes ``strength`` (the caller must supply the init image, which an infotext
    cannot carry); eta is read under the key A1111 writes for its sampler (``Eta DDIM`` for DDIM, else ``Eta``)."""
    from imagegen.fields import FIELDS

    info = parse_infotext(text)
    values = _editing_values(infotext_values(info))
    fields: dict[str, Any] = {"prompt": info.prompt, "negative_prompt": info.negative_prompt}
    if any(key in values for key in ("Hires upscale", "Hires resize-1", "Hires upscaler")):
        fields["enable_hr"] = True  # as A1111's paste: a hires key means the hires fix was on
    if isinstance(values.get("Outpaint"), tuple):
        fields["outpaint"] = values["Outpaint"]  # four numbers, read by _editing_values
    for spec in FIELDS:
        if spec.field == "outpaint":
            continue
        key = _eta_key(info.sampler) if spec.field == "eta" else spec.infotext
        if key is None:
            continue  # the infotext does not carry it (init image, batch size), or the sampler takes no eta
        value = _typed(values.get(key), spec.kind)
        if value is not None:
            fields[spec.field] = value
    if "refiner" in fields:
        name, _, rest = str(fields["refiner"]).rpartition(" [")
        fields["refiner"] = name if name and rest.endswith("]") else fields["refiner"]
    return fields


def _editing_values(values: dict[str, Any]) -> dict[str, Any]:
    """The inpainting and hires keys whose text is not the field value, read as A1111 reads them:
    ``Inpaint area: Only masked``, ``Mask mode: Inpaint not masked``, ``Hires resize: WxH`` (as ``-1``/``-2``),
    ``Outpaint: l,r,t,b``."""
    values = dict(values)
    if "Inpaint area" in values:
        values["Inpaint area"] = str(values["Inpaint area"]).strip() == "Only masked"
    if "Mask mode" in values:
        values["Mask mode"] = str(values["Mask mode"]).strip() == "Inpaint not masked"
    resize = _SIZE_RE.fullmatch(str(values.pop("Hires resize", "")).strip())
    if resize:
        values["Hires resize-1"], values["Hires resize-2"] = int(resize.group(1)), int(resize.group(2))
    if "Outpaint" in values:
        parts = str(values["Outpaint"]).split(",")
        values["Outpaint"] = tuple(int(p) for p in parts) if all(p.strip().isdigit() for p in parts) else None
    return values


def _eta_key(sampler: str | None) -> str | None:
    """The infotext key of eta for ``sampler`` (None: the sampler has no eta, or is not one imagegen knows)."""
    from imagegen.samplers import eta_rule, parse_sampler

    try:
        rule = eta_rule(parse_sampler(sampler), {})
    except InvalidRequest:
        return None
    return rule.infotext_key if rule is not None else None


def _typed(value: Any, kind: type) -> Any:
    """``value`` as ``kind`` (a text value is parsed), or None when it is missing or does not read as one."""
    if value is None or isinstance(value, kind):
        return value
    if kind is float and isinstance(value, int):
        return float(value)
    if not isinstance(value, str):
        return None
    if kind is str:
        return value
    if kind is bool:
        return {"True": True, "False": False}.get(value.strip())
    number = _float_or_none(value)
    if number is None or (kind is int and not _INT_RE.fullmatch(value.strip())):
        return None
    return kind(number)


def _float_or_none(text: str | None) -> float | None:
    """A number written by A1111 (``0.5``, ``1``), or None for a missing or unreadable value."""
    if text is None or not _FLOAT_RE.fullmatch(text.strip()):
        return None
    return float(text)


#: Fields the infotext carries only for an inpainting (A1111 writes "Mask blur" then, even at its default).
INPAINT_FIELDS = frozenset(
    {"mask_blur", "inpainting_fill", "inpaint_full_res", "inpaint_full_res_padding", "invert_mask", "outpaint"}
)
#: Fields the infotext carries only with the hires fix.
HIRES_FIELDS = frozenset(
    {
        "hr_scale",
        "hr_resize_x",
        "hr_resize_y",
        "hr_upscaler",
        "hr_second_pass_steps",
        "hr_sampler",
        "hr_schedule_type",
        "hr_prompt",
        "hr_negative_prompt",
        "hr_cfg",
    }
)


def inpaint_infotext(request: GenerationRequest) -> dict[str, str]:
    """A1111's inpainting keys: ``Mask blur``, ``Masked content``, ``Inpaint area``/``Masked area padding`` for
    "only masked", ``Mask mode`` when inverted; ``Outpaint`` (imagegen's) for a grown canvas."""
    if not request.inpainting:
        return {}
    extra = {"Mask blur": str(request.mask_blur), "Masked content": request.inpainting_fill}
    if request.inpaint_full_res:
        extra["Inpaint area"] = "Only masked"
        extra["Masked area padding"] = str(request.inpaint_full_res_padding)
    if request.invert_mask:
        extra["Mask mode"] = "Inpaint not masked"
    if any(request.outpaint):
        extra["Outpaint"] = ",".join(str(v) for v in request.outpaint)
    return extra


def hires_infotext(request: GenerationRequest) -> dict[str, str]:
    """A1111's hires-fix keys (its ``Denoising strength`` is the request's ``strength``)."""
    if not request.enable_hr:
        return {}
    extra: dict[str, str] = {}
    if request.hr_resize_x or request.hr_resize_y:
        from imagegen.rules import hires_size

        width, height = hires_size(request)[:2]
        extra["Hires resize"] = f"{width}x{height}"
    else:
        extra["Hires upscale"] = format_number(request.hr_scale)
    if request.hr_second_pass_steps:
        extra["Hires steps"] = str(request.hr_second_pass_steps)
    extra["Hires upscaler"] = request.hr_upscaler
    for key, value in (
        ("Hires sampler", request.hr_sampler),
        ("Hires schedule type", request.hr_schedule_type),
        ("Hires prompt", request.hr_prompt),
        ("Hires negative prompt", request.hr_negative_prompt),
    ):
        if value:
            extra[key] = value
    if request.hr_cfg is not None:
        extra["Hires CFG Scale"] = format_number(request.hr_cfg)
    return extra


def sd_upscale_infotext(request: GenerationRequest) -> dict[str, str]:
    """A1111's SD upscale script writes its overlap and upscaler; the factor is imagegen's, so ``--from`` repeats it."""
    if not request.sd_upscale:
        return {}
    return {
        "SD upscale": format_number(request.sd_upscale),
        "SD upscale overlap": str(request.sd_upscale_overlap),
        "SD upscale upscaler": request.sd_upscale_upscaler,
    }


def upscale_infotext(request: UpscaleRequest, *, second: str | None = None) -> str:
    """A1111's Extras keys for an upscale: ``Postprocess upscale by`` (or ``upscale to`` + ``crop to fit``),
    ``Postprocess upscaler`` and, when ``second`` is blended in, ``Postprocess upscaler 2`` with its visibility."""
    if request.width is None:
        info = [f"Postprocess upscale by: {format_number(request.scale)}"]
    else:
        info = [f"Postprocess upscale to: {request.width}x{request.height}", f"Postprocess crop to fit: {request.crop}"]
    info.append(f"Postprocess upscaler: {request.upscaler}")
    if second is not None:
        info.append(f"Postprocess upscaler 2: {second}")
        info.append(f"Postprocess upscaler 2 visibility: {format_number(request.upscaler_2_visibility)}")
    return ", ".join(info)
