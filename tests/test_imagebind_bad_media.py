"""Bad and unusual media through the encoder: a clear MediaError or the right embedding, never a crash or a hang.

Items are built directly (as a caller holding a MediaItem might), so the encoder's own decoding is what
is tested here; ``tests/test_media.py`` covers the same files at ``load_media``.
"""

from __future__ import annotations

import io
import struct
import wave
import zlib
from pathlib import Path

import av
import numpy as np
import pytest
import torch
from PIL import Image

from modaverse_agent.encoders.imagebind import ImageBindConfig, ImageBindEncoder
from modaverse_agent.errors import MediaError
from modaverse_agent.media import MediaItem, load_media

MEDIA = Path(__file__).resolve().parent / "fixtures" / "imagebind" / "media"


@pytest.fixture(scope="module")
def encoder() -> ImageBindEncoder:
    torch.manual_seed(0)
    return ImageBindEncoder.from_config(ImageBindConfig.tiny(modalities=("vision", "audio")))


def item(modality: str, data: bytes, name: str = "input") -> MediaItem:
    return MediaItem(modality=modality, mime_type="application/octet-stream", data=data, name=name)  # type: ignore[arg-type]


def wav(samples: np.ndarray, rate: int, sampwidth: int = 2) -> bytes:
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(samples.shape[0])
        w.setsampwidth(sampwidth)
        w.setframerate(rate)
        scaled = samples.T * 127 + 128 if sampwidth == 1 else samples.T * 32767
        w.writeframes(scaled.astype(np.uint8 if sampwidth == 1 else "<i2").tobytes())
    return buf.getvalue()


def speech(rate: int = 16000, channels: int = 1, seconds: float = 2.5) -> np.ndarray:
    rng = np.random.default_rng(0)
    base = 0.2 * np.sin(2 * np.pi * 300 * np.arange(int(rate * seconds)) / rate) * rng.uniform(0.5, 1, 1)
    return np.tile(base, (channels, 1)).astype(np.float32)


def video(n: int, size: tuple[int, int], audio: bool = False, fps: int = 10) -> bytes:
    buf = io.BytesIO()
    w, h = size
    with av.open(buf, "w", format="mp4") as c:
        stream = c.add_stream("mpeg4", rate=fps)
        stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
        sound = c.add_stream("aac", rate=16000, layout="mono") if audio else None
        for i in range(n):
            img = np.full((h, w, 3), (i * 20) % 256, np.uint8)
            for packet in stream.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                c.mux(packet)
        for packet in stream.encode(None):
            c.mux(packet)
        if sound is not None:
            frame = av.AudioFrame.from_ndarray(speech(16000, 1, n / fps), format="fltp", layout="mono")
            frame.rate = 16000
            for packet in [*sound.encode(frame), *sound.encode(None)]:
                c.mux(packet)
    return buf.getvalue()


def png_claiming(width: int, height: int) -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + chunk(b"IEND", b"")
    )


def png(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, "PNG")
    return buf.getvalue()


# -- errors ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("modality", "data", "words"),
    [
        ("image", (MEDIA / "coffee.jpg").read_bytes()[:30000], "truncated or corrupt"),
        ("image", (MEDIA / "chelsea.png").read_bytes()[:5000], "truncated or corrupt"),
        ("image", b"", "truncated or corrupt"),
        ("image", png_claiming(10_000, 10_000), "over the 50000000-pixel limit"),
        ("image", (MEDIA / "speech_16k.wav").read_bytes(), "content is audio/wav, not image"),  # an item that lies
        ("audio", b"", "truncated or corrupt"),
        ("audio", b"RIFF\x00\x00\x00\x00WAVEjunk", "truncated or corrupt"),
        ("audio", (MEDIA / "speech_16k.mp3").read_bytes()[:100], "truncated or corrupt"),
        ("audio", (MEDIA / "chelsea.png").read_bytes(), "content is image/png, not audio"),
        ("audio", wav(np.zeros((1, 7200 * 1000), np.float32), 1000, sampwidth=1), "over the 600 s limit"),
        ("audio", wav(np.zeros((1, 160), np.float32), 16000), "25 ms"),
        ("audio", wav(np.zeros((1, 44101), np.float32), 44101), "convert the audio"),
        ("audio", video(5, (32, 32)), "has no audio track"),
        ("video", (MEDIA / "testsrc_320x240_10fps_3s.mp4").read_bytes()[:15000], "truncated or corrupt"),
        ("video", (MEDIA / "speech_16k.mp3").read_bytes(), "has no video track"),
        ("video", b"\x00" * 64, "truncated or corrupt"),
    ],
)
def test_bad_media_gives_a_clear_error(encoder: ImageBindEncoder, modality: str, data: bytes, words: str) -> None:
    with pytest.raises(MediaError, match=words) as err:
        encoder.encode(modality, [item(modality, data, name="clip.bin")])
    assert "clip.bin" in str(err.value)


def test_one_bad_item_names_itself_in_a_batch(encoder: ImageBindEncoder) -> None:
    good = load_media(MEDIA / "chelsea.png")
    with pytest.raises(MediaError, match=r"broken\.png"):
        encoder.encode("image", [good, item("image", b"\x89PNG\r\n\x1a\n", "broken.png")])


# -- the right result ------------------------------------------------------------------------------


def test_alpha_and_palette_images_encode_as_their_rgb(encoder: ImageBindEncoder) -> None:
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (40, 60, 3), dtype=np.uint8)
    rgba = np.concatenate([rgb, rng.integers(0, 256, (40, 60, 1), dtype=np.uint8)], axis=-1)
    palette = Image.fromarray(rgb).quantize(16)
    got = encoder.encode(
        "image",
        [load_media(png(Image.fromarray(rgba))), load_media(png(Image.fromarray(rgb))), load_media(png(palette))],
    )
    torch.testing.assert_close(got[0], got[1], atol=1e-6, rtol=0)  # alpha dropped, not composited
    expected = encoder.encode("image", [load_media(png(palette.convert("RGB")))])[0]
    torch.testing.assert_close(got[2], expected, atol=1e-6, rtol=0)


@pytest.mark.parametrize(("rate", "channels"), [(8000, 1), (11025, 2), (22050, 6), (44100, 2), (48000, 6)])
def test_mono_stereo_and_5_1_at_odd_rates_encode_like_their_first_channel(
    encoder: ImageBindEncoder, rate: int, channels: int
) -> None:
    """All channels equal: the reference's all-channel mean equals channel 0's, and fbank reads channel 0."""
    many = encoder.encode("audio", [load_media(wav(speech(rate, channels), rate))])
    mono = encoder.encode("audio", [load_media(wav(speech(rate, 1), rate))])
    assert torch.isfinite(many).all()
    torch.testing.assert_close(many, mono, atol=1e-5, rtol=0)


def test_other_channels_count_only_through_the_mean(encoder: ImageBindEncoder) -> None:
    left = speech(16000, 1)
    zero_mean_noise = np.random.default_rng(1).standard_normal(left.shape).astype(np.float32) * 0.1
    zero_mean_noise -= zero_mean_noise.mean()
    stereo = np.concatenate([left, zero_mean_noise])
    to_audio = [torch.from_numpy(x.copy()) for x in (stereo, left)]
    from modaverse_agent.encoders.imagebind.preprocess import waveform_clips

    a, b = (waveform_clips(x, 16000) for x in to_audio)
    assert (a - b).abs().max() < 0.05  # nearly equal: only clip means differ slightly, not the noise itself


@pytest.mark.parametrize("size", [(48, 32), (32, 48), (300, 300)])
def test_small_portrait_and_square_videos(encoder: ImageBindEncoder, size: tuple[int, int]) -> None:
    got = encoder.encode("video", [load_media(video(12, size))])
    assert got.shape == (1, 32) and torch.isfinite(got).all()


def test_a_one_frame_video_repeats_it(encoder: ImageBindEncoder) -> None:
    one = load_media(video(1, (64, 48)))
    got = encoder.encode("video", [one])
    assert got.shape == (1, 32) and torch.isfinite(got).all()


def test_video_with_sound_encodes_both_ways(encoder: ImageBindEncoder) -> None:
    clip = load_media(video(20, (64, 48), audio=True))
    assert encoder.encode("video", [clip]).shape == encoder.encode("audio", [clip]).shape == (1, 32)
