"""Executors by name; each module is imported only when its executor is asked for."""

from __future__ import annotations

import importlib

from .base import Executor, ExecutorUnavailable, LayerFailed, OutOfMemory, Prepared, Variant, unsupported

__all__ = [
    "EXECUTORS",
    "Executor",
    "ExecutorUnavailable",
    "LayerFailed",
    "OutOfMemory",
    "Prepared",
    "Variant",
    "get_executor",
    "unsupported",
]

# name -> (module, class)
EXECUTORS: dict[str, tuple[str, str]] = {
    "cpu": ("neuralpower.bench.executors.cpu", "CpuExecutor"),
    "cupy": ("neuralpower.bench.executors.cupy_exec", "CupyExecutor"),
    "torch": ("neuralpower.bench.executors.torch_exec", "TorchExecutor"),
}


def get_executor(name: str, device: str = "cpu", dtype: str = "fp32") -> Executor:
    """The executor ``name`` on ``device``.

    Raises
    ------
    ExecutorUnavailable
        An unknown name, a missing library (the message names the extra to install) or no such device.
    """
    if name not in EXECUTORS:
        raise ExecutorUnavailable(f"unknown executor {name!r} (known: {', '.join(EXECUTORS)})")
    module, cls = EXECUTORS[name]
    executor: Executor = getattr(importlib.import_module(module), cls)(device=device, dtype=dtype)
    return executor
