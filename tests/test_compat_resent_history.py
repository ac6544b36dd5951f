"""
A client's resent history under ``X-Rhetor-Context`` is matched against the stored turns
with tool calls' arguments compared as JSON, not as text.

Clients re-serialise the arguments they got: the openai SDK hands back the text, but
an agent framework parses it and writes it again (``{"city": "Paris"}`` for
``{"city":"Paris"}``, keys in another order). Such a history is still the stored one,
so its turns are neither sent upstream twice nor stored twice. The openai SDK is
the client of a real server relaying to the fake upstreams over loopback.
"""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from rhetor._content import ToolCall
from rhetor._types import ChatMessage
from rhetor.routing._conversations import unstored_turns
from tests.fakes import Call, Reply
from tests.test_compat_tools import OPENAI_TOOL, QUESTION, Stack, ask_openai

ARGUMENTS = {"city": "Paris", "unit": "celsius"}


def reserialised(text: str) -> str:
    """The arguments as a framework writes them back: parsed, keys reversed, spaced."""
    value = json.loads(text)
    return json.dumps(dict(reversed(list(value.items()))), indent=1)


def test_arguments_that_are_the_same_json_match_the_stored_call() -> None:
    """Spacing and key order do not make a call new; other values, or other text, do."""
    stored = [
        ChatMessage("user", "q"),
        ChatMessage("assistant", blocks=(ToolCall("c1", "f", '{"a":1,"b":[1,2]}'),)),
    ]

    def resent(arguments: str) -> list[ChatMessage]:
        call = ChatMessage("assistant", blocks=(ToolCall("c1", "f", arguments),))
        return [ChatMessage("user", "q"), call, ChatMessage("user", "next")]

    assert unstored_turns(stored, resent('{"b": [1, 2], "a": 1}')) == (ChatMessage("user", "next"),)
    assert len(unstored_turns(stored, resent('{"a": 2, "b": [1, 2]}'))) == 3
    loose = [ChatMessage("user", "q"), ChatMessage("assistant", blocks=(ToolCall("c1", "f", "x"),))]
    assert len(unstored_turns(loose, [*loose, ChatMessage("user", "n")])) == 1
    assert len(unstored_turns(loose, resent("y"))) == 3


@pytest.mark.parametrize("provider", ["openai", "anthropic"])
async def test_a_reserialised_call_is_neither_sent_nor_stored_twice(
    stack: Stack, provider: str
) -> None:
    """The openai SDK resending a call's arguments re-serialised: the upstream gets the call once, the context holds it once."""
    context = f"reserialised-{provider}"
    headers = {"X-Rhetor-Context": context}
    model = {"openai": "gpt-4o-mini", "anthropic": "claude-haiku-4-5"}[provider]
    fake = stack.fake(provider)
    fake.script(Reply("", tool_calls=(Call("get_weather", ARGUMENTS, id="call_9"),)))
    asked = [{"role": "user", "content": QUESTION}]
    first = await ask_openai(
        stack.oai, model, asked, False, extra_headers=headers, tools=[OPENAI_TOOL]
    )
    [(ident, _, _)] = first.calls
    [text] = first.texts
    again = reserialised(text)
    assert again != text and json.loads(again) == ARGUMENTS
    call = {
        "id": ident,
        "type": "function",
        "function": {"name": "get_weather", "arguments": again},
    }
    history: list[Any] = [
        *asked,
        {"role": "assistant", "content": None, "tool_calls": [call]},
        {"role": "tool", "tool_call_id": ident, "content": "18 degrees"},
    ]
    fake.script(Reply("18 degrees in Paris."))
    final = await ask_openai(
        stack.oai, model, history, False, extra_headers=headers, tools=[OPENAI_TOOL]
    )
    assert final.text == "18 degrees in Paris."
    sent = json.dumps(stack.sent(provider)["messages"])
    assert sent.count(QUESTION) == 1 and sent.count(ident) == 2  # the call and its result
    async with httpx.AsyncClient(base_url=stack.server.base_url, verify=False) as http:
        stored = (await http.get(f"/contexts/{context}")).json()["messages"]
    assert [m["role"] for m in stored] == ["user", "assistant", "user", "assistant"]
