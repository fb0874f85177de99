"""The search-loop API: cached candidates score exactly like full architectures; Pareto fronts; evolve."""

from __future__ import annotations

import csv
import runpy
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from model_docs import layer_entry, model_doc

import neuralpower as npw
from neuralpower import InputError, zoo
from neuralpower.search import (
    Blocks,
    Candidate,
    MobileNetV2Space,
    evolve,
    inverted_residual,
    macs_proxy,
    pareto_front,
    score_candidates,
)
from neuralpower.zoo.builder import T

ROOT = Path(__file__).resolve().parents[1]
TYPES = ["conv2d", "batchnorm2d", "relu6", "add", "adaptive_avgpool2d", "flatten", "linear"]


def power_model(**extra: Any) -> npw.Model:
    """A model with power: roofline runtime, power rising with FLOPs (so energy is not runtime in disguise)."""
    entry = layer_entry(
        {"kind": "roofline", "ms_per_flop": 2e-10, "ms_per_byte": 3e-9, "overhead": 0.004},
        {"kind": "flops_linear", "slope": 1e-7, "intercept": 90.0},
        {"flops": [0.0, 2e7]},
    )
    doc = model_doc({t: entry for t in TYPES}, **extra)
    return npw.Model(doc, name="power-test")


def test_default_config_is_mobilenet_v2() -> None:
    space = MobileNetV2Space()
    arch = space.architecture(space.default())
    twin = zoo.build("mobilenet_v2")
    assert [layer.row for layer in arch] == [layer.row for layer in twin]
    assert len({layer.name for layer in arch}) == len(arch)


@pytest.mark.parametrize("batch", [1, 4])
def test_candidates_score_like_their_architectures(batch: int) -> None:
    model = power_model()
    space = MobileNetV2Space(batch=batch)
    rng = np.random.default_rng(batch)
    configs = [space.sample(rng) for _ in range(40)]
    configs += [space.mutate(c, rng) for c in configs]
    cands = [space.candidate(c) for c in configs]
    scores = score_candidates(model, cands)
    archs = [c.architecture() for c in cands]
    ref = model.score(archs)
    np.testing.assert_allclose(scores["runtime_ms"], ref.runtime_ms, rtol=1e-12)
    np.testing.assert_allclose(scores["energy_mj"], ref.energy_mj, rtol=1e-12)
    np.testing.assert_allclose(scores["power_w"], ref.power_w, rtol=1e-12)
    assert (scores["extrapolated"] == ref.extrapolated_layers).all() and scores["extrapolated"].any()
    assert list(scores["macs"]) == [a.totals()["macs"] for a in archs]
    assert list(scores["params"]) == [a.totals()["params"] for a in archs]
    # the candidate's rows are the architecture's rows
    assert np.array_equal(cands[3].rows(), archs[3].rows()) and len(cands[3]) == len(archs[3])
    # scoring again (predictions cached per block) gives the same
    again = score_candidates(model, cands[::-1])
    np.testing.assert_array_equal(again["runtime_ms"], scores["runtime_ms"][::-1])


def test_blocks_and_candidates_errors() -> None:
    blocks = Blocks()
    c = Candidate("bad", blocks)
    with pytest.raises(InputError, match=r"^block inverted_residual\(T\(c=8, h=4, w=4\), 16, 6, 3, 0\): .*stride"):
        c.add(inverted_residual, T(8, 4, 4), 16, 6, 3, 0)
    with pytest.raises(InputError, match="has no layers"):
        score_candidates(power_model(), [Candidate("empty", blocks)])
    other = Candidate("other", Blocks())
    other.add(inverted_residual, T(8, 16, 16), 16, 6, 3, 1)
    mine = Candidate("mine", blocks)
    mine.add(inverted_residual, T(8, 16, 16), 16, 6, 3, 1)
    with pytest.raises(InputError, match="other blocks"):
        score_candidates(power_model(), [mine, other])
    with pytest.raises(InputError, match="no candidates"):
        score_candidates(power_model(), [])


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"kernels": ()}, "kernels has no choice"),
        ({"kernels": (3, 4)}, "must be odd"),
        ({"widths": (0.0, 1.0)}, "must all be positive"),
        ({"depths": ((1,),) * 6}, "depths gives 6 stages"),
        ({"channels": ((8,), (16,), (24,), (), (80,), (128,), (256,))}, "channels of stage 3"),
        ({"resolutions": (16, 224)}, "resolution 16 is too small"),
    ],
)
def test_space_validation(options: dict[str, Any], message: str) -> None:
    with pytest.raises(InputError, match=message):
        MobileNetV2Space(**options)


def _dominated_brute(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    on = np.zeros(len(a), dtype=bool)
    for i in range(len(a)):
        if np.isnan(a[i]) or np.isnan(b[i]):
            continue
        others = (a <= a[i]) & (b <= b[i]) & ((a < a[i]) | (b < b[i]))
        on[i] = not others.any()
    return on


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.sampled_from([0.0, 1.0, 2.0, 3.0, np.nan]), st.sampled_from([0.0, 1.0, 2.0, np.nan])),
                max_size=30))
def test_pareto_front_matches_brute_force(points: list[tuple[float, float]]) -> None:
    a = np.array([p[0] for p in points], dtype=np.float64)
    b = np.array([p[1] for p in points], dtype=np.float64)
    assert np.array_equal(pareto_front(a, b), _dominated_brute(a, b))


def test_evolve_keeps_a_feasible_nondominated_front() -> None:
    model = power_model()
    space = MobileNetV2Space()
    result = evolve(space, model, generations=4, children=300, population=50, max_runtime_ms=2.5, seed=3)
    assert result.evaluated == 1200 and 0 < result.feasible <= 1200 and result.objective == "energy"
    assert len(result.configs) > 3
    cands = [space.candidate(c) for c in result.configs]
    scores = score_candidates(model, cands)
    np.testing.assert_allclose(scores["energy_mj"], result.scores["energy_mj"], rtol=1e-12)
    assert (scores["runtime_ms"] <= 2.5).all()
    proxy = macs_proxy(scores)
    assert np.array_equal(proxy, result.proxy) and (np.diff(proxy) <= 0).all()  # best proxy first
    assert pareto_front(-proxy, scores["energy_mj"]).all()
    # no feasible candidate this run saw dominates the front: a bigger random sample finds none either
    rng = np.random.default_rng(0)
    sample = [space.sample(rng) for _ in range(500)]
    s = score_candidates(model, [space.candidate(c) for c in sample])
    ok = s["runtime_ms"] <= 2.5
    for p, e in zip(macs_proxy(s)[ok], s["energy_mj"][ok], strict=True):
        assert not ((proxy <= p) & (scores["energy_mj"] >= e) & ((proxy < p) | (scores["energy_mj"] > e))).all()
    again = evolve(MobileNetV2Space(), model, generations=4, children=300, population=50, max_runtime_ms=2.5, seed=3)
    assert again.configs == result.configs  # a seed fixes the run


def test_evolve_errors() -> None:
    model = power_model()
    with pytest.raises(InputError, match="no candidate of the search space meets the budget"):
        evolve(MobileNetV2Space(), model, generations=2, children=50, max_energy_mj=1e-9)
    with pytest.raises(InputError, match="holds no power measurements"):
        evolve(MobileNetV2Space(), npw.load_model("cpu-numpy-fp32"), generations=1, children=10)
    with pytest.raises(InputError, match="children 0"):
        evolve(MobileNetV2Space(), model, children=0)
    with pytest.raises(InputError, match="must be positive"):
        evolve(MobileNetV2Space(), model, max_runtime_ms=-1)


def test_search_example_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    out, layers = tmp_path / "front.csv", tmp_path / "front_layers.csv"
    argv = ["search.py", "--generations", "3", "--children", "200", "--max-runtime-ms", "40", "--out", str(out),
            "--layers", str(layers), "--quiet", "--model", "cpu-numpy-fp32"]
    monkeypatch.setattr(sys, "argv", argv)
    with pytest.raises(SystemExit) as info:
        runpy.run_path(str(ROOT / "examples" / "search.py"), run_name="__main__")
    assert info.value.code == 0
    captured = capsys.readouterr()
    assert "minimizing predicted runtime" in captured.err  # the bundled CPU model holds no power
    assert "600 candidates in" in captured.out
    with out.open() as f:
        front = list(csv.DictReader(f))
    assert front and all(float(r["runtime_ms"]) <= 40 for r in front)
    scored = npw.load_model("cpu-numpy-fp32").score(npw.read_architectures(layers))
    np.testing.assert_allclose(scored.runtime_ms, [float(r["runtime_ms"]) for r in front], rtol=1e-5)

    monkeypatch.setattr(sys, "argv", ["search.py", "--generations", "1", "--children", "20", "--max-runtime-ms",
                                      "0.0001", "--quiet"])
    with pytest.raises(SystemExit) as info:
        runpy.run_path(str(ROOT / "examples" / "search.py"), run_name="__main__")
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert err.splitlines()[-1].startswith("search.py: error: no candidate of the search space meets the budget")
