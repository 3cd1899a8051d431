"""Which torch device and dtype the model runs on: ``--device`` / ``--dtype`` for every command that loads one.

``auto`` takes a GPU when there is one (cuda, then mps, else cpu). torch is imported inside the functions so
a command's ``--help`` stays fast. Generators keep their own device (the zoo option ``device``).
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from .errors import ModelError

if TYPE_CHECKING:
    import torch

#: The device names ``--device`` accepts.
DEVICE_RE = re.compile(r"^(auto|cpu|mps|cuda(:[0-9]+)?)$")
#: The dtype names ``--dtype`` accepts.
DTYPES = ("auto", "float32", "bfloat16", "float16")


def torch_build() -> str:
    """A short description of the installed torch: ``torch 2.4.0 cpu build`` / ``torch 2.4.0 CUDA 12.1 build``."""
    import torch

    base = torch.__version__.split("+")[0]
    if torch.version.cuda:
        return f"torch {base} CUDA {torch.version.cuda} build"
    if getattr(torch.version, "hip", None):
        return f"torch {base} ROCm {torch.version.hip} build"
    return f"torch {base} cpu build"


def _mps_available() -> bool:
    import torch

    mps = getattr(torch.backends, "mps", None)
    return bool(mps is not None and mps.is_available())


def resolve_device(spec: str | None = "auto") -> str:
    """``"cpu"``, ``"cuda"``, ``"cuda:N"`` or ``"mps"`` for ``spec`` (``None``/``"auto"``: cuda, then mps, else cpu).

    Raises :class:`ModelError` with what to do when the string is malformed or the device is not there.
    """
    name = "auto" if spec is None else spec.strip().lower()
    if not DEVICE_RE.match(name):
        raise ModelError(f"--device {spec}: unknown device; use auto, cpu, cuda, cuda:N (N = 0, 1, ...) or mps")
    import torch

    if name == "auto":
        if torch.cuda.is_available():
            return "cuda"
        return "mps" if _mps_available() else "cpu"
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            if torch.version.cuda or getattr(torch.version, "hip", None):
                hint = "check the GPU driver and CUDA_VISIBLE_DEVICES, or use --device cpu"
            else:
                hint = "use --device cpu or install a CUDA build of torch"
            raise ModelError(f"--device {name}: no CUDA device is visible to torch ({torch_build()}); {hint}")
        count = torch.cuda.device_count()
        index = int(name.partition(":")[2] or 0)
        if index >= count:
            raise ModelError(
                f"--device {name}: torch sees {count} CUDA device(s) (cuda:0 to cuda:{count - 1}); pick one of them"
            )
    elif name == "mps" and not _mps_available():
        raise ModelError(
            f"--device mps: MPS (Apple GPU) is not available to torch ({torch_build()}); use --device cpu or auto"
        )
    return name


def resolve_dtype(spec: str | None, device: str) -> torch.dtype:
    """The torch dtype for ``spec`` on ``device`` (``None``/``"auto"``: bfloat16 on CUDA when the GPU supports it,
    else float16 on cuda/mps, float32 on cpu). Raises :class:`ModelError` for an unknown name."""
    import torch

    name = "auto" if spec is None else spec.strip().lower()
    if name not in DTYPES:
        raise ModelError(f"--dtype {spec}: unknown dtype; use one of {', '.join(DTYPES)}")
    if name != "auto":
        return getattr(torch, name)
    if device.startswith("cuda"):
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if device == "mps":
        return torch.float16
    return torch.float32


def device_option(command: Any) -> Any:
    """Click decorator: ``--device`` (default ``auto``), resolved later with :func:`resolve_device`."""
    import click

    return click.option(
        "--device",
        default="auto",
        show_default=True,
        metavar="auto|cpu|cuda|cuda:N|mps",
        help="Where the model (LLM, media encoder and projectors) runs. auto: the first CUDA GPU, else Apple "
        "MPS, else the CPU. Generators keep their own device (modaverse zoo set TASK -o device=...).",
    )(command)


def dtype_option(command: Any) -> Any:
    """Click decorator: ``--dtype`` (default ``auto``), resolved later with :func:`resolve_dtype`."""
    import click

    return click.option(
        "--dtype",
        type=click.Choice(DTYPES),
        default="auto",
        show_default=True,
        help="Weights of the model on its device. auto: bfloat16 on a CUDA GPU that supports it (else "
        "float16), float16 on mps, float32 on the CPU.",
    )(command)
