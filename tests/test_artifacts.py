"""Artifacts: atomic writes inside the output dir, unique names, never overwriting, real file formats."""

from __future__ import annotations

import json
import math
import threading
import wave
from pathlib import Path
from typing import Any

import av
import numpy as np
import pytest
from PIL import Image

from modaverse_agent.artifacts import Artifact, OutputDir, clean_text, json_safe, manifest_record, safe_stem
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
    data = json.loads(path.read_text())
    assert data["artifacts"][0]["generator"] == "g" and data["artifacts"][0]["seed"] == 3
    assert data["text"] == "t"


# -- always-writable records, per-invocation output, containment (issue 17) ------------------------------


def test_clean_text_replaces_lone_surrogates_and_keeps_pairs() -> None:
    assert clean_text("a\ud800b\udfff") == "a\ufffdb\ufffd"
    assert clean_text("\ud83d\ude00") == "\U0001f600"  # a well-formed pair is the character it encodes
    assert clean_text("plain é") == "plain é"


def test_json_safe_gives_strict_json() -> None:
    record = {"g": math.nan, "hi": math.inf, "lo": -math.inf, "p": Path("/x"), "t": (1, "\ud800"), 3: {"ok": 1.5}}
    safe = json_safe(record)
    assert safe == {"g": "NaN", "hi": "Infinity", "lo": "-Infinity", "p": "/x", "t": [1, "\ufffd"], "3": {"ok": 1.5}}
    json.dumps(safe, allow_nan=False, ensure_ascii=False).encode("utf-8")
    deep: Any = []
    for _ in range(200):
        deep = [deep]
    json.dumps(json_safe(deep))  # cut at 64 levels, never a RecursionError


def test_manifest_is_strict_utf8_json_whatever_the_record_holds(tmp_path: Path) -> None:
    a = Artifact("image", tmp_path / "x.png", "image/png", prompt="\ud800", metadata={"guidance": math.nan})
    path = OutputDir(tmp_path).write_manifest(manifest_record([a], text="t\udc00"))

    def refuse(name: str) -> Any:
        raise AssertionError(f"bare {name} in the manifest")

    data = json.loads(path.read_bytes().decode("utf-8"), parse_constant=refuse)
    assert data["text"] == "t\ufffd" and data["artifacts"][0]["metadata"]["guidance"] == "NaN"
    assert data["artifacts"][0]["prompt"] == "\ufffd"


def test_an_invocations_output_refuses_writes_once_cancelled_and_revoke_removes_its_files(tmp_path: Path) -> None:
    shared = OutputDir(tmp_path)
    cancel = threading.Event()
    out = shared.for_invocation(cancel)
    other = shared.for_invocation(threading.Event())
    mine = out.write_bytes("mine", ".txt", b"1")
    kept = other.write_bytes("other", ".txt", b"2")
    assert out.written == (mine,) and not out.cancelled
    assert out.revoke() == [mine] and cancel.is_set() and out.cancelled
    with pytest.raises(ArtifactError, match="cancelled"):
        out.write_bytes("late", ".txt", b"3")
    assert sorted(p.name for p in tmp_path.iterdir()) == [kept.name]  # no late file, no .partial- file
    with pytest.raises(ArtifactError, match="for_invocation"):
        shared.revoke()


def test_a_write_in_progress_when_cancelled_does_not_land(tmp_path: Path) -> None:
    cancel = threading.Event()
    out = OutputDir(tmp_path).for_invocation(cancel)

    def slow(p: Path) -> None:
        p.write_bytes(b"half")
        out.revoke()  # the timeout strikes while the file is being written

    with pytest.raises(ArtifactError, match="cancelled"):
        out.write("x", ".png", slow)
    assert list(tmp_path.iterdir()) == []


def test_contains_only_files_inside_the_directory(tmp_path: Path) -> None:
    out = OutputDir(tmp_path / "out")
    inside = out.write_bytes("a", ".txt", b"x")
    (out.root / "sub").mkdir()
    (out.root / "sub" / "b.txt").write_text("y")
    (out.root / "escape.txt").symlink_to("/etc/hostname")
    (out.root / "dangling.txt").symlink_to(tmp_path / "nothing")
    outside = tmp_path / "outside.txt"
    outside.write_text("z")
    assert out.contains(inside) and out.contains(str(inside)) and out.contains(out.root / "sub" / "b.txt")
    assert not out.contains(out.root / ".." / "outside.txt") and not out.contains(outside)
    assert not out.contains("/etc/passwd") and not out.contains(out.root / "escape.txt")
    assert not out.contains(out.root / "dangling.txt") and not out.contains(out.root) and not out.contains(None)
    assert not out.contains(out.root / "sub")


def test_non_finite_samples_and_frames_are_refused_not_silenced(tmp_path: Path) -> None:
    out = OutputDir(tmp_path)
    with pytest.raises(ArtifactError, match="audio samples hold 2 non-finite value"):
        out.write_audio("a", np.array([0.1, np.nan, np.inf, 0.2]), 16000)
    frames = np.full((2, 4, 4, 3), 0.5, dtype=np.float32)
    frames[1, 2, 3, 0] = np.nan
    with pytest.raises(ArtifactError, match="video frames hold 1 non-finite"):
        out.write_video("v", frames, 8)
    assert list(tmp_path.iterdir()) == []
