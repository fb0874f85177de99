"""Baselines every report compares against.

- ``roofline``, in the style of Paleo: time = FLOPs / compute rate + bytes / bandwidth + overhead, the rates
  and the overhead fitted (non-negative, relative error) per layer type: the effective peak rates that the
  hardware reaches on that layer type.
- ``flops_linear``: y = a * FLOPs + b, ordinary least squares.

Both are fitted to power as well as to runtime, for comparison; they are plain data::

    {"kind": "roofline", "ms_per_flop": a, "ms_per_byte": b, "overhead": c}
    {"kind": "flops_linear", "slope": a, "intercept": b}
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from ._values import is_finite_number

__all__ = ["fit_flops_linear", "fit_roofline", "predict_baseline", "validate_baseline"]


def _column(X: npt.NDArray[np.float64], feature_names: Sequence[str], name: str) -> npt.NDArray[np.float64]:
    return X[:, list(feature_names).index(name)]


def fit_roofline(
    X: npt.NDArray[np.float64], y: npt.NDArray[np.float64], feature_names: Sequence[str]
) -> dict[str, Any]:
    """Fit ``y = a * flops + b * bytes_moved + c`` with ``a, b, c >= 0``, minimizing relative error."""
    from scipy.optimize import nnls

    A = np.stack([_column(X, feature_names, "flops"), _column(X, feature_names, "bytes_moved"), np.ones(len(y))], 1)
    A = A / y[:, None]
    scale = np.maximum(np.abs(A).max(axis=0), 1e-300)
    w, _ = nnls(A / scale, np.ones(len(y)), maxiter=50 * A.shape[1])
    a, b, c = (w / scale).tolist()
    return {"kind": "roofline", "ms_per_flop": a, "ms_per_byte": b, "overhead": c}


def fit_flops_linear(
    X: npt.NDArray[np.float64], y: npt.NDArray[np.float64], feature_names: Sequence[str]
) -> dict[str, Any]:
    """Fit ``y = slope * flops + intercept`` by least squares."""
    flops = _column(X, feature_names, "flops")
    A = np.stack([flops, np.ones(len(y))], 1)
    (slope, intercept), *_ = np.linalg.lstsq(A, y, rcond=None)
    return {"kind": "flops_linear", "slope": float(slope), "intercept": float(intercept)}


def predict_baseline(
    spec: Mapping[str, Any], X: npt.NDArray[np.float64], feature_names: Sequence[str]
) -> npt.NDArray[np.float64]:
    """Evaluate a (validated) baseline model."""
    flops = _column(X, feature_names, "flops")
    if spec["kind"] == "roofline":
        bytes_moved = _column(X, feature_names, "bytes_moved")
        return np.asarray(spec["ms_per_flop"] * flops + spec["ms_per_byte"] * bytes_moved + spec["overhead"])
    return np.asarray(spec["slope"] * flops + spec["intercept"])


def validate_baseline(spec: Any) -> None:
    """Check an untrusted baseline model; raise ``ValueError`` with a one-line message."""
    if not isinstance(spec, dict) or spec.get("kind") not in ("roofline", "flops_linear"):
        raise ValueError("a baseline must be an object of kind 'roofline' or 'flops_linear'")
    keys = ("ms_per_flop", "ms_per_byte", "overhead") if spec["kind"] == "roofline" else ("slope", "intercept")
    for k in keys:
        v = spec.get(k)
        if not is_finite_number(v):
            raise ValueError(f"{spec['kind']}: {k!r} must be a finite number, not {v!r}")
        if spec["kind"] == "roofline" and v < 0:
            raise ValueError(f"roofline: {k!r} must not be negative")
