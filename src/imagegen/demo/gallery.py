"""``imagegen demo``: a small gallery from the built-in shapes model — text-to-image, base + refiner, and an
image-to-image recolouring of a generated image — written as PNGs (with infotext) plus one contact sheet."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from PIL.Image import Image

    from imagegen.engine import Engine

GALLERY_PROMPTS = (
    "a red circle",
    "a small blue square in the top left",
    "two yellow triangles on a black background",
    "a green cross on the left and a pink circle on the right",
    "three purple circles",
    "a large orange square in the center on a gray background",
)
#: Prompts also run through the refiner, and the recolouring shown as image-to-image.
REFINED_PROMPTS = ("a red circle", "two yellow triangles on a black background")
RECOLOUR = ("a red circle", "a blue circle", 0.65)


@dataclass(frozen=True, kw_only=True)
class Tile:
    """One gallery image and its label."""

    label: str
    image: Image
    path: Path


def make_gallery(
    engine: Engine, out: Path, *, seed: int = 1, log: Callable[[str], None] = print
) -> tuple[list[Tile], Path]:
    """Generate the gallery into ``out``; returns the tiles and the path of the contact sheet."""
    from imagegen.loading import BUILTIN_MODELS
    from imagegen.requests import GenerationRequest

    base, refiner = BUILTIN_MODELS
    tiles: list[Tile] = []

    def keep(label: str, request: GenerationRequest) -> Image:
        result = engine.generate(request)
        (path,) = result.save(out)
        tiles.append(Tile(label=label, image=result.images[0], path=path))
        log(f"{path}  {label}")
        return result.images[0]

    # 1. Text to image with the base model alone.
    sources = {p: keep(p, GenerationRequest(prompt=p, model=base, seed=seed)) for p in GALLERY_PROMPTS}
    # 2. The seed's ensemble of expert denoisers: base to 0.8, refiner from 0.8 on the same latents.
    for prompt in REFINED_PROMPTS:
        keep(f"{prompt} (+ refiner)", GenerationRequest(prompt=prompt, model=base, refiner=refiner, seed=seed))
    # 3. Image to image: recolour a generated image, keeping its shape and place.
    source, target, strength = RECOLOUR
    keep(
        f"img2img: {source} -> {target}",
        GenerationRequest(prompt=target, model=base, init_image=sources[source], strength=strength, seed=seed),
    )
    sheet = out / "gallery.png"
    contact_sheet(tiles).save(sheet)
    return tiles, sheet


def contact_sheet(tiles: list[Tile], *, scale: int = 3, columns: int = 3) -> Image:
    """The tiles enlarged ``scale``× (nearest neighbour, so pixels stay honest) in a grid, each with its label."""
    from PIL import Image as PILImage
    from PIL import ImageDraw

    cell_w = max(tile.image.width for tile in tiles) * scale
    cell_h = max(tile.image.height for tile in tiles) * scale
    label_h = 34
    rows = (len(tiles) + columns - 1) // columns
    sheet = PILImage.new("RGB", (columns * (cell_w + 8) + 8, rows * (cell_h + label_h + 8) + 8), "white")
    draw = ImageDraw.Draw(sheet)
    for index, tile in enumerate(tiles):
        x = 8 + (index % columns) * (cell_w + 8)
        y = 8 + (index // columns) * (cell_h + label_h + 8)
        sheet.paste(tile.image.resize((cell_w, cell_h), PILImage.Resampling.NEAREST), (x, y))
        words, lines, line = tile.label.split(), [], ""
        for word in words:  # wrap to the cell width (default bitmap font: ~6 px per character)
            if len(line) + len(word) + 1 > cell_w // 6 and line:
                lines.append(line)
                line = word
            else:
                line = f"{line} {word}".strip()
        lines.append(line)
        draw.multiline_text((x, y + cell_h + 2), "\n".join(lines[:3]), fill="black", spacing=1)
    return sheet
