"""Block maxima for pruning: per-term maximum impacts and per-block maxima and last documents."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from lsr.kernels import build_blocks, term_max_impact
from lsr.kernels.layout import is_packed

BLOCK_SIZE = 64


def maxima_dtype(impacts: np.ndarray) -> type:
    """The narrowest exact type for maxima of these impacts: uint8 for uint8 impacts (packed
    or not), float32 otherwise."""
    return np.uint8 if is_packed(impacts) or impacts.dtype == np.uint8 else np.float32


@dataclass
class Blocks:
    """Per-term maximum impact and per-block (``size`` postings) maxima and last doc numbers."""

    max_impact: np.ndarray
    offsets: np.ndarray
    max: np.ndarray
    last: np.ndarray
    size: int = BLOCK_SIZE

    @classmethod
    def build(cls, offsets, docs, impacts, size: int = BLOCK_SIZE) -> Blocks:
        """Block tables in the narrowest exact types: maxima as uint8 when impacts are uint8
        (packed or not), block numbers as int32 while they fit."""
        block_offsets, block_max, block_last = build_blocks(offsets, docs, impacts, size)
        max_impact = term_max_impact(offsets, docs, impacts)
        if maxima_dtype(impacts) == np.uint8:
            block_max, max_impact = block_max.astype(np.uint8), max_impact.astype(np.uint8)
        if block_offsets[-1] < np.iinfo(np.int32).max:
            block_offsets = block_offsets.astype(np.int32)
        return cls(max_impact, block_offsets, block_max, block_last, size)
