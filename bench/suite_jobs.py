"""jobs: expiry and tier requalification over a large population, against the same rule written
by hand as set-based SQL, on PostgreSQL.

The population is generated set-based (``generate_series``): MEMBERS members enrolled in 2023,
each with a lot of 10 points expiring in one of three windows a month apart (member i in window
i % 3), every fourth member with a second lot expiring in a fourth window, and one
qualification row in 2023 whose spend puts one in 20 in Silver and one in 20 in Gold (so a
tenth change tier at the period end, as in a program where most members stay put). The
program's tiers are calendar-year, ``downgrade: recompute``: a level reached in 2023 is held
through 2024 and lost at its end, so requalification as of 2026-01-02 records one ``period_end``
change for each member who reached Silver or Gold.

* expire-points: round r runs the real job (``services.jobs.run_job``) as of the end of window
  r, expiring that window's lots (a third of the members; the job walks them all): one journal
  and two postings per lot, cached balances. The twin is one statement over copies of the
  tables (``CREATE TABLE ... (LIKE ... INCLUDING ALL)``, so with the same indexes): the due lots
  with what they hold, their journals and postings, and the balance updates, in data-modifying
  CTEs.
* requalify-tiers: each round runs the real job; the twin computes each member's yearly spend,
  places them by it and inserts the changes. Both tables of changes are emptied between rounds,
  untimed.

The last Patron round of each job runs in a child process, timed inside it, for the job's own
peak RSS at this size (bounded memory: it works in batches of 5,000 members). Then a kill -9 of
the expiry job halfway through a fourth window, and a second run that must finish it: each lot
expired exactly once and ``verify`` clean.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from typing import Any

from harness import alternate, child, log
from sqlalchemy import Engine, text

from patron.services.jobs import run_job
from patron.services.ledger import verify
from patron.storage.db import make_engine

M = "mer_bench_jobs"
P = "prg_bench_jobs"
WINDOW0 = datetime(2025, 6, 1, tzinfo=UTC)
REQUALIFY_AT = datetime(2026, 1, 2, tzinfo=UTC)
PROGRAM = (
    '{"name": "Bench", "currency": "USD", "expiry": {"months": 12}, "tiers": {"metric": "qualifying_spend",'
    ' "period": "calendar_year", "downgrade": "recompute", "levels": [{"id": "member", "name": "Member",'
    ' "threshold": 0}, {"id": "silver", "name": "Silver", "threshold": 20000}, {"id": "gold",'
    ' "name": "Gold", "threshold": 50000}]}}'
)
TWIN = ("journals", "postings", "lots", "member_balances", "tier_changes")


def window_end(k: int) -> datetime:
    return WINDOW0 + timedelta(days=30 * k + 1)


def generate(engine: Engine, members: int) -> None:
    statements = [
        "INSERT INTO merchants (id, name, created_at) VALUES (:m, 'Bench jobs', now())",
        "INSERT INTO programs (merchant_id, id, name, created_at) VALUES (:m, :p, 'Bench', now())",
        """INSERT INTO program_versions (merchant_id, program_id, version, effective_from, body, created_at)
           VALUES (:m, :p, 1, '2020-01-01T00:00:00Z', CAST(:body AS JSON), now())""",
        """INSERT INTO members (merchant_id, id, program_id, card_number, referral_code, status,
               marketing_consent, attributes, enrolled_at, created_at, updated_at)
           SELECT :m, 'mem_' || lpad(i::text, 9, '0'), :p, lpad(i::text, 16, '0'), 'R' || i, 'active',
                  false, '{}', '2023-01-01T00:00:00Z', now(), now()
           FROM generate_series(1, :members) AS i""",
        """INSERT INTO member_balances (merchant_id, member_id, available, pending, reserved, debt,
               lifetime_earned, expired, redeemed)
           SELECT :m, 'mem_' || lpad(i::text, 9, '0'), 10 + 10 * (i % 4 = 0)::int, 0, 0, 0,
                  10 + 10 * (i % 4 = 0)::int, 0, 0
           FROM generate_series(1, :members) AS i""",
        """INSERT INTO journals (merchant_id, id, member_id, program_id, program_version, kind, reason,
               occurred_at, created_at)
           SELECT :m, 'jrn_' || i || '_' || k, 'mem_' || lpad(i::text, 9, '0'), :p, 1, 'earn', 'bench',
                  timestamptz '2024-05-01' + k * interval '30 days', now()
           FROM generate_series(1, :members) AS i,
                LATERAL (SELECT i % 3 AS k UNION ALL SELECT 3 WHERE i % 4 = 0) AS w""",
        """INSERT INTO lots (merchant_id, id, member_id, journal_id, points, earned_at, available_from,
               expires_at)
           SELECT :m, 'lot_' || i || '_' || k, 'mem_' || lpad(i::text, 9, '0'), 'jrn_' || i || '_' || k, 10,
                  timestamptz '2024-05-01' + k * interval '30 days',
                  timestamptz '2024-05-01' + k * interval '30 days',
                  timestamptz '2025-06-01' + k * interval '30 days' + (i % 20) * interval '1 hour'
           FROM generate_series(1, :members) AS i,
                LATERAL (SELECT i % 3 AS k UNION ALL SELECT 3 WHERE i % 4 = 0) AS w""",
        """INSERT INTO postings (merchant_id, id, journal_id, member_id, account, amount, lot_id, occurred_at)
           SELECT :m, 'pst_' || i || '_' || k || s.side, 'jrn_' || i || '_' || k,
                  'mem_' || lpad(i::text, 9, '0'), s.account, s.amount,
                  CASE WHEN s.side = 'a' THEN 'lot_' || i || '_' || k END,
                  timestamptz '2024-05-01' + k * interval '30 days'
           FROM generate_series(1, :members) AS i,
                LATERAL (SELECT i % 3 AS k UNION ALL SELECT 3 WHERE i % 4 = 0) AS w,
                (VALUES ('a', 'available', 10), ('b', 'program:issued', -10)) AS s(side, account, amount)""",
        """INSERT INTO qualifications (merchant_id, event_id, member_id, period_at, recorded_at, spend,
               status_points, visits)
           SELECT :m, 'evt_q_' || i, 'mem_' || lpad(i::text, 9, '0'),
                  timestamptz '2023-03-01' + (i % 200) * interval '1 day',
                  timestamptz '2023-03-01' + (i % 200) * interval '1 day',
                  CASE i % 20 WHEN 0 THEN 60000 WHEN 1 THEN 30000 ELSE (i::bigint * 7919) % 19000 END, 0, 1
           FROM generate_series(1, :members) AS i""",
    ]
    params = {"m": M, "p": P, "members": members, "body": PROGRAM}
    with engine.begin() as conn:
        for sql in statements:
            conn.execute(text(sql), params)
        conn.execute(text("CREATE SCHEMA IF NOT EXISTS bench_twin"))
        for table in TWIN:
            conn.execute(text(f"DROP TABLE IF EXISTS bench_twin.{table}"))
            conn.execute(text(f"CREATE TABLE bench_twin.{table} (LIKE public.{table} INCLUDING ALL)"))
            conn.execute(
                text(f"INSERT INTO bench_twin.{table} SELECT * FROM public.{table} WHERE merchant_id = :m"),
                params,
            )
    with engine.connect() as conn:
        conn.execution_options(isolation_level="AUTOCOMMIT").execute(text("ANALYZE"))


TWIN_EXPIRE = """
WITH due AS (
    SELECT l.merchant_id, l.id AS lot_id, l.member_id, l.expires_at AS at, o.program_id,
           o.program_version, o.event_id, sum(p.amount) AS remaining
    FROM bench_twin.lots l
    JOIN bench_twin.postings p
      ON p.merchant_id = l.merchant_id AND p.member_id = l.member_id AND p.lot_id = l.id
         AND p.account = 'available'
    JOIN bench_twin.journals o ON o.merchant_id = l.merchant_id AND o.id = l.journal_id
    WHERE l.merchant_id = :m AND l.expires_at <= :t
    GROUP BY 1, 2, 3, 4, 5, 6, 7
    HAVING sum(p.amount) > 0
), j AS (
    INSERT INTO bench_twin.journals (merchant_id, id, member_id, program_id, program_version, kind,
        reason, event_id, occurred_at, created_at)
    SELECT merchant_id, 'jrn_exp_' || lot_id, member_id, program_id, program_version, 'expiry',
           'points expired', event_id, at, now()
    FROM due
), p AS (
    INSERT INTO bench_twin.postings (merchant_id, id, journal_id, member_id, account, amount, lot_id,
        occurred_at)
    SELECT d.merchant_id, 'pst_exp_' || d.lot_id || '_' || s.side, 'jrn_exp_' || d.lot_id, d.member_id,
           s.account, s.sign * d.remaining, d.lot_id, d.at
    FROM due d, (VALUES ('a', 'available', -1), ('b', 'program:expired', 1)) AS s(side, account, sign)
)
UPDATE bench_twin.member_balances b
SET available = b.available - x.total, expired = b.expired + x.total
FROM (SELECT merchant_id, member_id, sum(remaining) AS total FROM due GROUP BY 1, 2) x
WHERE b.merchant_id = x.merchant_id AND b.member_id = x.member_id
"""

# The program's rule, by hand: a level reached in a calendar year is held to the end of the next;
# at that end the member is placed by that next year's spend (downgrade: recompute).
TWIN_REQUALIFY = """
WITH spend AS (
    SELECT member_id,
           coalesce(sum(spend) FILTER (WHERE period_at < '2024-01-01'), 0) AS y1,
           coalesce(sum(spend) FILTER (WHERE period_at >= '2024-01-01' AND period_at < '2025-01-01'), 0) AS y2
    FROM qualifications WHERE merchant_id = :m GROUP BY member_id
), placed AS (
    SELECT member_id, y2,
           CASE WHEN y1 >= 50000 THEN 'gold' WHEN y1 >= 20000 THEN 'silver' ELSE 'member' END AS held,
           CASE WHEN y2 >= 50000 THEN 'gold' WHEN y2 >= 20000 THEN 'silver' ELSE 'member' END AS next
    FROM spend
)
INSERT INTO bench_twin.tier_changes (merchant_id, member_id, at, to_tier, from_tier, reason, cause,
    recorded_at)
SELECT :m, member_id, timestamptz '2025-01-01', next, held,
       'requalified at period end with qualifying_spend ' || y2, 'period_end', now()
FROM placed WHERE held <> next
"""


#: lots of the fourth window expired so far (by their postings: journal ids are Patron's business)
WINDOW3_EXPIRED = (
    "SELECT count(DISTINCT lot_id) FROM postings WHERE merchant_id = :m AND account = 'program:expired'"
    " AND lot_id LIKE 'lot\\_%\\_3'"
)


def expired(engine: Engine) -> int:
    return count(
        engine, "SELECT count(*) FROM bench_twin.journals WHERE merchant_id = :m AND kind = 'expiry'"
    )


def count(engine: Engine, sql: str) -> int:
    with engine.begin() as conn:
        return int(conn.execute(text(sql), {"m": M}).scalar() or 0)


CHILD = """
import sys, time
from datetime import datetime
from patron.services.jobs import run_job
from patron.storage.db import make_engine, migrate
engine = make_engine(sys.argv[1])
migrate(engine)  # other work trees may have moved the schema on since this run began
t = time.perf_counter()
r = run_job(engine, sys.argv[2], as_of=datetime.fromisoformat(sys.argv[3]), merchant_id=sys.argv[4])
print("elapsed", time.perf_counter() - t, "lots", r.lots)
"""


def _job_child(url: str, name: str, at: datetime) -> list[str]:
    return [sys.executable, "-c", CHILD, url, name, at.isoformat(), M]


def in_child(url: str, name: str, at: datetime) -> tuple[float, int, int]:
    """The job in a child process: (seconds inside run_job, lots, the child's peak RSS in MiB)."""
    _, peak, out = child(_job_child(url, name, at))
    words = out.split()
    return float(words[words.index("elapsed") + 1]), int(words[words.index("lots") + 1]), peak


def run(url: str, *, members: int, rounds: int) -> dict[str, Any]:
    rounds = min(rounds, 3)  # three expiry windows
    engine = make_engine(url)
    t0 = time.perf_counter()
    generate(engine, members)
    lots = count(engine, "SELECT count(*) FROM lots WHERE merchant_id = :m")
    log(f"jobs: generated {members:,} members, {lots:,} lots in {time.perf_counter() - t0:.1f} s")
    lots_per_round: list[int] = []

    peaks: dict[str, int] = {}

    def patron_expire(r: int) -> float:
        if r == rounds - 1:  # the last round in a child process, for its peak memory
            took, lots, peaks["expire-points"] = in_child(url, "expire-points", window_end(r))
            lots_per_round.append(lots)
            return lots / took
        t = time.perf_counter()
        result = run_job(engine, "expire-points", as_of=window_end(r), merchant_id=M)
        lots_per_round.append(result.lots)
        return result.lots / (time.perf_counter() - t)

    def twin_expire(r: int) -> float:
        before = expired(engine)
        t = time.perf_counter()
        with engine.begin() as conn:
            conn.execute(text(TWIN_EXPIRE), {"m": M, "t": window_end(r)})
        took = time.perf_counter() - t
        return (expired(engine) - before) / took

    log(f"jobs/expire-points: {members:,} members, one window (a third of them due) per round")
    expire = alternate("jobs/expire", rounds, patron_expire, twin_expire, "lots/s")
    expire["lots_per_round"] = lots_per_round

    changes: list[int] = []

    def patron_requalify(r: int) -> float:
        with engine.begin() as conn:
            conn.execute(text("TRUNCATE tier_changes"))  # the suite resets its database: only M here
        if r == rounds - 1:
            took, lots, peaks["requalify-tiers"] = in_child(url, "requalify-tiers", REQUALIFY_AT)
            changes.append(lots)
            return members / took
        t = time.perf_counter()
        result = run_job(engine, "requalify-tiers", as_of=REQUALIFY_AT, merchant_id=M)
        took = time.perf_counter() - t
        changes.append(result.lots)
        return members / took

    def twin_requalify(r: int) -> float:
        with engine.begin() as conn:
            conn.execute(text("TRUNCATE bench_twin.tier_changes"))
        t = time.perf_counter()
        with engine.begin() as conn:
            conn.execute(text(TWIN_REQUALIFY), {"m": M})
        return members / (time.perf_counter() - t)

    log(f"jobs/requalify-tiers: {members:,} members per round")
    requalify = alternate("jobs/requalify", rounds, patron_requalify, twin_requalify, "members/s")
    twin_changes = count(engine, "SELECT count(*) FROM bench_twin.tier_changes")
    requalify.update(changes_patron=changes, changes_twin=twin_changes)

    # kill -9 halfway through window 3, then run again: the window must finish, once
    due = count(engine, "SELECT count(*) FROM lots WHERE merchant_id = :m AND id LIKE '%\\_3'")
    args = _job_child(url, "expire-points", window_end(3))
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    # kill once the run has committed some of the window's batches but not all of them
    done_sql = WINDOW3_EXPIRED
    deadline = time.monotonic() + 600
    while proc.poll() is None and time.monotonic() < deadline and count(engine, done_sql) < due // 5:
        time.sleep(0.05)
    killed = proc.poll() is None
    if killed:
        os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    before = count(engine, WINDOW3_EXPIRED)
    took, peak_rerun, _ = child(args)
    after = count(engine, WINDOW3_EXPIRED)
    with engine.begin() as conn:
        problems = verify(conn, merchant_id=M)
    resumed = after == due and not problems
    log(
        f"  kill -9 at {before:,}/{due:,} lots of window 3 (killed: {killed}); the re-run expired the rest "
        f"in {took:.1f} s, peak RSS {peak_rerun} MiB: {after:,}/{due:,} once each, verify "
        f"{'ok' if not problems else problems[:2]}"
    )
    engine.dispose()
    ratio = min(expire["ratio"], requalify["ratio"])
    return {
        "ratio": ratio,
        "ratio_min": min(expire["ratio_min"], requalify["ratio_min"]),
        "ratio_max": min(expire["ratio_max"], requalify["ratio_max"]),
        "ratio_is": "the lower of expire and requalify",
        "members": members,
        "expire": expire,
        "requalify": requalify,
        "peak_rss_mib": {**peaks, "expire-points after kill -9": peak_rerun},
        "kill9": {
            "killed": killed,
            "done_before_kill": before,
            "due": due,
            "done_after_rerun": after,
            "verify_ok": not problems,
            "resumed": resumed,
        },
        "target": ">= 0.5, bounded memory, resumable after kill -9",
    }
