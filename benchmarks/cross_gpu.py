"""How well a GPU's bundled model carries to another GPU through their datasheets, leave-one-GPU-out.

For each of NeuSight's five GPUs (``data/neusight``: P100, P4, T4, V100, A100, fp32 operators), the model
`--gpu` would use if that GPU had no bundled model of its own (``neuralpower.models.carry``: the other four GPUs'
bundled fp32 models, each with its runtime scaled by the ratio of peak fp32 throughputs for GEMM-shaped types and of
memory bandwidths for the others, blended layer by layer by how near each GPU's datasheet is) predicts every
operator that GPU measured. Printed: per GPU, the GPUs blended, and per layer type the MAPE over that GPU's
operators (none of which the blended models saw), with the MAPE of the GPU's own bundled model on the same rows for
scale (its own fit saw four fifths of them). Then, per GPU and type, how many of its operators a nominal 90 %
interval of the carried model would hold, were it calibrated on the other GPUs' carried operators.

Then on whole networks (``DATA_DIR/neusight-networks/measured``: NeuSight's end-to-end runs of BERT, GPT-2, GPT-3
and OPT on each GPU, built by the zoo), per GPU the runtime MAPE of: the blend with the shipped weights (chosen on
all five GPUs, this one included, so in-sample for its three numbers); the blend with the weights chosen again from
the other four GPUs only (each predicted from the remaining three: nothing of the held-out GPU chooses them); the
nearest GPU's model alone; the GPU's own bundled model; NeuSight's prediction (``predicted/<gpu>/neusight``;
NeuSight's fit saw every one of the five GPUs, as our own models did). The blend of the shipped weights is checked to
equal what ``--gpu`` predicts.

    python benchmarks/cross_gpu.py [DATA_DIR]      (default: data; DATA_DIR/neusight holds the tables)
"""

from __future__ import annotations

import itertools
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

from neuralpower import zoo
from neuralpower.evaluator import Model, bundled_models
from neuralpower.gpus import find_gpu
from neuralpower.layers import LAYER_TYPES
from neuralpower.models.bundle import NEUSIGHT
from neuralpower.models.carry import (
    ARCHITECTURE_WEIGHT,
    BLEND_TAU,
    POWER_LIMIT_WEIGHT,
    blend_model,
    carry_model,
    source_weights,
)
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
    print(f"{'GPU':<24} {'blended from':<40} " + " ".join(f"{t:>9}" for t in types) + f" {'all':>9}")
    residuals: dict[str, tuple[np.ndarray, np.ndarray]] = {}  # per GPU: type codes, log(measured / carried)
    for key, table_name in NEUSIGHT:
        if table_name not in tables:  # a folder holding some of the GPUs' tables (the tests' sample)
            continue
        gpu = find_gpu(key)
        name, doc = blend_model(gpu, "fp32", docs)
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
        print(f"{gpu.name:<24} {name.split('from ')[1].rstrip(')').replace('-fp32', ''):<40} " + " ".join(cells)
              + f" {total:>8.0f}%")
        with np.errstate(divide="ignore", invalid="ignore"):
            residuals[key] = rows[:, 0], np.log(y / got["carried"])
    print("cells: MAPE % of the carried model / of the GPU's own bundled model, over every operator the GPU measured")
    intervals(residuals, types)
    networks(data, docs)
    return 0


def intervals(residuals: dict[str, tuple[np.ndarray, np.ndarray]], types: tuple[str, ...]) -> None:
    """Could a carried model have intervals? Per held-out GPU and type, the share of its operators within a 90 %
    interval taken from the other GPUs' carried residuals (their 5th to 95th percentiles of log measured/carried)."""
    print(f"\n{'GPU':<24} " + " ".join(f"{t:>9}" for t in types))
    for key, (codes, r) in residuals.items():
        cells = []
        for t in types:
            code = LAYER_TYPES.index(t)
            mine = r[codes == code]
            others = np.concatenate([o[1][o[0] == code] for k, o in residuals.items() if k != key] or [np.zeros(0)])
            others, mine = others[np.isfinite(others)], mine[np.isfinite(mine)]
            if not len(mine) or not len(others):
                cells.append(f"{'-':>9}")
                continue
            lo, hi = np.quantile(others, [0.05, 0.95])
            cells.append(f"{100 * np.mean((mine >= min(lo, 0)) & (mine <= max(hi, 0))):>8.0f}%")
        print(f"{find_gpu(key).name:<24} " + " ".join(cells))
    print("cells: held-out coverage of a nominal 90 % interval of the carried model, calibrated on the other GPUs' "
          "operators (a carried model's errors are the GPU's, not the layer's: they do not carry as an interval)")


def networks(data: Path, docs: dict[str, dict[str, Any]]) -> None:
    """Leave-one-GPU-out on NeuSight's whole networks: the blend of the other four GPUs' models (with the shipped
    weights, and with the weights chosen again from the other four GPUs only), the nearest one alone, the GPU's own
    model, NeuSight's."""
    measured, predicted = data / "neusight-networks" / "measured", data / "neusight-networks" / "predicted"
    if not measured.is_dir():
        return
    folders = [p for p in sorted(measured.iterdir()) if p.is_dir() and f"{find_gpu(p.name).key}-fp32" in docs]
    gpus = {folder.name: find_gpu(folder.name) for folder in folders}
    cases: dict[str, list[dict[str, Any]]] = {}
    layers: dict[tuple[str, str], list[np.ndarray]] = {}  # (GPU folder, source model): each case's layer runtimes
    own, neusight = {}, {}
    for folder in folders:
        gpu = gpus[folder.name]
        rec = validate_neusight([folder], Model(docs[f"{gpu.key}-fp32"]),
                                peers=predicted if predicted.is_dir() else None)
        cases[folder.name], own[folder.name] = rec["cases"], rec["runtime_mape"]
        neusight[folder.name] = rec["peers"].get("neusight", {}).get("runtime_mape")
        archs = [zoo.build(c["zoo"], batch=c["batch"], seq_len=c["seq_len"], dtype="fp32")
                 for c in rec["cases"]]
        for source in docs:
            if source != f"{gpu.key}-fp32":
                model = Model(carry_model(gpu, "fp32", {source: docs[source]})[1])
                layers[folder.name, source] = [model.predict(a).layer_runtime_ms for a in archs]

    def mape(folder: str, sources: list[tuple[str, Any, float]]) -> float:
        """Runtime MAPE over a GPU's networks of the blend of ``sources`` (name, GPU, weight), layer by layer."""
        errors = []
        for k, c in enumerate(cases[folder]):
            log = sum(w * np.log(layers[folder, name][k]) for name, _, w in sources) / sum(w for _, _, w in sources)
            errors.append(abs(np.exp(log).sum() / c["measured_ms"] - 1))
        return 100 * float(np.mean(errors))

    def weights(folder: str, exclude: tuple[str, ...],
                theta: tuple[float, float, float]) -> list[tuple[str, Any, float]]:
        tau, power_limit, architecture = theta
        return source_weights(gpus[folder], "fp32", docs, exclude=exclude, tau=tau, power_limit_weight=power_limit,
                              architecture_weight=architecture)

    grid = list(itertools.product((0.25, 0.5, 1.0, 2.0), (0.0, 0.5, 1.0), (0.0, 0.5, 1.0)))
    shipped = (BLEND_TAU, POWER_LIMIT_WEIGHT, ARCHITECTURE_WEIGHT)
    print(f"\n{'GPU':<24} {'networks':>8} {'blend':>8} {'nested':>8} {'nearest':>8} {'own':>8} {'NeuSight':>9}")
    for folder in cases:
        gpu = gpus[folder]
        train = [f for f in cases if f != folder]

        def inner(theta: tuple[float, float, float], key: str = gpu.key, train: list[str] = train) -> float:
            """Each other GPU predicted from the remaining three."""
            return float(np.mean([mape(h, weights(h, (key,), theta)) for h in train]))

        chosen = min(grid, key=inner)
        blend = weights(folder, (), shipped)
        check = validate_neusight([Path(measured / folder)], Model(blend_model(gpu, "fp32", docs)[1]))["runtime_mape"]
        assert abs(check - mape(folder, blend)) < 1e-6, (check, mape(folder, blend))  # the product's blend, exactly
        nearest = blend[:1]
        peer = "-" if neusight[folder] is None else f"{neusight[folder]:.1f}%"
        print(f"{gpu.name:<24} {len(cases[folder]):>8} {mape(folder, blend):>7.1f}% "
              f"{mape(folder, weights(folder, (), chosen)):>7.1f}% {mape(folder, nearest):>7.1f}% {own[folder]:>7.1f}% "
              f"{peer:>9}")
        print(" " * 25 + "blend: " + ", ".join(f"{n.removesuffix('-fp32')} {w / sum(x for _, _, x in blend):.2f}"
                                               for n, _, w in blend)
              + f"; nested: tau {chosen[0]:g}, power limit {chosen[1]:g}, architecture {chosen[2]:g}")
        print(" " * 25 + "from each: " + ", ".join(f"{k.removesuffix('-fp32')} {mape(folder, [(k, None, 1.0)]):.1f}%"
                                                   for k in sorted(docs) if (folder, k) in layers))
    best = min(grid, key=lambda theta: float(np.mean([mape(h, weights(h, (), theta)) for h in cases])))
    print(f"weights chosen on all five (each predicted from the other four): tau {best[0]:g}, power limit {best[1]:g}, "
          f"architecture {best[2]:g}" + (" (shipped)" if best == shipped else f" (shipped: {shipped})"))
    print("runtime MAPE over the GPU's networks. blend: the other four GPUs' models carried and blended with the "
          f"shipped weights (tau {shipped[0]:g}, power limit {shipped[1]:g}, architecture {shipped[2]:g}: chosen on "
          "all five); "
          "nested: with the weights chosen leave-one-GPU-out on the other four GPUs only; nearest: the nearest GPU's "
          "model alone")


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
