"""Test helper: write a zoo network as an ONNX graph with onnx.helper, node by node.

``OnnxBuilder`` is the zoo's :class:`Builder` that also emits, for every layer it appends, the ONNX
node(s) PyTorch's exporter would write for it (Conv, BatchNormalization, Clip for relu6, Sigmoid and Mul
for SiLU, Gemm, GlobalAveragePool, ...), named by the layer, with weights as shape-only external tensors
(nothing is written: the importer reads shapes only). ``onnx_graph(name)`` runs a zoo network's own
forward function through it.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from neuralpower import zoo
from neuralpower.layers import Layer
from neuralpower.zoo.builder import Builder, T

_ELEM = {"fp32": TensorProto.FLOAT, "fp16": TensorProto.FLOAT16, "bf16": TensorProto.BFLOAT16}
OPSET = 20


def shape_only(name: str, dims: list[int], elem: int = TensorProto.FLOAT) -> TensorProto:
    """An initializer that states its shape and keeps its data in an external file that does not exist."""
    t = TensorProto()
    t.name = name
    t.data_type = elem
    t.dims.extend(dims)
    t.data_location = TensorProto.EXTERNAL
    entry = t.external_data.add()
    entry.key, entry.value = "location", "weights.bin"
    return t


class OnnxBuilder(Builder):
    def __init__(self, batch: int = 1, dtype: str = "fp32") -> None:
        super().__init__(batch, dtype)
        self.elem = _ELEM[dtype]
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[TensorProto] = []
        self.values: dict[int, str] = {}
        self.keep: list[T] = []  # the shapes handed out, so their ids stay unique

    def input(self, x: T) -> T:
        self.values[id(x)] = "input"
        self.keep.append(x)
        return x

    def _const(self, name: str, array: np.ndarray) -> str:
        self.inits.append(numpy_helper.from_array(array, name))
        return name

    def _weight(self, name: str, dims: list[int]) -> str:
        self.inits.append(shape_only(name, dims, self.elem))
        return name

    def emit(self, layer: Layer, ins: list[str]) -> str:
        n, t = layer.name, layer.type
        out = f"{n}:out"
        node: Any = None
        if t == "conv2d":
            w = self._weight(f"{n}.weight", [layer.out_channels, layer.in_channels // layer.groups, *layer.kernel])
            inputs = [ins[0], w] + ([self._weight(f"{n}.bias", [layer.out_channels])] if layer.bias else [])
            node = helper.make_node(
                "Conv", inputs, [out], n, kernel_shape=list(layer.kernel), strides=list(layer.stride),
                pads=[*layer.padding, *layer.padding], dilations=list(layer.dilation), group=layer.groups,
            )
        elif t == "batchnorm2d":
            c = layer.in_channels
            params = [self._weight(f"{n}.{p}", [c]) for p in ("scale", "bias", "mean", "var")]
            node = helper.make_node("BatchNormalization", [ins[0], *params], [out], n)
        elif t == "relu6":
            lo = self._const(f"{n}.min", np.array(0.0, dtype=np.float32))
            hi = self._const(f"{n}.max", np.array(6.0, dtype=np.float32))
            node = helper.make_node("Clip", [ins[0], lo, hi], [out], n)
        elif t == "silu":
            self.nodes.append(helper.make_node("Sigmoid", [ins[0]], [f"{n}:sig"], f"{n}.sigmoid"))
            node = helper.make_node("Mul", [ins[0], f"{n}:sig"], [out], n)
        elif t in ("relu", "sigmoid", "hardsigmoid", "hardswish", "gelu"):
            op = {"relu": "Relu", "sigmoid": "Sigmoid", "hardsigmoid": "HardSigmoid", "hardswish": "HardSwish",
                  "gelu": "Gelu"}[t]
            attrs: dict[str, Any] = {"alpha": 1 / 6} if t == "hardsigmoid" else {}
            node = helper.make_node(op, [ins[0]], [out], n, **attrs)
        elif t in ("maxpool2d", "avgpool2d"):
            attrs = {"kernel_shape": list(layer.kernel), "strides": list(layer.stride),
                     "pads": [*layer.padding, *layer.padding], "ceil_mode": layer.ceil_mode}
            if t == "maxpool2d":
                attrs["dilations"] = list(layer.dilation)
            node = helper.make_node("MaxPool" if t == "maxpool2d" else "AveragePool", [ins[0]], [out], n, **attrs)
        elif t == "adaptive_avgpool2d":
            if layer.out_shape[2:] != (1, 1):
                raise NotImplementedError("adaptive pooling to more than 1x1 has no single ONNX operator")
            node = helper.make_node("GlobalAveragePool", [ins[0]], [out], n)
        elif t == "flatten":
            node = helper.make_node("Flatten", [ins[0]], [out], n, axis=1)
        elif t == "linear":
            w = self._weight(f"{n}.weight", [layer.out_features, layer.in_features])
            inputs = [ins[0], w] + ([self._weight(f"{n}.bias", [layer.out_features])] if layer.bias else [])
            node = helper.make_node("Gemm", inputs, [out], n, transB=1)
        elif t in ("add", "mul"):
            node = helper.make_node("Add" if t == "add" else "Mul", ins, [out], n)
            if t == "add" and len(ins) > 2:
                node = helper.make_node("Sum", ins, [out], n)
        elif t == "concat":
            node = helper.make_node("Concat", ins, [out], n, axis=1)
        elif t == "softmax":
            node = helper.make_node("Softmax", [ins[0]], [out], n, axis=1)
        elif t == "channel_shuffle":
            g, c, h, w = layer.groups, layer.in_channels, layer.in_h, layer.in_w
            s5 = self._const(f"{n}.shape5", np.array([self.batch, g, c // g, h, w], dtype=np.int64))
            s4 = self._const(f"{n}.shape4", np.array([self.batch, c, h, w], dtype=np.int64))
            self.nodes.append(helper.make_node("Reshape", [ins[0], s5], [f"{n}:5d"], f"{n}.view"))
            self.nodes.append(helper.make_node("Transpose", [f"{n}:5d"], [f"{n}:t"], n, perm=[0, 2, 1, 3, 4]))
            node = helper.make_node("Reshape", [f"{n}:t", s4], [out], f"{n}.view2")
        else:
            raise NotImplementedError(t)
        self.nodes.append(node)
        return out

    def model(self, name: str, x: T, y: T) -> onnx.ModelProto:
        shape_in = [self.batch, x.c, x.h, x.w]
        graph = helper.make_graph(
            self.nodes, name, [helper.make_tensor_value_info("input", self.elem, shape_in)],
            [helper.make_tensor_value_info(self.values[id(y)], self.elem, None)], self.inits,
        )
        return helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])


def _wrap(method: str) -> None:
    base = getattr(Builder, method)

    def emitting(self: OnnxBuilder, *args: Any, **kwargs: Any) -> T:
        ins = [self.values[id(a)] for a in args if isinstance(a, T)]
        before = len(self.layers)
        out = base(self, *args, **kwargs)
        assert len(self.layers) == before + 1
        self.values[id(out)] = self.emit(self.layers[-1], ins)
        self.keep.append(out)
        return out

    setattr(OnnxBuilder, method, emitting)


for _m in ("conv", "bn", "act", "pool", "adaptive_avgpool", "flatten", "linear", "add", "mul", "concat",
           "channel_shuffle", "softmax"):
    _wrap(_m)


def onnx_graph(name: str, batch: int = 1, dtype: str = "fp32") -> onnx.ModelProto:
    """A zoo network as an ONNX model, from the zoo's own forward function."""
    entry = next(e for e in zoo.entries() if e.name == name)
    b = OnnxBuilder(batch, dtype)
    x = b.input(T(entry.in_channels, entry.image_size, entry.image_size))
    y = entry.forward(b, x)
    return b.model(name, x, y)
