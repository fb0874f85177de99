"""The model the speed benchmarks score with: runtime and power fitted by ``neuralpower fit``, every layer type.

Runtime comes from the measured CPU table in the repository (``data/cpu/fp32/layers.csv``). That machine
has no power sensor, so power is drawn from a stated synthetic law (``40 + 3 log1p(flops)`` W with 3 %
noise) before the fit: the values are not a GPU's, but the model has the shape of a real two-target one
(a sparse polynomial per type and target), which is what the evaluator's speed depends on.

    python benchmarks/two_target_model.py OUT.json

The speed benchmarks read the copy in benchmarks/models/two-target-cpu-synthetic-power.json (written by
this script; the fit is deterministic, seed 0).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

ROOT = Path(__file__).resolve().parents[1]
TABLE = ROOT / "data" / "cpu" / "fp32" / "layers.csv"
MODEL = Path(__file__).resolve().parent / "models" / "two-target-cpu-synthetic-power.json"


def power_table(path: str) -> None:
    """Write the CPU table with a synthetic ``power_w`` column to ``path`` (Parquet)."""
    import pyarrow.parquet as pq

    from neuralpower import _evaluator as _ev
    from neuralpower.layers import FEATURES
    from neuralpower.table import read_layer_table

    table = read_layer_table(TABLE)
    flops = np.asarray(_ev.features(table.rows, _ev.info(table.rows)))[:, FEATURES.index("flops")]
    rng = np.random.default_rng(0)
    power = (40.0 + 3.0 * np.log1p(flops)) * (1 + 0.03 * rng.standard_normal(len(flops)))
    import pyarrow.csv as pacsv

    raw = pacsv.read_csv(TABLE)
    raw = raw.set_column(raw.column_names.index("power_w"), "power_w", pa.array(power))
    raw = raw.set_column(raw.column_names.index("energy_mj"), "energy_mj", pc.multiply(raw.column("runtime_ms"),
                                                                                       pa.array(power)))
    pq.write_table(raw, path)


def make(out: str) -> None:
    from neuralpower.cli import main as cli_main

    with tempfile.TemporaryDirectory() as d:
        table = os.path.join(d, "cpu-synthetic-power.parquet")
        power_table(table)
        code = cli_main(["fit", table, "--out", out, "--description",
                         "benchmark model: CPU runtime, synthetic power (not a GPU's)"])
        if code != 0:
            sys.exit(code)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out")
    make(parser.parse_args().out)
