"""neuralpower: predict a neural network's GPU inference runtime, power and energy from its architecture.

Importing this package never imports CuPy, PyTorch or ONNX.
"""

from __future__ import annotations

from .errors import InputError, NeuralPowerError
from .layers import DTYPES, FEATURES, FIELDS, LAYER_TYPES, Architecture, Layer

__version__ = "0.1.0"

__all__ = [
    "DTYPES",
    "FEATURES",
    "FIELDS",
    "LAYER_TYPES",
    "Architecture",
    "InputError",
    "Layer",
    "NeuralPowerError",
    "__version__",
]
