"""What ``neuralpower describe`` prints: a network layer by layer, computed column-wise.

A :class:`Listing` holds one architecture as arrays (its layer rows, their shapes and counts from the
compiled core, its layer names), so that a network of a million layers is described in seconds: a table file
is listed straight from its columns without building a :class:`~neuralpower.layers.Layer` per row, and the
text of configurations, shapes and counts is made once per distinct value.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, TextIO

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc

from . import _evaluator as _ev
from ._text import shape_text, si
from .errors import InputError
from .layers import (
    DTYPE_CODE,
    DTYPES,
    FIELD_INDEX,
    FIELD_NAMES,
    FIELDS,
    INFO,
    LAYER_TYPES,
    Architecture,
    in_shape,
    network_totals,
    outside_params,
    prepare_rows,
    set_dtype,
)

__all__ = ["Listing", "config_text", "shape_text", "si"]

_I = {name: i for i, name in enumerate(INFO)}
_F = FIELD_INDEX
_WINDOWED = {LAYER_TYPES.index(t) for t in ("conv2d", "maxpool2d", "avgpool2d", "conv_transpose2d")}
_CONVS = {LAYER_TYPES.index(t) for t in ("conv2d", "conv_transpose2d")}
_AVGPOOL, _SHUFFLE, _TRANSPOSED, _ATTENTION, _GELU, _UPSAMPLE, _LAYERNORM, _SOFTMAX, _MATMUL = (
    LAYER_TYPES.index(t)
    for t in ("avgpool2d", "channel_shuffle", "conv_transpose2d", "attention", "gelu", "upsample", "layernorm",
              "softmax", "matmul")
)
_MULTI = {LAYER_TYPES.index(t) for t in ("add", "mul", "concat")}
_BROADCAST = {LAYER_TYPES.index(t) for t in ("add", "mul", "matmul")}
_CONFIG_FIELDS = [
    _F[f]
    for f in (
        "type", "kernel_h", "kernel_w", "stride_h", "stride_w", "padding_h", "padding_w", "dilation_h", "dilation_w",
        "groups", "inputs", "broadcast", "heads", "causal", "approximate", "interpolation", "output_padding_h",
        "output_padding_w", "channels_first", "kv_heads", "window", "dtype", "kv_dtype",
    )
]


def config_text(values: Sequence[int]) -> str:
    """A layer's configuration in a few characters (k3 s2 p1 g32; attention h32 kv8 causal w4096 kv:fp8), from
    the fields of ``_CONFIG_FIELDS``."""
    (t, kh, kw, sh, sw, ph, pw, dh, dw, groups, inputs, broadcast, heads, causal, approx, interp, oph, opw, first,
     kv_heads, window, dtype, kv_dtype) = (int(v) for v in values)
    parts = []
    if t in _WINDOWED:

        def pair(label: str, v: tuple[int, int], default: int) -> None:
            if v[0] != v[1]:
                parts.append(f"{label}{v[0]}x{v[1]}")
            elif v[0] != default or label == "k":
                parts.append(f"{label}{v[0]}")

        pair("k", (kh, kw), 0)
        pair("s", (sh, sw), 1)
        pair("p", (ph, pw), 0)
        if t != _AVGPOOL:
            pair("d", (dh, dw), 1)
        if t == _TRANSPOSED:
            pair("op", (oph, opw), 0)
    if t in _CONVS and groups != 1:
        parts.append(f"g{groups}")
    if t in _MULTI and inputs != 2:
        parts.append(f"x{inputs}")
    if t in _BROADCAST and broadcast:
        parts.append("bcast")
    if t == _SHUFFLE:
        parts.append(f"g{groups}")
    if t == _ATTENTION or (t == _MATMUL and heads > 1):
        parts.append(f"h{heads}" + (f" kv{kv_heads}" if t == _ATTENTION and kv_heads != heads else "")
                     + (" causal" if causal else ""))
    if t == _ATTENTION and window:
        parts.append(f"w{window}")
    if t == _ATTENTION and kv_dtype != dtype:
        parts.append(f"kv:{DTYPES[kv_dtype]}")
    if t == _GELU and approx:
        parts.append("tanh")
    if t == _UPSAMPLE:
        parts.append(FIELD_NAMES["interpolation"][interp])
    if t == _LAYERNORM and first:
        parts.append("channels-first")
    if t == _SOFTMAX and not first:
        parts.append("last-axis")
    return " ".join(parts)


def _counts(info: npt.NDArray[np.int64], name: str) -> npt.NDArray[np.int64]:
    """One count per layer, from its info rows: macs, flops, params, bytes_read, bytes_written or bytes."""
    if name == "bytes_read":
        return info[:, _I["bytes_input"]] + info[:, _I["bytes_weights"]]
    if name == "bytes_written":
        return info[:, _I["bytes_output"]]
    if name == "bytes":
        return info[:, _I["bytes_input"]] + info[:, _I["bytes_weights"]] + info[:, _I["bytes_output"]]
    return info[:, _I[name]]


def _set_batch_and_dtype(
    rows: npt.NDArray[np.int64], batch: int | None, dtype: str | None, table: Any, index: npt.NDArray[np.int64]
) -> None:
    """Give some rows (``table``'s rows ``index``) another batch and dtype, in place, and validate them again;
    an error names the table's row."""
    if batch is None and dtype is None:
        return
    if batch is not None:
        rows[:, _F["batch"]] = batch
    if dtype is not None:
        set_dtype(rows, DTYPE_CODE[dtype])
    bad = prepare_rows(rows)
    if bad is not None:
        i, column, message = bad
        raise InputError(message, path=table.path, row=int(table.line[int(index[i])]), column=column)


def _made_per_distinct(
    rows: npt.NDArray[np.int64], columns: Sequence[int], make: Callable[[Sequence[int]], Any]
) -> tuple[npt.NDArray[np.int32], list[Any]]:
    """``make`` of some ``columns`` of the rows, computed once per distinct value: (each row's code, the values
    made, by code)."""
    cols = [int(c) for c in columns]
    index, first = _ev.distinct(rows, cols)
    return index, [make(row) for row in rows[first][:, cols].tolist()]


def _per_distinct(
    rows: npt.NDArray[np.int64], columns: Sequence[int], make: Callable[[Sequence[int]], Any]
) -> list[Any]:
    """``make`` of some ``columns`` of each row, computed once per distinct value, as a list."""
    index, made = _made_per_distinct(rows, columns, make)
    return [made[i] for i in index.tolist()]


# The fields a layer's input shape is read from, and its output shape's from its info (out_rank picks 2, 3 or 4).
_IN_SHAPE_FIELDS = [_F[name] for name in ("type", "batch", "in_channels", "in_h", "in_w", "in_features", "tokens",
                                          "heads", "head_dim")]
_OUT_SHAPE_INFO = [0, 1, 2, 3]


def _in_shape(v: Sequence[int]) -> tuple[int, ...]:
    row = [0] * len(FIELDS)
    for index, value in zip(_IN_SHAPE_FIELDS, v, strict=True):
        row[index] = value
    return in_shape(row)


def _out_shape(batch: int, v: Sequence[int]) -> tuple[int, ...]:
    if v[3] == 2:
        return (batch, v[0])
    return (batch, v[1], v[0]) if v[3] == 3 else (batch, v[0], v[1], v[2])


@dataclass
class Listing:
    """One architecture, column-wise: what ``describe`` shows of it."""

    name: str
    rows: npt.NDArray[np.int64]
    names: list[str]
    meta: dict[str, Any] = field(default_factory=dict)
    info: npt.NDArray[np.int64] = field(init=False)

    def __post_init__(self) -> None:
        self.info = _ev.info(np.ascontiguousarray(self.rows, dtype=np.int64))

    @classmethod
    def from_architecture(cls, arch: Architecture) -> Listing:
        return cls(arch.name, np.asarray(arch.rows()), [layer.name for layer in arch.layers], dict(arch.meta))

    @classmethod
    def from_table(
        cls, table: Any, spec: str, arch_id: str | None, *, batch: int | None = None, dtype: str | None = None
    ) -> Listing:
        """One architecture of a :class:`~neuralpower.table.LayerTable` (``arch_id``, or its only one), with
        ``batch`` and ``dtype`` overriding the table's."""
        from .sources import pick_architecture

        order, offsets, archs = table.grouping()
        k = pick_architecture(archs, spec, arch_id)
        span = np.arange(offsets[k], offsets[k + 1], dtype=np.int64)
        index = span if order is None else order[span]
        table.check_one_batch_and_dtype(index)
        rows = np.array(table.rows[index], dtype=np.int64)
        _set_batch_and_dtype(rows, batch, dtype, table, index)
        import pyarrow as pa

        names = table.layer_names_at(index, span - offsets[k])
        meta: dict[str, Any] = {}
        for column in table.extra.column_names:  # values constant within the architecture
            try:
                values = table.extra.column(column).take(index).drop_null().unique().to_pylist()
            except (pa.ArrowNotImplementedError, pa.ArrowInvalid):  # list or struct cells: kept per layer
                continue
            if len(values) == 1:
                meta[column] = values[0]
        return cls(archs[k], rows, names, meta)

    def __len__(self) -> int:
        return len(self.names)

    @property
    def batch(self) -> int:
        return int(self.rows[0, _F["batch"]])

    @property
    def dtype(self) -> str:
        return DTYPES[int(self.rows[0, _F["dtype"]])]

    def totals(self) -> dict[str, int]:
        """Network totals, exact (see :func:`neuralpower.layers.network_totals`)."""
        return network_totals(self.info, outside_params(self.meta))

    # -- per-layer columns ---------------------------------------------------------------------------------
    def types(self) -> list[str]:
        return [LAYER_TYPES[t] for t in self.rows[:, 0].tolist()]

    def in_shapes(self, text: bool = False) -> list[Any]:
        """Each layer's (first) input shape: (N, C, H, W), or (N, F) for linear (as 8x64x56x56 with ``text``)."""
        return _per_distinct(self.rows, _IN_SHAPE_FIELDS, lambda v: shape_text(_in_shape(v)) if text else _in_shape(v))

    def out_shapes(self, text: bool = False) -> list[Any]:
        """Each layer's output shape: (N, C, H, W), or (N, F) for linear and flatten."""
        batch = self.batch if len(self) else 1

        def shape(v: Sequence[int]) -> Any:
            return shape_text(_out_shape(batch, v)) if text else _out_shape(batch, v)

        return _per_distinct(self.info, _OUT_SHAPE_INFO, shape)

    def configs(self) -> list[str]:
        return _per_distinct(self.rows, _CONFIG_FIELDS, config_text)

    def counts(self, name: str) -> npt.NDArray[np.int64]:
        """One count per layer: macs, flops, params, bytes_read, bytes_written or bytes."""
        return _counts(self.info, name)

    def records(self) -> list[dict[str, Any]]:
        """One object per layer: what ``--format json`` writes as ``per_layer``."""
        columns: dict[str, list[Any]] = {
            "index": list(range(len(self))),
            "layer": self.names,
            "type": self.types(),
            "in_shape": [list(s) for s in self.in_shapes()],
            "out_shape": [list(s) for s in self.out_shapes()],
            "config": self.configs(),
        }
        for name in ("macs", "flops", "params", "bytes_read", "bytes_written", "bytes"):
            columns[name] = self.counts(name).tolist()
        keys = list(columns)
        return [dict(zip(keys, values, strict=True)) for values in zip(*columns.values(), strict=True)]

    # -- output (the same writer as a table's, one part) -------------------------------------------------
    def write_json(self, out: TextIO) -> None:
        """One JSON object: name, batch, dtype, the totals, meta and per_layer (one layer object a line)."""
        out.write(self._written("json"))

    def write_csv(self, out: TextIO) -> None:
        out.write(self._written("csv"))

    def text(self) -> str:
        return self._written("table").rstrip("\n")

    def _written(self, fmt: str) -> str:
        import io

        buffer = io.BytesIO()
        write_listing(self, fmt, buffer)
        return buffer.getvalue().decode()


# -- streaming output: one architecture written part by part --------------------------------------------------
#
# A part is a run of one architecture's layers (all of a network in memory, or its share of one block of a
# table read in blocks). Each output column is built column-wise with pyarrow: a column of few distinct values
# (types, shapes, configurations, counts in engineering notation) as a dictionary of texts made once per
# distinct value, the per-row ones (index, names, exact counts) by pyarrow's kernels; the lines are joined by
# pyarrow and written from its buffer. Text tables need their column widths first: they are computed on a first
# pass (the parts are kept when they are few, read again otherwise).

_TEXT_HEADER = ("#", "layer", "type", "input", "output", "config", "MACs", "params", "bytes")
_TEXT_RIGHT = {0, 6, 7, 8}
_CSV_HEADER = ("arch", "index", "layer", "type", "in_shape", "out_shape", "config", "macs", "flops", "params",
               "bytes_read", "bytes_written", "bytes")
_COUNTS = ("macs", "flops", "params", "bytes_read", "bytes_written", "bytes")


def _texts(
    rows: npt.NDArray[np.int64],
    columns: Sequence[int],
    make: Callable[[Sequence[int]], str],
    at: npt.NDArray[np.int64] | None = None,
) -> pa.DictionaryArray:
    """``make`` of some ``columns`` of each row as a dictionary array, computed once per distinct value; with
    ``at``, of rows ``at``."""
    index, made = _made_per_distinct(rows, columns, make)
    codes = index if at is None else index[at]
    return pa.DictionaryArray.from_arrays(pa.array(codes, pa.int32()), pa.array(made, pa.string()))


def _decoded(column: pa.Array) -> pa.Array:
    return column.dictionary.take(column.indices) if isinstance(column, pa.DictionaryArray) else column


def _width(column: pa.Array | npt.NDArray[np.int64]) -> int:
    """The widest value of a column, in code points (a column of non-negative integers: in digits)."""
    if isinstance(column, np.ndarray):
        return len(str(int(column.max()))) if len(column) else 0
    values = column.dictionary if isinstance(column, pa.DictionaryArray) else column
    if len(values) == 0:
        return 0
    return int(pc.max(pc.utf8_length(values)).as_py() or 0)


def _string_buffers(array: pa.Array) -> tuple[npt.NDArray[np.int32], npt.NDArray[np.uint8]]:
    """The offsets and bytes of a string array (its nulls as empty strings)."""
    if array.null_count:
        array = array.fill_null("")
    if array.type != pa.string():
        array = array.cast(pa.string())
    buffers = array.buffers()
    offsets = np.frombuffer(buffers[1], dtype=np.int32, count=len(array) + 1, offset=4 * array.offset)
    data = np.frombuffer(buffers[2], dtype=np.uint8) if buffers[2] is not None else np.zeros(0, dtype=np.uint8)
    return offsets, data


def _piece(column: pa.Array | npt.NDArray[np.int64], width: int = 0, right: bool = False) -> tuple[Any, ...]:
    """A column for the core's line joiner (``_evaluator.join_lines``)."""
    if isinstance(column, np.ndarray):
        return ("int", np.ascontiguousarray(column, dtype=np.int64), width, right)
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks()
    if isinstance(column, pa.DictionaryArray):
        indices = column.indices.cast(pa.int32())
        if indices.null_count:
            indices = indices.fill_null(0)
        index = np.frombuffer(indices.buffers()[1], dtype=np.int32, count=len(indices), offset=4 * indices.offset)
        return ("dict", index, *_string_buffers(column.dictionary), width, right)
    return ("str", *_string_buffers(column), width, right)


def _csv_field(column: pa.Array) -> pa.Array:
    """Texts as CSV fields: quoted (quotes doubled) where they hold a comma, a quote or a line break."""
    if isinstance(column, pa.DictionaryArray):  # few distinct values: each made once
        return pa.DictionaryArray.from_arrays(column.indices, _csv_field(column.dictionary))
    needs = pc.match_substring_regex(column, '[",\r\n]')
    if not pc.any(needs).as_py():
        return column
    quoted = pc.binary_join_element_wise('"', pc.replace_substring(column, '"', '""'), '"', "")
    return pc.if_else(needs, quoted, column)


def _json_string(column: pa.Array) -> pa.Array:
    """Texts as JSON strings, as json.dumps writes them (plain ASCII quoted at once, the others by json.dumps)."""
    if isinstance(column, pa.DictionaryArray):  # few distinct values: each made once
        return pa.DictionaryArray.from_arrays(column.indices, _json_string(column.dictionary))
    plain = pc.binary_join_element_wise('"', column, '"', "")
    special = pc.match_substring_regex(column, '[^\\x20-\\x7e]|["\\\\]')
    if not pc.any(special).as_py():
        return plain
    at = np.flatnonzero(np.asarray(special.to_numpy(zero_copy_only=False), dtype=bool))
    values = plain.to_pylist()
    for i, text in zip(at.tolist(), column.take(pa.array(at)).to_pylist(), strict=True):
        values[i] = json.dumps(text)
    return pa.array(values, pa.string())


@dataclass
class Part:
    """A run of one architecture's layers: rows, their info, their names (empty where unnamed) and the position
    of the first one in the architecture. With ``at``, ``rows`` and ``info`` are distinct rows and layer ``j``
    is row ``at[j]`` (each column is then made once per distinct row)."""

    rows: npt.NDArray[np.int64]
    info: npt.NDArray[np.int64]
    names: pa.Array
    start: int
    at: npt.NDArray[np.int64] | None = None

    def __len__(self) -> int:
        return len(self.rows) if self.at is None else len(self.at)

    def _per_layer(self, values: npt.NDArray[Any]) -> npt.NDArray[Any]:
        """Values per row, as values per layer."""
        return values if self.at is None else values[self.at]

    def layer_info(self) -> npt.NDArray[np.int64]:
        """The info row of each layer."""
        return self._per_layer(self.info)

    def layer_names(self) -> pa.Array:
        """Names, an unnamed layer called ``<type>_<position>`` as :class:`Architecture` names it."""
        names = self.names
        if isinstance(names, pa.ChunkedArray):
            names = names.combine_chunks()
        if pa.types.is_dictionary(names.type):  # as a Parquet file's dictionary holds them
            names = names.cast(names.type.value_type)
        missing = pc.or_kleene(names.is_null(), pc.equal(pc.utf8_length(names), 0)).fill_null(True)
        if not pc.any(missing).as_py():
            return names
        position = pc.cast(pa.array(self.index()), pa.string())
        generated = pc.binary_join_element_wise(_decoded(self.types()), position, "_")
        return pc.if_else(missing, generated, names)

    def types(self) -> pa.DictionaryArray:
        return _texts(self.rows, [0], lambda r: LAYER_TYPES[r[0]], self.at)

    def index(self) -> npt.NDArray[np.int64]:
        return np.arange(self.start, self.start + len(self), dtype=np.int64)

    def shapes(self, make: Callable[[Sequence[int]], str]) -> tuple[pa.DictionaryArray, pa.DictionaryArray]:
        batch = int(self.rows[0, _F["batch"]]) if len(self) else 1  # one per architecture
        return (
            _texts(self.rows, _IN_SHAPE_FIELDS, lambda v: make(_in_shape(v)), self.at),
            _texts(self.info, _OUT_SHAPE_INFO, lambda v: make(_out_shape(batch, v)), self.at),
        )

    def configs(self) -> pa.DictionaryArray:
        return _texts(self.rows, _CONFIG_FIELDS, config_text, self.at)

    def counts(self, name: str) -> npt.NDArray[np.int64]:
        return self._per_layer(_counts(self.info, name))

    def text_columns(self) -> list[Any]:
        """The text table's columns (``_TEXT_HEADER``), unpadded: the index as integers, the rest as texts."""

        def short(values: npt.NDArray[np.int64]) -> pa.DictionaryArray:
            return _texts(values[:, None], [0], lambda v: si(v[0]))

        shape_in, shape_out = self.shapes(shape_text)
        return [
            self.index(), self.layer_names(), self.types(), shape_in, shape_out, self.configs(),
            short(self.counts("macs")), short(self.counts("params")), short(self.counts("bytes")),
        ]

    def csv_lines(self, arch: str) -> bytes:
        shape_in, shape_out = self.shapes(shape_text)
        arch_field = _csv_field(pa.array([arch]))[0].as_py()
        pieces: list[Any] = [
            f"{arch_field},".encode(), _piece(self.index()), b",", _piece(_csv_field(self.layer_names())), b",",
            _piece(self.types()), b",", _piece(shape_in), b",", _piece(shape_out), b",",
            _piece(_csv_field(self.configs())),
        ]
        for name in _COUNTS:
            pieces += [b",", _piece(self.counts(name))]
        return _ev.join_lines(pieces, len(self))

    def json_lines(self, last: bool) -> bytes:
        def listed(shape: Sequence[int]) -> str:
            return json.dumps(list(shape))

        shape_in, shape_out = self.shapes(listed)
        pieces: list[Any] = [
            b'  {"index": ', _piece(self.index()), b', "layer": ', _piece(_json_string(self.layer_names())),
            b', "type": ', _piece(_json_string(self.types())), b', "in_shape": ', _piece(shape_in),
            b', "out_shape": ', _piece(shape_out), b', "config": ', _piece(_json_string(self.configs())),
        ]
        for name in _COUNTS:
            pieces += [f', "{name}": '.encode(), _piece(self.counts(name))]
        return _ev.join_lines(pieces, len(self), end="},\n", last_end="}\n" if last else "},\n")


def text_lines(columns: Sequence[Any], widths: Sequence[int]) -> bytes:
    """Lines of the text table's body, padded to ``widths``, trailing spaces dropped, each ending in a newline."""
    pieces: list[Any] = []
    for k, (c, w) in enumerate(zip(columns, widths, strict=True)):
        if k:
            pieces.append(b"  ")
        pieces.append(_piece(c, w, k in _TEXT_RIGHT))
    return _ev.join_lines(pieces, len(columns[0]), rstrip=True)


@dataclass
class Summary:
    """What a first pass over an architecture's parts learns: its totals (exact) and the text table's widths;
    the parts themselves (with their text columns) while they are few (``kept``; None: read them again)."""

    fmt: str
    totals: dict[str, int] = field(default_factory=lambda: network_totals(np.zeros((0, len(INFO)), dtype=np.int64)))
    widths: list[int] = field(default_factory=lambda: [len(h) for h in _TEXT_HEADER])
    kept: list[tuple[Part, list[Any] | None]] | None = field(default_factory=list)

    def add(self, part: Part) -> None:
        columns = part.text_columns() if self.fmt == "table" else None
        t = network_totals(part.layer_info())
        self.totals = {k: self.totals[k] + v for k, v in t.items()}
        if columns is not None:
            self.widths = [max(w, _width(c)) for w, c in zip(self.widths, columns, strict=True)]
        if self.kept is not None:
            self.kept.append((part, columns))
            if self.totals["layers"] > _KEEP_ROWS:
                self.kept = None  # too many to keep: read again

    def parts(self, again: Callable[[], Iterable[Part]]) -> Iterator[tuple[Part, list[Any] | None]]:
        if self.kept is not None:
            yield from self.kept
        else:
            yield from ((p, None) for p in again())


def write_architecture(
    name: str,
    batch: int,
    dtype: str,
    meta: dict[str, Any],
    summary: Summary,
    parts: Callable[[], Iterable[Part]],
    out: Any,
) -> None:
    """Write one architecture in ``summary.fmt`` (table, csv or json) to a binary file: ``summary`` from a
    first pass over its parts, ``parts`` a function that yields them again (called when they were not kept)."""
    fmt = summary.fmt
    t = dict(summary.totals)
    t["params"] += outside_params(meta)  # parameters no layer holds (ViT's position embedding, ...)
    if fmt == "csv":
        out.write((",".join(_CSV_HEADER) + "\n").encode())
        for part, _ in summary.parts(parts):
            out.write(part.csv_lines(name))
        return
    if fmt == "json":
        head = {"name": name, "batch": batch, "dtype": dtype, **t, "meta": meta}
        out.write(b"{\n")
        for key, value in head.items():
            out.write(f" {json.dumps(key)}: {json.dumps(value)},\n".encode())
        out.write(b' "per_layer": [\n')
        seen = 0
        for part, _ in summary.parts(parts):
            seen += len(part)
            out.write(part.json_lines(last=seen == t["layers"]))
        out.write(b" ]\n}\n")
        return
    total = ("", "total", f"{t['layers']} layers", "", "", "", si(t["macs"]), si(t["params"]), si(t["bytes"]))
    widths = [max(w, len(f)) for w, f in zip(summary.widths, total, strict=True)]
    line = "  ".join(f"{{:{'>' if c in _TEXT_RIGHT else '<'}{w}}}" for c, w in enumerate(widths))
    rule = "  ".join("-" * w for w in widths)
    out.write(f"{name}: batch {batch}, {dtype}\n{line.format(*_TEXT_HEADER).rstrip()}\n{rule}\n".encode())
    for part, columns in summary.parts(parts):
        out.write(text_lines(columns if columns is not None else part.text_columns(), widths))
    out.write(
        (
            f"{rule}\n{line.format(*total).rstrip()}\n"
            f"FLOPs {si(t['flops'])} ({t['flops']:,}), MACs {t['macs']:,}, params {t['params']:,}, "
            f"bytes read {t['bytes_read']:,}, written {t['bytes_written']:,}\n"
        ).encode()
    )


def describe_table(
    spec: str, arch_id: str | None, fmt: str, out: Any, *, batch: int | None = None, dtype: str | None = None
) -> None:
    """Write one architecture of a layer table (``arch_id``, or its only one), read block by block: a first
    pass validates the table, finds its architectures and sums the chosen one's totals (keeping its parts
    while they are few), a second writes it."""
    from .sources import pick_architecture
    from .stream import read_blocks
    from .table import used_rows

    names: dict[str, None] = {}
    summary = Summary(fmt)
    first: dict[str, Any] = {}
    meta: dict[str, list[Any]] = {}
    unkept: set[str] = set()

    def extract(block: Any, want: str, start: int, checks: bool) -> Part | None:
        enc = block.arch_encoded()
        dictionary = enc.dictionary.to_pylist()
        if want not in dictionary:
            return None
        code = dictionary.index(want)
        index = np.flatnonzero(np.asarray(enc.indices.to_numpy(zero_copy_only=False)) == code).astype(np.int64)
        if checks:
            # an architecture has one batch and dtype: every row is compared with its first, whichever block
            if not first:
                first.update(batch=block.field_at(index[:1], _F["batch"])[0],
                             dtype=block.field_at(index[:1], _F["dtype"])[0], block=block, row=int(index[0]))
            for col in ("batch", "dtype"):
                values = block.field_at(index, _F[col])
                differs = np.flatnonzero(values != first[col])
                if len(differs):
                    i = int(index[int(differs[0])])
                    here, there = (DTYPES[int(v)] if col == "dtype" else str(int(v))
                                   for v in (values[int(differs[0])], first[col]))
                    line = int(first["block"].line[first["row"]])
                    raise block.error(i, col, f"{here} differs from {there} on row {line}: an architecture has "
                                      f"one {col}")
            _meta(block, index)
        whole = len(index) == len(block) and (len(index) == 0 or index[-1] == len(index) - 1)
        # the distinct rows that these layers are (only theirs: another architecture's are not validated again)
        distinct, at = block.distinct_rows()
        if at is None:
            at = None if whole else index
        elif not whole:
            at = at[index]
        first_use = np.arange(len(distinct))  # the layer each distinct row is first
        if at is not None and (not whole or batch is not None or dtype is not None):
            distinct, at, first_use = used_rows(distinct, at)
        if batch is not None or dtype is not None:
            distinct = np.array(distinct, dtype=np.int64)  # a copy, given the new batch and dtype
            _set_batch_and_dtype(distinct, batch, dtype, block, index[first_use])
        names = block.layer_column if whole else block.layer_column.take(pa.array(index))
        return Part(distinct, _ev.info(distinct), names, start, at)

    def _meta(block: Any, index: npt.NDArray[np.int64]) -> None:
        for column in block.extra.column_names:  # values constant within the architecture
            if column in unkept:
                continue
            try:
                values = block.extra.column(column).take(pa.array(index)).drop_null().unique().to_pylist()
            except (pa.ArrowNotImplementedError, pa.ArrowInvalid):  # list or struct cells: kept per layer
                unkept.add(column)
                continue
            seen = meta.setdefault(column, [])
            for v in values:
                if v not in seen:
                    seen.append(v)
            if len(seen) > 1:
                unkept.add(column)

    want = arch_id
    for block in read_blocks(spec):
        for n in block.arch_encoded().dictionary.to_pylist():
            names.setdefault(n, None)
        if want is None:
            want = next(iter(names))
        if arch_id is None and len(names) > 1:
            continue  # refused below, once every name is known
        part = extract(block, want, summary.totals["layers"], checks=True)
        if part is not None:
            summary.add(part)
    k = pick_architecture(list(names), spec, arch_id)
    chosen = list(names)[k]

    def again() -> Iterator[Part]:
        start = 0
        for block in read_blocks(spec):
            part = extract(block, chosen, start, checks=False)
            if part is not None:
                start += len(part)
                yield part

    b = int(first["batch"]) if batch is None else batch
    d = DTYPES[int(first["dtype"])] if dtype is None else dtype
    found = {c: v[0] for c, v in meta.items() if c not in unkept and len(v) == 1}
    write_architecture(chosen, b, d, found, summary, again, out)


def write_listing(listing: Listing, fmt: str, out: Any) -> None:
    """Write a :class:`Listing` (one architecture in memory) in ``fmt`` to a binary file."""
    summary = Summary(fmt)
    part = Part(listing.rows, listing.info, pa.array(listing.names, pa.string()), 0)
    summary.add(part)
    write_architecture(listing.name, listing.batch, listing.dtype, listing.meta, summary, lambda: [part], out)


#: Rows of an architecture kept in memory between the passes of a listing (above: read again).
_KEEP_ROWS = 4_000_000
