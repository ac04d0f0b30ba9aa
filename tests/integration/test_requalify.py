"""The requalify-tiers job records exactly the period-end changes the tier fold derives.

The job is set-based (one statement per batch of members, generated from the program's tier
rules); the fold in ``domain.tiers.history`` is the definition. Random programs (thresholds, a
base level above zero, invite-only and permanent levels, each downgrade policy, grace days,
time zones) and random histories (returns, rows recorded after the period's decision, members
enrolled late, tier assignments) are run through both, and the changes must be the same.
"""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import Engine, insert, select
from sqlalchemy.exc import IntegrityError

from patron.domain import tiers as rules
from patron.services import merchants, programs
from patron.services import requalify as job
from patron.services.jobs import run_job
from patron.services.programs import program_at
from patron.services.tiers import assignments, qualification_rows
from patron.storage.outbox import outbox_events
from patron.storage.tables import members, qualifications, tier_assignments, tier_changes
from tests.conftest import bean_rewards

AS_OF = datetime(2026, 3, 15, tzinfo=UTC)


def random_tiers(rng: random.Random, period: str) -> dict[str, Any]:
    count = rng.randint(2, 4)
    thresholds = sorted(rng.sample(range(1000, 9000, 500), count - 1))
    base = 0 if rng.random() < 0.7 else 300
    levels = [{"id": "base", "name": "Base", "threshold": base}]
    for i, threshold in enumerate(thresholds):
        level: dict[str, Any] = {"id": f"l{i}", "name": f"Level {i}", "threshold": threshold}
        if rng.random() < 0.3:
            level["permanent"] = True
        if rng.random() < 0.1 and i < count - 2:
            level["invite_only"] = True
        levels.append(level)
    return {
        "metric": "qualifying_spend",
        "period": period,
        "downgrade": rng.choice(["recompute", "recompute", "one_level", "none"]),
        "grace_days": rng.choice([0, 0, 30]),
        "levels": levels,
    }


def add_member(
    conn: Any, merchant_id: str, program_id: str, member_id: str, enrolled: datetime, *, card: str, code: str
) -> None:
    conn.execute(
        insert(members),
        {
            "merchant_id": merchant_id,
            "id": member_id,
            "program_id": program_id,
            "card_number": card,
            "referral_code": code,
            "status": "active",
            "marketing_consent": False,
            "attributes": {},
            "enrolled_at": enrolled,
            "created_at": enrolled,
            "updated_at": enrolled,
        },
    )


def populate(engine: Engine, rng: random.Random, size: int, period: str) -> tuple[str, str]:
    timezone = rng.choice(["UTC", "America/New_York", "Asia/Tokyo"])
    with engine.begin() as conn:
        merchant, _ = merchants.create_merchant(conn, name="Requalify Co")
        prog = programs.create_program(
            conn,
            merchant_id=merchant["id"],
            body=bean_rewards(tiers=random_tiers(rng, period), timezone=timezone),
        )
        m, p = merchant["id"], prog["id"]
        program, _ = program_at(conn, merchant_id=m, program_id=p, at=AS_OF)
        assert program.tiers is not None
        level_ids = [lv.id for lv in program.tiers.levels]
        start = datetime(2021, 6, 1, tzinfo=UTC)
        for i in range(size):
            member_id = f"mem_rq{i:04d}"
            enrolled = start + timedelta(days=rng.randint(0, 1500))
            add_member(conn, m, p, member_id, enrolled, card=f"9000{i:012d}", code=f"RQ{i:06d}")
            rows = []
            for j in range(rng.choice([0, 0, 1, 2, 3, 5, 8])):
                period_at = enrolled + timedelta(days=rng.randint(-30, 1600), hours=rng.randint(0, 23))
                late = rng.random() < 0.2
                recorded = period_at + timedelta(days=rng.randint(40, 400) if late else 0)
                value = rng.choice([rng.randint(100, 6000), rng.randint(100, 6000), -rng.randint(100, 5000)])
                rows.append(
                    {
                        "merchant_id": m,
                        "event_id": f"evt_{member_id}_{j}",
                        "member_id": member_id,
                        "period_at": period_at,
                        "recorded_at": recorded,
                        "spend": value,
                        "status_points": 0,
                        "visits": 1,
                    }
                )
            if rows:
                conn.execute(insert(qualifications), rows)
            if rng.random() < 0.1:
                begins = enrolled + timedelta(days=rng.randint(0, 700))
                conn.execute(
                    insert(tier_assignments),
                    {
                        "merchant_id": m,
                        "id": f"tas_{member_id}",
                        "member_id": member_id,
                        "tier_id": rng.choice(level_ids),
                        "reason": "assigned",
                        "starts_at": begins,
                        "ends_at": begins + timedelta(days=rng.randint(30, 500))
                        if rng.random() < 0.5
                        else None,
                        "created_at": begins,
                        "held": rng.random() < 0.5,
                    },
                )
    return m, p


def expected(engine: Engine, m: str, p: str) -> set[tuple[str, datetime, str, str | None, str]]:
    out = set()
    with engine.begin() as conn:
        program, _ = program_at(conn, merchant_id=m, program_id=p, at=AS_OF)
        assert program.tiers is not None
        for member in conn.execute(select(members).where(members.c.merchant_id == m)).mappings():
            _, changes = rules.history(
                program.tiers,
                qualification_rows(conn, merchant_id=m, member_id=member["id"], program=program),
                as_of=AS_OF,
                tz=ZoneInfo(program.timezone),
                enrolled_at=member["enrolled_at"],
                assignments=assignments(conn, merchant_id=m, member_id=member["id"]),
            )
            out |= {
                (member["id"], c.at, c.to_id, c.from_id, c.reason)
                for c in changes
                if c.cause == "period_end" and c.to_id is not None
            }
    return out


def tiers_of(engine: Engine, m: str, p: str) -> rules.Tiers:
    with engine.begin() as conn:
        program, _ = program_at(conn, merchant_id=m, program_id=p, at=AS_OF)
    assert program.tiers is not None
    return program.tiers


def movable(tiers: rules.Tiers) -> bool:
    """Whether members can lose a level at a period end: a downgrade policy and a level above the
    base that is neither permanent nor by invitation only."""
    above = [lv for lv in tiers.levels if lv.threshold > min(x.threshold for x in tiers.levels)]
    return tiers.downgrade != "none" and any(not lv.permanent and not lv.invite_only for lv in above)


def recorded(engine: Engine, m: str) -> set[tuple[str, datetime, str, str | None, str]]:
    with engine.begin() as conn:
        rows = conn.execute(
            select(
                tier_changes.c.member_id,
                tier_changes.c.at,
                tier_changes.c.to_tier,
                tier_changes.c.from_tier,
                tier_changes.c.reason,
            ).where(tier_changes.c.merchant_id == m)
        )
        return {tuple(r) for r in rows}  # type: ignore[misc]


def announced(engine: Engine, m: str) -> set[tuple[str, datetime, str, str | None, str]]:
    """The ``tier.changed`` events of period ends, as changes; every member's stream numbered
    1, 2, 3... without a gap or a repeat."""
    with engine.begin() as conn:
        rows = conn.execute(
            select(
                outbox_events.c.member_id,
                outbox_events.c.seq,
                outbox_events.c.type,
                outbox_events.c.occurred_at,
                outbox_events.c.data,
            )
            .where(outbox_events.c.merchant_id == m)
            .order_by(outbox_events.c.member_id, outbox_events.c.seq)
        ).all()
    streams: dict[str, list[int]] = {}
    for member_id, seq, _, _, _ in rows:
        streams.setdefault(member_id, []).append(seq)
    assert all(seqs == list(range(1, len(seqs) + 1)) for seqs in streams.values())
    out = set()
    for member_id, _, kind, at, data in rows:
        if kind == "tier.changed" and data["cause"] == "period_end":
            out.add((member_id, at, data["to"], data["from"], data["reason"]))
    assert len(out) == sum(1 for r in rows if r[2] == "tier.changed" and r[4]["cause"] == "period_end")
    return out


CASES = [("calendar_year", seed) for seed in range(6)] + [("anniversary", 0), ("rolling_12_months", 0)]


@pytest.mark.parametrize(("period", "seed"), CASES)
def test_the_job_records_what_the_fold_derives(
    engine: Engine, period: str, seed: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    rng = random.Random(seed)
    m, p = populate(engine, rng, 100, period)
    monkeypatch.setattr(job, "BATCH", 17)  # several batches, with ranges that end mid-program
    want = expected(engine, m, p)
    first = run_job(engine, "requalify-tiers", as_of=AS_OF, merchant_id=m)
    got = recorded(engine, m)
    assert got == want
    assert announced(engine, m) == want  # each change announced once, in its member's stream
    if period == "rolling_12_months":
        assert not want  # a rolling window has no period ends
    elif movable(tiers_of(engine, m, p)):
        assert want  # the histories do move members at period ends
    assert first.lots == len(want) and first.members == len({c[0] for c in want})
    again = run_job(engine, "requalify-tiers", as_of=AS_OF, merchant_id=m)
    assert (again.members, again.lots) == (0, 0)


def test_a_batch_whose_events_clash_is_recorded_and_announced_one_by_one(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On PostgreSQL a batch's changes and their events are one statement; when an event cannot
    be appended so (here: an id already taken, as a concurrent writer taking a stream's next
    number makes it fail), the batch is recorded and announced as on SQLite, nothing lost and
    nothing twice."""
    rng = random.Random(3)
    m, p = populate(engine, rng, 60, "calendar_year")
    want = expected(engine, m, p)
    assert want
    real, clashed = job.sql.record_changes, []

    def clashing(*args: Any, **kwargs: Any) -> list[dict[str, Any]]:
        rows = real(*args, **kwargs)  # written, then the statement fails as a clash makes it fail
        if kwargs.get("announce") is not None:
            clashed.append(len(rows))
            raise IntegrityError("INSERT INTO outbox_events", {}, Exception("duplicate key value"))
        return rows

    monkeypatch.setattr(job.sql, "record_changes", clashing)
    monkeypatch.setattr(job, "BATCH", 25)
    result = run_job(engine, "requalify-tiers", as_of=AS_OF, merchant_id=m)
    assert recorded(engine, m) == want
    assert announced(engine, m) == want
    assert result.lots == len(want)
    assert bool(clashed) == (engine.dialect.name == "postgresql")


def test_periods_start_at_the_programs_own_earliest_row(engine: Engine) -> None:
    """Where a program's periods start: its members' earliest enrolment or qualification row
    (a row before enrolment, from an imported history, counts). Another program's older rows
    of the same merchant do not move it."""
    from patron.storage import requalify as sql

    def member(conn: Any, m: str, p: str, member_id: str, enrolled: datetime) -> None:
        add_member(
            conn, m, p, member_id, enrolled, card=member_id[-8:].rjust(16, "0"), code=member_id.upper()
        )

    def row(conn: Any, m: str, member_id: str, at: datetime) -> None:
        values = {"spend": 100, "status_points": 0, "visits": 1}
        conn.execute(
            insert(qualifications),
            {
                "merchant_id": m,
                "event_id": f"evt_{member_id}_{at:%Y}",
                "member_id": member_id,
                "period_at": at,
                "recorded_at": at,
                **values,
            },
        )

    with engine.begin() as conn:
        merchant, _ = merchants.create_merchant(conn, name="Two programs")
        m = merchant["id"]
        first = programs.create_program(conn, merchant_id=m, body=bean_rewards())["id"]
        member(conn, m, first, "mem_fm_a", datetime(2024, 5, 1, tzinfo=UTC))
        row(conn, m, "mem_fm_a", datetime(2023, 2, 1, tzinfo=UTC))  # history from before enrolment
        assert sql.first_moment(conn, m, first) == datetime(2023, 2, 1, tzinfo=UTC)

        second = programs.create_program(conn, merchant_id=m, body=bean_rewards())["id"]
        member(conn, m, second, "mem_fm_b", datetime(2022, 1, 1, tzinfo=UTC))
        row(conn, m, "mem_fm_b", datetime(2021, 3, 1, tzinfo=UTC))
        assert sql.first_moment(conn, m, first) == datetime(2023, 2, 1, tzinfo=UTC)
        assert sql.first_moment(conn, m, second) == datetime(2021, 3, 1, tzinfo=UTC)
        member(conn, m, second, "mem_fm_c", datetime(2020, 7, 1, tzinfo=UTC))  # enrolled earlier still
        assert sql.first_moment(conn, m, second) == datetime(2020, 7, 1, tzinfo=UTC)
