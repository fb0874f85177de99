"""Typed stub of neuralpower's compiled core (private: use the neuralpower package)."""

from typing import Any

import numpy as np
import numpy.typing as npt

FIELD_NAMES: list[str]
TYPE_NAMES: list[str]
DTYPE_NAMES: list[str]
INFO_NAMES: list[str]
FEATURE_NAMES: list[str]
MISSING: int

def type_fields(t: int) -> list[int]: ...
def type_required_fields(t: int) -> list[int]: ...
def type_features(t: int) -> list[int]: ...
def dtype_bytes(d: int) -> int: ...
def prepare(rows: npt.NDArray[np.int64]) -> tuple[int, int, str]: ...
def distinct(rows: npt.ArrayLike, columns: list[int]) -> tuple[npt.NDArray[np.int32], npt.NDArray[np.int64]]: ...
def parse_csv_block(
    text: bytes | bytearray,
    ranges: list[tuple[int, int]],
    roles: list[tuple[Any, ...]],
    n_extras: int,
    types: list[str],
    dtypes: list[str],
) -> dict[str, Any] | None: ...
def join_lines(
    columns: list[Any], n: int, end: str = "\n", last_end: str = "\n", rstrip: bool = False
) -> bytes: ...
def prepare_columns(
    columns: list[Any], n: int, threads: int = 1
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64], int, int, str]: ...
def info(rows: npt.ArrayLike) -> npt.NDArray[np.int64]: ...
def features(rows: npt.ArrayLike, info: npt.ArrayLike) -> npt.NDArray[np.float64]: ...

class ResultCache:
    """Results of rows evaluated before, kept across calls of evaluate_archs (of one model at a time)."""

    def __init__(self) -> None: ...

class Model:
    """A compiled runtime and power model (built by neuralpower.evaluator)."""

    def __init__(self) -> None: ...
    def set_poly(
        self,
        type: int,
        target: int,
        mode: int,
        input_feature: list[int],
        input_transform: list[int],
        intercept: float,
        term_start: list[int],
        term_input: list[int],
        term_exp: list[int],
        coef: list[float],
    ) -> None: ...
    def set_tree(
        self,
        type: int,
        target: int,
        leaf_features: list[int],
        node_feature: list[int],
        node_test: list[int],
        node_value: list[float],
        node_yes: list[int],
        node_no: list[int],
        node_intercept: list[float],
        node_weights: list[float],
    ) -> None: ...
    def set_boosted(
        self,
        type: int,
        target: int,
        log_target: bool,
        base: float,
        tree_start: list[int] | npt.NDArray[np.int32],
        node_feature: list[int] | npt.NDArray[np.int32],
        node_value: list[float] | npt.NDArray[np.float64],
        node_yes: list[int] | npt.NDArray[np.int32],
        node_no: list[int] | npt.NDArray[np.int32],
    ) -> None: ...
    def set_linear(self, type: int, target: int, kind: int, a: float, b: float, c: float) -> None: ...
    def set_ranges(self, type: int, feature: list[int], lo: list[float], hi: list[float]) -> None: ...
    def set_interval(self, type: int, target: int, lo: float, hi: float) -> None: ...
    def set_interval_groups(self, type: int, target: int, feature: list[int], value: list[float], yes: list[int],
                            no: list[int], lo: list[float], hi: list[float]) -> None: ...
    def set_adjust(self, type: int, target: int, scale: float, min: float, max: float,
                   scale_from: float = 0.0) -> None: ...
    def set_floor(self, type: int, ms: float, power_w: float) -> None: ...
    def set_rows_layout(self, type: int, rows: bool) -> None: ...
    def set_stream(self, type: int, rows_hi: float, channels_hi: float) -> None: ...
    def set_blend(self, members: list[Model], weights: list[float]) -> None: ...
    @property
    def has_intervals(self) -> bool: ...
    def finish(self) -> None: ...
    def covers(self, type: int) -> bool: ...
    def evaluate(self, rows: npt.ArrayLike, validate: bool = True) -> dict[str, Any]: ...
    def evaluate_archs(
        self, rows: npt.ArrayLike, offsets: npt.ArrayLike, per_layer: bool = False, threads: int = 1,
        validate: bool = True, index: npt.ArrayLike | None = None, cache: ResultCache | None = None,
    ) -> dict[str, Any]: ...
