"""import-aiconfigurator: NVIDIA aiconfigurator's kernel tables as measurement tables fit reads."""

from __future__ import annotations

import csv
import hashlib
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from neuralpower.aiconfigurator import import_aiconfigurator, loop, read_aiconfigurator
from neuralpower.cli import main
from neuralpower.errors import InputError
from neuralpower.layers import Layer

ATTENTION = ["framework", "version", "device", "op_name", "kernel_source", "batch_size", "isl", "num_heads",
             "num_key_value_heads", "head_dim", "beam_width", "attn_dtype", "kv_cache_dtype", "step", "window_size",
             "latency", "power", "power_limit"]


def _write(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows), path)
    return path


def _gemm(m: int, n: int, k: int, dtype: str = "bfloat16", latency: float = 0.5, power: float | None = 400.0,
          device: str = "NVIDIA H200") -> dict[str, Any]:
    row: dict[str, Any] = {"framework": "VLLM", "version": "0.22.0", "device": device, "op_name": "gemm",
                           "kernel_source": "vllm_default", "gemm_dtype": dtype, "m": m, "n": n, "k": k,
                           "latency": latency}
    if power is not None:
        row.update(power=power, power_limit=700.0)
    return row


def _attention(op: str, **changes: Any) -> dict[str, Any]:
    row: dict[str, Any] = {"framework": "VLLM", "version": "0.22.0", "device": "NVIDIA H200", "op_name": op,
                           "kernel_source": "vllm_flash_attn", "batch_size": 2, "isl": 128, "num_heads": 32,
                           "num_key_value_heads": 8, "head_dim": 128, "beam_width": 1, "attn_dtype": "bfloat16",
                           "kv_cache_dtype": "fp8", "step": 0, "window_size": 0, "latency": 0.2, "power": 350.0,
                           "power_limit": 700.0}
    row.update(changes)
    if op == "encoder_attention":
        for key in ("num_key_value_heads", "beam_width", "kv_cache_dtype", "step", "window_size"):
            row.pop(key)
    return row


@pytest.fixture
def source(tmp_path: Path) -> Path:
    root = tmp_path / "aic"
    _write(root / "h200" / "gemm.parquet", [_gemm(16, 4096, 1024), _gemm(1, 4096, 4096, latency=0.004),
                                            _gemm(4096, 4096, 4096, "fp8_block", latency=1.2, power=690.0)])
    _write(root / "h200" / "context_attention.parquet", [_attention("context_attention"),
                                                         _attention("context_attention", window_size=64)])
    _write(root / "h200" / "generation_attention.parquet", [_attention("generation_attention", isl=1, step=1023)])
    _write(root / "h200" / "encoder_attention.parquet", [_attention("encoder_attention", isl=197, num_heads=12,
                                                                    head_dim=64)])
    _write(root / "h100" / "gemm.parquet", [_gemm(8, 1024, 1024, "fp8", power=None, device="NVIDIA H100 80GB HBM3"),
                                            _gemm(8, 1024, 1024, power=None, device="NVIDIA H100 80GB HBM3")])
    return root


def test_each_kind_is_its_layer(source: Path) -> None:
    op, gemm = read_aiconfigurator(source / "h200" / "gemm.parquet")
    assert op == "gemm"
    first = gemm.slice(0, 1).to_pylist()[0]
    assert (first["type"], first["tokens"], first["in_features"], first["out_features"], first["bias"]) == (
        "linear", 16, 1024, 4096, 0)
    assert first["arch"] == "gemm:0" and first["gpu"] == "NVIDIA H200" and first["power_w"] == 400.0
    assert gemm.column("dtype").to_pylist() == ["bf16", "bf16", "fp8"]
    layer = Layer("linear", tokens=16, in_features=1024, out_features=4096, bias=0, dtype="bf16")
    assert layer.features()["flops"] == 2 * 16 * 1024 * 4096  # flops of C[m, n] = A[m, k] B[k, n]

    _, prefill = read_aiconfigurator(source / "h200" / "context_attention.parquet")
    p = prefill.to_pylist()
    assert (p[0]["tokens"], p[0]["kv_tokens"], p[0]["causal"], p[0]["heads"], p[0]["kv_heads"]) == (128, 128, 1, 32, 8)
    assert p[0]["kv_dtype"] == "fp8" and p[0]["dtype"] == "bf16" and p[1]["window"] == 64
    _, decode = read_aiconfigurator(source / "h200" / "generation_attention.parquet")
    d = decode.to_pylist()[0]
    assert (d["tokens"], d["kv_tokens"], d["causal"]) == (1, 1024, 0)  # one query over isl + step cached tokens
    _, encoder = read_aiconfigurator(source / "h200" / "encoder_attention.parquet")
    e = encoder.to_pylist()[0]
    assert (e["tokens"], e["kv_tokens"], e["causal"], e["kv_heads"], e["heads"]) == (197, 197, 0, 12, 12)


def test_the_loop_rule_and_short_windows(source: Path) -> None:
    calls, seconds = loop(np.array([0.004, 0.05, 0.2, 2.0]))
    assert calls.tolist() == [3000, 3000, 3000, 500]
    assert seconds.tolist() == pytest.approx([0.012, 0.15, 0.6, 1.0])
    _, gemm = read_aiconfigurator(source / "h200" / "gemm.parquet")
    assert gemm.column("flags").to_pylist() == ["", "short_window", ""]
    assert gemm.column("power_samples").to_pylist() == [10, 0, 10]


def test_tables_per_gpu_and_dtype(source: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    before = {p: hashlib.md5(p.read_bytes()).hexdigest() for p in source.rglob("*.parquet")}
    out = tmp_path / "tables"
    assert main(["import-aiconfigurator", str(source), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    names = sorted(p.name for p in out.iterdir())
    assert names == ["nvidia_h100_80gb_hbm3-bf16.csv", "nvidia_h100_80gb_hbm3-fp8-per-tensor.csv",
                     "nvidia_h200-bf16.csv", "nvidia_h200-fp8.csv"]
    assert "1 with power measured over less than one NVML update" in printed
    with open(out / "nvidia_h200-bf16.csv", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    assert [r["origin"] for r in rows].count("aiconfigurator:context_attention") == 2 and len(rows) == 6
    with open(out / "nvidia_h100_80gb_hbm3-bf16.csv", encoding="utf-8") as f:
        h100 = list(csv.DictReader(f))
    assert "power_w" not in h100[0] and h100[0]["gpu"] == "NVIDIA H100 80GB HBM3"  # latency only
    assert before == {p: hashlib.md5(p.read_bytes()).hexdigest() for p in source.rglob("*.parquet")}
    # the tables are what fit reads
    assert main(["fit", str(out / "nvidia_h200-bf16.csv"), "--out", str(tmp_path / "m.json")]) == 0
    # a second import into the same folder is refused, nothing overwritten
    assert main(["import-aiconfigurator", str(source), "--out", str(out)]) == 2
    assert "--out" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("rows", "message"),
    [
        ([_gemm(0, 4, 4)], "row 2, column m: 0 is not a whole number from 1"),
        ([_gemm(4, 4, 4), _gemm(4, 4, 4, latency=-1.0)], "row 3, column latency"),
        ([_gemm(4, 4, 4, dtype="int4")], "unknown dtype 'int4'"),
        ([_gemm(4, 4, 4, power=float("nan"))], "column power"),
        ([{**_gemm(4, 4, 4), "op_name": "moe"}], "unknown op_name 'moe'"),
        ([{k: v for k, v in _gemm(4, 4, 4).items() if k != "k"}], "missing column 'k'"),
        ([_attention("context_attention", num_key_value_heads=5)], "kv_heads"),
        ([_attention("context_attention", beam_width=4)], "beam width 4"),
        ([_attention("context_attention", step=3)], "step 3 in a prefill row"),
    ],
)
def test_bad_cells_name_file_row_and_column(tmp_path: Path, rows: list[dict[str, Any]], message: str) -> None:
    path = _write(tmp_path / "x.parquet", rows)
    with pytest.raises(InputError) as e:
        read_aiconfigurator(path)
    text = str(e.value)
    assert message in text and "x.parquet" in text and "\n" not in text


def test_files_that_are_not_tables(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "junk.parquet").write_bytes(b"not parquet at all")
    assert main(["import-aiconfigurator", str(tmp_path / "junk.parquet"), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "not a readable Parquet file" in err and len(err.strip().splitlines()) == 1
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match=r"no \.parquet files"):
        import_aiconfigurator([tmp_path / "empty"])
    assert not (tmp_path / "o").exists()
