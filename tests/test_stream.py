"""Tables read and scored in blocks: the same architectures, totals, errors and outputs as a whole-table read,
whatever the block edges; folders of Parquet files; outputs written as they go, never partial."""

from __future__ import annotations

import itertools
import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest

import neuralpower as npw
from neuralpower import InputError, stream
from neuralpower.cli import main
from neuralpower.layers import DTYPES, FIELDS
from neuralpower.table import read_layer_table

ROOT = Path(__file__).resolve().parents[1]
CANDIDATES = ROOT / "examples" / "candidates.csv.gz"


@pytest.fixture(scope="module")
def candidates() -> pa.Table:
    """The first 300 example candidates, with an error column."""
    table = pacsv.read_csv(CANDIDATES)
    names = table.column("arch").to_pylist()
    keep = sorted(set(names))[:300]
    table = table.filter(pa.compute.is_in(table.column("arch"), pa.array(keep)))
    rng = np.random.default_rng(0)
    error = dict(zip(keep, rng.uniform(0.2, 0.4, len(keep)), strict=True))
    return table.append_column("error", pa.array([error[n] for n in table.column("arch").to_pylist()]))


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def scores_of(path: Path) -> pa.Table:
    return ds.dataset(path).to_table() if path.is_dir() else read_any(path)


def read_any(path: Path) -> pa.Table:
    return pq.read_table(path) if path.suffix == ".parquet" else pacsv.read_csv(path)


def same_scores(a: pa.Table, b: pa.Table) -> None:
    assert a.column_names == b.column_names
    assert a.column("arch").to_pylist() == b.column("arch").to_pylist()
    for col in a.column_names:
        x, y = a.column(col).to_pylist(), b.column(col).to_pylist()
        if a.schema.field(col).type == pa.float64():
            assert np.allclose(np.array(x, dtype=float), np.array(y, dtype=float), rtol=1e-12, equal_nan=True), col
        else:
            assert x == y, col


@pytest.mark.parametrize("block_bytes", [1 << 15, 1 << 17, 1 << 30])
def test_blocks_are_the_whole_table(candidates: pa.Table, tmp_path: Path, block_bytes: int) -> None:
    """CSV blocks split between records (quoted names holding commas and newlines included) give the rows, names
    and spreadsheet rows of a whole-table read."""
    names = candidates.column("arch").to_pylist()
    odd = {n: (f'{n},"x"\nline' if i % 7 == 0 else n) for i, n in enumerate(sorted(set(names)))}
    table = candidates.set_column(0, "arch", pa.array([odd[n] for n in names]))
    path = tmp_path / "t.csv"
    pacsv.write_csv(table, path)
    whole = read_layer_table(path)
    blocks = list(stream.read_blocks(path, block_bytes=block_bytes))
    if block_bytes < 1 << 20:
        assert len(blocks) > 3
    assert np.array_equal(np.concatenate([b.rows for b in blocks]), whole.rows)
    assert [a for b in blocks for a in b.arch] == whole.arch
    assert [n for b in blocks for n in b.layer] == whole.layer
    assert [b.first for b in blocks] == list(np.cumsum([0] + [len(b) for b in blocks[:-1]]))
    # a block's rows are numbered as in the file (header row 1, a quoted newline takes a line)
    for b in (blocks[0], blocks[len(blocks) // 2], blocks[-1]):
        assert np.array_equal(b.line, whole.line[b.first : b.first + len(b)])


@pytest.mark.parametrize("fmt", ["csv", "csv.gz", "parquet"])
def test_an_error_in_a_later_block_names_its_row(candidates: pa.Table, tmp_path: Path, fmt: str) -> None:
    bad_index = candidates.num_rows - 5
    channels = candidates.column("in_channels").to_pylist()
    channels[bad_index] = -3
    table = candidates.set_column(candidates.column_names.index("in_channels"), "in_channels", pa.array(channels))
    path = tmp_path / f"t.{fmt}"
    if fmt == "parquet":
        pq.write_table(table, path, row_group_size=1000)
    else:
        with pa.output_stream(str(path), compression="gzip" if fmt.endswith(".gz") else None) as f:
            pacsv.write_csv(table, f)
    with pytest.raises(InputError) as err:
        for _ in stream.read_blocks(path, block_bytes=1 << 16, block_rows=1000):
            pass
    assert (err.value.path, err.value.row, err.value.column) == (str(path), bad_index + 2, "in_channels")


def test_a_cell_that_is_not_an_integer_in_one_block(candidates: pa.Table, tmp_path: Path) -> None:
    """One block read as text (a float cell) and the others as integers: the same rows."""
    path = tmp_path / "t.csv"
    pacsv.write_csv(candidates, path)
    text = path.read_text().splitlines()
    header = text[0].replace('"', "").split(",")
    k = header.index("in_channels")
    cells = text[-3].split(",")
    cells[k] = cells[k] + ".0"
    text[-3] = ",".join(cells)
    path.write_text("\n".join(text) + "\n")
    blocks = list(stream.read_blocks(path, block_bytes=1 << 16))
    assert np.array_equal(np.concatenate([b.rows for b in blocks]), read_layer_table(path).rows)


def test_scores_merge_across_blocks(varying_model_path: Path, candidates: pa.Table, tmp_path: Path) -> None:
    """Architectures cut by block edges and ones whose rows reappear later (interleaved) are merged: the same
    totals, bottlenecks and errors as scoring the whole table at once."""
    model = npw.load_model(varying_model_path)
    # interleave: every other block of 37 rows moved to the end, so architectures reappear far down
    n = candidates.num_rows
    pieces = [np.arange(i, min(i + 37, n)) for i in range(0, n, 37)]
    order = np.concatenate(pieces[::2] + pieces[1::2])
    table = candidates.take(pa.array(order))
    path = tmp_path / "t.parquet"
    pq.write_table(table, path, row_group_size=500)
    whole = model.score_table(read_layer_table(path))
    totals = stream.score_blocks(model, stream.read_blocks(path, block_rows=500))
    assert totals.names == whole.arch
    assert np.array_equal(totals.layers, whole.layers)
    assert np.allclose(totals.runtime_ms, whole.runtime_ms, rtol=1e-12)
    assert np.allclose(totals.energy_mj, whole.energy_mj, rtol=1e-12)
    assert np.allclose(totals.power_w, whole.power_w, rtol=1e-12)
    assert totals.bottleneck == whole.bottleneck
    assert np.array_equal(totals.extrapolated_layers, whole.extrapolated_layers)
    first_error = {}
    for a, e in zip(table.column("arch").to_pylist(), table.column("error").to_pylist(), strict=True):
        first_error.setdefault(a, e)
    assert np.allclose(totals.error, [first_error[a] for a in totals.names])


def test_a_table_scored_in_memory_per_layer(varying_model_path: Path, candidates: pa.Table, tmp_path: Path) -> None:
    """`Model.score(path, per_layer=True)` (the table in memory, as distinct rows and an index) gives what
    scoring its architectures as objects gives, layer by layer, where an architecture's rows are spread."""
    model = npw.load_model(varying_model_path)
    n = candidates.num_rows
    pieces = [np.arange(i, min(i + 23, n)) for i in range(0, n, 23)]
    table = candidates.take(pa.array(np.concatenate(pieces[::2] + pieces[1::2])))
    path = tmp_path / "t.parquet"
    pq.write_table(table, path)
    from_file = model.score(path, per_layer=True)
    archs = read_layer_table(path).architectures()
    from_objects = model.score(archs, per_layer=True)
    assert from_file.arch == from_objects.arch and from_file.bottleneck == from_objects.bottleneck
    assert np.allclose(from_file.energy_mj, from_objects.energy_mj, rtol=1e-12)
    assert from_file.per_layer is not None and from_objects.per_layer is not None
    for key in ("runtime_ms", "power_w", "energy_mj", "extrapolated"):
        assert np.array_equal(from_file.per_layer[key], from_objects.per_layer[key]), key
    # the rows of the table each layer came from
    rows = read_layer_table(path).rows
    assert np.array_equal(rows[from_file.per_layer["row"]], np.concatenate([a.rows() for a in archs]))


def test_score_cli_streams_with_small_blocks(
    varying_model_path: Path, candidates: pa.Table, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """`score` with blocks of 64 KiB writes the same scores and per-layer rows as with one block."""
    path = tmp_path / "t.csv"
    pacsv.write_csv(candidates, path)
    outs = {}
    for block in (1 << 16, 1 << 30):
        monkeypatch.setattr(stream, "BLOCK_BYTES", block)
        out, layers = tmp_path / f"s{block}.csv", tmp_path / f"l{block}.parquet"
        code, _, err = run(capsys, "score", str(path), "--model", str(varying_model_path), "--out", str(out),
                           "--per-layer", str(layers))
        assert code == 0, err
        outs[block] = (read_any(out), read_any(layers))
    same_scores(outs[1 << 16][0], outs[1 << 30][0])
    same_scores(outs[1 << 16][1], outs[1 << 30][1])
    assert outs[1 << 16][1].num_rows == candidates.num_rows
    assert outs[1 << 16][0].column("rank").to_pylist()[:3] == [1, 2, 3]


@pytest.mark.parametrize("interleaved", [False, True])
def test_parquet_scores_equal_csv_scores(
    varying_model_path: Path, candidates: pa.Table, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str], interleaved: bool,
) -> None:
    """A Parquet file (names read as its dictionaries, in blocks that cut row groups and architectures) scores
    as the same table in CSV does: the same scores and per-layer rows, names as plain text; also where an
    architecture's rows are spread over the file."""
    table = candidates
    if interleaved:
        n = table.num_rows
        pieces = [np.arange(i, min(i + 29, n)) for i in range(0, n, 29)]
        table = table.take(pa.array(np.concatenate(pieces[::2] + pieces[1::2])))
    csv_path, pq_path = tmp_path / "t.csv", tmp_path / "t.parquet"
    pacsv.write_csv(table, csv_path)
    pq.write_table(table, pq_path, row_group_size=1500)
    monkeypatch.setattr(stream, "BLOCK_ROWS", 1000)
    outs = []
    for path in (csv_path, pq_path):
        out, layers = tmp_path / f"s-{path.suffix[1:]}.csv", tmp_path / f"l-{path.suffix[1:]}.parquet"
        code, _, err = run(capsys, "score", str(path), "--model", str(varying_model_path), "--out", str(out),
                           "--per-layer", str(layers))
        assert code == 0, err
        outs.append((read_any(out), read_any(layers)))
    same_scores(outs[0][0], outs[1][0])
    # per-layer rows come block by block, each block's by architecture: where an architecture's rows are spread,
    # their order follows the block edges (which differ between the two files), not their values
    by_name = [("arch", "ascending"), ("layer", "ascending")]
    same_scores(*(layers.sort_by(by_name) if interleaved else layers for _, layers in outs))
    assert outs[1][1].schema.field("arch").type == pa.string()
    assert outs[1][1].num_rows == table.num_rows


def _folder(candidates: pa.Table, root: Path) -> Path:
    """The candidates in three Parquet files of a Hive-style folder, one architecture cut across two files."""
    n = candidates.num_rows
    cut = n // 3 + 17  # inside an architecture
    (root / "family=a").mkdir(parents=True)
    (root / "family=b").mkdir()
    pq.write_table(candidates.slice(0, cut), root / "family=a" / "part-0.parquet", row_group_size=2000)
    pq.write_table(candidates.slice(cut, n // 3), root / "family=a" / "part-1.parquet")
    pq.write_table(candidates.slice(cut + n // 3), root / "family=b" / "part-0.parquet")
    (root / "_SUCCESS").write_text("")  # what Spark leaves: not a table
    return root


def test_a_folder_of_parquet_files(
    varying_model_path: Path, candidates: pa.Table, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = _folder(candidates, tmp_path / "in")
    whole = tmp_path / "whole.parquet"
    pq.write_table(candidates, whole)
    model = str(varying_model_path)
    assert run(capsys, "score", str(whole), "--model", model, "--out", str(tmp_path / "w.csv"))[0] == 0
    expected = read_any(tmp_path / "w.csv")
    # into one file
    code, _, err = run(capsys, "score", str(folder), "--model", model, "--out", str(tmp_path / "f.csv"))
    assert code == 0, err
    same_scores(read_any(tmp_path / "f.csv"), expected)
    # into a folder: one file per input file, each with the architectures first seen there
    out, layers = tmp_path / "scores", tmp_path / "layers"
    code, _, err = run(capsys, "score", str(folder), "--model", str(varying_model_path), "--out", str(out),
                       "--per-layer", str(layers))
    assert code == 0, err
    names = sorted(str(p.relative_to(out)) for p in out.rglob("*.parquet"))
    assert names == ["family=a/part-0.parquet", "family=a/part-1.parquet", "family=b/part-0.parquet"]
    assert sorted(str(p.relative_to(layers)) for p in layers.rglob("*.parquet")) == names
    parts = [pq.read_table(out / name) for name in names]
    got = pa.concat_tables(parts).sort_by("rank")
    same_scores(got, expected)
    first_file = pq.read_table(folder / names[0]).column("arch").to_pylist()
    assert set(parts[0].column("arch").to_pylist()) == set(first_file)
    assert sum(pq.read_table(layers / n).num_rows for n in names) == candidates.num_rows
    assert not [p for p in tmp_path.iterdir() if ".tmp-" in p.name]


def test_folder_outputs_are_refused_before_any_work(
    varying_model_path: Path, candidates: pa.Table, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = _folder(candidates, tmp_path / "in")
    full = tmp_path / "full"
    full.mkdir()
    (full / "keep.txt").write_text("mine")
    cases: list[tuple[list[str], str]] = [
        (["--out", str(full)], "the folder exists and is not empty"),
        (["--out", str(folder / "scores")], "lies in the input"),
        (["--out", str(folder / "scores.parquet")], "lies in the input"),
        (["--per-layer", str(tmp_path / "missing" / "x")], "does not exist"),
    ]
    for extra, message in cases:
        code, _, err = run(capsys, "score", str(folder), "--model", str(varying_model_path), *extra)
        assert code == 2 and message in err and len(err.strip().splitlines()) == 1, err
    assert (full / "keep.txt").read_text() == "mine"
    empty = tmp_path / "empty"
    empty.mkdir()
    code, _, err = run(capsys, "score", str(empty), "--model", str(varying_model_path))
    assert code == 2 and "holds no Parquet files" in err
    (folder / "notes.txt").write_text("arch,type\nx,relu\n")
    code, _, err = run(capsys, "score", str(folder), "--model", str(varying_model_path))
    assert code == 2 and f"{folder / 'notes.txt'}: not a Parquet file" in err, err


def test_a_failure_midway_leaves_no_output(
    varying_model_path: Path, candidates: pa.Table, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A bad row in the last file of a folder: exit 2 naming that file and row; no output file or folder, no
    temporary left, though per-layer rows of the earlier files had been written."""
    folder = _folder(candidates, tmp_path / "in")
    last = folder / "family=b" / "part-0.parquet"
    t = pq.read_table(last)
    kernel = t.column("kernel").to_pylist()
    i = next(k for k, v in enumerate(kernel) if v is not None and k > 50)
    kernel[i] = 0
    pq.write_table(t.set_column(t.column_names.index("kernel"), "kernel", pa.array(kernel, pa.int64())), last)
    for out, layers in ((tmp_path / "s.csv", tmp_path / "l.csv"), (tmp_path / "sd", tmp_path / "ld")):
        code, _, err = run(capsys, "score", str(folder), "--model", str(varying_model_path), "--out", str(out),
                           "--per-layer", str(layers))
        assert code == 2 and f"{last}, row {i + 2}" in err and "kernel" in err, err
        assert not out.exists() and not layers.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in"]


def test_the_table_writer(tmp_path: Path) -> None:
    parts = [pa.table({"a": [1, 2], "b": ["x", "y"]}), pa.table({"a": [3], "b": ["z,w"]})]
    for name in ("t.csv", "t.csv.gz", "t.parquet"):
        with stream.TableWriter(str(tmp_path / name)) as w:
            for p in parts:
                w.write(p)
        got = read_any(tmp_path / name) if not name.endswith(".gz") else pacsv.read_csv(tmp_path / name)
        assert got.column("a").to_pylist() == [1, 2, 3] and got.column("b").to_pylist() == ["x", "y", "z,w"]
    with pytest.raises(RuntimeError), stream.TableWriter(str(tmp_path / "u.csv")) as w:
        w.write(parts[0])
        raise RuntimeError("midway")
    assert not (tmp_path / "u.csv").exists()
    assert not [p for p in os.listdir(tmp_path) if ".tmp-" in p]




@pytest.mark.parametrize("fmt", ["table", "csv", "json"])
def test_describe_streams(
    fmt: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`describe` of a table read in many blocks, its architecture's rows interleaved with another's and its
    parts read again (too many to keep), prints what it prints from one block."""
    from neuralpower import describe, zoo
    from neuralpower.table import to_arrow

    a, b = zoo.build("mobilenet_v2"), zoo.build("resnet18")
    table = to_arrow([a, b])
    names = table.column("layer").to_pylist()
    names[3], names[4], names[7] = 'odd,"name"', "ünï\tcode", None
    table = table.set_column(1, "layer", pa.array(names)).append_column("family", pa.array(["f"] * table.num_rows))
    n = table.num_rows
    # the two architectures' rows interleaved, nine at a time, each in its own order
    chunks_a = [np.arange(i, min(i + 9, len(a))) for i in range(0, len(a), 9)]
    chunks_b = [np.arange(i, min(i + 9, n)) for i in range(len(a), n, 9)]
    order = np.concatenate([c for pair in itertools.zip_longest(chunks_b, chunks_a) for c in pair if c is not None])
    path = tmp_path / "t.csv"
    pacsv.write_csv(table.take(pa.array(order)), path)
    outs = []
    for block, keep in ((1 << 30, 10**9), (1 << 11, 50)):
        monkeypatch.setattr(stream, "BLOCK_BYTES", block)
        monkeypatch.setattr(describe, "_KEEP_ROWS", keep)
        code, out, err = run(capsys, "describe", str(path), "--arch", "mobilenet_v2", "--format", fmt)
        assert code == 0, err
        outs.append(out)
    assert outs[0] == outs[1]
    # the same table in Parquet (names read as its dictionaries), in blocks of 40 rows; and both with another
    # batch and dtype
    pq_path = tmp_path / "t.parquet"
    pq.write_table(table.take(pa.array(order)), pq_path, row_group_size=100)
    monkeypatch.setattr(stream, "BLOCK_ROWS", 40)
    code, out, err = run(capsys, "describe", str(pq_path), "--arch", "mobilenet_v2", "--format", fmt)
    assert code == 0, err
    assert out == outs[0]
    changed = []
    for source in (path, pq_path):
        code, out, err = run(capsys, "describe", str(source), "--arch", "mobilenet_v2", "--format", fmt,
                             "--batch", "3", "--dtype", "fp16")
        assert code == 0, err
        changed.append(out)
    assert changed[0] == changed[1] != outs[0]
    if fmt == "json":
        assert json.loads(changed[0])["batch"] == 3 and json.loads(changed[0])["dtype"] == "fp16"
        doc = json.loads(outs[0])
        assert doc["layers"] == len(a) and doc["meta"] == {"family": "f"}
        assert [r["layer"] for r in doc["per_layer"]][:3] == [layer.name for layer in a.layers[:3]]


def test_describe_refuses_a_batch_that_changes_in_a_later_block(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from neuralpower import zoo

    arch = zoo.build("resnet50")
    path = tmp_path / "t.csv"
    npw.write_architectures(arch, path)
    lines = path.read_text().splitlines()
    header = lines[0].split(",")
    k = header.index("batch")
    cells = lines[-2].split(",")
    cells[k] = "8"
    lines[-2] = ",".join(cells)
    path.write_text("\n".join(lines) + "\n")
    monkeypatch.setattr(stream, "BLOCK_BYTES", 1 << 11)
    code, _, err = run(capsys, "describe", str(path))
    assert code == 2 and f"row {len(lines) - 1}, column batch: 8 differs from 1 on row 2" in err, err


def _blocks_equal(a: list[Any], b: list[Any]) -> None:
    assert np.array_equal(np.concatenate([x.rows for x in a]), np.concatenate([x.rows for x in b]))
    assert [n for x in a for n in x.arch] == [n for x in b for n in x.arch]
    assert [n for x in a for n in x.layer] == [n for x in b for n in x.layer]


def _spy_on_the_fast_reader(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """What each call of the fast CSV reader returned (None where it did not apply), in a list it fills."""
    results: list[Any] = []
    real = stream._parse_fast

    def spy(*args: Any) -> Any:
        results.append(real(*args))
        return results[-1]

    monkeypatch.setattr(stream, "_parse_fast", spy)
    return results


@pytest.mark.parametrize(
    ("body", "fast_reads_it"),
    [
        # plain, CRLF line ends, blank lines, no newline at the end
        ('n1,c1,conv2d,1,fp32,3,8,8,3,1\nn1,r,relu,1,fp32,3,8,8,,\n', True),
        ('n1,c1,conv2d,1,fp32,3,8,8,3,1\r\nn1,r,relu,1,,3,8,8,,\r\n\r\nn2,,relu,2,FP32,4,4,4,,', True),
        # quoted names: doubled quotes, commas, newlines; an empty quoted name; spaces around a type name
        ('"n,1","c ""1""",conv2d,1,fp32,3,8,8,3,1\n"n,1","a\nb"," ReLU ",1,fp32,3,8,8,,\n"n2","",relu,1,fp32,3,8,8,,\n',
         True),
        # cells the fast reader leaves to the general one: a float, a quoted number, a stray quote
        ('n1,c1,conv2d,1,fp32,3.0,8,8,3,1\n', False),
        ('n1,c1,conv2d,1,fp32,"3",8,8,3,1\n', False),
        ('n1,c"1,conv2d,1,fp32,3,8,8,3,1\n', False),
    ],
)
def test_the_fast_csv_reader_reads_what_the_general_one_reads(
    body: str, fast_reads_it: bool, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    results = _spy_on_the_fast_reader(monkeypatch)
    path = tmp_path / "t.csv"
    path.write_bytes(b"arch,layer,type,batch,dtype,in_channels,in_h,in_w,out_channels,kernel\n" + body.encode())
    fast = list(stream.read_blocks(path, {"error"}))  # the fast reader where it applies
    assert (results[0] is not None) == fast_reads_it
    general = list(stream.read_blocks(path))  # every column kept: the general reader
    _blocks_equal(fast, general)
    whole = read_layer_table(path)
    _blocks_equal(fast, [whole])


def test_the_fast_csv_reader_reads_kv_dtype_names(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    results = _spy_on_the_fast_reader(monkeypatch)
    path = tmp_path / "t.csv"
    path.write_text("arch,type,dtype,heads,kv_heads,tokens,head_dim,window,kv_dtype,in_channels\n"
                    "n,attention,bf16,8,2,16,64,4,fp8,\nn,attention,bf16,8,,16,64,,,\nn,relu,BF16,,,,,,,3\n"
                    "n,attention,bf16,8,8,16,64,0, FP8 ,\n")
    fast = list(stream.read_blocks(path, {"error"}))
    assert results[0] is not None  # names of both dtype fields, read by the fast reader itself
    _blocks_equal(fast, [read_layer_table(path)])
    kv = FIELDS.index("kv_dtype")
    assert [DTYPES[c] for c in fast[0].rows[:, kv][[0, 1, 3]]] == ["fp8", "bf16", "fp8"]
    assert fast[0].rows[2, kv] == 0  # relu has no K and V


@pytest.mark.parametrize(
    ("cell", "message"),
    [("-3", "-3 must be at least 1"), ("x", "'x' is not an integer"), ("99999999999999999999", "out of range")],
)
def test_the_fast_csv_reader_leaves_errors_to_the_general_one(cell: str, message: str, tmp_path: Path) -> None:
    path = tmp_path / "t.csv"
    rows = [f"n{i},c{i},conv2d,1,fp32,3,8,8,3,1" for i in range(50)]
    rows[37] = f"n37,c37,conv2d,1,fp32,{cell},8,8,3,1"
    path.write_text("arch,layer,type,batch,dtype,in_channels,in_h,in_w,out_channels,kernel\n" + "\n".join(rows))
    with pytest.raises(InputError) as err:
        list(stream.read_blocks(path, {"error"}))
    assert (err.value.row, err.value.column) == (39, "in_channels") and message in str(err.value)
