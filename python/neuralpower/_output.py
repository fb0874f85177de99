"""Output files: checked before any work is done, written to a temporary file and renamed into place.

Every verb that writes a file goes through :func:`check_output` (before it reads or computes anything
costly) and :func:`atomic_path` (when it writes), so that no verb overwrites its own input, writes CSV
into a file called ``.xlsx``, fails on a missing folder after minutes of work, or leaves a partial file
behind when it is interrupted.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

from .errors import InputError

__all__ = [
    "PLOT_SUFFIXES",
    "TABLE_SUFFIXES",
    "atomic_dir",
    "atomic_path",
    "check_new_dir",
    "check_output",
    "check_output_dir",
    "same_file",
]

#: Suffixes a layer or score table may be written with (CSV, compressed CSV, Parquet).
TABLE_SUFFIXES = (".csv", ".csv.gz", ".csv.bz2", ".csv.zst", ".csv.lz4", ".txt", ".parquet", ".pq")
#: Suffixes of the plots neuralpower draws (matplotlib picks the format by suffix).
PLOT_SUFFIXES = (".png", ".pdf", ".svg")


def same_file(a: str | os.PathLike[str], b: str | os.PathLike[str]) -> bool:
    """Whether two paths name one file (the same path, a symbolic or a hard link)."""
    try:
        if os.path.exists(a) and os.path.exists(b):
            return os.path.samefile(a, b)
    except OSError:
        pass
    return os.path.realpath(a) == os.path.realpath(b)


def _suffix_ok(path: str, suffixes: Sequence[str]) -> bool:
    name = Path(path).name.lower()
    return any(name.endswith(s) and len(name) > len(s) for s in suffixes)


def check_output(
    path: str,
    *,
    option: str,
    inputs: Iterable[str | os.PathLike[str]] = (),
    suffixes: Sequence[str] | None = None,
) -> None:
    """Refuse, before any work, an output path that cannot or must not be written.

    Parameters
    ----------
    path
        The output file.
    option
        How the user gave it (``--out``), for the message.
    inputs
        Files the verb reads: the output must not be one of them.
    suffixes
        The suffixes the output's format allows (None: any).

    Raises
    ------
    InputError
        The path is a folder, its folder does not exist or cannot be written, its suffix says another
        format, or it is one of the inputs.
    """
    where = f"{option} {path}"
    if not path:
        raise InputError(f"{option}: the output path is empty")
    if os.path.isdir(path):
        raise InputError(f"{where}: is a folder, not a file")
    if suffixes is not None and not _suffix_ok(path, suffixes):
        raise InputError(f"{where}: unknown output format (use a name ending in {', '.join(suffixes)})")
    _check_parent(path, where)
    if os.path.exists(path) and not os.access(path, os.W_OK):
        raise InputError(f"{where}: the file exists and is not writable")
    for source in inputs:
        if same_file(path, source):
            raise InputError(f"{where}: is the input {os.fspath(source)}; write the output to another file")
        if _inside(path, source):  # it would be read as input next time
            raise InputError(f"{where}: lies in the input {os.fspath(source)}; write the output elsewhere")


def _inside(path: str | os.PathLike[str], folder: str | os.PathLike[str]) -> bool:
    """Whether ``path`` lies inside the folder ``folder`` (False when ``folder`` is not a folder)."""
    src = os.path.realpath(folder)
    return os.path.isdir(src) and os.path.realpath(path).startswith(src.rstrip(os.sep) + os.sep)


def check_output_dir(path: str, *, option: str, inputs: Iterable[str | os.PathLike[str]] = ()) -> None:
    """Refuse an output folder that is a file, whose parent does not exist, or that is not writable."""
    where = f"{option} {path}"
    if not path:
        raise InputError(f"{option}: the output folder is empty")
    if os.path.exists(path) and not os.path.isdir(path):
        raise InputError(f"{where}: is a file, not a folder")
    if os.path.isdir(path):
        if not os.access(path, os.W_OK | os.X_OK):
            raise InputError(f"{where}: the folder is not writable")
    else:
        _check_parent(path, where)
    for source in inputs:
        if same_file(path, source):
            raise InputError(f"{where}: is the input {os.fspath(source)}")


def _check_parent(path: str, where: str) -> None:
    """Refuse a path whose folder does not exist or cannot be written."""
    folder = os.path.dirname(os.path.abspath(path))
    shown = os.path.dirname(path) or folder
    if not os.path.isdir(folder):
        raise InputError(f"{where}: the folder {shown} does not exist")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise InputError(f"{where}: the folder {shown} is not writable")


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[str]:
    """A temporary path beside ``path`` (with the same suffixes, so that writers that pick a format by suffix
    pick the same one), renamed to ``path`` when the block succeeds and removed when it fails."""
    target = os.fspath(path)
    folder, name = os.path.split(os.path.abspath(target))
    tmp = os.path.join(folder, f".{secrets.token_hex(4)}.tmp-{name}")
    try:
        yield tmp  # the writer creates it, with the permissions it would give the target
        os.replace(tmp, target)
    finally:
        with contextlib.suppress(OSError):
            os.unlink(tmp)


def check_new_dir(path: str, *, option: str, inputs: Iterable[str | os.PathLike[str]] = ()) -> None:
    """Refuse, before any work, an output folder that would mix with other files: one that exists and is not
    empty, lies inside an input folder, or whose parent does not exist or cannot be written."""
    where = f"{option} {path}"
    if not path:
        raise InputError(f"{option}: the output folder is empty")
    if os.path.exists(path):
        if not os.path.isdir(path):
            raise InputError(f"{where}: is a file, not a folder")
        if os.listdir(path):
            raise InputError(f"{where}: the folder exists and is not empty; name a new one")
    _check_parent(path.rstrip(os.sep) or path, where)
    for source in inputs:
        if same_file(path, source) or _inside(path, source):
            raise InputError(f"{where}: lies in the input {os.fspath(source)}; write the output elsewhere")


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike[str]) -> Iterator[str]:
    """A temporary folder beside ``path``, renamed to ``path`` (which must not exist, or be empty) when the
    block succeeds and removed with everything in it when it fails."""
    import shutil

    target = os.fspath(path).rstrip(os.sep) or os.fspath(path)
    folder, name = os.path.split(os.path.abspath(target))
    tmp = os.path.join(folder, f".{secrets.token_hex(4)}.tmp-{name}")
    os.mkdir(tmp)
    try:
        yield tmp
        if os.path.isdir(target) and not os.listdir(target):
            os.rmdir(target)
        os.rename(tmp, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
