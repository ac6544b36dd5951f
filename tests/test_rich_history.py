"""
Rich turns in context history: tool calls, tool results and images stored and read back on SQLite and PostgreSQL.

The stores keep a rich turn's blocks as JSON beside its text
(rhetor/storage/_blocks.py); rows written before that read as plain text; a
window never keeps a tool result without the turn that made its call; and a
multi-step tool conversation under a ``context_id`` goes through ``/message``
over real sockets to the fake OpenAI upstream.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from rhetor._content import Image, Text, ToolCall, ToolResult
from rhetor._tokens import MESSAGE_OVERHEAD
from rhetor._types import ChatMessage
from rhetor.storage._history import SQLiteHistory, newest_within
from rhetor.storage._interfaces import ContextHistory
from tests.fakes import Call, Reply
from tests.stores import history_opener
from tests.test_compat_responses import GPT, served

Opener = Callable[[], ContextHistory]
PIXEL = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR4nGNgYGD4DwABBAEAwS2OUAAAAABJRU5ErkJggg=="
CALL = ToolCall("call_1", "get_weather", '{"city":"Paris"}')
TURNS = (
    ChatMessage(
        "user",
        blocks=(Text("What is this, and the weather?"), Image(data=PIXEL, media_type="image/png")),
    ),
    ChatMessage("assistant", blocks=(Text("Let me look."), CALL)),
    ChatMessage("user", blocks=(ToolResult("call_1", "sunny", is_error=False),)),
    ChatMessage("assistant", "A pixel; sunny."),
)


@pytest.fixture
def path(backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> Opener:
    """Opens the history on the backend's storage (SQLite or PostgreSQL)."""
    return history_opener(backend, tmp_path, request, autocheckpoint=False)


def test_rich_turns_are_stored_and_read_back_whole(path: Opener) -> None:
    """Images, tool calls and tool results come back as the same turns, from history and windows."""
    store = path()
    store.append("rich", TURNS)
    stored = store.history("rich")
    window = store.window("rich", 10_000)
    assert tuple(m.message for m in stored) == TURNS
    assert window.messages == TURNS
    assert stored[1].blocks == (
        {"type": "text", "text": "Let me look."},
        {
            "type": "tool_call",
            "id": "call_1",
            "name": "get_weather",
            "arguments": '{"city":"Paris"}',
        },
    )
    assert stored[3].blocks is None and stored[3].content == "A pixel; sunny."


def test_a_rich_turn_costs_its_blocks_by_the_token_rule(path: Opener) -> None:
    """A stored image turn costs the image's tokens, not only its text's."""
    store = path()
    store.append("cost", TURNS[:1])
    plain = ChatMessage("user", "What is this, and the weather?")
    store.append("cost-plain", (plain,))
    assert store.history("cost")[0].tokens > store.history("cost-plain")[0].tokens


def test_a_window_never_keeps_a_result_without_its_call(path: Opener) -> None:
    """A budget that would cut between a call and its result drops the result too."""
    store = path()
    store.append("pair", TURNS)
    costs = [m.tokens + MESSAGE_OVERHEAD for m in store.history("pair")]
    # Room for the last two turns (the result and the answer) and part of the call's.
    window = store.window("pair", costs[1] + costs[2] + costs[3] - 1)
    assert window.messages == TURNS[3:]
    assert store.window("pair", costs[1] + costs[2] + costs[3]).messages == TURNS[1:]


def test_newest_within_moves_a_boundary_off_a_pair() -> None:
    """Newest first, a kept result whose call did not fit is dropped; a kept call and result stay."""
    entries = [(4, TURNS[3], 5), (3, TURNS[2], 5), (2, TURNS[1], 5), (1, TURNS[0], 5)]
    kept, complete = newest_within(entries, 10)
    assert [seq for seq, _, _ in kept] == [4] and not complete
    kept, _ = newest_within(entries, 15)
    assert [seq for seq, _, _ in kept] == [4, 3, 2]
    # The call cut off before the entries given (a summary, a cache's cap): its result goes too.
    kept, complete = newest_within(entries[:2], 100)
    assert [seq for seq, _, _ in kept] == [4] and complete


def test_rows_from_before_blocks_read_as_plain_text(tmp_path: Path) -> None:
    """A version 1 SQLite file is migrated: its rows read as plain text, new rows keep blocks."""
    file = tmp_path / "old.db"
    conn = sqlite3.connect(file)
    conn.executescript(
        """
        CREATE TABLE contexts (id TEXT PRIMARY KEY, created REAL NOT NULL, updated REAL NOT NULL,
            metadata TEXT NOT NULL DEFAULT '{}', summary TEXT, summary_upto INTEGER NOT NULL DEFAULT 0);
        CREATE TABLE messages (context_id TEXT NOT NULL REFERENCES contexts (id) ON DELETE CASCADE,
            seq INTEGER NOT NULL, role TEXT NOT NULL, content TEXT NOT NULL, ts REAL NOT NULL,
            tokens INTEGER NOT NULL, PRIMARY KEY (context_id, seq));
        INSERT INTO contexts VALUES ('old', 1, 1, '{}', NULL, 0);
        INSERT INTO messages VALUES ('old', 1, 'user', 'hello from before', 1, 3);
        PRAGMA user_version = 1;
        """
    )
    conn.close()
    store = SQLiteHistory(file)
    store.append("old", TURNS[1:2])
    stored = store.history("old")
    assert stored[0].message == ChatMessage("user", "hello from before")
    assert stored[0].blocks is None
    assert stored[1].message == TURNS[1]
    assert store.window("old", 10_000).messages == (
        ChatMessage("user", "hello from before"),
        TURNS[1],
    )
    store.close()


# -- a tool conversation under a context, over HTTP --------------------------------------------


async def test_a_tool_conversation_under_a_context_through_message(tmp_path: Path) -> None:
    """A call, its result sent back, the final answer: every turn stored and sent with the history."""
    weather: dict[str, Any] = {"name": "get_weather", "parameters": {"type": "object"}}
    async with (
        served(tmp_path) as s,
        httpx.AsyncClient(base_url=s.server.base_url, timeout=5) as http,
    ):
        s.openai.script(
            Reply("", tool_calls=(Call("get_weather", {"city": "Paris"}, id="call_1"),)),
            Reply("It is sunny in Paris."),
        )
        common = {"context_id": "trip", "model": GPT, "tools": [weather]}
        first = (
            await http.post("/message", json={"message": "Weather in Paris?", **common})
        ).json()
        [call] = first["tool_calls"]
        result = [{"type": "tool_result", "call_id": call["id"], "content": "sunny, 21 C"}]
        final = (await http.post("/message", json={"message": result, **common})).json()
        sent = s.sent("openai")
        stored = (await http.get("/contexts/trip")).json()
    assert final["message"] == "It is sunny in Paris." and final["finish_reason"] == "stop"
    assert [m["role"] for m in sent["messages"]] == ["user", "assistant", "tool"]
    assert sent["messages"][1]["tool_calls"][0]["id"] == "call_1"
    assert sent["messages"][2] == {
        "role": "tool",
        "tool_call_id": "call_1",
        "content": "sunny, 21 C",
    }
    turns = stored["messages"]
    assert [m["role"] for m in turns] == ["user", "assistant", "user", "assistant"]
    assert turns[1]["blocks"][0]["type"] == "tool_call"
    assert json.loads(turns[1]["blocks"][0]["arguments"]) == {"city": "Paris"}
    assert turns[2]["blocks"] == [
        {
            "type": "tool_result",
            "call_id": "call_1",
            "content": [{"type": "text", "text": "sunny, 21 C"}],
            "is_error": False,
        }
    ]
    assert turns[3]["content"] == "It is sunny in Paris." and turns[3]["blocks"] is None
