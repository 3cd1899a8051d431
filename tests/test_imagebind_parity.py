"""The tiny model loaded with the fixture weights reproduces the reference's outputs, stage by stage."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from modaverse_agent.encoders.imagebind import weights
from modaverse_agent.encoders.imagebind.config import ImageBindConfig
from modaverse_agent.encoders.imagebind.encoder import ImageBindEncoder
from modaverse_agent.encoders.imagebind.model import ImageBindModel
from modaverse_agent.encoders.imagebind.weights import build_model, read_state_dict
from modaverse_agent.errors import ModelError

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "imagebind"
ATOL_OUT, ATOL_STAGE = 1e-5, 1e-4
INPUTS = ("text", "vision", "video", "audio", "depth", "thermal", "imu")


@pytest.fixture(scope="module")
def state() -> dict[str, torch.Tensor]:
    return load_file(str(FIXTURES / "tiny_state_dict.safetensors"))


@pytest.fixture(scope="module")
def model(state: dict[str, torch.Tensor]) -> ImageBindModel:
    return build_model(ImageBindConfig.tiny(), state)


@pytest.fixture(scope="module")
def inputs() -> dict[str, torch.Tensor]:
    raw = load_file(str(FIXTURES / "tiny_inputs.safetensors"))
    return {k: v if k == "text" else v.float() for k, v in raw.items()}


@pytest.fixture(scope="module")
def outputs() -> dict[str, torch.Tensor]:
    return load_file(str(FIXTURES / "tiny_outputs.safetensors"))


def _tower(name: str) -> str:
    return "vision" if name == "video" else name


@pytest.mark.parametrize("name", INPUTS)
def test_tiny_outputs_match_reference(model: ImageBindModel, inputs: dict, outputs: dict, name: str) -> None:
    with torch.inference_mode():
        got = model.embed(_tower(name), inputs[name])
    torch.testing.assert_close(got, outputs[name], atol=ATOL_OUT, rtol=0)


@pytest.mark.parametrize("name", INPUTS)
def test_tiny_intermediates_match_reference(model: ImageBindModel, inputs: dict, name: str) -> None:
    expected = load_file(str(FIXTURES / "tiny_intermediates.safetensors"))
    stages: dict[str, torch.Tensor] = {}
    with torch.inference_mode():
        model.embed(_tower(name), inputs[name], stages=stages)
    assert sorted(stages) == ["1_preprocessor_tokens", "2_trunk_out", "3_head_out", "4_postprocessor_out"]
    for stage, got in stages.items():
        torch.testing.assert_close(got, expected[f"{name}.{stage}"], atol=ATOL_STAGE, rtol=0, msg=stage)


def test_forward_dict_equals_per_modality(model: ImageBindModel, inputs: dict, outputs: dict) -> None:
    with torch.inference_mode():
        got = model({"text": inputs["text"], "audio": inputs["audio"], "vision": inputs["video"]})
    torch.testing.assert_close(got["vision"], outputs["video"], atol=ATOL_OUT, rtol=0)
    torch.testing.assert_close(got["audio"], outputs["audio"], atol=ATOL_OUT, rtol=0)


@pytest.mark.parametrize("name", ["text", "vision", "audio", "video"])
def test_end_to_end_on_reference_preprocessed_media(model: ImageBindModel, outputs: dict, name: str) -> None:
    x = load_file(str(FIXTURES / "preprocess_expected.safetensors"))[name]
    with torch.inference_mode():
        got = model.embed(_tower(name), x if name == "text" else x.float())
    torch.testing.assert_close(got, outputs[f"e2e_{name}"], atol=ATOL_OUT, rtol=0)


def test_logit_scales_are_loaded_not_hard_coded(model: ImageBindModel) -> None:
    cfg = json.loads((FIXTURES / "tiny_config.json").read_text())["logit_scales_exp_of_log_logit_scale"]
    sd = model.state_dict()
    for key, value in cfg.items():
        assert sd[key].exp().item() == pytest.approx(value, rel=1e-6)
    assert not any(isinstance(p, torch.nn.Parameter) for p in [sd["modality_postprocessors.audio.1.log_logit_scale"]])
    assert "modality_postprocessors.text.1.log_logit_scale" in dict(model.named_parameters())


def test_text_logit_scale_is_clipped_at_100(state: dict, inputs: dict, outputs: dict) -> None:
    key = "modality_postprocessors.text.1.log_logit_scale"
    clipped = build_model(ImageBindConfig.tiny(), {**state, key: torch.tensor(5.0)})
    with torch.inference_mode():
        got = clipped.embed("text", inputs["text"])
    torch.testing.assert_close(got, outputs["text_logit_scale_5.0_clipped"], atol=1e-4, rtol=0)
    assert torch.allclose(got.norm(dim=-1), torch.tensor(100.0), atol=1e-3)


def test_clip_averaging_is_what_makes_video_not_unit_norm(model: ImageBindModel, inputs: dict, outputs: dict) -> None:
    video = inputs["video"]  # (B, S, C, T, H, W)
    with torch.inference_mode():
        per_clip = model.embed("vision", video.flatten(0, 1).unsqueeze(1)).reshape(2, 2, -1)
    assert torch.allclose(per_clip.norm(dim=-1), torch.ones(2, 2), atol=1e-5)
    torch.testing.assert_close(per_clip.mean(1), outputs["video"], atol=ATOL_OUT, rtol=0)
    assert (outputs["video"].norm(dim=-1) < 0.999).all()


def test_a_perturbed_weight_breaks_parity(state: dict, inputs: dict, outputs: dict) -> None:
    """The tolerance is tight enough to notice a small change in the maths."""
    key = "modality_trunks.vision.blocks.0.mlp.fc2.weight"
    weight = state[key].clone()
    weight[0, 0] += 1e-2
    broken = build_model(ImageBindConfig.tiny(), {**state, key: weight})
    with torch.inference_mode():
        diff = (broken.embed("vision", inputs["vision"]) - outputs["vision"]).abs().max()
    assert diff > 10 * ATOL_OUT


def test_weights_round_trip_through_pth_safetensors_and_directory(
    state: dict,
    inputs: dict,
    outputs: dict,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(weights, "_noted", False)
    torch.save(state, tmp_path / "tiny.pth")
    save_file(state, str(tmp_path / "tiny.safetensors"))
    (tmp_path / "cfg.json").write_text(json.dumps(ImageBindConfig.tiny().to_dict()))
    with caplog.at_level(logging.WARNING):
        encoders = [
            ImageBindEncoder.from_pretrained(tmp_path / "tiny.pth", "tiny", towers=None),
            ImageBindEncoder.from_pretrained(tmp_path / "tiny.safetensors", tmp_path / "cfg.json"),
        ]
    encoders.append(ImageBindEncoder.from_pretrained(encoders[0].save_pretrained(tmp_path / "saved"), towers=None))
    assert caplog.text.count("CC BY-NC-SA 4.0") == 1  # the licence note, once per process
    for enc in encoders:
        got = enc.encode_tensors("audio", inputs["audio"])
        torch.testing.assert_close(got, outputs["audio"], atol=ATOL_OUT, rtol=0)
    assert set(encoders[1].model.modalities) == {"vision", "text", "audio"}  # default towers
    assert set(encoders[2].model.modalities) == set(ImageBindConfig.tiny().modalities)


def test_pickled_objects_are_refused(tmp_path: Path) -> None:
    torch.save({"weights": object()}, tmp_path / "evil.pth")
    with pytest.raises(ModelError, match="not a readable torch state dict"):
        read_state_dict(tmp_path / "evil.pth")


@pytest.mark.parametrize(
    ("edit", "words"),
    [
        (lambda sd: sd.pop("modality_heads.vision.2.weight"), "1 missing"),
        (lambda sd: sd.update(extra=torch.zeros(1)), "1 unexpected"),
        (lambda sd: sd.update({"modality_heads.audio.2.weight": torch.zeros(3, 3)}), "1 wrong shape"),
    ],
)
def test_mismatched_state_dicts_are_named(state: dict, edit, words: str) -> None:
    sd = dict(state)
    edit(sd)
    with pytest.raises(ModelError, match=words):
        build_model(ImageBindConfig.tiny(), sd)


def test_huge_config_refuses_tiny_weights(state: dict) -> None:
    with pytest.raises(ModelError, match="config='huge'"):
        build_model(ImageBindConfig.huge(), state)


def test_missing_weights_file_says_so(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="does not exist"):
        ImageBindEncoder.from_pretrained(tmp_path / "imagebind_huge.pth")
