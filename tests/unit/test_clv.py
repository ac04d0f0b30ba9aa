"""CLV models: BG/NBD and Gamma-Gamma recover the parameters customers were simulated from, predict
what those customers do next, and behave as a reader of the papers expects."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from numpy.typing import NDArray
from scipy import special

from patron.analytics import clv

TRUE_BG = clv.BgNbd(r=0.24, alpha=4.4, a=0.79, b=2.4)
TRUE_GG = clv.GammaGamma(p=6.0, q=4.0, v=15.0)


def simulate_bgnbd(
    rng: np.random.Generator, n: int, model: clv.BgNbd, *, weeks: float, holdout: float
) -> tuple[NDArray[np.int64], NDArray[np.float64], NDArray[np.float64], NDArray[np.int64]]:
    """Customers whose first purchase falls in the first 12 weeks, observed to ``weeks``; each
    buys as a Poisson process of rate ``lambda ~ Gamma(r, alpha)`` and after each repeat purchase
    drops out with probability ``p ~ Beta(a, b)``. Returns ``x, t_x, T`` and the purchases they
    make in the following ``holdout`` weeks."""
    lam = rng.gamma(model.r, 1 / model.alpha, n)
    p = rng.beta(model.a, model.b, n)
    T = weeks - rng.uniform(0, 12, n)
    lives = rng.geometric(p)  # the repeat purchase after which the customer drops out
    n_poisson = rng.poisson(lam * T)  # purchases an immortal customer would make by T
    x = np.minimum(n_poisson, lives)
    t_x = np.zeros(n)
    some = x > 0
    # the x-th of n_poisson arrival times, which are uniform on (0, T) given their number
    t_x[some] = T[some] * rng.beta(x[some], n_poisson[some] - x[some] + 1)
    alive = n_poisson < lives
    later = np.where(alive, np.minimum(rng.poisson(lam * holdout), lives - n_poisson), 0)
    return x, t_x, T, later


def simulate_gamma_gamma(
    rng: np.random.Generator, n: int, model: clv.GammaGamma
) -> tuple[NDArray[np.int64], NDArray[np.float64]]:
    """Customers with 1-9 repeat purchases, each worth ``Gamma(p, nu)``, ``nu ~ Gamma(q, v)``."""
    x = rng.integers(1, 10, n)
    nu = rng.gamma(model.q, 1 / model.v, n)
    return x, rng.gamma(model.p * x, 1 / (nu * x))  # the mean of x such values


def test_bgnbd_recovers_the_parameters_customers_were_drawn_from() -> None:
    x, t_x, T, _ = simulate_bgnbd(np.random.default_rng(7), 3000, TRUE_BG, weeks=39, holdout=0)
    fit = clv.fit_bgnbd(x, t_x, T)
    assert fit.r / fit.alpha == pytest.approx(TRUE_BG.r / TRUE_BG.alpha, rel=0.15)
    assert fit.a / (fit.a + fit.b) == pytest.approx(TRUE_BG.a / (TRUE_BG.a + TRUE_BG.b), rel=0.2)
    assert fit.r == pytest.approx(TRUE_BG.r, rel=0.25)
    # the maximum is a maximum: at least as likely as the truth
    assert fit.log_likelihood(x, t_x, T) >= TRUE_BG.log_likelihood(x, t_x, T)


def test_bgnbd_fit_does_not_depend_on_the_time_unit() -> None:
    x, t_x, T, _ = simulate_bgnbd(np.random.default_rng(3), 2000, TRUE_BG, weeks=39, holdout=0)
    weekly, daily = clv.fit_bgnbd(x, t_x, T), clv.fit_bgnbd(x, t_x * 7, T * 7)
    assert daily.alpha == pytest.approx(weekly.alpha * 7, rel=1e-3)
    assert (daily.r, daily.a, daily.b) == pytest.approx((weekly.r, weekly.a, weekly.b), rel=1e-3)


def test_expected_purchases_predict_what_customers_do_next() -> None:
    x, t_x, T, later = simulate_bgnbd(np.random.default_rng(11), 10_000, TRUE_BG, weeks=39, holdout=39)
    predicted = TRUE_BG.expected_purchases(39, x, t_x, T)
    assert predicted.sum() == pytest.approx(later.sum(), rel=0.08)
    for low, high in ((0, 0), (1, 1), (2, 3), (4, 10**6)):
        group = (x >= low) & (x <= high)
        assert predicted[group].sum() == pytest.approx(later[group].sum(), rel=0.2), (low, high)
    # and a model fitted to the same customers predicts nearly as well
    fitted = clv.fit_bgnbd(x, t_x, T).expected_purchases(39, x, t_x, T)
    assert fitted.sum() == pytest.approx(later.sum(), rel=0.1)


def test_expected_purchases_equal_the_papers_equation_10() -> None:
    x = np.array([0.0, 1, 3, 10, 25])
    t_x = np.array([0.0, 5, 20, 30, 38])
    T = np.array([10.0, 20, 30, 40, 39])
    for a in (0.5, 0.79, 1.5, 3.0):
        m = clv.BgNbd(r=0.3, alpha=5.0, a=a, b=2.4)
        t = 39.0
        z = t / (m.alpha + T + t)
        direct = (
            (m.a + m.b + x - 1)
            / (m.a - 1)
            * (
                1
                - ((m.alpha + T) / (m.alpha + T + t)) ** (m.r + x)
                * special.hyp2f1(m.r + x, m.b + x, m.a + m.b + x - 1, z)
            )
            / (1 + (x > 0) * m.a / (m.b + x - 1) * ((m.alpha + T) / (m.alpha + t_x)) ** (m.r + x))
        )
        assert m.expected_purchases(t, x, t_x, T) == pytest.approx(direct, rel=1e-9)


def test_expected_purchases_stay_right_where_dropout_barely_varies() -> None:
    # a, b in the millions: p is all but fixed at a/(a+b), where eq. 10 tends to
    # P(alive) * (1 - (1 + p t/(alpha+T))^-(r+x)) / p; hyp2f1 alone overflows here
    m = clv.BgNbd(r=0.24, alpha=0.08, a=1e6, b=1e7)
    p = m.a / (m.a + m.b)
    x, t_x, T = np.array([0.0, 3, 12]), np.array([0.0, 20, 0.3]), np.array([30.0, 30, 0.4])
    for t in (1.0, 52.0, 5000.0):
        limit = -np.expm1(-(m.r + x) * np.log1p(p * t / (m.alpha + T))) / p * m.p_alive(x, t_x, T)
        assert m.expected_purchases(t, x, t_x, T) == pytest.approx(limit, rel=1e-4)


def test_p_alive_is_one_without_repeat_purchases_and_falls_with_silence() -> None:
    assert TRUE_BG.p_alive([0, 0, 0], [0, 0, 0], [1, 30, 500]) == pytest.approx(1.0)
    silence = TRUE_BG.p_alive(np.full(5, 3), np.full(5, 10.0), np.array([10.0, 15, 20, 30, 50]))
    # just after a purchase the customer dropped out with the mean p given x: a / (a + b + x - 1)
    just_bought = (TRUE_BG.b + 2) / (TRUE_BG.a + TRUE_BG.b + 2)
    assert silence[0] == pytest.approx(just_bought)
    assert np.all(np.diff(silence) < 0)
    assert silence[-1] < 0.2
    # a more recent last purchase means more likely alive
    recent = TRUE_BG.p_alive(np.full(4, 3), np.array([5.0, 10, 20, 30]), np.full(4, 30.0))
    assert np.all(np.diff(recent) > 0)
    assert recent[-1] == pytest.approx(just_bought)


def test_expected_purchases_grow_with_frequency_and_horizon() -> None:
    x = np.arange(0, 20)
    busy = TRUE_BG.expected_purchases(39, x, np.full(20, 30.0), np.full(20, 30.0))
    assert np.all(np.diff(busy) > 0)
    horizons = [TRUE_BG.expected_purchases(t, 2, 10.0, 20.0) for t in (1, 10, 39, 100)]
    assert np.all(np.diff(horizons) > 0)
    assert TRUE_BG.expected_purchases(1e-9, 2, 10.0, 20.0) == pytest.approx(0, abs=1e-6)


def test_gamma_gamma_recovers_the_spend_model() -> None:
    x, m = simulate_gamma_gamma(np.random.default_rng(5), 3000, TRUE_GG)
    fit = clv.fit_gamma_gamma(x, m)
    assert fit.mean_spend == pytest.approx(TRUE_GG.mean_spend, rel=0.05)
    assert fit.q == pytest.approx(TRUE_GG.q, rel=0.15)
    assert fit.p == pytest.approx(TRUE_GG.p, rel=0.35)
    assert fit.v == pytest.approx(TRUE_GG.v, rel=0.35)
    assert fit.log_likelihood(x, m) >= TRUE_GG.log_likelihood(x, m)


def test_expected_spend_moves_from_the_population_mean_to_the_customers_own() -> None:
    gg = TRUE_GG
    assert gg.expected_spend(0, np.nan) == pytest.approx(gg.mean_spend)
    own = 80.0
    spends = gg.expected_spend(np.array([1, 5, 50, 5000]), np.full(4, own))
    assert np.all(np.diff(spends) > 0)
    assert gg.mean_spend < spends[0] and spends[-1] == pytest.approx(own, rel=0.01)


def test_summary_counts_purchase_days_up_to_the_calibration_end() -> None:
    # customer 0: two purchases on day 100 (4 + 6), one on day 114, one after the end (day 130)
    # customer 1: one purchase on day 107;  customer 2: only after the end
    customers, s = clv.summarise(
        [0, 0, 1, 0, 0, 2],
        [100, 100, 107, 114, 130, 140],
        [4.0, 6.0, 3.0, 12.0, 99.0, 5.0],
        end_day=128,
        unit_days=7,
    )
    assert customers.tolist() == [0, 1]
    assert s.frequency.tolist() == [1, 0]
    assert s.recency.tolist() == [2.0, 0.0]
    assert s.T.tolist() == [4.0, 3.0]
    assert s.monetary[0] == 12.0  # the first purchase day is not a repeat purchase
    assert np.isnan(s.monetary[1])


def test_too_few_customers_is_insufficient_data() -> None:
    with pytest.raises(clv.InsufficientData, match="at least 10"):
        clv.fit_bgnbd([1, 2, 0], [1.0, 2.0, 0.0], [3.0, 3.0, 3.0])
    with pytest.raises(clv.InsufficientData, match="repeat purchase"):
        clv.fit_bgnbd([0] * 20 + [1], [0.0] * 20 + [1.0], [5.0] * 21)


summaries = st.integers(min_value=12, max_value=40).flatmap(
    lambda n: st.tuples(
        st.lists(st.integers(0, 12), min_size=n, max_size=n),
        st.lists(st.floats(0, 1), min_size=n, max_size=n),
        st.lists(st.floats(0, 60), min_size=n, max_size=n),
        st.lists(st.sampled_from([1.0, 2.5, 2.5, 9.99, 40.0, 1000.0]), min_size=n, max_size=n),
    )
)


@settings(max_examples=25, deadline=None)
@given(summaries)
def test_any_data_is_valued_finitely_or_refused_as_insufficient(
    data: tuple[list[int], list[float], list[float], list[float]],
) -> None:
    xs, where, ages, values = data
    x = np.array(xs)
    T = np.array(ages)
    t_x = np.where(x > 0, T * np.array(where), 0.0)
    summary = clv.Summary(x, t_x, T, np.where(x > 0, np.array(values), np.nan))
    try:
        v = clv.value_customers(summary, 52)
    except clv.InsufficientData:
        return
    assert np.all(np.isfinite(v.clv)) and np.all(v.clv >= 0)
    assert np.all((v.p_alive >= 0) & (v.p_alive <= 1))  # may underflow to 0 for the long silent
    assert np.all(v.expected_purchases >= 0)
