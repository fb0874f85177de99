"""Synthetic measurement tables drawn from a known sparse ground truth, for tests and benchmarks.

These are NOT measurements of any GPU: they exist so that fitting can be checked against a truth that is
known exactly. Every table written here has ``executor = synthetic``.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from ..layers import FEATURES, LAYER_TYPES
from .data import TARGETS

__all__ = ["TRUTH", "synthetic_table"]

# The ground truth of each target: (kind, coefficient) pairs. ``batch*out_channels`` stands for the product
# of two configuration features; ``log1p(flops)`` for the log of a special term.
TRUTH: dict[str, dict[str, float]] = {
    "runtime_ms": {"1": 0.004, "flops": 1.5e-12, "bytes_moved": 4e-10, "batch*out_channels": 2e-6},
    "power_w": {"1": 70.0, "log1p(flops)": 7.0, "in_channels": 0.05},
}


def _truth(target: str, f: dict[str, np.ndarray]) -> np.ndarray:
    out = np.zeros_like(f["batch"], dtype=np.float64)
    for term, coef in TRUTH[target].items():
        if term == "1":
            out += coef
        elif term.startswith("log1p("):
            out += coef * np.log1p(f[term[6:-1]])
        else:
            prod = np.ones_like(out)
            for name in term.split("*"):
                prod *= f[name]
            out += coef * prod
    return out


def synthetic_table(n: int, *, noise: float = 0.03, power_fraction: float = 0.5, seed: int = 0) -> pa.Table:
    """A measurement table of ``n`` random conv2d layers with targets from :data:`TRUTH`.

    Parameters
    ----------
    n
        Rows.
    noise
        Relative standard deviation of the multiplicative noise on each target.
    power_fraction
        Share of rows that carry a power value (the rest leave ``power_w`` empty, as real sweeps do).
    seed
        Random seed.
    """
    from .. import _evaluator as _ev
    from ..layers import FIELD_INDEX, FIELDS, MISSING, prepare_rows

    rng = np.random.default_rng(seed)
    rows = np.full((n, len(FIELDS)), MISSING, dtype=np.int64)
    kernel = rng.choice([1, 3, 5, 7], n)
    cin = rng.integers(3, 257, n)
    depthwise = rng.random(n) < 0.15
    values = {
        "type": np.full(n, LAYER_TYPES.index("conv2d")),
        "batch": rng.choice([1, 2, 4, 8, 16, 32, 64], n),
        "in_channels": cin,
        "in_h": (size := rng.choice([7, 14, 28, 56, 112], n)),
        "in_w": size,
        "out_channels": np.where(depthwise, cin, rng.integers(3, 257, n)),
        "kernel_h": kernel,
        "kernel_w": kernel,
        "stride_h": (stride := rng.choice([1, 2], n)),
        "stride_w": stride,
        "padding_h": kernel // 2,
        "padding_w": kernel // 2,
        "groups": np.where(depthwise, cin, 1),
        "bias": rng.integers(0, 2, n),
    }
    for name, v in values.items():
        rows[:, FIELD_INDEX[name]] = v
    bad = prepare_rows(rows)
    assert bad is None, bad
    feats = np.asarray(_ev.features(rows, _ev.info(rows)))
    f = {name: feats[:, i] for i, name in enumerate(FEATURES)}
    data: dict[str, object] = {name: rows[:, FIELD_INDEX[name]] for name in ("batch", *list(values)[2:])}
    data = {"arch": [f"synthetic{i}" for i in range(n)], "type": ["conv2d"] * n, **data}
    for target in TARGETS:
        y = _truth(target, f) * (1 + noise * rng.standard_normal(n))
        if target == "power_w":
            y = np.where(rng.random(n) < power_fraction, y, np.nan)
        data[target] = pa.array(y, from_pandas=True)
    data["executor"] = ["synthetic"] * n
    data["gpu"] = ["none (synthetic ground truth)"] * n
    return pa.table(data)
