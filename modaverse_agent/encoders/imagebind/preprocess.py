"""ImageBind's input preprocessing on torch, Pillow and PyAV alone (no torchvision/torchaudio/pytorchvideo).

Each function reproduces ``imagebind.data.load_and_transform_*`` of the reference:

- image: Pillow bicubic resize of the short side to 224, centre crop (offset ``round``), /255, CLIP mean/std;
- audio: resample to 16 kHz, 3 clips of 2 s, per-clip mean removal *in place on overlapping views*
  (the reference's aliasing, kept on purpose), Kaldi fbank of channel 0, 128 x 204, ``(x + 4.268) / 9.138``;
- video: 5 clips of 2 s, first and last frame of each, bilinear short side to 224, CLIP mean/std,
  3 crops along the long side (offset ``ceil``): (15, 3, 2, 224, 224);
- text: CLIP BPE ids, (77,).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F

from ...errors import MediaError
from ...media import DEFAULT_LIMITS, MediaItem, MediaLimits
from ...media_decode import decode_audio, decode_image, decode_video_frames, probe_video
from .audio_features import kaldi_fbank, resample
from .clips import audio_clip_ranges, video_clip_frames
from .tokenizer import default_tokenizer

if TYPE_CHECKING:
    from PIL import Image as PILImage

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
IMAGE_SIZE = 224
AUDIO_SAMPLE_RATE = 16000
AUDIO_NUM_MEL_BINS = 128
AUDIO_TARGET_LEN = 204
AUDIO_MEAN, AUDIO_STD = -4.268, 9.138
AUDIO_CLIP_DURATION, AUDIO_CLIPS = 2, 3
VIDEO_CLIP_DURATION, VIDEO_CLIPS, VIDEO_FRAMES_PER_CLIP, VIDEO_CROPS = 2, 5, 2, 3


def _normalize_(x: torch.Tensor, mean: Sequence[float], std: Sequence[float], view: tuple[int, ...]) -> torch.Tensor:
    m = torch.as_tensor(mean, dtype=x.dtype).view(view)
    s = torch.as_tensor(std, dtype=x.dtype).view(view)
    return x.sub_(m).div_(s)


# -- image -----------------------------------------------------------------------------------------


def image_tensor(image: PILImage.Image, size: int = IMAGE_SIZE) -> torch.Tensor:
    """An RGB PIL image -> (3, size, size) float32, as the reference's Resize/CenterCrop/ToTensor/Normalize."""
    from PIL import Image

    if image.mode != "RGB":
        raise ValueError(f"image_tensor expects an RGB image, got mode {image.mode}; use decode_image")
    w, h = image.size
    short, long = (w, h) if w <= h else (h, w)
    new_long = int(size * long / short)
    new_w, new_h = (size, new_long) if w <= h else (new_long, size)
    image = image.resize((new_w, new_h), Image.Resampling.BICUBIC)
    top, left = round((new_h - size) / 2.0), round((new_w - size) / 2.0)  # Python's round, as torchvision
    image = image.crop((left, top, left + size, top + size))
    x = torch.from_numpy(np.array(image, np.uint8, copy=True)).view(size, size, 3)
    x = x.permute(2, 0, 1).contiguous().to(dtype=torch.float32).div(255)
    return _normalize_(x, CLIP_MEAN, CLIP_STD, (-1, 1, 1))


def preprocess_image(item: MediaItem, *, limits: MediaLimits = DEFAULT_LIMITS) -> torch.Tensor:
    """An image file -> (3, 224, 224)."""
    return image_tensor(decode_image(item, limits=limits))


# -- audio -----------------------------------------------------------------------------------------


def waveform_clips(
    waveform: torch.Tensor,
    sample_rate: int,
    *,
    num_mel_bins: int = AUDIO_NUM_MEL_BINS,
    target_length: int = AUDIO_TARGET_LEN,
    clip_duration: int = AUDIO_CLIP_DURATION,
    clips_per_video: int = AUDIO_CLIPS,
) -> torch.Tensor:
    """(channels, samples) float audio at any rate -> (clips, 1, num_mel_bins, target_length) features.

    Like the reference, each clip's mean (over all channels) is subtracted in place from a view of
    one shared waveform, so overlapping clips see the earlier clips' shifts; the fbank then uses
    channel 0 only.
    """
    if waveform.ndim != 2 or waveform.shape[1] == 0:
        raise ValueError(f"waveform must be (channels, samples) and not empty, got shape {tuple(waveform.shape)}")
    try:
        wav = resample(waveform.to(torch.float32), sample_rate, AUDIO_SAMPLE_RATE)
    except ValueError as e:
        raise MediaError(str(e)) from e
    wav = wav.clone() if wav is waveform else wav  # the in-place shifts must not touch the caller's tensor
    min_len = int(AUDIO_SAMPLE_RATE * 0.025)
    if wav.shape[1] < min_len:
        raise MediaError(
            f"audio is {wav.shape[1] / AUDIO_SAMPLE_RATE * 1000:.1f} ms long; ImageBind needs at least 25 ms"
        )
    mean = torch.tensor(AUDIO_MEAN, dtype=torch.float32)
    std = torch.tensor(AUDIO_STD, dtype=torch.float32)
    clips = []
    for start, end in audio_clip_ranges(wav.shape[1], AUDIO_SAMPLE_RATE, clip_duration, clips_per_video):
        clip = wav[:, start:end]
        clip -= clip.mean()  # in place on the shared waveform, as the reference
        if clip.shape[1] < min_len:
            raise MediaError(f"an audio clip has {clip.shape[1]} samples; ImageBind needs at least {min_len}")
        fbank = kaldi_fbank(clip[0], sample_rate=AUDIO_SAMPLE_RATE, num_mel_bins=num_mel_bins).transpose(0, 1)
        pad = target_length - fbank.shape[1]
        fbank = F.pad(fbank, (0, pad), mode="constant", value=0) if pad > 0 else fbank[:, :target_length]
        clips.append(fbank.unsqueeze(0).sub_(mean).div_(std))
    return torch.stack(clips, dim=0)


def preprocess_audio(item: MediaItem, *, limits: MediaLimits = DEFAULT_LIMITS) -> torch.Tensor:
    """An audio file (or a video's audio track) -> (3, 1, 128, 204)."""
    audio = decode_audio(item, limits=limits)
    try:
        return waveform_clips(torch.from_numpy(audio.samples), audio.sample_rate)
    except MediaError as e:
        raise MediaError(f"{item.name}: {e}") from None


# -- video -----------------------------------------------------------------------------------------


def _short_side_scale(x: torch.Tensor, size: int) -> torch.Tensor:
    """pytorchvideo's ShortSideScale: (C, T, H, W) bilinear, no antialias, long side ``floor``."""
    _, _, h, w = x.shape
    if w < h:
        new_h, new_w = math.floor((float(h) / w) * size), size
    else:
        new_h, new_w = size, math.floor((float(w) / h) * size)
    return F.interpolate(x, size=(new_h, new_w), mode="bilinear", align_corners=False)


def _spatial_crops(x: torch.Tensor, size: int, num_crops: int = VIDEO_CROPS) -> list[torch.Tensor]:
    """Crops of (C, T, H, W) along the longer side at offsets 0, ceil((L - size) / 2), L - size."""
    if num_crops != 3:
        raise ValueError("only 3 spatial crops are implemented, as the reference uses")
    h, w = x.shape[2], x.shape[3]
    crops = []
    for idx in range(num_crops):
        y, x0 = math.ceil((h - size) / 2), math.ceil((w - size) / 2)
        if h > w:
            y = {0: 0, 1: y, 2: h - size}[idx]
        else:
            x0 = {0: 0, 1: x0, 2: w - size}[idx]
        crops.append(x[:, :, y : y + size, x0 : x0 + size])
    return crops


def video_clip_tensor(frames: np.ndarray, size: int = IMAGE_SIZE) -> torch.Tensor:
    """One clip's frames (T, H, W, 3) uint8 -> its 3 spatial crops, (3, 3, T, size, size)."""
    x = torch.from_numpy(np.ascontiguousarray(frames)).to(torch.float32).permute(3, 0, 1, 2)  # (C, T, H, W)
    x = x / 255.0
    x = _short_side_scale(x, size)
    x = _normalize_(x.clone(), CLIP_MEAN, CLIP_STD, (-1, 1, 1, 1))
    return torch.stack(_spatial_crops(x, size), dim=0)


def preprocess_video(item: MediaItem, *, limits: MediaLimits = DEFAULT_LIMITS) -> torch.Tensor:
    """A video file -> (15, 3, 2, 224, 224): index ``temporal_clip * 3 + spatial_crop``."""
    info = probe_video(item, limits=limits)
    try:
        per_clip = video_clip_frames(info.num_frames, info.fps, VIDEO_CLIP_DURATION, VIDEO_CLIPS, VIDEO_FRAMES_PER_CLIP)
    except ValueError as e:
        raise MediaError(f"{item.name}: {e}") from e
    wanted = sorted({i for clip in per_clip for i in clip})
    decoded = dict(zip(wanted, decode_video_frames(item, wanted, limits=limits), strict=True))
    clips = [video_clip_tensor(np.stack([decoded[i] for i in clip])) for clip in per_clip]
    return torch.cat(clips, dim=0)


# -- text ------------------------------------------------------------------------------------------


def tokenize(texts: str | Sequence[str]) -> torch.Tensor:
    """Strings -> (B, 77) int64 CLIP BPE ids."""
    return default_tokenizer()(texts)


# -- dispatch --------------------------------------------------------------------------------------

PREPROCESSORS = {"image": preprocess_image, "audio": preprocess_audio, "video": preprocess_video}


def preprocess(modality: str, item: MediaItem, *, limits: MediaLimits = DEFAULT_LIMITS) -> torch.Tensor:
    """Preprocess one item for ``modality`` ("image", "audio" or "video"; a video's audio is "audio")."""
    if modality not in PREPROCESSORS:
        raise ValueError(f"unknown modality {modality!r}; use one of {sorted(PREPROCESSORS)}")
    if modality != item.modality and not (modality == "audio" and item.modality == "video"):
        raise MediaError(f"{item.name} is {item.modality}, it cannot be encoded as {modality}")
    return PREPROCESSORS[modality](item, limits=limits)
