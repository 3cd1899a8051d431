"""The single-stage trainer: AdamW, warmup + cosine, accumulation, clipping, exact resume, metrics.

It trains whatever parameters of ``model`` require grad (for ModaVerse: projectors, LoRA, new token
rows) on batches made by ``collate``. Runs on one CPU, one GPU or many through ``accelerate`` (launch
with ``accelerate launch``; DeepSpeed through accelerate's config). Checkpoints hold only trainable
tensors, optimizer moments and RNG states, all in safetensors plus a JSON file: no pickles.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from modaverse_agent.errors import ModelError

CHECKPOINT_STATE = "trainer_state.json"
CHECKPOINT_TENSORS = "trainer_state.safetensors"


@dataclass
class TrainConfig:
    """Hyper-parameters of one training run (saved with every checkpoint)."""

    output_dir: str = "runs/modaverse"
    max_steps: int = 200
    batch_size: int = 8
    grad_accum: int = 1
    lr: float = 2e-4
    weight_decay: float = 0.0
    warmup_steps: int = 10
    min_lr_ratio: float = 0.1
    max_grad_norm: float = 1.0
    seed: int = 0
    log_every: int = 1
    save_every: int = 0  # 0: only at the end
    mixed_precision: str = "no"  # "no" | "bf16" | "fp16" (GPU)
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.max_steps < 1 or self.batch_size < 1 or self.grad_accum < 1:
            raise ValueError("`max_steps`, `batch_size` and `grad_accum` must be >= 1")
        if self.mixed_precision not in ("no", "bf16", "fp16"):
            raise ValueError("`mixed_precision` must be 'no', 'bf16' or 'fp16'")
        if not 0 <= self.warmup_steps <= self.max_steps:
            raise ValueError("`warmup_steps` must be between 0 and `max_steps`")


def resolve_warmup(value: float, steps: int) -> int:
    """Warmup steps from ``value``: a whole number of steps, or a fraction of ``steps`` when below 1.

    ValueError (what to give instead) for a negative value, a non-whole number above 1, or whole steps
    that are not below ``steps`` (the rate would rise for the whole run and never decay).
    """
    if value < 0 or math.isnan(value):
        raise ValueError(f"--warmup must be 0 or more, not {value:g}")
    if 0 < value < 1:
        return min(round(value * steps), steps - 1)
    if not float(value).is_integer():
        raise ValueError(f"--warmup {value:g}: give whole steps (e.g. 10) or a fraction of --steps below 1 (e.g. 0.05)")
    if value and value >= steps:
        raise ValueError(
            f"--warmup {value:g} is not below --steps {steps}: the learning rate would rise for the whole run and "
            f"never decay; give fewer warmup steps or a fraction of the steps (e.g. --warmup 0.05)"
        )
    return int(value)


def describe_schedule(config: TrainConfig) -> str:
    """One line saying what the learning rate does over the run."""
    warm = f"rises over {config.warmup_steps} warmup step(s), then" if config.warmup_steps else "starts at once and"
    return f"learning rate {config.lr:g}: {warm} decays (cosine) to {config.min_lr_ratio:g}x by step {config.max_steps}"


def lr_lambda(config: TrainConfig) -> Callable[[int], float]:
    """Linear warmup to 1, then cosine decay to ``min_lr_ratio``."""

    def f(step: int) -> float:
        if step < config.warmup_steps:
            return (step + 1) / max(1, config.warmup_steps)
        progress = (step - config.warmup_steps) / max(1, config.max_steps - config.warmup_steps)
        return config.min_lr_ratio + (1 - config.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))

    return f


def _tensorboard_writer(path: Path) -> Any:
    """A TensorBoard writer when the ``tensorboard`` package is installed, else None (metrics.jsonl always)."""
    import importlib.util

    if importlib.util.find_spec("tensorboard") is None:
        return None
    from torch.utils.tensorboard import SummaryWriter

    return SummaryWriter(str(path))


def batch_order(n: int, batch_size: int, seed: int, epoch: int) -> list[list[int]]:
    """The batches of one epoch: a seeded permutation cut into full and final partial batches."""
    g = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    perm = torch.randperm(n, generator=g).tolist()
    return [perm[i : i + batch_size] for i in range(0, n, batch_size)]


class Trainer:
    """Trains ``model`` on ``samples`` batched by ``collate`` (which returns the model's forward kwargs)."""

    def __init__(
        self,
        model: nn.Module,
        samples: Sequence[Any],
        collate: Callable[[list[Any]], dict[str, Any]],
        config: TrainConfig,
        *,
        on_log: Callable[[dict[str, Any]], None] | None = None,
    ) -> None:
        from accelerate import Accelerator

        if not samples:
            raise ValueError("no training samples; generate a dataset first (`modaverse data generate`)")
        self.config = config
        self.samples = samples
        self.collate = collate
        self.on_log = on_log
        torch.manual_seed(config.seed)
        self.accelerator = Accelerator(
            mixed_precision=config.mixed_precision, gradient_accumulation_steps=config.grad_accum
        )
        self.named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
        if not self.named:
            raise ModelError("the model has no trainable parameters; enable LoRA/projectors before training")
        # Weight decay on matrices only; the optimizer sees matrices first, so order `named` the same way
        # (checkpoints map optimizer slots to names through it).
        self.named = [(n, p) for n, p in self.named if p.ndim >= 2] + [(n, p) for n, p in self.named if p.ndim < 2]
        decay = [p for n, p in self.named if p.ndim >= 2]
        no_decay = [p for n, p in self.named if p.ndim < 2]
        optimizer = torch.optim.AdamW(
            [{"params": decay, "weight_decay": config.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
            lr=config.lr,
        )
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(config))
        self.model, self.optimizer, self.scheduler = self.accelerator.prepare(model, optimizer, scheduler)
        self.step = 0
        self.history: list[dict[str, Any]] = []
        self.out = Path(config.output_dir)
        self._tensorboard = _tensorboard_writer(self.out / "tensorboard")

    # -- data order ------------------------------------------------------------------------------------
    def _micro_batches(self, start_micro: int) -> Any:
        per_epoch = math.ceil(len(self.samples) / self.config.batch_size)
        micro = start_micro
        while True:
            epoch, index = divmod(micro, per_epoch)
            order = batch_order(len(self.samples), self.config.batch_size, self.config.seed, epoch)
            yield [self.samples[i] for i in order[index]]
            micro += 1

    # -- training --------------------------------------------------------------------------------------
    def train(self, stop_at: int | None = None) -> list[dict[str, Any]]:
        """Run to ``max_steps`` (or ``stop_at``, then checkpoint); returns metrics (also in ``metrics.jsonl``)."""
        from tqdm.auto import tqdm

        cfg = self.config
        self.out.mkdir(parents=True, exist_ok=True)
        batches = self._micro_batches(self.step * cfg.grad_accum)
        bar = tqdm(
            total=cfg.max_steps,
            initial=self.step,
            desc="training",
            unit="step",
            disable=not self.accelerator.is_local_main_process,
        )
        self.model.train()
        end = min(cfg.max_steps, stop_at or cfg.max_steps)
        while self.step < end:
            t0 = time.perf_counter()
            losses = []
            for _ in range(cfg.grad_accum):
                batch = self.collate(next(batches))
                with self.accelerator.accumulate(self.model):
                    out = self.model(**batch)
                    loss = out.loss if hasattr(out, "loss") else out
                    self.accelerator.backward(loss)
                    losses.append(float(loss.detach()))
                    if self.accelerator.sync_gradients:
                        norm = self.accelerator.clip_grad_norm_([p for _, p in self.named], cfg.max_grad_norm)
                    self.optimizer.step()
                    self.scheduler.step() if self.accelerator.sync_gradients else None
                    self.optimizer.zero_grad(set_to_none=True)
            self.step += 1
            record = {
                "step": self.step,
                "loss": sum(losses) / len(losses),
                "lr": self.scheduler.get_last_lr()[0],
                "grad_norm": float(norm),
                "step_s": round(time.perf_counter() - t0, 4),
            }
            self._log(record)
            bar.update(1)
            bar.set_postfix(loss=f"{record['loss']:.4f}")
            if cfg.save_every and self.step % cfg.save_every == 0 and self.step < cfg.max_steps:
                self.save_checkpoint(self.out / f"checkpoint-{self.step}")
        bar.close()
        self.save_checkpoint(self.out / f"checkpoint-{self.step}")
        return self.history

    def _log(self, record: dict[str, Any]) -> None:
        self.history.append(record)
        if self.step % self.config.log_every == 0 or self.step == self.config.max_steps:
            with (self.out / "metrics.jsonl").open("a", encoding="utf-8") as f:
                f.write(json.dumps(record) + "\n")
            if self._tensorboard is not None:
                for key in ("loss", "lr", "grad_norm"):
                    self._tensorboard.add_scalar(f"train/{key}", record[key], self.step)
            if self.on_log is not None:
                self.on_log(record)

    # -- checkpoints -----------------------------------------------------------------------------------
    def save_checkpoint(self, path: Path) -> Path:
        """Save trainable tensors, AdamW moments, scheduler and RNG state (safetensors + JSON)."""
        from safetensors.torch import save_file

        path.mkdir(parents=True, exist_ok=True)
        tensors: dict[str, torch.Tensor] = {}
        state = self.optimizer.state_dict()
        for i, (name, p) in enumerate(self.named):
            tensors[f"param.{name}"] = p.detach().float().cpu().contiguous()
            moments = state["state"].get(i, {})
            for key in ("exp_avg", "exp_avg_sq"):
                if key in moments:
                    tensors[f"adam.{key}.{name}"] = moments[key].detach().cpu().contiguous()
            if "step" in moments:
                tensors[f"adam.step.{name}"] = torch.as_tensor(moments["step"], dtype=torch.float32).reshape(1)
        tensors["rng.torch"] = torch.get_rng_state()
        save_file(tensors, str(path / CHECKPOINT_TENSORS))
        meta = {
            "step": self.step,
            "config": asdict(self.config),
            "scheduler": self.scheduler.state_dict(),
            "history": self.history,
        }
        meta["scheduler"].pop("lr_lambdas", None)
        (path / CHECKPOINT_STATE).write_text(json.dumps(meta, indent=1, default=str), encoding="utf-8")
        return path

    def load_checkpoint(self, path: str | Path) -> None:
        """Restore a checkpoint saved by :meth:`save_checkpoint` so training continues exactly."""
        from safetensors.torch import load_file

        path = Path(path)
        for f in (CHECKPOINT_STATE, CHECKPOINT_TENSORS):
            if not (path / f).is_file():
                raise ModelError(f"checkpoint {path} has no {f}; pass a checkpoint-N directory of this run")
        meta = json.loads((path / CHECKPOINT_STATE).read_text(encoding="utf-8"))
        tensors = load_file(str(path / CHECKPOINT_TENSORS))
        state = self.optimizer.state_dict()
        for i, (name, p) in enumerate(self.named):
            key = f"param.{name}"
            if key not in tensors:
                raise ModelError(f"checkpoint {path} lacks tensor {name!r}: it is from a different model setup")
            if tensors[key].shape != p.shape:
                raise ModelError(
                    f"checkpoint tensor {name!r} has shape {tuple(tensors[key].shape)}, model has {tuple(p.shape)}"
                )
            with torch.no_grad():
                p.copy_(tensors[key].to(p.dtype))
            if f"adam.exp_avg.{name}" in tensors:
                state["state"][i] = {
                    "step": tensors[f"adam.step.{name}"].reshape(()),
                    "exp_avg": tensors[f"adam.exp_avg.{name}"].to(p.device),
                    "exp_avg_sq": tensors[f"adam.exp_avg_sq.{name}"].to(p.device),
                }
        self.optimizer.load_state_dict(state)
        self.scheduler.load_state_dict({**self.scheduler.state_dict(), **meta["scheduler"]})
        for group, lr in zip(self.optimizer.param_groups, self.scheduler.get_last_lr(), strict=True):
            group["lr"] = lr  # the scheduler's state does not carry the optimizer's current lr
        torch.set_rng_state(tensors["rng.torch"])
        self.step = int(meta["step"])
        self.history = list(meta.get("history", []))
