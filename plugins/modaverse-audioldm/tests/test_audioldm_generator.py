"""The AudioLDM plugin on a tiny random pipeline saved to disk (CPU, offline)."""

from __future__ import annotations

import importlib.metadata
import math
import subprocess
import sys
import tomllib
import wave
from pathlib import Path
from typing import Any

import modaverse_audioldm
import numpy as np
import pytest
from modaverse_audioldm import AudioLDMGenerator

from modaverse_agent import GenerationRequest, GeneratorError, OutputDir
from modaverse_agent.diffusion import build_tiny_pipeline
from modaverse_agent.generators import GenerationCancelled

PLUGIN_DIR = Path(__file__).resolve().parents[1]
PROMPT = "a dog barking in the rain"


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("tiny-audioldm")
    build_tiny_pipeline("audioldm").save_pretrained(d)
    return d


@pytest.fixture(scope="module")
def gen(tiny_dir: Path) -> Any:
    g = AudioLDMGenerator(model=str(tiny_dir), device="cpu")
    yield g
    g.unload()


def _read_wav(path: Path) -> tuple[wave._wave_params, np.ndarray]:
    with wave.open(str(path), "rb") as w:
        return w.getparams(), np.frombuffer(w.readframes(w.getnframes()), dtype="<i2")


def _clip(gen: AudioLDMGenerator, out: Path, **args: Any) -> tuple[Any, np.ndarray]:
    art = gen.generate(GenerationRequest(PROMPT, OutputDir(out), {"steps": 2, "duration": 1.0, **args}))[0]
    return art, _read_wav(art.path)[1]


def test_wav_of_the_requested_duration_with_progress(gen: AudioLDMGenerator, tiny_dir: Path, tmp_path: Path) -> None:
    seen: list[tuple[int, int]] = []
    req = GenerationRequest(
        PROMPT, OutputDir(tmp_path), {"steps": 2, "duration": 1.5, "seed": 4}, progress=lambda *a: seen.append(a)
    )
    (art,) = gen.generate(req)
    params, samples = _read_wav(art.path)
    assert (params.nchannels, params.sampwidth, params.framerate) == (1, 2, 16000)
    assert params.nframes == 24000  # exactly 1.5 s
    assert np.abs(samples).max() > 0  # not silent in 16-bit PCM
    assert art.path.suffix == ".wav" and art.mime_type == "audio/wav"
    assert (art.task, art.generator, art.seed) == ("text-to-audio", "audioldm", 4)
    assert art.metadata["untrained"] is True and art.metadata["model"] == str(tiny_dir)
    assert (art.metadata["duration_s"], art.metadata["sample_rate"], art.metadata["steps"]) == (1.5, 16000, 2)
    assert seen == [(1, 2), (2, 2)]


def test_same_seed_same_samples_other_seed_other_samples(gen: AudioLDMGenerator, tmp_path: Path) -> None:
    _, s1 = _clip(gen, tmp_path, seed=21)
    _, s2 = _clip(gen, tmp_path, seed=21)
    _, s3 = _clip(gen, tmp_path, seed=22)
    assert np.array_equal(s1, s2)
    assert not np.array_equal(s1, s3)


@pytest.mark.parametrize(
    ("args", "where"),
    [
        ({"duration": 0}, "duration"),
        ({"duration": 31}, "duration"),
        ({"duration": "long"}, "duration"),
        ({"duration": math.nan}, "duration is nan, not a finite number"),
        ({"guidance": -math.inf}, "guidance is -inf, not a finite number"),
        ({"duration": 10.5}, "duration 10.5 is over the cap of 10 on cpu.*-o max_duration=10.5"),
        ({"steps": 51}, "steps 51 is over the cap of 50 on cpu.*-o max_steps=51"),
        ({"steps": 0}, "steps"),
        ({"guidance": 100}, "guidance"),
        ({"seed": 1.5}, "seed"),
        ({"fps": 8}, "fps"),
    ],
)
def test_bad_arguments_give_clear_errors(gen: AudioLDMGenerator, tmp_path: Path, args: dict, where: str) -> None:
    with pytest.raises(GeneratorError, match=rf"generator 'audioldm'.*{where}"):
        gen.generate(GenerationRequest(PROMPT, OutputDir(tmp_path), args))
    assert list(tmp_path.iterdir()) == []


def test_caps_are_higher_on_cuda_and_a_zoo_option_raises_them(tiny_dir: Path, tmp_path: Path) -> None:
    g = AudioLDMGenerator(model=str(tiny_dir), device="cpu")
    assert (g.cap("duration", "cpu"), g.cap("duration", "cuda"), g.cap("steps", "cpu"), g.cap("steps", "cuda")) == (
        10.0,
        30.0,
        50,
        200,
    )
    g.configure(max_duration=30, max_steps=200)
    g.check(GenerationRequest(PROMPT, OutputDir(tmp_path), {"duration": 30, "steps": 200}))


def test_hub_id_not_in_cache_names_the_model_and_how_to_get_it(tmp_path: Path) -> None:
    g = AudioLDMGenerator(device="cpu")
    with pytest.raises(GeneratorError) as info:
        g.generate(GenerationRequest(PROMPT, OutputDir(tmp_path)))
    assert "'cvssp/audioldm-l-full'" in str(info.value) and "hf download cvssp/audioldm-l-full" in str(info.value)
    assert not g.loaded


def test_bad_model_directory(tmp_path: Path) -> None:
    with pytest.raises(GeneratorError, match="does not exist"):
        AudioLDMGenerator(model=str(tmp_path / "missing")).setup()
    with pytest.raises(GeneratorError, match=r"no model_index\.json"):
        AudioLDMGenerator(model=str(tmp_path)).setup()


def test_loaded_once_reused_and_unloaded(tiny_dir: Path, tmp_path: Path) -> None:
    g = AudioLDMGenerator(model=str(tiny_dir), device="cpu")
    assert not g.loaded
    _clip(g, tmp_path, seed=1, duration=0.5)
    first = g.pipeline.pipe
    _clip(g, tmp_path, seed=2, duration=0.5)
    assert g.pipeline.pipe is first
    g.unload()
    assert not g.loaded and g._pipeline is None


def test_tiny_random_builds_an_untrained_pipeline_offline(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MODAVERSE_CACHE", raising=False)  # the project cache dir is then the user cache dir,
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))  # which platformdirs reads from here
    g = AudioLDMGenerator(model="tiny-random", device="cpu")
    (art,) = g.generate(GenerationRequest(PROMPT, OutputDir(tmp_path), {"steps": 1, "duration": 0.5, "seed": 0}))
    assert art.path.is_file() and art.metadata["untrained"] is True and art.metadata["model"] == "tiny-random"
    assert (tmp_path / "cache" / "modaverse" / "tiny-pipelines" / f"{g.tiny_kind}-v1" / "model_index.json").is_file()
    g.unload()


def test_entry_point_is_declared_and_registers_the_generator() -> None:
    declared = tomllib.loads((PLUGIN_DIR / "pyproject.toml").read_text())["project"]["entry-points"]
    assert declared["modaverse_agent"] == {"audioldm": "modaverse_audioldm"}
    eps = [ep for ep in importlib.metadata.entry_points(group="modaverse_agent") if ep.name == "audioldm"]
    assert eps, "not installed: pip install -e plugins/modaverse-audioldm"
    assert eps[0].value == "modaverse_audioldm" and eps[0].dist.name == "modaverse-audioldm"
    found: list[Any] = []
    eps[0].load().register_generators(register=found.append)
    assert [type(g) for g in found] == [AudioLDMGenerator]
    assert (found[0].task, found[0].modality, found[0].loaded) == ("text-to-audio", "audio", False)
    assert modaverse_audioldm.register_generators is eps[0].load().register_generators


def test_listing_the_plugin_imports_no_model_stack() -> None:
    code = (
        "import sys, modaverse_audioldm as m; found = []; m.register_generators(register=found.append); "
        "found[0].describe(); heavy = {'torch', 'diffusers', 'transformers'} & set(sys.modules); "
        "assert not heavy, heavy"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


def test_a_cancelled_invocation_stops_at_the_next_step(gen: AudioLDMGenerator, tmp_path: Path) -> None:
    seen: list[tuple[int, int]] = []
    req = GenerationRequest(PROMPT, OutputDir(tmp_path), {"steps": 20, "duration": 0.5, "seed": 0})

    def progress(done: int, total: int) -> None:
        seen.append((done, total))
        req.cancel.set()  # what the agent does when the invocation times out

    req.progress = progress
    with pytest.raises(GenerationCancelled):
        gen.generate(req)
    assert seen == [(1, 20)] and list(tmp_path.iterdir()) == []
