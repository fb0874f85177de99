"""`neuralpower validate`: whole networks measured by bench-network against predictions."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import pytest

import neuralpower as npw
from neuralpower import zoo
from neuralpower.cli import main

COLUMNS = ["arch", "batch", "dtype", "layers", "params", "macs", "flops", "bytes", "config_id", "trial", "runtime_ms",
           "power_w", "energy_mj", "flags"]


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def _row(arch: npw.Architecture, trial: int, runtime: float, power: float | None, flags: str = "") -> dict[str, Any]:
    t = arch.totals()
    return {"arch": arch.name, "batch": arch.batch, "dtype": arch.dtype, "layers": t["layers"], "params": t["params"],
            "macs": t["macs"], "flops": t["flops"], "bytes": t["bytes"], "config_id": "x", "trial": trial,
            "runtime_ms": runtime, "power_w": "" if power is None else power,
            "energy_mj": "" if power is None else power * runtime, "flags": flags}


def _write(path: Path, rows: list[dict[str, Any]]) -> Path:
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, COLUMNS)
        w.writeheader()
        w.writerows(rows)
    return path


@pytest.fixture()
def measured(tmp_path: Path, varying_model_path: Path) -> Path:
    """Networks 'measured' at known factors of the varying model's predictions."""
    model = npw.load_model(varying_model_path)
    rows = []
    for name, batch, factor in (("resnet18", 1, 1.25), ("resnet18", 4, 0.8), ("mobilenet_v2", 1, 1.0)):
        arch = zoo.build(name, batch=batch)
        p = model.predict(arch)
        runtime, power = p.runtime_ms * factor, p.power_w * factor
        rows += [_row(arch, 0, runtime, power), _row(arch, 1, runtime, power),
                 _row(arch, 2, runtime * 10, power, "noisy"), _row(arch, 3, runtime * 20, power, "throttled"),
                 _row(arch, 4, runtime * 30, power, "interference")]
    return _write(tmp_path / "networks.csv", rows)


def test_errors_and_mape(capsys: pytest.CaptureFixture[str], measured: Path, varying_model_path: Path) -> None:
    code, out, _ = run(capsys, "validate", str(measured.parent), "--model", str(varying_model_path), "--format", "json")
    assert code == 0
    rec = json.loads(out)
    assert rec["networks"] == 3
    cases = {(c["arch"], c["batch"]): c for c in rec["cases"]}
    # the noisy, throttled and interference trials do not count: the two clean ones do
    assert cases[("resnet18", 1)]["trials"] == 2
    assert cases[("resnet18", 1)]["runtime_ms_error_pct"] == pytest.approx(100 * (1 / 1.25 - 1))
    assert cases[("resnet18", 4)]["runtime_ms_error_pct"] == pytest.approx(100 * (1 / 0.8 - 1))
    assert cases[("mobilenet_v2", 1)]["power_w_error_pct"] == pytest.approx(0, abs=1e-9)
    expected = (20 + 25 + 0) / 3
    assert rec["runtime_mape"] == pytest.approx(expected) and rec["power_mape"] == pytest.approx(expected)
    # energy = power x runtime: both off by the factor
    e = [100 * abs(1 / 1.25**2 - 1), 100 * abs(1 / 0.8**2 - 1), 0.0]
    assert rec["energy_mape"] == pytest.approx(sum(e) / 3)
    # the varying model's only model is named "m": it holds none of the methods validate compares
    assert rec["methods"] == {}


def test_table_and_plot(capsys: pytest.CaptureFixture[str], measured: Path, varying_model_path: Path,
                        tmp_path: Path) -> None:
    plot = tmp_path / "v.png"
    code, out, _ = run(capsys, "validate", str(measured), "--model", str(varying_model_path), "--plot", str(plot))
    assert code == 0
    assert "3 networks measured" in out and "resnet18" in out and "-20.0%" in out and "+25.0%" in out
    assert "default" in out and "runtime MAPE" in out and "poly" not in out
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_bench_network_then_validate(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    argv = ["bench-network", "cifar_conv6", "--executor", "cpu", "--batch", "1,2", "--out", str(tmp_path / "n"),
            "--trials", "2", "--target-ms", "1", "--loops", "2", "--quiet"]  # fmt: skip
    assert main(argv) == 0
    capsys.readouterr()
    code, out, _ = run(capsys, "validate", str(tmp_path / "n"), "--format", "json", "--model", "cpu-numpy-fp32")
    assert code == 0
    rec = json.loads(out)
    assert rec["networks"] == 2 and rec["runtime_mape"] > 0 and rec["power_mape"] is None
    assert {c["batch"] for c in rec["cases"]} == {1, 2}
    # the bundled cpu model holds every method: each is compared
    assert set(rec["methods"]) == {"poly", "tree", "roofline", "flops_linear"}


def test_architectures_given(capsys: pytest.CaptureFixture[str], tmp_path: Path, varying_model_path: Path) -> None:
    arch = zoo.build("cifar_conv6", batch=2)
    custom = npw.Architecture("mine", list(arch.layers))
    table = tmp_path / "mine.csv"
    npw.write_architectures([custom], table)
    networks = _write(tmp_path / "networks.csv", [_row(custom, 0, 5.0, 100.0)])
    code, _, err = run(capsys, "validate", str(networks), "--model", str(varying_model_path))
    assert code == 2 and "mine is not a zoo network: give the architectures it ran with --archs" in err
    code, out, _ = run(capsys, "validate", str(networks), "--model", str(varying_model_path), "--archs", str(table),
                       "--format", "json")
    assert code == 0 and json.loads(out)["cases"][0]["arch"] == "mine"


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda r: r.update(macs=12345), "row 2, column macs: resnet18 at batch 1 has macs"),
        (lambda r: r.update(runtime_ms="fast"), "row 2, column runtime_ms: 'fast' is not a number"),
        (lambda r: r.update(runtime_ms="-1"), "row 2, column runtime_ms: '-1' is not a positive number"),
        (lambda r: r.update(batch="1.5"), "row 2, column batch: '1.5' is not a positive whole number"),
        (lambda r: r.update(arch=""), "row 2, column arch: empty network name"),
        (lambda r: r.update(dtype="fp16"), "resnet18 was measured in fp16"),
    ],
)
def test_bad_networks_tables(capsys: pytest.CaptureFixture[str], tmp_path: Path, edit: Any, message: str) -> None:
    row = _row(zoo.build("resnet18"), 0, 50.0, None)
    edit(row)
    path = _write(tmp_path / "networks.csv", [row])
    code, _, err = run(capsys, "validate", str(path))
    assert code == 2 and message in err, err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err


def test_missing_inputs(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code, _, err = run(capsys, "validate", str(tmp_path))
    assert code == 2 and "no networks.csv in this folder" in err
    code, _, err = run(capsys, "validate", str(tmp_path / "nope.csv"))
    assert code == 2 and "no such file or folder" in err
    (tmp_path / "n.csv").write_text("arch,batch\nresnet18,1\n")
    code, _, err = run(capsys, "validate", str(tmp_path / "n.csv"))
    assert code == 2 and "not a networks table: no 'dtype' column" in err
    for name, data in (("binary.csv", b"arch\x00\xff\n"), ("latin1.csv", b"arch,b\xe9tch\nx,1\n"), ("empty.csv", b"")):
        (tmp_path / name).write_bytes(data)
        code, _, err = run(capsys, "validate", str(tmp_path / name))
        assert code == 2 and name in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    (tmp_path / "e.csv").write_text("arch,batch,dtype,runtime_ms\n")
    code, _, err = run(capsys, "validate", str(tmp_path / "e.csv"))
    assert code == 2 and "no networks measured" in err


def test_interval_coverage(capsys: pytest.CaptureFixture[str], measured: Path, varying_model_path: Path,
                           tmp_path: Path) -> None:
    doc = json.loads(varying_model_path.read_text())
    for entry in doc["layer_types"].values():
        for target in ("runtime_ms", "power_w"):
            entry[target]["interval"] = {"coverage": 0.9, "lo": 0.9, "hi": 1.3}
    path = tmp_path / "with-intervals.json"
    path.write_text(json.dumps(doc))
    code, out, _ = run(capsys, "validate", str(measured), "--model", str(path), "--format", "json")
    assert code == 0
    rec = json.loads(out)
    # measured at 1.25x, 0.8x and 1x the prediction: the first and the last inside [0.9, 1.3]x
    assert rec["runtime_interval_coverage"] == pytest.approx(200 / 3)
    case = next(c for c in rec["cases"] if c["batch"] == 4)
    assert case["predicted_runtime_ms_lo"] == pytest.approx(0.9 * case["predicted_runtime_ms"])
    code, out, _ = run(capsys, "validate", str(measured), "--model", str(varying_model_path), "--format", "json")
    assert json.loads(out)["runtime_interval_coverage"] is None


def test_layers_measured_alone_add_up(capsys: pytest.CaptureFixture[str], tmp_path: Path,
                                      varying_model_path: Path) -> None:
    import pyarrow as pa
    import pyarrow.csv as pacsv

    arch = zoo.build("cifar_conv6")
    table = tmp_path / "arch.csv"
    npw.write_architectures([arch], table)
    layers = pacsv.read_csv(table)
    # two trials of every layer: 1 ms and 3 ms (median 2 ms); a third, noisy trial of 100 ms does not count
    runs = pa.concat_tables([layers, layers, layers])
    runtime = [1.0] * len(arch) + [3.0] * len(arch) + [100.0] * len(arch)
    flags = [""] * (2 * len(arch)) + ["noisy"] * len(arch)
    runs = runs.append_column("runtime_ms", pa.array(runtime)).append_column("flags", pa.array(flags))
    measured_layers = tmp_path / "layers.csv"
    pacsv.write_csv(runs, measured_layers)
    networks = _write(tmp_path / "networks.csv", [_row(arch, 0, 30.0, None)])
    code, out, _ = run(capsys, "validate", str(networks), "--model", str(varying_model_path), "--layers",
                       str(measured_layers), "--format", "json")
    assert code == 0
    case = json.loads(out)["cases"][0]
    assert case["layers_measured"] == len(arch) and case["layers_sum_ms"] == pytest.approx(2.0 * len(arch))
    # one layer not measured alone: counted, no sum
    pacsv.write_csv(runs.slice(1, len(arch) - 1), measured_layers)
    code, out, _ = run(capsys, "validate", str(networks), "--model", str(varying_model_path), "--layers",
                       str(measured_layers))
    assert code == 0 and f"{len(arch) - 1}/{len(arch)} found" in out
