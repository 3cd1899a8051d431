"""A LangChain ``create_agent`` with ChatModaVerse and the zoo's generators as tools.

The backend is a *scripted* LLM (``modaverse_agent.testing.ScriptedLLM``) so the agent loop is
deterministic: this example is about the LangChain wiring (tool calls out, ToolMessages with
artifacts back, a text-only final answer ending the loop). Swap in a trained model with
``ChatModaVerse(backend=ModaVerseModel.from_pretrained(DIR))``.

    python examples/langchain_agent.py --output-dir out/agent
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from _tiny import echo_zoo
from langchain.agents import create_agent
from langchain_core.messages import HumanMessage, ToolMessage

from modaverse_agent.chat_model import ChatModaVerse
from modaverse_agent.testing import ScriptedLLM
from modaverse_agent.tools import zoo_tools

PLAN = {
    "text": "Drawing the kite and recording the wind.",
    "invocations": [
        {"task": "text-to-image", "prompt": "a red kite over green hills"},
        {"task": "text-to-audio", "prompt": "gusts of wind", "args": {"duration": 1}},
    ],
}
ANSWER = {"text": "Here are the kite picture and the wind sound.", "invocations": []}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output-dir", type=Path, default=Path("outputs/agent"))
    args = parser.parse_args()
    args.output_dir.mkdir(parents=True, exist_ok=True)

    zoo = echo_zoo()
    model = ChatModaVerse(backend=ScriptedLLM(PLAN, ANSWER), zoo=zoo)
    agent = create_agent(model, zoo_tools(zoo, output_dir=args.output_dir), system_prompt="You make media.")
    result = agent.invoke({"messages": [HumanMessage("Draw a red kite and give me the sound of wind.")]})
    artifacts = [a for m in result["messages"] if isinstance(m, ToolMessage) for a in (m.artifact or [])]
    print(
        json.dumps(
            {
                "answer": result["messages"][-1].content,
                "artifacts": [
                    {"modality": a.modality, "path": str(a.path), "generator": a.generator} for a in artifacts
                ],
            }
        )
    )


if __name__ == "__main__":
    main()
