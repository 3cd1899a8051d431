"""What an LLM is asked and what it answers: the bottom layer the agent and every engine share.

The agent (:mod:`.agent`) and the model engines (:mod:`.model`) stand side by side; both speak these
types and neither imports the other. An LLM is anything with ``respond(LLMRequest) -> str``
(:class:`MetaResponder`); the optional capabilities below are typed protocols a caller checks with
``isinstance``, never by probing attributes:

* :class:`CompletingResponder` - ``complete(request) -> Completion`` (token accounting, finish reason);
* :class:`BatchResponder` - ``complete_batch(requests)``, decoded together;
* :class:`StreamingResponder` - ``stream(request) -> TextStream``: raw text pieces, then the
  :class:`Completion` on the stream itself (a value, not state left on the engine);
* :class:`MediaAware` - ``sees_media``: False when media are only marked present (no encoder);
* :class:`FormatAware` - ``output_format``: "json" (a meta-response), "legacy" (the official release's
  ``Modality:`` lines) or "auto" (test doubles that replay either);
* :class:`TokenCounter` - ``count_tokens(text)`` in the model's own tokenizer;
* :class:`PromptChecker` - ``check_prompt(request)``: builds the prompt without answering (what
  :func:`fit_history` needs to leave the oldest turns of a long conversation out).

A wrapper between the agent and an LLM subclasses :class:`WrappedLLM`, which forwards these.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, Literal, Protocol, runtime_checkable

from .errors import RequestError

if TYPE_CHECKING:
    from .media import MediaItem
    from .meta_response import TaskSpec

OutputFormat = Literal["json", "legacy", "auto"]


@dataclass
class GenerationParams:
    """Decoding settings a caller may set per request (None: the model's default)."""

    max_new_tokens: int | None = None
    temperature: float | None = None  # 0: greedy; None: the model's default
    top_p: float | None = None
    stop: tuple[str, ...] = ()
    seed: int | None = None


@dataclass
class ChatTurn:
    """One earlier turn of a conversation: ``role`` is "user", "assistant" or "tool"."""

    role: str
    text: str


@dataclass
class LLMRequest:
    """What the LLM is asked: the instruction, the media (by id), the schema and the tasks it may use.

    ``history`` holds earlier turns (multi-turn chat), ``system`` extra system instructions, ``params``
    decoding settings. ``media`` are every media item of the conversation, ids in order of appearance.
    """

    instruction: str
    media: list[tuple[str, MediaItem]]
    schema: dict[str, Any]
    tasks: list[TaskSpec]
    history: list[ChatTurn] = field(default_factory=list)
    system: str | None = None
    params: GenerationParams = field(default_factory=GenerationParams)


@dataclass
class Completion:
    """Raw LLM output with accounting (what ``complete(request)`` returns)."""

    text: str
    input_tokens: int = 0
    output_tokens: int = 0
    finish_reason: str = "stop"  # "stop" | "length"
    model_name: str = ""


@runtime_checkable
class MetaResponder(Protocol):
    """Anything that turns an LLMRequest into raw meta-response text (the ModaVerse model, a fake)."""

    def respond(self, request: LLMRequest) -> str:
        """Return the LLM's raw output (JSON meta-response, or the release's legacy format)."""
        ...


@runtime_checkable
class CompletingResponder(Protocol):
    """An LLM that reports token counts and why it stopped."""

    def complete(self, request: LLMRequest) -> Completion:
        """The raw output with its accounting."""
        ...


@runtime_checkable
class BatchResponder(Protocol):
    """An LLM that decodes several requests together."""

    def complete_batch(self, requests: Sequence[LLMRequest]) -> list[Completion]:
        """One completion per request, in order."""
        ...


@runtime_checkable
class TextStream(Protocol):
    """Raw text pieces as they are decoded; ``completion`` is set once the stream has ended."""

    completion: Completion | None

    def __iter__(self) -> Iterator[str]:
        """The pieces, in order."""
        ...


@runtime_checkable
class StreamingResponder(Protocol):
    """An LLM whose output can be read while it is decoded."""

    def stream(self, request: LLMRequest) -> TextStream:
        """A stream of the raw output."""
        ...


@runtime_checkable
class MediaAware(Protocol):
    """An LLM that says whether media content reaches it."""

    @property
    def sees_media(self) -> bool:
        """False when media are only marked as present (a model without an encoder)."""
        ...


@runtime_checkable
class TaskTrained(Protocol):
    """An LLM that says which tasks it was trained to choose among, in the words it was trained with."""

    @property
    def trained_tasks(self) -> list[TaskSpec]:
        """The tasks ([] when it records none)."""
        ...


@runtime_checkable
class FormatAware(Protocol):
    """An LLM that says which output format it writes."""

    @property
    def output_format(self) -> OutputFormat:
        """ "json", "legacy" or "auto"."""
        ...


@runtime_checkable
class TokenCounter(Protocol):
    """An LLM that counts tokens in its own tokenizer."""

    def count_tokens(self, text: str) -> int:
        """Tokens of ``text``."""
        ...


@runtime_checkable
class PromptChecker(Protocol):
    """An LLM that builds a request's prompt without answering it."""

    def check_prompt(self, request: LLMRequest) -> None:
        """Raise :class:`~.errors.RequestError` when ``request`` can't be answered as sent."""
        ...


def check_prompt(llm: object, request: LLMRequest) -> None:
    """``llm.check_prompt(request)`` when ``llm`` is a :class:`PromptChecker` (what wrappers forward); else nothing."""
    if isinstance(llm, PromptChecker):
        llm.check_prompt(request)


def _fits(llm: PromptChecker, request: LLMRequest) -> bool:
    """Whether ``request``'s prompt fits the context (other refusals are not about length: the engine raises
    them when it answers)."""
    try:
        llm.check_prompt(request)
    except RequestError as e:
        return e.code != "context_length_exceeded"
    return True


def fit_history(llm: object, request: LLMRequest) -> tuple[LLMRequest, int]:
    """``request`` with the fewest of its oldest history turns left out that makes its prompt fit the model's
    context (cut so the kept history starts at a user turn), and how many were left out. 0 and ``request``
    unchanged when it fits, when ``llm`` is no :class:`PromptChecker`, or when it would not fit even without
    history (the engine then refuses it, saying by how much)."""
    history = request.history
    if not history or not isinstance(llm, PromptChecker) or _fits(llm, request):
        return request, 0
    if not _fits(llm, replace(request, history=[])):
        return request, 0
    lo, hi = 1, len(history)  # leaving out hi turns fits, lo - 1 does not
    while lo < hi:
        mid = (lo + hi) // 2
        if _fits(llm, replace(request, history=history[mid:])):
            hi = mid
        else:
            lo = mid + 1
    while lo < len(history) and history[lo].role != "user":
        lo += 1
    return replace(request, history=history[lo:]), lo


def sees_media(llm: object) -> bool:
    """Whether media content reaches ``llm`` (True unless it is :class:`MediaAware` and says not)."""
    return llm.sees_media if isinstance(llm, MediaAware) else True


def trained_tasks(llm: object) -> list[TaskSpec]:
    """The tasks ``llm`` was trained to choose among ([] unless it is :class:`TaskTrained`)."""
    return llm.trained_tasks if isinstance(llm, TaskTrained) else []


def output_format(llm: object) -> OutputFormat:
    """The output format ``llm`` writes ("json" unless it is :class:`FormatAware`)."""
    return llm.output_format if isinstance(llm, FormatAware) else "json"


class WrappedLLM:
    """Base of a wrapper between the agent and an LLM (``inner``): it forwards each optional capability the
    agent reads (media, output format, trained tasks, prompt check), so no wrapper can make the model look
    as if it lacked one. Subclasses add ``respond``/``complete``/``stream``."""

    def __init__(self, inner: object) -> None:
        self.inner = inner

    def check_prompt(self, request: LLMRequest) -> None:
        """As the wrapped LLM (nothing when it can't check)."""
        check_prompt(self.inner, request)

    @property
    def sees_media(self) -> bool:
        """As the wrapped LLM."""
        return sees_media(self.inner)

    @property
    def output_format(self) -> OutputFormat:
        """As the wrapped LLM."""
        return output_format(self.inner)

    @property
    def trained_tasks(self) -> list[TaskSpec]:
        """As the wrapped LLM."""
        return trained_tasks(self.inner)


def complete(llm: MetaResponder, request: LLMRequest, model_name: str = "") -> Completion:
    """``llm``'s completion of ``request``: with accounting where it can, the bare text otherwise."""
    if isinstance(llm, CompletingResponder):
        return llm.complete(request)
    return Completion(text=llm.respond(request), model_name=model_name)


class PieceStream:
    """A :class:`TextStream` over any iterable of text pieces (a fake's generator, a remote stream).

    Its ``completion`` holds the joined text once the pieces are exhausted (no token accounting).
    """

    def __init__(self, pieces: Iterable[str], model_name: str = "") -> None:
        self.completion: Completion | None = None
        self._iter = self._run(pieces, model_name)

    def __iter__(self) -> Iterator[str]:
        return self._iter

    def __next__(self) -> str:
        return next(self._iter)

    def _run(self, pieces: Iterable[str], model_name: str) -> Iterator[str]:
        seen: list[str] = []
        for piece in pieces:
            seen.append(piece)
            yield piece
        self.completion = Completion(text="".join(seen), model_name=model_name)


def as_text_stream(stream: Iterable[str], model_name: str = "") -> TextStream:
    """``stream`` itself when it is a :class:`TextStream`, else wrapped in a :class:`PieceStream`."""
    return stream if isinstance(stream, TextStream) else PieceStream(stream, model_name)


def fold_conversation(request: LLMRequest) -> str:
    """The instruction text with ``system`` and ``history`` folded in front of it.

    The Prompter builds one user turn from instruction text, so earlier turns become a short
    transcript preamble (empty parts are left out)::

        {system}

        Conversation so far:
        user: {text}
        assistant: {meta-response JSON}
        tool: [{task}] {result}

        {instruction}

    A request without system text or history keeps its instruction unchanged.
    """
    parts = []
    if request.system and request.system.strip():
        parts.append(request.system.strip())
    if request.history:
        lines = [f"{t.role}: {t.text.strip()}" for t in request.history]
        parts.append("Conversation so far:\n" + "\n".join(lines))
    if not parts:
        return request.instruction
    return "\n\n".join([*parts, request.instruction]) if request.instruction.strip() else "\n\n".join(parts)
