"""Hostile and careless input: every verb exits 0 with a correct result or 2 with one line; never a traceback, a
signal, a silently wrong number, a partial output file or a modified input.

One test per reported case, then a fuzz test that drives the command line with generated tables, model files
and output paths across the classes those cases came from.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import os
import struct
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from model_docs import layer_entry, model_doc

import neuralpower as npw
from neuralpower import InputError, zoo
from neuralpower.cli import main
from neuralpower.describe import Listing
from neuralpower.evaluator import Model
from neuralpower.layers import FIELDS, LAYER_TYPES, MISSING
from neuralpower.table import read_layer_table

HEADER = "arch,type,batch,in_channels,in_h,in_w,out_channels,kernel"
CONV = "a,conv2d,1,16,8,8,16,3"


def run(*argv: str) -> tuple[int, str, str]:
    """``neuralpower ARGV`` in this process: (exit code, stdout, stderr); an exception escapes (a bug)."""
    out = io.TextIOWrapper(io.BytesIO(), encoding="utf-8")
    err = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):  # type: ignore[type-var]
        try:
            code = main(list(argv))
        except SystemExit as e:  # argparse refusing an option: one line, exit 2
            code = int(e.code or 0)
        out.flush()
    return code, out.buffer.getvalue().decode("utf-8", "replace"), err.getvalue()  # type: ignore[attr-defined]


def refused(code: int, err: str, verb: str, *words: str) -> None:
    """Exit 2 with one line on stderr (after any notes) naming what is wrong."""
    assert code == 2, err
    lines = [line for line in err.splitlines() if not line.startswith("note:")]
    assert len(lines) == 1, err
    assert lines[0].startswith(f"neuralpower {verb}: error: "), err
    for w in words:
        assert w in lines[0], (w, lines[0])


def table(tmp_path: Path, *rows: str, name: str = "t.csv", header: str = HEADER) -> Path:
    path = tmp_path / name
    path.write_text("\n".join([header, *rows]) + "\n")
    return path


# The bundled model of fp32 layers without power (the tables here are fp32; the default model is an H200's bf16).
CPU = ("--model", "cpu-numpy-fp32")


def no_power_model(tmp_path: Path) -> Path:
    """The bundled CPU model's document (fp32, no power), as a file."""
    path = tmp_path / "m.json"
    path.write_text(json.dumps(npw.load_model("cpu-numpy-fp32").doc))
    return path


def power_model(tmp_path: Path, coef: float = 1e-6, name: str = "power.json") -> Path:
    """A model of conv2d with power: runtime = coef x FLOPs (plus 0.01 ms), power 100 W."""
    roof = {"kind": "roofline", "ms_per_flop": coef, "ms_per_byte": 0.0, "overhead": 0.01}
    doc = model_doc({"conv2d": layer_entry(roof, {"kind": "constant", "value": 100.0})})
    path = tmp_path / name
    path.write_text(json.dumps(doc))
    return path


# -- lost or damaged files ----------------------------------------------------------------------------------


@pytest.mark.parametrize("link", ["same", "symlink", "hardlink"])
def test_score_never_overwrites_its_input(tmp_path: Path, link: str) -> None:
    path = table(tmp_path, CONV)
    before = path.read_bytes()
    out = path
    if link == "symlink":
        out = tmp_path / "alias.csv"
        out.symlink_to(path)
    elif link == "hardlink":
        out = tmp_path / "alias.csv"
        os.link(path, out)
    code, _, err = run("score", str(path), "--out", str(out))
    refused(code, err, "score", "is the input")
    code, _, err = run("score", str(path), "--out", str(tmp_path / "s.csv"), "--per-layer", str(out))
    refused(code, err, "score", "is the input")
    assert path.read_bytes() == before
    assert not (tmp_path / "s.csv").exists()


def test_fit_and_tune_never_overwrite_their_input(tmp_path: Path) -> None:
    measured = tmp_path / "m.json"  # a CSV measurement table that happens to be called .json
    measured.write_text(f"{HEADER},runtime_ms\n" + "".join(f"a{i},conv2d,1,16,8,8,{8 + i},3,{0.1 + i / 100}\n"
                                                           for i in range(40)))
    before = measured.read_bytes()
    code, _, err = run("fit", str(measured), "--out", str(measured))
    refused(code, err, "fit", "is the input")
    assert measured.read_bytes() == before
    arch = tmp_path / "arch.csv"
    npw.write_architectures(zoo.build("cifar_conv6"), arch)
    before = arch.read_bytes()
    code, _, err = run("tune", str(arch), "--out", str(arch))
    refused(code, err, "tune", "is the input")
    model = no_power_model(tmp_path)
    model_before = model.read_bytes()
    code, _, err = run("score", str(arch), "--model", str(model), "--out", str(model))
    refused(code, err, "score", "unknown output format")
    assert arch.read_bytes() == before and model.read_bytes() == model_before


def test_bench_keeps_a_foreign_layers_csv_whole(tmp_path: Path) -> None:
    out = tmp_path / "run"
    out.mkdir()
    foreign = out / "layers.csv"
    foreign.write_bytes(b"name,value\nx,1\ny,2")  # its last line has no newline: not ours to repair
    code, _, err = run("bench", "--executor", "cpu", "--suite", "quick", "--out", str(out), "--idle-s", "0",
                       "--max-minutes", "0.01", "--quiet")
    refused(code, err, "bench", "not a neuralpower dataset")
    assert foreign.read_bytes() == b"name,value\nx,1\ny,2"
    foreign.write_bytes(b"name,val")  # a lone line without a newline that is not our header
    code, _, err = run("bench", "--executor", "cpu", "--suite", "quick", "--out", str(out), "--idle-s", "0",
                       "--max-minutes", "0.01", "--quiet")
    refused(code, err, "bench", "not a neuralpower dataset")
    assert foreign.read_bytes() == b"name,val"


# -- silently wrong numbers ---------------------------------------------------------------------------------


def test_network_totals_are_exact_past_int64(tmp_path: Path) -> None:
    big = "a,conv2d,16777216,4096,64,64,4096,1"  # 2**60 MACs each: eight of them pass 2**63
    path = table(tmp_path, *[big] * 8)
    code, out, err = run("describe", str(path), "--format", "json")
    assert code == 0, err
    data = json.loads(out)
    assert data["macs"] == 8 * 2**60 == sum(layer["macs"] for layer in data["per_layer"])
    assert data["flops"] == sum(layer["flops"] for layer in data["per_layer"]) > 2**63
    assert npw.read_architectures(path)[0].totals()["bytes"] == data["bytes"] > 0
    code, out, _ = run("describe", str(path))
    assert code == 0 and f"MACs {8 * 2**60:,}" in out


@pytest.mark.parametrize(
    ("cell", "words"),
    [
        ("-9223372036854775808", ["row 2", "column batch", "out of range"]),  # the MISSING marker itself
        ("9223372036854775808", ["row 2", "column batch", "out of range"]),
        ("99999999999999999999999999", ["row 2", "column batch", "out of range"]),
        ("1e30", ["row 2", "column batch", "out of range"]),
        ("nan", ["row 2", "column batch", "not an integer"]),
        ("inf", ["row 2", "column batch", "not an integer"]),
    ],
)
def test_integer_cells_outside_int64(tmp_path: Path, cell: str, words: list[str]) -> None:
    path = table(tmp_path, f"a,conv2d,{cell},16,8,8,16,3")
    for verb in ("describe", "score", "predict"):
        code, _, err = run(verb, str(path))
        refused(code, err, verb, *words)


def test_parquet_columns_of_any_type(tmp_path: Path) -> None:
    base: dict[str, Any] = {"arch": ["a"], "type": ["conv2d"], "in_channels": [16], "in_h": [8], "in_w": [8],
                            "out_channels": [16], "kernel": [3]}
    cases: dict[str, tuple[dict[str, Any], list[str]]] = {
        "uint64": ({"batch": pa.array([2**64 - 1], pa.uint64())}, ["row 2", "column batch", "out of range"]),
        "int64min": ({"batch": pa.array([-(2**63)], pa.int64())}, ["row 2", "column batch", "out of range"]),
        "binary type": ({"type": pa.array([b"\xff\xfe"], pa.binary())}, ["row 2", "column type", "not UTF-8"]),
        "binary arch": ({"arch": pa.array([b"\xc3"], pa.binary())}, ["row 2", "column arch", "not UTF-8"]),
        "list sizes": ({"in_channels": pa.array([[16]], pa.list_(pa.int64()))}, ["column in_channels", "list"]),
        "list type": ({"type": pa.array([["conv2d"]], pa.list_(pa.string()))}, ["column type", "list"]),
    }
    for label, (columns, words) in cases.items():
        path = tmp_path / f"{label.replace(' ', '_')}.parquet"
        pq.write_table(pa.table({**base, **columns}), path)
        for verb in ("describe", "score"):
            code, _, err = run(verb, str(path))
            refused(code, err, verb, str(path), *words)
    # a list or struct column the format does not know is kept, not a crash
    path = tmp_path / "extra.parquet"
    pq.write_table(pa.table({**base, "tags": pa.array([[1, 2]]), "info": pa.array([{"x": 1}])}), path)
    code, _, err = run("describe", str(path), "--format", "json")
    assert code == 0, err
    assert len(npw.read_architectures(path)) == 1
    path = tmp_path / "ok.parquet"
    pq.write_table(pa.table({**base, "batch": pa.array([2], pa.uint64())}), path)
    assert npw.read_architectures(path)[0].batch == 2
    categorical = {**base, "arch": pa.array(["a"]).dictionary_encode(),
                   "type": pa.array(["conv2d"]).dictionary_encode()}
    pq.write_table(pa.table(categorical), path)  # as pandas writes a categorical column
    assert pa.types.is_dictionary(pq.read_table(path).schema.field("type").type)
    assert npw.read_architectures(path)[0][0].type == "conv2d"


def test_parquet_names_read_as_dictionaries(tmp_path: Path) -> None:
    """Architecture and layer names are read as a Parquet file's dictionaries: a blank or missing name is still
    an error at its row, in any block; a categorical column whose categories are unused or out of order, or
    names whose rows interleave, still group and score as the same table in CSV."""
    n = 700
    base: dict[str, Any] = {"type": ["conv2d"] * n, "in_channels": [16] * n, "in_h": [8] * n, "in_w": [8] * n,
                            "out_channels": [16] * n, "kernel": [3] * n}
    archs = [f"a{i // 7}" for i in range(n)]
    for label, value, words in (("blank", "  ", "every row names its architecture"),
                                ("missing", None, "every row names its architecture")):
        names = list(archs)
        names[650] = value  # in the last block (blocks of 256 rows)
        path = tmp_path / f"{label}.parquet"
        pq.write_table(pa.table({"arch": pa.array(names, pa.string()), **base}), path, row_group_size=300)
        for verb in ("describe", "score"):
            args = [verb, str(path)] + (["--arch", "a0"] if verb == "describe" else list(CPU))
            code, _, err = run(*args)
            refused(code, err, verb, str(path), "row 652", "column arch", words)
    # categories unused and out of order, rows of an architecture spread over the file
    spread = [archs[(i * 37) % n] for i in range(n)]
    categories = pa.array(["zz-unused", *sorted(set(spread), reverse=True)])
    codes = pa.array([categories.to_pylist().index(a) for a in spread], pa.int32())
    layer = pa.array([f"l{i % 7}" for i in range(n)]).dictionary_encode()
    table = pa.table({"arch": pa.DictionaryArray.from_arrays(codes, categories), "layer": layer, **base})
    pq_path, csv_path = tmp_path / "cat.parquet", tmp_path / "cat.csv"
    pq.write_table(table, pq_path, row_group_size=300)
    pacsv.write_csv(table.set_column(0, "arch", pa.array(spread)).set_column(1, "layer", layer.cast(pa.string())),
                    csv_path)
    outs = []
    for path in (pq_path, csv_path):
        out = tmp_path / f"{path.suffix[1:]}-scores.csv"
        code, _, err = run("score", str(path), "--out", str(out), *CPU)
        assert code == 0, err
        outs.append(pacsv.read_csv(out))
    assert outs[0].column_names == outs[1].column_names and outs[0].num_rows == len(set(spread))
    for name in outs[0].column_names:  # sums over blocks may differ in the last digit
        a, b = outs[0].column(name).to_pylist(), outs[1].column(name).to_pylist()
        assert a == b or np.allclose(np.array(a, float), np.array(b, float), rtol=1e-12, equal_nan=True), name
    assert "zz-unused" not in outs[0].column("arch").to_pylist()


def test_overflowing_models_are_refused_not_reported_as_zero(tmp_path: Path) -> None:
    arch = table(tmp_path, CONV)
    model = power_model(tmp_path, coef=1e307)  # FLOPs x 1e307 overflows to infinity
    for verb in ("score", "predict"):
        code, _, err = run(verb, str(arch), "--model", str(model))
        refused(code, err, verb, "not a finite number")
    with pytest.raises(InputError, match="not a finite number"):
        npw.load_model(model).predict(npw.read_architectures(arch)[0])


def test_model_files_with_repeated_factors_or_huge_numbers(tmp_path: Path) -> None:
    inputs = [{"feature": "flops", "transform": "identity"}, {"feature": "batch", "transform": "identity"}]
    poly = {"kind": "poly", "target": "plain", "degree": 3, "inputs": inputs, "intercept": 0.0,
            "terms": [{"powers": [[0, 8], [0, 8]], "coef": 1.0}]}  # flops**16: past the exponent limit
    doc = model_doc({"conv2d": layer_entry(poly, {"kind": "constant", "value": 1.0})})
    path = tmp_path / "rep.json"
    path.write_text(json.dumps(doc))
    code, _, err = run("score", str(table(tmp_path, CONV)), "--model", str(path))
    refused(code, err, "score", str(path), "twice")
    roof = {"kind": "roofline", "ms_per_flop": 0, "ms_per_byte": 0, "overhead": 0}
    doc = model_doc({"conv2d": layer_entry(roof, {"kind": "constant", "value": 1.0})})
    text = json.dumps(doc).replace('"overhead": 0', '"overhead": 1' + "0" * 400)
    path.write_text(text)
    code, _, err = run("predict", "cifar_conv6", "--model", str(path))
    refused(code, err, "predict", str(path), "finite number")
    with pytest.raises(InputError):
        Model(json.loads(text))


def test_epr_and_bottleneck_under_a_model_without_power(tmp_path: Path) -> None:
    path = table(tmp_path, "a,conv2d,1,16,8,8,64,3,0.2", "b,conv2d,1,16,8,8,16,3,0.3", header=HEADER + ",error")
    out = tmp_path / "s.csv"
    code, _, err = run("score", str(path), "--out", str(out), *CPU)
    assert code == 0 and "epr is left empty and rank orders by error^alpha x runtime_ms" in err
    scores = pacsv.read_csv(out).to_pydict()
    assert scores["epr"] == [None, None]
    runtime = dict(zip(scores["arch"], scores["runtime_ms"], strict=True))
    want = sorted(scores["arch"], key=lambda a: {"a": 0.2, "b": 0.3}[a] * runtime[a])
    assert scores["arch"] == want and scores["rank"] == [1, 2]
    code, out_text, _ = run("predict", "cifar_conv6", *CPU)
    assert code == 0 and "bottleneck by runtime" in out_text
    # with power: epr is error x energy, ranked by it
    code, _, err = run("score", str(path), "--out", str(out), "--model", str(power_model(tmp_path)))
    assert code == 0, err
    scores = pacsv.read_csv(out).to_pydict()
    assert all(e is not None and e > 0 for e in scores["epr"]) and scores["epr"] == sorted(scores["epr"])
    for alpha in ("nan", "-1", "inf"):
        code, _, err = run("score", str(path), "--alpha", alpha)
        refused(code, err, "score", "--alpha")


def _png_height(path: Path) -> int:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    return int(struct.unpack(">I", data[20:24])[0])


def test_predict_keeps_the_tables_dtype_and_plots_what_it_has(tmp_path: Path) -> None:
    half = table(tmp_path, "a,conv2d,1,fp16,16,8,8,16,3", header="arch,type,batch,dtype,in_channels,in_h,in_w,"
                                                                 "out_channels,kernel")
    for verb in ("predict", "tune"):
        code, _, err = run(verb, str(half), *CPU)
        refused(code, err, verb, "is fp16", "fit for fp32", "--dtype fp32")
    code, _, err = run("predict", str(half), "--dtype", "fp32", *CPU)
    assert code == 0, err
    code, _, err = run("score", str(half), *CPU)
    refused(code, err, "score", "fp16")
    no_power = tmp_path / "np.png"
    assert run("predict", "cifar_conv6", "--plot", str(no_power), *CPU)[0] == 0
    with_power = tmp_path / "p.png"
    arch = table(tmp_path, CONV, "a,conv2d,1,16,8,8,32,3", name="c.csv")
    assert run("predict", str(arch), "--model", str(power_model(tmp_path)), "--plot", str(with_power))[0] == 0
    assert _png_height(no_power) < _png_height(with_power)  # runtime alone, no empty energy panel


# -- tracebacks or a killed interpreter -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("argv", "words"),
    [
        (["describe", "resnet50", "--batch", "100000000000000000000"], ["--batch", "at most"]),
        (["describe", "resnet50", "--image-size", "100000000000"], ["--image-size", "at most"]),
        (["score", "examples/candidates.csv.gz", "--threads", "3000000000"], ["--threads", "at most"]),
        (["fit", "x.csv", "--out", "m.json", "--seed", "-1"], ["--seed"]),
        (["fit", "x.csv", "--out", "m.json", "--jobs", "0"], ["--jobs", "at least 1"]),
        (["fit", "x.csv", "--out", "m.json", "--degree", "99999999999999999999"], ["--degree"]),
        (["bench", "--executor", "cpu", "--out", "x", "--window-s", "nan"], ["--window-s", "finite"]),
    ],
)
def test_numeric_options_out_of_range(argv: list[str], words: list[str]) -> None:
    with pytest.raises(SystemExit) as e, contextlib.redirect_stderr(io.StringIO()) as err:
        main(argv)
    assert e.value.code == 2
    message = err.getvalue().strip()
    assert "\n" not in message and all(w in message for w in words), message


def test_output_paths_are_checked_before_any_work(tmp_path: Path) -> None:
    arch = table(tmp_path, CONV)
    folder = tmp_path / "folder"
    folder.mkdir()
    missing = tmp_path / "no" / "such" / "out.csv"
    cases = [
        (["score", str(arch), "--out"], [(missing, "does not exist"), (folder, "is a folder"),
                                         (tmp_path / "x.xlsx", "unknown output format")]),
        (["score", str(arch), "--per-layer"], [(missing, "does not exist"), (tmp_path / "x.json", "unknown")]),
        (["predict", "cifar_conv6", "--plot"], [(missing.with_suffix(".png"), "does not exist"),
                                                (folder, "is a folder"), (tmp_path / "x.gif", "unknown")]),
        (["tune", "cifar_conv6", "--out"], [(missing, "does not exist"), (tmp_path / "x.xls", "unknown")]),
    ]
    for argv, outs in cases:
        for out, words in outs:
            code, _, err = run(*argv, str(out))
            refused(code, err, argv[0], words)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["folder", "t.csv"]
    measured = tmp_path / "m.csv"
    measured.write_text(f"{HEADER},runtime_ms\n" + "".join(f"a{i},conv2d,1,16,8,8,{8 + i},3,0.1\n" for i in range(40)))
    for out, words in [(missing.with_suffix(".json"), "does not exist"), (tmp_path / "m.csv2", "unknown")]:
        code, _, err = run("fit", str(measured), "--out", str(out))
        refused(code, err, "fit", words)
        assert "fitting" not in err  # refused before it fitted anything
    code, _, err = run("fit", str(measured), "--out", str(tmp_path / "ok.json"), "--report", str(arch))
    refused(code, err, "fit", "is a file")
    assert not (tmp_path / "ok.json").exists()


def test_outputs_are_renamed_into_place(tmp_path: Path) -> None:
    out = tmp_path / "s.parquet"
    code, _, err = run("score", str(table(tmp_path, CONV)), "--out", str(out), *CPU)
    assert code == 0, err
    assert pq.read_table(out).num_rows == 1
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temporary file left


def test_onnx_without_the_onnx_extra(tmp_path: Path) -> None:
    path = tmp_path / "m.onnx"
    path.write_bytes(b"not really")
    code = (
        "import sys; sys.modules['onnx'] = None\n"
        "from neuralpower.cli import main\n"
        f"sys.exit(main(['describe', {str(path)!r}]))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [proc.stderr.strip()]
    assert "pip install 'neuralpower[onnx]'" in proc.stderr and "Traceback" not in proc.stderr


def test_onnx_clip_with_vector_bounds(tmp_path: Path) -> None:
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper, numpy_helper

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 8, 8])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 8, 8])
    lo = numpy_helper.from_array(np.zeros(4, dtype=np.float32), "lo")
    graph = helper.make_graph([helper.make_node("Clip", ["x", "lo"], ["y"], name="clip")], "g", [x], [y], [lo])
    path = tmp_path / "clip.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), str(path))
    code, _, err = run("describe", str(path))
    refused(code, err, "describe", "clip", "bound of shape (4,)")


def test_fit_on_one_configuration_and_extreme_targets(tmp_path: Path) -> None:
    one = tmp_path / "one.csv"
    one.write_text(f"{HEADER},runtime_ms,power_w\n" + "".join(f"a{i},conv2d,1,16,8,8,16,3,{0.1 + 0.001 * (i % 3)},"
                                                              f"{100 + i % 5}\n" for i in range(40)))
    for method in ("poly", "tree", "all"):
        out = tmp_path / f"one-{method}.json"
        code, _, err = run("fit", str(one), "--out", str(out), "--method", method)
        assert code == 0, err
        p = npw.load_model(out).predict(npw.read_architectures(table(tmp_path, CONV))[0])
        assert 0.09 < p.runtime_ms < 0.11 and 95 < p.power_w < 105  # the mean of what it was given
    for value, words in (("1e300", "outside the range"), ("1e-300", "outside the range"), ("inf", "positive finite"),
                         ("0", "positive finite")):
        bad = tmp_path / "bad.csv"
        bad.write_text(f"{HEADER},runtime_ms\n" + "".join(f"a{i},conv2d,1,16,8,8,{8 + i},3,{value if i == 7 else 1}\n"
                                                          for i in range(40)))
        code, _, err = run("fit", str(bad), "--out", str(tmp_path / "bad.json"))
        refused(code, err, "fit", "row 9", "column runtime_ms", words)


def test_python_api_rows_raise_input_error() -> None:
    row = np.array(zoo.build("cifar_conv6").rows()[:1])
    model = npw.load_model("cpu-numpy-fp32")
    for field, value in (("groups", 0), ("stride_h", 0), ("kernel_h", -1), ("in_h", MISSING), ("dtype", 9)):
        bad = row.copy()
        bad[0, FIELDS.index(field)] = value
        with pytest.raises(InputError):
            model.score_rows(bad, np.array([0, 1]))
        with pytest.raises(InputError):
            _ = npw.Layer.from_row(bad[0]).macs
    with pytest.raises(InputError):
        model.score_rows(row, np.array([0, 5]))
    with pytest.raises(InputError):
        model.score_rows(row[:, :5], np.array([0, 1]))
    with pytest.raises(InputError):
        npw.Layer.from_row([0, 1, 2])
    layer = npw.Layer.from_row(row[0])  # a valid row is a layer
    assert layer.macs == zoo.build("cifar_conv6")[0].macs
    assert model.score_rows(row, np.array([0, 1]), threads=3_000_000)["runtime_ms"].shape == (1,)


# -- unbounded work ---------------------------------------------------------------------------------------------


def test_tune_refuses_a_window_it_cannot_afford(tmp_path: Path) -> None:
    path = table(tmp_path, "a,conv2d,1,3,8,8,16000000,1", "a,conv2d,1,16000000,8,8,16,1")
    code, _, err = run("tune", str(path), "--max-change", "100%", *CPU)
    refused(code, err, "tune", "32,000,000 widths", "lower --max-change")


def test_adaptive_pooling_costs_in_closed_form(tmp_path: Path) -> None:
    def brute(size_in: int, size_out: int) -> int:  # PyTorch's window bounds
        return sum(-(-(i + 1) * size_in // size_out) - (i * size_in) // size_out for i in range(size_out))

    for h_in, h_out, w_in, w_out in [(7, 1, 7, 1), (7, 3, 9, 4), (5, 8, 13, 13), (224, 7, 17, 6), (1, 9, 3, 2)]:
        layer = npw.Layer("adaptive_avgpool2d", batch=2, in_channels=3, in_h=h_in, in_w=w_in, out_h=h_out, out_w=w_out)
        assert layer.flops == 2 * 3 * brute(h_in, h_out) * brute(w_in, w_out)
    huge = npw.Layer("adaptive_avgpool2d", in_channels=1, in_h=4096, in_w=4096, out_h=4096, out_w=4096)
    assert huge.flops == 4096 * 4096  # every output reads one input: in + out - gcd = 4096


def test_every_layer_type_is_known_to_the_fuzzer() -> None:
    assert set(_TYPES) == set(LAYER_TYPES)


# -- the rule, fuzzed -------------------------------------------------------------------------------------------

_TYPES = list(LAYER_TYPES)
_COLUMNS = ["arch", "layer", "type", "batch", "dtype", "in_channels", "in_h", "in_w", "out_channels", "out_h", "out_w",
            "kernel", "stride", "padding", "dilation", "groups", "in_features", "out_features", "bias", "ceil_mode",
            "inputs", "broadcast", "error", "runtime_ms", "power_w", "notes"]
_CELLS = st.one_of(
    st.integers(1, 64).map(str),
    st.sampled_from(["0", "-1", "3.0", "2.5", "", " ", "nan", "inf", "-inf", "1e30", "0x10", "1_000",
                     str(2**63), str(2**63 - 1), str(-(2**63)), str(2**64 + 5), "9" * 400, "é", "😀", "\u202e",
                     '"', "a,b", "0.2", "1.5"]),
    st.sampled_from(_TYPES),
    st.sampled_from(["fp32", "fp16", "bf16", "FP16", "int8"]),
    st.text(max_size=8),
)


_VALID = [
    ["arch", "type", "batch", "in_channels", "in_h", "in_w", "out_channels", "kernel", "error", "in_features",
     "out_features", "runtime_ms", "power_w"],
    ["a", "conv2d", "1", "16", "8", "8", "16", "3", "0.2", "", "", "0.05", "120"],
    ["a", "relu", "1", "16", "6", "6", "", "", "0.2", "", "", "0.01", ""],
    ["a", "conv2d", "1", "8", "8", "8", "32", "1", "0.2", "", "", "0.02", "90"],
    ["a", "linear", "1", "", "", "", "", "", "0.2", "64", "10", "", "80"],
]


@st.composite
def _tables(draw: st.DrawFn) -> str:
    """Random columns and cells, or a valid table with a few cells made hostile (to reach past the reader)."""
    if draw(st.booleans()):
        records = [list(r) for r in _VALID]
        for _ in range(draw(st.integers(0, 3))):
            i, j = draw(st.integers(1, len(records) - 1)), draw(st.integers(0, len(records[0]) - 1))
            records[i][j] = draw(_CELLS)
    else:
        columns = draw(st.lists(st.sampled_from(_COLUMNS), min_size=1, max_size=12, unique=True))
        if draw(st.booleans()) and "type" not in columns:
            columns.insert(0, "type")
        rows = draw(st.lists(st.lists(_CELLS, min_size=len(columns), max_size=len(columns)), max_size=6))
        records = [columns, *rows]
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerows(records)
    return buf.getvalue()


_NUMBERS = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True), st.integers(-(2**70), 2**70), st.just(10**400), st.just(-1)
)


@st.composite
def _model_texts(draw: st.DrawFn) -> str:
    """A model file near a valid one: a number, an exponent or a name swapped for something hostile."""
    entry = layer_entry(
        {"kind": "poly", "target": draw(st.sampled_from(["plain", "log", "relative", "x"])), "degree": 3,
         "inputs": [{"feature": "flops", "transform": "identity"}, {"feature": "batch", "transform": "log1p"}],
         "intercept": draw(_NUMBERS),
         "terms": [{"powers": draw(st.lists(st.lists(st.integers(-2, 10), min_size=2, max_size=2), max_size=4)),
                    "coef": draw(_NUMBERS)}]},
        {"kind": "constant", "value": draw(_NUMBERS)},
    )
    text = json.dumps(model_doc({draw(st.sampled_from(["conv2d", "linear", "convv"])): entry}))
    if draw(st.booleans()):
        text = text.replace("1.0", "1" + "0" * draw(st.integers(1, 500)), 1)
    return text


_ROOF = {"kind": "roofline", "ms_per_flop": 1e-9, "ms_per_byte": 1e-9, "overhead": 0.01}
_GOOD_MODEL = json.dumps(model_doc({t: layer_entry(_ROOF, {"kind": "constant", "value": 50.0})
                                    for t in ("conv2d", "relu", "linear")}))
_OUTCOMES: dict[int, int] = {}  # exit codes seen by the fuzz test (to check it reaches past the reader)


def _snapshot(directory: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(directory.iterdir()) if p.is_file()}


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    text=_tables(),
    verb=st.sampled_from(["describe", "score", "predict", "tune", "fit"]),
    fmt=st.sampled_from(["csv", "parquet"]),
    out=st.sampled_from(["new.csv", "new.parquet", "new.csv", "input", "model", "no/such/folder.csv", "folder",
                         "x.xlsx", None]),
    model=st.one_of(st.sampled_from([None, None, _GOOD_MODEL]), _model_texts()),
    extra=st.sampled_from([[], ["--batch", "3"], ["--dtype", "fp16"], ["--alpha", "0.5"], ["--pareto"],
                           ["--per-layer", "LAYERS"], ["--arch", "a"]]),
)
def test_fuzz_the_command_line(
    tmp_path: Path, text: str, verb: str, fmt: str, out: str | None, model: str | None, extra: list[str]
) -> None:
    work = Path(tempfile.mkdtemp(dir=tmp_path))
    (work / "folder").mkdir()
    source = work / f"t.{fmt}"
    if fmt == "csv":
        source.write_text(text, encoding="utf-8")
    else:
        try:
            pq.write_table(pacsv.read_csv(io.BytesIO(text.encode())), source)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            source.write_text(text, encoding="utf-8")
    argv = [verb, str(source)]
    model_path = work / "model.json"
    if model is not None and verb not in ("describe", "fit"):
        model_path.write_text(model)
        argv += ["--model", str(model_path)]
    if verb in ("score", "tune", "fit") and (out is not None or verb == "fit"):
        target = {"input": str(source), "model": str(model_path)}.get(out or "", str(work / (out or "new.json")))
        if verb == "fit" and out and out.startswith("new."):
            target = str(work / "new.json")
        argv += ["--out", target]
    if extra and verb != "fit" and (extra[0] in ("--alpha", "--pareto", "--per-layer")) == (verb == "score"):
        argv += [str(work / "layers.csv") if e == "LAYERS" else e for e in extra]  # an option the verb has
    before = _snapshot(work)
    code, _, err = run(*argv)
    _OUTCOMES[code] = _OUTCOMES.get(code, 0) + 1
    assert code in (0, 2), err
    lines = [line for line in err.splitlines() if not line.startswith(("note:", "scored", "wrote", "fitting"))]
    if code == 2:
        assert len(lines) == 1 and lines[0].startswith(f"neuralpower {verb}: error: "), err
        assert "Traceback" not in err
    else:
        assert not lines, err
    after = _snapshot(work)
    for name, content in before.items():  # inputs are never modified
        assert after.get(name) == content, name
    created = set(after) - set(before)
    if code == 2:
        assert not created, created  # no partial output
    assert not [n for n in os.listdir(work) if n.startswith(".")]  # no temporary file left behind
    for name in created:
        if name.endswith(".csv"):
            pacsv.read_csv(work / name)  # complete and readable
        elif name.endswith(".parquet"):
            pq.read_table(work / name)


def test_the_fuzzer_reaches_valid_results() -> None:
    # runs after the fuzz test (file order): a fuzzer that only ever met errors would test little
    if not _OUTCOMES:
        pytest.skip("the fuzz test did not run")
    assert _OUTCOMES.get(0, 0) >= 10 and _OUTCOMES.get(2, 0) >= 10, _OUTCOMES


def test_describe_columns_equal_the_layer_objects(tmp_path: Path) -> None:
    # the column-wise listing (shapes, configurations, counts made once per distinct value) says what each
    # Layer says of itself, for every zoo network, read from a table or built in memory
    archs = [zoo.build(name, batch=2) for name in zoo.names()]
    path = tmp_path / "zoo.parquet"
    npw.write_architectures(archs, path)
    layers = read_layer_table(path)
    for arch in archs:
        listing = Listing.from_table(layers, str(path), arch.name)
        assert listing.records() == Listing.from_architecture(arch).records()
        assert listing.totals() == arch.totals()
        for record, layer in zip(listing.records(), arch.layers, strict=True):
            assert record["layer"] == layer.name and record["type"] == layer.type
            assert tuple(record["in_shape"]) == layer.in_shape and tuple(record["out_shape"]) == layer.out_shape
            assert (record["macs"], record["flops"], record["params"]) == (layer.macs, layer.flops, layer.params)
            assert record["bytes"] == layer.bytes_moved
