"""The predictor users call: a model file compiled for the C++ evaluator.

>>> import neuralpower as npw
>>> model = npw.load_model("path/to/model.json")         # or a bundled model's name
>>> p = model.predict(npw.zoo.build("resnet50"))
>>> p.runtime_ms, p.power_w, p.energy_mj, p.per_layer   # doctest: +SKIP

Results equal :func:`neuralpower.models.predict.predict_network` (the NumPy reference) to rounding.
"""

from __future__ import annotations

import functools
import json
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from . import _evaluator as _ev
from .errors import InputError
from .layers import DTYPES, FEATURES, FIELD_INDEX, LAYER_TYPES, Architecture
from .models.boosted import flatten_boosted
from .models.format import adjustment, read_model_file, validate_model
from .models.predict import FREE_TYPES

__all__ = ["BOUND_SUMS", "Model", "Prediction", "Scores", "bundled_models", "carried_model", "default_model_name",
           "interval_values", "load_model", "model_for_gpu"]

_KIND = {"poly": 1, "tree": 2, "roofline": 3, "flops_linear": 4, "constant": 5}
_TARGETS = ("runtime_ms", "power_w")
#: The per-layer columns saying where each target's predictions come from (see :meth:`Model.source`).
SOURCE_COLUMNS = {"runtime_ms": "runtime_source", "power_w": "power_source"}
_TRANSFORM = {"identity": 0, "log1p": 1}
_MODES = {"plain": 0, "relative": 1, "log": 2}
_TEST = {"le": 1, "mod": 2}
DEFAULT_MODEL = "default"


def _bundled_dir() -> Path:
    return Path(str(resources.files("neuralpower") / "data" / "models"))


def bundled_models() -> dict[str, Path]:
    """Bundled model files by name."""
    directory = _bundled_dir()
    if not directory.is_dir():
        return {}
    return {p.stem: p for p in sorted(directory.glob("*.json"))}


#: The file beside the bundled models holding their SHA-256 digests (``sha256sum``'s format), written by the bundle
#: builder: a bundled model whose bytes match is not validated again as it loads (it was as it was written).
DIGESTS = "SHA256SUMS"


def _read_bundled(path: Path) -> dict[str, Any]:
    """A bundled model file's document, validated unless its digest is the one :data:`DIGESTS` records."""
    return read_model_file(path, digest=_bundled_digests(str(path.parent)).get(path.name))


@functools.cache
def _bundled_digests(directory: str) -> dict[str, str]:
    """The digests :data:`DIGESTS` in ``directory`` records, by file name (none where it is missing)."""
    try:
        lines = (Path(directory) / DIGESTS).read_text(encoding="utf-8").splitlines()
    except OSError:
        return {}
    out = {}
    for line in lines:
        digest, _, name = line.partition("  ")
        if len(digest) == 64 and name:
            out[name] = digest
    return out


def default_model_name() -> str | None:
    """The bundled default model's name (the ``DEFAULT`` file beside the models), or None."""
    marker = _bundled_dir() / "DEFAULT"
    if not marker.is_file():
        return None
    name = marker.read_text().strip()
    return name if name in bundled_models() else None


#: The dtype a GPU's bundled model is picked for when none is asked for: the first of these it has.
PREFERRED_DTYPES = ("bf16", "fp16", "fp32", "fp8")


def model_for_gpu(gpu: str, dtype: str | None = None) -> str | None:
    """The name of the bundled model measured on GPU ``gpu`` (a name :func:`neuralpower.gpus.find_gpu` knows) for
    ``dtype`` (default: the first of :data:`PREFERRED_DTYPES` it has); None where there is none.

    Raises
    ------
    InputError
        An unknown GPU (the line lists the known ones) or dtype.
    """
    from .gpus import find_gpu

    if dtype is not None and dtype not in DTYPES:
        raise InputError(f"unknown dtype {dtype!r} (known: {', '.join(DTYPES)})")
    g = find_gpu(gpu)
    bundled = bundled_models()
    prefixes = [f"{n}-" for n in (g.key, *g.aliases)]
    for d in (dtype,) if dtype else PREFERRED_DTYPES:
        for prefix in prefixes:
            if f"{prefix}{d}" in bundled:
                return f"{prefix}{d}"
    return None


def carried_model(gpu: str, dtype: str | None = None) -> Model:
    """A model of a GPU no bundled model was measured on (for ``dtype``): the bundled models of other GPUs carried
    through the datasheets and blended by how near each GPU is (see :mod:`neuralpower.models.carry`); ``dtype``
    None: the dtype whose nearest source is nearest."""
    from .gpus import find_gpu
    from .models.carry import blend_model, carry_dtype

    g = find_gpu(gpu)
    paths = {name: path for name, path in bundled_models().items() if not name.startswith("cpu-")}
    headers = {name: _bundled_header(name, path) for name, path in paths.items()}
    name, doc = blend_model(g, dtype or carry_dtype(g, headers, PREFERRED_DTYPES), headers,
                            load=lambda n: _read_bundled(paths[n]))
    return Model(doc, name=name, path="", validate=False)  # every source was validated as it was read


def _bundled_header(name: str, path: Path) -> dict[str, Any]:
    """A bundled model's ``gpu`` and ``dtype``: from its name (``<gpu key>-<dtype>``), else from its file."""
    from .gpus import find_gpu

    key, _, dtype = name.rpartition("-")
    if dtype in DTYPES:
        try:
            return {"gpu": find_gpu(key).name, "dtype": dtype}
        except InputError:
            pass
    doc = _read_bundled(path)
    return {"gpu": doc["gpu"], "dtype": doc["dtype"]}


def load_model(name_or_path: str | os.PathLike[str] | None = None, *, method: str | None = None,
               gpu: str | None = None, dtype: str | None = None) -> Model:
    """Load a model: a bundled model's name (see ``neuralpower models``), or a model JSON file; or, with ``gpu``,
    the bundled model measured on that GPU for ``dtype`` (see :func:`model_for_gpu`).

    Parameters
    ----------
    name_or_path
        ``None`` or ``"default"`` for the bundled default model.
    method
        Evaluate this model kind (``poly``, ``tree``, ``roofline``, ``flops_linear``) where a layer type has
        it, instead of each type's default.
    gpu, dtype
        Pick the bundled model by GPU (``h200``, ``NVIDIA H100 80GB HBM3``, ...) and dtype instead of by name; a
        GPU with no bundled model of the dtype gets one carried from another GPU (see :func:`carried_model`).

    Raises
    ------
    InputError
        An unknown name, a file that is not a valid model (one line naming the file and the problem), both a
        name and a GPU, an unknown GPU, or one without the dtype's unit or any model to carry from.
    """
    if gpu is not None:
        if name_or_path is not None:
            raise InputError("give a model or a GPU, not both")
        name_or_path = model_for_gpu(gpu, dtype)
        if name_or_path is None:  # measured on another GPU, carried through the datasheets
            return carried_model(gpu, dtype)
    spec = DEFAULT_MODEL if name_or_path is None else os.fspath(name_or_path)
    bundled = bundled_models()
    if spec == DEFAULT_MODEL and not os.path.exists(spec):
        default = default_model_name()
        if default is None:
            raise InputError("no default model is bundled: give one with --model (a model JSON file)")
        spec = default
    if spec in bundled and not os.path.exists(spec):
        path = bundled[spec]
        return Model(_read_bundled(path), name=spec, path=str(path), method=method, validate=False)
    if os.path.exists(spec) or spec.endswith(".json") or os.sep in spec:
        return Model(read_model_file(spec), name=Path(spec).stem, path=spec, method=method, validate=False)
    known = ", ".join(bundled) if bundled else "none bundled"
    raise InputError(f"{spec!r} is neither a model file nor a bundled model ({known})")


def _flatten_tree(spec: Mapping[str, Any], leaf_count: int) -> dict[str, list[Any]]:
    """A validated tree in pre-order arrays: children always after their parent."""
    arrays: dict[str, list[Any]] = {k: [] for k in ("feature", "test", "value", "yes", "no", "intercept", "weights")}

    def visit(node: Mapping[str, Any]) -> int:
        i = len(arrays["test"])
        for k in arrays:
            if k != "weights":
                arrays[k].append(0)
        if "leaf" in node:
            arrays["test"][i] = 0
            arrays["intercept"][i] = float(node["leaf"]["intercept"])
            arrays["value"][i] = 0.0
            arrays["weights"].extend(float(w) for w in node["leaf"]["weights"])
            return i
        arrays["test"][i] = _TEST[node["test"]]
        arrays["feature"][i] = FEATURES.index(node["feature"])
        arrays["value"][i] = float(node["value"])
        arrays["intercept"][i] = 0.0
        arrays["weights"].extend([0.0] * leaf_count)
        arrays["yes"][i] = visit(node["yes"])
        arrays["no"][i] = visit(node["no"])
        return i

    visit(spec["root"])
    return arrays


def _compile(doc: Mapping[str, Any], method: str | None) -> Any:
    """Hand a validated model document to the C++ evaluator."""
    compiled = _ev.Model()
    if doc.get("blend"):  # evaluated by its members (see neuralpower.models.format)
        members = doc["blend"]
        compiled.set_blend([_compile(m["model"], method) for m in members], [float(m["weight"]) for m in members])
        compiled.finish()
        return compiled
    for type_name, entry in doc["layer_types"].items():
        code = LAYER_TYPES.index(type_name)
        for target_index, target in enumerate(_TARGETS):
            block = entry[target]
            spec = block["models"].get(method or block["default"], block["models"][block["default"]])
            kind = spec["kind"]
            if kind == "poly":
                terms = spec["terms"]
                starts = np.cumsum([0] + [len(t["powers"]) for t in terms]).tolist()
                compiled.set_poly(
                    code,
                    target_index,
                    _MODES[spec["target"]],
                    [FEATURES.index(i["feature"]) for i in spec["inputs"]],
                    [_TRANSFORM[i["transform"]] for i in spec["inputs"]],
                    float(spec["intercept"]),
                    starts,
                    [p[0] for t in terms for p in t["powers"]],
                    [p[1] for t in terms for p in t["powers"]],
                    [float(t["coef"]) for t in terms],
                )
            elif kind == "tree":
                leaf = [FEATURES.index(f) for f in spec["leaf_features"]]
                a = _flatten_tree(spec, len(leaf))
                compiled.set_tree(
                    code,
                    target_index,
                    leaf,
                    a["feature"],
                    a["test"],
                    a["value"],
                    a["yes"],
                    a["no"],
                    a["intercept"],
                    a["weights"],
                )
            elif kind == "boosted":
                b = flatten_boosted(spec, FEATURES)
                compiled.set_boosted(code, target_index, spec["target"] == "log", float(spec["base"]), b["tree_start"],
                                     b["feature"], b["value"], b["yes"], b["no"])
            elif kind == "roofline":
                compiled.set_linear(
                    code, target_index, _KIND[kind], spec["ms_per_flop"], spec["ms_per_byte"], spec["overhead"]
                )
            elif kind == "flops_linear":
                compiled.set_linear(code, target_index, _KIND[kind], spec["slope"], 0.0, spec["intercept"])
            else:
                compiled.set_linear(code, target_index, _KIND[kind], 0.0, 0.0, spec["value"])
            compiled.set_adjust(code, target_index, *adjustment(block))
            interval = _interval_of(block, method)
            if interval is not None:
                _set_interval(compiled, code, target_index, interval)
        energy = _energy_interval_of(entry, method)
        if energy is not None:
            _set_interval(compiled, code, 2, energy)
        if entry.get("floor") is not None:
            compiled.set_floor(code, float(entry["floor"]["ms"]), float(entry["floor"]["power_w"]))
        compiled.set_rows_layout(code, entry.get("layout") == "rows")
        stream = entry["runtime_ms"].get("stream", {})
        compiled.set_stream(code, float(stream.get("rows", 0.0)), float(stream.get("channels", 0.0)))
        names = list(entry["ranges"])
        compiled.set_ranges(
            code,
            [FEATURES.index(f) for f in names],
            [float(entry["ranges"][f][0]) for f in names],
            [float(entry["ranges"][f][1]) for f in names],
        )
    compiled.finish()
    return compiled


def _set_interval(compiled: Any, code: int, target: int, interval: Mapping[str, Any]) -> None:
    """Give the compiled model a target's interval, and its groups where it has them (flattened root first)."""
    compiled.set_interval(code, target, float(interval["lo"]), float(interval["hi"]))
    if interval.get("split") is None:
        return
    nodes: dict[str, list[Any]] = {k: [] for k in ("feature", "value", "yes", "no", "lo", "hi")}

    def add(node: Mapping[str, Any]) -> int:
        at = len(nodes["feature"])
        for k in nodes:
            nodes[k].append(-1 if k in ("feature", "yes", "no") else (1.0 if k == "hi" else 0.0))
        if "feature" in node:
            nodes["feature"][at] = FEATURES.index(node["feature"])
            nodes["value"][at] = float(node["value"])
            nodes["yes"][at] = add(node["yes"])
            nodes["no"][at] = add(node["no"])
        else:
            nodes["lo"][at], nodes["hi"][at] = float(node["lo"]), float(node["hi"])
        return at

    add(interval["split"])
    compiled.set_interval_groups(code, target, nodes["feature"], nodes["value"], nodes["yes"], nodes["no"],
                                 nodes["lo"], nodes["hi"])


def _energy_interval_of(entry: Mapping[str, Any], method: str | None) -> Mapping[str, Any] | None:
    """A layer type's own energy interval where ``method`` evaluates both targets' default models (it was calibrated
    on their predictions), and both targets have an interval; None otherwise."""
    if any(_interval_of(entry[t], method) is None for t in _TARGETS):
        return None
    interval: Mapping[str, Any] | None = entry.get("energy_interval")
    return interval


def _interval_of(block: Mapping[str, Any], method: str | None) -> Mapping[str, Any] | None:
    """A target's interval where ``method`` evaluates its default model: an interval is calibrated on the
    default model's residuals and belongs to it only (None otherwise, or when the block has none)."""
    if method is None or method == block["default"] or method not in block["models"]:
        return block.get("interval")
    return None


#: The sums of the layers' bounds kept per architecture (the compiled evaluator's ``bounds`` columns, in order):
#: runtime lo and hi; each layer's power bounds times its predicted runtime, lo and hi; energy lo and hi.
BOUND_SUMS = ("runtime_ms_lo", "runtime_ms_hi", "power_time_lo", "power_time_hi", "energy_mj_lo", "energy_mj_hi")


def interval_values(bounds: npt.NDArray[np.float64],
                    runtime_ms: npt.NDArray[np.float64]) -> dict[str, npt.NDArray[np.float64]]:
    """The intervals of architectures from their bound sums ``(n, 6)`` (:data:`BOUND_SUMS`) and predicted runtimes.
    Power's bounds are the layers' power bounds weighted by their predicted runtime (as the network's power is their
    power so weighted): they hold the predicted power. NaN where a layer type has no interval."""
    t_lo, t_hi, pt_lo, pt_hi, e_lo, e_hi = (bounds[:, k] for k in range(len(BOUND_SUMS)))
    t = np.asarray(runtime_ms, dtype=np.float64)

    def per_ms(pt: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(t > 0, pt / np.where(t > 0, t, 1.0), np.where(np.isnan(pt), np.nan, 0.0))

    return {"runtime_ms_lo": t_lo, "runtime_ms_hi": t_hi, "power_w_lo": per_ms(pt_lo),
            "power_w_hi": per_ms(pt_hi), "energy_mj_lo": e_lo, "energy_mj_hi": e_hi}


def _rebuild_model(doc: str, name: str, path: str, method: str | None) -> Model:
    """A pickled :class:`Model`, compiled again from its document (validated: a pickle may come from anywhere)."""
    return Model(json.loads(doc), name=name, path=path, method=method)


@dataclass
class Prediction:
    """A network's predicted runtime (ms), power (W) and energy (mJ), with its per-layer breakdown.

    With a model that holds prediction intervals, ``bounds`` gives the network's (``runtime_ms_lo``,
    ``runtime_ms_hi``, ``power_w_lo``, ``power_w_hi``, ``energy_mj_lo``, ``energy_mj_hi``) and
    ``layer_bounds`` the same per layer; both are empty otherwise.
    """

    arch: Architecture
    runtime_ms: float
    power_w: float
    energy_mj: float
    layer_runtime_ms: npt.NDArray[np.float64]
    layer_power_w: npt.NDArray[np.float64]
    layer_energy_mj: npt.NDArray[np.float64]
    layer_extrapolated: npt.NDArray[np.bool_]
    bounds: dict[str, float] = field(default_factory=dict)
    layer_bounds: dict[str, npt.NDArray[np.float64]] = field(default_factory=dict)
    #: Per layer, where its runtime and power come from (``runtime_source``, ``power_source``: see
    #: :meth:`Model.source`).
    layer_sources: dict[str, npt.NDArray[Any]] = field(default_factory=dict)
    _table: npt.NDArray[Any] | None = field(default=None, repr=False)

    @property
    def extrapolated(self) -> bool:
        """Whether any layer lies outside the feature ranges the model was fit on."""
        return bool(self.layer_extrapolated.any())

    @property
    def per_layer(self) -> npt.NDArray[Any]:
        """The per-layer breakdown as a record array: layer, type, runtime_ms, power_w, energy_mj, extrapolated,
        runtime_source, power_source (and the bounds, with a model that holds intervals)."""
        if self._table is None:
            table: npt.NDArray[Any] = np.rec.fromarrays(  # type: ignore[call-overload]
                [
                    np.array([layer.name for layer in self.arch.layers], dtype=object),
                    np.array([layer.type for layer in self.arch.layers], dtype=object),
                    self.layer_runtime_ms,
                    self.layer_power_w,
                    self.layer_energy_mj,
                    self.layer_extrapolated,
                    *self.layer_sources.values(),
                    *self.layer_bounds.values(),
                ],
                names=",".join(["layer", "type", "runtime_ms", "power_w", "energy_mj", "extrapolated",
                                *self.layer_sources, *self.layer_bounds]),
            )
            self._table = table
        return self._table

    @property
    def bottleneck(self) -> str:
        """The layer with the most energy (ties, as under a model without power, broken by runtime)."""
        order = np.lexsort((-np.arange(len(self.arch)), self.layer_runtime_ms, self.layer_energy_mj))
        return self.arch.layers[int(order[-1])].name


@dataclass
class Scores:
    """Per-architecture totals of :meth:`Model.score`; per-layer arrays when asked for (``score_table`` adds
    each layer's ``row`` in the table and ``position`` in its architecture)."""

    arch: list[str]
    layers: npt.NDArray[np.int64]
    runtime_ms: npt.NDArray[np.float64]
    power_w: npt.NDArray[np.float64]
    energy_mj: npt.NDArray[np.float64]
    bottleneck: list[str]
    extrapolated_layers: npt.NDArray[np.int64]
    per_layer: dict[str, npt.NDArray[Any]] | None = None
    #: With a model that holds intervals: runtime_ms_lo, runtime_ms_hi, power_w_lo, ... per architecture.
    bounds: dict[str, npt.NDArray[np.float64]] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.arch)


class Model:
    """A runtime and power model compiled for the C++ evaluator.

    Parameters
    ----------
    doc
        A model document, validated unless ``validate`` is false (``read_model_file`` has validated it).
    name, path
        Where it came from.
    method
        Evaluate this model kind where a layer type has it, instead of each type's default.
    """

    def __init__(
        self,
        doc: Mapping[str, Any],
        *,
        name: str = "",
        path: str = "",
        method: str | None = None,
        validate: bool = True,
    ) -> None:
        if validate:
            try:
                validate_model(doc)
            except ValueError as e:
                raise InputError(f"not a valid model: {e}", path=path or None) from None
        self.doc = dict(doc)
        self.name = name
        self.path = path
        self.method = method
        self._compiled = _compile(self.doc, method)
        self._dtype = str(self.doc["dtype"])
        self._source_texts: dict[str, npt.NDArray[Any]] = {}

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        # pickled as its JSON document: a worker process (Dask, multiprocessing) compiles it again
        return (_rebuild_model, (json.dumps(self.doc), self.name, self.path, self.method))

    @property
    def gpu(self) -> str:
        return str(self.doc["gpu"])

    @property
    def executor(self) -> str:
        return str(self.doc["executor"])

    @property
    def dtype(self) -> str:
        return self._dtype

    @property
    def power_measured(self) -> bool:
        """False when the tables it was fit from held no power measurements (power and energy are then 0)."""
        return bool(self.doc.get("power_measured", True))

    @property
    def layer_types(self) -> list[str]:
        return list(self.doc["layer_types"])

    @property
    def has_intervals(self) -> bool:
        """Whether the model holds prediction intervals (``fit`` calibrates them on held-out residuals)."""
        return bool(self._compiled.has_intervals)

    @property
    def interval_coverage(self) -> float | None:
        """The share of held-out cases the intervals were calibrated to hold (0.9), or None without them."""
        for entry in self.doc["layer_types"].values():
            interval = entry["runtime_ms"].get("interval")
            if interval is not None:
                return float(interval["coverage"])
        return None

    def source(self, layer_type: str, target: str) -> tuple[str, str]:
        """Where ``target``'s (``runtime_ms`` or ``power_w``) predictions of ``layer_type`` come from: (how, text),
        how being ``measured`` (on the model's GPU) or ``carried`` (from another GPU, dtype or layer type)."""
        entry = self.doc["layer_types"].get(layer_type)
        if entry is None:
            return ("measured", "costs nothing") if layer_type in FREE_TYPES else ("", "")
        if target == "power_w" and not self.power_measured:
            return ("", "no power measured")
        given = entry[target].get("source")
        if given is not None:
            return str(given["how"]), str(given["text"])
        return "measured", f"measured on {self.gpu} ({self.executor}, {self.dtype})"

    def source_texts(self, target: str) -> npt.NDArray[Any]:
        """Per layer type code, the text saying where ``target``'s predictions come from (see :meth:`source`):
        ``source_texts(target)[type_codes]`` labels layers (made once per model)."""
        if target not in self._source_texts:
            self._source_texts[target] = np.array([self.source(t, target)[1] for t in LAYER_TYPES], dtype=object)
        return self._source_texts[target]

    def layer_bounds(
        self, factors: npt.NDArray[np.float64], runtime_ms: npt.NDArray[np.float64], power_w: npt.NDArray[np.float64]
    ) -> dict[str, npt.NDArray[np.float64]]:
        """Per-layer interval bounds (``runtime_ms_lo``, ``runtime_ms_hi``, ``power_w_lo``, ...) of layers predicted
        ``runtime_ms`` and ``power_w`` whose interval factors the evaluator gave as ``factors`` ``(n, 6)``
        (runtime lo, hi, power lo, hi, energy lo, hi: their type's, or their group's); empty without intervals, NaN
        where a type has none (a free type such as flatten: exactly 0)."""
        if not self.has_intervals:
            return {}
        f = np.asarray(factors, dtype=np.float64)
        if f.shape != (len(runtime_ms), 6):
            raise ValueError(f"factors must be ({len(runtime_ms)}, 6), not {f.shape}")
        energy = runtime_ms * power_w
        return {
            "runtime_ms_lo": runtime_ms * f[:, 0], "runtime_ms_hi": runtime_ms * f[:, 1],
            "power_w_lo": power_w * f[:, 2], "power_w_hi": power_w * f[:, 3],
            "energy_mj_lo": energy * f[:, 4], "energy_mj_hi": energy * f[:, 5],
        }

    def __repr__(self) -> str:
        return f"Model({self.name!r}: {self.gpu}, {self.executor}, {self.dtype}, {len(self.layer_types)} layer types)"

    def _uncovered(self, rows: npt.NDArray[np.int64], index: int, where: str) -> InputError:
        t = LAYER_TYPES[int(rows[index, 0])]
        return InputError(f"{where}the model has no {t} model (it covers {', '.join(self.layer_types)})")

    def predict(self, arch: Architecture) -> Prediction:
        """Predict one architecture.

        Raises
        ------
        InputError
            The architecture's dtype differs from the model's, or a layer type has no model.
        """
        if arch.dtype != self._dtype:
            raise InputError(f"the model was fit for {self._dtype}, {arch.name} is {arch.dtype}", column="dtype")
        rows = arch.rows()
        r = self._compiled.evaluate(rows, False)
        if r["uncovered"] >= 0:
            raise self._uncovered(rows, r["uncovered"], f"{arch.name}: ")
        if not (np.isfinite(r["total_runtime_ms"]) and np.isfinite(r["total_energy_mj"])):
            bad = self._first_overflow(rows)
            raise self._overflow(arch.name, None if bad < 0 else (f"layer {arch.layers[bad].name}", rows[bad]))
        total_runtime, total_energy = r["total_runtime_ms"], r["total_energy_mj"]
        layer_bounds = self.layer_bounds(r["factors"], r["runtime_ms"], r["power_w"])
        bounds: dict[str, float] = {}
        if layer_bounds:
            # (the compiled sums of score: power's bounds weighted by each layer's predicted runtime)
            weight = {"power_w_lo": r["runtime_ms"], "power_w_hi": r["runtime_ms"]}
            sums = np.array([[(layer_bounds[k] * weight.get(k, 1.0)).sum() for k in
                              ("runtime_ms_lo", "runtime_ms_hi", "power_w_lo", "power_w_hi", "energy_mj_lo",
                               "energy_mj_hi")]])
            bounds = {k: float(v[0]) for k, v in interval_values(sums, np.array([total_runtime])).items()}
        return Prediction(
            arch,
            total_runtime,
            total_energy / total_runtime if total_runtime > 0 else 0.0,
            total_energy,
            r["runtime_ms"],
            r["power_w"],
            r["energy_mj"],
            r["extrapolated"],
            bounds,
            layer_bounds,
            self.layer_sources(rows[:, 0]),
        )

    def layer_sources(self, types: npt.NDArray[np.int64]) -> dict[str, npt.NDArray[Any]]:
        """Per layer of type codes ``types``: where its runtime and power come from (``runtime_source``,
        ``power_source``; see :meth:`source`)."""
        return {column: self.source_texts(t)[types] for t, column in SOURCE_COLUMNS.items()}

    def score_rows(
        self,
        rows: npt.NDArray[np.int64],
        offsets: npt.NDArray[np.int64],
        *,
        per_layer: bool = False,
        threads: int = 1,
    ) -> dict[str, Any]:
        """Evaluate layer rows of architectures ``rows[offsets[k]:offsets[k + 1]]`` (the fast path).

        ``rows`` are normalized layer rows (:func:`neuralpower.prepare_rows` makes them); each is validated
        again here, so that no row can make the evaluator compute from an invalid layer.

        Raises
        ------
        InputError
            A row is not a valid layer, ``offsets`` do not partition the rows, a layer's dtype differs from
            the model's, the model has no model of a layer's type, or its prediction is not finite.
        """
        rows = np.ascontiguousarray(rows, dtype=np.int64)
        offsets = np.ascontiguousarray(offsets, dtype=np.int64)
        if rows.ndim != 2 or rows.shape[1] != len(FIELD_INDEX):
            raise InputError(f"rows must be an (n, {len(FIELD_INDEX)}) array of layer rows, not {rows.shape}")
        return self._evaluate(rows, offsets, per_layer=per_layer, threads=threads, validate=True)

    def _evaluate(
        self,
        rows: npt.NDArray[np.int64],
        offsets: npt.NDArray[np.int64],
        *,
        per_layer: bool,
        threads: int,
        validate: bool,
        arch_names: Sequence[str] | None = None,
        index: npt.NDArray[np.int64] | None = None,
        cache: _ev.ResultCache | None = None,
    ) -> dict[str, Any]:
        """:meth:`score_rows` over rows that are checked (``validate``) or known valid (a layer table's). With
        ``index``, the layers are ``rows[index]`` (each of ``rows`` evaluated once, through ``cache`` when given:
        one kept across the blocks of a table)."""

        def layer_rows() -> npt.NDArray[np.int64]:
            """The layers' rows (made only for a message)."""
            return rows if index is None else rows[index]

        column = rows[:, FIELD_INDEX["dtype"]]
        own = DTYPES.index(self._dtype)
        # every row of the model's dtype is the common case, checked at once; otherwise find the first other one
        dtypes = np.array([], dtype=np.int64) if (column == own).all() else np.unique(column)
        for code in dtypes:
            if not 0 <= code < len(DTYPES):
                i = int(np.argmax(layer_rows()[:, FIELD_INDEX["dtype"]] == code))
                raise InputError(f"row {i}, field dtype: unknown dtype code {int(code)}")
            if DTYPES[int(code)] != self._dtype:
                i = int(np.argmax(layer_rows()[:, FIELD_INDEX["dtype"]] == code))
                raise InputError(
                    f"the model was fit for {self._dtype}, layer {i} is {DTYPES[int(code)]}", column="dtype"
                )
        try:
            out: dict[str, Any] = self._compiled.evaluate_archs(
                rows, offsets, per_layer, threads, validate, index, cache
            )
        except ValueError as e:  # a row or the offsets, checked by the bindings
            raise InputError(str(e)) from None
        if out["uncovered"] >= 0:
            raise self._uncovered(layer_rows(), out["uncovered"], "")
        finite = np.isfinite(out["runtime_ms"]) & np.isfinite(out["energy_mj"])
        if not finite.all():
            arch = int(np.flatnonzero(~finite)[0])
            start = int(offsets[arch])
            layers = layer_rows()
            layer = self._first_overflow(layers[start : int(offsets[arch + 1])])
            name = arch_names[arch] if arch_names is not None else f"architecture {arch}"
            raise self._overflow(name, None if layer < 0 else (f"layer {layer}", layers[start + layer]))
        return out

    def _bounds(self, sums: npt.NDArray[np.float64],
                runtime_ms: npt.NDArray[np.float64]) -> dict[str, npt.NDArray[np.float64]]:
        if not self.has_intervals:
            return {}
        return interval_values(sums, runtime_ms)

    def _first_overflow(self, rows: npt.NDArray[np.int64]) -> int:
        """The first of some rows whose runtime, power or energy prediction is not finite (-1: none is, but
        their sum is not)."""
        r = self._compiled.evaluate(rows, False)
        bad = ~(np.isfinite(r["runtime_ms"]) & np.isfinite(r["power_w"]) & np.isfinite(r["energy_mj"]))
        return int(np.flatnonzero(bad)[0]) if bad.any() else -1

    def _overflow(self, arch: str, layer: tuple[str, npt.NDArray[np.int64]] | None) -> InputError:
        """The error of a prediction that is not a finite number: the model's arithmetic overflowed, at a
        layer (its name and row) or in the architecture's total."""
        model = self.name or "(unnamed)"
        if layer is None:
            return InputError(f"{arch}: the total runtime or energy that model {model} predicts overflows")
        return InputError(
            f"{arch}, {layer[0]} ({LAYER_TYPES[int(layer[1][0])]}): model {model} predicts a runtime, power or "
            "energy that is not a finite number (its arithmetic overflows: the layer lies far outside what the "
            "model was fit on)"
        )

    def score(
        self, archs: Iterable[Architecture] | str | os.PathLike[str], *, per_layer: bool = False, threads: int = 1
    ) -> Scores:
        """Score many architectures at once: a list of them, or a layer table (a CSV or Parquet file, or a
        folder of Parquet files).

        Returns per-architecture totals (and per-layer values when ``per_layer``). A table is read block by
        block (:mod:`neuralpower.stream`): memory stays bounded whatever its size, unless ``per_layer`` asks
        for every layer's values in memory.
        """
        if isinstance(archs, str | os.PathLike):
            from .stream import prefetch, read_blocks, score_blocks

            if per_layer:
                from .table import read_layer_table

                return self.score_table(read_layer_table(archs), per_layer=True, threads=threads)
            totals = score_blocks(self, prefetch(read_blocks(archs, extra={"error"}, whole=True)), threads=threads)
            return Scores(
                bounds=self._bounds(totals.bounds, totals.runtime_ms),
                arch=totals.names,
                layers=totals.layers.copy(),
                runtime_ms=totals.runtime_ms.copy(),
                power_w=totals.power_w,
                energy_mj=totals.energy_mj.copy(),
                bottleneck=totals.bottleneck,
                extrapolated_layers=totals.extrapolated_layers.copy(),
            )
        items = list(archs)
        if not items:
            raise InputError("no architectures to score")
        rows = np.concatenate([a.rows() for a in items]) if len(items) > 1 else items[0].rows()
        offsets = np.cumsum([0] + [len(a) for a in items]).astype(np.int64)

        def names(arch_index: npt.NDArray[np.int64], position: npt.NDArray[np.int64]) -> list[str]:
            return [items[int(a)].layers[int(p)].name for a, p in zip(arch_index, position, strict=True)]

        return self._scores([a.name for a in items], rows, offsets, names, per_layer, threads)

    def score_table(self, table: Any, *, per_layer: bool = False, threads: int = 1) -> Scores:
        """Score every architecture of a :class:`~neuralpower.table.LayerTable`."""
        order, offsets, archs = table.grouping()
        rows, at = table.rows_in_order(order)  # each distinct row evaluated once, the rows not made

        def names(arch_index: npt.NDArray[np.int64], position: npt.NDArray[np.int64]) -> list[str]:
            index = offsets[arch_index] + position
            return list(table.layer_names_at(index if order is None else order[index], position))

        try:
            scores = self._scores(archs, rows, offsets, names, per_layer, threads, index=at)
        except InputError as e:
            if e.path is None:
                raise InputError(e.message, path=table.path, column=e.column) from None
            raise
        if scores.per_layer is not None:
            # where each evaluated layer stands in the table, and in its architecture
            n = len(table)
            scores.per_layer["row"] = np.arange(n) if order is None else order
            scores.per_layer["position"] = np.arange(n) - np.repeat(offsets[:-1], np.diff(offsets))
        return scores

    def _scores(
        self,
        archs: Sequence[str],
        rows: npt.NDArray[np.int64],
        offsets: npt.NDArray[np.int64],
        layer_names: Callable[[npt.NDArray[np.int64], npt.NDArray[np.int64]], list[str]],
        per_layer: bool,
        threads: int,
        index: npt.NDArray[np.int64] | None = None,
    ) -> Scores:
        """Scores of architectures ``rows[offsets[k]:offsets[k + 1]]`` (with ``index``: of ``rows[index]``)."""
        out = self._evaluate(
            rows, offsets, per_layer=per_layer, threads=threads, validate=False, arch_names=archs, index=index
        )
        bottleneck = layer_names(np.arange(len(archs), dtype=np.int64), out["bottleneck"])
        layers_dict = None
        if per_layer:
            layers_dict = {
                k[len("layer_") :]: out[k]
                for k in ("layer_runtime_ms", "layer_power_w", "layer_energy_mj", "layer_extrapolated")
            }
            layers_dict.update(self.layer_bounds(out["layer_factors"], out["layer_runtime_ms"], out["layer_power_w"]))
        return Scores(
            bounds=self._bounds(out["bounds"], out["runtime_ms"]),
            arch=list(archs),
            layers=np.diff(offsets),
            runtime_ms=out["runtime_ms"],
            power_w=out["power_w"],
            energy_mj=out["energy_mj"],
            bottleneck=bottleneck,
            extrapolated_layers=out["extrapolated"],
            per_layer=layers_dict,
        )
