"""GPU power and energy through NVML, behind a small interface that tests replace with a fake ``pynvml``.

How a power window is measured (MEASUREMENT.md, points 3, 6 and 7): the workload runs back to back for a
discarded warm-up, then the device is synchronized and the total-energy counter (``nvmlDeviceGet
TotalEnergyConsumption``, millijoules since the driver loaded) and the device state (temperature, SM and
memory clocks, power limit, clocks-event reasons) are read; the workload runs back to back for at least
``window_s`` seconds while a background thread samples ``NVML_FI_DEV_POWER_INSTANT`` every 10-20 ms
(de-duplicated by the sensor's own timestamp); the device is synchronized, and counter and state are read
again. Power is ``ΔE / Δt``; the sample mean is a cross-check.

Flags a window may carry (:attr:`PowerWindow.flags`):

``no_counter``
    The energy counter is missing (``NVMLError_NotSupported`` before Volta, or an NVML error); power then
    comes from the instant samples, when there are any.
``zero_delta``
    The counter did not advance (or went back) over the window: the power given, if any, is the samples'.
``disagree``
    Counter and sample mean differ by more than 10 % of the counter's power.
``throttled``
    A clocks-event reason that slows the chip down for a reason other than the workload's own power draw
    was active before, during or after the window: HW slowdown (0x8), SW thermal slowdown (0x20), HW thermal
    slowdown (0x40) or HW power brake (0x80).
``power_capped``
    SW power cap (0x4): the chip held its clocks down to stay under the power limit. That is how a GPU runs
    a heavy kernel at its default limit, not a fault, so it is recorded apart from ``throttled``.
``no_power``
    Neither the counter nor instant samples gave a power.
``nvml_error``
    An NVML call failed during the window (the message is in :attr:`PowerWindow.error`).

Reasons never flagged (harmless): GPU idle (0x1), applications clocks setting (0x2), sync boost (0x10),
display clock setting (0x100).

NVML failures never raise out of this module: a meter that cannot open says why in :attr:`PowerMeter.reason`
and measures nothing; a failed read becomes a missing value or a flag.
"""

from __future__ import annotations

import contextlib
import importlib
import itertools
import os
import statistics
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any

from ..errors import NeuralPowerError

__all__ = [
    "DISAGREE_FRACTION",
    "HARMLESS_REASONS",
    "POWER_CAP_REASONS",
    "THROTTLE_REASONS",
    "DeviceState",
    "PowerMeter",
    "PowerUnavailable",
    "PowerWindow",
    "reason_names",
]

# NVML's field id of the instant power (nvml.h); used where an older pynvml lacks the constant.
_FI_DEV_POWER_INSTANT = 186

# Clocks-event (throttle) reason bits of nvml.h.
HARMLESS_REASONS: dict[int, str] = {
    0x1: "gpu_idle",
    0x2: "applications_clocks_setting",
    0x10: "sync_boost",
    0x100: "display_clock_setting",
}
POWER_CAP_REASONS: dict[int, str] = {0x4: "sw_power_cap"}
THROTTLE_REASONS: dict[int, str] = {
    0x8: "hw_slowdown",
    0x20: "sw_thermal_slowdown",
    0x40: "hw_thermal_slowdown",
    0x80: "hw_power_brake_slowdown",
}
_THROTTLE_MASK = sum(THROTTLE_REASONS)
_POWER_CAP_MASK = sum(POWER_CAP_REASONS)

DISAGREE_FRACTION = 0.10


class PowerUnavailable(NeuralPowerError):
    """NVML cannot measure this device (no nvidia-ml-py, no driver, no such GPU)."""


def reason_names(mask: int) -> list[str]:
    """The names of the clocks-event reason bits set in ``mask`` (unknown bits as hex)."""
    known = {**HARMLESS_REASONS, **POWER_CAP_REASONS, **THROTTLE_REASONS}
    names = [name for bit, name in sorted(known.items()) if mask & bit]
    rest = mask & ~sum(known)
    if rest:
        names.append(hex(rest))
    return names


@dataclass(frozen=True)
class DeviceState:
    """The device around a power window (``None`` where NVML could not tell)."""

    temperature_c: float | None = None
    sm_clock_mhz: float | None = None
    mem_clock_mhz: float | None = None
    power_limit_w: float | None = None
    clocks_event_reasons: int | None = None

    def columns(self, suffix: str) -> dict[str, Any]:
        return {
            f"temperature_c_{suffix}": self.temperature_c,
            f"sm_clock_mhz_{suffix}": self.sm_clock_mhz,
            f"mem_clock_mhz_{suffix}": self.mem_clock_mhz,
        }


@dataclass
class PowerWindow:
    """One power window.

    Attributes
    ----------
    seconds
        Host time between the two counter reads (device synchronized at both ends).
    calls
        Calls of the workload in the window (0 for idle).
    energy_mj
        Energy over the window (``None`` without a counter): ``power_w`` times ``seconds``.
    power_w
        The counter's power between the first and last of its steps seen in the window (see
        :func:`_step_power`; its delta over the whole window where too few steps were seen), or the sample mean
        where the counter gave nothing (see ``source``).
    sample_power_w, samples
        Mean and count of the distinct instant-power samples.
    source
        ``counter``, ``samples`` or ``""`` (no power).
    instant_source
        ``instant`` (NVML_FI_DEV_POWER_INSTANT), ``average`` (nvmlDeviceGetPowerUsage, a 1 s moving
        average on recent GPUs) or ``""``.
    reasons
        Every clocks-event reason bit seen before, during or after the window.
    counter_period_ms
        The median time between the energy counter's steps seen during the window (the sensor's update
        period; ``None`` with fewer than three steps seen).
    """

    seconds: float
    calls: int
    energy_mj: float | None
    power_w: float | None
    sample_power_w: float | None
    samples: int
    source: str
    instant_source: str
    before: DeviceState
    after: DeviceState
    reasons: int = 0
    flags: list[str] = field(default_factory=list)
    error: str = ""
    counter_period_ms: float | None = None

    @property
    def energy_per_call_mj(self) -> float | None:
        """Energy of one call: the window's energy over its calls."""
        if self.power_w is None or self.calls < 1:
            return None
        return self.power_w * self.seconds * 1000.0 / self.calls

    def columns(self) -> dict[str, Any]:
        """The dataset columns of this window (power, energy per call, state before and after, reasons)."""
        return {
            "power_w": self.power_w,
            "energy_mj": self.energy_per_call_mj,
            "power_source": self.source,
            "sample_power_w": self.sample_power_w,
            "power_samples": self.samples,
            "window_s": self.seconds,
            "window_calls": self.calls,
            **self.before.columns("before"),
            **self.after.columns("after"),
            "power_limit_w": self.before.power_limit_w,
            "clocks_event_reasons": "|".join(reason_names(self.reasons)),
            "counter_period_ms": self.counter_period_ms,
        }


def _decode(value: Any) -> str:
    return value.decode(errors="replace") if isinstance(value, bytes) else str(value)


class _Sampler(threading.Thread):
    """Reads instant power, the energy counter (noting when it steps) and clocks-event reasons every
    ``period_s`` until stopped."""

    def __init__(self, meter: PowerMeter, period_s: float, energy: int | None = None) -> None:
        super().__init__(name="neuralpower-power-sampler", daemon=True)
        self.meter = meter
        self.period_s = period_s
        self.stop_event = threading.Event()
        self.samples: dict[int, float] = {}  # sensor timestamp (us) -> watts
        self.reasons = 0
        self.last_energy = energy
        self.steps: list[tuple[float, int]] = []  # (host time, counter) just after each step seen

    def run(self) -> None:
        while True:
            reading = self.meter.instant_power()
            if reading is not None:
                self.samples.setdefault(reading[0], reading[1])
            if self.last_energy is not None:
                e = self.meter.energy_mj()
                if e is not None and e != self.last_energy:
                    self.steps.append((time.perf_counter(), e))
                    self.last_energy = e
            reasons = self.meter.clocks_event_reasons()
            if reasons is not None:
                self.reasons |= reasons
            if self.stop_event.wait(self.period_s):
                return

    def stop(self) -> tuple[list[float], int]:
        self.stop_event.set()
        self.join()
        return list(self.samples.values()), self.reasons


class PowerMeter:
    """NVML readings of one GPU.

    Create it with :meth:`open`, which never raises: when NVML cannot measure the device the meter is
    unavailable (:attr:`available` false, :attr:`reason` says why in one line) and :meth:`measure` returns
    ``None``.

    Parameters
    ----------
    nvml
        The ``pynvml`` module (or a fake with the same functions), initialized.
    handle
        The device's NVML handle.
    sample_period_s
        Period of the instant-power sampling thread.
    """

    def __init__(
        self, nvml: ModuleType | None, handle: Any, *, sample_period_s: float = 0.015, reason: str = ""
    ) -> None:
        self.nvml = nvml
        self.handle = handle
        self.sample_period_s = sample_period_s
        self.reason = reason
        self._instant: str | None = None  # "instant", "average" or "" once probed
        self._has_counter: bool | None = None

    # -- opening and closing -------------------------------------------------------------------------
    @classmethod
    def open(cls, device: str = "cuda:0", *, uuid: str | None = None, sample_period_s: float = 0.015) -> PowerMeter:
        """A meter for a CUDA device (``cuda:N``, or the GPU with ``uuid``); unavailable when NVML cannot
        measure it.

        ``cuda:N`` counts the devices CUDA sees, which ``CUDA_VISIBLE_DEVICES`` may renumber: NVML does not
        see that variable, so the index is mapped through it (or, better, give the ``uuid`` the executor
        reports).
        """
        try:
            nvml = importlib.import_module("pynvml")
        except ImportError:
            return cls.unavailable("NVML not available: pip install nvidia-ml-py (the 'gpu' extra)")
        try:
            nvml.nvmlInit()
        except Exception as e:  # pynvml raises NVMLError subclasses, or OSError-like when the library is missing
            return cls.unavailable(f"NVML did not initialize: {_message(e)}")
        try:
            handle = _handle(nvml, device, uuid)
        except PowerUnavailable as e:
            _shutdown(nvml)
            return cls.unavailable(str(e))
        except Exception as e:
            _shutdown(nvml)
            return cls.unavailable(f"NVML has no device {uuid or device}: {_message(e)}")
        return cls(nvml, handle, sample_period_s=sample_period_s)

    @classmethod
    def unavailable(cls, reason: str) -> PowerMeter:
        """A meter that measures nothing, saying why."""
        return cls(None, None, reason=reason)

    @property
    def available(self) -> bool:
        return self.nvml is not None

    def close(self) -> None:
        """Shut NVML down (the meter becomes unavailable)."""
        if self.nvml is not None:
            _shutdown(self.nvml)
            self.nvml = None
            self.reason = "closed"

    def __enter__(self) -> PowerMeter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- single readings -----------------------------------------------------------------------------
    def _call(self, name: str, *args: Any) -> Any:
        """An NVML call; ``None`` when the function is missing, unsupported or fails."""
        if self.nvml is None:
            return None
        fn = getattr(self.nvml, name, None)
        if fn is None:
            return None
        try:
            return fn(self.handle, *args)
        except Exception:  # an NVMLError: the reading is missing
            return None

    def info(self) -> dict[str, Any]:
        """Context of the device: ``gpu`` (name), ``gpu_uuid``, ``driver``, ``cuda_driver`` (the CUDA
        version the driver supports), ``memory_total_bytes``, ``power_limit_w``, ``energy_counter``
        (bool), ``instant_source``."""
        if self.nvml is None:
            return {}
        out: dict[str, Any] = {}
        name = self._call("nvmlDeviceGetName")
        if name is not None:
            out["gpu"] = _decode(name)
        uuid = self._call("nvmlDeviceGetUUID")
        if uuid is not None:
            out["gpu_uuid"] = _decode(uuid)
        with contextlib.suppress(Exception):
            out["driver"] = _decode(self.nvml.nvmlSystemGetDriverVersion())
        try:
            v = int(self.nvml.nvmlSystemGetCudaDriverVersion())
            out["cuda_driver"] = f"{v // 1000}.{v % 1000 // 10}"
        except Exception:
            pass
        memory = self._call("nvmlDeviceGetMemoryInfo")
        if memory is not None and hasattr(memory, "total"):
            out["memory_total_bytes"] = int(memory.total)
        limit = self._call("nvmlDeviceGetEnforcedPowerLimit")
        if limit is None:
            limit = self._call("nvmlDeviceGetPowerManagementLimit")
        if limit is not None:
            out["power_limit_w"] = limit / 1000.0
        out["energy_counter"] = self.energy_mj() is not None
        self.instant_power()
        out["instant_source"] = self._instant or ""
        return out

    def energy_mj(self) -> int | None:
        """The total-energy counter in millijoules, ``None`` when the device has none."""
        if self.nvml is None or self._has_counter is False:
            return None
        try:
            value = int(self.nvml.nvmlDeviceGetTotalEnergyConsumption(self.handle))
        except Exception as e:
            if _not_supported(self.nvml, e):
                self._has_counter = False
            return None
        self._has_counter = True
        return value

    def instant_power(self) -> tuple[int, float] | None:
        """``(timestamp_us, watts)`` of the instant-power sensor, or of ``nvmlDeviceGetPowerUsage`` (host
        timestamp) where the instant field is unsupported; ``None`` when neither works."""
        if self.nvml is None or self._instant == "":
            return None
        if self._instant in (None, "instant"):
            reading = self._field_instant()
            if reading is not None:
                self._instant = "instant"
                return reading
            if self._instant == "instant":
                return None  # a transient failure of a field that worked before
        try:
            milliwatts = self.nvml.nvmlDeviceGetPowerUsage(self.handle)
        except Exception:
            if self._instant is None:
                self._instant = ""
            return None
        self._instant = "average"
        return time.time_ns() // 1000, float(milliwatts) / 1000.0

    def _field_instant(self) -> tuple[int, float] | None:
        assert self.nvml is not None
        get = getattr(self.nvml, "nvmlDeviceGetFieldValues", None)
        if get is None:
            return None
        field_id = getattr(self.nvml, "NVML_FI_DEV_POWER_INSTANT", _FI_DEV_POWER_INSTANT)
        try:
            value = get(self.handle, [field_id])[0]
        except Exception:
            return None
        if int(getattr(value, "nvmlReturn", 0)) != 0:
            return None
        union = value.value
        # valueType: 0 double, 1 unsigned int, 2 unsigned long, 3 unsigned long long, 4 signed long long,
        # 5 signed int; power is an unsigned int in milliwatts.
        member = {0: "dVal", 1: "uiVal", 2: "ulVal", 3: "ullVal", 4: "sllVal", 5: "siVal"}.get(
            int(getattr(value, "valueType", 1)), "uiVal"
        )
        milliwatts = float(getattr(union, member))
        return int(value.timestamp), milliwatts / 1000.0

    def clocks_event_reasons(self) -> int | None:
        """The active clocks-event (throttle) reason bits."""
        value = self._call("nvmlDeviceGetCurrentClocksEventReasons")
        if value is None:
            value = self._call("nvmlDeviceGetCurrentClocksThrottleReasons")
        return None if value is None else int(value)

    def state(self) -> DeviceState:
        """Temperature, SM and memory clocks, power limit and clocks-event reasons now."""
        if self.nvml is None:
            return DeviceState()
        temp = self._call("nvmlDeviceGetTemperature", getattr(self.nvml, "NVML_TEMPERATURE_GPU", 0))
        sm = self._call("nvmlDeviceGetClockInfo", getattr(self.nvml, "NVML_CLOCK_SM", 1))
        mem = self._call("nvmlDeviceGetClockInfo", getattr(self.nvml, "NVML_CLOCK_MEM", 2))
        limit = self._call("nvmlDeviceGetEnforcedPowerLimit")
        if limit is None:
            limit = self._call("nvmlDeviceGetPowerManagementLimit")
        return DeviceState(
            temperature_c=None if temp is None else float(temp),
            sm_clock_mhz=None if sm is None else float(sm),
            mem_clock_mhz=None if mem is None else float(mem),
            power_limit_w=None if limit is None else limit / 1000.0,
            clocks_event_reasons=self.clocks_event_reasons(),
        )

    # -- windows -------------------------------------------------------------------------------------
    def measure(
        self,
        run_for: Callable[[float], int],
        *,
        window_s: float = 1.0,
        warmup_s: float = 0.5,
        synchronize: Callable[[], None] | None = None,
    ) -> PowerWindow | None:
        """Measure a workload's power over one window; ``None`` when the meter is unavailable.

        Parameters
        ----------
        run_for
            Runs the workload back to back for at least the given seconds, synchronizes the device, and
            returns the number of calls made.
        window_s
            Length of the measured window (at least 1 s for the counter's 100 ms steps to matter little).
        warmup_s
            Discarded run before the window (power ramps up for about 0.1 s after load starts).
        synchronize
            Waits for the device (called before the first reads).
        """
        if self.nvml is None:
            return None
        if warmup_s > 0:
            run_for(warmup_s)
        if synchronize is not None:
            synchronize()
        before = self.state()
        e0 = self.energy_mj()
        sampler = _Sampler(self, self.sample_period_s, e0)
        t0 = time.perf_counter()
        sampler.start()
        try:
            calls = run_for(window_s)
        finally:
            e1 = self.energy_mj()
            t1 = time.perf_counter()
            samples, sampled_reasons = sampler.stop()
        after = self.state()
        return self._window(t1 - t0, calls, e0, e1, samples, sampled_reasons, before, after, sampler.steps)

    def idle(self, seconds: float = 3.0) -> PowerWindow | None:
        """Idle power: a window of ``seconds`` with nothing running (store it; never subtract it silently)."""

        def sleep(s: float) -> int:
            time.sleep(s)
            return 0

        return self.measure(sleep, window_s=seconds, warmup_s=0.0)

    def _window(
        self,
        seconds: float,
        calls: int,
        e0: int | None,
        e1: int | None,
        samples: list[float],
        sampled_reasons: int,
        before: DeviceState,
        after: DeviceState,
        steps: list[tuple[float, int]] | None = None,
    ) -> PowerWindow:
        flags: list[str] = []
        error = ""
        energy: float | None = None
        power: float | None = None
        source = ""
        if e0 is None or e1 is None:
            flags.append("no_counter")
            if self._has_counter is not False:
                flags.append("nvml_error")
                error = "reading the energy counter failed"
        else:
            energy = float(e1 - e0)
            if energy <= 0 or seconds <= 0:
                flags.append("zero_delta")
            else:
                power = _step_power(steps or [], seconds) or energy / 1000.0 / seconds
                energy = power * seconds * 1000.0
                source = "counter"
        sample_mean = statistics.fmean(samples) if samples else None
        if power is None and sample_mean is not None:
            power, source = sample_mean, "samples"
        if (
            source == "counter"
            and sample_mean is not None
            and power is not None
            and abs(sample_mean - power) > DISAGREE_FRACTION * power
        ):
            flags.append("disagree")
        reasons = sampled_reasons
        for s in (before, after):
            if s.clocks_event_reasons is not None:
                reasons |= s.clocks_event_reasons
        if reasons & _THROTTLE_MASK:
            flags.append("throttled")
        if reasons & _POWER_CAP_MASK:
            flags.append("power_capped")
        if power is None:
            flags.append("no_power")
        return PowerWindow(
            seconds=seconds,
            calls=calls,
            energy_mj=energy,
            power_w=power,
            sample_power_w=sample_mean,
            samples=len(samples),
            source=source,
            instant_source=self._instant or "",
            before=before,
            after=after,
            reasons=reasons,
            flags=flags,
            error=error,
            counter_period_ms=_step_period_ms(steps or []),
        )


def _step_power(steps: list[tuple[float, int]], seconds: float) -> float | None:
    """The counter's power between the first and the last of its steps seen during a window.

    The counter steps about every 100 ms: energy over the whole window is off by up to a step at either end
    (about 10 % of a 1 s window), while between two steps seen just after they happened it is off by the
    sampling period at most. None where the steps seen span less than half the window.
    """
    if len(steps) < 2:
        return None
    (ta, ea), (tb, eb) = steps[0], steps[-1]
    if tb - ta < 0.5 * seconds or eb <= ea:
        return None
    return (eb - ea) / 1000.0 / (tb - ta)


def _step_period_ms(steps: list[tuple[float, int]]) -> float | None:
    """The median time between the counter's steps seen (its update period), from three steps on."""
    if len(steps) < 3:
        return None
    return 1000.0 * statistics.median(b[0] - a[0] for a, b in itertools.pairwise(steps))


def _message(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return text[0] if text else type(e).__name__


def _not_supported(nvml: Any, e: BaseException) -> bool:
    cls = getattr(nvml, "NVMLError_NotSupported", None)
    if isinstance(cls, type) and isinstance(e, cls):
        return True
    code = getattr(nvml, "NVML_ERROR_NOT_SUPPORTED", 3)
    return getattr(e, "value", None) == code


def _shutdown(nvml: Any) -> None:
    with contextlib.suppress(Exception):  # nothing to do about a failed shutdown
        nvml.nvmlShutdown()


def _handle(nvml: Any, device: str, uuid: str | None) -> Any:
    """The NVML handle of ``uuid``, or of CUDA device ``cuda:N`` mapped through ``CUDA_VISIBLE_DEVICES``."""
    if uuid:
        return nvml.nvmlDeviceGetHandleByUUID(uuid)
    text = device.strip().lower()
    if text == "cuda":
        index = 0
    elif text.startswith("cuda:") and text[5:].isdigit():
        index = int(text[5:])
    else:
        raise PowerUnavailable(f"NVML measures CUDA devices, not {device!r}")
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None and visible.strip():
        items = [v.strip() for v in visible.split(",") if v.strip()]
        if index >= len(items):
            raise PowerUnavailable(f"no CUDA device {device} (CUDA_VISIBLE_DEVICES={visible})")
        item = items[index]
        if item.startswith("MIG-"):
            raise PowerUnavailable("a MIG instance has no energy counter of its own")
        if item.startswith("GPU-"):
            return nvml.nvmlDeviceGetHandleByUUID(item)
        if item.isdigit():
            index = int(item)
    return nvml.nvmlDeviceGetHandleByIndex(index)
