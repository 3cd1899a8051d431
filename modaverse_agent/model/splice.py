"""The media splice: projected soft tokens replace placeholder tokens in ``inputs_embeds``.

A pure function in the shape of transformers' Llava: placeholder ids mark where media go, one
``masked_scatter`` puts the features there (in reading order: batch row, then position), and a count
mismatch is a ``ValueError`` rather than a silent truncation.
"""

from __future__ import annotations

import torch

IGNORE_INDEX = -100


def splice_media(
    inputs_embeds: torch.Tensor,
    input_ids: torch.Tensor,
    media_embeds: torch.Tensor | None,
    placeholder_id: int,
    labels: torch.Tensor | None = None,
    *,
    ignore_index: int = IGNORE_INDEX,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Put ``media_embeds`` ``(n, hidden)`` at the ``n`` placeholder positions of ``input_ids``.

    Returns the new embeddings (the input is not modified) and the labels with every placeholder
    position set to ``ignore_index`` (None when no labels are given).
    """
    if inputs_embeds.shape[:2] != input_ids.shape:
        raise ValueError(
            f"`inputs_embeds` {tuple(inputs_embeds.shape)} does not match `input_ids` {tuple(input_ids.shape)}"
        )
    mask = input_ids == placeholder_id
    n_slots = int(mask.sum())
    n_feats = 0 if media_embeds is None else media_embeds.shape[0]
    if n_slots != n_feats:
        raise ValueError(
            f"the prompt has {n_slots} media placeholder token(s) but {n_feats} media feature vector(s) were given; "
            "every media item needs exactly `num_media_tokens` placeholders (build prompts with the model's prompter)"
        )
    if labels is not None:
        if labels.shape != input_ids.shape:
            raise ValueError(f"`labels` {tuple(labels.shape)} does not match `input_ids` {tuple(input_ids.shape)}")
        labels = labels.masked_fill(mask, ignore_index)
    if media_embeds is None or n_slots == 0:
        return inputs_embeds, labels
    if media_embeds.dim() != 2 or media_embeds.shape[1] != inputs_embeds.shape[-1]:
        raise ValueError(
            f"media embeddings must be (n, {inputs_embeds.shape[-1]}), got {tuple(media_embeds.shape)}; "
            "project them with the model's projector first"
        )
    media = media_embeds.to(device=inputs_embeds.device, dtype=inputs_embeds.dtype)
    spliced = inputs_embeds.masked_scatter(mask.unsqueeze(-1).expand_as(inputs_embeds), media)
    return spliced, labels
