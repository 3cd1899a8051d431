"""Artifacts: the files a response produces, written atomically and only inside an output directory."""

from __future__ import annotations

import json
import os
import re
import tempfile
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
        """JSON-ready dict (path as string)."""
        d = asdict(self)
        d["path"] = str(self.path)
        return d


def safe_stem(name: str, default: str = "output") -> str:
    """Reduce ``name`` to a file-name stem that cannot leave a directory (no separators, no dots first)."""
    stem = _SAFE.sub("-", os.path.basename(name.replace("\\", "/"))).strip(".-")[:60]
    return stem or default


class OutputDir:
    """A directory that receives files atomically, under unique names, never overwriting."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root).expanduser().resolve()
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise ArtifactError(
                f"cannot create output directory {self.root}: {e.strerror}; choose another with --output-dir"
            ) from e
        if not os.access(self.root, os.W_OK | os.X_OK):
            raise ArtifactError(f"output directory {self.root} is not writable; choose another with --output-dir")

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
        for n in range(10_000):
            target = base if n == 0 else base.with_name(f"{base.stem}-{n}{suffix}")
            try:
                os.link(tmp, target)  # fails if target exists: never overwrites
                target.chmod(0o644)  # mkstemp made it private; artifacts are for people to open
                return target
            except FileExistsError:
                continue
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
        pcm = (np.clip(np.nan_to_num(arr), -1.0, 1.0) * 32767).astype("<i2")

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
            video = (np.clip(video, 0.0, 1.0) * 255).round().astype(np.uint8)
        if video.ndim != 4 or video.shape[-1] != 3 or video.shape[0] == 0:
            raise ArtifactError(f"video frames must be (T, H, W, 3), got shape {video.shape}")
        pad_h, pad_w = video.shape[1] % 2, video.shape[2] % 2
        if pad_h or pad_w:
            video = np.pad(video, ((0, 0), (0, pad_h), (0, pad_w), (0, 0)), mode="edge")
        return self.write(stem, ".mp4", lambda p: _encode_mp4(p, video, fps))

    def write_manifest(self, record: dict[str, Any]) -> Path:
        """Write a JSON manifest describing one response; returns its path."""
        stamp = time.strftime("%Y%m%d-%H%M%S")
        data = json.dumps(record, indent=2, default=str).encode()
        return self.write_bytes(f"response-{stamp}-{uuid.uuid4().hex[:6]}", ".json", data)


def _encode_mp4(path: Path, video: Any, fps: float) -> None:
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
