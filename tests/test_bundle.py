"""Bundled GPU models: built from the data they name, each layer type saying where its numbers come from, power
kept between idle and the limit; picked by GPU (``--gpu``)."""

from __future__ import annotations

import copy
import csv
import hashlib
import io
import json
import math
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq
import pytest

import neuralpower as npw
from neuralpower import zoo
from neuralpower.cli import main
from neuralpower.errors import InputError
from neuralpower.evaluator import Model, bundled_models, model_for_gpu
from neuralpower.layers import FEATURES, LAYER_TYPES
from neuralpower.models.bundle import build_bundles
from neuralpower.models.format import validate_model
from neuralpower.models.predict import predict_layers

REPO = Path(__file__).resolve().parents[1]
DATA = REPO / "data"


def _small_data(root: Path) -> Path:
    """A data folder like the repository's, small enough to fit in seconds: a sample of the H200 bf16 GEMM and
    decode rows, and the H200 sweeps' relu, layernorm, conv2d, linear and attention rows."""
    rng = np.random.default_rng(0)
    out = root / "data"
    (out / "aiconfigurator" / "h200").mkdir(parents=True)
    for kind in ("gemm", "generation_attention"):
        table = pq.read_table(DATA / "aiconfigurator" / "h200" / f"{kind}.parquet")
        if kind == "gemm":
            table = table.filter(np.asarray([d == "bfloat16" for d in table.column("gemm_dtype").to_pylist()]))
        keep = np.sort(rng.choice(table.num_rows, 700, replace=False))
        pq.write_table(table.take(keep), out / "aiconfigurator" / "h200" / f"{kind}.parquet")
    (out / "h200").mkdir()
    shutil.copy(DATA / "h200" / "campaign.json", out / "h200" / "campaign.json")
    for dtype in ("fp16", "fp32"):
        (out / "h200" / f"torch-{dtype}").mkdir()
        with open(DATA / "h200" / f"torch-{dtype}" / "layers.csv", newline="") as f:
            rows = list(csv.DictReader(f))
        with open(out / "h200" / f"torch-{dtype}" / "layers.csv", "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=list(rows[0]))
            w.writeheader()
            w.writerows(r for r in rows if r["type"] in ("relu", "layernorm", "conv2d", "linear", "attention"))
    return out


@pytest.fixture(scope="module")
def small_bundle(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The command that refits the bundled models, on a small data folder."""
    root = tmp_path_factory.mktemp("bundle")
    data = _small_data(root)
    proc = subprocess.run([sys.executable, "-m", "neuralpower.models.bundle", "--data", str(data), "--out",
                           str(root / "models"), "--only", "h200-bf16", "--jobs", "2"], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert sorted(p.name for p in (root / "models").iterdir()) == ["SHA256SUMS", "h200-bf16.json"]
    digest = hashlib.sha256((root / "models" / "h200-bf16.json").read_bytes()).hexdigest()
    assert (root / "models" / "SHA256SUMS").read_text() == f"{digest}  h200-bf16.json\n"
    return dict(json.loads((root / "models" / "h200-bf16.json").read_text()))


def test_the_bundled_digests_are_those_of_the_shipped_files() -> None:
    """``SHA256SUMS`` beside the bundled models holds every one's digest (the bundle command writes it): a shipped
    model is loaded without being validated again only where its bytes are those the builder validated."""
    from neuralpower.evaluator import DIGESTS, _bundled_digests, _bundled_dir

    digests = _bundled_digests(str(_bundled_dir()))
    assert set(digests) == {p.name for p in bundled_models().values()}
    for path in bundled_models().values():
        assert hashlib.sha256(path.read_bytes()).hexdigest() == digests[path.name], f"{path.name}: refit {DIGESTS}"


def test_a_bundled_model_is_validated_unless_its_bytes_match_the_digest(tmp_path: Path,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    from neuralpower.models import format as fmt

    source = bundled_models()["t4-fp32"]
    raw = source.read_bytes()
    digest = hashlib.sha256(raw).hexdigest()
    seen: list[int] = []
    real = fmt.validate_model
    monkeypatch.setattr(fmt, "validate_model", lambda doc: (seen.append(1), real(doc))[1])
    assert fmt.read_model_file(source, digest=digest)["gpu"] == "Tesla T4" and not seen  # trusted: not validated
    assert fmt.read_model_file(source)["gpu"] == "Tesla T4" and seen == [1]  # no digest: validated
    doc = json.loads(raw)
    doc["layer_types"]["linear"]["runtime_ms"]["default"] = "nope"  # changed after the digest was taken
    changed = tmp_path / "t4-fp32.json"
    changed.write_text(json.dumps(doc))
    with pytest.raises(InputError, match=re.escape("not a valid model file: layer_types.linear.runtime_ms.default")):
        fmt.read_model_file(changed, digest=digest)


def test_the_bundle_command_refuses_bad_input_in_one_line(tmp_path: Path) -> None:
    for argv, words in ((["--data", str(tmp_path / "none")], "no such"), (["--only", "h900-bf16"], "unknown bundled")):
        proc = subprocess.run([sys.executable, "-m", "neuralpower.models.bundle", "--out", str(tmp_path / "m"), *argv],
                              capture_output=True, text=True)
        assert proc.returncode == 2 and words in proc.stderr, proc.stderr
        assert len(proc.stderr.strip().splitlines()) == 1 and "Traceback" not in proc.stderr
    with pytest.raises(InputError, match="unknown bundled model"):
        build_bundles(tmp_path, tmp_path / "m", only=["nope"])


def test_a_bundle_says_where_each_type_comes_from(small_bundle: dict[str, Any]) -> None:
    validate_model(small_bundle)
    assert small_bundle["gpu"] == "NVIDIA H200" and small_bundle["dtype"] == "bf16"
    assert set(small_bundle["layer_types"]) == {"linear", "attention", "relu", "layernorm", "conv2d"}
    model = Model(small_bundle, name="h200-bf16")
    for t in ("linear", "attention"):
        for target in ("runtime_ms", "power_w"):
            how, text = model.source(t, target)
            assert how == "measured" and "NVIDIA H200" in text and "aiconfigurator" in text
    for t in ("relu", "layernorm", "conv2d"):
        how, text = model.source(t, "runtime_ms")  # fp16 sweeps, as bf16; or the GEMM kernels of its GEMM
        assert how == "carried" and ("sweep" in text or "GEMM" in text), text
    for t in ("relu", "layernorm"):  # the sweeps' own power rows, or the decode kernels', whichever did better
        how, text = model.source(t, "power_w")
        assert how in ("measured", "carried") and "power rows" in text and "RMSPE" in text, text
    how, text = model.source("conv2d", "power_w")
    assert how == "carried" and "GEMM kernels' power" in text
    for t in ("linear", "attention"):  # GEMM and attention kernels launched alone: PyTorch eager's launch floor
        floor = small_bundle["layer_types"][t]["floor"]
        assert 0.005 < floor["ms"] < 0.2 and 100 < floor["power_w"] < 200
        assert "launched alone (PyTorch eager)" in model.source(t, "runtime_ms")[1]


def test_the_kernels_boosting_splits_on_their_thread_blocks(small_bundle: dict[str, Any]) -> None:
    """GEMM kernels' boosted trees see their output tiles, attention kernels' their thread blocks (the waves over the
    SMs their runtime steps with); in the small bundle and in the shipped H200 model."""
    for doc in (small_bundle, npw.load_model("h200-bf16").doc):
        for t, wanted in (("linear", "tiles_128x128"), ("attention", "attn_ctas_128")):
            models = doc["layer_types"][t]["runtime_ms"]["models"]
            assert wanted in models["boosted"]["features"], t


def test_bundled_power_stays_between_idle_and_the_limit(small_bundle: dict[str, Any]) -> None:
    idle = json.loads((DATA / "h200" / "campaign.json").read_text())["visits"][-1]["sensor"]["idle_w"]
    model = Model(small_bundle)
    layers = [npw.Layer("relu", batch=b, dtype="bf16", in_channels=c, in_h=s, in_w=s)
              for b in (1, 64) for c in (1, 512) for s in (1, 256)]
    layers += [npw.Layer("linear", batch=1, dtype="bf16", tokens=m, in_features=k, out_features=n)
               for m in (1, 65536) for k in (16, 16384) for n in (16, 65536)]
    from neuralpower import _evaluator as _ev

    rows = np.ascontiguousarray(np.stack([layer.row for layer in layers]))
    out = model._compiled.evaluate(rows, True)
    power = np.asarray(out["power_w"])
    assert (power >= idle - 1e-9).all() and (power <= 700.0 + 1e-9).all()
    # the NumPy reference applies the same bounds, launch floors and power of the wait
    features = np.asarray(_ev.features(rows, _ev.info(rows)), dtype=np.float64)
    ref_runtime, ref_power, _ = predict_layers(small_bundle, rows[:, 0], features)
    np.testing.assert_allclose(ref_runtime, out["runtime_ms"], rtol=1e-9)
    np.testing.assert_allclose(ref_power, power, rtol=1e-9)
    floor = small_bundle["layer_types"]["linear"]["floor"]
    linear = rows[:, 0] == LAYER_TYPES.index("linear")
    assert (np.asarray(out["runtime_ms"])[linear] >= floor["ms"] - 1e-12).all()


def test_scale_and_bounds_are_applied_and_checked() -> None:
    from model_docs import layer_entry, model_doc

    runtime = {"kind": "roofline", "ms_per_flop": 0.0, "ms_per_byte": 1e-6, "overhead": 0.0}
    power = {"kind": "constant", "value": 1000.0}
    doc = model_doc({"relu": layer_entry(runtime, power)})
    layer = npw.Layer("relu", in_channels=8, in_h=16, in_w=16)
    base = Model(doc).predict(npw.Architecture("a", [layer]))
    doc["layer_types"]["relu"]["runtime_ms"]["scale"] = 1.5
    doc["layer_types"]["relu"]["power_w"]["bounds"] = [80.0, 700.0]
    p = Model(doc).predict(npw.Architecture("a", [layer]))
    assert p.runtime_ms == pytest.approx(1.5 * base.runtime_ms) and p.power_w == pytest.approx(700.0)
    doc["layer_types"]["relu"]["power_w"]["bounds"] = [1200.0, None]
    assert Model(doc).predict(npw.Architecture("a", [layer])).power_w == pytest.approx(1200.0)
    # only the part above scale_from scales (a launch overhead does not), in both evaluators
    start = base.runtime_ms / 4
    doc["layer_types"]["relu"]["runtime_ms"]["scale_from"] = start
    p = Model(doc).predict(npw.Architecture("a", [layer]))
    assert p.runtime_ms == pytest.approx(start + 1.5 * (base.runtime_ms - start))
    from neuralpower.models.predict import predict_network
    assert predict_network(doc, npw.Architecture("a", [layer])).runtime_ms == pytest.approx(p.runtime_ms, rel=1e-12)
    doc["layer_types"]["relu"]["runtime_ms"]["scale_from"] = 2 * base.runtime_ms  # below it: unscaled
    assert Model(doc).predict(npw.Architecture("a", [layer])).runtime_ms == pytest.approx(base.runtime_ms)
    for bad, where in (({"scale": 0}, "scale"), ({"scale": "x"}, "scale"), ({"bounds": [5, 1]}, "bounds"),
                       ({"scale_from": -1}, "scale_from"), ({"launch_ms": "x"}, "launch_ms"),
                       ({"bounds": [-1, None]}, "bounds"), ({"bounds": [1]}, "bounds"),
                       ({"source": {"how": "guessed", "text": "x"}}, "source.how"),
                       ({"source": {"how": "carried", "text": "two\nlines"}}, "source.text")):
        broken = json.loads(json.dumps(doc))
        broken["layer_types"]["relu"]["power_w"].update(bad)
        with pytest.raises(InputError, match=f"power_w.{where}"):
            Model(broken)
    for floor in ({"ms": -1, "power_w": 100}, {"ms": 0.01}, [0.01, 100]):
        broken = json.loads(json.dumps(doc))
        broken["layer_types"]["relu"]["floor"] = floor
        with pytest.raises(InputError, match=r"relu\.floor"):
            Model(broken)


def test_every_layer_type_of_a_model_without_sources_is_measured_on_its_gpu(varying_model_path: Path) -> None:
    model = npw.load_model(varying_model_path)
    p = model.predict(zoo.build("resnet18"))
    assert set(p.per_layer["runtime_source"]) == {"measured on test (test, fp32)"}
    assert p.per_layer.dtype.names[6:8] == ("runtime_source", "power_source")


# -- the models bundled with the package ------------------------------------------------------------------

GPU_MODELS = ("h200-bf16", "h200-fp16", "h200-fp8", "h100-bf16", "h100-fp8")
NEUSIGHT_MODELS = ("p100-fp32", "p4-fp32", "t4-fp32", "v100-pcie-32gb-fp32", "a100-pcie-40gb-fp32")


def test_the_gpu_models_are_bundled_and_the_default_is_the_h200s() -> None:
    assert set(GPU_MODELS) <= set(bundled_models())
    assert npw.load_model().name == "h200-bf16"
    for name in GPU_MODELS:
        model = npw.load_model(name)
        assert model.power_measured
        for t in model.layer_types:
            assert model.source(t, "runtime_ms")[0] in ("measured", "carried")
            assert model.source(t, "power_w")[0] in ("measured", "carried")
    h100 = npw.load_model("h100-bf16")
    assert h100.source("linear", "runtime_ms")[0] == "measured"
    how, text = h100.source("linear", "power_w")
    assert how == "carried" and "NVIDIA H200" in text


@pytest.mark.parametrize(("gpu", "dtype", "name"), [
    ("h200", None, "h200-bf16"), ("NVIDIA H200", "fp8", "h200-fp8"), ("nvidia_h200", "fp16", "h200-fp16"),
    ("h100", None, "h100-bf16"), ("NVIDIA H100 80GB HBM3", "fp8", "h100-fp8"), ("H100-SXM", "bf16", "h100-bf16"),
    ("Tesla T4", None, "t4-fp32"), ("NVIDIA_A100-PCIE-40GB", "fp32", "a100-pcie-40gb-fp32"),
    ("Tesla_V100-PCIE-32GB", None, "v100-pcie-32gb-fp32"), ("p100", None, "p100-fp32"), ("P4", None, "p4-fp32"),
])
def test_a_gpu_picks_its_bundled_model(gpu: str, dtype: str | None, name: str) -> None:
    assert model_for_gpu(gpu, dtype) == name
    assert npw.load_model(gpu=gpu, dtype=dtype).name == name


@pytest.mark.parametrize(("gpu", "dtype", "message"), [
    ("rtx9090", None, r"unknown GPU 'rtx9090' \(known: h200, h100-sxm"),
    ("v100", "bf16", r"Tesla V100-SXM2-16GB has no bf16 tensor cores"),
    ("p4", "fp8", r"Tesla P4 has no fp8 tensor cores"),
    ("h200", "fp7", r"unknown dtype 'fp7'"),
])
def test_a_gpu_without_a_model_is_one_line(gpu: str, dtype: str | None, message: str) -> None:
    with pytest.raises(InputError, match=message) as e:
        npw.load_model(gpu=gpu, dtype=dtype)
    assert "\n" not in str(e.value)
    with pytest.raises(InputError, match="not both"):
        npw.load_model("h200-bf16", gpu="h200")


def test_predict_with_a_gpu_tells_each_layers_source(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["predict", "gpt2", "--gpu", "h200", "--seq-len", "256"]) == 0
    out = capsys.readouterr().out
    assert "model h200-bf16 (NVIDIA H200, aiconfigurator)" in out
    legend = [line for line in out.splitlines() if line.startswith("[")]
    assert any("runtime: measured on NVIDIA H200 (bf16; NVIDIA aiconfigurator's gemm kernels)" in line
               and "power: measured on NVIDIA H200" in line for line in legend)
    assert any("runtime: measured on NVIDIA H200 in fp16 (this project's torch sweeps" in line and ", as bf16" in line
               for line in legend)
    assert main(["predict", "gpt2", "--gpu", "h100", "--seq-len", "256", "--format", "json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["model"] == "h100-bf16" and doc["power_w"] > 0 and doc["energy_mj"] > 0
    sources = {r["type"]: r["runtime_source"] for r in doc["per_layer"]}
    assert sources["linear"].startswith("measured on NVIDIA H100 80GB HBM3 (bf16")
    assert "times the bandwidth ratio 1.43" in sources["layernorm"]  # the H200's sweep, carried over
    assert doc["per_layer"][0]["power_source"].startswith("carried from NVIDIA H200")


def test_score_with_a_gpu_picks_the_tables_dtype(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    table = tmp_path / "t.csv"
    npw.write_architectures([zoo.build("resnet18", dtype="fp8"), zoo.build("bert_base", dtype="fp8", seq_len=128)],
                            table)
    layers = tmp_path / "layers.csv"
    assert main(["score", str(table), "--gpu", "h200", "--per-layer", str(layers)]) == 0
    scores = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert len(scores) == 2 and all(float(r["energy_mj"]) > 0 for r in scores)
    with open(layers, newline="") as f:
        per_layer = list(csv.DictReader(f))
    assert {"runtime_source", "power_source"} <= set(per_layer[0])
    sources = {r["runtime_source"] for r in per_layer}
    assert any(t.startswith("measured on NVIDIA H200 (fp8; NVIDIA aiconfigurator's gemm kernels)") for t in sources)
    assert any(t.startswith("h200-bf16's attention") for t in sources)  # no fp8 attention table: carried
    assert any(t.endswith(", as fp8") for t in sources)
    assert main(["score", str(table), "--gpu", "v100"]) == 2  # fp8: a V100 has no such unit
    err = capsys.readouterr().err
    assert "Tesla V100-SXM2-16GB has no fp8 tensor cores" in err and len(err.strip().splitlines()) == 1


def test_models_lists_each_types_source(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["models"]) == 0
    out = capsys.readouterr().out
    assert "h200-bf16 (default): NVIDIA H200" in out and "carried over" in out
    assert main(["models", "h200-bf16", "--format", "json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    kinds = {r["type"]: (r["runtime_ms"]["how"], r["power_w"]["how"]) for r in doc["layer_types"]}
    assert kinds["linear"] == ("measured", "measured") and kinds["softmax"][0] == "carried"
    assert main(["models", "h100-bf16"]) == 0
    assert "bandwidth ratio" in capsys.readouterr().out
    # a scaled runtime: its metrics are the fit's, before the scale, and the listing says so
    assert main(["models", "t4-fp32"]) == 0
    linear = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("linear"))
    scale = npw.load_model("t4-fp32").doc["layer_types"]["linear"]["runtime_ms"]["scale"]
    assert linear.endswith(f"before the scale {scale:.3g}]")


def test_the_neusight_gpus_models_predict_what_their_tables_hold() -> None:
    for name in NEUSIGHT_MODELS:
        model = npw.load_model(name)
        assert not model.power_measured and model.dtype == "fp32"
        assert {"linear", "matmul", "layernorm", "softmax", "relu", "gelu", "add", "mul"} <= set(model.layer_types)
        assert model.source("linear", "runtime_ms")[1].startswith(f"measured on {model.gpu} (fp32; NeuSight")
    assert "conv2d" not in npw.load_model("a100-pcie-40gb-fp32").layer_types  # NeuSight measured no A100 conv
    layer = npw.Layer("linear", tokens=2048, in_features=4096, out_features=4096)
    t4, a100 = (npw.load_model(gpu=g).predict(npw.Architecture("x", [layer])).runtime_ms for g in ("t4", "a100-pcie"))
    assert 0 < a100 < t4  # fp32: 19.5 TFLOP/s against 8.1


@pytest.mark.parametrize(("gpu", "dtype", "source"), [
    ("l4", None, "t4-fp32"), ("l4", "bf16", "h100-bf16"), ("b200", "fp8", "h200-fp8"), ("h200", "fp32", None),
    ("a100-80gb", "fp32", "a100-pcie-40gb-fp32"), ("v100", None, "v100-pcie-32gb-fp32"),
])
def test_a_gpu_without_a_bundled_model_gets_one_carried_through_the_datasheets(
        gpu: str, dtype: str | None, source: str | None) -> None:
    from neuralpower.gpus import find_gpu, peak_tflops

    model = npw.load_model(gpu=gpu, dtype=dtype)
    g = find_gpu(gpu)
    assert model.gpu == g.name and model.name.startswith(f"{g.key}-") and "(carried from" in model.name
    frm = model.doc["carried_from"]  # the nearest source
    assert source is None or frm == source
    members = [m["model"] for m in model.doc.get("blend", [])] or [model.doc]
    weights = [m["weight"] for m in model.doc.get("blend", [])] or [1.0]
    assert members[0]["carried_from"] == frm and weights[0] == 1 and all(0 < w <= 1 for w in weights)
    for t in model.layer_types:
        first = next(m["carried_from"] for m in members if t in m["layer_types"])  # the nearest source covering t
        for target in ("runtime_ms", "power_w"):
            how, text = model.source(t, target)
            assert (how, text.split(" (")[0]) in (("carried", f"carried from {first}"), ("", "no power measured"))
    # a GEMM scales with the ratio of peaks from each source (this one takes far longer than a launch on any GPU);
    # a blend's prediction is the weighted geometric mean of its sources'
    dt = model.dtype
    one = npw.Architecture("one", [npw.Layer("linear", dtype=dt, tokens=4096, in_features=4096, out_features=4096)])
    log = 0.0
    for member, w in zip(members, weights, strict=True):
        base = npw.load_model(member["carried_from"])
        ratio = peak_tflops(find_gpu(base.gpu), dt) / peak_tflops(g, dt)  # type: ignore[operator]
        log += w * math.log(base.predict(one).runtime_ms * ratio)
    assert model.predict(one).runtime_ms == pytest.approx(math.exp(log / sum(weights)), rel=1e-9)
    if model.power_measured:
        assert 0 < model.predict(one).power_w <= g.power_limit_w
        assert "interval" not in model.doc["layer_types"]["linear"]["runtime_ms"]  # nothing here calibrates one


def test_a_blend_is_evaluated_as_the_numpy_reference_does(tmp_path: Path) -> None:
    """The C++ evaluator and neuralpower.models.predict agree on a blended model, layer by layer, its types covered
    by some members only (the A100's has no conv2d)."""
    from neuralpower.models.predict import predict_network

    model = npw.load_model(gpu="l4", dtype="fp32")
    assert len(model.doc["blend"]) > 2 and "conv2d" not in npw.load_model("a100-pcie-40gb-fp32").layer_types
    cnn = npw.Architecture("cnn", [
        npw.Layer("conv2d", batch=4, in_channels=64, in_h=56, in_w=56, out_channels=128, kernel=3, padding=1),
        npw.Layer("relu", batch=4, in_channels=128, in_h=56, in_w=56),
        npw.Layer("linear", batch=4, in_features=4096, out_features=1000)])
    for arch in (cnn, zoo.build("hf_gpt2_large", batch=2, seq_len=128)):
        got, ref = model.predict(arch), predict_network(model.doc, arch)
        np.testing.assert_allclose(got.layer_runtime_ms, ref.layer_runtime_ms, rtol=1e-9)
        assert (got.layer_extrapolated == ref.extrapolated).all() and (got.layer_runtime_ms > 0).all()
    path = tmp_path / "l4.json"
    path.write_text(json.dumps(model.doc))
    again = npw.load_model(str(path))  # a blend written to a file reads back as the same model
    assert again.predict(cnn).runtime_ms == pytest.approx(model.predict(cnn).runtime_ms, rel=1e-12)


@pytest.mark.parametrize(("change", "message"), [
    (lambda d: d["blend"].__setitem__(0, {"weight": -1.0, "model": d["blend"][0]["model"]}),
     "blend[0].weight: must be a number in (0, 1]"),
    (lambda d: d["blend"][2].__setitem__("weight", 2.0), "blend[2].weight: must be a number in (0, 1]"),
    (lambda d: d["blend"][1].__setitem__("extra", 1), "blend[1]: must be"),
    (lambda d: d["blend"][0]["model"].__setitem__("blend", []),
     "blend[0].model: must be a model document, not a blend"),
    (lambda d: d["blend"][0]["model"].__setitem__("dtype", "bf16"), "blend[0].model.dtype: must be the blend's (fp32)"),
    (lambda d: d["blend"][1]["model"].__setitem__("schema", "x"), "blend[1].model.schema: must be"),
    (lambda d: d["blend"].clear(), "blend: must be a list of 1 to 16"),
    (lambda d: d["blend"].extend([d["blend"][0]] * 16), "blend: must be a list of 1 to 16"),
    (lambda d: d["layer_types"].pop("relu"), "layer_types: a blend's must be the layer types its members cover"),
    (lambda d: [m["model"]["layer_types"].pop("conv2d", None) for m in d["blend"]],
     "layer_types: a blend's must be the layer types its members cover"),
])
def test_a_corrupt_blend_is_one_line_naming_the_place(tmp_path: Path, change: Any, message: str,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    doc = copy.deepcopy(npw.load_model(gpu="l4", dtype="fp32").doc)
    change(doc)
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(doc))
    assert main(["predict", "hf_bert_large", "--model", str(path)]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and str(path) in err and len(err.splitlines()) == 1


def test_only_the_ratios_of_a_blends_weights_count() -> None:
    from neuralpower.models.predict import predict_network

    model = npw.load_model(gpu="l4", dtype="fp32")
    arch = zoo.build("hf_gpt2_large", batch=2, seq_len=128)
    scaled = copy.deepcopy(model.doc)
    for member in scaled["blend"]:
        member["weight"] *= 1e-300  # tiny, and as far apart as before
    for doc in (model.doc, scaled):
        np.testing.assert_allclose(Model(doc).predict(arch).layer_runtime_ms,
                                   predict_network(model.doc, arch).layer_runtime_ms, rtol=1e-9)
        np.testing.assert_allclose(predict_network(doc, arch).layer_runtime_ms,
                                   predict_network(model.doc, arch).layer_runtime_ms, rtol=1e-9)


def test_the_compiled_blend_refuses_unsafe_members() -> None:
    from neuralpower import _evaluator as ev

    member = npw.load_model("t4-fp32")._compiled
    with pytest.raises(ValueError, match="positive finite"):
        ev.Model().set_blend([member], [float("nan")])
    with pytest.raises(ValueError, match="one weight per member"):
        ev.Model().set_blend([member, member], [1.0])
    with pytest.raises(ValueError, match="too many members"):
        ev.Model().set_blend([member] * 65, [1.0] * 65)
    blend = ev.Model()
    blend.set_blend([member], [1.0])
    with pytest.raises(ValueError, match="not be a blend"):
        ev.Model().set_blend([blend], [1.0])


def test_predict_on_a_gpu_without_a_model_says_it_is_carried(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["predict", "resnet18", "--gpu", "l4", "--dtype", "bf16"]) == 0
    captured = capsys.readouterr()
    assert ("no bundled model was measured on NVIDIA L4 for bf16: l4-bf16 (carried from h100-bf16 + h200-bf16), "
            "through the GPUs' datasheets") in captured.err
    assert ("runtime: carried from h100-bf16 (NVIDIA H100 80GB HBM3) x 8.18 weighing 0.67, h200-bf16 (NVIDIA H200) x "
            "8.18 weighing 0.33 through the datasheets") in captured.out


def test_all_layer_types_but_free_ones_are_covered() -> None:
    model = npw.load_model("h200-bf16")
    assert set(LAYER_TYPES) - set(model.layer_types) <= {"flatten"}
    assert FEATURES  # the model's features are this neuralpower's


def test_score_as_another_dtype_equals_the_table_in_that_dtype(tmp_path: Path,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    archs = [zoo.build("resnet18"), zoo.build("gpt2", seq_len=64), zoo.build("vit_b_32")]
    fp32, bf16 = tmp_path / "fp32.csv", tmp_path / "bf16.csv"
    npw.write_architectures(archs, fp32)
    npw.write_architectures([a.with_dtype("bf16") for a in archs], bf16)
    assert main(["score", str(fp32), "--dtype", "bf16"]) == 0
    cast = capsys.readouterr().out
    assert main(["score", str(bf16)]) == 0
    assert cast == capsys.readouterr().out
    assert main(["score", str(fp32)]) == 2  # the default model is bf16: an fp32 table is refused, in one line
    err = capsys.readouterr().err.strip()
    assert "layer 0 is fp32" in err and "--dtype bf16 scores it as bf16 with model h200-bf16" in err
    assert len(err.splitlines()) == 1
    assert main(["score", str(fp32), "--dtype", "fp8", "--gpu", "h100"]) == 0
    fp8 = {r["arch"]: float(r["runtime_ms"]) for r in csv.DictReader(io.StringIO(capsys.readouterr().out))}
    assert set(fp8) == {"resnet18", "gpt2", "vit_b_32"} and all(v > 0 for v in fp8.values())


def test_the_cross_gpu_benchmark_on_the_sample(capsys: pytest.CaptureFixture[str],
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    import runpy

    monkeypatch.setattr(sys, "argv", ["cross_gpu.py", str(REPO / "tests" / "data")])
    with pytest.raises(SystemExit) as done:
        runpy.run_path(str(REPO / "benchmarks" / "cross_gpu.py"), run_name="__main__")
    assert done.value.code == 0
    out = capsys.readouterr().out.splitlines()
    row = next(line for line in out if line.startswith("Tesla V100-PCIE-32GB"))
    assert row.split()[2] == "p100"  # the nearest of the other four, by the datasheets, blended with the others
    assert row.rstrip().endswith("%")


def test_models_lists_interval_groups_and_energys_own_interval(capsys: pytest.CaptureFixture[str]) -> None:
    """`neuralpower models h200-bf16` says where an interval is split into groups, and energy's own interval."""
    from neuralpower.cli import _groups

    assert main(["models", "h200-bf16"]) == 0
    lines = capsys.readouterr().out.splitlines()
    at = next(i for i, line in enumerate(lines) if line.startswith("attention "))
    assert re.search(r"90% interval in \d+ groups held \d+%", lines[at])
    energy = [line for line in lines[at : at + 3] if line.split()[0] == "energy"]
    assert energy and "its own 90% interval" in energy[0]
    assert main(["models", "h200-bf16", "--format", "json"]) == 0
    records = {r["type"]: r for r in json.loads(capsys.readouterr().out)["layer_types"]}
    doc = npw.load_model("h200-bf16").doc["layer_types"]["attention"]
    assert records["attention"]["runtime_ms"]["interval_groups"] == _groups(doc["runtime_ms"]["interval"]["split"]) > 1
    assert records["attention"]["energy_interval"]["hi"] == doc["energy_interval"]["hi"]
    assert "energy_interval" not in records["relu"]  # (its energy bounds: runtime's times power's)
