"""NVML power measurement with ``pynvml`` replaced by a fake: counter, zero delta, missing counter,
throttling, disagreement, fallbacks, device mapping, and power rows in a dataset."""

from __future__ import annotations

import csv
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from neuralpower.bench.executors.cpu import CpuExecutor, cpu_model
from neuralpower.bench.power import PowerMeter, reason_names
from neuralpower.bench.runner import BenchOptions, run_bench
from neuralpower.bench.sweep import Limits
from neuralpower.bench.timing import TimingConfig
from neuralpower.models.data import read_measurements


class NVMLError(Exception):
    def __init__(self, value: int = 999) -> None:
        super().__init__(f"NVML error {value}")
        self.value = value


class NVMLError_NotSupported(NVMLError):
    def __init__(self) -> None:
        super().__init__(3)


@dataclass
class _Union:
    uiVal: int


@dataclass
class _FieldValue:
    timestamp: int
    nvmlReturn: int
    valueType: int
    value: _Union


@dataclass
class _Memory:
    total: int


class FakeNVML:
    """The parts of pynvml the meter uses. Energy advances at ``power_w`` (continuously, for exact
    checks); the instant sensor reads ``instant_w`` with a timestamp that changes every 10 ms."""

    NVMLError = NVMLError
    NVMLError_NotSupported = NVMLError_NotSupported
    NVML_FI_DEV_POWER_INSTANT = 186
    NVML_TEMPERATURE_GPU = 0
    NVML_CLOCK_SM = 1
    NVML_CLOCK_MEM = 2

    def __init__(
        self,
        power_w: float = 300.0,
        instant_w: float | None = None,
        counter: str = "ok",
        step_s: float = 0.0,
        instant_field: bool = True,
        reasons: int = 0,
    ) -> None:
        self.power_w = power_w
        self.instant_w = power_w if instant_w is None else instant_w
        self.counter = counter  # ok, frozen, unsupported, error
        self.step_s = step_s  # > 0: the counter moves in steps this far apart, as real ones do (about 0.1 s)
        self.instant_field = instant_field
        self.reasons = reasons
        self.t0 = time.perf_counter()
        self.opened: tuple[str, Any] | None = None
        self.shutdowns = 0

    def nvmlInit(self) -> None:
        pass

    def nvmlShutdown(self) -> None:
        self.shutdowns += 1

    def nvmlDeviceGetHandleByIndex(self, index: int) -> str:
        self.opened = ("index", index)
        return "handle"

    def nvmlDeviceGetHandleByUUID(self, uuid: str) -> str:
        self.opened = ("uuid", uuid)
        return "handle"

    def nvmlDeviceGetTotalEnergyConsumption(self, handle: str) -> int:
        if self.counter == "unsupported":
            raise NVMLError_NotSupported()
        if self.counter == "error":
            raise NVMLError(15)
        if self.counter == "frozen":
            return 123456
        t = time.perf_counter() - self.t0
        if self.step_s > 0:
            t = (t // self.step_s) * self.step_s
        return int(123456 + t * self.power_w * 1000)

    def nvmlDeviceGetFieldValues(self, handle: str, ids: list[int]) -> list[_FieldValue]:
        assert ids == [186]
        stamp = int((time.perf_counter() - self.t0) * 1e6) // 10_000 * 10_000
        ret = 0 if self.instant_field else 3
        return [_FieldValue(stamp, ret, 1, _Union(round(self.instant_w * 1000)))]

    def nvmlDeviceGetPowerUsage(self, handle: str) -> int:
        return round(self.instant_w * 1000)

    def nvmlDeviceGetCurrentClocksEventReasons(self, handle: str) -> int:
        return self.reasons

    def nvmlDeviceGetTemperature(self, handle: str, sensor: int) -> int:
        return 55

    def nvmlDeviceGetClockInfo(self, handle: str, clock: int) -> int:
        return 1980 if clock == self.NVML_CLOCK_SM else 2619

    def nvmlDeviceGetEnforcedPowerLimit(self, handle: str) -> int:
        return 700_000

    def nvmlDeviceGetName(self, handle: str) -> bytes:
        return b"NVIDIA H100 80GB HBM3"

    def nvmlDeviceGetUUID(self, handle: str) -> str:
        return "GPU-0123"

    def nvmlDeviceGetMemoryInfo(self, handle: str) -> _Memory:
        return _Memory(80 << 30)

    def nvmlSystemGetDriverVersion(self) -> str:
        return "550.54.15"

    def nvmlSystemGetCudaDriverVersion(self) -> int:
        return 12040


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> FakeNVML:
    nvml = FakeNVML()
    monkeypatch.setitem(sys.modules, "pynvml", nvml)
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    return nvml


def workload(seconds: float) -> int:
    time.sleep(seconds)
    return 42


def measure(meter: PowerMeter, window_s: float = 0.25) -> Any:
    window = meter.measure(workload, window_s=window_s, warmup_s=0.01)
    assert window is not None
    return window


def test_counter_gives_power_and_energy(fake: FakeNVML) -> None:
    meter = PowerMeter.open("cuda:0", sample_period_s=0.005)
    assert meter.available and fake.opened == ("index", 0)
    w = measure(meter)
    assert w.source == "counter" and w.flags == []
    assert w.power_w == pytest.approx(300.0, rel=0.03)
    assert w.sample_power_w == pytest.approx(300.0)
    assert w.samples >= 5  # de-duplicated by the sensor's 10 ms timestamps
    assert w.samples <= w.seconds / 0.01 + 2
    assert w.energy_mj == pytest.approx(300.0 * w.seconds * 1000, rel=0.03)
    assert w.calls == 42 and w.energy_per_call_mj == pytest.approx(w.power_w * w.seconds * 1000 / 42)
    assert w.before.temperature_c == 55 and w.after.sm_clock_mhz == 1980 and w.before.power_limit_w == 700
    columns = w.columns()
    assert columns["power_w"] == w.power_w and columns["temperature_c_before"] == 55
    assert columns["clocks_event_reasons"] == "" and columns["power_source"] == "counter"
    info = meter.info()
    assert info["gpu"] == "NVIDIA H100 80GB HBM3" and info["gpu_uuid"] == "GPU-0123"
    assert info["driver"] == "550.54.15" and info["cuda_driver"] == "12.4"
    assert info["memory_total_bytes"] == 80 << 30 and info["energy_counter"] is True
    assert info["instant_source"] == "instant" and info["power_limit_w"] == 700
    meter.close()
    assert fake.shutdowns == 1 and not meter.available and meter.measure(workload) is None


def test_zero_delta(fake: FakeNVML) -> None:
    fake.counter = "frozen"
    w = measure(PowerMeter.open())
    assert "zero_delta" in w.flags and w.energy_mj == 0
    assert w.source == "samples" and w.power_w == pytest.approx(300.0)  # the samples stand in, flagged


def test_missing_counter(fake: FakeNVML) -> None:
    fake.counter = "unsupported"
    meter = PowerMeter.open()
    w = measure(meter)
    assert w.flags == ["no_counter"] and w.energy_mj is None
    assert w.source == "samples" and w.power_w == pytest.approx(300.0)
    assert meter.info()["energy_counter"] is False


def test_counter_error_is_a_flag_not_a_traceback(fake: FakeNVML) -> None:
    fake.counter = "error"
    w = measure(PowerMeter.open())
    assert "no_counter" in w.flags and "nvml_error" in w.flags and w.error


def test_no_power_at_all(fake: FakeNVML, monkeypatch: pytest.MonkeyPatch) -> None:
    fake.counter = "unsupported"
    fake.instant_field = False

    def broken(handle: str) -> int:
        raise NVMLError_NotSupported()

    monkeypatch.setattr(fake, "nvmlDeviceGetPowerUsage", broken)
    w = measure(PowerMeter.open())
    assert w.power_w is None and w.energy_per_call_mj is None
    assert set(w.flags) == {"no_counter", "no_power"} and w.source == ""


def test_disagreement(fake: FakeNVML) -> None:
    fake.instant_w = 200.0
    w = measure(PowerMeter.open())
    assert "disagree" in w.flags and w.source == "counter"
    assert w.power_w == pytest.approx(300.0, rel=0.03)
    fake.instant_w = 310.0  # within 10 %
    assert "disagree" not in measure(PowerMeter.open()).flags


@pytest.mark.parametrize(
    ("reasons", "flags"),
    [
        (0x0, []),
        (0x1 | 0x2 | 0x10 | 0x100, []),  # idle, application clocks, sync boost, display: harmless
        (0x4, ["power_capped"]),
        (0x8, ["throttled"]),
        (0x20, ["throttled"]),
        (0x40 | 0x4, ["throttled", "power_capped"]),
        (0x80, ["throttled"]),
    ],
)
def test_throttle_reasons(fake: FakeNVML, reasons: int, flags: list[str]) -> None:
    fake.reasons = reasons
    w = measure(PowerMeter.open(), window_s=0.05)
    assert w.flags == flags and w.reasons == reasons


def test_throttling_during_the_window_is_seen(fake: FakeNVML) -> None:
    def hot(seconds: float) -> int:
        fake.reasons = 0x40  # HW thermal slowdown only while the workload runs
        time.sleep(seconds)
        fake.reasons = 0
        return 1

    meter = PowerMeter.open(sample_period_s=0.005)
    w = meter.measure(hot, window_s=0.1, warmup_s=0.0)
    assert w is not None and "throttled" in w.flags
    assert w.before.clocks_event_reasons == 0 and w.after.clocks_event_reasons == 0


def test_old_throttle_function_name(fake: FakeNVML, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delattr(FakeNVML, "nvmlDeviceGetCurrentClocksEventReasons")
    monkeypatch.setattr(fake, "nvmlDeviceGetCurrentClocksThrottleReasons", lambda handle: 0x20, raising=False)
    assert PowerMeter.open().clocks_event_reasons() == 0x20


def test_instant_field_unsupported_falls_back_to_power_usage(fake: FakeNVML) -> None:
    fake.instant_field = False
    fake.instant_w = 250.0
    meter = PowerMeter.open(sample_period_s=0.01)
    w = measure(meter)
    assert w.instant_source == "average" and w.sample_power_w == pytest.approx(250.0)
    assert "disagree" in w.flags  # 250 W against the counter's 300 W


def test_idle(fake: FakeNVML) -> None:
    fake.power_w = fake.instant_w = 70.0
    w = PowerMeter.open().idle(0.2)
    assert w is not None and w.calls == 0 and w.power_w == pytest.approx(70.0, rel=0.05)
    assert w.energy_per_call_mj is None


def test_unavailable_meters(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pynvml", None)  # import fails as when nvidia-ml-py is missing
    meter = PowerMeter.open()
    assert not meter.available and "nvidia-ml-py" in meter.reason
    assert meter.measure(workload) is None and meter.idle(0.01) is None
    assert meter.info() == {} and meter.energy_mj() is None and meter.instant_power() is None
    assert meter.state().temperature_c is None

    class NoDriver(FakeNVML):
        def nvmlInit(self) -> None:
            raise NVMLError(9)

    monkeypatch.setitem(sys.modules, "pynvml", NoDriver())
    meter = PowerMeter.open()
    assert not meter.available and meter.reason.startswith("NVML did not initialize")


def test_device_mapping(fake: FakeNVML, monkeypatch: pytest.MonkeyPatch) -> None:
    PowerMeter.open("cuda:1")
    assert fake.opened == ("index", 1)
    PowerMeter.open("cuda:0", uuid="GPU-abc")
    assert fake.opened == ("uuid", "GPU-abc")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2,3")
    PowerMeter.open("cuda:1")
    assert fake.opened == ("index", 3)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "GPU-xyz")
    PowerMeter.open("cuda:0")
    assert fake.opened == ("uuid", "GPU-xyz")
    assert "no CUDA device cuda:1" in PowerMeter.open("cuda:1").reason
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "MIG-0123")
    assert "MIG" in PowerMeter.open("cuda:0").reason
    assert "not 'cpu'" in PowerMeter.open("cpu").reason


def test_reason_names() -> None:
    assert reason_names(0) == []
    assert reason_names(0x4 | 0x40) == ["sw_power_cap", "hw_thermal_slowdown"]
    assert reason_names(0x1000) == ["0x1000"]


def test_power_rows_in_a_dataset(fake: FakeNVML, tmp_path: Path) -> None:
    """A sweep with a (fake) meter: idle power first, power windows on the selected configurations, all of
    it in the dataset, which fit reads with its power targets."""
    options = BenchOptions(
        suite="quick",
        types=["relu", "add"],
        configs=8,
        window_s=0.05,
        warmup_s=0.0,
        idle_s=0.05,
        timing=TimingConfig(target_ms=0.5, loops=2, warmup_ms=0.5),
        progress=False,
    )
    options.limits = Limits(max_bytes=1 << 20, max_flops=10**6)
    summary = run_bench(CpuExecutor(), str(tmp_path), options, meter=PowerMeter.open())
    assert summary.failed == summary.oom == 0 and summary.measured > 0
    assert summary.idle_power_w == pytest.approx(300.0, rel=0.1)
    assert summary.power_rows >= 3 * 2  # at least one configuration per type, three trials each
    m = read_measurements([tmp_path / "layers.csv"])
    power = m.targets["power_w"]
    assert (power[power == power] > 0).all() and (power == power).sum() == summary.power_rows
    with open(tmp_path / "layers.csv", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    with_power = [r for r in rows if r["power_w"]]
    # the executor's context wins (here the CPU's name); NVML fills in what it leaves out
    assert all(r["gpu"] == cpu_model() and r["gpu_uuid"] == "GPU-0123" and r["driver"] == "550.54.15" for r in rows)
    assert all(float(r["idle_power_w"]) > 0 for r in rows)
    assert all(r["temperature_c_before"] == "55.0" and r["energy_mj"] and r["window_calls"] for r in with_power)
    assert {r["trial"] for r in with_power} == {"0", "1", "2"}


def test_one_limit_given_keeps_the_devices_default_for_the_other() -> None:
    """--max-flops alone: max_bytes stays an eighth of the device's memory (it was 4 GiB whatever the GPU)."""
    from types import SimpleNamespace

    from neuralpower.bench.runner import resolve_limits

    gpu: Any = SimpleNamespace(device="cuda:0")
    options = BenchOptions(limit_overrides={"max_flops": 10**9})
    assert resolve_limits(gpu, options, 80 << 30) == Limits(max_bytes=10 << 30, max_flops=10**9)
    assert resolve_limits(gpu, BenchOptions(limit_overrides={"max_bytes": 1 << 30}), 80 << 30) == Limits(
        max_bytes=1 << 30, max_flops=2 * 10**11
    )
    assert resolve_limits(CpuExecutor(), BenchOptions(), None) == Limits(max_bytes=32 << 20, max_flops=2 * 10**8)
    assert resolve_limits(gpu, BenchOptions(limits=Limits(1, 2), limit_overrides={"max_bytes": 5}), 1) == Limits(1, 2)


def test_windows_align_to_the_counter_steps(monkeypatch: pytest.MonkeyPatch) -> None:
    # a counter that steps every 100 ms: over a 0.35 s window its delta is off by up to a step at either end
    # (up to 30 %); between the steps seen in the window it is off by the sampling period at most
    nvml = FakeNVML(step_s=0.1)
    monkeypatch.setitem(sys.modules, "pynvml", nvml)
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    meter = PowerMeter.open("cuda:0", sample_period_s=0.002)

    def run(seconds: float) -> int:
        time.sleep(seconds)
        return 1

    for _ in range(3):
        w = meter.measure(run, window_s=0.35, warmup_s=0.0)
        assert w is not None and w.source == "counter"
        assert w.power_w == pytest.approx(300.0, rel=0.1)
        assert w.energy_mj == pytest.approx(w.power_w * w.seconds * 1000)
        assert w.counter_period_ms == pytest.approx(100.0, abs=15.0)
        assert w.columns()["counter_period_ms"] == w.counter_period_ms


def test_campaign_with_a_power_sensor(fake: FakeNVML, tmp_path: Path) -> None:
    """A campaign whose executor has a (fake) sensor: the sensor check, power windows in the sweep and on the
    networks, power models fitted, and the report saying so."""
    import io
    import json

    from neuralpower.campaign import CampaignOptions, run_campaign
    from neuralpower.models.data import flag_names, unusable

    out = tmp_path / "visit"
    options = CampaignOptions(out=str(out), executor="cpu", dtypes=["fp32"], minutes=0.75, suite="quick",
                              networks=["cifar_conv6"], batches=[1], trials=1, progress=False, target_ms=0.5,
                              loops=2, window_s=0.05)
    visit = run_campaign(options, stream=io.StringIO(), meter_factory=lambda executor: PowerMeter.open())
    assert visit["sensor"]["available"] and visit["sensor"]["idle_w"] == pytest.approx(300.0, rel=0.1)
    assert "idle 300" in visit["sensor"]["note"]
    assert visit["environment"]["power_limit_w"] == 700 and visit["environment"]["gpu_uuid"] == "GPU-0123"
    assert visit["stages"]["layers-fp32"]["power_rows"] > 0 and visit["stages"]["networks-fp32"]["power_rows"] == 1
    model = json.loads((out / "cpu-fp32" / "model.json").read_text())
    with open(out / "cpu-fp32" / "layers.csv", encoding="utf-8") as f:
        rows = [r for r in csv.DictReader(f) if r["power_w"]]
    # power is fitted from the windows that other work on the machine did not disturb
    usable = [r for r in rows if not unusable(flag_names(r["flags"]))]
    assert len(rows) == visit["stages"]["layers-fp32"]["power_rows"] and model["power_measured"] == bool(usable)
    assert "power sensor: idle" in (out / "report.md").read_text()
