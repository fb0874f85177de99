"""Sweeps: the layer configurations a microbenchmark suite measures.

Configurations are sampled per layer type to cover what real networks use: batch 1 to 256; spatial
sizes 7 to 224 (the usual 7, 14, 28, 56, 112, 224 and odd ones in between); channel counts from the
widths of real networks and drawn freely (so many are not multiples of 8), larger where the spatial size
is smaller, as in real networks; conv kernels 1, 3, 5 and 7, strides 1 and 2, "same" and no padding, a
little dilation, depthwise, grouped and pointwise convolutions; linear layers from 16 to 25088 features;
pooling with padding and ceil mode; SE-style broadcast add and mul; concat of 1 to 4 operands; channel
shuffle; for transformers, token tensors of 1 to 4096 tokens and 64 to 8192 features (linear on tokens,
layernorm in both layouts, batched matmul, attention of 1 to 32 heads of 32 to 128 dimensions, causal or
not, embeddings of real vocabularies), the tanh GELU, nearest and bilinear upsampling and transposed
convolutions. Optionally the distinct layers of the zoo networks are added (``zoo=True``).

Everything is deterministic given the seed. Each configuration is a :class:`SweepConfig`; its
``config_id`` (a hash of the layer's normalized row and the variant) names it in datasets, so a
resumed run recognizes what it has measured. Runtime is measured on every configuration, power on a
subset spread evenly over each type's range of work (:func:`select_power`).
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from ..errors import InputError
from ..layers import FIELDS, LAYER_TYPES, Layer
from .executors.base import Variant

__all__ = [
    "SUITES",
    "TYPE_WEIGHTS",
    "Limits",
    "Suite",
    "SweepConfig",
    "config_id",
    "generate",
    "parse_types",
    "select_power",
    "zoo_layers",
]


@dataclass(frozen=True)
class Suite:
    """How large a sweep is.

    Attributes
    ----------
    name
        ``quick``, ``default`` or ``full``.
    configs
        Sampled configurations (before executor support is checked; the zoo's layers come on top).
    min_per_type
        Fewest sampled configurations of any layer type (a fitted model needs 30 rows or so).
    power_configs
        Configurations that also get power windows.
    runtime_trials
        Separate measurements of each runtime-only configuration (each in its own pass over a freshly
        shuffled order, so drift shows as noise, not bias).
    power_trials
        Separate measurements of each power configuration (at least 3).
    zoo_batches
        Batch sizes at which the zoo's layers are added with ``zoo=True``.
    """

    name: str
    configs: int
    min_per_type: int
    power_configs: int
    runtime_trials: int
    power_trials: int
    zoo_batches: tuple[int, ...]


# Sizes were chosen for an H100 with 1 s power windows: quick runs in a few minutes, default in about 20
# minutes, full in a few hours (the GPU work list has the measured times).
SUITES: dict[str, Suite] = {
    "quick": Suite("quick", configs=240, min_per_type=8, power_configs=24, runtime_trials=1, power_trials=3,
                   zoo_batches=(1,)),
    "default": Suite("default", configs=1500, min_per_type=40, power_configs=120, runtime_trials=2, power_trials=3,
                     zoo_batches=(1, 32)),
    "full": Suite("full", configs=6000, min_per_type=150, power_configs=480, runtime_trials=3, power_trials=3,
                  zoo_batches=(1, 8, 64)),
}

# Share of the sampled configurations per layer type: roughly how often a type appears in real networks
# and how much its runtime varies with its configuration.
TYPE_WEIGHTS: dict[str, float] = {
    "conv2d": 0.34,
    "linear": 0.08,
    "maxpool2d": 0.04,
    "avgpool2d": 0.04,
    "adaptive_avgpool2d": 0.03,
    "batchnorm2d": 0.05,
    "relu": 0.04,
    "relu6": 0.03,
    "sigmoid": 0.03,
    "hardsigmoid": 0.02,
    "silu": 0.03,
    "hardswish": 0.03,
    "gelu": 0.03,
    "add": 0.05,
    "mul": 0.04,
    "concat": 0.04,
    "softmax": 0.02,
    "flatten": 0.02,
    "channel_shuffle": 0.02,
    "layernorm": 0.04,
    "matmul": 0.05,
    "attention": 0.06,
    "embedding": 0.02,
    "upsample": 0.02,
    "conv_transpose2d": 0.03,
    "tanh": 0.02,
}
assert set(TYPE_WEIGHTS) == set(LAYER_TYPES)


@dataclass(frozen=True)
class Limits:
    """Largest configuration a sweep may hold (``None``: no limit).

    A sampled configuration over a limit has its batch halved until it fits, or is drawn again; a zoo
    layer over a limit is left out.
    """

    max_bytes: int | None = None
    max_flops: int | None = None

    def fits(self, layer: Layer) -> bool:
        # an embedding reads a few rows but its whole table must be in memory
        table = layer.params * (4 if layer.dtype == "fp32" else 2) if layer.type == "embedding" else 0
        if self.max_bytes is not None and layer.bytes_moved + table > self.max_bytes:
            return False
        return self.max_flops is None or layer.flops <= self.max_flops


@dataclass(frozen=True)
class SweepConfig:
    """One configuration of a sweep.

    Attributes
    ----------
    layer
        The layer (its batch and dtype included).
    origin
        ``sampled``, or ``zoo:<network>`` for a zoo layer (the first network it was found in).
    power
        Whether power windows are measured too.
    trials
        Separate measurements to make.
    """

    layer: Layer
    origin: str = "sampled"
    power: bool = False
    trials: int = 1

    @property
    def layer_id(self) -> str:
        return config_id(self.layer)


# Fields added after datasets were first written, with the value every row written before them has (0 where
# the value is not named): left out of an id at that value, so a resumed run knows the older configurations.
_LATER_FIELDS = frozenset(FIELDS[FIELDS.index("tokens"):])
_OLDER_VALUES = {("linear", "tokens"): 1, ("softmax", "channels_first"): 1}
# ... or, for attention's kv_heads and kv_dtype (added after attention), the value of the field they default to.
_OLDER_AS = {("attention", "kv_heads"): FIELDS.index("heads"), ("attention", "kv_dtype"): FIELDS.index("dtype")}


def config_id(layer: Layer, variant: Variant | None = None) -> str:
    """A stable 16-hex-digit name of a layer configuration (and variant): a hash of its normalized row (a field
    added since the first datasets is left out at the value every older row has)."""
    row = layer.row

    def older(name: str) -> int:
        at = _OLDER_AS.get((layer.type, name))
        return row[at] if at is not None else _OLDER_VALUES.get((layer.type, name), 0)

    parts = [
        f"{name}={value}"
        for name, value in zip(FIELDS, row, strict=True)
        if name not in _LATER_FIELDS or value != older(name)
    ]
    if variant is not None:
        parts += [f"{k}={v}" for k, v in variant.columns().items()]
    return hashlib.sha1(";".join(parts).encode()).hexdigest()[:16]


def parse_types(text: str | Sequence[str] | None) -> list[str]:
    """Layer types from ``conv2d,linear`` (or a list); all types for ``None`` or empty.

    Raises
    ------
    InputError
        An unknown type name.
    """
    if text is None:
        return list(LAYER_TYPES)
    items = text.split(",") if isinstance(text, str) else list(text)
    names = [t.strip().lower() for t in items if t.strip()]
    if not names:
        return list(LAYER_TYPES)
    for t in names:
        if t not in LAYER_TYPES:
            raise InputError(f"unknown layer type {t!r} (known: {', '.join(LAYER_TYPES)})")
    return list(dict.fromkeys(names))


# -- sampling ------------------------------------------------------------------------------------------

_SIZES = (7, 14, 28, 56, 112, 224)
_BATCHES = (1, 2, 4, 8, 16, 32, 64, 128, 256)
_BATCH_P = np.array([4, 1, 2, 2, 2, 2, 2, 1, 1], dtype=float)
# Widths found in real networks (VGG, ResNet, MobileNet, EfficientNet, ShuffleNet, DenseNet, SqueezeNet),
# several not multiples of 8.
_CHANNELS = (
    3, 8, 16, 24, 32, 40, 48, 58, 64, 72, 80, 96, 112, 116, 120, 128, 144, 160, 184, 192, 200, 232, 240, 256,
    288, 320, 384, 464, 480, 512, 576, 672, 768, 960, 1024, 1152, 1280, 2048,
)  # fmt: skip
_FEATURES = (10, 100, 128, 256, 512, 576, 1000, 1024, 1280, 2048, 4096, 9216, 25088)


def _batch(rng: np.random.Generator) -> int:
    if rng.random() < 0.1:
        return int(rng.integers(1, 257))
    return int(rng.choice(_BATCHES, p=_BATCH_P / _BATCH_P.sum()))


def _size(rng: np.random.Generator) -> int:
    if rng.random() < 0.6:
        return int(rng.choice(_SIZES))
    return round(math.exp(rng.uniform(math.log(7), math.log(224))))


def _max_channels(size: int) -> int:
    """Widest layer at a spatial size, as in real networks (narrow at 224, up to 2048 at 14 and below)."""
    return int(min(2048, max(64, 2048 * 14 // max(size, 1))))


def _channels(rng: np.random.Generator, size: int, low: int = 1) -> int:
    top = _max_channels(size)
    if rng.random() < 0.65:
        choices = [c for c in _CHANNELS if low <= c <= top]
        if choices:
            return int(rng.choice(choices))
    return round(math.exp(rng.uniform(math.log(low), math.log(top))))


def _hw(rng: np.random.Generator, size: int) -> tuple[int, int]:
    if rng.random() < 0.1:
        return size, _size(rng)
    return size, size


def _conv(rng: np.random.Generator, batch: int, dtype: str) -> Layer:
    size = _size(rng)
    h, w = _hw(rng, size)
    kind = rng.choice(["dense", "pointwise", "depthwise", "grouped", "stem"], p=[0.42, 0.26, 0.22, 0.05, 0.05])
    bias = int(rng.random() < 0.4)  # most convolutions are followed by batchnorm and have no bias
    common: dict[str, Any] = {"batch": batch, "dtype": dtype, "in_h": h, "in_w": w, "bias": bias}
    if kind == "pointwise":
        cin, cout = _channels(rng, size), _channels(rng, size)
        stride = 2 if rng.random() < 0.1 else 1
        return Layer("conv2d", in_channels=cin, out_channels=cout, kernel=1, stride=stride, **common)
    if kind == "depthwise":
        c = _channels(rng, size, low=8)
        k = int(rng.choice([3, 5, 7], p=[0.6, 0.3, 0.1]))
        mult = 2 if rng.random() < 0.1 else 1
        stride = 2 if rng.random() < 0.25 else 1
        return Layer(
            "conv2d", in_channels=c, out_channels=c * mult, kernel=k, stride=stride, padding=k // 2, groups=c, **common
        )
    if kind == "stem":
        k = int(rng.choice([3, 7], p=[0.5, 0.5]))
        return Layer(
            "conv2d", in_channels=3, out_channels=_channels(rng, 56), kernel=k, stride=2, padding=k // 2, **common
        )
    k = int(rng.choice([1, 3, 5, 7], p=[0.15, 0.6, 0.15, 0.1]))
    stride = 2 if rng.random() < 0.25 else 1
    padding = k // 2 if rng.random() < 0.85 else 0
    dilation = 2 if k == 3 and rng.random() < 0.05 else 1
    if dilation > 1:
        padding = 2
    groups = 1
    cin, cout = _channels(rng, size), _channels(rng, size)
    if kind == "grouped":
        groups = int(rng.choice([2, 4, 8, 32]))
        cin = groups * max(1, math.ceil(cin / groups))
        cout = groups * max(1, math.ceil(cout / groups))
    return Layer(
        "conv2d",
        in_channels=cin,
        out_channels=cout,
        kernel=k,
        stride=stride,
        padding=padding,
        dilation=dilation,
        groups=groups,
        **common,
    )


# Transformer sizes: sequence lengths (ViT's 50 and 197 with the class token, BERT's and GPT's powers of two),
# model widths, head dimensions and vocabularies of released models.
_TOKENS = (1, 49, 50, 64, 128, 196, 197, 256, 384, 512, 577, 1024, 2048, 4096)
_WIDTHS = (256, 384, 512, 768, 1024, 1280, 1536, 2048, 3072, 4096, 5120, 8192)
_HEAD_DIMS = (32, 64, 80, 96, 128)
_VOCABS = (1000, 8192, 30522, 32000, 50257, 65024, 128256)


def _tokens(rng: np.random.Generator) -> int:
    if rng.random() < 0.7:
        return int(rng.choice(_TOKENS))
    return round(math.exp(rng.uniform(0.0, math.log(4096))))


def _width(rng: np.random.Generator) -> int:
    if rng.random() < 0.7:
        return int(rng.choice(_WIDTHS))
    return round(math.exp(rng.uniform(math.log(64), math.log(8192))))


def _token_batch(rng: np.random.Generator) -> int:
    """Sequences per batch: 1 to 64 (a long sequence is a large batch of work already)."""
    return int(rng.choice([1, 2, 4, 8, 16, 32, 64], p=[0.3, 0.1, 0.15, 0.15, 0.1, 0.1, 0.1]))


def _transformer(type_name: str, rng: np.random.Generator, dtype: str) -> Layer:
    """A random layer of a transformer type (layernorm, matmul, attention, embedding)."""
    base: dict[str, Any] = {"batch": _token_batch(rng), "dtype": dtype}
    if type_name == "layernorm":
        if rng.random() < 0.25:  # ConvNeXt's channels-first layernorm over an image's channels
            size = _size(rng)
            return Layer("layernorm", in_features=_channels(rng, size, low=8), tokens=size * size, channels_first=1,
                         **base)
        return Layer("layernorm", in_features=_width(rng), tokens=_tokens(rng), **base)
    if type_name == "matmul":
        tokens = _tokens(rng)
        if rng.random() < 0.5:  # Q K^T and scores x V, batched over heads, as attention written out does
            d = int(rng.choice(_HEAD_DIMS))
            kv = tokens if rng.random() < 0.8 else _tokens(rng)
            k, n = (d, kv) if rng.random() < 0.5 else (kv, d)
            return Layer("matmul", heads=int(rng.choice([1, 8, 12, 16, 32])), tokens=tokens, in_features=k,
                         out_features=n, **base)
        return Layer("matmul", tokens=tokens, in_features=_width(rng), out_features=_width(rng),
                     broadcast=int(rng.random() < 0.3), **base)
    if type_name == "attention":
        tokens = _tokens(rng)
        kv = tokens if rng.random() < 0.8 else _tokens(rng)
        heads = int(rng.choice([1, 4, 8, 12, 16, 20, 32], p=[0.05, 0.1, 0.15, 0.3, 0.2, 0.1, 0.1]))
        return Layer("attention", heads=heads, tokens=tokens, kv_tokens=kv, head_dim=int(rng.choice(_HEAD_DIMS)),
                     causal=int(rng.random() < 0.35), **base)
    return Layer("embedding", tokens=_tokens(rng), in_features=int(rng.choice(_VOCABS)), out_features=_width(rng),
                 **base)


def _features(rng: np.random.Generator) -> int:
    if rng.random() < 0.5:
        return int(rng.choice(_FEATURES))
    return round(math.exp(rng.uniform(math.log(16), math.log(8192))))


def _sample(type_name: str, rng: np.random.Generator, dtype: str) -> Layer:
    """One random layer of a type (may raise InputError for an invalid draw: the caller draws again)."""
    batch = _batch(rng)
    if type_name == "conv2d":
        return _conv(rng, batch, dtype)
    if type_name == "linear":
        if rng.random() < 0.4:  # on a token tensor: a transformer's projections and MLP
            return Layer("linear", batch=_token_batch(rng), dtype=dtype, tokens=_tokens(rng), in_features=_width(rng),
                         out_features=_width(rng), bias=int(rng.random() < 0.8))
        return Layer("linear", batch=batch, dtype=dtype, in_features=_features(rng), out_features=_features(rng),
                     bias=int(rng.random() < 0.9))
    if type_name in ("layernorm", "matmul", "attention", "embedding"):
        return _transformer(type_name, rng, dtype)
    if type_name == "conv_transpose2d":
        size = min(_size(rng), 112)  # a decoder's upsampling path: its input is the smaller side
        k, stride, padding = [(2, 2, 0), (3, 2, 1), (4, 2, 1), (3, 1, 1)][int(rng.choice(4, p=[0.4, 0.25, 0.25, 0.1]))]
        output_padding = 1 if (k, stride) == (3, 2) and rng.random() < 0.7 else 0
        return Layer("conv_transpose2d", batch=batch, dtype=dtype, in_channels=_channels(rng, size),
                     in_h=size, in_w=size, out_channels=_channels(rng, 2 * size), kernel=k, stride=stride,
                     padding=padding, output_padding=output_padding, bias=int(rng.random() < 0.5))
    size = _size(rng)
    h, w = _hw(rng, size)
    c = _channels(rng, size)
    base: dict[str, Any] = {"batch": batch, "dtype": dtype, "in_channels": c, "in_h": h, "in_w": w}
    if type_name == "maxpool2d":
        k = int(rng.choice([2, 3], p=[0.4, 0.6]))
        padding = int(rng.random() < 0.5) if k == 3 else 0
        stride = int(rng.choice([1, 2], p=[0.1, 0.9])) if k == 3 else 2
        return Layer("maxpool2d", kernel=k, stride=stride, padding=padding, ceil_mode=int(rng.random() < 0.3), **base)
    if type_name == "avgpool2d":
        k = int(rng.choice([2, 3, 5, 7], p=[0.5, 0.3, 0.1, 0.1]))
        stride = int(rng.choice([1, 2, k])) if k > 2 else 2
        padding = int(rng.random() < 0.3) if k >= 3 else 0
        return Layer("avgpool2d", kernel=k, stride=stride, padding=padding, ceil_mode=int(rng.random() < 0.2), **base)
    if type_name == "adaptive_avgpool2d":
        out = 1 if rng.random() < 0.75 else int(rng.integers(2, min(h, w, 7) + 1)) if min(h, w) >= 2 else 1
        return Layer("adaptive_avgpool2d", out_h=out, out_w=out, **base)
    if type_name == "softmax" and rng.random() < 0.3:
        # attention's scores [batch, heads, tokens, kv_tokens], over the last axis
        tokens = _tokens(rng)
        heads = int(rng.choice([1, 8, 12, 16]))
        return Layer("softmax", batch=_token_batch(rng), dtype=dtype, in_channels=tokens, in_h=heads * tokens, in_w=1,
                     channels_first=0)
    if type_name in ("softmax", "flatten"):
        if rng.random() < 0.7:  # classifier outputs (N x classes) and pooled features
            base.update(in_channels=int(rng.choice([10, 100, 1000, 1001, _channels(rng, 7)])), in_h=1, in_w=1)
        elif type_name == "flatten" and rng.random() < 0.5:
            base.update(in_h=7, in_w=7)  # VGG's and AlexNet's classifier inputs
        return Layer(type_name, **base)
    if type_name in ("add", "mul"):
        if type_name == "add" and rng.random() < 0.25:  # a transformer's residual on a token tensor
            base.update(batch=_token_batch(rng), in_channels=_width(rng), in_h=_tokens(rng), in_w=1)
        broadcast = int(rng.random() < (0.5 if type_name == "mul" else 0.1))
        inputs = 3 if rng.random() < 0.1 else 2
        return Layer(type_name, inputs=inputs, broadcast=broadcast, **base)
    if type_name == "concat":
        inputs = int(rng.choice([1, 2, 3, 4], p=[0.05, 0.55, 0.2, 0.2]))
        base["in_channels"] = max(c, inputs)
        return Layer("concat", inputs=inputs, **base)
    if type_name == "channel_shuffle":
        groups = int(rng.choice([2, 3, 4, 8], p=[0.7, 0.1, 0.1, 0.1]))
        base["in_channels"] = groups * max(1, math.ceil(c / groups))
        return Layer("channel_shuffle", groups=groups, **base)
    if type_name == "upsample":
        scale = 2 if rng.random() < 0.8 else int(rng.choice([3, 4]))
        base.update(in_h=max(1, h // scale), in_w=max(1, w // scale))
        return Layer("upsample", out_h=base["in_h"] * scale, out_w=base["in_w"] * scale,
                     interpolation=int(rng.random() < 0.5), **base)
    if type_name == "batchnorm2d" and rng.random() < 0.1:
        base.update(in_h=1, in_w=1)
    if type_name == "gelu":
        if rng.random() < 0.5:  # on a token tensor [batch, tokens, features], written features x tokens x 1
            base.update(batch=_token_batch(rng), in_channels=_width(rng), in_h=_tokens(rng), in_w=1)
        base["approximate"] = int(rng.random() < 0.4)
    return Layer(type_name, **base)


def _fit(layer: Layer, limits: Limits) -> Layer | None:
    """The layer, or with its batch halved until it fits the limits; ``None`` when even batch 1 does not."""
    while not limits.fits(layer):
        if layer.batch == 1:
            return None
        layer = layer.replace(batch=max(1, layer.batch // 2))
    return layer


def _counts(types: Sequence[str], total: int, min_per_type: int) -> dict[str, int]:
    weights = {t: TYPE_WEIGHTS[t] for t in types}
    scale = total / sum(weights.values())
    return {t: max(min_per_type, round(w * scale)) for t, w in weights.items()}


def zoo_layers(batches: Iterable[int], dtype: str, types: Sequence[str], limits: Limits) -> list[SweepConfig]:
    """The distinct layers of every zoo network at some batch sizes (those within the limits)."""
    from .. import zoo

    seen: set[tuple[int, ...]] = set()
    out: list[SweepConfig] = []
    for batch in batches:
        for name in zoo.names():
            for layer in zoo.build(name, batch=batch, dtype=dtype):
                if layer.type not in types or layer.row in seen:
                    continue
                seen.add(layer.row)
                if limits.fits(layer):
                    out.append(SweepConfig(Layer._trusted(layer.row), origin=f"zoo:{name}"))
    return out


def _work(layer: Layer) -> float:
    """How much a configuration does, for spreading the power subset: FLOPs plus bytes moved."""
    return math.log10(1.0 + layer.flops + layer.bytes_moved)


def select_power(configs: Sequence[SweepConfig], count: int) -> set[int]:
    """Indices of ``count`` configurations spread evenly over each layer type's range of work.

    Each type gets a share proportional to its configurations (at least one); within a type, the picks
    are evenly spaced quantiles of ``log(FLOPs + bytes moved)``, so small, medium and large layers all
    get power measurements.
    """
    if count <= 0 or not configs:
        return set()
    by_type: dict[str, list[int]] = {}
    for i, c in enumerate(configs):
        by_type.setdefault(c.layer.type, []).append(i)
    chosen: set[int] = set()
    for indices in by_type.values():
        share = max(1, round(count * len(indices) / len(configs)))
        share = min(share, len(indices))
        ordered = sorted(indices, key=lambda i: (_work(configs[i].layer), i))
        picks = np.linspace(0, len(ordered) - 1, share) if share > 1 else np.array([(len(ordered) - 1) / 2])
        chosen.update(ordered[round(float(p))] for p in picks)
    return chosen


def generate(
    suite: Suite | str = "default",
    *,
    dtype: str = "fp32",
    seed: int = 0,
    types: Sequence[str] | None = None,
    zoo: bool = False,
    limits: Limits | None = None,
    supports: Callable[[Layer], bool] | None = None,
    configs: int | None = None,
) -> list[SweepConfig]:
    """The configurations of a sweep, shuffled, deterministic given ``seed``.

    Parameters
    ----------
    suite
        A :class:`Suite` or the name of one of :data:`SUITES`.
    dtype
        Element type of every layer.
    seed
        Seed of the sampling and of the order.
    types
        Layer types to include (default: all).
    zoo
        Also add the distinct layers of the zoo networks at the suite's ``zoo_batches``.
    limits
        Largest configuration allowed (see :class:`Limits`).
    supports
        The executor's ``supports``: configurations it cannot run are left out.
    configs
        Number of sampled configurations instead of the suite's (the per-type minimum is then scaled
        down with it).
    """
    if isinstance(suite, str):
        if suite not in SUITES:
            raise InputError(f"unknown suite {suite!r} (known: {', '.join(SUITES)})")
        suite = SUITES[suite]
    if configs is not None:
        if configs < 1:
            raise InputError("the number of configurations must be at least 1")
        scale = configs / suite.configs
        suite = replace(
            suite,
            configs=configs,
            min_per_type=max(1, min(suite.min_per_type, round(suite.min_per_type * scale))),
            power_configs=max(1, round(suite.power_configs * scale)),
        )
    types = parse_types(types)
    limits = limits or Limits()
    rng = np.random.default_rng(seed)
    seen: set[tuple[int, ...]] = set()
    out: list[SweepConfig] = []
    for type_name, count in _counts(types, suite.configs, suite.min_per_type).items():
        made, attempts = 0, 0
        while made < count and attempts < 50 * count:
            attempts += 1
            try:
                layer = _sample(type_name, rng, dtype)
            except InputError:
                continue  # an invalid combination (a kernel larger than the input): draw again
            fitted = _fit(layer, limits)
            if fitted is None or fitted.row in seen:
                continue
            seen.add(fitted.row)
            out.append(SweepConfig(fitted))
            made += 1
    if zoo:
        out += [c for c in zoo_layers(suite.zoo_batches, dtype, types, limits) if c.layer.row not in seen]
    if supports is not None:
        out = [c for c in out if supports(c.layer)]
    power = select_power(out, suite.power_configs)
    out = [
        replace(
            c,
            power=i in power,
            trials=max(suite.runtime_trials, suite.power_trials) if i in power else suite.runtime_trials,
        )
        for i, c in enumerate(out)
    ]
    order = rng.permutation(len(out))
    return [out[int(i)] for i in order]
