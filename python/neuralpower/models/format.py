"""The model file: JSON, never a pickle, validated whole on loading.

::

    {"schema": "neuralpower-model", "schema_version": 1,
     "created": "2026-11-23T12:00:00+00:00", "gpu": "...", "executor": "...", "dtype": "fp32",
     "software": {"neuralpower": "...", "scikit-learn": "...", ...},
     "sources": [{"path": "...", "rows": 1234}],
     "features": ["batch", "in_channels", ...],          # the feature names models refer to
     "layer_types": {
        "conv2d": {
           "rows": 1234,
           "ranges": {"batch": [1, 256], ...},            # seen in training: outside is extrapolation
           "runtime_ms": {"default": "poly", "fallback": null,
                          "models": {"poly": {...}, "tree": {...}, "roofline": {...}, "flops_linear": {...}},
                          "metrics": {"poly": {"rmspe": 7.1, "mape": 5.2, "r2": 0.99, "terms": 41, ...}, ...},
                          "target_modes": {"plain": 31.0, "relative": 8.2, "log": 7.4},   # poly's, on validation
                          "tree_settings": {"shallow": 9.1, "deep": 8.4},                 # the tree's
                          "boosted_settings": {"log": 3.1, "hist_large": 2.6},          # boosting's
                          "interval": {"coverage": 0.9, "lo": 0.8, "hi": 1.3, ...,    # optional
                                       "split": {"feature": "causal", "value": 0.5,   # optional: by group
                                                 "yes": {"lo": 0.9, "hi": 1.1}, "no": {...}}},
                          "drift": {"rise": 0.5, ...},    # optional: the errors drift with the row order
                          "source": {"how": "carried", "text": "..."},  # optional: where the numbers come from
                          "launch_ms": 0.01,                  # optional: the shortest runtime measured
                          "scale": 1.4, "scale_from": 0.01,   # optional: the part above scale_from x scale,
                          "bounds": [80.0, 700.0],            # kept within
                          "stream": {"rows": 16384, "channels": 4096}},  # optional (runtime)
           "power_w": {...},
           "floor": {"ms": 0.015, "power_w": 128.0},    # optional: a launch floor
           "energy_interval": {"coverage": 0.9, "lo": 0.9, "hi": 1.2, ...},  # optional: energy's own
           "layout": "rows"}}}                            # optional: how its rows are read (default native)

A target's ``source`` tells a prediction measured on the model's GPU from one carried over from another GPU,
dtype or layer type: ``how`` is ``measured`` or ``carried`` and ``text`` says from what, in a line. Without one,
the target was fit on the model's own measurements (``measured`` on its ``gpu``). A target's prediction (whichever
of its models gives it) has its part above ``scale_from`` (default 0: all of it; a launch overhead that does not
scale) multiplied by ``scale`` (default 1: a model carried over from another GPU, scaled by what tells the two
apart) and is kept within ``bounds`` (default [0, null]; null: no upper bound), as power is kept
between a GPU's idle and its limit. A target's ``interval`` may hold groups (``split``, at most
:data:`MAX_INTERVAL_DEPTH` levels): a layer whose ``feature`` is at most ``value`` takes the ``yes`` side's factors,
else the ``no`` side's, down to a group's ``lo`` and ``hi`` (the top-level ``lo`` and ``hi`` are then the whole
type's, for reading). A layer type's ``energy_interval`` is energy's own prediction interval, calibrated on
configurations whose runtime and power were both measured (runtime's and power's errors partly cancel in their
product); it applies where both targets' intervals do, and without one a layer's energy bounds are the products of
its runtime and power bounds. A layer type's ``floor`` is a launch floor: a layer launched on its own (as
PyTorch eager launches each) takes at least ``ms``; one whose prediction is shorter runs for ``ms``, drawing its
predicted power for its predicted runtime and ``power_w`` (the GPU waiting for the next launch) for the rest.
A runtime's ``stream`` (a memory-bound type's largest tensor its fit saw, as rows x channels; either may be absent)
brings a larger layer back within it: more channels are read as more rows of ``channels`` (the same elements; for
types whose channels are no reduction axis), more rows as ``rows`` rows with the runtime times the ratio (the
bandwidth reached at the largest size measured), where a tree's prediction would stay flat. A layer type's
``layout`` ``rows`` says it was fit on operator tables that hold tensors as rows x features (NeuSight's ``[B, H]``):
an element-wise layer's height and width are read as more batch (its rows), a matmul's heads as more batch, the same
computation in the layout the fit saw (``native``, the default: as given); a broadcast add or mul (one operand per
channel or a scalar) as the full one that moves as many bytes (fewer rows).

A model may instead be a **blend** of other models (``"blend": [{"weight": 0.7, "model": {...}}, ...]``, 1 to 16
members, each a whole model document of the same dtype, none a blend itself, each weight in (0, 1]): each layer is
then predicted by every member that covers its type, its runtime and its power the geometric means of theirs
weighted by ``weight`` (renormalised over those members), extrapolated where any member extrapolates, with no
intervals. Its own ``layer_types`` (exactly the types its members cover) then say what it covers and where its
numbers come from (``source``), and are not evaluated. A GPU without a bundled model
gets such a blend of the bundled models of other GPUs, each carried through the datasheets
(:mod:`neuralpower.models.carry`).

Predictions are clipped at zero. Units: runtime in milliseconds, power in watts.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping, Sequence
from typing import Any

from ..errors import InputError
from ..layers import DTYPES, FEATURES, LAYER_TYPES
from ._values import is_finite_number
from .baselines import validate_baseline
from .boosted import validate_boosted
from .poly import validate_poly
from .tree import validate_tree

LAYOUTS = ("native", "rows")

__all__ = [
    "KINDS",
    "LAYOUTS",
    "SCHEMA",
    "SCHEMA_VERSION",
    "SOURCE_HOW",
    "TARGET_UNITS",
    "adjustment",
    "interval_factors",
    "read_model_file",
    "validate_model",
    "validate_source",
    "validate_spec",
    "write_model_file",
]

SCHEMA = "neuralpower-model"
SCHEMA_VERSION = 1
TARGET_UNITS = {"runtime_ms": "ms", "power_w": "W"}
KINDS = ("poly", "tree", "boosted", "roofline", "flops_linear", "constant")
MAX_BYTES = 256 << 20


def validate_spec(spec: Any, feature_names: Sequence[str]) -> None:
    """Check one model of a layer type and target; ``ValueError`` with a one-line message."""
    kind = spec.get("kind") if isinstance(spec, dict) else None
    if kind == "poly":
        validate_poly(spec, feature_names)
    elif kind == "tree":
        validate_tree(spec, feature_names)
    elif kind == "boosted":
        validate_boosted(spec, feature_names)
    elif kind in ("roofline", "flops_linear"):
        validate_baseline(spec)
    elif kind == "constant":
        v = spec.get("value")
        if not is_finite_number(v) or v < 0:
            raise ValueError("constant: 'value' must be a non-negative finite number")
    else:
        raise ValueError(f"'kind' must be one of {', '.join(KINDS)}")


def _expect(cond: bool, where: str, message: str) -> None:
    if not cond:
        raise ValueError(f"{where}: {message}")


def validate_model(doc: Any) -> None:
    """Check a whole model document; ``ValueError`` naming the JSON path of the first problem."""
    _expect(isinstance(doc, dict), "the file", "must hold a JSON object")
    _expect(doc.get("schema") == SCHEMA, "schema", f"must be {SCHEMA!r}: not a neuralpower model file")
    version = doc.get("schema_version")
    _expect(isinstance(version, int) and not isinstance(version, bool), "schema_version", "must be an integer")
    if version > SCHEMA_VERSION:
        raise ValueError(
            f"schema_version {version} is newer than this neuralpower reads ({SCHEMA_VERSION}): upgrade neuralpower"
        )
    _expect(version >= 1, "schema_version", f"{version} is not a valid version")
    for key in ("gpu", "executor", "dtype", "created"):
        _expect(isinstance(doc.get(key), str), key, "must be a string")
    _expect(doc["dtype"] in DTYPES, "dtype", f"must be one of {', '.join(DTYPES)}")
    _expect(isinstance(doc.get("software"), dict), "software", "must be an object")
    features = doc.get("features")
    _expect(isinstance(features, list) and all(isinstance(f, str) for f in features), "features", "must list names")
    unknown = [f for f in features if f not in FEATURES]
    _expect(not unknown, "features", f"unknown feature {unknown[:1]} (this neuralpower knows {len(FEATURES)})")
    if "blend" in doc:
        _validate_blend(doc)
    types = doc.get("layer_types")
    _expect(isinstance(types, dict) and len(types) > 0, "layer_types", "must be a non-empty object")
    for t, entry in types.items():
        where = f"layer_types.{t}"
        _expect(t in LAYER_TYPES, where, "unknown layer type")
        _expect(isinstance(entry, dict), where, "must be an object")
        ranges = entry.get("ranges")
        _expect(isinstance(ranges, dict), f"{where}.ranges", "must be an object")
        for name, r in ranges.items():
            _expect(
                name in FEATURES
                and isinstance(r, list)
                and len(r) == 2
                and all(is_finite_number(v) for v in r),
                f"{where}.ranges.{name}",
                "must be a known feature's [min, max]",
            )
        _expect(entry.get("layout", "native") in LAYOUTS, f"{where}.layout", f"must be one of {', '.join(LAYOUTS)}")
        if entry.get("floor") is not None:
            fl = entry["floor"]
            _expect(isinstance(fl, dict) and all(is_finite_number(fl.get(k)) and fl[k] >= 0 for k in ("ms", "power_w")),
                    f"{where}.floor", "must be {\"ms\": ..., \"power_w\": ...}, non-negative numbers")
        if entry.get("energy_interval") is not None:
            validate_interval(entry["energy_interval"], f"{where}.energy_interval", features)
        for target in TARGET_UNITS:
            tw = f"{where}.{target}"
            block = entry.get(target)
            _expect(isinstance(block, dict), tw, "must be an object")
            models = block.get("models")
            _expect(isinstance(models, dict) and len(models) > 0, f"{tw}.models", "must be a non-empty object")
            default = block.get("default")
            _expect(isinstance(default, str) and default in models, f"{tw}.default", "must name one of its models")
            _expect(
                block.get("fallback") is None or isinstance(block.get("fallback"), str),
                f"{tw}.fallback",
                "must be null or a string",
            )
            for name, spec in models.items():
                try:
                    validate_spec(spec, features)
                except ValueError as e:
                    raise ValueError(f"{tw}.models.{name}: {e}") from None
            _expect(isinstance(block.get("metrics", {}), dict), f"{tw}.metrics", "must be an object")
            if block.get("interval") is not None:
                validate_interval(block["interval"], f"{tw}.interval", features)
            if block.get("source") is not None:
                validate_source(block["source"], f"{tw}.source")
            if "scale" in block:
                _expect(is_finite_number(block["scale"]) and block["scale"] > 0, f"{tw}.scale",
                        "must be a positive number")
            if "launch_ms" in block:
                _expect(is_finite_number(block["launch_ms"]) and block["launch_ms"] >= 0, f"{tw}.launch_ms",
                        "must be a non-negative number")
            if "scale_from" in block:
                _expect(is_finite_number(block["scale_from"]) and block["scale_from"] >= 0, f"{tw}.scale_from",
                        "must be a non-negative number")
            if "stream" in block:
                st = block["stream"]
                _expect(target == "runtime_ms" and isinstance(st, dict) and set(st) <= {"rows", "channels"}
                        and all(is_finite_number(v) and v >= 0 for v in st.values()), f"{tw}.stream",
                        "must be {\"rows\": ..., \"channels\": ...}, non-negative numbers, on runtime_ms only")
            if "bounds" in block:
                b = block["bounds"]
                _expect(isinstance(b, list) and len(b) == 2 and is_finite_number(b[0]) and b[0] >= 0
                        and (b[1] is None or (is_finite_number(b[1]) and b[1] >= b[0])), f"{tw}.bounds",
                        "must be [min, max] with 0 <= min <= max (max null: none)")


#: The most members a blend may have (a GPU's blend has one per other GPU's model of its dtype).
MAX_BLEND_MEMBERS = 16


def _validate_blend(doc: dict[str, Any]) -> None:
    blend = doc["blend"]
    _expect(isinstance(blend, list) and 0 < len(blend) <= MAX_BLEND_MEMBERS, "blend",
            f"must be a list of 1 to {MAX_BLEND_MEMBERS} {{\"weight\", \"model\"}}")
    covered: set[str] = set()
    for k, member in enumerate(blend):
        where = f"blend[{k}]"
        _expect(isinstance(member, dict) and set(member) == {"weight", "model"}, where,
                "must be {\"weight\": ..., \"model\": {...}}")
        _expect(is_finite_number(member["weight"]) and 0 < member["weight"] <= 1, f"{where}.weight",
                "must be a number in (0, 1] (the nearest source weighs 1)")
        model = member["model"]
        _expect(isinstance(model, dict) and "blend" not in model, f"{where}.model",
                "must be a model document, not a blend")
        try:
            validate_model(model)
        except ValueError as e:
            raise ValueError(f"{where}.model.{e}") from None
        _expect(model["dtype"] == doc["dtype"], f"{where}.model.dtype", f"must be the blend's ({doc['dtype']})")
        covered |= set(model["layer_types"])
    types = doc.get("layer_types")
    _expect(isinstance(types, dict) and set(types) == covered, "layer_types",
            "a blend's must be the layer types its members cover, no more and no fewer")


SOURCE_HOW = ("measured", "carried")


def validate_source(source: Any, where: str) -> None:
    """Where a target's numbers come from: ``how`` (measured or carried) and a one-line ``text``."""
    _expect(isinstance(source, dict), where, "must be an object")
    _expect(source.get("how") in SOURCE_HOW, f"{where}.how", f"must be one of {', '.join(SOURCE_HOW)}")
    text = source.get("text")
    _expect(isinstance(text, str) and 0 < len(text) <= 1000 and "\n" not in text, f"{where}.text",
            "must be one line of text")


def adjustment(block: Mapping[str, Any]) -> tuple[float, float, float, float]:
    """A validated target block's (scale, min, max, scale_from): its prediction's part above scale_from times
    scale, kept within [min, max]."""
    lo, hi = block.get("bounds", [0.0, None])
    return (float(block.get("scale", 1.0)), float(lo), float("inf") if hi is None else float(hi),
            float(block.get("scale_from", 0.0)))


#: The most levels of an interval's groups (``split``) a model file may hold.
MAX_INTERVAL_DEPTH = 6


def validate_interval(interval: Any, where: str, features: Sequence[str] = FEATURES) -> None:
    """A prediction interval: measured / predicted fell in [lo, hi] for ``coverage`` of held-out rows; with a
    ``split``, by group (see :func:`interval_factors`), each of its features one of ``features``."""
    _expect(isinstance(interval, dict), where, "must be an object")
    _expect(is_finite_number(interval.get("coverage")), f"{where}.coverage", "must be a finite number")
    _expect(0 < interval["coverage"] < 1, f"{where}.coverage", "must be between 0 and 1")
    _validate_factors(interval, where)
    if interval.get("split") is not None:
        _validate_group(interval["split"], f"{where}.split", features, MAX_INTERVAL_DEPTH)


def _validate_factors(node: Mapping[str, Any], where: str) -> None:
    for key in ("lo", "hi"):
        _expect(is_finite_number(node.get(key)), f"{where}.{key}", "must be a finite number")
    _expect(0 <= node["lo"] <= 1, f"{where}.lo", "must be from 0 to 1 (a factor on the prediction)")
    _expect(1 <= node["hi"] <= 1e6, f"{where}.hi", "must be from 1 to 1e6 (a factor on the prediction)")


def _validate_group(node: Any, where: str, features: Sequence[str], depth: int) -> None:
    _expect(isinstance(node, dict), where, "must be an object")
    if "feature" not in node:
        _validate_factors(node, where)
        return
    _expect(depth > 0, where, f"must be at most {MAX_INTERVAL_DEPTH} levels deep")
    _expect(isinstance(node["feature"], str) and node["feature"] in features, f"{where}.feature",
            "must be a known feature's name")
    _expect(is_finite_number(node.get("value")), f"{where}.value", "must be a finite number")
    for side in ("yes", "no"):
        _validate_group(node.get(side), f"{where}.{side}", features, depth - 1)


def interval_factors(interval: Mapping[str, Any], X: Any, feature_names: Sequence[str]) -> tuple[Any, Any]:
    """The NumPy reference of the compiled evaluator's interval groups: each row's ``lo`` and ``hi`` factors, the
    interval's own or, with a ``split``, its group's (a row goes ``yes`` where its feature is at most ``value``).
    ``X`` holds the rows' features as the models see them (a rows-layout type's laid out)."""
    import numpy as np

    X = np.asarray(X, dtype=np.float64)
    lo, hi = np.full(len(X), float(interval["lo"])), np.full(len(X), float(interval["hi"]))

    def walk(node: Mapping[str, Any], at: Any) -> None:
        if "feature" not in node:
            lo[at], hi[at] = node["lo"], node["hi"]
            return
        yes = X[at, list(feature_names).index(node["feature"])] <= node["value"]
        walk(node["yes"], at[yes])
        walk(node["no"], at[~yes])

    if interval.get("split") is not None:
        walk(interval["split"], np.arange(len(X)))
    return lo, hi


def read_model_file(path: str | os.PathLike[str], *, digest: str | None = None) -> dict[str, Any]:
    """Load and validate a model file; with ``digest`` (a SHA-256, hex), a file whose bytes have that digest is not
    validated again (a bundled model, validated as it was written: ``SHA256SUMS`` beside the bundled models holds
    their digests; any other change to one is validated in full).

    Raises
    ------
    InputError
        One line naming the file and what is wrong (not JSON, not a model, a newer schema, a bad value).
    """
    spath = str(path)
    try:
        if os.path.getsize(spath) > MAX_BYTES:
            raise InputError(f"larger than {MAX_BYTES >> 20} MiB: not a model file", path=spath)
        with open(spath, "rb") as f:
            raw = f.read()
    except OSError as e:
        raise InputError(f"cannot read the model file: {e.strerror or e}", path=spath) from None
    try:
        doc = json.loads(raw.decode("utf-8"), parse_constant=_reject_constant)
    except (UnicodeDecodeError, ValueError, RecursionError) as e:
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise InputError(f"not a valid JSON model file: {first}", path=spath) from None
    if digest is not None and isinstance(doc, dict) and hashlib.sha256(raw).hexdigest() == digest:
        return doc
    try:
        validate_model(doc)
    except ValueError as e:
        raise InputError(f"not a valid model file: {e}", path=spath) from None
    return dict(doc)


def _reject_constant(name: str) -> None:
    raise ValueError(f"{name} is not allowed in a model file")


def write_model_file(doc: Mapping[str, Any], path: str | os.PathLike[str], *, compact: bool = False) -> None:
    """Validate then write a model document (atomically: a crash leaves the old file, if any); ``compact`` writes
    it without indentation (a bundled model of thousands of trees is a third the size)."""
    from .._output import atomic_path

    validate_model(doc)
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as f:
        if compact:
            json.dump(doc, f, separators=(",", ":"), allow_nan=False)
        else:
            json.dump(doc, f, indent=1, allow_nan=False)
        f.write("\n")
