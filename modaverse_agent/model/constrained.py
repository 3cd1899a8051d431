"""Schema-constrained decoding with xgrammar: every meta-response is valid JSON for the zoo's schema.

Three guarantees, each tested on random weights:

1. **Only schema-valid text.** The JSON Schema is compiled by xgrammar (compact separators, no free
   whitespace, strict: no extra properties) and its token mask is applied at every step. xgrammar's
   bounded-string rule admits raw control characters (not ``\\r``/``\\n``, ``"`` or ``\\``); the core
   parser reads JSON with ``strict=False`` so it accepts exactly what is emitted.
2. **Finite.** :func:`decoding_schema` narrows (never widens) the schema before compiling: integers and
   numbers without bounds get the safe-integer range (no endless digits, no ``1e999``), strings without
   ``maxLength``/``enum``/``const``/``pattern`` get :data:`DEFAULT_STRING_MAX`, arrays without ``maxItems``
   get :data:`DEFAULT_MAX_ITEMS`. Whatever it emits still validates against the original schema.
3. **Complete within the budget.** In the last ``reserve`` new tokens the processor measures, each
   step, the route that would close the JSON from where the row stands (:func:`route_length`: walked on
   a fork of the matcher, after any one token the model may still write in structure, where a ``,`` or
   ``{`` opens a whole invocation) and stops following the model only when what is left would not hold
   it (with :data:`ROUTE_MARGIN`; an invocation is opened only with :data:`OPEN_SLACK` tokens more for its
   words, and a string ends with a token of its own, never ``"},`` that also opens the next invocation), so
   the answer text keeps nearly the whole budget; a prompt that may not end yet keeps the model's own
   token rather than filler. The route is the
   shortest it can see: the stop token once the object is complete; inside a string, the token that ends
   it (``"``, possibly with ``]``/``}``); elsewhere ``]``/``}`` (a separator's space allowed), else the
   longest allowed token (finishing forced keys quickly), avoiding tokens that open ``{``/``[``. Rows
   closed this way, where the route's token was not the model's own choice, are reported
   (``closed_rows``) so the caller can warn that the answer was cut short. The reserve grows by the
   length of the schema's shortest document (a forced tool call must still write a whole invocation), a
   budget below that length is raised to it, and a row that still ends unfinished is decoded again with
   a doubled reserve.
   A row caught in a loop (its last :data:`LOOP_TOKENS` tokens repeat one cycle of at most
   :data:`LOOP_PERIOD` tokens, as a small model's "fold the tip, fold the middle, fold the tip, ..." does)
   is closed the same way at once instead of repeating itself to the budget; it is reported in
   ``looped_rows`` as well as ``closed_rows``.

Special tokens (media placeholders, BOS, chat markers) are masked in every row, constrained or not,
except the stop tokens; the grammar could not account for them and they would decode to nothing.
"""

from __future__ import annotations

import copy
import json
import logging
from collections import OrderedDict, deque
from collections.abc import Collection, Mapping, Sequence
from typing import Any

import torch
from transformers import LogitsProcessor

from ..errors import ModelError
from .closing import (
    ROUTE_MARGIN,
    ClosingTables,
    allowed_tokens,
    closing_length,
    route_length,
)

logger = logging.getLogger(__name__)

SAFE_INT = 2**53 - 1
DEFAULT_STRING_MAX = 500
DEFAULT_MAX_ITEMS = 16
_CACHE_SIZE = 64
_LITERAL_KEYS = frozenset({"enum", "const", "default", "examples"})  # values, not schemas


#: A constrained row whose last LOOP_TOKENS tokens repeat one cycle of at most LOOP_PERIOD tokens (three
#: or more times over) is looping and gets closed. Loose enough for real text: 72 tokens of exact
#: periodicity is a list of 36 equal numbers, a line sung twelve times.
LOOP_TOKENS = 72
LOOP_PERIOD = 24


class LoopWatch:
    """Whether one row's newest tokens repeat a short cycle; O(``max_period``) per token.

    For each period p it counts how many tokens in a row equal the token p before; the last ``tokens``
    tokens repeat a cycle of length p exactly when that count reaches ``tokens - p``."""

    def __init__(self, tokens: int = LOOP_TOKENS, max_period: int = LOOP_PERIOD) -> None:
        if not 0 < max_period < tokens:
            raise ValueError(f"need 0 < max_period < tokens, got {max_period} and {tokens}")
        self.tokens, self.max_period = tokens, max_period
        self._recent: deque[int] = deque(maxlen=max_period)
        self._runs = [0] * (max_period + 1)

    def push(self, token: int) -> bool:
        """Take the row's next token; True once the row is looping."""
        recent, runs, looping = self._recent, self._runs, False
        for p in range(1, len(recent) + 1):
            runs[p] = runs[p] + 1 if recent[-p] == token else 0
            looping = looping or runs[p] >= self.tokens - p
        recent.append(token)
        return looping


#: JSON separators the grammar allows: json.dumps' defaults, which is also how training targets are written
#: (training.dataset.Sample.target_json). A grammar that forces another spacing pushes the model off the
#: token sequences it was trained on (measured: a trained model then stopped invoking tools at all).
SEPARATORS = (", ", ": ")


def _types(node: Mapping[str, Any]) -> set[str]:
    t = node.get("type")
    return {t} if isinstance(t, str) else set(t) if isinstance(t, list) else set()


def _narrow(node: Any) -> Any:
    if isinstance(node, list):
        return [_narrow(n) for n in node]
    if not isinstance(node, dict):
        return node
    out = {k: v if k in _LITERAL_KEYS else _narrow(v) for k, v in node.items()}
    types = _types(out)
    fixed = "enum" in out or "const" in out
    if types & {"integer", "number"} and not fixed:
        if "minimum" not in out and "exclusiveMinimum" not in out:
            out["minimum"] = -SAFE_INT
        if "maximum" not in out and "exclusiveMaximum" not in out:
            out["maximum"] = SAFE_INT
    if "string" in types and not fixed and not {"maxLength", "pattern", "format"} & set(out):
        out["maxLength"] = DEFAULT_STRING_MAX
    if "array" in types and "maxItems" not in out:
        out["maxItems"] = DEFAULT_MAX_ITEMS
    return out


def decoding_schema(schema: Mapping[str, Any]) -> dict[str, Any]:
    """The schema narrowed so that every emitted document is finite (see the module docstring)."""
    return _narrow(copy.deepcopy(dict(schema)))


def _schema_key(schema: Mapping[str, Any]) -> str:
    return json.dumps(schema, sort_keys=True, ensure_ascii=False)


class GrammarCache:
    """xgrammar state for one tokenizer: tokenizer info, compiler, compiled grammars by schema (LRU)."""

    def __init__(self, tokenizer: Any, vocab_size: int, stop_ids: Sequence[int]) -> None:
        import xgrammar as xgr

        self.vocab_size = vocab_size
        self.stop_ids = list(stop_ids)
        self.info = xgr.TokenizerInfo.from_huggingface(tokenizer, vocab_size=vocab_size, stop_token_ids=self.stop_ids)
        self.compiler = xgr.GrammarCompiler(self.info, max_threads=1)
        self._grammars: OrderedDict[str, Any] = OrderedDict()
        self._closing: ClosingTables | None = None
        self._shortest: dict[str, int] = {}

    def compile(self, schema: Mapping[str, Any]) -> Any:
        """The compiled grammar of ``schema`` (cached by its canonical JSON)."""
        key = _schema_key(schema)
        found = self._grammars.get(key)
        if found is not None:
            self._grammars.move_to_end(key)
            return found
        try:
            grammar = self.compiler.compile_json_schema(
                json.dumps(decoding_schema(schema)), any_whitespace=False, separators=SEPARATORS, strict_mode=True
            )
        except (RuntimeError, ValueError) as e:
            raise ModelError(f"xgrammar cannot compile the meta-response schema for constrained decoding: {e}") from e
        self._grammars[key] = grammar
        if len(self._grammars) > _CACHE_SIZE:
            evicted, _ = self._grammars.popitem(last=False)
            self._shortest.pop(evicted, None)
        return grammar

    def shortest(self, schema: Mapping[str, Any]) -> int:
        """Tokens in the shortest document of ``schema`` by the closing route, the stop token included."""
        key = _schema_key(schema)
        found = self._shortest.get(key)
        if found is None:
            import xgrammar as xgr

            matcher = xgr.GrammarMatcher(self.compile(schema))  # cached with the grammar, evicted with it
            found = self._shortest[key] = closing_length(matcher, self.closing, self.vocab_size)
        return found

    def __len__(self) -> int:
        return len(self._grammars)

    @property
    def closing(self) -> ClosingTables:
        """Token preferences for closing a document early (computed once per tokenizer)."""
        if self._closing is None:
            self._closing = ClosingTables.build(self.info.decoded_vocab[: self.vocab_size], self.stop_ids)
        return self._closing


def hold_back(scores: torch.Tensor, tokens: Collection[int]) -> torch.Tensor:
    """``scores`` with ``tokens`` refused in every row, except a row where nothing else is allowed (a finished
    grammar allows only a stop: it wins over a minimum length)."""
    if not tokens:
        return scores
    held = scores.clone()
    held[:, list(tokens)] = float("-inf")
    stuck = ~torch.isfinite(held).any(dim=1)
    held[stuck] = scores[stuck]
    return held


class MetaResponseLogitsProcessor(LogitsProcessor):
    """Masks special tokens and, per row, applies an xgrammar grammar (None: unconstrained row).

    Use one instance per ``generate`` call. ``budget`` is the call's ``max_new_tokens``; when
    ``reserve`` tokens are left, constrained rows are closed (see the module docstring). For the first
    ``min_new_tokens`` tokens the stops are held back (:func:`hold_back`), after the grammar's mask, so a
    finished document still ends: the engines leave the minimum length to this processor.
    """

    def __init__(
        self,
        grammars: Sequence[Any | None],
        *,
        banned_ids: Sequence[int],
        stop_ids: Sequence[int],
        budget: int,
        reserve: int = 32,
        cache: GrammarCache | None = None,
        min_new_tokens: int = 0,
    ) -> None:
        import xgrammar as xgr

        self._xgr = xgr
        self.stop_ids = torch.tensor(list(stop_ids), dtype=torch.long)
        self.banned = torch.tensor(sorted(set(banned_ids) - set(stop_ids)), dtype=torch.long)
        self._banned_ids = frozenset(self.banned.tolist())
        self.matchers = [None if g is None else xgr.GrammarMatcher(g) for g in grammars]
        self.constrained = any(m is not None for m in self.matchers)
        if self.constrained and cache is None:
            raise ValueError("a GrammarCache is needed for constrained rows")
        self.cache = cache
        self.budget, self.reserve = budget, reserve
        self.min_new_tokens = min_new_tokens
        self._stops = frozenset(self.stop_ids.tolist())
        self.bitmask = xgr.allocate_token_bitmask(len(grammars), cache.vocab_size) if cache is not None else None
        self.step = 0
        self.closed_rows: set[int] = set()
        self.looped_rows: set[int] = set()
        self._watches = [LoopWatch() if m is not None else None for m in self.matchers]
        self._ahead = False  # the newest tokens are accepted and the next mask is filled (see advance)
        self._decided: tuple[int, dict[int, bool]] = (0, {})  # (step, row -> must close) measured this step

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        ahead = self._begin(input_ids)
        return hold_back(self._mask(scores, ahead), self._held())

    def _held(self) -> frozenset[int]:
        """The stop tokens while the minimum length is not reached (this step's token is number ``step``)."""
        return self._stops if self.step <= self.min_new_tokens else frozenset()

    def pick_greedy(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> int:
        """The greedy token of a one-row batch, exactly ``int(self(input_ids, scores)[0].argmax())`` but cheaper:
        when the row's best token is one the grammar allows (and not a held stop), the vocabulary-wide mask is
        never applied (nor ``scores`` changed); otherwise it is, as a call does."""
        if input_ids.shape[0] != 1 or len(self.matchers) != 1:
            raise ValueError("pick_greedy takes one row")
        ahead = self._begin(input_ids)
        hold = self._held()
        matcher = self.matchers[0]
        if matcher is not None and not matcher.is_terminated() and not self.looped_rows:
            if not ahead:
                self._fill([(0, matcher)])
                ahead = True
            token = int(scores[0].argmax())  # the first best, as argmax over the masked row would take it
            # the vocabulary-wide mask is unpacked only in the last `reserve` tokens
            near = self._near()
            following = not near or not self._must_close(0, self._allowed_row())
            exits = near and self.cache is not None and bool(self.cache.closing.exits[token])
            if following and not exits and token not in self._banned_ids and token not in hold and self._allows(token):
                return token
        return int(hold_back(self._mask(scores, ahead), hold)[0].argmax())

    def _allowed_row(self) -> torch.Tensor:
        """Row 0's filled mask as a bool mask over the vocabulary."""
        assert self.bitmask is not None and self.cache is not None
        return allowed_tokens(self.bitmask[0], self.cache.vocab_size)

    def _must_close(self, i: int, allowed: torch.Tensor) -> bool:
        """Whether row ``i`` must take the closing route now: it is in the last ``reserve`` tokens and what is
        left would not hold the route (measured from here, see :func:`route_length`) after one more token of
        the model's own, with :data:`ROUTE_MARGIN` to spare."""
        if not self._near():
            return False
        if self._decided[0] != self.step:  # pick_greedy and then _mask may ask twice in one step: walk once
            self._decided = (self.step, {})
        found = self._decided[1].get(i)
        if found is None:
            left = self.budget - self.step + 1  # tokens this step may still write, this one included
            assert self.cache is not None
            route = route_length(self.matchers[i], allowed, self.cache.closing, self.cache.vocab_size)
            found = self._decided[1][i] = left < route + 1 + ROUTE_MARGIN
        return found

    def _near(self) -> bool:
        """Whether this step is in the last ``reserve`` tokens (where the closing route is measured)."""
        return self.budget - self.step < self.reserve

    def _allows(self, token: int) -> bool:
        """Whether row 0's filled mask lets ``token`` through (one bit of xgrammar's int32 bitmask)."""
        if self.bitmask is None or token >= self.bitmask.shape[1] * 32:
            return False
        return bool((int(self.bitmask[0, token >> 5]) >> (token & 31)) & 1)

    def _begin(self, input_ids: torch.LongTensor) -> bool:
        """A step's bookkeeping: accept the newest tokens unless ``advance`` did; whether the mask is filled."""
        if input_ids.shape[0] != len(self.matchers):
            raise ValueError(f"batch of {input_ids.shape[0]} rows but {len(self.matchers)} grammars")
        ahead, self._ahead = self._ahead, False
        if self.step > 0 and not ahead:
            self._accept(input_ids[:, -1].tolist())
        self.step += 1
        return ahead

    def _mask(self, scores: torch.FloatTensor, ahead: bool) -> torch.FloatTensor:
        if self.banned.numel():
            scores[:, self.banned.to(scores.device)] = float("-inf")
        if not self.constrained:
            return scores
        active = self._active()
        rows = [i for i, _ in active]
        if active and self.bitmask is not None:
            if not ahead:
                self._fill(active)
            self._xgr.apply_token_bitmask_inplace(scores, self.bitmask.to(scores.device), indices=rows)
        for i, done in enumerate(self.matchers):
            if done is not None and done.is_terminated():  # finished: HF pads this row; keep it finite
                scores[i] = float("-inf")
                scores[i, self.stop_ids.to(scores.device)] = 0.0
        closing = [i for i in rows if i in self.looped_rows]
        if self._near() and self.cache is not None:  # vocabulary-wide tests: the last tokens only
            tables = self.cache.closing
            for i in rows:
                allowed = scores[i] > float("-inf")
                if i in closing or self._must_close(i, allowed):
                    closing.append(i)
                elif tables.in_string(allowed):  # the route was measured in the string: it must end there first
                    scores[i, tables.exits[: scores.shape[1]].to(scores.device)] = float("-inf")
        self._close(sorted(set(closing)), scores)
        return scores

    def advance(self, last: Sequence[int]) -> None:
        """Accept each row's newest token and fill the next step's mask now; the next call then only applies
        it. An engine calls this while the LLM runs the forward pass of those tokens (the two overlap)."""
        if self.step == 0:
            raise ValueError("advance() follows a call: the first step has no token to accept")
        self._accept(list(last))
        if self.constrained and self.bitmask is not None:
            self._fill(self._active())
        self._ahead = True

    def _active(self) -> list[tuple[int, Any]]:
        """(row, matcher) of the constrained rows whose document is not finished."""
        return [(i, m) for i, m in enumerate(self.matchers) if m is not None and not m.is_terminated()]

    def _fill(self, active: Sequence[tuple[int, Any]]) -> None:
        for i, matcher in active:
            matcher.fill_next_token_bitmask(self.bitmask, i)

    def _accept(self, last: list[int]) -> None:
        for i, m in enumerate(self.matchers):
            if m is None or m.is_terminated():
                continue
            if not m.accept_token(last[i]):
                raise ModelError(f"constrained decoding lost track of row {i}: token {last[i]} was not allowed")
            watch = self._watches[i]
            if watch is not None and watch.push(last[i]):
                self.looped_rows.add(i)

    def _close(self, rows: list[int], scores: torch.Tensor) -> None:
        if self.cache is None or not rows:
            return
        tables = self.cache.closing
        for i in rows:
            allowed = scores[i] > float("-inf")
            best = int(scores[i].argmax())
            # a string that must not end yet (a prompt's minLength): its first words are the model's, not filler
            choice = best if tables.must_write(allowed) else tables.choose(allowed)
            if choice != best or i in self.looped_rows:  # the model's own choice is no cut
                self.closed_rows.add(i)
            scores[i] = float("-inf")
            scores[i, choice] = 0.0

    def for_row(self, i: int) -> MetaResponseLogitsProcessor:
        """A processor over row ``i`` alone, sharing its grammar matcher (for engines that decode rows one
        at a time); the caller reports a closed row back into :attr:`closed_rows` (and :attr:`looped_rows`)."""
        sub = copy.copy(self)
        sub.matchers = [self.matchers[i]]
        sub.constrained = self.matchers[i] is not None
        if self.cache is not None:
            sub.bitmask = self._xgr.allocate_token_bitmask(1, self.cache.vocab_size)
        sub.step = 0
        sub.closed_rows = set()
        sub.looped_rows = set()
        sub._watches = [self._watches[i]]
        sub._ahead = False
        sub._decided = (0, {})
        return sub

    def unfinished_rows(self) -> list[int]:
        """Constrained rows whose document is not complete (generation ran out of tokens)."""
        return [i for i, m in enumerate(self.matchers) if m is not None and not (m.is_terminated() or m.is_completed())]
