"""The shapes world of the demo model: a typed scene model, its caption grammar, a sampler and a 64×64 renderer.

The world is fixed so that anyone (and :mod:`imagegen_shapes.analyse`) can judge a generated image:

- canvas 64×64 RGB on a white, black or gray background;
- eight object colours, four shapes (circle, square, triangle pointing up, plus-sign cross with arms one third of its
  extent), three sizes (12, 20 and 32 px extent);
- an optional position on a 3×3 grid, counts one to three, up to two object phrases joined by `` and ``.

Grammar (one line, lower case)::

    [count] [size]? colour [outlined]? shape[s] [position]? ( " and " the same )? ( " on a BG background" )?

(``outlined`` is the LoRA concept: the base model's training scenes never have it.)

Placement rules, which the analyser mirrors:

- Every shape lies fully inside the canvas with a 1 px margin, and any two shapes keep at least ``MIN_GAP`` clean
  background pixels between their antialiased fringes, so that same-coloured shapes never merge into one
  connected component.
- A shape with a position is centred (its bounding-box centre) on the centre of that grid cell, ±2 px, then shifted
  just enough to fit the canvas; even a 32 px shape stays inside its cell after the shift.
- Two or three shapes *with* a position are placed around the cell centre so that the **mean of their bounding-box
  centres** lies in the cell (the analyser checks the same mean). Some such scenes do not fit (three large shapes, two
  medium squares in a corner); :func:`render` raises ``ValueError`` for them and :func:`sample_scene` never draws
  counts above one with a position.
- A shape without a position goes anywhere that keeps the gap.

Everything is deterministic given the ``numpy.random.Generator`` passed in. No torch here: numpy and Pillow only.
"""

from __future__ import annotations

import enum
import functools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Final

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

CANVAS: Final[int] = 64
#: Clean background pixels kept between the antialiased fringes of any two shapes.
MIN_GAP: Final[int] = 3
#: Shapes never touch the canvas edge, so the analyser can read the background from the border.
EDGE_MARGIN: Final[int] = 1
#: How far (px, each axis) a positioned shape may sit from its cell centre.
POSITION_JITTER: Final[int] = 2
# Shapes are drawn at 4× and box-downsampled: crisper antialiasing at 12 px than ImageDraw's own at 1×.
_SUPERSAMPLE: Final[int] = 4
#: Line width (px) of an outlined shape: thick enough for the demo VAE's 4×-downsampled latents to keep the hole.
OUTLINE_WIDTH: Final[int] = 3


class Colour(str, enum.Enum):
    """An object colour of the palette."""

    RED = "red"
    GREEN = "green"
    BLUE = "blue"
    YELLOW = "yellow"
    PURPLE = "purple"
    ORANGE = "orange"
    CYAN = "cyan"
    PINK = "pink"


COLOUR_RGB: Final[Mapping[Colour, tuple[int, int, int]]] = MappingProxyType(
    {
        Colour.RED: (230, 25, 25),
        Colour.GREEN: (30, 170, 50),
        Colour.BLUE: (30, 70, 230),
        Colour.YELLOW: (245, 215, 30),
        Colour.PURPLE: (140, 50, 180),
        Colour.ORANGE: (245, 130, 20),
        Colour.CYAN: (30, 200, 220),
        Colour.PINK: (245, 120, 190),
    }
)


class Background(str, enum.Enum):
    """The canvas background."""

    WHITE = "white"
    BLACK = "black"
    GRAY = "gray"


BACKGROUND_RGB: Final[Mapping[Background, tuple[int, int, int]]] = MappingProxyType(
    {Background.WHITE: (255, 255, 255), Background.BLACK: (0, 0, 0), Background.GRAY: (128, 128, 128)}
)


class Shape(str, enum.Enum):
    """An object shape. The triangle points up; the cross is a plus sign with arms one third of its extent wide."""

    CIRCLE = "circle"
    SQUARE = "square"
    TRIANGLE = "triangle"
    CROSS = "cross"

    @property
    def plural(self) -> str:
        """The plural noun used for counts of two and three."""
        return "crosses" if self is Shape.CROSS else f"{self.value}s"


class Size(str, enum.Enum):
    """An object size. ``medium`` is the default and has no word in captions."""

    SMALL = "small"
    MEDIUM = "medium"
    LARGE = "large"


SIZE_EXTENT: Final[Mapping[Size, int]] = MappingProxyType({Size.SMALL: 12, Size.MEDIUM: 20, Size.LARGE: 32})


class Position(str, enum.Enum):
    """A cell of the 3×3 grid; :data:`POSITION_PHRASE` has the caption words."""

    TOP_LEFT = "top left"
    TOP = "top"
    TOP_RIGHT = "top right"
    LEFT = "left"
    CENTER = "center"
    RIGHT = "right"
    BOTTOM_LEFT = "bottom left"
    BOTTOM = "bottom"
    BOTTOM_RIGHT = "bottom right"

    @property
    def cell(self) -> tuple[int, int]:
        """``(row, column)`` of the cell, each 0..2."""
        return divmod(_POSITIONS.index(self), 3)


# Row-major order of the grid, so that a cell index maps straight to its Position.
_POSITIONS: Final[tuple[Position, ...]] = tuple(Position)

POSITION_PHRASE: Final[Mapping[Position, str]] = MappingProxyType(
    {
        Position.TOP_LEFT: "in the top left",
        Position.TOP: "at the top",
        Position.TOP_RIGHT: "in the top right",
        Position.LEFT: "on the left",
        Position.CENTER: "in the center",
        Position.RIGHT: "on the right",
        Position.BOTTOM_LEFT: "in the bottom left",
        Position.BOTTOM: "at the bottom",
        Position.BOTTOM_RIGHT: "in the bottom right",
    }
)

_COUNT_WORDS: Final[Mapping[str, int]] = MappingProxyType({"a": 1, "an": 1, "one": 1, "two": 2, "three": 3})
_SIZE_WORDS: Final[Mapping[str, Size]] = MappingProxyType({"small": Size.SMALL, "large": Size.LARGE, "big": Size.LARGE})
# Lenient spellings a user may type; captions only ever use the canonical ones.
_POSITION_WORDS: Final[Mapping[str, Position]] = MappingProxyType(
    {**{phrase: pos for pos, phrase in POSITION_PHRASE.items()}, "in the centre": Position.CENTER}
)
_BACKGROUND_WORDS: Final[Mapping[str, Background]] = MappingProxyType(
    {**{bg.value: bg for bg in Background}, "grey": Background.GRAY}
)


def position_of(x: float, y: float) -> Position:
    """The grid cell containing the point ``(x, y)`` (pixel units, continuous: pixel ``i`` covers ``[i, i+1)``)."""
    col = min(2, max(0, int(x * 3 // CANVAS)))
    row = min(2, max(0, int(y * 3 // CANVAS)))
    return _POSITIONS[row * 3 + col]


def cell_centre(position: Position) -> tuple[int, int]:
    """The integer pixel point ``(x, y)`` nearest the centre of the cell (11, 32 or 53 on each axis)."""
    row, col = position.cell
    return round((col + 0.5) * CANVAS / 3), round((row + 0.5) * CANVAS / 3)


# --------------------------------------------------------------------------------------------------------------------
# Scene model
# --------------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class ObjectSpec:
    """One object phrase: ``count`` copies of a ``size`` ``colour`` ``shape``, optionally at a ``position``.

    ``outlined`` shapes are drawn as an ``OUTLINE_WIDTH`` px line around a background-coloured hole ("a red outlined
    circle"). The base demo model never saw one: they are the concept of the ``shapes-outline`` LoRA
    (:mod:`imagegen_shapes.train_lora`), and :func:`sample_scene` only draws them when asked to.
    """

    count: int = 1
    size: Size = Size.MEDIUM
    colour: Colour
    shape: Shape
    position: Position | None = None
    outlined: bool = False

    def __post_init__(self) -> None:
        if not isinstance(self.count, int) or isinstance(self.count, bool) or not 1 <= self.count <= 3:
            raise ValueError(f"count must be 1, 2 or 3, got {self.count!r}")
        for name, value, kind in (
            ("size", self.size, Size),
            ("colour", self.colour, Colour),
            ("shape", self.shape, Shape),
        ):
            if not isinstance(value, kind):
                raise ValueError(
                    f"{name} must be a {kind.__name__} ({', '.join(m.value for m in kind)}), got {value!r}"
                )
        if self.position is not None and not isinstance(self.position, Position):
            raise ValueError(f"position must be a Position or None, got {self.position!r}")
        if not isinstance(self.outlined, bool):
            raise ValueError(f"outlined must be a bool, got {self.outlined!r}")


@dataclass(frozen=True, kw_only=True)
class Scene:
    """A whole picture: one or two object phrases on a background."""

    objects: tuple[ObjectSpec, ...]
    background: Background = Background.WHITE

    def __post_init__(self) -> None:
        if not isinstance(self.objects, tuple) or not 1 <= len(self.objects) <= 2:
            raise ValueError(f"objects must be a tuple of one or two ObjectSpec, got {self.objects!r}")
        if not all(isinstance(obj, ObjectSpec) for obj in self.objects):
            raise ValueError(f"objects must hold ObjectSpec instances, got {self.objects!r}")
        if not isinstance(self.background, Background):
            raise ValueError(f"background must be a Background (white, black, gray), got {self.background!r}")
        if len(self.objects) == 2:
            first, second = self.objects
            # Two phrases naming the same coloured shape cannot be told apart when counting or scoring.
            if (first.colour, first.shape) == (second.colour, second.shape):
                raise ValueError(
                    f"the two object phrases must differ in colour or shape, both are {first.colour.value} "
                    f"{first.shape.value}"
                )


@dataclass(frozen=True, kw_only=True)
class SceneDistribution:
    """Proportions of :func:`sample_scene`'s training distribution (weights need not sum to one)."""

    #: Probability that a scene has two object phrases.
    p_two_phrases: float = 0.4
    #: Weights of counts 1, 2, 3 in one-phrase scenes.
    count_weights: tuple[float, float, float] = (0.5, 0.28, 0.22)
    #: Weights of counts 1, 2, 3 per phrase in two-phrase scenes (few shapes keep them placeable and legible).
    count_weights_two_phrases: tuple[float, float, float] = (0.8, 0.2, 0.0)
    #: Weights of small, medium, large. Large is only drawn for a count of one, at most once per scene.
    size_weights: tuple[float, float, float] = (0.25, 0.5, 0.25)
    #: Probability that a phrase with a count of one has a position.
    p_position: float = 0.5
    #: Weights of white, black, gray backgrounds.
    background_weights: tuple[float, float, float] = (0.6, 0.2, 0.2)
    #: Probability that a phrase is outlined. At 0 (the base model's distribution) no random number is drawn for it,
    #: so every stream renders exactly the scenes it did before outlines existed.
    p_outlined: float = 0.0

    def __post_init__(self) -> None:
        for name in ("p_two_phrases", "p_position", "p_outlined"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {value!r}")
        for name in ("count_weights", "count_weights_two_phrases", "size_weights", "background_weights"):
            weights = getattr(self, name)
            if len(weights) != 3 or any(w < 0 for w in weights) or sum(weights) <= 0:
                raise ValueError(f"{name} must be three non-negative weights with a positive sum, got {weights!r}")


# --------------------------------------------------------------------------------------------------------------------
# Captions and parsing
# --------------------------------------------------------------------------------------------------------------------


def _phrase(obj: ObjectSpec, rng: np.random.Generator | None) -> str:
    words: list[str] = []
    if obj.size is Size.SMALL:
        words.append("small")
    elif obj.size is Size.LARGE:
        words.append("big" if rng is not None and rng.random() < 0.5 else "large")
    words.append(obj.colour.value)
    if obj.outlined:
        words.append("outlined")
    words.append(obj.shape.value if obj.count == 1 else obj.shape.plural)
    if obj.count == 1:
        # "one" for variety in training captions; otherwise the article English uses before the next word.
        article = "an" if words[0][0] in "aeiou" else "a"
        count = "one" if rng is not None and rng.random() < 0.2 else article
    else:
        count = "two" if obj.count == 2 else "three"
    text = f"{count} {' '.join(words)}"
    if obj.position is not None:
        text = f"{text} {POSITION_PHRASE[obj.position]}"
    return text


def caption(scene: Scene, rng: np.random.Generator | None = None) -> str:
    """The caption of ``scene`` in the world's grammar.

    Without ``rng`` the caption is canonical (``a``/``an``, ``large``, no ``on a white background``). With ``rng`` it
    varies the synonyms a user may type, for training: ``one`` for ``a``/``an`` (20 %), ``big`` for ``large`` (50 %),
    and an explicit ``on a white background`` suffix on white scenes (25 %). ``parse_prompt`` inverts every variant.
    """
    text = " and ".join(_phrase(obj, rng) for obj in scene.objects)
    if scene.background is not Background.WHITE or (rng is not None and rng.random() < 0.25):
        text = f"{text} on a {scene.background.value} background"
    return text


# Free phrasings: other wordings of the same scene, for training captions only. The caption grammar above stays what
# the analyser parses and what EVAL_PROMPTS are written in; these vary what the text encoders see. They leave out, on
# purpose, every construction of the held-out evaluation set (imagegen_shapes.evaluate.HELD_OUT, written before
# them): "tiny"/"huge", "dark", "backdrop", "upper"/"lower", "edge", "middle", "near", "to the right", "a single",
# "a pair of", "trio", "couple", digits, "that is", "in yellow", "coloured", "there is", "with"/"beside"/"next to"/
# "together with"/"as well as" between objects, comma lists; so that set keeps measuring wording the model never saw
# (tests/unit/test_demo_train_data.py checks that no held-out prompt is a training caption).

_COUNT_PHRASES: Final[Mapping[int, tuple[tuple[str, float], ...]]] = MappingProxyType(
    {1: (("a", 0.7), ("one", 0.3)), 2: (("two", 1.0),), 3: (("three", 1.0),)}
)
_SIZE_PHRASES: Final[Mapping[Size, tuple[str, ...]]] = MappingProxyType(
    {Size.SMALL: ("small", "little"), Size.MEDIUM: ("",), Size.LARGE: ("large", "big")}
)
#: Other ways to say each grid cell (the grammar's own phrase is always one of them).
FREE_POSITION_PHRASES: Final[Mapping[Position, tuple[str, ...]]] = MappingProxyType(
    {
        Position.TOP_LEFT: ("in the top left", "in the top left corner", "at the top left"),
        Position.TOP: ("at the top", "at the top of the image", "along the top"),
        Position.TOP_RIGHT: ("in the top right", "in the top right corner", "at the top right"),
        Position.LEFT: ("on the left", "on the left side", "at the left"),
        Position.CENTER: ("in the center", "in the centre", "in the center of the image"),
        Position.RIGHT: ("on the right", "on the right side", "at the right"),
        Position.BOTTOM_LEFT: ("in the bottom left", "in the bottom left corner", "at the bottom left"),
        Position.BOTTOM: ("at the bottom", "at the bottom of the image", "along the bottom"),
        Position.BOTTOM_RIGHT: ("in the bottom right", "in the bottom right corner", "at the bottom right"),
    }
)
_CONNECTORS: Final[tuple[str, ...]] = ("and", "and also", "plus", ", and")
_PREFIXES: Final[tuple[str, ...]] = ("an image of", "a picture of", "a drawing of")


def _choice(rng: np.random.Generator, options: Sequence[str]) -> str:
    return options[int(rng.integers(len(options)))]


def _weighted(rng: np.random.Generator, options: Sequence[tuple[str, float]]) -> str:
    return options[_pick([weight for _, weight in options], float(rng.random()))][0]


def _free_phrase(obj: ObjectSpec, rng: np.random.Generator, *, short: bool) -> str:
    noun = obj.shape.value if obj.count == 1 else obj.shape.plural
    count = _weighted(rng, _COUNT_PHRASES[obj.count])
    size = _choice(rng, _SIZE_PHRASES[obj.size])
    colour = obj.colour.value + (" outlined" if obj.outlined else "")
    if rng.random() < 0.5:
        words = [count, size, colour, noun]  # adjectives first, as the grammar
    else:
        verb = "is" if obj.count == 1 else "are"
        words = [count, size, noun, "which", verb, colour]
    following = next(word for word in words[1:] if word)
    if count == "a" and following[0] in "aeiou":
        words[0] = "an"
    text = " ".join(word for word in words if word)
    if obj.position is not None:
        options = FREE_POSITION_PHRASES[obj.position]
        # Two phrases keep the shorter forms: a caption must fit the text encoders' MAX_TOKENS positions.
        text = f"{text} {_choice(rng, [o for o in options if not short or 'image' not in o])}"
    return text


def describe(scene: Scene, rng: np.random.Generator) -> str:
    """Another wording of ``scene``'s caption, for training: colours in a relative clause ("a square which is
    green"), "little" for small, other position and background phrases ("in the top left corner", "on grey"), the two
    objects in either order joined by "and", "and also", "plus" or ", and", sometimes "an image of ...". Every wording
    names the same count, size, colour, shape, position and background as :func:`caption`."""
    objects = list(scene.objects)
    if len(objects) == 2 and rng.random() < 0.5:
        objects.reverse()
    short = len(objects) == 2
    text = _free_phrase(objects[0], rng, short=short)
    if short:
        connector = _choice(rng, _CONNECTORS)
        text = f"{text}{connector}" if connector.startswith(",") else f"{text} {connector}"
        text = f"{text} {_free_phrase(objects[1], rng, short=short)}"
    if not short and rng.random() < 0.25:
        text = f"{_choice(rng, _PREFIXES)} {text}"
    background = scene.background.value
    if scene.background is Background.GRAY and rng.random() < 0.5:
        background = "grey"
    if scene.background is not Background.WHITE or rng.random() < 0.25:
        options = (f"on a {background} background", f"on {background}", f"with a {background} background")
        text = f"{text} {_choice(rng, options)}"
    return text


def _expected(what: str, allowed: Sequence[str], got: str, prompt: str) -> ValueError:
    return ValueError(f"cannot parse {got!r} in prompt {prompt!r}: expected {what} ({', '.join(allowed)})")


def _parse_phrase(words: list[str], prompt: str) -> ObjectSpec:
    text = " ".join(words)
    if not words:
        raise ValueError(f"cannot parse prompt {prompt!r}: an object phrase is empty (around 'and')")
    if words[0] not in _COUNT_WORDS:
        raise _expected("a count", tuple(_COUNT_WORDS), words[0], prompt)
    count = _COUNT_WORDS[words[0]]
    rest = words[1:]
    size = Size.MEDIUM
    if rest and rest[0] in _SIZE_WORDS:
        size = _SIZE_WORDS[rest[0]]
        rest = rest[1:]
    if not rest:
        raise ValueError(f"cannot parse {text!r} in prompt {prompt!r}: a colour and a shape are missing")
    try:
        colour = Colour(rest[0])
    except ValueError:
        raise _expected("a colour", [c.value for c in Colour], rest[0], prompt) from None
    outlined = len(rest) > 1 and rest[1] == "outlined"
    if outlined:
        rest = rest[:1] + rest[2:]
    if len(rest) < 2:
        raise ValueError(f"cannot parse {text!r} in prompt {prompt!r}: a shape is missing after {rest[0]!r}")
    noun = rest[1]
    singular = {s.value: s for s in Shape}
    plural = {s.plural: s for s in Shape}
    if noun in singular:
        shape = singular[noun]
        if count != 1:
            raise ValueError(f"cannot parse {text!r} in prompt {prompt!r}: a count of {count} needs the plural noun")
    elif noun in plural:
        shape = plural[noun]
        if count == 1:
            raise ValueError(f"cannot parse {text!r} in prompt {prompt!r}: {words[0]!r} needs the singular noun")
    else:
        raise _expected("a shape", [*singular, *plural], noun, prompt)
    position = None
    if len(rest) > 2:
        tail = " ".join(rest[2:])
        if tail not in _POSITION_WORDS:
            raise _expected("a position", tuple(POSITION_PHRASE.values()), tail, prompt)
        position = _POSITION_WORDS[tail]
    return ObjectSpec(count=count, size=size, colour=colour, shape=shape, position=position, outlined=outlined)


def parse_prompt(text: str) -> Scene:
    """The :class:`Scene` a prompt in the world's grammar describes (case, spacing and a final ``.`` are ignored).

    Raises ``ValueError`` naming the part that does not parse.
    """
    prompt = " ".join(text.lower().split()).removesuffix(".").strip()
    if not prompt:
        raise ValueError("cannot parse an empty prompt: expected e.g. 'a red circle'")
    words = prompt.split(" ")
    background = Background.WHITE
    if words[-1] == "background":
        if len(words) < 5 or words[-4] != "on" or words[-3] not in ("a", "an") or words[-2] not in _BACKGROUND_WORDS:
            raise _expected(
                "a background suffix",
                [f"on a {bg.value} background" for bg in Background],
                " ".join(words[-4:]),
                prompt,
            )
        background = _BACKGROUND_WORDS[words[-2]]
        words = words[:-4]
    phrases: list[list[str]] = [[]]
    for word in words:
        if word == "and":
            phrases.append([])
        else:
            phrases[-1].append(word)
    if len(phrases) > 2:
        raise ValueError(f"cannot parse prompt {prompt!r}: at most two object phrases joined by 'and' are allowed")
    objects = tuple(_parse_phrase(phrase, prompt) for phrase in phrases)
    try:
        return Scene(objects=objects, background=background)
    except ValueError as exc:
        raise ValueError(f"cannot parse prompt {prompt!r}: {exc}") from None


# --------------------------------------------------------------------------------------------------------------------
# Sampling
# --------------------------------------------------------------------------------------------------------------------


def _pick(weights: Sequence[float], u: float) -> int:
    """Index drawn from ``weights`` with the uniform number ``u`` (cheaper than ``Generator.choice`` per call)."""
    target = u * sum(weights)
    acc = 0.0
    for i, w in enumerate(weights):
        acc += w
        if target < acc:
            return i
    return max(i for i, w in enumerate(weights) if w > 0)


_COLOURS: Final[tuple[Colour, ...]] = tuple(Colour)
_SHAPES: Final[tuple[Shape, ...]] = tuple(Shape)
_SIZES: Final[tuple[Size, ...]] = (Size.SMALL, Size.MEDIUM, Size.LARGE)
_BACKGROUNDS: Final[tuple[Background, ...]] = (Background.WHITE, Background.BLACK, Background.GRAY)


def _draw_scene(rng: np.random.Generator, dist: SceneDistribution) -> Scene:
    two = rng.random() < dist.p_two_phrases
    count_weights = dist.count_weights_two_phrases if two else dist.count_weights
    objects: list[ObjectSpec] = []
    for _ in range(2 if two else 1):
        count = 1 + _pick(count_weights, rng.random())
        size_weights = list(dist.size_weights)
        # Two or three large shapes, or two large phrases, rarely fit 64 px with a gap; keep the scenes placeable.
        if count > 1 or any(o.size is Size.LARGE for o in objects):
            size_weights[2] = 0.0
        size = _SIZES[_pick(size_weights, rng.random())]
        while True:
            colour = _COLOURS[int(rng.integers(len(_COLOURS)))]
            shape = _SHAPES[int(rng.integers(len(_SHAPES)))]
            if not objects or (objects[0].colour, objects[0].shape) != (colour, shape):
                break
        position = None
        if count == 1 and rng.random() < dist.p_position:
            taken = {o.position for o in objects}
            while position is None or position in taken:
                position = _POSITIONS[int(rng.integers(9))]
        # Only shapes that keep a visible hole are outlined, so an outlined caption always shows an outline.
        outlined = dist.p_outlined > 0 and outline_visible(shape, size) and rng.random() < dist.p_outlined
        objects.append(
            ObjectSpec(count=count, size=size, colour=colour, shape=shape, position=position, outlined=outlined)
        )
    background = _BACKGROUNDS[_pick(dist.background_weights, rng.random())]
    return Scene(objects=tuple(objects), background=background)


def sample_scene(rng: np.random.Generator, distribution: SceneDistribution | None = None) -> Scene:
    """A random scene from the training distribution; :func:`render` can always place it.

    The defaults cover every evaluation category: 60 % one phrase (half of them a single object, the rest two or
    three copies), 40 % two phrases (colour attribution), half the single objects with a position, 40 % non-white
    backgrounds. Scenes that do not fit (checked by a trial placement) are drawn again.
    """
    dist = distribution if distribution is not None else SceneDistribution()
    return _sample_placed(rng, dist)[0]


def _sample_placed(rng: np.random.Generator, dist: SceneDistribution) -> tuple[Scene, tuple[_Placed, ...]]:
    for _ in range(1000):
        scene = _draw_scene(rng, dist)
        placed = _place(scene, rng)
        if placed is not None:
            return scene, placed
    raise RuntimeError(f"no placeable scene in 1000 draws from {dist!r}")  # only with a degenerate distribution


# --------------------------------------------------------------------------------------------------------------------
# Rendering
# --------------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class _Sprite:
    alpha: np.ndarray  # float32 [e, e] coverage in 0..1
    mask: np.ndarray  # bool [e, e]: any coverage
    grown: np.ndarray  # bool [e + 2g, e + 2g]: mask dilated by MIN_GAP, offset by -MIN_GAP


def shape_alpha(shape: Shape, extent: int, *, outlined: bool = False) -> np.ndarray:
    """Antialiased coverage (float32 ``[extent, extent]``, 0..1) of ``shape`` filling an ``extent``-px box.

    ``outlined``: only a band ``OUTLINE_WIDTH`` px wide inside the shape's edge (the shape minus its erosion).
    """
    big = extent * _SUPERSAMPLE
    image = Image.new("L", (big, big), 0)
    draw = ImageDraw.Draw(image)
    if shape is Shape.CIRCLE:
        draw.ellipse((0, 0, big - 1, big - 1), fill=255)
    elif shape is Shape.SQUARE:
        draw.rectangle((0, 0, big - 1, big - 1), fill=255)
    elif shape is Shape.TRIANGLE:
        draw.polygon(((big - 1) / 2, 0, big - 1, big - 1, 0, big - 1), fill=255)
    else:
        # Arms one third of the extent wide, placed symmetrically so the cross is exactly centred.
        lo = round(big / 3)
        draw.rectangle((lo, 0, big - 1 - lo, big - 1), fill=255)
        draw.rectangle((0, lo, big - 1, big - 1 - lo), fill=255)
    big_array = np.asarray(image)
    # Pillow rounds polygon vertices to pixels, which leaves the triangle a sub-pixel lopsided; mirror it symmetric.
    big_array = np.maximum(big_array, big_array[:, ::-1])
    if outlined:
        # Erode at 4× with a square window: the hole keeps the shape's form, the band is OUTLINE_WIDTH px wide.
        radius = OUTLINE_WIDTH * _SUPERSAMPLE
        # Padded with background first: Pillow's filter replicates edge pixels, which would keep a square's sides.
        padded = Image.fromarray(np.pad(big_array, radius), mode="L").filter(ImageFilter.MinFilter(2 * radius + 1))
        inner = np.asarray(padded)[radius:-radius, radius:-radius]
        big_array = np.minimum(big_array, 255 - inner)
    small = Image.fromarray(big_array, mode="L").reduce(_SUPERSAMPLE)
    return np.asarray(small, dtype=np.float32) / 255.0


@functools.cache
def outline_visible(shape: Shape, size: Size) -> bool:
    """Whether an outlined ``shape`` of ``size`` keeps a hole of at least 3×3 px (small circles, triangles and crosses
    and medium crosses fill in, or nearly)."""
    alpha = shape_alpha(shape, SIZE_EXTENT[size], outlined=True)
    filled = shape_alpha(shape, SIZE_EXTENT[size])
    # A hole: pixels fully inside the shape that the band leaves at background.
    return int(np.sum((filled >= 1.0) & (alpha <= 0.0))) >= 9


@functools.cache
def _sprite(shape: Shape, size: Size, outlined: bool = False) -> _Sprite:
    # Memoised pure function (24 sprites): no state that changes behaviour, just avoids redrawing per image.
    alpha = shape_alpha(shape, SIZE_EXTENT[size], outlined=outlined)
    mask = alpha > 0.0
    e = mask.shape[0]
    grown = np.zeros((e + 2 * MIN_GAP, e + 2 * MIN_GAP), dtype=bool)
    for dy in range(2 * MIN_GAP + 1):
        for dx in range(2 * MIN_GAP + 1):
            grown[dy : dy + e, dx : dx + e] |= mask
    for array in (alpha, mask, grown):
        array.setflags(write=False)
    return _Sprite(alpha, mask, grown)


@dataclass(frozen=True)
class _Placed:
    obj: ObjectSpec
    x0: int  # top-left corner of the shape's box
    y0: int


def _place(scene: Scene, rng: np.random.Generator) -> tuple[_Placed, ...] | None:
    """Random non-overlapping placement of every shape, or None when 20 attempts fail."""
    # Positioned phrases first (they have the least freedom), then the rest from the largest down.
    order = sorted(scene.objects, key=lambda o: (o.position is None, -SIZE_EXTENT[o.size]))
    for _ in range(20):
        occupied = np.zeros((CANVAS, CANVAS), dtype=bool)
        placed: list[_Placed] = []
        for obj in order:
            boxes = _place_object(obj, occupied, rng)
            if boxes is None:
                break
            placed.extend(_Placed(obj, x0, y0) for x0, y0 in boxes)
        else:
            return tuple(placed)
    return None


def _fits(sprite: _Sprite, x0: int, y0: int, occupied: np.ndarray) -> bool:
    e = sprite.mask.shape[0]
    return not bool(np.any(occupied[y0 : y0 + e, x0 : x0 + e] & sprite.mask))


def _occupy(sprite: _Sprite, x0: int, y0: int, occupied: np.ndarray) -> None:
    g = MIN_GAP
    e = sprite.mask.shape[0]
    # The grown mask reaches g px past the box; clip it to the canvas.
    ya, yb = max(0, y0 - g), min(CANVAS, y0 + e + g)
    xa, xb = max(0, x0 - g), min(CANVAS, x0 + e + g)
    occupied[ya:yb, xa:xb] |= sprite.grown[ya - (y0 - g) : yb - (y0 - g), xa - (x0 - g) : xb - (x0 - g)]


def _place_object(obj: ObjectSpec, occupied: np.ndarray, rng: np.random.Generator) -> list[tuple[int, int]] | None:
    sprite = _sprite(obj.shape, obj.size)
    e = SIZE_EXTENT[obj.size]
    half = e // 2
    lo, hi = half + EDGE_MARGIN, CANVAS - half - EDGE_MARGIN  # allowed range of box centres
    if obj.position is None:
        boxes: list[tuple[int, int]] = []
        for _ in range(obj.count):
            for _ in range(100):
                cx, cy = (int(v) for v in rng.integers(lo, hi + 1, size=2))
                if _fits(sprite, cx - half, cy - half, occupied):
                    _occupy(sprite, cx - half, cy - half, occupied)
                    boxes.append((cx - half, cy - half))
                    break
            else:
                return None
        return boxes
    tx, ty = cell_centre(obj.position)
    if obj.count == 1:
        for _ in range(10):
            jx, jy = (int(v) for v in rng.integers(-POSITION_JITTER, POSITION_JITTER + 1, size=2))
            cx, cy = min(hi, max(lo, tx + jx)), min(hi, max(lo, ty + jy))
            if _fits(sprite, cx - half, cy - half, occupied):
                _occupy(sprite, cx - half, cy - half, occupied)
                return [(cx - half, cy - half)]
        return None
    # Several copies with a position: spread around the cell centre; the group's mean centre must stay in the cell.
    spread = e + MIN_GAP + 2
    for _ in range(200):
        trial = occupied.copy()
        centres: list[tuple[int, int]] = []
        for _ in range(obj.count):
            dx, dy = (int(v) for v in rng.integers(-spread, spread + 1, size=2))
            cx, cy = min(hi, max(lo, tx + dx)), min(hi, max(lo, ty + dy))
            if not _fits(sprite, cx - half, cy - half, trial):
                break
            _occupy(sprite, cx - half, cy - half, trial)
            centres.append((cx, cy))
        else:
            mx = sum(c[0] for c in centres) / len(centres)
            my = sum(c[1] for c in centres) / len(centres)
            if position_of(mx, my) is obj.position:
                occupied |= trial
                return [(cx - half, cy - half) for cx, cy in centres]
    return None


def _draw(placed: Sequence[_Placed], background: Background) -> np.ndarray:
    canvas = np.empty((CANVAS, CANVAS, 3), dtype=np.float32)
    canvas[:] = BACKGROUND_RGB[background]
    for item in placed:
        # Placement used the filled sprite, so nothing is ever placed inside an outlined shape's hole.
        alpha = _sprite(item.obj.shape, item.obj.size, item.obj.outlined).alpha
        e = alpha.shape[0]
        region = canvas[item.y0 : item.y0 + e, item.x0 : item.x0 + e]
        region += alpha[..., None] * (np.asarray(COLOUR_RGB[item.obj.colour], dtype=np.float32) - region)
    return (canvas + 0.5).astype(np.uint8)


def render_array(scene: Scene, rng: np.random.Generator) -> np.ndarray:
    """Like :func:`render`, as a uint8 array ``[64, 64, 3]``."""
    placed = _place(scene, rng)
    if placed is None:
        raise ValueError(f"cannot place {caption(scene)!r} on a {CANVAS}×{CANVAS} canvas without shapes touching")
    return _draw(placed, scene.background)


def render(scene: Scene, rng: np.random.Generator) -> Image.Image:
    """A 64×64 RGB image of ``scene`` (placement drawn from ``rng``; same rng state, same pixels).

    Raises ``ValueError`` for scenes whose shapes cannot be placed without touching (e.g. two large squares).
    Placement is a bounded random search, so a scene that barely fits (two large circles, only diagonally) is refused
    for some rngs; :func:`sample_scene` never draws such scenes.
    """
    return Image.fromarray(render_array(scene, rng), mode="RGB")


@dataclass(frozen=True, kw_only=True)
class Example:
    """One training example: the scene, its rendering and one of its captions."""

    scene: Scene
    image: np.ndarray = field(compare=False)  # uint8 [64, 64, 3]
    caption: str


def _example(seed: int, index: int, dist: SceneDistribution) -> tuple[Example, np.random.Generator]:
    rng = np.random.default_rng((seed, index))
    scene, placed = _sample_placed(rng, dist)
    return Example(scene=scene, image=_draw(placed, scene.background), caption=caption(scene, rng)), rng


def example(seed: int, index: int, distribution: SceneDistribution | None = None) -> Example:
    """Example ``index`` of the stream ``seed``: reproducible alone, so data-loader workers can shard by index."""
    return _example(seed, index, distribution if distribution is not None else SceneDistribution())[0]


def render_batch(
    n: int,
    seed: int,
    *,
    start: int = 0,
    distribution: SceneDistribution | None = None,
    caption_dropout: float = 0.0,
) -> tuple[np.ndarray, list[str]]:
    """Examples ``start .. start+n-1`` of stream ``seed`` (see :func:`example`): images uint8 ``[n, 64, 64, 3]``
    and their captions.

    With ``caption_dropout`` > 0 that fraction of captions is replaced by ``""`` (drawn from the example's own rng,
    so the image is unchanged), which trains the unconditional branch classifier-free guidance needs.
    """
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    if not 0.0 <= caption_dropout <= 1.0:
        raise ValueError(f"caption_dropout must be in [0, 1], got {caption_dropout}")
    dist = distribution if distribution is not None else SceneDistribution()
    images = np.empty((n, CANVAS, CANVAS, 3), dtype=np.uint8)
    captions: list[str] = []
    for i in range(n):
        ex, rng = _example(seed, start + i, dist)
        images[i] = ex.image
        captions.append("" if caption_dropout > 0 and rng.random() < caption_dropout else ex.caption)
    return images, captions


def render_pool(
    n: int, seed: int, *, distribution: SceneDistribution | None = None, phrasings: int = 0
) -> tuple[np.ndarray, list[tuple[str, ...]]]:
    """Like :func:`render_batch` (same images, same grammar captions), each caption followed by ``phrasings`` free
    wordings of the same scene (:func:`describe`), drawn from their own stream so the images never change with it."""
    if phrasings < 0:
        raise ValueError(f"phrasings must be >= 0, got {phrasings}")
    dist = distribution if distribution is not None else SceneDistribution()
    images = np.empty((n, CANVAS, CANVAS, 3), dtype=np.uint8)
    captions: list[tuple[str, ...]] = []
    for index in range(n):
        ex, _ = _example(seed, index, dist)
        images[index] = ex.image
        words = np.random.default_rng((seed, index, 1))
        captions.append((ex.caption, *(describe(ex.scene, words) for _ in range(phrasings))))
    return images, captions
