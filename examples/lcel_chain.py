"""An LCEL chain embedding ChatModaVerse: prompt | chat model (forced text-to-image call) | run the tool calls.

Runs on a tiny random-weight ModaVerse by default, so the generated prompt text is noise; with ``--real``
the built-in default model writes the prompt. The zoo is the installed plugins' (with
``MODAVERSE_LOAD_PLUGINS=echo`` the echo plugin stands in for Stable Diffusion).

    python examples/lcel_chain.py --output-dir out/lcel [--real]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from _models import add_real_flag, example_model, plugin_zoo
from langchain_core.messages import AIMessage
from langchain_core.prompts import ChatPromptTemplate
from langchain_core.runnables import RunnableLambda

from modaverse_agent.chat_model import ChatModaVerse
from modaverse_agent.tools import zoo_tools


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output-dir", type=Path, default=Path("outputs/lcel"))
    parser.add_argument("--subject", default="a lighthouse at dusk")
    add_real_flag(parser)
    args = parser.parse_args()
    args.output_dir.mkdir(parents=True, exist_ok=True)

    zoo = plugin_zoo()
    tools = {t.name: t for t in zoo_tools(zoo, output_dir=args.output_dir)}
    chat = ChatModaVerse(backend=example_model(args.real, args.output_dir), zoo=zoo, max_tokens=160)
    prompt = ChatPromptTemplate.from_messages(
        [("system", "You illustrate things."), ("human", "Draw {subject} for a postcard.")]
    )

    def run_tools(message: AIMessage) -> dict[str, Any]:
        results = [tools[c["name"]].invoke({**c, "type": "tool_call"}) for c in message.tool_calls]
        return {"message": message, "results": results}

    chain = prompt | chat.bind_tools(list(tools.values()), tool_choice="text-to-image") | RunnableLambda(run_tools)
    result = chain.invoke({"subject": args.subject})
    message: AIMessage = result["message"]
    print(
        json.dumps(
            {
                "text": message.content,
                "calls": [c["name"] for c in message.tool_calls],
                "tool_calls": [{"name": c["name"], "args": c["args"]} for c in message.tool_calls],
                "tool_results": [r.content for r in result["results"]],
                "files": [str(a.path) for r in result["results"] for a in (r.artifact or [])],
            }
        )
    )


if __name__ == "__main__":
    main()
