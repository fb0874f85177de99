"""Sweep generation: coverage of what real networks use, determinism, filters, limits, the power subset."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from neuralpower import LAYER_TYPES, InputError, Layer
from neuralpower.bench.executors import Variant
from neuralpower.bench.sweep import (
    SUITES,
    Limits,
    SweepConfig,
    config_id,
    generate,
    parse_types,
    select_power,
    zoo_layers,
)


@pytest.fixture(scope="module")
def default() -> list[SweepConfig]:
    return generate("default", seed=0)


def test_deterministic_and_shuffled() -> None:
    a = generate("quick", seed=3)
    b = generate("quick", seed=3)
    assert [c.layer_id for c in a] == [c.layer_id for c in b]
    assert [c.power for c in a] == [c.power for c in b]
    c = generate("quick", seed=4)
    assert [x.layer_id for x in c] != [x.layer_id for x in a]
    # shuffled: the types are interleaved, not in blocks
    types = [x.layer.type for x in a]
    runs = sum(1 for i in range(1, len(types)) if types[i] != types[i - 1])
    assert runs > len(types) / 2


def test_counts_and_every_type(default: list[SweepConfig]) -> None:
    suite = SUITES["default"]
    counts = Counter(c.layer.type for c in default)
    assert set(counts) == set(LAYER_TYPES)
    assert min(counts.values()) >= suite.min_per_type
    assert suite.configs <= len(default) <= 1.2 * suite.configs
    assert counts["conv2d"] == max(counts.values())
    assert len({c.layer.row for c in default}) == len(default)  # no duplicates
    assert len({c.layer_id for c in default}) == len(default)


def test_conv_coverage(default: list[SweepConfig]) -> None:
    convs = [c.layer for c in default if c.layer.type == "conv2d"]
    assert {layer.kernel_h for layer in convs} >= {1, 3, 5, 7}
    assert {layer.stride_h for layer in convs} == {1, 2}
    assert {layer.padding_h for layer in convs} >= {0, 1, 2, 3}
    assert any(layer.dilation_h == 2 for layer in convs)
    depthwise = [layer for layer in convs if layer.groups == layer.in_channels > 1]
    grouped = [layer for layer in convs if 1 < layer.groups < layer.in_channels]
    assert len(depthwise) > 0.1 * len(convs) and grouped
    assert any(layer.out_channels == 2 * layer.in_channels for layer in depthwise)
    channels = [layer.in_channels for layer in convs] + [layer.out_channels for layer in convs]
    odd = [c for c in channels if c % 8]
    assert 0.15 < len(odd) / len(channels) < 0.8
    assert min(channels) <= 3 and max(channels) >= 1024
    assert any(layer.in_h != layer.in_w for layer in convs)
    assert any(layer.bias for layer in convs) and any(not layer.bias for layer in convs)


def test_sizes_and_batches(default: list[SweepConfig]) -> None:
    # images (a token tensor's element-wise layers are features x tokens x 1); upsampling's inputs are the small
    # side of the sizes, its outputs the sizes
    layers = [c.layer for c in default if c.layer.type not in ("linear", "upsample") and c.layer.in_w > 1]
    ups = [c.layer for c in default if c.layer.type == "upsample"]
    assert max(u.out_h for u in ups) <= 224 and {u.out_h // u.in_h for u in ups} == {2, 3, 4}
    sizes = {layer.in_h for layer in layers if layer.in_h > 1}
    assert min(sizes) == 7 and max(sizes) == 224
    assert sizes >= {7, 14, 28, 56, 112, 224} and any(s not in (7, 14, 28, 56, 112, 224) for s in sizes)
    batches = [c.layer.batch for c in default]
    assert min(batches) == 1 and max(batches) >= 128
    assert any(b not in (1, 2, 4, 8, 16, 32, 64, 128, 256) for b in batches)
    # wide layers at small sizes, narrow ones at large sizes, as in real networks
    assert all(layer.in_channels <= 2048 * 14 // layer.in_h + 8 or layer.in_channels <= 64 for layer in layers)


def test_other_types_coverage(default: list[SweepConfig]) -> None:
    of = {t: [c.layer for c in default if c.layer.type == t] for t in LAYER_TYPES}
    linear = of["linear"]
    assert min(x.in_features for x in linear) < 64 and max(x.in_features for x in linear) >= 4096
    assert any(x.in_features % 8 for x in linear)
    for pool in ("maxpool2d", "avgpool2d"):
        assert {x.ceil_mode for x in of[pool]} == {0, 1}
        assert {x.padding_h for x in of[pool]} == {0, 1}
    assert {x.out_h for x in of["adaptive_avgpool2d"]} > {1}
    assert {x.broadcast for x in of["mul"]} == {0, 1} and {x.broadcast for x in of["add"]} == {0, 1}
    assert {x.inputs for x in of["concat"]} == {1, 2, 3, 4}
    assert {x.groups for x in of["channel_shuffle"]} > {2}
    assert any(x.in_h == 1 for x in of["softmax"]) and any(x.in_h > 1 for x in of["softmax"])


def test_power_subset_and_trials(default: list[SweepConfig]) -> None:
    suite = SUITES["default"]
    power = [c for c in default if c.power]
    assert 0.8 * suite.power_configs <= len(power) <= 1.3 * suite.power_configs
    assert {c.layer.type for c in power} == set(LAYER_TYPES)
    assert all(c.trials >= 3 for c in power)
    assert all(c.trials == suite.runtime_trials for c in default if not c.power)
    # spread over the range of work: the lightest and heaviest convolutions are in the subset
    convs = [c for c in default if c.layer.type == "conv2d"]
    work = [c.layer.flops + c.layer.bytes_moved for c in convs]
    chosen = [c.layer.flops + c.layer.bytes_moved for c in convs if c.power]
    assert min(chosen) == min(work) and max(chosen) == max(work)
    deciles = np.quantile(np.log(work), np.linspace(0, 1, 11))
    hit = {int(np.searchsorted(deciles, np.log(w), side="right")) for w in chosen}
    assert len(hit) >= 8


def test_select_power_edge_cases() -> None:
    configs = [SweepConfig(Layer("relu", in_channels=c)) for c in (1, 2, 3)]
    assert select_power(configs, 0) == set()
    assert select_power([], 5) == set()
    assert select_power(configs, 1) == {1}
    assert select_power(configs, 10) == {0, 1, 2}


def test_types_filter_and_parse() -> None:
    configs = generate("quick", types=["conv2d", "relu"])
    assert {c.layer.type for c in configs} == {"conv2d", "relu"}
    assert parse_types("conv2d, Linear,conv2d") == ["conv2d", "linear"]
    assert parse_types(None) == list(LAYER_TYPES) == parse_types("")
    with pytest.raises(InputError, match="unknown layer type 'conv3d'"):
        parse_types("conv2d,conv3d")
    with pytest.raises(InputError, match="unknown suite"):
        generate("huge")
    with pytest.raises(InputError, match="at least 1"):
        generate("quick", configs=0)


def test_limits_supports_and_dtype() -> None:
    limits = Limits(max_bytes=4 << 20, max_flops=10**8)
    configs = generate("quick", limits=limits, dtype="fp16", supports=lambda layer: layer.type != "gelu", zoo=True)
    assert configs and all(limits.fits(c.layer) for c in configs)
    assert all(c.layer.dtype == "fp16" for c in configs)
    assert "gelu" not in {c.layer.type for c in configs}
    assert any(c.origin.startswith("zoo:") for c in configs)
    # the batch is halved rather than the configuration dropped: large batches survive where they fit
    assert max(c.layer.batch for c in configs if c.origin == "sampled") >= 64


def test_configs_override() -> None:
    configs = generate("default", configs=60)
    assert 60 <= len(configs) <= 60 + len(LAYER_TYPES)
    assert any(c.power for c in configs)


def test_zoo_layers_distinct() -> None:
    layers = zoo_layers([1], "fp32", ["conv2d"], Limits())
    rows = [c.layer.row for c in layers]
    assert len(rows) == len(set(rows)) > 100
    assert all(c.layer.type == "conv2d" and c.origin.startswith("zoo:") for c in layers)
    assert any(c.origin == "zoo:resnet50" for c in layers)


def test_config_id_is_stable() -> None:
    layer = Layer("conv2d", batch=8, in_channels=64, in_h=56, in_w=56, out_channels=64, kernel=3, padding=1)
    # A changed id would make a resumed run measure everything again: change it only on purpose.
    assert config_id(layer) == "c06bcb82fd1bf3ac"
    assert config_id(layer, Variant()) != config_id(layer, Variant(mode="graph")) != config_id(layer)
    assert config_id(layer.replace(name="other")) == config_id(layer)  # names do not matter
    assert config_id(layer.replace(dtype="fp16")) != config_id(layer)
    # attention's kv_heads and kv_dtype came later: at their defaults (heads, dtype) they leave the ids as they were
    att = Layer("attention", batch=2, heads=8, tokens=128, head_dim=64, causal=1, dtype="fp16")
    assert config_id(att) == "9a30f81a5de83006"
    assert config_id(Layer("attention", heads=12, tokens=197, head_dim=64)) == "570a07b65f69c464"
    ids = {config_id(a) for a in (att, att.replace(kv_heads=2), att.replace(window=64), att.replace(kv_dtype="fp8"))}
    assert len(ids) == 4
