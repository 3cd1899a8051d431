"""The offline template engine: instruction samples from corpora and phrasing pools, no LLM, seeded.

Each *maker* writes one kind of sample (a picture request, a question, an edit, a multi-output request,
media with an unrelated request, ...). A run gives every maker a share of the samples (``Recipe.mix``)
and its own random stream (``seed/split/maker``), so the same seed always writes the same file.

Train and test differ three ways: test samples use only ``[test]`` phrasing pools and test style asks,
only held-out captions / questions / lines (about 15%, by a hash of the text), and never repeat a
training instruction. Media with no file (``path: null``) are placeholders: the default model, trained
without a media encoder, learns that media are present, and answers questions about their content by
saying it cannot perceive them. Captioned corpora with real files add caption-based describe and
cross-modal samples (the paper's input-side alignment and reasoning).
"""

from __future__ import annotations

import random
import re
import string
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from modaverse_agent.meta_response import TaskSpec

from .corpora import CaptionedItem, Corpora, Style, builtin_corpora, split_of
from .dataset import DatasetError, Sample, make_sample
from .generation import Collector, GenerationResult
from .tasks import STANDARD_TASKS

#: Default share of each maker (relative weights), tuned for the default model (see prompts/corpora/README.md).
DEFAULT_MIX: dict[str, float] = {
    "image": 16,
    "sound": 7,
    "music": 6,
    "video": 10,
    "speech": 13,
    "question": 13,
    "edit": 7,
    "edit_nth": 1.5,
    "media_request": 13,
    "multi": 8,
    "scene": 4,
    "describe": 3,
    "cross": 4,
    "spoken_answer": 2.5,
}

_SINGLE = {  # pool -> (task, response key)
    "image": ("text-to-image", "image"),
    "sound": ("text-to-audio", "sound"),
    "music": ("text-to-audio", "music"),
    "video": ("text-to-video", "video"),
    "speech": ("text-to-speech", "speech"),
}
_SCENES = {
    "scene_image_sound": ("image", "sound"),
    "scene_video_sound": ("video", "sound"),
    "scene_image_video": ("image", "video"),
}
_CROSS = [
    ("audio", "image"),
    ("image", "audio"),
    ("image", "video"),
    ("video", "audio"),
    ("audio", "video"),
    ("video", "image"),
]
_DST = {"image": "image", "audio": "sound", "video": "video"}
#: Media attached to an unrelated request: images most (an image must not mean "edit"), then audio.
_MEDIA_WEIGHTS = {"image": 0.45, "audio": 0.35, "video": 0.2}
_MEDIA_BODIES = {"image": 4, "sound": 2, "music": 1.5, "video": 2, "speech": 2, "question": 1.5}


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
    #: Attempts per wanted sample before a maker gives up (its combinations ran out).
    attempts: int = 25

    def __post_init__(self) -> None:
        unknown = sorted(set(self.mix) - set(DEFAULT_MIX))
        if unknown:
            raise DatasetError(f"unknown maker(s) {unknown} in the mix; known: {sorted(DEFAULT_MIX)}")
        if any(w < 0 for w in self.mix.values()):
            raise DatasetError("mix weights must be >= 0")


@dataclass
class _Draft:
    """A request before it becomes a sample."""

    instruction: str
    invocations: list[dict[str, Any]]
    text: str
    templates: list[str]
    pools: list[str]
    kind: str = "output-alignment"
    media: list[tuple[str, str | None, str | None]] = field(default_factory=list)


#: A template's period right after a filled value that already ends a sentence (`"Hi!".` -> `"Hi!"`).
_DOUBLE_STOP = re.compile(r'([.!?]"?)\.(?=\s|$)')


def _phrase(caption: str) -> str:
    """A caption as a noun phrase for an instruction: no final period, lower-case first letter."""
    text = " ".join(caption.split()).rstrip(" .")
    first = text.split(" ", 1)[0]
    if first and first != "I" and not (len(first) > 1 and first[1:2].isupper()):
        text = text[:1].lower() + text[1:]
    return text


def _sentence(text: str) -> str:
    return text[:1].upper() + text[1:]


def _allocate(size: int, weights: Mapping[str, float]) -> dict[str, int]:
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


class TemplateEngine:
    """Writes samples from corpora and phrasing pools (see the module docstring)."""

    def __init__(
        self,
        corpora: Corpora | None = None,
        captioned: Sequence[CaptionedItem] = (),
        *,
        recipe: Recipe | None = None,
        seed: int = 0,
        specs: Sequence[TaskSpec] = STANDARD_TASKS,
    ) -> None:
        self.corpora = corpora or builtin_corpora()
        self.recipe = recipe or Recipe()
        self.seed = seed
        self.specs = specs
        self._pools = {s: self._split_pools(s, captioned) for s in ("train", "test")}
        self._media = {
            s: {m: [c for c in captioned if c.path and c.modality == m and split_of(c.path) == s] for m in _DST}
            for s in ("train", "test")
        }

    # -- pools --------------------------------------------------------------------------------------
    def _split_pools(self, split: str, captioned: Sequence[CaptionedItem]) -> dict[str, list[Any]]:
        c = self.corpora

        def keep(items: Sequence[Any], key: Callable[[Any], str] = str) -> list[Any]:
            return [x for x in items if split_of(key(x)) == split]

        extra = {
            m: [_phrase(x.caption) for x in captioned if x.modality == m and split_of(x.path or x.caption) == split]
            for m in _DST
        }
        return {
            "image": keep(c.image_subjects) + extra["image"],
            "sound": keep(c.sounds) + extra["audio"],
            "music": keep(c.music),
            "video": keep(c.videos) + extra["video"],
            "speech": keep(c.speech),
            "edit": keep(c.edits),
            "question": keep(c.questions, lambda q: q.question),
            "scene": keep(c.scenes, lambda s: s.scene),
        }

    def _available(self, maker: str, split: str) -> bool:
        if maker in ("media_request", "multi", "describe", "edit_nth", "cross"):
            return True
        if maker == "spoken_answer":
            return bool(self._pools[split]["question"])
        return bool(self._pools[split].get(maker))

    # -- text helpers -------------------------------------------------------------------------------
    def _fill(self, rng: random.Random, template: str, values: Mapping[str, str], *, augment: bool = True) -> str:
        lower = augment and rng.random() < self.recipe.lowercase_p
        if augment and template.rstrip().endswith(".") and rng.random() < self.recipe.drop_period_p:
            template = template.rstrip()[:-1]
        out = ""
        for literal, name, _, _ in string.Formatter().parse(template):
            out += literal.lower() if lower else literal
            if name is not None:
                value = values[name]
                before = out.rstrip()
                if not lower and (not before or before[-1] in ".!?"):
                    value = _sentence(value)
                out += value
        out = _DOUBLE_STOP.sub(r"\1", " ".join(out.split()))
        return out if lower else _sentence(out)

    def _pick(self, rng: random.Random, split: str, pool: str) -> str:
        return rng.choice(self.corpora.phrasings[split][pool])

    def _reply(self, rng: random.Random, key: str) -> str:
        return rng.choice(self.corpora.responses[key])

    def _styled(
        self, rng: random.Random, split: str, subject: str, styles: Sequence[Style], p: float, default: str
    ) -> tuple[str, str]:
        """(phrase for the instruction, prompt for the generator)."""
        if styles and rng.random() < p:
            style = rng.choice(styles)
            return f"{subject} {rng.choice(style.asks[split])}", f"{subject}, {style.prompt}"
        return subject, f"{subject}, {default}" if default else subject

    def _content(self, rng: random.Random, split: str, pool: str) -> tuple[str, str]:
        """(value for the instruction, prompt) for one single-task pool."""
        c, value = self.corpora, rng.choice(self._pools[split][pool])
        if pool == "image":
            return self._styled(
                rng, split, value, c.image_styles, self.recipe.style_p, c.style_defaults.get("image", "")
            )
        if pool == "video":
            default = c.style_defaults.get("video", "")
            return self._styled(rng, split, value, c.video_styles, self.recipe.video_style_p, default)
        if pool in ("sound", "music"):
            return value, _sentence(value)
        return value, value  # speech: the words, verbatim

    def _media_item(self, rng: random.Random, split: str, modality: str) -> tuple[str, str | None, str | None]:
        real = self._media[split][modality]
        if real:
            item = rng.choice(real)
            return (modality, item.path, item.caption)
        return (modality, None, None)

    # -- makers -------------------------------------------------------------------------------------
    def _single(self, rng: random.Random, split: str, pool: str) -> _Draft:
        task, reply = _SINGLE[pool]
        value, prompt = self._content(rng, split, pool)
        template = self._pick(rng, split, pool)
        key = "line" if pool == "speech" else "subject"
        instruction = self._fill(rng, template, {key: value})
        inv = {"task": task, "prompt": prompt}
        return _Draft(instruction, [inv], self._reply(rng, reply), [template], [f"{split}.{pool}"])

    def _question(self, rng: random.Random, split: str) -> _Draft:
        qa = rng.choice(self._pools[split]["question"])
        template = self._pick(rng, split, "question_wrap")
        instruction = self._fill(rng, template, {"question": qa.question}, augment=False)
        return _Draft(instruction, [], qa.answer, [template], [f"{split}.question_wrap"], kind="text-only")

    def _spoken_answer(self, rng: random.Random, split: str) -> _Draft:
        qa = rng.choice(self._pools[split]["question"])
        template = self._pick(rng, split, "spoken_answer")
        instruction = self._fill(rng, template, {"question": qa.question}, augment=False)
        inv = {"task": "text-to-speech", "prompt": qa.answer}
        return _Draft(instruction, [inv], qa.answer, [template], [f"{split}.spoken_answer"], "reasoning")

    def _edit(self, rng: random.Random, split: str, nth: bool = False) -> _Draft:
        edit = rng.choice(self._pools[split]["edit"])
        pool = "edit_nth" if nth else "edit"
        template = self._pick(rng, split, pool)
        which = rng.choice(["first", "second"]) if nth else "first"
        instruction = self._fill(rng, template, {"edit": edit, "nth": which})
        ref = "image_2" if which == "second" else "image_1"
        media = [self._media_item(rng, split, "image") for _ in range(2 if nth else 1)]
        inv = {"task": "image-editing", "prompt": edit, "inputs": [ref]}
        return _Draft(instruction, [inv], self._reply(rng, "edit"), [template], [f"{split}.{pool}"], "editing", media)

    def _media_request(self, rng: random.Random, split: str) -> _Draft:
        modality = rng.choices(list(_MEDIA_WEIGHTS), weights=list(_MEDIA_WEIGHTS.values()))[0]
        body_pool = rng.choices(list(_MEDIA_BODIES), weights=list(_MEDIA_BODIES.values()))[0]
        body = self._question(rng, split) if body_pool == "question" else self._single(rng, split, body_pool)
        prefix = self._pick(rng, split, f"media_prefix_{modality}")
        body.instruction = f"{prefix} {body.instruction}".strip()
        body.templates.insert(0, prefix)
        body.pools.insert(0, f"{split}.media_prefix_{modality}")
        body.kind, body.media = "reasoning", [self._media_item(rng, split, modality)]
        return body

    def _multi(self, rng: random.Random, split: str) -> _Draft:
        groups = [["image"], ["sound", "music"], ["video"], ["speech"]]
        n = 3 if rng.random() < 0.2 else 2
        chosen = [rng.choice(g) for g in rng.sample(groups, n)]
        clauses, invocations, templates = {}, [], []
        for letter, pool in zip("abc", chosen, strict=False):
            value, prompt = self._content(rng, split, pool)
            clause = self._pick(rng, split, f"clause_{pool}")
            clauses[letter] = self._fill(rng, clause, {"line" if pool == "speech" else "subject": value}, augment=False)
            clauses[letter] = clauses[letter][:1].lower() + clauses[letter][1:]
            invocations.append({"task": _SINGLE[pool][0], "prompt": prompt})
            templates.append(clause)
        outer = self._pick(rng, split, f"multi{n}")
        instruction = self._fill(rng, outer, clauses)
        pools = [f"{split}.multi{n}"] + [f"{split}.clause_{p}" for p in chosen]
        return _Draft(instruction, invocations, self._reply(rng, "multi"), [outer, *templates], pools, "reasoning")

    def _scene(self, rng: random.Random, split: str) -> _Draft:
        pool = rng.choice(list(_SCENES))
        scene = rng.choice(self._pools[split]["scene"])
        template = self._pick(rng, split, pool)
        invocations = []
        for out in _SCENES[pool]:
            if out == "image":
                prompt = f"{scene.image}, {self.corpora.style_defaults.get('image', '')}".rstrip(", ")
                invocations.append({"task": "text-to-image", "prompt": prompt})
            elif out == "sound":
                invocations.append({"task": "text-to-audio", "prompt": _sentence(scene.sound)})
            else:
                invocations.append({"task": "text-to-video", "prompt": scene.video})
        instruction = self._fill(rng, template, {"scene": scene.scene})
        return _Draft(instruction, invocations, self._reply(rng, "multi"), [template], [f"{split}.{pool}"], "reasoning")

    def _describe(self, rng: random.Random, split: str) -> _Draft:
        modality = rng.choice(list(_DST))
        item = self._media_item(rng, split, modality)
        template = self._pick(rng, split, f"describe_{modality}")
        prefix = self._pick(rng, split, f"media_prefix_{modality}") if rng.random() < 0.5 else ""
        instruction = f"{prefix} {self._fill(rng, template, {})}".strip()
        caption = item[2]
        text = _sentence(caption.rstrip(" .")) + "." if caption else self._reply(rng, f"blind_{modality}")
        pools = [f"{split}.describe_{modality}"] + ([f"{split}.media_prefix_{modality}"] if prefix else [])
        templates = [template] + ([prefix] if prefix else [])
        return _Draft(instruction, [], text, templates, pools, "input-alignment", [item])

    def _cross(self, rng: random.Random, split: str) -> _Draft:
        pairs = [(s, d) for s, d in _CROSS if self._media[split][s]]
        if not pairs:  # placeholder media: the request depends on content the model cannot perceive
            src, dst = rng.choice(_CROSS)
            template = self._pick(rng, split, f"cross_{src}_{dst}")
            pool = f"{split}.cross_{src}_{dst}"
            reply = self._reply(rng, f"blind_{src}")
            return _Draft(
                self._fill(rng, template, {}), [], reply, [template], [pool], "reasoning", [(src, None, None)]
            )
        src, dst = rng.choice(pairs)
        item = rng.choice(self._media[split][src])
        phrase = _phrase(item.caption)
        if dst == "image":
            prompt = f"{phrase}, {self.corpora.style_defaults.get('image', '')}".rstrip(", ")
        else:
            prompt = _sentence(phrase) if dst == "audio" else phrase
        task = {"image": "text-to-image", "audio": "text-to-audio", "video": "text-to-video"}[dst]
        template = self._pick(rng, split, f"cross_{src}_{dst}")
        instruction = self._fill(rng, template, {})
        media: list[tuple[str, str | None, str | None]] = [(src, item.path, item.caption)]
        reply = self._reply(rng, _DST[dst])
        return _Draft(
            instruction,
            [{"task": task, "prompt": prompt}],
            reply,
            [template],
            [f"{split}.cross_{src}_{dst}"],
            "reasoning",
            media,
        )

    def _make(self, maker: str, rng: random.Random, split: str) -> _Draft:
        if maker in _SINGLE:
            return self._single(rng, split, maker)
        makers: dict[str, Callable[[random.Random, str], _Draft]] = {
            "question": self._question,
            "edit": self._edit,
            "edit_nth": lambda r, s: self._edit(r, s, nth=True),
            "media_request": self._media_request,
            "multi": self._multi,
            "scene": self._scene,
            "describe": self._describe,
            "cross": self._cross,
            "spoken_answer": self._spoken_answer,
        }
        return makers[maker](rng, split)

    def _frame(self, rng: random.Random, split: str, draft: _Draft) -> None:
        """Sometimes greet before the request and add a remark after it (never after a bare speech line)."""
        if rng.random() < self.recipe.opener_p:
            opener = self._pick(rng, split, "opener")
            lower = draft.instruction[:1].islower()
            draft.instruction = f"{opener.lower() if lower else opener} {draft.instruction}"
            draft.templates.append(opener)
            draft.pools.append(f"{split}.opener")
        speech_last = "text-to-speech" in [i["task"] for i in draft.invocations] and not draft.instruction.endswith('"')
        if rng.random() < self.recipe.closer_p and not speech_last:
            closer = self._pick(rng, split, "closer")
            end = "" if draft.instruction.endswith((".", "!", "?", '"')) else "."
            draft.instruction = f"{draft.instruction}{end} {closer}"
            draft.templates.append(closer)
            draft.pools.append(f"{split}.closer")

    def _sample(self, draft: _Draft, split: str, maker: str) -> Sample:
        source = {
            "engine": "template",
            "split": split,
            "maker": maker,
            "pool": draft.pools[0],
            "template": " | ".join(draft.templates),
            "corpus": self.corpora.name,
            "seed": self.seed,
        }
        response = {"text": draft.text, "invocations": draft.invocations}
        return make_sample(draft.kind, draft.instruction, response, media=draft.media, source=source, prefix="t")

    # -- runs ---------------------------------------------------------------------------------------
    def generate(self, split: str, size: int, *, exclude: Sequence[Sample] = ()) -> GenerationResult:
        """``size`` valid, unique samples of ``split`` (``train`` / ``test``), none duplicating ``exclude``."""
        if split not in ("train", "test"):
            raise DatasetError(f"split must be 'train' or 'test', got {split!r}")
        weights = {m: w for m, w in self.recipe.mix.items() if w > 0 and self._available(m, split)}
        quotas = _allocate(size, weights)
        collector = Collector(GenerationResult(requested=size), specs=self.specs, exclude=exclude)
        for maker, quota in quotas.items():
            rng = random.Random(f"{self.seed}/{split}/{maker}")
            kept = tries = 0
            while kept < quota and tries < quota * self.recipe.attempts:
                tries += 1
                draft = self._make(maker, rng, split)
                if maker not in ("question", "spoken_answer"):
                    self._frame(rng, split, draft)
                kept += collector.offer(self._sample(draft, split, maker))
            if kept < quota:
                collector.result.shortfall[maker] = quota - kept
        random.Random(f"{self.seed}/{split}/order").shuffle(collector.result.samples)
        return collector.result

    def generate_splits(self, train_size: int, test_size: int) -> tuple[GenerationResult, GenerationResult]:
        """A training set and a held-out set (disjoint phrasings, captions and instructions)."""
        train = self.generate("train", train_size)
        test = self.generate("test", test_size, exclude=train.samples)
        return train, test
