"""A zoo of real networks built from neuralpower's layers, at any batch size, resolution and dtype.

>>> from neuralpower import zoo
>>> zoo.build("resnet50", batch=8).totals()["params"]
25557032
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..errors import InputError
from ..layers import Architecture
from .builder import Builder, S, T

__all__ = ["ZooEntry", "applicable_sizes", "build", "entries", "get", "names"]


@dataclass(frozen=True)
class ZooEntry:
    """A network of the zoo: how to build it and what it expects.

    ``forward(builder, x)`` appends the network's layers for an input of shape ``x`` (no batch) and
    returns the output's shape: an image ``T`` for image networks, the token ids ``S(seq_len, 1)`` for
    language models (those with a ``seq_len``, the default sequence length; their ``image_size`` is 0).
    """

    name: str
    forward: Callable[[Builder, Any], Any]
    image_size: int
    description: str
    source: str
    in_channels: int = 3
    seq_len: int | None = None


_REGISTRY: dict[str, ZooEntry] = {}
_LOADED = False


def register(
    name: str, *, image_size: int = 0, description: str, source: str, in_channels: int = 3, seq_len: int | None = None
) -> Callable[[Callable[[Builder, Any], Any]], Callable[[Builder, Any], Any]]:
    """Decorator adding a network's forward function to the zoo."""

    def add(forward: Callable[[Builder, Any], Any]) -> Callable[[Builder, Any], Any]:
        _REGISTRY[name] = ZooEntry(name, forward, image_size, description, source, in_channels, seq_len)
        return forward

    return add


def names() -> list[str]:
    """The zoo's network names, in a stable order."""
    _load()
    return list(_REGISTRY)


def entries() -> list[ZooEntry]:
    _load()
    return list(_REGISTRY.values())


def get(name: str) -> ZooEntry:
    """The zoo entry of a name, or an :class:`InputError` listing the known ones."""
    _load()
    entry = _REGISTRY.get(name.strip().lower())
    if entry is None:
        raise InputError(f"unknown zoo network {name!r} (known: {', '.join(_REGISTRY)})")
    return entry


def applicable_sizes(name: str, image_size: int | None, seq_len: int | None) -> tuple[int | None, int | None]:
    """``(image_size, seq_len)`` with the one that does not apply to zoo network ``name`` dropped (for verbs that
    take a list mixing image networks and language models)."""
    return (None, seq_len) if get(name).seq_len is not None else (image_size, None)


def build(
    name: str, batch: int = 1, image_size: int | None = None, dtype: str = "fp32", seq_len: int | None = None
) -> Architecture:
    """Build a zoo network.

    Parameters
    ----------
    name
        A name from :func:`names`.
    batch
        Batch size.
    image_size
        Input height and width of an image network (default: the resolution the network was published at).
    dtype
        fp32, fp16, bf16 or fp8 (every layer in it).
    seq_len
        Sequence length of a language model (default: its entry's ``seq_len``).

    Raises
    ------
    InputError
        An unknown name, a batch, resolution or sequence length the network cannot take, or an image size
        given to a language model (a sequence length to an image network).
    """
    entry = get(name)
    b = Builder(batch=batch, dtype=dtype)
    if entry.seq_len is not None:
        if image_size is not None:
            raise InputError(f"{entry.name} is a language model: give it a sequence length, not an image size")
        length = entry.seq_len if seq_len is None else seq_len
        x: T | S = S(length, 1)
        what, meta = f"sequence length {length}", {"seq_len": length}
    else:
        if seq_len is not None:
            raise InputError(f"{entry.name} is an image network: give it an image size, not a sequence length")
        size = entry.image_size if image_size is None else image_size
        x = T(entry.in_channels, size, size)
        what, meta = f"image size {size}", {}
    try:
        entry.forward(b, x)
    except InputError as e:
        raise InputError(
            f"{entry.name} cannot be built at batch {batch}, {what}, {dtype}: {e.message}"
            + (f" (in field {e.column})" if e.column else "")
        ) from None
    except ValueError as e:  # a shape the network's structure cannot take (heads that do not divide, ...)
        raise InputError(f"{entry.name} cannot be built at batch {batch}, {what}, {dtype}: {e}") from None
    return b.build(entry.name, **meta)


def _load() -> None:
    global _LOADED
    if not _LOADED:  # (a module of the zoo imported on its own has registered its networks only)
        from . import hf_eager, networks, transformers  # noqa: F401  (register the networks)

        if not any(name in _REGISTRY for name in hf_eager.NEUSIGHT_MODELS.values()):
            hf_eager.register_all()  # after the others: the zoo's order
        _LOADED = True
