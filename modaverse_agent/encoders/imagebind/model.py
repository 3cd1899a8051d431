"""ImageBindModel: six towers (preprocessor -> trunk -> head -> postprocessor) in the official layout.

Module names and order follow the reference ``imagebind_model.ImageBindModel``, so its state dict
(``modality_preprocessors.vision.rgbt_stem.proj.1.weight``, ...) loads key for key. Inference only:
drop path and dropout are training features the frozen encoder never uses.
"""

from __future__ import annotations

import torch
from torch import nn

from .config import ALL_MODALITIES, ImageBindConfig
from .heads import SelectEOSAndProject, cls_head, postprocessor
from .stems import IMUTokenizer, PadIm2Video, PatchEmbed, PatchTokenizer, TextTokenizer
from .transformer import SimpleTransformer

#: Inputs of at least this many dimensions carry a clip axis: (B, S, ...) is embedded per clip and averaged.
CLIP_AXIS_NDIM = 5

Stages = dict[str, torch.Tensor]


def _conv_stem(dim: int, kernel: int, stride: int) -> PatchEmbed:
    conv = nn.Conv2d(1, dim, kernel_size=kernel, stride=stride, bias=False)
    return PatchEmbed(conv, norm_layer=nn.LayerNorm(dim))  # eps 1e-5, the PyTorch default, as the reference


def build_preprocessors(cfg: ImageBindConfig) -> nn.ModuleDict:
    """The ``modality_preprocessors`` of every tower in ``cfg.modalities``."""
    out = nn.ModuleDict()
    for m in ALL_MODALITIES:
        if m not in cfg.modalities:
            continue
        dim = getattr(cfg, f"{m}_embed_dim")
        if m == "vision":
            conv = nn.Conv3d(3, dim, kernel_size=cfg.kernel_size, stride=cfg.kernel_size, bias=False)
            stem = PatchEmbed(nn.Sequential(PadIm2Video(ntimes=cfg.kernel_size[0]), conv))
            t, h, w = cfg.vision_patch_grid
            out[m] = PatchTokenizer("rgbt_stem", stem, t * h * w, dim)
        elif m == "text":
            out[m] = TextTokenizer(cfg.text_vocab_size, cfg.text_context_length, dim)
        elif m == "audio":
            stem = _conv_stem(dim, cfg.audio_kernel_size, cfg.audio_stride)
            h, w = cfg.audio_patch_grid
            out[m] = PatchTokenizer("rgbt_stem", stem, h * w, dim)
        elif m in ("depth", "thermal"):
            k = getattr(cfg, f"{m}_kernel_size")
            stem = _conv_stem(dim, k, k)
            grid = (cfg.image_size // k) ** 2
            out[m] = PatchTokenizer("depth_stem" if m == "depth" else "rgbt_stem", stem, grid, dim)
        else:  # imu: 2000 steps of 6 channels in patches of 8
            stem = PatchEmbed(nn.Linear(6 * IMUTokenizer.kernel_size, dim, bias=False), norm_layer=nn.LayerNorm(dim))
            out[m] = IMUTokenizer(stem, 2000 // IMUTokenizer.kernel_size, dim)
    return out


class ImageBindModel(nn.Module):
    """ImageBind on torch alone; ``forward`` takes and returns ``{modality: tensor}`` like the reference."""

    def __init__(self, config: ImageBindConfig) -> None:
        super().__init__()
        self.config = cfg = config
        self.modality_preprocessors = build_preprocessors(cfg)
        self.modality_trunks = nn.ModuleDict(
            {
                m: SimpleTransformer(
                    getattr(cfg, f"{m}_embed_dim"),
                    getattr(cfg, f"{m}_num_blocks"),
                    getattr(cfg, f"{m}_num_heads"),
                    pre_norm=m == "vision",
                    add_bias_kv=m not in ("vision", "text"),
                )
                for m in cfg.modalities
            }
        )
        heads = nn.ModuleDict()
        for m in cfg.modalities:
            dim = getattr(cfg, f"{m}_embed_dim")
            if m == "text":
                heads[m] = SelectEOSAndProject(dim, cfg.out_embed_dim)
            else:
                heads[m] = cls_head(dim, cfg.out_embed_dim, dropout=0.5 if m == "imu" else None)
        self.modality_heads = heads
        self.modality_postprocessors = nn.ModuleDict(
            {
                m: postprocessor(
                    None if m == "vision" else cfg.logit_scale_init(m),
                    learnable=m == "text",
                    max_logit_scale=cfg.max_logit_scale,
                )
                for m in cfg.modalities
            }
        )
        if not any(p.is_meta for p in self.parameters()):
            self.init_weights()

    @property
    def modalities(self) -> tuple[str, ...]:
        """Towers this model has."""
        return self.config.modalities

    @torch.no_grad()
    def init_weights(self, std: float = 0.02) -> None:
        """Random initialisation in the reference's spirit (truncated normal weights, unit LayerNorms)."""
        for module in self.modules():
            if isinstance(module, nn.Linear | nn.Conv2d | nn.Conv3d):
                nn.init.trunc_normal_(module.weight, std=std)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, nn.LayerNorm):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)
            elif isinstance(module, nn.Embedding):
                nn.init.normal_(module.weight, std=std)
        for name, param in self.named_parameters():
            if name.endswith(("cls_token", "pos_embed", "in_proj_weight", "bias_k", "bias_v")):
                nn.init.trunc_normal_(param, std=std)
            elif name.endswith("in_proj_bias"):
                nn.init.zeros_(param)

    def _check(self, modality: str) -> None:
        if modality not in self.modality_trunks:
            raise ValueError(f"this ImageBind has no {modality!r} tower; it has {list(self.modalities)}")

    def embed(self, modality: str, x: torch.Tensor, *, stages: Stages | None = None) -> torch.Tensor:
        """Embed one modality's batch; inputs with a clip axis (ndim >= 5) are averaged over clips.

        ``stages``, when given, receives the intermediate tensors (``1_preprocessor_tokens``,
        ``2_trunk_out``, ``3_head_out``, ``4_postprocessor_out``) for debugging.
        """
        self._check(modality)
        clips = x.ndim >= CLIP_AXIS_NDIM
        if clips:
            b, s = x.shape[:2]
            x = x.reshape(b * s, *x.shape[2:])
        head_kwargs = {}
        attn_mask = None
        if modality == "text":
            tokens, head_kwargs["seq_len"] = self.modality_preprocessors[modality](x)
            attn_mask = self.modality_preprocessors[modality].mask
        else:
            tokens = self.modality_preprocessors[modality](x)
        trunk = self.modality_trunks[modality](tokens, attn_mask)
        head = self.modality_heads[modality](trunk, **head_kwargs)
        out = self.modality_postprocessors[modality](head)
        if stages is not None:
            stages.update(
                {"1_preprocessor_tokens": tokens, "2_trunk_out": trunk, "3_head_out": head, "4_postprocessor_out": out}
            )
        if clips:
            out = out.reshape(b, s, -1).mean(dim=1)
        return out

    def forward(self, inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """``{modality: batch}`` -> ``{modality: embeddings}``, as the reference's forward."""
        return {m: self.embed(m, x) for m, x in inputs.items()}
