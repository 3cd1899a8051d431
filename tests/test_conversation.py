"""Conversations: earlier turns and media stay in context, generated files become media, save/load round-trips."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from modaverse_agent.agent import ModaVerseAgent
from modaverse_agent.conversation import Conversation, ConversationError
from modaverse_agent.response import ResponseDone, TextDelta
from modaverse_agent.testing import ScriptedLLM
from modaverse_agent.zoo import Zoo

DRAW = {"text": "A cat.", "invocations": [{"task": "text-to-image", "prompt": "a cat"}]}
EDIT = {
    "text": "Watercolor.",
    "invocations": [{"task": "image-editing", "prompt": "watercolor", "inputs": ["image_1"]}],
}


@pytest.fixture
def conv(llm: ScriptedLLM, echo_zoo: Zoo, tmp_path: Path) -> Conversation:
    return Conversation(ModaVerseAgent(llm, echo_zoo, output_dir=tmp_path / "out", seed=0))


def test_the_second_turn_edits_the_picture_the_first_turn_made(conv: Conversation, llm: ScriptedLLM) -> None:
    llm.enqueue(DRAW)
    first = conv.send("draw a cat")
    assert first.ok and [i for i, _ in conv.media] == ["image_1"]
    assert conv.records[0].origin == "generated" and conv.records[0].path == str(first.artifacts[0].path)
    llm.enqueue(EDIT)
    second = conv.send("now make it a watercolor")
    assert second.ok and second.artifacts[0].task == "image-editing"
    asked = llm.history[-1]
    assert [i for i, _ in asked.media] == ["image_1"]  # the generated picture is offered like an attachment
    assert "image_1" in json.dumps(asked.schema)
    assert [t.role for t in asked.history] == ["user", "assistant"]
    assert "[made: image_1]" in asked.history[1].text and "A cat." in asked.history[1].text
    assert [i for i, _ in conv.media] == ["image_1", "image_2"] and conv.turns[-1].media == ["image_2"]


def test_attachments_keep_their_ids_across_turns_and_bad_ones_are_reported(
    conv: Conversation, llm: ScriptedLLM, png_file: Path, tmp_path: Path
) -> None:
    bad = tmp_path / "bad.jpg"
    bad.write_text("not a picture")
    llm.enqueue({"text": "I see it.", "invocations": []})
    r = conv.send("look", [png_file, bad])
    assert [e.stage for e in r.errors] == ["media"] and "input 2" in r.errors[0].message
    assert conv.turns[0].media == ["image_1"] and "[attached: image_1]" in conv.history()[0].text
    llm.enqueue({"text": "Still there.", "invocations": []})
    conv.send("and now?")
    assert [i for i, _ in llm.history[-1].media] == ["image_1"]


def test_a_turn_streams_text_then_files(conv: Conversation, llm: ScriptedLLM) -> None:
    llm.enqueue(DRAW)
    events = list(conv.stream("draw a cat"))
    assert isinstance(events[0], TextDelta) and events[0].text == "A cat."
    assert [e.kind for e in events] == ["text", "plan", "invocation-start", "invocation", "done"]
    assert isinstance(events[-1], ResponseDone) and len(conv.turns) == 2


def test_save_and_load_round_trip_with_in_memory_media(
    conv: Conversation, llm: ScriptedLLM, echo_zoo: Zoo, tmp_path: Path, png_file: Path
) -> None:
    llm.enqueue(DRAW)
    conv.send("draw", [png_file.read_bytes()])  # an upload that exists only in memory
    path = conv.save(tmp_path / "chat.json")
    saved = json.loads(path.read_text())
    assert saved["version"] == 1 and [m["id"] for m in saved["media"]] == ["image_1", "image_2"]
    assert Path(saved["media"][0]["path"]).parent == tmp_path / "chat.json.media"
    llm2 = ScriptedLLM(EDIT)
    again = Conversation.load(path, ModaVerseAgent(llm2, echo_zoo, output_dir=tmp_path / "out2"))
    assert [t.text for t in again.turns] == [t.text for t in conv.turns]
    assert again.send("make it a watercolor").ok
    assert [i for i, _ in llm2.history[-1].media] == ["image_1", "image_2"]


def test_clear_and_bad_files(conv: Conversation, llm: ScriptedLLM, tmp_path: Path) -> None:
    llm.enqueue(DRAW)
    conv.send("draw")
    conv.clear()
    assert conv.turns == [] and conv.media == []
    (tmp_path / "x.json").write_text("{not json")
    with pytest.raises(ConversationError, match="cannot read"):
        Conversation.load(tmp_path / "x.json", conv.agent)
    (tmp_path / "y.json").write_text(json.dumps({"version": 99}))
    with pytest.raises(ConversationError, match="not a conversation"):
        Conversation.load(tmp_path / "y.json", conv.agent)


def test_a_turn_stopped_early_keeps_what_it_made_and_the_history_alternates(
    conv: Conversation, llm: ScriptedLLM
) -> None:
    two = {
        "text": "Two.",
        "invocations": [{"task": "text-to-image", "prompt": "a"}, {"task": "text-to-image", "prompt": "b"}],
    }
    llm.enqueue(two)
    events = conv.stream("draw two")
    for event in events:
        if event.kind == "invocation":  # the reader stops after the first picture
            break
    events.close()
    assert [t.role for t in conv.turns] == ["user", "assistant"]
    assert conv.turns[1].text == "Two." and "stopped" in conv.turns[1].errors[0]
    assert [i for i, _ in conv.media] == ["image_1"] and len(conv.turns[1].artifacts) == 1


class _BlindLLM(ScriptedLLM):
    """A scripted model without a media encoder (it knows a medium is there, not what is in it)."""

    sees_media = False


def test_a_blind_model_names_only_the_users_media_it_could_not_read(
    echo_zoo: Zoo, tmp_path: Path, png_file: Path
) -> None:
    llm = _BlindLLM(DRAW, EDIT, {"text": "Both.", "invocations": []})
    conv = Conversation(ModaVerseAgent(llm, echo_zoo, output_dir=tmp_path / "out"))
    assert conv.send("draw a cat").notes == []  # no medium given yet
    edited = conv.send("now make it a watercolor")  # image_1 is the agent's own picture: nothing to confess
    assert edited.ok and not any("no media encoder" in n for n in edited.notes)
    both = conv.send("compare them with my photo", [png_file])  # image_3 is the user's
    (note,) = [n for n in both.notes if "no media encoder" in n]
    assert "did not see or hear image_3:" in note


class _PickyLLM(ScriptedLLM):
    """Refuses, as the real model's prompt check does, any prompt (instruction or history) holding a NUL."""

    def respond(self, request):  # type: ignore[no-untyped-def]
        from modaverse_agent.errors import RequestError

        if "\x00" in request.instruction or any("\x00" in t.text for t in request.history):
            raise RequestError("the instruction contains NUL characters; remove them")
        return super().respond(request)


def test_a_refused_message_does_not_stay_in_the_conversation(echo_zoo: Zoo, tmp_path: Path, png_file: Path) -> None:
    llm = _PickyLLM({"text": "Hello.", "invocations": []}, {"text": "Four.", "invocations": []})
    conv = Conversation(ModaVerseAgent(llm, echo_zoo, output_dir=tmp_path / "out", seed=0))
    conv.send("hi")
    refused = conv.send("ab\x00cd", [png_file])
    assert [e.stage for e in refused.errors] == ["request"] and any("not added" in n for n in refused.notes)
    assert [t.text for t in conv.turns] == ["hi", "Hello."] and conv.media == []  # nor its attachment
    assert conv.send("what is two plus two?").text == "Four."  # only that message was refused
    assert llm.history[-1].history[0].text == "hi" and len(llm.history[-1].history) == 2


def test_save_writes_absolute_paths_and_a_missing_file_costs_only_its_medium(
    conv: Conversation, llm: ScriptedLLM, png_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    llm.enqueue({"text": "I see it.", "invocations": []})
    llm.enqueue(DRAW)
    conv.send("look", [png_file.name])  # attached by the relative path typed
    conv.send("draw")
    path = conv.save("chat.json")
    saved = json.loads(path.read_text())
    assert saved["media"][0]["path"] == str(png_file) and Path(saved["media"][1]["path"]).is_absolute()
    monkeypatch.chdir(tmp_path / "out")
    assert [r.id for r in Conversation.load(tmp_path / "chat.json", conv.agent).records] == ["image_1", "image_2"]
    png_file.unlink()
    again = Conversation.load(tmp_path / "chat.json", conv.agent)
    assert [r.id for r in again.records] == ["image_1", "image_2"] and len(again.turns) == 4  # ids keep meaning
    assert len(again.warnings) == 1 and "image_1 (in.png)" in again.warnings[0]


def test_load_refuses_an_unknown_role_and_warns_of_a_dangling_reference(conv: Conversation, tmp_path: Path) -> None:
    turns = [
        {"role": "user", "text": "hi", "media": ["image_9"]},
        {"role": "assistant", "text": "hello"},
    ]
    (tmp_path / "ref.json").write_text(json.dumps({"version": 1, "turns": turns, "media": []}))
    loaded = Conversation.load(tmp_path / "ref.json", conv.agent)
    assert loaded.warnings == ["turn 1 refers to image_9, which the file does not hold"]
    assert loaded.turns[0].media == [] and "image_9" not in loaded.history()[0].text
    turns[1]["role"] = "wizard"
    (tmp_path / "role.json").write_text(json.dumps({"version": 1, "turns": turns, "media": []}))
    with pytest.raises(ConversationError, match='turn 2 has the role "wizard"'):
        Conversation.load(tmp_path / "role.json", conv.agent)
