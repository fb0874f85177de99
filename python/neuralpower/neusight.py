"""Import NeuSight's public operator measurements (and its networks' traces) as neuralpower measurement tables.

NeuSight (github.com/sitar-lab/NeuSight, MIT license) published the runtime of single PyTorch operators
measured on real GPUs: one CSV per operator and GPU (``<op>/<gpu>.csv``, optionally gzipped) with an
``OPName`` column, ``Latency`` in milliseconds, the ``Device`` and the operator's shape columns. This module
turns them into the layer tables ``neuralpower fit`` reads (one per GPU, ``runtime_ms`` measured, no power):

========  =====================================  =======================================================
OPName    shape columns                          layer
========  =====================================  =======================================================
conv      B, Input_Channel, Output_Channel,      conv2d: square input and kernel, no bias
          Kernel_Szie, Input_Size, Stride,
          Padding
linear    B, M, N, K                             linear on [B, M, N] tokens (batch B, M tokens), N -> K
                                                 features, no bias
bmm       B, M, N, K                             matmul [B, M, N] x [B, N, K] (batch B, M tokens)
relu,     B, H                                   relu, gelu of [B, H] (batch B, H channels)
gelu
softmax   B, H                                   softmax over the last axis of [B, H]
ln        B, H                                   layernorm over the last axis of [B, H] (batch B, H features)
add, mul  B, H                                   add, mul of two [B, H] inputs
========  =====================================  =======================================================

The kernel columns (what ran, known only after running) are not carried over: a predictor may not use them.
They do say which side is which: on each of the 96,588 linear and bmm rows of the four GPUs whose kernel
names its tile (all but 138), the kernel's grid covers an output of M x K in tiles (``Grid x`` = ceil(K / the
tile's first side), ``Grid y`` = ceil(M / its second)), so N is the side summed over and K the features out.

Each file's runtimes are checked for drift with the row order (:func:`neuralpower.models.drift.order_drift`):
NeuSight's conv tables get slower from their first row to their last by an overhead that the configurations do
not explain (0.26 ms on the V100 to 0.72 ms on the P4). Where a drift counts it is removed: ``runtime_ms`` is
the runtime as measured at the start of the table and ``drift_ms`` the overhead taken off (the source's
``Latency`` is their sum); ``correct_drift=False`` keeps the runtimes as they are.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

from . import _evaluator as _ev
from .errors import InputError
from .layers import FIELDS
from .models.drift import Drift, order_drift
from .table import _csv_names, _parse, _spreadsheet_rows, check_table_file

__all__ = ["ImportResult", "import_neusight", "neusight_files", "read_neusight"]

EXECUTOR = "neusight-torch"
# What each supported operator's shape columns are, and the smallest value each may take.
_SHAPES: dict[str, dict[str, int]] = {
    "conv": {"B": 1, "Input_Channel": 1, "Output_Channel": 1, "Kernel_Szie": 1, "Input_Size": 1, "Stride": 1,
             "Padding": 0},
    "linear": {"B": 1, "M": 1, "N": 1, "K": 1},
    "bmm": {"B": 1, "M": 1, "N": 1, "K": 1},
    **{op: {"B": 1, "H": 1} for op in ("relu", "gelu", "softmax", "ln", "add", "mul")},
}
_SUFFIXES = (".csv", ".csv.gz")
_MAX_SHAPE = 2**40


def _layers(op: str, s: dict[str, npt.NDArray[np.int64]], n: int) -> dict[str, pa.Array]:
    """The layer columns of ``n`` operators ``op`` with shape columns ``s``."""
    if op == "conv":
        k, size, stride, pad = s["Kernel_Szie"], s["Input_Size"], s["Stride"], s["Padding"]
        return {
            "type": pa.array(["conv2d"] * n), "batch": s["B"], "in_channels": s["Input_Channel"],
            "in_h": size, "in_w": size, "out_channels": s["Output_Channel"], "kernel_h": k, "kernel_w": k,
            "stride_h": stride, "stride_w": stride, "padding_h": pad, "padding_w": pad, "bias": np.zeros(n, np.int64),
        }
    if op in ("linear", "bmm"):
        kind = "linear" if op == "linear" else "matmul"
        gemm: dict[str, pa.Array] = {"type": pa.array([kind] * n), "batch": s["B"], "tokens": s["M"],
                                     "in_features": s["N"], "out_features": s["K"]}
        if op == "linear":
            gemm["bias"] = np.zeros(n, np.int64)
        return gemm
    if op == "ln":
        return {"type": pa.array(["layernorm"] * n), "batch": s["B"], "in_features": s["H"]}
    cols: dict[str, pa.Array] = {"type": pa.array([op] * n), "batch": s["B"], "in_channels": s["H"],
                                 "in_h": np.ones(n, np.int64), "in_w": np.ones(n, np.int64)}
    if op in ("add", "mul"):
        cols["inputs"] = np.full(n, 2, np.int64)
    if op == "softmax":
        cols["channels_first"] = np.zeros(n, np.int64)  # the last axis ([B, H]: either layout)
    return cols


def _read(path: str) -> pa.Table:
    check_table_file(path)
    _csv_names(path)  # text, not binary; a header that decodes
    try:
        return pacsv.read_csv(path, convert_options=pacsv.ConvertOptions(strings_can_be_null=False))
    except (pa.ArrowException, OSError) as e:
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise InputError(f"not a readable NeuSight CSV file: {first}", path=path) from None


def _op_name(table: pa.Table, path: str) -> str:
    if "OPName" not in table.column_names:
        raise InputError("not a NeuSight table: no 'OPName' column", path=path, column="OPName")
    ops = [str(v) for v in table.column("OPName").unique().to_pylist()]
    if len(ops) != 1:
        raise InputError(f"one operator per file expected, found {', '.join(ops[:4]) or 'none'}", path=path,
                         column="OPName")
    return ops[0]


def _integers(table: pa.Table, name: str, low: int, path: str, row: Callable[[int], int]) -> npt.NDArray[np.int64]:
    column = table.column(name)
    values = column.to_pylist()
    out = np.empty(len(values), dtype=np.int64)
    for i, v in enumerate(values):
        if v is None:
            raise InputError("empty cell", path=path, row=row(i), column=name)
        ok = isinstance(v, int) or (isinstance(v, float) and math.isfinite(v) and v == int(v))
        if not ok or not low <= int(v) <= _MAX_SHAPE:
            raise InputError(f"{v!r} is not a whole number from {low} to 2**40", path=path, row=row(i), column=name)
        out[i] = int(v)
    return out


def _latency(table: pa.Table, path: str, row: Callable[[int], int]) -> npt.NDArray[np.float64]:
    values = table.column("Latency").to_pylist()
    out = np.empty(len(values), dtype=np.float64)
    for i, v in enumerate(values):
        if v is None:
            raise InputError("empty cell", path=path, row=row(i), column="Latency")
        ok = isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and 0 < v < 1e9
        if not ok:
            raise InputError(f"{v!r} is not a runtime in milliseconds (a positive number)", path=path, row=row(i),
                             column="Latency")
        out[i] = float(v)
    return out


def read_neusight(path: str | os.PathLike[str]) -> tuple[str, pa.Table]:
    """Read one NeuSight file: its operator name and its measurement table.

    The table holds the layer columns, ``runtime_ms``, ``gpu`` (the ``Device`` column), ``executor``
    (``neusight-torch``) and ``origin`` (``neusight:<op>``), one row per source row, in order; every layer is
    validated by the core.

    Raises
    ------
    InputError
        One line naming the file, the spreadsheet row and the column: a missing column, an operator this
        importer does not know, a shape that is not a positive whole number, a runtime that is not positive.
    """
    spath = str(path)
    table = _read(spath)
    op = _op_name(table, spath)
    if op not in _SHAPES:
        known = ", ".join(_SHAPES)
        raise InputError(f"unknown NeuSight operator {op!r} (known: {known})", path=spath, column="OPName")
    needed = ["Latency", "Device", *_SHAPES[op]]
    missing = [c for c in needed if c not in table.column_names]
    if missing:
        raise InputError(f"missing column {missing[0]!r} (a NeuSight {op} table has {', '.join(needed)})", path=spath,
                         column=missing[0])
    n = table.num_rows
    lines: list[npt.NDArray[np.int64]] = []

    def row(i: int) -> int:
        if not lines:
            lines.append(_spreadsheet_rows(spath, "csv", n))
        return int(lines[0][i])

    shapes = {name: _integers(table, name, low, spath, row) for name, low in _SHAPES[op].items()}
    runtime = _latency(table, spath, row)
    devices = table.column("Device").cast(pa.string())
    if devices.null_count or any(not str(d).strip() for d in devices.unique().to_pylist()):
        i = next(k for k, d in enumerate(devices.to_pylist()) if d is None or not str(d).strip())
        raise InputError("empty device name", path=spath, row=row(i), column="Device")
    columns = {
        **_layers(op, shapes, n),
        "dtype": pa.array(["fp32"] * n),
        "runtime_ms": runtime,
        "gpu": devices,
        "executor": pa.array([EXECUTOR] * n),
        "origin": pa.array([f"neusight:{op}"] * n),
    }
    out = pa.table({k: pa.array(v) if isinstance(v, np.ndarray) else v for k, v in columns.items()})
    _parse(spath, "csv", out)  # every layer validated, errors naming the source row
    return op, out


def neusight_files(sources: Iterable[str | os.PathLike[str]]) -> list[str]:
    """The NeuSight CSV files among ``sources`` (files, or folders searched recursively), sorted per folder."""
    return source_files(sources, _SUFFIXES, "no .csv or .csv.gz files in this folder")


def source_files(sources: Iterable[str | os.PathLike[str]], suffixes: tuple[str, ...], none_found: str) -> list[str]:
    """The files among ``sources``: files as given, folders searched recursively for names ending in one of
    ``suffixes`` (hidden and ``_`` names left out), sorted per folder; ``none_found`` is the error of a folder
    without any."""
    files: list[str] = []
    for source in sources:
        s = str(source)
        if os.path.isdir(s):
            found = sorted(
                os.path.join(d, f)
                for d, _, names in os.walk(s)
                for f in names
                if f.endswith(suffixes) and not f.startswith((".", "_"))
            )
            if not found:
                raise InputError(none_found, path=s)
            files += found
        elif os.path.isfile(s):
            files.append(s)
        else:
            raise InputError("no such file or folder", path=s)
    return files


def slug(gpu: str) -> str:
    """A file name for a GPU: ``Tesla V100-PCIE-32GB`` -> ``tesla_v100-pcie-32gb``."""
    return re.sub(r"[^a-z0-9.-]+", "_", gpu.strip().lower()).strip("_") or "gpu"


@dataclass
class ImportResult:
    """What :func:`import_neusight` wrote: rows per GPU file and operator."""

    tables: dict[str, pa.Table] = field(default_factory=dict)  # file name -> measurement table
    rows: dict[str, dict[str, int]] = field(default_factory=dict)  # file name -> op -> rows
    # file name -> op -> the drift of each source file's rows (removed where it counts, unless told not to)
    drift: dict[str, dict[str, list[Drift]]] = field(default_factory=dict)
    # file name -> why -> traced nodes not written (no kernel in a network, or no layer type)
    left_out: dict[str, dict[str, int]] = field(default_factory=dict)


def _drift(part: pa.Table) -> Drift:
    """The drift of one source file's rows of one GPU with their order."""
    layers = part.drop_columns([c for c in ("runtime_ms", "gpu", "executor", "origin") if c in part.column_names])
    rows = np.ascontiguousarray(_parse("neusight.csv", "csv", layers).rows)
    return order_drift(_ev.features(rows, _ev.info(rows)), part.column("runtime_ms").to_numpy())


def import_neusight(sources: Iterable[str | os.PathLike[str]], *, correct_drift: bool = True) -> ImportResult:
    """Read NeuSight files and gather them into one measurement table per GPU (named by :func:`slug`).

    Each file's rows of a GPU are checked for drift with their order; with ``correct_drift`` a drift that counts
    is removed (``runtime_ms`` less ``drift_ms``), else it is only reported (``ImportResult.drift``).
    """
    result = ImportResult()
    parts: dict[str, list[pa.Table]] = {}
    from .neusight_networks import TRACE_NAME, trace_table

    for path in neusight_files(sources):
        if TRACE_NAME.search(os.path.basename(path)):  # a network's trace: its kernel nodes as layers
            table, left = trace_table(path)
            name = slug(str(table.column("gpu")[0]) if table.num_rows else "gpu") + "-traces.csv"
            add_part(parts, result.rows, name, "trace nodes", table)
            for why, count in left.items():
                result.left_out.setdefault(name, {})[why] = result.left_out.get(name, {}).get(why, 0) + count
            continue
        op, table = read_neusight(path)
        gpus = table.column("gpu").unique().to_pylist()
        for gpu in gpus:
            name = slug(str(gpu)) + ".csv"
            part = table if len(gpus) == 1 else table.filter(pc.equal(table.column("gpu"), gpu))
            drift = _drift(part)
            result.drift.setdefault(name, {}).setdefault(op, []).append(drift)
            if drift.significant and correct_drift:
                runtime = part.column("runtime_ms").to_numpy() - drift.values
                at = part.column_names.index("runtime_ms")
                part = part.set_column(at, "runtime_ms", pa.array(runtime)).append_column("drift_ms",
                                                                                        pa.array(drift.values))
            add_part(parts, result.rows, name, op, part)
    result.tables = gather_parts(parts)
    return result


def add_part(parts: dict[str, list[pa.Table]], rows: dict[str, dict[str, int]], name: str, op: str,
             part: pa.Table) -> None:
    """Add ``part``, rows of operator ``op``, to the parts of output table ``name``, and count its rows."""
    parts.setdefault(name, []).append(part)
    rows.setdefault(name, {})
    rows[name][op] = rows[name].get(op, 0) + part.num_rows


def gather_parts(parts: dict[str, list[pa.Table]]) -> dict[str, pa.Table]:
    """Each output table's parts as one table, the layer fields first (in their order), then the rest."""
    out = {}
    for name, tables in parts.items():
        table = pa.concat_tables(tables, promote_options="default")
        order = [f for f in FIELDS if f in table.column_names]
        out[name] = table.select([*order, *(c for c in table.column_names if c not in order)])
    return out
