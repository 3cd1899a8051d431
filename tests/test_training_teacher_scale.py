"""The teacher at scale: concurrent requests (bounded), retries with backoff, resumable output, a GGUF teacher.

A scripted chat model answers from the candidates in the prompt, so a reply does not depend on the order
requests run in; captions carry the script (``fail2``: two transient errors first, ``broken``: a reply
that is no JSON, ``denied``: an error that is not worth a retry, ``junk``: invalid samples).
"""

from __future__ import annotations

import json
import re
import sys
import threading
import time
import types
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from langchain_core.callbacks import CallbackManagerForLLMRun
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage
from langchain_core.outputs import ChatGeneration, ChatResult
from pydantic import PrivateAttr

from modaverse_agent.training.corpora import CaptionedItem, split_of
from modaverse_agent.training.data_commands import data
from modaverse_agent.training.dataset import DatasetError, read_samples
from modaverse_agent.training.teacher import TeacherEngine
from modaverse_agent.training.teacher_log import progress_path
from modaverse_agent.training.teacher_retry import RetryPolicy, is_transient

CANDIDATE = re.compile(r"^(c\d+) \[(\w+)(, media file)?\]: (.*)$", re.M)


class Denied(Exception):
    """Like a provider's 401: not worth a retry."""

    status_code = 401


class ScriptedTeacher(BaseChatModel):
    """Answers every candidate of a request with one good sample, following the script in its captions."""

    delay: float = 0.0
    stop_after: int | None = None  # raise KeyboardInterrupt on this many-th call (a killed run)
    _lock: Any = PrivateAttr(default_factory=threading.Lock)
    _in_flight: int = PrivateAttr(default=0)
    _stats: dict[str, Any] = PrivateAttr(default_factory=lambda: {"max_in_flight": 0, "calls": 0, "asked": []})
    _failures: Counter[str] = PrivateAttr(default_factory=Counter)

    @property
    def stats(self) -> dict[str, Any]:
        return self._stats

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        candidates = CANDIDATE.findall(str(messages[0].content))
        first = candidates[0][3]
        with self._lock:
            self._in_flight += 1
            self._stats["calls"] += 1
            self._stats["max_in_flight"] = max(self._stats["max_in_flight"], self._in_flight)
            calls = self._stats["calls"]
        try:
            time.sleep(self.delay)
            if self.stop_after is not None and calls >= self.stop_after:
                raise KeyboardInterrupt
            with self._lock:
                self._stats["asked"].append(first)
                if "fail2" in first and self._failures[first] < 2:
                    self._failures[first] += 1
                    raise ConnectionError(f"connection reset ({self._failures[first]})")
            if "denied" in first:
                raise Denied("invalid API key")
            if "broken" in first:
                return _reply('[{"candidate": "c1", "kind": ')
            replies = [_sample(cid, caption) for cid, _, _, caption in candidates]
            if "junk" in first:
                replies = [{**replies[0], "kind": "poetry"}, {**replies[0], "media": ["c1"]}]
            return _reply(json.dumps(replies))
        finally:
            with self._lock:
                self._in_flight -= 1

    @property
    def _llm_type(self) -> str:
        return "scripted-teacher"


def _reply(text: str) -> ChatResult:
    return ChatResult(generations=[ChatGeneration(message=AIMessage(content=text))])


def _sample(cid: str, caption: str) -> dict[str, Any]:
    return {
        "candidate": cid,
        "kind": "output-alignment",
        "instruction": f"Draw {caption}.",
        "media": [],
        "response": {"text": "Here.", "invocations": [{"task": "text-to-image", "prompt": caption}]},
    }


def _items(n: int, script: dict[int, str] | None = None) -> list[CaptionedItem]:
    script = script or {}
    return [CaptionedItem("image", f"thing {i} {script.get(i, '')}".strip(), None, "test") for i in range(n)]


def _engine(model: BaseChatModel, batch_size: int = 1) -> TeacherEngine:
    return TeacherEngine(model, batch_size=batch_size, per_candidate=1, n_examples=1, n_references=1)


class Sleeps:
    """A stand-in for time.sleep that records the waits."""

    def __init__(self) -> None:
        self.waits: list[float] = []

    def __call__(self, seconds: float) -> None:
        self.waits.append(seconds)


# -- concurrency ------------------------------------------------------------------------------------


@pytest.mark.parametrize("concurrency", [1, 4])
def test_requests_overlap_up_to_the_limit(concurrency: int) -> None:
    model = ScriptedTeacher(delay=0.2)
    start = time.perf_counter()
    result = _engine(model).generate(_items(8), concurrency=concurrency)
    elapsed = time.perf_counter() - start
    assert len(result.samples) == 8 and result.requests == 8
    assert model.stats["max_in_flight"] == concurrency
    serial = 8 * 0.2  # what the replies alone take one at a time
    assert elapsed >= serial if concurrency == 1 else elapsed < 0.8 * serial


def test_the_samples_come_out_in_request_order_whatever_the_concurrency() -> None:
    one = _engine(ScriptedTeacher()).generate(_items(20), concurrency=1)
    many = _engine(ScriptedTeacher(delay=0.01)).generate(_items(20), concurrency=6)
    assert [s.to_json() for s in many.samples] == [s.to_json() for s in one.samples]
    assert [s.source["request"] for s in many.samples] == list(range(20))


# -- retries ----------------------------------------------------------------------------------------


def test_transient_errors_are_retried_with_growing_waits_and_the_rest_are_counted() -> None:
    sleeps = Sleeps()
    model = ScriptedTeacher()
    items = _items(6, {1: "fail2", 2: "broken", 3: "denied", 4: "junk"})
    retry = RetryPolicy(retries=3, base_delay=1.0, sleep=sleeps)
    result = _engine(model).generate(items, concurrency=3, retry=retry)
    assert [s.instruction for s in result.samples] == ["Draw thing 0.", "Draw thing 1 fail2.", "Draw thing 5."]
    assert len(sleeps.waits) == 2 and 0.5 <= sleeps.waits[0] <= 1.0 and 1.0 <= sleeps.waits[1] <= 2.0
    assert model.stats["asked"].count("thing 1 fail2") == 3 and model.stats["asked"].count("thing 3 denied") == 1
    s = result.summary()
    assert s["retries"] == 2 and list(s["retry_reasons"]) == [
        "ConnectionError: connection reset (1)",
        "ConnectionError: connection reset (2)",
    ]
    assert s["failed_requests"] == 1 and s["failed_reasons"] == {"Denied: invalid API key": 1} and s["unasked"] == 1
    assert s["malformed_replies"] == 1 and s["malformed_reasons"] == {"no JSON array of sample objects in the reply": 1}
    assert s["invalid"] == 2 and any("kind" in r for r in s["invalid_reasons"])


def test_retries_are_bounded() -> None:
    sleeps = Sleeps()
    result = _engine(ScriptedTeacher()).generate(
        _items(2, {0: "fail2"}), retry=RetryPolicy(retries=1, base_delay=0.5, sleep=sleeps)
    )
    assert len(sleeps.waits) == 1 and result.failed_requests == 1
    assert result.failures == Counter({"ConnectionError: connection reset (2)": 1})


def test_backoff_doubles_and_is_capped() -> None:
    policy = RetryPolicy(base_delay=1.0, max_delay=5.0)
    for attempt, ceiling in enumerate([1, 2, 4, 5, 5]):
        assert ceiling / 2 <= policy.delay(attempt, key=7) <= ceiling
    assert policy.delay(2, key=7) == policy.delay(2, key=7)  # reproducible


def test_which_errors_are_transient() -> None:
    class RateLimitError(Exception):
        pass

    class Status(Exception):
        def __init__(self, code: int) -> None:
            self.status_code = code

    assert is_transient(TimeoutError()) and is_transient(ConnectionResetError()) and is_transient(RateLimitError())
    assert is_transient(Status(429)) and is_transient(Status(503)) and not is_transient(Status(400))
    assert not is_transient(Denied()) and not is_transient(ValueError("prompt too long"))


def test_a_run_of_failures_stops_the_run_with_the_reason() -> None:
    with pytest.raises(DatasetError, match=r"every request to the teacher failed.*Denied: invalid API key"):
        _engine(ScriptedTeacher()).generate(_items(3, {0: "denied", 1: "denied", 2: "denied"}))
    items = _items(30, {i: "denied" for i in range(2, 30)})
    with pytest.raises(DatasetError, match=r"stopped: the last 8 requests failed \(mostly Denied: invalid API key\)"):
        _engine(ScriptedTeacher()).generate(items, concurrency=2)


# -- resume -----------------------------------------------------------------------------------------


def test_a_killed_run_resumes_to_the_file_an_uninterrupted_run_writes(tmp_path: Path) -> None:
    items = _items(24, {5: "broken", 9: "junk"})
    whole = tmp_path / "whole.jsonl"
    expected = _engine(ScriptedTeacher(), batch_size=2).generate(items, concurrency=4, output=whole)
    out = tmp_path / "killed.jsonl"
    killed = ScriptedTeacher(stop_after=7, delay=0.01)
    with pytest.raises(KeyboardInterrupt):
        _engine(killed, batch_size=2).generate(items, concurrency=2, output=out)
    log = progress_path(out).read_text().splitlines()
    finished = len(log) - 1
    assert 0 < finished < 12
    # the kill also caught the last request while its samples were written: one whole line, then half a line
    line = json.loads(whole.read_text().splitlines()[-1])
    assert line["source"]["request"] == 11
    with out.open("a") as f:
        f.write(json.dumps(line) + "\n" + json.dumps(line)[:40])
    messages: list[str] = []
    rerun = ScriptedTeacher()
    result = _engine(rerun, batch_size=2).generate(items, concurrency=4, output=out, notify=messages.append)
    assert out.read_bytes() == whole.read_bytes()
    assert rerun.stats["calls"] == 12 - finished  # finished requests were not asked again
    assert any("torn last line" in m for m in messages) and any("discarded 1 samples" in m for m in messages)
    assert any(f"resuming, {finished} of 12 requests" in m for m in messages)
    assert result.summary() | {"resumed_requests": 0, "resumed_samples": 0} == expected.summary()
    assert result.resumed_requests == finished


def test_failed_requests_are_asked_again_by_a_rerun(tmp_path: Path) -> None:
    out = tmp_path / "t.jsonl"
    items = _items(6, {2: "denied"})
    first = _engine(ScriptedTeacher()).generate(items, output=out)
    assert first.failed_requests == 1 and len(read_samples(out)) == 5

    class Healed(ScriptedTeacher):
        def _generate(self, messages: list[BaseMessage], *args: Any, **kwargs: Any) -> ChatResult:
            text = str(messages[0].content).replace("thing 2 denied", "thing 2 (healed)")
            return super()._generate([type(messages[0])(content=text), *messages[1:]], *args, **kwargs)

    rerun = Healed()
    second = _engine(rerun).generate(items, output=out)
    assert rerun.stats["asked"] == ["thing 2 (healed)"] and second.failed_requests == 0
    assert len(second.samples) == 6 and sorted(s.source["request"] for s in read_samples(out)) == list(range(6))


def test_a_rerun_with_other_settings_or_a_foreign_file_is_refused(tmp_path: Path) -> None:
    out = tmp_path / "t.jsonl"
    _engine(ScriptedTeacher()).generate(_items(4), output=out)
    with pytest.raises(DatasetError, match=r"other settings \(batch_size 1 -> 2\).*--fresh"):
        _engine(ScriptedTeacher(), batch_size=2).generate(_items(4), output=out)
    fresh = _engine(ScriptedTeacher(), batch_size=2).generate(_items(4), output=out, fresh=True)
    assert fresh.resumed_requests == 0 and len(read_samples(out)) == 4
    foreign = tmp_path / "mine.jsonl"
    foreign.write_text(out.read_text())
    with pytest.raises(DatasetError, match=r"has no progress log mine.jsonl.progress.*--fresh"):
        _engine(ScriptedTeacher()).generate(_items(4), output=foreign)


# -- the command ------------------------------------------------------------------------------------


def _corpus(tmp_path: Path, captions: list[str]) -> Path:
    corpus = tmp_path / "c.csv"
    corpus.write_text("caption,modality\n" + "".join(f"{c},image\n" for c in captions))
    return corpus


def test_the_command_runs_concurrently_resumes_and_reports_failures(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    model = ScriptedTeacher(delay=0.01)
    module = types.ModuleType("scale_teacher_module")
    module.teacher = model  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "scale_teacher_module", module)
    captions = [c for c in (f"thing {i}" for i in range(40)) if split_of(c) == "train"][:12]
    captions[3] += " denied"
    assert split_of(captions[3]) == "train"  # the corpus keeps a held-out share of captions out of training
    out = tmp_path / "out.jsonl"
    args = ["generate", "--engine", "teacher", "--teacher-factory", "scale_teacher_module", "-o", str(out)]
    args += ["--corpus", str(_corpus(tmp_path, captions)), "--batch-size", "1", "--per-candidate", "1"]
    first = CliRunner().invoke(data, [*args, "--concurrency", "3", "--retries", "2"])
    assert first.exit_code == 3, first.output
    assert (
        "FAILED: 1 requests (1 samples not asked)" in first.output
        and "failed x1: Denied: invalid API key" in first.output
    )
    assert model.stats["max_in_flight"] <= 3
    kept = len(read_samples(out))
    again = CliRunner().invoke(data, [*args, "--json"])
    assert again.exit_code == 3 and "resuming, " in again.output
    report = json.loads(again.output[again.output.index("{") :])["splits"][0]
    assert (
        report["kept"] == kept
        and report["failed_requests"] == 1
        and report["resumed_requests"] == report["requests"] - 1
    )


def test_ctrl_c_says_how_to_continue(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    module = types.ModuleType("stopped_teacher_module")
    module.teacher = ScriptedTeacher()  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "stopped_teacher_module", module)
    # Ctrl-C lands in the main thread while it writes the third answer (a KeyboardInterrupt raised in a
    # worker thread would race the main thread's writes of the answers finished before it)
    from modaverse_agent.training import teacher_run

    commit, commits = teacher_run._Run.commit, []

    def interrupted(run: Any, request: Any, outcome: Any) -> None:
        commits.append(request.index)
        if len(commits) == 3:
            raise KeyboardInterrupt
        commit(run, request, outcome)

    monkeypatch.setattr(teacher_run._Run, "commit", interrupted)
    out = tmp_path / "out.jsonl"
    args = ["generate", "--engine", "teacher", "--teacher-factory", "stopped_teacher_module", "-o", str(out)]
    args += ["--corpus", str(_corpus(tmp_path, [f"thing {i}" for i in range(20)])), "--batch-size", "1"]
    stopped = CliRunner().invoke(data, args)
    assert stopped.exit_code == 130 and "rerun the same command to continue" in stopped.output, stopped.output
    monkeypatch.setattr(teacher_run._Run, "commit", commit)
    resumed = CliRunner().invoke(data, args)
    assert resumed.exit_code == 0 and "resuming, 2 of" in resumed.output, resumed.output
    assert sorted(s.source["request"] for s in read_samples(out)) == list(range(len(read_samples(out))))


# -- a local GGUF teacher -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_gguf(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random-weight tiny Llama chat model as GGUF (it cannot write samples; it proves the plumbing)."""
    pytest.importorskip("llama_cpp")
    pytest.importorskip("langchain_community")
    torch = pytest.importorskip("torch")
    torch.set_num_threads(1)
    from modaverse_agent.model.gguf_export import write_llama_gguf
    from modaverse_agent.model.tiny import tiny_llama, tiny_tokenizer

    tokenizer = tiny_tokenizer(chat_template=True)
    return write_llama_gguf(tiny_llama(tokenizer), tokenizer, tmp_path_factory.mktemp("gguf") / "tiny.gguf")


def test_a_gguf_teacher_runs_through_chat_llamacpp(tiny_gguf: Path, tmp_path: Path) -> None:
    out = tmp_path / "local.jsonl"
    args = ["generate", "--engine", "teacher", "--teacher-gguf", str(tiny_gguf), "-o", str(out), "--json"]
    args += ["--teacher-option", "max_tokens=24", "--teacher-option", "n_threads=1", "--teacher-option", "seed=3"]
    args += ["--limit", "6", "--batch-size", "2", "--concurrency", "3"]
    result = CliRunner().invoke(data, args)
    assert result.exit_code == 0, result.output
    report = json.loads(result.output[result.output.index("{") :])["splits"][0]
    assert report["requests"] == 3 and report["failed_requests"] == 0 and report["kept"] == 0
    rejected = report["malformed_replies"] + report["invalid"]
    assert rejected >= 3 and (report["malformed_reasons"] or report["invalid_reasons"])
    log = progress_path(out).read_text().splitlines()
    assert json.loads(log[0])["model"] == "gguf:tiny.gguf" and len(log) == 4
    assert all(json.loads(line)["status"] == "done" for line in log[1:])
    rerun = CliRunner().invoke(data, args)  # everything finished: nothing is asked again
    assert rerun.exit_code == 0 and "resuming, 3 of 3 requests already finished" in rerun.output


def test_a_bad_gguf_teacher_is_a_one_line_error(tiny_gguf: Path, tmp_path: Path) -> None:
    base = ["generate", "--engine", "teacher", "-o", str(tmp_path / "x.jsonl")]
    missing = CliRunner().invoke(data, [*base, "--teacher-gguf", str(tmp_path / "none.gguf")])
    assert missing.exit_code == 2 and "no such file; give the path of a GGUF chat model" in missing.output
    both = CliRunner().invoke(data, [*base, "--teacher-gguf", str(tiny_gguf), "--teacher-model", "openai:x"])
    assert both.exit_code == 2 and "choose one teacher" in both.output
    bad = CliRunner().invoke(data, [*base, "--teacher-gguf", str(tiny_gguf), "--teacher-option", "n_ctx"])
    assert bad.exit_code == 2 and "--teacher-option takes KEY=VALUE" in bad.output
