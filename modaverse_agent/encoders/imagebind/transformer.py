"""ImageBind's trunk: a pre-norm ViT-style transformer with the reference's parameter names.

The reference runs ``nn.MultiheadAttention`` sequence-first; this one is batch-first on
``scaled_dot_product_attention`` but keeps the exact state-dict layout (``in_proj_weight``,
``in_proj_bias``, ``bias_k``/``bias_v``, ``out_proj``), so official weights load key for key.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

#: LayerNorm eps of the trunk blocks, the vision pre-transformer norm and the heads.
TRUNK_LN_EPS = 1e-6


class MultiheadSelfAttention(nn.Module):
    """Self-attention laid out like ``nn.MultiheadAttention`` (optionally with learnt extra key/value)."""

    def __init__(self, embed_dim: int, num_heads: int, *, add_bias_kv: bool) -> None:
        super().__init__()
        if embed_dim % num_heads:
            raise ValueError(f"embed_dim {embed_dim} is not divisible by num_heads {num_heads}")
        self.embed_dim, self.num_heads = embed_dim, num_heads
        self.in_proj_weight = nn.Parameter(torch.empty(3 * embed_dim, embed_dim))
        self.in_proj_bias = nn.Parameter(torch.empty(3 * embed_dim))
        self.bias_k: nn.Parameter | None = None
        self.bias_v: nn.Parameter | None = None
        if add_bias_kv:
            self.bias_k = nn.Parameter(torch.empty(1, 1, embed_dim))
            self.bias_v = nn.Parameter(torch.empty(1, 1, embed_dim))
        self.out_proj = nn.Linear(embed_dim, embed_dim)

    def forward(self, x: torch.Tensor, attn_mask: torch.Tensor | None = None) -> torch.Tensor:
        """``x``: (batch, tokens, dim); ``attn_mask``: additive (tokens, tokens) float mask or None."""
        b, n, d = x.shape
        q, k, v = F.linear(x, self.in_proj_weight, self.in_proj_bias).chunk(3, dim=-1)
        if self.bias_k is not None and self.bias_v is not None:
            k = torch.cat([k, self.bias_k.expand(b, 1, d)], dim=1)
            v = torch.cat([v, self.bias_v.expand(b, 1, d)], dim=1)
            if attn_mask is not None:
                attn_mask = F.pad(attn_mask, (0, 1))
        h = self.num_heads
        q, k, v = (t.reshape(b, t.shape[1], h, d // h).transpose(1, 2) for t in (q, k, v))
        if attn_mask is not None:
            attn_mask = attn_mask.to(q.dtype)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask)
        return self.out_proj(out.transpose(1, 2).reshape(b, n, d))


class Mlp(nn.Module):
    """``fc1 -> GELU (exact) -> fc2``, timm's layout."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Apply the two layers."""
        return self.fc2(self.act(self.fc1(x)))


class Block(nn.Module):
    """Pre-norm block: ``x + attn(norm_1(x))``, then ``x + mlp(norm_2(x))``."""

    def __init__(self, dim: int, num_heads: int, *, add_bias_kv: bool, mlp_ratio: int = 4) -> None:
        super().__init__()
        self.attn = MultiheadSelfAttention(dim, num_heads, add_bias_kv=add_bias_kv)
        self.norm_1 = nn.LayerNorm(dim, eps=TRUNK_LN_EPS)
        self.mlp = Mlp(dim, mlp_ratio * dim)
        self.norm_2 = nn.LayerNorm(dim, eps=TRUNK_LN_EPS)

    def forward(self, x: torch.Tensor, attn_mask: torch.Tensor | None = None) -> torch.Tensor:
        """One residual attention + MLP step."""
        x = x + self.attn(self.norm_1(x), attn_mask)
        return x + self.mlp(self.norm_2(x))


class SimpleTransformer(nn.Module):
    """A stack of blocks, with the vision tower's extra LayerNorm in front (``pre_transformer_layer.0``)."""

    def __init__(self, dim: int, num_blocks: int, num_heads: int, *, pre_norm: bool, add_bias_kv: bool) -> None:
        super().__init__()
        self.pre_transformer_layer = nn.Sequential(nn.LayerNorm(dim, eps=TRUNK_LN_EPS) if pre_norm else nn.Identity())
        self.blocks = nn.ModuleList(Block(dim, num_heads, add_bias_kv=add_bias_kv) for _ in range(num_blocks))

    def forward(self, tokens: torch.Tensor, attn_mask: torch.Tensor | None = None) -> torch.Tensor:
        """(batch, tokens, dim) in and out."""
        x = self.pre_transformer_layer(tokens)
        for block in self.blocks:
            x = block(x, attn_mask)
        return x
