"""The text-to-video plugin on a tiny random pipeline saved to disk (CPU, offline)."""

from __future__ import annotations

import importlib.metadata
import math
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import av
import modaverse_text_to_video
import numpy as np
import pytest
from modaverse_text_to_video import TextToVideoGenerator

from modaverse_agent import GenerationRequest, GeneratorError, OutputDir
from modaverse_agent.diffusion import build_tiny_pipeline
from modaverse_agent.generators import GenerationCancelled

PLUGIN_DIR = Path(__file__).resolve().parents[1]
PROMPT = "a paper boat drifting on a pond"


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("tiny-t2v")
    build_tiny_pipeline("text-to-video").save_pretrained(d)
    return d


@pytest.fixture(scope="module")
def gen(tiny_dir: Path) -> Any:
    g = TextToVideoGenerator(model=str(tiny_dir), device="cpu")
    yield g
    g.unload()


def _decode(path: Path) -> tuple[Any, np.ndarray]:
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        frames = np.stack([f.to_ndarray(format="rgb24") for f in container.decode(stream)])
        info = (stream.codec_context.name, stream.average_rate, float(stream.duration * stream.time_base))
    return info, frames


def _clip(gen: TextToVideoGenerator, out: Path, **args: Any) -> np.ndarray:
    art = gen.generate(GenerationRequest(PROMPT, OutputDir(out), {"steps": 2, "frames": 3, **args}))[0]
    return _decode(art.path)[1]


def test_mp4_with_requested_frames_fps_duration(gen: TextToVideoGenerator, tiny_dir: Path, tmp_path: Path) -> None:
    seen: list[tuple[int, int]] = []
    req = GenerationRequest(
        PROMPT, OutputDir(tmp_path), {"steps": 2, "frames": 4, "fps": 4, "seed": 5}, progress=lambda *a: seen.append(a)
    )
    (art,) = gen.generate(req)
    (codec, rate, duration), frames = _decode(art.path)
    assert codec == "h264" and rate == 4
    assert frames.shape == (4, 32, 32, 3)  # tiny UNet3D sample_size 16 x VAE factor 2
    assert duration == pytest.approx(1.0)
    assert art.path.suffix == ".mp4" and art.mime_type == "video/mp4"
    assert (art.task, art.generator, art.seed) == ("text-to-video", "text-to-video-ms", 5)
    assert art.metadata["untrained"] is True and art.metadata["model"] == str(tiny_dir)
    assert (art.metadata["frames"], art.metadata["fps"], art.metadata["duration_s"]) == (4, 4, 1.0)
    assert seen == [(1, 2), (2, 2)]


def test_same_seed_same_frames_other_seed_other_frames(gen: TextToVideoGenerator, tmp_path: Path) -> None:
    f1 = _clip(gen, tmp_path, seed=31)
    f2 = _clip(gen, tmp_path, seed=31)
    f3 = _clip(gen, tmp_path, seed=32)
    assert np.array_equal(f1, f2)
    assert not np.array_equal(f1, f3)


@pytest.mark.parametrize(
    ("args", "where"),
    [
        ({"frames": 0}, "frames"),
        ({"frames": 1000}, "frames"),
        ({"fps": 0}, "fps"),
        ({"fps": 7.5}, "fps"),
        ({"steps": 101}, "steps"),
        ({"frames": 17}, "frames 17 is over the cap of 16 on cpu.*-o max_frames=17"),
        ({"steps": 26}, "steps 26 is over the cap of 25 on cpu.*-o max_steps=26"),
        ({"seed": "abc"}, "seed"),
        ({"duration": 2}, "duration"),
    ],
)
def test_bad_arguments_give_clear_errors(gen: TextToVideoGenerator, tmp_path: Path, args: dict, where: str) -> None:
    with pytest.raises(GeneratorError, match=rf"generator 'text-to-video-ms'.*{where}"):
        gen.generate(GenerationRequest(PROMPT, OutputDir(tmp_path), args))
    assert list(tmp_path.iterdir()) == []


def test_non_finite_arguments_are_refused(gen: TextToVideoGenerator, tmp_path: Path) -> None:
    with pytest.raises(GeneratorError, match="frames is nan, not a finite number"):
        gen.generate(GenerationRequest(PROMPT, OutputDir(tmp_path), {"frames": math.nan}))
    assert list(tmp_path.iterdir()) == []


def test_caps_are_higher_on_cuda_and_a_zoo_option_raises_them(tiny_dir: Path, tmp_path: Path) -> None:
    g = TextToVideoGenerator(model=str(tiny_dir), device="cpu")
    assert (g.cap("frames", "cpu"), g.cap("frames", "cuda"), g.cap("steps", "cpu"), g.cap("steps", "cuda")) == (
        16,
        64,
        25,
        100,
    )
    g.configure(max_frames=64, max_steps=100)
    g.check(GenerationRequest(PROMPT, OutputDir(tmp_path), {"frames": 64, "steps": 100}))


def test_hub_id_not_in_cache_names_the_model_and_how_to_get_it(tmp_path: Path) -> None:
    g = TextToVideoGenerator(device="cpu")
    with pytest.raises(GeneratorError) as info:
        g.generate(GenerationRequest(PROMPT, OutputDir(tmp_path)))
    msg = str(info.value)
    assert "'damo-vilab/text-to-video-ms-1.7b'" in msg and "hf download damo-vilab/text-to-video-ms-1.7b" in msg
    assert not g.loaded


def test_bad_model_directory(tmp_path: Path) -> None:
    with pytest.raises(GeneratorError, match="does not exist"):
        TextToVideoGenerator(model=str(tmp_path / "missing")).setup()
    with pytest.raises(GeneratorError, match=r"no model_index\.json"):
        TextToVideoGenerator(model=str(tmp_path)).setup()


def test_loaded_once_reused_and_unloaded(tiny_dir: Path, tmp_path: Path) -> None:
    g = TextToVideoGenerator(model=str(tiny_dir), device="cpu")
    assert not g.loaded
    _clip(g, tmp_path, seed=1, frames=1, steps=1)
    first = g.pipeline.pipe
    _clip(g, tmp_path, seed=2, frames=1, steps=1)
    assert g.pipeline.pipe is first
    g.unload()
    assert not g.loaded and g._pipeline is None


def test_tiny_random_builds_an_untrained_pipeline_offline(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MODAVERSE_CACHE", raising=False)  # the project cache dir is then the user cache dir,
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))  # which platformdirs reads from here
    g = TextToVideoGenerator(model="tiny-random", device="cpu")
    (art,) = g.generate(GenerationRequest(PROMPT, OutputDir(tmp_path), {"steps": 1, "frames": 2, "seed": 0}))
    assert art.path.is_file() and art.metadata["untrained"] is True and art.metadata["model"] == "tiny-random"
    assert (tmp_path / "cache" / "modaverse" / "tiny-pipelines" / f"{g.tiny_kind}-v1" / "model_index.json").is_file()
    g.unload()


def test_entry_point_is_declared_and_registers_the_generator() -> None:
    declared = tomllib.loads((PLUGIN_DIR / "pyproject.toml").read_text())["project"]["entry-points"]
    assert declared["modaverse_agent"] == {"text-to-video": "modaverse_text_to_video"}
    eps = [ep for ep in importlib.metadata.entry_points(group="modaverse_agent") if ep.name == "text-to-video"]
    assert eps, "not installed: pip install -e plugins/modaverse-text-to-video"
    assert eps[0].value == "modaverse_text_to_video" and eps[0].dist.name == "modaverse-text-to-video"
    found: list[Any] = []
    eps[0].load().register_generators(register=found.append)
    assert [type(g) for g in found] == [TextToVideoGenerator]
    assert (found[0].task, found[0].modality, found[0].loaded) == ("text-to-video", "video", False)
    assert modaverse_text_to_video.register_generators is eps[0].load().register_generators


def test_listing_the_plugin_imports_no_model_stack() -> None:
    code = (
        "import sys, modaverse_text_to_video as m; found = []; m.register_generators(register=found.append); "
        "found[0].describe(); heavy = {'torch', 'diffusers', 'transformers'} & set(sys.modules); "
        "assert not heavy, heavy"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


def test_a_cancelled_invocation_stops_at_the_next_step(gen: TextToVideoGenerator, tmp_path: Path) -> None:
    seen: list[tuple[int, int]] = []
    req = GenerationRequest(PROMPT, OutputDir(tmp_path), {"steps": 20, "frames": 2, "seed": 0})

    def progress(done: int, total: int) -> None:
        seen.append((done, total))
        req.cancel.set()  # what the agent does when the invocation times out

    req.progress = progress
    with pytest.raises(GenerationCancelled):
        gen.generate(req)
    assert seen == [(1, 20)] and list(tmp_path.iterdir()) == []
