"""How well a GPU's bundled model carries to another GPU through their datasheets, leave-one-GPU-out.

For each of NeuSight's five GPUs (``data/neusight``: P100, P4, T4, V100, A100, fp32 operators), the model
`--gpu` would use if that GPU had no bundled model of its own (``neuralpower.models.carry``: the nearest of the
other four GPUs' bundled fp32 models, runtime scaled by the ratio of peak fp32 throughputs for GEMM-shaped types
and of memory bandwidths for the others) predicts every operator that GPU measured. Printed: per GPU, the GPU it
was carried from, and per layer type the MAPE over that GPU's operators (none of which the carried model saw), with
the MAPE of the GPU's own bundled model on the same rows for scale (its own fit saw four fifths of them).

Then the same, on whole networks (``DATA_DIR/neusight-networks/measured``: NeuSight's end-to-end runs of BERT,
GPT-2, GPT-3 and OPT on each GPU, built by the zoo): per GPU the runtime MAPE of the carried model, of the GPU's own
bundled model and of NeuSight's prediction (``predicted/<gpu>/neusight``; NeuSight's fit saw every one of the five
GPUs, as our own models did).

    python benchmarks/cross_gpu.py [DATA_DIR]      (default: data; DATA_DIR/neusight holds the tables)
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

from neuralpower.evaluator import Model, bundled_models
from neuralpower.gpus import find_gpu
from neuralpower.layers import LAYER_TYPES
from neuralpower.models.bundle import NEUSIGHT
from neuralpower.models.carry import carry_model
from neuralpower.neusight import import_neusight
from neuralpower.neusight_networks import validate_neusight
from neuralpower.table import _parse


def neusight_inputs(argv: list[str]) -> tuple[Path, dict[str, Any], dict[str, dict[str, Any]]] | None:
    """The data folder (argv[0], default data), NeuSight's imported operator tables and the bundled fp32 models of its
    GPUs; None (said on stderr) without the tables."""
    data = Path(argv[0] if argv else "data")
    if not (data / "neusight").is_dir():
        print(f"{data / 'neusight'}: no such folder", file=sys.stderr)
        return None
    tables = import_neusight([data / "neusight"]).tables
    docs = {name: json.loads(path.read_text()) for name, path in bundled_models().items()
            if name in {f"{key}-fp32" for key, _ in NEUSIGHT}}
    return data, tables, docs


def main(argv: list[str]) -> int:
    inputs = neusight_inputs(argv)
    if inputs is None:
        return 2
    data, tables, docs = inputs
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
    networks(data, docs)
    return 0


def networks(data: Path, docs: dict[str, dict[str, Any]]) -> None:
    """Leave-one-GPU-out on NeuSight's whole networks: the carried model, the GPU's own, NeuSight's."""
    measured, predicted = data / "neusight-networks" / "measured", data / "neusight-networks" / "predicted"
    if not measured.is_dir():
        return
    print(f"\n{'GPU':<24} {'networks':>8} {'carried':>8} {'own':>8} {'NeuSight':>9}")
    for folder in sorted(p for p in measured.iterdir() if p.is_dir()):
        gpu = find_gpu(folder.name)
        if f"{gpu.key}-fp32" not in docs:
            continue
        others = {k: v for k, v in docs.items() if k != f"{gpu.key}-fp32"}
        name, doc = carry_model(gpu, "fp32", others)
        mape = {}
        for label, model in (("carried", Model(doc, name=name)), ("own", Model(docs[f"{gpu.key}-fp32"]))):
            rec = validate_neusight([folder], model, peers=predicted if predicted.is_dir() else None)
            mape[label] = rec["runtime_mape"]
            neusight = rec["peers"].get("neusight", {}).get("runtime_mape")
        peer = "-" if neusight is None else f"{neusight:.1f}%"
        print(f"{gpu.name:<24} {rec['networks']:>8} {mape['carried']:>7.1f}% {mape['own']:>7.1f}% {peer:>9}"
              f"  (carried from {name.split('from ')[1].rstrip(')')})")
        for source in sorted(others):  # carried from each of the other GPUs instead
            _, doc = carry_model(gpu, "fp32", {source: others[source]})
            mape[source] = validate_neusight([folder], Model(doc))["runtime_mape"]
        print(" " * 25 + "from each: " + ", ".join(f"{k.removesuffix('-fp32')} {mape[k]:.1f}%" for k in sorted(others)))
    print("runtime MAPE over the GPU's networks; carried: from the nearest of the other four GPUs' models")


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
