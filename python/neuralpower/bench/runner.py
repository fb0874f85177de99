"""Running a sweep (``neuralpower bench``) or whole networks (``neuralpower bench-network``) with an executor.

A layer sweep:

1. generates the configurations (:func:`~neuralpower.bench.sweep.generate`), leaving out those the
   executor does not support and those over the size limits (:func:`default_limits`);
2. opens the output directory (:class:`~neuralpower.bench.dataset.RunDirectory`) and skips every
   ``(config_id, trial)`` already measured and every configuration that failed before;
3. on a GPU, measures idle power (NVML) before anything runs;
4. runs the tasks trial by trial, each trial's tasks in a freshly shuffled order with small random gaps,
   so drift shows up as noise rather than bias: prepare (out of memory or a failure is recorded and the
   sweep goes on), check against the reference (once per configuration and run, before any timing), time
   (:func:`~neuralpower.bench.timing.time_workload`), and measure a power window where the configuration
   was selected for power; each row is written as soon as it is measured;
5. stops cleanly after the current task once ``max_minutes`` have passed, and returns a :class:`Summary`.

Whole networks are run end to end with ``prepare_network`` and measured the same way, every row with a
power window where NVML can measure one.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import importlib
import logging
import secrets
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any, TextIO

import numpy as np

from .. import __version__
from ..errors import NeuralPowerError
from ..layers import Architecture, Layer
from .dataset import CONTEXT_COLUMNS, RunDirectory, layer_cells
from .executors.base import Executor, OutOfMemory, Prepared, Variant
from .interference import BUSY_CORES, CpuLoad
from .power import PowerMeter, PowerWindow
from .sweep import SUITES, Limits, config_id, generate
from .timing import Timing, TimingConfig, run_for, time_workload

__all__ = [
    "NOISY_CV",
    "BenchAborted",
    "BenchOptions",
    "Summary",
    "default_limits",
    "network_id",
    "run_bench",
    "run_networks",
]

log = logging.getLogger(__name__)

# A row whose timed loops vary more than this (coefficient of variation) is flagged "noisy".
NOISY_CV = 0.10
# A measurement that ran while other work kept the machine busy (or, on the CPU, whose loops disagree) is
# taken again, up to this many times; the least disturbed attempt is kept (flagged when every attempt was).
# On a GPU, noisy loops alone (launch-bound layers jitter) are flagged, not repeated: visits are short.
RETRIES = 2
_NO_POWER = "power not measured (--no-power)"
# This many failures in a row means something is wrong with the executor or device, not the configurations.
MAX_CONSECUTIVE_FAILURES = 25


class BenchAborted(NeuralPowerError):
    """The run stopped because every recent configuration failed (the rows measured so far are kept)."""


@dataclass
class BenchOptions:
    """How a run measures.

    Attributes
    ----------
    suite, dtype, seed, types, zoo, configs
        What to sweep (see :func:`~neuralpower.bench.sweep.generate`).
    limits
        Largest configuration (default: :func:`default_limits`).
    limit_overrides
        Some of :func:`default_limits`'s fields replaced (``max_bytes``, ``max_flops``), the others kept as
        the device's defaults (``limits`` wins over it).
    timing
        The timing protocol (default: 30 ms loops on a GPU, 20 ms on the CPU).
    power
        Measure power windows where NVML can (GPU executors only).
    window_s, warmup_s, idle_s
        Power window, its discarded warm-up, and the idle measurement at the start.
    variants
        ``all`` (every variant the executor offers, e.g. eager and graph) or ``first`` (its default).
    gap_s
        Largest random pause between tasks (default: 20 ms on a GPU, none on the CPU).
    max_minutes
        Stop cleanly after the task running when this much time has passed.
    trials
        Trials of each network (``bench-network``).
    order
        ``shuffled``: each trial's tasks in a random order; ``balanced``: each trial's tasks dealt out one layer
        type (one network) at a time, each type's own tasks in a random order, so that a run stopped at any
        point has measured every type about as often as the others, and the small types completely first
        (what ``campaign`` uses).
    progress
        Report progress and an ETA on ``stream``.
    """

    suite: str = "default"
    dtype: str = "fp32"
    seed: int = 0
    types: list[str] | None = None
    zoo: bool = False
    configs: int | None = None
    limits: Limits | None = None
    limit_overrides: dict[str, int] | None = None
    timing: TimingConfig | None = None
    power: bool = True
    window_s: float = 1.0
    warmup_s: float = 0.5
    idle_s: float = 3.0
    variants: str = "all"
    gap_s: float | None = None
    max_minutes: float | None = None
    trials: int = 3
    order: str = "shuffled"
    progress: bool = True


@dataclass
class Summary:
    """What a run did."""

    directory: str = ""
    tasks: int = 0
    measured: int = 0
    power_rows: int = 0
    skipped: int = 0
    oom: int = 0
    failed: int = 0
    flagged: dict[str, int] = field(default_factory=dict)
    elapsed_s: float = 0.0
    left: int = 0
    stopped: str = ""
    idle_power_w: float | None = None
    power_note: str = ""
    files: dict[str, int] = field(default_factory=dict)

    @property
    def flagged_rows(self) -> int:
        return self.flagged.get("_rows", 0)

    def table(self) -> str:
        """A short table for the end of a run."""
        minutes, seconds = divmod(round(self.elapsed_s), 60)
        flags = ", ".join(f"{k} {v}" for k, v in sorted(self.flagged.items()) if k != "_rows")
        lines = [
            ("tasks", f"{self.tasks} (configuration x variant x trial)"),
            ("rows measured", f"{self.measured} (with power: {self.power_rows})"),
            ("already done", str(self.skipped)),
            ("out of memory", str(self.oom)),
            ("failed", str(self.failed)),
            ("flagged", f"{self.flagged_rows}" + (f" ({flags})" if flags else "")),
            ("idle power", f"{self.idle_power_w:.1f} W" if self.idle_power_w is not None else "not measured"),
            ("time", f"{minutes}m {seconds:02d}s"),
        ]
        if self.power_note:
            lines.append(("power", self.power_note))
        if self.stopped:
            lines.append(("stopped", f"{self.stopped}: {self.left} tasks left, run the same command to continue"))
        for name, rows in self.files.items():
            lines.append(("wrote", f"{name} ({rows} rows in all)"))
        width = max(len(k) for k, _ in lines)
        return "\n".join(f"  {k.ljust(width)}  {v}" for k, v in lines)


# -- limits and context ------------------------------------------------------------------------------


def default_limits(executor: Executor, device_memory: int | None) -> Limits:
    """Largest configurations by default.

    CPU: 32 MiB moved and 200 MFLOP per call (NumPy takes up to about 0.1 s for that). GPU: an eighth of
    the device's memory (4 GiB when unknown) moved per call and 200 GFLOP, which the largest layers of
    the zoo's networks at batch 256 stay under.
    """
    if executor.device == "cpu":
        return Limits(max_bytes=32 << 20, max_flops=2 * 10**8)
    memory = device_memory if device_memory else 32 << 30
    return Limits(max_bytes=memory // 8, max_flops=2 * 10**11)


def resolve_limits(executor: Executor, options: BenchOptions, device_memory: int | None) -> Limits:
    """The run's limits: ``options.limits``, else the defaults for the device with ``limit_overrides``."""
    if options.limits is not None:
        return options.limits
    return replace(default_limits(executor, device_memory), **(options.limit_overrides or {}))


def _software_versions() -> dict[str, str]:
    return {"neuralpower": __version__}


def _context(
    executor: Executor, meter: PowerMeter | None, base: Mapping[str, Any]
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Row context (``base``, the executor's, completed by NVML's device info) and the device info itself."""
    context: dict[str, Any] = dict(base)
    info: dict[str, Any] = meter.info() if meter is not None and meter.available else {}
    for key in ("gpu", "gpu_uuid", "driver", "cuda_driver"):
        if not context.get(key) and info.get(key):
            context[key] = info[key]
    context.setdefault("executor", executor.name)
    context.setdefault("device", executor.device)
    context.update(_software_versions())
    return context, info


def _open_meter(executor: Executor, options: BenchOptions, uuid: str | None) -> PowerMeter | None:
    if not executor.device.startswith("cuda"):
        return None
    if not options.power:
        return PowerMeter.unavailable(_NO_POWER)
    return PowerMeter.open(executor.device, uuid=uuid)


# -- progress ------------------------------------------------------------------------------------------


def _duration(seconds: float) -> str:
    seconds = max(0, round(seconds))
    if seconds >= 3600:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    if seconds >= 60:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds}s"


class Progress:
    """Progress and ETA on a stream: tqdm when installed and the stream is a terminal, else one line every
    ``every_s`` seconds. The ETA counts power tasks (much longer) apart from runtime-only ones."""

    def __init__(
        self, total: int, power_total: int, guess_power_s: float, enabled: bool, stream: TextIO, every_s: float = 10.0
    ) -> None:
        self.total, self.power_total = total, power_total
        self.done = self.power_done = 0
        self.time_plain = self.time_power = 0.0
        self.guess_power_s = guess_power_s
        self.enabled = enabled
        self.stream = stream
        self.every_s = every_s
        self.start = self.last = time.perf_counter()
        self.bar: Any = None
        if enabled and total and getattr(stream, "isatty", lambda: False)():
            try:
                tqdm = importlib.import_module("tqdm").tqdm
                self.bar = tqdm(total=total, file=stream, unit="row", dynamic_ncols=True)
            except ImportError:
                self.bar = None

    def eta_s(self) -> float:
        plain_done = self.done - self.power_done
        plain_left = (self.total - self.power_total) - plain_done
        power_left = self.power_total - self.power_done
        plain_each = self.time_plain / plain_done if plain_done else 0.3
        power_each = self.time_power / self.power_done if self.power_done else self.guess_power_s
        return max(0.0, plain_left * plain_each + power_left * power_each)

    def update(self, seconds: float, power: bool, note: str = "") -> None:
        self.done += 1
        if power:
            self.power_done += 1
            self.time_power += seconds
        else:
            self.time_plain += seconds
        if not self.enabled:
            return
        if self.bar is not None:
            self.bar.set_postfix_str(f"ETA {_duration(self.eta_s())}" + (f", {note}" if note else ""), refresh=False)
            self.bar.update(1)
            return
        now = time.perf_counter()
        if now - self.last >= self.every_s or self.done == self.total:
            self.last = now
            pct = 100.0 * self.done / self.total if self.total else 100.0
            print(
                f"bench: {self.done}/{self.total} ({pct:.0f}%), {_duration(now - self.start)} elapsed, "
                f"ETA {_duration(self.eta_s())}" + (f", {note}" if note else ""),
                file=self.stream,
                flush=True,
            )

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


# -- measuring one task --------------------------------------------------------------------------------


@dataclass
class _Task:
    trial: int
    key: str
    variant: Variant
    power: bool
    layer: Layer | None = None
    origin: str = ""
    arch: Architecture | None = None


def _flags(
    timing: Timing, window: PowerWindow | None, power_wanted: bool, meter: PowerMeter | None, busy: float = 0.0
) -> list[str]:
    flags = []
    if timing.runtime_cv > NOISY_CV:
        flags.append("noisy")
    if busy > BUSY_CORES:
        flags.append("interference")
    if window is not None:
        flags.extend(window.flags)
    elif power_wanted and meter is not None and meter.reason != _NO_POWER:
        flags.append("no_power")
    return flags


def _measure(
    prepared: Prepared, task: _Task, options: BenchOptions, timing_config: TimingConfig, meter: PowerMeter | None
) -> tuple[Timing, PowerWindow | None]:
    timing = time_workload(prepared, timing_config)
    window = None
    if task.power and meter is not None and meter.available:
        batch = timing.calls

        def run(seconds: float) -> int:
            return run_for(prepared, seconds, batch)

        window = meter.measure(
            run, window_s=options.window_s, warmup_s=options.warmup_s, synchronize=prepared.synchronize
        )
    return timing, window


def _now() -> str:
    return _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")


def _one_line(e: BaseException) -> str:
    """An error as one line; our own errors (LayerFailed) by their message, others with their type."""
    text = " ".join(str(e).split())
    if isinstance(e, NeuralPowerError) and text:
        return text
    return f"{type(e).__name__}: {text}" if text else type(e).__name__


class _Loop:
    """The task loop shared by layer sweeps and network runs."""

    def __init__(
        self,
        executor: Executor,
        run_dir: RunDirectory,
        options: BenchOptions,
        meter: PowerMeter | None,
        context: dict[str, Any],
        stream: TextIO,
    ) -> None:
        self.executor = executor
        self.run_dir = run_dir
        self.options = options
        self.meter = meter
        self.context = context
        self.stream = stream
        self.timing = options.timing or TimingConfig(target_ms=20.0 if executor.device == "cpu" else 30.0)
        gap = options.gap_s if options.gap_s is not None else (0.0 if executor.device == "cpu" else 0.02)
        self.gap_s = gap
        self.rng = np.random.default_rng(options.seed + 7919)
        self.summary = Summary(directory=str(run_dir.directory))
        self.checked: set[str] = set()
        self.consecutive_failures = 0
        self.load = CpuLoad()
        self.retry_noisy = executor.device == "cpu"

    def run(
        self,
        tasks: list[_Task],
        prepare: Callable[[_Task], Prepared],
        cells: Callable[[_Task], dict[str, Any]],
    ) -> Summary:
        s = self.summary
        s.tasks = len(tasks)
        todo = [t for t in tasks if not self.run_dir.done(t.key, t.trial)]
        s.skipped = len(tasks) - len(todo)
        power_wanted = self.meter is not None and self.meter.available
        progress = Progress(
            len(todo),
            sum(t.power for t in todo) if power_wanted else 0,
            self.options.window_s + self.options.warmup_s + 0.5,
            self.options.progress,
            self.stream,
        )
        start = time.perf_counter()
        deadline = start + self.options.max_minutes * 60 if self.options.max_minutes is not None else None
        i = 0
        try:
            for i, task in enumerate(todo):
                if deadline is not None and time.perf_counter() >= deadline:
                    s.stopped = f"--max-minutes {self.options.max_minutes:g} reached"
                    s.left = len(todo) - i
                    break
                if self.run_dir.done(task.key, task.trial):  # failed on an earlier trial of this run
                    s.skipped += 1
                    continue
                t0 = time.perf_counter()
                note = self._one(task, prepare, cells)
                progress.update(time.perf_counter() - t0, task.power and power_wanted, note)
                if self.gap_s > 0:
                    time.sleep(self.gap_s * float(self.rng.random()))
        except KeyboardInterrupt:
            # Ctrl-C: every row measured so far is on disk; report what was done.
            s.stopped = "interrupted"
            s.left = len(todo) - i
        finally:
            progress.close()
            s.elapsed_s = time.perf_counter() - start
            for log_file in (self.run_dir.measurements, self.run_dir.failures):
                if len(log_file):
                    s.files[str(log_file.path)] = len(log_file)
        return s

    def _fail(self, task: _Task, cells: dict[str, Any], status: str, message: str) -> str:
        s = self.summary
        if status == "oom":
            s.oom += 1
        else:
            s.failed += 1
        self.consecutive_failures += 1
        row = {**cells, "config_id": task.key, "trial": task.trial, "origin": task.origin, "status": status}
        row.update(message=message, **self._context(task))
        self.run_dir.record_failure(row)
        log.info("%s %s: %s", task.key, status, message)
        if self.consecutive_failures >= MAX_CONSECUTIVE_FAILURES:
            raise BenchAborted(
                f"{self.consecutive_failures} configurations in a row failed (last: {message}); "
                f"see {self.run_dir.failures.path}"
            )
        return status

    def _measure_quietly(self, prepared: Prepared, task: _Task) -> tuple[Timing, PowerWindow | None, float, int]:
        """Measure, and measure again (up to RETRIES times) while other work kept the machine busy or, on the
        CPU, the loops disagree; the least disturbed attempt (fewest flags, then the fastest) with the load it
        saw."""
        best: tuple[tuple[int, float], Timing, PowerWindow | None, float] | None = None
        attempts = 0
        while attempts <= RETRIES:
            attempts += 1
            start = self.load.sample() if self.load.available else None
            timing, window = _measure(prepared, task, self.options, self.timing, self.meter)
            busy = self.load.others(start) if start is not None else 0.0
            disturbed = (timing.runtime_cv > NOISY_CV and self.retry_noisy) + (busy > BUSY_CORES)
            key = (disturbed, timing.runtime_ms)
            if best is None or key < best[0]:
                best = (key, timing, window, busy)
            if not disturbed:
                break
        assert best is not None
        return best[1], best[2], best[3], attempts

    def _context(self, task: _Task) -> dict[str, Any]:
        return {
            **self.context,
            **task.variant.columns(),
            "cache": "warm",
            "idle_power_w": self.summary.idle_power_w,
            "timestamp": _now(),
        }

    def _one(
        self, task: _Task, prepare: Callable[[_Task], Prepared], make_cells: Callable[[_Task], dict[str, Any]]
    ) -> str:
        cells = make_cells(task)
        try:
            prepared = prepare(task)
        except OutOfMemory as e:
            return self._fail(task, cells, "oom", _one_line(e))
        except Exception as e:  # a failed configuration must not end a sweep of thousands
            return self._fail(task, cells, "failed", _one_line(e))
        try:
            if task.key not in self.checked:
                try:
                    prepared.check()
                except AssertionError as e:
                    return self._fail(task, cells, "failed", "check: " + " ".join(str(e).split()))
                self.checked.add(task.key)
            timing, window, busy, attempts = self._measure_quietly(prepared, task)
        except OutOfMemory as e:
            return self._fail(task, cells, "oom", _one_line(e))
        except Exception as e:
            return self._fail(task, cells, "failed", _one_line(e))
        finally:
            prepared.release()
        self.consecutive_failures = 0
        flags = _flags(timing, window, task.power, self.meter, busy)
        row: dict[str, Any] = {**cells, "config_id": task.key, "trial": task.trial, "origin": task.origin}
        row.update(timing.columns())
        row.update(attempts=attempts, others_busy_cores=round(busy, 3) if self.load.available else None)
        if window is not None:
            row.update(window.columns())
        row["flags"] = ";".join(flags)
        row.update(self._context(task))
        self.run_dir.record(row)
        s = self.summary
        s.measured += 1
        if window is not None and window.power_w is not None:
            s.power_rows += 1
        if flags:
            s.flagged["_rows"] = s.flagged.get("_rows", 0) + 1
            for f in flags:
                s.flagged[f] = s.flagged.get(f, 0) + 1
        return ""


def _variants(executor: Executor, layer: Layer, which: str) -> list[Variant]:
    variants = executor.variants(layer)
    return variants[:1] if which == "first" else variants


def _order(tasks: list[_Task], seed: int, order: str = "shuffled") -> list[_Task]:
    """Trial by trial, each trial's tasks in its own shuffled order (``balanced``: dealt out round-robin over
    layer types, or networks, each shuffled)."""
    out: list[_Task] = []
    for trial in sorted({t.trial for t in tasks}):
        these = [t for t in tasks if t.trial == trial]
        rng = np.random.default_rng(seed * 1009 + trial)
        shuffled = [these[int(i)] for i in rng.permutation(len(these))]
        if order != "balanced":
            out.extend(shuffled)
            continue
        groups: dict[str, list[_Task]] = {}
        for t in shuffled:
            groups.setdefault(t.layer.type if t.layer is not None else t.origin, []).append(t)
        for k in range(max((len(g) for g in groups.values()), default=0)):
            out.extend(g[k] for g in groups.values() if k < len(g))
    return out


def _identity(context: Mapping[str, Any], dtype: str) -> dict[str, Any]:
    """What the rows already in a dataset must share with a run that extends it: the executor, the dtype and
    the GPU model (its name). Another card of the same model extends it (each row keeps its ``gpu_uuid``): the
    GPU machines lent for a visit are seldom the same card twice, and a campaign extends its datasets on every
    visit. The card's UUID is compared only where the model's name is unknown."""
    ident = {"executor": context.get("executor"), "dtype": dtype}
    if context.get("gpu"):
        ident["gpu"] = context["gpu"]
    elif context.get("gpu_uuid"):
        ident["gpu_uuid"] = context["gpu_uuid"]
    return ident


def _start(
    executor: Executor, out: str, kind: str, options: BenchOptions, stream: TextIO, meter: PowerMeter | None
) -> tuple[RunDirectory, PowerMeter | None, dict[str, Any], dict[str, Any]]:
    context_seed = executor.context()
    uuid = context_seed.get("gpu_uuid") or None
    if meter is None:
        meter = _open_meter(executor, options, str(uuid) if uuid else None)
    context, info = _context(executor, meter, context_seed)
    extra = [k for k in context if k not in CONTEXT_COLUMNS]
    run_dir = RunDirectory(out, kind, extra_context=extra, identity=_identity(context, options.dtype))
    return run_dir, meter, context, info


def _idle(loop: _Loop, meter: PowerMeter | None, options: BenchOptions, stream: TextIO) -> None:
    if meter is None:
        return
    if not meter.available:
        loop.summary.power_note = f"not measured: {meter.reason}"
        print(f"bench: power not measured: {meter.reason}", file=stream)
        return
    if options.idle_s > 0:
        window = meter.idle(options.idle_s)
        if window is not None:
            loop.summary.idle_power_w = window.power_w
            if window.flags:
                loop.summary.power_note = "idle window flagged: " + ", ".join(window.flags)


def _run_info(
    options: BenchOptions,
    context: Mapping[str, Any],
    info: Mapping[str, Any],
    summary: Summary,
    argv: Sequence[str] | None,
) -> dict[str, Any]:
    opts = asdict(options)
    opts["limits"] = asdict(options.limits) if options.limits else None
    opts["timing"] = asdict(options.timing) if options.timing else None
    return {
        "command": list(argv) if argv is not None else sys.argv,
        "options": opts,
        "context": dict(context),
        "device": dict(info),
        "idle_power_w": summary.idle_power_w,
    }


def run_bench(
    executor: Executor,
    out: str,
    options: BenchOptions | None = None,
    *,
    meter: PowerMeter | None = None,
    stream: TextIO | None = None,
    argv: Sequence[str] | None = None,
) -> Summary:
    """Run a layer sweep with ``executor``, writing ``out/layers.csv`` (see :mod:`.dataset`).

    ``meter`` replaces the NVML meter the executor's device would get (tests pass a fake one).

    Raises
    ------
    DatasetError
        ``out`` holds another executor's or device's measurements, or a damaged file.
    BenchAborted
        Every recent configuration failed.
    """
    options = options or BenchOptions()
    stream = stream or sys.stderr
    run_dir, meter, context, info = _start(executor, out, "layers", options, stream, meter)
    try:
        limits = resolve_limits(executor, options, info.get("memory_total_bytes"))
        configs = generate(
            options.suite,
            dtype=options.dtype,
            seed=options.seed,
            types=options.types,
            zoo=options.zoo,
            limits=limits,
            supports=executor.supports,
            configs=options.configs,
        )
        runtime_trials = SUITES[options.suite].runtime_trials  # a known suite: generate() checked the name
        tasks: list[_Task] = []
        for c in configs:
            # without power (--no-power), a power configuration gets the runtime trials only
            power = c.power and options.power
            trials = c.trials if power or not c.power else runtime_trials
            for variant in _variants(executor, c.layer, options.variants):
                key = config_id(c.layer, variant)
                tasks.extend(_Task(t, key, variant, power, layer=c.layer, origin=c.origin) for t in range(trials))
        tasks = _order(tasks, options.seed, options.order)
        loop = _Loop(executor, run_dir, options, meter, context, stream)
        started = _now()
        _idle(loop, meter, options, stream)
        info_entry = _run_info(options, context, info, loop.summary, argv)
        info_entry.update(
            run_id=secrets.token_hex(6),
            started=started,
            kind="layers",
            configurations=len(configs),
            limits=asdict(limits),
        )
        run_dir.write_run_info(info_entry)

        def prepare(task: _Task) -> Prepared:
            assert task.layer is not None
            return executor.prepare(task.layer, task.variant)

        def cells(task: _Task) -> dict[str, Any]:
            assert task.layer is not None
            return {**layer_cells(task.layer), "arch": task.key, "layer": f"trial{task.trial}"}

        summary = loop.run(tasks, prepare, cells)
        run_dir.write_run_info({**info_entry, "summary": asdict(summary), "finished": _now()})
        return summary
    finally:
        run_dir.close()
        if meter is not None:
            meter.close()


def network_id(arch: Architecture, variant: Variant | None = None) -> str:
    """A stable name of a network run: a hash of its name, layers (batch and dtype included) and variant."""
    h = hashlib.sha1(arch.name.encode())
    for layer in arch.layers:
        h.update(config_id(layer).encode())
    if variant is not None:
        h.update(";".join(f"{k}={v}" for k, v in variant.columns().items()).encode())
    return h.hexdigest()[:16]


def run_networks(
    executor: Executor,
    archs: Sequence[Architecture],
    out: str,
    options: BenchOptions | None = None,
    *,
    meter: PowerMeter | None = None,
    stream: TextIO | None = None,
    argv: Sequence[str] | None = None,
) -> Summary:
    """Run whole networks end to end (``prepare_network``), ``options.trials`` times each, writing
    ``out/networks.csv``; every row gets a power window where NVML can measure one.

    Raises
    ------
    DatasetError, BenchAborted
        As :func:`run_bench`.
    """
    options = options or BenchOptions()
    stream = stream or sys.stderr
    run_dir, meter, context, info = _start(executor, out, "networks", options, stream, meter)
    try:
        tasks: list[_Task] = []
        for arch in archs:
            variants = executor.network_variants(arch)
            variants = variants[:1] if options.variants == "first" else variants
            for variant in variants:
                key = network_id(arch, variant)
                tasks.extend(_Task(t, key, variant, True, arch=arch, origin=arch.name) for t in range(options.trials))
        tasks = _order(tasks, options.seed, options.order)
        loop = _Loop(executor, run_dir, options, meter, context, stream)
        started = _now()
        _idle(loop, meter, options, stream)
        info_entry = _run_info(options, context, info, loop.summary, argv)
        info_entry.update(
            run_id=secrets.token_hex(6), started=started, kind="networks", networks=[a.name for a in archs]
        )
        run_dir.write_run_info(info_entry)

        def prepare(task: _Task) -> Prepared:
            assert task.arch is not None
            return executor.prepare_network(task.arch, task.variant)

        def cells(task: _Task) -> dict[str, Any]:
            arch = task.arch
            assert arch is not None
            t = arch.totals()
            return {
                "arch": arch.name,
                "batch": arch.batch,
                "dtype": arch.dtype,
                "layers": t["layers"],
                "params": t["params"],
                "macs": t["macs"],
                "flops": t["flops"],
                "bytes": t["bytes"],
            }

        summary = loop.run(tasks, prepare, cells)
        run_dir.write_run_info({**info_entry, "summary": asdict(summary), "finished": _now()})
        return summary
    finally:
        run_dir.close()
        if meter is not None:
            meter.close()
