"""Speed of scoring, in one run, with a model that predicts runtime and power (ratios against baselines).

The model: benchmarks/models/two-target-cpu-synthetic-power.json, fitted by `neuralpower fit` (a sparse
polynomial per layer type and target; see benchmarks/two_target_model.py). The tables, as they are:

- CANDIDATES: the example candidates (examples/candidates.csv.gz: 3,000 MobileNetV2/ResNet-style
  architectures, 366,894 layers) repeated with renamed architectures up to about --layers layers. A search
  space repeats layer configurations: the count of distinct layer rows is printed (the evaluator computes
  each distinct row once per thread, a cache of exact rows).
- DISTINCT: as many random conv2d rows, every one different (no repeat: the cache never hits).

Printed:
1. In process, one thread: layers/s of Model.score_rows on each table, against scikit-learn
   (PolynomialFeatures(3) + Lasso per target, predicting from precomputed features) on the same rows.
2. Search loop: model.predict of a 50-layer architecture, against scikit-learn per architecture.
3. End to end: `neuralpower score` CSV to CSV and Parquet to Parquet on CANDIDATES, reading and writing
   included (in this process, after a warm-up run).

    python benchmarks/evaluator_speed.py [--model JSON] [--layers 1000000]

Goals (issue "Scoring at scale"): >= 1e7 layers/s per core in process with runtime and power; >= 2 M
layers/s CSV to CSV and >= 4 M Parquet to Parquet end to end.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
import timeit
import warnings
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

import neuralpower as npw
from neuralpower import _evaluator as _ev
from neuralpower.cli import main as cli_main
from neuralpower.layers import FEATURES, FIELD_INDEX
from neuralpower.models.synthetic import synthetic_table
from neuralpower.stream import TableWriter
from neuralpower.table import _parse

ROOT = Path(__file__).resolve().parents[1]
MODEL = ROOT / "benchmarks" / "models" / "two-target-cpu-synthetic-power.json"


def best(fn: object, number: int, repeat: int = 5) -> float:
    """Seconds per call: the best of ``repeat`` timings of ``number`` calls."""
    return min(timeit.repeat(fn, number=number, repeat=repeat)) / number  # type: ignore[arg-type]


def sklearn_pipelines(features: np.ndarray) -> list[object]:
    """One PolynomialFeatures(3) + Lasso pipeline per target (its speed does not depend on its coefficients)."""
    from sklearn.linear_model import Lasso
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import PolynomialFeatures, StandardScaler

    cols = [FEATURES.index(f) for f in ("batch", "in_channels", "in_h", "out_channels", "out_h", "kernel_h",
                                        "stride_h", "groups", "flops", "bytes_moved")]
    X = features[:, cols]
    pipes = []
    rng = np.random.default_rng(0)
    sample = rng.choice(len(X), size=min(5000, len(X)), replace=False)
    y = rng.random(len(sample))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for _ in ("runtime_ms", "power_w"):
            pipe = make_pipeline(PolynomialFeatures(3), StandardScaler(), Lasso(alpha=1e-3, max_iter=200))
            pipe.fit(X[sample], y)
            pipes.append((pipe, cols))
    return pipes


def sklearn_predict(pipes: list[object], features: np.ndarray) -> np.ndarray:
    runtime = power = None
    for k, (pipe, cols) in enumerate(pipes):  # type: ignore[misc]
        y = pipe.predict(features[:, cols])
        runtime, power = (y, power) if k == 0 else (runtime, y)
    return runtime * power  # type: ignore[operator]


def candidates_table(layers: int) -> pa.Table:
    base = pacsv.read_csv(ROOT / "examples" / "candidates.csv.gz")
    parts = []
    for k in range(max(1, round(layers / base.num_rows))):
        parts.append(base.set_column(0, "arch", pc.binary_join_element_wise(base.column("arch"), f"-{k}", "")))
    return pa.concat_tables(parts)


def distinct_rows(n: int) -> np.ndarray:
    table = synthetic_table(n, seed=1).drop_columns(["runtime_ms", "power_w", "executor", "gpu"])
    rows = _parse("distinct.parquet", "parquet", table).rows
    # every row different: the batch and channel counts made unique per row
    rows = np.ascontiguousarray(rows)
    f = FIELD_INDEX
    rows[:, f["groups"]] = 1
    rows[:, f["batch"]] = 1 + np.arange(n) % 64
    rows[:, f["in_channels"]] = 3 + np.arange(n) // 64 % 509
    rows[:, f["out_channels"]] = 3 + np.arange(n) // (64 * 509) % 509
    assert len(np.unique(rows, axis=0)) == n
    return rows


def batch_rate(model: npw.Model, rows: np.ndarray, per_arch: int) -> float:
    offsets = np.arange(0, len(rows) + 1, per_arch, dtype=np.int64)
    if offsets[-1] != len(rows):
        offsets = np.append(offsets, len(rows))
    model.score_rows(rows[: offsets[10]], offsets[:11])
    return len(rows) / best(lambda: model.score_rows(rows, offsets), number=1, repeat=3)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=str(MODEL), help="model JSON (default: the two-target benchmark model)")
    parser.add_argument("--layers", type=int, default=1_000_000, help="layers of each table (about)")
    args = parser.parse_args()
    model = npw.load_model(args.model)
    print(f"model: {model.name} ({model.executor}, {model.dtype}; runtime and power: {model.power_measured}); "
          f"cpu cores: {os.cpu_count()}")

    table = candidates_table(args.layers)
    with tempfile.TemporaryDirectory() as d:
        csv_path, pq_path = os.path.join(d, "candidates.csv"), os.path.join(d, "candidates.parquet")
        with TableWriter(csv_path) as w:
            w.write(table)
        with TableWriter(pq_path) as w:
            w.write(table)
        layers = npw.read_layer_table(csv_path)
        rows = np.ascontiguousarray(layers.rows)
        n_distinct = len(np.unique(rows, axis=0))
        n_archs = len(set(layers.arch))
        print(f"CANDIDATES: {n_archs:,} architectures, {len(rows):,} layers, {n_distinct:,} distinct layer rows; "
              f"DISTINCT: {len(rows):,} conv2d rows, all different")

        # 1. in process, one thread, validated rows (score_rows checks every row it is given)
        _, offsets, _ = layers.grouping()
        model.score_rows(rows[: offsets[10]], offsets[:11])
        t_cand = best(lambda: model.score_rows(rows, offsets), number=1, repeat=3)
        unique = distinct_rows(len(rows))
        rate_unique = batch_rate(model, unique, 50)
        sk_n = 100_000
        feats = _ev.features(rows[:sk_n], _ev.info(rows[:sk_n]))  # given to scikit-learn precomputed
        pipes = sklearn_pipelines(feats)
        t_sk = best(lambda: sklearn_predict(pipes, feats), number=1, repeat=3)
        sk_rate = sk_n / t_sk
        rate = len(rows) / t_cand
        print(f"1. in process, one thread, runtime and power: CANDIDATES {rate / 1e6:.1f} M layers/s "
              f"({rate / 1e7:.2f}x the 1e7 goal); DISTINCT {rate_unique / 1e6:.1f} M layers/s; scikit-learn "
              f"{sk_rate / 1e6:.3f} M layers/s: {rate / sk_rate:.0f}x and {rate_unique / sk_rate:.0f}x")

        # 2. search loop
        arch = next(a for a in layers.architectures()[:20] if len(a) >= 50)
        arch50 = npw.Architecture("arch50", arch.layers[:50])
        model.predict(arch50)
        t_pred = best(lambda: model.predict(arch50), number=2000)
        t_sk1 = best(lambda: sklearn_predict(pipes, arch50.features()), number=200)
        print(f"2. predict(50 layers): {t_pred * 1e6:.1f} us; scikit-learn per architecture {t_sk1 * 1e6:.0f} us: "
              f"{t_sk1 / t_pred:.0f}x")

        # 3. end to end, reading and writing included
        for src, out, goal in ((csv_path, "scores.csv", 2e6), (pq_path, "scores.parquet", 4e6)):
            dst = os.path.join(d, out)
            cli_main(["score", src, "--model", args.model, "--out", dst])  # warm-up
            times = []
            for _ in range(3):
                start = time.perf_counter()
                assert cli_main(["score", src, "--model", args.model, "--out", dst]) == 0
                times.append(time.perf_counter() - start)
            r = len(rows) / min(times)
            kind = "CSV to CSV" if src.endswith(".csv") else "Parquet to Parquet"
            size = os.path.getsize(src) / 2**20
            print(f"3. score {kind}: {len(rows):,} layers ({size:.0f} MiB) in {min(times):.2f} s = {r / 1e6:.2f} M "
                  f"layers/s ({r / goal:.2f}x the {goal / 1e6:.0f} M/s goal)")


if __name__ == "__main__":
    main()
