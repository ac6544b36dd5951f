"""
The Anthropic backend: the Messages API over Rhetor's own HTTP/1.1 client.

The request bodies and the replies, whole or as server-sent events, are built and
read in :mod:`rhetor.providers._anthropic_wire`; the official ``anthropic`` SDK is not
used here (it stays the reference the conformance tests compare with). Requests
carry the key as the SDK 2.x sends it (``authorization: Bearer``) and its API version
(``anthropic-version: 2026-10-21``).

Nothing is retried here: Rhetor's router owns retries. Every failure becomes a
:mod:`rhetor._errors` exception, its message redacted, through
:func:`rhetor.providers._anthropic_wire.translated` (error statuses and ``error``
events) and :func:`rhetor.providers._calls.transport_error` (the transport's).
"""

from __future__ import annotations

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
from rhetor.providers._anthropic_wire import (
    API_VERSION,
    EventReading,
    count_body,
    input_count,
    message,
    messages_body,
    translated,
)
from rhetor.providers._calls import Outgoing
from rhetor.providers._connect import Timeouts
from rhetor.providers._families import ANTHROPIC
from rhetor.providers._http import USER_AGENT, HttpClient
from rhetor.providers._wire import encode_json, merge_models, model_ids, model_names

__all__ = ["DEFAULT_BASE_URL", "DEFAULT_MODELS", "AnthropicBackend"]

DEFAULT_MODELS = ("claude-sonnet-5-5", "claude-haiku-5-5", "claude-opus-5-5")
DEFAULT_BASE_URL = "https://api.anthropic.com"

# Seconds check() waits for the models endpoint.
CHECK_TIMEOUT = 3.0


@attrs.define(eq=False)
class AnthropicBackend:
    """
    Completions from Anthropic's Messages API, whole or streamed.
    """

    api_key: str | None
    base_url: str | None = None
    models: tuple[str, ...] = attrs.field(default=DEFAULT_MODELS, converter=model_names)
    name: str = "anthropic"
    timeouts: Timeouts = attrs.field(factory=Timeouts)
    max_connections: int = 64
    # Invariant: None exactly when calls cannot be made, and then _unusable says why.
    _client: HttpClient | None = attrs.field(init=False, default=None)
    _unusable: str = attrs.field(init=False, default="ANTHROPIC_API_KEY not set")
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
            self._unusable = f"ANTHROPIC_BASE_URL is not usable: {exc}"
            return
        self._headers = (
            ("authorization", f"Bearer {self.api_key}"),
            ("anthropic-version", API_VERSION),
            ("accept", "application/json"),
            ("user-agent", USER_AGENT),
        )
        self._json_headers = (*self._headers, ("content-type", "application/json"))

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
        answers something that is not a models listing, leaves the configured models
        available.
        """
        if self._client is None:
            return ProviderStatus(
                self.name, False, self.models, reason=self._unusable, family=ANTHROPIC
            )
        try:
            listed: tuple[str, ...] = await _calls.fetch(
                self._client,
                Outgoing("GET", "/v1/models?limit=100", self._headers),
                CHECK_TIMEOUT,
                self.name,
                None,
                translated,
                lambda body: model_ids(body, "data", "id"),
            )
        except (UpstreamConnectionError, UpstreamTimeout, AuthenticationFailed) as exc:
            return ProviderStatus(
                self.name, False, self.models, reason=exc.message, family=ANTHROPIC
            )
        except ProviderError as exc:
            return ProviderStatus(
                self.name,
                True,
                self.models,
                reason=f"models endpoint failed: {exc.message}",
                family=ANTHROPIC,
            )
        return ProviderStatus(self.name, True, merge_models(self.models, listed), family=ANTHROPIC)

    async def complete(self, request: ProviderRequest) -> ProviderReply:
        """
        One whole message.

        Error handling: raises a :class:`rhetor.ProviderError` subclass; past
        ``request.timeout`` seconds in all, :class:`rhetor.UpstreamTimeout`; a 200
        body that is not a message, :class:`rhetor.UpstreamServerError`. Malformed
        usage is no error: the reply says ``usage_valid=False``.
        Cancellation: cancelling closes the upstream connection.
        """
        if self._client is None:
            raise self._unavailable(request.model)
        body = messages_body(request, stream=False, provider=self.name)
        reply: ProviderReply = await _calls.fetch(
            self._client,
            self._post(body),
            request.timeout,
            self.name,
            request.model,
            translated,
            lambda decoded: message(decoded, request, self.name),
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
        some deltas when the connection drops, an ``error`` event arrives, an event is
        not what the Messages API sends, or the body ends before ``message_stop``.
        Cancellation: closing or cancelling the generator closes the upstream connection.
        """
        if self._client is None:
            return _calls.failing(self._unavailable(request.model))
        try:
            body = messages_body(request, stream=True, provider=self.name)
        except ProviderError as exc:
            return _calls.failing(exc)
        return _calls.stream(
            self._client,
            self._post(body),
            request.timeout,
            EventReading(request.model, self.name),
            self.name,
            request.model,
            translated,
        )

    async def count_tokens(self, request: ProviderRequest) -> int:
        """
        The input tokens Anthropic counts for ``request`` (``POST /v1/messages/count_tokens``).

        Error handling: as :meth:`complete`; an answer without ``input_tokens`` is
        :class:`rhetor.UpstreamServerError`.
        """
        if self._client is None:
            raise self._unavailable(request.model)
        counted: int = await _calls.fetch(
            self._client,
            self._post(count_body(request, self.name), "/v1/messages/count_tokens"),
            request.timeout,
            self.name,
            request.model,
            translated,
            input_count,
        )
        return counted

    def _post(self, body: object, path: str = "/v1/messages") -> Outgoing:
        return Outgoing("POST", path, self._json_headers, encode_json(body))
