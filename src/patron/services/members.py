"""Members: enrolment, lookup, profile changes, status, export and erasure."""

from __future__ import annotations

from datetime import date, datetime
from typing import Annotated, Any, Literal

import phonenumbers
from email_validator import EmailNotValidError, validate_email
from pydantic import BaseModel, ConfigDict, Field, field_validator
from sqlalchemy import Connection

from patron.domain.errors import Conflict, DuplicateMember, InvalidInput, NotFound
from patron.domain.identity import card_number, normalise_email
from patron.services import outbox
from patron.services.clock import utcnow
from patron.services.instant import FUTURE_SLACK, RANGE, in_range
from patron.storage import ledger as ledger_repo
from patron.storage import members as repo
from patron.storage import programs as programs_repo
from patron.storage.ids import new_id, random_code, random_digits

Status = Literal["active", "suspended", "closed"]
Name = Annotated[str, Field(min_length=1, max_length=200)]
ExternalId = Annotated[str, Field(min_length=1, max_length=200)]


def normalise_phone(value: str) -> str:
    """E.164, or :class:`ValueError`. Numbers must carry their country code (``+44...``)."""
    try:
        number = phonenumbers.parse(value, None)
    except phonenumbers.NumberParseException:
        raise ValueError("phone must be a number in international format, e.g. +14155550123")
    if not phonenumbers.is_valid_number(number):
        raise ValueError("phone is not a valid number")
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


def check_email(value: str) -> str:
    try:
        return validate_email(value, check_deliverability=False).normalized
    except EmailNotValidError as exc:
        raise ValueError(f"email is not valid: {exc}")


class MemberFields(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    email: Annotated[str, Field(max_length=320)] | None = None
    phone: Annotated[str, Field(max_length=40)] | None = None
    name: Name | None = None
    external_id: ExternalId | None = None
    birthday: date | None = None
    marketing_consent: bool | None = None
    attributes: dict[str, str | int | float | bool | None] | None = None

    @field_validator("email")
    @classmethod
    def _email(cls, v: str | None) -> str | None:
        return check_email(v) if v else None

    @field_validator("phone")
    @classmethod
    def _phone(cls, v: str | None) -> str | None:
        return normalise_phone(v) if v else None

    @field_validator("birthday")
    @classmethod
    def _birthday(cls, v: date | None) -> date | None:
        if v is not None and not (date(1900, 1, 1) <= v <= date.today()):  # noqa: DTZ011
            raise ValueError("birthday must be between 1900-01-01 and today")
        return v


class MemberCreate(MemberFields):
    """Enrol a member. Give at least one of email, phone or external_id to find them again."""

    program_id: Annotated[str, Field(min_length=1, max_length=40)]
    referral_code: Annotated[str, Field(max_length=20)] | None = None
    enrolled_at: datetime | None = Field(
        None, description="When the member joined (for imports); defaults to now."
    )


def check_enrolled_at(enrolled_at: datetime, now: datetime) -> None:
    """An enrolment time is aware, no earlier than 1970 and not in the future."""
    if enrolled_at.tzinfo is None:
        raise InvalidInput("enrolled_at needs a timezone offset", field="enrolled_at")
    if not in_range(enrolled_at):
        raise InvalidInput(f"enrolled_at must lie {RANGE}", field="enrolled_at")
    if enrolled_at > now + FUTURE_SLACK:
        raise InvalidInput("enrolled_at is in the future", field="enrolled_at")


class MemberUpdate(MemberFields):
    """Change profile fields or status. ``null`` clears a field; omitted fields are kept."""

    status: Status | None = None


def _check_unique(
    conn: Connection, merchant_id: str, program_id: str, values: dict[str, Any], exclude: str | None
) -> None:
    for column, label in (
        ("email_key", "email"),
        ("phone", "phone"),
        ("external_id", "external_id"),
    ):
        value = values.get(column)
        if value is not None and repo.clash(conn, merchant_id, program_id, column, value, exclude):
            raise DuplicateMember(f"a member with this {label} already exists in the program", field=label)


def outbox_member(member: dict[str, Any]) -> dict[str, Any]:
    """What a business event says about a member (for CRM sync)."""
    return {
        "member": {
            k: member.get(k)
            for k in ("id", "program_id", "external_id", "email", "phone", "name", "card_number", "status")
        }
    }


def enrol(conn: Connection, *, merchant_id: str, data: MemberCreate) -> dict[str, Any]:
    if programs_repo.get_program(conn, merchant_id, data.program_id) is None:
        raise NotFound(f"program {data.program_id} not found")
    referred_by = None
    if data.referral_code:
        found = repo.find_members(
            conn,
            merchant_id,
            program_id=data.program_id,
            referral_code=data.referral_code.upper(),
            limit=1,
        )
        if not found:
            raise InvalidInput(f"unknown referral code {data.referral_code!r}", field="referral_code")
        referred_by = found[0]["id"]
    now = utcnow()
    enrolled_at = data.enrolled_at or now
    check_enrolled_at(enrolled_at, now)
    values = {
        "email": data.email,
        "email_key": normalise_email(data.email) if data.email else None,
        "phone": data.phone,
        "external_id": data.external_id,
    }
    _check_unique(conn, merchant_id, data.program_id, values, None)
    member_id = new_id("mem")
    card = _unique(conn, merchant_id, "card_number", lambda: card_number("8", random_digits(14)))
    code = _unique(conn, merchant_id, "referral_code", lambda: random_code(8))
    repo.insert_member(
        conn,
        merchant_id=merchant_id,
        id=member_id,
        program_id=data.program_id,
        name=data.name,
        birthday=data.birthday,
        card_number=card,
        referral_code=code,
        referred_by=referred_by,
        status="active",
        marketing_consent=bool(data.marketing_consent),
        attributes=data.attributes or {},
        enrolled_at=enrolled_at,
        created_at=now,
        updated_at=now,
        erased_at=None,
        **values,
    )
    ledger_repo.create_balances(conn, merchant_id, member_id)
    member = get_member(conn, merchant_id=merchant_id, member_id=member_id)
    outbox.emit(
        conn,
        merchant_id=merchant_id,
        type=outbox.MEMBER_ENROLLED,
        member_id=member_id,
        occurred_at=enrolled_at,
        data=outbox_member(member),
    )
    return member


def enrol_many(
    conn: Connection, *, merchant_id: str, program_id: str, people: list[tuple[str, datetime]]
) -> dict[str, str]:
    """Enrol people known only by an external id (an import's new customers), each at its
    ``enrolled_at``, in a few statements: what :func:`enrol` does for each, with their
    ``member.enrolled`` events. Member ids by external id. The caller has checked that no member
    has these external ids; one taken meanwhile raises ``IntegrityError`` (nothing is written
    if the caller's savepoint rolls back)."""
    if not people:
        return {}
    if programs_repo.get_program(conn, merchant_id, program_id) is None:
        raise NotFound(f"program {program_id} not found")
    now = utcnow()
    for _, enrolled_at in people:
        check_enrolled_at(enrolled_at, now)
    cards = _unique_many(
        conn, merchant_id, "card_number", len(people), lambda: card_number("8", random_digits(14))
    )
    codes = _unique_many(conn, merchant_id, "referral_code", len(people), lambda: random_code(8))
    rows: list[dict[str, Any]] = [
        {
            "merchant_id": merchant_id,
            "id": new_id("mem"),
            "program_id": program_id,
            "external_id": external_id,
            "email": None,
            "email_key": None,
            "phone": None,
            "name": None,
            "birthday": None,
            "card_number": card,
            "referral_code": code,
            "referred_by": None,
            "status": "active",
            "marketing_consent": False,
            "attributes": {},
            "enrolled_at": enrolled_at,
            "created_at": now,
            "updated_at": now,
            "erased_at": None,
        }
        for (external_id, enrolled_at), card, code in zip(people, cards, codes, strict=True)
    ]
    repo.insert_members(conn, rows)
    ledger_repo.create_balances_many(conn, merchant_id, [r["id"] for r in rows])
    outbox.emit_many(
        conn,
        merchant_id=merchant_id,
        events=[(outbox.MEMBER_ENROLLED, r["id"], r["enrolled_at"], outbox_member(r)) for r in rows],
    )
    return {str(r["external_id"]): str(r["id"]) for r in rows}


def _unique_many(conn: Connection, merchant_id: str, column: str, n: int, make: Any) -> list[str]:
    """``n`` new values for a column unique per merchant, none taken and no two alike."""
    values: list[str] = [make() for _ in range(n)]
    for _ in range(20):
        clashing = repo.taken(conn, merchant_id, column, values)
        seen: set[str] = set()
        redo = []
        for i, v in enumerate(values):
            if v in clashing or v in seen:
                redo.append(i)
            seen.add(v)
        if not redo:
            return values
        for i in redo:
            values[i] = make()
    raise Conflict(f"could not generate a unique {column}")


def _unique(conn: Connection, merchant_id: str, column: str, make: Any) -> str:
    return _unique_many(conn, merchant_id, column, 1, make)[0]


def get_many(conn: Connection, *, merchant_id: str, member_ids: list[str]) -> dict[str, dict[str, Any]]:
    """The merchant's members among ``member_ids`` (unknown ids left out), by id."""
    return repo.get_many(conn, merchant_id, member_ids)


def get_member(conn: Connection, *, merchant_id: str, member_id: str) -> dict[str, Any]:
    row = repo.get_member(conn, merchant_id, member_id)
    if row is None:
        raise NotFound(f"member {member_id} not found")
    return row


def find(
    conn: Connection,
    *,
    merchant_id: str,
    email: str | None = None,
    phone: str | None = None,
    card_number: str | None = None,
    external_id: str | None = None,
    program_id: str | None = None,
    limit: int = 100,
) -> list[dict[str, Any]]:
    """Members by any identifier. Emails compare case-insensitively; phones in E.164."""
    where: dict[str, Any] = {"program_id": program_id}
    if email is not None:
        where["email_key"] = normalise_email(email)
    if phone is not None:
        try:
            where["phone"] = normalise_phone(phone)
        except ValueError as exc:
            raise InvalidInput(str(exc), field="phone")
    if card_number is not None:
        where["card_number"] = card_number.replace(" ", "")
    if external_id is not None:
        where["external_id"] = external_id
    return repo.find_members(conn, merchant_id, limit=limit, **where)


def update(conn: Connection, *, merchant_id: str, member_id: str, data: MemberUpdate) -> dict[str, Any]:
    member = get_member(conn, merchant_id=merchant_id, member_id=member_id)
    changes = data.model_dump(exclude_unset=True)
    if member["status"] == "closed" and changes:
        raise Conflict("the member is closed; a closed membership cannot be changed")
    if "email" in changes:
        changes["email_key"] = normalise_email(changes["email"]) if changes["email"] else None
    if "attributes" in changes and changes["attributes"] is None:
        changes["attributes"] = {}
    if "marketing_consent" in changes and changes["marketing_consent"] is None:
        changes["marketing_consent"] = False
    _check_unique(conn, merchant_id, member["program_id"], changes, member_id)
    if changes:
        now = utcnow()
        repo.update_member(conn, merchant_id, member_id, updated_at=now, **changes)
        updated = get_member(conn, merchant_id=merchant_id, member_id=member_id)
        outbox.emit(
            conn,
            merchant_id=merchant_id,
            type=outbox.MEMBER_UPDATED,
            member_id=member_id,
            occurred_at=now,
            data={**outbox_member(updated), "changed": sorted(k for k in changes if k != "email_key")},
        )
        return updated
    return get_member(conn, merchant_id=merchant_id, member_id=member_id)


def erase(conn: Connection, *, merchant_id: str, member_id: str) -> dict[str, Any]:
    """Anonymise personal data; the ledger (which holds none) stays whole and auditable."""
    get_member(conn, merchant_id=merchant_id, member_id=member_id)
    now = utcnow()
    repo.update_member(
        conn,
        merchant_id,
        member_id,
        email=None,
        email_key=None,
        phone=None,
        name=None,
        birthday=None,
        external_id=None,
        attributes={},
        marketing_consent=False,
        status="closed",
        erased_at=now,
        updated_at=now,
    )
    erased = get_member(conn, merchant_id=merchant_id, member_id=member_id)
    # what was stored for replays and for other systems said who they were: it is forgotten too
    for table, rows in repo.stored_answers_of(conn, merchant_id, member_id).items():
        changed = [(k, new) for k, old in rows if (new := _forget(old, member_id, erased)) != old]
        repo.replace_stored_answers(conn, merchant_id, table, changed)
    outbox.emit(  # other systems should forget the person too
        conn,
        merchant_id=merchant_id,
        type=outbox.MEMBER_UPDATED,
        member_id=member_id,
        occurred_at=now,
        data={**outbox_member(erased), "changed": ["erased"], "erased": True},
    )
    return erased


#: a member's personal fields: what erasure blanks wherever a stored answer shows the member
PERSONAL = ("external_id", "email", "phone", "name", "birthday", "attributes", "marketing_consent")


def _forget(value: Any, member_id: str, erased: dict[str, Any]) -> Any:
    """``value`` (stored JSON) with every object that is the member (its ``id`` theirs) showing
    the erased member's personal fields instead."""
    if isinstance(value, list):
        return [_forget(v, member_id, erased) for v in value]
    if not isinstance(value, dict):
        return value
    out = {k: _forget(v, member_id, erased) for k, v in value.items()}
    if out.get("id") == member_id:
        for field in PERSONAL:
            if field in out:
                out[field] = erased.get(field)
    return out


PUBLIC_FIELDS = (
    "id",
    "program_id",
    "external_id",
    "email",
    "phone",
    "name",
    "birthday",
    "card_number",
    "referral_code",
    "status",
    "marketing_consent",
    "attributes",
    "enrolled_at",
    "created_at",
    "updated_at",
    "erased_at",
)


def member_view(
    conn: Connection, *, merchant_id: str, member: dict[str, Any], as_of: datetime | None = None
) -> dict[str, Any]:
    """A member as the API shows it: profile, points and tier, now or as of a past instant."""
    from patron.services.ledger import balances, points_view
    from patron.services.programs import program_at
    from patron.services.tiers import tier_state, tier_summary

    at = as_of or utcnow()
    program, _ = program_at(conn, merchant_id=merchant_id, program_id=member["program_id"], at=at)
    state = tier_state(conn, merchant_id=merchant_id, member=member, program=program, as_of=at)
    b = balances(conn, merchant_id=merchant_id, member_id=member["id"], as_of=as_of)
    view = {k: member[k] for k in PUBLIC_FIELDS}
    view["referred_by"] = member["referred_by"]
    view["points"] = points_view(b)
    view["tier"] = tier_summary(state)
    return view


def export(conn: Connection, *, merchant_id: str, member_id: str) -> dict[str, Any]:
    """All data held about a member (the right of access): profile, balances, events, postings."""
    from patron.storage import events as events_repo

    member = get_member(conn, merchant_id=merchant_id, member_id=member_id)
    return {
        "member": member_view(conn, merchant_id=merchant_id, member=member),
        "events": events_repo.events_of_member(conn, merchant_id, member_id),
        "postings": ledger_repo.postings_of_member(conn, merchant_id, member_id),
        "exported_at": utcnow(),
    }
