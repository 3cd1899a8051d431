"""Which target tokens carry the routing decision, for ``modaverse train --decision-weight``.

A meta-response target (``{"text": "...", "invocations": [...]}``, the canonical form of
:meth:`.dataset.Sample.target_json`) is mostly words: an answer, prompts. The decision a user meets is
made in a handful of its tokens: the first token of ``text`` (an answer, or an acknowledgement of media),
the token that opens the invocation list (``{``: a call, ``]``: none), each ``task`` name, and the token
after each call (``,``: another call, ``]``: no more). :func:`decision_weights` gives those tokens a
larger share of the loss.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

Span = tuple[int, int]


def _dumps(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(", ", ": "))


def decision_spans(target: str) -> list[Span]:
    """Character spans ``[start, end)`` of ``target``'s decision points (see the module docstring).

    Raises ValueError if ``target`` is not a canonical JSON meta-response."""
    try:
        obj = json.loads(target)
    except json.JSONDecodeError as e:
        raise ValueError(f"decision weighting needs a JSON meta-response target, got {target[:60]!r}") from e
    if not isinstance(obj, dict) or list(obj) != ["text", "invocations"]:
        raise ValueError(f"decision weighting needs a {{'text', 'invocations'}} target, got {target[:60]!r}")
    head = '{"text": '
    text_at = len(head) + 1  # the first character of the text value (its closing quote when empty)
    pos = len(head) + len(_dumps(obj["text"])) + len(', "invocations": [')
    spans = [(text_at, text_at + 1), (pos, pos + 1)]
    for i, inv in enumerate(obj["invocations"]):
        if i:
            pos += len(", ")
        piece = _dumps(inv)
        key = '{"task": "'
        if not piece.startswith(key):
            raise ValueError(f"decision weighting needs each call to start with its task, got {piece[:60]!r}")
        spans.append((pos + len(key), pos + len(key) + len(inv["task"])))
        pos += len(piece)
        spans.append((pos, pos + 1))  # "," (another call) or "]" (no more)
    if _dumps(obj) != target:
        raise ValueError(f"decision weighting needs the canonical serialisation, got {target[:60]!r}")
    return spans


def decision_weights(tokenizer: Any, answer_ids: Sequence[int], target: str, weight: float) -> list[float]:
    """One loss weight per answer token: ``weight`` where a token overlaps a decision span, else 1.

    ``answer_ids`` are the labelled tokens of one example (the target, then the format's end marker);
    their decoded text must start with ``target``."""
    spans = decision_spans(target)
    ends = [len(tokenizer.decode(list(answer_ids[: i + 1]))) for i in range(len(answer_ids) - 1)]
    whole = tokenizer.decode(list(answer_ids))
    ends.append(len(whole))
    if not whole.startswith(target):
        raise ValueError("decision weighting needs a tokenizer that decodes the target back unchanged")
    out, start = [], 0
    for end in ends:
        hit = any(start < b and a < end for a, b in spans)
        out.append(float(weight) if hit else 1.0)
        start = end
    return out
