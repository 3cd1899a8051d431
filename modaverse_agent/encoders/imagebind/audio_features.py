"""Audio DSP in torch: band-limited sinc resampling and Kaldi-compatible log-mel filterbanks.

Both follow torchaudio's algorithms step for step (``torchaudio.functional.resample`` with its
defaults, ``torchaudio.compliance.kaldi.fbank``), in float32, so the features equal the ImageBind
reference's without depending on torchaudio.
"""

from __future__ import annotations

import math
from functools import lru_cache

import torch
import torch.nn.functional as F

#: Largest resampling kernel built (phases x taps); beyond it the rate pair is refused, not approximated.
MAX_RESAMPLE_KERNEL = 1 << 24


def _sinc_kernel(orig: int, new: int, lowpass_filter_width: int, rolloff: float) -> tuple[torch.Tensor, int]:
    """torchaudio's ``sinc_interp_hann`` kernel for reduced rates ``orig -> new``: (new, 1, taps), width."""
    base = min(orig, new) * rolloff
    width = math.ceil(lowpass_filter_width * orig / base)
    idx = torch.arange(-width, width + orig, dtype=torch.float32)[None, None] / orig
    t = torch.arange(0, -new, -1, dtype=torch.float32)[:, None, None] / new + idx
    t *= base
    t = t.clamp_(-lowpass_filter_width, lowpass_filter_width)
    window = torch.cos(t * math.pi / lowpass_filter_width / 2) ** 2
    t *= math.pi
    scale = base / orig
    kernels = torch.where(t == 0, torch.tensor(1.0).to(t), t.sin() / t)
    kernels *= window * scale
    return kernels, width


@lru_cache(maxsize=8)
def _cached_kernel(orig: int, new: int, lowpass_filter_width: int, rolloff: float) -> tuple[torch.Tensor, int]:
    return _sinc_kernel(orig, new, lowpass_filter_width, rolloff)


def resample(
    waveform: torch.Tensor, orig_freq: int, new_freq: int, *, lowpass_filter_width: int = 6, rolloff: float = 0.99
) -> torch.Tensor:
    """Resample (..., time) float32 audio from ``orig_freq`` to ``new_freq`` Hz (a copy-free no-op if equal).

    Raises ValueError for a rate pair whose kernel would exceed ``MAX_RESAMPLE_KERNEL`` entries
    (e.g. 44101 Hz -> 16000 Hz, whose rates share no common factor): convert such files first.
    """
    if orig_freq <= 0 or new_freq <= 0 or int(orig_freq) != orig_freq or int(new_freq) != new_freq:
        raise ValueError(f"sample rates must be positive integers, got {orig_freq} -> {new_freq}")
    if orig_freq == new_freq:
        return waveform
    gcd = math.gcd(int(orig_freq), int(new_freq))
    orig, new = int(orig_freq) // gcd, int(new_freq) // gcd
    taps = 2 * math.ceil(lowpass_filter_width * orig / (min(orig, new) * rolloff)) + orig
    if new * taps > MAX_RESAMPLE_KERNEL:
        raise ValueError(
            f"resampling {orig_freq} Hz -> {new_freq} Hz needs a {new}x{taps} kernel; "
            "convert the audio to a common rate (e.g. `ffmpeg -i IN -ar 48000 OUT`) first"
        )
    kernel, width = _cached_kernel(orig, new, lowpass_filter_width, rolloff)
    kernel = kernel.to(device=waveform.device, dtype=waveform.dtype)
    shape = waveform.shape
    flat = waveform.reshape(-1, shape[-1])
    length = flat.shape[-1]
    padded = F.pad(flat, (width, width + orig))
    out = F.conv1d(padded[:, None], kernel, stride=orig)
    out = out.transpose(1, 2).reshape(flat.shape[0], -1)
    target = math.ceil(new * length / orig)
    return out[..., :target].reshape(*shape[:-1], -1)


def _next_pow2(x: int) -> int:
    return 1 if x == 0 else 2 ** (x - 1).bit_length()


def _mel(freq: torch.Tensor) -> torch.Tensor:
    return 1127.0 * (1.0 + freq / 700.0).log()


@lru_cache(maxsize=8)
def mel_banks(num_bins: int, padded_window: int, sample_rate: float, low_freq: float, high_freq: float) -> torch.Tensor:
    """Kaldi's triangular mel filters, (num_bins, padded_window // 2 + 1) with a zero Nyquist column."""
    num_fft_bins = padded_window / 2
    nyquist = 0.5 * sample_rate
    if high_freq <= 0.0:
        high_freq += nyquist
    if not (0.0 <= low_freq < nyquist and 0.0 < high_freq <= nyquist and low_freq < high_freq):
        raise ValueError(f"bad mel range low={low_freq} high={high_freq} for sample rate {sample_rate}")
    fft_bin_width = sample_rate / padded_window
    mel_low = 1127.0 * math.log(1.0 + low_freq / 700.0)
    mel_high = 1127.0 * math.log(1.0 + high_freq / 700.0)
    delta = (mel_high - mel_low) / (num_bins + 1)
    b = torch.arange(num_bins).unsqueeze(1)
    left = mel_low + b * delta
    center = mel_low + (b + 1.0) * delta
    right = mel_low + (b + 2.0) * delta
    mel = _mel(fft_bin_width * torch.arange(num_fft_bins)).unsqueeze(0)
    up = (mel - left) / (center - left)
    down = (right - mel) / (right - center)
    banks = torch.max(torch.zeros(1), torch.min(up, down))
    return F.pad(banks, (0, 1), mode="constant", value=0)


def kaldi_fbank(
    waveform: torch.Tensor,
    *,
    sample_rate: float = 16000.0,
    num_mel_bins: int = 128,
    frame_length_ms: float = 25.0,
    frame_shift_ms: float = 10.0,
    preemphasis: float = 0.97,
    low_freq: float = 20.0,
    high_freq: float = 0.0,
) -> torch.Tensor:
    """Log-mel filterbank of a 1-D waveform, (frames, num_mel_bins), as ``kaldi.fbank`` computes it with
    ``window_type='hanning'``, ``dither=0``, ``use_energy=False``, ``snip_edges=True``, power spectrum,
    DC offset removed per frame, 512-point FFT (window rounded up to a power of two)."""
    if waveform.ndim != 1:
        raise ValueError(f"kaldi_fbank takes a 1-D waveform, got shape {tuple(waveform.shape)}")
    dtype = waveform.dtype
    shift = int(sample_rate * frame_shift_ms * 0.001)
    size = int(sample_rate * frame_length_ms * 0.001)
    padded = _next_pow2(size)
    n = waveform.shape[0]
    if n < size:
        raise ValueError(f"audio of {n} samples is shorter than one {size}-sample analysis window")
    frames = 1 + (n - size) // shift
    strided = waveform.as_strided((frames, size), (shift * waveform.stride(0), waveform.stride(0)))
    strided = strided - torch.mean(strided, dim=1).unsqueeze(1)
    if preemphasis != 0.0:
        offset = F.pad(strided.unsqueeze(0), (1, 0), mode="replicate").squeeze(0)
        strided = strided - preemphasis * offset[:, :-1]
    window = torch.hann_window(size, periodic=False, device=waveform.device, dtype=dtype).unsqueeze(0)
    strided = strided * window
    if padded != size:
        strided = F.pad(strided.unsqueeze(0), (0, padded - size), mode="constant", value=0).squeeze(0)
    spectrum = torch.fft.rfft(strided).abs().pow(2.0)
    banks = mel_banks(num_mel_bins, padded, float(sample_rate), float(low_freq), float(high_freq))
    energies = torch.mm(spectrum, banks.to(device=waveform.device, dtype=dtype).T)
    eps = torch.tensor(torch.finfo(torch.float).eps, device=waveform.device, dtype=dtype)
    return torch.max(energies, eps).log()
