"""Tiers: upgrade at once, never demote mid-period, requalify at period end by the downgrade policy."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from fractions import Fraction
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from patron.domain.program import TierLevel, Tiers
from patron.domain.tiers import (
    Assignment,
    QualRow,
    TierState,
    evaluate,
    fold,
    history,
    next_level,
    period_bounds,
    requalify,
    resumable,
)

MEMBER = TierLevel("member", "Member", 0)
SILVER = TierLevel("silver", "Silver", 20000)
GOLD = TierLevel("gold", "Gold", 50000, multiplier=Fraction(3, 2))
LEVELS = (MEMBER, SILVER, GOLD)
UTC_TZ = ZoneInfo("UTC")
NY = ZoneInfo("America/New_York")
ENROLLED = datetime(2025, 1, 1, tzinfo=UTC)


def d(y: int, m: int, day: int, h: int = 0) -> datetime:
    return datetime(y, m, day, h, tzinfo=UTC)


def tiers(downgrade: str = "one_level", levels: tuple[TierLevel, ...] = LEVELS) -> Tiers:
    return Tiers(metric="qualifying_spend", period="calendar_year", downgrade=downgrade, levels=levels)


def buy(at: datetime, value: int) -> QualRow:
    return QualRow(period_at=at, recorded_at=at, value=value)


def refund(of: datetime, at: datetime, value: int) -> QualRow:
    """A refund recorded at ``at`` of a purchase made at ``of``: it counts in the purchase's period."""
    return QualRow(period_at=of, recorded_at=at, value=-value)


def state(t: Tiers, rows: list[QualRow], as_of: datetime, tz: ZoneInfo = UTC_TZ) -> TierState:
    return evaluate(t, rows, as_of=as_of, tz=tz, enrolled_at=ENROLLED)


def level(t: Tiers, rows: list[QualRow], as_of: datetime) -> str | None:
    lv = state(t, rows, as_of).level
    return lv.id if lv else None


# --------------------------------------------------------------------------------------------------
# Concrete examples from the contract
# --------------------------------------------------------------------------------------------------


def test_a_new_member_starts_at_the_base_level() -> None:
    s = state(tiers(), [], d(2025, 6, 1))
    assert s.level == MEMBER
    assert s.value == 0
    assert (s.period_start, s.period_end) == (d(2025, 1, 1), d(2026, 1, 1))


def test_crossing_a_threshold_mid_period_upgrades_at_once() -> None:
    rows = [buy(d(2025, 3, 1), 15000), buy(d(2025, 4, 10, 12), 6000), buy(d(2025, 8, 1), 30000)]
    t = tiers()
    assert level(t, rows, d(2025, 4, 10, 11)) == "member"
    s = state(t, rows, d(2025, 4, 10, 12))
    assert s.level == SILVER
    assert s.since == d(2025, 4, 10, 12)
    assert s.value == 21000
    assert level(t, rows, d(2025, 7, 31)) == "silver"
    gold = state(t, rows, d(2025, 8, 1))
    assert gold.level == GOLD
    assert gold.since == d(2025, 8, 1)


def test_a_refund_does_not_demote_mid_period() -> None:
    bought = d(2025, 3, 1)
    rows = [buy(bought, 60000), refund(bought, d(2025, 5, 1), 45000)]
    t = tiers()
    s = state(t, rows, d(2025, 6, 1))
    assert s.level == GOLD
    assert s.value == 15000  # the value does go down: only the level stays


@pytest.mark.parametrize(
    ("policy", "expected"), [("one_level", "silver"), ("recompute", "member"), ("none", "gold")]
)
def test_gold_in_2025_with_a_weak_2026_is_placed_by_the_policy(policy: str, expected: str) -> None:
    rows = [buy(d(2025, 3, 1), 60000), buy(d(2026, 2, 1), 1000)]
    t = tiers(policy)
    # a level reached in 2025 is held to the end of 2026, whatever 2026 brings
    assert level(t, rows, d(2026, 1, 1)) == "gold"
    assert level(t, rows, d(2026, 12, 31, 23)) == "gold"
    s = state(t, rows, d(2027, 1, 1))
    assert s.level is not None
    assert s.level.id == expected
    if expected != "gold":
        assert s.since == d(2027, 1, 1)
    assert level(t, rows, d(2027, 6, 1)) == expected


def test_one_level_keeps_dropping_one_level_a_year() -> None:
    rows = [buy(d(2025, 3, 1), 60000)]
    t = tiers("one_level")
    assert level(t, rows, d(2027, 1, 1)) == "silver"
    assert level(t, rows, d(2028, 1, 1)) == "member"
    assert level(t, rows, d(2029, 1, 1)) == "member"


def test_one_level_never_drops_below_what_the_value_reaches() -> None:
    platinum = TierLevel("platinum", "Platinum", 100000, multiplier=Fraction(2))
    levels = (*LEVELS, platinum)
    t = tiers("one_level", levels)
    assert requalify(t, platinum, 0) == GOLD
    assert requalify(t, platinum, 60000) == GOLD
    assert requalify(t, platinum, 100000) == platinum
    assert requalify(t, GOLD, 25000) == SILVER
    assert requalify(tiers("recompute", levels), platinum, 25000) == SILVER
    assert requalify(tiers("none", levels), platinum, 0) == platinum


def test_a_level_met_again_is_kept() -> None:
    rows = [buy(d(2025, 3, 1), 60000), buy(d(2026, 3, 1), 50000)]
    for policy in ("one_level", "recompute", "none"):
        s = state(tiers(policy), rows, d(2027, 6, 1))
        assert s.level == GOLD
        assert s.since == d(2025, 3, 1)


def test_a_permanent_level_is_never_lost() -> None:
    lifetime = TierLevel("gold", "Gold", 50000, permanent=True)
    t = tiers("recompute", (MEMBER, SILVER, lifetime))
    assert level(t, [buy(d(2025, 3, 1), 60000)], d(2030, 1, 1)) == "gold"
    assert requalify(t, lifetime, 0) == lifetime


def test_a_refund_counts_in_the_period_of_the_purchase() -> None:
    # 30000 bought in 2025, refunded in January 2026: 2025's value falls, 2026's does not
    bought = d(2025, 11, 1)
    rows = [buy(bought, 30000), refund(bought, d(2026, 1, 15), 30000), buy(d(2026, 2, 1), 5000)]
    s = state(tiers(), rows, d(2026, 3, 1))
    assert s.value == 5000
    assert (s.period_start, s.period_end) == (d(2026, 1, 1), d(2027, 1, 1))


def test_a_level_reached_in_a_period_is_held_through_the_next_despite_a_refund() -> None:
    bought = d(2025, 3, 1)
    rows = [buy(bought, 60000), refund(bought, d(2025, 10, 1), 30000)]
    t = tiers("one_level")
    assert level(t, rows, d(2025, 12, 31)) == "gold"
    assert level(t, rows, d(2026, 6, 1)) == "gold"


def test_a_refund_recorded_in_the_next_period_does_not_demote_mid_period() -> None:
    bought = d(2025, 3, 1)
    rows = [buy(bought, 60000), refund(bought, d(2026, 6, 1), 30000)]
    t = tiers("one_level")
    assert level(t, rows, d(2026, 5, 31)) == "gold"
    assert level(t, rows, d(2026, 6, 2)) == "gold"


def test_calendar_year_periods_are_local_to_the_program_timezone() -> None:
    t = tiers()
    # 2026-01-01 03:00 UTC is still 2025 in New York
    start, end = period_bounds(t, d(2026, 1, 1, 3), tz=NY, enrolled_at=ENROLLED)
    assert start == datetime(2025, 1, 1, tzinfo=NY)
    assert end == datetime(2026, 1, 1, tzinfo=NY)
    assert end.astimezone(UTC) == d(2026, 1, 1, 5)
    # a purchase at 03:00 UTC on New Year's Day counts for 2025 in a New York program
    rows = [buy(d(2026, 1, 1, 3), 60000)]
    s = evaluate(t, rows, as_of=d(2026, 1, 1, 4), tz=NY, enrolled_at=ENROLLED)
    assert s.level == GOLD
    assert s.period_end == end
    # and it holds gold through 2026 (New York), dropping one level after
    late = evaluate(t, rows, as_of=d(2027, 1, 1, 4), tz=NY, enrolled_at=ENROLLED)
    assert late.level == GOLD
    after = evaluate(t, rows, as_of=d(2027, 1, 1, 5), tz=NY, enrolled_at=ENROLLED)
    assert after.level == SILVER


def test_anniversary_periods_start_on_the_enrolment_day() -> None:
    t = Tiers(period="anniversary", levels=LEVELS)
    enrolled = d(2024, 2, 29, 15)
    start, end = period_bounds(t, d(2026, 3, 15), tz=UTC_TZ, enrolled_at=enrolled)
    assert (start, end) == (d(2026, 2, 28), d(2027, 2, 28))
    start, end = period_bounds(t, d(2026, 2, 1), tz=UTC_TZ, enrolled_at=enrolled)
    assert (start, end) == (d(2025, 2, 28), d(2026, 2, 28))


def test_next_level_and_what_remains() -> None:
    t = tiers()
    assert next_level(t, MEMBER, 15000) == (SILVER, 5000)
    assert next_level(t, SILVER, 60000) == (GOLD, 0)
    assert next_level(t, GOLD, 60000) is None


# --------------------------------------------------------------------------------------------------
# Properties
# --------------------------------------------------------------------------------------------------

POLICIES = ["one_level", "recompute", "none"]
RANK = {"member": 0, "silver": 1, "gold": 2}


def reached(value: int) -> str:
    return "gold" if value >= 50000 else "silver" if value >= 20000 else "member"


def placed(policy: str, held: str, value: int) -> str:
    """The contract's period-end placement, written out independently."""
    met = reached(value)
    if RANK[met] >= RANK[held] or policy == "none":
        return held
    if policy == "recompute":
        return met
    return max(["member", "silver", "gold"][RANK[held] - 1], met, key=RANK.__getitem__)


@st.composite
def year_rows(draw: st.DrawFn, year: int = 2026) -> list[QualRow]:
    """Purchases in one year, some partly refunded later in the same year; distinct record times."""
    hours = draw(st.lists(st.integers(0, 364 * 24 - 2), min_size=1, max_size=10, unique=True))
    start = d(year, 1, 1)
    rows: list[QualRow] = []
    for h in sorted(hours):
        at = start + timedelta(hours=h)
        value = draw(st.integers(0, 30000))
        rows.append(buy(at, value))
        if value and draw(st.booleans()):
            later = draw(st.integers(0, 364 * 24 - 2 - h))
            moment = at + timedelta(hours=later, minutes=1, seconds=len(rows))
            rows.append(refund(at, moment, draw(st.integers(1, value))))
    return rows


@settings(max_examples=100)
@given(rows=year_rows(), policy=st.sampled_from(POLICIES), seed=st.integers(0, 2**16))
def test_evaluation_is_deterministic_and_independent_of_row_order(
    rows: list[QualRow], policy: str, seed: int
) -> None:
    t = tiers(policy)
    enrolled = d(2026, 1, 1)
    shuffled = list(rows)
    random.Random(seed).shuffle(shuffled)
    for as_of in (d(2026, 7, 1), d(2027, 1, 1), d(2028, 1, 1)):
        once = evaluate(t, rows, as_of=as_of, tz=UTC_TZ, enrolled_at=enrolled)
        twice = evaluate(t, rows, as_of=as_of, tz=UTC_TZ, enrolled_at=enrolled)
        again = evaluate(t, shuffled, as_of=as_of, tz=UTC_TZ, enrolled_at=enrolled)
        assert once == twice == again


@settings(max_examples=100)
@given(rows=year_rows(), policy=st.sampled_from(POLICIES))
def test_within_a_period_the_level_only_goes_up_and_upgrades_are_immediate(
    rows: list[QualRow], policy: str
) -> None:
    t = tiers(policy)
    enrolled = d(2026, 1, 1)
    times = sorted({r.recorded_at for r in rows})
    previous = -1
    for at in times:
        s = evaluate(t, rows, as_of=at, tz=UTC_TZ, enrolled_at=enrolled)
        assert s.level is not None
        rank = RANK[s.level.id]
        assert rank >= previous, "demoted mid-period"
        previous = rank
        # the running value of 2026 so far, counted independently
        value = sum(r.value for r in rows if r.recorded_at <= at)
        assert s.value == value
        # upgraded at once: at least the level that the value now reaches
        assert rank >= RANK[reached(value)]
    # and the level equals the best level the running value ever reached
    peak = 0
    running = 0
    for r in sorted(rows, key=lambda r: r.recorded_at):
        running += r.value
        peak = max(peak, RANK[reached(running)])
    assert previous == peak


@settings(max_examples=100)
@given(
    first=st.integers(0, 80000),
    second=st.integers(0, 80000),
    third=st.integers(0, 80000),
    policy=st.sampled_from(POLICIES),
)
def test_period_ends_apply_the_downgrade_policy(first: int, second: int, third: int, policy: str) -> None:
    t = tiers(policy)
    rows = [buy(d(2025, 6, 1), v) for v in (first,) if v] + [buy(d(2026, 6, 1), v) for v in (second,) if v]
    rows += [buy(d(2027, 6, 1), v) for v in (third,) if v]
    expected = "member"
    for year, value in ((2025, first), (2026, second), (2027, third)):
        # during the year: upgraded at once to what the value reaches
        expected = max(expected, reached(value), key=RANK.__getitem__)
        assert level(t, rows, d(year, 12, 31, 23)) == expected
        # at its end: placed by the year just ended
        expected = placed(policy, expected, value)
        assert level(t, rows, d(year + 1, 1, 1)) == expected


def _random_case(
    rng: random.Random,
) -> tuple[Tiers, list[QualRow], list[Assignment], datetime, datetime, ZoneInfo]:
    thresholds = sorted(rng.sample(range(0, 3000, 50), rng.randint(1, 5)))
    if rng.random() < 0.5:
        thresholds[0] = 0
    levels = tuple(
        TierLevel(
            f"l{i}", f"L{i}", t, invite_only=i > 0 and rng.random() < 0.15, permanent=rng.random() < 0.1
        )
        for i, t in enumerate(thresholds)
    )
    program = Tiers(
        period=rng.choice(["calendar_year", "anniversary", "rolling_12_months"]),
        downgrade=rng.choice(["none", "one_level", "recompute"]),
        levels=levels,
        grace_days=rng.choice([0, 0, 30]),
    )
    enrolled = ENROLLED + timedelta(days=rng.randint(0, 400))
    rows: list[QualRow] = []
    for k in range(rng.randint(0, 60)):
        at = enrolled + timedelta(days=rng.randint(-10, 1500), hours=rng.randint(0, 23))
        recorded = at if rng.random() < 0.8 else at + timedelta(days=rng.randint(0, 400))
        if rows and rng.random() < 0.1:
            recorded = rows[rng.randrange(len(rows))].recorded_at  # recorded at the same instant
        value = rng.choice([rng.randint(1, 900), rng.randint(1, 900), -rng.randint(1, 900)])  # returns too
        rows.append(QualRow(at, recorded, value, f"e{k}"))
    given_ = []
    for _ in range(rng.choice([0, 0, 0, 1, 2])):
        start = enrolled + timedelta(days=rng.randint(0, 1400))
        end = rng.choice([None, start + timedelta(days=rng.randint(1, 500))])
        given_.append(Assignment(rng.choice(levels).id, start, end, "given", rng.random() < 0.5))
    as_of = enrolled + timedelta(days=rng.randint(0, 1800))
    return program, rows, given_, as_of, enrolled, rng.choice([UTC_TZ, NY, ZoneInfo("Asia/Tokyo")])


@pytest.mark.parametrize("seed", range(4))
def test_skipping_rows_below_the_next_level_changes_no_state_and_no_change(
    seed: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The fold skips a row whose running value cannot reach a level above what the period
    reached and the member earned; with the skip turned off (every row compared) the states and
    changes must be the same, on random programs and histories."""
    rng = random.Random(seed)
    cases = [_random_case(rng) for _ in range(400)]
    fast = [history(t, r, as_of=a, tz=z, enrolled_at=e, assignments=g) for t, r, g, a, e, z in cases]
    monkeypatch.setattr(Tiers, "above_rank", lambda self, rank: float("-inf"))
    slow = [history(t, r, as_of=a, tz=z, enrolled_at=e, assignments=g) for t, r, g, a, e, z in cases]
    assert fast == slow
    assert sum(1 for _, changes in fast if changes) > 100  # the cases do move members around


@pytest.mark.parametrize("seed", range(4))
def test_a_fold_resumed_from_a_checkpoint_gives_the_state_of_a_fold_from_enrolment(seed: int) -> None:
    """A checkpoint taken at one moment, and the rows a store would read with it later (the rows
    of its period onwards, and older rows recorded after it saw them): wherever it is
    resumable, resuming gives the same state and the same next checkpoint as folding the whole
    history; where older rows came in late, it is not resumable."""
    rng = random.Random(100 + seed)
    resumed = refused = 0
    for _ in range(600):
        t, rows, given_, as_of, enrolled, tz = _random_case(rng)
        if t.period == "rolling_12_months":
            continue
        taken = enrolled + (as_of - enrolled) * rng.random()
        _, _, taken_then = fold(t, rows, as_of=taken, tz=tz, enrolled_at=enrolled, assignments=given_)
        if not taken_then:
            continue
        checkpoint = rng.choice(taken_then)  # any period's, not only the latest
        whole = fold(t, rows, as_of=as_of, tz=tz, enrolled_at=enrolled, assignments=given_)
        read = [
            r for r in rows if r.period_at >= checkpoint.period_start or r.recorded_at > checkpoint.seen_upto
        ]
        if not resumable(checkpoint, read, as_of):
            refused += 1
            late = [
                r
                for r in rows
                if r.period_at < checkpoint.period_start and r.recorded_at > checkpoint.seen_upto
            ]
            assert late or as_of < checkpoint.seen_upto
            continue
        resumed += 1
        state, changes, later = fold(
            t, read, as_of=as_of, tz=tz, enrolled_at=enrolled, assignments=given_, resume=checkpoint
        )
        assert state == whole[0]
        assert later == [c for c in whole[2] if c.period_start > checkpoint.period_start]
        assert checkpoint in whole[2] or any(
            r.recorded_at > taken for r in rows
        )  # the same, unless rows came
        assert changes == whole[1][len(whole[1]) - len(changes) :]  # the changes after the checkpoint
    assert resumed > 100 and refused > 10
