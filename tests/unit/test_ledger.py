"""The double-entry ledger: balanced journals, balances derived from postings, lots drawn in order."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from patron.domain.errors import InsufficientPoints, LedgerImbalance
from patron.domain.ledger import (
    MEMBER_ACCOUNTS,
    Account,
    Balances,
    Journal,
    JournalKind,
    Lot,
    Posting,
    balances_from_postings,
    credit,
    display_points,
    draw,
    returned,
    spending_order,
    take_back,
)

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def lot(lot_id: str, remaining: int, *, earned_days: int = 0, expires_days: int | None = 365) -> Lot:
    earned = T0 + timedelta(days=earned_days)
    expires = None if expires_days is None else T0 + timedelta(days=expires_days)
    return Lot(lot_id, earned, earned, expires, remaining)


def assert_well_formed(journal: Journal) -> None:
    assert sum(p.amount for p in journal.postings) == 0
    assert all(p.amount != 0 for p in journal.postings)


# --------------------------------------------------------------------------------------------------
# Journal invariants
# --------------------------------------------------------------------------------------------------

accounts = st.sampled_from(list(Account))


@settings(max_examples=150)
@given(
    amounts=st.lists(st.integers(-10_000, 10_000).filter(bool), min_size=1, max_size=6).filter(
        lambda xs: sum(xs) != 0
    ),
    data=st.data(),
)
def test_unbalanced_journal_is_refused(amounts: list[int], data: st.DataObject) -> None:
    postings = tuple(Posting(data.draw(accounts), a) for a in amounts)
    with pytest.raises(LedgerImbalance):
        Journal(JournalKind.ADJUSTMENT, postings)


@given(amounts=st.lists(st.integers(-10_000, 10_000).filter(bool), min_size=1, max_size=5))
def test_balanced_journal_with_a_zero_posting_is_refused(amounts: list[int]) -> None:
    postings = [Posting(Account.AVAILABLE, a) for a in amounts]
    if sum(amounts):
        postings.append(Posting(Account.ISSUED, -sum(amounts)))
    postings.append(Posting(Account.PENDING, 0))
    with pytest.raises(LedgerImbalance):
        Journal(JournalKind.ADJUSTMENT, tuple(postings))


def test_empty_journal_is_refused() -> None:
    with pytest.raises(LedgerImbalance):
        Journal(JournalKind.EARN, ())


def test_balanced_journal_is_accepted() -> None:
    j = Journal(JournalKind.EARN, (Posting(Account.ISSUED, -40), Posting(Account.AVAILABLE, 40, "lot-1")))
    assert [p.amount for p in j.postings] == [-40, 40]


@settings(max_examples=200)
@given(
    points=st.integers(-50, 100_000),
    debt=st.integers(0, 100_000),
    into=st.sampled_from([Account.AVAILABLE, Account.PENDING]),
    counter=st.sampled_from([Account.ISSUED, Account.ADJUSTMENTS]),
)
def test_credit_is_balanced_and_repays_debt_first(
    points: int, debt: int, into: Account, counter: Account
) -> None:
    journal = credit(points, debt=debt, into=into, lot_id="lot-x", counter=counter)
    if points <= 0:
        assert journal is None
        return
    assert journal is not None
    assert_well_formed(journal)
    before = Balances(debt=debt)
    after = before.apply(journal.postings)
    repaid = min(points, debt)
    assert after.debt == debt - repaid
    assert getattr(after, into.value) == points - repaid
    assert after.lifetime_earned == points
    # whatever lands in the member's bucket is tagged with the lot
    assert all(p.lot_id == "lot-x" for p in journal.postings if p.account == into)


lots_strategy = st.lists(st.integers(0, 500), min_size=0, max_size=6)


@settings(max_examples=200)
@given(
    points=st.integers(-10, 3_000),
    remaining=lots_strategy,
    shortfall_to=st.sampled_from([Account.DEBT, Account.ADJUSTMENTS, None]),
)
def test_take_back_is_balanced_and_never_overdraws_a_lot(
    points: int, remaining: list[int], shortfall_to: Account | None
) -> None:
    sources = [(Account.AVAILABLE, lot(f"l{i}", r, earned_days=i)) for i, r in enumerate(remaining)]
    held = sum(remaining)
    if points > held and shortfall_to is None and points > 0:
        with pytest.raises(InsufficientPoints):
            take_back(
                points, sources=sources, counter=Account.ISSUED, kind=JournalKind.REFUND, shortfall_to=None
            )
        return
    journal = take_back(
        points, sources=sources, counter=Account.ISSUED, kind=JournalKind.REFUND, shortfall_to=shortfall_to
    )
    if points <= 0:
        assert journal is None
        return
    assert journal is not None
    assert_well_formed(journal)
    by_lot = {p.lot_id: -p.amount for p in journal.postings if p.lot_id is not None}
    for _, source in sources:
        assert 0 <= by_lot.get(source.id, 0) <= source.remaining
    # draws in the order given: a lot is touched only once every earlier lot is empty
    expected_left = points
    for _, source in sources:
        take = min(source.remaining, expected_left)
        assert by_lot.get(source.id, 0) == take
        expected_left -= take
    shortfall = sum(-p.amount for p in journal.postings if p.lot_id is None and p.account != Account.ISSUED)
    assert shortfall == max(points - held, 0)
    after = Balances().apply(journal.postings)
    if shortfall_to == Account.DEBT:
        assert after.debt == shortfall
        assert after.lifetime_earned == -points
    else:
        # a written-off shortfall is a program:adjustments posting, which lifetime_earned counts
        assert after.debt == 0
        assert after.lifetime_earned == -points + shortfall


def test_refund_shortfall_becomes_debt_and_later_earnings_repay_it() -> None:
    balances = Balances()
    earn = credit(30, debt=0, into=Account.AVAILABLE, lot_id="a", counter=Account.ISSUED)
    assert earn is not None
    balances = balances.apply(earn.postings)
    refund = take_back(
        50,
        sources=[(Account.AVAILABLE, lot("a", 30))],
        counter=Account.ISSUED,
        kind=JournalKind.REFUND,
        shortfall_to=Account.DEBT,
    )
    assert refund is not None
    balances = balances.apply(refund.postings)
    assert (balances.available, balances.debt, balances.lifetime_earned) == (0, 20, -20)
    later = credit(25, debt=balances.debt, into=Account.AVAILABLE, lot_id="b", counter=Account.ISSUED)
    assert later is not None
    balances = balances.apply(later.postings)
    assert (balances.available, balances.debt, balances.lifetime_earned) == (5, 0, 5)


def test_write_off_policy_leaves_no_debt() -> None:
    refund = take_back(
        50,
        sources=[(Account.AVAILABLE, lot("a", 30))],
        counter=Account.ISSUED,
        kind=JournalKind.REFUND,
        shortfall_to=Account.ADJUSTMENTS,
    )
    assert refund is not None
    b = Balances(available=30, lifetime_earned=30).apply(refund.postings)
    assert b.available == 0
    assert b.debt == 0


# --------------------------------------------------------------------------------------------------
# Balance equals postings, over random histories
# --------------------------------------------------------------------------------------------------

operation = st.one_of(
    st.tuples(
        st.just("credit"),
        st.integers(-5, 400),
        st.sampled_from([Account.AVAILABLE, Account.PENDING]),
    ),
    st.tuples(
        st.just("take_back"),
        st.integers(-5, 600),
        st.sampled_from([Account.DEBT, Account.ADJUSTMENTS]),
    ),
)


@settings(max_examples=200)
@given(ops=st.lists(operation, max_size=25))
def test_balances_equal_postings_over_random_histories(ops: list[tuple[str, int, Account]]) -> None:
    # an independent model of the member: lots by id, and the debt owed
    lots: dict[str, tuple[Account, int]] = {}
    model_debt = 0
    model_earned = 0
    journals: list[Journal] = []
    for n, (op, points, where) in enumerate(ops):
        if op == "credit":
            j = credit(points, debt=model_debt, into=where, lot_id=f"lot{n}", counter=Account.ISSUED)
            if points > 0:
                repay = min(points, model_debt)
                model_debt -= repay
                model_earned += points
                if points - repay:
                    lots[f"lot{n}"] = (where, points - repay)
        else:
            sources = [(acct, lot(lot_id, left)) for lot_id, (acct, left) in lots.items()]
            j = take_back(
                points, sources=sources, counter=Account.ISSUED, kind=JournalKind.REFUND, shortfall_to=where
            )
            if points > 0:
                model_earned -= points
                left = points
                for lot_id, (acct, held) in list(lots.items()):
                    take = min(held, left)
                    lots[lot_id] = (acct, held - take)
                    left -= take
                if where == Account.DEBT:
                    model_debt += left
                else:  # written off through program:adjustments, which lifetime_earned counts
                    model_earned += left
        if points <= 0:
            assert j is None
            continue
        assert j is not None
        assert_well_formed(j)
        journals.append(j)

        # balance equals postings: all at once == journal by journal == posting by posting
        everything = [p for jj in journals for p in jj.postings]
        at_once = balances_from_postings(everything)
        by_journal = Balances()
        for jj in journals:
            by_journal = by_journal.apply(jj.postings)
        by_posting = Balances()
        for p in everything:
            by_posting = by_posting.apply([p])
        as_tuples = balances_from_postings((str(p.account), p.amount) for p in everything)
        assert at_once == by_journal == by_posting == as_tuples

        assert at_once.available == sum(h for a, h in lots.values() if a == Account.AVAILABLE)
        assert at_once.pending == sum(h for a, h in lots.values() if a == Account.PENDING)
        assert at_once.available >= 0
        assert at_once.pending >= 0
        assert at_once.debt == model_debt >= 0
        assert at_once.lifetime_earned == model_earned
        # conservation: every point ever credited is somewhere, net of what is owed
        assert at_once.lifetime_earned == (
            at_once.available
            + at_once.pending
            + at_once.reserved
            + at_once.redeemed
            + at_once.expired
            - at_once.debt
        )
        # the displayed figures per member account add up to the balance
        for account in MEMBER_ACCOUNTS:
            shown = sum(display_points(p.account, p.amount) for p in everything if p.account == account)
            assert shown == getattr(at_once, account.value)


def test_redemption_and_expiry_feed_their_totals() -> None:
    postings = [
        Posting(Account.ISSUED, -300),
        Posting(Account.AVAILABLE, 300, "a"),
        Posting(Account.AVAILABLE, -100, "a"),
        Posting(Account.REDEEMED, 100),
        Posting(Account.AVAILABLE, -50, "a"),
        Posting(Account.EXPIRED, 50),
    ]
    b = balances_from_postings(postings)
    assert (b.available, b.redeemed, b.expired, b.lifetime_earned) == (150, 100, 50, 300)


# --------------------------------------------------------------------------------------------------
# Drawing lots
# --------------------------------------------------------------------------------------------------


@settings(max_examples=200)
@given(remaining=st.lists(st.integers(-3, 200), max_size=8), points=st.integers(0, 1_000))
def test_draw_takes_in_order_and_never_more_than_a_lot_holds(remaining: list[int], points: int) -> None:
    lots = [lot(f"l{i}", r) for i, r in enumerate(remaining)]
    held = sum(max(r, 0) for r in remaining)
    if points > held:
        with pytest.raises(InsufficientPoints):
            draw(lots, points)
        return
    taken = draw(lots, points)
    assert sum(t for _, t in taken) == points
    by_id = dict(taken)
    assert len(by_id) == len(taken)
    left = points
    for source in lots:
        expected = min(max(source.remaining, 0), left)
        assert by_id.get(source.id, 0) == expected
        left -= expected
    assert all(t > 0 for _, t in taken)


def test_draw_refuses_negative_points() -> None:
    with pytest.raises(ValueError, match=">= 0"):
        draw([lot("a", 10)], -1)


def test_spending_order_soonest_expiry_first_never_expiring_last_then_oldest() -> None:
    never = lot("never", 10, earned_days=-100, expires_days=None)
    late = lot("late", 10, earned_days=-50, expires_days=300)
    soon_new = lot("soon-new", 10, earned_days=-10, expires_days=30)
    soon_old = lot("soon-old", 10, earned_days=-20, expires_days=30)
    order = spending_order([never, late, soon_new, soon_old])
    assert [x.id for x in order] == ["soon-old", "soon-new", "late", "never"]
    # spending 25 points empties the soonest-expiring lots first
    assert draw(order, 25) == [("soon-old", 10), ("soon-new", 10), ("late", 5)]


@given(
    specs=st.lists(
        st.tuples(st.integers(0, 400), st.none() | st.integers(0, 800)), min_size=0, max_size=8, unique=True
    )
)
def test_spending_order_is_sorted_by_expiry_then_age(specs: list[tuple[int, int | None]]) -> None:
    lots = [lot(f"l{i}", 1, earned_days=e, expires_days=x) for i, (e, x) in enumerate(specs)]
    order = spending_order(lots)
    assert sorted(x.id for x in order) == sorted(x.id for x in lots)
    keys = [(x.expires_at is None, x.expires_at or T0, x.earned_at) for x in order]
    assert keys == sorted(keys)


def test_spending_order_compares_instants_not_wall_clocks() -> None:
    plus5 = timezone(timedelta(hours=5))
    # expires 2026-06-01T05:00Z
    early = Lot("early", T0, T0, datetime(2026, 6, 1, 10, 0, tzinfo=plus5), 10)
    # expires 2026-06-01T08:00Z, three hours later, but shows an earlier wall clock
    later = Lot("later", T0, T0, datetime(2026, 6, 1, 8, 0, tzinfo=UTC), 10)
    assert [x.id for x in spending_order([later, early])] == ["early", "later"]


def test_points_given_back_repay_a_debt_first_from_the_first_lots() -> None:
    held = [("lot_a", 60), ("lot_b", 40)]
    assert returned(held, debt=0) == [
        Posting(Account.AVAILABLE, 60, "lot_a"),
        Posting(Account.AVAILABLE, 40, "lot_b"),
    ]
    assert returned(held, debt=70) == [Posting(Account.AVAILABLE, 30, "lot_b"), Posting(Account.DEBT, 70)]
    assert returned(held, debt=500) == [Posting(Account.DEBT, 100)]  # what comes back, no more
