"""
What the runtime's handle checks and answers, split out of ``runtime.py``:
turning ``{role, content}`` objects into messages, refusing unknown fields,
the router's ``Generate`` message, and the shapes ``ready()`` and
``get_context()`` return (re-exported by ``rhetor.runtime``).
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from typing import Any, Literal, TypedDict

import attrs

from rhetor import observe
from rhetor._errors import ValidationError
from rhetor._types import ChatMessage, LLMRequest
from rhetor.routing._router import Generate
from rhetor.storage._interfaces import ContextInfo, StoredMessage

__all__ = ["ContextDetail", "Readiness", "StoreCheck"]


def _messages(raw: Iterable[Any], field: str = "messages") -> tuple[ChatMessage, ...]:
    out = []
    for i, m in enumerate(raw):
        if isinstance(m, ChatMessage):
            out.append(m)
            continue
        if not isinstance(m, Mapping):
            raise ValidationError(f"{field}[{i}]", "must be an object with role and content")
        role, content = m.get("role"), m.get("content")
        if role not in ("system", "user", "assistant"):
            raise ValidationError(f"{field}[{i}].role", "must be system, user or assistant")
        if not isinstance(content, str):
            raise ValidationError(f"{field}[{i}].content", "must be a string")
        out.append(ChatMessage(role, content))
    if not out:
        raise ValidationError(field, "must not be empty")
    return tuple(out)


def _refuse_unknown(fields: Mapping[str, Any], message: type[Any], *positional: str) -> None:
    """
    Check that each of ``fields`` names a field of ``message`` given by keyword.

    Error handling: ``ValidationError(<name>, "unknown field")`` for the first
    one that does not (a stray field of a request body is the client's mistake).
    """
    allowed: Collection[str] = attrs.fields_dict(message).keys() - set(positional)
    for name in fields:
        if name not in allowed:
            raise ValidationError(name, "unknown field")


def _generate(request: LLMRequest) -> Generate:
    """The router's message for ``request``, carrying the observation of the request it serves."""
    observation = observe.current()
    return Generate(request, None if observation is observe.DISCARD else observation)


class StoreCheck(TypedDict):
    """Whether one store answered a read, and if not, why."""

    reachable: bool
    reason: str | None


class Readiness(TypedDict):
    """
    What ``GET /ready`` sends: ``ready`` with 200, or ``not_ready`` with 503 and the reasons.
    """

    status: Literal["ready", "not_ready"]
    stores: dict[str, StoreCheck]
    providers: dict[str, bool]
    reasons: list[str]


class ContextDetail(TypedDict):
    """
    A context's description and its messages (oldest first): what ``GET /contexts/<id>`` sends.
    """

    info: ContextInfo
    messages: list[StoredMessage]
