"""
A fake OpenAI Chat Completions API: ``POST /v1/chat/completions`` and ``GET /v1/models``.

Streams are ``chat.completion.chunk`` server-sent events ending with ``data: [DONE]``;
with ``stream_options.include_usage`` the last chunk before it has empty ``choices`` and
the usage. ``fake.base_url`` ends in ``/v1``, as the OpenAI SDK expects.

A reply's tool calls (:class:`tests.fakes.Call`) are the message's ``tool_calls``, or
streamed as OpenAI streams them (the SDK's ``ChoiceDeltaToolCall``): per call, a delta
with its ``index``, ``id``, ``type`` and ``function.name`` and empty arguments (in the
first chunk, beside the role, when there is no text), then deltas with the index and a
fragment of ``function.arguments``; the finish reason is ``tool_calls``.
"""

from __future__ import annotations

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

__all__ = ["DEFAULT_MODELS", "FakeOpenAI", "fake_openai"]

DEFAULT_MODELS = ("gpt-4o-mini", "gpt-4o")

# kind -> (status, error type, error code, message)
_ERRORS: dict[str, tuple[int, str, str | None, str]] = {
    "rate_limited": (
        429,
        "requests",
        "rate_limit_exceeded",
        "Rate limit reached for requests. Please try again in 1s.",
    ),
    "overloaded": (
        503,
        "server_error",
        None,
        "The engine is currently overloaded, please try again later.",
    ),
    "server_error": (500, "server_error", None, "The server had an error processing your request."),
    "unauthorized": (
        401,
        "invalid_request_error",
        "invalid_api_key",
        "Incorrect API key provided: sk-fake. You can find your API key at "
        "https://platform.openai.com/account/api-keys.",
    ),
    "forbidden": (
        403,
        "invalid_request_error",
        "unsupported_country_region_territory",
        "Forbidden",
    ),
    "context_too_long": (
        400,
        "invalid_request_error",
        "context_length_exceeded",
        "This model's maximum context length is 128000 tokens. However, your messages "
        "resulted in 130512 tokens. Please reduce the length of the messages.",
    ),
    "bad_request": (400, "invalid_request_error", None, "Invalid request."),
    "not_found": (
        404,
        "invalid_request_error",
        "model_not_found",
        "The model `no-such-model` does not exist or you do not have access to it.",
    ),
}

_ids = itertools.count(1)


def error_body(kind: str, message: str | None = None) -> dict[str, Any]:
    """
    OpenAI's error JSON for a provider-neutral ``kind``.
    """
    _, error_type, code, default = _ERRORS.get(kind, (500, "server_error", None, kind))
    return {
        "error": {"message": message or default, "type": error_type, "param": None, "code": code}
    }


def _sse(data: Any) -> bytes:
    payload = data if isinstance(data, str) else dumps(data)
    return f"data: {payload}\n\n".encode()


@attrs.define(eq=False)
class FakeOpenAI(FakeUpstream):
    """
    Speaks the OpenAI Chat Completions wire format.
    """

    models: tuple[str, ...] = DEFAULT_MODELS
    base_path = "/v1"

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
            await respond.json(
                200,
                {
                    "object": "list",
                    "data": [
                        {"id": m, "object": "model", "created": 1700000000, "owned_by": "fake"}
                        for m in self.models
                    ],
                },
            )
        elif request.method == "POST" and request.path == "/v1/chat/completions":
            await self._chat(request, respond, self.next_behaviour())
        else:
            await respond.json(404, error_body("not_found", f"no route {request.path}"))

    async def _chat(
        self, request: ReceivedRequest, respond: Responder, behaviour: Behaviour
    ) -> None:
        body = request.json or {}
        model = body.get("model", "gpt-fake")
        streaming = bool(body.get("stream"))
        include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
        ident = f"chatcmpl-fake{next(_ids)}"
        match behaviour:
            case Fail(status=status, kind=kind, message=message, headers=headers):
                if kind == "overloaded":
                    status = 503
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
                await respond.json(200, _completion(ident, model, reply))
            case Reply() as reply:
                await respond.start(200, "text/event-stream")
                for delta in _deltas(reply):
                    await trio.sleep(reply.delay)
                    await respond.send(_sse(_chunk(ident, model, delta)))
                await respond.send(_sse(_chunk(ident, model, {}, reply.reason)))
                if include_usage and reply.usage:
                    usage_chunk = _chunk(ident, model, None)
                    usage_chunk["usage"] = _usage(reply)
                    await respond.send(_sse(usage_chunk))
                await respond.send(_sse("[DONE]"))
                await respond.end()
            case Garbled(body=garbage) if not streaming:
                await respond.json(200, garbage)
            case Garbled(event=garbage, after=after, text=text):
                await respond.start(200, "text/event-stream")
                for piece in split_text(text, after):
                    await respond.send(_sse(_chunk(ident, model, {"content": piece})))
                await respond.send(_sse(garbage))
                await respond.send(_sse(_chunk(ident, model, {}, "stop")))
                await respond.send(_sse("[DONE]"))
                await respond.end()
            case Cut(after=after, text=text) if not streaming:
                whole = dumps(_completion(ident, model, Reply(text))).encode()
                await respond.start(200, "application/json", length=len(whole))
                await respond.send(whole[: len(whole) // 2])
                await respond.drop()
            case (
                Cut(after=after, text=text)
                | Stall(after=after, text=text)
                | StreamError(after=after, text=text)
            ):
                await respond.start(200, "text/event-stream")
                await respond.send(_sse(_chunk(ident, model, {"role": "assistant", "content": ""})))
                for piece in split_text(text, after):
                    await respond.send(_sse(_chunk(ident, model, {"content": piece})))
                if isinstance(behaviour, StreamError):
                    error = error_body(behaviour.kind, behaviour.message)
                    if behaviour.echo_key:
                        error["error"]["message"] += echoed_keys(request)
                    await respond.send(_sse(error))
                    await respond.end()
                elif isinstance(behaviour, Stall):
                    await respond.hold()
                else:
                    await respond.drop()


def _call_id(call: Call, index: int) -> str:
    return call.id or f"call_fake{index}{call.name}"


def _deltas(reply: Reply) -> list[dict[str, Any]]:
    """A streamed reply's deltas: the role, the text pieces, then each call's header and fragments."""
    pieces = reply.pieces()
    first: dict[str, Any] = {
        "role": "assistant",
        "content": "" if pieces or not reply.tool_calls else None,
    }
    deltas = [first, *({"content": piece} for piece in pieces)]
    for index, call in enumerate(reply.tool_calls):
        header = {
            "index": index,
            "id": _call_id(call, index),
            "type": "function",
            "function": {"name": call.name, "arguments": ""},
        }
        if len(deltas) == 1 and "tool_calls" not in first:
            first.update(tool_calls=[header], refusal=None)
        else:
            deltas.append({"tool_calls": [header]})
        deltas.extend(
            {"tool_calls": [{"index": index, "function": {"arguments": fragment}}]}
            for fragment in call.fragments()
        )
    return deltas


def _usage(reply: Reply) -> Any:
    if reply.raw_usage is not UNSET:
        return reply.raw_usage
    usage: dict[str, Any] = {
        "prompt_tokens": reply.input_tokens,
        "completion_tokens": reply.completion_tokens,
        "total_tokens": reply.input_tokens + reply.completion_tokens,
    }
    if reply.cached_tokens or reply.reasoning_tokens:
        usage["prompt_tokens_details"] = {"cached_tokens": reply.cached_tokens, "audio_tokens": 0}
        usage["completion_tokens_details"] = {
            "reasoning_tokens": reply.reasoning_tokens,
            "audio_tokens": 0,
            "accepted_prediction_tokens": 0,
            "rejected_prediction_tokens": 0,
        }
    return usage


def _completion(ident: str, model: str, reply: Reply) -> dict[str, Any]:
    message: dict[str, Any] = {
        "role": "assistant",
        "content": reply.joined if reply.joined or not reply.tool_calls else None,
        "refusal": None,
    }
    if reply.tool_calls:
        message["tool_calls"] = [
            {
                "id": _call_id(call, index),
                "type": "function",
                "function": {"name": call.name, "arguments": call.json},
            }
            for index, call in enumerate(reply.tool_calls)
        ]
    return {
        "id": ident,
        "object": "chat.completion",
        "created": 1700000000,
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": message,
                "logprobs": None,
                "finish_reason": reply.reason,
            }
        ],
        "usage": _usage(reply),
        "system_fingerprint": None,
    }


def _chunk(
    ident: str, model: str, delta: dict[str, Any] | None, finish_reason: str | None = None
) -> dict[str, Any]:
    """
    One ``chat.completion.chunk``; ``delta=None`` makes the usage chunk (empty choices).
    """
    choices = (
        []
        if delta is None
        else [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}]
    )
    return {
        "id": ident,
        "object": "chat.completion.chunk",
        "created": 1700000000,
        "model": model,
        "system_fingerprint": None,
        "choices": choices,
        "usage": None,
    }


@asynccontextmanager
async def fake_openai(
    *, tls: ssl.SSLContext | None = None, **kwargs: Any
) -> AsyncIterator[FakeOpenAI]:
    """
    Serve a :class:`FakeOpenAI` on loopback; ``fake.base_url`` ends in ``/v1``.
    """
    async with running(FakeOpenAI(**kwargs), tls=tls) as fake:
        yield fake


if __name__ == "__main__":
    run_standalone(FakeOpenAI)
