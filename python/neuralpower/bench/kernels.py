"""neuralpower's CUDA kernels: the one loader, and each layer's launch plan.

The sources live in ``cuda_kernels/`` of the repository, shipped inside the package as
``neuralpower/cuda_kernels/`` (one family per file: ``conv.cu``, ``gemm.cu``, ``pool.cu``, ``elementwise.cu``,
``norm.cu``, ``attention.cu``, and the shared header ``np_common.cuh``). :func:`get_module` reads a family's source
with :mod:`importlib.resources`, compiles it with ``cupy.RawModule`` (NVRTC, ``-std=c++17``) for every kernel
instantiation the family has (``name_expressions``) and caches the module per device
(``cupy.memoize(for_each_device=True)``); CuPy also caches the compiled binary on disk, so a later process skips
NVRTC.

Kernels are templates named ``np_<family>_<op>`` instantiated for the storage type: ``float`` (fp32) or
``np_half`` (fp16, fp32 arithmetic), e.g. ``np_conv_igemm<float>``; their launch contracts are in
``cuda_kernels/README.md``.

:func:`plan_layer` turns a layer into the kernel launches that compute it (grids, blocks, scalar arguments,
which named buffers go where). It is plain Python, so the launch configurations are tested without a GPU;
the ``cupy`` executor allocates the buffers and launches the plan.

Importing this module imports neither CuPy nor anything else beyond NumPy.
"""

from __future__ import annotations

import importlib.resources
import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..layers import Layer
from .executors.base import ExecutorUnavailable, LayerFailed, unsupported
from .reference import concat_channels, input_shapes, output_shape, param_shapes

__all__ = [
    "ACTIVATION_KERNELS",
    "ATTENTION_MAX_HEAD_DIM",
    "CUDA_TYPES",
    "FAMILIES",
    "KERNELS",
    "MAX_ELEMENTS",
    "Buf",
    "CublasGemm",
    "CublasMatmul",
    "IntTable",
    "Launch",
    "LayerPlan",
    "PtrTable",
    "conv_impl",
    "get_function",
    "get_module",
    "kernel_name",
    "kernel_source",
    "matmul_impl",
    "name_expressions",
    "plan_layer",
    "source_path",
]

FAMILIES: tuple[str, ...] = ("conv", "gemm", "pool", "elementwise", "norm", "attention")
COMMON_HEADER = "np_common.cuh"

#: The C++ storage type of each dtype the kernels support.
CUDA_TYPES: dict[str, str] = {"fp32": "float", "fp16": "np_half"}

#: Activation layer type -> its kernel (gelu with ``approximate`` runs ``np_elementwise_gelu_tanh``).
ACTIVATION_KERNELS: dict[str, str] = {
    t: f"np_elementwise_{t}"
    for t in ("relu", "relu6", "sigmoid", "hardsigmoid", "silu", "hardswish", "gelu", "tanh")
}

#: The largest head dimension ``np_attention_rows`` takes (4 elements per lane of a warp).
ATTENTION_MAX_HEAD_DIM = 128

#: Every kernel template, by family (each is instantiated for every dtype of :data:`CUDA_TYPES`).
KERNELS: dict[str, tuple[str, ...]] = {
    "conv": ("np_conv_igemm", "np_conv_depthwise", "np_conv_depthwise_direct", "np_conv_transpose_direct"),
    "gemm": ("np_gemm_tiled", "np_gemm_small_batch", "np_gemm_bias", "np_gemm_batched"),
    "pool": ("np_pool_max", "np_pool_avg", "np_pool_adaptive_avg", "np_pool_global_avg"),
    "norm": ("np_norm_layernorm", "np_norm_layernorm_cf"),
    "attention": ("np_attention_rows",),
    "elementwise": (
        *ACTIVATION_KERNELS.values(),
        "np_elementwise_gelu_tanh",
        "np_elementwise_batchnorm",
        "np_elementwise_add",
        "np_elementwise_mul",
        "np_elementwise_add_bcast",
        "np_elementwise_mul_bcast",
        "np_elementwise_concat",
        "np_elementwise_softmax",
        "np_elementwise_softmax_rows",
        "np_elementwise_softmax_lastdim",
        "np_elementwise_channel_shuffle",
        "np_elementwise_embedding",
        "np_elementwise_upsample_nearest",
        "np_elementwise_upsample_bilinear",
    ),
}

#: Every tensor a kernel touches has fewer elements than this: the kernels index with 32-bit integers.
MAX_ELEMENTS = 2**31 - 1024

_MAX_GRID_X = 2**31 - 1
_MAX_GRID_YZ = 65535
_BLOCK = 256
_DEFAULT_SHARED_BYTES = 48 * 1024  # more needs cudaFuncSetAttribute; the plans stay under it
_INCLUDE = re.compile(rf'^#include "{re.escape(COMMON_HEADER)}"\s*$', re.MULTILINE)


# -- sources and compilation -----------------------------------------------------------------------------


def source_path(filename: str) -> Any:
    """The installed ``neuralpower/cuda_kernels/<filename>`` (an :mod:`importlib.resources` Traversable),
    or in a source checkout without it, the repository's ``cuda_kernels/<filename>``.

    Raises
    ------
    FileNotFoundError
        Neither exists.
    """
    try:
        installed = importlib.resources.files("neuralpower") / "cuda_kernels" / filename
        if installed.is_file():
            return installed
    except (ModuleNotFoundError, NotADirectoryError):  # pragma: no cover - neuralpower is importable here
        pass
    # python/neuralpower/bench/kernels.py -> the repository root
    repo = Path(__file__).resolve().parents[3] / "cuda_kernels" / filename
    if repo.is_file():
        return repo
    raise FileNotFoundError(f"CUDA source {filename} is neither in the installed package nor in {repo.parent}")


def kernel_source(family: str) -> str:
    """A family's CUDA source as compiled: ``<family>.cu`` with ``np_common.cuh`` pasted in place of its
    ``#include`` (NVRTC gets one self-contained string; ``#line`` keeps error messages' line numbers)."""
    if family not in FAMILIES:
        raise ValueError(f"unknown kernel family {family!r} (known: {', '.join(FAMILIES)})")
    code: str = source_path(f"{family}.cu").read_text(encoding="utf-8")
    header: str = source_path(COMMON_HEADER).read_text(encoding="utf-8")
    match = _INCLUDE.search(code)
    if match is None:
        return code
    line = code.count("\n", 0, match.start()) + 1
    pasted = f'#line 1 "{COMMON_HEADER}"\n{header}\n#line {line + 1} "{family}.cu"\n'
    return code[: match.start()] + pasted + code[match.end() :]


def kernel_name(template: str, dtype: str) -> str:
    """The name expression of a kernel for a dtype, e.g. ``np_conv_igemm<np_half>``."""
    if dtype not in CUDA_TYPES:
        raise LayerFailed(f"neuralpower's CUDA kernels support {', '.join(CUDA_TYPES)}, not {dtype}")
    return f"{template}<{CUDA_TYPES[dtype]}>"


def family_of(template: str) -> str:
    """The family (source file) of a kernel template: ``np_conv_igemm`` -> ``conv``."""
    family = template.split("_")[1]
    if family not in FAMILIES or template not in KERNELS[family]:
        raise ValueError(f"unknown kernel {template!r}")
    return family


def name_expressions(family: str) -> list[str]:
    """Every kernel instantiation of a family, as given to ``RawModule(name_expressions=...)``."""
    return [kernel_name(t, d) for t in KERNELS[family] for d in CUDA_TYPES]


def import_cupy() -> Any:
    """CuPy, or :class:`ExecutorUnavailable` saying which extra to install."""
    try:
        import cupy  # type: ignore[import-not-found, unused-ignore]
    except ImportError as e:
        raise ExecutorUnavailable(
            f"the cupy executor needs CuPy ({e}): pip install 'neuralpower[gpu]' (CUDA 12) "
            "or 'neuralpower[gpu-cuda13]' (CUDA 13)"
        ) from None
    return cupy


def _compile(family: str) -> Any:
    cupy = import_cupy()
    return cupy.RawModule(
        code=kernel_source(family), options=("-std=c++17",), name_expressions=name_expressions(family)
    )


_memoized_compile: Callable[[str], Any] | None = None


def get_module(family: str) -> Any:
    """The compiled ``cupy.RawModule`` of a family on the current device (compiled once per device and
    process; CuPy's disk cache makes later processes fast)."""
    global _memoized_compile
    if _memoized_compile is None:
        _memoized_compile = import_cupy().memoize(for_each_device=True)(_compile)
    return _memoized_compile(family)


def get_function(template: str, dtype: str) -> Any:
    """The ``cupy.RawKernel`` of a kernel template for a dtype, on the current device."""
    return get_module(family_of(template)).get_function(kernel_name(template, dtype))


# -- launch plans ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Buf:
    """A kernel argument: the device buffer of this name."""

    name: str


@dataclass(frozen=True)
class PtrTable:
    """A kernel argument: a device array of the addresses (uint64) of these buffers, in order."""

    names: tuple[str, ...]


@dataclass(frozen=True)
class IntTable:
    """A kernel argument: a device int32 array of these values."""

    values: tuple[int, ...]


Arg = Buf | PtrTable | IntTable | np.int32


@dataclass(frozen=True)
class Launch:
    """One kernel launch: ``kernel<dtype>`` on ``grid`` x ``block`` with ``shared_bytes`` of dynamic
    shared memory. Scalar arguments are ``np.int32`` (the kernels' ``int``)."""

    kernel: str
    dtype: str
    grid: tuple[int, int, int]
    block: tuple[int, int, int]
    args: tuple[Arg, ...]
    shared_bytes: int = 0

    def __post_init__(self) -> None:
        gx, gy, gz = self.grid
        if not (1 <= gx <= _MAX_GRID_X and 1 <= gy <= _MAX_GRID_YZ and 1 <= gz <= _MAX_GRID_YZ):
            raise LayerFailed(f"{self.kernel}: grid {self.grid} is beyond CUDA's limits")
        if math.prod(self.block) > 1024 or self.shared_bytes > _DEFAULT_SHARED_BYTES:
            raise LayerFailed(f"{self.kernel}: block {self.block} / {self.shared_bytes} B shared is too large")

    @property
    def name_expression(self) -> str:
        return kernel_name(self.kernel, self.dtype)

    @property
    def threads(self) -> int:
        """Threads launched in all."""
        return math.prod(self.grid) * math.prod(self.block)


@dataclass(frozen=True)
class CublasGemm:
    """``y = x @ w.T`` through ``cupy.matmul`` (cuBLAS), for the linear layer's ``cublas`` variant (on token
    tensors ``x`` and ``y`` are viewed as ``(N * tokens, features)``: one GEMM)."""

    x: str
    w: str
    y: str


@dataclass(frozen=True)
class CublasMatmul:
    """``y = a @ b`` through ``cupy.matmul`` (cuBLAS's strided-batched GEMM; a 2-D ``b`` is broadcast), for the
    matmul layer's ``cublas`` variant."""

    a: str
    b: str
    y: str


Step = Launch | CublasGemm | CublasMatmul


@dataclass(frozen=True)
class LayerPlan:
    """How the ``cupy`` executor computes one layer.

    Attributes
    ----------
    layer
        The layer.
    impl
        The implementation (recorded as ``Variant.impl``): ``implicit_gemm``, ``depthwise`` or
        ``depthwise_direct`` for conv2d, ``kernel`` or ``cublas`` for linear and matmul, ``""`` otherwise.
    inputs
        Buffer names of the operands, in the order of :func:`~neuralpower.bench.reference.input_shapes`
        (``x0``, ``x1``, ...).
    params
        Buffer names of the parameters, as :func:`~neuralpower.bench.reference.make_operands` names them
        (``weight``, ``bias``; shapes :func:`~neuralpower.bench.reference.param_shapes`), plus ``scale`` and
        ``shift`` (float32, batchnorm folded) and ``dummy`` (one
        element, passed where a layer has no bias).
    output
        The output buffer's name (``y``; ``x0`` for flatten, which is a view and launches nothing).
    steps
        Launches (and cuBLAS calls) in order.
    """

    layer: Layer
    impl: str
    inputs: tuple[str, ...]
    params: tuple[str, ...]
    output: str
    steps: tuple[Step, ...]


def _cdiv(a: int, b: int) -> int:
    return -(-a // b)


def _i32(*values: int) -> tuple[np.int32, ...]:
    return tuple(np.int32(v) for v in values)


def _flat(kernel: str, dtype: str, work: int, args: tuple[Arg, ...]) -> Launch:
    """A 1-D launch of one thread per work item, 256 per block."""
    return Launch(kernel, dtype, (_cdiv(work, _BLOCK), 1, 1), (_BLOCK, 1, 1), args)


def _check_sizes(layer: Layer) -> None:
    sizes = [math.prod(s) for s in input_shapes(layer)] + [math.prod(output_shape(layer))]
    sizes += [math.prod(s) for s in param_shapes(layer).values()]
    if max(sizes) >= MAX_ELEMENTS:
        raise LayerFailed(f"a tensor of {max(sizes)} elements: beyond the 32-bit indexing of neuralpower's kernels")


def conv_impl(layer: Layer) -> str:
    """The conv2d kernel the executor picks: ``depthwise`` (or ``depthwise_direct`` for planes narrower than
    16 or patches beyond shared memory) when ``groups == in_channels > 1`` and ``out_channels`` is a multiple,
    else ``implicit_gemm``."""
    if layer.groups > 1 and layer.groups == layer.in_channels and layer.out_channels % layer.in_channels == 0:
        if layer.out_w < 16 or _depthwise_tiling(layer)[-1] > _DEFAULT_SHARED_BYTES:
            return "depthwise_direct"
        return "depthwise"
    return "implicit_gemm"


def _depthwise_tiling(layer: Layer) -> tuple[tuple[int, int, int], int, int, int, int, int, int]:
    """Block, tiles_w, tiles_h, tile_h, patch_h, patch_w and shared bytes of ``np_conv_depthwise``."""
    tile_w = 32 if layer.out_w > 16 else 16
    by = _BLOCK // tile_w
    rows_per_thread = 2 if layer.out_h > by else 1
    tile_h = by * rows_per_thread
    patch_h = (tile_h - 1) * layer.stride_h + (layer.kernel_h - 1) * layer.dilation_h + 1
    patch_w = (tile_w - 1) * layer.stride_w + (layer.kernel_w - 1) * layer.dilation_w + 1
    shared = 4 * (patch_h * patch_w + layer.kernel_h * layer.kernel_w)
    return (tile_w, by, 1), _cdiv(layer.out_w, tile_w), _cdiv(layer.out_h, tile_h), tile_h, patch_h, patch_w, shared


def _plan_conv(layer: Layer, impl: str, d: str) -> tuple[str, tuple[str, ...], tuple[Step, ...]]:
    impl = impl or conv_impl(layer)
    n, c, h, w = layer.in_shape
    co, oh, ow = layer.out_channels, layer.out_h, layer.out_w
    bias = "bias" if layer.bias else "dummy"
    params = ("weight", bias)
    bufs = (Buf("x0"), Buf("weight"), Buf(bias), Buf("y"))
    window = _window(layer)
    if impl == "implicit_gemm":
        grid = (_cdiv(n * oh * ow, 64), _cdiv(co // layer.groups, 64), layer.groups)
        args = bufs + _i32(n, c, h, w, co, oh, ow, *window, layer.groups, layer.bias)
        return impl, params, (Launch("np_conv_igemm", d, grid, (_BLOCK, 1, 1), args),)
    if impl not in ("depthwise", "depthwise_direct"):
        raise LayerFailed(f"unknown conv2d implementation {impl!r} (implicit_gemm, depthwise, depthwise_direct)")
    if layer.groups != c or co % c != 0:
        raise LayerFailed(f"{impl} needs groups == in_channels and out_channels a multiple of it: {layer!r}")
    if impl == "depthwise":
        block, tiles_w, tiles_h, tile_h, patch_h, patch_w, shared = _depthwise_tiling(layer)
        args = bufs + _i32(c, h, w, co, oh, ow, *window, layer.bias, tiles_w, tile_h, patch_h, patch_w)
        launch = Launch("np_conv_depthwise", d, (n * co, tiles_h * tiles_w, 1), block, args, shared)
        return impl, params, (launch,)
    args = bufs + _i32(n, c, h, w, co, oh, ow, *window, layer.bias)
    return impl, params, (_flat("np_conv_depthwise_direct", d, n * co * oh * ow, args),)


def _plan_linear(layer: Layer, impl: str, d: str) -> tuple[str, tuple[str, ...], tuple[Step, ...]]:
    impl = impl or "kernel"
    # on tokens, [N, tokens, in] is one [N * tokens, in] GEMM
    m, k, nf = layer.batch * layer.tokens, layer.in_features, layer.out_features
    bias = "bias" if layer.bias else "dummy"
    if impl == "cublas":
        steps: tuple[Step, ...] = (CublasGemm("x0", "weight", "y"),)
        if layer.bias:
            steps += (_flat("np_gemm_bias", d, m * nf, (Buf("y"), Buf("bias"), *_i32(m, nf))),)
        return impl, ("weight", bias), steps
    if impl != "kernel":
        raise LayerFailed(f"unknown linear implementation {impl!r} (kernel, cublas)")
    bufs = (Buf("x0"), Buf("weight"), Buf(bias), Buf("y"))
    if m <= 8:
        args = bufs + _i32(m, nf, k, layer.bias, int(k % 4 == 0))
        launch = Launch("np_gemm_small_batch", d, (_cdiv(nf, 8), 1, 1), (_BLOCK, 1, 1), args)
    else:
        launch = Launch(
            "np_gemm_tiled", d, (_cdiv(nf, 64), _cdiv(m, 64), 1), (_BLOCK, 1, 1), bufs + _i32(m, nf, k, layer.bias)
        )
    return impl, ("weight", bias), (launch,)


def matmul_impl(layer: Layer) -> str:
    """The matmul implementation the executor measures first: ``kernel`` (ours; ``cublas`` is the other)."""
    return "kernel"


def _plan_matmul(layer: Layer, impl: str, d: str) -> tuple[str, tuple[Step, ...]]:
    impl = impl or matmul_impl(layer)
    if impl == "cublas":
        return impl, (CublasMatmul("x0", "x1", "y"),)
    if impl != "kernel":
        raise LayerFailed(f"unknown matmul implementation {impl!r} (kernel, cublas)")
    m, k, nf = layer.tokens, layer.in_features, layer.out_features
    batches = layer.batch * layer.heads
    strides = (m * k, 0 if layer.broadcast else k * nf, m * nf)
    args: tuple[Arg, ...] = (Buf("x0"), Buf("x1"), Buf("y"), *_i32(m, nf, k, *strides))
    return impl, (Launch("np_gemm_batched", d, (_cdiv(nf, 64), _cdiv(m, 64), batches), (_BLOCK, 1, 1), args),)


def _row_block(length: int) -> tuple[int, int, int]:
    """Threads per row for a row-wise reduction: a block of 256 for rows of 2048 values or more, else a warp
    (8 rows per block)."""
    return (256, 1, 1) if length >= 2048 else (32, 8, 1)


def _rows_launch(kernel: str, d: str, rows: int, length: int, args: tuple[Arg, ...]) -> Launch:
    block = _row_block(length)
    return Launch(kernel, d, (_cdiv(rows, block[1]), 1, 1), block, args)


def _plan_attention(layer: Layer, d: str) -> tuple[Step, ...]:
    hd = layer.head_dim
    if hd > ATTENTION_MAX_HEAD_DIM:
        raise LayerFailed(f"np_attention_rows takes head_dim up to {ATTENTION_MAX_HEAD_DIM}, not {hd}")
    pairs = layer.batch * layer.heads
    sizes = _i32(layer.tokens, layer.kv_tokens, hd, layer.causal, int(hd % 4 == 0))
    args: tuple[Arg, ...] = (Buf("x0"), Buf("x1"), Buf("x2"), Buf("y"), *sizes)
    return (Launch("np_attention_rows", d, (_cdiv(layer.tokens, 4), pairs, 1), (128, 1, 1), args),)


def _window(layer: Layer, *, dilation: bool = True) -> tuple[int, ...]:
    """A conv or pooling window's kernel, stride, padding (and dilation) fields, as the kernels take them."""
    fields = (layer.kernel_h, layer.kernel_w, layer.stride_h, layer.stride_w, layer.padding_h, layer.padding_w)
    return (*fields, layer.dilation_h, layer.dilation_w) if dilation else fields


def _plan_pool(layer: Layer, d: str) -> tuple[Step, ...]:
    n, c, h, w = layer.in_shape
    oh, ow = layer.out_h, layer.out_w
    planes = n * c
    io = (Buf("x0"), Buf("y"))
    if layer.type in ("maxpool2d", "avgpool2d"):
        is_max = layer.type == "maxpool2d"
        args = io + _i32(planes, h, w, oh, ow, *_window(layer, dilation=is_max))
        return (_flat("np_pool_max" if is_max else "np_pool_avg", d, planes * oh * ow, args),)
    if (oh, ow) == (1, 1):
        hw = h * w
        bx = 256 if hw >= 2048 else 32  # a block per large plane, else a warp
        by = _BLOCK // bx
        args = io + _i32(planes, hw, int(hw % 4 == 0))
        return (Launch("np_pool_global_avg", d, (_cdiv(planes, by), 1, 1), (bx, by, 1), args),)
    return (_flat("np_pool_adaptive_avg", d, planes * oh * ow, io + _i32(planes, h, w, oh, ow)),)


def plan_layer(layer: Layer, impl: str = "") -> LayerPlan:
    """The launches that compute ``layer`` with neuralpower's kernels.

    Parameters
    ----------
    layer
        Any layer type, dtype fp32 or fp16.
    impl
        ``""`` for the executor's choice; conv2d: ``implicit_gemm``, ``depthwise`` or ``depthwise_direct``;
        linear and matmul: ``kernel`` or ``cublas``.

    Raises
    ------
    LayerFailed
        A dtype without kernels (bf16, fp8), an unknown or inapplicable ``impl``, a tensor of 2^31 elements or
        more, a grid beyond CUDA's limits, attention with a head dimension beyond
        :data:`ATTENTION_MAX_HEAD_DIM` or in a serving form (grouped-query, windowed, K and V of their own dtype).
    """
    d = layer.dtype
    if d not in CUDA_TYPES:
        raise LayerFailed(f"neuralpower's CUDA kernels support {', '.join(CUDA_TYPES)}, not {d}")
    reason = unsupported(layer, "cupy", CUDA_TYPES)  # attention's grouped-query, windowed, own-dtype K and V forms
    if reason is not None:
        raise LayerFailed(reason)
    _check_sizes(layer)
    t = layer.type
    n_inputs = len(input_shapes(layer))
    inputs = tuple(f"x{i}" for i in range(n_inputs))
    params: tuple[str, ...] = ()
    steps: tuple[Step, ...]
    args: tuple[Arg, ...]
    if impl and t not in ("conv2d", "linear", "matmul"):
        raise LayerFailed(f"{t} has one implementation, not {impl!r}")
    n, c, h, w = (layer.batch, layer.in_channels, layer.in_h, layer.in_w)
    hw = h * w
    elements = n * c * hw
    vec4 = int(hw % 4 == 0)
    if t == "conv2d":
        impl, params, steps = _plan_conv(layer, impl, d)
    elif t == "linear":
        impl, params, steps = _plan_linear(layer, impl, d)
    elif t in ("maxpool2d", "avgpool2d", "adaptive_avgpool2d"):
        steps = _plan_pool(layer, d)
    elif t == "matmul":
        impl, steps = _plan_matmul(layer, impl, d)
    elif t == "attention":
        steps = _plan_attention(layer, d)
    elif t == "layernorm":
        params = ("weight", "bias")
        rows, dim = layer.batch * layer.tokens, layer.in_features
        args = (Buf("x0"), Buf("weight"), Buf("bias"), Buf("y"))
        if layer.channels_first:
            steps = (_flat("np_norm_layernorm_cf", d, rows, args + _i32(layer.batch, dim, layer.tokens)),)
        else:
            steps = (_rows_launch("np_norm_layernorm", d, rows, dim, args + _i32(rows, dim)),)
    elif t == "embedding":
        params = ("weight",)
        rows, dim = layer.batch * layer.tokens, layer.out_features
        vec = int(dim % 4 == 0)
        args = (Buf("x0"), Buf("weight"), Buf("y"), *_i32(rows, dim, layer.in_features, vec))
        steps = (_flat("np_elementwise_embedding", d, _cdiv(rows * dim, 4) if vec else rows * dim, args),)
    elif t == "upsample":
        kernel = "np_elementwise_upsample_bilinear" if layer.interpolation else "np_elementwise_upsample_nearest"
        args = (Buf("x0"), Buf("y"), *_i32(n * c, h, w, layer.out_h, layer.out_w))
        steps = (_flat(kernel, d, n * c * layer.out_h * layer.out_w, args),)
    elif t == "conv_transpose2d":
        bias = "bias" if layer.bias else "dummy"
        params = ("weight", bias)
        co, oh, ow = layer.out_channels, layer.out_h, layer.out_w
        args = (Buf("x0"), Buf("weight"), Buf(bias), Buf("y"), *_i32(n, c, h, w, co, oh, ow, *_window(layer)))
        args += _i32(layer.groups, layer.bias)
        steps = (_flat("np_conv_transpose_direct", d, n * co * oh * ow, args),)
    elif t == "gelu" and layer.approximate:
        steps = (_flat("np_elementwise_gelu_tanh", d, _cdiv(elements, 4), (Buf("x0"), Buf("y"), *_i32(elements))),)
    elif t == "batchnorm2d":
        params = ("scale", "shift")
        args = (Buf("x0"), Buf("scale"), Buf("shift"), Buf("y"), *_i32(elements, c, hw, vec4))
        steps = (_flat("np_elementwise_batchnorm", d, _cdiv(elements, 4) if vec4 else elements, args),)
    elif t in ACTIVATION_KERNELS:
        steps = (_flat(ACTIVATION_KERNELS[t], d, _cdiv(elements, 4), (Buf("x0"), Buf("y"), *_i32(elements))),)
    elif t in ("add", "mul"):
        table = PtrTable(inputs)
        if layer.broadcast:
            args = (table, *_i32(n_inputs), Buf("y"), *_i32(elements, hw, vec4))
            steps = (_flat(f"np_elementwise_{t}_bcast", d, _cdiv(elements, 4) if vec4 else elements, args),)
        else:
            args = (table, *_i32(n_inputs), Buf("y"), *_i32(elements))
            steps = (_flat(f"np_elementwise_{t}", d, _cdiv(elements, 4), args),)
    elif t == "concat":
        chans = concat_channels(c, layer.inputs)
        offsets = tuple(int(v) for v in np.cumsum([0, *chans[:-1]]))
        per_block = _BLOCK * (4 if vec4 else 1)
        grid = (_cdiv(n * max(chans) * hw, per_block), len(chans), 1)
        args = (PtrTable(inputs), IntTable(tuple(chans)), IntTable(offsets), Buf("y"), *_i32(n, hw, c, vec4))
        steps = (Launch("np_elementwise_concat", d, grid, (_BLOCK, 1, 1), args),)
    elif t == "softmax":
        if hw == 1:  # both layouts: rows of C contiguous values
            args = (Buf("x0"), Buf("y"), *_i32(c))
            steps = (Launch("np_elementwise_softmax_rows", d, (n, 1, 1), (_BLOCK, 1, 1), args),)
        elif not layer.channels_first:  # N x H x W x C: rows of C over the last axis
            args = (Buf("x0"), Buf("y"), *_i32(n * hw, c))
            steps = (_rows_launch("np_elementwise_softmax_lastdim", d, n * hw, c, args),)
        else:
            steps = (_flat("np_elementwise_softmax", d, n * hw, (Buf("x0"), Buf("y"), *_i32(n, c, hw))),)
    elif t == "channel_shuffle":
        args = (Buf("x0"), Buf("y"), *_i32(elements, c, hw, layer.groups, vec4))
        steps = (_flat("np_elementwise_channel_shuffle", d, _cdiv(elements, 4) if vec4 else elements, args),)
    elif t == "flatten":
        return LayerPlan(layer, "", inputs, (), "x0", ())
    else:  # pragma: no cover - every type of LAYER_TYPES is handled above
        raise LayerFailed(f"no kernel for layer type {t!r}")
    return LayerPlan(layer, impl, inputs, params, "y", steps)
