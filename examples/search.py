"""Evolutionary search over a MobileNetV2-style space with neuralpower's in-process predictor.

    python examples/search.py --max-runtime-ms 40 --generations 30 --out front.csv

What it optimizes, plainly:
- cost: the predicted energy per inference (mJ) of the model (``--model``, default: the bundled default);
  with a model that holds no power measurements (the bundled CPU model) energy is 0, so it uses the
  predicted runtime instead and says so;
- "accuracy": there are no trained networks here, so it uses a proxy, log10 of the candidate's MACs
  (larger networks of one family tend to be more accurate). It is not accuracy: put your accuracy
  predictor in its place (``neuralpower.search.evolve(..., proxy=...)``).

It keeps the Pareto front of (proxy, cost) among candidates within the budget (``--max-runtime-ms``,
``--max-energy-mj``), prints it, and writes it as CSV (``--out``) and as a layer table (``--layers``) that
``neuralpower score`` and ``neuralpower predict`` read.
"""

from __future__ import annotations

import argparse
import csv
import os
import sys

import neuralpower as npw
from neuralpower.search import MobileNetV2Space, SearchResult, evolve


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", help="a bundled model's name or a model JSON file (default: the bundled default)")
    parser.add_argument("--objective", choices=["energy", "runtime"], help="cost to minimize (default: energy, "
                        "or runtime when the model holds no power)")
    parser.add_argument("--max-runtime-ms", type=float, help="latency budget: predicted runtime at most this")
    parser.add_argument("--max-energy-mj", type=float, help="energy budget: predicted energy at most this")
    parser.add_argument("--generations", type=int, default=30)
    parser.add_argument("--children", type=int, default=2000, help="candidates per generation (default: 2000)")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--out", help="write the front as CSV")
    parser.add_argument("--layers", help="write the front's architectures as a layer table (.csv or .parquet)")
    parser.add_argument("--quiet", action="store_true", help="no per-generation line")
    args = parser.parse_args(argv)
    try:
        model = npw.load_model(args.model)
        objective = args.objective or ("energy" if model.power_measured else "runtime")
        if args.objective is None and objective == "runtime":
            print(f"note: model {model.name} holds no power measurements: minimizing predicted runtime",
                  file=sys.stderr)
        space = MobileNetV2Space(batch=args.batch, dtype=model.dtype)

        def progress(generation: int, r: SearchResult) -> None:
            if not args.quiet:
                print(f"generation {generation + 1}: {r.evaluated} candidates, {r.feasible} within budget, "
                      f"front {len(r.configs)}, {r.rate:,.0f} candidates/s", file=sys.stderr)

        result = evolve(
            space, model, objective=objective, generations=args.generations, children=args.children,
            max_runtime_ms=args.max_runtime_ms, max_energy_mj=args.max_energy_mj, seed=args.seed,
            threads=args.threads, on_generation=progress,
        )
    except npw.NeuralPowerError as e:
        print(f"search.py: error: {e}", file=sys.stderr)
        return 2
    header = ["rank", "proxy_log10_macs", "runtime_ms", "energy_mj", "power_w", "macs", "params", "width",
              "resolution", "channels", "depths", "kernels", "expansions"]
    rows = []
    for i, c in enumerate(result.configs):
        s = {k: v[i] for k, v in result.scores.items()}
        rows.append([i + 1, f"{result.proxy[i]:.4f}", f"{s['runtime_ms']:.4f}", f"{s['energy_mj']:.4f}",
                     f"{s['power_w']:.2f}", int(s["macs"]), int(s["params"]), c.width, c.resolution,
                     "-".join(map(str, c.channels)), "-".join(map(str, c.depths)), "-".join(map(str, c.kernels)),
                     "-".join(map(str, c.expansions))])
    print("  ".join(header))
    for r in rows[:20]:
        print("  ".join(str(v) for v in r))
    if len(rows) > 20:
        print(f"... {len(rows) - 20} more on the front")
    print(f"{result.evaluated} candidates in {result.seconds:.2f} s: {result.rate:,.0f} candidates/s "
          f"(built and predicted with {model.name}); front of {len(rows)} by proxy and {objective}")
    if args.out:
        with open(args.out, "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(header)
            writer.writerows(rows)
    if args.layers:
        archs = [space.architecture(c, f"front_{i + 1}") for i, c in enumerate(result.configs)]
        npw.write_architectures(archs, args.layers)
    return 0


if __name__ == "__main__":
    sys.exit(main())
