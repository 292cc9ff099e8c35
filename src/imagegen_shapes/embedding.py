"""A textual-inversion embedding for the demo model, in A1111's SDXL format (``clip_l`` and ``clip_g`` vectors).

The demo model only knows its ~60 training words. ``crimson`` is not one of them; the embedding this writes gives the
word ``crimson`` the input vectors of ``red`` in both text encoders, so "a crimson circle" draws a red circle. The
vectors are read from the model, not trained (textual inversion would converge to them for a synonym): it exercises
the whole embedding path (file format, name matching, vector injection in both encoders) on a model whose pictures
the analyser can judge.

Run: ``python -m imagegen_shapes.embedding --out DIR`` (writes ``DIR/crimson.safetensors``).
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

import imagegen
from imagegen_shapes.train import BASE_NAME


def synonym_embedding(model: Path, word: str, source: str, out: Path) -> Path:
    """Write ``out/<word>.safetensors`` whose vectors are ``source``'s token embeddings in ``model``'s encoders."""
    import torch
    from safetensors.torch import save_file
    from transformers import CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer

    vectors = {}
    for key, encoder_class, folder in (
        ("clip_l", CLIPTextModel, "text_encoder"),
        ("clip_g", CLIPTextModelWithProjection, "text_encoder_2"),
    ):
        tokenizer = CLIPTokenizer.from_pretrained(model / folder.replace("text_encoder", "tokenizer"))
        encoder = encoder_class.from_pretrained(model / folder)
        ids = tokenizer(source, add_special_tokens=False).input_ids
        with torch.no_grad():
            vectors[key] = encoder.get_input_embeddings().weight[ids].detach().to(torch.float32).clone()
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{word}.safetensors"
    save_file(vectors, str(path), metadata={"source_word": source, "model": BASE_NAME})
    return path


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m imagegen_shapes.embedding", description=__doc__.splitlines()[0])
    default_model = Path(imagegen.__file__).parent / "demo" / "weights" / BASE_NAME
    parser.add_argument("--model", type=Path, default=default_model, help="the demo model folder")
    parser.add_argument("--word", default="crimson", help="the new word (the file's name)")
    parser.add_argument("--source", default="red", help="the known word whose meaning it takes")
    parser.add_argument("--out", type=Path, required=True, help="folder to write <word>.safetensors to")
    args = parser.parse_args(argv)
    print(synonym_embedding(args.model, args.word, args.source, args.out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
