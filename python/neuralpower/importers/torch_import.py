"""PyTorch import: trace a module with torch.fx, propagate shapes on a batch-1 tensor, map each operation."""

from __future__ import annotations

import operator
from collections.abc import Callable, Sequence
from typing import Any

from ..errors import InputError
from ..layers import Architecture
from ._common import Emitter, Shape, first_line

__all__ = ["from_torch"]

_DTYPES = ("fp32", "fp16", "bf16")


def _pair(v: Any) -> tuple[int, int]:
    if isinstance(v, tuple | list):
        return (int(v[0]), int(v[1])) if len(v) == 2 else (int(v[0]), int(v[0]))
    return (int(v), int(v))


def from_torch(
    module: Any,
    input_shape: Sequence[int],
    *,
    dtype: str = "fp32",
    name: str | None = None,
    allow_unknown: bool = False,
) -> Architecture:
    """The architecture of a PyTorch module, as its eval-mode ``forward`` runs on an input of ``input_shape``.

    The module is traced with ``torch.fx`` and run once on a batch-1 zero tensor on the CPU to learn every
    shape (training flags are restored afterwards). Convolutions, linear layers, pooling, batchnorm,
    activations, ``+``, ``*``, ``torch.cat``, flatten, softmax and channel shuffles become layers; what
    does no work at inference (dropout, identity, views, ``size``) is left out, as in the zoo.

    Parameters
    ----------
    module
        A ``torch.nn.Module``.
    input_shape
        ``(N, C, H, W)`` (or ``(N, F)``): the batch size is ``N``.
    dtype
        The element type the network will run in (fp32, fp16, bf16); shapes are traced in fp32.
    name
        The architecture's name (default: the module's class name).
    allow_unknown
        Skip operations neuralpower has no layer type for (listed in the result's ``meta["skipped"]``)
        instead of raising.

    Raises
    ------
    InputError
        One line naming every unsupported module or operation (by module path), or a module torch.fx
        cannot trace.
    """
    import torch
    import torch.fx
    from torch.fx.passes.shape_prop import ShapeProp

    source = name or type(module).__name__
    shape = tuple(input_shape)
    if len(shape) not in (2, 4) or any(isinstance(d, bool) or not isinstance(d, int) or d < 1 for d in shape):
        raise InputError(f"{source}: input_shape {shape!r} must be (N, C, H, W) or (N, F) positive integers")
    if dtype not in _DTYPES:
        raise InputError(f"unknown dtype {dtype!r} (known: {', '.join(_DTYPES)})", column="dtype")
    if not isinstance(module, torch.nn.Module):
        raise InputError(f"{source}: not a torch.nn.Module")
    try:
        gm = torch.fx.symbolic_trace(module)
    except Exception as e:  # torch.fx raises many kinds; the first line says why
        raise InputError(f"{source}: torch.fx cannot trace it: {first_line(e)}") from None
    flags = [(m, m.training) for m in module.modules()]
    try:
        gm.eval()
        device = next((p.device for p in module.parameters()), torch.device("cpu"))
        with torch.no_grad():
            ShapeProp(gm).propagate(torch.zeros((1, *shape[1:]), device=device))
    except Exception as e:
        raise InputError(
            f"{source}: running it on a {'x'.join(map(str, shape))} input failed: {first_line(e)}"
        ) from None
    finally:
        for m, training in flags:
            m.train(training)
    emitter = Emitter(source, shape[0], dtype)
    _Walker(gm, emitter).run()
    return emitter.build(source, allow_unknown, "allow_unknown=True (--allow-unknown)")


class _Walker:
    def __init__(self, gm: Any, emitter: Emitter) -> None:
        import torch
        import torch.nn.functional as F

        self.torch = torch
        self.gm = gm
        self.e = emitter
        self.modules = dict(gm.named_modules())
        nn = torch.nn
        self.module_handlers: list[tuple[type, Callable[[Any, Any, str], None]]] = [
            (nn.Conv2d, self._conv),
            (nn.Linear, self._linear),
            (nn.BatchNorm2d, lambda n, m, w: self._same("batchnorm2d", n, w)),
            (nn.ReLU6, lambda n, m, w: self._same("relu6", n, w)),
            (nn.Hardtanh, self._hardtanh),
            (nn.ReLU, lambda n, m, w: self._same("relu", n, w)),
            (nn.Sigmoid, lambda n, m, w: self._same("sigmoid", n, w)),
            (nn.Hardsigmoid, lambda n, m, w: self._same("hardsigmoid", n, w)),
            (nn.SiLU, lambda n, m, w: self._same("silu", n, w)),
            (nn.Hardswish, lambda n, m, w: self._same("hardswish", n, w)),
            (nn.GELU, lambda n, m, w: self._same("gelu", n, w)),
            (nn.MaxPool2d, self._maxpool_module),
            (nn.AvgPool2d, self._avgpool_module),
            (nn.AdaptiveAvgPool2d, lambda n, m, w: self._adaptive(n, m.output_size, w)),
            (nn.Flatten, lambda n, m, w: self._flatten(n, w)),
            (nn.Softmax, lambda n, m, w: self._softmax(n, m.dim, w)),
            (nn.ChannelShuffle, lambda n, m, w: self._shuffle(n, m.groups, w)),
            (nn.Dropout, lambda n, m, w: None),
            (nn.Dropout2d, lambda n, m, w: None),
            (nn.Identity, lambda n, m, w: None),
        ]
        same = {
            torch.relu: "relu", F.relu: "relu", F.relu6: "relu6", torch.sigmoid: "sigmoid", F.sigmoid: "sigmoid",
            F.hardsigmoid: "hardsigmoid", F.silu: "silu", F.hardswish: "hardswish", F.gelu: "gelu",
            F.batch_norm: "batchnorm2d",
        }
        self.function_handlers: dict[Any, Callable[[Any, dict[str, Any], str], None]] = {
            f: self._same_handler(t) for f, t in same.items()
        }
        self.function_handlers.update({
            F.max_pool2d: lambda n, a, w: self._pool("maxpool2d", n, a["kernel_size"], a["stride"], a["padding"],
                                                      a["ceil_mode"], w, a["dilation"]),
            F.avg_pool2d: lambda n, a, w: self._pool("avgpool2d", n, a["kernel_size"], a["stride"], a["padding"],
                                                      a["ceil_mode"], w),
            F.adaptive_avg_pool2d: lambda n, a, w: self._adaptive(n, a["output_size"], w),
            torch.flatten: lambda n, a, w: self._flatten(n, w, a.get("start_dim", 0)),
            torch.softmax: lambda n, a, w: self._softmax(n, a["dim"], w),
            F.softmax: lambda n, a, w: self._softmax(n, a["dim"], w),
            torch.cat: lambda n, a, w: self._cat(n, a["tensors"], a.get("dim", 0), w),
            torch.mean: lambda n, a, w: self._mean(n, a.get("dim"), w),
            F.hardtanh: lambda n, a, w: self._clamp(n, a.get("min_val", -1.0), a.get("max_val", 1.0), w),
            torch.channel_shuffle: lambda n, a, w: self._shuffle(n, a["groups"], w),
            F.dropout: lambda n, a, w: None,
        })
        self.methods: dict[str, Callable[[Any, str], None]] = {
            "relu": lambda n, w: self._same("relu", n, w),
            "relu_": lambda n, w: self._same("relu", n, w),
            "sigmoid": lambda n, w: self._same("sigmoid", n, w),
            "sigmoid_": lambda n, w: self._same("sigmoid", n, w),
            "flatten": lambda n, w: self._flatten(n, w, n.args[1] if len(n.args) > 1 else n.kwargs.get("start_dim", 0)),
            "softmax": lambda n, w: self._softmax(n, n.args[1] if len(n.args) > 1 else n.kwargs.get("dim"), w),
            "mean": lambda n, w: self._mean(n, n.args[1] if len(n.args) > 1 else n.kwargs.get("dim"), w),
            "add": lambda n, w: self._binary("add", n, w),
            "add_": lambda n, w: self._binary("add", n, w),
            "mul": lambda n, w: self._binary("mul", n, w),
            "mul_": lambda n, w: self._binary("mul", n, w),
            "contiguous": self._contiguous,
        }
        # views and bookkeeping: no work at inference
        self.free_methods = {"view", "reshape", "size", "dim", "chunk", "split", "unsqueeze", "squeeze", "transpose",
                             "permute", "expand", "expand_as", "view_as", "type_as", "detach", "clone"}
        self.free_functions = {operator.getitem, torch.transpose, torch.permute, torch.reshape, torch.chunk,
                               torch.split, torch.squeeze, torch.unsqueeze, getattr}

    def _same_handler(self, type_name: str) -> Callable[[Any, dict[str, Any], str], None]:
        return lambda node, args, where: self._same(type_name, node, where)

    # -- shapes --------------------------------------------------------------------------------------
    def _shape(self, node: Any) -> Shape | None:
        """A node's tensor shape without the batch dimension, or None when it is not a tensor."""
        meta = node.meta.get("tensor_meta") if hasattr(node, "meta") else None
        if meta is None or not hasattr(meta, "shape"):
            return None
        return tuple(int(d) for d in meta.shape[1:])

    def _input(self, node: Any) -> Any:
        for a in (*node.args, *node.kwargs.values()):
            if self._shape(a) is not None:
                return a
        return None

    # -- the walk ------------------------------------------------------------------------------------
    def run(self) -> None:
        for node in self.gm.graph.nodes:
            if node.op in ("placeholder", "output", "get_attr"):
                continue
            if node.op == "call_module":
                self._module(node)
            elif node.op == "call_function":
                self._function(node)
            elif node.op == "call_method":
                handler = self.methods.get(node.target)
                if handler is not None:
                    handler(node, node.name)
                elif node.target not in self.free_methods and self._shape(node) is not None:
                    self.e.skip(node.name, f"Tensor.{node.target}")

    def _module(self, node: Any) -> None:
        module = self.modules[node.target]
        for cls, handler in self.module_handlers:
            if isinstance(module, cls):
                handler(node, module, node.target)
                return
        self.e.skip(node.target, type(module).__name__)

    def _function(self, node: Any) -> None:
        target = node.target
        if target in (operator.add, operator.iadd, self.torch.add):
            self._binary("add", node, node.name)
            return
        if target in (operator.mul, operator.imul, self.torch.mul):
            self._binary("mul", node, node.name)
            return
        handler = self.function_handlers.get(target)
        if handler is None:
            if target not in self.free_functions and self._shape(node) is not None:
                self.e.skip(node.name, getattr(target, "__name__", str(target)))
            return
        from torch.fx.operator_schemas import normalize_function

        bound = normalize_function(target, node.args, node.kwargs, normalize_to_only_use_kwargs=True)
        if bound is None:
            self.e.skip(node.name, getattr(target, "__name__", str(target)))
            return
        handler(node, dict(bound.kwargs), node.name)

    # -- layers ---------------------------------------------------------------------------------------
    def _emit(self, type_name: str, node: Any, where: str, **fields: Any) -> None:
        source = self._input(node)
        in_shape = self._shape(source) if source is not None else None
        self.e.reading(type_name, where, in_shape, self._shape(node), type_name, **fields)

    def _same(self, type_name: str, node: Any, where: str) -> None:
        self._emit(type_name, node, where)

    def _hardtanh(self, node: Any, module: Any, where: str) -> None:
        self._clamp(node, module.min_val, module.max_val, where)

    def _clamp(self, node: Any, lo: float, hi: float, where: str) -> None:
        if (lo, hi) == (0.0, 6.0):
            self._emit("relu6", node, where)
        else:
            self.e.skip(where, f"hardtanh({lo}, {hi})")

    def _conv(self, node: Any, m: Any, where: str) -> None:
        kernel = _pair(m.kernel_size)
        dilation = _pair(m.dilation)
        if isinstance(m.padding, str):
            if m.padding == "valid":
                padding = (0, 0)
            else:  # "same": stride 1; symmetric only when the total is even
                total = [d * (k - 1) for d, k in zip(dilation, kernel, strict=True)]
                if any(t % 2 for t in total):
                    self.e.skip(where, "Conv2d with asymmetric 'same' padding")
                    return
                padding = (total[0] // 2, total[1] // 2)
        else:
            padding = _pair(m.padding)
        self._emit(
            "conv2d", node, where, out_channels=m.out_channels, kernel=kernel, stride=_pair(m.stride),
            padding=padding, dilation=dilation, groups=m.groups, bias=int(m.bias is not None),
        )

    def _linear(self, node: Any, m: Any, where: str) -> None:
        self._emit("linear", node, where, out_features=m.out_features, bias=int(m.bias is not None))

    def _maxpool_module(self, node: Any, m: Any, where: str) -> None:
        if m.return_indices:
            self.e.skip(where, "MaxPool2d with return_indices")
            return
        self._pool("maxpool2d", node, m.kernel_size, m.stride, m.padding, m.ceil_mode, where, m.dilation)

    def _avgpool_module(self, node: Any, m: Any, where: str) -> None:
        self._pool("avgpool2d", node, m.kernel_size, m.stride, m.padding, m.ceil_mode, where)

    def _pool(
        self, kind: str, node: Any, kernel: Any, stride: Any, padding: Any, ceil: Any, where: str, dilation: Any = 1
    ) -> None:
        stride = kernel if stride is None or stride == [] or stride == () else stride
        fields: dict[str, Any] = {"kernel": _pair(kernel), "stride": _pair(stride), "padding": _pair(padding),
                                  "ceil_mode": int(bool(ceil))}
        if kind == "maxpool2d":
            fields["dilation"] = _pair(dilation)
        self._emit(kind, node, where, **fields)

    def _adaptive(self, node: Any, size: Any, where: str) -> None:
        src = self._shape(self._input(node))
        out_h, out_w = size if isinstance(size, tuple | list) else (size, size)
        if src is not None and len(src) == 3:
            out_h = src[1] if out_h is None else out_h
            out_w = src[2] if out_w is None else out_w
        self._emit("adaptive_avgpool2d", node, where, out_h=int(out_h), out_w=int(out_w))

    def _mean(self, node: Any, dim: Any, where: str) -> None:
        dims = tuple(sorted(int(d) % 4 for d in (dim if isinstance(dim, tuple | list) else (dim,)))) if dim else ()
        src = self._shape(self._input(node))
        if dims == (2, 3) and src is not None and len(src) == 3:
            self._emit("adaptive_avgpool2d", node, where, out_h=1, out_w=1)
        else:
            self.e.skip(where, f"mean over dims {dim}")

    def _flatten(self, node: Any, where: str, start_dim: int = 1) -> None:
        src = self._shape(self._input(node))
        if src is not None and len(src) == 1:
            return  # already a vector: nothing moves
        if start_dim != 1:
            self.e.skip(where, f"flatten from dim {start_dim}")
            return
        self._emit("flatten", node, where)

    def _softmax(self, node: Any, dim: Any, where: str) -> None:
        src = self._shape(self._input(node))
        rank = 1 + (len(src) if src is not None else 0)
        if dim is None or int(dim) % rank != 1:
            self.e.skip(where, f"softmax over dim {dim}")
            return
        self._emit("softmax", node, where)

    def _shuffle(self, node: Any, groups: int, where: str) -> None:
        self._emit("channel_shuffle", node, where, groups=int(groups))

    def _cat(self, node: Any, tensors: Sequence[Any], dim: int, where: str) -> None:
        shapes = [self._shape(t) for t in tensors]
        if any(s is None or len(s) != 3 for s in shapes) or int(dim) % 4 != 1:
            self.e.skip(where, f"cat along dim {dim}")
            return
        out = self._shape(node)
        assert out is not None
        self.e.layer("concat", where, out, out, inputs=len(shapes))

    def _binary(self, kind: str, node: Any, where: str) -> None:
        shapes = [s for s in (self._shape(a) for a in (*node.args, *node.kwargs.values())) if s is not None]
        out = self._shape(node)
        if len(shapes) != 2 or out is None:
            self.e.skip(where, f"{kind} of a tensor and a constant")
            return
        self.e.elementwise(kind, where, out, shapes, kind)

    def _contiguous(self, node: Any, where: str) -> None:
        """``view -> transpose(1, 2) -> contiguous`` on a 5-D tensor is a channel shuffle (a copy)."""
        src = node.args[0]
        shape = self._shape(src)
        if shape is None or len(shape) != 4:
            return  # a contiguous tensor stays as it is
        is_transpose = (src.op == "call_function" and src.target is self.torch.transpose) or (
            src.op == "call_method" and src.target == "transpose"
        )
        dims = tuple(sorted(int(d) % 5 for d in src.args[1:3])) if is_transpose and len(src.args) >= 3 else ()
        if dims != (1, 2):
            self.e.skip(where, "contiguous copy of a permuted 5-D tensor")
            return
        per_group, groups, h, w = shape  # after the transpose: N x C/g x g x H x W
        self.e.layer("channel_shuffle", where, (groups * per_group, h, w), (groups * per_group, h, w), groups=groups)
