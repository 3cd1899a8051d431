"""A clone of the repository alone must install, run and test: nothing may read files beside it."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# Ways code has reached outside the repository: the workspace's ../shared folder, by name or by parents[n].
OUTSIDE = re.compile(r"""(\.\./shared|["']shared["']\s*/\s*["']fixtures|parents\[\d\]\.parent\s*/)""")
SOURCES = ("modaverse_agent", "training", "tests", "plugins", "benchmarks", "examples", "conftest.py")


def _python_files() -> list[Path]:
    files: list[Path] = []
    for name in SOURCES:
        path = ROOT / name
        files += [path] if path.is_file() else sorted(path.rglob("*.py"))
    return [f for f in files if ".venv" not in f.parts and f != Path(__file__).resolve()]


def test_no_code_reads_beside_the_repository() -> None:
    hits = [
        f"{f.relative_to(ROOT)}:{n}: {line.strip()}"
        for f in _python_files()
        for n, line in enumerate(f.read_text(encoding="utf-8").splitlines(), 1)
        if OUTSIDE.search(line)
    ]
    where = "\n".join(hits)
    assert not hits, f"these lines read files outside the repository (copy them under tests/fixtures/):\n{where}"


def test_the_guard_sees_the_patterns_it_must_refuse() -> None:
    for line in ('MEDIA = Path(__file__).resolve().parents[2] / "shared" / "fixtures" / "x"', 'open("../shared/a")'):
        assert OUTSIDE.search(line)
    assert not OUTSIDE.search('FIXTURES = Path(__file__).resolve().parent / "fixtures"')


def test_the_fixtures_the_tests_read_are_in_the_repository() -> None:
    media = ROOT / "tests" / "fixtures" / "imagebind" / "media"
    for name in ("coffee.jpg", "chelsea.png", "speech_16k.wav", "speech_16k.mp3", "testsrc_320x240_10fps_3s.mp4"):
        assert (media / name).stat().st_size > 1000, name
    assert (ROOT / "tests" / "fixtures" / "imagebind" / "tiny_state_dict.safetensors").is_file()
