"""Artifacts: atomic writes inside the output dir, unique names, never overwriting, real file formats."""

from __future__ import annotations

import wave
from pathlib import Path

import av
import numpy as np
import pytest
from PIL import Image

from modaverse_agent.artifacts import Artifact, OutputDir, manifest_record, safe_stem
from modaverse_agent.errors import ArtifactError


def test_png_wav_mp4_writers_make_real_files(tmp_path: Path) -> None:
    out = OutputDir(tmp_path)
    png = out.write_image("pic", np.full((10, 12, 3), 7, np.uint8))
    assert Image.open(png).size == (12, 10)
    wav = out.write_audio("snd", np.sin(np.linspace(0, 100, 8000)), 16000)
    with wave.open(str(wav)) as w:
        assert (w.getframerate(), w.getnframes(), w.getnchannels()) == (16000, 8000, 1)
    mp4 = out.write_video("vid", np.zeros((5, 15, 17, 3), np.uint8), fps=5)
    with av.open(str(mp4)) as c:
        frames = list(c.decode(video=0))
    assert len(frames) == 5 and (frames[0].width, frames[0].height) == (18, 16)  # odd sizes padded to even


def test_names_are_unique_and_nothing_is_overwritten(tmp_path: Path) -> None:
    out = OutputDir(tmp_path)
    paths = [out.write_bytes("same", ".txt", str(i).encode()) for i in range(3)]
    assert [p.name for p in paths] == ["same.txt", "same-1.txt", "same-2.txt"]
    assert [p.read_text() for p in paths] == ["0", "1", "2"]


def test_no_partial_file_is_left_when_the_writer_fails(tmp_path: Path) -> None:
    out = OutputDir(tmp_path)

    def broken(p: Path) -> None:
        p.write_bytes(b"half")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        out.write("x", ".png", broken)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("name", ["../../etc/passwd", "/etc/passwd", "..", "a/../../b", "..\\..\\win", ""])
def test_names_cannot_escape_the_output_dir(tmp_path: Path, name: str) -> None:
    out = OutputDir(tmp_path / "out")
    path = out.write_bytes(name, ".txt", b"x")
    assert path.parent == (tmp_path / "out").resolve()
    assert safe_stem(name) and "/" not in safe_stem(name)


def test_bad_suffix_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ArtifactError, match="suffix"):
        OutputDir(tmp_path).write_bytes("x", "/../.png", b"")


UNWRITABLE = "/proc/modaverse-outputs"  # not creatable even by root


def test_unwritable_output_dir_is_a_clear_error() -> None:
    with pytest.raises(ArtifactError, match="--output-dir"):
        OutputDir(UNWRITABLE)


def test_output_dir_that_is_a_file_is_a_clear_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(ArtifactError, match="--output-dir"):
        OutputDir(blocker / "sub")


def test_bad_arrays_are_refused(tmp_path: Path) -> None:
    out = OutputDir(tmp_path)
    with pytest.raises(ArtifactError, match="audio"):
        out.write_audio("a", np.zeros((2, 2, 2)), 16000)
    with pytest.raises(ArtifactError, match="video"):
        out.write_video("v", np.zeros((4, 4, 3)), 8)


def test_manifest_records_what_made_each_file(tmp_path: Path) -> None:
    a = Artifact("image", tmp_path / "x.png", "image/png", task="text-to-image", generator="g", prompt="p", seed=3)
    path = OutputDir(tmp_path).write_manifest(manifest_record([a], text="t"))
    import json

    data = json.loads(path.read_text())
    assert data["artifacts"][0]["generator"] == "g" and data["artifacts"][0]["seed"] == 3
    assert data["text"] == "t"
