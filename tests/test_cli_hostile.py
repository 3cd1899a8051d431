"""Hostile command lines: every failure of ``modaverse`` is one clear line and an exit code, never a traceback.

Run in-process through ``main(argv)`` (the console script's entry, with its last-resort handler) or, for
real undecodable argv bytes and a closed pipe, through the installed script. The echo plugin and a
scripted ``--meta-response`` keep models out.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from modaverse_agent import plugins
from modaverse_agent.agent import FinalResponse, ModaVerseAgent, ResponseError
from modaverse_agent.cli import EXIT_INTERRUPTED, MESSAGE_MAX_CHARS, cli, main, printable
from modaverse_agent.response import AgentEvent, ResponseDone, TextDelta

PLAN = json.dumps({"text": "ok", "invocations": [{"task": "text-to-image", "prompt": "a kite", "args": {"width": 16}}]})
EXE = Path(sys.executable).with_name("modaverse")


@pytest.fixture(autouse=True)
def echo() -> None:
    import modaverse_echo

    plugins.load_plugins()
    plugins.pm.register(modaverse_echo, name="echo")


def run_main(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    """``modaverse ARGV`` in-process: exit code, stdout, stderr."""
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def error_line(err: str) -> str:
    """The stderr of a failure, checked to hold no traceback and exactly one error line."""
    assert "Traceback" not in err, err
    lines = [line for line in err.splitlines() if line.lower().startswith("error")]
    assert len(lines) == 1, err
    return lines[0]


# -- --meta-response @file ------------------------------------------------------------------------------


def test_plan_file_with_invalid_utf8(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    bad = tmp_path / "plan.json"
    bad.write_bytes(b'{"text": "hi \xff\xfe", "invocations": []}')
    code, out, err = run_main(capsys, "run", "x", "--meta-response", f"@{bad}", "-o", str(tmp_path / "o"))
    assert code == 2 and out == ""
    assert "is not UTF-8 text (invalid byte at offset 13)" in error_line(err)


@pytest.mark.parametrize(
    ("target", "words"),
    [("missing.json", "No such file"), ("", "Is a directory"), ("/dev/zero", "larger than 1048576 bytes")],
)
def test_unreadable_plan_files(capsys: pytest.CaptureFixture[str], tmp_path: Path, target: str, words: str) -> None:
    if target.startswith("/") and not Path(target).exists():
        pytest.skip(f"{target} does not exist here")
    path = target if target.startswith("/") else str(tmp_path / target)
    code, _, err = run_main(capsys, "run", "x", "--meta-response", f"@{path}", "-o", str(tmp_path / "o"))
    assert code == 2 and words in error_line(err)


# -- numbers --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "words"),
    [
        ("nan", "not a finite number"),
        ("inf", "not a finite number"),
        ("-inf", "not a finite number"),
        ("1e309", "not a finite number"),
        ("-1", "must be > 0"),
        ("0", "must be > 0"),
        ("soon", "not a number"),
    ],
)
def test_timeout_must_be_finite_and_positive(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, value: str, words: str
) -> None:
    code, out, err = run_main(capsys, "run", "x", "--meta-response", PLAN, "-o", str(tmp_path), "--timeout", value)
    line = error_line(err)
    assert code == 2 and out == "" and "--timeout" in line and words in line
    assert not any(tmp_path.iterdir())  # nothing ran


def test_a_small_finite_timeout_is_accepted(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code, out, err = run_main(capsys, "run", "x", "--meta-response", PLAN, "-o", str(tmp_path), "--timeout", "30.5")
    assert code == 0, err
    assert "[text-to-image via echo-image]" in out


@pytest.mark.parametrize(
    "argv",
    [
        ["--temperature", "nan"],
        ["--temperature", "-0.5"],
        ["--seed", "-1"],
        ["--seed", str(2**32)],
        ["--seed", "9" * 5000],
    ],
)
def test_other_numbers_are_bounded(capsys: pytest.CaptureFixture[str], tmp_path: Path, argv: list[str]) -> None:
    code, _, err = run_main(capsys, "run", "x", "--meta-response", PLAN, "-o", str(tmp_path), *argv)
    line = error_line(err)
    assert code == 2 and argv[0] in line and len(line) <= MESSAGE_MAX_CHARS + 100


def test_seed_bound_is_the_generators_bound() -> None:
    from modaverse_agent.cli import run
    from modaverse_agent.diffusion import SEED_MAX

    seed = next(p for p in run.params if p.name == "seed")
    assert seed.type.max == SEED_MAX  # type: ignore[attr-defined]


# -- zoo config -----------------------------------------------------------------------------------------


def test_zoo_config_nested_5000_deep(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    deep = tmp_path / "deep.toml"
    deep.write_text("a = " + "[" * 5000 + "]" * 5000 + "\n")
    code, _, err = run_main(capsys, "zoo", "--zoo-config", str(deep))
    assert code == 2 and "nests tables or arrays too deeply" in error_line(err)
    code, _, err = run_main(capsys, "run", "x", "--meta-response", PLAN, "--zoo-config", str(deep))
    assert code == 2 and "deep.toml" in error_line(err)


def test_zoo_config_that_is_not_toml(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("not = [toml\n")
    code, _, err = run_main(capsys, "zoo", "--zoo-config", str(bad))
    assert code == 2 and "not valid TOML (Invalid value (at line 1, column 8))" in error_line(err)
    bad.write_bytes(b"[tasks]\n\xff = 1\n")
    code, _, err = run_main(capsys, "zoo", "--zoo-config", str(bad))
    assert code == 2 and "not UTF-8 text" in error_line(err)


def test_zoo_config_that_is_a_directory(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    code, _, err = run_main(capsys, "zoo", "--zoo-config", str(tmp_path))
    assert code == 2 and "is a directory" in error_line(err)
    monkeypatch.setenv("MODAVERSE_ZOO_CONFIG", str(tmp_path))
    code, _, err = run_main(capsys, "run", "x", "--meta-response", PLAN, "-o", str(tmp_path / "o"))
    assert code == 2 and "is a directory" in error_line(err)


@pytest.mark.skipif(not Path("/proc/self/mem").exists(), reason="needs Linux /proc")
def test_zoo_config_env_var_at_proc_self_mem(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MODAVERSE_ZOO_CONFIG", "/proc/self/mem")
    code, _, err = run_main(capsys, "zoo")
    assert code == 2 and "cannot read zoo config /proc/self/mem" in error_line(err)
    code, _, err = run_main(capsys, "run", "x", "--meta-response", PLAN, "-o", str(tmp_path))
    assert code == 2 and "/proc/self/mem" in error_line(err)


@pytest.mark.skipif(not Path("/dev/zero").exists(), reason="needs /dev/zero")
def test_zoo_config_that_is_a_device(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run_main(capsys, "zoo", "--zoo-config", "/dev/zero")
    assert code == 2 and "is not a regular file" in error_line(err)


def test_zoo_set_under_a_regular_file(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    blocker = tmp_path / "FILE"
    blocker.write_text("keep me")
    cfg = blocker / "zoo.toml"
    code, _, err = run_main(capsys, "zoo", "--zoo-config", str(cfg), "set", "text-to-image", "echo-image")
    assert code == 2 and "a parent of it is a file, not a directory" in error_line(err)
    assert blocker.read_text() == "keep me"
    code, _, err = run_main(capsys, "zoo", "--zoo-config", str(cfg), "unset", "text-to-image")
    assert code == 2 and "not a directory" in error_line(err)


def test_zoo_set_where_the_config_cannot_be_written(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A read-only config directory (simulated: the tests may run as root, who can write anywhere)."""
    cfg = tmp_path / "ro" / "zoo.toml"

    def refuse(self: Path, *args: object, **kwargs: object) -> int:
        raise PermissionError(13, "Permission denied", str(self))

    monkeypatch.setattr(Path, "write_bytes", refuse)
    code, _, err = run_main(capsys, "zoo", "--zoo-config", str(cfg), "set", "text-to-image", "echo-image")
    line = error_line(err)
    assert code == 2 and "cannot write zoo config" in line and "Permission denied" in line
    assert list((tmp_path / "ro").iterdir()) == []  # no temporary file left behind


@pytest.mark.parametrize(
    ("option", "words"),
    [
        ("width=NaN", "finite numbers only"),
        ("width=Infinity", "finite numbers only"),
        ("x=" + "[" * 5000 + "]" * 5000, "nested too deeply"),
        ("x=" + "9" * 5000, "Exceeds the limit"),
        ("x=\udcff", "not valid UTF-8"),
        ("novalue", "KEY=VALUE"),
    ],
)
def test_zoo_set_bad_options(capsys: pytest.CaptureFixture[str], tmp_path: Path, option: str, words: str) -> None:
    cfg = tmp_path / "zoo.toml"
    code, _, err = run_main(capsys, "zoo", "--zoo-config", str(cfg), "set", "text-to-image", "echo-image", "-o", option)
    assert code == 2 and words in error_line(err)
    assert not cfg.exists()


# -- media and output dir -------------------------------------------------------------------------------


@pytest.mark.skipif(not Path("/proc/self/mem").exists(), reason="needs Linux /proc")
def test_media_at_proc_self_mem(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code, _, err = run_main(capsys, "run", "x", "-m", "/proc/self/mem", "--meta-response", PLAN, "-o", str(tmp_path))
    assert code == 1 and "Traceback" not in err and err.strip()


def test_output_dir_that_is_a_file(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    blocker = tmp_path / "FILE"
    blocker.write_text("keep me")
    code, _, err = run_main(capsys, "run", "x", "--meta-response", PLAN, "-o", str(blocker))
    assert code == 2 and "is a file" in error_line(err)
    code, out, err = run_main(capsys, "run", "x", "--meta-response", PLAN, "-o", str(blocker / "sub"))
    assert code == 1 and "cannot create output directory" in error_line(err)
    assert "ok" in out and blocker.read_text() == "keep me"  # the text still comes back


def test_output_dir_without_write_permission(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Simulated through os.access (the tests may run as root, for whom chmod changes nothing)."""
    locked = (tmp_path / "locked").resolve()
    locked.mkdir()
    real_access = os.access

    def access(path: str | Path, mode: int, **kwargs: object) -> bool:
        return not (Path(path) == locked and mode & os.W_OK) and real_access(path, mode, **kwargs)

    monkeypatch.setattr(os, "access", access)
    code, _, err = run_main(capsys, "run", "x", "--meta-response", PLAN, "-o", str(locked))
    assert code == 1 and "not writable" in error_line(err)
    assert list(locked.iterdir()) == []


# -- unencodable output -----------------------------------------------------------------------------------


def _surrogate_response(*args: object, **kwargs: object) -> FinalResponse:
    return FinalResponse(
        text="text \ud800 here",
        errors=[ResponseError("media", "input \udcff skipped")],
        raw="raw \udcfe",
        notes=["note \udfff"],
    )


def _surrogate_stream(*args: object, **kwargs: object) -> Iterator[AgentEvent]:
    response = _surrogate_response()
    yield TextDelta(response.text)  # text mode prints the answer as it streams
    yield ResponseDone(response)


@pytest.mark.parametrize("as_json", [False, True])
def test_lone_surrogates_print_without_crashing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, as_json: bool) -> None:
    """CliRunner's streams are strict UTF-8, like a plain stdout: an unprintable character must be replaced."""
    monkeypatch.setattr(ModaVerseAgent, "run", _surrogate_response)
    monkeypatch.setattr(ModaVerseAgent, "stream", _surrogate_stream)
    res = CliRunner().invoke(
        cli, ["run", "x\ud800", "--meta-response", PLAN, "-o", str(tmp_path)] + (["--json"] if as_json else [])
    )
    assert res.exit_code == 1, res.output
    assert res.exception is None or isinstance(res.exception, SystemExit)
    out = res.stdout
    assert "\ufffd" in out and "\ud800" not in out
    if as_json:
        data = json.loads(out)
        assert data["text"].startswith("text ") and data["notes"][0].startswith("note ")
    else:
        assert "text \ufffd here" in out and "note: note \ufffd" in out
        assert "error: media: input \ufffd skipped" in res.stderr


def test_surrogates_in_an_artifact_path(tmp_path: Path) -> None:
    """An output dir named with undecodable bytes (surrogateescape in argv) reaches the printed paths."""
    out_dir = str(tmp_path / "o\udcff")
    for extra in ([], ["--json"]):
        res = CliRunner().invoke(cli, ["run", "x", "--meta-response", PLAN, "-o", out_dir, *extra])
        assert res.exit_code == 0, res.output
        assert "o\ufffd" in res.stdout
    assert len(list(Path(os.fsencode(out_dir).decode("utf-8", "surrogateescape")).glob("*.png"))) == 2


def test_printable_replaces_only_surrogates() -> None:
    assert printable("a\ud800b\udcffc é 😀") == "a\ufffdb\ufffdc é 😀"


@pytest.mark.skipif(sys.platform != "linux", reason="argv bytes as on Linux")
def test_undecodable_argv_bytes_in_a_real_process(tmp_path: Path) -> None:
    """Real argv bytes (not UTF-8) in the instruction, the plan and the output dir, on a pure-ASCII stdout."""
    env = {
        **os.environ,
        "MODAVERSE_LOAD_PLUGINS": "echo",
        "MODAVERSE_ZOO_CONFIG": str(tmp_path / "z.toml"),
        "PYTHONIOENCODING": "ascii",
    }
    plan = b'{"text": "caf\xc3\xa9 \xff", "invocations": [{"task": "text-to-image", "prompt": "k \xfe"}]}'
    for extra in ([], [b"--json"]):
        res = subprocess.run(
            [str(EXE), b"run", b"\xff", b"--meta-response", plan, b"-o", os.fsencode(tmp_path) + b"/o\xff", *extra],
            capture_output=True,
            env=env,
        )
        assert b"Traceback" not in res.stderr and b"UnicodeEncodeError" not in res.stderr, res.stderr
        assert res.returncode in (0, 1) and res.stdout
        if extra:
            json.loads(res.stdout)


# -- the last-resort handler ----------------------------------------------------------------------------


def test_unexpected_error_is_one_line(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def boom(*args: object, **kwargs: object) -> None:
        raise RuntimeError("boom\nsecond line")

    monkeypatch.setattr(ModaVerseAgent, "run", boom)
    monkeypatch.setattr(ModaVerseAgent, "stream", boom)  # text mode streams the answer
    monkeypatch.delenv("MODAVERSE_DEBUG", raising=False)
    code, _, err = run_main(capsys, "run", "x", "--meta-response", PLAN, "-o", str(tmp_path))
    assert code == 1
    assert err.strip() == "error: RuntimeError: boom second line (rerun with MODAVERSE_DEBUG=1 for the traceback)"
    monkeypatch.setenv("MODAVERSE_DEBUG", "1")
    code, _, err = run_main(capsys, "run", "x", "--meta-response", PLAN, "-o", str(tmp_path))
    assert code == 1 and "Traceback" in err and err.endswith("error: RuntimeError: boom second line\n")


def test_a_huge_unexpected_message_is_clipped(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def boom(*args: object, **kwargs: object) -> None:
        raise ValueError("x" * 1_000_000)

    monkeypatch.setattr(ModaVerseAgent, "run", boom)
    monkeypatch.setattr(ModaVerseAgent, "stream", boom)  # text mode streams the answer
    monkeypatch.delenv("MODAVERSE_DEBUG", raising=False)
    code, _, err = run_main(capsys, "run", "x", "--meta-response", PLAN, "-o", str(tmp_path))
    assert code == 1 and len(err) < MESSAGE_MAX_CHARS + 100 and "1000012 characters in all" in err


def test_ctrl_c_exits_130_quietly(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def interrupted(*args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(ModaVerseAgent, "run", interrupted)
    monkeypatch.setattr(ModaVerseAgent, "stream", interrupted)  # text mode streams the answer
    code, out, err = run_main(capsys, "run", "x", "--meta-response", PLAN, "-o", str(tmp_path))
    assert code == EXIT_INTERRUPTED == 130
    assert out == "" and err.strip() == ""


def test_closed_stdout_pipe_is_quiet(tmp_path: Path) -> None:
    env = {**os.environ, "MODAVERSE_LOAD_PLUGINS": "echo", "MODAVERSE_ZOO_CONFIG": str(tmp_path / "z.toml")}
    proc = subprocess.Popen([str(EXE), "zoo", "--json"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    assert proc.stdout is not None and proc.stderr is not None
    proc.stdout.close()  # the reader goes away before the first line
    err = proc.stderr.read()
    assert proc.wait(timeout=60) == 1
    assert err == b"", err


# -- other hostile command lines ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("argv", "words"),
    [
        (["frobnicate"], "No such command 'frobnicate'"),
        (["\udcff"], "No such command"),
        (["zoo", "set"], "Missing argument 'TASK'"),
        (["run", "x", "--timeout"], "requires an argument"),
        (["run", "x", "--engine", "bogus"], "is not one of"),
        (["run", "x", "--use", "a" * 100_000], "--use takes TASK=GENERATOR"),  # checked before a model loads
        (["run", "--" + "a" * 100_000], "No such option"),
        (["run", "x", "--meta-response", PLAN, "--use", "text-to-image=nope"], "no generator named 'nope'"),
        (["run", "x", "--model", ".", "--meta-response", PLAN], "not both"),
        (["import-official", "/nonexistent/pytorch_model.pt", "--base-llm", "b", "-o", "o"], "does not exist"),
    ],
)
def test_usage_errors(capsys: pytest.CaptureFixture[str], argv: list[str], words: str) -> None:
    code, _, err = run_main(capsys, *argv)
    line = error_line(err)
    assert code == 2 and words in line and len(line) <= MESSAGE_MAX_CHARS + 100
    assert "\udcff" not in err


def test_huge_instruction_and_plan(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code, out, err = run_main(capsys, "run", "a" * 120_000, "--meta-response", PLAN, "-o", str(tmp_path))
    assert code == 0 and "[text-to-image via echo-image]" in out
    code, out, err = run_main(capsys, "run", "x", "--meta-response", "{" * 120_000, "-o", str(tmp_path))
    assert code == 1 and "Traceback" not in err
    assert all(len(line) <= MESSAGE_MAX_CHARS + 100 for line in err.splitlines())


def test_gguf_without_a_model_folder_is_refused_not_ignored(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    """The built-in model brings its own GGUF: `--gguf` alone used to be dropped without a word."""
    gguf = tmp_path / "other.gguf"
    gguf.write_bytes(b"GGUF")
    code, out, err = run_main(capsys, "run", "hello", "--gguf", str(gguf), "-o", str(tmp_path / "o"))
    assert code == 2 and out == ""
    line = error_line(err)
    assert "--gguf" in line and "--model DIR" in line
    assert "built-in default model (Gemma" not in err  # refused before anything loads


def test_a_missing_media_file_or_nothing_to_answer_fails_before_the_model_loads(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`modaverse run "..." -m missng.png` loaded the model, ran a generator for 24 s and reported the typo last."""
    import modaverse_agent.cli as cli_module

    def never(*args: object, **kwargs: object) -> None:
        raise AssertionError("the model was loaded")

    monkeypatch.setattr(cli_module, "load_model", never)
    code, _, err = run_main(capsys, "run", "make it a watercolor", "-m", str(tmp_path / "missng.png"))
    assert code == 2 and "missng.png" in error_line(err) and "no such file" in error_line(err)
    code, _, err = run_main(capsys, "run", "make it a watercolor", "-m", str(tmp_path))  # a folder is no file
    assert code == 2 and "no such file" in error_line(err)
    code, _, err = run_main(capsys, "run", "  ")
    assert code == 2 and "nothing to answer" in error_line(err)
