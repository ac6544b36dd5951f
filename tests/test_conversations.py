"""
The Router's side of stored contexts (rhetor/routing/_conversations.py): which turns are new, and the system prompt.

Sending and storing a context's turns end to end, over /chat, the WebSocket
and the compat endpoints, is in test_planning.py.
"""

from __future__ import annotations

import itertools

from rhetor._types import ChatMessage, LLMRequest
from rhetor.routing._conversations import split_messages, unstored_turns


def _chat(*pairs: str) -> list[ChatMessage]:
    roles = itertools.cycle(("user", "assistant"))
    return [ChatMessage(next(roles), text) for text in pairs]  # type: ignore[arg-type]


def test_turns_after_the_stored_tail_are_the_new_ones() -> None:
    """A client resending its whole history adds only what follows the stored turns."""
    stored = _chat("u1", "a1", "u2", "a2")
    assert unstored_turns(stored, _chat("u1", "a1", "u2", "a2", "u3")) == tuple(_chat("u3"))
    # The store's window may be shorter than the client's history, or longer.
    assert unstored_turns(stored[2:], _chat("u1", "a1", "u2", "a2", "u3")) == tuple(_chat("u3"))
    assert unstored_turns(stored, _chat("u2", "a2", "u3")) == (ChatMessage("user", "u3"),)


def test_turns_that_do_not_line_up_with_the_stored_tail_are_all_new() -> None:
    """A fresh context, a lone new turn, an edited history or a repeated question are all new."""
    stored = _chat("u1", "a1")
    assert unstored_turns([], _chat("u1", "a1", "u2")) == tuple(_chat("u1", "a1", "u2"))
    assert unstored_turns(stored, _chat("u2")) == tuple(_chat("u2"))
    edited = _chat("u1", "a1 (edited)", "u2")
    assert unstored_turns(stored, edited) == tuple(edited)
    assert unstored_turns(stored, _chat("u1")) == tuple(_chat("u1"))
    # The last stored turn matches, but an earlier overlapping one does not.
    assert unstored_turns(stored, _chat("x", "a1", "u2")) == tuple(_chat("x", "a1", "u2"))


def test_the_latest_place_the_stored_tail_ends_wins() -> None:
    """In a conversation that repeats itself, only the turns after the last match are new."""
    stored = _chat("hi", "hello", "hi", "hello")
    client = _chat("hi", "hello", "hi", "hello", "bye")
    assert unstored_turns(stored, client) == tuple(_chat("bye"))


def test_the_requests_own_system_prompt_wins_over_system_messages() -> None:
    """system_prompt replaces the system messages; without it they are joined in order, turns kept apart."""
    messages = (
        ChatMessage("system", "be brief"),
        ChatMessage("user", "hi"),
        ChatMessage("system", "be kind"),
    )
    assert split_messages(LLMRequest(messages=messages)) == (
        ["be brief", "be kind"],
        [ChatMessage("user", "hi")],
    )
    assert split_messages(
        LLMRequest(messages=messages, system_prompt="be exact", message="and?")
    ) == (
        ["be exact"],
        [ChatMessage("user", "hi"), ChatMessage("user", "and?")],
    )
