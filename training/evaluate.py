"""Evaluation on a held-out JSONL: validity, task accuracy, prompt similarity, text-only answers.

Metrics (each over the samples named):

* ``validity``: the raw output parses and validates strictly against the sample's schema (all samples);
* ``task_accuracy``: the predicted multiset of tasks equals the reference's (all samples);
* ``tool_decision``: whether any tool is called agrees with the reference (all samples);
* ``text_only_accuracy``: no tool called when none is wanted (samples whose reference calls none);
* ``bleu4`` / ``chrf``: corpus BLEU-4 and chrF (sacrebleu) of predicted vs reference prompts, pairing
  invocations of the same task in order (only samples with the right task set, so routing errors are
  not counted twice);
* ``prompt_exact``: share of those paired prompts equal to the reference (case, spacing and end
  punctuation ignored);
* ``prompt_additions``: share of them that hold the whole reference and add words to it (a spoken line
  with a sentence nobody asked for, which BLEU and chrF barely notice);
* ``closed_early``: answers that ran to the token budget and were cut short (counted once, with a note,
  when the predictor returns Completions with finish reasons);
* ``placeholder_rate``: share of text-only answers (to samples that want text only) that say nothing: empty,
  a filler line ("Here's the image.") or the request echoed back.

Samples of the natural set (:mod:`.natural`) carry several accepted task sets: a prediction matches
when it equals any of them. They have no reference prompts, so the prompt metrics are absent; the
report says why in ``notes``. Each sample's result keeps what the model wrote (``raw``, ``text``).
"""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from modaverse_agent.errors import ModaVerseError
from modaverse_agent.llm_io import Completion
from modaverse_agent.meta_response import parse_meta_response

from .dataset import Sample, offered_specs
from .natural import accepted, is_placeholder_answer
from .tasks import standard_schema

#: How the error of a sample the model was not asked (its media would not load) begins.
NOT_ASKED = "not asked: "


@dataclass
class SampleResult:
    """What one prediction was judged."""

    id: str
    kind: str
    valid: bool
    tasks_match: bool
    reference_tasks: list[str]
    predicted_tasks: list[str]
    error: str | None = None
    pairs: list[tuple[str, str]] = field(default_factory=list)
    raw: str = ""
    text: str = ""
    placeholder: bool | None = None  # for a text-only answer to a text-only sample: does it say nothing?
    finish_reason: str | None = None  # "stop", or "length" when the answer ran to the token budget (if known)
    reference_prompts: bool = False  # whether the sample's reference invocations carry prompts to compare with


@dataclass
class EvalReport:
    """Aggregate metrics plus every sample's result."""

    n: int
    validity: float
    task_accuracy: float
    tool_decision: float
    text_only_accuracy: float | None
    bleu4: float | None
    chrf: float | None
    prompt_exact: float | None
    prompt_additions: float | None
    per_kind: dict[str, dict[str, float]]
    seconds: float
    results: list[SampleResult]
    placeholder_rate: float | None = None
    notes: list[str] = field(default_factory=list)
    closed_early: int | None = None  # answers that ran to the token budget and were closed (None: not known)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict."""
        return asdict(self)

    def table(self) -> str:
        """A plain-text table of the headline metrics."""
        rows = [
            ("samples", str(self.n)),
            ("validity", f"{self.validity:.1%}"),
            ("task accuracy", f"{self.task_accuracy:.1%}"),
            ("tool decision", f"{self.tool_decision:.1%}"),
        ]
        if self.text_only_accuracy is not None:
            rows.append(("text-only accuracy", f"{self.text_only_accuracy:.1%}"))
        if self.placeholder_rate is not None:
            rows.append(("placeholder answers", f"{self.placeholder_rate:.1%}"))
        if self.closed_early:
            rows.append(("closed at the token budget", f"{self.closed_early} of {self.n}"))
        if self.bleu4 is not None:
            rows += [("prompt BLEU-4", f"{self.bleu4:.1f}"), ("prompt chrF", f"{self.chrf:.1f}")]
        if self.prompt_exact is not None:
            rows += [("prompt exact", f"{self.prompt_exact:.1%}"), ("prompt additions", f"{self.prompt_additions:.1%}")]
        rows += [
            (f"  {k}: task accuracy", f"{v['task_accuracy']:.1%} of {int(v['n'])}")
            for k, v in sorted(self.per_kind.items())
        ]
        width = max(len(r[0]) for r in rows)
        return "\n".join([*(f"{name:<{width}}  {value}" for name, value in rows), *(f"note: {n}" for n in self.notes)])


def judge(sample: Sample, raw: str, schema: dict[str, Any] | None = None) -> SampleResult:
    """Compare one raw model output with the sample's reference meta-response (or its accepted task sets)."""
    reference = list(sample.tasks)
    schema = schema or standard_schema(list(sample.media_ids), offered_specs(sample))
    prompts = any(i.get("prompt") for i in sample.response.get("invocations", ()))
    try:
        predicted = parse_meta_response(raw, schema)
    except ModaVerseError as e:
        return SampleResult(
            sample.id, sample.kind, False, False, reference, [], error=str(e)[:300], raw=raw, reference_prompts=prompts
        )
    tasks = list(predicted.tasks)
    match = accepted(sample, tasks)
    pairs = []
    if match and Counter(tasks) == Counter(reference):
        refs = [(i["task"], i.get("prompt", "")) for i in sample.response.get("invocations", ()) if i.get("prompt")]
        remaining = list(predicted.invocations)
        for task, ref_prompt in refs:
            hit = next(p for p in remaining if p.task == task)
            remaining.remove(hit)
            pairs.append((hit.prompt, ref_prompt))
    placeholder = is_placeholder_answer(predicted.text, sample.instruction) if not reference and not tasks else None
    return SampleResult(
        sample.id,
        sample.kind,
        True,
        match,
        reference,
        tasks,
        pairs=pairs,
        raw=raw,
        text=predicted.text,
        placeholder=placeholder,
        reference_prompts=prompts,
    )


def _not_asked(sample: Sample, error: ModaVerseError) -> SampleResult:
    """The result of a sample the model was not asked (``error`` says why): invalid, tasks not matched."""
    prompts = any(i.get("prompt") for i in sample.response.get("invocations", ()))
    return SampleResult(
        sample.id,
        sample.kind,
        False,
        False,
        list(sample.tasks),
        [],
        error=f"{NOT_ASKED}{str(error)[:300]}",
        reference_prompts=prompts,
    )


def _words(prompt: str) -> str:
    """A prompt compared loosely: lower case, single spaces, no punctuation at either end."""
    return " ".join(prompt.lower().split()).strip(" .!?,;:\"'")


def _adds_to(hyp: str, ref: str) -> bool:
    """Whether ``hyp`` holds all of ``ref`` and more."""
    h, r = _words(hyp), _words(ref)
    return bool(r) and h != r and r in h


def summarize(results: Sequence[SampleResult], seconds: float = 0.0) -> EvalReport:
    """Aggregate per-sample results into the report."""
    import sacrebleu

    n = len(results)
    if n == 0:
        raise ValueError("no samples to evaluate")
    text_only = [r for r in results if not r.reference_tasks]
    pairs = [pair for r in results for pair in r.pairs]
    hyps = [h for h, _ in pairs]
    refs = [ref for _, ref in pairs]
    judged = [r.placeholder for r in results if r.placeholder is not None]
    known = [r for r in results if r.finish_reason is not None]
    closed = sum(r.finish_reason == "length" for r in known)
    notes = []
    if closed:
        notes.append(
            f"{closed} of {n} answers ran to the token budget and were cut short; an undertrained model often "
            "writes on until the budget, so train it longer first (raise --max-new-tokens only for a model whose "
            "answers are long on purpose)"
        )
    if not pairs and any(r.reference_prompts for r in results):
        notes.append(
            "prompt BLEU/chrF/exact/additions are absent: no answer had the right tasks for a sample with "
            "reference prompts (prompts are compared only when the tasks are right; see task accuracy)"
        )
    elif not pairs:
        notes.append(
            "prompt BLEU/chrF/exact/additions are absent: these samples have no reference prompts "
            "(the natural set carries task labels only)"
        )
    not_asked = [r for r in results if r.error and r.error.startswith(NOT_ASKED)]
    if not_asked:
        first = not_asked[0]
        notes.append(
            f"{len(not_asked)} of {n} samples were not asked and count as invalid (their media would not load); "
            f"first: {first.id}: {first.error.removeprefix(NOT_ASKED)}"
        )
    per_kind: dict[str, dict[str, float]] = {}
    for kind in sorted({r.kind for r in results}):
        group = [r for r in results if r.kind == kind]
        per_kind[kind] = {
            "n": len(group),
            "task_accuracy": sum(r.tasks_match for r in group) / len(group),
            "validity": sum(r.valid for r in group) / len(group),
        }
    return EvalReport(
        n=n,
        validity=sum(r.valid for r in results) / n,
        task_accuracy=sum(r.tasks_match for r in results) / n,
        tool_decision=sum(bool(r.predicted_tasks) == bool(r.reference_tasks) and r.valid for r in results) / n,
        text_only_accuracy=(
            sum(r.valid and not r.predicted_tasks for r in text_only) / len(text_only) if text_only else None
        ),
        bleu4=sacrebleu.corpus_bleu(hyps, [refs]).score if hyps else None,
        chrf=sacrebleu.corpus_chrf(hyps, [refs]).score if hyps else None,
        prompt_exact=sum(_words(h) == _words(r) for h, r in pairs) / len(pairs) if pairs else None,
        prompt_additions=sum(_adds_to(h, r) for h, r in pairs) / len(pairs) if pairs else None,
        per_kind=per_kind,
        seconds=round(seconds, 3),
        results=list(results),
        placeholder_rate=sum(judged) / len(judged) if judged else None,
        notes=notes,
        closed_early=closed if known else None,
    )


def evaluate(
    samples: Sequence[Sample],
    predict: Callable[[Sequence[Sample]], Sequence[str | Completion | ModaVerseError]],
    *,
    batch_size: int = 8,
    progress: bool = True,
) -> EvalReport:
    """Run ``predict`` over ``samples`` and judge every output.

    ``predict`` maps a batch of samples to raw outputs, or to :class:`~modaverse_agent.llm_io.Completion`
    objects, whose finish reasons are kept (answers closed at the token budget are counted), or to a
    ModaVerseError for a sample it could not ask (its media would not load): that sample's error, judged invalid.
    """
    from tqdm.auto import tqdm

    t0 = time.perf_counter()
    results: list[SampleResult] = []
    with tqdm(total=len(samples), desc="evaluating", unit="sample", disable=not progress) as bar:
        for i in range(0, len(samples), batch_size):
            batch = list(samples[i : i + batch_size])
            outputs = predict(batch)
            if len(outputs) != len(batch):
                raise ValueError(f"predict returned {len(outputs)} outputs for {len(batch)} samples")
            for s, out in zip(batch, outputs, strict=True):
                if isinstance(out, ModaVerseError):  # the sample could not be asked (e.g. its media would not load)
                    results.append(_not_asked(s, out))
                elif isinstance(out, str):
                    results.append(judge(s, out))
                else:
                    results.append(replace(judge(s, out.text), finish_reason=out.finish_reason))
            bar.update(len(batch))
    return summarize(results, time.perf_counter() - t0)


def write_report(report: EvalReport, path: str | Path) -> Path:
    """Write the report as JSON."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(json.dumps(report.to_dict(), indent=1, ensure_ascii=False), encoding="utf-8")
    return p
