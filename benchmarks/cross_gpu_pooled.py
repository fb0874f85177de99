"""A cross-GPU model tried and not shipped: pooled gradient-boosted trees over the datasheet, leave-one-GPU-out.

For each of NeuSight's five GPUs (``data/neusight``, fp32 operators), per layer type, gradient-boosted trees
(scikit-learn's HistGradientBoostingRegressor) are fitted on the other four GPUs' operators: the target is the
logarithm of runtime over the layer's roofline time on its GPU (max(FLOPs / peak fp32, bytes moved / memory
bandwidth)), the features the layer's own (log) and the GPU's datasheet (log peak fp32, log bandwidth, SMs, L2, log
power limit, boost clock). The held-out GPU's operators are then predicted from its datasheet alone. Printed: per
GPU and type, the MAPE of this pooled model / of the other four GPUs' bundled models carried through the datasheets
and blended (what ``--gpu`` does, ``neuralpower.models.carry``), over every operator the GPU measured.

    python benchmarks/cross_gpu_pooled.py [DATA_DIR]      (default: data; minutes)
"""

from __future__ import annotations

import sys

import numpy as np
from cross_gpu import neusight_inputs  # (benchmarks/, beside this script)

from neuralpower import _evaluator as _ev
from neuralpower.evaluator import Model
from neuralpower.gpus import GPU, find_gpu
from neuralpower.layers import FEATURES, LAYER_TYPES
from neuralpower.models.bundle import NEUSIGHT
from neuralpower.models.carry import blend_model
from neuralpower.table import _parse

TYPES = ("linear", "matmul", "layernorm", "softmax", "relu", "gelu", "add", "mul")


def _datasheet(g: GPU) -> list[float]:
    return [float(np.log(g.fp32_tflops)), float(np.log(g.memory_bandwidth_gb_s)), g.sms, g.l2_cache_mb,
            float(np.log(g.power_limit_w)), g.boost_clock_mhz]


def _roofline_ms(F: np.ndarray, g: GPU) -> np.ndarray:
    flops, moved = F[:, FEATURES.index("flops")], F[:, FEATURES.index("bytes_moved")]
    return np.maximum(flops / (g.fp32_tflops * 1e9), moved / (g.memory_bandwidth_gb_s * 1e6)) + 1e-6


def _inputs(F: np.ndarray, t: str, g: GPU) -> np.ndarray:
    cols = list(_ev.type_features(LAYER_TYPES.index(t)))
    return np.hstack([np.log1p(F[:, cols]), np.tile(_datasheet(g), (len(F), 1))])


def main(argv: list[str]) -> int:
    from sklearn.ensemble import HistGradientBoostingRegressor

    inputs = neusight_inputs(argv)
    if inputs is None:
        return 2
    _, tables, docs = inputs
    gpus = {}
    for key, table_name in NEUSIGHT:
        table = tables[table_name]
        rows = np.ascontiguousarray(_parse(table_name, "csv", table).rows)
        gpus[key] = (rows, _ev.features(rows, _ev.info(rows)), table.column("runtime_ms").to_numpy(), find_gpu(key))
    print(f"{'GPU':<24} " + " ".join(f"{t:>9}" for t in TYPES))
    for target, (rows, F, y, g) in gpus.items():
        carried = Model(blend_model(g, "fp32", {k: v for k, v in docs.items() if k != f"{target}-fp32"})[1])
        got = np.asarray(carried._compiled.evaluate(rows, False)["runtime_ms"])
        cells = []
        for t in TYPES:
            code = LAYER_TYPES.index(t)
            X = np.vstack([_inputs(o[1][o[0][:, 0] == code], t, o[3]) for k, o in gpus.items() if k != target])
            Y = np.concatenate([np.log(o[2][o[0][:, 0] == code] / _roofline_ms(o[1][o[0][:, 0] == code], o[3]))
                                for k, o in gpus.items() if k != target])
            model = HistGradientBoostingRegressor(max_iter=400, learning_rate=0.08, max_leaf_nodes=63, random_state=0)
            model.fit(X, Y)
            k = rows[:, 0] == code
            pooled = np.exp(model.predict(_inputs(F[k], t, g))) * _roofline_ms(F[k], g)
            own = 100 * np.mean(np.abs(got[k] / y[k] - 1))
            cells.append(f"{100 * np.mean(np.abs(pooled / y[k] - 1)):>4.0f}/{own:<4.0f}")
        print(f"{g.name:<24} " + " ".join(cells), flush=True)
    print("cells: MAPE % of the pooled model / of the other GPUs' models carried and blended (--gpu), per operator")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
