"""The A1111 prompt language through the real engine on tiny models: encoding, identities, long prompts, editing,
clip skip, emphasis modes, styles and textual-inversion embeddings."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from imagegen.engine import Engine
from imagegen.errors import InvalidRequest
from imagegen.metadata import parse_infotext, request_fields_from_infotext
from imagegen.prompts.encoding import PromptEncoder
from imagegen.requests import GenerationRequest

FAMILY = {"sd1": "sd1", "sd2": "sd2", "sdxl-base": "sdxl"}


def _pixels(engine: Engine, model: Path, prompt: str, **fields: object) -> bytes:
    request = GenerationRequest(prompt=prompt, model=str(model), seed=7, num_inference_steps=4, **fields)  # type: ignore[arg-type]
    return engine.generate(request).images[0].tobytes()


@pytest.mark.parametrize("name", ["sd1", "sd2", "sdxl-base"])
def test_a_short_plain_prompt_encodes_exactly_as_diffusers(engine, tiny_models, name):
    pipe = engine.load(str(tiny_models[name])).pipeline
    ours = PromptEncoder.for_pipeline(pipe, FAMILY[name]).encode("a photo of a cat")
    if name == "sdxl-base":
        embeds, _, pooled, _ = pipe.encode_prompt("a photo of a cat", device="cpu", do_classifier_free_guidance=False)
        assert torch.equal(ours.pooled, pooled)
    else:
        embeds, _ = pipe.encode_prompt("a photo of a cat", "cpu", 1, False)
    assert torch.equal(ours.embeds, embeds)


@pytest.mark.parametrize("name", ["sd1", "sd2", "sdxl-base"])
def test_identities_weight_one_and_editing_that_never_triggers(engine, tiny_models, name):
    model = tiny_models[name]
    plain = _pixels(engine, model, "a red circle")
    assert _pixels(engine, model, "(a red circle:1.0)") == plain
    # Step 30 of 4 never comes, and [from::when] keeps "from" until then.
    assert _pixels(engine, model, "a [red:blue:30] circle") == plain
    assert _pixels(engine, model, "a red [circle::30]") == plain
    # ... while weights, editing that triggers, and alternation do change the image.
    assert _pixels(engine, model, "a (red:1.6) circle") != plain
    assert _pixels(engine, model, "a [red:blue:0.5] circle") not in (plain, _pixels(engine, model, "a blue circle"))
    assert _pixels(engine, model, "a [red|blue] circle") != plain


@pytest.mark.parametrize("name", ["sd1", "sdxl-base"])
def test_every_token_of_a_long_prompt_counts(engine, tiny_models, name):
    model = tiny_models[name]
    head = " ".join(["cat"] * 80)
    encoder = PromptEncoder.for_pipeline(engine.load(str(model)).pipeline, FAMILY[name])
    assert encoder.encode(head).embeds.shape[1] == 154  # two chunks of 75 + start/end
    assert encoder.encode("a cat BREAK a dog").embeds.shape[1] == 154
    assert encoder.token_count(head) == 80
    result = engine.generate(GenerationRequest(prompt=head + " zebra", model=str(model), seed=7, num_inference_steps=4))
    assert result.warnings == ()  # nothing past 75 tokens is ignored any more
    assert result.images[0].tobytes() != _pixels(engine, model, head + " horse")
    # A long negative prompt with a short prompt: padded to the same chunk count, and it counts too.
    long_negative = " ".join(["blurry"] * 90)
    assert _pixels(engine, model, "a cat", negative_prompt=long_negative + " red") != _pixels(
        engine, model, "a cat", negative_prompt=long_negative + " blue"
    )


def test_chunks_break_at_a_comma_near_their_end(engine, tiny_models):
    encoder = PromptEncoder.for_pipeline(engine.load(str(tiny_models["sd1"])).pipeline, "sd1")
    vocabulary = encoder._vocabularies[0]
    fragments = encoder._fragments("cat " * 70 + ", dog dog dog dog dog dog dog dog")
    chunks = encoder._chunks(fragments, vocabulary)
    first = chunks[0].tokens[1:-1]
    # 70 cats and the comma end the first chunk (padded); the dogs start the second, as A1111 backtracks.
    assert first[:71].count(vocabulary.comma) == 1
    assert first[70] == vocabulary.comma
    assert chunks[1].tokens[1] != vocabulary.pad
    assert len(chunks) == 2


def test_clip_skip_follows_a1111_per_family(engine, tiny_models):
    sd1, sd2 = tiny_models["sd1"], tiny_models["sd2"]
    result = engine.generate(
        GenerationRequest(prompt="a cat", model=str(sd1), seed=7, num_inference_steps=4, clip_skip=2)
    )
    assert result.images[0].tobytes() != _pixels(engine, sd1, "a cat")
    assert "Clip skip: 2" in result.infotexts[0]
    # A1111's SD 2.x and SDXL encoders ignore clip skip; so does imagegen (and still records it, as A1111 does).
    assert _pixels(engine, sd2, "a cat", clip_skip=2) == _pixels(engine, sd2, "a cat")
    xl = tiny_models["sdxl-base"]
    assert _pixels(engine, xl, "a cat", clip_skip=2) == _pixels(engine, xl, "a cat")
    # The infotext brings it back.
    fields = request_fields_from_infotext(result.infotexts[0])
    assert fields["clip_skip"] == 2
    again = engine.generate(GenerationRequest(**{**fields, "model": str(sd1)}))
    assert again.images[0].tobytes() == result.images[0].tobytes()


def test_emphasis_modes(engine, tiny_models):
    model = tiny_models["sd1"]
    assert _pixels(engine, model, "(cat:1.5)", emphasis="Ignore") == _pixels(engine, model, "cat")
    # "None": brackets are text, so the prompt differs from both the weighted and the plain one.
    literal = _pixels(engine, model, "(cat:1.5)", emphasis="None")
    assert literal not in (_pixels(engine, model, "cat"), _pixels(engine, model, "(cat:1.5)"))
    assert _pixels(engine, model, "(cat:1.5)", emphasis="No norm") != _pixels(engine, model, "cat")
    with pytest.raises(InvalidRequest, match="emphasis"):
        GenerationRequest(prompt="x", emphasis="Loud")


def test_styles_merge_into_the_prompts_and_the_infotext(tmp_path, tiny_models):
    styles = tmp_path / "styles.csv"
    styles.write_text(
        'name,prompt,negative_prompt\nfilm,"cinematic still of {prompt}, grain",blurry\nsharp,sharp focus,\n',
        encoding="utf-8",
    )
    engine = Engine(device="cpu", styles_file=styles)
    model = str(tiny_models["sd1"])
    result = engine.generate(
        GenerationRequest(
            prompt="a cat", negative_prompt="dark", styles=("film", "sharp"), model=model, seed=1, num_inference_steps=2
        )
    )
    assert result.effective.prompt == "cinematic still of a cat, grain, sharp focus"
    assert result.effective.negative_prompt == "dark, blurry"
    assert result.effective.styles == ()
    info = parse_infotext(result.infotexts[0])
    assert (info.prompt, info.negative_prompt) == ("cinematic still of a cat, grain, sharp focus", "dark, blurry")
    with pytest.raises(InvalidRequest) as error:
        engine.generate(GenerationRequest(prompt="a cat", styles=("nope",), model=model, num_inference_steps=1))
    assert error.value.field == "styles[0]"
    assert "film" in error.value.message


def _save_embedding(folder: Path, name: str, tensors: dict[str, torch.Tensor]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(folder / f"{name}.safetensors"))


def test_textual_inversion_embeddings_by_name(tmp_path, tiny_models):
    folder = tmp_path / "embeddings"
    generator = torch.Generator().manual_seed(0)
    _save_embedding(folder, "shinystyle", {"emb_params": torch.randn(2, 32, generator=generator)})
    _save_embedding(
        folder,
        "xlstyle",
        {"clip_l": torch.randn(3, 32, generator=generator), "clip_g": torch.randn(3, 64, generator=generator)},
    )
    (folder / "broken.safetensors").write_bytes(b"not a file")
    engine = Engine(device="cpu", embeddings_dirs=(folder,))
    sd1, xl = tiny_models["sd1"], tiny_models["sdxl-base"]
    plain = Engine(device="cpu")
    # The word names the vectors: the image differs from the word read as text by an engine without embeddings.
    assert _pixels(engine, sd1, "a shinystyle cat") != _pixels(plain, sd1, "a shinystyle cat")
    assert _pixels(engine, xl, "a xlstyle cat") != _pixels(plain, xl, "a xlstyle cat")
    # An embedding of the wrong family is not used: the word stays text.
    assert _pixels(engine, sd1, "a xlstyle cat") == _pixels(plain, sd1, "a xlstyle cat")
    encoder = PromptEncoder.for_pipeline(
        engine.load(str(sd1)).pipeline,
        "sd1",
        embeddings=engine._usable_embeddings(engine.load(str(sd1)).pipeline, engine.resolve(str(sd1)).family),
    )
    assert encoder.token_count("a shinystyle cat") == 4  # a + 2 vectors + cat
    reasons = {file.name: value for file, value in engine.embeddings() if isinstance(value, str)}
    assert "broken" in reasons
