"""NeuSight's whole-network measurements: end-to-end latencies, per-node traces and the peers' predictions.

NeuSight (github.com/sitar-lab/NeuSight, MIT license) measured Hugging Face transformers end to end on real
GPUs (PyTorch 2.1, fp32, eager attention) and traced each with torch.fx, one transformer block plus the
embeddings and the head, every node timed alone:

- ``<gpu>/<model>-inf-<seq_len>-<batch>.json``: ``e2e_latency`` (ms) of one forward pass; ``num_layer``, the
  number of transformer blocks the network runs;
- ``<gpu>/<model>-inf-<seq_len>-<batch>.csv.gz``: the trace, one node a row (``op``, ``target``,
  ``input_shapes``, ``output_shape``, ``latency`` in ms, ``meta`` with the module path, ...);
- ``predicted/<gpu>/<method>/<model>-inf-<seq_len>-<batch>.json``: what NeuSight, Habitat, a roofline and
  NeuSight's "micro" baseline predicted for the same network (the same ``e2e_latency`` field).

This module reads them. Each traced node is one of:

- ``free``: it runs no kernel inside a network: Python scalar arithmetic on sizes, views (``view``,
  ``permute``, ``transpose``, ``split``, a slice), ``dropout`` (identity in eval mode), a ``contiguous`` or
  ``reshape`` of a tensor that is already contiguous, a ``to``/``type`` that keeps the dtype. Timed alone, each
  still took 10-25 us (the timing's own launch and synchronisation): in the network they cost nothing on the
  GPU.
- ``layer``: a kernel that is a neuralpower layer: ``linear`` (``nn.Linear``, and ``addmm`` for GPT-2's
  ``Conv1D``), ``matmul`` (``matmul``/``bmm`` of two activations), ``softmax``, ``layernorm``, ``gelu``,
  ``relu``, ``tanh``, ``embedding``, element-wise ``add``/``mul`` (``sub``, ``truediv``, ``where``, ``max`` and
  ``pow`` too; ``broadcast`` where the second operand is a scalar or smaller than the output), and a copy
  (``contiguous`` after a transpose, ``reshape`` of a non-contiguous tensor) as a one-input ``concat``.
- ``other``: a kernel neuralpower has no layer type for: tensor creation (``ones``, ``arange``, ``full``,
  ``tensor``), a few microseconds each, left out of network predictions and said so.
"""

from __future__ import annotations

import csv
import gzip
import json
import math
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ._text import text_table
from .errors import InputError
from .layers import Layer

__all__ = [
    "CALIBRATED_TYPES",
    "NetworkCase",
    "Node",
    "calibration",
    "case_name",
    "format_neusight",
    "is_neusight",
    "plot_neusight",
    "read_case",
    "read_cases",
    "read_peers",
    "read_trace",
    "trace_ratios",
    "trace_table",
    "validate_neusight",
]

# NeuSight's case files: <model>-inf-<seq_len>-<batch>.json
_CASE = re.compile(r"^(?P<model>.+)-inf-(?P<seq>\d+)-(?P<batch>\d+)\.json$")
# the module path of the first transformer block in a node's meta (BERT, GPT-2, OPT)
_BLOCK = re.compile(r"\.(?:layer|h|layers)\.0(?:[.'\"\]]|$)")
_VIEW_METHODS = {"size", "view", "permute", "transpose", "expand", "dim", "unsqueeze", "squeeze", "split", "chunk",
                 "to", "type", "float", "__getitem__"}
_FREE_FUNCTIONS = {"getitem", "getattr", "finfo", "eq", "ne", "lt", "gt", "le", "ge", "floordiv"}
_CREATION = {"ones", "zeros", "arange", "full", "tensor", "empty", "ones_like", "zeros_like", "full_like"}
_ELEMENTWISE = {"add": "add", "sub": "add", "mul": "mul", "truediv": "mul", "div": "mul", "where": "add",
                "max": "add", "maximum": "add", "min": "add", "minimum": "add", "pow": "mul", "masked_fill": "add"}
_ACTIVATIONS = {"gelu": "gelu", "newgeluactivation": "gelu", "geluactivation": "gelu", "relu": "relu",
                "tanh": "tanh", "sigmoid": "sigmoid", "silu": "silu"}
_REQUIRED = ("op", "target", "input_shapes", "output_shape", "latency", "meta", "Name")

csv.field_size_limit(2**31 - 1)


@dataclass
class Node:
    """One traced node: what it is, the layer it runs (``kind == "layer"``), its latency measured alone and how
    many times the network runs it (``repeat``: the number of blocks for a node of the traced block)."""

    name: str
    op: str
    target: str
    kind: str  # free, layer or other
    why: str
    latency_ms: float
    repeat: int
    layer: Layer | None = None
    row: int = 0  # spreadsheet row (header = 1)


@dataclass
class NetworkCase:
    """One network NeuSight measured on one GPU."""

    gpu: str  # the folder's name (NeuSight's device name, spaces as underscores)
    model: str
    seq_len: int
    batch: int
    e2e_ms: float
    num_layer: int
    path: str
    trace: str | None = None

    @property
    def name(self) -> str:
        return case_name(self.model, self.seq_len, self.batch)


def case_name(model: str, seq_len: int, batch: int) -> str:
    return f"{model}-inf-{seq_len}-{batch}"


def _open(path: str) -> Any:
    return gzip.open(path, "rt", newline="") if path.endswith(".gz") else open(path, newline="")


def _e2e(path: str) -> tuple[float, int]:
    try:
        with open(path) as f:
            doc = json.load(f)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise InputError(f"not a NeuSight network file ({type(e).__name__}: {e})", path=path) from None
    if not isinstance(doc, dict):
        raise InputError("not a NeuSight network file (not a JSON object)", path=path)
    e2e = doc.get("e2e_latency")
    if isinstance(e2e, bool) or not isinstance(e2e, (int, float)) or not math.isfinite(e2e) or e2e <= 0:
        raise InputError(f"e2e_latency must be a positive number of ms, not {e2e!r}", path=path, column="e2e_latency")
    n = doc.get("num_layer") or 0  # null for the Switch model
    if isinstance(n, bool) or not isinstance(n, int) or n < 0:
        raise InputError(f"num_layer must be a non-negative integer, not {n!r}", path=path, column="num_layer")
    return float(e2e), n


def read_case(path: str | os.PathLike[str]) -> NetworkCase:
    """One measured network from its ``<model>-inf-<seq_len>-<batch>.json`` (its trace beside it, if any)."""
    path = os.fspath(path)
    m = _CASE.match(os.path.basename(path))
    if not m:
        raise InputError("not a NeuSight network file: the name is not <model>-inf-<seq_len>-<batch>.json",
                         path=path)
    e2e, n = _e2e(path)
    trace = path[:-5] + ".csv.gz"
    if not os.path.exists(trace):
        trace = path[:-5] + ".csv"
    return NetworkCase(os.path.basename(os.path.dirname(os.path.abspath(path))), m["model"], int(m["seq"]),
                       int(m["batch"]), e2e, n, path, trace if os.path.exists(trace) else None)


def read_cases(sources: Sequence[str | os.PathLike[str]]) -> list[NetworkCase]:
    """Every measured network in ``sources`` (case files, or folders searched for them)."""
    files: list[str] = []
    for s in (os.fspath(x) for x in sources):
        if os.path.isdir(s):
            for root, dirs, names in os.walk(s):
                dirs.sort()
                files += [os.path.join(root, n) for n in sorted(names) if _CASE.match(n)]
        elif os.path.exists(s):
            files.append(s)
        else:
            raise InputError("no such file or folder", path=s)
    if not files:
        raise InputError("no NeuSight network files (<model>-inf-<seq_len>-<batch>.json) found",
                         path=", ".join(os.fspath(x) for x in sources))
    return [read_case(f) for f in files]


def read_peers(folder: str | os.PathLike[str], gpu: str) -> dict[str, dict[str, float]]:
    """The peers' predictions of ``gpu``'s networks: ``{method: {case name: e2e ms}}`` from
    ``folder/<gpu>/<method>/`` (or ``folder/<method>/`` when ``folder`` is one GPU's)."""
    folder = os.fspath(folder)
    if not os.path.isdir(folder):
        raise InputError("not a folder of predictions", path=folder)
    base = os.path.join(folder, gpu) if os.path.isdir(os.path.join(folder, gpu)) else folder
    out: dict[str, dict[str, float]] = {}
    for method in sorted(os.listdir(base)):
        d = os.path.join(base, method)
        if not os.path.isdir(d):
            continue
        for n in sorted(os.listdir(d)):
            m = _CASE.match(n)
            if m:
                out.setdefault(method, {})[n[:-5]] = _e2e(os.path.join(d, n))[0]
    return out


def _shape(text: str, path: str, row: int, column: str) -> Any:
    try:
        v = json.loads(text.replace("(", "[").replace(")", "]").replace(",]", "]"))
    except json.JSONDecodeError:
        raise InputError(f"not a shape: {text[:60]!r}", path=path, row=row, column=column) from None
    return v


def _numel(shape: Sequence[int]) -> int:
    return math.prod(shape) if shape else 1


def _is_shape(v: Any) -> bool:
    return isinstance(v, list) and all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in v)


def _callee(op: str, target: str) -> str:
    """``add`` of ``<built-in function add>``, ``matmul`` of ``<built-in method matmul of ...>``."""
    if op == "call_function":
        m = re.match(r"<(?:built-in (?:function|method)|function|class) '?([\w.]+)", target)
        return (m.group(1).rsplit(".", 1)[-1] if m else target).lower()
    return target.lower()


def _module_class(meta: str, target: str) -> str:
    """The class name of the module ``target`` (from the node's ``nn_module_stack``)."""
    m = re.search(re.escape(f"('{target}', <class '") + r"([\w.]+)'>", meta)
    return m.group(1).rsplit(".", 1)[-1].lower() if m else ""


def _node(op: str, target: str, meta: str, ins: list[list[int]], out: list[int],
          contiguous: bool) -> tuple[str, str, str | None, dict[str, int]]:
    """``(kind, why, layer type, fields)`` of one node (fields in the layout NeuSight's tables have; fp32)."""
    fn = _callee(op, target) if op == "call_function" else target.lower()
    tensors = [s for s in ins if _numel(s) > 1]
    if op in ("placeholder", "get_attr", "output"):
        return "free", op, None, {}
    if op == "call_module":
        cls = _module_class(meta, target)
        x = ins[0] if ins else out
        if cls == "linear":
            return "layer", "nn.Linear", "linear", {"batch": 1, "tokens": _numel(x[:-1]), "in_features": x[-1],
                                                   "out_features": out[-1], "bias": 1}
        if cls == "embedding":
            return "layer", "nn.Embedding", "embedding", {"batch": 1, "tokens": _numel(x), "in_features": 1,
                                                          "out_features": out[-1]}
        if cls == "layernorm":
            return "layer", "nn.LayerNorm", "layernorm", {"batch": 1, "tokens": _numel(x[:-1]),
                                                          "in_features": x[-1]}
        if cls == "dropout":
            return "free", "dropout (identity in eval mode)", None, {}
        if cls in _ACTIVATIONS:
            kind = _ACTIVATIONS[cls]
            fields = _rows(out)
            if kind == "gelu" and cls == "newgeluactivation":
                fields["approximate"] = 1
            return "layer", f"{cls} module", kind, fields
        return "other", f"module {cls or target} (no layer type)", None, {}
    if fn in _FREE_FUNCTIONS or (not tensors and _numel(out) <= 1 and fn not in _CREATION):
        return "free", "Python arithmetic on sizes", None, {}
    if op == "call_method":
        if fn in ("contiguous", "reshape", "clone"):
            if contiguous and fn != "clone":
                return "free", f"{fn} of a contiguous tensor (a view)", None, {}
            return "layer", f"{fn}: a copy", "concat", {**_rows(out), "inputs": 1}
        if fn in _VIEW_METHODS:
            return "free", f"{fn} (a view)", None, {}
        if fn in ("softmax",):
            return "layer", "softmax", "softmax", {**_rows(out), "channels_first": 0}
    if fn in _CREATION:
        return "other", f"{fn}: tensor creation (no layer type)", None, {}
    if fn == "dropout":
        return "free", "dropout (identity in eval mode)", None, {}
    if fn == "embedding" and len(ins) >= 2 and len(ins[1]) == 2:  # F.embedding(ids, weight)
        return "layer", "F.embedding", "embedding", {"batch": 1, "tokens": _numel(ins[0]), "in_features": ins[1][0],
                                                     "out_features": ins[1][1]}
    if fn in ("matmul", "bmm") and len(tensors) == 2:
        a, b = ins[0], ins[1]
        if len(a) < 2 or len(b) < 2:
            return "other", f"{fn} of vectors (no layer type)", None, {}
        batch = _numel(out[:-2])
        return "layer", f"{fn} of two activations", "matmul", {"batch": batch, "tokens": a[-2],
                                                               "in_features": a[-1], "out_features": b[-1]}
    if fn == "addmm" and len(ins) == 3:
        a, w = ins[1], ins[2]
        return "layer", "addmm (Conv1D: bias + x @ W)", "linear", {"batch": 1, "tokens": a[0],
                                                                    "in_features": a[1], "out_features": w[1],
                                                                    "bias": 1}
    if fn == "softmax":
        return "layer", "softmax", "softmax", {**_rows(out), "channels_first": 0}
    if fn == "layer_norm":
        return "layer", "layer_norm", "layernorm", {"batch": 1, "tokens": _numel(out[:-1]), "in_features": out[-1]}
    if fn in _ACTIVATIONS:
        return "layer", fn, _ACTIVATIONS[fn], _rows(out)
    if fn in _ELEMENTWISE:
        n = _numel(out)
        full = sum(_numel(s) == n for s in tensors)
        if full >= 2:
            return "layer", f"{fn} of {full} tensors", _ELEMENTWISE[fn], {**_rows(out), "inputs": full}
        # one tensor and a scalar or a smaller operand: broadcast, as the importers write it (the second
        # operand per channel of [batch, in_channels, in_h]: small beside the tensor)
        return "layer", f"{fn} with a broadcast operand", _ELEMENTWISE[fn], {
            "batch": out[0] if len(out) > 1 else 1, "in_channels": out[-1] if out else 1,
            "in_h": max(1, _numel(out[1:-1])), "inputs": 2, "broadcast": 1}
    return "other", f"{fn or target} (no layer type)", None, {}


def _rows(shape: Sequence[int]) -> dict[str, int]:
    """A tensor as rows x its last axis (``batch`` x ``in_channels``), the layout NeuSight's tables have."""
    return {"batch": max(1, _numel(shape[:-1])), "in_channels": shape[-1] if shape else 1}


def read_trace(path: str | os.PathLike[str], num_layer: int = 1) -> list[Node]:
    """The nodes of one NeuSight trace, each classified (see the module's notes); the nodes of the traced
    transformer block repeat ``num_layer`` times."""
    path = os.fspath(path)
    try:
        with _open(path) as f:
            reader = csv.DictReader(f)
            missing = [c for c in _REQUIRED if c not in (reader.fieldnames or ())]
            if missing:
                raise InputError(f"not a NeuSight trace: no {missing[0]} column", path=path, column=missing[0])
            raw = list(reader)
    except (OSError, UnicodeDecodeError, EOFError, csv.Error) as e:
        raise InputError(f"not a NeuSight trace ({type(e).__name__}: {e})", path=path) from None
    block = [i for i, r in enumerate(raw) if _BLOCK.search(r["meta"] or "")]
    first, last = (block[0], block[-1]) if block else (len(raw), -1)
    nodes = []
    for i, r in enumerate(raw):
        row = i + 2
        try:
            latency = float(r["latency"])
        except (TypeError, ValueError):
            latency = math.nan
        if not math.isfinite(latency) or latency < 0:
            raise InputError(f"latency must be a non-negative number of ms, not {r['latency']!r}", path=path,
                             row=row, column="latency")
        ins = _shape(r["input_shapes"] or "[]", path, row, "input_shapes")
        out = _shape(r["output_shape"] or "[]", path, row, "output_shape")
        if not (isinstance(ins, list) and all(_is_shape(s) for s in ins)):
            ins = [s for s in ins if _is_shape(s)] if isinstance(ins, list) else []
        if not _is_shape(out):
            out = ins[0] if ins else []
        contiguous = (r.get("input_contiguous") or "").startswith("[True")
        kind, why, layer_type, fields = _node(r["op"], r["target"], r["meta"] or "", ins, out, contiguous)
        layer = None
        if layer_type is not None:
            try:
                layer = Layer(layer_type, name=r["Name"], **fields)
            except InputError as e:
                raise InputError(f"node {r['Name']}: {e}", path=path, row=row) from None
        nodes.append(Node(r["Name"], r["op"], r["target"], kind, why, latency,
                          num_layer if first <= i <= last else 1, layer, row))
    return nodes


# -- validation ---------------------------------------------------------------------------------------------------


def _trace_of(case: NetworkCase, traces: dict[str, list[Node]] | None) -> list[Node] | None:
    """``case``'s trace (None: it has none), read once where ``traces`` keeps them."""
    if case.trace is None:
        return None
    if traces is None:
        return read_trace(case.trace, case.num_layer)
    if case.trace not in traces:
        traces[case.trace] = read_trace(case.trace, case.num_layer)
    return traces[case.trace]


def _model_for(case: NetworkCase, given: Any, cache: dict[str, Any]) -> Any:
    """The model predicting ``case``: the one given, or the bundled (or carried) fp32 model of its GPU."""
    if given is not None:
        return given
    if case.gpu not in cache:
        from .evaluator import load_model

        try:
            cache[case.gpu] = load_model(gpu=case.gpu, dtype="fp32")
        except InputError as e:
            raise InputError(f"GPU {case.gpu!r} (from the folder's name): {e.message}; give --gpu or --model",
                             path=case.path) from None
    return cache[case.gpu]


def _pct(pred: float, measured: float) -> float:
    return 100.0 * (pred - measured) / measured


def _mape(errors: Sequence[float]) -> float | None:
    return float(sum(abs(e) for e in errors) / len(errors)) if errors else None


def _held_out(m: Any, c: NetworkCase, cases: Sequence[NetworkCase], cache: dict[Any, Any],
              traces: dict[str, list[Node]]) -> tuple[Any, Any]:
    """``m`` with its :data:`CALIBRATED_TYPES` scaled by the traces of the other networks of ``c``'s GPU among
    ``cases`` (leave one network out), and the scales."""
    from .evaluator import Model

    key = (id(m), c.gpu)
    if key not in cache:
        plain = dict(m.doc)
        plain["layer_types"] = dict(m.doc["layer_types"])
        for t in CALIBRATED_TYPES:
            if t in plain["layer_types"]:
                entry = plain["layer_types"][t]
                runtime = {k: v for k, v in entry["runtime_ms"].items() if k != "scale"}
                plain["layer_types"][t] = {**entry, "runtime_ms": runtime}
        same_gpu = [o for o in cases if o.gpu == c.gpu]
        cache[key] = (plain, trace_ratios(same_gpu, Model(plain, validate=False), traces=traces))
    plain, ratios = cache[key]
    doc = dict(plain)
    doc["layer_types"] = dict(plain["layer_types"])
    scales = {t: cal["scale"] for t, cal in calibration(ratios, exclude=c.model).items()}
    for t, scale in scales.items():
        entry = doc["layer_types"][t]
        doc["layer_types"][t] = {**entry, "runtime_ms": {**entry["runtime_ms"], "scale": scale}}
    return Model(doc, name=f"{m.name or m.path} ({', '.join(scales) or 'nothing'} calibrated without {c.model})",
                 validate=False), scales


def validate_neusight(sources: Sequence[str | os.PathLike[str]], model: Any = None, *,
                      peers: str | os.PathLike[str] | None = None, nodes: bool = False,
                      held_out: bool = False) -> dict[str, Any]:
    """Predict every network NeuSight measured in ``sources`` and compare with its end-to-end latency.

    Each network is the zoo's eager build of its configuration (:mod:`neuralpower.zoo.hf_eager`) at the measured
    batch and sequence length, predicted with ``model`` (default: the bundled fp32 model of the GPU the folder is
    named after, or one carried to it through the datasheets). With ``peers`` (NeuSight's ``predicted`` folder),
    each case also gets the peers' predictions and each peer its MAPE over the same cases. With ``nodes``, every
    traced node that runs a kernel is compared with its layer's prediction (both measured alone). With ``held_out``,
    each network is predicted with the model's :data:`CALIBRATED_TYPES` scaled by the traces of the other networks of
    its GPU in ``sources`` only, in place of any calibration the model holds (leave one network out: the bundled
    NeuSight models are calibrated to these very traces).

    Returns the record ``neuralpower validate --format json`` prints: ``runtime_mape``, ``networks``, ``cases``,
    ``peers``, ``skipped`` (networks with no zoo build), and with ``nodes`` the per-node rows and per-type MAPE.

    Raises
    ------
    InputError
        No case files, a malformed one, a GPU neither given nor known by its folder's name, a layer type the model
        does not cover.
    """
    from . import zoo
    from .zoo.hf_eager import NEUSIGHT_MODELS

    cases = read_cases(sources)
    models: dict[str, Any] = {}
    held: dict[Any, Any] = {}
    traces: dict[str, list[Node]] = {}  # each trace read once
    peer_cache: dict[str, dict[str, dict[str, float]]] = {}
    out_cases: list[dict[str, Any]] = []
    node_rows: list[dict[str, Any]] = []
    skipped: list[str] = []
    for c in cases:
        if c.model not in NEUSIGHT_MODELS:
            skipped.append(f"{c.gpu}/{c.name}")
            continue
        m = _model_for(c, model, models)
        scales = None
        if held_out:
            if m.doc.get("blend"):
                raise InputError(f"--held-out calibrates a model's {', '.join(CALIBRATED_TYPES)} to the traces, and "
                                 f"{m.name or m.path} is a blend of other GPUs' models (carried, its own types are not "
                                 "evaluated): give a model of one GPU", path=c.path)
            m, scales = _held_out(m, c, cases, held, traces)
        arch = zoo.build(NEUSIGHT_MODELS[c.model], batch=c.batch, seq_len=c.seq_len, dtype="fp32")
        if arch.dtype != m.dtype:
            raise InputError(f"NeuSight's networks ran in fp32, the model {m.name or m.path} was fit for {m.dtype}",
                             path=c.path)
        try:
            p = m.predict(arch)
        except InputError as e:
            raise InputError(e.message, path=c.path) from None
        case: dict[str, Any] = {
            "gpu": c.gpu, "network": c.name, "model": c.model, "zoo": NEUSIGHT_MODELS[c.model], "batch": c.batch,
            "seq_len": c.seq_len, "measured_ms": c.e2e_ms, "predicted_ms": p.runtime_ms,
            "error_pct": _pct(p.runtime_ms, c.e2e_ms), "predicted_by": m.name or m.path, "layers": len(arch),
        }
        if scales is not None:
            case["calibration"] = scales  # the held-out scale of each calibrated type
        lo, hi = p.bounds.get("runtime_ms_lo"), p.bounds.get("runtime_ms_hi")
        if lo is not None and hi is not None and math.isfinite(lo) and math.isfinite(hi):
            case["interval_ms"] = [lo, hi]  # the layers' 90 % intervals, summed
        traced = _trace_of(c, traces)
        if traced is not None:
            case["nodes_alone_ms"] = sum(n.latency_ms * n.repeat for n in traced if n.kind != "free")
            case["free_nodes_alone_ms"] = sum(n.latency_ms * n.repeat for n in traced if n.kind == "free")
            if nodes:
                node_rows += _node_predictions(c, traced, m)
        if peers is not None:
            if c.gpu not in peer_cache:
                peer_cache[c.gpu] = read_peers(peers, c.gpu)
            case["peers"] = {k: v[c.name] for k, v in peer_cache[c.gpu].items() if c.name in v}
        out_cases.append(case)
    if not out_cases:
        raise InputError(f"none of the networks has a zoo build (known: {', '.join(NEUSIGHT_MODELS)}; found: "
                         f"{', '.join(skipped)})", path=", ".join(os.fspath(x) for x in sources))
    covered = [x["interval_ms"][0] <= x["measured_ms"] <= x["interval_ms"][1] for x in out_cases if "interval_ms" in x]
    record: dict[str, Any] = {
        "runtime_mape": _mape([x["error_pct"] for x in out_cases]),
        "networks": len(out_cases),
        "cases": out_cases,
        "skipped": skipped,
        # the share of networks whose measured runtime lay within the sum of their layers' 90 % intervals
        # percent, as validate gives it for the other measured networks
        "runtime_interval_coverage": 100 * sum(covered) / len(covered) if covered else None,
        "runtime_intervals": len(covered),
        "held_out": held_out,
    }
    methods = sorted({k for x in out_cases for k in x.get("peers", {})})
    record["peers"] = {}
    for k in methods:
        errs = [_pct(x["peers"][k], x["measured_ms"]) for x in out_cases if k in x.get("peers", {})]
        ours = [x["error_pct"] for x in out_cases if k in x.get("peers", {})]
        record["peers"][k] = {"runtime_mape": _mape(errs), "networks": len(errs), "ours_runtime_mape": _mape(ours)}
    if nodes:
        record["nodes"] = node_rows
        by_type: dict[str, list[float]] = {}
        for r in node_rows:
            if r["predicted_ms"] is not None:
                by_type.setdefault(r["type"], []).append(r["error_pct"])
        record["node_mape"] = {}
        for t, v in sorted(by_type.items()):
            rows = [r for r in node_rows if r["type"] == t and r["predicted_ms"] is not None]
            record["node_mape"][t] = {
                "mape": _mape(v), "nodes": len(v),
                # each node times its repeats: what the type takes in the networks, measured alone and predicted
                "measured_ms": sum(r["measured_ms"] * r["repeat"] for r in rows),
                "predicted_ms": sum(r["predicted_ms"] * r["repeat"] for r in rows)}
    return record


def _node_predictions(c: NetworkCase, traced: Sequence[Node], m: Any) -> list[dict[str, Any]]:
    """Each traced kernel node of case ``c``: measured alone, and its layer as ``m`` predicts it."""
    import numpy as np

    kernels = [n for n in traced if n.kind != "free"]
    covered = [n for n in kernels if n.layer is not None and n.layer.type in m.layer_types]
    pred: dict[int, float] = {}
    if covered:
        rows = np.array([n.layer.row for n in covered if n.layer is not None])
        r = m.score_rows(rows, np.array([0, len(rows)]), per_layer=True)
        pred = {id(n): float(v) for n, v in zip(covered, r["layer_runtime_ms"], strict=True)}
    out = []
    for n in kernels:
        v = pred.get(id(n))
        out.append({"gpu": c.gpu, "network": c.name, "node": n.name, "kind": n.kind, "why": n.why,
                    "type": n.layer.type if n.layer is not None else None, "repeat": n.repeat,
                    "measured_ms": n.latency_ms, "predicted_ms": v,
                    "error_pct": _pct(v, n.latency_ms) if v is not None and n.latency_ms > 0 else None})
    return out


def format_neusight(record: dict[str, Any]) -> str:
    """The table ``neuralpower validate`` prints for NeuSight's networks."""
    methods = list(record["peers"])
    head = ["gpu", "network", "measured ms", "predicted ms", "error", "alone ms", *methods]
    rows = []
    for x in record["cases"]:
        alone = x.get("nodes_alone_ms")
        rows.append([x["gpu"], x["network"], f"{x['measured_ms']:.1f}", f"{x['predicted_ms']:.1f}",
                     f"{x['error_pct']:+.1f}%", "-" if alone is None else f"{alone:.1f}",
                     *[f"{_pct(x['peers'][k], x['measured_ms']):+.1f}%" if k in x.get("peers", {}) else "-"
                       for k in methods]])
    lines = text_table(head, rows, right=range(2, len(head)))
    lines.append(f"runtime MAPE {record['runtime_mape']:.1f}% over {record['networks']} networks (ours"
                 + (", each with linear calibrated to the traces of its GPU's other networks only)" if
                    record.get("held_out") else ")"))
    if record.get("runtime_interval_coverage") is not None:
        lines.append(f"the sums of the layers' 90% intervals held {record['runtime_interval_coverage']:.0f}% of the "
                     f"{record['runtime_intervals']} measured runtimes")
    for k, v in record["peers"].items():
        lines.append(f"  {k}: {v['runtime_mape']:.1f}% over the {v['networks']} networks it predicted "
                     f"(ours on the same: {v['ours_runtime_mape']:.1f}%)")
    lines.append("alone ms: the traced kernels each measured alone, added up (NeuSight's traces)")
    if record["skipped"]:
        lines.append(f"no zoo build, not predicted: {', '.join(record['skipped'])}")
    if "node_mape" in record:
        lines.append("traced kernels, measured alone against their layers' predictions, per layer type:")
        body = [[t, str(v["nodes"]), f"{v['mape']:.1f}%", f"{v['measured_ms']:.1f}", f"{v['predicted_ms']:.1f}"]
                for t, v in record["node_mape"].items()]
        lines += ["  " + line for line in text_table(["type", "nodes", "MAPE", "measured ms", "predicted ms"], body,
                                                     right=range(1, 5))]
        lines.append("  (ms: each node times the blocks that run it, over every network; --format json lists "
                     "every node)")
        other = sorted({r["why"] for r in record["nodes"] if r["predicted_ms"] is None})
        if other:
            lines.append(f"not predicted (no layer type or none in the model): {'; '.join(other)}")
    return "\n".join(lines)


def is_neusight(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` is NeuSight's measured networks: a case file, or a folder holding case files and no
    ``networks.csv`` (what ``bench-network`` writes)."""
    path = os.fspath(path)
    if os.path.isfile(path):
        return bool(_CASE.match(os.path.basename(path)))
    if not os.path.isdir(path) or os.path.isfile(os.path.join(path, "networks.csv")):
        return False
    return any(_CASE.match(n) for _, _, names in os.walk(path) for n in names)


def plot_neusight(record: dict[str, Any], path: str) -> None:
    """Predicted against measured: the networks end to end (ours and each peer's), and the traced nodes measured
    alone against their layers' predictions; a PNG at ``path`` (needs matplotlib)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ._output import atomic_path

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.6))
    ax = axes[0]
    series = {"neuralpower": [(x["measured_ms"], x["predicted_ms"]) for x in record["cases"]]}
    for k in record["peers"]:
        series[k] = [(x["measured_ms"], x["peers"][k]) for x in record["cases"] if k in x.get("peers", {})]
    for k, pairs in series.items():
        ax.scatter([p[0] for p in pairs], [p[1] for p in pairs], s=16 if k == "neuralpower" else 9,
                   label=k, zorder=3 if k == "neuralpower" else 2)
    _diagonal(ax, [v for pairs in series.values() for p in pairs for v in p])
    ax.set_title(f"networks end to end: MAPE {record['runtime_mape']:.1f}% (ours)")
    ax.legend(fontsize=8)
    ax = axes[1]
    pairs = [(r["measured_ms"], r["predicted_ms"]) for r in record.get("nodes", [])
             if r["predicted_ms"] is not None and r["measured_ms"] > 0]
    ax.scatter([p[0] for p in pairs], [p[1] for p in pairs], s=6)
    _diagonal(ax, [v for p in pairs for v in p])
    ax.set_title(f"traced nodes measured alone ({len(pairs)})")
    for a in axes:
        a.set_xlabel("measured ms")
        a.set_ylabel("predicted ms")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)


def _diagonal(ax: Any, values: Sequence[float]) -> None:
    positive = [v for v in values if v > 0]
    if not positive:
        return
    lo, hi = min(positive), max(positive)
    ax.plot([lo, hi], [lo, hi], color="grey", linewidth=1)
    ax.set_xscale("log")
    ax.set_yscale("log")


# -- traces as measurement tables ------------------------------------------------------------------------------------

TRACE_NAME = re.compile(r"-inf-\d+-\d+\.csv(?:\.gz)?$")


def gpu_of_folder(path: str) -> str:
    """The GPU a NeuSight file was measured on, by its folder's name (NVML's name where the GPU is known)."""
    from .gpus import find_gpu

    folder = os.path.basename(os.path.dirname(os.path.abspath(path)))
    try:
        return find_gpu(folder).name
    except InputError:
        return folder.replace("_", " ")


def trace_table(path: str | os.PathLike[str]) -> tuple[Any, dict[str, int]]:
    """One NeuSight trace as a measurement table (fp32, ``runtime_ms`` measured alone, no power): one row per
    traced node that runs a kernel neuralpower has a layer type for (a node of the repeated block once: it was
    measured once), with the node in ``origin``; and the count of the nodes left out, by why."""
    import pyarrow as pa

    from .bench.dataset import layer_cells
    from .layers import FIELDS

    path = os.fspath(path)
    case = os.path.basename(path)
    m = _CASE.match(re.sub(r"\.csv(?:\.gz)?$", ".json", case))
    if not m:
        raise InputError("not a NeuSight trace: the name is not <model>-inf-<seq_len>-<batch>.csv.gz", path=path)
    nodes = read_trace(path)
    kept = [n for n in nodes if n.layer is not None]
    left: dict[str, int] = {}
    for n in nodes:
        if n.layer is None:
            key = "free (no kernel in a network)" if n.kind == "free" else "no layer type"
            left[key] = left.get(key, 0) + 1
    cells = [layer_cells(n.layer) for n in kept if n.layer is not None]
    used = {f: [c[f] for c in cells] for f in FIELDS if any(c.get(f) is not None for c in cells)}
    gpu = gpu_of_folder(path)
    table = pa.table({
        **used,
        "runtime_ms": [n.latency_ms for n in kept],
        "gpu": [gpu] * len(kept),
        "executor": ["neusight-torch"] * len(kept),
        "origin": [f"neusight-trace:{case}:{n.name}" for n in kept],
    })
    return table, left


# -- calibration of a GPU's operator-table model to its networks' traces ---------------------------------------------

#: The layer types calibrated to the traces: the GEMMs of a network (sizes such as 1024, 4096 or 5120) run faster than
#: the table's random sizes of the same work (NeuSight's linear tables on the P100, T4 and V100: a median 5.4, 3.0
#: and 11.8 TFLOP/s over their GEMMs of more than 20 GFLOP, the networks' traced GEMMs 7.2, 4.4 and 13.2).
CALIBRATED_TYPES = ("linear",)


def trace_ratios(cases: Sequence[NetworkCase], model: Any, types: Sequence[str] = CALIBRATED_TYPES,
                 traces: dict[str, list[Node]] | None = None) -> dict[str, dict[str, tuple[float, float, int]]]:
    """Per case and layer type of ``types``: the traced nodes' time measured alone and as ``model`` predicts it (each
    node times the blocks that run it), and the count of nodes; cases without a trace are left out. ``traces``:
    traces already read, by trace path (those read here are added)."""
    import numpy as np

    out: dict[str, dict[str, tuple[float, float, int]]] = {}
    for c in cases:
        traced = _trace_of(c, traces)
        if traced is None:
            continue
        nodes = [n for n in traced
                 if n.layer is not None and n.layer.type in types and n.layer.type in model.layer_types]
        if not nodes:
            continue
        rows = np.array([n.layer.row for n in nodes if n.layer is not None])
        predicted = model.score_rows(rows, np.array([0, len(rows)]), per_layer=True)["layer_runtime_ms"]
        sums: dict[str, list[float]] = {}
        for n, p in zip(nodes, predicted, strict=True):
            assert n.layer is not None
            s = sums.setdefault(n.layer.type, [0.0, 0.0, 0])
            s[0] += n.latency_ms * n.repeat
            s[1] += float(p) * n.repeat
            s[2] += 1
        out[c.name] = {t: (v[0], v[1], int(v[2])) for t, v in sums.items()}
    return out


def calibration(ratios: dict[str, dict[str, tuple[float, float, int]]], exclude: str | None = None) -> dict[str, Any]:
    """Per layer type, the scale that makes the predictions of the traced nodes add up to their measured time, over the
    cases of :func:`trace_ratios` (``exclude``: leave out the cases of this network model): ``{type: {"scale": s,
    "nodes": n, "networks": [...]}}``."""
    out: dict[str, Any] = {}
    for name, by_type in sorted(ratios.items()):
        if exclude is not None and name.startswith(f"{exclude}-inf-"):
            continue
        for t, (measured, predicted, count) in by_type.items():
            entry = out.setdefault(t, {"measured": 0.0, "predicted": 0.0, "nodes": 0, "networks": []})
            entry["measured"] += measured
            entry["predicted"] += predicted
            entry["nodes"] += count
            entry["networks"].append(name)
    return {t: {"scale": e["measured"] / e["predicted"], "nodes": e["nodes"], "networks": e["networks"]}
            for t, e in out.items() if e["predicted"] > 0}
