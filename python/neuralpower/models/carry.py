"""A model of a GPU no bundled model was measured on: the nearest bundled model of the dtype, carried through the
two GPUs' datasheets.

The nearest is the one whose GPU's peak throughput for the dtype and memory bandwidth are closest to the target's
(the sum of the two ratios' absolute logarithms, one more for another architecture). Each layer type's runtime is
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

import copy
import math
from collections.abc import Callable, Mapping
from typing import Any

from ..errors import InputError
from ..gpus import GPU, find_gpu, peak_tflops

__all__ = ["COMPUTE_TYPES", "carry_dtype", "carry_model", "nearest_source"]

COMPUTE_TYPES = ("conv2d", "conv_transpose2d", "linear", "matmul", "attention")


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
    peak = peak_tflops(target, dtype)
    if peak is None:
        raise InputError(f"{target.name} has no {dtype} tensor cores: predict it in another dtype (--dtype)")
    best: tuple[float, str, GPU] | None = None
    for name, doc in docs.items():
        gpu = _source_gpu(doc)
        if doc["dtype"] != dtype or gpu is None or gpu.key == target.key or gpu.key in exclude:
            continue
        source_peak = peak_tflops(gpu, dtype)
        if source_peak is None:
            continue
        distance = (abs(math.log(source_peak / peak))
                    + abs(math.log(gpu.memory_bandwidth_gb_s / target.memory_bandwidth_gb_s))
                    + (gpu.architecture != target.architecture))
        if best is None or (distance, name) < (best[0], best[1]):
            best = (distance, name, gpu)
    if best is None:
        raise InputError(f"no bundled model of another GPU holds {dtype} to carry to {target.name} from")
    return best[1], best[2], best[0]


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
    source_peak, peak = peak_tflops(gpu, dtype), peak_tflops(target, dtype)
    assert source_peak is not None and peak is not None
    compute = source_peak / peak
    memory = gpu.memory_bandwidth_gb_s / target.memory_bandwidth_gb_s
    power = target.power_limit_w / gpu.power_limit_w
    why = {
        True: f"{dtype} peak {source_peak:g} / {peak:g} TFLOP/s",
        False: f"memory bandwidth {gpu.memory_bandwidth_gb_s:g} / {target.memory_bandwidth_gb_s:g} GB/s",
    }
    doc = copy.deepcopy(dict(docs[name] if load is None else load(name)))
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
        if entry.get("floor") is not None:
            entry["floor"] = {"ms": entry["floor"]["ms"], "power_w": entry["floor"]["power_w"] * power}
    doc["gpu"] = target.name
    doc["carried_from"] = name
    doc["description"] = (f"{target.name}, {dtype}: carried from {name} ({gpu.name}) through the two GPUs' "
                          "datasheets; nothing in it was measured on this GPU")
    return f"{target.key}-{dtype} (carried from {name})", doc
