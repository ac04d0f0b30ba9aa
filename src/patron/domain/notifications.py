"""Which member emails are due, as pure functions over plain data.

The notifications job asks, for a run time ``as_of``: which messages should exist by now? Each
due message has a ``(kind, key)`` that names it for good (the earning journal, the tier change,
the lot expiry date and warning window, the digest month, the episode of inactivity), so that
the log's UNIQUE ``(merchant_id, member_id, kind, key)`` records it once however often the job
runs, and a message is never sent twice.

Rules:

- **Event messages** (welcome, points earned, tier change, milestone, reward issued) are due for
  things that happened in ``(as_of - max_age, as_of]``: news older than ``max_age`` is stale and
  is never sent (this also keeps a first run on an old database from mailing its whole history).
- **Expiry warnings**: for windows ``[30, 7]`` (days), the points of a member that expire on one
  day are announced once per window, when ``expires_at - window <= as_of < expires_at``. When a
  run finds several windows open at once (a lot earned late, or a job that did not run), only the
  most urgent (smallest) window is sent. The smallest window is the "last chance".
- **Monthly digest**: from ``digest_day`` of a month (program timezone) the digest of the month
  before is due, keyed by that month (``2026-12``), to members with points available; only the
  latest month is ever due.
- **Win-back**: a member whose last activity is ``days`` or more before ``as_of`` is due one
  win-back for that episode, keyed by the last activity's date; activity again, then another
  silence, makes a new episode.
- **Preferences**: no email address, unsubscribed, or that kind switched off: nothing is due.

Unsubscribe links carry a token: ``merchant_id.member_id.signature`` where the signature is an
HMAC-SHA256 of the ids, so that only Patron can make a valid link.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from enum import StrEnum
from zoneinfo import ZoneInfo


class Kind(StrEnum):
    WELCOME = "welcome"
    POINTS_EARNED = "points_earned"
    TIER_UP = "tier_up"
    TIER_DOWN = "tier_down"
    MILESTONE = "milestone"
    REWARD_ISSUED = "reward_issued"
    EXPIRY_WARNING = "expiry_warning"
    EXPIRY_LAST_CHANCE = "expiry_last_chance"
    MONTHLY_DIGEST = "monthly_digest"
    WIN_BACK = "win_back"


class Status(StrEnum):
    QUEUED = "queued"  # recorded, not yet handed to the SMTP server
    SENDING = "sending"  # handed over; if a crash leaves it here it is never retried (no duplicates)
    SENT = "sent"
    FAILED = "failed"  # the SMTP server refused or was down; the next run retries it
    SKIPPED = "skipped"  # the member unsubscribed or lost their email before it could be sent


RETRY = (Status.QUEUED, Status.FAILED)

# What a member can switch off one by one (tier_changed covers up and down; expiry covers the
# warnings and the last chance).
SWITCHES = (
    "welcome",
    "points_earned",
    "tier_changed",
    "milestone",
    "reward_issued",
    "expiry",
    "monthly_digest",
    "win_back",
)


@dataclass(frozen=True, slots=True)
class Preferences:
    """A member's choices: unsubscribed from everything, or some kinds switched off."""

    unsubscribed: bool = False
    off: frozenset[str] = field(default_factory=frozenset)


def wants(prefs: Preferences | None, kind: Kind, email: str | None) -> bool:
    """Whether a member gets a message of ``kind`` at all."""
    if not email:
        return False
    if prefs is None:
        return True
    if prefs.unsubscribed:
        return False
    # Switching off "tier_changed" or "expiry" covers both directions / both warnings.
    family = {
        Kind.TIER_UP: "tier_changed",
        Kind.TIER_DOWN: "tier_changed",
        Kind.EXPIRY_WARNING: "expiry",
        Kind.EXPIRY_LAST_CHANCE: "expiry",
    }.get(kind)
    return kind.value not in prefs.off and (family is None or family not in prefs.off)


def expiry_window(expires_at: datetime, *, as_of: datetime, windows: Iterable[int]) -> int | None:
    """The most urgent warning window (days) open at ``as_of`` for points expiring at
    ``expires_at``, or None when none is open (too early, or already expired).

    >>> from datetime import UTC
    >>> exp = datetime(2027, 1, 31, tzinfo=UTC)
    >>> expiry_window(exp, as_of=datetime(2027, 1, 1, tzinfo=UTC), windows=[30, 7])
    30
    >>> expiry_window(exp, as_of=datetime(2027, 1, 25, tzinfo=UTC), windows=[30, 7])
    7
    >>> expiry_window(exp, as_of=datetime(2026, 12, 31, tzinfo=UTC), windows=[30, 7]) is None
    True
    """
    if not as_of < expires_at:
        return None
    open_ = [w for w in windows if expires_at - timedelta(days=w) <= as_of]
    return min(open_) if open_ else None


def expiry_kind(window: int, windows: Iterable[int]) -> Kind:
    """The smallest window is the last chance; the others are warnings."""
    return Kind.EXPIRY_LAST_CHANCE if window == min(windows) else Kind.EXPIRY_WARNING


def local_day(at: datetime, tz: ZoneInfo) -> date:
    return at.astimezone(tz).date()


@dataclass(frozen=True, slots=True)
class DigestPeriod:
    key: str  # "2026-12": the month the digest reports on
    start: datetime  # aware, start of that month in the program's timezone
    end: datetime  # aware, start of the next month (exclusive)


def digest_period(as_of: datetime, *, tz: ZoneInfo, day: int) -> DigestPeriod:
    """The month whose digest is due at ``as_of``: the month before the latest ``day`` of a month
    that has come (program timezone).

    >>> from datetime import UTC
    >>> digest_period(datetime(2027, 1, 1, tzinfo=UTC), tz=ZoneInfo("UTC"), day=1).key
    '2026-12'
    >>> digest_period(datetime(2027, 1, 2, tzinfo=UTC), tz=ZoneInfo("UTC"), day=3).key
    '2026-11'
    """
    local = as_of.astimezone(tz)
    year, month = local.year, local.month
    if local.day < day:
        year, month = (year, month - 1) if month > 1 else (year - 1, 12)
    # the reported month is the one before (year, month)
    ry, rm = (year, month - 1) if month > 1 else (year - 1, 12)
    start = datetime.combine(date(ry, rm, 1), time(), tzinfo=tz)
    end = datetime.combine(date(year, month, 1), time(), tzinfo=tz)
    return DigestPeriod(f"{ry:04d}-{rm:02d}", start, end)


def win_back_key(last_activity: datetime, *, as_of: datetime, days: int) -> str | None:
    """The episode key when a member has been silent ``days`` or more, else None."""
    if last_activity > as_of - timedelta(days=days):
        return None
    return last_activity.date().isoformat()


def tier_direction(from_tier: str | None, to_tier: str, order: list[str]) -> Kind:
    """Up or down, by the order of the program's levels (unknown levels count as lowest)."""
    rank = {t: i for i, t in enumerate(order)}
    before = rank.get(from_tier, -1) if from_tier is not None else -1
    return Kind.TIER_UP if rank.get(to_tier, -1) >= before else Kind.TIER_DOWN


# Unsubscribe tokens -----------------------------------------------------------------------


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def sign_token(key: bytes, merchant_id: str, member_id: str) -> str:
    """``merchant.member.signature``; ids are ASCII without dots."""
    mac = hmac.new(key, f"unsubscribe:{merchant_id}:{member_id}".encode(), hashlib.sha256).digest()
    return f"{merchant_id}.{member_id}.{_b64(mac)}"


def token_ids(token: str) -> tuple[str, str] | None:
    """The (merchant_id, member_id) a token claims, before checking its signature."""
    parts = token.split(".")
    if len(parts) != 3 or not all(parts) or any(len(p) > 100 for p in parts):
        return None
    return parts[0], parts[1]


def token_valid(key: bytes, token: str) -> bool:
    ids = token_ids(token)
    return ids is not None and hmac.compare_digest(sign_token(key, *ids).encode(), token.encode())


def switches(off: Iterable[str], known: Iterable[str]) -> Mapping[str, bool]:
    """Preferences as the API shows them: every switchable message and whether it is on."""
    off_set = set(off)
    return {k: k not in off_set for k in known}
