"""Speed of a search loop with the in-process predictor: candidates built and predicted per second.

1. The evolutionary search of ``examples/search.py`` (``neuralpower.search.evolve``) from a cold start
   (no block built yet): mutation, candidate construction, prediction and the Pareto front included.
2. The same candidates through the plain path, as a loop without the search API would do it: an
   :class:`~neuralpower.Architecture` built layer by layer with the zoo's builder, then ``model.score``.

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
from neuralpower.zoo.builder import Builder, T


def plain_architecture(space: MobileNetV2Space, config: object, name: str) -> npw.Architecture:
    """A configuration's architecture built layer by layer, no caches (what a loop without the API does)."""
    from neuralpower.search import _divisible, head, inverted_residual, stem

    c = config
    w = c.width  # type: ignore[attr-defined]
    b = Builder(space.batch, space.dtype)
    res = c.resolution  # type: ignore[attr-defined]
    x = stem(b, T(3, res, res), _divisible(space.stem_channels * w))
    for stage, stride in enumerate(space.strides):
        out = _divisible(c.channels[stage] * w)  # type: ignore[attr-defined]
        expansion = 1 if stage == 0 else c.expansions[stage]  # type: ignore[attr-defined]
        for i in range(c.depths[stage]):  # type: ignore[attr-defined]
            x = inverted_residual(b, x, out, expansion, c.kernels[stage], stride if i == 0 else 1)  # type: ignore[attr-defined]
    head(b, x, _divisible(space.last_channels * max(1.0, w)), space.classes)
    return npw.Architecture(name, b.layers)


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
    archs = [plain_architecture(space, c, f"c{i}") for i, c in enumerate(configs)]
    model.score(archs, threads=args.threads)
    plain = len(configs) / (time.perf_counter() - start)
    print(f"plain path (Architecture built layer by layer, then model.score): {plain:,.0f} candidates/s")
    print(f"ratio: {rate / plain:.0f}x; goal 10,000 candidates/s: {'met' if rate >= 10_000 else 'NOT met'}")


if __name__ == "__main__":
    main()
