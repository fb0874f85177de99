"""Accuracy on real GPU measurements: NeuSight's public operator tables (PyTorch 2.1 fp32; P100, P4, T4, V100).

Imports the tables (`neuralpower import-neusight`), fits each GPU's table with `fit --method all` and prints,
per GPU and layer type, the test RMSPE (configurations the fit never saw; the default chosen on validation
rows) of the default model, the polynomial, the tree and the roofline, the ratio of the default to the
roofline, the test MAPE and the coverage of the 90 % prediction interval; then the median over the GPUs of
conv2d and linear against the goals (RMSPE at most 15 % and 7 %, at most 0.7x the roofline). The import removes
the conv tables' drift with the row order (see `neuralpower.models.drift`); the same medians with the drift kept
(`import-neusight --keep-drift`) are printed last, for comparison.

    python benchmarks/neusight_accuracy.py [NEUSIGHT_DIR]      (default: ../shared/data/neusight)
"""

from __future__ import annotations

import os
import statistics
import sys
import tempfile
import time

import pyarrow as pa
import pyarrow.compute as pc

from neuralpower.models.data import read_measurements
from neuralpower.models.fit import FitOptions, fit_models
from neuralpower.neusight import import_neusight
from neuralpower.table import write_arrow

GOALS = {"conv2d": 15.0, "linear": 7.0}
ROOFLINE_RATIO = 0.7


def fit_all(source: str, *, correct_drift: bool = True, types: tuple[str, ...] | None = None,
            show: bool = True) -> dict[str, dict[str, dict[str, float]]]:
    """Fit each GPU's imported table; the test figures per GPU and layer type."""
    result = import_neusight([source], correct_drift=correct_drift)
    rows: dict[str, dict[str, dict[str, float]]] = {}
    if show:
        print(f"{'gpu':<22} {'type':<8} {'configs':>7} {'default':>8} {'RMSPE':>6} {'poly':>6} {'tree':>6} "
              f"{'roofline':>8} {'ratio':>5} {'MAPE':>5} {'90% PI':>6}")
    with tempfile.TemporaryDirectory() as d:
        for name, table in result.tables.items():
            path = os.path.join(d, name)
            if types is not None:
                table = table.filter(pc.is_in(table.column("type"), pa.array(types)))
            write_arrow(table, path, format="csv")
            start = time.perf_counter()
            doc = fit_models(read_measurements([path]), FitOptions(method="all"))
            gpu = doc["gpu"]
            rows[gpu] = {}
            for t, entry in doc["layer_types"].items():
                block = entry["runtime_ms"]
                m = block["metrics"]
                best = m[block["default"]]
                rec = {
                    "rmspe": best["rmspe"],
                    "ratio": best["rmspe"] / m["roofline"]["rmspe"],
                    "mape": best["mape"],
                    "coverage": block.get("interval", {}).get("test_coverage", float("nan")),
                }
                rows[gpu][t] = rec
                if show:
                    print(f"{gpu:<22} {t:<8} {block['rows']:>7} {block['default']:>8} {best['rmspe']:>5.1f}% "
                          f"{m['poly']['rmspe']:>5.1f}% {m['tree']['rmspe']:>5.1f}% "
                          f"{m['roofline']['rmspe']:>7.1f}% {rec['ratio']:>5.2f} {best['mape']:>4.1f}% "
                          f"{rec['coverage']:>5.1f}%")
            if show:
                print(f"  ({gpu}: fitted in {time.perf_counter() - start:.1f} s)")
    return rows


def summary(rows: dict[str, dict[str, dict[str, float]]]) -> None:
    for t, goal in GOALS.items():
        values = [r[t]["rmspe"] for r in rows.values() if t in r]
        ratios = [r[t]["ratio"] for r in rows.values() if t in r]
        med, ratio = statistics.median(values), statistics.median(ratios)
        print(f"{t}: median test RMSPE over {len(values)} GPUs {med:.1f}% (goal {goal:.0f}%: "
              f"{'met' if med <= goal else 'missed'}, {med / goal:.2f}x the goal); median ratio to the roofline "
              f"{ratio:.2f} (goal {ROOFLINE_RATIO}: {'met' if ratio <= ROOFLINE_RATIO else 'missed'})")


def main(source: str) -> dict[str, dict[str, dict[str, float]]]:
    rows = fit_all(source)
    print()
    summary(rows)
    print("\nwith the drift kept (import-neusight --keep-drift):")
    summary(fit_all(source, correct_drift=False, types=tuple(GOALS), show=False))
    return rows


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data",
                                                            "neusight"))
