"""ImageBindEncoder: the MediaEncoder interface, end to end from media files to the reference's embeddings."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from modaverse_agent.encoders import MediaEncoder
from modaverse_agent.encoders.imagebind import ImageBindConfig, ImageBindEncoder
from modaverse_agent.errors import MediaError, ModelError
from modaverse_agent.media import MediaItem, load_media

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "imagebind"
MEDIA = FIXTURES / "media"
IMAGES = ["chelsea.png", "coffee.jpg", "chelsea_portrait_rgba.png"]
AUDIO = ["speech_16k.wav", "speech_22k.wav", "speech_16k_mp3.wav", "speech_16k.mp3"]
VIDEO = "testsrc_320x240_10fps_3s.mp4"


@pytest.fixture(scope="module")
def state() -> dict[str, torch.Tensor]:
    return load_file(str(FIXTURES / "tiny_state_dict.safetensors"))


@pytest.fixture
def encoder(state: dict[str, torch.Tensor]) -> ImageBindEncoder:
    return ImageBindEncoder.from_config(ImageBindConfig.tiny(), state)


@pytest.fixture(scope="module")
def outputs() -> dict[str, torch.Tensor]:
    return load_file(str(FIXTURES / "tiny_outputs.safetensors"))


def _items(names: list[str]) -> list[MediaItem]:
    return [load_media(MEDIA / n) for n in names]


def test_is_a_media_encoder(encoder: ImageBindEncoder) -> None:
    assert isinstance(encoder, MediaEncoder)
    assert encoder.modalities == ("image", "audio", "video")
    assert (encoder.embed_dim, encoder.device, encoder.dtype) == (32, torch.device("cpu"), torch.float32)
    assert not any(p.requires_grad for p in encoder.model.parameters()) and not encoder.model.training
    with pytest.raises(TypeError):
        MediaEncoder()  # type: ignore[abstract]


def test_images_end_to_end(encoder: ImageBindEncoder, outputs: dict) -> None:
    got = encoder.encode("image", _items(IMAGES))
    assert got.shape == (3, 32) and not got.requires_grad
    torch.testing.assert_close(got, outputs["e2e_vision"], atol=1e-5, rtol=0)


def test_audio_end_to_end(encoder: ImageBindEncoder, outputs: dict) -> None:
    torch.testing.assert_close(encoder.encode("audio", _items(AUDIO)), outputs["e2e_audio"], atol=1e-5, rtol=0)


def test_video_end_to_end(encoder: ImageBindEncoder, outputs: dict) -> None:
    # The reference tensor was stored in fp16; ours is the fp32 original, so allow that rounding through the model.
    torch.testing.assert_close(encoder.encode("video", _items([VIDEO])), outputs["e2e_video"], atol=1e-4, rtol=0)


def test_text_end_to_end(encoder: ImageBindEncoder, outputs: dict) -> None:
    sentences = json.loads((FIXTURES / "preprocess_meta.json").read_text())["text"]["sentences"]
    torch.testing.assert_close(encoder.encode_text(sentences), outputs["e2e_text"], atol=1e-5, rtol=0)
    with pytest.raises(TypeError, match="sequence of strings"):
        encoder.encode_text("a cat")


def test_batching_does_not_change_results(state: dict, outputs: dict) -> None:
    one_by_one = ImageBindEncoder.from_config(ImageBindConfig.tiny(), state, batch_size=1)
    items = _items(AUDIO)
    got = one_by_one.encode("audio", items[::-1])
    torch.testing.assert_close(got, outputs["e2e_audio"].flip(0), atol=1e-5, rtol=0)


def test_dtype_and_device_follow_the_encoder(state: dict, outputs: dict) -> None:
    image = _items(IMAGES[:1])
    enc = ImageBindEncoder.from_config(ImageBindConfig.tiny(), state, dtype=torch.bfloat16)
    got = enc.encode("image", image)
    assert enc.dtype == got.dtype == torch.bfloat16 and got.device == torch.device("cpu")
    torch.testing.assert_close(got.float(), outputs["e2e_vision"][:1], atol=0.05, rtol=0)
    enc = ImageBindEncoder.from_config(ImageBindConfig.tiny(), state)
    assert enc.to(device="cpu", dtype=torch.float64) is enc
    got = enc.encode("image", image)
    assert got.dtype == torch.float64
    torch.testing.assert_close(got.float(), outputs["e2e_vision"][:1], atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match="floating-point"):
        enc.to(dtype=torch.int64)


def test_encode_tensors_checks_shapes(encoder: ImageBindEncoder) -> None:
    with pytest.raises(ValueError, match=r"\(B, clips, 3, T, H, W\)"):
        encoder.encode_tensors("video", torch.zeros(1, 3, 2, 224, 224))  # no clip axis: the reference mis-handles it
    with pytest.raises(ValueError, match=r"\(B, clips, 1, mel, frames\)"):
        encoder.encode_tensors("audio", torch.zeros(1, 1, 128, 204))
    with pytest.raises(ValueError, match="float tensor"):
        encoder.encode_tensors("image", torch.zeros(1, 3, 224, 224, dtype=torch.uint8))
    assert encoder.encode_tensors("image", torch.zeros(0, 3, 224, 224)).shape == (0, 32)


def test_unknown_and_mismatched_modalities(encoder: ImageBindEncoder) -> None:
    with pytest.raises(ValueError, match="not 'text'"):
        encoder.encode("text", [])
    with pytest.raises(MediaError, match="is audio, it cannot be encoded as image"):
        encoder.encode("image", _items(AUDIO[:1]))
    with pytest.raises(MediaError, match="cannot be encoded as video"):
        encoder.encode("video", _items(IMAGES[:1]))
    assert encoder.encode("image", []).shape == (0, 32)


def test_a_videos_sound_is_encoded_as_audio(encoder: ImageBindEncoder) -> None:
    got = encoder.encode("audio", _items([VIDEO]))
    assert got.shape == (1, 32) and torch.isfinite(got).all()
    assert 15 < got.norm().item() < 21  # audio embeddings carry the audio logit scale (20.3 here)


def test_an_encoder_without_a_tower_says_which(state: dict) -> None:
    vision_only = ImageBindEncoder.from_config(ImageBindConfig.tiny(modalities=("vision",)), state)
    assert vision_only.encode("image", _items(IMAGES[:1])).shape == (1, 32)
    with pytest.raises(ModelError, match="without the 'audio' tower"):
        vision_only.encode("audio", _items(AUDIO[:1]))


def test_random_models_build_from_configs_alone() -> None:
    enc = ImageBindEncoder.from_config(ImageBindConfig.tiny(out_embed_dim=8, modalities=("vision", "audio")))
    torch.manual_seed(0)
    out = enc.encode_tensors("audio", torch.randn(2, 3, 1, 128, 204))
    assert out.shape == (2, 8) and torch.isfinite(out).all() and not torch.allclose(out[0], out[1])


def test_embeddings_can_feed_a_trainable_projector(encoder: ImageBindEncoder) -> None:
    emb = encoder.encode("image", _items(IMAGES[:2]))
    assert not emb.requires_grad and not emb.is_inference()
    projector = torch.nn.Linear(32, 4)
    projector(emb).sum().backward()
    assert projector.weight.grad is not None
