"""Demand forecasting: additive Holt-Winters with weekly seasonality (numpy), the seasonal
naive baseline, and the held-out evaluation of both.

The series is units per day, oldest first, with zeros on days without demand. Smoothing
parameters are chosen by a small grid search on the one-step-ahead squared error of the
fitting window. Evaluation: the last ``holdout`` days are forecast from the days before
them, by the method and by the seasonal naive baseline (each day predicted by the same
weekday of the last week before the holdout); both errors are the MAPE over held-out days
with demand.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Any

import numpy as np

SEASON = 7
MIN_HISTORY = 14
Z80 = 1.2815515655446004  # the 90th percentile of the standard normal: 80% interval
METHOD = "holt_winters_additive_weekly"
FALLBACK = "moving_average_28d"

Array = np.ndarray[Any, np.dtype[np.float64]]

_ALPHAS = (0.05, 0.1, 0.2, 0.3, 0.5)
_BETAS = (0.0, 0.01, 0.05)
_GAMMAS = (0.05, 0.1, 0.2, 0.3)
_PHI = 0.9  # damped trend: long horizons do not run away


@dataclass(frozen=True)
class Fitted:
    level: float
    trend: float
    season: Array  # the next SEASON seasonal terms, starting with tomorrow's weekday
    sigma: float  # standard deviation of the one-step errors
    params: tuple[float, float, float]


@dataclass(frozen=True)
class Forecast:
    method: str
    mean: Array
    lower: Array
    upper: Array
    insufficient_history: bool


@dataclass(frozen=True)
class Evaluation:
    mape: float
    naive_mape: float
    mae: float
    history_days: int
    holdout_days: int


_GRID = np.array(list(itertools.product(_ALPHAS, _BETAS, _GAMMAS)), dtype=np.float64)


def fit(y: Array) -> Fitted:
    """Damped additive Holt-Winters for every grid point at once (vectorised over the
    grid); the point with the lowest one-step squared error wins."""
    m = SEASON
    alpha, beta, gamma = _GRID[:, 0], _GRID[:, 1], _GRID[:, 2]
    k = len(_GRID)
    first, second = y[:m], y[m : 2 * m]
    level = np.full(k, float(first.mean()))
    trend = np.full(k, float((second.mean() - first.mean()) / m))
    season = np.tile(first - first.mean(), (k, 1))
    sse = np.zeros(k)
    sum_e = np.zeros(k)
    count = 0
    for t in range(m, len(y)):
        obs = float(y[t])
        s = season[:, t % m]
        error = obs - (level + _PHI * trend + s)
        sse += error * error
        sum_e += error
        count += 1
        new_level = alpha * (obs - s) + (1 - alpha) * (level + _PHI * trend)
        trend = beta * (new_level - level) + (1 - beta) * _PHI * trend
        season[:, t % m] = gamma * (obs - new_level) + (1 - gamma) * s
        level = new_level
    best = int(np.argmin(sse))
    n = len(y)
    ordered = np.array([season[best, (n + j) % m] for j in range(m)], dtype=np.float64)
    variance = sse[best] / count - (sum_e[best] / count) ** 2 if count else 0.0
    return Fitted(
        level=float(level[best]),
        trend=float(trend[best]),
        season=ordered,
        sigma=float(np.sqrt(max(variance, 0.0))),
        params=(float(alpha[best]), float(beta[best]), float(gamma[best])),
    )


def predict(model: Fitted, horizon: int) -> tuple[Array, Array]:
    """Point forecasts (never below 0) and the one-step error growth per step."""
    steps = np.arange(1, horizon + 1, dtype=np.float64)
    damped = np.cumsum(_PHI**steps)
    season = np.array([model.season[k % SEASON] for k in range(horizon)], dtype=np.float64)
    mean = np.maximum(model.level + damped * model.trend + season, 0.0)
    alpha = model.params[0]
    spread = model.sigma * np.sqrt(1 + (steps - 1) * alpha * alpha)
    return mean, spread


def forecast(y: Array, horizon: int) -> Forecast:
    """The forecast of the next ``horizon`` days after the series."""
    if len(y) < MIN_HISTORY:
        window = y[-28:]
        level = float(window.mean()) if len(window) else 0.0
        spread = float(window.std()) if len(window) > 1 else level
        mean = np.full(horizon, level, dtype=np.float64)
        return Forecast(
            FALLBACK,
            mean,
            np.maximum(mean - Z80 * spread, 0.0),
            mean + Z80 * spread,
            insufficient_history=True,
        )
    model = fit(y)
    point, spreads = predict(model, horizon)
    return Forecast(
        METHOD,
        point,
        np.maximum(point - Z80 * spreads, 0.0),
        point + Z80 * spreads,
        insufficient_history=False,
    )


def seasonal_naive(y: Array, horizon: int) -> Array:
    """Each future day is the same weekday of the last observed week."""
    last_week = y[-SEASON:]
    return np.array([last_week[k % SEASON] for k in range(horizon)], dtype=np.float64)


def mape(actual: Array, predicted: Array) -> float:
    mask = actual > 0
    if not mask.any():
        return 0.0
    return float(np.mean(np.abs(actual[mask] - predicted[mask]) / actual[mask]))


def holdout_days(length: int) -> int:
    """Days held out for the fit: two weeks, when the series is long enough to spare them."""
    return 14 if length >= MIN_HISTORY + 14 else (7 if length >= MIN_HISTORY + 7 else 0)


def evaluate(y: Array, holdout: int | None = None) -> Evaluation | None:
    """Both methods' errors on the last ``holdout`` days, forecast from the days before."""
    days = holdout_days(len(y)) if holdout is None else holdout
    if days <= 0 or len(y) - days < MIN_HISTORY:
        return None
    train, test = y[:-days], y[-days:]
    model = fit(train)
    predicted, _ = predict(model, days)
    naive = seasonal_naive(train, days)
    return Evaluation(
        mape=mape(test, predicted),
        naive_mape=mape(test, naive),
        mae=float(np.mean(np.abs(test - predicted))),
        history_days=len(train),
        holdout_days=days,
    )
