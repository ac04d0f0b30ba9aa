"""CSV import of members and historical transactions: streaming, batched, idempotent.

Rows arrive as an iterable of mappings (a :class:`csv.DictReader`), so a file of any size is read
in constant memory. Rows are applied in batches, one transaction per batch, each row inside its
own savepoint: a row that breaks a rule is rolled back alone and reported to ``on_rejected`` with
the reason, and the rest of the batch goes on. Importing the same file again changes nothing,
so an interrupted import is resumed by running it again.

Members (``external_id,email,phone,name,birthday``): at least one of external_id, email or phone.
A row whose identifiers all lead to one existing member is skipped as already imported; one whose
identifiers lead to different members, or clash with what the member has, is rejected.

Transactions (``external_id,occurred_at,amount,currency`` and optionally ``event_id,category,
sku``): each row is a purchase of one line. ``amount`` is a decimal in currency units (``29.33``);
``occurred_at`` is an RFC 3339 time or a date (midnight in the program's timezone); an unknown
``external_id`` enrols a member. Without ``event_id`` the event id is a hash of the normalised
row, so two identical rows are one purchase.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, date, datetime
from itertools import islice
from typing import Any
from zoneinfo import ZoneInfo

from pydantic import ValidationError
from sqlalchemy import Connection, Engine
from sqlalchemy.exc import IntegrityError

from patron.domain.errors import DuplicateMember, InvalidInput, PatronError
from patron.domain.identity import normalise_email
from patron.services import ingest, members
from patron.services.clock import utcnow
from patron.services.instant import FUTURE_SLACK, in_range
from patron.services.members import MemberCreate
from patron.services.money import to_minor
from patron.services.programs import _errors, program_at
from patron.storage import ingest as ingest_repo
from patron.storage.integrations import savepoint

MEMBER_COLUMNS = ("external_id", "email", "phone", "name", "birthday")
TRANSACTION_COLUMNS = ("external_id", "occurred_at", "amount", "currency")
TRANSACTION_OPTIONAL = ("event_id", "category", "sku")
IDENTIFIERS = ("external_id", "email", "phone")
COLUMNS = {"members": MEMBER_COLUMNS, "transactions": TRANSACTION_COLUMNS + TRANSACTION_OPTIONAL}
#: rows per transaction: a batch's fixed costs (the members' lookups and locks, their tier inputs,
#: the commit) are spread over more rows; a batch of purchases holds about 13 KB per row in
#: memory while it is applied (25 MiB at 2,000)
BATCH = 2000
CONCURRENT = "conflicts with a change made at the same time; import the file again"

Row = Mapping[str | None, Any]


@dataclass(frozen=True, slots=True)
class Rejected:
    """A row that was not imported: its number in the file (the header is row 1) and why."""

    line: int
    row: Row
    reason: str


@dataclass(slots=True)
class Summary:
    read: int = 0
    imported: int = 0
    skipped: int = 0  # already imported
    rejected: int = 0

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


def check_header(kind: str, fieldnames: Sequence[str] | None) -> list[str]:
    """The header's column names, normalised (trimmed, lower case); missing columns are an error.

    A members file needs at least one identifier column; a transactions file needs all four of
    its required columns. Columns the format does not name are ignored (so a corrected
    ``.errors.csv``, which adds ``line`` and ``reason``, can be imported as it is)."""
    if kind not in COLUMNS:
        raise InvalidInput(f"unknown import kind {kind!r}")
    if not fieldnames:
        raise InvalidInput("the file is empty: it needs a header row")
    names = [(name or "").strip().lower() for name in fieldnames]
    known = set(COLUMNS[kind])
    twice = sorted({n for n in names if n in known and names.count(n) > 1})
    if twice:  # which of the two would count is anybody's guess: say so rather than pick one
        raise InvalidInput(f"the header names {', '.join(twice)} more than once; keep one column of each")
    if kind == "members":
        missing = [] if set(IDENTIFIERS) & set(names) else ["external_id, email or phone"]
    else:
        missing = [c for c in TRANSACTION_COLUMNS if c not in names]
    if missing:
        raise InvalidInput(
            f"the header lacks {', '.join(missing)}; a {kind} file has the columns {','.join(COLUMNS[kind])}"
        )
    return names


@dataclass(frozen=True, slots=True)
class _Program:
    merchant_id: str
    id: str
    currency: str
    tz: ZoneInfo


def _program(engine: Engine, merchant_id: str, program_id: str) -> _Program:
    with engine.begin() as conn:
        program, _ = program_at(conn, merchant_id=merchant_id, program_id=program_id, at=utcnow())
    return _Program(merchant_id, program_id, program.currency, ZoneInfo(program.timezone))


def import_members(
    engine: Engine,
    *,
    merchant_id: str,
    program_id: str,
    rows: Iterable[Row],
    on_rejected: Callable[[Rejected], None],
    progress: Callable[[int], None] | None = None,
    batch_size: int = BATCH,
    line_of: Callable[[], int] | None = None,
) -> Summary:
    """Enrol the members of ``rows``; see the module docstring for what each row means.
    ``line_of``: the file line the row just read ends on (else rows are counted from line 2)."""
    program = _program(engine, merchant_id, program_id)
    return _run(
        engine,
        rows,
        lambda conn, row: _member(conn, program, row),
        on_rejected,
        progress,
        batch_size,
        line_of,
    )


#: After importing this many rows, PostgreSQL's planner statistics are refreshed at once rather
#: than when autovacuum gets to it: reports on a freshly loaded ledger would otherwise pick
#: nested loops over tables the planner still thinks are empty.
ANALYZE_AFTER = 5_000


def import_transactions(
    engine: Engine,
    *,
    merchant_id: str,
    program_id: str,
    rows: Iterable[Row],
    on_rejected: Callable[[Rejected], None],
    progress: Callable[[int], None] | None = None,
    batch_size: int = BATCH,
    line_of: Callable[[], int] | None = None,
) -> Summary:
    """Record the purchases of ``rows`` (earning as the program did when each occurred).

    Each batch is one transaction applied by ``services.ingest.record_purchases``: set-based,
    with the same ledger as recording the rows one at a time (which it falls back to for what
    it cannot do in bulk)."""
    program = _program(engine, merchant_id, program_id)
    summary = Summary()
    source = _numbered(rows, line_of)
    while batch := list(islice(source, max(batch_size, 1))):
        rejected: list[Rejected] = []
        with engine.begin() as conn:
            todo: list[tuple[int, Row, str, datetime, dict[str, Any]]] = []
            for line, row in batch:
                summary.read += 1
                try:
                    external_id, occurred_at, body = _purchase(program, _clean(row))
                except PatronError as exc:
                    rejected.append(Rejected(line, row, _reason(exc)))
                    continue
                todo.append((line, row, external_id, occurred_at, body))
            known = _members_of(conn, program, todo, rejected)
            bodies = []
            for number, row, external_id, _, body in todo:
                if external_id in known:
                    body = {**body, "member_id": known[external_id]}
                    bodies.append((number, row, body))
            outcomes = ingest.record_purchases(
                conn, merchant_id=merchant_id, bodies=[b for _, _, b in bodies]
            )
            for (number, row, _), outcome in zip(bodies, outcomes, strict=True):
                if isinstance(outcome.error, PatronError):
                    rejected.append(Rejected(number, row, _reason(outcome.error)))
                elif outcome.error is not None:  # a concurrent writer took the same identifier
                    rejected.append(Rejected(number, row, CONCURRENT))
                elif outcome.created:
                    summary.imported += 1
                else:
                    summary.skipped += 1
        for r in sorted(rejected, key=lambda r: r.line):
            summary.rejected += 1
            on_rejected(r)
        if progress is not None:
            progress(len(batch))
    if summary.imported >= ANALYZE_AFTER:
        ingest.refresh_statistics(engine)
    return summary


def _members_of(
    conn: Connection,
    program: _Program,
    todo: list[tuple[int, Row, str, datetime, dict[str, Any]]],
    rejected: list[Rejected],
) -> dict[str, str]:
    """Member ids by external id: found in one query, or enrolled (at the time of the member's
    first row) all at once, in external-id order so that two imports enrolling the same people
    queue on the unique key rather than deadlock. If that fails (a member enrolled by another
    import meanwhile, an external id the rules refuse), each is enrolled in its own savepoint
    instead and the rows of a member who cannot be enrolled are rejected."""
    found = ingest_repo.members_by_external_id(
        conn, program.merchant_id, program.id, {external_id for _, _, external_id, _, _ in todo}
    )
    known = {external_id: str(m["id"]) for external_id, m in found.items()}
    first: dict[str, datetime] = {}
    for _, _, external_id, occurred_at, _ in todo:
        if external_id not in known:
            first.setdefault(external_id, occurred_at)
    failed: dict[str, str] = {}
    new = sorted(first)
    try:  # all at once; if anything is in the way, one at a time as below says why
        with savepoint(conn):
            known.update(
                members.enrol_many(
                    conn,
                    merchant_id=program.merchant_id,
                    program_id=program.id,
                    people=[(external_id, first[external_id]) for external_id in new],
                )
            )
        new = []
    except (PatronError, IntegrityError):
        pass
    for external_id in new:
        data = MemberCreate(program_id=program.id, external_id=external_id, enrolled_at=first[external_id])
        try:
            with savepoint(conn):
                known[external_id] = str(
                    members.enrol(conn, merchant_id=program.merchant_id, data=data)["id"]
                )
        except PatronError as exc:
            failed[external_id] = _reason(exc)
        except IntegrityError:
            failed[external_id] = CONCURRENT
        if external_id in failed:  # enrolled by a concurrent import meanwhile? then it is theirs
            again = ingest_repo.members_by_external_id(conn, program.merchant_id, program.id, [external_id])
            if external_id in again:
                known[external_id] = str(again[external_id]["id"])
                del failed[external_id]
    for number, row, external_id, _, _ in todo:
        if external_id in failed:
            rejected.append(Rejected(number, row, failed[external_id]))
    return known


def _numbered(rows: Iterable[Row], line_of: Callable[[], int] | None) -> Iterator[tuple[int, Row]]:
    """Each row with its line in the file: where the reader says it ends (a quoted value may
    span lines, blank lines are skipped), else counted from line 2 (after the header)."""
    for n, row in enumerate(rows, start=2):
        yield (line_of() if line_of is not None else n), row


def _run(
    engine: Engine,
    rows: Iterable[Row],
    apply: Callable[[Connection, dict[str, str]], bool],
    on_rejected: Callable[[Rejected], None],
    progress: Callable[[int], None] | None,
    batch_size: int,
    line_of: Callable[[], int] | None = None,
) -> Summary:
    summary = Summary()
    source = _numbered(rows, line_of)
    while batch := list(islice(source, max(batch_size, 1))):
        with engine.begin() as conn:
            for line, row in batch:
                summary.read += 1
                try:
                    clean = _clean(row)
                    with savepoint(conn):
                        created = apply(conn, clean)
                except PatronError as exc:
                    reason = _reason(exc)
                except IntegrityError:  # a concurrent writer took the same identifier
                    reason = CONCURRENT
                else:
                    if created:
                        summary.imported += 1
                    else:
                        summary.skipped += 1
                    continue
                summary.rejected += 1
                on_rejected(Rejected(line, row, reason))
        if progress is not None:
            progress(len(batch))
    return summary


def _reason(exc: PatronError) -> str:
    details = exc.extra.get("errors")
    if details:
        messages = [(e.get("loc"), str(e["msg"]).removeprefix("Value error, ")) for e in details]
        return "; ".join(f"{loc}: {msg}" if loc else msg for loc, msg in messages)
    return exc.detail


def _clean(row: Row) -> dict[str, str]:
    """Trimmed values by lower-case column; a row with more or fewer fields than the header is
    rejected rather than guessed at."""
    if None in row:
        extra = ",".join(str(v) for v in row[None] or ())
        raise InvalidInput(f"the row has more fields than the header (extra: {extra})")
    out = {}
    for key, value in row.items():
        if value is None:
            raise InvalidInput("the row has fewer fields than the header")
        out[str(key).strip().lower()] = str(value).strip()
    return out


def _member(conn: Connection, program: _Program, row: dict[str, str]) -> bool:
    fields = {k: row.get(k) or None for k in MEMBER_COLUMNS}
    if not any(fields[k] for k in IDENTIFIERS):
        raise InvalidInput("give at least one of external_id, email or phone")
    try:
        data = MemberCreate(program_id=program.id, **fields)
    except ValidationError as exc:
        raise InvalidInput("the member is not valid", errors=_errors(exc))
    given = {"external_id": data.external_id, "email": data.email, "phone": data.phone}
    found: dict[str, dict[str, Any]] = {}
    for key, value in given.items():
        if value:
            for member in members.find(
                conn, merchant_id=program.merchant_id, program_id=program.id, limit=1, **{key: value}
            ):
                found[member["id"]] = member
    if not found:
        members.enrol(conn, merchant_id=program.merchant_id, data=data)
        return True
    if len(found) > 1:
        raise DuplicateMember(
            "external_id, email and phone belong to different members: " + ", ".join(sorted(found))
        )
    [member] = found.values()
    for key, value in given.items():
        theirs = member[key]
        if value and theirs and _key(key, value) != _key(key, theirs):
            raise DuplicateMember(
                f"{_other(given, key)} is already member {member['id']}, whose {key} is {theirs}, not {value}"
            )
    return False


def _key(column: str, value: str) -> str:
    return normalise_email(value) if column == "email" else value


def _other(given: Mapping[str, str | None], differing: str) -> str:
    return next((f"{k} {v}" for k, v in given.items() if v and k != differing), "this row")


def _purchase(program: _Program, row: dict[str, str]) -> tuple[str, datetime, dict[str, Any]]:
    """A row's external id, time and purchase body (without ``member_id``), or why not."""
    external_id = row.get("external_id", "")
    if not external_id:
        raise InvalidInput("external_id is empty: whose purchase is it?")
    if len(external_id) > 200:
        raise InvalidInput("external_id is longer than 200 characters")
    currency = row.get("currency", "").upper()
    if len(currency) != 3 or not currency.isalpha():
        raise InvalidInput(
            f"currency {row.get('currency')!r} is not a three-letter code like {program.currency}"
        )
    if currency != program.currency:
        raise InvalidInput(f"currency {currency} does not match the program's {program.currency}")
    amount = to_minor(row.get("amount", ""), currency)
    occurred_at = _when(row.get("occurred_at", ""), program.tz)
    if occurred_at > utcnow() + FUTURE_SLACK:  # before enrolling anyone for it
        raise InvalidInput("occurred_at is in the future", field="occurred_at")
    line: dict[str, Any] = {"id": "1", "quantity": 1, "unit_price": amount}
    for column in ("category", "sku"):
        if row.get(column):
            line[column] = row[column]
    event_id = row.get("event_id") or _row_id(external_id, occurred_at, amount, currency, line)
    body = {
        "id": event_id,
        "type": "purchase",
        "occurred_at": occurred_at.isoformat(),
        "currency": currency,
        "items": [line],
    }
    return external_id, occurred_at, body


def _when(value: str, tz: ZoneInfo) -> datetime:
    """An RFC 3339 time with an offset, or a date: midnight in the program's timezone."""
    if not value:
        raise InvalidInput("occurred_at is empty")
    if len(value) == 10:
        try:
            day = date.fromisoformat(value)
        except ValueError:
            raise InvalidInput(f"occurred_at {value!r} is not a date (YYYY-MM-DD) or an RFC 3339 time")
        local = datetime(day.year, day.month, day.day, tzinfo=tz)
        if not in_range(local):
            raise InvalidInput(f"occurred_at {value!r} is out of range", field="occurred_at")
        return local.astimezone(UTC)
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        raise InvalidInput(f"occurred_at {value!r} is not a date (YYYY-MM-DD) or an RFC 3339 time")
    if parsed.tzinfo is None:
        raise InvalidInput(f"occurred_at {value!r} needs an offset, e.g. {value}Z")
    if not in_range(parsed):
        raise InvalidInput(f"occurred_at {value!r} is out of range", field="occurred_at")
    return parsed.astimezone(UTC)


def _row_id(external_id: str, at: datetime, amount: int, currency: str, line: Mapping[str, Any]) -> str:
    """The identity of a row without ``event_id``: a hash of its normalised content."""
    canonical = "\x1f".join(
        [external_id, at.isoformat(), str(amount), currency, line.get("category", ""), line.get("sku", "")]
    )
    return "csv:" + hashlib.sha256(canonical.encode()).hexdigest()[:32]
