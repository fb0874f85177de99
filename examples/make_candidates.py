"""Write examples/candidates.csv.gz: candidate architectures from a MobileNetV2/ResNet-style search space.

The space is the kind a neural-architecture search explores: for MobileNetV2-style networks a width
multiplier, per-stage depths, expansion ratios and kernel sizes, and the input resolution; for ResNet-style
networks the block type, base width, per-stage depths and resolution. Candidates are drawn at random with a
fixed seed, so the file is reproducible:

    python examples/make_candidates.py [COUNT] [OUT] [DTYPE]

(default: 3000 candidates in fp32 to examples/candidates.csv.gz; the bf16 table the README scores on an H200 is
``python examples/make_candidates.py 3000 examples/candidates-bf16.csv.gz bf16``: the same architectures.)

There is no `error` column: these candidates were never trained, and we have no honest source for their
accuracy.
"""

from __future__ import annotations

import random
import sys

import neuralpower as npw
from neuralpower.zoo.builder import Builder, T


def _round8(c: float) -> int:
    return max(8, int(c + 4) // 8 * 8)


DTYPE = "fp32"


def mobilenet(rng: random.Random, index: int) -> npw.Architecture:
    width = rng.choice([0.5, 0.75, 1.0, 1.25, 1.4])
    size = rng.choice([128, 160, 192, 224])
    b = Builder(batch=1, dtype=DTYPE)
    x = b.act(b.bn(b.conv(T(3, size, size), _round8(32 * width), 3, 2, 1, name="stem.conv")), "relu6")
    # (channels, stride, largest depth) of MobileNetV2's seven stages
    for s, (c, stride, max_depth) in enumerate(
        [(16, 1, 1), (24, 2, 3), (32, 2, 4), (64, 2, 4), (96, 1, 3), (160, 2, 3), (320, 1, 1)]
    ):
        out = _round8(c * width)
        for d in range(rng.randint(1, max_depth)):
            expand = 1 if s == 0 else rng.choice([3, 4, 6])
            k = rng.choice([3, 5, 7])
            name = f"stage{s}.{d}"
            y = x
            if expand != 1:
                y = b.act(b.bn(b.conv(y, x.c * expand, 1, name=f"{name}.expand")), "relu6")
            y = b.act(b.bn(b.conv(y, y.c, k, stride if d == 0 else 1, k // 2, groups=y.c, name=f"{name}.dw")), "relu6")
            y = b.bn(b.conv(y, out, 1, name=f"{name}.project"))
            x = b.add(x, y, name=f"{name}.add") if y == x else y
    x = b.act(b.bn(b.conv(x, _round8(1280 * max(1.0, width)), 1, name="head.conv")), "relu6")
    x = b.flatten(b.adaptive_avgpool(x, 1, name="pool"), name="flatten")
    b.linear(x, 1000, name="classifier")
    return b.build(f"mbv2-{index:05d}", family="mobilenet_v2", width=width, resolution=size)


def resnet(rng: random.Random, index: int) -> npw.Architecture:
    bottleneck = rng.random() < 0.5
    base = rng.choice([32, 48, 64, 80, 96])
    size = rng.choice([128, 160, 192, 224])
    b = Builder(batch=1, dtype=DTYPE)
    x = b.act(b.bn(b.conv(T(3, size, size), base, 7, 2, 3, name="stem.conv")), "relu")
    x = b.maxpool(x, 3, 2, 1, name="stem.pool")
    for s in range(4):
        width = base * 2**s
        out = width * (4 if bottleneck else 1)
        for d in range(rng.randint(1, 6)):
            stride = 2 if d == 0 and s > 0 else 1
            name = f"layer{s + 1}.{d}"
            if bottleneck:
                y = b.act(b.bn(b.conv(x, width, 1, name=f"{name}.conv1")), "relu")
                y = b.act(b.bn(b.conv(y, width, 3, stride, 1, name=f"{name}.conv2")), "relu")
                y = b.bn(b.conv(y, out, 1, name=f"{name}.conv3"))
            else:
                y = b.act(b.bn(b.conv(x, width, 3, stride, 1, name=f"{name}.conv1")), "relu")
                y = b.bn(b.conv(y, out, 3, 1, 1, name=f"{name}.conv2"))
            shortcut = x if (x == y) else b.bn(b.conv(x, out, 1, stride, name=f"{name}.downsample"))
            x = b.act(b.add(y, shortcut, name=f"{name}.add"), "relu")
    x = b.flatten(b.adaptive_avgpool(x, 1, name="pool"), name="flatten")
    b.linear(x, 1000, name="fc")
    return b.build(f"resnet-{index:05d}", family="resnet", width=base, resolution=size)


def main(count: int = 3000, out: str = "examples/candidates.csv.gz", dtype: str = "fp32") -> None:
    global DTYPE
    DTYPE = dtype
    rng = random.Random(2026)
    archs = [(mobilenet if rng.random() < 0.6 else resnet)(rng, i) for i in range(count)]
    npw.write_architectures(archs, out)
    layers = sum(len(a) for a in archs)
    print(f"wrote {out}: {count} architectures, {layers} layers")


if __name__ == "__main__":
    main(
        int(sys.argv[1]) if len(sys.argv) > 1 else 3000,
        sys.argv[2] if len(sys.argv) > 2 else "examples/candidates.csv.gz",
        sys.argv[3] if len(sys.argv) > 3 else "fp32",
    )
