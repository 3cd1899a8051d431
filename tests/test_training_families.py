"""Phrasing families, the held-out family, and the makers for how people ask: implicit picture / sound /
video asks, explicit speech, cross-modal requests on attached media, pictures derived from a photo, plain
questions that stay text, and multi-output requests with exactly the outputs asked for."""

from __future__ import annotations

import re
import shutil
import tomllib
from collections import Counter
from dataclasses import replace
from pathlib import Path

import pytest

from modaverse_agent.training.corpora import Style, builtin_corpora, load_corpora, split_phrasings
from modaverse_agent.training.dataset import DatasetError, Sample
from modaverse_agent.training.templates import DEFAULT_MIX, Recipe, TemplateEngine

CORPORA = Path(__file__).resolve().parents[1] / "prompts" / "corpora"
#: Words that ask for speech; every text-to-speech sample must contain one.
SPEECH_CUE = re.compile(
    r"\b(say|saying|read|reading|speak|speaking|spoken|speech|voice\w*|narrat\w*|announc\w*|pronounc\w*|"
    r"vocali[sz]e|utter|recite|aloud|out loud|tts|repeat after me|dictate|audio|record\w*|hear|listen)\b",
    re.I,
)


@pytest.fixture(scope="module")
def default_run() -> list[Sample]:
    """Every family in training (the shipped recipe)."""
    return TemplateEngine(seed=11).generate("train", 1500).samples


def _family(sample: Sample) -> str:
    return sample.source["pool"].split(".", 1)[0]


def _one_maker(maker: str, size: int = 150) -> list[Sample]:
    result = TemplateEngine(seed=4, recipe=Recipe(mix={maker: 1})).generate("train", size)
    assert result.rejected == 0 and len(result.samples) == size, result.summary()
    return result.samples


# -- families ---------------------------------------------------------------------------------------


def test_builtin_families_cover_every_kind_of_ask() -> None:
    c = builtin_corpora()
    want = {"train", "test", "picture_asks", "sound_asks", "video_asks", "speech_asks", "plain_asks"}
    assert want | {"attached", "cross_media", "derived_asks", "multi_asks"} <= set(c.families)
    assert len(c.phrasings["picture_asks"]["image"]) >= 60 and len(c.phrasings["sound_asks"]["music"]) >= 30
    assert len(c.derived) >= 60 and {d.task for d in c.derived} == {"image-editing", "text-to-image"}
    pairs = {tuple(k.split("_")[-2:]) for k in c.phrasings["cross_media"] if k.startswith("cross_")}
    assert {("image", "audio"), ("image", "music"), ("image", "video"), ("audio", "image"), ("video", "image")} <= pairs
    assert set(c.blind_prompts) >= {"image_audio", "image_music", "image_video", "audio_image", "video_audio"}


def test_default_training_uses_every_family(default_run: list[Sample]) -> None:
    used = Counter(_family(s) for s in default_run)
    assert set(used) == set(builtin_corpora().families), used
    assert all(s.source["split"] == "train" and "heldout_family" not in s.source for s in default_run)


def test_a_heldout_family_stays_out_of_training_and_makes_the_test_split() -> None:
    engine = TemplateEngine(seed=2, heldout_family="picture_asks")
    train, test = engine.generate_splits(600, 80)
    assert "picture_asks" not in {_family(s) for s in train.samples}
    assert {_family(s) for s in test.samples} == {"picture_asks"}
    assert {s.tasks for s in test.samples} == {("text-to-image",)} and all(not s.media for s in test.samples)
    own = {t for ts in builtin_corpora().phrasings["picture_asks"].values() for t in ts}
    assert all(s.source["template"].split(" | ")[0] in own for s in test.samples)
    assert not {s.instruction.lower() for s in train.samples} & {s.instruction.lower() for s in test.samples}


def test_split_phrasings_merges_families_and_refuses_an_unknown_one() -> None:
    phrasings = {"train": {"image": ("Draw {subject}.",)}, "test": {"image": ("Depict {subject}.",)}}
    merged = split_phrasings(phrasings)
    assert merged["train"]["image"] == [("train", "Draw {subject}."), ("test", "Depict {subject}.")]
    assert merged["test"] == merged["train"]
    held = split_phrasings(phrasings, "test")
    assert held["train"]["image"] == [("train", "Draw {subject}.")]
    assert held["test"]["image"] == [("test", "Depict {subject}.")]
    with pytest.raises(DatasetError, match=r"unknown phrasing family 'nope'; known: train, test"):
        split_phrasings(phrasings, "nope")
    with pytest.raises(DatasetError, match="unknown phrasing family"):
        TemplateEngine(heldout_family="nope")


def test_style_asks_follow_their_family() -> None:
    style = Style("red tones", {"train": ("in crimson",), "test": ("in azure",)})
    corpora = replace(builtin_corpora(), image_styles=(style,))

    def asks(family: str | None, split: str) -> set[str]:
        engine = TemplateEngine(corpora, seed=5, recipe=Recipe(mix={"image": 1}, style_p=1.0), heldout_family=family)
        found = " ".join(s.instruction.lower() for s in engine.generate(split, 200).samples)
        return {a for a in ("in crimson", "in azure") if a in found}

    assert asks(None, "train") == {"in crimson", "in azure"}
    assert asks("test", "train") == {"in crimson"} and asks("test", "test") == {"in azure"}


def test_same_seed_same_samples_with_a_heldout_family() -> None:
    def run() -> list[str]:
        train, test = TemplateEngine(seed=9, heldout_family="cross_media").generate_splits(150, 40)
        return [s.instruction for s in train.samples + test.samples]

    assert run() == run()


def test_a_heldout_family_without_usable_pools_is_a_clear_error() -> None:
    engine = TemplateEngine(seed=0, recipe=Recipe(mix={"edit": 1}), heldout_family="picture_asks")
    with pytest.raises(DatasetError, match="no maker in the mix can write test samples"):
        engine.generate("test", 10)


# -- loading ----------------------------------------------------------------------------------------


def _copy(tmp_path: Path) -> Path:
    folder = tmp_path / "corpora"
    shutil.copytree(CORPORA, folder)
    return folder


def test_a_template_in_two_families_is_refused(tmp_path: Path) -> None:
    folder = _copy(tmp_path)
    text = (folder / "phrasings.toml").read_text()
    (folder / "phrasings.toml").write_text(text + '\n[families.again]\nimage = ["draw {subject}!"]\n')
    with pytest.raises(DatasetError, match=r"'draw \{subject\}!' \(\[families\.again\]\.image\) is also"):
        load_corpora(folder)
    (folder / "phrasings.toml").write_text(text + '\n[families.Bad-Name]\nimage = ["Ink {subject}."]\n')
    with pytest.raises(DatasetError, match="family name 'Bad-Name'"):
        load_corpora(folder)
    (folder / "phrasings.toml").write_text(text + '\n[families.wrong]\nderived = ["Do {edit}."]\n')
    with pytest.raises(DatasetError, match=r"\[families\.wrong\]\.derived: template 'Do \{edit\}\.' uses"):
        load_corpora(folder)


def test_derived_requests_need_a_known_task(tmp_path: Path) -> None:
    folder = _copy(tmp_path)
    with (folder / "derived.txt").open("a") as f:
        f.write("make a song of this photo || text-to-audio || a song\n")
    with pytest.raises(DatasetError, match=r"derived\.txt:\d+: task 'text-to-audio' is not one of"):
        load_corpora(folder)


def test_an_older_corpora_folder_still_loads_and_refuses_blind_cross_requests(tmp_path: Path) -> None:
    """No families, derived.txt or blind prompts: the derived maker has nothing to make, and a cross-modal
    request on placeholder media gets the old answer (the media cannot be perceived)."""
    folder = _copy(tmp_path)
    (folder / "derived.txt").unlink()
    raw = (folder / "phrasings.toml").read_text()
    head = raw[: raw.index("\n[families.")]
    responses = raw[raw.index("\n[responses]") :]
    (folder / "phrasings.toml").write_text(head + responses)
    c = load_corpora(folder)
    assert c.families == ("train", "test") and not c.derived and not c.blind_prompts
    result = TemplateEngine(c, seed=1, recipe=Recipe(mix={"cross": 1, "derived": 1})).generate("train", 60)
    assert {s.source["maker"] for s in result.samples} == {"cross"}
    assert all(not s.tasks and "can't" in s.response["text"] for s in result.samples)


# -- what each kind of ask gets ---------------------------------------------------------------------


def test_speech_only_where_the_words_ask_for_it(default_run: list[Sample]) -> None:
    spoken = [s for s in default_run if "text-to-speech" in s.tasks]
    assert spoken
    unasked = [s.instruction for s in spoken if not SPEECH_CUE.search(s.instruction)]
    assert unasked == []


def test_plain_questions_stay_text_with_real_answers(default_run: list[Sample]) -> None:
    c = builtin_corpora()
    stock = {r for replies in c.responses.values() for r in replies}
    questions = [s for s in default_run if s.source["maker"] == "question"]
    assert len(questions) >= 0.15 * len(default_run)
    for s in questions:
        assert s.kind == "text-only" and not s.tasks and not s.media
        text = s.response["text"]
        assert text not in stock and text.strip().lower() != s.instruction.strip().lower()
    # wrappers only around real questions: a greeting, a command or a statement comes as it is
    assert all(s.source["template"] == "{question}" for s in questions if "?" not in s.instruction)
    assert any(s.source["template"] != "{question}" for s in questions)


def test_questions_corpus_has_no_duplicates_and_no_stock_answers() -> None:
    c = builtin_corpora()
    asked = Counter(q.question.lower() for q in c.questions)
    assert [q for q, n in asked.items() if n > 1] == []
    assert all(not a.answer.startswith(("Here's the", "Here is your", "Here it is")) for a in c.questions)
    mentions = [q for q in c.questions if re.search(r"\b(draw|photo|picture|sound|video|voice|song)\w*", q.question)]
    assert len(mentions) >= 60  # counter-examples: media words, text answers


def test_implicit_asks_get_exactly_their_task(default_run: list[Sample]) -> None:
    want = {"picture_asks": "text-to-image", "video_asks": "text-to-video", "sound_asks": "text-to-audio"}
    for family, task in want.items():
        samples = [s for s in default_run if _family(s) == family and s.source["maker"] not in ("multi",)]
        assert samples, family
        assert all(s.tasks == (task,) for s in samples), [s.instruction for s in samples if s.tasks != (task,)]
    speech = [s for s in default_run if s.source["pool"] == "speech_asks.speech"]
    assert speech and all(s.tasks == ("text-to-speech",) for s in speech)
    assert all(s.response["invocations"][0]["prompt"] in s.instruction for s in speech)


def test_cross_modal_requests_make_the_asked_output_from_the_words() -> None:
    c = builtin_corpora()
    task_of = {"image": "text-to-image", "audio": "text-to-audio", "music": "text-to-audio", "video": "text-to-video"}
    samples = _one_maker("cross", 300)
    told = [s for s in samples if "cross_told_" in s.source["pool"]]
    free = [s for s in samples if "cross_told_" not in s.source["pool"]]
    assert told and free and 0.15 < len(told) / len(samples) < 0.45
    for s in samples:
        src, dst = s.source["pool"].rsplit(".", 1)[1].split("_")[-2:]
        assert [m.modality for m in s.media] == [src] and s.media[0].path is None
        assert [i["task"] for i in s.response["invocations"]] == [task_of[dst]]
        assert "inputs" not in s.response["invocations"][0]
    scene_prompts = {p for sc in c.scenes for p in (sc.sound[:1].upper() + sc.sound[1:], sc.video)}
    for s in told:
        prompt = s.response["invocations"][0]["prompt"]
        assert prompt in scene_prompts or any(prompt.startswith(sc.image) for sc in c.scenes)
    blind = {p for ps in c.blind_prompts.values() for p in ps}
    assert all(s.response["invocations"][0]["prompt"] in blind and "can't" in s.response["text"] for s in free)
    # an attached picture with a request for its sound or music is never an edit
    assert not [s for s in samples if "image-editing" in s.tasks]


def test_derived_pictures_follow_the_documented_rule() -> None:
    c = builtin_corpora()
    by_request = {d.request: d for d in c.derived}
    samples = _one_maker("derived", 150)
    assert {s.tasks for s in samples} == {("image-editing",), ("text-to-image",)}
    for s in samples:
        assert [m.modality for m in s.media] == ["image"]
        inv = s.response["invocations"][0]
        item = next(d for r, d in by_request.items() if r.lower() in s.instruction.lower())
        assert (inv["task"], inv["prompt"]) == (item.task, item.prompt)
        assert inv.get("inputs") == (["image_1"] if item.task == "image-editing" else None)
        assert s.kind == ("editing" if item.task == "image-editing" else "reasoning")


def test_multi_output_requests_have_exactly_the_asked_outputs() -> None:
    samples = _one_maker("multi", 300)
    with_question = [s for s in samples if s.source["pool"].endswith(".multi_q")]
    assert with_question and len(with_question) < len(samples)
    answers = {q.answer for q in builtin_corpora().questions}
    for s in with_question:
        assert len(s.tasks) == 1 and any(s.response["text"].startswith(a) for a in answers)
    for s in samples:
        outer = s.source["pool"].rsplit(".", 1)[1]
        want = 1 if outer == "multi_q" else int(outer[-1])
        assert len(s.response["invocations"]) == want == len(s.source["template"].split(" | ")[1 : want + 1])


def test_questions_about_attached_media_are_answered_in_text(default_run: list[Sample]) -> None:
    attached = [s for s in default_run if s.source["maker"] == "describe"]
    assert attached and all(not s.tasks and "can't" in s.response["text"] for s in attached)


def test_the_default_mix_favours_questions_and_attached_media() -> None:
    assert set(DEFAULT_MIX) >= {"derived", "cross", "question", "spoken_answer"}
    total = sum(DEFAULT_MIX.values())
    assert DEFAULT_MIX["question"] == max(DEFAULT_MIX.values())
    assert (DEFAULT_MIX["speech"] + DEFAULT_MIX["spoken_answer"]) / total < 0.1
    attached_other = DEFAULT_MIX["cross"] + DEFAULT_MIX["derived"] + DEFAULT_MIX["media_request"]
    assert attached_other / total > 0.2


def test_phrasings_file_parses_as_toml() -> None:
    raw = tomllib.loads((CORPORA / "phrasings.toml").read_text())
    assert set(raw["families"]) == set(builtin_corpora().families) - {"train", "test"}


# -- plain text requests that are not questions ------------------------------------------------------


def test_plain_requests_are_answered_in_text_with_their_own_answer() -> None:
    """rewrite / translate / write a note... (``requests.txt``): no tool, the corpus's answer, never a wrapper
    that turns them into questions; about one in six held out by content."""
    c = builtin_corpora()
    assert len(c.requests) >= 300
    answers = {q.question.lower(): q.answer for q in c.requests}
    samples = _one_maker("request", 200)
    assert len(samples) == 200
    for s in samples:
        assert not s.tasks and s.response["invocations"] == [] and s.kind == "text-only"
        asked = [q for q in answers if q in s.instruction.lower()]
        assert asked and s.response["text"] == answers[max(asked, key=len)], s.instruction
    held = TemplateEngine(seed=4, recipe=Recipe(mix={"request": 1})).generate("test", 40).samples
    assert held and not {s.instruction for s in held} & {s.instruction for s in samples}
    media_words = re.compile(
        r"\b(photo|picture|image|painting|logo|album|song|lyrics|band|voice\w*|video|film|podcast|speech|toast|"
        r"recording|radio|narrat\w*|read (it )?out)s?\b",
        re.I,
    )
    assert sum(bool(media_words.search(q.question)) for q in c.requests) >= len(c.requests) // 6  # counter-examples


def test_a_corpora_folder_without_requests_loads_and_the_maker_is_skipped(tmp_path: Path) -> None:
    folder = _copy(tmp_path)
    (folder / "requests.txt").unlink()
    c = load_corpora(folder)
    assert c.requests == ()
    result = TemplateEngine(c, seed=1, recipe=Recipe(mix={"request": 1, "question": 1})).generate("train", 30)
    assert {s.source["maker"] for s in result.samples} == {"question"}
    (folder / "requests.txt").write_text("Rewrite this nicely: go away || Could you give me some space, please?\n")
    assert load_corpora(folder).requests[0].answer == "Could you give me some space, please?"
    (folder / "requests.txt").write_text("Translate hi into French ||\n")
    with pytest.raises(DatasetError, match=r"requests\.txt:1: expected 2 non-empty fields"):
        load_corpora(folder)


# -- the user's background before a request (contexts.txt) -------------------------------------------


def test_background_goes_before_requests_and_never_changes_what_is_asked(tmp_path: Path) -> None:
    """With ``context_p`` a sentence of the user's background (held out by content) comes before requests of
    every maker but follow-ups; the samples are otherwise those of ``context_p=0``, which are unchanged by the
    file's presence (its own random stream)."""
    folder = _copy(tmp_path)
    lines = [f"Background number {n} about my little shop." for n in range(60)]
    (folder / "contexts.txt").write_text("# test backgrounds\n" + "\n".join(lines) + "\n")
    with_file = load_corpora(folder)
    assert len(with_file.contexts) == 60
    (folder / "contexts.txt").unlink()
    without = load_corpora(folder)
    assert without.contexts == ()
    mix = {"image": 1, "question": 1, "speech": 1, "followup": 1, "cross": 1}

    def run(corpora: object, p: float, split: str = "train") -> list[Sample]:
        return TemplateEngine(corpora, seed=3, recipe=Recipe(mix=mix, context_p=p)).generate(split, 80).samples

    plain = run(without, 0.0)
    assert [s.to_dict() for s in run(with_file, 0.0)] == [s.to_dict() for s in plain]
    framed = run(with_file, 1.0)
    assert len(framed) == len(plain)
    answer_of = {s.instruction.lower(): json_key(s) for s in plain}
    same = 0
    for s in framed:
        starts = [c for c in with_file.contexts if s.instruction.lower().startswith(c.lower())]
        if s.source["maker"] == "followup":
            assert not starts
            continue
        assert starts, s.instruction
        rest = s.instruction[len(starts[0]) + 1 :].lower()
        if rest in answer_of:  # the same request without the background: the same answer
            assert answer_of[rest] == json_key(s), s.instruction
            same += 1
    assert same >= 0.6 * len(framed)  # the drafts are those of the plain run (dedupe may differ a little)

    def seen(samples: list[Sample]) -> set[str]:
        return {c for s in samples for c in with_file.contexts if s.instruction.lower().startswith(c.lower())}

    train_seen, test_seen = seen(framed), seen(run(with_file, 1.0, "test"))
    assert test_seen and not train_seen & test_seen  # held out by content, like questions


def json_key(sample: Sample) -> str:
    import json

    return json.dumps(sample.response, sort_keys=True)


def test_the_shipped_backgrounds_ask_for_nothing() -> None:
    """``contexts.txt`` holds statements only: a background that asked for something would change the label."""
    contexts = builtin_corpora().contexts
    assert len(contexts) >= 300
    asking = re.compile(r"\?|\b(can|could|would) you\b|\bplease\b|\bi (need|want)\b|\bi'd like\b|\bhelp me\b", re.I)
    assert not [c for c in contexts if asking.search(c)]
    media = re.compile(
        r"\b(photo\w*|pictures?|pics?|images?|videos?|vlog\w*|film\w*|camera|podcast\w*|voices?|music\w*|songs?|"
        r"sing\w*|band|choir|record\w*|channel|posters?|audio|sound\w*|slides?|slideshow|draw\w*|paint\w*|"
        r"illustrat\w*|youtube|tiktok|instagram|piano|guitar|cello|violin|drums?|radio|narrat\w*|clips?|art)\b",
        re.I,
    )
    assert sum(bool(media.search(c)) for c in contexts) >= len(contexts) // 4  # counter-examples: words, not asks
