"""The huge model's state dict is the official checkpoint's, key for key and shape for shape; configs round-trip."""

from __future__ import annotations

import json
import logging
from collections import Counter
from pathlib import Path

import pytest
import torch

from modaverse_agent.encoders.imagebind.config import ALL_MODALITIES, ImageBindConfig
from modaverse_agent.encoders.imagebind.model import ImageBindModel

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "imagebind"


@pytest.fixture(scope="module")
def manifest() -> dict:
    return json.loads((FIXTURES / "huge_state_dict_manifest.json").read_text())


@pytest.fixture(scope="module")
def huge() -> ImageBindModel:
    with torch.device("meta"):
        return ImageBindModel(ImageBindConfig.huge())


def test_huge_is_built_on_meta_without_memory(huge: ImageBindModel) -> None:
    assert all(t.is_meta for t in huge.state_dict().values())


def test_huge_state_dict_matches_manifest_key_for_key(huge: ImageBindModel, manifest: dict) -> None:
    ours = {k: (list(v.shape), str(v.dtype).removeprefix("torch.")) for k, v in huge.state_dict().items()}
    theirs = {e["key"]: (e["shape"], e["dtype"]) for e in manifest["keys"]}
    assert sorted(set(theirs) - set(ours)) == []  # missing
    assert sorted(set(ours) - set(theirs)) == []  # unexpected
    assert {k: v for k, v in ours.items() if theirs[k] != v} == {}
    assert len(ours) == manifest["num_keys"] == 1311


def test_huge_parameters_and_buffers_are_split_as_official(huge: ImageBindModel, manifest: dict) -> None:
    params = {k for k, _ in huge.named_parameters()}
    buffers = {k for k, _ in huge.named_buffers()}
    assert buffers == set(manifest["buffer_keys"])
    assert len(params) == manifest["num_parameter_tensors"]
    assert sum(p.numel() for p in huge.parameters()) == manifest["total_parameter_numel"]
    assert sum(b.numel() for b in huge.buffers()) == manifest["total_buffer_numel"]
    kinds = {e["key"]: e["kind"] for e in manifest["keys"]}
    assert all(kinds[k] == "parameter" for k in params)


def test_parameter_count_per_modality_and_section(huge: ImageBindModel, manifest: dict) -> None:
    counts: Counter[tuple[str, str]] = Counter()
    for name, p in huge.named_parameters():
        section, modality = name.split(".")[:2]
        counts[modality, section] += p.numel()
    for modality, sections in manifest["parameter_numel_per_modality_and_section"].items():
        for section, numel in sections.items():
            assert counts[modality, section] == numel, (modality, section)


def test_huge_preset_equals_the_official_effective_kwargs(manifest: dict) -> None:
    cfg = ImageBindConfig.huge().to_dict()
    for key, value in manifest["constructor_kwargs_effective"].items():
        assert cfg[key] == value, key


def test_tiny_preset_equals_fixture_constructor() -> None:
    kwargs = json.loads((FIXTURES / "tiny_config.json").read_text())["constructor_kwargs"]
    assert ImageBindConfig.from_dict(kwargs) == ImageBindConfig.tiny()


def test_config_json_round_trip(tmp_path: Path) -> None:
    cfg = ImageBindConfig.tiny(modalities=("vision", "audio"), audio_logit_scale_init=7.0)
    cfg.to_json_file(tmp_path / "c.json")
    back = ImageBindConfig.from_json_file(tmp_path / "c.json")
    assert back == cfg and back.kernel_size == (2, 14, 14) and back.modalities == ("vision", "audio")


def test_unknown_config_keys_warn_not_crash(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING):
        cfg = ImageBindConfig.from_dict({**ImageBindConfig.tiny().to_dict(), "future_option": 1})
    assert cfg == ImageBindConfig.tiny() and "future_option" in caplog.text


@pytest.mark.parametrize(
    ("kwargs", "words"),
    [
        ({"vision_num_heads": 5}, "divisible"),
        ({"modalities": ("vision", "smell")}, "subset"),
        ({"imu_kernel_size": 4}, "hard-codes"),
        ({"image_size": 100}, "multiple of the patch"),
    ],
)
def test_config_validation(kwargs: dict, words: str) -> None:
    with pytest.raises(ValueError, match=words):
        ImageBindConfig.tiny(**kwargs)


def test_subset_of_towers_builds_only_those() -> None:
    model = ImageBindModel(ImageBindConfig.tiny(modalities=("vision", "audio")))
    assert set(model.modality_trunks) == {"vision", "audio"}
    assert {k.split(".")[1] for k in model.state_dict()} == {"vision", "audio"}
    assert set(ALL_MODALITIES) == {"vision", "text", "audio", "depth", "thermal", "imu"}
