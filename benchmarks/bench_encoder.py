"""Encoding throughput of ImageBind (tiny and a mid-size random model), and preprocessing vs model time.

    python benchmarks/bench_encoder.py [--items 4] [--threads 1] [--device cpu]

For each model size and modality it prints milliseconds per item spent decoding + preprocessing and
in the model, the end-to-end items/s, and which of the two dominates. Uses the fixture media in
``tests/fixtures/imagebind/media`` (or ``--media DIR``). Random weights: the numbers measure speed only.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from modaverse_agent.encoders.imagebind import ImageBindConfig, ImageBindEncoder
from modaverse_agent.media import load_media

MEDIA = Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "imagebind" / "media"
FILES = {"image": "coffee.jpg", "audio": "speech_22k.wav", "video": "testsrc_320x240_10fps_3s.mp4"}


def mid_config() -> ImageBindConfig:
    """A ViT-S-sized model: about 1/20 of huge's vision trunk, the same input shapes."""
    sizes = {"vision": (384, 6, 6), "audio": (256, 4, 4), "text": (256, 4, 4)}
    kwargs = {
        f"{m}_{k}": v
        for m, (d, b, h) in sizes.items()
        for k, v in zip(("embed_dim", "num_blocks", "num_heads"), (d, b, h), strict=True)
    }
    return ImageBindConfig(out_embed_dim=256, modalities=("vision", "text", "audio"), **kwargs)


def bench(encoder: ImageBindEncoder, modality: str, n: int, media: Path) -> tuple[float, float]:
    """(preprocess seconds per item, model seconds per item) over ``n`` copies of the modality's file."""
    items = [load_media(media / FILES[modality]) for _ in range(n)]
    encoder.encode(modality, items[:1])  # warm-up
    t0 = time.perf_counter()
    batch = torch.stack([encoder.preprocess(modality, item) for item in items])
    t1 = time.perf_counter()
    encoder.encode_tensors(modality, batch)
    t2 = time.perf_counter()
    return (t1 - t0) / n, (t2 - t1) / n


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=4, help="items per modality (default 4)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--media", type=Path, default=MEDIA)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    models = {"tiny": ImageBindConfig.tiny(modalities=("vision", "text", "audio")), "mid": mid_config()}
    print(f"torch {torch.__version__}, {args.threads} thread(s), device {args.device}, {args.items} items/modality")
    head = ("model", "params", "modality", "prep ms", "model ms", "items/s", "prep/model")
    print("{:<5} {:>7} {:<8} {:>9} {:>9} {:>8} {:>10}  dominant".format(*head))
    for name, cfg in models.items():
        encoder = ImageBindEncoder.from_config(cfg, device=args.device, batch_size=args.items)
        params = sum(p.numel() for p in encoder.model.parameters()) / 1e6
        for modality in ("image", "audio", "video"):
            prep, model = bench(encoder, modality, args.items, args.media)
            ratio = prep / model
            print(
                f"{name:<5} {params:>6.1f}M {modality:<8} {prep * 1e3:>9.1f} {model * 1e3:>9.1f} "
                f"{1 / (prep + model):>8.2f} {ratio:>10.2f}  {'preprocessing' if ratio > 1 else 'model'}"
            )
        texts = ["a small orange cat is sitting quietly on the wooden table"] * args.items * 8
        t0 = time.perf_counter()
        encoder.encode_text(texts)
        per = (time.perf_counter() - t0) / len(texts)
        print(f"{name:<5} {params:>6.1f}M {'text':<8} {'(incl.)':>9} {per * 1e3:>9.1f} {1 / per:>8.2f}")


if __name__ == "__main__":
    main()
