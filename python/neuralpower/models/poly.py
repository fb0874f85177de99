"""NeuralPower's sparse polynomial model: monomials of a layer's configuration plus special terms (FLOPs,
memory accessed), the sparse set of terms chosen by Lasso with K-fold cross-validation.

A fitted model is plain data in raw feature space, so the C++ evaluator computes it directly::

    {"kind": "poly", "target": "plain" | "relative" | "log", "degree": 3,
     "inputs": [{"feature": "batch", "transform": "identity" | "log1p"}, ...],
     "intercept": c0,
     "terms": [{"powers": [[input_index, exponent], ...], "coef": c}, ...]}

    prediction = intercept + sum(coef * prod(input[i] ** e))      (exp(...) when target is "log")

``target`` says how runtime's wide range was handled in fitting: ``plain`` least squares, ``relative``
(rows weighted by 1/y², so relative errors count), or ``log`` (a fit of log y on log1p inputs: a
generalized power law). Prediction is the same for plain and relative.
"""

from __future__ import annotations

import inspect
import itertools
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from ._values import is_finite_number

__all__ = ["TARGET_MODES", "fit_poly", "predict_poly", "terms_matrix", "validate_poly"]

TARGET_MODES = ("plain", "relative", "log")
TRANSFORMS = ("identity", "log1p")
SPECIAL_FEATURES = ("flops", "bytes_moved")
MAX_EXPONENT = 8
MAX_TERMS = 10_000


def _inputs(config: Sequence[str], mode: str) -> tuple[list[dict[str, str]], list[int], list[int]]:
    """Model inputs, the indices that enter the polynomial, and those that enter only linearly."""
    if mode == "log":
        inputs = [{"feature": f, "transform": "log1p"} for f in (*config, *SPECIAL_FEATURES)]
        return inputs, list(range(len(inputs))), []
    inputs = [{"feature": f, "transform": "identity"} for f in config]
    poly = list(range(len(inputs)))
    # FLOPs and memory accessed enter linearly, and as logs (which help power, a saturating quantity)
    inputs += [{"feature": f, "transform": t} for t in TRANSFORMS for f in SPECIAL_FEATURES]
    return inputs, poly, list(range(len(config), len(inputs)))


def _input_values(
    inputs: Sequence[Mapping[str, str]], X: npt.NDArray[np.float64], feature_names: Sequence[str]
) -> npt.NDArray[np.float64]:
    index = {name: i for i, name in enumerate(feature_names)}
    cols = []
    for inp in inputs:
        v = X[:, index[inp["feature"]]]
        cols.append(np.log1p(v) if inp["transform"] == "log1p" else v)
    return np.stack(cols, axis=1) if cols else np.empty((X.shape[0], 0))


def terms_matrix(powers: Sequence[Sequence[Sequence[int]]], values: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    """Evaluate monomials (lists of ``[input_index, exponent]``) on input values ``(n, n_inputs)``."""
    out = np.ones((values.shape[0], len(powers)))
    for j, term in enumerate(powers):
        for i, e in term:
            out[:, j] *= values[:, i] ** e
    return out


def _monomials(poly: Sequence[int], linear: Sequence[int], degree: int) -> list[list[list[int]]]:
    terms: list[list[list[int]]] = []
    for d in range(1, degree + 1):
        for combo in itertools.combinations_with_replacement(poly, d):
            terms.append([[i, combo.count(i)] for i in sorted(set(combo))])
    terms += [[[i, 1]] for i in linear]
    return terms


def _lasso(**kwargs: Any) -> Any:
    from sklearn.linear_model import LassoCV

    # scikit-learn 1.7 renamed n_alphas to alphas (an int); support both
    params = inspect.signature(LassoCV.__init__).parameters
    if "n_alphas" in params:
        kwargs["n_alphas"] = kwargs.pop("alphas")
    return LassoCV(**kwargs)


def fit_poly(
    X: npt.NDArray[np.float64],
    y: npt.NDArray[np.float64],
    feature_names: Sequence[str],
    *,
    config: Sequence[str],
    mode: str = "plain",
    degree: int = 3,
    cv: int = 5,
    seed: int = 0,
    jobs: int = 1,
) -> dict[str, Any]:
    """Fit a sparse polynomial of ``config`` features (plus FLOPs and memory terms) by LassoCV.

    Parameters
    ----------
    X
        ``(n, len(feature_names))`` features.
    y
        Positive targets.
    config
        The configuration features entering the polynomial (the layer type's own, see
        ``neuralpower.layers.type_features``).
    mode
        ``plain``, ``relative`` or ``log`` (see the module docstring).
    degree
        Highest total degree of the monomials.
    jobs
        Threads computing the cross-validation folds' Lasso paths at once (the same fit whatever the number).
    """
    if mode not in TARGET_MODES:
        raise ValueError(f"unknown target mode {mode!r}")
    inputs, poly, linear = _inputs(config, mode)
    values = _input_values(inputs, X, feature_names)
    powers = _monomials(poly, linear, degree)
    T = terms_matrix(powers, values)
    scale = T.std(axis=0)
    keep = np.flatnonzero(scale > 1e-12 * np.maximum(1.0, np.abs(T).max(axis=0)))
    T, scale, powers = T[:, keep] / scale[keep], scale[keep], [powers[j] for j in keep]
    target = np.log(y) if mode == "log" else y
    weight = 1.0 / y**2 if mode == "relative" else None
    if len(keep) == 0:
        # Every candidate term is constant on these rows (one configuration measured many times): the fit is
        # its (weighted) mean, with no terms, rather than a Lasso over no columns.
        intercept = float(np.average(target, weights=weight))
        return {"kind": "poly", "target": mode, "degree": degree, "inputs": inputs, "intercept": intercept,
                "terms": [], "alpha": 0.0, "candidates": 0}
    model = _lasso(alphas=40, cv=min(cv, len(y)), max_iter=20_000, tol=1e-4, random_state=seed, selection="random",
                   n_jobs=jobs if jobs > 1 else None)
    with warnings.catch_warnings():
        # LassoCV warns when its path has not fully converged on the weakest penalties; the chosen alpha is
        # checked by cross-validation either way.
        warnings.simplefilter("ignore")
        model.fit(T, target, sample_weight=weight)
    coef = np.asarray(model.coef_, dtype=np.float64) / scale
    nz = np.flatnonzero(model.coef_ != 0)
    return {
        "kind": "poly",
        "target": mode,
        "degree": degree,
        "inputs": inputs,
        "intercept": float(model.intercept_),
        "terms": [{"powers": powers[j], "coef": float(coef[j])} for j in nz],
        "alpha": float(model.alpha_),
        "candidates": len(keep),
    }


def predict_poly(
    spec: Mapping[str, Any], X: npt.NDArray[np.float64], feature_names: Sequence[str]
) -> npt.NDArray[np.float64]:
    """Evaluate a (validated) polynomial model on features ``X``."""
    values = _input_values(spec["inputs"], X, feature_names)
    terms = spec["terms"]
    out = np.full(X.shape[0], float(spec["intercept"]))
    if terms:
        out += terms_matrix([t["powers"] for t in terms], values) @ np.array([t["coef"] for t in terms])
    if spec["target"] == "log":
        with np.errstate(over="ignore"):
            out = np.exp(out)
    return out


def _finite(value: Any, where: str) -> float:
    if not is_finite_number(value):
        raise ValueError(f"{where} must be a finite number, not {value!r}")
    return float(value)


def validate_poly(spec: Any, feature_names: Sequence[str]) -> None:
    """Check an untrusted polynomial model; raise ``ValueError`` with a one-line message."""
    if not isinstance(spec, dict):
        raise ValueError("a poly model must be an object")
    if spec.get("target") not in TARGET_MODES:
        raise ValueError(f"'target' must be one of {', '.join(TARGET_MODES)}")
    inputs = spec.get("inputs")
    if not isinstance(inputs, list) or len(inputs) > 1000:
        raise ValueError("'inputs' must be a list (at most 1000)")
    known = set(feature_names)
    for k, inp in enumerate(inputs):
        if not isinstance(inp, dict) or inp.get("feature") not in known or inp.get("transform") not in TRANSFORMS:
            raise ValueError(f"inputs[{k}] must name a known feature and a transform ({', '.join(TRANSFORMS)})")
    _finite(spec.get("intercept"), "'intercept'")
    terms = spec.get("terms")
    if not isinstance(terms, list) or len(terms) > MAX_TERMS:
        raise ValueError(f"'terms' must be a list (at most {MAX_TERMS})")
    for j, term in enumerate(terms):
        if not isinstance(term, dict):
            raise ValueError(f"terms[{j}] must be an object")
        _finite(term.get("coef"), f"terms[{j}].coef")
        powers = term.get("powers")
        if not isinstance(powers, list) or not powers or len(powers) > len(inputs):
            raise ValueError(f"terms[{j}].powers must be a non-empty list of [input, exponent] pairs")
        for p in powers:
            if (
                not isinstance(p, list)
                or len(p) != 2
                or any(isinstance(v, bool) or not isinstance(v, int) for v in p)
                or not 0 <= p[0] < len(inputs)
                or not 1 <= p[1] <= MAX_EXPONENT
            ):
                raise ValueError(
                    f"terms[{j}].powers: {p!r} is not [input index < {len(inputs)}, exponent 1..{MAX_EXPONENT}]"
                )
        named = [p[0] for p in powers]
        if len(set(named)) != len(named):
            # x^8 * x^8 would be x^16: an input appears once per term, so MAX_EXPONENT bounds every power
            raise ValueError(f"terms[{j}].powers names input {next(i for i in named if named.count(i) > 1)} twice")
