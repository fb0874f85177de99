"""Detecting other work on the machine while a measurement runs.

A measurement taken while something else runs on the machine is slower than the layer is, sometimes by 100x
(OpenBLAS's threads wait on each other when another process holds a core). :class:`CpuLoad` reads how much
processor time the rest of the machine used during a measurement: Linux's ``/proc/stat`` (busy time of all
processors, including time a hypervisor stole) minus this process's own (``/proc/self/stat``, all its
threads). More than :data:`BUSY_CORES` of a core on average means the measurement ran under interference:
the runner measures it again, and a row that stays disturbed is flagged ``interference`` (``fit`` leaves it
out). Elsewhere (no ``/proc``) nothing is detected and nothing is flagged.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass

__all__ = ["BUSY_CORES", "CpuLoad", "LoadSample"]

#: Other work above this many cores, on average over a measurement, is interference.
BUSY_CORES = 0.25


@dataclass(frozen=True)
class LoadSample:
    """Processor time counters at one instant (seconds)."""

    wall: float
    busy: float  # all processors: user, nice, system, irq, softirq, steal
    own: float  # this process, all its threads: user and system


class CpuLoad:
    """Reads how busy the rest of the machine is (Linux); ``available`` is False elsewhere."""

    def __init__(self, stat: str = "/proc/stat", own: str = "/proc/self/stat") -> None:
        self._stat, self._own = stat, own
        self._tick = float(os.sysconf("SC_CLK_TCK")) if hasattr(os, "sysconf") else 100.0
        try:
            self.sample()
            self.available = True
        except (OSError, ValueError, IndexError):
            self.available = False

    def sample(self) -> LoadSample:
        with open(self._stat, encoding="ascii") as f:
            fields = f.readline().split()
        if fields[0] != "cpu":
            raise ValueError("not a /proc/stat")
        # user nice system idle iowait irq softirq steal ...
        v = [float(x) for x in fields[1:9]]
        busy = v[0] + v[1] + v[2] + v[5] + v[6] + v[7]
        with open(self._own, encoding="ascii") as f:
            text = f.read()
        # the command name may hold spaces and parentheses: fields count from the last ')'
        rest = text[text.rindex(")") + 2 :].split()
        own = float(rest[11]) + float(rest[12])  # utime, stime (fields 14 and 15)
        return LoadSample(time.perf_counter(), busy / self._tick, own / self._tick)

    def others(self, start: LoadSample, end: LoadSample | None = None) -> float:
        """Cores the rest of the machine kept busy, on average, from ``start`` to ``end`` (now)."""
        end = end or self.sample()
        wall = end.wall - start.wall
        if wall <= 0:
            return 0.0
        return max(0.0, (end.busy - start.busy) - (end.own - start.own)) / wall
