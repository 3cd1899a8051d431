"""Two-turn natural evaluation: follow-ups written blind to the templates, run through a live Conversation.

``natural_eval/turns/turns.jsonl`` holds 60 conversations of two user turns, one JSON object a line:
``{"id", "category", "first", "second", "accept", "inputs", "note"}``. ``accept`` lists the task sets a careful
human accepts for the *second* answer (``[[]]``: text only); ``inputs`` what its invocations may take:
``last_image`` (each image-editing invocation edits exactly the last picture turn 1 made, nothing else takes
input), ``none`` (no input) or ``any``. A row is correct when both hold. Never train on this set. Run it:
``python -m training.natural_turns --model DIR|default`` (over the echo plugin's generators).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from modaverse_agent.agent import ModaVerseAgent
from modaverse_agent.conversation import Conversation
from modaverse_agent.llm_io import GenerationParams
from modaverse_agent.response import FinalResponse
from modaverse_agent.zoo import Zoo, ZooConfig

from .dataset import DatasetError
from .tasks import TASKS_BY_NAME

TURNS_FILE = Path(__file__).with_name("natural_eval") / "turns" / "turns.jsonl"
KEYS = {"id", "category", "first", "second", "accept", "inputs", "note"}
#: The categories and how many conversations of each the shipped file holds.
CATEGORIES = {"edit-what-was-made": 20, "convert-what-was-made": 10, "speak-the-answer": 8}
CATEGORIES |= {"unrelated-new-request": 10, "question-after-media": 12}
INPUT_RULES = ("last_image", "none", "any")
_BROKEN = ("llm", "meta-response", "stopped")  # error stages that mean the model's answer was not a valid plan


def _check(obj: Any, where: str) -> dict[str, Any]:
    if not isinstance(obj, dict) or set(obj) != KEYS:
        got = sorted(obj) if isinstance(obj, dict) else type(obj).__name__
        raise DatasetError(f"{where}: expected an object with keys {sorted(KEYS)}, got {got}")
    for k in ("id", "first", "second", "note"):
        if not isinstance(obj[k], str) or not (obj[k].strip() or k == "note"):
            raise DatasetError(f"{where}: `{k}` must be a non-empty string")
    if obj["category"] not in list(CATEGORIES):  # a list, so an unhashable value is refused, not raised
        raise DatasetError(f"{where}: unknown category {obj['category']!r}; known: {list(CATEGORIES)}")
    if obj["inputs"] not in INPUT_RULES:
        raise DatasetError(f"{where}: `inputs` must be one of {list(INPUT_RULES)}, got {obj['inputs']!r}")
    accept = obj["accept"]
    if not isinstance(accept, list) or not accept or not all(isinstance(a, list) for a in accept):
        raise DatasetError(f"{where}: `accept` must be a non-empty list of task lists ([[]] for text only)")
    unknown = sorted({str(t) for a in accept for t in a} - set(TASKS_BY_NAME))
    if unknown:
        raise DatasetError(f"{where}: unknown task(s) {unknown}; known: {sorted(TASKS_BY_NAME)}")
    return obj


def read_turns(path: str | Path | None = None) -> list[dict[str, Any]]:
    """The two-turn set (``path`` or the shipped file), every line checked; a bad line is a one-line error."""
    file = Path(path) if path is not None else TURNS_FILE
    try:
        text = file.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise DatasetError(f"{file}: cannot read it as UTF-8 text ({e}); the two-turn set is JSONL") from None
    rows: list[dict[str, Any]] = []
    for n, line in [(n, line) for n, line in enumerate(text.splitlines(), 1) if line.strip()]:
        where = f"{file}:{n}"
        try:
            row = _check(json.loads(line), where)
        except ValueError as e:
            raise DatasetError(f"{where}: not a JSON line ({e}); each line is one conversation object") from None
        if any(r["id"] == row["id"] for r in rows):
            raise DatasetError(f"{where}: duplicate id {row['id']!r}")
        rows.append(row)
    if not rows:
        raise DatasetError(f"{file}: no conversations in it")
    return rows


def _inputs_problem(rule: str, invocations: Sequence[tuple[str, list[str]]], last_image: str | None) -> str | None:
    """Why the second answer's inputs break ``rule`` (None: they keep it)."""
    for i, (task, inputs) in enumerate(invocations if rule != "any" else ()):
        if rule == "last_image" and task == "image-editing":
            if last_image is None:
                return "turn 1 made no image for the edit to take"
            if inputs != [last_image]:
                return f"invocation {i} ({task}) edits {inputs}, not the picture turn 1 made ({last_image})"
        elif inputs:
            return f"invocation {i} ({task}) takes inputs {inputs}; this turn wants none"
    return None


def _turn(response: FinalResponse) -> dict[str, Any]:
    """One answer: its tasks and their inputs, its text, whether it was a valid plan, its errors."""
    meta = response.meta_response
    calls = meta.invocations if meta else ()
    valid = meta is not None and not any(e.stage in _BROKEN for e in response.errors)
    out = {"tasks": [str(v.task) for v in calls], "inputs": [[str(r) for r in v.inputs] for v in calls]}
    return {**out, "text": response.text, "valid": valid, "errors": [str(e) for e in response.errors]}


def score_row(agent: ModaVerseAgent, row: dict[str, Any], output_dir: Path) -> dict[str, Any]:
    """Run one conversation (two turns) and judge the second answer."""
    result: dict[str, Any] = {"id": row["id"], "category": row["category"], "correct": False, "task_ok": False}
    conv = Conversation(agent, params=GenerationParams(temperature=0.0, seed=0))
    try:
        first = _turn(conv.send(row["first"], output_dir=output_dir / row["id"] / "1"))
        made = [r.id for r in conv.records if r.origin == "generated"]
        second = _turn(conv.send(row["second"], output_dir=output_dir / row["id"] / "2"))
    except Exception as e:  # one broken conversation must not take the report down
        return {**result, "first": None, "second": None, "made": [], "why": f"{type(e).__name__}: {e}"}
    last_image = next((m for m in reversed(made) if m.startswith("image_")), None)
    task_ok = sorted(second["tasks"]) in [sorted(a) for a in row["accept"]]
    problem = _inputs_problem(row["inputs"], list(zip(second["tasks"], second["inputs"], strict=True)), last_image)
    why = problem if task_ok else f"tasks {second['tasks']} not in {row['accept']}"
    ok = task_ok and problem is None
    return {**result, "correct": ok, "task_ok": task_ok, "first": first, "second": second, "made": made, "why": why}


def _summary(rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """n, accuracy (tasks and inputs right), task accuracy, and the share of valid answers in each turn."""
    share = lambda test: sum(1 for r in rows if test(r)) / len(rows) if rows else 0.0  # noqa: E731
    right = {"accuracy": share(lambda r: r["correct"]), "task_accuracy": share(lambda r: r["task_ok"])}
    valid = {f"validity_{t}": share(lambda r, t=t: bool(r[t] and r[t]["valid"])) for t in ("first", "second")}
    return {"n": len(rows), **right, **valid}


def score_turns(
    factory: Callable[[], ModaVerseAgent], rows: Sequence[dict[str, Any]], out: str | Path, *, progress: bool = True
) -> dict[str, Any]:
    """Run every row in a fresh Conversation over ``factory()`` (files under ``out``); the report: accuracy
    overall and per category, validity of each turn, and each row's tasks, inputs and text."""
    from tqdm.auto import tqdm

    t0, results = time.perf_counter(), []
    for row in tqdm(rows, desc="conversations", unit="conv", disable=not progress):
        results.append(score_row(factory(), row, Path(out)))
    per_category = {c: _summary(g) for c in CATEGORIES if (g := [r for r in results if r["category"] == c])}
    seconds = round(time.perf_counter() - t0, 1)
    return {**_summary(results), "per_category": per_category, "seconds": seconds, "results": results}


def echo_zoo() -> Zoo:
    """A zoo of the echo plugin's generators only (no diffusion weights, no user zoo config)."""
    try:
        import modaverse_echo
    except ImportError:
        raise DatasetError("the echo plugin is not installed; run: pip install -e plugins/modaverse-echo") from None
    found: list[Any] = []
    modaverse_echo.register_generators(register=found.append)
    return Zoo(found, config=ZooConfig())


def print_report(report: dict[str, Any]) -> None:
    """A short table: accuracy per category and overall, and turn validity."""
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"two-turn natural set ({report['n']} conversations, {report['seconds']} s)")
    columns = ("accuracy", "task_accuracy", "validity_first", "validity_second")
    for label in ("category", "n", "accuracy", "task acc.", "valid t1", "valid t2"):
        table.add_column(label, justify="left" if label == "category" else "right", no_wrap=True)
    for cat, m in [*report["per_category"].items(), ("all", report)]:
        table.add_row(cat, str(m["n"]), *(f"{m[c]:.1%}" for c in columns), style="bold" if cat == "all" else None)
    Console().print(table)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m training.natural_turns --model DIR|default [--engine E] [--limit N] [-o report.json]``."""
    from modaverse_agent.cli_model import ModelChoice, load_model

    p = argparse.ArgumentParser(prog="python -m training.natural_turns", description=__doc__.split("\n")[0])
    p.add_argument("--model", required=True, help="a ModaVerse model directory, or 'default' for the built-in one")
    p.add_argument("--engine", choices=["auto", "torch", "llama.cpp"], default="auto")
    p.add_argument("--data", default=None, help="a two-turn JSONL (default: the shipped set)")
    p.add_argument("--limit", type=int, default=None, help="score only the first N conversations (N >= 1)")
    p.add_argument("-o", "--output", default=None, help="write the full report (every row) as JSON here")
    args = p.parse_args(argv)
    if args.limit is not None and args.limit < 1:
        p.error(f"--limit must be 1 or more, got {args.limit}")
    try:
        rows, zoo = read_turns(args.data)[: args.limit], echo_zoo()
    except DatasetError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    llm = load_model(ModelChoice(directory=None if args.model == "default" else args.model, engine=args.engine))
    with tempfile.TemporaryDirectory(prefix="modaverse-turns-") as media:
        agent = ModaVerseAgent(llm, zoo, output_dir=media, timeout=120, seed=0)
        report = score_turns(lambda: agent, rows, media)
    print_report(report)
    if args.output:
        Path(args.output).write_text(json.dumps(report, ensure_ascii=False, indent=1), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
