"""Seeded fuzz suite: over 1,000 malformed meta-responses (JSON and legacy) per run, through the parsers
and through the public agent (issue 17).

Each case is a hostile model output built from valid sibling invocations (unique prompts), hostile
invocations (wrong types at every path, deep nesting, huge numbers, NaN, lone surrogates, huge strings,
too many values) and hostile wrappers (prose, fences, end markers), plus whole-document damage
(truncation, edits, garbage, megabyte adversaries). A case knows what must survive: every valid
sibling comes back (its file, through the agent), every hostile part gets an error naming its path or
index, no exception escapes, nothing is written outside the output dir, the response is strict UTF-8
JSON. The summary line reports tried / crashes / hangs / lost siblings / escapes and the time.
"""

from __future__ import annotations

import contextlib
import json
import random
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from itertools import chain
from pathlib import Path

import pytest

from modaverse_agent import Artifact, GenerationRequest, Generator
from modaverse_agent.agent import ModaVerseAgent
from modaverse_agent.errors import MetaResponseError
from modaverse_agent.meta_response import (
    MAX_INVOCATIONS,
    MAX_LEGACY_ENTRIES,
    MetaResponse,
    extract_json,
    parse_legacy,
    parse_legacy_lenient,
    parse_lenient,
)
from modaverse_agent.testing import FixedPlanLLM
from modaverse_agent.zoo import Zoo

SEED = 17
N_JSON = 1_000
N_LEGACY = 300
#: A case slower than this counts as a hang (the parsers are linear-time; the agent writes small files).
HANG_S = 5.0
#: No error may quote more than this much of the model's output.
ERROR_MAX_CHARS = 500


@dataclass
class Case:
    """One hostile output and what must come of it."""

    raw: str
    kind: str
    legacy: bool = False
    #: (position, task, prompt) of every invocation that must survive.
    valid: list[tuple[int, str, str]] = field(default_factory=list)
    #: Substrings some error must hold (a path such as ``invocations[2]`` or ``Modality[1]``, or a reason).
    expect: list[str] = field(default_factory=list)
    #: The document itself is damaged: nothing is expected to survive, only that nothing breaks.
    damaged: bool = False


# -- JSON cases ----------------------------------------------------------------------------------------


def _deep(r: random.Random) -> str:
    depth = r.choice([33, 64, 200, 999, 1_001, 3_000, 20_000])
    if r.random() < 0.5:
        return "[" * depth + "]" * depth
    return '{"a": ' * depth + "1" + "}" * depth


def _big_int(r: random.Random) -> str:
    return r.choice(["", "-"]) + "9" * r.choice([101, 4_301, 5_000, 50_000])


def _bad_number(r: random.Random) -> str:
    return r.choice(["NaN", "Infinity", "-Infinity", "1e999", "-1e400", _big_int(r), "1." + "0" * 300])


def _task(task: str) -> str:
    return '{"prompt": "p", "task": ' + task + "}"


def _t2i(rest: str) -> str:
    return '{"task": "text-to-image", "prompt": "p"' + rest + "}"


#: Each returns the JSON text of one invocation that must be refused.
HOSTILE_INVOCATIONS: list[Callable[[random.Random], str]] = [
    lambda r: _task(r.choice(['["text-to-image"]', '{"task": "a"}', "3", "null", "true", "1.5", "[]", "{}"])),
    lambda r: _task(json.dumps(r.choice(["text-to-smell", "TEXT-TO-IMAGE", "", "x" * r.randint(100, 200_000)]))),
    lambda r: _task(r.choice(['"\\ud800"', '"text-to-image\\udfff"', _bad_number(r), _deep(r)])),
    lambda r: '{"prompt": "p", "args": {}}',
    lambda r: '{"task": "text-to-image"}',
    lambda r: (
        '{"task": "text-to-image", "prompt": '
        + r.choice(
            ['""', "3", "[]", "null", '"\\udc00x"', json.dumps("y" * r.randint(501, 300_000)), _bad_number(r), _deep(r)]
        )
        + "}"
    ),
    lambda r: _t2i(
        ', "args": {"width": '
        + r.choice([_bad_number(r), '"wide"', "0", "100000", "8.5", "true", "null", '"\\ud800"', _deep(r)])
        + "}"
    ),
    lambda r: _t2i(
        ', "args": {'
        + r.choice(['"\\ud800"', '"a\\udbff"', '"cfg"', json.dumps("k" * r.randint(50, 100_000))])
        + ": 8}"
    ),
    lambda r: _t2i(', "args": {"width": [' + ",".join(["0"] * r.randint(10_001, 40_000)) + "]}"),
    lambda r: _t2i(', "args": ' + r.choice(["[]", '"x"', "3", "null", "NaN", _deep(r)])),
    lambda r: _t2i(
        ', "inputs": '
        + r.choice(['["../etc/passwd"]', '["/etc/passwd"]', '["image_1"]', '"image_1"', "[NaN]", "[3]", _deep(r)])
    ),
    lambda r: _t2i(", " + r.choice(['"evil"', '"\\ud800"', json.dumps("e" * 200_000)]) + ": 1"),
    lambda r: '{"task": "image-editing", "prompt": "p", "inputs": ["image_1"]}',
    lambda r: (
        '{"task": "text-to-audio", "prompt": "p", "args": {"duration": '
        + r.choice(["NaN", "Infinity", "-1", "0", "31", "1e999", '"long"'])
        + "}}"
    ),
    lambda r: r.choice(["3", '"text-to-image"', "null", "true", "[]", '"\\ud800"', _bad_number(r), _deep(r)]),
]

#: Hostile values of the top-level ``text`` (each an error at ``text``; the invocations are kept).
HOSTILE_TEXTS: list[Callable[[random.Random], str]] = [
    lambda r: r.choice(["NaN", "Infinity", "3", "[]", "null", '{"a": 1}', '"\\ud800"', '"ok \\udc00"']),
    lambda r: json.dumps("t" * r.randint(2_001, 100_000)),
    _deep,
    _big_int,
]


def _valid(r: random.Random, name: str) -> tuple[str, dict]:
    kind = r.random()
    if kind < 0.6:
        return "text-to-image", {"task": "text-to-image", "prompt": name, "args": {"width": 8, "height": 8}}
    if kind < 0.85:
        return "text-to-speech", {"task": "text-to-speech", "prompt": name}
    return "text-to-audio", {"task": "text-to-audio", "prompt": name, "args": {"duration": 0.02}}


def _wrap(r: random.Random, doc: str) -> str:
    before = r.choice(["", "", "  \n", "Sure! ", "{not json} then ", "Plan:\n```json\n", "```JSON"])
    after = r.choice(["", "", "\n", "###", "</s>", "<end_of_turn>", " Hope it helps {", "\n```", " }}]]"])
    if before.endswith(("```json\n", "```JSON")):
        after = "\n```" + after
    return before + doc + after


def json_case(r: random.Random, n: int) -> Case:
    """Valid siblings and hostile invocations in random order, maybe a hostile text, extra fields, overflow."""
    count = r.choice([1, 2, 3, 4, 4, 4, 5, 8, 40]) if r.random() < 0.15 else r.randint(2, MAX_INVOCATIONS)
    parts, valid, expect = [], [], []
    hostile = 0
    for i in range(count):
        if r.random() < 0.5 or (i == count - 1 and hostile == 0):
            hostile += 1  # past the cap, small ones: the output must stay under MAX_RAW_CHARS
            parts.append(r.choice(HOSTILE_INVOCATIONS)(r) if i < MAX_INVOCATIONS else r.choice(["3", "{}"]))
            if i < MAX_INVOCATIONS:
                expect.append(f"invocations[{i}]")
        else:
            task, obj = _valid(r, f"sib-{n}-{i}")
            parts.append(json.dumps(obj))
            if i < MAX_INVOCATIONS:
                valid.append((i, task, obj["prompt"]))
    if count > MAX_INVOCATIONS:
        expect.append(f"has {count} items, over the limit of {MAX_INVOCATIONS}")
    text = '"Done."'
    if r.random() < 0.2:
        text = r.choice(HOSTILE_TEXTS)(r)
        expect.append("text")
    fields = [f'"text": {text}', '"invocations": [' + ", ".join(parts) + "]"]
    if r.random() < 0.1:
        fields.append(r.choice(['"extra": 1', '"extra": NaN', '"\\ud800": 1']))
        expect.append("unexpected field")
    r.shuffle(fields)
    return Case(_wrap(r, "{" + ", ".join(fields) + "}"), "json", valid=valid, expect=expect)


# -- legacy cases --------------------------------------------------------------------------------------

#: Each returns one ``Modality:`` entry that must be refused.
HOSTILE_ENTRIES: list[Callable[[random.Random], str]] = [
    lambda r: f"Modality: [{r.choice(['SMELL', 'IM4GE', '', 'TEXT2', 'image video'])}] Prompt: roses",
    lambda r: "Modality: [" + "A" * r.choice([100, 10_000, 100_000]) + "] Prompt: x",
    lambda r: f"Modality: [{r.choice(['IMAGE', 'AUDIO'])}] Prompt:{r.choice(['', ' ', '   ', chr(10)])}",
    lambda r: "Modality: [IMAGE] " + r.choice(["no prompt", "Prompt x", "prompt: x", ""]),
    lambda r: "Modality: [IMAGE Prompt: x",
]


def legacy_case(r: random.Random, n: int) -> Case:
    """``Modality:`` entries, valid and hostile, maybe more than the caps; junk after ``###``."""
    count = r.choice([2, 3, 4, 6, 10, MAX_LEGACY_ENTRIES + 4]) if r.random() < 0.25 else r.randint(2, 4)
    entries, valid, expect = [], [], []
    media = 0
    for k in range(count):
        roll = r.random()
        read = k < MAX_LEGACY_ENTRIES
        if roll < 0.4 or (k == count - 1 and not expect):
            entry = r.choice(HOSTILE_ENTRIES)(r)
            if read:
                expect.append(f"Modality[{k}]")
        elif roll < 0.55:
            entry = "Modality: [TEXT] Prompt: some words"
        else:
            tag = r.choice(["IMAGE", "AUDIO", "image", "Audio", "IMAGE"])
            entry = f"Modality: [{tag}] Prompt: sib-{n}-{k}"
            if read:
                media += 1
                if media <= MAX_INVOCATIONS:
                    task = "text-to-image" if tag.upper() == "IMAGE" else "text-to-audio"
                    valid.append((k, task, f"sib-{n}-{k}"))
        entries.append(entry)
    if count > MAX_LEGACY_ENTRIES:
        expect.append(f"over the limit of {MAX_LEGACY_ENTRIES}")
    if media > MAX_INVOCATIONS:
        expect.append(f"over the limit of {MAX_INVOCATIONS}")
    raw = r.choice(["", " ", "\n"]) + r.choice([" ", "\n", "</s>\n", " </s> "]).join(entries)
    raw += r.choice(["", " ###", "###\nHuman: Modality: [IMAGE] Prompt: next turn", "</s>"])
    return Case(raw, "legacy", legacy=True, valid=valid, expect=expect)


# -- damaged documents ---------------------------------------------------------------------------------

ADVERSARIES: list[Callable[[random.Random], str]] = [
    lambda r: "{" * r.choice([10_000, 1_000_000]),
    lambda r: "```json" + " " * r.choice([100_000, 1_000_000]) + r.choice(["```", ""]),
    lambda r: '{"a":' * r.choice([1_000, 300_000]),
    lambda r: "[" * 1_000_000,
    lambda r: '{"' * r.choice([1_000, 900_000]),
    lambda r: "x" * 2_000_001,
    lambda r: "Modality: [" * 150_000,
    lambda r: "Modality: [IMAGE] Prompt:" + " " * 1_000_000 + "x",
    lambda r: "Modality: [IMAGE] Prompt: x\n" * 70_000,
    lambda r: "".join(chr(r.randrange(0x110000)) for _ in range(r.randint(1, 3_000))),
    lambda r: bytes(r.randrange(256) for _ in range(r.randint(1, 3_000))).decode("latin-1"),
]


def damage(r: random.Random, raw: str) -> str:
    """``raw`` truncated, edited, spliced or soiled."""
    op = r.randrange(7)
    at = r.randrange(len(raw) + 1)
    if op == 0:
        return raw[:at]
    if op == 1:
        return raw[:at] + raw[at + 1 :]
    if op == 2:
        return raw[:at] + r.choice('{}[]",:\\ \n\ud800\x00\ufffftn0-e.#`') + raw[at:]
    if op == 3:
        return raw[:at] + raw[r.randrange(len(raw) + 1) :]
    if op == 4:
        return raw + raw
    if op == 5:
        return r.choice(["```json\n", "{" * 50, "Modality: [IMAGE] Prompt: x ", '{"text": ']) + raw
    return raw.replace('"', r.choice(["'", '\\"', ""]), r.randint(1, 5))


def cases(group: str) -> Iterator[Case]:
    """The run's cases of ``group`` ("json": JSON and megabyte adversaries, or "legacy"), seeded."""
    if group == "json":
        r = random.Random(SEED)
        for n in range(N_JSON):
            case = json_case(r, n)
            yield Case(damage(r, case.raw), "json-damaged", damaged=True) if r.random() < 0.12 else case
        for adversary in ADVERSARIES:
            yield Case(adversary(r), "adversary", damaged=True)
    else:
        r = random.Random(SEED + 1)
        for n in range(N_LEGACY):
            case = legacy_case(r, n)
            yield Case(damage(r, case.raw), "legacy-damaged", legacy=True, damaged=True) if r.random() < 0.12 else case


# -- the checks ----------------------------------------------------------------------------------------


@dataclass
class Tally:
    """Counts of the run; each problem keeps a short description of its case."""

    tried: int = 0
    crashes: list[str] = field(default_factory=list)
    hangs: list[str] = field(default_factory=list)
    lost: list[str] = field(default_factory=list)
    escapes: list[str] = field(default_factory=list)
    wrong: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def line(self, what: str) -> str:
        return (
            f"fuzz {what}: tried={self.tried} crashes={len(self.crashes)} hangs={len(self.hangs)} "
            f"lost={len(self.lost)} escapes={len(self.escapes)} wrong={len(self.wrong)} time={self.seconds:.1f}s"
        )

    def problems(self) -> list[str]:
        return (self.crashes + self.hangs + self.lost + self.escapes + self.wrong)[:10]


def _label(n: int, case: Case) -> str:
    return f"#{n} {case.kind} {case.raw[:80]!r}"


def _check_errors(n: int, case: Case, messages: list[str], tally: Tally) -> None:
    for words in case.expect:
        if not any(words in m for m in messages):
            tally.wrong.append(f"{_label(n, case)}: no error holds {words!r}: {[m[:120] for m in messages]}")
    if any(len(m) > ERROR_MAX_CHARS for m in messages):
        tally.wrong.append(f"{_label(n, case)}: an error quotes {max(map(len, messages))} chars")


def _parse(case: Case, schema: dict) -> tuple[MetaResponse, list[MetaResponseError]]:
    """Parse as the agent does: the legacy reader for output that starts with ``Modality:``."""
    if case.raw.lstrip().startswith("Modality:"):
        return parse_legacy_lenient(case.raw, schema)
    return parse_lenient(case.raw, schema)


def _strict(case: Case) -> None:
    """The strict parsers may only raise MetaResponseError (parse_meta_response is parse_lenient's first error)."""
    for strict in (extract_json, parse_legacy):
        with contextlib.suppress(MetaResponseError):
            strict(case.raw)


def test_fuzz_parsers(echo_zoo: Zoo, capsys: pytest.CaptureFixture[str]) -> None:
    schema = echo_zoo.schema(media_ids=[])
    tally = Tally()
    started = time.perf_counter()
    for n, case in enumerate(chain(cases("json"), cases("legacy"))):
        tally.tried += 1
        t0 = time.perf_counter()
        try:
            response, errors = _parse(case, schema)
            _strict(case)
        except Exception as e:
            tally.crashes.append(f"{_label(n, case)}: {type(e).__name__}: {str(e)[:200]}")
            continue
        if time.perf_counter() - t0 > HANG_S:
            tally.hangs.append(f"{_label(n, case)}: {time.perf_counter() - t0:.1f} s")
        kept = [(i.position, i.task, i.prompt) for i in response.invocations]
        if not case.damaged:
            if missing := [v for v in case.valid if v not in kept]:
                tally.lost.append(f"{_label(n, case)}: lost {missing}; errors {[str(e)[:100] for e in errors]}")
            if extra := [k for k in kept if k not in case.valid]:
                tally.wrong.append(f"{_label(n, case)}: accepted hostile {str(extra)[:200]}")
        _check_errors(n, case, [str(e) for e in errors], tally)
        try:
            json.dumps(response.to_dict(), ensure_ascii=False, allow_nan=False).encode("utf-8")
        except (ValueError, UnicodeEncodeError) as e:
            tally.wrong.append(f"{_label(n, case)}: to_dict() is not strict UTF-8 JSON: {e}"[:300])
    tally.seconds = time.perf_counter() - started
    with capsys.disabled():
        print("\n" + tally.line("parsers"))
    assert tally.tried >= 1_000
    assert not tally.problems(), "\n".join(tally.problems())


def _files(root: Path) -> set[Path]:
    return {p for p in root.rglob("*") if p.is_file()}


@pytest.mark.parametrize(
    "group",
    [
        "json",
        "legacy",
    ],
)
def test_fuzz_agent(
    group: str, echo_zoo: Zoo, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Every case through ModaVerseAgent.run: answers, keeps every valid sibling's file, writes only inside."""
    cwd, outputs = tmp_path / "cwd", tmp_path / "outputs"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    tally = Tally()
    started = time.perf_counter()
    for n, case in enumerate(cases(group)):
        tally.tried += 1
        out = outputs / f"case{n}"
        agent = ModaVerseAgent(FixedPlanLLM(case.raw), echo_zoo, output_dir=out, timeout=30, seed=0)
        t0 = time.perf_counter()
        try:
            response = agent.run("go")
        except Exception as e:
            tally.escapes.append(f"{_label(n, case)}: {type(e).__name__}: {str(e)[:200]}")
            continue
        if time.perf_counter() - t0 > HANG_S:
            tally.hangs.append(f"{_label(n, case)}: {time.perf_counter() - t0:.1f} s")
        made = [(a.task, a.prompt) for a in response.artifacts]
        if not case.damaged:
            if missing := [v for v in case.valid if v[1:] not in made]:
                messages = [str(e)[:100] for e in response.errors]
                tally.lost.append(f"{_label(n, case)}: lost {missing}; errors {messages}")
            if extra := [m for m in made if m not in [v[1:] for v in case.valid]]:
                tally.wrong.append(f"{_label(n, case)}: ran hostile {str(extra)[:200]}")
        for a in response.artifacts:
            if not (a.path.is_file() and a.path.resolve().is_relative_to(out.resolve())):
                tally.wrong.append(f"{_label(n, case)}: artifact {a.path} is not a file inside {out}")
        _check_errors(n, case, [str(e) for e in response.errors], tally)
        try:
            json.dumps(response.to_dict(), ensure_ascii=False, allow_nan=False).encode("utf-8")
        except (ValueError, UnicodeEncodeError) as e:
            tally.wrong.append(f"{_label(n, case)}: to_dict() is not strict UTF-8 JSON: {e}"[:300])
    tally.seconds = time.perf_counter() - started
    outside = _files(tmp_path) - _files(outputs)
    with capsys.disabled():
        print("\n" + tally.line(f"agent {group}"))
    assert tally.tried >= (1_000 if group == "json" else N_LEGACY)
    assert not outside, sorted(outside)[:10]
    assert not tally.problems(), "\n".join(tally.problems())


class _Boom(Generator):
    name = "boom"
    task = "text-to-speech"
    modality = "audio"
    description = "Always fails."
    priority = 10

    def run(self, request: GenerationRequest) -> list[Artifact]:
        raise RuntimeError("boom")


def test_a_dispatch_error_names_the_models_index(echo_zoo: Zoo, tmp_path: Path) -> None:
    echo_zoo.add(_Boom())
    plan = {
        "text": "",
        "invocations": [{"task": "text-to-smell", "prompt": "x"}, {"task": "text-to-speech", "prompt": "y"}],
    }
    response = ModaVerseAgent(FixedPlanLLM(json.dumps(plan)), echo_zoo, output_dir=tmp_path).run("go")
    assert [(e.stage, e.index) for e in response.errors] == [("meta-response", None), ("invocation", 1)]
    assert "invocations[0].task" in response.errors[0].message
