"""Tiny, offline building blocks for tests and benchmarks (like diffusers' ``get_dummy_components``).

Everything is built from configs with random weights and a byte-level BPE tokenizer trained in memory
on a few sentences, so no download is ever needed. ``HashEncoder`` is a deterministic stand-in for
ImageBind: each item's embedding is seeded by a hash of its bytes.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from ..encoders.base import MediaEncoder
from ..media import MediaItem
from .config import ModaVerseConfig

#: A minimal chat template (role headers as plain text, ``</s>`` ends each turn).
CHAT_TEMPLATE = (
    "{% for m in messages %}<|{{ m['role'] }}|>\n{{ m['content'] }}</s>\n{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)

_CORPUS = [
    "a red apple on a table",
    "draw me a picture of a cat sitting in the sun",
    "make a short song about the sea and the waves",
    "generate a video of a dog running on the beach",
    "turn this photo into a painting",
    "what is in this image? describe it",
    "image_1 audio_1 video_1 image_2",
    '{"text":"Here you go.","invocations":[{"task":"text-to-image","prompt":"a cat","inputs":[],"args":{}}]}',
    '{"text":"Sure!","invocations":[{"task":"text-to-audio","prompt":"waves","args":{"duration":2}}]}',
    '{"text":"Done.","invocations":[{"task":"image-editing","prompt":"invert","inputs":["image_1"]}]}',
    "Modality: [IMAGE] Prompt: a cat on a sofa ###",
    "### Human: hello there\n### Assistant: hi",
    "You are ModaVerse, an assistant that understands images, audio and video.",
]


def tiny_tokenizer(*, chat_template: bool = False, vocab_size: int = 384, extra_specials: Sequence[str] = ()) -> Any:
    """A byte-level BPE ``PreTrainedTokenizerFast`` trained in memory; adds ``<s>`` like Llama's, ends with ``</s>``
    (``extra_specials`` follow ``<pad> <s> </s>`` as special tokens)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=["<pad>", "<s>", "</s>", *extra_specials],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_CORPUS * 4, trainer)
    bos = tok.token_to_id("<s>")
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", bos)]
    )
    hf = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", pad_token="<pad>")
    if chat_template:
        hf.chat_template = CHAT_TEMPLATE
    return hf


def tiny_llama(tokenizer: Any, *, hidden: int = 32, layers: int = 2, seed: int = 0, context: int = 8192) -> Any:
    """A random ``LlamaForCausalLM`` sized for ``tokenizer`` (untied output layer, like Vicuna)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden,
        intermediate_size=2 * hidden,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=context,
        tie_word_embeddings=False,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    torch.manual_seed(seed)
    return LlamaForCausalLM(config).eval()


def tiny_gemma3(tokenizer: Any, *, hidden: int = 32, seed: int = 0, context: int = 8192) -> Any:
    """A random ``Gemma3ForCausalLM`` (tied, scaled embeddings; sliding-window layers)."""
    from transformers import Gemma3ForCausalLM, Gemma3TextConfig

    config = Gemma3TextConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden,
        intermediate_size=2 * hidden,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
        head_dim=16,
        max_position_embeddings=context,
        sliding_window=16,
        layer_types=["sliding_attention", "full_attention"],
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    torch.manual_seed(seed)
    return Gemma3ForCausalLM(config).eval()


def save_tiny_base(
    directory: str | Path,
    *,
    chat_template: bool = False,
    arch: str = "llama",
    extra_specials: Sequence[str] = (),
    **kwargs: Any,
) -> Path:
    """Write a tiny base LLM + tokenizer directory (what ``ModaVerseConfig.llm`` points to)."""
    out = Path(directory)
    tokenizer = tiny_tokenizer(chat_template=chat_template, extra_specials=extra_specials)
    model = (tiny_gemma3 if arch == "gemma3" else tiny_llama)(tokenizer, **kwargs)
    model.save_pretrained(str(out))
    tokenizer.save_pretrained(str(out))
    return out


def tiny_config(llm: str | Path, **overrides: Any) -> ModaVerseConfig:
    """A ModaVerseConfig for a tiny base: 16-wide encoder features, LoRA r=4, short budgets."""
    values: dict[str, Any] = {
        "llm": str(llm),
        "encoder_dim": 16,
        "lora_r": 4,
        "lora_alpha": 8,
        "lora_dropout": 0.0,
        "max_new_tokens": 64,
        "closing_reserve": 24,
    }
    return ModaVerseConfig(**{**values, **overrides})


class HashEncoder(MediaEncoder):
    """A deterministic fake encoder: each item's embedding is Gaussian noise seeded by its bytes' hash."""

    modalities = ("image", "audio", "video")

    def __init__(self, dim: int = 16) -> None:
        self._dim = dim
        self.calls: list[tuple[str, int]] = []

    @property
    def embed_dim(self) -> int:
        return self._dim

    @property
    def device(self) -> torch.device:
        return torch.device("cpu")

    @property
    def dtype(self) -> torch.dtype:
        return torch.float32

    def to(self, device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> HashEncoder:
        return self

    def encode(self, modality: str, items: Sequence[MediaItem]) -> torch.Tensor:
        self.check_modality(modality)
        self.calls.append((modality, len(items)))
        rows = []
        for item in items:
            seed = int.from_bytes(hashlib.sha256(modality.encode() + item.data).digest()[:8], "little")
            rows.append(torch.randn(self._dim, generator=torch.Generator().manual_seed(seed)))
        return torch.stack(rows) if rows else torch.empty(0, self._dim)

    def encode_tensors(self, modality: str, batch: torch.Tensor) -> torch.Tensor:
        self.check_modality(modality)
        return batch.reshape(batch.shape[0], -1)[:, : self._dim].float()
