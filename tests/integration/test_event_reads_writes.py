"""The statements every event runs, on both backends: on PostgreSQL they go to psycopg directly
(and several at once, in its pipeline mode), so here they are held to what SQLAlchemy's own
statements read and write, and their failures to the exceptions SQLAlchemy raises."""

from __future__ import annotations

from contextlib import nullcontext
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import Engine, select
from sqlalchemy.exc import IntegrityError

from patron.services import events, members, merchants, programs, tiers
from patron.services.members import MemberCreate
from patron.storage import events as events_repo
from patron.storage import ledger as ledger_repo
from patron.storage import members as members_repo
from patron.storage import outbox as outbox_repo
from patron.storage.db import insert_rows, pipelined
from patron.storage.tables import event_rules
from patron.storage.tiers import assignments_of, checkpoint_of
from tests.conftest import bean_rewards, purchase

LINE = {"id": "l1", "sku": "LATTE", "category": "coffee", "quantity": 2, "unit_price": 450}


def setup(engine: Engine) -> tuple[str, str, str]:
    with engine.begin() as conn:
        merchant, _ = merchants.create_merchant(conn, name="Reads Co")
        program = programs.create_program(conn, merchant_id=merchant["id"], body=bean_rewards())
        member = members.enrol(
            conn,
            merchant_id=merchant["id"],
            data=MemberCreate(program_id=program["id"], email="reads@example.com"),
        )
    return merchant["id"], program["id"], member["id"]


def test_member_for_event_reads_what_the_separate_reads_do(engine: Engine) -> None:
    merchant_id, _, member_id = setup(engine)
    with engine.begin() as conn:
        events.record_event(conn, merchant_id=merchant_id, body=purchase(member_id, "r-1", [LINE]))
    with engine.begin() as conn:
        found = events_repo.member_for_event(conn, merchant_id, member_id)
        assert found is not None
        member, balances, latest = found
        assert member == members_repo.get_member(conn, merchant_id, member_id)
        assert balances == ledger_repo.cached_balances(conn, merchant_id, member_id)
        assert balances.available == 18
        assert latest == 1
        assert events_repo.member_for_event(conn, merchant_id, "mem_nobody") is None
        assert events_repo.member_for_event(conn, "mer_nobody", member_id) is None


def test_event_inputs_read_what_the_separate_reads_do(engine: Engine) -> None:
    merchant_id, _, member_id = setup(engine)
    for n in range(3):
        with engine.begin() as conn:
            body = purchase(member_id, f"in-{n}", [LINE], occurred_at=f"2026-03-0{n + 1}T10:00:00Z")
            events.record_event(conn, merchant_id=merchant_id, body=body)
    with engine.begin() as conn:
        member = members_repo.get_member(conn, merchant_id, member_id)
        assert member is not None
        program, _ = programs.program_at(
            conn, merchant_id=merchant_id, program_id=member["program_id"], at=datetime.now(UTC)
        )
        tiers.assign(
            conn,
            merchant_id=merchant_id,
            member=member,
            program=program,
            tier_id="gold",
            reason="vip",
            until=datetime.now(UTC) + timedelta(days=30),
        )
    with engine.begin() as conn:
        existing, rows, given, checkpoint = events_repo.event_inputs(
            conn, merchant_id, member_id, "in-1", column="spend", assignments=True
        )
        assert existing == events_repo.get_event(conn, merchant_id, "in-1")
        assert existing is not None and existing["result"]["points"] == 18
        assert rows == events_repo.qualification_rows(conn, merchant_id, member_id, "spend")
        assert [r[2] for r in rows] == [900, 900, 900]
        assert all(r[0].tzinfo is not None and r[0].utcoffset() == timedelta(0) for r in rows)
        assert given == assignments_of(conn, merchant_id, member_id)
        assert [a["tier_id"] for a in given] == ["gold"]
        assert checkpoint is None  # no period placed yet: the rows from enrolment on
        key = tiers.checkpoint_key(program, member)
        assert checkpoint == checkpoint_of(conn, merchant_id, member_id, key, datetime.now(UTC))

        none, no_rows, no_given, no_checkpoint = events_repo.event_inputs(
            conn, merchant_id, member_id, "in-9", column=None, assignments=False
        )
        assert (none, no_rows, no_given, no_checkpoint) == (None, [], [], None)

    with engine.begin() as conn:  # a purchase of 2024: 2025 and 2026 placed since
        body = purchase(member_id, "in-old", [LINE], occurred_at="2024-03-01T10:00:00Z")
        events.record_event(conn, merchant_id=merchant_id, body=body)
    now = datetime.now(UTC)
    with engine.begin() as conn:
        _, rows, _, checkpoint = events_repo.event_inputs(
            conn, merchant_id, member_id, "in-1", column="spend", assignments=True, key=key, as_of=now
        )
        assert checkpoint is not None and checkpoint["period_start"] == datetime(2026, 1, 1, tzinfo=UTC)
        assert checkpoint == checkpoint_of(conn, merchant_id, member_id, key, now)
        assert rows == events_repo.qualification_rows_since_checkpoint(
            conn, merchant_id, member_id, "spend", key, now
        )
        assert [r[0].year for r in rows] == [2026, 2026, 2026]  # not 2024's


def test_rows_inserted_directly_read_back_as_sqlalchemy_wrote_them(engine: Engine) -> None:
    merchant_id, _, member_id = setup(engine)
    with engine.begin() as conn:
        result, _ = events.record_event(
            conn, merchant_id=merchant_id, body=purchase(member_id, "w-1", [LINE])
        )
        row = events_repo.get_event(conn, merchant_id, "w-1")
    assert row is not None
    assert row["result"] == result  # JSON in, the same JSON out
    assert row["body"]["items"] == [LINE]
    assert row["occurred_at"] == datetime(2026, 3, 1, 10, tzinfo=UTC)
    assert row["occurred_at"].utcoffset() == timedelta(0)
    with engine.begin() as conn:
        assert ledger_repo.verify(conn, merchant_id=merchant_id) == []


def test_a_taken_key_in_a_pipeline_is_an_integrity_error(engine: Engine) -> None:
    """The unique key a concurrent writer took fails the transaction as SQLAlchemy reports it,
    whether psycopg reports it at its statement or at the end of the pipeline."""
    row: dict[str, Any] = {"merchant_id": "mer_x", "event_id": "evt_x", "rule_id": "base", "points": 1}

    def write_twice(in_pipeline: bool) -> None:
        with engine.begin() as conn, pipelined(conn) if in_pipeline else nullcontext():
            insert_rows(conn, event_rules, row)
            insert_rows(conn, event_rules, [row])

    for in_pipeline in (True, False):
        with pytest.raises(IntegrityError):
            write_twice(in_pipeline)
    with engine.begin() as conn:  # nothing was kept, and the pool's connections still work
        assert conn.execute(select(event_rules).where(event_rules.c.merchant_id == "mer_x")).all() == []


def test_outbox_numbers_follow_on_in_one_statement(engine: Engine) -> None:
    merchant_id, _, member_id = setup(engine)
    now = datetime.now(UTC)

    def row(n: int) -> dict[str, Any]:
        return {
            "merchant_id": merchant_id,
            "id": f"evt_test_{n}",
            "type": "points.earned",
            "member_id": member_id,
            "stream": member_id,
            "occurred_at": now,
            "created_at": now,
            "data": {"n": n, "at": now.isoformat()},
            "fanned_out_at": None,
        }

    with engine.begin() as conn:
        first = outbox_repo.last_seq(conn, merchant_id, member_id)
        seqs = [outbox_repo.append_event(conn, row(n)) for n in range(3)]
        assert seqs == [first + 1, first + 2, first + 3]
        stored = outbox_repo.get_event(conn, merchant_id, "evt_test_2")
    assert stored is not None
    assert stored["data"] == {"n": 2, "at": now.isoformat()}
    assert stored["occurred_at"] == now


def test_a_new_program_version_is_seen_by_the_next_event(engine: Engine) -> None:
    """The versions' effective times are kept in memory, checked against the latest version
    number each event reads with the member."""
    merchant_id, program_id, member_id = setup(engine)
    with engine.begin() as conn:
        first, _ = events.record_event(conn, merchant_id=merchant_id, body=purchase(member_id, "v-1", [LINE]))
    with engine.begin() as conn:
        programs.update_program(
            conn,
            merchant_id=merchant_id,
            program_id=program_id,
            body=bean_rewards(
                earning_rules=[{"id": "base", "type": "spend", "points": 5, "per_amount": 100}]
            ),
            effective_from=datetime(2026, 2, 1, tzinfo=UTC),
        )
    with engine.begin() as conn:
        second, _ = events.record_event(
            conn, merchant_id=merchant_id, body=purchase(member_id, "v-2", [LINE])
        )
    assert (first["program_version"], first["points"]) == (1, 18)
    assert (second["program_version"], second["points"]) == (2, 45)


def test_a_big_basket_writes_every_line(engine: Engine) -> None:
    merchant_id, _, member_id = setup(engine)
    items = [{**LINE, "id": f"l{n}", "quantity": 1} for n in range(21)]
    with engine.begin() as conn:
        result, _ = events.record_event(conn, merchant_id=merchant_id, body=purchase(member_id, "big", items))
    with engine.begin() as conn:
        row = events_repo.get_event(conn, merchant_id, "big")
        assert row is not None
        lines = events_repo.lines_of(conn, merchant_id, row["id"])
        assert ledger_repo.verify(conn, merchant_id=merchant_id) == []
    assert sorted(ln["line_id"] for ln in lines) == sorted(f"l{n}" for n in range(21))
    assert sum(ln["points"] for ln in lines) == result["points"]
