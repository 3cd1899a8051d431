"""The piper-tts generator with the real bundled voice (en_US-joe-medium): real speech, on CPU, offline."""

from __future__ import annotations

import json
import math
import shutil
import subprocess
import sys
import threading
import wave
from importlib import metadata
from pathlib import Path

import numpy as np
import pluggy
import pytest
from modaverse_piper_tts import PiperTTS, speech
from modaverse_piper_tts.voice import default_voice_path, read_config, resolve_speaker, resolve_voice

from modaverse_agent import GenerationRequest, GeneratorError, OutputDir, hookspecs
from modaverse_agent.generators import GenerationCancelled

TEXT = "The quick brown fox jumps over the lazy dog near the quiet river."  # 12 words


@pytest.fixture(scope="module")
def tts() -> PiperTTS:
    """One loaded generator shared by the module (loading the voice takes about half a second)."""
    gen = PiperTTS(threads=1)
    gen.setup()
    return gen


def speak(gen: PiperTTS, out: Path, text: str = TEXT, **kw: object) -> tuple[np.ndarray, int, dict]:
    """Generate through the public path; return the WAV's int16 samples, its rate and the artifact."""
    [artifact] = gen.generate(GenerationRequest(text, OutputDir(out), **kw))  # type: ignore[arg-type]
    with wave.open(str(artifact.path), "rb") as w:
        assert (w.getnchannels(), w.getsampwidth()) == (1, 2)
        samples = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2")
        return samples, w.getframerate(), artifact.to_dict()


def test_speaks_a_valid_speech_length_wav(tts: PiperTTS, tmp_path: Path) -> None:
    samples, rate, art = speak(tts, tmp_path)
    assert rate == 22050 == art["metadata"]["sample_rate"]
    seconds = len(samples) / rate
    assert 12 * 0.2 < seconds < 12 * 1.0, seconds  # about 0.3-0.5 s a word for this voice
    assert art["metadata"]["duration_s"] == pytest.approx(seconds, abs=1e-3)
    rms = float(np.sqrt(np.mean((samples / 32768.0) ** 2)))
    assert rms > 0.05, rms  # speech normalized to full scale, not silence or a click
    quiet = np.mean(np.abs(samples) < 0.02 * 32768)
    assert 0.05 < quiet < 0.8, quiet  # has pauses between sounds, unlike noise or a tone
    assert Path(art["path"]).parent == tmp_path.resolve() and art["path"].endswith(".wav")
    assert art["mime_type"] == "audio/wav"
    assert (art["task"], art["generator"], art["seed"], art["prompt"]) == ("text-to-speech", "piper-tts", None, TEXT)
    assert art["metadata"]["voice"] == "en_US-joe-medium" and art["metadata"]["sentences"] == 1


def test_same_seed_same_samples_other_seed_differs(tts: PiperTTS, tmp_path: Path) -> None:
    a, _, art = speak(tts, tmp_path, "Hello there.", seed=7)
    b, _, _ = speak(tts, tmp_path, "Hello there.", seed=7)
    c, _, _ = speak(tts, tmp_path, "Hello there.", seed=8)
    assert art["seed"] == 7 and np.array_equal(a, b)
    assert len(a) != len(c) or not np.array_equal(a, c)


def test_zero_noise_is_deterministic_without_a_seed(tts: PiperTTS, tmp_path: Path) -> None:
    args = {"noise_scale": 0.0, "noise_w_scale": 0.0}
    a, _, _ = speak(tts, tmp_path, "Hello there.", args=args)
    b, _, _ = speak(tts, tmp_path, "Hello there.", args=args)
    assert np.array_equal(a, b)


def test_sentence_silence_length_scale_and_progress(tts: PiperTTS, tmp_path: Path) -> None:
    calls: list[tuple[int, int]] = []
    text, still = "One step. Two leaps.", {"noise_scale": 0.0, "noise_w_scale": 0.0}
    base, rate, art = speak(tts, tmp_path, text, args=still, progress=lambda d, n: calls.append((d, n)))
    assert calls == [(1, 2), (2, 2)] and art["metadata"]["sentences"] == 2
    gap, _, _ = speak(tts, tmp_path, text, args={**still, "sentence_silence": 0.5})
    silence = np.zeros(round(0.5 * rate), dtype=base.dtype)
    assert len(gap) == len(base) + len(silence)
    first_change = int(np.flatnonzero(gap[: len(base)] != base)[0])
    assert np.array_equal(gap, np.concatenate([base[:first_change], silence, base[first_change:]]))
    slow, _, _ = speak(tts, tmp_path, text, args={**still, "length_scale": 2.0})
    assert len(slow) > 1.6 * len(base)


def test_voice_is_loaded_once_reused_and_unloaded(tts: PiperTTS, tmp_path: Path) -> None:
    gen = tts
    speak(gen, tmp_path, "Hi.")
    session = gen._voice.session  # type: ignore[union-attr]
    speak(gen, tmp_path, "Hi again.")
    assert gen.loaded and gen._voice.session is session  # type: ignore[union-attr]
    gen.unload()
    assert not gen.loaded and gen._voice is None
    samples, _, _ = speak(gen, tmp_path, "Back.")
    assert gen.loaded and len(samples) > 0


def test_any_voice_by_path(tmp_path: Path) -> None:
    model = default_voice_path()
    (tmp_path / "v").mkdir()
    voice = tmp_path / "v" / "my-voice.onnx"
    voice.symlink_to(model)
    shutil.copy(model.with_name(model.name + ".json"), tmp_path / "v" / "cfg.json")
    gen = PiperTTS(voice=str(voice), config=str(tmp_path / "v" / "cfg.json"), threads=1)
    samples, rate, art = speak(gen, tmp_path, "Hi.")
    assert art["metadata"]["voice"] == "my-voice" and rate == 22050 and len(samples) > 0


def test_missing_voice_says_how_to_fix(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere.onnx"
    with pytest.raises(GeneratorError, match=r"nowhere\.onnx.*not found.*option `voice`"):
        PiperTTS(voice=str(missing)).setup()
    missing.write_bytes(b"x")
    with pytest.raises(GeneratorError, match=r"nowhere\.onnx\.json.*not found.*`config`"):
        PiperTTS(voice=str(missing)).setup()


def test_corrupt_voice_or_config_says_how_to_fix(tmp_path: Path) -> None:
    model = default_voice_path()
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"this is not an onnx model")
    shutil.copy(model.with_name(model.name + ".json"), tmp_path / "bad.onnx.json")
    gen = PiperTTS(voice=str(bad))
    with pytest.raises(GeneratorError, match=r"bad\.onnx.*could not be loaded.*not a valid piper \.onnx voice"):
        gen.setup()
    assert not gen.loaded
    (tmp_path / "bad.onnx.json").write_text(json.dumps({"audio": {}}))
    with pytest.raises(GeneratorError, match=r"bad\.onnx\.json.*not a valid piper voice config"):
        gen.setup()


@pytest.mark.parametrize(
    ("prompt", "args", "message"),
    [
        ("", {}, "empty or only whitespace"),
        ("  \n\t ", {}, "empty or only whitespace"),
        ("...", {}, "nothing speakable"),
        ("Hi.", {"length_scale": 0}, r"length_scale.*0\.25"),
        ("Hi.", {"noise_scale": "loud"}, r"noise_scale.*not of type 'number'"),
        ("Hi.", {"sentence_silence": 60}, r"sentence_silence"),
        ("Hi.", {"speed": 2}, r"unexpected field.*speed"),
        ("Hi.", {"speaker_id": 2}, r"`speaker_id`.*out of range.*single speaker"),
        ("Hi.", {"noise_scale": math.nan}, r"noise_scale is nan, not a finite number"),
        ("Hi.", {"length_scale": math.inf}, r"length_scale is inf, not a finite number"),
    ],
)
def test_bad_prompt_or_args_are_clear_errors(
    tts: PiperTTS, tmp_path: Path, prompt: str, args: dict, message: str
) -> None:
    with pytest.raises(GeneratorError, match=message):
        tts.generate(GenerationRequest(prompt, OutputDir(tmp_path), args=args))
    assert not list(tmp_path.iterdir())  # nothing half-written


class _FakeVoice:
    """Stands in for a loaded PiperVoice: two sentences, each turned into ``audio``."""

    def __init__(self, audio: np.ndarray) -> None:
        self.audio = audio
        self.calls = 0
        self.config = type("Config", (), {"sample_rate": 16000})()

    def phonemize(self, text: str) -> list[list[str]]:
        return [["h", "i"], ["y", "o"]]

    def phonemes_to_ids(self, phonemes: list[str]) -> list[int]:
        return [1, 2]

    def phoneme_ids_to_audio(self, ids: list[int], config: object) -> np.ndarray:
        self.calls += 1
        return self.audio


def test_non_finite_model_output_is_an_error_not_silence() -> None:
    with pytest.raises(GeneratorError, match=r"non-finite samples .* sentence 1 of 2"):
        speech.synthesize(_FakeVoice(np.array([0.1, np.nan], np.float32)), "Hi. Yo.", None)  # type: ignore[arg-type]


def test_synthesis_stops_between_sentences_once_cancelled() -> None:
    cancel = threading.Event()
    voice = _FakeVoice(np.array([0.1, -0.2], np.float32))
    with pytest.raises(GenerationCancelled, match="cancelled after 1 of 2 sentences"):
        speech.synthesize(voice, "Hi. Yo.", None, progress=lambda done, total: cancel.set(), cancel=cancel)  # type: ignore[arg-type]
    assert voice.calls == 1


def test_text_over_the_limit_is_refused(tmp_path: Path) -> None:
    gen = PiperTTS(max_chars=10)
    with pytest.raises(GeneratorError, match=r"11 characters, over the limit of 10.*`max_chars`"):
        gen.generate(GenerationRequest("Hello world", OutputDir(tmp_path)))
    assert not gen.loaded  # refused before loading anything


@pytest.mark.parametrize("options", [{"device": "tpu"}, {"threads": 0}, {"voice": ""}, {"colour": "blue"}])
def test_bad_options_are_clear_errors(options: dict) -> None:
    with pytest.raises(GeneratorError, match="options of generator 'piper-tts'"):
        PiperTTS(**options)


def test_speaker_option_resolution() -> None:
    config = read_config(resolve_voice())
    assert resolve_speaker(config, None) is None and resolve_speaker(config, 0) == 0
    with pytest.raises(GeneratorError, match=r"no speaker 'alice'"):
        resolve_speaker(config, "alice")
    config.num_speakers, config.speaker_id_map = 3, {"alice": 2}
    assert resolve_speaker(config, "alice") == 2 and resolve_speaker(config, "1") == 1
    with pytest.raises(GeneratorError, match=r"use 0 to 2"):
        resolve_speaker(config, 3)


def test_entry_point_is_declared() -> None:
    eps = metadata.entry_points(group="modaverse_agent")
    [ep] = [ep for ep in eps if ep.name == "piper-tts"]
    assert ep.value == "modaverse_piper_tts" and ep.dist is not None and ep.dist.name == "modaverse-piper-tts"
    assert ep.load() is sys.modules["modaverse_piper_tts"]


def test_register_generators_hook_registers_an_unloaded_generator() -> None:
    import modaverse_piper_tts

    pm = pluggy.PluginManager("modaverse_agent")
    pm.add_hookspecs(hookspecs)
    pm.register(modaverse_piper_tts, name="piper-tts")
    found: list[object] = []
    pm.hook.register_generators(register=found.append)
    [gen] = found
    assert isinstance(gen, PiperTTS) and (gen.name, gen.task, gen.modality) == ("piper-tts", "text-to-speech", "audio")
    assert not gen.loaded


def test_import_is_light() -> None:
    code = "import sys, modaverse_piper_tts; print(sorted({'piper', 'onnxruntime'} & set(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
