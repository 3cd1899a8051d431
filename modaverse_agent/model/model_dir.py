"""A ModaVerse directory on disk: its layout, and the one reader both engines load it through.

Layout (nothing pickled; the base LLM is referenced by ``llm`` in the config, not copied)::

    modaverse_config.json          ModaVerseConfig (versioned)
    projector.safetensors          proj.<modality|shared>.{weight,bias}
    adapter/adapter_config.json    the peft LoRA config (loadable with peft alone)
    adapter/adapter_model.safetensors
    token_rows.safetensors         embed.indices / embed.weight: trained input rows (media tokens, and for an
                                   imported release the whole table); lm_head.indices / lm_head.weight: output
                                   rows when they were trained (the release trained all of lm_head)
    tokenizer/                     the tokenizer with the added tokens, so ids never shift

:func:`read_model_dir` checks that every file is there and reads the config; the :class:`ModelDir` it
returns reads the parts: tensors (errors name the file and the tensor), the projector, the encoder and
where the base LLM is. The torch engine (:mod:`.checkpoint`) and the llama.cpp engine
(:mod:`.llamacpp_files`) both load through it.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import ModelError
from .builtin import resolve_llm
from .config import CONFIG_NAME, ModaVerseConfig

if TYPE_CHECKING:
    import torch

PROJECTOR_FILE = "projector.safetensors"
ADAPTER_DIR = "adapter"
ADAPTER_CONFIG = f"{ADAPTER_DIR}/adapter_config.json"
ADAPTER_WEIGHTS = f"{ADAPTER_DIR}/adapter_model.safetensors"
ROWS_FILE = "token_rows.safetensors"
TOKENIZER_DIR = "tokenizer"
REQUIRED = (
    CONFIG_NAME,
    PROJECTOR_FILE,
    ADAPTER_CONFIG,
    ADAPTER_WEIGHTS,
    ROWS_FILE,
)


def check_tensors(found: dict[str, torch.Tensor], expected: dict[str, torch.Tensor], where: str) -> None:
    """Refuse ``found`` unless it has exactly the names and shapes of ``expected`` (errors name ``where``)."""
    missing = sorted(set(expected) - set(found))
    if missing:
        raise ModelError(f"{where}: tensor `{missing[0]}` is missing ({len(missing)} missing in all)")
    unexpected = sorted(set(found) - set(expected))
    if unexpected:
        raise ModelError(f"{where}: unexpected tensor `{unexpected[0]}`; was this file written for another model?")
    for name, tensor in found.items():
        if tuple(tensor.shape) != tuple(expected[name].shape):
            raise ModelError(
                f"{where}: `{name}` has shape {tuple(tensor.shape)}, the model expects {tuple(expected[name].shape)}; "
                "the checkpoint does not match its config or base LLM"
            )


@dataclass(frozen=True)
class ModelDir:
    """A ModaVerse directory whose files are all there, with its config; reads its parts on demand."""

    root: Path
    config: ModaVerseConfig

    def read(self, name: str) -> dict[str, torch.Tensor]:
        """The tensors of the safetensors file ``name`` (a path inside the directory, e.g. :data:`ROWS_FILE`)."""
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return load_file(str(self.root / name))
        except (SafetensorError, OSError) as e:
            raise ModelError(f"{name} is not a readable safetensors file ({e})") from e

    def load_projector(self, projector: Any) -> None:
        """Load :data:`PROJECTOR_FILE` into ``projector`` (a :class:`~.projector.MediaProjector`; shapes checked)."""
        state = self.read(PROJECTOR_FILE)
        check_tensors(state, projector.state_dict(), PROJECTOR_FILE)
        projector.load_state_dict(state)

    def adapter_config(self) -> dict[str, Any]:
        """The peft LoRA config (:data:`ADAPTER_CONFIG`) as a dict."""
        return json.loads((self.root / ADAPTER_CONFIG).read_text(encoding="utf-8"))

    @property
    def saved_tokenizer(self) -> Path | None:
        """The folder of the tokenizer saved beside the model (None: rebuilt from the base LLM's)."""
        folder = self.root / TOKENIZER_DIR
        return folder if (folder / "tokenizer_config.json").is_file() else None

    def llm_path(self, *, tokenizer_only: bool = False) -> str:
        """Where the base LLM is (see :func:`~.builtin.resolve_llm`; a built-in is prepared on first use)."""
        return resolve_llm(self.config.llm, self.root, tokenizer_only=tokenizer_only)

    def load_encoder(self) -> Any | None:
        """The media encoder the config names, loaded (None when it names none)."""
        if self.config.encoder is None:
            return None
        from ..encoders.imagebind import ImageBindEncoder

        path = resolve_llm(self.config.encoder, self.root)
        return ImageBindEncoder.from_pretrained(path, self.config.encoder_config)


def read_model_dir(directory: str | Path, *, llm: str | None = None, dtype: str | None = None) -> ModelDir:
    """Check that ``directory`` holds every file of a ModaVerse directory and read its config.

    ``llm`` overrides where the base LLM is (a moved copy; the config's GGUF file name is then dropped);
    ``dtype`` overrides the config's dtype.
    """
    root = Path(directory)
    if not root.is_dir():
        raise ModelError(f"ModaVerse model directory {root} does not exist")
    if not any((root / name).exists() for name in REQUIRED):
        raise ModelError(
            f"{root} is not a model folder written by `modaverse train` (it has none of {list(REQUIRED)}); "
            "give the folder that `modaverse train -o` wrote"
        )
    for name in REQUIRED:
        if not (root / name).is_file():
            raise ModelError(
                f"{root} is missing {name}; it was not written completely by save_pretrained (or was moved in parts)"
            )
    config = ModaVerseConfig.load(root)
    if llm is not None:
        config = dataclasses.replace(config, llm=llm, gguf_file=None)
    if dtype is not None:
        config = dataclasses.replace(config, dtype=dtype)
    return ModelDir(root, config)
