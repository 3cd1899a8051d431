"""A LangChain ``create_agent`` with ChatModaVerse and the zoo's generators as tools.

By default the backend is a *scripted* LLM (``modaverse_agent.testing.ScriptedLLM``) so the agent loop is
deterministic: this path is about the LangChain wiring (tool calls out, ToolMessages with artifacts back,
a text-only final answer ending the loop). With ``--real`` the built-in default model decides which
tools to call and writes the final answer.

    python examples/langchain_agent.py --output-dir out/agent [--real]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from _models import add_real_flag, default_model, plugin_zoo
from langchain.agents import create_agent
from langchain_core.messages import AIMessage, HumanMessage, ToolMessage

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


def backend(real: bool) -> Any:
    """The built-in default model when ``real``, else the scripted plan-then-answer LLM."""
    return default_model() if real else ScriptedLLM(PLAN, ANSWER)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output-dir", type=Path, default=Path("outputs/agent"))
    parser.add_argument("--request", default="Draw a red kite and give me the sound of wind.")
    add_real_flag(parser)
    args = parser.parse_args()
    args.output_dir.mkdir(parents=True, exist_ok=True)

    zoo = plugin_zoo()
    model = ChatModaVerse(backend=backend(args.real), zoo=zoo)
    agent = create_agent(model, zoo_tools(zoo, output_dir=args.output_dir), system_prompt="You make media.")
    result = agent.invoke({"messages": [HumanMessage(args.request)]})
    messages = result["messages"]
    artifacts = [a for m in messages if isinstance(m, ToolMessage) for a in (m.artifact or [])]
    print(
        json.dumps(
            {
                "answer": messages[-1].content,
                "steps": [
                    {
                        "type": m.type,
                        "text": m.text,
                        "tool_calls": [{"name": c["name"], "args": c["args"]} for c in m.tool_calls],
                    }
                    if isinstance(m, AIMessage)
                    else {"type": m.type, "text": m.text}
                    for m in messages
                ],
                "artifacts": [
                    {"modality": a.modality, "path": str(a.path), "generator": a.generator} for a in artifacts
                ],
            }
        )
    )


if __name__ == "__main__":
    main()
