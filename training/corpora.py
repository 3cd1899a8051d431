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
from dataclasses import dataclass
from functools import cache
from importlib.resources import files
from pathlib import Path
from typing import Any, Protocol

from .dataset import MEDIA_MODALITIES, DatasetError

SPLITS = ("train", "test")
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
    "cross_": frozenset(),
    "spoken_answer": frozenset({"question"}),
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
    phrasings: Mapping[str, Mapping[str, tuple[str, ...]]]
    responses: Mapping[str, tuple[str, ...]]
    name: str = "builtin"


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


def check_phrasings(phrasings: Mapping[str, Mapping[str, tuple[str, ...]]], where: str = "phrasings") -> None:
    """Same pools in both splits, the right placeholders, and no template in both splits."""
    missing = [s for s in SPLITS if s not in phrasings]
    if missing:
        raise DatasetError(f"{where}: missing section(s) {['[' + s + ']' for s in missing]}")
    train, test = phrasings["train"], phrasings["test"]
    if set(train) != set(test):
        diff = sorted(set(train) ^ set(test))
        raise DatasetError(f"{where}: [train] and [test] must have the same pools; only in one: {diff}")
    for split in SPLITS:
        for pool, templates in phrasings[split].items():
            if not templates:
                raise DatasetError(f"{where}: [{split}].{pool} is empty; give it at least one template")
            want = _pool_placeholders(pool)
            for t in templates:
                try:
                    got = placeholders(t)
                except ValueError as e:
                    raise DatasetError(f"{where}: [{split}].{pool}: bad template {t!r} ({e})") from None
                if got != want:
                    raise DatasetError(
                        f"{where}: [{split}].{pool}: template {t!r} uses {sorted(got)}, expected {sorted(want)}"
                    )
    seen = {normalise_template(t): (pool, t) for pool, ts in train.items() for t in ts if not _is_bare(t)}
    for pool, templates in test.items():
        for t in templates:
            norm = normalise_template(t)
            if norm in seen and not _is_bare(t):
                other_pool, other = seen[norm]
                raise DatasetError(
                    f"{where}: held-out template {t!r} ([test].{pool}) is also a training template "
                    f"{other!r} ([train].{other_pool}); held-out phrasings must differ"
                )


# -- reading the built-in text files --------------------------------------------------------------


class _Dir(Protocol):
    def joinpath(self, *parts: str) -> Any: ...


def _lines(folder: _Dir, name: str) -> list[tuple[int, str]]:
    try:
        text = folder.joinpath(name).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise DatasetError(f"corpus file {name} is missing from {folder}") from None
    out = []
    for lineno, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if line and not line.startswith("#"):
            out.append((lineno, line))
    return out


def _plain(folder: _Dir, name: str) -> tuple[str, ...]:
    items = tuple(dict.fromkeys(line for _, line in _lines(folder, name)))
    if not items:
        raise DatasetError(f"corpus file {name} in {folder} has no entries")
    return items


def _fields(folder: _Dir, name: str, count: int) -> list[list[str]]:
    rows = []
    for lineno, line in _lines(folder, name):
        parts = [p.strip() for p in line.split("||")]
        if len(parts) != count or not all(parts):
            raise DatasetError(f"{name}:{lineno}: expected {count} non-empty fields separated by ' || '")
        rows.append(parts)
    return rows


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
    phrasings = {s: {k: tuple(v) for k, v in phr.get(s, {}).items()} for s in SPLITS if s in phr}
    check_phrasings(phrasings, "phrasings.toml")
    responses = {k: tuple(v) for k, v in phr.get("responses", {}).items()}
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
        questions=tuple(QA(q, a) for q, a in _fields(root, "questions.txt", 2)),
        scenes=tuple(Scene(*row) for row in _fields(root, "scenes.txt", 4)),
        image_styles=_styles(styles.get("image"), "image"),
        video_styles=_styles(styles.get("video"), "video"),
        style_defaults={str(k): str(v) for k, v in styles.get("defaults", {}).items()},
        phrasings=phrasings,
        responses=responses,
        name="builtin" if folder is None else str(folder),
    )


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
