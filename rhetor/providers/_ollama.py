"""
The Ollama backend: a local (or remote) Ollama server's native ``/api/chat`` over
Rhetor's own HTTP/1.1 client.

The request bodies and the replies, whole or as NDJSON lines, are built and read in
:mod:`rhetor.providers._ollama_wire`; ``/api/tags`` lists the pulled models. Every
failure becomes a :mod:`rhetor._errors` exception, its message redacted, through
:func:`rhetor.providers._ollama_wire.translated` (error statuses and error objects)
and :func:`rhetor.providers._calls.transport_error` (the transport's).
"""

from __future__ import annotations

from collections.abc import AsyncGenerator

import attrs

from rhetor._errors import ProviderError, ProviderUnavailable
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
from rhetor.providers._families import OLLAMA
from rhetor.providers._http import USER_AGENT, HttpClient
from rhetor.providers._ollama_wire import LineReading, chat_body, reply, translated
from rhetor.providers._wire import encode_json, merge_models, model_ids, model_names

__all__ = ["DEFAULT_BASE_URL", "OllamaBackend"]

DEFAULT_BASE_URL = "http://localhost:11434"

# Seconds check() waits for /api/tags: a local server answers at once or not at all.
CHECK_TIMEOUT = 2.0

_HEADERS = (("accept", "application/json"), ("user-agent", USER_AGENT))
_JSON_HEADERS = (*_HEADERS, ("content-type", "application/json"))


@attrs.define(eq=False)
class OllamaBackend:
    """
    Completions from an Ollama server's ``/api/chat``, whole or streamed.
    """

    base_url: str = DEFAULT_BASE_URL
    models: tuple[str, ...] = attrs.field(default=(), converter=model_names)
    name: str = "ollama"
    timeouts: Timeouts = attrs.field(factory=Timeouts)
    max_connections: int = 64
    # Invariant: None exactly when the base URL is not usable, and then _unusable says why.
    _client: HttpClient | None = attrs.field(init=False, default=None)
    _unusable: str = attrs.field(init=False, default="")

    def __attrs_post_init__(self) -> None:
        try:
            self._client = HttpClient(
                self.base_url, timeouts=self.timeouts, max_connections=self.max_connections
            )
        except ValueError as exc:
            self._unusable = f"OLLAMA_BASE_URL is not usable: {exc}"

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
        Ask ``/api/tags`` which models are pulled; unreachable means unavailable.

        Error handling: never raises for an upstream failure; the reason says what
        failed. A listing that is not Ollama's is a failure like any other.
        """
        if self._client is None:
            return ProviderStatus(
                self.name, False, self.models, reason=self._unusable, family=OLLAMA
            )
        try:
            tags: tuple[str, ...] = await _calls.fetch(
                self._client,
                Outgoing("GET", "/api/tags", _HEADERS),
                CHECK_TIMEOUT,
                self.name,
                None,
                translated,
                lambda body: model_ids(body, "models", "name", "model"),
            )
        except ProviderError as exc:
            return ProviderStatus(self.name, False, self.models, reason=exc.message, family=OLLAMA)
        return ProviderStatus(self.name, True, merge_models(tags, self.models), family=OLLAMA)

    async def complete(self, request: ProviderRequest) -> ProviderReply:
        """
        One whole completion (``"stream": false``).

        Error handling: raises a :class:`rhetor.ProviderError` subclass; past
        ``request.timeout`` seconds in all, :class:`rhetor.UpstreamTimeout`; a 200
        body that is not Ollama's, :class:`rhetor.UpstreamServerError`. Malformed
        counts are no error: the reply says ``usage_valid=False``.
        Cancellation: cancelling closes the upstream connection.
        """
        if self._client is None:
            raise self._unavailable(request.model)
        answer: ProviderReply = await _calls.fetch(
            self._client,
            self._post(chat_body(request, stream=False, provider=self.name)),
            request.timeout,
            self.name,
            request.model,
            translated,
            lambda decoded: reply(decoded, request, self.name),
        )
        return answer

    def stream(
        self, request: ProviderRequest
    ) -> AsyncGenerator[
        TextDelta | ToolCallDelta | ThinkingDelta | CitationDelta | StreamEnd, None
    ]:
        """
        Stream the reply as :class:`TextDelta` and :class:`ToolCallDelta` items, then one
        :class:`StreamEnd`.

        Error handling: raises a :class:`rhetor.ProviderError` subclass, also after
        some deltas when the connection drops, a line is not Ollama's JSON, or the
        NDJSON ends without ``done``.
        Cancellation: closing or cancelling the generator closes the upstream connection.
        """
        if self._client is None:
            return _calls.failing(self._unavailable(request.model))
        try:
            body = chat_body(request, stream=True, provider=self.name)
        except ProviderError as exc:
            return _calls.failing(exc)
        return _calls.stream(
            self._client,
            self._post(body),
            request.timeout,
            LineReading(request.model, self.name, request.request_id or "ollama"),
            self.name,
            request.model,
            translated,
        )

    @staticmethod
    def _post(body: object) -> Outgoing:
        return Outgoing("POST", "/api/chat", _JSON_HEADERS, encode_json(body))
