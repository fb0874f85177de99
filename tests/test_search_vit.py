"""The ViT-style search space: valid candidates, ViT-B/16 itself, scores equal to full architectures, evolve."""

from __future__ import annotations

import csv
import itertools
import json
import runpy
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from model_docs import layer_entry, model_doc, varying_model_doc

import neuralpower as npw
from neuralpower import InputError, zoo
from neuralpower.search import (
    MobileNetV2Space,
    SearchResult,
    SearchSpace,
    ViTConfig,
    ViTSpace,
    encoder_layer,
    evolve,
    macs_proxy,
    pareto_front,
    score_candidates,
)
from neuralpower.zoo.builder import S

ROOT = Path(__file__).resolve().parents[1]


def power_model() -> npw.Model:
    """A model of ViT's layer types with power: roofline runtime, power rising with FLOPs; ranges that the
    larger layers leave (so some layers extrapolate)."""
    entry = layer_entry(
        {"kind": "roofline", "ms_per_flop": 2e-10, "ms_per_byte": 3e-9, "overhead": 0.004},
        {"kind": "flops_linear", "slope": 1e-8, "intercept": 90.0},
        {"flops": [0.0, 5e8]},
    )
    return npw.Model(model_doc({t: entry for t in ViTSpace.layer_types}), name="vit-power-test")


def small_space(**options: Any) -> ViTSpace:
    """A space small enough to cover well in a test."""
    settings: dict[str, Any] = {
        "widths": (96, 192), "depths": (2, 3, 4), "heads": (3, 6), "mlp_ratios": (2.0, 4.0), "patches": (16, 32),
        "resolutions": (64, 96), "classes": 10,
    }
    return ViTSpace(**{**settings, **options})


@pytest.mark.parametrize(("name", "batch"), [("vit_b_16", 1), ("vit_b_16", 3), ("vit_b_32", 2)])
def test_default_config_is_vit_b(name: str, batch: int) -> None:
    space = ViTSpace(batch=batch)
    config = space.default()
    assert config == ViTConfig(768, 224, 16, 12, (12,) * 12, (4.0,) * 12)
    config = config._replace(patch=int(name[-2:]))
    arch = space.architecture(config)
    twin = zoo.build(name, batch=batch)
    assert [layer.row for layer in arch] == [layer.row for layer in twin]
    assert arch.totals() == twin.totals()
    assert arch.meta["params_outside_layers"] == twin.meta["params_outside_layers"]
    assert len({layer.name for layer in arch}) == len(arch)
    if name == "vit_b_16" and batch == 1:  # torchvision's published counts
        assert arch.totals()["params"] == 86_567_656 and arch.totals()["macs"] == 17_563_828_224
    # the fast path's counts include the class token and the position embedding too
    scores = score_candidates(power_model(), [space.candidate(config)])
    assert scores["params"][0] == twin.totals()["params"] and scores["macs"][0] == twin.totals()["macs"]


def test_default_is_the_largest_member() -> None:
    space = ViTSpace()
    rng = np.random.default_rng(5)
    configs = [space.default()] + [space.sample(rng) for _ in range(300)]
    scores = score_candidates(power_model(), [space.candidate(c) for c in configs])
    assert scores["macs"][0] > scores["macs"][1:].max() and scores["params"][0] > scores["params"][1:].max()


def test_random_candidates_are_valid_and_score_like_their_architectures() -> None:
    model = power_model()
    space = small_space(batch=2)
    rng = np.random.default_rng(0)
    configs = [space.sample(rng) for _ in range(60)]
    configs += [space.mutate(c, rng) for c in configs]
    for c in configs:
        assert all(c.width % h == 0 for h in c.heads) and c.resolution % c.patch == 0
        assert len(c.heads) == len(c.mlp_ratios) == max(space.depths) and c.depth in space.depths
    cands = [space.candidate(c) for c in configs]
    archs = [c.architecture() for c in cands]  # every layer built and validated afresh
    ref = model.score(archs)
    scores = score_candidates(model, cands)
    np.testing.assert_allclose(scores["runtime_ms"], ref.runtime_ms, rtol=1e-12)
    np.testing.assert_allclose(scores["energy_mj"], ref.energy_mj, rtol=1e-12)
    assert (scores["extrapolated"] == ref.extrapolated_layers).all()
    assert list(scores["macs"]) == [a.totals()["macs"] for a in archs]
    assert list(scores["params"]) == [a.totals()["params"] for a in archs]
    for config, arch in zip(configs, archs, strict=True):
        tokens = (config.resolution // config.patch) ** 2 + 1
        attention = [layer for layer in arch if layer.type == "attention"]
        assert len(attention) == config.depth
        assert [(a.heads, a.head_dim, a.tokens) for a in attention] == [
            (h, config.width // h, tokens) for h in config.heads[:config.depth]
        ]
        mlp = [layer.out_features for layer in arch if layer.name.endswith("mlp.0")]
        assert mlp == [int(r * config.width) for r in config.mlp_ratios[:config.depth]]
        assert arch[-1].out_features == 10


def test_configuration_encoding_round_trips() -> None:
    space = ViTSpace()
    rng = np.random.default_rng(2)
    for _ in range(100):
        config = space.sample(rng)
        values = space._values(config)
        assert len(values) == len(space._choices) == 4 + 2 * 12
        assert all(v in choices for v, choices in zip(values, space._choices, strict=True))
        assert space._config(values) == config
        child = space.mutate(config, rng)  # a re-drawn decision may draw its old value again
        values = space._values(child)
        assert all(v in choices for v, choices in zip(values, space._choices, strict=True))
        assert space._config(values) == child


def test_configurations_that_are_no_network() -> None:
    space = small_space()
    good = space.default()
    with pytest.raises(InputError, match="depth 5 gives 4 heads"):
        space.candidate(good._replace(depth=5))
    with pytest.raises(InputError, match=r"^block encoder_layer\(.*\): 5 heads do not divide 192 features"):
        space.candidate(good._replace(heads=(5,) * 4))
    with pytest.raises(InputError, match="not a multiple of the patch size 32"):
        space.candidate(good._replace(resolution=80, patch=32))
    with pytest.raises(InputError, match=r"MLP ratio 2\.001 of width 192"):
        space.candidate(good._replace(mlp_ratios=(2.001,) * 4))


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"heads": ()}, "heads has no choice"),
        ({"widths": (0, 192)}, "must all be positive"),
        ({"widths": (96.5,)}, "must all be integers"),
        ({"heads": (3, 5)}, "5 heads do not divide width 96"),
        ({"mlp_ratios": (2.0, 3.01)}, r"MLP ratio 3\.01 of width 96"),
        ({"resolutions": (64, 80)}, "resolution 80 is not a multiple of the patch size 32"),
        ({"classes": 0}, "classes 0 must be a positive integer"),
    ],
)
def test_space_validation(options: dict[str, Any], message: str) -> None:
    with pytest.raises(InputError, match=message):
        small_space(**options)


def test_token_blocks_are_cached_like_image_blocks() -> None:
    space = small_space()
    blocks = space.blocks
    x = S(17, 96)
    first = blocks(encoder_layer, x, 3, 192)
    assert blocks(encoder_layer, S(17, 96), 3, 192) == first and first[1] == x
    assert blocks(encoder_layer, x, 6, 192)[0] != first[0]
    assert len(blocks) == 2 and blocks.params_outside_layers(first[0]) == 0
    assert [layer.type for layer in blocks.layers(encoder_layer, x, 3, 192)] == [
        "layernorm", "linear", "attention", "linear", "add", "layernorm", "linear", "gelu", "linear", "add",
    ]


def test_evolve_over_vit_keeps_a_feasible_front_that_only_improves() -> None:
    model = power_model()
    space = ViTSpace()
    default_runtime = score_candidates(model, [space.candidate(space.default())])["runtime_ms"][0]
    budget = default_runtime / 3
    fronts: list[tuple[np.ndarray, np.ndarray]] = []

    def record(generation: int, r: SearchResult) -> None:
        fronts.append((r.proxy.copy(), r.scores["energy_mj"].copy()))

    result = evolve(space, model, generations=5, children=300, population=50, max_runtime_ms=budget, seed=4,
                    on_generation=record)
    assert result.evaluated == 1500 and 0 < result.feasible < 1500 and len(result.configs) > 3
    cands = [space.candidate(c) for c in result.configs]
    scores = score_candidates(model, cands)
    np.testing.assert_allclose(scores["energy_mj"], result.scores["energy_mj"], rtol=1e-12)
    assert (scores["runtime_ms"] <= budget).all()
    proxy = macs_proxy(scores)
    assert np.array_equal(proxy, result.proxy) and (np.diff(proxy) <= 0).all()
    assert pareto_front(-proxy, scores["energy_mj"]).all()
    # each generation's front weakly dominates every point of the one before (it never gets worse) and the
    # search moves it: the last front is not the first
    for (p0, e0), (p1, e1) in itertools.pairwise(fronts):
        for p, e in zip(p0, e0, strict=True):
            assert ((p1 >= p) & (e1 <= e)).any()
    assert not np.array_equal(fronts[0][0], fronts[-1][0])
    # without a budget, ViT-B/16 (the largest) stays on the front, or a network as large and no costlier
    free = evolve(ViTSpace(), model, generations=2, children=200, population=50, seed=1)
    default_scores = score_candidates(model, [space.candidate(space.default())])
    assert ((free.proxy >= macs_proxy(default_scores)[0]) & (free.scores["energy_mj"] <= default_scores["energy_mj"][0])
            ).any()
    again = evolve(ViTSpace(), model, generations=5, children=300, population=50, max_runtime_ms=budget, seed=4)
    assert again.configs == result.configs  # a seed fixes the run


def test_spaces_name_their_layer_types() -> None:
    rng = np.random.default_rng(0)
    spaces: list[SearchSpace] = [ViTSpace(), MobileNetV2Space()]
    for space in spaces:
        types = {layer.type for c in [space.default(), space.sample(rng)] for layer in space.architecture(c)}
        assert types == set(space.layer_types)


def test_search_vit_example_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    model_path = tmp_path / "vit-model.json"
    model_path.write_text(json.dumps(varying_model_doc(list(ViTSpace.layer_types))))
    out, layers = tmp_path / "front.csv", tmp_path / "front_layers.csv"
    argv = ["search_vit.py", "--model", str(model_path), "--generations", "3", "--children", "200",
            "--max-runtime-ms", "20", "--out", str(out), "--layers", str(layers), "--quiet"]
    monkeypatch.setattr(sys, "argv", argv)
    with pytest.raises(SystemExit) as info:
        runpy.run_path(str(ROOT / "examples" / "search_vit.py"), run_name="__main__")
    assert info.value.code == 0
    assert "600 candidates in" in capsys.readouterr().out
    with out.open() as f:
        front = list(csv.DictReader(f))
    assert front and all(float(r["runtime_ms"]) <= 20 for r in front)
    archs = npw.read_architectures(layers)
    scored = npw.load_model(model_path).score(archs)
    np.testing.assert_allclose(scored.runtime_ms, [float(r["runtime_ms"]) for r in front], atol=6e-5)
    assert [a.totals()["params"] for a in archs] == [int(r["params"]) for r in front]
    assert all(len(r["heads"].split("-")) == int(r["depth"]) for r in front)

    # a model without a ViT's layer types says which are missing
    model_path.write_text(json.dumps(varying_model_doc(list(MobileNetV2Space.layer_types))))
    monkeypatch.setattr(sys, "argv", ["search_vit.py", "--model", str(model_path), "--quiet"])
    with pytest.raises(SystemExit) as info:
        runpy.run_path(str(ROOT / "examples" / "search_vit.py"), run_name="__main__")
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert "has no concat, layernorm, attention, gelu model, which a ViT needs" in err.splitlines()[-1]
