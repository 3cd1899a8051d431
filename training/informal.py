"""Texting-style rewrites of a request: shorthand, dropped apostrophes, typos, no capitals.

People type requests on phones: "pls", "u", "pic", "w/", "dont", "tmrw", a swapped letter. The template
engine writes clean sentences; ``Informalizer`` turns one into a casual one, keeping quoted material (a line
to be spoken, a text to translate) exactly as the user wrote it. The shorthand table is
``prompts/corpora/informal.tsv`` (``formal<TAB>informal``).
"""

from __future__ import annotations

import random
import re
from collections.abc import Mapping, Sequence

__all__ = ["InformalTable", "Informalizer", "parse_informal"]

#: formal phrase (lowercase) -> the casual spellings it may take
InformalTable = Mapping[str, Sequence[str]]

_QUOTED = re.compile(r"\"[^\"]*\"|“[^”]*”|(?<![\w])'[^']+'(?![\w])")
_WORD = re.compile(r"[A-Za-z]{6,}")


def parse_informal(lines: Sequence[str], source: str = "informal.tsv") -> dict[str, tuple[str, ...]]:
    """The table from ``formal<TAB>informal`` lines; a line without exactly one tab is an error."""
    table: dict[str, list[str]] = {}
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        parts = line.rstrip("\n").split("\t")
        if len(parts) != 2 or not all(p.strip() for p in parts):
            raise ValueError(f"{source}:{number}: expected `formal<TAB>informal`, got {line.strip()!r}")
        formal, casual = (p.strip().lower() for p in parts)
        if formal != casual and casual not in table.setdefault(formal, []):
            table[formal].append(casual)
    return {k: tuple(v) for k, v in table.items()}


def _pattern(table: InformalTable) -> re.Pattern[str] | None:
    if not table:
        return None
    phrases = sorted(table, key=len, reverse=True)  # longest first: "thank you" before "you"
    return re.compile(r"(?<![\w'])(" + "|".join(re.escape(p) for p in phrases) + r")(?![\w'])", re.IGNORECASE)


def _typo(word: str, rng: random.Random) -> str:
    """Swap two neighbouring inner letters, or drop one (the first and last letters stay)."""
    i = rng.randrange(1, len(word) - 2)
    if rng.random() < 0.5:
        return word[:i] + word[i + 1] + word[i] + word[i + 2 :]
    return word[:i] + word[i + 1 :]


class Informalizer:
    """Rewrites requests with one shorthand table (its phrases matched once, longest first)."""

    def __init__(self, table: InformalTable) -> None:
        self.table = table
        self.pattern = _pattern(table)

    def _casual(self, text: str, rng: random.Random) -> str:
        text = text.lower()
        if self.pattern is not None:
            text = self.pattern.sub(
                lambda m: rng.choice(self.table[m.group(0).lower()]) if rng.random() < 0.6 else m.group(0), text
            )
        if rng.random() < 0.5:
            text = re.sub(r"(\w)'(\w)", r"\1\2", text)  # don't -> dont, i'm -> im
        return _WORD.sub(lambda m: _typo(m.group(0), rng) if rng.random() < 0.06 else m.group(0), text)

    def __call__(self, text: str, rng: random.Random, keep: Sequence[str] = ()) -> str:
        """``text`` as a person texting might type it; quoted spans and the ``keep`` strings (a line to be
        spoken, say) are left as they are."""
        spans = [m.span() for m in _QUOTED.finditer(text)]
        spans += [(i, i + len(k)) for k in keep if k and (i := text.find(k)) >= 0]
        pieces: list[str] = []
        last = 0
        for start, end in sorted(spans):
            if end <= last:  # inside a span already kept
                continue
            if start >= last:  # (an empty stretch too: the random stream stays as it was)
                pieces.append(self._casual(text[last:start], rng))
            pieces.append(text[max(start, last) : end])  # an overlapping span: only what is past the last one
            last = end
        tail = self._casual(text[last:], rng)
        if tail.endswith((".", "!")) and rng.random() < 0.7:  # a kept span keeps its own final period
            tail = tail[:-1]
        return "".join(pieces) + tail
