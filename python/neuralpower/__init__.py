"""neuralpower: predict a neural network's GPU inference runtime, power and energy from its architecture.

Importing this package never imports CuPy, PyTorch or ONNX.
"""

from __future__ import annotations

from .errors import InputError, NeuralPowerError
from .evaluator import Model, Prediction, Scores, load_model
from .layers import DTYPES, FEATURES, FIELDS, LAYER_TYPES, Architecture, Layer
from .table import LayerTable, read_architectures, read_layer_table, write_architectures


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
    "load_model",
    "read_architectures",
    "read_layer_table",
    "write_architectures",
]
