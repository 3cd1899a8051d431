"""ModaVerseModel on tiny random LLMs: forward/loss, constrained decoding, batching, merging."""

from __future__ import annotations

import copy
import logging
from pathlib import Path
from typing import Any

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("xgrammar")

from modaverse_agent.agent import LLMRequest  # noqa: E402
from modaverse_agent.errors import ModelError  # noqa: E402
from modaverse_agent.media import load_media  # noqa: E402
from modaverse_agent.meta_response import TaskSpec, build_schema, parse_meta_response  # noqa: E402
from modaverse_agent.model.constrained import SAFE_INT, decoding_schema  # noqa: E402
from modaverse_agent.model.llm import TrainedRowsEmbedding  # noqa: E402
from modaverse_agent.model.modeling import ModaVerseModel  # noqa: E402
from modaverse_agent.model.tiny import HashEncoder, save_tiny_base, tiny_config  # noqa: E402

torch.set_num_threads(1)

IMAGE_ARGS = {
    "type": "object",
    "properties": {"width": {"type": "integer", "minimum": 8, "maximum": 512}, "seed": {"type": "integer"}},
    "additionalProperties": False,
}
AUDIO_ARGS = {
    "type": "object",
    "properties": {
        "duration": {"type": "number", "exclusiveMinimum": 0, "maximum": 30},
        "style": {"enum": ["calm", "loud"]},
        "negative": {"type": "string"},
        "loop": {"type": "boolean"},
    },
    "additionalProperties": False,
}
SPECS = [
    TaskSpec("text-to-image", "Draws pictures.", "image", IMAGE_ARGS),
    TaskSpec("text-to-audio", "Makes sounds.", "audio", AUDIO_ARGS),
    TaskSpec("image-editing", "Edits a picture.", "image", input_modalities=("image",)),
]
SCHEMAS = {
    "args+media ids": build_schema(SPECS, media_ids=["image_1", "audio_1"]),
    "any media ref": build_schema(SPECS),
    "no media": build_schema(SPECS, media_ids=[]),  # the edit is left out
    "audio only (the edit left out)": build_schema(SPECS, media_ids=["audio_1"]),
    "no tasks": build_schema([]),
}


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_tiny_base(tmp_path_factory.mktemp("llama"))


@pytest.fixture(scope="module")
def model(base: Path) -> ModaVerseModel:
    torch.manual_seed(0)
    m = ModaVerseModel.from_config(tiny_config(base), encoder=HashEncoder(16), init_lora_weights=False)
    return m.eval()


@pytest.fixture(scope="module")
def image(tmp_path_factory: pytest.TempPathFactory) -> Any:
    from PIL import Image

    path = tmp_path_factory.mktemp("media") / "a.png"
    Image.new("RGB", (8, 8), (10, 200, 30)).save(path)
    return load_media(path)


def test_decoding_schema_only_narrows() -> None:
    narrowed = decoding_schema(SCHEMAS["args+media ids"])
    audio = narrowed["properties"]["invocations"]["items"]["anyOf"][1]["properties"]["args"]["properties"]
    image = narrowed["properties"]["invocations"]["items"]["anyOf"][2]["properties"]["args"]["properties"]
    assert image["seed"] == {"type": "integer", "minimum": -SAFE_INT, "maximum": SAFE_INT}
    assert image["width"] == IMAGE_ARGS["properties"]["width"]
    assert audio["negative"]["maxLength"] == 500 and audio["style"] == {"enum": ["calm", "loud"]}
    assert audio["duration"] == {"type": "number", "exclusiveMinimum": 0, "maximum": 30}
    assert SCHEMAS["args+media ids"]["properties"]["invocations"]["items"]["anyOf"][2]["properties"]["args"] == (
        IMAGE_ARGS
    )


def test_constrained_output_from_random_weights_always_parses(
    model: ModaVerseModel, image: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """Greedy and sampled, short and long budgets, one schema per row: every answer validates."""
    prompt, feats, mods = model.prepare(LLMRequest("draw a cat", [("image_1", image)], SCHEMAS["any media ref"], SPECS))
    raws = []
    with caplog.at_level(logging.WARNING):
        for budget in (56, 120):
            for sample, seed in ((False, None), (True, 1), (True, 2)):
                texts = model.generate(
                    [prompt] * len(SCHEMAS),
                    feats.repeat(len(SCHEMAS), 1),
                    mods * len(SCHEMAS),
                    schemas=list(SCHEMAS.values()),
                    max_new_tokens=budget,
                    do_sample=sample,
                    temperature=1.5,
                    seed=seed,
                )
                for raw, schema in zip(texts, SCHEMAS.values(), strict=True):
                    raws.append(raw)
                    parse_meta_response(raw, schema)  # raises on any invalid output
    assert "incomplete" not in caplog.text
    schemas = list(SCHEMAS.values()) * (len(raws) // len(SCHEMAS))
    assert any(parse_meta_response(r, s).invocations for r, s in zip(raws, schemas, strict=True))
    # xgrammar's bounded strings admit raw control characters; whether random weights emit one depends on
    # the sampled path, so the parser's side is proven directly in test_meta_response.py
    # (test_raw_control_characters_inside_strings_are_accepted); every raw output above parsed.


def test_closing_early_is_reported(model: ModaVerseModel, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING):
        raw = model.generate(
            [[1, 5, 6, 7]],
            schemas=SCHEMAS["args+media ids"],
            max_new_tokens=30,
            do_sample=True,
            temperature=3.0,
            seed=5,
        )[0]
    parse_meta_response(raw, SCHEMAS["args+media ids"])
    assert "closed early" in caplog.text


WEATHER = TaskSpec(
    "get_weather",
    "Weather.",
    "text",
    {
        "type": "object",
        "properties": {
            "city": {"type": "string", "maxLength": 40},
            "unit": {"enum": ["celsius", "fahrenheit"]},
            "days": {"type": "integer", "minimum": 1, "maximum": 10},
        },
        "required": ["city", "unit", "days"],
        "additionalProperties": False,
    },
    kind="function",
)


def test_forced_tool_call_completes_within_any_budget(model: ModaVerseModel, caplog: pytest.LogCaptureFixture) -> None:
    """A forced call (tool_choice) must still write a whole invocation when the budget runs out; with
    the default reserve this used to cut the JSON. A budget below the shortest answer is raised to it."""
    forced = [build_schema(SPECS, media_ids=[], min_invocations=1), build_schema([WEATHER], min_invocations=1)]
    shortest = max(model.grammars.shortest(s) for s in forced)
    assert shortest > model.config.closing_reserve  # the case the fixed reserve got wrong
    with caplog.at_level(logging.WARNING):
        for budget in (20, 70, 130):
            for seed in (1, 2):
                raws = model.generate(
                    [[1, 5, 6, 7]] * 2,
                    schemas=forced,
                    max_new_tokens=budget,
                    do_sample=True,
                    temperature=2.0,
                    seed=seed,
                )
                for raw, schema in zip(raws, forced, strict=True):
                    assert len(parse_meta_response(raw, schema).invocations) >= 1
    assert "below the shortest valid meta-response" in caplog.text and "incomplete" not in caplog.text


def test_batched_left_padded_generation_equals_one_by_one(model: ModaVerseModel, image: Any) -> None:
    requests = [
        LLMRequest("draw a cat", [("image_1", image)], SCHEMAS["args+media ids"], SPECS),
        LLMRequest("make a long and very detailed song about the sea and the waves", [], SCHEMAS["no media"], SPECS),
        LLMRequest("hi", [], SCHEMAS["no tasks"], []),
    ]
    for constrained in (True, False):
        model.options.constrained, model.options.max_new_tokens = constrained, 24
        try:
            together = model.respond_batch(requests)
            alone = [model.respond(r) for r in requests]
        finally:
            model.options.constrained, model.options.max_new_tokens = True, None
        assert together == alone


def test_forward_trains_projector_lora_and_media_rows_only(model: ModaVerseModel, image: Any) -> None:
    prompt, feats, mods = model.prepare(LLMRequest("draw", [("image_1", image)], SCHEMAS["no tasks"], []))
    ids = torch.tensor([prompt])
    labels = ids.clone()
    model.train()
    try:
        out = model(ids, torch.ones_like(ids), labels=labels, media_features=feats, media_modalities=mods)
        out.loss.backward()
    finally:
        model.eval()
    trained = {n for n, p in model.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0}
    assert any(n.startswith("projector.proj.image") for n in trained)
    assert any("lora_A" in n for n in trained) and any("lora_B" in n for n in trained)
    assert any(n.endswith("embed_tokens.rows") for n in trained)
    frozen = {n for n, p in model.named_parameters() if not p.requires_grad}
    assert any(n.endswith("embed_tokens.weight") for n in frozen) and any("q_proj.base_layer" in n for n in frozen)
    assert trained <= {n for n, p in model.named_parameters() if p.requires_grad}
    model.zero_grad(set_to_none=True)
    # the placeholder's label is masked: changing only its label leaves the loss unchanged
    with torch.no_grad():
        a = model(ids, labels=labels, media_features=feats, media_modalities=mods).loss
        other = labels.clone()
        other[ids == model.placeholder_id] = 3
        b = model(ids, labels=other, media_features=feats, media_modalities=mods).loss
    assert torch.equal(a, b)


def test_forward_count_mismatch_is_a_value_error(model: ModaVerseModel) -> None:
    ids = torch.tensor([[1, model.placeholder_id, 5]])
    with pytest.raises(ValueError, match=r"1 media placeholder token.* but 2"):
        model(ids, media_features=torch.randn(2, 16), media_modalities="image")
    with pytest.raises(ValueError, match=r"1 media placeholder token.* but 0"):
        model(ids)


def test_merge_and_unload_matches_unmerged(base: Path, image: Any) -> None:
    torch.manual_seed(1)
    m = ModaVerseModel.from_config(tiny_config(base), encoder=HashEncoder(16), init_lora_weights=False).eval()
    embed = m.llm.get_input_embeddings()
    assert isinstance(embed, TrainedRowsEmbedding)
    embed.set_rows(torch.randn_like(embed.rows))
    prompt, feats, mods = m.prepare(LLMRequest("draw", [("image_1", image)], SCHEMAS["no tasks"], []))
    ids = torch.tensor([prompt])
    with torch.no_grad():
        before = m(ids, media_features=feats, media_modalities=mods).logits
        text_before = m.generate([prompt], feats, mods, schemas=SCHEMAS["no media"], max_new_tokens=40)
        m.merge_and_unload()
        after = m(ids, media_features=feats, media_modalities=mods).logits
    assert m.merged and not isinstance(m.llm.get_input_embeddings(), TrainedRowsEmbedding)
    assert torch.allclose(before, after, atol=1e-5)
    assert m.generate([prompt], feats, mods, schemas=SCHEMAS["no media"], max_new_tokens=40) == text_before
    with pytest.raises(ModelError, match="merged"):
        m.save_pretrained(base.parent / "merged")


def test_media_without_encoder_is_a_clear_error(model: ModaVerseModel, image: Any) -> None:
    bare = copy.copy(model)
    object.__setattr__(bare, "_encoder", None)
    with pytest.raises(ModelError, match="no media encoder"):
        bare.respond(LLMRequest("what is this?", [("image_1", image)], SCHEMAS["args+media ids"], SPECS))
    parse_meta_response(bare.respond(LLMRequest("hello", [], SCHEMAS["no media"], SPECS)), SCHEMAS["no media"])


def test_tiny_gemma3_scaled_rows_and_constrained_output(tmp_path: Path) -> None:
    gemma = save_tiny_base(tmp_path / "gemma", arch="gemma3", chat_template=True)
    m = ModaVerseModel.from_config(tiny_config(gemma), encoder=HashEncoder(16)).eval()
    embed = m.llm.get_input_embeddings()
    assert isinstance(embed, TrainedRowsEmbedding)
    embed.set_rows(torch.ones_like(embed.rows))
    start = m.token_ids["<|media_start|>"]
    out = embed(torch.tensor([[start, 5]]))
    scale = float(embed.base.embed_scale)
    assert torch.allclose(out[0, 0], torch.full_like(out[0, 0], scale))
    assert torch.allclose(out[0, 1], embed.base(torch.tensor([5]))[0])
    raw = m.respond(LLMRequest("draw a cat", [], SCHEMAS["no media"], SPECS[:2]))
    parse_meta_response(raw, SCHEMAS["no media"])


def test_a_minimum_length_holds_the_stops_per_row_until_it_is_reached() -> None:
    """The processor holds the stops back for the first ``min_new_tokens`` tokens (both engines leave the length
    to it): in a call and in ``pick_greedy``, row by row, unless a row allows nothing else."""
    from modaverse_agent.model.constrained import MetaResponseLogitsProcessor

    stop = 3

    def processor(rows: int) -> MetaResponseLogitsProcessor:
        return MetaResponseLogitsProcessor([None] * rows, banned_ids=[], stop_ids=[stop], budget=10, min_new_tokens=2)

    last = torch.tensor([[0], [0]])
    only_stop = torch.full((8,), float("-inf"))
    only_stop[stop] = 0.0
    called = processor(2)
    for step in range(4):
        scores = torch.zeros(2, 8)
        scores[0, stop] = 5.0  # the stop is the best token of row 0
        scores[1] = only_stop  # and the only allowed one of row 1
        out = called(last, scores)
        assert int(out[0].argmax()) == (stop if step >= 2 else 0), step
        assert int(out[1].argmax()) == stop and torch.isfinite(out[1, stop])
    greedy = processor(1)
    picks = [greedy.pick_greedy(last[:1], torch.tensor([[0.0, 1.0, 0.0, 5.0, 0, 0, 0, 0]])) for _ in range(3)]
    assert picks == [1, 1, stop]


def test_advancing_the_grammar_ahead_masks_exactly_as_calling_it(model: ModaVerseModel) -> None:
    """``advance`` (what the llama.cpp engine runs on a worker while llama.cpp decodes the token) accepts the
    token and fills the next mask early; every step's masked scores equal the plain call's."""
    from modaverse_agent.model.constrained import MetaResponseLogitsProcessor

    grammar = model.grammars.compile(decoding_schema(SCHEMAS["args+media ids"]))
    vocab = model.grammars.vocab_size

    def processor() -> MetaResponseLogitsProcessor:
        return MetaResponseLogitsProcessor(
            [grammar], banned_ids=model.banned_ids, stop_ids=model.stop_ids, budget=10**4, cache=model.grammars
        )

    plain, ahead = processor(), processor()
    with pytest.raises(ValueError, match="follows a call"):
        ahead.advance([0])
    g = torch.Generator().manual_seed(3)
    last, steps = torch.tensor([[0]]), 0
    for steps in range(1, 61):  # noqa: B007
        raw = torch.randn(1, vocab, generator=g)
        a, b = plain(last, raw.clone()), ahead(last, raw.clone())
        assert torch.equal(a, b) and torch.isinf(a).any()  # the mask is the grammar's, and it masks
        token = int(a[0].argmax())
        if token in model.stop_ids:
            break
        last = torch.tensor([[token]])
        ahead.advance([token])
    assert steps >= 10
    fresh = processor()
    masked = fresh(torch.tensor([[0]]), torch.zeros(1, vocab))
    refused = int(torch.nonzero(torch.isinf(masked[0]))[0])
    with pytest.raises(ModelError, match="lost track"):  # a token the grammar refuses: raised early, as a call does
        fresh.advance([refused])


@pytest.mark.parametrize("budget", [10**4, 40])
def test_greedy_pick_equals_argmax_of_the_masked_scores(model: ModaVerseModel, budget: int) -> None:
    """``pick_greedy`` (the llama.cpp engine's greedy step) gives the masked call's argmax at every step; when the
    raw best token is allowed it leaves the scores unmasked (the fast path), otherwise it masks; the closing window
    of a small budget, stops held for a minimum length and ``advance`` keep it exact."""
    from modaverse_agent.model.constrained import MetaResponseLogitsProcessor

    grammar = model.grammars.compile(decoding_schema(SCHEMAS["args+media ids"]))
    vocab = model.grammars.vocab_size

    def processor() -> MetaResponseLogitsProcessor:
        return MetaResponseLogitsProcessor(
            [grammar],
            banned_ids=model.banned_ids,
            stop_ids=model.stop_ids,
            budget=budget,
            reserve=24,
            cache=model.grammars,
            min_new_tokens=8,  # stops refused while anything else is allowed
        )

    plain, fast = processor(), processor()
    g = torch.Generator().manual_seed(5)
    last, fast_steps, masked_steps = torch.tensor([[0]]), 0, 0
    for step in range(budget):
        raw = torch.randn(1, vocab, generator=g)
        masked = plain(last, raw.clone())
        if step % 2 == 0:  # lift an allowed token to the top: the fast path's case
            allowed = torch.nonzero(torch.isfinite(masked[0])).flatten()
            pick = int(allowed[torch.randint(len(allowed), (1,), generator=g)])
            raw[0, pick] += 100.0
            masked = masked.clone()
            masked[0, pick] += 100.0
        scores = raw.clone()
        token = fast.pick_greedy(last, scores)
        assert token == int(masked[0].argmax())
        if step < 8 and token in model.stop_ids:  # a held stop wins only when nothing else is allowed
            others = masked[0].clone()
            others[[*model.stop_ids]] = float("-inf")
            assert not torch.isfinite(others).any()
        if torch.isinf(scores).any():
            masked_steps += 1
        else:
            fast_steps += 1
        if token in model.stop_ids:
            break
        last = torch.tensor([[token]])
        if step % 3 == 0:
            fast.advance([token])
    assert fast_steps >= 5 and masked_steps >= 5
    with pytest.raises(ValueError, match="one row"):
        processor().pick_greedy(torch.tensor([[0], [0]]), torch.zeros(2, vocab))


def test_a_loop_watch_flags_exactly_the_token_that_completes_the_looping_span() -> None:
    from modaverse_agent.model.constrained import LoopWatch

    watch = LoopWatch(tokens=12, max_period=4)
    flags = [watch.push(t) for t in [9, 8, *([1, 2, 3] * 6)]]
    assert flags.index(True) == 2 + 12 - 1  # the 12th token of the cycle: the last 12 repeat (1, 2, 3)
    assert all(flags[flags.index(True) :])

    def flagged(seq: list[int], **kw: int) -> list[bool]:
        watch = LoopWatch(**kw)
        return [watch.push(t) for t in seq]

    assert not any(flagged([1, 2, 3, 4, 5] * 5, tokens=12, max_period=4))  # period 5 > 4
    assert not any(flagged([1, 2] * 5 + [7] + [1, 2] * 5, tokens=12, max_period=4))  # broken, never 12 long
    assert flagged([1, 2] * 5 + [7] + [1, 2] * 6, tokens=12, max_period=4)[-1]  # 12 long after the break
    assert flagged([0, 0, 0], tokens=3, max_period=1) == [False, False, True]
    with pytest.raises(ValueError):
        LoopWatch(tokens=4, max_period=4)


@pytest.mark.parametrize("path", ["call", "pick_greedy"])
def test_a_looping_answer_is_closed_at_the_loop_not_the_budget(model: ModaVerseModel, path: str) -> None:
    """A model stuck on "fold the tip, fold the middle, " (the default model on a paper-folding question) is
    closed as soon as LOOP_TOKENS tokens repeat one cycle, long before its budget; the answer stays valid."""
    from modaverse_agent.model.constrained import LOOP_TOKENS, MetaResponseLogitsProcessor

    schema = SCHEMAS["args+media ids"]
    grammar = model.grammars.compile(decoding_schema(schema))
    vocab, budget = model.grammars.vocab_size, 2000
    script = model.tokenizer(
        '{"text": "Fold it: ' + "fold the tip, fold the middle, " * 200, add_special_tokens=False
    ).input_ids
    proc = MetaResponseLogitsProcessor(
        [grammar], banned_ids=model.banned_ids, stop_ids=model.stop_ids, budget=budget, cache=model.grammars
    )
    out: list[int] = []
    last = torch.tensor([[0]])
    for step in range(budget):
        scores = torch.zeros(1, vocab)
        if step < len(script):
            scores[0, script[step]] = 50.0  # the "model" wants the script
        token = proc.pick_greedy(last, scores) if path == "pick_greedy" else int(proc(last, scores)[0].argmax())
        if token in model.stop_ids:
            break
        out.append(token)
        last = torch.tensor([[token]])
    assert proc.looped_rows == {0} and proc.closed_rows == {0}
    followed = next(i for i, t in enumerate(out) if t != script[i])  # where the closing route took over
    prefix = len(model.tokenizer('{"text": "Fold it: ', add_special_tokens=False).input_ids)
    assert abs(followed - (prefix + LOOP_TOKENS)) <= 12  # at the loop (give or take a cycle), not the budget
    text = model.tokenizer.decode(out)
    assert parse_meta_response(text, schema).text.startswith("Fold it: fold the tip, fold the middle,")


def test_a_looping_row_in_a_batch_closes_alone(model: ModaVerseModel) -> None:
    from modaverse_agent.model.constrained import MetaResponseLogitsProcessor

    grammar = model.grammars.compile(decoding_schema(SCHEMAS["args+media ids"]))
    proc = MetaResponseLogitsProcessor(
        [grammar, grammar], banned_ids=model.banned_ids, stop_ids=model.stop_ids, budget=10**4, cache=model.grammars
    )
    loop = model.tokenizer('{"text": "' + "ha " * 300, add_special_tokens=False).input_ids
    varied = model.tokenizer('{"text": "' + " ".join(f"w{i}" for i in range(300)), add_special_tokens=False).input_ids
    last = torch.tensor([[0], [0]])
    for step in range(120):
        scores = torch.zeros(2, model.grammars.vocab_size)
        scores[0, loop[step]] = scores[1, varied[step]] = 50.0
        picked = proc(last, scores).argmax(dim=1)
        last = picked[:, None]
    assert proc.looped_rows == {0} and proc.closed_rows == {0}
    assert int(last[1, 0]) == varied[119]  # the other row still follows its model


@pytest.mark.parametrize("path", ["call", "pick_greedy"])
def test_a_long_answer_keeps_the_budget_but_the_measured_closing_route(model: ModaVerseModel, path: str) -> None:
    """A model that would write on past its budget follows its own text until only the closing route (measured
    from where it stands, with ROUTE_MARGIN) is left, not a fixed reserve before: max_tokens=64 on the default
    model used to leave no text at all."""
    from modaverse_agent.model.constrained import ROUTE_MARGIN, MetaResponseLogitsProcessor

    schema = SCHEMAS["args+media ids"]
    grammar = model.grammars.compile(decoding_schema(schema))
    budget, reserve = 60, 32 + model.grammars.shortest(schema)
    script = model.tokenizer('{"text": "' + " ".join(f"w{i}" for i in range(200)), add_special_tokens=False).input_ids
    proc = MetaResponseLogitsProcessor(
        [grammar],
        banned_ids=model.banned_ids,
        stop_ids=model.stop_ids,
        budget=budget,
        reserve=reserve,
        cache=model.grammars,
    )
    out: list[int] = []
    last = torch.tensor([[0]])
    for _ in range(budget):
        scores = torch.zeros(1, model.grammars.vocab_size)
        scores[0, script[len(out)]] = 50.0  # the "model" wants the script
        token = proc.pick_greedy(last, scores) if path == "pick_greedy" else int(proc(last, scores)[0].argmax())
        if token in model.stop_ids:
            break
        out.append(token)
        last = torch.tensor([[token]])
    assert proc.closed_rows == {0} and len(out) < budget
    followed = next(i for i, t in enumerate(out) if t != script[i])
    route = len(out) + 1 - followed  # the closing route, the stop token included
    assert followed >= budget - route - ROUTE_MARGIN - 1 > budget - reserve
    assert parse_meta_response(model.tokenizer.decode(out), schema).text.startswith("w0 w1 w2")


def test_closing_prefers_the_shortest_string_to_a_long_token_after_a_separator_space() -> None:
    """After `"text": ` the default model's vocabulary offers ` "` and ` "*************"`; the closing route
    took the long one (a string of asterisks as the answer, or as a forced tool call's argument)."""
    from modaverse_agent.model.constrained import ClosingTables

    vocab = [b"a", b' "', b' "*************"', b'"', b"x", b"}", b"{"]
    tables = ClosingTables.build(vocab, stop_ids=[])
    opening = torch.tensor([False, True, True, False, False, False, False])
    assert vocab[tables.choose(opening)] == b' "'
    in_string = torch.tensor([True, False, False, True, True, False, False])
    assert vocab[tables.choose(in_string)] == b'"'
    structure = torch.tensor([False, False, False, False, False, True, True])
    assert vocab[tables.opener(structure)] == b"{" and tables.opener(in_string) is None


def test_near_the_budget_a_string_ends_alone_and_a_prompt_that_must_not_end_keeps_the_models_words() -> None:
    """``"},`` ends a prompt and opens the next invocation in one token, past the route measured in the string
    (the default model then wrote a whole invocation under the closing route, prompt "]"): such exits are
    refused near the budget; a prompt that may not end yet (minLength) takes the model's token, not filler."""
    from modaverse_agent.model.constrained import ClosingTables

    vocab = [b"a", b'"', b'"},', b'",', b'"}', b"]", b"x"]
    tables = ClosingTables.build(vocab, stop_ids=[])
    assert [vocab[i] for i in tables.exits.nonzero().flatten().tolist()] == [b'"},', b'",']
    must_not_end = torch.tensor([True, False, False, False, False, True, True])  # minLength: no quote yet
    assert tables.must_write(must_not_end) and not tables.must_write(torch.tensor([True] * 7))
