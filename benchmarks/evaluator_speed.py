"""Speed of the C++ evaluator against a scikit-learn pipeline, in one run (ratios, not absolute goals alone).

1. Batch: layer predictions (runtime, power and energy) per second on one core, over about a million layers
   of the example candidates, against scikit-learn (PolynomialFeatures + a fitted Lasso per target, the
   NeuralPower recipe done the usual way) predicting the same layers from precomputed features.
2. Search loop: ``model.predict(arch)`` for a 50-layer architecture, against a per-architecture
   scikit-learn predict of the same layers.
3. End to end: ``neuralpower score`` on a one-million-layer CSV, reading and writing included.

    python benchmarks/evaluator_speed.py [--model NAME_OR_JSON] [--layers 1000000]

Goals (issue 5): batch >= 5 M layers/s and >= 50x scikit-learn; predict <= 20 us and >= 50x; score >= 1 M
layers/s.
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

import neuralpower as npw
from neuralpower import _evaluator as _ev
from neuralpower.cli import main as cli_main
from neuralpower.layers import FEATURES

ROOT = Path(__file__).resolve().parents[1]


def best(fn: object, number: int, repeat: int = 5) -> float:
    """Seconds per call: the best of ``repeat`` timings of ``number`` calls."""
    return min(timeit.repeat(fn, number=number, repeat=repeat)) / number  # type: ignore[arg-type]


def sklearn_pipelines(features: np.ndarray) -> list[object]:
    """One PolynomialFeatures(3) + Lasso pipeline per target, fitted to the model's own predictions."""
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None, help="model name or JSON (default: the bundled default)")
    parser.add_argument("--layers", type=int, default=1_000_000, help="layers in the batch and CSV runs")
    args = parser.parse_args()
    model = npw.load_model(args.model)
    print(f"model: {model.name} ({model.gpu}, {model.executor}, {model.dtype}); cpu cores: {os.cpu_count()}")

    candidates = npw.read_layer_table(ROOT / "examples" / "candidates.csv.gz")
    archs = candidates.architectures()
    reps = max(1, args.layers // len(candidates))
    rows = np.ascontiguousarray(np.tile(candidates.rows, (reps, 1)))
    _, offsets, _ = candidates.grouping()
    offsets = np.concatenate([offsets[:-1] + k * len(candidates) for k in range(reps)] + [[len(rows)]]).astype(np.int64)

    # 1. batch
    model.score_rows(rows[: offsets[100]], offsets[:101])
    t_batch = best(lambda: model.score_rows(rows, offsets), number=1, repeat=3)
    batch_rate = len(rows) / t_batch
    sk_n = 100_000
    # scikit-learn is given the features precomputed (which favours it): our evaluator computes them itself
    feats = _ev.features(rows[:sk_n], _ev.info(rows[:sk_n]))
    pipes = sklearn_pipelines(feats)
    t_sk = best(lambda: sklearn_predict(pipes, feats), number=1, repeat=3)
    sk_rate = sk_n / t_sk
    print(f"batch: {batch_rate / 1e6:.2f} M layers/s on one thread ({len(rows):,} layers); scikit-learn "
          f"{sk_rate / 1e6:.3f} M layers/s (features given); ratio {batch_rate / sk_rate:.0f}x "
          f"(goals: >= 5 M/s, >= 50x)")
    # score_rows validates every row it is given (rows from outside); `score` evaluates the rows a layer table
    # has already validated without checking them again: that path, on the same rows
    t_trusted = best(
        lambda: model._evaluate(rows, offsets, per_layer=False, threads=1, validate=False), number=1, repeat=3
    )
    print(f"batch of validated rows (the path `score` takes): {len(rows) / t_trusted / 1e6:.2f} M layers/s; "
          f"validation costs {100 * (t_batch / t_trusted - 1):.0f}% of that")

    # 2. search loop: a 50-layer architecture
    arch = next(a for a in archs if len(a) >= 50)
    arch50 = npw.Architecture("arch50", arch.layers[:50])
    model.predict(arch50)
    t_pred = best(lambda: model.predict(arch50), number=2000)

    def sk_one() -> object:
        return sklearn_predict(pipes, arch50.features())

    t_sk1 = best(sk_one, number=200)
    print(f"predict(50 layers): {t_pred * 1e6:.1f} us per call; scikit-learn per architecture "
          f"{t_sk1 * 1e6:.0f} us; ratio {t_sk1 / t_pred:.0f}x (goals: <= 20 us, >= 50x)")

    # 3. end to end: neuralpower score on a one-million-layer CSV
    with tempfile.TemporaryDirectory() as d:
        big = os.path.join(d, "big.csv")
        out = os.path.join(d, "scores.csv")
        import pyarrow as pa
        import pyarrow.compute as pc
        import pyarrow.csv as pacsv

        from neuralpower.table import read_layer_table, write_arrow

        base = pacsv.read_csv(str(ROOT / "examples" / "candidates.csv.gz"))
        parts = []
        for k in range(reps):
            arch_col = pc.binary_join_element_wise(base.column("arch"), pa.scalar(f"-{k}"), "")
            parts.append(base.set_column(0, "arch", arch_col))
        write_arrow(pa.concat_tables(parts), big)
        n = len(read_layer_table(big))
        start = time.perf_counter()
        code = cli_main(["score", big, "--model", args.model or "default", "--out", out])
        elapsed = time.perf_counter() - start
        assert code == 0
        size = os.path.getsize(big) / 2**20
    print(f"score end to end: {n:,} layers ({size:.0f} MiB CSV) in {elapsed:.2f} s = {n / elapsed / 1e6:.2f} M "
          f"layers/s, reading and writing included (goal: >= 1 M/s)")


if __name__ == "__main__":
    main()
