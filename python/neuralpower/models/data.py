"""Measurement tables: a layer table plus measured ``runtime_ms`` and ``power_w`` per row.

Either target may be empty on a row (power is measured on fewer configurations than runtime). Context
columns (``gpu``, ``executor``, driver and library versions, ...) are kept as they are.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import pyarrow as pa

from .. import _evaluator as _ev
from ..errors import InputError
from ..layers import DTYPES, FEATURES, FIELD_INDEX, LAYER_TYPES
from ..table import LayerTable, read_layer_table

__all__ = ["TARGETS", "Measurements", "read_measurements"]

TARGETS = ("runtime_ms", "power_w")
CONTEXT_COLUMNS = ("gpu", "executor")


@dataclass
class Measurements:
    """Validated measurements of one or more tables, concatenated.

    Attributes
    ----------
    rows
        ``(n, len(FIELDS))`` layer rows.
    features
        ``(n, len(FEATURES))`` model features, from the compiled core.
    targets
        ``runtime_ms`` and ``power_w`` as float64 arrays, NaN where not measured.
    context
        Distinct values of each context column (``gpu``, ``executor``, ``dtype``).
    sources
        The tables read and their row counts.
    noisy
        Rows the microbenchmark suite flagged ``noisy`` (timed loops that disagreed): a configuration's noisy
        trials count only where all its trials are noisy.
    """

    rows: npt.NDArray[np.int64]
    features: npt.NDArray[np.float64]
    targets: dict[str, npt.NDArray[np.float64]]
    context: dict[str, list[str]]
    sources: list[tuple[str, int]]
    noisy: npt.NDArray[np.bool_]

    def __len__(self) -> int:
        return int(self.rows.shape[0])

    @property
    def types(self) -> npt.NDArray[np.int64]:
        return self.rows[:, 0]

    def layer_types(self) -> list[str]:
        """Layer types present, in the core's order."""
        return [LAYER_TYPES[int(c)] for c in np.unique(self.types)]

    @classmethod
    def from_rows(cls, rows: npt.NDArray[np.int64], runtime_ms: npt.NDArray[np.float64],
                  power_w: npt.NDArray[np.float64], *, gpu: str, executor: str, source: str,
                  dtype: str | None = None, noisy: npt.NDArray[np.bool_] | None = None) -> Measurements:
        """Measurements of layer rows read elsewhere (an importer's table): their features from the core, the
        targets (NaN where not measured) and the context to record. ``dtype`` None: the rows' dtypes."""
        rows = np.ascontiguousarray(rows, dtype=np.int64)
        dtypes = [dtype] if dtype else [DTYPES[int(c)] for c in np.unique(rows[:, FIELD_INDEX["dtype"]])]
        return cls(rows=rows, features=np.asarray(_ev.features(rows, _ev.info(rows)), dtype=np.float64),
                   targets={"runtime_ms": runtime_ms, "power_w": power_w},
                   context={"gpu": [gpu], "executor": [executor], "dtype": dtypes}, sources=[(source, len(rows))],
                   noisy=np.zeros(len(rows), dtype=bool) if noisy is None else noisy)


def _target(table: LayerTable, name: str) -> npt.NDArray[np.float64]:
    """A target column as float64, NaN for empty cells; anything but a positive finite number is an error."""
    if name not in table.extra.column_names:
        return np.full(len(table), np.nan)
    column = table.extra.column(name)
    if pa.types.is_floating(column.type) or pa.types.is_integer(column.type) or pa.types.is_null(column.type):
        out = np.array(column.cast(pa.float64(), safe=False).fill_null(np.nan).to_numpy(), dtype=np.float64)
        given = np.asarray(column.is_valid().to_numpy(zero_copy_only=False), dtype=bool)
    else:
        texts = ["" if v is None else str(v).strip() for v in column.to_pylist()]
        given = np.array([t != "" for t in texts], dtype=bool)
        out = np.full(len(texts), np.nan)
        for i, text in enumerate(texts):
            if text:
                try:
                    out[i] = float(text)
                except ValueError:
                    raise table.error(i, name, f"{text!r} is not a number") from None
    bad = given & (~np.isfinite(out) | (out <= 0))
    if bad.any():
        i = int(np.argmax(bad))
        raise table.error(
            i, name, f"{float(out[i])!r} is not a measurement: give a positive finite number or leave the cell empty"
        )
    low, high = TARGET_RANGE[name]
    far = given & ((out < low) | (out > high))
    if far.any():
        i = int(np.argmax(far))
        raise table.error(
            i, name, f"{float(out[i])!r} is outside the range a measurement can have ({low:g} to {high:g} {name[-2:]})"
        )
    return out


#: What a measured layer can cost: a femtosecond to eleven days, a microwatt to a megawatt. Values outside are a
#: unit mistake or garbage, and their squares (the relative fit weights by 1/y**2) overflow a fit.
TARGET_RANGE = {"runtime_ms": (1e-9, 1e9), "power_w": (1e-6, 1e6)}


# Rows the microbenchmark suite flagged (see neuralpower.bench.power and .interference): a throttled GPU ran
# slow, and other work on the machine slowed every attempt of a measurement, so neither target is kept; a
# power window whose counter did not move or disagreed with the instant samples keeps
# its runtime only.
_DROP_BOTH = ("throttled", "interference")
_DROP_POWER = ("zero_delta", "disagree", "no_counter", "nvml_error")


def flag_names(cell: object) -> set[str]:
    """The flags of a ``flags`` cell (``noisy;interference``; commas and spaces separate too)."""
    return set(str(cell or "").replace(";", " ").replace(",", " ").split())


def unusable(flags: set[str]) -> bool:
    """Whether a row with these flags gives no measurement at all (throttled, interference)."""
    return bool(flags & set(_DROP_BOTH))


def _drop_flagged(table: LayerTable, values: dict[str, npt.NDArray[np.float64]]) -> npt.NDArray[np.bool_]:
    """Blank the targets flagged rows may not give; returns which rows are flagged noisy."""
    noisy = np.zeros(len(table), dtype=bool)
    if "flags" not in table.extra.column_names:
        return noisy
    flags = table.extra.column("flags").cast(pa.string()).to_pylist()
    for i, f in enumerate(flags):
        if not f:
            continue
        names = flag_names(f)
        noisy[i] = "noisy" in names
        if unusable(names):
            values["runtime_ms"][i] = np.nan
            values["power_w"][i] = np.nan
        elif names & set(_DROP_POWER):
            values["power_w"][i] = np.nan
    return noisy


def read_measurements(paths: Sequence[str | os.PathLike[str]]) -> Measurements:
    """Read and validate measurement tables.

    Raises
    ------
    InputError
        A table that does not load (see :func:`~neuralpower.read_layer_table`), that has neither a
        ``runtime_ms`` nor a ``power_w`` column, or a target cell that is not a positive number.
    """
    if not paths:
        raise InputError("no measurement tables given")
    rows, targets, sources, noisy = [], {t: [] for t in TARGETS}, [], []  # type: ignore[var-annotated]
    context: dict[str, list[str]] = {c: [] for c in (*CONTEXT_COLUMNS, "dtype")}
    for path in paths:
        table = read_layer_table(path)
        if not any(t in table.extra.column_names for t in TARGETS):
            raise InputError(
                f"not a measurement table: it has neither a {TARGETS[0]!r} nor a {TARGETS[1]!r} column",
                path=str(path),
            )
        rows.append(table.rows)
        values = {t: _target(table, t) for t in TARGETS}
        noisy.append(_drop_flagged(table, values))
        for t in TARGETS:
            targets[t].append(values[t])
        for c in CONTEXT_COLUMNS:
            if c in table.extra.column_names:
                for v in table.extra.column(c).unique().to_pylist():
                    if v is not None and str(v) not in context[c]:
                        context[c].append(str(v))
        for code in np.unique(table.rows[:, FIELD_INDEX["dtype"]]):
            if DTYPES[int(code)] not in context["dtype"]:
                context["dtype"].append(DTYPES[int(code)])
        sources.append((str(path), len(table)))
    all_rows = np.ascontiguousarray(np.concatenate(rows))
    info = _ev.info(all_rows)
    features = np.asarray(_ev.features(all_rows, info), dtype=np.float64)
    assert features.shape[1] == len(FEATURES)
    return Measurements(
        rows=all_rows,
        features=features,
        targets={t: np.concatenate(v) for t, v in targets.items()},
        context=context,
        sources=sources,
        noisy=np.concatenate(noisy),
    )
