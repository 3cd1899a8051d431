"""The language model: loading (directory, hub id or GGUF), media tokens with trainable rows, LoRA.

Trainable token rows: the media tokens' input-embedding rows are trained, the rest of the table stays
frozen. :class:`TrainedRowsEmbedding` replaces the LLM's input embedding; it shares the frozen table's
``weight`` and keeps the trained rows as a small ``rows`` parameter that overrides them in ``forward``.
That costs one gather per step and no copy of the table (peft's ``trainable_token_indices`` rebuilds the
whole table every forward, which a 262k-token vocabulary cannot afford at decode time).
:meth:`TrainedRowsEmbedding.materialize` writes the rows into the table (``merge_and_unload``); with tied
input/output embeddings the output rows then follow, as they do when peft merges.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..errors import ModelError
from .config import ModaVerseConfig
from .gguf_file import gguf_architecture

logger = logging.getLogger(__name__)

_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def torch_dtype(name: str) -> torch.dtype:
    """``"bfloat16"`` -> ``torch.bfloat16``."""
    return _DTYPES[name]


# -- loading ---------------------------------------------------------------------------------------
def forget_gguf_quantization(model: Any) -> Any:
    """Drop the marker transformers leaves on a model read from a GGUF: its weights are dequantised already,
    and the marker blocks saving and adapters. Returns ``model``."""
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    return model


def _check_causal_lm(config: Any, what: str) -> None:
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    if config.model_type not in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES:
        raise ModelError(
            f"{what} is a {config.model_type!r} model, not a causal language model; "
            "give a decoder-only LLM (llama, gemma3, qwen2, mistral, ...)"
        )


def load_llm(
    source: str,
    *,
    gguf_file: str | None = None,
    dtype: str = "float32",
    device: torch.device | str | None = None,
    device_map: str | None = None,
    with_tokenizer: bool = True,
) -> tuple[Any, Any]:
    """Load ``(model, tokenizer)`` from a local directory, a hub id (cached, or online) or a GGUF file.

    GGUF weights are dequantized on load, so the model is a plain ``dtype`` model afterwards.
    ``device_map="auto"`` lets accelerate spread the layers over the visible GPUs (``device`` is then unused).
    ``with_tokenizer=False`` skips the tokenizer (returned as None) when a saved one will be used.
    """
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    kwargs: dict[str, Any] = {}
    what = source
    if gguf_file is not None:
        path = Path(source) / gguf_file
        if not path.is_file():
            raise ModelError(f"GGUF file {path} does not exist")
        arch = gguf_architecture(path)
        kwargs["gguf_file"] = gguf_file
        what = f"GGUF file {path} (architecture {arch!r})"
    elif not Path(source).is_dir() and (Path(source).exists() or source.startswith((".", "/", "~"))):
        raise ModelError(f"LLM {source!r} is not a directory; give a model directory, a hub id or a .gguf file")
    try:
        config = AutoConfig.from_pretrained(source, **kwargs)
    except (OSError, ValueError, KeyError) as e:
        raise ModelError(
            f"cannot read the LLM config of {what}: {str(e).rstrip('.')}. Give a local model directory, "
            "a downloaded hub id or a GGUF of a supported architecture"
        ) from e
    _check_causal_lm(config, what)
    placed: dict[str, Any] = {}
    if device_map is not None:
        placed["device_map"] = device_map
        try:
            import accelerate  # noqa: F401
        except ImportError as e:
            raise ModelError(f"--device-map {device_map} needs accelerate: pip install accelerate") from e
    try:
        tokenizer = AutoTokenizer.from_pretrained(source, **kwargs) if with_tokenizer else None
        model: Any = AutoModelForCausalLM.from_pretrained(source, dtype=torch_dtype(dtype), **kwargs, **placed)
    except (OSError, ValueError, KeyError, RuntimeError) as e:
        raise ModelError(f"cannot load the LLM {what}: {type(e).__name__}: {e}") from e
    if gguf_file is not None:
        forget_gguf_quantization(model)
    if device is not None and device_map is None:
        model.to(device)
    model.eval()
    if tokenizer is not None:
        prepare_tokenizer(tokenizer)
    return model, tokenizer


def prepare_tokenizer(tokenizer: Any) -> None:
    """Left padding for batched generation; the EOS token pads when the tokenizer has no pad token."""
    tokenizer.padding_side = "left"
    if tokenizer.pad_token is None:
        if tokenizer.eos_token is None:
            raise ModelError("the tokenizer has neither a pad nor an EOS token; set `tokenizer.pad_token`")
        tokenizer.pad_token = tokenizer.eos_token


# -- media tokens ----------------------------------------------------------------------------------
def add_tokens(tokenizer: Any, config: ModaVerseConfig) -> dict[str, int]:
    """Add the config's tokens to ``tokenizer`` in order (start, end, extras, placeholder); ``{token: id}``.

    Media start/end/placeholder are special tokens; the extras (the release's ``[IMAGE]`` tags) are
    ordinary added tokens so they survive decoding. Tokens already present keep their ids.
    """
    from tokenizers import AddedToken

    special = {config.media_start_token, config.media_end_token, config.media_placeholder_token}
    for token in config.added_tokens:
        tokenizer.add_tokens([AddedToken(token, special=token in special, normalized=False)])
    return {t: tokenizer.convert_tokens_to_ids(t) for t in config.added_tokens}


def add_media_tokens(model: Any, tokenizer: Any, config: ModaVerseConfig) -> dict[str, int]:
    """:func:`add_tokens`, then grow the embeddings to the tokenizer; new rows start at the old rows' mean."""
    ids = add_tokens(tokenizer, config)
    old = model.get_input_embeddings().weight.shape[0]
    needed = max(len(tokenizer), max(ids.values()) + 1)
    if needed > old:
        model.resize_token_embeddings(needed, mean_resizing=False)
        with torch.no_grad():
            for layer in {id(m): m for m in (model.get_input_embeddings(), model.get_output_embeddings())}.values():
                if layer is not None and layer.weight.shape[0] == needed:
                    layer.weight[old:] = layer.weight[:old].mean(dim=0, keepdim=True)
    return ids


class TrainedRowsEmbedding(nn.Module):
    """An input embedding whose rows ``indices`` are the trainable ``rows``; the table stays frozen."""

    indices: torch.Tensor
    slot: torch.Tensor

    def __init__(self, base: nn.Embedding, indices: Sequence[int]) -> None:
        super().__init__()
        self._base = (base,)  # a tuple keeps it out of the module tree: `weight` is shared, not duplicated
        self.weight = base.weight
        self.weight.requires_grad_(False)
        self.num_embeddings, self.embedding_dim = base.weight.shape
        self.padding_idx = getattr(base, "padding_idx", None)
        idx = torch.as_tensor(list(indices), dtype=torch.long, device=base.weight.device)
        if idx.numel() and (idx.min() < 0 or idx.max() >= self.num_embeddings or idx.unique().numel() != idx.numel()):
            raise ValueError(f"trainable rows must be distinct ids below {self.num_embeddings}, got {idx.tolist()}")
        self.register_buffer("indices", idx)
        slot = torch.full((self.num_embeddings,), -1, dtype=torch.long, device=idx.device)
        slot[idx] = torch.arange(idx.numel(), device=idx.device)
        self.register_buffer("slot", slot, persistent=False)
        self.rows = nn.Parameter(base.weight.detach()[idx].clone())

    @property
    def base(self) -> nn.Embedding:
        """The wrapped embedding module."""
        return self._base[0]

    def _apply(self, fn: Any, recurse: bool = True) -> nn.Module:
        super()._apply(fn, recurse)
        self.base._apply(fn, recurse)
        self.base.weight = self.weight
        return self

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        """Base embeddings, with the trained rows at their ids (scaled like the base, e.g. Gemma)."""
        out = self.base(input_ids)
        slot = self.slot[input_ids]
        rows = self.rows[slot.clamp(min=0)]
        scale = getattr(self.base, "embed_scale", None)
        if scale is not None:
            rows = rows * (scale.to(rows.dtype) if torch.is_tensor(scale) else scale)
        return torch.where((slot >= 0).unsqueeze(-1), rows.to(out.dtype), out)

    def row_values(self) -> torch.Tensor:
        """The trained rows, ``(len(indices), dim)`` (detached)."""
        return self.rows.detach()

    def set_rows(self, values: torch.Tensor) -> None:
        """Overwrite the trained rows."""
        with torch.no_grad():
            self.rows.copy_(values.to(self.rows.dtype))

    def materialize(self) -> nn.Embedding:
        """Write the rows into the table and return the plain base embedding."""
        with torch.no_grad():
            self.weight.index_copy_(0, self.indices, self.rows.to(self.weight.dtype))
        return self.base


# -- LoRA ------------------------------------------------------------------------------------------
def apply_lora(model: Any, config: ModaVerseConfig, *, init_lora_weights: bool = True) -> Any:
    """Wrap ``model`` in a peft LoRA (the config's r/alpha/dropout/targets); media rows stay trainable."""
    from peft import LoraConfig, get_peft_model

    names = {n.rsplit(".", 1)[-1] for n, _ in model.named_modules()}
    missing = [t for t in config.lora_targets if t not in names]
    if missing:
        raise ModelError(
            f"LoRA targets {missing} are not modules of {type(model).__name__}; "
            "set them (`modaverse train --lora-targets`, comma-separated; `lora_targets` in the config) to names "
            f"it has (e.g. {sorted(n for n in names if n.endswith('_proj'))[:8]})"
        )
    lora = LoraConfig(
        r=config.lora_r,
        lora_alpha=config.lora_alpha,
        lora_dropout=config.lora_dropout,
        target_modules=list(config.lora_targets),
        bias="none",
        task_type="CAUSAL_LM",
        init_lora_weights=init_lora_weights,
    )
    with warnings.catch_warnings():  # peft asks transformers a deprecated question; not the user's concern
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
        peft_model = get_peft_model(model, lora)
    embed = peft_model.get_input_embeddings()
    if isinstance(embed, TrainedRowsEmbedding):
        embed.rows.requires_grad_(True)
    return peft_model
