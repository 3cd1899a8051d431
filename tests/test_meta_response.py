"""The meta-response contract: schema from the zoo, tolerant extraction, precise errors, legacy format."""

from __future__ import annotations

import json

import jsonschema
import pytest

from modaverse_agent.errors import MetaResponseError
from modaverse_agent.meta_response import (
    MAX_INVOCATIONS,
    PROMPT_MAX_CHARS,
    Invocation,
    MetaResponse,
    TaskSpec,
    build_schema,
    extract_json,
    parse_legacy,
    parse_lenient,
    parse_meta_response,
)

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
