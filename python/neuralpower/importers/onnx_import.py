"""ONNX import: load a graph, infer every shape, map each node (in the graph's topological order)."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

from ..errors import InputError, NeuralPowerError
from ..layers import Architecture
from ._common import Emitter, Shape, find_gelus, first_line, layer_chw, prod, token_chw

__all__ = ["from_onnx"]

# element types of the graph input: onnx.TensorProto.FLOAT, FLOAT16, BFLOAT16; token ids (INT64, INT32)
_DTYPE = {1: "fp32", 10: "fp16", 16: "bf16"}
# ONNX's float8 element types (E4M3FN, E4M3FNUZ, E5M2, E5M2FNUZ, E8M0): a quantized graph, refused by name
_FP8 = {17: "float8e4m3fn", 18: "float8e4m3fnuz", 19: "float8e5m2", 20: "float8e5m2fnuz", 24: "float8e8m0"}
_IDS = (6, 7)
# no work at inference, or shape arithmetic only
_FREE = {
    "Identity", "Dropout", "Reshape", "Squeeze", "Unsqueeze", "Shape", "Gather", "Constant", "ConstantOfShape",
    "Split", "Slice", "Cast", "Size", "Range", "Expand",
}
_SAME = {
    "Relu": "relu", "Sigmoid": "sigmoid", "HardSigmoid": "hardsigmoid", "HardSwish": "hardswish",
    "BatchNormalization": "batchnorm2d", "Tanh": "tanh",
}
# what a written-out GELU is made of (see find_gelus)
_ARITHMETIC = {"Add": "add", "Sub": "sub", "Mul": "mul", "Div": "div", "Pow": "pow", "Neg": "neg", "Tanh": "tanh",
               "Erf": "erf", "Sqrt": "sqrt"}
# operators whose output is an image (C x H x W), whatever their input
_IMAGE_OPS = {"Conv", "ConvTranspose", "MaxPool", "AveragePool", "GlobalAveragePool", "BatchNormalization", "Resize"}
_TOKEN_OPS = {"MatMul", "LayerNormalization", "Gather", "Gemm"}


def from_onnx(
    path: str | os.PathLike[str], *, batch: int | None = None, name: str | None = None, allow_unknown: bool = False
) -> Architecture:
    """The architecture of an ONNX model file.

    Shapes come from ONNX shape inference. What becomes a layer: Conv and ConvTranspose, Gemm and MatMul with
    a constant weight (a linear layer, on vectors or on every token; a following constant Add is its bias),
    MatMul of two activations (``matmul``; ``broadcast`` when the second is one matrix for the whole batch),
    pooling (Max, Average, GlobalAverage, ReduceMean over H and W), BatchNormalization, LayerNormalization
    over the last axis and the ReduceMean-Sub-Pow-ReduceMean-Add-Sqrt-Div form older opsets export (between
    Transposes to channels last and back: a channels-first layernorm), Gather of rows of a constant table
    (an embedding), activations (Relu, Clip to [0, 6], Sigmoid, HardSigmoid, HardSwish, Tanh, Gelu, and GELU
    written out of Erf or Tanh arithmetic), Add, Sub, Mul, Div, Sum (of activations, or with a constant
    operand: a scalar, a per-channel or per-feature vector, or a tensor of the activation's shape such as a
    position embedding), Concat along channels (along any axis of token tensors), Flatten, Softmax over
    channels or the last axis, Resize (nearest, linear) and the Reshape-Transpose-Reshape channel shuffle.
    Scaled dot-product attention as PyTorch exports it (MatMul, scaling, an optional causal mask, Softmax,
    MatMul) is one ``attention`` layer. Constants used as operands that no layer holds (a class token, a
    position embedding, a layer scale) are counted in ``meta["params_outside_layers"]``; reshapes, transposes,
    dropout, shape arithmetic and what is computed from constants alone are left out.

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
    if tensor_type.elem_type in _IDS:  # token ids: the network's type is its weights'
        dtype = next((_DTYPE[t.data_type] for t in graph.initializer if t.data_type in _DTYPE), "fp32")
    if tensor_type.elem_type in _FP8:
        raise InputError(f"{source}: input {inputs[0].name!r} is {_FP8[tensor_type.elem_type]}: neuralpower does "
                         "not import fp8 ONNX graphs (float, float16, bfloat16; int64 or int32 token ids)")
    if dtype is None:
        raise InputError(f"{source}: input {inputs[0].name!r} has element type {tensor_type.elem_type} (known: "
                         "float, float16, bfloat16; int64 or int32 token ids)")
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
        shapes = _known_shapes(inferred)
        if any(o not in shapes for node in inferred.graph.node for o in node.output if o):
            # shapes computed by arithmetic that ONNX's data propagation does not follow (PyTorch's exports of
            # expand(n, -1, -1) go through Where): evaluate that arithmetic, infer again
            folded = _fold_shape_arithmetic(model, shapes, numpy_helper)
            if folded is not None:
                inferred = shape_inference.infer_shapes(folded, strict_mode=True, data_prop=True)
                shapes = _known_shapes(inferred)
    except Exception as e:
        raise InputError(f"{source}: ONNX shape inference failed ({first_line(e)})") from None
    constants.update({t.name: t for t in inferred.graph.initializer if t.name not in constants})  # folded
    for node in inferred.graph.node:
        if node.op_type == "Constant":
            for a in node.attribute:
                if a.name == "value":
                    constants[node.output[0]] = a.t
        elif node.op_type == "Identity" and node.input[0] in constants:
            constants[node.output[0]] = constants[node.input[0]]  # PyTorch's exporter shares equal weights
    emitter = Emitter(source, int(dims[0].dim_value), dtype)
    _Walker(emitter, shapes, constants, numpy_helper.to_array, inputs[0].name).run(list(inferred.graph.node))
    arch_name = name or os.path.splitext(os.path.basename(source))[0]
    arch = emitter.build(arch_name, allow_unknown, "allow_unknown=True (--allow-unknown)")
    return arch if rebatch is None else arch.with_batch(rebatch)


def _known_shapes(model: Any) -> dict[str, tuple[int, ...]]:
    shapes: dict[str, tuple[int, ...]] = {}
    for vi in (*model.graph.input, *model.graph.value_info, *model.graph.output):
        d = vi.type.tensor_type.shape.dim
        if vi.type.HasField("tensor_type") and all(x.HasField("dim_value") for x in d):
            shapes[vi.name] = tuple(int(x.dim_value) for x in d)
    return shapes


def _fold_shape_arithmetic(model: Any, shapes: dict[str, tuple[int, ...]], numpy_helper: Any) -> Any:
    """A copy of the model in which the small integer values computed from constants and known shapes are
    constants (None: nothing to fold)."""
    import numpy as np
    from onnx.reference import ReferenceEvaluator

    values: dict[str, Any] = {}
    for t in model.graph.initializer:
        if t.data_location != 1 and t.data_type in (6, 7) and len(t.dims) <= 1:  # inline int32/int64 vectors
            values[t.name] = numpy_helper.to_array(t)
    for node in model.graph.node:
        try:
            if node.op_type == "Shape" and node.input[0] in shapes:
                attrs = _attrs(node)
                full = shapes[node.input[0]]
                values[node.output[0]] = np.array(full[attrs.get("start", 0):attrs.get("end", len(full))],
                                                  dtype=np.int64)
            elif node.op_type == "Constant" or (node.input and all(not i or i in values for i in node.input)
                                                and node.op_type not in ("RandomNormal", "RandomUniform")):
                outputs = ReferenceEvaluator(node).run(None, {i: values[i] for i in node.input if i})
                for name, value in zip(node.output, outputs, strict=False):
                    if isinstance(value, np.ndarray) and value.size <= 64 and value.dtype.kind in "iub":
                        values[name] = value
        except Exception:  # what cannot be evaluated is left to shape inference
            continue
    inputs = {i for node in model.graph.node if not all(not o or o in values for o in node.output)
              for i in node.input}
    wanted = [name for name in values if name in inputs and name not in {t.name for t in model.graph.initializer}]
    if not wanted:
        return None
    folded = type(model)()
    folded.CopyFrom(model)
    renamed = {name: f"{name}::folded" for name in wanted}
    for node in folded.graph.node:
        for k, name in enumerate(node.input):
            if name in renamed:
                node.input[k] = renamed[name]
    folded.graph.initializer.extend(numpy_helper.from_array(np.asarray(values[n]), renamed[n]) for n in wanted)
    return folded


def _attrs(node: Any) -> dict[str, Any]:
    import onnx

    return {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}


class _Walker:
    def __init__(
        self, emitter: Emitter, shapes: dict[str, tuple[int, ...]], constants: dict[str, Any],
        to_array: Callable[[Any], Any], graph_input: str,
    ) -> None:
        self.e = emitter
        self.shapes = shapes
        self.constants = constants
        self.to_array = to_array
        self.graph_input = graph_input
        self.last_matmul: tuple[str, int] | None = None  # (output name, layer index) of a bias-less linear
        self.owned: set[int] = set()  # constants that layers hold (ids: several names may share one)
        self.tables: list[Any] = []  # the embeddings' tables
        self.handlers: dict[str, Callable[[Any, str, dict[str, Any]], None]] = {
            "Conv": self._conv,
            "ConvTranspose": self._conv_transpose,
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
            "Sub": lambda n, w, a: self._binary("add", n, w),
            "Sum": lambda n, w, a: self._binary("add", n, w),
            "Mul": lambda n, w, a: self._binary("mul", n, w),
            "Div": lambda n, w, a: self._binary("mul", n, w),
            "Concat": self._concat,
            "Transpose": self._transpose,
            "LayerNormalization": self._layernorm,
            "Gelu": self._gelu,
            "Resize": self._resize,
        }

    # -- shapes and layouts ---------------------------------------------------------------------------
    def _shape(self, name: str) -> Shape | None:
        """A value's shape without the batch dimension (None: unknown, or a constant)."""
        if not name or name in self.constants:
            return None
        full = self.shapes.get(name)
        return None if full is None or len(full) == 0 else full[1:]

    def _chw(self, name: str) -> Shape | None:
        """The shape an image layer reads (see :func:`layer_chw`)."""
        return layer_chw(self._shape(name), name in self.tokens)

    def _value(self, name: str) -> Any:
        return self.to_array(self.constants[name]) if name in self.constants else None

    def _scalar(self, name: str) -> float | None:
        t = self.constants.get(name)
        if t is None or prod(t.dims) != 1 or t.data_location == 1:  # 1: TensorProto.EXTERNAL
            return None
        return float(self.to_array(t).reshape(-1)[0])

    def _analyse(self, nodes: list[Any]) -> None:
        """Which values depend on the input's data (``dynamic``) and which 3-D ones are channels last."""
        self.dynamic: set[str] = {self.graph_input}
        self.tokens: set[str] = set()
        self.producer: dict[str, Any] = {}
        self.consumers: dict[str, list[Any]] = {}
        for node in nodes:
            for name in node.output:
                self.producer[name] = node
            for name in node.input:
                self.consumers.setdefault(name, []).append(node)
            op = node.op_type
            if op not in ("Shape", "Size") and any(i in self.dynamic for i in node.input):
                self.dynamic.update(node.output)
            perm = [int(p) for p in _attrs(node).get("perm", [])] if op == "Transpose" else []
            if op in _TOKEN_OPS or perm == [0, 2, 3, 1]:
                self.tokens.update(node.output)
            elif op in _IMAGE_OPS or perm == [0, 3, 1, 2]:
                continue
            elif any(i in self.tokens or (i in self.dynamic and len(self._shape(i) or ()) == 2) for i in node.input):
                self.tokens.update(node.output)

    # -- the walk ---------------------------------------------------------------------------------------
    def run(self, nodes: list[Any]) -> None:
        self._analyse(nodes)
        silu: dict[int, str] = {}  # Mul nodes (by id) that compute x * sigmoid(x), with their x
        for node in nodes:
            if node.op_type == "Sigmoid":
                users = self.consumers.get(node.output[0], [])
                if len(users) == 1 and users[0].op_type == "Mul" and \
                        sorted(users[0].input) == sorted([node.input[0], node.output[0]]):
                    silu[id(users[0])] = node.input[0]
                    silu[id(node)] = ""
        self.inner: set[int] = set()  # nodes inside a recognized pattern (ids)
        self.patterns: dict[int, Callable[[], None]] = {}  # the node (id) at which a pattern's layer is emitted
        self._gelus(nodes)
        self._layernorms(nodes)
        self._attentions(nodes)
        for i, node in enumerate(nodes):
            where = node.name or f"{node.op_type}_{i}"
            op = node.op_type
            if id(node) in self.patterns:
                self.patterns[id(node)]()
            elif id(node) in self.inner:
                continue
            elif id(node) in silu:  # SiLU as PyTorch exports it: Sigmoid then Mul
                if silu[id(node)]:
                    in_shape = self._chw(silu[id(node)])
                    if in_shape is None:
                        self.e.skip(where, "SiLU on a tensor of unknown shape")
                    else:
                        self.e.layer("silu", where, in_shape, self._chw(node.output[0]))
            elif node.domain not in ("", "ai.onnx"):
                self.e.skip(where, f"{node.domain}.{op}")
            elif op == "Gather" and self._embedding(node, where):
                continue
            elif not any(i in self.dynamic for i in node.input):
                continue  # computed from constants (and shapes) alone: folded at inference
            elif op in _FREE:
                continue
            elif op in _SAME:
                self._emit(_SAME[op], node, where)
            elif op in self.handlers:
                self.handlers[op](node, where, _attrs(node))
            else:
                self.e.skip(where, op)
        self._count_outside(nodes)

    def _count_outside(self, nodes: list[Any]) -> None:
        """Constants used as operands that no layer holds (each once): a class token, a position embedding."""
        counted = set(self.owned)
        for node in nodes:
            if id(node) in self.inner or node.op_type == "Identity":
                continue
            for name in node.input:
                t = self.constants.get(name)
                if t is not None and id(t) not in counted and t.data_type in _DTYPE and prod(t.dims) > 1:
                    counted.add(id(t))
                    self.e.params_outside_layers += prod(t.dims)

    def _own(self, node: Any) -> None:
        self.owned.update(id(self.constants[name]) for name in node.input if name in self.constants)

    def _emit(self, type_name: str, node: Any, where: str, **fields: Any) -> None:
        before = len(self.e.layers)
        self.e.reading(
            type_name, where, self._chw(node.input[0]), self._chw(node.output[0]), node.op_type, **fields
        )
        if len(self.e.layers) > before:
            self._own(node)

    # -- patterns ---------------------------------------------------------------------------------------
    def _gelus(self, nodes: list[Any]) -> None:
        """GELU written out of Erf or Tanh arithmetic (what PyTorch exports before opset 20)."""
        kind: dict[str, str] = {}
        operands: dict[str, list[str | float]] = {}
        by_output: dict[str, Any] = {}
        for node in nodes:
            op = _ARITHMETIC.get(node.op_type)
            if op is None or len(node.output) != 1:
                continue
            args: list[str | float] = []
            for name in node.input:
                value = self._scalar(name)
                if value is not None:
                    args.append(value)
                elif name in self.constants or name not in self.dynamic:
                    break
                else:
                    args.append(name)
            else:
                kind[node.output[0]] = op
                operands[node.output[0]] = args
                by_output[node.output[0]] = node
        order = [self.graph_input] + [name for node in nodes for name in node.output]
        gelus, inner = find_gelus(order, kind, operands)
        for name in inner:
            self.inner.add(id(by_output[name]))
        for out, (x, approximate) in gelus.items():
            node = by_output[out]
            self.patterns[id(node)] = self._gelu_emitter(node, x, out, approximate)

    def _gelu_emitter(self, node: Any, x: str, out: str, approximate: int) -> Callable[[], None]:
        where = node.name or out
        return lambda: self.e.reading("gelu", where, self._chw(x), self._chw(out), "GELU", approximate=approximate)

    def _layernorms(self, nodes: list[Any]) -> None:
        """``(x - mean) / sqrt(var + eps) * scale + bias`` over the last axis, as opsets before 17 export it."""
        for node in nodes:
            if node.op_type != "ReduceMean" or not self._last_axis(node):
                continue
            x = node.input[0]
            chain = [node]
            sub = self._only_user(node.output[0], "Sub")
            if sub is None or list(sub.input) != [x, node.output[0]]:
                continue
            users = self.consumers.get(sub.output[0], [])
            pow_ = next((u for u in users if u.op_type in ("Pow", "Mul")), None)
            div = next((u for u in users if u.op_type == "Div"), None)
            if pow_ is None or div is None or len(users) != 2:
                continue
            mean2 = self._only_user(pow_.output[0], "ReduceMean")
            add = self._only_user(mean2.output[0], "Add") if mean2 is not None else None
            sqrt = self._only_user(add.output[0], "Sqrt") if add is not None else None
            if mean2 is None or not self._last_axis(mean2) or sqrt is None or list(div.input) != [sub.output[0],
                                                                                                  sqrt.output[0]]:
                continue
            chain += [sub, pow_, mean2, add, sqrt, div]
            last = div
            for op in ("Mul", "Add"):  # the affine scale and shift
                nxt = self._only_user(last.output[0], op)
                if nxt is None or not any(i in self.constants for i in nxt.input):
                    break
                chain.append(nxt)
                last = nxt
            for n in chain[:-1]:
                self.inner.add(id(n))
            self.patterns[id(chain[-1])] = self._layernorm_emitter(chain, x, last.output[0])

    def _layernorm_emitter(self, chain: list[Any], x: str, out: str) -> Callable[[], None]:
        def emit() -> None:
            self._norm(chain[0].name or out, x, out)
            for n in chain:
                self._own(n)
        return emit

    def _last_axis(self, node: Any) -> bool:
        axes = _attrs(node).get("axes")
        if axes is None and len(node.input) > 1:
            value = self._value(node.input[1])
            axes = None if value is None else [int(v) for v in value.reshape(-1)]
        rank = len(self.shapes.get(node.input[0], ()))
        return axes is not None and len(axes) == 1 and rank > 0 and int(axes[0]) % rank == rank - 1

    def _only_user(self, name: str, op: str) -> Any:
        users = self.consumers.get(name, [])
        return users[0] if len(users) == 1 and users[0].op_type == op else None

    def _attentions(self, nodes: list[Any]) -> None:
        """``softmax(q k^T * scale [+ causal mask]) v`` as PyTorch exports scaled_dot_product_attention."""
        for node in nodes:
            if node.op_type != "Softmax" or node.input[0] not in self.dynamic:
                continue
            rank = len(self.shapes.get(node.input[0], ()))
            if rank < 3 or int(_attrs(node).get("axis", -1)) % rank != rank - 1:
                continue
            chain, causal = [node], False
            value = self.producer.get(node.input[0])
            while value is not None and value.op_type in ("Add", "Mul", "Div") and len(chain) < 4:
                other = [i for i in value.input if i not in self.dynamic]
                if len(other) != 1 or len(value.input) != 2:
                    break
                if value.op_type == "Add":  # a mask: causal when it is built by Trilu (lower)
                    if causal or not self._causal_mask(other[0]):
                        break
                    causal = True
                chain.append(value)
                value = self.producer.get(next(i for i in value.input if i in self.dynamic))
            after = self._only_user(node.output[0], "MatMul")
            if value is None or value.op_type != "MatMul" or after is None or after.input[0] != node.output[0]:
                continue
            scores = value
            q, k = (self._unscaled(i, chain) for i in scores.input)
            fq, fk, fv = (self.shapes.get(n) for n in (q, k, after.input[1]))
            if fq is None or fk is None or fv is None or len(fq) != rank or len(fk) != rank or len(fv) != rank \
                    or fq[:-2] != fk[:-2] or fk[:-2] != fv[:-2] or fk[-2] != fq[-1] or fv[-1] != fq[-1] \
                    or fv[-2] != fk[-1] or not all(n in self.dynamic for n in (q, k, after.input[1])):
                continue
            chain.append(scores)
            for n in chain:
                self.inner.add(id(n))
            per_q = self._per_sample(q) or fq[1:]
            fields = {"heads": prod(per_q[:-2]), "tokens": fq[-2], "kv_tokens": fk[-1], "head_dim": fq[-1],
                      "causal": int(causal)}
            self.patterns[id(after)] = self._attention_emitter(after.name or scores.name or after.output[0],
                                                               per_q, after.output[0], fields)

    def _attention_emitter(self, where: str, q: Shape, out: str, fields: dict[str, Any]) -> Callable[[], None]:
        return lambda: self._attention_layer(where, q, out, fields)

    def _attention_layer(self, where: str, q: Shape, out: str, fields: dict[str, Any]) -> None:
        self.e.layer("attention", where, q, None, **fields)

    def _unscaled(self, name: str, chain: list[Any]) -> str:
        """Through a multiplication by a constant scale (PyTorch scales q and k^T by sqrt(scale) each)."""
        node = self.producer.get(name)
        if node is not None and node.op_type in ("Mul", "Div") and len(node.input) == 2:
            dynamic = [i for i in node.input if i in self.dynamic]
            other = next((i for i in node.input if i not in self.dynamic), "")
            size = prod(self.constants[other].dims) if other in self.constants else prod(self.shapes.get(other, (2,)))
            if len(dynamic) == 1 and size == 1:
                chain.append(node)
                return str(dynamic[0])
        return name

    def _causal_mask(self, name: str) -> bool:
        """Whether a constant mask comes from a lower-triangular Trilu (or is a constant causal mask)."""
        value = self._value(name)
        if value is not None:
            import numpy as np

            m = value.reshape(value.shape[-2:]) if value.ndim >= 2 and prod(value.shape[:-2]) == 1 else None
            if m is None:
                return False
            below = np.tril(np.ones(m.shape, dtype=bool))
            return bool(np.all(m[below] == 0) and np.all(m[~below] < -1e4))
        seen, todo = set(), [name]
        while todo:
            n = todo.pop()
            node = self.producer.get(n)
            if node is None or id(node) in seen:
                continue
            seen.add(id(node))
            if node.op_type == "Trilu":
                return int(_attrs(node).get("upper", 1)) == 0
            todo.extend(node.input)
        return False

    # -- layers -----------------------------------------------------------------------------------------
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

    def _conv_transpose(self, node: Any, where: str, attrs: dict[str, Any]) -> None:
        weight = self.constants.get(node.input[1])
        src, out = self._shape(node.input[0]), self._shape(node.output[0])
        if weight is None or len(weight.dims) != 4 or src is None or out is None or len(src) != 3 or len(out) != 3:
            self.e.skip(where, "ConvTranspose without a constant 4-D weight")
            return
        groups = int(attrs.get("group", 1))
        kernel = [int(k) for k in attrs.get("kernel_shape", list(weight.dims[2:]))]
        stride = [int(v) for v in attrs.get("strides", [1, 1])]
        dilation = [int(v) for v in attrs.get("dilations", [1, 1])]
        pads = [int(v) for v in attrs.get("pads", [0, 0, 0, 0])]
        auto = attrs.get("auto_pad", b"NOTSET")
        if (auto.decode() if isinstance(auto, bytes) else str(auto)) != "NOTSET" or len(pads) != 4 \
                or pads[0] != pads[2] or pads[1] != pads[3]:
            self.e.skip(where, f"ConvTranspose with padding {auto!r} {pads}")
            return
        # the output padding that gives the inferred size (output_padding, or chosen for output_shape)
        extra = tuple(o - ((i - 1) * s - 2 * p + d * (k - 1) + 1)
                      for o, i, s, p, d, k in zip(out[1:], src[1:], stride, pads[:2], dilation, kernel, strict=True))
        bias = int(len(node.input) > 2 and node.input[2] != "")
        self._emit("conv_transpose2d", node, where, out_channels=int(weight.dims[1]) * groups, kernel=tuple(kernel),
                   stride=tuple(stride), padding=(pads[0], pads[1]), dilation=tuple(dilation), output_padding=extra,
                   groups=groups, bias=bias)

    def _gemm(self, node: Any, where: str, attrs: dict[str, Any]) -> None:
        weight = self.constants.get(node.input[1])
        if attrs.get("transA", 0) or weight is None or len(weight.dims) != 2:
            self.e.skip(where, "Gemm other than input x constant weight")
            return
        out = int(weight.dims[0] if attrs.get("transB", 0) else weight.dims[1])
        src = self._shape(node.input[0])
        if src is None:
            self.e.skip(where, "Gemm on an input of unknown shape")
            return
        check = self._shape(node.output[0])
        full = self.shapes.get(node.input[0], ())
        if len(full) == 2 and full[0] != self.e.batch and full[0] % self.e.batch == 0:
            # batch x tokens rows (Hugging Face's Conv1D on x.view(-1, F), attention's projections)
            src, check = (full[0] // self.e.batch, full[1]), None
        self.e.layer("linear", where, src, check, out_features=out,
                     bias=int(len(node.input) > 2 and node.input[2] != ""))
        self._own(node)

    def _matmul(self, node: Any, where: str, attrs: dict[str, Any]) -> None:
        a, b = node.input[0], node.input[1]
        fa, fb = self.shapes.get(a), self.shapes.get(b)
        if b in self.constants and a in self.dynamic:
            weight = self.constants[b]
            src = self._per_sample(a)
            if len(weight.dims) != 2 or src is None or len(src) == 0:
                self.e.skip(where, "MatMul with a constant weight that is not 2-D")
                return
            before = len(self.e.layers)
            if id(weight) in self.owned or self._tied(weight):  # an earlier layer's table: a shared matrix
                self._matmul_layer(where, src, int(weight.dims[1]), 1)
                self._own(node)
            else:
                self.e.layer("linear", where, src, self._per_sample(node.output[0]),
                             out_features=int(weight.dims[1]), bias=0)
                self.last_matmul = (node.output[0], before)
                self._own(node)
            return
        if fa is None or fb is None or len(fa) < 2 or len(fb) < 2 or a not in self.dynamic:
            self.e.skip(where, "MatMul of these operands")
            return
        if len(fb) == 2 or b not in self.dynamic:
            if any(d != 1 for d in fb[:-2]):
                self.e.skip(where, f"MatMul broadcasting {fa} and {fb}")
                return
            broadcast = 1
        elif len(fa) == len(fb) and fa[:-2] == fb[:-2]:
            broadcast = 0
        else:
            self.e.skip(where, f"MatMul broadcasting {fa} and {fb}")
            return
        self._matmul_layer(where, self._per_sample(a) or fa[1:], fb[-1], broadcast)

    def _tied(self, weight: Any) -> bool:
        """Whether a weight is an embedding table's transpose (PyTorch exports a tied weight as a copy)."""
        for table in self.tables:
            if list(table.dims) == list(weight.dims)[::-1] and table.data_location != 1 and weight.data_location != 1:
                import numpy as np

                if np.array_equal(self.to_array(table).T, self.to_array(weight)):
                    return True
        return False

    def _per_sample(self, name: str) -> Shape | None:
        """A value's shape per sample: ``(heads..., tokens, F)`` with the batch taken out of its leading
        dimensions wherever it is (PyTorch exports attention sequence first, or with batch and heads merged)."""
        full = self.shapes.get(name)
        if full is None or len(full) < 2:
            return None
        rows = prod(full[:-1])
        if len(full) == 2 or rows % self.e.batch:
            return tuple(full[1:])
        if full[0] == self.e.batch:
            return tuple(full[1:])
        lead = prod(full[:-2])
        if len(full) >= 3 and lead % self.e.batch == 0:
            return (lead // self.e.batch, *full[-2:]) if lead != self.e.batch else tuple(full[-2:])
        return (rows // self.e.batch, full[-1])

    def _matmul_layer(self, where: str, a: Shape, out_features: int, broadcast: int) -> None:
        lead = a[:-2]
        self.e.layer("matmul", where, a, None, heads=prod(lead) if lead else 1, tokens=a[-2] if len(a) >= 2 else 1,
                     in_features=a[-1], out_features=out_features, broadcast=broadcast)

    def _embedding(self, node: Any, where: str) -> bool:
        """Gather of rows of a constant 2-D table: an embedding (False: some other Gather)."""
        table = self.constants.get(node.input[0])
        if table is None or len(table.dims) != 2 or int(_attrs(node).get("axis", 0)) != 0 \
                or table.data_type not in _DTYPE:
            return False
        full = self.shapes.get(node.input[1])
        if full is None and node.input[1] in self.constants:  # constant indices (position ids)
            full = tuple(int(d) for d in self.constants[node.input[1]].dims)
        if full is None or len(full) == 0:
            return False
        ids = full[1:] if node.input[1] in self.dynamic or len(full) > 1 else full
        self.e.layer("embedding", where, ids, None, in_features=int(table.dims[0]), out_features=int(table.dims[1]))
        self._own(node)
        self.tables.append(table)
        return True

    def _norm(self, where: str, x: str, out: str) -> None:
        shape = self._shape(x)
        if shape is None or len(shape) == 0:
            self.e.skip(where, "LayerNormalization of unknown shape")
            return
        producer = self.producer.get(x)
        users = self.consumers.get(out, [])
        if producer is not None and producer.op_type == "Transpose" and len(users) == 1 \
                and users[0].op_type == "Transpose" and list(_attrs(producer).get("perm", [])) == [0, 2, 3, 1] \
                and list(_attrs(users[0]).get("perm", [])) == [0, 3, 1, 2]:
            self.e.layer("layernorm", where, shape, None, channels_first=1)  # channels last and back: LayerNorm2d
        else:
            self.e.layer("layernorm", where, shape, self._shape(out))

    def _layernorm(self, node: Any, where: str, attrs: dict[str, Any]) -> None:
        rank = len(self.shapes.get(node.input[0], ()))
        if rank == 0 or int(attrs.get("axis", -1)) % rank != rank - 1:
            self.e.skip(where, f"LayerNormalization from axis {attrs.get('axis')}")
            return
        before = len(self.e.layers)
        self._norm(where, node.input[0], node.output[0])
        if len(self.e.layers) > before:
            self._own(node)

    def _gelu(self, node: Any, where: str, attrs: dict[str, Any]) -> None:
        approximate = attrs.get("approximate", b"none")
        approximate = approximate.decode() if isinstance(approximate, bytes) else str(approximate)
        self._emit("gelu", node, where, approximate=int(approximate == "tanh"))

    def _resize(self, node: Any, where: str, attrs: dict[str, Any]) -> None:
        mode = attrs.get("mode", b"nearest")
        mode = mode.decode() if isinstance(mode, bytes) else str(mode)
        transform = attrs.get("coordinate_transformation_mode", b"half_pixel")
        transform = transform.decode() if isinstance(transform, bytes) else str(transform)
        out = self._shape(node.output[0])
        if mode not in ("nearest", "linear") or (mode == "linear" and transform == "align_corners") \
                or out is None or len(out) != 3:
            self.e.skip(where, f"Resize mode {mode} ({transform})")
            return
        self._emit("upsample", node, where, out_h=out[1], out_w=out[2],
                   interpolation=0 if mode == "nearest" else 1)

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
        axis = int(attrs.get("axis", -1)) % rank
        if src is not None and axis == 1 and (rank == 2 or (rank == 4 and node.input[0] not in self.tokens)):
            self._emit("softmax", node, where)  # over channels (or a vector's features)
        elif src is not None and rank > 2 and axis == rank - 1:
            shape = token_chw(src)  # rows of the last axis's contiguous values
            self.e.layer("softmax", where, shape, shape, channels_first=0)
        else:
            self.e.skip(where, f"Softmax along axis {attrs.get('axis', -1)}")

    def _operand(self, name: str, rank: int) -> Shape | None:
        """An operand's shape as broadcast against an output of ``rank`` dimensions (batch first), without the
        batch; None when unknown."""
        full = self.shapes.get(name)
        if full is None and name in self.constants:
            full = tuple(int(d) for d in self.constants[name].dims)
        if full is None:
            return None
        if name not in self.dynamic:  # constants broadcast from the right
            full = (1,) * (rank - len(full)) + tuple(full)
        return tuple(full[1:]) if len(full) == rank else None

    def _binary(self, kind: str, node: Any, where: str) -> None:
        names = [n for n in node.input if n]
        if kind == "add" and node.op_type == "Add" and len(names) == 2 and self.last_matmul is not None \
                and self.last_matmul[0] in names:
            bias = names[1 - names.index(self.last_matmul[0])]
            t = self.constants.get(bias)
            if t is not None and len(t.dims) == 1:  # MatMul + constant Add: the linear layer's bias
                index = self.last_matmul[1]
                self.e.layers[index] = self.e.layers[index].replace(bias=1)
                self.owned.add(id(t))
                self.last_matmul = None
                return
        full = self.shapes.get(node.output[0])
        out = self._shape(node.output[0])
        out_chw = self._chw(node.output[0])
        shapes = [self._operand(n, len(full)) for n in names] if full else []
        if out is None or out_chw is None or len(names) < 2 or any(s is None for s in shapes):
            self.e.skip(where, f"{node.op_type} with operands of unknown shape")
            return
        parts: list[Shape] = []
        for s in shapes:
            assert s is not None
            if s == out:
                parts.append(out_chw)
            elif prod(s) == 1:
                parts.append((1,))  # a scalar
            elif len(out) == 3 and node.output[0] not in self.tokens and s == (out[0], 1, 1):
                parts.append((out[0],))  # per channel
            elif len(s) > 0 and s[-1] == out[-1] and prod(s) == out[-1] and out_chw[2] == 1:
                parts.append((out[-1],))  # per feature of a token tensor
            else:
                parts.append(s if len(s) in (1, 3) else token_chw(s))
        self.e.elementwise(kind, where, out_chw, parts, node.op_type)

    def _concat(self, node: Any, where: str, attrs: dict[str, Any]) -> None:
        out = self._shape(node.output[0])
        if out is None or len(out) == 0:
            return  # shape arithmetic
        shapes = [self._operand(n, len(out) + 1) for n in node.input]
        if node.output[0] in self.tokens or len(out) == 2:
            if any(s is None for s in shapes):
                self.e.skip(where, f"Concat along axis {attrs.get('axis')} of unknown shapes")
                return
            shape = token_chw(out)  # token tensors, along any axis
            self.e.layer("concat", where, shape, shape, inputs=len(shapes))
            return
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
        # any other transpose is a view, as in the zoo
