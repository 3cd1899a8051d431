"""Training data: the dataset format, validation, dedup, stats, corpora and the template engine."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from jsonschema import Draft202012Validator

from modaverse_agent.meta_response import MAX_INVOCATIONS, PROMPT_MAX_CHARS
from modaverse_agent.training.corpora import (
    builtin_corpora,
    check_phrasings,
    load_captioned,
    normalise_template,
    split_of,
)
from modaverse_agent.training.dataset import (
    KINDS,
    DatasetError,
    Sample,
    assign_media_ids,
    check_file,
    dedup,
    make_sample,
    read_samples,
    sample_schema,
    validate_sample,
    write_samples,
)
from modaverse_agent.training.splitting import split_samples
from modaverse_agent.training.stats import compute_stats, modality_pair
from modaverse_agent.training.tasks import STANDARD_TASKS, standard_schema
from modaverse_agent.training.teacher import builtin_seeds
from modaverse_agent.training.templates import Recipe, TemplateEngine


def _line(**overrides: Any) -> dict[str, Any]:
    line = {
        "id": "x-1",
        "kind": "output-alignment",
        "instruction": "Draw a fox.",
        "media": [],
        "response": {"text": "Here.", "invocations": [{"task": "text-to-image", "prompt": "a fox, highly detailed"}]},
        "source": {"engine": "manual"},
    }
    return {**line, **overrides}


@pytest.fixture(scope="module")
def small_run() -> tuple[list[Sample], list[Sample]]:
    """The original split: the ``test`` phrasing family held out of training."""
    train, test = TemplateEngine(seed=3, heldout_family="test").generate_splits(400, 150)
    return train.samples, test.samples


# -- the format -------------------------------------------------------------------------------------


def test_dataset_schema_is_a_valid_json_schema() -> None:
    Draft202012Validator.check_schema(sample_schema())
    assert set(sample_schema()["properties"]["kind"]["enum"]) == set(KINDS)


def test_standard_tasks_are_the_five_known_tasks() -> None:
    assert [t.task for t in STANDARD_TASKS] == [
        "text-to-image",
        "text-to-audio",
        "text-to-video",
        "text-to-speech",
        "image-editing",
    ]
    assert all(t.description.strip() and "\n" not in t.description for t in STANDARD_TASKS)
    schema = standard_schema(["image_1"])
    assert schema is standard_schema(["image_1"])  # cached
    Draft202012Validator.check_schema(schema)


def test_media_ids_are_numbered_per_modality() -> None:
    assert assign_media_ids(["image", "audio", "image", "video"]) == ["image_1", "audio_1", "image_2", "video_1"]
    with pytest.raises(DatasetError, match="unknown media modality"):
        assign_media_ids(["text"])


def test_a_valid_line_round_trips(tmp_path: Path) -> None:
    sample = make_sample(
        "editing",
        "Make the sky stormy.",
        {
            "text": "Done.",
            "invocations": [{"task": "image-editing", "prompt": "make the sky stormy", "inputs": ["image_1"]}],
        },
        media=[("image", "a.png", "a field")],
        source={"engine": "manual"},
    )
    validate_sample(sample.to_dict())
    path = write_samples([sample], tmp_path / "d.jsonl")
    assert read_samples(path) == [sample]
    assert sample.media[0].resolve(tmp_path) == tmp_path / "a.png"
    assert json.loads(sample.target_json()) == {
        "text": "Done.",
        "invocations": [{"task": "image-editing", "prompt": "make the sky stormy", "inputs": ["image_1"]}],
    }


BAD_LINES = [
    ({"kind": "story"}, "kind"),
    ({"instruction": ""}, "instruction"),
    ({"extra": 1}, "unexpected field"),
    ({"media": [{"id": "image_2", "modality": "image", "path": None}]}, "should be 'image_1'"),
    (
        {"response": {"text": "", "invocations": [{"task": "text-to-painting", "prompt": "x"}]}},
        "response.invocations[0].task: unknown task",
    ),
    (
        {"response": {"text": "", "invocations": [{"task": "text-to-image", "prompt": "x" * (PROMPT_MAX_CHARS + 1)}]}},
        "over the limit",
    ),
    (
        {"response": {"text": "", "invocations": [{"task": "text-to-image", "prompt": "x", "inputs": ["image_1"]}]}},
        "'image_1' names no attached medium (the sample has no media)",
    ),
    (
        {
            "kind": "editing",
            "media": [{"id": "audio_1", "modality": "audio", "path": None}],
            "response": {"text": "", "invocations": [{"task": "image-editing", "prompt": "x", "inputs": ["audio_1"]}]},
        },
        "needs an input image",
    ),
    (
        {
            "media": [{"id": "image_1", "modality": "image", "path": None}],
            "response": {"text": "", "invocations": [{"task": "text-to-image", "prompt": "x", "inputs": ["image_1"]}]},
        },
        "takes no input media",
    ),
    ({"kind": "text-only"}, "must have no media and no invocations"),
    ({"kind": "input-alignment", "response": {"text": "A fox.", "invocations": []}}, "needs input media"),
    ({"kind": "editing"}, "needs an image-editing invocation"),
    ({"response": {"text": "hi"}}, "response"),
    (
        {"response": {"text": "", "invocations": [{"task": "text-to-image", "prompt": "x"}] * (MAX_INVOCATIONS + 1)}},
        "over the limit",
    ),
]


@pytest.mark.parametrize(("overrides", "message"), BAD_LINES)
def test_invalid_samples_are_rejected_with_the_field(overrides: dict[str, Any], message: str) -> None:
    with pytest.raises(DatasetError, match=None) as info:
        validate_sample(_line(**overrides))
    assert message in str(info.value)


def test_read_samples_names_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "d.jsonl"
    lines = [json.dumps(_line()), "", json.dumps(_line(id="x-2", kind="story")), "{not json"]
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(DatasetError, match=r"d\.jsonl:3: kind: .* \(and 1 more; run `modaverse data validate"):
        read_samples(path)
    report = check_file(path)
    assert [n for n, _ in report.errors] == [3, 4] and len(report.samples) == 1
    assert "not JSON" in report.errors[1][1]


def test_duplicate_ids_are_reported(tmp_path: Path) -> None:
    path = tmp_path / "d.jsonl"
    path.write_text(json.dumps(_line()) + "\n" + json.dumps(_line(instruction="Paint a fox.")) + "\n")
    assert check_file(path).errors == [(2, "duplicate id 'x-1' (first on line 1)")]


def test_dedup_keeps_the_first_of_each_normalised_instruction() -> None:
    a = Sample.from_dict(_line())
    b = Sample.from_dict(_line(id="x-2", instruction="  draw a FOX! "))
    c = Sample.from_dict(_line(id="x-3", media=[{"id": "image_1", "modality": "image", "path": None}]))
    kept, dropped = dedup([a, b, c])
    assert kept == [a, c] and dropped == 1


def test_modality_pairs_are_counted() -> None:
    cross = make_sample(
        "reasoning",
        "Draw what this sounds like.",
        {"text": "", "invocations": [{"task": "text-to-image", "prompt": "a train"}]},
        media=[("audio", None)],
    )
    speech = make_sample(
        "output-alignment", "Say hi", {"text": "", "invocations": [{"task": "text-to-speech", "prompt": "Hi"}]}
    )
    assert modality_pair(cross) == "audio+text -> image"
    assert modality_pair(speech) == "text -> speech"
    stats = compute_stats([cross, speech, speech])
    assert stats.by_pair == {"text -> speech": 2, "audio+text -> image": 1}
    assert "audio+text -> image" in stats.format() and stats.placeholder_media == 1


def test_seed_examples_cover_every_kind() -> None:
    seeds = builtin_seeds()
    assert {s.kind for s in seeds} == set(KINDS)


# -- corpora ----------------------------------------------------------------------------------------


def test_builtin_corpora_are_large_and_varied() -> None:
    c = builtin_corpora()
    assert len(c.image_subjects) >= 300 and len(c.videos) >= 150 and len(c.speech) >= 150
    assert len(c.sounds) + len(c.music) >= 250 and len(c.edits) >= 120 and len(c.questions) >= 750
    assert len(c.image_styles) >= 15 and len(c.scenes) >= 50
    train = c.phrasings["train"]
    assert len(train["image"]) >= 40 and len(train["speech"]) >= 35 and len(train["video"]) >= 30
    speech = " ".join(train["speech"]).lower()
    for verb in ("say", "read", "announce", "record yourself saying", "pronounce", "speak"):
        assert verb in speech
    image = " ".join(train["image"]).lower()
    for verb in ("draw", "paint", "show me", "i'd like a picture of", "can you sketch", "render", "generate an image"):
        assert verb in image


def test_heldout_phrasings_are_disjoint_from_training() -> None:
    c = builtin_corpora()
    families = {f: {normalise_template(t) for ts in pools.values() for t in ts} for f, pools in c.phrasings.items()}
    for a in families:
        for b in families:
            if a < b:
                assert families[a] & families[b] <= {"{question}", ""}, (a, b)
    for style in (*c.image_styles, *c.video_styles):
        assert not set(style.asks["train"]) & set(style.asks["test"])


def test_overlapping_phrasings_are_refused() -> None:
    pools = {"train": {"image": ("Draw {subject}.",)}, "test": {"image": ("draw {subject}!",)}}
    with pytest.raises(DatasetError, match=r"held-out template 'draw \{subject\}!'"):
        check_phrasings(pools)
    with pytest.raises(DatasetError, match=r"uses \['thing'\], expected \['subject'\]"):
        check_phrasings({"train": {"image": ("Draw {thing}.",)}, "test": {"image": ("Depict {subject}.",)}})


def test_captioned_corpora_load_from_jsonl_and_csv(tmp_path: Path) -> None:
    (tmp_path / "c.jsonl").write_text(
        json.dumps({"image": "img/1.jpg", "caption": "A dog on a beach."})
        + "\n"
        + json.dumps({"path": "/abs/a.wav", "text": "Rain", "modality": "audio"})
        + "\n"
    )
    items = load_captioned(tmp_path / "c.jsonl")
    assert [(i.modality, i.path) for i in items] == [("image", str(tmp_path / "img/1.jpg")), ("audio", "/abs/a.wav")]
    (tmp_path / "c.csv").write_text("path,caption\nclip.mp4,A cat jumps\nnotes.txt,Something\n")
    with pytest.raises(DatasetError, match=r"c\.csv:3: no modality; add a `modality` column"):
        load_captioned(tmp_path / "c.csv")


# -- the template engine ----------------------------------------------------------------------------


def test_every_generated_sample_validates(small_run: tuple[list[Sample], list[Sample]], tmp_path: Path) -> None:
    train, test = small_run
    assert len(train) == 400 and len(test) == 150
    path = write_samples(train + test, tmp_path / "all.jsonl")
    report = check_file(path)
    assert report.ok, report.errors[:3]
    stats = compute_stats(train)
    assert set(stats.by_kind) == set(KINDS)
    for pair in ("text -> text", "text -> speech", "image+text -> image", "audio+text -> image", "text -> audio+image"):
        assert stats.by_pair[pair] > 0, pair


def test_same_seed_same_file(tmp_path: Path) -> None:
    def run(seed: int, name: str) -> bytes:
        result = TemplateEngine(seed=seed).generate("train", 120)
        return write_samples(result.samples, tmp_path / name).read_bytes()

    assert run(5, "a.jsonl") == run(5, "b.jsonl")
    assert run(5, "a.jsonl") != run(6, "c.jsonl")


def test_heldout_samples_use_only_heldout_pools_and_captions(small_run: tuple[list[Sample], list[Sample]]) -> None:
    train, test = small_run
    c = builtin_corpora()
    test_templates = {t for ts in c.phrasings["test"].values() for t in ts}
    train_templates = {normalise_template(t) for ts in c.phrasings["train"].values() for t in ts} - {"{question}", ""}
    for s in test:
        assert s.split == "test" and s.source["pool"].startswith("test.")
        for part in s.source["template"].split(" | "):
            assert part in test_templates
            assert normalise_template(part) not in train_templates
    assert not {s.instruction.lower() for s in train} & {s.instruction.lower() for s in test}
    # speech lines only: a spoken answer's prompt is the answer, held out (or not) with its question
    speech_train = {
        i["prompt"]
        for s in train
        if s.source["maker"] != "spoken_answer"
        for i in s.response["invocations"]
        if i["task"] == "text-to-speech"
    }
    assert speech_train and all(split_of(p) == "train" for p in speech_train)


def test_counter_examples_and_multi_outputs_are_generated(small_run: tuple[list[Sample], list[Sample]]) -> None:
    train, _ = small_run
    image_not_edit = [s for s in train if s.media and s.media[0].modality == "image" and "image-editing" not in s.tasks]
    audio_to_picture = [s for s in train if s.media and s.media[0].modality == "audio" and "text-to-image" in s.tasks]
    multi = [s for s in train if len(s.tasks) >= 2]
    blind = [s for s in train if s.kind == "input-alignment"]
    assert image_not_edit and audio_to_picture and len(multi) > 20
    assert all("can't" in s.response["text"] for s in blind)
    # placeholder media with a request for another output: the output is made from the words, not refused
    cross = [s for s in train if s.source["maker"] == "cross"]
    assert cross and all(s.media[0].path is None and len(s.response["invocations"]) == 1 for s in cross)
    assert all("inputs" not in s.response["invocations"][0] for s in cross)
    spoken = [s for s in train if s.source["maker"] == "spoken_answer"]
    assert spoken and all(s.response["invocations"][0]["prompt"] == s.response["text"] for s in spoken)


def test_speech_prompts_are_the_words_in_the_instruction(small_run: tuple[list[Sample], list[Sample]]) -> None:
    train, test = small_run
    said = [(s, i["prompt"]) for s in train + test for i in s.response["invocations"] if i["task"] == "text-to-speech"]
    assert said
    for sample, words in said:
        if sample.source["maker"] != "spoken_answer":
            assert words in sample.instruction, sample.instruction


def test_dedup_in_the_engine_counts_duplicates() -> None:
    result = TemplateEngine(seed=0, recipe=Recipe(mix={"describe": 1})).generate("train", 400)
    assert result.duplicates > 0 and result.shortfall["describe"] == 400 - len(result.samples)
    assert len({s.instruction.lower().strip(" .!?") for s in result.samples}) == len(result.samples)


def test_real_captioned_media_give_caption_answers_and_cross_modal_samples(tmp_path: Path) -> None:
    rows = [{"path": f"m/{i}.wav", "caption": f"A dog barking number {i}."} for i in range(30)]
    rows += [{"path": f"m/{i}.jpg", "caption": f"A red boat number {i}."} for i in range(30)]
    (tmp_path / "c.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    engine = TemplateEngine(seed=1, captioned=load_captioned(tmp_path / "c.jsonl"))
    result = engine.generate("train", 200)
    assert result.rejected == 0
    describe = [s for s in result.samples if s.kind == "input-alignment"]
    assert describe and all(s.response["text"] == s.media[0].caption for s in describe if s.media[0].caption)
    cross = [s for s in result.samples if s.source["maker"] == "cross"]
    assert cross and all(s.media[0].path and s.media[0].path.startswith(str(tmp_path)) for s in cross)


def test_unknown_maker_is_refused() -> None:
    with pytest.raises(DatasetError, match="unknown maker"):
        Recipe(mix={"paintings": 1})


def test_split_keeps_templates_on_one_side(small_run: tuple[list[Sample], list[Sample]]) -> None:
    train, _ = small_run
    a, b = split_samples(train, 0.2, seed=1)
    assert len(a) + len(b) == len(train) and 0.15 < len(b) / len(train) < 0.35
    assert not {s.source["template"] for s in a} & {s.source["template"] for s in b}
    assert {s.split for s in b} == {"test"}
