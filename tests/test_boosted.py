"""Gradient-boosted trees: fitted, checked, evaluated by the compiled core as by the NumPy reference."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import pytest

from neuralpower.cli import main
from neuralpower.evaluator import Model
from neuralpower.layers import FEATURES
from neuralpower.models.boosted import fit_boosted, predict_boosted, validate_boosted
from neuralpower.models.format import validate_spec


def _data(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    X = np.zeros((n, len(FEATURES)))
    X[:, FEATURES.index("rows")] = rng.integers(1, 4096, n)
    X[:, FEATURES.index("in_features")] = rng.choice([256, 512, 1024, 4096], n)
    # a kernel that switches at 1024 rows: twice as fast per row above it
    rows = X[:, FEATURES.index("rows")]
    y = 0.01 + rows * X[:, FEATURES.index("in_features")] * np.where(rows > 1024, 1e-8, 2e-8)
    return X, y


def test_boosted_follows_a_switch_that_no_polynomial_does() -> None:
    X, y = _data(3000)
    spec = fit_boosted(X[:2400], y[:2400], FEATURES, features=["rows", "in_features"], target="log", trees=200)
    validate_boosted(spec, FEATURES)
    pred = predict_boosted(spec, X[2400:], FEATURES)
    assert np.mean(np.abs(pred / y[2400:] - 1)) < 0.05
    assert json.loads(json.dumps(spec)) == spec  # plain JSON


def test_the_huber_loss_is_not_pulled_by_outliers() -> None:
    rng = np.random.default_rng(1)
    X = np.zeros((2000, len(FEATURES)))
    X[:, FEATURES.index("flops")] = rng.uniform(0, 1, 2000)
    y = 300 + 200 * X[:, FEATURES.index("flops")]
    noisy = y.copy()
    bad = rng.random(2000) < 0.05
    noisy[bad] *= 0.5  # one reading in twenty at half the power, as short kernels read
    spec = fit_boosted(X, noisy, FEATURES, features=["flops"], target="plain", trees=150)
    error = np.abs(predict_boosted(spec, X, FEATURES) / y - 1)
    # what squared error does with the same rows: pulled toward the low readings
    from sklearn.ensemble import GradientBoostingRegressor

    squared = GradientBoostingRegressor(n_estimators=150, max_depth=5, subsample=0.8, random_state=0)
    pulled = squared.fit(X[:, [FEATURES.index("flops")]], noisy).predict(X[:, [FEATURES.index("flops")]]) / y - 1
    assert np.median(error) < 0.015 and np.mean(error) < np.mean(np.abs(pulled))


def test_histogram_boosting_is_exported_as_scikit_learn_predicts() -> None:
    """fit's power model: histogram-based boosting of log power, its trees exported exactly (as the compiled evaluator
    and the NumPy reference read them), inside the format's limits."""
    from sklearn.ensemble import HistGradientBoostingRegressor

    rng = np.random.default_rng(2)
    X = np.zeros((3000, len(FEATURES)))
    X[:, FEATURES.index("flops")] = rng.uniform(0, 1, 3000)
    X[:, FEATURES.index("rows")] = rng.integers(1, 4096, 3000)
    y = 150 + 500 * X[:, FEATURES.index("flops")] + 50 * np.sin(X[:, FEATURES.index("rows")] / 300)
    spec = fit_boosted(X, y, FEATURES, features=["flops", "rows"], target="log", hist=True)
    validate_spec(spec, FEATURES)
    reference = HistGradientBoostingRegressor(max_iter=600, learning_rate=0.05, max_leaf_nodes=31, min_samples_leaf=10,
                                              l2_regularization=1.0, random_state=0)
    Z = X[:, [FEATURES.index("flops"), FEATURES.index("rows")]]
    expected = np.exp(reference.fit(Z, np.log(y)).predict(Z))
    np.testing.assert_allclose(predict_boosted(spec, X, FEATURES), expected, rtol=1e-12)
    assert np.median(np.abs(expected / y - 1)) < 0.02  # and it follows the data
    power = {"kind": "boosted", **{k: spec[k] for k in ("target", "base", "features", "trees")}}
    from model_docs import layer_entry, model_doc

    runtime = fit_boosted(X, 1 + X[:, FEATURES.index("flops")], FEATURES, features=["flops"], target="log", trees=5)
    model = Model(model_doc({"linear": layer_entry(runtime, power)}))
    import neuralpower as npw

    arch = npw.Architecture("x", [npw.Layer("linear", tokens=t, in_features=512, out_features=64) for t in (1, 900)])
    from neuralpower.models.predict import predict_spec

    np.testing.assert_allclose(model.predict(arch).layer_power_w, predict_spec(power, arch.features(), FEATURES),
                               rtol=1e-12)


def test_compiled_and_reference_agree(tmp_path: Path) -> None:
    X, y = _data(1000)
    spec = fit_boosted(X, y, FEATURES, features=["rows", "in_features", "flops"], target="log", trees=50)
    power = fit_boosted(X, 100 + y, FEATURES, features=["rows"], target="plain", trees=20)
    from model_docs import layer_entry, model_doc

    doc = model_doc({"linear": layer_entry(spec, power)})
    model = Model(doc)
    import neuralpower as npw

    archs = [npw.Architecture(str(t), [npw.Layer("linear", tokens=t, in_features=f, out_features=64, bias=0)])
             for t, f in [(1, 256), (700, 512), (1500, 4096), (4000, 1024)]]
    from neuralpower.models.predict import predict_spec

    for arch in archs:
        p = model.predict(arch)
        feats = arch.features()
        assert p.runtime_ms == pytest.approx(predict_spec(spec, feats, FEATURES)[0], rel=1e-12)
        assert p.power_w == pytest.approx(predict_spec(power, feats, FEATURES)[0], rel=1e-12)


def test_bad_specs_are_refused_in_one_line() -> None:
    X, y = _data(300)
    spec = fit_boosted(X, y, FEATURES, features=["rows"], target="log", trees=3, depth=2)
    for mutate, message in [
        (lambda s: s.update(target="cubic"), "'target' must be"),
        (lambda s: s.update(features=["nope"]), "known feature names"),
        (lambda s: s["trees"][0]["yes"].__setitem__(0, 0), "children after it"),
        (lambda s: s["trees"][0]["value"].__setitem__(0, float("nan")), "finite value"),
        (lambda s: s["trees"][0].pop("no"), "exactly"),
        (lambda s: s.update(trees=[]), "1 to"),
        (lambda s: s["trees"][0]["feature"].__setitem__(0, 7), "feature index"),
    ]:
        bad = copy.deepcopy(spec)
        mutate(bad)
        with pytest.raises(ValueError, match=message) as e:
            validate_spec(bad, FEATURES)
        assert "\n" not in str(e.value)


def _table(path: Path, n: int) -> None:
    X, y = _data(n, seed=3)
    rows = X[:, FEATURES.index("rows")].astype(int)
    feats = X[:, FEATURES.index("in_features")].astype(int)
    lines = ["type,tokens,in_features,out_features,bias,runtime_ms,power_w"]
    lines += [f"linear,{r},{f},64,0,{t:.6g},{200 + 1e3 * t:.6g}" for r, f, t in zip(rows, feats, y, strict=True)]
    path.write_text("\n".join(lines) + "\n")


def test_fit_chooses_boosted_on_a_large_table_only(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _table(tmp_path / "big.csv", 1200)
    assert main(["fit", str(tmp_path / "big.csv"), "--out", str(tmp_path / "big.json"), "--method", "all"]) == 0
    doc = json.loads((tmp_path / "big.json").read_text())
    block = doc["layer_types"]["linear"]["runtime_ms"]
    assert "boosted" in block["models"] and block["metrics"]["boosted"]["trees"] > 0
    assert "boosted" in capsys.readouterr().out
    Model(doc)  # compiles
    _table(tmp_path / "small.csv", 200)
    assert main(["fit", str(tmp_path / "small.csv"), "--out", str(tmp_path / "small.json"), "--method", "all"]) == 0
    doc = json.loads((tmp_path / "small.json").read_text())
    assert "boosted" not in doc["layer_types"]["linear"]["runtime_ms"]["models"]
    # asked for alone, it is fitted whatever the size
    assert main(["fit", str(tmp_path / "small.csv"), "--out", str(tmp_path / "b.json"), "--method", "boosted"]) == 0
    doc = json.loads((tmp_path / "b.json").read_text())
    power = doc["layer_types"]["linear"]["power_w"]["models"]["boosted"]
    assert power["target"] == "log" and 0 < len(power["trees"]) <= 600  # histogram-based, of log power


def test_large_histogram_setting_matches_scikit_learn_and_stops_early() -> None:
    """fit's second boosted setting (``hist="large"``): scikit-learn's histogram boosting with 63-leaf trees at rate
    0.1, always stopped early, exported exactly; 1500 is a ceiling it does not reach on a smooth target."""
    from sklearn.ensemble import HistGradientBoostingRegressor

    rng = np.random.default_rng(3)
    X = np.zeros((4000, len(FEATURES)))
    X[:, FEATURES.index("flops")] = rng.uniform(0, 1, 4000)
    X[:, FEATURES.index("rows")] = rng.integers(1, 4096, 4000)
    y = 0.01 + X[:, FEATURES.index("flops")] * (1 + (X[:, FEATURES.index("rows")] % 64 == 0))
    spec = fit_boosted(X, y, FEATURES, features=["flops", "rows"], target="log", hist="large")
    validate_spec(spec, FEATURES)
    reference = HistGradientBoostingRegressor(max_iter=1500, learning_rate=0.1, max_leaf_nodes=63, min_samples_leaf=10,
                                              l2_regularization=1.0, early_stopping=True, random_state=0)
    Z = X[:, [FEATURES.index("flops"), FEATURES.index("rows")]]
    expected = np.exp(reference.fit(Z, np.log(y)).predict(Z))
    np.testing.assert_allclose(predict_boosted(spec, X, FEATURES), expected, rtol=1e-12)
    assert len(spec["trees"]) == reference.n_iter_ < 1500
    with pytest.raises(ValueError, match="hist must be one of small, large"):
        fit_boosted(X, y, FEATURES, features=["flops"], hist="huge")


def test_gated_parts_predict_each_group_as_its_own_model() -> None:
    """Boosting fitted on disjoint groups of rows and gated into one model predicts each row exactly as its group's
    model does (the other groups' trees give 0), in the NumPy reference and in the compiled evaluator."""
    from model_docs import layer_entry, model_doc

    import neuralpower as npw
    from neuralpower.models.boosted import gate_boosted
    from neuralpower.models.fit import ATTENTION_GROUPS, _boosted_groups
    from neuralpower.models.predict import predict_spec

    rng = np.random.default_rng(3)
    layers = [npw.Layer("attention", batch=2, heads=int(rng.choice([8, 16, 32])), kv_heads=8, head_dim=128,
                        tokens=int(tokens), kv_tokens=int(kv), causal=int(causal))
              for tokens, kv, causal in zip(rng.choice([1, 64, 700, 2048], 900), rng.choice([512, 2048, 4096], 900),
                                            rng.integers(0, 2, 900), strict=True)]
    layers = [lay.replace(kv_tokens=lay.tokens) if lay.tokens > 1 else lay for lay in layers]
    X = npw.Architecture("a", layers).features()
    y = 0.01 + X[:, FEATURES.index("flops")] * 1e-12 * np.where(X[:, FEATURES.index("causal")] > 0, 2.0, 1.0)
    groups = _boosted_groups(X)
    assert groups is not None and [g for g, _ in groups] == list(ATTENTION_GROUPS)
    assert sum(rows.astype(int) for _, rows in groups).tolist() == [1] * len(X)  # each row in one group
    features = ["batch", "tokens", "kv_tokens", "flops", "attn_ctas_128"]
    parts = [(gate, fit_boosted(X[rows], y[rows], FEATURES, features=features, target="log", trees=20, seed=k))
             for k, (gate, rows) in enumerate(groups)]
    spec = gate_boosted(parts)
    validate_boosted(spec, FEATURES)
    assert len(spec["trees"]) == 3 * 21 and set(spec["features"]) == {*features, "causal"}
    want = np.zeros(len(X))
    for (_, part), (_, rows) in zip(parts, groups, strict=True):
        want[rows] = predict_boosted(part, X[rows], FEATURES)
    assert np.allclose(predict_boosted(spec, X, FEATURES), want, rtol=1e-12)
    model = Model(model_doc({"attention": layer_entry(spec, fit_boosted(X, 100 + y, FEATURES, features=["flops"],
                                                                        target="plain", trees=5))}))
    got = model.predict(npw.Architecture("a", layers)).layer_runtime_ms
    assert np.allclose(got, want, rtol=1e-9)
    assert np.allclose(predict_spec(spec, X, FEATURES), want, rtol=1e-12)
    with pytest.raises(ValueError, match="targets differ"):
        gate_boosted([parts[0], (parts[1][0], {**parts[1][1], "target": "plain"})])
    few = X[[k for k, lay in enumerate(layers) if lay.tokens > 1]]  # no decode rows: one model for all
    assert _boosted_groups(few) is None
