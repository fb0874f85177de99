"""A small graph builder: write a network the way its PyTorch ``forward`` reads, get an Architecture.

Tensors are shapes: images and vectors (:class:`T`) and token tensors (:class:`S`); every builder call
appends one layer, stating its own input shape, and returns the output's shape, so branches and joins
(ResNet, Inception, DenseNet, a transformer's residuals) are plain code.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, overload

from ..layers import Architecture, Layer

__all__ = ["Builder", "S", "T"]


@dataclass(frozen=True)
class T:
    """A tensor's shape without its batch: ``c`` channels of ``h`` x ``w`` (a vector: ``h = w = 1``)."""

    c: int
    h: int = 1
    w: int = 1


@dataclass(frozen=True)
class S:
    """A token tensor's shape without its batch: ``tokens`` rows of ``features`` (``[batch, tokens, features]``).

    Element-wise layers (activations, ``add``, ``mul``) on it are written ``features x tokens x 1``.
    """

    tokens: int
    features: int


class Builder:
    """Appends layers at one batch size and dtype.

    Parameters
    ----------
    batch, dtype
        Applied to every layer.
    """

    def __init__(self, batch: int = 1, dtype: str = "fp32") -> None:
        self.batch = batch
        self.dtype = dtype
        self.layers: list[Layer] = []
        self.params_outside_layers = 0
        self.params_shared = 0

    def parameter(self, count: int) -> None:
        """Count parameters that are operands of a layer but no layer's own (ViT's class token and position
        embedding, ConvNeXt's layer scale): the architecture's ``params_outside_layers``."""
        self.params_outside_layers += count

    def share(self, count: int) -> None:
        """Count parameters that two layers hold (a language model's head tied to its token embedding): the
        architecture's ``params_shared``, counted once in its total."""
        self.params_shared += count

    def _add(self, type_name: str, name: str, **fields: Any) -> Layer:
        layer = Layer(type_name, name=name, batch=self.batch, dtype=self.dtype, **fields)
        self.layers.append(layer)
        return layer

    def _spatial(self, type_name: str, x: T, name: str, **fields: Any) -> T:
        layer = self._add(type_name, name, in_channels=x.c, in_h=x.h, in_w=x.w, **fields)
        shape = layer.out_shape
        return T(shape[1]) if len(shape) == 2 else T(shape[1], shape[2], shape[3])

    def conv(
        self,
        x: T,
        out: int,
        kernel: int | tuple[int, int],
        stride: int | tuple[int, int] = 1,
        padding: int | tuple[int, int] = 0,
        *,
        groups: int = 1,
        dilation: int | tuple[int, int] = 1,
        bias: bool = False,
        name: str = "",
    ) -> T:
        return self._spatial(
            "conv2d", x, name, out_channels=out, kernel=kernel, stride=stride, padding=padding,
            groups=groups, dilation=dilation, bias=int(bias),
        )

    def bn(self, x: T, name: str = "") -> T:
        return self._spatial("batchnorm2d", x, name)

    @overload
    def act(self, x: T, kind: str, name: str = "", *, approximate: bool = False) -> T: ...
    @overload
    def act(self, x: S, kind: str, name: str = "", *, approximate: bool = False) -> S: ...

    def act(self, x: T | S, kind: str, name: str = "", *, approximate: bool = False) -> T | S:
        """An activation: relu, relu6, sigmoid, hardsigmoid, silu, hardswish or gelu (``approximate``: the tanh
        form), on an image or a token tensor."""
        fields = {"approximate": int(approximate)} if kind == "gelu" else {}
        if isinstance(x, S):
            self._spatial(kind, T(x.features, x.tokens), name, **fields)
            return x
        return self._spatial(kind, x, name, **fields)

    def pool(
        self,
        kind: str,
        x: T,
        kernel: int | tuple[int, int],
        stride: int | tuple[int, int] | None = None,
        padding: int | tuple[int, int] = 0,
        *,
        ceil_mode: bool = False,
        name: str = "",
    ) -> T:
        """A ``maxpool2d`` or ``avgpool2d`` layer; the stride defaults to the kernel, as in PyTorch."""
        stride = kernel if stride is None else stride
        return self._spatial(kind, x, name, kernel=kernel, stride=stride, padding=padding, ceil_mode=int(ceil_mode))

    def maxpool(self, x: T, *args: Any, **kwargs: Any) -> T:
        """``pool("maxpool2d", ...)``."""
        return self.pool("maxpool2d", x, *args, **kwargs)

    def avgpool(self, x: T, *args: Any, **kwargs: Any) -> T:
        """``pool("avgpool2d", ...)``."""
        return self.pool("avgpool2d", x, *args, **kwargs)

    def adaptive_avgpool(self, x: T, out_h: int = 1, out_w: int | None = None, name: str = "") -> T:
        return self._spatial("adaptive_avgpool2d", x, name, out_h=out_h, out_w=out_h if out_w is None else out_w)

    def flatten(self, x: T, name: str = "") -> T:
        return self._spatial("flatten", x, name)

    @overload
    def linear(self, x: T, out: int, *, bias: bool = True, name: str = "") -> T: ...
    @overload
    def linear(self, x: S, out: int, *, bias: bool = True, name: str = "") -> S: ...

    def linear(self, x: T | S, out: int, *, bias: bool = True, name: str = "") -> T | S:
        """A linear layer on a vector or on every token of a token tensor."""
        if isinstance(x, S):
            self._add("linear", name, tokens=x.tokens, in_features=x.features, out_features=out, bias=int(bias))
            return S(x.tokens, out)
        if x.h != 1 or x.w != 1:
            raise ValueError(f"linear needs a vector input, got {x}: flatten first")
        self._add("linear", name, in_features=x.c, out_features=out, bias=int(bias))
        return T(out)

    @overload
    def add(self, x: T, *others: T, name: str = "") -> T: ...
    @overload
    def add(self, x: S, *others: S, name: str = "") -> S: ...

    def add(self, x: Any, *others: Any, name: str = "") -> Any:
        """Element-wise sum of same-shaped tensors (images or token tensors)."""
        self._check_same("add", x, others)
        if isinstance(x, S):
            self._spatial("add", T(x.features, x.tokens), name, inputs=1 + len(others))
            return x
        return self._spatial("add", x, name, inputs=1 + len(others))

    # -- token tensors -----------------------------------------------------------------------------
    def embedding(self, tokens: int, vocabulary: int, features: int, name: str = "") -> S:
        """A lookup of ``tokens`` rows of a ``vocabulary x features`` table."""
        self._add("embedding", name, tokens=tokens, in_features=vocabulary, out_features=features)
        return S(tokens, features)

    @overload
    def layernorm(self, x: T, name: str = "") -> T: ...
    @overload
    def layernorm(self, x: S, name: str = "") -> S: ...

    def layernorm(self, x: T | S, name: str = "") -> T | S:
        """``nn.LayerNorm`` over a token tensor's features; on an image, ConvNeXt's channels-first layernorm over
        its channels at every position."""
        if isinstance(x, S):
            self._add("layernorm", name, tokens=x.tokens, in_features=x.features)
        else:
            self._add("layernorm", name, tokens=x.h * x.w, in_features=x.c, channels_first=1)
        return x

    def attention(self, q: S, heads: int, kv_tokens: int | None = None, *, causal: bool = False, name: str = "",
                  kv_heads: int | None = None) -> S:
        """Scaled dot-product attention of ``q``'s tokens over ``kv_tokens`` keys (default: as many), its features
        split into ``heads`` heads, keys and values in ``kv_heads`` heads (grouped-query attention; default:
        ``heads``); the output has ``q``'s shape."""
        if q.features % heads:
            raise ValueError(f"{heads} heads do not divide {q.features} features")
        grouped = {} if kv_heads is None or kv_heads == heads else {"kv_heads": kv_heads}
        self._add("attention", name, heads=heads, tokens=q.tokens, kv_tokens=kv_tokens or q.tokens,
                  head_dim=q.features // heads, causal=int(causal), **grouped)
        return q

    def matmul(self, a: S, out: int, *, shared: bool = False, heads: int = 1, name: str = "") -> S:
        """``a @ B`` for a second activation ``B`` of ``a.features x out`` (per batch and head; ``shared``: one matrix
        for all, such as a tied weight)."""
        self._add("matmul", name, heads=heads, tokens=a.tokens, in_features=a.features, out_features=out,
                  broadcast=int(shared))
        return S(a.tokens, out)

    def tokens_of(self, x: T) -> S:
        """An image's positions as tokens (``flatten(2).transpose(1, 2)``: a view, no layer)."""
        return S(x.h * x.w, x.c)

    def concat_tokens(self, *xs: S, name: str = "") -> S:
        """Concatenation along the tokens (ViT's class token): a copy."""
        if not xs or any(x.features != xs[0].features for x in xs):
            raise ValueError(f"concat_tokens needs token tensors of one width, got {xs}")
        total = sum(x.tokens for x in xs)
        self._spatial("concat", T(xs[0].features, total), name, inputs=len(xs))
        return S(total, xs[0].features)

    def select_token(self, x: S) -> T:
        """One token as a vector (ViT's ``x[:, 0]``: a view, no layer)."""
        return T(x.features)

    def mul(self, x: T, *others: T, name: str = "") -> T:
        """Element-wise product; ``others`` may all be ``c x 1 x 1`` (broadcast, as in squeeze-and-excite)."""
        broadcast = bool(others) and all(o == T(x.c) for o in others) and (x.h, x.w) != (1, 1)
        if not broadcast:
            self._check_same("mul", x, others)
        return self._spatial("mul", x, name, inputs=1 + len(others), broadcast=int(broadcast))

    def concat(self, *xs: T, name: str = "") -> T:
        """Concatenation along channels (of one tensor: a copy, as ``torch.cat`` makes)."""
        if not xs or any((x.h, x.w) != (xs[0].h, xs[0].w) for x in xs):
            raise ValueError(f"concat needs tensors of one spatial size, got {xs}")
        return self._spatial("concat", T(sum(x.c for x in xs), xs[0].h, xs[0].w), name, inputs=len(xs))

    def channel_shuffle(self, x: T, groups: int = 2, name: str = "") -> T:
        """ShuffleNet's channel shuffle (a copy that interleaves ``groups`` groups of channels)."""
        return self._spatial("channel_shuffle", x, name, groups=groups)

    def softmax(self, x: T, name: str = "") -> T:
        return self._spatial("softmax", x, name)

    @staticmethod
    def _check_same(op: str, x: T | S, others: tuple[T | S, ...]) -> None:
        if not others or any(o != x for o in others):
            raise ValueError(f"{op} needs tensors of one shape, got {x} and {others}")

    def build(self, name: str, **meta: Any) -> Architecture:
        if self.params_outside_layers:
            meta = {"params_outside_layers": self.params_outside_layers, **meta}
        if self.params_shared:
            meta = {"params_shared": self.params_shared, **meta}
        return Architecture(name, self.layers, meta)
