"""Width steering (FastDeepIoT): nearby channel counts at which a layer's predicted runtime or energy dips.

A kernel's runtime is not smooth in its channel counts: a count that is a multiple of 8 or 16 often runs
faster than one channel fewer. A model tree captures that (``neuralpower fit --method tree``). For every
convolution and linear layer whose output width can change on its own, :func:`tune` tries every width
within ``max_change`` of the current one, predicts the cost of the layers that width touches (the layer, the
batchnorm, activations, pools and depthwise convolutions after it, and the next convolution or linear layer
that reads it), finds the **local minima** of that cost (the widest width of a plateau that costs less than
one channel more) and suggests the one nearest the current width among those that cost less than it. A
smooth model (a polynomial) has no local minimum inside the window: then nothing is suggested.

Widths stay consistent: a width is one tensor's channel count, changed in its producer and in every layer
that reads it. A layer list states no graph, so a width is tuned only where the list is a plain chain: the
layers after the producer read its output (their input shape is its output shape) up to the consumer. A width
that feeds ``add``, ``mul``, ``concat`` or ``channel_shuffle`` (tied to another branch), a grouped convolution,
or the network's output is kept and reported with the reason.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from .errors import InputError
from .layers import FIELD_INDEX, LAYER_TYPES, Architecture, Layer, chw, prepare_rows

__all__ = ["Slot", "Suggestion", "TuneResult", "tune", "width_slots"]

_F = FIELD_INDEX
_TIED = ("add", "mul", "concat", "channel_shuffle")


@dataclass
class Slot:
    """One tunable width: its producer layer, the layers that read the tensor on the way (with the factor
    their channel count is of the width: 1, or H x W after a flatten) and the consumer that reads it last."""

    producer: int
    followers: list[tuple[int, int]]
    consumer: int
    consumer_scale: int
    width: int

    @property
    def layers(self) -> list[int]:
        return [self.producer, *(j for j, _ in self.followers), self.consumer]


@dataclass
class Suggestion:
    """A slot's result: the suggested width and the predicted cost of the layers it touches."""

    layer: str
    index: int
    width: int
    suggested: int
    cost_before: float
    cost_after: float
    local_minima: list[int]
    layers: list[int]

    @property
    def changed(self) -> bool:
        return self.suggested != self.width

    @property
    def saving(self) -> float:
        return self.cost_before - self.cost_after


@dataclass
class TuneResult:
    """What :func:`tune` found: per slot suggestions, kept widths with reasons, and network totals."""

    objective: str
    max_change: float
    arch: Architecture
    tuned: Architecture
    suggestions: list[Suggestion]
    kept: list[tuple[str, str]]
    total_before: float
    total_after: float
    layer_before: npt.NDArray[np.float64]
    layer_after: npt.NDArray[np.float64]

    @property
    def saving(self) -> float:
        return self.total_before - self.total_after


def _chw(layer: Layer) -> tuple[int, int, int]:
    return chw(layer.in_shape[1:])


def _out_chw(layer: Layer) -> tuple[int, int, int]:
    return chw(layer.out_shape[1:])


def width_slots(arch: Architecture) -> tuple[list[Slot], list[tuple[int, str]]]:
    """The tunable widths of an architecture, and the conv/linear layers whose width is kept (with why)."""
    slots: list[Slot] = []
    kept: list[tuple[int, str]] = []
    layers = arch.layers
    for i, layer in enumerate(layers):
        if layer.type not in ("conv2d", "linear"):
            continue
        if layer.type == "conv2d" and layer.groups != 1:
            continue  # depthwise and grouped convolutions follow their input's width
        cur = _out_chw(layer)  # the tensor's shape as the next layer reads it
        scale = 1  # its channel count over the width (H x W once flattened)
        followers: list[tuple[int, int]] = []
        reason = "its output is the network's output"
        consumer = -1
        for j in range(i + 1, len(layers)):
            nxt = layers[j]
            if _chw(nxt) != cur:
                reason = f"the next layer, {nxt.name}, does not read its output (a branch)"
                break
            if nxt.type in _TIED:
                reason = f"it feeds {nxt.type} {nxt.name}: its width is tied to another tensor's"
                break
            if nxt.type == "linear" or (nxt.type == "conv2d" and nxt.groups == 1):
                consumer = j
                break
            if nxt.type == "conv2d":
                if nxt.groups == nxt.in_channels and _out_chw(nxt)[0] == nxt.in_channels and scale == 1:
                    followers.append((j, 1))  # depthwise: its channels follow
                    cur = _out_chw(nxt)
                    continue
                reason = f"it feeds grouped conv {nxt.name}"
                break
            followers.append((j, scale))
            if nxt.type == "flatten":
                scale *= cur[1] * cur[2]
            cur = _out_chw(nxt)
        if consumer < 0:
            kept.append((i, reason))
            continue
        width = layer.out_features if layer.type == "linear" else layer.out_channels
        slots.append(Slot(i, followers, consumer, scale, int(width)))
    return slots, kept


def _set_width(rows: npt.NDArray[np.int64], slot: Slot, width: int) -> None:
    """Write ``width`` into a copy of the slot's rows (in :attr:`Slot.layers` order)."""
    t = LAYER_TYPES[int(rows[0, 0])]
    rows[0, _F["out_features" if t == "linear" else "out_channels"]] = width
    for k, (_, scale) in enumerate(slot.followers, 1):
        if LAYER_TYPES[int(rows[k, 0])] == "conv2d":  # depthwise
            rows[k, _F["in_channels"]] = rows[k, _F["out_channels"]] = rows[k, _F["groups"]] = width
        else:
            rows[k, _F["in_channels"]] = width * scale
    last = len(slot.followers) + 1
    if LAYER_TYPES[int(rows[last, 0])] == "linear":
        rows[last, _F["in_features"]] = width * slot.consumer_scale
    else:
        rows[last, _F["in_channels"]] = width


def _local_minima(widths: list[int], cost: npt.NDArray[np.float64]) -> list[int]:
    """Positions (in ``widths[1:-1]``'s frame: 1..n-2) that are the widest point of a plateau that costs less
    than the next width and no more than the previous one (the window's outer entries only give context)."""
    minima = []
    for k in range(1, len(widths) - 1):
        if cost[k] <= cost[k - 1] and cost[k] < cost[k + 1]:
            minima.append(k)
    return minima


#: The most widths tried around one width (a window of 16M-wide layers would need gigabytes).
MAX_WIDTHS = 65_536


def _window(
    model: Any, key: str, arch: Architecture, rows: npt.NDArray[np.int64], slot: Slot, widths: list[int]
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float64]]:
    """The slot's layer rows at each width (prepared), and the predicted cost of those layers at each."""
    index = slot.layers
    variants = np.repeat(rows[index][None, :, :], len(widths), axis=0)
    for v, w in enumerate(widths):
        _set_width(variants[v], slot, w)
    flat = variants.reshape(-1, rows.shape[1])
    bad = prepare_rows(flat)
    if bad is not None:
        at, field_name, message = bad
        raise InputError(
            f"{arch.layers[index[at % len(index)]].name}: width {widths[at // len(index)]}: {field_name}: {message}"
        )
    offsets = np.arange(len(widths) + 1, dtype=np.int64) * len(index)
    out = model.score_rows(flat, offsets, per_layer=True)
    return variants, np.add.reduceat(np.asarray(out[key], dtype=np.float64), offsets[:-1])


def tune(arch: Architecture, model: Any, *, objective: str = "runtime", max_change: float = 0.10) -> TuneResult:
    """Suggest nearby widths at which predicted runtime or energy dips (see the module's description).

    Raises
    ------
    InputError
        An unknown objective, ``max_change`` outside (0, 1], energy under a model without power, a layer type
        the model does not cover.
    """
    if objective not in ("runtime", "energy"):
        raise InputError(f"objective {objective!r} must be runtime or energy")
    if not 0 < max_change <= 1:
        raise InputError(f"max change {max_change:g} must be above 0 and at most 100%")
    if objective == "energy" and not model.power_measured:
        raise InputError(f"model {model.name} holds no power measurements: its energies are 0; use --objective runtime")
    key = "layer_runtime_ms" if objective == "runtime" else "layer_energy_mj"
    rows = np.array(arch.rows(), dtype=np.int64)

    def layer_costs(r: npt.NDArray[np.int64]) -> npt.NDArray[np.float64]:
        out = model.score_rows(r, np.array([0, len(r)], dtype=np.int64), per_layer=True)
        return np.asarray(out[key], dtype=np.float64)

    before = layer_costs(rows)
    slots, kept_index = width_slots(arch)
    current = {s.producer: s.width for s in slots}
    minima_of: dict[int, list[int]] = {}
    for _ in range(4):  # coordinate descent: a layer can be one width's consumer and another's producer
        changed = False
        for slot in slots:
            lo = max(1, math.ceil(slot.width * (1 - max_change)))
            hi = max(lo, math.floor(slot.width * (1 + max_change)))
            if hi - lo + 1 > MAX_WIDTHS:  # bounded work: memory and time grow with the window
                raise InputError(
                    f"{arch.layers[slot.producer].name}: width {slot.width:,} within {max_change:.0%} spans "
                    f"{hi - lo + 1:,} widths; at most {MAX_WIDTHS:,} are tried: lower --max-change"
                )
            widths = list(range(max(1, lo - 1), hi + 2))  # one beyond each edge, to judge the edges
            variants, cost = _window(model, key, arch, rows, slot, widths)
            inside = [k for k in _local_minima(widths, cost) if lo <= widths[k] <= hi]
            minima_of[slot.producer] = [widths[k] for k in inside]
            # the local minimum nearest the original width (ties: the wider) among those that cost less than it,
            # given the other widths chosen so far
            now = widths.index(slot.width)
            cheaper = [k for k in inside if cost[k] < cost[now] * (1 - 1e-12)]
            best = min(cheaper, key=lambda k: (abs(widths[k] - slot.width), -widths[k]), default=None)
            choice = slot.width if best is None else widths[best]
            if choice != current[slot.producer]:
                current[slot.producer] = choice
                changed = True
                rows[slot.layers] = variants[widths.index(choice)]
        if not changed:
            break
    after = layer_costs(rows)
    suggestions = []
    for slot in slots:
        index = slot.layers
        suggestions.append(Suggestion(
            layer=arch.layers[slot.producer].name, index=slot.producer, width=slot.width,
            suggested=current[slot.producer], cost_before=float(before[index].sum()),
            cost_after=float(after[index].sum()), local_minima=minima_of.get(slot.producer, []), layers=index,
        ))
    tuned = Architecture(
        f"{arch.name}-tuned",
        [Layer.from_row(r, layer.name) for r, layer in zip(rows.tolist(), arch.layers, strict=True)],
        arch.meta,
    )
    kept = [(arch.layers[i].name, reason) for i, reason in kept_index]
    return TuneResult(objective, max_change, arch, tuned, suggestions, kept, float(before.sum()), float(after.sum()),
                      before, after)
