"""A small graph builder: write a network the way its PyTorch ``forward`` reads, get an Architecture.

Tensors are shapes (:class:`T`); every builder call appends one layer, stating its own input shape,
and returns the output's shape, so branches and joins (ResNet, Inception, DenseNet) are plain code.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..layers import Architecture, Layer

__all__ = ["Builder", "T"]


@dataclass(frozen=True)
class T:
    """A tensor's shape without its batch: ``c`` channels of ``h`` x ``w`` (a vector: ``h = w = 1``)."""

    c: int
    h: int = 1
    w: int = 1


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

    def act(self, x: T, kind: str, name: str = "") -> T:
        """An activation: relu, relu6, sigmoid, hardsigmoid, silu, hardswish or gelu."""
        return self._spatial(kind, x, name)

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

    def linear(self, x: T, out: int, *, bias: bool = True, name: str = "") -> T:
        if x.h != 1 or x.w != 1:
            raise ValueError(f"linear needs a vector input, got {x}: flatten first")
        self._add("linear", name, in_features=x.c, out_features=out, bias=int(bias))
        return T(out)

    def add(self, x: T, *others: T, name: str = "") -> T:
        """Element-wise sum of same-shaped tensors."""
        self._check_same("add", x, others)
        return self._spatial("add", x, name, inputs=1 + len(others))

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
    def _check_same(op: str, x: T, others: tuple[T, ...]) -> None:
        if not others or any(o != x for o in others):
            raise ValueError(f"{op} needs tensors of one shape, got {x} and {others}")

    def build(self, name: str, **meta: Any) -> Architecture:
        return Architecture(name, self.layers, meta)
