"""Tier requalification at period ends as one set-based statement per batch of members.

The statement is generated from a program's tier rules (``domain/tiers.py``), which the caller
turns into a :class:`Plan`: ranks and thresholds, the periods (the same for every member of a
calendar-year program), the downgrade policy. For each member of the batch it computes, per
period, what the fold in ``domain.tiers.history`` computes:

* ``reached``: the highest level the running value crossed within the period (the rows recorded
  by ``as_of``, in recorded order): the period's total where no row is negative, a window
  function over the member's rows where one is (a return: then the order decides), or -1;
* ``known``: the period's value as known at its decision time (end plus grace);

then carries the level the member earned from period to period (one materialised CTE a period),
and inserts a ``period_end`` change for every decided period whose placement moves the member
(skipping one recorded before: the key conflicts). Members with tier assignments are not in it
(the caller folds them in Python: assignments are floors the statement does not model).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, bindparam, case, func, select, text

from patron.storage.tables import UTCDateTime, members, programs, qualifications, tier_assignments

#: the qualification columns a metric may name (never interpolated from input)
COLUMNS = frozenset({"spend", "status_points", "visits", "status_miles", "segments"})


@dataclass(frozen=True, slots=True)
class Plan:
    """What the statement needs of a program's tiers, in ranks (-1: no level)."""

    column: str
    metric: str
    tier_ids: Sequence[str]  # by rank
    base: int  # the rank a member starts at
    steps: Sequence[tuple[int, int]]  # (threshold, rank reached from it), highest threshold first
    permanent: frozenset[int]
    downgrade: str  # "recompute" | "one_level" | "none"
    ends: Sequence[datetime]  # period k is [ends[k-1], ends[k]); every row is before ends[-1]
    decided: Sequence[datetime]  # when period k's placement takes effect, for the decided ones
    #: when members whose values never reach this (and never go down) cannot move: the lowest
    #: threshold above the base level (None: every member is walked)
    sparse_above: int | None = None


def next_batch(
    conn: Connection, merchant_id: str, program_id: str, *, after: str | None, limit: int
) -> tuple[str, int] | None:
    """The last id and the size of the next batch of at most ``limit`` members of the program
    (those after ``after``, in id order); None when there are no more."""
    sql = "SELECT id FROM members WHERE merchant_id = :m AND program_id = :p"
    if after is not None:
        sql += " AND id > :after"
    params = {"m": merchant_id, "p": program_id, "after": after, "limit": limit}
    last = conn.execute(text(sql + " ORDER BY id LIMIT 1 OFFSET :limit - 1"), params).scalar()
    if last is not None:
        return str(last), limit
    rest = conn.execute(text(f"SELECT count(*), max(id) FROM ({sql}) x"), params).one()
    return (str(rest[1]), int(rest[0])) if rest[0] else None


def first_moment(conn: Connection, merchant_id: str, program_id: str) -> datetime | None:
    """The earliest enrolment or qualification of the program's members (where periods start),
    in one statement; a merchant's only program needs no join to tell its members' rows."""
    others = (
        select(programs.c.id)
        .where(programs.c.merchant_id == merchant_id, programs.c.id != program_id)
        .exists()
    )
    joined = (
        select(func.min(qualifications.c.period_at))
        .join(
            members,
            (members.c.merchant_id == qualifications.c.merchant_id)
            & (members.c.id == qualifications.c.member_id),
        )
        .where(qualifications.c.merchant_id == merchant_id, members.c.program_id == program_id)
        .scalar_subquery()
    )
    alone = (
        select(func.min(qualifications.c.period_at))
        .where(qualifications.c.merchant_id == merchant_id)
        .scalar_subquery()
    )
    enrolled = (
        select(func.min(members.c.enrolled_at))
        .where(members.c.merchant_id == merchant_id, members.c.program_id == program_id)
        .scalar_subquery()
    )
    # only the branch taken is computed
    qualified = case((others, joined), else_=alone)
    found = [d for d in conn.execute(select(enrolled, qualified)).one() if d is not None]
    return min(found) if found else None


def assigned_members(conn: Connection, merchant_id: str, program_id: str) -> list[str]:
    """Members of the program with any tier assignment, in id order."""
    stmt = (
        select(tier_assignments.c.member_id)
        .distinct()
        .join(
            members,
            (members.c.merchant_id == tier_assignments.c.merchant_id)
            & (members.c.id == tier_assignments.c.member_id),
        )
        .where(tier_assignments.c.merchant_id == merchant_id, members.c.program_id == program_id)
        .order_by(tier_assignments.c.member_id)
    )
    return [str(r[0]) for r in conn.execute(stmt)]


def _case(pairs: Sequence[tuple[str, str]], otherwise: str) -> str:
    whens = " ".join(f"WHEN {cond} THEN {then}" for cond, then in pairs)
    return f"(CASE {whens} ELSE {otherwise} END)" if pairs else otherwise


def _met(plan: Plan, value: str) -> str:
    """The rank a value reaches (``Tiers.reached``), -1 for none."""
    return _case([(f"{value} >= {t}", str(r)) for t, r in plan.steps], "-1")


def _placed(plan: Plan, pre: str, reached: str, known: str) -> str:
    """``domain.tiers``' placement at a period's end: held when reached in the period, else
    ``requalify`` by the value known then."""
    met = _met(plan, known)
    if plan.downgrade == "recompute":
        down = met
    elif plan.downgrade == "one_level":
        one = f"(CASE WHEN {pre} = 0 THEN 0 ELSE {pre} - 1 END)"
        down = f"(CASE WHEN {one} > {met} THEN {one} ELSE {met} END)"
    else:
        down = pre
    keep = [f"({reached} >= 0 AND {pre} = {reached})", f"{pre} < 0", f"{met} >= {pre}"]
    if plan.permanent:
        keep.append(f"{pre} IN ({', '.join(str(r) for r in sorted(plan.permanent))})")
    return f"(CASE WHEN {' OR '.join(keep)} THEN {pre} ELSE {down} END)"


def record_changes(
    conn: Connection,
    *,
    merchant_id: str,
    program_id: str,
    plan: Plan,
    lo: str | None,
    hi: str,
    as_of: datetime,
    run_id: str,
    now: datetime,
    assigned: bool = True,
    announce: str | None = None,
) -> list[dict[str, Any]]:
    """Record the period-end changes of the program's members with ids in ``(lo, hi]`` (without
    tier assignments: ``assigned`` False says the program has none); the rows inserted (those not
    recorded before).

    ``announce`` (PostgreSQL): a ``type_`` head of new event ids (``storage.ids.time_head``);
    the statement then also appends each change's ``tier.changed`` business event to its
    member's stream (the next sequence numbers, in the changes' order), and returns of each
    change only its ``member_id`` (the events hold the rest; a run records tens of thousands).
    A concurrent writer that took one of those numbers makes it fail with an ``IntegrityError``."""
    if plan.column not in COLUMNS:
        raise ValueError(f"unknown qualification column {plan.column}")
    n, decided = len(plan.ends), len(plan.decided)
    if decided == 0:
        return []
    dated = {f"e{k}": e for k, e in enumerate(plan.ends)} | {f"d{k}": d for k, d in enumerate(plan.decided)}
    params: dict[str, Any] = {
        "m": merchant_id,
        "p": program_id,
        "lo": lo,
        "hi": hi,
        "as_of": as_of,
        "run": run_id,
        "now": now,
        "why": f"requalified at period end with {plan.metric} ",
    } | dated
    params |= {f"t{r}": tier for r, tier in enumerate(plan.tier_ids)}

    def index(column: str) -> str:
        return _case([(f"{column} < :e{k}", str(k)) for k in range(n)], str(n))

    def decided_at(k: str) -> str:
        return _case([(f"{k} = {i}", f":d{i}") for i in range(decided)], "NULL")

    def tier(rank: str) -> str:
        return _case([(f"{rank} = {r}", f":t{r}") for r in range(len(plan.tier_ids))], "NULL")

    def pre(k: int) -> str:
        return f"(CASE WHEN r{k} > e{k} THEN r{k} ELSE e{k} END)"

    lower = "AND q.member_id > :lo" if lo is not None else ""
    periods = range(decided)

    def within(k: int) -> str:
        return f"period_at < :e{k}" if k == 0 else f"period_at >= :e{k - 1} AND period_at < :e{k}"

    sums = ",\n           ".join(
        f"sum(CASE WHEN {within(k)} THEN v END) AS s{k}, "
        f"sum(CASE WHEN {within(k)} AND recorded_at <= :d{k} THEN v ELSE 0 END) AS k{k}"
        for k in periods
    )
    highs = ",\n           ".join(
        f"max(CASE WHEN k = {k} THEN {_met(plan, 'running')} END) AS n{k}" for k in periods
    )
    reached = ",\n           ".join(
        f"CASE WHEN n.member_id IS NULL THEN {_met(plan, f's.s{k}')} ELSE coalesce(n.n{k}, -1) END AS r{k}, "
        f"coalesce(s.k{k}, 0) AS k{k}"
        for k in periods
    )
    if plan.sparse_above is not None:
        # only members whose rows can move them: a return, or a period reaching above the base
        rising = " OR ".join(f"sum(CASE WHEN {within(k)} THEN v END) >= {plan.sparse_above}" for k in periods)
        having, join = f"HAVING min(v) < 0 OR {rising}", "JOIN"
    else:
        having, join = "", "LEFT JOIN"
    unassigned = (
        "AND NOT EXISTS (SELECT 1 FROM tier_assignments t WHERE t.merchant_id = :m AND t.member_id = b.id)"
        if assigned
        else ""
    )
    chain = "".join(
        f""",
c{k + 1} AS MATERIALIZED (
    SELECT c{k}.*, CASE WHEN f > {k} THEN e{k} ELSE {_placed(plan, pre(k), f"r{k}", f"k{k}")} END AS e{k + 1}
    FROM c{k}
)"""
        for k in periods
    )
    moved = "\n    UNION ALL\n".join(
        f"    SELECT member_id, {k} AS k, {pre(k)} AS pre, e{k + 1} AS placed, k{k} AS known"
        f" FROM c{decided} WHERE f <= {k}"
        for k in periods
    )
    record = f"""INSERT INTO tier_changes (merchant_id, member_id, at, to_tier, from_tier, reason, cause,
    job_run_id, recorded_at)
SELECT :m, member_id, {decided_at("k")}, {tier("placed")}, {tier("pre")}, :why || CAST(known AS TEXT),
       'period_end', :run, :now
FROM moved WHERE placed <> pre AND placed >= 0
ON CONFLICT (merchant_id, member_id, at, to_tier) DO NOTHING
RETURNING member_id, at, to_tier, from_tier, reason"""
    if announce is not None:
        params["head"] = announce
        record = f""",
recorded AS (
{record}
),
announced AS (
    INSERT INTO outbox_events (merchant_id, id, type, member_id, stream, seq, occurred_at, created_at, data)
    SELECT :m,
           :head || substr(md5(concat_ws('/', r.member_id, CAST(r.at AS text), r.to_tier, :run)), 1, 16),
           'tier.changed', r.member_id, r.member_id,
           coalesce((SELECT max(o.seq) FROM outbox_events o
                     WHERE o.merchant_id = :m AND o.stream = r.member_id), 0)
             + row_number() OVER (PARTITION BY r.member_id ORDER BY r.at, r.to_tier),
           r.at, :now,
           json_build_object('cause', 'period_end', 'from', r.from_tier, 'reason', r.reason, 'to', r.to_tier)
    FROM recorded r
)
SELECT member_id FROM recorded"""
    else:
        record = "\n" + record
    sql = f"""
WITH
q AS NOT MATERIALIZED (
    SELECT q.member_id, q.period_at, q.recorded_at, q.{plan.column} AS v
    FROM qualifications q
    WHERE q.merchant_id = :m {lower} AND q.member_id <= :hi AND q.recorded_at <= :as_of
      AND q.{plan.column} <> 0
),
s AS (
    SELECT member_id, min(period_at) AS first_at, min(v) AS low,
           {sums}
    FROM q GROUP BY member_id
    {having}
),
n AS (
    -- where a member has a negative row (a return), the highest level a period's running value
    -- crossed depends on the order; elsewhere the running value only rises and its total is it
    SELECT member_id, {highs}
    FROM (
        SELECT member_id, k, sum(v) OVER (PARTITION BY member_id, k ORDER BY recorded_at
                                          ROWS UNBOUNDED PRECEDING) AS running
        FROM (SELECT member_id, {index("period_at")} AS k, recorded_at, v FROM q
              WHERE member_id IN (SELECT member_id FROM s WHERE low < 0)) y
    ) x
    GROUP BY member_id
),
c0 AS MATERIALIZED (
    SELECT b.id AS member_id,
           {index("CASE WHEN s.first_at < b.enrolled_at THEN s.first_at ELSE b.enrolled_at END")} AS f,
           {reached},
           {plan.base} AS e0
    FROM members b
    {join} s ON s.member_id = b.id
    LEFT JOIN n ON n.member_id = b.id
    WHERE b.merchant_id = :m AND b.program_id = :p {lower.replace("q.member_id", "b.id")} AND b.id <= :hi
      {unassigned}
){chain},
moved AS (
{moved}
){record}
"""
    if conn.dialect.name == "postgresql":
        conn.execute(text("SET LOCAL jit = off"))  # compiling this statement costs more than it saves
    stmt = text(sql).bindparams(*(bindparam(name, type_=UTCDateTime()) for name in [*dated, "as_of", "now"]))
    if announce is not None:
        return [{"member_id": r[0]} for r in conn.execute(stmt, params)]
    return [dict(r) for r in conn.execute(stmt.columns(at=UTCDateTime()), params).mappings()]
