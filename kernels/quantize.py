"""Scalar quantization of impacts to uint8 with one scale for the whole index."""

import numba as nb
import numpy as np


def dequantize_scale(max_weight: float) -> float:
    """The scale that maps the largest weight of an index to 255 (1.0 for an empty index)."""
    return float(max_weight) / 255.0 if max_weight > 0 else 1.0


@nb.njit(cache=True, nogil=True)
def quantize_uint8(weights, scale):
    """Round ``weights / scale`` to uint8, keeping every positive weight at least 1.

    A posting never disappears through quantization: a tiny positive weight becomes impact 1.
    """
    out = np.empty(weights.shape[0], dtype=np.uint8)
    inv = 1.0 / scale
    for i in range(weights.shape[0]):
        q = np.floor(weights[i] * inv + 0.5)
        if q < 1.0:
            q = 1.0
        elif q > 255.0:
            q = 255.0
        out[i] = np.uint8(q)
    return out
