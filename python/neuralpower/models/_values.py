"""Checks of untrusted values in model documents, shared by every model kind's validator."""

from __future__ import annotations

import math
import numbers
from typing import Any, TypeGuard

__all__ = ["is_finite_number"]


def is_finite_number(v: Any) -> TypeGuard[float]:
    """Whether ``v`` is a real number (not a bool) that is finite as a float.

    JSON integers have no size limit, and ``math.isfinite(10**400)`` raises OverflowError: such a value is
    not finite here, it is refused.
    """
    if isinstance(v, bool) or not isinstance(v, numbers.Real):
        return False
    try:
        return math.isfinite(float(v))
    except (OverflowError, ValueError, TypeError):
        return False
