"""LangChain's standard chat-model test suites on ChatModaVerse over a tiny random-weight ModaVerse.

The unit suite passes as is. In the integration suite, a test that asks for *meaningful* answers (say
"3" to "what is 1+2", follow a tool-calling instruction, reproduce a structured record) cannot pass on
random weights; each such test is overridden and marked xfail with the reason written out. Everything
else (invoke, stream, batch, conversations, usage metadata, media inputs, tool-message histories)
runs for real on the tiny model.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("xgrammar")

from langchain_core.language_models import BaseChatModel  # noqa: E402
from langchain_tests.integration_tests import ChatModelIntegrationTests  # noqa: E402
from langchain_tests.unit_tests import ChatModelUnitTests  # noqa: E402

from modaverse_agent.chat_model import ChatModaVerse  # noqa: E402
from modaverse_agent.model.modeling import ModaVerseModel  # noqa: E402
from modaverse_agent.model.tiny import HashEncoder, save_tiny_base, tiny_config  # noqa: E402
from modaverse_agent.zoo import Zoo  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from chat_model_suite import ModaVerseCapabilities, OfflineMediaInputs, inherited, xfail  # noqa: E402

torch.set_num_threads(1)
_STATE: dict[str, Any] = {}

RANDOM = "a random-weight tiny model cannot "


@pytest.fixture(scope="module", autouse=True)
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """One tiny ModaVerse (with a hash encoder) and an echo zoo for the whole module."""
    import modaverse_echo

    base = save_tiny_base(Path(tmp_path_factory.mktemp("std")) / "base")
    torch.manual_seed(0)
    # a long closing reserve: a forced call to a function tool must still fit once the free text stops
    config = tiny_config(base, max_new_tokens=160)
    model = ModaVerseModel.from_config(config, encoder=HashEncoder(16), init_lora_weights=False).eval()
    found: list[Any] = []
    modaverse_echo.register_generators(found.append)
    _STATE.update(backend=model, zoo=Zoo(found))
    yield
    _STATE.clear()


class _Tiny(ModaVerseCapabilities):
    @property
    def chat_model_params(self) -> dict[str, Any]:
        # `model` is the reference the chat model serialises by (the backend given here is used, not loaded)
        return {"backend": _STATE["backend"], "zoo": _STATE["zoo"], "model": "default", "model_name": "modaverse-tiny"}

    @property
    def standard_chat_model_params(self) -> dict[str, Any]:
        return {**super().standard_chat_model_params, "max_tokens": 160}  # type: ignore[misc]


class TestChatModaVerseUnit(_Tiny, ChatModelUnitTests):
    """The unit suite: construction, standard params, bind_tools, structured output wiring."""

    test_serdes = pytest.mark.xfail(
        reason="the suite loads with allowed_objects='all', which langchain-core limits to the classes in its "
        "own mapping, so no third-party model can pass it; test_serdes_by_reference is the same round trip "
        "with ChatModaVerse allowed by name",
        strict=True,
    )(inherited(ChatModelUnitTests, "test_serdes"))

    def test_serdes_by_reference(self, model: BaseChatModel, snapshot: Any) -> None:
        """dumpd -> load gives an equal ChatModaVerse (by reference: ``model``, ``engine``, settings)."""
        from langchain_core.load import dumpd, load

        assert dumpd(model) == snapshot(name="serialized")
        again = load(dumpd(model), valid_namespaces=["modaverse_agent"], allowed_objects=[ChatModaVerse])
        assert isinstance(again, ChatModaVerse) and again.model_dump() == model.model_dump()


ARGS = (
    RANDOM + "read 'call magic_function with 3' and write the argument 3: constrained decoding makes the "
    "call well-formed and correctly named, but the value is whatever random weights pick"
)


class TestChatModaVerseIntegration(_Tiny, OfflineMediaInputs, ChatModelIntegrationTests):
    """The integration suite on the tiny model; xfails say why random weights cannot pass."""

    test_tool_calling = xfail("test_tool_calling", ARGS)
    test_tool_calling_async = xfail("test_tool_calling_async", ARGS)
    test_agent_loop = xfail(
        "test_agent_loop",
        RANDOM + "decide unprompted (tool_choice 'auto') to call get_weather exactly once for a weather question; "
        "random weights call nothing or several tools",
    )
    test_unicode_tool_call_integration = xfail(
        "test_unicode_tool_call_integration",
        RANDOM + "copy the Unicode customer name from the instruction into the tool arguments",
    )
