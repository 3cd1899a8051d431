"""Shared diffusers plumbing for generator plugins: device and dtype, seeds, progress, loading, tiny pipelines.

torch, diffusers and transformers are imported inside functions only, so importing this module (and a
plugin built on it) stays light: listing plugins never pulls in the model stack.
"""

from __future__ import annotations

import gc
import os
import secrets
import shutil
import tempfile
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from .artifacts import Artifact
from .errors import GeneratorError
from .generators import GenerationCancelled, GenerationRequest, Generator, ProgressCallback

#: Value of the ``model`` option that builds a tiny random-weight pipeline from configs (no download).
TINY_RANDOM = "tiny-random"
#: Kinds of tiny pipeline :func:`build_tiny_pipeline` knows.
TINY_KINDS = ("stable-diffusion", "instruct-pix2pix", "text-to-video", "audioldm")
#: Key written into a tiny pipeline's ``model_index.json``: artifacts it makes are labelled untrained.
UNTRAINED_KEY = "_modaverse_untrained"
#: Bump when the tiny configs change, so stale cached builds are not reused.
TINY_VERSION = 1
SEED_MAX = 2**32 - 1
DTYPES = ("auto", "float32", "float16", "bfloat16")
_DEVICE_PATTERN = r"^(auto|cpu|mps|cuda(:[0-9]+)?)$"


def options_schema(default_model: str, extra: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The zoo options every diffusers generator takes (``model``, ``device``, ``dtype``, ``download``)."""
    props: dict[str, Any] = {
        "model": {
            "type": "string",
            "minLength": 1,
            "default": default_model,
            "description": f"Hugging Face model id or local diffusers directory; '{TINY_RANDOM}' builds an "
            "untrained tiny pipeline (no download)",
        },
        "device": {
            "type": "string",
            "pattern": _DEVICE_PATTERN,
            "default": "auto",
            "description": "auto (cuda, then mps, then cpu), cpu, mps, cuda or cuda:N",
        },
        "dtype": {"enum": list(DTYPES), "default": "auto", "description": "auto: float16 on cuda/mps, float32 on cpu"},
        "download": {
            "type": "boolean",
            "default": False,
            "description": "fetch missing weights from the Hugging Face Hub on first use",
        },
        **(extra or {}),
    }
    return {"type": "object", "properties": props, "additionalProperties": False}


def seed_schema() -> dict[str, Any]:
    """JSON Schema of the ``seed`` argument."""
    return {"type": "integer", "minimum": 0, "maximum": SEED_MAX, "description": "random seed (same seed, same output)"}


# -- device, dtype, seeds --------------------------------------------------------------------------------


def resolve_device(name: str = "auto") -> str:
    """``auto`` → cuda, then mps, then cpu; an explicit device must be usable with this torch."""
    import torch

    if name == "auto":
        if torch.cuda.is_available():
            return "cuda"
        mps = getattr(torch.backends, "mps", None)
        return "mps" if mps is not None and mps.is_available() else "cpu"
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise GeneratorError(
                f"device {name!r} requested but CUDA is not available to this torch ({torch.__version__}); "
                'set the zoo option device = "cpu" or "auto"'
            )
        index = int(name.partition(":")[2] or 0)
        if index >= torch.cuda.device_count():
            raise GeneratorError(f"device {name!r}: only {torch.cuda.device_count()} CUDA device(s) are visible")
    elif name == "mps":
        mps = getattr(torch.backends, "mps", None)
        if mps is None or not mps.is_available():
            raise GeneratorError('device \'mps\' requested but MPS is not available; set device = "cpu" or "auto"')
    elif name != "cpu":
        raise GeneratorError(f"unknown device {name!r}; use auto, cpu, mps, cuda or cuda:N")
    return name


def resolve_dtype(name: str, device: str) -> Any:
    """The torch dtype for ``name`` on ``device``: ``auto`` is float16 on cuda/mps and float32 on cpu."""
    import torch

    if name == "auto":
        return torch.float32 if device == "cpu" else torch.float16
    if name not in DTYPES:
        raise GeneratorError(f"unknown dtype {name!r}; use one of {list(DTYPES)}")
    if name == "float16" and device == "cpu":
        raise GeneratorError("dtype float16 is not supported on cpu; use float32 or bfloat16, or run on cuda/mps")
    return getattr(torch, name)


def resolve_seed(args: Mapping[str, Any], request: GenerationRequest) -> int:
    """The seed to use: the invocation's ``seed`` argument, else the request's, else a fresh random one."""
    seed = args.get("seed", request.seed)
    return secrets.randbelow(SEED_MAX + 1) if seed is None else int(seed)


def torch_generator(seed: int) -> Any:
    """A CPU ``torch.Generator`` seeded with ``seed``: the initial noise is then the same on every device."""
    import torch

    return torch.Generator(device="cpu").manual_seed(int(seed))


# -- progress --------------------------------------------------------------------------------------------


class StepProgress:
    """A progress bar over denoising steps that also reports ``(done, total)`` to a callback.

    Use as a context manager; pass :meth:`on_step_end` as ``callback_on_step_end`` (current pipelines)
    or :meth:`legacy` as ``callback`` (AudioLDM, text-to-video). When ``cancel`` is set, the next step
    raises :class:`~modaverse_agent.generators.GenerationCancelled`, which aborts the pipeline call.
    """

    def __init__(
        self,
        label: str,
        total: int,
        callback: ProgressCallback | None = None,
        cancel: threading.Event | None = None,
    ) -> None:
        self.label = label
        self.total = int(total)
        self.done = 0
        self.callback = callback
        self.cancel = cancel
        self._bar: Any = None

    def __enter__(self) -> StepProgress:
        from tqdm.auto import tqdm  # type: ignore[import-untyped]

        self._bar = tqdm(total=self.total, desc=self.label, unit="step", leave=False, disable=None)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    def step(self, done: int) -> None:
        """Record that ``done`` steps have finished; raise GenerationCancelled if the invocation was cancelled."""
        if self.cancel is not None and self.cancel.is_set():
            raise GenerationCancelled(f"{self.label}: cancelled after {self.done} of {self.total} steps")
        done = min(int(done), self.total)
        if self._bar is not None:
            self._bar.update(done - self.done)
        self.done = done
        if self.callback is not None:
            self.callback(done, self.total)

    def on_step_end(self, pipe: Any, i: int, t: Any, callback_kwargs: dict[str, Any]) -> dict[str, Any]:
        """diffusers ``callback_on_step_end`` signature; changes no tensor."""
        total = getattr(pipe, "num_timesteps", None)
        if isinstance(total, int) and total > 0 and total != self.total:
            self.total = total
            if self._bar is not None:
                self._bar.total = total
        self.step(i + 1)
        return {}

    def legacy(self, i: int, t: Any, latents: Any) -> None:
        """diffusers' older ``callback(step, timestep, latents)`` signature."""
        self.step(i + 1)


# -- loading ---------------------------------------------------------------------------------------------


@dataclass
class LoadedPipeline:
    """A diffusers pipeline on its device, and where it came from."""

    pipe: Any
    model: str
    source: str
    untrained: bool
    device: str
    dtype: str


def _looks_like_path(model: str) -> bool:
    return model.startswith(("/", "~", "./", "../", ".\\", "..\\")) or "\\" in model or model.count("/") > 1


def _missing_weights(model: str, generator: str, cause: BaseException, *, download: bool) -> GeneratorError:
    where = (
        f"could not be fetched from the Hugging Face Hub ({_short(cause)}); check the id and the connection"
        if download
        else "are not in the local Hugging Face cache"
    )
    return GeneratorError(
        f"weights for model {model!r} (generator {generator!r}) {where}. "
        f"Download them with `hf download {model}`"
        + ("" if download else ", or set the zoo option `download = true` to fetch them on first use")
        + f', or point the option `model` at a local diffusers directory ([generators.{generator}] model = "/path").'
    )


def _unreadable(model: str, generator: str, cause: BaseException) -> GeneratorError:
    return GeneratorError(
        f"could not load model {model!r} for generator {generator!r}: {_short(cause)}; check that it is a "
        "complete diffusers pipeline (save it again with `save_pretrained`, or download it again)"
    )


def _short(e: BaseException, limit: int = 240) -> str:
    text = " ".join(str(e).split())
    return text if len(text) <= limit else text[:limit] + "..."


def pipeline_source(model: str, generator: str, tiny_kind: str) -> str:
    """Where to load ``model`` from: the tiny-pipeline cache, a local directory (checked) or a hub id."""
    if model == TINY_RANDOM:
        return str(tiny_pipeline_dir(tiny_kind))
    path = Path(model).expanduser()
    if path.exists() or _looks_like_path(model):
        if not path.is_dir():
            raise GeneratorError(
                f"model directory {str(path)!r} for generator {generator!r} does not exist; point the zoo option "
                f"`model` at a diffusers pipeline directory, or give a Hugging Face model id"
            )
        if not (path / "model_index.json").is_file():
            raise GeneratorError(
                f"model directory {str(path)!r} for generator {generator!r} holds no model_index.json, so it is "
                "not a diffusers pipeline; save one with `pipeline.save_pretrained(dir)` or fetch one with "
                "`hf download <model id> --local-dir <dir>`"
            )
        return str(path.resolve())
    return model


def load_pipeline(
    model: str,
    *,
    generator: str,
    accepted: tuple[str, ...],
    tiny_kind: str,
    device: str = "auto",
    dtype: str = "auto",
    download: bool = False,
) -> LoadedPipeline:
    """Load a diffusers pipeline whose class is one of ``accepted`` onto ``device``.

    ``model`` is a hub id, a local directory or :data:`TINY_RANDOM`. Missing weights, a wrong path or a
    pipeline of another kind raise a :class:`GeneratorError` that names the model and says what to do.
    """
    dev = resolve_device(device)
    torch_dtype = resolve_dtype(dtype, dev)
    source = pipeline_source(model, generator, tiny_kind)
    import diffusers

    local_only = not download
    local_dir = Path(source).is_dir()
    try:
        config = diffusers.DiffusionPipeline.load_config(source, local_files_only=local_only)
    except (OSError, ValueError) as e:
        raise (
            _unreadable(model, generator, e) if local_dir else _missing_weights(model, generator, e, download=download)
        ) from e
    class_name = config.get("_class_name")
    if class_name not in accepted:
        raise GeneratorError(
            f"model {model!r} is a {class_name or 'unknown'} pipeline, but generator {generator!r} runs "
            f"{' / '.join(accepted)}; point the zoo option `model` at a matching model"
        )
    pipeline_class = getattr(diffusers, class_name)
    try:
        pipe = pipeline_class.from_pretrained(source, dtype=torch_dtype, local_files_only=local_only)
    except OSError as e:
        raise (
            _unreadable(model, generator, e) if local_dir else _missing_weights(model, generator, e, download=download)
        ) from e
    except ImportError as e:
        raise GeneratorError(
            f"model {model!r} for generator {generator!r} needs a package that is not installed: {_short(e)}; "
            "install it and retry"
        ) from e
    except (ValueError, TypeError, RuntimeError, KeyError) as e:
        raise _unreadable(model, generator, e) from e
    pipe.to(dev)
    pipe.set_progress_bar_config(disable=True)
    return LoadedPipeline(
        pipe=pipe,
        model=model,
        source=source,
        untrained=bool(config.get(UNTRAINED_KEY, False)),
        device=dev,
        dtype=str(torch_dtype).removeprefix("torch."),
    )


def free_memory(device: str) -> None:
    """Collect garbage and return cached accelerator memory after a pipeline was dropped."""
    gc.collect()
    import torch

    if device.startswith("cuda") and torch.cuda.is_available():
        torch.cuda.empty_cache()
    elif device == "mps" and hasattr(torch, "mps") and hasattr(torch.mps, "empty_cache"):
        torch.mps.empty_cache()


def call_pipeline(generator: str, fn: Any, /, **kwargs: Any) -> Any:
    """Run a pipeline call, turning diffusers' input errors and runtime failures into GeneratorError."""
    try:
        return fn(**kwargs)
    except ValueError as e:
        raise GeneratorError(f"generator {generator!r} rejected the request: {_short(e, 400)}") from e
    except RuntimeError as e:  # includes torch.OutOfMemoryError
        raise GeneratorError(
            f"generator {generator!r} failed while generating: {_short(e, 400)}; fewer steps or a smaller size may help"
        ) from e


# -- per-device caps -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Cap:
    """A default upper bound on an argument, lower on a CPU than on an accelerator; a zoo option raises it.

    The schema keeps the argument's absolute limits; a cap bounds what one invocation may cost by default.
    """

    option: str  # the zoo option that overrides the cap, e.g. "max_steps"
    cpu: int | float
    accelerator: int | float  # cuda and mps
    what: str  # e.g. "denoising steps"

    def limit(self, device: str, override: Any = None) -> int | float:
        """The cap on ``device``: the zoo option when set, else the device's default."""
        if override is not None:
            return override
        return self.cpu if device == "cpu" else self.accelerator

    def option_schema(self) -> dict[str, Any]:
        """The JSON Schema of the overriding zoo option."""
        kind = "integer" if isinstance(self.cpu, int) and isinstance(self.accelerator, int) else "number"
        return {
            "type": kind,
            "exclusiveMinimum": 0,
            "description": f"most {self.what} an invocation may ask for "
            f"(default: {self.cpu:g} on cpu, {self.accelerator:g} on cuda/mps)",
        }


# -- the base class --------------------------------------------------------------------------------------


class DiffusersGenerator(Generator):
    """A generator backed by one diffusers pipeline, loaded lazily and kept until :meth:`unload`.

    Subclasses set ``default_model``, ``pipeline_classes`` (accepted diffusers class names) and
    ``tiny_kind``, plus the usual Generator attributes, and implement ``run`` with the helpers below.
    """

    default_model: ClassVar[str]
    pipeline_classes: ClassVar[tuple[str, ...]]
    tiny_kind: ClassVar[str]
    #: Extra zoo options (JSON Schema properties) on top of model/device/dtype/download.
    extra_options: ClassVar[dict[str, Any]] = {}
    #: Per-device caps on arguments (argument name -> Cap); each cap's option joins the zoo options.
    caps: ClassVar[dict[str, Cap]] = {}

    def __init_subclass__(cls, **kwargs: Any) -> None:
        if any(k in cls.__dict__ for k in ("default_model", "extra_options", "caps")):
            cap_options = {c.option: c.option_schema() for c in cls.caps.values()}
            cls.options_schema = options_schema(cls.default_model, {**cap_options, **cls.extra_options})
        super().__init_subclass__(**kwargs)

    def __init__(self, **options: Any) -> None:
        self._pipeline: LoadedPipeline | None = None
        super().__init__(**options)

    @property
    def untrained(self) -> bool:
        """True while the ``model`` option is the tiny random pipeline."""
        return self.option("model") == TINY_RANDOM

    def real_weights_hint(self) -> str:
        """The command that points this generator at the real default weights."""
        return f"modaverse zoo set {self.task} {self.name} -o model={self.default_model}"

    def load(self) -> None:
        """Load the pipeline named by the ``model`` option."""
        self._pipeline = load_pipeline(
            self.option("model"),
            generator=self.name,
            accepted=self.pipeline_classes,
            tiny_kind=self.tiny_kind,
            device=self.option("device"),
            dtype=self.option("dtype"),
            download=self.option("download"),
        )

    def release(self) -> None:
        """Drop the pipeline and free its memory."""
        loaded, self._pipeline = self._pipeline, None
        if loaded is not None:
            device = loaded.device
            del loaded
            free_memory(device)

    @property
    def pipeline(self) -> LoadedPipeline:
        """The loaded pipeline (loads it on first use)."""
        self.setup()
        if self._pipeline is None:
            raise GeneratorError(f"generator {self.name!r} has no pipeline after setup; call unload() and retry")
        return self._pipeline

    def check(self, request: GenerationRequest) -> None:
        """The base checks, then the per-device caps on the arguments (defaults included)."""
        super().check(request)
        if self.caps:
            args = self.arguments(request)
            for arg in self.caps:
                if arg in args:
                    self.within_cap(arg, args[arg])

    def cap_device(self) -> str:
        """The device the caps are read for: the loaded pipeline's, else the ``device`` option resolved."""
        loaded = self._pipeline
        return loaded.device if loaded is not None else resolve_device(self.option("device"))

    def cap(self, arg: str, device: str | None = None) -> int | float:
        """The cap on argument ``arg`` on ``device`` (default: :meth:`cap_device`)."""
        c = self.caps[arg]
        return c.limit(device or self.cap_device(), self.option(c.option))

    def within_cap(self, arg: str, value: Any, device: str | None = None) -> None:
        """Raise a GeneratorError naming ``arg``, its cap and the option that raises it when ``value`` is over."""
        dev = device or self.cap_device()
        limit = self.cap(arg, dev)
        if isinstance(value, int | float) and value > limit:
            option = self.caps[arg].option
            raise GeneratorError(
                f"args of generator {self.name!r}: {arg} {value:g} is over the cap of {limit:g} on {dev}; ask for "
                f"less, or raise the cap with `modaverse zoo set {self.task} {self.name} -o {option}={value:g}`"
            )

    def arguments(self, request: GenerationRequest) -> dict[str, Any]:
        """The invocation's arguments (``check`` validated them) with the schema's defaults filled in."""
        out = {k: s["default"] for k, s in self.args_schema.get("properties", {}).items() if "default" in s}
        out.update(request.args)
        return out

    def progress(self, request: GenerationRequest, total: int) -> StepProgress:
        """A step progress bar wired to ``request.progress`` that stops the pipeline once ``request.cancel`` is set."""
        return StepProgress(self.name, total, request.progress, request.cancel)

    def finish(self, request: GenerationRequest, path: Path, seed: int, **metadata: Any) -> Artifact:
        """The artifact for ``path``, recording the seed, model, device and whether the weights are untrained."""
        loaded = self.pipeline
        record = {
            "model": loaded.model,
            "pipeline": type(loaded.pipe).__name__,
            "device": loaded.device,
            "dtype": loaded.dtype,
            "seed": seed,
            **metadata,
        }
        if loaded.untrained:
            record["untrained"] = True
        art = self.artifact(request, path, **record)
        art.seed = seed
        return art

    def stem(self, seed: int) -> str:
        """A file-name stem for an output."""
        return f"{self.name}-{seed}"


# -- tiny random pipelines -------------------------------------------------------------------------------


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2/CLIP's reversible map from bytes to printable unicode characters."""
    bs = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, map(chr, cs), strict=True))


def _write_bpe(folder: Path, vocab: dict[str, int]) -> tuple[str, str]:
    """Write ``vocab.json`` and an empty ``merges.txt``; returns their paths."""
    import json

    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
    (folder / "merges.txt").write_text("#version: 0.2\n", encoding="utf-8")
    return str(folder / "vocab.json"), str(folder / "merges.txt")


def tiny_clip_tokenizer(max_length: int = 77) -> Any:
    """A byte-level CLIPTokenizer built offline: one token per byte (with and without ``</w>``), no merges."""
    from transformers import CLIPTokenizer

    chars = list(_bytes_to_unicode().values())
    vocab = {c: i for i, c in enumerate(chars)}
    vocab.update({c + "</w>": len(chars) + i for i, c in enumerate(chars)})
    vocab["<|startoftext|>"] = len(vocab)
    vocab["<|endoftext|>"] = len(vocab)
    with tempfile.TemporaryDirectory() as d:
        return CLIPTokenizer(*_write_bpe(Path(d), vocab), model_max_length=max_length)


def tiny_roberta_tokenizer(max_length: int = 77) -> Any:
    """A byte-level RobertaTokenizer built offline (for CLAP): one token per byte, no merges."""
    from transformers import RobertaTokenizer

    vocab = {"<s>": 0, "<pad>": 1, "</s>": 2, "<unk>": 3}
    for c in _bytes_to_unicode().values():
        vocab[c] = len(vocab)
    vocab["<mask>"] = len(vocab)
    with tempfile.TemporaryDirectory() as d:
        return RobertaTokenizer(*_write_bpe(Path(d), vocab), model_max_length=max_length)


def _tiny_clip_text() -> tuple[Any, Any]:
    from transformers import CLIPTextConfig, CLIPTextModel

    tokenizer = tiny_clip_tokenizer()
    eos = tokenizer.convert_tokens_to_ids("<|endoftext|>")
    config = CLIPTextConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=37,
        num_attention_heads=4,
        num_hidden_layers=2,
        max_position_embeddings=77,
        projection_dim=32,
        bos_token_id=tokenizer.convert_tokens_to_ids("<|startoftext|>"),
        eos_token_id=eos,
        pad_token_id=eos,
    )
    return CLIPTextModel(config), tokenizer


def _tiny_vae(channels: int = 3) -> Any:
    from diffusers import AutoencoderKL

    return AutoencoderKL(
        block_out_channels=(8, 16),
        in_channels=channels,
        out_channels=channels,
        down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
        up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"),
        latent_channels=4,
        norm_num_groups=8,
        sample_size=64,
    )


def _tiny_unet2d(in_channels: int = 4, **extra: Any) -> Any:
    from diffusers import UNet2DConditionModel

    kwargs: dict[str, Any] = {"cross_attention_dim": 32, **extra}
    return UNet2DConditionModel(
        block_out_channels=(8, 16),
        layers_per_block=1,
        sample_size=32,
        in_channels=in_channels,
        out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        norm_num_groups=8,
        attention_head_dim=4,
        **kwargs,
    )


def _ddim() -> Any:
    from diffusers import DDIMScheduler

    return DDIMScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        clip_sample=False,
        set_alpha_to_one=False,
        steps_offset=1,
    )


def _build(kind: str) -> Any:
    import diffusers

    if kind == "stable-diffusion":
        text_encoder, tokenizer = _tiny_clip_text()
        return diffusers.StableDiffusionPipeline(
            vae=_tiny_vae(),
            text_encoder=text_encoder,
            tokenizer=tokenizer,
            unet=_tiny_unet2d(),
            scheduler=_ddim(),
            safety_checker=None,
            feature_extractor=None,
            requires_safety_checker=False,
        )
    if kind == "instruct-pix2pix":
        text_encoder, tokenizer = _tiny_clip_text()
        return diffusers.StableDiffusionInstructPix2PixPipeline(
            vae=_tiny_vae(),
            text_encoder=text_encoder,
            tokenizer=tokenizer,
            unet=_tiny_unet2d(in_channels=8),  # noisy latents + image latents
            scheduler=diffusers.EulerAncestralDiscreteScheduler.from_config(_ddim().config),
            safety_checker=None,
            feature_extractor=None,
            requires_safety_checker=False,
        )
    if kind == "text-to-video":
        text_encoder, tokenizer = _tiny_clip_text()
        unet = diffusers.UNet3DConditionModel(
            block_out_channels=(8, 16),
            layers_per_block=1,
            sample_size=16,
            in_channels=4,
            out_channels=4,
            down_block_types=("CrossAttnDownBlock3D", "DownBlock3D"),
            up_block_types=("UpBlock3D", "CrossAttnUpBlock3D"),
            cross_attention_dim=32,
            attention_head_dim=4,
            norm_num_groups=8,
        )
        return diffusers.TextToVideoSDPipeline(
            vae=_tiny_vae(), text_encoder=text_encoder, tokenizer=tokenizer, unet=unet, scheduler=_ddim()
        )
    if kind == "audioldm":
        return _build_audioldm()
    raise GeneratorError(f"unknown tiny pipeline kind {kind!r}; known kinds: {list(TINY_KINDS)}")


def _build_audioldm() -> Any:
    import diffusers
    from transformers import ClapTextConfig, ClapTextModelWithProjection, SpeechT5HifiGan, SpeechT5HifiGanConfig

    tokenizer = tiny_roberta_tokenizer()
    text_encoder = ClapTextModelWithProjection(
        ClapTextConfig(
            vocab_size=len(tokenizer),
            hidden_size=32,
            intermediate_size=37,
            num_attention_heads=4,
            num_hidden_layers=2,
            projection_dim=32,
            max_position_embeddings=80,  # 77 tokens + Roberta's position offset (pad id + 1)
            bos_token_id=0,
            pad_token_id=1,
            eos_token_id=2,
        )
    )
    # The CLAP embedding conditions the UNet as a class embedding; its attention blocks self-attend,
    # so each block's cross-attention width is its own channel count.
    unet = _tiny_unet2d(
        cross_attention_dim=(8, 16),
        class_embed_type="simple_projection",
        projection_class_embeddings_input_dim=32,
        class_embeddings_concat=True,
    )
    # 8 mel bins, 64 samples per mel frame; a wider init than the default keeps random audio audible in 16-bit PCM.
    vocoder = SpeechT5HifiGan(
        SpeechT5HifiGanConfig(
            model_in_dim=8,
            sampling_rate=16000,
            upsample_initial_channel=16,
            upsample_rates=[8, 8],
            upsample_kernel_sizes=[16, 16],
            resblock_kernel_sizes=[3],
            resblock_dilation_sizes=[[1, 3]],
            normalize_before=False,
            initializer_range=0.3,
        )
    )
    return diffusers.AudioLDMPipeline(
        vae=_tiny_vae(channels=1),
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        unet=unet,
        scheduler=_ddim(),
        vocoder=vocoder,
    )


def build_tiny_pipeline(kind: str, *, seed: int = 0) -> Any:
    """A tiny random-weight diffusers pipeline of ``kind`` built from configs (no download, deterministic).

    Its config is marked untrained (``model_index.json`` keeps the mark through ``save_pretrained``), so
    artifacts it makes are labelled ``untrained``. The global torch RNG is left as it was.
    """
    if kind not in TINY_KINDS:
        raise GeneratorError(f"unknown tiny pipeline kind {kind!r}; known kinds: {list(TINY_KINDS)}")
    import torch

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        pipe = _build(kind)
    pipe.register_to_config(**{UNTRAINED_KEY: True})
    pipe.set_progress_bar_config(disable=True)
    return pipe


def tiny_cache_root() -> Path:
    """Where tiny pipelines are cached: ``<user cache dir>/modaverse/tiny-pipelines``."""
    import platformdirs

    return Path(platformdirs.user_cache_dir("modaverse")) / "tiny-pipelines"


def tiny_pipeline_dir(kind: str) -> Path:
    """The directory of the cached tiny pipeline of ``kind``, built and saved on first use."""
    if kind not in TINY_KINDS:
        raise GeneratorError(f"unknown tiny pipeline kind {kind!r}; known kinds: {list(TINY_KINDS)}")
    target = tiny_cache_root() / f"{kind}-v{TINY_VERSION}"
    if (target / "model_index.json").is_file():
        return target
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{kind}-", dir=target.parent))
        try:
            build_tiny_pipeline(kind).save_pretrained(tmp)
            if target.exists() and not (target / "model_index.json").is_file():
                shutil.rmtree(target)  # an incomplete leftover: replace it
            try:
                os.replace(tmp, target)
            except OSError:
                if not (target / "model_index.json").is_file():  # not a concurrent build that won the race
                    raise
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    except OSError as e:
        raise GeneratorError(
            f"cannot write the tiny {kind} pipeline under {target.parent} ({e.strerror or e}); free some space or "
            "make the user cache dir writable (on Linux, XDG_CACHE_HOME chooses it)"
        ) from e
    return target
