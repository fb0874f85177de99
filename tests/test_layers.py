"""Layers: defaults, validation, shapes and counts, checked against formulas written out independently."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import neuralpower as npw
from neuralpower import Architecture, InputError, Layer
from neuralpower.layers import FEATURES, FIELDS, prepare_rows


def torch_out(size: int, k: int, s: int, p: int, d: int = 1, ceil: bool = False) -> int:
    """Output size along one axis as PyTorch computes it (aten's pooling_output_shape; convolution is the
    floor-mode case)."""
    out = (size + 2 * p - d * (k - 1) - 1 + (s - 1 if ceil else 0)) // s + 1
    if ceil and (out - 1) * s >= size + p:
        out -= 1
    return out


def test_conv_counts_by_hand() -> None:
    layer = Layer(
        "conv2d", batch=2, in_channels=64, in_h=56, in_w=56, out_channels=128, kernel=3, stride=2, padding=1, bias=0
    )
    assert layer.out_shape == (2, 128, 28, 28)
    assert layer.params == 128 * 64 * 3 * 3
    assert layer.macs == 2 * 128 * 28 * 28 * 64 * 9
    assert layer.flops == 2 * layer.macs
    assert layer.bytes_input == 2 * 64 * 56 * 56 * 4
    assert layer.bytes_weights == layer.params * 4
    assert layer.bytes_output == 2 * 128 * 28 * 28 * 4
    assert layer.bytes_moved == layer.bytes_input + layer.bytes_weights + layer.bytes_output


def test_conv_bias_adds_params_and_flops() -> None:
    base = dict(in_channels=3, in_h=8, in_w=8, out_channels=5, kernel=3)
    no_bias, bias = Layer("conv2d", bias=0, **base), Layer("conv2d", bias=1, **base)
    assert bias.params - no_bias.params == 5
    assert bias.flops - no_bias.flops == 5 * 6 * 6
    assert Layer("conv2d", **base).bias == 1  # PyTorch's default


def test_depthwise_and_grouped_conv() -> None:
    dw = Layer("conv2d", in_channels=32, in_h=112, in_w=112, out_channels=32, kernel=3, padding=1, groups=32, bias=0)
    assert dw.params == 32 * 9
    assert dw.macs == 32 * 112 * 112 * 9
    grouped = Layer("conv2d", in_channels=64, in_h=8, in_w=8, out_channels=128, kernel=1, groups=4, bias=0)
    assert grouped.params == 128 * 16


def test_non_square_and_dilated_conv() -> None:
    layer = Layer(
        "conv2d",
        in_channels=4,
        in_h=17,
        in_w=17,
        out_channels=4,
        kernel=(1, 7),
        padding=(0, 3),
        dilation=(2, 1),
        bias=0,
    )
    assert layer.out_shape == (1, 4, 17, 17)
    assert layer.kernel == (1, 7) and layer.dilation == (2, 1)
    assert layer.macs == 4 * 17 * 17 * 4 * 7


def test_linear() -> None:
    layer = Layer("linear", batch=8, in_features=4096, out_features=1000)
    assert layer.in_shape == (8, 4096) and layer.out_shape == (8, 1000)
    assert layer.params == 4096 * 1000 + 1000
    assert layer.macs == 8 * 4096 * 1000
    assert layer.flops == 2 * layer.macs + 8 * 1000


def test_pool_stride_defaults_to_kernel_and_ceil_mode() -> None:
    pool = Layer("maxpool2d", in_channels=64, in_h=112, in_w=112, kernel=2)
    assert pool.stride == (2, 2) and pool.out_shape == (1, 64, 56, 56)
    # GoogLeNet's maxpool1: 3x3 stride 2, ceil mode, on 112 -> 56 (floor mode would give 55)
    ceil = Layer("maxpool2d", in_channels=64, in_h=112, in_w=112, kernel=3, stride=2, ceil_mode=1)
    assert ceil.out_shape == (1, 64, 56, 56)
    # In ceil mode a window may overhang the input (SqueezeNet at small sizes): 3x3/2 on 2x2 gives 1x1.
    tiny = Layer("maxpool2d", in_channels=8, in_h=2, in_w=2, kernel=3, stride=2, ceil_mode=1)
    assert tiny.out_shape == (1, 8, 1, 1)
    assert Layer("maxpool2d", in_channels=64, in_h=112, in_w=112, kernel=3, stride=2).out_shape[2] == 55
    assert pool.params == 0 and pool.macs == 0
    assert pool.flops == 64 * 56 * 56 * 4


def test_adaptive_avgpool_windows() -> None:
    glob = Layer("adaptive_avgpool2d", in_channels=2048, in_h=7, in_w=7)
    assert glob.out_shape == (1, 2048, 1, 1)
    assert glob.flops == 2048 * 49
    # Upsampling (VGG's 7x7 pool on a 1x1 map, at a small input): every output reads one element.
    up = Layer("adaptive_avgpool2d", in_channels=512, in_h=1, in_w=1, out_h=7, out_w=7)
    assert up.out_shape == (1, 512, 7, 7) and up.flops == 512 * 49
    # 5 -> 3: PyTorch's windows are [0,2), [1,4), [3,5): 2 + 3 + 2 elements per axis
    odd = Layer("adaptive_avgpool2d", in_channels=1, in_h=5, in_w=5, out_h=3, out_w=3)
    assert odd.flops == 7 * 7


def test_elementwise_layers() -> None:
    relu = Layer("relu", batch=2, in_channels=16, in_h=4, in_w=4)
    assert relu.flops == 2 * 16 * 16 and relu.bytes_input == relu.bytes_output == 2 * 256 * 4
    vec = Layer("relu", in_channels=4096)  # after a linear layer: 1 x 1 spatial by default
    assert vec.in_shape == (1, 4096, 1, 1)
    add = Layer("add", in_channels=8, in_h=2, in_w=2, inputs=3)
    assert add.flops == 2 * 32 and add.bytes_input == 3 * 32 * 4
    se = Layer("mul", in_channels=8, in_h=10, in_w=10, broadcast=1)
    assert se.bytes_input == (800 + 8) * 4 and se.flops == 800
    cat = Layer("concat", in_channels=96, in_h=4, in_w=4, inputs=3)
    assert cat.flops == 0 and cat.bytes_input == cat.bytes_output == 96 * 16 * 4
    bn = Layer("batchnorm2d", in_channels=64, in_h=4, in_w=4)
    assert bn.params == 128 and bn.bytes_weights == 4 * 64 * 4
    flat = Layer("flatten", in_channels=512, in_h=7, in_w=7)
    assert flat.out_shape == (1, 512 * 49) and flat.bytes_moved == 0
    shuffle = Layer("channel_shuffle", in_channels=116, in_h=28, in_w=28)
    assert shuffle.groups == 2 and shuffle.out_shape == (1, 116, 28, 28) and shuffle.flops == 0


def test_dtype_scales_bytes_only() -> None:
    base = dict(in_channels=32, in_h=14, in_w=14, out_channels=64, kernel=3, padding=1)
    fp32, fp16, bf16 = (Layer("conv2d", dtype=d, **base) for d in ("fp32", "fp16", "bf16"))
    assert fp16.bytes_moved * 2 == fp32.bytes_moved == bf16.bytes_moved * 2
    assert fp16.macs == fp32.macs and fp16.params == fp32.params
    assert fp16.dtype == "fp16"


def test_fp8_is_one_byte_an_element() -> None:
    assert npw.DTYPES == ("fp32", "fp16", "bf16", "fp8")  # codes are on disk: fp8 came last
    base = dict(in_channels=32, in_h=14, in_w=14, out_channels=64, kernel=3, padding=1)
    fp8, fp16 = Layer("conv2d", dtype="FP8", **base), Layer("conv2d", dtype="fp16", **base)
    assert fp8.dtype == "fp8" and fp8.bytes_moved * 2 == fp16.bytes_moved
    assert fp8.bytes_input == 32 * 14 * 14 and fp8.bytes_weights == fp8.params and fp8.bytes_output == 64 * 14 * 14
    assert (fp8.macs, fp8.flops, fp8.params) == (fp16.macs, fp16.flops, fp16.params)
    assert fp8.features()["dtype_bytes"] == 1
    arch = npw.Architecture("a", [fp16]).with_dtype("fp8")
    assert arch.dtype == "fp8" and arch[0].row == fp8.row


@pytest.mark.parametrize(
    ("kwargs", "column", "fragment"),
    [
        (dict(in_h=2, in_w=2, kernel=7), "kernel_h", "larger than the padded input"),
        (dict(kernel=1, groups=5), "groups", "does not divide in_channels"),
        (dict(in_h=-3, kernel=1), "in_h", "must be at least 1"),
        (dict(kernel=1, padding=-1), "padding_h", "must be at least 0"),
        (dict(kernel=1, bias=2), "bias", "must be 0 or 1"),
        (dict(kernel=1, in_channels=10**9), "in_channels", "larger than the limit"),
        (dict(kernel=3, dilation=(1, 9)), "kernel_w", "9 dilated"),
    ],
)
def test_conv_validation(kwargs: dict[str, int], column: str, fragment: str) -> None:
    config = dict(in_channels=16, in_h=8, in_w=8, out_channels=8) | kwargs
    with pytest.raises(InputError) as info:
        Layer("conv2d", **config)
    assert info.value.column == column
    assert fragment in info.value.message


def test_other_validation() -> None:
    with pytest.raises(InputError, match="unknown layer type 'conv3d'"):
        Layer("conv3d")
    with pytest.raises(InputError, match="is required for conv2d"):
        Layer("conv2d", in_channels=3, in_h=8, in_w=8, kernel=3)
    with pytest.raises(InputError, match="more than half the kernel"):
        Layer("maxpool2d", in_channels=3, in_h=8, in_w=8, kernel=2, padding=2)
    with pytest.raises(InputError, match="unknown dtype"):
        Layer("relu", in_channels=3, dtype="int8")
    with pytest.raises(InputError, match="not an integer"):
        Layer("relu", in_channels=3.0)
    with pytest.raises(InputError, match="unknown layer field"):
        Layer("relu", in_channels=3, chanels=4)
    with pytest.raises(InputError, match="overflow"):
        Layer("conv2d", batch=2**24, in_channels=2**24, in_h=2**12, in_w=2**12, out_channels=2**24, kernel=1)


def test_fields_a_type_does_not_read_are_zeroed() -> None:
    relu = Layer("relu", in_channels=3, kernel=5, out_features=7)
    assert relu.kernel == (0, 0) and relu.out_features == 0
    assert relu == Layer("relu", in_channels=3)


def test_features_follow_counts() -> None:
    layer = Layer("conv2d", batch=4, in_channels=24, in_h=20, in_w=20, out_channels=48, kernel=5, stride=2, padding=2)
    f = layer.features()
    assert set(f) == set(FEATURES)
    assert f["flops"] == layer.flops and f["macs"] == layer.macs
    assert f["bytes_moved"] == layer.bytes_moved
    assert f["out_h"] == 10 and f["batch"] == 4 and f["dtype_bytes"] == 4
    assert f["elements_in"] == 4 * 24 * 400 and f["elements_out"] == 4 * 48 * 100


def test_gemm_features() -> None:
    # conv2d as an implicit GEMM per group: m = batch x out_h x out_w, n = out_channels / groups,
    # k = in_channels / groups x kernel area
    conv = Layer("conv2d", batch=2, in_channels=64, in_h=56, in_w=56, out_channels=100, kernel=3, padding=1, groups=2)
    f = conv.features()
    assert (f["gemm_m"], f["gemm_n"], f["gemm_k"]) == (2 * 56 * 56, 50, 32 * 9)
    assert f["tile_flops_128x128"] == 2 * 2 * (49 * 128) * 128 * 288  # 6272 rows: 49 tiles; 50 columns: 1 tile
    assert f["tile_flops_64x64"] == 2 * 2 * (98 * 64) * 64 * 288
    assert f["tile_flops_128x32"] == 2 * 2 * (49 * 128) * 64 * 288
    assert f["tile_flops_64x128"] == 2 * 2 * (98 * 64) * 128 * 288  # the tile's first side runs along m
    assert f["tile_flops_32x128"] == 2 * 2 * (196 * 32) * 128 * 288
    assert 2 * conv.macs == 2 * 2 * 6272 * 50 * 288 < f["tile_flops_128x64"]
    # a GEMM of whole tiles wastes nothing
    lin = Layer("linear", batch=2, tokens=64, in_features=300, out_features=256)
    f = lin.features()
    assert (f["gemm_m"], f["gemm_n"], f["gemm_k"]) == (128, 256, 300)
    assert f["tile_flops_128x128"] == f["tile_flops_64x64"] == f["tile_flops_128x32"] == 2 * lin.macs
    assert f["tile_flops_64x128"] == f["tile_flops_32x128"] == 2 * lin.macs
    mm = Layer("matmul", batch=3, heads=4, tokens=10, in_features=64, out_features=10)
    f = mm.features()
    assert (f["gemm_m"], f["gemm_n"], f["gemm_k"]) == (10, 10, 64)
    assert f["tile_flops_64x64"] == 2 * 12 * 64 * 64 * 64  # one tile per batch item and head
    tconv = Layer("conv_transpose2d", batch=1, in_channels=8, in_h=5, in_w=5, out_channels=4, kernel=2, stride=2)
    f = tconv.features()
    assert (f["gemm_m"], f["gemm_n"], f["gemm_k"]) == (25, 16, 8)  # columns = input x weight, then col2im
    for other in (Layer("relu", in_channels=64), Layer("maxpool2d", in_channels=3, in_h=8, in_w=8, kernel=2)):
        f = other.features()
        assert all(f[name] == 0 for name in FEATURES if name.startswith(("gemm_", "tile_flops_", "tiles_")))


def test_thread_block_features() -> None:
    # a GEMM's output tiles, summed over its GEMMs: 6272 x 50 per group, 2 groups
    f = Layer("conv2d", batch=2, in_channels=64, in_h=56, in_w=56, out_channels=100, kernel=3, padding=1,
              groups=2).features()
    assert (f["tiles_128x128"], f["tiles_128x256"], f["tiles_64x128"]) == (2 * 49, 2 * 49, 2 * 98)
    f = Layer("matmul", batch=3, heads=4, tokens=300, in_features=64, out_features=300).features()
    assert (f["tiles_128x128"], f["tiles_128x256"], f["tiles_64x128"]) == (12 * 3 * 3, 12 * 3 * 2, 12 * 5 * 3)
    assert f["attn_ctas_64"] == f["batch_heads"] == 0
    # attention: batch x heads x query tiles (decode: one query token, one tile per head), and the KV heads
    att = Layer("attention", batch=2, heads=32, kv_heads=8, tokens=1000, kv_tokens=1000, head_dim=128, causal=1)
    f = att.features()
    assert (f["attn_ctas_64"], f["attn_ctas_128"]) == (2 * 32 * 16, 2 * 32 * 8)
    assert (f["batch_heads"], f["batch_kv_heads"]) == (64, 16)
    assert f["tiles_128x128"] == 0
    f = att.replace(tokens=1, kv_tokens=4096).features()
    assert (f["attn_ctas_64"], f["attn_ctas_128"], f["batch_kv_heads"]) == (64, 64, 16)
    for other in (Layer("relu", in_channels=64), Layer("linear", in_features=8, out_features=8)):
        f = other.features()
        assert all(f[name] == 0 for name in ("attn_ctas_64", "attn_ctas_128", "batch_heads", "batch_kv_heads"))


conv_configs = st.fixed_dictionaries(
    {
        "batch": st.integers(1, 64),
        "in_channels": st.integers(1, 64),
        "in_h": st.integers(1, 64),
        "in_w": st.integers(1, 64),
        "out_mult": st.integers(1, 4),
        "kernel": st.tuples(st.integers(1, 7), st.integers(1, 7)),
        "stride": st.tuples(st.integers(1, 4), st.integers(1, 4)),
        "padding": st.tuples(st.integers(0, 3), st.integers(0, 3)),
        "dilation": st.tuples(st.integers(1, 3), st.integers(1, 3)),
        "groups": st.sampled_from([1, 2, 4]),
        "bias": st.integers(0, 1),
    }
)


@settings(max_examples=300, deadline=None)
@given(conv_configs)
def test_conv_matches_pytorch_formulas_or_is_rejected(c: dict[str, int | tuple[int, int]]) -> None:
    groups = int(c["groups"])  # type: ignore[call-overload]
    cin = int(c["in_channels"]) * groups  # type: ignore[call-overload]
    cout = groups * int(c["out_mult"])  # type: ignore[call-overload]
    kh, kw = c["kernel"]  # type: ignore[misc]
    sh, sw = c["stride"]  # type: ignore[misc]
    ph, pw = c["padding"]  # type: ignore[misc]
    dh, dw = c["dilation"]  # type: ignore[misc]
    h, w, n = int(c["in_h"]), int(c["in_w"]), int(c["batch"])  # type: ignore[call-overload]
    oh, ow = torch_out(h, kh, sh, ph, dh), torch_out(w, kw, sw, pw, dw)
    kwargs = dict(
        batch=n,
        in_channels=cin,
        in_h=h,
        in_w=w,
        out_channels=cout,
        kernel=(kh, kw),
        stride=(sh, sw),
        padding=(ph, pw),
        dilation=(dh, dw),
        groups=groups,
        bias=c["bias"],
    )
    if oh < 1 or ow < 1:
        with pytest.raises(InputError, match="larger than the padded input"):
            Layer("conv2d", **kwargs)
        return
    layer = Layer("conv2d", **kwargs)
    assert layer.out_shape == (n, cout, oh, ow)
    assert layer.macs == n * cout * oh * ow * (cin // groups) * kh * kw
    assert layer.params == cout * (cin // groups) * kh * kw + (cout if c["bias"] else 0)


@settings(max_examples=200, deadline=None)
@given(st.integers(1, 40), st.integers(1, 5), st.integers(1, 4), st.integers(0, 2), st.integers(1, 2), st.booleans())
def test_maxpool_matches_pytorch_formula_or_is_rejected(size: int, k: int, s: int, p: int, d: int, ceil: bool) -> None:
    kwargs = dict(in_channels=3, in_h=size, in_w=size, kernel=k, stride=s, padding=p, dilation=d, ceil_mode=int(ceil))
    expected = torch_out(size, k, s, p, d, ceil)
    if 2 * p > k or expected < 1:
        with pytest.raises(InputError):
            Layer("maxpool2d", **kwargs)
        return
    assert Layer("maxpool2d", **kwargs).out_shape == (1, 3, expected, expected)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.integers(-(2**63), 2**63 - 1) | st.integers(-3, 40), min_size=len(FIELDS), max_size=len(FIELDS)))
def test_prepare_never_crashes_on_any_row(values: list[int]) -> None:
    row = np.array([values], dtype=np.int64)
    bad = prepare_rows(row)
    if bad is None:  # a valid row: everything derived from it must be computable and non-negative
        layer = Layer.from_row(row[0])
        assert min(layer.info) >= 0
        assert all(v >= 0 for v in layer.features().values())


def test_architecture_totals_and_batch() -> None:
    layers = [
        Layer("conv2d", name="c", in_channels=3, in_h=8, in_w=8, out_channels=4, kernel=3, padding=1),
        Layer("relu", in_channels=4, in_h=8, in_w=8),
    ]
    arch = Architecture("a", layers, {"error": 0.1})
    assert [layer.name for layer in arch] == ["c", "relu_1"]
    t = arch.totals()
    assert t["layers"] == 2 and t["macs"] == layers[0].macs and t["params"] == 4 * 27 + 4
    assert t["bytes"] == sum(layer.bytes_moved for layer in layers)
    assert arch.features().shape == (2, len(FEATURES))
    big = arch.with_batch(8)
    assert big.batch == 8 and big.totals()["macs"] == 8 * t["macs"] and big.meta == {"error": 0.1}
    assert arch.with_dtype("fp16").totals()["bytes"] * 2 == t["bytes"]
    with pytest.raises(InputError, match="has batch 2"):
        Architecture("b", [layers[0], Layer("relu", batch=2, in_channels=4, in_h=8, in_w=8)])
    with pytest.raises(InputError, match="no layers"):
        Architecture("c", [])


def test_import_is_light() -> None:
    code = "import sys, neuralpower; print(sorted(m for m in ('cupy', 'torch', 'onnx', 'pynvml') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_public_api() -> None:
    for name in npw.__all__:
        assert hasattr(npw, name)
