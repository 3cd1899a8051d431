"""Swap the generator behind ``text-to-image`` through the zoo config, with no retraining.

The LLM names a *task* and writes a prompt, never a model. So one meta-response, made once by a tiny
random-weight ModaVerse (with ``--real``: by the built-in default model) forced to call ``text-to-image``,
is dispatched twice: first to the echo plugin's ``echo-image``, then, after ``[tasks] text-to-image =
"stripes-image"`` is saved in the zoo config (what ``modaverse zoo set text-to-image stripes-image``
does), to a second generator defined here. Same meta-response, different generator, different picture.

    python examples/swap_generator.py --output-dir out/swap [--real]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from _models import add_real_flag, example_model

from modaverse_agent import GenerationRequest, Generator, hookimpl, plugins
from modaverse_agent.agent import ModaVerseAgent
from modaverse_agent.artifacts import Artifact
from modaverse_agent.chat_model import ChatModaVerse
from modaverse_agent.testing import FixedPlanLLM
from modaverse_agent.tools import zoo_tools
from modaverse_agent.zoo import Zoo, ZooConfig


class StripesImage(Generator):
    """A second text-to-image generator: vertical stripes whose colours come from the prompt."""

    name = "stripes-image"
    task = "text-to-image"
    modality = "image"
    description = "Paints vertical stripes coloured by the prompt."
    args_schema: dict[str, Any] = {"type": "object", "properties": {}, "additionalProperties": True}  # noqa: RUF012

    def run(self, request: GenerationRequest) -> list[Artifact]:
        import numpy as np

        seed = sum(request.prompt.encode()) % 2**32
        colours = np.random.default_rng(seed).integers(0, 256, size=(8, 3), dtype=np.uint8)
        image = np.repeat(np.repeat(colours[None, :, :], 64, axis=0), 8, axis=1)
        return [self.artifact(request, request.output.write_image("stripes", image))]


class StripesPlugin:
    """Registers StripesImage (an installed plugin would do this through its entry point)."""

    @hookimpl
    def register_generators(self, register: Any) -> None:
        register(StripesImage())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output-dir", type=Path, default=Path("outputs/swap"))
    add_real_flag(parser)
    args = parser.parse_args()
    args.output_dir.mkdir(parents=True, exist_ok=True)
    plugins.load_plugins()
    plugins.pm.register(StripesPlugin(), name="stripes")

    config_path = args.output_dir / "zoo.toml"
    ZooConfig(tasks={"text-to-image": "echo-image"}).save(config_path)
    zoo = Zoo.from_plugins(config=config_path)
    chat = ChatModaVerse(backend=example_model(args.real, args.output_dir), zoo=zoo, max_tokens=160)
    message = chat.bind_tools(zoo_tools(zoo), tool_choice="text-to-image").invoke("Draw a lighthouse.")
    raw = json.dumps(message.response_metadata["meta_response"])  # the one meta-response, reused as is

    runs = {}
    for choice in ("echo-image", "stripes-image"):
        config = ZooConfig.load(config_path)
        config.tasks["text-to-image"] = choice  # = `modaverse zoo set text-to-image <choice>`
        config.save()
        agent = ModaVerseAgent(FixedPlanLLM(raw), Zoo.from_plugins(config=config_path), output_dir=args.output_dir)
        response = agent.run("Draw a lighthouse.")
        runs[choice] = [{"generator": a.generator, "path": str(a.path)} for a in response.artifacts]
    print(json.dumps({"meta_response": json.loads(raw), "runs": runs}))


if __name__ == "__main__":
    main()
