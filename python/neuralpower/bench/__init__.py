"""The microbenchmark suite: executors, timing, NVML power, sweeps and resumable datasets.

Importing it imports neither CuPy, PyTorch nor pynvml.
"""

from __future__ import annotations
