"""How long `neuralpower fit` takes (the goal: under 60 s for a 3000-row table here), on one thread and on all.

Runs the fit the CLI runs (--method all: the polynomial's three target modes, the model tree and both
baselines, for runtime and power) on synthetic conv2d tables (synthetic_table: a known ground truth, not
a measurement): one of ROWS rows, where models are chosen on one validation split, and one of SMALL rows, where
they are chosen by 5-fold cross-validation (a layer type of a short campaign). Each is fitted with
``jobs=1`` and with the cores this process may use; the models are checked to be the same and the speed-up printed.

    python benchmarks/fit_speed.py [ROWS [SMALL]]
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from typing import Any

import pyarrow.csv as pacsv

from neuralpower._args import cores
from neuralpower.models.data import read_measurements
from neuralpower.models.fit import FitOptions, fit_models
from neuralpower.models.synthetic import synthetic_table

BUDGET_S = 60.0


def _fit(path: str, jobs: int | None) -> tuple[float, dict[str, Any]]:
    start = time.perf_counter()
    doc = fit_models(read_measurements([path]), FitOptions(method="all", jobs=jobs))
    return time.perf_counter() - start, {**doc, "created": None}


def main(rows: int = 3000, small: int = 100) -> float:
    threads = cores()
    print(f"threads: 1 and {threads} (the cores this process may use)")
    elapsed = 0.0
    with tempfile.TemporaryDirectory() as d:
        for n in (rows, small):
            path = os.path.join(d, f"conv2d-{n}.csv")
            # every row carries power, so both targets are fitted on the full row count
            pacsv.write_csv(synthetic_table(n, power_fraction=1.0, seed=0), path)
            serial, doc = _fit(path, 1)
            parallel, same = _fit(path, None)
            conv = doc["layer_types"]["conv2d"]
            print(f"rows {n}:")
            for target in ("runtime_ms", "power_w"):
                m = conv[target]["metrics"]
                print(f"  {target}: held-out RMSPE poly {m['poly']['rmspe']:.1f}%, tree {m['tree']['rmspe']:.1f}%")
            print(f"  fit time {serial:.1f} s on 1 thread, {parallel:.1f} s on {threads}: {serial / parallel:.2f}x; "
                  f"the same model: {doc == same}")
            if n == rows:
                elapsed = parallel
                print(f"  budget {BUDGET_S:.0f} s; ratio {parallel / BUDGET_S:.2f} of the budget")
    return elapsed


if __name__ == "__main__":
    main(*(int(a) for a in sys.argv[1:3]))
