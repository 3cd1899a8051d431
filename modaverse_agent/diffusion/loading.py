"""Loading a diffusers pipeline from a hub id, a local directory or the tiny cache, and running it, with
errors that name the model and say what to do."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import GeneratorError
from .devices import resolve_device, resolve_dtype
from .tiny import TINY_RANDOM, UNTRAINED_KEY, tiny_pipeline_dir


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


def _short(e: BaseException, limit: int = 240) -> str:
    text = " ".join(str(e).split())
    return text if len(text) <= limit else text[:limit] + "..."


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
        with _quiet_library_logs():  # deprecation and "requires torchvision" lines a user cannot act on
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


def call_pipeline(generator: str, fn: Callable[..., Any], /, **kwargs: Any) -> Any:
    """Run a pipeline call, turning diffusers' input errors and runtime failures into GeneratorError."""
    try:
        return fn(**kwargs)
    except ValueError as e:
        raise GeneratorError(f"generator {generator!r} rejected the request: {_short(e, 400)}") from e
    except RuntimeError as e:  # includes torch.OutOfMemoryError
        raise GeneratorError(
            f"generator {generator!r} failed while generating: {_short(e, 400)}; fewer steps or a smaller size may help"
        ) from e


@contextlib.contextmanager
def _quiet_library_logs() -> Iterator[None]:
    """diffusers' and transformers' loggers at error level while a pipeline loads; restored afterwards."""
    import diffusers.utils.logging as diffusers_logging
    import transformers.utils.logging as transformers_logging

    old = diffusers_logging.get_verbosity(), transformers_logging.get_verbosity()
    diffusers_logging.set_verbosity_error()
    transformers_logging.set_verbosity_error()
    try:
        yield
    finally:
        diffusers_logging.set_verbosity(old[0])
        transformers_logging.set_verbosity(old[1])
