"""Speed of a search loop with the in-process predictor: candidates built and predicted per second.

1. The evolutionary search of ``examples/search.py`` (``neuralpower.search.evolve``) from a cold start
   (no block built yet): mutation, candidate construction, prediction and the Pareto front included.
2. The plain path, as a loop without the search API would do it: each candidate's
   :class:`~neuralpower.Architecture` built layer by layer with the zoo's builder (``space.architecture``
   builds every block afresh), then ``model.score``.

    python benchmarks/search_speed.py [--model NAME_OR_JSON] [--generations 30] [--children 2000]

Goal (issue 7): at least 10,000 candidates per second on this machine, construction included.
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np

import neuralpower as npw
from neuralpower.search import MobileNetV2Space, evolve


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", help="model (default: the bundled default)")
    parser.add_argument("--generations", type=int, default=30)
    parser.add_argument("--children", type=int, default=2000)
    parser.add_argument("--max-runtime-ms", type=float, default=40.0)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    args = parser.parse_args()
    model = npw.load_model(args.model)
    objective = "energy" if model.power_measured else "runtime"

    space = MobileNetV2Space(dtype=model.dtype)
    result = evolve(space, model, objective=objective, generations=args.generations, children=args.children,
                    max_runtime_ms=args.max_runtime_ms, threads=args.threads)
    rate = result.rate
    print(f"search API: {result.evaluated} candidates in {result.seconds:.2f} s from a cold start: "
          f"{rate:,.0f} candidates/s ({len(space.blocks)} distinct blocks built; front {len(result.configs)})")

    rng = np.random.default_rng(1)
    configs = [space.mutate(result.configs[int(rng.integers(len(result.configs)))], rng) for _ in range(500)]
    start = time.perf_counter()
    archs = [space.architecture(c, f"c{i}") for i, c in enumerate(configs)]  # every block built afresh
    model.score(archs, threads=args.threads)
    plain = len(configs) / (time.perf_counter() - start)
    print(f"plain path (Architecture built layer by layer, then model.score): {plain:,.0f} candidates/s")
    print(f"ratio: {rate / plain:.0f}x; goal 10,000 candidates/s: {'met' if rate >= 10_000 else 'NOT met'}")


if __name__ == "__main__":
    main()
