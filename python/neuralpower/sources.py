"""Where an architecture can come from: a zoo name, a layer table file or an ONNX file."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import TYPE_CHECKING

from . import zoo
from .errors import InputError
from .layers import Architecture

if TYPE_CHECKING:
    from .table import LayerTable

__all__ = [
    "is_table_file",
    "is_zoo_name",
    "load_architectures",
    "pick_architecture",
    "read_table_source",
    "select_architecture",
]

_TABLE_SUFFIXES = (".csv", ".parquet", ".pq", ".txt", ".gz", ".bz2", ".zst", ".lz4")


def load_architectures(
    spec: str,
    *,
    batch: int | None = None,
    image_size: int | None = None,
    dtype: str | None = None,
    allow_unknown: bool = False,
    seq_len: int | None = None,
) -> list[Architecture]:
    """The architectures that ``spec`` names: a zoo network, every architecture of a layer table, or an
    ONNX model (``.onnx``).

    ``batch`` and ``dtype`` override what the source says; ``image_size`` and ``seq_len`` apply to zoo networks
    only (a layer table or an ONNX file states every layer's input size); ``allow_unknown`` skips ONNX
    operators neuralpower has no layer type for (listed in the architecture's ``meta["skipped"]``).
    """
    if spec.lower().endswith(".onnx"):
        _zoo_only(spec, "an ONNX file", image_size, seq_len)
        from .importers import from_onnx

        arch = from_onnx(spec, batch=batch, allow_unknown=allow_unknown)
        return [arch.with_dtype(dtype) if dtype is not None and dtype != arch.dtype else arch]
    if _is_file(spec):
        _zoo_only(spec, "a layer table", image_size, seq_len)
        archs = read_table_source(spec).architectures()
        if dtype is not None:
            archs = [a.with_dtype(dtype) for a in archs]
        if batch is not None:
            archs = [a.with_batch(batch) for a in archs]
        return archs
    if spec.strip().lower() not in zoo.names():
        raise InputError(f"{spec!r} is neither a layer table file nor a zoo network (zoo: {', '.join(zoo.names())})")
    return [zoo.build(spec, batch=batch or 1, image_size=image_size, dtype=dtype or "fp32", seq_len=seq_len)]


def _zoo_only(spec: str, what: str, image_size: int | None, seq_len: int | None) -> None:
    """Refuse a zoo network's size options for a file, which states every layer's size."""
    for option, value in (("--image-size", image_size), ("--seq-len", seq_len)):
        if value is not None:
            raise InputError(f"{option} applies to zoo networks, not to {what} ({spec})")


def is_zoo_name(spec: str) -> bool:
    """Whether ``spec`` names a zoo network (not a file)."""
    return not spec.lower().endswith(".onnx") and not _is_file(spec) and spec.strip().lower() in zoo.names()


def is_table_file(spec: str) -> bool:
    """Whether ``spec`` names a layer table file (not a zoo network, not an ONNX file)."""
    return not spec.lower().endswith(".onnx") and _is_file(spec)


def _is_file(spec: str) -> bool:
    return os.path.exists(spec) or spec.lower().endswith(_TABLE_SUFFIXES) or os.sep in spec


def read_table_source(spec: str, image_size: int | None = None) -> LayerTable:
    """The layer table file ``spec`` names (``--image-size`` applies to zoo networks only)."""
    if image_size is not None:
        raise InputError(f"--image-size applies to zoo networks, not to a layer table ({spec})")
    from .table import read_layer_table  # (pyarrow, imported where a table is read: a zoo name needs none)

    return read_layer_table(spec)


def pick_architecture(names: Sequence[str], spec: str, arch_id: str | None) -> int:
    """The index of the architecture named ``arch_id`` among a source's, or of its only one."""
    if arch_id is not None:
        if arch_id in names:
            return list(names).index(arch_id)
        shown = ", ".join(names[:10]) + (", ..." if len(names) > 10 else "")
        raise InputError(f"{spec}: no architecture named {arch_id!r} (it holds {shown})")
    if len(names) > 1:
        shown = ", ".join(names[:5]) + (", ..." if len(names) > 5 else "")
        raise InputError(f"{spec} holds {len(names)} architectures ({shown}): pick one with --arch")
    return 0


def select_architecture(archs: list[Architecture], spec: str, arch_id: str | None) -> Architecture:
    """One architecture of a source: the one named ``arch_id``, or the only one."""
    return archs[pick_architecture([a.name for a in archs], spec, arch_id)]
