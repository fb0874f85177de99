"""neuralpower's CUDA kernels without a GPU.

The sources ship in the package and the loader finds them; nvcc compiles every kernel instantiation (where
nvcc is installed); the launch plans have the right grids; the GPU executors fail with a one-line message
naming the extra to install when CuPy or PyTorch is missing; and the kernels compute what the reference
computes, run on the host by a small emulation (one OS thread per CUDA thread, blocks one after the other,
barriers and warp shuffles emulated) where g++ (C++20, _Float16) is available.
"""

from __future__ import annotations

import ctypes
import importlib.resources
import math
import re
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from neuralpower import Layer
from neuralpower.bench import kernels
from neuralpower.bench import reference as ref
from neuralpower.bench.executors import ExecutorUnavailable, LayerFailed, get_executor
from neuralpower.bench.executors.cupy_exec import (
    CHECK_ELEMENTS,
    CHECK_MACS,
    compare_with_reference,
    parse_cuda_device,
    small_layer,
)

FP = ("fp32", "fp16")


# -- sources and names -------------------------------------------------------------------------------------


@pytest.mark.parametrize("family", kernels.FAMILIES)
def test_sources_ship_in_the_package(family: str) -> None:
    # the wheel maps cuda_kernels/ to neuralpower/cuda_kernels/; an editable install maps it too
    resource = importlib.resources.files("neuralpower") / "cuda_kernels" / f"{family}.cu"
    assert resource.is_file()
    assert (importlib.resources.files("neuralpower") / "cuda_kernels" / kernels.COMMON_HEADER).is_file()
    source = kernels.kernel_source(family)
    assert not re.search(r"^#include", source, flags=re.M)  # the header is pasted in: NVRTC gets one string
    assert "struct np_half" in source and f'#line 1 "{kernels.COMMON_HEADER}"' in source


def _declared_kernels(source: str) -> set[str]:
    plain = re.findall(r"__global__ void(?:\s+__launch_bounds__\(\d+\))?\s+(np_\w+)\(", source)
    from_macro = re.findall(r"^NP_ACTIVATION_KERNEL\((np_\w+),", source, flags=re.M)
    return set(plain) | set(from_macro)


@pytest.mark.parametrize("family", kernels.FAMILIES)
def test_every_kernel_is_listed_and_named_after_its_family(family: str) -> None:
    assert _declared_kernels(kernels.kernel_source(family)) == set(kernels.KERNELS[family])
    names = kernels.name_expressions(family)
    assert len(names) == len(set(names)) == 2 * len(kernels.KERNELS[family])
    for name in names:
        assert re.fullmatch(rf"np_{family}_\w+<(float|np_half)>", name)
        assert kernels.family_of(name.split("<")[0]) == family


def test_readme_lists_every_kernel() -> None:
    readme = (importlib.resources.files("neuralpower") / "cuda_kernels" / "README.md").read_text(encoding="utf-8")
    for family, templates in kernels.KERNELS.items():
        for template in templates:
            short = template.removeprefix("np_elementwise_")
            assert template in readme or (family == "elementwise" and short in readme), template


def test_unknown_family_and_dtype() -> None:
    with pytest.raises(ValueError, match="unknown kernel family"):
        kernels.kernel_source("fft")
    with pytest.raises(LayerFailed, match="bf16"):
        kernels.kernel_name("np_conv_igemm", "bf16")
    with pytest.raises(ValueError, match="unknown kernel"):
        kernels.family_of("np_conv_winograd")


# -- nvcc --------------------------------------------------------------------------------------------------


def _instantiations(family: str) -> str:
    """A translation unit that includes a family and takes every kernel's address (instantiating it)."""
    path = Path(str(kernels.source_path(f"{family}.cu")))
    names = kernels.name_expressions(family)
    table = ",\n".join(f"    reinterpret_cast<void*>(&{n})" for n in names)
    return f'#include "{path}"\nvoid* np_instantiated[] = {{\n{table}\n}};\n'


@pytest.mark.skipif(shutil.which("nvcc") is None, reason="nvcc is not installed")
@pytest.mark.parametrize("family", kernels.FAMILIES)
def test_nvcc_compiles_every_kernel_for_hopper(family: str, tmp_path: Path) -> None:
    source = tmp_path / f"all_{family}.cu"
    source.write_text(_instantiations(family))
    cmd = ["nvcc", "-std=c++17", "-arch=sm_90", "-Xptxas", "-v", "-c", str(source), "-o", str(tmp_path / "k.o")]
    result = subprocess.run(cmd, capture_output=True, text=True, check=False)
    log = result.stdout + result.stderr
    assert result.returncode == 0, log
    assert "warning" not in log.lower(), log
    entries = re.findall(r"Compiling entry function '(\w+)'", log)
    assert len(entries) == len(kernels.name_expressions(family))
    spills = re.findall(r"(\d+) bytes spill stores, (\d+) bytes spill loads", log)
    assert spills and all(s == ("0", "0") for s in spills), log  # no register spills to local memory


# -- launch plans ------------------------------------------------------------------------------------------


def _launches(plan: kernels.LayerPlan) -> list[kernels.Launch]:
    return [s for s in plan.steps if isinstance(s, kernels.Launch)]


def _ints(launch: kernels.Launch) -> list[int]:
    return [int(a) for a in launch.args if isinstance(a, np.int32)]


@pytest.mark.parametrize(
    "fields",
    [
        dict(in_channels=3, out_channels=64, in_h=224, in_w=224, kernel=7, stride=2, padding=3, batch=8),
        dict(in_channels=64, out_channels=130, in_h=13, in_w=13, kernel=3, padding=2, dilation=2, batch=3),
        dict(in_channels=32, out_channels=64, in_h=28, in_w=28, kernel=3, padding=1, groups=4, batch=2),
    ],
)
def test_implicit_gemm_grid(fields: dict[str, Any]) -> None:
    layer = Layer("conv2d", **fields)
    plan = kernels.plan_layer(layer)
    assert plan.impl == "implicit_gemm" and plan.params == ("weight", "bias")
    (launch,) = _launches(plan)
    positions = layer.batch * layer.out_h * layer.out_w
    assert launch.kernel == "np_conv_igemm" and launch.block == (256, 1, 1) and launch.shared_bytes == 0
    assert launch.grid == (math.ceil(positions / 64), math.ceil(layer.out_channels / layer.groups / 64), layer.groups)
    n, c, h, w, co, oh, ow, kh, kw, sh, sw, ph, pw, dh, dw, groups, bias = _ints(launch)
    assert (n, c, h, w, co, oh, ow) == (*layer.in_shape, *layer.out_shape[1:])
    assert (kh, kw, sh, sw, ph, pw, dh, dw, groups, bias) == (
        *layer.kernel,
        *layer.stride,
        *layer.padding,
        *layer.dilation,
        layer.groups,
        1,
    )


@pytest.mark.parametrize(
    ("fields", "impl"),
    [
        (dict(in_channels=32, out_channels=32, in_h=112, in_w=112, kernel=3, padding=1, groups=32), "depthwise"),
        (
            dict(in_channels=96, out_channels=96, in_h=56, in_w=56, kernel=5, stride=2, padding=2, groups=96),
            "depthwise",
        ),
        (dict(in_channels=8, out_channels=16, in_h=20, in_w=20, kernel=3, padding=1, groups=8), "depthwise"),
        (dict(in_channels=576, out_channels=576, in_h=7, in_w=7, kernel=5, padding=2, groups=576), "depthwise_direct"),
        (dict(in_channels=4, out_channels=4, in_h=200, in_w=200, kernel=61, dilation=3, groups=4), "depthwise_direct"),
        (dict(in_channels=1, out_channels=8, in_h=20, in_w=20, kernel=3), "implicit_gemm"),  # groups 1
        (dict(in_channels=8, out_channels=12, in_h=20, in_w=20, kernel=3, groups=4), "implicit_gemm"),  # grouped
    ],
)
def test_depthwise_selection_and_tiling(fields: dict[str, Any], impl: str) -> None:
    layer = Layer("conv2d", batch=2, **fields)
    assert kernels.conv_impl(layer) == impl
    (launch,) = _launches(kernels.plan_layer(layer))
    if impl == "depthwise":
        tile_w, by, _ = launch.block
        assert tile_w * by == 256 and tile_w == (32 if layer.out_w > 16 else 16)
        *_, tiles_w, tile_h, patch_h, patch_w = _ints(launch)
        tiles_h = math.ceil(layer.out_h / tile_h)
        assert tile_h % by == 0 and tiles_w == math.ceil(layer.out_w / tile_w)
        assert launch.grid == (layer.batch * layer.out_channels, tiles_h * tiles_w, 1)
        assert patch_h == (tile_h - 1) * layer.stride_h + (layer.kernel_h - 1) * layer.dilation_h + 1
        assert patch_w == (tile_w - 1) * layer.stride_w + (layer.kernel_w - 1) * layer.dilation_w + 1
        assert launch.shared_bytes == 4 * (patch_h * patch_w + layer.kernel_h * layer.kernel_w) <= 48 * 1024
    elif impl == "depthwise_direct":
        assert launch.grid == (math.ceil(math.prod(layer.out_shape) / 256), 1, 1)


def test_forced_conv_implementations() -> None:
    depthwise = Layer("conv2d", in_channels=8, out_channels=8, in_h=20, in_w=20, kernel=3, groups=8)
    for impl in ("implicit_gemm", "depthwise", "depthwise_direct"):
        assert kernels.plan_layer(depthwise, impl).impl == impl
    dense = Layer("conv2d", in_channels=8, out_channels=8, in_h=20, in_w=20, kernel=3)
    with pytest.raises(LayerFailed, match="groups == in_channels"):
        kernels.plan_layer(dense, "depthwise")
    with pytest.raises(LayerFailed, match="unknown conv2d implementation"):
        kernels.plan_layer(dense, "winograd")
    with pytest.raises(LayerFailed, match="one implementation"):
        kernels.plan_layer(Layer("relu", in_channels=4), "cublas")


@pytest.mark.parametrize("batch", [1, 8, 9, 256])
def test_linear_plans(batch: int) -> None:
    layer = Layer("linear", in_features=1000, out_features=513, batch=batch)
    (launch,) = _launches(kernels.plan_layer(layer, "kernel"))
    if batch <= 8:
        assert launch.kernel == "np_gemm_small_batch" and launch.grid == (math.ceil(513 / 8), 1, 1)
        assert _ints(launch) == [batch, 513, 1000, 1, 1]  # M, N, K, has_bias, vec4 (1000 % 4 == 0)
    else:
        assert launch.kernel == "np_gemm_tiled" and launch.grid == (9, math.ceil(batch / 64), 1)
    cublas = kernels.plan_layer(layer, "cublas")
    assert cublas.impl == "cublas" and isinstance(cublas.steps[0], kernels.CublasGemm)
    assert _launches(cublas)[0].kernel == "np_gemm_bias"
    no_bias = kernels.plan_layer(layer.replace(bias=0), "cublas")
    assert len(no_bias.steps) == 1 and no_bias.params == ("weight", "dummy")


@pytest.mark.parametrize(
    "layer",
    [
        Layer("relu", in_channels=3, in_h=5, in_w=7, batch=2),
        Layer("gelu", in_channels=64, in_h=56, in_w=56, batch=4),
        Layer("batchnorm2d", in_channels=5, in_h=3, in_w=3, batch=2),
        Layer("batchnorm2d", in_channels=64, in_h=56, in_w=56, batch=2),
        Layer("add", in_channels=7, in_h=3, in_w=3, batch=2, inputs=3),
        Layer("mul", in_channels=96, in_h=28, in_w=28, batch=2, inputs=2, broadcast=1),
        Layer("channel_shuffle", in_channels=116, in_h=28, in_w=28, batch=2, groups=2),
        Layer("maxpool2d", in_channels=64, in_h=112, in_w=112, kernel=3, stride=2, padding=1, batch=2),
        Layer("avgpool2d", in_channels=3, in_h=13, in_w=13, kernel=3, stride=2, ceil_mode=1),
        Layer("adaptive_avgpool2d", in_channels=512, in_h=13, in_w=13, out_h=6, out_w=6),
        Layer("softmax", in_channels=21, in_h=7, in_w=9, batch=2),
    ],
)
def test_flat_grids_cover_the_output_tightly(layer: Layer) -> None:
    (launch,) = _launches(kernels.plan_layer(layer))
    assert launch.block == (256, 1, 1)
    hw = layer.in_h * layer.in_w
    elements = math.prod(layer.in_shape)
    if layer.type in ("relu", "gelu") or (layer.type in ("add", "mul") and not layer.broadcast):
        per_thread, work = 4, elements
    elif layer.type in ("batchnorm2d", "mul", "channel_shuffle"):
        per_thread, work = (4 if hw % 4 == 0 else 1), elements
        assert _ints(launch)[-1] == int(hw % 4 == 0)
    elif layer.type == "softmax":
        per_thread, work = 1, layer.batch * hw
    else:  # pooling: one thread per output
        per_thread, work = 1, math.prod(layer.out_shape)
    threads = launch.grid[0] * 256
    assert threads * per_thread >= work > (threads - 256) * per_thread


def test_global_pool_and_softmax_rows() -> None:
    small = kernels.plan_layer(Layer("adaptive_avgpool2d", in_channels=1280, in_h=7, in_w=7, batch=3))
    (launch,) = _launches(small)
    assert launch.kernel == "np_pool_global_avg" and launch.block == (32, 8, 1)
    assert launch.grid == (math.ceil(3 * 1280 / 8), 1, 1) and _ints(launch) == [3 * 1280, 49, 0]
    large = kernels.plan_layer(Layer("adaptive_avgpool2d", in_channels=3, in_h=64, in_w=64, batch=1))
    assert _launches(large)[0].block == (256, 1, 1) and _launches(large)[0].grid == (3, 1, 1)
    rows = kernels.plan_layer(Layer("softmax", in_channels=1000, batch=5))
    assert _launches(rows)[0].kernel == "np_elementwise_softmax_rows" and _launches(rows)[0].grid == (5, 1, 1)


def test_concat_plan_splits_channels_as_the_reference() -> None:
    layer = Layer("concat", in_channels=11, in_h=4, in_w=4, batch=2, inputs=3)
    (launch,) = _launches(kernels.plan_layer(layer))
    table, chans, offsets = launch.args[:3]
    assert isinstance(table, kernels.PtrTable) and table.names == ("x0", "x1", "x2")
    assert isinstance(chans, kernels.IntTable) and list(chans.values) == ref.concat_channels(11, 3) == [4, 4, 3]
    assert isinstance(offsets, kernels.IntTable) and offsets.values == (0, 4, 8)
    assert launch.grid == (math.ceil(2 * 4 * 16 / 1024), 3, 1)


def test_token_type_plans() -> None:
    tokens = kernels.plan_layer(Layer("linear", in_features=64, out_features=30, tokens=5, batch=3), "kernel")
    (launch,) = _launches(tokens)
    assert launch.kernel == "np_gemm_tiled" and _ints(launch)[:3] == [15, 30, 64]  # M = batch * tokens
    rows = _launches(kernels.plan_layer(Layer("layernorm", in_features=768, tokens=197, batch=4)))[0]
    assert rows.kernel == "np_norm_layernorm" and rows.block == (32, 8, 1) and rows.grid == (math.ceil(788 / 8), 1, 1)
    wide = _launches(kernels.plan_layer(Layer("layernorm", in_features=4096, tokens=3, batch=2)))[0]
    assert wide.block == (256, 1, 1) and wide.grid == (6, 1, 1) and _ints(wide) == [6, 4096]
    cf = kernels.plan_layer(Layer("layernorm", in_features=96, tokens=56 * 56, channels_first=1, batch=2))
    assert cf.params == ("weight", "bias") and _launches(cf)[0].kernel == "np_norm_layernorm_cf"
    assert _launches(cf)[0].grid == (math.ceil(2 * 56 * 56 / 256), 1, 1) and _ints(_launches(cf)[0]) == [2, 96, 3136]
    mm = _launches(kernels.plan_layer(Layer("matmul", heads=12, tokens=197, in_features=64, out_features=197, batch=2)))
    assert mm[0].kernel == "np_gemm_batched" and mm[0].grid == (4, 4, 24)
    assert _ints(mm[0]) == [197, 197, 64, 197 * 64, 64 * 197, 197 * 197]
    shared = _launches(kernels.plan_layer(Layer("matmul", tokens=50, in_features=32, out_features=8, broadcast=1)))
    assert _ints(shared[0])[4] == 0  # one B for every batch: stride 0
    cublas = kernels.plan_layer(Layer("matmul", tokens=5, in_features=4, out_features=3), "cublas")
    assert cublas.impl == "cublas" and cublas.steps == (kernels.CublasMatmul("x0", "x1", "y"),)
    att = kernels.plan_layer(Layer("attention", heads=12, tokens=197, kv_tokens=50, head_dim=64, causal=1, batch=2))
    assert att.inputs == ("x0", "x1", "x2")
    (launch,) = _launches(att)
    assert launch.grid == (50, 24, 1) and launch.block == (128, 1, 1) and _ints(launch) == [197, 50, 64, 1, 1]
    with pytest.raises(LayerFailed, match="head_dim up to 128"):
        kernels.plan_layer(Layer("attention", heads=2, tokens=8, head_dim=160))
    emb = kernels.plan_layer(Layer("embedding", tokens=7, in_features=1000, out_features=12, batch=3))
    assert emb.params == ("weight",) and _ints(_launches(emb)[0]) == [21, 12, 1000, 1]
    assert _launches(emb)[0].grid == (math.ceil(21 * 12 / 4 / 256), 1, 1)
    up = _launches(
        kernels.plan_layer(Layer("upsample", in_channels=3, in_h=5, in_w=7, out_h=10, out_w=14, interpolation=1))
    )
    assert up[0].kernel == "np_elementwise_upsample_bilinear" and _ints(up[0]) == [3, 5, 7, 10, 14]
    tconv = Layer("conv_transpose2d", in_channels=8, out_channels=4, in_h=7, in_w=7, kernel=3, stride=2, padding=1,
                  output_padding=1, groups=2, bias=0)
    (launch,) = _launches(kernels.plan_layer(tconv))
    assert launch.kernel == "np_conv_transpose_direct" and launch.grid == (math.ceil(4 * 14 * 14 / 256), 1, 1)
    assert _ints(launch) == [1, 8, 7, 7, 4, 14, 14, 3, 3, 2, 2, 1, 1, 1, 1, 2, 0]
    gelu = _launches(kernels.plan_layer(Layer("gelu", in_channels=768, in_h=197, approximate="tanh")))
    assert gelu[0].kernel == "np_elementwise_gelu_tanh"
    last = _launches(kernels.plan_layer(Layer("softmax", in_channels=197, in_h=12 * 197, channels_first=0, batch=2)))
    assert last[0].kernel == "np_elementwise_softmax_lastdim" and last[0].block == (32, 8, 1)
    assert _ints(last[0]) == [2 * 12 * 197, 197]
    rows_1x1 = _launches(kernels.plan_layer(Layer("softmax", in_channels=1000, channels_first=0, batch=3)))
    assert rows_1x1[0].kernel == "np_elementwise_softmax_rows"  # H = W = 1: both layouts are the same
    with pytest.raises(LayerFailed, match="one implementation"):
        kernels.plan_layer(Layer("layernorm", in_features=8, tokens=2), "cublas")


def test_flatten_is_a_view() -> None:
    plan = kernels.plan_layer(Layer("flatten", in_channels=8, in_h=2, in_w=3, batch=2))
    assert plan.steps == () and plan.output == "x0"


def test_limits() -> None:
    with pytest.raises(LayerFailed, match="fp32, fp16"):
        kernels.plan_layer(Layer("relu", in_channels=4, dtype="bf16"))
    with pytest.raises(LayerFailed, match="fp32, fp16, not fp8"):
        kernels.plan_layer(Layer("relu", in_channels=4, dtype="fp8"))
    with pytest.raises(LayerFailed, match="kv_heads = heads"):
        kernels.plan_layer(Layer("attention", heads=4, kv_heads=2, tokens=6, head_dim=8))
    with pytest.raises(LayerFailed, match="without a window"):
        kernels.plan_layer(Layer("attention", heads=4, tokens=6, head_dim=8, window=3))
    with pytest.raises(LayerFailed, match="32-bit indexing"):
        kernels.plan_layer(Layer("relu", in_channels=2048, in_h=1024, in_w=1024))
    with pytest.raises(LayerFailed, match="grid"):
        kernels.Launch("np_pool_max", "fp32", (1, 70000, 1), (256, 1, 1), ())
    with pytest.raises(LayerFailed, match="too large"):
        kernels.Launch("np_conv_depthwise", "fp32", (1, 1, 1), (256, 1, 1), (), 64 * 1024)


# -- checks on small copies ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "layer",
    [
        Layer("conv2d", in_channels=256, out_channels=256, in_h=56, in_w=56, kernel=3, padding=1, batch=256),
        Layer("conv2d", in_channels=960, out_channels=960, in_h=14, in_w=14, kernel=5, padding=2, groups=960, batch=64),
        Layer("conv2d", in_channels=3, out_channels=64, in_h=224, in_w=224, kernel=7, stride=2, padding=3, batch=32),
        Layer("linear", in_features=25088, out_features=4096, batch=256),
        Layer("linear", in_features=9217, out_features=4096, batch=4, dtype="fp16"),
        Layer("relu", in_channels=64, in_h=112, in_w=112, batch=256),
        Layer("channel_shuffle", in_channels=232, in_h=14, in_w=14, groups=2, batch=128),
        Layer("concat", in_channels=1024, in_h=7, in_w=7, inputs=33, batch=128),
        Layer("maxpool2d", in_channels=64, in_h=112, in_w=112, kernel=3, stride=2, padding=1, batch=128),
        Layer("add", in_channels=256, in_h=56, in_w=56, inputs=2, batch=64),
        Layer("softmax", in_channels=1000, batch=256),
        Layer("softmax", in_channels=4096, in_h=32 * 4096, channels_first=0, batch=8),
        Layer("linear", in_features=4096, out_features=11008, tokens=2048, batch=16),
        Layer("layernorm", in_features=8192, tokens=4096, batch=64),
        Layer("layernorm", in_features=96, tokens=112 * 112, channels_first=1, batch=64),
        Layer("matmul", heads=32, tokens=4096, in_features=128, out_features=4096, batch=8),
        Layer("matmul", tokens=2048, in_features=4096, out_features=4096, broadcast=1, batch=8),
        Layer("attention", heads=32, tokens=4096, kv_tokens=1024, head_dim=128, causal=1, batch=16),
        Layer("embedding", tokens=4096, in_features=128256, out_features=8192, batch=8),
        Layer("upsample", in_channels=256, in_h=64, in_w=64, out_h=128, out_w=128, interpolation=1, batch=32),
        Layer("conv_transpose2d", in_channels=256, out_channels=128, in_h=56, in_w=56, kernel=2, stride=2, batch=32),
    ],
)
def test_small_layer_keeps_the_code_path(layer: Layer) -> None:
    small = small_layer(layer)
    assert small.type == layer.type and small.dtype == layer.dtype
    token_type = layer.type in ("layernorm", "matmul", "attention", "embedding") or layer.tokens > 1
    if token_type:
        assert small.batch <= 2 and small.heads == min(layer.heads, 2)
        cost = small.macs if layer.type in ("linear", "matmul", "attention") else math.prod(small.out_shape)
        assert cost <= (CHECK_MACS if layer.type in ("linear", "matmul", "attention") else CHECK_ELEMENTS)
        keep = {"layernorm": ("in_features", "channels_first"), "attention": ("head_dim", "causal"),
                "matmul": ("broadcast",), "embedding": ("out_features",), "linear": ()}[layer.type]
        assert all(getattr(small, f) == getattr(layer, f) for f in keep)
        if layer.type == "linear":
            assert small.batch * small.tokens > 8 and small.in_features % 4 == layer.in_features % 4
        assert kernels.plan_layer(small).steps  # plans (and launches) as the layer does
    elif layer.type in ("conv2d", "conv_transpose2d"):
        assert small.macs <= CHECK_MACS or (small.in_h, small.in_w) == (1, 1)
        keep = ("in_channels", "out_channels", "kernel", "stride", "padding", "dilation", "groups", "bias", "type")
        assert all(getattr(small, f) == getattr(layer, f) for f in keep)
        assert small.batch == min(layer.batch, 2)
        if layer.groups > 1:
            assert kernels.conv_impl(small) in ("depthwise", "depthwise_direct")
    elif layer.type == "linear":
        assert small.macs <= CHECK_MACS
        assert (small.batch <= 8) == (layer.batch <= 8) and small.in_features % 4 == layer.in_features % 4
    else:
        assert math.prod(small.in_shape) * (small.inputs if small.type == "add" else 1) <= CHECK_ELEMENTS
        assert small.batch <= 2
        if small.type == "channel_shuffle":
            assert small.groups == layer.groups and small.in_channels % small.groups == 0
        if small.type == "softmax" and not layer.channels_first:  # the row length selects warp or block
            assert small.in_channels == layer.in_channels and small.channels_first == 0
        elif small.type in ("softmax", "concat"):
            assert (small.in_h, small.in_w) == (layer.in_h, layer.in_w) and small.inputs == layer.inputs
        if small.type == "upsample":
            assert small.interpolation == layer.interpolation and math.prod(small.out_shape) <= CHECK_ELEMENTS


def test_small_layers_are_unchanged() -> None:
    layer = Layer("conv2d", in_channels=3, out_channels=5, in_h=7, in_w=9, kernel=3, batch=2)
    assert small_layer(layer) == layer


def test_compare_with_reference_accepts_matching_infinities() -> None:
    layer = Layer("maxpool2d", in_channels=1, in_h=2, in_w=2, kernel=2)
    expected = np.array([[[[-np.inf]]]])
    compare_with_reference(np.array([[[[-np.inf]]]], dtype=np.float32), expected, layer)
    with pytest.raises(AssertionError, match="infinite"):
        compare_with_reference(np.array([[[[0.0]]]], dtype=np.float32), expected, layer)
    with pytest.raises(AssertionError, match="non-finite"):
        compare_with_reference(np.array([[[[np.nan]]]]), np.array([[[[1.0]]]]), layer)


# -- executors without their libraries ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "library", "extra"), [("cupy", "cupy", "neuralpower[gpu]"), ("torch", "torch", "neuralpower[torch]")]
)
def test_executor_without_its_library(monkeypatch: pytest.MonkeyPatch, name: str, library: str, extra: str) -> None:
    monkeypatch.setitem(sys.modules, library, None)  # `import library` now raises ImportError
    with pytest.raises(ExecutorUnavailable) as info:
        get_executor(name, device="cuda:0")
    message = str(info.value)
    assert f"pip install '{extra}'" in message and "\n" not in message


def test_gpu_executors_need_a_cuda_device_string() -> None:
    assert parse_cuda_device("cuda:1", "cupy") == 1 and parse_cuda_device("cuda", "cupy") == 0
    with pytest.raises(ExecutorUnavailable, match="cuda:N"):
        parse_cuda_device("cpu", "torch")


# -- the kernels on the host --------------------------------------------------------------------------------

# A host emulation of the CUDA features the kernels use: one std::thread per CUDA thread, blocks run one
# after the other (so function-local statics are the block's shared memory), __syncthreads as a barrier
# that exited threads drop out of (as on the GPU), warp shuffles through a per-warp exchange.
_SHIM = r"""
#include <algorithm>
#include <barrier>
#include <cmath>
#include <cstddef>
#include <cstring>
#include <memory>
#include <thread>
#include <type_traits>
#include <utility>
#include <vector>
using std::max;
using std::min;
struct dim3 {
    unsigned x = 1, y = 1, z = 1;
    dim3() = default;
    dim3(unsigned a, unsigned b = 1, unsigned c = 1) : x(a), y(b), z(c) {}
};
struct float4 { float x, y, z, w; };
struct uint2 { unsigned int x, y; };
inline float4 make_float4(float a, float b, float c, float d) { return {a, b, c, d}; }
inline uint2 make_uint2(unsigned a, unsigned b) { return {a, b}; }
static thread_local dim3 threadIdx;
static thread_local int np_emu_tid = 0;
static dim3 blockIdx, blockDim, gridDim;
static unsigned char* np_emu_dynamic_smem = nullptr;
struct np_emu_warp { std::barrier<>* bar; float slots[32]; };
static std::barrier<>* np_emu_block_barrier = nullptr;
static np_emu_warp* np_emu_warps = nullptr;
#define __global__
#define __device__
#define __forceinline__ inline
#define __launch_bounds__(...)
#define __shared__ static
#define __align__(n) __attribute__((aligned(n)))
inline void __syncthreads() { np_emu_block_barrier->arrive_and_wait(); }
template <typename T> inline T __ldg(const T* p) { return *p; }
inline float __int_as_float(unsigned i) { float f; std::memcpy(&f, &i, 4); return f; }
inline float __shfl_xor_sync(unsigned, float v, int offset) {
    np_emu_warp& w = np_emu_warps[np_emu_tid / 32];
    const int lane = np_emu_tid % 32;
    w.slots[lane] = v;
    w.bar->arrive_and_wait();
    const float r = w.slots[lane ^ offset];
    w.bar->arrive_and_wait();
    return r;
}
inline float __shfl_sync(unsigned, float v, int src) {
    np_emu_warp& w = np_emu_warps[np_emu_tid / 32];
    w.slots[np_emu_tid % 32] = v;
    w.bar->arrive_and_wait();
    const float r = w.slots[src & 31];
    w.bar->arrive_and_wait();
    return r;
}
inline void __syncwarp() { np_emu_warps[np_emu_tid / 32].bar->arrive_and_wait(); }
inline float np_emu_h2f(unsigned short b) { _Float16 h; std::memcpy(&h, &b, 2); return (float)h; }
inline unsigned short np_emu_f2h(float f) {
    _Float16 h = (_Float16)f;  // round to nearest even, as cvt.rn
    unsigned short b;
    std::memcpy(&b, &h, 2);
    return b;
}
template <typename... P, std::size_t... I>
void np_emu_call(void (*f)(P...), void** args, std::index_sequence<I...>) {
    f(*reinterpret_cast<std::remove_cv_t<std::remove_reference_t<P>>*>(args[I])...);
}
template <typename... P>
void np_emu_launch(void (*f)(P...), dim3 grid, dim3 block, std::size_t smem, void** args) {
    gridDim = grid;
    blockDim = block;
    const int nthreads = block.x * block.y * block.z;
    std::vector<unsigned char> dynamic(smem + 16);
    np_emu_dynamic_smem = dynamic.data();
    for (unsigned bz = 0; bz < grid.z; ++bz)
        for (unsigned by = 0; by < grid.y; ++by)
            for (unsigned bx = 0; bx < grid.x; ++bx) {
                blockIdx = dim3(bx, by, bz);
                std::barrier<> bar(nthreads);
                const int nwarps = (nthreads + 31) / 32;
                std::vector<std::unique_ptr<std::barrier<>>> owned;
                std::vector<np_emu_warp> warps(nwarps);
                for (int i = 0; i < nwarps; ++i) {
                    owned.emplace_back(new std::barrier<>(std::min(32, nthreads - 32 * i)));
                    warps[i].bar = owned.back().get();
                }
                np_emu_block_barrier = &bar;
                np_emu_warps = warps.data();
                std::vector<std::thread> threads;
                for (int t = 0; t < nthreads; ++t)
                    threads.emplace_back([&, t] {
                        np_emu_tid = t;
                        threadIdx = dim3(t % block.x, (t / block.x) % block.y, t / (block.x * block.y));
                        np_emu_call(f, args, std::index_sequence_for<P...>{});
                        warps[t / 32].bar->arrive_and_drop();
                        bar.arrive_and_drop();
                    });
                for (auto& th : threads) th.join();
            }
}
"""

_PROBE = """#include <barrier>
int main() { std::barrier<> b(1); b.arrive_and_wait(); _Float16 h = 1; return (int)(float)h - 1; }
"""


def _emulation_source(family: str) -> str:
    """A family's source, with the PTX conversions and the dynamic shared memory made host C++, and one
    ``emu_<i>`` entry point per name expression."""
    source = kernels.kernel_source(family)
    replacements = {
        'asm("cvt.f32.f16 %0, %1;" : "=f"(f) : "h"(v.bits));': "f = np_emu_h2f(v.bits);",
        'asm("cvt.rn.f16.f32 %0, %1;" : "=h"(h.bits) : "f"(f));': "h.bits = np_emu_f2h(f);",
        "extern __shared__ float np_dw_smem[];": "float* np_dw_smem = reinterpret_cast<float*>(np_emu_dynamic_smem);",
    }
    for old, new in replacements.items():
        source = source.replace(old, new)
    assert "asm(" not in source
    entries = "".join(
        f'extern "C" void emu_{i}(unsigned gx, unsigned gy, unsigned gz, unsigned bx, unsigned by, unsigned bz, '
        f"unsigned long smem, void** args) {{\n"
        f"    np_emu_launch(&{name}, dim3(gx, gy, gz), dim3(bx, by, bz), smem, args);\n}}\n"
        for i, name in enumerate(kernels.name_expressions(family))
    )
    return _SHIM + re.sub(r"^#line .*$", "", source, flags=re.M) + "\n" + entries


class _Emulator:
    def __init__(self, directory: Path) -> None:
        def build(family: str) -> Path:
            cpp, lib = directory / f"emu_{family}.cpp", directory / f"emu_{family}.so"
            cpp.write_text(_emulation_source(family))
            cmd = ["g++", "-std=c++20", "-O1", "-w", "-fPIC", "-shared", "-pthread", str(cpp), "-o", str(lib)]
            result = subprocess.run(cmd, capture_output=True, text=True, check=False)
            assert result.returncode == 0, result.stderr[-4000:]
            return lib

        with ThreadPoolExecutor(max_workers=len(kernels.FAMILIES)) as pool:
            libs = dict(zip(kernels.FAMILIES, pool.map(build, kernels.FAMILIES), strict=True))
        self.libs = {family: ctypes.CDLL(str(path)) for family, path in libs.items()}
        self.used: set[str] = set()

    def launch(self, step: kernels.Launch, bufs: dict[str, np.ndarray]) -> None:
        family = kernels.family_of(step.kernel)
        entry = getattr(self.libs[family], f"emu_{kernels.name_expressions(family).index(step.name_expression)}")
        keep: list[Any] = []
        pointers = []
        for arg in step.args:
            value: Any
            if isinstance(arg, kernels.Buf):
                value = ctypes.c_void_p(bufs[arg.name].ctypes.data)
            elif isinstance(arg, kernels.PtrTable | kernels.IntTable):
                table = (
                    np.array([bufs[n].ctypes.data for n in arg.names], dtype=np.uint64)
                    if isinstance(arg, kernels.PtrTable)
                    else np.array(arg.values, dtype=np.int32)
                )
                keep.append(table)
                value = ctypes.c_void_p(table.ctypes.data)
            else:
                value = ctypes.c_int(int(arg))
            keep.append(value)
            pointers.append(ctypes.cast(ctypes.pointer(value), ctypes.c_void_p).value)
        argv = (ctypes.c_void_p * len(pointers))(*pointers)
        dims = [ctypes.c_uint(v) for v in (*step.grid, *step.block)]
        entry(*dims, ctypes.c_ulong(step.shared_bytes), argv)
        self.used.add(step.kernel)

    def run(self, layer: Layer, impl: str = "", seed: int = 0) -> tuple[np.ndarray, np.ndarray, kernels.LayerPlan]:
        """The layer's output computed by the emulated kernels, the reference's, and the plan."""
        plan = kernels.plan_layer(layer, impl)
        ops = ref.make_operands(layer, np.random.default_rng(seed))
        dt = ref.numpy_dtype(layer.dtype)
        bufs = {name: np.ascontiguousarray(x) for name, x in zip(plan.inputs, ops.inputs, strict=True)}
        p = {k: v.astype(np.float64) for k, v in ops.params.items()}
        for name in plan.params:
            if name in ("weight", "bias"):
                bufs[name] = np.ascontiguousarray(ops.params[name])
            elif name == "dummy":
                bufs[name] = np.zeros(1, dtype=dt)
            else:
                scale = p["weight"] / np.sqrt(p["running_var"] + ref.BN_EPS)
                bufs[name] = (scale if name == "scale" else p["bias"] - p["running_mean"] * scale).astype(np.float32)
        shape = ref.output_shape(layer)
        if plan.output == "y":
            bufs["y"] = np.full(shape, np.nan, dtype=dt)  # poisoned: unwritten elements show
        for step in plan.steps:
            if isinstance(step, kernels.CublasGemm):  # cuBLAS's part, in NumPy
                product = bufs[step.x].astype(np.float32) @ bufs[step.w].astype(np.float32).T
                bufs[step.y][...] = product.astype(dt)
            elif isinstance(step, kernels.CublasMatmul):
                bufs[step.y][...] = (bufs[step.a].astype(np.float32) @ bufs[step.b].astype(np.float32)).astype(dt)
            else:
                self.launch(step, bufs)
        return bufs[plan.output].reshape(shape), ref.forward(layer, ops), plan


@pytest.fixture(scope="module")
def emulator(tmp_path_factory: pytest.TempPathFactory) -> _Emulator:
    if shutil.which("g++") is None:
        pytest.skip("g++ is not installed")
    directory = tmp_path_factory.mktemp("emulator")
    probe = directory / "probe.cpp"
    probe.write_text(_PROBE)
    result = subprocess.run(["g++", "-std=c++20", str(probe), "-o", str(directory / "probe")], check=False)
    if result.returncode != 0:
        pytest.skip("g++ lacks C++20 std::barrier or _Float16")
    return _Emulator(directory)


def _conv(c: int, co: int, h: int, w: int, k: int | tuple[int, int], **fields: Any) -> Layer:
    return Layer("conv2d", in_channels=c, out_channels=co, in_h=h, in_w=w, kernel=k, **fields)


def _spatial(kind: str, c: int, h: int, w: int, **fields: Any) -> Layer:
    return Layer(kind, in_channels=c, in_h=h, in_w=w, **fields)


def _emulated_cases() -> list[tuple[Layer, str]]:
    """Small layers (the emulation runs a thread per CUDA thread) covering every kernel and code path."""
    cases: list[tuple[Layer, str]] = []
    for dt in FP:
        b2 = dict(batch=2, dtype=dt)
        cases += [
            (_conv(3, 5, 7, 9, 3, padding=1, **b2), ""),
            (_conv(6, 70, 13, 11, (3, 5), stride=2, padding=(1, 2), dilation=(2, 1), bias=0, **b2), ""),
            (_conv(33, 17, 5, 5, 1, **b2), ""),
            (_conv(8, 12, 9, 9, 3, groups=4, padding=1, **b2), ""),
            (_conv(4, 8, 20, 37, 3, padding=1, groups=4, **b2), ""),  # depthwise, multiplier 2
            (_conv(3, 3, 40, 19, 5, stride=2, padding=2, dilation=2, groups=3, bias=0, **b2), "depthwise"),
            (_conv(5, 5, 7, 7, 3, stride=2, padding=1, groups=5, **b2), ""),  # depthwise, direct
            (_conv(5, 10, 9, 7, 3, padding=1, groups=5, **b2), "implicit_gemm"),
            (Layer("linear", in_features=37, out_features=11, batch=3, dtype=dt), "kernel"),
            (Layer("linear", in_features=40, out_features=70, batch=8, dtype=dt), "kernel"),
            (Layer("linear", in_features=37, out_features=70, batch=67, bias=0, dtype=dt), "kernel"),
            (Layer("linear", in_features=40, out_features=11, batch=9, dtype=dt), "cublas"),
            (_spatial("maxpool2d", 3, 13, 13, kernel=3, stride=2, padding=1, **b2), ""),
            (_spatial("maxpool2d", 2, 9, 9, kernel=3, stride=2, dilation=2, padding=1, ceil_mode=1, **b2), ""),
            (_spatial("avgpool2d", 3, 13, 12, kernel=3, stride=2, padding=1, ceil_mode=1, **b2), ""),
            (_spatial("adaptive_avgpool2d", 3, 13, 10, out_h=4, out_w=3, **b2), ""),
            (_spatial("adaptive_avgpool2d", 5, 7, 7, **b2), ""),  # global: a warp per plane
            (_spatial("adaptive_avgpool2d", 2, 48, 48, batch=1, dtype=dt), ""),  # global: a block per plane
            (_spatial("batchnorm2d", 5, 4, 4, **b2), ""),
            (_spatial("batchnorm2d", 5, 3, 3, **b2), ""),
            (_spatial("add", 5, 3, 3, inputs=3, **b2), ""),
            (_spatial("mul", 5, 4, 4, inputs=2, **b2), ""),
            (_spatial("mul", 5, 4, 4, inputs=2, broadcast=1, **b2), ""),
            (_spatial("add", 5, 3, 5, inputs=3, broadcast=1, **b2), ""),
            (_spatial("concat", 11, 3, 3, inputs=3, **b2), ""),
            (_spatial("concat", 10, 4, 4, inputs=4, **b2), ""),
            (_spatial("softmax", 7, 3, 5, **b2), ""),
            (_spatial("softmax", 300, 1, 1, **b2), ""),
            (_spatial("channel_shuffle", 6, 3, 3, groups=3, **b2), ""),
            (_spatial("channel_shuffle", 8, 2, 2, groups=2, **b2), ""),
            (_spatial("flatten", 8, 2, 3, **b2), ""),
            # transformer and decoder types
            (Layer("linear", in_features=12, out_features=10, tokens=5, **b2), "kernel"),  # M = 10: tiled
            (Layer("linear", in_features=12, out_features=10, tokens=3, batch=2, bias=0, dtype=dt), "kernel"),
            (Layer("linear", in_features=12, out_features=10, tokens=5, **b2), "cublas"),
            (Layer("layernorm", in_features=45, tokens=11, **b2), ""),  # a warp per row
            (Layer("layernorm", in_features=2100, tokens=2, batch=1, dtype=dt), ""),  # a block per row
            (Layer("layernorm", in_features=7, tokens=20, channels_first=1, **b2), ""),
            (Layer("matmul", heads=3, tokens=9, in_features=20, out_features=70, **b2), "kernel"),
            (Layer("matmul", tokens=67, in_features=17, out_features=5, broadcast=1, **b2), "kernel"),
            (Layer("matmul", heads=2, tokens=5, in_features=8, out_features=6, broadcast=1, **b2), "cublas"),
            (Layer("attention", heads=2, tokens=9, kv_tokens=40, head_dim=16, **b2), ""),
            (Layer("attention", heads=1, tokens=37, kv_tokens=5, head_dim=36, causal=1, **b2), ""),
            (Layer("attention", heads=3, tokens=6, kv_tokens=70, head_dim=7, causal=1, batch=1, dtype=dt), ""),
            (Layer("embedding", tokens=7, in_features=30, out_features=12, **b2), ""),
            (Layer("embedding", tokens=7, in_features=30, out_features=5, **b2), ""),
            (_spatial("upsample", 3, 5, 7, out_h=10, out_w=14, **b2), ""),
            (_spatial("upsample", 2, 14, 9, out_h=20, out_w=4, **b2), ""),  # 14/20 rounds down in float32
            (_spatial("upsample", 3, 5, 7, out_h=11, out_w=9, interpolation="bilinear", **b2), ""),
            (_spatial("upsample", 2, 9, 8, out_h=4, out_w=3, interpolation="bilinear", **b2), ""),
            (Layer("conv_transpose2d", in_channels=4, out_channels=6, in_h=5, in_w=4, kernel=3, stride=2, padding=1,
                   output_padding=1, groups=2, **b2), ""),
            (Layer("conv_transpose2d", in_channels=3, out_channels=5, in_h=4, in_w=6, kernel=(2, 3), stride=(3, 1),
                   padding=(0, 2), dilation=(1, 2), output_padding=(2, 1), bias=0, **b2), ""),
            (_spatial("gelu", 3, 5, 7, approximate="tanh", **b2), ""),
            (_spatial("softmax", 45, 6, 1, channels_first=0, **b2), ""),  # a warp per row
            (_spatial("softmax", 2100, 2, 1, channels_first=0, batch=1, dtype=dt), ""),  # a block per row
        ]
        cases += [(_spatial(t, 3, 5, 7, **b2), "") for t in kernels.ACTIVATION_KERNELS]
    return cases


_CASES = _emulated_cases()


@pytest.mark.slow
@pytest.mark.parametrize(("layer", "impl"), _CASES, ids=[f"{c[0].type}-{c[0].dtype}-{i}" for i, c in enumerate(_CASES)])
def test_kernels_match_the_reference_on_the_host(emulator: _Emulator, layer: Layer, impl: str) -> None:
    actual, expected, plan = emulator.run(layer, impl, seed=len(emulator.used))
    assert not plan.impl or not impl or plan.impl == impl
    compare_with_reference(actual, expected, layer)


@pytest.mark.slow
def test_the_host_cases_use_every_kernel(emulator: _Emulator) -> None:
    used = {
        s.kernel
        for layer, impl in _CASES
        for s in kernels.plan_layer(layer, impl).steps
        if isinstance(s, kernels.Launch)
    }
    assert used == {t for templates in kernels.KERNELS.values() for t in templates}
