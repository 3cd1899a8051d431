"""``modaverse chat`` driven as a person drives it: through a pseudo-terminal (pexpect), and through a pipe.

The chat talks to a scripted LLM given with ``--llm-factory`` (a module written into the test's tmp dir:
it replays meta-responses from a JSONL script, streams them in small pieces, optionally slowly, and logs
what each turn was offered) and the echo plugin's generators. The in-process tests at the end cover the
progress line, untrained generators, notes shown once, and the line reader's Ctrl-C handling.
"""

from __future__ import annotations

import io
import json
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any, ClassVar

import pexpect
import pytest

from modaverse_agent.agent import ModaVerseAgent
from modaverse_agent.conversation import STOPPED, Conversation
from modaverse_agent.generators import GenerationRequest
from modaverse_agent.serving.terminal import LEAVE_HINT, ChatTerminal, LineDiscarded
from modaverse_agent.serving.terminal_turn import TurnRunner, progress_text
from modaverse_agent.testing import ScriptedLLM, interruptible_child
from modaverse_agent.zoo import Zoo

FAKE_LLM = textwrap.dedent(
    """
    import json, os, time
    from modaverse_agent.llm_io import PieceStream

    class SlowScripted:
        output_format = "json"

        def __init__(self):
            with open(os.environ["CHAT_FAKE_SCRIPT"], encoding="utf-8") as f:
                self.script = [json.loads(line) for line in f if line.strip()]

        def _next(self, request):
            with open(os.environ["CHAT_FAKE_LOG"], "a", encoding="utf-8") as f:
                seen = {"instruction": request.instruction, "media": [i for i, _ in request.media],
                        "history": [t.role for t in request.history]}
                f.write(json.dumps(seen) + "\\n")
            return self.script.pop(0)

        def respond(self, request):
            return json.dumps(self._next(request)["reply"])

        def stream(self, request):
            step = self._next(request)
            raw, delay = json.dumps(step["reply"]), step.get("delay", 0)

            def pieces():
                for i in range(0, len(raw), 3):
                    time.sleep(delay)
                    yield raw[i:i + 3]

            return PieceStream(pieces())

    def make():
        return SlowScripted()
    """
)
DRAW = {"text": "A cat on a mat.", "invocations": [{"task": "text-to-image", "prompt": "a cat on a mat"}]}
EDIT = {
    "text": "Here it is as a watercolor.",
    "invocations": [{"task": "image-editing", "prompt": "watercolor", "inputs": ["image_1"]}],
}
LOOK = {"text": "I see your picture.", "invocations": []}
SLOW = {
    "text": "Let me think about this for quite a long while before I answer you.",
    "invocations": [{"task": "text-to-video", "prompt": "a long film"}],
}
PROMPT = "you>"  # prompt_toolkit draws the prompt's trailing space as a cursor move
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
PASTE_ON, PASTE_OFF = "\x1b[?2004h", "\x1b[?2004l"


class Chat:
    """One ``modaverse chat`` under a pseudo-terminal, with its scripted LLM's script and log."""

    def __init__(self, tmp: Path, script: list[dict[str, Any]], *extra: str, env: dict[str, str] | None = None) -> None:
        self.tmp, self.log = tmp, tmp / "llm-log.jsonl"
        (tmp / "chat_fake_llm.py").write_text(FAKE_LLM, encoding="utf-8")
        (tmp / "script.jsonl").write_text("".join(json.dumps(s) + "\n" for s in script), encoding="utf-8")
        args = ["-m", "modaverse_agent.cli", "chat", "--llm-factory", "chat_fake_llm:make", "--seed", "0"]
        args += ["--output-dir", str(tmp / "out"), *extra]
        self.child = pexpect.spawn(
            sys.executable,
            args,
            env={**chat_env(tmp), **(env or {})},
            cwd=str(tmp),
            encoding="utf-8",
            timeout=20,
            dimensions=(40, 200),
            preexec_fn=interruptible_child,
        )
        self.transcript = io.StringIO()
        self.child.logfile_read = self.transcript
        self.prompt()

    def prompt(self) -> str:
        """Wait for a new prompt; returns what was printed since the last expectation.

        prompt_toolkit redraws ``you>`` with every key typed, so a new prompt is known by the bracketed-paste
        switch it turns on when it starts reading (it turns it off when Enter or Ctrl-C ends the line).
        """
        self.child.expect_exact(PASTE_ON)
        before = self.child.before
        self.child.expect_exact(PROMPT)
        return before

    def say(self, line: str) -> str:
        """Type ``line``, wait for the next prompt; returns the output in between."""
        self.child.sendline(line)
        self.child.expect_exact(PASTE_OFF)  # the line is read
        return self.prompt()

    def requests(self) -> list[dict[str, Any]]:
        """What the scripted LLM was asked, turn by turn."""
        return [json.loads(line) for line in self.log.read_text(encoding="utf-8").splitlines()]

    def exit_status(self) -> int:
        """Wait for the chat to end; its exit status."""
        self.child.expect(pexpect.EOF)
        self.child.close()
        assert "Traceback" not in self.transcript.getvalue()
        return self.child.exitstatus


def chat_env(tmp: Path) -> dict[str, str]:
    """Only the echo plugin, a private zoo config, cache and history, the fake LLM importable."""
    env = dict(os.environ)
    env.update(
        PYTHONPATH=os.pathsep.join([str(tmp), env.get("PYTHONPATH", "")]),
        CHAT_FAKE_SCRIPT=str(tmp / "script.jsonl"),
        CHAT_FAKE_LOG=str(tmp / "llm-log.jsonl"),
        MODAVERSE_LOAD_PLUGINS="echo",
        MODAVERSE_ZOO_CONFIG=str(tmp / "zoo.toml"),
        MODAVERSE_CACHE=str(tmp / "cache"),
        TERM="xterm",
        PROMPT_TOOLKIT_NO_CPR="1",  # the pty answers no cursor-position request, as a real terminal would
        OMP_NUM_THREADS="1",
    )
    return env


@pytest.fixture
def png(tmp_path: Path) -> Path:
    from PIL import Image

    path = tmp_path / "photo.png"
    Image.new("RGB", (16, 12), (10, 200, 30)).save(path)
    return path


def printed_paths(output: str) -> list[Path]:
    """The paths of the file lines (``  image_1  /path  (task via generator)``), terminal escapes left out."""
    lines = ANSI.sub("", output).replace("\r", "\n").splitlines()
    return [Path(line.split()[1]) for line in lines if line.startswith(("  image_", "  audio_", "  video_"))]


def test_second_turn_edits_the_first_turns_picture_and_save_load_round_trip(tmp_path: Path) -> None:
    chat = Chat(tmp_path, [{"reply": DRAW}, {"reply": EDIT}, {"reply": LOOK}])
    first = chat.say("draw a cat on a mat")
    assert "A cat on a mat." in first
    [drawn] = printed_paths(first)
    assert drawn.is_file() and "(text-to-image via echo-image)" in first and "image_1" in first
    second = chat.say("now make it a watercolor")
    assert "Here it is as a watercolor." in second
    [edited] = printed_paths(second)
    assert edited.is_file() and edited != drawn and "image_2" in second and "via echo-edit" in second
    assert edited.read_bytes() != drawn.read_bytes()
    asked = chat.requests()
    assert asked[1]["media"] == ["image_1"] and asked[1]["history"] == ["user", "assistant"]

    saved = chat.say(f"/save {tmp_path / 'chat.json'}")
    assert "saved 4 turns and 2 media" in saved
    data = json.loads((tmp_path / "chat.json").read_text(encoding="utf-8"))
    assert [m["id"] for m in data["media"]] == ["image_1", "image_2"] and len(data["turns"]) == 4
    assert "a new conversation" in chat.say("/clear")
    loaded = chat.say(f"/load {tmp_path / 'chat.json'}")
    assert "4 turns, media: image_1, image_2" in loaded and "you: now make it a watercolor" in loaded
    assert "I see your picture." in chat.say("what do you see?")
    assert chat.requests()[2]["media"] == ["image_1", "image_2"] and len(chat.requests()[2]["history"]) == 4
    assert "not loaded" in chat.say(f"/load {tmp_path / 'missing.json'}")
    chat.child.sendline("/quit")
    assert chat.exit_status() == 0
    history = (tmp_path / "cache" / "chat_history").read_text(encoding="utf-8")
    assert "+draw a cat on a mat" in history and "+/quit" in history


def test_commands_attach_zoo_use_help(tmp_path: Path, png: Path) -> None:
    bad = tmp_path / "bad.jpg"
    bad.write_text("not a picture")
    chat = Chat(tmp_path, [{"reply": LOOK}], "--use", "text-to-image=echo-image")
    assert "/attach PATH" in chat.say("/help") and "/quit" in chat.transcript.getvalue()
    zoo = chat.say("/zoo")
    assert "text-to-image    -> echo-image  (chosen for this session)" in zoo and "image-editing    -> echo-edit" in zoo
    assert "text-to-video    -> echo-video" in chat.say("\x1b[A")  # Up recalls the last line (/zoo)
    assert "image-editing -> echo-edit for the rest of this session" in chat.say("/use image-editing=echo-edit")
    assert "serves 'text-to-image', not 'image-editing'" in chat.say("/use image-editing=echo-image")
    assert "no generator named 'nope'" in chat.say("/use text-to-image=nope")
    assert "takes TASK=GENERATOR" in chat.say("/use text-to-image")
    attached = chat.say(f"/attach {png} {bad}")
    assert f"attached {png} as image_1" in attached and f"error: cannot attach {bad}" in attached
    assert "image_1  photo.png (image/png)" in chat.say("/attach")
    assert "unknown command /frobnicate" in chat.say("/frobnicate")
    assert "I see your picture." in chat.say("what is in it?")
    assert chat.requests()[0]["media"] == ["image_1"]
    assert "nothing attached" in chat.say("/attach")  # attachments went with that message
    chat.child.send("half a line")
    chat.child.sendcontrol("c")  # discards the typed line: no hint, the prompt comes back
    chat.child.expect_exact(PASTE_OFF)
    assert LEAVE_HINT not in chat.prompt()
    chat.child.sendeof()
    assert chat.exit_status() == 0


def test_ctrl_c_stops_the_running_answer_but_not_the_session(tmp_path: Path) -> None:
    chat = Chat(tmp_path, [{"reply": SLOW, "delay": 0.25}, {"reply": DRAW}])
    chat.child.sendline("tell me a long story")
    chat.child.expect_exact("Let me")  # the answer is streaming
    chat.child.sendcontrol("c")
    chat.child.expect_exact("stopped: nothing more runs for this answer")
    chat.prompt()
    after = chat.say("draw a cat on a mat")  # the session goes on; the stopped step ends first
    assert "A cat on a mat." in after and len(printed_paths(after)) == 1
    assert not list((tmp_path / "out").rglob("*.mp4"))  # the stopped answer's video was never made
    assert chat.requests()[1]["history"] == ["user", "assistant"]  # the stopped turn is kept
    chat.child.sendcontrol("c")
    chat.child.expect_exact(PASTE_OFF)
    assert LEAVE_HINT in chat.prompt()
    chat.child.sendcontrol("c")  # a second Ctrl-C in a row at an empty prompt leaves
    assert chat.exit_status() == 0


def test_piped_stdin_reads_plain_lines_without_prompts(tmp_path: Path) -> None:
    (tmp_path / "chat_fake_llm.py").write_text(FAKE_LLM, encoding="utf-8")
    (tmp_path / "script.jsonl").write_text(json.dumps({"reply": DRAW}) + "\n", encoding="utf-8")
    args = [sys.executable, "-m", "modaverse_agent.cli", "chat", "--llm-factory", "chat_fake_llm:make"]
    args += ["-o", str(tmp_path / "out")]
    done = subprocess.run(
        args, input="draw a cat\n/zoo\n", capture_output=True, text=True, env=chat_env(tmp_path), timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert "you>" not in done.stdout and "A cat on a mat." in done.stdout
    assert all(p.is_file() for p in printed_paths(done.stdout)) and printed_paths(done.stdout)


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--llm-factory", "no_such_module_xyz:make"], "cannot import no_such_module_xyz"),
        (["--llm-factory", "json"], "takes MODULE:ATTR"),
        (["--llm-factory", "json:dumps"], "the factory failed"),
        (["--llm-factory", "json:loads", "--model", "m"], "either --model or --llm-factory"),
        (["--use", "text-to-image=nope"], "no generator named 'nope'"),
    ],
)
def test_a_bad_command_line_is_one_clear_line(tmp_path: Path, extra: list[str], message: str) -> None:
    args = [sys.executable, "-m", "modaverse_agent.cli", "chat", *extra]
    done = subprocess.run(args, input="", capture_output=True, text=True, env=chat_env(tmp_path), timeout=60)
    assert done.returncode == 2 and message in done.stderr and len(done.stderr.strip().splitlines()) == 1


# -- in process: progress, untrained generators, notes once, the reader's Ctrl-C --------------------------------


class TtyBuffer(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.fixture
def progress_zoo(echo_zoo: Zoo) -> Zoo:
    from modaverse_echo import EchoImage

    class ProgressImage(EchoImage):
        name = "progress-image"
        priority: ClassVar[int] = 10

        @property
        def untrained(self) -> bool:
            return True

        def real_weights_hint(self) -> str:
            return "modaverse zoo set text-to-image real-one"

        def make(self, request: GenerationRequest, rng: Any) -> Any:
            for step in range(1, 4):
                assert request.progress is not None
                request.progress(step, 3)
            return super().make(request, rng)

    echo_zoo.add(ProgressImage())
    return echo_zoo


def reader_of(*items: str | type[BaseException]) -> Any:
    """A line reader that returns the lines and raises the exception classes, then EOF."""
    feed = iter(items)

    def read(prompt: str) -> str:
        item = next(feed, EOFError)
        if isinstance(item, type):
            raise item()
        return item

    return read


def test_progress_line_untrained_marks_and_notes_once(
    progress_zoo: Zoo, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    llm = ScriptedLLM(DRAW, DRAW)
    agent = ModaVerseAgent(llm, progress_zoo, output_dir=tmp_path / "out", seed=0)
    err = TtyBuffer()
    monkeypatch.setattr(sys, "stderr", err)
    reader = reader_of("/zoo", "draw", "again", KeyboardInterrupt, KeyboardInterrupt, "never read")
    assert ChatTerminal(agent, reader=reader).run() == 0
    out = capsys.readouterr().out
    assert "text-to-image    -> progress-image  (untrained: placeholder output)  also: echo-image" in out
    assert out.count("(text-to-image via progress-image, untrained weights)") == 2
    assert out.count("note: text-to-image ran progress-image on untrained tiny weights") == 1  # once a session
    assert out.count(LEAVE_HINT) == 1 and "never read" not in out
    drawn = err.getvalue()
    assert progress_text(1, 1, "text-to-image", 3, 3) in drawn and "[1/1] text-to-image ..." in drawn
    assert drawn.endswith("\r\x1b[K")  # the line is cleared before the files are listed


def test_a_discarded_line_disarms_leaving_and_a_failed_turn_is_kept(
    agent: ModaVerseAgent, llm: ScriptedLLM, capsys: pytest.CaptureFixture[str]
) -> None:
    terminal = ChatTerminal(agent, reader=reader_of(KeyboardInterrupt, LineDiscarded, KeyboardInterrupt, "hi"))
    assert terminal.run() == 0  # Ctrl-C, a discarded line, Ctrl-C: still here; "hi", then EOF leaves
    captured = capsys.readouterr()
    assert captured.out.count(LEAVE_HINT) == 2
    assert "ScriptedLLM has no reply queued" in captured.err  # the LLM failing is an error line, not a crash
    assert [t.role for t in terminal.conv.turns] == ["user", "assistant"]
    assert f"stopped: {STOPPED}" not in terminal.conv.turns[-1].errors


def test_a_stopped_turn_starts_no_further_invocation_and_is_kept(echo_zoo: Zoo, tmp_path: Path) -> None:
    import threading

    from modaverse_echo import EchoImage

    started, gate = threading.Event(), threading.Event()

    class GatedImage(EchoImage):
        name = "gated-image"
        priority: ClassVar[int] = 10

        def make(self, request: GenerationRequest, rng: Any) -> Any:
            started.set()
            assert gate.wait(10)
            return super().make(request, rng)

    echo_zoo.add(GatedImage())
    plan = {
        "text": "Two things.",
        "invocations": [{"task": "text-to-image", "prompt": "a"}, {"task": "text-to-audio", "prompt": "b"}],
    }
    conv = Conversation(ModaVerseAgent(ScriptedLLM(plan), echo_zoo, output_dir=tmp_path / "out", seed=0))
    runner = TurnRunner(conv, "draw and play", [])
    assert started.wait(10)  # the first generator runs
    runner.stop()
    gate.set()
    while runner.next() is not None:
        pass
    assert runner.done() and runner.response is None and [a.generator for a in runner.made] == ["gated-image"]
    assert not list((tmp_path / "out").rglob("*.wav"))  # the second invocation never started
    assert [t.role for t in conv.turns] == ["user", "assistant"] and conv.turns[-1].errors == [f"stopped: {STOPPED}"]
    assert conv.turns[-1].text == "Two things." and conv.turns[-1].artifacts[0]["generator"] == "gated-image"


# -- what an outside tester found: refused messages, saves read elsewhere, escapes, colors, quoting ------------


class PickyLLM(ScriptedLLM):
    """Refuses, as the real model's prompt check does, a prompt (instruction or history) holding a NUL."""

    def respond(self, request: Any) -> str:
        from modaverse_agent.errors import RequestError

        if "\x00" in request.instruction or any("\x00" in t.text for t in request.history):
            raise RequestError("the instruction contains NUL characters; remove them")
        return super().respond(request)


class PrefillReader:
    """A line reader that can start the line with a message (as prompt_toolkit's ``default``): records it."""

    prefills = True

    def __init__(self, *items: str | type[BaseException]) -> None:
        self.read, self.defaults = reader_of(*items), []

    def __call__(self, prompt: str, default: str = "") -> str:
        self.defaults.append(default)
        return self.read(prompt)


def test_a_refused_message_is_refused_alone_and_keeps_its_attachments(
    echo_zoo: Zoo, tmp_path: Path, png: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    llm = PickyLLM({"text": "Hello.", "invocations": []}, {"text": "Four.", "invocations": []})
    agent = ModaVerseAgent(llm, echo_zoo, output_dir=tmp_path / "out", seed=0)
    terminal = ChatTerminal(agent, reader=reader_of(f"/attach {png}", "ab\x00cd", "hello", "what is two plus two?"))
    assert terminal.run() == 0
    captured = capsys.readouterr()
    assert captured.err.count("NUL characters") == 1 and "Four." in captured.out
    assert "1 attachment(s) stay attached" in captured.out
    assert [t.text for t in terminal.conv.turns] == ["hello", "Hello.", "what is two plus two?", "Four."]
    assert [i for i, _ in llm.history[0].media] == ["image_1"]  # the attachment went with "hello"


def test_a_save_loads_from_another_folder_and_a_missing_file_costs_only_itself(
    agent: ModaVerseAgent,
    llm: ScriptedLLM,
    tmp_path: Path,
    png: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.chdir(tmp_path)
    llm.enqueue(LOOK)
    (tmp_path / "elsewhere").mkdir()
    lines = ["/attach photo.png", "look", "/save 'my chat.json'", "/clear", "/load elsewhere/../'my chat.json'"]
    assert ChatTerminal(agent, reader=reader_of(*lines)).run() == 0
    saved = json.loads((tmp_path / "my chat.json").read_text(encoding="utf-8"))
    assert saved["media"][0]["path"] == str(png)
    assert "loaded" in capsys.readouterr().out
    monkeypatch.chdir(tmp_path / "elsewhere")
    png.unlink()
    terminal = ChatTerminal(agent, reader=reader_of('/load "../my chat.json"'))
    assert terminal.run() == 0
    out = capsys.readouterr().out
    assert "2 turns, media: image_1" in out and "warning: medium image_1 (photo.png) is left out" in out
    assert len(terminal.conv.turns) == 2


def test_escapes_from_a_line_a_file_or_the_model_do_not_reach_the_terminal(
    agent: ModaVerseAgent, llm: ScriptedLLM, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    llm.enqueue({"text": "Sure \x1b]2;MODEL\x07 thing.", "invocations": []})
    turns = [{"role": "user", "text": "hi \x1b]2;PWNED\x07"}, {"role": "assistant", "text": "x\x9b31m"}]
    (tmp_path / "evil.json").write_text(json.dumps({"version": 1, "turns": turns, "media": []}))
    lines = ["/foo\x1b]2;X\x07bar", f"/load {tmp_path / 'evil.json'}", "tell me"]
    assert ChatTerminal(agent, reader=reader_of(*lines)).run() == 0
    captured = capsys.readouterr()
    shown = captured.out + captured.err
    assert "\x1b" not in shown and "\x07" not in shown and "\x9b" not in shown
    assert "unknown command /foo\\x1b]2;X\\x07bar" in captured.err and "hi \\x1b]2;PWNED\\x07" in captured.out
    assert "Sure \\x1b]2;MODEL\\x07 thing." in captured.out


def test_load_refuses_an_unknown_role_and_warns_of_a_dangling_reference(
    agent: ModaVerseAgent, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    turns = [{"role": "user", "text": "hi", "media": ["image_9"]}, {"role": "wizard", "text": "abracadabra"}]
    (tmp_path / "role.json").write_text(json.dumps({"version": 1, "turns": turns, "media": []}))
    turns[1]["role"] = "assistant"
    (tmp_path / "ref.json").write_text(json.dumps({"version": 1, "turns": turns, "media": []}))
    reader = reader_of(f"/load {tmp_path / 'role.json'}", f"/load {tmp_path / 'ref.json'}")
    assert ChatTerminal(agent, reader=reader).run() == 0
    captured = capsys.readouterr()
    assert "not loaded" in captured.err and 'turn 2 has the role "wizard"' in captured.err
    assert "warning: turn 1 refers to image_9, which the file does not hold" in captured.out


def test_ctrl_c_while_waiting_says_the_message_was_not_sent_and_keeps_it(
    agent: ModaVerseAgent, capsys: pytest.CaptureFixture[str]
) -> None:
    class Busy:
        def done(self) -> bool:
            return False

        def join(self) -> None:
            raise KeyboardInterrupt

    reader = PrefillReader("draw a cat")
    terminal = ChatTerminal(agent, reader=reader)
    terminal.running = Busy()  # type: ignore[assignment]  # a stopped answer's step still runs
    assert terminal.run() == 0
    assert "your message was not sent (it is back at the prompt)" in capsys.readouterr().out
    assert reader.defaults == ["", "draw a cat"] and terminal.conv.turns == []


def test_help_fits_80_columns_and_the_context_note_shows_once(
    echo_zoo: Zoo, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from modaverse_agent.errors import RequestError
    from modaverse_agent.serving.terminal import HELP

    assert max(len(line) for line in HELP.splitlines()) <= 80

    class ShortContext(ScriptedLLM):
        def check_prompt(self, request: Any) -> None:
            if len(request.history) > 2:
                raise RequestError("too long", code="context_length_exceeded")

    llm = ShortContext(*[LOOK] * 4)
    agent = ModaVerseAgent(llm, echo_zoo, output_dir=tmp_path / "out", seed=0)
    assert ChatTerminal(agent, reader=reader_of("/help", "a", "b", "c", "d")).run() == 0
    out = capsys.readouterr().out
    assert out.count("note: the conversation is longer than the model's context") == 1
    assert len(llm.history[-1].history) == 2  # the note's numbers changed (2 of 4, 4 of 6): still shown once


def test_no_color_and_quoted_path_completion(tmp_path: Path) -> None:
    from prompt_toolkit.completion import CompleteEvent, PathCompleter
    from prompt_toolkit.document import Document

    from modaverse_agent.serving.terminal_complete import QuotedPathCompleter

    (tmp_path / "dir with space").mkdir()
    (tmp_path / "dir with space" / "my photo.png").write_bytes(b"")
    completer = QuotedPathCompleter(PathCompleter(get_paths=lambda: [str(tmp_path)]))
    tab = CompleteEvent(completion_requested=True)
    [first] = completer.get_completions(Document("red.png dir"), tab)
    assert (first.text, first.start_position) == ("'dir with space'", -3)
    [second] = completer.get_completions(Document("'dir with space'/my"), tab)
    assert (second.text, second.start_position) == ("'dir with space/my photo.png'", -19)

    chat = Chat(tmp_path, [], env={"NO_COLOR": "1"})
    assert "unknown command /frobnicate" in chat.say("/frobnicate")
    assert "\x1b[31m" not in chat.transcript.getvalue()  # errors are not red
    chat.child.sendeof()
    assert chat.exit_status() == 0
