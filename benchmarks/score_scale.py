"""`neuralpower score` on a table far larger than memory: time and peak memory of the command.

Writes a layer table of about LAYERS layers (the example candidates, 366,894 layers, repeated with renamed
architectures; CSV or Parquet, written block by block), runs `neuralpower score TABLE --out scores.parquet`
as a separate process, and prints its wall time, layers per second and peak resident memory (the goal of
issue "Scoring at scale": at most 1 GB, whatever the table's size), and checks the scores it wrote (one row
per architecture, every layer counted).

    python benchmarks/score_scale.py [--layers 100000000] [--format parquet|csv] [--dir DIR]

A 100M-layer CSV takes about 9 GiB of disk, the Parquet file about 0.3 GiB.
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from neuralpower.stream import TableWriter

ROOT = Path(__file__).resolve().parents[1]
MODEL = ROOT / "benchmarks" / "models" / "two-target-cpu-synthetic-power.json"
GOAL_BYTES = 1 << 30


def write_table(path: str, layers: int) -> tuple[int, int]:
    base = pacsv.read_csv(ROOT / "examples" / "candidates.csv.gz")
    archs = len(set(base.column("arch").to_pylist()))
    copies = max(1, round(layers / base.num_rows))
    with TableWriter(path) as w:
        for k in range(copies):
            w.write(base.set_column(0, "arch", pc.binary_join_element_wise(base.column("arch"), f"-{k}", "")))
    return copies * base.num_rows, copies * archs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", type=int, default=100_000_000)
    parser.add_argument("--format", choices=["parquet", "csv"], default="parquet")
    parser.add_argument("--dir", default=None, help="where to write the table (default: a temporary folder)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(dir=args.dir) as d:
        table = os.path.join(d, f"layers.{args.format}")
        out = os.path.join(d, "scores.parquet")
        start = time.perf_counter()
        n, archs = write_table(table, args.layers)
        size = os.path.getsize(table)
        print(f"wrote {n:,} layers, {archs:,} architectures ({size / 2**30:.2f} GiB {args.format}) in "
              f"{time.perf_counter() - start:.0f} s")
        start = time.perf_counter()
        proc = subprocess.run(
            [sys.executable, "-m", "neuralpower.cli", "score", table, "--model", str(MODEL), "--out", out],
            capture_output=True, text=True,
        )
        elapsed = time.perf_counter() - start
        if proc.returncode != 0:
            sys.exit(f"score failed: {proc.stderr.strip()}")
        peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024  # kilobytes on Linux
        scores = pq.read_table(out, columns=["layers"])
        assert scores.num_rows == archs and pc.sum(scores.column("layers")).as_py() == n
        print(f"score: {n:,} layers in {elapsed:.1f} s = {n / elapsed / 1e6:.2f} M layers/s (a new process: "
              f"start-up included); peak resident memory {peak / 2**20:.0f} MiB ({peak / GOAL_BYTES:.2f}x the "
              f"1 GiB goal); {scores.num_rows:,} architectures scored, every layer counted")


if __name__ == "__main__":
    main()
