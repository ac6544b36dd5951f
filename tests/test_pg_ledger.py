"""
What only the shared ledger does: owners with leases, and a sweep that takes only the dead.
"""

from __future__ import annotations

import pytest

from rhetor.budget._interfaces import LedgerEntry, ReservationRow
from rhetor.budget._pg_ledger import OwnerLease, PostgresLedger
from rhetor.storage._pg import PgDatabase


def reservation(rid: int, owner: str, amount: float = 0.5) -> ReservationRow:
    return ReservationRow(
        id=rid,
        key=f"k{rid}",
        owner=owner,
        request_id=f"req-{rid}",
        provider="openai",
        model="gpt-4o",
        input_tokens=100,
        output_tokens=1000,
        amount=amount,
        ts=500.0 + rid,
    )


@pytest.fixture
def ledger(pg: PgDatabase) -> PostgresLedger:
    return PostgresLedger(pg)


def test_the_sweep_takes_only_owners_without_a_lease(
    pg: PgDatabase, ledger: PostgresLedger
) -> None:
    """A live owner's reservations stay; a closed lease's and an unregistered owner's are billed."""
    alive, dead = OwnerLease(pg, "alive"), OwnerLease(pg, "dead")
    alive.hold()
    dead.hold()
    ledger.reserve_many(
        [reservation(1, "alive"), reservation(2, "dead", 0.25), reservation(3, "never-seen", 0.5)]
    )
    assert ledger.sweep("me") == (1, 0.5)  # only the unregistered owner is gone so far
    dead.close()  # its connection ends, and with it the lock: as a kill -9 would
    assert ledger.sweep("me") == (1, 0.25)
    assert [r.owner for r in ledger.reservations()] == ["alive"]
    billed = {e.reservation_id: (e.status, e.billed, e.cost) for e in ledger.entries()}
    assert billed == {2: ("interrupted", "worst_case", 0.25), 3: ("interrupted", "worst_case", 0.5)}
    with pg.connection() as conn:
        owners = [row[0] for row in conn.execute("SELECT owner FROM owners ORDER BY owner")]
    assert owners == ["alive"]  # the dead owner, with nothing left, is forgotten
    alive.close()


def test_a_lease_whose_connection_broke_is_taken_again(
    pg: PgDatabase, ledger: PostgresLedger
) -> None:
    """ensure() notices a lease cut off by the server and holds it again before anyone sweeps."""
    lease = OwnerLease(pg, "restarted")
    lease.hold()
    try:
        ledger.reserve_many([reservation(1, "restarted")])
        with pg.connection() as conn:
            # As a database restart would: the server ends the lease's session (waiting up to 5 s).
            conn.execute("SELECT pg_terminate_backend(%s, 5000)", (lease.backend_pid,))
        assert lease.ensure() is True
        assert lease.ensure() is False
        assert ledger.sweep("someone") == (0, 0.0)
    finally:
        lease.close()


def test_a_settle_after_a_sweep_replaces_the_interrupted_charge(
    pg: PgDatabase, ledger: PostgresLedger
) -> None:
    """A process only cut off, not dead, settles later: its real charge replaces the worst case."""
    ledger.reserve_many([reservation(1, "cut-off", 0.5)])
    assert ledger.sweep("me") == (1, 0.5)
    actual = LedgerEntry(
        "req-1", "openai", "gpt-4o", 10, 20, 0.01, charge_id="c1", reservation_id=1, ts=600.0
    )
    ledger.record_many([actual])
    (charge,) = ledger.entries()
    assert (charge.charge_id, charge.cost, charge.status) == ("c1", 0.01, "ok")
    assert ledger.spent(0.0) == 0.01
