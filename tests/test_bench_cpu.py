"""The reference implementations against explicit loops, and the cpu executor against the references."""

from __future__ import annotations

import math

import numpy as np
import pytest

from neuralpower import Architecture, Layer, zoo
from neuralpower.bench import reference as ref
from neuralpower.bench.executors import ExecutorUnavailable, LayerFailed, Variant, get_executor
from neuralpower.bench.executors.cpu import CpuExecutor, CpuPrepared, cpu_model

RNG = np.random.default_rng(12345)


# -- naive loops, written from PyTorch's definitions -------------------------------------------------


def naive_conv(
    x: np.ndarray,
    w: np.ndarray,
    b: np.ndarray | None,
    s: tuple[int, int],
    p: tuple[int, int],
    d: tuple[int, int],
    groups: int,
) -> np.ndarray:
    n, _, h, wd = x.shape
    oc, cg, kh, kw = w.shape
    og = oc // groups
    oh = (h + 2 * p[0] - d[0] * (kh - 1) - 1) // s[0] + 1
    ow = (wd + 2 * p[1] - d[1] * (kw - 1) - 1) // s[1] + 1
    out = np.zeros((n, oc, oh, ow))
    for b_ in range(n):
        for o in range(oc):
            g = o // og
            for i in range(oh):
                for j in range(ow):
                    acc = 0.0 if b is None else float(b[o])
                    for ci in range(cg):
                        for u in range(kh):
                            for v in range(kw):
                                y, z = i * s[0] - p[0] + u * d[0], j * s[1] - p[1] + v * d[1]
                                if 0 <= y < h and 0 <= z < wd:
                                    acc += float(x[b_, g * cg + ci, y, z]) * float(w[o, ci, u, v])
                    out[b_, o, i, j] = acc
    return out


def naive_max_pool(
    x: np.ndarray, k: tuple[int, int], s: tuple[int, int], p: tuple[int, int], d: tuple[int, int], ceil_mode: bool
) -> np.ndarray:
    n, c, h, w = x.shape
    oh = ref.pool_output_size(h, k[0], s[0], p[0], d[0], ceil_mode)
    ow = ref.pool_output_size(w, k[1], s[1], p[1], d[1], ceil_mode)
    out = np.empty((n, c, oh, ow))
    for i in range(oh):
        for j in range(ow):
            best = np.full((n, c), -np.inf)
            for u in range(k[0]):
                for v in range(k[1]):
                    y, z = i * s[0] - p[0] + u * d[0], j * s[1] - p[1] + v * d[1]
                    if 0 <= y < h and 0 <= z < w:
                        best = np.maximum(best, x[:, :, y, z])
            out[:, :, i, j] = best
    return out


def naive_avg_pool(
    x: np.ndarray, k: tuple[int, int], s: tuple[int, int], p: tuple[int, int], ceil_mode: bool, count_include_pad: bool
) -> np.ndarray:
    # PyTorch's avg_pool2d: hend = min(hstart + k, H + pad); pool_size before clamping to the input.
    n, c, h, w = x.shape
    oh = ref.pool_output_size(h, k[0], s[0], p[0], 1, ceil_mode)
    ow = ref.pool_output_size(w, k[1], s[1], p[1], 1, ceil_mode)
    out = np.empty((n, c, oh, ow))
    for i in range(oh):
        for j in range(ow):
            hs, ws = i * s[0] - p[0], j * s[1] - p[1]
            he, we = min(hs + k[0], h + p[0]), min(ws + k[1], w + p[1])
            size = (he - hs) * (we - ws)
            hs, ws, he, we = max(hs, 0), max(ws, 0), min(he, h), min(we, w)
            total = np.zeros((n, c))
            for y in range(hs, he):
                for z in range(ws, we):
                    total += x[:, :, y, z]
            out[:, :, i, j] = total / (size if count_include_pad else (he - hs) * (we - ws))
    return out


def naive_adaptive(x: np.ndarray, oh: int, ow: int) -> np.ndarray:
    n, c, h, w = x.shape
    out = np.empty((n, c, oh, ow))
    for i in range(oh):
        for j in range(ow):
            a0, a1 = math.floor(i * h / oh), math.ceil((i + 1) * h / oh)
            b0, b1 = math.floor(j * w / ow), math.ceil((j + 1) * w / ow)
            out[:, :, i, j] = x[:, :, a0:a1, b0:b1].sum(axis=(2, 3)) / ((a1 - a0) * (b1 - b0))
    return out


# -- the references ------------------------------------------------------------------------------


CONVS = [
    # (n, c, h, w, oc, k, s, p, d, groups)
    (1, 3, 7, 7, 4, (3, 3), (1, 1), (1, 1), (1, 1), 1),
    (2, 4, 9, 8, 6, (3, 3), (2, 2), (1, 1), (1, 1), 2),
    (1, 5, 11, 9, 5, (3, 5), (2, 1), (0, 2), (1, 1), 5),  # depthwise, non-square kernel
    (2, 3, 10, 10, 2, (3, 3), (1, 1), (2, 2), (2, 2), 1),  # dilation
    (1, 6, 6, 7, 3, (1, 1), (2, 2), (0, 0), (1, 1), 3),
    (1, 2, 8, 8, 4, (5, 5), (1, 1), (2, 2), (1, 1), 2),  # depthwise with multiplier 2
]


@pytest.mark.parametrize("case", CONVS)
def test_reference_conv_matches_loops(case: tuple) -> None:
    n, c, h, w, oc, k, s, p, d, g = case
    x = RNG.standard_normal((n, c, h, w))
    wt = RNG.standard_normal((oc, c // g, *k))
    b = RNG.standard_normal(oc)
    np.testing.assert_allclose(
        ref.conv2d(x, wt, b, s, p, d, g), naive_conv(x, wt, b, s, p, d, g), rtol=1e-12, atol=1e-12
    )
    layer = Layer(
        "conv2d",
        batch=n,
        in_channels=c,
        in_h=h,
        in_w=w,
        out_channels=oc,
        kernel=k,
        stride=s,
        padding=p,
        dilation=d,
        groups=g,
    )
    assert ref.conv2d(x, wt, b, s, p, d, g).shape == layer.out_shape


POOLS = [
    # (h, w, k, s, p, d, ceil_mode)
    (9, 10, (3, 3), (2, 2), (1, 1), (1, 1), True),
    (8, 7, (2, 2), (2, 2), (0, 0), (1, 1), True),
    (7, 7, (3, 3), (2, 2), (0, 0), (1, 1), False),
    (11, 10, (3, 3), (2, 2), (1, 1), (2, 2), False),
    (5, 5, (2, 2), (2, 2), (0, 0), (1, 1), True),
    (13, 6, (3, 2), (1, 2), (1, 1), (1, 1), True),
    (6, 6, (5, 5), (3, 3), (2, 2), (1, 1), True),
    (1, 3, (2, 2), (1, 1), (1, 1), (2, 2), False),  # windows entirely in the padding: -inf, as in PyTorch
]


@pytest.mark.parametrize("case", POOLS)
def test_reference_pools_match_loops(case: tuple) -> None:
    h, w, k, s, p, d, ceil = case
    x = RNG.standard_normal((2, 3, h, w))
    np.testing.assert_array_equal(ref.max_pool2d(x, k, s, p, d, ceil), naive_max_pool(x, k, s, p, d, ceil))
    layer = Layer(
        "maxpool2d",
        in_channels=3,
        in_h=h,
        in_w=w,
        kernel=k,
        stride=s,
        padding=p,
        dilation=d,
        ceil_mode=int(ceil),
        batch=2,
    )
    assert ref.max_pool2d(x, k, s, p, d, ceil).shape == layer.out_shape
    if d == (1, 1):
        for include in (True, False):
            np.testing.assert_allclose(
                ref.avg_pool2d(x, k, s, p, ceil, include), naive_avg_pool(x, k, s, p, ceil, include)
            )
        avg = Layer(
            "avgpool2d", in_channels=3, in_h=h, in_w=w, kernel=k, stride=s, padding=p, ceil_mode=int(ceil), batch=2
        )
        assert ref.avg_pool2d(x, k, s, p, ceil).shape == avg.out_shape


def test_avg_pool_divisor_as_pytorch() -> None:
    # F.avg_pool2d(torch.ones(1, 1, 4, 4), 3, 2, padding=1, ceil_mode=True): a corner window covers 2 x 2
    # input elements of a 3 x 3 padded window (4/9); the last, overhanging window counts 2 x 2 (1/4).
    out = ref.avg_pool2d(np.ones((1, 1, 4, 4)), (3, 3), (2, 2), (1, 1), ceil_mode=True)
    assert out.shape == (1, 1, 3, 3)
    assert out[0, 0, 0, 0] == pytest.approx(4 / 9)
    assert out[0, 0, 2, 2] == pytest.approx(1 / 4)
    assert out[0, 0, 1, 1] == pytest.approx(1.0)


@pytest.mark.parametrize("size", [(9, 10, 4, 3), (7, 7, 7, 7), (5, 13, 2, 5), (6, 6, 1, 1), (3, 3, 5, 5)])
def test_reference_adaptive_matches_loops(size: tuple[int, int, int, int]) -> None:
    h, w, oh, ow = size
    x = RNG.standard_normal((2, 3, h, w))
    np.testing.assert_allclose(ref.adaptive_avg_pool2d(x, (oh, ow)), naive_adaptive(x, oh, ow))


def test_reference_elementwise_values() -> None:
    x = np.array([-7.0, -3.0, -1.0, 0.0, 1.0, 3.0, 7.0])
    np.testing.assert_allclose(ref.activation("relu", x), [0, 0, 0, 0, 1, 3, 7])
    np.testing.assert_allclose(ref.activation("relu6", x), [0, 0, 0, 0, 1, 3, 6])
    np.testing.assert_allclose(ref.activation("hardsigmoid", x), [0, 0, 1 / 3, 0.5, 2 / 3, 1, 1])
    np.testing.assert_allclose(ref.activation("hardswish", x), [0, 0, -1 / 3, 0, 2 / 3, 3, 7])
    np.testing.assert_allclose(ref.activation("sigmoid", np.array([0.0])), [0.5])
    np.testing.assert_allclose(ref.activation("silu", np.array([1.0])), [0.7310585786300049])
    gelu = ref.activation("gelu", np.array([1.0, -1.0]))
    np.testing.assert_allclose(gelu, [0.8413447460685429, -0.15865525393145707])
    np.testing.assert_allclose(ref.activation("tanh", x), np.tanh(x))
    with pytest.raises(ValueError, match="unknown activation"):
        ref.activation("mish", x)
    y = RNG.standard_normal((2, 5, 3, 3))
    s = ref.softmax(y)
    np.testing.assert_allclose(s.sum(axis=1), 1.0)
    np.testing.assert_allclose(s[0, :, 1, 2], np.exp(y[0, :, 1, 2]) / np.exp(y[0, :, 1, 2]).sum())
    shuffled = ref.channel_shuffle(np.arange(6.0).reshape(1, 6, 1, 1), 2)
    np.testing.assert_array_equal(shuffled.ravel(), [0, 3, 1, 4, 2, 5])  # torch.nn.ChannelShuffle(2)
    mean, var, wt, b = RNG.uniform(0.5, 1.5, size=(4, 5))
    bn = ref.batch_norm(y, mean, var, wt, b)
    np.testing.assert_allclose(bn[1, 2], (y[1, 2] - mean[2]) / np.sqrt(var[2] + 1e-5) * wt[2] + b[2])
    se = ref.mul([y, y[:, :, :1, :1]])
    np.testing.assert_allclose(se[1, 3], y[1, 3] * y[1, 3, 0, 0])
    assert ref.concat_channels(7, 3) == [3, 2, 2] and ref.concat_channels(4, 1) == [4]


# -- the cpu executor -------------------------------------------------------------------------------

LAYERS = [
    *(
        Layer(
            "conv2d",
            batch=n,
            in_channels=c,
            in_h=h,
            in_w=w,
            out_channels=oc,
            kernel=k,
            stride=s,
            padding=p,
            dilation=d,
            groups=g,
            bias=(n + c) % 2,
        )
        for n, c, h, w, oc, k, s, p, d, g in CONVS
    ),
    Layer("conv2d", batch=3, in_channels=16, in_h=13, in_w=13, out_channels=24, kernel=7, stride=2, padding=3),
    Layer("conv2d", batch=2, in_channels=7, in_h=9, in_w=9, out_channels=13, kernel=1),
    Layer("linear", batch=3, in_features=17, out_features=9),
    Layer("linear", batch=1, in_features=64, out_features=10, bias=0),
    *(
        Layer(
            "maxpool2d",
            batch=2,
            in_channels=3,
            in_h=h,
            in_w=w,
            kernel=k,
            stride=s,
            padding=p,
            dilation=d,
            ceil_mode=int(ceil),
        )
        for h, w, k, s, p, d, ceil in POOLS
    ),
    *(
        Layer("avgpool2d", batch=2, in_channels=3, in_h=h, in_w=w, kernel=k, stride=s, padding=p, ceil_mode=int(ceil))
        for h, w, k, s, p, d, ceil in POOLS
        if d == (1, 1)
    ),
    Layer("adaptive_avgpool2d", batch=2, in_channels=5, in_h=9, in_w=10, out_h=4, out_w=3),
    Layer("adaptive_avgpool2d", batch=3, in_channels=4, in_h=7, in_w=7),
    Layer("adaptive_avgpool2d", batch=1, in_channels=4, in_h=3, in_w=3, out_h=5, out_w=5),
    Layer("batchnorm2d", batch=2, in_channels=5, in_h=3, in_w=7),
    *(Layer(t, batch=3, in_channels=5, in_h=3, in_w=7) for t in ref.ACTIVATIONS),
    Layer("softmax", batch=2, in_channels=1000),
    Layer("softmax", batch=2, in_channels=7, in_h=3, in_w=5),
    Layer("flatten", batch=2, in_channels=6, in_h=3, in_w=3),
    Layer("add", batch=2, in_channels=5, in_h=3, in_w=7),
    Layer("add", batch=2, in_channels=5, in_h=3, in_w=7, inputs=3),
    Layer("add", batch=2, in_channels=5, in_h=3, in_w=7, broadcast=1),
    Layer("mul", batch=2, in_channels=5, in_h=3, in_w=7, broadcast=1),
    Layer("mul", batch=1, in_channels=5, in_h=4, in_w=4, inputs=4),
    Layer("concat", batch=2, in_channels=7, in_h=3, in_w=5, inputs=3),
    Layer("concat", batch=2, in_channels=6, in_h=3, in_w=5, inputs=1),
    Layer("channel_shuffle", batch=2, in_channels=12, in_h=3, in_w=5, groups=3),
    Layer("channel_shuffle", batch=1, in_channels=8, in_h=2, in_w=2),
    # transformer and decoder types (tests/test_bench_transformer_types.py has their edge cases)
    Layer("linear", batch=2, tokens=5, in_features=12, out_features=7),
    Layer("layernorm", batch=2, tokens=5, in_features=24),
    Layer("layernorm", batch=2, tokens=12, in_features=6, channels_first=1),
    Layer("matmul", batch=2, heads=3, tokens=5, in_features=8, out_features=6),
    Layer("matmul", batch=2, tokens=5, in_features=8, out_features=6, broadcast=1),
    Layer("attention", batch=2, heads=3, tokens=6, kv_tokens=9, head_dim=8, causal=1),
    Layer("attention", batch=1, heads=2, tokens=7, head_dim=16),
    Layer("embedding", batch=2, tokens=6, in_features=50, out_features=12),
    Layer("upsample", batch=2, in_channels=3, in_h=5, in_w=6, out_h=10, out_w=12),
    Layer("upsample", batch=2, in_channels=3, in_h=5, in_w=6, out_h=11, out_w=9, interpolation="bilinear"),
    Layer("conv_transpose2d", batch=2, in_channels=4, in_h=5, in_w=5, out_channels=6, kernel=3, stride=2, padding=1,
          output_padding=1, groups=2),
    Layer("tanh", batch=2, in_channels=8, in_h=5, in_w=1),
    Layer("gelu", batch=2, in_channels=8, in_h=5, in_w=1, approximate="tanh"),
    Layer("softmax", batch=2, in_channels=9, in_h=6, in_w=1, channels_first=0),
]


def test_every_layer_type_is_covered() -> None:
    from neuralpower import LAYER_TYPES

    assert {layer.type for layer in LAYERS} == set(LAYER_TYPES)


@pytest.mark.parametrize("dtype", ["fp32", "fp16"])
@pytest.mark.parametrize("layer", LAYERS, ids=lambda layer: f"{layer.type}-{layer.batch}x{layer.in_shape[1]}")
def test_cpu_executor_matches_reference(layer: Layer, dtype: str) -> None:
    layer = layer.replace(dtype=dtype)
    executor = CpuExecutor(dtype=dtype)
    assert executor.supports(layer)
    prepared = executor.prepare(layer, executor.variants(layer)[0])
    assert isinstance(prepared, CpuPrepared)
    prepared.check()  # first and last batch items
    ((_, ops, out),) = prepared.outputs()
    assert out.shape == ref.output_shape(layer) and out.dtype == ref.numpy_dtype(dtype)
    assert out.size == math.prod(layer.out_shape)  # the same elements, in the operands' layout
    ref.assert_close(out, ref.forward(layer, ops), layer)  # every batch item
    assert prepared.time_calls(2) > 0
    prepared.synchronize()
    prepared.release()


def test_check_catches_a_wrong_result() -> None:
    layer = Layer("conv2d", batch=2, in_channels=4, in_h=6, in_w=6, out_channels=4, kernel=3, padding=1)
    executor = CpuExecutor()
    prepared = executor.prepare(layer, executor.variants(layer)[0])
    assert isinstance(prepared, CpuPrepared)
    ((_, ops, _),) = prepared.outputs()
    ops.params["weight"][0, 0, 1, 1] += 0.5  # the reference sees other weights than the prepared kernel
    with pytest.raises(AssertionError, match="conv2d"):
        prepared.check()


def test_assert_close_reports_shape_and_nonfinite() -> None:
    layer = Layer("relu", in_channels=2)
    with pytest.raises(AssertionError, match="shape"):
        ref.assert_close(np.zeros((1, 2, 1, 1)), np.zeros((1, 3, 1, 1)), layer)
    with pytest.raises(AssertionError, match="non-finite"):
        ref.assert_close(np.full((1, 2, 1, 1), np.nan), np.zeros((1, 2, 1, 1)), layer)
    ref.assert_close(np.array([-np.inf, 1.0]), np.array([-np.inf, 1.0]), layer)
    with pytest.raises(AssertionError, match="infinite"):
        ref.assert_close(np.array([0.0, 1.0]), np.array([-np.inf, 1.0]), layer)


def test_cpu_network_end_to_end() -> None:
    arch = zoo.build("squeezenet1_0", batch=2, image_size=64)
    executor = get_executor("cpu", "cpu", "fp32")
    prepared = executor.prepare_network(arch, executor.variants(arch.layers[0])[0])
    assert isinstance(prepared, CpuPrepared)
    prepared.check()
    prepared.run()
    assert prepared.time_calls(1) > 0
    layers = [layer for layer, _, _ in prepared.outputs()]
    assert layers == list(arch.layers)


def test_cpu_network_buffers_are_shared_by_shape() -> None:
    conv = Layer("conv2d", batch=1, in_channels=4, in_h=8, in_w=8, out_channels=4, kernel=3, padding=1)
    arch = Architecture("twins", [conv, conv, Layer("relu", batch=1, in_channels=4, in_h=8, in_w=8)])
    prepared = CpuExecutor().prepare_network(arch, Variant(impl="im2col"))
    assert isinstance(prepared, CpuPrepared)
    (_, a, out_a), (_, b, out_b), (_, c, _) = prepared.outputs()
    assert a.inputs[0] is b.inputs[0] is c.inputs[0]  # read-only random inputs, one per shape
    assert out_a is out_b
    assert a.params["weight"] is not b.params["weight"]


def test_cpu_executor_context_and_errors() -> None:
    executor = CpuExecutor()
    context = executor.context()
    assert context["executor"] == "cpu" and context["device"] == "cpu" and context["gpu"] == cpu_model()
    assert context["numpy"] == np.__version__ and int(context["threads"]) >= 1
    with pytest.raises(ExecutorUnavailable, match="--device cpu"):
        get_executor("cpu", "cuda:0")
    with pytest.raises(ExecutorUnavailable, match="bf16"):
        get_executor("cpu", "cpu", "bf16")
    with pytest.raises(ExecutorUnavailable, match="unknown executor"):
        get_executor("nope")
    assert not executor.supports(Layer("relu", in_channels=3, dtype="bf16"))
    layer = Layer("relu", in_channels=3)
    with pytest.raises(LayerFailed, match="graph"):
        executor.prepare(layer, Variant(mode="graph"))
    with pytest.raises(LayerFailed, match="bf16"):
        executor.prepare(layer.replace(dtype="bf16"), Variant())


@pytest.mark.parametrize(
    ("layer", "message"),
    [
        (Layer("relu", in_channels=3, dtype="fp8"), "the cpu executor runs fp32, fp16, not fp8"),
        (Layer("attention", heads=4, kv_heads=1, tokens=6, head_dim=8), "kv_heads = heads, not 1 of 4"),
        (Layer("attention", heads=4, tokens=6, head_dim=8, causal=1, window=2), "without a window, not window 2"),
        (Layer("attention", heads=4, tokens=6, head_dim=8, dtype="fp16", kv_dtype="fp8"), "in its dtype, not fp8"),
    ],
)
def test_cpu_executor_refuses_what_it_cannot_run(layer: Layer, message: str) -> None:
    """fp8 and attention's serving forms: refused in one line, never measured as something else."""
    executor = CpuExecutor()
    assert not executor.supports(layer)
    with pytest.raises(LayerFailed, match=message) as err:
        executor.prepare(layer, Variant())
    assert "\n" not in str(err.value)
    with pytest.raises(LayerFailed, match=message):
        executor.prepare_network(Architecture("a", [layer]), Variant())
    with pytest.raises(ExecutorUnavailable, match="fp8"):
        get_executor("cpu", "cpu", "fp8")


def test_conv_workspace_chunks_the_batch() -> None:
    layer = Layer("conv2d", batch=5, in_channels=3, in_h=9, in_w=9, out_channels=4, kernel=3, padding=1, stride=2)
    small = CpuExecutor(workspace_bytes=1)  # one batch item at a time
    prepared = small.prepare(layer, small.variants(layer)[0])
    assert isinstance(prepared, CpuPrepared)
    ((_, ops, out),) = prepared.outputs()
    ref.assert_close(out, ref.forward(layer, ops), layer)
