"""neuralpower: predict a neural network's GPU inference runtime, power and energy from its architecture.

Importing this package never imports CuPy, PyTorch or ONNX.
"""

from __future__ import annotations

from .errors import InputError, NeuralPowerError
from .layers import DTYPES, FEATURES, FIELDS, LAYER_TYPES, Architecture, Layer
from .table import LayerTable, read_architectures, read_layer_table, write_architectures

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
    "NeuralPowerError",
    "__version__",
    "read_architectures",
    "read_layer_table",
    "write_architectures",
]
