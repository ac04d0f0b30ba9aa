"""Member identifiers: card numbers with a Luhn check digit, normalised emails."""

from __future__ import annotations


def luhn_digit(digits: str) -> str:
    """The Luhn check digit for ``digits`` (a string of 0-9)."""
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = int(ch)
        if i % 2 == 0:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return str((10 - total % 10) % 10)


def luhn_valid(number: str) -> bool:
    return len(number) > 1 and number.isdigit() and luhn_digit(number[:-1]) == number[-1]


def card_number(prefix: str, serial: str) -> str:
    """A printable card number: prefix + serial + check digit."""
    body = prefix + serial
    return body + luhn_digit(body)


def normalise_email(email: str) -> str:
    return email.strip().casefold()
