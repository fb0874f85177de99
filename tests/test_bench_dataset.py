"""Resumable datasets: rows written one by one, torn lines, resumption without loss or duplicates (a
process killed with SIGKILL included), failures recorded apart, and the result read by ``fit``."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from neuralpower import Architecture, Layer, read_layer_table
from neuralpower.bench.cli import add_bench_parsers
from neuralpower.bench.dataset import (
    LAYER_COLUMNS,
    CsvLog,
    DatasetError,
    RunDirectory,
    format_cell,
    layer_cells,
)
from neuralpower.bench.executors import LayerFailed, OutOfMemory, Prepared, Variant
from neuralpower.bench.executors.cpu import CpuExecutor
from neuralpower.bench.runner import BenchAborted, BenchOptions, Summary, run_bench, run_networks
from neuralpower.bench.sweep import Limits
from neuralpower.bench.timing import TimingConfig
from neuralpower.cli import _Parser
from neuralpower.errors import NeuralPowerError
from neuralpower.models.data import read_measurements
from neuralpower.models.fit import FitOptions, fit_models

SMALL = Limits(max_bytes=1 << 20, max_flops=10**6)
FAST = TimingConfig(target_ms=0.5, loops=2, warmup_ms=0.5)
ARGS = ["--executor", "cpu", "--suite", "quick", "--configs", "30", "--target-ms", "1", "--loops", "2",
        "--max-bytes", "1e6", "--max-flops", "1e6", "--quiet"]  # fmt: skip


def options(**changes: Any) -> BenchOptions:
    base: dict[str, Any] = {"suite": "quick", "configs": 24, "limits": SMALL, "timing": FAST, "progress": False}
    base.update(changes)
    return BenchOptions(**base)


def keys(path: Path) -> list[tuple[str, str]]:
    with open(path, encoding="utf-8", newline="") as f:
        return [(r["config_id"], r["trial"]) for r in csv.DictReader(f)]


def parser() -> _Parser:
    p = _Parser(prog="neuralpower")
    verbs = p.add_subparsers(dest="verb", metavar="VERB", parser_class=_Parser)
    add_bench_parsers(verbs)
    return p


def cli(argv: list[str]) -> int:
    """What ``neuralpower.cli.main`` does with the bench verbs once wired in."""
    args = parser().parse_args(argv)
    try:
        return int(args.run(args))
    except NeuralPowerError as e:
        print(f"neuralpower {args.verb}: error: {e}", file=sys.stderr)
        return 2


# -- CsvLog ----------------------------------------------------------------------------------------------


def test_format_cell() -> None:
    assert format_cell(None) == "" and format_cell(float("nan")) == ""
    assert format_cell(3) == "3" and format_cell(True) == "1"
    assert format_cell(2.0) == "2.0" and format_cell(0.000123456789) == "0.000123457" and format_cell(1e20) == "1e+20"
    assert format_cell("a\nb  c") == "a b c" and format_cell(["x", "y"]) == "x;y"


def test_log_appends_and_reads_back(tmp_path: Path) -> None:
    path = tmp_path / "log.csv"
    with CsvLog(path, ["config_id", "trial", "runtime_ms", "note"]) as log:
        log.append({"config_id": "a", "trial": 0, "runtime_ms": 1.5, "note": 'say "hi", then\nleave'})
        log.append({"config_id": "a", "trial": 1, "runtime_ms": 2.0, "ignored": "x"})
        assert ("a", 1) in log and "a" in log and ("a", 2) not in log and "b" not in log
    with CsvLog(path, ["something", "else"]) as again:  # an existing file keeps its own header
        assert again.columns == ["config_id", "trial", "runtime_ms", "note"]
        assert [r["note"] for r in again.rows] == ['say "hi", then leave', ""]
        assert ("a", 0) in again and len(again) == 2
        again.append({"config_id": "b", "trial": 0})
    assert keys(path) == [("a", "0"), ("a", "1"), ("b", "0")]


def test_torn_last_line_is_dropped(tmp_path: Path) -> None:
    path = tmp_path / "log.csv"
    with CsvLog(path, ["config_id", "trial", "x"]) as log:
        log.append({"config_id": "a", "trial": 0, "x": 1})
    good = path.read_bytes()
    with open(path, "ab") as f:
        f.write(b"b,0,12")  # killed in the middle of a row
    with CsvLog(path, ["config_id", "trial", "x"]) as log:
        assert path.read_bytes() == good and len(log) == 1 and ("b", 0) not in log
        log.append({"config_id": "b", "trial": 0, "x": 2})
    assert keys(path) == [("a", "0"), ("b", "0")]
    # a complete but short last line is dropped too; one before the last is an error
    with open(path, "ab") as f:
        f.write(b"c,0\n")
    with CsvLog(path, ["config_id", "trial", "x"]) as log:
        assert len(log) == 2
    with open(path, "ab") as f:
        f.write(b"c,0\nd,0,1\n")
    with pytest.raises(DatasetError, match="row 4: has 2 fields"):
        CsvLog(path, ["config_id", "trial", "x"])


def test_torn_header_and_foreign_files(tmp_path: Path) -> None:
    path = tmp_path / "log.csv"
    path.write_bytes(b"config_id,tr")  # killed while writing the header
    with CsvLog(path, ["config_id", "trial"]) as log:
        assert len(log) == 0
    assert path.read_text() == "config_id,trial\n"
    other = tmp_path / "other.csv"
    other.write_text("a,b\n1,2\n")
    with pytest.raises(DatasetError, match="no 'config_id' column"):
        CsvLog(other, ["config_id", "trial"])
    other.write_text("config_id,trial\nx,first\n")
    with pytest.raises(DatasetError, match="not an integer"):
        CsvLog(other, ["config_id", "trial"])
    other.write_bytes(b"config_id,trial\n\xff\xfe,0\n")
    with pytest.raises(DatasetError, match="UTF-8"):
        CsvLog(other, ["config_id", "trial"])
    (tmp_path / "file").write_text("x")
    with pytest.raises(DatasetError, match="not a directory"):
        RunDirectory(tmp_path / "file")


def test_layer_cells_name_the_dtypes() -> None:
    cells = layer_cells(Layer("attention", heads=8, kv_heads=2, tokens=4, head_dim=8, dtype="bf16", kv_dtype="fp8"))
    assert (cells["dtype"], cells["kv_dtype"], cells["kv_heads"], cells["window"]) == ("bf16", "fp8", 2, 0)
    assert layer_cells(Layer("relu", in_channels=3, dtype="fp8"))["kv_dtype"] is None


def test_layer_cells() -> None:
    cells = layer_cells(Layer("maxpool2d", in_channels=3, in_h=9, in_w=9, kernel=3, stride=2, ceil_mode=1))
    assert set(cells) == set(LAYER_COLUMNS) - {"arch", "layer"}
    assert cells["kernel_h"] == 3 and cells["ceil_mode"] == 1 and cells["out_channels"] is None
    assert cells["groups"] is None and cells["dtype"] == "fp32"


# -- runs -----------------------------------------------------------------------------------------------


def test_run_resume_and_fit(tmp_path: Path) -> None:
    out = tmp_path / "run"
    first = run_bench(CpuExecutor(), str(out), options())
    assert first.measured == first.tasks > 30 and first.skipped == 0 and first.failed == first.oom == 0
    table = out / "layers.csv"
    done = keys(table)
    assert len(done) == len(set(done)) == first.measured
    again = run_bench(CpuExecutor(), str(out), options())
    assert again.measured == 0 and again.skipped == first.tasks
    # lose the last rows: a rerun measures exactly those
    lines = table.read_bytes().splitlines(keepends=True)
    table.write_bytes(b"".join(lines[:-5]))
    third = run_bench(CpuExecutor(), str(out), options())
    assert third.measured == 5 and third.skipped == first.tasks - 5
    assert Counter(keys(table)) == Counter(done)
    # what fit reads
    data = read_measurements([table])
    assert len(data) == len(done) and data.context["executor"] == ["cpu"]
    doc = fit_models(data, FitOptions(degree=1))
    assert doc["executor"] == "cpu" and doc["layer_types"]
    parsed = read_layer_table(table)
    assert {"runtime_ms", "config_id", "flags", "numpy", "idle_power_w"} <= set(parsed.extra.column_names)
    with open(out / "run.json", encoding="utf-8") as f:
        runs = json.load(f)["runs"]
    assert len(runs) == 3 and runs[0]["summary"]["measured"] == first.measured
    assert runs[0]["context"]["executor"] == "cpu" and runs[0]["options"]["configs"] == 24


def test_max_minutes_stops_and_continues(tmp_path: Path) -> None:
    stopped = run_bench(CpuExecutor(), str(tmp_path), options(max_minutes=1e-9))
    assert stopped.stopped.startswith("--max-minutes") and stopped.left == stopped.tasks - stopped.measured
    assert "run the same command to continue" in stopped.table()
    rest = run_bench(CpuExecutor(), str(tmp_path), options())
    assert rest.measured == stopped.left and not rest.stopped


def test_other_executor_or_device_refused(tmp_path: Path) -> None:
    run_bench(CpuExecutor(), str(tmp_path), options(configs=1, types=["relu"]))
    with pytest.raises(DatasetError, match="use another --out"):
        run_bench(CpuExecutor(dtype="fp16"), str(tmp_path), options(configs=1, types=["relu"], dtype="fp16"))

    class Elsewhere(CpuExecutor):
        def context(self) -> Mapping[str, Any]:
            return {**super().context(), "gpu": "another machine"}

    with pytest.raises(DatasetError, match="this run has 'another machine'"):
        run_bench(Elsewhere(), str(tmp_path), options(configs=1, types=["relu"]))


def test_another_card_of_the_same_model_extends_the_dataset(tmp_path: Path) -> None:
    class Card(CpuExecutor):
        def __init__(self, uuid: str) -> None:
            super().__init__()
            self.uuid = uuid

        def context(self) -> Mapping[str, Any]:
            return {**super().context(), "gpu": "NVIDIA H200", "gpu_uuid": self.uuid}

    run_bench(Card("GPU-1111"), str(tmp_path), options(configs=2, types=["relu"]))
    later = run_bench(Card("GPU-2222"), str(tmp_path), options(configs=4, types=["relu"]))
    assert later.measured > 0 and later.skipped > 0  # the first card's rows are kept and not measured again
    with open(tmp_path / "layers.csv", encoding="utf-8") as f:
        cards = [r["gpu_uuid"] for r in csv.DictReader(f)]
    assert cards[0] == "GPU-1111" and cards[-1] == "GPU-2222"

    class OnlyUuid(CpuExecutor):  # the model's name unknown: the card decides
        def context(self) -> Mapping[str, Any]:
            return {**super().context(), "gpu": "", "gpu_uuid": "GPU-3333"}

    run_bench(OnlyUuid(), str(tmp_path / "u"), options(configs=1, types=["relu"]))

    class OtherUuid(CpuExecutor):
        def context(self) -> Mapping[str, Any]:
            return {**super().context(), "gpu": "", "gpu_uuid": "GPU-4444"}

    with pytest.raises(DatasetError, match="gpu_uuid 'GPU-3333'"):
        run_bench(OtherUuid(), str(tmp_path / "u"), options(configs=1, types=["relu"]))


class Flaky(CpuExecutor):
    """Fails some configurations the ways a GPU executor can."""

    def prepare(self, layer: Layer, variant: Variant) -> Prepared:
        if layer.type == "linear":
            raise OutOfMemory("needs 99 GiB")
        if layer.type == "relu":
            raise LayerFailed("no kernel for this shape")
        if layer.type == "sigmoid":
            raise RuntimeError("CUDA error: an illegal memory access\nwas encountered")
        prepared = super().prepare(layer, variant)
        if layer.type == "add":

            def wrong() -> None:
                raise AssertionError("output[0, 0] = 1.0, reference 2.0")

            prepared.check = wrong  # type: ignore[method-assign]
        return prepared


def test_failures_recorded_apart_and_skipped(tmp_path: Path) -> None:
    opts = options(types=["linear", "relu", "sigmoid", "add", "mul"], configs=10)
    first = run_bench(Flaky(), str(tmp_path), opts)
    assert first.oom >= 1 and first.failed >= 3 and first.measured >= 1
    with open(tmp_path / "failures.csv", encoding="utf-8", newline="") as f:
        failures = list(csv.DictReader(f))
    by_type = {r["type"]: r for r in failures}
    assert by_type["linear"]["status"] == "oom" and by_type["linear"]["message"] == "needs 99 GiB"
    assert by_type["relu"]["message"] == "no kernel for this shape"
    assert by_type["sigmoid"]["message"] == "RuntimeError: CUDA error: an illegal memory access was encountered"
    assert by_type["add"]["message"].startswith("check: output[0, 0]")
    assert all(r["status"] in ("oom", "failed") and r["executor"] == "cpu" for r in failures)
    # the measurement table has only good rows, and the failures file is a layer table too
    data = read_measurements([tmp_path / "layers.csv"])
    assert {t for t in data.layer_types()} == {"mul"}
    assert len(read_layer_table(tmp_path / "failures.csv")) == len(failures)
    # a failed configuration is not tried again, in any trial
    again = run_bench(Flaky(), str(tmp_path), opts)
    assert again.measured == again.oom == again.failed == 0 and again.skipped == first.tasks


def test_many_failures_in_a_row_abort(tmp_path: Path) -> None:
    class Broken(CpuExecutor):
        def prepare(self, layer: Layer, variant: Variant) -> Prepared:
            raise LayerFailed("the device is gone")

    with pytest.raises(BenchAborted, match="in a row failed"):
        run_bench(Broken(), str(tmp_path), options())
    assert len(keys(tmp_path / "failures.csv")) == 25


def test_killed_run_resumes_without_loss_or_duplicates(tmp_path: Path) -> None:
    """SIGKILL a real run after some rows, tear its last line as a kill during a write would, restart."""
    out = tmp_path / "killed"
    table = out / "layers.csv"
    code = "import sys; from tests_bench_entry import main; sys.exit(main(sys.argv[1:]))"
    entry = tmp_path / "tests_bench_entry.py"
    entry.write_text(
        "from neuralpower.cli import _Parser\n"
        "from neuralpower.bench.cli import add_bench_parsers\n"
        "def main(argv):\n"
        "    p = _Parser(prog='neuralpower')\n"
        "    add_bench_parsers(p.add_subparsers(dest='verb', parser_class=_Parser))\n"
        "    args = p.parse_args(argv)\n"
        "    return args.run(args)\n"
    )
    env = {**os.environ, "PYTHONPATH": str(tmp_path) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    proc = subprocess.Popen(
        [sys.executable, "-c", code, "bench", *ARGS, "--out", str(out)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 60
        rows = 0
        while time.monotonic() < deadline and proc.poll() is None:
            rows = len(table.read_bytes().splitlines()) - 1 if table.exists() else 0
            if rows >= 6:
                break
            time.sleep(0.02)
        assert proc.poll() is None, f"the run ended before it could be killed: {proc.stderr and proc.stderr.read()}"
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait(timeout=30)
        if proc.stderr:
            proc.stderr.close()
    before = table.read_bytes()
    assert before.endswith(b"\n")
    kept = keys(table)
    assert len(kept) >= 6
    with open(table, "ab") as f:
        f.write(before.splitlines(keepends=True)[-1][:25])  # a row torn in the middle
    assert cli(["bench", *ARGS, "--out", str(out)]) == 0
    after = table.read_bytes()
    assert after.startswith(before)  # nothing written before the kill was lost or rewritten
    resumed = keys(table)
    assert len(resumed) == len(set(resumed)) and set(kept) <= set(resumed)
    # the same set of rows as a run that was never interrupted
    fresh = tmp_path / "fresh"
    assert cli(["bench", *ARGS, "--out", str(fresh)]) == 0
    assert Counter(resumed) == Counter(keys(fresh / "layers.csv"))


# -- networks and the command line -----------------------------------------------------------------


def test_bench_network(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["bench-network", "cifar_conv6", "--executor", "cpu", "--batch", "1,2", "--out", str(tmp_path),
            "--trials", "2", "--target-ms", "1", "--loops", "2", "--quiet"]  # fmt: skip
    assert cli(argv) == 0
    out = capsys.readouterr().out
    assert "neuralpower bench-network: cpu on cpu, 2 networks" in out and "rows measured  4" in out
    with open(tmp_path / "networks.csv", encoding="utf-8", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [(r["arch"], r["batch"]) for r in rows].count(("cifar_conv6", "2")) == 2
    assert all(float(r["runtime_ms"]) > 0 and int(r["layers"]) > 5 and r["executor"] == "cpu" for r in rows)
    assert cli(argv) == 0 and "already done   4" in capsys.readouterr().out


def test_run_networks_from_a_table(tmp_path: Path) -> None:
    arch = Architecture("tiny", [Layer("conv2d", in_channels=3, in_h=8, in_w=8, out_channels=4, kernel=3),
                                 Layer("relu", in_channels=4, in_h=6, in_w=6)])  # fmt: skip
    summary = run_networks(CpuExecutor(), [arch], str(tmp_path), options(trials=1))
    assert isinstance(summary, Summary) and summary.measured == 1


def test_cli_bench_table_and_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli(["bench", *ARGS, "--configs", "5", "--types", "relu,conv2d", "--out", str(tmp_path / "a")]) == 0
    out = capsys.readouterr().out
    assert "neuralpower bench: cpu on cpu, suite quick, fp32" in out
    for label in ("rows measured", "already done", "out of memory", "failed", "flagged", "time", "wrote"):
        assert label in out
    assert cli(["bench", *ARGS, "--device", "cuda:0", "--out", str(tmp_path / "b")]) == 2
    assert "neuralpower bench: error: the cpu executor runs on the host" in capsys.readouterr().err
    for bad in (["--types", "conv3d"], ["--max-minutes", "0"], ["--executor", "tpu"], ["--suite", "huge"]):
        with pytest.raises(SystemExit) as e:
            cli(["bench", *ARGS, "--out", str(tmp_path / "c"), *bad])
        assert e.value.code == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "(see neuralpower bench --help)" in err
    assert cli(["bench-network", "nonet", "--executor", "cpu", "--out", str(tmp_path / "d")]) == 2
    assert "neither a layer table file nor a zoo network" in capsys.readouterr().err


def test_every_option_has_help() -> None:
    p = parser()
    verbs = next(a for a in p._actions if a.dest == "verb")
    for name in ("bench", "bench-network"):
        sub = verbs.choices[name]  # type: ignore[index]
        for action in sub._actions:
            assert action.help, f"{name} {action.option_strings or action.dest} has no help"


def test_ctrl_c_keeps_rows_and_reports(tmp_path: Path) -> None:
    class Interrupted(CpuExecutor):
        calls = 0

        def prepare(self, layer: Layer, variant: Variant) -> Prepared:
            Interrupted.calls += 1
            if Interrupted.calls == 4:
                raise KeyboardInterrupt
            return super().prepare(layer, variant)

    summary = run_bench(Interrupted(), str(tmp_path), options())
    assert summary.stopped == "interrupted" and summary.measured == 3 and summary.left == summary.tasks - 3
    assert len(keys(tmp_path / "layers.csv")) == 3
    rest = run_bench(CpuExecutor(), str(tmp_path), options())
    assert rest.measured == summary.tasks - 3


def test_network_variants_are_network_wide() -> None:
    from neuralpower import zoo
    from neuralpower.bench.executors.cupy_exec import network_variants

    # the cupy executor: a layer's kernel choice (implicit_gemm, depthwise) is never a network's variant
    with_linear = network_variants(zoo.build("resnet18"))
    # cuBLAS eager only: CuPy refuses cuBLAS calls during stream capture
    assert with_linear == [Variant("eager", impl="kernel"), Variant("graph", impl="kernel"),
                           Variant("eager", impl="cublas")]
    convs = Architecture("convs", [layer for layer in zoo.build("resnet18") if layer.type == "conv2d"])
    assert network_variants(convs) == [Variant("eager"), Variant("graph")]
    # the default: the first layer's modes and formats, its implementation dropped
    assert CpuExecutor().network_variants(convs) == [Variant("eager", impl="im2col")]


class _Implemented(CpuExecutor):
    def variants(self, layer: Layer) -> list[Variant]:
        return [Variant("eager", impl="special"), Variant("eager", impl="other"), Variant("graph", impl="x")]


def test_default_network_variants_drop_the_implementation() -> None:
    from neuralpower.bench.executors.base import Executor

    arch = Architecture("a", [Layer("relu", in_channels=3, in_h=4, in_w=4)])
    assert Executor.network_variants(_Implemented(), arch) == [Variant("eager"), Variant("graph")]


def test_no_power_runs_runtime_trials_only(tmp_path: Path) -> None:
    # the quick suite measures its power configurations 3 times, the others once: without power, all once
    run_bench(CpuExecutor(), str(tmp_path), options(power=False, configs=30))
    counts = Counter(k for k, _ in keys(tmp_path / "layers.csv"))
    assert counts and set(counts.values()) == {1}
