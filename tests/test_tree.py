"""Tree-structured linear models (FastDeepIoT): recovery of a known channel-multiple effect on synthetic data, JSON
round trips, and one-line ValueErrors for every kind of corrupted or hostile spec."""

from __future__ import annotations

import copy
import functools
import json
import math
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from neuralpower.models.tree import MAX_DEPTH, MAX_NODES, fit_tree, predict_tree, validate_tree

NAMES = [
    "batch",
    "in_channels",
    "out_channels",
    "kernel",
    "hw",
    "stride",
    "groups",
    "noise_feature",
    "flops",
    "bytes_moved",
    "params",
]
SPLIT = NAMES[:8]
LEAF = ["flops", "bytes_moved", "params"]
A_FLOPS, B_BYTES, C_CONST = 2e-13, 1e-11, 5e-6


def make_data(
    n: int, seed: int, *, penalty: float = 1.6, noise: float = 0.02
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Random convolution-like rows; truth ``a*flops + b*bytes + c``, times `penalty` when ``out_channels % 8``
    is not 0 (the FastDeepIoT effect). Returns features, noisy runtimes (multiplicative noise) and the truth."""
    rng = np.random.default_rng(seed)
    batch = rng.integers(1, 9, n).astype(float)
    cin = rng.integers(1, 257, n).astype(float)
    cout = rng.integers(1, 257, n).astype(float)
    kernel = rng.choice([1.0, 3.0, 5.0], n)
    hw = rng.choice([7.0, 14.0, 28.0, 56.0], n)
    stride = rng.choice([1.0, 2.0], n)
    groups = np.ones(n)
    noise_feature = rng.random(n)
    out_hw = hw / stride
    flops = 2 * batch * cin * cout * kernel**2 * out_hw**2
    params = cin * cout * kernel**2
    bytes_moved = 4 * (batch * cin * hw**2 + batch * cout * out_hw**2 + params)
    X = np.column_stack([batch, cin, cout, kernel, hw, stride, groups, noise_feature, flops, bytes_moved, params])
    truth = (A_FLOPS * flops + B_BYTES * bytes_moved + C_CONST) * np.where(cout % 8 != 0, penalty, 1.0)
    y = truth * np.exp(noise * rng.standard_normal(n))
    return X, y, truth


def rel_rmse(pred: np.ndarray, ref: np.ndarray) -> float:
    return float(np.sqrt(np.mean((pred / ref - 1.0) ** 2)))


def nodes(node: dict[str, Any], depth: int = 0) -> Iterator[tuple[dict[str, Any], int]]:
    yield node, depth
    if "leaf" not in node:
        yield from nodes(node["yes"], depth + 1)
        yield from nodes(node["no"], depth + 1)


def tree_depth(spec: dict[str, Any]) -> int:
    return max(d for _, d in nodes(spec["root"]))


@functools.cache
def fitted() -> tuple[dict[str, Any], float]:
    """The FastDeepIoT-effect model on 3000 rows, and the seconds its fit took."""
    X, y, _ = make_data(3000, 0)
    start = time.perf_counter()
    spec = fit_tree(X, y, NAMES, split_features=SPLIT, leaf_features=LEAF)
    return spec, time.perf_counter() - start


@functools.cache
def small_spec_json() -> str:
    """A small fitted tree with both kinds of test, as JSON, for mutation tests."""
    X, y, _ = make_data(400, 3)
    y *= np.where(X[:, NAMES.index("in_channels")] > 128, 1.3, 1.0)
    return json.dumps(fit_tree(X, y, NAMES, split_features=SPLIT, leaf_features=LEAF, max_depth=2, min_leaf=10))


def small_spec() -> dict[str, Any]:
    spec: dict[str, Any] = json.loads(small_spec_json())
    return spec


# -- fitting ---------------------------------------------------------------------------------------------------


def test_recovers_the_multiple_of_8_effect() -> None:
    spec, seconds = fitted()
    root = spec["root"]
    assert (root["feature"], root["test"], root["value"]) == ("out_channels", "mod", 8)
    assert root["n"] == 3000 and root["yes"]["n"] + root["no"]["n"] == 3000
    X, y, truth = make_data(2000, 1)
    pred = predict_tree(spec, X, NAMES)
    assert np.all(pred > 0)
    assert rel_rmse(pred, y) < 0.05  # noise is 2 %
    assert rel_rmse(pred, truth) < 0.01
    # The yes side (multiples of 8) is the fast one.
    yes_only = np.mod(X[:, NAMES.index("out_channels")], 8) == 0
    assert np.mean(pred[~yes_only] / truth[~yes_only]) == pytest.approx(1.0, abs=0.01)
    assert seconds < 20.0


def test_leaf_weights_non_negative_and_counts_consistent() -> None:
    spec, _ = fitted()
    leaves = [node for node, _ in nodes(spec["root"]) if "leaf" in node]
    for leaf in leaves:
        assert leaf["leaf"]["intercept"] >= 0
        assert len(leaf["leaf"]["weights"]) == len(LEAF)
        assert all(w >= 0 for w in leaf["leaf"]["weights"])
        assert leaf["n"] >= 20
    assert sum(leaf["n"] for leaf in leaves) == 3000
    for node, _ in nodes(spec["root"]):
        if "leaf" not in node:
            assert node["n"] == node["yes"]["n"] + node["no"]["n"]
    assert tree_depth(spec) <= 4


def test_linear_truth_gives_a_shallow_accurate_tree() -> None:
    X, y, _ = make_data(3000, 4, penalty=1.0)
    spec = fit_tree(X, y, NAMES, split_features=SPLIT, leaf_features=LEAF)
    assert tree_depth(spec) <= 1
    Xt, yt, tt = make_data(2000, 5, penalty=1.0)
    pred = predict_tree(spec, Xt, NAMES)
    assert rel_rmse(pred, yt) < 0.03
    assert rel_rmse(pred, tt) < 0.01


def test_exact_linear_truth_recovers_raw_weights() -> None:
    """Column scaling for the solver is undone: the stored weights are the truth's, in raw feature units."""
    X, y, _ = make_data(500, 6, penalty=1.0, noise=0.0)
    spec = fit_tree(X, y, NAMES, split_features=SPLIT, leaf_features=LEAF)
    assert "leaf" in spec["root"]
    leaf = spec["root"]["leaf"]
    assert leaf["intercept"] == pytest.approx(C_CONST, rel=1e-6)
    assert leaf["weights"][0] == pytest.approx(A_FLOPS, rel=1e-6)
    assert leaf["weights"][1] == pytest.approx(B_BYTES, rel=1e-6)
    assert leaf["weights"][2] == pytest.approx(0.0, abs=1e-20)


def test_absolute_error_mode() -> None:
    X, y, truth = make_data(3000, 7)
    spec = fit_tree(X, y, NAMES, split_features=SPLIT, leaf_features=LEAF, relative=False)
    assert spec["relative"] is False
    validate_tree(spec, NAMES)
    pred = predict_tree(spec, X, NAMES)
    # Squared absolute error is dominated by the largest runtimes: check those.
    big = truth > np.quantile(truth, 0.5)
    assert rel_rmse(pred[big], truth[big]) < 0.1


def test_constant_leaves_and_depth_zero() -> None:
    X, y, _ = make_data(600, 8)
    const = fit_tree(X, y, NAMES, split_features=SPLIT, leaf_features=[], max_depth=3)
    validate_tree(const, NAMES)
    assert all(node["leaf"]["weights"] == [] for node, _ in nodes(const["root"]) if "leaf" in node)
    pred = predict_tree(const, X, NAMES)
    assert np.all(np.isfinite(pred)) and len(np.unique(pred)) <= 8
    stump = fit_tree(X, y, NAMES, split_features=SPLIT, leaf_features=LEAF, max_depth=0)
    assert "leaf" in stump["root"] and stump["root"]["n"] == 600


def test_mod_tests_only_on_integer_features() -> None:
    X, y, _ = make_data(2000, 9)
    X[:, NAMES.index("out_channels")] += 0.5  # no longer integer-valued: no mod test may use it
    spec = fit_tree(X, y, NAMES, split_features=SPLIT, leaf_features=LEAF)
    for node, _ in nodes(spec["root"]):
        if "leaf" not in node and node["test"] == "mod":
            assert node["feature"] != "out_channels"
            assert np.all(X[:, NAMES.index(node["feature"])] % 1 == 0)


def test_min_leaf_respected() -> None:
    X, y, _ = make_data(1000, 10)
    spec = fit_tree(X, y, NAMES, split_features=SPLIT, leaf_features=LEAF, max_depth=6, min_leaf=100)
    assert all(node["n"] >= 100 for node, _ in nodes(spec["root"]) if "leaf" in node)


def test_a_smaller_min_gain_grows_a_larger_tree() -> None:
    X, y, _ = make_data(1500, 14, noise=0.005)
    y *= np.where(X[:, NAMES.index("in_channels")] > 128, 1.08, 1.0)  # a small second effect
    settings: dict[str, Any] = {"split_features": SPLIT, "leaf_features": LEAF, "max_depth": 8, "min_leaf": 10}
    coarse = fit_tree(X, y, NAMES, min_gain=0.05, **settings)
    fine = fit_tree(X, y, NAMES, min_gain=0.0005, **settings)
    leaves = [sum("leaf" in node for node, _ in nodes(spec["root"])) for spec in (coarse, fine)]
    assert leaves[0] < leaves[1]
    err = [float(np.mean((predict_tree(spec, X, NAMES) / y - 1) ** 2)) for spec in (coarse, fine)]
    assert err[1] < err[0]  # on its own training rows


def test_spec_is_plain_json_and_survives_a_round_trip_and_column_reordering() -> None:
    spec, _ = fitted()
    text = json.dumps(spec, allow_nan=False)
    again = json.loads(text)
    assert again == spec
    X, _, _ = make_data(500, 11)
    pred = predict_tree(spec, X, NAMES)
    assert np.array_equal(predict_tree(again, X, NAMES), pred)
    order = np.random.default_rng(0).permutation(len(NAMES))
    assert np.array_equal(predict_tree(again, X[:, order], [NAMES[i] for i in order]), pred)
    # Extra columns the model does not use are fine.
    wider = np.column_stack([X, np.zeros(len(X))])
    assert np.array_equal(predict_tree(spec, wider, [*NAMES, "unused"]), pred)


def test_predict_on_no_rows_and_bad_shape() -> None:
    spec, _ = fitted()
    assert predict_tree(spec, np.zeros((0, len(NAMES))), NAMES).shape == (0,)
    with pytest.raises(ValueError, match="shape"):
        predict_tree(spec, np.zeros((3, len(NAMES) - 1)), NAMES)


def test_fit_is_deterministic() -> None:
    X, y, _ = make_data(800, 12)
    a = fit_tree(X, y, NAMES, split_features=SPLIT, leaf_features=LEAF)
    b = fit_tree(X, y, NAMES, split_features=SPLIT, leaf_features=LEAF)
    assert a == b


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda a: a.update(split_features=["nope"]), "unknown feature 'nope'"),
        (lambda a: a.update(leaf_features=["flops", "flops"]), "twice"),
        (lambda a: a.update(leaf_features="flops"), "one string"),
        (lambda a: a.update(max_depth=65), "max_depth"),
        (lambda a: a.update(min_leaf=0), "min_leaf"),
        (lambda a: a.update(multiples=[8, 0]), "multiples"),
        (lambda a: a.update(n_thresholds=-1), "n_thresholds"),
        (lambda a: a.update(min_gain=1.5), "min_gain"),
        (lambda a: a.update(min_gain=-0.1), "min_gain"),
        (lambda a: a["y"].__setitem__(3, 0.0), "positive"),
        (lambda a: a["y"].__setitem__(3, np.nan), "positive"),
        (lambda a: a["X"].__setitem__((2, 1), np.inf), "non-finite value at row 2, feature 'in_channels'"),
        (lambda a: a.update(y=a["y"][:-1]), "shape"),
        (lambda a: a.update(names=NAMES[:-1]), "names for"),
        (lambda a: a.update(X=a["X"][:0], y=a["y"][:0]), "no rows"),
    ],
)
def test_fit_rejects_bad_arguments(change: Callable[[dict[str, Any]], None], message: str) -> None:
    X, y, _ = make_data(100, 13)
    args: dict[str, Any] = {"X": X, "y": y, "names": NAMES, "split_features": SPLIT, "leaf_features": LEAF}
    change(args)
    names = args.pop("names")
    X, y = args.pop("X"), args.pop("y")
    with pytest.raises(ValueError, match=message):
        fit_tree(X, y, names, **args)


def test_importing_the_module_does_not_import_scipy() -> None:
    code = "import sys, neuralpower.models.tree; assert 'scipy' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


# -- validation ------------------------------------------------------------------------------------------------


def first_split(spec: dict[str, Any]) -> dict[str, Any]:
    root: dict[str, Any] = spec["root"]
    assert "feature" in root
    return root


def first_leaf(spec: dict[str, Any]) -> dict[str, Any]:
    leaf = next(node for node, _ in nodes(spec["root"]) if "leaf" in node)
    return leaf


def chain(depth: int) -> dict[str, Any]:
    """A valid-looking tree that is a chain of `depth` splits."""
    leaf = {"leaf": {"intercept": 1.0, "weights": [0.0, 0.0, 0.0]}}
    node: dict[str, Any] = copy.deepcopy(leaf)
    for _ in range(depth):
        node = {"feature": "out_channels", "test": "le", "value": 8, "yes": node, "no": copy.deepcopy(leaf)}
    return node


def self_cycle(spec: dict[str, Any]) -> None:
    root = first_split(spec)
    root["yes"] = root


def exploding_dag(spec: dict[str, Any]) -> None:
    """A DAG of 40 levels in which each node's two children are one object: about 2**41 paths, few objects."""
    node: dict[str, Any] = {"leaf": {"intercept": 1.0, "weights": [0.0, 0.0, 0.0]}}
    for _ in range(40):
        node = {"feature": "out_channels", "test": "mod", "value": 2, "yes": node, "no": node}
    spec["root"] = node


CORRUPTIONS: list[tuple[str, Callable[[dict[str, Any]], None], str]] = [
    ("negative weight", lambda s: first_leaf(s)["leaf"]["weights"].__setitem__(0, -1e-12), "weight 0 .*non-negative"),
    ("negative intercept", lambda s: first_leaf(s)["leaf"].update(intercept=-1.0), "intercept"),
    ("NaN weight", lambda s: first_leaf(s)["leaf"]["weights"].__setitem__(1, math.nan), "weight 1"),
    ("inf intercept", lambda s: first_leaf(s)["leaf"].update(intercept=math.inf), "intercept"),
    ("string weight", lambda s: first_leaf(s)["leaf"]["weights"].__setitem__(1, "1"), "weight 1"),
    ("bool weight", lambda s: first_leaf(s)["leaf"]["weights"].__setitem__(1, True), "weight 1"),
    ("short weights", lambda s: first_leaf(s)["leaf"]["weights"].pop(), "2 weights for 3 leaf features"),
    ("weights not a list", lambda s: first_leaf(s)["leaf"].update(weights={"a": 1}), "'weights' must be a list"),
    ("leaf not an object", lambda s: first_leaf(s).update(leaf=[1.0]), "'leaf' must be an object"),
    ("leaf without intercept", lambda s: first_leaf(s)["leaf"].pop("intercept"), "needs 'intercept'"),
    ("unknown split feature", lambda s: first_split(s).update(feature="warp_size"), "unknown feature 'warp_size'"),
    ("unknown leaf feature", lambda s: s["leaf_features"].__setitem__(0, "warp_size"), "unknown feature"),
    ("repeated leaf feature", lambda s: s["leaf_features"].__setitem__(0, "params"), "twice"),
    ("bad test", lambda s: first_split(s).update(test="gt"), "'test' must be 'le' or 'mod'"),
    ("mod 0", lambda s: first_split(s).update(test="mod", value=0), "positive integer"),
    ("mod 2.5", lambda s: first_split(s).update(test="mod", value=2.5), "positive integer"),
    ("mod 8.0", lambda s: first_split(s).update(test="mod", value=8.0), "positive integer"),
    ("mod -8", lambda s: first_split(s).update(test="mod", value=-8), "positive integer"),
    ("mod huge", lambda s: first_split(s).update(test="mod", value=10**400), "positive integer"),
    ("mod true", lambda s: first_split(s).update(test="mod", value=True), "positive integer"),
    ("le NaN", lambda s: first_split(s).update(test="le", value=math.nan), "finite number"),
    ("le huge int", lambda s: first_split(s).update(test="le", value=10**400), "finite number"),
    ("le string", lambda s: first_split(s).update(test="le", value="8"), "finite number"),
    ("missing no", lambda s: first_split(s).pop("no"), "'no' is missing"),
    ("node not an object", lambda s: first_split(s).update(yes=[]), "must be an object, got list"),
    ("node None", lambda s: first_split(s).update(no=None), "must be an object, got NoneType"),
    ("empty node", lambda s: first_split(s).update(no={}), "neither 'leaf' nor 'feature'"),
    ("unknown node key", lambda s: first_split(s).update(yess=1), "unknown key 'yess'"),
    ("negative n", lambda s: first_split(s).update(n=-1), "'n' must be a non-negative integer"),
    ("wrong kind", lambda s: s.update(kind="poly"), "'kind' must be 'tree'"),
    ("no root", lambda s: s.pop("root"), "'root' is missing"),
    ("relative not bool", lambda s: s.update(relative=1), "'relative'"),
    ("leaf_features not a list", lambda s: s.update(leaf_features="flops"), "'leaf_features' must be a list"),
    ("too deep", lambda s: s.update(root=chain(MAX_DEPTH + 1)), f"deeper than {MAX_DEPTH}"),
    ("cyclic", self_cycle, f"deeper than {MAX_DEPTH}"),
    ("exploding DAG", exploding_dag, f"more than {MAX_NODES} nodes"),
]


def test_validate_accepts_fitted_specs() -> None:
    validate_tree(fitted()[0], NAMES)
    validate_tree(small_spec(), NAMES)
    validate_tree(json.loads(json.dumps(fitted()[0])), list(reversed(NAMES)))
    deepest = small_spec()
    deepest["root"] = chain(MAX_DEPTH)
    validate_tree(deepest, NAMES)


@pytest.mark.parametrize(("corrupt", "message"), [c[1:] for c in CORRUPTIONS], ids=[c[0] for c in CORRUPTIONS])
def test_validate_rejects_corrupted_specs(corrupt: Callable[[dict[str, Any]], None], message: str) -> None:
    spec = small_spec()
    corrupt(spec)
    with pytest.raises(ValueError, match=message) as info:
        validate_tree(spec, NAMES)
    assert "\n" not in str(info.value)


def test_validate_rejects_non_objects_and_names_the_depth() -> None:
    bad: Any
    for bad in (None, [], "tree", 3.0):
        with pytest.raises(ValueError, match="must be an object"):
            validate_tree(bad, NAMES)
    spec = small_spec()
    spec["root"] = chain(3)
    spec["root"]["yes"]["yes"]["value"] = math.inf
    with pytest.raises(ValueError, match=r"^tree node at depth 2 \(root/yes/yes\): 'value' must be a finite"):
        validate_tree(spec, NAMES)


def test_validate_message_is_one_short_line_for_hostile_names() -> None:
    spec = small_spec()
    first_split(spec)["feature"] = "x\n" * 10_000
    with pytest.raises(ValueError) as info:
        validate_tree(spec, NAMES)
    assert "\n" not in str(info.value) and len(str(info.value)) < 200


# -- mutation fuzzing ------------------------------------------------------------------------------------------

HOSTILE: list[Any] = [
    None,
    True,
    False,
    0,
    1,
    -1,
    8,
    2.5,
    -0.0,
    1e-300,
    1e308,
    -1e308,
    2**53,
    2**53 + 1,
    10**400,
    10**5000,
    math.nan,
    math.inf,
    -math.inf,
    "",
    "le",
    "mod",
    "leaf",
    "out_channels",
    "flops",
    "warp_size",
    [],
    [0.0],
    [1.0, 2.0, 3.0],
    {},
    {"leaf": None},
    {"leaf": {"intercept": 1.0, "weights": [1.0, 0.0, 0.0]}},
    {"feature": "in_channels", "test": "mod", "value": 4, "yes": {}, "no": {}},
]


def paths(obj: Any, prefix: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    """Every path (of dict keys and list indices) into `obj`."""
    if isinstance(obj, dict):
        for key, value in obj.items():
            yield (*prefix, key)
            yield from paths(value, (*prefix, key))
    elif isinstance(obj, list):
        for i, value in enumerate(obj):
            yield (*prefix, i)
            yield from paths(value, (*prefix, i))


def numbers_in(obj: Any) -> Iterator[float]:
    if isinstance(obj, dict):
        for value in obj.values():
            yield from numbers_in(value)
    elif isinstance(obj, list):
        for value in obj:
            yield from numbers_in(value)
    elif isinstance(obj, int | float) and not isinstance(obj, bool):
        yield abs(float(obj)) if abs(obj) < 10**300 else math.inf


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_mutated_specs_validate_or_raise_value_error(data: st.DataObject) -> None:
    spec = small_spec()
    for _ in range(data.draw(st.integers(1, 3), label="mutations")):
        where = sorted(paths(spec), key=repr)
        if not where:
            break
        path = data.draw(st.sampled_from(where), label="path")
        parent: Any = spec
        for key in path[:-1]:
            parent = parent[key]
        action = data.draw(st.sampled_from(["replace", "replace", "replace", "delete", "add"]), label="action")
        if action == "replace":
            hostile = st.one_of(
                st.sampled_from(HOSTILE), st.floats(), st.integers(-(2**70), 2**70), st.text(max_size=5)
            )
            plausible = st.one_of(st.floats(0, 1e6), st.integers(1, 64), st.sampled_from(["le", "mod", *NAMES]))
            value = data.draw(hostile if data.draw(st.booleans(), label="hostile") else plausible, label="value")
            parent[path[-1]] = copy.deepcopy(value)
        elif action == "delete":
            del parent[path[-1]]
        elif isinstance(parent, dict):
            parent[data.draw(st.sampled_from(["n", "yes", "extra", "leaf"]), label="key")] = 1
        else:
            parent.append(1.0)
    X, _, _ = make_data(64, 14)
    try:
        validate_tree(spec, NAMES)
    except ValueError as e:
        assert "\n" not in str(e)
        event("rejected")
        return
    event("accepted")
    pred = predict_tree(spec, X, NAMES)
    assert pred.shape == (64,) and pred.dtype == np.float64
    if max(numbers_in(spec), default=0.0) < 1e100:
        assert np.all(np.isfinite(pred))


@settings(max_examples=100, deadline=None)
@given(
    intercept=st.floats(0, 1e3),
    weights=st.lists(st.floats(0, 1e-6), min_size=3, max_size=3),
    threshold=st.floats(-1e6, 1e6),
    modulus=st.integers(1, 2**53),
    feature=st.sampled_from(NAMES),
)
def test_valid_numbers_give_finite_non_negative_predictions(
    intercept: float, weights: list[float], threshold: float, modulus: int, feature: str
) -> None:
    """Any non-negative leaves and any finite thresholds validate; with non-negative features, predictions are
    finite and non-negative."""
    spec = small_spec()
    for node, _ in nodes(spec["root"]):
        if "leaf" in node:
            node["leaf"] = {"intercept": intercept, "weights": weights}
        elif node["test"] == "le":
            node.update(feature=feature, value=threshold)
        else:
            node.update(feature=feature, value=modulus)
    validate_tree(spec, NAMES)
    X, _, _ = make_data(64, 15)
    pred = predict_tree(json.loads(json.dumps(spec)), X, NAMES)
    assert np.all(np.isfinite(pred)) and np.all(pred >= 0)
