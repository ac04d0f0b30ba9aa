"""Money as outside systems write it (``"29.33"`` dollars) to integer minor units (``2933``)."""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation

from patron.domain.errors import InvalidInput

#: ISO 4217 minor-unit exponents that are not 2.
_ZERO = ("BIF", "CLP", "DJF", "GNF", "ISK", "JPY", "KMF", "KRW", "PYG", "RWF", "UGX", "UYI", "VND", "VUV")
EXPONENTS: dict[str, int] = {
    **dict.fromkeys((*_ZERO, "XAF", "XOF", "XPF"), 0),
    **dict.fromkeys(("BHD", "IQD", "JOD", "KWD", "LYD", "OMR", "TND"), 3),
    **dict.fromkeys(("CLF", "UYW"), 4),
}
_DECIMAL = re.compile(r"^\d+(\.\d+)?$")


def exponent(currency: str) -> int:
    """How many decimal places the currency's minor unit has (2 unless ISO 4217 says otherwise)."""
    return EXPONENTS.get(currency.upper(), 2)


def to_minor(value: str | int | Decimal, currency: str) -> int:
    """``value`` in currency units (a plain decimal, never negative) as an integer of minor units.

    More decimal places than the currency has is an error, never a silent rounding.
    """
    if isinstance(value, bool):
        raise InvalidInput(f"amount {value!r} is not a number")
    if isinstance(value, int):
        number = Decimal(value)
    elif isinstance(value, Decimal):
        number = value
    else:
        text = value.strip()
        if not _DECIMAL.match(text):
            raise InvalidInput(f"amount {value!r} is not a plain decimal like 29.33")
        try:
            number = Decimal(text)
        except InvalidOperation:
            raise InvalidInput(f"amount {value!r} is not a plain decimal like 29.33")
    if not number.is_finite() or number < 0:
        raise InvalidInput(f"amount {value!r} must be a number, zero or more")
    minor = number.scaleb(exponent(currency))
    if minor != minor.to_integral_value():
        raise InvalidInput(
            f"amount {value!r} has more decimal places than {currency.upper()} allows ({exponent(currency)})"
        )
    return int(minor)
