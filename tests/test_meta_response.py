"""The meta-response contract: schema from the zoo, tolerant extraction, precise errors, legacy format."""

from __future__ import annotations

import json
import time

import jsonschema
import pytest

from modaverse_agent.errors import MetaResponseError
from modaverse_agent.meta_response import (
    MAX_DEPTH,
    MAX_INVOCATIONS,
    MAX_LEGACY_ENTRIES,
    MAX_RAW_CHARS,
    PROMPT_MAX_CHARS,
    TEXT_MAX_CHARS,
    Invocation,
    MetaResponse,
    TaskSpec,
    build_schema,
    extract_json,
    parse_legacy,
    parse_legacy_lenient,
    parse_lenient,
    parse_meta_response,
    validate_meta_response,
)
from modaverse_agent.schema_utils import PATH_MAX_CHARS, json_path

SPECS = [
    TaskSpec(
        "text-to-image",
        "Makes a picture.",
        "image",
        {
            "type": "object",
            "properties": {"steps": {"type": "integer", "minimum": 1, "maximum": 100}},
            "additionalProperties": False,
        },
    ),
    TaskSpec("image-editing", "Edits a picture.", "image", input_modalities=("image",)),
]
SCHEMA = build_schema(SPECS, media_ids=["image_1"])
GOOD = {"text": "Sure.", "invocations": [{"task": "text-to-image", "prompt": "a red apple", "args": {"steps": 5}}]}


def test_schema_is_valid_json_schema_and_lists_served_tasks() -> None:
    jsonschema.Draft202012Validator.check_schema(SCHEMA)
    tasks = [s["properties"]["task"]["const"] for s in SCHEMA["properties"]["invocations"]["items"]["anyOf"]]
    assert tasks == ["image-editing", "text-to-image"]
    assert SCHEMA["properties"]["invocations"]["maxItems"] == MAX_INVOCATIONS


def test_schema_bounds_every_string_and_array() -> None:
    def walk(node: object) -> None:
        if isinstance(node, dict):
            if node.get("type") == "string" and "enum" not in node:
                assert "maxLength" in node or "pattern" in node, node
            if node.get("type") == "array":
                assert "maxItems" in node, node
            for v in node.values():
                walk(v)
        elif isinstance(node, list):
            for v in node:
                walk(v)

    walk(SCHEMA)


def test_schema_with_no_tasks_allows_text_only() -> None:
    schema = build_schema([])
    assert parse_meta_response('{"text": "hi", "invocations": []}', schema) == MetaResponse("hi")
    with pytest.raises(MetaResponseError, match="invocations"):
        parse_meta_response(json.dumps(GOOD), schema)


def test_parse_good_response_to_typed_objects() -> None:
    r = parse_meta_response(json.dumps(GOOD), SCHEMA)
    assert r == MetaResponse("Sure.", (Invocation("text-to-image", "a red apple", (), {"steps": 5}),))
    assert r.tasks == ("text-to-image",)
    assert json.loads(r.to_json())["invocations"][0]["inputs"] == []


@pytest.mark.parametrize(
    "raw",
    [
        "  " + json.dumps(GOOD) + "\n",
        "```json\n" + json.dumps(GOOD) + "\n```",
        "Here is my plan: " + json.dumps(GOOD) + " Hope it helps!",
        json.dumps(GOOD) + "###",
        json.dumps(GOOD) + "<end_of_turn>",
        "{not json} then " + json.dumps(GOOD),
    ],
)
def test_documented_tolerances(raw: str) -> None:
    assert parse_meta_response(raw, SCHEMA).invocations[0].prompt == "a red apple"


def test_raw_control_characters_inside_strings_are_accepted() -> None:
    raw = '{"text": "line one\nline two\tend", "invocations": []}'
    assert parse_meta_response(raw, SCHEMA).text == "line one\nline two\tend"


@pytest.mark.parametrize(
    "raw",
    ["", "no json here", "{'text': 'single quotes', 'invocations': []}", '{"text": "trunc', '{"text": "a",}'],
)
def test_invalid_json_is_an_error_that_keeps_the_raw_text(raw: str) -> None:
    with pytest.raises(MetaResponseError, match="no JSON object") as info:
        extract_json(raw)
    assert info.value.raw == raw


@pytest.mark.parametrize(
    ("obj", "path", "words"),
    [
        ({"text": "x"}, "", "invocations"),
        ([1, 2], "", "JSON object"),
        ({"text": 3, "invocations": []}, "text", "not of type"),
        ({"text": "x", "invocations": [], "extra": 1}, "", "unexpected field"),
        (
            {"text": "x", "invocations": [{"task": "text-to-music", "prompt": "p"}]},
            "invocations[0].task",
            "unknown task 'text-to-music'",
        ),
        ({"text": "x", "invocations": [{"prompt": "p"}]}, "invocations[0]", "missing `task`"),
        ({"text": "x", "invocations": [{"task": "text-to-image"}]}, "invocations[0]", "'prompt' is missing"),
        (
            {"text": "x", "invocations": [{"task": "text-to-image", "prompt": ""}]},
            "invocations[0].prompt",
            "under the minimum",
        ),
        (
            {"text": "x", "invocations": [{"task": "text-to-image", "prompt": "p", "args": {"steps": 0}}]},
            "invocations[0].args.steps",
            "minimum",
        ),
        (
            {"text": "x", "invocations": [{"task": "text-to-image", "prompt": "p", "args": {"cfg": 1}}]},
            "invocations[0].args",
            "unexpected field",
        ),
        (
            {"text": "x", "invocations": [{"task": "image-editing", "prompt": "p", "inputs": ["image_2"]}]},
            "invocations[0].inputs[0]",
            "given media are ['image_1']",
        ),
        (
            {"text": "x", "invocations": [{"task": "text-to-image", "prompt": "p"}] * (MAX_INVOCATIONS + 1)},
            "invocations",
            "over the limit",
        ),
    ],
)
def test_schema_violations_name_the_failing_path(obj: object, path: str, words: str) -> None:
    with pytest.raises(MetaResponseError) as info:
        parse_meta_response(json.dumps(obj), SCHEMA)
    assert info.value.path == path
    assert words in str(info.value)


def test_megabyte_prompt_is_rejected_without_echoing_it() -> None:
    obj = {"text": "x", "invocations": [{"task": "text-to-image", "prompt": "a" * 1_000_000}]}
    with pytest.raises(MetaResponseError) as info:
        parse_meta_response(json.dumps(obj), SCHEMA)
    assert info.value.path == "invocations[0].prompt"
    assert f"over the limit of {PROMPT_MAX_CHARS}" in str(info.value)
    assert len(str(info.value)) < 300


def test_lenient_parse_keeps_valid_invocations() -> None:
    obj = {
        "text": "Both.",
        "invocations": [
            {"task": "text-to-image", "prompt": "ok one"},
            {"task": "nope", "prompt": "bad"},
            {"task": "text-to-image", "prompt": "ok two"},
        ],
    }
    response, errors = parse_lenient(json.dumps(obj), SCHEMA)
    assert [i.prompt for i in response.invocations] == ["ok one", "ok two"]
    assert response.text == "Both."
    assert [e.path for e in errors] == ["invocations[1].task"]


def test_media_ids_none_accepts_any_well_formed_reference() -> None:
    schema = build_schema(SPECS)
    obj = {"text": "", "invocations": [{"task": "image-editing", "prompt": "p", "inputs": ["image_3"]}]}
    assert parse_meta_response(json.dumps(obj), schema).invocations[0].inputs == ("image_3",)
    obj["invocations"][0]["inputs"] = ["../etc/passwd"]
    with pytest.raises(MetaResponseError, match="does not match"):
        parse_meta_response(json.dumps(obj), schema)


def _served(schema: dict) -> list[str]:
    return [s["properties"]["task"]["const"] for s in schema["properties"]["invocations"]["items"].get("anyOf", [])]


@pytest.mark.parametrize(
    ("media_ids", "served"),
    [
        ([], ["text-to-image"]),
        (["audio_1"], ["text-to-image"]),
        (["audio_1", "image_1"], ["image-editing", "text-to-image"]),
        (None, ["image-editing", "text-to-image"]),
    ],
)
def test_tasks_that_need_absent_input_media_are_left_out(media_ids: list[str] | None, served: list[str]) -> None:
    schema = build_schema(SPECS, media_ids=media_ids)
    jsonschema.Draft202012Validator.check_schema(schema)
    assert _served(schema) == served


def test_an_edit_with_nothing_to_edit_is_refused_with_the_reason() -> None:
    schema = build_schema(SPECS, media_ids=["audio_1"])
    obj = {"text": "", "invocations": [{"task": "image-editing", "prompt": "greener", "inputs": ["audio_1"]}]}
    with pytest.raises(MetaResponseError, match="'image-editing' needs an input image and none was given"):
        parse_meta_response(json.dumps(obj), schema)


def test_an_edit_must_reference_an_image_of_the_request() -> None:
    schema = build_schema(SPECS, media_ids=["audio_1", "image_1"])
    edit = {"task": "image-editing", "prompt": "greener", "inputs": ["image_1"]}
    assert parse_meta_response(json.dumps({"text": "", "invocations": [edit]}), schema).invocations[0].inputs == (
        "image_1",
    )
    for inputs in ([], ["audio_1"]):
        with pytest.raises(MetaResponseError, match="inputs"):
            parse_meta_response(json.dumps({"text": "", "invocations": [{**edit, "inputs": inputs}]}), schema)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (
            "Modality: [IMAGE] Prompt: a red apple on a table###",
            MetaResponse("", (Invocation("text-to-image", "a red apple on a table"),)),
        ),
        (
            " Modality: [AUDIO] Prompt: rain on a tin roof ### Human: next",
            MetaResponse("", (Invocation("text-to-audio", "rain on a tin roof"),)),
        ),
        (
            "Modality: [VIDEO] Prompt: a dog running</s>",
            MetaResponse("", (Invocation("text-to-video", "a dog running"),)),
        ),
        (
            "Modality: [TEXT] Prompt: Paris is the capital of France. ###",
            MetaResponse("Paris is the capital of France."),
        ),
        (
            "Modality: [IMAGE] Prompt: a cat Modality: [AUDIO] Prompt: purring",
            MetaResponse("", (Invocation("text-to-image", "a cat"), Invocation("text-to-audio", "purring"))),
        ),
    ],
)
def test_legacy_release_format(raw: str, expected: MetaResponse) -> None:
    assert parse_legacy(raw) == expected


@pytest.mark.parametrize(
    "raw", ["Prompt: no modality", "Modality: [SMELL] Prompt: roses", "Modality: [IMAGE] Prompt: ###"]
)
def test_legacy_format_errors(raw: str) -> None:
    with pytest.raises(MetaResponseError):
        parse_legacy(raw)


# -- hostile model output (issue 17): total, linear-time parsers; one bad invocation loses nothing else --

OK_INV = {"task": "text-to-image", "prompt": "kept"}


def _with_bad(fragment: str, *, before: int = 1, after: int = 1) -> str:
    """A meta-response whose invocations are ``before`` good ones, ``fragment`` (raw JSON), ``after`` good ones."""
    good = json.dumps(OK_INV)
    return '{"text": "t", "invocations": [' + ", ".join([good] * before + [fragment] + [good] * after) + "]}"


def _encodable(response: MetaResponse) -> None:
    json.dumps(response.to_dict(), ensure_ascii=False, allow_nan=False).encode("utf-8")


@pytest.mark.parametrize(
    ("fragment", "words"),
    [
        ('{"task": ["text-to-image"], "prompt": "p"}', "is not a task name"),
        ('{"task": {"a": 1}, "prompt": "p"}', "is not a task name"),
        ('{"task": 3, "prompt": "p"}', "is not a task name"),
        ('{"task": null, "prompt": "p"}', "is not a task name"),
        ('{"task": NaN, "prompt": "p"}', "NaN is not allowed"),
        ('{"task": "\\ud800", "prompt": "p"}', "lone surrogate"),
    ],
)
def test_a_task_of_the_wrong_type_drops_only_its_invocation(fragment: str, words: str) -> None:
    response, errors = parse_lenient(_with_bad(fragment), SCHEMA)
    assert [i.prompt for i in response.invocations] == ["kept", "kept"]
    assert [i.position for i in response.invocations] == [0, 2]
    assert [e.path for e in errors] == ["invocations[1].task"] and words in str(errors[0])
    with pytest.raises(MetaResponseError, match=r"invocations\[1\]\.task"):
        parse_meta_response(_with_bad(fragment), SCHEMA)


def _nested(depth: int) -> str:
    return "[" * depth + "]" * depth


@pytest.mark.parametrize("depth", [MAX_DEPTH, 200, 1_000, 5_000, 100_000])
def test_deep_nesting_is_refused_at_its_path_without_recursion_error(depth: int) -> None:
    fragment = '{"task": "text-to-image", "prompt": "p", "args": {"steps": ' + _nested(depth) + "}}"
    response, errors = parse_lenient(_with_bad(fragment), SCHEMA)
    assert [i.position for i in response.invocations] == [0, 2]
    assert len(errors) == 1 and errors[0].path.startswith("invocations[1].args.steps")
    assert f"nested deeper than {MAX_DEPTH} levels" in str(errors[0]) and len(str(errors[0])) < 300


def test_nesting_up_to_the_bound_is_not_a_depth_error() -> None:
    # the root object is level 1, so MAX_DEPTH - 1 nested arrays inside it just fit
    value = extract_json('{"a": ' + _nested(MAX_DEPTH - 1) + "}")["a"]
    for _ in range(MAX_DEPTH - 2):
        value = value[0]
    assert value == []
    with pytest.raises(MetaResponseError, match=f"nested deeper than {MAX_DEPTH}"):
        extract_json('{"a": ' + _nested(MAX_DEPTH) + "}")


@pytest.mark.parametrize("where", ["text", "invocations", "top"])
def test_deep_nesting_outside_an_invocation_is_an_error_not_a_crash(where: str) -> None:
    deep = _nested(50_000)
    raw = {
        "text": '{"text": ' + deep + ', "invocations": []}',
        "invocations": '{"text": "t", "invocations": ' + deep + "}",
        "top": deep,
    }[where]
    response, errors = parse_lenient(raw, SCHEMA)
    assert response.invocations == () and errors
    assert all(isinstance(e, MetaResponseError) for e in errors)


@pytest.mark.parametrize(
    ("number", "words"),
    [
        ("9" * 4_301, "4,301 characters, over the limit of 100"),
        ("-" + "9" * 100_000, "100,001 characters"),
        ("1." + "0" * 200, "202 characters"),
        ("1e999", "overflows to infinity"),
        ("-1e999", "overflows to infinity"),
        ("NaN", "NaN is not allowed: a meta-response must be strict JSON"),
        ("Infinity", "Infinity is not allowed"),
        ("-Infinity", "-Infinity is not allowed"),
    ],
)
def test_numbers_json_cannot_hold_are_refused_at_their_path(number: str, words: str) -> None:
    fragment = '{"task": "text-to-image", "prompt": "p", "args": {"steps": ' + number + "}}"
    response, errors = parse_lenient(_with_bad(fragment), SCHEMA)
    assert [i.position for i in response.invocations] == [0, 2]
    assert [e.path for e in errors] == ["invocations[1].args.steps"]
    assert words in str(errors[0]) and len(str(errors[0])) < 300
    with pytest.raises(MetaResponseError, match=r"invocations\[1\]\.args\.steps"):
        extract_json(_with_bad(fragment))


def test_nan_in_the_text_empties_only_the_text() -> None:
    response, errors = parse_lenient('{"text": NaN, "invocations": [' + json.dumps(OK_INV) + "]}", SCHEMA)
    assert response.text == "" and [i.prompt for i in response.invocations] == ["kept"]
    assert [e.path for e in errors] == ["text"] and "NaN" in str(errors[0])


@pytest.mark.parametrize(
    ("fragment", "path"),
    [
        ('{"task": "text-to-image", "prompt": "a\\ud800b"}', "invocations[1].prompt"),
        ('{"task": "text-to-image", "prompt": "\\udfff"}', "invocations[1].prompt"),
        ('{"task": "text-to-image", "prompt": "p", "args": {"\\ud800": 1}}', "invocations[1].args['\\ud800']"),
        ('{"task": "text-to-image", "prompt": "p", "args": {"steps": ["\\ud800"]}}', "invocations[1].args.steps[0]"),
    ],
)
def test_lone_surrogates_are_refused_so_the_response_is_valid_utf8(fragment: str, path: str) -> None:
    """Choice: a string or field name holding a lone surrogate is refused (not replaced), naming its path."""
    response, errors = parse_lenient(_with_bad(fragment), SCHEMA)
    assert [i.position for i in response.invocations] == [0, 2]
    assert [e.path for e in errors] == [path] and "lone surrogate" in str(errors[0])
    str(errors[0]).encode("utf-8")  # the error itself quotes the surrogate escaped
    _encodable(response)


def test_a_lone_surrogate_in_the_text_is_refused_and_the_invocations_kept() -> None:
    raw = '{"text": "hi \\ud83d", "invocations": [' + json.dumps(OK_INV) + "]}"
    response, errors = parse_lenient(raw, SCHEMA)
    assert response.text == "" and len(response.invocations) == 1
    assert [e.path for e in errors] == ["text"]
    _encodable(response)


def test_a_surrogate_pair_is_a_character_not_an_error() -> None:
    raw = '{"text": "\\ud83d\\ude00", "invocations": []}'
    assert parse_meta_response(raw, SCHEMA).text == "\U0001f600"


@pytest.mark.parametrize(
    "raw",
    [
        "{" * 1_000_000,
        "```json" + " " * 1_000_000 + "```",
        "```json\n" + " " * 1_000_000 + json.dumps(GOOD) + "\n```",
        "```" + " " * 1_000_000,
        '{"a":' * 300_000,
        '{"' * 900_000,
        "[" * 1_000_000,
        ("x" * 999 + "{") * 1_000,
    ],
    ids=[
        "braces",
        "fenced-spaces",
        "fenced-spaces-then-json",
        "open-fence",
        "deep-keys",
        "quotes",
        "brackets",
        "prose",
    ],
)
def test_extraction_is_linear_time(raw: str) -> None:
    start = time.perf_counter()
    response, errors = parse_lenient(raw, SCHEMA)
    assert time.perf_counter() - start < 2.0
    assert errors or response.invocations


def test_fenced_json_after_a_megabyte_of_spaces_is_found() -> None:
    raw = "```json\n" + " " * 1_000_000 + json.dumps(GOOD) + "\n```"
    assert parse_meta_response(raw, SCHEMA).invocations[0].prompt == "a red apple"


def test_output_over_the_size_cap_is_refused_naming_the_cap() -> None:
    raw = json.dumps({"text": "x" * MAX_RAW_CHARS, "invocations": []})
    with pytest.raises(MetaResponseError, match=f"over the limit of {MAX_RAW_CHARS:,}") as info:
        extract_json(raw)
    assert len(str(info.value)) < 300


def test_an_invocation_with_too_many_values_drops_only_itself() -> None:
    fragment = '{"task": "text-to-image", "prompt": "p", "args": {"steps": [' + ",".join(["0"] * 200_000) + "]}}"
    response, errors = parse_lenient(_with_bad(fragment), SCHEMA)
    assert [i.position for i in response.invocations] == [0, 2]
    assert [e.path for e in errors] == ["invocations[1]"] and "values, over the limit" in str(errors[0])


def test_errors_name_the_models_index_even_after_a_dropped_invocation() -> None:
    raw = json.dumps({"text": "", "invocations": [{"task": "nope", "prompt": "p"}, {"task": "text-to-image"}]})
    _, errors = parse_lenient(raw, SCHEMA)
    assert [e.path for e in errors] == ["invocations[0].task", "invocations[1]"]
    raw = json.dumps({"text": "", "invocations": [{"task": "nope", "prompt": "p"}, OK_INV, OK_INV]})
    response, _ = parse_lenient(raw, SCHEMA)
    assert [i.position for i in response.invocations] == [1, 2]


def test_too_many_invocations_keep_the_first_ones() -> None:
    raw = json.dumps({"text": "", "invocations": [OK_INV] * 1_000})
    response, errors = parse_lenient(raw, SCHEMA)
    assert len(response.invocations) == MAX_INVOCATIONS
    assert [str(e) for e in errors] == [f"invocations: has 1,000 items, over the limit of {MAX_INVOCATIONS}"]


@pytest.mark.parametrize(
    "obj",
    [
        {"text": "", "invocations": [{"task": "t" * 1_000_000, "prompt": "p"}]},
        {"text": "", "invocations": [{"task": "text-to-image", "prompt": "p", "args": {"k" * 1_000_000: 1}}]},
        {"text": "", "invocations": [{"task": "text-to-image", "prompt": "p", "a" * 1_000_000: 1}]},
        {"text": "", "invocations": [], "x" * 1_000_000: 1},
        {"text": "", "invocations": [{"task": "image-editing", "prompt": "p", "inputs": ["x" * 1_000_000]}]},
        {"text": "", "invocations": [["x" * 1_000_000]]},
    ],
    ids=["task", "arg-name", "field", "top-field", "input", "item"],
)
def test_errors_quote_only_a_short_excerpt(obj: dict) -> None:
    _, errors = parse_lenient(json.dumps(obj), SCHEMA)
    assert errors and all(len(str(e)) < 400 for e in errors), [len(str(e)) for e in errors]


def test_no_json_error_quotes_a_short_excerpt() -> None:
    with pytest.raises(MetaResponseError, match="no JSON object") as info:
        extract_json("no json " * 100_000)
    assert len(str(info.value)) < 300


@pytest.mark.parametrize("raw", [None, b"{}", 3, ["{}"]])
def test_output_that_is_not_text_is_an_error(raw: object) -> None:
    with pytest.raises(MetaResponseError, match="must be text"):
        extract_json(raw)  # type: ignore[arg-type]
    assert "must be text" in str(parse_lenient(raw, SCHEMA)[1][0])  # type: ignore[arg-type]
    assert "must be text" in str(parse_legacy_lenient(raw)[1][0])  # type: ignore[arg-type]


def test_validate_meta_response_refuses_what_json_cannot_write() -> None:
    deep: list = []
    for _ in range(5_000):
        deep = [deep]
    for obj in (
        {"text": "", "invocations": [{**OK_INV, "args": {"steps": float("nan")}}]},
        {"text": "", "invocations": [], "x": 10**5000},
        {"text": deep, "invocations": []},
        {"text": "\ud800", "invocations": []},
    ):
        with pytest.raises(MetaResponseError):
            validate_meta_response(obj, SCHEMA)


def test_json_path_quotes_and_cuts_odd_names() -> None:
    assert json_path(["invocations", 0, "args", "steps"]) == "invocations[0].args.steps"
    assert json_path(["args", "a b"]) == "args['a b']"
    assert json_path(["args", "\ud800"]) == "args['\\ud800']"
    assert len(json_path(["args", "k" * 1_000_000])) < 80
    assert len(json_path(["k" * 30] * 100)) <= PATH_MAX_CHARS + 3


# -- the legacy reader, lenient ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("bad", "words"),
    [
        ("Modality: [SMELL] Prompt: roses", "unknown modality tag 'SMELL'"),
        ("Modality: [IMAGE] Prompt: ", "empty prompt"),
        ("Modality: [IMAGE] no prompt here", "expected `Prompt:`"),
        ("Modality: [IMAGE Prompt: x", "no `]` closes the tag"),
        ("Modality: [" + "A" * 1_000_000 + "] Prompt: x", "unknown modality tag 'AAAA"),
        ("Modality: [IMAGE] Prompt: a \ud800 b", "lone surrogate"),
    ],
)
def test_legacy_bad_entry_drops_only_itself(bad: str, words: str) -> None:
    raw = f"Modality: [IMAGE] Prompt: one {bad} Modality: [AUDIO] Prompt: two ###"
    response, errors = parse_legacy_lenient(raw)
    assert [(i.task, i.prompt, i.position) for i in response.invocations] == [
        ("text-to-image", "one", 0),
        ("text-to-audio", "two", 2),
    ]
    assert [e.path for e in errors] == ["Modality[1]"] and words in str(errors[0])
    assert len(str(errors[0])) < 300
    with pytest.raises(MetaResponseError, match=r"Modality\[1\]"):
        parse_legacy(raw)


def test_legacy_invocations_are_capped_like_the_json_schema() -> None:
    raw = "Modality: [IMAGE] Prompt: x\n" * 1_000
    response, errors = parse_legacy_lenient(raw)
    assert len(response.invocations) == MAX_INVOCATIONS
    assert any(f"over the limit of {MAX_LEGACY_ENTRIES}" in str(e) for e in errors)
    assert any(f"over the limit of {MAX_INVOCATIONS}" in str(e) for e in errors)
    response, errors = parse_legacy_lenient("Modality: [IMAGE] Prompt: x " * 3, build_schema(SPECS))
    assert len(response.invocations) == 3 and errors == []
    assert parse_legacy_lenient("Modality: [IMAGE] Prompt: x", build_schema([]))[0].invocations == ()


def test_legacy_text_over_the_limit_is_cut_with_an_error() -> None:
    response, errors = parse_legacy_lenient("Modality: [TEXT] Prompt: " + "w" * 5_000)
    assert len(response.text) == TEXT_MAX_CHARS and [e.path for e in errors] == ["text"]


@pytest.mark.parametrize(
    "raw",
    [
        "Modality: [IMAGE] Prompt:" + " " * 1_000_000 + "x",
        "Modality:" + " " * 1_000_000,
        "Modality: [" * 150_000,
        "Modality: [IMAGE] Prompt: " + "</s" * 300_000,
    ],
)
def test_legacy_reader_is_linear_time(raw: str) -> None:
    start = time.perf_counter()
    parse_legacy_lenient(raw)
    assert time.perf_counter() - start < 2.0
