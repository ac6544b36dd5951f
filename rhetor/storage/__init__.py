"""
Stored state: the store interfaces, their SQLite implementations, ContextStore and PromptLibrary.

How the parts fit: ``_interfaces`` holds what is stored (frozen values) and
the ``Protocol`` each store implements; ``_sqlite`` is what every SQLite store
shares; ``_history``, ``_library`` (with ``_templates``) are the SQLite
stores; ``_pg`` is what every PostgreSQL store shares (the pool, deadlines,
errors, migrations) and ``_pg_history``, ``_pg_library`` the PostgreSQL stores; ``_rendering`` is template and prompt text, pure. ``_actor`` is the
base of the two actors, ``_contexts`` (ContextStore) and ``_prompts``
(PromptLibrary), each beside the messages it answers. Nothing here imports
routing, budget, providers or the edge.
"""

from rhetor.storage._actor import StoreActor
from rhetor.storage._contexts import (
    Appended,
    AppendTurns,
    ContextStore,
    DeleteContext,
    GetContextInfo,
    GetHistory,
    GetWindow,
    ListContexts,
    NeedsSummary,
    ReadContext,
    SearchContexts,
    SetSummary,
    SharedContextStore,
)
from rhetor.storage._history import SQLiteHistory
from rhetor.storage._interfaces import (
    ContextHistory,
    ContextInfo,
    ContextRecord,
    ContextWindow,
    SearchHit,
    Store,
    StoredMessage,
    WindowState,
)
from rhetor.storage._library import SQLiteLibrary
from rhetor.storage._library_interfaces import (
    Library,
    Prompt,
    SystemPrompts,
    Template,
    TemplateLibrary,
    TemplateVersion,
)
from rhetor.storage._pg import PgDatabase
from rhetor.storage._pg_history import PostgresHistory
from rhetor.storage._pg_library import PostgresLibrary
from rhetor.storage._prompts import (
    CreatePrompt,
    CreateTemplate,
    DeletePrompt,
    DeleteTemplate,
    GeneratePrompt,
    GetDefaultPrompt,
    GetPrompt,
    GetTemplate,
    GetTemplateVersions,
    ListPrompts,
    ListTemplates,
    PromptLibrary,
    RenderTemplate,
    SharedPromptLibrary,
    UpdatePrompt,
    UpdateTemplate,
)

__all__ = [
    "AppendTurns",
    "Appended",
    "ContextHistory",
    "ContextInfo",
    "ContextRecord",
    "ContextStore",
    "ContextWindow",
    "CreatePrompt",
    "CreateTemplate",
    "DeleteContext",
    "DeletePrompt",
    "DeleteTemplate",
    "GeneratePrompt",
    "GetContextInfo",
    "GetDefaultPrompt",
    "GetHistory",
    "GetPrompt",
    "GetTemplate",
    "GetTemplateVersions",
    "GetWindow",
    "Library",
    "ListContexts",
    "ListPrompts",
    "ListTemplates",
    "NeedsSummary",
    "PgDatabase",
    "PostgresHistory",
    "PostgresLibrary",
    "Prompt",
    "PromptLibrary",
    "ReadContext",
    "RenderTemplate",
    "SQLiteHistory",
    "SQLiteLibrary",
    "SearchContexts",
    "SearchHit",
    "SetSummary",
    "SharedContextStore",
    "SharedPromptLibrary",
    "Store",
    "StoreActor",
    "StoredMessage",
    "SystemPrompts",
    "Template",
    "TemplateLibrary",
    "TemplateVersion",
    "UpdatePrompt",
    "UpdateTemplate",
    "WindowState",
]
