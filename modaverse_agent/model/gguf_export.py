"""GGUF files for llama.cpp: a peft LoRA as a GGUF adapter, and a transformers Llama as a GGUF model.

**Adapters** (``general.type = adapter``).
llama.cpp applies a LoRA GGUF on top of a (quantised) base GGUF at run time: for every adapted weight
``blk.N.attn_q.weight`` it reads ``blk.N.attn_q.weight.lora_a`` ``(r, in)`` and ``....lora_b`` ``(out, r)``
and adds ``scale * alpha / r * B @ A @ x``. The names come from gguf's own HF-to-GGUF tensor map, so any
architecture gguf knows works; architectures whose converter permutes Q/K rows for rotary embeddings
(llama) get the same permutation on ``lora_b``. Only LoRA on linear layers is written: adapters that
also train whole tables (embeddings, lm_head rows) need the torch engine.

**Base models**: :func:`write_llama_gguf` writes a transformers ``LlamaForCausalLM`` and its byte-level
BPE tokenizer as an F32 GGUF (tests and benchmarks build random Llamas this way; convert real models
with llama.cpp's own ``convert_hf_to_gguf.py``).
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import ModelError

_KEY = re.compile(r"^base_model\.model\.(?P<module>.+)\.lora_(?P<which>[AB])\.weight$")
#: Architectures whose HF-to-GGUF conversion permutes the rows of q/k for llama.cpp's rotary layout.
_PERMUTED = {"llama"}


def _permute(w: np.ndarray, n_head: int) -> np.ndarray:
    """llama.cpp's Q/K row order for llama (as its HF converter does): halves interleaved per head."""
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def _rotary_rows(module: str, rows: np.ndarray, heads: tuple[int, int]) -> np.ndarray:
    """``rows`` (output rows of ``module``) in llama.cpp's order: q/k permuted per (n_head, n_head_kv)."""
    if module.endswith("q_proj"):
        return _permute(rows, heads[0])
    if module.endswith("k_proj"):
        return _permute(rows, heads[1])
    return rows


def lora_tensors(
    adapter: Mapping[str, torch.Tensor], arch: str, n_blocks: int, heads: tuple[int, int] | None = None
) -> dict[str, np.ndarray]:
    """peft adapter tensors -> GGUF tensor names and float32 arrays (``heads``: (n_head, n_head_kv), for llama)."""
    import gguf

    try:
        arch_id = next(k for k, v in gguf.MODEL_ARCH_NAMES.items() if v == arch)
    except StopIteration:
        raise ModelError(f"gguf does not know the architecture {arch!r}; use the torch engine") from None
    names = gguf.get_tensor_name_map(arch_id, n_blocks)
    out: dict[str, np.ndarray] = {}
    for key, tensor in adapter.items():
        m = _KEY.match(key)
        if m is None:
            raise ModelError(f"adapter tensor `{key}` is not a LoRA A/B weight; only LoRA on linear layers converts")
        module = m["module"]
        name = names.get_name(module)
        if name is None:
            raise ModelError(f"adapter tensor `{key}`: llama.cpp has no tensor for module `{module}` ({arch})")
        array = tensor.detach().float().cpu().numpy()
        if m["which"] == "B" and arch in _PERMUTED and heads is not None:
            array = _rotary_rows(module, array, heads)
        out[f"{name}.weight.lora_{m['which'].lower()}"] = np.ascontiguousarray(array)
    return out


def write_lora_gguf(
    adapter: Mapping[str, torch.Tensor],
    path: str | Path,
    *,
    arch: str,
    n_blocks: int,
    alpha: float,
    heads: tuple[int, int] | None = None,
) -> Path:
    """Write ``adapter`` (peft state dict) as a llama.cpp LoRA GGUF for a base of architecture ``arch``."""
    import gguf

    tensors = lora_tensors(adapter, arch, n_blocks, heads)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    writer = gguf.GGUFWriter(str(tmp), arch)
    writer.add_type(gguf.GGUFType.ADAPTER)
    writer.add_string(gguf.Keys.Adapter.TYPE, "lora")
    writer.add_float32(gguf.Keys.Adapter.LORA_ALPHA, float(alpha))
    for name, array in sorted(tensors.items()):
        writer.add_tensor(name, array)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    tmp.replace(path)
    return path


def adapter_fingerprint(files: list[Path], extra: Mapping[str, Any]) -> str:
    """A short hash of the adapter files and conversion settings (names a cached GGUF)."""
    h = hashlib.sha256(json.dumps(dict(extra), sort_keys=True).encode())
    for f in files:
        h.update(f.read_bytes())
    return h.hexdigest()[:16]


def write_llama_gguf(model: Any, tokenizer: Any, path: str | Path) -> Path:
    """Write a transformers ``LlamaForCausalLM`` (F32) and its byte-level BPE tokenizer as a GGUF model."""
    import gguf

    cfg = model.config
    if cfg.model_type != "llama":
        raise ModelError(f"write_llama_gguf writes llama models, not {cfg.model_type!r}")
    n_head, n_kv = cfg.num_attention_heads, cfg.num_key_value_heads
    head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // n_head
    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH.LLAMA, cfg.num_hidden_layers)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_type(gguf.GGUFType.MODEL)
    writer.add_file_type(gguf.LlamaFileType.ALL_F32)
    writer.add_context_length(cfg.max_position_embeddings)
    writer.add_embedding_length(cfg.hidden_size)
    writer.add_block_count(cfg.num_hidden_layers)
    writer.add_feed_forward_length(cfg.intermediate_size)
    writer.add_head_count(n_head)
    writer.add_head_count_kv(n_kv)
    writer.add_key_length(head_dim)
    writer.add_value_length(head_dim)
    writer.add_rope_dimension_count(head_dim)
    writer.add_rope_freq_base(float(cfg.rope_parameters["rope_theta"]))
    writer.add_layer_norm_rms_eps(float(cfg.rms_norm_eps))
    writer.add_vocab_size(cfg.vocab_size)
    _add_bpe_vocab(writer, tokenizer, cfg.vocab_size)
    tied = bool(getattr(cfg, "tie_word_embeddings", False))
    for key, tensor in model.state_dict().items():
        module = key.removesuffix(".weight")
        if tied and module == "lm_head":
            continue
        name = names.get_name(module)
        if name is None:
            raise ModelError(f"no GGUF name for `{key}`")
        array = _rotary_rows(module, tensor.detach().float().cpu().numpy(), (n_head, n_kv))
        writer.add_tensor(f"{name}.weight", np.ascontiguousarray(array))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def _add_bpe_vocab(writer: Any, tokenizer: Any, vocab_size: int) -> None:
    """A byte-level BPE vocabulary in llama.cpp's ``gpt2`` form (tokens, types, merges, special ids)."""
    import gguf

    model = json.loads(tokenizer.backend_tokenizer.to_str())["model"]
    if model.get("type") != "BPE":
        raise ModelError("write_llama_gguf needs a byte-level BPE tokenizer")
    by_id = {i: t for t, i in tokenizer.get_vocab().items()}
    special = set(tokenizer.all_special_ids)
    tokens, types = [], []
    for i in range(vocab_size):
        tokens.append(by_id.get(i, f"[PAD{i}]"))
        types.append(gguf.TokenType.CONTROL if i in special else gguf.TokenType.NORMAL)
    merges = [m if isinstance(m, str) else " ".join(m) for m in model.get("merges", [])]
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("default")
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    writer.add_token_merges(merges)
    for kind in ("bos", "eos", "pad"):
        token_id = getattr(tokenizer, f"{kind}_token_id", None)
        if token_id is not None:
            getattr(writer, f"add_{kind}_token_id")(int(token_id))
    ids = tokenizer("a")["input_ids"]
    writer.add_add_bos_token(bool(ids) and ids[0] == tokenizer.bos_token_id)  # as the tokenizer does
