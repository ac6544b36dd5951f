"""
Rhetor: the LLM management server of the Tekton system.

How the layers fit: ``actors`` (a separate package) is the supervised-actor
runtime; ``rhetor._*`` modules hold one actor each (router, budget, contexts,
prompts, providers, sessions) plus their pure logic and storage;
``rhetor.runtime`` assembles them into one supervision tree and is the
in-process API; ``rhetor.edge._app`` and ``rhetor.edge._server`` put HTTP, SSE and
WebSocket in front of it; ``rhetor.client`` is the Python client and does not
import the server side.

This module stays light (errors, value types, settings) so that importing
``rhetor.client`` never pulls in the server stack.
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
    StreamBroken,
    Unauthorized,
    UnsupportedMediaType,
    UpstreamConnectionError,
    UpstreamServerError,
    UpstreamTimeout,
    ValidationError,
)
from rhetor._settings import Settings
from rhetor._types import ChatMessage, Usage

__version__ = "0.1.0"

__all__ = [
    "AllProvidersFailed",
    "AuthenticationFailed",
    "BadRequest",
    "BudgetExceeded",
    "ChatMessage",
    "ContextTooLong",
    "Forbidden",
    "InternalError",
    "InvalidJSON",
    "NotFound",
    "Overloaded",
    "PayloadTooLarge",
    "ProviderError",
    "ProviderUnavailable",
    "RateLimited",
    "RhetorError",
    "ServiceUnavailable",
    "Settings",
    "StreamBroken",
    "Unauthorized",
    "UnsupportedMediaType",
    "UpstreamConnectionError",
    "UpstreamServerError",
    "UpstreamTimeout",
    "Usage",
    "ValidationError",
    "__version__",
]
