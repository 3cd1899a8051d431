"""The built-in default model on this CPU: `modaverse run` latency and meta-response decode speed.

Prints, measured in this run:
* cold `modaverse run` (a fresh process: load + answer + generate files) and warm (model already loaded);
* decode tokens/s of a constrained meta-response, fp32 and bf16, against the memory-bandwidth bound
  (bandwidth measured here with torch.mv; bytes read per token = every weight, since Gemma's output
  layer reads the whole tied 262k-row embedding table);
* the ratio to llama.cpp's 45.8 tok/s on the same model (Q4_K_M, 2 threads; ../shared/FACTS.md — llama.cpp
  is not rebuilt here, so that figure is quoted, not re-measured).

    python benchmarks/bench_default_model.py [--threads 2]
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

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_decode import _Clock, bandwidth

LLAMA_CPP_TOK_S = 45.8
INSTRUCTIONS = [
    "Draw a lighthouse on a cliff at sunset.",
    "Say good morning to everyone.",
    "Make the sound of rain on a tin roof.",
    "What is the capital of France?",
]


def cold_run(threads: int) -> float:
    out = tempfile.mkdtemp()
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    t0 = time.perf_counter()
    res = subprocess.run(
        [sys.executable, "-m", "modaverse_agent.cli", "run", INSTRUCTIONS[0], "-o", out, "--json"],
        capture_output=True,
        text=True,
        env=env,
    )
    wall = time.perf_counter() - t0
    if res.returncode not in (0, 1):
        raise SystemExit(f"modaverse run failed: {res.stderr[-800:]}")
    return wall


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--tokens", type=int, default=48)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    from modaverse_agent.agent import LLMRequest, ModaVerseAgent
    from modaverse_agent.default_model import load_default_model
    from modaverse_agent.zoo import Zoo

    print(f"cold `modaverse run` (new process, model load included): {cold_run(a.threads):.1f} s")
    t0 = time.perf_counter()
    model = load_default_model(log=lambda m: None)
    print(f"model load in-process: {time.perf_counter() - t0:.1f} s")
    agent = ModaVerseAgent(model, Zoo.from_plugins(), output_dir=tempfile.mkdtemp())
    warm = []
    for text in INSTRUCTIONS:
        t0 = time.perf_counter()
        r = agent.run(text)
        warm.append(time.perf_counter() - t0)
        print(f"  warm run {warm[-1]:.1f} s: {text!r} -> {r.meta_response.to_json() if r.meta_response else r.errors}")
    print(f"warm `modaverse run` median: {statistics.median(warm):.1f} s (includes the generators)")

    zoo = agent.zoo
    request = LLMRequest(INSTRUCTIONS[0], [], zoo.schema(), zoo.task_specs())
    prompt = model.prompter.ids(request.instruction, [], request.tasks)
    params = sum(p.numel() for p in model.llm.parameters())
    big = torch.randn(4096, 8192)
    bw = bandwidth(big, torch.randn(8192))
    rows = []
    for dtype in ("float32", "bfloat16"):
        model.to_dtype(dtype)
        clock = _Clock()
        model.generate([prompt], schemas=request.schema, max_new_tokens=a.tokens, streamer=clock)
        tok_s = 1 / clock.per_token()
        bound = bw / (params * (4 if dtype == "float32" else 2))
        rows.append(
            {
                "dtype": dtype,
                "tok_s": round(tok_s, 2),
                "bound_tok_s": round(bound, 2),
                "of_bound": round(tok_s / bound, 3),
                "of_llama_cpp": round(tok_s / LLAMA_CPP_TOK_S, 3),
            }
        )
    print(f"bandwidth (torch.mv fp32, {a.threads} threads): {bw / 1e9:.1f} GB/s; LLM parameters: {params:,}")
    for r in rows:
        print(
            f"decode {r['dtype']:<9} {r['tok_s']:6.2f} tok/s = {r['of_bound']:.0%} of its bound "
            f"({r['bound_tok_s']:.1f} tok/s), {r['of_llama_cpp']:.0%} of llama.cpp Q4_K_M ({LLAMA_CPP_TOK_S} tok/s)"
        )
    print(json.dumps(rows))


if __name__ == "__main__":
    main()
