"""A1111's Extras API (``extra-single-image``, ``extra-batch-images``) as upscale jobs on the shared queue.

The body becomes an :class:`~imagegen.server.dialects.core.UpscaleSubmission` whose errors name A1111's fields
(``upscaler_1``, ``upscaling_resize``, ...). Differences from A1111, each toward "what was asked for": ``upscaler_1``
"None" resizes with Lanczos (A1111 returns the image unchanged), and face restoration (``gfpgan_visibility``,
``codeformer_visibility``) is refused with a 422 rather than skipped, since no face-restoration weights ship.
"""

from __future__ import annotations

import html
from collections.abc import Mapping
from types import MappingProxyType

from imagegen.errors import InvalidRequest
from imagegen.server.dialects import core
from imagegen.server.dialects.a1111.schemas import A1111ExtrasRequest
from imagegen.server.dialects.a1111.translate import DIALECT
from imagegen.server.jobs.model import Job
from imagegen.server.jobs.queue import JobQueue

__all__ = ["EXTRAS_NAMES", "check_face_restoration", "extras_submission", "html_info", "result_image"]

#: :class:`~imagegen.requests.UpscaleRequest` field -> A1111's Extras field, for errors.
EXTRAS_NAMES: Mapping[str, str] = MappingProxyType(
    {
        "upscaler": "upscaler_1",
        "scale": "upscaling_resize",
        "width": "upscaling_resize_w",
        "height": "upscaling_resize_h",
        "crop": "upscaling_crop",
        "upscaler_2": "upscaler_2",
        "upscaler_2_visibility": "extras_upscaler_2_visibility",
    }
)
#: Face-restoration visibility field -> the A1111 name of its restorer.
_RESTORERS: Mapping[str, str] = MappingProxyType({"gfpgan_visibility": "GFPGAN", "codeformer_visibility": "CodeFormer"})


def check_face_restoration(body: A1111ExtrasRequest, installed: list[str]) -> None:
    """:class:`InvalidRequest` naming ``gfpgan_visibility`` / ``codeformer_visibility`` when face restoration is asked
    for: imagegen cannot run it (``installed``: the restorers whose weights were found anyway)."""
    for name, restorer in _RESTORERS.items():
        if getattr(body, name) > 0:
            if restorer in installed:
                raise InvalidRequest(name, f"must be 0: {restorer} weights are installed, but imagegen cannot run them")
            raise InvalidRequest(
                name, "must be 0: no face restoration weights are available offline; see /sdapi/v1/face-restorers"
            )


def extras_submission(body: A1111ExtrasRequest, image: str, *, image_field: str) -> core.UpscaleSubmission:
    """One image of an Extras request as an upscale submission (``image_field``: what errors about it are named)."""
    fields: dict[str, object] = {
        "upscaler": body.upscaler_1,
        "upscaler_2": body.upscaler_2,
        "upscaler_2_visibility": body.extras_upscaler_2_visibility,
    }
    if body.resize_mode == 1:
        fields.update(width=body.upscaling_resize_w, height=body.upscaling_resize_h, crop=body.upscaling_crop)
    else:
        fields["scale"] = body.upscaling_resize
    return core.UpscaleSubmission(
        fields=fields, image=image, names={**EXTRAS_NAMES, "image": image_field}, dialect=DIALECT
    )


def html_info(infotext: str) -> str:
    """The infotext as A1111's ``plaintext_to_html`` writes it: ``<p>line<br>\\nline</p>``, escaped."""
    return "<p>" + "<br>\n".join(html.escape(line) for line in infotext.split("\n")) + "</p>"


def result_image(queue: JobQueue, job: Job) -> tuple[str, str]:
    """A succeeded upscale job's image (base64 PNG with its infotext) and infotext."""
    return core.b64(core.read_result_image(queue, job.images[0])), job.infotexts[0] if job.infotexts else ""
