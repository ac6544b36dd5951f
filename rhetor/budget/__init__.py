"""
Budgets: the BudgetKeeper actor, its messages, pricing, and the ledger of every charge.

How the parts fit: ``_accounts`` is the budget's arithmetic (pure, in memory);
``_interfaces`` holds the ledger's rows and :class:`BudgetLedger`, the
interface a ledger store implements; ``_ledger`` (with ``_ledger_schema``) is
the SQLite ledger and ``_pg_ledger`` the PostgreSQL one, shared by processes
(its migrations in ``_pg_ledger_schema``, its statements in ``_pg_ledger_sql``,
the owners' lease in ``_pg_owners``); ``_commits`` writes a group commit to a ledger;
``_messages`` are what the keeper answers; ``_keeper`` is the actor (its
reserve, settle and report handlers) over ``_keeper_ledger`` (its state, ledger
reads, refreshes and group commits), with pure helpers in ``_keeper_values``;
``_pricing`` prices requests. budget imports storage's SQLite helpers, never
routing, providers or the edge.
"""

from rhetor.budget._interfaces import (
    BudgetLedger,
    LedgerEntry,
    ReservationRow,
    UsageRow,
)
from rhetor.budget._keeper import BudgetKeeper
from rhetor.budget._ledger import SQLiteLedger
from rhetor.budget._messages import (
    BudgetStatus,
    CheckBudget,
    GetActiveModel,
    GetBudget,
    GetBudgetMode,
    GetEntries,
    GetUsage,
    Progress,
    Reservation,
    Reserve,
    SetLimit,
    SetPolicy,
    Settle,
    SpendEntry,
    StoreActiveModel,
    UsageTotals,
)
from rhetor.budget._pg_ledger import PostgresLedger

__all__ = [
    "BudgetKeeper",
    "BudgetLedger",
    "BudgetStatus",
    "CheckBudget",
    "GetActiveModel",
    "GetBudget",
    "GetBudgetMode",
    "GetEntries",
    "GetUsage",
    "LedgerEntry",
    "PostgresLedger",
    "Progress",
    "Reservation",
    "ReservationRow",
    "Reserve",
    "SQLiteLedger",
    "SetLimit",
    "SetPolicy",
    "Settle",
    "SpendEntry",
    "StoreActiveModel",
    "UsageRow",
    "UsageTotals",
]
