"""Travel: great-circle distance between airports, for miles earned on flights."""

from __future__ import annotations

import math

EARTH_RADIUS_MILES = 3958.8


def great_circle_miles(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    """Haversine distance in statute miles on a sphere of radius 3,958.8 miles."""
    p1, p2 = math.radians(lat1), math.radians(lat2)
    dp, dl = p2 - p1, math.radians(lon2 - lon1)
    h = math.sin(dp / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2
    return 2 * EARTH_RADIUS_MILES * math.asin(min(1.0, math.sqrt(h)))


def flight_miles(distance: float, percent: int) -> int:
    """``floor(distance * percent / 100)``."""
    return math.floor(distance * percent / 100)
