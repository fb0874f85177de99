"""Build the bundled GPU models from the measurements committed under ``data/``.

    python -m neuralpower.models.bundle [--data data] [--out python/neuralpower/data/models] [--only NAME ...]

Each bundled GPU model is one GPU and dtype (``h200-bf16``, ``h200-fp16``, ``h200-fp8``, ``h100-bf16``, ``h100-fp8``)
of layers launched one by one, as PyTorch eager launches them. Its layer types come from three kinds of measurement,
and every target says which (its ``source``: measured on the model's GPU, or carried over, and from what):

- **GEMMs and attention** (``linear``, ``attention``): NVIDIA aiconfigurator's kernel tables of that GPU and dtype
  (``data/aiconfigurator``), fitted with gradient-boosted trees (runtime; power where the table has it, the H200's).
  Those kernels ran back to back in CUDA graphs; launched alone they take at least a launch floor, measured on the
  H200 sweeps (the median runtime of the type's sweep rows the kernel model puts at under half their time), the
  GPU drawing its waiting power (the sweeps' power of layers that move under 100 kB) for the rest. The H100 tables
  hold no power: an H100's power is the H200's for the same kernel (the same GH100 chip and 700 W limit), carried
  over. An fp8 model's attention is the bf16 table's (the public tables run attention in bf16, with an fp8 KV
  cache where ``kv_dtype`` says so), carried over.
- **GEMM-shaped layers** (``conv2d`` as its implicit GEMM, ``matmul`` as its GEMMs): the GEMM kernels' model of the
  same GEMM sizes, with the launch floor; ``conv_transpose2d`` (a GEMM and a col2im scatter) its own sweep's fit.
- **The other layer types**: this project's own H200 sweeps (``data/h200/torch-fp16``, ``torch-fp32``; PyTorch
  eager), fitted per type with NeuralPower's polynomial, FastDeepIoT's tree and the baselines (the default chosen
  on validation rows). fp16 runs at the rate and moves the bytes of bf16, so an fp16 fit serves bf16 as
  carried over; memory-bound types pool fp16 and fp32 rows (bytes per element is a feature). On an H100, a
  memory-bound type's runtime is the H200's times the ratio of their memory bandwidths (4.8 / 3.35 TB/s).
- **Power of the types no power table covers**: the sweeps' own power rows of the memory-bound types, pooled, as a
  function of the bytes moved, or the decode-attention kernels' power (memory-bound kernels measured over at least
  one NVML update), whichever predicts those rows better (the first by leave-one-out); the GEMM kernels' power of
  the same GEMM sizes for GEMM-shaped types. Every power prediction is kept between the GPU's idle power (measured
  on this project's H200 visit) and its power limit.

The fp32 runtime models of the five GPUs NeuSight measured (``p100-fp32``, ``p4-fp32``, ``t4-fp32``,
``v100-pcie-32gb-fp32``, ``a100-pcie-40gb-fp32``) are their operator tables (``data/neusight``) fitted per layer
type with every method; they cover the types those tables hold.
"""

from __future__ import annotations

import argparse
import copy
import functools
import json
import os
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc

from .. import _evaluator as _ev
from ..errors import InputError
from ..gpus import find_gpu
from ..layers import DTYPES, FEATURES, FIELD_INDEX, LAYER_TYPES
from .baselines import fit_roofline
from .boosted import fit_boosted
from .data import Measurements
from .fit import FitOptions, _interval, combine_trials, fit_models, metrics
from .format import write_model_file
from .predict import FREE_TYPES, predict_spec

__all__ = ["BUNDLES", "Bundle", "build_bundles", "main"]

# Layer types whose cost is moving bytes (no GEMM inside): their sweeps pool fp16 and fp32 rows, their runtime
# scales with memory bandwidth from one GPU to another, and their power is that of memory-bound kernels.
GEMM_TYPES = ("conv2d", "conv_transpose2d", "matmul")
# GEMM-shaped types whose runtime is the GEMM kernels' of the same GEMM sizes (with a launch floor), whatever their
# own sweep says: the sweep's 18 configurations of each are small (launch-bound) layers, and a fit of them
# extrapolates to a network's large ones (a ResNet-50's convolutions at batch 32: 87 % too slow as a roofline of
# the sweep, 30 % as the GEMM kernels'; see the README). conv_transpose2d adds a col2im scatter its GEMM does not
# count: it keeps its sweep's fit.
GEMM_CARRY_TYPES = ("conv2d", "matmul")
KERNEL_TYPES = ("linear", "attention")
# The features a GEMM model carried over to another GEMM-shaped type sees: the GEMM's sizes and its work.
GEMM_CARRY_FEATURES = ["gemm_m", "gemm_n", "gemm_k", "flops", "bytes_moved"]
MEMORY_POWER_FEATURES = ["bytes_moved"]


@dataclass(frozen=True)
class Bundle:
    """One bundled model: its name, GPU (a key of :mod:`neuralpower.gpus`), dtype, the aiconfigurator table of
    its GEMMs and attention, and where its power comes from when that table has none."""

    name: str
    gpu: str
    dtype: str
    kernels: str
    power_from: str | None = None  # the bundle whose kernel power is carried over
    attention_from: str | None = None  # the bundle whose attention is carried over
    same_as: str | None = None  # a bundle of the same GPU and another dtype of the same width and rate


BUNDLES = (
    Bundle("h200-bf16", "h200", "bf16", "nvidia_h200-bf16.csv"),
    Bundle("h200-fp16", "h200", "fp16", "nvidia_h200-bf16.csv", same_as="h200-bf16"),
    Bundle("h200-fp8", "h200", "fp8", "nvidia_h200-fp8.csv", attention_from="h200-bf16"),
    Bundle("h100-bf16", "h100-sxm", "bf16", "nvidia_h100_80gb_hbm3-bf16.csv", power_from="h200-bf16"),
    Bundle("h100-fp8", "h100-sxm", "fp8", "nvidia_h100_80gb_hbm3-fp8.csv", power_from="h200-fp8",
           attention_from="h100-bf16"),
)
# This project's H200 sweeps: the GPU they ran on, and their idle power (campaign.json's sensor check).
VISIT_GPU = "h200"
# fp32 runtime models of the GPUs NeuSight measured (data/neusight): (GPU key, the import's table).
NEUSIGHT = (("p100", "tesla_p100-pcie-16gb.csv"), ("p4", "tesla_p4.csv"), ("t4", "tesla_t4.csv"),
            ("v100-pcie-32gb", "tesla_v100-pcie-32gb.csv"), ("a100-pcie-40gb", "nvidia_a100-pcie-40gb.csv"))
NEUSIGHT_NAMES = tuple(f"{key}-fp32" for key, _ in NEUSIGHT)


def _source(how: str, text: str) -> dict[str, str]:
    return {"how": how, "text": text}


def _kernel_table(table: pa.Table, name: str) -> tuple[Measurements, npt.NDArray[np.bool_], npt.NDArray[Any]]:
    """An aiconfigurator import table as measurements, with its short-window flags and kernel kinds.

    Power is kept only where it was measured over at least one NVML update (not flagged ``short_window``): a shorter
    power loop reads a few samples of a GPU not in its steady state, bimodal and near its waiting power for small
    kernels (bf16, k = 768, n = 3072: m = 512 reads 166 W, m = 2048 540 W), while a network runs its kernels back to
    back in that steady state. Those rows' runtime is fitted; their power is not."""
    from ..table import _parse

    parsed = _parse(name, "parquet", table)
    n = len(parsed)
    runtime = table.column("runtime_ms").to_numpy().astype(np.float64)
    power = (table.column("power_w").to_numpy(zero_copy_only=False).astype(np.float64)
             if "power_w" in table.column_names else np.full(n, np.nan))
    short = np.asarray(pc.equal(table.column("flags").fill_null(""), "short_window").to_numpy(zero_copy_only=False))
    power[short] = np.nan
    dtype = DTYPES[int(parsed.rows[0, FIELD_INDEX["dtype"]])]
    data = Measurements.from_rows(parsed.rows, runtime, power, gpu=str(table.column("gpu")[0]),
                                  executor="aiconfigurator", source=f"data/aiconfigurator ({name})", dtype=dtype)
    return data, short, np.asarray(table.column("origin").to_pylist())


def _visit_table(data_dir: Path, dtype: str) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float64],
                                                        npt.NDArray[np.float64], npt.NDArray[np.bool_]]:
    """This project's H200 sweep of one dtype: rows, runtime, power and the rows flagged noisy or interfered."""
    from .data import read_measurements

    data = read_measurements([data_dir / VISIT_GPU / f"torch-{dtype}" / "layers.csv"])
    return data.rows, data.targets["runtime_ms"], data.targets["power_w"], data.noisy


def _sweep_rows(data_dir: Path) -> dict[str, tuple[npt.NDArray[np.int64], npt.NDArray[np.float64],
                                                    npt.NDArray[np.float64], npt.NDArray[np.bool_]]]:
    """Per layer type, the H200 sweep rows a bundle fits (or checks a carried model on): fp16 rows for every type,
    fp32 rows too for the memory-bound ones and the GEMMs and attention (their launch floors); none of the free types
    (a view costs nothing)."""
    parts = {d: _visit_table(data_dir, d) for d in ("fp16", "fp32")}
    out = {}
    for code in np.unique(parts["fp16"][0][:, 0]):
        t = LAYER_TYPES[int(code)]
        if t in FREE_TYPES:
            continue
        dtypes = ("fp16",) if t in GEMM_TYPES else ("fp16", "fp32")  # GEMMs: fp32 runs at another rate
        picked = [tuple(a[p[0][:, 0] == code] for a in p) for p in (parts[d] for d in dtypes)]
        out[t] = tuple(np.concatenate([p[k] for p in picked]) for k in range(4))
    return out  # type: ignore[return-value]


def _features(rows: npt.NDArray[np.int64]) -> npt.NDArray[np.float64]:
    rows = np.ascontiguousarray(rows, dtype=np.int64)
    return np.asarray(_ev.features(rows, _ev.info(rows)), dtype=np.float64)


def _rmspe(y: npt.NDArray[np.float64], pred: npt.NDArray[np.float64]) -> float:
    return metrics(y, pred)["rmspe"]


class _Builder:
    """Fits shared by the bundles, each done once."""

    def __init__(self, data_dir: Path, jobs: int | None, log: Callable[[str], None]) -> None:
        from ..aiconfigurator import import_aiconfigurator

        self.data_dir = data_dir
        self.jobs = jobs
        self.log = log
        self.tables = import_aiconfigurator([data_dir / "aiconfigurator"]).tables
        self.docs: dict[str, dict[str, Any]] = {}
        self._kernels: dict[str, tuple[Measurements, npt.NDArray[np.bool_], npt.NDArray[Any]]] = {}
        self._gemm: dict[str, dict[str, Any]] = {}
        self._floors: dict[str, dict[str, float] | None] = {}
        # the idle power the last visit's sensor check measured (campaign.json, written by `neuralpower campaign`)
        path = data_dir / VISIT_GPU / "campaign.json"
        try:
            self.idle_w = float(json.loads(path.read_text())["visits"][-1]["sensor"]["idle_w"])
        except (OSError, ValueError, KeyError, IndexError, TypeError) as e:
            raise InputError(f"no idle power of the H200 visit ({type(e).__name__}: {e})", path=str(path)) from None

    def kernels(self, name: str) -> tuple[Measurements, npt.NDArray[np.bool_], npt.NDArray[Any]]:
        if name not in self._kernels:
            if name not in self.tables:
                raise InputError(f"no aiconfigurator table {name} under {self.data_dir / 'aiconfigurator'} "
                                 f"(found: {', '.join(self.tables)})")
            self._kernels[name] = _kernel_table(self.tables[name], name)
        return self._kernels[name]

    def gemm_carry(self, name: str) -> dict[str, Any]:
        """Boosted runtime (and power, where measured) of a kernel table's GEMMs on the GEMM features alone."""
        if name not in self._gemm:
            data, short, origin = self.kernels(name)
            gemm = origin == "aiconfigurator:gemm"
            X = data.features[gemm]
            # fitted on four fifths of the shapes; the 90 % interval calibrated on the fifth it never saw
            held = np.random.default_rng(0).random(len(X)) < 0.2
            out: dict[str, Any] = {"interval": {}}
            for target, mode in (("runtime_ms", "log"), ("power_w", "plain")):
                y = data.targets[target][gemm]
                ok = np.isfinite(y) & (~short[gemm] if target == "power_w" else True)
                if ok.sum() < 10:
                    continue
                out[target] = fit_boosted(X[ok & ~held], y[ok & ~held], FEATURES, features=GEMM_CARRY_FEATURES,
                                          target=mode)
                out["interval"][target] = _interval(y[ok & held], predict_spec(out[target], X[ok & held], FEATURES))
            self._gemm[name] = out
        return self._gemm[name]

    @functools.cached_property
    def memory_power(self) -> dict[str, Any]:
        """The H200 decode-attention kernels' power (memory-bound; rows measured over at least one NVML update)
        as a function of the bytes moved."""
        data, short, origin = self.kernels("nvidia_h200-bf16.csv")
        ok = (origin == "aiconfigurator:generation_attention") & ~short & np.isfinite(data.targets["power_w"])
        return fit_boosted(data.features[ok], data.targets["power_w"][ok], FEATURES, features=MEMORY_POWER_FEATURES,
                           target="plain", trees=100, depth=3)

    @functools.cached_property
    def sweep_power(self) -> tuple[dict[str, Any], str, dict[str, float], dict[str, float] | None]:
        """The power of the memory-bound types: a fit of the H200 sweeps' own power rows (every memory-bound type
        pooled, as a function of the bytes moved) or the decode kernels' (see :meth:`memory_power`), whichever
        predicts the sweeps' power rows better (the fit by leave-one-out); the chosen model, its name, both RMSPEs
        and its 90 % interval on those rows."""
        sweep = self.sweep
        rows, power = [], []
        for t, s in sweep.items():
            if t in KERNEL_TYPES or t in GEMM_TYPES:
                continue
            ok = np.isfinite(s["power"]) & ~s["noisy"]
            rows.append(s["rows"][ok])
            power.append(s["power"][ok])
        X, y = _features(np.concatenate(rows)), np.concatenate(power)
        def fit(X: npt.NDArray[np.float64], y: npt.NDArray[np.float64]) -> dict[str, Any]:
            return fit_boosted(X, y, FEATURES, features=MEMORY_POWER_FEATURES, target="plain", trees=50, depth=2,
                               min_leaf=3)

        loo = np.array([predict_spec(fit(np.delete(X, i, 0), np.delete(y, i)), X[i : i + 1], FEATURES)[0]
                        for i in range(len(y))])
        lo, hi = self.idle_w, float(find_gpu(VISIT_GPU).power_limit_w)
        predicted = {"sweep": np.clip(loo, lo, hi),
                     "decode": np.clip(predict_spec(self.memory_power, X, FEATURES), lo, hi)}
        scores = {**{k: _rmspe(y, v) for k, v in predicted.items()}, "rows": float(len(y))}
        kind = "sweep" if scores["sweep"] <= scores["decode"] else "decode"
        return (fit(X, y) if kind == "sweep" else self.memory_power), kind, scores, _interval(y, predicted[kind])

    def floor(self, t: str) -> dict[str, float] | None:
        """A GEMM-shaped or attention type's launch floor in PyTorch eager on the H200: the median runtime of its
        sweep rows that the H200 bf16 kernels' model (of the type, or of its GEMM) puts at under half their
        measured time (launch-bound), and the power of the GPU waiting for the next launch (the median power of the
        sweeps' rows that move under 100 kB). The host launches as fast whatever the GPU and dtype: every bundle
        takes the H200's."""
        if t not in self._floors:
            self._floors[t] = self._floor(t)
        return self._floors[t]

    @functools.cached_property
    def waiting_power_w(self) -> float:
        """The power of the H200 waiting for the next launch: the median power of the sweeps' rows that move under
        100 kB (the idle power where none has power)."""
        waiting = []
        for other in self.sweep.values():
            X = _features(other["rows"])
            small = np.isfinite(other["power"]) & (X[:, FEATURES.index("bytes_moved")] < 1e5)
            waiting += list(other["power"][small])
        return float(np.median(waiting)) if waiting else self.idle_w

    def _floor(self, t: str) -> dict[str, float] | None:
        if t in KERNEL_TYPES:
            block = self.docs["h200-bf16"]["layer_types"][t]["runtime_ms"]
            kernel = block["models"][block["default"]]
        else:
            kernel = self.gemm_carry("nvidia_h200-bf16.csv")["runtime_ms"]
        sweep = self.sweep
        if t not in sweep:
            return None
        s = sweep[t]
        ok = np.isfinite(s["runtime"]) & ~s["noisy"]
        kernel_ms = predict_spec(kernel, _features(s["rows"][ok]), FEATURES)
        bound = s["runtime"][ok][kernel_ms < 0.5 * s["runtime"][ok]]
        if len(bound) < 3:
            return None
        return {"ms": float(np.median(bound)), "power_w": self.waiting_power_w, "rows": float(len(bound))}

    @functools.cached_property
    def sweep(self) -> dict[str, Any]:
        """Per layer type of the H200 sweeps: the fitted runtime block, and its rows (for choosing a GEMM carry)."""
        out = {}
        for t, (rows, runtime, power, noisy) in _sweep_rows(self.data_dir).items():
            out[t] = {"rows": rows, "runtime": runtime, "power": power, "noisy": noisy}
            if t in KERNEL_TYPES:
                continue
            self.log(f"fitting the H200 sweep's {t}: {len(rows)} rows")
            # fp16 and fp32 rows of a memory-bound type together (bytes per element is a feature): one model
            data = Measurements.from_rows(rows, runtime, np.full(len(rows), np.nan), gpu="NVIDIA H200",
                                          executor="torch", source="data/h200/torch-fp16, torch-fp32",
                                          dtype="fp16", noisy=noisy)
            entry = fit_models(data, FitOptions(method="all", jobs=self.jobs))["layer_types"][t]
            block = entry["runtime_ms"]
            if block.get("interval") is None and block["default"] == "roofline":
                # too few rows for held-out ones: the roofline's interval from leave-one-out predictions
                ok = np.isfinite(runtime)
                first, y, _ = combine_trials(rows[ok], runtime[ok], noisy[ok])
                X = _features(rows[ok][first])
                loo = np.array([predict_spec(fit_roofline(np.delete(X, i, 0), np.delete(y, i), FEATURES),
                                             X[i : i + 1], FEATURES)[0] for i in range(len(y))])
                interval = _interval(y, loo)
                if interval is not None:
                    block["interval"] = {**interval, "how": "leave-one-out"}
            out[t]["entry"] = entry
        return out


def launch_ms(runtime: npt.NDArray[np.float64]) -> float:
    """A layer type's launch overhead as the H200 sweeps show it: the shortest runtime measured (the sweeps hold
    layers small enough that their time is all launch; NeuSight's tables do not). A model carried to another GPU
    scales only the time above it."""
    ok = runtime[np.isfinite(runtime)]
    return float(ok.min()) if len(ok) else 0.0


def _block(spec: dict[str, Any], name: str, source: dict[str, str], metrics: dict[str, Any] | None = None,
           interval: dict[str, Any] | None = None) -> dict[str, Any]:
    out = {"rows": 0, "default": name, "fallback": None, "models": {name: spec}, "metrics": metrics or {},
           "source": source}
    if interval is not None:
        out["interval"] = interval
    return out


def _set_floor(entry: dict[str, Any], floor: dict[str, float] | None, visit: str, gpu: str) -> None:
    """Give a layer type measured as kernels in a loop the launch floor of PyTorch eager, and say so (a type carried
    over from another bundle keeps the floor it came with)."""
    if floor is None or "floor" in entry:
        return
    entry["floor"] = {"ms": floor["ms"], "power_w": floor["power_w"]}
    source = entry["runtime_ms"]["source"]
    source["text"] = (f"{source['text']}; launched alone (PyTorch eager) at least {floor['ms'] * 1000:.1f} us, the "
                      f"wait at {floor['power_w']:.0f} W (measured on {visit}'s torch sweeps"
                      f"{'' if gpu == visit else ', carried over'})")


def _kernels_of(name: str) -> str:
    return next(b.kernels for b in BUNDLES if b.name == name)


def _gemm_carry_check(builder: _Builder, t: str,
                      sweep: dict[str, Any]) -> tuple[float, float, int, dict[str, float] | None]:
    """How the H200 bf16 GEMM kernels' model of the same GEMM sizes (with its launch floor) predicts a GEMM-shaped
    type's sweep, against a fit of the sweep itself: (carried RMSPE, the fit's validation RMSPE, configurations, the
    carried model's 90 % interval there), on the sweep's configurations (which the GEMM model never saw; the floor
    is their median launch-bound runtime)."""
    gemm = builder.gemm_carry("nvidia_h200-bf16.csv")
    ok = np.isfinite(sweep["runtime"])
    first, y, _ = combine_trials(sweep["rows"][ok], sweep["runtime"][ok], sweep["noisy"][ok])
    predicted = predict_spec(gemm["runtime_ms"], _features(sweep["rows"][ok][first]), FEATURES)
    floor = builder.floor(t)
    predicted = np.maximum(predicted, floor["ms"] if floor else 0.0)
    carried = _rmspe(y, predicted)
    block = sweep["entry"]["runtime_ms"]
    own = block["metrics"].get(block["default"], {})
    own_rmspe = float(own.get("validation_rmspe", own.get("rmspe", np.inf)))
    return carried, own_rmspe, len(y), _interval(y, predicted)


def build_bundle(b: Bundle, builder: _Builder) -> dict[str, Any]:
    """Fit one bundled model (see the module's notes)."""
    gpu = find_gpu(b.gpu)
    visit = find_gpu(VISIT_GPU)
    started = time.perf_counter()
    data, _, origin = builder.kernels(b.kernels)
    builder.log(f"{b.name}: fitting {len(data)} kernel rows of {b.kernels}")
    doc = fit_models(data, FitOptions(method="boosted", jobs=builder.jobs), gpu=gpu.name, executor="aiconfigurator")
    doc["dtype"] = b.dtype
    builder.docs[b.name] = doc  # (the launch floors of h200-bf16 read its own kernels' models)
    for t, entry in doc["layer_types"].items():
        kinds = ", ".join(sorted({o.split(":")[1] for o in origin if (o == "aiconfigurator:gemm") == (t == "linear")}))
        measured = f"measured on {gpu.name} ({b.dtype}; NVIDIA aiconfigurator's {kinds} kernels)"
        entry["runtime_ms"]["source"] = _source("measured", measured)
        if b.power_from is None:
            entry["power_w"]["source"] = _source("measured", measured)
        else:
            other = builder.docs[b.power_from]["layer_types"][t]["power_w"]
            entry.pop("energy_interval", None)  # (calibrated on the power model replaced here)
            entry["power_w"] = {**copy.deepcopy(other), "source": _source(
                "carried", f"{visit.name}'s power of the same {t} kernels ({b.power_from}): the same GH100 chip "
                f"and {gpu.power_limit_w:.0f} W limit")}
    if b.attention_from is not None and "attention" not in doc["layer_types"]:
        other = copy.deepcopy(builder.docs[b.attention_from]["layer_types"]["attention"])
        for target in ("runtime_ms", "power_w"):
            other[target]["source"] = _source(
                "carried", f"{b.attention_from}'s attention (the public tables run attention in bf16, with an fp8 "
                f"KV cache where kv_dtype says so), {other[target]['source']['text']}")
        doc["layer_types"]["attention"] = other
    # the other layer types, from the H200 sweeps
    bandwidth = visit.memory_bandwidth_gb_s / gpu.memory_bandwidth_gb_s
    gemm = builder.gemm_carry(b.kernels)
    gemm_power = builder.gemm_carry(b.kernels if b.power_from is None else _kernels_of(b.power_from))
    memory_power, power_kind, power_scores, memory_interval = builder.sweep_power
    if power_kind == "sweep":
        memory_text = (f"measured on {visit.name} (this project's torch sweeps: every memory-bound type's "
                       f"{power_scores['rows']:.0f} power rows, by bytes moved; leave-one-out RMSPE "
                       f"{power_scores['sweep']:.1f}%, {power_scores['decode']:.1f}% for the decode kernels' power)")
    else:
        memory_text = (f"{visit.name}'s decode-attention kernels' power (memory-bound; aiconfigurator, bf16) at the "
                       f"same bytes moved (RMSPE {power_scores['decode']:.1f}% on the sweeps' power rows)")
    if gpu.key != visit.key:
        memory_text = f"carried from {visit.name}: {memory_text}"
    for t, sweep in builder.sweep.items():
        if t in KERNEL_TYPES:
            continue
        entry = copy.deepcopy(sweep["entry"])
        entry["runtime_ms"]["launch_ms"] = launch_ms(sweep["runtime"])
        own = (f"measured on {visit.name} in fp16 (this project's torch sweep"
               f"{'' if t in GEMM_TYPES else 's, fp16 and fp32 rows'}), as {b.dtype}")
        if t in GEMM_TYPES:
            carried_rmspe, own_rmspe, n, interval = _gemm_carry_check(builder, t, sweep)
            if t in GEMM_CARRY_TYPES:
                entry["runtime_ms"] = _block(gemm["runtime_ms"], "boosted", _source(
                    "carried", f"{gpu.name}'s {b.dtype} GEMM kernels (aiconfigurator) of the same GEMM sizes ({t} as "
                    f"its GEMM; H200 bf16: RMSPE {carried_rmspe:.1f}% on the sweep's {n} small {t} configurations, "
                    f"{own_rmspe:.1f}% for a fit of them)"),
                    metrics={"boosted": {"rmspe": carried_rmspe, "rows_test": n}}, interval=interval)
            else:
                entry["runtime_ms"]["source"] = _source("carried", own + ("" if gpu.key == visit.key else
                                                                          f" on {gpu.name} (the same SMs and clocks)"))
        else:
            entry["runtime_ms"]["source"] = _source("carried", own + ("" if gpu.key == visit.key else
                                                    f", times the bandwidth ratio {bandwidth:.2f} ({visit.name} / "
                                                    f"{gpu.name})"))
            if gpu.key != visit.key:
                entry["runtime_ms"]["scale"] = bandwidth
                entry["runtime_ms"]["scale_from"] = launch_ms(sweep["runtime"])
        if t in GEMM_TYPES and "power_w" in gemm_power:
            entry["power_w"] = _block(gemm_power["power_w"], "boosted", _source(
                "carried", f"{visit.name}'s {b.dtype} GEMM kernels' power (aiconfigurator) at the same GEMM sizes"),
                interval=gemm_power["interval"].get("power_w"))
        else:
            how = "measured" if power_kind == "sweep" and gpu.key == visit.key else "carried"
            entry["power_w"] = _block(memory_power, "boosted", _source(how, memory_text),
                                      metrics={"boosted": {"rmspe": power_scores[power_kind],
                                                           "rows_test": int(power_scores["rows"])}},
                                      interval=memory_interval)
        if entry["runtime_ms"]["default"] == "boosted" and t in GEMM_TYPES:  # a GEMM kernel model: launched alone
            _set_floor(entry, builder.floor(t), visit.name, gpu.name)
        doc["layer_types"][t] = entry
    for t in KERNEL_TYPES:
        if t in doc["layer_types"]:
            entry = doc["layer_types"][t]
            _set_floor(entry, builder.floor(t), visit.name, gpu.name)
    for entry in doc["layer_types"].values():
        entry["power_w"]["bounds"] = [builder.idle_w, float(gpu.power_limit_w)]
    doc["power_measured"] = True
    doc["description"] = (f"{gpu.name}, {b.dtype}: GEMMs and attention from NVIDIA aiconfigurator's kernel tables, "
                          "the other layer types from this project's H200 sweeps (`neuralpower models "
                          f"{b.name}` tells each type's source)")
    doc["sources"] = [*doc["sources"], {"path": "data/h200/torch-fp16/layers.csv, data/h200/torch-fp32/layers.csv",
                                        "rows": int(sum(len(s["rows"]) for s in builder.sweep.values()))}]
    builder.log(f"{b.name}: {time.perf_counter() - started:.0f} s")
    builder.docs[b.name] = doc
    return doc


def same_as(b: Bundle, other: dict[str, Any]) -> dict[str, Any]:
    """Bundle ``b`` from the bundle of the same GPU in a dtype of the same width and tensor-core rate (fp16 from
    bf16): the kernels carried over, the H200 sweeps (run in fp16) measured."""
    doc = copy.deepcopy(other)
    was = doc["dtype"]
    doc["dtype"] = b.dtype
    for t, entry in doc["layer_types"].items():
        for target in ("runtime_ms", "power_w"):
            source = entry[target]["source"]
            if t in KERNEL_TYPES:
                source.update(how="carried", text=f"{b.same_as}'s (the same bytes per element and tensor-core rate): "
                              f"{source['text']}")
            elif source["text"].startswith("measured on") and source["text"].endswith(f", as {was}"):
                source.update(how="measured", text=source["text"][: -len(f", as {was}")])
    doc["description"] = doc["description"].replace(f", {was}:", f", {b.dtype}:").replace(str(b.same_as), b.name)
    return doc


def compact(doc: dict[str, Any]) -> dict[str, Any]:
    """A bundled model as it ships: each target's default model and the two baselines (``validate`` compares them),
    the others' metrics kept; the boosted trees' leaf values to 7 significant digits (a relative change of 1e-7 at
    most, far below any model's error). The predictions are this document's: both evaluators read it."""
    out = copy.deepcopy(doc)
    for entry in out["layer_types"].values():
        for target in ("runtime_ms", "power_w"):
            block = entry[target]
            block["models"] = {k: v for k, v in block["models"].items()
                               if k == block["default"] or k in ("roofline", "flops_linear")}
            for spec in block["models"].values():
                if spec["kind"] == "boosted":
                    spec["base"] = float(f"{spec['base']:.7g}")
                    for tree in spec["trees"]:  # leaves only: a split's threshold stays exact
                        tree["value"] = [float(f"{v:.7g}") if f < 0 else v
                                         for f, v in zip(tree["feature"], tree["value"], strict=True)]
    return out


def build_neusight(key: str, table_name: str, data_dir: Path, jobs: int | None,
                   log: Callable[[str], None], tables: dict[str, pa.Table]) -> dict[str, Any]:
    """The fp32 runtime model of a GPU NeuSight measured: its operator tables (drift removed), fitted per layer
    type with every method (the default chosen on validation rows); no power."""
    from ..table import _parse

    gpu = find_gpu(key)
    if table_name not in tables:
        raise InputError(f"no NeuSight table {table_name} under {data_dir / 'neusight'} (found: {', '.join(tables)})")
    table = tables[table_name]
    parsed = _parse(table_name, "csv", table)
    runtime = table.column("runtime_ms").to_numpy().astype(np.float64)
    data = Measurements.from_rows(parsed.rows, runtime, np.full(len(runtime), np.nan), gpu=gpu.name,
                                  executor="neusight-torch", source=f"data/neusight ({table_name})", dtype="fp32")
    log(f"{key}-fp32: fitting {len(runtime)} operator rows of {table_name}")
    doc = fit_models(data, FitOptions(method="all", jobs=jobs), gpu=gpu.name, executor="neusight-torch")
    ops = sorted({str(o).split(":")[-1] for o in table.column("origin").to_pylist()})
    for entry in doc["layer_types"].values():
        entry["runtime_ms"]["source"] = _source("measured", f"measured on {gpu.name} (fp32; NeuSight's PyTorch 2.1 "
                                                "operator tables)")
    _streaming_carry(doc, data, gpu.name)
    for t, entry in doc["layer_types"].items():
        entry["layout"] = "rows"  # the tables hold [B, H] tensors: a network's layers are read that way
        if t in STREAMING_TYPES:  # beyond the largest tensor measured, at the bandwidth it reached
            f = _features(data.rows[data.rows[:, 0] == LAYER_TYPES.index(t)])
            entry["runtime_ms"]["stream"] = {"rows": float(f[:, FEATURES.index("rows")].max())}
            if t not in ("softmax", "layernorm"):  # (their channels are what they reduce over)
                entry["runtime_ms"]["stream"]["channels"] = float(f[:, FEATURES.index("in_channels")].max())
    doc["description"] = (f"{gpu.name}, fp32, runtime only: NeuSight's PyTorch operator tables ({', '.join(ops)}); "
                          f"{', '.join(STREAMING_CARRY)} carried from its element-wise tables")
    _trace_calibration(doc, data_dir / "neusight-networks" / "measured", gpu, log)
    return doc


def _trace_calibration(doc: dict[str, Any], measured: Path, gpu: Any, log: Callable[[str], None]) -> None:
    """Scale the GEMMs of a NeuSight GPU's model to its networks' traces (see
    :data:`neuralpower.neusight_networks.CALIBRATED_TYPES`), where ``measured`` holds that GPU's; say so."""
    from ..evaluator import Model
    from ..neusight_networks import calibration, read_cases, trace_ratios

    folders = [p for p in measured.iterdir() if p.is_dir() and find_gpu(p.name).key == gpu.key] if \
        measured.is_dir() else []
    if not folders:
        return
    cases = read_cases(folders)
    for t, c in calibration(trace_ratios(cases, Model(doc, validate=False))).items():
        runtime = doc["layer_types"][t]["runtime_ms"]
        runtime["scale"] = c["scale"]
        networks = sorted({n.split("-inf-")[0] for n in c["networks"]})
        runtime["source"]["text"] += (f", times {c['scale']:.3f}: the time NeuSight's traces of its networks on this "
                                      f"GPU measured for their {c['nodes']} {t} nodes ({', '.join(networks)}) over "
                                      "the tables' prediction of them")
        log(f"{gpu.key}-fp32: {t} calibrated to the traces of {len(c['networks'])} networks: x {c['scale']:.3f}")


# Layer types NeuSight measured no operator of that run a network's kernels (the embedding lookup, BERT's pooler
# tanh, the copy of a contiguous() after a transpose): each reads and writes its elements once, as relu, add and mul
# do, so a GPU's model of them is a bandwidth fit of those tables' rows (time = bytes moved / bandwidth + launch).
STREAMING_CARRY = ("embedding", "tanh", "concat")
# NeuSight's memory-bound operators: a network's attention scores are larger than any tensor they measured
STREAMING_TYPES = ("relu", "gelu", "add", "mul", "softmax", "layernorm")
_STREAMING_FROM = ("relu", "add", "mul")


def _streaming_carry(doc: dict[str, Any], data: Measurements, gpu: str) -> None:
    """Give ``doc`` the :data:`STREAMING_CARRY` types it lacks: ``bytes_moved / bandwidth + launch`` fitted (relative
    error, non-negative) on the element-wise rows of ``data``, stated as carried."""
    from scipy.optimize import nnls

    codes = [LAYER_TYPES.index(t) for t in _STREAMING_FROM]
    pick = np.isin(data.rows[:, 0], codes) & np.isfinite(data.targets["runtime_ms"])
    if not pick.any():
        return
    X = _features(data.rows[pick])
    y = data.targets["runtime_ms"][pick]
    moved = X[:, FEATURES.index("bytes_moved")]
    A = np.stack([moved, np.ones(len(y))], 1) / y[:, None]
    scale = A.max(axis=0)
    w, _ = nnls(A / scale, np.ones(len(y)))
    per_byte, launch = (w / scale).tolist()
    rmspe = _rmspe(y, per_byte * moved + launch)
    interval = _interval(y, per_byte * moved + launch)  # (on the rows it was fitted to)
    spec = {"kind": "roofline", "ms_per_flop": 0.0, "ms_per_byte": per_byte, "overhead": launch}
    relu = doc["layer_types"].get("relu")
    for t in STREAMING_CARRY:
        if t in doc["layer_types"] or relu is None:
            continue
        text = (f"carried from {gpu}'s element-wise operators ({', '.join(_STREAMING_FROM)}; NeuSight's PyTorch 2.1 "
                f"tables, {len(y)} rows): bytes moved at {1e-6 / per_byte:.0f} GB/s plus {launch * 1000:.1f} us, "
                f"RMSPE {rmspe:.1f}% on those rows; no {t} measured")
        doc["layer_types"][t] = {
            "rows": 0, "ranges": {"bytes_moved": [float(moved.min()), float(moved.max())]},
            "runtime_ms": _block(spec, "roofline", _source("carried", text),
                                 metrics={"roofline": {"rmspe": rmspe, "rows_test": 0}}, interval=interval),
            "power_w": copy.deepcopy(relu["power_w"]),
        }


def build_bundles(data_dir: str | os.PathLike[str], out_dir: str | os.PathLike[str],
                  only: Sequence[str] = (), jobs: int | None = None,
                  log: Callable[[str], None] = lambda s: None) -> list[Path]:
    """Fit the bundled models (``only``: these and what they carry from) and write them to ``out_dir``."""
    names = [b.name for b in BUNDLES] + list(NEUSIGHT_NAMES)
    unknown = [n for n in only if n not in names]
    if unknown:
        raise InputError(f"unknown bundled model {unknown[0]!r} (known: {', '.join(names)})")
    wanted = set(only) if only else set(names)
    written = []
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    if wanted & set(NEUSIGHT_NAMES):
        from ..neusight import import_neusight

        tables = import_neusight([Path(data_dir) / "neusight"]).tables
        for key, table_name in NEUSIGHT:
            if f"{key}-fp32" in wanted:
                doc = build_neusight(key, table_name, Path(data_dir), jobs, log, tables)
                path = Path(out_dir) / f"{key}-fp32.json"
                write_model_file(compact(doc), path, compact=True)
                written.append(path)
                log(f"wrote {path}")
    if not wanted & {b.name for b in BUNDLES}:
        write_digests(out_dir)
        return written
    builder = _Builder(Path(data_dir), jobs, log)
    for b in BUNDLES:  # what a wanted bundle carries from is fitted too
        if b.name in wanted:
            # every GPU bundle's launch floors are the H200 bf16 kernels' (see _Builder.floor)
            wanted |= {n for n in (b.power_from, b.attention_from, b.same_as, "h200-bf16") if n}
    for b in BUNDLES:
        if b.name not in wanted:
            continue
        doc = same_as(b, builder.docs[b.same_as]) if b.same_as else build_bundle(b, builder)
        builder.docs[b.name] = doc
        path = Path(out_dir) / f"{b.name}.json"
        write_model_file(compact(doc), path, compact=True)
        written.append(path)
        log(f"wrote {path}")
    write_digests(out_dir)
    return written


def write_digests(directory: str | os.PathLike[str]) -> Path:
    """Write the SHA-256 of every model file in ``directory`` to its ``SHA256SUMS`` (``sha256sum``'s format): a
    bundled model whose bytes match is not validated again as it loads (:data:`neuralpower.evaluator.DIGESTS`)."""
    import hashlib

    from .._output import atomic_path
    from ..evaluator import DIGESTS

    files = sorted(Path(directory).glob("*.json"))
    lines = [f"{hashlib.sha256(p.read_bytes()).hexdigest()}  {p.name}\n" for p in files]
    path = Path(directory) / DIGESTS
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as f:
        f.writelines(lines)
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m neuralpower.models.bundle",
                                     description="Build the bundled GPU models from the data under data/.")
    parser.add_argument("--data", default="data", help="the repository's data folder (default: data)")
    parser.add_argument("--out", default="python/neuralpower/data/models", help="where the models go")
    parser.add_argument("--only", nargs="*", default=(), metavar="NAME", help="build these models only")
    parser.add_argument("--jobs", type=int, default=None, help="threads fitting at once")
    args = parser.parse_args(argv)
    try:
        build_bundles(args.data, args.out, args.only, args.jobs, log=lambda s: print(s, file=sys.stderr))
    except InputError as e:
        print(f"neuralpower: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
