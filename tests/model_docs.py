"""Test helper: model documents written by hand (one model per layer type and target)."""

from __future__ import annotations

from typing import Any

from neuralpower.layers import FEATURES
from neuralpower.models.format import SCHEMA, SCHEMA_VERSION


def layer_entry(runtime: dict[str, Any], power: dict[str, Any], ranges: dict[str, list[float]] | None = None
                ) -> dict[str, Any]:
    """A layer type's entry: ``runtime`` and ``power`` model specs, each its target's only model."""
    return {
        "rows": 100,
        "ranges": ranges or {},
        "runtime_ms": {"default": "m", "fallback": None, "metrics": {}, "models": {"m": runtime}},
        "power_w": {"default": "m", "fallback": None, "metrics": {}, "models": {"m": power}},
    }


def model_doc(layer_types: dict[str, Any], **extra: Any) -> dict[str, Any]:
    """A model document (fp32, gpu and executor "test") holding ``layer_types``."""
    return {
        "schema": SCHEMA, "schema_version": SCHEMA_VERSION, "created": "2026-01-01T00:00:00+00:00", "gpu": "test",
        "executor": "test", "dtype": "fp32", "software": {}, "features": list(FEATURES), "layer_types": layer_types,
        **extra,
    }


def varying_model_doc(layer_types: list[str]) -> dict[str, Any]:
    """A model of every given layer type whose runtime and power vary with the layer (so that sums and
    bottlenecks are not ties of zeros): runtime = 1e-9 flops + 2e-9 bytes + 1e-4 ms, power = 20 + 2 log1p(bytes)
    W."""
    runtime = {"kind": "roofline", "ms_per_flop": 1e-9, "ms_per_byte": 2e-9, "overhead": 1e-4}
    power = {
        "kind": "poly",
        "target": "plain",
        "degree": 1,
        "inputs": [{"feature": "bytes_moved", "transform": "log1p"}],
        "intercept": 20.0,
        "terms": [{"powers": [[0, 1]], "coef": 2.0}],
    }
    return model_doc({t: layer_entry(runtime, power) for t in layer_types})
