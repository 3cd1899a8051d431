"""Where the ImageBind reference cuts clips: pytorchvideo's ``ConstantClipsPerVideoSampler`` in exact arithmetic.

Time points are ``Fraction``s exactly as the reference computes them, so sample and frame indices
(truncation, ``ceil``) land on the same integers.
"""

from __future__ import annotations

import math
from fractions import Fraction

import torch


def clip_timepoints(duration_s: float, clip_duration: int, clips_per_video: int) -> list[tuple[Fraction, Fraction]]:
    """``clips_per_video`` (start, end) pairs spread evenly so the last clip ends at the end (or at
    ``clip_duration`` for media shorter than one clip: every clip is then ``[0, clip_duration]``)."""
    if clips_per_video < 1 or clip_duration <= 0:
        raise ValueError("need clips_per_video >= 1 and clip_duration > 0")
    max_start = Fraction(max(duration_s - clip_duration, 0))
    step = Fraction(max_start, clips_per_video)
    points = []
    for k in range(clips_per_video):
        start = step * k
        points.append((start, start + clip_duration))
        if step * (k + 1) > max_start:
            break
    return points


def audio_clip_ranges(
    num_samples: int, sample_rate: int, clip_duration: int = 2, clips_per_video: int = 3
) -> list[tuple[int, int]]:
    """Sample ranges ``[start, end)`` of each audio clip (``end`` may run past the end of the audio)."""
    duration = num_samples / sample_rate
    return [
        (int(s * sample_rate), int(e * sample_rate))
        for s, e in clip_timepoints(duration, clip_duration, clips_per_video)
    ]


def video_clip_frames(
    num_frames: int, fps: float, clip_duration: int = 2, clips_per_video: int = 5, frames_per_clip: int = 2
) -> list[list[int]]:
    """Frame indices kept for each video clip: the clip's frames ``[ceil(fps*start), min(ceil(fps*end), n))``
    subsampled uniformly to ``frames_per_clip`` (``linspace(0, t - 1).long()``)."""
    duration = float(num_frames) / float(fps)
    out = []
    for start, end in clip_timepoints(duration, clip_duration, clips_per_video):
        first = math.ceil(fps * start)
        stop = min(math.ceil(fps * end), num_frames)
        if stop <= first:
            raise ValueError(f"clip {float(start):.3f}-{float(end):.3f} s holds no frame of {num_frames} at {fps} fps")
        t = stop - first
        picks = torch.linspace(0, t - 1, frames_per_clip).clamp(0, t - 1).long().tolist()
        out.append([first + p for p in picks])
    return out
