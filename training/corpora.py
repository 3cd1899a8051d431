"""Corpora for instruction generation: the built-in ones (``prompts/corpora/``) and captioned corpora files.

Built-in corpora are text files written for this project (see ``prompts/corpora/README.md``): captions in
each generator's prompt style, lines to speak, edit instructions, questions with short answers, scenes,
styles, and instruction phrasings split into disjoint train and test pools. A folder with the same
files can replace them (``--corpora DIR``).

Captioned corpora (COCO-captions / AudioCaps / MSR-VTT style) are JSONL or CSV rows with a media path,
a caption and a modality (inferred from the file extension when absent).
"""

from __future__ import annotations

import csv
import hashlib
import json
import re
import string
import tomllib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from functools import cache
from importlib.resources import files
from pathlib import Path
from typing import Any, Protocol

from .dataset import MEDIA_MODALITIES, DatasetError
from .informal import parse_informal

SPLITS = ("train", "test")
#: The phrasing families of ``phrasings.toml``: ``[train]`` and ``[test]`` (the original split, same pools)
#: and one ``[families.NAME]`` table per further family (any subset of the pools).
LEGACY_FAMILIES = SPLITS
#: Share of captions, questions and lines held out for the test split (by a hash of the text).
TEST_PERCENT = 15

#: The placeholders each phrasing pool's templates must use (pools are matched by prefix).
POOL_PLACEHOLDERS: dict[str, frozenset[str]] = {
    "image": frozenset({"subject"}),
    "sound": frozenset({"subject"}),
    "music": frozenset({"subject"}),
    "video": frozenset({"subject"}),
    "speech": frozenset({"line"}),
    "edit": frozenset({"edit"}),
    "edit_nth": frozenset({"edit", "nth"}),
    "describe_": frozenset(),
    "clause_speech": frozenset({"line"}),
    "clause_": frozenset({"subject"}),
    "multi2": frozenset({"a", "b"}),
    "multi3": frozenset({"a", "b", "c"}),
    "scene_": frozenset({"scene"}),
    "media_prefix_": frozenset(),
    "question_wrap": frozenset({"question"}),
    "cross_told_": frozenset({"scene"}),
    "cross_": frozenset(),
    "derived": frozenset({"request"}),
    "multi_q": frozenset({"a", "question"}),
    "spoken_answer": frozenset({"question"}),
    "followup_edit": frozenset({"edit"}),
    "followup_": frozenset(),
    "opener": frozenset(),
    "closer": frozenset(),
}
RESPONSE_KEYS = (
    "image",
    "sound",
    "music",
    "video",
    "speech",
    "edit",
    "multi",
    "blind_image",
    "blind_audio",
    "blind_video",
)
#: Optional replies: a cross-modal request served from placeholder media (the output is made from the
#: words; the reply says the media were not seen). Without them the output's own reply is used.
OPTIONAL_RESPONSE_KEYS = ("cross_image", "cross_audio", "cross_video")
#: What a cross-modal request can ask for (``music`` is text-to-audio too, with a music prompt).
CROSS_OUTPUTS = ("image", "audio", "music", "video")
#: Tasks a derived picture (``derived.txt``) may use.
DERIVED_TASKS = ("image-editing", "text-to-image")

EXTENSIONS = {
    "image": (".jpg", ".jpeg", ".png", ".webp", ".gif", ".bmp", ".tif", ".tiff"),
    "audio": (".wav", ".mp3", ".flac", ".ogg", ".m4a", ".aac", ".opus"),
    "video": (".mp4", ".webm", ".mov", ".avi", ".mkv", ".m4v"),
}
_CAPTION_KEYS = ("caption", "text", "description", "sentence")
_PATH_KEYS = ("path", "file", "media", "image", "audio", "video", "file_name", "filename")
_MODALITY_KEYS = ("modality", "type")


@dataclass(frozen=True)
class Style:
    """A style: what the prompt gets (``prompt``) and how users ask for it, per split."""

    prompt: str
    asks: Mapping[str, tuple[str, ...]]


@dataclass(frozen=True)
class QA:
    """A plain question and its short answer."""

    question: str
    answer: str


@dataclass(frozen=True)
class Scene:
    """One scene told four ways: as a user says it, as an image subject, a sound and a video caption."""

    scene: str
    image: str
    sound: str
    video: str


@dataclass(frozen=True)
class Derived:
    """A picture derived from an attached photo: the request (an imperative clause), its task and prompt."""

    request: str
    task: str
    prompt: str


@dataclass(frozen=True)
class CaptionedItem:
    """One row of a captioned corpus: modality, caption and media file (None = caption only)."""

    modality: str
    caption: str
    path: str | None
    corpus: str


@dataclass(frozen=True)
class Corpora:
    """Everything the template engine draws from."""

    image_subjects: tuple[str, ...]
    sounds: tuple[str, ...]
    music: tuple[str, ...]
    videos: tuple[str, ...]
    speech: tuple[str, ...]
    edits: tuple[str, ...]
    questions: tuple[QA, ...]
    scenes: tuple[Scene, ...]
    image_styles: tuple[Style, ...]
    video_styles: tuple[Style, ...]
    style_defaults: Mapping[str, str]
    #: Phrasing family -> pool -> templates; ``train`` and ``test`` are the original two families.
    phrasings: Mapping[str, Mapping[str, tuple[str, ...]]]
    responses: Mapping[str, tuple[str, ...]]
    name: str = "builtin"
    #: Pictures derived from an attached photo (``derived.txt``; optional file).
    derived: tuple[Derived, ...] = ()
    #: Generator prompts for cross-modal requests on placeholder media, by ``SRC_DST`` (``[blind_prompts]``).
    blind_prompts: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    #: Plain text requests that are not questions (rewrite, translate, write, list...; ``requests.txt``;
    #: optional file), answered in text like the questions.
    requests: tuple[QA, ...] = ()
    #: Background a user writes before a request (``contexts.txt``; optional file): statements only, some
    #: naming pictures, videos or voices in passing, so that the request and not its background decides.
    contexts: tuple[str, ...] = ()
    #: Short things to say aloud, 1-4 words (``say.txt``; optional file): a word, a name, a greeting.
    say: tuple[str, ...] = ()
    #: Texting shorthand, formal phrase -> casual spellings (``informal.tsv``; optional file).
    informal: Mapping[str, tuple[str, ...]] = field(default_factory=dict)

    @property
    def families(self) -> tuple[str, ...]:
        """The phrasing families, in file order."""
        return tuple(self.phrasings)


def split_of(text: str, test_percent: int = TEST_PERCENT) -> str:
    """``test`` for about ``test_percent``% of texts (by a stable hash), else ``train``."""
    bucket = int.from_bytes(hashlib.sha256(text.strip().lower().encode()).digest()[:4], "big") % 100
    return "test" if bucket < test_percent else "train"


def placeholders(template: str) -> set[str]:
    """The ``{names}`` a template uses."""
    return {name for _, name, _, _ in string.Formatter().parse(template) if name is not None}


def normalise_template(template: str) -> str:
    """Lower case, placeholders kept, punctuation and spacing dropped: how held-out disjointness is judged."""
    return " ".join(re.sub(r"[^\w{}]+", " ", template.lower()).split())


def _is_bare(template: str) -> bool:
    return not re.sub(r"\{\w+\}", "", normalise_template(template)).strip()


def _pool_placeholders(pool: str) -> frozenset[str]:
    for prefix, names in POOL_PLACEHOLDERS.items():
        if pool == prefix or (prefix.endswith("_") and pool.startswith(prefix)):
            return names
    raise DatasetError(f"phrasings: unknown pool {pool!r}; known pools start with {sorted(POOL_PLACEHOLDERS)}")


def _section(family: str) -> str:
    return f"[{family}]" if family in LEGACY_FAMILIES else f"[families.{family}]"


def check_phrasings(phrasings: Mapping[str, Mapping[str, tuple[str, ...]]], where: str = "phrasings") -> None:
    """``[train]`` and ``[test]`` with the same pools, the right placeholders in every family's pools, and no
    template in two families (so that any family can be held out; bare placeholders are the exception)."""
    missing = [s for s in SPLITS if s not in phrasings]
    if missing:
        raise DatasetError(f"{where}: missing section(s) {['[' + s + ']' for s in missing]}")
    train, test = phrasings["train"], phrasings["test"]
    if set(train) != set(test):
        diff = sorted(set(train) ^ set(test))
        raise DatasetError(f"{where}: [train] and [test] must have the same pools; only in one: {diff}")
    for family, pools in phrasings.items():
        for pool, templates in pools.items():
            if not templates:
                raise DatasetError(f"{where}: {_section(family)}.{pool} is empty; give it at least one template")
            want = _pool_placeholders(pool)
            for t in templates:
                try:
                    got = placeholders(t)
                except ValueError as e:
                    raise DatasetError(f"{where}: {_section(family)}.{pool}: bad template {t!r} ({e})") from None
                if got != want:
                    where_pool = f"{where}: {_section(family)}.{pool}"
                    raise DatasetError(f"{where_pool}: template {t!r} uses {sorted(got)}, expected {sorted(want)}")
    seen: dict[str, tuple[str, str, str]] = {}
    for family, pools in phrasings.items():
        for pool, templates in pools.items():
            for t in templates:
                if _is_bare(t):
                    continue
                other_family, other_pool, other = seen.setdefault(normalise_template(t), (family, pool, t))
                if other_family != family:
                    raise DatasetError(
                        f"{where}: held-out template {t!r} ({_section(family)}.{pool}) is also a training template "
                        f"{other!r} ({_section(other_family)}.{other_pool}); held-out phrasings must differ "
                        "(a template belongs to one family)"
                    )


def split_phrasings(
    phrasings: Mapping[str, Mapping[str, tuple[str, ...]]], heldout_family: str | None = None
) -> dict[str, dict[str, list[tuple[str, str]]]]:
    """Pools of ``(family, template)`` per split: ``train`` draws on every family but ``heldout_family``;
    ``test`` on that family alone, or on every family when none is held out (then only the content differs)."""
    if heldout_family is not None and heldout_family not in phrasings:
        raise DatasetError(
            f"unknown phrasing family {heldout_family!r}; known: {', '.join(phrasings)} (see `modaverse data corpora`)"
        )

    def merged(families: list[str]) -> dict[str, list[tuple[str, str]]]:
        out: dict[str, list[tuple[str, str]]] = {}
        for family in families:
            for pool, templates in phrasings[family].items():
                out.setdefault(pool, []).extend((family, t) for t in templates)
        return out

    train = merged([f for f in phrasings if f != heldout_family])
    test = merged([heldout_family]) if heldout_family is not None else train
    return {"train": train, "test": test}


# -- reading the built-in text files --------------------------------------------------------------


class _Dir(Protocol):
    def joinpath(self, *parts: str) -> Any: ...


def _lines(folder: _Dir, name: str, *, optional: bool = False) -> list[tuple[int, str]]:
    try:
        text = folder.joinpath(name).read_text(encoding="utf-8")
    except FileNotFoundError:
        if optional:
            return []
        raise DatasetError(f"corpus file {name} is missing from {folder}") from None
    out = []
    for lineno, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if line and not line.startswith("#"):
            out.append((lineno, line))
    return out


def _plain(folder: _Dir, name: str, *, optional: bool = False) -> tuple[str, ...]:
    items = tuple(dict.fromkeys(line for _, line in _lines(folder, name, optional=optional)))
    if not items and not optional:
        raise DatasetError(f"corpus file {name} in {folder} has no entries")
    return items


def _fields(folder: _Dir, name: str, count: int, *, optional: bool = False) -> list[tuple[int, list[str]]]:
    rows = []
    for lineno, line in _lines(folder, name, optional=optional):
        parts = [p.strip() for p in line.split("||")]
        if len(parts) != count or not all(parts):
            raise DatasetError(f"{name}:{lineno}: expected {count} non-empty fields separated by ' || '")
        rows.append((lineno, parts))
    return rows


def _derived(folder: _Dir) -> tuple[Derived, ...]:
    out = []
    for lineno, (request, task, prompt) in _fields(folder, "derived.txt", 3, optional=True):
        if task not in DERIVED_TASKS:
            raise DatasetError(f"derived.txt:{lineno}: task {task!r} is not one of {list(DERIVED_TASKS)}")
        out.append(Derived(request, task, prompt))
    return tuple(dict.fromkeys(out))


def _string_lists(raw: Any, where: str) -> dict[str, tuple[str, ...]]:
    """A TOML table of string arrays (a family's pools, or blind prompts), checked."""
    if not isinstance(raw, dict):
        raise DatasetError(f"phrasings.toml: {where} must be a table of string lists")
    out = {}
    for key, value in raw.items():
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise DatasetError(f"phrasings.toml: {where}.{key} must be a list of strings")
        out[str(key)] = tuple(value)
    return out


def _phrasings(phr: Mapping[str, Any]) -> dict[str, dict[str, tuple[str, ...]]]:
    phrasings = {s: _string_lists(phr[s], f"[{s}]") for s in SPLITS if s in phr}
    families = phr.get("families", {})
    if not isinstance(families, dict) or not all(isinstance(v, dict) for v in families.values()):
        raise DatasetError("phrasings.toml: [families] must hold one table per family ([families.NAME])")
    for family, pools in families.items():
        if family in SPLITS or not re.fullmatch(r"[a-z][a-z0-9_]*", family):
            raise DatasetError(f"phrasings.toml: family name {family!r}: use a-z, 0-9 and _, not train or test")
        phrasings[family] = _string_lists(pools, f"[families.{family}]")
    check_phrasings(phrasings, "phrasings.toml")
    return phrasings


def _blind_prompts(raw: Any) -> dict[str, tuple[str, ...]]:
    prompts = _string_lists(raw, "[blind_prompts]")
    for key, values in prompts.items():
        src, _, dst = key.partition("_")
        if src not in MEDIA_MODALITIES or dst not in CROSS_OUTPUTS or src == dst or not values:
            raise DatasetError(
                f"phrasings.toml: [blind_prompts].{key}: keys are SRC_DST (SRC image/audio/video, "
                f"DST {'/'.join(CROSS_OUTPUTS)}) with at least one prompt"
            )
    return prompts


def _toml(folder: _Dir, name: str) -> dict[str, Any]:
    try:
        return tomllib.loads(folder.joinpath(name).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DatasetError(f"corpus file {name} is missing from {folder}") from None
    except tomllib.TOMLDecodeError as e:
        raise DatasetError(f"{name}: not valid TOML ({e})") from None


def _styles(raw: Any, kind: str) -> tuple[Style, ...]:
    out = []
    for i, entry in enumerate(raw or []):
        try:
            asks = {s: tuple(entry[s]) for s in SPLITS}
            style = Style(str(entry["prompt"]), asks)
        except (KeyError, TypeError):
            raise DatasetError(f"styles.toml: [[{kind}]] #{i + 1} needs `prompt`, `train` and `test`") from None
        overlap = {normalise_template(a) for a in asks["train"]} & {normalise_template(a) for a in asks["test"]}
        if overlap:
            raise DatasetError(f"styles.toml: [[{kind}]] {style.prompt!r}: asks {sorted(overlap)} are in both splits")
        out.append(style)
    return tuple(out)


def load_corpora(folder: str | Path | None = None) -> Corpora:
    """Read the built-in corpora, or a folder with the same files; every file is checked."""
    root: _Dir = files("modaverse_agent.prompts").joinpath("corpora") if folder is None else Path(folder)
    if folder is not None and not Path(folder).is_dir():
        raise DatasetError(f"corpora folder {folder} does not exist")
    phr = _toml(root, "phrasings.toml")
    phrasings = _phrasings(phr)
    responses = _string_lists(phr.get("responses", {}), "[responses]")
    missing = [k for k in RESPONSE_KEYS if not responses.get(k)]
    if missing:
        raise DatasetError(f"phrasings.toml: [responses] lacks {missing}")
    styles = _toml(root, "styles.toml")
    return Corpora(
        image_subjects=_plain(root, "image_subjects.txt"),
        sounds=_plain(root, "sounds.txt"),
        music=_plain(root, "music.txt"),
        videos=_plain(root, "videos.txt"),
        speech=_plain(root, "speech.txt"),
        edits=_plain(root, "edits.txt"),
        questions=tuple(QA(q, a) for _, (q, a) in _fields(root, "questions.txt", 2)),
        scenes=tuple(Scene(*row) for _, row in _fields(root, "scenes.txt", 4)),
        image_styles=_styles(styles.get("image"), "image"),
        video_styles=_styles(styles.get("video"), "video"),
        style_defaults={str(k): str(v) for k, v in styles.get("defaults", {}).items()},
        phrasings=phrasings,
        responses=responses,
        name="builtin" if folder is None else str(folder),
        derived=_derived(root),
        blind_prompts=_blind_prompts(phr.get("blind_prompts", {})),
        requests=tuple(dict.fromkeys(QA(q, a) for _, (q, a) in _fields(root, "requests.txt", 2, optional=True))),
        contexts=_plain(root, "contexts.txt", optional=True),
        informal=_informal(root),
        say=_plain(root, "say.txt", optional=True),
    )


def _informal(folder: _Dir) -> dict[str, tuple[str, ...]]:
    entry = folder.joinpath("informal.tsv")
    if not entry.is_file():
        return {}
    try:
        return parse_informal(entry.read_text(encoding="utf-8").splitlines())
    except ValueError as e:
        raise DatasetError(str(e)) from None


@cache
def builtin_corpora() -> Corpora:
    """The built-in corpora (read once)."""
    return load_corpora()


def builtin_references(corpora: Corpora | None = None) -> dict[str, list[str]]:
    """Language references per output (image / audio / video / speech): samples of the generators' prompt style."""
    c = corpora or builtin_corpora()
    styles = c.image_styles
    image = [f"{s}, {styles[i % len(styles)].prompt}" if styles else s for i, s in enumerate(c.image_subjects)]
    return {
        "image": image,
        "audio": [_sentence(x) for x in (*c.sounds, *c.music)],
        "video": list(c.videos),
        "speech": list(c.speech),
    }


def _sentence(text: str) -> str:
    return text[:1].upper() + text[1:]


# -- captioned corpora files ----------------------------------------------------------------------


def modality_from_path(path: str) -> str | None:
    """``image`` / ``audio`` / ``video`` from a file extension, or None."""
    suffix = Path(path).suffix.lower()
    for modality, exts in EXTENSIONS.items():
        if suffix in exts:
            return modality
    return None


def _first(row: Mapping[str, Any], keys: tuple[str, ...]) -> Any:
    for k in keys:
        if row.get(k) not in (None, ""):
            return row[k]
    return None


def _rows(path: Path) -> Iterator[tuple[int, Mapping[str, Any]]]:
    if path.suffix.lower() == ".csv":
        with path.open(encoding="utf-8", newline="") as f:
            for i, row in enumerate(csv.DictReader(f), 2):
                yield i, {k.strip().lower(): (v or "").strip() for k, v in row.items() if k}
        return
    with path.open(encoding="utf-8") as f:
        for i, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise DatasetError(f"{path}:{i}: not JSON ({e.msg}); a corpus is JSONL or CSV") from None
            if not isinstance(row, dict):
                raise DatasetError(f"{path}:{i}: expected a JSON object with `caption` and `path`")
            yield i, {str(k).lower(): v for k, v in row.items()}


def load_captioned(path: str | Path, name: str | None = None) -> list[CaptionedItem]:
    """Rows of a captioned corpus (JSONL or CSV: ``path``, ``caption``, ``modality``); relative paths are
    taken from the corpus file's folder and stored absolute."""
    p = Path(path)
    if not p.is_file():
        raise DatasetError(f"captioned corpus {p} does not exist")
    items = []
    for lineno, row in _rows(p):
        caption = _first(row, _CAPTION_KEYS)
        if not isinstance(caption, str) or not caption.strip():
            raise DatasetError(f"{p}:{lineno}: no caption (give one of the columns {list(_CAPTION_KEYS)})")
        media = _first(row, _PATH_KEYS)
        modality = _first(row, _MODALITY_KEYS) or (modality_from_path(str(media)) if media else None)
        if modality not in MEDIA_MODALITIES:
            what = f"modality {modality!r} is unknown" if modality else "no modality"
            raise DatasetError(
                f"{p}:{lineno}: {what}; add a `modality` column ({'/'.join(MEDIA_MODALITIES)}) "
                "or use a known file extension"
            )
        full = None
        if media:
            mp = Path(str(media)).expanduser()
            full = str(mp if mp.is_absolute() else (p.parent / mp).resolve())
        items.append(CaptionedItem(modality, " ".join(caption.split()), full, name or p.stem))
    if not items:
        raise DatasetError(f"captioned corpus {p} has no rows")
    return items


def load_references(path: str | Path) -> list[str]:
    """A language-reference file: one caption per line (``#`` comments and blanks skipped)."""
    p = Path(path)
    try:
        lines = p.read_text(encoding="utf-8").splitlines()
    except OSError as e:
        raise DatasetError(f"cannot read references {p}: {e.strerror}") from None
    out = [x.strip() for x in lines if x.strip() and not x.strip().startswith("#")]
    if not out:
        raise DatasetError(f"references file {p} has no lines")
    return out
