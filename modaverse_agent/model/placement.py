"""Where a loaded model runs: the ``--device`` / ``--dtype`` / ``--device-map`` choice, turned into what each
engine takes.

The torch engine puts the LLM, the projectors and the media encoder on one device in one dtype
(:func:`torch_placement`), or spreads the LLM over every visible GPU with accelerate's ``device_map="auto"``
(the encoder and projectors then sit with the LLM's input embeddings). The llama.cpp engine offloads layers
(:func:`llama_offload`: cpu -> none, a GPU -> all) and refuses what it cannot do: a ``--dtype`` (it runs the
GGUF's own quantisation), ``--device-map``, a GPU that its build cannot reach.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..devices import DEVICE_RE, DTYPES, resolve_device, resolve_dtype
from ..errors import ModelError

#: The values ``--device-map`` takes (None: the whole model on ``--device``).
DEVICE_MAPS = ("auto",)


@dataclass(frozen=True)
class Placement:
    """What the user asked for: ``device`` (auto, cpu, cuda, cuda:N, mps), ``dtype`` (auto, float32, bfloat16,
    float16) and ``device_map`` (None, or "auto": accelerate spreads the LLM over the visible GPUs)."""

    device: str = "auto"
    dtype: str = "auto"
    device_map: str | None = None

    def __post_init__(self) -> None:
        if not DEVICE_RE.match(self.device.strip().lower()):
            raise ModelError(
                f"--device {self.device}: unknown device; use auto, cpu, cuda, cuda:N (N = 0, 1, ...) or mps"
            )
        if self.dtype not in DTYPES:
            raise ModelError(f"--dtype {self.dtype}: unknown dtype; use one of {', '.join(DTYPES)}")
        if self.device_map is not None and self.device_map not in DEVICE_MAPS:
            raise ModelError(f"--device-map {self.device_map}: unknown; the one value is auto (or leave it out)")
        if self.device_map is not None and self.device.strip().lower() not in ("auto", "cuda"):
            raise ModelError(
                f"--device-map auto spreads the LLM over every visible GPU, so it goes with --device auto or cuda, "
                f"not --device {self.device}; choose the GPUs with CUDA_VISIBLE_DEVICES, or drop --device-map"
            )

    @property
    def is_default(self) -> bool:
        """Whether nothing was asked beyond ``auto``."""
        return self == Placement()

    def torch_only(self) -> str | None:
        """The flag that needs the torch engine (``--dtype X`` or ``--device-map auto``), or None."""
        if self.device_map is not None:
            return f"--device-map {self.device_map}"
        if self.dtype != "auto":
            return f"--dtype {self.dtype}"
        return None

    def refuse_torch_only(self) -> None:
        """For a command on the llama.cpp engine: a :class:`ModelError` naming a flag only torch can honour."""
        flag = self.torch_only()
        if flag is not None:
            raise ModelError(
                f"{flag} applies to the torch engine; llama.cpp runs the GGUF's own weights "
                "(use --engine torch, or leave the flag out)"
            )


@dataclass(frozen=True)
class TorchPlacement:
    """Resolved for the torch engine: a device (``cpu``, ``cuda:0``, ...), a dtype name, and accelerate's
    ``device_map`` (None: everything on ``device``)."""

    device: str
    dtype: str
    device_map: str | None = None

    def describe(self) -> str:
        """``cuda, bfloat16`` / ``device_map=auto (the visible GPUs, then the CPU), bfloat16``."""
        where = "device_map=auto (the visible GPUs, then the CPU)" if self.device_map else self.device
        return f"{where}, {self.dtype}"


def torch_placement(placement: Placement, saved_dtype: str) -> TorchPlacement:
    """The device and dtype the torch engine loads on. ``--dtype auto`` keeps the model's saved dtype on the
    CPU (float32 for models trained here, bfloat16 for an imported release) and takes :func:`resolve_dtype`'s
    choice on a GPU."""
    device = resolve_device(placement.device)
    if placement.dtype == "auto":
        dtype = saved_dtype if device == "cpu" else str(resolve_dtype("auto", device)).removeprefix("torch.")
    else:
        dtype = placement.dtype
    return TorchPlacement(device, dtype, placement.device_map)


def llama_gpu_offload() -> bool:
    """Whether the installed llama-cpp-python was built with a GPU backend (CUDA, Metal, Vulkan, ...)."""
    import llama_cpp

    return bool(llama_cpp.llama_supports_gpu_offload())


def llama_offload(placement: Placement) -> dict[str, Any]:
    """``Llama(...)`` keyword arguments for ``placement``: cpu -> ``n_gpu_layers=0``; cuda / mps -> every layer
    on the GPU (cuda: split over the visible GPUs; cuda:N: all on GPU N); auto -> every layer on the GPU when the
    build has a GPU backend, else none. Raises :class:`ModelError` for what llama.cpp cannot do."""
    import llama_cpp

    flag = placement.torch_only()
    if flag is not None:
        raise ModelError(
            f"{flag} is for the torch engine; llama.cpp runs the GGUF's own weights on --device "
            "(use --engine torch, or leave the flag out)"
        )
    device = placement.device.strip().lower()
    if device == "cpu":
        return {"n_gpu_layers": 0}
    gpu = llama_gpu_offload()
    if device == "auto":
        return {"n_gpu_layers": -1 if gpu else 0}
    if not gpu:
        raise ModelError(
            f"--device {device}: this llama-cpp-python build runs on the CPU only; reinstall it with a GPU backend "
            '(CMAKE_ARGS="-DGGML_CUDA=on" pip install --force-reinstall --no-cache-dir llama-cpp-python; '
            "-DGGML_METAL=on on a Mac), or use --engine torch or --device cpu"
        )
    index = device.partition(":")[2]
    if index:
        return {"n_gpu_layers": -1, "main_gpu": int(index), "split_mode": llama_cpp.LLAMA_SPLIT_MODE_NONE}
    return {"n_gpu_layers": -1}


def check_placement(placement: Placement, engine: str) -> None:
    """Refuse, before anything loads, a ``placement`` that ``engine`` ("torch" or "llama.cpp") cannot serve: a
    device torch does not see, or what llama.cpp cannot do (see :func:`llama_offload`)."""
    if engine == "llama.cpp":
        llama_offload(placement)
    else:
        resolve_device(placement.device)


def spread(module: Any) -> str:
    """Where ``module``'s parameters are, by share of their elements: ``cuda:0 52%, cuda:1 48%``."""
    sizes: dict[str, int] = {}
    for p in module.parameters():
        sizes[str(p.device)] = sizes.get(str(p.device), 0) + p.numel()
    total = sum(sizes.values()) or 1
    return ", ".join(f"{d} {100 * n / total:.0f}%" for d, n in sorted(sizes.items(), key=lambda kv: -kv[1]))
