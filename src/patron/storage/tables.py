"""The schema. ``merchant_id`` leads every primary key and every index, ready for sharding.

Ledger tables (``journals``, ``postings``, ``lots``, ``qualifications``) are append-only: rows are
inserted, never updated or deleted. ``member_balances`` is a cache of sums of postings, updated in
the same transaction as the postings and checked by ``patron verify``.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    Date,
    DateTime,
    Dialect,
    ForeignKeyConstraint,
    Index,
    Integer,
    MetaData,
    PrimaryKeyConstraint,
    String,
    Table,
    Text,
    UniqueConstraint,
    true,
)
from sqlalchemy.types import TypeDecorator


class UTCDateTime(TypeDecorator[datetime]):
    """Aware UTC datetimes in, aware UTC datetimes out, on SQLite and PostgreSQL alike."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> Any:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        parsed: datetime = datetime.fromisoformat(value) if isinstance(value, str) else value
        if parsed.tzinfo is None:
            return parsed.replace(tzinfo=UTC)
        return parsed.astimezone(UTC)


metadata = MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)


def _ts(name: str, nullable: bool = False) -> Column[Any]:
    return Column(name, UTCDateTime(), nullable=nullable)


ID = String(40)

merchants = Table(
    "merchants",
    metadata,
    Column("id", ID, primary_key=True),
    Column("name", String(200), nullable=False),
    _ts("created_at"),
)

api_keys = Table(
    "api_keys",
    metadata,
    Column("merchant_id", ID, nullable=False),
    Column("id", ID, nullable=False),
    Column("name", String(200), nullable=False),
    Column("prefix", String(20), nullable=False),
    Column("key_hash", String(64), nullable=False, unique=True),
    Column("scopes", String(200), nullable=False),
    _ts("created_at"),
    _ts("revoked_at", nullable=True),
    PrimaryKeyConstraint("merchant_id", "id"),
    ForeignKeyConstraint(["merchant_id"], ["merchants.id"]),
)

locations = Table(
    "locations",
    metadata,
    Column("merchant_id", ID, nullable=False),
    Column("id", String(100), nullable=False),
    Column("name", String(200), nullable=False),
    _ts("created_at"),
    PrimaryKeyConstraint("merchant_id", "id"),
    ForeignKeyConstraint(["merchant_id"], ["merchants.id"]),
)

programs = Table(
    "programs",
    metadata,
    Column("merchant_id", ID, nullable=False),
    Column("id", ID, nullable=False),
    Column("name", String(200), nullable=False),
    _ts("created_at"),
    PrimaryKeyConstraint("merchant_id", "id"),
    ForeignKeyConstraint(["merchant_id"], ["merchants.id"]),
)

program_versions = Table(
    "program_versions",
    metadata,
    Column("merchant_id", ID, nullable=False),
    Column("program_id", ID, nullable=False),
    Column("version", Integer, nullable=False),
    _ts("effective_from"),
    Column("body", JSON, nullable=False),
    _ts("created_at"),
    PrimaryKeyConstraint("merchant_id", "program_id", "version"),
    ForeignKeyConstraint(["merchant_id", "program_id"], ["programs.merchant_id", "programs.id"]),
)

members = Table(
    "members",
    metadata,
    Column("merchant_id", ID, nullable=False),
    Column("id", ID, nullable=False),
    Column("program_id", ID, nullable=False),
    Column("external_id", String(200)),
    Column("email", String(320)),
    Column("email_key", String(320)),
    Column("phone", String(20)),
    Column("name", String(200)),
    Column("birthday", Date),
    Column("card_number", String(20), nullable=False),
    Column("referral_code", String(20), nullable=False),
    Column("referred_by", ID),
    Column("status", String(20), nullable=False),
    Column("marketing_consent", Boolean, nullable=False, default=False),
    Column("attributes", JSON, nullable=False),
    _ts("enrolled_at"),
    _ts("created_at"),
    _ts("updated_at"),
    _ts("erased_at", nullable=True),
    PrimaryKeyConstraint("merchant_id", "id"),
    ForeignKeyConstraint(["merchant_id", "program_id"], ["programs.merchant_id", "programs.id"]),
    UniqueConstraint("merchant_id", "program_id", "email_key"),
    UniqueConstraint("merchant_id", "program_id", "phone"),
    UniqueConstraint("merchant_id", "program_id", "external_id"),
    UniqueConstraint("merchant_id", "card_number"),
    UniqueConstraint("merchant_id", "referral_code"),
)

member_balances = Table(
    "member_balances",
    metadata,
    Column("merchant_id", ID, nullable=False),
    Column("member_id", ID, nullable=False),
    Column("available", BigInteger, nullable=False, default=0),
    Column("pending", BigInteger, nullable=False, default=0),
    Column("reserved", BigInteger, nullable=False, default=0),
    Column("debt", BigInteger, nullable=False, default=0),
    Column("lifetime_earned", BigInteger, nullable=False, default=0),
    Column("expired", BigInteger, nullable=False, default=0),
    Column("redeemed", BigInteger, nullable=False, default=0),
    PrimaryKeyConstraint("merchant_id", "member_id"),
    ForeignKeyConstraint(["merchant_id", "member_id"], ["members.merchant_id", "members.id"]),
)

events = Table(
    "events",
    metadata,
    Column("merchant_id", ID, nullable=False),
    Column("id", ID, nullable=False),
    Column("external_id", String(200), nullable=False),
    Column("program_id", ID, nullable=False),
    Column("program_version", Integer, nullable=False),
    Column("member_id", ID, nullable=False),
    Column("type", String(100), nullable=False),
    _ts("occurred_at"),
    _ts("received_at"),
    Column("refers_to", ID),
    Column("location_id", String(100)),
    Column("points", BigInteger, nullable=False),
    Column("body_hash", String(64), nullable=False),
    Column("body", JSON, nullable=False),
    Column("result", JSON, nullable=False),
    PrimaryKeyConstraint("merchant_id", "id"),
    UniqueConstraint("merchant_id", "external_id"),
    Index(None, "merchant_id", "member_id", "occurred_at"),
    Index(None, "merchant_id", "refers_to"),
    ForeignKeyConstraint(["merchant_id", "member_id"], ["members.merchant_id", "members.id"]),
)

event_lines = Table(
    "event_lines",
    metadata,
    Column("merchant_id", ID, nullable=False),
    Column("event_id", ID, nullable=False),
    Column("line_id", String(100), nullable=False),
    Column("quantity", BigInteger, nullable=False),
    Column("points", BigInteger, nullable=False),
    Column("amount", BigInteger, nullable=False),
    PrimaryKeyConstraint("merchant_id", "event_id", "line_id"),
)

event_rules = Table(
    "event_rules",
    metadata,
    Column("merchant_id", ID, nullable=False),
    Column("event_id", ID, nullable=False),
    Column("rule_id", String(100), nullable=False),
    Column("points", BigInteger, nullable=False),
    PrimaryKeyConstraint("merchant_id", "event_id", "rule_id"),
)

qualifications = Table(
    "qualifications",
    metadata,
    Column("merchant_id", ID, nullable=False),
    Column("event_id", ID, nullable=False),
    Column("member_id", ID, nullable=False),
    _ts("period_at"),
    _ts("recorded_at"),
    Column("spend", BigInteger, nullable=False),
    Column("status_points", BigInteger, nullable=False),
    Column("visits", BigInteger, nullable=False),
    Column("status_miles", BigInteger, nullable=False, server_default="0"),
    Column("segments", BigInteger, nullable=False, server_default="0"),
    PrimaryKeyConstraint("merchant_id", "event_id"),
    # recorded_at too: an event reads its member's rows from a tier checkpoint's period on, and
    # older rows recorded after the checkpoint, the latter filtered in the index
    Index(None, "merchant_id", "member_id", "period_at", "recorded_at"),
)

# Where a member's tier fold can resume (domain.tiers.Checkpoint): a cache of their history, a
# row for the start of each period placed, replaced when rows of an earlier period void it;
# ``key`` is a digest of what the fold depends on besides the rows (tier rules, time zone,
# enrolment) and ``given`` of their tier assignments: a row whose digests differ is ignored.
tier_checkpoints = Table(
    "tier_checkpoints",
    metadata,
    Column("merchant_id", ID, nullable=False),
    Column("member_id", ID, nullable=False),
    _ts("period_start"),
    Column("key", String(64), nullable=False),
    Column("given", String(64), nullable=False),
    Column("earned_id", String(100)),
    Column("level_id", String(100)),
    _ts("since"),
    Column("reason", Text, nullable=False),
    _ts("seen_upto"),
    _ts("written_at"),
    PrimaryKeyConstraint("merchant_id", "member_id", "period_start"),
    ForeignKeyConstraint(["merchant_id", "member_id"], ["members.merchant_id", "members.id"]),
)

journals = Table(
    "journals",
    metadata,
    Column("merchant_id", ID, nullable=False),
    Column("id", ID, nullable=False),
    Column("member_id", ID, nullable=False),
    Column("program_id", ID, nullable=False),
    Column("program_version", Integer, nullable=False),
    Column("kind", String(20), nullable=False),
    Column("reason", Text, nullable=False),
    Column("event_id", ID),
    _ts("occurred_at"),
    _ts("created_at"),
    PrimaryKeyConstraint("merchant_id", "id"),
    Index(None, "merchant_id", "member_id", "occurred_at"),
    Index(None, "merchant_id", "event_id"),
)

postings = Table(
    "postings",
    metadata,
    Column("merchant_id", ID, nullable=False),
    Column("id", ID, nullable=False),
    Column("journal_id", ID, nullable=False),
    Column("member_id", ID, nullable=False),
    Column("account", String(30), nullable=False),
    Column("amount", BigInteger, nullable=False),
    Column("lot_id", ID),
    _ts("occurred_at"),
    PrimaryKeyConstraint("merchant_id", "id"),
    ForeignKeyConstraint(["merchant_id", "journal_id"], ["journals.merchant_id", "journals.id"]),
    Index(None, "merchant_id", "member_id", "occurred_at"),
    Index(None, "merchant_id", "member_id", "lot_id"),
    Index(None, "merchant_id", "journal_id"),
)

lots = Table(
    "lots",
    metadata,
    Column("merchant_id", ID, nullable=False),
    Column("id", ID, nullable=False),
    Column("member_id", ID, nullable=False),
    Column("journal_id", ID, nullable=False),
    Column("points", BigInteger, nullable=False),
    _ts("earned_at"),
    _ts("available_from"),
    _ts("expires_at", nullable=True),
    PrimaryKeyConstraint("merchant_id", "id"),
    Index(None, "merchant_id", "member_id", "expires_at"),
    Index(None, "merchant_id", "available_from"),
)

idempotency_keys = Table(
    "idempotency_keys",
    metadata,
    Column("merchant_id", ID, nullable=False),
    Column("key", String(255), nullable=False),
    Column("method", String(10), nullable=False),
    Column("path", String(500), nullable=False),
    Column("body_hash", String(64), nullable=False),
    Column("status_code", Integer, nullable=False),
    Column("response", JSON, nullable=False),
    _ts("created_at"),
    PrimaryKeyConstraint("merchant_id", "key"),
)

redemptions = Table(
    "redemptions",
    metadata,
    Column("merchant_id", ID, nullable=False),
    Column("id", ID, nullable=False),
    Column("member_id", ID, nullable=False),
    Column("program_id", ID, nullable=False),
    Column("reward_id", String(100), nullable=False),
    Column("code", String(40), nullable=False),
    Column("points", BigInteger, nullable=False),
    Column("status", String(20), nullable=False),
    Column("grants", JSON, nullable=False),
    Column("location_id", String(100)),
    Column("reserve_journal_id", ID),  # none for a reward granted free (a filled punch card)
    Column("settle_journal_id", ID),
    Column("fulfilment_status", String(20)),
    _ts("reserved_at"),
    _ts("expires_at"),
    _ts("settled_at", nullable=True),
    PrimaryKeyConstraint("merchant_id", "id"),
    UniqueConstraint("merchant_id", "code"),
    Index(None, "merchant_id", "member_id", "reserved_at"),
    Index(None, "merchant_id", "program_id", "reward_id", "status"),
    Index(None, "merchant_id", "status", "expires_at"),
    ForeignKeyConstraint(["merchant_id", "member_id"], ["members.merchant_id", "members.id"]),
)

tier_assignments = Table(
    "tier_assignments",
    metadata,
    Column("merchant_id", ID, nullable=False),
    Column("id", ID, nullable=False),
    Column("member_id", ID, nullable=False),
    Column("tier_id", String(100), nullable=False),
    Column("reason", Text, nullable=False),
    _ts("starts_at"),
    _ts("ends_at", nullable=True),
    _ts("created_at"),
    # held: the level stays the member's after the assignment ends, until the period rules move
    # them (manual tiers); not held: a floor only while in force (a paid plan's tier)
    Column("held", Boolean, nullable=False, server_default=true()),
    PrimaryKeyConstraint("merchant_id", "id"),
    Index(None, "merchant_id", "member_id"),
    ForeignKeyConstraint(["merchant_id", "member_id"], ["members.merchant_id", "members.id"]),
)

member_milestones = Table(
    "member_milestones",
    metadata,
    Column("merchant_id", ID, nullable=False),
    Column("member_id", ID, nullable=False),
    Column("milestone_id", String(100), nullable=False),
    _ts("reached_at"),
    Column("points", BigInteger, nullable=False),
    Column("journal_id", ID),
    Column("details", JSON, nullable=False),
    _ts("created_at"),
    PrimaryKeyConstraint("merchant_id", "member_id", "milestone_id"),
    ForeignKeyConstraint(["merchant_id", "member_id"], ["members.merchant_id", "members.id"]),
)

job_runs = Table(
    "job_runs",
    metadata,
    Column("id", ID, primary_key=True),
    Column("name", String(50), nullable=False),
    Column("merchant_id", ID),
    _ts("as_of"),
    _ts("started_at"),
    _ts("finished_at", nullable=True),
    Column("status", String(20), nullable=False),
    Column("result", JSON, nullable=False),
    Column("error", Text),
    Index(None, "name", "started_at"),
)

tier_changes = Table(
    "tier_changes",
    metadata,
    Column("merchant_id", ID, nullable=False),
    Column("member_id", ID, nullable=False),
    _ts("at"),
    Column("to_tier", String(100), nullable=False),
    Column("from_tier", String(100)),
    Column("reason", Text, nullable=False),
    Column("cause", String(20), nullable=False),
    Column("job_run_id", ID),
    _ts("recorded_at"),
    PrimaryKeyConstraint("merchant_id", "member_id", "at", "to_tier"),
)

referrals = Table(
    "referrals",
    metadata,
    Column("merchant_id", ID, nullable=False),
    Column("referee_id", ID, nullable=False),
    Column("referrer_id", ID, nullable=False),
    Column("status", String(20), nullable=False),  # completed | revoked | review | rejected
    Column("event_id", ID, nullable=False),
    Column("referrer_points", BigInteger, nullable=False),
    Column("referee_points", BigInteger, nullable=False),
    _ts("completed_at"),  # when the qualifying purchase happened
    _ts("revoked_at", nullable=True),
    Column("reason", String(100)),  # why it went to review
    _ts("reviewed_at", nullable=True),  # when it was approved or rejected
    Column("milestones", JSON),  # referral milestones this completion credited to the referrer
    PrimaryKeyConstraint("merchant_id", "referee_id"),
    Index(None, "merchant_id", "referrer_id"),
)
