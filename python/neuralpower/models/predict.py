"""Prediction from a model document, in NumPy: the reference the C++ evaluator is tested against.

Network runtime is the sum of layer runtimes; network energy the sum of layer power x layer runtime;
network power is energy / runtime. Runtime in ms, power in W, energy in mJ (W x ms).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from .. import _evaluator as _ev
from ..errors import InputError
from ..layers import FEATURES, FIELD_INDEX, LAYER_TYPES, Architecture
from .baselines import predict_baseline
from .boosted import predict_boosted
from .format import adjustment
from .poly import predict_poly
from .tree import predict_tree

__all__ = ["NetworkPrediction", "epr", "predict_layers", "predict_network", "predict_spec", "rows_layout"]

# A layer type that moves nothing and computes nothing costs nothing, model or not.
FREE_TYPES = ("flatten",)


def predict_spec(
    spec: Mapping[str, Any], X: npt.NDArray[np.float64], feature_names: Sequence[str]
) -> npt.NDArray[np.float64]:
    """Evaluate one (validated) model on features ``X``; predictions are clipped at zero.

    A model may overflow (a hostile or extrapolating one): a prediction that is not finite is NaN, never a
    number (the compiled evaluator does the same, and :class:`neuralpower.Model` refuses it).
    """
    kind = spec["kind"]
    with np.errstate(over="ignore", invalid="ignore"):
        if kind == "poly":
            out = predict_poly(spec, X, feature_names)
        elif kind == "tree":
            out = predict_tree(spec, X, feature_names)
        elif kind == "boosted":
            out = predict_boosted(spec, X, feature_names)
        elif kind == "constant":
            out = np.full(X.shape[0], float(spec["value"]))
        else:
            out = predict_baseline(spec, X, feature_names)
    out = np.asarray(out, dtype=np.float64)
    return np.where(np.isfinite(out), np.maximum(out, 0.0), np.nan)


def predict_layers(
    doc: Mapping[str, Any], types: npt.NDArray[np.int64], features: npt.NDArray[np.float64], method: str | None = None
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64], npt.NDArray[np.bool_]]:
    """Per-layer runtime (ms), power (W) and extrapolation flags for layers given by type code and features.

    ``method`` picks a model (``poly``, ``tree``, ``roofline``, ``flops_linear``) where a layer type has it;
    by default each type's default model.
    """
    n = len(types)
    runtime, power = np.zeros(n), np.zeros(n)
    extrapolated = np.zeros(n, dtype=bool)
    names = doc["features"]
    # the model's feature order may differ from this neuralpower's
    columns = [FEATURES.index(f) for f in names]
    X = features[:, columns] if list(names) != list(FEATURES) else features
    for code in np.unique(types):
        t = LAYER_TYPES[int(code)]
        rows = types == code
        entry = doc["layer_types"].get(t)
        if entry is None:
            if t in FREE_TYPES:
                continue
            covered = ", ".join(doc["layer_types"])
            raise InputError(f"the model has no {t} model (it covers {covered})", column="type")
        for target, out in (("runtime_ms", runtime), ("power_w", power)):
            block = entry[target]
            spec = block["models"].get(method or block["default"], block["models"][block["default"]])
            scale, lo, hi, start = adjustment(block)
            with np.errstate(over="ignore", invalid="ignore"):
                if target == "runtime_ms" and block.get("stream"):
                    within, k = _stream_within(block["stream"], features[rows])
                    v = k * np.maximum(predict_spec(spec, within[:, columns], names), 0)
                else:
                    v = predict_spec(spec, X[rows], names)
                out[rows] = np.clip(np.where(v > start, start + (v - start) * scale, v), lo, hi)
        floor = entry.get("floor")
        if floor is not None:  # launch-bound layers: the kernel, then the wait for the next launch
            r, p = runtime[rows], power[rows]
            short = r < floor["ms"]
            with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
                power[rows] = np.where(short, (p * r + floor["power_w"] * (floor["ms"] - r)) / floor["ms"], p)
            runtime[rows] = np.where(short, floor["ms"], r)
        for f, (lo, hi) in entry["ranges"].items():
            v = X[rows, names.index(f)]
            extrapolated[rows] |= (v < lo) | (v > hi)
    return runtime, power, extrapolated


@dataclass
class NetworkPrediction:
    """A network's predicted runtime, power and energy, with the per-layer breakdown."""

    name: str
    runtime_ms: float
    power_w: float
    energy_mj: float
    layers: list[str]
    types: list[str]
    layer_runtime_ms: npt.NDArray[np.float64]
    layer_power_w: npt.NDArray[np.float64]
    layer_energy_mj: npt.NDArray[np.float64]
    extrapolated: npt.NDArray[np.bool_]


# The features that count a layer's size (rows, elements, FLOPs, bytes): k times as many rows, k times each.
_EXTENSIVE = [FEATURES.index(n) for n in ("rows", "batch", "flops", "bytes_moved", "elements_in", "elements_out")]


def _stream_within(stream: Mapping[str, float], f: npt.NDArray[np.float64]) -> tuple[npt.NDArray[np.float64],
                                                                               npt.NDArray[np.float64]]:
    """Features of streaming layers beyond the largest tensor their fit saw, brought within it, and the factor their
    runtime takes (see :mod:`neuralpower.models.format`)."""
    f = f.copy()
    col = {n: FEATURES.index(n) for n in ("in_channels", "rows", "batch")}
    hi_c = float(stream.get("channels", 0.0))
    if hi_c > 0:
        k = np.where(f[:, col["in_channels"]] > hi_c, f[:, col["in_channels"]] / hi_c, 1.0)
        f[:, col["in_channels"]] /= k
        f[:, col["rows"]] *= k
        f[:, col["batch"]] *= k
    hi_r = float(stream.get("rows", 0.0))
    k = np.where(f[:, col["rows"]] > hi_r, f[:, col["rows"]] / hi_r, 1.0) if hi_r > 0 else np.ones(len(f))
    f[:, _EXTENSIVE] /= k[:, None]
    return f, k


_JOIN_HW = ("add", "mul", "relu", "relu6", "sigmoid", "hardsigmoid", "silu", "hardswish", "gelu", "tanh", "concat")


def rows_layout(doc: Mapping[str, Any], rows: npt.NDArray[np.int64]) -> npt.NDArray[np.int64] | None:
    """``rows`` as the model's types of layout ``rows`` read them (see :mod:`neuralpower.models.format`): an
    element-wise layer's height and width joined to its batch (a broadcast add or mul as the full one, whose features
    :func:`predict_network` then weighs by the bytes the broadcast one moves), a matmul's heads; None when no type
    of the model has that layout."""
    rows_types = [t for t, e in doc["layer_types"].items() if e.get("layout") == "rows"]
    if not rows_types:
        return None
    out = rows.copy()
    col = {f: FIELD_INDEX[f] for f in ("batch", "in_h", "in_w", "heads", "broadcast")}
    for t in rows_types:
        pick = rows[:, 0] == LAYER_TYPES.index(t)
        if t in ("add", "mul"):
            out[pick, col["broadcast"]] = 0
        if t in _JOIN_HW:
            out[pick, col["batch"]] = rows[pick, col["batch"]] * rows[pick, col["in_h"]] * rows[pick, col["in_w"]]
            out[pick, col["in_h"]] = 1
            out[pick, col["in_w"]] = 1
        elif t == "matmul":
            out[pick, col["batch"]] = rows[pick, col["batch"]] * rows[pick, col["heads"]]
            out[pick, col["heads"]] = 1
    return out


def predict_network(doc: Mapping[str, Any], arch: Architecture, method: str | None = None) -> NetworkPrediction:
    """Predict one architecture layer by layer and sum up.

    Raises
    ------
    InputError
        The architecture's dtype is not the model's, or a layer type has no model.
    """
    if arch.dtype != doc["dtype"]:
        raise InputError(f"the model was fit for {doc['dtype']}, {arch.name} is {arch.dtype}", column="dtype")
    rows, features = arch.rows(), arch.features()
    if doc.get("blend"):
        runtime, power, extrapolated = _blend_layers(doc, rows, features, method)
    else:
        runtime, power, extrapolated = _layers(doc, rows, features, method)
    with np.errstate(over="ignore", invalid="ignore"):
        energy = runtime * power
        total_runtime = float(runtime.sum())
        total_energy = float(energy.sum())
    return NetworkPrediction(
        name=arch.name,
        runtime_ms=total_runtime,
        power_w=total_energy / total_runtime if total_runtime > 0 else 0.0,
        energy_mj=total_energy,
        layers=[layer.name for layer in arch],
        types=[layer.type for layer in arch],
        layer_runtime_ms=runtime,
        layer_power_w=power,
        layer_energy_mj=energy,
        extrapolated=extrapolated,
    )


def _blend_layers(doc: Mapping[str, Any], rows: npt.NDArray[np.int64], features: npt.NDArray[np.float64],
                  method: str | None) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64], npt.NDArray[np.bool_]]:
    """A blend's layers: the weighted geometric means of its members' predictions, over the members that cover each
    layer's type (see :mod:`neuralpower.models.format`)."""
    types = rows[:, 0]
    n = len(types)
    weight, log_runtime, log_power = np.zeros(n), np.zeros(n), np.zeros(n)
    extrapolated = np.zeros(n, dtype=bool)
    most = max(float(m["weight"]) for m in doc["blend"])  # only the weights' ratios count
    for member in doc["blend"]:
        model = member["model"]
        covers = np.isin(types, [LAYER_TYPES.index(t) for t in model["layer_types"]])
        if not covers.any():
            continue
        runtime, power, flags = _layers(model, rows[covers], features[covers], method)
        w = float(member["weight"]) / most
        with np.errstate(divide="ignore", invalid="ignore"):
            weight[covers] += w
            log_runtime[covers] += w * np.log(runtime)
            log_power[covers] += w * np.log(power)
        extrapolated[covers] |= flags
    missing = (weight == 0) & ~np.isin(types, [LAYER_TYPES.index(t) for t in FREE_TYPES])
    if missing.any():
        t = LAYER_TYPES[int(types[np.argmax(missing)])]
        raise InputError(f"the model has no {t} model (it covers {', '.join(doc['layer_types'])})", column="type")
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        runtime = np.where(weight > 0, np.exp(log_runtime / weight), 0.0)
        power = np.where(weight > 0, np.exp(log_power / weight), 0.0)
    return runtime, power, extrapolated


def _layers(doc: Mapping[str, Any], rows: npt.NDArray[np.int64], features: npt.NDArray[np.float64],
            method: str | None) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64], npt.NDArray[np.bool_]]:
    """One (not blended) model's per-layer runtime, power and extrapolation flags of layers given by their rows and
    features."""
    types = rows[:, 0]
    laid_out = rows_layout(doc, rows)
    if laid_out is not None:
        changed = (laid_out != rows).any(axis=1)
        if changed.any():
            moved = np.ascontiguousarray(laid_out[changed])
            features = features.copy()
            f = _ev.features(moved, _ev.info(moved))
            # a broadcast add or mul: the full one of as many bytes (see neuralpower.models.format)
            at = FEATURES.index("bytes_moved")
            f[:, _EXTENSIVE] *= (features[changed, at] / f[:, at])[:, None]
            features[changed] = f
    return predict_layers(doc, types, features, method)


def epr(error: float, energy_mj: float, alpha: float = 1.0) -> float:
    """NeuralPower's energy-precision ratio: ``error ** alpha * energy`` (lower is better).

    Parameters
    ----------
    error
        Top-1 error as a fraction (0.25 for 25 %).
    energy_mj
        Energy per inference in millijoules.
    alpha
        The weight of accuracy against energy.
    """
    if not 0 <= error <= 1:
        raise InputError(f"error {error!r} must be a fraction between 0 and 1")
    if energy_mj < 0 or alpha < 0:
        raise InputError("energy and alpha must not be negative")
    return float(error**alpha * energy_mj)
