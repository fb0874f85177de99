"""PyTorch and ONNX import: imported networks equal their zoo twins; unsupported input is one clear line."""

from __future__ import annotations

import io
import warnings
from pathlib import Path

import numpy as np
import pytest

from neuralpower import InputError, zoo
from neuralpower.cli import main
from neuralpower.importers import from_onnx, from_torch

torch = pytest.importorskip("torch")
onnx = pytest.importorskip("onnx")
nn = torch.nn
F = torch.nn.functional

from onnx import TensorProto, helper  # noqa: E402
from onnx_builder import OPSET, onnx_graph, shape_only  # noqa: E402

# -- PyTorch twins of zoo networks, written the way torchvision writes them ---------------------------


class BasicBlock(nn.Module):
    def __init__(self, inplanes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = None
        if stride != 1 or inplanes != planes:
            self.downsample = nn.Sequential(nn.Conv2d(inplanes, planes, 1, stride, bias=False), nn.BatchNorm2d(planes))

    def forward(self, x):  # type: ignore[no-untyped-def]
        identity = x
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        if self.downsample is not None:
            identity = self.downsample(x)
        out += identity
        return self.relu(out)


class ResNet18(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        layers, inplanes = [], 64
        for planes, stride in ((64, 1), (128, 2), (256, 2), (512, 2)):
            layers.append(nn.Sequential(BasicBlock(inplanes, planes, stride), BasicBlock(planes, planes)))
            inplanes = planes
        self.layer1, self.layer2, self.layer3, self.layer4 = layers
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(512, 1000)

    def forward(self, x):  # type: ignore[no-untyped-def]
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        x = torch.flatten(self.avgpool(x), 1)
        return self.fc(x)


def _cbr(inp: int, out: int, k: int = 3, stride: int = 1, groups: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(inp, out, k, stride, (k - 1) // 2, groups=groups, bias=False), nn.BatchNorm2d(out), nn.ReLU6(True)
    )


class InvertedResidual(nn.Module):
    def __init__(self, inp: int, oup: int, stride: int, t: int) -> None:
        super().__init__()
        hidden = round(inp * t)
        self.use_res = stride == 1 and inp == oup
        layers = [_cbr(inp, hidden, 1)] if t != 1 else []
        layers += [_cbr(hidden, hidden, 3, stride, hidden), nn.Conv2d(hidden, oup, 1, bias=False), nn.BatchNorm2d(oup)]
        self.conv = nn.Sequential(*layers)

    def forward(self, x):  # type: ignore[no-untyped-def]
        return x + self.conv(x) if self.use_res else self.conv(x)


class MobileNetV2(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        features: list[nn.Module] = [_cbr(3, 32, stride=2)]
        inp = 32
        for t, c, n, s in ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1),
                           (6, 160, 3, 2), (6, 320, 1, 1)):
            for i in range(n):
                features.append(InvertedResidual(inp, c, s if i == 0 else 1, t))
                inp = c
        features.append(_cbr(inp, 1280, 1))
        self.features = nn.Sequential(*features)
        self.classifier = nn.Sequential(nn.Dropout(0.2), nn.Linear(1280, 1000))

    def forward(self, x):  # type: ignore[no-untyped-def]
        x = F.adaptive_avg_pool2d(self.features(x), (1, 1))
        return self.classifier(torch.flatten(x, 1))


def _rows(arch):  # type: ignore[no-untyped-def]
    return [layer.row for layer in arch]


@pytest.mark.parametrize(("module", "name"), [(ResNet18, "resnet18"), (MobileNetV2, "mobilenet_v2")])
@pytest.mark.parametrize("batch", [1, 8])
def test_torch_module_equals_its_zoo_twin(module, name, batch) -> None:  # type: ignore[no-untyped-def]
    net = module()
    arch = from_torch(net, (batch, 3, 224, 224))
    twin = zoo.build(name, batch=batch)
    assert _rows(arch) == _rows(twin)
    assert arch.totals() == twin.totals()
    assert arch.totals()["params"] == sum(p.numel() for p in net.parameters())
    assert net.training  # the module's training flags are left as they were


def test_torch_names_are_module_paths_and_unique() -> None:
    arch = from_torch(ResNet18(), (1, 3, 64, 64))
    names = [layer.name for layer in arch]
    assert names[:4] == ["conv1", "bn1", "relu", "maxpool"]
    assert "layer1.0.conv1" in names and "fc" in names
    assert len(set(names)) == len(names)  # the ReLU used twice per block gets "#2"
    assert "layer1.0.relu#2" in names


class _Mixed(nn.Module):
    """SiLU, squeeze-and-excite (broadcast mul), cat, channel shuffle, functional pools, mean and softmax."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 16, 3, 1, "same")
        self.act = nn.SiLU()
        self.fc1 = nn.Conv2d(16, 4, 1)
        self.fc2 = nn.Conv2d(4, 16, 1)
        self.branch = nn.Conv2d(16, 16, 1, bias=False)
        self.head = nn.Linear(32, 10)

    def forward(self, x):  # type: ignore[no-untyped-def]
        x = self.act(self.stem(x))
        s = torch.sigmoid(self.fc2(F.relu(self.fc1(F.adaptive_avg_pool2d(x, 1)))))
        x = x * s
        y = torch.cat([x, F.hardswish(self.branch(x))], dim=1)
        n, c, h, w = y.size()
        y = y.view(n, 2, c // 2, h, w)
        y = torch.transpose(y, 1, 2).contiguous()
        y = y.view(n, -1, h, w)
        y = F.max_pool2d(y, 3, 2, 1, ceil_mode=True)
        y = y.mean([2, 3])
        return F.softmax(self.head(y), dim=1)


def test_torch_operations_mapped() -> None:
    arch = from_torch(_Mixed(), (2, 3, 17, 17), dtype="fp16")
    types = [layer.type for layer in arch]
    assert types == [
        "conv2d", "silu", "adaptive_avgpool2d", "conv2d", "relu", "conv2d", "sigmoid", "mul", "conv2d", "hardswish",
        "concat", "channel_shuffle", "maxpool2d", "adaptive_avgpool2d", "linear", "softmax",
    ]
    mul = arch[types.index("mul")]
    assert mul.broadcast == 1 and mul.in_channels == 16 and mul.in_h == 17
    assert arch[0].padding == (1, 1)
    shuffle = arch[types.index("channel_shuffle")]
    assert (shuffle.groups, shuffle.in_channels) == (2, 32)
    pool = arch[types.index("maxpool2d")]
    assert pool.ceil_mode == 1 and pool.out_shape == (2, 32, 9, 9)
    assert arch.batch == 2 and arch.dtype == "fp16"


class _Unsupported(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3)
        self.head = nn.Sequential(nn.PixelShuffle(2))

    def forward(self, x):  # type: ignore[no-untyped-def]
        return torch.cumsum(self.head(self.conv(x)), 1)


def test_torch_unsupported_named_in_one_line_or_skipped() -> None:
    with pytest.raises(InputError) as info:
        from_torch(_Unsupported(), (1, 3, 16, 16))
    message = str(info.value)
    assert "head.0 (PixelShuffle)" in message and "cumsum" in message and "\n" not in message
    arch = from_torch(_Unsupported(), (1, 3, 16, 16), allow_unknown=True)
    assert [layer.type for layer in arch] == ["conv2d"]
    assert "head.0 (PixelShuffle)" in arch.meta["skipped"]


class _Untraceable(nn.Module):
    def forward(self, x):  # type: ignore[no-untyped-def]
        return x if x.sum() > 0 else -x


def test_torch_bad_input() -> None:
    with pytest.raises(InputError, match=r"torch\.fx cannot trace it"):
        from_torch(_Untraceable(), (1, 3, 8, 8))
    with pytest.raises(InputError, match="input_shape"):
        from_torch(ResNet18(), (1, 3, -4, 8))
    with pytest.raises(InputError, match="running it on a 1x5x32x32 input failed"):
        from_torch(ResNet18(), (1, 5, 32, 32))
    with pytest.raises(InputError, match="unknown dtype"):
        from_torch(ResNet18(), (1, 3, 32, 32), dtype="int8")
    with pytest.raises(InputError, match="the torch importer builds fp32, fp16, bf16 networks, not fp8") as err:
        from_torch(ResNet18(), (1, 3, 32, 32), dtype="fp8")
    assert err.value.column == "dtype" and "\n" not in str(err.value)


def test_torch_exported_onnx_imports_like_the_module(tmp_path: Path) -> None:
    """PyTorch's own ONNX exporter (no batchnorm: eval export folds it into the conv) against from_torch."""
    net = nn.Sequential(
        nn.Conv2d(3, 8, 3, 2, 1), nn.ReLU(), nn.Conv2d(8, 8, 3, 1, 1, groups=8), nn.ReLU6(), nn.SiLU(),
        nn.MaxPool2d(2, ceil_mode=True), nn.Conv2d(8, 12, 1), nn.Hardswish(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        nn.Linear(12, 10), nn.Softmax(dim=1),
    ).eval()
    path = tmp_path / "net.onnx"
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(net, (torch.zeros(4, 3, 33, 33),), buffer, dynamo=False, input_names=["x"])
    path.write_bytes(buffer.getvalue())
    assert _rows(from_onnx(path)) == _rows(from_torch(net, (4, 3, 33, 33)))


# -- ONNX -------------------------------------------------------------------------------------------

_ROUND_TRIP = ["resnet18", "resnet50", "mobilenet_v2", "mobilenet_v3_large", "efficientnet_b0", "densenet121",
               "squeezenet1_0", "googlenet", "cifar_nin", "cifar_conv6"]


@pytest.mark.parametrize("name", _ROUND_TRIP)
def test_onnx_graph_equals_its_zoo_twin(name: str, tmp_path: Path) -> None:
    path = tmp_path / f"{name}.onnx"
    onnx.save(onnx_graph(name, batch=2), path)
    arch = from_onnx(path)
    twin = zoo.build(name, batch=2)
    assert _rows(arch) == _rows(twin)
    assert [layer.name for layer in arch] == [layer.name for layer in twin]
    assert arch.totals() == twin.totals() and arch.name == name


def _tiny(nodes, inits, shape=(1, 4, 8, 8), elem=TensorProto.FLOAT, opset=OPSET):  # type: ignore[no-untyped-def]
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", elem, list(shape))],
        [helper.make_tensor_value_info(nodes[-1].output[0], elem, None)], inits,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


def test_onnx_shuffle_matmul_bias_and_symbolic_batch(tmp_path: Path) -> None:
    c = np.array
    inits = [
        onnx.numpy_helper.from_array(c([-1, 2, 2, 8, 8], dtype=np.int64), "s5"),
        onnx.numpy_helper.from_array(c([-1, 4, 8, 8], dtype=np.int64), "s4"),
        onnx.numpy_helper.from_array(c([2, 3], dtype=np.int64), "axes"),
        shape_only("w", [4, 6]),
        onnx.numpy_helper.from_array(np.zeros(6, dtype=np.float32), "b"),
    ]
    nodes = [
        helper.make_node("Reshape", ["x", "s5"], ["a"]),
        helper.make_node("Transpose", ["a"], ["t"], "shuffle", perm=[0, 2, 1, 3, 4]),
        helper.make_node("Reshape", ["t", "s4"], ["y"]),
        helper.make_node("ReduceMean", ["y", "axes"], ["m"], "pool", keepdims=0),
        helper.make_node("MatMul", ["m", "w"], ["mm"], "fc"),
        helper.make_node("Add", ["mm", "b"], ["out"], "fc_bias"),
    ]
    model = _tiny(nodes, inits, shape=("N", 4, 8, 8))
    path = tmp_path / "g.onnx"
    onnx.save(model, path)
    arch = from_onnx(path, batch=3)
    assert [layer.type for layer in arch] == ["channel_shuffle", "adaptive_avgpool2d", "linear"]
    assert arch.batch == 3 and arch[0].groups == 2
    assert (arch[2].in_features, arch[2].out_features, arch[2].bias) == (4, 6, 1)
    assert from_onnx(path).batch == 1  # a symbolic batch without --batch


def test_onnx_refuses_fp8_graphs(tmp_path: Path) -> None:
    path = tmp_path / "fp8.onnx"
    onnx.save(_tiny([helper.make_node("Relu", ["x"], ["r"], "act")], [], elem=TensorProto.FLOAT8E4M3FN), path)
    with pytest.raises(InputError, match="is float8e4m3fn: neuralpower does not import fp8 ONNX graphs") as err:
        from_onnx(path)
    assert "\n" not in str(err.value)


def test_onnx_unsupported_and_malformed(tmp_path: Path) -> None:
    nodes = [helper.make_node("Relu", ["x"], ["r"], "act"), helper.make_node("Cos", ["r"], ["t"], "squash"),
             helper.make_node("Erf", ["t"], ["e"])]
    path = tmp_path / "u.onnx"
    onnx.save(_tiny(nodes, []), path)
    with pytest.raises(InputError) as info:
        from_onnx(path)
    assert str(info.value) == f"{path}: not supported: squash (Cos), Erf_2 (Erf) (allow_unknown=True " \
        "(--allow-unknown) skips them)"
    arch = from_onnx(path, allow_unknown=True)
    assert [layer.type for layer in arch] == ["relu"] and arch.meta["skipped"] == "squash (Cos); Erf_2 (Erf)"

    garbage = tmp_path / "garbage.onnx"
    garbage.write_bytes(b"\x08\x07this is not protobuf\xff\xff")
    with pytest.raises(InputError, match="not an ONNX model"):
        from_onnx(garbage)
    with pytest.raises(InputError, match="no such file"):
        from_onnx(tmp_path / "missing.onnx")
    bad_shapes = _tiny([helper.make_node("Add", ["x", "x5"], ["y"])],
                       [onnx.numpy_helper.from_array(np.zeros((3, 5), dtype=np.float32), "x5")])
    onnx.save(bad_shapes, tmp_path / "bad.onnx")
    with pytest.raises(InputError, match="shape inference failed"):
        from_onnx(tmp_path / "bad.onnx")


def test_onnx_from_the_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "mobilenet_v2.onnx"
    onnx.save(onnx_graph("mobilenet_v2"), path)
    assert main(["describe", str(path), "--batch", "4", "--format", "json"]) == 0
    import json

    described = json.loads(capsys.readouterr().out)
    twin = zoo.build("mobilenet_v2", batch=4)
    assert described["batch"] == 4 and described["macs"] == twin.totals()["macs"]
    assert main(["predict", str(path), "--dtype", "bf16"]) == 0  # an fp32 export, predicted on the default H200
    assert "mobilenet_v2: batch 1, bf16" in capsys.readouterr().out
    assert main(["score", str(path), "--dtype", "bf16"]) == 0
    assert capsys.readouterr().out.splitlines()[1].startswith('"mobilenet_v2",152,')

    nodes = [helper.make_node("Relu", ["x"], ["r"], "act"), helper.make_node("Cos", ["r"], ["t"], "squash")]
    onnx.save(_tiny(nodes, []), tmp_path / "u.onnx")
    assert main(["describe", str(tmp_path / "u.onnx")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "squash (Cos)" in err and "--allow-unknown" in err
    assert main(["describe", str(tmp_path / "u.onnx"), "--allow-unknown"]) == 0
    captured = capsys.readouterr()
    assert "skipped 1 unsupported operation: squash (Cos)" in captured.err
