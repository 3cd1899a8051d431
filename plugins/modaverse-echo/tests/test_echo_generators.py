"""The echo plugin: deterministic real files for every task, through its public generators."""

from __future__ import annotations

import io
import math
import wave
from importlib import metadata
from pathlib import Path

import av
import modaverse_echo
import numpy as np
import pytest
from PIL import Image

from modaverse_agent import GenerationRequest, GeneratorError, OutputDir
from modaverse_agent.generators import GenerationCancelled
from modaverse_agent.media import load_media


def request(tmp_path: Path, prompt: str = "a red kite", **kw: object) -> GenerationRequest:
    return GenerationRequest(prompt, OutputDir(tmp_path), **kw)  # type: ignore[arg-type]


def test_entry_point_is_declared() -> None:
    eps = {ep.name: ep.value for ep in metadata.entry_points(group="modaverse_agent")}
    assert eps["echo"] == "modaverse_echo"


def test_hook_registers_one_generator_per_task() -> None:
    found: list = []
    modaverse_echo.register_generators(found.append)
    assert sorted(g.task for g in found) == [
        "image-editing",
        "text-to-audio",
        "text-to-image",
        "text-to-speech",
        "text-to-video",
    ]


def test_image_is_deterministic_per_prompt_and_seed(tmp_path: Path) -> None:
    g = modaverse_echo.EchoImage()
    a = g.generate(request(tmp_path, seed=1, args={"width": 20, "height": 10}))[0]
    b = g.generate(request(tmp_path, seed=1, args={"width": 20, "height": 10}))[0]
    c = g.generate(request(tmp_path, seed=2, args={"width": 20, "height": 10}))[0]
    pa, pb, pc = (np.asarray(Image.open(x.path)) for x in (a, b, c))
    assert pa.shape == (10, 20, 3) and (pa == pb).all() and not (pa == pc).all()
    assert a.path != b.path  # never overwritten


def test_audio_and_speech_lengths(tmp_path: Path) -> None:
    a = modaverse_echo.EchoAudio().generate(request(tmp_path, args={"duration": 0.5}, seed=0))[0]
    s = modaverse_echo.EchoSpeech().generate(request(tmp_path, prompt="one two three", seed=0))[0]
    with wave.open(str(a.path)) as w:
        assert w.getnframes() == 8000
    with wave.open(str(s.path)) as w:
        assert w.getnframes() == 3 * (2400 + 800)


def test_video_frames(tmp_path: Path) -> None:
    v = modaverse_echo.EchoVideo().generate(request(tmp_path, args={"frames": 6, "fps": 3}, seed=0))[0]
    with av.open(str(v.path)) as c:
        assert len(list(c.decode(video=0))) == 6
    assert v.mime_type == "video/mp4"


def test_edit_inverts_the_input(tmp_path: Path) -> None:
    buf = io.BytesIO()
    Image.new("RGB", (8, 6), (250, 250, 250)).save(buf, format="PNG")
    item = load_media(buf.getvalue())
    out = modaverse_echo.EchoEdit().generate(request(tmp_path, inputs=[item], seed=0))[0]
    assert np.asarray(Image.open(out.path)).mean() < 100
    with pytest.raises(GeneratorError, match="needs one input image"):
        modaverse_echo.EchoEdit().generate(request(tmp_path, seed=0))


def test_non_finite_arguments_name_the_argument(tmp_path: Path) -> None:
    with pytest.raises(GeneratorError, match="args of generator 'echo-audio': duration is nan, not a finite number"):
        modaverse_echo.EchoAudio().generate(request(tmp_path, args={"duration": math.nan}))
    assert list(tmp_path.iterdir()) == []


def test_video_stops_between_frames_once_cancelled(tmp_path: Path) -> None:
    req = request(tmp_path, args={"frames": 64})
    req.cancel.set()
    with pytest.raises(GenerationCancelled):
        modaverse_echo.EchoVideo().run(req)  # run() itself checks, not only generate()
    assert list(tmp_path.iterdir()) == []


def test_a_seed_out_of_range_is_refused_naming_it(tmp_path: Path) -> None:
    with pytest.raises(GeneratorError, match="args of generator 'echo-image': seed"):
        modaverse_echo.EchoImage().generate(request(tmp_path, args={"seed": 2**70}))
