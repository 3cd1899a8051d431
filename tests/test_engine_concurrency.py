"""Both engines are safe to call from several threads at once: every concurrent answer equals its sequential one.

llama.cpp's context is not thread-safe (concurrent decodes on one instance segfaulted, aborted or hit a
GGML_ASSERT); the engines take turns under one lock. Tested through every concurrent surface a user
meets: threads, ``ChatModaVerse.batch``/``abatch``, ``asyncio.gather`` of ``ainvoke``, ``AgentRunnable.batch``
and streams interleaved with plain calls.
"""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("xgrammar")

from transformers import AutoModelForCausalLM, AutoTokenizer  # noqa: E402

from modaverse_agent.agent import LLMRequest, ModaVerseAgent  # noqa: E402
from modaverse_agent.chat_model import ChatModaVerse  # noqa: E402
from modaverse_agent.model.modeling import ModaVerseModel  # noqa: E402
from modaverse_agent.model.tiny import save_tiny_base, tiny_config  # noqa: E402
from modaverse_agent.zoo import Zoo  # noqa: E402

torch.set_num_threads(1)
PROMPTS = ["draw me a picture of a cat", "make a short song", "what is the capital of france", "say hello", "a video"]
N_THREADS = 8


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("conc")
    base = save_tiny_base(root / "base", hidden=64)
    torch.manual_seed(0)
    model = ModaVerseModel.from_config(tiny_config(base, blind_media=True, lora_alpha=16), init_lora_weights=False)
    model.save_pretrained(root / "model")
    write = pytest.importorskip("modaverse_agent.model.gguf_export").write_llama_gguf
    write(AutoModelForCausalLM.from_pretrained(str(base)), AutoTokenizer.from_pretrained(str(base)), root / "base.gguf")
    return root / "model"


def _engine(kind: str, model_dir: Path, tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    if kind == "torch":
        return ModaVerseModel.from_pretrained(model_dir)
    pytest.importorskip("llama_cpp")
    from modaverse_agent.model.llamacpp import LlamaCppModel

    cache = tmp_path_factory.mktemp("lcpp-cache")
    return LlamaCppModel.from_pretrained(model_dir, gguf=model_dir.parent / "base.gguf", cache=cache)


@pytest.fixture(scope="module", params=["torch", "llama.cpp"])
def engine(request: pytest.FixtureRequest, model_dir: Path, tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    eng = _engine(request.param, model_dir, tmp_path_factory)
    eng.options.max_new_tokens = 32
    return eng


def _request(zoo: Zoo, text: str) -> LLMRequest:
    return LLMRequest(text, [], zoo.schema(), zoo.task_specs())


def test_threads_get_the_answers_they_would_get_alone(engine, echo_zoo: Zoo) -> None:  # type: ignore[no-untyped-def]
    requests = [_request(echo_zoo, PROMPTS[i % len(PROMPTS)]) for i in range(N_THREADS * 2)]
    alone = {r.instruction: engine.respond(r) for r in requests[: len(PROMPTS)]}
    barrier = threading.Barrier(N_THREADS)

    def call(r: LLMRequest) -> str:
        barrier.wait() if requests.index(r) < N_THREADS else None
        return engine.respond(r)

    with ThreadPoolExecutor(N_THREADS) as pool:
        got = list(pool.map(call, requests))
    assert got == [alone[r.instruction] for r in requests]


def test_streams_and_calls_interleave_without_mixing(engine, echo_zoo: Zoo) -> None:  # type: ignore[no-untyped-def]
    requests = [_request(echo_zoo, p) for p in PROMPTS]
    alone = [engine.respond(r) for r in requests]

    def streamed(r: LLMRequest) -> tuple[str, int]:
        stream = engine.stream(r)
        text = "".join(stream)
        assert stream.completion is not None  # each stream carries its own accounting
        return text, stream.completion.output_tokens

    with ThreadPoolExecutor(len(requests) * 2) as pool:
        streams = [pool.submit(streamed, r) for r in requests]
        plain = [pool.submit(engine.respond, r) for r in requests]
        assert [f.result()[0] for f in streams] == alone == [f.result() for f in plain]
    assert [f.result()[1] for f in streams] == [engine.complete(r).output_tokens for r in requests]


def test_langchain_batch_and_gather_on_one_model(engine, echo_zoo: Zoo) -> None:  # type: ignore[no-untyped-def]
    chat = ChatModaVerse(backend=engine, zoo=echo_zoo, max_tokens=32)
    alone = [chat.invoke(p) for p in PROMPTS]
    batched = chat.batch(PROMPTS, config={"max_concurrency": len(PROMPTS)})
    assert [m.content for m in batched] == [m.content for m in alone]
    assert [m.tool_calls for m in batched] == [m.tool_calls for m in alone]

    async def gather() -> list:  # type: ignore[type-arg]
        return await asyncio.gather(*(chat.ainvoke(p) for p in PROMPTS), chat.abatch(PROMPTS))

    *singles, abatch = asyncio.run(gather())
    assert [m.content for m in singles] == [m.content for m in abatch] == [m.content for m in alone]


def test_agent_runnable_batch_runs_every_request(engine, echo_zoo: Zoo, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    agent = ModaVerseAgent(engine, echo_zoo, output_dir=tmp_path / "out", timeout=30, seed=0)
    alone = [agent.run(p).raw for p in PROMPTS]
    results = agent.as_runnable().batch(PROMPTS, config={"max_concurrency": len(PROMPTS)})
    assert [r.raw for r in results] == alone


def test_closing_a_stream_ends_its_decode_and_frees_the_engine(engine, echo_zoo: Zoo, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    from modaverse_agent.model import streaming

    made: list = []
    real = streaming.cancellable_streamer

    def counting(tokenizer):  # type: ignore[no-untyped-def]
        streamer = real(tokenizer)
        streamer.tokens = 0
        put = streamer.put

        def counted(value):  # type: ignore[no-untyped-def]
            put(value)
            streamer.tokens += 1

        streamer.put = counted
        made.append(streamer)
        return streamer

    monkeypatch.setattr(streaming, "cancellable_streamer", counting)
    request = _request(echo_zoo, "draw me a picture of a cat")
    request.params.max_new_tokens = 120
    whole = "".join(engine.stream(request))
    stream = engine.stream(request)
    assert whole.startswith(next(iter(stream)))
    stream.close()  # the decode ends at its next token, the thread is joined and the lock is free
    assert made[1].tokens < made[0].tokens / 2 and stream.completion is None
    assert engine._lock.acquire(blocking=False)
    engine._lock.release()
    assert engine.respond(_request(echo_zoo, "say hello"))  # the engine still answers
