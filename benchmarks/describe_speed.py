"""How long `neuralpower describe` takes on one network of a million layers, against the object path.

Writes a layer table of one architecture with LAYERS rows (conv2d, relu, batchnorm2d and linear layers of
varied sizes), then times, in this process and with output to a null sink:

- `describe TABLE` in each format (table, json, csv): the table read block by block and written part by part,
  every column made by pyarrow (neuralpower.describe.describe_table);
- for comparison, on the same table in the same run: the whole table read at once into memory and listed as
  one part (`Listing.from_table` then its `text()`, `write_json`, `write_csv`: the same formatting, without
  the blocks).

It prints seconds per run, layers per second, the ratio of the in-memory path to `describe`, and the ratio
to the goal of 2 s per million layers (issue "Scoring at scale").

    python benchmarks/describe_speed.py [LAYERS]
"""

from __future__ import annotations

import contextlib
import io
import os
import sys
import tempfile
import time

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv

from neuralpower import read_layer_table
from neuralpower.cli import main as cli
from neuralpower.describe import Listing

GOAL_S_PER_MILLION = 2.0


def _table(n: int, path: str) -> None:
    rng = np.random.default_rng(0)
    kind = rng.integers(0, 4, n)
    channels = rng.choice([16, 24, 32, 64, 96, 128], n)
    size = rng.choice([7, 14, 28], n)
    conv, linear = kind == 0, kind == 3
    types = np.array(["conv2d", "relu", "batchnorm2d", "linear"])[kind]

    def only(mask: np.ndarray, values: np.ndarray) -> pa.Array:
        return pa.array(values, pa.int64(), mask=~mask)

    table = pa.table(
        {
            "arch": pa.array(["net"] * n),
            "type": pa.array(types),
            "batch": pa.array(np.ones(n, dtype=np.int64)),
            "in_channels": only(~linear, channels),
            "in_h": only(~linear, size),
            "in_w": only(~linear, size),
            "out_channels": only(conv, channels),
            "kernel": only(conv, np.full(n, 3)),
            "padding": only(conv, np.ones(n, dtype=np.int64)),
            "in_features": only(linear, channels * 4),
            "out_features": only(linear, channels),
        }
    )
    pacsv.write_csv(table, path)


def _time(run: object) -> float:
    start = time.perf_counter()
    sink = io.TextIOWrapper(io.BytesIO(), encoding="utf-8")
    with contextlib.redirect_stdout(sink):
        run()  # type: ignore[operator]
    return time.perf_counter() - start


def main(layers: int = 1_000_000) -> None:
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "net.csv")
        _table(layers, path)
        mib = os.path.getsize(path) / 2**20
        print(f"one architecture of {layers:,} layers ({mib:.0f} MiB CSV), cpus {os.cpu_count()}")
        goal = GOAL_S_PER_MILLION * layers / 1e6
        for fmt in ("table", "json", "csv"):
            ours = min(_time(lambda fmt=fmt: cli(["describe", path, "--format", fmt])) for _ in range(2))

            def baseline(fmt: str = fmt) -> None:
                listing = Listing.from_table(read_layer_table(path), path, None)
                if fmt == "table":
                    print(listing.text())
                elif fmt == "json":
                    listing.write_json(sys.stdout)
                else:
                    listing.write_csv(sys.stdout)

            base = _time(baseline)
            print(
                f"  describe --format {fmt}: {ours:.2f} s ({layers / ours / 1e6:.2f} M layers/s); whole table in "
                f"memory {base:.2f} s ({base / ours:.2f}x); against the {goal:.1f} s goal: {ours / goal:.2f}"
            )


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 1_000_000)
