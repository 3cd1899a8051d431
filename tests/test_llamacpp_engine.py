"""The llama.cpp engine on a tiny random Llama written as an F32 GGUF: same answers as the torch engine."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("xgrammar")
pytest.importorskip("llama_cpp")

from transformers import AutoModelForCausalLM, AutoTokenizer  # noqa: E402

from modaverse_agent.agent import LLMRequest  # noqa: E402
from modaverse_agent.errors import ModelError  # noqa: E402
from modaverse_agent.media import load_media  # noqa: E402
from modaverse_agent.meta_response import parse_meta_response  # noqa: E402
from modaverse_agent.model.gguf_export import lora_tensors, write_llama_gguf  # noqa: E402
from modaverse_agent.model.gguf_file import gguf_metadata  # noqa: E402
from modaverse_agent.model.llamacpp import (  # noqa: E402
    LlamaCppModel,
    adapter_gguf,
    load_engine,
    not_plain_lora,
    resolve_engine,
    suits_llama_cpp,
)
from modaverse_agent.model.modeling import ModaVerseModel  # noqa: E402
from modaverse_agent.model.tiny import save_tiny_base, tiny_config  # noqa: E402
from modaverse_agent.zoo import Zoo  # noqa: E402

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def dirs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A saved tiny ModaVerse (non-zero LoRA on every linear layer, trained-looking projector) and its base GGUF."""
    root = tmp_path_factory.mktemp("lcpp")
    base = save_tiny_base(root / "base", hidden=64)
    write_llama_gguf(
        AutoModelForCausalLM.from_pretrained(str(base)), AutoTokenizer.from_pretrained(str(base)), root / "base.gguf"
    )
    torch.manual_seed(0)
    targets = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    config = tiny_config(base, blind_media=True, lora_targets=targets, lora_alpha=16)
    model = ModaVerseModel.from_config(config, init_lora_weights=False)
    with torch.no_grad():
        for p in model.projector.parameters():
            p.normal_(0, 0.5)  # media must move the answer, or the splice test proves nothing
        model.llm.get_input_embeddings().rows.normal_(0, 0.5)
    model.save_pretrained(root / "model")
    return root / "model", root / "base.gguf"


@pytest.fixture(scope="module")
def engines(dirs: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory) -> tuple[ModaVerseModel, LlamaCppModel]:
    model_dir, gguf = dirs
    cache = tmp_path_factory.mktemp("cache")
    return ModaVerseModel.from_pretrained(model_dir), LlamaCppModel.from_pretrained(model_dir, gguf=gguf, cache=cache)


def _prompts(model: ModaVerseModel, texts: list[str], media: list[list[str]]) -> list[list[int]]:
    tasks = Zoo.from_plugins().task_specs()
    return [model.prompter.ids(t, m, tasks) for t, m in zip(texts, media, strict=True)]


def test_gguf_base_matches_the_transformers_model(dirs: tuple[Path, Path]) -> None:
    meta = gguf_metadata(dirs[1])
    assert meta["arch"] == "llama" and meta["n_embd"] == 64 and meta["n_blocks"] == 2 and meta["type"] == "model"


def test_greedy_answers_equal_the_torch_engine(engines: tuple[ModaVerseModel, LlamaCppModel]) -> None:
    torch_model, lc = engines
    texts = ["draw me a picture of a cat", "what is in this image? describe it", "make a short song"]
    prompts = _prompts(torch_model, texts, [[], [], []])
    want, want_stats = torch_model.generate_with_stats(prompts, max_new_tokens=24)
    got, got_stats = lc.generate_with_stats(prompts, max_new_tokens=24)
    assert got == want and len(set(got)) > 1  # different prompts, different answers
    assert got_stats == want_stats


def test_media_go_in_as_embeddings_and_move_the_answer(engines: tuple[ModaVerseModel, LlamaCppModel]) -> None:
    torch_model, lc = engines
    prompts = _prompts(torch_model, ["turn this photo into a painting"] * 2, [["image_1"], ["image_1", "audio_1"]])
    feats = torch.randn(3, 16) * 3
    mods = ["image", "image", "audio"]
    want = torch_model.generate(prompts, feats, mods, max_new_tokens=20)
    assert lc.generate(prompts, feats, mods, max_new_tokens=20) == want
    # the next-token logits after the prompt: equal to torch's, and moved by the features
    ids = torch.tensor([prompts[0]])
    seen = []
    for f in (feats[:1], -feats[:1]):
        with torch.no_grad():
            ref = torch_model(input_ids=ids, media_features=f, media_modalities=["image"]).logits[0, -1, : lc.n_vocab]
        lc._prefill(lc._lay_out(prompts[:1], lc._media_rows(f, ["image"]))[0])
        got = lc._logits(lc.grammars.vocab_size)[0, : lc.n_vocab]
        assert torch.allclose(got, ref, atol=1e-3, rtol=1e-3)
        seen.append(got)
    assert (seen[0] - seen[1]).abs().max() > 0.01
    with pytest.raises(ValueError, match="placeholders"):
        lc.generate(prompts[:1], feats[:2], mods[:2], max_new_tokens=4)


def test_constrained_answers_are_valid_and_equal_torch(
    engines: tuple[ModaVerseModel, LlamaCppModel], echo_zoo: Zoo, png_file: Path
) -> None:
    torch_model, lc = engines
    schema = echo_zoo.schema(media_ids=["image_1"])
    request = LLMRequest(
        "invert the colours of this picture", [("image_1", load_media(png_file))], schema, echo_zoo.task_specs()
    )
    for engine in engines:
        engine.options.max_new_tokens = 60
    want, got = torch_model.respond(request), lc.respond(request)
    assert got == want
    parse_meta_response(got, schema)  # valid for the zoo's schema
    lc.overlap_grammar = False  # the grammar after each decode (the benchmark's comparison row): the same
    try:
        assert lc.respond(request) == want
    finally:
        lc.overlap_grammar = True
    # a tight budget still closes the JSON (the shared closing route)
    lc.options.max_new_tokens = 30
    parse_meta_response(lc.respond(request), schema)
    completion = lc.complete(request)
    assert completion.output_tokens <= max(30, lc.grammars.shortest(schema)) and completion.finish_reason in (
        "stop",
        "length",
    )


def test_a_padded_vocabulary_keeps_media_tokens_as_embeddings(tmp_path: Path) -> None:
    """Media tokens inside the GGUF's vocabulary (its table is padded past the tokenizer, as Qwen's is)."""
    base = save_tiny_base(tmp_path / "base", hidden=32)
    hf = AutoModelForCausalLM.from_pretrained(str(base))
    hf.resize_token_embeddings(400)
    hf.save_pretrained(str(base))
    write_llama_gguf(hf, AutoTokenizer.from_pretrained(str(base)), tmp_path / "base.gguf")
    torch.manual_seed(1)
    model = ModaVerseModel.from_config(tiny_config(base, blind_media=True), init_lora_weights=False)
    with torch.no_grad():
        for p in model.projector.parameters():
            p.normal_(0, 0.5)
    assert model.placeholder_id < 400  # inside the padded table
    lc = LlamaCppModel.from_pretrained(
        model.save_pretrained(tmp_path / "m"), gguf=tmp_path / "base.gguf", cache=tmp_path / "c"
    )
    prompts = _prompts(model, ["turn this photo into a painting"], [["image_1"]])
    feats = torch.randn(1, 16) * 3
    assert lc.generate(prompts, feats, ["image"], max_new_tokens=12) == model.generate(
        prompts, feats, ["image"], max_new_tokens=12
    )


def test_prefix_cache_gives_the_same_answers(engines: tuple[ModaVerseModel, LlamaCppModel]) -> None:
    torch_model, lc = engines
    prompts = _prompts(torch_model, ["draw me a picture of a cat", "draw me a picture of a dog"], [[], []])
    first = [lc.generate([p], max_new_tokens=16)[0] for p in prompts]
    assert len(lc._cached) > 20  # the shared system prompt stays in llama.cpp's memory
    again = lc.generate(prompts, max_new_tokens=16)
    assert again == first == torch_model.generate(prompts, max_new_tokens=16)


def test_sampling_is_seeded(engines: tuple[ModaVerseModel, LlamaCppModel]) -> None:
    _, lc = engines
    prompt = _prompts(engines[0], ["make a short song about the sea"], [[]])
    runs = [lc.generate(prompt, max_new_tokens=16, do_sample=True, temperature=1.5, seed=s)[0] for s in (1, 1, 2)]
    assert runs[0] == runs[1] and runs[0] != runs[2]


def test_streaming_yields_the_answer(engines: tuple[ModaVerseModel, LlamaCppModel]) -> None:
    _, lc = engines
    request = LLMRequest("draw me a picture of a cat", [], {}, [])
    lc.options.max_new_tokens, lc.options.constrained = 12, False
    try:
        stream = lc.stream(request)
        pieces = list(stream)
        assert "".join(pieces) == lc.respond(request) and stream.completion is not None
    finally:
        lc.options.constrained = True


def test_load_engine_picks_and_refuses(dirs: tuple[Path, Path], tmp_path: Path) -> None:
    model_dir, gguf = dirs
    assert isinstance(load_engine(model_dir, "llama.cpp", gguf=gguf), LlamaCppModel)
    assert isinstance(load_engine(model_dir, "auto"), ModaVerseModel)  # an HF base and no GGUF given
    assert isinstance(load_engine(model_dir, "auto", gguf=gguf), LlamaCppModel)
    with pytest.raises(ModelError, match="GGUF"):
        LlamaCppModel.from_pretrained(model_dir)
    config = json.loads((model_dir / "modaverse_config.json").read_text())
    moved = shutil.copytree(model_dir, tmp_path / "m")
    (moved / "modaverse_config.json").write_text(json.dumps({**config, "lora_targets": ["q_proj", "lm_head"]}))
    assert not suits_llama_cpp(moved, gguf)  # auto leaves LoRA on the output layer to torch
    (moved / "modaverse_config.json").write_text(json.dumps({**config, "train_embeddings": True}))
    assert not suits_llama_cpp(moved, gguf) and suits_llama_cpp(model_dir, gguf)
    with pytest.raises(ModelError, match="whole embedding table"):
        LlamaCppModel.from_pretrained(moved, gguf=gguf)
    other = save_tiny_base(tmp_path / "other", hidden=32)
    small = AutoModelForCausalLM.from_pretrained(str(other))
    small.resize_token_embeddings(300)
    write_llama_gguf(small, AutoTokenizer.from_pretrained(str(other)), tmp_path / "other.gguf")
    with pytest.raises(ModelError, match="not this model's base"):
        LlamaCppModel.from_pretrained(model_dir, gguf=tmp_path / "other.gguf")
    (tmp_path / "bad.gguf").write_bytes(b"not a gguf at all")
    with pytest.raises(ModelError, match="not a readable GGUF"):
        LlamaCppModel.from_pretrained(model_dir, gguf=tmp_path / "bad.gguf")
    # no saved tokenizer: it then comes from the GGUF, which lacks "<|endoftext|>"
    no_tokenizer = shutil.copytree(model_dir, tmp_path / "no_tokenizer", ignore=shutil.ignore_patterns("tokenizer"))
    config_path = no_tokenizer / "modaverse_config.json"
    config_path.write_text(json.dumps({**config, "llm": str(tmp_path / "nowhere")}))
    with pytest.raises(ModelError, match=r"added \['<\|endoftext\|>'\].*keep the tokenizer beside the model"):
        LlamaCppModel.from_pretrained(no_tokenizer, gguf=gguf)
    adapter = adapter_gguf(model_dir, gguf_metadata(gguf), tmp_path / "cache")
    assert gguf_metadata(adapter)["type"] == "adapter"
    with pytest.raises(ModelError, match="GGUF adapter, not a model"):
        LlamaCppModel.from_pretrained(model_dir, gguf=adapter)


def test_a_builtin_base_on_llama_cpp_caches_only_its_tokenizer(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``modaverse:gemma-3-270m`` on llama.cpp runs the GGUF as it is: the first load caches the tokenizer and
    generation config only (read from the GGUF), and never converts the weights to a safetensors folder."""
    from modaverse_agent.model import builtin

    # transformers reads a GPT-2-style GGUF tokenizer with "<|endoftext|>" added unless the vocabulary has it
    base = save_tiny_base(tmp_path / "base", hidden=32, extra_specials=["<|endoftext|>"])
    gguf = write_llama_gguf(
        AutoModelForCausalLM.from_pretrained(str(base)), AutoTokenizer.from_pretrained(str(base)), tmp_path / "b.gguf"
    )
    torch.manual_seed(0)
    model = ModaVerseModel.from_config(tiny_config(base, blind_media=True), init_lora_weights=False)
    model.save_pretrained(tmp_path / "model", tokenizer=False)
    reference = LlamaCppModel.from_pretrained(tmp_path / "model", gguf=gguf, cache=tmp_path / "adapters")

    monkeypatch.setenv("MODAVERSE_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(builtin, "ensure_gguf", lambda log=None: gguf)

    def no_conversion(log: object = None) -> Path:
        raise AssertionError("the llama.cpp engine converted the base LLM")

    _whole, tokenizer_only = builtin.BUILTIN_LLMS["gemma-3-270m"]
    monkeypatch.setitem(builtin.BUILTIN_LLMS, "gemma-3-270m", (no_conversion, tokenizer_only))
    config = json.loads((tmp_path / "model" / "modaverse_config.json").read_text())
    (tmp_path / "model" / "modaverse_config.json").write_text(json.dumps({**config, "llm": "modaverse:gemma-3-270m"}))

    builtin = tmp_path / "model"
    assert resolve_engine(builtin, "auto") == "llama.cpp" and resolve_engine(builtin, "torch") == "torch"
    with pytest.raises(ValueError, match="engine must be"):
        resolve_engine(builtin, "vllm")
    lc = load_engine(builtin, "auto")
    assert isinstance(lc, LlamaCppModel) and lc.gguf_path == gguf
    folder = tmp_path / "cache" / "gemma-3-270m-tokenizer"
    assert (folder / "tokenizer_config.json").is_file() and not list(folder.glob("*.safetensors"))
    generation = json.loads((folder / "generation_config.json").read_text())
    assert generation["eos_token_id"] == lc.tokenizer.eos_token_id == reference.tokenizer.eos_token_id
    tasks = Zoo.from_plugins().task_specs()
    texts = ["draw me a picture of a cat", "make a short song"]
    prompts = [reference.prompter.ids(t, [], tasks) for t in texts]
    assert [lc.prompter.ids(t, [], tasks) for t in texts] == prompts
    assert lc.generate(prompts, max_new_tokens=16) == reference.generate(prompts, max_new_tokens=16)


def test_lora_names_follow_llama_cpp() -> None:
    adapter = {
        "base_model.model.model.layers.1.self_attn.q_proj.lora_A.weight": torch.ones(4, 8),
        "base_model.model.model.layers.1.self_attn.q_proj.lora_B.weight": torch.arange(32.0).reshape(8, 4),
        "base_model.model.model.layers.0.mlp.down_proj.lora_B.weight": torch.zeros(8, 4),
    }
    out = lora_tensors(adapter, "llama", 2, heads=(2, 2))
    assert set(out) == {"blk.1.attn_q.weight.lora_a", "blk.1.attn_q.weight.lora_b", "blk.0.ffn_down.weight.lora_b"}
    assert out["blk.1.attn_q.weight.lora_b"][1, 0] == 8.0  # rows permuted to llama.cpp's rotary layout
    with pytest.raises(ModelError, match="not a LoRA"):
        lora_tensors({"base_model.model.lm_head.weight": torch.ones(2, 2)}, "llama", 2)
    assert not_plain_lora({"r": 8}) is None
    assert "DoRA" in str(not_plain_lora({"use_dora": True}))
    assert "one LoRA rank" in str(not_plain_lora({"rank_pattern": {"q_proj": 4}}))


def test_cli_runs_and_evaluates_on_llama_cpp(dirs: tuple[Path, Path], png_file: Path, tmp_path: Path) -> None:
    import modaverse_echo
    from click.testing import CliRunner

    from modaverse_agent import plugins
    from modaverse_agent.cli import cli

    model_dir, gguf = dirs
    plugins.load_plugins()
    plugins.pm.register(modaverse_echo, name="echo")
    runner = CliRunner()
    args = ["run", "invert the colours of this picture", "-m", str(png_file), "--model", str(model_dir), "--json"]
    res = runner.invoke(cli, [*args, "--engine", "llama.cpp", "--gguf", str(gguf), "-o", str(tmp_path / "a")])
    assert res.exit_code in (0, 1), res.output  # random weights: invocations may fail, the answer is valid JSON
    assert "engine: llama.cpp" in res.output
    data = json.loads(res.output[res.output.index("{") :])
    assert data["meta_response"] is not None
    torch_run = runner.invoke(cli, [*args, "--engine", "torch", "-o", str(tmp_path / "b")])
    assert json.loads(torch_run.output[torch_run.output.index("{") :])["raw"] == data["raw"]
    res = runner.invoke(cli, [*args, "--engine", "llama.cpp", "--precision", "bfloat16"])
    assert res.exit_code == 2 and "--precision applies to the torch engine" in res.output
    res = runner.invoke(cli, [*args, "--engine", "llama.cpp"])
    assert res.exit_code == 2 and "needs the base LLM as a GGUF file" in res.output
    plugins.load_plugins().hook.register_commands(cli=cli)  # modaverse data / train / eval
    try:
        data = tmp_path / "d.jsonl"
        res = runner.invoke(cli, ["data", "generate", "-o", str(data), "--size", "20"])
        assert res.exit_code == 0, res.output
        res = runner.invoke(
            cli,
            [
                *("eval", "--model", str(model_dir), "--data", str(data), "--limit", "4"),
                *("--max-new-tokens", "40", "--engine", "llama.cpp", "--gguf", str(gguf)),
            ],
        )
        assert res.exit_code == 0, res.output
        assert "engine: llama.cpp" in res.output and "task accuracy" in res.output
        eval_args = ["eval", "--model", str(model_dir), "--data", str(data), "--limit", "1", "--gguf", str(gguf)]
        res = runner.invoke(cli, [*eval_args, "--max-new-tokens", "8", "--engine", "llama.cpp", "--device", "cpu"])
        assert res.exit_code == 0 and "engine: llama.cpp on" in res.output and "(on the CPU)" in res.output
        res = runner.invoke(cli, [*eval_args, "--engine", "llama.cpp", "--dtype", "bfloat16"])
        assert res.exit_code == 2 and "--dtype bfloat16 applies to the torch engine" in res.output, res.output
    finally:
        for name in ("data", "train", "eval"):
            cli.commands.pop(name, None)


def test_langchain_chat_model_runs_on_llama_cpp(engines: tuple[ModaVerseModel, LlamaCppModel], echo_zoo: Zoo) -> None:
    from modaverse_agent.chat_model import ChatModaVerse

    _, lc = engines
    chat = ChatModaVerse(backend=lc, zoo=echo_zoo, max_tokens=40)
    message = chat.invoke("draw me a picture of a cat")
    assert message.usage_metadata and message.usage_metadata["output_tokens"] > 0
    streamed = "".join(str(chunk.content) for chunk in chat.stream("draw me a picture of a cat"))
    assert streamed == message.content


def test_a_minimum_length_never_outlasts_the_grammar(
    engines: tuple[ModaVerseModel, LlamaCppModel], echo_zoo: Zoo
) -> None:
    """min_new_tokens past the end of a finished meta-response: the stop wins, the answer stays valid, on both
    engines (the torch engine used to hand the length to transformers, whose processor refused the only token
    the finished grammar allowed: "constrained decoding lost track")."""
    schema = echo_zoo.schema()
    for engine in engines:
        prompt = _prompts(engine, ["hello"], [[]])[0]
        (answer,) = engine.generate([prompt], schemas=schema, max_new_tokens=400, min_new_tokens=400)
        parse_meta_response(answer, schema)
