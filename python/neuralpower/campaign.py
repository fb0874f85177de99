"""``neuralpower campaign``: a whole visit to a machine in one command, within a time budget.

A visit records the environment and checks the power sensor, prints its plan, measures layers (the sweep, in
an order where every prefix holds every layer type), measures whole networks (the validation set) with the
same protocol, fits a model per dtype, validates it on the networks, writes a short report (Markdown, and a
PNG where matplotlib is installed) and packs everything into one archive. Each stage has its share of the
budget and stops cleanly at it; running the command again, on the same or a later visit, continues the same
datasets (what was measured is never measured again) and refits.

Layout of ``DIR``::

    campaign.json                 the visits: budget, plan, what each stage did and how long it took
    <executor>-<dtype>/           one per dtype: layers.csv, failures.csv, run.json (the sweep),
                                  networks/ (networks.csv, ...), model.json, validate.json
    report.md, validate-<dtype>.png
    campaign.tar.gz               everything above, for carrying home (at most ARCHIVE_LIMIT bytes)
"""

from __future__ import annotations

import json
import math
import os
import re
import sys
import tarfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any, TextIO

from ._output import atomic_path
from .errors import InputError, NeuralPowerError

__all__ = [
    "ARCHIVE_LIMIT",
    "CampaignOptions",
    "Plan",
    "default_networks",
    "gpu_folder",
    "plan_campaign",
    "run_campaign",
]

#: The largest archive a visit may bring back (what the GPU machine returns per file).
ARCHIVE_LIMIT = 16 * 2**20
_ARCHIVE = "campaign.tar.gz"

# Whole networks for validation: CNNs old and new, a vision transformer and two language models on a GPU; on
# the CPU, networks small enough to run a few times in a short visit.
_GPU_NETWORKS = ("resnet50", "mobilenet_v2", "efficientnet_b0", "resnet18", "convnext_tiny", "vit_b_16",
                 "bert_base", "gpt2")
_CPU_NETWORKS = ("resnet18", "mobilenet_v2", "squeezenet1_0", "shufflenet_v2_x1_0", "vit_b_32", "bert_base")
_GPU_BATCHES = (1, 8, 32)
_CPU_BATCHES = (1, 4)

# Shares of a visit's budget: the layer sweep, the networks; the rest is kept for fitting, validating and
# the report (at least _RESERVE_S).
_LAYER_SHARE, _NETWORK_SHARE = 0.68, 0.2
_RESERVE_S = 20.0


def gpu_folder(name: str) -> str:
    """The folder of a GPU model's datasets under ``data/``: its name in lower case without the vendor, runs of
    other characters as one dash (``NVIDIA H200`` -> ``h200``, ``NVIDIA H100 80GB HBM3`` -> ``h100-80gb-hbm3``).
    Models that differ in name (an H100 PCIe and an H100 SXM) get folders of their own."""
    words = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-").split("-")
    if words and words[0] == "nvidia":
        words = words[1:]
    return "-".join(w for w in words if w) or "gpu"


def default_networks(executor: str) -> tuple[list[str], list[int]]:
    """The networks and batch sizes a campaign validates on by default for an executor."""
    if executor == "cpu":
        return list(_CPU_NETWORKS), list(_CPU_BATCHES)
    return list(_GPU_NETWORKS), list(_GPU_BATCHES)


@dataclass
class CampaignOptions:
    """What a visit measures (see ``neuralpower campaign --help``)."""

    out: str
    executor: str = "torch"
    device: str | None = None
    dtypes: list[str] = field(default_factory=lambda: ["fp16", "fp32"])
    minutes: float = 8.0
    networks: list[str] | None = None
    batches: list[int] | None = None
    suite: str = "default"
    seed: int = 0
    power: bool = True
    trials: int = 3
    variants: str = "first"
    target_ms: float | None = None
    loops: int = 5
    window_s: float = 1.0
    progress: bool = True

    def bench_options(self, dtype: str) -> Any:
        """The measurement protocol of every stage, for one dtype."""
        from .bench.runner import BenchOptions
        from .bench.timing import TimingConfig

        timing = None
        if self.target_ms is not None or self.loops != 5:
            default_ms = 20.0 if self.executor == "cpu" else 30.0
            timing = TimingConfig(target_ms=self.target_ms or default_ms, loops=self.loops)
        # the sensor check measured idle power once: each stage's own idle window is kept short
        return BenchOptions(dtype=dtype, seed=self.seed, power=self.power, progress=self.progress, order="balanced",
                            variants=self.variants, timing=timing, window_s=self.window_s, idle_s=1.0)


@dataclass
class Plan:
    """What a visit intends to do in its budget, with the arithmetic behind it."""

    minutes: float
    dtypes: list[str]
    sampled: dict[str, int]  # per dtype: configurations of the sweep (runtime tasks of all trials: below)
    power_configs: dict[str, int]
    layer_s: float  # per dtype
    network_s: float  # per dtype
    reserve_s: float
    runtime_task_s: float
    power_task_s: float
    runtime_configs: dict[str, int]  # per dtype: configurations expected to get a runtime measurement
    power_expected: dict[str, int]
    networks: list[str]
    batches: list[int]
    network_runs: int  # per dtype: network x batch x variant x trial

    def text(self) -> str:
        lines = [f"campaign plan: {self.minutes:g} minutes, dtypes {', '.join(self.dtypes)}"]
        for d in self.dtypes:
            lines.append(
                f"  {d}: layers {self.layer_s / 60:.1f} min for about {self.runtime_configs[d]} of "
                f"{self.sampled[d]} sampled configurations with runtime ({self.runtime_task_s * 1000:.0f} ms "
                f"each) and {self.power_expected[d]} of {self.power_configs[d]} with power "
                f"({self.power_task_s:.1f} s per trial); networks {self.network_s / 60:.1f} min"
            )
        lines.append(f"  networks: {', '.join(self.networks)} at batch {', '.join(map(str, self.batches))} "
                     f"({self.network_runs} runs per dtype, every trial in order of network)")
        lines.append(f"  kept for fitting, validation and the report: {self.reserve_s:.0f} s")
        return "\n".join(lines)


def _per_task_s(executor: Any, options: Any) -> tuple[float, float]:
    """Seconds a runtime-only task and a power task take, from the timing protocol (calibration, warm-up and
    the timed loops; a power task adds its windows, one per trial)."""
    from .bench.timing import TimingConfig

    timing = options.timing or TimingConfig(target_ms=20.0 if executor.name == "cpu" else 30.0)
    runtime = 2.0 * timing.loops * timing.target_ms / 1000 + 0.02  # loops, calibration and warm-up, the check
    power = runtime + options.window_s + options.warmup_s + 0.2
    return runtime, power


def plan_campaign(executor: Any, options: CampaignOptions, device_memory: int | None = None) -> Plan:
    """The plan of a visit: the budget's shares and what they are expected to measure."""
    from .bench.runner import default_limits
    from .bench.sweep import generate

    budget = options.minutes * 60
    reserve = max(_RESERVE_S, budget * (1 - _LAYER_SHARE - _NETWORK_SHARE))
    usable = max(0.0, budget - reserve)
    n = len(options.dtypes)
    layer_s = usable * _LAYER_SHARE / (_LAYER_SHARE + _NETWORK_SHARE) / n
    network_s = usable * _NETWORK_SHARE / (_LAYER_SHARE + _NETWORK_SHARE) / n
    runtime_s, power_s = _per_task_s(executor, options.bench_options(options.dtypes[0]))
    limits = default_limits(executor, device_memory)
    sampled, power_configs, runtime_expected, power_expected = {}, {}, {}, {}
    power = options.power and str(executor.device).startswith("cuda")  # the host has no power sensor
    for d in options.dtypes:
        configs = generate(options.suite, dtype=d, seed=options.seed, zoo=True, limits=limits,
                           supports=executor.supports)
        sampled[d] = len(configs)
        power_configs[d] = sum(c.power for c in configs) if power else 0
        # the first trial of every configuration comes first (balanced over types); a power configuration's
        # first trial holds one of its windows; the fraction of power configurations is the sweep's
        share = power_configs[d] / max(1, len(configs))
        per_config = (1 - share) * runtime_s + share * power_s
        first_pass = min(len(configs), int(layer_s / per_config))
        runtime_expected[d] = first_pass
        power_expected[d] = round(first_pass * share)
    networks, batches = default_networks(executor.name)
    networks = options.networks or networks
    batches = options.batches or batches
    return Plan(
        minutes=options.minutes, dtypes=list(options.dtypes), sampled=sampled, power_configs=power_configs,
        layer_s=layer_s, network_s=network_s, reserve_s=reserve, runtime_task_s=runtime_s, power_task_s=power_s,
        runtime_configs=runtime_expected, power_expected=power_expected, networks=list(networks),
        batches=list(batches), network_runs=len(networks) * len(batches) * options.trials,
    )


def _load_visits(path: str) -> list[dict[str, Any]]:
    if not os.path.exists(path):
        return []
    try:
        with open(path, encoding="utf-8") as f:
            doc = json.load(f)
    except (OSError, ValueError) as e:
        raise InputError(f"not a campaign record ({e.__class__.__name__}): move it away or pick another --out",
                         path=path) from None
    visits = doc.get("visits") if isinstance(doc, dict) else None
    if not isinstance(visits, list):
        raise InputError("not a campaign record (no visits): move it away or pick another --out", path=path)
    return visits


def _write_json(path: str, doc: Any) -> None:
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as f:
        json.dump(doc, f, indent=1, default=str)
        f.write("\n")


def _architectures(names: Sequence[str], batches: Sequence[int], dtype: str) -> list[Any]:
    from .sources import load_architectures

    archs = []
    for name in names:
        for batch in batches:
            archs += load_architectures(name, batch=batch, dtype=dtype)
    return archs


def _fit(layers_csv: str, model_path: str, log: Callable[[str], None]) -> dict[str, Any] | None:
    """Fit every method on a dtype's sweep and write the model; None when there is nothing to fit yet."""
    from .models.data import read_measurements
    from .models.fit import FitOptions, fit_models
    from .models.format import write_model_file

    if not os.path.exists(layers_csv):
        return None
    try:
        data = read_measurements([layers_csv])
        doc = fit_models(data, FitOptions(method="all"))
    except InputError as e:  # too few rows of every type to fit: say so, keep the data
        log(f"not fitted: {e}")
        return None
    write_model_file(doc, model_path)
    return doc


def _validate(networks_dir: str, model_path: str, layers_csv: str, png: str,
              log: Callable[[str], None]) -> dict[str, Any] | None:
    """Validate a dtype's model on its networks (and the sums of their layers measured alone); None when there is
    nothing to validate on or the model does not cover a network yet."""
    from .evaluator import load_model
    from .validate import plot_validation, validate_networks

    if not os.path.exists(os.path.join(networks_dir, "networks.csv")):
        return None
    model = load_model(model_path)
    try:
        record = validate_networks(networks_dir, model, layers=[layers_csv]).record()
    except InputError as e:  # a network the model does not cover (a layer type the sweep has not reached)
        log(f"not validated: {e}")
        return None
    try:
        plot_validation(record, png)
    except ImportError:
        log("no plot: matplotlib is not installed (pip install neuralpower[plot])")
    return record


def _pct(v: Any) -> str:
    return "-" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.1f} %"


def _report(out: str, visits: list[dict[str, Any]], fits: dict[str, Any], checks: dict[str, Any]) -> str:
    """The Markdown report of the campaign so far."""
    from .models.fit import MIN_ROWS

    last = visits[-1]
    env = last.get("environment", {})
    lines = ["# Campaign report", "",
             f"{len(visits)} visit(s); the last on {last.get('started', '?')} with {env.get('executor', '?')} on "
             f"{env.get('gpu') or env.get('cpu') or env.get('device', '?')}.", "",
             "## Environment", ""]
    for key in ("gpu", "gpu_uuid", "driver", "cuda", "torch", "cudnn", "cupy", "numpy", "cpu", "power_limit_w",
                "sm_clock_mhz", "memory_clock_mhz"):
        if env.get(key) not in (None, ""):
            lines.append(f"- {key}: {env[key]}")
    sensor = last.get("sensor", {})
    lines += [f"- power sensor: {sensor.get('note', 'not checked')}", "", "## Visits", "",
              "| visit | budget | layers (rows, with power) | networks (rows) | stopped |", "|---|---|---|---|---|"]
    for i, v in enumerate(visits, 1):
        stages = v.get("stages", {})
        layer_rows = sum(s.get("measured", 0) for k, s in stages.items() if k.startswith("layers"))
        power_rows = sum(s.get("power_rows", 0) for k, s in stages.items() if k.startswith("layers"))
        net_rows = sum(s.get("measured", 0) for k, s in stages.items() if k.startswith("networks"))
        stopped = "; ".join(sorted({s["stopped"] for s in stages.values() if s.get("stopped")})) or "-"
        lines.append(f"| {i} | {v.get('minutes', '?')} min | {layer_rows} ({power_rows}) | {net_rows} | {stopped} |")
    lines += ["", "## Models (test RMSPE of each type's default, held-out configurations)", ""]
    for dtype, doc in fits.items():
        if doc is None:
            lines.append(f"- {dtype}: not fitted yet")
            continue
        lines += [f"### {dtype}", "", "| type | configs | runtime default | runtime RMSPE | power RMSPE |",
                  "|---|---|---|---|---|"]
        for t, entry in doc["layer_types"].items():
            r, p = entry["runtime_ms"], entry.get("power_w") or {}
            rm = r.get("metrics", {}).get(r["default"], {})
            pm = p.get("metrics", {}).get(p.get("default", ""), {})
            few = r["rows"] < MIN_ROWS  # fitted on every row: nothing held out, no test error to show
            runtime = f"- (under {MIN_ROWS} configs)" if few else _pct(rm.get("rmspe"))
            power = "-" if few or p.get("default") in (None, "constant") else _pct(pm.get("rmspe"))
            lines.append(f"| {t} | {r['rows']} | {r['default']} | {runtime} | {power} |")
        lines.append("")
    lines += ["## Whole networks (validate)", ""]
    for dtype, record in checks.items():
        if record is None:
            lines.append(f"- {dtype}: not validated yet")
            continue
        lines.append(f"- {dtype}: {record['networks']} networks measured (network x batch); MAPE runtime "
                     f"{_pct(record['runtime_mape'])}, "
                     f"power {_pct(record['power_mape'])}, energy {_pct(record['energy_mape'])} "
                     f"(validate-{dtype}.png)")
    text = "\n".join(lines) + "\n"
    with atomic_path(os.path.join(out, "report.md")) as tmp, open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
    return text


def _pack(out: str) -> tuple[str, int]:
    """Everything in ``out`` but the archive itself, as ``out/campaign.tar.gz``."""
    path = os.path.join(out, _ARCHIVE)
    with atomic_path(path) as tmp, tarfile.open(tmp, "w:gz") as tar:
        for root, dirs, files in os.walk(out):
            dirs.sort()
            for name in sorted(files):
                full = os.path.join(root, name)
                rel = os.path.relpath(full, out)
                if rel == _ARCHIVE or name.startswith(".") or name.endswith(".tmp"):
                    continue
                tar.add(full, arcname=os.path.join(os.path.basename(os.path.abspath(out)), rel))
    return path, os.path.getsize(path)


def _sensor(meter: Any) -> dict[str, Any]:
    """What the power sensor showed in a short idle window (or why there is none)."""
    if meter is None or not meter.available:
        return {"available": False, "note": f"not measured: {getattr(meter, 'reason', 'no power meter')}"}
    window = meter.idle(2.0)
    if window is None:
        return {"available": True, "note": "available; the idle window gave no reading"}
    note = f"idle {window.power_w:.1f} W over {window.seconds:.1f} s"
    period = getattr(window, "counter_period_ms", None)
    if period:
        note += f", energy counter steps every {period:.0f} ms"
    if window.flags:
        note += " (flagged: " + ", ".join(window.flags) + ")"
    return {"available": True, "idle_w": window.power_w, "counter_period_ms": period, "flags": list(window.flags),
            "note": note}


def run_campaign(options: CampaignOptions, *, stream: TextIO | None = None,
                 executor_factory: Callable[[str], Any] | None = None,
                 meter_factory: Callable[[Any], Any] | None = None) -> dict[str, Any]:
    """Run one visit (see the module's description); returns its record (also appended to campaign.json).

    ``executor_factory(dtype)`` and ``meter_factory(executor)`` replace the executor and the NVML meter (tests).

    Raises
    ------
    InputError
        An output folder that holds something else, an unknown network, a bad option.
    """
    from .bench.executors import get_executor
    from .bench.runner import BenchOptions, _open_meter, _software_versions, run_bench, run_networks

    stream = stream or sys.stderr
    out = options.out
    if os.path.exists(out) and not os.path.isdir(out):
        raise InputError("exists and is not a folder", path=out)
    record_path = os.path.join(out, "campaign.json")
    visits = _load_visits(record_path)
    if not options.dtypes:
        raise InputError("give at least one dtype (--dtype fp16,fp32)")
    start = time.perf_counter()
    deadline = start + options.minutes * 60

    def log(message: str) -> None:
        print(f"campaign: {message}", file=stream, flush=True)

    def make(dtype: str) -> Any:
        if executor_factory is not None:
            return executor_factory(dtype)
        device = options.device or ("cpu" if options.executor == "cpu" else "cuda:0")
        return get_executor(options.executor, device=device, dtype=dtype)

    def open_meter(executor: Any) -> Any:
        """A power meter for a stage (each run closes its own); None: the run opens NVML's itself."""
        return meter_factory(executor) if meter_factory is not None else None

    first = make(options.dtypes[0])  # a missing GPU is refused before anything is written
    os.makedirs(out, exist_ok=True)
    environment = dict(first.context())
    environment.update(_software_versions())
    meter = open_meter(first)
    if meter is None:
        uuid = environment.get("gpu_uuid") or None
        meter = _open_meter(first, BenchOptions(power=options.power), str(uuid) if uuid else None)
    device_info: dict[str, Any] = meter.info() if meter is not None and meter.available else {}
    environment.update({k: v for k, v in device_info.items() if k not in environment or not environment[k]})
    sensor = _sensor(meter)
    if meter is not None:
        meter.close()
    plan = plan_campaign(first, options, device_info.get("memory_total_bytes"))
    print(plan.text(), file=stream, flush=True)
    visit: dict[str, Any] = {"started": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "minutes": options.minutes,
                             "options": asdict(options), "environment": environment, "sensor": sensor,
                             "plan": asdict(plan), "stages": {}}
    visits.append(visit)
    _write_json(record_path, {"visits": visits})

    archs = {d: _architectures(plan.networks, plan.batches, d) for d in options.dtypes}
    fits: dict[str, Any] = {}
    checks: dict[str, Any] = {}

    def stage(name: str, minutes: float, run: Callable[[float], Any]) -> None:
        """Run one stage for at most ``minutes``; record what it did (a stage that fails leaves the rest)."""
        t0 = time.perf_counter()
        if minutes * 60 < 1.0:
            log(f"{name}: no time left in the budget")
            visit["stages"][name] = {"stopped": "no time left", "measured": 0, "seconds": 0.0}
            return
        log(f"{name}: up to {minutes:.1f} min")
        try:
            summary = run(minutes)
        except NeuralPowerError as e:  # every configuration failing, a damaged dataset: the rest goes on
            log(f"{name} stopped: {e}")
            visit["stages"][name] = {"stopped": str(e), "measured": 0, "seconds": time.perf_counter() - t0}
            return
        visit["stages"][name] = {
            "measured": summary.measured, "power_rows": summary.power_rows, "failed": summary.failed,
            "oom": summary.oom, "already_done": summary.skipped, "left": summary.left, "stopped": summary.stopped,
            "flagged": summary.flagged_rows, "seconds": time.perf_counter() - t0,
        }
        _write_json(record_path, {"visits": visits})

    shares = _LAYER_SHARE + _NETWORK_SHARE
    for i, dtype in enumerate(options.dtypes):
        executor = first if i == 0 else make(dtype)
        folder = os.path.join(out, f"{executor.name}-{dtype}")
        later = len(options.dtypes) - i - 1  # dtypes after this one
        common = options.bench_options(dtype)

        # each stage gets its share of what is left before the reserve, so that time a stage leaves passes on
        def left_s() -> float:
            return max(0.0, deadline - plan.reserve_s - time.perf_counter())

        def layers(minutes: float, ex: Any = executor, folder: str = folder, o: BenchOptions = common) -> Any:
            return run_bench(ex, folder, replace(o, suite=options.suite, zoo=True, max_minutes=minutes),
                             meter=open_meter(ex), stream=stream, argv=sys.argv)

        def networks(minutes: float, ex: Any = executor, folder: str = folder, o: BenchOptions = common,
                     dtype: str = dtype) -> Any:
            return run_networks(ex, archs[dtype], os.path.join(folder, "networks"),
                                replace(o, trials=options.trials, max_minutes=minutes), meter=open_meter(ex),
                                stream=stream, argv=sys.argv)

        stage(f"layers-{dtype}", left_s() * _LAYER_SHARE / (shares * (1 + later)) / 60, layers)
        stage(f"networks-{dtype}", left_s() * _NETWORK_SHARE / (_NETWORK_SHARE + later * shares) / 60, networks)
        t0 = time.perf_counter()
        model_path = os.path.join(folder, "model.json")
        fits[dtype] = _fit(os.path.join(folder, "layers.csv"), model_path, log)
        checks[dtype] = None
        if fits[dtype] is not None:
            checks[dtype] = _validate(os.path.join(folder, "networks"), model_path, os.path.join(folder, "layers.csv"),
                                      os.path.join(out, f"validate-{dtype}.png"), log)
            if checks[dtype] is not None:
                _write_json(os.path.join(folder, "validate.json"), checks[dtype])
        visit["stages"][f"fit-{dtype}"] = {"seconds": time.perf_counter() - t0, "fitted": fits[dtype] is not None,
                                           "validated": checks[dtype] is not None}
    visit["seconds"] = time.perf_counter() - start
    _write_json(record_path, {"visits": visits})
    print(_report(out, visits, fits, checks), file=stream, flush=True)
    path, size = _pack(out)
    visit["archive"] = {"path": path, "bytes": size, "within_limit": size <= ARCHIVE_LIMIT}
    _write_json(record_path, {"visits": visits})
    if size > ARCHIVE_LIMIT:
        log(f"the archive {path} is {size / 2**20:.1f} MiB, over the {ARCHIVE_LIMIT // 2**20} MiB a visit brings "
            "back: bring back the dtype folders one by one")
    else:
        log(f"packed everything into {path} ({size / 2**20:.2f} MiB)")
    return visit
