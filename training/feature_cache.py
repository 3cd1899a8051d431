"""Encoder feature cache: the encoder is frozen, so each media file is embedded once.

Embeddings are stored as safetensors shards under ``<root>/<encoder key>/``, keyed by the SHA-256 of the
media content (so a renamed or duplicated file costs nothing). The encoder key separates caches of
different encoders (their configs and weights differ).
"""

from __future__ import annotations

import hashlib
import json
import os
import uuid
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import torch

from modaverse_agent.encoders.base import MediaEncoder
from modaverse_agent.media import MediaItem


def encoder_key(encoder: MediaEncoder, extra: str = "") -> str:
    """A short id of an encoder: its class, embedding width, and a hash of its first weights (if any)."""
    h = hashlib.sha256(f"{type(encoder).__name__}:{encoder.embed_dim}:{extra}".encode())
    model = getattr(encoder, "model", None)
    if isinstance(model, torch.nn.Module):
        for _, p in zip(range(4), model.state_dict().items(), strict=False):
            h.update(p[0].encode())
            h.update(p[1].detach().float().cpu().numpy().tobytes()[:4096])
    return h.hexdigest()[:16]


class FeatureCache:
    """Embeddings by media content hash, in safetensors shards, filled by :meth:`build`."""

    def __init__(self, root: str | Path, key: str) -> None:
        self.dir = Path(root) / key
        self.dir.mkdir(parents=True, exist_ok=True)
        self._features: dict[str, torch.Tensor] = {}
        self._modality: dict[str, str] = {}
        self._load()

    def _load(self) -> None:
        from safetensors import safe_open

        for shard in sorted(self.dir.glob("shard-*.safetensors")):
            with safe_open(str(shard), framework="pt") as f:
                meta = json.loads((f.metadata() or {}).get("modalities", "{}"))
                for k in f.keys():  # noqa: SIM118 - safe_open is not a dict
                    self._features[k] = f.get_tensor(k)
                    self._modality[k] = meta.get(k, "")

    def __contains__(self, sha: str) -> bool:
        return sha in self._features

    def __len__(self) -> int:
        return len(self._features)

    def get(self, sha: str) -> torch.Tensor:
        """The embedding of the media whose content hash is ``sha``."""
        try:
            return self._features[sha]
        except KeyError:
            raise KeyError(f"media {sha[:12]}... is not in the feature cache {self.dir}; run the cache build") from None

    def stack(self, shas: Sequence[str]) -> torch.Tensor:
        """Embeddings of several media as one ``(n, dim)`` tensor."""
        return torch.stack([self.get(s) for s in shas]) if shas else torch.zeros(0)

    def add(self, features: dict[str, torch.Tensor], modalities: dict[str, str]) -> Path | None:
        """Store new embeddings as one more shard (atomically); returns the shard path."""
        from safetensors.torch import save_file

        new = {k: v.detach().float().cpu().contiguous() for k, v in features.items() if k not in self._features}
        if not new:
            return None
        shard = (
            self.dir / f"shard-{len(list(self.dir.glob('shard-*.safetensors'))):05d}-{uuid.uuid4().hex[:6]}.safetensors"
        )
        tmp = shard.with_suffix(".partial")
        save_file(new, str(tmp), metadata={"modalities": json.dumps({k: modalities[k] for k in new})})
        os.replace(tmp, shard)
        self._features.update(new)
        self._modality.update({k: modalities[k] for k in new})
        return shard

    def build(
        self, encoder: MediaEncoder, items: Iterable[MediaItem], *, batch_size: int = 16, progress: bool = True
    ) -> dict[str, int]:
        """Embed every item not yet cached (batched per modality); returns counts computed and reused."""
        from tqdm.auto import tqdm

        todo: dict[str, dict[str, MediaItem]] = {}
        reused = 0
        for item in items:
            sha = item.sha256
            if sha in self._features or any(sha in group for group in todo.values()):
                reused += 1
                continue
            todo.setdefault(item.modality, {})[sha] = item
        total = sum(len(v) for v in todo.values())
        bar = tqdm(total=total, desc="encoding media", unit="item", disable=not progress or total == 0)
        for modality, group in todo.items():
            shas = list(group)
            for i in range(0, len(shas), batch_size):
                chunk = shas[i : i + batch_size]
                emb = encoder.encode(modality, [group[s] for s in chunk])
                self.add(dict(zip(chunk, emb, strict=True)), dict.fromkeys(chunk, modality))
                bar.update(len(chunk))
        bar.close()
        return {"computed": total, "reused": reused}

    def stats(self) -> dict[str, Any]:
        """How many embeddings per modality the cache holds."""
        counts: dict[str, int] = {}
        for m in self._modality.values():
            counts[m] = counts.get(m, 0) + 1
        return {"dir": str(self.dir), "total": len(self), "per_modality": counts}
