"""Datasheet figures of NVIDIA GPUs: what a performance model may know about a GPU before measuring it.

The table ships with the package (``neuralpower/data/gpus.json``) and names its source for every GPU: NVIDIA's
datasheets and architecture whitepapers first, NeuSight's device configurations (github.com/sitar-lab/NeuSight)
where NVIDIA publishes no figure, and a note wherever the two differ or a figure is less certain.

It covers the B200, H200, H100 (SXM and PCIe), A100 (SXM and PCIe, 40 and 80 GB), L4, V100 (SXM2 16 GB and
PCIe 32 GB), T4, P100 (PCIe 16 GB) and P4.

Throughputs are peak dense TFLOP/s: where a datasheet gives tensor figures only with 2:4 sparsity they are halved
(and the GPU's ``notes`` say so). ``fp16``/``bf16``/``fp8`` are tensor-core rates, None where the GPU has no such
unit. :func:`find_gpu` takes a key, an alias, the NVML name or NeuSight's folder name (``NVIDIA_A100-PCIE-40GB``,
``Tesla_V100-PCIE-32GB``), ignoring case, spaces, ``-`` and ``_``.
"""

from __future__ import annotations

import functools
import json
import math
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from .errors import InputError

__all__ = ["ARCHITECTURES", "GPU", "GPU_DTYPES", "find_gpu", "gpus", "load_gpus", "peak_tflops"]

ARCHITECTURES = ("Pascal", "Volta", "Turing", "Ampere", "Ada", "Hopper", "Blackwell")
# The element types peak_tflops knows, and the GPU field holding each one's peak.
_PEAK_FIELD = {
    "fp32": "fp32_tflops",
    "fp16": "fp16_tensor_tflops",
    "bf16": "bf16_tensor_tflops",
    "fp8": "fp8_tensor_tflops",
}
GPU_DTYPES = tuple(_PEAK_FIELD)
_SCHEMA_VERSION = 1
_TEXT = ("key", "name", "architecture", "compute_capability", "source", "notes")
_WHOLE = ("sms", "boost_clock_mhz")
_NUMBER = ("fp32_tflops", "memory_gb", "memory_bandwidth_gb_s", "l2_cache_mb", "power_limit_w")
_OPTIONAL = ("fp16_tensor_tflops", "bf16_tensor_tflops", "fp8_tensor_tflops", "idle_power_w")
_FIELDS = frozenset((*_TEXT, "aliases", *_WHOLE, *_NUMBER, *_OPTIONAL))
_KEY = re.compile(r"[a-z0-9][a-z0-9.-]*\Z")
_CAPABILITY = re.compile(r"[0-9]+\.[0-9]+\Z")
_SEPARATORS = re.compile(r"[\s_-]+")
# Vendor prefixes a name may be given with or without ("NVIDIA L4", "L4"; "Tesla T4", "T4").
_PREFIXES = ("nvidia", "tesla")


@dataclass(frozen=True)
class GPU:
    """One GPU's datasheet figures.

    Attributes
    ----------
    key
        The canonical short name (``h100-sxm``).
    name
        The name NVML and ``nvidia-smi`` report (``NVIDIA H100 80GB HBM3``).
    aliases
        Other short names :func:`find_gpu` accepts.
    architecture
        One of :data:`ARCHITECTURES`.
    compute_capability
        CUDA compute capability, ``"major.minor"``.
    sms
        Streaming multiprocessors.
    boost_clock_mhz
        Boost clock.
    fp32_tflops
        Peak FP32 (non-tensor) throughput, TFLOP/s.
    fp16_tensor_tflops, bf16_tensor_tflops, fp8_tensor_tflops
        Peak dense tensor-core throughput, TFLOP/s; None where the GPU has no such unit.
    memory_gb
        Memory, 10^9 bytes as NVIDIA states it.
    memory_bandwidth_gb_s
        Memory bandwidth, 10^9 bytes per second.
    l2_cache_mb
        L2 cache, MB as NVIDIA states it.
    power_limit_w
        The datasheet's TDP/TGP.
    idle_power_w
        Idle power where a source publishes it, else None.
    source
        The documents the figures come from.
    notes
        Which figures were halved (sparsity), taken from elsewhere or differ between sources.
    """

    key: str
    name: str
    aliases: tuple[str, ...]
    architecture: str
    compute_capability: str
    sms: int
    boost_clock_mhz: int
    fp32_tflops: float
    fp16_tensor_tflops: float | None
    bf16_tensor_tflops: float | None
    fp8_tensor_tflops: float | None
    memory_gb: float
    memory_bandwidth_gb_s: float
    l2_cache_mb: float
    power_limit_w: float
    idle_power_w: float | None
    source: str
    notes: str


def _bundled_path() -> Path:
    return Path(str(resources.files("neuralpower") / "data" / "gpus.json"))


def _normal(name: str) -> str:
    """``name`` as lookups compare it: lower case, without spaces, ``-`` or ``_``."""
    return _SEPARATORS.sub("", name.strip().lower())


def _unprefixed(normal: str) -> str:
    """A normalised name without a leading ``nvidia``/``tesla`` (unchanged if nothing would be left)."""
    for prefix in _PREFIXES:
        if normal.startswith(prefix) and len(normal) > len(prefix):
            return normal[len(prefix) :]
    return normal


def _lookup_names(gpu: GPU) -> set[str]:
    names = {_normal(n) for n in (gpu.key, gpu.name, *gpu.aliases)}
    return names | {_unprefixed(n) for n in names}


def _entry(raw: Any, number: int, path: str) -> GPU:
    """Entry ``number`` (1-based) of a table, checked field by field."""
    label = f"GPU entry {number}"
    if not isinstance(raw, dict):
        raise InputError(f"{label}: must be a JSON object, not {type(raw).__name__}", path=path)
    key = raw.get("key")
    if isinstance(key, str):
        label += f" ({key!r})"

    def fail(field: str, problem: str) -> InputError:
        return InputError(f"{label}, field {field!r}: {problem}", path=path)

    missing = sorted(_FIELDS - raw.keys())
    if missing:
        raise fail(missing[0], "missing" + (f" (also missing: {', '.join(missing[1:])})" if missing[1:] else ""))
    unknown = sorted(str(k) for k in raw.keys() - _FIELDS)
    if unknown:
        raise fail(unknown[0], "not a known field (known: " + ", ".join(sorted(_FIELDS)) + ")")
    values: dict[str, Any] = {}
    for field in _TEXT:
        v = raw[field]
        if not isinstance(v, str) or ("\n" in v) or (field != "notes" and not v.strip()):
            raise fail(field, f"must be a one-line text{'' if field == 'notes' else ', not empty'}, not {v!r}")
        values[field] = v
    if not _KEY.match(values["key"]):
        raise fail("key", f"must be lower case letters, digits, '.' and '-', not {values['key']!r}")
    if values["architecture"] not in ARCHITECTURES:
        raise fail("architecture", f"must be one of {', '.join(ARCHITECTURES)}, not {values['architecture']!r}")
    if not _CAPABILITY.match(values["compute_capability"]):
        raise fail("compute_capability", f"must read 'major.minor', not {values['compute_capability']!r}")
    aliases = raw["aliases"]
    if not isinstance(aliases, list) or not all(isinstance(a, str) and a.strip() for a in aliases):
        raise fail("aliases", f"must be a list of names, not {aliases!r}")
    values["aliases"] = tuple(aliases)
    for field in _WHOLE:
        v = raw[field]
        if isinstance(v, bool) or not isinstance(v, int) or v <= 0:
            raise fail(field, f"must be a positive whole number, not {v!r}")
        values[field] = v
    for field in (*_NUMBER, *_OPTIONAL):
        v = raw[field]
        if v is None and field in _OPTIONAL:
            values[field] = None
            continue
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v <= 0:
            allowed = "a positive number" + (" or null" if field in _OPTIONAL else "")
            raise fail(field, f"must be {allowed}, not {v!r}")
        values[field] = float(v)
    return GPU(**values)


def load_gpus(path: str | os.PathLike[str] | None = None) -> tuple[GPU, ...]:
    """Read and check a GPU table: the bundled one, or the JSON file at ``path`` (same format).

    Raises
    ------
    InputError
        One line naming the file and the GPU entry and field at fault: a field missing, unknown or of the wrong
        type, a figure not positive, two GPUs with the same key or a name :func:`find_gpu` could not tell apart.
    """
    file = _bundled_path() if path is None else Path(path)
    where = str(file)
    try:
        doc = json.loads(file.read_text(encoding="utf-8"))
    except OSError as e:
        raise InputError(f"cannot read the GPU table ({e.strerror or e})", path=where) from None
    except UnicodeDecodeError as e:
        raise InputError(f"not UTF-8 text ({e.reason} at byte {e.start})", path=where) from None
    except json.JSONDecodeError as e:
        raise InputError(f"not valid JSON ({e.msg} at line {e.lineno}, column {e.colno})", path=where) from None
    if not isinstance(doc, dict) or not isinstance(doc.get("gpus"), list):
        raise InputError("must be a JSON object with a list 'gpus'", path=where)
    if doc.get("schema_version") != _SCHEMA_VERSION:
        raise InputError(f"schema_version must be {_SCHEMA_VERSION}, not {doc.get('schema_version')!r}", path=where)
    table = tuple(_entry(raw, i + 1, where) for i, raw in enumerate(doc["gpus"]))
    if not table:
        raise InputError("lists no GPUs", path=where)
    keys: dict[str, int] = {}
    names: dict[str, int] = {}
    for i, gpu in enumerate(table):
        j = keys.setdefault(gpu.key, i)
        if j != i:
            raise InputError(
                f"GPU entry {i + 1}, field 'key': {gpu.key!r} is also the key of GPU entry {j + 1}", path=where
            )
        for n in sorted(_lookup_names(gpu)):
            j = names.setdefault(n, i)
            if j != i:
                raise InputError(
                    f"GPU entry {i + 1} ({gpu.key!r}): its name or alias {n!r} (as looked up) is also one of GPU entry "
                    f"{j + 1} ({table[j].key!r})",
                    path=where,
                )
    return table


@functools.cache
def _bundled() -> tuple[GPU, ...]:
    return load_gpus()


def gpus() -> tuple[GPU, ...]:
    """Every GPU of the bundled table, in the table's order."""
    return _bundled()


def find_gpu(name: str, table: Sequence[GPU] | None = None) -> GPU:
    """The GPU called ``name``: a key, an alias, the NVML name or NeuSight's folder name.

    Case, spaces, ``-`` and ``_`` do not matter, nor a leading ``NVIDIA``/``Tesla``.

    Parameters
    ----------
    name
        What to look up (``h100``, ``NVIDIA H100 80GB HBM3``, ``Tesla_V100-PCIE-32GB``).
    table
        The GPUs to look in (default: the bundled table).

    Raises
    ------
    InputError
        When no GPU goes by ``name``; the one-line message lists the known keys.
    """
    table = gpus() if table is None else table
    wanted = _normal(name)
    for candidate in (wanted, _unprefixed(wanted)):
        for gpu in table:
            if candidate and candidate in _lookup_names(gpu):
                return gpu
    raise InputError(f"unknown GPU {name!r} (known: {', '.join(g.key for g in table)})")


def peak_tflops(gpu: GPU, dtype: str) -> float | None:
    """``gpu``'s peak dense throughput for ``dtype`` in TFLOP/s, None where it has no unit for it.

    ``fp32`` is the non-tensor rate; ``fp16``, ``bf16`` and ``fp8`` are tensor-core rates.

    Raises
    ------
    InputError
        For a ``dtype`` other than those of :data:`GPU_DTYPES`.
    """
    field = _PEAK_FIELD.get(dtype.strip().lower())
    if field is None:
        raise InputError(f"unknown dtype {dtype!r} for a GPU's peak (known: {', '.join(GPU_DTYPES)})")
    value: float | None = getattr(gpu, field)
    return value
