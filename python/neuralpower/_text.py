"""Plain-text tables for the command line and the fit report."""

from __future__ import annotations

from collections.abc import Collection, Sequence

__all__ = ["text_table"]


def text_table(
    header: Sequence[str], body: Sequence[Sequence[str]], right: Collection[int], footer: Sequence[str] | None = None
) -> list[str]:
    """Lines of an aligned table: the header, a rule, the body, and (when given) a rule and a footer.

    Columns whose index is in ``right`` are right-aligned; trailing spaces are dropped.
    """
    rows = [header, *body, *([footer] if footer is not None else [])]
    widths = [max(len(r[c]) for r in rows) for c in range(len(header))]

    def fmt(r: Sequence[str]) -> str:
        cells = enumerate(zip(r, widths, strict=True))
        return "  ".join(v.rjust(w) if c in right else v.ljust(w) for c, (v, w) in cells).rstrip()

    rule = "  ".join("-" * w for w in widths)
    lines = [fmt(header), rule, *(fmt(r) for r in body)]
    if footer is not None:
        lines += [rule, fmt(footer)]
    return lines
