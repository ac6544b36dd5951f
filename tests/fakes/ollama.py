"""
A fake Ollama server: ``POST /api/chat`` (JSON or NDJSON stream) and ``GET /api/tags``.

As in Ollama, a chat request streams unless its body says ``"stream": false``.

A reply's tool calls (:class:`tests.fakes.Call`) are the message's ``tool_calls``, each
``{"function": {"name", "arguments"}}`` with the arguments as an object (the ``ollama``
package's ``Message.ToolCall``); a call given an ``id`` is written as Ollama 0.12 and
later write it, with the id and ``function.index``. Streamed, the calls arrive whole in
one line before the last; ``done_reason`` stays ``stop``, as Ollama sends it.
"""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import attrs
import trio

from tests.fakes._server import (
    UNSET,
    Behaviour,
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

__all__ = ["DEFAULT_MODELS", "FakeOllama", "fake_ollama"]

DEFAULT_MODELS = ("llama3.2:latest", "qwen2.5:7b")

_CREATED = "2025-01-01T00:00:00.000000Z"

# kind -> (status, message)
_ERRORS = {
    "rate_limited": (429, "too many requests"),
    "overloaded": (503, "server busy, please try again.  maximum pending requests exceeded"),
    "server_error": (500, "llama runner process has terminated: exit status 2"),
    "unauthorized": (401, "unauthorized"),
    "forbidden": (403, "forbidden"),
    "context_too_long": (400, "the input length exceeds the context length"),
    "bad_request": (400, "invalid request"),
    "not_found": (404, 'model "no-such-model" not found, try pulling it first'),
}


def error_body(kind: str, message: str | None = None) -> dict[str, Any]:
    """
    Ollama's error JSON (``{"error": "..."}``) for a provider-neutral ``kind``.
    """
    _, default = _ERRORS.get(kind, (500, kind))
    return {"error": message or default}


def _line(data: Any) -> bytes:
    return dumps(data).encode() + b"\n"


@attrs.define(eq=False)
class FakeOllama(FakeUpstream):
    """
    Speaks Ollama's native chat API.
    """

    models: tuple[str, ...] = DEFAULT_MODELS

    async def handle(self, request: ReceivedRequest, respond: Responder) -> None:
        if request.method == "GET" and request.path == "/api/tags" and self.models_failure:
            failure = self.models_failure
            await respond.json(
                failure.status, error_body(failure.kind, failure.message), failure.headers
            )
        elif (
            request.method == "GET"
            and request.path == "/api/tags"
            and self.models_body is not UNSET
        ):
            await respond.json(200, self.models_body)
        elif request.method == "GET" and request.path == "/api/tags":
            await respond.json(200, {"models": [_tag(m) for m in self.models]})
        elif request.method == "POST" and request.path == "/api/chat":
            await self._chat(request, respond, self.next_behaviour())
        else:
            await respond.json(404, {"error": "404 page not found"})

    async def _chat(
        self, request: ReceivedRequest, respond: Responder, behaviour: Behaviour
    ) -> None:
        body = request.json or {}
        model = body.get("model", "llama-fake")
        streaming = body.get("stream", True) is not False
        match behaviour:
            case Fail(status=status, kind=kind, message=message, headers=headers):
                if kind == "overloaded":
                    status = 503
                body = error_body(kind, message)
                if behaviour.echo_key:
                    body["error"] += echoed_keys(request)
                await respond.json(status, body, headers)
            case Hang():
                await respond.hold()
            case Recorded() as recorded:
                await recorded.send(respond)
            case Reply() as reply if not streaming:
                await trio.sleep(reply.delay)
                final = _final(model, reply)
                final["message"] = {"role": "assistant", "content": reply.joined}
                if reply.tool_calls:
                    final["message"]["tool_calls"] = _calls(reply)
                await respond.json(200, final)
            case Reply() as reply:
                await respond.start(200, "application/x-ndjson")
                for piece in reply.pieces():
                    await trio.sleep(reply.delay)
                    await respond.send(_line(_piece(model, piece)))
                if reply.tool_calls:
                    calls = _piece(model, "")
                    calls["message"]["tool_calls"] = _calls(reply)
                    await respond.send(_line(calls))
                await respond.send(_line(_final(model, reply)))
                await respond.end()
            case Garbled(body=garbage) if not streaming:
                await respond.json(200, garbage)
            case Garbled(event=garbage, after=after, text=text):
                await respond.start(200, "application/x-ndjson")
                for piece in split_text(text, after):
                    await respond.send(_line(_piece(model, piece)))
                await respond.send(_line(garbage))
                await respond.send(_line(_final(model, Reply(text))))
                await respond.end()
            case Cut(after=after, text=text) if not streaming:
                final = _final(model, Reply(text))
                final["message"] = {"role": "assistant", "content": text}
                whole = dumps(final).encode()
                await respond.start(200, "application/json", length=len(whole))
                await respond.send(whole[: len(whole) // 2])
                await respond.drop()
            case (
                Cut(after=after, text=text)
                | Stall(after=after, text=text)
                | StreamError(after=after, text=text)
            ):
                await respond.start(200, "application/x-ndjson")
                for piece in split_text(text, after):
                    await respond.send(_line(_piece(model, piece)))
                if isinstance(behaviour, StreamError):
                    error = error_body(behaviour.kind, behaviour.message)
                    if behaviour.echo_key:
                        error["error"] += echoed_keys(request)
                    await respond.send(_line(error))
                    await respond.end()
                elif isinstance(behaviour, Stall):
                    await respond.hold()
                else:
                    await respond.drop()


def _tag(model: str) -> dict[str, Any]:
    return {
        "name": model,
        "model": model,
        "modified_at": _CREATED,
        "size": 2019393189,
        "digest": "a80c4f17acd55265feec403c7aef86be0c25983ab279d83f3bcd3abbcb5b8b72",
        "details": {
            "parent_model": "",
            "format": "gguf",
            "family": "llama",
            "families": ["llama"],
            "parameter_size": "3.2B",
            "quantization_level": "Q4_K_M",
        },
    }


def _calls(reply: Reply) -> list[dict[str, Any]]:
    calls: list[dict[str, Any]] = []
    for index, call in enumerate(reply.tool_calls):
        function: dict[str, Any] = {"name": call.name, "arguments": dict(call.arguments)}
        if call.id is None:
            calls.append({"function": function})
        else:
            calls.append({"id": call.id, "function": {"index": index, **function}})
    return calls


def _piece(model: str, text: str) -> dict[str, Any]:
    return {
        "model": model,
        "created_at": _CREATED,
        "message": {"role": "assistant", "content": text},
        "done": False,
    }


def _final(model: str, reply: Reply) -> dict[str, Any]:
    final: dict[str, Any] = {
        "model": model,
        "created_at": _CREATED,
        "message": {"role": "assistant", "content": ""},
        "done": True,
        "done_reason": "length" if reply.finish_reason == "length" else "stop",
        "total_duration": 5191566416,
        "load_duration": 2154458,
    }
    if reply.usage:
        final.update(
            prompt_eval_count=reply.input_tokens,
            prompt_eval_duration=383809000,
            eval_count=reply.completion_tokens,
            eval_duration=4799921000,
        )
    if reply.raw_usage is not UNSET:
        final.update(reply.raw_usage)
    return final


@asynccontextmanager
async def fake_ollama(
    *, tls: ssl.SSLContext | None = None, **kwargs: Any
) -> AsyncIterator[FakeOllama]:
    """
    Serve a :class:`FakeOllama` on loopback; ``fake.base_url`` is the Ollama root URL.
    """
    async with running(FakeOllama(**kwargs), tls=tls) as fake:
        yield fake


if __name__ == "__main__":
    run_standalone(FakeOllama)
