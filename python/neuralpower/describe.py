"""What ``neuralpower describe`` prints: a network layer by layer, computed column-wise.

A :class:`Listing` holds one architecture as arrays (its layer rows, their shapes and counts from the
compiled core, its layer names), so that a network of a million layers is described in seconds: a table file
is listed straight from its columns without building a :class:`~neuralpower.layers.Layer` per row, and the
text of configurations, shapes and counts is made once per distinct value.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TextIO

import numpy as np
import numpy.typing as npt

from . import _evaluator as _ev
from ._text import text_table
from .errors import InputError
from .layers import DTYPE_CODE, DTYPES, FIELD_INDEX, INFO, LAYER_TYPES, Architecture, network_totals, prepare_rows

__all__ = ["Listing", "config_text", "shape_text", "si"]

_I = {name: i for i, name in enumerate(INFO)}
_F = FIELD_INDEX
_WINDOWED = {LAYER_TYPES.index(t) for t in ("conv2d", "maxpool2d", "avgpool2d")}
_CONV, _AVGPOOL, _LINEAR, _SHUFFLE = (
    LAYER_TYPES.index(t) for t in ("conv2d", "avgpool2d", "linear", "channel_shuffle")
)
_MULTI = {LAYER_TYPES.index(t) for t in ("add", "mul", "concat")}
_BROADCAST = {LAYER_TYPES.index(t) for t in ("add", "mul")}
_CONFIG_FIELDS = [
    _F[f]
    for f in (
        "type", "kernel_h", "kernel_w", "stride_h", "stride_w", "padding_h", "padding_w", "dilation_h", "dilation_w",
        "groups", "inputs", "broadcast",
    )
]


def si(value: float) -> str:
    """A count in engineering notation: 1.23G, 45.6M, 789."""
    for threshold, suffix in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= threshold:
            return f"{value / threshold:.2f}{suffix}"
    return f"{value:.0f}"


def config_text(values: Sequence[int]) -> str:
    """A layer's configuration in a few characters (k3 s2 p1 g32), from the fields of ``_CONFIG_FIELDS``."""
    t, kh, kw, sh, sw, ph, pw, dh, dw, groups, inputs, broadcast = (int(v) for v in values)
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
    if t == _CONV and groups != 1:
        parts.append(f"g{groups}")
    if t in _MULTI and inputs != 2:
        parts.append(f"x{inputs}")
    if t in _BROADCAST and broadcast:
        parts.append("bcast")
    if t == _SHUFFLE:
        parts.append(f"g{groups}")
    return " ".join(parts)


def _per_distinct(columns: npt.NDArray[np.int64], make: Callable[[Sequence[int]], Any]) -> list[Any]:
    """``make`` of each row of ``columns``, computed once per distinct row."""
    n = len(columns)
    if n == 0:
        return []
    # A code per distinct row, the columns packed into one integer by their ranges (np.unique(axis=0) sorts rows
    # as records: ten times slower); constant columns, most of them, cost a comparison, and the code is
    # renumbered only when the next column would overflow it.
    limit = 2**62
    codes = np.zeros(n, dtype=np.int64)
    span = 1
    for col in columns.T:
        lo, hi = int(col.min()), int(col.max())
        if lo == hi:
            continue
        width = hi - lo + 1
        if span * width >= limit:
            codes = np.unique(codes, return_inverse=True)[1].reshape(-1).astype(np.int64)
            span = int(codes.max()) + 1
        if span * width >= limit:
            values, inverse = np.unique(col, return_inverse=True)
            col, lo, width = inverse.reshape(-1).astype(np.int64), 0, len(values)
        codes = codes * width + (col - lo)
        span *= width
    _, first, inverse = np.unique(codes, return_index=True, return_inverse=True)
    made = [make(row) for row in columns[first].tolist()]
    return [made[i] for i in inverse.reshape(-1).tolist()]


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
        if batch is not None or dtype is not None:
            if batch is not None:
                rows[:, _F["batch"]] = batch
            if dtype is not None:
                rows[:, _F["dtype"]] = DTYPE_CODE[dtype]
            bad = prepare_rows(rows)
            if bad is not None:
                i, column, message = bad
                raise InputError(message, path=table.path, row=int(table.line[int(index[i])]), column=column)
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
        return network_totals(self.info)

    # -- per-layer columns ---------------------------------------------------------------------------------
    def types(self) -> list[str]:
        return [LAYER_TYPES[t] for t in self.rows[:, 0].tolist()]

    def in_shapes(self, text: bool = False) -> list[Any]:
        """Each layer's (first) input shape: (N, C, H, W), or (N, F) for linear (as 8x64x56x56 with ``text``)."""
        cols = self.rows[:, [0, _F["batch"], _F["in_channels"], _F["in_h"], _F["in_w"], _F["in_features"]]]

        def shape(r: Sequence[int]) -> Any:
            s = (r[1], r[5]) if r[0] == _LINEAR else (r[1], r[2], r[3], r[4])
            return shape_text(s) if text else s

        return _per_distinct(cols, shape)

    def out_shapes(self, text: bool = False) -> list[Any]:
        """Each layer's output shape: (N, C, H, W), or (N, F) for linear and flatten."""
        cols = np.column_stack([self.rows[:, _F["batch"]], self.info[:, :4]])

        def shape(r: Sequence[int]) -> Any:
            s = (r[0], r[1]) if r[4] == 2 else (r[0], r[1], r[2], r[3])
            return shape_text(s) if text else s

        return _per_distinct(cols, shape)

    def configs(self) -> list[str]:
        return _per_distinct(self.rows[:, _CONFIG_FIELDS], config_text)

    def counts(self, name: str) -> npt.NDArray[np.int64]:
        """One count per layer: macs, flops, params, bytes_read, bytes_written or bytes."""
        i = self.info
        if name == "bytes_read":
            return i[:, _I["bytes_input"]] + i[:, _I["bytes_weights"]]
        if name == "bytes_written":
            return i[:, _I["bytes_output"]]
        if name == "bytes":
            return i[:, _I["bytes_input"]] + i[:, _I["bytes_weights"]] + i[:, _I["bytes_output"]]
        return i[:, _I[name]]

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

    # -- output -------------------------------------------------------------------------------------------
    def write_json(self, out: TextIO) -> None:
        """One JSON object: name, batch, dtype, the totals, meta and per_layer (one layer object a line, so
        that a million layers are written by the C encoder, not the indenting Python one)."""
        head = {"name": self.name, "batch": self.batch, "dtype": self.dtype, **self.totals(), "meta": self.meta}
        out.write("{\n")
        for key, value in head.items():
            out.write(f" {json.dumps(key)}: {json.dumps(value)},\n")
        out.write(' "per_layer": [\n')
        records = self.records()
        for i, record in enumerate(records):
            out.write(f"  {json.dumps(record)}{',' if i + 1 < len(records) else ''}\n")
        out.write(" ]\n}\n")

    def write_csv(self, out: TextIO) -> None:
        import csv

        writer = csv.writer(out, lineterminator="\n")
        header = ["arch", "index", "layer", "type", "in_shape", "out_shape", "config", "macs", "flops", "params",
                  "bytes_read", "bytes_written", "bytes"]
        writer.writerow(header)
        counts = [self.counts(n).tolist() for n in header[7:]]
        writer.writerows(
            zip(
                [self.name] * len(self), range(len(self)), self.names, self.types(),
                self.in_shapes(text=True), self.out_shapes(text=True), self.configs(),
                *counts, strict=True,
            )
        )

    def text(self) -> str:
        header = ("#", "layer", "type", "input", "output", "config", "MACs", "params", "bytes")

        def short(values: npt.NDArray[np.int64]) -> list[str]:
            distinct, inverse = np.unique(values, return_inverse=True)
            made = [si(v) for v in distinct.tolist()]
            return [made[i] for i in inverse.reshape(-1).tolist()]

        body = list(
            zip(
                map(str, range(len(self))), self.names, self.types(), self.in_shapes(text=True),
                self.out_shapes(text=True), self.configs(), short(self.counts("macs")),
                short(self.counts("params")), short(self.counts("bytes")), strict=True,
            )
        )
        t = self.totals()
        total = ("", "total", f"{t['layers']} layers", "", "", "", si(t["macs"]), si(t["params"]), si(t["bytes"]))
        return "\n".join(
            [
                f"{self.name}: batch {self.batch}, {self.dtype}",
                *text_table(header, body, {0, 6, 7, 8}, total),
                f"FLOPs {si(t['flops'])} ({t['flops']:,}), MACs {t['macs']:,}, params {t['params']:,}, "
                f"bytes read {t['bytes_read']:,}, written {t['bytes_written']:,}",
            ]
        )


def shape_text(shape: Sequence[int]) -> str:
    """A shape as 8x64x56x56."""
    return "x".join(str(d) for d in shape)
