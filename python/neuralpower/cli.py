"""The ``neuralpower`` command.

Every verb reports bad input as one line on stderr and exits with code 2; no traceback.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from collections.abc import Sequence
from typing import Any, NoReturn

from . import __version__
from .errors import NeuralPowerError
from .layers import Architecture, Layer

__all__ = ["main"]


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line naming the verb and pointing at --help."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} must be at least 1")
    return value


def _si(value: float) -> str:
    """A count in engineering notation: 1.23G, 45.6M, 789."""
    for threshold, suffix in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= threshold:
            return f"{value / threshold:.2f}{suffix}"
    return f"{value:.0f}"


def _shape(shape: Sequence[int]) -> str:
    return "x".join(str(d) for d in shape)


def _config(layer: Layer) -> str:
    """The layer's configuration in a few characters: k3 s2 p1 g32."""
    parts = []
    if layer.type in ("conv2d", "maxpool2d", "avgpool2d"):

        def pair(label: str, v: tuple[int, int], default: int) -> None:
            if v[0] != v[1]:
                parts.append(f"{label}{v[0]}x{v[1]}")
            elif v[0] != default or label == "k":
                parts.append(f"{label}{v[0]}")

        pair("k", layer.kernel, 0)
        pair("s", layer.stride, 1)
        pair("p", layer.padding, 0)
        if layer.type != "avgpool2d":
            pair("d", layer.dilation, 1)
    if layer.type == "conv2d" and layer.groups != 1:
        parts.append(f"g{layer.groups}")
    if layer.type in ("add", "mul", "concat") and layer.inputs != 2:
        parts.append(f"x{layer.inputs}")
    if layer.type in ("add", "mul") and layer.broadcast:
        parts.append("bcast")
    if layer.type == "channel_shuffle":
        parts.append(f"g{layer.groups}")
    return " ".join(parts)


def _layer_record(index: int, layer: Layer) -> dict[str, Any]:
    return {
        "index": index,
        "layer": layer.name,
        "type": layer.type,
        "in_shape": list(layer.in_shape),
        "out_shape": list(layer.out_shape),
        "config": _config(layer),
        "macs": layer.macs,
        "flops": layer.flops,
        "params": layer.params,
        "bytes_read": layer.bytes_read,
        "bytes_written": layer.bytes_written,
        "bytes": layer.bytes_moved,
    }


def _describe_table(arch: Architecture) -> str:
    header = ("#", "layer", "type", "input", "output", "config", "MACs", "params", "bytes")
    rows = [
        (
            str(i),
            layer.name,
            layer.type,
            _shape(layer.in_shape),
            _shape(layer.out_shape),
            _config(layer),
            _si(layer.macs),
            _si(layer.params),
            _si(layer.bytes_moved),
        )
        for i, layer in enumerate(arch.layers)
    ]
    t = arch.totals()
    total = ("", "total", f"{t['layers']} layers", "", "", "", _si(t["macs"]), _si(t["params"]), _si(t["bytes"]))
    widths = [max(len(r[c]) for r in [header, *rows, total]) for c in range(len(header))]
    right = {0, 6, 7, 8}

    def fmt(r: Sequence[str]) -> str:
        return "  ".join(
            v.rjust(w) if c in right else v.ljust(w) for c, (v, w) in enumerate(zip(r, widths, strict=True))
        ).rstrip()

    rule = "  ".join("-" * w for w in widths)
    lines = [
        f"{arch.name}: batch {arch.batch}, {arch.dtype}",
        fmt(header),
        rule,
        *(fmt(r) for r in rows),
        rule,
        fmt(total),
        f"FLOPs {_si(t['flops'])} ({t['flops']:,}), MACs {t['macs']:,}, params {t['params']:,}, "
        f"bytes read {t['bytes_read']:,}, written {t['bytes_written']:,}",
    ]
    return "\n".join(lines)


def _cmd_describe(args: argparse.Namespace) -> int:
    from .sources import load_architectures, select_architecture

    archs = load_architectures(args.arch_source, batch=args.batch, image_size=args.image_size, dtype=args.dtype)
    arch = select_architecture(archs, args.arch_source, args.arch)
    if args.format == "json":
        out = {"name": arch.name, "batch": arch.batch, "dtype": arch.dtype, **arch.totals(), "meta": arch.meta}
        out["per_layer"] = [_layer_record(i, layer) for i, layer in enumerate(arch.layers)]
        json.dump(out, sys.stdout, indent=1)
        sys.stdout.write("\n")
    elif args.format == "csv":
        records = [_layer_record(i, layer) for i, layer in enumerate(arch.layers)]
        writer = csv.DictWriter(sys.stdout, fieldnames=["arch", *records[0]], lineterminator="\n")
        writer.writeheader()
        for r in records:
            r["in_shape"], r["out_shape"] = _shape(r["in_shape"]), _shape(r["out_shape"])
            writer.writerow({"arch": arch.name, **r})
    else:
        print(_describe_table(arch))
    return 0


def _cmd_zoo(args: argparse.Namespace) -> int:
    from . import zoo

    records: list[dict[str, Any]] = []
    for entry in zoo.entries():
        t = zoo.build(entry.name).totals()
        records.append(
            {
                "name": entry.name,
                "image_size": entry.image_size,
                "layers": t["layers"],
                "params": t["params"],
                "macs": t["macs"],
                "description": entry.description,
            }
        )
    if args.format == "json":
        json.dump(records, sys.stdout, indent=1)
        sys.stdout.write("\n")
        return 0
    width = max(len(r["name"]) for r in records)
    print(f"{'name'.ljust(width)}  input  layers   params     MACs  description")
    for r in records:
        print(
            f"{r['name'].ljust(width)}  {r['image_size']:>5}  {r['layers']:>6}  {_si(r['params']):>7}  "
            f"{_si(r['macs']):>7}  {r['description']}"
        )
    return 0


def _cmd_fit(args: argparse.Namespace) -> int:
    import time

    from .models.data import read_measurements
    from .models.fit import FitOptions, fit_models
    from .models.format import write_model_file
    from .models.report import format_summary, write_report

    start = time.perf_counter()
    data = read_measurements(args.tables)
    holdout: dict[tuple[str, str], tuple[Any, dict[str, Any]]] = {}

    def progress(message: str) -> None:
        print(f"fitting {message} ({time.perf_counter() - start:.0f} s)", file=sys.stderr)

    options = FitOptions(method=args.method, degree=args.degree, seed=args.seed, progress=progress, holdout=holdout)
    doc = fit_models(data, options, gpu=args.gpu, executor=args.executor)
    write_model_file(doc, args.out)
    print(format_summary(doc))
    print(f"\nwrote {args.out} ({len(data)} rows, {len(doc['layer_types'])} layer types, "
          f"{time.perf_counter() - start:.1f} s)")
    if args.report:
        written = write_report(doc, holdout, args.report)
        print(f"wrote {len(written)} report files to {args.report}")
    return 0


def _degree(text: str) -> int:
    value = _positive_int(text)
    if value > 4:
        raise argparse.ArgumentTypeError(f"{value}: the degree must be 1 to 4")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="neuralpower",
        description="Predict a neural network's GPU inference runtime, power and energy, layer by layer.",
    )
    parser.add_argument("--version", action="version", version=f"neuralpower {__version__}")
    verbs = parser.add_subparsers(dest="verb", metavar="VERB", parser_class=_Parser)
    verbs.required = True

    d = verbs.add_parser(
        "describe",
        help="per-layer shapes, MACs, parameters and bytes of a network",
        description="Show a network layer by layer: shapes, MACs, parameters, bytes moved, and totals.",
    )
    d.add_argument(
        "arch_source",
        metavar="ARCH",
        help="a zoo network name (see `neuralpower zoo`) or a layer table file (.csv or .parquet)",
    )
    d.add_argument("--arch", metavar="ID", help="which architecture of a layer table holding several")
    d.add_argument(
        "--batch", type=_positive_int, help="batch size (default: 1 for zoo networks, the table's own for files)"
    )
    d.add_argument(
        "--image-size",
        type=_positive_int,
        metavar="N",
        help="input height and width of a zoo network (default: its published resolution)",
    )
    d.add_argument(
        "--dtype",
        choices=["fp32", "fp16", "bf16"],
        help="element type (default: fp32 for zoo networks, the table's own for files)",
    )
    d.add_argument(
        "--format",
        choices=["table", "csv", "json"],
        default="table",
        help="output format: a "
        "readable table, per-layer CSV, or one JSON object with totals and per_layer "
        "(default: table)",
    )
    d.set_defaults(run=_cmd_describe)

    z = verbs.add_parser(
        "zoo",
        help="list the zoo of real networks",
        description="List the networks `describe` and the other verbs accept by name.",
    )
    z.add_argument("--format", choices=["table", "json"], default="table", help="output format (default: table)")
    z.set_defaults(run=_cmd_zoo)

    f = verbs.add_parser(
        "fit",
        help="fit runtime and power models from measurement tables",
        description="Fit, per layer type, a runtime and a power model from measurement tables (layer tables "
        "with runtime_ms and power_w columns), print held-out accuracy against baselines, and write the model "
        "as JSON.",
    )
    f.add_argument("tables", metavar="TABLE", nargs="+", help="measurement tables (.csv or .parquet), for "
                   "example what `neuralpower bench` writes")
    f.add_argument("--out", required=True, metavar="MODEL.json", help="where to write the model file")
    f.add_argument("--method", choices=["poly", "tree", "all"], default="poly", help="poly: NeuralPower's sparse "
                   "polynomial (Lasso-selected terms); tree: FastDeepIoT's model tree; all: both, the lower "
                   "held-out error becoming each type's default (default: poly)")
    f.add_argument("--degree", type=_degree, default=3, help="highest degree of the polynomial terms, 1 to 4 "
                   "(default: 3)")
    f.add_argument("--report", metavar="DIR", help="also write the table as DIR/summary.csv and a "
                   "predicted-vs-measured plot per layer type and target (PNG)")
    f.add_argument("--gpu", help="GPU name to record in the model (default: the tables' gpu column)")
    f.add_argument("--executor", help="executor to record (default: the tables' executor column)")
    f.add_argument("--seed", type=int, default=0, help="seed of the held-out split and cross-validation "
                   "(default: 0)")
    f.set_defaults(run=_cmd_fit)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.run(args))
    except NeuralPowerError as e:
        print(f"neuralpower {args.verb}: error: {e}", file=sys.stderr)
        return 2
    except BrokenPipeError:
        # The reader went away (| head): not an error of ours.
        sys.stderr.close()
        return 0
    except KeyboardInterrupt:
        print(f"neuralpower {args.verb}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
