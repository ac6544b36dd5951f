"""
The PostgreSQL ledger's schema: its advisory lock keys and the numbered steps that create its tables.

The tables are the SQLite ledger's (``entries``, ``reservations``,
``limits``, ``settings``) plus ``owners``, ``reservation_ids``,
``spend_hours`` and ``spend_days`` (kept by triggers on ``entries``). How they are used is in
:mod:`rhetor.budget._pg_ledger`.
"""

from __future__ import annotations

from rhetor.storage._pg import Migration

__all__ = ["BUDGET_LOCK", "LEDGER_MIGRATIONS", "OWNER_LOCKS"]

# pg_advisory_xact_lock key every reservation transaction takes (any fixed 64-bit number).
BUDGET_LOCK = 0x5248_4554_4F52_0002
# The first key of the two-key advisory locks owners hold: pg_advisory_lock(OWNER_LOCKS, key).
OWNER_LOCKS = 0x5248_0003

LEDGER_MIGRATIONS: tuple[Migration, ...] = (
    Migration(
        "ledger",
        1,
        "charges, reservations, limits, settings, owners",
        (
            """
            CREATE TABLE entries (
                id             BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
                ts             DOUBLE PRECISION NOT NULL,
                request_id     TEXT    NOT NULL,
                provider       TEXT    NOT NULL,
                model          TEXT    NOT NULL,
                component      TEXT    NOT NULL DEFAULT '',
                context_id     TEXT,
                input_tokens   BIGINT  NOT NULL CHECK (input_tokens >= 0),
                output_tokens  BIGINT  NOT NULL CHECK (output_tokens >= 0),
                cost           DOUBLE PRECISION NOT NULL CHECK (cost >= 0),
                status         TEXT    NOT NULL
                               CHECK (status IN ('ok', 'partial', 'failed', 'interrupted')),
                billed         TEXT    NOT NULL DEFAULT 'usage'
                               CHECK (billed IN ('usage', 'capped', 'worst_case')),
                charge_id      TEXT    UNIQUE,
                reservation_id BIGINT
            )
            """,
            # The sums of a reservation's check read only this index.
            "CREATE INDEX entries_ts ON entries (ts) INCLUDE (provider, cost)",
            "CREATE INDEX entries_reservation ON entries (reservation_id)"
            " WHERE reservation_id IS NOT NULL",
            """
            CREATE TABLE reservations (
                id            BIGINT  PRIMARY KEY,
                key           TEXT    NOT NULL,
                owner         TEXT    NOT NULL,
                ts            DOUBLE PRECISION NOT NULL,
                request_id    TEXT    NOT NULL,
                provider      TEXT    NOT NULL,
                model         TEXT    NOT NULL,
                component     TEXT    NOT NULL DEFAULT '',
                context_id    TEXT,
                input_tokens  BIGINT  NOT NULL CHECK (input_tokens >= 0),
                output_tokens BIGINT  NOT NULL CHECK (output_tokens >= 0),
                amount        DOUBLE PRECISION NOT NULL CHECK (amount >= 0)
            )
            """,
            "CREATE INDEX reservations_owner ON reservations (owner)",
            # provider '' stands for "all providers": NULL would not be unique in the key.
            """
            CREATE TABLE limits (
                period   TEXT NOT NULL CHECK (period IN ('daily', 'weekly', 'monthly')),
                provider TEXT NOT NULL DEFAULT '',
                amount   DOUBLE PRECISION NOT NULL,
                PRIMARY KEY (period, provider)
            )
            """,
            "CREATE TABLE settings (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
            # The high-water mark of reservation ids claimed by any process.
            """
            CREATE TABLE reservation_ids (
                one  BOOLEAN PRIMARY KEY DEFAULT TRUE CHECK (one),
                last BIGINT  NOT NULL
            )
            """,
            "INSERT INTO reservation_ids (last) VALUES (0)",
            # Each running runtime; alive while it holds pg_advisory_lock(OWNER_LOCKS, lock_key).
            """
            CREATE TABLE owners (
                owner    TEXT    PRIMARY KEY,
                lock_key INTEGER NOT NULL UNIQUE,
                pid      INTEGER NOT NULL,
                host     TEXT    NOT NULL,
                started  DOUBLE PRECISION NOT NULL
            )
            """,
            "CREATE SEQUENCE owner_lock_keys AS INTEGER CYCLE",
        ),
    ),
    Migration(
        "ledger",
        2,
        "one charge per reservation",
        (
            # A sweep racing a late settle could leave both charges: keep the real one.
            """
            DELETE FROM entries e WHERE e.status = 'interrupted'
            AND e.charge_id LIKE 'interrupted:%' AND EXISTS (
                SELECT 1 FROM entries o WHERE o.reservation_id = e.reservation_id AND o.id <> e.id
            )
            """,
            """
            UPDATE entries e SET reservation_id = NULL WHERE EXISTS (
                SELECT 1 FROM entries o WHERE o.reservation_id = e.reservation_id AND o.id < e.id
            )
            """,
            "DROP INDEX entries_reservation",
            "CREATE UNIQUE INDEX entries_reservation ON entries (reservation_id)",
        ),
    ),
    Migration(
        "ledger",
        3,
        "a stream's progress on its reservation",
        (
            # NULL: nothing known, so a sweep bills the worst case.
            "ALTER TABLE reservations"
            " ADD COLUMN used_output BIGINT NOT NULL DEFAULT 0 CHECK (used_output >= 0),"
            " ADD COLUMN used_cost DOUBLE PRECISION CHECK (used_cost >= 0)",
        ),
    ),
    Migration(
        "ledger",
        4,
        "limits per component",
        (
            # component '' stands for "all", as provider '' does.
            "ALTER TABLE limits ADD COLUMN component TEXT NOT NULL DEFAULT ''",
            "ALTER TABLE limits DROP CONSTRAINT limits_pkey",
            "ALTER TABLE limits ADD PRIMARY KEY (period, provider, component)",
            "ALTER TABLE limits ADD CHECK (provider = '' OR component = '')",
        ),
    ),
    Migration(
        "ledger",
        5,
        "hourly spend totals for the reservation check",
        (
            # Per UTC hour, provider and component: the sum of the charges'
            # cost, kept by triggers in the transaction that changes entries.
            """
            CREATE TABLE spend_hours (
                hour      DOUBLE PRECISION NOT NULL,
                provider  TEXT NOT NULL,
                component TEXT NOT NULL,
                cost      DOUBLE PRECISION NOT NULL,
                PRIMARY KEY (hour, provider, component)
            )
            """,
            """
            CREATE FUNCTION spend_hours_add() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN
                INSERT INTO spend_hours AS s (hour, provider, component, cost)
                SELECT floor(ts / 3600) * 3600, provider, component, sum(cost)
                FROM new_rows GROUP BY 1, 2, 3 ORDER BY 1, 2, 3
                ON CONFLICT (hour, provider, component) DO UPDATE SET cost = s.cost + excluded.cost;
                RETURN NULL;
            END $$
            """,
            """
            CREATE FUNCTION spend_hours_remove() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN
                INSERT INTO spend_hours AS s (hour, provider, component, cost)
                SELECT floor(ts / 3600) * 3600, provider, component, -sum(cost)
                FROM old_rows GROUP BY 1, 2, 3 ORDER BY 1, 2, 3
                ON CONFLICT (hour, provider, component) DO UPDATE SET cost = s.cost + excluded.cost;
                RETURN NULL;
            END $$
            """,
            # The triggers first: they lock entries against writers until the
            # backfill below commits, so no charge is counted twice or missed.
            "CREATE TRIGGER spend_hours_inserted AFTER INSERT ON entries"
            " REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION spend_hours_add()",
            "CREATE TRIGGER spend_hours_updated_old AFTER UPDATE ON entries"
            " REFERENCING OLD TABLE AS old_rows FOR EACH STATEMENT"
            " EXECUTE FUNCTION spend_hours_remove()",
            "CREATE TRIGGER spend_hours_updated_new AFTER UPDATE ON entries"
            " REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION spend_hours_add()",
            "CREATE TRIGGER spend_hours_deleted AFTER DELETE ON entries"
            " REFERENCING OLD TABLE AS old_rows FOR EACH STATEMENT"
            " EXECUTE FUNCTION spend_hours_remove()",
            "INSERT INTO spend_hours (hour, provider, component, cost)"
            " SELECT floor(ts / 3600) * 3600, provider, component, sum(cost)"
            " FROM entries GROUP BY 1, 2, 3",
        ),
    ),
    Migration(
        "ledger",
        6,
        "daily spend totals beside the hourly ones",
        (
            # Writers of charges wait until the backfill below commits, so no
            # charge is counted twice or missed (the functions change meanwhile).
            "LOCK TABLE entries IN SHARE ROW EXCLUSIVE MODE",
            # Per UTC day, provider and component: kept by the same triggers,
            # after spend_hours (every writer takes the rows in that order).
            """
            CREATE TABLE spend_days (
                day       DOUBLE PRECISION NOT NULL,
                provider  TEXT NOT NULL,
                component TEXT NOT NULL,
                cost      DOUBLE PRECISION NOT NULL,
                PRIMARY KEY (day, provider, component)
            )
            """,
            """
            CREATE OR REPLACE FUNCTION spend_hours_add() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN
                INSERT INTO spend_hours AS s (hour, provider, component, cost)
                SELECT floor(ts / 3600) * 3600, provider, component, sum(cost)
                FROM new_rows GROUP BY 1, 2, 3 ORDER BY 1, 2, 3
                ON CONFLICT (hour, provider, component) DO UPDATE SET cost = s.cost + excluded.cost;
                INSERT INTO spend_days AS s (day, provider, component, cost)
                SELECT floor(ts / 86400) * 86400, provider, component, sum(cost)
                FROM new_rows GROUP BY 1, 2, 3 ORDER BY 1, 2, 3
                ON CONFLICT (day, provider, component) DO UPDATE SET cost = s.cost + excluded.cost;
                RETURN NULL;
            END $$
            """,
            """
            CREATE OR REPLACE FUNCTION spend_hours_remove() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN
                INSERT INTO spend_hours AS s (hour, provider, component, cost)
                SELECT floor(ts / 3600) * 3600, provider, component, -sum(cost)
                FROM old_rows GROUP BY 1, 2, 3 ORDER BY 1, 2, 3
                ON CONFLICT (hour, provider, component) DO UPDATE SET cost = s.cost + excluded.cost;
                INSERT INTO spend_days AS s (day, provider, component, cost)
                SELECT floor(ts / 86400) * 86400, provider, component, -sum(cost)
                FROM old_rows GROUP BY 1, 2, 3 ORDER BY 1, 2, 3
                ON CONFLICT (day, provider, component) DO UPDATE SET cost = s.cost + excluded.cost;
                RETURN NULL;
            END $$
            """,
            "INSERT INTO spend_days (day, provider, component, cost)"
            " SELECT floor(ts / 86400) * 86400, provider, component, sum(cost)"
            " FROM entries GROUP BY 1, 2, 3",
        ),
    ),
)
