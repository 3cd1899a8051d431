"""The zoo's generators as LangChain tools, usable with any LangChain chat model.

One tool per served task, named after the task (``text-to-image``), with the invocation's arguments
(``prompt``, ``inputs``, ``args``). Tools use ``response_format="content_and_artifact"``: the content
says what was made and where, the artifact is the list of :class:`~modaverse_agent.artifacts.Artifact`.
A failure comes back as the tool's content (``ToolException``), so an agent loop goes on.

A tool runs its generator as the agent runs an invocation (:func:`~modaverse_agent.invocation.run_with_timeout`):
in a worker thread, cancelled past ``timeout`` seconds (its files deleted); a failed invocation's files are
deleted, one that made no file is an error, and a file not of the generator's modality is dropped.
"""

from __future__ import annotations

import random
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from langchain_core.tools import BaseTool, StructuredTool, ToolException

from .artifacts import Artifact, OutputDir
from .errors import ModaVerseError
from .generators import GenerationRequest, Generator
from .invocation import CANCEL_GRACE_S, DEFAULT_TIMEOUT_S, InvocationFailed, check_timeout, run_with_timeout
from .media import MediaItem, load_media
from .meta_response import MAX_INPUTS, PROMPT_MAX_CHARS
from .schema_utils import describe_error, first_error, json_path
from .zoo import Zoo


def tool_args_schema(generator: Generator) -> dict[str, Any]:
    """The JSON Schema of a tool call's arguments for ``generator`` (an invocation without ``task``)."""
    inputs = {
        "type": "array",
        "items": {"type": "string", "maxLength": 4096},
        "maxItems": MAX_INPUTS,
        "description": "Input media: ids of the user's media (image_1) or local file paths.",
    }
    props: dict[str, Any] = {
        "prompt": {
            "type": "string",
            "minLength": 1,
            "maxLength": PROMPT_MAX_CHARS,
            "description": "What to make, written in the generator's prompt style.",
        },
        "args": {**generator.args_schema, "description": "Extra arguments."},
    }
    if generator.input_modalities:
        props["inputs"] = inputs
    return {
        "title": generator.task,
        "type": "object",
        "properties": props,
        "required": ["prompt"],
        "additionalProperties": False,
    }


class GeneratorTool:
    """Callable behind one tool: validates arguments, resolves inputs, runs the generator within ``timeout`` s."""

    def __init__(
        self,
        generator: Generator,
        output_dir: str | Path,
        media: Mapping[str, MediaItem],
        timeout: float = DEFAULT_TIMEOUT_S,
    ) -> None:
        self.generator = generator
        self.output_dir = Path(output_dir)
        self.media = media
        self.timeout = check_timeout(timeout)
        #: Seconds a call waits for a cancelled generator's thread to stop before it answers.
        self.cancel_grace = CANCEL_GRACE_S
        self.schema = tool_args_schema(generator)

    def _inputs(self, refs: Sequence[str]) -> list[MediaItem]:
        items = []
        for ref in refs:
            if ref in self.media:
                items.append(self.media[ref])
                continue
            try:
                items.append(load_media(ref))
            except ModaVerseError as e:
                known = sorted(self.media) or "none"
                raise ToolException(
                    f"input {ref!r} is neither a given media id (given: {known}) nor a readable file: {e}"
                ) from e
        return items  # their modality is checked by Generator.check before any weights load

    def __call__(self, **kwargs: Any) -> tuple[str, list[Artifact]]:
        err = first_error(kwargs, self.schema)
        if err is not None:
            raise ToolException(
                f"invalid arguments: {json_path(err.absolute_path) or 'arguments'} {describe_error(err)}"
            )
        args = dict(kwargs.get("args") or {})
        seed = args.get("seed") if isinstance(args.get("seed"), int) else random.randrange(2**31)
        try:
            inputs, cancel = self._inputs(kwargs.get("inputs") or ()), threading.Event()
            output = OutputDir(self.output_dir).for_invocation(cancel)
            request = GenerationRequest(kwargs["prompt"], output, args, inputs, seed, cancel=cancel)
            artifacts, problem = run_with_timeout(
                self.generator, request, self.timeout, self.cancel_grace, raise_with="zoo_tools(..., timeout=...)"
            )
        except ToolException:
            raise
        except InvocationFailed as e:  # raised, timed out or made nothing: the calling model reads why
            raise ToolException(str(e)) from e
        except Exception as e:  # an unreadable input or unusable output directory reports back to the calling model
            raise ToolException(f"{self.generator.name} failed: {type(e).__name__}: {e}") from e
        refused = f"; {problem}" if problem else ""  # files dropped (outside the output dir, wrong modality)
        made = ", ".join(f"{a.modality} {a.path}" for a in artifacts)
        note = ""
        if artifacts and self.generator.untrained:
            note = (
                f" (untrained tiny weights: the output is a placeholder; for real weights run: "
                f"{self.generator.real_weights_hint()})"
            )
        return f"{self.generator.task} via {self.generator.name} made {made}{note}{refused}", artifacts


def generator_tool(
    generator: Generator,
    *,
    output_dir: str | Path = "outputs",
    media: Mapping[str, MediaItem] | None = None,
    timeout: float = DEFAULT_TIMEOUT_S,
) -> BaseTool:
    """A LangChain tool running ``generator``; ``media`` maps ids (``image_1``) to the user's media.

    A call that runs past ``timeout`` seconds is cancelled and answers with an error saying so.
    """
    call = GeneratorTool(generator, output_dir, media or {}, timeout)
    return StructuredTool.from_function(
        func=call.__call__,  # a bound method: langgraph's ToolNode reads its type hints (an instance has none)
        name=generator.task,
        description=f"{generator.description} (generator: {generator.name})",
        args_schema=call.schema,
        response_format="content_and_artifact",
        handle_tool_error=True,
        metadata={"generator": generator.name, "task": generator.task, "modality": generator.modality},
    )


def zoo_tools(
    zoo: Zoo,
    *,
    output_dir: str | Path = "outputs",
    media: Mapping[str, MediaItem] | None = None,
    tasks: Sequence[str] | None = None,
    timeout: float = DEFAULT_TIMEOUT_S,
) -> list[BaseTool]:
    """One tool per served task (or per ``tasks``), each running the generator the zoo chose within ``timeout`` s."""
    return [
        generator_tool(zoo.generator_for(t), output_dir=output_dir, media=media, timeout=timeout)
        for t in (tasks if tasks is not None else zoo.tasks())
    ]
