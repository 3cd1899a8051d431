"""A fake ModaVerse-7b-v0 release of any size, offline: for the importer's tests and the real-size check.

The official ``pytorch_model.pt`` holds only the trained tensors, under the release's own names: the
shared projector ``linear_proj.{weight,bias}``, LoRA on every layer's ``q/k/v/o_proj``
(``LLM.base_model.model.model.layers.N.self_attn.<proj>.lora_{A,B}.default.weight``) and the whole input
table and output layer (base vocabulary + the release's 6 tokens). :func:`release_state` builds exactly
those names with the shapes a base LLM's config implies, random values; :func:`write_release_base` writes
what the importer reads of the base LLM (its config and tokenizer, no weights); :func:`sized_tokenizer`
makes a tokenizer of exactly ``vocab_size`` tokens (Vicuna's 32000 at real size) so the row counts match.

    base = write_release_base(tmp / "vicuna", LlamaConfig(...), sized_tokenizer(32000))
    torch.save(release_state(config, 32000 + len(RELEASE_TOKENS), rank=32), tmp / "pytorch_model.pt")
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from importlib.resources import files
from pathlib import Path
from typing import Any

import torch

#: The release's names of the whole input table and output layer.
RELEASE_EMBED = "LLM.base_model.model.model.embed_tokens.weight"
RELEASE_HEAD = "LLM.base_model.model.lm_head.weight"
#: The modules the release's LoRA adapts, in the order their tensors are drawn.
RELEASE_LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj")
#: Vicuna's (Llama's) special tokens, ids 0, 1, 2.
SPECIALS = ("<unk>", "<s>", "</s>")
_CORPUS_SUFFIXES = (".txt", ".j2", ".md", ".toml", ".jsonl")


def _packaged_corpus() -> list[str]:
    """The project's own English text (prompts, corpora): what the synthetic tokenizer's merges are learnt on."""
    root = files("modaverse_agent.prompts")
    out: list[str] = []
    stack = [root]
    while stack:
        for entry in stack.pop().iterdir():
            if entry.is_dir():
                stack.append(entry)
            elif entry.name.endswith(_CORPUS_SUFFIXES):
                out.append(entry.read_text(encoding="utf-8"))
    return out


def sized_tokenizer(vocab_size: int, corpus: Iterable[str] | None = None) -> Any:
    """A byte-level BPE ``PreTrainedTokenizerFast`` of exactly ``vocab_size`` tokens (``<unk> <s> </s>`` first,
    ``<s>`` prepended like Llama's). Merges are learnt on ``corpus`` (default: the packaged prompts, so English
    prompts take about as many tokens as with a real tokenizer), then filled up with byte-pair merges."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    if vocab_size < len(SPECIALS) + len(alphabet):
        raise ValueError(f"`vocab_size` must be at least {len(SPECIALS) + len(alphabet)} (specials + 256 bytes)")
    learner = Tokenizer(models.BPE())
    learner.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=list(SPECIALS), initial_alphabet=alphabet, show_progress=False
    )
    learner.train_from_iterator(list(_packaged_corpus() if corpus is None else corpus), trainer)
    learnt = json.loads(learner.to_str())["model"]
    vocab: dict[str, int] = dict(learnt["vocab"])
    merges = [tuple(m.split(" ", 1)) if isinstance(m, str) else tuple(m) for m in learnt["merges"]]
    pairs = ((a, b) for a in alphabet for b in alphabet)
    while len(vocab) < vocab_size:
        a, b = next(pairs)
        if a + b not in vocab:
            vocab[a + b] = len(vocab)
            merges.append((a, b))
    tok = Tokenizer(models.BPE(vocab=vocab, merges=merges))
    tok.add_special_tokens(list(SPECIALS))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    bos = vocab["<s>"]
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", bos)]
    )
    hf = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", bos_token="<s>", eos_token="</s>")
    if len(hf) != vocab_size:
        raise RuntimeError(f"built a tokenizer of {len(hf)} tokens, not {vocab_size}")
    return hf


def _attention_shapes(llm_config: Any) -> dict[str, tuple[int, int]]:
    """``{proj: (in_features, out_features)}`` of one attention block of ``llm_config``."""
    text = llm_config.get_text_config() if hasattr(llm_config, "get_text_config") else llm_config
    hidden, heads = int(text.hidden_size), int(text.num_attention_heads)
    kv_heads = int(getattr(text, "num_key_value_heads", None) or heads)
    head_dim = int(getattr(text, "head_dim", None) or hidden // heads)
    return {
        "q_proj": (hidden, heads * head_dim),
        "k_proj": (hidden, kv_heads * head_dim),
        "v_proj": (hidden, kv_heads * head_dim),
        "o_proj": (heads * head_dim, hidden),
    }


def release_state(
    llm_config: Any,
    rows: int,
    *,
    encoder_dim: int = 1024,
    rank: int = 32,
    dtype: torch.dtype = torch.float32,
    seed: int = 7,
) -> dict[str, torch.Tensor]:
    """The release's state dict for a base LLM of ``llm_config``: ``rows`` table rows (base vocabulary + 6),
    an ``encoder_dim``-wide projector, rank-``rank`` LoRA on q/k/v/o of every layer; seeded random values
    drawn in a fixed order (projector, tables, then layer by layer), stored as ``dtype``."""
    text = llm_config.get_text_config() if hasattr(llm_config, "get_text_config") else llm_config
    hidden, layers = int(text.hidden_size), int(text.num_hidden_layers)
    g = torch.Generator().manual_seed(seed)

    def draw(*shape: int, scale: float) -> torch.Tensor:
        return (torch.randn(*shape, generator=g) * scale).to(dtype)

    state = {
        "linear_proj.weight": draw(hidden, encoder_dim, scale=0.1),
        "linear_proj.bias": draw(hidden, scale=0.1),
        RELEASE_EMBED: draw(rows, hidden, scale=0.02),
        RELEASE_HEAD: draw(rows, hidden, scale=0.02),
    }
    shapes = _attention_shapes(llm_config)
    for i in range(layers):
        for name in RELEASE_LORA_TARGETS:
            fan_in, fan_out = shapes[name]
            prefix = f"LLM.base_model.model.model.layers.{i}.self_attn.{name}"
            state[f"{prefix}.lora_A.default.weight"] = draw(rank, fan_in, scale=0.1)
            state[f"{prefix}.lora_B.default.weight"] = draw(fan_out, rank, scale=0.1)
    return state


def write_release_base(directory: str | Path, llm_config: Any, tokenizer: Any) -> Path:
    """Write what the importer reads of the base LLM: ``config.json`` and the tokenizer (no weights)."""
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    llm_config.save_pretrained(str(out))
    tokenizer.save_pretrained(str(out))
    return out


def write_release(path: str | Path, state: dict[str, torch.Tensor]) -> Path:
    """Save ``state`` as the release's ``pytorch_model.pt`` (a plain, weights-only torch state dict)."""
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    torch.save(state, str(out))
    return out
