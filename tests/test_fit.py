"""Fitting: recovery of a known sparse ground truth, the JSON model format, fallbacks, reports, prediction."""

from __future__ import annotations

import copy
import json
import math
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import neuralpower as npw
from neuralpower import InputError, zoo
from neuralpower.cli import main
from neuralpower.layers import FEATURES, LAYER_TYPES
from neuralpower.models.data import read_measurements
from neuralpower.models.fit import ATTENTION_BOOSTED_FEATURES, GEMM_BOOSTED_FEATURES, FitOptions, fit_models
from neuralpower.models.format import SCHEMA_VERSION, read_model_file, validate_model, write_model_file
from neuralpower.models.poly import fit_poly
from neuralpower.models.predict import epr, predict_layers, predict_network
from neuralpower.models.synthetic import synthetic_table

NOISE = 0.03


@pytest.fixture(scope="module")
def table_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("fit") / "synthetic.csv"
    pacsv.write_csv(synthetic_table(2000, noise=NOISE, seed=1), path)
    return path


@pytest.fixture(scope="module")
def model(table_path: Path) -> dict[str, Any]:
    return fit_models(read_measurements([table_path]), FitOptions(method="all"))


def term_names(spec: dict[str, Any]) -> set[str]:
    names = []
    for term in spec["terms"]:
        parts = []
        for i, e in term["powers"]:
            inp = spec["inputs"][i]
            name = inp["feature"] if inp["transform"] == "identity" else f"{inp['transform']}({inp['feature']})"
            parts += [name] * e
        names.append("*".join(sorted(parts)))
    return set(names)


def test_fit_recovers_the_ground_truth(model: dict[str, Any]) -> None:
    conv = model["layer_types"]["conv2d"]
    for target in ("runtime_ms", "power_w"):
        block = conv[target]
        assert block["fallback"] is None
        # held-out error within a few percent of the 3 % noise
        assert block["metrics"]["poly"]["rmspe"] < 2 * NOISE * 100, block["metrics"]
        assert block["metrics"][block["default"]]["rmspe"] < 2 * NOISE * 100
        # and far better than the baselines
        assert block["metrics"]["poly"]["rmspe"] < block["metrics"]["roofline"]["rmspe"]
        assert block["metrics"]["poly"]["rmspe"] < block["metrics"]["flops_linear"]["rmspe"]
        assert set(block["target_modes"]) == {"plain", "relative", "log"}
        assert block["models"]["poly"]["target"] == min(block["target_modes"], key=block["target_modes"].get)
    assert conv["runtime_ms"]["models"]["tree"]["kind"] == "tree"


def test_the_tree_setting_is_chosen_on_validation_rows(model: dict[str, Any]) -> None:
    for t, entry in model["layer_types"].items():
        for target in ("runtime_ms", "power_w"):
            block = entry[target]
            if block["fallback"] is not None:
                continue
            settings = block["tree_settings"]
            assert set(settings) == {"shallow", "deep"}
            assert block["metrics"]["tree"]["setting"] == min(settings, key=settings.get)
            leaf = block["models"]["tree"]["leaf_features"]
            # GEMM-shaped types weigh the output padded to whole tiles as well
            gemm = t in ("conv2d", "conv_transpose2d", "linear", "matmul")
            assert ("tile_flops_128x128" in leaf) == gemm and "flops" in leaf, (t, leaf)


@pytest.mark.parametrize(
    ("target", "mode", "truth"),
    [
        ("runtime_ms", "relative", {"flops", "bytes_moved", "batch*out_channels"}),
        ("power_w", "plain", {"log1p(flops)", "in_channels"}),
    ],
)
def test_the_true_terms_are_kept(table_path: Path, target: str, mode: str, truth: set[str]) -> None:
    data = read_measurements([table_path])
    ok = np.isfinite(data.targets[target])
    config = ["batch", "in_channels", "in_h", "out_channels", "out_h", "kernel_h", "stride_h", "padding_h", "groups"]
    spec = fit_poly(data.features[ok], data.targets[target][ok], FEATURES, config=config, mode=mode)
    assert truth <= term_names(spec)
    # sparse: most candidate terms are dropped
    assert len(spec["terms"]) < spec["candidates"] / 2


def test_model_file_round_trip(model: dict[str, Any], tmp_path: Path) -> None:
    path = tmp_path / "m.json"
    write_model_file(model, path)
    loaded = read_model_file(path)
    assert loaded == json.loads(json.dumps(model))
    assert loaded["schema_version"] == SCHEMA_VERSION and loaded["dtype"] == "fp32"
    assert loaded["executor"] == "synthetic" and "scikit-learn" in loaded["software"]
    arch = zoo.build("cifar_conv6").with_batch(4)
    convs = npw.Architecture("convs", [layer for layer in arch if layer.type == "conv2d"])
    a, b = predict_network(model, convs), predict_network(loaded, convs)
    assert a.runtime_ms == b.runtime_ms and a.energy_mj == b.energy_mj
    ranges = loaded["layer_types"]["conv2d"]["ranges"]
    assert ranges["batch"] == [1.0, 64.0] and "flops" in ranges


def test_network_prediction_sums_layers(model: dict[str, Any]) -> None:
    layers = [layer for layer in zoo.build("resnet18", batch=2) if layer.type == "conv2d"]
    arch = npw.Architecture("convs", [*layers, npw.Layer("flatten", batch=2, in_channels=512, in_h=7, in_w=7)])
    p = predict_network(model, arch)
    assert p.runtime_ms == pytest.approx(p.layer_runtime_ms.sum())
    assert p.energy_mj == pytest.approx(float(np.sum(p.layer_runtime_ms * p.layer_power_w)))
    assert p.power_w == pytest.approx(p.energy_mj / p.runtime_ms)
    assert p.layer_runtime_ms[-1] == 0 and p.types[-1] == "flatten"  # a view costs nothing
    assert (p.layer_runtime_ms[:-1] > 0).all() and (p.layer_power_w[:-1] > 0).all()
    # the 7x7 stem conv of ResNet has a kernel the synthetic sweep saw; 224x224 inputs are outside its sizes
    assert p.extrapolated[0]
    other = "poly" if model["layer_types"]["conv2d"]["runtime_ms"]["default"] == "tree" else "tree"
    assert predict_network(model, arch, method=other).runtime_ms != p.runtime_ms  # the method asked for
    with pytest.raises(InputError, match="the model was fit for fp32, convs is fp16"):
        predict_network(model, arch.with_dtype("fp16"))
    with pytest.raises(InputError, match="the model has no relu model"):
        predict_network(model, npw.Architecture("r", [npw.Layer("relu", in_channels=3)]))


def test_epr() -> None:
    assert epr(0.25, 100.0, 1.0) == 25.0
    assert epr(0.25, 100.0, 2.0) == pytest.approx(6.25)
    assert npw.epr(0.1, 50.0) == pytest.approx(5.0)
    with pytest.raises(InputError):
        epr(1.5, 10.0)


def test_fallbacks(tmp_path: Path) -> None:
    few = synthetic_table(12, seed=3).drop_columns(["power_w"])
    relu = pa.table(
        {
            "type": ["relu"] * 2,
            "in_channels": [64, 128],
            "in_h": [8, 8],
            "in_w": [8, 8],
            "runtime_ms": [0.01, 0.02],
            "power_w": [None, None],
        },
        schema=pa.schema(
            [
                *(pa.field(n, t) for n, t in [("type", pa.string())]),
                pa.field("in_channels", pa.int64()),
                pa.field("in_h", pa.int64()),
                pa.field("in_w", pa.int64()),
                pa.field("runtime_ms", pa.float64()),
                pa.field("power_w", pa.float64()),
            ]
        ),
    )
    power = synthetic_table(40, seed=4)
    paths = []
    for i, t in enumerate((few, relu, power)):
        paths.append(tmp_path / f"t{i}.csv")
        pacsv.write_csv(t, paths[-1])
    doc = fit_models(read_measurements(paths))
    validate_model(doc)
    relu_block = doc["layer_types"]["relu"]
    assert relu_block["runtime_ms"]["default"] == "constant"
    assert "only 2 rows" in relu_block["runtime_ms"]["fallback"]
    assert relu_block["power_w"]["default"] == "constant"
    assert "no measurements of this layer type" in relu_block["power_w"]["fallback"]
    conv = doc["layer_types"]["conv2d"]
    assert conv["runtime_ms"]["fallback"] is None  # 52 rows
    assert conv["power_w"]["default"] == "roofline" and "fewer than 30" in conv["power_w"]["fallback"]


@pytest.mark.parametrize(
    ("mutate", "fragment"),
    [
        (lambda d: d.update(schema_version=SCHEMA_VERSION + 1), "newer than this neuralpower reads"),
        (lambda d: d.update(schema="other"), "not a neuralpower model file"),
        (
            lambda d: d["layer_types"].update(conv3d=d["layer_types"]["conv2d"]),
            "layer_types.conv3d: unknown layer type",
        ),
        (
            lambda d: d["layer_types"]["conv2d"]["runtime_ms"]["models"]["poly"]["terms"][0].update(coef="x"),
            "terms[0].coef must be a finite number",
        ),
        (
            lambda d: d["layer_types"]["conv2d"]["runtime_ms"]["models"]["poly"]["terms"][0].update(powers=[[0, 99]]),
            "exponent 1..8",
        ),
        (
            lambda d: d["layer_types"]["conv2d"]["runtime_ms"]["models"]["poly"]["terms"][0].update(powers=[[999, 1]]),
            "input index",
        ),
        (lambda d: d["layer_types"]["conv2d"]["power_w"].update(default="nope"), "must name one of its models"),
        (lambda d: d["layer_types"]["conv2d"]["ranges"].update(batch=[1]), "ranges.batch"),
        (lambda d: d.update(features=["batch", "colour"]), "unknown feature"),
        (lambda d: d["layer_types"]["conv2d"].update(energy_interval={"coverage": 0.9, "lo": 0.9, "hi": -3}),
         "layer_types.conv2d.energy_interval.hi: must be from 1 to 1e6"),
        (lambda d: d["layer_types"]["conv2d"].update(energy_interval=[0.9, 1.1]),
         "layer_types.conv2d.energy_interval: must be an object"),
    ],
)
def test_corrupt_model_files_are_refused(model: dict[str, Any], tmp_path: Path, mutate: Any, fragment: str) -> None:
    doc = copy.deepcopy(model)
    mutate(doc)
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(doc))
    with pytest.raises(InputError) as info:
        read_model_file(path)
    assert fragment in str(info.value) and str(path) in str(info.value)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize(
    ("content", "fragment"),
    [
        (b"", "not a valid JSON"),
        (b"\x00\xff", "not a valid JSON"),
        (b'{"a": NaN}', "not a valid JSON"),
        (b"[1, 2]", "must hold a JSON object"),
        (b"[" * 100000, "not a valid JSON"),
    ],
)
def test_non_model_files(tmp_path: Path, content: bytes, fragment: str) -> None:
    path = tmp_path / "x.json"
    path.write_bytes(content)
    with pytest.raises(InputError, match=fragment):
        read_model_file(path)


def _mutations(doc: Any, rng: np.random.Generator) -> Any:
    """Replace one random value deep in the document with a hostile one."""
    node = doc
    for _ in range(12):
        if isinstance(node, dict) and node:
            key = list(node)[rng.integers(len(node))]
            if rng.random() < 0.3 or not isinstance(node[key], dict | list):
                node[key] = rng.choice(
                    np.array([None, "x", -1, 0, 1e308, 2**70, [], {}, [[0, 1]], True, 3.5, [1, 2, 3]], dtype=object)
                )
                return doc
            node = node[key]
        elif isinstance(node, list) and node:
            i = int(rng.integers(len(node)))
            if rng.random() < 0.3 or not isinstance(node[i], dict | list):
                node[i] = rng.choice(np.array([None, "x", -5, 1e308, [], {}, 7], dtype=object))
                return doc
            node = node[i]
        else:
            return doc
    return doc


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(seed=st.integers(0, 2**32 - 1))
def test_fuzzed_model_files_load_or_fail_cleanly(model: dict[str, Any], tmp_path: Path, seed: int) -> None:
    doc = _mutations(json.loads(json.dumps(model)), np.random.default_rng(seed))
    path = tmp_path / "fuzz.json"
    path.write_text(json.dumps(doc))
    try:
        loaded = read_model_file(path)
    except InputError as e:
        assert "\n" not in str(e)
        return
    arch = npw.Architecture("c", [layer for layer in zoo.build("cifar_conv6") if layer.type == "conv2d"])
    for method in (None, "poly", "tree", "roofline", "flops_linear"):
        p = predict_network(loaded, arch, method)
        # hostile but valid coefficients may overflow to infinity; never NaN, never negative
        assert p.runtime_ms >= 0 and not math.isnan(p.energy_mj)


def test_measurement_validation(tmp_path: Path) -> None:
    base = "type,in_channels,in_h,in_w,runtime_ms,power_w\n"
    cases = [
        ("relu,4,2,2,-1,\n", "row 2, column runtime_ms", "positive finite"),
        ("relu,4,2,2,0.1,\nrelu,4,2,2,fast,\n", "row 3, column runtime_ms", "'fast' is not a number"),
        ("relu,4,2,2,0.1,nan\n", "row 2, column power_w", "not a measurement"),
        ("relu,4,2,2,inf,\n", "row 2, column runtime_ms", "not a measurement"),
    ]
    for rows, where, fragment in cases:
        path = tmp_path / "m.csv"
        path.write_text(base + rows)
        with pytest.raises(InputError) as info:
            read_measurements([path])
        assert where in str(info.value) and fragment in str(info.value)
    path = tmp_path / "plain.csv"
    path.write_text("type,in_channels\nrelu,4\n")
    with pytest.raises(InputError, match="not a measurement table"):
        read_measurements([path])


def test_predict_layers_rejects_nothing_valid(model: dict[str, Any]) -> None:
    arch = zoo.build("cifar_conv6")
    rows = arch.rows()
    conv = rows[:, 0] == 0
    runtime, power, extra = predict_layers(model, rows[conv, 0], arch.features()[conv])
    assert runtime.shape == power.shape == extra.shape == (int(conv.sum()),)


def test_fit_cli(table_path: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "model.json"
    report = tmp_path / "report"
    code = main(["fit", str(table_path), "--out", str(out), "--method", "all", "--report", str(report)])
    stdout = capsys.readouterr().out
    assert code == 0
    assert "conv2d  runtime_ms" in stdout and "roofline" in stdout
    assert read_model_file(out)["method"] == "all"
    assert (report / "summary.csv").exists()
    summary = (report / "summary.csv").read_text().splitlines()
    assert summary[0].startswith("type,target,rows,default") and len(summary) == 3
    for target in ("runtime_ms", "power_w"):
        assert (report / f"conv2d_{target}.png").read_bytes()[:4] == b"\x89PNG"


def test_fit_cli_errors(tmp_path: Path, table_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_text("type,in_channels,in_h,in_w,runtime_ms\nrelu,4,2,2,-3\n")
    assert main(["fit", str(bad), "--out", str(tmp_path / "m.json")]) == 2
    err = capsys.readouterr().err
    assert (
        err.strip() == f"neuralpower fit: error: {bad}, row 2, column runtime_ms: -3.0 is not a measurement: "
        "give a positive finite number or leave the cell empty"
    )
    assert not (tmp_path / "m.json").exists()
    mixed = tmp_path / "fp16.csv"
    t = synthetic_table(40, seed=5).append_column("dtype", pa.array(["fp16"] * 40))
    pacsv.write_csv(t, mixed)
    assert main(["fit", str(table_path), str(mixed), "--out", str(tmp_path / "m.json")]) == 2
    assert "the tables mix dtypes (fp32, fp16)" in capsys.readouterr().err


def test_flagged_rows_are_left_out(tmp_path: Path) -> None:
    path = tmp_path / "flags.csv"
    path.write_text(
        "type,in_channels,in_h,in_w,runtime_ms,power_w,flags\n"
        "relu,4,2,2,0.1,100,\n"
        "relu,4,2,2,0.2,110,throttled\n"
        "relu,4,2,2,0.3,120,zero_delta;disagree\n"
    )
    data = read_measurements([path])
    assert np.isnan(data.targets["runtime_ms"]).tolist() == [False, True, False]
    assert np.isnan(data.targets["power_w"]).tolist() == [False, True, True]


def test_combine_trials_takes_the_median_of_clean_trials() -> None:
    from neuralpower.models.fit import combine_trials

    rows = np.array([[0, 5], [1, 2], [0, 5], [0, 5], [1, 2], [2, 2]], dtype=np.int64)
    y = np.array([1.0, 10.0, 3.0, 100.0, 20.0, 7.0])
    first, median, counts = combine_trials(rows, y)
    assert first.tolist() == [0, 1, 5] and median.tolist() == [3.0, 15.0, 7.0] and counts.tolist() == [3, 2, 1]
    noisy = np.array([False, True, False, True, False, True])
    first, median, counts = combine_trials(rows, y, noisy)
    # a noisy trial counts only where its configuration has no clean one
    assert median.tolist() == [2.0, 20.0, 7.0] and counts.tolist() == [2, 1, 1]


def _repeated(table: pa.Table, times: int) -> pa.Table:
    return pa.concat_tables([table] * times)


def test_splits_are_grouped_by_configuration(tmp_path: Path) -> None:
    # three trials of each of 300 configurations: no configuration may be on both sides of the split
    path = tmp_path / "trials.csv"
    pacsv.write_csv(_repeated(synthetic_table(300, noise=0.0, power_fraction=1.0, seed=3), 3), path)
    doc = fit_models(read_measurements([path]), FitOptions(method="tree"))
    block = doc["layer_types"]["conv2d"]["runtime_ms"]
    assert block["rows"] == 300 and block["trials"] == 900
    m = block["metrics"]["tree"]
    assert m["rows_train"] + m["rows_test"] == 300 and m["rows_test"] == 60


def test_a_roofline_law_is_fitted_as_one(tmp_path: Path) -> None:
    # runtime = c + MACs / P + bytes / B with 3 % noise: the fit must reach the noise floor and large layers
    # must not come out low (the polynomial reached 8.3 % and networks came out 12 % low)
    table = synthetic_table(1500, noise=0.0, power_fraction=0.0, seed=5)
    data = read_measurements([_write_csv(tmp_path / "law.csv", table)])
    macs = data.features[:, FEATURES.index("macs")]
    moved = data.features[:, FEATURES.index("bytes_moved")]
    rng = np.random.default_rng(0)
    truth = 0.01 + macs / 5e9 + moved / 2e8
    table = table.set_column(table.column_names.index("runtime_ms"), "runtime_ms",
                             pa.array(truth * (1 + NOISE * rng.standard_normal(len(truth)))))
    holdout: dict[Any, Any] = {}
    doc = fit_models(read_measurements([_write_csv(tmp_path / "law.csv", table)]),
                     FitOptions(method="all", holdout=holdout))
    block = doc["layer_types"]["conv2d"]["runtime_ms"]
    assert block["metrics"][block["default"]]["rmspe"] < 1.5 * NOISE * 100, block["metrics"]
    y, predictions = holdout[("conv2d", "runtime_ms")]
    pred = predictions[block["default"]]
    large = y >= np.quantile(y, 0.9)
    assert abs(np.mean(pred[large] / y[large] - 1)) < 0.03
    assert 85 <= block["interval"]["test_coverage"] <= 95


def _write_csv(path: Path, table: pa.Table) -> Path:
    pacsv.write_csv(table, path)
    return path


@pytest.mark.parametrize("rows", [500, 60])  # one validation split; k-fold choice (below KFOLD_BELOW rows)
def test_the_model_is_the_same_whatever_the_number_of_threads(rows: int, tmp_path: Path) -> None:
    import warnings

    data = read_measurements([_write_csv(tmp_path / "t.csv", synthetic_table(rows, noise=NOISE, seed=3))])
    options = FitOptions(method="all", degree=1)  # (degree 1 keeps it quick)
    one = fit_models(data, replace(options, jobs=1))
    before = list(warnings.filters)
    many = fit_models(data, replace(options, jobs=8))  # more threads than tasks: the folds of LassoCV share them
    assert warnings.filters == before  # the threads' warning filters are the caller's again
    assert {**one, "created": None} == {**many, "created": None}
    with pytest.raises(ValueError, match="jobs must be at least 1"):
        fit_models(data, FitOptions(jobs=0))


def test_a_failing_fit_drops_the_fits_not_started() -> None:
    import time

    from neuralpower.models.fit import _run_all

    ran: list[int] = []

    def fails(jobs: int) -> int:
        raise ValueError("bad rows")

    def fits(k: int) -> Any:
        def task(jobs: int) -> int:
            time.sleep(0.02)
            ran.append(k)
            return k

        return task

    assert _run_all([fits(k) for k in range(5)], 2) == list(range(5))  # in order, whichever thread ran them
    ran.clear()
    with pytest.raises(ValueError, match="bad rows"):
        _run_all([fails, *(fits(k) for k in range(40))], 2)
    assert len(ran) < 10  # the queued ones were dropped (Executor.map cancels them), not run to the end


def test_the_boosted_setting_is_chosen_on_validation_rows(tmp_path: Path) -> None:
    """Runtime compares Friedman's boosting with the large histogram setting, power the small and the large histogram
    settings; each target keeps the one of lower validation RMSPE and says which (``boosted_settings``)."""
    path = tmp_path / "synthetic.csv"
    pacsv.write_csv(synthetic_table(300, noise=NOISE, seed=4), path)
    doc = fit_models(read_measurements([path]), FitOptions(method="boosted"))
    seen = 0
    gemm_shaped = {"conv2d", "conv_transpose2d", "linear", "matmul"}
    for name, entry in doc["layer_types"].items():
        for target, compared in (("runtime_ms", {"log", "hist_large"}), ("power_w", {"hist", "hist_large"})):
            block = entry[target]
            if block["fallback"] is not None:
                continue
            # a GEMM-shaped type's boosting also splits on its output tiles, attention on its thread blocks
            used = set(block["models"]["boosted"]["features"])
            assert (set(GEMM_BOOSTED_FEATURES) <= used) == (name in gemm_shaped), name
            assert not used & set(ATTENTION_BOOSTED_FEATURES), name
            settings = block["boosted_settings"]
            assert set(settings) == compared
            assert block["metrics"]["boosted"]["setting"] == min(settings, key=settings.get)
            assert block["metrics"]["boosted"]["validation_rmspe"] == min(settings.values())
            seen += 1
    assert seen >= 2


def test_energy_interval_shares_the_targets_partition(model: dict[str, Any]) -> None:
    """Runtime and power are split by configuration alike (a configuration with both measured is a test row of both
    or of neither), so energy's interval is calibrated on configurations both fits left out, and holds about 90 % of
    the configurations both held out."""
    for t, entry in model["layer_types"].items():
        rt, pw = entry["runtime_ms"], entry["power_w"]
        if rt["fallback"] is not None or pw["fallback"] is not None:
            continue
        energy = entry["energy_interval"]
        assert energy["lo"] <= 1 <= energy["hi"] and 75 <= energy["test_coverage"] <= 100, (t, energy)


def test_a_partition_puts_a_configuration_on_one_side_for_every_target() -> None:
    from neuralpower.models.fit import _Partition

    parts = _Partition.draw(1000, 0.2, seed=0)
    every = np.arange(1000)
    some = np.sort(np.random.default_rng(1).choice(1000, 300, replace=False))  # power measured on some of them
    train, test = parts.split(every)
    sub_train, sub_test = parts.split(some)
    assert len(test) == 200 and 40 <= len(sub_test) <= 80
    assert set(some[sub_test]) <= set(every[test]) and set(some[sub_train]) <= set(every[train])
    _, val = parts.validation(every, train)
    _, sub_val = parts.validation(some, sub_train)
    assert set(some[sub_val]) <= set(every[val])
    # a subset the shared draw would leave without test rows gets its own split
    lonely = every[parts.test_rank >= 200][:40]
    train, test = parts.split(lonely)
    assert len(test) == 8 and len(train) == 32


def test_intervals_are_split_where_their_errors_differ() -> None:
    """Where one layer type holds kernels of different error sizes (here: GEMMs of up to 2048 tokens measured to
    1 %, larger ones to 15 %), one interval would hold nearly all of the first and too few of the second: fit splits
    it into groups, each holding about 90 % of its held-out rows."""
    from neuralpower.models.data import Measurements
    from neuralpower.models.format import interval_factors

    rng = np.random.default_rng(5)
    n = 6000
    tokens = rng.integers(1, 4096, n)
    width = rng.choice([256, 512, 1024, 2048], n)
    rows = np.stack([npw.Layer("linear", tokens=int(t), in_features=int(w), out_features=int(w)).row
                     for t, w in zip(tokens, width, strict=True)])
    truth = 1e-3 + 2e-12 * tokens * width * width
    noise = np.where(tokens <= 2048, 0.01, 0.15)
    runtime = truth * np.exp(rng.normal(0, 1, n) * noise)
    data = Measurements.from_rows(rows, runtime, np.full(n, np.nan), gpu="test", executor="test", source="test")
    doc = fit_models(data, FitOptions(method="poly", degree=2))
    interval = doc["layer_types"]["linear"]["runtime_ms"]["interval"]
    assert "split" in interval, interval
    assert 85 <= interval["test_coverage"] <= 95
    # the groups' factors: narrow where the errors are small, wide where they are large
    X = npw.Architecture("two", [npw.Layer("linear", tokens=t, in_features=1024, out_features=1024)
                                 for t in (100, 3000)]).features()
    lo, hi = interval_factors(interval, X, FEATURES)
    assert hi[0] - lo[0] < 0.5 * (hi[1] - lo[1]), (lo, hi)


def test_no_energy_interval_where_the_targets_validation_rows_do_not_meet() -> None:
    """Power measured on a few configurations is validated by cross-validation, runtime on one split: their
    validation rows may share no configuration, and energy then gets no interval of its own (rather than a crash)."""
    from neuralpower.models.fit import _config_features, _energy_interval

    X = np.ones((20, len(FEATURES)))
    y = np.linspace(1, 2, 20)
    runtime = {"val": (np.arange(20), y, y, X), "test": (np.arange(20), y, y, X)}
    power = {"val": (np.arange(100, 120), y, y, X), "test": (np.arange(100, 120), y, y, X)}
    assert _energy_interval(runtime, power, _config_features(0)) is None
    both = {"val": (np.arange(20), y, y * 1.01, X), "test": (np.arange(20), y, y, X)}
    assert _energy_interval(runtime, both, _config_features(0)) is not None


def test_attention_intervals_are_grouped_by_kernel_kind() -> None:
    """Attention's decode, prefill and encoder kernels each get their own interval (then split further as any group),
    so a kind whose errors are wider is not hidden among the others: here the encoder's, a tenth of the rows."""
    import neuralpower as npw
    from neuralpower.models.fit import _config_features, _group_features, _interval
    from neuralpower.models.format import interval_factors

    rng = np.random.default_rng(5)
    kinds = {"decode": (1, 0, 3000), "prefill": (512, 1, 2400), "encoder": (512, 0, 600)}
    layers, spread = [], []
    for tokens, causal, n in kinds.values():
        for _ in range(n):
            kv = int(rng.choice([512, 1024, 4096]))
            layers.append(npw.Layer("attention", batch=1, heads=int(rng.choice([8, 16, 32])), kv_heads=8, head_dim=128,
                                    tokens=tokens if tokens == 1 else kv, kv_tokens=kv, causal=causal))
        spread.append(np.full(n, 0.12 if n == 600 else 0.02))
    X = npw.Architecture("a", layers).features()
    sigma = np.concatenate(spread)
    pred = np.ones(len(X))
    y = np.exp(rng.normal(0, sigma))
    code = LAYER_TYPES.index("attention")
    interval = _interval(y, pred, X, _group_features(X, _config_features(code)))
    assert interval is not None
    split = interval["split"]
    assert (split["feature"], split["value"]) == ("tokens", 1.5)  # decode on its own side
    assert (split["no"]["feature"], split["no"]["value"]) == ("causal", 0.5)  # then encoder and prefill
    lo, hi = interval_factors(interval, X, FEATURES)
    held = (y >= lo) & (y <= hi)
    encoder = sigma == 0.12
    assert 0.85 <= held[encoder].mean() <= 0.95 and 0.85 <= held[~encoder].mean() <= 0.95
    assert hi[encoder].min() > 1.1 > hi[~encoder].max()
