"""The Stable Diffusion plugin on a tiny random pipeline saved to disk (CPU, offline)."""

from __future__ import annotations

import importlib.metadata
import math
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import modaverse_stable_diffusion
import numpy as np
import pytest
from modaverse_stable_diffusion import StableDiffusionGenerator
from PIL import Image

from modaverse_agent import GenerationRequest, GeneratorError, OutputDir
from modaverse_agent.diffusion import build_tiny_pipeline
from modaverse_agent.generators import GenerationCancelled

PLUGIN_DIR = Path(__file__).resolve().parents[1]
PROMPT = "a red apple on a wooden table"


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("tiny-sd")
    build_tiny_pipeline("stable-diffusion").save_pretrained(d)
    return d


@pytest.fixture(scope="module")
def gen(tiny_dir: Path) -> Any:
    g = StableDiffusionGenerator(model=str(tiny_dir), device="cpu")
    yield g
    g.unload()


def _image(gen: StableDiffusionGenerator, out: Path, **args: Any) -> tuple[Any, np.ndarray]:
    art = gen.generate(GenerationRequest(PROMPT, OutputDir(out), {"steps": 2, **args}))[0]
    with Image.open(art.path) as im:
        return art, np.asarray(im.convert("RGB"))


def test_png_of_the_requested_size_with_progress(gen: StableDiffusionGenerator, tiny_dir: Path, tmp_path: Path) -> None:
    seen: list[tuple[int, int]] = []
    req = GenerationRequest(
        PROMPT,
        OutputDir(tmp_path),
        {"steps": 2, "width": 96, "height": 64, "seed": 3},
        progress=lambda *a: seen.append(a),
    )
    (art,) = gen.generate(req)
    with Image.open(art.path) as im:
        assert (im.format, im.size, im.mode) == ("PNG", (96, 64), "RGB")
    assert art.path.parent == tmp_path.resolve() and art.mime_type == "image/png"
    assert (art.task, art.generator, art.prompt, art.seed) == ("text-to-image", "stable-diffusion", PROMPT, 3)
    assert art.metadata["model"] == str(tiny_dir)
    assert art.metadata["untrained"] is True
    assert (art.metadata["steps"], art.metadata["width"], art.metadata["height"]) == (2, 96, 64)
    assert seen == [(1, 2), (2, 2)]


def test_default_size_is_the_models_native_size(gen: StableDiffusionGenerator, tmp_path: Path) -> None:
    _, pixels = _image(gen, tmp_path, seed=0)
    assert pixels.shape == (64, 64, 3)  # tiny UNet sample_size 32 x VAE factor 2


def test_same_seed_same_pixels_other_seed_other_pixels(gen: StableDiffusionGenerator, tmp_path: Path) -> None:
    a1, p1 = _image(gen, tmp_path, seed=11)
    a2, p2 = _image(gen, tmp_path, seed=11)
    _, p3 = _image(gen, tmp_path, seed=12)
    assert a1.path != a2.path  # never overwrites
    assert np.array_equal(p1, p2)
    assert not np.array_equal(p1, p3)


def test_seed_comes_from_the_request_or_is_drawn_and_recorded(gen: StableDiffusionGenerator, tmp_path: Path) -> None:
    out = OutputDir(tmp_path)
    (art,) = gen.generate(GenerationRequest(PROMPT, out, {"steps": 2}, seed=7))
    assert art.seed == 7
    (drawn,) = gen.generate(GenerationRequest(PROMPT, out, {"steps": 2}))
    assert isinstance(drawn.seed, int) and drawn.metadata["seed"] == drawn.seed
    _, again = _image(gen, tmp_path, seed=drawn.seed)
    with Image.open(drawn.path) as im:
        assert np.array_equal(np.asarray(im.convert("RGB")), again)


@pytest.mark.parametrize(
    ("args", "where"),
    [
        ({"steps": 0}, "steps"),
        ({"steps": "many"}, "steps"),
        ({"width": 65}, "width"),
        ({"height": 4096}, "height"),
        ({"guidance": -1}, "guidance"),
        ({"guidance": math.nan}, "guidance is nan, not a finite number"),
        ({"guidance": math.inf}, "guidance is inf, not a finite number"),
        ({"seed": -5}, "seed"),
        ({"colour": "red"}, "colour"),
    ],
)
def test_bad_arguments_give_clear_errors(gen: StableDiffusionGenerator, tmp_path: Path, args: dict, where: str) -> None:
    with pytest.raises(GeneratorError, match=rf"generator 'stable-diffusion'.*{where}"):
        gen.generate(GenerationRequest(PROMPT, OutputDir(tmp_path), args))
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            {"steps": 51},
            "steps 51 is over the cap of 50 on cpu; ask for less, or raise the cap with "
            "`modaverse zoo set text-to-image stable-diffusion -o max_steps=51`",
        ),
        (
            {"width": 776},
            "width 776 is over the cap of 768 on cpu; ask for less, or raise the cap with "
            "`modaverse zoo set text-to-image stable-diffusion -o max_side=776`",
        ),
        ({"height": 2048}, "height 2048 is over the cap of 768 on cpu"),
    ],
)
def test_cpu_caps_refuse_heavy_work_and_name_the_option(
    gen: StableDiffusionGenerator, tmp_path: Path, args: dict, message: str
) -> None:
    with pytest.raises(GeneratorError) as info:
        gen.generate(GenerationRequest(PROMPT, OutputDir(tmp_path), args))
    assert message in str(info.value)
    assert list(tmp_path.iterdir()) == []


def test_caps_are_higher_on_cuda_and_a_zoo_option_raises_them(tiny_dir: Path, tmp_path: Path) -> None:
    g = StableDiffusionGenerator(model=str(tiny_dir), device="cpu")
    assert (g.cap("steps", "cpu"), g.cap("steps", "cuda"), g.cap("width", "cpu"), g.cap("width", "cuda")) == (
        50,
        150,
        768,
        2048,
    )
    g.configure(max_steps=150, max_side=2048)
    g.check(GenerationRequest(PROMPT, OutputDir(tmp_path), {"steps": 150, "width": 2048, "height": 2048}))


def test_the_models_native_size_counts_against_the_cap(tiny_dir: Path, tmp_path: Path) -> None:
    g = StableDiffusionGenerator(model=str(tiny_dir), device="cpu", max_side=32)  # native: 64 x 64
    with pytest.raises(GeneratorError, match=r"width 64 is over the cap of 32 on cpu.*-o max_side=64"):
        g.generate(GenerationRequest(PROMPT, OutputDir(tmp_path), {"steps": 1}))
    assert list(tmp_path.iterdir()) == []
    g.unload()


def test_hub_id_not_in_cache_names_the_model_and_how_to_get_it(tmp_path: Path) -> None:
    g = StableDiffusionGenerator(model="stable-diffusion-v1-5/stable-diffusion-v1-5", device="cpu")
    with pytest.raises(GeneratorError) as info:
        g.generate(GenerationRequest(PROMPT, OutputDir(tmp_path)))
    msg = str(info.value)
    assert "'stable-diffusion-v1-5/stable-diffusion-v1-5'" in msg
    assert "hf download stable-diffusion-v1-5/stable-diffusion-v1-5" in msg and "model" in msg
    assert not g.loaded


def test_bad_model_directory(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-model"
    with pytest.raises(GeneratorError, match="does not exist"):
        StableDiffusionGenerator(model=str(missing)).setup()
    with pytest.raises(GeneratorError, match=r"no model_index\.json"):
        StableDiffusionGenerator(model=str(tmp_path)).setup()


def test_bad_options_are_refused() -> None:
    with pytest.raises(GeneratorError, match="device"):
        StableDiffusionGenerator(device="tpu")
    with pytest.raises(GeneratorError, match="unexpected"):
        StableDiffusionGenerator(scheduler="ddim")


def test_loaded_once_reused_and_unloaded(tiny_dir: Path, tmp_path: Path) -> None:
    g = StableDiffusionGenerator(model=str(tiny_dir), device="cpu")
    assert not g.loaded
    _image(g, tmp_path, seed=1)
    first = g.pipeline.pipe
    _image(g, tmp_path, seed=2)
    assert g.loaded and g.pipeline.pipe is first
    g.unload()
    assert not g.loaded and g._pipeline is None
    _image(g, tmp_path, seed=3)
    assert g.loaded and g.pipeline.pipe is not first
    g.unload()


def test_tiny_random_builds_an_untrained_pipeline_offline(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MODAVERSE_CACHE", raising=False)  # the project cache dir is then the user cache dir,
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))  # which platformdirs reads from here
    g = StableDiffusionGenerator(model="tiny-random", device="cpu")
    (art,) = g.generate(GenerationRequest(PROMPT, OutputDir(tmp_path), {"steps": 1, "seed": 0}))
    assert art.path.is_file() and art.metadata["untrained"] is True and art.metadata["model"] == "tiny-random"
    assert (tmp_path / "cache" / "modaverse" / "tiny-pipelines" / f"{g.tiny_kind}-v1" / "model_index.json").is_file()
    g.unload()


def test_entry_point_is_declared_and_registers_the_generator() -> None:
    declared = tomllib.loads((PLUGIN_DIR / "pyproject.toml").read_text())["project"]["entry-points"]
    assert declared["modaverse_agent"] == {"stable-diffusion": "modaverse_stable_diffusion"}
    eps = [ep for ep in importlib.metadata.entry_points(group="modaverse_agent") if ep.name == "stable-diffusion"]
    assert eps, "not installed: pip install -e plugins/modaverse-stable-diffusion"
    assert eps[0].value == "modaverse_stable_diffusion" and eps[0].dist.name == "modaverse-stable-diffusion"
    found: list[Any] = []
    eps[0].load().register_generators(register=found.append)
    assert [type(g) for g in found] == [StableDiffusionGenerator]
    assert (found[0].task, found[0].modality, found[0].loaded) == ("text-to-image", "image", False)
    assert found[0].option("model") == "stable-diffusion-v1-5/stable-diffusion-v1-5"
    assert modaverse_stable_diffusion.register_generators is eps[0].load().register_generators


def test_listing_the_plugin_imports_no_model_stack() -> None:
    code = (
        "import sys, modaverse_stable_diffusion as m; found = []; m.register_generators(register=found.append); "
        "found[0].describe(); heavy = {'torch', 'diffusers', 'transformers'} & set(sys.modules); "
        "assert not heavy, heavy"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


def test_a_cancelled_invocation_stops_at_the_next_step(gen: StableDiffusionGenerator, tmp_path: Path) -> None:
    seen: list[tuple[int, int]] = []
    req = GenerationRequest(PROMPT, OutputDir(tmp_path), {"steps": 20, "seed": 0})

    def progress(done: int, total: int) -> None:
        seen.append((done, total))
        req.cancel.set()  # what the agent does when the invocation times out

    req.progress = progress
    with pytest.raises(GenerationCancelled):
        gen.generate(req)
    assert seen == [(1, 20)] and list(tmp_path.iterdir()) == []
