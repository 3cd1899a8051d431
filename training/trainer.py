"""The single-stage trainer: AdamW, warmup + cosine, accumulation, clipping, exact resume, metrics.

It trains whatever parameters of ``model`` require grad (for ModaVerse: projectors, LoRA, new token
rows) on batches made by ``collate``. Runs on one CPU, one GPU or several processes through
``accelerate`` (``accelerate launch`` or ``torchrun``; DeepSpeed ZeRO-1/2 through an accelerate config).

Several processes: ``batch_size`` is the global batch. Every process walks the same seeded order and
takes its own slice (``whole[rank::world]``) of each global batch, and the loss is weighted by the
global number of targets, so N processes give the weights of one process with the same batch (up to
float rounding). Only the main process writes metrics, TensorBoard logs, progress bars and checkpoints.
Checkpoints (DDP or one process) hold only trainable tensors, optimizer moments and RNG states, all in
safetensors plus a JSON file: no pickles; under DeepSpeed, accelerate's own (sharded) state instead.
FSDP and ZeRO-3, which shard the weights themselves, are refused with a message.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, NamedTuple, Protocol, runtime_checkable

import torch
from torch import nn

from modaverse_agent.errors import ModelError

CHECKPOINT_STATE = "trainer_state.json"
CHECKPOINT_TENSORS = "trainer_state.safetensors"
#: Under DeepSpeed the optimizer state is sharded: accelerate saves it (and the weights) here.
CHECKPOINT_SHARDED = "accelerate_state"
#: A checkpoint is written into ``.checkpoint-N.partial`` beside it and renamed to ``checkpoint-N`` when whole.
PARTIAL_SUFFIX = ".partial"
#: TrainConfig fields that shape the weights: a resumed run must keep them (``max_steps`` may grow).
RESUME_FIXED = (
    "batch_size",
    "grad_accum",
    "lr",
    "weight_decay",
    "warmup_steps",
    "min_lr_ratio",
    "max_grad_norm",
    "seed",
    "mixed_precision",
    "extra",
)


class LossSum(NamedTuple):
    """What a model may return instead of a mean loss: the summed loss over its targets and their count.

    The trainer then divides by the global count (all processes, one micro-batch), which makes N
    processes exactly equal to one. A plain scalar is taken as the mean over the shard's samples.
    """

    total: torch.Tensor
    count: torch.Tensor


@runtime_checkable
class ShardCollate(Protocol):
    """A collate function that also sees the whole global batch its shard is cut from."""

    def collate_shard(self, shard: list[Any], whole: list[Any]) -> dict[str, Any]:
        """Forward kwargs for ``shard``; anything that must not depend on the split comes from ``whole``."""
        ...


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


def batch_order(n: int, batch_size: int, seed: int, epoch: int, groups: Sequence[Any] | None = None) -> list[list[int]]:
    """The batches of one epoch: a seeded permutation cut into full and final partial batches.

    With ``groups`` (a key per sample, e.g. the task list its system prompt offers) and more than one key,
    each batch holds one key only (each key's samples in permutation order, cut into batches, then the
    batches shuffled): rows that share a system prompt keep sharing its computation (``TargetLoss``).
    One key, or none, gives the plain order.
    """
    g = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    perm = torch.randperm(n, generator=g).tolist()
    if groups is None or len(set(groups)) < 2:
        return [perm[i : i + batch_size] for i in range(0, n, batch_size)]
    by_key: dict[Any, list[int]] = {}
    for i in perm:
        by_key.setdefault(groups[i], []).append(i)
    batches = [m[i : i + batch_size] for m in by_key.values() for i in range(0, len(m), batch_size)]
    return [batches[i] for i in torch.randperm(len(batches), generator=g).tolist()]


def checkpoint_step(path: Path) -> int | None:
    """N of a ``checkpoint-N`` folder name, else None."""
    name = path.name
    tail = name.removeprefix("checkpoint-")
    return int(tail) if tail != name and tail.isdigit() else None


def is_complete_checkpoint(path: Path) -> bool:
    """Whether ``path`` holds a whole checkpoint: both state files, and a JSON state that reads."""
    if not ((path / CHECKPOINT_STATE).is_file() and (path / CHECKPOINT_TENSORS).is_file()):
        return False
    try:
        meta = json.loads((path / CHECKPOINT_STATE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(meta, dict) and "step" in meta


def complete_checkpoints(run_dir: Path) -> dict[int, Path]:
    """The whole ``checkpoint-N`` folders of ``run_dir`` by step (partial and broken ones left out)."""
    if not run_dir.is_dir():
        return {}
    found = {}
    for p in run_dir.iterdir():
        n = checkpoint_step(p)
        if n is not None and p.is_dir() and is_complete_checkpoint(p):
            found[n] = p
    return found


def _earlier_hint(path: Path) -> str:
    """``; resume from RUN/checkpoint-M instead`` for the latest whole checkpoint before ``path``, if any."""
    step = checkpoint_step(path)
    earlier = [n for n in complete_checkpoints(path.parent) if step is None or n < step]
    if not earlier:
        return "; no earlier whole checkpoint is in its run folder (start over with --overwrite)"
    return f"; resume from the previous checkpoint instead: --resume {path.parent / f'checkpoint-{max(earlier)}'}"


def read_checkpoint_state(path: str | Path) -> dict[str, Any]:
    """The JSON state of checkpoint ``path`` (ModelError naming the file when it is missing or broken)."""
    path = Path(path)
    for f in (CHECKPOINT_STATE, CHECKPOINT_TENSORS):
        if not (path / f).is_file():
            raise ModelError(
                f"checkpoint {path} has no {f}; pass a checkpoint-N directory of this run{_earlier_hint(path)}"
            )
    try:
        meta = json.loads((path / CHECKPOINT_STATE).read_text(encoding="utf-8"))
        if not isinstance(meta, dict) or not isinstance(meta.get("step"), int) or "config" not in meta:
            raise ValueError("not a trainer state")
    except (OSError, ValueError) as e:
        raise ModelError(f"checkpoint file {path / CHECKPOINT_STATE} is corrupt ({e}){_earlier_hint(path)}") from None
    return meta


def read_checkpoint_tensors(path: str | Path) -> dict[str, torch.Tensor]:
    """The tensors of checkpoint ``path`` (ModelError naming the file when it does not load)."""
    from safetensors.torch import load_file

    file = Path(path) / CHECKPOINT_TENSORS
    try:
        return load_file(str(file))
    except Exception as e:  # safetensors raises its own SafetensorError, OSError, ValueError
        raise ModelError(f"checkpoint file {file} is corrupt ({e}){_earlier_hint(Path(path))}") from None


def resume_differences(saved: TrainConfig | dict[str, Any], wanted: TrainConfig) -> list[str]:
    """What ``wanted`` changes of the saved run's config that a resume must keep (``--lr 0.01 (checkpoint: 0.0002)``).

    ``max_steps`` may grow, not fall below the checkpoint's step (checked by the caller).
    """
    old = asdict(saved) if isinstance(saved, TrainConfig) else saved
    new = asdict(wanted)
    flags = {"batch_size": "--batch-size", "grad_accum": "--grad-accum", "warmup_steps": "--warmup (steps)"}
    out = []
    for key in RESUME_FIXED:
        if key in old and old[key] != new[key]:
            out.append(f"{flags.get(key, '--' + key.replace('_', '-'))} {new[key]} (checkpoint: {old[key]})")
    return out


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
        cpu: bool = False,
        run_info: dict[str, Any] | None = None,
        on_start: Callable[[], None] | None = None,
        keep_checkpoints: int | None = None,
    ) -> None:
        from accelerate import Accelerator
        from accelerate.utils import DataLoaderConfiguration, DistributedDataParallelKwargs

        if not samples:
            raise ValueError("no training samples; generate a dataset first (`modaverse data generate`)")
        self.config = config
        self.samples = samples
        self.collate = collate
        self.on_log = on_log
        #: saved with every checkpoint (``run``): what else shaped the run (data, model options)
        self.run_info = dict(run_info or {})
        #: called once, on the main process, when the first step of this session is done (before its metrics)
        self.on_start = on_start
        #: keep only the newest N checkpoints of this run folder (None: all)
        self.keep_checkpoints = keep_checkpoints
        torch.manual_seed(config.seed)
        self.accelerator = Accelerator(
            mixed_precision=config.mixed_precision,
            gradient_accumulation_steps=config.grad_accum,
            cpu=cpu,
            # the batches given are global and split here: the scheduler steps once per optimizer step
            dataloader_config=DataLoaderConfiguration(split_batches=True),
            # a batch without video leaves the video projector out of the graph
            kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=True)],
        )
        world = self.accelerator.num_processes
        if world > config.batch_size:
            raise ValueError(
                f"--batch-size {config.batch_size} is the global batch, split across {world} processes; "
                f"give at least {world} (one sample per process)"
            )
        self._check_engine()
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
        self._tensorboard: Any = None  # opened when training starts (the run folder may be cleared until then)

    @property
    def sharded(self) -> bool:
        """Whether DeepSpeed holds the optimizer state in shards (checkpoints then go through accelerate)."""
        from accelerate.utils import DistributedType

        return self.accelerator.distributed_type == DistributedType.DEEPSPEED

    def _check_engine(self) -> None:
        """Refuse what would shard the weights themselves; tell DeepSpeed the per-process batch.

        ZeRO-3 and FSDP keep each weight in pieces across processes, and writing a ModaVerse folder from
        those pieces is not built; DDP and ZeRO-1/2 keep a whole copy of the weights in every process.
        """
        from accelerate.utils import DistributedType

        plugin = getattr(self.accelerator.state, "deepspeed_plugin", None)
        if self.accelerator.distributed_type == DistributedType.FSDP or (plugin is not None and plugin.zero_stage == 3):
            raise ModelError(
                "FSDP and DeepSpeed ZeRO-3 shard the weights, and saving a ModaVerse model from shards is not "
                "supported; use DDP or ZeRO-2 (examples/accelerate/ddp.yaml, deepspeed_zero2.yaml)"
            )
        if plugin is None:
            return
        # DeepSpeed wants the per-process batch; accelerate infers it only from its own data loaders
        ds = plugin.deepspeed_config
        if ds.get("train_micro_batch_size_per_gpu", "auto") == "auto":
            ds["train_micro_batch_size_per_gpu"] = math.ceil(self.config.batch_size / self.accelerator.num_processes)

    # -- data order ------------------------------------------------------------------------------------
    def _micro_batches(self, start_micro: int) -> Any:
        groups = [getattr(s, "offered", None) for s in self.samples]
        c = self.config
        epoch, order = 0, batch_order(len(self.samples), c.batch_size, c.seed, 0, groups)
        per_epoch = len(order)  # the same every epoch: each key's count is
        micro = start_micro
        while True:
            wanted, index = divmod(micro, per_epoch)
            if wanted != epoch:  # one order per epoch, not per batch
                epoch, order = wanted, batch_order(len(self.samples), c.batch_size, c.seed, wanted, groups)
            yield [self.samples[i] for i in order[index]]
            micro += 1

    def shard(self, whole: list[Any]) -> tuple[list[Any], bool]:
        """This process's slice of the global batch ``whole``, and whether it is real.

        A final partial batch smaller than the number of processes leaves some processes nothing; they
        run the first sample with zero weight (DDP needs every process in every step).
        """
        rank, world = self.accelerator.process_index, self.accelerator.num_processes
        part = whole[rank::world]
        return (part, True) if part else (whole[:1], False)

    def _collate(self, part: list[Any], whole: list[Any]) -> dict[str, Any]:
        from accelerate.utils import send_to_device

        batch = self.collate.collate_shard(part, whole) if isinstance(self.collate, ShardCollate) else None
        return send_to_device(batch if batch is not None else self.collate(part), self.accelerator.device)

    def _weighted_loss(self, out: Any, samples: int, real: bool) -> tuple[torch.Tensor, float]:
        """(the loss to backpropagate, the global batch's mean loss) of one micro-batch.

        The loss is the shard's sum over the global count, times the number of processes (DDP averages
        gradients over them): every process then adds its exact share of the global mean.
        """
        world = self.accelerator.num_processes
        if isinstance(out, LossSum):
            loss, count, scale = out.total, float(out.count), 1.0
        else:  # a mean over the shard's samples
            loss = out.loss if hasattr(out, "loss") else out
            count = scale = float(samples)
        if not real:
            count = scale = 0.0
        local = float(loss.detach()) * scale  # in float64: one process's mean comes back exactly
        stats = torch.tensor([local, count], dtype=torch.float64, device=self.accelerator.device)
        if world > 1:
            stats = self.accelerator.reduce(stats, reduction="sum")
        global_total, global_count = (float(x) for x in stats.tolist())
        if global_count <= 0:
            raise ModelError("a training batch has no target tokens; check the data (every sample needs a response)")
        return loss * (scale * world / global_count), global_total / global_count

    # -- training --------------------------------------------------------------------------------------
    def train(self, stop_at: int | None = None) -> list[dict[str, Any]]:
        """Run to ``max_steps`` (or ``stop_at``, then checkpoint); returns metrics (also in ``metrics.jsonl``)."""
        from tqdm.auto import tqdm

        cfg = self.config
        if self.accelerator.is_main_process:
            self.out.mkdir(parents=True, exist_ok=True)
            if self._tensorboard is None:
                self._tensorboard = _tensorboard_writer(self.out / "tensorboard")
        batches = self._micro_batches(self.step * cfg.grad_accum)
        bar = tqdm(
            total=cfg.max_steps,
            initial=self.step,
            desc="training",
            unit="step",
            disable=not self.accelerator.is_main_process,
        )
        self.model.train()
        end = min(cfg.max_steps, stop_at or cfg.max_steps)
        while self.step < end:
            t0 = time.perf_counter()
            losses = []
            norm = None
            for _ in range(cfg.grad_accum):
                whole = next(batches)
                part, real = self.shard(whole)
                with self.accelerator.accumulate(self.model):
                    loss, mean = self._weighted_loss(self.model(**self._collate(part, whole)), len(part), real)
                    self.accelerator.backward(loss)
                    losses.append(mean)
                    if self.accelerator.sync_gradients:
                        norm = self.accelerator.clip_grad_norm_([p for _, p in self.named], cfg.max_grad_norm)
                    self.optimizer.step()
                    self.scheduler.step() if self.accelerator.sync_gradients else None
                    self.optimizer.zero_grad(set_to_none=True)
            self.step += 1
            if self.on_start is not None and self.accelerator.is_main_process:
                self.on_start()  # the resumed run really trains: now its abandoned tail may go
                self.on_start = None
            record = {
                "step": self.step,
                "loss": sum(losses) / len(losses),
                "lr": self.scheduler.get_last_lr()[0],
                "grad_norm": float("nan") if norm is None else float(norm),  # DeepSpeed may not say
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
        if not self.accelerator.is_main_process:
            return
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
        """Save trainable tensors, AdamW moments, scheduler and RNG state (safetensors + JSON).

        Every process calls it (it gathers their RNG states); only the main one writes, then all wait. Under
        DeepSpeed the optimizer is sharded: accelerate saves its own state in ``accelerate_state/``. It is
        written into ``.checkpoint-N.partial`` and renamed to ``checkpoint-N`` only when whole, so a killed run
        never leaves a ``checkpoint-N`` that does not load.
        """
        import shutil

        from safetensors.torch import save_file

        acc = self.accelerator
        path = Path(path)
        scratch = path.with_name(f".{path.name}{PARTIAL_SUFFIX}")
        if acc.is_main_process and scratch.exists():
            shutil.rmtree(scratch)
        acc.wait_for_everyone()
        if self.sharded:
            acc.save_state(str(scratch / CHECKPOINT_SHARDED))
        tensors = self._rng_states()
        if not self.sharded:
            tensors.update(self._trainable_state())
        if acc.is_main_process:
            scratch.mkdir(parents=True, exist_ok=True)
            save_file(tensors, str(scratch / CHECKPOINT_TENSORS))
            meta = {
                "step": self.step,
                "config": asdict(self.config),
                "processes": acc.num_processes,
                "scheduler": self.scheduler.state_dict(),
                "history": self.history,
                "run": self.run_info,
            }
            meta["scheduler"].pop("lr_lambdas", None)
            (scratch / CHECKPOINT_STATE).write_text(json.dumps(meta, indent=1, default=str), encoding="utf-8")
            if path.exists():  # the same step written again (a resume that trained no further): replace it
                old = path.with_name(f".{path.name}.replaced")
                shutil.rmtree(old, ignore_errors=True)
                path.rename(old)
                scratch.rename(path)
                shutil.rmtree(old)
            else:
                scratch.rename(path)
            self._prune_checkpoints(path.parent)
        acc.wait_for_everyone()
        return path

    def _prune_checkpoints(self, run_dir: Path) -> None:
        """Delete all but the newest ``keep_checkpoints`` whole checkpoints (nothing when it is None)."""
        import shutil

        if self.keep_checkpoints is None:
            return
        steps = sorted(complete_checkpoints(run_dir))
        for n in steps[: max(0, len(steps) - self.keep_checkpoints)]:
            shutil.rmtree(run_dir / f"checkpoint-{n}")

    def _trainable_state(self) -> dict[str, torch.Tensor]:
        """The trainable tensors and their AdamW moments by parameter name (one process's full copy)."""
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
        return tensors

    def _rng_states(self) -> dict[str, torch.Tensor]:
        """RNG states: ``rng.torch`` (and ``rng.cuda``) of the main process, plus ``.R`` per process R when several."""
        acc = self.accelerator
        states = {"rng.torch": torch.get_rng_state()}
        if acc.device.type == "cuda":
            states["rng.cuda"] = torch.cuda.get_rng_state(acc.device)
        if acc.num_processes == 1:
            return states
        out = dict(states)
        for key, value in states.items():
            gathered = acc.gather(value.to(acc.device)[None]).cpu()
            out.update({f"{key}.{rank}": row.contiguous() for rank, row in enumerate(gathered)})
        return out

    def _restore_rng(self, tensors: dict[str, torch.Tensor]) -> None:
        """This process's RNG state from a checkpoint (the main process's when it was written by fewer processes)."""
        rank = self.accelerator.process_index
        torch.set_rng_state(tensors.get(f"rng.torch.{rank}", tensors["rng.torch"]))
        if self.accelerator.device.type == "cuda" and "rng.cuda" in tensors:
            torch.cuda.set_rng_state(tensors.get(f"rng.cuda.{rank}", tensors["rng.cuda"]), self.accelerator.device)

    def load_checkpoint(self, path: str | Path) -> None:
        """Restore a checkpoint saved by :meth:`save_checkpoint` so training continues exactly.

        Every process calls it. A DDP checkpoint resumes with any number of processes (the data order is
        global); a DeepSpeed one needs the same accelerate config it was written under. Everything is read
        and checked (files, tensors, names and shapes) before anything changes; a broken checkpoint is a
        ModelError naming its file. The config's learning rate and schedule apply from the checkpoint's step
        on: the same as the checkpoint's, except that a larger ``max_steps`` stretches the cosine decay to it.
        """
        path = Path(path)
        meta = read_checkpoint_state(path)
        tensors = read_checkpoint_tensors(path)
        has_sharded = (path / CHECKPOINT_SHARDED).is_dir()
        if has_sharded != self.sharded:
            written = "under DeepSpeed" if has_sharded else "without DeepSpeed"
            raise ModelError(f"checkpoint {path} was written {written}; resume it under the same kind of launch")
        step = int(meta["step"])
        if step > self.config.max_steps:
            raise ModelError(f"checkpoint {path} is at step {step}, past max_steps {self.config.max_steps}")
        if not self.sharded:
            self._check_trainable(path, tensors)
        if self.sharded:
            self.accelerator.load_state(str(path / CHECKPOINT_SHARDED))
        else:
            self._load_trainable(path, tensors)
            self.scheduler.load_state_dict({**self.scheduler.state_dict(), **meta["scheduler"]})
        # this config's rate and schedule from the checkpoint's step on (the saved state holds the old ones)
        inner = getattr(self.scheduler, "scheduler", self.scheduler)  # accelerate's wrapper holds the LambdaLR
        inner.base_lrs = [self.config.lr for _ in self.optimizer.param_groups]
        lrs = [base * lr_lambda(self.config)(inner.last_epoch) for base in inner.base_lrs]
        for group, lr in zip(self.optimizer.param_groups, lrs, strict=True):
            group["lr"] = lr
            group["initial_lr"] = self.config.lr
        inner._last_lr = lrs
        self._restore_rng(tensors)
        self.step = step
        self.history = list(meta.get("history", []))

    def _check_trainable(self, path: Path, tensors: dict[str, torch.Tensor]) -> None:
        """ModelError when ``tensors`` lack a trainable tensor of this model or hold one of another shape."""
        for name, p in self.named:
            for key in (f"param.{name}", f"adam.exp_avg.{name}", f"adam.exp_avg_sq.{name}"):
                if key == f"param.{name}" and key not in tensors:
                    raise ModelError(
                        f"checkpoint {path} lacks tensor {name!r}: it is from a different model setup (check "
                        "--lora-r, --lora-targets, --train-embeddings and the base against the checkpoint's run)"
                    )
                if key in tensors and tensors[key].shape != p.shape:
                    raise ModelError(
                        f"checkpoint tensor {name!r} has shape {tuple(tensors[key].shape)}, model has "
                        f"{tuple(p.shape)}: the checkpoint is from a different model setup (check --lora-r and "
                        "the base against the checkpoint's run)"
                    )

    def _load_trainable(self, path: Path, tensors: dict[str, torch.Tensor]) -> None:
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
