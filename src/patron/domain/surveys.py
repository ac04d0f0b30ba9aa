"""Surveys: the Net Promoter Score (NPS) and the Customer Loyalty Index (CLI).

Two kinds of response:

* ``nps``: one answer, 0-10, to "How likely are you to recommend us?". A score of 9 or 10 is a
  *promoter*, 7 or 8 a *passive*, 0 to 6 a *detractor*. Over a set of responses
  ``NPS = 100 * (promoters - detractors) / responses``, a number from -100 to 100.
* ``cli``: three answers on a 1-6 scale (6: most likely), to "would you recommend us", "would
  you buy from us again" and "would you try our other products". A
  respondent's index is the mean of their three answers; the index of a set of responses is the
  mean of the respondents' indexes (equal to the mean of all their answers, since each respondent
  gives exactly three).

Rounding: both are computed exactly (as fractions) and rounded once at the end, halves away from
zero: the NPS to one decimal place (``16.666...`` -> ``16.7``), the CLI to two (``4.2222`` ->
``4.22``). A set with no response has no score: ``None``, never NaN or zero.

A response is *low* when a program says it deserves a follow-up: an NPS score at most
``nps_at_most``, or a CLI mean at most ``cli_at_most`` (either threshold ``None``: never).

Invariants: every score is within its scale; promoters + passives + detractors = NPS responses;
``-100 <= NPS <= 100``; ``1 <= CLI <= 6``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import date, timedelta
from decimal import ROUND_HALF_UP, Decimal
from enum import StrEnum
from fractions import Fraction

from patron.domain.errors import InvalidInput

NPS_MIN, NPS_MAX = 0, 10
CLI_MIN, CLI_MAX = 1, 6
PROMOTER_FROM = 9  # 9-10
DETRACTOR_TO = 6  # 0-6
CLI_QUESTIONS = ("recommend", "buy_again", "try_other")
NPS_PLACES, CLI_PLACES = 1, 2


class Kind(StrEnum):
    NPS = "nps"
    CLI = "cli"


class NpsClass(StrEnum):
    PROMOTER = "promoter"
    PASSIVE = "passive"
    DETRACTOR = "detractor"


class Interval(StrEnum):
    DAY = "day"
    WEEK = "week"
    MONTH = "month"


def check_nps(score: int) -> None:
    """An NPS score is an integer 0-10 (a bool is not a score)."""
    if isinstance(score, bool) or not isinstance(score, int) or not NPS_MIN <= score <= NPS_MAX:
        raise InvalidInput(f"an NPS score is a whole number from 0 to 10, not {score!r}", field="score")


def check_cli(answers: Sequence[int]) -> None:
    """Three integer answers, each 1-6, in the order of :data:`CLI_QUESTIONS`."""
    if len(answers) != len(CLI_QUESTIONS):
        raise InvalidInput("a CLI response has three answers: recommend, buy_again, try_other")
    for name, value in zip(CLI_QUESTIONS, answers, strict=True):
        if isinstance(value, bool) or not isinstance(value, int) or not CLI_MIN <= value <= CLI_MAX:
            raise InvalidInput(f"{name} is a whole number from 1 to 6, not {value!r}", field=name)


def classify(score: int) -> NpsClass:
    """9-10 promoter, 7-8 passive, 0-6 detractor."""
    check_nps(score)
    if score >= PROMOTER_FROM:
        return NpsClass.PROMOTER
    if score <= DETRACTOR_TO:
        return NpsClass.DETRACTOR
    return NpsClass.PASSIVE


def cli_mean(answers: Sequence[int]) -> Fraction:
    """One respondent's index: the exact mean of their three answers."""
    check_cli(answers)
    return Fraction(sum(answers), len(answers))


def round_half_up(value: Fraction, places: int) -> float:
    """``value`` rounded to ``places`` decimals, halves away from zero."""
    exact = Decimal(value.numerator) / Decimal(value.denominator)
    quantum = Decimal(1).scaleb(-places)
    return float(exact.quantize(quantum, rounding=ROUND_HALF_UP))


def is_low(kind: Kind, *, score: Fraction, nps_at_most: int | None, cli_at_most: float | None) -> bool:
    """Whether a response calls for a follow-up: its score (the NPS score, or the CLI mean) is at
    most the program's threshold for its kind; a ``None`` threshold never does."""
    limit = nps_at_most if kind == Kind.NPS else cli_at_most
    if limit is None:
        return False
    return score <= Fraction(str(limit))


@dataclass(frozen=True, slots=True)
class Response:
    """One response, reduced to what the report needs: the local day it was given, its kind,
    and its answers (one for NPS, three for CLI)."""

    day: date
    kind: Kind
    answers: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class Tally:
    """The figures of one set of responses. ``nps`` and ``cli`` are ``None`` without responses
    of their kind."""

    responses: int
    nps_responses: int
    promoters: int
    passives: int
    detractors: int
    nps: float | None
    cli_responses: int
    cli: float | None


def tally(responses: Iterable[Response]) -> Tally:
    counts = dict.fromkeys(NpsClass, 0)
    cli_total = 0
    cli_n = 0
    for r in responses:
        if r.kind == Kind.NPS:
            counts[classify(r.answers[0])] += 1
        else:
            check_cli(r.answers)
            cli_total += sum(r.answers)
            cli_n += 1
    nps_n = sum(counts.values())
    nps = None
    if nps_n:
        nps = round_half_up(
            Fraction(100 * (counts[NpsClass.PROMOTER] - counts[NpsClass.DETRACTOR]), nps_n), NPS_PLACES
        )
    cli = round_half_up(Fraction(cli_total, cli_n * len(CLI_QUESTIONS)), CLI_PLACES) if cli_n else None
    return Tally(
        responses=nps_n + cli_n,
        nps_responses=nps_n,
        promoters=counts[NpsClass.PROMOTER],
        passives=counts[NpsClass.PASSIVE],
        detractors=counts[NpsClass.DETRACTOR],
        nps=nps,
        cli_responses=cli_n,
        cli=cli,
    )


def period_start(day: date, interval: Interval) -> date:
    """The first day of the period holding ``day``: itself, its ISO week's Monday, or the 1st."""
    if interval == Interval.DAY:
        return day
    if interval == Interval.WEEK:
        return day - timedelta(days=day.weekday())
    return day.replace(day=1)


def next_start(start: date, interval: Interval) -> date:
    if interval == Interval.DAY:
        return start + timedelta(days=1)
    if interval == Interval.WEEK:
        return start + timedelta(days=7)
    return date(start.year + start.month // 12, start.month % 12 + 1, 1)


def periods(first: date, last: date, interval: Interval) -> list[tuple[date, date]]:
    """The periods covering ``first``..``last`` (inclusive), each as (first day, last day),
    clipped to the range so that a report never counts days it was not asked about."""
    if last < first:
        raise InvalidInput(f"from ({first}) is after to ({last})", field="from")
    out = []
    start = first
    while start <= last:
        end = min(next_start(period_start(start, interval), interval) - timedelta(days=1), last)
        out.append((start, end))
        start = end + timedelta(days=1)
    return out


def report(
    responses: Iterable[Response], first: date, last: date, interval: Interval
) -> tuple[list[tuple[date, date, Tally]], Tally]:
    """Per-period figures over ``first``..``last`` and the figures of the whole range. Every
    period is listed, with ``None`` scores where it has no responses."""
    spans = periods(first, last, interval)
    buckets: dict[date, list[Response]] = {start: [] for start, _ in spans}
    starts = [start for start, _ in spans]
    kept: list[Response] = []
    for r in responses:
        if not first <= r.day <= last:
            continue
        key = max(first, period_start(r.day, interval))
        buckets[key if key in buckets else starts[0]].append(r)
        kept.append(r)
    return [(s, e, tally(buckets[s])) for s, e in spans], tally(kept)
