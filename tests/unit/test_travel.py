"""Great-circle miles on a sphere of radius 3,958.8, checked against other formulations."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from patron.domain.travel import flight_miles, great_circle_miles

R = 3958.8
JFK = (40.639928, -73.778692)
LHR = (51.4706, -0.46194)


def law_of_cosines(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    p1, p2, dl = math.radians(lat1), math.radians(lat2), math.radians(lon2 - lon1)
    c = math.sin(p1) * math.sin(p2) + math.cos(p1) * math.cos(p2) * math.cos(dl)
    return R * math.acos(max(-1.0, min(1.0, c)))


def vector_angle(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    """The angle between the two points' unit vectors, by atan2(|a x b|, a . b)."""

    def unit(lat: float, lon: float) -> tuple[float, float, float]:
        p, lam = math.radians(lat), math.radians(lon)
        return (math.cos(p) * math.cos(lam), math.cos(p) * math.sin(lam), math.sin(p))

    a, b = unit(lat1, lon1), unit(lat2, lon2)
    cross = (a[1] * b[2] - a[2] * b[1], a[2] * b[0] - a[0] * b[2], a[0] * b[1] - a[1] * b[0])
    dot = sum(x * y for x, y in zip(a, b, strict=True))
    return R * math.atan2(math.hypot(*cross), dot)


def test_jfk_to_lhr() -> None:
    miles = great_circle_miles(*JFK, *LHR)
    assert 3440 < miles < 3460
    assert miles == pytest.approx(law_of_cosines(*JFK, *LHR), abs=1)
    assert miles == pytest.approx(vector_angle(*JFK, *LHR), abs=1)
    assert great_circle_miles(*LHR, *JFK) == pytest.approx(miles)


def test_degenerate_distances() -> None:
    assert great_circle_miles(*JFK, *JFK) == 0
    assert great_circle_miles(0, 0, 0, 180) == pytest.approx(math.pi * R)
    assert great_circle_miles(90, 0, -90, 0) == pytest.approx(math.pi * R)
    # a quarter of the equator
    assert great_circle_miles(0, 0, 0, 90) == pytest.approx(math.pi * R / 2)
    # longitude wraps: 179 E to 179 W is 2 degrees, not 358
    assert great_circle_miles(0, 179, 0, -179) == pytest.approx(2 * math.pi * R / 180)


latitudes = st.floats(-90, 90, allow_nan=False)
longitudes = st.floats(-180, 180, allow_nan=False)


@given(lat1=latitudes, lon1=longitudes, lat2=latitudes, lon2=longitudes)
def test_agrees_with_other_formulations(lat1: float, lon1: float, lat2: float, lon2: float) -> None:
    miles = great_circle_miles(lat1, lon1, lat2, lon2)
    assert 0 <= miles <= math.pi * R + 1e-6
    assert miles == pytest.approx(vector_angle(lat1, lon1, lat2, lon2), abs=0.01)
    assert miles == pytest.approx(law_of_cosines(lat1, lon1, lat2, lon2), abs=1)
    assert miles == pytest.approx(great_circle_miles(lat2, lon2, lat1, lon1), abs=1e-6)


def test_flight_miles_floor_the_percentage() -> None:
    assert flight_miles(1000.0, 150) == 1500
    assert flight_miles(999.99, 100) == 999
    assert flight_miles(3451.2, 150) == 5176  # 5176.8
    assert flight_miles(3451.2, 0) == 0
    jfk_lhr = great_circle_miles(*JFK, *LHR)
    assert flight_miles(jfk_lhr, 150) == math.floor(law_of_cosines(*JFK, *LHR) * 1.5)
