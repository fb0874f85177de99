"""Layer tables: one row per layer, many architectures per file, in CSV or Parquet.

Reading validates every row through the compiled core and reports the first problem as one
:class:`~neuralpower.errors.InputError` naming the file, the row (as a spreadsheet shows it: the header is
row 1) and the column. Columns the format does not know are kept: those constant within every
architecture become its ``meta`` (for example ``error``), the others stay with each layer
(:class:`LayerTable.extra`).
"""

from __future__ import annotations

import csv
import io
import math
import os
from collections.abc import Callable, Collection, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc

from . import _evaluator as _ev
from ._args import cores
from .errors import InputError
from .layers import (
    AXIS_PAIRS,
    DTYPE_CODE,
    DTYPE_FIELDS,
    DTYPES,
    FIELD_INDEX,
    FIELDS,
    LAYER_TYPES,
    MISSING,
    TYPE_CODE,
    Architecture,
    Layer,
)

__all__ = [
    "LayerTable",
    "read_architectures",
    "read_layer_table",
    "table_format",
    "write_architectures",
]

# Integer columns of the format, in the order a written table shows them (per-axis fields are written
# as one column when every row has equal axes). type and the dtype fields are names.
_INT_FIELDS = [f for f in FIELDS if f != "type" and f not in DTYPE_FIELDS]
_AXIS_OF = {axis: pair for pair, axes in AXIS_PAIRS.items() for axis in axes}
_NAME_COLUMNS = ("arch", "layer")
# CSV files compressed by these codecs are read and written transparently (by their suffix).
_COMPRESSED = {".gz": "gzip", ".bz2": "bz2", ".zst": "zstd", ".lz4": "lz4"}
_KNOWN = {"arch", "layer", "type", *DTYPE_FIELDS, *_INT_FIELDS, *AXIS_PAIRS}
_REQUIRED_FIELDS = {code: [FIELDS[f] for f in _ev.type_required_fields(code)] for code in range(len(LAYER_TYPES))}
_USED_FIELDS = {code: {FIELDS[f] for f in _ev.type_fields(code)} for code in range(len(LAYER_TYPES))}


def table_format(path: str | os.PathLike[str]) -> str:
    """``"parquet"`` or ``"csv"``, from the file's suffix (``.parquet``/``.pq``) or, failing that, its
    first bytes."""
    suffix = Path(path).suffix.lower()
    if suffix in (".parquet", ".pq"):
        return "parquet"
    if suffix in (".csv", ".txt", *_COMPRESSED):
        return "csv"
    try:
        with open(path, "rb") as f:
            return "parquet" if f.read(4) == b"PAR1" else "csv"
    except OSError:
        return "csv"


@dataclass
class LayerTable:
    """A layer table read and validated, column-wise.

    Attributes
    ----------
    path
        Where it was read from.
    rows
        ``(n, len(FIELDS))`` normalized layer rows.
    arch_column, layer_column
        Architecture and layer names per row (pyarrow string arrays, or dictionary-encoded strings as a Parquet
        file holds them; ``layer_column`` may hold nulls: unnamed layers). ``arch`` and ``layer`` give them as lists.
    extra
        Columns the format does not know, unchanged.
    fmt
        ``"csv"`` or ``"parquet"``.
    first
        The data row of ``path`` (0-based) that this table's first row is: a block of a larger table read in
        parts (:func:`neuralpower.stream.read_blocks`) counts its rows from there in messages.

    A table read from a file holds its rows compactly (:meth:`distinct_rows`: each distinct row once, and an
    index per row); ``rows`` is made from them when first asked for. Give ``rows`` as None and the two
    arrays as ``distinct`` and ``index`` to make one.
    """

    path: str
    _rows: npt.NDArray[np.int64] | None
    arch_column: pa.Array
    layer_column: pa.Array
    extra: pa.Table
    fmt: str = "csv"
    first: int = 0
    _line: npt.NDArray[np.int64] | None = field(default=None, repr=False)
    _encoded: pa.DictionaryArray | None = field(default=None, repr=False)
    _arch: list[str] | None = field(default=None, repr=False)
    _layer: list[str] | None = field(default=None, repr=False)
    distinct: npt.NDArray[np.int64] | None = field(default=None, repr=False)
    index: npt.NDArray[np.int64] | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if self._rows is None and (self.distinct is None or self.index is None):
            raise ValueError("a LayerTable needs rows, or distinct rows and an index")

    @property
    def rows(self) -> npt.NDArray[np.int64]:
        """``(n, len(FIELDS))`` normalized layer rows."""
        if self._rows is None:
            assert self.distinct is not None and self.index is not None
            self._rows = self.distinct[self.index]
        return self._rows

    def distinct_rows(self) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64] | None]:
        """``(distinct, index)``: the rows are ``distinct[index]`` (``index`` None: ``distinct`` is the rows),
        without making the rows."""
        if self.index is not None:
            assert self.distinct is not None
            return self.distinct, self.index
        assert self._rows is not None
        return self._rows, None

    def rows_in_order(
        self, order: npt.NDArray[np.int64] | None
    ) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64] | None]:
        """The rows taken in ``order`` (None: as they are), as the evaluator takes them: ``(rows, index)``,
        the layers being ``rows[index]`` (``index`` None: ``rows`` themselves), without making the rows."""
        distinct, at = self.distinct_rows()
        if at is None:
            return (distinct if order is None else np.ascontiguousarray(distinct[order])), None
        return distinct, (at if order is None else at[order])

    def field_at(self, index: npt.NDArray[np.int64], column: int) -> npt.NDArray[np.int64]:
        """Field ``column`` of the rows ``index``, without making the rows."""
        distinct, at = self.distinct_rows()
        out: npt.NDArray[np.int64] = distinct[np.asarray(index, dtype=np.int64) if at is None else at[index], column]
        return out

    def __len__(self) -> int:
        if self._rows is None:
            assert self.index is not None
            return len(self.index)
        return int(self._rows.shape[0])

    @property
    def arch(self) -> list[str]:
        """Each row's architecture name."""
        if self._arch is None:
            self._arch = _texts(self.arch_column)
        return self._arch

    @property
    def layer(self) -> list[str]:
        """Each row's layer name (``""`` where the table names none)."""
        if self._layer is None:
            self._layer = ["" if v is None else v for v in _texts(self.layer_column)]
        return self._layer

    def grouping(self) -> tuple[npt.NDArray[np.int64] | None, npt.NDArray[np.int64], list[str]]:
        """How rows group into architectures, in order of first appearance: ``(order, offsets, names)``.

        Architecture ``k`` is rows ``order[offsets[k]:offsets[k + 1]]`` (``order`` is ``None`` when every
        architecture's rows are already contiguous, the common case).
        """
        encoded = self.arch_encoded()
        codes = np.asarray(encoded.indices.to_numpy(zero_copy_only=False), dtype=np.int64)
        names = encoded.dictionary.to_pylist()
        n = len(codes)
        starts = np.flatnonzero(np.diff(codes)) + 1 if n else np.array([], dtype=np.int64)
        if len(starts) + (1 if n else 0) == len(names):
            return None, np.concatenate([[0], starts, [n]]).astype(np.int64), names
        order = np.argsort(codes, kind="stable").astype(np.int64)
        offsets = np.concatenate([[0], np.cumsum(np.bincount(codes, minlength=len(names)))]).astype(np.int64)
        return order, offsets, names

    def arch_encoded(self) -> pa.DictionaryArray:
        """The architecture column dictionary-encoded (in order of first appearance), made once."""
        if self._encoded is None:
            column = self.arch_column
            dictionary = pa.types.is_dictionary(column.type)
            self._encoded = _first_appearance(column) if dictionary else column.dictionary_encode()
        return self._encoded

    def layer_names_at(self, index: npt.NDArray[np.int64], position: npt.NDArray[np.int64]) -> list[str]:
        """Names of the layers at row ``index``, ``position`` being each one's index in its architecture
        (an unnamed layer is called ``<type>_<position>``, as :class:`Architecture` names it)."""
        names = _texts(self.layer_column.take(pa.array(index, pa.int64())))
        types = self.field_at(np.asarray(index, dtype=np.int64), 0).tolist()
        return [
            n if n else f"{LAYER_TYPES[t]}_{p}"
            for n, t, p in zip(names, types, np.asarray(position).tolist(), strict=True)
        ]

    @property
    def line(self) -> npt.NDArray[np.int64]:
        """Each row's number as a spreadsheet shows it (header row 1; blank CSV lines count)."""
        if self._line is None:
            self._line = _spreadsheet_rows(self.path, self.fmt, self.first + len(self))[self.first :]
        return self._line

    def error(self, index: int, column: str | None, message: str) -> InputError:
        """An :class:`InputError` at data row ``index`` (0-based)."""
        return InputError(message, path=self.path, row=int(self.line[index]), column=column)

    def architectures(self) -> list[Architecture]:
        """Group the rows into architectures, in order of first appearance."""
        groups: dict[str, list[int]] = {}
        for i, name in enumerate(self.arch):
            groups.setdefault(name, []).append(i)
        meta_columns, layer_columns = self._split_extra(groups)
        archs = []
        for name, idx in groups.items():
            self.check_one_batch_and_dtype(np.asarray(idx, dtype=np.int64))
            meta = {}
            for col in meta_columns:
                values = [v for v in (meta_columns[col][i] for i in idx) if v is not None]
                if values:
                    meta[col] = values[0]
            layers = [Layer._trusted(self.rows[i], self.layer[i]) for i in idx]
            layer_data = {col: [values[i] for i in idx] for col, values in layer_columns.items()}
            layer_data = {col: v for col, v in layer_data.items() if any(x is not None for x in v)}
            archs.append(Architecture(name, layers, meta, layer_data))
        return archs

    def check_one_batch_and_dtype(self, index: npt.NDArray[np.int64]) -> None:
        """Raise the error of the first of the rows ``index`` (one architecture's, in order) whose batch or
        dtype differs from its first row's: an architecture has one of each."""
        for col in ("batch", "dtype"):
            values = self.rows[index, FIELD_INDEX[col]]
            differs = np.flatnonzero(values != values[0])
            if len(differs):
                i = int(differs[0])
                here, there = (DTYPES[v] if col == "dtype" else str(v) for v in (values[i], values[0]))
                raise self.error(
                    int(index[i]),
                    col,
                    f"{here} differs from {there} on row {self.line[int(index[0])]}: an architecture has one {col}",
                )

    def _split_extra(self, groups: dict[str, list[int]]) -> tuple[dict[str, list[Any]], dict[str, list[Any]]]:
        meta: dict[str, list[Any]] = {}
        per_layer: dict[str, list[Any]] = {}
        for col in self.extra.column_names:
            values = self.extra.column(col).to_pylist()
            constant = True
            for idx in groups.values():
                seen = {_key(values[i]) for i in idx if values[i] is not None}
                if len(seen) > 1:
                    constant = False
                    break
            (meta if constant else per_layer)[col] = values
        return meta, per_layer


def _key(value: Any) -> Any:
    """A hashable stand-in of a cell (list and struct cells of a Parquet file are not hashable)."""
    if isinstance(value, float) and math.isnan(value):
        return ("nan",)
    if isinstance(value, list | dict):
        return ("repr", repr(value))
    return value


def read_layer_table(path: str | os.PathLike[str], extra: Collection[str] | None = None) -> LayerTable:
    """Read and validate a layer table (CSV or Parquet).

    ``extra`` names the columns beyond the layer-table format to keep (default: all of them); reading only
    those a caller needs is faster.

    Raises
    ------
    InputError
        The first problem found, naming the file, row and column.
    """
    spath = str(path)
    check_table_file(spath)
    fmt = table_format(spath)
    table = _read_parquet(spath, extra) if fmt == "parquet" else _read_csv(spath, extra)
    if table.num_rows == 0:
        raise InputError("the table has a header but no rows", path=spath)
    return _parse(spath, fmt, table)


def check_table_file(path: str) -> None:
    """Refuse a table file that cannot be read, is a folder or is empty."""
    try:
        size = os.path.getsize(path)
    except OSError as e:
        raise InputError(f"cannot read the file: {e.strerror or e}", path=path) from None
    if os.path.isdir(path):
        raise InputError("is a directory, not a layer table", path=path)
    if size == 0:
        raise InputError("the file is empty", path=path)


def parquet_error(path: str, err: Exception) -> InputError:
    """The error of a Parquet file pyarrow cannot read: its first line."""
    first = str(err).splitlines()[0] if str(err) else type(err).__name__
    return InputError(f"not a valid Parquet file: {first}", path=path)


def read_architectures(path: str | os.PathLike[str]) -> list[Architecture]:
    """Read the architectures of a layer table (CSV or Parquet), in order of first appearance.

    Raises
    ------
    InputError
        The first problem found, naming the file, row and column.
    """
    return read_layer_table(path).architectures()


def _open_binary(path: str) -> Any:
    """A binary file object of a CSV file, decompressed when its suffix says so (.gz, .bz2, .zst, .lz4)."""
    codec = _COMPRESSED.get(Path(path).suffix.lower())
    if codec is None:
        return open(path, "rb")
    import gzip

    if codec == "gzip":
        return gzip.open(path, "rb")
    return pa.input_stream(path, compression=codec)


def _open_text(path: str, errors: str = "strict") -> Any:
    return io.TextIOWrapper(_open_binary(path), encoding="utf-8", newline="", errors=errors)


def _wanted(names: Sequence[str], extra: Collection[str] | None) -> list[str] | None:
    """The columns to read: every one, or the known ones plus ``extra``."""
    if extra is None:
        return None
    return [n for n in names if n.strip().lower() in _KNOWN or n in extra]


def _csv_names(path: str) -> list[str]:
    """The header of a CSV file, after checking that it decompresses and holds text."""
    try:
        with _open_binary(path) as f:
            head = f.read(1 << 16)
    except (OSError, EOFError, pa.ArrowException) as e:
        raise InputError(f"cannot decompress the file: {e}", path=path) from None
    if b"\0" in head:
        raise InputError("not a CSV text file (binary data)", path=path)
    try:
        return _csv_header(path)
    except (UnicodeDecodeError, OSError, EOFError) as e:
        raise _csv_error(path, e) from None


def _read_csv(path: str, extra: Collection[str] | None = None) -> pa.Table:
    names = _csv_names(path)
    return read_csv_text(lambda: path, names, _wanted(names, extra), path, header=True)


def read_csv_text(
    source: Callable[[], Any], names: Sequence[str], include: list[str] | None, path: str, *, header: bool
) -> pa.Table:
    """CSV text read by pyarrow, ``source()`` giving a path or stream of it each time (with ``header``, its first
    record is the header, else it holds records only, of columns ``names``): integers parsed by pyarrow, or,
    when a cell is not a plain integer, every known column as text for _parse to find and name the cell."""
    import pyarrow.csv as pacsv

    def read(integers: bool) -> pa.Table:
        return pacsv.read_csv(
            source(),
            read_options=pacsv.ReadOptions() if header else pacsv.ReadOptions(column_names=list(names)),
            parse_options=pacsv.ParseOptions(newlines_in_values=True),
            convert_options=pacsv.ConvertOptions(
                column_types=_read_csv_types(names, integers),
                include_columns=include,
                null_values=[""],
                strings_can_be_null=True,
                quoted_strings_can_be_null=True,
            ),
        )

    try:
        try:
            return read(integers=True)
        except pa.ArrowInvalid:
            return read(integers=False)
    except (pa.ArrowInvalid, UnicodeDecodeError, OSError, EOFError) as e:
        raise _csv_error(path, e) from None


def _read_csv_types(names: Sequence[str], integers: bool) -> dict[str, pa.DataType]:
    """The types the CSV reader gives the known columns. Fast path (``integers``): pyarrow parses the integer
    columns itself; when a cell is not a plain integer, the text is read again with every known column as
    text, and _parse finds the cell and says what is wrong."""
    types = {}
    for n in names:
        key = n.strip().lower()
        if key == "type" or key in DTYPE_FIELDS:  # few distinct names: read as a dictionary
            types[n] = pa.dictionary(pa.int32(), pa.string())
        elif key in _KNOWN:
            types[n] = pa.int64() if integers and key not in ("arch", "layer") else pa.string()
    return types


def _csv_header(path: str) -> list[str]:
    with _open_text(path) as f:
        for record in csv.reader(f):
            if record:
                return record
    raise InputError("the file has no header row", path=path)


def _csv_error(path: str, err: Exception) -> InputError:
    """Turn a failed parse into an error that names the row: re-read with the csv module to find it."""
    try:
        with _open_text(path) as f:
            reader = csv.reader(f)
            width = None
            for number, record in enumerate(reader, start=1):
                if not record:
                    continue
                if width is None:
                    width = len(record)
                    if len(set(record)) != width:
                        dup = next(c for c in record if record.count(c) > 1)
                        return InputError(f"column {dup!r} appears twice in the header", path=path, row=1)
                elif len(record) != width:
                    return InputError(f"has {len(record)} fields, the header has {width}", path=path, row=number)
    except UnicodeDecodeError:
        return InputError("not a UTF-8 text CSV file", path=path)
    except (OSError, EOFError, pa.ArrowException) as e:
        return InputError(f"cannot decompress the file: {e}", path=path)
    except csv.Error as e:
        return InputError(f"not a valid CSV file: {e}", path=path)
    first = str(err).splitlines()[0] if str(err) else type(err).__name__
    return InputError(f"not a valid CSV file: {first}", path=path)


def _spreadsheet_rows(path: str, fmt: str, n: int) -> npt.NDArray[np.int64]:
    """The spreadsheet row of each data record: only computed for messages, as it re-reads a CSV file."""
    if fmt != "csv":
        return np.arange(2, n + 2, dtype=np.int64)
    lines = np.arange(2, n + 2, dtype=np.int64)
    with _open_text(path, errors="replace") as f:
        reader = csv.reader(f)
        i = -1  # -1: the header is next
        for number, record in enumerate(reader, start=1):
            if not record:
                continue  # pyarrow skips blank lines; a spreadsheet still numbers them
            if i >= 0:
                if i >= n:
                    break
                lines[i] = number
            i += 1
    return lines


def _read_parquet(path: str, extra: Collection[str] | None = None) -> pa.Table:
    import pyarrow.parquet as pq

    try:
        if extra is None:
            return pq.read_table(path)
        return pq.read_table(path, columns=_wanted(pq.read_schema(path).names, extra))
    except (pa.ArrowException, OSError) as e:
        raise parquet_error(path, e) from None


def _parse(path: str, fmt: str, table: pa.Table, first: int = 0) -> LayerTable:
    """Validate a table read from ``path`` whose first row is the file's data row ``first`` (0-based)."""
    n = table.num_rows

    def err(index: int | None, column: str | None, message: str) -> InputError:
        row = None if index is None else int(_spreadsheet_rows(path, fmt, first + n)[first + index])
        return InputError(message, path=path, row=row, column=column)

    columns: dict[str, str] = {}  # normalized name -> name in the file
    for name in table.column_names:
        key = name.strip().lower() if name.strip().lower() in _KNOWN else name
        if key in columns:
            raise InputError(f"column {name!r} appears twice in the header", path=path, row=1)
        columns[key] = name
    if "type" not in columns:
        raise InputError("missing required column 'type'", path=path, column="type")

    # Each field is built as its own column, then stacked once into the row-major array the core takes.
    # A column is an array (empty cells MISSING) or, straight from an Arrow int64 column, a tuple (values,
    # validity bitmap, offset) that the core reads and range-checks itself.
    cols: list[npt.NDArray[np.int64] | tuple[Any, Any, int] | None] = [None] * len(FIELDS)
    names_of: dict[int, str] = {}

    def writable(index: int) -> npt.NDArray[np.int64]:
        col = cols[index]
        if col is None:
            col = np.full(n, MISSING, dtype=np.int64)
        elif isinstance(col, tuple):
            col = _materialize(col, names_of[index], err)
        elif not col.flags.writeable:
            col = col.copy()
        cols[index] = col
        return col

    source: dict[str, str] = {}  # field -> column that supplied it (for messages)
    cols[0] = _codes(table.column(columns["type"]), TYPE_CODE, "layer type", columns["type"], err)
    for name in DTYPE_FIELDS:  # dtype, kv_dtype: names, empty cells their defaults
        if name in columns:
            cols[FIELD_INDEX[name]] = _codes(
                table.column(columns[name]), DTYPE_CODE, "dtype", columns[name], err, allow_null=True
            )
            source[name] = columns[name]

    for name in _INT_FIELDS:
        if name in columns:
            cols[FIELD_INDEX[name]] = _int_source(table.column(columns[name]), columns[name], err)
            names_of[FIELD_INDEX[name]] = columns[name]
            source[name] = columns[name]
    for pair, (fh, fw) in AXIS_PAIRS.items():
        if pair not in columns:
            continue
        pair_source = _int_source(table.column(columns[pair]), columns[pair], err)
        if fh not in columns and fw not in columns:  # the common case: the pair's column gives both axes
            for axis in (fh, fw):
                cols[FIELD_INDEX[axis]] = pair_source
                names_of[FIELD_INDEX[axis]] = columns[pair]
                source[axis] = columns[pair]
            continue
        values = pair_source if isinstance(pair_source, np.ndarray) else _materialize(pair_source, columns[pair], err)
        for axis in (fh, fw):
            col = writable(FIELD_INDEX[axis])
            if axis in columns:
                clash = (col != MISSING) & (values != MISSING) & (col != values)
                if clash.any():
                    i = int(np.argmax(clash))
                    raise err(i, columns[pair], f"{values[i]} contradicts {axis} {col[i]}")
            take = col == MISSING
            col[take] = values[take]
            source.setdefault(axis, columns[pair])


    # A required field with no column at all is a missing column, not a row problem.
    type_codes = cols[0]
    assert isinstance(type_codes, np.ndarray)
    present_types = np.flatnonzero(np.bincount(type_codes, minlength=len(LAYER_TYPES)))
    for code in present_types:
        for req in _REQUIRED_FIELDS[int(code)]:
            if req not in source:
                axis_of = _AXIS_OF.get(req)
                want = f"'{axis_of}' (or '{axis_of}_h' and '{axis_of}_w')" if axis_of else f"'{req}'"
                raise InputError(
                    f"missing required column {want} ({LAYER_TYPES[int(code)]} rows need it)",
                    path=path,
                    column=axis_of or req,
                )

    distinct, index, bad_row, field_index, message = _ev.prepare_columns(
        [c if c is None or isinstance(c, tuple) else np.ascontiguousarray(c, dtype=np.int64) for c in cols],
        n,
        cores(),
    )
    if bad_row >= 0:
        fname = FIELDS[field_index]
        raise err(int(bad_row), source.get(fname, fname), message)

    arch, encoded = _names(table, columns.get("arch"), err, default=Path(path).stem)
    layer_col = columns.get("layer")
    layer = pa.nulls(n, pa.string()) if layer_col is None else _labels(table.column(layer_col), layer_col, err)
    known = {name for key, name in columns.items() if key in _KNOWN}
    extra = table.select([c for c in table.column_names if c not in known])
    return LayerTable(path, None, arch, layer, extra, fmt, first, _encoded=encoded, distinct=distinct, index=index)


def _names(table: pa.Table, column: str | None, err: Any, default: str) -> tuple[pa.Array, pa.DictionaryArray]:
    """The architecture column as strings, and dictionary-encoded; an empty cell is an error."""
    if column is None:
        values = pa.array([default] * table.num_rows, pa.string())
        return values, values.dictionary_encode()
    values = _labels(table.column(column), column, err)
    if values.null_count:
        raise err(int(np.argmax(~np.asarray(values.is_valid().to_numpy(zero_copy_only=False)))), column,
                  "empty: every row names its architecture")
    encoded = _first_appearance(values) if pa.types.is_dictionary(values.type) else values.dictionary_encode()
    # emptiness is checked on the distinct names (few), then located among the rows
    blank = pc.equal(pc.utf8_length(pc.utf8_trim_whitespace(encoded.dictionary)), 0)
    blank_np = np.asarray(blank.to_numpy(zero_copy_only=False), dtype=bool)
    if blank_np.any():
        codes = np.flatnonzero(blank_np)
        at = np.isin(np.asarray(encoded.indices.to_numpy(zero_copy_only=False)), codes)
        raise err(int(np.argmax(at)), column, "empty: every row names its architecture")
    return values, encoded


def used_rows(
    distinct: npt.NDArray[np.int64], index: npt.NDArray[np.int64]
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64], npt.NDArray[np.int64]]:
    """Only the distinct rows that ``index`` uses: ``(rows, index, first)``, ``index`` renumbered into them and
    ``first`` the position in it of each one's first use."""
    used, first, inverse = np.unique(index, return_index=True, return_inverse=True)
    return distinct[used], inverse.reshape(-1).astype(np.int64), first.astype(np.int64)


def _texts(names: pa.Array) -> list[Any]:
    """A column of names as a list (a dictionary-encoded one decoded first: its to_pylist goes value by value)."""
    if pa.types.is_dictionary(names.type):
        names = names.cast(names.type.value_type)
    out: list[Any] = names.to_pylist()
    return out


def _labels(column: pa.ChunkedArray | pa.Array, name: str, err: Any) -> pa.Array:
    """A column of names (arch, layer): a dictionary of strings in one chunk (as a Parquet file stores it: not
    decoded to a string per row) as it is, any other as :func:`_strings` gives it."""
    chunks = column.chunks if isinstance(column, pa.ChunkedArray) else [column]
    if len(chunks) == 1 and pa.types.is_dictionary(chunks[0].type) and pa.types.is_string(chunks[0].type.value_type):
        return chunks[0]
    return _strings(column, name, err)


def _first_appearance(values: pa.DictionaryArray) -> pa.DictionaryArray:
    """A dictionary-encoded column encoded again in order of first appearance, its dictionary only the values
    it holds: from its codes where each value's rows follow each other in the dictionary's order (a Parquet
    file's dictionary, rows of an architecture together), else by decoding it."""
    codes = np.asarray(values.indices.to_numpy(zero_copy_only=False))
    if len(codes):
        steps = np.diff(codes)
        if ((steps == 0) | (steps == 1)).all():
            start = int(codes[0])
            return pa.DictionaryArray.from_arrays(
                pa.array(codes - start, pa.int32()), values.dictionary.slice(start, int(codes[-1]) - start + 1)
            )
    return values.cast(values.type.value_type).dictionary_encode()


def _codes(
    column: pa.ChunkedArray, codes: dict[str, int], what: str, name: str, err: Any, allow_null: bool = False
) -> npt.NDArray[np.int64]:
    """Map a column of names (type, dtype) to codes; matching ignores case and surrounding spaces."""
    chunks = column.chunks if isinstance(column, pa.ChunkedArray) else [column]
    if chunks and all(pa.types.is_dictionary(c.type) and pa.types.is_string(c.type.value_type) for c in chunks):
        # read as dictionaries (the CSV reader does): each chunk's few distinct names are looked up
        parts = []
        for chunk in chunks:
            names = pc.utf8_lower(pc.utf8_trim_whitespace(chunk.dictionary)).to_pylist()
            lookup = np.array([codes.get(v, -1) if v else -2 for v in names] + [-2], dtype=np.int64)
            parts.append(lookup[np.asarray(chunk.indices.fill_null(len(lookup) - 1).to_numpy(), dtype=np.int64)])
        out = np.concatenate(parts) if parts else np.array([], dtype=np.int64)
        column = pa.chunked_array(chunks, chunks[0].type)
    else:
        column = _strings(column, name, err)
        encoded = pc.utf8_lower(pc.utf8_trim_whitespace(column)).dictionary_encode()
        lookup = np.array(
            [codes.get(v, -1) if v else -2 for v in encoded.dictionary.to_pylist()] + [-2], dtype=np.int64
        )
        index = np.asarray(encoded.indices.fill_null(len(lookup) - 1).to_numpy(), dtype=np.int64)
        out = lookup[index]
    bad = out == -1 if allow_null else out < 0
    if bad.any():
        i = int(np.argmax(bad))
        original = column[i].as_py()
        if out[i] == -2:
            raise err(i, name, f"empty: every row needs a {what}")
        raise err(i, name, f"unknown {what} {original!r} (known: {', '.join(codes)})")
    out[out < 0] = MISSING
    return out


def _strings(column: pa.ChunkedArray | pa.Array, name: str, err: Any) -> pa.Array:
    """A column of names (type, dtype, arch, layer) as one UTF-8 string array; text that is not UTF-8 or a
    column that is not text (a list, say) is an error naming the cell or the column."""
    t = column.type
    if pa.types.is_dictionary(t):  # a categorical column (pandas writes them): its values, decoded
        return _strings(column.cast(t.value_type), name, err)
    if pa.types.is_string(t) or pa.types.is_large_string(t):
        out = column.cast(pa.string())
    elif pa.types.is_binary(t) or pa.types.is_large_binary(t) or pa.types.is_fixed_size_binary(t):
        try:
            out = column.cast(pa.string())
        except pa.ArrowInvalid:
            for i, v in enumerate(column.to_pylist()):
                try:
                    if v is not None:
                        v.decode("utf-8")
                except UnicodeDecodeError:
                    raise err(i, name, "not UTF-8 text") from None
            raise err(None, name, "not UTF-8 text") from None
    elif pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_boolean(t) or pa.types.is_null(t):
        out = column.cast(pa.string())
    else:
        raise err(None, name, f"has type {t}, expected text")
    return out.combine_chunks() if isinstance(out, pa.ChunkedArray) else out


# Integers that no field can hold (sizes are capped far lower): refused as out of range when parsed, so that no
# value wraps around int64 or meets the MISSING marker (INT64_MIN, an empty cell).
_INT_LIMIT = 2**62


def _int_source(
    column: pa.ChunkedArray, name: str, err: Any
) -> npt.NDArray[np.int64] | tuple[npt.NDArray[np.int64], npt.NDArray[np.uint8] | None, int]:
    """A column for ``prepare_columns``: a signed 64-bit integer column as its Arrow buffers (values, validity,
    offset), read and range-checked by the core without a copy per step; any other through :func:`_ints`."""
    t = column.type
    if not (pa.types.is_integer(t) and t.bit_width == 64 and pa.types.is_signed_integer(t)):
        return _ints(column, name, err)
    arr = column
    if isinstance(column, pa.ChunkedArray):
        arr = column.chunk(0) if column.num_chunks == 1 else column.combine_chunks()
    validity, data = arr.buffers()
    values = np.frombuffer(data, dtype=np.int64, count=len(arr) + arr.offset)[arr.offset :]
    if validity is None or arr.null_count == 0:
        return values, None, 0
    return values, np.frombuffer(validity, dtype=np.uint8), arr.offset


def _materialize(
    source: tuple[npt.NDArray[np.int64], npt.NDArray[np.uint8] | None, int], name: str, err: Any
) -> npt.NDArray[np.int64]:
    """An Arrow column's buffers as an array with MISSING in empty cells, range-checked as :func:`_ints` does."""
    values, bits, offset = source
    n = len(values)
    valid = (
        np.ones(n, dtype=bool)
        if bits is None
        else np.unpackbits(bits, bitorder="little")[offset : offset + n].astype(bool)
    )
    far = valid & ((values >= _INT_LIMIT) | (values <= -_INT_LIMIT))
    if far.any():
        i = int(np.argmax(far))
        raise err(i, name, f"{values[i]} is out of range")
    return np.where(valid, values, MISSING).astype(np.int64)


def _ints(column: pa.ChunkedArray, name: str, err: Any) -> npt.NDArray[np.int64]:
    """An integer column, empty cells as MISSING. Whole floats (3.0) pass; anything else is an error."""
    t = column.type
    if pa.types.is_integer(t) or pa.types.is_boolean(t) or pa.types.is_null(t):
        if pa.types.is_integer(t) and t.bit_width == 64:  # narrower integers always fit
            if pa.types.is_unsigned_integer(t):
                far = pc.greater_equal(column, pa.scalar(_INT_LIMIT, t))
            else:
                far = pc.or_(pc.greater_equal(column, _INT_LIMIT), pc.less_equal(column, -_INT_LIMIT))
            far_np = np.asarray(far.fill_null(False).to_numpy(zero_copy_only=False), dtype=bool)
            if far_np.any():
                i = int(np.argmax(far_np))
                raise err(i, name, f"{column[i].as_py()} is out of range")
        return np.asarray(column.cast(pa.int64()).fill_null(MISSING).to_numpy(), dtype=np.int64)
    if pa.types.is_string(t) or pa.types.is_large_string(t):
        try:
            out = np.asarray(
                pc.cast(pc.utf8_trim_whitespace(column), pa.int64()).fill_null(MISSING).to_numpy(), dtype=np.int64
            )
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            pass  # not plain integers: check each cell below
        else:
            far = (out != MISSING) & (np.abs(out.clip(-_INT_LIMIT, None)) >= _INT_LIMIT)
            far |= (out == MISSING) & np.asarray(column.is_valid().to_numpy(zero_copy_only=False), dtype=bool)
            if not far.any():
                return out
    elif pa.types.is_floating(t):
        # whole floats (what pandas makes of an integer column with empty cells): checked at once; a cell that
        # is not a whole number in range is found below, one by one
        f = np.asarray(column.cast(pa.float64()).to_numpy(zero_copy_only=False), dtype=np.float64)
        empty = np.asarray(column.is_null().to_numpy(zero_copy_only=False), dtype=bool)
        with np.errstate(invalid="ignore"):
            ok = empty | (np.isfinite(f) & (np.abs(f) < _INT_LIMIT) & (f == np.trunc(f)))
        if ok.all():
            return np.where(empty, MISSING, np.where(empty, 0, f).astype(np.int64))
    else:
        raise err(None, name, f"has type {t}, expected integers")
    out = np.empty(len(column), dtype=np.int64)
    for i, v in enumerate(column.to_pylist()):
        out[i] = _int_cell(v, i, name, err)
    return out


def _int_cell(value: Any, i: int, name: str, err: Any) -> int:
    if value is None:
        return MISSING
    text = str(value).strip()
    if text == "":
        return MISSING
    try:
        number = int(text)
    except ValueError:
        pass
    else:
        if abs(number) >= _INT_LIMIT:
            raise err(i, name, f"{text!r} is out of range")
        return number
    try:
        f = float(text)
    except ValueError:
        raise err(i, name, f"{text!r} is not an integer") from None
    if not math.isfinite(f) or f != int(f):
        raise err(i, name, f"{text!r} is not an integer")
    if abs(f) >= 2**62:
        raise err(i, name, f"{text!r} is out of range")
    return int(f)


# -- writing ---------------------------------------------------------------------------------------


def write_architectures(
    archs: Architecture | Iterable[Architecture], path: str | os.PathLike[str], format: str | None = None
) -> None:
    """Write architectures as one layer table (CSV or Parquet, by ``format`` or the file's suffix).

    Fields a layer type does not read are left empty; per-axis fields are written as one column
    (``kernel``) when every row has equal axes. Per-architecture ``meta`` is repeated on each of its rows.
    Reading the file back gives equal architectures.
    """
    if isinstance(archs, Architecture):
        archs = [archs]
    write_arrow(to_arrow(list(archs)), path, format)


def write_arrow(table: pa.Table, path: str | os.PathLike[str] | Any, format: str | None = None) -> None:
    """Write any pyarrow table as CSV (a readable header) or Parquet, by ``format`` or the file's suffix;
    ``path`` may also be a binary file object (CSV)."""
    if format not in (None, "csv", "parquet"):
        raise ValueError(f"unknown table format {format!r} (csv or parquet)")
    is_path = isinstance(path, str | os.PathLike)
    if format == "parquet" or (format is None and is_path and table_format(path) == "parquet"):
        import pyarrow.parquet as pq

        pq.write_table(table, path)
        return
    if not isinstance(path, str | os.PathLike):
        with csv_writer(path, table.schema) as writer:
            writer.write_table(table)
        return
    with csv_output_stream(os.fspath(path)) as stream, csv_writer(stream, table.schema) as writer:
        writer.write_table(table)


def csv_output_stream(path: str) -> Any:
    """A stream writing ``path``, compressed when its suffix says so (.gz, .bz2, .zst, .lz4)."""
    return pa.output_stream(path, compression=_COMPRESSED.get(Path(path).suffix.lower()))


def csv_writer(stream: Any, schema: pa.Schema) -> Any:
    """A pyarrow CSV writer of ``schema`` onto ``stream``, after a header written by csv.writer (pyarrow quotes
    every header name; this one quotes only where needed, as the rows are)."""
    import pyarrow.csv as pacsv

    header = io.StringIO()
    csv.writer(header, lineterminator="\n").writerow(schema.names)
    stream.write(header.getvalue().encode())
    options = pacsv.WriteOptions(include_header=False, quoting_style="needed")
    return pacsv.CSVWriter(stream, schema, write_options=options)


def layer_table(archs: Sequence[Architecture], path: str) -> LayerTable:
    """The :class:`LayerTable` of architectures already in memory (an imported ONNX model, say)."""
    return _parse(path, "parquet", to_arrow(archs))


def to_arrow(archs: Sequence[Architecture]) -> pa.Table:
    """The layer table of some architectures, as a pyarrow Table."""
    all_layers = [(a, layer) for a in archs for layer in a.layers]
    if not all_layers:
        raise ValueError("no architectures to write")
    rows = np.array([layer.row for _, layer in all_layers], dtype=np.int64)
    types = rows[:, 0]
    used = np.zeros(rows.shape, dtype=bool)
    for code in np.unique(types):
        mask = types == code
        for f in _USED_FIELDS[int(code)]:
            used[mask, FIELD_INDEX[f]] = True

    data: dict[str, pa.Array] = {
        "arch": pa.array([a.name for a, _ in all_layers], pa.string()),
        "layer": pa.array([layer.name for _, layer in all_layers], pa.string()),
        "type": pa.array([LAYER_TYPES[t] for t in types], pa.string()),
    }

    def column(field_name: str) -> pa.Array:
        fi = FIELD_INDEX[field_name]
        return pa.array(rows[:, fi], pa.int64(), mask=~used[:, fi])

    data["batch"] = column("batch")
    data["dtype"] = pa.array([DTYPES[d] for d in rows[:, FIELD_INDEX["dtype"]]], pa.string())
    kv = FIELD_INDEX["kv_dtype"]
    if used[:, kv].any():  # names, empty where the type has no K and V
        data["kv_dtype"] = pa.array([DTYPES[d] if u else None for d, u in zip(rows[:, kv], used[:, kv], strict=True)],
                                    pa.string())
    for name in _INT_FIELDS:
        if name == "batch" or not used[:, FIELD_INDEX[name]].any():
            continue
        pair = _AXIS_OF.get(name)
        if pair is not None:
            fh, fw = AXIS_PAIRS[pair]
            ih, iw = FIELD_INDEX[fh], FIELD_INDEX[fw]
            square = bool(np.all(rows[:, ih] == rows[:, iw]))
            if square:
                if name == fh:
                    data[pair] = column(fh)
                continue
        data[name] = column(name)

    meta_keys = list(dict.fromkeys(k for a in archs for k in a.meta))
    extra_keys = list(dict.fromkeys(k for a in archs for k in a.layer_data))
    for k in meta_keys + extra_keys:
        if k in data or k.strip().lower() in _KNOWN:
            raise ValueError(f"column {k!r} of meta or layer_data clashes with a layer table column")
    for k in meta_keys:
        data[k] = pa.array([a.meta.get(k) for a, _ in all_layers])
    for k in extra_keys:
        values: list[Any] = []
        for a in archs:
            values.extend(a.layer_data.get(k, [None] * len(a.layers)))
        data[k] = pa.array(values)
    return pa.table(data)
