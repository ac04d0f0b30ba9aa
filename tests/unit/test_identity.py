"""Card numbers carry a Luhn check digit that catches single-digit typos and most transpositions."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from patron.domain.identity import card_number, luhn_digit, luhn_valid, normalise_email


def textbook_luhn_ok(number: str) -> bool:
    """The check as usually written: double every second digit from the right, sum, mod 10."""
    total = 0
    for i, ch in enumerate(reversed(number)):
        n = int(ch)
        if i % 2 == 1:
            n = sum(divmod(n * 2, 10))
        total += n
    return total % 10 == 0


digits = st.text(alphabet="0123456789", min_size=1, max_size=24)


def test_known_valid_number() -> None:
    assert luhn_digit("7992739871") == "3"
    assert luhn_valid("79927398713")
    for wrong in "012456789":
        assert not luhn_valid("7992739871" + wrong)


@pytest.mark.parametrize("number", ["4539578763621486", "4111111111111111", "378282246310005"])
def test_other_known_numbers(number: str) -> None:
    assert luhn_valid(number)
    assert not luhn_valid(number[:-1] + str((int(number[-1]) + 1) % 10))


@pytest.mark.parametrize("number", ["", "0", "7992739871a", "7992 7398 713", "-79927398713"])
def test_non_digits_are_invalid(number: str) -> None:
    assert not luhn_valid(number)


@given(prefix=st.text(alphabet="0123456789", max_size=6), serial=digits)
def test_card_numbers_pass_an_independent_luhn_check(prefix: str, serial: str) -> None:
    number = card_number(prefix, serial)
    assert number.startswith(prefix + serial)
    assert len(number) == len(prefix + serial) + 1
    assert textbook_luhn_ok(number)
    assert luhn_valid(number)


@given(body=digits, data=st.data())
def test_a_single_wrong_digit_is_caught(body: str, data: st.DataObject) -> None:
    number = body + luhn_digit(body)
    i = data.draw(st.integers(0, len(number) - 1))
    wrong = data.draw(st.sampled_from([c for c in "0123456789" if c != number[i]]))
    assert not luhn_valid(number[:i] + wrong + number[i + 1 :])


@given(body=digits, data=st.data())
def test_swapping_adjacent_digits_is_caught_except_09(body: str, data: st.DataObject) -> None:
    number = body + luhn_digit(body)
    i = data.draw(st.integers(0, len(number) - 2))
    a, b = number[i], number[i + 1]
    swapped = number[:i] + b + a + number[i + 2 :]
    if a == b or {a, b} == {"0", "9"}:
        return
    assert not luhn_valid(swapped)


def test_normalise_email() -> None:
    assert normalise_email("  Ada.Lovelace@Example.COM ") == "ada.lovelace@example.com"
    assert normalise_email("STRASSE@EXAMPLE.DE") == normalise_email("strasse@example.de")
