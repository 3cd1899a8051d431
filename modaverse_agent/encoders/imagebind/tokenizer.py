"""CLIP's byte-level BPE tokenizer, as ImageBind uses it for text (77 tokens, SOT/EOT, zero padding).

The merges file ``bpe_simple_vocab_16e6.txt.gz`` ships inside this package (MIT, OpenAI CLIP; see
NOTICE.md). Text is cleaned like the reference: ``ftfy.fix_text``, HTML unescaped twice, whitespace
collapsed, lower-cased.
"""

from __future__ import annotations

import gzip
import html
import itertools
from collections.abc import Sequence
from functools import lru_cache
from importlib import resources
from pathlib import Path

import ftfy
import regex  # type: ignore[import-untyped]
import torch

from ...byte_unicode import bytes_to_unicode

VOCAB_FILE = "bpe_simple_vocab_16e6.txt.gz"
SOT, EOT = "<|startoftext|>", "<|endoftext|>"
_PATTERN = regex.compile(
    r"""<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+""",
    regex.IGNORECASE,
)


def clean(text: str) -> str:
    """ftfy fix, HTML unescape (twice), collapse whitespace, strip, lower-case."""
    text = html.unescape(html.unescape(ftfy.fix_text(text))).strip()
    return regex.sub(r"\s+", " ", text).strip().lower()


class ClipTokenizer:
    """Turns strings into (B, context_length) int64 ids: ``[SOT] + bpe[:context-2] + [EOT]``, zero padded."""

    def __init__(self, bpe_path: str | Path | None = None, context_length: int = 77) -> None:
        if bpe_path is None:
            data = resources.files(__package__).joinpath(VOCAB_FILE).read_bytes()
        else:
            data = Path(bpe_path).read_bytes()
        merges = gzip.decompress(data).decode("utf-8").split("\n")[1 : 49152 - 256 - 2 + 1]
        pairs = [tuple(m.split()) for m in merges]
        byte_chars = list(bytes_to_unicode().values())
        vocab = byte_chars + [c + "</w>" for c in byte_chars] + ["".join(p) for p in pairs] + [SOT, EOT]
        self.encoder = {tok: i for i, tok in enumerate(vocab)}
        self.decoder = {i: tok for tok, i in self.encoder.items()}
        self.bpe_ranks = {p: i for i, p in enumerate(pairs)}
        self.byte_encoder = bytes_to_unicode()
        self.byte_decoder = {v: k for k, v in self.byte_encoder.items()}
        self.context_length = context_length
        self.sot_id, self.eot_id = self.encoder[SOT], self.encoder[EOT]
        self._cache: dict[str, str] = {SOT: SOT, EOT: EOT}

    @property
    def vocab_size(self) -> int:
        """Number of token ids (49408 for CLIP)."""
        return len(self.encoder)

    def _bpe(self, token: str) -> str:
        if token in self._cache:
            return self._cache[token]
        word = [*token[:-1], token[-1] + "</w>"]
        while len(word) > 1:
            pairs = set(itertools.pairwise(word))
            best = min(pairs, key=lambda p: self.bpe_ranks.get(p, float("inf")))
            if best not in self.bpe_ranks:
                break
            merged: list[str] = []
            i = 0
            while i < len(word):
                if i < len(word) - 1 and (word[i], word[i + 1]) == best:
                    merged.append(word[i] + word[i + 1])
                    i += 2
                else:
                    merged.append(word[i])
                    i += 1
            word = merged
        out = " ".join(word)
        self._cache[token] = out
        return out

    def encode(self, text: str) -> list[int]:
        """BPE ids of ``text`` after cleaning, without SOT/EOT or truncation."""
        ids: list[int] = []
        for token in _PATTERN.findall(clean(text)):
            token = "".join(self.byte_encoder[b] for b in token.encode("utf-8"))
            ids.extend(self.encoder[t] for t in self._bpe(token).split(" "))
        return ids

    def decode(self, ids: Sequence[int]) -> str:
        """Text of ``ids`` (special tokens kept, padding dropped)."""
        text = "".join(self.decoder[i] for i in ids if i)
        raw = bytearray(self.byte_decoder[c] for c in text)
        return raw.decode("utf-8", errors="replace").replace("</w>", " ").strip()

    def __call__(self, texts: str | Sequence[str]) -> torch.Tensor:
        """(B, context_length) int64 ids; a text too long keeps its first ``context_length - 1`` tokens + EOT."""
        if isinstance(texts, str):
            texts = [texts]
        out = torch.zeros(len(texts), self.context_length, dtype=torch.long)
        for row, text in enumerate(texts):
            ids = [*[self.sot_id, *self.encode(text)][: self.context_length - 1], self.eot_id]
            out[row, : len(ids)] = torch.tensor(ids)
        return out


@lru_cache(maxsize=1)
def default_tokenizer() -> ClipTokenizer:
    """The shipped CLIP tokenizer (loaded once)."""
    return ClipTokenizer()
