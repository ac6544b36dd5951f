"""
The public names of rhetor.storage and rhetor.budget: the store interfaces, their SQLite and PostgreSQL stores, the actors and their messages.
"""

from __future__ import annotations

import attrs

import rhetor.budget
import rhetor.storage
from rhetor._asks import Ask

STORAGE = {
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
}

BUDGET = {
    "BudgetKeeper",
    "BudgetLedger",
    "BudgetStatus",
    "CheckBudget",
    "GetActiveModel",
    "GetBudget",
    "GetBudgetMode",
    "GetUsage",
    "LedgerEntry",
    "PostgresLedger",
    "Reservation",
    "ReservationRow",
    "Reserve",
    "SQLiteLedger",
    "SetLimit",
    "SetPolicy",
    "Settle",
    "StoreActiveModel",
    "UsageRow",
    "UsageTotals",
}


def test_storage_exports_exactly_its_public_names() -> None:
    """rhetor.storage's __all__ is the list above, and every name in it exists."""
    assert set(rhetor.storage.__all__) == STORAGE
    assert all(hasattr(rhetor.storage, name) for name in STORAGE)


def test_budget_exports_exactly_its_public_names() -> None:
    """rhetor.budget's __all__ is the list above, and every name in it exists."""
    assert set(rhetor.budget.__all__) == BUDGET
    assert all(hasattr(rhetor.budget, name) for name in BUDGET)


def test_every_store_message_is_a_frozen_ask() -> None:
    """Each message a store actor or the keeper answers is a frozen attrs Ask with a reply type."""
    messages = [
        getattr(package, name)
        for package, names in ((rhetor.storage, STORAGE), (rhetor.budget, BUDGET))
        for name in names
        if isinstance(getattr(package, name), type) and issubclass(getattr(package, name), Ask)
    ]
    assert len(messages) == 24 + 10
    for message in messages:
        assert attrs.has(message) and message.__setattr__ is not object.__setattr__, message
        assert message.__orig_bases__[0].__args__, message  # Ask[R] names its R
