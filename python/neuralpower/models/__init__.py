"""Runtime and power models: fitting (scikit-learn), the JSON model format, and reference prediction.

Importing this package imports neither scikit-learn nor SciPy; fitting does, when called.
"""

from __future__ import annotations
