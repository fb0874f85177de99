"""The executor interface: how the microbenchmark suite runs a layer (or a whole network) on a device.

An executor turns a :class:`~neuralpower.layers.Layer` (or an :class:`~neuralpower.layers.Architecture`)
into a :class:`Prepared` workload whose inputs and weights already live on the device, and times calls of
it the way :doc:`MEASUREMENT.md` says: back-to-back calls between two timestamps taken on the device
(CUDA events for GPU executors, ``time.perf_counter_ns`` for the CPU), after warm-up, never the first call.

Executors: ``cpu`` (NumPy on the host, so the whole pipeline runs on a machine without a GPU), ``cupy``
(neuralpower's CUDA kernels through CuPy ``RawModule``, cuBLAS for linear as a recorded variant), ``torch``
(PyTorch modules as users run them, cuDNN included; eager or CUDA graph). Importing this module imports
neither CuPy nor PyTorch: each executor imports its library when it is created.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from typing import Any

from ...errors import NeuralPowerError
from ...layers import Architecture, Layer

__all__ = ["Executor", "ExecutorUnavailable", "LayerFailed", "OutOfMemory", "Prepared", "Variant", "unsupported"]


class ExecutorUnavailable(NeuralPowerError):
    """The executor cannot run here (no GPU, CuPy or PyTorch missing): the message says what to install."""


class OutOfMemory(NeuralPowerError):
    """A configuration does not fit in device memory: recorded as such, and the sweep goes on."""


class LayerFailed(NeuralPowerError):
    """A configuration failed to run (a kernel launch error, an unsupported shape): recorded and skipped."""


def unsupported(layer: Layer, executor: str, dtypes: Collection[str]) -> str | None:
    """Why ``executor``, which runs ``dtypes``, cannot run ``layer`` (one line), or None. No executor runs
    attention's serving forms, grouped-query (kv_heads below heads), a sliding window or K and V of their own
    dtype: it would measure plain attention in their place."""
    if layer.dtype not in dtypes:
        return f"the {executor} executor runs {', '.join(dtypes)}, not {layer.dtype}"
    if layer.type == "attention":
        if layer.kv_heads != layer.heads:
            return (f"the {executor} executor runs attention with kv_heads = heads, not {layer.kv_heads} of "
                    f"{layer.heads}")
        if layer.window:
            return f"the {executor} executor runs attention without a window, not window {layer.window}"
        if layer.kv_dtype != layer.dtype:
            return f"the {executor} executor runs attention with K and V in its dtype, not {layer.kv_dtype}"
    return None


@dataclass(frozen=True)
class Variant:
    """How a workload is run, recorded in every row.

    Attributes
    ----------
    mode
        ``eager`` (one launch per call, as a framework runs) or ``graph`` (calls captured in a CUDA graph:
        the GPU's own time, without launch overhead).
    memory_format
        ``contiguous`` (NCHW) or ``channels_last`` (torch only).
    impl
        Implementation detail worth recording, e.g. ``kernel`` or ``cublas`` for the cupy executor's linear
        layers; empty when there is one way.
    """

    mode: str = "eager"
    memory_format: str = "contiguous"
    impl: str = ""

    def columns(self) -> dict[str, str]:
        return {"mode": self.mode, "memory_format": self.memory_format, "impl": self.impl}


class Prepared(ABC):
    """A workload ready to run: inputs, weights and outputs allocated on the device."""

    @abstractmethod
    def run(self) -> None:
        """One call (asynchronous on a GPU: returns once launched)."""

    @abstractmethod
    def time_calls(self, calls: int) -> float:
        """Run ``calls`` back-to-back calls between two device timestamps; the mean milliseconds per call."""

    @abstractmethod
    def synchronize(self) -> None:
        """Wait until the device has finished all work launched so far."""

    def run_calls(self, calls: int) -> None:
        """Launch ``calls`` back-to-back calls the way :meth:`time_calls` runs them, untimed (power windows run
        this, so that they measure the work that was timed: in graph mode the same graphs)."""
        for _ in range(calls):
            self.run()

    def check(self) -> None:  # noqa: B027 - optional hook, a no-op where there is no custom code to check
        """Compare the output with a reference implementation; raise ``AssertionError`` on a mismatch.

        Executors running their own kernels must implement it: a kernel is checked before it is ever timed.
        """

    def release(self) -> None:  # noqa: B027 - optional hook
        """Free device memory now (also done when the object is collected)."""


@dataclass
class Executor(ABC):
    """Runs layers and networks on one device.

    Attributes
    ----------
    device
        ``cpu`` or ``cuda:N``.
    dtype
        ``fp32`` or ``fp16`` (where the executor supports it).
    """

    device: str = "cpu"
    dtype: str = "fp32"
    name: str = field(init=False, default="")

    @abstractmethod
    def context(self) -> Mapping[str, Any]:
        """Columns every row measured with this executor carries: device name (and UUID), driver, CUDA and
        library versions, executor name. See MEASUREMENT.md point 9."""

    @abstractmethod
    def variants(self, layer: Layer) -> list[Variant]:
        """The variants this executor measures a layer in (the first is the default)."""

    @abstractmethod
    def prepare(self, layer: Layer, variant: Variant) -> Prepared:
        """Allocate a layer's inputs, weights and output, with random data, on the device.

        Raises
        ------
        OutOfMemory, LayerFailed
        """

    def network_variants(self, arch: Architecture) -> list[Variant]:
        """The variants a whole network is run in (the first is the default): by default the first layer's
        modes and memory formats; a layer's implementation choice (``impl``) is not a network's."""
        out: list[Variant] = []
        for v in self.variants(arch.layers[0]):
            plain = Variant(mode=v.mode, memory_format=v.memory_format)
            if plain not in out:
                out.append(plain)
        return out

    @abstractmethod
    def prepare_network(self, arch: Architecture, variant: Variant) -> Prepared:
        """A whole network run end to end, its layers in order (``run`` is one inference).

        Raises
        ------
        OutOfMemory, LayerFailed
        """

    def supports(self, layer: Layer) -> bool:
        """Whether this executor can run a layer (type and dtype)."""
        return True

    def l2_bytes(self) -> int:
        """Size of the device's last-level cache (0 when unknown), for cold-cache buffer rotation."""
        return 0
