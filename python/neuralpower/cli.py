"""The ``neuralpower`` command.

Every verb reports bad input as one line on stderr and exits with code 2; no traceback.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import sys
from collections.abc import Callable, Sequence
from typing import Any, NoReturn

from . import __version__
from ._args import bounded_int, cores, finite_float, seed, size_int, threads
from ._output import (
    PLOT_SUFFIXES,
    TABLE_SUFFIXES,
    atomic_dir,
    atomic_path,
    check_new_dir,
    check_output,
    check_output_dir,
    same_file,
)
from ._text import shape_text, si, text_table
from .errors import InputError, NeuralPowerError
from .layers import DTYPES, FIELD_INDEX, Architecture

__all__ = ["main"]


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line naming the verb and pointing at --help."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _source_files(args: argparse.Namespace) -> list[str]:
    """The files a verb that takes one architecture (and maybe a model file) reads."""
    return [p for p in (args.arch_source, getattr(args, "model", None)) if p]


def _one_architecture(args: argparse.Namespace, dtype: str | None, model: Any = None) -> Architecture:
    """The architecture the options of :func:`_add_arch_options` name (with a note on what an import skipped).

    With a ``model``, a zoo network is built in the model's dtype unless ``--dtype`` says otherwise, while a
    file keeps its own dtype: one that differs from the model's is refused (as ``score`` does), never
    predicted as another dtype behind the user's back.
    """
    from .sources import is_zoo_name, load_architectures, select_architecture

    if model is not None and dtype is None and is_zoo_name(args.arch_source):
        dtype = model.dtype
    archs = load_architectures(
        args.arch_source, batch=args.batch, image_size=args.image_size, dtype=dtype, allow_unknown=args.allow_unknown,
        seq_len=args.seq_len,
    )
    arch = select_architecture(archs, args.arch_source, args.arch)
    _skipped_note([arch])
    if model is not None and arch.dtype != model.dtype:
        raise InputError(
            f"{args.arch_source}: {arch.name} is {arch.dtype}, model {model.name} was fit for {model.dtype} "
            f"(--dtype {model.dtype} predicts it as {model.dtype})"
        )
    return arch


def _cmd_describe(args: argparse.Namespace) -> int:
    from .describe import Listing, describe_table, write_listing
    from .sources import is_table_file

    sys.stdout.flush()
    out = sys.stdout.buffer
    if is_table_file(args.arch_source):
        for option, value in (("--image-size", args.image_size), ("--seq-len", args.seq_len)):
            if value is not None:
                raise InputError(f"{option} applies to zoo networks, not to a layer table ({args.arch_source})")
        describe_table(args.arch_source, args.arch, args.format, out, batch=args.batch, dtype=args.dtype)
    else:
        write_listing(Listing.from_architecture(_one_architecture(args, args.dtype)), args.format, out)
    out.flush()
    return 0


def _cmd_zoo(args: argparse.Namespace) -> int:
    from . import zoo

    records: list[dict[str, Any]] = []
    for entry in zoo.entries():
        t = zoo.build(entry.name).totals()
        records.append(
            {
                "name": entry.name,
                "image_size": entry.image_size or None,
                "seq_len": entry.seq_len,
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
    print(f"{'name'.ljust(width)}      input  layers   params     MACs  description")
    for r in records:
        size = f"{r['image_size']}x{r['image_size']}" if r["image_size"] else f"{r['seq_len']} tokens"
        print(
            f"{r['name'].ljust(width)}  {size:>10}  {r['layers']:>6}  {si(r['params']):>7}  "
            f"{si(r['macs']):>7}  {r['description']}"
        )
    return 0


def _cmd_fit(args: argparse.Namespace) -> int:
    import time

    from .models.data import read_measurements
    from .models.fit import FitOptions, fit_models
    from .models.format import write_model_file
    from .models.report import format_summary, write_report

    check_output(args.out, option="--out", inputs=args.tables, suffixes=(".json",))
    if args.report:
        check_output_dir(args.report, option="--report", inputs=args.tables)
    start = time.perf_counter()
    data = read_measurements(args.tables)
    holdout: dict[tuple[str, str], tuple[Any, dict[str, Any]]] = {}

    def progress(message: str) -> None:
        print(f"fitting {message} ({time.perf_counter() - start:.0f} s)", file=sys.stderr)

    options = FitOptions(method=args.method, degree=args.degree, seed=args.seed, jobs=args.jobs, progress=progress,
                         holdout=holdout)
    doc = fit_models(data, options, gpu=args.gpu, executor=args.executor)
    if args.description:
        doc["description"] = args.description
    write_model_file(doc, args.out)
    print(format_summary(doc))
    print(
        f"\nwrote {args.out} ({len(data)} rows, {len(doc['layer_types'])} layer types, "
        f"{time.perf_counter() - start:.1f} s)"
    )
    if args.report:
        written = write_report(doc, holdout, args.report)
        print(f"wrote {len(written)} report files to {args.report}")
    return 0


def _cmd_import_neusight(args: argparse.Namespace) -> int:
    from ._output import atomic_dir, check_new_dir
    from .neusight import import_neusight
    from .table import write_arrow

    check_new_dir(args.out, option="--out", inputs=args.sources)
    result = import_neusight(args.sources, correct_drift=not args.keep_drift)
    with atomic_dir(args.out) as tmp:
        for name, table in result.tables.items():
            write_arrow(table, os.path.join(tmp, name), format="csv")
    for name, ops in result.rows.items():
        counts = ", ".join(f"{op} {n}" for op, n in ops.items())
        print(f"{os.path.join(args.out, name)}: {sum(ops.values())} rows ({counts})")
        left = result.left_out.get(name)
        if left:
            print("  traced nodes not written: " + ", ".join(f"{n} {why}" for why, n in left.items()))
        for op, drifts in result.drift.get(name, {}).items():
            for d in drifts:
                if d.significant:
                    what = "kept (--keep-drift)" if args.keep_drift else "removed (column drift_ms)"
                    print(f"  {op}: runtime drifts with the row order, {d.rise:+.3f} ms from the first row to the "
                          f"last (out-of-fold RMSPE {d.error_before:.1f}% without the drift, {d.error_after:.1f}% "
                          f"with it): {what}")
    return 0


def _cmd_import_aiconfigurator(args: argparse.Namespace) -> int:
    from ._output import atomic_dir, check_new_dir
    from .aiconfigurator import import_aiconfigurator
    from .table import write_arrow

    check_new_dir(args.out, option="--out", inputs=args.sources)
    result = import_aiconfigurator(args.sources)
    with atomic_dir(args.out) as tmp:
        for name, table in result.tables.items():
            write_arrow(table, os.path.join(tmp, name), format="csv")
    for name, ops in result.rows.items():
        counts = ", ".join(f"{op} {n}" for op, n in ops.items())
        short = result.short_windows.get(name, 0)
        note = f"; {short} with power measured over less than one NVML update (flag short_window)" if short else ""
        print(f"{os.path.join(args.out, name)}: {sum(ops.values())} rows ({counts}){note}")
    return 0


def _networks_dtype(args: argparse.Namespace) -> str | None:
    """The dtype of the networks a ``--gpu`` validation reads (the first network's)."""
    from .validate import read_networks

    return read_networks(args.networks)[0].dtype


def _cmd_validate_neusight(args: argparse.Namespace) -> int:
    from .neusight_networks import format_neusight, plot_neusight, validate_neusight

    for option in ("archs", "layers", "image_size", "seq_len"):
        if getattr(args, option):
            raise InputError(f"--{option.replace('_', '-')} does not apply to NeuSight's networks (each case file "
                             "names its network, batch and sequence length)")
    if args.plot:
        check_output(args.plot, option="--plot", inputs=[args.networks], suffixes=(".png",))
    model = _load_model(args, "fp32") if args.model or args.gpu else None
    record = validate_neusight([args.networks], model, peers=args.peers, nodes=args.nodes or bool(args.plot),
                               held_out=args.held_out)
    if model is not None:
        from .gpus import find_gpu

        measured_on = sorted({c["gpu"] for c in record["cases"]})
        try:
            predicts = find_gpu(model.gpu).name
            same = all(find_gpu(g).name == predicts for g in measured_on)
        except InputError:
            same = False
        if not same:
            print(f"note: the networks were measured on {', '.join(measured_on)}; {model.name or model.path} predicts "
                  f"{model.gpu}", file=sys.stderr)
    return _print_validation(args, record, format_neusight, plot_neusight)


def _print_validation(args: argparse.Namespace, record: dict[str, Any], text: Callable[[dict[str, Any]], str],
                      plot: Callable[[dict[str, Any], str], None]) -> int:
    """Print a validation record as ``--format`` asks, and draw it where ``--plot`` asks."""
    if args.format == "json":
        json.dump(record, sys.stdout, indent=1)
        sys.stdout.write("\n")
    else:
        print(text(record))
    if args.plot:
        plot(record, args.plot)
        print(f"wrote {args.plot}", file=sys.stderr if args.format == "json" else sys.stdout)
    return 0


def _cmd_validate(args: argparse.Namespace) -> int:
    from .neusight_networks import is_neusight
    from .validate import format_validation, plot_validation, validate_networks

    if is_neusight(args.networks):
        return _cmd_validate_neusight(args)
    for option in ("peers", "nodes", "held_out"):
        if getattr(args, option):
            raise InputError(f"--{option.replace('_', '-')} applies to NeuSight's measured networks only",
                             path=args.networks)
    if args.plot:
        check_output(args.plot, option="--plot", inputs=[args.networks, *(args.archs or [])], suffixes=(".png",))
    model = _load_model(args, _networks_dtype(args) if args.gpu else None)
    result = validate_networks(args.networks, model, arch_sources=args.archs or (), image_size=args.image_size,
                               seq_len=args.seq_len,
                               layers=args.layers or ())
    return _print_validation(args, result.record(), format_validation, plot_validation)


def _add_model_option(parser: argparse.ArgumentParser, model_help: str | None = None) -> None:
    group = parser.add_mutually_exclusive_group()
    group.add_argument(
        "--model", metavar="M",
        help=model_help or "a bundled model's name or a model JSON file (default: the bundled default)",
    )
    group.add_argument(
        "--gpu", metavar="NAME",
        help="predict this GPU (h200, h100, NVIDIA H100 80GB HBM3, ...): the bundled model measured on it for the "
        "architecture's dtype (`neuralpower models` lists them); for a GPU without one, the other GPUs' models "
        "carried through the datasheets and blended by how near each GPU is, and said so",
    )


def _load_model(args: argparse.Namespace, dtype: str | None = None) -> Any:
    """The model ``--model`` or ``--gpu`` names (``dtype`` picks a GPU's model; None: its preferred one)."""
    from .evaluator import load_model

    model = load_model(args.model, gpu=getattr(args, "gpu", None), dtype=dtype)
    if model.doc.get("carried_from"):
        print(f"note: no bundled model was measured on {model.gpu} for {model.dtype}: {model.name}, through the "
              "GPUs' datasheets; every layer's source says so", file=sys.stderr)
    return model


def _arch_dtype(args: argparse.Namespace) -> str | None:
    """The dtype a ``--gpu`` model is picked for: ``--dtype``, else a file's own (a zoo network: the GPU's)."""
    from .sources import is_zoo_name

    if args.dtype is not None or getattr(args, "gpu", None) is None or is_zoo_name(args.arch_source):
        return args.dtype  # type: ignore[no-any-return]
    return _one_architecture(args, None).dtype


def _check_table_output(path: str | None, option: str, inputs: Sequence[str]) -> None:
    """Refuse a table output path before any work (see :func:`neuralpower._output.check_output`)."""
    if path is not None:
        check_output(path, option=option, inputs=inputs, suffixes=TABLE_SUFFIXES)


def _fast_arrow_pool() -> None:
    """Arrow's jemalloc pool, where pyarrow has it and the user has not chosen one (ARROW_DEFAULT_MEMORY_POOL):
    block after block of decoded columns, it hands memory back and forth with fewer page faults than the
    default (mimalloc), which takes a tenth off scoring a Parquet file."""
    import contextlib

    import pyarrow as pa

    if os.environ.get("ARROW_DEFAULT_MEMORY_POOL"):
        return
    with contextlib.suppress(NotImplementedError, pa.ArrowException):  # a pyarrow built without it
        pa.set_memory_pool(pa.jemalloc_memory_pool())


def _cmd_score(args: argparse.Namespace) -> int:
    import contextlib
    import tempfile

    import numpy as np
    import pyarrow as pa

    from .stream import TableWriter, prefetch, read_blocks, result_table, score_blocks, table_files

    _fast_arrow_pool()
    folder = os.path.isdir(args.table)
    files = table_files(args.table) if folder else [args.table]
    inputs = [*files, *([args.table] if folder else []), *([args.model] if args.model else [])]
    # a folder of Parquet files may be scored into a folder (one Parquet file per input file) or into one file
    out_dir = folder and args.out is not None and not _is_table_name(args.out)
    per_layer_dir = folder and args.per_layer is not None and not _is_table_name(args.per_layer)
    for path, option, as_dir in ((args.out, "--out", out_dir), (args.per_layer, "--per-layer", per_layer_dir)):
        if path is None:
            continue
        if as_dir:
            check_new_dir(path, option=option, inputs=inputs)
        else:
            _check_table_output(path, option, inputs)
    if args.out and args.per_layer and same_file(args.out, args.per_layer):
        raise InputError(f"--out and --per-layer name the same file ({args.out})")
    onnx = args.table.lower().endswith(".onnx")
    # the table's first block is read while the model loads (a bad model is still the error reported first)
    blocks: Any = None if onnx else prefetch(read_blocks(args.table, extra={"error"}, whole=True))
    if args.dtype is not None and not onnx:
        blocks = _as_dtype(blocks, args.dtype)
    dtype = args.dtype
    if args.gpu is not None and dtype is None and not onnx:
        # a GPU's model is picked for the table's dtype: its first block's (a table of several dtypes is refused
        # as it is scored)
        first = next(blocks, None)
        rows = None if first is None else (first.distinct if first.distinct is not None else first.rows)
        dtype = None if rows is None or not len(rows) else DTYPES[int(rows[0, FIELD_INDEX["dtype"]])]
        blocks = itertools.chain([] if first is None else [first], blocks)
    model = _load_model(args, dtype)
    _power_note(model)
    if onnx:
        from .sources import load_architectures
        from .table import layer_table

        archs = load_architectures(args.table, allow_unknown=args.allow_unknown)
        _skipped_note(archs)
        if args.dtype is not None:
            archs = [a.with_dtype(args.dtype) for a in archs]
        blocks = iter([layer_table(archs, args.table)])
    parts = {f: i for i, f in enumerate(files)}
    names = [_part_name(args.table, f) for f in files]

    with contextlib.ExitStack() as stack:
        sink = None
        layer_dir = None
        if args.per_layer:
            # with --pareto the layers are written aside first, then those of the front copied out
            if args.pareto:
                aside = stack.enter_context(
                    tempfile.TemporaryDirectory(dir=os.path.dirname(os.path.abspath(args.per_layer.rstrip(os.sep))))
                )
            if per_layer_dir:
                layer_dir = stack.enter_context(atomic_dir(args.per_layer))
            single = os.path.join(aside, "layers.parquet") if args.pareto else args.per_layer
            sink = stack.enter_context(
                _PerLayerSink(
                    single=None if per_layer_dir else single,
                    folder=None if not per_layer_dir else (aside if args.pareto else layer_dir),
                    names={f: names[i] for f, i in parts.items()},
                )
            )
        if args.pareto:
            blocks = _with_error_column(blocks)
        progress = _Progress(enabled=True)
        try:
            totals = score_blocks(
                model, progress.wrap(blocks), threads=args.threads, per_layer=None if sink is None else sink.write,
                parts=parts,
            )
        except InputError as e:
            if e.column != "dtype" or "was fit for" not in e.message:
                raise
            # a table of another dtype than the model's: say how to score it
            raise InputError(f"{e.message}: --dtype {model.dtype} scores it as {model.dtype} with model {model.name}; "
                             "--gpu NAME picks a GPU's model for the table's dtype", path=e.path, row=e.row,
                             column=e.column) from None
        progress.done()
        if sink is not None:
            sink.close()
        result, kept = result_table(totals, model, args.alpha, args.pareto, path=args.table)
        if args.per_layer and args.pareto:
            front = pa.array(kept, pa.string())
            if per_layer_dir:
                assert layer_dir is not None
                for name in names:
                    _copy_front(os.path.join(aside, name), os.path.join(layer_dir, name), front)
            else:
                _copy_front(os.path.join(aside, "layers.parquet"), args.per_layer, front)
        if args.out is None:
            sys.stdout.flush()
            with TableWriter(sys.stdout.buffer, format="csv") as w:
                w.write(result.drop_columns(["_part"]))
            sys.stdout.buffer.flush()
        elif out_dir:
            with atomic_dir(args.out) as tmp:
                part = np.asarray(result.column("_part").to_numpy())
                for i, name in enumerate(names):
                    _write_parquet(result.filter(pa.array(part == i)).drop_columns(["_part"]), os.path.join(tmp, name))
        else:
            with TableWriter(args.out) as w:
                w.write(result.drop_columns(["_part"]))
    if args.out:
        print(
            f"scored {len(totals)} architectures ({int(totals.layers.sum())} layers) with {model.name}: wrote "
            f"{args.out}",
            file=sys.stderr,
        )
    return 0


def _with_error_column(blocks: Any) -> Any:
    """The blocks, refused at the first one when it has no error column (--pareto needs one)."""
    for k, block in enumerate(blocks):
        if k == 0 and "error" not in block.extra.column_names:
            raise InputError("--pareto needs an error column (top-1 error per architecture)", path=block.path)
        yield block


def _write_parquet(table: Any, path: str) -> None:
    """Write one file of an output folder (already a temporary folder: renamed whole when all is written)."""
    import pyarrow.parquet as pq

    os.makedirs(os.path.dirname(path), exist_ok=True)
    pq.write_table(table, path)


def _is_table_name(path: str) -> bool:
    """Whether an output path names a table file (by its suffix) rather than a folder."""
    return any(path.lower().endswith(s) for s in TABLE_SUFFIXES) and not path.endswith(os.sep)


def _part_name(source: str, file: str) -> str:
    """A file's path inside its folder (the name its scores get in an output folder), as a Parquet file."""
    if not os.path.isdir(source):
        return os.path.basename(file)
    rel = os.path.relpath(file, source)
    return rel if rel.lower().endswith((".parquet", ".pq")) else rel + ".parquet"


class _PerLayerSink:
    """Per-layer predictions written as the blocks are scored: into one file, or one Parquet file per input
    file in a folder. A context manager: leaving it on an error leaves no partial file."""

    def __init__(self, *, single: str | None, folder: str | None, names: dict[str, str]) -> None:
        self.single = single
        self.folder = folder
        self.names = names
        self.current: tuple[str, Any] | None = None

    def __enter__(self) -> _PerLayerSink:
        return self

    def write(self, table: Any, block: Any) -> None:
        from .stream import TableWriter

        key = "" if self.single is not None else block.path
        if self.current is None or self.current[0] != key:
            self._close(None)
            if self.single is not None:
                path = self.single
            else:
                assert self.folder is not None
                path = os.path.join(self.folder, self.names[block.path])
                os.makedirs(os.path.dirname(path), exist_ok=True)
            writer = TableWriter(path, format=None if self.single is not None else "parquet")
            writer.__enter__()
            self.current = (key, writer)
        self.current[1].write(table)

    def _close(self, exc: BaseException | None) -> None:
        if self.current is not None:
            writer, self.current = self.current[1], None
            writer.__exit__(type(exc) if exc else None, exc, None)

    def close(self) -> None:
        self._close(None)

    def __exit__(self, kind: Any, exc: BaseException | None, tb: Any) -> None:
        self._close(exc)


def _copy_front(source: str, target: str, front: Any) -> None:
    """Copy the rows of a per-layer file whose architecture is on the Pareto front, block by block."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    from .stream import TableWriter

    if not os.path.exists(source):  # a file of a folder that held no rows
        return
    os.makedirs(os.path.dirname(target) or ".", exist_ok=True)
    pf = pq.ParquetFile(source)
    with TableWriter(target) as w:
        for batch in pf.iter_batches():
            t = pa.Table.from_batches([batch])
            w.write(t.filter(pc.is_in(t.column("arch"), value_set=front)))


def _skipped_note(archs: Sequence[Architecture]) -> None:
    """Say which operations an import skipped (``--allow-unknown``)."""
    for arch in archs:
        skipped = str(arch.meta.get("skipped", ""))
        if skipped:
            items = skipped.split("; ")
            noun = "operation" if len(items) == 1 else "operations"
            print(f"note: {arch.name}: skipped {len(items)} unsupported {noun}: {skipped}", file=sys.stderr)


def _power_note(model: Any) -> None:
    if not model.power_measured:
        print(
            f"note: model {model.name} ({model.executor}) holds no power measurements: its power and energy "
            "predictions are 0",
            file=sys.stderr,
        )


class _Progress:
    """A progress line on stderr while a large table is scored (only on a terminal)."""

    def __init__(self, enabled: bool) -> None:
        import time

        self.rows = 0
        self.start = time.perf_counter()
        self.enabled = enabled and sys.stderr.isatty()
        self.shown = False

    def wrap(self, blocks: Any) -> Any:
        import time

        for block in blocks:
            yield block
            self.rows += len(block)
            if self.enabled and self.rows >= 500_000:
                rate = self.rows / max(time.perf_counter() - self.start, 1e-9)
                print(f"scored {self.rows:,} layers ({rate / 1e6:.1f} M layers/s) ...", end="\r", file=sys.stderr,
                      flush=True)
                self.shown = True

    def done(self) -> None:
        import time

        if self.shown:
            rate = self.rows / max(time.perf_counter() - self.start, 1e-9)
            print(f"scored {self.rows:,} layers ({rate / 1e6:.1f} M layers/s)    ", file=sys.stderr)


def _json_number(value: float) -> float | None:
    """A float for JSON: None (null) for NaN, which JSON cannot hold."""
    v = float(value)
    return None if v != v else v


def _bound_text(bounds: dict[str, float], quantity: str, unit: str, digits: int) -> str:
    name = quantity.split("_")[0]
    lo, hi = bounds[f"{quantity}_lo"], bounds[f"{quantity}_hi"]
    return f"{name} none (no interval)" if lo != lo or hi != hi else f"{name} {lo:.{digits}f} to {hi:.{digits}f} {unit}"


def _layer_values(p: Any) -> Any:
    """(layer, runtime, power, energy, extrapolated) of each layer of a prediction."""
    return zip(p.arch.layers, p.layer_runtime_ms, p.layer_power_w, p.layer_energy_mj, p.layer_extrapolated,
               strict=True)


def _as_dtype(blocks: Any, dtype: str) -> Any:
    """Layer-table blocks with every layer in ``dtype`` (attention's kv_dtype too where it was the layer's)."""
    import dataclasses

    from .layers import LAYER_TYPES

    code, d, kv = DTYPES.index(dtype), FIELD_INDEX["dtype"], FIELD_INDEX["kv_dtype"]
    attention = LAYER_TYPES.index("attention")

    def cast(rows: Any) -> Any:
        out = rows.copy()
        follow = (out[:, 0] == attention) & (out[:, kv] == out[:, d])
        out[:, d] = code
        out[follow, kv] = code
        return out

    for block in blocks:
        changes = {"_rows": None if block._rows is None else cast(block._rows)}
        if block.distinct is not None:
            changes["distinct"] = cast(block.distinct)
        yield dataclasses.replace(block, **changes)


def _cmd_predict(args: argparse.Namespace) -> int:
    if args.plot:
        check_output(args.plot, option="--plot", inputs=_source_files(args), suffixes=PLOT_SUFFIXES)
    model = _load_model(args, _arch_dtype(args))
    _power_note(model)
    arch = _one_architecture(args, args.dtype, model)
    p = model.predict(arch)
    if args.format == "json":
        out = {
            "name": arch.name,
            "batch": arch.batch,
            "dtype": arch.dtype,
            "model": model.name,
            "gpu": model.gpu,
            "executor": model.executor,
            "runtime_ms": p.runtime_ms,
            "power_w": p.power_w,
            "energy_mj": p.energy_mj,
            "bottleneck": p.bottleneck,
            **{k: _json_number(v) for k, v in p.bounds.items()},
            **({"interval_coverage": model.interval_coverage} if p.bounds else {}),
            "extrapolated_layers": int(p.layer_extrapolated.sum()),
            "per_layer": [
                {
                    "layer": layer.name,
                    "type": layer.type,
                    "runtime_ms": float(r),
                    "power_w": float(w),
                    "energy_mj": float(e),
                    "extrapolated": bool(x),
                    **{k: str(v[i]) for k, v in p.layer_sources.items()},
                    **{k: _json_number(v[i]) for k, v in p.layer_bounds.items()},
                }
                for i, (layer, r, w, e, x) in enumerate(_layer_values(p))
            ],
        }
        json.dump(out, sys.stdout, indent=1)
        sys.stdout.write("\n")
    else:
        header = ("#", "layer", "type", "output", "runtime_ms", "power_w", "energy_mj", "source", "")
        # each distinct (runtime, power) source gets a number, told below the table
        pairs = list(zip(p.layer_sources["runtime_source"], p.layer_sources["power_source"], strict=True))
        legend = {pair: k + 1 for k, pair in enumerate(dict.fromkeys(pairs))}
        rows = [
            (
                str(i),
                layer.name,
                layer.type,
                shape_text(layer.out_shape),
                f"{r:.4f}",
                f"{w:.1f}",
                f"{e:.4f}",
                f"[{legend[pairs[i]]}]",
                "extrapolated" if x else "",
            )
            for i, (layer, r, w, e, x) in enumerate(_layer_values(p))
        ]
        total = (
            "",
            "total",
            f"{len(arch)} layers",
            "",
            f"{p.runtime_ms:.4f}",
            f"{p.power_w:.1f}",
            f"{p.energy_mj:.4f}",
            "",
            "",
        )
        print(f"{arch.name}: batch {arch.batch}, {arch.dtype}; model {model.name} ({model.gpu}, {model.executor})")
        print("\n".join(text_table(header, rows, {0, 4, 5, 6}, total)))
        for (runtime_text, power_text), k in legend.items():
            print(f"[{k}] runtime: {runtime_text}; power: {power_text}")
        print(
            f"runtime {p.runtime_ms:.4f} ms, power {p.power_w:.1f} W, energy {p.energy_mj:.4f} mJ; "
            f"bottleneck by {'energy' if model.power_measured else 'runtime'}: {p.bottleneck}"
            + (
                f"; {int(p.layer_extrapolated.sum())} layers outside the model's training ranges"
                if p.extrapolated
                else ""
            )
        )
        if p.bounds:
            coverage = model.interval_coverage or 0.0
            parts = [_bound_text(p.bounds, q, unit, digits)
                     for q, unit, digits in (("runtime_ms", "ms", 4), ("power_w", "W", 1), ("energy_mj", "mJ", 4))]
            print(f"{coverage:.0%} prediction interval: " + ", ".join(parts))
    if args.plot:
        _plot_prediction(p, arch, model, args.plot)
        print(f"wrote {args.plot}", file=sys.stderr)
    return 0


def _plot_prediction(p: Any, arch: Architecture, model: Any, path: str) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise NeuralPowerError("--plot needs matplotlib: pip install 'neuralpower[plot]'") from None
    n = len(arch)
    title = f"{arch.name}, batch {arch.batch}, {arch.dtype}: {p.runtime_ms:.3f} ms"
    source = f"model {model.name} ({model.gpu}, {model.executor})"
    width = max(6.0, min(0.12 * n + 2, 40.0))
    x = range(n)
    if model.power_measured:
        fig, (ax1, ax2) = plt.subplots(2, 1, figsize=(width, 6), sharex=True)
        ax1.bar(x, p.layer_energy_mj, color="tab:red")
        ax1.set_ylabel("energy (mJ)")
        ax1.set_title(f"{title}, {p.power_w:.0f} W, {p.energy_mj:.2f} mJ\n{source}", fontsize=9)
    else:  # no power: an energy panel would be empty, so runtime is drawn alone and the title says why
        fig, ax2 = plt.subplots(1, 1, figsize=(width, 3.5))
        ax2.set_title(f"{title}\n{source}; it holds no power, so no energy is drawn", fontsize=9)
    ax2.bar(x, p.layer_runtime_ms, color="tab:blue")
    ax2.set_ylabel("runtime (ms)")
    ax2.set_xlabel("layer")
    if n <= 60:
        ax2.set_xticks(list(x), [layer.name for layer in arch.layers], rotation=90, fontsize=6)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=100)
    plt.close(fig)


def _cmd_models(args: argparse.Namespace) -> int:
    import numpy as np

    from .evaluator import bundled_models, default_model_name, load_model

    if args.model is not None:
        return _model_types(load_model(args.model), args.format)
    records = []
    for name in bundled_models():
        model = load_model(name)
        metrics: dict[str, list[float]] = {"runtime_ms": [], "power_w": []}
        for entry in model.doc["layer_types"].values():
            for target, values in metrics.items():
                block = entry[target]
                m = block["metrics"].get(block["default"], {})
                if m.get("rows_test"):
                    values.append(m["rmspe"])
        records.append(
            {
                "name": name,
                "gpu": model.gpu,
                "executor": model.executor,
                "dtype": model.dtype,
                "created": model.doc["created"],
                "layer_types": len(model.layer_types),
                "median_rmspe_runtime": float(np.median(metrics["runtime_ms"])) if metrics["runtime_ms"] else None,
                "median_rmspe_power": float(np.median(metrics["power_w"])) if metrics["power_w"] else None,
                "power_measured": model.power_measured,
                "carried_types": sum(any(model.source(t, target)[0] == "carried"
                                         for target in ("runtime_ms", "power_w")) for t in model.layer_types),
                "default": name == default_model_name(),
                "description": model.doc.get("description", ""),
            }
        )
    if args.format == "json":
        json.dump(records, sys.stdout, indent=1)
        sys.stdout.write("\n")
        return 0
    if not records:
        print("no bundled models")
        return 0
    for r in records:
        rt = "-" if r["median_rmspe_runtime"] is None else f"{r['median_rmspe_runtime']:.1f}%"
        pw = "-" if r["median_rmspe_power"] is None else f"{r['median_rmspe_power']:.1f}%"
        if not r["power_measured"]:
            pw = "not measured"
        print(
            f"{r['name']}{' (default)' if r['default'] else ''}: {r['gpu']}, executor {r['executor']}, "
            f"{r['dtype']}, fit {r['created'][:10]}, {r['layer_types']} layer types"
            + (f" ({r['carried_types']} carried over: `neuralpower models {r['name']}`)" if r["carried_types"] else "")
            + f"; median held-out RMSPE runtime {rt}, power {pw}"
        )
        if r["description"]:
            print(f"    {r['description']}")
    return 0


def _model_types(model: Any, fmt: str) -> int:
    """Per layer type of one model: its default models, held-out RMSPE and sources."""
    records = []
    for t, entry in model.doc["layer_types"].items():
        record: dict[str, Any] = {"type": t}
        for target in ("runtime_ms", "power_w"):
            block = entry[target]
            m = block["metrics"].get(block["default"], {})
            how, text = model.source(t, target)
            interval = block.get("interval") or {}
            record[target] = {"default": block["default"], "rmspe": m.get("rmspe") if m.get("rows_test") else None,
                              "how": how, "source": text, "scale": float(block.get("scale", 1.0)),
                              # the share of held-out rows the 90 % interval held (None: not measured, or none)
                              "interval_coverage": interval.get("test_coverage"),
                              "interval_groups": _groups(interval.get("split"))}
        energy = entry.get("energy_interval")
        if energy is not None:  # energy's own interval (else its bounds are runtime's times power's)
            record["energy_interval"] = {"lo": energy["lo"], "hi": energy["hi"],
                                         "interval_coverage": energy.get("test_coverage"),
                                         "interval_groups": _groups(energy.get("split"))}
        records.append(record)
    if fmt == "json":
        json.dump({"model": model.name, "gpu": model.gpu, "dtype": model.dtype, "layer_types": records}, sys.stdout,
                  indent=1)
        sys.stdout.write("\n")
        return 0
    print(f"{model.name}: {model.gpu}, {model.dtype}")
    for r in records:
        for target, label in (("runtime_ms", "runtime"), ("power_w", "power")):
            v = r[target]
            rmspe = "" if v["rmspe"] is None else f", held-out RMSPE {v['rmspe']:.1f}%"
            rmspe += _interval_text(v)
            if rmspe and v["scale"] != 1:  # the metrics are the fit's, on its own rows
                rmspe += f", before the scale {v['scale']:.3g}"
            print(f"{r['type'] if target == 'runtime_ms' else '':<19} {label:<8} {v['how'] or '-':<9} {v['source']} "
                  f"[{v['default']}{rmspe}]")
        if "energy_interval" in r:
            print(f"{'':<19} {'energy':<8} {'-':<9} its own 90% interval, calibrated on configurations with both "
                  f"measured [{_interval_text(r['energy_interval']).lstrip(', ')}]")
    return 0


def _groups(split: Any) -> int:
    """How many groups an interval's ``split`` makes (1: none)."""
    return 1 if not isinstance(split, dict) or "feature" not in split else _groups(split["yes"]) + _groups(split["no"])


def _interval_text(v: dict[str, Any]) -> str:
    if v["interval_coverage"] is None:
        return ""
    groups = f" in {v['interval_groups']} groups" if v["interval_groups"] > 1 else ""
    return f", 90% interval{groups} held {v['interval_coverage']:.0f}%"


def _fraction(text: str) -> float:
    """``10%`` or ``0.1``."""
    raw = text.strip()
    try:
        value = float(raw[:-1]) / 100 if raw.endswith("%") else float(raw)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a fraction (10% or 0.1)") from None
    if not 0 < value <= 1:
        raise argparse.ArgumentTypeError(f"{text!r} must be above 0 and at most 100%")
    return value


def _cmd_tune(args: argparse.Namespace) -> int:
    from .tune import tune

    _check_table_output(args.out, "--out", _source_files(args))
    model = _load_model(args, _arch_dtype(args))
    arch = _one_architecture(args, args.dtype, model)
    result = tune(arch, model, objective=args.objective, max_change=args.max_change)
    unit = "ms" if args.objective == "runtime" else "mJ"
    pct = 100 * result.saving / result.total_before if result.total_before > 0 else 0.0
    changed_layers = [
        (arch.layers[i].name, float(b), float(a))
        for i, (b, a) in enumerate(zip(result.layer_before, result.layer_after, strict=True))
        if b != a
    ]
    if args.format == "json":
        out = {
            "name": arch.name, "batch": arch.batch, "dtype": arch.dtype, "model": model.name,
            "objective": args.objective, "unit": unit, "max_change": args.max_change,
            "total_before": result.total_before, "total_after": result.total_after, "saving": result.saving,
            "saving_pct": pct,
            "suggestions": [
                {"layer": s.layer, "index": s.index, "width": s.width, "suggested": s.suggested,
                 "before": s.cost_before, "after": s.cost_after, "saving": s.saving, "local_minima": s.local_minima,
                 "layers": [arch.layers[i].name for i in s.layers]}
                for s in result.suggestions
            ],
            "per_layer": [{"layer": n, "before": b, "after": a, "saving": b - a} for n, b, a in changed_layers],
            "kept": [{"layer": n, "reason": r} for n, r in result.kept],
        }
        json.dump(out, sys.stdout, indent=1)
        sys.stdout.write("\n")
    else:
        print(f"{arch.name}: batch {arch.batch}, {arch.dtype}; model {model.name} ({model.gpu}, {model.executor}); "
              f"{args.objective} within {args.max_change:.0%} of each width")
        header = ("#", "layer", "width", "suggested", f"before_{unit}", f"after_{unit}", f"saving_{unit}", "saving",
                  "local minima")
        rows = []
        for s in result.suggestions:
            minima = ",".join(map(str, s.local_minima[:8])) + (",..." if len(s.local_minima) > 8 else "")
            rows.append((
                str(s.index), s.layer, str(s.width), str(s.suggested) if s.changed else "=", f"{s.cost_before:.4f}",
                f"{s.cost_after:.4f}", f"{s.saving:.4f}",
                f"{100 * s.saving / s.cost_before:.1f}%" if s.cost_before > 0 else "", minima or "none",
            ))
        print("\n".join(text_table(header, rows, {0, 2, 3, 4, 5, 6, 7})))
        if changed_layers:
            print(f"per layer ({unit}):")
            print("\n".join(text_table(
                ("layer", "before", "after", "saving"),
                [(n, f"{b:.4f}", f"{a:.4f}", f"{b - a:.4f}") for n, b, a in changed_layers], {1, 2, 3},
            )))
        print(f"network {args.objective}: {result.total_before:.4f} -> {result.total_after:.4f} {unit} "
              f"(saving {result.saving:.4f} {unit}, {pct:.1f}%); {sum(s.changed for s in result.suggestions)} of "
              f"{len(result.suggestions)} widths changed, {len(result.kept)} kept (tied or not a plain chain)")
        if result.kept:
            shown = "; ".join(f"{n}: {r}" for n, r in result.kept[:3])
            print(f"kept: {shown}" + (f"; and {len(result.kept) - 3} more (--format json lists all)"
                                       if len(result.kept) > 3 else ""))
    if args.out:
        from .table import write_architectures

        with atomic_path(args.out) as tmp:
            write_architectures([result.tuned], tmp)
        print(f"wrote the tuned architecture to {args.out}", file=sys.stderr)
    return 0


def _add_arch_options(parser: argparse.ArgumentParser, *, image_size_default: str, dtype_default: str) -> None:
    """The options of verbs that take one architecture (a zoo name or a layer table)."""
    parser.add_argument("--arch", metavar="ID", help="which architecture of a layer table holding several")
    parser.add_argument(
        "--batch", type=size_int, help="batch size (default: 1 for zoo networks, the table's own for files)"
    )
    parser.add_argument(
        "--image-size",
        type=size_int,
        metavar="N",
        help=f"input height and width of a zoo image network (default: {image_size_default})",
    )
    parser.add_argument(
        "--seq-len",
        type=size_int,
        metavar="N",
        help="sequence length of a zoo language model (bert_base, bert_large, gpt2; default: its entry's, see "
        "`neuralpower zoo`)",
    )
    parser.add_argument("--dtype", choices=list(DTYPES), help=f"element type (default: {dtype_default})")
    _add_allow_unknown(parser)


def _add_allow_unknown(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--allow-unknown",
        action="store_true",
        help="for an ONNX file: skip operators neuralpower has no layer type for (listed on stderr) instead of "
        "stopping",
    )


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
        help="a zoo network name (see `neuralpower zoo`), a layer table file (.csv or .parquet) or an .onnx file",
    )
    _add_arch_options(
        d,
        image_size_default="its published resolution",
        dtype_default="fp32 for zoo networks, the table's own for files",
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
    f.add_argument(
        "tables",
        metavar="TABLE",
        nargs="+",
        help="measurement tables (.csv or .parquet), for example what `neuralpower bench` writes",
    )
    f.add_argument("--out", required=True, metavar="MODEL.json", help="where to write the model file")
    f.add_argument(
        "--method",
        choices=["poly", "tree", "boosted", "all"],
        default="poly",
        help="poly: NeuralPower's sparse "
        "polynomial (Lasso-selected terms); tree: FastDeepIoT's model tree; boosted: gradient-boosted trees (log "
        "runtime; histogram-based, of log power); all: the three, boosted only where a type has at least 400 "
        "configurations. Each type's default is the method, or baseline, with the lowest validation error "
        "(default: poly)",
    )
    f.add_argument(
        "--degree",
        type=bounded_int(1, 4),
        default=3,
        help="highest degree of the polynomial terms, 1 to 4 (default: 3)",
    )
    f.add_argument(
        "--report",
        metavar="DIR",
        help="also write the table as DIR/summary.csv and a predicted-vs-measured plot per layer type and target (PNG)",
    )
    f.add_argument("--gpu", help="GPU name to record in the model (default: the tables' gpu column)")
    f.add_argument("--executor", help="executor to record (default: the tables' executor column)")
    f.add_argument("--description", help="a sentence saying what the model is, shown by `neuralpower models`")
    f.add_argument("--seed", type=seed, default=0, help="seed of the held-out split and cross-validation (default: 0)")
    f.add_argument("--jobs", type=threads, default=None,
                   help="threads fitting at once (default: the cores this process may use; the model is the same "
                        "whatever the number)")
    f.set_defaults(run=_cmd_fit)

    va = verbs.add_parser(
        "validate",
        help="compare predictions with whole networks measured by bench-network",
        description="Predict every network that `neuralpower bench-network` measured and compare: per network "
        "and batch size the measured and predicted runtime, power and energy and their errors, then the MAPE of "
        "each quantity for the model's default and for each method it holds (poly, tree, roofline, "
        "flops_linear). Trials are combined by their median. Given NeuSight's measured networks instead, each is "
        "built from its configuration (the zoo's hf_* networks) and predicted with the fp32 model of the GPU its "
        "folder is named after (or --gpu/--model): measured and predicted end-to-end runtime, the MAPE, and the "
        "peers' (--peers).",
    )
    va.add_argument("networks", metavar="NETWORKS",
                    help="what bench-network wrote (networks.csv or its folder), or NeuSight's measured networks (a "
                    "folder of <model>-inf-<seq_len>-<batch>.json files, or one)")
    _add_model_option(va)
    va.add_argument("--format", choices=["table", "json"], default="table", help="output format (default: table)")
    va.add_argument("--plot", metavar="OUT.png", help="also draw predicted against measured (PNG)")
    va.add_argument(
        "--archs",
        metavar="ARCH",
        nargs="+",
        help="the architectures bench-network ran, where they are not zoo networks at their published size "
        "(layer tables, .onnx files or zoo names)",
    )
    va.add_argument("--image-size", type=size_int, metavar="N", help="input size the zoo networks were run at")
    va.add_argument("--seq-len", type=size_int, metavar="N", help="sequence length the zoo language models were run at")
    va.add_argument(
        "--layers",
        metavar="TABLE",
        nargs="+",
        help="measurement tables of single layers (what bench wrote): also show the sum of each network's "
        "layers measured alone, where all were",
    )
    va.add_argument("--peers", metavar="DIR",
                    help="NeuSight's networks: the peers' predictions (NeuSight's predicted/ folder, or one GPU's): "
                    "each peer's prediction per network and its MAPE beside ours")
    va.add_argument("--nodes", action="store_true",
                    help="NeuSight's networks: also compare every traced kernel (measured alone) with its layer's "
                    "prediction, per layer type")
    va.add_argument("--held-out", action="store_true",
                    help="NeuSight's networks: predict each with linear calibrated to the traces of its GPU's other "
                    "networks only (leave one network out; the bundled models are calibrated to all of them)")
    va.set_defaults(run=_cmd_validate)

    im = verbs.add_parser(
        "import-neusight",
        help="turn NeuSight's public GPU operator measurements into measurement tables",
        description="Read NeuSight's operator measurement files (<op>/<gpu>.csv or .csv.gz, from "
        "github.com/sitar-lab/NeuSight) and write one measurement table per GPU (runtime_ms, no power) "
        "that `neuralpower fit` reads (conv, linear, bmm, relu, gelu, softmax, ln, add and mul). Each file's "
        "runtimes are checked for drift with the row order (an overhead that grows while the table was "
        "measured, which the configurations do not explain); a drift that counts is removed and said. NeuSight's "
        "network traces (<model>-inf-<seq_len>-<batch>.csv.gz) become tables of their own (<gpu>-traces.csv): "
        "one layer per traced node that runs a kernel, measured alone; nodes that run none in a network (views, "
        "dropout, size arithmetic) and kernels with no layer type (tensor creation) are counted and left out.",
    )
    im.add_argument("sources", metavar="SOURCE", nargs="+",
                    help="NeuSight CSV files (operator tables or network traces), or folders searched for them")
    im.add_argument("--out", required=True, metavar="DIR", help="a new (or empty) folder for the tables")
    im.add_argument("--keep-drift", action="store_true",
                    help="keep the runtimes as measured: a drift found is only reported")
    im.set_defaults(run=_cmd_import_neusight)

    ia = verbs.add_parser(
        "import-aiconfigurator",
        help="turn NVIDIA aiconfigurator's public GPU kernel measurements into measurement tables",
        description="Read aiconfigurator's kernel measurement files (Parquet: gemm, context_attention, "
        "generation_attention, encoder_attention; from github.com/ai-dynamo/aiconfigurator) and write one "
        "measurement table per GPU and dtype (runtime_ms, and power_w where measured) that `neuralpower fit` "
        "reads. GEMMs are linear layers on m tokens, prefill attention is causal over isl tokens, decode attention "
        "is one query token over a KV cache of isl + step tokens, encoder attention is not causal. Each row is "
        "an architecture of its own (arch = <op_name>:<row>). Power measured over a loop shorter than one NVML "
        "update is flagged short_window.",
    )
    ia.add_argument("sources", metavar="SOURCE", nargs="+",
                    help="aiconfigurator Parquet files, or folders searched for them")
    ia.add_argument("--out", required=True, metavar="DIR", help="a new (or empty) folder for the tables")
    ia.set_defaults(run=_cmd_import_aiconfigurator)

    sc = verbs.add_parser(
        "score",
        help="predict runtime, power and energy of every architecture in a layer table",
        description="Score many candidate architectures at once: one row per architecture with its layers, "
        "runtime_ms, power_w, energy_mj, the energy-precision ratio (epr) when the table has an error column "
        "(rows then ranked by it, lowest first, with a rank column), the bottleneck layer by energy (by runtime "
        "under a model without power) and how many "
        "layers lie outside the model's training ranges.",
    )
    sc.add_argument(
        "table",
        metavar="TABLE",
        help="a layer table (.csv or .parquet) holding the architectures, a folder of Parquet layer tables (a "
        "dataset: scored file after file; --out and --per-layer may then name a new folder, which gets one "
        "Parquet file per input file), or an .onnx file",
    )
    _add_allow_unknown(sc)
    _add_model_option(sc, "a bundled model's name (see `neuralpower models`) or a model JSON file (default: the "
                      "bundled default)")
    sc.add_argument("--dtype", choices=DTYPES, help="score every layer as this dtype (attention's kv_dtype follows "
                    "where it was the layer's dtype; default: the table's own)")
    sc.add_argument(
        "--out",
        metavar="OUT",
        help="write the scores to OUT.csv or OUT.parquet, or to a new folder OUT for a folder TABLE (default: CSV "
        "on standard output)",
    )
    sc.add_argument(
        "--per-layer",
        metavar="PATH",
        help="also write every layer's prediction to PATH (.csv or .parquet; a new folder for a folder TABLE), "
        "as the table is read",
    )
    sc.add_argument(
        "--alpha",
        type=finite_float(minimum=0.0),
        default=1.0,
        help="exponent of the error in epr = error^alpha x energy_mj, 0 or more (default: 1.0)",
    )
    sc.add_argument(
        "--pareto",
        action="store_true",
        help="keep only the architectures on the Pareto front of (error, energy_mj): none other has both a "
        "lower or equal error and a lower or equal energy (runtime_ms under a model without power); needs an "
        "error column",
    )
    sc.add_argument(
        "--threads",
        type=threads,
        default=cores(),
        help="evaluator threads (default: the cores this process may use)",
    )
    sc.set_defaults(run=_cmd_score)

    pr = verbs.add_parser(
        "predict",
        help="per-layer runtime, power and energy of one network",
        description="Predict one network layer by layer: runtime, power and energy per layer and in total.",
    )
    pr.add_argument("arch_source", metavar="ARCH", help="a zoo network name, a layer table file or an .onnx file")
    _add_arch_options(pr, image_size_default="its published resolution", dtype_default="the model's")
    _add_model_option(pr)
    pr.add_argument("--format", choices=["table", "json"], default="table", help="output format (default: table)")
    pr.add_argument("--plot", metavar="OUT.png", help="also draw energy and runtime per layer as bar charts")
    pr.set_defaults(run=_cmd_predict)

    tu = verbs.add_parser(
        "tune",
        help="suggest nearby channel counts that run faster or use less energy",
        description="Width steering (FastDeepIoT): for every conv and linear layer whose width can change on its "
        "own, try the widths within --max-change, find the local minima of the predicted runtime or energy of the "
        "layers that width touches, and suggest the nearest one that costs less. Widths feeding add, mul, concat "
        "or a branch are kept, and said so. A smooth model (poly) has no local minima; a tree model "
        "(fit --method tree) captures the integer-multiple effects.",
    )
    tu.add_argument("arch_source", metavar="ARCH", help="a zoo network name, a layer table file or an .onnx file")
    _add_arch_options(tu, image_size_default="its published resolution", dtype_default="the model's")
    _add_model_option(tu)
    tu.add_argument(
        "--objective", choices=["runtime", "energy"], default="runtime", help="what to lower (default: runtime)"
    )
    tu.add_argument(
        "--max-change", type=_fraction, default=0.10, metavar="P",
        help="how far from each width to look: 10%% or 0.1 (default: 10%%)",
    )
    tu.add_argument("--format", choices=["table", "json"], default="table", help="output format (default: table)")
    tu.add_argument(
        "--out", metavar="PATH", help="also write the tuned architecture as a layer table (.csv or .parquet)"
    )
    tu.set_defaults(run=_cmd_tune)

    mo = verbs.add_parser(
        "models",
        help="list the bundled models",
        description="List the bundled models: GPU, executor, dtype, date and fit metrics; with a model, each layer "
        "type's default model, held-out error and where its runtime and power come from (measured on the model's GPU, "
        "or carried over, and from what).",
    )
    mo.add_argument("model", nargs="?", metavar="MODEL", help="a bundled model's name or a model JSON file")
    mo.add_argument("--format", choices=["table", "json"], default="table", help="output format (default: table)")
    mo.set_defaults(run=_cmd_models)

    from .bench.cli import add_bench_parsers

    add_bench_parsers(verbs)
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
