"""
The Router's side of stored contexts: the window a request sends, the turns it stores, summaries.

A request with a ``context_id`` sends the context's window (its summary and
newest turns) ahead of the client's new turns, and stores those turns with
the reply. Which of a client's turns are new is one rule,
:func:`unstored_turns`, the same for ``/chat``, the WebSocket and the
OpenAI and Anthropic endpoints.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

import attrs

import actors
from rhetor import observe
from rhetor._asks import ask
from rhetor._content import ToolCall
from rhetor._errors import NotFound
from rhetor._types import ChatMessage, LLMRequest, Reply
from rhetor.storage._contexts import AppendTurns, GetHistory, GetWindow, ReadContext, SetSummary
from rhetor.storage._interfaces import ContextWindow

__all__ = ["Conversations", "split_messages", "unstored_turns"]


def split_messages(request: LLMRequest) -> tuple[list[str], list[ChatMessage]]:
    """
    A request's system prompt parts and its user and assistant turns, in order.

    The request's own ``system_prompt`` wins over system messages in
    ``messages``, which are otherwise joined in order.
    """
    given = list(request.messages)
    if request.message is not None:
        given.append(ChatMessage("user", request.message))
    system_parts: list[str] = []
    if request.system_prompt:
        system_parts.append(request.system_prompt)
    turns: list[ChatMessage] = []
    for m in given:
        if m.role == "system":
            if not request.system_prompt:
                system_parts.append(m.content)
        else:
            turns.append(m)
    return system_parts, turns


def unstored_turns(
    stored: Sequence[ChatMessage], turns: Sequence[ChatMessage]
) -> tuple[ChatMessage, ...]:
    """
    Which of a client's turns a context does not hold yet: the ones to send and store.

    A client may resend its whole history with every request (seed 002's
    ChatSession, every OpenAI or Anthropic SDK client). With a context, the
    stored turns are the history, so the client's turns up to the latest
    point where they end with the stored tail (``stored``, the newest stored
    turns, oldest first) are repeats; only the turns after it are new. Where
    they overlap, every turn must match (role and content); when nothing
    lines up (a fresh context, a client sending only the new turn, or a
    history that differs from what was stored) every turn is new. The last
    turn, the user's, is always new. A tool call's arguments match when they
    are the same JSON, however the client wrote them (:func:`_matching_key`).
    """
    if stored:
        held_keys = [_matching_key(m) for m in stored]
        keys = [_matching_key(m) for m in turns]
        for held in range(len(turns) - 1, 0, -1):
            overlap = min(held, len(stored))
            if (
                keys[held - 1] == held_keys[-1]
                and keys[held - overlap : held] == held_keys[-overlap:]
            ):
                return tuple(turns[held:])
    return tuple(turns)


def _matching_key(message: ChatMessage) -> ChatMessage:
    """
    A turn as :func:`unstored_turns` compares it: its tool calls' arguments in canonical JSON.

    Clients re-serialise the arguments they got (``{"city": "Paris"}`` back as
    ``{"city":"Paris"}``, keys reordered), so arguments are compared as the JSON
    values they parse to; arguments that are not JSON are compared as text.
    """
    if not message.tool_calls:
        return message
    blocks = tuple(
        attrs.evolve(block, arguments=_canonical_json(block.arguments))
        if isinstance(block, ToolCall)
        else block
        for block in message.blocks
    )
    return attrs.evolve(message, blocks=blocks)


def _canonical_json(text: str) -> str:
    """JSON text in one canonical form (sorted keys, no spaces); other text as it is."""
    if not text.strip():
        return "{}"
    try:
        value = json.loads(text)
    except ValueError:
        return text
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


@attrs.define(eq=False)
class Conversations:
    """
    Reads and writes contexts for the Router, through the ContextStore actor.

    Error handling: the store's answers (``NotFound``, a ``ValidationError``)
    pass through; the store being down or meeting a bug becomes Rhetor's
    error in :func:`rhetor._asks.ask`.
    """

    _contexts: actors.Ref
    # Tokens of stored history a request may send (the window's budget), and
    # the unsummarised size past which a context is summarised.
    _token_budget: int

    async def window(self, context_id: str) -> ContextWindow:
        """The context's summary and newest unsummarised turns that fit the budget, with their tokens."""
        attributes = {"rhetor.context_id": context_id}
        with observe.current().traced("rhetor.context.read", attributes) as span:
            window = await ask(self._contexts, GetWindow(context_id, self._token_budget))
            if span is not None:
                span.set_attribute("rhetor.context.tokens", window.tokens)
            return window

    async def stored_tail(
        self, context_id: str, window: list[ChatMessage], turns: list[ChatMessage]
    ) -> list[ChatMessage]:
        """
        The context's newest stored turns, to match the client's history against.

        The window is them, unless it came back empty (a summary or one turn
        over the token budget) while the client sent history that may repeat
        stored turns: then the store is asked for as many as the client sent.
        """
        if window or len(turns) < 2:
            return window
        try:
            attributes = {"rhetor.context_id": context_id}
            with observe.current().traced("rhetor.context.history", attributes):
                stored = await ask(self._contexts, GetHistory(context_id, limit=len(turns) - 1))
        except NotFound:
            return []
        return [m.message for m in stored]

    async def append(
        self,
        context_id: str,
        turns: Sequence[ChatMessage],
        metadata: Mapping[str, Any],
        *,
        check_summary: bool = True,
    ) -> bool:
        """
        Store ``turns``; answers whether the context's unsummarised history outgrew the budget.

        One round trip: the store answers whether a summary is due with the
        append. With ``check_summary`` false (a summary is being made already)
        it is not asked, and the answer is False.
        """
        appended = await ask(
            self._contexts,
            AppendTurns(
                context_id,
                tuple(turns),
                dict(metadata),
                self._token_budget if check_summary else None,
            ),
        )
        return appended.needs_summary

    async def summarize(
        self,
        context_id: str,
        keep_recent: int,
        generate: Callable[[str], Awaitable[Reply]],
    ) -> dict[str, Any]:
        """
        Summarise a context (all but its ``keep_recent`` newest turns) and store the summary.

        ``generate(prompt)`` asks a model for the summary. Answers the context
        id, the summary, the last turn it covers and the model that wrote it.

        Error handling: an unknown context, or one deleted between the reads,
        is :class:`NotFound`.
        """
        try:
            record = await ask(self._contexts, ReadContext(context_id))
        except NotFound:
            raise NotFound("context", context_id, field="context_id") from None
        stored, info = record.messages, record.info
        if not stored:
            raise NotFound("context", context_id, field="context_id")
        covered = stored[:-keep_recent] if keep_recent else stored
        if not covered:
            return {"context_id": context_id, "summary": info.summary, "upto": None, "model": None}
        lines = [f"Earlier summary: {info.summary}"] if info.summary else []
        lines += [f"{m.role}: {m.content}" for m in covered]
        transcript = "\n".join(lines)
        reply = await generate(f"Summarise this conversation in a few sentences:\n\n{transcript}")
        upto = covered[-1].seq
        await ask(self._contexts, SetSummary(context_id, reply.message, upto))
        return {
            "context_id": context_id,
            "summary": reply.message,
            "upto": upto,
            "model": reply.model,
        }
