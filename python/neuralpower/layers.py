"""Layers and architectures.

A layer is a fixed set of integer fields (its configuration). Everything derived from them (defaults,
validation, output shape, MACs, FLOPs, parameters, bytes, model features) is computed by the compiled
core (``cpp/include/neuralpower/layer.hpp``), the one definition shared by fitting and evaluation.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any, overload

import numpy as np
import numpy.typing as npt

from . import _evaluator as _ev
from .errors import InputError

__all__ = [
    "AXIS_PAIRS",
    "DTYPES",
    "DTYPE_FIELDS",
    "FEATURES",
    "FIELDS",
    "FIELD_NAMES",
    "INFO",
    "LAYER_TYPES",
    "Architecture",
    "Layer",
    "exact_sum",
    "in_shape",
    "network_totals",
    "prepare_rows",
]

FIELDS: tuple[str, ...] = tuple(_ev.FIELD_NAMES)
LAYER_TYPES: tuple[str, ...] = tuple(_ev.TYPE_NAMES)
DTYPES: tuple[str, ...] = tuple(_ev.DTYPE_NAMES)
INFO: tuple[str, ...] = tuple(_ev.INFO_NAMES)
FEATURES: tuple[str, ...] = tuple(_ev.FEATURE_NAMES)
MISSING: int = int(_ev.MISSING)

# Fields given per axis; a table or a constructor may give one value for both.
AXIS_PAIRS: dict[str, tuple[str, str]] = {
    "kernel": ("kernel_h", "kernel_w"),
    "stride": ("stride_h", "stride_w"),
    "padding": ("padding_h", "padding_w"),
    "dilation": ("dilation_h", "dilation_w"),
    "output_padding": ("output_padding_h", "output_padding_w"),
}

# Fields that hold a dtype code and are given by name (fp32, fp16, bf16, fp8) in tables and constructors:
# the layer's dtype, and attention's K and V (a KV cache stored in fp8 beside bf16 queries), which defaults to it.
DTYPE_FIELDS: tuple[str, ...] = ("dtype", "kv_dtype")

# Fields whose default is another field's value (attention's kv_tokens, kv_heads and kv_dtype): a layer's copy
# with that other field changed (:meth:`Layer.replace`, :func:`set_dtype`) keeps following it where it did.
_FOLLOWS: dict[str, str] = {"kv_heads": "heads", "kv_dtype": "dtype"}

# Integer fields that also take a name (a constructor argument): upsample's interpolation, gelu's
# approximate (PyTorch's spellings).
FIELD_NAMES: dict[str, tuple[str, ...]] = {
    "interpolation": ("nearest", "bilinear"),
    "approximate": ("none", "tanh"),
}

FIELD_INDEX: dict[str, int] = {name: i for i, name in enumerate(FIELDS)}
TYPE_CODE: dict[str, int] = {name: i for i, name in enumerate(LAYER_TYPES)}
DTYPE_CODE: dict[str, int] = {name: i for i, name in enumerate(DTYPES)}
_INFO_INDEX: dict[str, int] = {name: i for i, name in enumerate(INFO)}
_TYPE_FIELDS: tuple[frozenset[str], ...] = tuple(
    frozenset(FIELDS[f] for f in _ev.type_fields(t)) for t in range(len(LAYER_TYPES))
)
_NUM_FIELDS = len(FIELDS)


def type_code(name: str) -> int:
    """The code of a layer type name, or an :class:`InputError` listing the known types."""
    code = TYPE_CODE.get(name.strip().lower())
    if code is None:
        raise InputError(f"unknown layer type {name!r} (known: {', '.join(LAYER_TYPES)})", column="type")
    return code


def dtype_code(name: str, column: str = "dtype") -> int:
    """The code of a dtype name (fp32, fp16, bf16, fp8); an error names ``column``."""
    code = DTYPE_CODE.get(name.strip().lower())
    if code is None:
        raise InputError(f"unknown dtype {name!r} (known: {', '.join(DTYPES)})", column=column)
    return code


def set_dtype(rows: npt.NDArray[np.int64], code: int) -> None:
    """Give layer rows another dtype (a code) in place; attention's ``kv_dtype`` follows where it was the old
    dtype (its default), and stays where it was set apart (an fp8 KV cache). The rows still need validating."""
    dt, kv = FIELD_INDEX["dtype"], FIELD_INDEX["kv_dtype"]
    reads = np.isin(rows[:, 0], [t for t, used in enumerate(_TYPE_FIELDS) if "kv_dtype" in used])
    rows[reads & (rows[:, kv] == rows[:, dt]), kv] = code
    rows[:, dt] = code


def named_value(field: str, name: str) -> int:
    """The code of a named value of a field of :data:`FIELD_NAMES` (``interpolation="bilinear"`` is 1)."""
    names = FIELD_NAMES[field]
    key = name.strip().lower()
    if key not in names:
        raise InputError(f"unknown {field} {name!r} (known: {', '.join(names)}, or their codes 0-{len(names) - 1})",
                         column=field)
    return names.index(key)


def type_fields(type_name: str) -> frozenset[str]:
    """The fields a layer type reads; the others are zero in its row."""
    return _TYPE_FIELDS[type_code(type_name)]


def chw(shape: Sequence[int]) -> tuple[int, int, int]:
    """``(C, H, W)`` of a shape without batch: a vector ``(F,)`` is ``F x 1 x 1``."""
    if len(shape) == 1:
        return (int(shape[0]), 1, 1)
    if len(shape) == 3:
        return (int(shape[0]), int(shape[1]), int(shape[2]))
    raise ValueError(f"not an image or vector shape: {tuple(shape)}")


def exact_sum(values: npt.NDArray[np.int64]) -> int:
    """The exact sum of non-negative int64 counts, as a Python int: a network's total may pass 2**63 where
    every layer's count fits (NumPy's sum would wrap around). Summed as 32-bit halves, each of whose sums fits
    int64 for up to 2**31 values."""
    v = np.asarray(values, dtype=np.int64)
    return (int((v >> 32).sum()) << 32) + int((v & 0xFFFFFFFF).sum())


def outside_params(meta: Mapping[str, Any]) -> int:
    """The parameters an architecture's layers' counts miss: its ``params_outside_layers`` (parameters no layer
    holds) less its ``params_shared`` (parameters two layers hold, such as a language-model head tied to the token
    embedding: counted once); each 0 when absent or not a non-negative integer."""

    def count(key: str) -> int:
        value = meta.get(key, 0)
        try:
            n = int(value)
        except (TypeError, ValueError, OverflowError):
            return 0
        return n if n >= 0 and n == value else 0

    return count("params_outside_layers") - count("params_shared")


def network_totals(info: npt.NDArray[np.int64], params_outside_layers: int = 0) -> dict[str, int]:
    """Totals of layers given by their :data:`INFO` rows: layers, params, macs, flops, bytes read, written and
    moved, exact (Python ints: a network's sum may pass 2**63 where every layer's count fits).
    ``params_outside_layers`` is added to the parameters."""
    total = {name: exact_sum(info[:, _INFO_INDEX[name]]) for name in INFO[4:]}
    read = total["bytes_input"] + total["bytes_weights"]
    return {
        "layers": len(info),
        "params": total["params"] + params_outside_layers,
        "macs": total["macs"],
        "flops": total["flops"],
        "bytes_read": read,
        "bytes_written": total["bytes_output"],
        "bytes": read + total["bytes_output"],
    }


def prepare_rows(rows: npt.NDArray[np.int64]) -> tuple[int, str, str] | None:
    """Fill defaults and validate layer rows in place (``MISSING`` marks an empty field).

    Returns ``None`` when every row is valid, else ``(row_index, field_name, message)`` of the first bad
    row.
    """
    bad, field, message = _ev.prepare(rows)
    if bad < 0:
        return None
    return int(bad), FIELDS[field], str(message)


_F = FIELD_INDEX


def in_shape(row: Sequence[int]) -> tuple[int, ...]:
    """The (first) input's shape of a normalized layer row (see :attr:`Layer.in_shape`)."""
    kind = LAYER_TYPES[row[0]]
    n = int(row[_F["batch"]])
    tokens, features = int(row[_F["tokens"]]), int(row[_F["in_features"]])
    if kind == "linear":
        return (n, features) if tokens == 1 else (n, tokens, features)
    if kind == "matmul" and row[_F["heads"]] > 1:
        return (n, int(row[_F["heads"]]), tokens, features)
    if kind in ("layernorm", "matmul"):
        return (n, tokens, features)
    if kind == "embedding":
        return (n, tokens)
    if kind == "attention":
        return (n, int(row[_F["heads"]]), tokens, int(row[_F["head_dim"]]))
    return (n, int(row[_F["in_channels"]]), int(row[_F["in_h"]]), int(row[_F["in_w"]]))


def _as_int(key: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer):
        raise InputError(f"{value!r} is not an integer", column=key)
    return int(value)


class _Field:
    """Read-only attribute of a layer that returns one integer field of its row."""

    def __init__(self, name: str) -> None:
        self.index = FIELD_INDEX[name]

    def __get__(self, obj: Layer, objtype: type | None = None) -> int:
        return obj._row[self.index]


class _Count:
    """Read-only attribute of a layer that returns one of its computed counts."""

    def __init__(self, name: str) -> None:
        self.index = _INFO_INDEX[name]

    def __get__(self, obj: Layer, objtype: type | None = None) -> int:
        return obj.info[self.index]


class Layer:
    """One layer: its type, configuration, shapes and costs.

    Parameters
    ----------
    type
        One of :data:`LAYER_TYPES` (``conv2d``, ``linear``, ``maxpool2d``, ...).
    name
        The layer's name in its architecture (``""``: named by the architecture).
    **fields
        Configuration fields (:data:`FIELDS`). ``kernel``, ``stride``, ``padding`` and ``dilation`` may
        be an int or an ``(h, w)`` pair. ``dtype`` and attention's ``kv_dtype`` are names (``fp32``,
        ``fp16``, ``bf16``, ``fp8``). Fields left out take their defaults (batch 1, stride 1 or the kernel for
        pooling, padding 0, bias 1, attention's ``kv_tokens``, ``kv_heads`` and ``kv_dtype`` its ``tokens``,
        ``heads`` and ``dtype``, ...); fields the type does not read are ignored.

    Raises
    ------
    InputError
        When the configuration is invalid (names the field).
    """

    __slots__ = ("_info", "_row", "name")

    in_channels = _Field("in_channels")
    in_h = _Field("in_h")
    in_w = _Field("in_w")
    batch = _Field("batch")
    kernel_h = _Field("kernel_h")
    kernel_w = _Field("kernel_w")
    stride_h = _Field("stride_h")
    stride_w = _Field("stride_w")
    padding_h = _Field("padding_h")
    padding_w = _Field("padding_w")
    dilation_h = _Field("dilation_h")
    dilation_w = _Field("dilation_w")
    groups = _Field("groups")
    in_features = _Field("in_features")
    out_features = _Field("out_features")
    bias = _Field("bias")
    ceil_mode = _Field("ceil_mode")
    inputs = _Field("inputs")
    broadcast = _Field("broadcast")
    tokens = _Field("tokens")
    heads = _Field("heads")
    kv_tokens = _Field("kv_tokens")
    head_dim = _Field("head_dim")
    causal = _Field("causal")
    approximate = _Field("approximate")
    interpolation = _Field("interpolation")
    output_padding_h = _Field("output_padding_h")
    output_padding_w = _Field("output_padding_w")
    channels_first = _Field("channels_first")
    kv_heads = _Field("kv_heads")
    window = _Field("window")

    macs = _Count("macs")
    flops = _Count("flops")
    params = _Count("params")
    bytes_input = _Count("bytes_input")
    bytes_weights = _Count("bytes_weights")
    bytes_output = _Count("bytes_output")

    def __init__(self, type: str, *, name: str = "", **fields: Any) -> None:
        row = np.full((1, _NUM_FIELDS), MISSING, dtype=np.int64)
        row[0, 0] = type_code(type)
        for key, value in fields.items():
            if key in AXIS_PAIRS:
                pair = tuple(value) if isinstance(value, tuple | list) else (value, value)
                if len(pair) != 2:
                    raise InputError(f"{value!r} is not an int or an (h, w) pair", column=key)
                for axis_field, v in zip(AXIS_PAIRS[key], pair, strict=True):
                    row[0, FIELD_INDEX[axis_field]] = _as_int(key, v)
            elif key in DTYPE_FIELDS:
                row[0, FIELD_INDEX[key]] = dtype_code(str(value), key)
            elif key in FIELD_NAMES and isinstance(value, str):
                row[0, FIELD_INDEX[key]] = named_value(key, value)
            elif key in FIELD_INDEX and key != "type":
                row[0, FIELD_INDEX[key]] = _as_int(key, value)
            else:
                raise InputError(f"unknown layer field {key!r} (known: {', '.join(FIELDS[1:])})", column=key)
        bad = prepare_rows(row)
        if bad is not None:
            _, field, message = bad
            raise InputError(message, column=field)
        self._row: tuple[int, ...] = tuple(int(v) for v in row[0])
        self._info: tuple[int, ...] | None = None
        self.name = name

    @classmethod
    def from_row(cls, row: Iterable[int], name: str = "") -> Layer:
        """A layer from a row of :data:`FIELDS` (``MISSING`` fields take their defaults), normalized and
        validated like any other input.

        Raises
        ------
        InputError
            The row is not a valid layer (names the field), or not one integer per field.
        """
        try:
            array = np.array([list(row)], dtype=np.int64)
        except (TypeError, ValueError, OverflowError):
            raise InputError(f"a layer row must be {_NUM_FIELDS} integers (one per field)") from None
        if array.shape != (1, _NUM_FIELDS):
            raise InputError(f"a layer row must be {_NUM_FIELDS} integers (one per field), not {array.shape[1]}")
        bad = prepare_rows(array)
        if bad is not None:
            _, field, message = bad
            raise InputError(message, column=field)
        return cls._trusted(tuple(int(v) for v in array[0]), name)

    @classmethod
    def _trusted(cls, row: Iterable[int], name: str = "") -> Layer:
        """A layer from a row that :func:`prepare_rows` has already accepted (no checks: neuralpower's own
        rows only; a row from outside goes through :meth:`from_row`)."""
        layer = cls.__new__(cls)
        layer._row = tuple(int(v) for v in row)
        layer._info = None
        layer.name = name
        return layer

    # -- configuration ---------------------------------------------------------------------------
    @property
    def row(self) -> tuple[int, ...]:
        """The layer's normalized configuration, one integer per entry of :data:`FIELDS`."""
        return self._row

    @property
    def type(self) -> str:
        return LAYER_TYPES[self._row[0]]

    @property
    def dtype(self) -> str:
        return DTYPES[self._row[FIELD_INDEX["dtype"]]]

    @property
    def kv_dtype(self) -> str | None:
        """The dtype of attention's K and V (default: :attr:`dtype`); None for the types without them."""
        if "kv_dtype" not in _TYPE_FIELDS[self._row[0]]:
            return None
        return DTYPES[self._row[FIELD_INDEX["kv_dtype"]]]

    @property
    def kernel(self) -> tuple[int, int]:
        return (self.kernel_h, self.kernel_w)

    @property
    def stride(self) -> tuple[int, int]:
        return (self.stride_h, self.stride_w)

    @property
    def padding(self) -> tuple[int, int]:
        return (self.padding_h, self.padding_w)

    @property
    def dilation(self) -> tuple[int, int]:
        return (self.dilation_h, self.dilation_w)

    @property
    def output_padding(self) -> tuple[int, int]:
        return (self.output_padding_h, self.output_padding_w)

    def config(self) -> dict[str, int | str]:
        """The fields this layer's type reads, by name (type, dtype and kv_dtype as names)."""
        used = _TYPE_FIELDS[self._row[0]]
        out: dict[str, int | str] = {"type": self.type}
        for name, value in zip(FIELDS[1:], self._row[1:], strict=True):
            if name in used:
                out[name] = DTYPES[value] if name in DTYPE_FIELDS else value
        return out

    def replace(self, **changes: Any) -> Layer:
        """A copy with some fields changed (validated). A field that defaults to another (attention's kv_heads
        and kv_dtype: heads and dtype) and equals it follows it when only that other changes: an fp32 attention
        made fp16 has fp16 K and V, one whose K and V were set apart keeps them."""
        config: dict[str, Any] = {k: v for k, v in self.config().items() if k != "type"}
        for follower, leader in _FOLLOWS.items():
            follows = follower in config and config[follower] == config.get(leader)
            if follows and leader in changes and follower not in changes:
                del config[follower]
        config.update(changes)
        name = config.pop("name", self.name)
        type_name = config.pop("type", self.type)
        if type_name != self.type:
            config = {k: v for k, v in config.items() if k in changes or k in ("batch", "dtype")}
        return Layer(type_name, name=name, **config)

    # -- shapes and costs ------------------------------------------------------------------------
    @property
    def info(self) -> tuple[int, ...]:
        """Output shape and counts, one integer per entry of :data:`INFO`."""
        if self._info is None:
            self._info = tuple(int(v) for v in _ev.info(np.array([self._row], dtype=np.int64))[0])
        return self._info

    @property
    def in_shape(self) -> tuple[int, ...]:
        """The (first) input's shape: ``(N, C, H, W)``; ``(N, F)`` for linear on vectors; ``(N, tokens, F)``
        for linear on tokens, layernorm and matmul; ``(N, tokens)`` (the indices) for embedding; the query
        ``(N, heads, tokens, head_dim)`` for attention."""
        return in_shape(self._row)

    @property
    def out_shape(self) -> tuple[int, ...]:
        """The output shape: ``(N, C, H, W)``, ``(N, F)`` for linear on vectors and flatten, ``(N, tokens, F)``
        for token outputs (linear on tokens, layernorm, matmul, embedding)."""
        c, h, w, rank = self.info[:4]
        if rank == 2:
            return (self.batch, c)
        return (self.batch, h, c) if rank == 3 else (self.batch, c, h, w)

    @property
    def out_channels(self) -> int:
        return self.info[0]

    @property
    def out_h(self) -> int:
        return self.info[1]

    @property
    def out_w(self) -> int:
        return self.info[2]

    @property
    def bytes_read(self) -> int:
        """Bytes of activations and weights read."""
        return self.bytes_input + self.bytes_weights

    @property
    def bytes_written(self) -> int:
        return self.bytes_output

    @property
    def bytes_moved(self) -> int:
        """NeuralPower's memory accessed: bytes read plus bytes written."""
        return self.bytes_read + self.bytes_written

    def features(self) -> dict[str, float]:
        """The model feature vector, by name (all of :data:`FEATURES`)."""
        values = _ev.features(np.array([self._row], dtype=np.int64), np.array([self.info], dtype=np.int64))[0]
        return dict(zip(FEATURES, (float(v) for v in values), strict=True))

    # -- value semantics -------------------------------------------------------------------------
    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Layer):
            return NotImplemented
        return self._row == other._row and self.name == other.name

    def __hash__(self) -> int:
        return hash((self._row, self.name))

    def __repr__(self) -> str:
        fields = ", ".join(f"{k}={v!r}" for k, v in self.config().items() if k != "type")
        name = f", name={self.name!r}" if self.name else ""
        return f"Layer({self.type!r}{name}, {fields})"


class Architecture:
    """An ordered list of layers with a name, one batch size and one dtype.

    Layers need not chain: each states its own input shape, so branching networks are plain lists.

    Parameters
    ----------
    name
        The architecture's name (the ``arch`` column of a layer table).
    layers
        Its layers, in execution order. Unnamed layers are named ``<type>_<index>``.
    meta
        Per-architecture values kept with it, such as ``error`` (top-1 error, used by EPR).
    layer_data
        Per-layer values kept with it (columns of a layer table that neuralpower does not interpret,
        such as a measured ``runtime_ms``): one list per column, one value per layer.
    """

    __slots__ = ("_info", "_rows", "layer_data", "layers", "meta", "name")

    def __init__(
        self,
        name: str,
        layers: Iterable[Layer],
        meta: Mapping[str, Any] | None = None,
        layer_data: Mapping[str, Sequence[Any]] | None = None,
    ) -> None:
        self.name = str(name)
        items = list(layers)
        if not items:
            raise InputError(f"architecture {self.name!r} has no layers")
        for i, layer in enumerate(items):
            if not layer.name:
                items[i] = Layer._trusted(layer.row, f"{layer.type}_{i}")
        first = items[0]
        for layer in items[1:]:
            if layer.batch != first.batch:
                raise InputError(
                    f"architecture {self.name!r}: layer {layer.name!r} has batch {layer.batch}, "
                    f"layer {first.name!r} has {first.batch}",
                    column="batch",
                )
            if layer.dtype != first.dtype:
                raise InputError(
                    f"architecture {self.name!r}: layer {layer.name!r} is {layer.dtype}, "
                    f"layer {first.name!r} is {first.dtype}",
                    column="dtype",
                )
        self.layers: tuple[Layer, ...] = tuple(items)
        self.meta: dict[str, Any] = dict(meta or {})
        self.layer_data: dict[str, list[Any]] = {k: list(v) for k, v in (layer_data or {}).items()}
        for k, v in self.layer_data.items():
            if len(v) != len(self.layers):
                raise ValueError(f"layer_data[{k!r}] has {len(v)} values for {len(self.layers)} layers")
        self._rows: npt.NDArray[np.int64] | None = None
        self._info: npt.NDArray[np.int64] | None = None

    @property
    def batch(self) -> int:
        return self.layers[0].batch

    @property
    def dtype(self) -> str:
        return self.layers[0].dtype

    def rows(self) -> npt.NDArray[np.int64]:
        """The layers' configurations as an ``(n_layers, len(FIELDS))`` int64 array (read-only)."""
        if self._rows is None:
            rows = np.array([layer.row for layer in self.layers], dtype=np.int64)
            rows.flags.writeable = False
            self._rows = rows
        return self._rows

    def info(self) -> npt.NDArray[np.int64]:
        """Output shapes and counts as an ``(n_layers, len(INFO))`` int64 array (read-only)."""
        if self._info is None:
            info = _ev.info(self.rows())
            info.flags.writeable = False
            self._info = info
        return self._info

    def features(self) -> npt.NDArray[np.float64]:
        """Model features as an ``(n_layers, len(FEATURES))`` float64 array."""
        return np.asarray(_ev.features(self.rows(), self.info()), dtype=np.float64)

    def totals(self) -> dict[str, int]:
        """Network totals: layers, params, macs, flops, bytes read, written and moved. ``params`` includes the
        ``params_outside_layers`` of :attr:`meta` (parameters used as operands that no layer holds, such as
        ViT's position embedding)."""
        return network_totals(self.info(), outside_params(self.meta))

    def with_batch(self, batch: int) -> Architecture:
        """The same architecture at another batch size (without ``layer_data``, which was for the old one)."""
        return Architecture(self.name, (layer.replace(batch=batch) for layer in self.layers), self.meta)

    def with_dtype(self, dtype: str) -> Architecture:
        """The same architecture in another dtype (fp32, fp16, bf16, fp8), without ``layer_data`` (attention's
        kv_dtype follows where it was the dtype, see :meth:`Layer.replace`)."""
        return Architecture(self.name, (layer.replace(dtype=dtype) for layer in self.layers), self.meta)

    def __len__(self) -> int:
        return len(self.layers)

    def __iter__(self) -> Iterator[Layer]:
        return iter(self.layers)

    @overload
    def __getitem__(self, index: int) -> Layer: ...
    @overload
    def __getitem__(self, index: slice) -> tuple[Layer, ...]: ...
    def __getitem__(self, index: int | slice) -> Layer | tuple[Layer, ...]:
        return self.layers[index]

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Architecture):
            return NotImplemented
        return (
            self.name == other.name
            and self.layers == other.layers
            and self.meta == other.meta
            and self.layer_data == other.layer_data
        )

    def __hash__(self) -> int:
        return hash((self.name, self.layers))

    def __repr__(self) -> str:
        return f"Architecture({self.name!r}, {len(self.layers)} layers, batch={self.batch}, dtype={self.dtype!r})"
