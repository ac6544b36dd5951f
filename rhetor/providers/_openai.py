"""
The OpenAI backend: Chat Completions over Rhetor's own HTTP/1.1 client.

Also serves any OpenAI-compatible upstream (vLLM, llama.cpp, Ollama's ``/v1``) given
its ``base_url``. The request bodies and the replies, whole or as server-sent events,
are built and read in :mod:`rhetor.providers._openai_wire`; the official ``openai``
SDK is not used here (it stays the reference the conformance tests compare with).
Streams ask for ``stream_options.include_usage``, so that the last chunk before
``[DONE]`` carries the usage; an upstream that leaves it out gets a
:class:`StreamEnd` marked ``usage_valid=False`` (the router bills such a call at its
reservation).

Nothing is retried here: Rhetor's router owns retries. Every failure becomes a
:mod:`rhetor._errors` exception, its message redacted, through
:func:`rhetor.providers._openai_wire.translated` (error statuses and error objects)
and :func:`rhetor.providers._calls.transport_error` (the transport's).
"""

from __future__ import annotations

import os
from collections.abc import AsyncGenerator

import attrs

from rhetor._errors import (
    AuthenticationFailed,
    ProviderError,
    ProviderUnavailable,
    UpstreamConnectionError,
    UpstreamTimeout,
)
from rhetor._redact import register_secret
from rhetor._types import (
    CitationDelta,
    ProviderReply,
    ProviderRequest,
    ProviderStatus,
    StreamEnd,
    TextDelta,
    ThinkingDelta,
    ToolCallDelta,
)
from rhetor.providers import _calls
from rhetor.providers._calls import Outgoing
from rhetor.providers._connect import Timeouts
from rhetor.providers._families import OPENAI
from rhetor.providers._http import USER_AGENT, HttpClient
from rhetor.providers._openai_wire import ChunkReading, chat_body, completion, translated
from rhetor.providers._wire import encode_json, merge_models, model_ids, model_names

__all__ = ["DEFAULT_BASE_URL", "DEFAULT_MODELS", "OpenAIBackend"]

DEFAULT_MODELS = ("gpt-4o-mini", "gpt-4o", "gpt-4.1", "gpt-4.1-mini")
DEFAULT_BASE_URL = "https://api.openai.com/v1"

# Seconds check() waits for the models endpoint.
CHECK_TIMEOUT = 3.0


def _environ(name: str) -> str | None:
    return os.environ.get(name) or None


@attrs.define(eq=False)
class OpenAIBackend:
    """
    Completions from OpenAI's (or a compatible server's) Chat Completions API.

    ``max_tokens_field`` names the request field for ``max_tokens``: OpenAI's own
    ``max_completion_tokens``, or ``max_tokens`` for older compatible servers.
    ``organization`` and ``project`` (``OPENAI_ORG_ID``, ``OPENAI_PROJECT_ID`` by
    default, as the SDK reads them) are sent as their headers when set.
    """

    api_key: str | None
    base_url: str | None = None
    models: tuple[str, ...] = attrs.field(default=DEFAULT_MODELS, converter=model_names)
    name: str = "openai"
    max_tokens_field: str = "max_completion_tokens"
    organization: str | None = attrs.field(factory=lambda: _environ("OPENAI_ORG_ID"))
    project: str | None = attrs.field(factory=lambda: _environ("OPENAI_PROJECT_ID"))
    timeouts: Timeouts = attrs.field(factory=Timeouts)
    max_connections: int = 64
    # Invariant: None exactly when calls cannot be made, and then _unusable says why.
    _client: HttpClient | None = attrs.field(init=False, default=None)
    _unusable: str = attrs.field(init=False, default="OPENAI_API_KEY not set")
    _headers: tuple[tuple[str, str], ...] = attrs.field(init=False, default=())
    _json_headers: tuple[tuple[str, str], ...] = attrs.field(init=False, default=())

    def __attrs_post_init__(self) -> None:
        register_secret(self.api_key)
        if not self.api_key:
            return
        try:
            self._client = HttpClient(
                self.base_url or DEFAULT_BASE_URL,
                timeouts=self.timeouts,
                max_connections=self.max_connections,
            )
        except ValueError as exc:
            self._unusable = f"OPENAI_BASE_URL is not usable: {exc}"
            return
        headers = [
            ("authorization", f"Bearer {self.api_key}"),
            ("accept", "application/json"),
            ("user-agent", USER_AGENT),
        ]
        if self.organization:
            headers.append(("openai-organization", self.organization))
        if self.project:
            headers.append(("openai-project", self.project))
        self._headers = tuple(headers)
        self._json_headers = (*headers, ("content-type", "application/json"))

    async def aclose(self) -> None:
        """
        Close the HTTP client's pooled connections.
        """
        if self._client is not None:
            await self._client.aclose()

    def _unavailable(self, model: str | None) -> ProviderUnavailable:
        return ProviderUnavailable(self._unusable, provider=self.name, model=model)

    async def check(self) -> ProviderStatus:
        """
        Merge the configured models with the models endpoint's, where it answers.

        Error handling: never raises for an upstream failure. Unreachable, too slow or
        a rejected key means unavailable; a models endpoint that errors otherwise, or
        answers something that is not a models listing (some compatible servers have
        none), leaves the configured models available.
        """
        if self._client is None:
            return ProviderStatus(
                self.name, False, self.models, reason=self._unusable, family=OPENAI
            )
        try:
            listed: tuple[str, ...] = await _calls.fetch(
                self._client,
                Outgoing("GET", "/models", self._headers),
                CHECK_TIMEOUT,
                self.name,
                None,
                translated,
                lambda body: model_ids(body, "data", "id"),
            )
        except (UpstreamConnectionError, UpstreamTimeout, AuthenticationFailed) as exc:
            return ProviderStatus(self.name, False, self.models, reason=exc.message, family=OPENAI)
        except ProviderError as exc:
            return ProviderStatus(
                self.name,
                True,
                self.models,
                reason=f"models endpoint failed: {exc.message}",
                family=OPENAI,
            )
        return ProviderStatus(self.name, True, merge_models(self.models, listed), family=OPENAI)

    async def complete(self, request: ProviderRequest) -> ProviderReply:
        """
        One whole chat completion.

        Error handling: raises a :class:`rhetor.ProviderError` subclass; past
        ``request.timeout`` seconds in all, :class:`rhetor.UpstreamTimeout`; a 200
        body that is not a chat completion, :class:`rhetor.UpstreamServerError`.
        Malformed usage is no error: the reply says ``usage_valid=False``.
        Cancellation: cancelling closes the upstream connection.
        """
        if self._client is None:
            raise self._unavailable(request.model)
        body = chat_body(
            request, stream=False, max_tokens_field=self.max_tokens_field, provider=self.name
        )
        reply: ProviderReply = await _calls.fetch(
            self._client,
            self._post(body),
            request.timeout,
            self.name,
            request.model,
            translated,
            lambda decoded: completion(decoded, request, self.name),
        )
        return reply

    def stream(
        self, request: ProviderRequest
    ) -> AsyncGenerator[
        TextDelta | ToolCallDelta | ThinkingDelta | CitationDelta | StreamEnd, None
    ]:
        """
        Stream the reply as :class:`TextDelta` and :class:`ToolCallDelta` items, then one
        :class:`StreamEnd`.

        Error handling: raises a :class:`rhetor.ProviderError` subclass, also after
        some deltas when the connection drops, the body ends before the reply
        finished or a chunk is not a ``chat.completion.chunk``.
        Cancellation: closing or cancelling the generator closes the upstream connection.
        """
        if self._client is None:
            return _calls.failing(self._unavailable(request.model))
        try:
            body = chat_body(
                request, stream=True, max_tokens_field=self.max_tokens_field, provider=self.name
            )
        except ProviderError as exc:
            return _calls.failing(exc)
        return _calls.stream(
            self._client,
            self._post(body),
            request.timeout,
            ChunkReading(request.model, self.name),
            self.name,
            request.model,
            translated,
        )

    def _post(self, body: object) -> Outgoing:
        return Outgoing("POST", "/chat/completions", self._json_headers, encode_json(body))
