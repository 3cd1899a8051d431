"""Preprocessing of the fixture media reproduces the ImageBind reference's tensors."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from modaverse_agent.encoders.imagebind import preprocess as P
from modaverse_agent.encoders.imagebind.audio_features import kaldi_fbank, resample
from modaverse_agent.encoders.imagebind.clips import audio_clip_ranges, clip_timepoints, video_clip_frames
from modaverse_agent.errors import MediaError
from modaverse_agent.media import load_media
from modaverse_agent.media_decode import decode_audio, probe_video

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "imagebind"
MEDIA = FIXTURES / "media"
IMAGES = ["chelsea.png", "coffee.jpg", "chelsea_portrait_rgba.png"]
AUDIO = ["speech_16k.wav", "speech_22k.wav", "speech_16k_mp3.wav", "speech_16k.mp3"]
VIDEO = "testsrc_320x240_10fps_3s.mp4"


@pytest.fixture(scope="module")
def expected() -> dict[str, torch.Tensor]:
    return load_file(str(FIXTURES / "preprocess_expected.safetensors"))


@pytest.fixture(scope="module")
def meta() -> dict:
    return json.loads((FIXTURES / "preprocess_meta.json").read_text())


def test_text_ids_are_exact(expected: dict, meta: dict) -> None:
    assert torch.equal(P.tokenize(meta["text"]["sentences"]), expected["text"])


def test_text_truncation_keeps_eot(meta: dict) -> None:
    ids = P.tokenize(meta["text"]["sentences"])
    assert ids.argmax(-1).tolist() == meta["text"]["eot_positions_argmax"]
    assert (ids != 0).sum(-1).tolist() == meta["text"]["num_nonzero_tokens"]


@pytest.mark.parametrize("index", range(3))
def test_image_tensors_equal_reference(expected: dict, index: int) -> None:
    got = P.preprocess_image(load_media(MEDIA / IMAGES[index]))
    # Pillow's own bicubic resize, as torchvision on a PIL image: bit-exact, not just within one uint8 level.
    torch.testing.assert_close(got, expected["vision"][index], atol=1e-6, rtol=0)


def test_image_centre_crop_rounds_half_to_even() -> None:
    """A 225-wide resize leaves 1 spare column: torchvision's ``round(0.5) == 0`` keeps the left one."""
    rng = np.random.default_rng(0)
    img = Image.fromarray(rng.integers(0, 256, (224, 225, 3), dtype=np.uint8))
    x = P.image_tensor(img)
    ref = torch.from_numpy(np.array(img)[:, :224]).permute(2, 0, 1).float() / 255
    ref = (ref - torch.tensor(P.CLIP_MEAN).view(3, 1, 1)) / torch.tensor(P.CLIP_STD).view(3, 1, 1)
    torch.testing.assert_close(x, ref, atol=1e-6, rtol=0)


def test_resampled_waveform_equals_reference(expected: dict) -> None:
    audio = decode_audio(load_media(MEDIA / "speech_22k.wav"))
    assert audio.sample_rate == 22050
    got = resample(torch.from_numpy(audio.samples), 22050, 16000)
    torch.testing.assert_close(got, expected["audio_waveform_16k.speech_22k.wav"], atol=1e-6, rtol=0)


@pytest.mark.parametrize("name", ["speech_16k.mp3", "speech_16k_mp3.wav"])
def test_mp3_and_mp3_in_wav_decode_to_reference(expected: dict, name: str) -> None:
    audio = decode_audio(load_media(MEDIA / name))
    assert audio.sample_rate == 16000
    torch.testing.assert_close(
        torch.from_numpy(audio.samples), expected["audio_waveform_16k.speech_16k.mp3"], atol=1e-6, rtol=0
    )


@pytest.mark.parametrize("index", range(4))
def test_audio_clip_ranges_match_reference(meta: dict, index: int) -> None:
    info = meta["audio"]["per_file"][index]
    ranges = audio_clip_ranges(info["waveform_16k_num_samples"], 16000, 2, 3)
    assert [list(r) for r in ranges] == info["clip_sample_ranges"]


@pytest.mark.parametrize("index", range(4))
def test_audio_features_equal_reference(expected: dict, index: int) -> None:
    got = P.preprocess_audio(load_media(MEDIA / AUDIO[index]))
    assert got.shape == (3, 1, 128, 204)
    torch.testing.assert_close(got, expected["audio"][index], atol=1e-5, rtol=0)
    assert torch.allclose(got[..., 198:], torch.tensor(4.268 / 9.138))  # right padding of 198 frames


def test_in_place_mean_subtraction_on_overlapping_clips_is_reproduced(expected: dict) -> None:
    """Copying each clip before removing its mean (the 'obvious' fix) is measurably not the reference."""
    wav = torch.from_numpy(decode_audio(load_media(MEDIA / "speech_16k.wav")).samples)
    copied = []
    for start, end in audio_clip_ranges(wav.shape[1], 16000):
        clip = wav[:, start:end].clone()
        clip -= clip.mean()
        fb = torch.nn.functional.pad(kaldi_fbank(clip[0]).T, (0, 6))
        copied.append(((fb + 4.268) / 9.138).unsqueeze(0))
    assert (torch.stack(copied) - expected["audio"][0]).abs().max() > 0.1
    torch.testing.assert_close(P.waveform_clips(wav, 16000), expected["audio"][0], atol=1e-5, rtol=0)
    assert torch.equal(wav, torch.from_numpy(decode_audio(load_media(MEDIA / "speech_16k.wav")).samples))


def test_kaldi_fbank_agrees_with_kaldi_native_fbank() -> None:
    """An independent implementation (k2's kaldi-native-fbank) agrees; it refuses 128 bins, so use 80."""
    knf = pytest.importorskip("kaldi_native_fbank")
    wav = torch.from_numpy(decode_audio(load_media(MEDIA / "speech_16k.wav")).samples[0, :32000]).clone()
    wav -= wav.mean()
    opts = knf.FbankOptions()
    opts.frame_opts.dither = 0
    opts.frame_opts.window_type = "hanning"
    opts.mel_opts.num_bins = 80
    opts.use_energy = False
    fbank = knf.OnlineFbank(opts)
    fbank.accept_waveform(16000, wav.tolist())
    fbank.input_finished()
    theirs = torch.tensor(np.stack([fbank.get_frame(i) for i in range(fbank.num_frames_ready)]))
    torch.testing.assert_close(kaldi_fbank(wav, num_mel_bins=80), theirs, atol=1e-3, rtol=0)


def _tone(freq: float, rate: int, seconds: float = 1.0) -> torch.Tensor:
    t = torch.arange(int(rate * seconds), dtype=torch.float64) / rate
    return (0.5 * torch.sin(2 * math.pi * freq * t)).float().unsqueeze(0)


@pytest.mark.parametrize("rate", [8000, 11025, 44100, 48000, 37800])
def test_resampling_keeps_a_tone_and_removes_what_cannot_be_represented(rate: int) -> None:
    kept = resample(_tone(1000, rate), rate, 16000)
    assert kept.shape[-1] == 16000  # one second
    mid = kept[0, 2000:-2000]
    assert mid.abs().max().item() == pytest.approx(0.5, abs=0.01)
    spectrum = torch.fft.rfft(mid).abs()
    assert spectrum.argmax().item() * 16000 / mid.numel() == pytest.approx(1000, abs=2)
    if rate > 20000:
        above_nyquist = resample(_tone(10000, rate), rate, 16000)[0, 2000:-2000]
        assert above_nyquist.abs().max() < 0.01  # filtered, not aliased to 6 kHz


def test_resampling_refuses_pathological_rate_pairs() -> None:
    with pytest.raises(ValueError, match="convert the audio"):
        resample(torch.zeros(1, 100), 44101, 16000)
    with pytest.raises(MediaError, match="convert the audio"):
        P.waveform_clips(torch.zeros(1, 44101), 44101)


def test_short_audio_gives_three_identical_clips_and_tiny_audio_an_error() -> None:
    assert clip_timepoints(0.5, 2, 3) == [(0, 2)] * 3
    feats = P.waveform_clips(torch.randn(1, 8000) * 0.1, 16000)
    assert feats.shape == (3, 1, 128, 204) and torch.isfinite(feats).all()
    with pytest.raises(MediaError, match="25 ms"):
        P.waveform_clips(torch.randn(1, 300), 16000)


def test_video_frame_indices_match_reference(meta: dict) -> None:
    info = probe_video(load_media(MEDIA / VIDEO))
    assert (info.num_frames, info.fps) == (meta["video"]["decord_num_frames"], meta["video"]["decord_avg_fps"])
    frames = video_clip_frames(info.num_frames, info.fps, 2, 5, 2)
    assert frames == meta["video"]["frames_kept_per_clip_after_UniformTemporalSubsample2"]


def test_video_tensor_equals_reference_within_fp16_storage(expected: dict, meta: dict) -> None:
    got = P.preprocess_video(load_media(MEDIA / VIDEO))
    assert got.shape == (15, 3, 2, 224, 224)
    bound = meta["video"]["float16_storage_max_abs_rounding_error"]
    torch.testing.assert_close(got, expected["video"][0].float(), atol=bound * 1.01, rtol=0)
    assert (got.half() != expected["video"][0]).float().mean() < 1e-3  # nearly all round to the stored fp16


def test_video_crops_use_ceil_along_the_long_side() -> None:
    x = torch.arange(225.0).expand(1, 1, 224, 225)
    assert [c[0, 0, 0, 0].item() for c in P._spatial_crops(x, 224)] == [0.0, 1.0, 1.0]
    tall = torch.arange(226.0).view(1, 1, 226, 1).expand(1, 1, 226, 224)
    assert [c[0, 0, 0, 0].item() for c in P._spatial_crops(tall, 224)] == [0.0, 1.0, 2.0]


def test_short_video_repeats_the_available_frames() -> None:
    assert video_clip_frames(3, 10.0) == [[0, 2]] * 5
    assert video_clip_frames(1, 25.0) == [[0, 0]] * 5
