"""The ``cupy`` and ``torch`` executors on a GPU: prepare, check, run and time layers and networks in every
variant, out-of-memory reporting, and MEASUREMENT.md's timing sanity checks (a large GEMM takes the same
time in a CUDA graph as eagerly; a tiny kernel is faster in the graph).

Marked ``gpu``: each executor's tests are skipped cleanly without its library or without a CUDA device.
The sanity checks about NVML energy belong to ``tests/test_bench_power.py``.
"""

from __future__ import annotations

import math
import statistics
import warnings
from collections.abc import Iterator
from typing import Any

import pytest

from neuralpower import Layer, zoo
from neuralpower.bench.executors import Executor, LayerFailed, OutOfMemory, Prepared, Variant, get_executor
from neuralpower.bench.executors.torch_exec import has_image_layout

pytestmark = pytest.mark.gpu


def _executor(name: str, library: str, **options: Any) -> Executor:
    """The executor on cuda:0, or a skip: without its library, or without a CUDA device."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a library may warn at import (e.g. CuPy about the CUDA path it found)
        pytest.importorskip(library)
    try:
        if library == "cupy":
            import cupy

            devices = int(cupy.cuda.runtime.getDeviceCount())
        else:
            import torch

            devices = int(torch.cuda.device_count()) if torch.cuda.is_available() else 0
    except Exception:  # no driver
        devices = 0
    if devices == 0:
        pytest.skip("no CUDA device")
    executor = get_executor(name, device="cuda:0", dtype="fp32")
    for key, value in options.items():
        setattr(executor, key, value)
    return executor


@pytest.fixture(scope="module")
def cupy_executor() -> Iterator[Executor]:
    executor = _executor("cupy", "cupy")
    yield executor
    import cupy

    cupy.get_default_memory_pool().free_all_blocks()


@pytest.fixture(scope="module")
def torch_executor() -> Iterator[Executor]:
    executor = _executor("torch", "torch", channels_last=True)
    yield executor
    import torch

    torch.cuda.empty_cache()


LAYERS = [
    Layer("conv2d", in_channels=64, out_channels=64, in_h=56, in_w=56, kernel=3, padding=1, batch=4),
    Layer("conv2d", in_channels=96, out_channels=96, in_h=57, in_w=57, kernel=3, stride=2, padding=1, groups=96),
    Layer("conv2d", in_channels=35, out_channels=67, in_h=13, in_w=13, kernel=3, padding=1, batch=3, dtype="fp16"),
    Layer("linear", in_features=1024, out_features=1000, batch=1),
    Layer("linear", in_features=513, out_features=1000, batch=64, dtype="fp16"),
    Layer("maxpool2d", in_channels=64, in_h=113, in_w=113, kernel=3, stride=2, ceil_mode=1, batch=2),
    Layer("avgpool2d", in_channels=7, in_h=13, in_w=13, kernel=3, stride=2, padding=1, ceil_mode=1),
    Layer("adaptive_avgpool2d", in_channels=512, in_h=7, in_w=7, batch=8),
    Layer("batchnorm2d", in_channels=67, in_h=13, in_w=13, batch=2, dtype="fp16"),
    Layer("hardswish", in_channels=67, in_h=13, in_w=13, batch=2),
    Layer("gelu", in_channels=64, in_h=28, in_w=28, batch=2, dtype="fp16"),
    Layer("mul", in_channels=96, in_h=28, in_w=28, inputs=2, broadcast=1, batch=2),
    Layer("add", in_channels=64, in_h=28, in_w=28, inputs=3, batch=2),
    Layer("concat", in_channels=99, in_h=13, in_w=13, inputs=3, batch=2),
    Layer("softmax", in_channels=1000, batch=8),
    Layer("channel_shuffle", in_channels=116, in_h=28, in_w=28, groups=2, batch=2),
    Layer("flatten", in_channels=512, in_h=7, in_w=7, batch=2),
    Layer("linear", in_features=768, out_features=768, tokens=197, batch=2),
    Layer("layernorm", in_features=768, tokens=197, batch=2, dtype="fp16"),
    Layer("layernorm", in_features=96, tokens=56 * 56, channels_first=1, batch=2),
    Layer("matmul", heads=12, tokens=197, in_features=64, out_features=197, batch=2),
    Layer("attention", heads=12, tokens=197, head_dim=64, batch=2, dtype="fp16"),
    Layer("attention", heads=4, tokens=128, kv_tokens=256, head_dim=64, causal=1, batch=2),
    Layer("embedding", tokens=128, in_features=30522, out_features=768, batch=2),
    Layer("upsample", in_channels=64, in_h=28, in_w=28, out_h=56, out_w=56, interpolation=1, batch=2),
    Layer("conv_transpose2d", in_channels=64, out_channels=32, in_h=28, in_w=28, kernel=3, stride=2, padding=1,
          output_padding=1, batch=2),
    Layer("gelu", in_channels=768, in_h=197, approximate="tanh", batch=2),
    Layer("tanh", in_channels=768, batch=2),
    Layer("softmax", in_channels=197, in_h=12 * 197, channels_first=0, batch=2),
]


def _exercise(prepared: Prepared) -> float:
    """Check, one untimed call, then a short timed loop; the milliseconds per call."""
    try:
        prepared.check()
        prepared.run()
        prepared.synchronize()
        ms = prepared.time_calls(5)
        assert math.isfinite(ms) and ms >= 0
        return ms
    finally:
        prepared.release()


def _median_ms(prepared: Prepared, calls: int, repeats: int = 5) -> float:
    prepared.run()
    prepared.synchronize()
    prepared.time_calls(calls)  # warm-up
    return statistics.median(prepared.time_calls(calls) for _ in range(repeats))


# -- cupy ------------------------------------------------------------------------------------------------


def test_cupy_context(cupy_executor: Executor) -> None:
    context = cupy_executor.context()
    assert context["executor"] == "cupy" and context["device"] == "cuda:0"
    assert context["gpu"] and str(context["gpu_uuid"]).startswith("GPU-")
    assert context["cuda"] and context["cuda_driver"] and context["cupy"]
    assert cupy_executor.l2_bytes() > 1 << 20


@pytest.mark.parametrize("layer", LAYERS, ids=lambda layer: f"{layer.type}-{layer.dtype}")
def test_cupy_layers_in_every_variant(cupy_executor: Executor, layer: Layer) -> None:
    variants = cupy_executor.variants(layer)
    assert variants[0].mode == "eager"
    assert {v.mode for v in variants} == ({"eager"} if layer.type == "flatten" else {"eager", "graph"})
    if layer.type in ("linear", "matmul"):
        assert {v.impl for v in variants} == {"kernel", "cublas"}
        # CuPy refuses cuBLAS calls during stream capture: cuBLAS runs eager only, and graph is refused
        assert {v.mode for v in variants if v.impl == "cublas"} == {"eager"}
        with pytest.raises(LayerFailed, match="eager only"):
            cupy_executor.prepare(layer, Variant(mode="graph", impl="cublas"))
    for variant in variants:
        _exercise(cupy_executor.prepare(layer, variant))


@pytest.mark.parametrize("mode", ["eager", "graph"])
def test_cupy_network(cupy_executor: Executor, mode: str) -> None:
    arch = zoo.build("resnet18", batch=2)
    ms = _exercise(cupy_executor.prepare_network(arch, Variant(mode=mode)))
    assert ms > 0.01
    # the variants bench-network uses (a network with a linear layer: our kernels and cuBLAS) all run
    for variant in cupy_executor.network_variants(arch):
        _exercise(cupy_executor.prepare_network(arch, variant))


@pytest.mark.parametrize("fixture", ["cupy_executor", "torch_executor"])
def test_power_windows_run_the_timed_graphs(request: pytest.FixtureRequest, fixture: str) -> None:
    """run_calls (what a power window runs) replays the graphs time_calls captured, and no other."""
    executor: Executor = request.getfixturevalue(fixture)
    layer = Layer("conv2d", in_channels=64, out_channels=64, in_h=28, in_w=28, kernel=3, padding=1, batch=4)
    prepared = executor.prepare(layer, Variant(mode="graph"))
    try:
        prepared.time_calls(70)
        captured = set(prepared._graphs)  # type: ignore[attr-defined]
        prepared.run_calls(70)
        prepared.synchronize()
        assert set(prepared._graphs) == captured  # type: ignore[attr-defined]
    finally:
        prepared.release()


def test_cupy_out_of_memory_is_reported(cupy_executor: Executor) -> None:
    # 41 operands of 2^30 fp32 elements: 176 GB, more than any single GPU of today has
    huge = Layer("add", in_channels=1024, in_h=1024, in_w=1024, inputs=40)
    with pytest.raises(OutOfMemory):
        cupy_executor.prepare(huge, Variant())
    import cupy

    cupy.get_default_memory_pool().free_all_blocks()
    _exercise(cupy_executor.prepare(LAYERS[0], Variant()))  # the executor goes on


def _compare_modes(executor: Executor, layer: Layer, impl: str, calls: int) -> dict[str, float]:
    """Median milliseconds per call in eager and graph mode, measured alternately (drift hits both)."""
    prepared = {mode: executor.prepare(layer, Variant(mode=mode, impl=impl)) for mode in ("eager", "graph")}
    try:
        samples: dict[str, list[float]] = {mode: [] for mode in prepared}
        for p in prepared.values():
            p.run()
            p.synchronize()
            p.time_calls(calls)  # warm-up
        for _ in range(5):
            for mode, p in prepared.items():
                samples[mode].append(p.time_calls(calls))
        return {mode: statistics.median(values) for mode, values in samples.items()}
    finally:
        for p in prepared.values():
            p.release()


def test_graph_and_eager_agree_on_a_large_gemm(cupy_executor: Executor) -> None:
    layer = Layer("linear", in_features=4096, out_features=4096, batch=4096)
    times = _compare_modes(cupy_executor, layer, "kernel", calls=10)  # cuBLAS cannot be captured by CuPy
    assert abs(times["graph"] / times["eager"] - 1) < 0.05, times


def test_a_tiny_kernel_is_faster_in_a_graph(cupy_executor: Executor) -> None:
    times = _compare_modes(cupy_executor, Layer("relu", in_channels=256), "", calls=500)
    assert times["graph"] < times["eager"], times


# -- torch -----------------------------------------------------------------------------------------------


def test_torch_context(torch_executor: Executor) -> None:
    context = torch_executor.context()
    assert context["executor"] == "torch" and context["device"] == "cuda:0"
    assert context["gpu"] and str(context["gpu_uuid"]).startswith("GPU-") and context["torch"]
    assert context["cudnn_benchmark"] is True
    assert torch_executor.l2_bytes() > 1 << 20


@pytest.mark.parametrize("layer", LAYERS, ids=lambda layer: f"{layer.type}-{layer.dtype}")
def test_torch_layers_in_every_variant(torch_executor: Executor, layer: Layer) -> None:
    variants = torch_executor.variants(layer)
    formats = {v.memory_format for v in variants}
    assert formats == ({"contiguous", "channels_last"} if has_image_layout(layer) else {"contiguous"})
    for variant in variants:
        _exercise(torch_executor.prepare(layer, variant))


def test_torch_bf16(torch_executor: Executor) -> None:
    layer = Layer("conv2d", in_channels=32, out_channels=48, in_h=28, in_w=28, kernel=3, padding=1, dtype="bf16")
    assert torch_executor.supports(layer)
    _exercise(torch_executor.prepare(layer, Variant(mode="graph")))


@pytest.mark.parametrize(("name", "mode"), [("resnet18", "eager"), ("resnet18", "graph"), ("cifar_nin", "graph")])
def test_torch_networks(torch_executor: Executor, name: str, mode: str) -> None:
    arch = zoo.build(name, batch=2)
    prepared = torch_executor.prepare_network(arch, Variant(mode=mode))
    model = getattr(prepared, "_keep", None)
    if name == "resnet18":  # a zoo network from torchvision runs as torchvision's model
        assert type(model).__module__.startswith("torchvision.models")
    else:  # the others run their layers' modules in order
        assert isinstance(model, list) and len(model) == len(arch)
    assert _exercise(prepared) > 0.005


def test_torch_channels_last_network(torch_executor: Executor) -> None:
    arch = zoo.build("mobilenet_v2", batch=2, dtype="fp16")
    _exercise(torch_executor.prepare_network(arch, Variant(mode="graph", memory_format="channels_last")))


def test_torch_out_of_memory_is_reported(torch_executor: Executor) -> None:
    huge = Layer("add", in_channels=1024, in_h=1024, in_w=1024, inputs=40)
    with pytest.raises(OutOfMemory):
        torch_executor.prepare(huge, Variant())
    _exercise(torch_executor.prepare(LAYERS[0], Variant()))


# -- both -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("fixture", ["cupy_executor", "torch_executor"])
def test_calls_scale_time(request: pytest.FixtureRequest, fixture: str) -> None:
    """Twice the calls take about twice the time (graph mode, a mid-sized convolution)."""
    executor: Executor = request.getfixturevalue(fixture)
    layer = Layer("conv2d", in_channels=128, out_channels=128, in_h=28, in_w=28, kernel=3, padding=1, batch=8)
    prepared = executor.prepare(layer, Variant(mode="graph"))
    try:
        one, two = _median_ms(prepared, 40), _median_ms(prepared, 80)
    finally:
        prepared.release()
    assert abs(two / one - 1) < 0.05, (one, two)
