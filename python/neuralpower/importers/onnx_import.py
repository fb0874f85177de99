"""ONNX import: load a graph, infer every shape, map each node (in the graph's topological order)."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

from ..errors import InputError, NeuralPowerError
from ..layers import Architecture
from ._common import Emitter, Shape, first_line

__all__ = ["from_onnx"]

# element types of the graph input: onnx.TensorProto.FLOAT, FLOAT16, BFLOAT16
_DTYPE = {1: "fp32", 10: "fp16", 16: "bf16"}
# no work at inference, or shape arithmetic only
_FREE = {
    "Identity", "Dropout", "Reshape", "Squeeze", "Unsqueeze", "Shape", "Gather", "Constant", "ConstantOfShape",
    "Split", "Slice", "Cast", "Size", "Range", "Expand",
}
_SAME = {
    "Relu": "relu", "Sigmoid": "sigmoid", "HardSigmoid": "hardsigmoid", "HardSwish": "hardswish", "Gelu": "gelu",
    "BatchNormalization": "batchnorm2d",
}


def from_onnx(
    path: str | os.PathLike[str], *, batch: int | None = None, name: str | None = None, allow_unknown: bool = False
) -> Architecture:
    """The architecture of an ONNX model file.

    Shapes come from ONNX shape inference. Conv, Gemm and MatMul (with a constant weight; a following
    constant Add is its bias), pooling (Max, Average, GlobalAverage, ReduceMean over H and W),
    BatchNormalization, activations (Relu, Clip to [0, 6], Sigmoid, HardSigmoid, HardSwish, Gelu), Add, Mul,
    Sum, Concat along channels, Flatten, Softmax and the Reshape-Transpose-Reshape channel shuffle become
    layers; reshapes, dropout and shape arithmetic are left out.

    Parameters
    ----------
    path
        An ``.onnx`` file with one graph input of shape ``(N, C, H, W)`` or ``(N, F)``.
    batch
        The batch size (default: the file's own, 1 where its batch dimension is symbolic). A file exported
        with a fixed batch is read at that batch and its layers then set to this one, since its reshapes may
        hold the exported batch as constants.
    name
        The architecture's name (default: the file's name without ``.onnx``).
    allow_unknown
        Skip operators neuralpower has no layer type for (listed in ``meta["skipped"]``) instead of raising.

    Raises
    ------
    InputError
        A file that is not an ONNX model, shapes that cannot be inferred, or unsupported operators, named by
        node and operator in one line.
    """
    try:
        import onnx
        from onnx import numpy_helper, shape_inference
    except ImportError as e:
        raise NeuralPowerError(f"reading an ONNX file needs onnx ({e}): pip install 'neuralpower[onnx]'") from None

    source = os.fspath(path)
    if not os.path.isfile(source):
        raise InputError(f"{source}: no such file")
    if batch is not None and batch < 1:
        raise InputError(f"{source}: batch {batch} must be at least 1", column="batch")
    try:
        model = onnx.load(source, load_external_data=False)  # shapes are all it needs
    except Exception as e:
        raise InputError(f"{source}: not an ONNX model ({first_line(e)})") from None
    graph = model.graph
    if len(graph.node) == 0:
        raise InputError(f"{source}: not an ONNX model (its graph has no nodes)")
    constants: dict[str, Any] = {t.name: t for t in graph.initializer}
    inputs = [i for i in graph.input if i.name not in constants]
    if len(inputs) != 1:
        raise InputError(f"{source}: the graph has {len(inputs)} inputs; neuralpower imports graphs with one input")
    tensor_type = inputs[0].type.tensor_type
    dtype = _DTYPE.get(tensor_type.elem_type)
    if dtype is None:
        raise InputError(f"{source}: input {inputs[0].name!r} has element type {tensor_type.elem_type} (known: "
                         "float, float16, bfloat16)")
    dims = tensor_type.shape.dim
    if len(dims) not in (2, 4):
        raise InputError(f"{source}: input {inputs[0].name!r} has rank {len(dims)}; expected (N, C, H, W) or (N, F)")
    rebatch = None
    if batch is not None and dims[0].HasField("dim_value") and dims[0].dim_value != batch:
        # Exported with a fixed batch: its reshapes may hold that batch as constants, so the graph is read at
        # its own batch and the layers are then set to the batch asked for (each layer states its batch).
        rebatch = batch
    elif batch is not None or not dims[0].HasField("dim_value"):
        dims[0].Clear()
        dims[0].dim_value = batch or 1
    for i, d in enumerate(dims[1:], 1):
        if not d.HasField("dim_value") or d.dim_value < 1:
            raise InputError(f"{source}: input {inputs[0].name!r} dimension {i} is not a fixed size ({d.dim_param!r})")
    try:
        inferred = shape_inference.infer_shapes(model, strict_mode=True, data_prop=True)
    except Exception as e:
        raise InputError(f"{source}: ONNX shape inference failed ({first_line(e)})") from None
    shapes: dict[str, tuple[int, ...]] = {}
    for vi in (*inferred.graph.input, *inferred.graph.value_info, *inferred.graph.output):
        d = vi.type.tensor_type.shape.dim
        if vi.type.HasField("tensor_type") and all(x.HasField("dim_value") for x in d):
            shapes[vi.name] = tuple(int(x.dim_value) for x in d)
    for node in inferred.graph.node:
        if node.op_type == "Constant":
            for a in node.attribute:
                if a.name == "value":
                    constants[node.output[0]] = a.t
    emitter = Emitter(source, int(dims[0].dim_value), dtype)
    _Walker(emitter, shapes, constants, numpy_helper.to_array).run(inferred.graph.node)
    arch_name = name or os.path.splitext(os.path.basename(source))[0]
    arch = emitter.build(arch_name, allow_unknown, "allow_unknown=True (--allow-unknown)")
    return arch if rebatch is None else arch.with_batch(rebatch)


def _attrs(node: Any) -> dict[str, Any]:
    import onnx

    return {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}


class _Walker:
    def __init__(
        self, emitter: Emitter, shapes: dict[str, tuple[int, ...]], constants: dict[str, Any],
        to_array: Callable[[Any], Any],
    ) -> None:
        self.e = emitter
        self.shapes = shapes
        self.constants = constants
        self.to_array = to_array
        self.last_matmul: tuple[str, int] | None = None  # (output name, layer index) of a bias-less linear
        self.handlers: dict[str, Callable[[Any, str, dict[str, Any]], None]] = {
            "Conv": self._conv,
            "Gemm": self._gemm,
            "MatMul": self._matmul,
            "MaxPool": lambda n, w, a: self._pool("maxpool2d", n, w, a),
            "AveragePool": lambda n, w, a: self._pool("avgpool2d", n, w, a),
            "GlobalAveragePool": lambda n, w, a: self._emit("adaptive_avgpool2d", n, w, out_h=1, out_w=1),
            "ReduceMean": self._reduce_mean,
            "Clip": self._clip,
            "Flatten": self._flatten,
            "Softmax": self._softmax,
            "Add": lambda n, w, a: self._binary("add", n, w),
            "Sum": lambda n, w, a: self._binary("add", n, w),
            "Mul": lambda n, w, a: self._binary("mul", n, w),
            "Concat": self._concat,
            "Transpose": self._transpose,
        }

    def _shape(self, name: str) -> Shape | None:
        """A value's shape without the batch dimension (None: unknown, or a constant)."""
        if not name or name in self.constants:
            return None
        full = self.shapes.get(name)
        return None if full is None or len(full) == 0 else full[1:]

    def run(self, nodes: Any) -> None:
        consumers: dict[str, list[Any]] = {}
        for node in nodes:
            for name in node.input:
                consumers.setdefault(name, []).append(node)
        silu: dict[int, str] = {}  # Mul nodes (by id) that compute x * sigmoid(x), with their x
        for node in nodes:
            if node.op_type == "Sigmoid":
                users = consumers.get(node.output[0], [])
                if len(users) == 1 and users[0].op_type == "Mul" and \
                        sorted(users[0].input) == sorted([node.input[0], node.output[0]]):
                    silu[id(users[0])] = node.input[0]
                    silu[id(node)] = ""
        for i, node in enumerate(nodes):
            where = node.name or f"{node.op_type}_{i}"
            op = node.op_type
            if id(node) in silu:  # SiLU as PyTorch exports it: Sigmoid then Mul
                if silu[id(node)]:
                    in_shape = self._shape(silu[id(node)])
                    if in_shape is None or len(in_shape) not in (1, 3):
                        self.e.skip(where, "SiLU on a tensor of unknown shape")
                    else:
                        self.e.layer("silu", where, in_shape, self._shape(node.output[0]))
            elif node.domain not in ("", "ai.onnx"):
                self.e.skip(where, f"{node.domain}.{op}")
            elif op in _FREE:
                continue
            elif op in _SAME:
                self._emit(_SAME[op], node, where)
            elif op in self.handlers:
                self.handlers[op](node, where, _attrs(node))
            else:
                self.e.skip(where, op)

    def _emit(self, type_name: str, node: Any, where: str, **fields: Any) -> None:
        self.e.reading(
            type_name, where, self._shape(node.input[0]), self._shape(node.output[0]), node.op_type, **fields
        )

    def _value(self, name: str) -> Any:
        return self.to_array(self.constants[name]) if name in self.constants else None

    def _padding(self, node: Any, where: str, attrs: dict[str, Any], kernel: list[int], stride: list[int],
                 dilation: list[int]) -> tuple[int, int] | None:
        auto = attrs.get("auto_pad", b"NOTSET")
        auto = auto.decode() if isinstance(auto, bytes) else str(auto)
        if auto == "VALID":
            return (0, 0)
        if auto in ("SAME_UPPER", "SAME_LOWER"):
            src, out = self._shape(node.input[0]), self._shape(node.output[0])
            if src is None or out is None:
                return None
            totals = [max(0, (o - 1) * s + d * (k - 1) + 1 - i)
                      for o, s, d, k, i in zip(out[1:], stride, dilation, kernel, src[1:], strict=True)]
            if any(t % 2 for t in totals):
                self.e.skip(where, f"{node.op_type} with asymmetric {auto} padding")
                return None
            return (totals[0] // 2, totals[1] // 2)
        pads = list(attrs.get("pads", [0, 0, 0, 0]))
        if len(pads) != 4 or pads[0] != pads[2] or pads[1] != pads[3]:
            self.e.skip(where, f"{node.op_type} with asymmetric pads {pads}")
            return None
        return (int(pads[0]), int(pads[1]))

    def _conv(self, node: Any, where: str, attrs: dict[str, Any]) -> None:
        weight = self.constants.get(node.input[1])
        if weight is None or len(weight.dims) != 4:
            self.e.skip(where, "Conv without a constant 4-D weight")
            return
        kernel = list(attrs.get("kernel_shape", list(weight.dims[2:])))
        stride = list(attrs.get("strides", [1, 1]))
        dilation = list(attrs.get("dilations", [1, 1]))
        padding = self._padding(node, where, attrs, kernel, stride, dilation)
        if padding is None:
            return
        bias = int(len(node.input) > 2 and node.input[2] != "")
        self._emit("conv2d", node, where, out_channels=int(weight.dims[0]), kernel=tuple(kernel), stride=tuple(stride),
                   padding=padding, dilation=tuple(dilation), groups=int(attrs.get("group", 1)), bias=bias)

    def _gemm(self, node: Any, where: str, attrs: dict[str, Any]) -> None:
        weight = self.constants.get(node.input[1])
        if attrs.get("transA", 0) or weight is None or len(weight.dims) != 2:
            self.e.skip(where, "Gemm other than input x constant weight")
            return
        out = int(weight.dims[0] if attrs.get("transB", 0) else weight.dims[1])
        self._emit("linear", node, where, out_features=out, bias=int(len(node.input) > 2 and node.input[2] != ""))

    def _matmul(self, node: Any, where: str, attrs: dict[str, Any]) -> None:
        weight = self.constants.get(node.input[1])
        if weight is None or len(weight.dims) != 2:
            self.e.skip(where, "MatMul without a constant 2-D weight")
            return
        before = len(self.e.layers)
        self._emit("linear", node, where, out_features=int(weight.dims[1]), bias=0)
        if len(self.e.layers) > before:
            self.last_matmul = (node.output[0], before)

    def _pool(self, kind: str, node: Any, where: str, attrs: dict[str, Any]) -> None:
        kernel = list(attrs.get("kernel_shape", []))
        if len(kernel) != 2:
            self.e.skip(where, f"{node.op_type} with kernel {kernel}")
            return
        stride = list(attrs.get("strides", [1, 1]))
        dilation = list(attrs.get("dilations", [1, 1]))
        padding = self._padding(node, where, attrs, kernel, stride, dilation)
        if padding is None:
            return
        fields: dict[str, Any] = {"kernel": tuple(kernel), "stride": tuple(stride), "padding": padding,
                                  "ceil_mode": int(attrs.get("ceil_mode", 0))}
        if kind == "maxpool2d":
            fields["dilation"] = tuple(dilation)
        self._emit(kind, node, where, **fields)

    def _reduce_mean(self, node: Any, where: str, attrs: dict[str, Any]) -> None:
        axes = attrs.get("axes")
        if axes is None and len(node.input) > 1:
            value = self._value(node.input[1])
            axes = None if value is None else [int(v) for v in value.reshape(-1)]
        src = self._shape(node.input[0])
        if src is not None and len(src) == 3 and axes is not None and sorted(int(a) % 4 for a in axes) == [2, 3]:
            self._emit("adaptive_avgpool2d", node, where, out_h=1, out_w=1)
        else:
            self.e.skip(where, f"ReduceMean over axes {axes}")

    def _clip(self, node: Any, where: str, attrs: dict[str, Any]) -> None:
        lo, hi = attrs.get("min"), attrs.get("max")
        for index, current in ((1, lo), (2, hi)):
            if current is None and len(node.input) > index and node.input[index]:
                value = self._value(node.input[index])
                if value is None:
                    self.e.skip(where, "Clip with computed bounds")
                    return
                if value.size != 1:  # per-element bounds: no activation layer type clips like that
                    self.e.skip(where, f"Clip with a bound of shape {tuple(value.shape)}")
                    return
                if index == 1:
                    lo = float(value.reshape(-1)[0])
                else:
                    hi = float(value.reshape(-1)[0])
        if lo == 0 and hi == 6:
            self._emit("relu6", node, where)
        elif lo == 0 and hi is None:
            self._emit("relu", node, where)
        else:
            self.e.skip(where, f"Clip to [{lo}, {hi}]")

    def _flatten(self, node: Any, where: str, attrs: dict[str, Any]) -> None:
        src = self._shape(node.input[0])
        if src is not None and len(src) == 1:
            return
        if int(attrs.get("axis", 1)) != 1:
            self.e.skip(where, f"Flatten at axis {attrs.get('axis')}")
            return
        self._emit("flatten", node, where)

    def _softmax(self, node: Any, where: str, attrs: dict[str, Any]) -> None:
        src = self._shape(node.input[0])
        rank = 1 + (len(src) if src is not None else 0)
        axis = int(attrs.get("axis", -1))
        if axis % rank != 1 and not (rank == 2 and axis in (1, -1)):
            self.e.skip(where, f"Softmax along axis {axis}")
            return
        self._emit("softmax", node, where)

    def _binary(self, kind: str, node: Any, where: str) -> None:
        names = [n for n in node.input if n]
        shapes = [self._shape(n) for n in names]
        if kind == "add" and len(names) == 2 and self.last_matmul is not None and names[0] == self.last_matmul[0] \
                and shapes[1] is None and names[1] in self.constants:
            index = self.last_matmul[1]  # MatMul + constant Add: the linear layer's bias
            self.e.layers[index] = self.e.layers[index].replace(bias=1)
            self.last_matmul = None
            return
        out = self._shape(node.output[0])
        known = [s for s in shapes if s is not None]
        if len(known) < len(shapes) or out is None or len(names) < 2:
            self.e.skip(where, f"{node.op_type} with a constant operand")
            return
        self.e.elementwise(kind, where, out, known, node.op_type)

    def _concat(self, node: Any, where: str, attrs: dict[str, Any]) -> None:
        out = self._shape(node.output[0])
        if out is None or len(out) == 0:
            return  # shape arithmetic
        shapes = [self._shape(n) for n in node.input]
        if len(out) != 3 or int(attrs.get("axis", 0)) % 4 != 1 or any(s is None for s in shapes):
            self.e.skip(where, f"Concat along axis {attrs.get('axis')}")
            return
        self.e.layer("concat", where, out, out, inputs=len(shapes))

    def _transpose(self, node: Any, where: str, attrs: dict[str, Any]) -> None:
        src = self._shape(node.input[0])
        perm = [int(p) for p in attrs.get("perm", [])]
        if src is not None and len(src) == 4 and perm == [0, 2, 1, 3, 4]:
            groups, per_group, h, w = src  # N x g x C/g x H x W
            shape = (groups * per_group, h, w)
            self.e.layer("channel_shuffle", where, shape, shape, groups=groups)
        else:
            self.e.skip(where, f"Transpose {perm}")
