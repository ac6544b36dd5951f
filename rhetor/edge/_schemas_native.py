"""
The schemas of Rhetor's own LLM requests and replies: ``/message``, ``/stream``, ``/chat``, ``/provider``.

One class per body (:class:`MessageBody`, :class:`ChatBody`,
:class:`ProviderBody`), the parts they share (:class:`LLMOptions`,
:class:`RoutingHints`, :class:`ChatTurn`), and what the routes answer
(:class:`ReplyBody`, :class:`ErrorBody`).

Content beyond text (``docs/api.md``, "Tools, images and content blocks"): a
turn's ``content`` (and ``/message``'s ``message``) is a string or a list of
blocks tagged by ``type`` (text, image, tool_call, tool_result), and requests
may offer tools, say how they may be used (``tool_choice``) and ask for JSON
(``response_format``); those schemas are in ``rhetor.edge._schemas_content``.
The WebSocket's ``LLM_REQUEST`` and
``CHAT_REQUEST`` payloads are these bodies too (``rhetor.edge._schemas_ws``).
Unknown fields are ignored, as the seeds' clients send extras such as
``source``. :meth:`LLMOptions.request_kwargs` is the one place a checked body
becomes ``Runtime.request``'s arguments.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any, Literal

import msgspec
from msgspec import Meta

from rhetor._content import (
    ToolChoice,
)
from rhetor._errors import ValidationError
from rhetor._types import ChatMessage, Complexity
from rhetor.edge._fields import MAX_TIMEOUT
from rhetor.edge._schema import Body, NonEmpty, PositiveInt
from rhetor.edge._schemas_content import (
    BlockBody,
    FormatSpec,
    NamedToolChoice,
    ToolSpec,
    blocks_of,
    renamed,
)

if TYPE_CHECKING:
    pass

__all__ = [
    "MIN_TIMEOUT",
    "ChatBody",
    "ChatTurn",
    "ErrorBody",
    "ErrorDetail",
    "HealthReply",
    "LLMOptions",
    "MessageBody",
    "ProviderBody",
    "ReadyReply",
    "ReplyBody",
    "ReplyToolCall",
    "ReplyUsage",
    "RootReply",
    "RoutingHints",
    "StoreCheckReply",
    "Temperature",
    "Timeout",
]

# Sampling temperature, as every provider Rhetor speaks to takes it.
Temperature = Annotated[float, Meta(ge=0, le=2, description="Sampling temperature, 0 to 2.")]
# A deadline under a second is never long enough for a model, and one of 1e-300 s was
# answered 504 before any provider was tried: the edge refuses it instead.
MIN_TIMEOUT = 1.0
Timeout = Annotated[
    float,
    Meta(
        ge=MIN_TIMEOUT,
        le=MAX_TIMEOUT,
        description="Seconds the whole request may take, from 1 to 86400; "
        "default RHETOR_REQUEST_TIMEOUT.",
    ),
]


class RoutingHints(Body, frozen=True, kw_only=True):
    """
    Hints that narrow the routed choice of model; other keys (the seeds send ``task_type``) are ignored.
    """

    complexity: Complexity | None = None
    required_capabilities: (
        Annotated[list[str], Meta(description="Keep the models that have all of these.")] | None
    ) = None
    max_cost: (
        Annotated[
            float,
            Meta(ge=0, description="USD: keep the models whose worst case is within it."),
        ]
        | None
    ) = None

    def as_dict(self) -> dict[str, Any]:
        """The hints given, as ``RoutingParameters.from_dict`` takes them (empty lists dropped)."""
        hints: dict[str, Any] = {}
        if self.complexity is not None:
            hints["complexity"] = self.complexity
        if self.required_capabilities:
            hints["required_capabilities"] = self.required_capabilities
        if self.max_cost is not None:
            hints["max_cost"] = self.max_cost
        return hints


class ChatTurn(Body, frozen=True, kw_only=True):
    """
    One message of a conversation.
    """

    role: Literal["system", "user", "assistant"]
    content: Annotated[
        str | list[BlockBody],
        Meta(
            description="Text, or blocks: text, image (user), tool_call (assistant), tool_result (user)."
        ),
    ]

    def as_message(self, field: str = "content") -> ChatMessage:
        """The turn as the runtime takes it."""
        if isinstance(self.content, str):
            return ChatMessage(self.role, self.content)
        return blocks_of(self.role, self.content, field)


class LLMOptions(Body, frozen=True, kw_only=True):
    """
    The options every LLM request takes, whole or streamed, over HTTP or WebSocket.
    """

    context_id: (
        Annotated[
            str, Meta(description="The context whose history is sent and where turns are stored.")
        ]
        | None
    ) = None
    context: Annotated[str, Meta(description="Another spelling of context_id.")] | None = None
    task_type: (
        Annotated[str, Meta(description="The task that picks the routing rule; default default.")]
        | None
    ) = None
    component: (
        Annotated[str, Meta(description="The calling component: its default system prompt.")] | None
    ) = None
    provider: (
        Annotated[str, Meta(description="Answer with this provider's first fitting model.")] | None
    ) = None
    model: Annotated[str, Meta(description="Answer with this model, never another.")] | None = None
    temperature: Temperature | None = None
    max_tokens: PositiveInt | None = None
    system_prompt: (
        Annotated[str, Meta(description="Overrides the component's default prompt.")] | None
    ) = None
    routing_parameters: RoutingHints | None = None
    timeout: Timeout | None = None
    streaming: (
        Annotated[bool, Meta(description="Answer as Server-Sent Events (as /stream does).")] | None
    ) = None
    tools: Annotated[list[ToolSpec], Meta(description="Tools the model may call.")] | None = None
    tool_choice: (
        Annotated[
            Literal["auto", "none", "required"] | NamedToolChoice,
            Meta(description="auto, none, required, or {name}: a call of that tool."),
        ]
        | None
    ) = None
    parallel_tool_calls: (
        Annotated[bool, Meta(description="False: at most one call per reply.")] | None
    ) = None
    response_format: FormatSpec | None = None
    stop: Annotated[str, Meta(min_length=1)] | list[Annotated[str, Meta(min_length=1)]] | None = (
        None
    )
    top_p: Annotated[float, Meta(ge=0, le=1, description="Nucleus sampling, 0 to 1.")] | None = None
    seed: Annotated[int, Meta(ge=-(2**63), le=2**63 - 1)] | None = None
    user: str | None = None
    metadata: dict[str, str] | None = None

    def request_kwargs(self, *, websocket: bool = False) -> dict[str, Any]:
        """
        ``Runtime.request``'s keyword arguments (the message or messages excepted).

        The context is ``context_id`` over HTTP and ``context`` over WebSocket,
        each accepting the other spelling; an empty ``task_type`` is ``default``.
        """
        first, other = (
            (self.context, self.context_id) if websocket else (self.context_id, self.context)
        )
        routing = self.routing_parameters
        return {
            "context_id": first if first is not None else other,
            "task_type": self.task_type or "default",
            "component": self.component,
            "provider": self.provider,
            "model": self.model,
            "temperature": self.temperature,
            "max_tokens": None if self.max_tokens is None else int(self.max_tokens),
            "system_prompt": self.system_prompt,
            "routing_parameters": None if routing is None else routing.as_dict(),
            "timeout": self.timeout,
            **self._content_kwargs(),
        }

    def _content_kwargs(self) -> dict[str, Any]:
        """Tools, tool choice, format, sampling and tags, as ``Runtime.request`` takes them."""
        kwargs: dict[str, Any] = {}
        if self.tools:
            tools = []
            for i, spec in enumerate(self.tools):
                try:
                    tools.append(spec.as_tool())
                except ValidationError as exc:
                    raise renamed(exc, f"tools[{i}].{(exc.field or '').split('.')[-1]}") from None
            kwargs["tools"] = tuple(tools)
        choice = self.tool_choice
        if choice is not None or self.parallel_tool_calls is not None:
            if isinstance(choice, NamedToolChoice):
                kwargs["tool_choice"] = ToolChoice("tool", choice.name, self.parallel_tool_calls)
            else:
                kwargs["tool_choice"] = ToolChoice(
                    choice or "auto", parallel=self.parallel_tool_calls
                )
        if self.response_format is not None:
            kwargs["response_format"] = self.response_format.as_format()
        if self.stop is not None:
            kwargs["stop"] = (self.stop,) if isinstance(self.stop, str) else tuple(self.stop)
        for name in ("top_p", "seed", "user", "metadata"):
            if getattr(self, name) is not None:
                kwargs[name] = getattr(self, name)
        return kwargs


class MessageBody(LLMOptions, frozen=True, kw_only=True):
    """
    One message to a model (``POST /message``, ``POST /stream``).
    """

    message: Annotated[
        Annotated[str, Meta(min_length=1)] | list[BlockBody],
        Meta(
            examples=["Hello"],
            description="Text, or blocks of one user turn (text, image, tool_result).",
        ),
    ]

    def message_kwargs(self) -> dict[str, Any]:
        """The message as ``Runtime.request`` takes it: text, or one user turn of blocks."""
        if isinstance(self.message, str):
            return {"message": self.message}
        if not self.message:
            raise ValidationError("message", "must hold at least one block")
        return {"messages": (blocks_of("user", self.message, "message"),)}


class ChatBody(LLMOptions, frozen=True, kw_only=True):
    """
    A conversation (``POST /chat``); the last message must be the user's.
    """

    messages: Annotated[
        list[ChatTurn], Meta(min_length=1, examples=[[{"role": "user", "content": "Hello"}]])
    ]

    def chat_messages(self) -> tuple[ChatMessage, ...]:
        """The messages as the runtime takes them."""
        return tuple(m.as_message(f"messages[{i}].content") for i, m in enumerate(self.messages))


class ProviderBody(Body, frozen=True, kw_only=True):
    """
    The provider (and model) that answers requests routed by default (``POST /provider``).
    """

    provider: NonEmpty
    model: (
        Annotated[str, Meta(description="One of the provider's models; default its first.")] | None
    ) = None


# -- replies ---------------------------------------------------------------------------


class ReplyUsage(msgspec.Struct, frozen=True, kw_only=True):
    """
    The tokens a reply took; of them, those read from a prompt cache and spent reasoning (where reported).
    """

    input_tokens: int
    output_tokens: int
    total_tokens: int
    cached_input_tokens: int = 0
    reasoning_tokens: int = 0


class ReplyToolCall(msgspec.Struct, frozen=True, kw_only=True):
    """
    A tool call the model made: its id (a tool_result names it), the tool, the arguments as JSON text.
    """

    id: str
    name: str
    arguments: str


class ReplyBody(msgspec.Struct, frozen=True, kw_only=True):
    """
    A model's reply: ``POST /message`` and ``/chat``, the last ``/stream`` event, a WebSocket RESPONSE.
    """

    message: str
    model: str
    provider: str
    context: str | None
    finished: bool
    timestamp: str
    usage: ReplyUsage
    cost: Annotated[float, Meta(description="USD, as billed in the ledger.")]
    routing: Annotated[str, Meta(description="Why this model answered.")]
    request_id: str
    task_type: str
    finish_reason: Annotated[
        Literal["stop", "length", "tool_calls", "content_filter"],
        Meta(description="Why the reply ended; tool_calls: see tool_calls."),
    ]
    tool_calls: list[ReplyToolCall] = []
    budget_warning: (
        Annotated[str, Meta(description="A limit would be passed, or a budget downgrade.")] | None
    ) = None


class HealthReply(msgspec.Struct, frozen=True, kw_only=True):
    """
    Liveness, and which providers can answer.
    """

    status: Literal["healthy", "degraded"]
    providers: dict[str, bool]
    uptime: Annotated[float, Meta(description="Seconds since start.")]
    version: str


class StoreCheckReply(msgspec.Struct, frozen=True, kw_only=True):
    """
    Whether one store answered a read, and why not.
    """

    reachable: bool
    reason: str | None


class ReadyReply(msgspec.Struct, frozen=True, kw_only=True):
    """
    Readiness: every store answers a read and at least one provider can answer.
    """

    status: Literal["ready", "not_ready"]
    stores: dict[str, StoreCheckReply]
    providers: dict[str, bool]
    reasons: Annotated[list[str], Meta(description="Why not ready; empty when ready.")]


class RootReply(msgspec.Struct, frozen=True, kw_only=True):
    """
    What this server is.
    """

    name: str
    version: str
    description: str
    endpoints: Annotated[list[str], Meta(description="Every route, as METHODS /path.")]


class ErrorDetail(msgspec.Struct, frozen=True, kw_only=True):
    """
    What went wrong: ``type`` is stable (``validation_error``, ``not_found``, ...).

    Some types add fields: ``budget_exceeded`` its ``period``, ``limit`` and
    ``spent`` (and the ``provider`` or ``component`` whose limit it is); provider errors their ``provider`` and ``model``;
    ``all_providers_failed`` its ``attempts``.
    """

    type: str
    message: str
    field: Annotated[str, Meta(description="The field, header or parameter at fault.")] | None = (
        None
    )
    request_id: (
        Annotated[str, Meta(description="The request's id, as in its X-Request-ID header.")] | None
    ) = None


class ErrorBody(msgspec.Struct, frozen=True, kw_only=True):
    """
    Every error outside ``/v1``: ``{"error": {"type", "message", "field"?, "request_id"}}``.
    """

    error: ErrorDetail
