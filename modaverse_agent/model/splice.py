"""The media splice: projected soft tokens take the places of the media placeholder tokens.

One path for both engines:

* :class:`EncodedMedia` is the record of encoded media items (encoder features in reading order, one
  modality per row); :meth:`EncodedMedia.project` turns them into the soft-token rows the placeholders take.
* :func:`check_media_count` is the one count check: every placeholder takes exactly one row.
* The torch engine splices a whole batch at once with :func:`splice_media` (in the shape of transformers'
  Llava: one ``masked_scatter`` in reading order: batch row, then position).
* An engine that is fed token ids and embedding rows (llama.cpp) gets each prompt laid out as
  :class:`Segment` runs by :func:`lay_out_prompts`.

A count mismatch is a ``ValueError`` rather than a silent truncation.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, NamedTuple

import torch

from ..errors import ModelError

if TYPE_CHECKING:
    from .projector import MediaProjector

IGNORE_INDEX = -100


@dataclass(frozen=True)
class EncodedMedia:
    """Media items as an engine takes them: encoder ``features`` ``(n, encoder_dim)`` in reading order and
    each row's modality (the projector checks that the two agree)."""

    features: torch.Tensor
    modalities: tuple[str, ...]

    @classmethod
    def of(cls, features: torch.Tensor | None, modalities: Sequence[str] | str | None) -> EncodedMedia | None:
        """The record of an engine call's ``media_features`` and ``media_modalities`` (a string: the modality of
        every row); None when there are no features."""
        if features is None or not features.shape[0]:
            return None
        if modalities is None:
            raise ValueError("`media_modalities` is required with `media_features` (one modality per row)")
        mods = (modalities,) * features.shape[0] if isinstance(modalities, str) else tuple(modalities)
        return cls(features, mods)

    def to(self, device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> EncodedMedia:
        """The same media with the features moved or cast."""
        return replace(self, features=self.features.to(device=device, dtype=dtype))

    def project(self, projector: MediaProjector) -> torch.Tensor:
        """The soft-token rows ``(n * num_tokens, hidden)`` in reading order: what the placeholders take."""
        return projector.project_items(list(self.modalities), self.features)


def check_media_count(slots: int, rows: int) -> None:
    """The splice's count check: ``slots`` media placeholders must take exactly ``rows`` media rows."""
    if slots != rows:
        raise ValueError(
            f"the prompt has {slots} media placeholder token(s) but {rows} media feature vector(s) were given; "
            "every media item needs exactly `num_media_tokens` placeholders (build prompts with the model's prompter)"
        )


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
    check_media_count(n_slots, 0 if media_embeds is None else media_embeds.shape[0])
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


class Segment(NamedTuple):
    """A run of prompt tokens: fed as token ids when ``rows`` is None, else as these embedding rows (one per id)."""

    ids: list[int]
    rows: torch.Tensor | None


def lay_out_prompts(
    prompts: Sequence[Sequence[int]],
    placeholder_id: int,
    media_rows: torch.Tensor | None,
    token_rows: Mapping[int, torch.Tensor],
    vocab_size: int,
) -> list[list[Segment]]:
    """Each prompt as :class:`Segment` runs: ordinary tokens as ids; media placeholders, which take
    ``media_rows`` in reading order (prompt, then position), and tokens with a row of their own in
    ``token_rows`` (the trained media markers) as float rows. Ids from ``vocab_size`` up need a row."""
    check_media_count(
        sum(1 for p in prompts for t in p if t == placeholder_id), 0 if media_rows is None else len(media_rows)
    )
    media = iter(() if media_rows is None else media_rows)

    def row_of(t: int) -> torch.Tensor | None:
        if t == placeholder_id:
            return next(media)
        if t in token_rows:
            return token_rows[t]
        if t < vocab_size:
            return None
        raise ModelError(f"token id {t} is outside the LLM's vocabulary of {vocab_size} and has no embedding row")

    out: list[list[Segment]] = []
    for prompt in prompts:
        tokens = [(int(t), row_of(int(t))) for t in prompt]
        segments = []
        for embedded, run in itertools.groupby(tokens, key=lambda token: token[1] is not None):
            ids, rows = zip(*run, strict=True)
            stacked = torch.stack([r.reshape(-1).float() for r in rows]) if embedded else None
            segments.append(Segment(list(ids), stacked))
        out.append(segments)
    return out
