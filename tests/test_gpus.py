"""The bundled table of GPU datasheet figures (neuralpower.gpus): lookups, figures against their sources, and
the one-line errors of a corrupt table."""

from __future__ import annotations

import dataclasses
import json
from importlib import resources
from pathlib import Path
from typing import Any

import pytest

from neuralpower.errors import InputError
from neuralpower.gpus import ARCHITECTURES, GPU, GPU_DTYPES, find_gpu, gpus, load_gpus, peak_tflops

BUNDLED = Path(str(resources.files("neuralpower") / "data" / "gpus.json"))

# What NVML / nvidia-smi call each GPU, and the key it must find.
NVML_NAMES = {
    "NVIDIA H200": "h200",
    "NVIDIA H100 80GB HBM3": "h100-sxm",
    "NVIDIA H100 PCIe": "h100-pcie",
    "NVIDIA B200": "b200",
    "NVIDIA A100-SXM4-40GB": "a100-40gb",
    "NVIDIA A100-SXM4-80GB": "a100-80gb",
    "NVIDIA A100-PCIE-40GB": "a100-pcie-40gb",
    "NVIDIA A100 80GB PCIe": "a100-pcie-80gb",
    "NVIDIA L4": "l4",
    "Tesla V100-SXM2-16GB": "v100",
    "Tesla V100-PCIE-32GB": "v100-pcie-32gb",
    "Tesla T4": "t4",
    "Tesla P100-PCIE-16GB": "p100",
    "Tesla P4": "p4",
}
# NeuSight's folder names (measured/<GPU>/ and gpus/<GPU>.json of its published data).
NEUSIGHT_NAMES = {
    "NVIDIA_A100-PCIE-40GB": "a100-pcie-40gb",
    "NVIDIA_A100-SXM4-40GB": "a100-40gb",
    "NVIDIA_A100_80GB_PCIe": "a100-pcie-80gb",
    "NVIDIA_H100_80GB_HBM3": "h100-sxm",
    "NVIDIA_L4": "l4",
    "Tesla_P100-PCIE-16GB": "p100",
    "Tesla_P4": "p4",
    "Tesla_T4": "t4",
    "Tesla_V100-PCIE-32GB": "v100-pcie-32gb",
}
ALIASES = {
    "h200": "h200",
    "h100": "h100-sxm",
    "h100-sxm": "h100-sxm",
    "h100-pcie": "h100-pcie",
    "b200": "b200",
    "a100-40gb": "a100-40gb",
    "a100-80gb": "a100-80gb",
    "a100-pcie-40gb": "a100-pcie-40gb",
    "l4": "l4",
    "v100": "v100",
    "t4": "t4",
    "p100": "p100",
    "p4": "p4",
}


def _table_doc() -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(BUNDLED.read_text(encoding="utf-8"))
    return doc


def _write(tmp_path: Path, doc: Any) -> Path:
    path = tmp_path / "gpus.json"
    path.write_text(json.dumps(doc), encoding="utf-8")
    return path


@pytest.mark.parametrize(("name", "key"), sorted({**ALIASES, **NVML_NAMES, **NEUSIGHT_NAMES}.items()))
def test_find_gpu_by_alias_nvml_and_neusight_name(name: str, key: str) -> None:
    assert find_gpu(name).key == key


@pytest.mark.parametrize("name", ["H100", " h100 sxm ", "H100_SXM", "nvidia-h100-80gb-hbm3", "A100-SXM4-40GB", "T4"])
def test_find_gpu_ignores_case_separators_and_vendor_prefix(name: str) -> None:
    assert find_gpu(name).key in ("h100-sxm", "a100-40gb", "t4")


def test_every_nvml_name_is_the_gpus_name() -> None:
    assert {find_gpu(n).name: n for n in NVML_NAMES} == {n: n for n in NVML_NAMES}


def test_unknown_gpu_is_one_line_listing_every_key() -> None:
    with pytest.raises(InputError) as caught:
        find_gpu("NVIDIA GeForce RTX 4090")
    message = str(caught.value)
    assert "\n" not in message
    assert "'NVIDIA GeForce RTX 4090'" in message
    for gpu in gpus():
        assert gpu.key in message


def test_table_order_is_stable_and_covers_the_brief() -> None:
    keys = [g.key for g in gpus()]
    assert keys == [g.key for g in load_gpus()]
    assert set(ALIASES.values()) <= set(keys)
    assert len(keys) == len(set(keys))
    assert keys[0] == "h200"


@pytest.mark.parametrize("gpu", gpus(), ids=lambda g: g.key)
def test_every_gpu_has_a_source_and_positive_figures(gpu: GPU) -> None:
    assert gpu.source.strip() and gpu.notes.strip()
    assert gpu.architecture in ARCHITECTURES
    major, minor = (int(p) for p in gpu.compute_capability.split("."))
    assert (major, minor) >= (6, 0)
    for field in dataclasses.fields(GPU):
        value = getattr(gpu, field.name)
        if isinstance(value, (int, float)):
            assert value > 0, field.name
    assert gpu.fp32_tflops == peak_tflops(gpu, "fp32")
    # tensor cores beat the FP32 pipes wherever they exist
    for dtype in ("fp16", "bf16", "fp8"):
        peak = peak_tflops(gpu, dtype)
        assert peak is None or peak > gpu.fp32_tflops
    assert gpu.idle_power_w is None  # no source used here publishes an idle power


def test_sparse_only_figures_are_halved_and_said_so() -> None:
    # NVIDIA's Hopper/Ada/Blackwell datasheets give tensor figures with sparsity only: the table holds half
    for key in ("h200", "h100-sxm", "h100-pcie", "b200", "l4"):
        assert "sparsity" in find_gpu(key).notes and "halved" in find_gpu(key).notes


def test_spot_values_against_the_sources() -> None:
    h100 = find_gpu("h100-sxm")  # H100 datasheet
    assert (h100.sms, h100.memory_bandwidth_gb_s, h100.power_limit_w, h100.l2_cache_mb) == (132, 3350, 700, 50)
    assert (peak_tflops(h100, "bf16"), peak_tflops(h100, "fp8")) == (989.5, 1979)
    h200 = find_gpu("h200")  # H200 datasheet
    assert (h200.memory_gb, h200.memory_bandwidth_gb_s, h200.power_limit_w) == (141, 4800, 700)
    pcie = find_gpu("h100-pcie")
    assert (pcie.sms, pcie.memory_bandwidth_gb_s, pcie.power_limit_w) == (114, 2000, 350)
    b200 = find_gpu("b200")  # HGX B200 datasheet: 4.5 PFLOPS FP16/BF16 and 9 PFLOPS FP8 with sparsity
    assert (peak_tflops(b200, "fp16"), peak_tflops(b200, "fp8"), b200.power_limit_w) == (2250, 4500, 1000)
    a100 = find_gpu("a100-40gb")  # A100 datasheet and whitepaper
    assert (a100.memory_bandwidth_gb_s, a100.sms, a100.boost_clock_mhz, a100.l2_cache_mb) == (1555, 108, 1410, 40)
    assert (peak_tflops(a100, "fp16"), peak_tflops(a100, "fp8")) == (312, None)
    assert find_gpu("a100-80gb").memory_bandwidth_gb_s == 2039
    assert find_gpu("a100-pcie-40gb").power_limit_w == 250
    assert (find_gpu("t4").power_limit_w, find_gpu("t4").memory_gb, peak_tflops(find_gpu("t4"), "fp16")) == (70, 16, 65)
    assert find_gpu("l4").power_limit_w == 72 and peak_tflops(find_gpu("l4"), "fp8") == 242.5
    assert (find_gpu("v100").fp32_tflops, peak_tflops(find_gpu("v100"), "bf16")) == (15.7, None)
    assert peak_tflops(find_gpu("p100"), "fp16") is None and find_gpu("p100").memory_bandwidth_gb_s == 732
    assert (find_gpu("p4").sms, find_gpu("p4").memory_bandwidth_gb_s) == (20, 192)


def test_clock_sms_and_fp32_agree_where_the_lanes_per_sm_are_known() -> None:
    # FP32 lanes per SM (the architecture whitepapers): a check on the clocks and SM counts taken from sources
    # other than the datasheet, which quotes the FP32 peak
    lanes = {"h200": 128, "h100-sxm": 128, "h100-pcie": 128, "b200": 128, "a100-40gb": 64, "l4": 128,
             "v100": 64, "v100-pcie-32gb": 64, "t4": 64, "p100": 64, "p4": 128}  # fmt: skip
    for key, per_sm in lanes.items():
        gpu = find_gpu(key)
        tflops = gpu.sms * per_sm * 2 * gpu.boost_clock_mhz / 1e6
        assert tflops == pytest.approx(gpu.fp32_tflops, rel=0.04), key


@pytest.mark.parametrize("dtype", ["FP16", "bf16", " fp8 "])
def test_peak_tflops_reads_the_tensor_figure(dtype: str) -> None:
    assert peak_tflops(find_gpu("h200"), dtype) in (989.5, 1979)


def test_peak_tflops_unknown_dtype_is_one_line() -> None:
    with pytest.raises(InputError, match=r"unknown dtype 'int8' .*fp32, fp16, bf16, fp8"):
        peak_tflops(find_gpu("t4"), "int8")
    assert GPU_DTYPES == ("fp32", "fp16", "bf16", "fp8")


def test_a_table_from_a_path_and_find_gpu_in_it(tmp_path: Path) -> None:
    doc = _table_doc()
    doc["gpus"] = [g for g in doc["gpus"] if g["key"] == "t4"]
    table = load_gpus(_write(tmp_path, doc))
    assert [g.key for g in table] == ["t4"]
    assert find_gpu("Tesla_T4", table) == find_gpu("t4")
    with pytest.raises(InputError, match=r"known: t4\)$"):
        find_gpu("h100", table)


def _entry_of(doc: dict[str, Any], key: str) -> dict[str, Any]:
    entry: dict[str, Any] = next(g for g in doc["gpus"] if g["key"] == key)
    return entry


def _set(key: str, field: str, value: Any) -> Any:
    def change(doc: dict[str, Any]) -> None:
        _entry_of(doc, key)[field] = value

    return change


def _drop(key: str, field: str) -> Any:
    def change(doc: dict[str, Any]) -> None:
        del _entry_of(doc, key)[field]

    return change


def _duplicate_key(doc: dict[str, Any]) -> None:
    _entry_of(doc, "p4")["key"] = "t4"


def _shared_alias(doc: dict[str, Any]) -> None:
    _entry_of(doc, "p4")["aliases"] = ["T4"]


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (_set("h200", "sms", -132), r"GPU entry 1 \('h200'\), field 'sms': must be a positive whole number, not -132"),
        (_set("h200", "sms", 13.2), r"field 'sms': must be a positive whole number, not 13\.2"),
        (_set("t4", "memory_gb", "16"), r"\('t4'\), field 'memory_gb': must be a positive number, not '16'"),
        (_set("t4", "power_limit_w", 0), r"field 'power_limit_w': must be a positive number, not 0"),
        (_set("t4", "power_limit_w", None), r"field 'power_limit_w': must be a positive number, not None"),
        (_set("t4", "fp8_tensor_tflops", -1), r"field 'fp8_tensor_tflops': must be a positive number or null"),
        (_set("t4", "fp32_tflops", True), r"field 'fp32_tflops': must be a positive number, not True"),
        (_set("t4", "architecture", "Kepler"), r"field 'architecture': must be one of Pascal, .*, not 'Kepler'"),
        (_set("t4", "compute_capability", 7.5), r"field 'compute_capability': must be a one-line text"),
        (_set("t4", "source", ""), r"\('t4'\), field 'source': must be a one-line text, not empty, not ''"),
        (_set("t4", "notes", "two\nlines"), r"field 'notes': must be a one-line text, not 'two\\nlines'"),
        (_set("t4", "aliases", "t4"), r"field 'aliases': must be a list of names"),
        (_set("t4", "key", "Tesla T4"), r"field 'key': must be lower case"),
        (_set("t4", "tdp", 70), r"\('t4'\), field 'tdp': not a known field"),
        (_drop("l4", "l2_cache_mb"), r"\('l4'\), field 'l2_cache_mb': missing$"),
        (_duplicate_key, r"field 'key': 't4' is also the key of GPU entry"),
        (_shared_alias, r"\('p4'\): its name or alias 't4' \(as looked up\) is also one of GPU entry \d+ \('t4'\)"),
    ],
)
def test_a_corrupt_table_is_one_line_naming_file_entry_and_field(tmp_path: Path, change: Any, expected: str) -> None:
    doc = _table_doc()
    change(doc)
    path = _write(tmp_path, doc)
    with pytest.raises(InputError, match=expected) as caught:
        load_gpus(path)
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith(f"{path}: GPU entry ")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('{"schema_version": 1, "gpus": [', r"not valid JSON \(Expecting value at line 1, column 32\)"),
        ('{"schema_version": 2, "gpus": []}', r"schema_version must be 1, not 2"),
        ('{"schema_version": 1, "gpus": []}', r"lists no GPUs"),
        ('{"schema_version": 1, "gpus": [7]}', r"GPU entry 1: must be a JSON object, not int"),
        ("[]", r"must be a JSON object with a list 'gpus'"),
    ],
)
def test_a_malformed_file_is_one_line(tmp_path: Path, text: str, expected: str) -> None:
    path = tmp_path / "gpus.json"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(InputError, match=expected) as caught:
        load_gpus(path)
    assert "\n" not in str(caught.value) and str(caught.value).startswith(f"{path}: ")


def test_a_missing_file_is_one_line(tmp_path: Path) -> None:
    with pytest.raises(InputError, match=r"cannot read the GPU table") as caught:
        load_gpus(tmp_path / "absent.json")
    assert str(tmp_path / "absent.json") in str(caught.value)


def test_the_table_ships_with_the_package() -> None:
    assert BUNDLED.is_file()
    assert load_gpus(BUNDLED) == gpus()
