"""Timing a prepared workload as MEASUREMENT.md says: warm up, calibrate, then separate timed loops.

The protocol of :func:`time_workload`:

1. One call, never timed (it compiles kernels, picks cuBLAS/cuDNN algorithms, faults pages in), then a
   synchronize.
2. One timed call, a first estimate of the time per call (a second one where the first alone fills a loop: one
   slow call, preempted or faulting, must not make every loop a single call).
3. Warm-up: back-to-back calls for about ``warmup_ms`` (discarded), which also refines the estimate; clocks
   ramp up meanwhile. Skipped when one call already takes longer than ``target_ms``.
4. ``calls`` per loop chosen so one timed loop lasts about ``target_ms`` (20-50 ms on a GPU: long enough
   to hide the event and launch overhead, short enough for several loops).
5. ``loops`` separate timed loops (``Prepared.time_calls``: device timestamps around back-to-back calls);
   fewer when calls are so slow that they would exceed ``max_seconds``.

The result is the median over loops of the mean time per call (``runtime_ms``), with the fastest and
slowest loop and the coefficient of variation across loops.
"""

from __future__ import annotations

import math
import statistics
import time
from dataclasses import dataclass

from .executors.base import Prepared

__all__ = ["Timing", "TimingConfig", "run_for", "time_workload"]


@dataclass(frozen=True)
class TimingConfig:
    """How to time one workload.

    Attributes
    ----------
    target_ms
        Length of one timed loop.
    loops
        Number of separate timed loops.
    warmup_ms
        Length of the discarded warm-up after the first call.
    max_calls
        Most calls in one loop (very fast workloads).
    max_seconds
        Budget of the timed loops of one workload: slow workloads get fewer loops (at least one).
    """

    target_ms: float = 30.0
    loops: int = 5
    warmup_ms: float = 50.0
    max_calls: int = 100_000
    max_seconds: float = 10.0

    def __post_init__(self) -> None:
        if self.target_ms <= 0 or self.warmup_ms < 0 or self.max_seconds <= 0:
            raise ValueError("target_ms and max_seconds must be positive, warmup_ms not negative")
        if self.loops < 1 or self.max_calls < 1:
            raise ValueError("loops and max_calls must be at least 1")


@dataclass(frozen=True)
class Timing:
    """The timing of one workload: milliseconds per call.

    Attributes
    ----------
    runtime_ms
        Median over loops of the mean time per call.
    runtime_ms_min, runtime_ms_max
        The fastest and slowest loop.
    runtime_cv
        Standard deviation over mean of the loops (0 with one loop).
    calls
        Calls per timed loop.
    loops
        Timed loops.
    """

    runtime_ms: float
    runtime_ms_min: float
    runtime_ms_max: float
    runtime_cv: float
    calls: int
    loops: int

    def columns(self) -> dict[str, float | int]:
        """The dataset columns of this timing."""
        return {
            "runtime_ms": self.runtime_ms,
            "runtime_ms_min": self.runtime_ms_min,
            "runtime_ms_max": self.runtime_ms_max,
            "runtime_cv": self.runtime_cv,
            "calls": self.calls,
            "loops": self.loops,
        }

    @classmethod
    def from_loops(cls, per_call_ms: list[float], calls: int) -> Timing:
        """Summarize loops given as mean milliseconds per call."""
        if not per_call_ms:
            raise ValueError("no timed loops")
        mean = statistics.fmean(per_call_ms)
        cv = statistics.stdev(per_call_ms) / mean if len(per_call_ms) > 1 and mean > 0 else 0.0
        return cls(
            runtime_ms=statistics.median(per_call_ms),
            runtime_ms_min=min(per_call_ms),
            runtime_ms_max=max(per_call_ms),
            runtime_cv=cv,
            calls=calls,
            loops=len(per_call_ms),
        )


def _calls_for(ms_per_call: float, target_ms: float, max_calls: int) -> int:
    if ms_per_call <= 0:
        return max_calls
    return max(1, min(max_calls, math.ceil(target_ms / ms_per_call)))


def time_workload(prepared: Prepared, config: TimingConfig | None = None) -> Timing:
    """Time a prepared workload with the protocol of this module (the first call is never timed)."""
    config = config or TimingConfig()
    prepared.run()
    prepared.synchronize()
    estimate = prepared.time_calls(1)
    if estimate >= config.target_ms:
        # one slow call (a page fault, a preempted thread) must not decide that a loop is one call: ask again
        estimate = min(estimate, prepared.time_calls(1))
    if estimate < config.target_ms and config.warmup_ms > 0:
        warm = _calls_for(estimate, config.warmup_ms, config.max_calls)
        estimate = prepared.time_calls(warm)
    calls = _calls_for(estimate, config.target_ms, config.max_calls)
    loops = config.loops
    budget_ms = config.max_seconds * 1000.0
    if estimate * calls * loops > budget_ms:
        loops = max(1, math.floor(budget_ms / (estimate * calls)))
    per_call = [prepared.time_calls(calls) for _ in range(loops)]
    return Timing.from_loops(per_call, calls)


def run_for(prepared: Prepared, seconds: float, batch_calls: int) -> int:
    """Run calls back to back for at least ``seconds`` (host clock), in batches of ``batch_calls`` each
    followed by a synchronize (so the device's queue stays short and the end is known); the calls made."""
    batch_calls = max(1, batch_calls)
    calls = 0
    start = time.perf_counter()
    while True:
        prepared.run_calls(batch_calls)  # as the timed loops ran them (in graph mode, the same graphs)
        prepared.synchronize()
        calls += batch_calls
        if time.perf_counter() - start >= seconds:
            return calls
