"""``modaverse train`` and ``modaverse eval`` as functions: one-stage training and held-out evaluation."""

from __future__ import annotations

import contextlib
import json
import logging
import random
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

from modaverse_agent.errors import MediaError
from modaverse_agent.llm_io import Completion, LLMRequest
from modaverse_agent.media import MediaItem, load_media
from modaverse_agent.model.prompting import spec_dict
from modaverse_agent.model.responder import BUDGET_WARNING

from .dataset import DatasetError, Sample, offered_specs, read_samples
from .evaluate import EvalReport, evaluate
from .narrowing import offer_only
from .natural import NATURAL_DIR, is_natural, read_natural
from .outputs import (
    RunLock,
    check_model_folder,
    last_complete_checkpoint,
    plan_outputs,
    replace_folder,
    staging_folder,
)
from .tasks import standard_schema
from .trainer import TrainConfig, Trainer, describe_schedule

Log = Callable[[str], None]
#: The logger of the engines' shared decoding loop (modaverse_agent.model.responder).
RESPONDER_LOGGER = "modaverse_agent.model.responder"


def _load_encoder(path: str | None, config: str) -> Any:
    if path is None:
        return None
    from modaverse_agent.encoders.imagebind import ImageBindEncoder

    return ImageBindEncoder.from_pretrained(path, config)


def train_model(
    data: str | Path,
    output: str | Path,
    *,
    llm: str | None = None,
    train: TrainConfig,
    model_options: dict[str, Any] | None = None,
    encoder: str | None = None,
    encoder_config: str = "huge",
    cache_dir: str | Path | None = None,
    resume: str | Path | None = None,
    init_from: str | Path | None = None,
    max_samples: int | None = None,
    share_prefix: bool = True,
    decision_weight: float = 1.0,
    save_tokenizer: bool | None = None,
    overwrite: bool = False,
    device: str = "auto",
    dtype: str | None = None,
    keep_checkpoints: int | None = None,
    log: Log = print,
) -> Path:
    """Train projectors + LoRA (+ media token rows) on ``data``; returns the saved ModaVerse directory.

    ``init_from`` starts from a trained ModaVerse directory (its config and weights, a fresh optimizer
    and schedule: a second stage); ``llm`` is then not given. A model already in
    ``output``, or an earlier run in the run folder, is replaced only with ``overwrite`` (or ``resume``,
    which continues the run folder's own checkpoint); see :mod:`.outputs`. ``save_tokenizer`` None saves
    the tokenizer unless the base is a built-in one (``modaverse:...``), whose tokenizer is rebuilt on load.
    ``decision_weight`` multiplies the loss of the tokens that route a request (:mod:`.decision_tokens`);
    it is recorded in ``train.extra``.

    Under ``accelerate launch`` / ``torchrun`` every process runs this; only the main one logs and writes
    (see :mod:`.trainer` for how the batch is split). ``device`` is a resolved ``--device`` (``auto``:
    accelerate's choice, a GPU per process when there are some); ``dtype`` names the weights' dtype
    (None: the config's, float32 for a new model).

    The run folder is locked for the whole run (a second training into it is refused). ``resume`` is read and
    checked whole first, and every option that shapes the run must equal the checkpoint's (ValueError naming
    each difference) except ``train.max_steps``, which may move the end (the cosine decay is stretched or
    squeezed to it from the checkpoint's step); the checkpoints and metrics after it go only once the first
    step from it has trained. With ``init_from``, ``model_options`` may only repeat that model's own values.
    Local ``llm`` and ``encoder`` paths are saved absolute. A batch larger than the data is cut to the data
    (and recorded so). ``keep_checkpoints`` keeps only the newest N checkpoints. Ctrl-C logs the step and the
    checkpoint to resume from, then raises KeyboardInterrupt.
    """
    if (llm is None) == (init_from is None):
        raise ValueError("give either `llm` (a new model) or `init_from` (continue a trained one)")
    if train.mixed_precision == "fp16" and dtype in ("float16", "bfloat16"):
        raise ValueError(f"--mixed-precision fp16 keeps float32 weights; give --dtype float32 (not {dtype})")
    state = process_state(device)
    main = state.is_main_process
    log = log if main else _quiet
    with contextlib.ExitStack() as held:
        if main:  # one training per run folder at a time (the others of this launch follow the main process)
            held.enter_context(RunLock(train.output_dir))
        try:
            return _train_locked(
                data,
                output,
                llm=llm,
                train=train,
                model_options=model_options,
                encoder=encoder,
                encoder_config=encoder_config,
                cache_dir=cache_dir,
                resume=resume,
                init_from=init_from,
                max_samples=max_samples,
                share_prefix=share_prefix,
                decision_weight=decision_weight,
                save_tokenizer=save_tokenizer,
                overwrite=overwrite,
                dtype=dtype,
                keep_checkpoints=keep_checkpoints,
                state=state,
                log=log,
            )
        except KeyboardInterrupt as e:
            if not getattr(e, "reported", False):
                log("interrupted before training started; no checkpoint was written")
            raise
    raise AssertionError("unreachable")  # pragma: no cover


def local_path(name: str | None) -> str | None:
    """``name`` made absolute when it is a local file or folder (hub ids and ``modaverse:`` names kept as given)."""
    from modaverse_agent.model.checkpoint import BUILTIN_LLM_PREFIX

    if name is None or name.startswith(BUILTIN_LLM_PREFIX) or not Path(name).exists():
        return name
    return str(Path(name).resolve())


def _sha256(path: Path) -> str:
    import hashlib

    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


#: Model options that shape a run: a resume keeps them; --init-from keeps the trained model's.
MODEL_FIXED = {
    "llm": "--llm",
    "gguf_file": "--llm (GGUF file)",
    "encoder": "--encoder",
    "encoder_config": "--encoder-config",
    "blind_media": "--blind-media",
    "lora_r": "--lora-r",
    "lora_alpha": "--lora-alpha",
    "lora_dropout": "--lora-dropout",
    "lora_targets": "--lora-targets",
    "train_embeddings": "--train-embeddings",
    "prompt_format": "--prompt-format",
}


def _show(value: Any) -> str:
    return ",".join(map(str, value)) if isinstance(value, list) else str(value)


def _resume_problems(meta: dict[str, Any], train: TrainConfig, run_info: dict[str, Any]) -> list[str]:
    """Each option of this run that differs from the resumed checkpoint's run (empty: it may continue)."""
    from .trainer import resume_differences

    problems = resume_differences(meta["config"], train)
    saved = meta.get("run") or {}  # checkpoints from before this check hold no run info: their tensors are checked
    if saved.get("data_sha256") not in (None, run_info["data_sha256"]):
        problems.append(f"--data {run_info['data']} (checkpoint: {saved.get('data')}, other content)")
    for key, flag in (("max_samples", "--max-samples"), ("init_from", "--init-from")):
        if key in saved and saved[key] != run_info[key]:
            problems.append(f"{flag} {run_info[key]} (checkpoint: {saved[key]})")
    old_model, new_model = saved.get("model") or {}, run_info["model"]
    for key, flag in MODEL_FIXED.items():
        if key in old_model and old_model[key] != new_model.get(key):
            problems.append(f"{flag} {_show(new_model.get(key))} (checkpoint: {_show(old_model[key])})")
    return problems


def _train_locked(
    data: str | Path,
    output: str | Path,
    *,
    llm: str | None,
    train: TrainConfig,
    model_options: dict[str, Any] | None,
    encoder: str | None,
    encoder_config: str,
    cache_dir: str | Path | None,
    resume: str | Path | None,
    init_from: str | Path | None,
    max_samples: int | None,
    share_prefix: bool,
    decision_weight: float,
    save_tokenizer: bool | None,
    overwrite: bool,
    dtype: str | None,
    keep_checkpoints: int | None,
    state: Any,
    log: Log,
) -> Path:
    """:func:`train_model` once the run folder is locked."""
    import torch

    from modaverse_agent.model.checkpoint import BUILTIN_LLM_PREFIX
    from modaverse_agent.model.config import ModaVerseConfig
    from modaverse_agent.model.modeling import ModaVerseModel

    from .batches import Collator, TargetLoss
    from .feature_cache import FeatureCache, encoder_key
    from .trainer import lr_lambda, read_checkpoint_state, read_checkpoint_tensors

    main = state.is_main_process
    # every process checks the folders before any changes them (a failure then stops them all alike)
    plan = plan_outputs(output, train.output_dir, overwrite=overwrite, resume=resume)
    if init_from is not None:
        check_model_folder(init_from)
    # the checkpoint is read whole and checked before anything in the run folder changes
    meta = None
    if resume is not None:
        meta = read_checkpoint_state(resume)
        read_checkpoint_tensors(resume)
    state.wait_for_everyone()
    data = Path(data)
    samples = read_samples(data)
    if max_samples is not None and max_samples < len(samples):
        samples = random.Random(train.seed).sample(samples, max_samples)
    if samples and train.batch_size > len(samples):
        log(
            f"--batch-size {train.batch_size} is more than the {len(samples)} training samples: batches of "
            f"{len(samples)} are used (training.json records {len(samples)})"
        )
        train = replace(train, batch_size=len(samples))
    if decision_weight != 1.0:
        train = replace(train, extra={**train.extra, "decision_weight": decision_weight})
    llm, encoder = local_path(llm), local_path(encoder)  # saved absolute: the model loads from anywhere
    if init_from is not None:
        config = ModaVerseConfig.load(init_from)
        kept = [
            f"{MODEL_FIXED.get(k, k)} {_show(v)} ({init_from}: {_show(getattr(config, k))})"
            for k, v in (model_options or {}).items()
            if k in MODEL_FIXED and getattr(config, k) != v
        ]
        if kept:
            raise ValueError(
                f"--init-from {init_from} continues that model's adapter and prompt, which these options would "
                f"change: {'; '.join(kept)}; drop them, or train a new model with --llm"
            )
    else:
        options = {**(model_options or {}), **({"dtype": dtype} if dtype else {})}
        config = ModaVerseConfig(llm=llm, encoder=encoder, encoder_config=encoder_config, **options)
    run_info = {
        "data": str(data.resolve()),
        "data_sha256": _sha256(data),
        "samples": len(samples),
        "max_samples": max_samples,
        "init_from": None if init_from is None else str(Path(init_from).resolve()),
        "model": {k: v for k, v in config.to_dict().items() if k in MODEL_FIXED},
    }
    if meta is not None:
        problems = _resume_problems(meta, train, run_info)
        if train.max_steps < meta["step"]:
            problems.append(f"--steps {train.max_steps} (the checkpoint is at step {meta['step']})")
        if problems:
            raise ValueError(
                f"--resume {resume} continues that run, and these options differ from it: {'; '.join(problems)}; "
                "give the checkpoint's options (or leave them out on the command line), or start a new run"
            )
    log(f"{len(samples)} training samples from {data}")
    log(describe_schedule(train))
    if meta is not None and meta["config"].get("max_steps") != train.max_steps:
        old = TrainConfig(**{**meta["config"], "extra": dict(meta["config"].get("extra") or {})})
        at = meta["step"]
        log(
            f"the run goes to step {train.max_steps} instead of {old.max_steps}: the cosine decay is stretched to end "
            f"there (lr at step {at}: {old.lr * lr_lambda(old)(at):.3g} -> {train.lr * lr_lambda(train)(at):.3g})"
        )
    torch.manual_seed(train.seed)
    t0 = time.perf_counter()
    enc = _load_encoder(encoder, encoder_config)
    if init_from is not None:
        model = ModaVerseModel.from_pretrained(init_from, encoder=enc, device=state.device, dtype=dtype)
        config = model.config
        log(f"starting from {init_from} (base {config.llm})")
    else:
        model = ModaVerseModel.from_config(config, encoder=enc, device=state.device)
    log(f"training on {state.device} ({config.dtype} weights), {state.num_processes} process(es)")
    log(
        f"model ready in {time.perf_counter() - t0:.0f} s; trainable parameters: "
        f"{sum(p.numel() for p in model.trainable_parameters()):,}"
    )
    cache = None
    if enc is not None:
        cache = FeatureCache(cache_dir or Path(train.output_dir) / "features", encoder_key(enc))
        items = [load_media(p) for s in samples for m in s.media if (p := m.resolve(data.parent)) is not None]
        with state.main_process_first():  # the main process encodes and writes; the others then read
            log(f"feature cache: {cache.build(enc, items)}")
    if save_tokenizer is None:
        save_tokenizer = not str(config.llm).startswith(BUILTIN_LLM_PREFIX)
        if not save_tokenizer:
            log(f"the tokenizer is not saved: it is rebuilt from the built-in base {config.llm} on load")
    collate = Collator(model, cache=cache, base_dir=data.parent, decision_weight=decision_weight)
    if decision_weight != 1.0:
        log(f"decision tokens weigh {decision_weight:g}x in the loss (see training/decision_tokens.py)")
    model.config.trained_tasks = [spec_dict(t) for t in collate.tasks]  # the prompt it learns, saved with it
    loss = TargetLoss(model, share_prefix=share_prefix, reduction="sum")
    trainer = Trainer(
        loss,
        samples,
        collate,
        train,
        on_log=lambda r: None,
        cpu=state.device.type == "cpu",
        run_info=run_info,
        on_start=lambda: plan.drop_later(log),
        keep_checkpoints=keep_checkpoints,
    )
    if resume is not None:
        trainer.load_checkpoint(resume)  # checks names and shapes before it changes anything
        log(f"resumed at step {trainer.step}")
    if main:
        plan.prepare_run_dir(log)
    state.wait_for_everyone()
    t1 = time.perf_counter()
    try:
        history = trainer.train()
    except KeyboardInterrupt as e:
        last = last_complete_checkpoint(plan.run_dir)
        where = f"resume with --resume {last}" if last is not None else "no checkpoint was written yet"
        log(f"interrupted at step {trainer.step}; {where}")
        e.reported = True  # type: ignore[attr-defined]
        raise
    wall = time.perf_counter() - t1
    if not main:
        state.wait_for_everyone()  # the main process writes the model
        return Path(plan.output)
    staging = staging_folder(plan.output)
    model.save_pretrained(staging, tokenizer=save_tokenizer)
    card = {
        "data": str(data),
        "samples": len(samples),
        "init_from": None if init_from is None else str(init_from),
        "train": asdict(train),
        "model": config.to_dict(),
        "wall_s": round(wall, 1),
        "final_loss": history[-1]["loss"] if history else None,
        "loss_first_10": [round(h["loss"], 4) for h in history[:10]],
        "loss_last_10": [round(h["loss"], 4) for h in history[-10:]],
    }
    (staging / "training.json").write_text(json.dumps(card, indent=1), encoding="utf-8")
    out = replace_folder(staging, plan.output)
    log(f"{'replaced' if plan.replaces_model else 'saved'} {out} ({wall:.0f} s of training)")
    state.wait_for_everyone()
    return out


def _quiet(message: str) -> None:
    """The log of a process other than the main one: says nothing."""


def process_state(device: str = "auto") -> Any:
    """accelerate's ``PartialState`` for this process (one, or one of those ``accelerate launch`` started).

    ``device`` is a resolved ``--device``: ``cpu`` keeps every process on the CPU (gloo), ``cuda:N`` picks
    GPU N for a single process; ``auto``/``cuda``/``mps`` leave it to accelerate (GPU ``LOCAL_RANK`` per
    process). ValueError when ``cuda:N`` is given to several processes, the device did not come out, or a
    DeepSpeed or FSDP launch landed on the CPU (accelerate would train plain DDP and say nothing).
    """
    import os

    import torch
    from accelerate import PartialState

    if device.startswith("cuda:"):
        if int(os.environ.get("WORLD_SIZE", "1")) > 1:
            raise ValueError(
                f"--device {device} picks one GPU, but this is one of several processes; give --device cuda "
                "(one GPU per process) and choose GPUs with CUDA_VISIBLE_DEVICES or accelerate launch --gpu_ids"
            )
        torch.cuda.set_device(int(device.partition(":")[2]))
    state = PartialState(cpu=device == "cpu")
    for engine, name in (("DEEPSPEED", "DeepSpeed"), ("FSDP", "FSDP")):
        # accelerate runs DeepSpeed and FSDP only on accelerators; on the CPU it would quietly train plain DDP
        if os.environ.get(f"ACCELERATE_USE_{engine}", "false").lower() == "true" and state.device.type == "cpu":
            raise ValueError(
                f"this launch asks for {name} (distributed_type: {engine}), which accelerate runs on GPUs only, and "
                f"this process is on {state.device}; on CPUs launch with examples/accelerate/ddp.yaml (gloo) instead"
            )
    want = device.partition(":")[0]
    if want != "auto" and state.device.type != want:
        raise ValueError(f"--device {device}: accelerate put this process on {state.device}; check the launch config")
    return state


def _media_items(sample: Sample, base_dir: Path) -> list[tuple[str, MediaItem]]:
    """A sample's media; a placeholder (no file) becomes an empty item the blind model marks as present."""
    out = []
    for m in sample.media:
        path = m.resolve(base_dir)
        item = load_media(path) if path is not None else MediaItem(m.modality, "application/octet-stream", b"", m.id)
        out.append((m.id, item))
    return out


def predict_fn(model: Any, base_dir: Path) -> Callable[[Sequence[Sample]], Sequence[str | Completion | MediaError]]:
    """A batch predictor for :func:`~.evaluate.evaluate`: ``model.complete_batch`` (texts with finish
    reasons) when the model has it, else ``model.respond_batch``. A sample whose media cannot be read is
    not asked: its MediaError stands in for the answer (the report gives it as that sample's error)."""

    def predict(batch: Sequence[Sample]) -> Sequence[str | Completion | MediaError]:
        requests, failed = [], {}
        for n, s in enumerate(batch):
            try:
                media = _media_items(s, base_dir)
            except MediaError as e:  # that sample's error in the report, not the end of the run
                failed[n] = e
                continue
            specs = offered_specs(s)
            requests.append(LLMRequest(s.instruction, media, standard_schema([i for i, _ in media], specs), specs))
        if not requests:
            answers: list[str | Completion] = []
        elif hasattr(model, "complete_batch"):
            answers = list(model.complete_batch(requests))
        else:
            answers = list(model.respond_batch(requests))
        if not failed:
            return answers
        rest = iter(answers)
        return [failed[n] if n in failed else next(rest) for n in range(len(batch))]

    return predict


class _PerAnswerBudgetWarning(logging.Filter):
    """Drops the engines' token-budget warnings (the report counts those answers instead)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (isinstance(record.msg, str) and record.msg.startswith(BUDGET_WARNING))


@contextlib.contextmanager
def budget_warnings_counted() -> Iterator[None]:
    """Hold back the engines' per-answer token-budget warnings: the report counts those answers once
    (``EvalReport.closed_early`` and a note) instead of a line per answer with indices that restart per batch."""
    target = logging.getLogger(RESPONDER_LOGGER)
    quiet = _PerAnswerBudgetWarning()
    target.addFilter(quiet)
    try:
        yield
    finally:
        target.removeFilter(quiet)


def load_eval_samples(
    data: str | Path, *, limit: int | None = None, seed: int = 0, offered: Sequence[str] | None = None
) -> tuple[list[Sample], Path]:
    """Samples to evaluate and the folder their media paths are relative to.

    ``data`` is a held-out JSONL, a file or folder of the natural set, or ``"natural"`` (the built-in
    natural set). A JSONL's media files must exist (relative paths start from its folder). ``limit`` takes a
    seeded subset. ``offered`` asks every sample with only those tasks in the system prompt (references
    narrowed: :func:`~.narrowing.offer_only`). DatasetError (one line, naming FILE:LINE for a bad sample) when
    it cannot be read or is empty.
    """
    if limit is not None and limit < 1:
        raise DatasetError(f"--limit must be at least 1, not {limit}")
    path = NATURAL_DIR if str(data) == "natural" else Path(data)
    if not path.exists():
        raise DatasetError(f"{path}: no such file or folder (give a JSONL, or `natural` for the built-in natural set)")
    # a held-out JSONL's media files must exist: a missing one is refused here, naming its line, not mid-run
    samples = read_natural(path) if path.is_dir() or is_natural(path) else read_samples(path, media_dir=path.parent)
    if not samples:
        raise DatasetError(f"{path}: no samples to evaluate")
    if limit is not None and limit < len(samples):
        samples = random.Random(seed).sample(samples, limit)
    if offered is not None:
        samples = [offer_only(s, offered) for s in samples]
    return samples, path if path.is_dir() else path.parent


def evaluate_model(
    model: Any,
    data: str | Path,
    *,
    limit: int | None = None,
    batch_size: int = 16,
    seed: int = 0,
    offered: Sequence[str] | None = None,
) -> EvalReport:
    """Evaluate ``model`` on a held-out JSONL or the natural set (a seeded subset of ``limit`` samples if given;
    ``offered``: only those tasks in the system prompt, see :func:`load_eval_samples`)."""
    samples, base_dir = load_eval_samples(data, limit=limit, seed=seed, offered=offered)
    with budget_warnings_counted():
        return evaluate(samples, predict_fn(model, base_dir), batch_size=batch_size)
