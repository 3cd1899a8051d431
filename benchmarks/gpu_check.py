"""The real-size check: ModaVerse at the paper's shapes (random weights) on one GPU, section by section.

Builds a Vicuna-7B-shaped Llama (hidden 4096, 32 layers, 32 heads, MLP 11008, vocabulary 32000) in bfloat16,
ImageBind-huge (vision, text and audio towers) and the three projectors from configs, wraps them as the
project's ModaVerseModel (media tokens, trained rows, LoRA r=32) and measures:

* build: load/build time of each part and the peak memory;
* bandwidth: a large tensor copy on the device (device-to-device on a GPU, host memory on the CPU);
  bandwidth = (bytes read + bytes written) / s;
* splice: a batch of requests each holding an image, a sound and a video (the test fixtures): decoding +
  preprocessing + ImageBind (``model.prepare``), then projection + splice into the token embeddings;
* decode: schema-constrained meta-response decoding through the torch engine (xgrammar, batch 1), tokens/s
  between the first and last new token, against the bandwidth bound = bandwidth / bytes read per new token
  (every LLM weight but the input table, LoRA included, plus the KV cache at the mean context);
* train: the project's Trainer (TargetLoss, Collator over a feature cache): two steps of forward + backward
  + AdamW with LoRA r=32, the second step's time and the peak memory;
* import: ``modaverse import-official`` on a synthetic release checkpoint of the real size
  (:mod:`modaverse_agent.model.synthetic_release`: the release's names and shapes, random values).

Each section is timed on its own; one that fails prints its error and the others still run (the exit
status is then 1). The tokenizer is synthetic (byte-level BPE of exactly 32000 tokens learnt on the
project's prompts), so prompt lengths are close to, not equal to, Vicuna's; the table shows them.

    python benchmarks/gpu_check.py [--json gpu_check.json]            # real size, on the GPU
    OMP_NUM_THREADS=1 python benchmarks/gpu_check.py --small           # the same code, tiny, on the CPU
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import resource
import statistics
import sys
import tempfile
import time
import traceback
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

MEDIA = Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "imagebind" / "media"
FILES = {"image": "coffee.jpg", "audio": "speech_16k.wav", "video": "testsrc_320x240_10fps_3s.mp4"}
MEDIA_IDS = ("image_1", "audio_1", "video_1")
TOWERS = ("vision", "text", "audio")
SECTIONS = ("bandwidth", "build", "splice", "decode", "train", "import")


@dataclass(frozen=True)
class Sizes:
    """The shapes of one run; :data:`REAL` is never shrunk (only ``--small`` picks :data:`SMALL`)."""

    name: str
    hidden: int
    layers: int
    heads: int
    intermediate: int
    vocab: int
    imagebind: str
    lora_r: int
    copy_mib: int
    media_batch: int
    decode_tokens: int
    train_batch: int


REAL = Sizes("real: Vicuna-7B + ImageBind-huge", 4096, 32, 32, 11008, 32000, "huge", 32, 4096, 4, 256, 4)
SMALL = Sizes("small: tiny Llama + tiny ImageBind", 64, 2, 4, 128, 512, "tiny", 4, 64, 2, 96, 2)


def llama_config(s: Sizes) -> Any:
    """The base LLM's config (Vicuna-7b-v0's at real size: Llama-1, 2048 context, untied output layer)."""
    from transformers import LlamaConfig

    return LlamaConfig(
        vocab_size=s.vocab,
        hidden_size=s.hidden,
        intermediate_size=s.intermediate,
        num_hidden_layers=s.layers,
        num_attention_heads=s.heads,
        num_key_value_heads=s.heads,
        max_position_embeddings=2048,
        rms_norm_eps=1e-6,
        tie_word_embeddings=False,
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=0,
    )


def imagebind_config(s: Sizes) -> Any:
    """ImageBind's preset (huge / tiny) with the towers the project loads."""
    from modaverse_agent.encoders.imagebind import ImageBindConfig

    return ImageBindConfig.preset(s.imagebind, modalities=TOWERS)


# -- measuring -------------------------------------------------------------------------------------------
def sync(device: str) -> None:
    """Wait for the device's queued work (timings on a GPU are otherwise launch times)."""
    if device.startswith("cuda"):
        torch.cuda.synchronize(device)


def reset_peak(device: str) -> None:
    """Start a section's peak-memory count (GPU only; the CPU's peak RSS is the process's so far)."""
    if device.startswith("cuda"):
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def peak_memory(device: str) -> tuple[str, float]:
    """``(figure name, GB)``: the section's peak GPU memory, or the process's peak RSS so far on the CPU."""
    if device.startswith("cuda"):
        return "peak_gpu_memory_gb", torch.cuda.max_memory_allocated(device) / 1e9
    scale = 1 if sys.platform == "darwin" else 1024  # ru_maxrss: bytes on macOS, KiB on Linux
    return "peak_rss_gb", resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale / 1e9


class Clock:
    """A transformers streamer that timestamps every new token (the prompt, empty with embeddings, is skipped)."""

    def __init__(self) -> None:
        self.stamps: list[float] = []

    def put(self, value: torch.Tensor) -> None:
        if value.numel():
            self.stamps.append(time.perf_counter())

    def end(self) -> None:
        pass


class Report:
    """Figures per section, printed as they come, written to ``--json`` after every section."""

    def __init__(self, device: str, sizes: Sizes, json_path: Path | None, dtype: torch.dtype) -> None:
        gpu = torch.cuda.get_device_name(device) if device.startswith("cuda") else None
        self.data: dict[str, Any] = {
            "size": sizes.name,
            "device": device,
            "gpu": gpu,
            "dtype": str(dtype).removeprefix("torch."),
            "torch": torch.__version__,
            "threads": torch.get_num_threads(),
            "sections": {},
        }
        self.device, self.json_path = device, json_path

    @contextlib.contextmanager
    def section(self, name: str) -> Iterator[dict[str, Any]]:
        """Run one section: its figures dict is filled by the block; an error is recorded, never raised."""
        figures: dict[str, Any] = {}
        reset_peak(self.device)
        t0 = time.perf_counter()
        print(f"[{name}] ...", flush=True)
        try:
            yield figures
        except (Exception, SystemExit) as e:  # a failed section must not stop the others
            traceback.print_exc()
            figures["error"] = f"{type(e).__name__}: {e}".strip()
        if "error" not in figures:
            sync(self.device)
        figures["section_s"] = time.perf_counter() - t0
        key, value = peak_memory(self.device)
        figures.setdefault(key, value)
        self.data["sections"][name] = figures
        print(f"[{name}] {'FAILED: ' + figures['error'] if 'error' in figures else 'done'}", flush=True)
        self.write()

    def get(self, section: str, key: str) -> Any:
        """A figure of an earlier section (None when it failed or did not run)."""
        return self.data["sections"].get(section, {}).get(key)

    def write(self) -> None:
        if self.json_path is not None:
            self.json_path.write_text(json.dumps(self.data, indent=1, default=str) + "\n", encoding="utf-8")

    @property
    def failed(self) -> list[str]:
        return [n for n, f in self.data["sections"].items() if "error" in f]

    def table(self) -> str:
        """The figures as a readable table."""
        d = self.data
        lines = [
            f"ModaVerse real-size check - {d['size']} - {d['gpu'] or d['device']} - {d['dtype']} - torch {d['torch']}"
        ]
        lines.append(f"{'section':<10} {'figure':<28} {'value':>14}")
        lines.append("-" * 54)
        for name, figures in d["sections"].items():
            for key, value in figures.items():
                shown = f"{value:>14.4g}" if isinstance(value, float) else f"{value!s:>14}"
                if key == "error":
                    shown = f"  {value}"
                lines.append(f"{name:<10} {key:<28} {shown}")
        return "\n".join(lines)


# -- sections --------------------------------------------------------------------------------------------
def copy_bandwidth(device: str, mib: int, repeats: int = 5) -> float:
    """(bytes read + bytes written) per second of a ``mib``-MiB tensor copy on ``device``, best of ``repeats``."""
    src = torch.empty(mib * 2**20, dtype=torch.uint8, device=device).fill_(1)
    dst = torch.empty_like(src)
    dst.copy_(src)
    sync(device)
    best = math.inf
    for _ in range(repeats):
        t0 = time.perf_counter()
        dst.copy_(src)
        sync(device)
        best = min(best, time.perf_counter() - t0)
    return 2 * src.numel() / best


def build_model(s: Sizes, device: str, dtype: torch.dtype, fig: dict[str, Any]) -> Any:
    """The ModaVerseModel of ``s``: random LLM and ImageBind made on ``device`` in ``dtype``, then wrapped."""
    from transformers import AutoModelForCausalLM, LlamaForCausalLM  # noqa: F401 - imported before the clock starts

    from modaverse_agent.encoders.imagebind import ImageBindEncoder
    from modaverse_agent.model.config import ModaVerseConfig
    from modaverse_agent.model.modeling import ModaVerseModel
    from modaverse_agent.model.synthetic_release import sized_tokenizer

    t0 = time.perf_counter()
    tokenizer = sized_tokenizer(s.vocab)
    t1 = time.perf_counter()
    with torch.device(device):
        llm = AutoModelForCausalLM.from_config(llama_config(s), dtype=dtype).eval()
    sync(device)
    t2 = time.perf_counter()
    with torch.device(device):
        encoder = ImageBindEncoder.from_config(imagebind_config(s), device=device, dtype=dtype)
    sync(device)
    t3 = time.perf_counter()
    config = ModaVerseConfig(
        llm=f"random {s.name}",
        dtype=str(dtype).removeprefix("torch."),
        encoder_dim=encoder.embed_dim,
        encoder_config=s.imagebind,
        lora_r=s.lora_r,
        max_new_tokens=s.decode_tokens,
    )
    model = ModaVerseModel.from_config(config, llm=llm, tokenizer=tokenizer, encoder=encoder).eval()
    sync(device)
    t4 = time.perf_counter()
    fig |= {
        "tokenizer_s": t1 - t0,
        "llm_s": t2 - t1,
        "imagebind_s": t3 - t2,
        "wrap_lora_s": t4 - t3,
        "build_s": t4 - t0,
        "llm_params_b": sum(p.numel() for p in model.llm.parameters()) / 1e9,
        "imagebind_params_b": sum(p.numel() for p in encoder.model.parameters()) / 1e9,
        "trainable_params_m": sum(p.numel() for p in model.trainable_parameters()) / 1e6,
    }
    return model


def media_requests(n: int) -> list[Any]:
    """``n`` requests, each with the fixture image, sound and video, under the standard tasks' schema."""
    from modaverse_agent.llm_io import LLMRequest
    from modaverse_agent.media import load_media
    from modaverse_agent.training.tasks import STANDARD_TASKS, standard_schema

    items = [(mid, load_media(MEDIA / FILES[m])) for mid, m in zip(MEDIA_IDS, FILES, strict=True)]
    schema = standard_schema(list(MEDIA_IDS))
    asks = ["Make a song that fits this photo, sound and clip.", "Describe what you see and hear, then draw it."]
    return [LLMRequest(f"{asks[i % len(asks)]} ({i})", items, schema, list(STANDARD_TASKS)) for i in range(n)]


def left_padded(prompts: list[list[int]], pad: int) -> torch.Tensor:
    """Prompts as one left-padded id tensor (as the engine batches them)."""
    width = max(len(p) for p in prompts)
    return torch.tensor([[pad] * (width - len(p)) + p for p in prompts], dtype=torch.long)


def splice(model: Any, s: Sizes, device: str, fig: dict[str, Any]) -> None:
    """Encode a batch of image+audio+video requests (``model.prepare``) and splice them into the embeddings."""
    requests = media_requests(s.media_batch)
    model.prepare(requests[0])  # warm-up: first kernels, decoder start-up
    sync(device)
    t0 = time.perf_counter()
    prepared = [model.prepare(r) for r in requests]
    sync(device)
    t1 = time.perf_counter()
    ids = left_padded([p for p, _, _ in prepared], model.tokenizer.pad_token_id).to(device)
    feats = torch.cat([f.to(device) for _, f, _ in prepared])
    modalities = [m for _, _, mods in prepared for m in mods]
    with torch.no_grad():
        embeds, _ = model.embed_inputs(ids, feats, modalities)
    sync(device)
    t2 = time.perf_counter()
    fig |= {
        "requests": len(requests),
        "media_items": len(modalities),
        "prompt_tokens": int(ids.shape[1]),
        "encode_s": t1 - t0,
        "encode_ms_per_item": (t1 - t0) / len(modalities) * 1e3,
        "project_splice_s": t2 - t1,
        "embeds_shape": "x".join(str(n) for n in embeds.shape),
    }


def bytes_per_token(model: Any, context: float) -> float:
    """Bytes one decode step reads: every LLM weight but the input table (LoRA included), plus the KV cache."""
    embed = model.llm.get_input_embeddings()
    skip = {id(embed.weight), *(id(p) for p in embed.parameters())}
    weights = sum(p.numel() * p.element_size() for p in model.llm.parameters() if id(p) not in skip)
    cfg = model.llm.config.get_text_config()
    head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
    kv = 2 * cfg.num_hidden_layers * cfg.num_key_value_heads * head_dim * embed.weight.element_size() * context
    return weights + kv


def decode(model: Any, s: Sizes, device: str, report: Report, fig: dict[str, Any]) -> None:
    """Constrained meta-response decoding of one media request; tokens/s against the bandwidth bound."""
    request = media_requests(1)[0]
    prompt, feats, mods = model.prepare(request)
    t0 = time.perf_counter()
    model.grammars.compile(request.schema)
    fig["grammar_compile_s"] = time.perf_counter() - t0
    kwargs = {"schemas": request.schema, "max_new_tokens": s.decode_tokens}
    model.generate_with_stats([prompt], feats, mods, **kwargs)  # warm-up
    clock = Clock()
    sync(device)
    t0 = time.perf_counter()
    _, stats = model.generate_with_stats([prompt], feats, mods, streamer=clock, **kwargs)
    sync(device)
    wall = time.perf_counter() - t0
    n = len(clock.stamps)
    if n < 3:
        raise RuntimeError(f"only {n} tokens decoded; cannot time decoding")
    gaps = [b - a for a, b in zip(clock.stamps, clock.stamps[1:], strict=False)]
    rate = (n - 1) / (clock.stamps[-1] - clock.stamps[0])
    per_token = bytes_per_token(model, len(prompt) + n / 2)
    fig |= {
        "prompt_tokens": len(prompt),
        "new_tokens": n,
        "finish": stats[0][1],
        "first_token_s": clock.stamps[0] - t0,
        "decode_tok_s": rate,
        "median_ms_per_token": statistics.median(gaps) * 1e3,
        "answer_wall_s": wall,
        "gb_read_per_token": per_token / 1e9,
    }
    bandwidth = report.get("bandwidth", "copy_gb_s")
    if bandwidth is not None:
        bound = bandwidth * 1e9 / per_token
        fig |= {"bound_tok_s": bound, "fraction_of_bound": rate / bound}


def train_step(model: Any, s: Sizes, device: str, work: Path, fig: dict[str, Any]) -> None:
    """Two steps of the project's Trainer (TargetLoss + Collator over a feature cache); the second is timed."""
    from modaverse_agent.media import load_media
    from modaverse_agent.training.batches import Collator, TargetLoss
    from modaverse_agent.training.dataset import MediaInput, Sample
    from modaverse_agent.training.feature_cache import FeatureCache, encoder_key
    from modaverse_agent.training.trainer import TrainConfig, Trainer

    encoder = model.encoder
    cache = FeatureCache(work / "features", encoder_key(encoder))
    cache.build(encoder, [load_media(MEDIA / f) for f in FILES.values()], progress=False)
    media = tuple(MediaInput(mid, m, FILES[m]) for mid, m in zip(MEDIA_IDS, FILES, strict=True))
    response = {
        "text": "Here is a song that matches the photo, the sound and the clip.",
        "invocations": [{"task": "text-to-audio", "prompt": "a calm acoustic song, morning coffee, soft voices"}],
    }
    samples = [
        Sample(f"s{i}", "input-alignment", f"Make a song that fits these ({i}).", media, response, {})
        for i in range(s.train_batch)
    ]
    collator = Collator(model, cache=cache, base_dir=MEDIA)

    def collate(batch: list[Any]) -> dict[str, Any]:
        # The Trainer hands the collator's CPU tensors to the model as they are: moved here for a GPU run.
        out = collator(batch)
        return {k: v.to(model.device) if isinstance(v, torch.Tensor) else v for k, v in out.items()}

    config = TrainConfig(output_dir=str(work / "run"), max_steps=2, batch_size=s.train_batch, warmup_steps=0)
    trainer = Trainer(TargetLoss(model), samples, collate, config)
    reset_peak(device)
    history = trainer.train()
    fig |= {
        "lora_r": model.config.lora_r,
        "batch": s.train_batch,
        "tokens_per_row": len(collator.example(samples[0])[0]),
        "first_step_s": history[0]["step_s"],
        "step_s": history[1]["step_s"],
        "loss": history[1]["loss"],
        "trainable_params_m": sum(p.numel() for p in model.trainable_parameters()) / 1e6,
        "batch_moved_by_check": True,
    }
    model.eval()
    del trainer


def import_official(s: Sizes, dtype: torch.dtype, work: Path, fig: dict[str, Any]) -> None:
    """``modaverse import-official`` on a synthetic release of size ``s`` (written first, timed apart)."""
    from modaverse_agent.cli_import import import_official as command
    from modaverse_agent.model.checkpoint import RELEASE_TOKENS
    from modaverse_agent.model.model_dir import read_model_dir
    from modaverse_agent.model.synthetic_release import (
        release_state,
        sized_tokenizer,
        write_release,
        write_release_base,
    )

    t0 = time.perf_counter()
    llm_config = llama_config(s)
    base = write_release_base(work / "vicuna-base", llm_config, sized_tokenizer(s.vocab))
    state = release_state(
        llm_config,
        s.vocab + len(RELEASE_TOKENS),
        encoder_dim=imagebind_config(s).out_embed_dim,
        rank=s.lora_r,
        dtype=dtype,
    )
    ckpt = write_release(work / "pytorch_model.pt", state)
    del state
    t1 = time.perf_counter()
    out = work / "imported"
    args = [str(ckpt), "--base-llm", str(base), "-o", str(out), "--dtype", str(dtype).removeprefix("torch.")]
    command.main(args, prog_name="modaverse import-official", standalone_mode=False)
    t2 = time.perf_counter()
    written = read_model_dir(out)
    fig |= {
        "release_gb": ckpt.stat().st_size / 1e9,
        "write_release_s": t1 - t0,
        "import_s": t2 - t1,
        "output_gb": sum(p.stat().st_size for p in out.rglob("*") if p.is_file()) / 1e9,
        "lora_r": written.config.lora_r,
    }


# -- main ------------------------------------------------------------------------------------------------
def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--small", action="store_true", help="tiny shapes on the same code path (CPU, seconds)")
    parser.add_argument("--device", default="auto", help="auto (cuda when there is one), cpu, cuda, cuda:N")
    parser.add_argument("--dtype", default="bfloat16", help="weights of the LLM and ImageBind (default bfloat16)")
    parser.add_argument("--json", type=Path, help="also write the figures to this JSON file")
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's)")
    parser.add_argument("--force", action="store_true", help="run the real size on the CPU anyway")
    parser.add_argument("--sections", default=",".join(SECTIONS), help=f"which to run, comma-separated: {SECTIONS}")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    from modaverse_agent.devices import resolve_device, resolve_dtype
    from modaverse_agent.errors import ModelError

    args = parse_args(argv)
    sizes = SMALL if args.small else REAL
    wanted = [n.strip() for n in args.sections.split(",") if n.strip()]
    unknown = sorted(set(wanted) - set(SECTIONS))
    try:
        if unknown:
            raise ModelError(f"--sections: unknown {unknown}; choose from {', '.join(SECTIONS)}")
        device = resolve_device(args.device)
        dtype = resolve_dtype(args.dtype, device)
    except ModelError as e:
        print(f"gpu_check: {e}", file=sys.stderr)
        return 2
    if not args.small and not device.startswith("cuda") and not args.force:
        print(
            f"gpu_check: the real size on {device} needs about 30 GB of RAM and a long time; "
            "run it on a GPU, use --small, or add --force",
            file=sys.stderr,
        )
        return 2
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    report = Report(device, sizes, args.json, dtype)
    model = None
    with tempfile.TemporaryDirectory(prefix="gpu_check-") as tmp:
        work = Path(tmp)

        def need_model() -> Any:
            if model is None:
                raise RuntimeError("no model: the build section failed or was not run")
            return model

        for name in SECTIONS:
            if name not in wanted:
                continue
            with report.section(name) as fig:
                if name == "bandwidth":
                    fig["copy_mib"] = sizes.copy_mib
                    fig["kind"] = "device-to-device" if device != "cpu" else "host memory (no GPU)"
                    fig["copy_gb_s"] = copy_bandwidth(device, sizes.copy_mib) / 1e9
                elif name == "build":
                    model = build_model(sizes, device, dtype, fig)
                elif name == "splice":
                    splice(need_model(), sizes, device, fig)
                elif name == "decode":
                    decode(need_model(), sizes, device, report, fig)
                elif name == "train":
                    train_step(need_model(), sizes, device, work / "train", fig)
                else:
                    import_official(sizes, dtype, work / "import", fig)
    print(report.table(), flush=True)
    if report.failed:
        print(f"gpu_check: {len(report.failed)} section(s) failed: {', '.join(report.failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
