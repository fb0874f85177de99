"""The ``cupy`` executor: neuralpower's own CUDA kernels (``cuda_kernels/``) launched through CuPy.

Each layer runs the launches of :func:`~neuralpower.bench.kernels.plan_layer` on buffers of its own shapes,
filled with random values on the device (never zeros: they hide unwritten outputs and can run faster than
real data; embedding indices are random rows of the vocabulary). Linear and matmul layers have two
implementations, recorded as ``Variant.impl``: ``kernel`` (ours) and ``cublas`` (``cupy.matmul``: one GEMM, or
cuBLAS's strided-batched GEMM for matmul; then our bias kernel for linear); conv2d records which of our kernels
it ran. Every layer type has kernels; attention only up to :data:`~neuralpower.bench.kernels.ATTENTION_MAX_HEAD_DIM`
dimensions per head (:meth:`CupyExecutor.supports` says no beyond).

Two modes (``Variant.mode``): ``eager`` launches every kernel from Python, one call after the other, as a
framework does; ``graph`` captures calls in a CUDA graph on the executor's stream
(``stream.begin_capture()`` / ``end_capture()``) and launches the graph, which leaves the GPU's own time.
Both are timed between two ``cupy.cuda.Event`` records on that (non-default) stream.

Every kernel is compared with the NumPy reference (:mod:`neuralpower.bench.reference`) by
:meth:`Prepared.check` before it is timed: on a copy of the layer small enough for the reference to be quick
(batch at most 2, fewer channels or a smaller image where the layer is large; the kernel and its code path
stay the same), with fresh random data and the output poisoned with NaN beforehand, so an unwritten element
fails too. A check that passed is remembered for the executor's lifetime.

Whole networks (:meth:`CupyExecutor.prepare_network`): the layers' launches in order, one call being one
inference. A table of layers does not say which tensor feeds which layer (networks branch), so each layer
has buffers of its own shapes, except that a layer whose first operand has the shape of the previous
layer's output reads that buffer: the usual chain, with the previous output still in L2 as in a real
network. Flatten launches nothing (a view).
"""

from __future__ import annotations

import math
import re
import traceback
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from ...errors import InputError
from ...layers import Architecture, Layer
from .. import kernels, reference
from .base import Executor, ExecutorUnavailable, LayerFailed, OutOfMemory, Prepared, Variant, unsupported

__all__ = [
    "CHECK_ELEMENTS",
    "CHECK_MACS",
    "GRAPH_CALLS",
    "REL_ERROR",
    "CupyExecutor",
    "compare_with_reference",
    "first_line",
    "nvidia_driver_version",
    "parse_cuda_device",
    "release_frames",
    "small_layer",
]

#: Calls of a layer per captured CUDA graph; ``time_calls(n)`` launches ``n // GRAPH_CALLS`` such graphs and
#: one graph of the remainder, so that graphs stay small however many calls are timed. A network's graph holds
#: one call (one inference is already many kernels).
GRAPH_CALLS = 32
#: A check runs the reference on a layer of at most this many multiply-accumulates (conv2d, linear) ...
CHECK_MACS = 2**26
#: ... or input elements (the other types), shrinking the layer's batch, channels or image to fit.
CHECK_ELEMENTS = 2**18
_MODES = ("eager", "graph")
_SEED = 20240611
_TWO_IMPLS = ("linear", "matmul")  # our kernel and cuBLAS
#: CuPy refuses cuBLAS calls during stream capture ("calling cuBLAS API during stream capture is currently
#: unsupported", measured on an H200 with CuPy for CUDA 13, 2026-12-04), so cuBLAS runs eager only.
_CUBLAS_MODES = ("eager",)


def _modes_of(impl: str, modes: tuple[str, ...]) -> tuple[str, ...]:
    return tuple(m for m in modes if m in _CUBLAS_MODES) if impl == "cublas" else modes


# -- helpers shared with the torch executor ---------------------------------------------------------------


def network_variants(arch: Architecture) -> list[Variant]:
    """What :meth:`CupyExecutor.network_variants` returns (no CuPy needed): eager and graph, and with linear or
    matmul layers both of their implementations (``kernel``, ``cublas``; cuBLAS eager only, as CuPy cannot
    capture it); a network's convolutions pick their own kernels, so no conv implementation is a network
    variant."""
    modes = ("eager",) if all(layer.type == "flatten" for layer in arch) else _MODES
    impls = ("kernel", "cublas") if any(layer.type in _TWO_IMPLS for layer in arch) else ("",)
    return [Variant(mode=mode, impl=impl) for impl in impls for mode in _modes_of(impl, modes)]


def first_line(error: BaseException) -> str:
    """An exception's message on one line (the CLI prints errors as one line)."""
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0] if text else ''}".rstrip(": ")


def parse_cuda_device(device: str, executor: str) -> int:
    """The ordinal of ``cuda`` / ``cuda:N``, or :class:`ExecutorUnavailable`."""
    match = re.fullmatch(r"cuda(?::(\d+))?", device.strip().lower())
    if match is None:
        raise ExecutorUnavailable(f"the {executor} executor runs on a CUDA device (cuda:N), not {device!r}")
    return int(match.group(1) or 0)


def nvidia_driver_version() -> str:
    """The NVIDIA driver's version (e.g. ``580.159.04``) from NVML, else ``/proc/driver/nvidia/version``;
    ``""`` when neither answers."""
    try:
        import pynvml  # type: ignore[import-not-found, unused-ignore]

        pynvml.nvmlInit()
        try:
            version = pynvml.nvmlSystemGetDriverVersion()
        finally:
            pynvml.nvmlShutdown()
        return version.decode() if isinstance(version, bytes) else str(version)
    except Exception:  # no NVML is a normal case: fall back
        pass
    try:
        text = Path("/proc/driver/nvidia/version").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""
    match = re.search(r"Kernel Module(?: for \S+)?\s+(\d+(?:\.\d+)+)", text)
    return match.group(1) if match else ""


def cuda_version_string(version: int) -> str:
    """CUDA's integer version (``13000``) as ``13.0``."""
    return f"{version // 1000}.{version % 1000 // 10}"


def _shrunk(layer: Layer, **changes: int) -> Layer | None:
    try:
        return layer.replace(**changes)
    except InputError:
        return None


def _halve_while(layer: Layer, too_big: Callable[[Layer], bool], field: str, floor: int = 1) -> Layer:
    """``layer`` with ``field`` halved (not below ``floor``) while ``too_big`` says so and the layer stays valid."""
    small = layer
    while too_big(small) and getattr(small, field) > floor:
        candidate = _shrunk(small, **{field: max(floor, getattr(small, field) // 2)})
        if candidate is None:
            break
        small = candidate
    return small


def _small_token_layer(layer: Layer) -> Layer:
    """:func:`small_layer` of the token types: batch at most 2, heads at most 2 (kept above 1 when above), then
    fewer tokens (and keys), then fewer features, leaving what selects a code path (a layernorm's or
    last-axis softmax's row length, the head dimension, the causal flag, the layout, vec4 alignments)."""
    t = layer.type
    small = _shrunk(layer, batch=min(layer.batch, 2)) or layer
    if t in ("matmul", "attention") and small.heads > 2:
        small = _shrunk(small, heads=2) or small

    def macs(candidate: Layer) -> bool:
        return candidate.macs > CHECK_MACS

    def elements(candidate: Layer) -> bool:
        return max(math.prod(candidate.in_shape), math.prod(candidate.out_shape)) > CHECK_ELEMENTS

    if t == "linear":  # tokens > 1: M = batch * tokens stays above the small-batch kernel's 8
        small = _halve_while(small, macs, "tokens", floor=min(small.tokens, 9))
        small = _halve_while(small, macs, "out_features", floor=64)
        k = small.in_features
        while macs(small) and k > 64:
            k = k // 2
            small = _shrunk(small, in_features=k - k % 4 + layer.in_features % 4) or small
        return small
    if t == "attention":
        while macs(small) and (small.tokens > 1 or small.kv_tokens > 1):
            candidate = _shrunk(small, tokens=max(1, small.tokens // 2), kv_tokens=max(1, small.kv_tokens // 2))
            if candidate is None:
                break
            small = candidate
        return small
    if t == "matmul":
        small = _halve_while(small, macs, "tokens")
        small = _halve_while(small, macs, "out_features", floor=16)
        return _halve_while(small, macs, "in_features", floor=16)
    if t == "embedding":  # the vocabulary does not change the gather: a small table is as good
        small = _shrunk(small, in_features=min(small.in_features, 4096)) or small
        return _halve_while(small, elements, "tokens")
    # layernorm
    return _halve_while(small, elements, "tokens")


def small_layer(layer: Layer) -> Layer:
    """A copy of ``layer`` cheap enough for the NumPy reference that runs the same kernel code path.

    conv2d and conv_transpose2d: batch at most 2, then a smaller image while it costs more than
    :data:`CHECK_MACS`. linear: the same side of the small-batch threshold (batch up to 8 kept, else 16), then
    fewer output and input features (``in_features % 4`` kept: it selects the vectorized path). Token types
    (layernorm, matmul, attention, embedding, linear on tokens): see :func:`_small_token_layer`. Other types:
    batch at most 2, then fewer channels (not a last-axis softmax's: its row length), then a smaller image
    (upsample: and output), while the input (or output) has more than :data:`CHECK_ELEMENTS` elements.
    """
    t = layer.type
    if t in ("layernorm", "matmul", "attention", "embedding") or (t == "linear" and layer.tokens > 1):
        return _small_token_layer(layer)
    if t == "linear":
        small = _shrunk(layer, batch=layer.batch if layer.batch <= 8 else 16) or layer
        while small.macs > CHECK_MACS and small.out_features > 64:
            small = _shrunk(small, out_features=max(64, small.out_features // 2)) or small
        while small.macs > CHECK_MACS and small.in_features > 64:
            k = small.in_features // 2
            small = _shrunk(small, in_features=k - k % 4 + small.in_features % 4) or small
        return small
    small = _shrunk(layer, batch=min(layer.batch, 2)) or layer
    convolution = t in ("conv2d", "conv_transpose2d")

    def cost(candidate: Layer) -> int:
        if convolution:
            return candidate.macs
        inputs = math.prod(candidate.in_shape) * (candidate.inputs if t in ("add", "mul") else 1)
        return max(inputs, math.prod(candidate.out_shape)) if t == "upsample" else inputs

    budget = CHECK_MACS if convolution else CHECK_ELEMENTS
    if not convolution and not (t == "softmax" and not layer.channels_first):
        step = layer.groups if t == "channel_shuffle" else 1
        floor = max(step, layer.inputs if t == "concat" else 1, 2 if t == "softmax" else 1)
        while cost(small) > budget and small.in_channels > floor:
            c = max(floor, small.in_channels // 2 // step * step)
            candidate = _shrunk(small, in_channels=c)
            if candidate is None or c == small.in_channels:
                break
            small = candidate
    while cost(small) > budget:
        h, w = max(1, small.in_h // 2), max(1, small.in_w // 2)
        changes = {"in_h": h, "in_w": w}
        if t == "upsample":  # about the same ratio
            changes.update(out_h=max(1, small.out_h // 2), out_w=max(1, small.out_w // 2))
        candidate = _shrunk(small, **changes)
        if candidate is None or (h, w) == (small.in_h, small.in_w):
            break
        small = candidate
    return small


#: Largest relative error ||actual - reference|| / ||reference|| a check accepts, by dtype (METHOD.md: fp32
#: lands far under 1e-3; fp16 storage with fp32 arithmetic near 3e-4). It backs up the element-wise
#: tolerance of :func:`reference.assert_close`, which is loose where outputs are much smaller than their
#: reduction length suggests (a softmax over 1000 channels).
REL_ERROR = {"fp32": 1e-4, "fp16": 1e-2, "bf16": 3e-2}


def compare_with_reference(
    actual: npt.ArrayLike, expected: npt.ArrayLike, layer: Layer, dtype: str | None = None
) -> None:
    """:func:`reference.assert_close` (with the tolerance of ``dtype``, default the layer's) and a relative
    error at most :data:`REL_ERROR`; infinities (a max-pool window entirely in the padding gives -inf, as in
    PyTorch) must match exactly instead of failing as non-finite.

    Raises
    ------
    AssertionError
        Names the layer and the worst element, or the relative error.
    """
    a = np.asarray(actual, dtype=np.float64)
    e = np.asarray(expected, dtype=np.float64)
    if a.shape != e.shape:
        raise AssertionError(f"{layer!r}: output shape {a.shape}, expected {e.shape}")
    inf = np.isinf(e)
    if inf.any():
        if not np.array_equal(a[inf], e[inf]):
            raise AssertionError(f"{layer!r}: the output differs from the reference where that is infinite")
        a, e = np.where(inf, 0.0, a), np.where(inf, 0.0, e)
    reference.assert_close(a, e, layer, dtype)
    norm = float(np.linalg.norm(e))
    if norm > 0:
        error = float(np.linalg.norm(a - e)) / norm
        limit = REL_ERROR[dtype or layer.dtype]
        if error > limit:
            raise AssertionError(f"{layer!r}: relative error {error:.3g} > {limit:g}")


# -- the executor -----------------------------------------------------------------------------------------


@dataclass
class CupyExecutor(Executor):
    """neuralpower's CUDA kernels through CuPy on ``cuda:N``.

    Raises
    ------
    ExecutorUnavailable
        CuPy is not installed (the message names the extra), there is no such CUDA device, or ``dtype`` is
        not fp32 or fp16.
    """

    device: str = "cuda:0"
    dtype: str = "fp32"
    name: str = field(init=False, default="cupy")

    def __post_init__(self) -> None:
        index = parse_cuda_device(self.device, "cupy")
        cp = kernels.import_cupy()
        try:
            count = cp.cuda.runtime.getDeviceCount()
        except Exception as e:  # CUDARuntimeError without a driver, or other CUDA errors
            raise ExecutorUnavailable(f"no CUDA device for the cupy executor ({first_line(e)})") from None
        if index >= count:
            raise ExecutorUnavailable(f"no CUDA device {index} for the cupy executor ({count} found)")
        if self.dtype not in kernels.CUDA_TYPES:
            raise ExecutorUnavailable(f"the cupy executor runs {', '.join(kernels.CUDA_TYPES)}, not {self.dtype}")
        self._cp = cp
        self._index = index
        self._dev = cp.cuda.Device(index)
        self._props: dict[str, Any] = cp.cuda.runtime.getDeviceProperties(index)
        self._checked: set[tuple[tuple[int, ...], str]] = set()
        with self._dev:
            self._check_stream = cp.cuda.Stream(non_blocking=True)

    # -- description ----------------------------------------------------------------------------------
    def context(self) -> Mapping[str, Any]:
        """``executor``, ``device``, ``gpu`` (name), ``gpu_uuid`` (as nvidia-smi writes it), ``driver`` (the
        NVIDIA driver), ``cuda`` (the CUDA runtime CuPy uses), ``cuda_driver`` (the CUDA version the driver
        supports), ``compute_capability`` and ``cupy`` (its version)."""
        cp = self._cp
        props = self._props
        name = props.get("name", b"")
        raw_uuid = props.get("uuid", b"")
        return {
            "executor": self.name,
            "device": f"cuda:{self._index}",
            "gpu": name.decode(errors="replace") if isinstance(name, bytes) else str(name),
            "gpu_uuid": f"GPU-{uuid.UUID(bytes=bytes(raw_uuid))}" if len(raw_uuid) == 16 else "",
            "driver": nvidia_driver_version(),
            "cuda": cuda_version_string(cp.cuda.runtime.runtimeGetVersion()),
            "cuda_driver": cuda_version_string(cp.cuda.runtime.driverGetVersion()),
            "compute_capability": f"{props.get('major', 0)}.{props.get('minor', 0)}",
            "cupy": str(cp.__version__),
        }

    def supports(self, layer: Layer) -> bool:
        """fp32 and fp16 layers of every type; attention up to :data:`kernels.ATTENTION_MAX_HEAD_DIM` dimensions
        per head (``np_attention_rows`` keeps 4 per lane)."""
        if layer.type == "attention" and layer.head_dim > kernels.ATTENTION_MAX_HEAD_DIM:
            return False
        return unsupported(layer, self.name, kernels.CUDA_TYPES) is None

    def l2_bytes(self) -> int:
        return int(self._props.get("l2CacheSize", 0))

    def variants(self, layer: Layer) -> list[Variant]:
        if layer.type in _TWO_IMPLS:
            impls = ["kernel", "cublas"]
        elif layer.type == "conv2d":
            impls = [kernels.conv_impl(layer)]
        else:
            impls = [""]
        modes = ("eager",) if layer.type == "flatten" else _MODES  # a view: nothing to capture
        return [Variant(mode=mode, impl=impl) for impl in impls for mode in _modes_of(impl, modes)]

    def network_variants(self, arch: Architecture) -> list[Variant]:
        """Eager and graph; with linear layers, once through our kernels and once through cuBLAS (a conv's
        kernel is chosen per layer, as :func:`kernels.plan_layer` does)."""
        return network_variants(arch)

    # -- preparing work -------------------------------------------------------------------------------
    def prepare(self, layer: Layer, variant: Variant) -> Prepared:
        """A layer on random device data; ``variant.impl`` may force a conv2d kernel (``implicit_gemm``,
        ``depthwise``, ``depthwise_direct``) or a linear or matmul one (``kernel``, ``cublas``).

        Raises
        ------
        OutOfMemory, LayerFailed
        """
        self._check_variant(variant)
        plan = kernels.plan_layer(layer, variant.impl)
        with self._errors(f"preparing {layer!r}"), self._dev:
            rng = self._cp.random.RandomState(_SEED)
            bufs = self._device_buffers(plan, rng, None)
            calls, keep = self._bind(plan, bufs)
            # Buffers were filled on the default stream, which our non-blocking streams do not wait for.
            self._dev.synchronize()
            return _CupyPrepared(self, calls, [*bufs.values(), *keep], variant.mode, [(layer, plan.impl)], GRAPH_CALLS)

    def prepare_network(self, arch: Architecture, variant: Variant) -> Prepared:
        """A network's layers in order (see the module's notes on buffers); ``variant.impl`` ``cublas`` runs
        its linear and matmul layers through cuBLAS, ``""`` through our kernels.

        Raises
        ------
        OutOfMemory, LayerFailed
        """
        self._check_variant(variant)
        if variant.impl not in ("", "kernel", "cublas"):
            raise LayerFailed(f"a network's implementation is '' or cublas, not {variant.impl!r}")
        plans = [
            kernels.plan_layer(layer, variant.impl if layer.type in _TWO_IMPLS and variant.impl else "")
            for layer in arch
        ]
        with self._errors(f"preparing network {arch.name!r}"), self._dev:
            rng = self._cp.random.RandomState(_SEED)
            calls: list[Callable[[], Any]] = []
            keep: list[Any] = []
            previous: Any = None
            try:
                for plan in plans:
                    bufs = self._device_buffers(plan, rng, previous)
                    layer_calls, layer_keep = self._bind(plan, bufs)
                    calls += layer_calls
                    keep += [*bufs.values(), *layer_keep]
                    previous = bufs[plan.output]
            except BaseException:
                # The traceback keeps this frame: free the layers allocated so far now (out of memory).
                calls.clear()
                keep.clear()
                previous = bufs = None
                raise
            checks = list({(p.layer.row, p.impl): (p.layer, p.impl) for p in plans}.values())
            self._dev.synchronize()  # as in prepare
            return _CupyPrepared(self, calls, keep, variant.mode, checks, 1)

    def _check_variant(self, variant: Variant) -> None:
        if variant.mode not in _MODES:
            raise LayerFailed(f"the cupy executor's modes are {', '.join(_MODES)}, not {variant.mode!r}")
        if variant.impl == "cublas" and variant.mode not in _CUBLAS_MODES:
            raise LayerFailed(f"the cupy executor runs cuBLAS eager only (CuPy cannot capture it in a graph), "
                              f"not {variant.mode!r}")
        if variant.memory_format != "contiguous":
            raise LayerFailed(f"the cupy executor's kernels are NCHW (contiguous), not {variant.memory_format}")

    def _device_buffers(self, plan: kernels.LayerPlan, rng: Any, previous: Any) -> dict[str, Any]:
        """Random inputs and parameters on the device (uniform, as the reference's operands), an empty
        output; ``previous`` (the last layer's output) becomes the first input where the shapes match."""
        cp = self._cp
        layer = plan.layer
        dt = np.dtype(reference.numpy_dtype(layer.dtype))

        def uniform(shape: Sequence[int], low: float = -1.0, high: float = 1.0, dtype: Any = dt) -> Any:
            return rng.uniform(low, high, size=tuple(shape), dtype=np.float32).astype(dtype, copy=False)

        bufs: dict[str, Any] = {}
        for name, shape in zip(plan.inputs, reference.input_shapes(layer), strict=True):
            if layer.type == "embedding":  # indices: the reference's, uploaded (one small int64 array)
                bufs[name] = cp.asarray(reference.make_indices(layer, np.random.default_rng(_SEED)))
            elif name == "x0" and previous is not None and previous.shape == tuple(shape):
                bufs[name] = previous
            elif (
                name == "x0"
                and previous is not None
                and previous.size == math.prod(shape)
                and previous.shape[0] == shape[0]
            ):
                bufs[name] = previous.reshape(shape)
            else:
                bufs[name] = uniform(shape)
        shapes = reference.param_shapes(layer)
        weight = shapes.get("weight", (1, 1))
        bound = 1.0 / math.sqrt(max(math.prod(weight[1:]), 1))  # PyTorch's fan-in initialization
        for name in plan.params:
            if name == "dummy":
                bufs[name] = cp.zeros((1,), dtype=dt)
            elif name == "scale":
                var = uniform((layer.in_channels,), 0.5, 1.5, np.float32)
                bufs[name] = uniform((layer.in_channels,), 0.5, 1.5, np.float32) / cp.sqrt(var + reference.BN_EPS)
            elif name == "shift":
                bufs[name] = uniform((layer.in_channels,), -0.5, 0.5, np.float32)
            elif layer.type == "embedding":  # nn.Embedding's N(0, 1)
                bufs[name] = rng.standard_normal(size=shapes[name], dtype=np.float32).astype(dt, copy=False)
            elif layer.type == "layernorm":
                bufs[name] = uniform(shapes[name], 0.5, 1.5) if name == "weight" else uniform(shapes[name], -0.5, 0.5)
            else:
                bufs[name] = uniform(shapes[name], -bound, bound)
        bufs.update(self._output(plan, bufs))
        return bufs

    def _host_buffers(self, plan: kernels.LayerPlan, ops: reference.Operands) -> dict[str, Any]:
        """The reference's operands on the device (for checks), the output poisoned with NaN."""
        cp = self._cp
        bufs: dict[str, Any] = {name: cp.asarray(x) for name, x in zip(plan.inputs, ops.inputs, strict=True)}
        p = ops.params
        for name in plan.params:
            if name in ("weight", "bias"):  # conv, linear, layernorm, embedding
                bufs[name] = cp.asarray(p[name])
            elif name == "dummy":
                bufs[name] = cp.zeros((1,), dtype=reference.numpy_dtype(plan.layer.dtype))
            elif name in ("scale", "shift"):
                scale, shift = reference.fold_batchnorm(p)
                bufs[name] = cp.asarray((scale if name == "scale" else shift).astype(np.float32))
        bufs.update(self._output(plan, bufs))
        if plan.output == "y":
            bufs["y"].fill(np.nan)
        return bufs

    def _output(self, plan: kernels.LayerPlan, bufs: Mapping[str, Any]) -> dict[str, Any]:
        shape = reference.output_shape(plan.layer)  # the operands' layout (channels-first layernorm, softmax)
        if plan.output == "y":
            return {"y": self._cp.empty(shape, dtype=reference.numpy_dtype(plan.layer.dtype))}
        return {plan.output: bufs[plan.output].reshape(shape)}  # flatten: a view of its input

    def _bind(self, plan: kernels.LayerPlan, bufs: Mapping[str, Any]) -> tuple[list[Callable[[], Any]], list[Any]]:
        """Zero-argument callables that launch the plan's steps on the current stream, and the device tables
        their arguments point to (kept alive with the buffers)."""
        cp = self._cp
        calls: list[Callable[[], Any]] = []
        keep: list[Any] = []

        def resolve(arg: kernels.Arg) -> Any:
            if isinstance(arg, kernels.Buf):
                return bufs[arg.name]
            if isinstance(arg, kernels.PtrTable):
                table = cp.asarray(np.array([bufs[n].data.ptr for n in arg.names], dtype=np.uint64))
            elif isinstance(arg, kernels.IntTable):
                table = cp.asarray(np.array(arg.values, dtype=np.int32))
            else:
                return arg
            keep.append(table)
            return table

        for step in plan.steps:
            if isinstance(step, kernels.CublasGemm):
                w = bufs[step.w]  # (out, in); token tensors viewed as (N * tokens, features): one GEMM
                x, y = bufs[step.x].reshape(-1, w.shape[1]), bufs[step.y].reshape(-1, w.shape[0])
                calls.append(partial(cp.matmul, x, w.T, out=y))
            elif isinstance(step, kernels.CublasMatmul):
                calls.append(partial(cp.matmul, bufs[step.a], bufs[step.b], out=bufs[step.y]))
            else:
                fn = kernels.get_function(step.kernel, step.dtype)
                args = tuple(resolve(a) for a in step.args)
                calls.append(partial(fn, step.grid, step.block, args, shared_mem=step.shared_bytes))
        return calls, keep

    # -- checks ---------------------------------------------------------------------------------------
    def run_on(self, layer: Layer, ops: reference.Operands, impl: str = "") -> npt.NDArray[Any]:
        """Run ``layer`` once on the given host operands (as :func:`reference.make_operands` makes them) and
        return its output on the host; the output buffer is poisoned with NaN first, so an element the
        kernels do not write shows.

        Raises
        ------
        OutOfMemory, LayerFailed
        """
        plan = kernels.plan_layer(layer, impl)
        # Everything on one stream: uploads, the NaN fill, the launches and the download are ordered.
        with self._errors(f"running {layer!r}"), self._dev, self._check_stream:
            bufs = self._host_buffers(plan, ops)
            calls, _keep = self._bind(plan, bufs)
            for call in calls:
                call()
            out: npt.NDArray[Any] = self._cp.asnumpy(bufs[plan.output], stream=self._check_stream)
            self._check_stream.synchronize()
        return out

    def check_layer(self, layer: Layer, impl: str = "") -> None:
        """Run ``layer`` (shrunk by :func:`small_layer`) with implementation ``impl`` on the reference's
        operands and compare with :func:`reference.forward`; remembered once passed.

        Raises
        ------
        AssertionError
            The output differs from the reference (names the worst element).
        OutOfMemory, LayerFailed
        """
        key = (layer.row, impl)
        if key in self._checked:
            return
        small = small_layer(layer)
        ops = reference.make_operands(small, np.random.default_rng(abs(hash(small.row)) % 2**32))
        actual = self.run_on(small, ops, impl)
        compare_with_reference(actual, reference.forward(small, ops), small)
        self._checked.add(key)

    @contextmanager
    def _errors(self, what: str) -> Iterator[None]:
        """CuPy's and CUDA's errors as :class:`OutOfMemory` or :class:`LayerFailed`, on one line."""
        with translate_cupy_errors(self._cp, what):
            yield


@contextmanager
def translate_cupy_errors(cp: Any, what: str) -> Iterator[None]:
    """Out-of-memory errors as :class:`OutOfMemory`, CUDA, NVRTC and cuBLAS errors as :class:`LayerFailed`."""
    failures: list[type[BaseException]] = [
        cp.cuda.runtime.CUDARuntimeError,
        cp.cuda.driver.CUDADriverError,
        cp.cuda.compiler.CompileException,
    ]
    try:
        from cupy_backends.cuda.libs.cublas import CUBLASError  # type: ignore[import-not-found, unused-ignore]

        failures.append(CUBLASError)
    except ImportError:  # pragma: no cover - every CuPy with CUDA has it
        pass
    try:
        yield
    except cp.cuda.memory.OutOfMemoryError as e:
        release_frames(e)
        cp.get_default_memory_pool().free_all_blocks()
        raise OutOfMemory(f"{what}: {first_line(e)}") from e
    except tuple(failures) as e:
        message = first_line(e)
        if "out of memory" in message.lower() or "MemoryAllocation" in message or "ALLOC_FAILED" in message:
            release_frames(e)
            cp.get_default_memory_pool().free_all_blocks()
            raise OutOfMemory(f"{what}: {message}") from e
        raise LayerFailed(f"{what}: {message}") from e


def release_frames(error: BaseException) -> None:
    """Drop the local variables of the finished frames an exception's traceback holds: after running out of
    memory they hold the buffers allocated so far, which would otherwise live as long as the exception
    (pytest keeps it, a caller may log it) and make the next configuration run out of memory too."""
    traceback.clear_frames(error.__traceback__)


class _CupyPrepared(Prepared):
    """Launch closures with their buffers, a stream, two events and the captured graphs."""

    def __init__(
        self,
        executor: CupyExecutor,
        calls: list[Callable[[], Any]],
        keep: list[Any],
        mode: str,
        checks: list[tuple[Layer, str]],
        graph_calls: int,
    ) -> None:
        cp = executor._cp
        self._x = executor
        self._cp = cp
        self._calls = calls
        self._keep: list[Any] | None = keep
        self._mode = mode
        self._checks = checks
        self._graph_calls = graph_calls
        self._stream = cp.cuda.Stream(non_blocking=True)
        self._start = cp.cuda.Event()
        self._end = cp.cuda.Event()
        self._graphs: dict[int, Any] = {}
        self._warm = False

    @contextmanager
    def _on_device(self, what: str) -> Iterator[None]:
        if self._keep is None:
            raise LayerFailed("the workload was released")
        with translate_cupy_errors(self._cp, what), self._x._dev, self._stream:
            yield

    def _call(self) -> None:
        for call in self._calls:
            call()

    def _warm_up(self) -> None:
        """One eager call (kernel loading, cuBLAS handle and workspace) before any capture."""
        if not self._warm:
            self._call()
            self._stream.synchronize()
            self._warm = True

    def _graph(self, calls: int) -> Any:
        graph = self._graphs.get(calls)
        if graph is None:
            self._warm_up()
            self._stream.begin_capture()
            try:
                for _ in range(calls):
                    self._call()
            finally:
                # also after a failed launch: the stream must leave capture mode
                graph = self._stream.end_capture()
            graph.launch(self._stream)  # the first launch uploads the graph: keep it out of timings
            self._stream.synchronize()
            self._graphs[calls] = graph
        return graph

    @property
    def _graphed(self) -> bool:
        # A workload without launches (flatten) has nothing to capture: it runs as in eager mode.
        return self._mode == "graph" and bool(self._calls)

    def run(self) -> None:
        with self._on_device("running"):
            if self._graphed:
                self._graph(1).launch(self._stream)
            else:
                self._call()

    def _graphs_for(self, calls: int) -> list[Any]:
        """The captured graphs that make ``calls`` calls: full ones of ``graph_calls`` and one for the rest."""
        full, rest = divmod(calls, self._graph_calls)
        return ([self._graph(self._graph_calls)] * full if full else []) + ([self._graph(rest)] if rest else [])

    def run_calls(self, calls: int) -> None:
        with self._on_device("running"):
            if self._graphed:
                for graph in self._graphs_for(calls):
                    graph.launch(self._stream)
            else:
                self._warm_up()
                for _ in range(calls):
                    self._call()

    def time_calls(self, calls: int) -> float:
        if calls < 1:
            raise ValueError(f"calls must be at least 1, not {calls}")
        with self._on_device("timing"):
            stream = self._stream
            if self._graphed:
                graphs = self._graphs_for(calls)
                self._start.record(stream)
                for graph in graphs:
                    graph.launch(stream)
                self._end.record(stream)
            else:
                self._warm_up()
                self._start.record(stream)
                for _ in range(calls):
                    self._call()
                self._end.record(stream)
            self._end.synchronize()
            return float(self._cp.cuda.get_elapsed_time(self._start, self._end)) / calls

    def synchronize(self) -> None:
        with self._on_device("synchronizing"):
            self._stream.synchronize()

    def check(self) -> None:
        for layer, impl in self._checks:
            self._x.check_layer(layer, impl)

    def release(self) -> None:
        if self._keep is None:
            return
        with translate_cupy_errors(self._cp, "releasing"), self._x._dev:
            self._stream.synchronize()
        self._graphs.clear()
        self._calls = []
        self._keep = None
        # The buffers are back in CuPy's pool now. Returning the pool's blocks to the device keeps a long sweep
        # of varied sizes from fragmenting device memory into an OutOfMemory.
        with self._x._dev:
            self._cp.get_default_memory_pool().free_all_blocks()
