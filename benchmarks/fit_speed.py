"""How long `neuralpower fit` takes on a 3000-row table of one layer type (the goal: under 60 s here).

Runs the fit the CLI runs (--method all: the polynomial's three target modes, the model tree and both
baselines, for runtime and power) on a synthetic conv2d table (synthetic_table: a known ground truth, not
a measurement) and prints the time and its ratio to the 60 s budget.

    python benchmarks/fit_speed.py [ROWS]
"""

from __future__ import annotations

import os
import sys
import tempfile
import time

import pyarrow.csv as pacsv

from neuralpower.models.data import read_measurements
from neuralpower.models.fit import FitOptions, fit_models
from neuralpower.models.synthetic import synthetic_table

BUDGET_S = 60.0


def main(rows: int = 3000) -> float:
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "conv2d.csv")
        # every row carries power, so both targets are fitted on the full row count
        pacsv.write_csv(synthetic_table(rows, power_fraction=1.0, seed=0), path)
        start = time.perf_counter()
        doc = fit_models(read_measurements([path]), FitOptions(method="all"))
        elapsed = time.perf_counter() - start
    conv = doc["layer_types"]["conv2d"]
    print(f"rows {rows}, layer types {len(doc['layer_types'])}, cpus {os.cpu_count()}")
    for target in ("runtime_ms", "power_w"):
        m = conv[target]["metrics"]
        print(f"  {target}: held-out RMSPE poly {m['poly']['rmspe']:.1f}%, tree {m['tree']['rmspe']:.1f}%")
    print(f"fit time {elapsed:.1f} s; budget {BUDGET_S:.0f} s; ratio {elapsed / BUDGET_S:.2f} of the budget")
    return elapsed


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 3000)
