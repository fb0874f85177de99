"""Drift with the measurement order: an overhead that grows while a table is measured, found and removed.

A table measured as one long run can drift: NeuSight's public conv2d tables get slower by 0.26 ms (V100) to
0.72 ms (P4) from the first row to the last, for configurations drawn at random, so that the fastest layers
of the last rows take seven times the first rows' (the other operators do not drift). No model of the
configuration can explain that: it is the measurement, not the layer. :func:`order_drift` estimates it as an
additive overhead, a piecewise-linear function of the row's position in the table, next to a flexible model
of the configuration that it alternates with (scikit-learn's gradient boosting on the log of the features,
predicting each row from the other folds); the drift counts only when it explains a good part of the rows'
error (see :data:`MIN_GAIN`).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

__all__ = [
    "MAX_ORDER_R2",
    "MIN_GAIN",
    "MIN_RESIDUALS",
    "MIN_ROWS",
    "Drift",
    "order_drift",
    "order_follows_configuration",
    "residual_drift",
]

FloatArray = npt.NDArray[np.float64]

#: The fewest rows whose drift is estimated.
MIN_ROWS = 200
#: The fewest residuals :func:`residual_drift` looks at.
MIN_RESIDUALS = 100
#: From this R² of the position predicted from the configuration on, the order follows the configuration.
MAX_ORDER_R2 = 0.1
#: The drift counts when modelling it cuts the rows' out-of-fold RMSPE by at least this share.
MIN_GAIN = 0.2
# Segments of the piecewise-linear drift, rounds of the alternation, folds of the configuration model.
_SEGMENTS = 8
_ROUNDS = 3
_FOLDS = 5
_HUBER = 1.5
_PERMUTATIONS = 19


@dataclass(frozen=True)
class Drift:
    """The additive drift of a table's runtimes with their order.

    Attributes
    ----------
    values
        Per row, the overhead over the first row's (ms); subtracting it gives the runtimes as measured at the
        start. Zero everywhere when the drift does not count.
    rise
        The overhead at the last row over the first's (ms), as estimated (whether or not it counts).
    error_before, error_after
        Out-of-fold RMSPE (%) of the configuration model without and with the drift.
    significant
        Whether the drift counts: it cuts the error by at least :data:`MIN_GAIN`, and removing it leaves every
        runtime positive.
    """

    values: FloatArray
    rise: float
    error_before: float
    error_after: float
    significant: bool


def _hinges(n: int) -> FloatArray:
    return _hinges_at(np.arange(n) / max(n - 1, 1))


def _hinges_at(pos: FloatArray) -> FloatArray:
    """The piecewise-linear basis at positions from 0 (the first row) to 1 (the last)."""
    knots = np.linspace(0, 1, _SEGMENTS + 1)[1:-1]
    return np.column_stack([np.ones(len(pos)), pos, *[np.maximum(pos - k, 0) for k in knots]])


def _robust_fit(h: FloatArray, r: FloatArray, w: FloatArray) -> FloatArray:
    """Huber-weighted least squares of ``r`` on ``h`` with row weights ``w`` (iteratively reweighted)."""
    c = np.zeros(h.shape[1])
    ridge = 1e-9 * np.eye(h.shape[1])
    for _ in range(10):
        scaled = (r - h @ c) * w
        s = 1.4826 * float(np.median(np.abs(scaled))) + 1e-12
        hw = np.minimum(1.0, _HUBER * s / np.maximum(np.abs(scaled), 1e-12))
        ww = w * w * hw
        c = np.asarray(np.linalg.solve(h.T @ (h * ww[:, None]) + ridge, h.T @ (ww * r)), dtype=np.float64)
    return c


def _varying_logs(features: npt.ArrayLike, n: int) -> FloatArray:
    """log(1 + |x|) of the ``n`` rows' features, the columns that vary only."""
    x = np.log1p(np.abs(np.asarray(features, dtype=np.float64))).reshape(n, -1)
    return x[:, np.ptp(x, axis=0) > 0] if x.shape[1] else x


def _rmspe(y: FloatArray, p: FloatArray) -> float:
    return float(100 * np.sqrt(np.mean(((p - y) / y) ** 2)))


def order_drift(features: npt.ArrayLike, runtime: npt.ArrayLike, *, seed: int = 0) -> Drift:
    """Estimate the additive drift of ``runtime`` (positive, in measurement order) with the row order.

    ``features`` is ``(n, F)``: what the runtime depends on (the configuration), non-negative. With fewer than
    :data:`MIN_ROWS` rows nothing is estimated (a drift of zero that does not count).
    """
    from sklearn.ensemble import HistGradientBoostingRegressor
    from sklearn.model_selection import KFold, cross_val_predict

    y = np.asarray(runtime, dtype=np.float64)
    n = len(y)
    if n < MIN_ROWS:
        return Drift(np.zeros(n), 0.0, float("nan"), float("nan"), False)
    x = _varying_logs(features, n)
    if not x.shape[1]:
        x = np.zeros((n, 1))  # one configuration measured again and again: the drift is all there is
    h = _hinges(n)
    folds = KFold(_FOLDS, shuffle=True, random_state=seed)
    drift = np.zeros(n)
    before = after = float("nan")
    c = np.zeros(h.shape[1])
    floor = 0.05 * float(np.min(y))
    for k in range(_ROUNDS):
        model = HistGradientBoostingRegressor(max_iter=60, learning_rate=0.2, max_bins=64, random_state=seed)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            g = np.exp(cross_val_predict(model, x, np.log(np.maximum(y - drift, floor)), cv=folds))
        if k == 0:
            before = _rmspe(y, g)
        c = _robust_fit(h, y - g, 1.0 / g)
        after = _rmspe(y, g + h @ c)
        drift = h @ c - c[0]
        if k == 0 and after > (1 - MIN_GAIN) * before:
            break  # no drift worth a second round
    rise = float(drift[-1])
    significant = after <= (1 - MIN_GAIN) * before and bool(np.all(y - drift > 0))
    return Drift(drift if significant else np.zeros(n), rise, before, after, significant)


def order_follows_configuration(position: npt.ArrayLike, features: npt.ArrayLike, *, seed: int = 0) -> bool:
    """Whether the rows' order can be told from their configuration (a sweep ordered by size, tables of other
    families appended): a decision tree on the log of the features predicts the position out of fold with an R²
    of :data:`MAX_ORDER_R2` or more. A drift with the order cannot be told from the model's errors then."""
    from sklearn.model_selection import KFold, cross_val_predict
    from sklearn.tree import DecisionTreeRegressor

    pos = np.asarray(position, dtype=np.float64)
    x = _varying_logs(features, len(pos))
    if not x.shape[1]:
        return False
    tree = DecisionTreeRegressor(max_depth=6, min_samples_leaf=5, random_state=seed)
    guess = cross_val_predict(tree, x, pos, cv=KFold(3, shuffle=True, random_state=seed))
    r2 = 1 - float(np.sum((pos - guess) ** 2)) / max(float(np.sum((pos - pos.mean()) ** 2)), 1e-300)
    return r2 >= MAX_ORDER_R2


def residual_drift(
    position: npt.ArrayLike, measured: npt.ArrayLike, predicted: npt.ArrayLike, *, seed: int = 0
) -> dict[str, float] | None:
    """Whether a model's errors drift with the measurement order; None if they do not (or too few to tell).

    ``position`` is each row's place in the tables, from 0 (first) to 1 (last); ``measured`` and ``predicted``
    its runtimes (positive), on rows the model was not fitted to. An additive, piecewise-linear overhead of the
    position is fitted to ``measured - predicted`` relative to ``predicted`` (Huber-weighted), as in
    :func:`order_drift`; it counts when it cuts the relative errors' RMS by :data:`MIN_GAIN` or more, and by
    more than with the positions shuffled (19 times: a 5 % permutation test). Returns
    the overhead from the first row to the last (``rise``, in the runtimes' unit) and the RMS (percent) of the
    relative errors without and with it.
    """
    pos = np.asarray(position, dtype=np.float64)
    y = np.asarray(measured, dtype=np.float64)
    p = np.asarray(predicted, dtype=np.float64)
    if len(y) < MIN_RESIDUALS or np.ptp(pos) == 0 or not np.all(p > 0) or not np.all(np.isfinite(y)):
        return None

    def rms_with_drift(at: FloatArray) -> tuple[float, FloatArray]:
        h = _hinges_at(at)
        c = _robust_fit(h, y - p, 1.0 / p)
        return float(np.sqrt(np.mean(((y - p - h @ c) / p) ** 2))), c

    before = float(np.sqrt(np.mean(((y - p) / p) ** 2)))
    after, c = rms_with_drift(pos)
    if after > (1 - MIN_GAIN) * before:
        return None
    # a few large errors can be fitted by any order: the true order must beat every one of 19 shuffled ones
    rng = np.random.default_rng(seed)
    if any(rms_with_drift(rng.permutation(pos))[0] <= after for _ in range(_PERMUTATIONS)):
        return None
    ends = _hinges_at(np.array([0.0, 1.0])) @ c
    return {"rise": float(ends[1] - ends[0]), "error_before": 100 * before, "error_after": 100 * after,
            "rows": len(y)}
