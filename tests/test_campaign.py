"""`neuralpower campaign` end to end on the cpu executor: plan, sweep, networks, fit, validate, report, archive;
a second visit extends the same datasets without measuring anything twice."""

from __future__ import annotations

import csv
import json
import os
import tarfile
from pathlib import Path

import pytest

from neuralpower.bench.executors import get_executor
from neuralpower.campaign import CampaignOptions, plan_campaign
from neuralpower.cli import main
from neuralpower.models.data import flag_names, unusable


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def test_plan_arithmetic() -> None:
    executor = get_executor("cpu", device="cpu", dtype="fp32")
    plan = plan_campaign(executor, CampaignOptions(out="x", executor="cpu", dtypes=["fp16", "fp32"], minutes=8))
    # the reserve, then the layer and network shares of each dtype add up to the budget
    assert plan.reserve_s + 2 * (plan.layer_s + plan.network_s) == pytest.approx(8 * 60)
    for d in ("fp16", "fp32"):
        assert 0 < plan.runtime_configs[d] <= plan.sampled[d]
        assert plan.power_expected[d] == 0  # the cpu measures no power
    assert "campaign plan: 8 minutes" in plan.text() and "resnet18" in plan.text()


def test_campaign_on_the_cpu(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "visit"
    args = ["campaign", "--executor", "cpu", "--out", str(out), "--minutes", "0.7", "--suite", "quick",
            "--networks", "cifar_conv6", "--batch", "1", "--trials", "1", "--quiet"]
    assert main(args) == 0
    err = capsys.readouterr().err
    assert "campaign plan: 0.7 minutes, dtypes fp32" in err and "# Campaign report" in err
    layers = _rows(out / "cpu-fp32" / "layers.csv")
    networks = _rows(out / "cpu-fp32" / "networks" / "networks.csv")
    assert len(layers) > 20 and [r["arch"] for r in networks] == ["cifar_conv6"]
    # balanced: the first rows cover many layer types, not the first few types of a shuffled sweep
    from neuralpower.layers import LAYER_TYPES

    assert len({r["type"] for r in layers[:25]}) >= 15
    assert all(r["type"] in LAYER_TYPES for r in layers)
    record = json.loads((out / "campaign.json").read_text())
    visit = record["visits"][0]
    assert visit["environment"]["executor"] == "cpu" and visit["sensor"]["available"] is False
    assert visit["stages"]["layers-fp32"]["measured"] == len(layers)
    # fitted from the rows that other work on the machine did not disturb (all of them on a quiet machine)
    usable = [r for r in layers if not unusable(flag_names(r["flags"]))]
    assert visit["stages"]["fit-fp32"]["fitted"] == bool(usable) == (out / "cpu-fp32" / "model.json").exists()
    assert visit["seconds"] < 0.7 * 60 + 30  # the budget, with the fit's and the report's reserve
    report = (out / "report.md").read_text()
    assert "## Models" in report and ("| conv2d |" in report or not usable)
    if visit["stages"]["fit-fp32"]["validated"]:
        assert json.loads((out / "cpu-fp32" / "validate.json").read_text())["networks"] == 1
    with tarfile.open(out / "campaign.tar.gz") as tar:
        names = tar.getnames()
    assert "visit/cpu-fp32/layers.csv" in names and "visit/report.md" in names and "visit/campaign.json" in names
    assert visit["archive"]["within_limit"] is False or visit["archive"]["bytes"] < 16 * 2**20

    # a second visit extends the datasets: nothing is measured twice
    assert main(args) == 0
    capsys.readouterr()
    again = _rows(out / "cpu-fp32" / "layers.csv")
    keys = [(r["config_id"], r["trial"]) for r in again]
    assert len(again) > len(layers) and len(set(keys)) == len(keys)
    record = json.loads((out / "campaign.json").read_text())
    assert len(record["visits"]) == 2 and record["visits"][1]["stages"]["layers-fp32"]["already_done"] > 0


def test_campaign_refuses_bad_input(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "file").write_text("x")
    assert main(["campaign", "--executor", "cpu", "--out", str(tmp_path / "file"), "--minutes", "0.1"]) == 2
    assert "exists and is not a folder" in capsys.readouterr().err
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "campaign.json").write_text("{not json")
    assert main(["campaign", "--executor", "cpu", "--out", str(tmp_path / "d"), "--minutes", "0.1"]) == 2
    err = capsys.readouterr().err
    assert "not a campaign record" in err and len(err.strip().splitlines()) == 1
    with pytest.raises(SystemExit):
        main(["campaign", "--executor", "cpu", "--out", str(tmp_path / "n"), "--networks", "resnet51"])
    assert "unknown zoo network 'resnet51'" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["campaign", "--executor", "cpu", "--out", str(tmp_path / "n"), "--dtype", "int8"])
    assert "dtypes are fp16 and fp32" in capsys.readouterr().err


def test_campaign_without_the_gpu_it_needs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    torch = pytest.importorskip("torch")
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    out = tmp_path / "h100"
    assert main(["campaign", "--executor", "torch", "--out", str(out), "--minutes", "0.1"]) == 2
    err = capsys.readouterr().err
    assert "no CUDA device" in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert not out.exists()  # nothing written


def test_a_gpu_models_datasets_have_one_folder() -> None:
    from neuralpower.campaign import gpu_folder

    assert gpu_folder("NVIDIA H200") == "h200"
    assert gpu_folder("NVIDIA H100 80GB HBM3") == "h100-80gb-hbm3"
    assert gpu_folder("NVIDIA H100 PCIe") == "h100-pcie" != gpu_folder("NVIDIA H100 80GB HBM3")
    assert gpu_folder("Tesla V100-PCIE-32GB") == "tesla-v100-pcie-32gb"
    assert gpu_folder("") == gpu_folder("  NVIDIA  ") == "gpu"


def _archive(path: Path, members: dict[str, bytes]) -> Path:
    import io

    with tarfile.open(path, "w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def test_after_a_visit_its_data_become_bundled_models(tmp_path: Path) -> None:
    import io
    import subprocess
    import sys

    import pyarrow.csv as pacsv

    from neuralpower.models.format import read_model_file
    from neuralpower.models.synthetic import synthetic_table

    sweep = io.BytesIO()
    pacsv.write_csv(synthetic_table(80, seed=2), sweep)
    data, models = tmp_path / "data", tmp_path / "models"
    (data / "h200").mkdir(parents=True)
    (data / "h200" / "earlier.txt").write_text("kept")
    archive = _archive(tmp_path / "campaign.tar.gz", {"h200/torch-fp16/layers.csv": sweep.getvalue(),
                                                       "h200/torch-fp32/layers.csv": sweep.getvalue()})
    env = {**os.environ, "DATA": str(data), "MODELS": str(models), "FIT_OPTIONS": "--method tree --jobs 2",
           "NEURALPOWER": f"{sys.executable} -m neuralpower.cli"}
    script = str(Path(__file__).resolve().parents[1] / "gpu" / "after-visit.sh")

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["bash", script, *args], env=env, capture_output=True, text=True, timeout=300)

    done = run(str(archive))
    assert done.returncode == 0, done.stderr
    assert (data / "h200" / "torch-fp32" / "layers.csv").read_bytes() == sweep.getvalue()
    assert (data / "h200" / "earlier.txt").read_text() == "kept"
    for dtype in ("fp16", "fp32"):
        assert read_model_file(models / f"h200-torch-{dtype}.json")["layer_types"]
    assert not (models / "DEFAULT").exists()  # the default stays the bundled GPU model, rebuilt from the data
    assert "python -m neuralpower.models.bundle" in done.stdout

    bad = {
        "no such file": tmp_path / "none.tar.gz",
        "not a readable .tar.gz": tmp_path / "junk.tar.gz",
        "an absolute path or '..'": _archive(tmp_path / "up.tar.gz", {"h200/../../x": b"x"}),
        "more than one folder": _archive(tmp_path / "two.tar.gz", {"h200/a": b"", "h100/b": b""}),
    }
    (tmp_path / "junk.tar.gz").write_bytes(b"not an archive")
    for words, path in bad.items():
        refused = run(str(path))
        assert refused.returncode == 2 and words in refused.stderr and len(refused.stderr.splitlines()) == 1, words
    assert not (tmp_path / "x").exists()
