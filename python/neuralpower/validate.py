"""Whole-network validation: predictions against what ``bench-network`` measured.

Each (network, batch, dtype) measured in ``networks.csv`` is one case: its trials are combined by the median
(of the clean ones; throttled or interference rows are left out, noisy ones count only where every trial is
noisy), its
architecture is rebuilt (a zoo network by name, or one of the architectures given) and checked against the
layers, parameters and MACs recorded with the measurement, then predicted with the model's default and with
each method the model holds (poly, tree, roofline, flops_linear).
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv

from .errors import InputError
from .evaluator import Model
from .layers import Architecture
from .models.data import flag_names, unusable
from .models.fit import BASELINES, METHODS

__all__ = [
    "QUANTITIES",
    "Case",
    "Validation",
    "format_validation",
    "plot_validation",
    "read_networks",
    "validate_networks",
]

QUANTITIES = ("runtime_ms", "power_w", "energy_mj")
ALL_METHODS = (*METHODS, *BASELINES)
_REQUIRED = ("arch", "batch", "dtype", "runtime_ms")
_CHECKED = ("layers", "params", "macs")


@dataclass
class Measured:
    """One network at one batch size as measured: medians over its trials."""

    arch: str
    batch: int
    dtype: str
    trials: int
    runtime_ms: float
    power_w: float | None
    energy_mj: float | None
    recorded: dict[str, int]  # layers, params, macs as bench-network recorded them
    row: int  # spreadsheet row of its first trial


@dataclass
class Case:
    """A validated network: measured and predicted values, and the prediction of every method."""

    measured: Measured
    layers: int
    extrapolated_layers: int
    predicted: dict[str, float]
    bounds: dict[str, float] = field(default_factory=dict)
    by_method: dict[str, dict[str, float]] = field(default_factory=dict)
    # with layer measurements: how many of the network's layers were measured alone, and the sum of their
    # measured runtimes when all were (do the layers add up to the network?)
    layers_found: int | None = None
    layers_sum_ms: float | None = None

    def error(self, quantity: str, method: str | None = None) -> float | None:
        """Percent error of a prediction, (predicted - measured) / measured; None when not measured."""
        measured = getattr(self.measured, quantity)
        pred = self.predicted if method is None else self.by_method.get(method)
        if measured is None or pred is None or quantity not in pred:
            return None
        return float(100 * (pred[quantity] - measured) / measured)


@dataclass
class Validation:
    """All cases, and the MAPE of each quantity for the default and for each method."""

    model: str
    cases: list[Case]
    power_predicted: bool

    def predicts(self, quantity: str) -> bool:
        """Runtime always; power and energy only from a model that holds power."""
        return quantity == "runtime_ms" or self.power_predicted

    def coverage(self, quantity: str) -> float | None:
        """Percent of cases whose measured value lies inside the predicted interval (None: no intervals)."""
        inside = []
        for c in self.cases:
            measured = getattr(c.measured, quantity)
            lo, hi = c.bounds.get(f"{quantity}_lo", math.nan), c.bounds.get(f"{quantity}_hi", math.nan)
            if measured is not None and not (math.isnan(lo) or math.isnan(hi)):
                inside.append(lo <= measured <= hi)
        if not inside or not self.predicts(quantity):
            return None
        return float(100 * np.mean(inside))

    def mape(self, quantity: str, method: str | None = None) -> float | None:
        if not self.predicts(quantity):
            return None
        errors = [c.error(quantity, method) for c in self.cases]
        if not errors or any(e is None for e in errors):
            return None
        return float(np.mean(np.abs(np.array(errors, dtype=np.float64))))

    def record(self) -> dict[str, Any]:
        """What ``validate --format json`` prints."""
        out: dict[str, Any] = {
            "model": self.model,
            "networks": len(self.cases),
            **{f"{q.split('_')[0]}_mape": self.mape(q) for q in QUANTITIES},
            **{f"{q.split('_')[0]}_interval_coverage": self.coverage(q) for q in QUANTITIES},
            "methods": {
                m: {f"{q.split('_')[0]}_mape": self.mape(q, m) for q in QUANTITIES}
                for m in ALL_METHODS
                if all(m in c.by_method for c in self.cases)
            },
            "cases": [],
        }
        for c in self.cases:
            m = c.measured
            rec: dict[str, Any] = {"arch": m.arch, "batch": m.batch, "dtype": m.dtype, "trials": m.trials,
                                   "layers": c.layers, "extrapolated_layers": c.extrapolated_layers}
            if c.layers_found is not None:
                rec["layers_measured"] = c.layers_found
                rec["layers_sum_ms"] = c.layers_sum_ms
            for q in QUANTITIES:
                rec[f"measured_{q}"] = getattr(m, q)
                rec[f"predicted_{q}"] = c.predicted[q] if self.predicts(q) else None
                rec[f"{q}_error_pct"] = c.error(q) if self.predicts(q) else None
                for side in ("lo", "hi"):
                    v = c.bounds.get(f"{q}_{side}")
                    rec[f"predicted_{q}_{side}"] = None if v is None or v != v else v
            out["cases"].append(rec)
        return out


def _read(path: str) -> pa.Table:
    """The table with every cell as its text, so that a message quotes the cell as written."""
    from .table import _csv_names, check_table_file

    check_table_file(path)
    names = _csv_names(path)  # text, not binary; a header that decodes
    try:
        types = {name: pa.string() for name in names}
        return pacsv.read_csv(path, convert_options=pacsv.ConvertOptions(column_types=types,
                                                                          strings_can_be_null=True))
    except (pa.ArrowException, OSError) as e:
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise InputError(f"not a readable networks table: {first}", path=path) from None


def _networks_file(path: str) -> str:
    if os.path.isdir(path):
        candidate = os.path.join(path, "networks.csv")
        if not os.path.isfile(candidate):
            raise InputError("no networks.csv in this folder (what `neuralpower bench-network --out` writes)",
                             path=path)
        return candidate
    if not os.path.isfile(path):
        raise InputError("no such file or folder", path=path)
    return path


def _number(value: Any, path: str, row: int, column: str, *, whole: bool = False) -> float | None:
    """A cell as a positive number, None when empty; anything else is an error naming the cell."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise InputError(f"{value!r} is not a number", path=path, row=row, column=column) from None
    if not math.isfinite(v) or v <= 0 or (whole and v != int(v)):
        kind = "a positive whole number" if whole else "a positive number"
        raise InputError(f"{value!r} is not {kind}", path=path, row=row, column=column)
    return v


def read_networks(path: str | os.PathLike[str]) -> list[Measured]:
    """Read ``networks.csv`` (or the folder holding it) into one entry per network, batch and dtype."""
    spath = _networks_file(os.fspath(path))
    table = _read(spath)
    missing = [c for c in _REQUIRED if c not in table.column_names]
    if missing:
        raise InputError(f"not a networks table: no {missing[0]!r} column", path=spath, column=missing[0])
    if table.num_rows == 0:
        raise InputError("no networks measured in this table", path=spath)
    from .table import _spreadsheet_rows

    lines = _spreadsheet_rows(spath, "csv", table.num_rows)
    columns = {name: table.column(name).to_pylist() for name in table.column_names}
    groups: dict[tuple[str, int, str], list[int]] = {}
    for i in range(table.num_rows):
        row = int(lines[i])
        arch = columns["arch"][i]
        if arch is None or not str(arch).strip():
            raise InputError("empty network name", path=spath, row=row, column="arch")
        batch = _number(columns["batch"][i], spath, row, "batch", whole=True)
        dtype = columns["dtype"][i]
        if batch is None or dtype is None:
            raise InputError("empty cell", path=spath, row=row, column="batch" if batch is None else "dtype")
        groups.setdefault((str(arch), int(batch), str(dtype)), []).append(i)
    def median(column: str, use: list[int]) -> float | None:
        if column not in columns:
            return None
        values = [_number(columns[column][i], spath, int(lines[i]), column) for i in use]
        given = [v for v in values if v is not None]
        return float(np.median(given)) if given else None

    out = []
    for (arch, batch, dtype), index in groups.items():
        flags = [flag_names(columns["flags"][i]) if "flags" in columns else set() for i in index]
        kept = [i for i, f in zip(index, flags, strict=True) if not unusable(f)]
        use = [i for i, f in zip(index, flags, strict=True) if not unusable(f) and "noisy" not in f] or kept
        if not use:
            continue
        runtime = median("runtime_ms", use)
        if runtime is None:
            raise InputError("no runtime measured", path=spath, row=int(lines[use[0]]), column="runtime_ms")
        power, energy = median("power_w", use), median("energy_mj", use)
        if energy is None and power is not None:
            energy = power * runtime
        recorded = {}
        for c in _CHECKED:
            if c in columns:
                v = _number(columns[c][use[0]], spath, int(lines[use[0]]), c, whole=True)
                if v is not None:
                    recorded[c] = int(v)
        out.append(Measured(arch, batch, dtype, len(use), runtime, power, energy, recorded, int(lines[index[0]])))
    return out


def _architecture(m: Measured, given: dict[tuple[str, int], Architecture], image_size: int | None,
                  seq_len: int | None, path: str) -> Architecture:
    from . import zoo
    from .sources import is_zoo_name

    arch = given.get((m.arch, m.batch))
    if arch is None:
        if not is_zoo_name(m.arch):
            raise InputError(f"{m.arch} is not a zoo network: give the architectures it ran with --archs",
                             path=path, row=m.row, column="arch")
        size, length = zoo.applicable_sizes(m.arch, image_size, seq_len)
        arch = zoo.build(m.arch, batch=m.batch, dtype=m.dtype, image_size=size, seq_len=length)
    totals = arch.totals()
    for c, v in m.recorded.items():
        if int(totals[c]) != v:
            raise InputError(
                f"{m.arch} at batch {m.batch} has {c} {int(totals[c])} here but {v} where it was measured (another "
                "image size, sequence length or definition): give what it ran with --archs, --image-size or "
                "--seq-len",
                path=path, row=m.row, column=c)
    return arch


def _layer_runtimes(paths: Sequence[str | os.PathLike[str]]) -> dict[tuple[int, ...], float]:
    """The median runtime of each layer configuration measured alone (clean trials first, as ``fit``)."""
    from .models.data import read_measurements
    from .models.fit import combine_trials

    data = read_measurements(paths)
    ok = np.isfinite(data.targets["runtime_ms"])
    first, median, _ = combine_trials(data.rows[ok], data.targets["runtime_ms"][ok], data.noisy[ok])
    rows = data.rows[ok][first]
    return {tuple(r): float(v) for r, v in zip(rows.tolist(), median.tolist(), strict=True)}


def validate_networks(
    path: str | os.PathLike[str],
    model: Model,
    *,
    archs: Sequence[Architecture] = (),
    arch_sources: Sequence[str] = (),
    image_size: int | None = None,
    layers: Sequence[str | os.PathLike[str]] = (),
    seq_len: int | None = None,
) -> Validation:
    """Predict every measured network with ``model`` (and each of its methods) and compare.

    The networks are zoo networks built at each measured batch size, unless ``archs`` holds them, or
    ``arch_sources`` (zoo names, layer tables or ONNX files, as given to ``bench-network``) builds them at
    every batch size measured.

    ``layers``: measurement tables of single layers (what ``bench`` wrote); each network then also gets the
    sum of its layers' measured runtimes (the median of each configuration's trials) where every layer was
    measured alone, which tells the model's error from what composing layers into a network changes.

    Raises
    ------
    InputError
        A networks table that does not load; a network that cannot be rebuilt, or whose rebuilt layers,
        parameters or MACs differ from the ones measured; a dtype or layer type the model does not cover.
    """
    spath = _networks_file(os.fspath(path))
    measured = read_networks(spath)
    if arch_sources:
        from . import zoo
        from .sources import is_zoo_name, load_architectures

        archs = list(archs)
        for spec in arch_sources:
            size, length = zoo.applicable_sizes(spec, image_size, seq_len) if is_zoo_name(spec) else (None, None)
            for batch in sorted({m.batch for m in measured}):
                archs += load_architectures(spec, batch=batch, image_size=size, dtype=model.dtype, seq_len=length)
    given = {(a.name, a.batch): a for a in archs}
    alone = _layer_runtimes(layers) if layers else None
    others: dict[str, Model] = {}
    cases = []
    for m in measured:
        arch = _architecture(m, given, image_size, seq_len, spath)
        if arch.dtype != model.dtype:
            raise InputError(f"{m.arch} was measured in {arch.dtype}, the model {model.name or model.path} was fit "
                             f"for {model.dtype}", path=spath, row=m.row, column="dtype")
        try:
            p = model.predict(arch)
        except InputError as e:
            raise InputError(str(e), path=spath, row=m.row) from None
        case = Case(m, len(arch), int(np.count_nonzero(p.layer_extrapolated)),
                    {"runtime_ms": p.runtime_ms, "power_w": p.power_w, "energy_mj": p.energy_mj}, p.bounds)
        if alone is not None:
            found = [alone.get(tuple(row)) for row in arch.rows().tolist()]
            case.layers_found = sum(v is not None for v in found)
            case.layers_sum_ms = float(sum(v for v in found if v is not None)) if all(
                v is not None for v in found) else None
        layer_types = {layer.type for layer in arch} & set(model.doc["layer_types"])
        for method in ALL_METHODS:
            # a method counts for a network only where every layer type it holds has that model
            if not all(method in model.doc["layer_types"][t]["runtime_ms"]["models"] for t in layer_types):
                continue
            if method not in others:
                others[method] = Model(model.doc, name=model.name, path=model.path, method=method, validate=False)
            q = others[method].predict(arch)
            case.by_method[method] = {"runtime_ms": q.runtime_ms, "power_w": q.power_w, "energy_mj": q.energy_mj}
        cases.append(case)
    cases.sort(key=lambda c: (c.measured.arch, c.measured.batch, c.measured.dtype))
    return Validation(model.name or model.path, cases, model.power_measured)


def format_validation(record: dict[str, Any]) -> str:
    """The table ``neuralpower validate`` prints for a :meth:`Validation.record`."""
    from ._text import text_table
    from .models.report import _pct

    def num(v: float | None, digits: int = 3) -> str:
        return "-" if v is None else f"{v:.{digits}g}"

    def pct(v: float | None) -> str:
        return "-" if v is None else f"{v:+.1f}%"

    head = ["network", "batch", "trials"]
    for q, unit in zip(QUANTITIES, ("ms", "W", "mJ"), strict=True):
        name = q.split("_")[0]
        head += [f"{name} {unit}", "predicted", "error"]
    alone = any("layers_measured" in c for c in record["cases"])
    if alone:
        head += ["layers alone ms"]
    rows = []
    for c in record["cases"]:
        row = [c["arch"], str(c["batch"]), str(c["trials"])]
        for q in QUANTITIES:
            row += [num(c[f"measured_{q}"]), num(c[f"predicted_{q}"]), pct(c[f"{q}_error_pct"])]
        if alone:
            found = c["layers_measured"]
            row.append(num(c["layers_sum_ms"]) if c["layers_sum_ms"] is not None else f"{found}/{c['layers']} found")
        rows.append(row)
    lines = [f"{record['model']}: {record['networks']} networks measured",
             *text_table(head, rows, right=range(1, len(head))), ""]
    mape_head = ["method", "runtime MAPE", "power MAPE", "energy MAPE"]
    mape_rows = [["default", *(_pct(record[f"{q}_mape"]) for q in ("runtime", "power", "energy"))]]
    for method, m in record["methods"].items():
        mape_rows.append([method, *(_pct(m[f"{q}_mape"]) for q in ("runtime", "power", "energy"))])
    lines += text_table(mape_head, mape_rows, right=range(1, 4))
    return "\n".join(lines)


def plot_validation(record: dict[str, Any], path: str) -> None:
    """Predicted against measured runtime, power and energy of a :meth:`Validation.record`, as a PNG at ``path``
    (needs matplotlib)."""
    import matplotlib
    import numpy as np

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ._output import atomic_path

    fig, axes = plt.subplots(1, 3, figsize=(13, 4.2))
    for ax, q, unit in zip(axes, QUANTITIES, ("ms", "W", "mJ"), strict=True):
        pairs = [(c[f"measured_{q}"], c[f"predicted_{q}"]) for c in record["cases"]
                 if c[f"measured_{q}"] is not None and c[f"predicted_{q}"] is not None]
        name = q.split("_")[0]
        ax.set_title(f"{name} ({unit})")
        ax.set_xlabel("measured")
        ax.set_ylabel("predicted")
        if not pairs:
            ax.text(0.5, 0.5, "not measured or not predicted", ha="center", va="center", transform=ax.transAxes)
            continue
        x, y = np.array(pairs, dtype=np.float64).T
        ax.scatter(x, y, s=18)
        lo, hi = float(min(x.min(), y.min())), float(max(x.max(), y.max()))
        ax.plot([lo, hi], [lo, hi], color="grey", linewidth=1)
        if lo > 0:
            from matplotlib.ticker import NullFormatter

            ax.set_xscale("log")
            ax.set_yscale("log")
            for axis in (ax.xaxis, ax.yaxis):
                axis.set_minor_formatter(NullFormatter())
        mape = record[f"{name}_mape"]
        if mape is not None:
            ax.set_title(f"{name} ({unit}): MAPE {mape:.1f}%")
    fig.suptitle(f"{record['model']}: {record['networks']} networks")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)
