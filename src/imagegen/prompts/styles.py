"""Prompt styles in A1111's ``styles.csv`` format: ``name,prompt,negative_prompt`` rows (a header row first).

A style's text is merged into the prompt as A1111 merges it: a ``{prompt}`` placeholder is replaced by the prompt,
otherwise the style is appended after a comma. Styles apply in the order asked; the negative prompt likewise. An
unknown style name is an error naming ``styles`` (A1111 ignores it silently, which loses the user's intent).
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from imagegen.errors import InvalidRequest

__all__ = ["Style", "apply_styles", "merge_prompt", "read_styles"]


@dataclass(frozen=True, kw_only=True)
class Style:
    name: str
    prompt: str = ""
    negative_prompt: str = ""


def read_styles(path: Path | None) -> tuple[Style, ...]:
    """The styles of a ``styles.csv`` (none when the file does not exist). Rows without a name are skipped."""
    if path is None or not path.is_file():
        return ()
    styles: list[Style] = []
    with path.open(encoding="utf-8-sig", newline="") as handle:
        for row in csv.DictReader(handle, skipinitialspace=True):
            name = (row.get("name") or "").strip()
            if name:
                styles.append(
                    Style(name=name, prompt=row.get("prompt") or "", negative_prompt=row.get("negative_prompt") or "")
                )
    return tuple(styles)


def merge_prompt(style_text: str, prompt: str) -> str:
    """A1111's ``merge_prompts``: ``{prompt}`` is replaced by ``prompt``, else ``prompt, style_text``."""
    if "{prompt}" in style_text:
        return style_text.replace("{prompt}", prompt)
    return ", ".join(part for part in (prompt.strip(), style_text.strip()) if part)


def apply_styles(prompt: str, negative_prompt: str, names: Sequence[str], styles: Sequence[Style]) -> tuple[str, str]:
    """``prompt`` and ``negative_prompt`` with the named styles merged in, in order."""
    by_name = {style.name: style for style in styles}
    for index, name in enumerate(names):
        style = by_name.get(name)
        if style is None:
            known = ", ".join(sorted(by_name)) or "none (no styles file)"
            raise InvalidRequest(f"styles[{index}]", f"unknown style {name!r}; known styles: {known}")
        prompt = merge_prompt(style.prompt, prompt)
        negative_prompt = merge_prompt(style.negative_prompt, negative_prompt)
    return prompt, negative_prompt
