"""The zoo panel of the web page: which generator serves each task, which are untrained, a switch per task."""

from __future__ import annotations

from typing import Any

from ..zoo import Zoo


def _plain(text: str) -> str:
    """``text`` on one line, safe in Markdown."""
    return text.replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ")


def zoo_markdown(zoo: Zoo) -> str:
    """The tasks and the generator serving each (untrained ones flagged), then how to make a choice stick."""
    tasks = zoo.tasks()
    if not tasks:
        return "No generators installed: answers are text only. Install a plugin (see `modaverse plugins`)."
    lines = []
    for task in tasks:
        gen = zoo.generator_for(task)
        weights = " ⚠ **untrained** (placeholder output)" if gen.untrained else ""
        lines.append(f"- **{_plain(task)}** → `{_plain(gen.name)}`{weights}")
    out = "\n".join(lines)
    if any(len(zoo.candidates(t)) > 1 for t in tasks):
        out += (
            "\n\nA switch below applies to this tab's next answer; to keep a choice for every session run "
            "`modaverse zoo set TASK GENERATOR`."
        )
    return out


def zoo_hints(zoo: Zoo) -> str:
    """For every untrained generator installed: the command that points it at real weights ("" for none)."""
    hints = [
        f"- {_plain(g.task)} ({_plain(g.name)}): `{g.real_weights_hint()}`"
        for g in zoo.generators
        if g.untrained and g.real_weights_hint()
    ]
    if not hints:
        return ""
    return "Run in a terminal, then restart the page:\n" + "\n".join(hints)


def _label(gen: Any) -> str:
    return f"{gen.name} (untrained)" if gen.untrained else gen.name


def zoo_switches(zoo: Zoo) -> dict[str, Any]:
    """A ``gr.Dropdown`` (in the current Blocks context) per task that more than one generator serves."""
    import gradio as gr

    out = {}
    for task in zoo.tasks():
        candidates = zoo.candidates(task)
        if len(candidates) < 2:
            continue  # nothing to switch: the list above names it
        current = zoo.generator_for(task)
        out[task] = gr.Dropdown(
            choices=[(_label(g), g.name) for g in candidates],
            value=current.name,
            label=task,
            info=f"{len(candidates)} installed: applies to this tab's next answer",
            interactive=True,
            elem_id=f"zoo-{task}",
        )
    return out
