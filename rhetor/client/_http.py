"""
:class:`RhetorClient`: Rhetor's HTTP and SSE API as awaitable calls.

Built on anyio and httpx, so one client works under asyncio and under trio.
Every call either returns what the server answered or raises a
:class:`~rhetor.client.RhetorClientError`; see ``_errors.py`` for the tree.
"""

from __future__ import annotations

import json
import os
from collections.abc import AsyncGenerator, AsyncIterator, Mapping, Sequence
from contextlib import AbstractAsyncContextManager, aclosing
from types import TracebackType
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import httpx

from rhetor.client._errors import (
    RhetorClientError,
    ServerError,
    error_from_body,
    transport_errors,
)
from rhetor.client._models import Reply

if TYPE_CHECKING:
    from rhetor.client._session import Session

__all__ = ["DEFAULT_HOST", "DEFAULT_PORT", "ReplyStream", "RhetorClient"]

DEFAULT_HOST = "localhost"
DEFAULT_PORT = 8300
# Rhetor's own per-request deadline is 120 s by default; wait a little longer
# than that so the server's answer (even a timeout error) reaches the caller.
DEFAULT_TIMEOUT = 130.0
# What the seeds' estimate calls assume when they give no max_tokens.
DEFAULT_ESTIMATE_MAX_TOKENS = 1000


def _base_url(host: str, port: int) -> str:
    if host.startswith(("http://", "https://")):
        return host.rstrip("/")
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"  # a bare IPv6 address
    return f"http://{host}:{port}"


def _decode(response: httpx.Response) -> Any:
    try:
        return response.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        return None


def _check(response: httpx.Response) -> Any:
    """The response's JSON, or the error it reports raised as a client error."""
    body = _decode(response)
    if response.status_code >= 400:
        raise error_from_body(body, response.status_code)
    if body is None:
        raise ServerError(
            f"Rhetor answered {response.status_code} with a body that is not JSON",
            status=response.status_code,
        )
    return body


def _object(body: Any, what: str) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise ServerError(f"Rhetor's {what} answer is not a JSON object")
    return body


def _sse_payload(data: list[str]) -> dict[str, Any] | None:
    payload = "\n".join(data)
    try:
        event = json.loads(payload)
    except json.JSONDecodeError as exc:
        raise ServerError(f"Rhetor sent a stream event that is not JSON: {payload!r}") from exc
    return event if isinstance(event, dict) else None


async def _sse_events(response: httpx.Response) -> AsyncGenerator[dict[str, Any], None]:
    """Decode Server-Sent Events' ``data:`` payloads as JSON objects, one per event."""
    lines = response.aiter_lines()
    data: list[str] = []
    try:
        async for line in lines:
            if line.startswith("data:"):
                data.append(line[5:].removeprefix(" "))
            elif not line.strip() and data:
                event, data = _sse_payload(data), []
                if event is not None:
                    yield event
            # Anything else is a comment, an event name or an id: not used.
        if data and (event := _sse_payload(data)) is not None:
            yield event
    finally:
        # httpx's line iterator is an async generator too; close it now, not at GC.
        aclose = getattr(lines, "aclose", None)
        if aclose is not None:
            await aclose()


class ReplyStream(AsyncIterator[str], AbstractAsyncContextManager["ReplyStream"]):
    """
    A streamed reply: iterate it for text chunks; ``.reply`` is set once it ends.

    It behaves like an async generator: ``aclose()`` (or leaving ``async with``)
    closes the HTTP response, and the server cancels the request down to the
    provider call. Breaking out of ``async for`` without closing it leaves the
    close to garbage collection; use ``async with`` to make it prompt.

    Error handling: an error event mid-stream raises the matching
    :class:`~rhetor.client.RhetorClientError` from the iteration.
    """

    def __init__(
        self, client: RhetorClient, path: str, body: dict[str, Any], headers: dict[str, str]
    ) -> None:
        self._parts: list[str] = []
        #: The whole reply (text, model, provider, usage, cost), once the stream is done.
        self.reply: Reply | None = None
        self._events = self._run(client, path, body, headers)

    @property
    def text(self) -> str:
        """The text streamed so far."""
        return "".join(self._parts)

    def __aiter__(self) -> ReplyStream:
        return self

    async def __anext__(self) -> str:
        return await self._events.__anext__()

    async def aclose(self) -> None:
        """Stop reading; the server cancels the request if it is still running."""
        await self._events.aclose()

    async def __aenter__(self) -> ReplyStream:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def _run(
        self, client: RhetorClient, path: str, body: dict[str, Any], headers: dict[str, str]
    ) -> AsyncGenerator[str, None]:
        last: dict[str, Any] = {}
        failure: RhetorClientError | None = None
        url = client.base_url + path
        with transport_errors(url):
            async with client.http.stream("POST", path, json=body, headers=headers) as response:
                if response.status_code >= 400:
                    await response.aread()
                    raise error_from_body(_decode(response), response.status_code)
                # Read to the end of the stream even after the final event (the
                # server ends it there): an exhausted stream leaves no half-read
                # httpx generators behind for the garbage collector.
                async with aclosing(_sse_events(response)) as events:
                    async for event in events:
                        if failure is not None or self.reply is not None:
                            continue
                        if event.get("error") is not None:
                            failure = error_from_body(event)
                            continue
                        chunk = event.get("chunk")
                        if isinstance(chunk, str) and chunk:
                            self._parts.append(chunk)
                            yield chunk
                        if event.get("done"):
                            self.reply = Reply.from_dict({**last, **event, "message": self.text})
                        else:
                            last = {k: v for k, v in event.items() if k not in ("chunk", "done")}
        if failure is not None:
            raise failure
        if self.reply is None:
            raise ServerError(f"Rhetor's stream from {path} ended before its final event")


class RhetorClient:
    """
    A connection to one Rhetor server, for components that want LLM answers.

    ``RhetorClient()`` reads ``RHETOR_HOST`` (localhost), ``RHETOR_PORT`` (8300)
    and ``RHETOR_API_KEY``. ``transport`` replaces httpx's network transport
    (for an in-process app, or a fake). Use it as an async context manager, or call
    :meth:`close` when done. It works under asyncio and under trio, but one
    instance belongs to one event loop.

    Error handling: every method raises a
    :class:`~rhetor.client.RhetorClientError` subclass, never an httpx error.
    """

    def __init__(
        self,
        host: str | None = None,
        port: int | str | None = None,
        api_key: str | None = None,
        *,
        timeout: float = DEFAULT_TIMEOUT,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.host = host or os.environ.get("RHETOR_HOST") or DEFAULT_HOST
        self.port = int(port or os.environ.get("RHETOR_PORT") or DEFAULT_PORT)
        # An empty key (the seeds' default) means none.
        self._api_key = api_key or os.environ.get("RHETOR_API_KEY") or None
        self.timeout = timeout
        self.base_url = _base_url(self.host, self.port)
        headers = {"X-API-Key": self._api_key} if self._api_key else {}
        self.http = httpx.AsyncClient(
            base_url=self.base_url,
            headers=headers,
            timeout=httpx.Timeout(timeout, connect=min(timeout, 10.0)),
            transport=transport,
        )

    def __repr__(self) -> str:
        # The key is a secret: never in a repr or a log line.
        return f"RhetorClient({self.base_url!r})"

    @property
    def api_key(self) -> str | None:
        """The key sent as ``X-API-Key``, if any."""
        return self._api_key

    async def close(self) -> None:
        """Close the connections this client holds."""
        await self.http.aclose()

    async def __aenter__(self) -> RhetorClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    # -- plumbing -----------------------------------------------------------

    async def request(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        params: Mapping[str, str | int] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> Any:
        """
        Send one request to ``path`` and answer its decoded JSON.

        The escape hatch for endpoints without a method of their own.
        """
        with transport_errors(self.base_url + path):
            response = await self.http.request(
                method, path, json=json, params=params, headers=headers
            )
        return _check(response)

    def _llm_body(
        self,
        *,
        message: str | Sequence[Mapping[str, Any]] | None = None,
        messages: Sequence[Mapping[str, Any]] | None = None,
        tools: Sequence[Mapping[str, Any]] | None = None,
        tool_choice: str | Mapping[str, Any] | None = None,
        response_format: Mapping[str, Any] | None = None,
        model: str | None,
        provider: str | None,
        temperature: float | None,
        max_tokens: int | None,
        task_type: str | None,
        context_id: str | None,
        routing_parameters: Mapping[str, Any] | None,
        metadata: Mapping[str, Any] | None,
        system_prompt: str | None,
        component: str | None,
        streaming: bool,
    ) -> tuple[dict[str, Any], dict[str, str]]:
        # The seeds put task_type inside routing_parameters as often as beside
        # it, and the component inside metadata: honour both spellings.
        routing = dict(routing_parameters or {})
        routed_task = routing.pop("task_type", None)
        meta = dict(metadata or {})
        fields: dict[str, Any] = {
            "message": message
            if message is None or isinstance(message, str)
            else [dict(b) for b in message],
            "tools": None if tools is None else [dict(t) for t in tools],
            "tool_choice": tool_choice,
            "response_format": response_format,
            "messages": None if messages is None else [dict(m) for m in messages],
            "context_id": context_id or meta.get("context_id"),
            "task_type": task_type or routed_task,
            "component": component or meta.get("component"),
            "provider": provider,
            "model": model,
            "temperature": temperature,
            "max_tokens": max_tokens,
            "system_prompt": system_prompt,
            "routing_parameters": routing or None,
        }
        body = {k: v for k, v in fields.items() if v is not None}
        body["streaming"] = streaming
        # Metadata has no field in Rhetor's request; its request id, if any,
        # still helps correlate logs.
        request_id = meta.get("request_id")
        headers = {"X-Request-ID": request_id} if isinstance(request_id, str) else {}
        return body, headers

    async def _reply(self, path: str, body: dict[str, Any], headers: dict[str, str]) -> Reply:
        """POST an LLM request built by :meth:`_llm_body` and answer the whole reply."""
        return Reply.from_dict(
            _object(await self.request("POST", path, json=body, headers=headers), "reply")
        )

    # -- LLM requests -------------------------------------------------------

    async def generate(
        self,
        prompt: str | Sequence[Mapping[str, Any]],
        *,
        model: str | None = None,
        provider: str | None = None,
        temperature: float | None = None,
        max_tokens: int | None = None,
        task_type: str | None = None,
        context_id: str | None = None,
        routing_parameters: Mapping[str, Any] | None = None,
        metadata: Mapping[str, Any] | None = None,
        system_prompt: str | None = None,
        component: str | None = None,
        tools: Sequence[Mapping[str, Any]] | None = None,
        tool_choice: str | Mapping[str, Any] | None = None,
        response_format: Mapping[str, Any] | None = None,
    ) -> Reply:
        """
        One prompt, one reply (``POST /message``).

        ``context_id`` keeps a conversation on the server: earlier turns of
        that context are sent along. ``routing_parameters`` (``complexity``,
        ``required_capabilities``, ``max_cost``, and ``task_type``) steer the
        choice of model when none is named. ``prompt`` is text or a list of
        content blocks; ``tools``, ``tool_choice`` and ``response_format`` are
        the native shape's (docs/api.md), and the reply's ``tool_calls`` and
        ``finish_reason`` say what the model called.
        """
        body, headers = self._llm_body(
            message=prompt,
            model=model,
            provider=provider,
            temperature=temperature,
            max_tokens=max_tokens,
            task_type=task_type,
            context_id=context_id,
            routing_parameters=routing_parameters,
            metadata=metadata,
            system_prompt=system_prompt,
            component=component,
            streaming=False,
            tools=tools,
            tool_choice=tool_choice,
            response_format=response_format,
        )
        return await self._reply("/message", body, headers)

    def generate_stream(
        self,
        prompt: str | Sequence[Mapping[str, Any]],
        *,
        model: str | None = None,
        provider: str | None = None,
        temperature: float | None = None,
        max_tokens: int | None = None,
        task_type: str | None = None,
        context_id: str | None = None,
        routing_parameters: Mapping[str, Any] | None = None,
        metadata: Mapping[str, Any] | None = None,
        system_prompt: str | None = None,
        component: str | None = None,
        tools: Sequence[Mapping[str, Any]] | None = None,
        tool_choice: str | Mapping[str, Any] | None = None,
        response_format: Mapping[str, Any] | None = None,
    ) -> ReplyStream:
        """
        Stream one prompt's reply as text chunks (``POST /stream``); see :class:`ReplyStream`.

        Nothing is sent until the first chunk is awaited.
        """
        body, headers = self._llm_body(
            message=prompt,
            model=model,
            provider=provider,
            temperature=temperature,
            max_tokens=max_tokens,
            task_type=task_type,
            context_id=context_id,
            routing_parameters=routing_parameters,
            metadata=metadata,
            system_prompt=system_prompt,
            component=component,
            streaming=True,
            tools=tools,
            tool_choice=tool_choice,
            response_format=response_format,
        )
        return ReplyStream(self, "/stream", body, headers)

    async def chat(
        self,
        messages: Sequence[Mapping[str, Any]],
        *,
        model: str | None = None,
        provider: str | None = None,
        temperature: float | None = None,
        max_tokens: int | None = None,
        task_type: str | None = None,
        context_id: str | None = None,
        routing_parameters: Mapping[str, Any] | None = None,
        metadata: Mapping[str, Any] | None = None,
        system_prompt: str | None = None,
        component: str | None = None,
        tools: Sequence[Mapping[str, Any]] | None = None,
        tool_choice: str | Mapping[str, Any] | None = None,
        response_format: Mapping[str, Any] | None = None,
    ) -> Reply:
        """
        A conversation of ``{role, content}`` turns, ending with the user's (``POST /chat``).

        ``reply.message.content`` is the assistant's answer.
        """
        body, headers = self._llm_body(
            messages=messages,
            model=model,
            provider=provider,
            temperature=temperature,
            max_tokens=max_tokens,
            task_type=task_type,
            context_id=context_id,
            routing_parameters=routing_parameters,
            metadata=metadata,
            system_prompt=system_prompt,
            component=component,
            streaming=False,
            tools=tools,
            tool_choice=tool_choice,
            response_format=response_format,
        )
        return await self._reply("/chat", body, headers)

    def chat_stream(
        self,
        messages: Sequence[Mapping[str, Any]],
        *,
        model: str | None = None,
        provider: str | None = None,
        temperature: float | None = None,
        max_tokens: int | None = None,
        task_type: str | None = None,
        context_id: str | None = None,
        routing_parameters: Mapping[str, Any] | None = None,
        metadata: Mapping[str, Any] | None = None,
        system_prompt: str | None = None,
        component: str | None = None,
        tools: Sequence[Mapping[str, Any]] | None = None,
        tool_choice: str | Mapping[str, Any] | None = None,
        response_format: Mapping[str, Any] | None = None,
    ) -> ReplyStream:
        """
        Stream a conversation's reply as text chunks (``POST /chat`` with streaming).
        """
        body, headers = self._llm_body(
            messages=messages,
            model=model,
            provider=provider,
            temperature=temperature,
            max_tokens=max_tokens,
            task_type=task_type,
            context_id=context_id,
            routing_parameters=routing_parameters,
            metadata=metadata,
            system_prompt=system_prompt,
            component=component,
            streaming=True,
            tools=tools,
            tool_choice=tool_choice,
            response_format=response_format,
        )
        return ReplyStream(self, "/chat", body, headers)

    # -- templates ----------------------------------------------------------

    async def create_template(
        self,
        name: str,
        content: str,
        metadata: Mapping[str, Any] | None = None,
        *,
        description: str | None = None,
        category: str | None = None,
    ) -> str:
        """
        Store a prompt template with ``{name}`` placeholders; answers its id.

        ``metadata`` may carry the seeds' ``description``, ``category``,
        ``required_parameters``, ``optional_parameters`` and ``defaults``; they
        become the template's own fields and the rest is kept as its metadata.
        With no required list, every placeholder not listed as optional is required.
        """
        meta = dict(metadata or {})
        fields: dict[str, Any] = {
            "name": name,
            "content": content,
            "description": description or meta.pop("description", None),
            "category": category or meta.pop("category", None),
            "required": meta.pop("required_parameters", None),
            "optional": meta.pop("optional_parameters", None),
            "defaults": meta.pop("defaults", None),
            "metadata": meta or None,
        }
        body = {k: v for k, v in fields.items() if v is not None}
        created = _object(await self.request("POST", "/templates", json=body), "template")
        template_id = created.get("id", created.get("template_id"))
        if not isinstance(template_id, str):
            raise ServerError("Rhetor's template answer has no id")
        return template_id

    async def render_template(self, template: str, parameters: Mapping[str, Any]) -> str:
        """
        Fill template ``template`` (id or name) server-side; answers the text.

        Error handling: a missing required parameter raises
        :class:`~rhetor.client.ValidationError` whose ``.field`` names it.
        """
        path = f"/templates/{quote(template, safe='')}/render"
        answer = await self.request("POST", path, json={"variables": dict(parameters)})
        if isinstance(answer, dict):
            for key in ("rendered", "prompt", "content", "text"):
                if isinstance(answer.get(key), str):
                    return str(answer[key])
        if isinstance(answer, str):
            return answer
        raise ServerError("Rhetor's render answer holds no text")

    async def generate_from_template(
        self,
        template_name: str,
        parameters: Mapping[str, Any],
        *,
        model: str | None = None,
        provider: str | None = None,
        temperature: float | None = None,
        max_tokens: int | None = None,
        task_type: str | None = None,
        context_id: str | None = None,
        routing_parameters: Mapping[str, Any] | None = None,
        metadata: Mapping[str, Any] | None = None,
        system_prompt: str | None = None,
        component: str | None = None,
        tools: Sequence[Mapping[str, Any]] | None = None,
        tool_choice: str | Mapping[str, Any] | None = None,
        response_format: Mapping[str, Any] | None = None,
    ) -> Reply:
        """
        Render a template with ``parameters``, then :meth:`generate` from it.

        Error handling: a missing required parameter raises
        :class:`~rhetor.client.ValidationError` naming it, before any LLM call.
        """
        prompt = await self.render_template(template_name, parameters)
        return await self.generate(
            prompt,
            model=model,
            provider=provider,
            temperature=temperature,
            max_tokens=max_tokens,
            task_type=task_type,
            context_id=context_id,
            routing_parameters=routing_parameters,
            metadata=metadata,
            system_prompt=system_prompt,
            component=component,
            tools=tools,
            tool_choice=tool_choice,
            response_format=response_format,
        )

    # -- budget and evaluation ----------------------------------------------

    async def estimate_cost(
        self,
        prompt: str,
        model: str | None = None,
        max_tokens: int = DEFAULT_ESTIMATE_MAX_TOKENS,
        *,
        task_type: str | None = None,
    ) -> dict[str, Any]:
        """
        What a prompt would cost at worst: ``estimated_cost``, ``estimated_tokens``
        (``input_tokens``, ``output_tokens``, ``total_tokens``) and ``under_budget``.
        """
        fields = {
            "prompt": prompt,
            "model": model,
            "max_tokens": max_tokens,
            "task_type": task_type,
        }
        body = {k: v for k, v in fields.items() if v is not None}
        return _object(await self.request("POST", "/budget/estimate", json=body), "estimate")

    async def evaluate(
        self, prompt: str, response: str, criteria: Sequence[str] | None = None
    ) -> dict[str, Any]:
        """
        Score a response to a prompt: ``evaluation`` holds ``overall_score`` (0-10),
        per-criterion ``scores`` and ``feedback``.
        """
        body: dict[str, Any] = {"prompt": prompt, "response": response}
        if criteria is not None:
            body["criteria"] = list(criteria)
        return _object(await self.request("POST", "/evaluate", json=body), "evaluation")

    async def get_budget(self) -> dict[str, Any]:
        """The budget policy and each period's spend, limit and remaining (``GET /budget``)."""
        return _object(await self.request("GET", "/budget"), "budget")

    async def get_usage(self, period: str = "daily", group_by: str = "provider") -> Any:
        """Spend in ``period`` grouped by provider, model or component (``GET /budget/usage``)."""
        return await self.request(
            "GET", "/budget/usage", params={"period": period, "group_by": group_by}
        )

    async def get_budget_entries(
        self, limit: int = 50, since: float | None = None
    ) -> list[dict[str, Any]]:
        """
        The latest requests' charges, newest first (``GET /budget/entries``).

        Each has ``time``, ``component``, ``provider``, ``model``, the tokens,
        ``cost`` and ``status`` (``ok``, ``partial``, ``failed`` or
        ``interrupted``). At most ``limit`` (1 to 500) of them, at or after the
        unix timestamp ``since`` when given.
        """
        params: dict[str, Any] = {"limit": limit}
        if since is not None:
            params["since"] = since
        answer = _object(await self.request("GET", "/budget/entries", params=params), "entries")
        entries = answer.get("entries")
        if not isinstance(entries, list):
            raise ServerError("Rhetor's entries answer holds no list of entries")
        return entries

    # -- providers, contexts, health ----------------------------------------

    async def get_providers(self) -> dict[str, Any]:
        """Every provider, its models and availability, and the active provider and model."""
        return _object(await self.request("GET", "/providers"), "providers")

    async def set_provider(self, provider: str, model: str | None = None) -> dict[str, Any]:
        """Make ``provider`` (and ``model``, else its first) the active choice."""
        body = {"provider": provider} if model is None else {"provider": provider, "model": model}
        return _object(await self.request("POST", "/provider", json=body), "provider")

    async def get_contexts(self) -> list[dict[str, Any]]:
        """The stored conversation contexts, most recent first."""
        answer = await self.request("GET", "/contexts")
        if isinstance(answer, dict):
            answer = answer.get("contexts", [])
        if not isinstance(answer, list):
            raise ServerError("Rhetor's contexts answer is not a list")
        return [c for c in answer if isinstance(c, dict)]

    async def get_context(self, context_id: str) -> dict[str, Any]:
        """One context's details and messages."""
        path = f"/contexts/{quote(context_id, safe='')}"
        return _object(await self.request("GET", path), "context")

    async def delete_context(self, context_id: str) -> None:
        """Forget a context and its messages."""
        await self.request("DELETE", f"/contexts/{quote(context_id, safe='')}")

    async def health(self) -> dict[str, Any]:
        """``status`` (healthy or degraded), each provider's availability, uptime, version."""
        return _object(await self.request("GET", "/health"), "health")

    # -- WebSocket ----------------------------------------------------------

    def session(self, source: str = "python-client") -> AbstractAsyncContextManager[Session]:
        """
        Open a WebSocket session on ``/ws`` registered as ``source``; see :class:`Session`.
        """
        from rhetor.client._session import open_session

        return open_session(self, source)
