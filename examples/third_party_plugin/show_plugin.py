"""Show an installed third-party plugin in the zoo and in the system prompt, then ring it once.

With ``--real`` the built-in default model is then asked for a chime, with every task of the zoo on offer,
to show what it makes of a task it was never trained on.

pip install -e examples/third_party_plugin
python examples/third_party_plugin/show_plugin.py --output-dir out/chime [--real]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from modaverse_agent import plugins
from modaverse_agent.model.prompting import render_system_prompt
from modaverse_agent.tools import zoo_tools
from modaverse_agent.zoo import Zoo, ZooConfig


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output-dir", type=Path, default=Path("outputs/chime"))
    parser.add_argument(
        "--real",
        action="store_true",
        help="also ask the built-in default model (Gemma 3 270M + the shipped adapter) for a chime",
    )
    parser.add_argument("--request", default="Ring a high, bright chime.")
    args = parser.parse_args()
    args.output_dir.mkdir(parents=True, exist_ok=True)

    zoo = Zoo.from_plugins(config=ZooConfig())  # loads every installed entry point of group modaverse_agent
    if "text-to-chime" not in zoo.tasks():
        failed = [f"{f.name}: {f.error}" for f in plugins.failures]
        raise SystemExit(
            f"text-to-chime is not in the zoo (tasks: {zoo.tasks()}, failed plugins: {failed or 'none'}); "
            "install the plugin with `pip install -e examples/third_party_plugin`"
        )
    system = render_system_prompt(zoo.task_specs())
    [chime] = zoo_tools(zoo, output_dir=args.output_dir, tasks=["text-to-chime"])
    message = chime.invoke(
        {"type": "tool_call", "id": "1", "name": "text-to-chime", "args": {"prompt": "a high, bright chime"}}
    )
    info = next(p for p in plugins.plugin_info() if p["name"] == "chime")
    shown: dict[str, Any] = {
        "plugin": {"name": info["name"], "distribution": info["distribution"], "hooks": info["hooks"]},
        "tasks": zoo.tasks(),
        "generator": zoo.generator_for("text-to-chime").name,
        "in_system_prompt": "text-to-chime" in system,
        "files": [str(a.path) for a in message.artifact],
    }
    if args.real:
        shown["real"] = ask_default_model(zoo, args.request, args.output_dir)
    print(system)
    print(json.dumps(shown))


def ask_default_model(zoo: Zoo, request: str, output_dir: Path) -> dict[str, Any]:
    """What the built-in default model answers to ``request`` with every task of ``zoo`` on offer, its tool
    calls run."""
    from modaverse_agent.chat_model import ChatModaVerse
    from modaverse_agent.default_model import load_default_model

    tools = {t.name: t for t in zoo_tools(zoo, output_dir=output_dir)}
    answer = ChatModaVerse(backend=load_default_model(), zoo=zoo).invoke(request)
    results = [tools[c["name"]].invoke({**c, "type": "tool_call"}) for c in answer.tool_calls]
    return {
        "text": answer.content,
        "tool_calls": [{"name": c["name"], "args": c["args"]} for c in answer.tool_calls],
        "files": [str(a.path) for r in results for a in (r.artifact or [])],
    }


if __name__ == "__main__":
    main()
