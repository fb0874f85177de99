"""Speed of a search loop with the in-process predictor: candidates built and predicted per second, for the
MobileNetV2-style space and the ViT-style space.

1. The evolutionary search of ``examples/search.py`` and ``examples/search_vit.py``
   (``neuralpower.search.evolve``) from a cold start (no block built yet): mutation, candidate
   construction, prediction and the Pareto front included.
2. The plain path, as a loop without the search API would do it: each candidate's
   :class:`~neuralpower.Architecture` built layer by layer with the zoo's builder (``space.architecture``
   builds every block afresh), then ``model.score``.

    python benchmarks/search_speed.py [--space both|mobilenet_v2|vit] [--model NAME_OR_JSON]
                                      [--generations 30] [--children 2000]

Goals: at least 10,000 candidates per second on this machine, construction included (issue 7); the ViT
space at the same candidates per second as the MobileNetV2 space (issue 14): with ``--space both`` (the
default) the last line is the ratio of the two.

A model that lacks some of a space's layer types (the bundled CPU model predates layernorm and attention)
gets **stand-in** entries for them, copied from a type it has (layernorm from batchnorm2d, the others from
linear): the evaluator does the same kind of work per layer, so the speed is representative, but those
predictions mean nothing. The run says which types it stood in.
"""

from __future__ import annotations

import argparse
import os
import time
from typing import Any

import numpy as np

import neuralpower as npw
from neuralpower.search import MobileNetV2Space, SearchSpace, ViTSpace, evolve, score_candidates

STAND_IN = {"layernorm": "batchnorm2d"}  # any other missing type stands in with linear's entry


def covering(model: npw.Model, layer_types: tuple[str, ...]) -> npw.Model:
    """``model``, or a copy with stand-in entries for the layer types it lacks (see the module's docstring)."""
    missing = [t for t in layer_types if t not in model.layer_types]
    if not missing:
        return model
    doc: dict[str, Any] = dict(model.doc)
    types = dict(doc["layer_types"])
    for t in missing:
        source = STAND_IN.get(t, "linear")
        if source not in types:
            raise SystemExit(f"model {model.name} has neither {t} nor {source}: give a model with --model")
        types[t] = types[source]
    doc["layer_types"] = types
    print(f"note: model {model.name} lacks {', '.join(missing)}: stand-in entries (speed only; their predictions "
          "mean nothing)")
    return npw.Model(doc, name=f"{model.name}+stand-ins")


def measure(label: str, space: SearchSpace, model: npw.Model, budget_ms: float, args: argparse.Namespace) -> float:
    """Run the search and the plain path over one space; print both; return the search's candidates/s."""
    objective = "energy" if model.power_measured else "runtime"
    result = evolve(space, model, objective=objective, generations=args.generations, children=args.children,
                    max_runtime_ms=budget_ms, threads=args.threads)
    rate = result.rate
    print(f"{label} search API: {result.evaluated} candidates in {result.seconds:.2f} s from a cold start: "
          f"{rate:,.0f} candidates/s ({len(space.blocks)} distinct blocks built; budget {budget_ms:.3g} ms; "
          f"front {len(result.configs)})")

    rng = np.random.default_rng(1)
    configs = [space.mutate(result.configs[int(rng.integers(len(result.configs)))], rng) for _ in range(500)]
    start = time.perf_counter()
    archs = [space.architecture(c, f"c{i}") for i, c in enumerate(configs)]  # every block built afresh
    model.score(archs, threads=args.threads)
    plain = len(configs) / (time.perf_counter() - start)
    print(f"{label} plain path (Architecture built layer by layer, then model.score): {plain:,.0f} candidates/s")
    print(f"{label} ratio: {rate / plain:.0f}x; goal 10,000 candidates/s: {'met' if rate >= 10_000 else 'NOT met'}")
    return rate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--space", choices=["both", "mobilenet_v2", "vit"], default="both")
    parser.add_argument("--model", help="model (default: the bundled default)")
    parser.add_argument("--generations", type=int, default=30)
    parser.add_argument("--children", type=int, default=2000)
    parser.add_argument("--max-runtime-ms", type=float, default=40.0, help="the MobileNetV2 search's budget")
    parser.add_argument("--vit-max-runtime-ms", type=float,
                        help="the ViT search's budget (default: half of ViT-B/16's predicted runtime)")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    args = parser.parse_args()
    loaded = npw.load_model(args.model)

    rates = {}
    if args.space in ("both", "mobilenet_v2"):
        model = covering(loaded, MobileNetV2Space.layer_types)
        rates["MobileNetV2"] = measure("MobileNetV2", MobileNetV2Space(dtype=model.dtype), model,
                                       args.max_runtime_ms, args)
    if args.space in ("both", "vit"):
        model = covering(loaded, ViTSpace.layer_types)
        space = ViTSpace(dtype=model.dtype)
        budget = args.vit_max_runtime_ms
        if budget is None:
            budget = float(score_candidates(model, [space.candidate(space.default())])["runtime_ms"][0]) / 2
        rates["ViT"] = measure("ViT", space, model, budget, args)
    if len(rates) == 2:
        ratio = rates["ViT"] / rates["MobileNetV2"]
        print(f"ViT / MobileNetV2 candidates/s: {ratio:.2f} ({rates['ViT']:,.0f} / {rates['MobileNetV2']:,.0f}); "
              f"goal (the same rate): {'met' if ratio >= 1 else 'NOT met'}")


if __name__ == "__main__":
    main()
