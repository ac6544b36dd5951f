"""
Rhetor's Python client: what other Tekton components import to use LLMs.

How the layers fit: ``_errors`` holds the one exception tree and the one place
that translates server error bodies and httpx/httpx-ws failures into it;
``_models`` holds the frozen values calls return; ``_http`` is
:class:`RhetorClient` (HTTP and SSE); ``_session`` is the WebSocket
:class:`Session` it opens; ``_prompts`` is the seeds' prompt client.

Everything runs on anyio and httpx, under asyncio or trio, and nothing here
imports the server (Quart, Hypercorn, the actor runtime).
"""

from rhetor.client._errors import (
    BudgetExceeded,
    ConnectionRefused,
    NotFound,
    ProviderUnavailable,
    RequestCancelled,
    RhetorClientError,
    ServerError,
    StorageUnavailable,
    Timeout,
    Unauthorized,
    ValidationError,
)
from rhetor.client._http import ReplyStream, RhetorClient
from rhetor.client._models import (
    Chunk,
    Completed,
    Message,
    Reply,
    SessionEvent,
    TokenUsage,
    ToolCall,
    TypingStarted,
    TypingStopped,
)
from rhetor.client._prompts import PromptClient, get_rhetor_prompt_client
from rhetor.client._session import Session, SessionRequest

__all__ = [
    "BudgetExceeded",
    "Chunk",
    "Completed",
    "ConnectionRefused",
    "Message",
    "NotFound",
    "PromptClient",
    "ProviderUnavailable",
    "Reply",
    "ReplyStream",
    "RequestCancelled",
    "RhetorClient",
    "RhetorClientError",
    "ServerError",
    "Session",
    "SessionEvent",
    "SessionRequest",
    "StorageUnavailable",
    "Timeout",
    "TokenUsage",
    "ToolCall",
    "TypingStarted",
    "TypingStopped",
    "Unauthorized",
    "ValidationError",
    "get_rhetor_prompt_client",
]
