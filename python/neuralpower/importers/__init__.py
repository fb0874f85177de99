"""Import architectures from PyTorch modules and ONNX files (PyTorch and onnx are imported on first use)."""

from __future__ import annotations

from .onnx_import import from_onnx
from .torch_import import from_torch

__all__ = ["from_onnx", "from_torch"]
