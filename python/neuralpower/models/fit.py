"""Fit per-layer-type runtime and power models from measurements, with held-out metrics and baselines."""

from __future__ import annotations

import datetime as _dt
import logging
import platform
import warnings
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, TypeVar

import numpy as np
import numpy.typing as npt

from .. import __version__
from .. import _evaluator as _ev
from .._args import cores
from ..layers import FEATURES, LAYER_TYPES
from .baselines import fit_flops_linear, fit_roofline
from .boosted import Gate, fit_boosted, gate_boosted
from .data import TARGETS, Measurements
from .drift import order_follows_configuration, residual_drift
from .format import SCHEMA, SCHEMA_VERSION, interval_factors
from .poly import TARGET_MODES, fit_poly
from .predict import predict_spec
from .tree import fit_tree

__all__ = ["METHODS", "MIN_ROWS", "FitOptions", "combine_trials", "fit_models", "metrics"]

log = logging.getLogger(__name__)

METHODS = ("poly", "tree", "boosted")
# Gradient-boosted trees are fitted only where a layer type has this many configurations: a large table of a real
# GPU, whose kernels switch at many sizes; on fewer, many small trees only learn the noise of a few rows.
BOOSTED_FROM = 400
BASELINES = ("roofline", "flops_linear")
# Below this many rows a layer type's target gets a simpler model (see _fallback), said in the file.
MIN_ROWS = 30
# Prediction intervals: the share of held-out ratios measured / predicted they are calibrated to hold, and the
# fewest validation rows that calibrate one.
INTERVAL_COVERAGE = 0.9
MIN_INTERVAL_ROWS = 10
# Intervals by group: a layer type's validation rows are split on one feature at a time (at most GROUP_DEPTH levels,
# GROUP_ROWS rows a side at least) where the type's interval misses its coverage on one side by GROUP_MISS points
# and GROUP_SE standard errors; each group then gets its own factors. One attention type holds prefill, decode and
# encoder kernels, whose errors differ in size: one interval for all of them is too wide for some, too narrow for
# others, and holds 90 % of none of them. Where each kind holds MIN_GROUP_ROWS validation rows, the kinds are the
# first groups (ATTENTION_GROUPS), each split further as above: a kind a tenth of the rows is not hidden among others.
GROUP_DEPTH = 4
GROUP_ROWS = 200
GROUP_MISS = 0.03
GROUP_SE = 4.0
# the candidate thresholds of a feature: these quantiles of its values in the group
_GROUP_QUANTILES = np.linspace(0.05, 0.95, 19)
# Below this many training configurations, models are chosen by FOLDS-fold cross-validation rather than on
# one validation split.
KFOLD_BELOW = 400
FOLDS = 5
LEAF_FEATURES = ("flops", "bytes_moved", "params")
# GEMM-shaped layer types (conv2d, conv_transpose2d, linear, matmul): the tree may also split on the GEMM's sizes
# (kernels switch tiles and algorithms on them, and like multiples of 4, 8, ...), and its leaves also weigh the
# output padded to whole tiles (tile quantization) and the output's size.
GEMM_SPLIT_FEATURES = ("gemm_m", "gemm_n", "gemm_k")
# Boosting's features besides a type's configuration, flops and bytes: the thread blocks a GEMM-shaped layer
# (its output tiles) or an attention layer (batch x heads x query tiles) launches, whose waves over the SMs its
# runtime and power step with. They took held-out fp8 GEMM power on aiconfigurator's H200 kernels from 10.7 to 6.7 %
# MAPE, the H200's bf16 prefill runtime from 3.4 to 3.0 % (benchmarks/aiconfigurator_accuracy.py, README).
GEMM_BOOSTED_FEATURES = ("tiles_128x128", "tiles_128x256", "tiles_64x128")
ATTENTION_BOOSTED_FEATURES = ("attn_ctas_64", "attn_ctas_128", "batch_heads", "batch_kv_heads")
# Attention's kernels by kind, each fitted by boosting on its own where every kind holds MIN_GROUP_ROWS rows: decode
# (one query token), causal prefill and encoder (neither); different kernels, whose runtime and power follow different
# features. On aiconfigurator's H100 bf16 attention this took held-out runtime MAPE from 2.9 / 2.0 / 5.2 % (prefill /
# decode / encoder, one model) to 2.4 / 1.8 / 4.4 % (benchmarks/aiconfigurator_accuracy.py, README).
ATTENTION_GROUPS: tuple[Gate, ...] = (
    (("tokens", 1.5, True),),
    (("tokens", 1.5, False), ("causal", 0.5, False)),
    (("tokens", 1.5, False), ("causal", 0.5, True)),
)
MIN_GROUP_ROWS = 200
GEMM_LEAF_FEATURES = ("tile_flops_128x128", "tile_flops_128x64", "tile_flops_64x64", "tile_flops_128x32",
                      "tile_flops_64x128", "tile_flops_32x128",
                      "elements_out")
# The tree settings compared on validation rows (as ``tree:<name>``): FastDeepIoT's shallow tree, and a deeper
# one for large tables of real GPUs, whose kernels switch at many sizes.
TREE_SETTINGS: dict[str, dict[str, Any]] = {
    "shallow": {"max_depth": 4, "min_leaf": 20, "min_gain": 0.01},
    "deep": {"max_depth": 8, "min_leaf": 15, "min_gain": 0.002},
}
# Gradient boosting's settings (``boosted:<name>``), each name mapped to its histogram setting (False: Friedman's
# boosting of log runtime). Runtime compares Friedman's with the large histogram setting, power the small and the
# large one (see :mod:`neuralpower.models.boosted`), on validation rows.
BOOSTED_SETTINGS: dict[str, bool | str] = {"log": False, "hist": "small", "hist_large": "large"}
BOOSTED_COMPARED = {"runtime_ms": ("log", "hist_large"), "power_w": ("hist", "hist_large")}
_SPECIAL = {"flops", "bytes_moved"}


@dataclass
class FitOptions:
    """What ``neuralpower fit`` fits.

    Attributes
    ----------
    method
        ``poly``, ``tree`` or ``all`` (both). Each type's default is the method or baseline with the lowest
        validation RMSPE.
    degree
        Highest degree of the polynomial terms.
    test_fraction
        Share of each layer type's configurations held out for the metrics (and, of the rest, for validation).
    seed
        Seed of the splits and of the cross-validation.
    jobs
        Threads that fit a layer type's candidate models at once (None: the cores this process may use). The
        models, and so the model file, are the same whatever the number.
    """

    method: str = "poly"
    degree: int = 3
    test_fraction: float = 0.2
    seed: int = 0
    jobs: int | None = None
    progress: Callable[[str], None] | None = field(default=None, repr=False)
    # Filled by fit_models when not None: (type, target) -> (held-out y, {method: predictions}), for plots.
    holdout: dict[tuple[str, str], tuple[Any, dict[str, Any]]] | None = field(default=None, repr=False)


def metrics(y: npt.NDArray[np.float64], pred: npt.NDArray[np.float64]) -> dict[str, float]:
    """Held-out RMSPE, MAPE, maximum APE and mean signed error (percent) and R²."""
    rel = (pred - y) / y
    ss_res = float(np.sum((pred - y) ** 2))
    ss_tot = float(np.sum((y - y.mean()) ** 2))
    return {
        "rmspe": float(100 * np.sqrt(np.mean(rel**2))),
        "mape": float(100 * np.mean(np.abs(rel))),
        "max_ape": float(100 * np.max(np.abs(rel))),
        "bias": float(100 * np.mean(rel)),
        "r2": float(1 - ss_res / ss_tot) if ss_tot > 0 else 0.0,
    }


def _config_features(type_code: int) -> list[str]:
    return [FEATURES[i] for i in _ev.type_features(type_code) if FEATURES[i] not in _SPECIAL]


def _boosted_extra(X: npt.NDArray[np.float64]) -> list[str]:
    """Boosting's thread-block features for rows ``X`` of one layer type: a GEMM's tiles, attention's blocks."""
    if np.any(X[:, FEATURES.index("gemm_m")] > 0):
        return list(GEMM_BOOSTED_FEATURES)
    if np.any(X[:, FEATURES.index("attn_ctas_64")] > 0):
        return list(ATTENTION_BOOSTED_FEATURES)
    return []


def _boosted_groups(X: npt.NDArray[np.float64]) -> list[tuple[Gate, npt.NDArray[np.bool_]]] | None:
    """Attention rows ``X`` as :data:`ATTENTION_GROUPS` (each gate and its rows), None for other types or where a
    group holds fewer than :data:`MIN_GROUP_ROWS` rows (one model for all of them then)."""
    if not np.any(X[:, FEATURES.index("attn_ctas_64")] > 0):
        return None
    groups = []
    for gate in ATTENTION_GROUPS:
        rows = np.ones(len(X), dtype=bool)
        for name, value, below in gate:
            x = X[:, FEATURES.index(name)]
            rows &= (x <= value) if below else (x > value)
        if rows.sum() < MIN_GROUP_ROWS:
            return None
        groups.append((gate, rows))
    return groups


def _fit_method(
    method: str,
    X: npt.NDArray[np.float64],
    y: npt.NDArray[np.float64],
    config: list[str],
    options: FitOptions,
    mode: str = "plain",
    jobs: int = 1,
) -> dict[str, Any]:
    if method == "poly":
        return fit_poly(X, y, FEATURES, config=config, mode=mode, degree=options.degree, seed=options.seed,
                        jobs=jobs)
    if method == "tree":
        split, leaf = list(config), list(LEAF_FEATURES)
        if np.any(X[:, FEATURES.index("gemm_m")] > 0):
            split += GEMM_SPLIT_FEATURES
            leaf += GEMM_LEAF_FEATURES
        ints = [f for f in split if np.all(X[:, FEATURES.index(f)] == np.round(X[:, FEATURES.index(f)]))]
        settings = TREE_SETTINGS["shallow" if mode == "plain" else mode]
        return fit_tree(X, y, FEATURES, split_features=ints, leaf_features=leaf, **settings)
    if method == "boosted":
        features = [*config, "flops", "bytes_moved", *_boosted_extra(X)]
        groups = _boosted_groups(X)
        if groups is None:
            return fit_boosted(X, y, FEATURES, features=features, target="log", hist=BOOSTED_SETTINGS[mode],
                               seed=options.seed)
        return gate_boosted([(gate, fit_boosted(X[rows], y[rows], FEATURES, features=features, target="log",
                                                hist=BOOSTED_SETTINGS[mode], seed=options.seed))
                             for gate, rows in groups])
    if method == "roofline":
        return fit_roofline(X, y, FEATURES)
    return fit_flops_linear(X, y, FEATURES)


def _split(n: int, fraction: float, rng: np.random.Generator) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
    order = rng.permutation(n)
    n_test = max(1, round(fraction * n))
    return np.sort(order[n_test:]), np.sort(order[:n_test])


@dataclass(frozen=True)
class _Partition:
    """Where each configuration of a layer type falls, drawn once for all its targets: a configuration whose runtime
    and power were both measured is a test row of both or of neither, and a validation row (or in a fold) of both or
    of neither, so that energy's interval is calibrated and checked on configurations each target's fit left out.

    ``test_rank`` and ``val_rank`` are each configuration's place in two random orders; the first ``fraction`` of
    all configurations by ``test_rank`` are test rows, of the rest the first ``fraction`` by ``val_rank`` validation
    rows. A target measured on only some configurations takes them as they fall; where that leaves it no test or no
    training row, its own split instead.
    """

    test_rank: npt.NDArray[np.int64]
    val_rank: npt.NDArray[np.int64]
    fold: npt.NDArray[np.int64]
    fraction: float
    seed: int

    @classmethod
    def draw(cls, n: int, fraction: float, seed: int) -> _Partition:
        rng = np.random.default_rng(seed)
        return cls(np.argsort(rng.permutation(n)), np.argsort(rng.permutation(n)), rng.permutation(n) % FOLDS,
                   fraction, seed)

    def _cut(self) -> int:
        return max(1, round(self.fraction * len(self.test_rank)))

    def split(self, ids: npt.NDArray[np.int64]) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
        """Training and test rows of a target measured on configurations ``ids``."""
        test = self.test_rank[ids] < self._cut()
        if not test.any() or test.all():
            return _split(len(ids), self.fraction, np.random.default_rng(self.seed))
        return np.flatnonzero(~test), np.flatnonzero(test)

    def validation(self, ids: npt.NDArray[np.int64],
                   train: npt.NDArray[np.int64]) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
        """Of the training rows ``train``, those fitted on and those validated on (one split)."""
        val = self.val_rank[ids[train]] < round(self.fraction * len(self.val_rank))
        if not val.any() or val.all():
            fit_part, val_part = _split(len(train), self.fraction, np.random.default_rng(self.seed + 1))
            return train[fit_part], train[val_part]
        return train[~val], train[val]

    def folds(self, ids: npt.NDArray[np.int64], train: npt.NDArray[np.int64]) -> npt.NDArray[np.int64]:
        """The fold of each training row (cross-validation); folds left empty by a subset are dealt afresh."""
        fold = self.fold[ids[train]]
        if len(np.unique(fold)) < min(FOLDS, len(train)):
            fold = np.random.default_rng(self.seed + 2).permutation(len(train)) % FOLDS
        return fold


def combine_trials(
    rows: npt.NDArray[np.int64], y: npt.NDArray[np.float64], noisy: npt.NDArray[np.bool_] | None = None
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float64], npt.NDArray[np.int64]]:
    """One value per configuration: the median of its trials (of its clean trials where it has any).

    Returns the index of each configuration's first row, the combined values and the number of trials combined.
    A trial flagged noisy counts only where every trial of its configuration is flagged.
    """
    _, first, group = np.unique(rows, axis=0, return_index=True, return_inverse=True)
    group = group.reshape(-1)
    keep = np.ones(len(y), dtype=bool)
    if noisy is not None and noisy.any():
        clean = np.bincount(group, weights=~noisy, minlength=len(first))
        keep = ~noisy | (clean[group] == 0)
    g, v = group[keep], y[keep]
    order = np.lexsort((v, g))
    g, v = g[order], v[order]
    counts = np.bincount(g, minlength=len(first))
    start = np.concatenate([[0], np.cumsum(counts)[:-1]])
    median = (v[start + (counts - 1) // 2] + v[start + counts // 2]) / 2
    return first, median, counts


def _factors(ratio: npt.NDArray[np.float64]) -> tuple[float, float]:
    tail = (1 - INTERVAL_COVERAGE) / 2
    lo, hi = np.quantile(ratio, [tail, 1 - tail])
    return float(min(lo, 1.0)), float(max(hi, 1.0))


def _interval(y: npt.NDArray[np.float64], pred: npt.NDArray[np.float64], X: npt.NDArray[np.float64] | None = None,
              features: Sequence[str] = ()) -> dict[str, Any] | None:
    """Multiplicative bounds that held ``INTERVAL_COVERAGE`` of the ratios measured / predicted; with the rows'
    features ``X`` (columns of :data:`FEATURES`), split into groups on ``features`` where one interval misses its
    coverage on a group (see :data:`GROUP_DEPTH`; ``split`` in the interval)."""
    ok = (pred > 0) & np.isfinite(pred) & np.isfinite(y)
    if ok.sum() < MIN_INTERVAL_ROWS:
        return None
    ratio = y[ok] / pred[ok]
    lo, hi = _factors(ratio)
    out: dict[str, Any] = {"coverage": INTERVAL_COVERAGE, "lo": lo, "hi": hi, "rows": int(ok.sum())}
    if X is not None and features:
        columns = [FEATURES.index(f) for f in features]
        groups = _boosted_groups(X[ok])
        if groups is None:
            node = _group(X[ok][:, columns], ratio, list(features), GROUP_DEPTH)
        else:  # attention's kinds are different kernels: a group each, then split as any group
            node = _gated_group([gate for gate, _ in groups], X[ok], columns, ratio, list(features))
        if "feature" in node:
            out["split"] = node
    return out


def _gated_group(gates: list[Gate], X: npt.NDArray[np.float64], columns: list[int], ratio: npt.NDArray[np.float64],
                 names: list[str], depth: int = GROUP_DEPTH) -> dict[str, Any]:
    """The groups of :func:`_group` below the splits of ``gates`` (groups of rows that do not overlap and together
    hold all of ``X``'s rows, each at least :data:`MIN_GROUP_ROWS`: :func:`_boosted_groups`; all gates split first
    on one feature and value), split further within each gate's group as :func:`_group` splits a type's rows, down
    to ``depth`` levels in all."""
    if len(gates) == 1 and not gates[0]:
        return _group(X[:, columns], ratio, names, depth)
    name, value, _ = gates[0][0]
    assert all(g and g[0][:2] == (name, value) for g in gates), gates
    yes = X[:, FEATURES.index(name)] <= value
    return {"feature": name, "value": value, "rows": len(ratio),
            "yes": _gated_group([g[1:] for g in gates if g[0][2]], X[yes], columns, ratio[yes], names, depth - 1),
            "no": _gated_group([g[1:] for g in gates if not g[0][2]], X[~yes], columns, ratio[~yes], names,
                               depth - 1)}


def _group(Z: npt.NDArray[np.float64], ratio: npt.NDArray[np.float64], names: list[str],
           depth: int) -> dict[str, Any]:
    """A group's interval (a leaf: ``lo``, ``hi``, ``rows``), or its split (``feature``, ``value``; ``yes`` the
    rows with the feature at most ``value``, ``no`` the others) where its interval misses its coverage on one side
    (see :data:`GROUP_MISS`), the split whose miss is the most standard errors."""
    lo, hi = _factors(ratio)
    leaf: dict[str, Any] = {"lo": lo, "hi": hi, "rows": len(ratio)}
    if depth == 0 or len(ratio) < 2 * GROUP_ROWS:
        return leaf
    inside = (ratio >= lo) & (ratio <= hi)
    best: tuple[float, int, float] | None = None
    for j in range(Z.shape[1]):
        z = Z[:, j]
        order = np.argsort(z, kind="stable")
        zs, cum = z[order], np.cumsum(inside[order])
        for value in np.unique(np.quantile(z, _GROUP_QUANTILES, method="lower")):
            n_yes = int(np.searchsorted(zs, value, side="right"))
            n_no = len(z) - n_yes
            if n_yes < GROUP_ROWS or n_no < GROUP_ROWS:
                continue
            held_yes = cum[n_yes - 1] / n_yes
            held_no = (cum[-1] - cum[n_yes - 1]) / n_no
            score = 0.0
            for held, n in ((held_yes, n_yes), (held_no, n_no)):
                miss = abs(held - INTERVAL_COVERAGE)
                se = np.sqrt(INTERVAL_COVERAGE * (1 - INTERVAL_COVERAGE) / n)
                if miss >= GROUP_MISS and miss >= GROUP_SE * se:
                    score = max(score, miss / se)
            if score > 0 and (best is None or score > best[0]):
                best = (score, j, float(value))
    if best is None:
        return leaf
    _, j, value = best
    yes = Z[:, j] <= value
    return {"feature": names[j], "value": value, "rows": len(ratio),
            "yes": _group(Z[yes], ratio[yes], names, depth - 1), "no": _group(Z[~yes], ratio[~yes], names, depth - 1)}


def _covered(y: npt.NDArray[np.float64], pred: npt.NDArray[np.float64], interval: dict[str, Any],
             X: npt.NDArray[np.float64] | None = None) -> float:
    """The share (percent) of ``y`` inside ``pred``'s interval (by group, with the rows' features ``X``)."""
    lo, hi = interval_factors(interval, X, FEATURES) if X is not None else (interval["lo"], interval["hi"])
    return float(100 * np.mean((y >= pred * lo) & (y <= pred * hi)))


def _candidates(methods: tuple[str, ...], target: str = "runtime_ms") -> list[tuple[str, str, str]]:
    """Every model ``fit`` considers, as (name, method, mode): poly once per target mode (as ``poly:<mode>``), the
    tree once per setting (as ``tree:<setting>``), boosted trees once per setting compared for the target (as
    ``boosted:<setting>``, see :data:`BOOSTED_COMPARED`), then the baselines."""
    out: list[tuple[str, str, str]] = []
    for method in (*methods, *BASELINES):
        if method == "boosted":
            out += [(f"boosted:{s}", "boosted", s) for s in BOOSTED_COMPARED[target]]
        elif method == "poly":
            out += [(f"poly:{mode}", "poly", mode) for mode in TARGET_MODES]
        elif method == "tree":
            out += [(f"tree:{setting}", "tree", setting) for setting in TREE_SETTINGS]
        else:
            out.append((method, method, "plain"))
    return out


_T = TypeVar("_T")


def _run_all(tasks: Sequence[Callable[[int], _T]], jobs: int | None) -> list[_T]:
    """The results of ``tasks`` in their order, computed by up to ``jobs`` threads.

    Each task is given the threads it may use itself (its share where there are fewer tasks than threads: the
    polynomial's cross-validation folds then run at once). The fits are independent and each is deterministic, so
    the results do not depend on the number of threads. Threads pay because scikit-learn's coordinate descent,
    where fitting spends its time, runs without the GIL.
    """
    total = cores() if jobs is None else jobs
    workers = min(total, len(tasks))
    share = max(1, total // max(len(tasks), 1))
    if workers <= 1:
        return [task(share) for task in tasks]
    from sklearn.exceptions import ConvergenceWarning

    # fit_poly silences LassoCV's convergence warnings in a warnings.catch_warnings block, which is not
    # thread-safe: threads leaving theirs can restore one another's filters. Silencing them here, around every
    # thread, keeps them silenced whichever filters a thread restores, and this block restores the caller's.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="neuralpower-fit") as pool:
            return list(pool.map(lambda task: task(share), tasks))


def _validation(
    X: npt.NDArray[np.float64],
    y: npt.NDArray[np.float64],
    train: npt.NDArray[np.int64],
    methods: tuple[str, ...],
    config: list[str],
    options: FitOptions,
    partition: _Partition,
    ids: npt.NDArray[np.int64],
    target: str = "runtime_ms",
) -> tuple[npt.NDArray[np.int64], dict[str, npt.NDArray[np.float64]]]:
    """Predictions of every candidate for rows it was not fitted to, and which rows those are.

    With many training rows, one validation split (``test_fraction`` of them). With fewer than
    :data:`KFOLD_BELOW`, a single split would leave a handful of rows to choose on: every training row is
    predicted instead by candidates fitted to the other folds (:data:`FOLDS`-fold cross-validation).
    """
    candidates = _candidates(methods, target)

    def predictions(method: str, mode: str, fit_rows: npt.NDArray[np.int64],
                    rows: npt.NDArray[np.int64]) -> Callable[[int], npt.NDArray[np.float64]]:
        def task(jobs: int) -> npt.NDArray[np.float64]:
            spec = _fit_method(method, X[fit_rows], y[fit_rows], config, options, mode, jobs)
            return predict_spec(spec, X[rows], FEATURES)

        return task

    if len(train) >= KFOLD_BELOW:
        fit_rows, val_rows = partition.validation(ids, train)
        done = _run_all([predictions(method, mode, fit_rows, val_rows) for _, method, mode in candidates],
                        options.jobs)
        return val_rows, {name: pred for (name, _, _), pred in zip(candidates, done, strict=True)}
    fold = partition.folds(ids, train)
    folds = [(train[fold != k], fold == k) for k in range(FOLDS) if (fold == k).any()]
    done = _run_all([predictions(method, mode, inside, train[held])
                     for inside, held in folds for _, method, mode in candidates], options.jobs)
    out = {name: np.empty(len(train)) for name, _, _ in candidates}
    for i, (_, held) in enumerate(folds):
        for j, (name, _, _) in enumerate(candidates):
            out[name][held] = done[i * len(candidates) + j]
    return train, out


def _fit_target(
    X: npt.NDArray[np.float64],
    y: npt.NDArray[np.float64],
    config: list[str],
    options: FitOptions,
    fallback_value: float | None,
    key: tuple[str, str],
    trials: npt.NDArray[np.int64] | None = None,
    order: npt.NDArray[np.float64] | None = None,
    partition: tuple[_Partition, npt.NDArray[np.int64]] | None = None,
    held: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Fit one layer type's target from one row per configuration (see :func:`combine_trials`).

    The configurations are split into training and test rows; models are chosen (the poly target mode; the
    default among the methods and the baselines) on validation predictions of the training rows (see
    :func:`_validation`), fitted again to all training rows and scored on the test rows, which nothing was
    chosen on. The prediction interval is calibrated on the validation residuals and its coverage reported
    on the test rows. With ``order`` (where each configuration's first row is among the type's rows, 0 to 1), the
    validation residuals are checked for drift with it (``drift`` in the block, see
    :func:`~neuralpower.models.drift.residual_drift`). ``partition``: the layer type's :class:`_Partition` and the
    configuration of each row (default: one drawn for these rows alone). ``held``, when given, receives the rows'
    configurations, measured values and the default model's predictions on the validation and the test rows.
    """
    n = len(y)
    if n < MIN_ROWS:
        return {"rows": n, **_fallback(X, y, n, fallback_value)}
    parts, ids = partition or (_Partition.draw(n, options.test_fraction, options.seed), np.arange(n))
    train, test = parts.split(ids)
    methods: tuple[str, ...] = METHODS if options.method == "all" else (options.method,)
    if len(train) < BOOSTED_FROM and len(methods) > 1:
        methods = tuple(m for m in methods if m != "boosted")
    val_rows, val_pred = _validation(X, y, train, methods, config, options, parts, ids, key[1])
    val_rmspe = {name: metrics(y[val_rows], pred)["rmspe"] for name, pred in val_pred.items()}
    # each method's settings (poly's target modes, the tree's and boosting's settings) by validation RMSPE
    best: dict[str, dict[str, float]] = {m: {} for m in methods}
    for name, rmspe in val_rmspe.items():
        if ":" in name:
            method, setting = name.split(":", 1)
            best[method][setting] = rmspe
    modes, trees, boosted = (best.get(m, {}) for m in ("poly", "tree", "boosted"))
    chosen = {m: (f"{m}:{min(best[m], key=lambda k: best[m][k])}" if best.get(m) else m)
              for m in (*methods, *BASELINES)}
    validation = {m: val_rmspe[name] for m, name in chosen.items()}
    default = min(validation, key=lambda m: validation[m])

    modes_of = {name: mode for name, _, mode in _candidates(methods, key[1])}

    def refit(method: str, name: str) -> Callable[[int], dict[str, Any]]:
        mode = modes_of.get(name, "plain")
        return lambda jobs: _fit_method(method, X[train], y[train], config, options, mode, jobs)

    fitted = _run_all([refit(method, name) for method, name in chosen.items()], options.jobs)
    models: dict[str, Any] = dict(zip(chosen, fitted, strict=True))
    predictions = {method: predict_spec(spec, X[test], FEATURES) for method, spec in models.items()}
    if options.holdout is not None:
        options.holdout[key] = (y[test], predictions)
    scores: dict[str, Any] = {}
    for method, spec in models.items():
        scores[method] = metrics(y[test], predictions[method])
        scores[method]["rows_train"] = len(train)
        scores[method]["rows_test"] = len(test)
        scores[method]["validation_rmspe"] = validation[method]
        if spec["kind"] == "poly":
            scores[method]["terms"] = len(spec["terms"])
            scores[method]["candidates"] = spec["candidates"]
        elif spec["kind"] == "tree":
            scores[method]["leaves"] = _leaves(spec["root"])
            scores[method]["setting"] = chosen[method].split(":")[1]
        elif spec["kind"] == "boosted":
            scores[method]["trees"] = len(spec["trees"])
            scores[method]["setting"] = chosen[method].split(":")[1]
    block: dict[str, Any] = {"rows": n, "default": default, "fallback": None, "models": models, "metrics": scores}
    if trials is not None:
        block["trials"] = int(trials.sum())
    if held is not None:
        held.update(val=(ids[val_rows], y[val_rows], val_pred[chosen[default]], X[val_rows]),
                    test=(ids[test], y[test], predictions[default], X[test]))
    interval = _interval(y[val_rows], val_pred[chosen[default]], X[val_rows], _group_features(X, config))
    if interval is not None:
        interval["test_coverage"] = _covered(y[test], predictions[default], interval, X[test])
        block["interval"] = interval
    if modes:
        block["target_modes"] = modes
    if trees:
        block["tree_settings"] = trees
    if boosted:
        block["boosted_settings"] = boosted
    if order is not None:
        cols = [FEATURES.index(f) for f in config]
        drift = _errors_drift(order[val_rows], y[val_rows], val_pred[chosen[default]], X[val_rows][:, cols])
        if drift is not None:
            block["drift"] = drift
    return block


def _energy_interval(runtime: dict[str, Any], power: dict[str, Any], config: list[str]) -> dict[str, Any] | None:
    """Energy's own interval: calibrated on the configurations that are validation rows of both targets (the product
    of their default models' predictions against the product of their measurements), its coverage checked on those
    that are test rows of both; None where fewer than :data:`MIN_INTERVAL_ROWS` have both (or a target fell back)."""
    if "val" not in runtime or "val" not in power:
        return None

    def joined(part: str) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64], npt.NDArray[np.float64]]:
        (ids_r, y_r, p_r, X_r), (ids_p, y_p, p_p, _) = runtime[part], power[part]
        _, at_r, at_p = np.intersect1d(ids_r, ids_p, assume_unique=True, return_indices=True)
        return y_r[at_r] * y_p[at_p], p_r[at_r] * p_p[at_p], X_r[at_r]

    y, pred, X = joined("val")
    if len(y) < MIN_INTERVAL_ROWS:  # (the targets' validation rows may share few configurations, or none)
        return None
    interval = _interval(y, pred, X, _group_features(X, config))
    if interval is None:
        return None
    y, pred, X = joined("test")
    if len(y):
        interval["test_coverage"] = _covered(y, pred, interval, X)
    return interval


def _group_features(X: npt.NDArray[np.float64], config: list[str]) -> list[str]:
    """The features an interval's groups split on: the type's configuration and its work, those that vary."""
    return [f for f in (*config, "flops", "bytes_moved") if np.ptp(X[:, FEATURES.index(f)]) > 0]


def _errors_drift(position: npt.NDArray[np.float64], measured: npt.NDArray[np.float64],
                  predicted: npt.NDArray[np.float64], configs: npt.NDArray[np.float64]) -> dict[str, float] | None:
    """The drift of the errors with the row order (see :func:`residual_drift`), on the rows predicted positive;
    None where there is none, or where the order is the configurations' (a sweep ordered by size would look
    like a drift)."""
    ok = predicted > 0
    drift = residual_drift(position[ok], measured[ok], predicted[ok])
    if drift is None or order_follows_configuration(position[ok], configs[ok]):
        return None
    return drift


def _leaves(node: dict[str, Any]) -> int:
    return 1 if "leaf" in node else _leaves(node["yes"]) + _leaves(node["no"])


def _fallback(
    X: npt.NDArray[np.float64], y: npt.NDArray[np.float64], n: int, fallback_value: float | None
) -> dict[str, Any]:
    """Too few rows for held-out metrics and a polynomial: a roofline from 3 rows, else a constant.

    ``fallback_value`` is the mean of all power measurements, or None when the tables hold none.
    """
    if n >= 3:
        spec = fit_roofline(X, y, FEATURES)
        why = f"only {n} rows (fewer than {MIN_ROWS}): a roofline model fitted to all of them, no held-out metrics"
        return {
            "default": "roofline",
            "fallback": why,
            "models": {"roofline": spec},
            "metrics": {"roofline": {**metrics(y, predict_spec(spec, X, FEATURES)), "rows_train": n, "rows_test": 0}},
        }
    if n:
        value, why = float(np.mean(y)), f"only {n} rows: the mean of this layer type's measurements"
    elif fallback_value is not None:
        value, why = fallback_value, "no measurements of this layer type: the mean over all layer types"
    else:
        value = 0.0
        why = "no power measured (the executor read no power sensor): power and energy predictions are 0"
    return {
        "default": "constant",
        "fallback": why,
        "models": {"constant": {"kind": "constant", "value": value}},
        "metrics": {},
    }


def _software() -> dict[str, str]:
    import sklearn

    versions = {
        "neuralpower": __version__,
        "python": platform.python_version(),
        "numpy": np.__version__,
        "scikit-learn": sklearn.__version__,
    }
    try:
        import scipy

        versions["scipy"] = scipy.__version__
    except ImportError:  # pragma: no cover - scikit-learn requires scipy
        pass
    return versions


def _fit_types(data: Measurements, options: FitOptions, mean_power: float | None) -> dict[str, Any]:
    """The models of every layer type with runtime measurements (see :func:`fit_models`); ``mean_power`` is the
    mean of all power measurements (None without any)."""
    layer_types: dict[str, Any] = {}
    for code in np.unique(data.types):
        t = LAYER_TYPES[int(code)]
        rows = data.types == code
        X = data.features[rows]
        config = _config_features(int(code))
        used = [*config, *sorted(_SPECIAL)]
        entry: dict[str, Any] = {
            "rows": int(rows.sum()),
            "ranges": {f: [float(X[:, FEATURES.index(f)].min()), float(X[:, FEATURES.index(f)].max())] for f in used},
        }
        # one partition of the type's configurations for both targets (see _Partition)
        _, config_of = np.unique(data.rows[rows], axis=0, return_inverse=True)
        config_of = config_of.reshape(-1)
        partition = _Partition.draw(int(config_of.max()) + 1, options.test_fraction, options.seed)
        held: dict[str, dict[str, Any]] = {}
        for target in TARGETS:
            y = data.targets[target][rows]
            ok = np.isfinite(y)
            if options.progress:
                options.progress(f"{t} {target}: {int(ok.sum())} rows")
            if target == "runtime_ms" and not ok.any():
                break
            first, combined, trials = combine_trials(data.rows[rows][ok], y[ok], data.noisy[rows][ok])
            order = np.flatnonzero(ok)[first] / max(len(ok) - 1, 1)  # from the type's first row (0) to its last
            held[target] = {}
            entry[target] = _fit_target(X[ok][first], combined, config, options, mean_power, (t, target), trials,
                                        order, (partition, config_of[ok][first]), held[target])
        else:
            energy = _energy_interval(held["runtime_ms"], held["power_w"], config)
            if energy is not None:
                entry["energy_interval"] = energy
            layer_types[t] = entry
            continue
        log.warning("%s: no runtime measured; left out of the model", t)
    return layer_types


def fit_models(
    data: Measurements, options: FitOptions | None = None, *, gpu: str | None = None, executor: str | None = None
) -> dict[str, Any]:
    """Fit the runtime and power models of every layer type in ``data``; returns the model document.

    ``gpu`` and ``executor`` default to the tables' ``gpu`` and ``executor`` columns.
    """
    options = options or FitOptions()
    if options.method not in (*METHODS, "all"):
        raise ValueError(f"unknown method {options.method!r}")
    if options.degree < 1 or options.degree > 4:
        raise ValueError("degree must be 1 to 4")
    if options.jobs is not None and options.jobs < 1:
        raise ValueError("jobs must be at least 1")
    dtypes = data.context["dtype"]
    if len(dtypes) > 1:
        from ..errors import InputError

        raise InputError(f"the tables mix dtypes ({', '.join(dtypes)}): fit one model per dtype")

    def one(key: str, given: str | None) -> str:
        if given is not None:
            return given
        values = data.context.get(key, [])
        return values[0] if len(values) == 1 else ("mixed: " + ", ".join(values) if values else "unknown")

    import scipy.optimize  # noqa: F401  (the BLAS libraries fitting uses, loaded before they are limited)
    import sklearn.linear_model  # noqa: F401
    from threadpoolctl import threadpool_limits

    # BLAS on one thread: the fits are spread over threads already (FitOptions.jobs), many BLAS threads under
    # each would only contend, and BLAS's sums in one fixed order keep the model the same whatever ``jobs`` is
    all_power = data.targets["power_w"][np.isfinite(data.targets["power_w"])]
    with threadpool_limits(limits=1, user_api="blas"):
        layer_types = _fit_types(data, options, float(all_power.mean()) if len(all_power) else None)
    if not layer_types:
        from ..errors import InputError

        raise InputError("no layer type has runtime measurements: nothing to fit")
    return {
        "schema": SCHEMA,
        "schema_version": SCHEMA_VERSION,
        "created": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "gpu": one("gpu", gpu),
        "executor": one("executor", executor),
        "dtype": dtypes[0] if dtypes else "fp32",
        "software": _software(),
        "sources": [{"path": p, "rows": n} for p, n in data.sources],
        "method": options.method,
        "power_measured": bool(len(all_power)),
        "degree": options.degree,
        "features": list(FEATURES),
        "layer_types": layer_types,
    }


def fit_summary(doc: dict[str, Any]) -> list[dict[str, Any]]:
    """One record per layer type and target: rows, terms kept, held-out RMSPE of every method."""
    out = []
    for t, entry in doc["layer_types"].items():
        for target in TARGETS:
            block = entry[target]
            m = block["metrics"]
            rec: dict[str, Any] = {
                "type": t,
                "target": target,
                "rows": block["rows"],
                "default": block["default"],
                "terms": m.get("poly", {}).get("terms"),
                "target_mode": block["models"].get("poly", {}).get("target"),
            }
            for method in (*METHODS, *BASELINES):
                rec[f"rmspe_{method}"] = m[method]["rmspe"] if method in m and m[method].get("rows_test") else None
            rec["fallback"] = block["fallback"]
            rec["drift"] = block.get("drift")
            out.append(rec)
    return out
