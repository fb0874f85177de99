"""Importing NeuSight's public GPU measurements, and fitting them."""

from __future__ import annotations

import csv
import gzip
import json
import math
import re
from pathlib import Path

import numpy as np
import pytest

from neuralpower.cli import main
from neuralpower.layers import FEATURES, LAYER_TYPES
from neuralpower.models.data import read_measurements
from neuralpower.models.fit import FitOptions, fit_models
from neuralpower.neusight import import_neusight, read_neusight, slug

DATA = Path(__file__).parent / "data" / "neusight"
V100 = "tesla_v100-pcie-32gb.csv"


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def imported(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("neusight") / "tables"
    assert main(["import-neusight", str(DATA), "--out", str(out)]) == 0
    return out / V100


def test_import_writes_one_table_per_gpu(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code, out, err = run(capsys, "import-neusight", str(DATA), "--out", str(tmp_path / "t"))
    assert code == 0
    assert [p.name for p in (tmp_path / "t").iterdir()] == [V100]
    assert "1040 rows (add 60, bmm 60, conv 400, linear 400, ln 60, relu 60)" in out
    assert err == ""


def test_imported_layers_match_the_operators(imported: Path) -> None:
    data = read_measurements([imported])
    assert len(data) == 1040 and data.context["gpu"] == ["Tesla V100-PCIE-32GB"]
    assert data.context["executor"] == ["neusight-torch"] and data.context["dtype"] == ["fp32"]
    _, conv = read_neusight(DATA / "conv" / f"{V100}.gz")
    _, linear = read_neusight(DATA / "linear" / f"{V100}.gz")
    assert conv is not None and linear is not None
    with gzip.open(DATA / "conv" / f"{V100}.gz", "rt", newline="") as f:
        src = list(csv.DictReader(f))
    is_conv = data.types == 0
    flops = data.features[is_conv, FEATURES.index("flops")]
    macs = np.array(
        [int(r["B"]) * int(r["Output_Channel"]) * int(r["Input_Size"]) ** 2 * int(r["Input_Channel"]) * 9 for r in src]
    )
    # 3x3 kernels, stride 1, padding 1: the output is as large as the input; no bias
    assert np.array_equal(flops, 2 * macs)
    runtime = data.targets["runtime_ms"][is_conv]
    assert np.allclose(runtime, [float(r["Latency"]) for r in src])
    with gzip.open(DATA / "linear" / f"{V100}.gz", "rt", newline="") as f:
        lin = list(csv.DictReader(f))
    is_linear = data.types == 1
    macs = np.array([int(r["B"]) * int(r["M"]) * int(r["N"]) * int(r["K"]) for r in lin])
    assert np.array_equal(data.features[is_linear, FEATURES.index("macs")], macs)
    # linear's rows are B x M tokens, whatever their split; bmm is a matmul of two activations, ln a layernorm
    rows = np.array([int(r["B"]) * int(r["M"]) for r in lin])
    assert np.array_equal(data.features[is_linear, FEATURES.index("rows")], rows)
    with gzip.open(DATA / "bmm" / f"{V100}.gz", "rt", newline="") as f:
        bmm = list(csv.DictReader(f))
    is_matmul = data.types == LAYER_TYPES.index("matmul")
    macs = np.array([int(r["B"]) * int(r["M"]) * int(r["N"]) * int(r["K"]) for r in bmm])
    assert np.array_equal(data.features[is_matmul, FEATURES.index("macs")], macs)
    assert np.array_equal(data.features[is_matmul, FEATURES.index("params")], np.zeros(len(bmm)))
    # [B, M, N] x [B, N, K]: N is summed over
    elements = np.array([int(r["B"]) * (int(r["M"]) * int(r["N"]) + int(r["N"]) * int(r["K"])) for r in bmm])
    assert np.array_equal(data.features[is_matmul, FEATURES.index("bytes_input")], 4 * elements)
    out = np.array([int(r["B"]) * int(r["M"]) * int(r["K"]) for r in bmm])
    assert np.array_equal(data.features[is_matmul, FEATURES.index("elements_out")], out)
    # linear: [B, M, N] tokens, N features in, K out
    assert np.array_equal(data.features[is_linear, FEATURES.index("in_features")], [int(r["N"]) for r in lin])
    assert np.array_equal(data.features[is_linear, FEATURES.index("out_features")], [int(r["K"]) for r in lin])
    with gzip.open(DATA / "ln" / f"{V100}.gz", "rt", newline="") as f:
        ln = list(csv.DictReader(f))
    is_ln = data.types == LAYER_TYPES.index("layernorm")
    assert np.array_equal(data.features[is_ln, FEATURES.index("in_features")], [int(r["H"]) for r in ln])
    assert np.array_equal(data.features[is_ln, FEATURES.index("rows")], [int(r["B"]) for r in ln])


def test_the_gemm_sides_are_those_the_kernel_tiled(imported: Path) -> None:
    """The kernel that ran (not an input) tells which side is which: its grid tiles the output, M x K."""
    data = read_measurements([imported])
    m_at, n_at = FEATURES.index("gemm_m"), FEATURES.index("gemm_n")
    checked = 0
    for op, kind in (("linear", "linear"), ("bmm", "matmul")):
        with gzip.open(DATA / op / f"{V100}.gz", "rt", newline="") as f:
            src = list(csv.DictReader(f))
        rows = data.features[data.types == LAYER_TYPES.index(kind)]
        for r, x in zip(src, rows, strict=True):
            tile = re.search(r"_(\d+)x(\d+)_", r["Kernel Name"])
            if tile is None:
                continue  # a kernel without its tile in the name
            first, second = int(tile.group(1)), int(tile.group(2))
            n, m = x[n_at], x[m_at]
            assert (math.ceil(n / first), math.ceil(m / second)) == (int(r["Grid x"]), int(r["Grid y"])), r
            checked += 1
    assert checked > 300


def test_fit_on_real_gpu_rows(imported: Path) -> None:
    doc = fit_models(read_measurements([imported]), FitOptions(method="all"))
    for t in ("conv2d", "linear"):
        block = doc["layer_types"][t]["runtime_ms"]
        m = block["metrics"]
        # the default was chosen on validation rows and is reported on test rows nothing was chosen on
        assert block["default"] == min(m, key=lambda k: m[k]["validation_rmspe"])
        assert m["roofline"]["rmspe"] < m["flops_linear"]["rmspe"]
        assert m[block["default"]]["rmspe"] < 30
        assert 75 <= block["interval"]["test_coverage"] <= 100
    # FastDeepIoT's tree captures what a roofline cannot on convolutions (cuDNN's algorithm choices)
    conv = doc["layer_types"]["conv2d"]["runtime_ms"]["metrics"]
    assert conv["tree"]["rmspe"] < 0.8 * conv["roofline"]["rmspe"]
    assert doc["layer_types"]["conv2d"]["power_w"]["default"] == "constant"
    # the transformer types fit like the others (60 rows each in the sample: cross-validated choice)
    for t in ("matmul", "layernorm"):
        block = doc["layer_types"][t]["runtime_ms"]
        assert block["metrics"][block["default"]]["rmspe"] < 20
        assert block["metrics"][block["default"]]["rmspe"] < block["metrics"]["flops_linear"]["rmspe"]


def test_slug() -> None:
    assert slug("Tesla V100-PCIE-32GB") == "tesla_v100-pcie-32gb"
    assert slug(" NVIDIA H100 80GB HBM3 ") == "nvidia_h100_80gb_hbm3"


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("OPName,Latency,Device,B,H\nrelu,0.1,T4,2,-3\n", "f.csv, row 2, column H: -3 is not a whole number from 1"),
        ("OPName,Latency,Device,B,H\nrelu,0.1,T4,2,3.5\n", "f.csv, row 2, column H: 3.5 is not a whole number"),
        ("OPName,Latency,Device,B,H\nrelu,0.1,T4,2,3\nrelu,-1,T4,2,3\n", "row 3, column Latency: -1"),
        ("OPName,Latency,Device,B\nrelu,0.1,T4,2\n", "missing column 'H'"),
        ("OPName,Latency,Device,B,H\nsqrt,0.1,T4,2,3\n", "unknown NeuSight operator 'sqrt'"),
        ("OPName,Latency,Device,B,H\nrelu,0.1,T4,2,3\nadd,0.1,T4,2,3\n", "one operator per file expected"),
        ("Latency,Device,B,H\n0.1,T4,2,3\n", "not a NeuSight table: no 'OPName' column"),
        ("OPName,Latency,Device,B,H\nrelu,0.1,,2,3\n", "row 2, column Device: empty device name"),
        ("OPName,Latency,Device,B,H\nrelu,0.1,T4,2,3\nrelu,0.1,T4,,3\n", "row 3, column B: empty cell"),
        ("OPName,Latency,Device,B,H\nrelu,,T4,2,3\n", "row 2, column Latency: empty cell"),
        (
            "OPName,Latency,Device,B,Input_Channel,Output_Channel,Kernel_Szie,Input_Size,Stride,Padding\n"
            "conv,0.1,T4,1,3,8,9,4,1,0\n",
            "f.csv, row 2",
        ),
    ],
)
def test_bad_neusight_files(capsys: pytest.CaptureFixture[str], tmp_path: Path, text: str, message: str) -> None:
    src = _write(tmp_path / "f.csv", text)
    out = tmp_path / "out"
    code, _, err = run(capsys, "import-neusight", str(src), "--out", str(out))
    assert code == 2 and message in err, err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert not out.exists()


@pytest.mark.parametrize("data", [b"OPName\x00\xff\n", b"OPName,Lat\xe9ncy\nrelu,1\n", b""])
def test_unreadable_files(capsys: pytest.CaptureFixture[str], tmp_path: Path, data: bytes) -> None:
    (tmp_path / "f.csv").write_bytes(data)
    code, _, err = run(capsys, "import-neusight", str(tmp_path / "f.csv"), "--out", str(tmp_path / "o"))
    assert code == 2 and "f.csv" in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err, err


def test_output_folder_refused(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("x")
    code, _, err = run(capsys, "import-neusight", str(DATA), "--out", str(tmp_path / "full"))
    assert code == 2 and "not empty" in err
    (tmp_path / "empty").mkdir()
    code, _, err = run(capsys, "import-neusight", str(tmp_path / "empty"), "--out", str(tmp_path / "new"))
    assert code == 2 and "no .csv or .csv.gz files" in err and not (tmp_path / "new").exists()
    code, _, err = run(capsys, "import-neusight", str(tmp_path / "missing"), "--out", str(tmp_path / "n2"))
    assert code == 2 and "no such file or folder" in err


def test_import_api_matches_the_cli(imported: Path) -> None:
    result = import_neusight([DATA])
    assert list(result.tables) == [V100]
    assert result.tables[V100].num_rows == 1040
    assert json.dumps(result.rows[V100], sort_keys=True) == json.dumps(
        {"add": 60, "bmm": 60, "conv": 400, "linear": 400, "ln": 60, "relu": 60}, sort_keys=True
    )


def _conv_table(path: Path, rise: float, seed: int = 0, n: int = 600) -> tuple[Path, np.ndarray, np.ndarray]:
    """A NeuSight conv file of `n` random 3x3 layers timed as a known law (3 % noise) plus an overhead that grows
    linearly from 0 at the first row to `rise` ms at the last; the law's runtimes and the file's."""
    rng = np.random.default_rng(seed)
    b, cin, cout = rng.integers(1, 65, n), rng.integers(8, 1025, n), rng.integers(8, 1025, n)
    size = rng.integers(4, 33, n)
    law = 0.03 + 2 * b * cin * cout * 9 * size**2 / 8e9 * rng.lognormal(0, 0.03, n)
    latency = law + rise * np.arange(n) / (n - 1)
    lines = ["OPName,Latency,Device,B,Input_Channel,Output_Channel,Kernel_Szie,Input_Size,Stride,Padding"]
    lines += [f"conv,{float(latency[i])!r},GPU X,{b[i]},{cin[i]},{cout[i]},3,{size[i]},1,1" for i in range(n)]
    path.write_text("\n".join(lines) + "\n")
    return path, law, latency


def test_drift_with_the_row_order_is_found_and_removed(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    src, law, latency = _conv_table(tmp_path / "conv.csv", rise=0.5)
    result = import_neusight([src])
    (drift,) = result.drift["gpu_x.csv"]["conv"]
    assert drift.significant and drift.rise == pytest.approx(0.5, rel=0.15)
    assert drift.error_after < 0.5 * drift.error_before
    table = result.tables["gpu_x.csv"]
    runtime, removed = table.column("runtime_ms").to_numpy(), table.column("drift_ms").to_numpy()
    assert np.allclose(runtime + removed, latency) and removed[0] == 0
    # what is left is the law, to about its noise (the drift, up to 0.5 ms on layers of median ~1 ms, is gone)
    assert float(np.sqrt(np.mean((runtime / law - 1) ** 2))) < 0.06
    assert float(np.sqrt(np.mean((latency / law - 1) ** 2))) > 0.3
    code, out, err = run(capsys, "import-neusight", str(src), "--out", str(tmp_path / "o"))
    assert code == 0 and err == ""
    assert "conv: runtime drifts with the row order, +0." in out and "removed (column drift_ms)" in out
    # kept when asked
    code, out, _ = run(capsys, "import-neusight", str(src), "--out", str(tmp_path / "k"), "--keep-drift")
    assert code == 0 and "kept (--keep-drift)" in out
    kept = read_measurements([tmp_path / "k" / "gpu_x.csv"]).targets["runtime_ms"]
    assert np.array_equal(kept, latency)


def test_no_drift_leaves_the_runtimes_as_they_are(tmp_path: Path) -> None:
    src, _, latency = _conv_table(tmp_path / "conv.csv", rise=0.0, seed=1)
    result = import_neusight([src])
    (drift,) = result.drift["gpu_x.csv"]["conv"]
    assert not drift.significant and not drift.values.any()
    table = result.tables["gpu_x.csv"]
    assert "drift_ms" not in table.column_names
    assert np.array_equal(table.column("runtime_ms").to_numpy(), latency)


def test_drift_of_one_configuration_measured_again_and_again() -> None:
    from neuralpower.models.drift import MIN_ROWS, order_drift

    n = 400
    noise = np.random.default_rng(0).normal(0, 0.01, n)
    drift = order_drift(np.ones((n, 3)), 1.0 + 0.3 * np.arange(n) / (n - 1) + noise)
    assert drift.significant and drift.rise == pytest.approx(0.3, abs=0.03)
    assert not order_drift(np.ones((n, 3)), 1.0 + noise).significant
    few = order_drift(np.ones((MIN_ROWS - 1, 3)), np.linspace(1, 2, MIN_ROWS - 1))
    assert not few.significant and not few.values.any()  # too few rows to tell


def test_fit_says_when_its_errors_drift_with_the_row_order(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    src, _, _ = _conv_table(tmp_path / "conv.csv", rise=0.5, n=800)
    assert main(["import-neusight", str(src), "--out", str(tmp_path / "kept"), "--keep-drift"]) == 0
    assert main(["import-neusight", str(src), "--out", str(tmp_path / "removed")]) == 0
    capsys.readouterr()
    kept = fit_models(read_measurements([tmp_path / "kept" / "gpu_x.csv"]), FitOptions(method="tree"))
    drift = kept["layer_types"]["conv2d"]["runtime_ms"]["drift"]
    assert drift["rise"] == pytest.approx(0.5, rel=0.3) and drift["error_after"] < 0.8 * drift["error_before"]
    removed = fit_models(read_measurements([tmp_path / "removed" / "gpu_x.csv"]), FitOptions(method="tree"))
    assert "drift" not in removed["layer_types"]["conv2d"]["runtime_ms"]
    code, out, _ = run(capsys, "fit", str(tmp_path / "kept" / "gpu_x.csv"), "--method", "tree", "--out",
                       str(tmp_path / "m.json"))
    assert code == 0 and "conv2d runtime_ms: the errors drift with the row order (+" in out


def test_no_drift_claimed_from_outliers_or_from_an_order_that_follows_the_configuration() -> None:
    from neuralpower.models.drift import order_follows_configuration, residual_drift

    rng = np.random.default_rng(3)
    n = 150
    predicted = rng.uniform(0.05, 5.0, n)
    measured = predicted * rng.lognormal(0, 0.05, n)
    measured[rng.choice(n, 5, replace=False)] *= 5  # a few large errors, anywhere
    position = rng.permutation(n) / (n - 1)
    assert residual_drift(position, measured, predicted) is None
    # an overhead growing with the order is found, about as large as it is
    drifting = predicted * rng.lognormal(0, 0.05, n) + 0.5 * position
    found = residual_drift(position, drifting, predicted)
    assert found is not None and found["rise"] == pytest.approx(0.5, rel=0.3)
    # a sweep ordered by size: its order is told from its configuration; a random one's is not
    sizes = rng.integers(1, 1000, (n, 3))
    by_size = np.argsort(np.argsort(sizes.prod(axis=1))) / (n - 1)
    assert order_follows_configuration(by_size, sizes)
    assert not order_follows_configuration(position, sizes)
