"""The system prompt describes a task the model was trained on in the words it was trained with
(``ModaVerseConfig.trained_tasks``), whatever the installed generator says: the default model then meets, through
the zoo, the prompt its training and its evaluation used."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from modaverse_agent import plugins
from modaverse_agent.errors import ModelError
from modaverse_agent.meta_response import TaskSpec
from modaverse_agent.model.config import ModaVerseConfig
from modaverse_agent.model.prompting import Prompter, render_system_prompt, spec_dict, spec_from_dict
from modaverse_agent.training.tasks import STANDARD_TASKS
from modaverse_agent.zoo import Zoo, ZooConfig

DEFAULT_DIR = Path(__file__).resolve().parents[1] / "modaverse_agent" / "weights" / "default"
ARGS = {"type": "object", "properties": {"steps": {"type": "integer"}}, "additionalProperties": False}


def _prompter(trained: list[TaskSpec] | None) -> Prompter:
    config = ModaVerseConfig(llm="tiny", trained_tasks=None if trained is None else [spec_dict(t) for t in trained])
    return Prompter(tokenizer=None, config=config, max_prompt_tokens=4096)


def test_a_trained_task_is_described_in_its_training_words_and_others_as_given() -> None:
    served = [
        TaskSpec("text-to-image", "Makes pictures with SDXL (fast).", "image", ARGS),
        TaskSpec("text-to-smell", "Makes a smell.", "smell"),
        TaskSpec("get_weather", "The weather in a city.", "text", ARGS, kind="function"),
    ]
    trained = [TaskSpec("text-to-image", "Draws a picture from a description.", "image")]
    prompt = _prompter(trained).system_prompt(served)
    assert "- text-to-image: Draws a picture from a description. Output: image." in prompt
    assert "SDXL" not in prompt and "- text-to-smell: Makes a smell." in prompt
    assert "- get_weather: The weather in a city." in prompt and '"steps"' in prompt  # the function's own schema
    assert _prompter(None).system_prompt(served) == render_system_prompt(served)  # older model dirs: as given


def test_trained_tasks_are_checked_and_round_trip(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="trained_tasks"):
        ModaVerseConfig(llm="tiny", trained_tasks=[{"description": "no name"}])
    config = ModaVerseConfig(llm="tiny", trained_tasks=[spec_dict(t) for t in STANDARD_TASKS])
    config.save(tmp_path)
    assert ModaVerseConfig.load(tmp_path).trained_tasks == json.loads(json.dumps(config.trained_tasks))
    assert [spec_from_dict(d) for d in config.trained_tasks] == list(STANDARD_TASKS)


def test_the_default_model_sees_its_training_prompt_through_the_installed_zoo() -> None:
    plugins.load_plugins(entry_points=True)
    zoo = Zoo.from_plugins(config=ZooConfig())
    assert sorted(zoo.tasks()) == sorted(t.task for t in STANDARD_TASKS), "the built-in plugins are not installed"
    config = ModaVerseConfig.load(DEFAULT_DIR)
    prompter = Prompter(tokenizer=None, config=config, max_prompt_tokens=4096)
    assert render_system_prompt(zoo.task_specs()) != render_system_prompt(STANDARD_TASKS)  # the generators' words
    assert prompter.system_prompt(zoo.task_specs()) == render_system_prompt(STANDARD_TASKS)
