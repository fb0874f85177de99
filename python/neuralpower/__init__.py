"""neuralpower: predict a neural network's GPU inference runtime, power and energy from its architecture.

Importing this package never imports CuPy, PyTorch or ONNX.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from .errors import InputError, NeuralPowerError
from .evaluator import Model, Prediction, Scores, load_model
from .layers import DTYPES, FEATURES, FIELDS, LAYER_TYPES, Architecture, Layer

if TYPE_CHECKING:
    from .table import LayerTable, read_architectures, read_layer_table, write_architectures

# Layer tables are read and written with pyarrow, imported when first used: a verb or a search loop that never
# touches a table file (``neuralpower predict resnet50``) starts without it.
_TABLE_NAMES = ("LayerTable", "read_architectures", "read_layer_table", "write_architectures")


def __getattr__(name: str) -> Any:
    if name in _TABLE_NAMES:
        from . import table

        return getattr(table, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def from_torch(module: Any, input_shape: Sequence[int], **options: Any) -> Architecture:
    """The architecture of a PyTorch module (see :func:`neuralpower.importers.from_torch`)."""
    from .importers import from_torch as _from_torch

    return _from_torch(module, input_shape, **options)


def from_onnx(path: str | os.PathLike[str], **options: Any) -> Architecture:
    """The architecture of an ONNX file (see :func:`neuralpower.importers.from_onnx`)."""
    from .importers import from_onnx as _from_onnx

    return _from_onnx(path, **options)


def epr(error: float, energy_mj: float, alpha: float = 1.0) -> float:
    """NeuralPower's energy-precision ratio ``error ** alpha * energy_mj`` (see :mod:`neuralpower.models`)."""
    from .models.predict import epr as _epr

    return _epr(error, energy_mj, alpha)


__version__ = "0.1.0"

__all__ = [
    "DTYPES",
    "FEATURES",
    "FIELDS",
    "LAYER_TYPES",
    "Architecture",
    "InputError",
    "Layer",
    "LayerTable",
    "Model",
    "NeuralPowerError",
    "Prediction",
    "Scores",
    "__version__",
    "epr",
    "from_onnx",
    "from_torch",
    "load_model",
    "read_architectures",
    "read_layer_table",
    "write_architectures",
]
