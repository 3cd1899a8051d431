"""ModaVerseModel's chat-facing additions on a tiny model: request params, folded history, complete, stream,
and media content blocks through ChatModaVerse reaching the encoder."""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("xgrammar")

from langchain_core.messages import AIMessage, HumanMessage, SystemMessage  # noqa: E402

from modaverse_agent.agent import ChatTurn, GenerationParams, LLMRequest  # noqa: E402
from modaverse_agent.chat_model import ChatModaVerse  # noqa: E402
from modaverse_agent.errors import ModelError  # noqa: E402
from modaverse_agent.media import MediaItem  # noqa: E402
from modaverse_agent.meta_response import build_schema  # noqa: E402
from modaverse_agent.model.modeling import ModaVerseModel  # noqa: E402
from modaverse_agent.model.responder import cut_at_stop, fold_conversation  # noqa: E402
from modaverse_agent.model.tiny import HashEncoder, save_tiny_base, tiny_config  # noqa: E402
from modaverse_agent.tools import zoo_tools  # noqa: E402
from modaverse_agent.zoo import Zoo  # noqa: E402

torch.set_num_threads(1)
MEDIA = Path(__file__).resolve().parent / "fixtures" / "imagebind" / "media"


class RecordingEncoder(HashEncoder):
    """A HashEncoder that keeps every item it was asked to encode."""

    def __init__(self, dim: int = 16) -> None:
        super().__init__(dim)
        self.items: list[tuple[str, MediaItem]] = []

    def encode(self, modality: str, items: Sequence[MediaItem]) -> torch.Tensor:
        self.items += [(modality, i) for i in items]
        return super().encode(modality, items)


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> ModaVerseModel:
    base = save_tiny_base(tmp_path_factory.mktemp("chat") / "base")
    torch.manual_seed(0)
    return ModaVerseModel.from_config(tiny_config(base), encoder=RecordingEncoder(), init_lora_weights=False).eval()


@pytest.fixture
def free(model: ModaVerseModel) -> Iterator[ModaVerseModel]:
    """The model decoding unconstrained (random weights write free text), restored afterwards."""
    model.options.constrained = False
    yield model
    model.options.constrained = True


def ask(text: str = "draw a cat", **params: object) -> LLMRequest:
    return LLMRequest(text, [], build_schema([]), [], params=GenerationParams(**params))  # type: ignore[arg-type]


def test_fold_conversation_and_cut_at_stop() -> None:
    req = ask("and now?")
    assert fold_conversation(req) == "and now?"
    req.system, req.history = "Be brief.", [ChatTurn("user", "hi"), ChatTurn("assistant", '{"text":"yo"}')]
    assert fold_conversation(req) == (
        'Be brief.\n\nConversation so far:\nuser: hi\nassistant: {"text":"yo"}\n\nand now?'
    )
    assert cut_at_stop("abc###def", ["##", "x"]) == ("abc", True) and cut_at_stop("abc", ["z"]) == ("abc", False)


def test_system_and_history_reach_the_prompt(model: ModaVerseModel) -> None:
    req = ask("capital of France?")
    req.system, req.history = "Answer in French.", [ChatTurn("user", "hello there")]
    prompt, _, _ = model.prepare(req)
    text = model.tokenizer.decode(prompt)
    assert "Answer in French.\n\nConversation so far:\nuser: hello there\n\ncapital of France?" in text
    assert len(prompt) > len(model.prepare(ask("capital of France?"))[0])


def test_complete_counts_tokens_and_reports_length(free: ModaVerseModel) -> None:
    done = free.complete(ask(max_new_tokens=5))
    prompt, _, _ = free.prepare(ask())
    assert done.input_tokens == len(prompt) and done.finish_reason == "length" and 1 <= done.output_tokens <= 5
    assert done.text == free.respond(ask(max_new_tokens=5))
    assert len(free.tokenizer(done.text, add_special_tokens=False).input_ids) <= 5
    longer = free.complete(ask(max_new_tokens=9))
    assert longer.output_tokens > done.output_tokens or longer.finish_reason == "stop"


def test_temperature_seed_and_top_p_are_honoured(free: ModaVerseModel) -> None:
    greedy = free.respond(ask(max_new_tokens=12))
    assert free.respond(ask(max_new_tokens=12, temperature=0)) == greedy
    sampled = [free.respond(ask(max_new_tokens=12, temperature=1.5, seed=s)) for s in (1, 1, 2, 3)]
    assert sampled[0] == sampled[1] and len({*sampled[1:], greedy}) > 1
    assert free.respond(ask(max_new_tokens=12, temperature=1.5, top_p=1e-6, seed=4)) == greedy  # top-1 = greedy


def test_stop_strings_cut_the_text(free: ModaVerseModel) -> None:
    full = free.respond(ask(max_new_tokens=20))
    stop = full[len(full) // 2 : len(full) // 2 + 2]
    assert stop.strip(), full
    done = free.complete(ask(max_new_tokens=20, stop=(stop,)))
    assert done.text == full[: full.index(stop)] and done.finish_reason == "stop"


def test_batch_mixes_params_and_matches_single(free: ModaVerseModel) -> None:
    requests = [ask(max_new_tokens=6), ask("make a song", max_new_tokens=10, temperature=1.2, seed=3)]
    assert free.respond_batch(requests) == [free.respond(r) for r in requests]


def test_stream_yields_the_completion_text(model: ModaVerseModel, free: ModaVerseModel) -> None:
    req = ask(max_new_tokens=16)
    stream = free.stream(req)
    pieces = list(stream)
    assert len(pieces) > 1 and "".join(pieces) == free.respond(req)
    assert stream.completion is not None and stream.completion.text == "".join(pieces)
    assert stream.completion.output_tokens == free.complete(req).output_tokens
    stop = "".join(pieces)[5:7]
    cut = ask(max_new_tokens=16, stop=(stop,))
    assert "".join(free.stream(cut)) == free.respond(cut) == "".join(pieces)[: "".join(pieces).index(stop)]
    with pytest.raises(ModelError, match="instruction is empty"):
        list(free.stream(ask("  ")))


def test_chat_model_on_the_tiny_model_reports_usage_and_streams(model: ModaVerseModel, echo_zoo: Zoo) -> None:
    chat = ChatModaVerse(backend=model, zoo=echo_zoo, max_tokens=40)
    msg = chat.invoke([SystemMessage("Be brief."), HumanMessage("hi"), AIMessage("hello"), HumanMessage("a cat")])
    assert msg.usage_metadata is not None and msg.usage_metadata["input_tokens"] > 50
    assert 0 < msg.usage_metadata["output_tokens"] <= 40 and msg.invalid_tool_calls == []
    assert msg.response_metadata["finish_reason"] in ("stop", "length")
    meta = msg.response_metadata["meta_response"]
    assert meta["text"] == msg.content and [c["name"] for c in msg.tool_calls] == [
        i["task"] for i in meta["invocations"]
    ]
    chunks = list(chat.stream("a cat"))
    total = chunks[0]
    for c in chunks[1:]:
        total += c
    assert total.content == chat.invoke("a cat").content and total.usage_metadata is not None


def test_image_audio_video_blocks_reach_the_encoder(model: ModaVerseModel, echo_zoo: Zoo) -> None:
    encoder = model.encoder
    assert isinstance(encoder, RecordingEncoder)
    encoder.items.clear()
    image, audio, video = MEDIA / "coffee.jpg", MEDIA / "speech_16k.wav", MEDIA / "testsrc_320x240_10fps_3s.mp4"
    chat = ChatModaVerse(backend=model, zoo=echo_zoo, max_tokens=30)
    msg = chat.invoke(
        [
            HumanMessage(
                content=[
                    {"type": "text", "text": "turn these into a painting"},
                    {"type": "image", "url": str(image)},
                    {"type": "audio", "url": f"file://{audio}", "mime_type": "audio/wav"},
                    {"type": "video", "url": str(video), "mime_type": "video/mp4"},
                ]
            )
        ]
    )
    got = [(modality, item.data) for modality, item in encoder.items]
    assert sorted(got) == sorted(
        [("image", image.read_bytes()), ("audio", audio.read_bytes()), ("video", video.read_bytes())]
    )
    assert [m["id"] for m in msg.response_metadata["media"]] == ["image_1", "audio_1", "video_1"]


def test_a_forced_call_on_the_tiny_model_is_decoded_with_no_text(model: ModaVerseModel, echo_zoo: Zoo) -> None:
    """The grammar itself asks for the calls alone when a call is forced (random weights would write text)."""
    chat = ChatModaVerse(backend=model, zoo=echo_zoo, max_tokens=60)
    msg = chat.bind_tools(zoo_tools(echo_zoo), tool_choice="text-to-speech").invoke("a cat")
    assert msg.response_metadata["meta_response"]["text"] == "" and msg.content == ""
    assert [c["name"] for c in msg.tool_calls] == ["text-to-speech"] and msg.invalid_tool_calls == []
    assert json.loads(msg.response_metadata["raw"])["text"] == ""
