"""Decode checked media into pixels and samples: Pillow for images, PyAV (FFmpeg) for audio and video.

Everything here returns numpy arrays or PIL images; nothing imports torch. Limits are enforced while
decoding too, so a header that lies about the size or duration cannot make a decode run away.
"""

from __future__ import annotations

import io
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from .errors import MediaError
from .media import (
    DEFAULT_LIMITS,
    MediaItem,
    MediaLimits,
    check_duration,
    check_pixels,
    decoder_errors,
    open_container,
    real_video_streams,
    reason,
    sniff,
    stream_duration,
)

if TYPE_CHECKING:
    from PIL import Image as PILImage


@dataclass(frozen=True)
class DecodedAudio:
    """Float samples in [-1, 1], shaped (channels, samples), at the file's own sample rate."""

    samples: np.ndarray
    sample_rate: int

    @property
    def channels(self) -> int:
        """Number of channels."""
        return int(self.samples.shape[0])

    @property
    def duration_s(self) -> float:
        """Length in seconds."""
        return self.samples.shape[1] / self.sample_rate


@dataclass(frozen=True)
class VideoInfo:
    """Frame count (as the demuxer indexes it), average frame rate and frame size of a video stream."""

    num_frames: int
    fps: float
    width: int
    height: int
    has_audio: bool

    @property
    def duration_s(self) -> float:
        """``num_frames / fps``, the duration the ImageBind reference samples clips from."""
        return self.num_frames / self.fps


@dataclass(frozen=True)
class DecodedVideo:
    """RGB frames (n, height, width, 3) uint8, the average frame rate and the audio track if any."""

    frames: np.ndarray
    fps: float
    audio: DecodedAudio | None


def _need(item: MediaItem, *modalities: str) -> None:
    if item.modality not in modalities:
        raise MediaError(f"{item.name} is {item.modality}, not {' or '.join(modalities)}; give a matching file")
    try:
        actual, mime = sniff(item.data)
    except MediaError:
        return  # unknown magic: the decoder has the last word
    if (actual == "image") != (item.modality == "image"):
        raise MediaError(f"{item.name}: the content is {mime}, not {item.modality}; load it with load_media")


def decode_image(item: MediaItem, *, limits: MediaLimits = DEFAULT_LIMITS) -> PILImage.Image:
    """The first frame of an image as an RGB PIL image, turned upright by its EXIF orientation.

    Alpha is dropped without compositing and palettes are expanded (``Image.convert("RGB")``, as the
    ImageBind reference does); unlike the reference, the EXIF orientation tag is honoured.
    """
    from PIL import Image, ImageOps, UnidentifiedImageError

    _need(item, "image")
    with warnings.catch_warnings(), decoder_errors(item.name, "image"):
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            img = Image.open(io.BytesIO(item.data))
            check_pixels(item.name, *img.size, limits)
            img.seek(0)
            img.load()
            upright = ImageOps.exif_transpose(img)
            return upright.convert("RGB")
        except MediaError:
            raise
        except (UnidentifiedImageError, OSError, SyntaxError, ValueError, EOFError) as e:
            raise MediaError(
                f"{item.name}: image cannot be decoded ({reason(e)}); the file is truncated or corrupt"
            ) from e


def decode_audio(item: MediaItem, *, limits: MediaLimits = DEFAULT_LIMITS) -> DecodedAudio:
    """All channels of the first audio track of an audio or video file, as float32 in [-1, 1].

    Any format FFmpeg decodes works, MP3 inside a RIFF/WAVE container included. Integer samples are
    scaled by FFmpeg's converter (s16 / 32768), which is what torchaudio/TorchCodec return too.
    """
    import av

    _need(item, "audio", "video")
    with decoder_errors(item.name, "audio"), open_container(item.data, item.name) as container:
        if not container.streams.audio:
            raise MediaError(f"{item.name}: has no audio track; give a file with sound or leave its audio out")
        stream = container.streams.audio[0]
        check_duration(item.name, stream_duration(container, stream), limits)  # the header first, cheaply
        rate = stream.rate
        if not rate:
            raise MediaError(f"{item.name}: the audio track states no sample rate; re-encode it")
        channels = max(stream.channels, 1)
        max_samples = int(limits.max_duration_s * rate) + 1
        max_samples = min(max_samples, limits.max_decoded_bytes // (4 * channels))
        resampler = av.AudioResampler(format="fltp")  # same layout and rate: a sample-format conversion only
        chunks: list[np.ndarray] = []
        total = 0
        try:
            for frame in container.decode(stream):
                if frame.sample_rate != rate:
                    raise MediaError(f"{item.name}: the sample rate changes mid-stream; re-encode it at one rate")
                for out in resampler.resample(frame):
                    chunks.append(out.to_ndarray())
                    total += chunks[-1].shape[1]
                if total > max_samples:
                    check_duration(item.name, total / rate, limits)
                    raise MediaError(f"{item.name}: decoded audio exceeds {limits.max_decoded_bytes} bytes; trim it")
            chunks.extend(out.to_ndarray() for out in resampler.resample(None))
        except av.FFmpegError as e:
            raise MediaError(f"{item.name}: audio data cannot be decoded ({reason(e)}); the file is corrupt") from e
    if not chunks or sum(c.shape[1] for c in chunks) == 0:
        raise MediaError(f"{item.name}: the audio track holds no samples; the file is truncated or empty")
    samples = np.ascontiguousarray(np.concatenate(chunks, axis=1), dtype=np.float32)
    return DecodedAudio(samples=samples, sample_rate=int(rate))


def probe_video(item: MediaItem, *, limits: MediaLimits = DEFAULT_LIMITS) -> VideoInfo:
    """Count the frames of the first video stream by demuxing (no decoding) and read its frame rate."""
    import av

    _need(item, "video")
    with decoder_errors(item.name, "video"), open_container(item.data, item.name) as container:
        streams = real_video_streams(container)
        if not streams:
            hint = " (it has audio only: encode it as audio)" if container.streams.audio else ""
            raise MediaError(f"{item.name}: has no video track{hint}")
        stream = streams[0]
        check_duration(item.name, stream_duration(container, stream), limits)
        rate = stream.average_rate or stream.guessed_rate
        if not rate:
            raise MediaError(f"{item.name}: the video states no frame rate; re-encode it with a constant rate")
        ctx = stream.codec_context
        check_pixels(item.name, ctx.width, ctx.height, limits)
        try:
            count = sum(1 for packet in container.demux(stream) if packet.size)
        except av.FFmpegError as e:
            raise MediaError(f"{item.name}: video cannot be read ({reason(e)}); the file is corrupt") from e
        if count == 0:
            raise MediaError(f"{item.name}: the video stream holds no frames; the file is truncated or empty")
        info = VideoInfo(
            num_frames=count,
            fps=float(rate),
            width=ctx.width,
            height=ctx.height,
            has_audio=bool(container.streams.audio),
        )
    check_duration(item.name, info.duration_s, limits)
    return info


def decode_video_frames(item: MediaItem, indices: Sequence[int], *, limits: MediaLimits = DEFAULT_LIMITS) -> np.ndarray:
    """The frames at ``indices`` (presentation order, 0-based) as RGB uint8, shaped (len(indices), h, w, 3).

    Decoding stops after the last frame asked for.
    """
    import av

    _need(item, "video")
    if not indices:
        raise ValueError("`indices` is empty; ask for at least one frame")
    if min(indices) < 0:
        raise ValueError(f"`indices` must be >= 0, got {min(indices)}")
    wanted, last = set(indices), max(indices)
    kept: dict[int, np.ndarray] = {}
    with decoder_errors(item.name, "video"), open_container(item.data, item.name) as container:
        streams = real_video_streams(container)
        if not streams:
            raise MediaError(f"{item.name}: has no video track")
        stream = streams[0]
        stream.thread_type = "AUTO"
        n = -1
        try:
            for n, frame in enumerate(container.decode(stream)):
                if n in wanted:
                    check_pixels(item.name, frame.width, frame.height, limits)
                    kept[n] = frame.to_ndarray(format="rgb24")
                    if sum(a.nbytes for a in kept.values()) > limits.max_decoded_bytes:
                        raise MediaError(f"{item.name}: decoded frames exceed {limits.max_decoded_bytes} bytes")
                if n >= last:
                    break
        except av.FFmpegError as e:
            raise MediaError(f"{item.name}: video data cannot be decoded ({reason(e)}); the file is corrupt") from e
    if last not in kept:
        raise MediaError(
            f"{item.name}: only {n + 1} frames decode but frame {last} is needed; the file is truncated or corrupt"
        )
    return np.stack([kept[i] for i in indices])


def decode_video(item: MediaItem, *, limits: MediaLimits = DEFAULT_LIMITS, with_audio: bool = True) -> DecodedVideo:
    """Every frame of a video as RGB uint8, its frame rate and (``with_audio``) its audio track or None."""
    info = probe_video(item, limits=limits)
    need = info.num_frames * info.width * info.height * 3
    if need > limits.max_decoded_bytes:
        raise MediaError(
            f"{item.name}: {info.num_frames} frames of {info.width}x{info.height} need {need} bytes decoded, over "
            f"the {limits.max_decoded_bytes}-byte limit; use decode_video_frames for the frames you need"
        )
    frames = decode_video_frames(item, range(info.num_frames), limits=limits)
    audio = decode_audio(item, limits=limits) if with_audio and info.has_audio else None
    return DecodedVideo(frames=frames, fps=info.fps, audio=audio)
