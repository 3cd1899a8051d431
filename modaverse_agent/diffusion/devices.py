"""Devices, dtypes, seeds and accelerator memory for diffusers pipelines (torch imported inside functions)."""

from __future__ import annotations

import gc
import secrets
from collections.abc import Mapping
from typing import Any

from ..errors import GeneratorError
from ..generators import GenerationRequest

SEED_MAX = 2**32 - 1
DTYPES = ("auto", "float32", "float16", "bfloat16")
#: JSON Schema pattern of the ``device`` zoo option.
DEVICE_PATTERN = r"^(auto|cpu|mps|cuda(:[0-9]+)?)$"


def seed_schema() -> dict[str, Any]:
    """JSON Schema of the ``seed`` argument."""
    return {"type": "integer", "minimum": 0, "maximum": SEED_MAX, "description": "random seed (same seed, same output)"}


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


def free_memory(device: str) -> None:
    """Collect garbage and return cached accelerator memory after a pipeline was dropped."""
    gc.collect()
    import torch

    if device.startswith("cuda") and torch.cuda.is_available():
        torch.cuda.empty_cache()
    elif device == "mps" and hasattr(torch, "mps") and hasattr(torch.mps, "empty_cache"):
        torch.mps.empty_cache()
