"""benchmarks/gpu_check.py: the real-size check runs at --small on the CPU, every section gives its figures,
a failing section does not stop the others, and the real shapes are the paper's (never shrunk)."""

from __future__ import annotations

import importlib.util
import json
import math
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("torch")
pytest.importorskip("xgrammar")

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "gpu_check.py"

#: The figures each section must produce as positive finite numbers.
REQUIRED = {
    "bandwidth": ("copy_gb_s",),
    "build": ("build_s", "llm_s", "imagebind_s", "wrap_lora_s", "llm_params_b", "imagebind_params_b"),
    "splice": ("encode_s", "encode_ms_per_item", "project_splice_s", "media_items", "prompt_tokens"),
    "decode": ("grammar_compile_s", "decode_tok_s", "gb_read_per_token", "bound_tok_s", "fraction_of_bound"),
    "train": ("first_step_s", "step_s", "loss", "tokens_per_row", "trainable_params_m"),
    "import": ("release_gb", "write_release_s", "import_s", "output_gb"),
}


def _run(tmp_path: Path, *args: str) -> tuple[subprocess.CompletedProcess[str], dict[str, Any]]:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    out = tmp_path / "figures.json"
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--small", "--device", "cpu", "--json", str(out), *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=1200,  # ~25 s of CPU; a shared machine can stretch that many times
    )
    return proc, json.loads(out.read_text(encoding="utf-8")) if out.is_file() else {}


def _number(figures: dict[str, Any], key: str) -> float:
    value = figures.get(key)
    assert isinstance(value, int | float) and not isinstance(value, bool), f"{key} = {value!r}"
    assert math.isfinite(value) and value > 0, f"{key} = {value!r}"
    return float(value)


def test_small_run_gives_every_figure(tmp_path: Path) -> None:
    proc, data = _run(tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    sections = data["sections"]
    assert list(sections) == list(REQUIRED)
    for name, keys in REQUIRED.items():
        figures = sections[name]
        assert "error" not in figures, f"{name}: {figures['error']}"
        for key in (*keys, "section_s", "peak_rss_gb"):
            _number(figures, key)
    assert sections["bandwidth"]["kind"].startswith("host memory")
    assert sections["splice"]["media_items"] == 6  # 2 requests x (image, audio, video)
    assert sections["decode"]["new_tokens"] >= 3
    assert 0 < sections["decode"]["fraction_of_bound"] < 1
    assert sections["train"]["lora_r"] == sections["import"]["lora_r"] == 4
    assert data["dtype"] == "bfloat16" and data["device"] == "cpu"
    for name in REQUIRED:  # the readable table names every section
        assert f"\n{name} " in proc.stdout


def _module() -> Any:
    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["gpu_check"] = module
    spec.loader.exec_module(module)
    return module


def test_a_failing_section_does_not_stop_the_others(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    gc = _module()
    out = tmp_path / "figures.json"
    args = ["--small", "--device", "cpu", "--json", str(out), "--sections", "splice,import"]
    assert gc.main(args) == 1  # no build section: splice has no model, import still runs
    sections = json.loads(out.read_text(encoding="utf-8"))["sections"]
    assert "no model" in sections["splice"]["error"]
    assert "error" not in sections["import"]
    _number(sections["import"], "import_s")
    captured = capsys.readouterr()
    assert "1 section(s) failed: splice" in captured.err and "FAILED: RuntimeError" in captured.out


def test_real_size_is_the_papers_and_refuses_the_cpu(capsys: pytest.CaptureFixture[str]) -> None:
    gc = _module()
    llm = gc.llama_config(gc.REAL)
    shape = (llm.hidden_size, llm.num_hidden_layers, llm.num_attention_heads, llm.intermediate_size, llm.vocab_size)
    assert shape == (4096, 32, 32, 11008, 32000)
    assert llm.num_key_value_heads == 32 and not llm.tie_word_embeddings
    assert gc.REAL.imagebind == "huge" and gc.imagebind_config(gc.REAL).out_embed_dim == 1024
    assert gc.REAL.lora_r == 32
    assert gc.main(["--device", "cpu"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--small" in err and "--force" in err
    assert gc.main(["--small", "--device", "cpu", "--sections", "nope"]) == 2
    assert "unknown ['nope']" in capsys.readouterr().err
