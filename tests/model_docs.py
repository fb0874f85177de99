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
