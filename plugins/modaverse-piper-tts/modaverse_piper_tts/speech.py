"""Text to samples with a loaded piper voice: one model run per sentence, silence between sentences."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np

from modaverse_agent.errors import GeneratorError
from modaverse_agent.generators import GenerationCancelled

if TYPE_CHECKING:
    from piper import PiperVoice
    from piper.config import SynthesisConfig


def clean_text(prompt: object, max_chars: int) -> str:
    """The text to speak, stripped; an empty, non-text or over-long prompt raises a GeneratorError."""
    if not isinstance(prompt, str):
        raise GeneratorError(f"text-to-speech needs the text to speak as a string, got {type(prompt).__name__}")
    text = prompt.strip()
    if not text:
        raise GeneratorError("text-to-speech needs text to speak: the prompt is empty or only whitespace")
    if len(text) > max_chars:
        raise GeneratorError(
            f"the text to speak is {len(text)} characters, over the limit of {max_chars}: "
            "split it into several requests or raise the generator option `max_chars`"
        )
    return text


def peak_normalize(audio: np.ndarray) -> np.ndarray:
    """Scale a sentence to full range, as piper does by default (``normalize_audio``)."""
    peak = float(np.max(np.abs(audio))) if audio.size else 0.0
    if peak < 1e-8:
        return np.zeros_like(audio)
    return np.clip(audio / peak, -1.0, 1.0)


def synthesize(
    voice: PiperVoice,
    text: str,
    config: SynthesisConfig,
    *,
    sentence_silence: float = 0.0,
    progress: Callable[[int, int], None] | None = None,
    cancel: threading.Event | None = None,
) -> tuple[np.ndarray, int]:
    """Float32 mono samples in [-1, 1] for ``text`` and the number of sentences spoken.

    ``progress(done, total)`` is called after each sentence; once ``cancel`` is set, the next sentence
    raises GenerationCancelled. A sentence the model turns into NaN or Infinity raises a GeneratorError.
    """
    try:
        sentences = [p for p in voice.phonemize(text) if p]
    except Exception as e:  # espeak-ng or a language-specific phonemizer failed
        raise GeneratorError(f"piper could not phonemize the text ({type(e).__name__}: {e})") from e
    if not sentences:
        raise GeneratorError("the prompt has nothing speakable (no words after phonemization): give it some text")
    gap = np.zeros(round(sentence_silence * voice.config.sample_rate), dtype=np.float32)
    parts: list[np.ndarray] = []
    for i, phonemes in enumerate(sentences):
        if cancel is not None and cancel.is_set():
            raise GenerationCancelled(f"piper: cancelled after {i} of {len(sentences)} sentences")
        try:
            raw = voice.phoneme_ids_to_audio(voice.phonemes_to_ids(phonemes), config)
        except Exception as e:  # onnxruntime errors carry no useful type
            raise GeneratorError(
                f"piper failed on sentence {i + 1} of {len(sentences)} ({type(e).__name__}: {e})"
            ) from e
        audio = np.asarray(raw[0] if isinstance(raw, tuple) else raw, dtype=np.float32).reshape(-1)
        if not np.all(np.isfinite(audio)):
            raise GeneratorError(
                f"piper produced non-finite samples (NaN or Infinity) for sentence {i + 1} of {len(sentences)}: "
                "check the voice and the arguments length_scale, noise_scale and noise_w_scale"
            )
        parts.append(peak_normalize(audio))
        if gap.size and i < len(sentences) - 1:
            parts.append(gap)
        if progress is not None:
            progress(i + 1, len(sentences))
    return np.concatenate(parts).astype(np.float32, copy=False), len(sentences)
