"""The ``bench`` and ``bench-network`` verbs of the ``neuralpower`` command.

:func:`add_bench_parsers` adds them to the main parser's subparsers; each verb's ``run`` takes the parsed
arguments and returns an exit code, and reports bad input as a :class:`~neuralpower.errors.NeuralPowerError`
(one line, exit code 2).
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from .._args import finite_float, positive_int, seed, size_int
from ..errors import InputError
from .executors import EXECUTORS

__all__ = ["add_bench_parsers", "cmd_bench", "cmd_bench_network", "cmd_campaign"]


_positive_float = finite_float(minimum=0.0, allow_minimum=False)
_non_negative_float = finite_float(minimum=0.0)


def _batches(text: str) -> list[int]:
    out = []
    for item in text.split(","):
        if item.strip():
            out.append(size_int(item.strip()))
    if not out:
        raise argparse.ArgumentTypeError("give at least one batch size, e.g. 1,8,64")
    return list(dict.fromkeys(out))


def _dtypes(text: str) -> list[str]:
    out = [t.strip().lower() for t in text.split(",") if t.strip()]
    bad = [t for t in out if t not in ("fp16", "fp32")]
    if bad or not out:
        raise argparse.ArgumentTypeError(f"dtypes are fp16 and fp32, comma-separated, not {text!r}")
    return list(dict.fromkeys(out))


def _names(text: str) -> list[str]:
    from .. import zoo

    out = [t.strip().lower() for t in text.split(",") if t.strip()]
    unknown = [t for t in out if t not in zoo.names()]
    if unknown or not out:
        raise argparse.ArgumentTypeError(f"unknown zoo network {unknown[0] if unknown else text!r} (see "
                                         "`neuralpower zoo`)")
    return list(dict.fromkeys(out))


def _types(text: str) -> list[str]:
    from .sweep import parse_types

    try:
        return parse_types(text)
    except InputError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--executor",
        required=True,
        choices=list(EXECUTORS),
        help="how layers run: cupy (neuralpower's CUDA kernels through CuPy), torch (PyTorch modules, cuDNN "
        "included) or cpu (NumPy on the host: runs anywhere, measures the host)",
    )
    p.add_argument(
        "--device",
        help="device to run on: cuda:N for cupy and torch (default: cuda:0), cpu for the cpu executor (its default)",
    )
    p.add_argument("--out", required=True, metavar="DIR", help="output directory; a run continues what it holds")
    p.add_argument(
        "--dtype", choices=["fp32", "fp16"], default="fp32", help="element type of every layer (default: fp32)"
    )
    p.add_argument(
        "--max-minutes",
        type=_positive_float,
        metavar="N",
        help="stop cleanly after the configuration running when N minutes have passed (run again to continue)",
    )
    p.add_argument("--seed", type=seed, default=0, help="seed of the random inputs, sampling and order (default: 0)")
    p.add_argument(
        "--variants",
        choices=["all", "first"],
        default="all",
        help="all: every variant the executor offers (e.g. eager and CUDA graph); first: its default only "
        "(default: all)",
    )
    p.add_argument("--no-power", dest="power", action="store_false", help="measure runtime only, no NVML power windows")
    p.add_argument(
        "--window-s",
        type=_positive_float,
        default=1.0,
        metavar="S",
        help="length of each power window in seconds; the energy counter steps every ~100 ms, so keep it at "
        "1 s or more (default: 1)",
    )
    p.add_argument(
        "--idle-s",
        type=_non_negative_float,
        default=3.0,
        metavar="S",
        help="idle power measured for S seconds before the run, 0 to skip (default: 3)",
    )
    p.add_argument(
        "--target-ms",
        type=_positive_float,
        metavar="MS",
        help="length of one timed loop of back-to-back calls (default: 30 on a GPU, 20 on the CPU)",
    )
    p.add_argument(
        "--loops", type=positive_int, default=5, metavar="N", help="timed loops per measurement (default: 5)"
    )
    p.add_argument("--quiet", action="store_true", help="no progress lines (the summary is still printed)")


def add_bench_parsers(verbs: Any) -> None:
    """Add ``bench`` and ``bench-network`` to the main parser's subparsers object."""
    from .sweep import SUITES

    b = verbs.add_parser(
        "bench",
        help="measure layer runtime and power on this machine's GPU (a dataset to fit models on)",
        description="Run the microbenchmark suite: layer configurations sampled to cover real networks, timed "
        "(and, on a GPU with NVML, power-measured on a spread subset), written row by row to DIR/layers.csv. "
        "A run stopped at any moment continues where it stopped when started again with the same options.",
    )
    _common(b)
    b.add_argument(
        "--suite",
        choices=list(SUITES),
        default="default",
        help="how many configurations: quick (a few minutes on a GPU), default (about 20 minutes on an H100) or "
        "full (hours) (default: default)",
    )
    b.add_argument(
        "--types",
        type=_types,
        metavar="TYPES",
        help="only these layer types, comma-separated (e.g. conv2d,linear; default: all)",
    )
    b.add_argument("--zoo", action="store_true", help="also measure the distinct layers of the zoo's networks")
    b.add_argument(
        "--configs",
        type=positive_int,
        metavar="N",
        help="number of sampled configurations instead of the suite's",
    )
    b.add_argument(
        "--max-bytes",
        type=_positive_float,
        metavar="N",
        help="largest configuration in bytes moved per call, e.g. 4e9 (default: an eighth of the GPU's memory; "
        "32 MiB on the CPU)",
    )
    b.add_argument(
        "--max-flops",
        type=_positive_float,
        metavar="N",
        help="largest configuration in FLOPs per call, e.g. 1e11 (default: 2e11 on a GPU, 2e8 on the CPU)",
    )
    b.set_defaults(run=cmd_bench)

    n = verbs.add_parser(
        "bench-network",
        help="measure whole networks end to end (validation data for predictions)",
        description="Run networks end to end with an executor, timed and power-measured like the layers, "
        "written row by row to DIR/networks.csv (one row per network, batch size, variant and trial).",
    )
    n.add_argument(
        "archs",
        metavar="ARCH",
        nargs="+",
        help="zoo network names (see `neuralpower zoo`), layer table files (.csv or .parquet) or .onnx files",
    )
    _common(n)
    n.add_argument(
        "--allow-unknown",
        action="store_true",
        help="for an ONNX file: skip operators neuralpower has no layer type for instead of stopping",
    )
    n.add_argument(
        "--batch",
        type=_batches,
        default=[1],
        metavar="B,B,...",
        help="batch sizes, comma-separated (default: 1)",
    )
    n.add_argument("--image-size", type=size_int, metavar="N", help="input height and width of zoo image networks")
    n.add_argument("--seq-len", type=size_int, metavar="N", help="sequence length of zoo language models")
    n.add_argument("--trials", type=positive_int, default=3, metavar="N", help="trials per network (default: 3)")
    n.set_defaults(run=cmd_bench_network)

    c = verbs.add_parser(
        "campaign",
        help="measure a machine in one command within a time budget: sweep, networks, fit, validate, report",
        description="A whole visit to a machine: records the environment and checks the power sensor, prints "
        "its plan, measures the layer sweep (every prefix holds every layer type), then whole networks, fits a "
        "model per dtype, validates it on the networks, writes DIR/report.md and packs everything into "
        "DIR/campaign.tar.gz. Each stage stops cleanly at its share of --minutes; run it again (on this or a "
        "later visit) to extend the same datasets.",
    )
    c.add_argument("--out", required=True, metavar="DIR", help="the campaign's folder; a run continues what it holds")
    c.add_argument("--executor", choices=list(EXECUTORS), default="torch",
                   help="how layers run: torch, cupy or cpu (default: torch)")
    c.add_argument("--device", help="cuda:N for cupy and torch (default: cuda:0), cpu for the cpu executor")
    c.add_argument("--dtype", type=_dtypes, metavar="D,D",
                   help="dtypes in the order measured, comma-separated (default: fp16,fp32 on a GPU, fp32 on the CPU)")
    c.add_argument("--minutes", type=_positive_float, default=8.0, metavar="N",
                   help="the visit's whole budget in minutes, fitting and the report included (default: 8)")
    c.add_argument("--networks", type=_names, metavar="NAMES",
                   help="zoo networks to validate on, comma-separated (default: resnet50, mobilenet_v2, "
                   "efficientnet_b0, resnet18, convnext_tiny, vit_b_16, bert_base, gpt2 on a GPU; six small ones "
                   "on the CPU)")
    c.add_argument("--batch", type=_batches, metavar="B,B,...",
                   help="batch sizes of the networks (default: 1,8,32 on a GPU, 1,4 on the CPU)")
    c.add_argument("--suite", choices=list(SUITES), default="default",
                   help="the layer sweep a budget works through (default: default)")
    c.add_argument("--trials", type=positive_int, default=3, metavar="N", help="trials per network (default: 3)")
    c.add_argument("--seed", type=seed, default=0, help="seed of the sampling and order (default: 0)")
    c.add_argument("--no-power", dest="power", action="store_false", help="measure runtime only")
    c.add_argument("--variants", choices=["all", "first"], default="first",
                   help="first: each layer's default variant only, as a short visit should; all: every variant "
                   "(eager and CUDA graph, ...) (default: first)")
    c.add_argument("--target-ms", type=_positive_float, metavar="MS",
                   help="length of one timed loop (default: 30 on a GPU, 20 on the CPU)")
    c.add_argument("--loops", type=positive_int, default=5, metavar="N",
                   help="timed loops per measurement (default: 5)")
    c.add_argument("--window-s", type=_positive_float, default=1.0, metavar="S",
                   help="length of each power window in seconds (default: 1; the energy counter steps every ~100 ms)")
    c.add_argument("--quiet", action="store_true", help="no progress lines (the plan and report are still printed)")
    c.set_defaults(run=cmd_campaign)


def _executor(args: argparse.Namespace) -> Any:
    from .executors import get_executor

    device = args.device or ("cpu" if args.executor == "cpu" else "cuda:0")
    return get_executor(args.executor, device=device, dtype=args.dtype)


def _options(args: argparse.Namespace, **extra: Any) -> Any:
    from .runner import BenchOptions
    from .timing import TimingConfig

    timing = None
    if args.target_ms is not None or args.loops != 5:
        default_ms = 20.0 if args.executor == "cpu" else 30.0
        timing = TimingConfig(target_ms=args.target_ms or default_ms, loops=args.loops)
    return BenchOptions(
        dtype=args.dtype,
        seed=args.seed,
        timing=timing,
        power=args.power,
        window_s=args.window_s,
        idle_s=args.idle_s,
        variants=args.variants,
        max_minutes=args.max_minutes,
        progress=not args.quiet,
        **extra,
    )


def cmd_bench(args: argparse.Namespace) -> int:
    """``neuralpower bench``: returns the exit code."""
    from .runner import run_bench

    executor = _executor(args)
    # what is not given stays the device's default (known once the run has read the device's memory)
    overrides = {
        name: int(value) for name, value in (("max_bytes", args.max_bytes), ("max_flops", args.max_flops))
        if value is not None
    }
    options = _options(
        args, suite=args.suite, types=args.types, zoo=args.zoo, configs=args.configs, limit_overrides=overrides
    )
    summary = run_bench(executor, args.out, options, argv=sys.argv)
    print(f"neuralpower bench: {executor.name} on {executor.device}, suite {args.suite}, {args.dtype}")
    print(summary.table())
    return 130 if summary.stopped == "interrupted" else 0


def cmd_campaign(args: argparse.Namespace) -> int:
    """``neuralpower campaign``: returns the exit code."""
    from ..campaign import CampaignOptions, run_campaign

    dtypes = args.dtype or (["fp32"] if args.executor == "cpu" else ["fp16", "fp32"])
    options = CampaignOptions(
        out=args.out, executor=args.executor, device=args.device, dtypes=dtypes, minutes=args.minutes,
        networks=args.networks, batches=args.batch, suite=args.suite, seed=args.seed, power=args.power,
        trials=args.trials, variants=args.variants, target_ms=args.target_ms, loops=args.loops, window_s=args.window_s,
        progress=not args.quiet,
    )
    visit = run_campaign(options)
    return 0 if visit["archive"]["within_limit"] else 1


def cmd_bench_network(args: argparse.Namespace) -> int:
    """``neuralpower bench-network``: returns the exit code."""
    from .. import zoo
    from ..sources import is_zoo_name, load_architectures
    from .runner import run_networks

    archs = []
    for spec in args.archs:
        # each size option goes to the zoo networks it applies to (a list may mix image and language models)
        image_size, seq_len = args.image_size, args.seq_len
        if is_zoo_name(spec):
            image_size, seq_len = zoo.applicable_sizes(spec, image_size, seq_len)
        for batch in args.batch:
            archs.extend(
                load_architectures(
                    spec, batch=batch, image_size=image_size, dtype=args.dtype, allow_unknown=args.allow_unknown,
                    seq_len=seq_len,
                )
            )
    executor = _executor(args)
    options = _options(args, trials=args.trials)
    summary = run_networks(executor, archs, args.out, options, argv=sys.argv)
    print(f"neuralpower bench-network: {executor.name} on {executor.device}, {len(archs)} networks, {args.dtype}")
    print(summary.table())
    return 130 if summary.stopped == "interrupted" else 0
