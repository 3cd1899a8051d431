"""ModaVerse directories: save -> load round trip, precise errors, the official-release importer, GGUF checks."""

from __future__ import annotations

import pickle
import shutil
from pathlib import Path
from typing import Any

import pytest

torch = pytest.importorskip("torch")

from safetensors.torch import load_file, save_file  # noqa: E402

from modaverse_agent.agent import LLMRequest  # noqa: E402
from modaverse_agent.errors import ModelError  # noqa: E402
from modaverse_agent.media import load_media  # noqa: E402
from modaverse_agent.model.checkpoint import (  # noqa: E402
    ADAPTER_WEIGHTS,
    PROJECTOR_FILE,
    RELEASE_TOKENS,
    ROWS_FILE,
    import_official,
)
from modaverse_agent.model.config import CONFIG_NAME  # noqa: E402
from modaverse_agent.model.llm import load_llm  # noqa: E402
from modaverse_agent.model.modeling import ModaVerseModel  # noqa: E402
from modaverse_agent.model.synthetic_release import RELEASE_EMBED, RELEASE_HEAD, release_state  # noqa: E402
from modaverse_agent.model.tiny import HashEncoder, save_tiny_base, tiny_config  # noqa: E402

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_tiny_base(tmp_path_factory.mktemp("vicuna"))


@pytest.fixture(scope="module")
def image(tmp_path_factory: pytest.TempPathFactory) -> Any:
    from PIL import Image

    path = tmp_path_factory.mktemp("media") / "a.png"
    Image.new("RGB", (8, 8), (200, 10, 30)).save(path)
    return load_media(path)


@pytest.fixture(scope="module")
def trained(base: Path) -> ModaVerseModel:
    """A model whose every trained part differs from its initial value (LoRA B, media rows, projectors)."""
    torch.manual_seed(3)
    m = ModaVerseModel.from_config(tiny_config(base), encoder=HashEncoder(16), init_lora_weights=False).eval()
    embed = m.llm.get_input_embeddings()
    embed.set_rows(torch.randn_like(embed.rows))
    assert all(p.abs().sum() > 0 for n, p in m.named_parameters() if "lora_B" in n)
    return m


@pytest.fixture(scope="module")
def saved(trained: ModaVerseModel, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return trained.save_pretrained(tmp_path_factory.mktemp("ckpt") / "model")


def _logits(model: ModaVerseModel, image: Any, instruction: str = "draw a cat") -> torch.Tensor:
    prompt, feats, mods = model.prepare(LLMRequest(instruction, [("image_1", image)], {}, []))
    with torch.no_grad():
        return model(torch.tensor([prompt]), media_features=feats, media_modalities=mods).logits


def test_save_load_round_trip_is_exact(trained: ModaVerseModel, saved: Path, image: Any) -> None:
    files = sorted(str(p.relative_to(saved)) for p in saved.rglob("*") if p.is_file())
    assert {CONFIG_NAME, PROJECTOR_FILE, ADAPTER_WEIGHTS, ROWS_FILE, "adapter/adapter_config.json"} <= set(files)
    assert not [f for f in files if f.endswith((".bin", ".pt", ".pth", ".pkl"))]
    loaded = ModaVerseModel.from_pretrained(saved, encoder=HashEncoder(16))
    assert torch.equal(_logits(loaded, image), _logits(trained, image))
    assert loaded.token_ids == trained.token_ids


def test_trained_tables_are_trainable_saved_whole_and_reloaded(base: Path, image: Any, tmp_path: Path) -> None:
    torch.manual_seed(4)
    config = tiny_config(base, train_embeddings=True)
    m = ModaVerseModel.from_config(config, encoder=HashEncoder(16), init_lora_weights=False).eval()
    embed, head = m.llm.get_input_embeddings(), m.llm.get_output_embeddings()
    trainable = {id(p) for p in m.trainable_parameters()}
    assert id(embed.weight) in trainable and id(head.weight) in trainable  # the tiny Llama's head is untied
    with torch.no_grad():
        embed.weight.add_(torch.randn_like(embed.weight))
        head.weight.add_(torch.randn_like(head.weight))
    loaded = ModaVerseModel.from_pretrained(m.save_pretrained(tmp_path / "m"), encoder=HashEncoder(16))
    assert torch.equal(_logits(loaded, image), _logits(m, image))
    plain = ModaVerseModel.from_config(tiny_config(base), encoder=HashEncoder(16))
    assert id(plain.llm.get_input_embeddings().weight) not in {id(p) for p in plain.trainable_parameters()}


def _copy(saved: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(saved, tmp_path / "copy"))


def test_without_a_saved_tokenizer_the_base_one_gives_the_same_ids(
    trained: ModaVerseModel, image: Any, tmp_path: Path
) -> None:
    out = trained.save_pretrained(tmp_path / "small", tokenizer=False)
    assert not (out / "tokenizer").exists()
    loaded = ModaVerseModel.from_pretrained(out, encoder=HashEncoder(16))
    assert loaded.token_ids == trained.token_ids
    assert torch.equal(_logits(loaded, image), _logits(trained, image))


@pytest.mark.parametrize("name", [CONFIG_NAME, PROJECTOR_FILE, ADAPTER_WEIGHTS, ROWS_FILE])
def test_missing_file_is_named(saved: Path, tmp_path: Path, name: str) -> None:
    broken = _copy(saved, tmp_path)
    (broken / name).unlink()
    with pytest.raises(ModelError, match=f"missing {name}"):
        ModaVerseModel.from_pretrained(broken)


def _rewrite(path: Path, key: str, shape: tuple[int, ...]) -> None:
    tensors = load_file(str(path))
    tensors[key] = torch.zeros(shape)
    save_file(tensors, str(path))


def test_mismatched_shapes_name_file_and_tensor(saved: Path, tmp_path: Path) -> None:
    broken = _copy(saved, tmp_path)
    key = sorted(k for k in load_file(str(saved / ADAPTER_WEIGHTS)) if "q_proj.lora_A" in k)[0]
    _rewrite(broken / ADAPTER_WEIGHTS, key, (5, 32))
    with pytest.raises(
        ModelError, match=rf"{ADAPTER_WEIGHTS}: `{key}` has shape \(5, 32\), the model expects \(4, 32\)"
    ):
        ModaVerseModel.from_pretrained(broken)
    shutil.copy(saved / ADAPTER_WEIGHTS, broken / ADAPTER_WEIGHTS)
    _rewrite(broken / PROJECTOR_FILE, "proj.image.weight", (32, 8))
    with pytest.raises(ModelError, match=rf"{PROJECTOR_FILE}: `proj.image.weight` has shape \(32, 8\)"):
        ModaVerseModel.from_pretrained(broken)
    shutil.copy(saved / PROJECTOR_FILE, broken / PROJECTOR_FILE)
    _rewrite(broken / ROWS_FILE, "embed.weight", (2, 48))
    with pytest.raises(ModelError, match=rf"{ROWS_FILE}: `embed.weight` has shape \(2, 48\)"):
        ModaVerseModel.from_pretrained(broken)


# -- the official release --------------------------------------------------------------------------------
EMBED, HEAD = RELEASE_EMBED, RELEASE_HEAD


def _official_state(base: Path, rank: int = 4) -> dict[str, torch.Tensor]:
    """Exactly the release's key names, on a tiny Llama: projector, q/k/v/o LoRA, full embed + lm_head."""
    from transformers import AutoConfig, AutoTokenizer

    rows = len(AutoTokenizer.from_pretrained(str(base))) + len(RELEASE_TOKENS)
    return release_state(AutoConfig.from_pretrained(str(base)), rows, encoder_dim=16, rank=rank)


def _reference_logits(base: Path, state: dict[str, torch.Tensor], feat: torch.Tensor, instruction: str) -> Any:
    """The release's forward, rebuilt by hand: peft LoRA, full tables, `### Human: <Media>x</Media> ...`."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(base))
    llm = AutoModelForCausalLM.from_pretrained(str(base))
    llm.resize_token_embeddings(state[EMBED].shape[0])
    with torch.no_grad():
        llm.get_input_embeddings().weight.copy_(state[EMBED])
        llm.get_output_embeddings().weight.copy_(state[HEAD])
    lora = LoraConfig(r=4, lora_alpha=32, lora_dropout=0.0, target_modules=["q_proj", "k_proj", "v_proj", "o_proj"])
    peft_llm = get_peft_model(llm, lora).eval()
    with torch.no_grad():
        for key, value in state.items():
            if ".lora_" in key:
                name = key.removeprefix("LLM.").replace(".default.weight", "")
                module = peft_llm.get_submodule(name)
                module["default"].weight.copy_(value)
    media_start, media_end = len(tok), len(tok) + 1
    embed = llm.get_input_embeddings()

    def emb(ids: list[int]) -> torch.Tensor:
        return embed(torch.tensor([ids]))

    media = (feat @ state["linear_proj.weight"].T + state["linear_proj.bias"]).view(1, 1, -1)
    head = [tok.bos_token_id, *tok("### Human:", add_special_tokens=False).input_ids]
    tail = tok(f"{instruction}\n### Assistant:", add_special_tokens=False).input_ids
    embeds = torch.cat([emb(head), emb([media_start]), media, emb([media_end]), emb(tail)], dim=1)
    with torch.no_grad():
        return peft_llm(inputs_embeds=embeds).logits


def test_import_official_release_matches_its_forward(base: Path, image: Any, tmp_path: Path) -> None:
    state = _official_state(base)
    ckpt = tmp_path / "pytorch_model.pt"
    torch.save(state, ckpt)
    out = import_official(ckpt, base, tmp_path / "imported", dtype="float32")
    model = ModaVerseModel.from_pretrained(out, encoder=HashEncoder(16))
    assert model.config.prompt_format == model.config.output_format == "legacy"
    assert model.config.lora_r == 4 and model.config.shared_projector and model.config.stop_strings == ["###"]
    n = state[EMBED].shape[0]
    assert [model.token_ids[t] for t in RELEASE_TOKENS] == list(range(n - 6, n))
    feat = HashEncoder(16).encode("image", [image])
    expected = _reference_logits(base, state, feat, "draw a cat")
    got = _logits(model, image)
    assert got.shape[1] == expected.shape[1]
    assert torch.allclose(got[..., :n], expected, atol=1e-5)
    # an imported model saves and reloads like any other (the whole imported tables come along)
    again = ModaVerseModel.from_pretrained(model.save_pretrained(tmp_path / "resaved"), encoder=HashEncoder(16))
    assert torch.equal(_logits(again, image), got)
    model.options.max_new_tokens = 8
    raw = model.respond(LLMRequest("draw a cat", [("image_1", image)], {}, []))
    assert isinstance(raw, str)


def test_import_official_command(base: Path, tmp_path: Path) -> None:
    from click.testing import CliRunner

    from modaverse_agent.cli import cli

    ckpt = tmp_path / "pytorch_model.pt"
    torch.save(_official_state(base), ckpt)
    args = ["import-official", str(ckpt), "--base-llm", str(base), "--dtype", "float32"]
    res = CliRunner().invoke(cli, [*args, "-o", str(tmp_path / "imported")])
    assert res.exit_code == 0, res.output
    assert "--model" in res.output and ModaVerseModel.from_pretrained(tmp_path / "imported").config.lora_r == 4
    torch.save({"x": torch.ones(2)}, tmp_path / "other.pt")
    res = CliRunner().invoke(cli, ["import-official", str(tmp_path / "other.pt"), "--base-llm", str(base), "-o", "x"])
    assert res.exit_code == 2 and "reads the ModaVerse-7b-v0 release" in res.output


class _Evil:
    def __reduce__(self) -> tuple[Any, ...]:
        return (print, ("pwned",))


def test_import_refuses_bad_release_files(base: Path, tmp_path: Path) -> None:
    state = _official_state(base)
    key = "LLM.base_model.model.model.layers.1.self_attn.v_proj.lora_B.default.weight"
    torch.save({k: v for k, v in state.items() if k != key}, tmp_path / "a.pt")
    with pytest.raises(ModelError, match=f"tensor `{key}` is missing"):
        import_official(tmp_path / "a.pt", base, tmp_path / "o1")
    torch.save({**state, EMBED: state[EMBED][:-1]}, tmp_path / "b.pt")
    with pytest.raises(ModelError, match=r"`LLM.base_model.model.model.embed_tokens.weight` has shape .* Vicuna-7b-v0"):
        import_official(tmp_path / "b.pt", base, tmp_path / "o2")
    torch.save({**state, "LLM.base_model.model.model.norm.weight": torch.ones(32)}, tmp_path / "c.pt")
    with pytest.raises(ModelError, match=r"unexpected tensor `LLM.base_model.model.model.norm.weight`"):
        import_official(tmp_path / "c.pt", base, tmp_path / "o3")
    (tmp_path / "d.pt").write_bytes(pickle.dumps({"x": _Evil()}))
    with pytest.raises(ModelError, match="not a weights-only torch checkpoint"):
        import_official(tmp_path / "d.pt", base, tmp_path / "o4")


# -- GGUF ------------------------------------------------------------------------------------------------
def _gguf(path: Path, arch: str) -> Path:
    import gguf
    import numpy as np

    writer = gguf.GGUFWriter(str(path), arch)
    writer.add_block_count(1)
    writer.add_context_length(32)
    writer.add_embedding_length(8)
    writer.add_feed_forward_length(16)
    writer.add_head_count(2)
    writer.add_tensor("token_embd.weight", np.zeros((4, 8), dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def test_gguf_that_is_not_a_causal_lm_is_refused(tmp_path: Path) -> None:
    pytest.importorskip("gguf")
    _gguf(tmp_path / "enc.gguf", "t5")
    with pytest.raises(
        ModelError, match=r"enc.gguf \(architecture 't5'\) is a 't5' model, not a causal language model"
    ):
        load_llm(str(tmp_path), gguf_file="enc.gguf")
    _gguf(tmp_path / "odd.gguf", "bert")
    with pytest.raises(ModelError, match=r"odd.gguf \(architecture 'bert'\).*not supported"):
        load_llm(str(tmp_path), gguf_file="odd.gguf")
    (tmp_path / "junk.gguf").write_bytes(b"GGUX nonsense")
    with pytest.raises(ModelError, match=r"junk.gguf is not a readable GGUF file"):
        load_llm(str(tmp_path), gguf_file="junk.gguf")
    with pytest.raises(ModelError, match="does not exist"):
        load_llm(str(tmp_path), gguf_file="absent.gguf")


def test_a_folder_that_is_no_model_is_named_as_such(tmp_path: Path) -> None:
    from modaverse_agent.errors import ModelError
    from modaverse_agent.model.model_dir import read_model_dir

    (tmp_path / "notes.txt").write_text("hi")
    with pytest.raises(ModelError, match="is not a model folder written by `modaverse train`"):
        read_model_dir(tmp_path)
