"""The command line: output formats, --help on every verb, and one-line errors with exit code 2."""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from neuralpower import write_architectures, zoo
from neuralpower.cli import build_parser, main


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_describe_zoo_json(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "describe", "resnet50", "--format", "json")
    assert code == 0
    data = json.loads(out)
    assert data["name"] == "resnet50" and data["batch"] == 1 and data["dtype"] == "fp32"
    assert data["params"] == 25557032
    assert data["layers"] == len(data["per_layer"]) == len(zoo.build("resnet50"))
    assert data["macs"] == sum(layer["macs"] for layer in data["per_layer"])
    assert data["flops"] > 2 * data["macs"] and data["bytes"] > 0


def test_describe_options(capsys: pytest.CaptureFixture[str]) -> None:
    _, base, _ = run(capsys, "describe", "mobilenet_v2", "--format", "json")
    _, big, _ = run(
        capsys, "describe", "mobilenet_v2", "--format", "json", "--batch", "8", "--image-size", "160", "--dtype", "fp16"
    )
    b, g = json.loads(base), json.loads(big)
    assert g["batch"] == 8 and g["dtype"] == "fp16" and g["params"] == b["params"]
    assert g["per_layer"][0]["in_shape"] == [8, 3, 160, 160]
    assert g["macs"] < 8 * b["macs"]


def test_describe_table_and_csv(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "describe", "resnet18")
    assert code == 0
    assert "resnet18: batch 1, fp32" in out and "conv2d" in out and "1x64x112x112" in out
    assert "total" in out and "11.69M" in out
    code, out, _ = run(capsys, "describe", "resnet18", "--format", "csv")
    rows = list(csv.DictReader(io.StringIO(out)))
    assert code == 0 and len(rows) == len(zoo.build("resnet18"))
    assert sum(int(r["params"]) for r in rows) == 11689512


def test_describe_a_table_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "nets.csv"
    write_architectures([zoo.build("alexnet"), zoo.build("squeezenet1_0", batch=2)], path)
    code, out, err = run(capsys, "describe", str(path))
    assert code == 2 and out == "" and "holds 2 architectures" in err and "--arch" in err
    code, out, _ = run(capsys, "describe", str(path), "--arch", "squeezenet1_0", "--format", "json")
    assert code == 0 and json.loads(out)["batch"] == 2 and json.loads(out)["params"] == 1248424
    code, out, _ = run(capsys, "describe", str(path), "--arch", "alexnet", "--batch", "4", "--format", "json")
    assert json.loads(out)["batch"] == 4


@pytest.mark.parametrize(
    ("argv", "fragment"),
    [
        (["describe", "resnet51"], "neither a layer table file nor a zoo network"),
        (["describe", "missing.csv"], "missing.csv: cannot read the file"),
        (["describe", "resnet50", "--batch", "0"], "0 must be at least 1"),
        (["describe", "resnet50", "--batch", "x"], "'x' is not an integer"),
        (["describe", "alexnet", "--image-size", "8"], "alexnet cannot be built"),
        (["describe", "resnet50", "--format", "xml"], "invalid choice"),
        (["describe", "resnet50", "--arch", "other"], "no architecture named 'other'"),
        (["describe"], "required"),
        (["frobnicate"], "invalid choice"),
    ],
)
def test_errors_are_one_line_exit_2(
    capsys: pytest.CaptureFixture[str], argv: list[str], fragment: str, tmp_path: Path
) -> None:
    os.chdir(tmp_path)
    try:
        code = main(argv)
    except SystemExit as e:  # argparse's own usage errors
        code = int(e.code or 0)
    _, err = capsys.readouterr()
    assert code == 2
    assert fragment in err
    assert len(err.strip().splitlines()) == 1, err
    assert "Traceback" not in err


def test_image_size_rejected_for_files(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "n.csv"
    write_architectures(zoo.build("alexnet"), path)
    code, _, err = run(capsys, "describe", str(path), "--image-size", "128")
    assert code == 2 and "--image-size applies to zoo networks" in err


def test_bad_table_from_the_command(tmp_path: Path) -> None:
    path = tmp_path / "bad.csv"
    path.write_text("arch,type,in_channels,in_h,in_w\nn,relu,4,-2,2\n")
    proc = subprocess.run(
        [sys.executable, "-m", "neuralpower.cli", "describe", str(path)], capture_output=True, text=True
    )
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.strip() == (f"neuralpower describe: error: {path}, row 2, column in_h: -2 must be at least 1")


def test_zoo_lists_every_network(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "zoo")
    assert code == 0
    for name in zoo.names():
        assert name in out
    code, out, _ = run(capsys, "zoo", "--format", "json")
    records = json.loads(out)
    assert [r["name"] for r in records] == zoo.names()
    assert all(r["params"] > 0 and r["description"] for r in records)


def test_every_verb_has_help_for_every_option(capsys: pytest.CaptureFixture[str]) -> None:
    parser = build_parser()
    verbs = parser._subparsers._group_actions[0].choices  # type: ignore[union-attr]
    assert {"describe", "zoo"} <= set(verbs)
    for name, sub in verbs.items():
        for action in sub._actions:
            assert action.help, f"{name}: option {action.option_strings or action.dest} has no help"
        with pytest.raises(SystemExit) as e:
            main([name, "--help"])
        assert e.value.code == 0
        assert "usage: neuralpower " + name in capsys.readouterr().out
