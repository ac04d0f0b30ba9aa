"""Scheduled jobs, run as if at a given time. Each is idempotent: a second run for the same time
changes nothing. Each effect is recorded at the time it takes effect (a lot's release or expiry
time), never later than the run's time, so ``as_of`` reads before it do not see it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Engine

from patron.domain.errors import Conflict, InvalidInput
from patron.services.clock import utcnow
from patron.storage import job_runs as runs
from patron.storage import jobs as repo
from patron.storage.ids import new_id

#: Members per transaction of the ledger moves (release-pending, expire-points): the lots stay in
#: the database, so a batch costs little memory, and fewer batches cost fewer round trips and commits.
BATCH = 5000
#: Reservations per transaction of lapse-reservations, at most: each is settled on its own, so a
#: smaller batch keeps its members' locks short. ``BATCH`` bounds it too (tests set it to 2).
LAPSE_BATCH = 500


@dataclass(frozen=True, slots=True)
class JobResult:
    name: str
    as_of: datetime
    members: int
    lots: int
    points: int


@dataclass(frozen=True, slots=True)
class _Move:
    account: str
    due_column: str
    kind: str
    prefix: str
    reason: str
    target: str


MOVES = {
    "release-pending": _Move(
        "pending", "available_from", "release", "rel", "pending period over", "available"
    ),
    "expire-points": _Move("available", "expires_at", "expiry", "exp", "points expired", "program:expired"),
}


JOBS = (
    "release-pending",
    "expire-points",
    "lapse-reservations",
    "requalify-tiers",
    "milestones",
    "notifications",
    "at-risk",
    "dividends",
    "memberships",
    "segments",
    "prune-outbox",
)

#: What each job's counts mean, for people: (members, lots, points) of its JobResult.
SUMMARIES = {
    "release-pending": "{points:,} points released from {lots:,} lots of {members:,} members",
    "expire-points": "{points:,} points expired from {lots:,} lots of {members:,} members",
    "lapse-reservations": "{lots:,} reservations lapsed or waitlist places closed, points given back",
    "requalify-tiers": "{lots:,} tier changes recorded for {members:,} members",
    "milestones": "{points:,} points for anniversaries of {members:,} members",
    "notifications": "{lots:,} emails sent to {members:,} members",
    "at-risk": "{members:,} members assessed, {lots:,} newly at risk",
    "dividends": "{members:,} members paid dividends totalling {points:,} (minor units of money)",
    "memberships": "{lots:,} state changes in {members:,} memberships",
    "segments": "{points:,} members in segments across {members:,} programs, {lots:,} of them moved",
    "prune-outbox": "{lots:,} business events and {points:,} delivered webhooks ({members:,} attempts) "
    "past the retention removed",
}


#: Jobs the worker runs once a day (as of midnight UTC), not every round: a second run for the
#: same day changes nothing, so the at-risk list is scored daily rather than every minute.
DAILY = frozenset({"at-risk", "dividends", "segments", "prune-outbox"})


def scheduled_time(name: str, now: datetime) -> datetime:
    """The ``as_of`` the worker runs job ``name`` for at ``now``."""
    if name in DAILY:
        return now.replace(hour=0, minute=0, second=0, microsecond=0)
    return now


def summary(result: JobResult) -> str:
    """What a run did, in words."""
    template = SUMMARIES.get(result.name, "{members:,} members, {lots:,} items, {points:,} points")
    return template.format(members=result.members, lots=result.lots, points=result.points)


def run_job(
    engine: Engine,
    name: str,
    *,
    as_of: datetime,
    merchant_id: str | None = None,
    progress: Callable[[int], None] | None = None,
) -> JobResult:
    """Run job ``name`` as if at ``as_of`` and record the run in the log (``job_runs``).

    A database lock keeps two processes from running the same job at once: the second is
    refused (:class:`~patron.domain.errors.Conflict`) rather than doing the work twice.
    """
    if name not in JOBS:
        raise InvalidInput(f"unknown job {name!r}; jobs: {', '.join(JOBS)}")
    if as_of.tzinfo is None:
        raise InvalidInput("as_of needs a timezone offset")
    run_id = new_id("run")
    with engine.connect() as lock_conn:
        lock = f"{name}:{merchant_id or '*'}"  # one merchant's run never blocks another's
        if not runs.try_lock(lock_conn, lock):
            raise Conflict(f"job {name} is already running in another process")
        try:
            with engine.begin() as conn:
                runs.start(conn, id=run_id, name=name, merchant_id=merchant_id, as_of=as_of, at=utcnow())
            try:
                result = _dispatch(
                    engine, name, as_of=as_of, merchant_id=merchant_id, progress=progress, run_id=run_id
                )
            except Exception as exc:
                with engine.begin() as conn:
                    runs.finish(
                        conn, id=run_id, at=utcnow(), status="failed", result={}, error=str(exc)[:2000]
                    )
                raise
            with engine.begin() as conn:
                summary = {"members": result.members, "lots": result.lots, "points": result.points}
                runs.finish(conn, id=run_id, at=utcnow(), status="succeeded", result=summary, error=None)
            return result
        finally:
            runs.unlock(lock_conn, lock)
            lock_conn.commit()


def _dispatch(
    engine: Engine,
    name: str,
    *,
    as_of: datetime,
    merchant_id: str | None,
    progress: Callable[[int], None] | None,
    run_id: str,
) -> JobResult:
    if name == "requalify-tiers":
        from patron.services.requalify import run_requalify

        members, changes = run_requalify(
            engine, as_of=as_of, merchant_id=merchant_id, progress=progress, run_id=run_id
        )
        return JobResult(name, as_of, members, changes, 0)
    if name == "dividends":
        from patron.services.dividends import run_dividends

        paid, amount = run_dividends(engine, as_of=as_of, merchant_id=merchant_id, progress=progress)
        return JobResult(name, as_of, paid, paid, amount)
    if name == "memberships":
        from patron.services.memberships import run_memberships

        changed, moves = run_memberships(engine, as_of=as_of, merchant_id=merchant_id, progress=progress)
        return JobResult(name, as_of, changed, moves, 0)
    if name == "milestones":
        from patron.services.milestones import run_anniversaries

        found = run_anniversaries(engine, as_of=as_of, merchant_id=merchant_id)
        return JobResult(name, as_of, found[0], 0, found[1])
    if name == "segments":
        from patron.services.segments import run_segments

        programs_done, changed, placed = run_segments(
            engine, as_of=as_of, merchant_id=merchant_id, progress=progress
        )
        return JobResult(name, as_of, programs_done, changed, placed)
    if name == "at-risk":
        from patron.services.at_risk import run_at_risk

        members, newly_at_risk = run_at_risk(engine, as_of=as_of, merchant_id=merchant_id, progress=progress)
        return JobResult(name, as_of, members, newly_at_risk, 0)
    if name == "prune-outbox":
        from patron.config import get_settings
        from patron.services.outbox import prune

        days = get_settings().outbox_retention_days
        events, deliveries, attempts = prune(
            engine, as_of=as_of, days=days, merchant_id=merchant_id, progress=progress
        )
        return JobResult(name, as_of, attempts, events, deliveries)
    if name == "notifications":
        from patron.services.notifications import run_notifications

        members, messages = run_notifications(engine, as_of=as_of, merchant_id=merchant_id, progress=progress)
        return JobResult(name, as_of, members, messages, 0)
    return _run_moves(engine, name, as_of=as_of, merchant_id=merchant_id, progress=progress)


def _run_moves(
    engine: Engine,
    name: str,
    *,
    as_of: datetime,
    merchant_id: str | None = None,
    progress: Callable[[int], None] | None = None,
) -> JobResult:
    """Run job ``name`` as if at ``as_of`` (for one merchant, or all), in batches of members,
    one transaction per batch."""
    if name == "lapse-reservations":
        return _lapse(engine, as_of=as_of, merchant_id=merchant_id, progress=progress)
    move = MOVES[name]
    members = lots = points = 0
    after: tuple[str, str] | None = None
    while True:
        with engine.begin() as conn:
            batch = repo.members_holding(
                conn, account=move.account, limit=BATCH, after=after, merchant_id=merchant_id, lock=True
            )
            if not batch:
                break
            moved = repo.move_due(
                conn,
                members=batch,
                account=move.account,
                due_column=move.due_column,
                as_of=as_of,
                kind=move.kind,
                prefix=move.prefix,
                reason=move.reason,
                target=move.target,
                now=utcnow(),
            )
        after = batch[-1]
        members, lots, points = members + moved[0], lots + moved[1], points + moved[2]
        if progress:
            progress(len(batch))
    if name == "expire-points":
        extra = _expire_inactive(engine, as_of=as_of, merchant_id=merchant_id)
        members, lots, points = members + extra[0], lots + extra[1], points + extra[2]
    return JobResult(name, as_of, members, lots, points)


def _expire_inactive(engine: Engine, *, as_of: datetime, merchant_id: str | None) -> tuple[int, int, int]:
    """The ``inactivity`` policy: the whole balance expires N months after the last activity."""
    from zoneinfo import ZoneInfo

    from patron.domain.expiry import months_in
    from patron.services.programs import program_at

    members = lots = points = 0
    with engine.begin() as conn:
        targets = repo.all_programs(conn, merchant_id)
    for m, program_id in targets:
        with engine.begin() as conn:
            program, _ = program_at(conn, merchant_id=m, program_id=program_id, at=as_of)
            policy = program.expiry
            if policy is None or policy.policy != "inactivity" or not policy.months:
                continue
            tz = ZoneInfo(program.timezone)
            cutoff = months_in(tz, as_of, -policy.months)
            candidates = [
                member_id
                for member_id, _ in repo.inactive_members(
                    conn, merchant_id=m, program_id=program_id, cutoff=cutoff
                )
            ]
        reason = f"no activity for {policy.months} months"
        for i in range(0, len(candidates), BATCH):  # a transaction per batch of members
            with engine.begin() as conn:
                chunk = candidates[i : i + BATCH]
                repo.lock_members(conn, [(m, member_id) for member_id in chunk])
                # asked again under the lock: a purchase that committed meanwhile keeps its member's points
                found = repo.inactive_members(
                    conn, merchant_id=m, program_id=program_id, cutoff=cutoff, among=chunk
                )
                pairs = [(m, member_id) for member_id, _ in found]
                due = repo.due_lots(
                    conn, account="available", due_column="earned_at", as_of=as_of, members=pairs
                )
                when = {member_id: months_in(tz, last, policy.months) for member_id, last in found}
                for d in due:
                    d["at"] = max(when[d["member_id"]], d["at"])
                move, now = MOVES["expire-points"], utcnow()
                repo.move_lots(
                    conn,
                    due,
                    kind=move.kind,
                    prefix=move.prefix,
                    reason=reason,
                    source=move.account,
                    target=move.target,
                    now=now,
                )
                repo.announce_expiry(conn, due, reason=reason, now=now)
            members += len({d["member_id"] for d in due})
            lots += len(due)
            points += sum(int(d["remaining"]) for d in due)
    return members, lots, points


def _lapse(
    engine: Engine, *, as_of: datetime, merchant_id: str | None, progress: Callable[[int], None] | None
) -> JobResult:
    from patron.services.redemptions import lapse_due
    from patron.services.tickets import release_waitlists

    total, limit = 0, min(BATCH, LAPSE_BATCH)
    for step in (lapse_due, release_waitlists):  # reward reservations, then waitlists that closed
        while True:
            with engine.begin() as conn:
                found, done = step(conn, as_of=as_of, merchant_id=merchant_id, limit=limit)
            total += done
            if progress and done:
                progress(done)
            if found < limit:
                break
    return JobResult("lapse-reservations", as_of, total, total, 0)
