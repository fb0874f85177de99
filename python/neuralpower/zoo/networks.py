"""The zoo's networks, each written the way its reference implementation's eval-mode ``forward`` runs.

The ImageNet networks follow torchvision 0.29.1 layer by layer: convolutions with torchvision's bias
flags, batchnorms, activations, pools, flatten, linear layers, residual ``add``, squeeze-and-excite
``mul`` (broadcast), ``concat`` and ``channel_shuffle``, in execution order. What does nothing at inference
is left out: dropout and stochastic depth (identity in eval mode) and views (``chunk``, ``view``).
DenseNet's ``torch.cat`` of a single tensor in each block's first layer is kept: it copies.
``torch.flatten`` is kept as a ``flatten`` layer, which moves nothing. Their parameter counts
equal torchvision's, and their MACs (conv2d and linear only) torchvision's published GMACs at 224 x 224;
shapes, parameters and MACs match torchvision layer by layer at other resolutions too.

Layer names are torchvision's module names (``layer1.0.conv1``). A module that ``forward`` applies more
than once gets one numbered name per use (ResNet's ``relu``: ``layer1.0.relu1``, ``layer1.0.relu2``); an
operation that is no module is named after the operation in the module that runs it
(``layer1.0.add``, ``inception3a.cat``, ``features.4.block.2.mul``, ``flatten``). Every name in a network
is unique.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from . import register
from .builder import Builder, T

__all__: list[str] = []

_TV = "torchvision 0.29.1, torchvision.models.{} (eval mode)"


def _make_divisible(v: float, divisor: int = 8) -> int:
    """torchvision's ``_make_divisible``: round ``v`` to a multiple of ``divisor``, not below 90 % of it."""
    new_v = max(divisor, int(v + divisor / 2) // divisor * divisor)
    return new_v + divisor if new_v < 0.9 * v else new_v


def _cna(
    b: Builder, x: T, out: int, kernel: int, stride: int = 1, *, groups: int = 1, act: str | None, name: str
) -> T:
    """torchvision's ``Conv2dNormActivation``: conv (no bias, "same" padding), batchnorm, activation."""
    x = b.conv(x, out, kernel, stride, (kernel - 1) // 2, groups=groups, name=f"{name}.0")
    x = b.bn(x, name=f"{name}.1")
    return b.act(x, act, name=f"{name}.2") if act else x


def _classifier(b: Builder, x: T, layers: Sequence[tuple[str, int | str]]) -> T:
    """A classifier head: ``(name, out_features)`` is a linear layer, ``(name, kind)`` an activation."""
    for name, what in layers:
        x = b.linear(x, what, name=name) if isinstance(what, int) else b.act(x, what, name=name)
    return x


# -- AlexNet and VGG ----------------------------------------------------------------------------------


@register(
    "alexnet",
    image_size=224,
    description="AlexNet (Krizhevsky et al. 2012), torchvision's one-GPU variant (64-192-384-256-256 convs)",
    source=_TV.format("alexnet"),
)
def alexnet(b: Builder, x: T) -> T:
    convs = {0: (64, 11, 4, 2), 3: (192, 5, 1, 2), 6: (384, 3, 1, 1), 8: (256, 3, 1, 1), 10: (256, 3, 1, 1)}
    for i in range(13):
        if i in convs:
            out, k, s, p = convs[i]
            x = b.conv(x, out, k, s, p, bias=True, name=f"features.{i}")
        elif i in (2, 5, 12):
            x = b.maxpool(x, 3, 2, name=f"features.{i}")
        else:
            x = b.act(x, "relu", name=f"features.{i}")
    x = b.adaptive_avgpool(x, 6, name="avgpool")
    x = b.flatten(x, name="flatten")
    return _classifier(
        b, x, [("classifier.1", 4096), ("classifier.2", "relu"), ("classifier.4", 4096),
               ("classifier.5", "relu"), ("classifier.6", 1000)],
    )


def _vgg(cfg: Sequence[int | str]) -> Callable[[Builder, T], T]:
    def forward(b: Builder, x: T) -> T:
        i = 0
        for v in cfg:
            if v == "M":
                x = b.maxpool(x, 2, 2, name=f"features.{i}")
                i += 1
            else:
                assert isinstance(v, int)
                x = b.conv(x, v, 3, 1, 1, bias=True, name=f"features.{i}")
                x = b.act(x, "relu", name=f"features.{i + 1}")
                i += 2
        x = b.adaptive_avgpool(x, 7, name="avgpool")
        x = b.flatten(x, name="flatten")
        return _classifier(
            b, x, [("classifier.0", 4096), ("classifier.1", "relu"), ("classifier.3", 4096),
                   ("classifier.4", "relu"), ("classifier.6", 1000)],
        )

    return forward


_VGG: dict[str, tuple[str, list[int | str]]] = {
    "vgg11": ("A", [64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"]),
    "vgg16": ("D", [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"]),
    "vgg19": ("E", [64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M",
                    512, 512, 512, 512, "M"]),
}
for _name, (_letter, _cfg) in _VGG.items():
    register(
        _name,
        image_size=224,
        description=f"{_name.upper()} (Simonyan & Zisserman 2015, configuration {_letter}), without batchnorm",
        source=_TV.format(_name),
    )(_vgg(_cfg))


# -- ResNet -------------------------------------------------------------------------------------------


def _downsample(b: Builder, x: T, out: int, stride: int, name: str) -> T:
    x = b.conv(x, out, 1, stride, name=f"{name}.downsample.0")
    return b.bn(x, name=f"{name}.downsample.1")


def _basic_block(b: Builder, x: T, planes: int, stride: int, name: str) -> T:
    identity = x
    out = b.conv(x, planes, 3, stride, 1, name=f"{name}.conv1")
    out = b.bn(out, name=f"{name}.bn1")
    out = b.act(out, "relu", name=f"{name}.relu1")
    out = b.conv(out, planes, 3, 1, 1, name=f"{name}.conv2")
    out = b.bn(out, name=f"{name}.bn2")
    if stride != 1 or x.c != planes:
        identity = _downsample(b, x, planes, stride, name)
    out = b.add(out, identity, name=f"{name}.add")
    return b.act(out, "relu", name=f"{name}.relu2")


def _bottleneck(b: Builder, x: T, planes: int, stride: int, name: str) -> T:
    """ResNet v1.5's bottleneck: the stride is on the 3x3 convolution."""
    identity = x
    out = x
    for i, (channels, k, s) in enumerate(((planes, 1, 1), (planes, 3, stride), (planes * 4, 1, 1)), 1):
        out = b.conv(out, channels, k, s, k // 2, name=f"{name}.conv{i}")
        out = b.bn(out, name=f"{name}.bn{i}")
        if i < 3:
            out = b.act(out, "relu", name=f"{name}.relu{i}")
    if stride != 1 or x.c != planes * 4:
        identity = _downsample(b, x, planes * 4, stride, name)
    out = b.add(out, identity, name=f"{name}.add")
    return b.act(out, "relu", name=f"{name}.relu3")


def _resnet(block: Callable[[Builder, T, int, int, str], T], depths: Sequence[int]) -> Callable[[Builder, T], T]:
    def forward(b: Builder, x: T) -> T:
        x = b.conv(x, 64, 7, 2, 3, name="conv1")
        x = b.bn(x, name="bn1")
        x = b.act(x, "relu", name="relu")
        x = b.maxpool(x, 3, 2, 1, name="maxpool")
        for i, (planes, n) in enumerate(zip((64, 128, 256, 512), depths, strict=True)):
            for j in range(n):
                x = block(b, x, planes, 2 if i > 0 and j == 0 else 1, f"layer{i + 1}.{j}")
        x = b.adaptive_avgpool(x, 1, name="avgpool")
        x = b.flatten(x, name="flatten")
        return b.linear(x, 1000, name="fc")

    return forward


for _depth, _block, _depths in (
    (18, _basic_block, (2, 2, 2, 2)),
    (34, _basic_block, (3, 4, 6, 3)),
    (50, _bottleneck, (3, 4, 6, 3)),
    (101, _bottleneck, (3, 4, 23, 3)),
    (152, _bottleneck, (3, 8, 36, 3)),
):
    register(
        f"resnet{_depth}",
        image_size=224,
        description=f"ResNet-{_depth} (He et al. 2016)"
        + (", v1.5: the stride on the bottleneck's 3x3 conv" if _block is _bottleneck else ""),
        source=_TV.format(f"resnet{_depth}"),
    )(_resnet(_block, _depths))


# -- MobileNetV2, MobileNetV3: inverted residuals (EfficientNet below) ----------------------------


def _squeeze_excite(b: Builder, x: T, squeeze: int, act: str, scale_act: str, name: str) -> T:
    """torchvision.ops.SqueezeExcitation: global pool, two 1x1 convs with bias, scale the input."""
    s = b.adaptive_avgpool(x, 1, name=f"{name}.avgpool")
    s = b.conv(s, squeeze, 1, bias=True, name=f"{name}.fc1")
    s = b.act(s, act, name=f"{name}.activation")
    s = b.conv(s, x.c, 1, bias=True, name=f"{name}.fc2")
    s = b.act(s, scale_act, name=f"{name}.scale_activation")
    return b.mul(x, s, name=f"{name}.mul")


def _inverted_residual(
    b: Builder,
    x: T,
    name: str,
    out: int,
    kernel: int,
    stride: int,
    expanded: int,
    act: str,
    se: tuple[int, str, str] | None = None,
    *,
    v2: bool = False,
) -> T:
    """MobileNetV2's InvertedResidual, MobileNetV3's InvertedResidual and EfficientNet's MBConv.

    1x1 expansion (when ``expanded`` differs from the input's channels), depthwise ``kernel`` conv,
    optional squeeze-and-excite ``(squeeze channels, activation, scale activation)``, 1x1 projection
    without activation, and the residual when the shape is kept. MobileNetV2 names its sequence
    ``conv`` and puts the projection's conv and batchnorm in it directly; the others name it ``block``.
    """
    seq = f"{name}.conv" if v2 else f"{name}.block"
    y, i = x, 0
    if expanded != x.c:
        y = _cna(b, y, expanded, 1, act=act, name=f"{seq}.{i}")
        i += 1
    y = _cna(b, y, expanded, kernel, stride, groups=expanded, act=act, name=f"{seq}.{i}")
    i += 1
    if se is not None:
        y = _squeeze_excite(b, y, *se, name=f"{seq}.{i}")
        i += 1
    if v2:
        y = b.conv(y, out, 1, name=f"{seq}.{i}")
        y = b.bn(y, name=f"{seq}.{i + 1}")
    else:
        y = _cna(b, y, out, 1, act=None, name=f"{seq}.{i}")
    return b.add(y, x, name=f"{name}.add") if stride == 1 and x.c == out else y


@register(
    "mobilenet_v2",
    image_size=224,
    description="MobileNetV2 (Sandler et al. 2018), width 1.0",
    source=_TV.format("mobilenet_v2"),
)
def mobilenet_v2(b: Builder, x: T) -> T:
    x = _cna(b, x, 32, 3, 2, act="relu6", name="features.0")
    i = 1
    for t, c, n, s in ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1),
                       (6, 160, 3, 2), (6, 320, 1, 1)):
        for j in range(n):
            x = _inverted_residual(b, x, f"features.{i}", c, 3, s if j == 0 else 1, x.c * t, "relu6", v2=True)
            i += 1
    x = _cna(b, x, 1280, 1, act="relu6", name=f"features.{i}")
    x = b.adaptive_avgpool(x, 1, name="avgpool")
    x = b.flatten(x, name="flatten")
    return b.linear(x, 1000, name="classifier.1")


# MobileNetV3 bottlenecks: kernel, expanded channels, out channels, squeeze-and-excite, activation, stride.
_V3_LARGE = [
    (3, 16, 16, False, "relu", 1), (3, 64, 24, False, "relu", 2), (3, 72, 24, False, "relu", 1),
    (5, 72, 40, True, "relu", 2), (5, 120, 40, True, "relu", 1), (5, 120, 40, True, "relu", 1),
    (3, 240, 80, False, "hardswish", 2), (3, 200, 80, False, "hardswish", 1),
    (3, 184, 80, False, "hardswish", 1), (3, 184, 80, False, "hardswish", 1),
    (3, 480, 112, True, "hardswish", 1), (3, 672, 112, True, "hardswish", 1),
    (5, 672, 160, True, "hardswish", 2), (5, 960, 160, True, "hardswish", 1),
    (5, 960, 160, True, "hardswish", 1),
]
_V3_SMALL = [
    (3, 16, 16, True, "relu", 2), (3, 72, 24, False, "relu", 2), (3, 88, 24, False, "relu", 1),
    (5, 96, 40, True, "hardswish", 2), (5, 240, 40, True, "hardswish", 1), (5, 240, 40, True, "hardswish", 1),
    (5, 120, 48, True, "hardswish", 1), (5, 144, 48, True, "hardswish", 1),
    (5, 288, 96, True, "hardswish", 2), (5, 576, 96, True, "hardswish", 1), (5, 576, 96, True, "hardswish", 1),
]


def _mobilenet_v3(config: Sequence[tuple[int, int, int, bool, str, int]], last: int) -> Callable[[Builder, T], T]:
    def forward(b: Builder, x: T) -> T:
        x = _cna(b, x, 16, 3, 2, act="hardswish", name="features.0")
        for i, (k, expanded, out, use_se, act, s) in enumerate(config, 1):
            se = (_make_divisible(expanded // 4), "relu", "hardsigmoid") if use_se else None
            x = _inverted_residual(b, x, f"features.{i}", out, k, s, expanded, act, se)
        x = _cna(b, x, 6 * x.c, 1, act="hardswish", name=f"features.{len(config) + 1}")
        x = b.adaptive_avgpool(x, 1, name="avgpool")
        x = b.flatten(x, name="flatten")
        return _classifier(
            b, x, [("classifier.0", last), ("classifier.1", "hardswish"), ("classifier.3", 1000)]
        )

    return forward


register(
    "mobilenet_v3_small",
    image_size=224,
    description="MobileNetV3-Small (Howard et al. 2019), width 1.0",
    source=_TV.format("mobilenet_v3_small"),
)(_mobilenet_v3(_V3_SMALL, 1024))
register(
    "mobilenet_v3_large",
    image_size=224,
    description="MobileNetV3-Large (Howard et al. 2019), width 1.0",
    source=_TV.format("mobilenet_v3_large"),
)(_mobilenet_v3(_V3_LARGE, 1280))


# -- SqueezeNet, GoogLeNet, DenseNet, EfficientNet, ShuffleNetV2 --------------------------------------


def _fire(b: Builder, x: T, squeeze: int, expand: int, name: str) -> T:
    x = b.conv(x, squeeze, 1, bias=True, name=f"{name}.squeeze")
    x = b.act(x, "relu", name=f"{name}.squeeze_activation")
    e1 = b.conv(x, expand, 1, bias=True, name=f"{name}.expand1x1")
    e1 = b.act(e1, "relu", name=f"{name}.expand1x1_activation")
    e3 = b.conv(x, expand, 3, 1, 1, bias=True, name=f"{name}.expand3x3")
    e3 = b.act(e3, "relu", name=f"{name}.expand3x3_activation")
    return b.concat(e1, e3, name=f"{name}.cat")


@register(
    "squeezenet1_0",
    image_size=224,
    description="SqueezeNet 1.0 (Iandola et al. 2016)",
    source=_TV.format("squeezenet1_0"),
)
def squeezenet1_0(b: Builder, x: T) -> T:
    x = b.conv(x, 96, 7, 2, bias=True, name="features.0")
    x = b.act(x, "relu", name="features.1")
    fires = {3: (16, 64), 4: (16, 64), 5: (32, 128), 7: (32, 128), 8: (48, 192), 9: (48, 192),
             10: (64, 256), 12: (64, 256)}
    for i in range(2, 13):
        if i in fires:
            x = _fire(b, x, *fires[i], name=f"features.{i}")
        else:
            x = b.maxpool(x, 3, 2, ceil_mode=True, name=f"features.{i}")
    x = b.conv(x, 1000, 1, bias=True, name="classifier.1")
    x = b.act(x, "relu", name="classifier.2")
    x = b.adaptive_avgpool(x, 1, name="classifier.3")
    return b.flatten(x, name="flatten")


def _basic_conv(b: Builder, x: T, out: int, kernel: int, stride: int = 1, padding: int = 0, *, name: str) -> T:
    """GoogLeNet's BasicConv2d: conv without bias, batchnorm, relu."""
    x = b.conv(x, out, kernel, stride, padding, name=f"{name}.conv")
    x = b.bn(x, name=f"{name}.bn")
    return b.act(x, "relu", name=f"{name}.relu")


def _inception(b: Builder, x: T, c1: int, c3r: int, c3: int, c5r: int, c5: int, pool: int, *, name: str) -> T:
    """GoogLeNet's Inception block; torchvision's "5x5" branch uses a 3x3 conv (kept for its weights)."""
    b1 = _basic_conv(b, x, c1, 1, name=f"{name}.branch1")
    b2 = _basic_conv(b, x, c3r, 1, name=f"{name}.branch2.0")
    b2 = _basic_conv(b, b2, c3, 3, 1, 1, name=f"{name}.branch2.1")
    b3 = _basic_conv(b, x, c5r, 1, name=f"{name}.branch3.0")
    b3 = _basic_conv(b, b3, c5, 3, 1, 1, name=f"{name}.branch3.1")
    b4 = b.maxpool(x, 3, 1, 1, ceil_mode=True, name=f"{name}.branch4.0")
    b4 = _basic_conv(b, b4, pool, 1, name=f"{name}.branch4.1")
    return b.concat(b1, b2, b3, b4, name=f"{name}.cat")


@register(
    "googlenet",
    image_size=224,
    description="GoogLeNet (Inception v1, Szegedy et al. 2015) with batchnorm, without the auxiliary "
    "classifiers (inference) and without transform_input",
    source=_TV.format("googlenet"),
)
def googlenet(b: Builder, x: T) -> T:
    x = _basic_conv(b, x, 64, 7, 2, 3, name="conv1")
    x = b.maxpool(x, 3, 2, ceil_mode=True, name="maxpool1")
    x = _basic_conv(b, x, 64, 1, name="conv2")
    x = _basic_conv(b, x, 192, 3, 1, 1, name="conv3")
    x = b.maxpool(x, 3, 2, ceil_mode=True, name="maxpool2")
    blocks = [
        ("3a", (64, 96, 128, 16, 32, 32)), ("3b", (128, 128, 192, 32, 96, 64)), ("maxpool3", (3,)),
        ("4a", (192, 96, 208, 16, 48, 64)), ("4b", (160, 112, 224, 24, 64, 64)),
        ("4c", (128, 128, 256, 24, 64, 64)), ("4d", (112, 144, 288, 32, 64, 64)),
        ("4e", (256, 160, 320, 32, 128, 128)), ("maxpool4", (2,)),
        ("5a", (256, 160, 320, 32, 128, 128)), ("5b", (384, 192, 384, 48, 128, 128)),
    ]
    for name, args in blocks:
        if name.startswith("maxpool"):
            x = b.maxpool(x, args[0], 2, ceil_mode=True, name=name)
        else:
            x = _inception(b, x, *args, name=f"inception{name}")
    x = b.adaptive_avgpool(x, 1, name="avgpool")
    x = b.flatten(x, name="flatten")
    return b.linear(x, 1000, name="fc")


@register(
    "densenet121",
    image_size=224,
    description="DenseNet-121 (Huang et al. 2017), growth rate 32, bottleneck size 4",
    source=_TV.format("densenet121"),
)
def densenet121(b: Builder, x: T) -> T:
    growth, bn_size = 32, 4
    x = b.conv(x, 64, 7, 2, 3, name="features.conv0")
    x = b.bn(x, name="features.norm0")
    x = b.act(x, "relu", name="features.relu0")
    x = b.maxpool(x, 3, 2, 1, name="features.pool0")
    for i, n in enumerate((6, 12, 24, 16), 1):
        block = f"features.denseblock{i}"
        features = [x]
        for j in range(1, n + 1):
            name = f"{block}.denselayer{j}"
            # each layer concatenates all earlier features (in the first, torch.cat of one tensor: a copy)
            y = b.concat(*features, name=f"{name}.cat")
            y = b.bn(y, name=f"{name}.norm1")
            y = b.act(y, "relu", name=f"{name}.relu1")
            y = b.conv(y, bn_size * growth, 1, name=f"{name}.conv1")
            y = b.bn(y, name=f"{name}.norm2")
            y = b.act(y, "relu", name=f"{name}.relu2")
            features.append(b.conv(y, growth, 3, 1, 1, name=f"{name}.conv2"))
        x = b.concat(*features, name=f"{block}.cat")
        if i < 4:
            t = f"features.transition{i}"
            x = b.bn(x, name=f"{t}.norm")
            x = b.act(x, "relu", name=f"{t}.relu")
            x = b.conv(x, x.c // 2, 1, name=f"{t}.conv")
            x = b.avgpool(x, 2, 2, name=f"{t}.pool")
    x = b.bn(x, name="features.norm5")
    x = b.act(x, "relu", name="relu")
    x = b.adaptive_avgpool(x, 1, name="avgpool")
    x = b.flatten(x, name="flatten")
    return b.linear(x, 1000, name="classifier")


@register(
    "efficientnet_b0",
    image_size=224,
    description="EfficientNet-B0 (Tan & Le 2019)",
    source=_TV.format("efficientnet_b0"),
)
def efficientnet_b0(b: Builder, x: T) -> T:
    x = _cna(b, x, 32, 3, 2, act="silu", name="features.0")
    # expand ratio, kernel, stride, out channels, layers
    stages = ((1, 3, 1, 16, 1), (6, 3, 2, 24, 2), (6, 5, 2, 40, 2), (6, 3, 2, 80, 3), (6, 5, 1, 112, 3),
              (6, 5, 2, 192, 4), (6, 3, 1, 320, 1))
    for i, (t, k, s, out, n) in enumerate(stages, 1):
        for j in range(n):
            se = (max(1, x.c // 4), "silu", "sigmoid")
            x = _inverted_residual(
                b, x, f"features.{i}.{j}", out, k, s if j == 0 else 1, _make_divisible(x.c * t), "silu", se
            )
    x = _cna(b, x, 4 * x.c, 1, act="silu", name="features.8")
    x = b.adaptive_avgpool(x, 1, name="avgpool")
    x = b.flatten(x, name="flatten")
    return b.linear(x, 1000, name="classifier.1")


def _shuffle_unit(b: Builder, x: T, out: int, stride: int, name: str) -> T:
    """ShuffleNetV2's InvertedResidual; at stride 1 the input's first half passes through (a view)."""
    half = out // 2

    def tail(y: T, seq: str, first: int) -> T:  # 1x1 conv, batchnorm, relu at seq.first...
        y = b.conv(y, half, 1, name=f"{seq}.{first}")
        y = b.bn(y, name=f"{seq}.{first + 1}")
        return b.act(y, "relu", name=f"{seq}.{first + 2}")

    def depthwise(y: T, seq: str, first: int) -> T:
        y = b.conv(y, y.c, 3, stride, 1, groups=y.c, name=f"{seq}.{first}")
        return b.bn(y, name=f"{seq}.{first + 1}")

    if stride > 1:
        left = tail(depthwise(x, f"{name}.branch1", 0), f"{name}.branch1", 2)
        right = x
    else:
        left = right = T(x.c // 2, x.h, x.w)
    right = tail(depthwise(tail(right, f"{name}.branch2", 0), f"{name}.branch2", 3), f"{name}.branch2", 5)
    y = b.concat(left, right, name=f"{name}.cat")
    return b.channel_shuffle(y, 2, name=f"{name}.channel_shuffle")


@register(
    "shufflenet_v2_x1_0",
    image_size=224,
    description="ShuffleNetV2 1.0x (Ma et al. 2018)",
    source=_TV.format("shufflenet_v2_x1_0"),
)
def shufflenet_v2_x1_0(b: Builder, x: T) -> T:
    x = _cna(b, x, 24, 3, 2, act="relu", name="conv1")
    x = b.maxpool(x, 3, 2, 1, name="maxpool")
    for stage, repeats, out in ((2, 4, 116), (3, 8, 232), (4, 4, 464)):
        for j in range(repeats):
            x = _shuffle_unit(b, x, out, 2 if j == 0 else 1, f"stage{stage}.{j}")
    x = _cna(b, x, 1024, 1, act="relu", name="conv5")
    x = b.adaptive_avgpool(x, 1, name="mean")  # x.mean([2, 3]): global average pool straight to a vector
    return b.linear(x, 1000, name="fc")


# -- CIFAR-10 networks of the NeuralPower paper's experiments -----------------------------------------


@register(
    "cifar_nin",
    image_size=32,
    description="Network in Network for CIFAR-10 (Lin et al. 2014), our reconstruction of its standard Caffe "
    "model as used in NeuralPower's CIFAR-10 experiments (Cai et al. 2017): mlpconv blocks 192-160-96 "
    "(5x5, 1x1, 1x1 convs), 192-192-192 (5x5, 1x1, 1x1), 192-192-10 (3x3, 1x1, 1x1), convs with bias and "
    "relu, ceil-mode maxpool 3/2 and avgpool 3/2 between blocks, global average pool; no dropout (inference)",
    source="Lin, Chen & Yan 2014, 'Network In Network' (ICLR), its Caffe CIFAR-10 model; reconstructed here, "
    "not taken from the NeuralPower paper's files",
)
def cifar_nin(b: Builder, x: T) -> T:
    blocks = (((192, 5), (160, 1), (96, 1)), ((192, 5), (192, 1), (192, 1)), ((192, 3), (192, 1), (10, 1)))
    for i, block in enumerate(blocks):
        for j, (out, k) in enumerate(block):
            name = f"conv{i + 1}" if j == 0 else f"cccp{2 * i + j}"
            x = b.conv(x, out, k, 1, k // 2, bias=True, name=name)
            x = b.act(x, "relu", name=f"relu_{name}")
        if i == 0:
            x = b.maxpool(x, 3, 2, ceil_mode=True, name="pool1")
        elif i == 1:
            x = b.avgpool(x, 3, 2, ceil_mode=True, name="pool2")
    x = b.adaptive_avgpool(x, 1, name="pool3")
    return b.flatten(x, name="flatten")


@register(
    "cifar_conv6",
    image_size=32,
    description="A plain 6-conv VGG-style CIFAR-10 network, our reconstruction of the kind NeuralPower (Cai et "
    "al. 2017) measured: 3x3 convs with bias and relu (no batchnorm) 64, 64, maxpool 2, 128, 128, maxpool 2, "
    "256, 256, maxpool 2, flatten, linear 4096 -> 256, relu, linear 256 -> 10 (at 32 x 32; at size s the "
    "first linear takes 256 * (s // 8)^2 features)",
    source="our reconstruction after Cai et al. 2017, 'NeuralPower: Predict and Deploy Energy-Efficient "
    "Convolutional Neural Networks' (ACML), which used CIFAR-10 networks built in Caffe/TensorFlow",
)
def cifar_conv6(b: Builder, x: T) -> T:
    i = 1
    for stage, out in enumerate((64, 128, 256), 1):
        for _ in range(2):
            x = b.conv(x, out, 3, 1, 1, bias=True, name=f"conv{i}")
            x = b.act(x, "relu", name=f"relu{i}")
            i += 1
        x = b.maxpool(x, 2, 2, name=f"pool{stage}")
    x = b.flatten(x, name="flatten")
    x = b.linear(x, 256, name="fc1")
    x = b.act(x, "relu", name="relu_fc1")
    return b.linear(x, 10, name="fc2")
