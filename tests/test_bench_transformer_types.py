"""The transformer and decoder layer types (layernorm, matmul, attention, embedding, upsample, conv_transpose2d,
tanh; linear on tokens, GELU's tanh form, last-axis softmax) in the references, the cpu executor and the torch
executor's modules (run here on the CPU), over edge cases: causal attention with fewer or more keys than
queries, broadcast and batched-over-heads matmul, channels-first layernorm, transposed convolutions with groups,
dilation and output padding, upsampling to non-integer ratios.

The references are checked against explicit loops written from PyTorch's definitions, and (where PyTorch is
installed) against PyTorch in float64.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from neuralpower import Architecture, Layer
from neuralpower.bench import reference as ref
from neuralpower.bench.executors import OutOfMemory, Variant
from neuralpower.bench.executors.cpu import CpuExecutor, CpuPrepared
from neuralpower.bench.runner import BenchOptions, run_bench
from neuralpower.bench.sweep import Limits
from neuralpower.bench.timing import TimingConfig

RNG = np.random.default_rng(2024)

NEW_TYPES = ("layernorm", "matmul", "attention", "embedding", "upsample", "conv_transpose2d", "tanh")


def _tconv(c: int, co: int, h: int, w: int, k: Any, **fields: Any) -> Layer:
    return Layer("conv_transpose2d", in_channels=c, out_channels=co, in_h=h, in_w=w, kernel=k, **fields)


# Small configurations of every new type and behaviour, edge cases included.
CASES = [
    Layer("linear", batch=2, tokens=7, in_features=12, out_features=5),
    Layer("linear", batch=3, tokens=2, in_features=9, out_features=4, bias=0),
    Layer("layernorm", batch=2, tokens=7, in_features=33),
    Layer("layernorm", batch=1, tokens=1, in_features=5),
    Layer("layernorm", batch=2, tokens=15, in_features=6, channels_first=1),
    Layer("layernorm", batch=3, tokens=4, in_features=1, channels_first=1),  # one channel: y = bias
    Layer("matmul", batch=2, tokens=5, in_features=7, out_features=3),
    Layer("matmul", batch=2, heads=3, tokens=5, in_features=7, out_features=4),
    Layer("matmul", batch=2, tokens=6, in_features=4, out_features=9, broadcast=1),
    Layer("matmul", batch=2, heads=3, tokens=4, in_features=5, out_features=2, broadcast=1),
    Layer("attention", batch=2, heads=2, tokens=6, head_dim=8),
    Layer("attention", batch=2, heads=3, tokens=6, head_dim=8, causal=1),
    Layer("attention", batch=1, heads=2, tokens=4, kv_tokens=9, head_dim=5, causal=1),  # fewer queries than keys
    Layer("attention", batch=2, heads=1, tokens=9, kv_tokens=4, head_dim=6, causal=1),  # more queries than keys
    Layer("attention", batch=1, heads=2, tokens=1, kv_tokens=7, head_dim=4, causal=1),  # decoding: one query
    Layer("attention", batch=2, heads=2, tokens=5, kv_tokens=3, head_dim=4),
    Layer("embedding", batch=2, tokens=6, in_features=11, out_features=7),
    Layer("embedding", batch=1, tokens=1, in_features=1, out_features=3),
    Layer("upsample", batch=2, in_channels=3, in_h=4, in_w=5, out_h=8, out_w=10),
    Layer("upsample", batch=1, in_channels=2, in_h=14, in_w=7, out_h=20, out_w=11),  # 14/20: float32 rounding
    Layer("upsample", batch=2, in_channels=2, in_h=9, in_w=8, out_h=4, out_w=3),  # downsampling
    Layer("upsample", batch=2, in_channels=3, in_h=4, in_w=5, out_h=8, out_w=10, interpolation="bilinear"),
    Layer("upsample", batch=1, in_channels=2, in_h=5, in_w=7, out_h=11, out_w=9, interpolation="bilinear"),
    Layer("upsample", batch=2, in_channels=2, in_h=9, in_w=8, out_h=4, out_w=5, interpolation="bilinear"),
    Layer("upsample", batch=1, in_channels=1, in_h=1, in_w=3, out_h=3, out_w=7, interpolation="bilinear"),
    _tconv(4, 6, 5, 5, 3, stride=2, padding=1, output_padding=1, groups=2, batch=2),
    _tconv(3, 5, 4, 6, (2, 3), stride=(3, 1), padding=(0, 2), dilation=(1, 2), output_padding=(2, 1), bias=0),
    _tconv(6, 6, 3, 4, 3, stride=2, padding=2, dilation=3, output_padding=2, groups=6, batch=2),  # depthwise
    _tconv(4, 8, 4, 4, 2, stride=2, batch=2),  # a U-Net's 2x2 up-convolution
    Layer("tanh", batch=2, in_channels=5, in_h=3, in_w=4),
    Layer("gelu", batch=2, in_channels=7, in_h=5, in_w=1, approximate="tanh"),
    Layer("softmax", batch=2, in_channels=9, in_h=6, in_w=1, channels_first=0),
    Layer("softmax", batch=2, in_channels=5, in_h=3, in_w=4, channels_first=0),
    Layer("softmax", batch=3, in_channels=10, channels_first=0),
]


def _id(layer: Layer) -> str:
    return f"{layer.type}-{'x'.join(str(v) for v in layer.in_shape)}"


def test_the_cases_cover_every_new_type() -> None:
    assert set(NEW_TYPES) <= {layer.type for layer in CASES}


# -- the references against loops ----------------------------------------------------------------------


def test_layer_norm_matches_loops() -> None:
    x = RNG.uniform(-2, 3, size=(2, 5, 7))
    w, b = RNG.uniform(0.5, 1.5, 7), RNG.uniform(-0.5, 0.5, 7)
    expected = np.empty_like(x)
    for n in range(2):
        for t in range(5):
            row = x[n, t]
            mean = sum(row) / 7
            var = sum((v - mean) ** 2 for v in row) / 7  # biased, as PyTorch
            expected[n, t] = [(v - mean) / math.sqrt(var + 1e-5) * w[i] + b[i] for i, v in enumerate(row)]
    np.testing.assert_allclose(ref.layer_norm(x, w, b), expected, rtol=1e-12, atol=1e-12)
    # channels first: the same normalization over axis 1 of N x C x positions
    np.testing.assert_allclose(ref.layer_norm(x.transpose(0, 2, 1), w, b, axis=1), expected.transpose(0, 2, 1))


def test_attention_matches_loops_with_the_top_left_causal_mask() -> None:
    for length, kv in ((4, 7), (7, 3), (5, 5)):
        q, k, v = RNG.standard_normal((length, 6)), RNG.standard_normal((kv, 6)), RNG.standard_normal((kv, 6))
        for causal in (False, True):
            expected = np.empty((length, 6))
            for i in range(length):
                seen = range(min(i + 1, kv)) if causal else range(kv)  # query i sees keys 0..i
                scores = [float(q[i] @ k[j]) / math.sqrt(6) for j in seen]
                top = max(scores)
                weights = [math.exp(s - top) for s in scores]
                expected[i] = sum(wj * v[j] for wj, j in zip(weights, seen, strict=True)) / sum(weights)
            actual = ref.attention(q[None, None], k[None, None], v[None, None], causal)[0, 0]
            np.testing.assert_allclose(actual, expected, rtol=1e-12, atol=1e-12)


def test_conv_transpose_matches_a_scatter_loop() -> None:
    for c, co, h, w, k, s, p, op, d, g in [
        (4, 6, 5, 5, (3, 3), (2, 2), (1, 1), (1, 1), (1, 1), 2),
        (3, 2, 4, 3, (2, 3), (3, 1), (0, 2), (2, 1), (1, 2), 1),
        (2, 4, 3, 3, (3, 3), (2, 2), (2, 2), (2, 2), (3, 3), 2),
    ]:
        x = RNG.standard_normal((2, c, h, w))
        wt = RNG.standard_normal((c, co // g, *k))
        b = RNG.standard_normal(co)
        oh = ref.transposed_output_size(h, k[0], s[0], p[0], d[0], op[0])
        ow = ref.transposed_output_size(w, k[1], s[1], p[1], d[1], op[1])
        expected = np.zeros((2, co, oh, ow)) + b[None, :, None, None]
        cg, og = c // g, co // g
        for n in range(2):
            for ci in range(c):
                grp = ci // cg
                for i in range(h):
                    for j in range(w):
                        for o in range(og):
                            for u in range(k[0]):
                                for v in range(k[1]):
                                    y, z = i * s[0] - p[0] + u * d[0], j * s[1] - p[1] + v * d[1]
                                    if 0 <= y < oh and 0 <= z < ow:
                                        expected[n, grp * og + o, y, z] += x[n, ci, i, j] * wt[ci, o, u, v]
        actual = ref.conv_transpose2d(x, wt, b, s, p, op, g, d)
        np.testing.assert_allclose(actual, expected, rtol=1e-12, atol=1e-12)
        layer = _tconv(c, co, h, w, k, stride=s, padding=p, output_padding=op, dilation=d, groups=g, batch=2)
        assert actual.shape == layer.out_shape


def test_upsample_matches_loops() -> None:
    x = RNG.standard_normal((1, 2, 5, 7))
    # nearest: floor(i * in / out), exact for these ratios
    near = ref.upsample(x, (11, 4))
    for i in range(11):
        for j in range(4):
            np.testing.assert_array_equal(near[0, :, i, j], x[0, :, (i * 5) // 11, (j * 7) // 4])
    # bilinear, align_corners=False, from PyTorch's definition
    out = ref.upsample(x, (8, 3), "bilinear")
    for i in range(8):
        for j in range(3):
            sy, sx = max((i + 0.5) * 5 / 8 - 0.5, 0.0), max((j + 0.5) * 7 / 3 - 0.5, 0.0)
            y0, x0 = int(sy), int(sx)
            y1, x1 = min(y0 + 1, 4), min(x0 + 1, 6)
            ly, lx = sy - y0, sx - x0
            value = (1 - ly) * ((1 - lx) * x[0, :, y0, x0] + lx * x[0, :, y0, x1]) + ly * (
                (1 - lx) * x[0, :, y1, x0] + lx * x[0, :, y1, x1]
            )
            np.testing.assert_allclose(out[0, :, i, j], value, rtol=1e-12)
    with pytest.raises(ValueError, match="upsample mode"):
        ref.upsample(x, (2, 2), "bicubic")


def test_nearest_index_follows_pytorchs_float32_arithmetic() -> None:
    # 14 / 20 = 0.7 is 0.69999999 in float32: output 10 reads row 7 with exact arithmetic but PyTorch computes
    # floor(10 * 0.7f) in float32, which rounds the product to 7.0 too; what matters is that we follow float32.
    scale = np.float32(14) / np.float32(20)
    expected = [min(int(np.floor(np.float32(i) * scale)), 13) for i in range(20)]
    assert ref.nearest_source_index(20, 14).tolist() == expected
    assert ref.nearest_source_index(8, 4).tolist() == [0, 0, 1, 1, 2, 2, 3, 3]
    assert ref.nearest_source_index(3, 9).tolist() == [0, 3, 6]


def test_embedding_matmul_and_activations() -> None:
    table = RNG.standard_normal((5, 3))
    idx = np.array([[0, 4, 2], [4, 4, 1]])
    np.testing.assert_array_equal(ref.embedding(idx, table), table[idx])
    with pytest.raises(ValueError, match="embedding indices"):
        ref.embedding(np.array([[5]]), table)
    a, b = RNG.standard_normal((2, 3, 4, 5)), RNG.standard_normal((5, 6))
    out = ref.matmul(a, b)
    for n in range(2):
        for h in range(3):
            np.testing.assert_allclose(out[n, h], a[n, h] @ b)  # one matrix broadcast to every batch and head
    x = np.array([-3.0, -0.5, 0.0, 1.0, 2.5])
    tanh_gelu = [0.5 * v * (1 + math.tanh(math.sqrt(2 / math.pi) * (v + 0.044715 * v**3))) for v in x]
    np.testing.assert_allclose(ref.activation("gelu", x, approximate=True), tanh_gelu, rtol=1e-14)
    assert abs(ref.activation("gelu", x, approximate=True) - ref.activation("gelu", x)).max() < 1e-3
    s = ref.softmax(RNG.standard_normal((2, 3, 4, 5)), axis=-1)
    np.testing.assert_allclose(s.sum(axis=-1), 1.0)


def test_operand_conventions() -> None:
    lay = Layer("layernorm", batch=2, tokens=6, in_features=4, channels_first=1)
    assert ref.input_shapes(lay) == [(2, 4, 6)] and ref.output_shape(lay) == (2, 4, 6)
    assert ref.param_shapes(lay) == {"weight": (4,), "bias": (4,)}
    soft = Layer("softmax", batch=2, in_channels=5, in_h=3, in_w=4, channels_first=0)
    assert ref.input_shapes(soft) == [(2, 3, 4, 5)] and soft.out_shape == (2, 5, 3, 4)
    mm = Layer("matmul", batch=2, heads=3, tokens=4, in_features=5, out_features=6, broadcast=1)
    assert ref.input_shapes(mm) == [(2, 3, 4, 5), (5, 6)]
    att = Layer("attention", batch=2, heads=3, tokens=4, kv_tokens=7, head_dim=8)
    assert ref.input_shapes(att) == [(2, 3, 4, 8), (2, 3, 7, 8), (2, 3, 7, 8)]
    tconv = _tconv(4, 6, 5, 5, 3, groups=2)
    assert ref.param_shapes(tconv) == {"weight": (4, 3, 3, 3), "bias": (6,)}
    emb = Layer("embedding", batch=3, tokens=50, in_features=7, out_features=2)
    (idx,) = ref.make_inputs(emb, RNG)
    assert idx.dtype == np.int64 and idx.shape == (3, 50) and idx.min() == 0 and idx.max() == 6
    assert ref.make_params(emb, RNG, np.float16)["weight"].dtype == np.float16


def test_subset_cuts_batch_items_and_heads() -> None:
    layer = Layer("matmul", batch=4, heads=5, tokens=3, in_features=2, out_features=2, broadcast=1)
    ops = ref.make_operands(layer, RNG)
    out = ref.forward(layer, ops)
    small, sliced, cut = ref.subset(layer, ops, out)
    assert (small.batch, small.heads) == (2, 2)
    assert sliced.inputs[1] is ops.inputs[1]  # the broadcast matrix has no batch axis
    np.testing.assert_array_equal(cut, out[[0, 3]][:, [0, 4]])
    np.testing.assert_allclose(ref.forward(small, sliced), cut)


# -- the references against PyTorch (float64, on the CPU) -----------------------------------------------------


def _torch_forward(torch: Any, layer: Layer, ops: ref.Operands) -> np.ndarray:
    functional = torch.nn.functional

    def t(a: np.ndarray) -> Any:
        return torch.from_numpy(a if a.dtype == np.int64 else a.astype(np.float64))

    x = [t(a) for a in ops.inputs]
    p = {k: t(v) for k, v in ops.params.items()}
    kind = layer.type
    if kind == "linear":
        y = functional.linear(x[0], p["weight"], p.get("bias"))
    elif kind == "layernorm" and layer.channels_first:
        moved = x[0].movedim(1, -1)
        y = functional.layer_norm(moved, (layer.in_features,), p["weight"], p["bias"], 1e-5).movedim(-1, 1)
    elif kind == "layernorm":
        y = functional.layer_norm(x[0], (layer.in_features,), p["weight"], p["bias"], 1e-5)
    elif kind == "matmul":
        y = torch.matmul(x[0], x[1])
    elif kind == "attention":
        y = functional.scaled_dot_product_attention(*x, is_causal=bool(layer.causal))
    elif kind == "embedding":
        y = functional.embedding(x[0], p["weight"])
    elif kind == "upsample":
        options = {"mode": "bilinear", "align_corners": False} if layer.interpolation else {"mode": "nearest"}
        y = functional.interpolate(x[0], size=(layer.out_h, layer.out_w), **options)
    elif kind == "conv_transpose2d":
        y = functional.conv_transpose2d(
            x[0], p["weight"], p.get("bias"), layer.stride, layer.padding, layer.output_padding, layer.groups,
            layer.dilation,
        )
    elif kind == "tanh":
        y = torch.tanh(x[0])
    elif kind == "gelu":
        y = functional.gelu(x[0], approximate="tanh" if layer.approximate else "none")
    else:
        y = torch.softmax(x[0], dim=1 if layer.channels_first else -1)
    return np.asarray(y.numpy())


@pytest.mark.parametrize("layer", CASES, ids=_id)
def test_reference_matches_pytorch(layer: Layer) -> None:
    torch = pytest.importorskip("torch")
    ops = ref.make_operands(layer, RNG, dtype=np.float64)
    expected = _torch_forward(torch, layer, ops)
    np.testing.assert_allclose(ref.forward(layer, ops), expected, rtol=1e-10, atol=1e-12)


# -- the cpu executor ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", ["fp32", "fp16"])
@pytest.mark.parametrize("layer", CASES, ids=_id)
def test_cpu_executor_matches_the_reference(layer: Layer, dtype: str) -> None:
    layer = layer.replace(dtype=dtype)
    # a tiny workspace: attention in blocks of one query row, transposed convolutions one batch item at a time
    executor = CpuExecutor(dtype=dtype, workspace_bytes=64)
    prepared = executor.prepare(layer, executor.variants(layer)[0])
    assert isinstance(prepared, CpuPrepared)
    prepared.check()
    ((_, ops, out),) = prepared.outputs()
    assert out.shape == ref.output_shape(layer) and out.dtype == ref.numpy_dtype(dtype)
    ref.assert_close(out, ref.forward(layer, ops), layer)
    assert prepared.time_calls(2) > 0


def test_cpu_attention_blocks_agree_with_one_block() -> None:
    layer = Layer("attention", batch=3, heads=4, tokens=17, kv_tokens=23, head_dim=8, causal=1)
    outputs = []
    for workspace in (64, 23 * 4 * 5, 1 << 20):  # one row, five rows (blocks across pairs), everything at once
        prepared = CpuExecutor(workspace_bytes=workspace, seed=3).prepare(layer, Variant())
        assert isinstance(prepared, CpuPrepared)
        ((_, _, out),) = prepared.outputs()
        outputs.append(out.copy())
    ref.assert_close(outputs[0], outputs[2], layer)  # equal up to float32 rounding (BLAS blocks differ)
    ref.assert_close(outputs[1], outputs[2], layer)


def test_cpu_check_catches_a_wrong_result() -> None:
    layer = Layer("attention", batch=2, heads=3, tokens=5, head_dim=4, causal=1)
    prepared = CpuExecutor().prepare(layer, Variant())
    assert isinstance(prepared, CpuPrepared)
    ((_, ops, _),) = prepared.outputs()
    prepared.check()
    # The kernel reads the operands the reference reads: corrupt its output instead, in the last batch item's
    # last head (what the check compares).
    (same, _, kernel), *_ = prepared._layers

    def wrong() -> np.ndarray:
        out = kernel()
        out[1, 2, 0, 0] += 0.5
        return out

    prepared._layers = [(same, ops, wrong)]
    with pytest.raises(AssertionError, match="attention"):
        prepared.check()


def test_cpu_network_of_token_layers() -> None:
    n = 2
    arch = Architecture(
        "tiny_block",
        [
            Layer("embedding", batch=n, tokens=8, in_features=40, out_features=16),
            Layer("layernorm", batch=n, tokens=8, in_features=16),
            Layer("linear", batch=n, tokens=8, in_features=16, out_features=48),
            Layer("matmul", batch=n, heads=2, tokens=8, in_features=8, out_features=8),
            Layer("softmax", batch=n, in_channels=8, in_h=2 * 8, in_w=1, channels_first=0),
            Layer("attention", batch=n, heads=2, tokens=8, head_dim=8, causal=1),
            Layer("gelu", batch=n, in_channels=16, in_h=8, in_w=1, approximate="tanh"),
            Layer("add", batch=n, in_channels=16, in_h=8, in_w=1),
        ],
    )
    prepared = CpuExecutor().prepare_network(arch, CpuExecutor().network_variants(arch)[0])
    assert isinstance(prepared, CpuPrepared)
    prepared.check()
    assert prepared.time_calls(1) > 0


def test_cpu_memory_counts_an_embedding_table() -> None:
    huge = Layer("embedding", batch=1, tokens=1, in_features=2**24, out_features=2**16)  # a 4 TiB table
    assert huge.bytes_moved < 1 << 20  # what the core counts: the rows read
    with pytest.raises(OutOfMemory, match="GiB"):
        CpuExecutor().prepare(huge, Variant())


def test_bench_runs_the_new_types_end_to_end(tmp_path: Path) -> None:
    options = BenchOptions(
        suite="quick",
        types=[*NEW_TYPES, "linear", "gelu", "softmax"],
        configs=20,
        limits=Limits(max_bytes=4 << 20, max_flops=2 * 10**7),
        timing=TimingConfig(target_ms=0.5, loops=2, warmup_ms=0.5),
        progress=False,
    )
    summary = run_bench(CpuExecutor(), str(tmp_path), options)
    assert summary.failed == 0 and summary.measured > 0


# -- the torch executor's modules, on the CPU ---------------------------------------------------------------


@pytest.mark.parametrize("layer", CASES, ids=_id)
def test_torch_modules_match_the_reference_on_the_cpu(layer: Layer) -> None:
    torch = pytest.importorskip("torch")
    from neuralpower.bench.executors.torch_exec import check_module, module_and_inputs

    check_module(torch, layer, "cpu")  # the torch executor's check, on the CPU: raises on a mismatch
    gen = torch.Generator(device="cpu")
    gen.manual_seed(0)
    module, inputs = module_and_inputs(torch, layer, torch.device("cpu"), "contiguous", gen)
    with torch.inference_mode():
        out = module(*inputs)
    assert tuple(out.shape) == ref.output_shape(layer)
    if layer.type == "embedding":
        assert inputs[0].dtype == torch.int64 and int(inputs[0].max()) < layer.in_features


@pytest.mark.parametrize(
    ("layer", "message"),
    [
        (Layer("relu", in_channels=3, dtype="fp8"), "the torch executor runs fp32, fp16, bf16, not fp8"),
        (Layer("attention", heads=4, kv_heads=2, tokens=6, head_dim=8), "kv_heads = heads, not 2 of 4"),
        (Layer("attention", heads=4, tokens=6, head_dim=8, window=3), "without a window"),
        (Layer("attention", heads=4, tokens=6, head_dim=8, dtype="bf16", kv_dtype="fp8"), "in its dtype, not fp8"),
    ],
)
def test_torch_modules_refuse_what_the_executor_cannot_run(layer: Layer, message: str) -> None:
    torch = pytest.importorskip("torch")
    from neuralpower.bench.executors import LayerFailed
    from neuralpower.bench.executors.torch_exec import module_and_inputs

    gen = torch.Generator(device="cpu")
    with pytest.raises(LayerFailed, match=message) as err:
        module_and_inputs(torch, layer, torch.device("cpu"), "contiguous", gen)
    assert "\n" not in str(err.value)


def test_torch_modules_are_what_users_run() -> None:
    torch = pytest.importorskip("torch")
    from neuralpower.bench.executors.torch_exec import has_image_layout, layer_module

    nn = torch.nn
    assert isinstance(layer_module(torch, Layer("layernorm", tokens=3, in_features=8)), nn.LayerNorm)
    channels_first = layer_module(torch, Layer("layernorm", tokens=9, in_features=8, channels_first=1))
    assert isinstance(channels_first, nn.LayerNorm) and channels_first.eps == 1e-5
    gelu = layer_module(torch, Layer("gelu", in_channels=4, approximate="tanh"))
    assert isinstance(gelu, nn.GELU) and gelu.approximate == "tanh"
    up = layer_module(
        torch, Layer("upsample", in_channels=2, in_h=3, in_w=3, out_h=6, out_w=7, interpolation="bilinear")
    )
    assert isinstance(up, nn.Upsample) and up.mode == "bilinear" and up.align_corners is False
    tconv = layer_module(torch, _tconv(4, 6, 5, 5, 3, stride=2, output_padding=1, groups=2, dilation=2))
    assert isinstance(tconv, nn.ConvTranspose2d) and tconv.output_padding == (1, 1) and tconv.dilation == (2, 2)
    softmax = layer_module(torch, Layer("softmax", in_channels=5, in_h=3, channels_first=0))
    assert isinstance(softmax, nn.Softmax) and softmax.dim == -1
    assert not has_image_layout(Layer("attention", heads=2, tokens=4, head_dim=8))
    assert not has_image_layout(Layer("softmax", in_channels=5, in_h=3, channels_first=0))
    assert has_image_layout(_tconv(4, 6, 5, 5, 3)) and has_image_layout(
        Layer("upsample", in_channels=2, in_h=2, in_w=2, out_h=4, out_w=4)
    )
