"""The ``cpu`` executor: every layer type in NumPy on the host, so the whole pipeline runs without a GPU.

Its timings describe the host, not a GPU: they exist so that sweeps, datasets, resumption and fitting
are exercised for real on any machine (CI included). fp32 and fp16 are supported: fp16 layers keep their
tensors in fp16 and do their arithmetic as NumPy does for fp16 (products and sums of conv2d, linear,
pooling and softmax accumulate in fp32, as GPU kernels do); bf16 and fp8 are not supported (NumPy has neither).

Implementations are deliberately different from :mod:`neuralpower.bench.reference`, which they are checked
against: conv2d is im2col (a strided window view copied into a column buffer, in batch chunks of at most
``workspace_bytes``) followed by a batched GEMM per group; conv_transpose2d is the transposed product (one GEMM
of the weights with the input per group) followed by col2im (each kernel tap's columns added to a strided slice
of the output), in batch chunks too; pooling reduces a strided window view; adaptive pooling uses an integral
image; batchnorm is folded into one scale and shift; attention is blocked (score blocks of at most
``workspace_bytes``, a precomputed additive causal mask); upsampling is separable (rows, then columns).
Layernorm, matmul and attention compute fp16 layers in fp32, as GPU kernels do.
"""

from __future__ import annotations

import math
import os
import platform
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
from numpy.lib.stride_tricks import sliding_window_view

from ..._args import cores as available_cores
from ...layers import Architecture, Layer
from .. import reference as ref
from .base import Executor, ExecutorUnavailable, LayerFailed, OutOfMemory, Prepared, Variant, unsupported

__all__ = ["CpuExecutor", "CpuPrepared", "cpu_model"]

Array = npt.NDArray[Any]
Kernel = Callable[[], Array]

# fp16 layers: what products and sums accumulate in.
_ACC = np.dtype(np.float32)
_DTYPES = ("fp32", "fp16")  # NumPy has no bf16 or fp8


def cpu_model() -> str:
    """The host CPU's model name (``/proc/cpuinfo``), or what :mod:`platform` knows."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown cpu"


def _threads() -> tuple[int, str]:
    """Usable cores, and the BLAS library's thread count where threadpoolctl (a scikit-learn dependency)
    can tell it."""
    cores = available_cores()
    blas = ""
    try:
        from threadpoolctl import threadpool_info

        for info in threadpool_info():
            if info.get("user_api") == "blas":
                blas = f"{info.get('internal_api', 'blas')} {info.get('version') or ''}".strip()
                blas += f", {info.get('num_threads')} threads"
                break
    except Exception:  # only informative: any failure leaves it empty
        blas = ""
    return cores, blas


def _available_memory() -> int:
    """Bytes of memory available now (0 when unknown)."""
    try:
        with open("/proc/meminfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return int(os.sysconf("SC_AVPHYS_PAGES")) * int(os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError, AttributeError):
        return 0


class _Buffers:
    """Input and output buffers of a network's layers, shared by shape and dtype.

    A network's layers each state their own input shape and do not chain, so every layer is given an
    input buffer of its shape (random, read-only) and writes its own output buffer; layers of equal shapes
    share them, which bounds memory to the distinct shapes of the network. A layer therefore never reads
    the previous layer's output: data do not flow through the network, the work does.
    """

    def __init__(self, rng: np.random.Generator) -> None:
        self.rng = rng
        self.inputs: dict[tuple[tuple[int, ...], str], Array] = {}
        self.outputs: dict[tuple[tuple[int, ...], str], Array] = {}

    def input(self, shape: tuple[int, ...], dtype: np.dtype[Any], low: float = -1.0, high: float = 1.0) -> Array:
        key = (shape, dtype.str)
        if key not in self.inputs:
            self.inputs[key] = self.rng.uniform(low, high, size=shape).astype(dtype)
        return self.inputs[key]

    def output(self, shape: tuple[int, ...], dtype: np.dtype[Any]) -> Array:
        key = (shape, dtype.str)
        if key not in self.outputs:
            self.outputs[key] = np.empty(shape, dtype=dtype)
        return self.outputs[key]


class CpuPrepared(Prepared):
    """One layer (or a network: a list of layers run in order) ready to run on the host."""

    def __init__(self, layers: list[tuple[Layer, ref.Operands, Kernel]]) -> None:
        self._layers = layers

    def _call(self) -> None:
        for _, _, fn in self._layers:
            fn()

    def run(self) -> None:
        with np.errstate(over="ignore", under="ignore"):
            self._call()

    def time_calls(self, calls: int) -> float:
        """Mean milliseconds per call over ``calls`` back-to-back calls (``time.perf_counter_ns``)."""
        if calls < 1:
            raise ValueError("calls must be at least 1")
        with np.errstate(over="ignore", under="ignore"):
            start = time.perf_counter_ns()
            for _ in range(calls):
                self._call()
            elapsed = time.perf_counter_ns() - start
        return elapsed / 1e6 / calls

    def synchronize(self) -> None:
        """Nothing to wait for: host calls are synchronous."""

    def check(self) -> None:
        """Run each layer once and compare its first and last batch item (and head, for attention and batched
        matmul) with the reference (:func:`reference.subset`).

        Only two batch items are compared: the reference is slow, and a batch item's result does not
        depend on the others (an indexing error shows in the last item).
        """
        for layer, ops, fn in self._layers:
            with np.errstate(over="ignore", under="ignore"):
                out = fn()
            small, sliced, actual = ref.subset(layer, ops, out)
            ref.assert_close(actual, ref.forward(small, sliced), layer)

    def outputs(self) -> list[tuple[Layer, ref.Operands, Array]]:
        """Run each layer once; its layer, operands and output (for tests and debugging). In a network,
        layers of equal output shapes share one buffer: only the last of them keeps its output."""
        out = []
        with np.errstate(over="ignore", under="ignore"):
            for layer, ops, fn in self._layers:
                out.append((layer, ops, fn()))
        return out

    def release(self) -> None:
        self._layers = []


@dataclass
class CpuExecutor(Executor):
    """Runs layers with NumPy on the host (``device`` must be ``cpu``).

    Attributes
    ----------
    seed
        Seed of the random inputs and weights.
    workspace_bytes
        Largest im2col buffer of a conv2d: larger batches are processed in chunks.
    """

    seed: int = 0
    workspace_bytes: int = 64 << 20

    def __post_init__(self) -> None:
        self.name = "cpu"
        if self.device != "cpu":
            raise ExecutorUnavailable(f"the cpu executor runs on the host, not on {self.device}: use --device cpu")
        if self.dtype not in _DTYPES:
            raise ExecutorUnavailable(f"the cpu executor runs fp32 and fp16, not {self.dtype}")
        self._rng = np.random.default_rng(self.seed)

    def context(self) -> Mapping[str, Any]:
        """``executor``, ``device``, ``gpu`` (here: the CPU model, the device the data describe),
        ``cpu_model``, ``threads`` (usable cores), ``blas`` and ``numpy`` versions."""
        cores, blas = _threads()
        model = cpu_model()
        return {
            "executor": self.name,
            "device": self.device,
            "gpu": model,
            "cpu_model": model,
            "threads": cores,
            "blas": blas,
            "numpy": np.__version__,
        }

    def supports(self, layer: Layer) -> bool:
        return unsupported(layer, self.name, _DTYPES) is None

    def variants(self, layer: Layer) -> list[Variant]:
        return [Variant(mode="eager", impl="im2col" if layer.type == "conv2d" else "")]

    def network_variants(self, arch: Architecture) -> list[Variant]:
        return [Variant(mode="eager", impl="im2col")]  # a network's convolutions run as im2col GEMMs too

    def prepare(self, layer: Layer, variant: Variant) -> Prepared:
        return self._prepare([layer], variant, None)

    def prepare_network(self, arch: Architecture, variant: Variant) -> Prepared:
        """Every layer of ``arch`` in order; see :class:`_Buffers` for how their buffers are shared."""
        return self._prepare(list(arch.layers), variant, _Buffers(self._rng))

    def _prepare(self, layers: list[Layer], variant: Variant, buffers: _Buffers | None) -> CpuPrepared:
        if variant.mode != "eager" or variant.memory_format != "contiguous":
            raise LayerFailed(f"the cpu executor has no {variant.mode}/{variant.memory_format} variant")
        for layer in layers:
            reason = unsupported(layer, self.name, _DTYPES)
            if reason is not None:
                raise LayerFailed(reason)
        need = _bytes_needed(layers, self.workspace_bytes, shared=buffers is not None)
        available = _available_memory()
        if available and need > 0.8 * available:
            raise OutOfMemory(f"needs about {need / 2**30:.1f} GiB, {available / 2**30:.1f} GiB available")
        try:
            built = [self._build(layer, buffers) for layer in layers]
        except MemoryError:
            raise OutOfMemory(f"out of host memory (about {need / 2**30:.1f} GiB needed)") from None
        return CpuPrepared(built)

    def _build(self, layer: Layer, buffers: _Buffers | None) -> tuple[Layer, ref.Operands, Kernel]:
        dt = ref.numpy_dtype(layer.dtype)
        shape = ref.output_shape(layer)
        if buffers is None or layer.type == "embedding":  # indices are the layer's own (its vocabulary)
            inputs = ref.make_inputs(layer, self._rng)
        else:
            inputs = [buffers.input(s, dt) for s in ref.input_shapes(layer)]
        out = np.empty(shape, dtype=dt) if buffers is None else buffers.output(shape, dt)
        ops = ref.Operands(inputs, ref.make_params(layer, self._rng))
        make = _KERNELS.get(layer.type)
        if make is None:
            make = _activation
        return layer, ops, make(layer, ops, out, self.workspace_bytes)


def _table_bytes(layer: Layer) -> int:
    """Weights held beyond ``layer.bytes_weights``: an embedding's whole table (its bytes count the rows read)."""
    if layer.type != "embedding":
        return 0
    return layer.params * (4 if layer.dtype == "fp32" else 2)


def _bytes_needed(layers: list[Layer], workspace: int, shared: bool) -> int:
    """Host memory a list of layers needs: operands, outputs, weights and workspaces."""
    tables = sum(_table_bytes(layer) for layer in layers)
    if shared:
        seen: set[tuple[str, tuple[int, ...]]] = set()
        total = 0
        for layer in layers:
            size = 4 if layer.dtype == "fp32" else 2
            for shape in ref.input_shapes(layer):
                if ("in", shape) not in seen:
                    seen.add(("in", shape))
                    total += math.prod(shape) * size
            if ("out", layer.out_shape) not in seen:
                seen.add(("out", layer.out_shape))
                total += math.prod(layer.out_shape) * size
            total += layer.bytes_weights
        return total + tables + workspace
    return sum(layer.bytes_moved for layer in layers) + tables + workspace


# -- kernels: each returns a function that computes the layer into `out` and returns it --------------


def _conv2d(layer: Layer, ops: ref.Operands, out: Array, workspace: int) -> Kernel:
    x = ops.inputs[0]
    n, c, h, w = x.shape
    oc, g = layer.out_channels, layer.groups
    cg, og = c // g, oc // g
    (kh, kw), (sh, sw), (ph, pw), (dh, dw) = layer.kernel, layer.stride, layer.padding, layer.dilation
    oh, ow = layer.out_h, layer.out_w
    acc = np.dtype(np.float32) if x.dtype == np.float16 else x.dtype
    k = cg * kh * kw
    # weight (oc, cg, kh, kw) -> per group (k, og), the right operand of the GEMM
    wmat = np.ascontiguousarray(ops.params["weight"].reshape(g, og, k).transpose(0, 2, 1), dtype=acc)
    bias = ops.params["bias"].astype(acc).reshape(g, 1, og) if "bias" in ops.params else None
    padded = np.zeros((n, c, h + 2 * ph, w + 2 * pw), dtype=x.dtype) if ph or pw else None
    per_item = oh * ow * g * k * acc.itemsize
    chunk = max(1, min(n, workspace // max(per_item, 1)))
    cols = np.empty((g, chunk, oh, ow, cg, kh, kw), dtype=acc)
    res = np.empty((g, chunk * oh * ow, og), dtype=acc)
    out_groups = out.reshape(n, g, og, oh, ow)
    span_h, span_w = dh * (kh - 1) + 1, dw * (kw - 1) + 1

    def fn() -> Array:
        src = x
        if padded is not None:
            padded[:, :, ph : ph + h, pw : pw + w] = x
            src = padded
        # (n, c, H', W', span_h, span_w) -> strided and dilated taps -> (n, c, oh, ow, kh, kw)
        windows = sliding_window_view(src, (span_h, span_w), axis=(2, 3))[:, :, ::sh, ::sw, ::dh, ::dw]
        windows = windows[:, :, :oh, :ow].reshape(n, g, cg, oh, ow, kh, kw)
        for start in range(0, n, chunk):
            m = min(chunk, n - start)
            col = cols[:, :m]
            np.copyto(col, windows[start : start + m].transpose(1, 0, 3, 4, 2, 5, 6))  # im2col
            r = res[:, : m * oh * ow]
            np.matmul(col.reshape(g, m * oh * ow, k), wmat, out=r)
            if bias is not None:
                r += bias
            np.copyto(out_groups[start : start + m], r.reshape(g, m, oh, ow, og).transpose(1, 0, 4, 2, 3))
        return out

    return fn


def _linear(layer: Layer, ops: ref.Operands, out: Array, workspace: int) -> Kernel:
    # On tokens, [N, tokens, in] is one [N * tokens, in] GEMM (as PyTorch runs it), not a batch of small ones.
    x = ops.inputs[0].reshape(-1, layer.in_features)
    rows = out.reshape(-1, layer.out_features)
    acc = np.dtype(np.float32) if x.dtype == np.float16 else x.dtype
    wt = np.ascontiguousarray(ops.params["weight"].T, dtype=acc)
    bias = ops.params["bias"].astype(acc) if "bias" in ops.params else None
    if acc == x.dtype:

        def fn() -> Array:
            np.matmul(x, wt, out=rows)
            if bias is not None:
                np.add(rows, bias, out=rows)
            return out

        return fn
    res = np.empty(rows.shape, dtype=acc)

    def fn16() -> Array:
        np.matmul(x.astype(acc), wt, out=res)
        if bias is not None:
            np.add(res, bias, out=res)
        np.copyto(rows, res, casting="same_kind")
        return out

    return fn16


def _pool_padding(layer: Layer, dilation: tuple[int, int]) -> tuple[int, int]:
    """Padded input size along each axis: the padding, and on the right and bottom as far as the last
    window reaches (further than the padding when a ceil-mode window overhangs)."""
    sizes = []
    for size, k, s, p, d, o in zip(
        (layer.in_h, layer.in_w), layer.kernel, layer.stride, layer.padding, dilation, (layer.out_h, layer.out_w),
        strict=True,
    ):
        sizes.append(max(size + 2 * p, (o - 1) * s + d * (k - 1) + 1))
    return sizes[0], sizes[1]


def _taps(layer: Layer, dilation: tuple[int, int]) -> list[tuple[slice, slice]]:
    """For each kernel tap, the strided slice of the padded input that it reads for every output."""
    (kh, kw), (sh, sw), (dh, dw) = layer.kernel, layer.stride, dilation
    oh, ow = layer.out_h, layer.out_w
    return [
        (slice(i * dh, i * dh + sh * (oh - 1) + 1, sh), slice(j * dw, j * dw + sw * (ow - 1) + 1, sw))
        for i in range(kh)
        for j in range(kw)
    ]


def _maxpool2d(layer: Layer, ops: ref.Operands, out: Array, workspace: int) -> Kernel:
    x = ops.inputs[0]
    n, c, h, w = x.shape
    ph, pw = layer.padding
    dilation = layer.dilation
    full_h, full_w = _pool_padding(layer, dilation)
    padded = None
    if (full_h, full_w) != (h, w):
        padded = np.full((n, c, full_h, full_w), -np.inf, dtype=x.dtype)
    (first_h, first_w), *rest = _taps(layer, dilation)

    def fn() -> Array:
        src = x
        if padded is not None:
            padded[:, :, ph : ph + h, pw : pw + w] = x
            src = padded
        np.copyto(out, src[:, :, first_h, first_w])
        for th, tw in rest:
            np.maximum(out, src[:, :, th, tw], out=out)
        return out

    return fn


def _avgpool2d(layer: Layer, ops: ref.Operands, out: Array, workspace: int) -> Kernel:
    x = ops.inputs[0]
    n, c, h, w = x.shape
    ph, pw = layer.padding
    full_h, full_w = _pool_padding(layer, (1, 1))
    taps = _taps(layer, (1, 1))
    # PyTorch's count_include_pad divisor: the window's elements inside the input or its padding, found by
    # sum-pooling a mask that is 1 there and 0 where a ceil-mode window overhangs the padded input.
    mask = np.zeros((full_h, full_w), dtype=np.float64)
    mask[: h + 2 * ph, : w + 2 * pw] = 1.0
    divisor = sum(mask[th, tw] for th, tw in taps)
    scale = (1.0 / np.asarray(divisor)).astype(_ACC)
    padded = np.zeros((n, c, full_h, full_w), dtype=x.dtype) if (full_h, full_w) != (h, w) else None
    total = np.empty(out.shape, dtype=_ACC)

    def fn() -> Array:
        src = x
        if padded is not None:
            padded[:, :, ph : ph + h, pw : pw + w] = x
            src = padded
        total.fill(0)
        for th, tw in taps:
            np.add(total, src[:, :, th, tw], out=total)
        np.multiply(total, scale, out=out, casting="same_kind")
        return out

    return fn


def _adaptive_avgpool2d(layer: Layer, ops: ref.Operands, out: Array, workspace: int) -> Kernel:
    x = ops.inputs[0]
    n, c, h, w = x.shape
    oh, ow = layer.out_h, layer.out_w
    if (oh, ow) == (1, 1):

        def global_pool() -> Array:
            np.mean(x, axis=(2, 3), keepdims=True, dtype=_ACC, out=out)
            return out

        return global_pool
    # Integral image: window sums from four corners; windows [floor(i*H/o), ceil((i+1)*H/o)).
    r0 = np.array([(i * h) // oh for i in range(oh)])
    r1 = np.array([-(-(i + 1) * h // oh) for i in range(oh)])
    c0 = np.array([(j * w) // ow for j in range(ow)])
    c1 = np.array([-(-(j + 1) * w // ow) for j in range(ow)])
    area = np.outer(r1 - r0, c1 - c0).astype(np.float64)
    integral = np.zeros((n, c, h + 1, w + 1), dtype=np.float64)

    def fn() -> Array:
        np.cumsum(x, axis=2, dtype=np.float64, out=integral[:, :, 1:, 1:])
        np.cumsum(integral[:, :, 1:, 1:], axis=3, out=integral[:, :, 1:, 1:])
        s = (
            integral[:, :, r1][:, :, :, c1]
            - integral[:, :, r0][:, :, :, c1]
            - integral[:, :, r1][:, :, :, c0]
            + integral[:, :, r0][:, :, :, c0]
        )
        np.divide(s, area, out=out, casting="same_kind")
        return out

    return fn


def _batchnorm2d(layer: Layer, ops: ref.Operands, out: Array, workspace: int) -> Kernel:
    x = ops.inputs[0]
    scale64, shift64 = ref.fold_batchnorm(ops.params)
    scale = scale64.astype(x.dtype).reshape(1, -1, 1, 1)
    shift = shift64.astype(x.dtype).reshape(1, -1, 1, 1)

    def fn() -> Array:
        np.multiply(x, scale, out=out)
        np.add(out, shift, out=out)
        return out

    return fn


def _activation(layer: Layer, ops: ref.Operands, out: Array, workspace: int) -> Kernel:
    x = ops.inputs[0]
    t = layer.type
    if t == "relu":

        def relu() -> Array:
            return np.maximum(x, 0, out=out)

        return relu
    if t == "relu6":

        def relu6() -> Array:
            return np.clip(x, 0, 6, out=out)

        return relu6
    if t == "hardsigmoid":

        def hardsigmoid() -> Array:
            np.add(x, 3, out=out)
            np.clip(out, 0, 6, out=out)
            np.divide(out, 6, out=out)
            return out

        return hardsigmoid
    if t == "tanh":

        def tanh() -> Array:
            return np.tanh(x, out=out)

        return tanh
    tmp = np.empty(x.shape, dtype=_ACC if t == "gelu" else x.dtype)
    if t == "sigmoid":

        def sigmoid() -> Array:
            np.negative(x, out=out)
            np.exp(out, out=out)
            np.add(out, 1, out=out)
            return np.reciprocal(out, out=out)

        return sigmoid
    if t == "silu":

        def silu() -> Array:
            np.negative(x, out=tmp)
            np.exp(tmp, out=tmp)
            np.add(tmp, 1, out=tmp)
            np.divide(x, tmp, out=out)
            return out

        return silu
    if t == "hardswish":

        def hardswish() -> Array:
            np.add(x, 3, out=tmp)
            np.clip(tmp, 0, 6, out=tmp)
            np.divide(tmp, 6, out=tmp)
            np.multiply(x, tmp, out=out)
            return out

        return hardswish
    if t == "gelu" and layer.approximate:
        cube = np.empty(x.shape, dtype=_ACC)
        beta, kappa = math.sqrt(2 / math.pi), 0.044715

        def gelu_tanh() -> Array:  # 0.5 x (1 + tanh(beta (x + kappa x^3)))
            np.multiply(x, x, out=cube, dtype=_ACC)
            np.multiply(cube, x, out=cube)
            np.multiply(cube, kappa, out=cube)
            np.add(cube, x, out=tmp)
            np.multiply(tmp, beta, out=tmp)
            np.tanh(tmp, out=tmp)
            np.add(tmp, 1, out=tmp)
            np.multiply(tmp, 0.5, out=tmp)
            np.multiply(x, tmp, out=out, casting="same_kind")
            return out

        return gelu_tanh
    if t == "gelu":
        from scipy.special import erf

        def gelu() -> Array:
            np.multiply(x, 1 / math.sqrt(2), out=tmp)
            erf(tmp, out=tmp)
            np.add(tmp, 1, out=tmp)
            np.multiply(tmp, 0.5, out=tmp)
            np.multiply(x, tmp, out=out, casting="same_kind")
            return out

        return gelu
    raise LayerFailed(f"the cpu executor has no kernel for {t} layers")  # pragma: no cover


def _elementwise(op: Any) -> Callable[[Layer, ref.Operands, Array, int], Kernel]:
    def make(layer: Layer, ops: ref.Operands, out: Array, workspace: int) -> Kernel:
        first, *others = ops.inputs

        def fn() -> Array:
            op(first, others[0], out=out)
            for other in others[1:]:
                op(out, other, out=out)
            return out

        return fn

    return make


def _concat(layer: Layer, ops: ref.Operands, out: Array, workspace: int) -> Kernel:
    inputs = ops.inputs

    def fn() -> Array:
        return np.concatenate(inputs, axis=1, out=out)

    return fn


def _softmax(layer: Layer, ops: ref.Operands, out: Array, workspace: int) -> Kernel:
    x = ops.inputs[0]
    axis = 1 if layer.channels_first else 3  # N x C x H x W, or N x H x W x C (over the contiguous C)
    reduced = list(x.shape)
    reduced[axis] = 1
    peak = np.empty(reduced, dtype=x.dtype)
    total = np.empty(reduced, dtype=_ACC)

    def fn() -> Array:
        np.max(x, axis=axis, keepdims=True, out=peak)
        np.subtract(x, peak, out=out)
        np.exp(out, out=out)
        np.sum(out, axis=axis, keepdims=True, dtype=_ACC, out=total)
        np.divide(out, total, out=out, casting="same_kind")
        return out

    return fn


def _flatten(layer: Layer, ops: ref.Operands, out: Array, workspace: int) -> Kernel:
    x = ops.inputs[0]

    def fn() -> Array:
        return x.reshape(x.shape[0], -1)  # a view, as torch.flatten of a contiguous tensor

    return fn


def _channel_shuffle(layer: Layer, ops: ref.Operands, out: Array, workspace: int) -> Kernel:
    x = ops.inputs[0]
    n, c, h, w = x.shape
    g = layer.groups
    src = x.reshape(n, g, c // g, h, w).transpose(0, 2, 1, 3, 4)
    dst = out.reshape(n, c // g, g, h, w)

    def fn() -> Array:
        np.copyto(dst, src)
        return out

    return fn


def _acc(dtype: np.dtype[Any]) -> np.dtype[Any]:
    """What a layer of this storage type computes in: fp32 for fp16 (as GPU kernels), else the type itself."""
    return _ACC if dtype == np.float16 else dtype


def _layernorm(layer: Layer, ops: ref.Operands, out: Array, workspace: int) -> Kernel:
    x = ops.inputs[0]
    acc = _acc(x.dtype)
    axis = 1 if layer.channels_first else 2  # N x D x tokens (strided D), or N x tokens x D
    shape = [1, 1, 1]
    shape[axis] = layer.in_features
    weight = ops.params["weight"].astype(acc).reshape(shape)
    bias = ops.params["bias"].astype(acc).reshape(shape)
    reduced = list(x.shape)
    reduced[axis] = 1
    mean = np.empty(reduced, dtype=acc)
    rstd = np.empty(reduced, dtype=acc)
    centered = np.empty(x.shape, dtype=acc)
    square = np.empty(x.shape, dtype=acc)

    def fn() -> Array:
        np.mean(x, axis=axis, keepdims=True, dtype=acc, out=mean)
        np.subtract(x, mean, out=centered, dtype=acc)
        np.multiply(centered, centered, out=square)
        np.mean(square, axis=axis, keepdims=True, out=rstd)  # the biased variance, as PyTorch
        np.add(rstd, ref.LN_EPS, out=rstd)
        np.sqrt(rstd, out=rstd)
        np.reciprocal(rstd, out=rstd)
        np.multiply(centered, rstd, out=centered)
        np.multiply(centered, weight, out=centered)
        np.add(centered, bias, out=out, casting="same_kind")
        return out

    return fn


def _matmul(layer: Layer, ops: ref.Operands, out: Array, workspace: int) -> Kernel:
    a, b = ops.inputs
    acc = _acc(a.dtype)
    if layer.broadcast:
        # one shared K x N matrix: all the rows of every batch (and head) in one GEMM
        a = a.reshape(-1, layer.in_features)
        target = out.reshape(-1, layer.out_features)
    else:
        target = out
    if acc == a.dtype:

        def fn() -> Array:
            np.matmul(a, b, out=target)
            return out

        return fn
    a32 = np.empty(a.shape, dtype=acc)
    b32 = np.empty(b.shape, dtype=acc)
    res = np.empty(target.shape, dtype=acc)

    def fn16() -> Array:
        np.copyto(a32, a)
        np.copyto(b32, b)
        np.matmul(a32, b32, out=res)
        np.copyto(target, res, casting="same_kind")
        return out

    return fn16


def _attention(layer: Layer, ops: ref.Operands, out: Array, workspace: int) -> Kernel:
    """Blocked attention: for a block of (batch, head) pairs and of queries, the scores (at most
    ``workspace`` bytes), the causal mask added, a softmax along the keys, then the product with V."""
    q, k, v = ops.inputs
    acc = _acc(q.dtype)
    n, heads, tokens, d = q.shape
    kv = k.shape[2]
    pairs = n * heads
    qs, ks, vs = (t.reshape(pairs, -1, d) for t in (q, k, v))
    o = out.reshape(pairs, tokens, d)
    # The scale folded into a float32 copy of Q (made each call, as the fp16 layers' conversions are).
    q32 = np.empty(qs.shape, dtype=acc)
    k32 = ks if ks.dtype == acc else np.empty(ks.shape, dtype=acc)
    v32 = vs if vs.dtype == acc else np.empty(vs.shape, dtype=acc)
    scale = 1.0 / math.sqrt(d)
    per_row = kv * acc.itemsize
    rows = max(1, workspace // per_row)  # (pair, query) rows of scores per block
    block_q = min(tokens, rows)
    block_p = max(1, min(pairs, rows // block_q))
    scores = np.empty((block_p, block_q, kv), dtype=acc)
    peak = np.empty((block_p, block_q, 1), dtype=acc)
    total = np.empty((block_p, block_q, 1), dtype=acc)
    res = np.empty((block_p, block_q, d), dtype=acc)
    # top-left causal mask: query i sees keys 0..i (0 there, -inf beyond)
    mask = np.where(np.arange(kv)[None, :] > np.arange(tokens)[:, None], -np.inf, 0.0).astype(acc)
    causal = bool(layer.causal)

    def fn() -> Array:
        np.multiply(qs, scale, out=q32, dtype=acc)
        if k32 is not ks:
            np.copyto(k32, ks)
            np.copyto(v32, vs)
        kt = k32.transpose(0, 2, 1)
        for p0 in range(0, pairs, block_p):
            p1 = min(pairs, p0 + block_p)
            for t0 in range(0, tokens, block_q):
                t1 = min(tokens, t0 + block_q)
                s = scores[: p1 - p0, : t1 - t0]
                np.matmul(q32[p0:p1, t0:t1], kt[p0:p1], out=s)
                if causal:
                    np.add(s, mask[t0:t1], out=s)
                m = peak[: p1 - p0, : t1 - t0]
                np.max(s, axis=2, keepdims=True, out=m)
                np.subtract(s, m, out=s)
                np.exp(s, out=s)
                z = total[: p1 - p0, : t1 - t0]
                np.sum(s, axis=2, keepdims=True, out=z)
                r = res[: p1 - p0, : t1 - t0]
                np.matmul(s, v32[p0:p1], out=r)
                np.divide(r, z, out=o[p0:p1, t0:t1], casting="same_kind")
        return out

    return fn


def _embedding(layer: Layer, ops: ref.Operands, out: Array, workspace: int) -> Kernel:
    (indices,) = ops.inputs
    table = ops.params["weight"]
    flat = indices.reshape(-1)
    rows = out.reshape(-1, layer.out_features)

    def fn() -> Array:
        np.take(table, flat, axis=0, out=rows)  # a gather of rows, as F.embedding
        return out

    return fn


def _upsample(layer: Layer, ops: ref.Operands, out: Array, workspace: int) -> Kernel:
    x = ops.inputs[0]
    n, c, h, w = x.shape
    oh, ow = layer.out_h, layer.out_w
    if not layer.interpolation:
        rows_src = ref.nearest_source_index(oh, h)
        cols_src = ref.nearest_source_index(ow, w)
        rows = np.empty((n, c, oh, w), dtype=x.dtype)

        def nearest() -> Array:
            np.take(x, rows_src, axis=2, out=rows)
            np.take(rows, cols_src, axis=3, out=out)
            return out

        return nearest
    acc = _acc(x.dtype)

    def taps(size: int, out_size: int) -> tuple[Array, Array, Array]:
        # align_corners=False: source (i + 0.5) * size / out_size - 0.5, clamped at 0; upper tap clamped too
        src = np.maximum((np.arange(out_size, dtype=np.float64) + 0.5) * (size / out_size) - 0.5, 0.0)
        lo = np.floor(src).astype(np.int64)
        hi = np.minimum(lo + 1, size - 1)
        return lo, hi, (src - lo).astype(acc)

    h0, h1, lh = taps(h, oh)
    w0, w1, lw = taps(w, ow)
    lh4, lw4 = lh.reshape(1, 1, oh, 1), lw.reshape(1, 1, 1, ow)
    upper = np.empty((n, c, oh, w), dtype=acc)
    rows_b = np.empty((n, c, oh, w), dtype=acc)
    left = np.empty((n, c, oh, ow), dtype=acc)
    right = np.empty((n, c, oh, ow), dtype=acc)
    wide = None if acc == x.dtype else np.empty(x.shape, dtype=acc)

    def bilinear() -> Array:
        src = x
        if wide is not None:
            np.copyto(wide, x)
            src = wide
        # rows: lower + (upper - lower) * lambda; then the same along the columns
        np.take(src, h0, axis=2, out=rows_b)
        np.take(src, h1, axis=2, out=upper)
        np.subtract(upper, rows_b, out=upper)
        np.multiply(upper, lh4, out=upper)
        np.add(rows_b, upper, out=rows_b)
        np.take(rows_b, w0, axis=3, out=left)
        np.take(rows_b, w1, axis=3, out=right)
        np.subtract(right, left, out=right)
        np.multiply(right, lw4, out=right)
        np.add(left, right, out=out, casting="same_kind")
        return out

    return bilinear


def _conv_transpose2d(layer: Layer, ops: ref.Operands, out: Array, workspace: int) -> Kernel:
    """Per group, the GEMM ``W^T x`` gives every input position's contribution to each (out channel, tap);
    col2im then adds each tap's plane to a strided slice of a canvas that starts at ``-padding``."""
    x = ops.inputs[0]
    n, c, h, w = x.shape
    g = layer.groups
    cg, og = c // g, layer.out_channels // g
    (kh, kw), (sh, sw), (ph, pw), (dh, dw) = layer.kernel, layer.stride, layer.padding, layer.dilation
    oh, ow = layer.out_h, layer.out_w
    acc = _acc(x.dtype)
    # weight (c, og, kh, kw) -> per group (og * kh * kw, cg), the left operand
    wmat = np.ascontiguousarray(
        ops.params["weight"].reshape(g, cg, og * kh * kw).transpose(0, 2, 1), dtype=acc
    )
    bias = ops.params["bias"].astype(acc).reshape(1, -1, 1, 1) if "bias" in ops.params else None
    full_h = max(ph + oh, (h - 1) * sh + dh * (kh - 1) + 1)
    full_w = max(pw + ow, (w - 1) * sw + dw * (kw - 1) + 1)
    per_item = (g * og * kh * kw * h * w + layer.out_channels * full_h * full_w) * acc.itemsize
    chunk = max(1, min(n, workspace // max(per_item, 1)))
    cols = np.empty((chunk, g, og * kh * kw, h * w), dtype=acc)
    canvas = np.empty((chunk, layer.out_channels, full_h, full_w), dtype=acc)
    xg = x.reshape(n, g, cg, h * w)

    def fn() -> Array:
        for start in range(0, n, chunk):
            m = min(chunk, n - start)
            col = cols[:m]
            np.matmul(wmat, xg[start : start + m], out=col, dtype=acc)
            taps = col.reshape(m, g * og, kh, kw, h, w)  # channel o of group j is g * og + o: (g, og) flattens
            canvas_m = canvas[:m]
            canvas_m.fill(0)
            for u in range(kh):
                rows = slice(u * dh, u * dh + sh * (h - 1) + 1, sh)
                for v in range(kw):
                    canvas_m[:, :, rows, v * dw : v * dw + sw * (w - 1) + 1 : sw] += taps[:, :, u, v]
            cropped = canvas_m[:, :, ph : ph + oh, pw : pw + ow]
            if bias is not None:
                cropped += bias
            np.copyto(out[start : start + m], cropped, casting="same_kind")
        return out

    return fn


_KERNELS: dict[str, Callable[[Layer, ref.Operands, Array, int], Kernel]] = {
    "conv2d": _conv2d,
    "linear": _linear,
    "maxpool2d": _maxpool2d,
    "avgpool2d": _avgpool2d,
    "adaptive_avgpool2d": _adaptive_avgpool2d,
    "batchnorm2d": _batchnorm2d,
    "add": _elementwise(np.add),
    "mul": _elementwise(np.multiply),
    "concat": _concat,
    "softmax": _softmax,
    "flatten": _flatten,
    "channel_shuffle": _channel_shuffle,
    "layernorm": _layernorm,
    "matmul": _matmul,
    "attention": _attention,
    "embedding": _embedding,
    "upsample": _upsample,
    "conv_transpose2d": _conv_transpose2d,
}
