"""
The behaviours tests script a fake upstream with, provider-neutral frozen values, and
the hostile JSON they may carry.

Each fake renders a behaviour in its own wire format (see :mod:`tests.fakes._server`).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

import attrs

__all__ = [
    "UNSET",
    "Behaviour",
    "Call",
    "Cut",
    "Fail",
    "Garbled",
    "Hang",
    "Raw",
    "Recorded",
    "Reply",
    "Stall",
    "StreamError",
    "dumps",
    "split_text",
]


# ---------------------------------------------------------------------------
# Hostile JSON


@attrs.frozen
class Raw:
    """
    Text sent verbatim where a JSON value goes: ``Raw("1e400")``, ``Raw("not json")``.

    ``json.dumps`` cannot write what a hostile upstream can (``1e400`` is no float
    Python would print), so the fakes serialise through :func:`dumps`, which splices
    each ``Raw`` in as it is.
    """

    text: str


def dumps(value: Any) -> str:
    """
    ``value`` as JSON, with every :class:`Raw` inside it spliced in verbatim.
    """
    raws: list[str] = []

    def swap(item: Any) -> Any:
        if isinstance(item, Raw):
            raws.append(item.text)
            return f"\x00{len(raws) - 1}\x00"
        if isinstance(item, Mapping):
            return {key: swap(inner) for key, inner in item.items()}
        if isinstance(item, list | tuple):
            return [swap(inner) for inner in item]
        return item

    # Raw UTF-8, as real upstreams write it (Go and Python servers alike).
    text = json.dumps(swap(value), ensure_ascii=False)
    if not raws:
        return text
    return re.sub(r'"\\u0000(\d+)\\u0000"', lambda m: raws[int(m.group(1))], text)


class _Unset:
    """
    The type of :data:`UNSET`.
    """

    def __repr__(self) -> str:
        return "UNSET"


# Marks a Reply field left to its normal rendering (None is a value a test may send).
UNSET: Any = _Unset()


# ---------------------------------------------------------------------------
# Behaviours


@attrs.frozen
class Call:
    """
    A tool call a :class:`Reply` makes: the tool's name, its arguments, and the call's id.

    ``id`` None lets each fake name the call as its provider does (``call_...`` for
    OpenAI, ``toolu_...`` for Anthropic, no id at all for Ollama before 0.12). A stream
    sends the arguments' JSON text in ``pieces`` fragments (Ollama sends calls whole).
    """

    name: str
    arguments: Mapping[str, Any] = attrs.field(factory=dict)
    id: str | None = None
    pieces: int = 3

    @property
    def json(self) -> str:
        """The arguments as OpenAI and Anthropic stream them: compact JSON text."""
        return json.dumps(dict(self.arguments), separators=(",", ":"), ensure_ascii=False)

    def fragments(self) -> tuple[str, ...]:
        """The arguments' JSON text cut into ``pieces`` fragments (fewer for a short text)."""
        text = self.json
        size = max(1, -(-len(text) // max(1, self.pieces)))
        return tuple(text[i : i + size] for i in range(0, len(text), size))


@attrs.frozen
class Reply:
    """
    Answer normally with ``text``, streamed as ``chunks`` when the client asks to stream.

    ``finish_reason`` uses Rhetor's (OpenAI's) words: stop, length, tool_calls.
    ``output_tokens`` defaults to the number of chunks. ``usage=False`` leaves usage
    out of a stream (an upstream that does not report it).

    ``tool_calls`` are calls the reply makes after its text, in each provider's
    own wire format, whole and streamed (then the finish reason is ``tool_calls``
    unless another is given). ``cached_tokens`` and ``reasoning_tokens`` are
    reported where the provider reports them.

    ``raw_usage``, when set, is sent in place of the usage, whole or streamed, whatever
    it is (any JSON value, :class:`Raw` text included): OpenAI's ``usage`` object,
    Anthropic's ``usage`` (in ``message_start`` and ``message_delta`` when streamed);
    for Ollama, which has no usage object, a mapping whose items replace the counts
    on the last object.
    """

    text: str = "Hello from the fake."
    chunks: tuple[str, ...] | None = None
    input_tokens: int = 12
    output_tokens: int | None = None
    finish_reason: str = "stop"
    usage: bool = True
    # Seconds to wait before each streamed chunk (and before a whole reply).
    delay: float = 0.0
    raw_usage: Any = UNSET
    tool_calls: tuple[Call, ...] = ()
    cached_tokens: int = 0
    reasoning_tokens: int = 0
    # Anthropic's extended thinking before the text: thinking blocks (their text;
    # the fake signs each, see tests.fakes.anthropic.signature), then redacted
    # blocks (their data). Other fakes ignore them.
    thinking: tuple[str, ...] = ()
    redacted_thinking: tuple[str, ...] = ()
    # Anthropic's citations of the text (its text block's citations; streamed as
    # citations_delta events before the text). Other fakes ignore them.
    citations: tuple[dict[str, Any], ...] = ()

    @property
    def reason(self) -> str:
        """The finish reason sent: ``tool_calls`` for a reply with calls that says ``stop``."""
        if self.tool_calls and self.finish_reason == "stop":
            return "tool_calls"
        return self.finish_reason

    def pieces(self) -> tuple[str, ...]:
        """
        The chunks a stream sends: the given ones, or the text split after each space.
        """
        if self.chunks is not None:
            return self.chunks
        words = self.text.split(" ")
        return (*(w + " " for w in words[:-1]), words[-1]) if self.text else ()

    @property
    def joined(self) -> str:
        return "".join(self.pieces())

    @property
    def completion_tokens(self) -> int:
        if self.output_tokens is not None:
            return self.output_tokens
        return len(self.pieces()) + sum(len(c.fragments()) for c in self.tool_calls)


@attrs.frozen
class Fail:
    """
    Answer with an HTTP error in the provider's own error format.

    ``kind`` names what went wrong in provider-neutral words (``rate_limited``,
    ``overloaded``, ``server_error``, ``unauthorized``, ``forbidden``,
    ``context_too_long``, ``bad_request``, ``not_found``); the fake picks the
    provider's error type and message for it. ``echo_key`` appends the credentials
    the request carried to the message, as a careless upstream or proxy does.
    """

    status: int
    kind: str
    message: str | None = None
    headers: Mapping[str, str] = attrs.field(factory=dict)
    echo_key: bool = False

    @classmethod
    def rate_limited(
        cls, retry_after: float | None = 1.0, *, retry_after_ms: float | None = None
    ) -> Fail:
        headers: dict[str, str] = {}
        if retry_after is not None:
            headers["retry-after"] = _number(retry_after)
        if retry_after_ms is not None:
            headers["retry-after-ms"] = _number(retry_after_ms)
        return cls(429, "rate_limited", headers=headers)

    @classmethod
    def overloaded(cls) -> Fail:
        # The status is the provider's choice; each fake overrides it when rendering.
        return cls(529, "overloaded")

    @classmethod
    def server_error(cls, status: int = 500) -> Fail:
        return cls(status, "server_error")

    @classmethod
    def unauthorized(cls) -> Fail:
        return cls(401, "unauthorized")

    @classmethod
    def forbidden(cls) -> Fail:
        return cls(403, "forbidden")

    @classmethod
    def context_too_long(cls) -> Fail:
        return cls(400, "context_too_long")

    @classmethod
    def bad_request(cls, message: str = "bad request") -> Fail:
        return cls(400, "bad_request", message)

    @classmethod
    def not_found(cls) -> Fail:
        return cls(404, "not_found")


@attrs.frozen
class Hang:
    """
    Read the request and never answer, until the client gives up.
    """


@attrs.frozen
class Cut:
    """
    Start the reply, send ``after`` text chunks, then drop the connection mid-body.
    """

    after: int = 1
    text: str = "partial reply that never ends"


@attrs.frozen
class Stall:
    """
    Start a streamed reply, send ``after`` text chunks, then wait until the client leaves.
    """

    after: int = 1
    text: str = "partial reply that waits"


@attrs.frozen
class StreamError:
    """
    Start a streamed reply, send ``after`` text chunks, then an in-stream error event.

    ``message`` replaces the provider's own for ``kind``; ``echo_key`` appends the
    request's credentials to it.
    """

    after: int = 1
    kind: str = "overloaded"
    text: str = "partial reply then error"
    message: str | None = None
    echo_key: bool = False


@attrs.frozen
class Garbled:
    """
    Answer 200 with something that is not the provider's wire format.

    A whole reply's body is ``body`` (JSON, or :class:`Raw` text). A stream sends
    ``after`` good text chunks, then ``event`` as one more item (an SSE event's data,
    named ``event_type`` where the format names events; an NDJSON line), then ends
    as a good stream would.
    """

    body: Any = Raw("this is not JSON")
    event: Any = Raw("this is not JSON")
    after: int = 1
    event_type: str = "content_block_delta"
    text: str = "partial reply then garbage"


@attrs.frozen
class Recorded:
    """
    Answer 200 with ``body`` byte for byte (a recorded stream or reply, such as the
    golden fixtures in ``tests/golden``), in pieces of ``piece`` bytes (0: at once).
    """

    body: bytes
    content_type: str = "text/event-stream"
    piece: int = 0

    async def send(self, respond: Any) -> None:
        """Send the body through a fake's responder."""
        await respond.start(200, self.content_type)
        size = self.piece or len(self.body) or 1
        for start in range(0, len(self.body), size):
            await respond.send(self.body[start : start + size])
        await respond.end()


Behaviour = Reply | Fail | Hang | Cut | Stall | StreamError | Garbled | Recorded


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)


def split_text(text: str, count: int) -> tuple[str, ...]:
    """
    The first ``count`` word-chunks of ``text`` (for Cut, Stall and StreamError).
    """
    return Reply(text).pieces()[:count]
