"""``modaverse data ...``: generate, validate, count and split training data (a built-in plugin).

Registered through the ``register_commands`` hook like any plugin; heavy imports wait for the command.
"""

from __future__ import annotations

import importlib
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

if TYPE_CHECKING:
    from langchain_core.language_models import BaseChatModel

    from .corpora import CaptionedItem
    from .generation import GenerationResult

DEFAULT_TRAIN_SIZE = 6000
DEFAULT_TEST_SIZE = 800


def _fail(message: str, code: int = 2) -> None:
    click.echo(f"Error: {message}", err=True)
    sys.exit(code)


def _parse_mix(items: Sequence[str]) -> dict[str, float]:
    from .templates import DEFAULT_MIX

    mix = dict(DEFAULT_MIX)
    for item in items:
        name, sep, value = item.partition("=")
        try:
            mix[name.strip()] = float(value)
        except ValueError:
            _fail(f"--mix takes MAKER=WEIGHT (e.g. speech=20), got {item!r}")
        if not sep:
            _fail(f"--mix takes MAKER=WEIGHT, got {item!r}")
    return mix


def _load_teacher(factory: str | None, model: str | None) -> BaseChatModel:
    """A chat model from ``module:attr`` (an instance or a zero-argument callable) or ``provider:model``."""
    from langchain_core.language_models import BaseChatModel

    if factory:
        module_name, _, attr = factory.partition(":")
        try:
            obj: Any = getattr(importlib.import_module(module_name), attr or "teacher")
        except (ImportError, AttributeError) as e:
            _fail(f"--teacher-factory {factory!r}: {e}; give MODULE:ATTRIBUTE of a chat model or a function making one")
        if not isinstance(obj, BaseChatModel) and callable(obj):
            obj = obj()
        if not isinstance(obj, BaseChatModel):
            _fail(f"--teacher-factory {factory!r} gave {type(obj).__name__}, not a LangChain chat model")
        return obj
    if model:
        try:
            from langchain.chat_models import init_chat_model
        except ImportError:
            _fail(
                "--teacher-model needs `langchain` and the provider's package: pip install langchain langchain-openai"
            )
        try:
            return init_chat_model(model)
        except Exception as e:
            _fail(f"--teacher-model {model!r}: {type(e).__name__}: {e}")
    _fail("the teacher engine needs --teacher-model PROVIDER:MODEL or --teacher-factory MODULE:ATTR")
    raise AssertionError  # unreachable: _fail exits


def _report(name: str, path: Path, result: GenerationResult, as_json: bool) -> dict[str, Any]:
    summary = {"file": str(path), **result.summary(), "stats": result.stats().to_dict()}
    if not as_json:
        s = result.summary()
        click.echo(f"\n== {name}: {s['kept']} samples -> {path}")
        dropped = f"dropped: {s['duplicates']} duplicates, {s['invalid']} invalid"
        if "requests" in s:
            dropped += f"; {s['malformed_replies']} malformed replies, {s['failed_requests']} failed requests"
        click.echo(dropped)
        for reason, n in s["invalid_reasons"].items():
            click.echo(f"  invalid x{n}: {reason}")
        if s.get("shortfall"):
            click.echo(f"short of the requested size (combinations ran out): {s['shortfall']}")
        click.echo(result.stats().format())
    return summary


@click.group("data")
def data() -> None:
    """Training data: generate instruction samples, validate, count and split JSONL datasets."""


@data.command("generate")
@click.option("--engine", type=click.Choice(["template", "teacher"]), default="template", show_default=True)
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False), help="Training JSONL to write.")
@click.option(
    "--heldout",
    type=click.Path(dir_okay=False),
    help="Also write a held-out JSONL (held-out content; disjoint phrasings with --heldout-family).",
)
@click.option(
    "--heldout-family",
    help="Template engine: keep this phrasing family out of training and write the held-out split from it alone "
    "(`modaverse data corpora` lists them; `test` = the original split). Default: every family trains.",
)
@click.option("--size", default=DEFAULT_TRAIN_SIZE, show_default=True, help="Training samples (template engine).")
@click.option("--heldout-size", default=DEFAULT_TEST_SIZE, show_default=True, help="Held-out samples.")
@click.option("--seed", default=0, show_default=True, help="Same seed, same files.")
@click.option(
    "--corpus",
    "corpora_files",
    multiple=True,
    type=click.Path(exists=True, dir_okay=False),
    help="Captioned corpus, JSONL or CSV with path, caption, modality (repeatable).",
)
@click.option(
    "--corpora",
    "corpora_dir",
    type=click.Path(exists=True, file_okay=False),
    help="A folder replacing the built-in corpora (same files as prompts/corpora/).",
)
@click.option("--mix", multiple=True, help="Template engine: MAKER=WEIGHT to change the mix (repeatable).")
@click.option(
    "--teacher-model", help="Teacher: PROVIDER:MODEL for langchain's init_chat_model (e.g. openai:gpt-4o-mini)."
)
@click.option("--teacher-factory", help="Teacher: MODULE:ATTR, a chat model or a function returning one.")
@click.option(
    "--seeds",
    "seeds_file",
    type=click.Path(exists=True, dir_okay=False),
    help="Teacher: seed examples JSONL (default: the built-in ones).",
)
@click.option(
    "--references", multiple=True, help="Teacher: OUTPUT=FILE language references (image/audio/video/speech)."
)
@click.option("--batch-size", default=8, show_default=True, help="Teacher: candidates per request.")
@click.option("--per-candidate", default=2, show_default=True, help="Teacher: samples asked per candidate.")
@click.option("--limit", type=int, help="Teacher: use at most this many candidates per split.")
@click.option("--json", "as_json", is_flag=True, help="Print the run's counts as JSON.")
def generate(
    engine: str,
    output: str,
    heldout: str | None,
    heldout_family: str | None,
    size: int,
    heldout_size: int,
    seed: int,
    corpora_files: tuple[str, ...],
    corpora_dir: str | None,
    mix: tuple[str, ...],
    teacher_model: str | None,
    teacher_factory: str | None,
    seeds_file: str | None,
    references: tuple[str, ...],
    batch_size: int,
    per_candidate: int,
    limit: int | None,
    as_json: bool,
) -> None:
    """Generate instruction samples; every sample is validated and deduplicated, and counts are reported.

    The default model's data: `modaverse data generate -o data/train.jsonl --heldout data/test.jsonl`.
    """
    from .corpora import load_captioned, load_corpora
    from .dataset import DatasetError, write_samples

    try:
        corpora = load_corpora(corpora_dir) if corpora_dir else None
        captioned: list[CaptionedItem] = [item for f in corpora_files for item in load_captioned(f)]
        if engine == "template":
            test_size = heldout_size if heldout else 0
            results = _run_template(corpora, captioned, mix, seed, size, test_size, heldout_family)
        else:
            chat = _load_teacher(teacher_factory, teacher_model)
            results = _run_teacher(
                chat, corpora, captioned, seeds_file, references, seed, batch_size, per_candidate, limit, bool(heldout)
            )
    except DatasetError as e:
        _fail(str(e))
    reports = [_report("train", write_samples(results[0].samples, output), results[0], as_json)]
    if heldout:
        reports.append(_report("held-out", write_samples(results[1].samples, heldout), results[1], as_json))
    if as_json:
        click.echo(json.dumps({"engine": engine, "seed": seed, "splits": reports}, indent=2))


def _run_template(
    corpora: Any,
    captioned: list[CaptionedItem],
    mix: tuple[str, ...],
    seed: int,
    size: int,
    test_size: int,
    heldout_family: str | None = None,
) -> tuple[GenerationResult, GenerationResult]:
    from .templates import Recipe, TemplateEngine

    recipe = Recipe(mix=_parse_mix(mix))
    engine = TemplateEngine(corpora, captioned, recipe=recipe, seed=seed, heldout_family=heldout_family)
    return engine.generate_splits(size, test_size)


def _run_teacher(
    chat: BaseChatModel,
    corpora: Any,
    captioned: list[CaptionedItem],
    seeds_file: str | None,
    references: tuple[str, ...],
    seed: int,
    batch_size: int,
    per_candidate: int,
    limit: int | None,
    heldout: bool,
) -> tuple[GenerationResult, GenerationResult]:
    from .corpora import builtin_references, load_references, split_of
    from .generation import GenerationResult
    from .teacher import TeacherEngine, builtin_candidates, builtin_seeds, check_file_resource

    seeds = check_file_resource(Path(seeds_file)) if seeds_file else builtin_seeds()
    refs = builtin_references(corpora)
    for item in references:
        output, sep, path = item.partition("=")
        if not sep:
            _fail(f"--references takes OUTPUT=FILE (e.g. image=captions.txt), got {item!r}")
        refs[output] = load_references(path)
    results: list[GenerationResult] = []
    for split in ("train", "test") if heldout else ("train",):
        if captioned:
            items = [c for c in captioned if split_of(c.path or c.caption) == split]
        else:
            items = builtin_candidates(corpora, split)
        items = items[:limit] if limit else items
        engine = TeacherEngine(
            chat,
            seeds=seeds,
            references=refs,
            batch_size=batch_size,
            per_candidate=per_candidate,
            seed=seed,
            split=split,
        )
        results.append(engine.generate(items, exclude=results[0].samples if results else ()))
    if not heldout:
        results.append(GenerationResult())
    return results[0], results[1]


@data.command("validate")
@click.argument("files", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False))
@click.option("--max-errors", default=20, show_default=True, help="Problems to print per file.")
def validate(files: tuple[str, ...], max_errors: int) -> None:
    """Check every line of JSONL datasets; prints FILE:LINE: problem and exits 1 when any is invalid."""
    from .dataset import DatasetError, check_file

    bad = 0
    for f in files:
        try:
            report = check_file(f)
        except DatasetError as e:
            _fail(str(e))
        for lineno, message in report.errors[:max_errors]:
            click.echo(f"{f}:{lineno}: {message}", err=True)
        if len(report.errors) > max_errors:
            click.echo(f"{f}: ... and {len(report.errors) - max_errors} more", err=True)
        status = "ok" if report.ok else f"{len(report.errors)} invalid"
        click.echo(f"{f}: {len(report.samples)} valid samples, {status}")
        bad += len(report.errors)
    sys.exit(1 if bad else 0)


@data.command("stats")
@click.argument("files", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False))
@click.option("--pools", is_flag=True, help="Also count samples per phrasing pool.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def stats(files: tuple[str, ...], pools: bool, as_json: bool) -> None:
    """Count samples per modality pair (like `audio+text -> image`), kind, task set and split."""
    from .dataset import DatasetError, read_samples
    from .stats import compute_stats

    out = {}
    for f in files:
        try:
            counted = compute_stats(read_samples(f))
        except DatasetError as e:
            _fail(str(e))
        out[f] = counted.to_dict()
        if not as_json:
            click.echo(f"== {f}\n{counted.format(pools=pools)}\n")
    if as_json:
        click.echo(json.dumps(out, indent=2))


@data.command("split")
@click.argument("file", type=click.Path(exists=True, dir_okay=False))
@click.option(
    "-o", "--output-dir", required=True, type=click.Path(file_okay=False), help="Writes train.jsonl, test.jsonl."
)
@click.option("--test-fraction", default=0.1, show_default=True, type=click.FloatRange(0.0, 1.0))
@click.option(
    "--by",
    type=click.Choice(["template", "instruction", "sample"]),
    default="template",
    show_default=True,
    help="What must not cross the split: the instruction template (falls back to the instruction), "
    "the normalised instruction, or nothing (single samples).",
)
@click.option("--seed", default=0, show_default=True)
def split(file: str, output_dir: str, test_fraction: float, by: str, seed: int) -> None:
    """Split a dataset into train and test so that no template (or instruction) is in both."""
    from .dataset import DatasetError, read_samples, write_samples
    from .splitting import split_samples

    try:
        samples = read_samples(file)
    except DatasetError as e:
        _fail(str(e))
    train, test = split_samples(samples, test_fraction, by=by, seed=seed)
    out = Path(output_dir)
    write_samples(train, out / "train.jsonl")
    write_samples(test, out / "test.jsonl")
    click.echo(f"{len(train)} train -> {out / 'train.jsonl'}, {len(test)} test -> {out / 'test.jsonl'}")


@data.command("corpora")
@click.option(
    "--corpora", "corpora_dir", type=click.Path(exists=True, file_okay=False), help="A folder to check instead."
)
def corpora_cmd(corpora_dir: str | None) -> None:
    """Check the corpora files and count their entries and phrasing pools per split."""
    from .corpora import load_corpora, split_of
    from .dataset import DatasetError

    try:
        c = load_corpora(corpora_dir)
    except DatasetError as e:
        _fail(str(e))
    lists = {
        "image subjects": c.image_subjects,
        "sounds": c.sounds,
        "music": c.music,
        "videos": c.videos,
        "speech lines": c.speech,
        "edits": c.edits,
        "questions": [q.question for q in c.questions],
        "scenes": [s.scene for s in c.scenes],
    }
    click.echo(f"corpora: {c.name}")
    for name, items in lists.items():
        held = sum(split_of(x) == "test" for x in items)
        click.echo(f"  {name:<15} {len(items):>5}  ({held} held out)")
    click.echo(f"  {'image styles':<15} {len(c.image_styles):>5}\n  {'video styles':<15} {len(c.video_styles):>5}")
    for split_name, pools in c.phrasings.items():
        click.echo(f"phrasings [{split_name}]: {sum(len(v) for v in pools.values())} templates in {len(pools)} pools")
