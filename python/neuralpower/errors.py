"""Errors that neuralpower reports to users as one line, with exit code 2 from the CLI."""

from __future__ import annotations

__all__ = ["InputError", "NeuralPowerError"]


class NeuralPowerError(Exception):
    """Base class of the errors neuralpower reports as a one-line message (no traceback)."""


class InputError(NeuralPowerError, ValueError):
    """Bad input: names the file, the row (1-based, as a spreadsheet shows it) and the column.

    Parameters
    ----------
    message
        What is wrong, without the location.
    path
        The file, when the input came from one.
    row
        The row as a spreadsheet shows it: the header is row 1, the first data row is row 2.
    column
        The column (or field) at fault.
    """

    def __init__(
        self,
        message: str,
        *,
        path: str | None = None,
        row: int | None = None,
        column: str | None = None,
    ) -> None:
        self.message = message
        self.path = path
        self.row = row
        self.column = column
        super().__init__(self._format())

    def _format(self) -> str:
        where = []
        if self.path is not None:
            where.append(str(self.path))
        if self.row is not None:
            where.append(f"row {self.row}")
        if self.column is not None:
            where.append(f"column {self.column}")
        return (", ".join(where) + ": " if where else "") + self.message
