"""Interference: other work on the machine during a measurement is detected, measured again, or flagged."""

from __future__ import annotations

import csv
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from neuralpower.bench import runner
from neuralpower.bench.executors.cpu import CpuExecutor
from neuralpower.bench.interference import BUSY_CORES, CpuLoad, LoadSample
from neuralpower.bench.runner import RETRIES, BenchOptions, run_bench
from neuralpower.bench.sweep import Limits
from neuralpower.bench.timing import TimingConfig, time_workload
from neuralpower.models.data import read_measurements

SMALL = Limits(max_bytes=1 << 20, max_flops=10**6)
FAST = TimingConfig(target_ms=0.5, loops=2, warmup_ms=0.5)


def _proc(tmp_path: Path, busy: int, idle: int, own: tuple[int, int]) -> tuple[str, str]:
    stat, mine = tmp_path / "stat", tmp_path / "self"
    stat.write_text(f"cpu  {busy} 0 0 {idle} 0 0 0 0 0 0\ncpu0 1 2 3 4 5 6 7 8 9 10\n")
    # a command name with spaces and a parenthesis, as /proc/self/stat may have
    fields = ["S", *["0"] * 10, str(own[0]), str(own[1]), *["0"] * 30]
    mine.write_text(f"123 (py (x) y) {' '.join(fields)}\n")
    return str(stat), str(mine)


@pytest.mark.machine_load
def test_load_counts_other_processes_only(tmp_path: Path) -> None:
    stat, mine = _proc(tmp_path, 1000, 5000, (100, 50))
    load = CpuLoad(stat, mine)
    assert load.available
    tick = load._tick
    start = LoadSample(0.0, 1000 / tick, 150 / tick)
    # 1 s later: the machine was busy 1.5 s of processor time, 0.4 s of it this process
    end = LoadSample(1.0, (1000 + 1.5 * tick) / tick, (150 + 0.4 * tick) / tick)
    assert load.others(start, end) == pytest.approx(1.1)
    assert load.sample().own == pytest.approx(150 / tick)


def test_no_proc_means_no_detection(tmp_path: Path) -> None:
    assert not CpuLoad(str(tmp_path / "missing"), str(tmp_path / "missing")).available


@pytest.mark.machine_load
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_a_busy_process_is_seen() -> None:
    load = CpuLoad()
    start = load.sample()
    spin = subprocess.Popen([sys.executable, "-c", "import time\nt=time.time()\nwhile time.time()-t<0.6: pass"])
    spin.wait()
    assert load.others(start) > 0.5


def _run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, busy: list[float]) -> list[dict[str, Any]]:
    seen = iter(busy * 1000)
    monkeypatch.setattr(CpuLoad, "others", lambda self, start, end=None: next(seen))
    # only the (fake) load decides here: loops this short can be noisy on a busy machine
    monkeypatch.setattr(runner, "NOISY_CV", float("inf"))
    opts = BenchOptions(suite="quick", configs=4, types=["relu"], limits=SMALL, timing=FAST, progress=False,
                        trials=1)
    run_bench(CpuExecutor(), str(tmp_path), opts)
    with open(tmp_path / "layers.csv", encoding="utf-8", newline="") as f:
        return list(csv.DictReader(f))


def test_disturbed_measurements_are_taken_again(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # busy during the first attempt of every measurement, quiet during the second
    rows = _run(tmp_path, monkeypatch, [2.0, 0.0])
    assert rows and all(r["attempts"] == "2" for r in rows)
    assert not any("interference" in r["flags"] for r in rows)
    assert all(float(r["others_busy_cores"]) == 0.0 for r in rows)


def test_always_disturbed_rows_are_flagged_and_not_fitted(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    rows = _run(tmp_path, monkeypatch, [2 * BUSY_CORES + 1])
    assert rows and all(r["attempts"] == str(RETRIES + 1) and "interference" in r["flags"] for r in rows)
    data = read_measurements([tmp_path / "layers.csv"])
    assert all(v != v for v in data.targets["runtime_ms"])  # NaN: left out of any fit


class _Timed:
    """A workload whose n-th timed loop (1-based) takes ``ms(n)`` milliseconds per call."""

    def __init__(self, ms: Callable[[int], float]) -> None:
        self.ms = ms
        self.timed = 0

    def run(self) -> None:
        pass

    def synchronize(self) -> None:
        pass

    def time_calls(self, calls: int) -> float:
        self.timed += 1
        return self.ms(self.timed)


def test_one_slow_call_does_not_set_the_loop_length() -> None:
    # the first timed call is slow (preempted), every later one fast
    workload: Any = _Timed(lambda n: 50.0 if n == 1 else 0.01)
    timing = time_workload(workload, TimingConfig(target_ms=5.0, loops=3, warmup_ms=1.0))
    assert timing.calls == 500 and timing.runtime_ms == pytest.approx(0.01)


class _Counting:
    """Records how run_for launches calls."""

    def __init__(self) -> None:
        self.batches: list[int] = []

    def run(self) -> None:
        raise AssertionError("run_for must launch whole batches, as the timed loops did")

    def run_calls(self, calls: int) -> None:
        self.batches.append(calls)

    def synchronize(self) -> None:
        pass


def test_power_windows_launch_the_timed_batches() -> None:
    from neuralpower.bench.timing import run_for

    workload: Any = _Counting()
    calls = run_for(workload, 0.01, 32)
    assert calls == 32 * len(workload.batches) and set(workload.batches) == {32}


@pytest.mark.parametrize(("device", "attempts"), [("cpu", RETRIES + 1), ("cuda:0", 1)])
def test_noisy_loops_are_repeated_on_the_cpu_only(monkeypatch: pytest.MonkeyPatch, device: str, attempts: int) -> None:
    from neuralpower.bench.executors import Variant
    from neuralpower.bench.runner import _Loop, _Task

    monkeypatch.setattr(CpuLoad, "others", lambda self, start, end=None: 0.0)
    executor: Any = CpuExecutor()
    executor.device = device
    options = BenchOptions(timing=TimingConfig(target_ms=5.0, loops=4, warmup_ms=0.0), progress=False)
    run_dir: Any = SimpleNamespace(directory="unused")
    loop = _Loop(executor, run_dir, options, None, {}, sys.stderr)
    workload: Any = _Timed(lambda n: 1.0 + n % 2)  # loops of 1 ms and 2 ms: always noisy
    timing, _, busy, tried = loop._measure_quietly(workload, _Task(0, "k", Variant(), False))
    assert tried == attempts and timing.runtime_cv > runner.NOISY_CV and busy == 0.0
