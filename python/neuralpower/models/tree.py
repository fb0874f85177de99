"""Tree-structured linear models of runtime or power (FastDeepIoT, Yao et al., SenSys 2018).

A layer's runtime is not linear in its channel counts: kernels run faster when a channel count is a multiple of
4, 8, 16, ... (vector widths, tile sizes), and switch algorithms at size thresholds. FastDeepIoT captures that with
a regression tree whose internal nodes test either a range (``x[f] <= t``) or an integer multiple
(``x[f] % m == 0``) and whose leaves are linear models with non-negative weights over a few cost features (for
example ``flops``, ``bytes_moved``, ``params``).

A fitted model is plain JSON-able data (dicts, lists, floats, ints, strings) that names features, never column
positions, so it survives a reordering of the feature columns::

    {"kind": "tree", "leaf_features": ["flops", "bytes_moved"], "relative": true, "root": node}

where ``node`` is either a leaf ``{"leaf": {"intercept": 1e-05, "weights": [2e-13, 1e-12]}, "n": 120}`` or a
split ``{"feature": "out_channels", "test": "mod", "value": 8, "n": 3000, "yes": node, "no": node}`` (``yes``
holds the rows for which the test is true; ``"le"`` tests ``x <= value``, ``"mod"`` tests ``x % value == 0``).
A leaf predicts ``intercept + sum(w_i * x[leaf_features[i]])``. Other keys at the top level are ignored (room for
metadata); keys a node does not know are refused.

:func:`validate_tree` checks a spec from an untrusted source; :func:`predict_tree` assumes a validated one.
"""

from __future__ import annotations

import importlib
import numbers
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from ._values import is_finite_number

__all__ = ["fit_tree", "predict_tree", "validate_tree"]

FloatArray = npt.NDArray[np.float64]
IndexArray = npt.NDArray[np.intp]

#: The deepest tree :func:`validate_tree` accepts (the root is at depth 0).
MAX_DEPTH = 64
#: The most nodes (leaves and splits) :func:`validate_tree` accepts.
MAX_NODES = 100_000
#: The largest ``value`` of a ``mod`` test (every integer up to it is exact in float64).
MAX_MODULUS = 2**53

# A split is kept only when it cuts the tree's total squared error by more than this fraction of the root leaf's
# error (CART's complexity parameter), and by more than _GAIN_FLOOR times the sum of the squared (weighted)
# targets, so that a root fit that is already exact does not split on rounding noise.
_MIN_GAIN = 0.01
_GAIN_FLOOR = 1e-9
# Candidate tests whose masks are multiplied at once.
_CHUNK = 64
# Eigenvalues of a Gram matrix below this fraction of its largest are treated as zero.
_EIG_RTOL = 1e-11

_LEAF_KEYS = frozenset({"leaf", "n"})
_SPLIT_KEYS = frozenset({"feature", "test", "value", "n", "yes", "no"})
_TESTS = ("le", "mod")


# -- fitting ---------------------------------------------------------------------------------------------------


def fit_tree(
    X: np.ndarray,
    y: np.ndarray,
    feature_names: Sequence[str],
    *,
    split_features: Sequence[str],
    leaf_features: Sequence[str],
    max_depth: int = 4,
    min_leaf: int = 20,
    multiples: Sequence[int] = (2, 4, 8, 16, 32),
    n_thresholds: int = 16,
    relative: bool = True,
    min_gain: float = _MIN_GAIN,
) -> dict[str, Any]:
    """Fit a tree-structured linear model, greedily and top-down (CART-like).

    Each node is first fitted as a leaf: ``y ≈ intercept + X[:, leaf_features] @ w`` with ``intercept >= 0`` and
    ``w >= 0`` by non-negative least squares. It is then split on the test, among every split feature's range
    tests ``x <= t`` (``t`` at up to `n_thresholds` quantiles of the node's distinct values) and, for a feature
    whose training values are all integers, multiple tests ``x % m == 0`` for ``m`` in `multiples`, that leaves
    at least `min_leaf` rows on each side and minimizes the two child leaves' total squared error. A split is kept
    when it cuts the error by more than `min_gain` (1 %) of the root leaf's error; growth stops at `max_depth`.

    Parameters
    ----------
    X : numpy.ndarray
        Features, shape ``(n, F)``, finite; column ``j`` is ``feature_names[j]``.
    y : numpy.ndarray
        Targets (runtime or power), shape ``(n,)``, finite and positive.
    feature_names : sequence of str
        The names of `X`'s columns, distinct.
    split_features : sequence of str
        Features the internal nodes may test.
    leaf_features : sequence of str
        Features of the leaves' linear models (may be empty: the leaves are then constants).
    max_depth : int, optional
        Most tests on a path from the root to a leaf, 0 to 64.
    min_leaf : int, optional
        Fewest training rows in a leaf, at least 1.
    multiples : sequence of int, optional
        Moduli ``m`` of the multiple tests, positive integers.
    n_thresholds : int, optional
        Most range thresholds tried per feature and node.
    relative : bool, optional
        Minimize the squared relative error ``sum(((pred - y) / y) ** 2)`` (each row of the least-squares
        problem is divided by its target) rather than the squared error.
    min_gain : float, optional
        Smallest share of the root leaf's error a split must remove to be kept, from 0 to 1 (CART's complexity
        parameter).

    Returns
    -------
    dict
        The model, JSON-able (see the module's docstring).

    Raises
    ------
    ValueError
        If an argument is malformed: shapes, non-finite values, a non-positive target, unknown or repeated
        feature names, out-of-range settings.
    """
    names = list(feature_names)
    Xa, ya = _check_fit_inputs(X, y, names)
    split_cols = _feature_columns(split_features, names, "split_features")
    leaf_cols = _feature_columns(leaf_features, names, "leaf_features")
    if isinstance(max_depth, bool) or not isinstance(max_depth, numbers.Integral) or not 0 <= max_depth <= MAX_DEPTH:
        raise ValueError(f"max_depth must be an integer from 0 to {MAX_DEPTH}, got {_show(max_depth)}")
    if isinstance(min_leaf, bool) or not isinstance(min_leaf, numbers.Integral) or min_leaf < 1:
        raise ValueError(f"min_leaf must be a positive integer, got {_show(min_leaf)}")
    if isinstance(n_thresholds, bool) or not isinstance(n_thresholds, numbers.Integral) or n_thresholds < 0:
        raise ValueError(f"n_thresholds must be a non-negative integer, got {_show(n_thresholds)}")
    if isinstance(min_gain, bool) or not isinstance(min_gain, numbers.Real) or not 0 <= float(min_gain) <= 1:
        raise ValueError(f"min_gain must be a number from 0 to 1, got {_show(min_gain)}")
    mods = list(multiples)
    for m in mods:
        if isinstance(m, bool) or not isinstance(m, numbers.Integral) or not 1 <= m <= MAX_MODULUS:
            raise ValueError(f"multiples must be positive integers up to 2**53, got {_show(m)}")

    # Row weights; without `relative` a common scale (which moves no optimum) keeps the sums of squares tame.
    weight = 1.0 / ya if relative else np.full_like(ya, 1.0 / float(np.max(ya)))
    design = np.empty((len(ya), len(leaf_cols) + 1))
    design[:, 0] = 1.0
    design[:, 1:] = Xa[:, leaf_cols]
    design *= weight[:, None]
    target = ya * weight
    integer_cols = {c for c in split_cols if bool(np.all(Xa[:, c] == np.round(Xa[:, c])))}

    grower = _Grower(
        X=Xa,
        design=design,
        target=target,
        names=names,
        split_cols=split_cols,
        integer_cols=integer_cols,
        multiples=[int(m) for m in mods],
        max_depth=int(max_depth),
        min_leaf=int(min_leaf),
        n_thresholds=int(n_thresholds),
    )
    root_idx = np.arange(len(ya), dtype=np.intp)
    root_fit = _fit_leaf(design, target)
    grower.min_gain = max(float(min_gain) * root_fit[1], _GAIN_FLOOR * float(target @ target))
    return {
        "kind": "tree",
        "leaf_features": [names[c] for c in leaf_cols],
        "relative": bool(relative),
        "root": grower.grow(root_idx, 0, root_fit),
    }


def _check_fit_inputs(X: np.ndarray, y: np.ndarray, names: list[str]) -> tuple[FloatArray, FloatArray]:
    Xa = np.asarray(X, dtype=np.float64)
    ya = np.asarray(y, dtype=np.float64)
    if Xa.ndim != 2:
        raise ValueError(f"X must be 2-dimensional, got shape {Xa.shape}")
    if ya.shape != (Xa.shape[0],):
        raise ValueError(f"y must have shape ({Xa.shape[0]},) to match X, got {ya.shape}")
    if Xa.shape[0] == 0:
        raise ValueError("X has no rows")
    if len(names) != Xa.shape[1]:
        raise ValueError(f"feature_names has {len(names)} names for {Xa.shape[1]} columns of X")
    if not all(isinstance(n, str) for n in names) or len(set(names)) != len(names):
        raise ValueError("feature_names must be distinct strings")
    if not np.all(np.isfinite(Xa)):
        row, col = np.argwhere(~np.isfinite(Xa))[0]
        raise ValueError(f"X has a non-finite value at row {row}, feature {names[col]!r}")
    if not np.all(np.isfinite(ya) & (ya > 0)):
        row = int(np.flatnonzero(~(np.isfinite(ya) & (ya > 0)))[0])
        raise ValueError(f"y must be finite and positive, got {ya[row]!r} at row {row}")
    return Xa, ya


def _feature_columns(features: Sequence[str], names: list[str], what: str) -> list[int]:
    if isinstance(features, str):
        raise ValueError(f"{what} must be a sequence of feature names, not one string")
    index = {name: i for i, name in enumerate(names)}
    cols = []
    for f in features:
        if f not in index:
            raise ValueError(f"{what}: unknown feature {_show(f)}")
        cols.append(index[f])
    if len(set(cols)) != len(cols):
        raise ValueError(f"{what} names a feature twice")
    return cols


def _fit_leaf(design: FloatArray, target: FloatArray) -> tuple[FloatArray, float]:
    """Non-negative least squares ``min |design @ coef - target|`` with ``coef >= 0``; returns the raw-space
    coefficients (intercept first) and the residual sum of squares."""
    scale = _column_scale(design)
    try:
        coef = np.asarray(_nnls(design / scale, target)[0], dtype=np.float64) / scale
    except RuntimeError:  # iteration limit: fall back to the best non-negative constant
        coef = np.zeros(design.shape[1])
        ones = design[:, 0]
        coef[0] = max(float(ones @ target) / float(ones @ ones), 0.0)
    resid = design @ coef - target
    return coef, float(resid @ resid)


def _nnls(a: FloatArray, b: FloatArray) -> Any:
    """:func:`scipy.optimize.nnls`, imported on first use: importing this module (to validate or predict) does
    not import SciPy."""
    return importlib.import_module("scipy.optimize").nnls(a, b)


def _column_scale(a: FloatArray) -> FloatArray:
    scale: FloatArray = np.max(np.abs(a), axis=0)
    scale[~(scale > 0)] = 1.0
    return scale


def _gram_sse(stats: FloatArray, p: int) -> FloatArray:
    """Residual sums of squares of non-negative least squares problems given by their sufficient statistics.

    Each row of `stats` is ``[vec(A.T @ A), A.T @ b, b @ b]`` for a problem ``min |A @ x - b|, x >= 0`` with ``p``
    unknowns. With ``A.T @ A = R.T @ R`` and ``z`` solving ``R.T @ z = A.T @ b`` (on the range of ``R``),
    ``|A @ x - b|**2 = |R @ x - z|**2 + b @ b - z @ z``: a ``p x p`` problem.
    """
    gram = stats[:, : p * p].reshape(-1, p, p)
    gram = 0.5 * (gram + gram.transpose(0, 2, 1))
    rhs = stats[:, p * p : p * p + p]
    bb = stats[:, -1]
    lam, vec = np.linalg.eigh(gram)
    keep = lam > _EIG_RTOL * np.maximum(lam[:, -1:], 0.0)
    root = np.sqrt(np.where(keep, lam, 0.0))
    r_mat = root[:, :, None] * vec.transpose(0, 2, 1)
    z = np.where(keep, np.einsum("cji,cj->ci", vec, rhs) / np.where(keep, root, 1.0), 0.0)
    const = bb - np.einsum("ci,ci->c", z, z)
    out = np.empty(len(stats))
    for k in range(len(stats)):
        try:
            rnorm = float(_nnls(r_mat[k], z[k])[1])
        except RuntimeError:
            out[k] = np.inf
            continue
        out[k] = max(rnorm * rnorm + const[k], 0.0)
    return out


class _Grower:
    """The state of one :func:`fit_tree` call; :meth:`grow` builds a node and its subtree."""

    def __init__(
        self,
        *,
        X: FloatArray,
        design: FloatArray,
        target: FloatArray,
        names: list[str],
        split_cols: list[int],
        integer_cols: set[int],
        multiples: list[int],
        max_depth: int,
        min_leaf: int,
        n_thresholds: int,
    ) -> None:
        self.X = X
        self.design = design
        self.target = target
        self.names = names
        self.split_cols = split_cols
        self.integer_cols = integer_cols
        self.multiples = multiples
        self.max_depth = max_depth
        self.min_leaf = min_leaf
        self.n_thresholds = n_thresholds
        self.min_gain = 0.0

    def grow(self, idx: IndexArray, depth: int, fit: tuple[FloatArray, float]) -> dict[str, Any]:
        coef, sse = fit
        leaf: dict[str, Any] = {
            "leaf": {"intercept": float(coef[0]), "weights": [float(w) for w in coef[1:]]},
            "n": len(idx),
        }
        if depth >= self.max_depth or len(idx) < 2 * self.min_leaf:
            return leaf
        best = self._best_split(idx)
        if best is None:
            return leaf
        col, test, value, mask = best
        yes, no = idx[mask], idx[~mask]
        fit_yes = _fit_leaf(self.design[yes], self.target[yes])
        fit_no = _fit_leaf(self.design[no], self.target[no])
        if sse - fit_yes[1] - fit_no[1] <= self.min_gain:
            return leaf
        return {
            "feature": self.names[col],
            "test": test,
            "value": value,
            "n": len(idx),
            "yes": self.grow(yes, depth + 1, fit_yes),
            "no": self.grow(no, depth + 1, fit_no),
        }

    def _best_split(self, idx: IndexArray) -> tuple[int, str, float | int, npt.NDArray[np.bool_]] | None:
        """The admissible test with the least total child error, and its mask over `idx`; None if none is."""
        tests: list[tuple[int, str, float | int]] = []
        masks: list[npt.NDArray[np.bool_]] = []
        n = len(idx)
        for col in self.split_cols:
            x = self.X[idx, col]
            distinct = np.unique(x)
            if len(distinct) < 2:
                continue
            if len(distinct) - 1 <= self.n_thresholds:
                thresholds = distinct[:-1]
            else:
                q = np.arange(1, self.n_thresholds + 1) / (self.n_thresholds + 1)
                thresholds = distinct[np.unique(np.floor(q * (len(distinct) - 1)).astype(np.intp))]
            if len(thresholds):
                le = x[None, :] <= thresholds[:, None]
                counts = le.sum(axis=1)
                ok = (counts >= self.min_leaf) & (n - counts >= self.min_leaf)
                for t, m in zip(thresholds[ok], le[ok], strict=True):
                    tests.append((col, "le", float(t)))
                    masks.append(m)
            if col in self.integer_cols:
                for mod in self.multiples:
                    m = np.mod(x, mod) == 0
                    c = int(m.sum())
                    if c >= self.min_leaf and n - c >= self.min_leaf:
                        tests.append((col, "mod", mod))
                        masks.append(m)
        if not tests:
            return None
        a = self.design[idx]
        a = a / _column_scale(a)
        b = self.target[idx]
        p = a.shape[1]
        outer = (a[:, :, None] * a[:, None, :]).reshape(n, p * p)
        stats = np.concatenate([outer, a * b[:, None], (b * b)[:, None]], axis=1)
        yes_stats = np.empty((len(masks), stats.shape[1]))
        for start in range(0, len(masks), _CHUNK):  # bounds the memory of the float copy of the masks
            chunk = np.asarray(masks[start : start + _CHUNK], dtype=np.float64)
            yes_stats[start : start + len(chunk)] = chunk @ stats
        no_stats = stats.sum(axis=0) - yes_stats
        err = _gram_sse(yes_stats, p) + _gram_sse(no_stats, p)
        k = int(np.argmin(err))
        if not np.isfinite(err[k]):
            return None
        col, test, value = tests[k]
        return col, test, value, masks[k]


# -- prediction ------------------------------------------------------------------------------------------------


def predict_tree(spec: Mapping[str, Any], X: np.ndarray, feature_names: Sequence[str]) -> np.ndarray:
    """Predict with a tree model, vectorized over rows.

    Parameters
    ----------
    spec : mapping
        A model from :func:`fit_tree`, or one that passed :func:`validate_tree` with these `feature_names`.
    X : numpy.ndarray
        Features, shape ``(n, F)``; column ``j`` is ``feature_names[j]`` (any order, any superset of the
        features the model uses).
    feature_names : sequence of str
        The names of `X`'s columns.

    Returns
    -------
    numpy.ndarray
        Predictions, shape ``(n,)``, float64.

    Raises
    ------
    ValueError
        If `X` is not 2-dimensional with one column per name.
    """
    Xa = np.asarray(X, dtype=np.float64)
    if Xa.ndim != 2 or Xa.shape[1] != len(feature_names):
        raise ValueError(f"X must have shape (n, {len(feature_names)}) to match feature_names, got {Xa.shape}")
    column = {name: j for j, name in enumerate(feature_names)}
    leaf_cols = np.asarray([column[f] for f in spec["leaf_features"]], dtype=np.intp)
    out = np.zeros(Xa.shape[0])
    stack: list[tuple[Mapping[str, Any], IndexArray]] = [(spec["root"], np.arange(Xa.shape[0], dtype=np.intp))]
    with np.errstate(all="ignore"):
        while stack:
            node, idx = stack.pop()
            if len(idx) == 0:
                continue
            if "leaf" in node:
                leaf = node["leaf"]
                weights = np.asarray(leaf["weights"], dtype=np.float64)
                out[idx] = float(leaf["intercept"]) + Xa[np.ix_(idx, leaf_cols)] @ weights
                continue
            x = Xa[idx, column[node["feature"]]]
            value = float(node["value"])
            mask = x <= value if node["test"] == "le" else np.mod(x, value) == 0
            stack.append((node["yes"], idx[mask]))
            stack.append((node["no"], idx[~mask]))
    return out


# -- validation ------------------------------------------------------------------------------------------------


def validate_tree(spec: Any, feature_names: Sequence[str]) -> None:
    """Check that `spec` is a well-formed tree model over `feature_names`.

    Meant for untrusted JSON: checks the types, that every feature is known, that every number is finite,
    leaf weights and intercepts are non-negative and there is one weight per leaf feature, that tests are
    ``"le"`` or ``"mod"`` with a ``mod`` value a positive integer (at most 2**53), that the tree is at most
    :data:`MAX_DEPTH` deep and has at most :data:`MAX_NODES` nodes. Never recurses deeper than that, so a
    cyclic or hostilely nested object fails cleanly.

    Parameters
    ----------
    spec : object
        The candidate model.
    feature_names : sequence of str
        The features it may name.

    Raises
    ------
    ValueError
        With a one-line message naming the first problem found.
    """
    if not isinstance(spec, Mapping):
        raise ValueError(f"tree model must be an object, got {type(spec).__name__}")
    if spec.get("kind") != "tree":
        raise ValueError(f"tree model: 'kind' must be 'tree', got {_show(spec.get('kind'))}")
    known = set(feature_names)
    leaf_features = spec.get("leaf_features")
    if not isinstance(leaf_features, list | tuple):
        raise ValueError(f"tree model: 'leaf_features' must be a list, got {type(leaf_features).__name__}")
    for f in leaf_features:
        if not isinstance(f, str) or f not in known:
            raise ValueError(f"tree model: 'leaf_features' names an unknown feature {_show(f)}")
    if len(set(leaf_features)) != len(leaf_features):
        raise ValueError("tree model: 'leaf_features' names a feature twice")
    if not isinstance(spec.get("relative"), bool):
        raise ValueError(f"tree model: 'relative' must be true or false, got {_show(spec.get('relative'))}")
    if "root" not in spec:
        raise ValueError("tree model: 'root' is missing")

    n_weights = len(leaf_features)
    count = 0
    stack: list[tuple[Any, int, str]] = [(spec["root"], 0, "root")]
    while stack:
        node, depth, path = stack.pop()
        count += 1
        if count > MAX_NODES:
            raise ValueError(f"tree model has more than {MAX_NODES} nodes")
        where = f"tree node at depth {depth} ({_short_path(path)})"
        if depth > MAX_DEPTH:
            raise ValueError(f"{where}: deeper than {MAX_DEPTH}")
        if not isinstance(node, Mapping):
            raise ValueError(f"{where}: must be an object, got {type(node).__name__}")
        if "n" in node and not _is_int_in(node["n"], 0, None):
            raise ValueError(f"{where}: 'n' must be a non-negative integer, got {_show(node['n'])}")
        if "leaf" in node:
            _check_keys(node, _LEAF_KEYS, where)
            _check_leaf(node["leaf"], n_weights, where)
            continue
        if "feature" not in node:
            raise ValueError(f"{where}: has neither 'leaf' nor 'feature'")
        _check_keys(node, _SPLIT_KEYS, where)
        for key in ("test", "value", "yes", "no"):
            if key not in node:
                raise ValueError(f"{where}: '{key}' is missing")
        feature, test, value = node["feature"], node["test"], node["value"]
        if not isinstance(feature, str) or feature not in known:
            raise ValueError(f"{where}: unknown feature {_show(feature)}")
        if not isinstance(test, str) or test not in _TESTS:
            raise ValueError(f"{where}: 'test' must be 'le' or 'mod', got {_show(test)}")
        if test == "mod":
            if not _is_int_in(value, 1, MAX_MODULUS):
                raise ValueError(
                    f"{where}: 'value' must be a positive integer (at most 2**53) for a 'mod' test, got {_show(value)}"
                )
        elif not is_finite_number(value):
            raise ValueError(f"{where}: 'value' must be a finite number for an 'le' test, got {_show(value)}")
        stack.append((node["no"], depth + 1, path + "/no"))
        stack.append((node["yes"], depth + 1, path + "/yes"))


def _check_keys(node: Mapping[Any, Any], allowed: frozenset[str], where: str) -> None:
    for key in node:
        if key not in allowed:
            raise ValueError(f"{where}: unknown key {_show(key)}")


def _check_leaf(leaf: Any, n_weights: int, where: str) -> None:
    if not isinstance(leaf, Mapping):
        raise ValueError(f"{where}: 'leaf' must be an object, got {type(leaf).__name__}")
    for key in leaf:
        if key not in ("intercept", "weights"):
            raise ValueError(f"{where}: unknown key {_show(key)} in 'leaf'")
    if "intercept" not in leaf or "weights" not in leaf:
        raise ValueError(f"{where}: 'leaf' needs 'intercept' and 'weights'")
    intercept, weights = leaf["intercept"], leaf["weights"]
    if not is_finite_number(intercept) or intercept < 0:
        raise ValueError(f"{where}: leaf 'intercept' must be a finite non-negative number, got {_show(intercept)}")
    if not isinstance(weights, list | tuple):
        raise ValueError(f"{where}: leaf 'weights' must be a list, got {type(weights).__name__}")
    if len(weights) != n_weights:
        raise ValueError(f"{where}: leaf has {len(weights)} weights for {n_weights} leaf features")
    for i, w in enumerate(weights):
        if not is_finite_number(w) or w < 0:
            raise ValueError(f"{where}: leaf weight {i} must be a finite non-negative number, got {_show(w)}")


def _is_int_in(v: Any, low: int, high: int | None) -> bool:
    """Whether `v` is an integer (not a bool) from `low` to `high` (None: no bound)."""
    if isinstance(v, bool) or not isinstance(v, numbers.Integral):
        return False
    i = int(v)
    return low <= i and (high is None or i <= high)


def _show(v: Any, limit: int = 60) -> str:
    """`v`'s repr on one line, cut to about `limit` characters."""
    try:
        text = repr(v)
    except Exception:  # a hostile __repr__
        text = f"<{type(v).__name__}>"
    text = text.replace("\n", "\\n").replace("\r", "\\r")
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _short_path(path: str, limit: int = 80) -> str:
    return path if len(path) <= limit else "..." + path[-(limit - 3) :]
