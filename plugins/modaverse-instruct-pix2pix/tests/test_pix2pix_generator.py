"""The InstructPix2Pix plugin on a tiny random pipeline saved to disk (CPU, offline)."""

from __future__ import annotations

import importlib.metadata
import io
import math
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import modaverse_instruct_pix2pix
import modaverse_stable_diffusion  # noqa: F401  (registers the tiny "stable-diffusion" kind)
import numpy as np
import pytest
from modaverse_instruct_pix2pix import InstructPix2PixGenerator, fit_size
from PIL import Image

from modaverse_agent import GenerationRequest, GeneratorError, OutputDir
from modaverse_agent.diffusion import build_tiny_pipeline
from modaverse_agent.generators import GenerationCancelled
from modaverse_agent.media import MediaItem, load_media

PLUGIN_DIR = Path(__file__).resolve().parents[1]
PROMPT = "turn the apple green"


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("tiny-pix2pix")
    build_tiny_pipeline("instruct-pix2pix").save_pretrained(d)
    return d


@pytest.fixture(scope="module")
def gen(tiny_dir: Path) -> Any:
    g = InstructPix2PixGenerator(model=str(tiny_dir), device="cpu")
    yield g
    g.unload()


def _picture(width: int, height: int, fmt: str = "PNG") -> MediaItem:
    x, y = np.meshgrid(np.linspace(0, 255, width), np.linspace(0, 255, height))
    rgb = np.stack([x, y, 255 - x], axis=-1).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format=fmt)
    return load_media(buf.getvalue())


def _edit(gen: InstructPix2PixGenerator, out: Path, item: MediaItem, **args: Any) -> tuple[Any, np.ndarray]:
    art = gen.generate(GenerationRequest(PROMPT, OutputDir(out), {"steps": 2, **args}, inputs=[item]))[0]
    with Image.open(art.path) as im:
        return art, np.asarray(im.convert("RGB"))


def test_png_the_size_of_the_input_with_progress(gen: InstructPix2PixGenerator, tiny_dir: Path, tmp_path: Path) -> None:
    item = _picture(52, 36, "JPEG")  # not multiples of 8: worked on at 56x32, returned at 52x36
    seen: list[tuple[int, int]] = []
    req = GenerationRequest(
        PROMPT, OutputDir(tmp_path), {"steps": 2, "seed": 6}, inputs=[item], progress=lambda *a: seen.append(a)
    )
    (art,) = gen.generate(req)
    with Image.open(art.path) as im:
        assert (im.format, im.size, im.mode) == ("PNG", (52, 36), "RGB")
    assert (art.task, art.generator, art.seed, art.modality) == ("image-editing", "instruct-pix2pix", 6, "image")
    assert art.metadata["untrained"] is True and art.metadata["model"] == str(tiny_dir)
    assert art.metadata["input_sha256"] == item.sha256 and art.metadata["input_size"] == [52, 36]
    assert (art.metadata["steps"], art.metadata["image_guidance"]) == (2, 1.5)
    assert seen == [(1, 2), (2, 2)]


def test_same_seed_same_pixels_other_seed_other_pixels(gen: InstructPix2PixGenerator, tmp_path: Path) -> None:
    item = _picture(48, 48)
    _, p1 = _edit(gen, tmp_path, item, seed=41)
    _, p2 = _edit(gen, tmp_path, item, seed=41)
    _, p3 = _edit(gen, tmp_path, item, seed=42)
    assert np.array_equal(p1, p2)
    assert not np.array_equal(p1, p3)


def test_large_inputs_are_scaled_to_max_side(tiny_dir: Path, tmp_path: Path) -> None:
    g = InstructPix2PixGenerator(model=str(tiny_dir), device="cpu", max_side=64)
    art, pixels = _edit(g, tmp_path, _picture(200, 100), seed=1)
    assert pixels.shape == (32, 64, 3)
    assert art.metadata["input_size"] == [200, 100] and (art.metadata["width"], art.metadata["height"]) == (64, 32)
    g.unload()
    assert fit_size((300, 1200), 768) == (192, 768) and fit_size((40, 30), 768) == (40, 30)


def test_missing_or_wrong_input_gives_clear_errors(
    gen: InstructPix2PixGenerator, tiny_dir: Path, tmp_path: Path
) -> None:
    out = OutputDir(tmp_path)
    fresh = InstructPix2PixGenerator(model=str(tiny_dir), device="cpu")
    with pytest.raises(GeneratorError, match="edits an input image: attach one"):
        fresh.generate(GenerationRequest(PROMPT, out, {"steps": 2}))
    assert not fresh.loaded  # refused before loading weights
    wav = MediaItem(modality="audio", mime_type="audio/wav", data=b"RIFF....WAVE", name="clip.wav")
    with pytest.raises(GeneratorError, match=r"accepts \['image'\], not \['clip\.wav'\]"):
        gen.generate(GenerationRequest(PROMPT, out, {"steps": 2}, inputs=[wav]))
    broken = MediaItem(modality="image", mime_type="image/png", data=b"\x89PNG\r\n\x1a\nbroken", name="apple.png")
    with pytest.raises(GeneratorError, match=r"cannot read input image 'apple\.png'"):
        gen.generate(GenerationRequest(PROMPT, out, {"steps": 2}, inputs=[broken]))
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("args", "where"),
    [
        ({"steps": 0}, "steps"),
        ({"guidance": 31}, "guidance"),
        ({"image_guidance": -0.5}, "image_guidance"),
        ({"image_guidance": math.nan}, "image_guidance is nan, not a finite number"),
        ({"steps": 51}, "steps 51 is over the cap of 50 on cpu.*-o max_steps=51"),
        ({"seed": 2**40}, "seed"),
        ({"strength": 0.5}, "strength"),
    ],
)
def test_bad_arguments_give_clear_errors(gen: InstructPix2PixGenerator, tmp_path: Path, args: dict, where: str) -> None:
    with pytest.raises(GeneratorError, match=rf"generator 'instruct-pix2pix'.*{where}"):
        gen.generate(GenerationRequest(PROMPT, OutputDir(tmp_path), args, inputs=[_picture(16, 16)]))
    assert list(tmp_path.iterdir()) == []


def test_caps_are_higher_on_cuda_and_a_zoo_option_raises_them(tiny_dir: Path, tmp_path: Path) -> None:
    g = InstructPix2PixGenerator(model=str(tiny_dir), device="cpu")
    assert (g.cap("steps", "cpu"), g.cap("steps", "cuda")) == (50, 150)
    g.configure(max_steps=150)
    g.check(GenerationRequest(PROMPT, OutputDir(tmp_path), {"steps": 150}, inputs=[_picture(16, 16)]))


def test_hub_id_not_in_cache_names_the_model_and_how_to_get_it(tmp_path: Path) -> None:
    g = InstructPix2PixGenerator(device="cpu")
    with pytest.raises(GeneratorError) as info:
        g.generate(GenerationRequest(PROMPT, OutputDir(tmp_path), inputs=[_picture(16, 16)]))
    msg = str(info.value)
    assert "'timbrooks/instruct-pix2pix'" in msg and "hf download timbrooks/instruct-pix2pix" in msg
    assert not g.loaded


def test_a_pipeline_of_another_kind_is_refused(tmp_path: Path) -> None:
    build_tiny_pipeline("stable-diffusion").save_pretrained(tmp_path / "sd")
    with pytest.raises(GeneratorError, match=r"is a StableDiffusionPipeline pipeline.*StableDiffusionInstructPix2Pix"):
        InstructPix2PixGenerator(model=str(tmp_path / "sd"), device="cpu").setup()


def test_loaded_once_reused_and_unloaded(tiny_dir: Path, tmp_path: Path) -> None:
    g = InstructPix2PixGenerator(model=str(tiny_dir), device="cpu")
    assert not g.loaded
    _edit(g, tmp_path, _picture(16, 16), seed=1)
    first = g.pipeline.pipe
    _edit(g, tmp_path, _picture(16, 16), seed=2)
    assert g.pipeline.pipe is first
    g.unload()
    assert not g.loaded and g._pipeline is None


def test_tiny_random_builds_an_untrained_pipeline_offline(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MODAVERSE_CACHE", raising=False)  # the project cache dir is then the user cache dir,
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))  # which platformdirs reads from here
    g = InstructPix2PixGenerator(model="tiny-random", device="cpu")
    (art,) = g.generate(
        GenerationRequest(PROMPT, OutputDir(tmp_path), {"steps": 1, "seed": 0}, inputs=[_picture(16, 16)])
    )
    assert art.path.is_file() and art.metadata["untrained"] is True and art.metadata["model"] == "tiny-random"
    assert (tmp_path / "cache" / "modaverse" / "tiny-pipelines" / f"{g.tiny_kind}-v1" / "model_index.json").is_file()
    g.unload()


def test_entry_point_is_declared_and_registers_the_generator() -> None:
    declared = tomllib.loads((PLUGIN_DIR / "pyproject.toml").read_text())["project"]["entry-points"]
    assert declared["modaverse_agent"] == {"instruct-pix2pix": "modaverse_instruct_pix2pix"}
    eps = [ep for ep in importlib.metadata.entry_points(group="modaverse_agent") if ep.name == "instruct-pix2pix"]
    assert eps, "not installed: pip install -e plugins/modaverse-instruct-pix2pix"
    assert eps[0].value == "modaverse_instruct_pix2pix" and eps[0].dist.name == "modaverse-instruct-pix2pix"
    found: list[Any] = []
    eps[0].load().register_generators(register=found.append)
    assert [type(g) for g in found] == [InstructPix2PixGenerator]
    assert (found[0].task, found[0].input_modalities, found[0].loaded) == ("image-editing", ("image",), False)
    assert modaverse_instruct_pix2pix.register_generators is eps[0].load().register_generators


def test_listing_the_plugin_imports_no_model_stack() -> None:
    code = (
        "import sys, modaverse_instruct_pix2pix as m; found = []; m.register_generators(register=found.append); "
        "found[0].describe(); heavy = {'torch', 'diffusers', 'transformers'} & set(sys.modules); "
        "assert not heavy, heavy"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


def test_a_cancelled_invocation_stops_at_the_next_step(gen: InstructPix2PixGenerator, tmp_path: Path) -> None:
    seen: list[tuple[int, int]] = []
    req = GenerationRequest(PROMPT, OutputDir(tmp_path), {"steps": 20, "seed": 0}, inputs=[_picture(16, 16)])

    def progress(done: int, total: int) -> None:
        seen.append((done, total))
        req.cancel.set()  # what the agent does when the invocation times out

    req.progress = progress
    with pytest.raises(GenerationCancelled):
        gen.generate(req)
    assert seen == [(1, 20)] and list(tmp_path.iterdir()) == []
