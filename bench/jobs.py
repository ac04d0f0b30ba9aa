"""Scheduled jobs on a large population, against one plain UPDATE over the same rows.

On PostgreSQL (PATRON_BENCH_POSTGRES_URL or PATRON_TEST_POSTGRES_URL; a scratch merchant is
created and removed), it generates MEMBERS members with LOTS lots each (set-based, with
generate_series), half of the lots due to expire, then times:

* ceiling: ``UPDATE lots SET points = points`` over exactly the due lots (one statement);
* ``expire-points``: the real job (locks, one journal and two postings per lot, cached balances);
* a second run of the job for the same time, which must change nothing.

    python bench/jobs.py [--members 100000] [--lots 10]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from datetime import UTC, datetime

from sqlalchemy import Engine, text

from patron.services.jobs import run_job
from patron.storage.db import make_engine, migrate

AS_OF = datetime(2026, 6, 1, tzinfo=UTC)
M = "mer_bench_jobs"
P = "prg_bench_jobs"


def generate(engine: Engine, members: int, lots: int) -> int:
    n = members * lots
    statements = [
        "INSERT INTO merchants (id, name, created_at) VALUES (:m, 'Bench jobs', now())",
        "INSERT INTO programs (merchant_id, id, name, created_at) VALUES (:m, :p, 'Bench', now())",
        """INSERT INTO program_versions (merchant_id, program_id, version, effective_from, body, created_at)
           VALUES (:m, :p, 1, '2020-01-01T00:00:00Z',
                   '{"name": "Bench", "currency": "USD", "expiry": {"months": 12}}', now())""",
        """INSERT INTO members (merchant_id, id, program_id, card_number, referral_code, status,
               marketing_consent, attributes, enrolled_at, created_at, updated_at)
           SELECT :m, 'mem_' || lpad(i::text, 9, '0'), :p, lpad(i::text, 16, '0'), 'R' || i, 'active',
                  false, '{}', '2024-01-01T00:00:00Z', now(), now()
           FROM generate_series(1, :members) AS i""",
        """INSERT INTO member_balances (merchant_id, member_id, available, pending, reserved, debt,
               lifetime_earned, expired, redeemed)
           SELECT :m, 'mem_' || lpad(i::text, 9, '0'), 10 * :lots, 0, 0, 0, 10 * :lots, 0, 0
           FROM generate_series(1, :members) AS i""",
        """INSERT INTO journals (merchant_id, id, member_id, program_id, program_version, kind, reason,
               occurred_at, created_at)
           SELECT :m, 'jrn_' || i, 'mem_' || lpad((1 + i % :members)::text, 9, '0'), :p, 1, 'earn', 'bench',
                  timestamptz '2024-06-01' + (i % 600) * interval '1 day', now()
           FROM generate_series(1, :n) AS i""",
        """INSERT INTO lots (merchant_id, id, member_id, journal_id, points, earned_at, available_from,
               expires_at)
           SELECT :m, 'lot_' || i, 'mem_' || lpad((1 + i % :members)::text, 9, '0'), 'jrn_' || i, 10,
                  timestamptz '2024-06-01' + (i % 600) * interval '1 day',
                  timestamptz '2024-06-01' + (i % 600) * interval '1 day',
                  timestamptz '2025-06-01' + (i % 600) * interval '1 day'
           FROM generate_series(1, :n) AS i""",
        """INSERT INTO postings (merchant_id, id, journal_id, member_id, account, amount, lot_id, occurred_at)
           SELECT :m, 'pst_' || i || s.side, 'jrn_' || i, 'mem_' || lpad((1 + i % :members)::text, 9, '0'),
                  s.account, s.amount, CASE WHEN s.side = 'a' THEN 'lot_' || i END,
                  timestamptz '2024-06-01' + (i % 600) * interval '1 day'
           FROM generate_series(1, :n) AS i,
                (VALUES ('a', 'available', 10), ('b', 'program:issued', -10)) AS s(side, account, amount)""",
        "ANALYZE",
    ]
    params = {"m": M, "p": P, "members": members, "lots": lots, "n": n}
    with engine.begin() as conn:
        for sql in statements:
            conn.execute(text(sql), params)
        due = conn.execute(
            text("SELECT count(*) FROM lots WHERE merchant_id = :m AND expires_at <= :t"),
            {"m": M, "t": AS_OF},
        ).scalar()
    return int(due or 0)


def cleanup(engine: Engine) -> None:
    with engine.begin() as conn:
        for table in (
            "postings",
            "lots",
            "journals",
            "member_balances",
            "members",
            "program_versions",
            "programs",
        ):
            conn.execute(text(f"DELETE FROM {table} WHERE merchant_id = :m"), {"m": M})
        conn.execute(text("DELETE FROM merchants WHERE id = :m"), {"m": M})


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--members", type=int, default=100_000)
    parser.add_argument("--lots", type=int, default=10)
    args = parser.parse_args()
    url = os.environ.get("PATRON_BENCH_POSTGRES_URL") or os.environ.get("PATRON_TEST_POSTGRES_URL")
    if not url or not url.startswith("postgresql"):
        sys.exit(
            "set PATRON_BENCH_POSTGRES_URL to a PostgreSQL database (the job bench is for large populations)"
        )
    engine = make_engine(url)
    migrate(engine)
    cleanup(engine)
    t0 = time.perf_counter()
    due = generate(engine, args.members, args.lots)
    took = time.perf_counter() - t0
    print(f"generated {args.members} members, {args.members * args.lots} lots ({due} due) in {took:.1f} s")
    try:
        t0 = time.perf_counter()
        with engine.begin() as conn:
            conn.execute(
                text("UPDATE lots SET points = points WHERE merchant_id = :m AND expires_at <= :t"),
                {"m": M, "t": AS_OF},
            )
        ceiling = time.perf_counter() - t0
        t0 = time.perf_counter()
        result = run_job(engine, "expire-points", as_of=AS_OF, merchant_id=M)
        job = time.perf_counter() - t0
        t0 = time.perf_counter()
        again = run_job(engine, "expire-points", as_of=AS_OF, merchant_id=M)
        rerun = time.perf_counter() - t0
        print(f"  ceiling: one UPDATE of the {due} due lots  {ceiling:8.2f} s  ({due / ceiling:,.0f} rows/s)")
        rate = result.lots / job
        print(
            f"  expire-points: {result.lots} lots, {result.points} points  {job:8.2f} s  ({rate:,.0f} lots/s)"
        )
        print(f"  re-run for the same time: {again.lots} lots          {rerun:8.2f} s")
        print(f"  job / ceiling = {ceiling / job:.3f} of the UPDATE's rate")
        assert result.lots == due and again.lots == 0
        with engine.begin() as conn:
            from patron.services.ledger import verify

            problems = verify(conn, merchant_id=M)
        print(f"  verify: {'ok' if not problems else problems[:3]}")
    finally:
        cleanup(engine)


if __name__ == "__main__":
    main()
