"""Training throughput with cached encoder features vs re-encoding the media at every step (one run).

Tiny ImageBind encoder + tiny LLM, samples each carrying one real image or audio file. Both loops run
the same trainer step (forward + backward + AdamW); the "re-encode" loop embeds the batch's media with
the frozen encoder first, as a trainer without a cache must. Goal: cached >= 3x samples/s.

    python benchmarks/bench_training_cache.py [--steps 20]
"""

from __future__ import annotations

import argparse
import tempfile
import time
import wave
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from modaverse_agent.encoders.imagebind.config import ImageBindConfig
from modaverse_agent.encoders.imagebind.encoder import ImageBindEncoder
from modaverse_agent.media import load_media
from modaverse_agent.model.modeling import ModaVerseModel
from modaverse_agent.model.tiny import save_tiny_base, tiny_config
from modaverse_agent.training.batches import Collator, TargetLoss
from modaverse_agent.training.dataset import MediaInput, Sample
from modaverse_agent.training.feature_cache import FeatureCache, encoder_key


def make_media(root: Path, n: int) -> list[Path]:
    rng = np.random.default_rng(0)
    paths = []
    for i in range(n):
        if i % 2 == 0:
            p = root / f"img{i}.png"
            Image.fromarray(rng.integers(0, 255, (240, 320, 3), dtype=np.uint8)).save(p)
        else:
            p = root / f"snd{i}.wav"
            with wave.open(str(p), "wb") as w:
                w.setnchannels(1)
                w.setsampwidth(2)
                w.setframerate(16000)
                w.writeframes((rng.standard_normal(16000 * 3) * 3000).astype("<i2").tobytes())
        paths.append(p)
    return paths


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--batch-size", type=int, default=8)
    a = ap.parse_args()
    torch.set_num_threads(1)
    root = Path(tempfile.mkdtemp())
    paths = make_media(root, 32)
    samples = [
        Sample(
            f"s{i}",
            "input-alignment",
            "Describe this.",
            (
                MediaInput(
                    "image_1" if p.suffix == ".png" else "audio_1", "image" if p.suffix == ".png" else "audio", str(p)
                ),
            ),
            {"text": "It is noise.", "invocations": []},
            {},
        )
        for i, p in enumerate(paths)
    ]
    torch.manual_seed(0)
    encoder = ImageBindEncoder.from_config(ImageBindConfig.tiny())
    base = save_tiny_base(root / "base")
    model = ModaVerseModel.from_config(tiny_config(base, encoder_dim=encoder.embed_dim), encoder=encoder)
    cache = FeatureCache(root / "cache", encoder_key(encoder))
    t0 = time.perf_counter()
    cache.build(encoder, [load_media(p) for p in paths], progress=False)
    build_s = time.perf_counter() - t0
    cached = Collator(model, cache=cache, base_dir=root)
    loss_fn = TargetLoss(model)
    opt = torch.optim.AdamW(model.trainable_parameters(), lr=1e-3)

    def step(batch: dict) -> None:
        loss = loss_fn(**batch)
        loss.backward()
        opt.step()
        opt.zero_grad()

    def reencoded(group: list[Sample]) -> dict:
        batch = cached(group)
        items = [load_media(m.resolve(root)) for s in group for m in s.media]
        feats = [encoder.encode(item.modality, [item]) for item in items]
        batch["media_features"] = torch.cat(feats)
        return batch

    results = {}
    for name, make in (("cached", cached), ("re-encode", reencoded)):
        step(make(samples[: a.batch_size]))  # warm up
        t0 = time.perf_counter()
        for i in range(a.steps):
            start = (i * a.batch_size) % len(samples)
            step(make(samples[start : start + a.batch_size]))
        results[name] = a.steps * a.batch_size / (time.perf_counter() - t0)
    print(f"feature cache build: {build_s:.2f} s for {len(paths)} media (once)")
    for name, rate in results.items():
        print(f"{name:<10} {rate:7.1f} samples/s")
    ratio = results["cached"] / results["re-encode"]
    print(f"cached / re-encode: {ratio:.1f}x (goal >= 3x: {'met' if ratio >= 3 else 'NOT met'})")


if __name__ == "__main__":
    main()
