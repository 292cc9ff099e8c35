r"""The AUTOMATIC1111 (A1111) prompt language, parsed in pure Python (no torch, no lark).

A prompt goes through three passes, in A1111's order:

1. :func:`extract_network_tags` cuts ``<lora:name:0.8>`` and every other ``<kind:...>`` tag out of the *whole* prompt
   (A1111's ``modules/extra_networks.py``), so a tag inside a schedule or an alternation is active at every step.
   :func:`lora_tags` reads the weights of the ``lora`` (and ``lyco``) tags as A1111's built-in Lora extension does.
2. :func:`prompt_schedule` resolves prompt editing and alternation into one plain prompt per range of sampler steps
   (A1111's ``get_learned_conditioning_prompt_schedules``); :func:`step_prompt` picks the one for a step.
3. :func:`parse_attention` cuts each plain prompt into runs of text with an attention weight, and ``BREAK`` markers
   (A1111's ``parse_prompt_attention``); the text encoder scales each run's token embeddings by its weight.

**Scheduling grammar** (pass 2), what A1111's lark grammar in ``modules/prompt_parser.py`` accepts::

    prompt    := (text | emphasis | scheduled | alternate)*
    emphasis  := "(" prompt ")" | "(" prompt ":" prompt ")" | "[" prompt "]"
    scheduled := "[" [prompt ":"] prompt ":" WHEN "]"      [to:when]  [from:to:when]  [from::when]
    alternate := "[" prompt ("|" prompt)+ "]"              [a|b|c]: a at step 1, b at 2, c at 3, a at 4, ...
    text      := characters other than ( ) [ ] : | \, and escapes: a backslash and the character after it

``WHEN`` is a signed number (``3``, ``+3``, ``.5``, ``1e1``), spaces around allowed. With a ``.`` in it, it is a
fraction of the steps (``0.25`` of 20 steps is step 5), otherwise a step number; either way at most ``steps``. The
"from" part is used while the 1-based step is ``<= WHEN``, the "to" part after. Emphasis is kept as text for pass 3.
At the top level only, a bracket or colon that begins or ends no construct is plain text (``a (b``, ``x]: y``). A
``|`` outside an alternation, a construct whose inside breaks the grammar (``[a|(b|c)]``), or a backslash that
escapes nothing (last character, or before a newline) makes the whole prompt unparseable; A1111 then uses it
unchanged at every step, and so does :func:`prompt_schedule`. Where a bracket can begin a construct, it does:
A1111's (Earley) parser is ambiguous when a construct is directly followed or preceded by a stray bracket or colon
(``[a:2](``), and its choice there follows Python's hash seed, so it changes from one A1111 start to the next; the
construct is one of its answers, and always the answer here.

**Attention syntax** (pass 3) is read by a left-to-right scanner, not a grammar: every string has a reading.

* ``(x)`` multiplies the weight of ``x`` by 1.1, ``[x]`` divides it by 1.1; nesting multiplies: ``((x))`` is
  ``1.0 * 1.1 * 1.1 == 1.2100000000000002``, exactly A1111's floats (the innermost bracket's factor comes first).
* ``(x:1.3)`` multiplies by 1.3 instead of 1.1 (digits and dots, an optional sign, spaces around allowed).
* ``\(`` ``\)`` ``\[`` ``\]`` ``\\`` are the literal characters; a backslash before anything else is dropped.
* An unclosed ``(`` or ``[`` weights everything after it; a ``)`` or ``]`` with no open bracket of its own kind is
  kept as text. Round and square brackets are counted separately, so ``( [ ) ]`` weights as it reads.
* ``BREAK`` as a whole word (``\bBREAK\b``, with the spaces around it) becomes the :data:`BREAK` marker, which ends
  the current 75-token chunk of the text encoder.
* Neighbouring runs of equal weight are merged; an empty prompt is ``(Fragment("", 1.0),)``.

**Differences from A1111, on purpose.** A1111 crashes (a Python exception, no image) on ``(x:1.2.3)``, on a
scheduled step of ``1e999``, and on ``<lora:name:abc>``; these raise :class:`~imagegen.errors.InvalidRequest`
instead, which every function here raises for any bad input and nothing else. A1111 multiplies its ``BREAK`` marker
by the weights of the brackets around it, which turns ``(a BREAK b)`` into the word "BREAK" with weight -1.1;
here ``BREAK`` always breaks. A weight that is not finite (``(x:999...9)`` with hundreds of digits) is refused.
A LoRA tag's ``dyn=`` (DyLoRA's rank, which A1111 supports) and named arguments that A1111 ignores (other
extensions' ``lbw=``) are refused rather than dropped (:func:`lora_tags`). Not handled here: ``AND`` (composable
diffusion), ``#`` comment lines and styles, which A1111 applies before these passes.

**Limits.** Text inside more than :data:`MAX_NESTING` open brackets (weights of 1.1**101 and beyond), and
constructs nested more than :data:`MAX_NESTING` deep in a schedule, are refused with ``InvalidRequest``; within that,
every pass runs in time linear in the prompt's length (times the nesting depth, and times the steps for a schedule).
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Final, TypeAlias

from imagegen.errors import InvalidRequest

__all__ = [
    "BREAK",
    "MAX_NESTING",
    "Fragment",
    "LoraTag",
    "NetworkTag",
    "ScheduleEntry",
    "extract_network_tags",
    "lora_tags",
    "parse_attention",
    "prompt_schedule",
    "step_prompt",
]

#: The deepest bracket nesting accepted: text inside more open brackets, or schedule constructs nested deeper.
MAX_NESTING: Final = 100


# -- Attention: A1111's parse_prompt_attention -------------------------------------------------------------------


@dataclass(frozen=True)
class Fragment:
    """One run of prompt text and the attention weight of each of its tokens."""

    text: str
    weight: float


@dataclass(frozen=True)
class _BreakMarker(Fragment):
    """The type of :data:`BREAK`: a distinct class, so that no fragment made from prompt text ever equals it."""


#: What ``BREAK`` becomes in :func:`parse_attention`'s output. It reads as A1111's ``["BREAK", -1]``
#: (``BREAK.text == "BREAK"``, ``BREAK.weight == -1.0``) but is its own type: test ``fragment == BREAK`` (or ``is``);
#: ``Fragment("BREAK", -1.0)``, which ``(BRE\AK:-1)`` produces, is text and does not equal it.
BREAK: Final[Fragment] = _BreakMarker("BREAK", -1.0)

_ROUND_FACTOR: Final = 1.1
_SQUARE_FACTOR: Final = 1 / 1.1
_ESCAPABLE: Final = frozenset("()[]\\")
# A1111's tokens, in the order its regex tries them at a colon and elsewhere; \d and \s are Unicode, as in A1111.
_EXPLICIT_WEIGHT: Final = re.compile(r":\s*([+-]?[.\d]+)\s*\)")
_ATTENTION_SPECIAL: Final = re.compile(r"[\\()\[\]:]")
_BREAK_KEYWORD: Final = re.compile(r"\s*\bBREAK\b\s*")


class _Runs:
    """The runs of text read so far (``None`` weight: a BREAK) and the positions where open brackets began."""

    def __init__(self) -> None:
        self.texts: list[str] = []
        self.weights: list[float | None] = []
        self.round_open: list[int] = []
        self.square_open: list[int] = []

    def add(self, text: str, weight: float | None = 1.0) -> None:
        # Each run is multiplied once per bracket around it, so the depth bounds the work per run.
        depth = len(self.round_open) + len(self.square_open)
        if depth > MAX_NESTING:
            raise InvalidRequest(
                "prompt",
                f"text is inside {depth} open brackets, at most {MAX_NESTING} are allowed "
                "(write \\( or \\[ for a literal bracket)",
            )
        self.texts.append(text)
        self.weights.append(weight)

    def add_text(self, text: str) -> None:
        """Plain text, split at each BREAK keyword (A1111 splits every text token it reads the same way)."""
        for index, part in enumerate(_BREAK_KEYWORD.split(text)):
            if index:
                self.add(BREAK.text, None)
            self.add(part)

    def scale(self, start: int, factor: float) -> None:
        """Multiply every run from ``start`` on, one at a time, so that each float is A1111's."""
        weights = self.weights
        for index in range(start, len(weights)):
            weight = weights[index]
            if weight is not None:
                weights[index] = weight * factor

    def fragments(self) -> tuple[Fragment, ...]:
        """The runs with neighbours of equal weight merged (A1111 merges after weighting, as here)."""
        merged: list[Fragment] = []
        for index, text in enumerate(self.texts):
            weight = self.weights[index]
            if weight is None:
                merged.append(BREAK)
                continue
            if not math.isfinite(weight):
                raise InvalidRequest(
                    "prompt", f"the attention weight of {text!r} is {weight}; use weights such as (word:1.2)"
                )
            if merged and merged[-1] is not BREAK and merged[-1].weight == weight:
                merged[-1] = Fragment(merged[-1].text + text, merged[-1].weight)
            else:
                merged.append(Fragment(text, weight))
        return tuple(merged) or (Fragment("", 1.0),)


def parse_attention(text: str) -> tuple[Fragment, ...]:
    r"""Cut ``text`` into runs of equal attention weight, as A1111's ``parse_prompt_attention`` does.

    ``(x)`` is x1.1, ``[x]`` /1.1, ``(x:w)`` xw, ``\(`` a literal bracket; ``BREAK`` becomes :data:`BREAK`. An
    unclosed bracket weights the rest of the text; a closing bracket with nothing to close is text. See the module
    docstring for every rule; :class:`InvalidRequest` for a weight that is no number or not finite, or for text
    inside more than :data:`MAX_NESTING` open brackets.
    """
    runs = _Runs()
    position = 0
    while position < len(text):
        char = text[position]
        if char == "\\":
            escaped = text[position + 1 : position + 2]
            if escaped in _ESCAPABLE:
                runs.add(escaped)
                position += 2
            else:
                runs.add("")  # A1111 reads a lone backslash as an empty run: "a\b" is "ab"
                position += 1
        elif char == "(":
            runs.round_open.append(len(runs.texts))
            position += 1
        elif char == "[":
            runs.square_open.append(len(runs.texts))
            position += 1
        elif char == ":":
            match = _EXPLICIT_WEIGHT.match(text, position)
            if match is None:
                runs.add_text(char)
                position += 1
            else:
                if runs.round_open:
                    runs.scale(runs.round_open.pop(), _explicit_weight(match.group(0), match.group(1)))
                else:
                    runs.add_text(match.group(0))  # ":1.2)" with no "(" open is text, as in A1111
                position = match.end()
        elif char == ")" and runs.round_open:
            runs.scale(runs.round_open.pop(), _ROUND_FACTOR)
            position += 1
        elif char == "]" and runs.square_open:
            runs.scale(runs.square_open.pop(), _SQUARE_FACTOR)
            position += 1
        elif char in ")]":
            runs.add_text(char)
            position += 1
        else:
            special = _ATTENTION_SPECIAL.search(text, position)
            end = special.start() if special else len(text)
            runs.add_text(text[position:end])
            position = end
    # A1111 closes what is left open at the end: all round brackets (outermost first), then all square ones.
    for start in runs.round_open:
        runs.scale(start, _ROUND_FACTOR)
    for start in runs.square_open:
        runs.scale(start, _SQUARE_FACTOR)
    return runs.fragments()


def _explicit_weight(token: str, number: str) -> float:
    # A1111's pattern takes any run of digits and dots and then calls float(), which raises on "1.2.3" or ".".
    try:
        return float(number)
    except ValueError:
        raise InvalidRequest(
            "prompt", f"{token!r}: {number!r} is not a number; write an attention weight such as (word:1.2)"
        ) from None


# -- Scheduling: A1111's get_learned_conditioning_prompt_schedules ------------------------------------------------


@dataclass(frozen=True)
class ScheduleEntry:
    """One prompt of a schedule: it applies while the 0-based sampler step index is ``<= end_at_step`` (A1111)."""

    end_at_step: int
    prompt: str


@dataclass(frozen=True)
class _Scheduled:
    """``[before:after:when]``; ``before`` is ``None`` for ``[after:when]``, ``when`` already in steps."""

    before: tuple[_Node, ...] | None
    after: tuple[_Node, ...]
    when: int


@dataclass(frozen=True)
class _Alternate:
    """``[a|b|c]``: option ``(step - 1) % len(options)`` at each 1-based step."""

    options: tuple[tuple[_Node, ...], ...]


_Node: TypeAlias = "str | _Scheduled | _Alternate"

_OPENER_OF: Final = MappingProxyType({")": "(", "]": "["})
_SCHEDULE_SPECIAL: Final = frozenset("()[]:|")
# lark's common.SIGNED_NUMBER (ASCII digits, optional exponent) between optional whitespace (Unicode \s, as lark's).
_WHEN: Final = re.compile(r"\s*([+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?)\s*")


def prompt_schedule(text: str, steps: int) -> tuple[ScheduleEntry, ...]:
    """The prompts ``text`` asks for over ``steps`` sampler steps, as A1111's
    ``get_learned_conditioning_prompt_schedules([text], steps)[0]`` (first pass: no hires-fix offsets).

    One entry per step at which something changes (every step with an alternation), ending with ``steps``; entries
    are not merged even when their prompts are equal, as in A1111. A prompt the grammar does not accept is one entry
    ``(steps, text)``. :class:`InvalidRequest` for ``steps < 1`` or constructs nested over :data:`MAX_NESTING` deep.
    """
    if steps < 1:
        raise InvalidRequest("num_inference_steps", f"must be at least 1, got {steps!r}")
    closers = _pair_brackets(text)
    nodes = None if closers is None else _ScheduleParser(text, steps, closers).parse()
    if nodes is None:
        return (ScheduleEntry(steps, text),)
    boundaries = {steps}
    _collect_boundaries(nodes, steps, boundaries)
    return tuple(ScheduleEntry(step, "".join(_render(nodes, step, []))) for step in sorted(boundaries))


def step_prompt(schedule: Sequence[ScheduleEntry], step: int) -> str:
    """The prompt used at 0-based sampler step ``step``: the first entry with ``step <= end_at_step``, else the last.

    (A1111's ``reconstruct_cond_batch`` falls back to the *first* entry, which only a step past the schedule's own
    step count reaches; the last prompt is what such a step means here.)
    """
    if not schedule:
        raise InvalidRequest("prompt", "a prompt schedule has at least one entry")
    for entry in schedule:
        if step <= entry.end_at_step:
            return entry.prompt
    return schedule[-1].prompt


def _pair_brackets(text: str) -> dict[int, int] | None:
    """Map each opening bracket that can begin a construct to its closing bracket; ``None`` for a lone backslash.

    A construct's inside holds only constructs and text, so its brackets nest properly and a mismatched closer
    (``[(]``) leaves every bracket open before it unpaired; escaped brackets are text.
    """
    closers: dict[int, int] = {}
    open_brackets: list[int] = []
    position = 0
    while position < len(text):
        char = text[position]
        if char == "\\":
            # lark's text pattern is `\\.`: nothing matches a backslash at the end or before a newline.
            if text[position + 1 : position + 2] in ("", "\n"):
                return None
            position += 1
        elif char in "([":
            open_brackets.append(position)
        elif char in ")]":
            if open_brackets and text[open_brackets[-1]] == _OPENER_OF[char]:
                closers[open_brackets.pop()] = position
            else:
                open_brackets.clear()
        position += 1
    _check_nesting(closers)
    return closers


def _check_nesting(closers: dict[int, int]) -> None:
    # The parser recurses once per nested construct: bound it (and the work) before parsing.
    ends = set(closers.values())
    depth = 0
    for position in sorted((*closers, *ends)):
        if position in ends:
            depth -= 1
            continue
        depth += 1
        if depth > MAX_NESTING:
            raise InvalidRequest(
                "prompt", f"brackets nest {depth} deep at character {position}, at most {MAX_NESTING} are allowed"
            )


class _ScheduleParser:
    """Recursive descent over the scheduling grammar, with the bracket pairs known in advance."""

    def __init__(self, text: str, steps: int, closers: dict[int, int]) -> None:
        self.text = text
        self.steps = steps
        self.closers = closers

    def parse(self) -> list[_Node] | None:
        """The whole prompt: constructs where they parse, stray brackets and colons as text; ``None`` on a ``|``."""
        text = self.text
        nodes: list[_Node] = []
        position = 0
        while position < len(text):
            char = text[position]
            if position in self.closers:
                inner = self._construct(position)
                if inner is not None:
                    nodes.extend(inner)
                    position = self.closers[position] + 1
                    continue
            if char == "|":
                return None
            if char in _SCHEDULE_SPECIAL:
                nodes.append(char)
                position += 1
            else:
                position = self._text(position, nodes)
        return nodes

    def _text(self, position: int, nodes: list[_Node]) -> int:
        """Append the text run at ``position`` (escapes kept as written, for parse_attention); return its end."""
        text = self.text
        end = position
        while end < len(text) and text[end] not in _SCHEDULE_SPECIAL:
            end += 2 if text[end] == "\\" else 1
        nodes.append(text[position:end])
        return end

    def _construct(self, start: int) -> list[_Node] | None:
        """The nodes of the construct that the bracket at ``start`` opens, ``None`` if its inside breaks the grammar."""
        end = self.closers[start]
        parts: list[list[_Node]] = [[]]
        separators: list[str] = []
        last_part = position = start + 1
        while position < end:
            char = self.text[position]
            if char in ":|":
                separators.append(char)
                parts.append([])
                position += 1
                last_part = position
            elif position in self.closers:  # every bracket inside a pair is paired too (see _pair_brackets)
                inner = self._construct(position)
                if inner is None:
                    return None
                parts[-1].extend(inner)
                position = self.closers[position] + 1
            else:
                position = self._text(position, parts[-1])
        return self._classify(self.text[start], parts, separators, self.text[last_part:end])

    def _classify(self, opener: str, parts: list[list[_Node]], separators: list[str], last: str) -> list[_Node] | None:
        """The construct ``opener`` + parts joined by separators + closer; ``last`` is the last part as written."""
        if opener == "(":
            # Emphasis, with at most one colon: "(x:1.2)" and also "(x:y)"; the weight is parse_attention's business.
            return _emphasis("(", parts, ")") if separators in ([], [":"]) else None
        if not separators:
            return _emphasis("[", parts, "]")
        if set(separators) == {"|"}:
            return [_Alternate(tuple(tuple(option) for option in parts))]
        if separators not in ([":"], [":", ":"]):
            return None
        when = _WHEN.fullmatch(last)  # the last part is the step: no brackets in it, only the number and spaces
        if when is None:
            return None
        before = tuple(parts[0]) if len(parts) == 3 else None
        return [_Scheduled(before, tuple(parts[-2]), _when_step(when.group(1), self.steps))]


def _emphasis(opener: str, parts: list[list[_Node]], closer: str) -> list[_Node]:
    """An emphasis construct: its brackets and its colon, if any, stay in the prompt around its parts."""
    nodes: list[_Node] = [opener, *parts[0]]
    for part in parts[1:]:
        nodes += [":", *part]
    nodes.append(closer)
    return nodes


def _when_step(number: str, steps: int) -> int:
    """A1111 (>= 1.6): with a "." a fraction of the steps, else a step; ``min(steps, int(value))``."""
    value = float(number)
    if "." in number:
        value *= steps
    # Clamped before int(), which cannot convert inf ("1e999"); every value below 1 means the same (no boundary).
    return int(min(max(value, 0.0), steps))


def _collect_boundaries(nodes: Sequence[_Node], steps: int, found: set[int]) -> None:
    # Every construct counts, also one inside a branch that some steps do not take (as in A1111).
    for node in nodes:
        if isinstance(node, _Scheduled):
            if node.when >= 1:
                found.add(node.when)
            _collect_boundaries(node.before or (), steps, found)
            _collect_boundaries(node.after, steps, found)
        elif isinstance(node, _Alternate):
            found.update(range(1, steps + 1))
            for option in node.options:
                _collect_boundaries(option, steps, found)


def _render(nodes: Sequence[_Node], step: int, out: list[str]) -> list[str]:
    """The text of ``nodes`` at 1-based ``step``, appended to ``out``."""
    for node in nodes:
        if isinstance(node, str):
            out.append(node)
        elif isinstance(node, _Scheduled):
            _render((node.before or ()) if step <= node.when else node.after, step, out)
        else:
            _render(node.options[(step - 1) % len(node.options)], step, out)
    return out


# -- Extra networks: A1111's modules/extra_networks.py and the built-in Lora extension ------------------------------


@dataclass(frozen=True)
class NetworkTag:
    """An A1111 extra-network tag ``<kind:name:arg1:arg2...>``; ``args`` are the other ``:``-separated values."""

    kind: str
    name: str
    args: tuple[str, ...]

    @property
    def text(self) -> str:
        """The tag as it was written in the prompt."""
        return "<" + ":".join((self.kind, self.name, *self.args)) + ">"


@dataclass(frozen=True)
class LoraTag:
    """A LoRA to apply, with its text-encoder and UNet weights."""

    name: str
    te_weight: float
    unet_weight: float


# A1111's pattern is <(\w+):([^>]+)>: a kind of word characters (Unicode \w), a colon, then anything up to the
# first ">". Its regex backtracks over the whole rest of the prompt at each "<" with no ">" after it (quadratic), so
# the "up to the first >" part is found with str.find instead, and only the kind by a pattern.
_TAG_KIND: Final = re.compile(r"(\w+):")
# A1111 >= 1.5 registers "lyco" as another name of its Lora network (extensions-builtin/Lora/scripts/lora_script.py).
_LORA_KINDS: Final = frozenset({"lora", "lyco"})


def extract_network_tags(text: str) -> tuple[str, tuple[NetworkTag, ...]]:
    """``text`` without its extra-network tags, and the tags in order, as A1111's ``extra_networks.parse_prompt``.

    Every kind is cut, also ones no code here knows (A1111 cuts them too, then logs "Skipping unknown extra
    network"). The text around a tag is kept as it is: ``"a <lora:x:1> b"`` gives ``"a  b"``. A1111 runs this on
    the whole prompt before scheduling, so ``[<lora:a>:<lora:b>:5]`` applies both LoRAs at every step.
    """
    tags: list[NetworkTag] = []
    pieces: list[str] = []
    kept = search = 0  # text[kept:] is not yet copied; the next tag starts at a "<" at or after search
    while (start := text.find("<", search)) >= 0:
        kind = _TAG_KIND.match(text, start + 1)
        end = text.find(">", kind.end()) if kind else start
        if end < 0:
            break  # no ">" after this "<", so none after any later "<" either
        if kind is None or end == kind.end():  # "<lora:>" is no tag: the rest is one character at least
            search = start + 1
            continue
        name, *args = text[kind.end() : end].split(":")
        tags.append(NetworkTag(kind.group(1), name, tuple(args)))
        pieces.append(text[kept:start])
        kept = search = end + 1
    pieces.append(text[kept:])
    return "".join(pieces), tuple(tags)


def lora_tags(tags: Sequence[NetworkTag]) -> tuple[LoraTag, ...]:
    """The ``lora`` and ``lyco`` tags among ``tags``, read as A1111's Lora extension reads them.

    ``<lora:name>`` is weight 1.0 for both parts, ``<lora:name:w>`` is ``w`` for both, ``<lora:name:te:unet>`` sets
    each; named ``te=w`` and ``unet=w`` override the positional ones (``unet`` defaults to the text encoder's weight).
    :class:`InvalidRequest` for a weight that is no finite number, a missing name, or what this engine does not
    support: DyLoRA's ``dyn=`` (or a third weight), and any other named argument (A1111 ignores those silently).
    """
    return tuple(_lora(tag) for tag in tags if tag.kind in _LORA_KINDS)


def _lora(tag: NetworkTag) -> LoraTag:
    if not tag.name:
        raise InvalidRequest("prompt", f"{tag.text} names no LoRA: write <{tag.kind}:NAME> or <{tag.kind}:NAME:WEIGHT>")
    if tag.name.count("=") == 1:
        # A1111 would read it as a named argument and take the next value as the name.
        raise InvalidRequest("prompt", f"{tag.text}: a LoRA name cannot contain one '='; rename the file")
    positional: list[str] = []
    named: dict[str, str] = {}
    for arg in tag.args:
        # A1111's rule: exactly one "=" makes a named argument; a later one of the same name wins.
        if arg.count("=") == 1:
            key, value = arg.split("=")
            named[key] = value
        else:
            positional.append(arg)
    unknown = sorted(set(named) - {"te", "unet"})
    if unknown or len(positional) > 2:
        what = f"named argument {unknown[0]}=" if unknown else f"a third weight ({positional[2]})"
        raise InvalidRequest(
            "prompt",
            f"{tag.text}: {what} is not supported; a LoRA tag takes <{tag.kind}:NAME>, <{tag.kind}:NAME:WEIGHT>, "
            f"<{tag.kind}:NAME:TE_WEIGHT:UNET_WEIGHT>, or te=WEIGHT / unet=WEIGHT (DyLoRA's dyn= is not supported)",
        )
    # A1111's order: positional first, a named value replaces it; unet defaults to the (final) te weight.
    te_weight = _lora_weight(tag, "te", positional[0]) if positional else 1.0
    if "te" in named:
        te_weight = _lora_weight(tag, "te", named["te"])
    unet_weight = _lora_weight(tag, "unet", positional[1]) if len(positional) > 1 else te_weight
    if "unet" in named:
        unet_weight = _lora_weight(tag, "unet", named["unet"])
    return LoraTag(tag.name, te_weight, unet_weight)


def _lora_weight(tag: NetworkTag, part: str, value: str) -> float:
    try:
        weight = float(value)  # what A1111 calls, so " 0.5" and "1e-1" read the same
    except ValueError:
        weight = math.nan
    if not math.isfinite(weight):
        raise InvalidRequest(
            "prompt", f"{tag.text}: the {part} weight {value!r} is not a finite number; write e.g. 0.8 or -1"
        )
    return weight
