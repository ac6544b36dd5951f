"""
:class:`RhetorClient`: Rhetor's HTTP and SSE API as awaitable calls.

Built on anyio and httpx, so one client works under asyncio and under trio.
Every call either returns what the server answered or raises a
:class:`~rhetor.client.RhetorClientError`; see ``_errors.py`` for the tree.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from types import TracebackType
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import httpx

from rhetor.client._admin import DEFAULT_ESTIMATE_MAX_TOKENS as DEFAULT_ESTIMATE_MAX_TOKENS
from rhetor.client._admin import AdminMethods
from rhetor.client._errors import ServerError, transport_errors
from rhetor.client._models import Reply
from rhetor.client._stream import ReplyStream, _base_url, _check
from rhetor.client._stream import _object as _object  # _prompts reads it from here

if TYPE_CHECKING:
    from rhetor.client._session import Session

__all__ = ["DEFAULT_HOST", "DEFAULT_PORT", "ReplyStream", "RhetorClient"]

DEFAULT_HOST = "localhost"
DEFAULT_PORT = 8300
# Rhetor's own per-request deadline is 120 s by default; wait a little longer
# than that so the server's answer (even a timeout error) reaches the caller.
DEFAULT_TIMEOUT = 130.0


class RhetorClient(AdminMethods):
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

    # -- WebSocket ----------------------------------------------------------

    def session(self, source: str = "python-client") -> AbstractAsyncContextManager[Session]:
        """
        Open a WebSocket session on ``/ws`` registered as ``source``; see :class:`Session`.
        """
        from rhetor.client._session import open_session

        return open_session(self, source)
