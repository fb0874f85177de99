"""NeuSight's whole networks, predicted by each GPU's bundled fp32 model with its GEMMs calibrated to the traces of
the other networks only (leave one network out).

The bundled NeuSight models scale their ``linear`` runtime by what NeuSight's traces of its networks on that GPU
measured for their GEMMs over what the operator tables predict for them (``neuralpower.models.bundle``): fitted on
every traced network, so ``neuralpower validate`` on those networks is in-sample for that one scale. Here each
network (BERT-large, GPT-2 Large, GPT-3 XL, GPT-3 2.7B, OPT-1.3B; every batch and sequence length measured) is
predicted with the scale of the other networks' traces on its GPU, as a network nobody traced would be. Printed: per
GPU the runtime MAPE without the calibration, with it left-one-network-out, and NeuSight's and Habitat's on the
same networks; then how many networks' measured runtime lay within their (left-one-network-out) interval.

    python benchmarks/neusight_networks.py [DATA_DIR]      (default: data)
"""

from __future__ import annotations

import copy
import sys
from pathlib import Path

import numpy as np

from neuralpower import zoo
from neuralpower.evaluator import Model, load_model
from neuralpower.neusight_networks import calibration, read_cases, read_peers, trace_ratios
from neuralpower.zoo.hf_eager import NEUSIGHT_MODELS


def _uncalibrated(model: Model) -> dict:
    doc = copy.deepcopy(model.doc)
    for entry in doc["layer_types"].values():
        entry["runtime_ms"].pop("scale", None)
    return doc


def main(argv: list[str]) -> int:
    data = Path(argv[0] if argv else "data") / "neusight-networks"
    measured = data / "measured"
    if not measured.is_dir():
        print(f"{measured}: no such folder", file=sys.stderr)
        return 2
    print(f"{'GPU':<24} {'networks':>8} {'uncalibrated':>12} {'calibrated':>10} {'NeuSight':>9} {'Habitat':>8}")
    everything: dict[str, list[float]] = {"uncalibrated": [], "calibrated": [], "neusight": [], "habitat": []}
    held: list[bool] = []
    for folder in sorted(p for p in measured.iterdir() if p.is_dir()):
        cases = [c for c in read_cases([folder]) if c.model in NEUSIGHT_MODELS]
        if not cases:
            continue
        plain = _uncalibrated(load_model(gpu=folder.name, dtype="fp32"))
        ratios = trace_ratios(cases, Model(plain))
        peers = read_peers(data / "predicted", folder.name) if (data / "predicted").is_dir() else {}
        errors: dict[str, list[float]] = {k: [] for k in everything}
        for c in cases:
            arch = zoo.build(NEUSIGHT_MODELS[c.model], batch=c.batch, seq_len=c.seq_len)
            doc = copy.deepcopy(plain)
            for t, cal in calibration(ratios, exclude=c.model).items():
                doc["layer_types"][t]["runtime_ms"]["scale"] = cal["scale"]
            for label, d in (("uncalibrated", plain), ("calibrated", doc)):
                p = Model(d).predict(arch)
                errors[label].append(100 * abs(p.runtime_ms / c.e2e_ms - 1))
                if label == "calibrated":  # the network's interval: the sum of its layers' 90 % intervals
                    held.append(p.bounds["runtime_ms_lo"] <= c.e2e_ms <= p.bounds["runtime_ms_hi"])
            for peer in ("neusight", "habitat"):
                if c.name in peers.get(peer, {}):
                    errors[peer].append(100 * abs(peers[peer][c.name] / c.e2e_ms - 1))
        for k, v in errors.items():
            everything[k] += v
        cells = [f"{np.mean(errors[k]):.1f}%" if errors[k] else "-" for k in everything]
        print(f"{folder.name:<24} {len(cases):>8} {cells[0]:>12} {cells[1]:>10} {cells[2]:>9} {cells[3]:>8}")
    cells = [f"{np.mean(v):.1f}%" for v in everything.values()]
    print(f"{'all':<24} {len(everything['calibrated']):>8} {cells[0]:>12} {cells[1]:>10} {cells[2]:>9} {cells[3]:>8}")
    print("calibrated: linear scaled by the traces of the GPU's other networks (leave one network out)")
    print(f"the calibrated networks' intervals (the sums of their layers' 90 % intervals) held {sum(held)} of "
          f"{len(held)} measured runtimes")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
