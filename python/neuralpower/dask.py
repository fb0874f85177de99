"""Scoring a Dask DataFrame of layers, partition by partition, for tables that outgrow one machine.

Each partition is validated and scored where it lies (a worker gets the model pickled as its JSON document
and compiles it again); only per-architecture partial totals travel back, and they are merged in partition
order, so that the result is what ``neuralpower score`` writes for the same rows: an architecture whose rows
span partitions is one architecture, in order of first appearance.

    import dask.dataframe as dd
    from neuralpower.dask import score_dataframe

    frame = dd.read_parquet("layers/")          # or dd.read_csv(...), any partitioning
    scores = score_dataframe(model, frame)      # a pandas DataFrame, one row per architecture

Needs the ``dask`` extra (``pip install neuralpower[dask]``).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa

from .errors import InputError
from .evaluator import BOUND_SUMS, Model
from .stream import Totals, result_table, score_blocks
from .table import _parse

__all__ = ["partition_totals", "score_dataframe"]

_PARTIAL = {
    "arch": "string",
    "layers": "int64",
    "runtime_ms": "float64",
    "energy_mj": "float64",
    "bottleneck": "string",
    "bottleneck_energy_mj": "float64",
    "bottleneck_runtime_ms": "float64",
    "extrapolated_layers": "int64",
    **{f"bound_{k}": "float64" for k in range(len(BOUND_SUMS))},
    "error": "float64",
    "has_error": "bool",
    "partition": "int64",
}


def partition_totals(frame: Any, model: Model, partition_info: dict[str, Any] | None = None) -> Any:
    """The per-architecture partial totals of one partition (a pandas DataFrame of layer rows), as a pandas
    DataFrame; errors name the partition and the row in it."""
    import pandas as pd

    number = 0 if partition_info is None else int(partition_info["number"])
    if len(frame) == 0:
        return pd.DataFrame({k: pd.Series(dtype=v) for k, v in _PARTIAL.items()})
    table = pa.Table.from_pandas(frame, preserve_index=False)
    keep = [c for c in table.column_names if not c.startswith("__")]
    block = _parse(f"partition {number}", "parquet", table.select(keep))
    totals = score_blocks(model, [block])
    out = pd.DataFrame(
        {
            "arch": pd.array(totals.names, dtype="string"),
            "layers": totals.layers,
            "runtime_ms": totals.runtime_ms,
            "energy_mj": totals.energy_mj,
            "bottleneck": pd.array(totals.bottleneck, dtype="string"),
            "bottleneck_energy_mj": totals.bottleneck_energy_mj,
            "bottleneck_runtime_ms": totals.bottleneck_runtime_ms,
            "extrapolated_layers": totals.extrapolated_layers,
            **{f"bound_{k}": totals.bounds[:, k] for k in range(len(BOUND_SUMS))},
            "error": totals.error,
            "has_error": totals.has_error,
            "partition": number,
        }
    )
    return out.astype(_PARTIAL)


def score_dataframe(model: Model, frame: Any, *, alpha: float = 1.0, pareto: bool = False) -> Any:
    """Score every architecture of a Dask DataFrame of layer rows (the layer-table columns, and optionally
    ``error``): a pandas DataFrame with the columns and order ``neuralpower score`` writes.

    Raises
    ------
    InputError
        A row is invalid (named by partition and row), or a layer type has no model.
    """
    import pandas as pd

    meta = pd.DataFrame({k: pd.Series(dtype=v) for k, v in _PARTIAL.items()})
    partials = frame.map_partitions(partition_totals, model, meta=meta).compute()
    if len(partials) == 0:
        raise InputError("the DataFrame has no rows")
    totals = Totals()
    numbers = partials["partition"].to_numpy()
    starts = np.flatnonzero(np.r_[True, numbers[1:] != numbers[:-1]])
    ends = np.r_[starts[1:], len(numbers)]
    for a, b in zip(starts, ends, strict=True):
        part = partials.iloc[a:b]
        has_error = bool(part["has_error"].iloc[0])
        totals.add(
            part["arch"].astype(str).tolist(),
            part["layers"].to_numpy(np.int64),
            part["runtime_ms"].to_numpy(np.float64),
            part["energy_mj"].to_numpy(np.float64),
            part["bottleneck"].astype(str).tolist(),
            part["bottleneck_energy_mj"].to_numpy(np.float64),
            part["bottleneck_runtime_ms"].to_numpy(np.float64),
            part["extrapolated_layers"].to_numpy(np.int64),
            part["error"].to_numpy(np.float64) if has_error else None,
            0,
            part[[f"bound_{k}" for k in range(len(BOUND_SUMS))]].to_numpy(np.float64),
        )
    result, _ = result_table(totals, model, alpha, pareto)
    return result.drop_columns(["_part"]).to_pandas()
