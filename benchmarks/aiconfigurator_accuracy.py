"""Accuracy on NVIDIA aiconfigurator's public H200 / H100 kernels, per kernel kind, on shapes no fit saw.

Imports the tables (`neuralpower import-aiconfigurator`), holds out a fifth of each table's rows (every row is a
configuration of its own) before anything is fitted, fits the rest with `neuralpower fit` (its own validation
split chooses each type's default), and prints per table and kernel kind (GEMM, prefill, decode, encoder) the
test MAPE of runtime, power and energy (power x runtime), and the coverage of the 90 % prediction intervals
(runtime on every held-out row; power and energy on the rows measured over an NVML update).
Power and energy are given twice: on every held-out row, and on the rows whose power was measured over at least
one NVML update (not flagged short_window: the others are a few samples of a GPU not in its steady state, and power
is fitted on those rows only, as the bundled models fit it).

    python benchmarks/aiconfigurator_accuracy.py [AICONFIGURATOR_DIR] [--method boosted|all] [--tables NAME...]

(default: data/aiconfigurator; --method boosted; every table of the import.)
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np
import numpy.typing as npt
import pyarrow as pa

from neuralpower.aiconfigurator import import_aiconfigurator
from neuralpower.evaluator import Model, interval_values
from neuralpower.models.data import Measurements
from neuralpower.models.fit import FitOptions, fit_models
from neuralpower.table import _parse

KINDS = {"aiconfigurator:gemm": "gemm", "aiconfigurator:context_attention": "prefill",
         "aiconfigurator:generation_attention": "decode", "aiconfigurator:encoder_attention": "encoder"}
TARGETS = {"runtime": 5.0, "power": 6.0, "energy": 8.0}  # the goals (MAPE %, per kernel kind and dtype)


def _mape(pred: npt.NDArray[np.float64], y: npt.NDArray[np.float64]) -> float:
    ok = np.isfinite(y)
    return float(100 * np.mean(np.abs(pred[ok] / y[ok] - 1))) if ok.any() else float("nan")


def _covered(lo: npt.NDArray[np.float64], hi: npt.NDArray[np.float64], y: npt.NDArray[np.float64]) -> float:
    ok = np.isfinite(y) & np.isfinite(lo)
    return float(100 * np.mean((y[ok] >= lo[ok]) & (y[ok] <= hi[ok]))) if ok.any() else float("nan")


def evaluate(name: str, table: pa.Table, method: str, seed: int = 0) -> list[dict[str, object]]:
    parsed = _parse(name, "parquet", table)
    n = len(parsed)
    runtime = table.column("runtime_ms").to_numpy().astype(np.float64)
    power = (table.column("power_w").to_numpy(zero_copy_only=False).astype(np.float64)
             if "power_w" in table.column_names else np.full(n, np.nan))
    origin = np.asarray(table.column("origin").to_pylist())
    short = np.asarray([f == "short_window" for f in table.column("flags").to_pylist()])
    gpu = str(table.column("gpu")[0])
    test = np.random.default_rng(seed).random(n) < 0.2
    # power fitted as the bundles fit it: on the rows measured over at least one NVML update only
    steady = np.where(short, np.nan, power)
    train = Measurements.from_rows(parsed.rows[~test], runtime[~test], steady[~test], gpu=gpu,
                                   executor="aiconfigurator", source="aiconfigurator")
    doc = fit_models(train, FitOptions(method=method, seed=seed))
    model = Model(doc)
    rows = np.ascontiguousarray(parsed.rows[test])
    out = model.score_rows(rows, np.arange(len(rows) + 1, dtype=np.int64))
    p_rt, p_pw = np.asarray(out["runtime_ms"]), np.asarray(out["power_w"])
    bounds = out.get("bounds")
    y_rt, y_pw, kinds, sh = runtime[test], power[test], origin[test], short[test]
    records = []
    for kind in sorted(set(kinds), key=list(KINDS).index):
        k = kinds == kind
        good = k & ~sh
        rec: dict[str, object] = {"table": name, "kind": KINDS[kind], "rows": int(k.sum()), "good": int(good.sum()),
                                  "runtime": _mape(p_rt[k], y_rt[k])}
        if np.isfinite(y_pw[k]).any() and doc.get("power_measured"):
            rec.update(power=_mape(p_pw[k], y_pw[k]), power_good=_mape(p_pw[good], y_pw[good]),
                       energy=_mape(p_rt[k] * p_pw[k], y_rt[k] * y_pw[k]),
                       energy_good=_mape(p_rt[good] * p_pw[good], y_rt[good] * y_pw[good]))
        if bounds is not None:  # (each row is an architecture of its own: its bounds are the layer's)
            b = interval_values(np.asarray(bounds, dtype=np.float64), p_rt)
            rec["runtime_coverage"] = _covered(b["runtime_ms_lo"][k], b["runtime_ms_hi"][k], y_rt[k])
            if "power" in rec:
                rec["power_coverage"] = _covered(b["power_w_lo"][good], b["power_w_hi"][good], y_pw[good])
                rec["energy_coverage"] = _covered(b["energy_mj_lo"][good], b["energy_mj_hi"][good],
                                                  (y_rt * y_pw)[good])
        records.append(rec)
    return records


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("source", nargs="?", default="data/aiconfigurator")
    parser.add_argument("--method", default="boosted", choices=["poly", "tree", "boosted", "all"])
    parser.add_argument("--tables", nargs="*", help="table names of the import to evaluate (default: all)")
    args = parser.parse_args(argv)
    if not os.path.isdir(args.source):
        print(f"{args.source}: no such folder", file=sys.stderr)
        return 2
    result = import_aiconfigurator([args.source])
    header = (f"{'table':<40} {'kind':<8} {'rows':>6} {'runtime':>8} {'power':>7} {'(good)':>7} {'energy':>7} "
              f"{'(good)':>7} {'cov rt':>7} {'cov P':>6} {'cov E':>6}")
    print(header)
    missed = []

    def pct(r: dict[str, object], key: str) -> str:
        v = r.get(key)
        return "-" if not isinstance(v, float) or v != v else f"{v:.1f}%"

    for name, table in result.tables.items():
        if args.tables and name not in args.tables:
            continue
        start = time.perf_counter()
        for r in evaluate(name, table, args.method):
            print(f"{name:<40} {r['kind']!s:<8} {r['rows']:>6} {pct(r, 'runtime'):>8} {pct(r, 'power'):>7} "
                  f"{pct(r, 'power_good'):>7} {pct(r, 'energy'):>7} {pct(r, 'energy_good'):>7} "
                  f"{pct(r, 'runtime_coverage'):>7} {pct(r, 'power_coverage'):>6} {pct(r, 'energy_coverage'):>6}")
            for target, goal in TARGETS.items():
                key = target if target == "runtime" else f"{target}_good"
                v = r.get(key)
                if isinstance(v, float) and v > goal:
                    missed.append(f"{name} {r['kind']} {target}: {v:.1f}% (goal {goal:.0f}%)")
        print(f"  ({time.perf_counter() - start:.0f} s)", file=sys.stderr)
    print("goals met" if not missed else "goals missed:\n  " + "\n  ".join(missed))
    return 0


if __name__ == "__main__":
    sys.exit(main())
