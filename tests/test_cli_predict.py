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
    rows = {r["arch"]: r for r in csv.DictReader(io.StringIO(capsys.readouterr().out))}
    r = rows["resnet18"]
    assert set(r) >= {"arch", "layers", "runtime_ms", "power_w", "energy_mj", "rank", "error", "epr", "bottleneck"}
    assert float(r["epr"]) == pytest.approx(0.3**2 * float(r["energy_mj"]))
    assert rows["alexnet"]["error"] == "" and rows["alexnet"]["epr"] == ""  # alexnet has no error value
    assert rows["alexnet"]["rank"] == "" and list(rows)[-1] == "alexnet"  # unranked, last
    # ranked by epr, lowest first
    ranked = sorted(["resnet18", "mobilenet_v2"], key=lambda a: float(rows[a]["epr"]))
    assert list(rows)[:2] == ranked and [rows[a]["rank"] for a in ranked] == ["1", "2"]
    model = npw.load_model(model_path)
    p = model.predict(convs("mobilenet_v2", 2))
    assert float(rows["mobilenet_v2"]["runtime_ms"]) == pytest.approx(p.runtime_ms, rel=1e-12)
    assert rows["mobilenet_v2"]["bottleneck"] == p.bottleneck and int(rows["mobilenet_v2"]["layers"]) == len(p.arch)


def test_score_pareto(model_path: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """--pareto keeps the (error, energy) front, ranked by epr; its per-layer output holds the front's layers."""
    errors = {"r18": 0.30, "r18b2": 0.25, "mb": 0.28, "mb4": 0.20, "alex": 0.45, "vgg": 0.27, "noerr": None}
    sources = {"r18": ("resnet18", 1), "r18b2": ("resnet18", 2), "mb": ("mobilenet_v2", 1), "mb4": ("mobilenet_v2", 4),
               "alex": ("alexnet", 1), "vgg": ("vgg11", 1), "noerr": ("squeezenet1_0", 1)}
    archs = []
    for name, (net, batch) in sources.items():
        meta = {} if errors[name] is None else {"error": errors[name]}
        arch = convs(net, batch)
        archs.append(npw.Architecture(name, arch.layers, meta))
    path = tmp_path / "c.parquet"
    npw.write_architectures(archs, path)
    energy = dict(zip([a.name for a in archs], npw.load_model(model_path).score(archs).energy_mj, strict=True))
    expected = {
        a for a, e in errors.items() if e is not None
        and not any(e2 is not None and e2 <= e and energy[b] <= energy[a] and (e2 < e or energy[b] < energy[a])
                    for b, e2 in errors.items())
    }
    assert 1 < len(expected) < 6
    layers = tmp_path / "layers.csv"
    rows = _score_rows(["score", str(path), "--model", str(model_path), "--pareto", "--per-layer", str(layers)], capsys)
    assert {r["arch"] for r in rows} == expected
    assert [float(r["epr"]) for r in rows] == sorted(float(r["epr"]) for r in rows)
    per_layer = pacsv.read_csv(layers)
    assert set(per_layer.column("arch").to_pylist()) == expected
    assert per_layer.num_rows == sum(int(r["layers"]) for r in rows)

    no_error = tmp_path / "n.csv"
    npw.write_architectures([convs("resnet18")], no_error)
    assert main(["score", str(no_error), "--model", str(model_path), "--pareto"]) == 2
    assert capsys.readouterr().err == f"neuralpower score: error: {no_error}: --pareto needs an error column (top-1 " \
        "error per architecture)\n"
    # a model without power (the bundled CPU model): the front is over runtime, and says so
    npw.write_architectures([npw.Architecture(a.name, zoo.build(sources[a.name][0], batch=sources[a.name][1]).layers,
                                              a.meta) for a in archs if a.name in ("r18", "mb", "alex")], no_error)
    rows = _score_rows(["score", str(no_error), "--pareto", "--model", "cpu-numpy-fp32"], capsys)
    assert rows and all(float(r["energy_mj"]) == 0 for r in rows)


def _score_rows(argv: list[str], capsys: pytest.CaptureFixture[str]) -> list[dict[str, str]]:
    assert main(argv) == 0
    return list(csv.DictReader(io.StringIO(capsys.readouterr().out)))


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
    bounds = [f"{q}_{side}" for q in ("runtime_ms", "power_w", "energy_mj") for side in ("lo", "hi")]
    assert layers.column_names == ["arch", "layer", "type", "runtime_ms", "power_w", "energy_mj", "extrapolated",
                                   "runtime_source", "power_source", *bounds]  # the fitted model holds intervals
    assert set(layers.column("runtime_source").to_pylist()) == {
        "measured on none (synthetic ground truth) (synthetic, fp32)"}
    assert layers.column("layer").to_pylist()[0] == "conv1"
    assert scores.column_names[:11] == ["arch", "layers", "runtime_ms", "power_w", "energy_mj", *bounds]
    lo, mid, hi = (scores.column(c).to_numpy() for c in ("runtime_ms_lo", "runtime_ms", "runtime_ms_hi"))
    assert (lo < mid).all() and (mid < hi).all()


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


def test_predicting_a_zoo_network_reads_no_table_library() -> None:
    """`neuralpower predict NETWORK --gpu NAME` runs in under a second per network (benchmarks/predict_gpus.py), and
    pyarrow, which only tables need, is not imported for it (nor by `import neuralpower`)."""
    import subprocess
    import sys

    code = ("import sys, contextlib, io\n"
            "import neuralpower, neuralpower.cli as c\n"
            "assert 'pyarrow' not in sys.modules, 'import neuralpower'\n"
            "with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):\n"
            "    assert c.main(['predict', 'resnet18', '--gpu', 'h200']) == 0\n"
            "assert 'pyarrow' not in sys.modules, 'predict'\n"
            "assert neuralpower.read_layer_table is not None and 'pyarrow' in sys.modules\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
