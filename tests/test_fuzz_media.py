"""Seeded fuzz: bad media files through ``load_media`` and ``ModaVerseAgent.run``, next to one good attachment.

Each bad input (truncated, bit-flipped, spoofed header, empty, huge declared dimensions, zero-frame,
text renamed as media, broken WAV header, random bytes, special and unreadable paths, junk bytes and
base64) is loaded alone and then passed to ``agent.run`` together with a good picture that the
scripted meta-response edits with the echo generator. Must hold for every one: ``load_media`` raises
MediaError and nothing else, quickly, and its message quotes none of the file's bytes; ``agent.run``
raises nothing, keeps and uses the good picture, reports the bad input by its position (and name)
in one line, and writes nothing outside the output directory. Everything is generated here; set
``MODAVERSE_FUZZ_SEED`` to try other mutants.
"""

from __future__ import annotations

import base64
import io
import json
import os
import random
import socket
import struct
import time
import wave
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import av
import numpy as np
import pytest
from PIL import Image

from modaverse_agent.agent import ModaVerseAgent
from modaverse_agent.errors import MediaError
from modaverse_agent.media import load_media
from modaverse_agent.testing import ScriptedLLM
from modaverse_agent.zoo import Zoo

SEED = int(os.environ.get("MODAVERSE_FUZZ_SEED", "17"))
PER_FILE_S = 5.0
"""Generous bound on one load (they take milliseconds): a load that takes longer is counted as slow."""
CANARY = b"CANARY-1f7e-NEVER-ECHO"
TEXT = b"root:x:0:0:root:/root:/bin/bash\ndaemon:x:1:1:daemon:/usr/sbin:/usr/sbin/nologin\n" + CANARY + b"\n" * 2


# -- good media, made here ------------------------------------------------------------------------


def image(fmt: str, size: tuple[int, int] = (40, 30), **kwargs: object) -> bytes:
    """A noisy gradient in ``fmt`` (noise so that lossy codecs keep some entropy to corrupt)."""
    w, h = size
    rng = np.random.default_rng(0)
    pixels = (np.arange(w)[None, :, None] * 6 + np.arange(h)[:, None, None] * 3 + rng.integers(0, 40, (h, w, 3))) % 256
    buf = io.BytesIO()
    Image.fromarray(pixels.astype(np.uint8)).save(buf, fmt, **kwargs)
    return buf.getvalue()


def wav(rate: int = 8000, seconds: float = 0.25) -> bytes:
    t = np.arange(int(rate * seconds)) / rate
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes((0.3 * np.sin(2 * np.pi * 440 * t) * 32767).astype("<i2").tobytes())
    return buf.getvalue()


def encoded_audio(codec: str, fmt: str, rate: int, seconds: float = 0.25) -> bytes:
    t = np.arange(int(rate * seconds)) / rate
    buf = io.BytesIO()
    with av.open(buf, "w", format=fmt) as c:
        stream = c.add_stream(codec, rate=rate, layout="mono")
        frame = av.AudioFrame.from_ndarray(
            (0.3 * np.sin(2 * np.pi * 440 * t))[None].astype(np.float32), format="fltp", layout="mono"
        )
        frame.rate = rate
        for packet in [*stream.encode(frame), *stream.encode(None)]:
            c.mux(packet)
    return buf.getvalue()


def video(fmt: str = "mp4", n: int = 6, size: tuple[int, int] = (32, 24)) -> bytes:
    """``n`` moving frames of mpeg4 in ``fmt`` (``n=0``: a video stream that holds no frame)."""
    w, h = size
    buf = io.BytesIO()
    with av.open(buf, "w", format=fmt) as c:
        stream = c.add_stream("mpeg4", rate=10)
        stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
        c.start_encoding()  # writes the header even when no frame follows
        for i in range(n):
            frame = np.full((h, w, 3), (i * 40) % 256, np.uint8)
            frame[:, : w // 2, 1] = 200
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                c.mux(packet)
        for packet in stream.encode(None):
            c.mux(packet)
    return buf.getvalue()


def good_corpus() -> dict[str, bytes]:
    """One small valid file per supported family; the mutants below are made from these."""
    return {
        "png": image("PNG"),
        "jpg": image("JPEG", quality=90),
        "gif": image("GIF"),
        "bmp": image("BMP"),
        "tif": image("TIFF"),
        "webp": image("WEBP"),
        "wav": wav(),
        "mp3": encoded_audio("libmp3lame", "mp3", 22050),
        "flac": encoded_audio("flac", "flac", 16000),
        "ogg": encoded_audio("libopus", "ogg", 48000),
        "m4a": encoded_audio("aac", "mp4", 16000),
        "mp4": video("mp4"),
        "mkv": video("matroska"),
        "avi": video("avi"),
    }


# -- bad media ------------------------------------------------------------------------------------


@dataclass
class Case:
    """One bad input: how it is given (path, text, bytes, ...), and whether it must be refused."""

    label: str
    source: object
    must_reject: bool = True
    """False for mutants that may still be valid media (a flipped bit in pixel data, a cut after a frame)."""
    content: bytes = b""
    """The bytes behind the input, for the check that messages never quote them."""
    name: str | None = None
    """What the error must name besides the input's position: the file name of a path."""


def png_claiming(width: int, height: int) -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + chunk(b"IEND", b"")
    )


def huge_dimension_files(good: dict[str, bytes]) -> list[tuple[str, bytes, bool]]:
    """Headers that declare enormous frames over tiny data: ``(label, bytes, must_reject)``."""
    gif = bytearray(good["gif"])
    struct.pack_into("<HH", gif, 6, 65535, 65535)
    bmp = bytearray(good["bmp"])
    struct.pack_into("<ii", bmp, 18, 60000, 60000)
    jpg = bytearray(good["jpg"])
    sof = jpg.index(b"\xff\xc0")
    struct.pack_into(">HH", jpg, sof + 5, 65000, 65000)
    tif = bytearray(good["tif"])
    ifd = struct.unpack_from("<I", tif, 4)[0]
    for k in range(struct.unpack_from("<H", tif, ifd)[0]):
        entry = ifd + 2 + 12 * k
        if struct.unpack_from("<H", tif, entry)[0] in (256, 257):  # ImageWidth, ImageLength
            struct.pack_into("<HII", tif, entry + 2, 4, 1, 100_000)
    webp = bytearray(good["webp"])
    assert webp[12:16] == b"VP8 " and webp[23:26] == b"\x9d\x01\x2a", "unexpected WebP layout"
    struct.pack_into("<HH", webp, 26, 0x3FFF, 0x3FFF)
    avi = bytearray(good["avi"])
    strf = avi.index(b"strf", avi.index(b"vids"))
    struct.pack_into("<ii", avi, strf + 12, 60000, 60000)
    return [
        ("png 100000x100000", png_claiming(100_000, 100_000), True),
        ("png 10000x10000", png_claiming(10_000, 10_000), True),
        ("gif 65535x65535", bytes(gif), True),
        ("bmp 60000x60000", bytes(bmp), True),
        ("jpeg 65000x65000", bytes(jpg), True),
        ("tiff 100000x100000", bytes(tif), True),
        ("webp 16383x16383", bytes(webp), False),
        ("avi 60000x60000", bytes(avi), False),
    ]


def broken_wavs(good: bytes) -> list[tuple[str, bytes, bool]]:
    """The good WAV with one header field made wrong: ``(label, bytes, must_reject)``."""

    def patched(offset: int, fmt: str, value: int) -> bytes:
        data = bytearray(good)
        struct.pack_into(fmt, data, offset, value)
        return bytes(data)

    assert good[12:16] == b"fmt " and good[36:40] == b"data"
    no_fmt = bytearray(good)
    no_fmt[12:16] = b"junk"
    return [
        ("wav 0 channels", patched(22, "<H", 0), False),
        ("wav rate 0", patched(24, "<I", 0), False),
        ("wav 7 bits", patched(34, "<H", 7), False),
        ("wav block align 0", patched(32, "<H", 0), False),
        ("wav format tag 0x1234", patched(20, "<H", 0x1234), False),
        ("wav fmt size 0xfffffff0", patched(16, "<I", 0xFFFFFFF0), False),
        ("wav data size past the end", patched(40, "<I", 10_000_000), True),
        ("wav without fmt chunk", bytes(no_fmt), True),
        ("wav header only", good[:44], True),
    ]


_MAGICS = {
    "png": b"\x89PNG\r\n\x1a\n",
    "jpeg": b"\xff\xd8\xff\xe0",
    "gif": b"GIF89a",
    "bmp": b"BM",
    "tiff": b"II*\x00",
    "wav": b"RIFF\x24\x00\x00\x00WAVE",
    "webp": b"RIFF\x24\x00\x00\x00WEBP",
    "avi": b"RIFF\x24\x00\x00\x00AVI ",
    "mp4": b"\x00\x00\x00\x18ftypisom",
    "mp3": b"ID3\x04\x00\x00\x00\x00\x00\x00",
    "flac": b"fLaC",
    "ogg": b"OggS",
    "mkv": b"\x1aE\xdf\xa3",
    "flv": b"FLV\x01",
}


class Inputs:
    """Writes the bad inputs into ``folder`` and lists them as Cases."""

    def __init__(self, folder: Path, rng: random.Random) -> None:
        self.folder, self.rng, self.cases = folder, rng, []
        folder.mkdir(exist_ok=True)  # the socket fixture may have made it

    def add(self, label: str, data: bytes, must_reject: bool, name: str | None = None) -> None:
        """A bad input given as a file (when ``name``, or one time in two) or as bytes."""
        if name is not None or self.rng.random() < 0.5:
            path = self.folder / (name or f"{len(self.cases):03d}-{self.rng.choice(['x.png', 'x.wav', 'x.mp4'])}")
            path.write_bytes(data)
            self.cases.append(Case(label, path if self.rng.random() < 0.5 else str(path), must_reject, data, path.name))
        else:
            self.cases.append(Case(label, data, must_reject, data))

    def given(self, label: str, source: object, content: bytes = b"", name: str | None = None) -> None:
        """A bad input given as is (a special path, base64 text, ...): always refused, naming ``name``."""
        self.cases.append(Case(label, source, True, content, name))


def bad_inputs(folder: Path, rng: random.Random, good: dict[str, bytes], locked: Path) -> list[Case]:
    """>= 100 bad inputs of every kind the issue lists, from ``rng``."""
    out = Inputs(folder, rng)
    out.add("empty file", b"", True, name="empty.jpg")
    out.given("empty bytes", b"")
    for kind, data in good.items():
        out.add(f"{kind} cut to 8 bytes", data[:8], True)
        for _ in range(3):
            cut = rng.randrange(9, len(data))
            out.add(f"{kind} cut at {cut}/{len(data)}", data[:cut], False)
        for _ in range(5):
            flipped = bytearray(data)
            for _ in range(rng.randint(1, 40)):
                flipped[rng.randrange(len(flipped))] ^= 1 << rng.randrange(8)
            out.add(f"{kind} bit-flipped", bytes(flipped), False)
    for kind, magic in _MAGICS.items():
        out.add(f"{kind} magic + text", magic + TEXT * rng.randint(1, 20), True)
        out.add(f"{kind} magic + random", magic + rng.randbytes(rng.randrange(1, 3000)), False)
    for label, data, must in huge_dimension_files(good):
        out.add(label, data, must)
    for fmt in ("mp4", "matroska", "avi"):
        out.add(f"zero-frame {fmt}", video(fmt, n=0), True)
    for name in ("passwd.jpg", "notes.wav", "clip.mp4", "icon.png", "song.mp3"):
        out.add(f"text renamed {name}", TEXT * rng.randint(1, 50), True, name=name)
    for label, data, must in broken_wavs(good["wav"]):
        out.add(label, data, must)
    for _ in range(12):
        out.add("random bytes", rng.randbytes(rng.randrange(1, 5000)), False)
    out.add("zero bytes", b"\x00" * rng.randrange(1, 5000), True)
    # paths that cannot be read
    (folder / "a-directory.png").mkdir()
    os.mkfifo(folder / "fifo.wav")
    (folder / "dangling.jpg").symlink_to(folder / "gone.jpg")
    out.given("directory", folder / "a-directory.png", name="a-directory.png")
    out.given("FIFO", folder / "fifo.wav", name="fifo.wav")
    out.given("socket", folder / "socket.mp4", name="socket.mp4")
    out.given("broken symlink", str(folder / "dangling.jpg"), name="dangling.jpg")
    out.given("missing file", folder / "missing.png", name="missing.png")
    out.given("missing file:// URL", (folder / "missing.png").as_uri(), name="missing.png")
    out.given("file without read permission", locked, name=locked.name)
    out.given("path with NUL", str(folder / "nul\x00.png"))
    out.given("unknown home", "~modaverse-no-such-user-9c1/cat.png", name="cat.png")
    out.given("remote URL", "https://example.invalid/cat.png", name="cat.png")
    out.given("not a source at all", 12345)
    if Path("/proc/self/mem").exists():
        out.given("/proc/self/mem (EIO)", "/proc/self/mem", name="/proc/self/mem")
    if Path("/dev/null").exists():
        out.given("/dev/null", Path("/dev/null"), name="/dev/null")
    # junk given as bytes-like objects and as base64 text
    junk = TEXT * 8 + rng.randbytes(300)
    out.given("bytearray of junk", bytearray(junk), junk)
    out.given("memoryview of junk", memoryview(junk), junk)
    out.given("long base64 of junk", base64.b64encode(junk).decode(), junk)
    out.given("long urlsafe base64 of junk", base64.urlsafe_b64encode(junk).decode(), junk)
    out.given("short base64 of junk", base64.b64encode(TEXT[:30]).decode(), TEXT[:30])
    out.given("base64 of spoofed PNG", base64.b64encode(_MAGICS["png"] + junk).decode(), _MAGICS["png"] + junk)
    out.given("data URL of junk", "data:image/png;base64," + base64.b64encode(junk).decode(), junk)
    out.given("data URL, bad base64", "data:image/png;base64,@@not base64@@")
    out.given("data URL without comma", "data:image/png;base64")
    out.given("percent data URL of text", "data:text/plain,root%3Ax%3A0%3A0%3A" + CANARY.decode(), TEXT)
    return out.cases


# -- the campaign ---------------------------------------------------------------------------------


@dataclass
class Tally:
    """What the campaign found; every list but ``accepted`` must end empty."""

    tried: int = 0
    rejected: int = 0
    accepted: list[str] = field(default_factory=list)
    crashes: list[str] = field(default_factory=list)
    escapes: list[str] = field(default_factory=list)
    slow: list[str] = field(default_factory=list)
    lost: list[str] = field(default_factory=list)
    unnamed: list[str] = field(default_factory=list)
    quoted: list[str] = field(default_factory=list)
    wrong: list[str] = field(default_factory=list)
    max_load_s: float = 0.0

    def problems(self) -> dict[str, list[str]]:
        """The non-empty failure lists."""
        lists = ("crashes", "escapes", "slow", "lost", "unnamed", "quoted", "wrong")
        return {k: getattr(self, k) for k in lists if getattr(self, k)}


def quotes_content(message: str, content: bytes) -> bool:
    """True when ``message`` holds the canary or the repr of the file's first bytes (the old leak)."""
    return CANARY.decode() in message or (len(content) >= 4 and repr(content[:12]) in message)


@pytest.fixture
def unix_socket(tmp_path: Path) -> Iterator[Path]:
    """A listening-less Unix socket file among the inputs (closed after the test)."""
    (tmp_path / "in").mkdir(exist_ok=True)
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(tmp_path / "in" / "socket.mp4"))
    yield tmp_path / "in" / "socket.mp4"
    sock.close()


@pytest.fixture
def locked(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A real PNG whose open fails with EACCES (tests run as root, who may read anything)."""
    path = tmp_path / "locked.png"
    path.write_bytes(image("PNG"))
    real_open = os.open

    def open_(p: object, *args: object, **kwargs: object) -> int:
        if str(p) == str(path):
            raise PermissionError(13, "Permission denied", str(p))
        return real_open(p, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(os, "open", open_)
    return path


def snapshot(root: Path, skip: Path) -> dict[str, int]:
    """Every file and folder under ``root`` but ``skip``, with its size."""
    found = {}
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if Path(dirpath, d) != skip]
        for name in dirnames + filenames:
            p = Path(dirpath, name)
            found[str(p)] = p.lstat().st_size if not p.is_dir() else -1
    return found


@pytest.mark.filterwarnings("ignore::UserWarning:PIL.TiffImagePlugin")  # Pillow on hostile TIFFs
def test_bad_media_never_takes_the_good_attachment_down(
    echo_zoo: Zoo, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, unix_socket: Path, locked: Path
) -> None:
    rng = random.Random(SEED)
    good = good_corpus()
    cases = bad_inputs(tmp_path / "in", rng, good, locked)
    assert len(cases) >= 100
    picture = tmp_path / "good.png"
    picture.write_bytes(image("PNG", size=(16, 12)))
    out_dir = tmp_path / "out"
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)  # a file written to a relative path would land here
    before = snapshot(tmp_path, out_dir)
    llm = ScriptedLLM()
    agent = ModaVerseAgent(llm, echo_zoo, output_dir=out_dir, timeout=30, seed=0)
    tally = Tally()
    t_start = time.perf_counter()
    for case in cases:
        run_case(case, rng, agent, llm, picture, out_dir, tally)
    elapsed = time.perf_counter() - t_start
    print(
        f"\nfuzz-media seed={SEED}: tried={tally.tried} rejected={tally.rejected} accepted={len(tally.accepted)} "
        f"crashes={len(tally.crashes)} escapes={len(tally.escapes)} slow={len(tally.slow)} lost={len(tally.lost)} "
        f"unnamed={len(tally.unnamed)} quoted={len(tally.quoted)} wrong={len(tally.wrong)} "
        f"max_load={tally.max_load_s:.3f}s in {elapsed:.1f}s"
    )
    assert tally.tried >= 100 and tally.rejected >= 100
    assert not tally.problems(), json.dumps(tally.problems(), indent=1)[:4000]
    assert snapshot(tmp_path, out_dir) == before, "files appeared or changed outside the output directory"
    assert not list(cwd.iterdir())


def run_case(
    case: Case, rng: random.Random, agent: ModaVerseAgent, llm: ScriptedLLM, picture: Path, out_dir: Path, tally: Tally
) -> None:
    """Load ``case`` alone, then run the agent on it and the good picture; record what went wrong."""
    tally.tried += 1
    label = f"{case.label} ({type(case.source).__name__})"
    t0 = time.perf_counter()
    loaded = None
    try:
        loaded = load_media(case.source)  # type: ignore[arg-type]
    except MediaError as e:
        tally.rejected += 1
        message = str(e)
        if quotes_content(message, case.content):
            tally.quoted.append(f"{label}: {message[:200]}")
        if "\n" in message or len(message) > 600:
            tally.wrong.append(f"{label}: not one short line: {message[:200]!r}")
    except Exception as e:
        tally.escapes.append(f"{label}: {type(e).__name__}: {e}"[:300])
    took = time.perf_counter() - t0
    tally.max_load_s = max(tally.max_load_s, took)
    if took > PER_FILE_S:
        tally.slow.append(f"{label}: {took:.1f} s")
    if loaded is not None:
        tally.accepted.append(label)
        if case.must_reject:
            tally.wrong.append(f"{label}: was accepted as {loaded.mime_type}")
    bad_first = rng.random() < 0.5
    sources = [case.source, picture] if bad_first else [picture, case.source]
    # the good picture's id: image_2 when an image that loads comes before it
    good_id = "image_2" if bad_first and loaded is not None and loaded.modality == "image" else "image_1"
    llm.enqueue(
        {"text": "Edited.", "invocations": [{"task": "image-editing", "prompt": "invert", "inputs": [good_id]}]}
    )
    t0 = time.perf_counter()
    try:
        response = agent.run("invert the photo", sources)  # type: ignore[arg-type]
    except Exception as e:
        tally.crashes.append(f"{label}: {type(e).__name__}: {e}"[:300])
        return
    took = time.perf_counter() - t0
    if took > 2 * PER_FILE_S:  # two loads and one tiny edit
        tally.slow.append(f"{label}: agent.run took {took:.1f} s")
    if others := [str(e) for e in response.errors if e.stage != "media"]:
        tally.wrong.append(f"{label}: errors besides the bad input: {others}")
    edited = [a for a in response.artifacts if a.task == "image-editing"]
    kept = [i for i, item in response.media if item.path == picture]
    inside = all(a.path.resolve().is_relative_to(out_dir.resolve()) and a.path.is_file() for a in response.artifacts)
    if kept != [good_id] or len(edited) != 1 or not inside:
        tally.lost.append(f"{label}: media={[i for i, _ in response.media]} errors={[str(e) for e in response.errors]}")
    media_errors = [e.message for e in response.errors if e.stage == "media"]
    if loaded is None:
        position = 1 if bad_first else 2
        if len(media_errors) != 1 or f"input {position}" not in media_errors[0]:
            tally.unnamed.append(f"{label}: {media_errors}")
        elif case.name and case.name not in media_errors[0]:
            tally.unnamed.append(f"{label}: {case.name!r} not in {media_errors[0]!r}")
    elif media_errors:
        tally.wrong.append(f"{label}: loaded alone but not in the run: {media_errors}")
    for message in media_errors:
        if quotes_content(message, case.content):
            tally.quoted.append(f"{label}: {message[:200]}")
