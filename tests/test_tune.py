"""Width steering on a synthetic model whose minima are known."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from model_docs import layer_entry, model_doc

import neuralpower as npw
from neuralpower import InputError, zoo
from neuralpower.cli import main
from neuralpower.tune import tune, width_slots
from neuralpower.zoo.builder import Builder, T


def leaf(weight: float) -> dict[str, Any]:
    return {"leaf": {"intercept": 0.0, "weights": [weight]}}


# conv2d runtime = w * flops, w = 1e-9 when out_channels and in_channels are multiples of 8, 1.5e-9 when only
# out_channels is, 3e-9 otherwise: minima at multiples of 8
CONV_TREE = {
    "kind": "tree", "leaf_features": ["flops"], "relative": False,
    "root": {"feature": "out_channels", "test": "mod", "value": 8,
             "yes": {"feature": "in_channels", "test": "mod", "value": 8, "yes": leaf(1e-9), "no": leaf(1.5e-9)},
             "no": leaf(3e-9)},
}


def synthetic_model(power: bool = True) -> npw.Model:
    def entry(runtime: dict[str, Any]) -> dict[str, Any]:
        return layer_entry(runtime, {"kind": "constant", "value": 100.0 if power else 0.0})

    types: dict[str, Any] = {t: entry({"kind": "constant", "value": 0.001})
                             for t in ("batchnorm2d", "relu", "maxpool2d", "flatten", "add")}
    types["conv2d"] = entry(CONV_TREE)
    types["linear"] = entry({"kind": "flops_linear", "slope": 1e-9, "intercept": 0.002})
    return npw.Model(model_doc(types, power_measured=power), name="steps")


def chain(w1: int = 30, w2: int = 60) -> npw.Architecture:
    b = Builder()
    x = T(3, 16, 16)
    x = b.conv(x, w1, 3, 1, 1, name="conv1")
    x = b.bn(x, name="bn1")
    x = b.act(x, "relu", name="relu1")
    x = b.conv(x, w2, 3, 1, 1, name="conv2")
    x = b.bn(x, name="bn2")
    x = b.act(x, "relu", name="relu2")
    x = b.maxpool(x, 2, name="pool")
    x = b.flatten(x, name="flatten")
    b.linear(x, 10, name="fc")
    return b.build("chain")


def test_known_minima() -> None:
    model = synthetic_model()
    result = tune(chain(), model, max_change=0.10)
    by_layer = {s.layer: s for s in result.suggestions}
    assert set(by_layer) == {"conv1", "conv2"}
    # conv1: 30 -> 32, the only multiple of 8 in [27, 33]: wider and faster
    assert by_layer["conv1"].local_minima == [32] and by_layer["conv1"].suggested == 32
    # conv2: 60 -> minima 56 and 64 in [54, 66], both 4 away: the wider
    assert by_layer["conv2"].local_minima == [56, 64] and by_layer["conv2"].suggested == 64
    assert result.kept == [("fc", "its output is the network's output")]
    tuned = result.tuned
    assert [layer.row for layer in tuned] == [layer.row for layer in chain(32, 64)]
    assert tuned.layers[-1].in_features == 64 * 8 * 8  # the linear layer after flatten follows
    # totals are the model's predictions of the two networks
    assert result.total_before == pytest.approx(model.predict(chain()).runtime_ms, rel=1e-12)
    assert result.total_after == pytest.approx(model.predict(chain(32, 64)).runtime_ms, rel=1e-12)
    assert result.saving > 0
    # energy under a constant power: the same widths
    energy = tune(chain(), model, objective="energy")
    assert [s.suggested for s in energy.suggestions] == [32, 64]
    assert energy.total_before == pytest.approx(model.predict(chain()).energy_mj, rel=1e-12)


def test_a_width_at_a_minimum_stays_and_narrow_windows_find_nothing() -> None:
    model = synthetic_model()
    result = tune(chain(32, 64), model)
    assert [s.suggested for s in result.suggestions] == [32, 64] and result.saving == 0
    narrow = tune(chain(30, 60), model, max_change=0.03)  # [30, 30] and [59, 61]: no multiple of 8
    assert [s.local_minima for s in narrow.suggestions] == [[], []]
    assert narrow.saving == 0


def test_slots_respect_residuals_branches_and_depthwise() -> None:
    slots, kept = width_slots(zoo.build("resnet18"))
    arch = zoo.build("resnet18")
    names = {arch.layers[s.producer].name: s for s in slots}
    assert "layer1.0.conv1" in names and "layer1.0.conv2" not in names  # conv2 feeds the residual add
    reasons = {arch.layers[i].name: r for i, r in kept}
    assert "tied to another tensor" in reasons["layer1.0.conv2"]
    assert "a branch" in reasons["layer2.0.conv2"] or "tied" in reasons["layer2.0.conv2"]
    mb = zoo.build("mobilenet_v2")
    slots, _ = width_slots(mb)
    expand = next(s for s in slots if mb.layers[s.producer].name == "features.2.conv.0.0")
    # the expansion's width runs through batchnorm, relu6 and the depthwise conv to the projection
    assert [mb.layers[j].name for j in expand.layers] == [
        "features.2.conv.0.0", "features.2.conv.0.1", "features.2.conv.0.2", "features.2.conv.1.0",
        "features.2.conv.1.1", "features.2.conv.1.2", "features.2.conv.2",
    ]


def test_tune_errors() -> None:
    with pytest.raises(InputError, match="holds no power"):
        tune(chain(), synthetic_model(power=False), objective="energy")
    with pytest.raises(InputError, match="max change"):
        tune(chain(), synthetic_model(), max_change=0)
    with pytest.raises(InputError, match="objective"):
        tune(chain(), synthetic_model(), objective="flops")


def test_tune_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    model_path = tmp_path / "steps.json"
    model_path.write_text(json.dumps(synthetic_model().doc))
    arch_path = tmp_path / "chain.csv"
    npw.write_architectures([chain()], arch_path)
    out = tmp_path / "tuned.csv"
    assert main(["tune", str(arch_path), "--model", str(model_path), "--max-change", "10%", "--format", "json",
                 "--out", str(out)]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert [(s["layer"], s["width"], s["suggested"]) for s in doc["suggestions"]] == [("conv1", 30, 32),
                                                                                      ("conv2", 60, 64)]
    assert doc["saving"] == pytest.approx(doc["total_before"] - doc["total_after"]) and doc["saving_pct"] > 0
    assert {p["layer"] for p in doc["per_layer"]} == {"conv1", "conv2", "fc"}
    tuned = npw.read_architectures(out)[0]
    assert tuned.layers[0].out_channels == 32 and tuned.layers[3].out_channels == 64

    assert main(["tune", str(arch_path), "--model", str(model_path), "--objective", "energy"]) == 0
    text = capsys.readouterr().out
    assert "conv1" in text and "network energy:" in text and "2 of 2 widths changed" in text

    with pytest.raises(SystemExit) as info:
        main(["tune", str(arch_path), "--max-change", "150%"])
    assert info.value.code == 2
    assert capsys.readouterr().err.count("\n") == 1
    assert main(["tune", str(arch_path), "--model", str(model_path), "--objective", "energy", "--max-change",
                 "0.1"]) == 0
    capsys.readouterr()
    no_power = tmp_path / "nopower.json"
    no_power.write_text(json.dumps(synthetic_model(power=False).doc))
    assert main(["tune", str(arch_path), "--model", str(no_power), "--objective", "energy"]) == 2
    assert "holds no power measurements" in capsys.readouterr().err
