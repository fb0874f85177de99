"""What the PyTorch and ONNX importers share: turning recognized operations into checked layers."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Any

from ..errors import InputError
from ..layers import Architecture, Layer, chw

__all__ = ["Emitter", "Shape", "chw", "first_line"]

# A tensor's shape without its batch dimension: (C, H, W) for images, (F,) for vectors.
Shape = tuple[int, ...]


def first_line(e: BaseException) -> str:
    """An exception's first line (its type's name when it says nothing)."""
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


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
        self._seen: Counter[str] = Counter()

    def _unique(self, name: str) -> str:
        self._seen[name] += 1
        count = self._seen[name]
        return name if count == 1 else f"{name}#{count}"

    def layer(
        self, type_name: str, name: str, in_shape: Shape, out_shape: Shape | None = None, **fields: Any
    ) -> Layer:
        """Append one layer reading ``in_shape``; when ``out_shape`` is given, check ours equals it."""
        if type_name == "linear":
            if len(in_shape) != 1:
                raise InputError(f"{self.source}: {name}: linear on a {len(in_shape) + 1}-D input is not supported")
            fields = {"in_features": in_shape[0], **fields}
        else:
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
            if len(theirs) not in (1, 3) or chw(ours) != chw(theirs):
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
        ``C x 1 x 1`` (squeeze-and-excite's broadcast); anything else is skipped."""
        full = chw(out)
        parts = [chw(s) for s in shapes]
        broadcast = any(p != full for p in parts)
        if broadcast and (len(parts) != 2 or not all(p in (full, (full[0], 1, 1)) for p in parts)):
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
        if self.unknown:
            meta["skipped"] = "; ".join(self.unknown)
        return Architecture(name, self.layers, meta)


def _text(shape: Sequence[int]) -> str:
    return "x".join(str(d) for d in shape)
