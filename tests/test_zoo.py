"""The zoo's networks: parameter and MAC counts against published figures, builds, shapes and errors."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest

from neuralpower import Architecture, InputError, Layer, read_architectures, write_architectures, zoo

# Source: torchvision 0.29.1 weights metadata, <Model>_Weights.IMAGENET1K_V1.meta["num_params"] and
# meta["_ops"]. torchvision computes "_ops" with test/common_extended_utils.py, counting the
# multiply-accumulates of convolutions and matrix multiplies (no bias, no other layers) for one
# 1 x 3 x 224 x 224 input, in GMACs rounded to 3 decimals. Our MACs count conv2d and linear only, the
# same convention.
TORCHVISION = {
    # name: (num_params, _ops in GMACs)
    "alexnet": (61100840, 0.714),
    "vgg11": (132863336, 7.609),
    "vgg16": (138357544, 15.470),
    "vgg19": (143667240, 19.632),
    "resnet18": (11689512, 1.814),
    "resnet34": (21797672, 3.664),
    "resnet50": (25557032, 4.089),
    "resnet101": (44549160, 7.801),
    "resnet152": (60192808, 11.514),
    "mobilenet_v2": (3504872, 0.301),
    "mobilenet_v3_small": (2542856, 0.057),
    "mobilenet_v3_large": (5483032, 0.217),
    "squeezenet1_0": (1248424, 0.819),
    "googlenet": (6624904, 1.498),
    "densenet121": (7978856, 2.834),
    "efficientnet_b0": (5288548, 0.386),
    "shufflenet_v2_x1_0": (2278604, 0.145),
}


def _conv(cin: int, cout: int, k: int, out_hw: int) -> tuple[int, int]:
    """(params, MACs) of a k x k conv with bias producing cout x out_hw x out_hw."""
    return cout * cin * k * k + cout, out_hw * out_hw * cout * cin * k * k


def _linear(fin: int, fout: int) -> tuple[int, int]:
    return fin * fout + fout, fin * fout


# Source: computed by hand from the networks' definitions at 32 x 32 (convs with bias, "same" padding).
# cifar_nin: blocks at 32 x 32, then 16 x 16 after maxpool 3/2 (ceil mode: ceil((32 - 3) / 2) + 1 = 16),
# then 8 x 8 after avgpool 3/2 (ceil((16 - 3) / 2) + 1 = 8).
_NIN = [
    _conv(3, 192, 5, 32), _conv(192, 160, 1, 32), _conv(160, 96, 1, 32),
    _conv(96, 192, 5, 16), _conv(192, 192, 1, 16), _conv(192, 192, 1, 16),
    _conv(192, 192, 3, 8), _conv(192, 192, 1, 8), _conv(192, 10, 1, 8),
]  # fmt: skip
# cifar_conv6: two convs at each of 32, 16 and 8 (maxpool 2 halves), then 256 x 4 x 4 = 4096 features.
_CONV6 = [
    _conv(3, 64, 3, 32), _conv(64, 64, 3, 32),
    _conv(64, 128, 3, 16), _conv(128, 128, 3, 16),
    _conv(128, 256, 3, 8), _conv(256, 256, 3, 8),
    _linear(256 * 4 * 4, 256), _linear(256, 10),
]  # fmt: skip
HAND = {
    "cifar_nin": (sum(p for p, _ in _NIN), sum(m for _, m in _NIN)),
    "cifar_conv6": (sum(p for p, _ in _CONV6), sum(m for _, m in _CONV6)),
}

# Source: torchvision 0.29.1 weights metadata as above (ViT_B_16, ViT_B_32, ConvNeXt_Tiny IMAGENET1K_V1), whose
# "_ops" count the products of attention too (as our attention layer's MACs do).
TORCHVISION_MODERN = {
    "vit_b_16": (86567656, 17.564),
    "vit_b_32": (88224232, 4.409),
    "convnext_tiny": (28589128, 4.456),
}
# Source: the parameters of Hugging Face's BertModel (with pooler) for bert-base-uncased and bert-large-uncased,
# and of GPT2LMHeadModel for gpt2 (the language-model head tied to the token embedding, counted once), as
# sum(p.numel() for p in model.parameters()): the figures every model card quotes (110M, 340M, 124M).
LANGUAGE = {"bert_base": 109482240, "bert_large": 335141888, "gpt2": 124439808}

# Source: Hugging Face transformers 5.25 built from NeuSight's configurations on the meta device
# (AutoModelForSequenceClassification for BERT, AutoModelForCausalLM for the others), as
# sum(p.numel() for p in model.parameters()); tests/test_hf_eager.py builds them again where transformers is installed.
HF_EAGER = {"hf_bert_large": 335143938, "hf_gpt2_large": 774030080, "hf_gpt3_xl": 2879554560,
            "hf_gpt3_27": 2651553280, "hf_opt_13": 1315758080}

ALL = [*TORCHVISION, *HAND]
CLASSES = {name: 10 if name in HAND else 1000 for name in ALL}


def _by_name(arch: Architecture) -> dict[str, Layer]:
    return {layer.name: layer for layer in arch}


def _as4(shape: tuple[int, ...]) -> tuple[int, ...]:
    """A vector's (N, F) shape as the (N, F, 1, 1) an element-wise layer after it states."""
    return (*shape, 1, 1) if len(shape) == 2 else shape


def test_names_are_the_zoo() -> None:
    assert zoo.names() == [*ALL, *TORCHVISION_MODERN, *LANGUAGE, *HF_EAGER]
    for entry in zoo.entries():
        if entry.name in HF_EAGER:
            assert entry.image_size == 0 and entry.seq_len in (512, 1024, 2048)
        elif entry.name in LANGUAGE:
            assert entry.image_size == 0 and entry.seq_len == (1024 if entry.name == "gpt2" else 128)
        else:
            assert entry.image_size == (32 if entry.name in HAND else 224) and entry.seq_len is None
        assert entry.description and entry.source
        if entry.name in HAND:
            assert "reconstruction" in entry.description


@pytest.mark.parametrize("name", list(TORCHVISION_MODERN))
def test_vit_and_convnext_params_and_macs(name: str) -> None:
    params, gmacs = TORCHVISION_MODERN[name]
    arch = zoo.build(name)
    totals = arch.totals()
    assert totals["params"] == params
    assert abs(totals["macs"] / 1e9 - gmacs) <= 0.0005 + 1e-9
    # the parameters no layer holds: ViT's class token and position embedding, ConvNeXt's layer scales
    outside = {"vit_b_16": 768 + 197 * 768, "vit_b_32": 768 + 50 * 768, "convnext_tiny": 96 * 3 + 192 * 3 + 384 * 9
               + 768 * 3}[name]
    assert arch.meta["params_outside_layers"] == outside
    assert sum(layer.params for layer in arch) == params - outside
    assert arch[-1].out_shape == (1, 1000)


@pytest.mark.parametrize("name", list(LANGUAGE))
def test_language_model_params(name: str) -> None:
    arch = zoo.build(name)
    assert arch.totals()["params"] == LANGUAGE[name] == sum(layer.params for layer in arch)
    assert "params_outside_layers" not in arch.meta and arch.meta["seq_len"] == zoo.get(name).seq_len
    # the parameters do not depend on the sequence length; the work grows with it
    short = zoo.build(name, seq_len=16, batch=2)
    assert short.totals()["params"] == LANGUAGE[name] and short.meta["seq_len"] == 16
    assert short.totals()["macs"] < arch.totals()["macs"]


def test_bert_base_macs_by_hand() -> None:
    s, d, layers = 128, 768, 12
    per_layer = s * (4 * d * d + 2 * d * 4 * d) + 2 * s * s * d  # projections, MLP, both products of attention
    assert zoo.build("bert_base").totals()["macs"] == layers * per_layer + d * d  # + the pooler on one token


def test_gpt2_is_causal_with_a_tied_head() -> None:
    arch = zoo.build("gpt2", seq_len=10, dtype="fp16")
    layers = _by_name(arch)
    attention = layers["transformer.h.0.attn.attention"]
    assert attention.causal == 1 and attention.heads == 12 and attention.head_dim == 64
    assert attention.macs == 2 * 12 * 55 * 64  # 10 x 11 / 2 query-key pairs per head
    assert layers["transformer.h.0.mlp.act"].approximate == 1
    head = layers["lm_head"]
    assert (head.type, head.broadcast, head.params) == ("matmul", 1, 0)
    assert head.out_shape == (1, 10, 50257) and head.macs == 10 * 768 * 50257


def test_transformer_shapes_chain() -> None:
    layers = _by_name(zoo.build("vit_b_16", batch=2))
    assert layers["conv_proj"].out_shape == (2, 768, 14, 14)
    assert layers["cat"].out_shape == (2, 768, 197, 1)  # tokens written features x tokens x 1
    where = "encoder.layers.encoder_layer_3"
    assert layers[f"{where}.ln_1"].out_shape == layers[f"{where}.self_attention.in_proj"].in_shape == (2, 197, 768)
    assert layers[f"{where}.self_attention.in_proj"].out_shape == (2, 197, 2304)
    assert layers[f"{where}.self_attention.attention"].out_shape == (2, 12, 197, 64)
    assert layers[f"{where}.mlp.0"].out_shape == (2, 197, 3072) and layers[f"{where}.mlp.1"].approximate == 0
    assert layers["heads.head"].in_shape == (2, 768)
    c = _by_name(zoo.build("convnext_tiny"))
    assert (c["features.0.1"].channels_first, c["features.1.0.block.2"].channels_first) == (1, 0)
    assert c["features.1.0.block.3"].in_shape == (1, 56 * 56, 96)
    assert c["features.1.0.mul"].broadcast == 1 and c["features.7.2.add"].out_shape == (1, 768, 7, 7)


def test_vit_at_other_resolutions() -> None:
    arch = zoo.build("vit_b_16", image_size=384)
    assert _by_name(arch)["encoder.ln"].tokens == 577
    assert arch.totals()["params"] == TORCHVISION_MODERN["vit_b_16"][0] + (577 - 197) * 768
    with pytest.raises(InputError, match="not a multiple of the patch size 16"):
        zoo.build("vit_b_16", image_size=200)
    assert zoo.build("convnext_tiny", image_size=64)[-1].out_shape == (1, 1000)


def test_sequence_length_errors() -> None:
    with pytest.raises(InputError, match="at most 512 tokens, not 513"):
        zoo.build("bert_base", seq_len=513)
    with pytest.raises(InputError, match="at most 1024 tokens"):
        zoo.build("gpt2", seq_len=1025)
    with pytest.raises(InputError, match="language model: give it a sequence length, not an image size"):
        zoo.build("bert_large", image_size=224)
    with pytest.raises(InputError, match="image network: give it an image size, not a sequence length"):
        zoo.build("vit_b_16", seq_len=197)
    assert zoo.applicable_sizes("gpt2", 224, 64) == (None, 64)
    assert zoo.applicable_sizes("resnet18", 224, 64) == (224, None)


@pytest.mark.parametrize("name", [*TORCHVISION_MODERN, *LANGUAGE])
def test_transformer_layer_names_are_unique_and_fp16_halves_bytes(name: str) -> None:
    fp32 = zoo.build(name, seq_len=32) if name in LANGUAGE else zoo.build(name)
    names = [layer.name for layer in fp32]
    assert len(set(names)) == len(names)
    fp16 = fp32.with_dtype("fp16")
    # embeddings read 8-byte indices whatever the dtype and flatten moves nothing: everything else halves
    for a, b in zip(fp32, fp16, strict=True):
        if a.type not in ("embedding", "flatten"):
            assert a.bytes_moved == 2 * b.bytes_moved > 0


@pytest.mark.parametrize("name", list(TORCHVISION))
def test_torchvision_params_and_macs(name: str) -> None:
    params, gmacs = TORCHVISION[name]
    totals = zoo.build(name).totals()
    assert totals["params"] == params
    assert abs(totals["macs"] / 1e9 - gmacs) <= 0.0005 + 1e-9


def test_hand_counts_of_the_cifar_networks() -> None:
    # the hand arithmetic itself, written out: NIN 966,986 params and 222,486,528 MACs
    assert HAND["cifar_nin"] == (966986, 222486528)
    assert HAND["cifar_conv6"] == (2196810, 153815552)


@pytest.mark.parametrize("name", list(HAND))
def test_cifar_params_and_macs(name: str) -> None:
    arch = zoo.build(name)
    totals = arch.totals()
    assert (totals["params"], totals["macs"]) == HAND[name]
    assert arch[0].in_shape == (1, 3, 32, 32)
    assert arch[-1].out_shape == (1, 10)


def test_cifar_nin_layers() -> None:
    layers = _by_name(zoo.build("cifar_nin"))
    assert [layers[n].out_shape for n in ("pool1", "pool2", "pool3")] == [
        (1, 96, 16, 16),
        (1, 192, 8, 8),
        (1, 10, 1, 1),
    ]
    assert all(layer.bias == 1 for layer in layers.values() if layer.type == "conv2d")


@pytest.mark.parametrize("name", ALL)
@pytest.mark.parametrize("size", [64, 320])
def test_builds_at_batch_and_size(name: str, size: int) -> None:
    one = zoo.build(name, image_size=size)
    four = zoo.build(name, batch=4, image_size=size)
    assert len(one) == len(four)
    assert all(layer.batch == 4 for layer in four)
    assert four[0].in_shape == (4, 3, size, size)
    assert four[-1].out_shape == (4, CLASSES[name])
    t1, t4 = one.totals(), four.totals()
    assert t4["macs"] == 4 * t1["macs"] > 0
    assert t4["params"] == t1["params"]
    if name != "cifar_conv6":  # its first linear layer takes 256 * (size // 8)^2 features
        assert t1["params"] == zoo.build(name).totals()["params"]


@pytest.mark.parametrize("name", ALL)
def test_layer_names_are_unique(name: str) -> None:
    names = [layer.name for layer in zoo.build(name)]
    assert len(set(names)) == len(names)


@pytest.mark.parametrize("name", ["resnet50", "googlenet", "cifar_conv6"])
def test_fp16_halves_bytes(name: str) -> None:
    fp32 = zoo.build(name, batch=2)
    fp16 = zoo.build(name, batch=2, dtype="fp16")
    assert fp16.dtype == "fp16"
    a, b = fp32.totals(), fp16.totals()
    for key in ("bytes_read", "bytes_written", "bytes"):
        assert a[key] == 2 * b[key] > 0
    assert (a["params"], a["macs"], a["flops"]) == (b["params"], b["macs"], b["flops"])
    assert [layer.bytes_moved for layer in fp32] == [2 * layer.bytes_moved for layer in fp16]


def test_unknown_name() -> None:
    with pytest.raises(InputError, match="unknown zoo network"):
        zoo.build("resnet51")


def test_resolution_too_small() -> None:
    with pytest.raises(InputError, match="alexnet cannot be built"):
        zoo.build("alexnet", image_size=32)  # as in torchvision, its last maxpool gets a 1 x 1 input


def test_small_and_odd_resolutions() -> None:
    arch = zoo.build("resnet50", image_size=32)
    assert arch.totals()["params"] == TORCHVISION["resnet50"][0]
    assert _by_name(arch)["layer4.2.relu3"].out_shape == (1, 2048, 1, 1)
    for name in TORCHVISION:
        assert zoo.build(name, image_size=97)[-1].out_shape == (1, 1000)
    assert zoo.build("densenet121", image_size=512).totals()["params"] == TORCHVISION["densenet121"][0]


@pytest.mark.parametrize("name", ["alexnet", "vgg16", "cifar_conv6", "cifar_nin"])
def test_sequential_networks_chain(name: str) -> None:
    layers = list(zoo.build(name, batch=3))
    for prev, nxt in itertools.pairwise(layers):
        assert _as4(prev.out_shape) == _as4(nxt.in_shape), (prev.name, nxt.name)


def test_resnet50_shapes_chain() -> None:
    layers = _by_name(zoo.build("resnet50", batch=2))

    def chain(*names: str) -> None:
        for a, b in itertools.pairwise(names):
            assert layers[a].out_shape == layers[b].in_shape, (a, b)

    assert layers["conv1"].out_shape == (2, 64, 112, 112)
    chain("conv1", "bn1", "relu", "maxpool", "layer1.0.conv1")
    chain("layer1.0.conv1", "layer1.0.bn1", "layer1.0.relu1", "layer1.0.conv2", "layer1.0.bn2", "layer1.0.relu2")
    chain("layer1.0.relu2", "layer1.0.conv3", "layer1.0.bn3", "layer1.0.add", "layer1.0.relu3", "layer1.1.conv1")
    chain("maxpool", "layer1.0.downsample.0", "layer1.0.downsample.1")
    assert layers["layer1.0.downsample.1"].out_shape == layers["layer1.0.add"].in_shape == (2, 256, 56, 56)
    assert layers["layer2.0.conv2"].stride == (2, 2)  # v1.5
    assert layers["layer2.0.downsample.0"].out_shape == (2, 512, 28, 28)
    assert "layer2.1.downsample.0" not in layers
    chain("layer4.2.relu3", "avgpool", "flatten", "fc")
    assert layers["fc"].in_shape == (2, 2048)
    assert not any(layer.bias for layer in layers.values() if layer.type == "conv2d")


def test_branching_networks_join() -> None:
    g = _by_name(zoo.build("googlenet"))
    assert g["inception3a.cat"].inputs == 4
    assert g["inception3a.cat"].out_shape == (1, 256, 28, 28)
    assert g["inception3a.branch3.1.conv"].kernel == (3, 3)  # torchvision's "5x5"
    assert g["inception5b.cat"].out_shape == g["avgpool"].in_shape == (1, 1024, 7, 7)

    d = _by_name(zoo.build("densenet121"))
    assert d["features.denseblock1.denselayer2.cat"].in_shape == (1, 96, 56, 56)
    assert d["features.denseblock1.cat"].inputs == 7
    assert d["features.denseblock4.cat"].out_shape == d["features.norm5"].in_shape == (1, 1024, 7, 7)
    assert d["features.denseblock1.denselayer1.cat"].inputs == 1  # torch.cat of one tensor: a copy

    s = _by_name(zoo.build("shufflenet_v2_x1_0"))
    assert s["stage2.0.cat"].out_shape == s["stage2.0.channel_shuffle"].in_shape == (1, 116, 28, 28)
    assert s["stage2.1.branch2.0"].in_shape == (1, 58, 28, 28)  # the chunked half
    assert s["stage2.1.channel_shuffle"].groups == 2

    m = _by_name(zoo.build("mobilenet_v3_large", batch=2))
    se = "features.4.block.2"
    assert m[f"{se}.fc1"].out_shape == (2, 24, 1, 1)
    assert m[f"{se}.mul"].broadcast == 1
    assert m[f"{se}.mul"].in_shape == m["features.4.block.1.2"].out_shape == (2, 72, 28, 28)
    assert "features.4.add" not in m and "features.5.add" in m

    e = _by_name(zoo.build("efficientnet_b0"))
    assert e["features.2.1.block.2.fc1"].out_shape == (1, 6, 1, 1)  # 24 // 4
    assert e["features.2.1.add"].out_shape == (1, 24, 56, 56)


@pytest.mark.parametrize("suffix", ["csv", "parquet"])
def test_every_network_round_trips_losslessly(tmp_path: Path, suffix: str) -> None:
    archs = [zoo.build(name, batch=2) for name in zoo.names()]
    archs.append(
        Architecture("resnet50_fp16_b8", zoo.build("resnet50", batch=8, dtype="fp16").layers, {"error": 0.2385})
    )
    path = tmp_path / f"zoo.{suffix}"
    write_architectures(archs, path)
    back = read_architectures(path)
    assert back == archs
    for a, b in zip(archs, back, strict=True):
        assert a.totals() == b.totals()
        assert [layer.name for layer in a] == [layer.name for layer in b]


def test_params_outside_layers_survive_a_table(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import json

    from neuralpower.cli import main

    arch = zoo.build("vit_b_32")
    path = tmp_path / "vit.csv"
    write_architectures([arch], path)
    back = read_architectures(path)[0]
    assert back.meta["params_outside_layers"] == 768 + 50 * 768
    assert back.totals()["params"] == TORCHVISION_MODERN["vit_b_32"][0]
    assert main(["describe", str(path), "--format", "json"]) == 0
    assert json.loads(capsys.readouterr().out)["params"] == TORCHVISION_MODERN["vit_b_32"][0]
