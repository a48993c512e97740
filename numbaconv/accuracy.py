"""How close a result must come to the float64 truth (numbaconv.reference, or PyTorch in float64).

The error is norm-relative, ``||result - truth|| / ||truth||``, over the whole result; the
tests, ``numbaconv verify`` and ``numbaconv bench`` all hold every algorithm to ``TOLERANCE``.
"""
import math

import numpy as np

# Norm-relative error allowed per dtype of the operands.
TOLERANCE = {"float32": 1e-5, "float64": 1e-12}


def relative_error(result, expected) -> float:
    """||result - expected|| / ||expected|| in float64 (NaN anywhere gives NaN, another shape NaN)."""
    result, expected = np.asarray(result, np.float64), np.asarray(expected, np.float64)
    if result.shape != expected.shape:
        return math.nan
    scale = max(float(np.linalg.norm(expected)), np.finfo(np.float64).tiny)
    return float(np.linalg.norm(result - expected)) / scale
