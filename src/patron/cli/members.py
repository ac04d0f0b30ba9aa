"""``patron members``."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from patron.cli.common import (
    MerchantOpt,
    console,
    fail,
    handles_errors,
    parse_time,
    print_json,
    resolve_merchant,
    unit,
)
from patron.services import ledger, members
from patron.services.members import MemberCreate, member_view

app = typer.Typer(help="Members: enrol, look up, balances and ledger.", no_args_is_help=True)


@app.command("create")
@handles_errors
def create(
    program: Annotated[str, typer.Option("--program", "-p", help="Program id.")],
    email: str | None = None,
    phone: str | None = None,
    name: str | None = None,
    external_id: str | None = None,
    merchant: str | None = MerchantOpt,
    json_out: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Enrol a member."""
    from pydantic import ValidationError

    try:
        data = MemberCreate(program_id=program, email=email, phone=phone, name=name, external_id=external_id)
    except ValidationError as exc:
        fail("; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors()))
        return
    with unit() as conn:
        m = resolve_merchant(conn, merchant)
        view = member_view(conn, merchant_id=m, member=members.enrol(conn, merchant_id=m, data=data))
    if json_out:
        print_json(view)
    else:
        console.print(f"Member {view['id']} enrolled, card {view['card_number']}")


def _show(view: dict) -> None:  # type: ignore[type-arg]
    p = view["points"]
    name = view["name"] or "(no name)"
    console.print(f"[bold]{name}[/bold] {view['id']}  card {view['card_number']}  {view['status']}")
    ids = f"email {view['email'] or '-'}  phone {view['phone'] or '-'}"
    ids += f"  external id {view['external_id'] or '-'}"
    console.print("  " + ids)
    tier = view["tier"]
    console.print(f"  tier {tier['name'] if tier else '-'}")
    console.print(
        f"  available {p['available']}  pending {p['pending']}  reserved {p['reserved']}  debt {p['debt']}  "
        f"lifetime {p['lifetime_earned']}  expired {p['expired']}  redeemed {p['redeemed']}"
    )


@app.command("show")
@handles_errors
def show(
    member_id: str,
    as_of: Annotated[str | None, typer.Option(help="RFC 3339 time: the state then.")] = None,
    merchant: str | None = MerchantOpt,
    json_out: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """A member's profile, balances and tier."""
    with unit() as conn:
        m = resolve_merchant(conn, merchant)
        row = members.get_member(conn, merchant_id=m, member_id=member_id)
        view = member_view(conn, merchant_id=m, member=row, as_of=parse_time(as_of))
    print_json(view) if json_out else _show(view)


@app.command("find")
@handles_errors
def find(
    email: str | None = None,
    phone: str | None = None,
    card: str | None = None,
    external_id: str | None = None,
    merchant: str | None = MerchantOpt,
) -> None:
    """Find members by email, phone, card number or external id."""
    if not any((email, phone, card, external_id)):
        fail("give --email, --phone, --card or --external-id")
    with unit() as conn:
        m = resolve_merchant(conn, merchant)
        rows = members.find(
            conn, merchant_id=m, email=email, phone=phone, card_number=card, external_id=external_id
        )
        views = [member_view(conn, merchant_id=m, member=r) for r in rows]
    if not views:
        fail("no member found")
    for v in views:
        _show(v)


@app.command("ledger")
@handles_errors
def ledger_(
    member_id: str,
    limit: int = 50,
    as_of: Annotated[str | None, typer.Option(help="RFC 3339 time.")] = None,
    merchant: str | None = MerchantOpt,
    json_out: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """A member's postings, newest first, with the reason for each."""
    with unit() as conn:
        m = resolve_merchant(conn, merchant)
        members.get_member(conn, merchant_id=m, member_id=member_id)
        page = ledger.ledger_page(
            conn, merchant_id=m, member_id=member_id, limit=limit, as_of=parse_time(as_of)
        )
    if json_out:
        print_json(page)
        return
    table = Table("when", "type", "account", "points", "event", "reason", "expires")
    for r in page["data"]:
        table.add_row(
            r["occurred_at"].isoformat(timespec="seconds"),
            r["type"],
            r["account"],
            f"{r['points']:+d}",
            r["event_id"] or "",
            r["reason"] or "",
            r["expires_at"].date().isoformat() if r["expires_at"] else "",
        )
    console.print(table)


@app.command("adjust")
@handles_errors
def adjust(
    member_id: str,
    points: Annotated[int, typer.Argument(help="Points to add (negative to remove).")],
    reason: Annotated[str, typer.Option(help="Why; kept on the ledger.")],
    merchant: str | None = MerchantOpt,
) -> None:
    """Credit or debit points by hand."""
    with unit() as conn:
        out = ledger.adjust(
            conn,
            merchant_id=resolve_merchant(conn, merchant),
            member_id=member_id,
            points=points,
            reason=reason,
        )
    console.print(f"adjusted {points:+d}: available now {out['balances']['available']}")
