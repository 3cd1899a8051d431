"""Byte-level BPE tokenizers built offline (no download), for tiny random pipelines.

Nothing heavy is imported at module level: transformers is imported inside the builders.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

from ..byte_unicode import bytes_to_unicode


def _write_bpe(folder: Path, vocab: dict[str, int]) -> tuple[str, str]:
    """Write ``vocab.json`` and an empty ``merges.txt``; returns their paths."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
    (folder / "merges.txt").write_text("#version: 0.2\n", encoding="utf-8")
    return str(folder / "vocab.json"), str(folder / "merges.txt")


def tiny_clip_tokenizer(max_length: int = 77) -> Any:
    """A byte-level CLIPTokenizer built offline: one token per byte (with and without ``</w>``), no merges."""
    from transformers import CLIPTokenizer

    chars = list(bytes_to_unicode().values())
    vocab = {c: i for i, c in enumerate(chars)}
    vocab.update({c + "</w>": len(chars) + i for i, c in enumerate(chars)})
    vocab["<|startoftext|>"] = len(vocab)
    vocab["<|endoftext|>"] = len(vocab)
    with tempfile.TemporaryDirectory() as d:
        return CLIPTokenizer(*_write_bpe(Path(d), vocab), model_max_length=max_length)


def tiny_roberta_tokenizer(max_length: int = 77) -> Any:
    """A byte-level RobertaTokenizer built offline (for CLAP): one token per byte, no merges."""
    from transformers import RobertaTokenizer

    vocab = {"<s>": 0, "<pad>": 1, "</s>": 2, "<unk>": 3}
    for c in bytes_to_unicode().values():
        vocab[c] = len(vocab)
    vocab["<mask>"] = len(vocab)
    with tempfile.TemporaryDirectory() as d:
        return RobertaTokenizer(*_write_bpe(Path(d), vocab), model_max_length=max_length)
