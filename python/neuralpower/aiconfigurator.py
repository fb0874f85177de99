"""Import NVIDIA aiconfigurator's public kernel measurements as neuralpower measurement tables.

aiconfigurator (github.com/ai-dynamo/aiconfigurator, Apache-2.0) publishes, per GPU, the latency of LLM-serving
kernels run alone in a CUDA-graph loop (``latency``, ms per call, CUDA events) and, for some GPUs, the board
power NVML reported during the loop (``power``, W, the mean of ``nvmlDeviceGetPowerUsage`` samples taken every
100 ms; ``power_limit``). One Parquet file per kernel kind, ``op_name`` naming it:

=======================  ===================================================================================
op_name                  layer
=======================  ===================================================================================
gemm                     linear on ``m`` tokens (batch 1): ``C[m, n] = A[m, k] B[k, n]`` is ``nn.Linear(k, n)``,
                         no bias; ``gemm_dtype`` bfloat16 is bf16, fp8_block (block-scaled) and fp8
                         (per-tensor scaling) are fp8
context_attention        prefill: causal attention, queries = keys = ``isl``, ``num_key_value_heads`` key/value
                         heads (grouped-query attention), ``kv_cache_dtype`` the keys' and values' dtype,
                         ``window_size`` a sliding window (0: none)
generation_attention     decode: one query token per sequence over a KV cache of ``isl + step`` tokens (not
                         causal: the one query sees the whole cache, or its window)
encoder_attention        bidirectional attention (encoders, ViT): queries = keys = ``isl``
=======================  ===================================================================================

Every input row is one layer of its own architecture (``arch`` = ``<op_name>:<row>``, the row counted from 0
in its file), so predictions and results join back to the row they came from. The kernel that ran
(``kernel_source``) and the framework are kept as provenance columns; a predictor may not use them.

The power of a row is only as good as the window it was measured over. Each kernel ran for at least 1 s
(0.3 s when one call took under 0.1 ms) but at most 3000 calls, so a short kernel's loop can be shorter than
NVML's 100 ms update: ``window_s`` is the loop's length as that rule gives it (``window_calls`` calls) and
``power_samples`` the NVML updates it spans. Rows whose loop spans no full update carry the flag
``short_window``: their power is a reading of a GPU that had not reached its steady state (bimodal: two such
rows of neighbouring shapes differ by half their power one time in ten). They are kept, since they are the only
power readings of small kernels there are, and fitted with a loss that does not let them pull (see
:mod:`neuralpower.models.boosted`); accuracy figures say whether they count.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from .errors import InputError
from .neusight import _integers, add_part, gather_parts, slug, source_files
from .table import _parse

__all__ = ["EXECUTOR", "ImportResult", "aiconfigurator_files", "import_aiconfigurator", "read_aiconfigurator"]

EXECUTOR = "aiconfigurator"
#: NVML's power reading on Hopper GPUs updates about every 100 ms.
NVML_PERIOD_S = 0.1
# The collector's loop rule: at least LOOP_S seconds (SHORT_LOOP_S when one call is under SHORT_CALL_MS), at
# most MAX_CALLS calls.
LOOP_S, SHORT_LOOP_S, SHORT_CALL_MS, MAX_CALLS = 1.0, 0.3, 0.1, 3000

_DTYPES = {"bfloat16": "bf16", "bf16": "bf16", "float16": "fp16", "fp16": "fp16", "fp8_block": "fp8", "fp8": "fp8"}
# Columns each kind needs, with the smallest whole number each may take.
_ATTENTION = {"batch_size": 1, "isl": 1, "num_heads": 1, "head_dim": 1}
_SHAPES: dict[str, dict[str, int]] = {
    "gemm": {"m": 1, "n": 1, "k": 1},
    "context_attention": {**_ATTENTION, "num_key_value_heads": 1, "beam_width": 1, "step": 0, "window_size": 0},
    "generation_attention": {**_ATTENTION, "num_key_value_heads": 1, "beam_width": 1, "step": 0, "window_size": 0},
    "encoder_attention": dict(_ATTENTION),
}
_DTYPE_COLUMNS = {"gemm": ("gemm_dtype",), "context_attention": ("attn_dtype", "kv_cache_dtype"),
                  "generation_attention": ("attn_dtype", "kv_cache_dtype"), "encoder_attention": ("attn_dtype",)}
_MAX_SHAPE = 2**40


def _read(path: str) -> pa.Table:
    if not os.path.isfile(path):
        raise InputError("no such file", path=path)
    try:
        return pq.read_table(path)
    except (pa.ArrowException, OSError) as e:
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise InputError(f"not a readable Parquet file: {first}", path=path) from None


def _strings(table: pa.Table, name: str, path: str) -> list[str]:
    values = table.column(name).cast(pa.string()).to_pylist()
    for i, v in enumerate(values):
        if v is None or not str(v).strip():
            raise InputError("empty cell", path=path, row=i + 2, column=name)
    return [str(v).strip() for v in values]


def _positive(table: pa.Table, name: str, path: str, what: str, high: float) -> npt.NDArray[np.float64]:
    values = table.column(name).to_pylist()
    out = np.empty(len(values), dtype=np.float64)
    for i, v in enumerate(values):
        ok = isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and 0 < v < high
        if not ok:
            raise InputError(f"{v!r} is not {what}", path=path, row=i + 2, column=name)
        out[i] = float(v)
    return out


def _dtype(values: list[str], name: str, path: str) -> list[str]:
    out = []
    for i, v in enumerate(values):
        d = _DTYPES.get(v.lower())
        if d is None:
            raise InputError(f"unknown dtype {v!r} (known: {', '.join(_DTYPES)})", path=path, row=i + 2, column=name)
        out.append(d)
    return out


def loop(latency_ms: npt.NDArray[np.float64]) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float64]]:
    """The calls and the seconds of each kernel's timed loop, by the collector's rule (see the module's notes)."""
    least = np.where(latency_ms < SHORT_CALL_MS, SHORT_LOOP_S, LOOP_S)
    calls = np.minimum(MAX_CALLS, np.ceil(least / (latency_ms * 1e-3))).astype(np.int64)
    return calls, calls * latency_ms * 1e-3


def _layers(op: str, s: dict[str, npt.NDArray[np.int64]], n: int,
            path: str) -> dict[str, pa.Array | npt.NDArray[np.int64]]:
    one, zero = np.ones(n, np.int64), np.zeros(n, np.int64)
    if op == "gemm":
        return {"type": pa.array(["linear"] * n), "batch": one, "tokens": s["m"], "in_features": s["k"],
                "out_features": s["n"], "bias": zero}
    if "beam_width" in s and (s["beam_width"] != 1).any():
        i = int(np.flatnonzero(s["beam_width"] != 1)[0])
        raise InputError(f"beam width {int(s['beam_width'][i])}: only 1 (no beam search) is a layer neuralpower "
                         "models", path=path, row=i + 2, column="beam_width")
    isl = s["isl"]
    cols: dict[str, pa.Array | npt.NDArray[np.int64]] = {
        "type": pa.array(["attention"] * n), "batch": s["batch_size"], "heads": s["num_heads"],
        "kv_heads": s.get("num_key_value_heads", s["num_heads"]), "head_dim": s["head_dim"],
        "window": s.get("window_size", zero),
    }
    if op == "generation_attention":
        return {**cols, "tokens": one, "kv_tokens": isl + s["step"], "causal": zero}
    if op == "context_attention" and (s["step"] != 0).any():
        i = int(np.flatnonzero(s["step"] != 0)[0])
        raise InputError(f"step {int(s['step'][i])} in a prefill row (0 expected)", path=path, row=i + 2,
                         column="step")
    return {**cols, "tokens": isl, "kv_tokens": isl, "causal": one if op == "context_attention" else zero}


def read_aiconfigurator(path: str | os.PathLike[str]) -> tuple[str, pa.Table]:
    """Read one aiconfigurator Parquet file: its kernel kind (``op_name``) and its measurement table.

    The table holds the layer columns, ``runtime_ms``, ``power_w`` (where the file has power), ``gpu`` (the
    ``device`` column, as NVML names it), ``executor``, ``origin`` (``aiconfigurator:<op_name>``), ``arch``,
    ``kernel_source``, ``framework``, the loop's ``window_s``, ``window_calls`` and ``power_samples``, ``power_limit_w``
    and ``flags``, one row per source row, in order; every layer is validated by the core.

    Raises
    ------
    InputError
        One line naming the file, the row (as a spreadsheet numbers it: 2 is the first data row) and the column:
        a missing column, a kernel kind this importer does not know, a shape that is not a whole number in
        range, an unknown dtype, a latency or power that is not a positive number.
    """
    spath = str(path)
    table = _read(spath)
    if "op_name" not in table.column_names:
        raise InputError("not an aiconfigurator table: no 'op_name' column", path=spath, column="op_name")
    ops = sorted({str(v) for v in table.column("op_name").unique().to_pylist()})
    if len(ops) != 1:
        raise InputError(f"one op_name per file expected, found {', '.join(ops[:4]) or 'none'}", path=spath,
                         column="op_name")
    op = ops[0]
    if op not in _SHAPES:
        raise InputError(f"unknown op_name {op!r} (known: {', '.join(_SHAPES)})", path=spath, column="op_name")
    needed = ["device", "latency", *_SHAPES[op], *_DTYPE_COLUMNS[op]]
    missing = [c for c in needed if c not in table.column_names]
    if missing:
        raise InputError(f"missing column {missing[0]!r} (an aiconfigurator {op} table has {', '.join(needed)})",
                         path=spath, column=missing[0])
    n = table.num_rows
    shapes = {name: _integers(table, name, low, spath, lambda i: i + 2) for name, low in _SHAPES[op].items()}
    latency = _positive(table, "latency", spath, "a latency in milliseconds (a positive number)", 1e9)
    given = {c: _strings(table, c, spath) for c in _DTYPE_COLUMNS[op]}
    dtypes = [_dtype(v, c, spath) for c, v in given.items()]
    columns: dict[str, pa.Array | npt.NDArray[np.int64] | npt.NDArray[np.float64]] = {
        **_layers(op, shapes, n, spath), "dtype": pa.array(dtypes[0])}
    if len(dtypes) > 1:
        columns["kv_dtype"] = pa.array(dtypes[1])
    calls, seconds = loop(latency)
    samples = np.floor(seconds / NVML_PERIOD_S + 1e-9).astype(np.int64)
    columns["runtime_ms"] = latency
    has_power = "power" in table.column_names and table.column("power").null_count < n
    flags = [""] * n
    if has_power:
        columns["power_w"] = _positive(table, "power", spath, "a power in watts (a positive number)", 1e6)
        flags = ["short_window" if k == 0 else "" for k in samples.tolist()]
    columns.update({
        "gpu": pa.array(_strings(table, "device", spath)),
        "executor": pa.array([EXECUTOR] * n),
        "origin": pa.array([f"aiconfigurator:{op}"] * n),
        "arch": pa.array([f"{op}:{i}" for i in range(n)]),
    })
    for source, name in (("kernel_source", "kernel_source"), ("framework", "framework"),
                         ("version", "framework_version")):
        if source in table.column_names:
            columns[name] = table.column(source).cast(pa.string()).combine_chunks()
    if op == "gemm":
        columns["scaling"] = pa.array([{"fp8_block": "block", "fp8": "tensor"}.get(v.lower(), "")
                                       for v in given["gemm_dtype"]])
    columns.update({"window_s": seconds, "window_calls": calls})
    if has_power:
        columns["power_samples"] = samples
        if "power_limit" in table.column_names:
            columns["power_limit_w"] = _positive(table, "power_limit", spath, "a power limit in watts", 1e6)
    columns["flags"] = pa.array(flags)
    out = pa.table({k: pa.array(v) if isinstance(v, np.ndarray) else v for k, v in columns.items()})
    _parse(spath, "parquet", out)  # every layer validated by the core, errors naming the source row
    return op, out


def aiconfigurator_files(sources: Iterable[str | os.PathLike[str]]) -> list[str]:
    """The Parquet files among ``sources`` (files, or folders searched recursively), sorted per folder."""
    return source_files(sources, (".parquet",), "no .parquet files in this folder")


@dataclass
class ImportResult:
    """What :func:`import_aiconfigurator` gathered: a measurement table per file name, and its rows per kind."""

    tables: dict[str, pa.Table] = field(default_factory=dict)
    rows: dict[str, dict[str, int]] = field(default_factory=dict)  # file name -> op_name -> rows
    short_windows: dict[str, int] = field(default_factory=dict)  # file name -> rows flagged short_window


def _table_name(gpu: str, dtype: str, scaling: str) -> str:
    """One table per GPU and dtype: ``nvidia_h200-bf16.csv``; fp8 GEMMs with per-tensor scaling (another kernel
    than the block-scaled ones the H200 has) in their own, ``...-fp8-per-tensor.csv``."""
    return f"{slug(gpu)}-{dtype}{'-per-tensor' if scaling == 'tensor' else ''}.csv"


def import_aiconfigurator(sources: Iterable[str | os.PathLike[str]]) -> ImportResult:
    """Read aiconfigurator files and gather them into one measurement table per GPU and dtype."""
    result = ImportResult()
    parts: dict[str, list[pa.Table]] = {}
    for path in aiconfigurator_files(sources):
        op, table = read_aiconfigurator(path)
        scaling = table.column("scaling") if "scaling" in table.column_names else pa.array([""] * table.num_rows)
        keys = [_table_name(g, d, s) for g, d, s in zip(table.column("gpu").to_pylist(),
                                                        table.column("dtype").to_pylist(), scaling.to_pylist(),
                                                        strict=True)]
        key_array = pa.array(keys)
        for name in sorted(set(keys)):
            part = table.filter(pc.equal(key_array, name))
            add_part(parts, result.rows, name, op, part)
    result.tables = gather_parts(parts)
    for name, table in result.tables.items():
        result.short_windows[name] = sum(1 for f in table.column("flags").to_pylist() if f == "short_window")
    return result
