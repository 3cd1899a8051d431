"""The zoo panel of the web page: which generator serves each task, which are untrained, a switch per task."""

from __future__ import annotations

from typing import Any

from ..zoo import Zoo


def _cell(text: str) -> str:
    return text.replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ")


def zoo_markdown(zoo: Zoo) -> str:
    """A table of the tasks and their generators (untrained ones flagged), then how to make a choice stick."""
    tasks = zoo.tasks()
    if not tasks:
        return "No generators installed: answers are text only. Install a plugin (see `modaverse plugins`)."
    lines, hints = [], []
    for task in tasks:
        gen = zoo.generator_for(task)
        weights = " ⚠ **untrained** (placeholder output)" if gen.untrained else ""
        lines.append(f"- **{_cell(task)}** → `{_cell(gen.name)}`{weights}")
        if gen.untrained and gen.real_weights_hint():
            hints.append(f"- {_cell(task)}: `{gen.real_weights_hint()}`")
    out = "\n".join(lines)
    if hints:
        out += "\n\nReal weights for the untrained ones (run in a terminal, then restart):\n" + "\n".join(hints)
    if any(len(zoo.candidates(t)) > 1 for t in tasks):
        out += (
            "\n\nA switch below applies to this tab's next answer; to keep a choice for every session run "
            "`modaverse zoo set TASK GENERATOR`."
        )
    return out


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
