"""Loading ImageBind weights from local files: the official ``.pth`` (``weights_only``) or safetensors.

Models are built on the meta device and the loaded tensors are assigned into them, so loading the
1.2 B-parameter huge model costs its size in memory once, not twice. Nothing is ever downloaded.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path

import torch

from ...errors import ModelError
from .config import ALL_MODALITIES, ImageBindConfig
from .model import ImageBindModel

logger = logging.getLogger(__name__)

LICENCE_NOTE = (
    "ImageBind's code and weights are licensed CC BY-NC-SA 4.0 by Meta (non-commercial use, share-alike); "
    "see https://github.com/facebookresearch/ImageBind/blob/main/LICENSE before using them."
)
CONFIG_NAME, WEIGHTS_NAME = "config.json", "model.safetensors"
_noted = False


def note_licence() -> None:
    """Log the weights' licence once per process."""
    global _noted
    if not _noted:
        _noted = True
        logger.warning(LICENCE_NOTE)


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Tensors of a ``.safetensors`` file or a ``.pth``/``.pt``/``.bin`` plain state dict (never unpickled
    beyond tensors: ``torch.load(weights_only=True)``)."""
    path = Path(path)
    if not path.is_file():
        raise ModelError(f"weights file {str(path)!r} does not exist; download imagebind_huge.pth yourself first")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            state = load_file(str(path))
        except Exception as e:  # safetensors raises its own error types
            raise ModelError(f"{path} is not a readable safetensors file ({e})") from e
    elif path.suffix in (".pth", ".pt", ".bin"):
        try:
            state = torch.load(str(path), map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError as e:
            if "mmap" not in str(e):
                raise ModelError(f"{path} is not a readable torch state dict ({e})") from e
            logger.info("%s uses the legacy (non-zip) format; loading it without mmap", path)
            state = torch.load(str(path), map_location="cpu", weights_only=True)
        except Exception as e:
            raise ModelError(f"{path} is not a readable torch state dict ({e})") from e
    else:
        raise ModelError(f"{path}: unknown weights format {path.suffix!r}; give a .pth or .safetensors file")
    if not isinstance(state, Mapping) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ModelError(f"{path} does not hold a flat state dict of tensors (is it a full training checkpoint?)")
    return dict(state)


def _tower(key: str) -> str | None:
    parts = key.split(".")
    return parts[1] if len(parts) > 2 and parts[0].startswith("modality_") else None


def select_towers(state: Mapping[str, torch.Tensor], modalities: tuple[str, ...]) -> dict[str, torch.Tensor]:
    """The entries of ``state`` belonging to ``modalities`` (drops the towers a model was built without)."""
    dropped = set(ALL_MODALITIES) - set(modalities)
    return {k: v for k, v in state.items() if _tower(k) not in dropped}


def check_state_dict(model: ImageBindModel, state: Mapping[str, torch.Tensor]) -> None:
    """A ModelError listing missing keys, unexpected keys and shape mismatches, if any."""
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    shapes = [
        f"{k}: file {tuple(state[k].shape)} vs model {s}"
        for k, s in expected.items()
        if k in state and tuple(state[k].shape) != s
    ]
    if missing or unexpected or shapes:
        parts = []
        for label, items in (("missing", missing), ("unexpected", unexpected), ("wrong shape", shapes)):
            if items:
                parts.append(f"{len(items)} {label} (e.g. {', '.join(items[:3])})")
        raise ModelError(
            "weights do not fit this ImageBind config: "
            + "; ".join(parts)
            + ". Use the config the weights were trained with (config='huge' for imagebind_huge.pth)."
        )


def build_model(
    config: ImageBindConfig,
    state: Mapping[str, torch.Tensor] | None = None,
    *,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
) -> ImageBindModel:
    """An eval-mode, frozen model of ``config``: random weights, or ``state`` loaded key for key."""
    if state is None:
        model = ImageBindModel(config)
    else:
        state = select_towers(state, config.modalities)
        with torch.device("meta"):
            model = ImageBindModel(config)
        check_state_dict(model, state)
        model.load_state_dict(state, strict=True, assign=True)
    model.eval().requires_grad_(False)
    if device is not None or dtype is not None:
        model.to(device=device, dtype=dtype)
    return model


def save_pretrained(model: ImageBindModel, directory: str | Path) -> Path:
    """Write ``config.json`` and ``model.safetensors`` into ``directory``; returns it."""
    from safetensors.torch import save_file

    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    model.config.to_json_file(out / CONFIG_NAME)
    save_file({k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}, str(out / WEIGHTS_NAME))
    return out


def resolve_checkpoint(path: str | Path, config: ImageBindConfig | str | Path) -> tuple[ImageBindConfig, Path]:
    """``(config, weights file)`` for a weights file plus config, or a directory from :func:`save_pretrained`."""
    path = Path(path)
    if path.is_dir():
        if not (path / WEIGHTS_NAME).is_file() or not (path / CONFIG_NAME).is_file():
            raise ModelError(f"{path} is a directory without {CONFIG_NAME} and {WEIGHTS_NAME}; pass the weights file")
        return ImageBindConfig.from_json_file(path / CONFIG_NAME), path / WEIGHTS_NAME
    if isinstance(config, ImageBindConfig):
        return config, path
    if isinstance(config, Path) or str(config).endswith(".json"):
        return ImageBindConfig.from_json_file(config), path
    return ImageBindConfig.preset(str(config)), path
