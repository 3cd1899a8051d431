"""The built-in default model on this CPU: `modaverse run` latency and meta-response decode speed.

Prints, measured in this run:
* cold `modaverse run` (a fresh process: load + answer + generate files) and warm (model already loaded);
* decode tokens/s of a constrained meta-response, fp32 and bf16, against the memory-bandwidth bound
  (bandwidth measured here: the better of torch.mv and torch.sum; bytes read per token = every weight,
  since Gemma's output layer reads the whole tied 262k-row embedding table);
* with llama-cpp-python installed: the same for our llama.cpp engine (the base Q4_K_M GGUF + the adapter as
  a GGUF LoRA, constrained by the same xgrammar processor), and plain llama.cpp on the same GGUF (no
  adapter, no grammar, greedy) as the reference, measured in this run in interleaved rounds (ours, then
  plain, ``--rounds`` times: a busy moment hits both alike); the best round of each and the median of the
  per-round ratios. Without llama-cpp-python the reference is FACTS.md's 45.8 tok/s (quoted, not re-measured).

Every decode is timed over ``--tokens`` tokens (a minimum length, with a budget 4x past it: near its end the
grammar closes the answer, every token masked, which a real answer's budget rarely reaches).

    python benchmarks/bench_default_model.py [--threads 2] [--rounds 5]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_decode import bandwidth
from bench_llamacpp_overhead import llama_tok_s, ours_tok_s

LLAMA_CPP_TOK_S = 45.8
INSTRUCTIONS = [
    "Draw a lighthouse on a cliff at sunset.",
    "Say good morning to everyone.",
    "Make the sound of rain on a tin roof.",
    "What is the capital of France?",
]


def cold_run(threads: int, engine: str) -> float:
    out = tempfile.mkdtemp()
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    t0 = time.perf_counter()
    res = subprocess.run(
        [sys.executable, "-m", "modaverse_agent.cli", "run", INSTRUCTIONS[0], "-o", out, "--json", "--engine", engine],
        capture_output=True,
        text=True,
        env=env,
    )
    wall = time.perf_counter() - t0
    if res.returncode not in (0, 1):
        raise SystemExit(f"modaverse run failed: {res.stderr[-800:]}")
    return wall


def plain_llama_cpp(gguf: Path, threads: int) -> Any:
    """Plain llama.cpp on ``gguf`` (no adapter, no grammar): the reference."""
    from llama_cpp import Llama

    from modaverse_agent.model.llamacpp import captured_stderr

    with captured_stderr():
        return Llama(model_path=str(gguf), n_ctx=4096, n_threads=threads, verbose=False)


def warm_runs(model: Any) -> float:
    from modaverse_agent.agent import ModaVerseAgent
    from modaverse_agent.zoo import Zoo

    agent = ModaVerseAgent(model, Zoo.from_plugins(), output_dir=tempfile.mkdtemp())
    warm = []
    for text in INSTRUCTIONS:
        t0 = time.perf_counter()
        r = agent.run(text)
        warm.append(time.perf_counter() - t0)
        print(f"  warm run {warm[-1]:.1f} s: {text!r} -> {r.meta_response.to_json() if r.meta_response else r.errors}")
    return statistics.median(warm)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--tokens", type=int, default=48)
    ap.add_argument("--rounds", type=int, default=5, help="interleaved rounds: our llama.cpp engine, plain llama.cpp")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    from modaverse_agent.agent import LLMRequest
    from modaverse_agent.default_model import ensure_gguf, load_default_model
    from modaverse_agent.model.llamacpp import llama_cpp_available
    from modaverse_agent.zoo import Zoo

    engines = ["torch", "llama.cpp"] if llama_cpp_available() else ["torch"]
    for engine in engines:
        print(
            f"cold `modaverse run --engine {engine}` (new process, model load included): "
            f"{cold_run(a.threads, engine):.1f} s"
        )
    zoo = Zoo.from_plugins()
    request = LLMRequest(INSTRUCTIONS[0], [], zoo.schema(), zoo.task_specs())
    big = torch.randn(4096, 8192)
    bw = bandwidth(big, torch.randn(8192))
    rows, reference = [], None
    for engine in engines:
        t0 = time.perf_counter()
        model = load_default_model(log=lambda m: None, engine=engine)
        print(f"[{engine}] model load in-process: {time.perf_counter() - t0:.1f} s")
        print(f"[{engine}] warm `modaverse run` median: {warm_runs(model):.1f} s (includes the generators)")
        prompt = model.prompter.ids(request.instruction, [], request.tasks)
        if engine == "torch":
            params = sum(p.numel() for p in model.llm.parameters())
            for dtype in ("float32", "bfloat16"):
                model.to_dtype(dtype)
                rows.append(
                    (
                        "torch " + dtype,
                        ours_tok_s(model, prompt, request.schema, a.tokens),
                        params * (4 if dtype == "float32" else 2),
                    )
                )
        else:
            gguf = ensure_gguf()
            size = gguf.stat().st_size
            plain = plain_llama_cpp(gguf, a.threads)
            ours, theirs = [], []
            for _ in range(a.rounds):
                ours.append(ours_tok_s(model, prompt, request.schema, a.tokens))
                theirs.append(llama_tok_s(plain, prompt, a.tokens))
            ratios = sorted(o / t for o, t in zip(ours, theirs, strict=True))
            print(
                f"[llama.cpp] {a.rounds} interleaved rounds, ours / plain per round: "
                + ", ".join(f"{o:.1f}/{t:.1f}" for o, t in zip(ours, theirs, strict=True))
                + f"; median ratio {statistics.median(ratios):.0%} (range {ratios[0]:.0%}-{ratios[-1]:.0%})"
            )
            reference = max(theirs)
            rows.append(("llama.cpp engine", max(ours), size))
            rows.append(("plain llama.cpp", reference, size))
            del plain
        del model
    ref = reference or LLAMA_CPP_TOK_S
    source = "measured in this run" if reference else "quoted from FACTS.md"
    print(
        f"bandwidth (torch.mv/sum fp32, {a.threads} threads): {bw / 1e9:.1f} GB/s; "
        f"reference llama.cpp {ref:.1f} tok/s ({source})"
    )
    out = []
    for name, tok_s, nbytes in rows:
        bound = bw / nbytes
        out.append(
            {
                "engine": name,
                "tok_s": round(tok_s, 2),
                "of_bound": round(tok_s / bound, 3),
                "of_llama_cpp": round(tok_s / ref, 3),
            }
        )
        print(
            f"decode {name:<17} {tok_s:6.2f} tok/s = {tok_s / bound:.0%} of its bound ({bound:.1f} tok/s), "
            f"{tok_s / ref:.0%} of plain llama.cpp"
        )
    print(json.dumps(out))


if __name__ == "__main__":
    main()
