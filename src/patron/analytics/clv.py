"""Customer lifetime value: BG/NBD for purchase frequency and P(alive), Gamma-Gamma for spend.

Pure model code on numpy arrays: no database, no clock. Each customer is summarised by

* ``x``   (frequency) the number of *repeat* purchase days in the calibration period (purchases
  on one day count as one, and the first purchase day is not a repeat);
* ``t_x`` (recency) the time from the first purchase day to the last one;
* ``T``   the time from the first purchase day to the end of the calibration period;
* ``m``   the mean value of the repeat purchase days (undefined when ``x == 0``).

BG/NBD (Fader, Hardie and Lee 2005, "Counting your customers the easy way"): while alive a
customer buys as a Poisson process of rate ``lambda ~ Gamma(r, alpha)`` (shape ``r``, rate
``alpha``); after each repeat purchase they drop out for good with probability
``p ~ Beta(a, b)``. The likelihood of one customer (their eq. 6) is::

    L = B(a, b+x)/B(a, b) * Gamma(r+x) alpha^r / (Gamma(r) (alpha+T)^(r+x))
      + [x > 0] B(a+1, b+x-1)/B(a, b) * Gamma(r+x) alpha^r / (Gamma(r) (alpha+t_x)^(r+x))

The probability that the customer is still alive at ``T`` (their eq. in section 3.3) is::

    P(alive | x, t_x, T) = 1 / (1 + [x > 0] a/(b+x-1) ((alpha+T)/(alpha+t_x))^(r+x))

so a customer with no repeat purchase is alive with probability 1 (in BG/NBD nobody drops out
before a repeat purchase). Expected purchases in the next ``t`` time units (their eq. 10)::

    E[Y(t) | x, t_x, T] = (a+b+x-1)/(a-1)
        * (1 - ((alpha+T)/(alpha+T+t))^(r+x) 2F1(r+x, b+x; a+b+x-1; t/(alpha+T+t)))
        * P(alive | x, t_x, T)

evaluated with Euler's transformation ``2F1(A, B; C; z) = (1-z)^(C-A-B) 2F1(C-A, C-B; C; z)``,
which turns the bracket into ``1 - (1-z)^(a-1) 2F1(a+b-1-r, a-1; a+b+x-1; z)``: the same number,
but with hypergeometric parameters that do not grow with ``x``. Where ``hyp2f1`` fails (extreme
parameters), the same expectation is taken numerically over ``p`` (see
:meth:`BgNbd._purchases_if_alive`).

Gamma-Gamma (Fader and Hardie 2013, "The Gamma-Gamma model of monetary value"): the value of
each transaction is ``Gamma(p, nu)`` around a customer's mean ``p/nu``, with ``nu ~ Gamma(q, v)``
across customers. The likelihood of a customer's mean ``m`` over ``x`` transactions is::

    f(m | p, q, v; x) = Gamma(p x + q) / (Gamma(p x) Gamma(q))
                        * v^q m^(p x - 1) x^(p x) / (v + m x)^(p x + q)

and the expected value of their next transactions is the weighted mean of the population mean
``p v/(q-1)`` and their own mean ``m``::

    E[M | p, q, v, m, x] = (q-1)/(p x + q - 1) * p v/(q-1) + p x/(p x + q - 1) * m

Both models are fitted by maximum likelihood (bounded truncated Newton with analytic gradients,
on the logs of the parameters so that they stay positive; ``q`` is kept above 1 so that the
population mean spend, and hence the value of a customer without repeat purchases, is finite). CLV over a
horizon is expected purchases over the horizon times expected spend, undiscounted.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy import optimize, special

from patron.domain.errors import InvalidInput

Floats = NDArray[np.float64]
Ints = NDArray[np.int64]

#: Length of each time unit in days; a month is a twelfth of a Julian year.
TIME_UNITS: Final[dict[str, float]] = {"day": 1.0, "week": 7.0, "month": 365.25 / 12}

#: The least data the models are fitted to: customers with a purchase, and of those, customers
#: with a repeat purchase of positive value (Gamma-Gamma has three parameters to identify).
MIN_CUSTOMERS: Final = 10
MIN_REPEAT_CUSTOMERS: Final = 5

_LOG_BOUND: Final = 30.0  # |log parameter| at most: keeps degenerate data finite


class InsufficientData(InvalidInput):
    """Too few customers, or data that cannot identify the model."""

    code = "insufficient-data"
    title = "Not enough data to fit the model"


@dataclass(frozen=True, slots=True)
class Summary:
    """Per-customer calibration statistics, one entry per customer, in one time unit."""

    frequency: Ints
    recency: Floats
    T: Floats
    monetary: Floats  # mean value of repeat purchase days; NaN where frequency == 0


def summarise(
    customer: ArrayLike,
    day: ArrayLike,
    value: ArrayLike,
    *,
    end_day: int,
    unit_days: float,
) -> tuple[Ints, Summary]:
    """Summarise purchases ``(customer, day, value)`` up to and including ``end_day``.

    ``customer`` are integer codes, ``day`` day numbers (e.g. ordinals of local dates), ``value``
    the purchases' values. Purchases of one customer on one day merge into one purchase day whose
    value is their sum. Returns the codes of the customers with a purchase (ascending) and their
    summary; ``recency`` and ``T`` are ``days / unit_days``.
    """
    c = np.asarray(customer, dtype=np.int64)
    d = np.asarray(day, dtype=np.int64)
    v = np.asarray(value, dtype=np.float64)
    keep = d <= end_day
    c, d, v = c[keep], d[keep], v[keep]
    order = np.lexsort((d, c))
    c, d, v = c[order], d[order], v[order]
    if len(c) == 0:
        empty = np.zeros(0)
        return c, Summary(c.copy(), empty, empty.copy(), empty.copy())
    new_day = np.ones(len(c), dtype=bool)
    new_day[1:] = (c[1:] != c[:-1]) | (d[1:] != d[:-1])
    at = np.flatnonzero(new_day)
    c, d, v = c[at], d[at], np.add.reduceat(v, at)
    first = np.ones(len(c), dtype=bool)
    first[1:] = c[1:] != c[:-1]
    starts = np.flatnonzero(first)
    days = np.diff(np.append(starts, len(c)))
    frequency = days - 1
    repeat_total = np.add.reduceat(v, starts) - v[starts]
    monetary = np.full(len(starts), np.nan)
    np.divide(repeat_total, frequency, out=monetary, where=frequency > 0)
    first_day = d[starts]
    summary = Summary(
        frequency=frequency.astype(np.int64),
        recency=(d[starts + days - 1] - first_day) / unit_days,
        T=(end_day - first_day) / unit_days,
        monetary=monetary,
    )
    return c[starts], summary


# --- BG/NBD -------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class BgNbd:
    """Fitted BG/NBD parameters, ``alpha`` in the time unit of the data."""

    r: float
    alpha: float
    a: float
    b: float

    def p_alive(self, x: ArrayLike, t_x: ArrayLike, T: ArrayLike) -> Floats:
        """P(alive | x, t_x, T) = 1 / (1 + [x>0] a/(b+x-1) ((alpha+T)/(alpha+t_x))^(r+x))."""
        xs, tx, big_t = _arrays(x, t_x, T)
        r, alpha, a, b = self.r, self.alpha, self.a, self.b
        repeat = xs > 0
        log_odds = np.where(
            repeat,
            np.log(a)
            - np.log(np.where(repeat, b + xs - 1, 1.0))
            + (r + xs) * (np.log(alpha + big_t) - np.log(alpha + tx)),
            -np.inf,
        )
        out: Floats = special.expit(-log_odds)
        return out

    def expected_purchases(self, t: float, x: ArrayLike, t_x: ArrayLike, T: ArrayLike) -> Floats:
        """E[Y(t) | x, t_x, T]: expected purchases in the next ``t`` units (FHL 2005, eq. 10)."""
        xs, tx, big_t = np.broadcast_arrays(*_arrays(x, t_x, T))
        if_alive = self._purchases_if_alive(t, xs.ravel(), big_t.ravel()).reshape(xs.shape)
        out: Floats = if_alive * self.p_alive(xs, tx, big_t)
        return out

    def _purchases_if_alive(self, t: float, x: Floats, T: Floats) -> Floats:
        """Expected purchases in the next ``t`` units of a customer alive at ``T``: the mean over
        ``p ~ Beta(a, b+x)`` of ``g(p) = (1 - (1 + p c)^-(r+x)) / p``, ``c = t/(alpha+T)``.

        In closed form this is eq. 10 without its P(alive) factor. ``scipy.special.hyp2f1`` loses
        its way in extreme corners (``a`` or ``b`` in the thousands, as when the data show no
        heterogeneity in dropout), so the closed form is checked against Jensen's bounds (``g``
        is convex and decreasing: ``g(mean p) <= E g <= (1 - mean p) g(0) + mean p g(1)``) and
        where it fails them the mean is taken over ``Beta(a, b+x)`` quantiles instead.
        """
        r, alpha, b = self.r, self.alpha, self.b
        a = self.a if abs(self.a - 1.0) > 1e-9 else 1.0 + 1e-9  # removable singularity at a = 1
        s, c = r + x, t / (alpha + T)
        z = t / (alpha + T + t)
        with np.errstate(all="ignore"):
            hyp = special.hyp2f1(a + b - 1 - r, a - 1, a + b + x - 1, z)
            out: Floats = (a + b + x - 1) / (a - 1) * -np.expm1((a - 1) * np.log1p(-z) + np.log(hyp))
        mean_p = a / (a + b + x)
        low = _purchases_given_p(mean_p, s, c)
        high = (1 - mean_p) * s * c + mean_p * _purchases_given_p(1.0, s, c)
        wrong = ~((out >= low * (1 - 1e-6)) & (out <= high * (1 + 1e-6)))  # NaN is wrong too
        if wrong.any():
            out[wrong] = _mean_by_quantiles(a, b + x[wrong], s[wrong], c[wrong])
        return out

    def log_likelihood(self, x: ArrayLike, t_x: ArrayLike, T: ArrayLike) -> float:
        """The log-likelihood of the data (sum over customers of the log of eq. 6)."""
        xs, tx, big_t = _arrays(x, t_x, T)
        ll, _ = _bgnbd_ll(np.log([self.r, self.alpha, self.a, self.b]), xs, tx, big_t, False)
        return float(ll.sum())


_QUANTILES: Final = 256


def _purchases_given_p(p: ArrayLike, s: ArrayLike, c: ArrayLike) -> Floats:
    """``g(p) = (1 - (1 + p c)^-s) / p`` (``s c`` at ``p = 0``): the expected purchases of a customer
    alive now, with dropout probability ``p``, averaged over their Gamma purchase rate."""
    p_, s_, c_ = np.broadcast_arrays(*_arrays(p, s, c))
    with np.errstate(all="ignore"):
        out: Floats = np.where(p_ > 0, -np.expm1(-s_ * np.log1p(p_ * c_)) / p_, s_ * c_)
    return out


def _mean_by_quantiles(a: float, b: Floats, s: Floats, c: Floats) -> Floats:
    """The mean of ``g(p)`` over ``p ~ Beta(a, b)`` by the midpoint rule in probability: ``g`` at
    the Beta's ``(i + 1/2)/N`` quantiles. Quantiles are computed once per distinct ``b``."""
    u = (np.arange(_QUANTILES) + 0.5) / _QUANTILES
    out = np.empty(len(b))
    keys, which = np.unique(b, return_inverse=True)
    for k, key in enumerate(keys):  # one pass per distinct frequency, not per customer
        p = special.betaincinv(a, key, u)
        rows = np.flatnonzero(which == k)
        for start in range(0, len(rows), 4096):  # bounded memory: 4096 x N at a time
            chunk = rows[start : start + 4096]
            out[chunk] = _purchases_given_p(p[None, :], s[chunk, None], c[chunk, None]).mean(axis=1)
    return out


def _arrays(x: ArrayLike, t_x: ArrayLike, T: ArrayLike) -> tuple[Floats, Floats, Floats]:
    return (
        np.asarray(x, dtype=np.float64),
        np.asarray(t_x, dtype=np.float64),
        np.asarray(T, dtype=np.float64),
    )


def _bgnbd_ll(theta: Floats, x: Floats, t_x: Floats, T: Floats, grad: bool) -> tuple[Floats, Floats | None]:
    """Per-customer log-likelihood (eq. 6) at ``theta = log(r, alpha, a, b)``, and if ``grad``
    the per-customer gradient with respect to ``theta`` (shape ``(4, n)``). The log-gamma and
    digamma terms depend on ``x`` alone and are computed once per distinct frequency."""
    r, alpha, a, b = np.exp(theta)
    xu, at = np.unique(x, return_inverse=True)
    repeat = x > 0
    bx1 = np.where(repeat, b + x - 1, 1.0)
    common = (
        special.gammaln(r + xu)
        - special.gammaln(r)
        + r * np.log(alpha)
        + special.gammaln(a + b)
        + special.gammaln(b + xu)
        - special.gammaln(b)
        - special.gammaln(a + b + xu)
    )[at]
    log_t, log_tx = np.log(alpha + T), np.log(alpha + t_x)
    alive = -(r + x) * log_t
    dead = np.where(repeat, np.log(a) - np.log(bx1) - (r + x) * log_tx, -np.inf)
    tail = np.logaddexp(alive, dead)
    ll: Floats = common + tail
    if not grad:
        return ll, None
    w_dead = np.exp(dead - tail)  # the share of the second term: 0 when x == 0
    w_alive = 1.0 - w_dead
    dg_ab = special.digamma(a + b)
    dg_abx = special.digamma(a + b + xu)[at]
    d_r = (
        (special.digamma(r + xu) - special.digamma(r))[at] + np.log(alpha) - w_alive * log_t - w_dead * log_tx
    )
    d_alpha = r / alpha - (r + x) * (w_alive / (alpha + T) + w_dead / (alpha + t_x))
    d_a = dg_ab - dg_abx + w_dead / a
    d_b = dg_ab + (special.digamma(b + xu) - special.digamma(b))[at] - dg_abx - w_dead / bx1
    g: Floats = np.stack([d_r * r, d_alpha * alpha, d_a * a, d_b * b])
    return ll, g


def fit_bgnbd(frequency: ArrayLike, recency: ArrayLike, T: ArrayLike) -> BgNbd:
    """Maximum-likelihood BG/NBD parameters for customers ``(x, t_x, T)``.

    Times are divided by their mean before fitting (``alpha`` scales with the time unit and is
    scaled back), and identical customers are counted once with a weight, so that day-granular
    data of many customers costs little.
    """
    x, t_x, big_t = _arrays(frequency, recency, T)
    _check_bgnbd_data(x, t_x, big_t)
    scale = float(big_t.mean())
    rows, weight = np.unique(np.stack([x, t_x / scale, big_t / scale], axis=1), axis=0, return_counts=True)
    ux, utx, ut = rows[:, 0], rows[:, 1], rows[:, 2]
    w = weight.astype(np.float64)
    total = float(w.sum())

    def objective(theta: Floats) -> tuple[float, Floats]:
        ll, g = _bgnbd_ll(theta, ux, utx, ut, True)
        assert g is not None
        return -float(w @ ll) / total, -(g @ w) / total

    rate = float((w @ ux) / max(float(w @ ut), 1e-9))  # repeat purchases per unit time
    start = np.log([1.0, 1.0 / max(rate, 1e-3), 1.0, 1.0])
    theta = _minimise(objective, np.clip(start, -_LOG_BOUND + 1, _LOG_BOUND - 1), 4)
    r, alpha, a, b = np.exp(theta)
    return BgNbd(r=float(r), alpha=float(alpha * scale), a=float(a), b=float(b))


def _check_bgnbd_data(x: Floats, t_x: Floats, T: Floats) -> None:
    if not (x.shape == t_x.shape == T.shape and x.ndim == 1):
        raise ValueError("frequency, recency and T must be 1-d arrays of one length")
    if len(x) < MIN_CUSTOMERS:
        raise InsufficientData(
            f"{len(x)} customers with a purchase by the calibration end; at least {MIN_CUSTOMERS} "
            "are needed to fit the model"
        )
    if np.count_nonzero(x > 0) < MIN_REPEAT_CUSTOMERS:
        raise InsufficientData(
            f"{np.count_nonzero(x > 0)} customers made a repeat purchase by the calibration end; at "
            f"least {MIN_REPEAT_CUSTOMERS} are needed to fit the model"
        )
    if not (np.all(x >= 0) and np.all(t_x >= 0) and np.all(t_x <= T) and np.all(np.isfinite(T))):
        raise ValueError("need x >= 0 and 0 <= t_x <= T")
    if float(T.mean()) <= 0:
        raise InsufficientData("every customer's first purchase is on the calibration end")


def _minimise(objective: Any, start: Floats, n: int) -> Floats:
    """Bounded truncated Newton (TNC) within the log bounds, with the analytic gradient.

    TNC rather than L-BFGS-B: scipy's L-BFGS-B calls BLAS at every iteration, and with a few
    parameters the BLAS threads cost far more than the arithmetic (tens of times slower on a busy
    machine). On degenerate data the optimiser may stop in a flat valley towards a bound; its
    point is then as good as any, and is kept when finite.
    """
    with np.errstate(all="ignore"):
        res = optimize.minimize(
            objective,
            start,
            jac=True,
            method="TNC",
            bounds=[(-_LOG_BOUND, _LOG_BOUND)] * n,
            options={"maxfun": 2000},
        )
    theta = np.asarray(res.x, dtype=np.float64)
    if not (np.isfinite(res.fun) and np.all(np.isfinite(theta))):
        raise InsufficientData("the model could not be fitted to this data")
    return theta


# --- Gamma-Gamma --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class GammaGamma:
    """Fitted Gamma-Gamma parameters, ``v`` in the currency unit of the data."""

    p: float
    q: float
    v: float

    @property
    def mean_spend(self) -> float:
        """The population mean of customers' mean spend, ``p v / (q - 1)``."""
        return self.p * self.v / (self.q - 1)

    def expected_spend(self, x: ArrayLike, m: ArrayLike) -> Floats:
        """E[M | x, m] = (q-1)/(px+q-1) * pv/(q-1) + px/(px+q-1) * m; ``m`` is ignored where
        ``x == 0`` (the population mean then)."""
        xs = np.asarray(x, dtype=np.float64)
        ms = np.where(xs > 0, np.asarray(m, dtype=np.float64), 0.0)
        p, q, v = self.p, self.q, self.v
        out: Floats = p * (v + xs * ms) / (p * xs + q - 1)
        return out

    def log_likelihood(self, x: ArrayLike, m: ArrayLike) -> float:
        """The log-likelihood of the customers' mean spends (x > 0, m > 0)."""
        theta = np.array([np.log(self.p), np.log(self.q - 1), np.log(self.v)])
        ll, _ = _gg_ll(theta, np.asarray(x, dtype=np.float64), np.asarray(m, dtype=np.float64), False)
        return float(ll.sum())


def _gg_ll(theta: Floats, x: Floats, m: Floats, grad: bool) -> tuple[Floats, Floats | None]:
    """Per-customer Gamma-Gamma log-likelihood at ``theta = (log p, log(q-1), log v)``; the
    (di)gamma terms are computed once per distinct ``x``."""
    p, v = np.exp(theta[0]), np.exp(theta[2])
    q = 1.0 + np.exp(theta[1])
    xu, at = np.unique(x, return_inverse=True)
    pxu = p * xu
    px = p * x
    log_m, log_vxm = np.log(m), np.log(v + x * m)
    per_x = special.gammaln(pxu + q) - special.gammaln(pxu) - special.gammaln(q) + pxu * np.log(xu)
    ll: Floats = per_x[at] + q * np.log(v) + (px - 1) * log_m - (px + q) * log_vxm
    if not grad:
        return ll, None
    dg = special.digamma(pxu + q)
    d_p = x * ((dg - special.digamma(pxu) + np.log(xu))[at] + log_m - log_vxm)
    d_q = (dg - special.digamma(q))[at] + np.log(v) - log_vxm
    d_v = q / v - (px + q) / (v + x * m)
    g: Floats = np.stack([d_p * p, d_q * (q - 1), d_v * v])
    return ll, g


def fit_gamma_gamma(frequency: ArrayLike, monetary: ArrayLike) -> GammaGamma:
    """Maximum-likelihood Gamma-Gamma parameters from repeat customers' ``(x, m)``, x > 0, m > 0.

    Values are divided by their mean before fitting (``v`` scales with the currency unit).
    """
    x = np.asarray(frequency, dtype=np.float64)
    m = np.asarray(monetary, dtype=np.float64)
    if x.shape != m.shape or x.ndim != 1:
        raise ValueError("frequency and monetary must be 1-d arrays of one length")
    if not (np.all(x > 0) and np.all(m > 0) and np.all(np.isfinite(m))):
        raise ValueError("Gamma-Gamma takes customers with x > 0 and a positive mean spend")
    if len(x) < MIN_REPEAT_CUSTOMERS:
        raise InsufficientData(
            f"{len(x)} customers have repeat purchases of positive value; at least "
            f"{MIN_REPEAT_CUSTOMERS} are needed to fit the spend model"
        )
    scale = float(m.mean())
    rows, weight = np.unique(np.stack([x, m / scale], axis=1), axis=0, return_counts=True)
    ux, um = rows[:, 0], rows[:, 1]
    w = weight.astype(np.float64)
    total = float(w.sum())

    def objective(theta: Floats) -> tuple[float, Floats]:
        ll, g = _gg_ll(theta, ux, um, True)
        assert g is not None
        return -float(w @ ll) / total, -(g @ w) / total

    theta = _minimise(objective, np.zeros(3), 3)
    p, q_minus_1, v = np.exp(theta)
    return GammaGamma(p=float(p), q=float(1.0 + q_minus_1), v=float(v * scale))


# --- Both together ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Valuation:
    """Both fitted models and, per customer, P(alive), expected purchases, spend and CLV."""

    bgnbd: BgNbd
    gamma_gamma: GammaGamma
    p_alive: Floats
    expected_purchases: Floats
    expected_spend: Floats
    clv: Floats


def value_customers(summary: Summary, horizon: float) -> Valuation:
    """Fit both models to ``summary`` and value each customer over the next ``horizon`` units.

    Gamma-Gamma is fitted on the customers with repeat purchases of positive mean value; every
    customer is then valued, those without repeat purchases at the population mean spend.
    """
    s = summary
    bg = fit_bgnbd(s.frequency, s.recency, s.T)
    spenders = (s.frequency > 0) & (np.nan_to_num(s.monetary) > 0)
    gg = fit_gamma_gamma(s.frequency[spenders], s.monetary[spenders])
    with np.errstate(all="ignore"):
        alive = bg.p_alive(s.frequency, s.recency, s.T)
        purchases = bg.expected_purchases(horizon, s.frequency, s.recency, s.T)
        spend = gg.expected_spend(s.frequency, s.monetary)
    value = purchases * spend
    if not (np.all(np.isfinite(value)) and np.all(np.isfinite(alive))):
        raise InsufficientData("the fitted model gives no finite value for some customers")
    return Valuation(bg, gg, alive, purchases, spend, value)
