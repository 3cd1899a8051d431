"""Where the llama.cpp engine's decode time goes, against plain llama.cpp on the same GGUF, in one run.

Rows (greedy, the same prompt, median time per token after the first; interleaved rounds, best round):
* plain llama.cpp: the base GGUF, no adapter, no grammar (the reference);
* llama.cpp + adapter: the same with the default model's LoRA applied at runtime (llama.cpp's own loop);
* our engine, unconstrained: our token loop (logits into torch, argmax, stop checks) with the adapter;
* our engine, constrained: the same plus the xgrammar mask (what `modaverse run` does), the next mask
  filled on a worker while llama.cpp decodes the token;
* constrained, grammar after decode: the same with the grammar's work after each decode (one thread).
Then the constrained loop's time split by part (llama.cpp decode, logits, grammar, choice); the worker's
share overlaps the decode, so the parts add up to more than the wall time.

    python benchmarks/bench_llamacpp_overhead.py [--threads 2] [--tokens 48] [--rounds 3]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_decode import _Clock

INSTRUCTION = "Draw a lighthouse on a cliff at sunset, then tell me a fun fact about lighthouses."


def llama_tok_s(llm: Any, prompt: list[int], tokens: int) -> float:
    """llama-cpp-python's own greedy loop: tok/s from the median gap between tokens."""
    stamps = []
    for _ in llm.generate(prompt, top_k=1, temp=0.0, reset=True):
        stamps.append(time.perf_counter())
        if len(stamps) >= tokens:
            break
    return 1 / statistics.median(b - a for a, b in zip(stamps[1:], stamps[2:], strict=False))  # noqa: RUF007


def ours_tok_s(model: Any, prompt: list[int], schema: Any, tokens: int) -> float:
    clock = _Clock()
    # a budget well past `tokens`: near its end the grammar closes the answer (every token masked), which a
    # real answer's budget rarely reaches
    model.generate([prompt], schemas=schema, max_new_tokens=4 * tokens, min_new_tokens=tokens, streamer=clock)
    if len(clock.stamps) < 8:
        raise SystemExit(f"only {len(clock.stamps)} tokens decoded: too few to time; give a longer --tokens")
    return 1 / clock.per_token()


class _Split:
    """Wraps engine/processor methods to add up the time spent in each."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = defaultdict(float)

    def wrap(self, obj: Any, name: str, label: str) -> None:
        inner = getattr(obj, name)

        def timed(*args: Any, **kwargs: Any) -> Any:
            t0 = time.perf_counter()
            try:
                return inner(*args, **kwargs)
            finally:
                self.seconds[label] += time.perf_counter() - t0

        setattr(obj, name, timed)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--tokens", type=int, default=48)
    ap.add_argument("--rounds", type=int, default=3)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    from llama_cpp import Llama

    from modaverse_agent.default_model import ensure_gguf, load_default_model
    from modaverse_agent.model import constrained
    from modaverse_agent.model.llamacpp import captured_stderr
    from modaverse_agent.zoo import Zoo

    zoo = Zoo.from_plugins()
    model = load_default_model(log=lambda m: None, engine="llama.cpp")
    prompt = model.prompter.ids(INSTRUCTION, [], zoo.task_specs())
    gguf = ensure_gguf()
    adapter = model.llama.lora_path  # the default model's LoRA as a llama.cpp adapter GGUF
    with captured_stderr():
        plain = Llama(model_path=str(gguf), n_ctx=4096, n_threads=a.threads, verbose=False)
        with_lora = (
            Llama(model_path=str(gguf), lora_path=str(adapter), n_ctx=4096, n_threads=a.threads, verbose=False)
            if adapter
            else None
        )
    rows: dict[str, list[float]] = defaultdict(list)
    for _ in range(a.rounds):
        rows["plain llama.cpp"].append(llama_tok_s(plain, prompt, a.tokens))
        if with_lora is not None:
            rows["llama.cpp + adapter"].append(llama_tok_s(with_lora, prompt, a.tokens))
        rows["our engine, unconstrained"].append(ours_tok_s(model, prompt, None, a.tokens))
        rows["our engine, constrained"].append(ours_tok_s(model, prompt, zoo.schema(), a.tokens))
        model.overlap_grammar = False
        rows["constrained, grammar after decode"].append(ours_tok_s(model, prompt, zoo.schema(), a.tokens))
        model.overlap_grammar = True
    ref = max(rows["plain llama.cpp"])
    print(f"{a.threads} threads, {a.tokens} tokens, best of {a.rounds} rounds; prompt {len(prompt)} tokens")
    for name, values in rows.items():
        best = max(values)
        print(f"  {name:<28} {best:6.1f} tok/s  {best / ref:5.0%} of plain llama.cpp  {1000 / best:5.2f} ms/token")

    split = _Split()
    split.wrap(model, "_decode_batch", "llama.cpp decode (adapter applied)")
    split.wrap(model, "_logits", "logits into torch")
    split.wrap(constrained.MetaResponseLogitsProcessor, "pick_greedy", "grammar: check the best token (or mask)")
    split.wrap(constrained.MetaResponseLogitsProcessor, "advance", "grammar: accept + next mask (overlaps decode)")
    t0 = time.perf_counter()
    clock = _Clock()
    model.generate([prompt], schemas=zoo.schema(), max_new_tokens=4 * a.tokens, min_new_tokens=a.tokens, streamer=clock)
    total = time.perf_counter() - t0
    n = len(clock.stamps) - 1
    print(f"constrained decode of {n} tokens, {total:.2f} s in all (prefill included):")
    for label, seconds in sorted(split.seconds.items(), key=lambda kv: -kv[1]):
        print(f"  {label:<36} {seconds:6.3f} s  {1000 * seconds / max(n, 1):6.2f} ms/token")


if __name__ == "__main__":
    main()
