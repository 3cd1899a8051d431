"""``modaverse serve`` from the command line: bad options fail in one line, and the installed script serves
OpenAI clients on a free port until Ctrl-C stops it."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner
from openai import OpenAI

from modaverse_agent.cli import cli
from modaverse_agent.testing import interruptible_child

pytestmark = pytest.mark.allow_hosts(["127.0.0.1"])
PLAN = {"text": "A kite.", "invocations": [{"task": "text-to-image", "prompt": "a kite", "args": {"width": 16}}]}


def test_bad_options_fail_in_one_line(tmp_path: Path) -> None:
    runner = CliRunner()
    res = runner.invoke(cli, ["serve", "--meta-response", "{}", "--model", str(tmp_path)])
    assert res.exit_code == 2 and "either --model or --meta-response" in res.output
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        res = runner.invoke(cli, ["serve", "--meta-response", "{}", "--port", str(taken.getsockname()[1])])
    assert res.exit_code == 2 and "cannot listen on 127.0.0.1" in res.output
    res = runner.invoke(cli, ["serve", "--meta-response", "{}", "--port", "0", "--api-key", " "])
    assert res.exit_code == 2 and "--api-key is empty" in res.output


def test_the_script_serves_openai_clients_until_ctrl_c(tmp_path: Path) -> None:
    exe = Path(sys.executable).with_name("modaverse")
    env = {**os.environ, "MODAVERSE_LOAD_PLUGINS": "echo", "MODAVERSE_ZOO_CONFIG": str(tmp_path / "z.toml")}
    env["MODAVERSE_API_KEY"] = "sesame"
    args = [str(exe), "serve", "--port", "0", "--meta-response", json.dumps(PLAN), "-o", str(tmp_path / "o")]
    proc = subprocess.Popen(
        [*args, "--log-level", "warning"], stderr=subprocess.PIPE, text=True, env=env, preexec_fn=interruptible_child
    )
    try:
        line, deadline = "", time.monotonic() + 120
        while "serving" not in line and time.monotonic() < deadline and proc.poll() is None:
            line = proc.stderr.readline() if proc.stderr else ""
        assert "serving modaverse on http://127.0.0.1:" in line, line
        base = line.split(" on ")[1].split()[0]
        client = OpenAI(base_url=base, api_key="sesame", max_retries=0, timeout=60)
        done = client.chat.completions.create(model="modaverse", messages=[{"role": "user", "content": "a kite"}])
        ext = done.choices[0].message.model_extra["modaverse"]
        assert done.choices[0].message.content.startswith("A kite.") and len(ext["artifacts"]) == 1
        assert list((tmp_path / "o").rglob(ext["artifacts"][0]["filename"]))
        proc.send_signal(signal.SIGINT)
        code = proc.wait(30)
        rest = proc.stderr.read() if proc.stderr else ""
        assert code == 130, rest  # the CLI's exit code for Ctrl-C, after a graceful shutdown
        assert "Traceback" not in rest, rest
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)


def test_serve_ui_mounts_the_chat_page_beside_the_api(tmp_path: Path) -> None:
    import httpx

    exe = Path(sys.executable).with_name("modaverse")
    env = {**os.environ, "MODAVERSE_LOAD_PLUGINS": "echo", "MODAVERSE_ZOO_CONFIG": str(tmp_path / "z.toml")}
    args = [str(exe), "serve", "--port", "0", "--ui", "--meta-response", json.dumps(PLAN), "-o", str(tmp_path / "o")]
    proc = subprocess.Popen(
        [*args, "--log-level", "warning"], stderr=subprocess.PIPE, text=True, env=env, preexec_fn=interruptible_child
    )
    try:
        lines, deadline = [], time.monotonic() + 180
        while not any("chat page on" in x for x in lines) and time.monotonic() < deadline and proc.poll() is None:
            lines.append(proc.stderr.readline() if proc.stderr else "")
        page_line = next((x for x in lines if "chat page on" in x), "")
        assert page_line, "".join(lines)
        url = page_line.split(" on ")[1].split()[0]
        page = httpx.get(url, timeout=60, follow_redirects=True)
        assert page.status_code == 200 and "<html" in page.text.lower()
        models = httpx.get(url.replace("/ui/", "/v1/models"), timeout=60)
        assert models.status_code == 200 and models.json()["data"][0]["id"] == "modaverse"
        assert not list(Path(tmp_path).glob("gradio*"))  # Gradio's files stay under the output dir
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
