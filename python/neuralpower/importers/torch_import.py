"""PyTorch import: trace a module with torch.fx, propagate shapes on a batch-1 tensor, map each operation."""

from __future__ import annotations

import inspect
import operator
from collections.abc import Callable, Sequence
from typing import Any

from ..errors import InputError
from ..layers import DTYPES, Architecture
from ._common import Emitter, Shape, find_gelus, first_line, layer_chw, prod, token_chw

__all__ = ["from_torch"]

_DTYPES = ("fp32", "fp16", "bf16")
# the element-wise operations a written-out GELU is made of (see find_gelus), by method name
_GELU_METHODS = {"add": "add", "sub": "sub", "mul": "mul", "div": "div", "pow": "pow", "neg": "neg", "tanh": "tanh",
                 "erf": "erf", "sqrt": "sqrt"}
# views and bookkeeping: no work at inference
_FREE_METHODS = {"view", "reshape", "size", "dim", "chunk", "split", "unsqueeze", "squeeze", "transpose", "permute",
                 "expand", "expand_as", "view_as", "type_as", "detach", "clone", "unbind", "flatten", "to", "float",
                 "half", "bfloat16", "type", "narrow"}
_PERMUTES = ("permute", "transpose")


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

    The module is traced with ``torch.fx`` in eval mode and run once on a batch-1 zero tensor to learn every
    shape (training flags are restored afterwards); a module whose input goes straight into an embedding
    (a language model) is given int64 token ids. What becomes a layer:

    - convolutions (and transposed ones), linear layers (on vectors, or on every token of an ``N x ... x F``
      tensor; ``torch.addmm`` with parameters, as Hugging Face's GPT-2 ``Conv1D`` runs), pooling, batchnorm,
      ``nn.LayerNorm`` over the last dimension (ConvNeXt's permute, layer norm, permute back: its
      channels-first layernorm), embeddings, activations (GELU exact, tanh-approximated or written out of
      ``tanh``/``erf`` arithmetic, tanh, ...), ``+``, ``-``, ``*``, ``/`` (of two tensors, or with a
      parameter or scalar operand), ``torch.cat``, flatten, softmax (over channels or the last dimension),
      channel shuffles, interpolation (nearest, bilinear);
    - ``nn.MultiheadAttention`` (batch first): its input projection (one fused linear for self-attention),
      the attention (``scaled_dot_product_attention``; with ``need_weights`` the score product, softmax
      and weighted sum that run instead, the average of the weights over heads left out) and the output
      projection; ``F.scaled_dot_product_attention`` (causal or not, without a mask); ``@`` of two
      activations (``matmul``, ``broadcast`` when the second is one matrix shared by the batch, such as a
      tied weight: a linear layer whose weight an earlier layer holds becomes such a matmul).

    Parameters used as operands (a class token, a position embedding, a layer scale) are counted in the
    result's ``meta["params_outside_layers"]``, so ``totals()["params"]`` counts every parameter once.
    What does no work at inference (dropout, stochastic depth, identity, views, permutes, splits, ``size``,
    computations on parameters and constants alone) is left out, as in the zoo.

    Parameters
    ----------
    module
        A ``torch.nn.Module``.
    input_shape
        ``(N, C, H, W)``, ``(N, T, F)`` tokens, ``(N, F)`` or ``(N, T)`` token ids: the batch size is ``N``.
    dtype
        The element type the network will run in (fp32, fp16, bf16; not fp8); shapes are traced in fp32.
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
    if len(shape) not in (2, 3, 4) or any(isinstance(d, bool) or not isinstance(d, int) or d < 1 for d in shape):
        raise InputError(f"{source}: input_shape {shape!r} must be (N, C, H, W), (N, T, F) or (N, F) positive "
                         "integers")
    if dtype in DTYPES and dtype not in _DTYPES:  # fp8: a network's layers do not all run in it
        raise InputError(f"the torch importer builds {', '.join(_DTYPES)} networks, not {dtype}", column="dtype")
    if dtype not in _DTYPES:
        raise InputError(f"unknown dtype {dtype!r} (known: {', '.join(_DTYPES)})", column="dtype")
    if not isinstance(module, torch.nn.Module):
        raise InputError(f"{source}: not a torch.nn.Module")
    flags = [(m, m.training) for m in module.modules()]
    try:
        module.eval()  # traced in eval mode: branches on self.training take their inference side
        try:
            tracer = torch.fx.Tracer()
            tracer.proxy_buffer_attributes = True  # buffers sliced by the input's size (BERT's position ids)
            graph = tracer.trace(module)
            gm = torch.fx.GraphModule(module, graph, type(module).__name__)
        except Exception as e:  # torch.fx raises many kinds; the first line says why
            raise InputError(f"{source}: torch.fx cannot trace it: {first_line(e)}") from None
        gm.eval()
        device = next((p.device for p in module.parameters()), torch.device("cpu"))
        kind = torch.long if _feeds_embedding(gm, torch) else torch.float32
        try:
            with torch.no_grad():
                ShapeProp(gm).propagate(torch.zeros((1, *shape[1:]), device=device, dtype=kind))
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


def _feeds_embedding(gm: Any, torch: Any) -> bool:
    """Whether the graph input is used as indices of an embedding (token ids)."""
    modules = dict(gm.named_modules())
    for node in gm.graph.nodes:
        if node.op != "placeholder":
            continue
        for user in node.users:
            if user.op == "call_module" and isinstance(modules.get(user.target), torch.nn.Embedding):
                return True
            if user.op == "call_function" and user.target is torch.nn.functional.embedding:
                return True
        return False
    return False


class _Walker:
    def __init__(self, gm: Any, emitter: Emitter) -> None:
        import torch
        import torch.nn.functional as F

        self.torch = torch
        self.gm = gm
        self.e = emitter
        self.modules: dict[str, Any] = dict(gm.named_modules())
        self.nodes = list(gm.graph.nodes)
        self.owned: set[int] = set()  # ids of the parameters layers hold
        nn = torch.nn
        self.module_handlers: list[tuple[type, Callable[[Any, Any, str], None]]] = [
            (nn.Conv2d, self._conv),
            (nn.ConvTranspose2d, self._conv_transpose),
            (nn.Linear, self._linear_module),
            (nn.BatchNorm2d, lambda n, m, w: self._same("batchnorm2d", n, w)),
            (nn.LayerNorm, self._layernorm_module),
            (nn.Embedding, self._embedding_module),
            (nn.MultiheadAttention, self._mha),
            (nn.ReLU6, lambda n, m, w: self._same("relu6", n, w)),
            (nn.Hardtanh, self._hardtanh),
            (nn.ReLU, lambda n, m, w: self._same("relu", n, w)),
            (nn.Sigmoid, lambda n, m, w: self._same("sigmoid", n, w)),
            (nn.Tanh, lambda n, m, w: self._same("tanh", n, w)),
            (nn.Hardsigmoid, lambda n, m, w: self._same("hardsigmoid", n, w)),
            (nn.SiLU, lambda n, m, w: self._same("silu", n, w)),
            (nn.Hardswish, lambda n, m, w: self._same("hardswish", n, w)),
            (nn.GELU, lambda n, m, w: self._gelu(n, m.approximate, w)),
            (nn.MaxPool2d, self._maxpool_module),
            (nn.AvgPool2d, self._avgpool_module),
            (nn.AdaptiveAvgPool2d, lambda n, m, w: self._adaptive(n, m.output_size, w)),
            (nn.Flatten, lambda n, m, w: self._flatten(n, w, m.start_dim)),
            (nn.Softmax, lambda n, m, w: self._softmax(n, m.dim, w)),
            (nn.ChannelShuffle, lambda n, m, w: self._shuffle(n, m.groups, w)),
            (nn.Upsample, lambda n, m, w: self._upsample(n, m.mode, m.align_corners, w)),
            (nn.Dropout, lambda n, m, w: None),
            (nn.Dropout1d, lambda n, m, w: None),
            (nn.Dropout2d, lambda n, m, w: None),
            (nn.Identity, lambda n, m, w: None),
        ]
        same = {
            torch.relu: "relu", F.relu: "relu", F.relu6: "relu6", torch.sigmoid: "sigmoid", F.sigmoid: "sigmoid",
            F.hardsigmoid: "hardsigmoid", F.silu: "silu", F.hardswish: "hardswish", F.batch_norm: "batchnorm2d",
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
        # functions read argument by argument (builtins torch.fx cannot always normalize)
        self.raw_functions: dict[Any, Callable[[Any, str], None]] = {
            F.gelu: lambda n, w: self._gelu(n, self._arg(n, 1, "approximate", "none"), w),
            torch.tanh: lambda n, w: self._same("tanh", n, w),
            F.tanh: lambda n, w: self._same("tanh", n, w),
            F.layer_norm: self._layernorm_function,
            F.linear: self._linear_function,
            F.embedding: self._embedding_function,
            torch.addmm: self._addmm,
            torch.matmul: self._matmul,
            operator.matmul: self._matmul,
            torch.bmm: self._matmul,
            torch.mm: self._matmul,
            F.scaled_dot_product_attention: self._sdpa,
            F.interpolate: lambda n, w: self._upsample(
                n, self._arg(n, 3, "mode", "nearest"), self._arg(n, 4, "align_corners", None), w,
                self._arg(n, 7, "antialias", False)),
        }
        for f in (operator.add, operator.iadd, torch.add, operator.sub, operator.isub, torch.sub):
            self.raw_functions[f] = self._binary_handler("add")
        for f in (operator.mul, operator.imul, torch.mul, operator.truediv, operator.itruediv, torch.div):
            self.raw_functions[f] = self._binary_handler("mul")
        self.methods: dict[str, Callable[[Any, str], None]] = {
            "relu": lambda n, w: self._same("relu", n, w),
            "relu_": lambda n, w: self._same("relu", n, w),
            "sigmoid": lambda n, w: self._same("sigmoid", n, w),
            "sigmoid_": lambda n, w: self._same("sigmoid", n, w),
            "tanh": lambda n, w: self._same("tanh", n, w),
            "tanh_": lambda n, w: self._same("tanh", n, w),
            "flatten": lambda n, w: self._flatten(n, w, self._arg(n, 1, "start_dim", 0)),
            "softmax": lambda n, w: self._softmax(n, self._arg(n, 1, "dim", None), w),
            "mean": lambda n, w: self._mean(n, self._arg(n, 1, "dim", None), w),
            "matmul": self._matmul,
            "bmm": self._matmul,
            "mm": self._matmul,
            "contiguous": self._contiguous,
        }
        for method, kind in (("add", "add"), ("add_", "add"), ("sub", "add"), ("sub_", "add"), ("mul", "mul"),
                             ("mul_", "mul"), ("div", "mul"), ("div_", "mul")):
            self.methods[method] = self._binary_handler(kind)
        self.free_functions = {operator.getitem, torch.transpose, torch.permute, torch.reshape, torch.chunk,
                               torch.split, torch.squeeze, torch.unsqueeze, getattr, torch.arange, torch.zeros,
                               torch.ones, torch.full, torch.zeros_like, torch.ones_like, torch.unbind,
                               torch.narrow, torch._assert}
        self.dynamic = self._dynamic_nodes()
        self.tokens = self._token_nodes()
        self.gelus, self.gelu_inner = self._gelu_patterns()

    def _same_handler(self, type_name: str) -> Callable[[Any, dict[str, Any], str], None]:
        return lambda node, args, where: self._same(type_name, node, where)

    def _binary_handler(self, kind: str) -> Callable[[Any, str], None]:
        return lambda node, where: self._binary(kind, node, where)

    # -- shapes and layouts ----------------------------------------------------------------------------
    def _full(self, node: Any) -> Shape | None:
        """A node's whole tensor shape (batch first for activations), or None when it is not a tensor."""
        meta = node.meta.get("tensor_meta") if hasattr(node, "meta") else None
        if meta is None or not hasattr(meta, "shape"):
            return None
        return tuple(int(d) for d in meta.shape)

    def _shape(self, node: Any) -> Shape | None:
        """A node's tensor shape without the batch dimension, or None when it is not a tensor."""
        full = self._full(node)
        return None if full is None else full[1:]

    def _chw(self, node: Any) -> Shape | None:
        """The shape an image layer reads (see :func:`layer_chw`)."""
        return layer_chw(self._shape(node), node in self.tokens)

    def _input(self, node: Any) -> Any:
        for a in (*node.args, *node.kwargs.values()):
            if self._shape(a) is not None:
                return a
        return None

    def _arg(self, node: Any, index: int, key: str, default: Any) -> Any:
        if key in node.kwargs:
            return node.kwargs[key]
        return node.args[index] if len(node.args) > index else default

    def _is_node(self, value: Any) -> bool:
        return isinstance(value, self.torch.fx.Node)

    def _dynamic_nodes(self) -> set[Any]:
        """The nodes whose value depends on the input (the others are constants at inference)."""
        dynamic: set[Any] = set()
        for node in self.nodes:
            if node.op == "placeholder":
                dynamic.add(node)
            elif node.op != "get_attr":
                found: list[Any] = []
                self.torch.fx.node.map_arg((node.args, node.kwargs), found.append)
                if any(a in dynamic for a in found):
                    dynamic.add(node)
        return dynamic

    def _permutation(self, node: Any) -> tuple[int, ...] | None:
        """The dims of a permute (of a batch-first 4-D tensor: rank 4), or None."""
        if node.op == "call_method" and node.target == "permute":
            dims = node.args[1:] if len(node.args) > 2 else node.args[1] if len(node.args) > 1 else ()
        elif node.op == "call_function" and node.target is self.torch.permute:
            dims = self._arg(node, 1, "dims", ())
        else:
            return None
        full = self._full(node)
        if full is None or not isinstance(dims, tuple | list):
            return None
        return tuple(int(d) % len(full) for d in dims)

    def _token_nodes(self) -> set[Any]:
        """Nodes whose 3-D (without batch) value is ``... x features`` (channels last), not ``C x H x W``."""
        nn = self.torch.nn
        producers = (nn.Linear, nn.LayerNorm, nn.Embedding, nn.MultiheadAttention)
        images = (nn.Conv2d, nn.ConvTranspose2d, nn.BatchNorm2d, nn.MaxPool2d, nn.AvgPool2d, nn.AdaptiveAvgPool2d,
                  nn.Upsample)
        token_functions = {self.torch.nn.functional.linear, self.torch.nn.functional.layer_norm,
                           self.torch.nn.functional.embedding, self.torch.matmul, operator.matmul, self.torch.bmm,
                           self.torch.nn.functional.scaled_dot_product_attention}
        tokens: set[Any] = set()
        for node in self.nodes:
            if node.op in ("placeholder", "get_attr", "output"):
                continue
            module = self.modules.get(node.target) if node.op == "call_module" else None
            if isinstance(module, producers) or (node.op == "call_function" and node.target in token_functions):
                tokens.add(node)
                continue
            if isinstance(module, images):
                continue
            dims = self._permutation(node)
            if dims == (0, 2, 3, 1):
                tokens.add(node)  # channels last
                continue
            if dims == (0, 3, 1, 2):
                continue  # channels first again
            found: list[Any] = []
            self.torch.fx.node.map_arg((node.args, node.kwargs), found.append)
            if any(a in tokens or (a in self.dynamic and len(self._shape(a) or ()) == 2) for a in found):
                tokens.add(node)
        return tokens

    def _gelu_patterns(self) -> tuple[dict[Any, tuple[Any, int]], set[Any]]:
        """GELUs written out of element-wise arithmetic (Hugging Face's ``NewGELUActivation``)."""
        torch = self.torch
        functions = {operator.add: "add", torch.add: "add", operator.sub: "sub", torch.sub: "sub",
                     operator.mul: "mul", torch.mul: "mul", operator.truediv: "div", torch.div: "div",
                     operator.pow: "pow", torch.pow: "pow", operator.neg: "neg", torch.neg: "neg",
                     torch.tanh: "tanh", torch.nn.functional.tanh: "tanh", torch.erf: "erf",
                     torch.special.erf: "erf", torch.sqrt: "sqrt"}
        kind: dict[Any, str] = {}
        operands: dict[Any, list[Any]] = {}
        for node in self.nodes:
            op = None
            if node.op == "call_function":
                op = functions.get(node.target)
            elif node.op == "call_method":
                op = _GELU_METHODS.get(node.target)
            if op is None or node.kwargs:
                continue
            args: list[Any] = []
            for a in node.args:
                if isinstance(a, bool):
                    break
                if isinstance(a, int | float):
                    args.append(float(a))
                elif self._is_node(a) and self._full(a) is not None:
                    args.append(a)
                else:
                    break
            else:
                kind[node] = op
                operands[node] = args
        return find_gelus(self.nodes, kind, operands)

    # -- parameters ------------------------------------------------------------------------------------
    def _parameter(self, node: Any) -> Any:
        """The parameter a ``get_attr`` node reads (looking through transposes and views), or None."""
        torch = self.torch
        while self._is_node(node) and node.op != "get_attr" and (
            (node.op == "call_method" and node.target in ("t", "transpose", "view", "reshape", "permute"))
            or (node.op == "call_function" and node.target in (torch.t, torch.transpose, torch.reshape,
                                                                   torch.permute))
            or (node.op == "call_function" and node.target is getattr and node.args[1] in ("T", "mT"))
        ):
            node = node.args[0]
        if not self._is_node(node) or node.op != "get_attr":
            return None
        value = self._attribute(node.target)
        return value if isinstance(value, torch.nn.Parameter) else None

    def _attribute(self, target: str) -> Any:
        value: Any = self.gm
        for part in target.split("."):
            value = getattr(value, part, None)
        return value

    def _own(self, *params: Any) -> None:
        for p in params:
            if p is not None:
                self.owned.add(id(p))

    # -- the walk ------------------------------------------------------------------------------------
    def run(self) -> None:
        for node in self.nodes:
            if node.op in ("placeholder", "output", "get_attr") or node in self.gelu_inner:
                continue
            if node in self.gelus:
                x, approximate = self.gelus[node]
                where = self._module_path(node) or node.name
                self.e.layer("gelu", where, self._chw(x) or (1,), self._chw(node), approximate=approximate)
                continue
            constant = node not in self.dynamic
            if node.op == "call_module":
                self._module(node, constant)
            elif constant and not self._is_lookup(node):
                continue  # computed from parameters and constants alone: folded at inference
            elif node.op == "call_function":
                self._function(node)
            elif node.op == "call_method":
                handler = self.methods.get(node.target)
                if handler is not None:
                    handler(node, node.name)
                elif node.target not in _FREE_METHODS and self._shape(node) is not None:
                    self.e.skip(node.name, f"Tensor.{node.target}")
        self._count_outside()

    def _is_lookup(self, node: Any) -> bool:
        return node.op == "call_function" and node.target is self.torch.nn.functional.embedding

    def _count_outside(self) -> None:
        """Parameters read as operands that no layer holds (each once)."""
        counted: set[int] = set()
        for node in self.nodes:
            if node.op != "get_attr":
                continue
            p = self._attribute(node.target)
            if isinstance(p, self.torch.nn.Parameter) and id(p) not in self.owned and id(p) not in counted:
                counted.add(id(p))
                self.e.params_outside_layers += int(p.numel())

    def _module_path(self, node: Any) -> str:
        stack = node.meta.get("nn_module_stack")
        return str(next(reversed(stack))) if stack else ""

    def _module(self, node: Any, constant: bool) -> None:
        module = self.modules[node.target]
        for cls, handler in self.module_handlers:
            if isinstance(module, cls):
                before = len(self.e.layers)
                if not constant or isinstance(module, self.torch.nn.Embedding):
                    handler(node, module, node.target)
                if len(self.e.layers) > before:
                    self._own(*self.modules[node.target].parameters())
                return
        if not constant:
            self.e.skip(node.target, type(module).__name__)

    def _function(self, node: Any) -> None:
        target = node.target
        raw = self.raw_functions.get(target)
        if raw is not None:
            raw(node, node.name)
            return
        if getattr(target, "__name__", "") == "stochastic_depth":
            return  # torchvision's stochastic depth (a wrapped function): identity at inference
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
        in_shape = self._chw(source) if source is not None else None
        self.e.reading(type_name, where, in_shape, self._chw(node), type_name, **fields)

    def _same(self, type_name: str, node: Any, where: str) -> None:
        self._emit(type_name, node, where)

    def _gelu(self, node: Any, approximate: Any, where: str) -> None:
        if approximate not in ("none", "tanh"):
            self.e.skip(where, f"gelu with approximate={approximate!r}")
            return
        self._emit("gelu", node, where, approximate=int(approximate == "tanh"))

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

    def _conv_transpose(self, node: Any, m: Any, where: str) -> None:
        src, out = self._shape(self._input(node)), self._shape(node)
        if m.padding_mode != "zeros" or src is None or out is None or len(src) != 3 or len(out) != 3:
            self.e.skip(where, f"ConvTranspose2d (padding_mode {m.padding_mode!r}) on this input")
            return
        kernel, stride, padding, dilation = (_pair(m.kernel_size), _pair(m.stride), _pair(m.padding),
                                             _pair(m.dilation))
        # the output padding torch used (given, or chosen for forward's output_size)
        extra = tuple(o - ((i - 1) * s - 2 * p + d * (k - 1) + 1)
                      for o, i, s, p, d, k in zip(out[1:], src[1:], stride, padding, dilation, kernel, strict=True))
        self._emit("conv_transpose2d", node, where, out_channels=m.out_channels, kernel=kernel, stride=stride,
                   padding=padding, dilation=dilation, output_padding=extra, groups=m.groups,
                   bias=int(m.bias is not None))

    # linear layers, on vectors or on every token
    def _linear(self, node: Any, x: Any, weight: Any, bias: Any, where: str) -> None:
        shape = self._shape(x)
        if shape is None or len(shape) == 0:
            self.e.skip(where, "linear on a 1-D tensor")
            return
        out_features = int(weight.shape[0])
        if id(weight) in self.owned:  # a weight an earlier layer holds (tied): a product with a shared matrix
            self._matmul_layer(where, shape, out_features, heads=1, broadcast=1, out=self._shape(node))
            if bias is not None and id(bias) not in self.owned:
                self._own(bias)
                self.e.params_outside_layers += int(bias.numel())
            return
        self.e.layer("linear", where, shape, self._shape(node), out_features=out_features, bias=int(bias is not None))
        self._own(weight, bias)

    def _linear_module(self, node: Any, m: Any, where: str) -> None:
        self._linear(node, node.args[0], m.weight, m.bias, where)

    def _linear_function(self, node: Any, where: str) -> None:
        weight = self._parameter(self._arg(node, 1, "weight", None))
        bias_node = self._arg(node, 2, "bias", None)
        bias = self._parameter(bias_node) if bias_node is not None else None
        if weight is None or (bias_node is not None and bias is None):
            self.e.skip(where, "linear with a computed weight")
            return
        self._linear(node, node.args[0], weight, bias, self._module_path(node) or where)

    def _addmm(self, node: Any, where: str) -> None:
        """``addmm(bias, x, weight)`` with parameters: Hugging Face's ``Conv1D`` on ``x.view(-1, F)``."""
        bias = self._parameter(self._arg(node, 0, "input", None))
        weight = self._parameter(self._arg(node, 2, "mat2", None))
        x = self._arg(node, 1, "mat1", None)
        if bias is None or weight is None or not self._is_node(x) or self._full(x) is None:
            self.e.skip(where, "addmm other than bias + input x weight parameters")
            return
        # rows are batch x tokens: find the batch-first tensor the 2-D input is a view of
        origin = x
        while (full := self._full(origin)) is not None and len(full) == 2 and (
            (origin.op == "call_method" and origin.target in ("view", "reshape", "contiguous", "flatten"))
            or (origin.op == "call_function" and origin.target in (self.torch.reshape, self.torch.flatten))
        ):
            origin = origin.args[0]
        shape = self._shape(origin) or ()
        in_features = int(weight.shape[0])
        if len(shape) == 0 or shape[-1] != in_features:
            shape = (in_features,)
        where = self._module_path(node) or where
        if id(weight) in self.owned:
            self._matmul_layer(where, shape, int(weight.shape[1]), heads=1, broadcast=1, out=None)
        else:
            self.e.layer("linear", where, shape, None, out_features=int(weight.shape[1]), bias=1)
        self._own(weight, bias)

    def _matmul_layer(self, where: str, a: Shape, out_features: int, *, heads: int, broadcast: int,
                      out: Shape | None) -> None:
        tokens = a[-2] if len(a) >= 2 else 1
        self.e.layer("matmul", where, a, out, heads=heads, tokens=tokens, in_features=a[-1],
                     out_features=out_features, broadcast=broadcast)

    def _matmul(self, node: Any, where: str) -> None:
        """``a @ b``: with a parameter ``b``, a linear layer (bias-less); else a product of activations."""
        a, b = node.args[0], node.args[1] if len(node.args) > 1 else self._arg(node, 1, "other", None)
        fa = self._full(a) if self._is_node(a) and a in self.dynamic else None
        fb = self._full(b) if self._is_node(b) else None
        if fa is None or fb is None or len(fa) < 2 or len(fb) < 2:
            self.e.skip(where, "matmul of a vector")
            return
        weight = self._parameter(b)
        if weight is not None and len(fb) == 2 and id(weight) not in self.owned:
            self.e.layer("linear", where, fa[1:], self._shape(node), out_features=fb[-1], bias=0)
            self._own(weight)
            return
        a_shape = fa[1:]
        lead_a = a_shape[:-2]
        if len(fb) == 2 or b not in self.dynamic:
            if any(d != 1 for d in fb[:-2]):
                self.e.skip(where, f"matmul broadcasting {fa} and {fb}")
                return
            broadcast = 1  # one matrix for the whole batch
        elif len(fb) == len(fa) and fb[1:-2] == lead_a:
            broadcast = 0
        else:
            self.e.skip(where, f"matmul broadcasting {fa} and {fb}")
            return
        if weight is not None:
            self._own(weight)
        self._matmul_layer(where, (prod(lead_a), *a_shape[-2:]) if lead_a else a_shape, fb[-1],
                           heads=prod(lead_a) if lead_a else 1, broadcast=broadcast, out=None)

    def _sdpa(self, node: Any, where: str) -> None:
        q, k, v = (self._arg(node, i, key, None) for i, key in enumerate(("query", "key", "value")))
        mask = self._arg(node, 3, "attn_mask", None)
        causal = bool(self._arg(node, 5, "is_causal", False))
        fq, fk, fv = (self._full(t) if self._is_node(t) else None for t in (q, k, v))
        if mask is not None:
            self.e.skip(where, "scaled_dot_product_attention with an attn_mask")
            return
        if fq is None or fk is None or fv is None or len(fq) < 3 or fq[:-2] != fk[:-2] or fk[:-1] != fv[:-1] \
                or fq[-1] != fk[-1] or fv[-1] != fq[-1]:
            self.e.skip(where, "scaled_dot_product_attention of these shapes (grouped heads, value width)")
            return
        self.e.layer("attention", where, fq[1:], self._shape(node), heads=prod(fq[1:-2]), tokens=fq[-2],
                     kv_tokens=fk[-2], head_dim=fq[-1], causal=int(causal))

    def _mha(self, node: Any, m: Any, where: str) -> None:
        """``nn.MultiheadAttention``: input projection(s), the attention, the output projection."""
        try:
            bound = inspect.signature(m.forward).bind(*node.args, **node.kwargs)
        except TypeError:
            self.e.skip(where, "MultiheadAttention called with these arguments")
            return
        bound.apply_defaults()
        a = bound.arguments
        q, k, v = a["query"], a["key"], a["value"]
        causal = bool(a.get("is_causal", False))
        problem = ("batch_first=False" if not m.batch_first else "bias_k/bias_v" if m.bias_k is not None
                   else "add_zero_attn" if m.add_zero_attn else "a key_padding_mask" if a["key_padding_mask"]
                   is not None else "an attn_mask" if a["attn_mask"] is not None and not causal else "")
        fq, fk = self._full(q), self._full(k)
        if not problem and (fq is None or fk is None or len(fq) != 3 or len(fk) != 3):
            problem = "inputs that are not batch x tokens x features"
        if problem:
            self.e.skip(where, f"MultiheadAttention with {problem}")
            return
        assert fq is not None and fk is not None
        e, heads, bias = m.embed_dim, m.num_heads, int(m.in_proj_bias is not None)
        t, s = fq[1], fk[1]
        if q is k and k is v and m._qkv_same_embed_dim:
            self.e.layer("linear", f"{where}.in_proj", (t, e), None, out_features=3 * e, bias=bias)
        elif k is v and m._qkv_same_embed_dim:
            self.e.layer("linear", f"{where}.in_proj_q", (t, e), None, out_features=e, bias=bias)
            self.e.layer("linear", f"{where}.in_proj_kv", (s, e), None, out_features=2 * e, bias=bias)
        else:
            for part, x, width in (("q", q, e), ("k", k, m.kdim), ("v", v, m.vdim)):
                rows = self._full(x)
                tokens = rows[1] if rows is not None and len(rows) == 3 else s
                self.e.layer("linear", f"{where}.in_proj_{part}", (tokens, width), None, out_features=e, bias=bias)
        d = e // heads
        if a["need_weights"]:  # the explicit product, softmax and weighted sum
            self.e.layer("matmul", f"{where}.scores", (heads, t, d), None, heads=heads, tokens=t, in_features=d,
                         out_features=s)
            self.e.layer("softmax", f"{where}.softmax", (s, heads * t, 1), None, channels_first=0)
            self.e.layer("matmul", f"{where}.weighted", (heads, t, s), None, heads=heads, tokens=t, in_features=s,
                         out_features=d)
        else:
            self.e.layer("attention", f"{where}.attention", (heads, t, d), None, heads=heads, tokens=t,
                         kv_tokens=s, head_dim=d, causal=int(causal))
        self.e.layer("linear", f"{where}.out_proj", (t, e), None, out_features=e,
                     bias=int(m.out_proj.bias is not None))

    # layer norm and embeddings
    def _layernorm(self, node: Any, x: Any, normalized: Any, where: str) -> bool:
        shape = self._shape(x)
        size = tuple(normalized) if isinstance(normalized, tuple | list) else (normalized,)
        if shape is None or len(shape) == 0 or len(size) != 1 or int(size[0]) != shape[-1]:
            self.e.skip(where, f"layer_norm over {size} of a tensor of shape {shape}")
            return False
        users = list(node.users)
        if self._permutation(x) == (0, 2, 3, 1) and len(users) == 1 and self._permutation(users[0]) == (0, 3, 1, 2):
            # ConvNeXt's LayerNorm2d: channels last, normalize, channels first again
            self.e.layer("layernorm", where, shape, None, channels_first=1)
        else:
            self.e.layer("layernorm", where, shape, self._shape(node))
        return True

    def _layernorm_module(self, node: Any, m: Any, where: str) -> None:
        self._layernorm(node, node.args[0], m.normalized_shape, where)

    def _layernorm_function(self, node: Any, where: str) -> None:
        params = [self._arg(node, i, key, None) for i, key in ((2, "weight"), (3, "bias"))]
        if self._layernorm(node, node.args[0], self._arg(node, 1, "normalized_shape", ()),
                           self._module_path(node) or where):
            self._own(*(self._parameter(p) for p in params if p is not None))

    def _embedding(self, node: Any, ids: Any, weight: Any, where: str) -> None:
        shape = self._shape(ids)
        if shape is None:
            self.e.skip(where, "embedding of unknown indices")
            return
        self.e.layer("embedding", where, shape, self._shape(node), in_features=int(weight.shape[0]),
                     out_features=int(weight.shape[1]))
        self._own(weight)

    def _embedding_module(self, node: Any, m: Any, where: str) -> None:
        self._embedding(node, node.args[0], m.weight, where)

    def _embedding_function(self, node: Any, where: str) -> None:
        weight = self._parameter(self._arg(node, 1, "weight", None))
        if weight is None or weight.dim() != 2:
            self.e.skip(where, "embedding of a computed table")
            return
        self._embedding(node, node.args[0], weight, self._module_path(node) or where)

    # pooling, reshaping, softmax, joins
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

    def _upsample(self, node: Any, mode: Any, align_corners: Any, where: str, antialias: Any = False) -> None:
        out = self._shape(node)
        if mode not in ("nearest", "bilinear") or bool(align_corners) or bool(antialias) or out is None \
                or len(out) != 3:
            self.e.skip(where, f"interpolate mode={mode!r} align_corners={align_corners}")
            return
        self._emit("upsample", node, where, out_h=out[1], out_w=out[2], interpolation=mode)

    def _mean(self, node: Any, dim: Any, where: str) -> None:
        dims = tuple(sorted(int(d) % 4 for d in (dim if isinstance(dim, tuple | list) else (dim,)))) if dim else ()
        src = self._shape(self._input(node))
        if dims == (2, 3) and src is not None and len(src) == 3:
            self._emit("adaptive_avgpool2d", node, where, out_h=1, out_w=1)
        else:
            self.e.skip(where, f"mean over dims {dim}")

    def _flatten(self, node: Any, where: str, start_dim: int = 1) -> None:
        source = self._input(node)
        src = self._shape(source)
        if start_dim == 1 and src is not None and len(src) == 3 and source not in self.tokens:
            self._emit("flatten", node, where)  # an image to a vector (the zoo counts the copy)
        # anything else is a view

    def _softmax(self, node: Any, dim: Any, where: str) -> None:
        source = self._input(node)
        src = self._shape(source)
        rank = 1 + (len(src) if src is not None else 0)
        if dim is None or src is None or rank < 2:
            self.e.skip(where, f"softmax over dim {dim}")
            return
        axis = int(dim) % rank
        if axis == 1 and (rank == 2 or (rank == 4 and source not in self.tokens)):
            self._emit("softmax", node, where)  # over channels (or a vector's features)
        elif axis == rank - 1:
            shape = token_chw(src)  # rows of the last dimension's contiguous values
            self.e.layer("softmax", where, shape, shape, channels_first=0)
        else:
            self.e.skip(where, f"softmax over dim {dim}")

    def _shuffle(self, node: Any, groups: int, where: str) -> None:
        self._emit("channel_shuffle", node, where, groups=int(groups))

    def _cat(self, node: Any, tensors: Sequence[Any], dim: int, where: str) -> None:
        shapes = [self._shape(t) for t in tensors]
        out = self._chw(node)
        if out is not None and node in self.tokens and all(s is not None and len(s) > 0 for s in shapes):
            self.e.layer("concat", where, out, out, inputs=len(shapes))  # token tensors, along any dimension
            return
        if out is not None and len(out) == 1 and all(s is not None and len(s) == 1 for s in shapes):
            self.e.layer("concat", where, out, out, inputs=len(shapes))  # vectors, along their features
            return
        if any(s is None or len(s) != 3 for s in shapes) or int(dim) % 4 != 1 or out is None:
            self.e.skip(where, f"cat along dim {dim}")
            return
        self.e.layer("concat", where, out, out, inputs=len(shapes))

    def _operand(self, value: Any, rank: int) -> Shape | None:
        """An operand's shape as broadcast against a batch-first output of ``rank`` dimensions, without the
        batch; a scalar is ``(1,)``."""
        if isinstance(value, int | float) and not isinstance(value, bool):
            return (1,)
        if not self._is_node(value):
            return None
        full = self._full(value)
        if full is None:
            return None
        if value not in self.dynamic:  # parameters and constants broadcast from the right
            full = (1,) * (rank - len(full)) + full
        if len(full) != rank:
            return None
        return full[1:]

    def _binary(self, kind: str, node: Any, where: str) -> None:
        out = self._shape(node)
        if out is None:
            return  # arithmetic on sizes
        operands = [a for a in (*node.args, *node.kwargs.values()) if not isinstance(a, bool)]
        shapes = [self._operand(a, len(out) + 1) for a in operands]
        out_chw = self._chw(node)
        if len(operands) != 2 or any(s is None for s in shapes) or out_chw is None:
            self.e.skip(where, f"{kind} of these operands")
            return
        parts: list[Shape] = []
        for s in shapes:
            assert s is not None
            if s == out:
                parts.append(out_chw)
            elif prod(s) == 1:
                parts.append((1,))  # a scalar
            elif len(out) == 3 and node not in self.tokens and s == (out[0], 1, 1):
                parts.append((out[0],))  # per channel
            elif s[-1] == out[-1] and prod(s) == out[-1] and (len(out) != 3 or node in self.tokens):
                parts.append((out[-1],))  # per feature of a token tensor
            else:
                parts.append(s if len(s) in (1, 3) else token_chw(s))
        self.e.elementwise(kind, where, out_chw, parts, kind)

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
            return  # heads and the like moved back together: a view, as in the zoo
        per_group, groups, h, w = shape  # after the transpose: N x C/g x g x H x W
        self.e.layer("channel_shuffle", where, (groups * per_group, h, w), (groups * per_group, h, w), groups=groups)
