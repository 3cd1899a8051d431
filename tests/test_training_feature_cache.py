"""The encoder feature cache: each media embedded once, keyed by content, reloaded exactly."""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path

import pytest
import torch
from PIL import Image

from modaverse_agent.encoders.imagebind.config import ImageBindConfig
from modaverse_agent.encoders.imagebind.encoder import ImageBindEncoder
from modaverse_agent.media import MediaItem, load_media
from modaverse_agent.training.feature_cache import FeatureCache, encoder_key


class CountingEncoder(ImageBindEncoder):
    calls: list[int]

    def encode(self, modality: str, items: Sequence[MediaItem]) -> torch.Tensor:
        self.calls.append(len(items))
        return super().encode(modality, items)


def image(colour: tuple[int, int, int]) -> MediaItem:
    buf = io.BytesIO()
    Image.new("RGB", (32, 24), colour).save(buf, format="PNG")
    return load_media(buf.getvalue())


@pytest.fixture
def encoder() -> CountingEncoder:
    torch.manual_seed(0)
    enc = CountingEncoder(ImageBindEncoder.from_config(ImageBindConfig.tiny()).model)
    enc.calls = []
    return enc


def test_each_media_is_encoded_once_and_reloads_exactly(tmp_path: Path, encoder: CountingEncoder) -> None:
    items = [image((255, 0, 0)), image((0, 255, 0)), image((255, 0, 0))]  # a duplicate by content
    cache = FeatureCache(tmp_path, encoder_key(encoder))
    assert cache.build(encoder, items, batch_size=8, progress=False) == {"computed": 2, "reused": 1}
    assert encoder.calls == [2]
    direct = encoder.encode("image", items[:2])
    assert torch.allclose(cache.stack([items[0].sha256, items[1].sha256]), direct, atol=1e-6)
    again = FeatureCache(tmp_path, encoder_key(encoder))
    assert again.build(encoder, items, progress=False) == {"computed": 0, "reused": 3}
    assert encoder.calls == [2, 2] and torch.equal(again.get(items[1].sha256), cache.get(items[1].sha256))
    assert again.stats()["per_modality"] == {"image": 2}


def test_different_encoders_do_not_share_a_cache(encoder: CountingEncoder) -> None:
    torch.manual_seed(1)
    other = ImageBindEncoder.from_config(ImageBindConfig.tiny())
    assert encoder_key(encoder) != encoder_key(other)


def test_missing_entry_says_what_to_do(tmp_path: Path) -> None:
    with pytest.raises(KeyError, match="run the cache build"):
        FeatureCache(tmp_path, "k").get("ab" * 32)
