"""A zoo of real networks built from neuralpower's layers, at any batch size, resolution and dtype.

>>> from neuralpower import zoo
>>> zoo.build("resnet50", batch=8).totals()["params"]
25557032
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from ..errors import InputError
from ..layers import Architecture
from .builder import Builder, T

__all__ = ["ZooEntry", "build", "entries", "names"]


@dataclass(frozen=True)
class ZooEntry:
    """A network of the zoo: how to build it and what it expects.

    ``forward(builder, x)`` appends the network's layers for an input of shape ``x`` (no batch) and
    returns the output's shape.
    """

    name: str
    forward: Callable[[Builder, T], T]
    image_size: int
    description: str
    source: str
    in_channels: int = 3


_REGISTRY: dict[str, ZooEntry] = {}


def register(
    name: str, *, image_size: int, description: str, source: str, in_channels: int = 3
) -> Callable[[Callable[[Builder, T], T]], Callable[[Builder, T], T]]:
    """Decorator adding a network's forward function to the zoo."""

    def add(forward: Callable[[Builder, T], T]) -> Callable[[Builder, T], T]:
        _REGISTRY[name] = ZooEntry(name, forward, image_size, description, source, in_channels)
        return forward

    return add


def names() -> list[str]:
    """The zoo's network names, in a stable order."""
    _load()
    return list(_REGISTRY)


def entries() -> list[ZooEntry]:
    _load()
    return list(_REGISTRY.values())


def build(name: str, batch: int = 1, image_size: int | None = None, dtype: str = "fp32") -> Architecture:
    """Build a zoo network.

    Parameters
    ----------
    name
        A name from :func:`names`.
    batch
        Batch size.
    image_size
        Input height and width (default: the resolution the network was published at).
    dtype
        fp32, fp16 or bf16.

    Raises
    ------
    InputError
        An unknown name, or a batch or resolution the network cannot take.
    """
    _load()
    entry = _REGISTRY.get(name.strip().lower())
    if entry is None:
        raise InputError(f"unknown zoo network {name!r} (known: {', '.join(_REGISTRY)})")
    size = entry.image_size if image_size is None else image_size
    b = Builder(batch=batch, dtype=dtype)
    try:
        entry.forward(b, T(entry.in_channels, size, size))
    except InputError as e:
        raise InputError(
            f"{entry.name} cannot be built at batch {batch}, image size {size}, {dtype}: {e.message}"
            + (f" (in field {e.column})" if e.column else "")
        ) from None
    return b.build(entry.name)


def _load() -> None:
    if not _REGISTRY:
        from . import networks  # noqa: F401  (registers the networks)
