"""
A fake Anthropic Messages API: ``POST /v1/messages`` (JSON or SSE) and ``GET /v1/models``.

A reply's tool calls (:class:`tests.fakes.Call`) are ``tool_use`` content blocks after
its text, or streamed as the Messages API streams them (the SDK's
``RawContentBlockStartEvent`` and ``InputJSONDelta``): per call, a
``content_block_start`` of a ``tool_use`` block with its id, name and an empty
``input``, a first ``input_json_delta`` with empty ``partial_json``, then one per
fragment of the input's JSON, then ``content_block_stop``; the stop reason is
``tool_use``. As the API does, a request whose messages hold ``tool_use`` or
``tool_result`` blocks but define no ``tools`` is refused with a 400.

A reply's thinking (``Reply.thinking``, ``Reply.redacted_thinking``) comes first:
``thinking`` blocks signed by :func:`signature`, streamed as ``thinking_delta``
events and one ``signature_delta``, then ``redacted_thinking`` blocks, whole. As the
API does, a request with thinking enabled whose last assistant turn calls tools
but does not begin with a thinking block, or that sends back a thinking block whose
signature is not the fake's, is refused with a 400.
"""

from __future__ import annotations

import hashlib
import itertools
import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import attrs
import trio

from tests.fakes._server import (
    UNSET,
    Behaviour,
    Call,
    Cut,
    Fail,
    FakeUpstream,
    Garbled,
    Hang,
    ReceivedRequest,
    Recorded,
    Reply,
    Responder,
    Stall,
    StreamError,
    dumps,
    echoed_keys,
    run_standalone,
    running,
    split_text,
)

__all__ = ["DEFAULT_MODELS", "FakeAnthropic", "counted", "fake_anthropic", "signature"]

DEFAULT_MODELS = ("claude-sonnet-5-5", "claude-haiku-5-5")

_STOP_REASONS = {
    "stop": "end_turn",
    "length": "max_tokens",
    "tool_calls": "tool_use",
    "content_filter": "refusal",
}

# kind -> (status, Anthropic error type, message)
_ERRORS = {
    "rate_limited": (
        429,
        "rate_limit_error",
        "Number of request tokens has exceeded your rate limit.",
    ),
    "overloaded": (529, "overloaded_error", "Overloaded"),
    "server_error": (500, "api_error", "Internal server error"),
    "unauthorized": (401, "authentication_error", "invalid x-api-key"),
    "forbidden": (403, "permission_error", "Your API key does not have permission."),
    "context_too_long": (
        400,
        "invalid_request_error",
        "prompt is too long: 215000 tokens > 200000 maximum",
    ),
    "bad_request": (400, "invalid_request_error", "messages: field required"),
    "not_found": (404, "not_found_error", "model: no-such-model"),
}

_ids = itertools.count(1)


def error_body(kind: str, message: str | None = None) -> dict[str, Any]:
    """
    Anthropic's error JSON for a provider-neutral ``kind``.
    """
    _, error_type, default = _ERRORS.get(kind, (500, "api_error", kind))
    return {
        "type": "error",
        "error": {"type": error_type, "message": message or default},
        "request_id": f"req_fake{next(_ids)}",
    }


def _sse(event: str, data: Any) -> bytes:
    return f"event: {event}\ndata: {dumps(data)}\n\n".encode()


@attrs.define(eq=False)
class FakeAnthropic(FakeUpstream):
    """
    Speaks the Anthropic Messages wire format, streaming as server-sent events.
    """

    models: tuple[str, ...] = DEFAULT_MODELS
    # Reject what API version 2026-10-21 rejects (temperature, top_p, top_k).
    strict: bool = True

    async def handle(self, request: ReceivedRequest, respond: Responder) -> None:
        if request.method == "GET" and request.path == "/v1/models" and self.models_failure:
            failure = self.models_failure
            await respond.json(
                failure.status, error_body(failure.kind, failure.message), failure.headers
            )
        elif (
            request.method == "GET"
            and request.path == "/v1/models"
            and self.models_body is not UNSET
        ):
            await respond.json(200, self.models_body)
        elif request.method == "GET" and request.path == "/v1/models":
            await respond.json(200, self._model_list())
        elif request.method == "POST" and request.path == "/v1/messages":
            await self._messages(request, respond, self.next_behaviour())
        elif request.method == "POST" and request.path == "/v1/messages/count_tokens":
            await self._count(request, respond)
        else:
            await respond.json(404, error_body("not_found", f"no route {request.path}"))

    def _model_list(self) -> dict[str, Any]:
        data = [
            {
                "type": "model",
                "id": m,
                "display_name": m,
                "created_at": "2025-01-01T00:00:00Z",
            }
            for m in self.models
        ]
        return {
            "data": data,
            "has_more": False,
            "first_id": data[0]["id"] if data else None,
            "last_id": data[-1]["id"] if data else None,
        }

    async def _count(self, request: ReceivedRequest, respond: Responder) -> None:
        """
        ``{"input_tokens"}``: :func:`counted` of the body; a ``Fail`` next in the script fails it.

        As the API does, a field the endpoint does not take (``max_tokens``,
        ``stream``, ...) is a 400.
        """
        body = request.json or {}
        # Only a scripted failure is this request's; a scripted reply waits for a message.
        failing = bool(self._script) and isinstance(self._script[0], Fail)
        behaviour = self.next_behaviour() if failing else None
        extra = sorted(set(body) - set(_COUNT_FIELDS))
        if isinstance(behaviour, Fail):
            await respond.json(behaviour.status, error_body(behaviour.kind, behaviour.message))
        elif extra:
            message = f"{extra[0]}: Extra inputs are not permitted"
            await respond.json(400, error_body("bad_request", message))
        elif not body.get("messages") or not body.get("model"):
            await respond.json(400, error_body("bad_request", "messages: Field required"))
        else:
            await respond.json(200, {"input_tokens": counted(body)})

    async def _messages(
        self, request: ReceivedRequest, respond: Responder, behaviour: Behaviour
    ) -> None:
        body = request.json or {}
        model = body.get("model", "claude-fake")
        streaming = bool(body.get("stream"))
        # API version 2026-10-21 (SDK 2.x) rejects the sampling parameters outright.
        if self.strict and (extra := {"temperature", "top_p", "top_k"} & body.keys()):
            behaviour = Fail.bad_request(f"{sorted(extra)[0]}: Extra inputs are not permitted")
        elif _uses_tools(body) and not body.get("tools"):
            behaviour = Fail.bad_request(
                "Requests which include `tool_use` or `tool_result` blocks must define tools."
            )
        elif (refusal := _thinking_refusal(body)) is not None:
            behaviour = Fail.bad_request(refusal)
        match behaviour:
            case Fail(status=status, kind=kind, message=message, headers=headers):
                if kind == "overloaded":
                    status = 529
                body = error_body(kind, message)
                if behaviour.echo_key:
                    body["error"]["message"] += echoed_keys(request)
                await respond.json(status, body, headers)
            case Hang():
                await respond.hold()
            case Recorded() as recorded:
                await recorded.send(respond)
            case Reply() as reply if not streaming:
                await trio.sleep(reply.delay)
                await respond.json(200, _message(model, reply))
            case Reply() as reply:
                await respond.start(200, "text/event-stream")
                start = _message_start(model, reply.input_tokens - reply.cached_tokens)
                if reply.cached_tokens:
                    start["message"]["usage"].update(
                        cache_creation_input_tokens=0, cache_read_input_tokens=reply.cached_tokens
                    )
                if reply.raw_usage is not UNSET:
                    start["message"]["usage"] = reply.raw_usage
                await respond.send(_sse("message_start", start))
                for event, data in _content_events(reply):
                    if event == "content_block_delta":
                        await trio.sleep(reply.delay)
                    await respond.send(_sse(event, data))
                delta: dict[str, Any] = {
                    "type": "message_delta",
                    "delta": {
                        "stop_reason": _STOP_REASONS.get(reply.reason, reply.reason),
                        "stop_sequence": None,
                    },
                }
                if reply.raw_usage is not UNSET:
                    delta["usage"] = reply.raw_usage
                elif reply.usage:
                    delta["usage"] = _delta_usage(reply)
                await respond.send(_sse("message_delta", delta))
                await respond.send(_sse("message_stop", {"type": "message_stop"}))
                await respond.end()
            case Garbled(body=garbage) if not streaming:
                await respond.json(200, garbage)
            case Garbled(event=garbage, after=after, text=text, event_type=event_type):
                await respond.start(200, "text/event-stream")
                await respond.send(_sse("message_start", _message_start(model, 12)))
                await respond.send(_sse("content_block_start", _block_start()))
                for piece in split_text(text, after):
                    await respond.send(_sse("content_block_delta", _text_delta(piece)))
                await respond.send(_sse(event_type, garbage))
                await respond.send(
                    _sse("content_block_stop", {"type": "content_block_stop", "index": 0})
                )
                await respond.send(_sse("message_delta", _message_delta(1)))
                await respond.send(_sse("message_stop", {"type": "message_stop"}))
                await respond.end()
            case Cut(after=after, text=text) if not streaming:
                whole = dumps(_message(model, Reply(text))).encode()
                await respond.start(200, "application/json", length=len(whole))
                await respond.send(whole[: len(whole) // 2])
                await respond.drop()
            case (
                Cut(after=after, text=text)
                | Stall(after=after, text=text)
                | StreamError(after=after, text=text)
            ):
                await respond.start(200, "text/event-stream")
                await respond.send(_sse("message_start", _message_start(model, 12)))
                await respond.send(_sse("content_block_start", _block_start()))
                for piece in split_text(text, after):
                    await respond.send(_sse("content_block_delta", _text_delta(piece)))
                if isinstance(behaviour, StreamError):
                    error = error_body(behaviour.kind, behaviour.message)
                    if behaviour.echo_key:
                        error["error"]["message"] += echoed_keys(request)
                    await respond.send(_sse("error", error))
                    await respond.end()
                elif isinstance(behaviour, Stall):
                    await respond.hold()
                else:
                    await respond.drop()


def _uses_tools(body: dict[str, Any]) -> bool:
    """Whether a request's messages hold tool_use or tool_result blocks."""
    for message in body.get("messages") or []:
        content = message.get("content") if isinstance(message, dict) else None
        if isinstance(content, list) and any(
            isinstance(b, dict) and b.get("type") in ("tool_use", "tool_result") for b in content
        ):
            return True
    return False


# What the count_tokens endpoint takes.
_COUNT_FIELDS = (
    "model",
    "messages",
    "system",
    "tools",
    "tool_choice",
    "thinking",
    "output_config",
    "mcp_servers",
)


def counted(body: dict[str, Any]) -> int:
    """The fake's token count of a count_tokens body: its messages', system's and tools' JSON, a token per 3 bytes."""
    parts = (body.get("messages"), body.get("system"), body.get("tools"))
    return 3 + sum(len(dumps(p)) // 3 for p in parts if p)


def signature(thinking: str) -> str:
    """The signature the fake gives a thinking block (and checks when it comes back)."""
    return "sig-" + hashlib.sha256(thinking.encode()).hexdigest()[:24]


def _thinking_refusal(body: dict[str, Any]) -> str | None:
    """What the API says of a request's thinking blocks, or None when it takes them."""
    messages = [m for m in body.get("messages") or [] if isinstance(m, dict)]
    for i, message in enumerate(messages):
        content = message.get("content")
        for j, block in enumerate(content if isinstance(content, list) else []):
            if not isinstance(block, dict) or block.get("type") != "thinking":
                continue
            if block.get("signature") != signature(str(block.get("thinking"))):
                return f"messages.{i}.content.{j}: Invalid `signature` in `thinking` block"
    thinking = body.get("thinking")
    if not isinstance(thinking, dict) or thinking.get("type") != "enabled":
        return None
    assistant = [i for i, m in enumerate(messages) if m.get("role") == "assistant"]
    if not assistant:
        return None
    last = assistant[-1]
    content = messages[last].get("content")
    blocks = content if isinstance(content, list) else []
    if any(isinstance(b, dict) and b.get("type") == "tool_use" for b in blocks):
        first = blocks[0].get("type") if isinstance(blocks[0], dict) else None
        if first not in ("thinking", "redacted_thinking"):
            return (
                f"messages.{last}.content.0.type: Expected `thinking` or `redacted_thinking`, "
                f"but found `{first}`. When `thinking` is enabled, a final `assistant` message "
                "must start with a thinking block."
            )
    return None


def _thinking_blocks(reply: Reply) -> list[dict[str, Any]]:
    return [
        {"type": "thinking", "thinking": t, "signature": signature(t)} for t in reply.thinking
    ] + [{"type": "redacted_thinking", "data": d} for d in reply.redacted_thinking]


def _call_id(call: Call, index: int) -> str:
    return call.id or f"toolu_fake{index}{call.name}"


def _usage(reply: Reply) -> dict[str, Any]:
    usage: dict[str, Any] = {
        "input_tokens": reply.input_tokens - reply.cached_tokens,
        "output_tokens": reply.completion_tokens,
    }
    if reply.cached_tokens:
        usage.update(cache_creation_input_tokens=0, cache_read_input_tokens=reply.cached_tokens)
    if reply.reasoning_tokens:
        usage["output_tokens_details"] = {"thinking_tokens": reply.reasoning_tokens}
    return usage


def _delta_usage(reply: Reply) -> dict[str, Any]:
    usage: dict[str, Any] = {"output_tokens": reply.completion_tokens}
    if reply.reasoning_tokens:
        usage["output_tokens_details"] = {"thinking_tokens": reply.reasoning_tokens}
    return usage


def _content_events(reply: Reply) -> list[tuple[str, dict[str, Any]]]:
    """A stream's content blocks: the text block (when there is text), then each tool_use block."""
    events: list[tuple[str, dict[str, Any]]] = []
    index = 0
    for block in _thinking_blocks(reply):
        start = {"type": "content_block_start", "index": index}
        if block["type"] == "thinking":
            text = block["thinking"]
            start["content_block"] = {"type": "thinking", "thinking": "", "signature": ""}
            events.append(("content_block_start", start))
            for piece in (text[: len(text) // 2], text[len(text) // 2 :]):
                delta = {"type": "thinking_delta", "thinking": piece}
                events.append(
                    (
                        "content_block_delta",
                        {"type": "content_block_delta", "index": index, "delta": delta},
                    )
                )
            delta = {"type": "signature_delta", "signature": block["signature"]}
            events.append(
                (
                    "content_block_delta",
                    {"type": "content_block_delta", "index": index, "delta": delta},
                )
            )
        else:
            start["content_block"] = block
            events.append(("content_block_start", start))
        events.append(("content_block_stop", {"type": "content_block_stop", "index": index}))
        index += 1
    if reply.pieces() or not reply.tool_calls:
        start = _block_start(index)
        if reply.citations:
            start["content_block"]["citations"] = []
        events.append(("content_block_start", start))
        events.append(("ping", {"type": "ping"}))
        for citation in reply.citations:
            delta = {"type": "citations_delta", "citation": citation}
            events.append(
                (
                    "content_block_delta",
                    {"type": "content_block_delta", "index": index, "delta": delta},
                )
            )
        events += [("content_block_delta", _text_delta(piece, index)) for piece in reply.pieces()]
        events.append(("content_block_stop", {"type": "content_block_stop", "index": index}))
        index += 1
    for number, call in enumerate(reply.tool_calls):
        block = {"type": "tool_use", "id": _call_id(call, number), "name": call.name, "input": {}}
        events.append(
            (
                "content_block_start",
                {"type": "content_block_start", "index": index, "content_block": block},
            )
        )
        for fragment in ("", *call.fragments()):
            delta = {"type": "input_json_delta", "partial_json": fragment}
            events.append(
                (
                    "content_block_delta",
                    {"type": "content_block_delta", "index": index, "delta": delta},
                )
            )
        events.append(("content_block_stop", {"type": "content_block_stop", "index": index}))
        index += 1
    return events


def _message(model: str, reply: Reply) -> dict[str, Any]:
    content: list[dict[str, Any]] = _thinking_blocks(reply)
    if reply.joined or not reply.tool_calls:
        text: dict[str, Any] = {"type": "text", "text": reply.joined}
        if reply.citations:
            text["citations"] = list(reply.citations)
        content.append(text)
    content += [
        {
            "type": "tool_use",
            "id": _call_id(call, n),
            "name": call.name,
            "input": dict(call.arguments),
        }
        for n, call in enumerate(reply.tool_calls)
    ]
    return {
        "id": f"msg_fake{next(_ids)}",
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": content,
        "stop_reason": _STOP_REASONS.get(reply.reason, reply.reason),
        "stop_sequence": None,
        "usage": _usage(reply) if reply.raw_usage is UNSET else reply.raw_usage,
    }


def _message_delta(output_tokens: int) -> dict[str, Any]:
    return {
        "type": "message_delta",
        "delta": {"stop_reason": "end_turn", "stop_sequence": None},
        "usage": {"output_tokens": output_tokens},
    }


def _message_start(model: str, input_tokens: int) -> dict[str, Any]:
    return {
        "type": "message_start",
        "message": {
            "id": f"msg_fake{next(_ids)}",
            "type": "message",
            "role": "assistant",
            "model": model,
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": {"input_tokens": input_tokens, "output_tokens": 1},
        },
    }


def _block_start(index: int = 0) -> dict[str, Any]:
    return {
        "type": "content_block_start",
        "index": index,
        "content_block": {"type": "text", "text": ""},
    }


def _text_delta(text: str, index: int = 0) -> dict[str, Any]:
    return {
        "type": "content_block_delta",
        "index": index,
        "delta": {"type": "text_delta", "text": text},
    }


@asynccontextmanager
async def fake_anthropic(
    *, tls: ssl.SSLContext | None = None, **kwargs: Any
) -> AsyncIterator[FakeAnthropic]:
    """
    Serve a :class:`FakeAnthropic` on loopback; ``fake.base_url`` is the SDK's base URL.
    """
    async with running(FakeAnthropic(**kwargs), tls=tls) as fake:
        yield fake


if __name__ == "__main__":
    run_standalone(FakeAnthropic)
