"""The offline template engine: instruction samples from corpora and phrasing pools, no LLM, seeded.

Each *maker* writes one kind of sample (a picture request, a question, an edit, a multi-output request,
media with an unrelated request, a picture derived from a photo, ...). A run gives every maker a share of
the samples (``Recipe.mix``) and its own random stream (``seed/split/maker``), so the same seed always
writes the same file.

Phrasings come in *families* (``[train]``, ``[test]`` and ``[families.NAME]`` of ``phrasings.toml``). By
default training draws on every family; ``heldout_family`` keeps one out of training and writes the test
split from it alone (``"test"`` gives the original split). Test samples also use only held-out captions /
questions / lines (about 15%, by a hash of the text), and never repeat a training instruction. Media with
no file (``path: null``) are placeholders: the default model, trained without a media encoder, learns that
media are present, answers questions about their content by saying it cannot perceive them, and serves
requests for another output from the words (a cross-modal request gets a prompt from what the user says,
or a ``[blind_prompts]`` one). Captioned corpora with real files add caption-based describe and
cross-modal samples (the paper's input-side alignment and reasoning).
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable, Sequence
from typing import Any

from modaverse_agent.meta_response import TaskSpec

from .corpora import LEGACY_FAMILIES, CaptionedItem, Corpora, Scene, Style, builtin_corpora, split_of, split_phrasings
from .dataset import DatasetError, Sample, make_sample
from .drafts import Draft
from .followups import FollowupMaker
from .generation import Collector, GenerationResult
from .informal import Informalizer
from .narrowing import draw_offered, narrow, narrowed_kind
from .recipe import DEFAULT_MIX, Recipe, allocate, is_question, phrase, sentence
from .tasks import STANDARD_TASKS

__all__ = ["DEFAULT_MIX", "Recipe", "TemplateEngine"]

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
#: Multi-output clause groups (one of each group at most per request).
_GROUPS = (("image",), ("sound", "music"), ("video",), ("speech",))
_DST = {"image": "image", "audio": "sound", "video": "video"}
#: Cross-modal outputs: (task, response key); ``audio`` pools may ask for sound or music.
_CROSS_OUT = {
    "image": ("text-to-image", "image"),
    "audio": ("text-to-audio", "sound"),
    "music": ("text-to-audio", "music"),
    "video": ("text-to-video", "video"),
}
#: Media attached to an unrelated request: images most (an image must not mean "edit"), then audio.
_MEDIA_WEIGHTS = {"image": 0.45, "audio": 0.35, "video": 0.2}
_MEDIA_BODIES = {"image": 4, "sound": 2, "music": 1.5, "video": 2, "speech": 2, "question": 1.5}
#: Share of multi-output requests that pair one output with a plain question (when the pools allow).
_MULTI_Q_P = 0.25
#: Share of cross-modal requests (placeholder media) where the user says what the media hold.
_TOLD_P = 0.3
#: Share of multi-output requests with three outputs.
_MULTI3_P = 0.15


class TemplateEngine(FollowupMaker):
    """Writes samples from corpora and phrasing pools (see the module docstring).

    ``heldout_family`` keeps one phrasing family (``modaverse data corpora`` lists them) out of training and
    writes the held-out split from it alone; ``None`` trains on every family, and the held-out split then
    differs from training by its content only (held-out captions, questions and lines).
    """

    def __init__(
        self,
        corpora: Corpora | None = None,
        captioned: Sequence[CaptionedItem] = (),
        *,
        recipe: Recipe | None = None,
        seed: int = 0,
        specs: Sequence[TaskSpec] = STANDARD_TASKS,
        heldout_family: str | None = None,
    ) -> None:
        self.corpora = corpora or builtin_corpora()
        self.recipe = recipe or Recipe()
        self.seed = seed
        self.specs = specs
        self.heldout_family = heldout_family
        self._phr = split_phrasings(self.corpora.phrasings, heldout_family)
        self._pools = {s: self._split_pools(s, captioned) for s in ("train", "test")}
        self._informalizer = Informalizer(self.corpora.informal) if self.corpora.informal else None
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
            m: [phrase(x.caption) for x in captioned if x.modality == m and split_of(x.path or x.caption) == split]
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
            "asked": [q for q in keep(c.questions, lambda q: q.question) if is_question(q.question)],
            "request": keep(c.requests, lambda q: q.question),
            "scene": keep(c.scenes, lambda s: s.scene),
            "derived": keep(c.derived, lambda d: d.request),
            "context": keep(c.contexts),
            "say": keep(c.say),
        }

    def _has(self, split: str, pool: str) -> bool:
        return bool(self._phr[split].get(pool))

    def _clause_groups(self, split: str) -> list[list[str]]:
        groups = [[p for p in g if self._has(split, f"clause_{p}") and self._pools[split][p]] for g in _GROUPS]
        return [g for g in groups if g]

    def _media_options(self, split: str) -> tuple[list[str], list[str]]:
        """(modalities with a prefix pool, request bodies available) for media attached to a request."""
        modalities = [m for m in _MEDIA_WEIGHTS if self._has(split, f"media_prefix_{m}")]
        return modalities, [b for b in _MEDIA_BODIES if self._available(b, split)]

    def _cross_options(self, split: str) -> list[tuple[str, str, str]]:
        """(``free`` / ``told``, source, output) pairs the pools allow; with real media, only their sources."""
        real = [m for m in _DST if self._media[split][m]]
        out = []
        for src in real or list(_DST):
            for dst in _CROSS_OUT:
                if dst == src:
                    continue
                if self._has(split, f"cross_{src}_{dst}"):
                    out.append(("free", src, dst))
                told = self._has(split, f"cross_told_{src}_{dst}") and self._pools[split]["scene"]
                if told and not real and dst != "music":
                    out.append(("told", src, dst))
        return out

    def _available(self, maker: str, split: str) -> bool:
        pools = self._pools[split]
        if maker in _SINGLE:
            return self._has(split, maker) and bool(pools[maker])
        if maker in ("question", "request"):
            return self._has(split, "question_wrap") and bool(pools[maker])
        if maker == "say":
            return self._has(split, "speech") and bool(pools["say"])
        if maker == "spoken_answer":
            return self._has(split, maker) and bool(pools["asked"])
        if maker in ("edit", "edit_nth", "derived"):
            return self._has(split, maker) and bool(pools["derived" if maker == "derived" else "edit"])
        if maker == "media_request":
            return all(self._media_options(split))
        if maker == "multi":
            groups = self._clause_groups(split)
            pair = self._has(split, "multi2") and len(groups) >= 2
            return pair or (self._has(split, "multi_q") and bool(groups) and bool(pools["asked"]))
        if maker == "followup":
            return self._followup_available(split)
        if maker == "scene":
            return bool(pools["scene"]) and any(self._has(split, p) for p in _SCENES)
        if maker == "describe":
            return any(self._has(split, f"describe_{m}") for m in _DST)
        return bool(self._cross_options(split))  # cross

    # -- text helpers -------------------------------------------------------------------------------
    def _pick(self, rng: random.Random, split: str, pool: str, *, bare: bool = False) -> tuple[str, str]:
        """A template of ``pool`` and its label (``family.pool``) for ``source.pool``; ``bare``: only the bare
        placeholder (``{question}``) when the pool has it."""
        choices = self._phr[split][pool]
        if bare:
            choices = [(f, t) for f, t in choices if not re.sub(r"\{\w+\}", "", t).strip()] or choices
        family, template = rng.choice(choices)
        return template, f"{family}.{pool}"

    def _reply(self, rng: random.Random, key: str) -> str:
        return rng.choice(self.corpora.responses[key])

    def _asks(self, style: Style, split: str) -> tuple[str, ...]:
        """A style's asks for ``split``: they belong to the ``train`` / ``test`` families."""
        held = self.heldout_family
        if split == "test" and held in LEGACY_FAMILIES:
            return style.asks[held]
        return tuple(a for f in LEGACY_FAMILIES if split == "test" or f != held for a in style.asks[f])

    def _styled(
        self, rng: random.Random, split: str, subject: str, styles: Sequence[Style], p: float, default: str
    ) -> tuple[str, str]:
        """(phrase for the instruction, prompt for the generator)."""
        if styles and rng.random() < p:
            style = rng.choice(styles)
            asks = self._asks(style, split)
            if asks:
                return f"{subject} {rng.choice(asks)}", f"{subject}, {style.prompt}"
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
            return value, sentence(value)
        return value, value  # speech: the words, verbatim

    def _image_prompt(self, subject: str) -> str:
        return f"{subject}, {self.corpora.style_defaults.get('image', '')}".rstrip(", ")

    def _media_item(self, rng: random.Random, split: str, modality: str) -> tuple[str, str | None, str | None]:
        real = self._media[split][modality]
        if real:
            item = rng.choice(real)
            return (modality, item.path, item.caption)
        return (modality, None, None)

    # -- makers -------------------------------------------------------------------------------------
    def _single(self, rng: random.Random, split: str, pool: str, content: str | None = None) -> Draft:
        """One output from ``pool``'s phrasings, filled from the ``content`` pool (default: ``pool``)."""
        task, reply = _SINGLE[pool]
        value, prompt = self._content(rng, split, content or pool)
        template, label = self._pick(rng, split, pool)
        key = "line" if pool == "speech" else "subject"
        instruction = self.recipe.fill(rng, template, {key: value})
        inv = {"task": task, "prompt": prompt}
        return Draft(instruction, [inv], self._reply(rng, reply), [template], [label])

    def _question(self, rng: random.Random, split: str, pool: str = "question") -> Draft:
        """A plain question answered in text; greetings, requests and statements come as they are. ``pool``:
        ``question`` (``questions.txt``) or ``request`` (``requests.txt``: rewrite, translate, write...)."""
        qa = rng.choice(self._pools[split][pool])
        template, label = self._pick(rng, split, "question_wrap", bare=not is_question(qa.question))
        instruction = self.recipe.fill(rng, template, {"question": qa.question}, augment=False)
        return Draft(instruction, [], qa.answer, [template], [label], kind="text-only")

    def _spoken_answer(self, rng: random.Random, split: str) -> Draft:
        qa = rng.choice(self._pools[split]["asked"])
        template, label = self._pick(rng, split, "spoken_answer")
        instruction = self.recipe.fill(rng, template, {"question": qa.question}, augment=False)
        inv = {"task": "text-to-speech", "prompt": qa.answer}
        return Draft(instruction, [inv], qa.answer, [template], [label], "reasoning")

    def _edit(self, rng: random.Random, split: str, nth: bool = False) -> Draft:
        edit = rng.choice(self._pools[split]["edit"])
        template, label = self._pick(rng, split, "edit_nth" if nth else "edit")
        which = rng.choice(["first", "second"]) if nth else "first"
        instruction = self.recipe.fill(rng, template, {"edit": edit, "nth": which})
        ref = "image_2" if which == "second" else "image_1"
        media = [self._media_item(rng, split, "image") for _ in range(2 if nth else 1)]
        inv = {"task": "image-editing", "prompt": edit, "inputs": [ref]}
        return Draft(instruction, [inv], self._reply(rng, "edit"), [template], [label], "editing", media)

    def _derived(self, rng: random.Random, split: str) -> Draft:
        """A picture derived from an attached photo: the photo redrawn (editing) or a new picture (text-to-image)."""
        item = rng.choice(self._pools[split]["derived"])
        template, label = self._pick(rng, split, "derived")
        instruction = self.recipe.fill(rng, template, {"request": item.request})
        media = [self._media_item(rng, split, "image")]
        if item.task == "image-editing":
            inv = {"task": item.task, "prompt": item.prompt, "inputs": ["image_1"]}
            return Draft(instruction, [inv], self._reply(rng, "edit"), [template], [label], "editing", media)
        inv = {"task": item.task, "prompt": item.prompt}
        return Draft(instruction, [inv], self._reply(rng, "image"), [template], [label], "reasoning", media)

    def _media_request(self, rng: random.Random, split: str) -> Draft:
        modalities, bodies = self._media_options(split)
        modality = rng.choices(modalities, weights=[_MEDIA_WEIGHTS[m] for m in modalities])[0]
        body_pool = rng.choices(bodies, weights=[_MEDIA_BODIES[b] for b in bodies])[0]
        body = self._question(rng, split) if body_pool == "question" else self._single(rng, split, body_pool)
        prefix, label = self._pick(rng, split, f"media_prefix_{modality}")
        body.instruction = f"{prefix} {body.instruction}".strip()
        body.templates.insert(0, prefix)
        body.pools.insert(0, label)
        body.kind, body.media = "reasoning", [self._media_item(rng, split, modality)]
        return body

    def _clause(self, rng: random.Random, split: str, pool: str) -> tuple[str, dict[str, Any], str, str]:
        """(clause, invocation, template, label) for one output of a multi-output request."""
        value, prompt = self._content(rng, split, pool)
        template, label = self._pick(rng, split, f"clause_{pool}")
        clause = self.recipe.fill(rng, template, {"line" if pool == "speech" else "subject": value}, augment=False)
        return clause[:1].lower() + clause[1:], {"task": _SINGLE[pool][0], "prompt": prompt}, template, label

    def _multi(self, rng: random.Random, split: str) -> Draft:
        groups = self._clause_groups(split)
        can_pair = self._has(split, "multi2") and len(groups) >= 2
        can_q = self._has(split, "multi_q") and bool(self._pools[split]["asked"])
        if can_q and (not can_pair or rng.random() < _MULTI_Q_P):
            return self._multi_question(rng, split, rng.choice(rng.choice(groups)))
        three = len(groups) >= 3 and self._has(split, "multi3") and rng.random() < _MULTI3_P
        n = 3 if three else 2
        chosen = [rng.choice(g) for g in rng.sample(groups, n)]
        clauses, invocations, templates, labels = {}, [], [], []
        for letter, pool in zip("abc", chosen, strict=False):
            clauses[letter], inv, template, label = self._clause(rng, split, pool)
            invocations.append(inv)
            templates.append(template)
            labels.append(label)
        outer, label = self._pick(rng, split, f"multi{n}")
        instruction = self.recipe.fill(rng, outer, clauses)
        reply = self._reply(rng, "multi")
        return Draft(instruction, invocations, reply, [outer, *templates], [label, *labels], "reasoning")

    def _multi_question(self, rng: random.Random, split: str, pool: str) -> Draft:
        """One output and a plain question in one request: exactly one invocation, the answer in the text."""
        clause, inv, template, clause_label = self._clause(rng, split, pool)
        qa = rng.choice(self._pools[split]["asked"])
        outer, label = self._pick(rng, split, "multi_q")
        instruction = self.recipe.fill(rng, outer, {"a": clause, "question": qa.question})
        text = f"{qa.answer} {self._reply(rng, _SINGLE[pool][1])}"
        return Draft(instruction, [inv], text, [outer, template], [label, clause_label], "reasoning")

    def _scene(self, rng: random.Random, split: str) -> Draft:
        pool = rng.choice([p for p in _SCENES if self._has(split, p)])
        scene = rng.choice(self._pools[split]["scene"])
        template, label = self._pick(rng, split, pool)
        invocations = [self._scene_invocation(scene, out) for out in _SCENES[pool]]
        instruction = self.recipe.fill(rng, template, {"scene": scene.scene})
        return Draft(instruction, invocations, self._reply(rng, "multi"), [template], [label], "reasoning")

    def _scene_invocation(self, scene: Scene, out: str) -> dict[str, Any]:
        if out == "image":
            return {"task": "text-to-image", "prompt": self._image_prompt(scene.image)}
        if out in ("sound", "audio"):
            return {"task": "text-to-audio", "prompt": sentence(scene.sound)}
        return {"task": "text-to-video", "prompt": scene.video}

    def _describe(self, rng: random.Random, split: str) -> Draft:
        modality = rng.choice([m for m in _DST if self._has(split, f"describe_{m}")])
        item = self._media_item(rng, split, modality)
        template, label = self._pick(rng, split, f"describe_{modality}")
        prefixed = self._has(split, f"media_prefix_{modality}") and rng.random() < 0.5
        prefix, prefix_label = self._pick(rng, split, f"media_prefix_{modality}") if prefixed else ("", "")
        instruction = f"{prefix} {self.recipe.fill(rng, template, {})}".strip()
        caption = item[2]
        text = sentence(caption.rstrip(" .")) + "." if caption else self._reply(rng, f"blind_{modality}")
        labels = [label] + ([prefix_label] if prefix else [])
        templates = [template] + ([prefix] if prefix else [])
        return Draft(instruction, [], text, templates, labels, "input-alignment", [item])

    def _cross(self, rng: random.Random, split: str) -> Draft:
        """Attached media expressed in another modality: the words, not the media, decide the output."""
        options = self._cross_options(split)
        told = [o for o in options if o[0] == "told"]
        free = [o for o in options if o[0] == "free"]
        how, src, dst = rng.choice(told if told and (not free or rng.random() < _TOLD_P) else free)
        task, reply_key = _CROSS_OUT[dst]
        if how == "told":  # the user says what the media hold: the prompt comes from those words
            scene = rng.choice(self._pools[split]["scene"])
            template, label = self._pick(rng, split, f"cross_told_{src}_{dst}")
            inv = self._scene_invocation(scene, dst)
            instruction = self.recipe.fill(rng, template, {"scene": scene.scene})
            reply = self._reply(rng, reply_key)
            return Draft(instruction, [inv], reply, [template], [label], "reasoning", [(src, None, None)])
        template, label = self._pick(rng, split, f"cross_{src}_{dst}")
        instruction = self.recipe.fill(rng, template, {})
        real = self._media[split][src]
        if real:  # a captioned file: its caption becomes the other generator's prompt
            item = rng.choice(real)
            said = phrase(item.caption)
            prompt = self._image_prompt(said) if dst == "image" else said if dst == "video" else sentence(said)
            media: list[tuple[str, str | None, str | None]] = [(src, item.path, item.caption)]
            reply = self._reply(rng, reply_key)
            return Draft(
                instruction, [{"task": task, "prompt": prompt}], reply, [template], [label], "reasoning", media
            )
        blind = self.corpora.blind_prompts.get(f"{src}_{dst}")
        if not blind:  # placeholder media and no prompt to make it from: say the media cannot be perceived
            reply = self._reply(rng, f"blind_{src}")
            return Draft(instruction, [], reply, [template], [label], "reasoning", [(src, None, None)])
        inv = {"task": task, "prompt": rng.choice(blind)}
        key = f"cross_{src}" if self.corpora.responses.get(f"cross_{src}") else reply_key
        return Draft(instruction, [inv], self._reply(rng, key), [template], [label], "reasoning", [(src, None, None)])

    def _make(self, maker: str, rng: random.Random, split: str) -> Draft:
        if maker in _SINGLE:
            return self._single(rng, split, maker)
        makers: dict[str, Callable[[random.Random, str], Draft]] = {
            "question": self._question,
            "request": lambda r, s: self._question(r, s, "request"),
            "say": lambda r, s: self._single(r, s, "speech", content="say"),  # a word, a name, a greeting
            "edit": self._edit,
            "edit_nth": lambda r, s: self._edit(r, s, nth=True),
            "derived": self._derived,
            "media_request": self._media_request,
            "multi": self._multi,
            "scene": self._scene,
            "describe": self._describe,
            "cross": self._cross,
            "spoken_answer": self._spoken_answer,
            "followup": self._followup,
        }
        return makers[maker](rng, split)

    def _frame(self, rng: random.Random, split: str, draft: Draft) -> None:
        """Sometimes greet before the request and add a remark after it (never after a bare speech line)."""
        if self._has(split, "opener") and rng.random() < self.recipe.opener_p:
            opener, label = self._pick(rng, split, "opener")
            lower = draft.instruction[:1].islower()
            draft.instruction = f"{opener.lower() if lower else opener} {draft.instruction}"
            draft.templates.append(opener)
            draft.pools.append(label)
        speech_last = "text-to-speech" in [i["task"] for i in draft.invocations] and not draft.instruction.endswith('"')
        if self._has(split, "closer") and rng.random() < self.recipe.closer_p and not speech_last:
            closer, label = self._pick(rng, split, "closer")
            end = "" if draft.instruction.endswith((".", "!", "?", '"')) else "."
            draft.instruction = f"{draft.instruction}{end} {closer}"
            draft.templates.append(closer)
            draft.pools.append(label)

    def _context(self, rng: random.Random, split: str, draft: Draft, after_rng: random.Random) -> None:
        """Sometimes put the user's background (``contexts.txt``, held out by content) before the request, or
        (``context_after_p`` of those times, drawn from ``after_rng``) after it."""
        pool = self._pools[split]["context"]
        if not pool or self.recipe.context_p <= 0 or rng.random() >= self.recipe.context_p:
            return
        context = rng.choice(pool)
        if self.recipe.context_after_p > 0 and after_rng.random() < self.recipe.context_after_p:
            end = "" if draft.instruction.endswith((".", "!", "?", '"')) else "."
            draft.instruction = f"{draft.instruction}{end} {context}"
        else:
            if draft.instruction[:1].islower():
                context = context[:1].lower() + context[1:]
            draft.instruction = f"{context} {draft.instruction}"
        draft.pools.append("contexts.txt")

    def _informal(self, rng: random.Random, draft: Draft) -> None:
        """Sometimes type the request in texting style (``informal.tsv``; quoted text and lines to speak kept)."""
        if self._informalizer is None or self.recipe.informal_p <= 0 or rng.random() >= self.recipe.informal_p:
            return
        lines = [i["prompt"] for i in draft.invocations if i["task"] == "text-to-speech"]
        draft.instruction = self._informalizer(draft.instruction, rng, keep=lines)
        draft.pools.append("informal.tsv")

    def _narrow(self, rng: random.Random, draft: Draft) -> tuple[str, ...] | None:
        """Sometimes offer a narrower task list (``narrowing.py``) and rewrite the answer for it; the list or None."""
        if self.recipe.narrow_p <= 0 or rng.random() >= self.recipe.narrow_p:
            return None
        offered = draw_offered(rng, [s.task for s in self.specs], self.recipe.narrow_to)
        text, kept = narrow(draft.text, draft.invocations, offered)
        if len(kept) != len(draft.invocations):
            draft.kind = narrowed_kind(draft.kind, kept, bool(draft.media))
            draft.text, draft.invocations = text, kept
        return offered

    def _sample(self, draft: Draft, split: str, maker: str, offered: Sequence[str] | None = None) -> Sample:
        source = {
            "engine": "template",
            "split": split,
            "maker": maker,
            "pool": draft.pools[0],
            "template": " | ".join(draft.templates),
            "corpus": self.corpora.name,
            "seed": self.seed,
        }
        if self.heldout_family is not None:
            source["heldout_family"] = self.heldout_family
        response = {"text": draft.text, "invocations": draft.invocations}
        return make_sample(
            draft.kind, draft.instruction, response, media=draft.media, source=source, prefix="t", offered=offered
        )

    # -- runs ---------------------------------------------------------------------------------------
    def generate(self, split: str, size: int, *, exclude: Sequence[Sample] = ()) -> GenerationResult:
        """``size`` valid, unique samples of ``split`` (``train`` / ``test``), none duplicating ``exclude``."""
        if split not in ("train", "test"):
            raise DatasetError(f"split must be 'train' or 'test', got {split!r}")
        weights = {m: w for m, w in self.recipe.mix.items() if w > 0 and self._available(m, split)}
        if size and not weights:
            raise DatasetError(
                f"no maker in the mix can write {split} samples from the phrasings "
                f"(held-out family: {self.heldout_family}; pools: {sorted(self._phr[split])})"
            )
        quotas = allocate(size, weights) if size else {}
        collector = Collector(GenerationResult(requested=size), specs=self.specs, exclude=exclude)
        for maker, quota in quotas.items():
            rng = random.Random(f"{self.seed}/{split}/{maker}")
            context_rng = random.Random(f"{self.seed}/{split}/{maker}/context")
            after_rng = random.Random(f"{self.seed}/{split}/{maker}/context-after")
            informal_rng = random.Random(f"{self.seed}/{split}/{maker}/informal")
            narrow_rng = random.Random(f"{self.seed}/{split}/{maker}/narrow")
            kept = tries = 0
            while kept < quota and tries < quota * self.recipe.attempts:
                tries += 1
                draft = self._make(maker, rng, split)
                if maker not in ("question", "spoken_answer", "followup"):
                    self._frame(rng, split, draft)
                offered = None
                if maker != "followup":
                    self._context(context_rng, split, draft, after_rng)
                    self._informal(informal_rng, draft)
                    offered = self._narrow(narrow_rng, draft)
                kept += collector.offer(self._sample(draft, split, maker, offered))
            if kept < quota:
                collector.result.shortfall[maker] = quota - kept
        random.Random(f"{self.seed}/{split}/order").shuffle(collector.result.samples)
        return collector.result

    def generate_splits(self, train_size: int, test_size: int) -> tuple[GenerationResult, GenerationResult]:
        """A training set and a held-out set (held-out content; and phrasings, when a family is held out)."""
        train = self.generate("train", train_size)
        test = self.generate("test", test_size, exclude=train.samples)
        return train, test
