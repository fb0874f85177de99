"""Reference implementations of every layer type: plain NumPy, correctness over speed.

Every executor's output is compared with these before a layer is ever timed (``Prepared.check``), and the
tests compare them with explicit loops. They follow PyTorch's inference semantics: NCHW tensors, conv
weights ``(out_channels, in_channels / groups, kh, kw)``, linear weights ``(out_features, in_features)``,
pooling windows and divisors as ``torch.nn.functional`` computes them (``count_include_pad=True``, PyTorch's
default, for average pooling), batchnorm with ``eps = 1e-5``, exact (erf) GELU, softmax over channels.

Computation is in float64 on the given values, so an fp16 executor is compared with the exact result of its
own fp16 inputs.

The usual entry points for an executor::

    ops = make_operands(layer, np.random.default_rng(0))   # inputs and weights, in the layer's dtype
    expected = forward(layer, ops)                          # float64
    assert_close(actual, expected, layer)                   # AssertionError naming the worst element

Operand conventions (what :func:`make_operands` returns, and what :func:`forward` reads):

- ``inputs``: the operands, ``(N, C, H, W)`` (``(N, in_features)`` for linear). add and mul have
  ``layer.inputs`` operands, those after the first ``(N, C, 1, 1)`` when ``layer.broadcast``; concat has
  ``layer.inputs`` operands whose channels :func:`concat_channels` gives (they add up to ``in_channels``).
- ``params``: conv2d and linear ``weight`` and, with ``bias``, ``bias``; batchnorm2d ``weight``, ``bias``,
  ``running_mean``, ``running_var``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from ..layers import Layer

__all__ = [
    "ACTIVATIONS",
    "BN_EPS",
    "Operands",
    "activation",
    "adaptive_avg_pool2d",
    "add",
    "assert_close",
    "avg_pool2d",
    "batch_norm",
    "channel_shuffle",
    "concat",
    "concat_channels",
    "conv2d",
    "flatten",
    "forward",
    "input_shapes",
    "linear",
    "make_inputs",
    "make_operands",
    "make_params",
    "max_pool2d",
    "mul",
    "numpy_dtype",
    "pool_output_size",
    "softmax",
    "tolerance",
]

Array = npt.NDArray[np.floating]
F64 = npt.NDArray[np.float64]

BN_EPS = 1e-5
ACTIVATIONS = ("relu", "relu6", "sigmoid", "hardsigmoid", "silu", "hardswish", "gelu")


def numpy_dtype(dtype: str) -> np.dtype[np.floating]:
    """The NumPy dtype of a layer dtype name; bf16 has none in NumPy (``ValueError``)."""
    if dtype == "fp32":
        return np.dtype(np.float32)
    if dtype == "fp16":
        return np.dtype(np.float16)
    raise ValueError(f"NumPy has no {dtype} type")


def _f64(x: npt.ArrayLike) -> F64:
    return np.asarray(x, dtype=np.float64)


def pool_output_size(size: int, kernel: int, stride: int, padding: int, dilation: int, ceil_mode: bool) -> int:
    """PyTorch's output size of a convolution or pooling window along one axis (0: no output)."""
    span = size + 2 * padding - dilation * (kernel - 1) - 1 + (stride - 1 if ceil_mode else 0)
    if span < 0:
        return 0
    out = span // stride + 1
    # The last window must start inside the input or its left padding.
    if ceil_mode and (out - 1) * stride >= size + padding:
        out -= 1
    return out


# -- layers ------------------------------------------------------------------------------------------


def conv2d(
    x: npt.ArrayLike,
    weight: npt.ArrayLike,
    bias: npt.ArrayLike | None = None,
    stride: tuple[int, int] = (1, 1),
    padding: tuple[int, int] = (0, 0),
    dilation: tuple[int, int] = (1, 1),
    groups: int = 1,
) -> F64:
    """2-D convolution (cross-correlation, as PyTorch): one strided slice per kernel offset, summed."""
    xd, wd = _f64(x), _f64(weight)
    n, c, h, w = xd.shape
    oc, cg, kh, kw = wd.shape
    assert c == cg * groups and oc % groups == 0
    (sh, sw), (ph, pw), (dh, dw) = stride, padding, dilation
    oh = pool_output_size(h, kh, sh, ph, dh, False)
    ow = pool_output_size(w, kw, sw, pw, dw, False)
    xp = np.zeros((n, c, h + 2 * ph, w + 2 * pw))
    xp[:, :, ph : ph + h, pw : pw + w] = xd
    og = oc // groups
    out = np.zeros((n, oc, oh, ow))
    for g in range(groups):
        xg = xp[:, g * cg : (g + 1) * cg]
        wg = wd[g * og : (g + 1) * og]
        for i in range(kh):
            for j in range(kw):
                patch = xg[:, :, i * dh : i * dh + sh * (oh - 1) + 1 : sh, j * dw : j * dw + sw * (ow - 1) + 1 : sw]
                out[:, g * og : (g + 1) * og] += np.einsum("nchw,oc->nohw", patch, wg[:, :, i, j])
    if bias is not None:
        out += _f64(bias)[None, :, None, None]
    return out


def linear(x: npt.ArrayLike, weight: npt.ArrayLike, bias: npt.ArrayLike | None = None) -> F64:
    """``x @ weight.T + bias``, weight ``(out_features, in_features)`` as PyTorch."""
    out = _f64(x) @ _f64(weight).T
    if bias is not None:
        out = out + _f64(bias)
    return out


def _padded(
    x: F64,
    kernel: tuple[int, int],
    stride: tuple[int, int],
    padding: tuple[int, int],
    dilation: tuple[int, int],
    out: tuple[int, int],
    fill: float,
) -> F64:
    """``x`` padded by ``padding`` on the left and top, and on the right and bottom as far as the last
    window reaches (more than ``padding`` when a ceil-mode window overhangs)."""
    n, c, h, w = x.shape
    need_h = (out[0] - 1) * stride[0] + (kernel[0] - 1) * dilation[0] + 1
    need_w = (out[1] - 1) * stride[1] + (kernel[1] - 1) * dilation[1] + 1
    xp = np.full((n, c, max(need_h, h + 2 * padding[0]), max(need_w, w + 2 * padding[1])), fill)
    xp[:, :, padding[0] : padding[0] + h, padding[1] : padding[1] + w] = x
    return xp


def max_pool2d(
    x: npt.ArrayLike,
    kernel: tuple[int, int],
    stride: tuple[int, int],
    padding: tuple[int, int] = (0, 0),
    dilation: tuple[int, int] = (1, 1),
    ceil_mode: bool = False,
) -> F64:
    """Max pooling; padding and window overhang (ceil mode) never win, as in PyTorch."""
    xd = _f64(x)
    n, c, h, w = xd.shape
    oh = pool_output_size(h, kernel[0], stride[0], padding[0], dilation[0], ceil_mode)
    ow = pool_output_size(w, kernel[1], stride[1], padding[1], dilation[1], ceil_mode)
    xp = _padded(xd, kernel, stride, padding, dilation, (oh, ow), -np.inf)
    out = np.full((n, c, oh, ow), -np.inf)
    for i in range(kernel[0]):
        for j in range(kernel[1]):
            a, b = i * dilation[0], j * dilation[1]
            out = np.maximum(
                out,
                xp[:, :, a : a + stride[0] * (oh - 1) + 1 : stride[0], b : b + stride[1] * (ow - 1) + 1 : stride[1]],
            )
    return out


def avg_pool2d(
    x: npt.ArrayLike,
    kernel: tuple[int, int],
    stride: tuple[int, int],
    padding: tuple[int, int] = (0, 0),
    ceil_mode: bool = False,
    count_include_pad: bool = True,
) -> F64:
    """Average pooling with PyTorch's divisor.

    With ``count_include_pad`` the divisor counts the padding but not the part of a window that overhangs
    the padded input in ceil mode (PyTorch: ``min(start + k, size + pad) - start`` per axis); without
    it, only the input elements the window covers.
    """
    xd = _f64(x)
    n, c, h, w = xd.shape
    oh = pool_output_size(h, kernel[0], stride[0], padding[0], 1, ceil_mode)
    ow = pool_output_size(w, kernel[1], stride[1], padding[1], 1, ceil_mode)
    xp = _padded(xd, kernel, stride, padding, (1, 1), (oh, ow), 0.0)
    total = np.zeros((n, c, oh, ow))
    for i in range(kernel[0]):
        for j in range(kernel[1]):
            total += xp[
                :, :, i : i + stride[0] * (oh - 1) + 1 : stride[0], j : j + stride[1] * (ow - 1) + 1 : stride[1]
            ]

    def counts(size: int, k: int, s: int, p: int, n_out: int) -> npt.NDArray[np.int64]:
        start = np.arange(n_out) * s - p
        end = np.minimum(start + k, size + p)
        if count_include_pad:
            return end - start
        return np.minimum(end, size) - np.maximum(start, 0)

    divisor = np.outer(counts(h, kernel[0], stride[0], padding[0], oh), counts(w, kernel[1], stride[1], padding[1], ow))
    return np.asarray(total / divisor, dtype=np.float64)


def adaptive_avg_pool2d(x: npt.ArrayLike, out_size: tuple[int, int]) -> F64:
    """Adaptive average pooling with PyTorch's window bounds ``[floor(i*H/o), ceil((i+1)*H/o))``."""
    xd = _f64(x)
    n, c, h, w = xd.shape
    oh, ow = out_size
    out = np.empty((n, c, oh, ow))
    for i in range(oh):
        a0, a1 = (i * h) // oh, -((-(i + 1) * h) // oh)
        for j in range(ow):
            b0, b1 = (j * w) // ow, -((-(j + 1) * w) // ow)
            out[:, :, i, j] = xd[:, :, a0:a1, b0:b1].mean(axis=(2, 3))
    return out


def fold_batchnorm(params: Mapping[str, np.ndarray], eps: float = BN_EPS) -> tuple[np.ndarray, np.ndarray]:
    """Inference batchnorm as one per-channel scale and shift (float64), as the executors run it."""
    p = {k: np.asarray(v, dtype=np.float64) for k, v in params.items()}
    scale = p["weight"] / np.sqrt(p["running_var"] + eps)
    return scale, p["bias"] - p["running_mean"] * scale


def batch_norm(
    x: npt.ArrayLike,
    running_mean: npt.ArrayLike,
    running_var: npt.ArrayLike,
    weight: npt.ArrayLike,
    bias: npt.ArrayLike,
    eps: float = BN_EPS,
) -> F64:
    """Batchnorm in inference: ``(x - mean) / sqrt(var + eps) * weight + bias`` per channel."""

    def per_channel(v: npt.ArrayLike) -> F64:
        return _f64(v)[None, :, None, None]

    return (_f64(x) - per_channel(running_mean)) / np.sqrt(per_channel(running_var) + eps) * per_channel(
        weight
    ) + per_channel(bias)


def activation(name: str, x: npt.ArrayLike) -> F64:
    """One of :data:`ACTIVATIONS`, element-wise, as PyTorch defines it (GELU exact, with erf)."""
    xd = _f64(x)
    if name == "relu":
        return np.maximum(xd, 0.0)
    if name == "relu6":
        return np.clip(xd, 0.0, 6.0)
    if name == "sigmoid":
        return 1.0 / (1.0 + np.exp(-xd))
    if name == "hardsigmoid":
        return np.clip(xd + 3.0, 0.0, 6.0) / 6.0
    if name == "silu":
        return xd / (1.0 + np.exp(-xd))
    if name == "hardswish":
        return xd * np.clip(xd + 3.0, 0.0, 6.0) / 6.0
    if name == "gelu":
        erf = np.vectorize(math.erf, otypes=[np.float64])
        return np.asarray(0.5 * xd * (1.0 + erf(xd / math.sqrt(2.0))), dtype=np.float64)
    raise ValueError(f"unknown activation {name!r} (known: {', '.join(ACTIVATIONS)})")


def add(inputs: Sequence[npt.ArrayLike]) -> F64:
    """The sum of the operands (later ones may broadcast, e.g. ``(N, C, 1, 1)``)."""
    out = _f64(inputs[0]).copy()
    for other in inputs[1:]:
        out = out + _f64(other)
    return out


def mul(inputs: Sequence[npt.ArrayLike]) -> F64:
    """The product of the operands (later ones may broadcast)."""
    out = _f64(inputs[0]).copy()
    for other in inputs[1:]:
        out = out * _f64(other)
    return out


def concat_channels(in_channels: int, inputs: int) -> list[int]:
    """How a concat's ``in_channels`` (the total) are split among its operands: as evenly as possible,
    the first operands one channel larger where it does not divide."""
    base, extra = divmod(in_channels, inputs)
    return [base + (1 if i < extra else 0) for i in range(inputs)]


def concat(inputs: Sequence[npt.ArrayLike]) -> F64:
    """Concatenation along channels."""
    return np.concatenate([_f64(x) for x in inputs], axis=1)


def softmax(x: npt.ArrayLike) -> F64:
    """Softmax over channels (axis 1)."""
    xd = _f64(x)
    e = np.exp(xd - xd.max(axis=1, keepdims=True))
    return np.asarray(e / e.sum(axis=1, keepdims=True), dtype=np.float64)


def flatten(x: npt.ArrayLike) -> F64:
    """``(N, C, H, W)`` to ``(N, C*H*W)``."""
    xd = _f64(x)
    return xd.reshape(xd.shape[0], -1)


def channel_shuffle(x: npt.ArrayLike, groups: int) -> F64:
    """ShuffleNet's channel shuffle: output channel ``i * groups + g`` is input channel ``g * (C / groups) + i``."""
    xd = _f64(x)
    c = xd.shape[1]
    per = c // groups
    out = np.empty_like(xd)
    for g in range(groups):
        for i in range(per):
            out[:, i * groups + g] = xd[:, g * per + i]
    return out


# -- operands and dispatch ---------------------------------------------------------------------------


@dataclass
class Operands:
    """A layer's operands: ``inputs`` (in order) and ``params`` by name (see the module's conventions)."""

    inputs: list[Array]
    params: dict[str, Array] = field(default_factory=dict)


def input_shapes(layer: Layer) -> list[tuple[int, ...]]:
    """The shapes of a layer's operands."""
    n, c, h, w = layer.batch, layer.in_channels, layer.in_h, layer.in_w
    t = layer.type
    if t == "linear":
        return [(n, layer.in_features)]
    if t in ("add", "mul"):
        other: tuple[int, ...] = (n, c, 1, 1) if layer.broadcast else (n, c, h, w)
        return [(n, c, h, w), *([other] * (layer.inputs - 1))]
    if t == "concat":
        return [(n, part, h, w) for part in concat_channels(c, layer.inputs)]
    return [(n, c, h, w)]


def make_inputs(layer: Layer, rng: np.random.Generator, dtype: npt.DTypeLike | None = None) -> list[Array]:
    """Random inputs of a layer (see :func:`make_operands`)."""
    dt = np.dtype(dtype) if dtype is not None else numpy_dtype(layer.dtype)
    low, high = -1.0, 1.0
    if layer.type == "batchnorm2d":
        low, high = -3.0, 3.0
    elif layer.type in ("sigmoid", "silu", "gelu", "hardsigmoid", "hardswish", "relu6", "softmax"):
        # Wider inputs reach the saturated and clipped regions of these functions.
        low, high = -8.0, 8.0
    return [rng.uniform(low, high, size=s).astype(dt) for s in input_shapes(layer)]


def make_params(layer: Layer, rng: np.random.Generator, dtype: npt.DTypeLike | None = None) -> dict[str, Array]:
    """Random weights of a layer (see :func:`make_operands`); empty for layers without any."""
    dt = np.dtype(dtype) if dtype is not None else numpy_dtype(layer.dtype)

    def uniform(shape: tuple[int, ...], low: float, high: float) -> Array:
        return rng.uniform(low, high, size=shape).astype(dt)

    t = layer.type
    params: dict[str, Array] = {}
    if t == "conv2d":
        cg = layer.in_channels // layer.groups
        bound = 1.0 / math.sqrt(cg * layer.kernel_h * layer.kernel_w)
        params["weight"] = uniform((layer.out_channels, cg, layer.kernel_h, layer.kernel_w), -bound, bound)
        if layer.bias:
            params["bias"] = uniform((layer.out_channels,), -bound, bound)
    elif t == "linear":
        bound = 1.0 / math.sqrt(layer.in_features)
        params["weight"] = uniform((layer.out_features, layer.in_features), -bound, bound)
        if layer.bias:
            params["bias"] = uniform((layer.out_features,), -bound, bound)
    elif t == "batchnorm2d":
        c = layer.in_channels
        params["weight"] = uniform((c,), 0.5, 1.5)
        params["bias"] = uniform((c,), -0.5, 0.5)
        params["running_mean"] = uniform((c,), -0.5, 0.5)
        params["running_var"] = uniform((c,), 0.5, 1.5)
    return params


def make_operands(layer: Layer, rng: np.random.Generator, dtype: npt.DTypeLike | None = None) -> Operands:
    """Random inputs and weights of a layer, in its dtype (or ``dtype``).

    Inputs are uniform in [-1, 1) (batchnorm's in [-3, 3), those of saturating activations and softmax in
    [-8, 8)); weights are uniform in ``±1/sqrt(fan_in)`` (PyTorch's default initialization), so outputs
    stay of order one at any size; batchnorm's variances lie in [0.5, 1.5).
    """
    return Operands(make_inputs(layer, rng, dtype), make_params(layer, rng, dtype))


def forward(layer: Layer, ops: Operands) -> F64:
    """The reference output of a layer on its operands, float64, shaped as ``layer.out_shape``."""
    t = layer.type
    x = ops.inputs[0]
    p = ops.params
    if t == "conv2d":
        out = conv2d(x, p["weight"], p.get("bias"), layer.stride, layer.padding, layer.dilation, layer.groups)
    elif t == "linear":
        out = linear(x, p["weight"], p.get("bias"))
    elif t == "maxpool2d":
        out = max_pool2d(x, layer.kernel, layer.stride, layer.padding, layer.dilation, bool(layer.ceil_mode))
    elif t == "avgpool2d":
        out = avg_pool2d(x, layer.kernel, layer.stride, layer.padding, bool(layer.ceil_mode))
    elif t == "adaptive_avgpool2d":
        out = adaptive_avg_pool2d(x, (layer.out_h, layer.out_w))
    elif t == "batchnorm2d":
        out = batch_norm(x, p["running_mean"], p["running_var"], p["weight"], p["bias"])
    elif t in ACTIVATIONS:
        out = activation(t, x)
    elif t == "add":
        out = add(ops.inputs)
    elif t == "mul":
        out = mul(ops.inputs)
    elif t == "concat":
        out = concat(ops.inputs)
    elif t == "softmax":
        out = softmax(x)
    elif t == "flatten":
        out = flatten(x)
    elif t == "channel_shuffle":
        out = channel_shuffle(x, layer.groups)
    else:  # pragma: no cover - every type of LAYER_TYPES is handled above
        raise ValueError(f"no reference for layer type {t!r}")
    assert out.shape == layer.out_shape, (out.shape, layer.out_shape)
    return out


def _reduction(layer: Layer) -> int:
    """How many products or terms one output element sums (sets the tolerance)."""
    if layer.type == "conv2d":
        return layer.in_channels // layer.groups * layer.kernel_h * layer.kernel_w
    if layer.type == "linear":
        return layer.in_features
    # Means (pooling) and softmax's normalized sums have errors of the order of one rounding of the output.
    return 1


def tolerance(layer: Layer, dtype: str | None = None) -> tuple[float, float]:
    """``(rtol, atol)`` for comparing an executor's output with :func:`forward`.

    Scaled with the unit roundoff of the dtype and the square root of the reduction length (random
    rounding errors add up like a random walk), with a safety factor: fp32 products accumulated in fp32,
    fp16 stored in fp16 (accumulated in fp32 or better).
    """
    name = dtype or layer.dtype
    unit = 2.0**-24 if name == "fp32" else 2.0**-11 if name == "fp16" else 2.0**-8
    k = _reduction(layer)
    atol = 16 * unit * math.sqrt(k) + 4 * unit
    rtol = 8 * unit
    if name != "fp32":
        # fp16 results are rounded to fp16 once more on output; exp-based functions lose a little more.
        atol, rtol = 2 * atol + unit, 4 * rtol
    return rtol, atol


def assert_close(actual: npt.ArrayLike, expected: npt.ArrayLike, layer: Layer, dtype: str | None = None) -> None:
    """Raise ``AssertionError`` naming the layer and the worst element when the outputs differ (beyond
    :func:`tolerance`); infinities of the reference must be matched exactly, other non-finite values fail."""
    a, e = _f64(actual), _f64(expected)
    if a.shape != e.shape:
        raise AssertionError(f"{layer!r}: output shape {a.shape}, expected {e.shape}")
    rtol, atol = tolerance(layer, dtype)
    # A dilated max-pool window can lie entirely in the padding: -inf, as in PyTorch; it must match exactly.
    inf = np.isinf(e)
    if inf.any():
        if not np.array_equal(a[inf], e[inf]):
            raise AssertionError(f"{layer!r}: the output differs from the reference where that is infinite")
        a, e = np.where(inf, 0.0, a), np.where(inf, 0.0, e)
    if not np.all(np.isfinite(a)):
        raise AssertionError(f"{layer!r}: the output has {int(np.sum(~np.isfinite(a)))} non-finite values")
    err = np.abs(a - e) - (atol + rtol * np.abs(e))
    if err.size and float(err.max()) > 0:
        i = np.unravel_index(int(np.argmax(err)), err.shape)
        raise AssertionError(
            f"{layer!r}: output{list(int(v) for v in i)} = {a[i]!r}, reference {e[i]!r} "
            f"(|diff| {abs(a[i] - e[i]):.3g} > atol {atol:.3g} + rtol {rtol:.3g} x |ref|)"
        )
