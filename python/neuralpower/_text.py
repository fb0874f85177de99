"""Plain text for the command line and the fit report: tables, counts in engineering notation, shapes."""

from __future__ import annotations

from collections.abc import Collection, Sequence

__all__ = ["shape_text", "si", "text_table"]


def text_table(
    header: Sequence[str], body: Sequence[Sequence[str]], right: Collection[int], footer: Sequence[str] | None = None
) -> list[str]:
    """Lines of an aligned table: the header, a rule, the body, and (when given) a rule and a footer.

    Columns whose index is in ``right`` are right-aligned; trailing spaces are dropped.
    """
    rows = [header, *body, *([footer] if footer is not None else [])]
    widths = [max(map(len, column)) for column in zip(*rows, strict=True)]
    # one format string for every line: a million-row body takes a second, not a minute
    line = "  ".join(f"{{:{'>' if c in right else '<'}{w}}}" for c, w in enumerate(widths))
    rule = "  ".join("-" * w for w in widths)
    lines = [line.format(*header).rstrip(), rule, *(line.format(*r).rstrip() for r in body)]
    if footer is not None:
        lines += [rule, line.format(*footer).rstrip()]
    return lines


def si(value: float) -> str:
    """A count in engineering notation: 1.23G, 45.6M, 789."""
    for threshold, suffix in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= threshold:
            return f"{value / threshold:.2f}{suffix}"
    return f"{value:.0f}"


def shape_text(shape: Sequence[int]) -> str:
    """A shape as 8x64x56x56."""
    return "x".join(str(d) for d in shape)
