"""Words and numbers as people read them: money, points, dates, tier progress, ledger lines."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

#: Currencies whose minor unit is not a hundredth (ISO 4217); all others have two decimals.
EXPONENTS = {
    "BIF": 0, "CLP": 0, "DJF": 0, "GNF": 0, "ISK": 0, "JPY": 0, "KMF": 0, "KRW": 0, "PYG": 0,
    "RWF": 0, "UGX": 0, "UYI": 0, "VND": 0, "VUV": 0, "XAF": 0, "XOF": 0, "XPF": 0,
    "BHD": 3, "IQD": 3, "JOD": 3, "KWD": 3, "LYD": 3, "OMR": 3, "TND": 3,
}  # fmt: skip
SYMBOLS = {"USD": "$", "EUR": "€", "GBP": "£", "JPY": "¥", "CAD": "CA$", "AUD": "A$", "CHF": "CHF "}
MINUS = "\u2212"


def money(minor: int | None, currency: str) -> str:
    """``12345, "USD"`` -> ``$123.45``; a negative amount gets a true minus sign."""
    if minor is None:
        return ""
    exponent = EXPONENTS.get(currency, 2)
    major = abs(minor) / 10**exponent
    symbol = SYMBOLS.get(currency)
    number = f"{major:,.{exponent}f}"
    text = f"{symbol}{number}" if symbol else f"{number} {currency}"
    return (MINUS + text) if minor < 0 else text


def points(n: int | None) -> str:
    if n is None:
        return ""
    return (MINUS if n < 0 else "") + f"{abs(n):,}"


def signed(n: int) -> str:
    """``+12`` / ``-4`` (with a true minus sign) / ``0``."""
    if n > 0:
        return f"+{n:,}"
    return points(n)


def day(at: datetime | None, tz: str = "UTC") -> str:
    """``31 Dec 2026`` in the given timezone."""
    if at is None:
        return ""
    local = at.astimezone(ZoneInfo(tz))
    return f"{local.day} {local:%b %Y}"


def when(at: datetime | None, tz: str = "UTC") -> str:
    """``31 Dec 2026, 14:05`` in the given timezone."""
    if at is None:
        return ""
    local = at.astimezone(ZoneInfo(tz))
    return f"{local.day} {local:%b %Y, %H:%M}"


def last_day(end: datetime, tz: str) -> str:
    """The last local day of a period that ends (exclusively) at ``end``."""
    return day(end - timedelta(microseconds=1), tz)


def metric_amount(metric: str, amount: int, program: dict[str, Any]) -> str:
    if metric == "qualifying_spend":
        return money(amount, program["currency"])
    if metric == "visits":
        return f"{amount:,} visit" + ("" if amount == 1 else "s")
    return f"{amount:,} {program['points_name']}"


def _more(metric: str, remaining: int, program: dict[str, Any]) -> str:
    if metric == "qualifying_spend":
        return f"Spend {money(remaining, program['currency'])} more"
    if metric == "visits":
        return f"Visit {remaining:,} more time" + ("" if remaining == 1 else "s")
    return f"Earn {remaining:,} more {program['points_name']}"


def tier_sentences(tier: dict[str, Any], program: dict[str, Any]) -> list[str]:
    """What the member needs next, in words: ``Spend $123.00 more by 31 Dec 2026 to reach Gold``."""
    current, qualifying = tier.get("current"), tier.get("qualifying")
    if qualifying is None:
        return []
    metric, tz = qualifying["metric"], program["timezone"]
    rolling = tier.get("period") == "rolling_12_months"
    by = "" if rolling else f" by {last_day(qualifying['period_end'], tz)}"
    out = []
    nxt, keep = tier.get("next"), tier.get("keep")
    if nxt is not None and nxt["remaining"] > 0:
        line = f"{_more(metric, nxt['remaining'], program)}{by} to reach {nxt['name']}."
        if rolling:
            line += " What you spent in the last 12 months counts."
        out.append(line)
    elif nxt is None and current is not None:
        out.append(f"You are in our top tier, {current['name']}.")
    if current is not None and keep and keep.get("remaining"):
        out.append(f"{_more(metric, keep['remaining'], program)}{by} to keep {current['name']}.")
    elif current is not None and keep is not None and keep.get("by") and _threshold(tier, current["id"]):
        out.append(f"You have qualified to keep {current['name']}.")
    return out


def _threshold(tier: dict[str, Any], level_id: str) -> int:
    return next((int(lv["threshold"]) for lv in tier.get("levels", []) if lv["id"] == level_id), 0)


def tier_progress_percent(tier: dict[str, Any]) -> int:
    """How far the qualifying value is toward the next level's threshold, 0-100."""
    nxt, qualifying = tier.get("next"), tier.get("qualifying")
    if qualifying is None:
        return 0
    if nxt is None:
        return 100
    target = _threshold(tier, nxt["id"])
    if target <= 0:
        return 100
    return max(0, min(100, round(100 * int(qualifying["value"]) / target)))


def _words(name: str) -> str:
    return name.replace("_", " ").replace("-", " ").strip().capitalize()


def explain(entry: dict[str, Any], program: dict[str, Any]) -> str:
    """One ledger journal in plain words, e.g. ``Purchase of $9.00 at Downtown``."""
    kind, event_type = entry["kind"], entry.get("event_type")
    at = f" at {entry['location']}" if entry.get("location") else ""
    reward = entry.get("reward") or "a reward"
    currency = program["currency"]
    if kind == "earn":
        if event_type == "purchase":
            amount = entry.get("amount")
            return f"Purchase of {money(amount, currency)}{at}" if amount is not None else f"Purchase{at}"
        if event_type == "visit":
            return f"Check-in{at}"
        if event_type == "flight":
            return "Flight"
        return _words(event_type or "points earned") + at
    texts = {
        "milestone": f"Milestone bonus: {entry.get('reason') or 'well done'}",
        "refund": f"Refund{at}: points for the returned items taken back",
        "cancel": f"Purchase cancelled{at}: its points taken back",
        "adjustment": f"Adjustment by our team: {entry.get('reason') or 'correction'}",
        "release": "Pending points became available",
        "expiry": "Points expired",
        "reservation": f"Reserved {reward}",
        "redemption": f"Used {reward}",
        "cancellation": f"Cancelled {reward}: points returned",
        "lapse": f"Reservation of {reward} lapsed: points returned",
    }
    return texts.get(kind, _words(kind))


def entry_points(entry: dict[str, Any]) -> str:
    """The change a member sees: ``+12``, ``+12 pending``, ``-100``, or a dash when points only moved."""
    delta = entry["delta"]
    if entry["points"] == 0:
        return "\u2014"
    if delta["pending"] and not delta["available"]:
        return f"{signed(entry['points'])} pending"
    return signed(entry["points"])
