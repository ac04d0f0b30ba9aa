"""``patron users create`` and ``patron members login-link``: access to the web interfaces."""

from __future__ import annotations

from typing import Annotated

import typer

from patron.cli.common import MerchantOpt, console, handles_errors, resolve_merchant, unit

users_app = typer.Typer(help="Admin-console users.", no_args_is_help=True)


@users_app.command("create")
@handles_errors
def users_create(
    email: Annotated[str, typer.Argument(help="Sign-in email (unique across merchants).")],
    password: Annotated[
        str, typer.Option("--password", prompt=True, hide_input=True, help="At least 10 characters.")
    ],
    merchant: str | None = MerchantOpt,
    role: Annotated[
        str, typer.Option(help="owner or manager (console and till) or staff (till only).")
    ] = "owner",
) -> None:
    """Create a user who signs in at /admin (owners and managers) or /pos (everyone)."""
    from patron.services.users import create_user

    with unit() as conn:
        merchant_id = resolve_merchant(conn, merchant)
        user = create_user(conn, merchant_id=merchant_id, email=email, password=password, role=role)
    console.print(
        f"User {user['email']} ({user['role']}) created for merchant {merchant_id}", highlight=False
    )


@handles_errors
def members_login_link(
    member_id: Annotated[str, typer.Argument(help="Member id.")],
    merchant: Annotated[
        str | None,
        typer.Option(
            "--merchant", "-m", envvar="PATRON_MERCHANT", help="Merchant id (default: the member's)."
        ),
    ] = None,
) -> None:
    """Print a one-time URL that signs the member into the portal (valid 24 hours, single use)."""
    from patron.config import get_settings
    from patron.services.portal import create_login_link, find_member_merchant

    with unit() as conn:
        merchant_id = merchant or find_member_merchant(conn, member_id=member_id)
        link = create_login_link(
            conn, merchant_id=merchant_id, member_id=member_id, base_url=get_settings().public_url
        )
    typer.echo(link["url"])
