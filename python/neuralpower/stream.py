"""Layer tables of any size, read and scored in blocks with bounded memory.

A table is read block by block (CSV: about :data:`BLOCK_BYTES` of text at a time, split between records;
Parquet: :data:`BLOCK_ROWS` rows at a time, by row group; a folder: its Parquet files one after another, as a
pyarrow dataset finds them). Each block is validated as :func:`neuralpower.read_layer_table` validates a whole
table, and errors name the file and the row in it. While one block is scored the next is read.

Scoring keeps, per architecture, only its running totals (:class:`Totals`): an architecture whose rows
cross a block edge, or a file edge, or that reappears further down, is merged into one, in order of first
appearance, exactly as a whole-table read would group it. Memory is a few blocks plus about a hundred bytes
per architecture, whatever the number of layers.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import itertools
import os
import re
import sys
from collections.abc import Callable, Collection, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc

from . import _evaluator as _ev
from ._args import cores
from .errors import InputError
from .evaluator import BOUND_SUMS, SOURCE_COLUMNS, interval_values
from .layers import AXIS_PAIRS, DTYPE_FIELDS, DTYPES, FIELD_INDEX, FIELDS, LAYER_TYPES
from .table import (
    _KNOWN,
    LayerTable,
    _csv_error,
    _csv_names,
    _open_binary,
    _parse,
    _wanted,
    check_table_file,
    csv_output_stream,
    csv_writer,
    parquet_error,
    read_csv_text,
    table_format,
    used_rows,
)

__all__ = [
    "BLOCK_BYTES",
    "BLOCK_ROWS",
    "TableWriter",
    "Totals",
    "read_blocks",
    "result_table",
    "score_blocks",
    "table_files",
]

#: CSV text read per block (bytes); a block ends at a record's end.
BLOCK_BYTES = 16 << 20
#: Parquet rows read per block.
BLOCK_ROWS = 1 << 18
_PARQUET_SUFFIXES = (".parquet", ".pq")


def table_files(path: str | os.PathLike[str]) -> list[str]:
    """The files of a table source: the file itself, or a folder's Parquet files (a pyarrow dataset: nested
    and Hive-partitioned folders included, files whose names start with ``.`` or ``_`` left out), sorted."""
    spath = os.fspath(path)
    if not os.path.isdir(spath):
        return [spath]
    import pyarrow.dataset as ds

    try:
        dataset = ds.dataset(spath, format="parquet", exclude_invalid_files=False)
    except (pa.ArrowException, OSError) as e:
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise InputError(f"not a folder of Parquet files: {first}", path=spath) from None
    files = sorted(dataset.files)
    if not files:
        raise InputError("the folder holds no Parquet files", path=spath)
    for file in files:  # a folder is a dataset of Parquet files: another file is refused, not read as one
        if table_format(file) != "parquet" or (
            not file.lower().endswith(_PARQUET_SUFFIXES) and not _starts_with_magic(file)
        ):
            raise InputError(
                "not a Parquet file: a folder is read as a dataset of Parquet files (move other files out, or "
                "name them with a leading '.' or '_')",
                path=file,
            )
    return files


def _starts_with_magic(path: str) -> bool:
    try:
        with open(path, "rb") as f:
            return f.read(4) == b"PAR1"
    except OSError:
        return False


def read_blocks(
    path: str | os.PathLike[str],
    extra: Collection[str] | None = None,
    *,
    block_bytes: int | None = None,
    block_rows: int | None = None,
    whole: bool = False,
) -> Iterator[LayerTable]:
    """The validated blocks of a layer table (a CSV or Parquet file, or a folder of Parquet files), in order.

    ``extra`` names the columns beyond the layer-table format to keep (default: all). ``block_bytes`` and
    ``block_rows`` default to :data:`BLOCK_BYTES` and :data:`BLOCK_ROWS`. Each block's
    :attr:`~neuralpower.table.LayerTable.first` is its first row's index in its file. With ``whole``, a
    block ends between architectures: the rows of the architecture a block ends in are held back and lead
    the next block of the same file (unless they alone outgrow a few blocks), so that each architecture is
    evaluated in one pass, its sums in the order of a whole-table read.

    Raises
    ------
    InputError
        The first problem found, naming the file, row and column.
    """
    block_bytes = BLOCK_BYTES if block_bytes is None else block_bytes
    block_rows = BLOCK_ROWS if block_rows is None else block_rows
    files = table_files(path)
    folder = len(files) > 1 or os.path.isdir(os.fspath(path))
    any_rows = False
    for file in files:
        check_table_file(file)
        fmt = table_format(file)
        rows = 0
        # a Parquet file's next batch is decoded while this one is validated (a CSV block is read and parsed
        # in one step)
        parts = (
            prefetch(_parquet_parts(file, extra, block_rows)) if fmt == "parquet"
            else _csv_parts(file, extra, block_bytes)
        )
        tables = (t if isinstance(t, LayerTable) else _parse(file, fmt, t, first) for t, first in parts)
        for table in _whole_architectures(tables, 4 * block_rows) if whole else tables:
            rows += len(table)
            yield table
        if rows == 0 and not folder:
            raise InputError("the table has a header but no rows", path=file)
        any_rows = any_rows or rows > 0
    if not any_rows:
        raise InputError("no file of the folder holds a row", path=os.fspath(path))


def _whole_architectures(blocks: Iterable[LayerTable], most: int) -> Iterator[LayerTable]:
    """Blocks of one file, each ending between architectures: the trailing run of rows of a block's last
    architecture leads the next block (rows that follow it in the file), unless it holds more than ``most``."""
    held: LayerTable | None = None
    for block in blocks:
        codes = np.asarray(block.arch_encoded().indices.to_numpy(zero_copy_only=False))
        if len(codes) == 0:
            continue
        if held is not None:
            # the held rows and the run of the same architecture this block starts with: a small block of their
            # own (joining them to the whole block would copy it)
            name = held.arch_encoded().dictionary[0].as_py()
            lead = 0
            if block.arch_encoded().dictionary[int(codes[0])].as_py() == name:
                change = np.flatnonzero(codes != codes[0])
                lead = int(change[0]) if len(change) else len(block)
            joined = _joined(held, _rows_of(block, 0, lead)) if lead else held
            held = None
            if lead == len(block) and len(joined) <= most:
                held = joined  # the architecture goes on into the next block
                continue
            yield joined
            if lead == len(block):
                continue
            block = _rows_of(block, lead, len(block))
            codes = codes[lead:]
        change = np.flatnonzero(codes != codes[-1])
        start = int(change[-1]) + 1 if len(change) else 0
        if 0 < len(block) - start <= most:
            if start == 0:
                held = block
                continue
            held = _rows_of(block, start, len(block))
            block = _rows_of(block, 0, start)
        yield block
    if held is not None:
        yield held


def _rows_of(table: LayerTable, a: int, b: int) -> LayerTable:
    """Rows ``a`` to ``b`` of a block, a block of its own (numbered from its place in the file)."""
    if a == 0 and b == len(table):
        return table
    distinct, index = table.distinct_rows()
    if index is not None:
        index = index[a:b]
        if 4 * (b - a) < len(distinct):  # a few rows: only their distinct rows go with them
            distinct, index, _ = used_rows(distinct, index)
    return LayerTable(
        table.path, None if index is not None else distinct[a:b], table.arch_column.slice(a, b - a),
        table.layer_column.slice(a, b - a), table.extra.slice(a, b - a), table.fmt, table.first + a,
        _encoded=_encoded_slice(table._encoded, a, b),
        distinct=None if index is None else distinct, index=index,
    )


def _encoded_slice(encoded: pa.DictionaryArray | None, a: int, b: int) -> pa.DictionaryArray | None:
    """Rows ``a`` to ``b`` of a dictionary-encoded architecture column, still encoded in order of first
    appearance: made from the column's codes where each architecture's rows follow each other (the common
    case), else None (encoded again when asked)."""
    if encoded is None or b <= a:
        return None
    codes = np.asarray(encoded.indices.slice(a, b - a).to_numpy(zero_copy_only=False))
    steps = np.diff(codes)
    if not ((steps == 0) | (steps == 1)).all():
        return None
    start = int(codes[0])
    return pa.DictionaryArray.from_arrays(
        pa.array(codes - start, pa.int32()), encoded.dictionary.slice(start, int(codes[-1]) - start + 1)
    )


def _joined(a: LayerTable, b: LayerTable) -> LayerTable:
    """Two blocks of a file that follow each other, as one."""
    extra = pa.concat_tables([a.extra, b.extra], promote_options="permissive") if a.extra.num_columns else b.extra
    (da, ia), (db, ib) = a.distinct_rows(), b.distinct_rows()
    ia = np.arange(len(da), dtype=np.int64) if ia is None else ia
    ib = np.arange(len(db), dtype=np.int64) if ib is None else ib
    return LayerTable(
        b.path, None, pa.concat_arrays([a.arch_column.cast(pa.string()), b.arch_column.cast(pa.string())]),
        pa.concat_arrays([a.layer_column.cast(pa.string()), b.layer_column.cast(pa.string())]), extra, b.fmt, a.first,
        distinct=np.concatenate([da, db]), index=np.concatenate([ia, ib + len(da)]),
    )


_T = TypeVar("_T")


def prefetch(blocks: Iterator[_T]) -> Iterator[_T]:
    """The same blocks, the next one read (in a thread: reading and validating release the GIL) while the
    caller works on the current one. The first is read from the call on, before the first is asked for."""
    pool = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="neuralpower-read")
    sentinel = object()
    first = pool.submit(next, blocks, sentinel)

    def iterate() -> Iterator[_T]:
        pending = first
        try:
            while True:
                block = pending.result()
                if block is sentinel:
                    return
                pending = pool.submit(next, blocks, sentinel)
                yield block  # type: ignore[misc]
        finally:
            pool.shutdown(wait=True)

    return iterate()


def _parquet_parts(path: str, extra: Collection[str] | None, block_rows: int) -> Iterator[tuple[pa.Table, int]]:
    import pyarrow.parquet as pq

    try:
        metadata = pq.read_metadata(path)
        schema = metadata.schema.to_arrow_schema()
        # names that repeat (type, dtype, arch, layer) read as the file's dictionaries, not as a string per row
        names = [f.name for f in schema
                 if f.name.strip().lower() in ("type", *DTYPE_FIELDS, "arch", "layer") and pa.types.is_string(f.type)]
        pf = pq.ParquetFile(path, metadata=metadata, read_dictionary=names)
        columns = None if extra is None else _wanted(schema.names, extra)
        batches = pf.iter_batches(batch_size=block_rows, columns=columns)
    except (pa.ArrowException, OSError) as e:
        raise parquet_error(path, e) from None
    first = 0
    while True:
        try:
            batch = next(batches)
        except StopIteration:
            return
        except (pa.ArrowException, OSError) as e:
            raise parquet_error(path, e) from None
        if batch.num_rows:
            yield pa.Table.from_batches([batch]), first
            first += batch.num_rows


_TEXT = re.compile(rb"\S")


def _quotes(buf: bytes | bytearray, end: int) -> int:
    """The number of quote characters in ``buf[:end]``."""
    return int(np.count_nonzero(np.frombuffer(buf, dtype=np.uint8, count=end) == 34))


def _record_end(buf: bytes | bytearray, end: int | None = None) -> int | None:
    """The index just past the last newline of ``buf[:end]`` that ends a record (one outside quotes: an even
    number of quote characters before it), or None."""
    pos = buf.rfind(b"\n", 0, len(buf) if end is None else end)
    if pos < 0:
        return None
    quotes = _quotes(buf, pos)
    while pos >= 0:
        if quotes % 2 == 0:
            return pos + 1
        before = buf.rfind(b"\n", 0, pos)
        quotes -= buf.count(b'"', before + 1, pos)
        pos = before
    return None


def _first_record_end(buf: bytes | bytearray, end: int | None = None) -> int | None:
    """The index just past the header record of ``buf[:end]`` (blank lines before it included), or None."""
    quotes = 0
    start = 0
    end = len(buf) if end is None else end
    while True:
        pos = buf.find(b"\n", start, end)
        if pos < 0:
            return None
        quotes += buf.count(b'"', start, pos)
        if quotes % 2 == 0 and buf[:pos].strip():
            return pos + 1
        start = pos + 1


def _fast_roles(names: list[str], extra: Collection[str] | None) -> tuple[list[tuple[Any, ...]], list[str]] | None:
    """The roles of a CSV header's columns for the core's fast reader, and the extra columns it keeps; None
    when the fast reader does not apply (every column kept, a column twice, a pair column beside one of its
    axes)."""
    if extra is None:
        return None
    roles: list[tuple[Any, ...]] = []
    kept: list[str] = []
    keys = [n.strip().lower() if n.strip().lower() in _KNOWN else n for n in names]
    if len(set(keys)) != len(keys) or "type" not in keys:
        return None
    for name, key in zip(names, keys, strict=True):
        if key in ("arch", "layer", "type", "dtype"):
            roles.append((key,))
        elif key in DTYPE_FIELDS:  # kv_dtype: a name, into its own field
            roles.append(("dtype", FIELD_INDEX[key]))
        elif key in AXIS_PAIRS:
            fh, fw = AXIS_PAIRS[key]
            if fh in keys or fw in keys:
                return None
            roles.append(("int", FIELD_INDEX[fh], FIELD_INDEX[fw]))
        elif key in FIELD_INDEX:
            roles.append(("int", FIELD_INDEX[key], -1))
        elif name in extra:
            roles.append(("extra", len(kept)))
            kept.append(name)
        else:
            roles.append(("skip",))
    return roles, kept


def _strings_array(offsets: npt.NDArray[np.int32], data: bytes, valid: npt.NDArray[np.uint8] | None) -> pa.Array:
    n = len(offsets) - 1
    bitmap = None
    nulls = 0
    if valid is not None and not valid.all():
        bitmap = pa.py_buffer(np.packbits(valid.astype(bool), bitorder="little"))
        nulls = int(n - valid.sum())
    return pa.Array.from_buffers(pa.string(), n, [bitmap, pa.py_buffer(offsets), pa.py_buffer(data)], nulls)


def _parse_fast(
    path: str, text: bytearray, start: int, stop: int, first: int, roles: list[tuple[Any, ...]], kept: list[str]
) -> LayerTable | None:
    """The CSV records of ``text[start:stop]`` read by the core's fast reader, or None when it does not apply
    to this text (the general reader then reads it, and says what is wrong if anything is)."""
    size = stop - start
    threads = max(1, min(cores(), size // (1 << 20) + 1))
    cuts = [start]
    for k in range(1, threads):
        end = _record_end(text, start + k * size // threads)
        if end is not None and end > cuts[-1]:
            cuts.append(end)
    cuts.append(stop)
    out = _ev.parse_csv_block(
        text, list(itertools.pairwise(cuts)), roles, len(kept), list(LAYER_TYPES), list(DTYPES)
    )
    if out is None:
        return None
    distinct, index = out["rows"], out["index"]
    n = len(index)
    if n == 0:
        return None
    present = np.flatnonzero(np.bincount(distinct[:, 0], minlength=len(LAYER_TYPES)))
    supplied = {FIELDS[f] for r in roles if r[0] == "int" for f in r[1:] if f >= 0}
    if any(FIELDS[f] not in supplied for code in present for f in _ev.type_required_fields(int(code))):
        return None  # a missing column: the general reader names it
    if any(r[0] == "arch" for r in roles):
        arch = _strings_array(out["arch"][0], out["arch"][1], None)
    else:
        arch = pa.array([Path(path).stem] * n, pa.string())
    encoded = arch.dictionary_encode()
    if not pc.all(pc.greater(pc.utf8_length(pc.utf8_trim_whitespace(encoded.dictionary)), 0)).as_py():
        return None  # a blank name: the general reader names its row
    has_layer = any(r[0] == "layer" for r in roles)
    layer = _strings_array(*out["layer"]) if has_layer else pa.nulls(n, pa.string())
    columns = {}
    for name, strings in zip(kept, out["extras"], strict=True):
        column = _strings_array(*strings)
        for t in (pa.int64(), pa.float64()):  # numbers as numbers, as the general reader infers them
            try:
                column = column.cast(t)
                break
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
                continue
        columns[name] = column
    extra = pa.table(columns) if columns else pa.table({"_": pa.nulls(n)}).drop_columns(["_"])
    return LayerTable(path, None, arch, layer, extra, "csv", first, _encoded=encoded, distinct=distinct, index=index)


def _csv_parts(
    path: str, extra: Collection[str] | None, block_bytes: int
) -> Iterator[tuple[pa.Table | LayerTable, int]]:
    """A CSV file as tables of about ``block_bytes`` of text each, split between records."""
    names = _csv_names(path)
    include = _wanted(names, extra)
    fast = _fast_roles(names, extra)

    def parse(text: bytearray, start: int, end: int, first: int) -> pa.Table | LayerTable:
        """The records of ``text[start:end]`` (read by the fast reader where it can, which copies what it
        keeps; the general reader gets its own copy)."""
        if fast is not None:
            table = _parse_fast(path, text, start, end, first, *fast)
            if table is not None:
                return table
        return parse_general(bytes(text[start:end]))

    def parse_general(text: bytes) -> pa.Table:
        return read_csv_text(lambda: pa.BufferReader(text), names, include, path, header=False)

    try:
        with _open_binary(path) as f:
            # The text is read into one buffer, reused block after block (no copy of a block's text): a block
            # is parsed from it, and the start of the record it cut is moved to the front.
            buf = bytearray(block_bytes)
            filled = 0
            body = -1  # where the records start (after the header), once found
            eof = False
            first = 0
            while True:
                while not eof and filled < len(buf):
                    with memoryview(buf) as view:
                        got = f.readinto(view[filled:]) if hasattr(f, "readinto") else None
                        if got is None:  # a stream without readinto
                            chunk = f.read(len(buf) - filled)
                            got = len(chunk)
                            view[filled : filled + got] = chunk
                    eof = got == 0
                    filled += got
                if body < 0:
                    end = _first_record_end(buf, filled)
                    if end is None:
                        if not eof:
                            buf.extend(bytes(len(buf)))  # a header longer than a block: read on
                            continue
                        end = filled  # a header alone, without a newline
                    body = end
                cut = filled if eof else _record_end(buf, filled)
                if cut is None or cut <= body:  # no whole record yet (a very long one): read on
                    if eof:
                        cut = filled
                    else:
                        buf.extend(bytes(len(buf)))
                        continue
                if cut > body and _TEXT.search(buf, body, cut):  # not blank (searched in place, not copied)
                    table = parse(buf, body, cut, first)
                    if len(table):
                        yield table, first
                        first += len(table)
                if eof:
                    return
                buf[: filled - cut] = buf[cut:filled]
                filled -= cut
                body = 0
    except (OSError, EOFError, pa.ArrowException) as e:
        if isinstance(e, pa.ArrowInvalid):
            raise _csv_error(path, e) from None
        raise InputError(f"cannot read the file: {e}", path=path) from None


# -- scoring ---------------------------------------------------------------------------------------------------


class _Growing:
    """A NumPy column that grows by doubling."""

    def __init__(self, dtype: Any, fill: Any = 0) -> None:
        self.data = np.full(1024, fill, dtype=dtype)
        self.fill = fill
        self.n = 0

    def extend(self, values: npt.NDArray[Any]) -> None:
        need = self.n + len(values)
        if need > len(self.data):
            grown = np.full(max(need, 2 * len(self.data)), self.fill, dtype=self.data.dtype)
            grown[: self.n] = self.data[: self.n]
            self.data = grown
        self.data[self.n : need] = values
        self.n = need

    @property
    def values(self) -> npt.NDArray[Any]:
        return self.data[: self.n]


@dataclass
class Totals:
    """Per-architecture totals of a table scored block by block, in order of first appearance.

    ``runtime_ms`` and ``energy_mj`` are sums over the architecture's layers, ``power_w`` their ratio; the
    bottleneck is the layer with the most energy (ties: the most runtime, then the first); ``error`` the
    first value of the table's ``error`` column (NaN: none); ``part`` the index of the file (of a folder)
    where the architecture first appears.
    """

    names: list[str] = field(default_factory=list)
    index: dict[str, int] = field(default_factory=dict)
    bottleneck: list[str] = field(default_factory=list)
    has_error: bool = False
    _layers: _Growing = field(default_factory=lambda: _Growing(np.int64))
    _runtime: _Growing = field(default_factory=lambda: _Growing(np.float64))
    _energy: _Growing = field(default_factory=lambda: _Growing(np.float64))
    _best_energy: _Growing = field(default_factory=lambda: _Growing(np.float64))
    _best_runtime: _Growing = field(default_factory=lambda: _Growing(np.float64))
    _extrapolated: _Growing = field(default_factory=lambda: _Growing(np.int64))
    # sums of the layers' interval bounds (see BOUND_SUMS; NaN: the model has no intervals)
    _bounds: list[_Growing] = field(default_factory=lambda: [_Growing(np.float64, np.nan) for _ in BOUND_SUMS])
    _error: _Growing = field(default_factory=lambda: _Growing(np.float64, np.nan))
    _part: _Growing = field(default_factory=lambda: _Growing(np.int64))

    def __len__(self) -> int:
        return len(self.names)

    @property
    def layers(self) -> npt.NDArray[np.int64]:
        return self._layers.values

    @property
    def runtime_ms(self) -> npt.NDArray[np.float64]:
        return self._runtime.values

    @property
    def energy_mj(self) -> npt.NDArray[np.float64]:
        return self._energy.values

    @property
    def power_w(self) -> npt.NDArray[np.float64]:
        t, e = self.runtime_ms, self.energy_mj
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(t > 0, e / np.where(t > 0, t, 1.0), 0.0)

    @property
    def extrapolated_layers(self) -> npt.NDArray[np.int64]:
        return self._extrapolated.values

    @property
    def error(self) -> npt.NDArray[np.float64]:
        return self._error.values

    @property
    def part(self) -> npt.NDArray[np.int64]:
        return self._part.values

    @property
    def bottleneck_energy_mj(self) -> npt.NDArray[np.float64]:
        return self._best_energy.values

    @property
    def bounds(self) -> npt.NDArray[np.float64]:
        """``(n, 6)``: the sums of the layers' bounds, :data:`BOUND_SUMS` (NaN: none)."""
        return np.stack([b.values for b in self._bounds], axis=1) if len(self) else np.empty((0, len(BOUND_SUMS)))

    @property
    def bottleneck_runtime_ms(self) -> npt.NDArray[np.float64]:
        return self._best_runtime.values

    def add(
        self,
        names: list[str],
        layers: npt.NDArray[np.int64],
        runtime_ms: npt.NDArray[np.float64],
        energy_mj: npt.NDArray[np.float64],
        bottleneck: list[str],
        bottleneck_energy_mj: npt.NDArray[np.float64],
        bottleneck_runtime_ms: npt.NDArray[np.float64],
        extrapolated: npt.NDArray[np.int64],
        error: npt.NDArray[np.float64] | None,
        part: int,
        bounds: npt.NDArray[np.float64] | None = None,
    ) -> None:
        """Merge the partial totals of some architectures (each named once) into these, in their order.
        ``bounds`` (n, 6) are their interval sums (:attr:`bounds`), NaN when not given."""
        before = len(self.names)
        index = self.index
        ids = np.fromiter((index.setdefault(n, len(index)) for n in names), dtype=np.int64, count=len(names))
        new = ids >= before
        if error is not None:
            self.has_error = True
        else:
            error = np.full(len(names), np.nan)
        if bounds is None:
            bounds = np.full((len(names), len(BOUND_SUMS)), np.nan)
        # architectures not seen before (given ids in their order of appearance) are appended in that order
        fresh = np.flatnonzero(new)
        self.names.extend(names[i] for i in fresh.tolist())
        self.bottleneck.extend(bottleneck[i] for i in fresh.tolist())
        for column, values in (
            (self._layers, layers), (self._runtime, runtime_ms), (self._energy, energy_mj),
            (self._best_energy, bottleneck_energy_mj), (self._best_runtime, bottleneck_runtime_ms),
            (self._extrapolated, extrapolated), (self._error, error),
        ):
            column.extend(values[fresh])
        for b, column in enumerate(self._bounds):
            column.extend(bounds[fresh, b])
        self._part.extend(np.full(len(fresh), part, dtype=np.int64))
        if len(fresh) == len(names):
            return
        old = np.flatnonzero(~new)
        # architectures seen before: their sums grow, a strictly larger bottleneck replaces theirs (the earlier
        # layer wins a tie, as in one pass), and their first error value stays
        at = ids[old]
        self._layers.data[at] += layers[old]
        self._runtime.data[at] += runtime_ms[old]
        self._energy.data[at] += energy_mj[old]
        self._extrapolated.data[at] += extrapolated[old]
        for b, column in enumerate(self._bounds):
            column.data[at] += bounds[old, b]
        be, br = self._best_energy.data, self._best_runtime.data
        better = (bottleneck_energy_mj[old] > be[at]) | (
            (bottleneck_energy_mj[old] == be[at]) & (bottleneck_runtime_ms[old] > br[at])
        )
        for k in np.flatnonzero(better):
            i, j = int(old[k]), int(at[k])
            be[j], br[j] = bottleneck_energy_mj[i], bottleneck_runtime_ms[i]
            self.bottleneck[j] = bottleneck[i]
        missing = np.isnan(self._error.data[at]) & ~np.isnan(error[old])
        self._error.data[at[missing]] = error[old][missing]


def block_errors(
    table: LayerTable, order: npt.NDArray[np.int64] | None, offsets: npt.NDArray[np.int64]
) -> npt.NDArray[np.float64] | None:
    """The ``error`` column per architecture of a block (its first non-empty value; NaN: none), or None
    without one; a value that is not a top-1 error between 0 and 1 is an error naming its row."""
    if "error" not in table.extra.column_names:
        return None
    try:
        values = table.extra.column("error").cast(pa.float64())
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        raise InputError(
            "the error column must hold numbers (top-1 error, a fraction)", path=table.path, column="error"
        ) from None
    bad = pc.or_(pc.less(values, 0), pc.greater(values, 1)).fill_null(False)
    bad_np = np.asarray(bad.to_numpy(zero_copy_only=False), dtype=bool)
    if bad_np.any():
        i = int(np.argmax(bad_np))
        raise table.error(i, "error", f"{values[i].as_py()!r} is not a top-1 error between 0 and 1")
    v = np.asarray(values.fill_null(np.nan).to_numpy(zero_copy_only=False), dtype=np.float64)
    if order is not None:
        v = v[order]
    n = len(v)
    if n == 0:
        return np.array([], dtype=np.float64)
    position = np.where(np.isnan(v), n, np.arange(n))
    firsts = np.minimum.reduceat(position, offsets[:-1])
    return np.where(firsts < n, v[np.minimum(firsts, n - 1)], np.nan)


PerLayerSink = Callable[[pa.Table, LayerTable], None]


def _release_memory() -> None:
    """Hand memory freed by earlier blocks back to the system (pyarrow's pool and, on glibc, malloc's heap):
    without it a long run's resident memory creeps up by fragments."""
    pa.default_memory_pool().release_unused()
    if sys.platform.startswith("linux"):
        try:
            import ctypes

            ctypes.CDLL("libc.so.6").malloc_trim(0)
        except (OSError, AttributeError):  # not glibc
            pass


def score_blocks(
    model: Any,
    blocks: Iterable[LayerTable],
    *,
    threads: int = 1,
    per_layer: PerLayerSink | None = None,
    parts: dict[str, int] | None = None,
) -> Totals:
    """Score a table's blocks with a :class:`~neuralpower.evaluator.Model`, merging architectures across
    blocks. ``per_layer``, when given, receives each block's per-layer predictions as it is scored (arch,
    layer, type, runtime_ms, power_w, energy_mj, extrapolated, runtime_source, power_source), with the block.
    ``parts`` maps each file of a folder to its index (``Totals.part``)."""
    totals = Totals()
    names_of: dict[str, str] = {}  # one string per distinct bottleneck name (they repeat across architectures)
    cache = _ev.ResultCache()  # blocks repeat each other's rows: each evaluated once, across blocks
    # where each layer type's runtime and power come from, by type code
    sources = {column: pa.array(model.source_texts(t), pa.string()) for t, column in SOURCE_COLUMNS.items()}
    since_release = 0  # rows scored since memory was last handed back
    for block in blocks:
        since_release += len(block)
        if since_release >= 8 * BLOCK_ROWS:
            _release_memory()
            since_release = 0
        order, offsets, names = block.grouping()
        rows, at = block.rows_in_order(order)  # each distinct row evaluated once, the rows not made
        try:
            out = model._evaluate(
                rows, offsets, per_layer=per_layer is not None, threads=threads, validate=False, arch_names=names,
                index=at, cache=cache,
            )
        except InputError as e:
            if e.path is None:
                raise InputError(e.message, path=block.path, column=e.column) from None
            raise
        first = offsets[:-1]
        where = first + out["bottleneck"]
        index = where if order is None else order[where]
        bottleneck = [names_of.setdefault(b, b) for b in block.layer_names_at(index, out["bottleneck"])]
        totals.add(
            list(names),
            np.diff(offsets),
            out["runtime_ms"],
            out["energy_mj"],
            bottleneck,
            out["bottleneck_energy_mj"],
            out["bottleneck_runtime_ms"],
            out["extrapolated"],
            block_errors(block, order, offsets),
            0 if parts is None else parts.get(block.path, 0),
            out["bounds"],
        )
        if per_layer is not None:
            n = len(block)
            position = np.arange(n) - np.repeat(first, np.diff(offsets))
            row = np.arange(n) if order is None else order
            types = rows[:, 0] if at is None else rows[at, 0]  # in the order scored
            per_layer(
                pa.table(
                    {
                        "arch": block.arch_column.take(pa.array(row)).cast(pa.string()),
                        "layer": pa.array(block.layer_names_at(row, position), pa.string()),
                        "type": pa.array(np.asarray(LAYER_TYPES, dtype=object)[types], pa.string()),
                        "runtime_ms": out["layer_runtime_ms"],
                        "power_w": out["layer_power_w"],
                        "energy_mj": out["layer_energy_mj"],
                        "extrapolated": out["layer_extrapolated"],
                        **{column: texts.take(pa.array(types)) for column, texts in sources.items()},
                        **model.layer_bounds(out["layer_factors"], out["layer_runtime_ms"], out["layer_power_w"]),
                    }
                ),
                block,
            )
    bad = ~(np.isfinite(totals.runtime_ms) & np.isfinite(totals.energy_mj))
    if bad.any():
        name = totals.names[int(np.argmax(bad))]
        raise InputError(
            f"{name}: the total runtime or energy that model {model.name or '(unnamed)'} predicts overflows"
        )
    return totals


def interval_columns(bounds: npt.NDArray[np.float64], runtime_ms: npt.NDArray[np.float64]) -> dict[str, pa.Array]:
    """:func:`interval_values` as table columns (empty cells for NaN)."""
    return {k: pa.array(v, pa.float64(), from_pandas=True) for k, v in interval_values(bounds, runtime_ms).items()}


def result_table(
    totals: Totals, model: Any, alpha: float = 1.0, pareto: bool = False, *, path: str | None = None
) -> tuple[pa.Table, list[str]]:
    """What ``neuralpower score`` writes: one row per architecture (arch, layers, runtime_ms, power_w,
    energy_mj; with an error column also rank, error and epr = error^alpha x energy_mj, ranked lowest first;
    then bottleneck and extrapolated_layers), the Pareto front of (error, energy) only when ``pareto``; a
    last column ``_part`` says which input file each came from. Also the front's names (empty without
    ``pareto``). Notes on a model without power go to standard error."""
    n = len(totals)
    columns: dict[str, Any] = {
        "arch": pa.array(totals.names, pa.string()),
        "layers": totals.layers,
        "runtime_ms": totals.runtime_ms,
        "power_w": totals.power_w,
        "energy_mj": totals.energy_mj,
    }
    if model.has_intervals:
        columns.update(interval_columns(totals.bounds, totals.runtime_ms))
    order = np.arange(n)
    error = totals.error if totals.has_error else None
    if pareto and error is None:
        raise InputError("--pareto needs an error column (top-1 error per architecture)", path=path)
    if error is not None:
        # Under a model without power every energy is 0, so every epr would be 0 and the rank file order: the
        # rank then orders by error^alpha x runtime instead, epr stays empty, and a note says so.
        cost = totals.energy_mj if model.power_measured else totals.runtime_ms
        if not model.power_measured:
            print(
                f"note: model {model.name} holds no power: epr is left empty and rank orders by "
                "error^alpha x runtime_ms",
                file=sys.stderr,
            )
        with np.errstate(invalid="ignore"):
            key = np.where(np.isnan(error), np.nan, np.power(error, alpha) * cost)
        epr = key if model.power_measured else np.full(n, np.nan)
        # ranked lowest first; an architecture without an error value comes last, unranked, with empty cells
        # (not NaN)
        unranked = np.isnan(key)
        order = np.lexsort((np.nan_to_num(key), unranked))  # by the key, the unranked last; stable
        ranked = int((~unranked).sum())
        rank = np.full(n, np.nan)
        rank[order[:ranked]] = np.arange(1, ranked + 1)
        columns["rank"] = pa.array(rank, pa.float64(), from_pandas=True).cast(pa.int64())
        columns["error"] = pa.array(error, pa.float64(), from_pandas=True)
        columns["epr"] = pa.array(epr, pa.float64(), from_pandas=True)
    columns["bottleneck"] = pa.array(totals.bottleneck, pa.string())
    columns["extrapolated_layers"] = totals.extrapolated_layers
    columns["_part"] = totals.part
    result = pa.table(columns)
    if pareto:
        assert error is not None
        from .search import pareto_front

        cost, cost_name = (
            (totals.energy_mj, "energy_mj") if model.power_measured else (totals.runtime_ms, "runtime_ms")
        )
        if not model.power_measured:
            print(f"note: the Pareto front is over error and {cost_name} (the model holds no power)", file=sys.stderr)
        on = pareto_front(error, cost)
        order = order[on[order]]
    kept = [totals.names[i] for i in order] if pareto else []
    return result.take(pa.array(order)), kept


# -- writing as it goes ---------------------------------------------------------------------------------------


class TableWriter:
    """Write a table in parts, as CSV (one header) or Parquet (one schema), by the path's suffix, to a file
    object or a path (through :func:`neuralpower._output.atomic_path`: nothing appears unless all of it is
    written). Use as a context manager."""

    def __init__(self, path: str | Any, *, format: str | None = None) -> None:
        self.path = path
        self.format = format or ("parquet" if isinstance(path, str) and table_format(path) == "parquet" else "csv")
        self._stack = contextlib.ExitStack()
        self._writer: Any = None
        self._schema: pa.Schema | None = None

    def __enter__(self) -> TableWriter:
        from ._output import atomic_path

        self._target = self._stack.enter_context(atomic_path(self.path)) if isinstance(self.path, str) else self.path
        return self

    def write(self, table: pa.Table) -> None:
        if self._schema is None:
            self._schema = table.schema
            self._writer = self._stack.enter_context(self._open(self._schema))
        elif table.schema != self._schema:
            table = table.cast(self._schema)
        self._writer.write_table(table)

    def _open(self, schema: pa.Schema) -> Any:
        if self.format == "parquet":
            import pyarrow.parquet as pq

            return pq.ParquetWriter(self._target, schema)
        stream = self._stack.enter_context(csv_output_stream(self._target)) if isinstance(self._target, str) else (
            self._target
        )
        return csv_writer(stream, schema)

    def __exit__(self, *exc: object) -> None:
        if exc[0] is None and self._schema is None:
            raise ValueError("nothing was written")
        self._stack.__exit__(*exc)  # type: ignore[arg-type]
