"""The C++ evaluator equals the NumPy reference predictor; batch and single paths agree; bad models and
rows never crash it."""

from __future__ import annotations

import copy
import csv
import json
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.csv as pacsv
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from model_docs import model_doc

import neuralpower as npw
from neuralpower import InputError, zoo
from neuralpower import _evaluator as _ev
from neuralpower.evaluator import Model, load_model
from neuralpower.layers import FEATURES, FIELD_INDEX, LAYER_TYPES
from neuralpower.models.data import read_measurements
from neuralpower.models.fit import FitOptions, fit_models
from neuralpower.models.format import validate_model, write_model_file
from neuralpower.models.predict import predict_network
from neuralpower.models.synthetic import synthetic_table
from neuralpower.table import _parse

RTOL = 1e-9
ZOO_TYPES = sorted({layer.type for name in zoo.names() for layer in zoo.build(name)})


def close(a: Any, b: Any) -> bool:
    return bool(np.allclose(a, b, rtol=RTOL, atol=0.0, equal_nan=True))


# -- random models ----------------------------------------------------------------------------------------


@st.composite
def poly_specs(draw: st.DrawFn) -> dict[str, Any]:
    n_inputs = draw(st.integers(1, 5))
    mode = draw(st.sampled_from(["plain", "relative", "log"]))
    inputs = [
        {"feature": draw(st.sampled_from(FEATURES)), "transform": draw(st.sampled_from(["identity", "log1p"]))}
        for _ in range(n_inputs)
    ]
    terms = []
    for _ in range(draw(st.integers(0, 12))):
        used = draw(st.lists(st.integers(0, n_inputs - 1), min_size=1, max_size=min(n_inputs, 5), unique=True))
        powers = [[i, draw(st.integers(1, 3))] for i in used]
        # positive coefficients: no cancellation, so float rounding stays far below the tolerance
        terms.append({"powers": powers, "coef": draw(st.floats(1e-20, 1e-3))})
    return {
        "kind": "poly",
        "target": mode,
        "degree": 3,
        "inputs": inputs,
        "intercept": draw(st.floats(0, 5)),
        "terms": terms,
    }


@st.composite
def tree_nodes(draw: st.DrawFn, depth: int, k: int) -> dict[str, Any]:
    if depth == 0 or draw(st.booleans()):
        return {"leaf": {"intercept": draw(st.floats(0, 10)), "weights": [draw(st.floats(0, 1e-6)) for _ in range(k)]}}
    test = draw(st.sampled_from(["le", "mod"]))
    value = draw(st.integers(1, 64)) if test == "mod" else draw(st.floats(0, 1e6))
    return {
        "feature": draw(st.sampled_from(FEATURES)),
        "test": test,
        "value": value,
        "yes": draw(tree_nodes(depth - 1, k)),
        "no": draw(tree_nodes(depth - 1, k)),
    }


@st.composite
def tree_specs(draw: st.DrawFn) -> dict[str, Any]:
    leaf = draw(st.lists(st.sampled_from(["flops", "bytes_moved", "params", "batch"]), max_size=3, unique=True))
    return {"kind": "tree", "leaf_features": leaf, "relative": True, "root": draw(tree_nodes(3, len(leaf)))}


@st.composite
def boosted_trees(draw: st.DrawFn, k: int) -> dict[str, Any]:
    """One tree of a boosted spec: nodes root first, children after their parent."""
    nodes: list[list[Any]] = []

    def grow(depth: int) -> int:
        at = len(nodes)
        nodes.append([-1, draw(st.floats(-2, 2)), -1, -1])
        if depth > 0 and draw(st.booleans()):
            nodes[at][0] = draw(st.integers(0, k - 1))
            nodes[at][1] = draw(st.floats(0, 1e7))
            nodes[at][2] = grow(depth - 1)
            nodes[at][3] = grow(depth - 1)
        return at

    grow(3)
    return {key: [n[i] for n in nodes] for i, key in enumerate(("feature", "value", "yes", "no"))}


@st.composite
def boosted_specs(draw: st.DrawFn) -> dict[str, Any]:
    features = draw(st.lists(st.sampled_from(["flops", "bytes_moved", "batch", "in_channels", "rows"]), min_size=1,
                             max_size=3, unique=True))
    return {"kind": "boosted", "target": draw(st.sampled_from(["log", "plain"])), "base": draw(st.floats(-3, 3)),
            "features": features, "trees": draw(st.lists(boosted_trees(len(features)), min_size=1, max_size=6))}


specs = st.one_of(
    poly_specs(),
    tree_specs(),
    boosted_specs(),
    st.builds(
        lambda a, b, c: {"kind": "roofline", "ms_per_flop": a, "ms_per_byte": b, "overhead": c},
        st.floats(0, 1e-9),
        st.floats(0, 1e-9),
        st.floats(0, 1e-2),
    ),
    st.builds(
        lambda a, c: {"kind": "flops_linear", "slope": a, "intercept": c}, st.floats(-1e-9, 1e-9), st.floats(-1, 1)
    ),
    st.builds(lambda v: {"kind": "constant", "value": v}, st.floats(0, 500)),
)


@st.composite
def models(draw: st.DrawFn) -> dict[str, Any]:
    types = draw(st.lists(st.sampled_from(ZOO_TYPES), min_size=1, unique=True))
    layer_types = {}
    for t in types:
        ranges = {
            f: sorted([draw(st.floats(0, 1e9)), draw(st.floats(0, 1e9))])
            for f in draw(st.lists(st.sampled_from(FEATURES), max_size=4, unique=True))
        }
        entry: dict[str, Any] = {"rows": 100, "ranges": ranges}
        for target in ("runtime_ms", "power_w"):
            models_ = {"a": draw(specs), "b": draw(specs)}
            entry[target] = {
                "default": draw(st.sampled_from(["a", "b"])),
                "fallback": None,
                "models": models_,
                "metrics": {},
            }
        layer_types[t] = entry
    doc = model_doc(layer_types)
    validate_model(doc)
    return doc


@st.composite
def architectures(draw: st.DrawFn, covered: list[str]) -> npw.Architecture:
    name = draw(st.sampled_from(zoo.names()))
    size, length = zoo.applicable_sizes(name, draw(st.sampled_from([None, 64, 96])), draw(st.sampled_from([None, 16])))
    arch = zoo.build(name, batch=draw(st.integers(1, 16)), image_size=size, seq_len=length)
    keep = [layer for layer in arch if layer.type in covered]
    if not keep:
        keep = [
            npw.Layer(
                covered[0], in_channels=8, in_h=8, in_w=8, out_channels=8, kernel=1, in_features=8, out_features=8,
                heads=2, tokens=4, head_dim=4, out_h=8, out_w=8,
            )
        ]
    start = draw(st.integers(0, max(0, len(keep) - 1)))
    return npw.Architecture(f"{name}-part", keep[start : start + draw(st.integers(1, 60))])


@settings(max_examples=150, deadline=None)
@given(data=st.data())
def test_cpp_equals_the_numpy_reference(data: st.DataObject) -> None:
    doc = data.draw(models())
    arch = data.draw(architectures(list(doc["layer_types"])))
    method = data.draw(st.sampled_from([None, "a", "b"]))
    want = predict_network(doc, arch, method)
    try:
        got = Model(doc, method=method).predict(arch)
    except InputError as e:  # an overflow: refused, where the reference says NaN
        assert "not a finite number" in str(e) or "overflows" in str(e)
        assert not (np.isfinite(want.runtime_ms) and np.isfinite(want.energy_mj))
        return
    assert np.isfinite(want.runtime_ms) and np.isfinite(want.energy_mj)
    assert close(got.layer_runtime_ms, want.layer_runtime_ms)
    assert close(got.layer_power_w, want.layer_power_w)
    assert close(got.layer_energy_mj, want.layer_energy_mj)
    assert (got.layer_extrapolated == want.extrapolated).all()
    assert close(got.runtime_ms, want.runtime_ms) and close(got.energy_mj, want.energy_mj)
    assert close(got.power_w, want.power_w)


@settings(max_examples=60, deadline=None)
@given(data=st.data())
def test_batch_and_single_paths_agree(data: st.DataObject) -> None:
    doc = data.draw(models())
    archs = data.draw(st.lists(architectures(list(doc["layer_types"])), min_size=1, max_size=5))
    model = Model(doc)
    threads = data.draw(st.sampled_from([1, 2, 3]))
    try:
        scores = model.score(archs, per_layer=True, threads=threads)
    except InputError as e:  # an overflow: the single path refuses the same architecture
        name = str(e).split(",")[0]
        refused = 0
        for arch in (a for a in archs if a.name == name):
            try:
                model.predict(arch)
            except InputError as single:
                assert "finite" in str(single) or "overflows" in str(single)
                refused += 1
        assert refused
        return
    assert scores.per_layer is not None
    start = 0
    for k, arch in enumerate(archs):
        p = model.predict(arch)
        assert close(scores.runtime_ms[k], p.runtime_ms) and close(scores.energy_mj[k], p.energy_mj)
        assert close(scores.power_w[k], p.power_w)
        assert scores.layers[k] == len(arch)
        assert scores.bottleneck[k] == p.bottleneck
        assert scores.extrapolated_layers[k] == int(p.layer_extrapolated.sum())
        end = start + len(arch)
        assert close(scores.per_layer["runtime_ms"][start:end], p.layer_runtime_ms)
        start = end


@pytest.fixture(scope="module")
def fitted(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("ev")
    table = directory / "s.csv"
    pacsv.write_csv(synthetic_table(800, seed=7), table)
    path = directory / "m.json"
    write_model_file(fit_models(read_measurements([table]), FitOptions(method="all")), path)
    return path


def test_fitted_models_match_the_reference(fitted: Path) -> None:
    doc = json.loads(fitted.read_text())
    arch = npw.Architecture("convs", [layer for layer in zoo.build("resnet50", batch=8) if layer.type == "conv2d"])
    for method in (None, "poly", "tree", "roofline", "flops_linear"):
        got, want = load_model(fitted, method=method).predict(arch), predict_network(doc, arch, method)
        assert close(got.layer_runtime_ms, want.layer_runtime_ms), method
        assert close(got.layer_power_w, want.layer_power_w), method
        assert close(got.energy_mj, want.energy_mj), method
    p = load_model(fitted).predict(arch)
    assert p.per_layer["layer"][0] == "conv1" and p.per_layer.dtype.names == (
        "layer",
        "type",
        "runtime_ms",
        "power_w",
        "energy_mj",
        "extrapolated",
        "runtime_source",
        "power_source",
        *BOUNDS,
    )
    assert p.bottleneck in {layer.name for layer in arch}


BOUNDS = ("runtime_ms_lo", "runtime_ms_hi", "power_w_lo", "power_w_hi", "energy_mj_lo", "energy_mj_hi")


def test_prediction_intervals(fitted: Path, tmp_path: Path) -> None:
    doc = json.loads(fitted.read_text())
    conv = doc["layer_types"]["conv2d"]
    rt, pw = conv["runtime_ms"]["interval"], conv["power_w"]["interval"]
    assert rt["coverage"] == 0.9 and rt["lo"] < 1 < rt["hi"] and 85 <= rt["test_coverage"] <= 95
    model = load_model(fitted)
    assert model.has_intervals and model.interval_coverage == 0.9
    arch = npw.Architecture("convs", [layer for layer in zoo.build("resnet18", batch=2) if layer.type == "conv2d"])
    p = model.predict(arch)
    # energy has its own interval, calibrated on configurations whose runtime and power are both validation rows
    en = conv["energy_interval"]
    assert en["coverage"] == 0.9 and en["lo"] < 1 < en["hi"] and 80 <= en["test_coverage"] <= 100
    assert (en["lo"], en["hi"]) != (rt["lo"] * pw["lo"], rt["hi"] * pw["hi"])
    # per layer: the prediction times the type's factors; per network: sums (runtime, energy), and power's bounds the
    # layers' weighted by their predicted runtime
    assert close(p.layer_bounds["runtime_ms_lo"], p.layer_runtime_ms * rt["lo"])
    assert close(p.layer_bounds["power_w_hi"], p.layer_power_w * pw["hi"])
    assert close(p.layer_bounds["energy_mj_lo"], p.layer_energy_mj * en["lo"])
    assert close(p.bounds["runtime_ms_lo"], p.runtime_ms * rt["lo"])
    assert close(p.bounds["runtime_ms_hi"], p.runtime_ms * rt["hi"])
    assert close(p.bounds["energy_mj_hi"], p.energy_mj * en["hi"])
    assert close(p.bounds["power_w_lo"], p.power_w * pw["lo"]) and close(p.bounds["power_w_hi"], p.power_w * pw["hi"])
    assert p.bounds["power_w_lo"] < p.power_w < p.bounds["power_w_hi"]
    # without energy's own interval, energy's factors are the products of runtime's and power's
    no_energy = copy.deepcopy(doc)
    no_energy["layer_types"]["conv2d"].pop("energy_interval")
    q = npw.Model(no_energy).predict(arch)
    assert close(q.layer_bounds["energy_mj_lo"], q.layer_energy_mj * rt["lo"] * pw["lo"])
    assert close(q.bounds["energy_mj_hi"], q.energy_mj * rt["hi"] * pw["hi"])
    assert close(npw.Model(no_energy).score([arch]).bounds["energy_mj_hi"][0], q.bounds["energy_mj_hi"])
    # the compiled architecture sums (score) agree with predict
    scores = model.score([arch, npw.Architecture("other", list(arch.layers[:3]))])
    for k in BOUNDS:
        assert close(scores.bounds[k][0], p.bounds[k]), k
    # an interval belongs to the default model: another method has none
    other = load_model(fitted, method="roofline" if conv["runtime_ms"]["default"] != "roofline" else "poly")
    assert all(np.isnan(v) for v in other.predict(arch).bounds.values())
    # a model without intervals has none
    plain = copy.deepcopy(doc)
    for entry in plain["layer_types"].values():
        for target in ("runtime_ms", "power_w"):
            entry[target].pop("interval", None)
    bare = npw.Model(plain)
    assert not bare.has_intervals and bare.predict(arch).bounds == {} and bare.score([arch]).bounds == {}


def test_intervals_in_score_output(fitted: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from neuralpower.cli import main

    archs = [npw.Architecture(f"n{i}", [layer for layer in zoo.build("resnet18", batch=b) if layer.type == "conv2d"])
             for i, b in enumerate((1, 2))]
    path = tmp_path / "c.csv"
    npw.write_architectures(archs, path)
    out, per = tmp_path / "s.csv", tmp_path / "l.csv"
    assert main(["score", str(path), "--model", str(fitted), "--out", str(out), "--per-layer", str(per)]) == 0
    rows = list(csv.DictReader(out.read_text().splitlines()))
    assert list(rows[0])[:11] == ["arch", "layers", "runtime_ms", "power_w", "energy_mj", *BOUNDS]
    p = load_model(fitted).predict(archs[1])
    for k in BOUNDS:
        assert close(float(rows[1][k]), p.bounds[k]), k
    layers = list(csv.DictReader(per.read_text().splitlines()))
    first = load_model(fitted).predict(archs[0]).layer_bounds["runtime_ms_hi"][0]
    assert close(float(layers[0]["runtime_ms_hi"]), first)
    capsys.readouterr()
    assert main(["predict", str(path), "--arch", "n1", "--model", str(fitted)]) == 0
    b = p.bounds
    line = capsys.readouterr().out.strip().splitlines()[-1]
    assert line == (f"90% prediction interval: runtime {b['runtime_ms_lo']:.4f} to {b['runtime_ms_hi']:.4f} ms, power "
                    f"{b['power_w_lo']:.1f} to {b['power_w_hi']:.1f} W, energy {b['energy_mj_lo']:.4f} to "
                    f"{b['energy_mj_hi']:.4f} mJ")


def test_score_a_table_file(fitted: Path, tmp_path: Path) -> None:
    archs = [
        npw.Architecture(f"n{i}", [layer for layer in zoo.build("resnet18", batch=b) if layer.type == "conv2d"])
        for i, b in enumerate((1, 2, 4))
    ]
    path = tmp_path / "cands.csv"
    npw.write_architectures(archs, path)
    model = load_model(fitted)
    scores = model.score(path)
    assert scores.arch == ["n0", "n1", "n2"]
    for k, arch in enumerate(archs):
        assert close(scores.runtime_ms[k], model.predict(arch).runtime_ms)
    # interleaved rows group by architecture, in order of first appearance
    lines = path.read_text().splitlines()
    body = lines[1:]
    n = len(archs[0])
    shuffled = (
        [lines[0]] + [row for pair in zip(body[:n], body[n : 2 * n], strict=True) for row in pair] + body[2 * n :]
    )
    mixed = tmp_path / "mixed.csv"
    mixed.write_text("\n".join(shuffled) + "\n")
    again = model.score(mixed)
    assert again.arch == scores.arch and close(again.runtime_ms, scores.runtime_ms)
    assert again.bottleneck == scores.bottleneck


def test_uncovered_types_and_dtype(fitted: Path) -> None:
    model = load_model(fitted)
    with pytest.raises(InputError, match=r"the model has no batchnorm2d model"):
        model.predict(zoo.build("resnet18"))
    with pytest.raises(InputError, match="the model was fit for fp32"):
        model.predict(
            npw.Architecture("h", [layer for layer in zoo.build("resnet18", dtype="fp16") if layer.type == "conv2d"])
        )
    flat = npw.Architecture("f", [npw.Layer("flatten", in_channels=8, in_h=2, in_w=2)])
    assert model.predict(flat).runtime_ms == 0.0  # a view costs nothing


@pytest.mark.parametrize(
    ("name", "runtime_ms", "attention_ms"),
    [("gpt2", 16665.103767363897, 597.9249119986417), ("bert_base", 1053.9694163756162, 5.032644065132921),
     ("vit_b_16", 1657.602892236603, 11.427977521795485), ("resnet18", 269.09488373297575, None)],
)
def test_the_bundled_model_predicts_as_before_the_serving_fields(
    name: str, runtime_ms: float, attention_ms: float | None
) -> None:
    """Fields and features added later (attention's kv_heads, window, kv_dtype; fp8) leave what a model fit before
    them predicts as it was: models name their features. The numbers are the model's before those were added
    (refitting the bundled model changes them, on purpose)."""
    model = load_model("cpu-numpy-fp32")
    prediction = model.predict(zoo.build(name, batch=2))
    assert prediction.runtime_ms == pytest.approx(runtime_ms, rel=1e-12)
    attention = [i for i, layer in enumerate(prediction.arch) if layer.type == "attention"]
    if attention_ms is not None:
        assert prediction.layer_runtime_ms[attention[0]] == pytest.approx(attention_ms, rel=1e-12)


def test_load_model_errors(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="neither a model file nor a bundled model"):
        load_model("no-such-model")
    bad = tmp_path / "bad.json"
    bad.write_text("{}")
    with pytest.raises(InputError, match=r"bad\.json"):
        load_model(bad)


def _hostile(doc: dict[str, Any], rng: np.random.Generator) -> dict[str, Any]:
    doc = copy.deepcopy(doc)
    entry = next(iter(doc["layer_types"].values()))
    spec = entry["runtime_ms"]["models"][entry["runtime_ms"]["default"]]
    choice = int(rng.integers(6))
    if spec["kind"] == "poly" and spec["terms"]:
        term = spec["terms"][0]
        if choice == 0:
            term["powers"] = [[0, int(rng.integers(-3, 100))]]
        elif choice == 1:
            term["powers"] = [[int(rng.integers(-5, 50)), 1]]
        elif choice == 2:
            term["coef"] = float(rng.choice([1e308, -1e308, 1e300]))
        elif choice == 3:
            spec["inputs"] = spec["inputs"][:0]
        elif choice == 4:
            term["powers"] = [[0, 1]] * int(rng.integers(0, 30))
        else:
            spec["target"] = "cubic"
    elif spec["kind"] == "tree":
        spec["root"] = {
            "feature": "flops",
            "test": "mod",
            "value": float(rng.choice([0, -1, 0.5, 1e308])),
            "yes": spec["root"],
            "no": {"leaf": {"intercept": 0.0, "weights": [1.0] * int(rng.integers(0, 5))}},
        }
    return doc


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data(), seed=st.integers(0, 2**32 - 1))
def test_hostile_models_fail_cleanly(data: st.DataObject, seed: int) -> None:
    doc = _hostile(data.draw(models()), np.random.default_rng(seed))
    try:
        model = Model(doc)
    except InputError as e:
        assert "\n" not in str(e)
        return
    arch = data.draw(architectures(list(doc["layer_types"])))
    try:
        p = model.predict(arch)
    except InputError as e:  # its arithmetic overflowed: refused, never a number
        assert "\n" not in str(e) and ("finite" in str(e) or "overflows" in str(e))
        return
    assert p.runtime_ms >= 0 and np.isfinite(p.energy_mj) and np.isfinite(p.runtime_ms)


def test_the_compiled_builder_checks_everything() -> None:
    m = _ev.Model()
    with pytest.raises(ValueError, match="feature index out of range"):
        m.set_poly(0, 0, 0, [999], [0], 0.0, [0], [], [], [])
    with pytest.raises(ValueError, match="exponent out of range"):
        m.set_poly(0, 0, 0, [0], [0], 0.0, [0, 1], [0], [9], [1.0])
    with pytest.raises(ValueError, match="term input index out of range"):
        m.set_poly(0, 0, 0, [0], [0], 0.0, [0, 1], [3], [1], [1.0])
    with pytest.raises(ValueError, match="term offsets"):
        m.set_poly(0, 0, 0, [0], [0], 0.0, [0, 5], [0], [1], [1.0])
    with pytest.raises(ValueError, match="children must follow their parent"):
        m.set_tree(0, 0, [], [0, 0], [1, 0], [1.0, 0.0], [0, 0], [1, 0], [0.0, 0.0], [])
    with pytest.raises(ValueError, match="boosted: children must follow their parent"):
        m.set_boosted(0, 0, True, 0.0, [0, 2], [0, 0], [1.0, 0.0], [0, -1], [1, -1])
    with pytest.raises(ValueError, match="boosted: children must follow their parent"):  # a child in the next tree
        m.set_boosted(0, 0, True, 0.0, [0, 1, 2], [0, 0], [1.0, 0.0], [1, -1], [1, -1])
    with pytest.raises(ValueError, match="boosted: tree offsets"):
        m.set_boosted(0, 0, True, 0.0, [0, 5], [0], [1.0], [-1], [-1])
    with pytest.raises(ValueError, match="boosted split: feature index out of range"):
        m.set_boosted(0, 0, True, 0.0, [0, 3], [999, 0, 0], [1.0, 0.0, 0.0], [1, -1, -1], [2, -1, -1])
    with pytest.raises(ValueError, match="layer type code out of range"):
        m.set_linear(len(LAYER_TYPES), 0, 5, 0, 0, 1)
    with pytest.raises(ValueError, match="must be finite"):
        m.set_linear(0, 0, 5, 0, 0, float("nan"))
    m.set_linear(0, 0, 5, 0, 0, 1.0)
    m.set_linear(0, 1, 5, 0, 0, 2.0)
    m.finish()
    rows = zoo.build("cifar_conv6").rows()[:1].copy()
    out = m.evaluate(rows, True)
    assert out["runtime_ms"][0] == 1.0 and out["energy_mj"][0] == 2.0
    bad = rows.copy()
    bad[0, 0] = 99
    with pytest.raises(ValueError, match="unknown layer type code"):
        m.evaluate(bad, False)
    bad = rows.copy()
    bad[0, npw.FIELDS.index("groups")] = 0
    with pytest.raises(ValueError, match="groups"):
        m.evaluate(bad, True)
    with pytest.raises(ValueError, match="offsets"):
        m.evaluate_archs(rows, np.array([0, 5]), False, 1, True)


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.integers(-(2**40), 2**40) | st.integers(-3, 300), min_size=len(npw.FIELDS), max_size=len(npw.FIELDS))
)
def test_random_rows_never_crash_the_evaluator(values: list[int]) -> None:
    m = _ev.Model()
    for t in range(len(LAYER_TYPES)):
        m.set_linear(t, 0, 3, 1e-9, 1e-9, 0.001)
        m.set_linear(t, 1, 5, 0, 0, 100.0)
    m.finish()
    row = np.array([values], dtype=np.int64)
    try:
        out = m.evaluate(row, True)
    except ValueError:
        return
    assert out["runtime_ms"][0] >= 0


# -- the caches of repeated rows ----------------------------------------------------------------------------


def _conv_rows(n: int, seed: int) -> np.ndarray:
    """``n`` valid conv2d rows with many repeats and more distinct rows than a cache holds (16,384)."""
    rng = np.random.default_rng(seed)
    table = synthetic_table(n, seed=seed)
    distinct = _parse("t.parquet", "parquet", table.drop_columns(["runtime_ms", "power_w", "executor", "gpu"])).rows
    # a third of the rows drawn from a few configurations (repeats), the rest all distinct
    index = np.where(rng.random(n) < 0.33, rng.integers(0, 50, n), np.arange(n))
    return np.ascontiguousarray(distinct[index])


def test_cached_rows_give_the_uncached_results(fitted: Path) -> None:
    """evaluate_archs caches the results of repeated rows per thread; the results equal a row-by-row evaluation
    (no cache), exactly, across the cache's restarts and with any number of threads."""
    model = load_model(fitted)
    rows = _conv_rows(40_000, seed=3)
    offsets = np.arange(0, len(rows) + 1, 40, dtype=np.int64)
    single = model._compiled.evaluate(rows, False)
    for threads in (1, 3):
        for validate in (False, True):
            out = model._compiled.evaluate_archs(rows, offsets, True, threads, validate)
            assert np.array_equal(out["layer_runtime_ms"], single["runtime_ms"])
            assert np.array_equal(out["layer_power_w"], single["power_w"])
            assert np.array_equal(out["layer_extrapolated"], single["extrapolated"])
            totals = np.add.reduceat(single["runtime_ms"], offsets[:-1])
            assert np.allclose(out["runtime_ms"], totals, rtol=1e-12)
            best = out["bottleneck"] + offsets[:-1]
            assert np.array_equal(out["bottleneck_energy_mj"], single["energy_mj"][best])
            assert np.array_equal(out["bottleneck_runtime_ms"], single["runtime_ms"][best])


def test_distinct_rows_and_an_index_give_the_same_results(fitted: Path) -> None:
    """evaluate_archs over distinct rows and an index (each distinct row evaluated once) gives exactly what it
    gives over the rows themselves: totals, per-layer values, bottlenecks, bounds; with any number of threads.
    Errors are reported at the first layer (of the table, not of the distinct rows) that has one, and a bad
    distinct row that no layer uses is no error."""
    model = load_model(fitted)
    rows = _conv_rows(20_000, seed=5)
    distinct, index = np.unique(rows, axis=0, return_inverse=True)
    index = np.ascontiguousarray(index.reshape(-1), dtype=np.int64)
    offsets = np.arange(0, len(rows) + 1, 50, dtype=np.int64)
    assert len(distinct) < len(rows)
    for threads in (1, 3):
        for validate in (False, True):
            plain = model._compiled.evaluate_archs(rows, offsets, True, threads, validate)
            indexed = model._compiled.evaluate_archs(distinct, offsets, True, threads, validate, index)
            assert plain.keys() == indexed.keys()
            for key in plain:
                assert np.array_equal(plain[key], indexed[key], equal_nan=True), key
    # a cache kept across calls gives the same results again, and starts over for another model
    cache = _ev.ResultCache()
    other = load_model(fitted, method="roofline")
    for m in (model, model, other, model):
        expected = m._compiled.evaluate_archs(rows, offsets, True, 1, False)
        got = m._compiled.evaluate_archs(distinct, offsets, True, 2, False, index, cache)
        for key in expected:
            assert np.array_equal(expected[key], got[key], equal_nan=True), key
    # an invalid row: reported at the first layer that is it, by its table index
    bad = distinct.copy()
    bad_code = int(index[777])
    bad[bad_code, FIELD_INDEX["in_channels"]] = -5
    first = int(np.flatnonzero(index == bad_code)[0])
    with pytest.raises(ValueError, match=rf"^row {first}, field in_channels"):
        model._compiled.evaluate_archs(bad, offsets, False, 2, True, index)
    # a row of a type the model lacks: 'uncovered' is the first layer that is it
    lacking = distinct.copy()
    absent = next(t for t in LAYER_TYPES if t != "flatten" and t not in model.layer_types)
    lacking[bad_code, 0] = LAYER_TYPES.index(absent)
    out = model._compiled.evaluate_archs(lacking, offsets, False, 1, False, index)
    assert out["uncovered"] == first
    # a bad distinct row that no layer uses changes nothing
    unused = np.concatenate([distinct, bad[bad_code : bad_code + 1]])
    out = model._compiled.evaluate_archs(unused, offsets, True, 1, True, index)
    assert np.array_equal(out["layer_runtime_ms"], plain["layer_runtime_ms"])
    # an index out of the rows is refused
    for wrong in (len(distinct), -1):
        broken = index.copy()
        broken[3] = wrong
        with pytest.raises(ValueError, match="index 3 is out of the rows"):
            model._compiled.evaluate_archs(distinct, offsets, False, 1, False, broken)


def test_prepare_columns_reads_arrow_buffers_and_caches_repeats() -> None:
    """prepare_columns takes an Arrow column's (values, validity, offset) as well as a plain array, and gives
    the same rows; a repeated raw row is prepared once, invalid ones are still found at their own row."""
    import pyarrow as pa

    from neuralpower.layers import FIELD_INDEX, FIELDS, MISSING

    n = 50_000
    rng = np.random.default_rng(1)
    kernel = rng.choice([1, 3, 5], n)
    values = {
        "type": np.zeros(n, dtype=np.int64),
        "in_channels": rng.integers(1, 40, n),
        "in_h": rng.integers(7, 30, n),
        "out_channels": rng.integers(1, 40, n),
        "kernel_h": kernel,
        "kernel_w": kernel,
    }
    stride = pa.array(np.where(rng.random(n) < 0.5, None, 2).tolist(), pa.int64()).slice(0)
    plain: list[Any] = [None] * len(FIELDS)
    arrow: list[Any] = [None] * len(FIELDS)
    for name, v in values.items():
        plain[FIELD_INDEX[name]] = np.asarray(v, dtype=np.int64)
        arrow[FIELD_INDEX[name]] = (np.asarray(v, dtype=np.int64), None, 0)
    plain[FIELD_INDEX["in_w"]] = plain[FIELD_INDEX["in_h"]]
    arrow[FIELD_INDEX["in_w"]] = arrow[FIELD_INDEX["in_h"]]
    # a sliced Arrow column with nulls: values and bitmap at an offset
    sliced = pa.concat_arrays([pa.array([7, 7, 7], pa.int64()), stride]).slice(3)
    validity, data = sliced.buffers()
    values_np = np.frombuffer(data, dtype=np.int64)[sliced.offset : sliced.offset + n]
    arrow[FIELD_INDEX["stride_h"]] = (values_np, np.frombuffer(validity, dtype=np.uint8), sliced.offset)
    plain[FIELD_INDEX["stride_h"]] = np.asarray(sliced.fill_null(MISSING).to_numpy(), dtype=np.int64)
    da, ia, bad_a, _, _ = _ev.prepare_columns(arrow, n, 2)
    db, ib, bad_b, _, _ = _ev.prepare_columns(plain, n, 2)
    assert bad_a == bad_b == -1
    assert np.array_equal(da[ia], db[ib])
    # each distinct raw row is prepared once (per thread, while the cache holds it): 2,000 rows repeated 20
    # times give at most 2,000 per thread
    tiled = [None if c is None else np.tile(c[:2000], 20) for c in plain]
    dt, it, bad_t, _, _ = _ev.prepare_columns(tiled, 40_000, 2)
    assert bad_t == -1 and len(dt) <= 4000 and np.array_equal(dt[it], np.tile(db[ib][:2000], (20, 1)))
    reference = np.full((n, len(FIELDS)), MISSING, dtype=np.int64)
    for f, column in enumerate(plain):
        if column is not None:
            reference[:, f] = column
    assert _ev.prepare(reference)[0] == -1
    assert np.array_equal(da[ia], reference)
    # an invalid row after many repeats of it valid elsewhere: still reported at its own index
    plain[FIELD_INDEX["in_channels"]] = plain[FIELD_INDEX["in_channels"]].copy()
    plain[FIELD_INDEX["in_channels"]][40_000] = -3
    _, _, bad, field, message = _ev.prepare_columns(plain, n, 1)
    assert (bad, FIELDS[field]) == (40_000, "in_channels"), message
    # a value too large for any field, in an Arrow column: refused by the core, with its field
    big = np.asarray(values["out_channels"], dtype=np.int64).copy()
    big[123] = 2**62
    arrow[FIELD_INDEX["out_channels"]] = (big, None, 0)
    _, _, bad, field, message = _ev.prepare_columns(arrow, n, 1)
    assert (bad, FIELDS[field], message) == (123, "out_channels", f"{2**62} is out of range")


def _grouped_doc() -> dict[str, Any]:
    """A linear model whose runtime interval is split on the tokens (two groups) and again on in_features, with energy
    an interval of its own split on the flops."""
    from model_docs import varying_model_doc

    doc = varying_model_doc(["linear", "relu"])
    entry = doc["layer_types"]["linear"]
    entry["runtime_ms"]["interval"] = {
        "coverage": 0.9, "lo": 0.8, "hi": 1.3,
        "split": {"feature": "rows", "value": 64.0,
                  "yes": {"lo": 0.95, "hi": 1.05},
                  "no": {"feature": "in_features", "value": 512.0, "yes": {"lo": 0.7, "hi": 1.6},
                         "no": {"lo": 0.9, "hi": 1.1}}}}
    entry["power_w"]["interval"] = {"coverage": 0.9, "lo": 0.85, "hi": 1.2}
    entry["energy_interval"] = {"coverage": 0.9, "lo": 0.75, "hi": 1.4,
                                "split": {"feature": "flops", "value": 1e8, "yes": {"lo": 0.6, "hi": 1.0},
                                          "no": {"lo": 1.0, "hi": 2.0}}}
    doc["layer_types"]["relu"]["runtime_ms"]["interval"] = {"coverage": 0.9, "lo": 0.5, "hi": 2.0}
    doc["layer_types"]["relu"]["power_w"]["interval"] = {"coverage": 0.9, "lo": 0.9, "hi": 1.1}
    return doc


def test_interval_groups_agree_with_the_numpy_reference(tmp_path: Path) -> None:
    """Each layer's factors are its group's: the compiled evaluator and format.interval_factors agree, per layer and
    in the network sums of predict and score."""
    from neuralpower.models.format import interval_factors, write_model_file

    doc = _grouped_doc()
    path = tmp_path / "grouped.json"
    write_model_file(doc, path)
    model = load_model(path)
    layers = [npw.Layer("linear", tokens=t, in_features=i, out_features=256) for t in (1, 64, 65, 4096)
              for i in (128, 512, 513, 4096)] + [npw.Layer("relu", batch=1, in_channels=64, in_h=8, in_w=8)]
    arch = npw.Architecture("mix", layers)
    p = model.predict(arch)
    X = arch.features()
    linear = np.array([layer.type == "linear" for layer in layers])
    entry = doc["layer_types"]["linear"]
    for name, interval in (("runtime_ms", entry["runtime_ms"]["interval"]),
                           ("energy_mj", entry["energy_interval"])):
        lo, hi = interval_factors(interval, X[linear], FEATURES)
        assert len(set(lo)) > 1  # the groups differ
        value = {"runtime_ms": p.layer_runtime_ms, "energy_mj": p.layer_energy_mj}[name][linear]
        assert close(p.layer_bounds[f"{name}_lo"][linear], value * lo), name
        assert close(p.layer_bounds[f"{name}_hi"][linear], value * hi), name
    assert close(p.layer_bounds["runtime_ms_lo"][~linear], p.layer_runtime_ms[~linear] * 0.5)
    assert close(p.bounds["runtime_ms_hi"], p.layer_bounds["runtime_ms_hi"].sum())
    assert close(p.bounds["energy_mj_lo"], p.layer_bounds["energy_mj_lo"].sum())
    assert p.bounds["power_w_lo"] <= p.power_w <= p.bounds["power_w_hi"]
    scores = model.score([arch], per_layer=True)
    for k in BOUNDS:
        assert close(scores.bounds[k][0], p.bounds[k]), k
    assert scores.per_layer is not None and close(scores.per_layer["runtime_ms_hi"], p.layer_bounds["runtime_ms_hi"])


@pytest.mark.parametrize(
    ("mutate", "fragment"),
    [
        (lambda s: s["no"].update(feature="colour"), "interval.split.no.feature: must be a known feature's name"),
        (lambda s: s["yes"].update(hi=0.5), "interval.split.yes.hi: must be from 1 to 1e6"),
        (lambda s: s.update(value="x"), "interval.split.value: must be a finite number"),
        (lambda s: s.update(no=[1, 2]), "interval.split.no: must be an object"),
    ],
)
def test_corrupt_interval_groups_are_refused(tmp_path: Path, mutate: Any, fragment: str) -> None:
    from neuralpower.models.format import read_model_file

    doc = _grouped_doc()
    mutate(doc["layer_types"]["linear"]["runtime_ms"]["interval"]["split"])
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(doc))
    with pytest.raises(npw.InputError) as info:
        read_model_file(path)
    assert f"layer_types.linear.runtime_ms.{fragment}" in str(info.value) and "\n" not in str(info.value)


def test_the_compiled_builder_refuses_unsafe_groups() -> None:
    from neuralpower import _evaluator

    m = _evaluator.Model()
    with pytest.raises(ValueError, match="children must follow their parent"):
        m.set_interval_groups(0, 0, [3, -1, -1], [1.0, 0.0, 0.0], [0, -1, -1], [2, -1, -1], [0, 1, 1], [1, 1, 1])
    with pytest.raises(ValueError, match="0 <= lo <= 1 <= hi"):
        m.set_interval_groups(0, 1, [-1], [0.0], [-1], [-1], [1.5], [2.0])
    with pytest.raises(ValueError, match="1 to 255 nodes"):
        m.set_interval_groups(0, 2, [], [], [], [], [], [])
    with pytest.raises(ValueError, match="target must be"):
        m.set_interval_groups(0, 3, [-1], [0.0], [-1], [-1], [1.0], [1.0])
