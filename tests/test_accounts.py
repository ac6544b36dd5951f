"""The budget's arithmetic: periods, limits, reservations and how amounts are printed."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest

from rhetor._errors import ValidationError
from rhetor.budget._accounts import Accounts
from rhetor.budget._interfaces import LedgerEntry, ReservationRow
from rhetor.budget._rules import Claim, decide, period_end, period_start, usd


def reservation(rid: int, amount: float, provider: str = "openai", key: str = "") -> ReservationRow:
    return ReservationRow(
        id=rid,
        key=key or f"k{rid}",
        owner="o",
        request_id=f"r{rid}",
        provider=provider,
        model="m",
        input_tokens=10,
        output_tokens=10,
        amount=amount,
    )


def charge(cost: float, ts: float, reservation_id: int | None = None) -> LedgerEntry:
    return LedgerEntry(
        request_id="r",
        provider="openai",
        model="m",
        input_tokens=1,
        output_tokens=1,
        cost=cost,
        ts=ts,
        reservation_id=reservation_id,
    )


@pytest.mark.parametrize(
    ("amount", "text"),
    [
        (0.000123, "$0.000123"),
        (0.0001234567, "$0.000123457"),
        (0.5, "$0.50"),
        (0.1 + 0.2, "$0.30"),
        (12.3456789, "$12.3457"),
        (0.0, "$0.00"),
        (1e-9, "$0.000000001"),
        (2_500_000.0, "$2500000.00"),
    ],
)
def test_usd_prints_the_digits_that_matter(amount: float, text: str) -> None:
    """Amounts print with six significant digits, at least two decimals and no exponent."""
    assert usd(amount) == text


class Clock:
    """A settable now() for the accounts."""

    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


def loaded(clock: Clock) -> Accounts:
    accounts = Accounts(now=clock)
    accounts.load(accounts.period_starts(), [])
    return accounts


def test_a_small_limit_is_named_with_its_own_precision() -> None:
    """A refusal against a $0.000123 limit says $0.000123, not $0.0001."""
    accounts = loaded(Clock(datetime(2024, 2, 14, 12, tzinfo=UTC)))
    accounts.set_limit("daily", 0.000123)
    over = accounts.over("openai", 0.0002)
    assert over is not None
    assert "daily budget $0.000123 would be exceeded (spent and reserved $0.00)" in over.describe()


def test_held_reservations_count_until_forgotten_and_return_to_exactly_zero() -> None:
    """Holding counts against the limit; forgetting every reservation leaves no float residue."""
    accounts = loaded(Clock(datetime(2024, 2, 14, 12, tzinfo=UTC)))
    accounts.set_limit("daily", 1.0)
    amounts = [0.1, 0.2, 0.3, 0.1 + 0.2, 0.07]
    for i, amount in enumerate(amounts, 1):
        accounts.hold(reservation(i, amount))
    assert accounts.over("openai", 1.0 - sum(amounts) - 0.01) is None
    assert accounts.over("openai", 0.5) is not None
    for i in range(1, len(amounts) + 1):
        accounts.forget(i)
        accounts.forget(i)  # a second forget changes nothing
    assert accounts.status()["daily"]["reserved"] == 0.0
    assert accounts.open_count == 0


def test_a_charge_releases_its_reservation_and_counts_in_every_period() -> None:
    """Applying a committed charge frees its reservation and adds its cost."""
    clock = Clock(datetime(2024, 2, 14, 12, tzinfo=UTC))
    accounts = loaded(clock)
    accounts.hold(reservation(7, 0.4))
    accounts.apply_charge(charge(0.25, clock.now.timestamp(), reservation_id=7))
    status = accounts.status()
    assert accounts.held(7) is None
    assert [status[p]["spent"] for p in ("daily", "weekly", "monthly")] == [0.25] * 3
    assert status["daily"]["reserved"] == 0.0


def test_a_new_day_starts_from_zero_but_keeps_the_week() -> None:
    """At midnight the daily total restarts, the weekly one goes on; late charges of yesterday stay yesterday's."""
    clock = Clock(datetime(2024, 2, 14, 23, 59, tzinfo=UTC))
    accounts = loaded(clock)
    yesterday = clock.now.timestamp()
    accounts.apply_charge(charge(1.0, yesterday))
    clock.now = datetime(2024, 2, 15, 0, 1, tzinfo=UTC)
    # Settled before midnight, committed after it: not today's.
    accounts.apply_charge(charge(0.5, yesterday))
    accounts.apply_charge(charge(0.25, clock.now.timestamp()))
    status = accounts.status()
    assert status["daily"]["spent"] == 0.25
    assert status["weekly"]["spent"] == 1.75
    assert status["daily"]["start"] == "2024-02-15T00:00:00+00:00"


@pytest.mark.parametrize("amount", [float("nan"), float("inf"), -1.0, "5", True])
def test_a_limit_must_be_a_finite_number_from_zero(amount: object) -> None:
    """NaN, infinity, negatives and non-numbers are refused: a NaN limit would pass every check."""
    accounts = loaded(Clock(datetime(2024, 2, 14, tzinfo=UTC)))
    with pytest.raises(ValidationError) as info:
        accounts.set_limit("daily", amount)  # type: ignore[arg-type]
    assert info.value.field == "limit"
    assert not accounts.limited


# Wednesday 2024-02-14 15:30 UTC.
NOW = datetime(2024, 2, 14, 15, 30, 12, 345, tzinfo=UTC)


@pytest.mark.parametrize(
    ("period", "start", "end"),
    [
        ("daily", datetime(2024, 2, 14, tzinfo=UTC), datetime(2024, 2, 15, tzinfo=UTC)),
        ("weekly", datetime(2024, 2, 12, tzinfo=UTC), datetime(2024, 2, 19, tzinfo=UTC)),
        ("monthly", datetime(2024, 2, 1, tzinfo=UTC), datetime(2024, 3, 1, tzinfo=UTC)),
    ],
)
def test_period_bounds(period: str, start: datetime, end: datetime) -> None:
    """Days start at UTC midnight, weeks on Monday, months on the 1st."""
    assert period_start(period, NOW) == start  # type: ignore[arg-type]
    assert period_end(period, NOW) == end  # type: ignore[arg-type]
    assert start.weekday() == 0 or period != "weekly"


def test_week_starting_on_monday_and_sunday() -> None:
    """A Monday is its own week's start; a Sunday belongs to the week before."""
    monday = datetime(2024, 2, 12, 0, 0, tzinfo=UTC)
    sunday = datetime(2024, 2, 18, 23, 59, tzinfo=UTC)
    assert period_start("weekly", monday) == monday
    assert period_start("weekly", sunday) == monday
    assert period_end("weekly", sunday) == monday + timedelta(weeks=1)


def test_month_end_rolls_over_the_year() -> None:
    """December's period ends on January 1st of the next year."""
    assert period_end("monthly", datetime(2023, 12, 31, 23, tzinfo=UTC)) == datetime(
        2024, 1, 1, tzinfo=UTC
    )


def test_periods_are_computed_in_utc() -> None:
    """A non-UTC time is converted first; a naive time is taken as UTC."""
    tokyo = timezone(timedelta(hours=9))
    # 2024-03-01 05:00 in Tokyo is still February 29th in UTC.
    assert period_start("monthly", datetime(2024, 3, 1, 5, tzinfo=tokyo)) == datetime(
        2024, 2, 1, tzinfo=UTC
    )
    assert period_start("daily", datetime(2024, 3, 1, 5)) == datetime(2024, 3, 1, tzinfo=UTC)


def test_period_rejects_unknown() -> None:
    """An unknown period is a ValidationError on the period field."""
    with pytest.raises(ValidationError) as info:
        period_start("yearly", NOW)  # type: ignore[arg-type]
    assert info.value.field == "period"


def test_periods_start_at_midnight_in_the_budget_time_zone() -> None:
    """In Europe/Paris a day starts at 23:00 UTC in winter and 22:00 UTC in summer; months on the local 1st."""
    paris = ZoneInfo("Europe/Paris")
    winter = datetime(2024, 1, 10, 23, 30, tzinfo=UTC)  # already the 11th in Paris
    assert period_start("daily", winter, paris) == datetime(2024, 1, 10, 23, tzinfo=UTC)
    assert period_end("daily", winter, paris) == datetime(2024, 1, 11, 23, tzinfo=UTC)
    summer = datetime(2024, 7, 31, 22, 30, tzinfo=UTC)  # August 1st in Paris
    assert period_start("monthly", summer, paris) == datetime(2024, 7, 31, 22, tzinfo=UTC)
    assert period_start("weekly", summer, paris) == datetime(2024, 7, 28, 22, tzinfo=UTC)


def test_a_day_with_a_clock_change_is_23_or_25_hours_long() -> None:
    """Periods follow the local calendar across daylight saving changes (America/New_York)."""
    new_york = ZoneInfo("America/New_York")
    spring = datetime(2024, 3, 10, 12, tzinfo=UTC)
    autumn = datetime(2024, 11, 3, 12, tzinfo=UTC)
    for day, hours in ((spring, 23), (autumn, 25)):
        length = period_end("daily", day, new_york) - period_start("daily", day, new_york)
        assert length == timedelta(hours=hours)


def test_changing_a_limit_keeps_the_period_and_its_spend() -> None:
    """Spend is counted from the period's start, not from the limit: a new limit sees what was spent."""
    clock = {"now": datetime(2024, 2, 14, 12, tzinfo=UTC)}
    accounts = Accounts(now=lambda: clock["now"], tz=ZoneInfo("Asia/Tokyo"))
    accounts.load(accounts.period_starts(), [("daily", None, 0.75)])
    accounts.set_limit("daily", 1.0)
    assert accounts.over("p", 0.3) is not None
    accounts.set_limit("daily", 2.0)
    assert accounts.over("p", 0.3) is None
    assert accounts.status()["daily"]["spent"] == 0.75
    assert accounts.status()["daily"]["start"] == "2024-02-13T15:00:00+00:00"


@pytest.mark.parametrize(
    ("policy", "claim", "expected"),
    [
        # $1 limit, $0.90 used: $0.10 of headroom.
        ("ignore", Claim("p", 0.5), (False, 0, 0.5, False)),
        ("warn", Claim("p", 0.5), (False, 0, 0.5, True)),
        ("enforce", Claim("p", 0.05), (False, 0, 0.05, False)),
        ("enforce", Claim("p", 0.5), (True, 0, 0.5, True)),
        # $0.02 of input, then $0.001 a token: 80 of the 480 tokens asked for fit.
        ("enforce", Claim("p", 0.5, 480, 0.001, 64), (False, 80, 0.1, False)),
        ("enforce", Claim("p", 0.5, 480, 0.001, 81), (True, 480, 0.5, True)),
        ("enforce", Claim("p", 0.5, 480, 0.001, None), (True, 480, 0.5, True)),
    ],
)
def test_the_budget_rule_grants_warns_clamps_or_refuses(
    policy: str, claim: Claim, expected: tuple[bool, int, float, bool]
) -> None:
    """decide(): ignore grants, warn grants with a warning, enforce grants what fits, clamps to the headroom, or refuses."""
    decision = decide(policy, {("daily", None): 1.0}, lambda period, scope: 0.9, claim)
    refused, tokens, amount, over = expected
    assert decision.refused is refused
    assert decision.output_tokens == tokens or (tokens == 0 and decision.output_tokens == 0)
    assert decision.amount == pytest.approx(amount)
    assert (decision.over is not None) is over
