"""The score, predict and models verbs, as a user runs them."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest

import neuralpower as npw
from neuralpower import zoo
from neuralpower.cli import main
from neuralpower.models.data import read_measurements
from neuralpower.models.fit import FitOptions, fit_models
from neuralpower.models.format import write_model_file
from neuralpower.models.synthetic import synthetic_table


@pytest.fixture(scope="module")
def model_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("cli")
    table = directory / "s.csv"
    pacsv.write_csv(synthetic_table(400, seed=11), table)
    path = directory / "conv.json"
    write_model_file(fit_models(read_measurements([table]), FitOptions()), path)
    return path


def convs(name: str, batch: int = 1, **meta: object) -> npw.Architecture:
    return npw.Architecture(name, [layer for layer in zoo.build(name, batch=batch) if layer.type == "conv2d"], meta)


@pytest.fixture()
def candidates(tmp_path: Path) -> Path:
    path = tmp_path / "cands.csv"
    npw.write_architectures(
        [convs("resnet18", error=0.3), convs("mobilenet_v2", 2, error=0.28), convs("alexnet")], path
    )
    return path


def test_score_to_stdout_with_epr(candidates: Path, model_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["score", str(candidates), "--model", str(model_path), "--alpha", "2"]) == 0
    rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert [r["arch"] for r in rows] == ["resnet18", "mobilenet_v2", "alexnet"]
    r = rows[0]
    assert set(r) >= {"arch", "layers", "runtime_ms", "power_w", "energy_mj", "error", "epr", "bottleneck"}
    assert float(r["epr"]) == pytest.approx(0.3**2 * float(r["energy_mj"]))
    assert rows[2]["error"] == "" and rows[2]["epr"] == ""  # alexnet has no error value
    model = npw.load_model(model_path)
    p = model.predict(convs("mobilenet_v2", 2))
    assert float(rows[1]["runtime_ms"]) == pytest.approx(p.runtime_ms, rel=1e-12)
    assert rows[1]["bottleneck"] == p.bottleneck and int(rows[1]["layers"]) == len(p.arch)


@pytest.mark.parametrize("suffix", ["csv", "parquet"])
def test_score_to_files(candidates: Path, model_path: Path, tmp_path: Path, suffix: str) -> None:
    out, per_layer = tmp_path / f"scores.{suffix}", tmp_path / f"layers.{suffix}"
    assert (
        main(["score", str(candidates), "--model", str(model_path), "--out", str(out), "--per-layer", str(per_layer)])
        == 0
    )
    read = pq.read_table if suffix == "parquet" else pacsv.read_csv
    scores, layers = read(out), read(per_layer)
    assert scores.num_rows == 3
    assert layers.num_rows == sum(int(n) for n in scores.column("layers").to_pylist())
    assert layers.column_names == ["arch", "layer", "type", "runtime_ms", "power_w", "energy_mj", "extrapolated"]
    assert layers.column("layer").to_pylist()[0] == "conv1"


def test_score_errors(candidates: Path, model_path: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    full = tmp_path / "full.csv"
    npw.write_architectures(zoo.build("resnet18"), full)
    assert main(["score", str(full), "--model", str(model_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"neuralpower score: error: {full}: the model has no batchnorm2d model (it covers conv2d)"
    assert main(["score", str(candidates), "--model", str(tmp_path / "missing.json")]) == 2
    assert "cannot read the model file" in capsys.readouterr().err
    assert main(["score", str(candidates), "--model", "nonesuch"]) == 2
    assert "neither a model file nor a bundled model" in capsys.readouterr().err
    bad = tmp_path / "bad.csv"
    bad.write_text(candidates.read_text().replace(",0.3\n", ",1.7\n", 1))
    assert main(["score", str(bad), "--model", str(model_path)]) == 2
    assert "column error: 1.7 is not a top-1 error between 0 and 1" in capsys.readouterr().err


def test_predict(model_path: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "a.csv"
    npw.write_architectures(convs("resnet18", 4), path)
    plot = tmp_path / "p.png"
    assert main(["predict", str(path), "--model", str(model_path), "--plot", str(plot)]) == 0
    out = capsys.readouterr().out
    assert "resnet18: batch 4, fp32" in out and "layer4.1.conv2" in out and "bottleneck by energy" in out
    assert plot.read_bytes()[:4] == b"\x89PNG"
    assert main(["predict", str(path), "--model", str(model_path), "--format", "json"]) == 0
    data = json.loads(capsys.readouterr().out)
    p = npw.load_model(model_path).predict(convs("resnet18", 4))
    assert data["runtime_ms"] == pytest.approx(p.runtime_ms) and len(data["per_layer"]) == len(p.arch)
    assert main(["predict", "resnet18", "--model", str(model_path)]) == 2
    assert "resnet18: the model has no batchnorm2d model" in capsys.readouterr().err


def test_models_lists_bundled_models(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["models", "--format", "json"]) == 0
    records = json.loads(capsys.readouterr().out)
    names = [r["name"] for r in records]
    assert names == sorted(npw.evaluator.bundled_models())
    for r in records:
        assert r["gpu"] and r["executor"] and r["dtype"] and r["created"]
