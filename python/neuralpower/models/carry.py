"""A model of a GPU no bundled model was measured on: the bundled models of the dtype measured on other GPUs, each
carried through the two GPUs' datasheets, blended by how near each GPU is to the target.

A GPU's distance to the target is the sum of the absolute logarithms of the ratios of their peak throughputs for the
dtype and of their memory bandwidths, half that of their power limits (a GPU held to 70 W sustains less of its
peak than one given 250 W), and one more for another architecture. Each source's weight is
``exp(-(distance - nearest's distance) / BLEND_TAU)``; sources under ``MIN_WEIGHT`` are left out. A layer's runtime
and power are the weighted geometric means of the carried models' (``blend`` in the model format,
:mod:`neuralpower.models.format`). ``BLEND_TAU``, the power limit's weight and the architecture's were chosen
leave-one-GPU-out on NeuSight's five GPUs' whole networks (``benchmarks/cross_gpu.py``, which chooses them again for
each GPU it holds out from the other four only, and prints both). Each carried model's runtime is
multiplied by the ratio of peak throughputs where its work is a GEMM or attention (``conv2d``, ``conv_transpose2d``,
``linear``, ``matmul``, ``attention``), by the ratio of memory bandwidths otherwise (above the type's launch
overhead as measured, ``launch_ms``: the host launches as fast for either GPU); its power by the ratio of the
power limits, kept between the source's idle power so scaled and the target's limit. A launch floor stays (the host
launches kernels as fast on either GPU), its waiting power scaled as power. Intervals are dropped: nothing measured
on the target calibrates them. Every target's ``source`` says all of this, so a prediction never passes for a
measurement.

This is a datasheet carry, not a model of the target's kernels: small layers do not speed up with a GPU's peak,
kernels switch tiles and algorithms between GPUs, and a GPU's power at a layer is not its source's scaled by their
limits. Its accuracy, measured by carrying each of NeuSight's five GPUs' fp32 models to the other four, is in the
README (``benchmarks/cross_gpu.py``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

from ..errors import InputError
from ..gpus import GPU, find_gpu, peak_tflops

__all__ = ["BLEND_TAU", "COMPUTE_TYPES", "MIN_WEIGHT", "blend_model", "carry_dtype", "carry_model", "nearest_source",
           "source_weights"]

COMPUTE_TYPES = ("conv2d", "conv_transpose2d", "linear", "matmul", "attention")
#: The blend's weights: exp(-(distance - the nearest source's distance) / BLEND_TAU) (see the module's notes).
BLEND_TAU = 0.5
#: The weight of the power limits' ratio and of another architecture in a GPU's distance.
POWER_LIMIT_WEIGHT = 0.5
ARCHITECTURE_WEIGHT = 1.0
#: Sources weighing less than this (the nearest weighs 1) are left out of a blend.
MIN_WEIGHT = 0.02


def _source_gpu(doc: Mapping[str, Any]) -> GPU | None:
    try:
        return find_gpu(str(doc["gpu"]))
    except InputError:
        return None


def nearest_source(target: GPU, dtype: str, docs: Mapping[str, Mapping[str, Any]],
                   exclude: tuple[str, ...] = ()) -> tuple[str, GPU, float]:
    """The bundled model (name, GPU, distance) of ``dtype`` nearest ``target`` by its datasheet (see the module's
    notes).

    Raises
    ------
    InputError
        ``target`` has no unit for ``dtype``, or no model of another GPU holds ``dtype``.
    """
    return _sources(target, dtype, docs, exclude)[0]


def _sources(target: GPU, dtype: str, docs: Mapping[str, Mapping[str, Any]], exclude: tuple[str, ...] = (),
             power_limit_weight: float = POWER_LIMIT_WEIGHT, architecture_weight: float = ARCHITECTURE_WEIGHT
             ) -> list[tuple[str, GPU, float]]:
    """Every model of ``dtype`` of another GPU, (name, GPU, distance), nearest first (by name on a tie)."""
    peak = peak_tflops(target, dtype)
    if peak is None:
        raise InputError(f"{target.name} has no {dtype} tensor cores: predict it in another dtype (--dtype)")
    found: list[tuple[float, str, GPU]] = []
    for name, doc in docs.items():
        gpu = _source_gpu(doc)
        if doc["dtype"] != dtype or gpu is None or gpu.key == target.key or gpu.key in exclude:
            continue
        source_peak = peak_tflops(gpu, dtype)
        if source_peak is None:
            continue
        distance = (abs(math.log(source_peak / peak))
                    + abs(math.log(gpu.memory_bandwidth_gb_s / target.memory_bandwidth_gb_s))
                    + power_limit_weight * abs(math.log(gpu.power_limit_w / target.power_limit_w))
                    + architecture_weight * (gpu.architecture != target.architecture))
        found.append((distance, name, gpu))
    if not found:
        raise InputError(f"no bundled model of another GPU holds {dtype} to carry to {target.name} from")
    return [(name, gpu, distance) for distance, name, gpu in sorted(found, key=lambda f: (f[0], f[1]))]


def source_weights(target: GPU, dtype: str, docs: Mapping[str, Mapping[str, Any]], exclude: tuple[str, ...] = (),
                   tau: float = BLEND_TAU, power_limit_weight: float = POWER_LIMIT_WEIGHT,
                   architecture_weight: float = ARCHITECTURE_WEIGHT) -> list[tuple[str, GPU, float]]:
    """The models a blend for ``target`` is made of, (name, GPU, weight), the nearest first (weight 1); those under
    :data:`MIN_WEIGHT` left out."""
    found = _sources(target, dtype, docs, exclude, power_limit_weight, architecture_weight)
    nearest = found[0][2]
    weighed = [(name, gpu, math.exp(-(d - nearest) / tau)) for name, gpu, d in found]
    return [w for w in weighed if w[2] >= MIN_WEIGHT]


def carry_dtype(target: GPU, docs: Mapping[str, Mapping[str, Any]], dtypes: tuple[str, ...]) -> str:
    """The dtype of ``dtypes`` whose nearest source is nearest ``target`` (the first of ``dtypes`` on a tie): what a
    carried model of a GPU is made for when no dtype is asked for."""
    found: list[tuple[float, int, str]] = []
    for k, dtype in enumerate(dtypes):
        try:
            found.append((nearest_source(target, dtype, docs)[2], k, dtype))
        except InputError:
            continue
    if not found:
        raise InputError(f"no bundled model holds a dtype {target.name} has ({', '.join(dtypes)}) to carry from")
    return min(found)[2]


def carry_model(target: GPU, dtype: str, docs: Mapping[str, Mapping[str, Any]],
                exclude: tuple[str, ...] = (),
                load: Callable[[str], Mapping[str, Any]] | None = None) -> tuple[str, dict[str, Any]]:
    """A model of ``target`` for ``dtype`` carried from the nearest of ``docs`` (bundled model documents by name;
    ``exclude``: GPU keys not to carry from): its name and document. With ``load``, ``docs`` need only hold each
    model's ``gpu`` and ``dtype``: ``load(name)`` gives the chosen one's whole document."""
    name, gpu, _ = nearest_source(target, dtype, docs, exclude)
    return _carry(target, dtype, name, gpu, docs[name] if load is None else load(name))


def _carry(target: GPU, dtype: str, name: str, gpu: GPU, source: Mapping[str, Any]) -> tuple[str, dict[str, Any]]:
    """Model ``name`` (document ``source``, measured on ``gpu``) carried to ``target`` through the datasheets."""
    source_peak, peak = peak_tflops(gpu, dtype), peak_tflops(target, dtype)
    assert source_peak is not None and peak is not None
    compute = source_peak / peak
    memory = gpu.memory_bandwidth_gb_s / target.memory_bandwidth_gb_s
    power = target.power_limit_w / gpu.power_limit_w
    why = {
        True: f"{dtype} peak {source_peak:g} / {peak:g} TFLOP/s",
        False: f"memory bandwidth {gpu.memory_bandwidth_gb_s:g} / {target.memory_bandwidth_gb_s:g} GB/s",
    }
    doc = _copy_entries(source)
    for t, entry in doc["layer_types"].items():
        ratio = compute if t in COMPUTE_TYPES else memory
        runtime = entry["runtime_ms"]
        runtime["scale"] = float(runtime.get("scale", 1.0)) * ratio
        if entry.get("floor") is None and "launch_ms" in runtime:  # a launch overhead in the fit does not scale
            runtime["scale_from"] = max(float(runtime.get("scale_from", 0.0)), float(runtime["launch_ms"]))
        there = runtime.get("source", {}).get("how", "measured")
        runtime["source"] = {"how": "carried", "text": (
            f"carried from {name} ({gpu.name}; {there} there) through the datasheets: runtime x {ratio:.3g} "
            f"({why[t in COMPUTE_TYPES]})")}
        runtime.pop("interval", None)
        block = entry["power_w"]
        block["scale"] = float(block.get("scale", 1.0)) * power
        lo, _ = block.get("bounds", [0.0, None])
        block["bounds"] = [float(lo) * power, float(target.power_limit_w)]
        there = block.get("source", {}).get("how", "measured")
        block["source"] = {"how": "carried", "text": (
            f"carried from {name} ({gpu.name}; {there} there) through the datasheets: power x {power:.3g} (power "
            f"limit {target.power_limit_w:g} / {gpu.power_limit_w:g} W)")}
        block.pop("interval", None)
        entry.pop("energy_interval", None)  # (calibrated on the other GPU's measurements)
        if entry.get("floor") is not None:
            entry["floor"] = {"ms": entry["floor"]["ms"], "power_w": entry["floor"]["power_w"] * power}
    doc["gpu"] = target.name
    doc["carried_from"] = name
    doc["description"] = (f"{target.name}, {dtype}: carried from {name} ({gpu.name}) through the two GPUs' "
                          "datasheets; nothing in it was measured on this GPU")
    return f"{target.key}-{dtype} (carried from {name})", doc


def _copy_entries(doc: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of a model document whose layer types' entries may be changed (see :func:`_copy_entry`)."""
    out = dict(doc)
    out["layer_types"] = {t: _copy_entry(entry) for t, entry in doc["layer_types"].items()}
    return out


def _copy_entry(entry: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of a layer type's entry whose targets and floor may be changed (their models, which a carry never
    changes, are shared: a deep copy of a large model takes longer than its carry)."""
    e = dict(entry)
    for key in ("runtime_ms", "power_w", "floor"):
        if isinstance(e.get(key), dict):
            e[key] = dict(e[key])
    return e


def blend_model(target: GPU, dtype: str, docs: Mapping[str, Mapping[str, Any]],
                exclude: tuple[str, ...] = (),
                load: Callable[[str], Mapping[str, Any]] | None = None,
                tau: float = BLEND_TAU) -> tuple[str, dict[str, Any]]:
    """A model of ``target`` for ``dtype``: the models of ``docs`` (bundled model documents by name; ``exclude``: GPU
    keys not to use; with ``load``, ``docs`` need only hold each model's ``gpu`` and ``dtype``) of other GPUs, each
    carried through the datasheets, blended by weight (see the module's notes): its name and document. With one
    source weighing enough, that source carried."""
    sources = source_weights(target, dtype, docs, exclude, tau)
    carried = [_carry(target, dtype, name, gpu, docs[name] if load is None else load(name)) for name, gpu, _ in sources]
    if len(carried) == 1:
        return carried[0]
    members = [(name, gpu, w, doc) for (name, gpu, w), (_, doc) in zip(sources, carried, strict=True)]
    doc = _copy_entries(members[0][3])
    for _, _, _, member in members[1:]:  # a type the nearest lacks: from the nearest that has it
        for t, entry in member["layer_types"].items():
            if t not in doc["layer_types"]:
                doc["layer_types"][t] = _copy_entry(entry)
    for t, entry in doc["layer_types"].items():
        covering = [(name, gpu, w, m["layer_types"][t]) for name, gpu, w, m in members if t in m["layer_types"]]
        total = sum(w for _, _, w, _ in covering)
        for target_name, what in (("runtime_ms", "each one's runtime scaled by the ratio of peaks or bandwidths, "
                                                 "times any scale it had: x its scale in all"),
                                  ("power_w", "each one's power scaled by the ratio of power limits, times any scale "
                                              "it had: x its scale in all")):
            parts = ", ".join(f"{name} ({gpu.name}) x {e[target_name]['scale']:.3g} weighing {w / total:.2f}"
                              for name, gpu, w, e in covering)
            entry[target_name]["source"] = {"how": "carried", "text": (
                f"carried from {parts} through the datasheets ({what}), their weighted geometric mean")}
    names = [name for name, _, _, _ in members]
    doc["blend"] = [{"weight": w, "model": m} for _, _, w, m in members]
    doc["carried_from"] = names[0]
    doc["description"] = (f"{target.name}, {dtype}: {len(names)} other GPUs' models ({', '.join(names)}) carried "
                          "through the datasheets and blended by how near each GPU is; nothing in it was measured on "
                          "this GPU")
    return f"{target.key}-{dtype} (carried from {' + '.join(names)})", doc
