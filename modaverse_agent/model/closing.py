"""The closing route of a constrained meta-response: which token ends a document soonest from any grammar state,
how many tokens that takes (walked on a fork of the xgrammar matcher), and the route a row needs if the model may
write one more token of its own first (see :mod:`.constrained`, guarantee 3)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from ..errors import ModelError

_CLOSERS = frozenset(b'"]}')
_PROBES = frozenset({b"x", b"q", b"z", b"Q", b"X", b"Z"})
#: Tokens to spare beyond the measured closing route (an escape or a short array the model opens).
ROUTE_MARGIN = 2
#: Tokens of content beyond its shortest form an invocation opened near the budget must have room for.
OPEN_SLACK = 12
#: Structural positions with at most this many allowed tokens measure the route after each of them.
_ROUTE_PROBES = 64


@dataclass
class ClosingTables:
    """Per-token ranks for closing a document: ``rank`` in structure, ``quote_rank`` inside a string.

    In structure, ``]``/``}`` tokens rank first, then tokens of closers with a quote, then the longest
    other token (finishing a forced key or value), and tokens opening ``{``/``[`` last. Inside a string
    (``"`` and an ordinary letter are both allowed) only tokens that start with ``"`` and hold nothing but
    closers count, so the string ends at once instead of filling up with ``}`` characters.
    """

    rank: torch.Tensor
    quote_rank: torch.Tensor
    quote_id: int | None
    probe_ids: list[int]
    #: Tokens that open an object (an invocation) outside a string.
    opens: torch.Tensor
    #: Tokens that end a string and go on past its container's next comma (``"},``): one token that can open
    #: a whole invocation from inside a string.
    exits: torch.Tensor

    @classmethod
    def build(cls, vocab: Sequence[bytes], stop_ids: Sequence[int]) -> ClosingTables:
        rank = torch.empty(len(vocab), dtype=torch.float32)
        quote_rank = torch.full((len(vocab),), float("-inf"))
        opens = torch.zeros(len(vocab), dtype=torch.bool)
        exits = torch.zeros(len(vocab), dtype=torch.bool)
        quote_id: int | None = None
        probes: list[int] = []
        for i, tok in enumerate(vocab):
            core = tok.strip()  # a separator's space (`: "`) does not make a closer an ordinary token
            closers = bool(core) and set(core) <= _CLOSERS
            if not tok:
                rank[i] = -1e9
            elif closers and b'"' not in core:
                rank[i] = 2000.0 + len(tok)
            elif closers:
                rank[i] = 1000.0 + len(tok)
            elif b"{" in tok or b"[" in tok:
                rank[i] = -100.0 + len(tok)
            else:
                rank[i] = float(len(tok))
            opens[i] = b"{" in tok
            exits[i] = tok.startswith(b'"') and (b"," in tok or b"{" in tok or b"[" in tok)
            if closers and tok.startswith(b'"'):
                quote_rank[i] = 1000.0 + len(tok)
            if tok == b'"' and quote_id is None:
                quote_id = i
            if tok in _PROBES:
                probes.append(i)
        rank[list(stop_ids)] = 1e6
        return cls(rank, quote_rank, quote_id, probes, opens, exits)

    def in_string(self, allowed: torch.Tensor) -> bool:
        """Whether ``allowed`` (a bool mask) is a string's: both its closing quote and ordinary letters pass."""
        return self.quote_id is not None and bool(allowed[self.quote_id]) and bool(allowed[self.probe_ids].any())

    def must_write(self, allowed: torch.Tensor) -> bool:
        """Whether ``allowed`` is inside a string that may not end yet: letters pass, its closing quote not."""
        return bool(allowed[self.probe_ids].any()) and not (self.quote_id is not None and bool(allowed[self.quote_id]))

    def choose(self, allowed: torch.Tensor) -> int:
        """The closing token among the ``allowed`` ones (a bool mask)."""
        rank = self.quote_rank if self.in_string(allowed) else self.rank
        n = allowed.shape[0]
        return int(torch.where(allowed, rank[:n].to(allowed.device), float("-inf")).argmax())

    def opener(self, allowed: torch.Tensor) -> int | None:
        """The best-ranked ``allowed`` token that opens an object outside a string (None: none may)."""
        if self.in_string(allowed):
            return None
        n = allowed.shape[0]
        opening = allowed & self.opens[:n].to(allowed.device)
        if not bool(opening.any()):
            return None
        return int(torch.where(opening, self.rank[:n].to(allowed.device), float("-inf")).argmax())


_SHIFTS = torch.arange(32, dtype=torch.int32)


def allowed_tokens(bitmask_row: torch.Tensor, vocab_size: int) -> torch.Tensor:
    """An xgrammar bitmask row (packed int32) as a bool mask over the vocabulary."""
    return ((bitmask_row.unsqueeze(-1) >> _SHIFTS) & 1).view(-1)[:vocab_size].bool()


def closing_length(matcher: Any, tables: ClosingTables, vocab_size: int, *, limit: int = 4096) -> int:
    """Tokens the closing route needs from ``matcher``'s state, the stop token included (walked on a fork)."""
    import xgrammar as xgr

    probe = matcher.fork()
    mask = xgr.allocate_token_bitmask(1, vocab_size)
    steps = 0
    while not probe.is_terminated():
        if steps >= limit:
            raise ModelError(f"the meta-response grammar does not close within {limit} tokens; bound the schema")
        probe.fill_next_token_bitmask(mask, 0)
        token = tables.choose(allowed_tokens(mask[0], vocab_size))
        if not probe.accept_token(token):
            raise ModelError(f"closing route chose token {token}, which the grammar refuses")
        steps += 1
    return steps


def route_length(matcher: Any, allowed: torch.Tensor, tables: ClosingTables, vocab_size: int) -> int:
    """Tokens the closing route needs from ``matcher``'s state (mask ``allowed``) if the model may still write
    one token of its own first. In a string that token changes little (see :data:`ROUTE_MARGIN`); in structure
    it may open a whole invocation (``,`` or ``{``), so the longest route after any allowed token counts (after
    the best opener alone where many tokens are allowed: the start of a string value)."""
    here = closing_length(matcher, tables, vocab_size)
    if tables.in_string(allowed):
        return here
    ids = allowed.nonzero().flatten().tolist()
    if len(ids) > _ROUTE_PROBES:
        opener = tables.opener(allowed)
        ids = [] if opener is None else [opener]
    longest = here
    for token in ids:
        after = matcher.fork()
        if not after.accept_token(token):
            raise ModelError(f"token {token} was refused by the grammar that allowed it")
        route = 1 + (0 if after.is_terminated() else closing_length(after, tables, vocab_size))
        if route > here + ROUTE_MARGIN:  # it opens something (an invocation): only with room for its words
            route += OPEN_SLACK
        longest = max(longest, route)
    return longest


__all__ = ["OPEN_SLACK", "ROUTE_MARGIN", "ClosingTables", "allowed_tokens", "closing_length", "route_length"]
