"""Member email: the program's automations, the ``notifications`` job, preferences, unsubscribe.

The job, run as if at ``as_of``, works in two steps:

1. **Record.** For each program, set-based queries find what is due (``domain/notifications.py``
   says when) and insert one log row per message, keyed ``(member, kind, key)``; a row already
   there is left alone. The numbers a message states (points, balance, dates) are read from the
   ledger as of ``as_of`` and stored with the row, so a retry says the same thing.
2. **Send.** Every ``queued`` or ``failed`` row is claimed (-> ``sending``, committed) and handed to
   the SMTP server, then marked ``sent``. A server that is down leaves the rows ``failed`` with
   the error and the run raises :class:`DeliveryFailed` after recording everything; the next
   run retries them. A claimed row is handed over at most once: a crash between hand-over and
   ``sent`` leaves it ``sending``, never sent again.

If the connection drops while a message is being handed over, the row is marked ``failed`` and
retried: SMTP cannot tell whether the server kept it, and a rare duplicate is better than a lost
warning. A refusal of one message (bad recipient) fails that row only; the run goes on.

Members without an email, unsubscribed, or who switched the message off are not recorded; if
that changes after a message was recorded but before it went out, the row becomes ``skipped``.
Event messages (welcome, earned, tier change, milestone, reward) are only due for what happened
in the ``max_age_days`` before the run, so a first run never mails old history.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from sqlalchemy import Connection, Engine

from patron.domain import notifications as rules
from patron.domain.errors import Conflict, InvalidInput, NotFound
from patron.domain.notifications import Kind
from patron.services import email
from patron.services.clock import utcnow
from patron.storage import jobs as jobs_repo
from patron.storage import members as members_repo
from patron.storage import notifications as repo
from patron.storage import programs as programs_repo
from patron.storage.ids import derived_id, new_id

BATCH = 200

MessageName = Literal[
    "welcome",
    "points_earned",
    "tier_up",
    "tier_down",
    "milestone",
    "reward_issued",
    "expiry_warning",
    "expiry_last_chance",
    "monthly_digest",
    "win_back",
]

SAMPLE: dict[str, Any] = {
    "program": "Bean Rewards",
    "points_name": "points",
    "member_name": "Ada",
    "balance": 120,
    "points": 40,
    "earned_on": "2027-01-01",
    "tier": "Gold",
    "from_tier": "Silver",
    "since": "2027-01-01",
    "milestone": "Tenth visit",
    "reward": "Free coffee",
    "code": "ABCD1234",
    "expires_on": "2027-01-31",
    "days": 7,
    "month": "December 2026",
    "earned": 300,
    "expiring": 50,
    "expiring_by": "2027-01-31",
    "last_seen": "2026-09-01",
    "unsubscribe_url": "http://127.0.0.1:8000/unsubscribe/x",
}


class TemplateOverride(BaseModel):
    model_config = ConfigDict(extra="forbid")

    subject: Annotated[str, Field(max_length=500)] | None = Field(None, description="Jinja2 subject line.")
    text: Annotated[str, Field(max_length=50_000)] | None = Field(
        None, description="Jinja2 plain-text body; may `{% extends 'base.txt.j2' %}`."
    )
    html: Annotated[str, Field(max_length=200_000)] | None = Field(
        None, description="Jinja2 HTML body (autoescaped); may `{% extends 'base.html.j2' %}`."
    )


class NotificationsSpec(BaseModel):
    """Which emails go to members, and when. Every message is on by default; switch any off."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = Field(True, description="Off: the program sends no email at all.")
    welcome: bool = True
    points_earned: bool = True
    tier_changed: bool = Field(True, description="Tier up and tier down.")
    milestone: bool = True
    reward_issued: bool = True
    expiry_warning_days: Annotated[list[Annotated[int, Field(ge=1, le=365)]], Field(max_length=5)] = Field(
        default_factory=lambda: [30, 7],
        description="Warn this many days before points expire; the smallest is the last chance. "
        "Empty: no warnings.",
    )
    monthly_digest: bool = True
    digest_day: Annotated[int, Field(ge=1, le=28)] = Field(
        1, description="Day of the month (program timezone) the previous month's digest is due."
    )
    win_back_days: Annotated[int, Field(ge=1, le=3650)] | None = Field(
        90, description="Win-back after this many days without activity; null: off."
    )
    max_age_days: Annotated[int, Field(ge=1, le=365)] = Field(
        7, description="Event messages are not sent for things older than this when the job runs."
    )
    templates: dict[MessageName, TemplateOverride] = Field(
        default_factory=dict, description="Per-message Jinja2 overrides of subject, text and html."
    )

    @field_validator("expiry_warning_days")
    @classmethod
    def _distinct(cls, v: list[int]) -> list[int]:
        return sorted(set(v), reverse=True)

    @model_validator(mode="after")
    def _templates_render(self) -> NotificationsSpec:
        problems = email.check_templates(self.template_dict(), SAMPLE)
        if problems:
            raise ValueError("template error: " + "; ".join(problems))
        return self

    def template_dict(self) -> dict[str, dict[str, str | None]]:
        return {k: v.model_dump() for k, v in self.templates.items()}

    def on(self, kind: Kind) -> bool:
        return {
            Kind.WELCOME: self.welcome,
            Kind.POINTS_EARNED: self.points_earned,
            Kind.TIER_UP: self.tier_changed,
            Kind.TIER_DOWN: self.tier_changed,
            Kind.MILESTONE: self.milestone,
            Kind.REWARD_ISSUED: self.reward_issued,
            Kind.EXPIRY_WARNING: bool(self.expiry_warning_days),
            Kind.EXPIRY_LAST_CHANCE: bool(self.expiry_warning_days),
            Kind.MONTHLY_DIGEST: self.monthly_digest,
            Kind.WIN_BACK: self.win_back_days is not None,
        }[kind]


class DeliveryFailed(Conflict):
    """Messages could not be sent (SMTP down or refusing). They stay in the log as ``failed``
    and the next run retries them; a Conflict, so that a worker loop tries again next round."""

    code = "delivery-failed"
    title = "Some emails could not be sent"


# Program settings -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Program:
    id: str
    name: str
    points_name: str
    timezone: ZoneInfo
    levels: dict[str, str]  # tier id -> name, lowest first
    rewards: dict[str, str]  # reward id -> name
    milestones: dict[str, str]
    spec: NotificationsSpec
    overrides: tuple[tuple[str, str], ...]


_PROGRAMS: dict[tuple[str, str, int], _Program] = {}


def _program(conn: Connection, merchant_id: str, program_id: str, at: datetime) -> _Program:
    """The program version in effect at ``at``, with its notification settings (versions are
    immutable, so a parsed one is kept in memory)."""
    from patron.services.programs import pick_version  # programs imports this module's spec

    version = pick_version(programs_repo.version_times(conn, merchant_id, program_id), at)
    if version is None:
        raise NotFound(f"program {program_id} not found")
    key = (merchant_id, program_id, version)
    if key not in _PROGRAMS:
        body = programs_repo.version_body(conn, merchant_id, program_id, version) or {}
        try:
            spec = NotificationsSpec.model_validate(body.get("notifications") or {})
        except ValidationError as exc:  # a version stored before the setting was validated
            raise InvalidInput(f"program {program_id}: invalid notifications setting: {exc}") from exc
        tiers = body.get("tiers") or {}
        if len(_PROGRAMS) > 1024:
            _PROGRAMS.clear()
        _PROGRAMS[key] = _Program(
            id=program_id,
            name=str(body.get("name", "")),
            points_name=str(body.get("points_name") or "points"),
            timezone=ZoneInfo(str(body.get("timezone") or "UTC")),
            levels={lv["id"]: lv.get("name") or lv["id"] for lv in tiers.get("levels") or []},
            rewards={r["id"]: r.get("name") or r["id"] for r in body.get("rewards") or []},
            milestones={m["id"]: m.get("name") or m["id"] for m in body.get("milestones") or []},
            spec=spec,
            overrides=email.override_files(spec.template_dict()),
        )
    return _PROGRAMS[key]


# Recording what is due --------------------------------------------------------------------


def _day(at: datetime, p: _Program) -> str:
    return rules.local_day(at, p.timezone).isoformat()


def due_messages(conn: Connection, *, merchant_id: str, p: _Program, as_of: datetime) -> list[dict[str, Any]]:
    """Every message due at ``as_of`` for the program's reachable members, before preferences:
    dicts with ``member_id``, ``member_name``, ``kind``, ``key`` and the message's ``context``."""
    spec = p.spec
    since = as_of - timedelta(days=spec.max_age_days)
    window = {"since": since, "as_of": as_of}
    due: list[dict[str, Any]] = []

    def add(row: dict[str, Any], kind: Kind, key: str, **context: Any) -> None:
        if spec.on(kind):
            due.append(
                {
                    "member_id": row["member_id"],
                    "member_name": row["name"],
                    "kind": kind,
                    "key": key,
                    **context,
                }
            )

    if spec.welcome:
        for r in repo.enrolled(conn, merchant_id, p.id, **window):
            add(r, Kind.WELCOME, "enrolled")
    if spec.points_earned:
        for r in repo.earnings(conn, merchant_id, p.id, **window):
            add(r, Kind.POINTS_EARNED, r["journal_id"], points=int(r["points"]), earned_on=_day(r["at"], p))
    if spec.tier_changed:
        for r in repo.tier_moves(conn, merchant_id, p.id, **window) + _upgrades(
            conn, merchant_id, p, **window
        ):
            kind = rules.tier_direction(r["from_tier"], r["to_tier"], list(p.levels))
            add(
                r,
                kind,
                f"{r['at'].isoformat()}:{r['to_tier']}",
                tier=p.levels.get(r["to_tier"], r["to_tier"]),
                from_tier=p.levels.get(r["from_tier"], r["from_tier"]) if r["from_tier"] else None,
                since=_day(r["at"], p),
            )
    if spec.milestone:
        for r in repo.milestones_reached(conn, merchant_id, p.id, **window):
            name = p.milestones.get(r["milestone_id"], r["milestone_id"])
            add(r, Kind.MILESTONE, r["milestone_id"], milestone=name, points=int(r["points"]))
    if spec.reward_issued:
        for r in repo.rewards_issued(conn, merchant_id, p.id, **window):
            name = p.rewards.get(r["reward_id"], r["reward_id"])
            add(
                r,
                Kind.REWARD_ISSUED,
                r["redemption_id"],
                reward=name,
                code=r["code"],
                points=int(r["points"]),
            )
    if spec.expiry_warning_days:
        due += _expiry(conn, merchant_id, p, as_of)
    if spec.monthly_digest:
        due += _digest(conn, merchant_id, p, as_of)
    if spec.win_back_days is not None:
        cutoff = as_of - timedelta(days=spec.win_back_days)
        for r in repo.last_activity(conn, merchant_id, p.id, as_of=as_of, cutoff=cutoff):
            key = rules.win_back_key(r["at"], as_of=as_of, days=spec.win_back_days)
            if key is not None:
                add(r, Kind.WIN_BACK, key, last_seen=_day(r["at"], p), days=(as_of - r["at"]).days)
    return due


def _upgrades(
    conn: Connection, merchant_id: str, p: _Program, *, since: datetime, as_of: datetime
) -> list[dict[str, Any]]:
    """Upgrades at once (a purchase crossing a threshold) in ``(since, as_of]``: derived from the
    qualification history, as reads are; period-end changes come from ``tier_changes``. The key
    is the same as a recorded change's, so one change is never announced twice."""
    from patron.domain.tiers import history
    from patron.services.programs import program_at
    from patron.services.tiers import program_inputs

    program, _ = program_at(conn, merchant_id=merchant_id, program_id=p.id, at=as_of)
    tiers = program.tiers
    if tiers is None or not tiers.levels:
        return []
    found = repo.qualified_recently(conn, merchant_id, p.id, since=since, as_of=as_of)
    out: list[dict[str, Any]] = []
    for i in range(0, len(found), BATCH):
        batch = found[i : i + BATCH]
        rows, given = program_inputs(
            conn,
            merchant_id=merchant_id,
            program_id=p.id,
            member_ids=[m["member_id"] for m in batch],
            metrics={tiers.metric},
        )
        for m in batch:
            _, moves = history(
                tiers,
                rows[tiers.metric].get(m["member_id"], []),
                as_of=as_of,
                tz=ZoneInfo(program.timezone),
                enrolled_at=m["enrolled_at"],
                assignments=given.get(m["member_id"], []),
            )
            out += [
                {**m, "at": c.at, "from_tier": c.from_id, "to_tier": c.to_id}
                for c in moves
                if c.cause == "event" and c.to_id is not None and since < c.at <= as_of
            ]
    return out


def _expiry(
    conn: Connection, merchant_id: str, p: _Program, as_of: datetime, *, mailable: bool = True
) -> list[dict[str, Any]]:
    windows = p.spec.expiry_warning_days
    until = as_of + timedelta(days=max(windows))
    rows = repo.expiring(conn, merchant_id, p.id, as_of=as_of, until=until, mailable=mailable)
    groups: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    for r in rows:
        groups[(r["member_id"], _day(r["expires_at"], p))].append(r)
    out = []
    for (member_id, day), lots in sorted(groups.items()):
        first = min(r["expires_at"] for r in lots)
        w = rules.expiry_window(first, as_of=as_of, windows=windows)
        if w is None:
            continue
        today = rules.local_day(as_of, p.timezone)
        out.append(
            {
                "member_id": member_id,
                "member_name": lots[0]["name"],
                "kind": rules.expiry_kind(w, windows),
                "key": f"{day}:{w}",
                "points": sum(int(r["points"]) for r in lots),
                "expires_on": day,
                "days": (rules.local_day(first, p.timezone) - today).days,
            }
        )
    return out


def _digest(conn: Connection, merchant_id: str, p: _Program, as_of: datetime) -> list[dict[str, Any]]:
    period = rules.digest_period(as_of, tz=p.timezone, day=p.spec.digest_day)
    rows = repo.with_balance(conn, merchant_id, p.id, as_of=as_of)
    ids = [r["member_id"] for r in rows]
    earned = repo.earned_between(conn, merchant_id, ids, period.start, period.end)
    soon = repo.expiring(conn, merchant_id, p.id, as_of=as_of, until=as_of + timedelta(days=30))
    expiring: dict[str, tuple[int, datetime]] = {}
    for r in soon:
        points, last = expiring.get(r["member_id"], (0, r["expires_at"]))
        expiring[r["member_id"]] = (points + int(r["points"]), max(last, r["expires_at"]))
    month = period.start.strftime("%B %Y")
    return [
        {
            "member_id": r["member_id"],
            "member_name": r["name"],
            "kind": Kind.MONTHLY_DIGEST,
            "key": period.key,
            "month": month,
            "earned": earned.get(r["member_id"], 0),
            "expiring": expiring.get(r["member_id"], (0, as_of))[0],
            "expiring_by": _day(expiring[r["member_id"]][1], p) if r["member_id"] in expiring else None,
        }
        for r in rows
    ]


def record_due(conn: Connection, *, merchant_id: str, program_id: str, as_of: datetime) -> tuple[int, int]:
    """Record the program's messages due at ``as_of``; (members, new messages)."""
    p = _program(conn, merchant_id, program_id, as_of)
    if not p.spec.enabled:
        return 0, 0
    if p.spec.expiry_warning_days:
        _announce_expiring(conn, merchant_id, _expiry(conn, merchant_id, p, as_of, mailable=False), as_of)
    due = due_messages(conn, merchant_id=merchant_id, p=p, as_of=as_of)
    if not due:
        return 0, 0
    ids = [d["member_id"] for d in due]
    prefs = {m: _prefs(row) for m, row in repo.preferences_of(conn, merchant_id, ids).items()}
    balance = repo.available_as_of(conn, merchant_id, ids, as_of)
    now = utcnow()
    rows = []
    for d in due:
        member_id, kind, key = d.pop("member_id"), d.pop("kind"), d.pop("key")
        if not rules.wants(prefs.get(member_id), kind, "on file"):
            continue
        context = {
            "program": p.name,
            "points_name": p.points_name,
            "member_name": d.pop("member_name"),
            "balance": balance.get(member_id, 0),
            "as_of": as_of.isoformat(),
            **d,
        }
        rows.append(
            {
                "merchant_id": merchant_id,
                "id": new_id("ntf"),
                "program_id": program_id,
                "member_id": member_id,
                "kind": str(kind),
                "key": key[:200],
                "context": context,
                "as_of": as_of,
                "status": rules.Status.QUEUED.value,
                "attempts": 0,
                "last_error": None,
                "created_at": now,
                "updated_at": now,
                "sent_at": None,
            }
        )
    new = repo.record(conn, rows)
    return len({r["member_id"] for r in rows}), new


def _announce_expiring(
    conn: Connection, merchant_id: str, warnings: list[dict[str, Any]], as_of: datetime
) -> None:
    """A ``points.expiring`` business event for each expiry warning window that opened (the
    warnings of :func:`_expiry`, of every member, with an email or not): once per member, day and
    window, because its id derives from them (:func:`~patron.storage.ids.derived_id`) and an id
    already in the outbox is not written again."""
    from patron.services import outbox

    if not warnings:
        return
    found = []
    for d in warnings:
        window = int(str(d["key"]).rsplit(":", 1)[1])
        opened = datetime.combine(date.fromisoformat(str(d["expires_on"])), time(), UTC) - timedelta(
            days=window
        )
        data = {
            "points": d["points"],
            "expires_on": d["expires_on"],
            "days": d["days"],
            "last_chance": d["kind"] == Kind.EXPIRY_LAST_CHANCE,
        }
        # the id sorts by the day the window opened, and a later run finds it again
        found.append(
            (derived_id("evt", opened, f"expiring:{d['member_id']}:{d['key']}"), d["member_id"], data)
        )
    new = outbox.missing_ids(conn, merchant_id=merchant_id, ids=[i for i, _, _ in found])
    outbox.emit_many(
        conn,
        merchant_id=merchant_id,
        events=[(outbox.POINTS_EXPIRING, m, as_of, data) for i, m, data in found if i in new],
        ids=[i for i, _, _ in found if i in new],
    )


def _prefs(row: dict[str, Any] | None) -> rules.Preferences | None:
    if row is None:
        return None
    return rules.Preferences(unsubscribed=row["unsubscribed_at"] is not None, off=frozenset(row["off"]))


# Sending ----------------------------------------------------------------------------------


@dataclass(slots=True)
class Delivery:
    sent: int = 0
    members: int = 0
    failed: int = 0
    skipped: int = 0
    error: str | None = None


def deliver(
    engine: Engine, *, merchant_id: str | None = None, settings: email.MailSettings | None = None
) -> Delivery:
    """Send every queued or failed message (of one merchant, or all), each at most once."""
    settings = settings or email.MailSettings()
    out = Delivery()
    mailed: set[tuple[str, str]] = set()
    after: tuple[str, str] | None = None
    with engine.connect() as conn:
        if not repo.to_send(conn, merchant_id=merchant_id, statuses=rules.RETRY, after=None, limit=1):
            return out  # nothing waits: no need to reach the server
    try:
        mailer = email.Mailer(settings).__enter__()
    except email.MailError as exc:
        out.error = str(exc)
        with engine.begin() as conn:
            out.failed = repo.fail_waiting(conn, merchant_id=merchant_id, error=out.error, at=utcnow())
        return out
    try:
        while True:
            with engine.connect() as conn:
                batch = repo.to_send(
                    conn, merchant_id=merchant_id, statuses=rules.RETRY, after=after, limit=BATCH
                )
            if not batch:
                break
            after = (batch[-1]["merchant_id"], batch[-1]["id"])
            for row in batch:
                outcome = _send_one(engine, mailer, settings, row)
                if outcome == "sent":
                    out.sent += 1
                    mailed.add((row["merchant_id"], row["member_id"]))
                elif outcome == "skipped":
                    out.skipped += 1
                elif outcome is not None:
                    out.failed += 1
                    out.error = outcome
    except email.MailError as exc:  # the connection went away: what is left waits for the next run
        out.error = str(exc)
        with engine.begin() as conn:
            out.failed += repo.fail_waiting(conn, merchant_id=merchant_id, error=out.error, at=utcnow())
    finally:
        mailer.__exit__(None, None, None)
    out.members = len(mailed)
    return out


def _send_one(
    engine: Engine, mailer: email.Mailer, settings: email.MailSettings, row: dict[str, Any]
) -> str | None:
    """'sent', 'skipped', None (another run has it) or the error; raises MailError when the server
    went away (the row is then failed and retried next run)."""
    m, member_id = row["merchant_id"], row["member_id"]
    with engine.begin() as conn:
        prefs = _prefs(repo.get_preferences(conn, m, member_id))
        if row["erased_at"] is not None or not rules.wants(prefs, Kind(row["kind"]), row["member_email"]):
            repo.finish(conn, m, row["id"], status="skipped", at=utcnow(), error=None)
            return "skipped"
        try:
            p = _program(conn, m, row["program_id"], row["as_of"])
            url = unsubscribe_url(conn, merchant_id=m, member_id=member_id, settings=settings)
            subject, text, html = email.render(
                row["kind"], {**row["context"], "unsubscribe_url": url}, p.overrides
            )
        except Exception as exc:  # a template that cannot render: the merchant's to fix, retried
            error = f"cannot render {row['kind']}: {exc}"[:2000]
            repo.finish(conn, m, row["id"], status="failed", at=utcnow(), error=error, attempted=False)
            return error
        if not repo.claim(conn, m, row["id"], statuses=rules.RETRY, at=utcnow()):
            return None
    msg = email.build_message(
        sender=settings.mail_from,
        to=row["member_email"],
        to_name=row["context"].get("member_name"),
        subject=subject,
        text=text,
        html=html,
        unsubscribe_url=url,
        reference=row["id"],
    )
    try:
        mailer.send(msg)
    except email.MailError as exc:
        with engine.begin() as conn:
            repo.finish(conn, m, row["id"], status="failed", at=utcnow(), error=str(exc)[:2000])
        if exc.server_down:
            raise
        return str(exc)
    with engine.begin() as conn:
        repo.finish(conn, m, row["id"], status="sent", at=utcnow())
    return "sent"


# The job ----------------------------------------------------------------------------------


def run_notifications(
    engine: Engine,
    *,
    as_of: datetime,
    merchant_id: str | None = None,
    progress: Callable[[int], None] | None = None,
    settings: email.MailSettings | None = None,
) -> tuple[int, int]:
    """Record every message due at ``as_of``, then send what waits: (members mailed, messages sent).

    When ``PATRON_SMTP_HOST`` is not set, messages are recorded and stay queued (email is off).
    When the server is down or refuses, raises :class:`DeliveryFailed` after recording; nothing
    is lost and the next run retries.
    """
    settings = settings or email.MailSettings()
    with engine.begin() as conn:
        targets = jobs_repo.all_programs(conn, merchant_id)
    for m, program_id in targets:
        with engine.begin() as conn:
            members, _ = record_due(conn, merchant_id=m, program_id=program_id, as_of=as_of)
        if progress and members:
            progress(members)
    if not settings.smtp_host:
        return 0, 0
    done = deliver(engine, merchant_id=merchant_id, settings=settings)
    if done.failed:
        raise DeliveryFailed(
            f"{done.failed} email(s) could not be sent ({done.error}); they stay in the log as "
            f"failed and the next run retries them; {done.sent} sent",
            sent=done.sent,
            failed=done.failed,
        )
    return done.members, done.sent


# Preferences and unsubscribe --------------------------------------------------------------


def _signing_key(conn: Connection, merchant_id: str, settings: email.MailSettings) -> bytes:
    stored = repo.merchant_secret(conn, merchant_id, new=secrets.token_hex(32), at=utcnow())
    pepper = (settings.secret_key or "").encode()
    return hmac.new(pepper, stored.encode(), hashlib.sha256).digest()


def unsubscribe_url(
    conn: Connection, *, merchant_id: str, member_id: str, settings: email.MailSettings | None = None
) -> str:
    settings = settings or email.MailSettings()
    token = rules.sign_token(_signing_key(conn, merchant_id, settings), merchant_id, member_id)
    return f"{settings.public_url.rstrip('/')}/unsubscribe/{token}"


def _member(conn: Connection, merchant_id: str, member_id: str) -> dict[str, Any]:
    member = members_repo.get_member(conn, merchant_id, member_id)
    if member is None:
        raise NotFound(f"member {member_id} not found")
    return member


def get_preferences(conn: Connection, *, merchant_id: str, member_id: str) -> dict[str, Any]:
    member = _member(conn, merchant_id, member_id)
    row = repo.get_preferences(conn, merchant_id, member_id)
    off = row["off"] if row else []
    unsubscribed_at = row["unsubscribed_at"] if row else None
    return {
        "member_id": member_id,
        "email": member["email"],
        "subscribed": unsubscribed_at is None,
        "unsubscribed_at": unsubscribed_at,
        "messages": dict(rules.switches(off, rules.SWITCHES)),
    }


def set_preferences(
    conn: Connection,
    *,
    merchant_id: str,
    member_id: str,
    subscribed: bool | None = None,
    messages: dict[str, bool] | None = None,
) -> dict[str, Any]:
    """Change what a member receives; omitted parts stay as they are."""
    _member(conn, merchant_id, member_id)
    unknown = sorted(set(messages or {}) - set(rules.SWITCHES))
    if unknown:
        raise InvalidInput(
            f"unknown message(s) {', '.join(unknown)}; known: {', '.join(rules.SWITCHES)}", field="messages"
        )
    row = repo.get_preferences(conn, merchant_id, member_id)
    now = utcnow()
    off = set(row["off"]) if row else set()
    for name, on in (messages or {}).items():
        (off.discard if on else off.add)(name)
    unsubscribed_at = row["unsubscribed_at"] if row else None
    if subscribed is not None:
        unsubscribed_at = None if subscribed else (unsubscribed_at or now)
    repo.put_preferences(
        conn, merchant_id, member_id, unsubscribed_at=unsubscribed_at, off=sorted(off), at=now
    )
    return get_preferences(conn, merchant_id=merchant_id, member_id=member_id)


def check_token(conn: Connection, token: str, settings: email.MailSettings | None = None) -> tuple[str, str]:
    """The (merchant_id, member_id) of a valid unsubscribe token; NotFound otherwise."""
    settings = settings or email.MailSettings()
    ids = rules.token_ids(token)
    if ids is None or members_repo.get_member(conn, *ids) is None:
        raise NotFound("this unsubscribe link is not valid")
    if not rules.token_valid(_signing_key(conn, ids[0], settings), token):
        raise NotFound("this unsubscribe link is not valid")
    return ids


def unsubscribe(
    conn: Connection, *, token: str, settings: email.MailSettings | None = None
) -> dict[str, Any]:
    """One-click unsubscribe from every email of the program (idempotent)."""
    merchant_id, member_id = check_token(conn, token, settings)
    return set_preferences(conn, merchant_id=merchant_id, member_id=member_id, subscribed=False)


def log_of_member(conn: Connection, *, merchant_id: str, member_id: str) -> list[dict[str, Any]]:
    """The member's messages, newest first: what was due, its status and attempts."""
    _member(conn, merchant_id, member_id)
    return [
        {
            "id": r["id"],
            "kind": r["kind"],
            "key": r["key"],
            "status": r["status"],
            "attempts": r["attempts"],
            "last_error": r["last_error"],
            "created_at": r["created_at"],
            "sent_at": r["sent_at"],
        }
        for r in repo.of_member(conn, merchant_id, member_id)
    ]
