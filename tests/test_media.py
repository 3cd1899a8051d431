"""Loading, sniffing, probing, limits and decoding of media inputs, good and bad."""

from __future__ import annotations

import base64
import io
import struct
import subprocess
import sys
import wave
import zlib
from pathlib import Path

import av
import numpy as np
import pytest
from PIL import Image

from modaverse_agent.errors import MediaError
from modaverse_agent.media import MediaItem, MediaLimits, load_media, sniff
from modaverse_agent.media_decode import decode_audio, decode_image, decode_video, decode_video_frames, probe_video

MEDIA = Path(__file__).resolve().parent / "fixtures" / "imagebind" / "media"


# -- makers of small media, all in memory ----------------------------------------------------------


def tone(rate: int, channels: int = 1, seconds: float = 0.5, freq: float = 440.0) -> np.ndarray:
    """(channels, samples) float32 sine, each channel a different amplitude so they can be told apart."""
    t = np.arange(int(rate * seconds)) / rate
    return np.stack([0.1 * (c + 1) * np.sin(2 * np.pi * freq * t) for c in range(channels)]).astype(np.float32)


def wav_bytes(samples: np.ndarray, rate: int, sampwidth: int = 2) -> bytes:
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(samples.shape[0])
        w.setsampwidth(sampwidth)
        w.setframerate(rate)
        if sampwidth == 1:
            w.writeframes((samples.T * 127 + 128).astype(np.uint8).tobytes())
        else:
            w.writeframes((samples.T * 32767).astype("<i2").tobytes())
    return buf.getvalue()


def encode_audio(samples: np.ndarray, rate: int, codec: str, fmt: str, layout: str) -> bytes:
    buf = io.BytesIO()
    with av.open(buf, "w", format=fmt) as c:
        stream = c.add_stream(codec, rate=rate, layout=layout)
        frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(samples), format="fltp", layout=layout)
        frame.rate = rate
        for packet in [*stream.encode(frame), *stream.encode(None)]:
            c.mux(packet)
    return buf.getvalue()


def encode_video(
    n: int = 12, fps: int = 10, size: tuple[int, int] = (64, 48), fmt: str = "mp4", audio: bool = False
) -> bytes:
    """A moving gradient, mpeg4 in ``fmt``, optionally with an AAC tone."""
    buf = io.BytesIO()
    w, h = size
    with av.open(buf, "w", format=fmt) as c:
        video = c.add_stream("mpeg4", rate=fps)
        video.width, video.height, video.pix_fmt = w, h, "yuv420p"
        sound = c.add_stream("aac", rate=16000, layout="mono") if audio else None
        for i in range(n):
            img = np.zeros((h, w, 3), np.uint8)
            img[..., 0] = (np.arange(w) * 4 + i * 10) % 256
            img[..., 1] = 128
            for packet in video.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                c.mux(packet)
        for packet in video.encode(None):
            c.mux(packet)
        if sound is not None:
            frame = av.AudioFrame.from_ndarray(tone(16000, 1, n / fps), format="fltp", layout="mono")
            frame.rate = 16000
            for packet in [*sound.encode(frame), *sound.encode(None)]:
                c.mux(packet)
    return buf.getvalue()


def png_header(width: int, height: int) -> bytes:
    """A PNG whose header claims ``width`` x ``height`` (and holds almost no data): a decompression bomb."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    idat = chunk(b"IDAT", zlib.compress(b"\x00" * 64))
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + idat + chunk(b"IEND", b"")


def image_bytes(img: Image.Image, fmt: str, **kwargs: object) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kwargs)
    return buf.getvalue()


# -- reading ---------------------------------------------------------------------------------------


def test_sources_path_bytes_base64_data_and_file_urls_agree(tmp_path: Path) -> None:
    data = (MEDIA / "chelsea.png").read_bytes()
    b64 = base64.b64encode(data).decode()
    items = [
        load_media(MEDIA / "chelsea.png"),
        load_media(str(MEDIA / "chelsea.png")),
        load_media((MEDIA / "chelsea.png").as_uri()),
        load_media(data),
        load_media(b64),
        load_media("data:image/png;base64," + b64),
    ]
    assert {(i.modality, i.mime_type, i.sha256) for i in items} == {("image", "image/png", items[0].sha256)}
    assert items[0].path == MEDIA / "chelsea.png" and items[0].name == "chelsea.png"
    assert items[3].name == "<bytes>" and items[3].path is None
    assert items[0].info is not None and (items[0].info.width, items[0].info.height) == (451, 300)


def test_short_base64_is_not_mistaken_for_a_path() -> None:
    tiny_png = image_bytes(Image.new("RGB", (1, 1)), "PNG")
    text = base64.b64encode(tiny_png).decode()
    assert len(text) < 255 and load_media(text).mime_type == "image/png"


@pytest.mark.parametrize(
    ("source", "words"),
    [
        ("https://example.com/cat.png", "remote URL"),
        ("/nonexistent/dir/cat.png", "does not exist"),
        ("data:image/png;base64,@@@@", "not valid base64"),
        ("x" * 300 + "!", "cannot use"),
    ],
)
def test_bad_sources_say_what_to_do(source: str, words: str) -> None:
    with pytest.raises(MediaError, match=words):
        load_media(source)


def test_a_directory_is_not_a_media_file(tmp_path: Path) -> None:
    with pytest.raises(MediaError, match="not a regular file"):
        load_media(tmp_path)


def test_zero_length_file(tmp_path: Path) -> None:
    (tmp_path / "empty.png").write_bytes(b"")
    with pytest.raises(MediaError, match=r"empty \(0 bytes\)"):
        load_media(tmp_path / "empty.png")
    with pytest.raises(MediaError, match="empty"):
        load_media(b"")


def test_file_size_limit(tmp_path: Path) -> None:
    with pytest.raises(MediaError, match="over the 1000-byte limit"):
        load_media(MEDIA / "chelsea.png", max_bytes=1000)
    with pytest.raises(MediaError, match="over the 1000-byte limit"):
        load_media((MEDIA / "chelsea.png").read_bytes(), limits=MediaLimits(max_bytes=1000))


# -- sniffing: the content decides, not the name ---------------------------------------------------


def test_an_extension_that_lies_is_ignored(tmp_path: Path) -> None:
    (tmp_path / "song.mp3").write_bytes((MEDIA / "coffee.jpg").read_bytes())
    (tmp_path / "photo.jpg").write_bytes((MEDIA / "speech_16k.wav").read_bytes())
    (tmp_path / "clip.wav").write_bytes((MEDIA / "testsrc_320x240_10fps_3s.mp4").read_bytes())
    assert load_media(tmp_path / "song.mp3").mime_type == "image/jpeg"
    assert load_media(tmp_path / "photo.jpg").modality == "audio"
    assert load_media(tmp_path / "clip.wav").modality == "video"


@pytest.mark.parametrize(
    ("data", "words"),
    [
        (b"definitely not an image", "looks like plain text"),
        (b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n1 0 obj", "looks like a PDF document"),
        (b'<?xml version="1.0"?>\n<svg xmlns="http://www.w3.org/2000/svg"/>', "looks like an SVG drawing"),
        (b"<!DOCTYPE html><html><body>hi</body></html>", "looks like an HTML page"),
        (b'{"image": "cat.png"}', "looks like JSON or other plain text"),
        (b"PK\x03\x04" + b"\x00" * 40, "looks like a ZIP archive"),
        (b"\x7fELF\x02\x01\x01" + b"\x00" * 40, "looks like an ELF executable"),
        (b"\x1f\x8b\x08\x00" + b"\x00" * 20, "looks like gzip-compressed data"),
        (b"\x00" * 64, "looks like zero bytes only"),
        (bytes(range(256)) * 4, "looks like unknown binary data"),
        (b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic", "HEIF/HEIC images are not supported"),
    ],
)
def test_unsupported_formats(data: bytes, words: str) -> None:
    with pytest.raises(MediaError, match=words) as err:
        load_media(data)
    assert "give a PNG/JPEG" in str(err.value)


def test_rejections_never_quote_the_content(tmp_path: Path) -> None:
    """What a refused file looks like is described, but none of its bytes reach the message (issue 17)."""
    passwd = b"root:x:0:0:root:/root:/bin/bash\ndaemon:x:1:1:daemon:/usr/sbin:/usr/sbin/nologin\n"
    (tmp_path / "photo.jpg").write_bytes(passwd)
    with pytest.raises(
        MediaError, match=r"photo\.jpg: unrecognised media format: the content looks like plain text"
    ) as e:
        load_media(tmp_path / "photo.jpg")
    assert "root" not in str(e.value) and repr(passwd[:12]) not in str(e.value)
    secret = b"SECRET-CANARY-4711"
    spoofed = [
        b"\x89PNG\r\n\x1a\n" + secret * 4,
        b"\x89PNG\r\n\x1a\n\x00\x00\x00\x04" + secret * 4,
        b"GIF89a" + secret * 4,
    ]
    for data in [*spoofed, b"BM" + secret * 4, b"RIFF\x00\x00\x00\x00WAVE" + secret * 4, b"ID3" + secret * 40]:
        with pytest.raises(MediaError) as e:
            load_media(data)
        assert "CANARY" not in str(e.value) and "x89PNG" not in str(e.value), str(e.value)


# -- sources that cannot be read: a MediaError saying what to do, never an OSError -------------------


@pytest.mark.skipif(not Path("/proc/self/mem").exists(), reason="needs Linux /proc")
def test_a_file_that_fails_to_read_with_eio() -> None:
    with pytest.raises(MediaError, match=r"cannot read '/proc/self/mem' \(EIO: .*\); .*copy the media") as e:
        load_media("/proc/self/mem")
    assert isinstance(e.value.__cause__, OSError)


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs Linux /proc")
def test_a_file_that_states_size_zero_is_read_only_up_to_the_limit() -> None:
    with pytest.raises(MediaError, match="over the 10-byte limit"):
        load_media("/proc/self/status", max_bytes=10)


def test_a_file_without_read_permission(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests run as root, who may read anything: the kernel's refusal is simulated at open (and at stat)."""
    import os

    import modaverse_agent.media_source as media

    locked = tmp_path / "locked.png"
    locked.write_bytes(image_bytes(Image.new("RGB", (4, 4)), "PNG"))
    real_open, real_stat = os.open, os.stat

    def open_(path: object, *args: object, **kwargs: object) -> int:
        if str(path) == str(locked):
            raise PermissionError(13, "Permission denied", str(path))
        return real_open(path, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(media.os, "open", open_)
    with pytest.raises(MediaError, match=r"cannot read '.*locked.png': permission denied; make it readable"):
        load_media(locked)

    def stat_(path: object, *args: object, **kwargs: object) -> os.stat_result:
        if str(path) == str(locked):
            raise PermissionError(13, "Permission denied", str(path))
        return real_stat(path, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(media.os, "stat", stat_)
    with pytest.raises(MediaError, match="permission denied"):
        load_media(str(locked))
    if os.geteuid() != 0:  # the real thing, where the kernel refuses
        monkeypatch.undo()
        locked.chmod(0)
        with pytest.raises(MediaError, match="permission denied"):
            load_media(locked)


def test_special_files_are_refused_without_blocking(tmp_path: Path) -> None:
    import os
    import socket

    os.mkfifo(tmp_path / "pipe.wav")  # opening it for reading would block forever
    (tmp_path / "dangling.png").symlink_to(tmp_path / "gone.png")
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(tmp_path / "sock.mp4"))
    try:
        cases = [
            (tmp_path, "is a directory, not a regular file"),
            (tmp_path / "pipe.wav", r"is a named pipe \(FIFO\), not a regular file"),
            (tmp_path / "sock.mp4", "is a socket, not a regular file"),
            (tmp_path / "dangling.png", "is a broken symbolic link"),
            (tmp_path / "missing.png", "does not exist; check the path"),
        ]
        if Path("/dev/null").exists():
            cases.append((Path("/dev/null"), "is a character device, not a regular file"))
        for path, words in cases:
            with pytest.raises(MediaError, match=words):
                load_media(path)
            with pytest.raises(MediaError, match=words):
                load_media(str(path))
    finally:
        sock.close()


@pytest.mark.parametrize(
    ("source", "words"),
    [
        ("~modaverse-no-such-user-7f3a/cat.png", "cannot expand the home directory"),
        ("cat\x00.png", r"as a path \(ValueError: embedded null byte\)"),
        ("file://[unclosed/cat.png", "not a valid file:// URL"),
    ],
)
def test_paths_that_cannot_be_paths(source: str, words: str) -> None:
    with pytest.raises(MediaError, match=words):
        load_media(source)


def test_a_long_path_made_of_base64_letters_is_still_a_path(tmp_path: Path) -> None:
    folder = tmp_path
    while len(str(folder)) < 300:
        folder = folder / ("d" * 60)
    folder.mkdir(parents=True)
    (folder / "img").write_bytes(image_bytes(Image.new("RGB", (3, 3)), "PNG"))
    assert load_media(str(folder / "img")).path == folder / "img"


def test_any_oserror_while_decoding_is_a_media_error(monkeypatch: pytest.MonkeyPatch) -> None:
    item = load_media(wav_bytes(tone(8000), 8000))

    def failing_open(*args: object, **kwargs: object) -> None:
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(av, "open", failing_open)
    for call in (lambda: load_media(item.data), lambda: decode_audio(item)):
        with pytest.raises(MediaError, match=r"<bytes>: the audio(/video)? decoder failed on it \(OSError: "):
            call()


def tiff_with_float_strip_offsets() -> bytes:
    """A TIFF whose StripOffsets tag is typed FLOAT: Pillow raises TypeError on it (found by fuzzing)."""
    data = bytearray(image_bytes(Image.new("RGB", (8, 6), (1, 2, 3)), "TIFF"))
    ifd = struct.unpack_from("<I", data, 4)[0]
    for k in range(struct.unpack_from("<H", data, ifd)[0]):
        entry = ifd + 2 + 12 * k
        if struct.unpack_from("<H", data, entry)[0] == 273:
            struct.pack_into("<H", data, entry + 2, 11)
            return bytes(data)
    raise AssertionError("no StripOffsets tag")


def test_a_decoder_library_failing_on_hostile_bytes_is_a_media_error() -> None:
    data = tiff_with_float_strip_offsets()
    with pytest.raises(
        MediaError, match=r"<bytes>: the image decoder failed on it \(TypeError: .*\); the file is"
    ) as e:
        load_media(data)
    assert isinstance(e.value.__cause__, TypeError)
    with pytest.raises(MediaError, match=r"odd.tif: the image decoder failed on it \(TypeError"):
        decode_image(MediaItem(modality="image", mime_type="image/tiff", data=data, name="odd.tif"))


def test_sniff_signatures() -> None:
    assert sniff(b"RIFF\x00\x00\x00\x00WEBPVP8 ") == ("image", "image/webp")
    assert sniff(b"\xff\xf1\x50\x80") == ("audio", "audio/aac")
    assert sniff(b"\xff\xfb\x90\x00") == ("audio", "audio/mpeg")
    assert sniff(b"FORM\x00\x00\x00\x00AIFF") == ("audio", "audio/aiff")
    assert sniff(b"\x00\x00\x00\x20ftypM4A ") == ("audio", "audio/mp4")


# -- images ----------------------------------------------------------------------------------------


def test_100_megapixel_image_is_refused_before_decoding() -> None:
    with pytest.raises(MediaError, match="10000x10000 = 100000000 pixels, over the 50000000-pixel limit"):
        load_media(png_header(10_000, 10_000))
    with pytest.raises(MediaError, match="pixels"):  # past Pillow's own bomb limit too
        load_media(png_header(30_000, 30_000))


def test_pixel_limit_is_configurable() -> None:
    with pytest.raises(MediaError, match="over the 1000-pixel limit"):
        load_media(MEDIA / "chelsea.png", limits=MediaLimits(max_pixels=1000))


@pytest.mark.parametrize("name", ["chelsea.png", "coffee.jpg"])
def test_truncated_and_corrupt_images(name: str) -> None:
    data = (MEDIA / name).read_bytes()
    with pytest.raises(MediaError, match="truncated or corrupt"):
        load_media(data[: len(data) // 2])
    with pytest.raises(MediaError, match=r"truncated or corrupt|not a readable image"):
        load_media(data[:8] + b"\x00" * 40 + data[48:])


def test_alpha_is_dropped_without_compositing() -> None:
    rgba = Image.new("RGBA", (8, 6), (10, 20, 30, 0))
    item = load_media(image_bytes(rgba, "PNG"))
    assert item.info is not None and item.info.mode == "RGBA"
    img = decode_image(item)
    assert img.mode == "RGB" and img.getpixel((3, 3)) == (10, 20, 30)


def test_palette_and_grayscale_images_expand_to_rgb() -> None:
    pal = Image.new("P", (8, 6))
    pal.putpalette([0, 0, 0, 200, 100, 50] + [0] * 762)
    pal.paste(1, (0, 0, 4, 6))
    img = decode_image(load_media(image_bytes(pal, "PNG", transparency=0)))
    assert img.mode == "RGB" and img.getpixel((1, 1)) == (200, 100, 50) and img.getpixel((6, 1)) == (0, 0, 0)
    gray = decode_image(load_media(image_bytes(Image.new("L", (5, 5), 77), "PNG")))
    assert gray.getpixel((0, 0)) == (77, 77, 77)


def test_gif_gives_its_first_frame() -> None:
    frames = [Image.new("RGB", (6, 6), c) for c in [(255, 0, 0), (0, 0, 255)]]
    data = image_bytes(frames[0], "GIF", save_all=True, append_images=frames[1:])
    item = load_media(data)
    assert item.mime_type == "image/gif" and item.info is not None and item.info.frames == 2
    assert decode_image(item).getpixel((2, 2))[0] > 200


def test_exif_orientation_is_honoured() -> None:
    img = Image.new("RGB", (40, 20), (255, 0, 0))
    img.paste((0, 0, 255), (20, 0, 40, 20))  # left red, right blue
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    upright = decode_image(load_media(image_bytes(img, "JPEG", exif=exif.tobytes(), quality=95)))
    assert upright.size == (20, 40)
    top, bottom = upright.getpixel((10, 5)), upright.getpixel((10, 35))
    assert top[0] > 200 > top[2] and bottom[2] > 200 > bottom[0]


@pytest.mark.parametrize("fmt", ["WEBP", "BMP", "TIFF"])
def test_other_image_formats(fmt: str) -> None:
    item = load_media(image_bytes(Image.new("RGB", (9, 7), (1, 2, 3)), fmt))
    assert item.modality == "image" and decode_image(item).size == (9, 7)


def test_decode_image_refuses_other_modalities() -> None:
    with pytest.raises(MediaError, match="is audio, not image"):
        decode_image(load_media(MEDIA / "speech_16k.wav"))


# -- audio -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("codec", "fmt", "layout", "rate", "mime"),
    [
        ("pcm_s16le", "wav", "mono", 8000, "audio/wav"),
        ("pcm_s16le", "wav", "stereo", 11025, "audio/wav"),
        ("pcm_s16le", "wav", "5.1", 37800, "audio/wav"),
        ("flac", "flac", "5.1", 44100, "audio/flac"),
        ("libmp3lame", "mp3", "stereo", 22050, "audio/mpeg"),
        ("aac", "mp4", "mono", 48000, "audio/mp4"),
        ("libopus", "ogg", "stereo", 48000, "audio/ogg"),
        ("libopus", "webm", "mono", 48000, "audio/webm"),
    ],
)
def test_audio_formats_channels_and_rates(codec: str, fmt: str, layout: str, rate: int, mime: str) -> None:
    channels = av.AudioLayout(layout).nb_channels
    samples = tone(rate, channels)
    item = load_media(encode_audio(samples, rate, codec, fmt, layout))
    assert (item.modality, item.mime_type) == ("audio", mime)
    assert item.info is not None and (item.info.sample_rate, item.info.channels) == (rate, channels)
    audio = decode_audio(item)
    assert audio.sample_rate == rate and audio.channels == channels and audio.samples.dtype == np.float32
    assert abs(audio.duration_s - 0.5) < 0.1  # codecs add priming/padding
    peaks = np.abs(audio.samples).max(axis=1)
    assert np.allclose(peaks, 0.1 * np.arange(1, channels + 1), atol=0.02)  # channel order kept


def test_pcm_wav_decodes_exactly() -> None:
    samples = tone(8000, 2)
    audio = decode_audio(load_media(wav_bytes(samples, 8000)))
    expected = (samples.T * 32767).astype("<i2").T / 32768  # as wav_bytes wrote it
    np.testing.assert_array_equal(audio.samples, expected.astype(np.float32))


def test_mp3_inside_riff_wav() -> None:
    item = load_media(MEDIA / "speech_16k_mp3.wav")
    assert item.mime_type == "audio/wav" and item.info is not None and item.info.codec == "mp3float"
    assert decode_audio(item).samples.shape == (1, 58176)


def test_two_hour_audio_is_refused_from_its_header() -> None:
    two_hours = wav_bytes(np.zeros((1, 7200 * 1000), np.float32), 1000, sampwidth=1)  # 7.2 MB of 8-bit silence
    with pytest.raises(MediaError, match=r"7200\.0 s long, over the 600 s limit"):
        load_media(two_hours)


def test_duration_is_checked_from_the_header_before_decoding() -> None:
    item = load_media(wav_bytes(tone(8000, 1, seconds=2.0), 8000))
    with pytest.raises(MediaError, match=r"2\.0 s long, over the 0\.5 s limit"):
        decode_audio(item, limits=MediaLimits(max_duration_s=0.5))


def test_duration_is_also_enforced_while_decoding(monkeypatch: pytest.MonkeyPatch) -> None:
    """A container that states no duration (or under-states it) cannot make decoding run away."""
    import modaverse_agent.media_decode as media_decode

    item = load_media(wav_bytes(tone(8000, 1, seconds=2.0), 8000))
    monkeypatch.setattr(media_decode, "stream_duration", lambda container, stream: None)
    with pytest.raises(MediaError, match=r"over the 0\.5 s limit"):
        decode_audio(item, limits=MediaLimits(max_duration_s=0.5))


def test_truncated_wav_is_reported() -> None:
    data = wav_bytes(tone(8000, 1, seconds=1.0), 8000)
    with pytest.raises(MediaError, match="WAV file is truncated"):
        load_media(data[: len(data) // 2])


def test_streaming_wav_without_a_length_is_accepted() -> None:
    data = bytearray(wav_bytes(tone(8000, 1, seconds=0.5), 8000))
    data[40:44] = b"\xff\xff\xff\xff"  # the data chunk size placeholder of streaming writers
    assert decode_audio(load_media(bytes(data))).samples.shape == (1, 4000)


def test_corrupt_mp3_gives_a_clear_error_or_audio() -> None:
    data = np.frombuffer((MEDIA / "speech_16k.mp3").read_bytes(), np.uint8).copy()
    rng = np.random.default_rng(0)
    data[rng.integers(200, data.size, data.size // 20)] = rng.integers(0, 256, data.size // 20)
    try:
        audio = decode_audio(load_media(data.tobytes()))
    except MediaError as e:
        assert "corrupt" in str(e)
    else:
        assert np.isfinite(audio.samples).all()


def test_header_only_mp3_is_an_error() -> None:
    with pytest.raises(MediaError, match="truncated or corrupt"):
        load_media((MEDIA / "speech_16k.mp3").read_bytes()[:100])


# -- video -----------------------------------------------------------------------------------------


def test_video_with_audio_decodes_frames_fps_and_sound() -> None:
    item = load_media(encode_video(n=12, fps=10, audio=True))
    assert (item.modality, item.mime_type) == ("video", "video/mp4")
    assert item.info is not None and item.info.has_audio and item.info.fps == 10
    video = decode_video(item)
    assert video.frames.shape == (12, 48, 64, 3) and video.frames.dtype == np.uint8 and video.fps == 10
    assert video.audio is not None and video.audio.sample_rate == 16000
    assert decode_audio(item).channels == 1  # a video's sound track, directly


def test_video_without_audio() -> None:
    item = load_media(encode_video(n=5))
    assert item.info is not None and not item.info.has_audio
    assert decode_video(item).audio is None
    with pytest.raises(MediaError, match="has no audio track"):
        decode_audio(item)


def test_container_with_audio_only_is_audio() -> None:
    item = load_media(encode_audio(tone(16000), 16000, "aac", "mp4", "mono"))
    assert (item.modality, item.mime_type) == ("audio", "audio/mp4")
    with pytest.raises(MediaError, match="is audio, not video"):
        probe_video(item)


def test_matroska_video() -> None:
    item = load_media(encode_video(n=4, fmt="matroska"))
    assert (item.modality, item.mime_type) == ("video", "video/x-matroska")


def test_video_frames_are_picked_by_index_and_counted_by_demuxing() -> None:
    item = load_media(encode_video(n=12))
    info = probe_video(item)
    assert (info.num_frames, info.fps, info.width, info.height) == (12, 10.0, 64, 48)
    every = decode_video(item).frames
    picked = decode_video_frames(item, [5, 0, 5])
    np.testing.assert_array_equal(picked, every[[5, 0, 5]])
    with pytest.raises(MediaError, match="only 12 frames decode"):
        decode_video_frames(item, [40])


@pytest.mark.parametrize("cut", [0.5, 0.02])
def test_truncated_video(cut: float) -> None:
    data = (MEDIA / "testsrc_320x240_10fps_3s.mp4").read_bytes()
    with pytest.raises(MediaError, match="truncated or corrupt"):
        load_media(data[: int(len(data) * cut)])


def test_corrupt_video() -> None:
    data = np.frombuffer((MEDIA / "testsrc_320x240_10fps_3s.mp4").read_bytes(), np.uint8).copy()
    rng = np.random.default_rng(1)
    data[rng.integers(200, data.size, data.size // 20)] = rng.integers(0, 256, data.size // 20)
    with pytest.raises(MediaError, match="corrupt"):
        load_media(data.tobytes())


def test_video_duration_and_frame_size_limits() -> None:
    data = encode_video(n=30, fps=10, size=(64, 48))
    with pytest.raises(MediaError, match=r"3\.0 s long, over the 1 s limit"):
        load_media(data, limits=MediaLimits(max_duration_s=1))
    with pytest.raises(MediaError, match="64x48 = 3072 pixels"):
        load_media(data, limits=MediaLimits(max_pixels=3000))


# -- no torch on the light path -------------------------------------------------------------------


def test_media_modules_do_not_import_torch() -> None:
    code = "import sys, modaverse_agent.media, modaverse_agent.media_decode; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_media_item_keeps_its_public_shape() -> None:
    item = MediaItem(modality="image", mime_type="image/png", data=b"x", name="a.png")
    assert (item.path, item.info) == (None, None) and len(item.sha256) == 64
