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
from typing import Any

import numpy as np

from neuralpower.errors import InputError
from neuralpower.evaluator import Model, load_model
from neuralpower.neusight_networks import CALIBRATED_TYPES, validate_neusight


def _uncalibrated(model: Model) -> Model:
    doc = copy.deepcopy(model.doc)
    for t in CALIBRATED_TYPES:
        doc["layer_types"][t]["runtime_ms"].pop("scale", None)
    return Model(doc, name=f"{model.name} (uncalibrated)")


def main(argv: list[str]) -> int:
    data = Path(argv[0] if argv else "data") / "neusight-networks"
    measured, predicted = data / "measured", data / "predicted"
    if not measured.is_dir():
        print(f"{measured}: no such folder", file=sys.stderr)
        return 2
    print(f"{'GPU':<24} {'networks':>8} {'uncalibrated':>12} {'calibrated':>10} {'NeuSight':>9} {'Habitat':>8}")
    everything: dict[str, list[float]] = {"uncalibrated": [], "calibrated": [], "neusight": [], "habitat": []}
    held: list[bool] = []
    for folder in sorted(p for p in measured.iterdir() if p.is_dir()):
        peers = predicted if predicted.is_dir() else None
        try:
            out = validate_neusight([folder], held_out=True, peers=peers)
        except InputError as e:  # a folder with no network of the zoo (the Switch model only)
            print(f"{folder.name}: {e}", file=sys.stderr)
            continue
        plain = validate_neusight([folder], _uncalibrated(load_model(gpu=folder.name, dtype="fp32")))
        errors: dict[str, list[float]] = {
            "uncalibrated": [abs(c["error_pct"]) for c in plain["cases"]],
            "calibrated": [abs(c["error_pct"]) for c in out["cases"]],
        }
        for peer in ("neusight", "habitat"):
            errors[peer] = [100 * abs(c["peers"][peer] / c["measured_ms"] - 1) for c in out["cases"]
                            if peer in c.get("peers", {})]
        held += [c["interval_ms"][0] <= c["measured_ms"] <= c["interval_ms"][1] for c in out["cases"]]
        for k, v in errors.items():
            everything[k] += v
        print(f"{folder.name:<24} {out['networks']:>8} " + _cells(errors))
    print(f"{'all':<24} {len(everything['calibrated']):>8} " + _cells(everything))
    print("calibrated: linear scaled by the traces of the GPU's other networks (leave one network out)")
    print(f"the calibrated networks' intervals (the sums of their layers' 90 % intervals) held {sum(held)} of "
          f"{len(held)} measured runtimes")
    return 0


def _cells(errors: dict[str, Any]) -> str:
    cells = [f"{np.mean(errors[k]):.1f}%" if errors[k] else "-" for k in ("uncalibrated", "calibrated", "neusight",
                                                                          "habitat")]
    return f"{cells[0]:>12} {cells[1]:>10} {cells[2]:>9} {cells[3]:>8}"


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
