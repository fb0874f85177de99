"""Gradient-boosted regression trees of runtime or power.

Large tables of a real GPU (tens of thousands of GEMM and attention kernels) hold effects no low-degree polynomial
and no shallow tree follows: kernels switch tiles, split-K and algorithms at many sizes, and power saturates at
the board's limit while runtime keeps growing. A sum of small regression trees, each fitted to what the ones
before it left (Friedman's gradient boosting, scikit-learn's ``GradientBoostingRegressor``), follows them. Trees
split on raw features (a split on ``x`` is a split on ``log x``); runtime is fitted as its logarithm (squared error
there is a relative error). Power is fitted as its logarithm too, by histogram-based gradient boosting (scikit-learn's
``HistGradientBoostingRegressor``: more, smaller and regularised trees, leaf-wise, with early stopping on a tenth
of a large table): on aiconfigurator's H200 GEMMs, whose power jumps by hundreds of watts between configurations of
the same runtime, this took the held-out power error of fp8 GEMMs from 12.9 % (the Huber loss on power as it is, with
the runtime's settings) to 10.7 % (``hist``; ``benchmarks/aiconfigurator_accuracy.py``). A larger histogram setting
(``hist="large"``: up to 1500 trees of 63 leaves at learning rate 0.1, always stopped early on a tenth of the rows)
follows attention kernels, whose runtime switches with several features at once, more closely; ``fit`` compares the
settings on validation rows and keeps the better one per layer type and target.

A fitted model is plain JSON-able data that names its features::

    {"kind": "boosted", "target": "log", "base": -2.1, "features": ["rows", "in_features", ...],
     "trees": [{"feature": [0, -1, -1], "value": [96.5, -0.12, 0.08], "yes": [1, -1, -1], "no": [2, -1, -1]},
               ...]}

Each tree lists its nodes, root first, children after their parent: a split node ``i`` sends a row to ``yes[i]``
when ``x[features[feature[i]]] <= value[i]``, else to ``no[i]``; a leaf has ``feature`` -1, ``yes`` and ``no``
-1 and its contribution as ``value``. The prediction is ``base`` plus every tree's leaf, ``exp`` of that for the
``log`` target. :func:`validate_boosted` checks a spec from an untrusted source.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from ._values import is_finite_number

__all__ = ["Gate", "fit_boosted", "flatten_boosted", "gate_boosted", "predict_boosted", "validate_boosted"]

#: The most trees, and nodes per tree, :func:`validate_boosted` accepts.
MAX_TREES = 5000
MAX_TREE_NODES = 4096
TARGETS = ("log", "plain")
#: Histogram-based boosting's settings (``fit_boosted(hist=...)``). ``small``: scikit-learn's early stopping where it
#: applies it (more than 10,000 rows). ``large``: more and larger trees at a higher rate, always stopped early on a
#: tenth of the rows (10 rounds without gain), so that 1500 is a ceiling, not a count; a model of a large table stays
#: within :data:`MAX_TREES`.
HIST_SETTINGS: dict[str, dict[str, Any]] = {
    "small": {"max_iter": 600, "learning_rate": 0.05, "max_leaf_nodes": 31, "early_stopping": "auto"},
    "large": {"max_iter": 1500, "learning_rate": 0.1, "max_leaf_nodes": 63, "early_stopping": True},
}


def fit_boosted(
    X: npt.NDArray[np.float64],
    y: npt.NDArray[np.float64],
    feature_names: Sequence[str],
    *,
    features: Sequence[str],
    target: str = "log",
    trees: int = 300,
    depth: int = 5,
    learning_rate: float = 0.1,
    min_leaf: int = 5,
    seed: int = 0,
    hist: bool | str = False,
) -> dict[str, Any]:
    """Fit gradient-boosted trees on the columns ``features`` of ``X`` (named by ``feature_names``).

    ``target`` ``log`` fits log(y) with squared error, ``plain`` fits y with the Huber loss (outliers count
    linearly, not squared). ``hist``: histogram-based boosting instead, ``True`` or ``"small"`` (up to 600 trees of 31
    leaves, learning rate 0.05, L2 regularisation 1) or ``"large"`` (see :data:`HIST_SETTINGS`); ``trees``,
    ``depth`` and ``learning_rate`` then do not apply.
    """
    if target not in TARGETS:
        raise ValueError(f"target must be one of {', '.join(TARGETS)}")
    if hist is True:
        hist = "small"
    if hist and hist not in HIST_SETTINGS:
        raise ValueError(f"hist must be one of {', '.join(HIST_SETTINGS)}")
    from sklearn.ensemble import GradientBoostingRegressor

    columns = [list(feature_names).index(f) for f in features]
    Z = np.ascontiguousarray(X[:, columns], dtype=np.float64)
    yy = np.log(y) if target == "log" else np.asarray(y, dtype=np.float64)
    if hist:
        return _fit_hist(Z, yy, target, features, min_leaf=max(min_leaf, 10), seed=seed, **HIST_SETTINGS[str(hist)])
    model = GradientBoostingRegressor(
        loss="squared_error" if target == "log" else "huber",
        n_estimators=trees,
        max_depth=depth,
        learning_rate=learning_rate,
        min_samples_leaf=min(min_leaf, max(1, len(yy) // 4)),
        subsample=0.8 if len(yy) >= 200 else 1.0,
        random_state=seed,
    )
    model.fit(Z, yy)
    base = float(np.asarray(model.init_.predict(Z[:1])).ravel()[0])
    out_trees = []
    for estimator in model.estimators_[:, 0]:
        t = estimator.tree_
        leaf = t.children_left < 0
        out_trees.append({
            "feature": np.where(leaf, -1, t.feature).astype(int).tolist(),
            "value": np.where(leaf, learning_rate * t.value[:, 0, 0], t.threshold).astype(float).tolist(),
            "yes": t.children_left.astype(int).tolist(),
            "no": t.children_right.astype(int).tolist(),
        })
    return {"kind": "boosted", "target": target, "base": base, "features": list(features), "trees": out_trees}


def _fit_hist(Z: npt.NDArray[np.float64], yy: npt.NDArray[np.float64], target: str, features: Sequence[str], *,
              min_leaf: int, seed: int, max_iter: int, learning_rate: float, max_leaf_nodes: int,
              early_stopping: bool | str) -> dict[str, Any]:
    """Histogram-based gradient boosting, exported as the same trees (its nodes are stored root first, children after
    their parent; a row goes to the left child where ``x <= threshold``; leaves hold the learning rate already)."""
    from sklearn.ensemble import HistGradientBoostingRegressor

    model = HistGradientBoostingRegressor(
        loss="squared_error" if target == "log" else "absolute_error", max_iter=max_iter, learning_rate=learning_rate,
        max_leaf_nodes=max_leaf_nodes, min_samples_leaf=min(min_leaf, max(1, len(yy) // 4)), l2_regularization=1.0,
        early_stopping=early_stopping, random_state=seed)
    model.fit(Z, yy)
    out_trees = []
    for (predictor,) in model._predictors:
        nodes = predictor.nodes
        leaf = nodes["is_leaf"].astype(bool)
        out_trees.append({
            "feature": np.where(leaf, -1, nodes["feature_idx"].astype(np.int64)).tolist(),
            "value": np.where(leaf, nodes["value"], nodes["num_threshold"]).astype(np.float64).tolist(),
            "yes": np.where(leaf, -1, nodes["left"].astype(np.int64)).tolist(),
            "no": np.where(leaf, -1, nodes["right"].astype(np.int64)).tolist(),
        })
    base = float(np.asarray(model._baseline_prediction).ravel()[0])
    return {"kind": "boosted", "target": target, "base": base, "features": list(features), "trees": out_trees}


#: The rows a group's trees apply to, as the splits that lead there: (feature name, value, True where the rows have
#: ``x <= value``, False where ``x > value``).
Gate = Sequence[tuple[str, float, bool]]


def gate_boosted(parts: Sequence[tuple[Gate, Mapping[str, Any]]]) -> dict[str, Any]:
    """One boosted model of several, each fitted on its own group of rows (groups that do not overlap and together hold
    every row the model will see): each part's trees, and a one-leaf tree of its ``base``, behind the splits of its
    gate, with a leaf of 0 on the other side of each. A row's prediction is then its group's model's, exactly (the
    sum of the other groups' trees is 0). The parts' target must be one."""
    targets = {str(spec["target"]) for _, spec in parts}
    if len(targets) != 1:
        raise ValueError("gate_boosted: the parts' targets differ")
    features: list[str] = []
    for gate, spec in parts:
        for name in [*spec["features"], *(split[0] for split in gate)]:
            if name not in features:
                features.append(name)
    index = {name: i for i, name in enumerate(features)}
    trees: list[dict[str, list[Any]]] = []
    for gate, spec in parts:
        remap = [index[name] for name in spec["features"]]
        off = 2 * len(gate)
        head: dict[str, list[Any]] = {"feature": [], "value": [], "yes": [], "no": []}
        for j, (name, value, below) in enumerate(gate):  # node 2j: the split; 2j + 1: a leaf of 0; 2j + 2: on
            head["feature"] += [index[name], -1]
            head["value"] += [float(value), 0.0]
            head["yes"] += [2 * j + 2 if below else 2 * j + 1, -1]
            head["no"] += [2 * j + 1 if below else 2 * j + 2, -1]
        base = {"feature": [-1], "value": [float(spec["base"])], "yes": [-1], "no": [-1]}
        for tree in [base, *spec["trees"]]:
            trees.append({
                "feature": head["feature"] + [remap[f] if f >= 0 else -1 for f in tree["feature"]],
                "value": head["value"] + [float(v) for v in tree["value"]],
                "yes": head["yes"] + [c + off if c >= 0 else -1 for c in tree["yes"]],
                "no": head["no"] + [c + off if c >= 0 else -1 for c in tree["no"]],
            })
    if len(trees) > MAX_TREES:
        raise ValueError(f"gate_boosted: {len(trees)} trees, more than {MAX_TREES}")
    return {"kind": "boosted", "target": targets.pop(), "base": 0.0, "features": features, "trees": trees}


def flatten_boosted(spec: Mapping[str, Any], feature_names: Sequence[str]) -> dict[str, npt.NDArray[Any]]:
    """A validated spec as the flat node arrays the compiled evaluator takes (feature indices into
    ``feature_names``; children as indices into the whole arrays; ``tree_start`` the offsets of the trees)."""
    from itertools import chain

    index = np.array([list(feature_names).index(f) for f in spec["features"]], dtype=np.int64)
    trees = spec["trees"]
    start, at, _ = _node_layout(trees)
    n = int(start[-1])

    def nodes(key: str, dtype: Any = np.int64) -> npt.NDArray[Any]:
        return np.fromiter(chain.from_iterable(t[key] for t in trees), dtype=dtype, count=n)

    feature, yes, no = nodes("feature"), nodes("yes"), nodes("no")
    return {
        "tree_start": start.astype(np.int32),
        "feature": np.where(feature >= 0, index[np.maximum(feature, 0)], 0).astype(np.int32),
        "value": nodes("value", np.float64),
        "yes": np.where(yes >= 0, yes + at, -1).astype(np.int32),
        "no": np.where(no >= 0, no + at, -1).astype(np.int32),
    }


def _node_layout(trees: Sequence[Mapping[str, Any]]) -> tuple[npt.NDArray[np.int64], ...]:
    """Where the trees' nodes lie in their flat arrays: each tree's first node (and the total, last), each node's
    tree's first node, and each node's tree's size."""
    sizes = np.array([len(t["feature"]) for t in trees], dtype=np.int64)
    start = np.concatenate([[0], np.cumsum(sizes)])
    return start, np.repeat(start[:-1], sizes), np.repeat(sizes, sizes)


def predict_boosted(spec: Mapping[str, Any], X: npt.NDArray[np.float64],
                    feature_names: Sequence[str]) -> npt.NDArray[np.float64]:
    """The NumPy reference of the compiled evaluator: ``base`` plus the trees' leaves (``exp`` for ``log``)."""
    columns = [list(feature_names).index(f) for f in spec["features"]]
    Z = np.asarray(X, dtype=np.float64)[:, columns]
    n = Z.shape[0]
    rows = np.arange(n)
    total = np.zeros(n)
    for tree in spec["trees"]:
        feature = np.asarray(tree["feature"], dtype=np.intp)
        value = np.asarray(tree["value"], dtype=np.float64)
        yes = np.asarray(tree["yes"], dtype=np.intp)
        no = np.asarray(tree["no"], dtype=np.intp)
        node = np.zeros(n, dtype=np.intp)
        while True:
            inner = yes[node] >= 0
            if not inner.any():
                break
            at = node[inner]
            go_yes = Z[rows[inner], feature[at]] <= value[at]
            node[inner] = np.where(go_yes, yes[at], no[at])
        total += value[node]
    y = float(spec["base"]) + total
    return np.exp(y) if spec["target"] == "log" else y


def validate_boosted(spec: Any, feature_names: Sequence[str]) -> None:
    """Check a boosted spec from an untrusted source; ``ValueError`` with a one-line message."""
    if spec.get("target") not in TARGETS:
        raise ValueError(f"boosted: 'target' must be one of {', '.join(TARGETS)}")
    if not is_finite_number(spec.get("base")):
        raise ValueError("boosted: 'base' must be a finite number")
    features = spec.get("features")
    if not isinstance(features, list) or not features or any(f not in feature_names for f in features):
        raise ValueError("boosted: 'features' must be a non-empty list of known feature names")
    trees = spec.get("trees")
    if not isinstance(trees, list) or not 1 <= len(trees) <= MAX_TREES:
        raise ValueError(f"boosted: 'trees' must be a list of 1 to {MAX_TREES} trees")
    for k, tree in enumerate(trees):
        where = f"boosted: tree {k}"
        if not isinstance(tree, Mapping) or set(tree) != {"feature", "value", "yes", "no"}:
            raise ValueError(f"{where} must have exactly 'feature', 'value', 'yes' and 'no'")
        n = len(tree["feature"]) if isinstance(tree["feature"], list) else -1
        if not 1 <= n <= MAX_TREE_NODES or any(not isinstance(tree[key], list) or len(tree[key]) != n
                                                 for key in ("value", "yes", "no")):
            raise ValueError(f"{where}: node lists of 1 to {MAX_TREE_NODES} nodes, all of one length")
    if _nodes_valid(trees, len(features)):
        return
    for k, tree in enumerate(trees):  # the first bad tree, for the message
        _check_nodes(tree, len(tree["feature"]), len(features), f"boosted: tree {k}")


def _nodes_valid(trees: list[Mapping[str, Any]], n_features: int) -> bool:
    """Whether every node of every tree is valid (see :func:`_check_nodes`), checked at once over all trees' nodes
    as arrays (bundled models hold hundreds of thousands); False where any is not, or a value has another type."""
    from itertools import chain

    lists = [list(chain.from_iterable(t[key] for t in trees)) for key in ("feature", "yes", "no")]
    values = list(chain.from_iterable(t["value"] for t in trees))
    # exact types: a bool is an int to NumPy, a float index would be truncated
    if set(map(type, chain(*lists))) - {int} or set(map(type, values)) - {int, float}:
        return False
    try:
        f, a, b = (np.asarray(xs, dtype=np.int64) for xs in lists)
        if not np.isfinite(np.asarray(values, dtype=np.float64)).all():
            return False
    except OverflowError:
        return False
    _, first, n = _node_layout(trees)
    at = np.arange(len(f)) - first  # each node's index within its tree
    leaf = (f == -1) & (a == -1) & (b == -1)
    return bool((leaf | ((f >= 0) & (f < n_features) & (a > at) & (a < n) & (b > at) & (b < n))).all())


def _check_nodes(tree: Mapping[str, Any], n: int, n_features: int, where: str) -> None:
    """A tree's nodes: whole-number indices, finite values, splits with a feature and children after them (checked
    as arrays where every value has the plain type, node by node otherwise: bundled models hold many nodes)."""
    lists = [tree[key] for key in ("feature", "yes", "no")]
    values = tree["value"]
    if all(type(x) is int for xs in lists for x in xs) and all(type(v) is float or type(v) is int for v in values):
        try:
            f, a, b = (np.asarray(xs, dtype=np.int64) for xs in lists)
            finite = bool(np.isfinite(np.asarray(values, dtype=np.float64)).all())
        except OverflowError:
            finite = False
        if finite:
            at = np.arange(n)
            leaf = (f == -1) & (a == -1) & (b == -1)
            ok = leaf | ((f >= 0) & (f < n_features) & (a > at) & (a < n) & (b > at) & (b < n))
            if ok.all():
                return
    for i in range(n):  # the first bad node, for the message
        fi, vi, ai, bi = tree["feature"][i], values[i], tree["yes"][i], tree["no"][i]
        if not all(isinstance(x, int) and not isinstance(x, bool) for x in (fi, ai, bi)) or not is_finite_number(vi):
            raise ValueError(f"{where}, node {i}: whole-number indices and a finite value expected")
        if fi == -1 and ai == -1 and bi == -1:
            continue
        if not 0 <= fi < n_features or not i < ai < n or not i < bi < n:
            raise ValueError(f"{where}, node {i}: a split needs a feature index and children after it")
