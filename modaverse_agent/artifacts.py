"""Artifacts: the files a response produces, written atomically and only inside an output directory."""

from __future__ import annotations

import json
import math
import os
import re
import tempfile
import threading
import time
import uuid
import wave
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .errors import ArtifactError

_MIME = {".png": "image/png", ".wav": "audio/wav", ".mp4": "video/mp4", ".txt": "text/plain"}
_SAFE = re.compile(r"[^A-Za-z0-9._-]+")
_MAX_DEPTH = 64


@dataclass
class Artifact:
    """One produced file and what made it."""

    modality: str
    path: Path
    mime_type: str
    task: str = ""
    generator: str = ""
    prompt: str = ""
    seed: int | None = None
    timings: dict[str, float] = field(default_factory=dict)
    metadata: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (path as string; see :func:`json_safe`)."""
        d = asdict(self)
        d["path"] = str(self.path)
        return json_safe(d)


def clean_text(text: str) -> str:
    """``text`` with every lone surrogate (``"\\ud800"``) replaced by U+FFFD, so it can be written as UTF-8.

    A well-formed surrogate pair (``"\\ud83d\\ude00"``) becomes the character it encodes.
    """
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        return text.encode("utf-16-le", "surrogatepass").decode("utf-16-le", "replace")


def clean_strings(value: Any, _depth: int = 0) -> Any:
    """``value`` with :func:`clean_text` applied to every string in it (dict keys too); numbers are kept."""
    if isinstance(value, str):
        return clean_text(value)
    if _depth > _MAX_DEPTH:
        return value
    if isinstance(value, dict):
        return {clean_strings(k, _depth + 1): clean_strings(v, _depth + 1) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(clean_strings(v, _depth + 1) for v in value)
    return value


def json_safe(value: Any, _depth: int = 0) -> Any:
    """``value`` as plain JSON data that ``json.dumps(allow_nan=False)`` accepts and UTF-8 can hold.

    Lone surrogates become U+FFFD, non-finite floats the strings ``"NaN"``, ``"Infinity"`` and
    ``"-Infinity"``, paths and other objects their ``str``, tuples lists; nesting deeper than 64 levels
    is cut to ``"<nested too deep>"``.
    """
    if value is None or isinstance(value, bool | int):
        return value
    if isinstance(value, float):
        if math.isfinite(value):
            return value
        return "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")
    if isinstance(value, str):
        return clean_text(value)
    if _depth > _MAX_DEPTH:
        return "<nested too deep>"
    if isinstance(value, dict):
        return {clean_text(str(k)): json_safe(v, _depth + 1) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [json_safe(v, _depth + 1) for v in value]
    return clean_text(str(value))


def safe_stem(name: str, default: str = "output") -> str:
    """Reduce ``name`` to a file-name stem that cannot leave a directory (no separators, no dots first)."""
    stem = _SAFE.sub("-", os.path.basename(name.replace("\\", "/"))).strip(".-")[:60]
    return stem or default


class OutputDir:
    """A directory that receives files atomically, under unique names, never overwriting.

    An OutputDir made with a ``cancel`` event (see :meth:`for_invocation`) serves one invocation: once
    the event is set it refuses to write, and :meth:`revoke` removes every file it wrote.
    """

    def __init__(self, root: str | Path, *, cancel: threading.Event | None = None) -> None:
        self._cancel = cancel
        self._written: list[Path] = []
        self._guard = threading.Lock()
        self.root = Path(root).expanduser().resolve()
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise ArtifactError(
                f"cannot create output directory {self.root}: {e.strerror}; choose another with --output-dir"
            ) from e
        if not os.access(self.root, os.W_OK | os.X_OK):
            raise ArtifactError(f"output directory {self.root} is not writable; choose another with --output-dir")

    def for_invocation(self, cancel: threading.Event) -> OutputDir:
        """A view of this directory for one invocation, closed for writing once ``cancel`` is set."""
        return OutputDir(self.root, cancel=cancel)

    @property
    def written(self) -> tuple[Path, ...]:
        """The files written through this object so far."""
        with self._guard:
            return tuple(self._written)

    @property
    def cancelled(self) -> bool:
        """True once this invocation's cancel event is set: every write is refused."""
        return self._cancel is not None and self._cancel.is_set()

    def revoke(self) -> list[Path]:
        """Cancel the invocation and delete every file it wrote; returns them. No write lands after this."""
        if self._cancel is None:
            raise ArtifactError("revoke() needs an OutputDir made by for_invocation()")
        with self._guard:  # waits for a publish in progress, so none lands after the files are removed
            self._cancel.set()
            removed, self._written = self._written, []
        for path in removed:
            path.unlink(missing_ok=True)
        return removed

    def discard(self, paths: Iterable[Path]) -> list[Path]:
        """Delete those of ``paths`` that were written through this object (never another file); returns them."""
        wanted = {Path(p).resolve() for p in paths}
        with self._guard:
            removed = [p for p in self._written if p in wanted]
            self._written = [p for p in self._written if p not in wanted]
        for path in removed:
            path.unlink(missing_ok=True)
        return removed

    def contains(self, path: Any) -> bool:
        """True when ``path`` is an existing regular file directly or below this directory (symlinks resolved)."""
        try:
            resolved = Path(path).resolve(strict=True)
        except (OSError, TypeError, ValueError, RuntimeError):
            return False
        return resolved.is_relative_to(self.root) and resolved != self.root and resolved.is_file()

    def _refuse_if_cancelled(self) -> None:
        if self.cancelled:
            raise ArtifactError(f"not writing into {self.root}: the invocation was cancelled (it timed out)")

    def _target(self, stem: str, suffix: str) -> Path:
        if not re.fullmatch(r"\.[a-z0-9]{1,8}", suffix):
            raise ArtifactError(f"invalid file suffix {suffix!r}")
        candidate = (self.root / f"{safe_stem(stem)}{suffix}").resolve()
        if candidate.parent != self.root:
            raise ArtifactError(f"refusing to write {candidate}: outside the output directory {self.root}")
        return candidate

    def write(self, stem: str, suffix: str, writer: Callable[[Path], None]) -> Path:
        """Call ``writer(tmp_path)`` then publish the file atomically under a new unique name."""
        base = self._target(stem, suffix)
        self._refuse_if_cancelled()
        fd, tmp_name = tempfile.mkstemp(prefix=".partial-", suffix=suffix, dir=self.root)
        os.close(fd)
        tmp = Path(tmp_name)
        try:
            writer(tmp)
            return self._publish(tmp, base)
        finally:
            tmp.unlink(missing_ok=True)

    def _publish(self, tmp: Path, base: Path) -> Path:
        suffix = base.suffix
        with self._guard:
            self._refuse_if_cancelled()
            for n in range(10_000):
                target = base if n == 0 else base.with_name(f"{base.stem}-{n}{suffix}")
                try:
                    os.link(tmp, target)  # fails if target exists: never overwrites
                except FileExistsError:
                    continue
                target.chmod(0o644)  # mkstemp made it private; artifacts are for people to open
                self._written.append(target)
                return target
        raise ArtifactError(f"no free file name for {base.name} in {self.root}")

    def write_bytes(self, stem: str, suffix: str, data: bytes) -> Path:
        """Write raw bytes as a new file."""

        def _w(p: Path) -> None:
            p.write_bytes(data)

        return self.write(stem, suffix, _w)

    def write_image(self, stem: str, image: Any) -> Path:
        """Write a PIL image or an HxWx3 uint8 array as PNG."""
        from PIL import Image

        if not isinstance(image, Image.Image):
            import numpy as np

            image = Image.fromarray(np.asarray(image, dtype=np.uint8))
        return self.write(stem, ".png", lambda p: image.save(p, format="PNG"))

    def write_audio(self, stem: str, samples: Any, sample_rate: int) -> Path:
        """Write float samples in [-1, 1] (shape ``(n,)`` or ``(n, channels)``) as 16-bit PCM WAV."""
        import numpy as np

        arr = np.asarray(samples, dtype=np.float32)
        if arr.ndim == 1:
            arr = arr[:, None]
        if arr.ndim != 2 or arr.shape[0] == 0:
            raise ArtifactError(f"audio must be (samples,) or (samples, channels), got shape {arr.shape}")
        _refuse_non_finite(arr, "audio samples")
        pcm = (np.clip(arr, -1.0, 1.0) * 32767).astype("<i2")

        def _w(p: Path) -> None:
            with wave.open(str(p), "wb") as w:
                w.setnchannels(pcm.shape[1])
                w.setsampwidth(2)
                w.setframerate(int(sample_rate))
                w.writeframes(pcm.tobytes())

        return self.write(stem, ".wav", _w)

    def write_video(self, stem: str, frames: Sequence[Any] | Any, fps: float) -> Path:
        """Write RGB uint8 frames (``T x H x W x 3``, even sizes are padded) as an H.264 MP4 via PyAV."""
        import numpy as np

        video = np.asarray(frames)
        if video.dtype != np.uint8:
            _refuse_non_finite(video, "video frames")
            video = (np.clip(video, 0.0, 1.0) * 255).round().astype(np.uint8)
        if video.ndim != 4 or video.shape[-1] != 3 or video.shape[0] == 0:
            raise ArtifactError(f"video frames must be (T, H, W, 3), got shape {video.shape}")
        pad_h, pad_w = video.shape[1] % 2, video.shape[2] % 2
        if pad_h or pad_w:
            video = np.pad(video, ((0, 0), (0, pad_h), (0, pad_w), (0, 0)), mode="edge")
        return self.write(stem, ".mp4", lambda p: encode_mp4(p, video, fps))

    def write_manifest(self, record: dict[str, Any]) -> Path:
        """Write a JSON manifest describing one response; returns its path.

        The record passes through :func:`json_safe` first, so the file is always strict JSON in UTF-8.
        """
        stamp = time.strftime("%Y%m%d-%H%M%S")
        data = json.dumps(json_safe(record), indent=2, allow_nan=False, ensure_ascii=False).encode("utf-8")
        return self.write_bytes(f"response-{stamp}-{uuid.uuid4().hex[:6]}", ".json", data)


def _refuse_non_finite(arr: Any, what: str) -> None:
    """Refuse NaN/Infinity values: written as PCM or pixels they would silently become silence or black."""
    import numpy as np

    bad = int(np.size(arr) - np.count_nonzero(np.isfinite(arr)))
    if bad:
        raise ArtifactError(
            f"{what} hold {bad} non-finite value(s) (NaN or Infinity) of {np.size(arr)}: the generator failed "
            "numerically; try other arguments or another seed"
        )


def encode_mp4(path: Path, video: Any, fps: float) -> None:
    from fractions import Fraction

    import av

    with av.open(str(path), mode="w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=Fraction(fps).limit_denominator(1001))
        stream.width, stream.height = int(video.shape[2]), int(video.shape[1])
        stream.pix_fmt = "yuv420p"
        stream.options = {"crf": "23"}
        for frame in video:
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def mime_for(path: Path) -> str:
    """MIME type of a produced file from its suffix."""
    return _MIME.get(path.suffix.lower(), "application/octet-stream")


def manifest_record(artifacts: Iterable[Artifact], **extra: Any) -> dict[str, Any]:
    """The manifest dict for a response: what made each file."""
    return {**extra, "artifacts": [a.to_dict() for a in artifacts]}
