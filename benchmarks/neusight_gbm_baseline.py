"""A yardstick for the layer models on real GPUs: gradient boosting (scikit-learn) on NeuSight's public tables.

For each GPU of NeuSight's operator tables (`neuralpower import-neusight`), conv2d and linear rows: the layer
model features that vary (log(1 + |x|)), a random fifth of the configurations held out (with all their
rows), scikit-learn's HistGradientBoostingRegressor (800 rounds, learning rate 0.05) on log runtime, and the
test RMSPE and MAPE, then the medians over the GPUs. It is a different split from `fit`'s (compare the
medians with `benchmarks/neusight_accuracy.py`, not row by row); it shows how much a flexible, slow
(not C++-evaluated) model gets from the same features. The last column gives the model the kernel that ran
(NeuSight's `Kernel Name` and grid, known only after running, so no predictor may use them): what is left
then is beyond predicting which kernel cuBLAS or cuDNN picks, a floor for any model of the configuration.
The kernel column says how often a gradient-boosted classifier on the same features (and the sizes'
divisibility by 2, 4, 8 and 16) guesses that kernel (`Kernel Name`) on held-out configurations, against how
often the most common kernel ran: where the kernel cannot be told from the configuration and kernels run at
different speeds, no model of the configuration gets close to the column before it.

    python benchmarks/neusight_gbm_baseline.py [NEUSIGHT_DIR]      (default: ../shared/data/neusight)
"""

from __future__ import annotations

import os
import statistics
import sys
import warnings

import numpy as np
import pyarrow.compute as pc
import pyarrow.csv as pacsv

from neuralpower import _evaluator as _ev
from neuralpower.neusight import import_neusight
from neuralpower.table import _parse

TYPES = ("conv2d", "linear")
_NOT_LAYER = ["runtime_ms", "gpu", "executor", "origin", "drift_ms"]
_FOLDERS = {"conv2d": "conv", "linear": "linear"}


def rmspe(y: np.ndarray, p: np.ndarray) -> float:
    return float(100 * np.sqrt(np.mean(((p - y) / y) ** 2)))


def main(source: str) -> None:
    result = import_neusight([source])
    medians: dict[str, list[float]] = {t: [] for t in TYPES}
    oracle: dict[str, list[float]] = {t: [] for t in TYPES}
    print(f"{'gpu':<22} {'type':<8} {'configs':>7} {'RMSPE':>6} {'MAPE':>6} {'with the kernel':>15} "
          f"{'kernel guessed':>14} {'most common':>11}")
    for name, table in result.tables.items():
        gpu = table.column("gpu")[0].as_py()
        for t in TYPES:
            rows_of = table.filter(pc.equal(table.column("type"), t))
            if rows_of.num_rows < 50:
                continue
            y = np.asarray(rows_of.column("runtime_ms").to_numpy(), dtype=float)
            layers = rows_of.drop_columns([c for c in _NOT_LAYER if c in rows_of.column_names])
            rows = np.ascontiguousarray(_parse("neusight.csv", "csv", layers).rows)
            features = _ev.features(rows, _ev.info(rows))
            varying = [i for i in range(features.shape[1]) if np.ptp(features[:, i]) > 0]
            X = np.log1p(np.abs(features[:, varying]))
            # a fifth of the configurations (all their rows) held out
            _, group = np.unique(rows, axis=0, return_inverse=True)
            group = group.reshape(-1)
            held = np.random.default_rng(0).permutation(group.max() + 1)[: (group.max() + 1) // 5]
            is_test = np.isin(group, held)
            test, train = np.flatnonzero(is_test), np.flatnonzero(~is_test)
            p = fit_predict(X, y, train, test)
            error = rmspe(y[test], p)
            medians[t].append(error)
            mape = 100 * float(np.mean(np.abs(p - y[test]) / y[test]))
            # the kernel that ran: the source file's rows of this type, in the same order
            raw = pacsv.read_csv(os.path.join(source, _FOLDERS[t], name + ".gz"))
            kernel = raw.column("Kernel Name").dictionary_encode().combine_chunks().indices.to_numpy()
            grid = np.column_stack([raw.column(c).to_numpy() for c in ("Grid x", "Grid y", "Grid z")])
            with_kernel = rmspe(y[test], fit_predict(np.column_stack([X, kernel, np.log1p(grid)]), y, train, test))
            oracle[t].append(with_kernel)
            guessed, common = kernel_guessed(X, rows, kernel, train, test)
            print(f"{gpu:<22} {t:<8} {len(y):>7} {error:>5.1f}% {mape:>5.1f}% {with_kernel:>14.1f}% "
                  f"{guessed:>13.1f}% {common:>10.1f}%")
    for t in TYPES:
        if medians[t]:
            print(f"median over {len(medians[t])} GPUs, {t}: test RMSPE {statistics.median(medians[t]):.1f} % "
                  f"({statistics.median(oracle[t]):.1f} % with the kernel that ran)")


def kernel_guessed(X: np.ndarray, rows: np.ndarray, kernel: np.ndarray, train: np.ndarray,
                   test: np.ndarray) -> tuple[float, float]:
    """How often (%) a classifier of the configuration guesses the kernel that ran on the test rows, and how
    often the training rows' most common kernel ran there."""
    from sklearn.ensemble import HistGradientBoostingClassifier

    varying = rows[:, np.ptp(rows, axis=0) > 0]
    divisible = np.column_stack([varying % q == 0 for q in (2, 4, 8, 16)])
    features = np.column_stack([X, divisible])
    model = HistGradientBoostingClassifier(max_iter=300)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model.fit(features[train], kernel[train])
    guessed = 100 * float(np.mean(model.predict(features[test]) == kernel[test]))
    common = 100 * float(np.mean(kernel[test] == np.bincount(kernel[train]).argmax()))
    return guessed, common


def fit_predict(X: np.ndarray, y: np.ndarray, train: np.ndarray, test: np.ndarray) -> np.ndarray:
    from sklearn.ensemble import HistGradientBoostingRegressor

    model = HistGradientBoostingRegressor(max_iter=800, learning_rate=0.05, l2_regularization=1.0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model.fit(X[train], np.log(y[train]))
    return np.asarray(np.exp(model.predict(X[test])))


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "../shared/data/neusight")
