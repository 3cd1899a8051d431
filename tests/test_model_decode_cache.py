"""The torch engine's decoding cache: each step writes one row in place (no copy of the cache), and the
answers are the ones transformers' own concatenating cache gives, sliding-window layers included."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("xgrammar")

from modaverse_agent.model import modeling  # noqa: E402
from modaverse_agent.model.modeling import GrowingLayer, ModaVerseModel  # noqa: E402
from modaverse_agent.model.tiny import save_tiny_base, tiny_config  # noqa: E402

torch.set_num_threads(1)


@pytest.fixture(scope="module", params=["llama", "gemma3"])
def model(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> ModaVerseModel:
    base = save_tiny_base(tmp_path_factory.mktemp(request.param), arch=request.param)
    torch.manual_seed(0)
    return ModaVerseModel.from_config(tiny_config(base), init_lora_weights=False).eval()


def _prompts(model: ModaVerseModel) -> list[list[int]]:
    """Rows of different lengths (left padding), the longest past the tiny Gemma's 16-token sliding window."""
    texts = ["draw me a picture of a cat sitting in the sun on a red table", "a cat", "make a short song about the sea"]
    return [model.tokenizer(t).input_ids for t in texts]


def test_the_growing_cache_decodes_what_the_concatenating_cache_decodes(
    model: ModaVerseModel, monkeypatch: pytest.MonkeyPatch
) -> None:
    prompts = _prompts(model)
    assert max(len(p) for p in prompts) > 16
    writes: list[int] = []
    update = GrowingLayer.update

    def counted(self: GrowingLayer, *args: Any, **kwargs: Any) -> Any:
        writes.append(1)
        return update(self, *args, **kwargs)

    monkeypatch.setattr(GrowingLayer, "update", counted)
    ours = model.generate(prompts, max_new_tokens=30, min_new_tokens=30)
    assert writes, "generate did not use the growing cache"
    monkeypatch.setattr(modeling.ModaVerseModel, "_cache_kwargs", lambda self, capacity: {})
    writes.clear()
    plain = model.generate(prompts, max_new_tokens=30, min_new_tokens=30)
    assert not writes
    assert ours == plain
    for one, prompt in zip(ours, prompts, strict=True):  # and batching does not change a row's answer
        assert model.generate([prompt], max_new_tokens=30, min_new_tokens=30) == [one]


def test_a_decoding_step_writes_in_place_and_a_full_buffer_doubles() -> None:
    layer = GrowingLayer(capacity=6)
    prefill = torch.randn(2, 1, 4, 8)
    keys, values = layer.update(prefill, -prefill)
    buffer = keys.data_ptr()
    steps = [torch.randn(2, 1, 1, 8) for _ in range(5)]
    for i, step in enumerate(steps):
        keys, values = layer.update(step, -step)
        if 4 + i + 1 <= 6:
            assert keys.data_ptr() == buffer  # written into the buffer: nothing was copied
    assert keys.data_ptr() != buffer and layer.get_seq_length() == 9  # past 6 tokens the buffer grew
    expected = torch.cat([prefill, *steps], dim=-2)
    assert torch.equal(keys, expected) and torch.equal(values, -expected)
    layer.batch_select_indices(torch.tensor([1]))  # a row leaves the batch: the next step starts a new buffer
    extra = torch.randn(1, 1, 1, 8)
    keys, _ = layer.update(extra, -extra)
    assert torch.equal(keys, torch.cat([expected[1:], extra], dim=-2))


def test_a_cropped_cache_overwrites_the_dropped_rows() -> None:
    layer = GrowingLayer(capacity=8)
    first = torch.randn(1, 1, 5, 4)
    layer.update(first, first)
    layer.crop(-2)
    again = torch.randn(1, 1, 2, 4)
    keys, _ = layer.update(again, again)
    assert torch.equal(keys, torch.cat([first[..., :3, :], again], dim=-2))


def test_the_cache_is_sized_for_the_prompt_and_the_answer(model: ModaVerseModel, tmp_path: Path) -> None:
    kwargs = model._cache_kwargs(50)
    (cache,) = kwargs.values()
    cache.update(torch.randn(1, 1, 3, 8), torch.randn(1, 1, 3, 8), 0)
    layer = cache.layers[0]
    assert isinstance(layer, GrowingLayer) and layer.capacity == 50


def _requests(with_media: bool = True) -> list[Any]:
    from modaverse_agent.llm_io import LLMRequest
    from modaverse_agent.media import MediaItem
    from modaverse_agent.training.tasks import STANDARD_TASKS, standard_schema

    image = ("image_1", MediaItem("image", "application/octet-stream", b"", "image_1"))
    asks = [("draw me a picture of a cat sitting in the sun", []), ("a cat", []), ("what is in this?", [image])]
    return [
        LLMRequest(text, media, standard_schema([i for i, _ in media]), list(STANDARD_TASKS))
        for text, media in asks
        if with_media or not media
    ]


@pytest.fixture(scope="module")
def blind(tmp_path_factory: pytest.TempPathFactory) -> ModaVerseModel:
    base = save_tiny_base(tmp_path_factory.mktemp("blind"), arch="gemma3")
    torch.manual_seed(0)
    model = ModaVerseModel.from_config(tiny_config(base, blind_media=True), init_lora_weights=False).eval()
    model.options.max_new_tokens = 40
    return model


def _shared(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Records what :meth:`ModaVerseModel._shared_prefix` found, call by call."""
    found: list[int] = []
    real = ModaVerseModel._shared_prefix

    def spy(self: ModaVerseModel, prompts: Any) -> int:
        found.append(real(self, prompts))
        return found[-1]

    monkeypatch.setattr(ModaVerseModel, "_shared_prefix", spy)
    return found


def test_the_system_prompt_runs_once_per_batch_and_the_answers_stay_the_same(
    blind: ModaVerseModel, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Rows of different lengths (left padding) on a Gemma whose 16-token sliding window is far shorter than
    the prompts: the shared start runs once, and every answer is the one the row gets alone."""
    assert blind.llm.config.sliding_window == 16
    requests = _requests()
    one_by_one = [blind.respond(r) for r in requests]
    found = _shared(monkeypatch)
    prefills: list[tuple[int, ...]] = []
    causal = type(blind.llm.get_base_model())
    forward = causal.forward

    @functools.wraps(forward)  # generate reads the signature
    def recorded(self: Any, *args: Any, **kwargs: Any) -> Any:
        if kwargs.get("inputs_embeds") is not None:
            prefills.append(tuple(kwargs["inputs_embeds"].shape[:2]))
        return forward(self, *args, **kwargs)

    monkeypatch.setattr(causal, "forward", recorded)
    together = blind.respond_batch(requests)
    assert found and found[0] > 300  # the system prompt and the task list, up to where the rows differ
    width = max(len(blind.prepare(r)[0]) for r in requests)
    assert prefills[:2] == [(1, found[0]), (3, width - found[0])]  # the shared start once, then only the rest
    assert together == one_by_one


def test_media_before_the_rows_differ_end_the_shared_part(blind: ModaVerseModel) -> None:
    placeholder = blind.placeholder_id
    rows = [[5] * 20 + [placeholder] + [7] * 5, [5] * 20 + [placeholder] + [8] * 5]
    assert blind._shared_prefix(rows) == 20
    assert blind._shared_prefix([[5] * 40, [5] * 40]) == 39  # each row keeps a token of its own
    assert blind._shared_prefix([[5] * 10 + [1], [5] * 10 + [2]]) == 0  # too short to be worth it
    assert blind._shared_prefix([[5] * 40]) == 0


def test_the_shared_start_fills_each_row_as_left_padded_prefill_would(blind: ModaVerseModel) -> None:
    """The cache built from one run of the shared start holds, in every row, the keys and values that a
    plain prefill of the left-padded batch computes at that row's real tokens."""
    from transformers import DynamicCache

    prompts = [blind.prepare(r)[0] for r in _requests(with_media=False)]
    prefix = blind._shared_prefix(prompts)
    input_ids, mask = blind._batch(prompts)
    embeds, _ = blind.embed_inputs(input_ids)
    shifts = [input_ids.shape[1] - len(p) for p in prompts]
    assert prefix > 300 and len(set(shifts)) == len(shifts)  # rows of three lengths
    with torch.no_grad():
        kwargs = blind._cache_kwargs(input_ids.shape[1] + 8)
        blind._prefill_shared(embeds, shifts, prefix, kwargs)
        ours = next(iter(kwargs.values()))
        plain = DynamicCache()
        name = next(iter(kwargs))
        positions = (mask.cumsum(-1) - 1).masked_fill(mask == 0, 1)[:, :prefix]  # as generate counts them
        blind.llm(
            inputs_embeds=embeds[:, :prefix],
            attention_mask=mask[:, :prefix],
            position_ids=positions,
            use_cache=True,
            **{name: plain},
        )
    real = mask[:, :prefix].bool()
    for a, b in zip(ours.layers, plain.layers, strict=True):
        assert a.keys.shape == b.keys.shape
        for row in range(len(prompts)):
            torch.testing.assert_close(a.keys[row][:, real[row]], b.keys[row][:, real[row]], atol=1e-5, rtol=1e-4)
            torch.testing.assert_close(a.values[row][:, real[row]], b.values[row][:, real[row]], atol=1e-5, rtol=1e-4)
            assert not a.keys[row][:, ~real[row]].any()  # left padding: zeros, masked out
