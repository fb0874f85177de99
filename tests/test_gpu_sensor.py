"""MEASUREMENT.md's sanity checks on the real NVML sensor of the GPU (skipped without one).

Counter monotonic and in millijoules, its update period under load at most about 100 ms, idle energy/time
against the instant samples, a loaded GPU between idle and the power limit, twice the calls twice the energy,
and energy per call repeatable across windows.
"""

from __future__ import annotations

import itertools
import statistics
import time
from collections.abc import Iterator
from typing import Any

import pytest

from neuralpower import Layer
from neuralpower.bench.executors import Variant
from neuralpower.bench.power import PowerMeter
from neuralpower.bench.timing import run_for

pytestmark = pytest.mark.gpu


@pytest.fixture(scope="module")
def meter() -> Iterator[PowerMeter]:
    pytest.importorskip("pynvml")
    m = PowerMeter.open("cuda:0")
    if not m.available:
        pytest.skip(f"no NVML power sensor: {m.reason}")
    if m.energy_mj() is None:
        pytest.skip("this GPU has no energy counter (before Volta)")
    yield m
    m.close()


@pytest.fixture(scope="module")
def gemm() -> Iterator[Any]:
    """A large fp16 GEMM through PyTorch (compute-bound), prepared once, as the executors run layers."""
    pytest.importorskip("torch")
    import torch

    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    from neuralpower.bench.executors import get_executor

    executor = get_executor("torch", device="cuda:0", dtype="fp16")
    prepared = executor.prepare(Layer("linear", batch=8192, in_features=8192, out_features=8192, dtype="fp16"),
                                Variant(mode="graph"))
    prepared.time_calls(4)
    yield prepared
    prepared.release()


def _loaded(gemm: Any, seconds: float) -> int:
    return run_for(gemm, seconds, 4)


def test_counter_is_monotonic_millijoules_and_steps_often(meter: PowerMeter, gemm: Any) -> None:
    readings = []
    start = time.perf_counter()
    while time.perf_counter() - start < 1.5:
        gemm.run_calls(2)
        readings.append((time.perf_counter(), meter.energy_mj()))
    gemm.synchronize()
    values = [e for _, e in readings]
    assert all(b >= a for a, b in itertools.pairwise(values)), "the energy counter went back"
    steps = [t for (t, e), (_, prev) in zip(readings[1:], readings, strict=False) if e != prev]
    assert len(steps) >= 5
    period = statistics.median(b - a for a, b in itertools.pairwise(steps))
    assert period <= 0.15, f"update period {period * 1000:.0f} ms"
    # millijoules: a loaded GPU draws tens to hundreds of watts, i.e. 1e4 to 1e6 mJ per second
    rate = (values[-1] - values[0]) / (readings[-1][0] - readings[0][0])
    assert 1e4 < rate < 2e6, f"{rate:.0f} per second: not millijoules?"


def test_idle_counter_agrees_with_instant_samples(meter: PowerMeter) -> None:
    window = meter.idle(3.0)
    assert window is not None and window.power_w is not None and window.sample_power_w is not None
    assert window.power_w == pytest.approx(window.sample_power_w, rel=0.10)


def test_loaded_power_between_idle_and_the_limit(meter: PowerMeter, gemm: Any) -> None:
    idle = meter.idle(2.0)
    loaded = meter.measure(lambda s: _loaded(gemm, s), window_s=1.5, warmup_s=0.5, synchronize=gemm.synchronize)
    assert idle is not None and loaded is not None and idle.power_w and loaded.power_w
    limit = loaded.before.power_limit_w
    assert idle.power_w < loaded.power_w
    if limit:
        assert loaded.power_w <= 1.05 * limit
    assert loaded.counter_period_ms is not None and loaded.counter_period_ms <= 150


def test_energy_per_call_is_repeatable_and_scales(meter: PowerMeter, gemm: Any) -> None:
    windows = [meter.measure(lambda s: _loaded(gemm, s), window_s=1.0, warmup_s=0.3, synchronize=gemm.synchronize)
               for _ in range(5)]
    per_call = [w.energy_per_call_mj for w in windows if w is not None and w.energy_per_call_mj]
    assert len(per_call) == 5
    cv = statistics.stdev(per_call) / statistics.fmean(per_call)
    assert cv < 0.05, per_call
    # twice the window: twice the energy (and the calls), within 5 %
    long = meter.measure(lambda s: _loaded(gemm, s), window_s=2.0, warmup_s=0.3, synchronize=gemm.synchronize)
    assert long is not None and long.energy_mj and windows[-1] is not None and windows[-1].energy_mj
    ratio = (long.energy_mj / long.calls) / (windows[-1].energy_mj / windows[-1].calls)
    assert ratio == pytest.approx(1.0, abs=0.05)
