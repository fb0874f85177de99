"""Reference implementations of every layer type: plain NumPy, correctness over speed.

Every executor's output is compared with these before a layer is ever timed (``Prepared.check``), and the
tests compare them with explicit loops. They follow PyTorch's inference semantics: NCHW tensors, conv
weights ``(out_channels, in_channels / groups, kh, kw)``, linear weights ``(out_features, in_features)``,
pooling windows and divisors as ``torch.nn.functional`` computes them (``count_include_pad=True``, PyTorch's
default, for average pooling), batchnorm and layernorm with ``eps = 1e-5``, GELU exact (erf) or in its tanh form
(``approximate``), softmax over channels (or the last axis), ``scaled_dot_product_attention`` with its
top-left causal mask, ``interpolate`` (nearest, bilinear without aligned corners) and ``conv_transpose2d``.

Computation is in float64 on the given values, so an fp16 executor is compared with the exact result of its
own fp16 inputs.

The usual entry points for an executor::

    ops = make_operands(layer, np.random.default_rng(0))   # inputs and weights, in the layer's dtype
    expected = forward(layer, ops)                          # float64
    assert_close(actual, expected, layer)                   # AssertionError naming the worst element

Operand conventions (what :func:`make_operands` returns, and what :func:`forward` reads):

- ``inputs``: the operands, ``(N, C, H, W)`` (``(N, in_features)`` for linear, ``(N, tokens, in_features)``
  for linear on tokens). add and mul have ``layer.inputs`` operands, those after the first ``(N, C, 1, 1)`` when
  ``layer.broadcast``; concat has ``layer.inputs`` operands whose channels :func:`concat_channels` gives (they
  add up to ``in_channels``).
- layernorm: ``(N, tokens, D)``; with ``channels_first`` ``(N, D, tokens)`` (ConvNeXt's N x C x H x W with
  the positions flattened: the normalized axis is strided). softmax with ``channels_first=0``: ``(N, H, W, C)``
  (C contiguous, normalized over the last axis).
- matmul: ``a`` ``(N, heads, M, K)`` and ``b`` ``(N, heads, K, N_out)`` (without the heads axis when
  ``heads == 1``); with ``broadcast`` ``b`` is one ``(K, N_out)`` matrix.
- attention: ``q`` ``(N, heads, tokens, head_dim)``, ``k`` and ``v`` ``(N, heads, kv_tokens, head_dim)``.
- embedding: int64 indices ``(N, tokens)`` in ``[0, in_features)`` (the first is 0 and the last
  ``in_features - 1``, so both ends of the table are read).
- ``params``: conv2d, conv_transpose2d and linear ``weight`` and, with ``bias``, ``bias`` (conv_transpose2d's
  weight is ``(in_channels, out_channels / groups, kh, kw)``, as PyTorch's); batchnorm2d ``weight``, ``bias``,
  ``running_mean``, ``running_var``; layernorm ``weight``, ``bias`` ``(D,)``; embedding ``weight``
  ``(in_features, out_features)``.

:func:`output_shape` is the output's shape in this layout (``layer.out_shape`` but for the two layouts above),
and :func:`subset` cuts a layer and its operands down to a few batch items (and heads) for a quick check.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from ..layers import Layer

__all__ = [
    "ACTIVATIONS",
    "BN_EPS",
    "LN_EPS",
    "Operands",
    "activation",
    "adaptive_avg_pool2d",
    "add",
    "assert_close",
    "attention",
    "avg_pool2d",
    "batch_norm",
    "channel_shuffle",
    "concat",
    "concat_channels",
    "conv2d",
    "conv_transpose2d",
    "embedding",
    "flatten",
    "forward",
    "input_shapes",
    "layer_norm",
    "linear",
    "make_indices",
    "make_inputs",
    "make_operands",
    "make_params",
    "matmul",
    "max_pool2d",
    "mul",
    "nearest_source_index",
    "numpy_dtype",
    "output_shape",
    "param_shapes",
    "pool_output_size",
    "softmax",
    "subset",
    "tolerance",
    "transposed_output_size",
    "upsample",
]

Array = npt.NDArray[Any]  # floating operands, and embedding's int64 indices
F64 = npt.NDArray[np.float64]

BN_EPS = 1e-5
LN_EPS = 1e-5  # torch.nn.LayerNorm's default, and torchvision's ConvNeXt LayerNorm2d's
ACTIVATIONS = ("relu", "relu6", "sigmoid", "hardsigmoid", "silu", "hardswish", "gelu", "tanh")
_GELU_TANH_BETA = math.sqrt(2.0 / math.pi)
_GELU_TANH_KAPPA = 0.044715


def numpy_dtype(dtype: str) -> np.dtype[np.floating]:
    """The NumPy dtype of a layer dtype name; bf16 and fp8 have none in NumPy (``ValueError``)."""
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


def activation(name: str, x: npt.ArrayLike, approximate: bool = False) -> F64:
    """One of :data:`ACTIVATIONS`, element-wise, as PyTorch defines it: GELU exact (with erf), or with
    ``approximate`` its tanh form ``0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))`` (``approximate="tanh"``)."""
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
    if name == "tanh":
        return np.tanh(xd)
    if name == "gelu" and approximate:
        return 0.5 * xd * (1.0 + np.tanh(_GELU_TANH_BETA * (xd + _GELU_TANH_KAPPA * xd**3)))
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


def softmax(x: npt.ArrayLike, axis: int = 1) -> F64:
    """Softmax over ``axis``: channels (1) by default, the last axis (-1) for ``channels_first=0``."""
    xd = _f64(x)
    e = np.exp(xd - xd.max(axis=axis, keepdims=True))
    return np.asarray(e / e.sum(axis=axis, keepdims=True), dtype=np.float64)


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


def layer_norm(
    x: npt.ArrayLike, weight: npt.ArrayLike, bias: npt.ArrayLike, axis: int = -1, eps: float = LN_EPS
) -> F64:
    """Layer normalization over one axis: ``(x - mean) / sqrt(var + eps) * weight + bias`` with the biased
    variance, as ``torch.nn.LayerNorm`` (``axis=-1``) and ConvNeXt's LayerNorm2d (``axis=1`` of N x C x ...)."""
    xd = np.moveaxis(_f64(x), axis, -1)
    mean = xd.mean(axis=-1, keepdims=True)
    centered = xd - mean
    var = (centered * centered).mean(axis=-1, keepdims=True)
    out = centered / np.sqrt(var + eps) * _f64(weight) + _f64(bias)
    return np.ascontiguousarray(np.moveaxis(out, -1, axis))


def matmul(a: npt.ArrayLike, b: npt.ArrayLike) -> F64:
    """``torch.matmul``: batched over the leading axes, a 2-D ``b`` broadcast to every batch."""
    return np.asarray(np.matmul(_f64(a), _f64(b)), dtype=np.float64)


def attention(q: npt.ArrayLike, k: npt.ArrayLike, v: npt.ArrayLike, causal: bool = False) -> F64:
    """``F.scaled_dot_product_attention(q, k, v, is_causal=causal)``: ``softmax(q k^T / sqrt(d) + mask) v``.

    PyTorch's causal mask is top-left aligned (``ones(L, S).tril()``): query ``i`` sees keys ``0..i``, also
    when the query and key lengths differ. One (batch, head) pair at a time, so memory stays at one score
    matrix.
    """
    qd, kd, vd = _f64(q), _f64(k), _f64(v)
    *lead, length, d = qd.shape
    kv = kd.shape[-2]
    scale = 1.0 / math.sqrt(d)
    blocked = np.triu(np.ones((length, kv), dtype=bool), k=1) if causal else None
    out = np.empty((*lead, length, vd.shape[-1]))
    for idx in np.ndindex(*lead):
        scores = qd[idx] @ kd[idx].T * scale
        if blocked is not None:
            scores[blocked] = -np.inf
        weights = np.exp(scores - scores.max(axis=-1, keepdims=True))
        weights /= weights.sum(axis=-1, keepdims=True)
        out[idx] = weights @ vd[idx]
    return out


def embedding(indices: npt.ArrayLike, weight: npt.ArrayLike) -> F64:
    """``F.embedding``: the rows of ``weight`` (vocabulary x dim) that ``indices`` name."""
    idx = np.asarray(indices)
    wd = _f64(weight)
    if idx.size and (int(idx.min()) < 0 or int(idx.max()) >= wd.shape[0]):
        raise ValueError(f"embedding indices must lie in [0, {wd.shape[0]})")
    return np.asarray(wd[idx], dtype=np.float64)


def nearest_source_index(out_size: int, in_size: int) -> npt.NDArray[np.int64]:
    """PyTorch's ``nearest`` source index of each output position: ``min(floor(i * scale), in - 1)`` with
    ``scale = in / out`` and the product computed in float32, as ATen's CPU and CUDA kernels do (so a ratio
    that float32 rounds down, e.g. 14 / 20, maps as PyTorch maps it, not as exact arithmetic would)."""
    scale = np.float32(in_size) / np.float32(out_size)
    src = np.floor(np.arange(out_size, dtype=np.float32) * scale).astype(np.int64)
    return np.asarray(np.minimum(src, in_size - 1), dtype=np.int64)


def _bilinear_weights(out_size: int, in_size: int) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64], F64]:
    """Lower and upper source index and the upper weight of each output position, ``align_corners=False``:
    source ``(i + 0.5) * in / out - 0.5``, clamped at 0 (PyTorch's ``area_pixel_compute_source_index``)."""
    src = np.maximum((np.arange(out_size) + 0.5) * (in_size / out_size) - 0.5, 0.0)
    lo = np.minimum(np.floor(src).astype(np.int64), in_size - 1)
    hi = np.minimum(lo + 1, in_size - 1)
    return lo, hi, src - lo


def upsample(x: npt.ArrayLike, out_size: tuple[int, int], mode: str = "nearest") -> F64:
    """``F.interpolate(x, size=out_size, mode=mode)`` for ``nearest`` and ``bilinear`` (``align_corners=False``)."""
    xd = _f64(x)
    h, w = xd.shape[2:]
    oh, ow = out_size
    if mode == "nearest":
        return np.ascontiguousarray(xd[:, :, nearest_source_index(oh, h)][:, :, :, nearest_source_index(ow, w)])
    if mode != "bilinear":
        raise ValueError(f"unknown upsample mode {mode!r} (nearest, bilinear)")
    h0, h1, lh = _bilinear_weights(oh, h)
    w0, w1, lw = _bilinear_weights(ow, w)
    rows = xd[:, :, h0] * (1.0 - lh)[:, None] + xd[:, :, h1] * lh[:, None]
    return np.asarray(rows[:, :, :, w0] * (1.0 - lw) + rows[:, :, :, w1] * lw, dtype=np.float64)


def transposed_output_size(
    size: int, kernel: int, stride: int, padding: int, dilation: int, output_padding: int
) -> int:
    """PyTorch's output size of a transposed convolution along one axis."""
    return (size - 1) * stride - 2 * padding + dilation * (kernel - 1) + output_padding + 1


def conv_transpose2d(
    x: npt.ArrayLike,
    weight: npt.ArrayLike,
    bias: npt.ArrayLike | None = None,
    stride: tuple[int, int] = (1, 1),
    padding: tuple[int, int] = (0, 0),
    output_padding: tuple[int, int] = (0, 0),
    groups: int = 1,
    dilation: tuple[int, int] = (1, 1),
) -> F64:
    """``F.conv_transpose2d``, weight ``(in_channels, out_channels / groups, kh, kw)``: every input element
    scatters ``x * weight`` to ``(i * stride - padding + u * dilation, ...)``. The scatter goes into a canvas
    from position ``-padding`` that is long enough for the output padding, which is then cut out."""
    xd, wd = _f64(x), _f64(weight)
    n, c, h, w = xd.shape
    cw, og, kh, kw = wd.shape
    assert c == cw and c % groups == 0
    (sh, sw), (ph, pw), (oph, opw), (dh, dw) = stride, padding, output_padding, dilation
    oh = transposed_output_size(h, kh, sh, ph, dh, oph)
    ow = transposed_output_size(w, kw, sw, pw, dw, opw)
    cg = c // groups
    canvas = np.zeros((n, og * groups, max(ph + oh, (h - 1) * sh + dh * (kh - 1) + 1),
                       max(pw + ow, (w - 1) * sw + dw * (kw - 1) + 1)))
    for g in range(groups):
        xg = xd[:, g * cg : (g + 1) * cg]
        for u in range(kh):
            for v in range(kw):
                contribution = np.einsum("nchw,co->nohw", xg, wd[g * cg : (g + 1) * cg, :, u, v])
                canvas[:, g * og : (g + 1) * og, u * dh : u * dh + sh * (h - 1) + 1 : sh,
                       v * dw : v * dw + sw * (w - 1) + 1 : sw] += contribution
    out = np.ascontiguousarray(canvas[:, :, ph : ph + oh, pw : pw + ow])
    if bias is not None:
        out += _f64(bias)[None, :, None, None]
    return out


# -- operands and dispatch ---------------------------------------------------------------------------


@dataclass
class Operands:
    """A layer's operands: ``inputs`` (in order) and ``params`` by name (see the module's conventions)."""

    inputs: list[Array]
    params: dict[str, Array] = field(default_factory=dict)


def input_shapes(layer: Layer) -> list[tuple[int, ...]]:
    """The shapes of a layer's operands (see the module's conventions)."""
    n, c, h, w = layer.batch, layer.in_channels, layer.in_h, layer.in_w
    t = layer.type
    if t == "linear":
        return [layer.in_shape]
    if t == "layernorm":
        tokens, d = layer.tokens, layer.in_features
        return [(n, d, tokens) if layer.channels_first else (n, tokens, d)]
    if t == "matmul":
        k, nf = layer.in_features, layer.out_features
        b = (k, nf) if layer.broadcast else (n, layer.heads, k, nf) if layer.heads > 1 else (n, k, nf)
        return [layer.in_shape, b]
    if t == "attention":
        kv = (n, layer.heads, layer.kv_tokens, layer.head_dim)
        return [layer.in_shape, kv, kv]
    if t == "embedding":
        return [(n, layer.tokens)]
    if t == "softmax" and not layer.channels_first:
        return [(n, h, w, c)]
    if t in ("add", "mul"):
        other: tuple[int, ...] = (n, c, 1, 1) if layer.broadcast else (n, c, h, w)
        return [(n, c, h, w), *([other] * (layer.inputs - 1))]
    if t == "concat":
        return [(n, part, h, w) for part in concat_channels(c, layer.inputs)]
    return [(n, c, h, w)]


def output_shape(layer: Layer) -> tuple[int, ...]:
    """The output's shape in the operands' layout: ``layer.out_shape``, except channels-first layernorm's
    ``(N, D, tokens)`` and last-axis softmax's ``(N, H, W, C)`` (the same elements, laid out as the input)."""
    if layer.type in ("layernorm", "softmax"):
        return input_shapes(layer)[0]
    return layer.out_shape


def param_shapes(layer: Layer) -> dict[str, tuple[int, ...]]:
    """The shapes of a layer's parameters by name (empty for layers without any)."""
    t = layer.type
    shapes: dict[str, tuple[int, ...]] = {}
    if t == "conv2d":
        shapes["weight"] = (layer.out_channels, layer.in_channels // layer.groups, layer.kernel_h, layer.kernel_w)
    elif t == "conv_transpose2d":
        shapes["weight"] = (layer.in_channels, layer.out_channels // layer.groups, layer.kernel_h, layer.kernel_w)
    elif t == "linear":
        shapes["weight"] = (layer.out_features, layer.in_features)
    elif t == "embedding":
        shapes["weight"] = (layer.in_features, layer.out_features)
    elif t == "batchnorm2d":
        c = (layer.in_channels,)
        shapes.update(weight=c, bias=c, running_mean=c, running_var=c)
    elif t == "layernorm":
        shapes.update(weight=(layer.in_features,), bias=(layer.in_features,))
    if t in ("conv2d", "conv_transpose2d", "linear") and layer.bias:
        shapes["bias"] = (layer.out_features if t == "linear" else layer.out_channels,)
    return shapes


def make_indices(layer: Layer, rng: np.random.Generator) -> npt.NDArray[np.int64]:
    """Embedding indices: uniform in ``[0, in_features)``, the first 0 and the last ``in_features - 1``."""
    vocab = layer.in_features
    idx = rng.integers(0, vocab, size=(layer.batch, layer.tokens), dtype=np.int64)
    flat = idx.reshape(-1)
    flat[0] = 0
    flat[-1] = vocab - 1
    return idx


def _input_range(layer: Layer, operand: int) -> tuple[float, float]:
    t = layer.type
    if t == "batchnorm2d":
        return -3.0, 3.0
    if t in ("sigmoid", "silu", "gelu", "hardsigmoid", "hardswish", "relu6", "softmax", "tanh"):
        # Wider inputs reach the saturated and clipped regions of these functions.
        return -8.0, 8.0
    if t == "layernorm":
        return -2.0, 3.0  # a mean away from zero: the mean must be subtracted
    if t == "attention" and operand < 2:
        return -2.0, 2.0  # queries and keys: scores of order one, so the softmax is far from uniform
    return -1.0, 1.0


def make_inputs(layer: Layer, rng: np.random.Generator, dtype: npt.DTypeLike | None = None) -> list[Array]:
    """Random inputs of a layer (see :func:`make_operands`)."""
    if layer.type == "embedding":
        return [make_indices(layer, rng)]
    dt = np.dtype(dtype) if dtype is not None else numpy_dtype(layer.dtype)
    return [
        rng.uniform(*_input_range(layer, i), size=shape).astype(dt) for i, shape in enumerate(input_shapes(layer))
    ]


def make_params(layer: Layer, rng: np.random.Generator, dtype: npt.DTypeLike | None = None) -> dict[str, Array]:
    """Random weights of a layer (see :func:`make_operands`); empty for layers without any."""
    dt = np.dtype(dtype) if dtype is not None else numpy_dtype(layer.dtype)

    def uniform(shape: tuple[int, ...], low: float, high: float) -> Array:
        return rng.uniform(low, high, size=shape).astype(dt)

    t = layer.type
    shapes = param_shapes(layer)
    params: dict[str, Array] = {}
    if t in ("conv2d", "conv_transpose2d", "linear"):
        weight = shapes["weight"]
        # PyTorch's fan-in is the weight's dimensions after the first (conv_transpose2d: out / groups x kh x kw)
        bound = 1.0 / math.sqrt(math.prod(weight[1:]))
        params["weight"] = uniform(weight, -bound, bound)
        if "bias" in shapes:
            params["bias"] = uniform(shapes["bias"], -bound, bound)
    elif t == "embedding":
        # nn.Embedding's N(0, 1), drawn in float32: a vocabulary table can be large
        params["weight"] = rng.standard_normal(shapes["weight"], dtype=np.float32).astype(dt, copy=False)
    elif t == "batchnorm2d":
        c = shapes["weight"]
        params["weight"] = uniform(c, 0.5, 1.5)
        params["bias"] = uniform(c, -0.5, 0.5)
        params["running_mean"] = uniform(c, -0.5, 0.5)
        params["running_var"] = uniform(c, 0.5, 1.5)
    elif t == "layernorm":
        params["weight"] = uniform(shapes["weight"], 0.5, 1.5)
        params["bias"] = uniform(shapes["bias"], -0.5, 0.5)
    return params


def make_operands(layer: Layer, rng: np.random.Generator, dtype: npt.DTypeLike | None = None) -> Operands:
    """Random inputs and weights of a layer, in its dtype (or ``dtype``).

    Inputs are uniform in [-1, 1) (batchnorm's in [-3, 3), those of saturating activations and softmax in
    [-8, 8), layernorm's in [-2, 3), attention's queries and keys in [-2, 2)); embedding indices are
    :func:`make_indices`'. Weights are uniform in ``±1/sqrt(fan_in)`` (PyTorch's default initialization), so
    outputs stay of order one at any size; batchnorm's variances lie in [0.5, 1.5), layernorm's and batchnorm's
    scales in [0.5, 1.5) and shifts in [-0.5, 0.5); an embedding table is standard normal (nn.Embedding's).
    """
    return Operands(make_inputs(layer, rng, dtype), make_params(layer, rng, dtype))


def _sliced_heads(layer: Layer) -> bool:
    return layer.type == "attention" or (layer.type == "matmul" and layer.heads > 1)


def subset(layer: Layer, ops: Operands, output: npt.ArrayLike) -> tuple[Layer, Operands, Array]:
    """The first and last batch item (and for attention and batched matmul the first and last head) of a
    layer, its operands and its output: a smaller layer whose reference is quick, for a check. A batch item's
    (or head's) result does not depend on the others, and an indexing error shows in the last one."""
    out = np.asarray(output)
    items = [0] if layer.batch == 1 else [0, layer.batch - 1]
    changes = {"batch": len(items)}
    heads: list[int] | None = None
    if _sliced_heads(layer) and layer.heads > 2:
        heads = [0, layer.heads - 1]
        changes["heads"] = 2
    shared = layer.type == "matmul" and layer.broadcast  # the second operand has no batch axis

    def cut(x: Array, batched: bool = True) -> Array:
        if not batched:
            return x
        x = x[items]
        return x[:, heads] if heads is not None else x

    inputs = [cut(x, not (shared and i == 1)) for i, x in enumerate(ops.inputs)]
    return layer.replace(**changes), Operands(inputs, ops.params), cut(out)


def forward(layer: Layer, ops: Operands) -> F64:
    """The reference output of a layer on its operands, float64, shaped as :func:`output_shape`."""
    t = layer.type
    x = ops.inputs[0]
    p = ops.params
    if t == "conv2d":
        out = conv2d(x, p["weight"], p.get("bias"), layer.stride, layer.padding, layer.dilation, layer.groups)
    elif t == "conv_transpose2d":
        out = conv_transpose2d(
            x, p["weight"], p.get("bias"), layer.stride, layer.padding, layer.output_padding, layer.groups,
            layer.dilation,
        )
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
    elif t == "layernorm":
        out = layer_norm(x, p["weight"], p["bias"], axis=1 if layer.channels_first else -1)
    elif t in ACTIVATIONS:
        out = activation(t, x, approximate=bool(layer.approximate))
    elif t == "add":
        out = add(ops.inputs)
    elif t == "mul":
        out = mul(ops.inputs)
    elif t == "concat":
        out = concat(ops.inputs)
    elif t == "softmax":
        out = softmax(x, axis=1 if layer.channels_first else -1)
    elif t == "matmul":
        out = matmul(x, ops.inputs[1])
    elif t == "attention":
        out = attention(x, ops.inputs[1], ops.inputs[2], causal=bool(layer.causal))
    elif t == "embedding":
        out = embedding(x, p["weight"])
    elif t == "upsample":
        out = upsample(x, (layer.out_h, layer.out_w), "bilinear" if layer.interpolation else "nearest")
    elif t == "flatten":
        out = flatten(x)
    elif t == "channel_shuffle":
        out = channel_shuffle(x, layer.groups)
    else:  # pragma: no cover - every type of LAYER_TYPES is handled above
        raise ValueError(f"no reference for layer type {t!r}")
    assert out.shape == output_shape(layer), (out.shape, output_shape(layer))
    return out


def _reduction(layer: Layer) -> int:
    """How many products or terms one output element sums (sets the tolerance)."""
    if layer.type == "conv2d":
        return layer.in_channels // layer.groups * layer.kernel_h * layer.kernel_w
    if layer.type == "conv_transpose2d":  # at most every tap of every input channel of the group
        return layer.in_channels // layer.groups * layer.kernel_h * layer.kernel_w
    if layer.type in ("linear", "matmul"):
        return layer.in_features
    if layer.type == "layernorm":  # the mean and variance sums
        return layer.in_features
    if layer.type == "attention":  # the scores' dot products, and the weighted sum over the keys
        return max(layer.head_dim, layer.kv_tokens)
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
