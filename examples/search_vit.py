"""Evolutionary search over a ViT-style space (width, depth, patch size, resolution, per-layer heads and MLP
ratios) with neuralpower's in-process predictor.

    python examples/search_vit.py --model my-gpu-model.json --max-runtime-ms 20 --out front.csv

The same search as ``examples/search.py`` over :class:`neuralpower.search.ViTSpace`, whose defaults hold
ViT-B/16 at 224 x 224 as their largest member and ViT-Ti/S-sized networks (width 192, 384) as their smaller
ones. It needs a model of the layer types a ViT is made of (conv2d, concat, add, layernorm, linear,
attention, gelu): a model fit on a sweep that samples them (``neuralpower.bench.sweep.generate`` does). A
model without them (the bundled CPU model predates layernorm and attention) stops it with a message naming
what is missing.

What it optimizes, plainly:
- cost: the predicted energy per inference (mJ), or the predicted runtime when the model holds no power
  measurements (it says so);
- "accuracy": a proxy, log10 of the candidate's MACs. It is not accuracy: put your accuracy predictor in
  its place (``neuralpower.search.evolve(..., proxy=...)``).

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
from neuralpower.search import SearchResult, ViTSpace, evolve


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", help="a bundled model's name or a model JSON file (default: the bundled default)")
    parser.add_argument("--objective", choices=["energy", "runtime"], help="cost to minimize (default: energy, "
                        "or runtime when the model holds no power)")
    parser.add_argument("--max-runtime-ms", type=float, help="latency budget: predicted runtime at most this")
    parser.add_argument("--max-energy-mj", type=float, help="energy budget: predicted energy at most this")
    parser.add_argument("--generations", type=int, default=20)
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
        missing = [t for t in ViTSpace.layer_types if t not in model.layer_types]
        if missing:
            raise npw.InputError(
                f"model {model.name} has no {', '.join(missing)} model, which a ViT needs: give one fit on a sweep "
                "that samples them with --model"
            )
        objective = args.objective or ("energy" if model.power_measured else "runtime")
        if args.objective is None and objective == "runtime":
            print(f"note: model {model.name} holds no power measurements: minimizing predicted runtime",
                  file=sys.stderr)
        space = ViTSpace(batch=args.batch, dtype=model.dtype)

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
        print(f"search_vit.py: error: {e}", file=sys.stderr)
        return 2
    header = ["rank", "proxy_log10_macs", "runtime_ms", "energy_mj", "power_w", "macs", "params", "width",
              "resolution", "patch", "depth", "heads", "mlp_ratios"]
    rows = []
    for i, c in enumerate(result.configs):
        s = {k: v[i] for k, v in result.scores.items()}
        rows.append([i + 1, f"{result.proxy[i]:.4f}", f"{s['runtime_ms']:.4f}", f"{s['energy_mj']:.4f}",
                     f"{s['power_w']:.2f}", int(s["macs"]), int(s["params"]), c.width, c.resolution, c.patch, c.depth,
                     "-".join(map(str, c.heads[:c.depth])), "-".join(f"{r:g}" for r in c.mlp_ratios[:c.depth])])
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
