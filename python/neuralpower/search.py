"""Search loops: build candidate architectures from parameters cheaply, score them in batches, keep a front.

Building a candidate layer by layer in Python costs microseconds per layer; a search loop scores
thousands of candidates per second. So candidates are assembled from **blocks**: a block is a function
that appends layers to a :class:`~neuralpower.zoo.builder.Builder` (the zoo's own builder), and a
:class:`Blocks` cache builds each distinct (input shape, parameters) once and afterwards hands back its
prepared layer rows. A :class:`Candidate` is a list of such row blocks; :func:`score_candidates` evaluates
many candidates in one call to the C++ evaluator.

>>> import neuralpower as npw
>>> from neuralpower.search import MobileNetV2Space, score_candidates
>>> space = MobileNetV2Space()
>>> rng = np.random.default_rng(0)
>>> configs = [space.sample(rng) for _ in range(1000)]
>>> scores = score_candidates(npw.load_model(), [space.candidate(c) for c in configs])  # doctest: +SKIP
>>> scores["runtime_ms"], scores["energy_mj"]  # doctest: +SKIP

Two spaces are ready-made: :class:`MobileNetV2Space` (width multiplier, per-stage channels, depths, kernel
sizes, expansion ratios, resolution) and :class:`ViTSpace` (embedding width, depth, patch size, resolution,
per-layer heads and MLP ratios). :func:`evolve` searches any :class:`SearchSpace`; ``examples/search.py``
and ``examples/search_vit.py`` run it over each.
"""

from __future__ import annotations

import functools
import itertools
import math
import time
import weakref
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Generic, NamedTuple, Protocol, TypeVar

import numpy as np
import numpy.typing as npt

from . import _evaluator as _ev
from .errors import InputError
from .layers import INFO, Architecture, Layer
from .zoo.builder import Builder, S, T
from .zoo.networks import _cna, _inverted_residual, _make_divisible
from .zoo.transformers import encoder_layer, patch_embedding, vit_head

__all__ = [
    "Blocks",
    "Candidate",
    "MobileNetV2Config",
    "MobileNetV2Space",
    "SearchResult",
    "SearchSpace",
    "ViTConfig",
    "ViTSpace",
    "evolve",
    "macs_proxy",
    "pareto_front",
    "score_candidates",
]

BlockFn = Callable[..., Any]
Y = TypeVar("Y")
_MACS = INFO.index("macs")
_PARAMS = INFO.index("params")


class _CachingBuilder(Builder):
    """The zoo's builder, but each distinct image layer (type, input shape, configuration) is built, validated
    and shaped once; afterwards it costs a dictionary lookup (linear, layernorm and attention layers, which
    state their shapes directly, are built each time: a ViT space builds under a thousand blocks, and caching
    them measured no faster)."""

    def __init__(self, batch: int, dtype: str, cache: dict[tuple[Any, ...], tuple[Layer, T]]) -> None:
        super().__init__(batch, dtype)
        self._layer_cache = cache

    def _spatial(self, type_name: str, x: T, name: str, **fields: Any) -> T:
        key = (type_name, x.c, x.h, x.w, *fields.items())
        hit = self._layer_cache.get(key)
        if hit is None:
            y = super()._spatial(type_name, x, name, **fields)
            hit = self._layer_cache[key] = (self.layers[-1], y)
        else:
            self.layers.append(hit[0])
        return hit[1]


def _block_key(fn: BlockFn, x: T | S, params: tuple[Any, ...]) -> tuple[Any, ...]:
    return (fn, x.c, x.h, x.w, *params) if type(x) is T else (fn, x, *params)


class Blocks:
    """A cache of built blocks at one batch size and dtype, and of their predictions per model.

    ``blocks(fn, x, *params)`` runs ``fn(builder, x, *params)`` once per distinct ``(fn, x, params)``
    (``x`` an image :class:`~neuralpower.zoo.builder.T` or a token tensor
    :class:`~neuralpower.zoo.builder.S`; ``params`` must be hashable) and returns the block's id and output
    shape. Layers are cached too: a new block made of layers seen before costs dictionary lookups only. A
    candidate's prediction is the sum of its layers' predictions, so each distinct block is evaluated once
    per model (see :func:`score_candidates`). Parameters a block counts with ``builder.parameter`` (ViT's
    class token and position embedding) are added to its ``params``.
    """

    def __init__(self, batch: int = 1, dtype: str = "fp32") -> None:
        self.batch = batch
        self.dtype = dtype
        self._cache: dict[tuple[Any, ...], tuple[int, Any]] = {}
        self._rows: list[npt.NDArray[np.int64]] = []
        self._made: list[tuple[BlockFn, T | S, tuple[Any, ...]]] = []
        self._outside: list[int] = []
        self._layers: dict[tuple[Any, ...], tuple[Layer, T]] = {}
        self._counts: dict[str, npt.NDArray[np.int64]] = {
            "macs": np.zeros(0, dtype=np.int64), "params": np.zeros(0, dtype=np.int64)
        }
        self._predicted: weakref.WeakKeyDictionary[Any, dict[str, npt.NDArray[Any]]] = weakref.WeakKeyDictionary()

    def __len__(self) -> int:
        return len(self._rows)

    def _run(self, b: Builder, fn: BlockFn, x: T | S, params: tuple[Any, ...]) -> Any:
        where = f"block {getattr(fn, '__name__', fn)}{(x, *params)}"
        try:
            y = fn(b, x, *params)
        except InputError as e:
            field_name = f"{e.column}: " if e.column else ""
            raise InputError(f"{where}: {field_name}{e.message}") from None
        except ValueError as e:
            raise InputError(f"{where}: {e}") from None
        if not b.layers:
            raise InputError(f"{where} adds no layer")
        return y

    def __call__(self, fn: Callable[..., Y], x: T | S, *params: Any) -> tuple[int, Y]:
        key = _block_key(fn, x, params)
        hit = self._cache.get(key)
        if hit is None:
            b = _CachingBuilder(self.batch, self.dtype, self._layers)
            y = self._run(b, fn, x, params)
            rows = np.array([layer.row for layer in b.layers], dtype=np.int64)
            rows.flags.writeable = False
            self._rows.append(rows)
            self._made.append((fn, x, params))
            self._outside.append(b.params_outside_layers)
            hit = self._cache[key] = (len(self._rows) - 1, y)
        return hit

    def rows(self, block_id: int) -> npt.NDArray[np.int64]:
        """The prepared layer rows of a block (read-only)."""
        return self._rows[block_id]

    def params_outside_layers(self, block_id: int) -> int:
        """The parameters a block counts that none of its layers holds (``builder.parameter``)."""
        return self._outside[block_id]

    def layers(self, fn: BlockFn, x: T | S, *params: Any) -> list[Layer]:
        """The block's layers, named as the block function names them (built afresh: the slow path)."""
        b = Builder(self.batch, self.dtype)
        self._run(b, fn, x, params)
        return b.layers

    def _stacked(self, start: int) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
        """The rows of blocks ``start:`` in one array, and each block's first row in it (plus the end)."""
        new = self._rows[start:]
        offsets = np.zeros(len(new) + 1, dtype=np.int64)
        np.cumsum([len(r) for r in new], out=offsets[1:])
        return np.concatenate(new), offsets

    def counts(self) -> dict[str, npt.NDArray[np.int64]]:
        """Per block: ``macs`` and ``params`` (the same under every model)."""
        have = len(self._counts["macs"])
        if have < len(self._rows):
            rows, offsets = self._stacked(have)
            info = _ev.info(rows)
            outside = np.array(self._outside[have:len(self._rows)], dtype=np.int64)
            for name, column in (("macs", _MACS), ("params", _PARAMS)):
                fresh = np.add.reduceat(info[:, column], offsets[:-1])
                if name == "params":
                    fresh = fresh + outside
                self._counts[name] = np.concatenate([self._counts[name], fresh])
        return self._counts

    def predictions(self, model: Any, *, threads: int = 1) -> dict[str, npt.NDArray[Any]]:
        """Per block: ``runtime_ms``, ``energy_mj`` and ``extrapolated`` (layers) under ``model``, evaluating
        the blocks built since the last call in one evaluator call."""
        done = self._predicted.get(model)
        have = 0 if done is None else len(done["runtime_ms"])
        if have == len(self._rows) and done is not None:
            return done
        out = model.score_rows(*self._stacked(have), threads=threads)
        fresh = {k: out[k] for k in ("runtime_ms", "energy_mj", "extrapolated")}
        if done is not None:
            fresh = {k: np.concatenate([done[k], v]) for k, v in fresh.items()}
        self._predicted[model] = fresh
        return fresh


class Candidate:
    """One candidate architecture: the ids of the blocks it is made of (see :class:`Blocks`)."""

    __slots__ = ("_cache", "blocks", "ids", "name")

    def __init__(self, name: str, blocks: Blocks) -> None:
        self.name = name
        self.blocks = blocks
        self._cache = blocks._cache
        self.ids: list[int] = []

    def add(self, fn: Callable[..., Y], x: T | S, *params: Any) -> Y:
        """Append block ``fn`` applied to ``x``; returns its output shape."""
        hit = self._cache.get(_block_key(fn, x, params))
        if hit is None:
            hit = self.blocks(fn, x, *params)
        self.ids.append(hit[0])
        return hit[1]  # type: ignore[no-any-return]

    def extend(self, ids: Sequence[int]) -> None:
        """Append blocks by id (of the same :class:`Blocks`), such as another candidate's ``ids``."""
        self.ids.extend(ids)

    def rows(self) -> npt.NDArray[np.int64]:
        """The prepared layer rows of the whole candidate."""
        return np.concatenate([self.blocks.rows(i) for i in self.ids])

    def __len__(self) -> int:
        return sum(len(self.blocks.rows(i)) for i in self.ids)

    def architecture(self, **meta: Any) -> Architecture:
        """The full :class:`Architecture` (layer names prefixed by block index), for describe or predict; the
        blocks' parameters outside layers are its ``params_outside_layers``."""
        layers = []
        for i, block_id in enumerate(self.ids):
            fn, x, params = self.blocks._made[block_id]
            for layer in self.blocks.layers(fn, x, *params):
                layers.append(Layer._trusted(layer.row, f"{i}.{layer.name}"))
        outside = sum(self.blocks.params_outside_layers(i) for i in self.ids)
        if outside:
            meta = {"params_outside_layers": outside, **meta}
        return Architecture(self.name, layers, meta)


def score_candidates(model: Any, candidates: Sequence[Candidate], *, threads: int = 1) -> dict[str, Any]:
    """Predict many candidates (of one :class:`Blocks`).

    A network's runtime and energy are the sums of its layers' (NeuralPower's model), so each distinct
    block is evaluated once per model and candidates add up their blocks; the results equal scoring every
    candidate's full layer list (``model.score_rows``) up to float rounding.

    Returns ``runtime_ms``, ``power_w``, ``energy_mj``, ``extrapolated`` (layers outside the model's
    training ranges), ``macs`` and ``params``, one value per candidate.
    """
    if not candidates:
        raise InputError("no candidates to score")
    blocks = candidates[0].blocks
    for c in candidates:
        if c.blocks is not blocks:
            raise InputError(f"candidate {c.name!r} is built from other blocks than {candidates[0].name!r}")
        if not c.ids:
            raise InputError(f"candidate {c.name!r} has no layers")
    ids = np.fromiter(itertools.chain.from_iterable(c.ids for c in candidates), np.int64)
    counts = np.fromiter((len(c.ids) for c in candidates), np.int64, len(candidates))
    owner = np.repeat(np.arange(len(candidates)), counts)
    per_block = {**blocks.predictions(model, threads=threads), **blocks.counts()}
    n = len(candidates)
    runtime = np.bincount(owner, weights=per_block["runtime_ms"][ids], minlength=n)
    energy = np.bincount(owner, weights=per_block["energy_mj"][ids], minlength=n)
    extrapolated = np.bincount(owner, weights=per_block["extrapolated"][ids], minlength=n).astype(np.int64)
    macs = np.bincount(owner, weights=per_block["macs"][ids], minlength=n).astype(np.int64)
    params = np.bincount(owner, weights=per_block["params"][ids], minlength=n).astype(np.int64)
    with np.errstate(invalid="ignore", divide="ignore"):
        power = np.where(runtime > 0, energy / np.where(runtime > 0, runtime, 1.0), 0.0)
    return {
        "runtime_ms": runtime, "power_w": power, "energy_mj": energy, "extrapolated": extrapolated, "macs": macs,
        "params": params,
    }


def pareto_front(a: npt.ArrayLike, b: npt.ArrayLike) -> npt.NDArray[np.bool_]:
    """Which points are on the Pareto front of minimizing both ``a`` and ``b``.

    A point is on the front when no other point is at least as good in both and better in one; equal
    points are all kept. NaN in either is never on the front.
    """
    x = np.asarray(a, dtype=np.float64)
    y = np.asarray(b, dtype=np.float64)
    if x.shape != y.shape or x.ndim != 1:
        raise ValueError("pareto_front needs two 1-D arrays of one length")
    on = np.zeros(len(x), dtype=bool)
    valid = np.flatnonzero(~(np.isnan(x) | np.isnan(y)))
    if len(valid) == 0:
        return on
    order = valid[np.lexsort((y[valid], x[valid]))]
    best = math.inf  # the lowest b among points with a strictly lower a
    i = 0
    while i < len(order):
        j = i
        while j < len(order) and x[order[j]] == x[order[i]]:
            j += 1
        group = order[i:j]
        low = y[group[0]]  # sorted by b within one a
        if low < best:
            on[group[y[group] == low]] = True
            best = low
        i = j
    return on


# -- search spaces --------------------------------------------------------------------------------------


class SearchSpace(Protocol):
    """What :func:`evolve` needs of a search space (:class:`MobileNetV2Space`, :class:`ViTSpace`): configurations
    (hashable values) drawn, mutated and turned into candidates of the space's :class:`Blocks`, and the layer
    types its candidates are made of (a model must cover them)."""

    layer_types: ClassVar[tuple[str, ...]]
    blocks: Blocks

    def default(self) -> Any: ...
    def sample(self, rng: np.random.Generator) -> Any: ...
    def mutate(self, config: Any, rng: np.random.Generator, rate: float = 0.15) -> Any: ...
    def candidate(self, config: Any, name: str = "") -> Candidate: ...
    def architecture(self, config: Any, name: str = ...) -> Architecture: ...


C = TypeVar("C")


class _Decisions(ABC, Generic[C]):
    """Sampling and mutation of a space whose configurations are a flat list of decisions, each one of a list
    of choices (``_choices``, in the order of ``_values``)."""

    _choices: list[Sequence[Any]]

    @abstractmethod
    def _config(self, values: Sequence[Any]) -> C:
        """The configuration of a list of decisions."""

    @abstractmethod
    def _values(self, config: C) -> list[Any]:
        """The decisions of a configuration (the inverse of ``_config``)."""

    def sample(self, rng: np.random.Generator) -> C:
        """A uniformly random configuration."""
        choices = self._choices
        u = rng.random(len(choices)).tolist()
        return self._config([c[int(r * len(c))] for c, r in zip(choices, u, strict=True)])

    def mutate(self, config: C, rng: np.random.Generator, rate: float = 0.15) -> C:
        """A copy with each decision re-drawn with probability ``rate`` (at least one is re-drawn)."""
        choices = self._choices
        n = len(choices)
        draw = rng.random(2 * n + 1).tolist()
        values = self._values(config)
        changed = [i for i in range(n) if draw[i] < rate] or [int(draw[2 * n] * n)]
        for i in changed:
            values[i] = choices[i][int(draw[n + i] * len(choices[i]))]
        return self._config(values)


def _check_choices(lists: Mapping[str, Sequence[Any]], *, integers: bool = False) -> None:
    for name, values in lists.items():
        if len(values) == 0:
            raise InputError(f"search space: {name} has no choice")
        if any(not v > 0 for v in values):
            raise InputError(f"search space: {name} {list(values)} must all be positive")
        if integers and any(int(v) != v for v in values):
            raise InputError(f"search space: {name} {list(values)} must all be integers")


# -- a MobileNetV2-style space --------------------------------------------------------------------------


def stem(b: Builder, x: T, out: int) -> T:
    """3x3 stride-2 conv, batchnorm, relu6."""
    return _cna(b, x, out, 3, 2, act="relu6", name="stem")


def inverted_residual(b: Builder, x: T, out: int, expansion: int, kernel: int, stride: int) -> T:
    """MobileNetV2's block, the zoo's: 1x1 expansion (unless ``expansion`` is 1), depthwise conv, 1x1
    projection, residual add when the shape is kept."""
    return _inverted_residual(b, x, "block", out, kernel, stride, x.c * expansion, "relu6", v2=True)


def head(b: Builder, x: T, last: int, classes: int) -> T:
    """1x1 conv to ``last`` channels, global average pool, flatten, linear classifier."""
    x = _cna(b, x, last, 1, act="relu6", name="last")
    x = b.adaptive_avgpool(x, 1, name="pool")
    x = b.flatten(x, name="flatten")
    return b.linear(x, classes, name="classifier")


# torchvision's rounding of scaled channel counts, memoized (a search calls it for every stage of every candidate)
_divisible = functools.lru_cache(maxsize=4096)(_make_divisible)


class MobileNetV2Config(NamedTuple):
    """One point of :class:`MobileNetV2Space`: per-stage channels (before the width multiplier), depths,
    kernel sizes and expansion ratios, the width multiplier and the input resolution."""

    width: float
    resolution: int
    channels: tuple[int, ...]
    depths: tuple[int, ...]
    kernels: tuple[int, ...]
    expansions: tuple[int, ...]


@dataclass
class MobileNetV2Space(_Decisions[MobileNetV2Config]):
    """A MobileNetV2-style search space.

    Seven stages of inverted residual blocks with MobileNetV2's strides; per stage, the choices of
    channels, depth, kernel size and expansion ratio; a width multiplier applied to every channel count
    (rounded to a multiple of 8 as torchvision does); the input resolution. The defaults contain
    MobileNetV2 1.0 at 224 x 224 itself.
    """

    layer_types: ClassVar[tuple[str, ...]] = (
        "conv2d", "batchnorm2d", "relu6", "add", "adaptive_avgpool2d", "flatten", "linear",
    )

    widths: Sequence[float] = (0.5, 0.75, 1.0, 1.25, 1.4)
    resolutions: Sequence[int] = (128, 160, 192, 224, 256)
    channels: Sequence[Sequence[int]] = (
        (8, 16, 24), (16, 24, 32), (24, 32, 40), (48, 64, 80), (80, 96, 112), (128, 160, 192), (256, 320, 384),
    )
    depths: Sequence[Sequence[int]] = ((1,), (1, 2, 3), (2, 3, 4), (2, 3, 4, 5), (2, 3, 4), (2, 3, 4), (1, 2))
    kernels: Sequence[int] = (3, 5, 7)
    expansions: Sequence[int] = (3, 4, 6)
    strides: Sequence[int] = (1, 2, 2, 2, 1, 2, 1)
    stem_channels: int = 32
    last_channels: int = 1280
    classes: int = 1000
    batch: int = 1
    dtype: str = "fp32"
    blocks: Blocks = field(init=False, repr=False)
    _choices: list[Sequence[Any]] = field(init=False, repr=False)
    _stages: dict[tuple[Any, ...], tuple[list[int], T]] = field(
        init=False, repr=False, default_factory=dict
    )

    def __post_init__(self) -> None:
        stages = len(self.strides)
        _check_choices({
            "widths": self.widths, "resolutions": self.resolutions, "kernels": self.kernels,
            "expansions": self.expansions,
        })
        if any(k % 2 == 0 for k in self.kernels):
            raise InputError(f"search space: kernels {list(self.kernels)} must be odd")
        for name, per_stage in (("channels", self.channels), ("depths", self.depths)):
            if len(per_stage) != stages:
                raise InputError(f"search space: {name} gives {len(per_stage)} stages, strides {stages}")
            for i, values in enumerate(per_stage):
                if len(values) == 0 or any(int(v) < 1 for v in values):
                    raise InputError(f"search space: {name} of stage {i} must be positive integers, got {values}")
        smallest = min(self.resolutions)
        if smallest < 2 ** (1 + sum(1 for s in self.strides if s > 1)):
            raise InputError(f"search space: resolution {smallest} is too small for {stages} stages of strides "
                             f"{list(self.strides)}")
        self.blocks = Blocks(self.batch, self.dtype)
        self._choices = self._all_choices()

    def default(self) -> MobileNetV2Config:
        """MobileNetV2 1.0 at 224 (snapped to the nearest choices where the space lacks them)."""
        def near(values: Sequence[Any], v: float) -> Any:
            return min(values, key=lambda c: (abs(c - v), c))

        ref = ((16, 1), (24, 2), (32, 3), (64, 4), (96, 3), (160, 3), (320, 1))
        return MobileNetV2Config(
            width=near(self.widths, 1.0), resolution=near(self.resolutions, 224),
            channels=tuple(near(self.channels[i], c) for i, (c, _) in enumerate(ref)),
            depths=tuple(near(self.depths[i], d) for i, (_, d) in enumerate(ref)),
            kernels=(near(self.kernels, 3),) * len(ref), expansions=(near(self.expansions, 6),) * len(ref),
        )

    def _all_choices(self) -> list[Sequence[Any]]:
        """Every decision of a configuration, in order: width, resolution, then per stage channels, depth,
        kernel, expansion."""
        out: list[Sequence[Any]] = [self.widths, self.resolutions]
        for i in range(len(self.strides)):
            out += [self.channels[i], self.depths[i], self.kernels, self.expansions]
        return out

    def _config(self, values: Sequence[Any]) -> MobileNetV2Config:
        return MobileNetV2Config._make(
            (values[0], values[1], tuple(values[2::4]), tuple(values[3::4]), tuple(values[4::4]), tuple(values[5::4]))
        )

    def _values(self, config: MobileNetV2Config) -> list[Any]:
        values: list[Any] = [config.width, config.resolution]
        for i in range(len(self.strides)):
            values += [config.channels[i], config.depths[i], config.kernels[i], config.expansions[i]]
        return values

    def candidate(self, config: MobileNetV2Config, name: str = "") -> Candidate:
        """The candidate of a configuration, from cached blocks."""
        w = config.width
        c = Candidate(name or "mbv2", self.blocks)
        x = c.add(stem, T(3, config.resolution, config.resolution), _divisible(self.stem_channels * w))
        stages = self._stages
        ids = c.ids
        for stage, stride in enumerate(self.strides):
            expansion = config.expansions[stage] if stage else 1
            key = (x, config.channels[stage], w, expansion, config.kernels[stage], stride, config.depths[stage])
            hit = stages.get(key)
            if hit is None:  # a stage seen before is appended whole
                out = _divisible(config.channels[stage] * w)
                part = Candidate("", self.blocks)
                y = x
                for i in range(config.depths[stage]):
                    y = part.add(inverted_residual, y, out, expansion, config.kernels[stage], stride if i == 0 else 1)
                hit = stages[key] = (part.ids, y)
            ids.extend(hit[0])
            x = hit[1]
        c.add(head, x, _divisible(self.last_channels * max(1.0, w)), self.classes)
        return c

    def architecture(self, config: MobileNetV2Config, name: str = "mbv2") -> Architecture:
        """The full :class:`Architecture` of a configuration."""
        return self.candidate(config, name).architecture()


# -- a ViT-style space ----------------------------------------------------------------------------------


def _mlp_features(width: int, ratio: float) -> int:
    hidden = ratio * width
    if hidden != int(hidden):
        raise InputError(f"MLP ratio {ratio} of width {width} is {hidden} features, not a whole number")
    return int(hidden)


class ViTConfig(NamedTuple):
    """One point of :class:`ViTSpace`: the embedding width, the input resolution, the patch size, the depth
    (encoder layers) and, per encoder layer of the space's deepest, the heads and the MLP ratio (hidden
    features over width). Layers past ``depth`` are not built: their entries have no effect."""

    width: int
    resolution: int
    patch: int
    depth: int
    heads: tuple[int, ...]
    mlp_ratios: tuple[float, ...]


@dataclass
class ViTSpace(_Decisions[ViTConfig]):
    """A ViT-style search space (in the manner of AutoFormer's): the embedding width, the depth, the patch size
    and the input resolution, and per encoder layer the number of heads and the MLP ratio.

    Candidates are torchvision's ViT, the zoo's ``vit_b_16``, layer by layer: patch embedding, ``depth``
    encoder layers of pre-layernorm attention and MLP, final layernorm and classifier. Every combination of
    choices is a valid network: every choice of ``heads`` must divide every width, every MLP ratio times every
    width must be a whole number, every resolution a multiple of every patch size (checked when the space is
    made). The defaults' largest member is ViT-B/16 at 224 x 224 (width 768, depth 12, 12 heads, MLP ratio 4,
    patch 16), which is also :meth:`default`.
    """

    layer_types: ClassVar[tuple[str, ...]] = ("conv2d", "concat", "add", "layernorm", "linear", "attention", "gelu")

    widths: Sequence[int] = (192, 288, 384, 480, 576, 672, 768)
    depths: Sequence[int] = (6, 7, 8, 9, 10, 11, 12)
    heads: Sequence[int] = (3, 4, 6, 8, 12)
    mlp_ratios: Sequence[float] = (2.0, 3.0, 3.5, 4.0)
    patches: Sequence[int] = (16, 32)
    resolutions: Sequence[int] = (160, 192, 224)
    classes: int = 1000
    batch: int = 1
    dtype: str = "fp32"
    blocks: Blocks = field(init=False, repr=False)
    _choices: list[Sequence[Any]] = field(init=False, repr=False)
    _layer_ids: dict[tuple[Any, ...], int] = field(init=False, repr=False, default_factory=dict)

    def __post_init__(self) -> None:
        _check_choices({
            "widths": self.widths, "depths": self.depths, "heads": self.heads, "patches": self.patches,
            "resolutions": self.resolutions,
        }, integers=True)
        _check_choices({"mlp_ratios": self.mlp_ratios})
        if not int(self.classes) == self.classes > 0:
            raise InputError(f"search space: classes {self.classes} must be a positive integer")
        for w in self.widths:
            for h in self.heads:
                if w % h:
                    raise InputError(f"search space: {h} heads do not divide width {w} (every choice of heads must "
                                     "divide every width)")
            for r in self.mlp_ratios:
                try:
                    _mlp_features(w, r)
                except InputError as e:
                    raise InputError(f"search space: {e.message}") from None
        for res in self.resolutions:
            for p in self.patches:
                if res % p:
                    raise InputError(f"search space: resolution {res} is not a multiple of the patch size {p} (every "
                                     "resolution must be a multiple of every patch size)")
        self.blocks = Blocks(self.batch, self.dtype)
        self._choices = self._all_choices()

    def default(self) -> ViTConfig:
        """ViT-B/16 at 224 (snapped to the nearest choices where the space lacks them)."""
        def near(values: Sequence[Any], v: float) -> Any:
            return min(values, key=lambda c: (abs(c - v), c))

        layers = max(self.depths)
        return ViTConfig(
            width=near(self.widths, 768), resolution=near(self.resolutions, 224), patch=near(self.patches, 16),
            depth=near(self.depths, 12), heads=(near(self.heads, 12),) * layers,
            mlp_ratios=(near(self.mlp_ratios, 4.0),) * layers,
        )

    def _all_choices(self) -> list[Sequence[Any]]:
        """Every decision of a configuration, in order: width, resolution, patch, depth, then per encoder layer
        heads and MLP ratio."""
        out: list[Sequence[Any]] = [self.widths, self.resolutions, self.patches, self.depths]
        for _ in range(max(self.depths)):
            out += [self.heads, self.mlp_ratios]
        return out

    def _config(self, values: Sequence[Any]) -> ViTConfig:
        return ViTConfig._make((values[0], values[1], values[2], values[3], tuple(values[4::2]), tuple(values[5::2])))

    def _values(self, config: ViTConfig) -> list[Any]:
        values: list[Any] = [config.width, config.resolution, config.patch, config.depth]
        for heads, ratio in zip(config.heads, config.mlp_ratios, strict=True):
            values += [heads, ratio]
        return values

    def candidate(self, config: ViTConfig, name: str = "") -> Candidate:
        """The candidate of a configuration, from cached blocks."""
        depth = config.depth
        if not 0 < depth <= min(len(config.heads), len(config.mlp_ratios)):
            raise InputError(f"ViT configuration of depth {depth} gives {len(config.heads)} heads and "
                             f"{len(config.mlp_ratios)} MLP ratios")
        c = Candidate(name or "vit", self.blocks)
        x = c.add(patch_embedding, T(3, config.resolution, config.resolution), config.width, config.patch)
        known = self._layer_ids
        ids = c.ids
        tokens, width = x.tokens, x.features
        for heads, ratio in zip(config.heads[:depth], config.mlp_ratios[:depth], strict=True):
            key = (tokens, width, heads, ratio)
            block_id = known.get(key)
            if block_id is None:  # keyed by ratio, so the MLP width is computed only for new layers
                block_id = known[key] = self.blocks(encoder_layer, x, heads, _mlp_features(width, ratio))[0]
            ids.append(block_id)
        c.add(vit_head, x, self.classes)
        return c

    def architecture(self, config: ViTConfig, name: str = "vit") -> Architecture:
        """The full :class:`Architecture` of a configuration."""
        return self.candidate(config, name).architecture()


# -- an evolutionary search ------------------------------------------------------------------------------


def macs_proxy(scores: Mapping[str, npt.NDArray[Any]]) -> npt.NDArray[np.float64]:
    """A stand-in for accuracy, higher is better: log10 of the candidate's MACs.

    It is **not** accuracy: larger networks of one family tend to be more accurate, so it lets a search
    trade size against cost without trained networks. Replace it with a real accuracy predictor.
    """
    return np.log10(np.maximum(np.asarray(scores["macs"], dtype=np.float64), 1.0))


@dataclass
class SearchResult:
    """The Pareto front an :func:`evolve` run kept, best proxy first, and what the run did."""

    objective: str
    configs: list[Any]
    proxy: npt.NDArray[np.float64]
    scores: dict[str, npt.NDArray[Any]]
    evaluated: int
    feasible: int
    seconds: float

    @property
    def rate(self) -> float:
        """Candidates built and scored per second."""
        return self.evaluated / self.seconds if self.seconds > 0 else math.inf


def evolve(
    space: SearchSpace,
    model: Any,
    *,
    objective: str = "energy",
    generations: int = 20,
    children: int = 1000,
    population: int = 200,
    max_runtime_ms: float | None = None,
    max_energy_mj: float | None = None,
    proxy: Callable[[Mapping[str, npt.NDArray[Any]]], npt.NDArray[np.float64]] = macs_proxy,
    seed: int = 0,
    threads: int = 1,
    on_generation: Callable[[int, SearchResult], None] | None = None,
) -> SearchResult:
    """Evolutionary search for the Pareto front of (``proxy``, higher better; predicted ``objective``, lower
    better) under a runtime and/or energy budget.

    Each generation mutates ``children`` parents drawn from the current front and a sample of the previous
    generation's feasible children (up to ``population``), scores them in one batch and keeps the front.

    Raises
    ------
    InputError
        ``objective="energy"`` under a model without power, bad counts, or no candidate within the budget.
    """
    if objective not in ("energy", "runtime"):
        raise InputError(f"objective {objective!r} must be energy or runtime")
    if objective == "energy" and not getattr(model, "power_measured", True):
        raise InputError(f"model {model.name} holds no power measurements: its energies are 0; use objective runtime")
    for label, value in (("generations", generations), ("children", children), ("population", population)):
        if value < 1:
            raise InputError(f"{label} {value} must be at least 1")
    for label, budget in (("max_runtime_ms", max_runtime_ms), ("max_energy_mj", max_energy_mj)):
        if budget is not None and not budget > 0:
            raise InputError(f"{label} {budget} must be positive")
    key = "energy_mj" if objective == "energy" else "runtime_ms"
    rng = np.random.default_rng(seed)
    start = time.perf_counter()
    front: list[Any] = []
    front_keys: list[tuple[int, ...]] = []
    front_scores: dict[str, npt.NDArray[Any]] = {}
    front_proxy = np.zeros(0)
    pool: list[Any] = [space.default()] + [space.sample(rng) for _ in range(population - 1)]
    evaluated = feasible_total = 0
    result = SearchResult(objective, [], front_proxy, {}, 0, 0, 0.0)
    for generation in range(generations):
        if generation == 0:
            configs = pool + [space.sample(rng) for _ in range(max(0, children - len(pool)))]
        else:
            parents = front + pool
            picks = rng.integers(len(parents), size=children).tolist()
            configs = [space.mutate(parents[i], rng) for i in picks]
        candidates = [space.candidate(c) for c in configs]
        scores = score_candidates(model, candidates, threads=threads)
        evaluated += len(configs)
        ok = np.ones(len(configs), dtype=bool)
        if max_runtime_ms is not None:
            ok &= scores["runtime_ms"] <= max_runtime_ms
        if max_energy_mj is not None:
            ok &= scores["energy_mj"] <= max_energy_mj
        feasible_total += int(ok.sum())
        index = np.flatnonzero(ok)
        merged = front + [configs[i] for i in index]
        merged_keys = front_keys + [tuple(candidates[i].ids) for i in index.tolist()]
        merged_scores = {k: np.concatenate([front_scores[k], v[index]]) if front_scores else v[index]
                         for k, v in scores.items()}
        merged_proxy = np.concatenate([front_proxy, proxy(scores)[index]])
        if merged:
            on = pareto_front(-merged_proxy, merged_scores[key])
            keep = np.flatnonzero(on)
            # one entry per distinct network (configurations may differ in choices with no effect), best
            # proxy first
            seen: set[tuple[int, ...]] = set()
            order = []
            for i in keep[np.argsort(-merged_proxy[keep], kind="stable")].tolist():
                if merged_keys[i] not in seen:
                    seen.add(merged_keys[i])
                    order.append(i)
            front = [merged[i] for i in order]
            front_keys = [merged_keys[i] for i in order]
            front_scores = {k: v[order] for k, v in merged_scores.items()}
            front_proxy = merged_proxy[order]
        if len(index):
            take = rng.choice(index, size=min(population, len(index)), replace=False)
            pool = [configs[int(i)] for i in take]
        result = SearchResult(objective, front, front_proxy, front_scores, evaluated, feasible_total,
                              time.perf_counter() - start)
        if on_generation is not None:
            on_generation(generation, result)
    if not result.configs:
        limits = (("max_runtime_ms", max_runtime_ms), ("max_energy_mj", max_energy_mj))
        stated = ", ".join(f"{label} {value}" for label, value in limits if value)
        raise InputError(f"no candidate of the search space meets the budget ({stated}) after {evaluated} candidates")
    return result
