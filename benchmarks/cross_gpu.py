"""How well a GPU's bundled model carries to another GPU through their datasheets, leave-one-GPU-out.

For each of NeuSight's five GPUs (``data/neusight``: P100, P4, T4, V100, A100, fp32 operators), the model
`--gpu` would use if that GPU had no bundled model of its own (``neuralpower.models.carry``: the nearest of the
other four GPUs' bundled fp32 models, runtime scaled by the ratio of peak fp32 throughputs for GEMM-shaped types
and of memory bandwidths for the others) predicts every operator that GPU measured. Printed: per GPU, the GPU it
was carried from, and per layer type the MAPE over that GPU's operators (none of which the carried model saw), with
the MAPE of the GPU's own bundled model on the same rows for scale (its own fit saw four fifths of them).

    python benchmarks/cross_gpu.py [DATA_DIR]      (default: data; DATA_DIR/neusight holds the tables)
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

from neuralpower.evaluator import Model, bundled_models
from neuralpower.gpus import find_gpu
from neuralpower.layers import LAYER_TYPES
from neuralpower.models.bundle import NEUSIGHT
from neuralpower.models.carry import carry_model
from neuralpower.neusight import import_neusight
from neuralpower.table import _parse


def main(argv: list[str]) -> int:
    data = Path(argv[0] if argv else "data")
    if not (data / "neusight").is_dir():
        print(f"{data / 'neusight'}: no such folder", file=sys.stderr)
        return 2
    tables = import_neusight([data / "neusight"]).tables
    docs = {name: json.loads(path.read_text()) for name, path in bundled_models().items()
            if name in {f"{key}-fp32" for key, _ in NEUSIGHT}}
    types = ("linear", "matmul", "conv2d", "layernorm", "softmax", "relu", "gelu", "add", "mul")
    print(f"{'GPU':<24} {'carried from':<22} " + " ".join(f"{t:>9}" for t in types) + f" {'all':>9}")
    for key, table_name in NEUSIGHT:
        if table_name not in tables:  # a folder holding some of the GPUs' tables (the tests' sample)
            continue
        gpu = find_gpu(key)
        name, doc = carry_model(gpu, "fp32", docs)
        carried, own = Model(doc), Model(docs[f"{key}-fp32"])
        table = tables[table_name]
        rows = np.ascontiguousarray(_parse(table_name, "csv", table).rows)
        y = table.column("runtime_ms").to_numpy().astype(np.float64)
        got = {m: np.asarray(model._compiled.evaluate(rows, False)["runtime_ms"]) for m, model in
               (("carried", carried), ("own", own))}
        cells, all_errors = [], []
        for t in types:
            k = rows[:, 0] == LAYER_TYPES.index(t)
            if not k.any() or t not in carried.layer_types:
                cells.append(f"{'-':>9}")
                continue
            err = np.abs(got["carried"][k] / y[k] - 1)
            all_errors.append(err)
            own_mape = 100 * np.mean(np.abs(got["own"][k] / y[k] - 1))
            cells.append(f"{100 * err.mean():>5.0f}/{own_mape:<3.0f}")
        total = 100 * np.concatenate(all_errors).mean()
        print(f"{gpu.name:<24} {name.split('from ')[1].rstrip(')'):<22} " + " ".join(cells) + f" {total:>8.0f}%")
    print("cells: MAPE % of the carried model / of the GPU's own bundled model, over every operator the GPU measured")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
