"""What the PyTorch and ONNX importers share: turning recognized operations into checked layers."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Hashable, Mapping, Sequence
from typing import Any, TypeVar

import numpy as np
import numpy.typing as npt

from ..errors import InputError
from ..layers import Architecture, Layer, chw

__all__ = ["Emitter", "Shape", "chw", "find_gelus", "first_line", "prod", "token_chw"]

# A tensor's shape without its batch dimension: (C, H, W) for images, (F,) for vectors, (..., F) for token tensors.
Shape = tuple[int, ...]
K = TypeVar("K", bound=Hashable)

# Layer types whose fields are not an image's C x H x W: the caller states tokens and features.
_TOKEN_TYPES = frozenset({"linear", "layernorm", "matmul", "attention", "embedding"})


def first_line(e: BaseException) -> str:
    """An exception's first line (its type's name when it says nothing)."""
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


def prod(dims: Sequence[int]) -> int:
    return math.prod(int(d) for d in dims)


def token_chw(shape: Sequence[int]) -> Shape:
    """An element-wise layer's ``C x H x W`` on a token tensor ``(..., F)``: ``F x tokens x 1`` (the zoo's way)."""
    return (int(shape[-1]), prod(shape[:-1]), 1)


def layer_chw(shape: Shape | None, is_tokens: bool) -> Shape | None:
    """The shape an image layer reads from a value of ``shape`` (no batch): ``(C, H, W)``, ``(F,)``, or
    ``F x tokens x 1`` for a token tensor (``is_tokens``, or any other rank); None when unknown or scalar."""
    if shape is None or len(shape) == 0:
        return None
    if len(shape) == 1 or (len(shape) == 3 and not is_tokens):
        return shape
    return token_chw(shape)


def _same_shape(ours: Sequence[int], theirs: Sequence[int]) -> bool:
    if tuple(ours) == tuple(theirs):
        return True
    if len(ours) in (1, 3) and len(theirs) in (1, 3) and chw(ours) == chw(theirs):
        return True
    # a token tensor's positions may be several dimensions in the source, one (tokens) in the layer
    return len(ours) > 0 and len(theirs) > 0 and prod(ours) == prod(theirs) and ours[-1] == theirs[-1]


class Emitter:
    """Collects layers in execution order, with unique names and shape checks, and what was not recognized.

    Parameters
    ----------
    source
        What is being imported, for messages (a file name or a module's class name).
    batch, dtype
        Applied to every layer.
    """

    def __init__(self, source: str, batch: int, dtype: str) -> None:
        self.source = source
        self.batch = batch
        self.dtype = dtype
        self.layers: list[Layer] = []
        self.unknown: list[str] = []
        # parameters that are operands but no layer's own (ViT's class token): the architecture's meta
        self.params_outside_layers = 0
        self._seen: Counter[str] = Counter()

    def _unique(self, name: str) -> str:
        self._seen[name] += 1
        count = self._seen[name]
        return name if count == 1 else f"{name}#{count}"

    def layer(
        self, type_name: str, name: str, in_shape: Shape, out_shape: Shape | None = None, **fields: Any
    ) -> Layer:
        """Append one layer reading ``in_shape``; when ``out_shape`` is given, check ours equals it.

        ``in_shape`` is ``(C, H, W)`` or ``(F,)`` for image layers; for linear and layernorm ``(..., F)``
        (the leading dimensions are the tokens), for embedding the indices' shape; matmul and attention take
        all their fields as keywords."""
        if type_name in ("linear", "layernorm"):
            if len(in_shape) == 0:
                raise InputError(f"{self.source}: {name}: {type_name} on a 1-D input is not supported")
            fields = {"in_features": int(in_shape[-1]), "tokens": prod(in_shape[:-1]), **fields}
        elif type_name == "embedding":
            fields = {"tokens": prod(in_shape), **fields}
        elif type_name not in _TOKEN_TYPES:
            c, h, w = chw(in_shape)
            fields = {"in_channels": c, "in_h": h, "in_w": w, **fields}
        try:
            layer = Layer(type_name, name=self._unique(name), batch=self.batch, dtype=self.dtype, **fields)
        except InputError as e:
            field_name = f"{e.column}: " if e.column else ""
            raise InputError(f"{self.source}: {name} ({type_name}): {field_name}{e.message}") from None
        if out_shape is not None:
            ours = layer.out_shape[1:]
            theirs = tuple(int(d) for d in out_shape)
            if not _same_shape(ours, theirs):
                raise InputError(
                    f"{self.source}: {name} ({type_name}): the source gives output shape {_text(theirs)}, "
                    f"neuralpower computes {_text(ours)}"
                )
        self.layers.append(layer)
        return layer

    def reading(
        self, type_name: str, where: str, in_shape: Shape | None, out_shape: Shape | None, what: str, **fields: Any
    ) -> None:
        """:meth:`layer`, or :meth:`skip` when the input is not an image or a vector (``what`` names it)."""
        if in_shape is None or len(in_shape) not in (1, 3):
            rank = "an unknown" if in_shape is None else f"a {len(in_shape) + 1}-D"
            self.skip(where, f"{what} on {rank} tensor")
            return
        self.layer(type_name, where, in_shape, out_shape, **fields)

    def elementwise(self, kind: str, where: str, out: Shape, shapes: Sequence[Shape], what: str) -> None:
        """An ``add`` or ``mul`` of ``shapes`` into ``out``: all the same shape, or two of which one is
        ``C x 1 x 1`` (squeeze-and-excite's broadcast, a per-feature vector on a token tensor) or a scalar
        ``(1,)``; anything else is skipped. Shapes are as :meth:`layer` reads them (``C x H x W`` or ``(F,)``)."""
        full = chw(out)
        parts = [chw(s) for s in shapes]
        broadcast = any(p != full for p in parts)
        allowed = (full, (full[0], 1, 1), (1, 1, 1))
        if broadcast and (len(parts) != 2 or not all(p in allowed for p in parts)):
            self.skip(where, f"{what} broadcasting {' and '.join(map(str, shapes))}")
            return
        self.layer(kind, where, out, out, inputs=len(parts), broadcast=int(broadcast))

    def skip(self, where: str, what: str) -> None:
        """Record an operation neuralpower has no layer type for."""
        self.unknown.append(f"{where} ({what})")

    def build(self, name: str, allow_unknown: bool, hint: str) -> Architecture:
        """The architecture; an error listing what was not recognized unless ``allow_unknown``."""
        if self.unknown and not allow_unknown:
            more = len(self.unknown) - 6
            shown = ", ".join(self.unknown[:6]) + (f", and {more} more" if more > 0 else "")
            raise InputError(f"{self.source}: not supported: {shown} ({hint} skips them)")
        if not self.layers:
            raise InputError(f"{self.source}: no operation neuralpower models was found")
        meta: dict[str, Any] = {}
        if self.params_outside_layers:
            meta["params_outside_layers"] = self.params_outside_layers
        if self.unknown:
            meta["skipped"] = "; ".join(self.unknown)
        return Architecture(name, self.layers, meta)


def _text(shape: Sequence[int]) -> str:
    return "x".join(str(d) for d in shape)


# -- GELU written out of element-wise operations --------------------------------------------------------

_SAMPLE = np.linspace(-3.0, 3.0, 13)
_ERF = np.vectorize(math.erf, otypes=[np.float64])
_GELU = (
    0.5 * _SAMPLE * (1.0 + _ERF(_SAMPLE / math.sqrt(2.0))),  # exact (erf)
    0.5 * _SAMPLE * (1.0 + np.tanh(math.sqrt(2.0 / math.pi) * (_SAMPLE + 0.044715 * _SAMPLE**3))),  # tanh form
)
# the element-wise operations a written-out GELU is made of, by the names find_gelus takes
_UNARY: dict[str, Callable[[Any], Any]] = {"neg": np.negative, "tanh": np.tanh, "erf": _ERF, "sqrt": np.sqrt}
_BINARY: dict[str, Callable[[Any, Any], Any]] = {
    "add": np.add, "sub": np.subtract, "mul": np.multiply, "div": np.divide, "pow": np.power,
}


def _apply(op: str, args: Sequence[Any]) -> npt.NDArray[np.float64] | None:
    with np.errstate(all="ignore"):
        if op in _UNARY and len(args) == 1:
            return np.asarray(_UNARY[op](args[0]), dtype=np.float64)
        if op in _BINARY and len(args) == 2:
            return np.asarray(_BINARY[op](args[0], args[1]), dtype=np.float64)
    return None


def find_gelus(
    order: Sequence[K], kind: Mapping[K, str], operands: Mapping[K, Sequence[K | float]]
) -> tuple[dict[K, tuple[K, int]], set[K]]:
    """GELUs written out of element-wise operations, as ``0.5 * x * (1 + erf(x / sqrt(2)))`` or the tanh
    form ``0.5 * x * (1 + tanh(sqrt(2 / pi) * (x + 0.044715 * x ** 3)))``, in any arrangement.

    The graph is given by its values: ``order`` lists them in execution order, ``kind`` names the operation
    of each element-wise one (add, sub, mul, div, pow, neg, tanh, erf, sqrt) and ``operands`` its operands
    (values, or constants as floats). Around every ``tanh`` and ``erf``, each candidate input ``x`` (a value it
    depends on through element-wise operations) is tried: the operations after ``x`` that depend only on it are
    evaluated on sample points and compared with both GELUs.

    Returns
    -------
    gelus, inner
        ``{output: (x, approximate)}`` (approximate 1: the tanh form) and the values inside them, which do no
        work of their own.
    """
    pos = {k: i for i, k in enumerate(order)}
    gelus: dict[K, tuple[K, int]] = {}
    inner: set[K] = set()
    for c in order:
        if kind.get(c) not in ("tanh", "erf") or c in inner:
            continue
        candidates: list[K] = []
        frontier, seen = [c], {c}
        for _ in range(6):  # a GELU's argument is a few operations deep
            step: list[K] = []
            for n in frontier:
                for o in operands.get(n, ()):
                    if not isinstance(o, float) and o not in seen and o in pos:
                        seen.add(o)
                        candidates.append(o)
                        step.append(o)
            frontier = [n for n in step if n in kind]
        for x in candidates:
            match = _gelu_from(x, c, order, pos, kind, operands)
            if match is not None:
                out, approximate, cone = match
                gelus[out] = (x, approximate)
                inner.update(cone)
                break
    return gelus, inner


def _gelu_from(
    x: K, c: K, order: Sequence[K], pos: Mapping[K, int], kind: Mapping[K, str],
    operands: Mapping[K, Sequence[K | float]],
) -> tuple[K, int, set[K]] | None:
    if pos[c] - pos[x] > 40:
        return None
    values: dict[K, npt.NDArray[np.float64]] = {x: _SAMPLE}
    for k in order[pos[x] + 1: pos[c] + 12]:
        op = kind.get(k)
        args = operands.get(k, ())
        if op is None or any(not isinstance(a, float) and a not in values for a in args):
            continue
        if all(isinstance(a, float) for a in args):
            continue  # a constant
        result = _apply(op, [a if isinstance(a, float) else values[a] for a in args])
        if result is None or result.shape != _SAMPLE.shape:
            continue
        values[k] = result
        if pos[k] < pos[c] or c not in values or not np.all(np.isfinite(result)):
            continue
        for approximate, reference in enumerate(_GELU):
            if np.allclose(result, reference, rtol=1e-5, atol=1e-6):
                cone, todo = set(), [k]
                while todo:  # what the output is computed from, back to x
                    n = todo.pop()
                    if n in cone or n == x:
                        continue
                    cone.add(n)
                    todo.extend(a for a in operands.get(n, ()) if not isinstance(a, float) and a in values)
                cone.discard(k)
                return k, approximate, cone
    return None
