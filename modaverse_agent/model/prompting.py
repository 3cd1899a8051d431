"""Prompts: the system prompt from ``prompts/system.j2`` and the token ids of one request.

Formats (``ModaVerseConfig.prompt_format``):

- ``chat``: the LLM's own chat template with a system and a user message. A template that rejects the
  system role (some do) gets the system prompt at the top of the user message instead.
- ``plain`` (for LLMs without a chat template)::

      {system prompt}

      ### Human: {media lines}{instruction}
      ### Assistant:

- ``legacy``: the official release's ``### Human: {media} {instruction}\\n### Assistant:`` with no system
  prompt, each text piece tokenized stripped and on its own, as the release did.
- ``auto``: ``chat`` when the tokenizer has a chat template, else ``plain``.

In ``chat`` and ``plain`` each media item is a line ``image_1: <start><placeholder>...<end>``; in
``legacy`` items are ``<Media><placeholder></Media>`` side by side. Long prompts are refused, not cut:
a cut instruction silently changes what is asked, so a prompt over ``max_prompt_tokens`` is a
``ModelError`` saying by how much to shorten it.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any

from ..errors import ModelError, RequestError
from ..meta_response import EMPTY_ARGS, TaskSpec
from .config import ModaVerseConfig
from .splice import IGNORE_INDEX

logger = logging.getLogger(__name__)

PLAIN_TEMPLATE = "{system}\n\n### Human: {media}{instruction}\n### Assistant:"
LEGACY_TEMPLATE = "### Human: {media} {instruction}\n### Assistant:"
_MEDIA_MARK = "\x00MEDIA{}\x00"


@cache
def _environment() -> Any:
    import jinja2

    env = jinja2.Environment(
        undefined=jinja2.StrictUndefined, keep_trailing_newline=False, trim_blocks=False, autoescape=False
    )
    env.filters["to_json"] = lambda value: json.dumps(value, ensure_ascii=False)
    return env


@cache
def load_template(name: str) -> Any:
    """A Jinja template from the ``modaverse_agent.prompts`` package data (StrictUndefined)."""
    text = resources.files("modaverse_agent.prompts").joinpath(name).read_text(encoding="utf-8")
    return _environment().from_string(text)


def spec_dict(spec: TaskSpec) -> dict[str, Any]:
    """What the system prompt says about a task, as a JSON-ready dict (``ModaVerseConfig.trained_tasks`` items)."""
    return {
        "task": spec.task,
        "description": spec.description,
        "modality": spec.modality,
        "args_schema": dict(spec.args_schema),
        "input_modalities": list(spec.input_modalities),
    }


def spec_from_dict(d: Mapping[str, Any]) -> TaskSpec:
    """The TaskSpec of a :func:`spec_dict` dict (a ``ModaVerseConfig.trained_tasks`` item)."""
    args = d.get("args_schema") or dict(EMPTY_ARGS)
    return TaskSpec(d["task"], d["description"], d.get("modality", "text"), args, tuple(d.get("input_modalities", ())))


def render_system_prompt(tasks: Sequence[TaskSpec], *, output_format: str = "json") -> str:
    """The system prompt listing ``tasks`` (task, description, output, input media, argument schema)."""
    specs = [spec_dict(t) for t in sorted(tasks, key=lambda s: s.task)]
    text = load_template("system.j2").render(tasks=specs, output_format=output_format, media_example="image_1")
    return text.strip() + "\n"


@dataclass
class Prompter:
    """Turns (instruction, media ids, tasks) into prompt token ids for one tokenizer and config."""

    tokenizer: Any
    config: ModaVerseConfig
    max_prompt_tokens: int
    #: Ids that end an answer (a training target is cut after the first); default: the EOS token.
    stop_ids: Sequence[int] = ()

    @property
    def format(self) -> str:
        """The resolved prompt format (``auto`` decided by the tokenizer)."""
        fmt = self.config.prompt_format
        if fmt == "auto":
            return "chat" if getattr(self.tokenizer, "chat_template", None) else "plain"
        if fmt == "chat" and not getattr(self.tokenizer, "chat_template", None):
            raise ModelError("prompt_format is `chat` but the tokenizer has no chat template; use `plain` or `auto`")
        return fmt

    def _item(self) -> str:
        c = self.config
        return c.media_start_token + c.media_placeholder_token * c.num_media_tokens + c.media_end_token

    def media_lines(self, media_ids: Sequence[str]) -> str:
        """``image_1: <start><placeholder><end>`` lines, one per item."""
        return "".join(f"{mid}: {self._item()}\n" for mid in media_ids)

    def check_instruction(self, instruction: str, media_ids: Sequence[str]) -> None:
        """Refuse empty requests and instructions that smuggle media tokens in."""
        if not instruction.strip() and not media_ids:
            raise RequestError("the instruction is empty and no media were given: nothing to respond to")
        c = self.config
        for token in (c.media_start_token, c.media_end_token, c.media_placeholder_token):
            if token in instruction:
                raise RequestError(f"the instruction contains the reserved media token {token!r}; remove it")
        if "\x00" in instruction:
            raise RequestError("the instruction contains NUL characters; remove them")

    def described(self, tasks: Sequence[TaskSpec]) -> list[TaskSpec]:
        """``tasks`` as the system prompt describes them: a task the model was trained on (``trained_tasks``)
        in the words it was trained with; other tasks and plain function tools as given."""
        trained = {d["task"]: d for d in self.config.trained_tasks or ()}
        return [spec_from_dict(trained[t.task]) if t.task in trained and t.kind == "generator" else t for t in tasks]

    def system_prompt(self, tasks: Sequence[TaskSpec]) -> str:
        """The system prompt for ``tasks`` (described as :meth:`described` says)."""
        return render_system_prompt(self.described(tasks), output_format=self.config.output_format)

    def text(self, instruction: str, media_ids: Sequence[str], tasks: Sequence[TaskSpec]) -> str:
        """The prompt as text (``chat`` and ``plain`` formats)."""
        fmt = self.format
        if fmt == "legacy":
            raise ModelError("the legacy format is built from token pieces; use `ids()`")
        system = self.system_prompt(tasks)
        user = self.media_lines(media_ids) + instruction
        if fmt == "plain":
            return PLAIN_TEMPLATE.format(
                system=system.rstrip("\n"), media=self.media_lines(media_ids), instruction=instruction
            )
        return self._chat([{"role": "system", "content": system}, {"role": "user", "content": user}])

    def _chat(self, messages: list[dict[str, str]], *, generation_prompt: bool = True) -> str:
        import jinja2

        try:
            return self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=generation_prompt)
        except jinja2.TemplateError as e:
            if messages[0]["role"] != "system":
                raise ModelError(f"the tokenizer's chat template failed: {e}") from e
            logger.debug("chat template rejects a system message (%s); putting the system prompt in the user turn", e)
            merged = [
                {"role": "user", "content": messages[0]["content"] + "\n" + messages[1]["content"]},
                *messages[2:],
            ]
            return self._chat(merged, generation_prompt=generation_prompt)

    def ids(self, instruction: str, media_ids: Sequence[str], tasks: Sequence[TaskSpec]) -> list[int]:
        """Prompt token ids; ModelError for an empty request, a reserved token or a prompt that is too long."""
        self.check_instruction(instruction, media_ids)
        if self.format == "legacy":
            ids = self._legacy_ids(instruction, media_ids)
        elif self.format == "plain":
            ids = self.tokenizer(self.text(instruction, media_ids, tasks)).input_ids
        else:
            ids = self.tokenizer(self.text(instruction, media_ids, tasks), add_special_tokens=False).input_ids
        self._check(ids, instruction, len(media_ids))
        return list(ids)

    def _legacy_ids(self, instruction: str, media_ids: Sequence[str]) -> list[int]:
        marks = "".join(_MEDIA_MARK.format(i) for i in range(len(media_ids)))
        text = LEGACY_TEMPLATE.replace("{media}", marks).replace("{instruction}", instruction)
        item = self.tokenizer.convert_tokens_to_ids(self._item_tokens())
        ids: list[int] = [] if self.tokenizer.bos_token_id is None else [self.tokenizer.bos_token_id]
        pieces = text.split("\x00")
        for piece in pieces:
            if piece.startswith("MEDIA") and piece[5:].isdigit():
                ids += item
            elif piece.strip():
                ids += self.tokenizer(piece.strip(), add_special_tokens=False).input_ids
        return ids

    def _item_tokens(self) -> list[str]:
        c = self.config
        return [c.media_start_token, *[c.media_placeholder_token] * c.num_media_tokens, c.media_end_token]

    def _check(self, ids: Sequence[int], instruction: str, n_media: int) -> None:
        excess = len(ids) - self.max_prompt_tokens
        if excess > 0:
            head = (
                f"the prompt is {len(ids)} tokens, over this model's limit of {self.max_prompt_tokens} "
                "(its context minus the answer's budget)"
            )
            if len(self.tokenizer(instruction, add_special_tokens=False).input_ids) <= excess:
                raise ModelError(
                    f"{head} even without the instruction: the system prompt listing the zoo's tasks is too long "
                    "for this model; serve fewer tasks, lower max_new_tokens or use a longer-context LLM"
                )
            raise RequestError(
                f"{head}; shorten the instruction by at least {excess} tokens", code="context_length_exceeded"
            )
        placeholder = self.tokenizer.convert_tokens_to_ids(self.config.media_placeholder_token)
        found = sum(1 for i in ids if i == placeholder)
        if found != n_media * self.config.num_media_tokens:
            raise ModelError(
                f"the prompt holds {found} media placeholders for {n_media} item(s) x {self.config.num_media_tokens}; "
                "the chat template altered the media tokens"
            )

    # -- training ------------------------------------------------------------------------------------
    def example(
        self, instruction: str, media_ids: Sequence[str], tasks: Sequence[TaskSpec], target: str
    ) -> tuple[list[int], list[int]]:
        """``(input_ids, labels)`` of one training example: the prompt (labels ignored) + target + end."""
        prompt = self.ids(instruction, media_ids, tasks)
        fmt = self.format
        if fmt == "chat":
            full = self._chat(
                [
                    {"role": "system", "content": self.system_prompt(tasks)},
                    {"role": "user", "content": self.media_lines(media_ids) + instruction},
                    {"role": "assistant", "content": target},
                ],
                generation_prompt=False,
            )
            head = self.text(instruction, media_ids, tasks)
            if not full.startswith(head):
                raise ModelError("the chat template renders the assistant turn in a way that changes the prompt")
            answer = self.tokenizer(full[len(head) :], add_special_tokens=False).input_ids
            stops = set(self.stop_ids or [self.tokenizer.eos_token_id])
            end = next((i for i, t in enumerate(answer) if t in stops), None)
            if end is None:
                raise ModelError("the chat template ends the assistant turn without a stop token")
            answer = answer[: end + 1]
        elif fmt == "legacy":
            answer = self.tokenizer(f"{target} ###", add_special_tokens=False).input_ids
        else:
            answer = [*self.tokenizer(target, add_special_tokens=False).input_ids, self.tokenizer.eos_token_id]
        return prompt + answer, [IGNORE_INDEX] * len(prompt) + answer


def stop_token_ids(tokenizer: Any, generation_config: Any | None = None) -> list[int]:
    """Token ids that end an answer: the generation config's EOS id(s) and the tokenizer's EOS."""
    ids: list[int] = []
    for source in (getattr(generation_config, "eos_token_id", None), tokenizer.eos_token_id):
        if isinstance(source, int):
            ids.append(source)
        elif isinstance(source, Sequence):
            ids += [int(i) for i in source]
    out = list(dict.fromkeys(ids))
    if not out:
        raise ModelError("the tokenizer and generation config name no EOS token; set `tokenizer.eos_token`")
    return out


def special_token_ids(tokenizer: Any) -> list[int]:
    """Every special token id of the tokenizer (named ones and added special tokens)."""
    ids = set(tokenizer.all_special_ids)
    decoder: Mapping[int, Any] = getattr(tokenizer, "added_tokens_decoder", {})
    ids.update(i for i, tok in decoder.items() if getattr(tok, "special", False))
    return sorted(ids)
