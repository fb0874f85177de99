"""Every CUDA kernel against the NumPy reference on a GPU, and the tiled GEMM against cuBLAS.

Marked ``gpu``: skipped cleanly without CuPy or without a CUDA device. Each case draws fresh random operands
(``reference.make_operands``), poisons the output with NaN (an unwritten element fails) and compares with
the float64 reference: fp32 with fp32's tight tolerance, fp16 with fp16's.
"""

from __future__ import annotations

import random
import warnings
from typing import Any

import numpy as np
import pytest

from neuralpower import Layer
from neuralpower.bench import kernels
from neuralpower.bench import reference as ref
from neuralpower.bench.executors.cupy_exec import CupyExecutor, compare_with_reference
from neuralpower.errors import InputError

pytestmark = pytest.mark.gpu

with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # CuPy may warn at import (e.g. about the CUDA path it found): not a failure
    cupy = pytest.importorskip("cupy")


def _cuda_devices() -> int:
    try:
        return int(cupy.cuda.runtime.getDeviceCount())
    except Exception:  # no driver, no device
        return 0


if _cuda_devices() == 0:
    pytest.skip("no CUDA device", allow_module_level=True)

FP = ("fp32", "fp16")


@pytest.fixture(scope="module")
def executor() -> CupyExecutor:
    return CupyExecutor(device="cuda:0")


def _conv(c: int, co: int, h: int, w: int, k: int | tuple[int, int], **fields: Any) -> Layer:
    return Layer("conv2d", in_channels=c, out_channels=co, in_h=h, in_w=w, kernel=k, **fields)


def _spatial(kind: str, c: int, h: int, w: int, **fields: Any) -> Layer:
    return Layer(kind, in_channels=c, in_h=h, in_w=w, **fields)


def _named_cases() -> list[tuple[Layer, str]]:
    """Odd sizes and every option: odd channels, 7x7, 13x13, stride 2, dilation 2, groups, depthwise (tiled
    and direct), ceil mode, padding, bias or not, vector and scalar paths."""
    cases: list[tuple[Layer, str]] = []
    for dt in FP:
        b2 = dict(batch=2, dtype=dt)
        cases += [
            (_conv(3, 64, 61, 57, 7, stride=2, padding=3, **b2), ""),
            (_conv(35, 67, 13, 13, 3, padding=1, **b2), ""),
            (_conv(64, 130, 14, 14, 3, padding=2, dilation=2, bias=0, **b2), ""),
            (_conv(129, 65, 7, 7, 1, **b2), ""),
            (_conv(32, 64, 15, 17, (3, 5), stride=(2, 1), padding=(1, 2), groups=4, **b2), ""),
            (_conv(96, 96, 57, 57, 3, stride=2, padding=1, groups=96, **b2), ""),  # depthwise, tiled
            (_conv(40, 80, 33, 45, 5, padding=4, dilation=2, groups=40, **b2), ""),  # depthwise, multiplier 2
            (_conv(144, 144, 13, 13, 5, padding=2, groups=144, **b2), ""),  # depthwise, direct (OW < 16)
            (_conv(24, 24, 28, 28, 3, padding=1, groups=24, **b2), "implicit_gemm"),
            (_conv(24, 24, 28, 28, 3, padding=1, groups=24, **b2), "depthwise_direct"),
            (Layer("linear", in_features=1000, out_features=1001, batch=1, dtype=dt), "kernel"),
            (Layer("linear", in_features=999, out_features=257, batch=8, dtype=dt), "kernel"),
            (Layer("linear", in_features=513, out_features=130, batch=67, dtype=dt, bias=0), "kernel"),
            (Layer("linear", in_features=512, out_features=1000, batch=33, dtype=dt), "cublas"),
            (_spatial("maxpool2d", 64, 113, 113, kernel=3, stride=2, padding=1, **b2), ""),
            (_spatial("maxpool2d", 5, 13, 14, kernel=3, stride=2, ceil_mode=1, **b2), ""),
            (_spatial("maxpool2d", 5, 15, 15, kernel=3, stride=2, padding=1, dilation=2, ceil_mode=1, **b2), ""),
            (_spatial("avgpool2d", 7, 13, 13, kernel=3, stride=2, padding=1, ceil_mode=1, **b2), ""),
            (_spatial("avgpool2d", 256, 14, 14, kernel=2, **b2), ""),
            (_spatial("adaptive_avgpool2d", 512, 13, 13, out_h=6, out_w=6, **b2), ""),
            (_spatial("adaptive_avgpool2d", 1281, 7, 7, **b2), ""),  # global: a warp per plane
            (_spatial("adaptive_avgpool2d", 3, 57, 61, **b2), ""),  # global: a block per plane
            (_spatial("batchnorm2d", 67, 13, 13, **b2), ""),
            (_spatial("batchnorm2d", 64, 28, 28, **b2), ""),
            (_spatial("add", 67, 13, 13, inputs=3, **b2), ""),
            (_spatial("add", 64, 28, 28, inputs=2, **b2), ""),
            (_spatial("mul", 35, 9, 9, inputs=2, **b2), ""),
            (_spatial("mul", 96, 28, 28, inputs=2, broadcast=1, **b2), ""),
            (_spatial("mul", 33, 7, 7, inputs=3, broadcast=1, **b2), ""),
            (_spatial("add", 33, 7, 7, inputs=2, broadcast=1, **b2), ""),
            (_spatial("concat", 99, 13, 13, inputs=3, **b2), ""),
            (_spatial("concat", 512, 28, 28, inputs=4, **b2), ""),
            (_spatial("concat", 64, 7, 7, inputs=1, **b2), ""),
            (_spatial("softmax", 21, 13, 13, **b2), ""),
            (_spatial("softmax", 1000, 1, 1, **b2), ""),
            (_spatial("channel_shuffle", 116, 28, 28, groups=2, **b2), ""),
            (_spatial("channel_shuffle", 243, 7, 7, groups=3, **b2), ""),
            (_spatial("flatten", 512, 7, 7, **b2), ""),
            # transformer and decoder types: odd sizes, both row-reduction shapes, causal with L != S
            (Layer("linear", in_features=768, out_features=3072, tokens=197, **b2), "kernel"),
            (Layer("linear", in_features=769, out_features=130, tokens=3, **b2), "cublas"),
            (Layer("layernorm", in_features=768, tokens=197, **b2), ""),
            (Layer("layernorm", in_features=4099, tokens=5, **b2), ""),  # a block per row
            (Layer("layernorm", in_features=96, tokens=57 * 57, channels_first=1, **b2), ""),
            (Layer("matmul", heads=12, tokens=197, in_features=64, out_features=197, **b2), "kernel"),
            (Layer("matmul", heads=12, tokens=197, in_features=197, out_features=64, **b2), "cublas"),
            (Layer("matmul", tokens=129, in_features=67, out_features=257, broadcast=1, **b2), "kernel"),
            (Layer("attention", heads=12, tokens=197, head_dim=64, **b2), ""),
            (Layer("attention", heads=4, tokens=77, kv_tokens=300, head_dim=80, causal=1, **b2), ""),
            (Layer("attention", heads=2, tokens=300, kv_tokens=77, head_dim=33, causal=1, **b2), ""),
            (Layer("embedding", tokens=129, in_features=30522, out_features=768, **b2), ""),
            (Layer("embedding", tokens=17, in_features=1000, out_features=77, **b2), ""),
            (_spatial("upsample", 64, 28, 28, out_h=56, out_w=56, **b2), ""),
            (_spatial("upsample", 5, 14, 9, out_h=20, out_w=31, **b2), ""),
            (_spatial("upsample", 5, 13, 17, out_h=33, out_w=20, interpolation="bilinear", **b2), ""),
            (Layer("conv_transpose2d", in_channels=64, out_channels=32, in_h=28, in_w=28, kernel=2, stride=2, **b2),
             ""),
            (Layer("conv_transpose2d", in_channels=12, out_channels=18, in_h=13, in_w=11, kernel=3, stride=2,
                   padding=1, output_padding=1, dilation=2, groups=3, **b2), ""),
            (_spatial("gelu", 768, 197, 1, approximate="tanh", **b2), ""),
            (_spatial("tanh", 768, 1, 1, **b2), ""),
            (_spatial("softmax", 197, 12 * 197, 1, channels_first=0, **b2), ""),
            (_spatial("softmax", 4097, 3, 1, channels_first=0, **b2), ""),
        ]
        cases += [(_spatial(t, 67, 13, 13, **b2), "") for t in kernels.ACTIVATION_KERNELS]
        cases += [(_spatial(t, 64, 28, 28, **b2), "") for t in ("relu", "gelu")]
    return cases


def _random_cases(count: int, seed: int) -> list[tuple[Layer, str]]:
    """Random valid convolutions and pools (odd sizes likely), both dtypes."""
    rnd = random.Random(seed)
    cases: list[tuple[Layer, str]] = []
    while len(cases) < count:
        dt = rnd.choice(FP)
        kind = rnd.choice(["conv2d", "conv2d", "depthwise", "maxpool2d", "avgpool2d"])
        k = (rnd.choice([1, 3, 5, 7]), rnd.choice([1, 3, 5, 7]))
        common: dict[str, Any] = dict(
            in_h=rnd.randint(1, 40),
            in_w=rnd.randint(1, 40),
            batch=rnd.randint(1, 3),
            dtype=dt,
            kernel=k,
            stride=(rnd.randint(1, 3), rnd.randint(1, 3)),
        )
        try:
            if kind == "conv2d":
                g = rnd.choice([1, 1, 2, 4])
                layer = Layer(
                    "conv2d",
                    in_channels=g * rnd.randint(1, 24),
                    out_channels=g * rnd.randint(1, 40),
                    groups=g,
                    padding=(rnd.randint(0, 3), rnd.randint(0, 3)),
                    dilation=(rnd.randint(1, 2), rnd.randint(1, 2)),
                    bias=rnd.randint(0, 1),
                    **common,
                )
            elif kind == "depthwise":
                c = rnd.randint(2, 40)
                layer = Layer(
                    "conv2d",
                    in_channels=c,
                    out_channels=c * rnd.choice([1, 1, 2]),
                    groups=c,
                    padding=(k[0] // 2, k[1] // 2),
                    dilation=rnd.randint(1, 2),
                    **common,
                )
            else:
                extra = {"dilation": (rnd.randint(1, 2), rnd.randint(1, 2))} if kind == "maxpool2d" else {}
                layer = Layer(
                    kind,
                    in_channels=rnd.randint(1, 9),
                    padding=(rnd.randint(0, k[0] // 2), rnd.randint(0, k[1] // 2)),
                    ceil_mode=rnd.randint(0, 1),
                    **extra,
                    **common,
                )
        except InputError:
            continue
        cases.append((layer, ""))
    return cases


CASES = _named_cases() + _random_cases(40, seed=2024)


def _id(case: tuple[Layer, str]) -> str:
    layer, impl = case
    return f"{layer.type}-{impl or kernels.plan_layer(layer).impl or 'k'}-{layer.dtype}"


@pytest.mark.parametrize("case_index", range(len(CASES)), ids=[f"{i}-{_id(c)}" for i, c in enumerate(CASES)])
def test_kernel_matches_the_reference(executor: CupyExecutor, case_index: int) -> None:
    layer, impl = CASES[case_index]
    ops = ref.make_operands(layer, np.random.default_rng(1000 + case_index))
    actual = executor.run_on(layer, ops, impl)
    compare_with_reference(actual, ref.forward(layer, ops), layer)


def test_the_cases_use_every_kernel() -> None:
    used = {
        s.kernel
        for layer, impl in CASES
        for s in kernels.plan_layer(layer, impl).steps
        if isinstance(s, kernels.Launch)
    }
    assert used == {t for templates in kernels.KERNELS.values() for t in templates}


@pytest.mark.parametrize("dtype", FP)
@pytest.mark.parametrize(("m", "k", "n"), [(300, 1000, 700), (1024, 4096, 1024), (5, 4096, 4096)])
def test_gemm_kernel_matches_cublas(executor: CupyExecutor, dtype: str, m: int, k: int, n: int) -> None:
    """Sizes where a float64 reference on the host is slow: cuBLAS (fp32 accumulation) is the reference."""
    layer = Layer("linear", in_features=k, out_features=n, batch=m, dtype=dtype)
    ops = ref.make_operands(layer, np.random.default_rng(m + k + n))
    ours = executor.run_on(layer, ops, "kernel").astype(np.float64)
    x, w, b = (cupy.asarray(a, dtype=np.float32) for a in (ops.inputs[0], ops.params["weight"], ops.params["bias"]))
    theirs = cupy.asnumpy(x @ w.T + b).astype(np.float64)
    error = np.linalg.norm(ours - theirs) / np.linalg.norm(theirs)
    assert error < (1e-5 if dtype == "fp32" else 3e-3), error


def test_large_convolution_matches_the_reference(executor: CupyExecutor) -> None:
    """Many tiles in every grid dimension, K in many slices."""
    layer = Layer("conv2d", in_channels=128, out_channels=192, in_h=30, in_w=30, kernel=3, padding=1, batch=2)
    ops = ref.make_operands(layer, np.random.default_rng(7))
    compare_with_reference(executor.run_on(layer, ops), ref.forward(layer, ops), layer)
