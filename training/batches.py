"""Training batches for a ModaVerseModel: samples -> token ids, labels and media features.

``Collator`` tokenizes each sample once (prompt with labels ignored + the target meta-response), takes
media features from the feature cache (or zero "blind" features for placeholder media when the model
has no encoder), and right-pads a batch. ``TargetLoss`` computes the loss applying the LLM's output
layer only where labels are set: Gemma's 262k-token vocabulary makes full logits most of the cost.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from modaverse_agent.errors import ModelError
from modaverse_agent.media import load_media
from modaverse_agent.meta_response import TaskSpec
from modaverse_agent.model.splice import IGNORE_INDEX

from .dataset import Sample, offered_specs
from .decision_tokens import decision_weights
from .feature_cache import FeatureCache
from .tasks import STANDARD_TASKS
from .trainer import LossSum


class Collator:
    """Builds the forward kwargs of a batch of samples for ``model``."""

    def __init__(
        self,
        model: Any,
        *,
        tasks: Sequence[TaskSpec] = STANDARD_TASKS,
        cache: FeatureCache | None = None,
        base_dir: str | Path = ".",
        decision_weight: float = 1.0,
    ) -> None:
        if decision_weight <= 0:
            raise ValueError(f"decision_weight must be positive, not {decision_weight}")
        self.model = model
        self.tasks = list(tasks)
        self.cache = cache
        self.base_dir = Path(base_dir)
        self.decision_weight = decision_weight
        self._examples: dict[str, tuple[list[int], list[int], list[str], list[str | None]]] = {}
        self._weights: dict[str, list[float]] = {}
        self._sha: dict[Path, str] = {}

    def example(self, sample: Sample) -> tuple[list[int], list[int], list[str], list[str | None]]:
        """(input_ids, labels, modalities, media content hashes or None) of one sample, cached."""
        if sample.id not in self._examples:
            ids, labels = self.model.prompter.example(
                sample.instruction, list(sample.media_ids), offered_specs(sample, self.tasks), sample.target_json()
            )
            shas: list[str | None] = []
            for m in sample.media:
                path = m.resolve(self.base_dir)
                if path is None or self.cache is None:
                    shas.append(None)
                    continue
                if path not in self._sha:
                    self._sha[path] = load_media(path).sha256
                shas.append(self._sha[path])
            self._examples[sample.id] = (ids, labels, [m.modality for m in sample.media], shas)
        return self._examples[sample.id]

    def label_weights(self, sample: Sample) -> list[float]:
        """The loss weight of each labelled token of ``sample`` (see :mod:`.decision_tokens`), cached."""
        if sample.id not in self._weights:
            _, labels, _, _ = self.example(sample)
            answer = [t for t in labels if t != IGNORE_INDEX]
            try:
                w = decision_weights(self.model.tokenizer, answer, sample.target_json(), self.decision_weight)
            except ValueError as e:
                raise ModelError(f"sample {sample.id}: {e}") from e
            self._weights[sample.id] = w
        return self._weights[sample.id]

    def _padded_weights(self, samples: list[Sample], labels: torch.Tensor) -> torch.Tensor:
        """Per-position loss weights aligned with ``labels`` (0 where a label is ignored)."""
        out = torch.zeros(labels.shape, dtype=torch.float32)
        for row, s in enumerate(samples):
            out[row, labels[row] != IGNORE_INDEX] = torch.as_tensor(self.label_weights(s))
        return out

    def _features(self, shas: list[str | None]) -> torch.Tensor:
        rows = []
        for sha in shas:
            if sha is not None and self.cache is not None:
                rows.append(self.cache.get(sha).to(self.model.dtype))
            elif self.model.config.blind_media:
                rows.append(self.model.blind_features(1)[0].cpu())
            else:
                raise ModelError(
                    "a sample has media without a file (or no feature cache) and the model is not "
                    "blind_media; build the feature cache or train a blind_media model"
                )
        return torch.stack(rows)

    def _padded(self, examples: list[tuple[list[int], list[int], Any, Any]]) -> tuple[torch.Tensor, ...]:
        """Right-padded (input_ids, labels, attention_mask) of ``examples``."""
        width = max(len(e[0]) for e in examples)
        pad = self.model.tokenizer.pad_token_id
        ids = torch.full((len(examples), width), pad, dtype=torch.long)
        labels = torch.full((len(examples), width), IGNORE_INDEX, dtype=torch.long)
        mask = torch.zeros((len(examples), width), dtype=torch.long)
        for row, (e_ids, e_labels, _, _) in enumerate(examples):
            ids[row, : len(e_ids)] = torch.as_tensor(e_ids)
            labels[row, : len(e_labels)] = torch.as_tensor(e_labels)
            mask[row, : len(e_ids)] = 1
        return ids, labels, mask

    def collate_shard(self, shard: list[Sample], whole: list[Sample]) -> dict[str, Any]:
        """The batch of ``shard`` plus ``shared_prefix``, the prefix all of ``whole`` shares (see :class:`TargetLoss`):
        gradients then do not depend on how a global batch is split across processes."""
        ids, labels, _ = self._padded([self.example(s) for s in whole])
        return {**self(shard), "shared_prefix": shared_prefix_length(ids, labels, self.model.placeholder_id)}

    def __call__(self, samples: list[Sample]) -> dict[str, Any]:
        examples = [self.example(s) for s in samples]
        ids, labels, mask = self._padded(examples)
        modalities: list[str] = []
        shas: list[str | None] = []
        for _, _, mods, hashes in examples:
            modalities += mods
            shas += hashes
        n = self.model.config.num_media_tokens
        feats = self._features(shas).repeat_interleave(n, dim=0) if shas else None
        mods_per_token = [m for m in modalities for _ in range(n)]
        batch = {
            "input_ids": ids,
            "attention_mask": mask,
            "labels": labels,
            "media_features": feats,
            "media_modalities": mods_per_token or None,
        }
        if self.decision_weight != 1.0:
            batch["label_weights"] = self._padded_weights(samples, labels)
        return batch


def output_layer_and_decoder(llm: Any) -> tuple[nn.Module, nn.Module, float | None]:
    """The decoder stack, output layer and final-logit soft cap of a (peft-wrapped) causal LM."""
    causal = llm.get_base_model() if hasattr(llm, "get_base_model") else llm
    cap = getattr(causal.config.get_text_config(), "final_logit_softcapping", None)
    return causal.get_decoder(), causal.get_output_embeddings(), cap


def _cache_kwarg(decoder: nn.Module) -> str:
    """The name a decoder takes its KV cache under (``cache`` in transformers 5.2x, ``past_key_values`` before)."""
    import inspect

    return "cache" if "cache" in inspect.signature(decoder.forward).parameters else "past_key_values"


def shared_prefix_length(input_ids: torch.Tensor, labels: torch.Tensor, placeholder_id: int) -> int:
    """How many leading tokens every row shares, stopping before any label or media placeholder."""
    if input_ids.shape[0] < 2:
        return 0
    same = (input_ids == input_ids[:1]).all(dim=0)
    free = same & (labels == IGNORE_INDEX).all(dim=0) & (input_ids != placeholder_id).all(dim=0)
    bad = (~free).nonzero()
    n = int(bad[0]) if len(bad) else input_ids.shape[1]
    return max(0, n - 1)  # keep one shared token in the suffix so every row's first logit is recomputed


class TargetLoss(nn.Module):
    """Wraps a ModaVerseModel: the loss of ``model(..., labels=)``, computed faster.

    * The output layer runs only where labels are set.
    * With ``share_prefix``, the tokens all rows share (the system prompt) run once, without gradients,
      and the rows continue from that cache: the loss value is the same, but no gradient flows through
      the shared prefix's keys and values (LoRA still trains on every other token). ``shared_prefix``
      (from :meth:`Collator.collate_shard`) fixes that length from the whole global batch.
    * ``reduction="sum"`` returns a :class:`~.trainer.LossSum` (summed loss, target count), which the
      trainer weights by the global count across processes.
    """

    def __init__(self, model: Any, *, share_prefix: bool = True, reduction: str = "mean") -> None:
        super().__init__()
        if reduction not in ("mean", "sum"):
            raise ValueError(f"reduction must be 'mean' or 'sum', not {reduction!r}")
        self.model = model
        self.share_prefix = share_prefix
        self.reduction = reduction

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        labels: torch.Tensor,
        media_features: torch.Tensor | None = None,
        media_modalities: Sequence[str] | None = None,
        shared_prefix: int | None = None,
        label_weights: torch.Tensor | None = None,
    ) -> Any:
        embeds, labels = self.model.embed_inputs(input_ids, media_features, media_modalities, labels)
        decoder, head, cap = output_layer_and_decoder(self.model.llm)
        if not self.share_prefix:
            p = 0
        elif shared_prefix is None:
            p = shared_prefix_length(input_ids, labels, self.model.placeholder_id)
        else:
            p = shared_prefix
        if p:
            from transformers import DynamicCache

            name = _cache_kwarg(decoder)
            with torch.no_grad():
                cache = DynamicCache()
                decoder(inputs_embeds=embeds[:1, :p].detach(), use_cache=True, **{name: cache})
            cache.batch_repeat_interleave(input_ids.shape[0])
            hidden = decoder(
                inputs_embeds=embeds[:, p:], attention_mask=attention_mask, use_cache=True, **{name: cache}
            ).last_hidden_state
        else:
            hidden = decoder(inputs_embeds=embeds, attention_mask=attention_mask).last_hidden_state
        targets = labels[:, p + 1 :]
        keep = targets != IGNORE_INDEX
        logits = head(hidden[:, :-1][keep])
        if cap:
            logits = torch.tanh(logits / cap) * cap
        if label_weights is None:
            if self.reduction == "sum":
                return LossSum(F.cross_entropy(logits.float(), targets[keep], reduction="sum"), keep.sum())
            return F.cross_entropy(logits.float(), targets[keep])
        w = label_weights[:, p + 1 :][keep].to(logits.device)
        total = (F.cross_entropy(logits.float(), targets[keep], reduction="none") * w).sum()
        return LossSum(total, w.sum()) if self.reduction == "sum" else total / w.sum()
