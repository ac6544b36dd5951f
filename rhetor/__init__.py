"""
Rhetor: the LLM management server of the Tekton system.

How the layers fit: ``actors`` (a separate package) is the supervised-actor
runtime. ``rhetor.edge`` (HTTP, SSE, WebSocket) calls ``rhetor.runtime``, which
assembles the actors into one supervision tree and is the in-process API; it
sends requests to the Router (``rhetor.routing``), which reaches
``rhetor.budget``, ``rhetor.providers`` and ``rhetor.storage`` by message; all
of them share the errors, settings and value objects re-exported here.
``rhetor.client`` is the Python client and does not import the server side.

This module stays light (errors, value objects, settings) so that importing
``rhetor.client``, or the request and reply types, never pulls in the server stack.
"""

from rhetor._errors import (
    AllProvidersFailed,
    AuthenticationFailed,
    BadRequest,
    BudgetExceeded,
    ContextTooLong,
    Forbidden,
    InternalError,
    InvalidJSON,
    NotFound,
    Overloaded,
    PayloadTooLarge,
    ProviderError,
    ProviderUnavailable,
    RateLimited,
    RhetorError,
    ServiceUnavailable,
    StorageUnavailable,
    StreamBroken,
    Unauthorized,
    UnsupportedMediaType,
    UpstreamConnectionError,
    UpstreamServerError,
    UpstreamTimeout,
    ValidationError,
)
from rhetor._settings import Settings
from rhetor._types import (
    ChatMessage,
    Chunk,
    Image,
    LLMRequest,
    Passthrough,
    Reply,
    ResponseFormat,
    RoutingParameters,
    Text,
    Thinking,
    ThinkingDelta,
    Tool,
    ToolCall,
    ToolCallDelta,
    ToolChoice,
    ToolResult,
    Usage,
    Verbatim,
)

__version__ = "0.1.0"

__all__ = [
    "AllProvidersFailed",
    "AuthenticationFailed",
    "BadRequest",
    "BudgetExceeded",
    "ChatMessage",
    "Chunk",
    "ContextTooLong",
    "Forbidden",
    "Image",
    "InternalError",
    "InvalidJSON",
    "LLMRequest",
    "NotFound",
    "Overloaded",
    "Passthrough",
    "PayloadTooLarge",
    "ProviderError",
    "ProviderUnavailable",
    "RateLimited",
    "Reply",
    "ResponseFormat",
    "RhetorError",
    "RoutingParameters",
    "ServiceUnavailable",
    "Settings",
    "StorageUnavailable",
    "StreamBroken",
    "Text",
    "Thinking",
    "ThinkingDelta",
    "Tool",
    "ToolCall",
    "ToolCallDelta",
    "ToolChoice",
    "ToolResult",
    "Unauthorized",
    "UnsupportedMediaType",
    "UpstreamConnectionError",
    "UpstreamServerError",
    "UpstreamTimeout",
    "Usage",
    "ValidationError",
    "Verbatim",
    "__version__",
]
