"""Heads (trunk tokens -> one embedding) and postprocessors (L2 normalisation, logit scale)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .transformer import TRUNK_LN_EPS


class SelectElement(nn.Module):
    """Token ``index`` of (B, tokens, D): the class token."""

    def __init__(self, index: int = 0) -> None:
        super().__init__()
        self.index = index

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, tokens, D) -> (B, D)."""
        return x[:, self.index, ...]


class SelectEOSAndProject(nn.Module):
    """The text head: the token at each text's EOT position, then ``proj`` (LayerNorm, Linear)."""

    def __init__(self, dim: int, out_dim: int) -> None:
        super().__init__()
        self.proj = nn.Sequential(nn.LayerNorm(dim, eps=TRUNK_LN_EPS), nn.Linear(dim, out_dim, bias=False))

    def forward(self, x: torch.Tensor, seq_len: torch.Tensor) -> torch.Tensor:
        """(B, tokens, D) and EOT positions (B,) -> (B, out_dim)."""
        return self.proj(x[torch.arange(x.shape[0], device=x.device), seq_len])


def cls_head(dim: int, out_dim: int, *, dropout: float | None = None) -> nn.Sequential:
    """LayerNorm -> class token -> (Dropout, IMU only) -> Linear without bias."""
    layers: list[nn.Module] = [nn.LayerNorm(dim, eps=TRUNK_LN_EPS), SelectElement(0)]
    if dropout is not None:
        layers.append(nn.Dropout(dropout))
    layers.append(nn.Linear(dim, out_dim, bias=False))
    return nn.Sequential(*layers)


class Normalize(nn.Module):
    """L2 normalisation along ``dim``."""

    def __init__(self, dim: int = -1) -> None:
        super().__init__()
        self.dim = dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x / ||x||``."""
        return F.normalize(x, dim=self.dim, p=2)


class LogitScaling(nn.Module):
    """Multiply by ``min(exp(log_logit_scale), max_logit_scale)``; learnable (text) or a fixed buffer."""

    def __init__(self, init: float, *, learnable: bool, max_logit_scale: float = 100.0) -> None:
        super().__init__()
        self.max_logit_scale = max_logit_scale
        value = torch.full((), math.log(init))
        if learnable:
            self.log_logit_scale = nn.Parameter(value)
        else:
            self.register_buffer("log_logit_scale", value)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Scale ``x``."""
        return torch.clip(self.log_logit_scale.exp(), max=self.max_logit_scale) * x


def postprocessor(init: float | None, *, learnable: bool = False, max_logit_scale: float = 100.0) -> nn.Module:
    """Normalize alone (``init`` None, vision) or Normalize then LogitScaling."""
    if init is None:
        return Normalize(dim=-1)
    return nn.Sequential(Normalize(dim=-1), LogitScaling(init, learnable=learnable, max_logit_scale=max_logit_scale))
