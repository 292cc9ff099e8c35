"""Build the CLIP BPE tokenizer files (``vocab.json``, ``merges.txt``) that imagegen ships.

The Hugging Face hub cannot be reached here, but the MIT-licensed ``open-clip-torch`` wheel carries OpenAI's BPE merge
list (``open_clip/bpe_simple_vocab_16e6.txt.gz``). The vocabulary of ``openai/clip-vit-large-patch14`` (the tokenizer
of SD 1.x and SDXL) is derived from it deterministically:

1. the 256 byte-to-unicode characters (GPT-2's reversible byte mapping),
2. the same 256 with ``</w>`` (end of word) appended,
3. one token per merge line (lines 1..48894 of the file, the two pieces joined),
4. ``<|startoftext|>`` and ``<|endoftext|>``: 49,408 tokens in all.

Run once from the repository root; the output is committed::

    .venv/bin/python tools/build_clip_tokenizer.py [DEST_DIR]

``open_clip`` itself is never imported (its dependencies are not installed); the data file is located through the
package's import spec.
"""

from __future__ import annotations

import argparse
import gzip
import importlib.util
import json
import sys
from pathlib import Path

#: Where the committed files live, relative to the repository root.
DEFAULT_DEST = Path("src/imagegen/configs/clip-tokenizer")
BPE_FILE_NAME = "bpe_simple_vocab_16e6.txt.gz"
#: CLIP keeps the first 49152 - 256 - 2 merges of the file (open_clip and OpenAI's ``clip`` package cut it there).
NUM_MERGES = 49152 - 256 - 2
SPECIAL_TOKENS = ("<|startoftext|>", "<|endoftext|>")
VOCAB_SIZE = 2 * 256 + NUM_MERGES + len(SPECIAL_TOKENS)
MERGES_HEADER = "#version: 0.2"


def find_open_clip_bpe() -> Path | None:
    """The BPE merge file inside the installed open-clip-torch package, or None if the package is absent."""
    # find_spec on a top-level name locates the package without executing its __init__ (which needs torchvision).
    spec = importlib.util.find_spec("open_clip")
    if spec is None or not spec.submodule_search_locations:
        return None
    for location in spec.submodule_search_locations:
        candidate = Path(location) / BPE_FILE_NAME
        if candidate.is_file():
            return candidate
    return None


def bytes_to_unicode() -> dict[int, str]:
    """GPT-2's reversible map from each byte to a printable unicode character (no whitespace/control characters)."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    mapping = {b: chr(b) for b in printable}
    shifted = 0
    for b in range(256):
        if b not in mapping:
            # Unprintable bytes move to code points 256+, in byte order.
            mapping[b] = chr(256 + shifted)
            shifted += 1
    # The vocabulary order is: printable bytes first, then the shifted ones (insertion order above).
    return mapping


def read_merges(bpe_gz: Path) -> list[tuple[str, str]]:
    """The first NUM_MERGES merge pairs of an open_clip BPE file (its line 0 is a header and is skipped)."""
    lines = gzip.decompress(bpe_gz.read_bytes()).decode("utf-8").split("\n")
    merges = lines[1 : 1 + NUM_MERGES]
    pairs = []
    for line_no, line in enumerate(merges, start=1):
        pieces = line.split()
        if len(pieces) != 2:
            raise ValueError(f"{bpe_gz}: line {line_no} is not a merge pair: {line!r}")
        pairs.append((pieces[0], pieces[1]))
    if len(pairs) != NUM_MERGES:
        raise ValueError(f"{bpe_gz}: expected {NUM_MERGES} merges, found {len(pairs)}")
    return pairs


def render_tokenizer_files(bpe_gz: Path) -> tuple[str, str]:
    """The text of ``vocab.json`` and ``merges.txt`` (Hugging Face CLIPTokenizer format) built from ``bpe_gz``."""
    merges = read_merges(bpe_gz)
    byte_chars = list(bytes_to_unicode().values())
    tokens = [*byte_chars, *(c + "</w>" for c in byte_chars), *(a + b for a, b in merges), *SPECIAL_TOKENS]
    vocab = {token: index for index, token in enumerate(tokens)}
    if len(vocab) != VOCAB_SIZE:
        raise ValueError(f"vocabulary has {len(vocab)} distinct tokens, expected {VOCAB_SIZE}")
    vocab_text = json.dumps(vocab, ensure_ascii=False) + "\n"
    merges_text = "\n".join([MERGES_HEADER, *(f"{a} {b}" for a, b in merges)]) + "\n"
    return vocab_text, merges_text


def write_tokenizer_files(bpe_gz: Path, dest: Path) -> tuple[Path, Path]:
    """Write ``vocab.json`` and ``merges.txt`` into ``dest`` and return their paths."""
    vocab_text, merges_text = render_tokenizer_files(bpe_gz)
    dest.mkdir(parents=True, exist_ok=True)
    vocab_path, merges_path = dest / "vocab.json", dest / "merges.txt"
    # newline="" keeps "\n" on every platform so the committed bytes are reproducible.
    vocab_path.write_text(vocab_text, encoding="utf-8", newline="")
    merges_path.write_text(merges_text, encoding="utf-8", newline="")
    return vocab_path, merges_path


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "dest", nargs="?", type=Path, default=DEFAULT_DEST, help=f"output folder (default {DEFAULT_DEST})"
    )
    args = parser.parse_args(argv)
    bpe_gz = find_open_clip_bpe()
    if bpe_gz is None:
        print("open-clip-torch is not installed: pip install --no-deps open-clip-torch", file=sys.stderr)
        return 1
    for path in write_tokenizer_files(bpe_gz, args.dest):
        print(f"wrote {path} ({path.stat().st_size} bytes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
