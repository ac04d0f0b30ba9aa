"""Scheduled jobs: pending release and expiry, recorded at the time they take effect, idempotent."""

from __future__ import annotations

import os
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import Engine

from patron.domain.errors import InvalidInput
from patron.services import events, ledger, members, merchants, programs
from patron.services.jobs import run_job
from patron.services.members import MemberCreate
from tests.conftest import bean_rewards, purchase

MUG = [{"id": "l1", "sku": "MUG", "category": "merch", "quantity": 1, "unit_price": 1000}]


def shop(engine: Engine, **program: object) -> tuple[str, str]:
    with engine.begin() as conn:
        merchant, _ = merchants.create_merchant(conn, name="Jobs Co")
        prog = programs.create_program(
            conn, merchant_id=merchant["id"], body=bean_rewards(**{"tiers": None, **program})
        )
        member = members.enrol(
            conn, merchant_id=merchant["id"], data=MemberCreate(program_id=prog["id"], email="j@example.com")
        )
    return merchant["id"], member["id"]


def balances(engine: Engine, merchant_id: str, member_id: str, as_of: datetime | None = None):  # type: ignore[no-untyped-def]
    with engine.begin() as conn:
        return ledger.balances(conn, merchant_id=merchant_id, member_id=member_id, as_of=as_of)


def t(s: str) -> datetime:
    return datetime.fromisoformat(s).replace(tzinfo=UTC)


def test_expiry_takes_what_is_left_of_each_lot_at_its_expiry_time(engine: Engine) -> None:
    merchant_id, member_id = shop(engine, expiry={"months": 12})
    with engine.begin() as conn:
        events.record_event(
            conn,
            merchant_id=merchant_id,
            body=purchase(member_id, "o-1", MUG, occurred_at="2025-01-10T09:00:00Z"),
        )
        events.record_event(
            conn,
            merchant_id=merchant_id,
            body=purchase(member_id, "o-2", MUG, occurred_at="2025-06-10T09:00:00Z"),
        )
        # spending draws the soonest-expiring lot first: 4 of o-1's 10 points
        ledger.adjust(
            conn,
            merchant_id=merchant_id,
            member_id=member_id,
            points=-4,
            reason="counter",
            occurred_at=t("2025-03-01T00:00:00"),
        )
    first = run_job(engine, "expire-points", as_of=t("2026-02-01T00:00:00"), merchant_id=merchant_id)
    assert (first.lots, first.points) == (1, 6)
    again = run_job(engine, "expire-points", as_of=t("2026-02-01T00:00:00"), merchant_id=merchant_id)
    assert (again.lots, again.points) == (0, 0)
    b = balances(engine, merchant_id, member_id)
    assert (b.available, b.expired, b.lifetime_earned) == (
        10,
        6,
        20,
    )  # a manual debit (spending) is not an un-earning
    # recorded at the lot's expiry time: a read just before it still shows the points
    assert balances(engine, merchant_id, member_id, t("2026-01-10T08:59:59")).available == 16
    assert balances(engine, merchant_id, member_id, t("2026-01-10T09:00:00")).available == 10
    later = run_job(engine, "expire-points", as_of=t("2026-07-01T00:00:00"), merchant_id=merchant_id)
    assert later.points == 10
    with engine.begin() as conn:
        assert ledger.verify(conn, merchant_id=merchant_id) == []
        types = [
            r["type"] for r in ledger.ledger_page(conn, merchant_id=merchant_id, member_id=member_id)["data"]
        ]
    assert types.count("expiry") == 2


def test_release_pending_moves_points_when_the_pending_period_ends(engine: Engine) -> None:
    merchant_id, member_id = shop(engine, pending_days=30)
    now = datetime.now(UTC)
    with engine.begin() as conn:
        events.record_event(
            conn, merchant_id=merchant_id, body=purchase(member_id, "o-1", MUG, occurred_at=now.isoformat())
        )
    assert (
        balances(engine, merchant_id, member_id).pending,
        balances(engine, merchant_id, member_id).available,
    ) == (10, 0)
    assert run_job(engine, "release-pending", as_of=now, merchant_id=merchant_id).points == 0  # not due yet
    result = run_job(engine, "release-pending", as_of=now.replace(year=now.year + 1), merchant_id=merchant_id)
    assert result.points == 10
    b = balances(engine, merchant_id, member_id)
    assert (b.pending, b.available) == (0, 10)
    assert (
        run_job(
            engine, "release-pending", as_of=now.replace(year=now.year + 1), merchant_id=merchant_id
        ).points
        == 0
    )


def test_a_reservation_redeemed_at_the_till_while_the_lapse_run_starts_stays_redeemed(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    from datetime import timedelta

    from patron.services import redemptions
    from patron.storage import redemptions as redemptions_repo

    if engine.dialect.name != "postgresql":
        pytest.skip("SQLite's run holds the one writer's lock from the start of its transaction")
    rewards = [{"id": "coffee", "name": "Coffee", "cost": 100}]
    merchant_id, member_id = shop(engine, rewards=rewards, reservation_ttl_minutes=5)
    with engine.begin() as conn:
        ledger.adjust(conn, merchant_id=merchant_id, member_id=member_id, points=250, reason="gift")
        used = redemptions.reserve(conn, merchant_id=merchant_id, member_id=member_id, reward_id="coffee")
        left = redemptions.reserve(conn, merchant_id=merchant_id, member_id=member_id, reward_id="coffee")
    found = redemptions_repo.lapsed

    def till_first(conn, **kw):  # type: ignore[no-untyped-def]
        rows = found(conn, **kw)  # the run found both reservations due...
        with engine.begin() as till:  # ...and the till redeems one before the run locks the member
            redemptions.redeem(till, merchant_id=merchant_id, redemption_id=used["id"])
        monkeypatch.setattr(redemptions_repo, "lapsed", found)
        return rows

    monkeypatch.setattr(redemptions_repo, "lapsed", till_first)
    later = left["expires_at"] + timedelta(minutes=1)
    result = run_job(engine, "lapse-reservations", as_of=later, merchant_id=merchant_id)
    assert result.lots == 1  # only the one nobody used
    with engine.begin() as conn:
        assert (
            redemptions.get(conn, merchant_id=merchant_id, redemption_id=used["id"])["status"] == "redeemed"
        )
        assert redemptions.get(conn, merchant_id=merchant_id, redemption_id=left["id"])["status"] == "expired"
        assert ledger.verify(conn, merchant_id=merchant_id) == []
    b = balances(engine, merchant_id, member_id)
    assert (b.available, b.reserved, b.redeemed) == (150, 0, 100)


def test_unknown_job_names_are_refused(engine: Engine) -> None:
    with pytest.raises(InvalidInput, match="unknown job 'explode'; jobs: release-pending"):
        run_job(engine, "explode", as_of=t("2026-01-01T00:00:00"))


def test_lapsed_reservations_give_their_points_back(engine: Engine) -> None:
    from datetime import timedelta

    from patron.services import redemptions

    rewards = [{"id": "coffee", "name": "Coffee", "cost": 100}]
    merchant_id, member_id = shop(engine, rewards=rewards, reservation_ttl_minutes=5)
    with engine.begin() as conn:
        ledger.adjust(conn, merchant_id=merchant_id, member_id=member_id, points=150, reason="gift")
        red = redemptions.reserve(conn, merchant_id=merchant_id, member_id=member_id, reward_id="coffee")
    assert run_job(engine, "lapse-reservations", as_of=red["reserved_at"], merchant_id=merchant_id).lots == 0
    later = red["expires_at"] + timedelta(minutes=1)
    assert run_job(engine, "lapse-reservations", as_of=later, merchant_id=merchant_id).lots == 1
    assert run_job(engine, "lapse-reservations", as_of=later, merchant_id=merchant_id).lots == 0
    b = balances(engine, merchant_id, member_id)
    assert (b.available, b.reserved, b.redeemed) == (150, 0, 0)
    with engine.begin() as conn:
        assert redemptions.get(conn, merchant_id=merchant_id, redemption_id=red["id"])["status"] == "expired"
        assert ledger.verify(conn, merchant_id=merchant_id) == []


def test_inactivity_expires_the_whole_balance_after_n_months_without_activity(engine: Engine) -> None:
    merchant_id, member_id = shop(engine, expiry={"policy": "inactivity", "months": 6})
    with engine.begin() as conn:
        for n, at in enumerate(("2025-01-10T09:00:00Z", "2025-03-10T09:00:00Z")):
            events.record_event(
                conn, merchant_id=merchant_id, body=purchase(member_id, f"o-{n}", MUG, occurred_at=at)
            )
    assert (
        run_job(engine, "expire-points", as_of=t("2025-09-01T00:00:00"), merchant_id=merchant_id).points == 0
    )
    result = run_job(engine, "expire-points", as_of=t("2025-10-01T00:00:00"), merchant_id=merchant_id)
    assert (result.lots, result.points) == (2, 20)
    assert balances(engine, merchant_id, member_id, t("2025-09-10T08:59:00")).available == 20
    assert balances(engine, merchant_id, member_id, t("2025-09-10T09:00:00")).available == 0
    assert (
        run_job(engine, "expire-points", as_of=t("2025-10-01T00:00:00"), merchant_id=merchant_id).points == 0
    )


def test_a_purchase_that_commits_while_the_inactivity_run_starts_keeps_the_members_points(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    from patron.storage import jobs as jobs_repo

    if engine.dialect.name != "postgresql":
        pytest.skip("SQLite's run holds the one writer's lock from the start of its transaction")
    merchant_id, member_id = shop(engine, expiry={"policy": "inactivity", "months": 6})
    with engine.begin() as conn:
        events.record_event(
            conn,
            merchant_id=merchant_id,
            body=purchase(member_id, "o-1", MUG, occurred_at="2025-01-10T09:00:00Z"),
        )
    real_lock = jobs_repo.lock_members

    def purchase_first(conn, pairs):  # type: ignore[no-untyped-def]
        # the member buys again after the run found them inactive and before it locks them
        with engine.begin() as other:
            events.record_event(
                other,
                merchant_id=merchant_id,
                body=purchase(member_id, "o-2", MUG, occurred_at="2025-09-15T09:00:00Z"),
            )
        monkeypatch.setattr(jobs_repo, "lock_members", real_lock)
        real_lock(conn, pairs)

    monkeypatch.setattr(jobs_repo, "lock_members", purchase_first)
    result = run_job(engine, "expire-points", as_of=t("2025-10-01T00:00:00"), merchant_id=merchant_id)
    assert (result.lots, result.points) == (0, 0)
    assert balances(engine, merchant_id, member_id).available == 20  # both purchases' points kept
    assert _expired_events(engine, merchant_id, member_id) == []


def _expired_events(engine: Engine, merchant_id: str, member_id: str) -> list[dict[str, object]]:
    from patron.services import outbox

    with engine.begin() as conn:
        found = outbox.list_events(conn, merchant_id=merchant_id, member_id=member_id, type="points.expired")
    return sorted(found["data"], key=lambda e: e["sequence"])


@pytest.mark.parametrize("policy", ["months", "inactivity"])
def test_each_expiry_run_announces_points_expired_once_per_member_with_the_balance_after(
    engine: Engine, policy: str
) -> None:
    expiry = {"months": 6} if policy == "months" else {"policy": "inactivity", "months": 6}
    merchant_id, member_id = shop(engine, expiry=expiry)
    with engine.begin() as conn:
        program_id = members.get_member(conn, merchant_id=merchant_id, member_id=member_id)["program_id"]
        other = members.enrol(
            conn, merchant_id=merchant_id, data=MemberCreate(program_id=program_id, email="o@example.com")
        )["id"]
        for n, at in enumerate(("2025-01-10T09:00:00Z", "2025-02-10T09:00:00Z")):
            events.record_event(
                conn, merchant_id=merchant_id, body=purchase(member_id, f"o-{n}", MUG, occurred_at=at)
            )
        events.record_event(  # the other member's lot is not due yet (and, for inactivity, they are active)
            conn,
            merchant_id=merchant_id,
            body=purchase(other, "x-1", MUG, occurred_at="2025-08-01T09:00:00Z"),
        )
        ledger.adjust(
            conn,
            merchant_id=merchant_id,
            member_id=member_id,
            points=-3,
            reason="counter",
            occurred_at=t("2025-03-01T00:00:00"),
        )
    first = run_job(engine, "expire-points", as_of=t("2025-10-01T00:00:00"), merchant_id=merchant_id)
    assert (first.members, first.lots, first.points) == (1, 2, 17)
    announced = _expired_events(engine, merchant_id, member_id)
    assert len(announced) == 1, announced
    data = announced[0]["data"]
    after = balances(engine, merchant_id, member_id)
    assert data == {
        "points": 17,
        "lots": 2,
        "reason": "points expired" if policy == "months" else "no activity for 6 months",
        "balances": {
            "available": after.available,
            "pending": after.pending,
            "reserved": after.reserved,
            "debt": after.debt,
            "lifetime_earned": after.lifetime_earned,
            "expired": 17,
            "redeemed": after.redeemed,
        },
    }
    assert after.available == 0
    # when the last of them expired: o-1's lot six months on, or six months after the last purchase
    assert announced[0]["occurred_at"].isoformat() == "2025-08-10T09:00:00+00:00"
    assert _expired_events(engine, merchant_id, other) == []
    # a second run expires nothing and announces nothing
    again = run_job(engine, "expire-points", as_of=t("2025-10-01T00:00:00"), merchant_id=merchant_id)
    assert again.lots == 0 and len(_expired_events(engine, merchant_id, member_id)) == 1
    # later the other member's lot expires: their own event, numbered in their own stream
    run_job(engine, "expire-points", as_of=t("2026-06-01T00:00:00"), merchant_id=merchant_id)
    (theirs,) = _expired_events(engine, merchant_id, other)
    assert theirs["data"]["points"] == 10 and theirs["data"]["balances"]["expired"] == 10  # type: ignore[index]
    with engine.begin() as conn:
        assert ledger.verify(conn, merchant_id=merchant_id) == []


def test_end_of_year_and_per_tier_expiry(engine: Engine) -> None:
    expiry = {"policy": "end_of_year", "years": 1, "by_tier": {"gold": {"policy": "never"}}}
    tiers = {
        "levels": [
            {"id": "member", "name": "M", "threshold": 0},
            {"id": "gold", "name": "G", "threshold": 5000},
        ]
    }
    merchant_id, member_id = shop(engine, expiry=expiry, tiers=tiers)
    with engine.begin() as conn:
        program_id = members.get_member(conn, merchant_id=merchant_id, member_id=member_id)["program_id"]
        gold = members.enrol(
            conn, merchant_id=merchant_id, data=MemberCreate(program_id=program_id, email="g@example.com")
        )
        events.record_event(
            conn,
            merchant_id=merchant_id,
            body=purchase(member_id, "o-1", MUG, occurred_at="2025-03-01T09:00:00Z"),
        )
        big = [{"id": "l1", "sku": "X", "category": "x", "quantity": 1, "unit_price": 6000}]
        events.record_event(
            conn,
            merchant_id=merchant_id,
            body=purchase(gold["id"], "g-1", big, occurred_at="2025-03-01T09:00:00Z"),
        )
        events.record_event(
            conn,
            merchant_id=merchant_id,
            body=purchase(gold["id"], "g-2", MUG, occurred_at="2025-04-01T09:00:00Z"),
        )
        soon = ledger.expiring(conn, merchant_id=merchant_id, within_days=3650, member_id=member_id)
    assert [(r["points"], r["expires_at"].isoformat()) for r in soon] == [(10, "2027-01-01T00:00:00+00:00")]
    result = run_job(engine, "expire-points", as_of=t("2027-02-01T00:00:00"), merchant_id=merchant_id)
    # the first lot of the gold member was earned before she was gold: it expires; the second never does
    assert (result.lots, result.points) == (2, 70)
    assert balances(engine, merchant_id, gold["id"]).available == 10


def test_requalify_records_period_end_changes_once(engine: Engine) -> None:
    tiers = {
        "downgrade": "recompute",
        "levels": [{"id": "m", "name": "M", "threshold": 0}, {"id": "g", "name": "G", "threshold": 5000}],
    }
    merchant_id, member_id = shop(engine, tiers=tiers)
    big = [{"id": "l1", "sku": "X", "category": "x", "quantity": 1, "unit_price": 6000}]
    with engine.begin() as conn:
        events.record_event(
            conn,
            merchant_id=merchant_id,
            body=purchase(member_id, "o-1", big, occurred_at="2024-03-01T09:00:00Z"),
        )
    first = run_job(engine, "requalify-tiers", as_of=t("2026-01-01T00:00:00"), merchant_id=merchant_id)
    assert (first.members, first.lots) == (1, 1)
    again = run_job(engine, "requalify-tiers", as_of=t("2026-01-01T00:00:00"), merchant_id=merchant_id)
    assert again.lots == 0
    from patron.storage.job_runs import recent

    with engine.begin() as conn:
        log = recent(conn, name="requalify-tiers")
    assert log[0]["status"] == "succeeded" and log[0]["result"]["lots"] == 0
    assert log[1]["result"]["lots"] == 1


def test_milestones_are_granted_once_with_details(engine: Engine) -> None:
    from patron.services import milestones as ms

    stones = [
        {
            "id": "third",
            "name": "Third purchase",
            "type": "purchase_count",
            "threshold": 3,
            "points": 100,
            "ask": ["tshirt_size"],
        },
        {"id": "big-spender", "name": "Spent $25", "type": "lifetime_spend", "threshold": 2500, "points": 50},
        {"id": "one-year", "name": "One year with us", "type": "anniversary", "years": 1, "points": 200},
    ]
    merchant_id, member_id = shop(engine, milestones=stones)
    with engine.begin() as conn:
        outs = [
            events.record_event(conn, merchant_id=merchant_id, body=purchase(member_id, f"o-{n}", MUG))[0]
            for n in range(4)
        ]
    assert [[m["milestone_id"] for m in o["milestones"]] for o in outs] == [
        [],
        [],
        ["third", "big-spender"],
        [],
    ]
    assert balances(engine, merchant_id, member_id).available == 40 + 150
    later = datetime.now(UTC).replace(microsecond=0) + __import__("datetime").timedelta(days=400)
    assert run_job(engine, "milestones", as_of=later, merchant_id=merchant_id).points == 200
    assert run_job(engine, "milestones", as_of=later, merchant_id=merchant_id).points == 0
    with engine.begin() as conn:
        from patron.services.programs import program_at

        member = members.get_member(conn, merchant_id=merchant_id, member_id=member_id)
        program, _ = program_at(conn, merchant_id=merchant_id, program_id=member["program_id"], at=later)
        got = ms.set_details(
            conn,
            merchant_id=merchant_id,
            member=member,
            program=program,
            milestone_id="third",
            details={"tshirt_size": "M"},
        )
        assert got["details"] == {"tshirt_size": "M"}
        with pytest.raises(InvalidInput):
            ms.set_details(
                conn,
                merchant_id=merchant_id,
                member=member,
                program=program,
                milestone_id="third",
                details={"shoe": "9"},
            )
        assert ledger.verify(conn, merchant_id=merchant_id) == []


def test_a_job_already_running_elsewhere_is_refused(engine: Engine) -> None:
    from patron.domain.errors import Conflict
    from patron.storage import job_runs

    if engine.dialect.name != "postgresql":
        pytest.skip("SQLite has one writer; the lock is PostgreSQL's advisory lock")
    with engine.connect() as other:
        assert job_runs.try_lock(other, "expire-points:*")
        try:
            with pytest.raises(Conflict, match="already running"):
                run_job(engine, "expire-points", as_of=t("2026-01-01T00:00:00"))
        finally:
            job_runs.unlock(other, "expire-points:*")
            other.commit()


def test_a_job_that_crashes_part_way_resumes_without_doing_anything_twice(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    import patron.services.jobs as jobs_module
    from patron.storage import jobs as jobs_repo

    merchant_id, _ = shop(engine, expiry={"months": 1})
    with engine.begin() as conn:
        program_id = programs.list_programs(conn, merchant_id=merchant_id)[0]["id"]
        ids = [
            members.enrol(
                conn, merchant_id=merchant_id, data=MemberCreate(program_id=program_id, external_id=f"c{n}")
            )["id"]
            for n in range(5)
        ]
        for n, member_id in enumerate(ids):
            events.record_event(
                conn,
                merchant_id=merchant_id,
                body=purchase(member_id, f"c-{n}", MUG, occurred_at="2025-01-10T09:00:00Z"),
            )
    monkeypatch.setattr(jobs_module, "BATCH", 2)
    real_move = jobs_repo.move_due
    calls = {"n": 0}

    def crash_on_second_batch(*args: object, **kwargs: object) -> tuple[int, int, int]:
        calls["n"] += 1
        if calls["n"] == 2:
            raise RuntimeError("power cut")
        return real_move(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(jobs_repo, "move_due", crash_on_second_batch)
    with pytest.raises(RuntimeError, match="power cut"):
        run_job(engine, "expire-points", as_of=t("2025-06-01T00:00:00"), merchant_id=merchant_id)
    from patron.storage.job_runs import recent

    with engine.begin() as conn:
        assert recent(conn, name="expire-points")[0]["status"] == "failed"
    monkeypatch.setattr(jobs_repo, "move_due", real_move)
    resumed = run_job(engine, "expire-points", as_of=t("2025-06-01T00:00:00"), merchant_id=merchant_id)
    assert resumed.lots == 3  # the first batch (2 members) was committed before the crash
    with engine.begin() as conn:
        for member_id in ids:
            b = ledger.balances(conn, merchant_id=merchant_id, member_id=member_id, as_of=None)
            assert (b.available, b.expired) in {(0, 10), (0, 0)}
        assert ledger.verify(conn, merchant_id=merchant_id) == []


def test_a_malformed_as_of_is_a_clear_cli_error_and_changes_nothing(tmp_path: Path) -> None:
    import subprocess
    import sys

    patron = str(Path(sys.executable).parent / "patron")
    env = {**os.environ, "PATRON_DATABASE_URL": f"sqlite:///{tmp_path / 'p.db'}"}
    proc = subprocess.run(
        [patron, "jobs", "run", "expire-points", "--as-of", "next tuesday"],
        env=env,
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 1 and "RFC 3339" in proc.stderr
    proc = subprocess.run(
        [patron, "jobs", "run", "expire-points", "--as-of", "2026-01-01T00:00:00"],
        env=env,
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 1 and "offset" in proc.stderr
    ok = subprocess.run(
        [patron, "jobs", "run", "expire-points", "--as-of", "2026-01-01T00:00:00Z"],
        env=env,
        capture_output=True,
        text=True,
    )
    assert ok.returncode == 0 and "0 points" in ok.stdout


def test_an_expiry_is_named_by_its_lot_and_the_lot_s_state_alike_on_every_database(engine: Engine) -> None:
    """PostgreSQL names the journals in SQL, SQLite in Python (``_name``): the same ids, the
    reason, and the lot's expiry time as when."""
    from sqlalchemy import func, select

    from patron.storage import tables
    from patron.storage.jobs import _name

    merchant_id, member_id = shop(engine, expiry={"months": 12})
    with engine.begin() as conn:
        for n, at in enumerate(("2025-01-10T09:00:00Z", "2025-02-10T09:00:00Z")):
            events.record_event(
                conn, merchant_id=merchant_id, body=purchase(member_id, f"o-{n}", MUG, occurred_at=at)
            )
        ledger.adjust(  # draws 4 from the first lot: two postings of it in the available account
            conn,
            merchant_id=merchant_id,
            member_id=member_id,
            points=-4,
            reason="counter",
            occurred_at=t("2025-03-01T00:00:00"),
        )
        held = {
            lot_id: (expires_at, int(count), int(total))
            for lot_id, expires_at, count, total in conn.execute(
                select(
                    tables.lots.c.id,
                    tables.lots.c.expires_at,
                    func.count(),
                    func.sum(tables.postings.c.amount),
                )
                .join(
                    tables.postings,
                    (tables.postings.c.merchant_id == tables.lots.c.merchant_id)
                    & (tables.postings.c.lot_id == tables.lots.c.id),
                )
                .where(tables.lots.c.merchant_id == merchant_id, tables.postings.c.account == "available")
                .group_by(tables.lots.c.id, tables.lots.c.expires_at)
            )
        }
    assert sorted((c, x) for _, c, x in held.values()) == [(1, 10), (2, 6)]
    result = run_job(engine, "expire-points", as_of=t("2026-06-01T00:00:00"), merchant_id=merchant_id)
    assert (result.members, result.lots, result.points) == (1, 2, 16)
    with engine.begin() as conn:
        got_journals = {
            (r.id, r.member_id, r.reason, r.occurred_at)
            for r in conn.execute(
                select(tables.journals).where(
                    tables.journals.c.merchant_id == merchant_id, tables.journals.c.kind == "expiry"
                )
            )
        }
        got_postings = {
            (r.id, r.journal_id, r.account, r.amount, r.lot_id, r.occurred_at)
            for r in conn.execute(
                select(tables.postings).where(
                    tables.postings.c.merchant_id == merchant_id, tables.postings.c.id.like("pst_exp_%")
                )
            )
        }
        assert ledger.verify(conn, merchant_id=merchant_id) == []
    names = {lot_id: _name("exp", lot_id, count) for lot_id, (_, count, _) in held.items()}
    assert got_journals == {
        (f"jrn_{names[lot_id]}", member_id, "points expired", at) for lot_id, (at, _, _) in held.items()
    }
    assert got_postings == {
        row
        for lot_id, (at, _, x) in held.items()
        for row in (
            (f"pst_{names[lot_id]}_a", f"jrn_{names[lot_id]}", "available", -x, lot_id, at),
            (f"pst_{names[lot_id]}_b", f"jrn_{names[lot_id]}", "program:expired", x, lot_id, at),
        )
    }


def test_a_batch_of_members_of_several_merchants_moves_each_merchant_s_lots(engine: Engine) -> None:
    from patron.services.clock import utcnow
    from patron.storage import jobs as jobs_repo

    shops = [shop(engine, expiry={"months": 1}) for _ in range(2)]
    with engine.begin() as conn:
        for merchant_id, member_id in shops:
            for n in range(2):
                events.record_event(
                    conn,
                    merchant_id=merchant_id,
                    body=purchase(member_id, f"o-{n}", MUG, occurred_at=f"2025-0{n + 1}-10T09:00:00Z"),
                )
    batch = sorted(shops)
    first = batch[0]
    with engine.begin() as conn:  # the walk, locking: for one merchant, and across merchants
        for only in (first[0], None):
            walked = jobs_repo.members_holding(
                conn, account="available", limit=1, after=(first[0], ""), merchant_id=only, lock=True
            )
            assert walked == [first]
    with engine.begin() as conn:
        moved = jobs_repo.move_due(
            conn,
            members=batch,
            account="available",
            due_column="expires_at",
            as_of=t("2025-02-20T00:00:00"),  # the first lot of each member is due, the second not
            kind="expiry",
            prefix="exp",
            reason="points expired",
            target="program:expired",
            now=utcnow(),
        )
    assert moved == (2, 2, 20)
    for merchant_id, member_id in shops:
        b = balances(engine, merchant_id, member_id)
        assert (b.available, b.expired) == (10, 10)
        with engine.begin() as conn:
            assert ledger.verify(conn, merchant_id=merchant_id) == []
