"""``modaverse train`` and ``modaverse eval`` (added by the built-in training plugin)."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from modaverse_agent.cli import engine_options
from modaverse_agent.devices import device_option, dtype_option


def _device_and_dtype(device: str, dtype: str) -> tuple[str, str]:
    """The resolved ``--device`` and ``--dtype`` name; a missing device or bad name exits with its one-line error."""
    from modaverse_agent.devices import resolve_device, resolve_dtype
    from modaverse_agent.errors import ModaVerseError

    try:
        where = resolve_device(device)
        return where, str(resolve_dtype(dtype, where)).removeprefix("torch.")
    except ModaVerseError as e:
        click.echo(f"Error: {e}", err=True)
        sys.exit(2)


@click.command("train")
@click.option("--data", required=True, type=click.Path(exists=True, dir_okay=False), help="Training JSONL.")
@click.option("--output", "-o", required=True, type=click.Path(file_okay=False), help="ModaVerse dir to write.")
@click.option("--llm", help="Base LLM: a local dir, a hub id, a .gguf path or modaverse:gemma-3-270m.")
@click.option(
    "--init-from",
    type=click.Path(exists=True, file_okay=False),
    help="Continue from a trained ModaVerse dir (its config and weights; fresh optimizer and schedule).",
)
@click.option("--run-dir", type=click.Path(file_okay=False), help="Checkpoints and metrics (default: OUTPUT.run).")
@click.option("--steps", default=200, show_default=True, type=click.IntRange(min=1))
@click.option(
    "--batch-size",
    default=8,
    show_default=True,
    type=click.IntRange(min=1),
    help="Samples per micro-batch, over all processes: under accelerate launch / torchrun each of N processes "
    "takes BATCH_SIZE/N of them, so N processes train like one.",
)
@click.option(
    "--grad-accum",
    default=1,
    show_default=True,
    type=click.IntRange(min=1),
    help="Micro-batches per optimizer step (a step sees BATCH_SIZE x GRAD_ACCUM samples).",
)
@click.option("--lr", default=2e-4, show_default=True)
@click.option(
    "--warmup",
    default=0.05,
    show_default=True,
    help="Warmup: whole steps (e.g. 10), or a fraction of --steps below 1 (0.05: 5% of the steps).",
)
@click.option(
    "--save-every",
    default=25,
    show_default=True,
    type=click.IntRange(min=0),
    help="Checkpoint every N steps (0: only at the end).",
)
@click.option(
    "--keep-checkpoints",
    type=click.IntRange(min=1),
    help="Keep only the newest N checkpoints in the run folder [default: all].",
)
@click.option("--seed", default=0, show_default=True)
@click.option(
    "--decision-weight",
    default=1.0,
    show_default=True,
    type=click.FloatRange(min=0, min_open=True),
    help="Loss weight of the tokens that route a request (the first word of the text, whether and which "
    "tasks are called) against 1 for every other target token.",
)
@click.option("--lora-r", default=16, show_default=True)
@click.option("--lora-alpha", default=32, show_default=True)
@click.option(
    "--lora-dropout",
    default=0.05,
    show_default=True,
    type=click.FloatRange(0, 1, max_open=True),
    help="LoRA dropout (0: N processes give exactly the weights of one; dropout draws differ per process).",
)
@click.option(
    "--lora-targets",
    default="q_proj,k_proj,v_proj,o_proj",
    show_default=True,
    help="Comma-separated module names LoRA adapts (add lm_head, MLPs for small or random bases).",
)
@click.option(
    "--prompt-format", default="auto", show_default=True, type=click.Choice(["auto", "chat", "plain", "legacy"])
)
@click.option(
    "--train-embeddings",
    is_flag=True,
    help="Also train the whole embedding table and output layer (saved in full; for small or random bases).",
)
@click.option("--blind-media", is_flag=True, help="No encoder: mark media as present with zero features.")
@click.option("--encoder", type=click.Path(exists=True), help="Local ImageBind weights (features are cached).")
@click.option("--encoder-config", default="huge", show_default=True)
@click.option(
    "--mixed-precision",
    default="no",
    type=click.Choice(["no", "bf16", "fp16"]),
    show_default=True,
    help="Autocast the forward pass (GPU; keep --dtype float32 for float32 master weights).",
)
@device_option
@dtype_option
@click.option(
    "--resume",
    type=click.Path(exists=True, file_okay=False),
    help="A checkpoint-N dir to continue. Options left out come from it; those given must equal its own, "
    "except --steps, which moves the end of the run (the cosine decay is stretched to it).",
)
@click.option(
    "--overwrite",
    is_flag=True,
    help="Replace the model already in OUTPUT and start the run folder over (its old checkpoints and metrics go).",
)
@click.option("--max-samples", type=click.IntRange(min=1), help="Train on a seeded subset of this many samples.")
@click.option("--threads", type=click.IntRange(min=1), help="torch threads (default: torch's choice).")
@click.option(
    "--tokenizer/--no-tokenizer",
    "save_tokenizer",
    default=None,
    help="Save the tokenizer in OUTPUT (33 MB for Gemma). Default: saved, except for a built-in base "
    "(modaverse:...), whose tokenizer is rebuilt from the base on load.",
)
def train(
    data: str,
    output: str,
    llm: str | None,
    init_from: str | None,
    run_dir: str | None,
    steps: int,
    batch_size: int,
    grad_accum: int,
    lr: float,
    warmup: float,
    save_every: int,
    keep_checkpoints: int | None,
    seed: int,
    decision_weight: float,
    lora_r: int,
    lora_alpha: int,
    lora_dropout: float,
    lora_targets: str,
    prompt_format: str,
    train_embeddings: bool,
    blind_media: bool,
    encoder: str | None,
    encoder_config: str,
    mixed_precision: str,
    device: str,
    dtype: str,
    resume: str | None,
    overwrite: bool,
    max_samples: int | None,
    threads: int | None,
    save_tokenizer: bool | None,
) -> None:
    """Train projectors + LoRA in one stage on instruction-invocation pairs (I/O alignment).

    Several processes (DDP, DeepSpeed, FSDP): run it under `accelerate launch` or `torchrun`; see
    docs/distributed-training.md.
    """
    import torch

    from modaverse_agent.errors import ModaVerseError

    from .trainer import TrainConfig, resolve_warmup
    from .workflows import train_model

    if (llm is None) == (init_from is None):
        raise click.UsageError("give either --llm (a new model) or --init-from (continue a trained one)")
    given = _given_options(click.get_current_context())
    warmup_steps = None
    if resume is not None:  # options left out are the checkpoint's
        try:
            taken = _checkpoint_options(resume, given)
        except ModaVerseError as e:
            click.echo(f"Error: {e}", err=True)
            sys.exit(2)
        warmup_steps = taken.pop("warmup_steps", None)
        if warmup_steps is not None and warmup_steps > taken.get("steps", steps) and "warmup" not in given:
            click.echo(
                f"Error: --steps {steps} ends the run inside the checkpoint's {warmup_steps} warmup steps; give "
                "more steps",
                err=True,
            )
            sys.exit(2)
        steps = taken.pop("steps", steps)
        batch_size, grad_accum = taken.pop("batch_size", batch_size), taken.pop("grad_accum", grad_accum)
        lr, save_every, seed = taken.pop("lr", lr), taken.pop("save_every", save_every), taken.pop("seed", seed)
        decision_weight = taken.pop("decision_weight", decision_weight)
        mixed_precision = taken.pop("mixed_precision", mixed_precision)
        max_samples = taken.pop("max_samples", max_samples)
        lora_r, lora_alpha = taken.pop("lora_r", lora_r), taken.pop("lora_alpha", lora_alpha)
        lora_dropout, lora_targets = taken.pop("lora_dropout", lora_dropout), taken.pop("lora_targets", lora_targets)
        prompt_format, blind_media = taken.pop("prompt_format", prompt_format), taken.pop("blind_media", blind_media)
        train_embeddings = taken.pop("train_embeddings", train_embeddings)
        encoder, encoder_config = taken.pop("encoder", encoder), taken.pop("encoder_config", encoder_config)
    if threads:
        torch.set_num_threads(threads)
    where, weights = _device_and_dtype(device, dtype)
    try:
        cfg = TrainConfig(
            output_dir=run_dir or f"{output}.run",
            max_steps=steps,
            batch_size=batch_size,
            grad_accum=grad_accum,
            lr=lr,
            warmup_steps=resolve_warmup(warmup, steps) if warmup_steps is None else warmup_steps,
            save_every=save_every,
            seed=seed,
            mixed_precision=mixed_precision,
        )
    except ValueError as e:
        click.echo(f"Error: {e}", err=True)
        sys.exit(2)
    options: dict[str, object] = {
        "lora_r": lora_r,
        "lora_alpha": lora_alpha,
        "lora_dropout": lora_dropout,
        "prompt_format": prompt_format,
        "blind_media": blind_media,
        "train_embeddings": train_embeddings,
        "lora_targets": [t.strip() for t in lora_targets.split(",") if t.strip()],
    }
    if init_from is not None:  # the trained model's own options; those given must repeat them
        options = {k: v for k, v in options.items() if k in given}
    try:
        train_model(
            data,
            output,
            llm=llm,
            init_from=init_from,
            train=cfg,
            model_options=options,
            encoder=encoder,
            encoder_config=encoder_config,
            resume=resume,
            max_samples=max_samples,
            decision_weight=decision_weight,
            save_tokenizer=save_tokenizer,
            overwrite=overwrite,
            device=where,
            dtype=weights,
            keep_checkpoints=keep_checkpoints,
            log=lambda m: click.echo(m, err=True),
        )
    except (ModaVerseError, ValueError) as e:
        click.echo(f"Error: {e}", err=True)
        sys.exit(2)
    except KeyboardInterrupt:
        sys.exit(130)  # train_model said at which step, and which checkpoint to resume from


def _given_options(ctx: click.Context) -> set[str]:
    """The parameters given on the command line (or by environment), not left at their defaults."""
    from click.core import ParameterSource

    return {
        name
        for name in ctx.params
        if ctx.get_parameter_source(name) not in (ParameterSource.DEFAULT, ParameterSource.DEFAULT_MAP, None)
    }


def _checkpoint_options(resume: str, given: set[str]) -> dict[str, object]:
    """The options of the checkpoint's run for each one not in ``given`` (ModelError when it does not read)."""
    from .trainer import read_checkpoint_state

    meta = read_checkpoint_state(resume)
    cfg, model = meta["config"], (meta.get("run") or {}).get("model") or {}
    found: dict[str, object] = {
        "steps": cfg.get("max_steps"),
        "batch_size": cfg.get("batch_size"),
        "grad_accum": cfg.get("grad_accum"),
        "lr": cfg.get("lr"),
        "warmup_steps": cfg.get("warmup_steps"),
        "save_every": cfg.get("save_every"),
        "seed": cfg.get("seed"),
        "mixed_precision": cfg.get("mixed_precision"),
        "decision_weight": (cfg.get("extra") or {}).get("decision_weight", 1.0),
    }
    if "max_samples" in (meta.get("run") or {}):
        found["max_samples"] = meta["run"]["max_samples"]
    for key in ("lora_r", "lora_alpha", "lora_dropout", "prompt_format", "blind_media", "train_embeddings"):
        found[key] = model.get(key)
    found["encoder"], found["encoder_config"] = model.get("encoder"), model.get("encoder_config")
    if isinstance(model.get("lora_targets"), list):
        found["lora_targets"] = ",".join(model["lora_targets"])
    option = {"warmup_steps": "warmup"}
    return {k: v for k, v in found.items() if v is not None and option.get(k, k) not in given}


@click.command("eval")
@click.option("--model", "model_dir", required=True, type=click.Path(exists=True, file_okay=False))
@click.option(
    "--data",
    required=True,
    help="Held-out JSONL, or `natural` for the built-in natural set (requests written blind to the templates).",
)
@click.option("--output", "-o", type=click.Path(dir_okay=False), help="Write the report as JSON here.")
@click.option("--limit", type=int, help="Evaluate a seeded subset of this many samples.")
@click.option("--batch-size", default=16, show_default=True, type=click.IntRange(min=1))
@click.option("--constrained/--no-constrained", default=True, show_default=True)
@click.option("--max-new-tokens", default=160, show_default=True, type=click.IntRange(min=1))
@click.option("--threads", type=click.IntRange(min=1), help="torch / llama.cpp threads (default: their choice).")
@click.option(
    "--offer",
    help="Offer only these tasks in the system prompt (comma-separated, or `none`), as a zoo without the "
    "other generators or `bind_tools` would; references keep only offered tasks [default: all standard tasks].",
)
@engine_options
@device_option
@dtype_option
def evaluate_command(
    model_dir: str,
    data: str,
    output: str | None,
    limit: int | None,
    batch_size: int,
    constrained: bool,
    max_new_tokens: int,
    threads: int | None,
    offer: str | None,
    engine: str,
    gguf: str | None,
    device: str,
    dtype: str,
) -> None:
    """Evaluate a ModaVerse dir on held-out samples: validity, task accuracy, prompt similarity.

    --device and --dtype place the model as for `modaverse run`: the torch engine on that device and dtype
    (--dtype auto keeps the saved dtype on the CPU); llama.cpp offloads its layers to a GPU and refuses
    --dtype (it runs the GGUF's own weights).
    """
    import torch

    from modaverse_agent.errors import ModaVerseError
    from modaverse_agent.model.engines import resolve_engine
    from modaverse_agent.model.llamacpp import load_engine
    from modaverse_agent.model.placement import Placement

    from .evaluate import evaluate, write_report
    from .outputs import check_model_folder
    from .workflows import budget_warnings_counted, load_eval_samples, predict_fn

    try:  # the arguments, the data and the model folder are checked before the model loads
        placement = Placement(device, dtype)
        offered = None if offer is None else tuple(t.strip() for t in offer.split(",") if t.strip() not in ("", "none"))
        samples, base_dir = load_eval_samples(data, limit=limit, offered=offered)
        check_model_folder(model_dir)
        on_llamacpp = resolve_engine(model_dir, engine, gguf, placement) == "llama.cpp"
        if on_llamacpp:
            placement.refuse_torch_only()
    except ModaVerseError as e:
        click.echo(f"Error: {e}", err=True)
        sys.exit(2)
    if not on_llamacpp:
        _device_and_dtype(device, dtype)  # a missing GPU: one line, before the model loads
    if threads:
        torch.set_num_threads(threads)
    try:
        model = load_engine(
            model_dir,
            engine,
            gguf=gguf,
            n_threads=threads,
            log=lambda m: click.echo(m, err=True),
            merge=True,
            placement=placement,
        )
    except ModaVerseError as e:
        click.echo(f"Error: {e}", err=True)
        sys.exit(2)
    model.options.constrained = constrained
    model.options.max_new_tokens = max_new_tokens
    with budget_warnings_counted():
        report = evaluate(samples, predict_fn(model, base_dir), batch_size=batch_size)
    click.echo(report.table())
    if output:
        click.echo(f"report: {write_report(report, Path(output))}")
