"""Resumable measurement datasets: CSV files in a directory, appended one row at a time.

A directory written by ``neuralpower bench`` holds:

``layers.csv``
    One row per measured configuration and trial: a layer table (``arch``, ``layer``, ``type``,
    ``batch``, ``dtype`` and every configuration field, per-axis fields as ``kernel_h``/``kernel_w``
    columns, empty where the type does not use them) plus the measurement and context columns listed in
    :data:`RUNTIME_COLUMNS`, :data:`POWER_COLUMNS` and :data:`CONTEXT_COLUMNS`, then the executor's own
    context columns. Only successful measurements are here, so ``neuralpower fit DIR/layers.csv`` and
    :func:`~neuralpower.read_layer_table` read it as it is; ``power_w`` and ``energy_mj`` are empty on
    rows without a power window. ``arch`` is the configuration's ``config_id`` and ``layer`` is
    ``trial<N>``.
``failures.csv``
    Configurations that ran out of memory or failed (also a layer table): the same layer columns,
    ``config_id``, ``trial``, ``origin``, ``status`` (``oom`` or ``failed``), ``message`` (one line) and
    the context columns. A configuration found here is not tried again on resumption (delete the file to
    retry them).
``networks.csv``, ``network_failures.csv``
    The same for ``neuralpower bench-network`` (one row per network, batch size, variant and trial).
``run.json``
    What each run (and resumption) was: command options, executor context, idle power, summary.

Every row is written with one ``write`` and then flushed and fsynced, so a run killed at any moment
loses at most the row in flight. On opening, a torn last line (a row without its newline) is cut off
and the rows already there are read; :meth:`CsvLog.__contains__` tells which ``(config_id, trial)``
pairs are done, so a resumed run never measures a row twice.
"""

from __future__ import annotations

import csv
import datetime as _dt
import io
import json
import math
import os
import secrets
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from ..errors import NeuralPowerError
from ..layers import DTYPE_FIELDS, DTYPES, FIELDS, Layer, type_fields

__all__ = [
    "CONTEXT_COLUMNS",
    "FAILURE_COLUMNS",
    "ID_COLUMNS",
    "LAYER_COLUMNS",
    "NETWORK_COLUMNS",
    "POWER_COLUMNS",
    "RUNTIME_COLUMNS",
    "CsvLog",
    "DatasetError",
    "RunDirectory",
    "format_cell",
    "layer_cells",
]

LAYER_COLUMNS: tuple[str, ...] = (
    "arch",
    "layer",
    "type",
    "batch",
    "dtype",
    *(f for f in FIELDS if f not in ("type", "batch", "dtype")),
)
ID_COLUMNS: tuple[str, ...] = ("config_id", "trial", "origin")
RUNTIME_COLUMNS: tuple[str, ...] = (
    "runtime_ms", "runtime_ms_min", "runtime_ms_max", "runtime_cv", "calls", "loops", "attempts", "others_busy_cores",
)
POWER_COLUMNS: tuple[str, ...] = (
    "power_w",
    "energy_mj",
    "power_source",
    "sample_power_w",
    "power_samples",
    "window_s",
    "window_calls",
    "temperature_c_before",
    "temperature_c_after",
    "sm_clock_mhz_before",
    "sm_clock_mhz_after",
    "mem_clock_mhz_before",
    "mem_clock_mhz_after",
    "power_limit_w",
    "clocks_event_reasons",
    "counter_period_ms",
    "flags",
)
CONTEXT_COLUMNS: tuple[str, ...] = (
    "executor",
    "device",
    "gpu",
    "gpu_uuid",
    "driver",
    "cuda",
    "cuda_driver",
    "mode",
    "memory_format",
    "impl",
    "cache",
    "idle_power_w",
    "neuralpower",
    "timestamp",
)
FAILURE_COLUMNS: tuple[str, ...] = ("status", "message")
NETWORK_COLUMNS: tuple[str, ...] = (
    "arch",
    "batch",
    "dtype",
    "layers",
    "params",
    "macs",
    "flops",
    "bytes",
    "config_id",
    "trial",
)


class DatasetError(NeuralPowerError):
    """A dataset file that cannot be resumed (damaged, or written by another executor or device)."""


def layer_cells(layer: Layer) -> dict[str, Any]:
    """The layer-table part of a row: type, batch, dtype and the fields the type uses (others empty)."""
    used = type_fields(layer.type)
    cells: dict[str, Any] = {"type": layer.type, "batch": layer.batch, "dtype": layer.dtype}
    for name, value in zip(FIELDS, layer.row, strict=True):
        if name in ("type", "batch", "dtype"):
            continue
        cells[name] = (DTYPES[value] if name in DTYPE_FIELDS else value) if name in used else None
    return cells


def format_cell(value: Any) -> str:
    """One CSV cell: empty for ``None`` and NaN, floats with 6 significant digits (always with a point or
    exponent, so a column's type never changes from int to float part-way), text on one line."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return ""
        text = f"{value:.6g}"
        if not any(ch in text for ch in ".eEn"):
            text += ".0"
        return text
    if isinstance(value, list | tuple):
        return ";".join(format_cell(v) for v in value)
    return " ".join(str(value).split())


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


class CsvLog:
    """An append-only CSV file keyed by ``(config_id, trial)``.

    On opening an existing file, a torn last line is cut off and the rows are read (:attr:`rows`); a new
    file gets ``columns`` as its header. An existing file keeps its own header: rows appended later fill
    the columns it has (keys it lacks are dropped, columns a row lacks are empty), so a resumed run that
    reports one more context value still appends cleanly.

    Raises
    ------
    DatasetError
        A file that is not such a CSV file (no ``config_id``/``trial`` column, a damaged row before the
        last).
    """

    def __init__(self, path: str | os.PathLike[str], columns: Sequence[str]) -> None:
        self.path = Path(path)
        self.rows: list[dict[str, str]] = []
        self._keys: set[tuple[str, int]] = set()
        self._ids: set[str] = set()
        existing, torn = self._complete_lines()
        # Only a line without its newline: our own header cut short by a crash, or someone else's file.
        if not existing and torn and not self._join([format_cell(c) for c in columns]).encode().startswith(torn):
            raise DatasetError(f"{self.path}: not a neuralpower dataset (no header row)")
        if existing:
            self.columns = self._read(existing, torn)
        else:
            self.columns = list(columns)
            with open(self.path, "w", encoding="utf-8", newline="") as f:
                f.write(self._line(dict(zip(self.columns, self.columns, strict=True))))
                f.flush()
                os.fsync(f.fileno())
            _fsync_dir(self.path.parent)
        self._file = open(self.path, "a", encoding="utf-8", newline="")  # noqa: SIM115 - closed in close()

    def _complete_lines(self) -> tuple[bytes, bytes]:
        """The file's bytes up to its last complete line, and the torn tail after it (a row without its
        newline). Nothing is cut off the file here: only once the header says the file is a dataset."""
        if not self.path.exists():
            return b"", b""
        data = self.path.read_bytes()
        end = data.rfind(b"\n") + 1
        return data[:end], data[end:]

    def _read(self, data: bytes, torn: bytes = b"") -> list[str]:
        """The rows of a dataset's complete lines; a torn tail is cut off the file once the header says it is
        a dataset (never off someone else's file)."""
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            raise DatasetError(f"{self.path}: not a UTF-8 CSV file") from None
        try:
            records = list(csv.reader(io.StringIO(text, newline="")))
        except csv.Error as e:
            raise DatasetError(f"{self.path}: not a valid CSV file ({e})") from None
        if not records:
            raise DatasetError(f"{self.path}: no header row")
        header = records[0]
        for needed in ("config_id", "trial"):
            if needed not in header:
                raise DatasetError(f"{self.path}: not a neuralpower dataset (no {needed!r} column)")
        if torn:
            self._truncate(len(data))
        body = records[1:]
        for number, record in enumerate(body, start=2):
            if not record:
                continue
            if len(record) != len(header):
                if number == len(body) + 1:
                    # A complete line cut short (a crash between write and the page cache): drop it.
                    self._drop_last_line(data)
                    break
                raise DatasetError(f"{self.path}, row {number}: has {len(record)} fields, the header has {len(header)}")
            row = dict(zip(header, record, strict=True))
            self.rows.append(row)
            self._remember(row)
        return header

    def _drop_last_line(self, data: bytes) -> None:
        self._truncate(data.rstrip(b"\n").rfind(b"\n") + 1)

    def _truncate(self, end: int) -> None:
        with open(self.path, "r+b") as f:
            f.truncate(end)
            f.flush()
            os.fsync(f.fileno())

    def _remember(self, row: Mapping[str, str]) -> None:
        cid = row.get("config_id", "")
        self._ids.add(cid)
        try:
            self._keys.add((cid, int(row.get("trial") or 0)))
        except ValueError:
            raise DatasetError(f"{self.path}: trial {row.get('trial')!r} is not an integer") from None

    def _cells(self, row: Mapping[str, Any]) -> list[str]:
        return [format_cell(row.get(c)) for c in self.columns]

    @staticmethod
    def _join(cells: Sequence[str]) -> str:
        buf = io.StringIO()
        csv.writer(buf, lineterminator="\n").writerow(cells)
        return buf.getvalue()

    def _line(self, row: Mapping[str, Any]) -> str:
        return self._join(self._cells(row))

    def __contains__(self, key: object) -> bool:
        """``(config_id, trial)`` in the file; a bare ``config_id``: any trial of it."""
        if isinstance(key, str):
            return key in self._ids
        return key in self._keys

    def __len__(self) -> int:
        return len(self.rows)

    def append(self, row: Mapping[str, Any]) -> None:
        """Write one row (one ``write``), flush it and fsync it before returning."""
        cells = self._cells(row)
        self._file.write(self._join(cells))
        self._file.flush()
        os.fsync(self._file.fileno())
        # what a reader gets back from the line: the cells themselves (format_cell writes no line break)
        stored = dict(zip(self.columns, cells, strict=True))
        self.rows.append(stored)
        self._remember(stored)

    def close(self) -> None:
        if not self._file.closed:
            self._file.close()

    def __enter__(self) -> CsvLog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _now() -> str:
    return _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")


class RunDirectory:
    """The directory of a measurement run: its measurement and failure logs and ``run.json``.

    Parameters
    ----------
    directory
        Created if missing.
    kind
        ``layers`` (``layers.csv`` and ``failures.csv``) or ``networks`` (``networks.csv`` and
        ``network_failures.csv``).
    extra_context
        The executor's own context columns, appended after :data:`CONTEXT_COLUMNS` in a new file.
    identity
        Context values that must match the rows already in the directory (for example ``executor``,
        ``dtype``, ``gpu_uuid``): measurements of another executor or device are not mixed into one
        dataset.

    Raises
    ------
    DatasetError
        The directory holds measurements of another identity, or a damaged file.
    """

    def __init__(
        self,
        directory: str | os.PathLike[str],
        kind: str = "layers",
        extra_context: Iterable[str] = (),
        identity: Mapping[str, Any] | None = None,
    ) -> None:
        self.directory = Path(directory)
        if self.directory.exists() and not self.directory.is_dir():
            raise DatasetError(f"{self.directory} is not a directory")
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise DatasetError(f"cannot create {self.directory}: {e.strerror or e}") from None
        extra = [c for c in dict.fromkeys(extra_context) if c not in CONTEXT_COLUMNS]
        if kind == "layers":
            names = ("layers.csv", "failures.csv")
            measured = [*LAYER_COLUMNS, *ID_COLUMNS, *RUNTIME_COLUMNS, *POWER_COLUMNS, *CONTEXT_COLUMNS, *extra]
            failed = [*LAYER_COLUMNS, *ID_COLUMNS, *FAILURE_COLUMNS, *CONTEXT_COLUMNS, *extra]
        elif kind == "networks":
            names = ("networks.csv", "network_failures.csv")
            measured = [*NETWORK_COLUMNS, *RUNTIME_COLUMNS, *POWER_COLUMNS, *CONTEXT_COLUMNS, *extra]
            failed = [*NETWORK_COLUMNS, *FAILURE_COLUMNS, *CONTEXT_COLUMNS, *extra]
        else:
            raise ValueError(f"unknown dataset kind {kind!r}")
        self.kind = kind
        try:
            self.measurements = CsvLog(self.directory / names[0], measured)
        except OSError as e:
            raise DatasetError(f"cannot write {self.directory / names[0]}: {e.strerror or e}") from None
        try:
            self.failures = CsvLog(self.directory / names[1], failed)
        except OSError as e:
            self.measurements.close()
            raise DatasetError(f"cannot write {self.directory / names[1]}: {e.strerror or e}") from None
        except BaseException:
            self.measurements.close()
            raise
        try:
            if identity:
                self._check_identity(identity)
        except BaseException:
            self.close()
            raise

    def _check_identity(self, identity: Mapping[str, Any]) -> None:
        for log in (self.measurements, self.failures):
            for row in log.rows[:1]:
                for key, value in identity.items():
                    have, want = row.get(key, ""), format_cell(value)
                    if key in log.columns and have and want and have != want:
                        raise DatasetError(
                            f"{log.path} holds measurements with {key} {have!r}, this run has {want!r}: "
                            "use another --out directory"
                        )

    def done(self, config_id: str, trial: int) -> bool:
        """Whether a trial of a configuration is measured, or the configuration failed before."""
        return (config_id, trial) in self.measurements or config_id in self.failures

    def record(self, row: Mapping[str, Any]) -> None:
        self.measurements.append(row)

    def record_failure(self, row: Mapping[str, Any]) -> None:
        self.failures.append(row)

    def write_run_info(self, info: Mapping[str, Any]) -> None:
        """Add (or, with the same ``run_id``, update) this run's entry in ``run.json``, atomically."""
        path = self.directory / "run.json"
        runs: list[dict[str, Any]] = []
        if path.exists():
            try:
                loaded = json.loads(path.read_text(encoding="utf-8"))
                runs = list(loaded.get("runs", [])) if isinstance(loaded, dict) else []
            except (OSError, ValueError):
                runs = []  # a damaged run.json only loses the history of earlier runs
        entry = dict(info)
        entry.setdefault("started", _now())
        entry.setdefault("run_id", secrets.token_hex(6))
        runs = [r for r in runs if not (isinstance(r, dict) and r.get("run_id") == entry["run_id"])]
        runs.append(entry)
        tmp = path.with_suffix(".json.tmp")
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump({"runs": runs}, f, indent=1, default=str)
            f.write("\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)

    def close(self) -> None:
        self.measurements.close()
        self.failures.close()

    def __enter__(self) -> RunDirectory:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
