"""Overhead of the diffusers plugins over calling the same tiny pipeline directly, in the same run.

For each plugin: a tiny random pipeline is built from configs and saved; then, interleaved round by
round, (a) the plugin's public path ``Generator.generate`` with ``model=<that dir>`` and (b) the
diffusers pipeline called directly on the same arguments and seed, its output written with plain
library calls (PIL PNG / ``wave`` / PyAV MP4). Prints the ratio plugin / direct of the median times
and, steadier on a busy machine, the same ratio estimated from the time each path spends outside the
pipeline's ``__call__`` (argument checks, progress, seeds, decoding inputs, writing the file, the record):
``(direct + plugin_outside - direct_outside) / direct``.
Goal: ratio <= 1.05. Tiny pipelines are the worst case: a real model's seconds per step dwarf any overhead.

    OMP_NUM_THREADS=1 python benchmarks/bench_plugin_overhead.py [--rounds 15] [--only stable-diffusion]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
import wave
from collections.abc import Callable
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = Path(__file__).resolve().parents[1]
PLUGINS = ("stable-diffusion", "audioldm", "text-to-video", "instruct-pix2pix")
# Measure this checkout's code, not whatever happens to be installed.
for path in [ROOT, *(ROOT / "plugins" / f"modaverse-{p}" for p in PLUGINS)]:
    sys.path.insert(0, str(path))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402

from modaverse_agent import GenerationRequest, OutputDir  # noqa: E402
from modaverse_agent.diffusion import build_tiny_pipeline  # noqa: E402
from modaverse_agent.media import load_media  # noqa: E402


@dataclass
class Case:
    """One plugin: its generator, the invocation's args and the equivalent direct call."""

    kind: str
    make_generator: Callable[..., Any]
    args: dict[str, Any]
    direct: Callable[[Any, Path, int], None]
    inputs: tuple[Any, ...] = ()


def _seeded(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _picture() -> Any:
    x = np.linspace(0, 255, 64, dtype=np.uint8)
    rgb = np.stack(np.broadcast_arrays(x[None, :], x[:, None], 255 - x[None, :]), axis=-1)
    path = Path(tempfile.mkdtemp()) / "in.png"
    Image.fromarray(rgb).save(path)
    return load_media(path)


def _wav(path: Path, samples: np.ndarray, rate: int) -> None:
    pcm = (np.clip(samples, -1, 1) * 32767).astype("<i2")
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(pcm.tobytes())


def _mp4(path: Path, frames: np.ndarray, fps: int) -> None:
    import av

    video = (np.clip(frames, 0, 1) * 255).round().astype(np.uint8)
    with av.open(str(path), mode="w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=Fraction(fps))
        stream.width, stream.height, stream.pix_fmt = video.shape[2], video.shape[1], "yuv420p"
        stream.options = {"crf": "23"}
        for frame in video:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode())


def _cases(picture: Any) -> dict[str, Case]:
    from modaverse_audioldm import AudioLDMGenerator
    from modaverse_instruct_pix2pix import InstructPix2PixGenerator
    from modaverse_stable_diffusion import StableDiffusionGenerator
    from modaverse_text_to_video import TextToVideoGenerator

    def sd(pipe: Any, out: Path, seed: int) -> None:
        image = pipe(
            "a red apple", num_inference_steps=2, guidance_scale=7.5, width=64, height=64, generator=_seeded(seed)
        ).images[0]
        image.save(out / f"direct-{seed}.png")

    def audio(pipe: Any, out: Path, seed: int) -> None:
        samples = pipe(
            "a red apple", audio_length_in_s=1.0, num_inference_steps=2, guidance_scale=2.5, generator=_seeded(seed)
        ).audios[0]
        _wav(out / f"direct-{seed}.wav", samples, pipe.vocoder.config.sampling_rate)

    def video(pipe: Any, out: Path, seed: int) -> None:
        frames = pipe("a red apple", num_frames=4, num_inference_steps=2, generator=_seeded(seed)).frames[0]
        _mp4(out / f"direct-{seed}.mp4", frames, 8)

    def edit(pipe: Any, out: Path, seed: int) -> None:
        with Image.open(picture.path) as im:
            source = im.convert("RGB")
        image = pipe(
            "a red apple",
            image=source,
            num_inference_steps=2,
            guidance_scale=7.5,
            image_guidance_scale=1.5,
            generator=_seeded(seed),
        ).images[0]
        image.save(out / f"direct-{seed}.png")

    return {
        "stable-diffusion": Case(
            "stable-diffusion", StableDiffusionGenerator, {"steps": 2, "width": 64, "height": 64}, sd
        ),
        "audioldm": Case("audioldm", AudioLDMGenerator, {"steps": 2, "duration": 1.0}, audio),
        "text-to-video": Case("text-to-video", TextToVideoGenerator, {"steps": 2, "frames": 4, "fps": 8}, video),
        "instruct-pix2pix": Case("instruct-pix2pix", InstructPix2PixGenerator, {"steps": 2}, edit, (picture,)),
    }


class _Timed:
    """Forwards to a pipeline and adds up the seconds spent inside its ``__call__``."""

    def __init__(self, pipe: Any) -> None:
        self._pipe = pipe
        self.seconds = 0.0

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        t0 = time.perf_counter()
        try:
            return self._pipe(*args, **kwargs)
        finally:
            self.seconds += time.perf_counter() - t0

    def __getattr__(self, name: str) -> Any:
        return getattr(self._pipe, name)


@dataclass
class Timings:
    """Per-call seconds: whole calls, and the part of each spent outside the pipeline's ``__call__``."""

    plugin: list[float]
    direct: list[float]
    plugin_outside: list[float]
    direct_outside: list[float]


def measure(case: Case, rounds: int, work: Path) -> Timings:
    """Time plugin and direct calls, interleaved round by round after one warm-up call each."""
    import diffusers

    model_dir = work / f"tiny-{case.kind}"
    build_tiny_pipeline(case.kind).save_pretrained(model_dir)
    gen = case.make_generator(model=str(model_dir), device="cpu")
    direct_pipe = _Timed(diffusers.DiffusionPipeline.from_pretrained(model_dir, local_files_only=True))
    direct_pipe.set_progress_bar_config(disable=True)
    out_plugin, out_direct = work / f"plugin-{case.kind}", work / f"direct-{case.kind}"
    output = OutputDir(out_plugin)
    out_direct.mkdir()

    def plugin_call(seed: int) -> None:
        gen.generate(GenerationRequest("a red apple", output, {**case.args, "seed": seed}, inputs=case.inputs))

    def direct_call(seed: int) -> None:
        case.direct(direct_pipe, out_direct, seed)

    plugin_call(0)  # loads the model
    direct_call(0)
    plugin_pipe = gen._pipeline.pipe = _Timed(gen._pipeline.pipe)
    calls = {plugin_call: plugin_pipe, direct_call: direct_pipe}
    whole: dict[Any, list[float]] = {plugin_call: [], direct_call: []}
    outside: dict[Any, list[float]] = {plugin_call: [], direct_call: []}
    for r in range(1, rounds + 1):
        order = (plugin_call, direct_call) if r % 2 else (direct_call, plugin_call)  # cancel order effects
        for fn in order:
            timed = calls[fn]
            timed.seconds = 0.0
            t0 = time.perf_counter()
            fn(r)
            elapsed = time.perf_counter() - t0
            whole[fn].append(elapsed)
            outside[fn].append(elapsed - timed.seconds)
    gen.unload()
    return Timings(whole[plugin_call], whole[direct_call], outside[plugin_call], outside[direct_call])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--only", choices=PLUGINS, action="append", help="benchmark only this plugin (repeatable)")
    ns = parser.parse_args()
    torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))
    med = statistics.median
    with tempfile.TemporaryDirectory() as tmp:
        cases = _cases(_picture())
        print(f"torch {torch.__version__}, {torch.get_num_threads()} thread(s), {ns.rounds} rounds, medians")
        print(
            f"{'plugin':<18}{'plugin s':>10}{'direct s':>10}{'ratio':>7}"
            f"{'outside pipeline ms: plugin':>30}{'direct':>8}{'ratio from outside':>20}"
        )
        for kind in ns.only or PLUGINS:
            t = measure(cases[kind], ns.rounds, Path(tmp))
            overhead = med(t.plugin_outside) - med(t.direct_outside)
            print(
                f"{kind:<18}{med(t.plugin):>10.4f}{med(t.direct):>10.4f}{med(t.plugin) / med(t.direct):>7.3f}"
                f"{med(t.plugin_outside) * 1e3:>30.2f}{med(t.direct_outside) * 1e3:>8.2f}"
                f"{(med(t.direct) + overhead) / med(t.direct):>20.3f}"
            )


if __name__ == "__main__":
    main()
