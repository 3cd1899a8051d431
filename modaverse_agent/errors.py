"""One small error hierarchy; every message says what to do about it."""

from __future__ import annotations


class ModaVerseError(Exception):
    """Base class of every error this package raises on purpose."""


class PluginError(ModaVerseError):
    """A plugin failed to import or registered something invalid."""


class GeneratorError(ModaVerseError):
    """A generator is misdeclared, misconfigured or failed while generating."""


class ZooError(ModaVerseError):
    """The zoo cannot serve a task or its configuration is invalid."""


class MetaResponseError(ModaVerseError):
    """LLM output is not a valid meta-response.

    ``path`` names the failing location (``invocations[0].prompt``), ``raw`` keeps the offending text.
    """

    def __init__(self, message: str, *, path: str = "", raw: str | None = None) -> None:
        super().__init__(f"{path}: {message}" if path else message)
        self.path = path
        self.raw = raw
        self.reason = message


class MediaError(ModaVerseError):
    """A media input could not be read, is of an unsupported kind or breaks a limit."""


class ArtifactError(ModaVerseError):
    """An output file could not be written safely."""


class ModelError(ModaVerseError):
    """A model or checkpoint is missing, malformed or incompatible."""


class RequestError(ModelError):
    """The request can't be answered as sent (longer than the model's context, forbidden characters): the
    caller must change it, and retrying it unchanged fails the same way. ``code`` is OpenAI's error code
    ("context_length_exceeded" or "invalid_value"), which the server answers with status 400."""

    def __init__(self, message: str, *, code: str = "invalid_value") -> None:
        super().__init__(message)
        self.code = code
