"""A rule-based analyser of shapes-world images and GenEval-style scoring of them against a prompt.

The analyser reads a 64×64 image the way a person would judge it:

1. **Background**: the median colour of the one-pixel border (shapes never touch it), named by the nearest
   background colour within ``BACKGROUND_MAX_DISTANCE``.
2. **Pixel classes**: each pixel is explained as a blend ``bg + t·(c − bg)`` of the measured background and each
   palette colour ``c``; the colour whose blend line passes nearest wins, and the pixel is foreground when ``t ≥ 0.5``.
   Modelling the blend (rather than the nearest palette colour) keeps antialiased and blurred edges with their own
   shape: half-red-on-white is pinkish, but it lies on the red–white line, not on the pink one. Pixels far from the
   background and from every blend line are foreground of an "unknown" class.
3. **Objects**: 8-connected components of the foreground (labelled by a small numpy label propagation; no scipy).
   A component that is mostly one class is one object (stray pixels of other classes inside it are noise); otherwise
   it is split by class. Parts smaller than ``MIN_AREA`` pixels are specks and ignored.
4. **Per object**: colour = nearest palette colour of the mean of its interior pixels (``None`` = unknown beyond
   ``COLOUR_MAX_DISTANCE``); shape = nearest of the four shape templates after scaling the object's mask to a common
   box — this compares fill ratio (circle ≈ 0.785, square 1, triangle 0.5, cross ≈ 0.56) *and* where the fill lies
   (a triangle's mass is at the bottom and its top corners are empty; a cross is full in the middle and empty in all
   four corners), so cross and triangle separate robustly; ``None`` = unknown when the best match is poor or the
   box is far from square. Position = grid cell of the bounding-box centre (the renderer centres boxes on cells; a
   triangle's area centroid sits a sixth of its height below the box centre). Size = bucket of the larger box side.

:func:`score` turns an :class:`Analysis` into GenEval-style pass/fail checks for the categories a prompt belongs to.
numpy and Pillow only.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Final, TypeVar

import numpy as np
from PIL import Image

from imagegen_shapes.world import (
    BACKGROUND_RGB,
    CANVAS,
    COLOUR_RGB,
    SIZE_EXTENT,
    Background,
    Colour,
    ObjectSpec,
    Position,
    Scene,
    Shape,
    Size,
    position_of,
    shape_alpha,
)

#: Connected parts smaller than this (pixels) are specks, not objects (a small triangle has ~70 px).
MIN_AREA: Final[int] = 20
#: A pixel farther than this (RGB Euclidean) from every background–colour blend line is not of that palette colour.
PIXEL_MAX_DISTANCE: Final[float] = 70.0
#: A pixel this far from the background and far from every blend line is foreground of unknown colour.
UNKNOWN_MIN_CONTRAST: Final[float] = 80.0
#: An object's mean colour farther than this from every palette colour is "unknown" (palette colours are ≥ 85 apart).
COLOUR_MAX_DISTANCE: Final[float] = 80.0
#: The border's median colour farther than this from white/black/gray is an unknown background.
BACKGROUND_MAX_DISTANCE: Final[float] = 60.0
#: Mean absolute difference from the best shape template above which the shape is unknown.
SHAPE_MAX_DISTANCE: Final[float] = 0.2
#: Bounding boxes more elongated than this are no shape of the world (all are as wide as tall).
MAX_ASPECT: Final[float] = 1.5
#: A component is one object when this fraction of its pixels share one class.
DOMINANT_FRACTION: Final[float] = 0.7

_K = TypeVar("_K")
_TEMPLATE_SIDE: Final[int] = 16
_UNKNOWN_CLASS: Final[int] = len(COLOUR_RGB)
_PALETTE: Final[tuple[Colour, ...]] = tuple(COLOUR_RGB)
_PALETTE_RGB: Final[np.ndarray] = np.array([COLOUR_RGB[c] for c in _PALETTE], dtype=np.float32)
_PALETTE_RGB.setflags(write=False)
# Size buckets split at the geometric means of neighbouring extents (12|20|32 -> 15.5 and 25.3).
_SIZE_SPLITS: Final[tuple[float, float]] = (
    float(np.sqrt(SIZE_EXTENT[Size.SMALL] * SIZE_EXTENT[Size.MEDIUM])),
    float(np.sqrt(SIZE_EXTENT[Size.MEDIUM] * SIZE_EXTENT[Size.LARGE])),
)

CATEGORIES: Final[tuple[str, ...]] = (
    "single_object",
    "colour",
    "shape",
    "position",
    "counting",
    "two_objects",
    "colour_attribution",
    "size",
    "background",
)


@dataclass(frozen=True, kw_only=True)
class DetectedObject:
    """One object found in an image. ``colour``/``shape`` are ``None`` when unknown."""

    colour: Colour | None
    shape: Shape | None
    #: Centre of the bounding box (x, y), continuous pixel units; decides ``position``.
    centre: tuple[float, float]
    #: Mean of the object's pixel centres (x, y).
    centroid: tuple[float, float]
    #: (x0, y0, x1, y1), end-exclusive.
    bbox: tuple[int, int, int, int]
    position: Position
    size: Size
    area: int
    #: Area / bounding-box area.
    fill_ratio: float
    #: Mean RGB of the object's interior.
    mean_rgb: tuple[int, int, int]
    #: Distance of ``mean_rgb`` to the nearest palette colour.
    colour_distance: float
    #: Mean absolute difference of the normalised mask from the best shape template (0 = identical).
    shape_distance: float


@dataclass(frozen=True, kw_only=True)
class Analysis:
    """What an image shows: its background and objects (largest first)."""

    background: Background | None
    background_rgb: tuple[int, int, int]
    objects: tuple[DetectedObject, ...]


# --------------------------------------------------------------------------------------------------------------------
# Connected components
# --------------------------------------------------------------------------------------------------------------------


def label_components(mask: np.ndarray) -> tuple[np.ndarray, int]:
    """8-connected components of a boolean mask: ``(labels, n)`` with labels 0 = background, 1..n."""
    h, w = mask.shape
    index = np.arange(1, h * w + 1, dtype=np.int64).reshape(h, w)
    labels = np.where(mask, index, 0)
    while True:
        # Every pixel takes the largest label among itself and its 8 neighbours inside the mask ...
        padded = np.pad(labels, 1)
        grown = labels.copy()
        for dy in range(3):
            for dx in range(3):
                np.maximum(grown, padded[dy : dy + h, dx : dx + w], out=grown)
        grown = np.where(mask, grown, 0)
        # ... then jumps to the label now held by the pixel its label came from (same component, label only grows),
        # which collapses long chains in a few rounds instead of one round per pixel of path length.
        flat = grown.ravel()
        jumped = np.where(mask, flat[np.maximum(grown, 1) - 1].reshape(h, w), 0)
        if np.array_equal(jumped, labels):
            break
        labels = jumped
    unique = np.unique(labels[mask])
    relabelled = np.zeros((h, w), dtype=np.int32)
    relabelled[mask] = np.searchsorted(unique, labels[mask]) + 1
    return relabelled, int(unique.size)


# --------------------------------------------------------------------------------------------------------------------
# Analysis
# --------------------------------------------------------------------------------------------------------------------


def _to_array(image: Image.Image | np.ndarray) -> np.ndarray:
    if isinstance(image, Image.Image):
        pil = image.convert("RGB")
    else:
        array = np.asarray(image)
        if array.ndim != 3 or array.shape[2] not in (3, 4):
            raise ValueError(f"image must be an RGB(A) array [H, W, 3|4], got shape {array.shape}")
        if array.dtype != np.uint8:
            if not np.issubdtype(array.dtype, np.floating):
                raise ValueError(f"image array must be uint8 or float in [0, 1], got {array.dtype}")
            array = (np.clip(array, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
        pil = Image.fromarray(np.ascontiguousarray(array[..., :3]), mode="RGB")
    if pil.size != (CANVAS, CANVAS):
        # Thresholds (areas, sizes, cells) are in 64-px units; judge other sizes at the world's scale.
        pil = pil.resize((CANVAS, CANVAS), Image.Resampling.BOX)
    return np.asarray(pil, dtype=np.float32)


def _nearest(rgb: np.ndarray, table: Mapping[_K, tuple[int, int, int]]) -> tuple[_K, float]:
    distances = {key: float(np.linalg.norm(rgb - np.asarray(ref, dtype=np.float32))) for key, ref in table.items()}
    best = min(distances, key=distances.__getitem__)
    return best, distances[best]


def _rgb(values: np.ndarray) -> tuple[int, int, int]:
    r, g, b = (round(float(v)) for v in values)
    return r, g, b


def _classify_pixels(pixels: np.ndarray, bg: np.ndarray) -> np.ndarray:
    """Class per pixel: -1 background, 0..7 palette index, 8 unknown foreground."""
    v = pixels.reshape(-1, 3) - bg  # [P, 3]
    d = _PALETTE_RGB - bg  # [K, 3]
    # A palette colour equal to the background cannot be drawn on it; keep its line degenerate but harmless.
    norms = np.maximum((d * d).sum(axis=1), 1e-6)
    t = np.clip(v @ d.T / norms, 0.0, 1.0)  # [P, K]
    residual = v[:, None, :] - t[..., None] * d[None, :, :]
    dist = np.sqrt((residual * residual).sum(axis=2))  # [P, K]
    best = dist.argmin(axis=1)
    rows = np.arange(best.size)
    best_t, best_d = t[rows, best], dist[rows, best]
    classes = np.full(best.size, -1, dtype=np.int64)
    on_palette = (best_t >= 0.5) & (best_d <= PIXEL_MAX_DISTANCE)
    classes[on_palette] = best[on_palette]
    contrast = np.sqrt((v * v).sum(axis=1))
    classes[~on_palette & (best_d > PIXEL_MAX_DISTANCE) & (contrast >= UNKNOWN_MIN_CONTRAST)] = _UNKNOWN_CLASS
    return classes.reshape(pixels.shape[:2])


def _normalised_mask(mask: np.ndarray) -> np.ndarray:
    """The mask cropped to its bounding box and scaled to a fixed square (float 0..1)."""
    ys, xs = np.nonzero(mask)
    crop = mask[ys.min() : ys.max() + 1, xs.min() : xs.max() + 1].astype(np.float32)
    scaled = Image.fromarray(crop, mode="F").resize((_TEMPLATE_SIDE, _TEMPLATE_SIDE), Image.Resampling.BILINEAR)
    return np.asarray(scaled, dtype=np.float32)


@functools.cache
def _templates() -> tuple[tuple[Shape, np.ndarray], ...]:
    # Memoised pure function: the templates go through the same threshold-crop-scale path as detected objects,
    # once per world size, so a clean render matches its template almost exactly at any size.
    out = []
    for shape in Shape:
        for extent in SIZE_EXTENT.values():
            template = _normalised_mask(shape_alpha(shape, extent) >= 0.5)
            template.setflags(write=False)
            out.append((shape, template))
    return tuple(out)


def _classify_shape(mask: np.ndarray, width: int, height: int) -> tuple[Shape | None, float]:
    normalised = _normalised_mask(mask)
    best, best_distance = None, float("inf")
    for shape, template in _templates():
        distance = float(np.abs(normalised - template).mean())
        if distance < best_distance:
            best, best_distance = shape, distance
    if best_distance > SHAPE_MAX_DISTANCE or max(width, height) > MAX_ASPECT * min(width, height):
        return None, best_distance
    return best, best_distance


def _describe(mask: np.ndarray, pixels: np.ndarray) -> DetectedObject:
    ys, xs = np.nonzero(mask)
    x0, y0, x1, y1 = int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1
    width, height = x1 - x0, y1 - y0
    area = int(xs.size)
    # Interior = pixels whose 4 neighbours are in the object too: the edge blends with the background are left out.
    padded = np.pad(mask, 1)
    interior = mask & padded[:-2, 1:-1] & padded[2:, 1:-1] & padded[1:-1, :-2] & padded[1:-1, 2:]
    core = interior if interior.sum() >= 4 else mask
    mean_rgb = pixels[core].mean(axis=0)
    colour, colour_distance = _nearest(mean_rgb, COLOUR_RGB)
    shape, shape_distance = _classify_shape(mask, width, height)
    extent = max(width, height)
    size = Size.SMALL if extent < _SIZE_SPLITS[0] else Size.MEDIUM if extent < _SIZE_SPLITS[1] else Size.LARGE
    centre = ((x0 + x1) / 2, (y0 + y1) / 2)
    return DetectedObject(
        colour=colour if colour_distance <= COLOUR_MAX_DISTANCE else None,
        shape=shape,
        centre=centre,
        centroid=(float(xs.mean()) + 0.5, float(ys.mean()) + 0.5),
        bbox=(x0, y0, x1, y1),
        position=position_of(*centre),
        size=size,
        area=area,
        fill_ratio=area / (width * height),
        mean_rgb=_rgb(mean_rgb),
        colour_distance=colour_distance,
        shape_distance=shape_distance,
    )


def analyse(image: Image.Image | np.ndarray, *, min_area: int = MIN_AREA) -> Analysis:
    """Background and objects of a shapes-world image (PIL image, or uint8 / float-in-[0, 1] array ``[H, W, 3]``).

    Images other than 64×64 are resized to 64×64 first.
    """
    # 1. Background from the border
    pixels = _to_array(image)
    border = np.concatenate([pixels[0], pixels[-1], pixels[1:-1, 0], pixels[1:-1, -1]])
    bg = np.median(border, axis=0)
    background, bg_distance = _nearest(bg, BACKGROUND_RGB)
    # 2. Pixel classes
    classes = _classify_pixels(pixels, bg)
    # 3. Components, split by class where a component mixes colours
    labels, n = label_components(classes >= 0)
    parts: list[np.ndarray] = []
    for k in range(1, n + 1):
        component = labels == k
        if int(component.sum()) < min_area:
            continue
        counts = np.bincount(classes[component], minlength=_UNKNOWN_CLASS + 1)
        if counts.max() >= DOMINANT_FRACTION * counts.sum():
            parts.append(component)
            continue
        for cls in np.nonzero(counts >= min_area)[0]:
            sub_labels, m = label_components(component & (classes == cls))
            parts.extend(sub_labels == j for j in range(1, m + 1))
    # 4. Describe each object
    objects = [_describe(part, pixels) for part in parts if int(part.sum()) >= min_area]
    objects.sort(key=lambda o: (-o.area, o.bbox))
    return Analysis(
        background=background if bg_distance <= BACKGROUND_MAX_DISTANCE else None,
        background_rgb=_rgb(bg),
        objects=tuple(objects),
    )


# --------------------------------------------------------------------------------------------------------------------
# Outlined shapes (the concept of the shapes-outline LoRA)
# --------------------------------------------------------------------------------------------------------------------

#: An object is outlined when at least this fraction of its filled area (band + hole) is an enclosed hole.
#: Rendered outlines have 0.16 (medium triangle) to 0.66 (large square); a filled shape has 0.
MIN_HOLE_FRACTION: Final[float] = 0.12


@dataclass(frozen=True, kw_only=True)
class DetectedOutline:
    """One object with an enclosed hole, judged as the filled shape its outline draws."""

    colour: Colour | None
    #: Shape of the object with its hole filled in (a ring is a circle).
    shape: Shape | None
    bbox: tuple[int, int, int, int]
    position: Position
    size: Size
    #: Hole pixels / (object + hole pixels).
    hole_fraction: float


def _fill_holes(mask: np.ndarray) -> np.ndarray:
    """``mask`` with every region it encloses filled: background not 4-connected to the border is a hole."""
    outside = np.zeros_like(mask)
    outside[0, :], outside[-1, :], outside[:, 0], outside[:, -1] = ~mask[0, :], ~mask[-1, :], ~mask[:, 0], ~mask[:, -1]
    while True:
        padded = np.pad(outside, 1)
        grown = (padded[:-2, 1:-1] | padded[2:, 1:-1] | padded[1:-1, :-2] | padded[1:-1, 2:] | outside) & ~mask
        if np.array_equal(grown, outside):
            return ~outside
        outside = grown


def find_outlines(
    image: Image.Image | np.ndarray, *, min_area: int = MIN_AREA, min_hole_fraction: float = MIN_HOLE_FRACTION
) -> tuple[DetectedOutline, ...]:
    """The outlined objects of a shapes-world image: foreground components that enclose a hole of at least
    ``min_hole_fraction`` of their filled area (largest first). Filled shapes are not reported.

    Separate from :func:`analyse`, whose objects (and scores) stay exactly as they were: there a ring is an object of
    unknown shape, here it is an outlined circle.
    """
    # 1. Background and pixel classes, as analyse() does
    pixels = _to_array(image)
    border = np.concatenate([pixels[0], pixels[-1], pixels[1:-1, 0], pixels[1:-1, -1]])
    classes = _classify_pixels(pixels, np.median(border, axis=0))
    # 2. Each component with its holes filled; keep those with enough hole
    labels, n = label_components(classes >= 0)
    found: list[tuple[int, DetectedOutline]] = []
    for k in range(1, n + 1):
        component = labels == k
        area = int(component.sum())
        if area < min_area:
            continue
        filled = _fill_holes(component)
        hole_fraction = 1.0 - area / float(filled.sum())
        if hole_fraction < min_hole_fraction:
            continue
        # 3. Describe the filled object: colour from the band, shape and size from the filled mask
        ys, xs = np.nonzero(filled)
        x0, y0, x1, y1 = int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1
        padded = np.pad(component, 1)
        interior = component & padded[:-2, 1:-1] & padded[2:, 1:-1] & padded[1:-1, :-2] & padded[1:-1, 2:]
        core = interior if interior.sum() >= 4 else component
        colour, colour_distance = _nearest(pixels[core].mean(axis=0), COLOUR_RGB)
        shape, _ = _classify_shape(filled, x1 - x0, y1 - y0)
        extent = max(x1 - x0, y1 - y0)
        size = Size.SMALL if extent < _SIZE_SPLITS[0] else Size.MEDIUM if extent < _SIZE_SPLITS[1] else Size.LARGE
        outline = DetectedOutline(
            colour=colour if colour_distance <= COLOUR_MAX_DISTANCE else None,
            shape=shape,
            bbox=(x0, y0, x1, y1),
            position=position_of((x0 + x1) / 2, (y0 + y1) / 2),
            size=size,
            hole_fraction=hole_fraction,
        )
        found.append((int(filled.sum()), outline))
    found.sort(key=lambda item: (-item[0], item[1].bbox))
    return tuple(outline for _, outline in found)


def shows_outlined(spec: ObjectSpec, image: Image.Image | np.ndarray) -> bool:
    """Whether ``image`` has an outlined object of ``spec``'s colour and shape (the LoRA concept check)."""
    return any(o.colour is spec.colour and o.shape is spec.shape for o in find_outlines(image))


# --------------------------------------------------------------------------------------------------------------------
# Scoring
# --------------------------------------------------------------------------------------------------------------------


def categories(scene: Scene) -> set[str]:
    """The evaluation categories a prompt's scene belongs to (subset of :data:`CATEGORIES`).

    - ``single_object``: one phrase with a count of one; ``colour`` and ``shape``: any one-phrase scene;
    - ``position``: some phrase has a position; ``counting``: some phrase has a count of two or three;
    - ``two_objects``: two phrases; ``colour_attribution``: two phrases differing in both colour and shape (the
      binding test "a red circle and a blue square");
    - ``size``: some phrase says small or large; ``background``: a non-white background.
    """
    cats: set[str] = set()
    if len(scene.objects) == 1:
        cats |= {"colour", "shape"}
        if scene.objects[0].count == 1:
            cats.add("single_object")
    else:
        cats.add("two_objects")
        first, second = scene.objects
        if first.colour is not second.colour and first.shape is not second.shape:
            cats.add("colour_attribution")
    if any(o.position is not None for o in scene.objects):
        cats.add("position")
    if any(o.count > 1 for o in scene.objects):
        cats.add("counting")
    if any(o.size is not Size.MEDIUM for o in scene.objects):
        cats.add("size")
    if scene.background is not Background.WHITE:
        cats.add("background")
    return cats


def _matches(spec: ObjectSpec, analysis: Analysis) -> list[DetectedObject]:
    return [o for o in analysis.objects if o.colour is spec.colour and o.shape is spec.shape]


def _check(category: str, scene: Scene, analysis: Analysis) -> bool:
    objects = analysis.objects
    phrases = scene.objects
    if category == "single_object":
        return len(objects) == 1 and bool(_matches(phrases[0], analysis))
    if category == "colour":
        return bool(objects) and all(o.colour is phrases[0].colour for o in objects)
    if category == "shape":
        return bool(objects) and all(o.shape is phrases[0].shape for o in objects)
    if category == "position":
        for spec in phrases:
            if spec.position is None:
                continue
            # The `count` largest matches stand for the phrase; their mean box centre must lie in the cell
            # (the renderer's rule for counts above one; for one object it is that object's centre).
            found = _matches(spec, analysis)[: spec.count]
            if not found:
                return False
            mx = sum(o.centre[0] for o in found) / len(found)
            my = sum(o.centre[1] for o in found) / len(found)
            if position_of(mx, my) is not spec.position:
                return False
        return True
    if category == "counting":
        return all(len(_matches(spec, analysis)) == spec.count for spec in phrases if spec.count > 1)
    if category == "two_objects":
        return all(_matches(spec, analysis) for spec in phrases)
    if category == "colour_attribution":
        # Both present, and no shape wears the other phrase's colour (or any other): each shape has its own colour.
        return all(_matches(spec, analysis) for spec in phrases) and all(
            o.colour is spec.colour for spec in phrases for o in objects if o.shape is spec.shape
        )
    if category == "size":
        for spec in phrases:
            if spec.size is Size.MEDIUM:
                continue
            found = _matches(spec, analysis)
            if not found or any(o.size is not spec.size for o in found):
                return False
        return True
    if category == "background":
        return analysis.background is scene.background
    raise ValueError(f"unknown category {category!r}; expected one of {', '.join(CATEGORIES)}")


def score(prompt_scene: Scene, analysis: Analysis) -> dict[str, bool]:
    """Pass/fail of each category in :func:`categories` of ``prompt_scene`` for the analysed image.

    - ``single_object``: exactly one object, of the right colour and shape;
    - ``colour`` / ``shape``: at least one object and every object has the prompt's colour / shape;
    - ``position``: the matching objects' (colour and shape) box centres lie in the named cell (their mean for
      counts above one);
    - ``counting``: exactly ``count`` objects of that colour and shape, for each phrase with a count above one;
    - ``two_objects``: each phrase has at least one object of its colour and shape;
    - ``colour_attribution``: ``two_objects`` and every object of a phrase's shape has that phrase's colour;
    - ``size``: every matching object of a small/large phrase is in that size bucket;
    - ``background``: the background is the one asked for.
    """
    return {category: _check(category, prompt_scene, analysis) for category in sorted(categories(prompt_scene))}


def aggregate(scores: Iterable[Mapping[str, bool]]) -> dict[str, float]:
    """Fraction passed per category over many scored images (categories never scored are left out)."""
    passed: dict[str, int] = {}
    total: dict[str, int] = {}
    for result in scores:
        for category, ok in result.items():
            total[category] = total.get(category, 0) + 1
            passed[category] = passed.get(category, 0) + int(ok)
    return {category: passed[category] / total[category] for category in CATEGORIES if category in total}


def preserves_layout(source: Analysis, result: Analysis) -> bool:
    """Whether ``result`` shows the same layout as ``source``: as many objects, each matched one-to-one by shape and
    grid cell (colours may differ). The img2img check: low strength must keep what is where; recolouring is free.
    """
    if len(source.objects) != len(result.objects):
        return False
    unused = list(result.objects)
    for wanted in source.objects:
        match = next((o for o in unused if o.shape is wanted.shape and o.position is wanted.position), None)
        if wanted.shape is None or match is None:
            return False
        unused.remove(match)
    return True


#: The fixed evaluation prompt set: every category, every colour, shape, position, size and background.
EVAL_PROMPTS: Final[tuple[str, ...]] = (
    # single object: every colour, every shape twice
    "a red circle",
    "a green square",
    "a blue triangle",
    "a yellow cross",
    "a purple circle",
    "an orange square",
    "a cyan triangle",
    "a pink cross",
    # colour and size, on every background
    "a small green circle",
    "a large blue square",
    "a big orange triangle",
    "a small red cross on a black background",
    "a purple cross on a black background",
    "a yellow circle on a gray background",
    "a cyan square on a white background",
    "a large pink circle on a gray background",
    # position: every cell
    "a red square in the top left",
    "a blue circle at the top",
    "a green triangle in the top right",
    "a yellow cross on the left",
    "a purple square in the center",
    "an orange circle on the right",
    "a cyan cross in the bottom left",
    "a pink triangle at the bottom",
    "a blue square in the bottom right",
    "a small blue square in the top left",
    "a large red circle in the bottom right on a black background",
    # counting
    "two red circles",
    "three blue squares",
    "two yellow triangles on a black background",
    "three green crosses",
    "two small orange squares",
    "three small pink circles",
    "two purple crosses on a gray background",
    "three cyan triangles",
    # two objects and colour attribution
    "a green cross on the left and a pink circle on the right",
    "a red circle and a blue square",
    "a yellow triangle and a purple cross",
    "an orange circle and a cyan square",
    "a blue triangle at the top and a red square at the bottom",
    "a pink square and a green triangle",
    "a small purple circle and a large yellow square",
    "a cyan circle and an orange triangle on a black background",
    "a red cross in the top left and a green square in the bottom right",
    "two red squares and a blue circle",
    "a yellow circle and two small purple triangles on a gray background",
    # two objects sharing a colour or a shape (two_objects, not colour attribution)
    "a red cross and a red circle",
    "a blue circle and a green circle",
)
