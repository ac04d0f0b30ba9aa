"""Tier checkpoints: an event folds its member's tier from the start of the current period,
not from enrolment, and every way of changing an earlier period (a back-dated purchase, a late
return, an imported history, an assignment, new tier rules) still gives the tier a fold of the
whole history gives."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import Engine, select

from patron.services import events, ingest, members, merchants, programs, tiers
from patron.services.members import MemberCreate
from patron.storage import events as events_repo
from patron.storage import members as members_repo
from patron.storage.outbox import outbox_events
from patron.storage.tiers import checkpoint_of, checkpoints_of
from tests.conftest import bean_rewards, purchase


def spend(member_id: str, event_id: str, cents: int, at: str) -> dict[str, Any]:
    line = {"id": "l1", "sku": "BEANS", "category": "retail", "quantity": 1, "unit_price": cents}
    return purchase(member_id, event_id, [line], occurred_at=at)


class Member:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        with engine.begin() as conn:
            merchant, _ = merchants.create_merchant(conn, name="Checkpoint Co")
            self.merchant = merchant["id"]
            program = programs.create_program(conn, merchant_id=self.merchant, body=bean_rewards())
            self.id = members.enrol(
                conn, merchant_id=self.merchant, data=MemberCreate(program_id=program["id"])
            )["id"]
            self.member = members_repo.get_member(conn, self.merchant, self.id)

    def event(self, body: dict[str, Any]) -> dict[str, Any]:
        with self.engine.begin() as conn:
            result, created = events.record_event(conn, merchant_id=self.merchant, body=body)
        assert created
        return result

    def tiers(self) -> tuple[str, str]:
        """(the tier as members see it, the tier a fold of the whole history gives)."""
        with self.engine.begin() as conn:
            member = members_repo.get_member(conn, self.merchant, self.id)
            assert member is not None
            now = datetime.now(UTC)
            program, _ = programs.program_at(
                conn, merchant_id=self.merchant, program_id=member["program_id"], at=now
            )
            shown = tiers.tier_state(
                conn, merchant_id=self.merchant, member=member, program=program, as_of=now
            )
            rows = tiers.qualification_rows(
                conn, merchant_id=self.merchant, member_id=self.id, program=program
            )
            given = tiers.assignments(conn, merchant_id=self.merchant, member_id=self.id)
            whole = tiers.evaluate(program, member, rows, now, given)
        assert shown is not None and whole is not None and shown.level and whole.level
        return shown.level.id, whole.level.id

    def key(self, conn: Any) -> str:
        member = members_repo.get_member(conn, self.merchant, self.id)
        assert member is not None
        program, _ = programs.program_at(
            conn, merchant_id=self.merchant, program_id=member["program_id"], at=datetime.now(UTC)
        )
        return tiers.checkpoint_key(program, member)

    def checkpoint(self) -> dict[str, Any] | None:
        """The checkpoint an event now resumes from."""
        with self.engine.begin() as conn:
            return checkpoint_of(conn, self.merchant, self.id, self.key(conn), datetime.now(UTC))

    def periods(self) -> list[datetime]:
        """The starts of the periods the member has checkpoints for."""
        with self.engine.begin() as conn:
            return [
                c["period_start"] for c in checkpoints_of(conn, self.merchant, [self.id]).get(self.id, [])
            ]

    def rows_read(self) -> list[tuple[datetime, datetime, int, str]]:
        """The qualification rows an event now reads."""
        with self.engine.begin() as conn:
            _, rows, _, _ = events_repo.event_inputs(
                conn,
                self.merchant,
                self.id,
                "none",
                column="spend",
                assignments=True,
                key=self.key(conn),
                as_of=datetime.now(UTC),
            )
        return rows


def test_an_event_reads_only_the_current_period_and_its_tier_stays_that_of_the_whole_history(
    engine: Engine,
) -> None:
    ann = Member(engine)
    ann.event(spend(ann.id, "y24", 60000, "2024-05-01T10:00:00Z"))  # Gold in 2024, held through 2025
    checkpoint = ann.checkpoint()
    assert checkpoint is not None and checkpoint["period_start"] == datetime(2026, 1, 1, tzinfo=UTC)
    assert checkpoint["level_id"] == "silver"  # nothing in 2025: one level down at its end
    assert ann.tiers() == ("silver", "silver")
    assert ann.periods() == [datetime(y, 1, 1, tzinfo=UTC) for y in (2025, 2026)]  # each year placed

    # a back-dated purchase in 2025 keeps her Gold: the checkpoint is taken again
    result = ann.event(spend(ann.id, "y25", 55000, "2025-06-01T10:00:00Z"))
    assert result["member"]["tier"]["id"] == "gold"
    assert ann.checkpoint()["level_id"] == "gold"  # type: ignore[index]
    assert ann.tiers() == ("gold", "gold")

    for n in range(3):
        ann.event(spend(ann.id, f"y26-{n}", 1000, f"2026-0{n + 3}-01T10:00:00Z"))
    assert [r[2] for r in ann.rows_read()] == [1000, 1000, 1000]  # 2026 only

    # a return of most of the 2025 purchase, recorded now: late for 2025's placement (she stays
    # Gold), but the checkpoint moves on so that later events still read 2026 only
    refund = {"id": "r25", "type": "refund", "member_id": ann.id, "refers_to": "y25", "amount": 40000}
    assert ann.event(refund)["member"]["tier"]["id"] == "gold"
    assert ann.tiers() == ("gold", "gold")
    assert [r[2] for r in ann.rows_read()] == [1000, 1000, 1000]


def test_an_imported_row_voids_the_checkpoints_after_it(engine: Engine) -> None:
    bob = Member(engine)
    bob.event(spend(bob.id, "y24", 60000, "2024-05-01T10:00:00Z"))
    assert bob.checkpoint() is not None and bob.tiers() == ("silver", "silver")
    with engine.begin() as conn:
        [outcome] = ingest.record_purchases(
            conn, merchant_id=bob.merchant, bodies=[spend(bob.id, "i25", 55000, "2025-06-01T10:00:00Z")]
        )
    assert outcome.error is None
    assert bob.periods() == [datetime(2025, 1, 1, tzinfo=UTC)]  # 2026's was placed without the row
    assert bob.tiers() == ("gold", "gold")
    bob.event(spend(bob.id, "y26", 1000, "2026-03-01T10:00:00Z"))  # and the next event takes it again
    assert bob.periods() == [datetime(y, 1, 1, tzinfo=UTC) for y in (2025, 2026)]
    assert bob.checkpoint()["level_id"] == "gold"  # type: ignore[index]


def test_an_assignment_is_not_folded_from_an_old_checkpoint(engine: Engine) -> None:
    cy = Member(engine)
    cy.event(spend(cy.id, "y24", 60000, "2024-05-01T10:00:00Z"))
    assert cy.tiers() == ("silver", "silver")
    with engine.begin() as conn:
        member = members_repo.get_member(conn, cy.merchant, cy.id)
        assert member is not None
        program, _ = programs.program_at(
            conn, merchant_id=cy.merchant, program_id=member["program_id"], at=datetime.now(UTC)
        )
        tiers.assign(
            conn,
            merchant_id=cy.merchant,
            member=member,
            program=program,
            tier_id="gold",
            reason="vip",
            until=None,
        )
    assert cy.tiers() == ("gold", "gold")
    before = cy.checkpoint()
    assert before is not None and before["level_id"] == "silver"
    result = cy.event(spend(cy.id, "y26", 1000, "2026-03-01T10:00:00Z"))
    assert result["member"]["tier"]["id"] == "gold"
    after = cy.checkpoint()  # taken again under the assignment: its key says what it holds for
    assert after is not None and after["given"] != before["given"]
    assert cy.tiers() == ("gold", "gold")


def test_an_import_reads_from_the_checkpoint_and_moves_it_on(engine: Engine) -> None:
    """A nightly import for a member with a history: the batch path resumes from their
    checkpoint, shows the tier a whole fold gives, and keeps the checkpoint; a batch with a
    purchase of the year before resumes from that year's checkpoint and takes this year's
    again."""
    dee = Member(engine)
    dee.event(spend(dee.id, "y24", 60000, "2024-05-01T10:00:00Z"))
    dee.event(spend(dee.id, "y25", 55000, "2025-06-01T10:00:00Z"))
    kept = dee.checkpoint()
    assert kept is not None and kept["level_id"] == "gold"

    def load(*bodies: dict[str, Any]) -> list[str]:
        with engine.begin() as conn:
            outcomes = ingest.record_purchases(conn, merchant_id=dee.merchant, bodies=list(bodies))
        assert all(o.error is None and o.result is not None for o in outcomes)
        return [o.result["member"]["tier"]["id"] for o in outcomes if o.result]

    assert (
        load(*(spend(dee.id, f"n{n}", 1000, f"2026-04-0{n + 1}T10:00:00Z") for n in range(3))) == ["gold"] * 3
    )
    assert dee.checkpoint() == kept  # nothing placed since: the same checkpoint
    assert dee.tiers() == ("gold", "gold")
    # an import that reaches back into 2025 after a return: from 2025 on, and still right
    refund = {"id": "r25", "type": "refund", "member_id": dee.id, "refers_to": "y25", "amount": 54000}
    dee.event(refund)
    older = spend(dee.id, "old", 100, "2025-02-01T10:00:00Z")
    assert load(older, spend(dee.id, "new", 100, "2026-05-01T10:00:00Z")) == ["gold", "gold"]
    assert dee.tiers() == ("gold", "gold")
    assert dee.periods() == [datetime(y, 1, 1, tzinfo=UTC) for y in (2025, 2026)]
    taken = dee.checkpoint()  # 2026's, taken again with the 2025 row
    assert taken is not None and taken["period_start"] == datetime(2026, 1, 1, tzinfo=UTC)
    assert taken["written_at"] > kept["written_at"]
    dee.event(spend(dee.id, "y26", 1000, "2026-06-01T10:00:00Z"))
    assert dee.tiers() == ("gold", "gold")


def test_a_history_imported_oldest_first_reads_only_the_latest_period_each_batch(engine: Engine) -> None:
    """Five years imported a year a batch, as a migration from another system goes: each batch
    stores the checkpoints of the periods up to its last purchase and the next resumes from the
    latest, so a batch reads its member's latest period, not everything before it."""
    eve = Member(engine)
    for year in range(2021, 2026):
        bodies = [
            spend(eve.id, f"h{year}-{n}", 3000 if year != 2023 else 6000, f"{year}-{m:02d}-10T10:00:00Z")
            for n, m in enumerate(range(1, 13))
        ]
        with engine.begin() as conn:
            outcomes = ingest.record_purchases(conn, merchant_id=eve.merchant, bodies=bodies)
        assert all(o.error is None for o in outcomes)
        assert eve.periods() == [datetime(y, 1, 1, tzinfo=UTC) for y in range(2022, year + 1)]
    # 2023 reached Gold (72,000), held through 2024; 2024 and 2025 (36,000) place Silver
    assert eve.tiers() == ("silver", "silver")
    assert [r[0].year for r in eve.rows_read()] == [2025] * 12  # an event now resumes from 2025
    eve.event(spend(eve.id, "now", 1000, "2026-02-01T10:00:00Z"))
    assert [r[2] for r in eve.rows_read()] == [1000]
    assert eve.periods()[-1] == datetime(2026, 1, 1, tzinfo=UTC)


@pytest.mark.parametrize("path", ["batch", "one at a time"])
def test_a_row_from_before_the_program_had_tiers_voids_the_checkpoints_after_it(
    engine: Engine, path: str
) -> None:
    """Tiers came with a version effective 2025; a purchase of 2024 (under the version without
    tiers) is imported afterwards. No tier is computed for it, yet its spend counts in the fold of
    the tiers in force now: the checkpoints placed before it came are dropped, and the tier read
    is the whole history's."""
    fay = Member(engine)
    with engine.begin() as conn:
        program = fay.member["program_id"]
        untiered = {k: v for k, v in bean_rewards().items() if k != "tiers"}
        for body, since in ((untiered, "2020-01-01"), (bean_rewards(), "2025-01-01")):
            programs.update_program(
                conn,
                merchant_id=fay.merchant,
                program_id=program,
                body=body,
                effective_from=datetime.fromisoformat(f"{since}T00:00:00+00:00"),
            )
    fay.event(spend(fay.id, "y25", 1000, "2025-03-01T10:00:00Z"))
    assert fay.tiers() == ("member", "member") and fay.periods()

    old = spend(fay.id, "y24", 60000, "2024-06-01T10:00:00Z")  # Gold in 2024 by today's rules
    if path == "batch":
        with engine.begin() as conn:
            [outcome] = ingest.record_purchases(conn, merchant_id=fay.merchant, bodies=[old])
        assert outcome.error is None and outcome.created
        assert outcome.result is not None and outcome.result["member"]["tier"] is None  # none then
    else:
        assert fay.event(old)["member"]["tier"] is None
    assert fay.periods() == []  # every checkpoint was placed without the 2024 row
    # held through 2025, one level down at its end: Silver now, read from the whole history
    assert fay.tiers() == ("silver", "silver")
    fay.event(spend(fay.id, "y26", 1000, "2026-03-01T10:00:00Z"))  # the next event takes them again
    assert fay.periods() and fay.checkpoint()["level_id"] == "silver"  # type: ignore[index]
    assert fay.tiers() == ("silver", "silver")


@pytest.mark.parametrize("path", ["batch", "one at a time"])
def test_a_late_purchase_announces_a_tier_change_only_when_it_moves_the_tier_held_now(
    engine: Engine, path: str
) -> None:
    """A purchase that arrives late is compared with the tier the member holds now, not the one
    they held when it occurred: a small one from last year announces nothing; a big one that
    lifts today's tier announces the move from today's tier."""
    gil = Member(engine)

    def record(body: dict[str, Any]) -> dict[str, Any]:
        if path == "one at a time":
            return gil.event(body)
        with engine.begin() as conn:
            [outcome] = ingest.record_purchases(conn, merchant_id=gil.merchant, bodies=[body])
        assert outcome.error is None and outcome.created and outcome.result is not None
        return outcome.result

    def changes() -> list[tuple[str, str, str]]:
        with engine.begin() as conn:
            rows = conn.execute(
                select(outbox_events.c.data).where(
                    outbox_events.c.merchant_id == gil.merchant, outbox_events.c.type == "tier.changed"
                )
            )
            return sorted((d["event_id"], d["from"], d["to"]) for (d,) in rows)

    record(spend(gil.id, "now-1", 25000, "2026-03-01T10:00:00Z"))  # Silver this year
    assert changes() == [("now-1", "member", "silver")]
    assert (
        record(spend(gil.id, "late-small", 500, "2025-06-01T10:00:00Z"))["member"]["tier"]["id"] == "silver"
    )
    assert changes() == [("now-1", "member", "silver")]  # she held Member then, Silver still now
    # Gold in 2025, held through 2026: today's tier moves from Silver
    assert record(spend(gil.id, "late-big", 60000, "2025-07-01T10:00:00Z"))["member"]["tier"]["id"] == "gold"
    assert changes() == [("late-big", "silver", "gold"), ("now-1", "member", "silver")]
    assert gil.tiers() == ("gold", "gold")
