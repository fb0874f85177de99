"""Option parsers shared by every verb of the ``neuralpower`` command (argparse ``type=`` callables).

Each refuses what no verb can use (a batch beyond the largest size a layer may have, a thread count no
machine has, a NaN) at parse time, as one line, before any work is done.
"""

from __future__ import annotations

import argparse
import math
import os
from collections.abc import Callable

__all__ = ["MAX_SIZE", "MAX_THREADS", "bounded_int", "cores", "finite_float", "positive_int", "seed", "size_int",
           "threads"]

#: The largest size of any layer field (``kMaxSize`` in cpp/src/layer.cpp): batch, channels, height, width.
MAX_SIZE = 1 << 24
#: More evaluator threads than any machine has cores is a mistake, not a request.
MAX_THREADS = 1024


def bounded_int(low: int, high: int) -> Callable[[str], int]:
    """A parser of integers from ``low`` to ``high``."""

    def parse(text: str) -> int:
        try:
            value = int(text.strip())
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"{value} must be at least {low}")
        if value > high:
            raise argparse.ArgumentTypeError(f"{text} must be at most {high:,}")
        return value

    return parse


positive_int = bounded_int(1, 2**31 - 1)
size_int = bounded_int(1, MAX_SIZE)  # a batch size or an image size
threads = bounded_int(1, MAX_THREADS)
seed = bounded_int(0, 2**32 - 1)  # NumPy and scikit-learn take seeds below 2**32


def finite_float(*, minimum: float, allow_minimum: bool = True) -> Callable[[str], float]:
    """A parser of finite numbers at least (or above) ``minimum``; NaN and infinities are refused."""

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
        if not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"{text} is not a finite number")
        if value < minimum or (value == minimum and not allow_minimum):
            bound = f"at least {minimum:g}" if allow_minimum else f"above {minimum:g}"
            raise argparse.ArgumentTypeError(f"{text} must be {bound}")
        return value

    return parse


def cores() -> int:
    """The cores this process may run on (its CPU affinity where the system tells it)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1
