"""How a template-engine run is mixed: the makers' weights (``DEFAULT_MIX``) and small variations (``Recipe``)."""

from __future__ import annotations

import random
import re
import string
from collections.abc import Mapping
from dataclasses import dataclass, field

from .dataset import DatasetError

#: A template's period right after a filled value that already ends a sentence (`"Hi!".` -> `"Hi!"`).
_DOUBLE_STOP = re.compile(r'([.!?]"?)\.(?=\s|$)')


def phrase(caption: str) -> str:
    """A caption as a noun phrase for an instruction: no final period, lower-case first letter."""
    text = " ".join(caption.split()).rstrip(" .")
    first = text.split(" ", 1)[0]
    if first and first != "I" and not (len(first) > 1 and first[1:2].isupper()):
        text = text[:1].lower() + text[1:]
    return text


def is_question(text: str) -> bool:
    """A question (it ends with "?"): only these get wrappers, spoken answers and a second request."""
    return text.rstrip().endswith("?")


def sentence(text: str) -> str:
    """The text with a capital first letter."""
    return text[:1].upper() + text[1:]


#: Default share of each maker (relative weights), tuned for the default model (see prompts/corpora/README.md):
#: plain questions and attached media with another output weigh most; speech only where words ask for it.
DEFAULT_MIX: dict[str, float] = {
    "image": 11,
    "sound": 5,
    "music": 4.5,
    "video": 7,
    "speech": 6,
    "question": 22,
    "request": 8,
    "edit": 6,
    "edit_nth": 1,
    "media_request": 11,
    "multi": 7,
    "scene": 3,
    "describe": 6,
    "cross": 10,
    "derived": 5,
    "spoken_answer": 2.5,
    "followup": 6,
    #: short things to say (say.txt) in the speech phrasings; 0 by default so that earlier recipes' data stay
    #: as they were: the default model's recipe turns it on with --mix say=N
    "say": 0,
}


@dataclass
class Recipe:
    """How a run is mixed: maker weights and the small variations applied to instructions."""

    mix: Mapping[str, float] = field(default_factory=lambda: dict(DEFAULT_MIX))
    #: Chance that an image (video) request names a style.
    style_p: float = 0.45
    video_style_p: float = 0.3
    #: Chance that the template's words are lower-cased, and that a final period is dropped.
    lowercase_p: float = 0.12
    drop_period_p: float = 0.15
    #: Chance of a greeting before a request, and of a remark after it (``opener`` / ``closer`` pools).
    opener_p: float = 0.18
    closer_p: float = 0.15
    #: Chance of a background sentence or two (``contexts.txt``) before any request but a follow-up; drawn from
    #: its own random stream, so 0 (the default) leaves every other sample as it was.
    context_p: float = 0.0
    #: Of those backgrounds, the share written after the request instead (own random stream too).
    context_after_p: float = 0.0
    #: Chance that a request is typed in texting style (``informal.tsv`` shorthand, typos, no capitals; quoted
    #: text kept), from its own random stream.
    informal_p: float = 0.0
    #: Chance that a request's system prompt offers fewer tasks (none, all but one, or one) and the answer says
    #: what can't be made here (``narrowing.py``), from its own random stream.
    narrow_p: float = 0.0
    #: The kinds of narrower list drawn (``narrowing.LIST_KINDS``: none, all-but-one, one).
    narrow_to: tuple[str, ...] = ("none", "all-but-one", "one")
    #: Attempts per wanted sample before a maker gives up (its combinations ran out).
    attempts: int = 25

    def __post_init__(self) -> None:
        unknown = sorted(set(self.mix) - set(DEFAULT_MIX))
        if unknown:
            raise DatasetError(f"unknown maker(s) {unknown} in the mix; known: {sorted(DEFAULT_MIX)}")
        if any(w < 0 for w in self.mix.values()):
            raise DatasetError("mix weights must be >= 0")

    def fill(self, rng: random.Random, template: str, values: Mapping[str, str], *, augment: bool = True) -> str:
        """Fill ``template``; with ``augment``, sometimes lower-case its words and drop its final period."""
        lower = augment and rng.random() < self.lowercase_p
        if augment and template.rstrip().endswith(".") and rng.random() < self.drop_period_p:
            template = template.rstrip()[:-1]
        out = ""
        for literal, name, _, _ in string.Formatter().parse(template):
            out += literal.lower() if lower else literal
            if name is not None:
                value = values[name]
                before = out.rstrip()
                if not lower and (not before or before[-1] in ".!?"):
                    value = sentence(value)
                out += value
        out = _DOUBLE_STOP.sub(r"\1", " ".join(out.split()))
        return out if lower else sentence(out)


def allocate(size: int, weights: Mapping[str, float]) -> dict[str, int]:
    """Split ``size`` by weight (largest remainders, ties by order)."""
    total = sum(weights.values())
    if total <= 0:
        raise DatasetError("every maker in the mix has weight 0; give at least one a positive weight")
    exact = {k: size * w / total for k, w in weights.items()}
    out = {k: int(v) for k, v in exact.items()}
    order = sorted(weights, key=lambda k: (-(exact[k] - out[k]), list(weights).index(k)))
    for k in order[: size - sum(out.values())]:
        out[k] += 1
    return out
