"""The shipped demo model through imagegen itself: the CLI's default model, the engine's img2img, the gallery.

These check meaning with the rule-based analyser (a red circle is red and round), so they only run when the weights are
in the package; they skip with a reason otherwise. One engine is shared by the module: loading is the slow part.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from imagegen.engine import Engine
from imagegen.metadata import parse_infotext, read_infotext
from imagegen_shapes.analyse import analyse, score
from imagegen_shapes.world import parse_prompt
from support.demo_weights import requires_demo_weights

pytestmark = [pytest.mark.slow, requires_demo_weights]


@pytest.fixture(scope="module")
def engine() -> Engine:
    return Engine(device="cpu")


def _checks(prompt: str, image: object) -> dict[str, bool]:
    return score(parse_prompt(prompt), analyse(np.asarray(image)))


def test_cli_generate_without_model_uses_the_demo_model_and_its_defaults(tmp_path: Path, capsys) -> None:
    from imagegen.cli import main

    assert main(["generate", "a red circle", "--seed", "3", "-n", "4", "--out", str(tmp_path)]) == 0
    paths = [Path(line) for line in capsys.readouterr().out.split()]
    assert len(paths) == 4
    info = parse_infotext(read_infotext(paths[0]))
    # The model's own defaults (imagegen.json): 64×64, 20 steps.
    assert (info.width, info.height, info.steps) == (64, 64, 20)
    assert info.model == "imagegen-shapes"
    from PIL import Image

    passed = 0
    for path in paths:
        with Image.open(path) as image:
            passed += _checks("a red circle", image.convert("RGB"))["single_object"]
    assert passed >= 3


def test_engine_img2img_recolours_a_generated_image(engine: Engine) -> None:
    from imagegen.requests import GenerationRequest

    source = engine.generate(GenerationRequest(prompt="a red circle", seed=5, num_images=1)).images[0]
    assert _checks("a red circle", source)["colour"]
    recoloured = engine.generate(
        GenerationRequest(prompt="a blue circle", init_image=source, strength=0.65, seed=5, num_images=4)
    ).images
    assert sum(_checks("a blue circle", image)["colour"] for image in recoloured) >= 3


def test_engine_base_plus_refiner_handoff_on_the_demo_model(engine: Engine) -> None:
    from imagegen.loading import BUILTIN_MODELS
    from imagegen.requests import GenerationRequest

    base, refiner = BUILTIN_MODELS
    result = engine.generate(
        GenerationRequest(prompt="a green square", model=base, refiner=refiner, seed=11, num_images=4)
    )
    assert "Refiner: imagegen-shapes-refiner" in result.infotexts[0]
    assert sum(_checks("a green square", image)["colour"] for image in result.images) >= 3


def test_gallery_writes_every_tile_and_a_contact_sheet(engine: Engine, tmp_path: Path) -> None:
    from imagegen.demo.gallery import GALLERY_PROMPTS, REFINED_PROMPTS, make_gallery

    tiles, sheet = make_gallery(engine, tmp_path, log=lambda _line: None)
    assert len(tiles) == len(GALLERY_PROMPTS) + len(REFINED_PROMPTS) + 1
    assert all(tile.path.is_file() and read_infotext(tile.path) for tile in tiles)
    assert sheet.is_file()
    # The img2img tile asked for blue: it is blue.
    assert _checks("a blue circle", tiles[-1].image)["colour"]
