"""Fit reports: a table per layer type and target, as text and CSV, and predicted-vs-measured plots."""

from __future__ import annotations

import csv
import os
from pathlib import Path
from typing import Any

import numpy as np

from .._output import atomic_path
from .._text import text_table
from ..errors import NeuralPowerError
from .fit import BASELINES, METHODS, fit_summary

__all__ = ["format_summary", "write_report"]

_COLUMNS = (
    "type",
    "target",
    "rows",
    "default",
    "target_mode",
    "terms",
    *(f"rmspe_{m}" for m in (*METHODS, *BASELINES)),
)


def _pct(v: float | None) -> str:
    return "-" if v is None else f"{v:.1f}%"


def format_summary(doc: dict[str, Any]) -> str:
    """The fit table as text: configurations, terms kept and test RMSPE of each method, per type and target."""
    records = fit_summary(doc)
    header = ["type", "target", "configs", "default", "mode", "terms", "poly", "tree", "boosted", "roofline",
              "flops-lin"]
    lines: list[list[str]] = [header]
    notes = []
    for r in records:
        lines.append(
            [
                r["type"],
                r["target"],
                str(r["rows"]),
                r["default"],
                r["target_mode"] or "-",
                "-" if r["terms"] is None else str(r["terms"]),
                *(_pct(r[f"rmspe_{m}"]) for m in (*METHODS, *BASELINES)),
            ]
        )
        if r["fallback"]:
            notes.append(f"{r['type']} {r['target']}: {r['fallback']}")
        if r.get("drift"):
            d = r["drift"]
            unit = "ms" if r["target"] == "runtime_ms" else "W"
            notes.append(f"{r['type']} {r['target']}: the errors drift with the row order ({d['rise']:+.3g} {unit} "
                         f"from the first row to the last; validation RMSPE {d['error_before']:.1f} % without the "
                         f"drift, {d['error_after']:.1f} % with it): were the measurements disturbed as they went?")
    text = text_table(header, lines[1:], range(2, len(header)))
    out = [
        f"test RMSPE (held-out configurations) per layer type and target ({doc['gpu']}, {doc['executor']}, "
        f"{doc['dtype']})",
        *text,
    ]
    if notes:
        out += ["", *notes]
    return "\n".join(out)


def write_report(
    doc: dict[str, Any], holdout: dict[tuple[str, str], tuple[Any, dict[str, Any]]], directory: str | os.PathLike[str]
) -> list[Path]:
    """Write ``summary.csv`` and one ``<type>_<target>.png`` scatter plot per layer type and target."""
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    written = [out / "summary.csv"]
    with atomic_path(written[0]) as tmp, open(tmp, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=[*_COLUMNS, "fallback"], extrasaction="ignore", lineterminator="\n")
        writer.writeheader()
        writer.writerows(fit_summary(doc))
    if not holdout:
        return written
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise NeuralPowerError("plots need matplotlib: pip install 'neuralpower[plot]'") from None
    for (layer_type, target), (y, predictions) in holdout.items():
        fig, ax = plt.subplots(figsize=(5, 5))
        lo, hi = float(np.min(y)), float(np.max(y))
        for method, marker in zip((*METHODS, *BASELINES), "o^Dsx", strict=True):
            if method in predictions:
                p = np.maximum(predictions[method], lo * 1e-3)
                rmspe = doc["layer_types"][layer_type][target]["metrics"][method]["rmspe"]
                ax.scatter(y, p, s=10, marker=marker, alpha=0.6, label=f"{method} ({rmspe:.1f}% RMSPE)")
                lo, hi = min(lo, float(p.min())), max(hi, float(p.max()))
        ax.plot([lo, hi], [lo, hi], "k--", linewidth=1)
        ax.set_xscale("log")
        ax.set_yscale("log")
        unit = "ms" if target == "runtime_ms" else "W"
        ax.set_xlabel(f"measured {target.split('_')[0]} ({unit})")
        ax.set_ylabel(f"predicted ({unit})")
        ax.set_title(
            f"{layer_type} {target}, held-out rows\n{doc['gpu']}, {doc['executor']}, {doc['dtype']}", fontsize=9
        )
        ax.legend(fontsize=8)
        fig.tight_layout()
        path = out / f"{layer_type}_{target}.png"
        with atomic_path(path) as tmp:
            fig.savefig(tmp, dpi=100)
        plt.close(fig)
        written.append(path)
    return written
