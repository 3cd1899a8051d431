"""ModaVerseConfig: everything needed to rebuild a ModaVerse model, saved as versioned JSON.

The file never holds weights: the base LLM is named by ``llm`` (a local directory, a Hugging Face id or
a ``.gguf`` file) and the trained parts live next to the config (see :mod:`.checkpoint`).
Unknown keys on load warn (an older reader meets a newer field) and are dropped; a newer ``version``
is an error because its meaning cannot be guessed.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from ..errors import ModelError

logger = logging.getLogger(__name__)

#: Bumped when a field changes meaning; readers refuse newer versions.
CONFIG_VERSION = 1
CONFIG_NAME = "modaverse_config.json"

PROMPT_FORMATS = ("auto", "chat", "plain", "legacy")
OUTPUT_FORMATS = ("json", "legacy")
DTYPES = ("float32", "bfloat16", "float16")
MODALITIES = ("image", "audio", "video")


def _h(text: str) -> dict[str, str]:
    return {"help": text}


@dataclass
class ModaVerseConfig:
    """The architecture and prompting of one ModaVerse model (constructor arguments = JSON keys)."""

    llm: str = field(metadata=_h("Base LLM: a local directory, a Hugging Face id, or a path to a .gguf file."))
    gguf_file: str | None = field(
        default=None, metadata=_h("GGUF file name inside `llm` (set automatically when `llm` is a .gguf path).")
    )
    dtype: str = field(default="float32", metadata=_h("Weights' dtype: float32, bfloat16 or float16."))
    encoder_dim: int = field(
        default=1024, metadata=_h("Width of the media encoder's embeddings (ImageBind huge: 1024).")
    )
    encoder: str | None = field(
        default=None, metadata=_h("Local ImageBind weights to load with the model (None: pass an encoder yourself).")
    )
    encoder_config: str = field(
        default="huge", metadata=_h("ImageBind preset or config JSON for `encoder` (`huge`, `tiny`, a path).")
    )
    modalities: tuple[str, ...] = field(default=MODALITIES, metadata=_h("Input modalities with a projector."))
    blind_media: bool = field(
        default=False,
        metadata=_h(
            "With no encoder, mark media as present with zero features (the model knows something is attached, "
            "not what) instead of refusing them. The built-in default model is trained this way."
        ),
    )
    num_media_tokens: int = field(default=1, metadata=_h("Soft tokens per media item (the release: 1)."))
    shared_projector: bool = field(
        default=False, metadata=_h("One projector for every modality (as the release) instead of one each.")
    )
    projector_bias: bool = field(default=True, metadata=_h("Whether the projectors have a bias."))
    media_start_token: str = field(default="<|media_start|>", metadata=_h("Token opening a media item in the prompt."))
    media_end_token: str = field(default="<|media_end|>", metadata=_h("Token closing a media item in the prompt."))
    media_placeholder_token: str = field(
        default="<|media|>", metadata=_h("Placeholder replaced by one projected soft token.")
    )
    extra_tokens: list[str] = field(
        default_factory=list, metadata=_h("Further tokens added after start/end (the release's [TEXT], [IMAGE], ...).")
    )
    lora_r: int = field(default=16, metadata=_h("LoRA rank."))
    lora_alpha: int = field(default=32, metadata=_h("LoRA alpha (scaling = alpha / r)."))
    lora_dropout: float = field(default=0.05, metadata=_h("LoRA dropout."))
    lora_targets: list[str] = field(
        default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj"], metadata=_h("Module names LoRA adapts.")
    )
    train_embeddings: bool = field(
        default=False,
        metadata=_h(
            "Also train the whole input embedding table and (if untied) the output layer, as the official release "
            "did; both are then saved in full with the model (large for a big vocabulary). Helps small or random "
            "bases; LoRA alone suits a pretrained one."
        ),
    )
    prompt_format: str = field(
        default="auto", metadata=_h("auto (chat template if the tokenizer has one, else plain), chat, plain or legacy.")
    )
    output_format: str = field(
        default="json",
        metadata=_h("json (meta-response JSON, constrainable) or legacy (`Modality: [IMAGE] Prompt: ...`)."),
    )
    stop_strings: list[str] = field(
        default_factory=list, metadata=_h("Extra strings that end generation (the release: `###`).")
    )
    max_new_tokens: int = field(default=512, metadata=_h("Default generation budget."))
    max_prompt_tokens: int | None = field(
        default=None, metadata=_h("Longest accepted prompt (None: the LLM's context minus max_new_tokens).")
    )
    closing_reserve: int = field(
        default=48, metadata=_h("Constrained decoding closes the JSON when this many tokens are left.")
    )
    trained_tasks: list[dict[str, Any]] | None = field(
        default=None,
        metadata=_h(
            "The tasks as the model was trained to see them (task, description, modality, args_schema, "
            "input_modalities): the system prompt describes a task of the same name in these words, whatever "
            "its generator's own description says, so the model meets the prompt it learned. None: as given."
        ),
    )
    version: int = field(default=CONFIG_VERSION, metadata=_h("Config format version."))

    def __post_init__(self) -> None:
        problems = []
        if not isinstance(self.llm, str) or not self.llm:
            problems.append("`llm` must name the base LLM (a directory, a hub id or a .gguf path)")
        if self.llm.endswith(".gguf") and self.gguf_file is None:
            path = Path(self.llm)
            self.llm, self.gguf_file = str(path.parent), path.name
        if self.dtype not in DTYPES:
            problems.append(f"`dtype` must be one of {DTYPES}, got {self.dtype!r}")
        if self.prompt_format not in PROMPT_FORMATS:
            problems.append(f"`prompt_format` must be one of {PROMPT_FORMATS}, got {self.prompt_format!r}")
        if self.output_format not in OUTPUT_FORMATS:
            problems.append(f"`output_format` must be one of {OUTPUT_FORMATS}, got {self.output_format!r}")
        self.modalities = tuple(self.modalities)
        bad = [m for m in self.modalities if m not in MODALITIES]
        if bad or not self.modalities:
            problems.append(f"`modalities` must be a non-empty subset of {MODALITIES}, got {list(self.modalities)}")
        for name in ("encoder_dim", "num_media_tokens", "lora_r", "lora_alpha", "max_new_tokens"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                problems.append(f"`{name}` must be a positive integer, got {getattr(self, name)!r}")
        if not 0 <= self.lora_dropout < 1:
            problems.append(f"`lora_dropout` must be in [0, 1), got {self.lora_dropout}")
        tokens = self.added_tokens
        if len(set(tokens)) != len(tokens) or not all(isinstance(t, str) and t for t in tokens):
            problems.append(f"media and extra tokens must be distinct non-empty strings, got {tokens}")
        if self.trained_tasks is not None and not all(
            isinstance(t, dict) and isinstance(t.get("task"), str) and isinstance(t.get("description"), str)
            for t in self.trained_tasks
        ):
            problems.append("`trained_tasks` must be a list of objects with `task` and `description` strings")
        if self.version > CONFIG_VERSION:
            problems.append(
                f"config version {self.version} is newer than this modaverse-agent understands ({CONFIG_VERSION}); "
                "upgrade modaverse-agent"
            )
        if problems:
            raise ModelError("invalid ModaVerse config: " + "; ".join(problems))

    @property
    def added_tokens(self) -> list[str]:
        """Tokens added to the tokenizer, in order: start, end, extras, placeholder."""
        return [self.media_start_token, self.media_end_token, *self.extra_tokens, self.media_placeholder_token]

    # -- JSON ------------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict."""
        data = dataclasses.asdict(self)
        data["modalities"] = list(self.modalities)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any], *, source: str = "config") -> ModaVerseConfig:
        """Build from a dict; unknown keys warn and are dropped, a missing ``llm`` is an error."""
        if not isinstance(data, dict):
            raise ModelError(f"{source}: a ModaVerse config must be a JSON object, got {type(data).__name__}")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            logger.warning("%s: ignoring unknown ModaVerse config key(s) %s", source, unknown)
        if "llm" not in data:
            raise ModelError(f"{source}: missing `llm` (the base LLM this model was trained on)")
        try:
            return cls(**{k: v for k, v in data.items() if k in known})
        except TypeError as e:
            raise ModelError(f"{source}: {e}") from e

    def save(self, directory: str | Path) -> Path:
        """Write ``modaverse_config.json`` into ``directory``; returns its path."""
        path = Path(directory) / CONFIG_NAME
        path.write_text(json.dumps(self.to_dict(), indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        return path

    @classmethod
    def load(cls, directory: str | Path) -> ModaVerseConfig:
        """Read ``modaverse_config.json`` from ``directory``."""
        path = Path(directory) / CONFIG_NAME
        if not path.is_file():
            raise ModelError(f"{path} is missing: {directory} is not a ModaVerse model directory")
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise ModelError(f"{path} is not valid JSON ({e})") from e
        return cls.from_dict(data, source=str(path))
