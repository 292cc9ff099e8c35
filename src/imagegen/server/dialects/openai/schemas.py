"""Pydantic models of the OpenAI Images API (``/v1/images/generations`` JSON body and every images response).

The multipart bodies of ``/v1/images/edits`` and ``/v1/images/variations`` are parsed by hand in
:mod:`imagegen.server.dialects.openai.routes` (they may carry ``image`` or ``image[]``); their fields are listed here
so the route and its OpenAPI description agree.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

#: OpenAI's allowed values per field (imagegen accepts them all; see the route module for what each does).
RESPONSE_FORMATS = ("url", "b64_json")
QUALITIES = ("auto", "standard", "hd", "low", "medium", "high")
STYLES = ("vivid", "natural")
BACKGROUNDS = ("auto", "opaque", "transparent")
OUTPUT_FORMATS = ("png", "jpeg", "webp")
MODERATIONS = ("auto", "low")
INPUT_FIDELITIES = ("low", "high")
MAX_N = 10

#: Text fields of the multipart endpoints (``image``/``image[]``/``mask`` are the file fields).
EDIT_TEXT_FIELDS = (
    "prompt",
    "model",
    "n",
    "size",
    "response_format",
    "user",
    "quality",
    "background",
    "output_format",
    "output_compression",
    "input_fidelity",
    "moderation",
    "partial_images",
    "stream",
    # imagegen extensions
    "strength",
    "seed",
    "negative_prompt",
)
VARIATION_TEXT_FIELDS = ("model", "n", "size", "response_format", "user", "strength", "seed")


class OpenAIImageGenerationRequest(BaseModel):
    """``POST /v1/images/generations``. Unknown keys are refused, as OpenAI refuses them.

    ``seed`` and ``negative_prompt`` are imagegen extensions (the OpenAI SDK sends them via ``extra_body``).
    """

    model_config = ConfigDict(extra="forbid")

    prompt: str
    model: str | None = None
    n: int | None = None
    size: str | None = None
    quality: str | None = None
    response_format: str | None = None
    style: str | None = None
    user: str | None = None
    background: str | None = None
    output_format: str | None = None
    output_compression: int | None = None
    moderation: str | None = None
    partial_images: int | None = None
    stream: bool | None = None
    seed: int | None = None
    negative_prompt: str | None = None


class OpenAIImage(BaseModel):
    b64_json: str | None = None
    url: str | None = None
    revised_prompt: str | None = None


class OpenAIImagesResponse(BaseModel):
    created: int
    data: list[OpenAIImage]
