"""Decode speed of meta-response generation on a ~270M random Llama wrapped as a ModaVerseModel.

Ratios are measured in one run, interleaved over rounds (the machine is shared, so each round pairs
its own bandwidth probe with its own decode runs; the reported figure is the median over rounds):

1. decode tok/s vs the memory-bandwidth bound: bound = read bandwidth (the better of a large fp32
   ``torch.mv`` and ``torch.sum`` over the same matrix, best of 3) / bytes read per new token
   (every weight but the input embedding table). Per-token time
   is the median gap between consecutive new tokens (a streamer timestamps each), so prefill is
   excluded. Goal >= 75%. Also shown: the same against a sweep of ``torch.mv`` over the model's own
   weight matrices (what the GEMV kernels reach on these shapes), and unmerged LoRA.
2. constrained (xgrammar) vs unconstrained decoding, per token. Goal <= 1.05.
3. media (4 items: encoder features -> projector -> splice) vs a text-only prompt of the same length,
   whole ``generate`` time for the same number of new tokens. Goal <= 1.05.

With llama-cpp-python installed, the same three figures for the llama.cpp engine
(:class:`~modaverse_agent.model.llamacpp.LlamaCppModel`): the random Llama written as an F32 GGUF (same
bytes per token as torch fp32), the LoRA as a GGUF adapter, media fed as embedding rows.

    OMP_NUM_THREADS=2 python benchmarks/bench_decode.py [--rounds 3] [--tokens 48] [--threads 2]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from modaverse_agent.meta_response import TaskSpec, build_schema
from modaverse_agent.model.gguf_export import write_llama_gguf
from modaverse_agent.model.llamacpp import LlamaCppModel, llama_cpp_available
from modaverse_agent.model.modeling import ModaVerseModel
from modaverse_agent.model.tiny import HashEncoder, tiny_config, tiny_tokenizer

SPECS = [
    TaskSpec(
        "text-to-image",
        "Draws pictures.",
        "image",
        {"type": "object", "properties": {"seed": {"type": "integer"}}, "additionalProperties": False},
    ),
    TaskSpec("text-to-audio", "Makes sounds.", "audio"),
    TaskSpec("image-editing", "Edits a picture.", "image", input_modalities=("image",)),
]


class _Clock:
    """A transformers streamer that timestamps every new token."""

    def __init__(self) -> None:
        self.stamps: list[float] = []

    def put(self, value: Any) -> None:
        if value.numel():
            self.stamps.append(time.perf_counter())

    def end(self) -> None:
        pass

    def per_token(self) -> float:
        gaps = [b - a for a, b in zip(self.stamps[1:], self.stamps[2:], strict=False)]
        return statistics.median(gaps)


def bandwidth(matrix: torch.Tensor, vector: torch.Tensor) -> float:
    """Read bytes/s of this machine now: the better of a large matrix-vector product and a plain sum over
    the same matrix (best of 3 each; the sum streams faster on some CPUs, so mv alone understates the bound)."""
    nbytes = matrix.numel() * matrix.element_size()
    mv = min(_timed(lambda: torch.mv(matrix, vector)) for _ in range(3))
    total = min(_timed(lambda: matrix.sum()) for _ in range(3))
    return nbytes / min(mv, total)


def _timed(fn: Any) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def build(args: argparse.Namespace, gguf: Path | None = None) -> ModaVerseModel:
    from transformers import LlamaConfig, LlamaForCausalLM

    tok = tiny_tokenizer()
    cfg = LlamaConfig(
        vocab_size=32000,
        hidden_size=1024,
        intermediate_size=2816,
        num_hidden_layers=16,
        num_attention_heads=16,
        num_key_value_heads=16,
        max_position_embeddings=2048,
        tie_word_embeddings=False,
        pad_token_id=tok.pad_token_id,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
    )
    torch.manual_seed(0)
    llm = LlamaForCausalLM(cfg).eval()
    if gguf is not None:
        write_llama_gguf(llm, tok, gguf)
    config = tiny_config("random-llama-270m", encoder_dim=1024, lora_r=16, lora_alpha=32, closing_reserve=16)
    return ModaVerseModel.from_config(
        config, llm=llm, tokenizer=tok, encoder=HashEncoder(1024), init_lora_weights=False
    )


def prompts(model: ModaVerseModel, length: int) -> tuple[list[int], list[int], torch.Tensor, list[str]]:
    """A media prompt (4 items) and a text-only prompt of the same length, plus the items' features."""
    text = model.tokenizer("draw a cat " * length, add_special_tokens=False).input_ids[: length - 12]
    start, end = model.token_ids[model.config.media_start_token], model.token_ids[model.config.media_end_token]
    media = list(text)
    for _ in range(4):
        media += [start, model.placeholder_id, end]
    plain = list(text) + text[:12]
    feats = torch.randn(4, 1024, generator=torch.Generator().manual_seed(0))
    return media, plain, feats, ["image", "audio", "video", "image"]


def decode_per_token(model: Any, prompt: list[int], n: int, schema: dict[str, Any] | None) -> float:
    clock = _Clock()
    fixed = None if schema is not None else n
    model.generate([prompt], schemas=schema, max_new_tokens=n, min_new_tokens=fixed, streamer=clock)
    return clock.per_token()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--tokens", type=int, default=48)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    work = Path(tempfile.mkdtemp())
    lcpp = llama_cpp_available()
    model = build(args, work / "base.gguf" if lcpp else None)
    llm = model.llm
    weights = [p for n, p in llm.named_parameters() if "embed_tokens" not in n]
    per_token_bytes = sum(p.numel() * p.element_size() for p in weights)
    params = sum(p.numel() for p in llm.parameters())
    print(f"model: {params / 1e6:.0f}M parameters (fp32), {per_token_bytes / 1e6:.0f} MB read per new token")
    print(
        f"built in {time.perf_counter() - t0:.1f} s; threads={args.threads}, rounds={args.rounds}, tokens={args.tokens}"
    )
    big = torch.randn(8192, 8192)
    vec = torch.randn(8192)
    media, plain, feats, mods = prompts(model, 64)
    schema = build_schema(SPECS, media_ids=["image_1"])
    n = args.tokens

    with torch.inference_mode():
        model.generate([plain], max_new_tokens=4)  # warm up
        unmerged = []
        for _ in range(args.rounds):
            bound = bandwidth(big, vec) / per_token_bytes
            unmerged.append((1 / decode_per_token(model, plain, n, None)) / bound)
        lc_rows = (
            measure_llama_cpp(model, work, args, big, vec, per_token_bytes, plain, media, feats, mods, schema)
            if lcpp
            else []
        )
        model.merge_and_unload()
        mats = [p for n_, p in model.llm.named_parameters() if p.dim() == 2 and "embed_tokens" not in n_]
        rows: list[dict[str, float]] = []
        for r in range(args.rounds):
            bw = bandwidth(big, vec)
            bound = bw / per_token_bytes
            sweep = 1 / min(_timed(lambda: [torch.mv(m, torch.ones(m.shape[1])) for m in mats]) for _ in range(2))
            free = decode_per_token(model, plain, n, None)
            constrained = decode_per_token(model, plain, n, schema)
            t_text = min(_timed(lambda: model.generate([plain], max_new_tokens=n, min_new_tokens=n)) for _ in range(2))
            t_media = min(
                _timed(lambda: model.generate([media], feats, mods, max_new_tokens=n, min_new_tokens=n))
                for _ in range(2)
            )
            row = {
                "bandwidth_GBps": bw / 1e9,
                "bound_tok_s": bound,
                "gemv_sweep_tok_s": sweep,
                "decode_tok_s": 1 / free,
                "decode_vs_bound": (1 / free) / bound,
                "decode_vs_sweep": (1 / free) / sweep,
                "constrained_vs_unconstrained": constrained / free,
                "media_vs_text": t_media / t_text,
            }
            rows.append(row)
            print(f"round {r + 1}: " + ", ".join(f"{k}={v:.3f}" for k, v in row.items()))
    summary = {k: statistics.median(row[k] for row in rows) for k in rows[0]}
    summary["decode_vs_bound_unmerged_lora"] = statistics.median(unmerged)
    print("\nmedian over rounds:")
    print(f"  bandwidth {summary['bandwidth_GBps']:.1f} GB/s -> bound {summary['bound_tok_s']:.1f} tok/s")
    print(
        f"  decode {summary['decode_tok_s']:.2f} tok/s = {summary['decode_vs_bound']:.0%} of the bound (goal >= 75%); "
        f"{summary['decode_vs_sweep']:.0%} of the GEMV sweep over its own weights ({summary['gemv_sweep_tok_s']:.1f} "
        f"tok/s); unmerged LoRA {summary['decode_vs_bound_unmerged_lora']:.0%} of the bound"
    )
    print(f"  constrained / unconstrained per token: {summary['constrained_vs_unconstrained']:.3f} (goal <= 1.05)")
    print(f"  media splice + projector / text-only:  {summary['media_vs_text']:.3f} (goal <= 1.05)")
    if lc_rows:
        lc = {k: statistics.median(row[k] for row in lc_rows) for k in lc_rows[0]}
        print("  llama.cpp engine (F32 GGUF + LoRA GGUF, same model):")
        print(f"    decode {lc['decode_tok_s']:.2f} tok/s = {lc['decode_vs_bound']:.0%} of the bound (goal >= 75%)")
        print(f"    constrained / unconstrained per token: {lc['constrained_vs_unconstrained']:.3f}")
        print(f"    media splice + projector / text-only:  {lc['media_vs_text']:.3f}")
        summary |= {f"llama_cpp_{k}": v for k, v in lc.items()}
    print(json.dumps({k: round(v, 4) for k, v in summary.items()}))


def measure_llama_cpp(
    model: ModaVerseModel,
    work: Path,
    args: argparse.Namespace,
    big: torch.Tensor,
    vec: torch.Tensor,
    per_token_bytes: int,
    plain: list[int],
    media: list[int],
    feats: torch.Tensor,
    mods: list[str],
    schema: dict[str, Any],
) -> list[dict[str, float]]:
    """The three figures for the llama.cpp engine on the same weights (saved, then loaded on llama.cpp)."""
    model.save_pretrained(work / "model")
    lc = LlamaCppModel.from_pretrained(work / "model", gguf=work / "base.gguf", n_threads=args.threads, cache=work)
    n = args.tokens
    lc.generate([plain], max_new_tokens=4)  # warm up
    rows = []
    for r in range(args.rounds):
        bound = bandwidth(big, vec) / per_token_bytes
        free = decode_per_token(lc, plain, n, None)
        constrained = decode_per_token(lc, plain, n, schema)
        t_text = min(_timed(lambda: lc.generate([plain], max_new_tokens=n, min_new_tokens=n)) for _ in range(2))
        t_media = min(
            _timed(lambda: lc.generate([media], feats, mods, max_new_tokens=n, min_new_tokens=n)) for _ in range(2)
        )
        row = {
            "decode_tok_s": 1 / free,
            "decode_vs_bound": (1 / free) / bound,
            "constrained_vs_unconstrained": constrained / free,
            "media_vs_text": t_media / t_text,
        }
        rows.append(row)
        print(f"llama.cpp round {r + 1}: " + ", ".join(f"{k}={v:.3f}" for k, v in row.items()))
    return rows


if __name__ == "__main__":
    main()
