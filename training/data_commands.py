"""``modaverse data ...``: generate, validate, count and split training data (a built-in plugin).

Registered through the ``register_commands`` hook like any plugin; heavy imports wait for the command.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

if TYPE_CHECKING:
    from langchain_core.language_models import BaseChatModel

    from .corpora import CaptionedItem
    from .generation import GenerationResult
    from .teacher_retry import RetryPolicy
    from .templates import TemplateEngine

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
        if "requests" in s:
            _report_teacher(s)
        if s.get("shortfall"):
            click.echo(f"short of the requested size (combinations ran out): {s['shortfall']}")
        click.echo(result.stats().format())
    return summary


def _report_teacher(s: dict[str, Any]) -> None:
    for reason, n in s.get("malformed_reasons", {}).items():
        click.echo(f"  malformed x{n}: {reason}")
    resumed = f", {s['resumed_requests']} of them from an earlier run" if s.get("resumed_requests") else ""
    click.echo(f"requests: {s['requests']}{resumed}; retries after transient errors: {s.get('retries', 0)}")
    for reason, n in s.get("retry_reasons", {}).items():
        click.echo(f"  retried x{n}: {reason}")
    if s["failed_requests"]:
        click.echo(
            f"FAILED: {s['failed_requests']} requests ({s['unasked']} samples not asked) failed after their retries; "
            "rerun the same command to ask them again"
        )
        for reason, n in s.get("failed_reasons", {}).items():
            click.echo(f"  failed x{n}: {reason}")


def _chance(flag: str, help_text: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """A template-engine probability option (0 to 1, default 0: off)."""
    return click.option(
        flag, type=click.FloatRange(0, 1), default=0.0, show_default=True, help=f"Template engine: {help_text}."
    )


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
@click.option(
    "--size",
    default=DEFAULT_TRAIN_SIZE,
    show_default=True,
    type=click.IntRange(min=1),
    help="Training samples (template engine).",
)
@click.option(
    "--heldout-size", default=DEFAULT_TEST_SIZE, show_default=True, type=click.IntRange(min=1), help="Held-out samples."
)
@click.option(
    "--overwrite",
    is_flag=True,
    help="Template engine: replace -o / --heldout files that already exist (default: refuse). A teacher run "
    "resumes its own unfinished output instead, or starts over with --fresh.",
)
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
@_chance("--context-p", "chance of the user's background (contexts.txt) before a request")
@_chance("--context-after-p", "of those backgrounds, the share written after the request instead")
@_chance("--informal-p", "chance a request is typed in texting style (informal.tsv shorthand, typos)")
@_chance("--narrow-p", "chance a request's system prompt offers fewer tasks and the answer says what it can't make")
@click.option(
    "--narrow-to",
    multiple=True,
    type=click.Choice(["none", "all-but-one", "one"]),
    help="Template engine: the narrower task lists --narrow-p draws (repeatable) [default: all three].",
)
@click.option(
    "--teacher-model", help="Teacher: PROVIDER:MODEL for langchain's init_chat_model (e.g. openai:gpt-4o-mini)."
)
@click.option(
    "--teacher-gguf",
    type=click.Path(dir_okay=False),
    help="Teacher: a local GGUF chat model, run by llama.cpp through langchain-community's ChatLlamaCpp.",
)
@click.option("--teacher-factory", help="Teacher: MODULE:ATTR, a chat model or a function returning one.")
@click.option(
    "--teacher-option",
    "teacher_options",
    multiple=True,
    help="Teacher: KEY=VALUE for the --teacher-model or --teacher-gguf model (e.g. temperature=0.7, "
    "n_gpu_layers=0, base_url=...); JSON values are parsed. Repeatable.",
)
@click.option(
    "--concurrency",
    type=click.IntRange(min=1),
    help="Teacher: requests at a time [default: 8 with --teacher-model, else 1; a GGUF teacher's calls take turns].",
)
@click.option(
    "--retries",
    default=5,
    show_default=True,
    type=click.IntRange(min=0),
    help="Teacher: retries of a request after a transient error (rate limit, timeout, 5xx), with backoff.",
)
@click.option(
    "--fresh",
    is_flag=True,
    help="Teacher: start over, removing the output and its .progress log (default: resume an unfinished run).",
)
@click.option(
    "--seeds",
    "seeds_file",
    type=click.Path(exists=True, dir_okay=False),
    help="Teacher: seed examples JSONL (default: the built-in ones).",
)
@click.option(
    "--references", multiple=True, help="Teacher: OUTPUT=FILE language references (image/audio/video/speech)."
)
@click.option(
    "--batch-size", default=8, show_default=True, type=click.IntRange(min=1), help="Teacher: candidates per request."
)
@click.option(
    "--per-candidate",
    default=2,
    show_default=True,
    type=click.IntRange(min=1),
    help="Teacher: samples asked per candidate.",
)
@click.option("--limit", type=click.IntRange(min=1), help="Teacher: use at most this many candidates per split.")
@click.option("--json", "as_json", is_flag=True, help="Print the run's counts as JSON.")
def generate(
    engine: str,
    output: str,
    heldout: str | None,
    heldout_family: str | None,
    size: int,
    heldout_size: int,
    overwrite: bool,
    seed: int,
    corpora_files: tuple[str, ...],
    corpora_dir: str | None,
    mix: tuple[str, ...],
    context_p: float,
    context_after_p: float,
    informal_p: float,
    narrow_p: float,
    narrow_to: tuple[str, ...],
    teacher_model: str | None,
    teacher_gguf: str | None,
    teacher_factory: str | None,
    teacher_options: tuple[str, ...],
    concurrency: int | None,
    retries: int,
    fresh: bool,
    seeds_file: str | None,
    references: tuple[str, ...],
    batch_size: int,
    per_candidate: int,
    limit: int | None,
    as_json: bool,
) -> None:
    """Generate instruction samples; every sample is validated and deduplicated, and counts are reported.

    The default model's data: `modaverse data generate -o data/train.jsonl --heldout data/test.jsonl`.
    A teacher run appends each finished request to the output and resumes when rerun (docs/teacher-data.md).
    """
    from .corpora import load_captioned, load_corpora
    from .dataset import DatasetError, write_samples

    outputs = [Path(output), *([Path(heldout)] if heldout else [])]
    if heldout and _same_file(outputs[0], outputs[1]):
        _fail(f"-o and --heldout are the same file ({output}); the held-out split would replace the training data")
    try:
        corpora = load_corpora(corpora_dir) if corpora_dir else None
        captioned: list[CaptionedItem] = [item for f in corpora_files for item in load_captioned(f)]
        if engine == "template":
            test_size = heldout_size if heldout else 0
            augment = {
                "context_p": context_p,
                "context_after_p": context_after_p,
                "informal_p": informal_p,
                "narrow_p": narrow_p,
                **({"narrow_to": narrow_to} if narrow_to else {}),
            }
            template = _template_engine(corpora, captioned, mix, seed, heldout_family, augment)
            if not overwrite:  # checked once the options are, before the samples are made
                _refuse_existing(outputs)
            results = list(template.generate_splits(size, test_size))
            for result, path in zip(results, outputs, strict=False):
                write_samples(result.samples, path)
        else:
            from .teacher_models import load_teacher
            from .teacher_retry import RetryPolicy

            chat, name = load_teacher(
                factory=teacher_factory, model=teacher_model, gguf=teacher_gguf, options=teacher_options
            )
            run = TeacherRun(
                concurrency or (8 if teacher_model else 1), RetryPolicy(retries=retries), outputs, fresh, name
            )
            try:
                results = _run_teacher(
                    chat, corpora, captioned, seeds_file, references, seed, batch_size, per_candidate, limit, run
                )
            except KeyboardInterrupt:
                _fail("stopped; the finished requests are saved: rerun the same command to continue", 130)
    except DatasetError as e:
        _fail(str(e))
    reports = [_report(n, p, r, as_json) for n, p, r in zip(("train", "held-out"), outputs, results, strict=False)]
    if as_json:
        click.echo(json.dumps({"engine": engine, "seed": seed, "splits": reports}, indent=2))
    if any(r.failed_requests for r in results):
        sys.exit(3)


@dataclass
class TeacherRun:
    """How a teacher run goes: requests at a time, retries, where each split is written, start over or resume,
    and the model name samples record (None: read off the model)."""

    concurrency: int
    retry: RetryPolicy
    outputs: list[Path]
    fresh: bool = False
    model_name: str | None = None


def _same_file(a: Path, b: Path) -> bool:
    """Whether two output paths name the same file (after ``..``, symlinks and, where it exists, hard links)."""
    if a.exists() and b.exists():
        return a.samefile(b)
    return a.expanduser().resolve() == b.expanduser().resolve()


def _refuse_existing(outputs: Sequence[Path]) -> None:
    """Exit with an error naming the first output that already exists (``--overwrite`` replaces them)."""
    for path in outputs:
        if path.exists():
            _fail(f"{path} already exists; pass --overwrite to replace it, or choose another file")


def _template_engine(
    corpora: Any,
    captioned: list[CaptionedItem],
    mix: tuple[str, ...],
    seed: int,
    heldout_family: str | None = None,
    augment: dict[str, Any] | None = None,
) -> TemplateEngine:
    """The template engine for these options (bad options fail here); ``augment`` sets the recipe's ``*_p``
    chances."""
    from .templates import Recipe, TemplateEngine

    recipe = Recipe(mix=_parse_mix(mix), **(augment or {}))
    return TemplateEngine(corpora, captioned, recipe=recipe, seed=seed, heldout_family=heldout_family)


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
    run: TeacherRun,
) -> list[GenerationResult]:
    from rich.console import Console

    from .corpora import builtin_references, load_references, split_of
    from .teacher import TeacherEngine, builtin_candidates, builtin_seeds, check_file_resource

    seeds = check_file_resource(Path(seeds_file)) if seeds_file else builtin_seeds()
    refs = builtin_references(corpora)
    for item in references:
        output, sep, path = item.partition("=")
        if not sep:
            _fail(f"--references takes OUTPUT=FILE (e.g. image=captions.txt), got {item!r}")
        refs[output] = load_references(path)
    progress = Console(stderr=True).is_terminal
    results: list[GenerationResult] = []
    for split, path in zip(("train", "test"), run.outputs, strict=False):
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
            model_name=run.model_name,
        )
        result = engine.generate(
            items,
            exclude=results[0].samples if results else (),
            concurrency=run.concurrency,
            retry=run.retry,
            output=path,
            fresh=run.fresh,
            progress=progress,
            notify=lambda message: click.echo(message, err=True),
        )
        results.append(result)
    return results


@data.command("validate")
@click.argument("files", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False))
@click.option("--max-errors", default=20, show_default=True, help="Problems to print per file.")
@click.option(
    "--media/--no-media",
    "check_media",
    default=True,
    show_default=True,
    help="Also check that every media file exists (relative paths start from the dataset file's folder).",
)
def validate(files: tuple[str, ...], max_errors: int, check_media: bool) -> None:
    """Check every line of JSONL datasets; prints FILE:LINE: problem and exits 1 when any is invalid.

    A line is invalid when it is not JSON, breaks the schema or its kind's rules, repeats an id, or names a
    media file that does not exist (--no-media skips that check, for data whose media are elsewhere).
    """
    from .dataset import DatasetError, check_file

    bad = 0
    for f in files:
        try:
            report = check_file(f, media_dir=Path(f).parent if check_media else None)
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
        "short lines": c.say,
        "edits": c.edits,
        "questions": [q.question for q in c.questions],
        "requests": [q.question for q in c.requests],
        "scenes": [s.scene for s in c.scenes],
        "backgrounds": c.contexts,
    }
    click.echo(f"corpora: {c.name}")
    for name, items in lists.items():
        held = sum(split_of(x) == "test" for x in items)
        click.echo(f"  {name:<15} {len(items):>5}  ({held} held out)")
    click.echo(f"  {'image styles':<15} {len(c.image_styles):>5}\n  {'video styles':<15} {len(c.video_styles):>5}")
    click.echo(f"  {'shorthand':<15} {sum(map(len, c.informal.values())):>5}  (informal.tsv, all phrasings)")
    for split_name, pools in c.phrasings.items():
        click.echo(f"phrasings [{split_name}]: {sum(len(v) for v in pools.values())} templates in {len(pools)} pools")
