"""Layer tables: lossless CSV and Parquet round trips, and one-line errors for every kind of bad input."""

from __future__ import annotations

import csv
import io
import random
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from neuralpower import Architecture, InputError, Layer, read_architectures, read_layer_table, write_architectures
from neuralpower.layers import DTYPES, LAYER_TYPES

GOOD = """arch,layer,type,in_channels,in_h,in_w,out_channels,kernel,stride,padding,groups,in_features,out_features,error
net1,conv1,conv2d,3,32,32,16,3,1,1,,,,0.3
net1,relu1,relu,16,32,32,,,,,,,,0.3
net1,pool,maxpool2d,16,32,32,,2,,,,,,0.3
net1,dw,conv2d,16,16,16,16,3,1,1,16,,,0.3
net1,fl,flatten,16,16,16,,,,,,,,0.3
net1,fc,linear,,,,,,,,,4096,10,0.3
net2,conv1,conv2d,3,32,32,17,3,1,1,,,,0.2
"""


def write(tmp_path: Path, text: str, name: str = "t.csv") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def small_arch(name: str = "tiny", batch: int = 2, **meta: object) -> Architecture:
    from neuralpower.zoo.builder import Builder, T

    b = Builder(batch=batch)
    x = b.conv(T(3, 32, 32), 16, 3, 1, 1, name="c1")
    x = b.act(b.bn(x), "relu")
    y = b.conv(x, 16, (1, 3), 1, (0, 1))
    z = b.linear(b.flatten(b.adaptive_avgpool(b.add(x, y))), 10)
    del z
    return b.build(name, **meta)


def test_read_good_table(tmp_path: Path) -> None:
    archs = read_architectures(write(tmp_path, GOOD))
    assert [a.name for a in archs] == ["net1", "net2"]
    net1 = archs[0]
    assert [layer.name for layer in net1] == ["conv1", "relu1", "pool", "dw", "fl", "fc"]
    assert net1.meta == {"error": 0.3}
    assert net1[2].stride == (2, 2)  # pooling stride defaults to the kernel
    assert net1[3].groups == 16 and net1[0].bias == 1
    assert net1[5].in_features == 4096


SERVING = """arch,layer,type,dtype,heads,kv_heads,tokens,kv_tokens,head_dim,causal,window,kv_dtype,in_channels
llm,qk,attention,fp8,32,8,128,,128,1,4096,,
llm,cache,attention,fp8,32,8,1,4096,128,0,,FP8 ,
llm,mixed,attention,fp8,32,,1,4096,128,0,0,bf16,
llm,act,relu,fp8,,,,,,,,,64
"""


def test_fp8_and_kv_dtype_cells(tmp_path: Path) -> None:
    path = write(tmp_path, SERVING)
    (arch,) = read_architectures(path)
    qk, cache, mixed, act = arch
    assert arch.dtype == "fp8" and all(layer.dtype == "fp8" for layer in arch)
    assert (qk.kv_heads, qk.window, qk.kv_dtype, qk.kv_tokens) == (8, 4096, "fp8", 128)  # empty: the defaults
    assert (cache.kv_dtype, cache.window, mixed.kv_dtype, mixed.kv_heads) == ("fp8", 0, "bf16", 32)
    assert act.kv_dtype is None and act.bytes_input == 64
    assert mixed.bytes_input == 32 * 128 * 1 + 2 * 32 * 4096 * 128 * 2  # Q in fp8, K and V in bf16
    assert read_layer_table(path).rows.tolist() == [list(layer.row) for layer in arch]
    for suffix in ("csv", "parquet"):
        out = tmp_path / f"copy.{suffix}"
        write_architectures([arch], out)
        assert read_architectures(out) == [arch]
    copy = (tmp_path / "copy.csv").read_text().splitlines()
    assert copy[0].split(",")[:6] == ["arch", "layer", "type", "batch", "dtype", "kv_dtype"]
    assert [line.split(",")[5] for line in copy[1:]] == ['"fp8"', '"fp8"', '"bf16"', ""]  # empty: no K and V
    # a Parquet file of dictionary-encoded names (as pandas' categoricals are written)
    table = pq.read_table(tmp_path / "copy.parquet")
    names = table.column("kv_dtype").combine_chunks().dictionary_encode()
    pq.write_table(table.set_column(table.schema.get_field_index("kv_dtype"), "kv_dtype", names),
                   tmp_path / "dict.parquet")
    assert read_architectures(tmp_path / "dict.parquet") == [arch]


def test_a_bad_kv_dtype_cell_names_its_row_and_column(tmp_path: Path) -> None:
    path = write(tmp_path, SERVING.replace("FP8 ", "int4"))
    with pytest.raises(InputError, match="unknown dtype 'int4'") as err:
        read_architectures(path)
    assert (err.value.row, err.value.column) == (3, "kv_dtype")
    path = write(tmp_path, SERVING.replace(",32,8,1,4096", ",32,3,1,4096"))
    with pytest.raises(InputError, match="kv_heads 3 does not divide heads 32") as err:
        read_architectures(path)
    assert (err.value.row, err.value.column) == (3, "kv_heads")


@pytest.mark.parametrize("suffix", ["csv", "parquet"])
def test_round_trip_is_lossless(tmp_path: Path, suffix: str) -> None:
    a = small_arch(error=0.25, source="mine")
    b = Architecture(
        "tiny4", a.with_batch(4).layers, {"error": 1 / 3}, {"runtime_ms": [0.1 * i for i in range(len(a))]}
    )
    c = small_arch("half").with_dtype("fp16")
    path = tmp_path / f"t.{suffix}"
    write_architectures([a, b, c], path)
    back = read_architectures(path)
    assert back == [a, b, c]
    assert back[1].layer_data["runtime_ms"][3] == 0.1 * 3
    # writing what was read gives the same file content
    again = tmp_path / f"again.{suffix}"
    write_architectures(back, again)
    assert read_architectures(again) == back
    if suffix == "csv":
        assert again.read_text() == path.read_text()


def test_written_csv_is_readable(tmp_path: Path) -> None:
    path = tmp_path / "t.csv"
    write_architectures(small_arch(), path)
    header = path.read_text().splitlines()[0].split(",")
    assert header[:5] == ["arch", "layer", "type", "batch", "dtype"]
    assert "kernel_h" in header and "kernel" not in header  # a 1x3 kernel needs per-axis columns
    assert "stride" in header and "stride_h" not in header
    rows = list(csv.DictReader(io.StringIO(path.read_text())))
    assert rows[0]["kernel_h"] == "3" and rows[2]["kernel_h"] == "" and rows[-1]["in_features"] == "16"


def test_parquet_with_native_integer_types(tmp_path: Path) -> None:
    table = pa.table(
        {
            "type": ["conv2d", "relu"],
            "in_channels": pa.array([3, 8], pa.int32()),
            "in_h": pa.array([10, 8], pa.int16()),
            "in_w": pa.array([10.0, 8.0]),
            "out_channels": pa.array([8, None], pa.int64()),
            "kernel": [3, None],
        }
    )
    path = tmp_path / "t.parquet"
    pq.write_table(table, path)
    (arch,) = read_architectures(path)
    assert arch.name == "t" and arch[0].out_shape == (1, 8, 8, 8)


def test_rows_are_counted_like_a_spreadsheet(tmp_path: Path) -> None:
    text = GOOD.replace("net1,pool,", "\nnet1,pool,").replace(
        "net1,dw,conv2d,16,16,16,16,3,1,1,16", "net1,dw,conv2d,16,16,16,16,3,1,1,3"
    )
    with pytest.raises(InputError) as info:
        read_architectures(write(tmp_path, text))
    # header is row 1, conv1 row 2, relu1 row 3, blank row 4, pool row 5, dw row 6
    assert info.value.row == 6 and info.value.column == "groups"
    quoted = 'arch,layer,type,in_channels\nn,"two\nlines",relu,4\nn,x,relu,-4\n'
    with pytest.raises(InputError) as info:
        read_architectures(write(tmp_path, quoted, "q.csv"))
    assert info.value.row == 3 and info.value.column == "in_channels"


BAD_CASES = [
    ("unknown type", GOOD.replace("maxpool2d", "maxpool3d"), 4, "type", "unknown layer type 'maxpool3d'"),
    ("negative size", GOOD.replace("net1,relu1,relu,16,32", "net1,relu1,relu,16,-32"), 3, "in_h", "must be at least 1"),
    (
        "non-integer",
        GOOD.replace("net1,conv1,conv2d,3,32", "net1,conv1,conv2d,3.5,32"),
        2,
        "in_channels",
        "'3.5' is not an integer",
    ),
    (
        "text in a size",
        GOOD.replace("net2,conv1,conv2d,3,32,32,17", "net2,conv1,conv2d,3,32,32,many"),
        8,
        "out_channels",
        "not an integer",
    ),
    (
        "kernel too large",
        GOOD.replace("net2,conv1,conv2d,3,32,32,17,3", "net2,conv1,conv2d,3,32,32,17,99"),
        8,
        "kernel",
        "larger than the padded input",
    ),
    ("groups", GOOD.replace(",16,,,0.3\nnet1,fl", ",5,,,0.3\nnet1,fl"), 5, "groups", "does not divide"),
    ("empty type", GOOD.replace("net1,relu1,relu", "net1,relu1,"), 3, "type", "empty"),
    (
        "empty required",
        GOOD.replace("net1,fc,linear,,,,,,,,,4096", "net1,fc,linear,,,,,,,,,"),
        7,
        "in_features",
        "is required for linear",
    ),
    ("empty arch", GOOD.replace("net1,relu1", ",relu1"), 3, "arch", "empty"),
    (
        "batch differs",
        GOOD.replace("arch,layer,type,", "arch,layer,batch,type,")
        .replace("net1,relu1,", "net1,relu1,2,")
        .replace("1,fl,", "1,fl,,")
        .replace("1,pool,", "1,pool,,")
        .replace("1,dw,", "1,dw,,")
        .replace("1,fc,", "1,fc,,")
        .replace("1,conv1,", "1,conv1,,")
        .replace("2,conv1,", "2,conv1,,"),
        3,
        "batch",
        "an architecture has one batch",
    ),
    (
        "bad dtype",
        GOOD.replace("arch,layer,", "dtype,arch,layer,").replace("net", ",net").replace(",net1,pool", "int8,net1,pool"),
        4,
        "dtype",
        "unknown dtype 'int8'",
    ),
    (
        "fields count",
        GOOD.replace("net1,fl,flatten,16,16,16,", "net1,fl,flatten,16,16,16,,,"),
        6,
        None,
        "has 16 fields, the header has 14",
    ),
]


@pytest.mark.parametrize(("label", "text", "row", "column", "fragment"), BAD_CASES, ids=[c[0] for c in BAD_CASES])
def test_bad_rows(tmp_path: Path, label: str, text: str, row: int, column: str | None, fragment: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(InputError) as info:
        read_architectures(path)
    e = info.value
    assert (e.row, e.column) == (row, column), str(e)
    assert fragment in e.message
    assert str(e).startswith(f"{path}, row {row}")
    assert "\n" not in str(e)


@pytest.mark.parametrize(
    ("content", "fragment"),
    [
        (b"", "the file is empty"),
        (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" * 20, "binary data"),
        (b"arch,type,in_channels\n", "no rows"),
        (b"arch,kind\nx,relu\n", "missing required column 'type'"),
        (b"arch,type,in_channels,in_h\nx,conv2d,3,4\n", "missing required column 'in_w'"),
        (b"type,in_channels,in_channels\nrelu,3,3\n", "appears twice"),
        (b"type,in_channels\nrelu,\xff\xfe\n", "UTF-8"),
    ],
)
def test_bad_files(tmp_path: Path, content: bytes, fragment: str) -> None:
    path = tmp_path / "bad.csv"
    path.write_bytes(content)
    with pytest.raises(InputError, match=fragment) as info:
        read_architectures(path)
    assert str(path) in str(info.value)


def test_missing_file_directory_and_corrupt_parquet(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="cannot read the file"):
        read_architectures(tmp_path / "nope.csv")
    with pytest.raises(InputError, match="directory"):
        read_architectures(tmp_path)
    good = tmp_path / "g.parquet"
    write_architectures(small_arch(), good)
    data = good.read_bytes()
    corrupt = tmp_path / "c.parquet"
    corrupt.write_bytes(data[: len(data) // 2])
    with pytest.raises(InputError, match="not a valid Parquet file"):
        read_architectures(corrupt)


def test_layer_table_keeps_lines_and_extras(tmp_path: Path) -> None:
    table = read_layer_table(write(tmp_path, GOOD))
    assert len(table) == 7 and table.line.tolist() == [2, 3, 4, 5, 6, 7, 8]
    assert table.extra.column_names == ["error"]


# -- property tests: random valid tables round-trip; corrupted ones load or fail with one InputError --


def _layer_fields(kind: str, batch: int, dtype: str, pick: Any) -> dict[str, Any]:
    """Fields of a small layer of ``kind``; ``pick(lo, hi)`` chooses each integer."""
    fields: dict[str, Any] = dict(batch=batch, dtype=dtype, in_channels=pick(1, 64), in_h=pick(1, 32),
                                  in_w=pick(1, 32))
    if kind == "conv2d":
        fields |= dict(
            out_channels=pick(1, 64), kernel=(pick(1, 3), pick(1, 3)), stride=pick(1, 3), padding=pick(0, 2),
            bias=pick(0, 1),
        )
    elif kind == "linear":
        fields = dict(batch=batch, dtype=dtype, in_features=fields["in_channels"], out_features=pick(1, 100))
    elif kind in ("maxpool2d", "avgpool2d"):
        fields |= dict(kernel=pick(1, 3), ceil_mode=pick(0, 1))
    elif kind == "adaptive_avgpool2d":
        fields |= dict(out_h=pick(1, 8), out_w=pick(1, 8))
    elif kind in ("add", "mul", "concat"):
        fields |= dict(inputs=pick(2, 4))
    elif kind == "attention":  # grouped-query, windowed, K and V in any dtype
        kv_heads = pick(1, 4)
        fields = dict(batch=batch, dtype=dtype, heads=kv_heads * pick(1, 4), kv_heads=kv_heads, tokens=pick(1, 64),
                      kv_tokens=pick(1, 64), head_dim=pick(1, 64), causal=pick(0, 1), window=pick(0, 70),
                      kv_dtype=DTYPES[pick(0, len(DTYPES) - 1)])
    return fields


def _buildable(kind: str) -> bool:
    try:
        Layer(kind, **_layer_fields(kind, 1, "fp32", lambda lo, hi: max(lo, min(hi, 8))))
        return True
    except InputError:
        return False


# the types these fields make (the others, transformer types among them, need fields this strategy does not
# draw: sampling them would only be filtered out)
_BUILDABLE = [t for t in LAYER_TYPES if _buildable(t)]


@st.composite
def layers(draw: st.DrawFn, batch: int, dtype: str) -> Layer:
    kind = draw(st.sampled_from(_BUILDABLE))
    fields = _layer_fields(kind, batch, dtype, lambda lo, hi: draw(st.integers(lo, hi)))
    try:
        return Layer(kind, name=draw(st.text(st.characters(exclude_categories=("Cs", "Cc")), max_size=8)), **fields)
    except InputError:
        assume(False)
        raise


@st.composite
def architectures(draw: st.DrawFn) -> list[Architecture]:
    out = []
    for i in range(draw(st.integers(1, 3))):
        batch = draw(st.integers(1, 64))
        dtype = draw(st.sampled_from(DTYPES))
        items = draw(st.lists(layers(batch, dtype), min_size=1, max_size=6))
        meta = {"error": draw(st.floats(0, 1))} if draw(st.booleans()) else {}
        out.append(Architecture(f"a{i}", items, meta))
    return out


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(archs=architectures(), suffix=st.sampled_from(["csv", "parquet"]))
def test_random_tables_round_trip(tmp_path: Path, archs: list[Architecture], suffix: str) -> None:
    path = tmp_path / f"r.{suffix}"
    write_architectures(archs, path)
    back = read_architectures(path)
    # names are kept unless they were empty (then the architecture named them) or csv strips nothing
    assert back == archs


def corrupt(text: str, rng: random.Random) -> str:
    lines = text.splitlines()
    for _ in range(rng.randint(1, 3)):
        i = rng.randrange(len(lines))
        cells = lines[i].split(",")
        j = rng.randrange(len(cells))
        choice = rng.randrange(8)
        if choice == 0:
            cells[j] = str(rng.randint(-5, 5))
        elif choice == 1:
            cells[j] = rng.choice(["", "x", "1.5", "nan", "inf", "1e99", "-0", '"', "\x00", "3.0", " 7 "])
        elif choice == 2:
            del cells[j]
        elif choice == 3:
            cells.insert(j, "9")
        elif choice == 4:
            cells[j] = str(rng.randint(0, 2**63 - 1))
        elif choice == 5:
            lines.insert(i, "")
        elif choice == 6:
            cells[j] = rng.choice((*LAYER_TYPES, "conv", "RELU", "fp16", "bf16"))
        else:
            lines[i] = lines[i][: rng.randrange(len(lines[i]) + 1)]
            continue
        lines[i] = ",".join(cells)
    return "\n".join(lines) + "\n"


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(seed=st.integers(0, 2**32 - 1))
def test_corrupted_tables_load_or_fail_cleanly(tmp_path: Path, seed: int) -> None:
    rng = random.Random(seed)
    base = tmp_path / "base.csv"
    write_architectures([small_arch(error=0.5), small_arch("b", batch=3)], base)
    text = corrupt(base.read_text() if rng.random() < 0.7 else GOOD, rng)
    path = tmp_path / "c.csv"
    path.write_text(text)
    try:
        archs = read_architectures(path)
    except InputError as e:
        message = str(e)
        assert message.startswith(str(path)) and "\n" not in message
        return
    for a in archs:
        a.totals()


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.binary(max_size=300))
def test_random_bytes_load_or_fail_cleanly(tmp_path: Path, data: bytes) -> None:
    for name in ("x.csv", "x.parquet"):
        path = tmp_path / name
        path.write_bytes(data)
        try:
            read_architectures(path)
        except InputError as e:
            assert str(e).startswith(str(path)) and "\n" not in str(e)


@pytest.mark.parametrize("suffix", ["csv.gz", "csv.bz2", "csv.zst"])
def test_compressed_csv_round_trip(tmp_path: Path, suffix: str) -> None:
    archs = [small_arch(error=0.1), small_arch("b", batch=4)]
    path = tmp_path / f"t.{suffix}"
    write_architectures(archs, path)
    assert read_architectures(path) == archs


def test_corrupt_compressed_csv(tmp_path: Path) -> None:
    path = tmp_path / "t.csv.gz"
    path.write_bytes(b"not gzip at all")
    with pytest.raises(InputError, match="cannot decompress"):
        read_architectures(path)
    good = tmp_path / "g.csv.gz"
    write_architectures(small_arch(), good)
    truncated = tmp_path / "cut.csv.gz"
    truncated.write_bytes(good.read_bytes()[:-20])
    with pytest.raises(InputError) as info:
        read_architectures(truncated)
    assert str(truncated) in str(info.value) and "\n" not in str(info.value)
