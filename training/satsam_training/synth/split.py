"""Which frame is which: each frame's own random generator, and the empty-frame rule
(shared by both styles, so the empty share of a split is the same whichever draws it)."""

from __future__ import annotations

import math
import zlib

import numpy as np


def frame_rng(seed: int, split: str, index: int) -> np.random.Generator:
    """The generator of frame ``index`` of ``split``: independent of any other frame."""
    return np.random.default_rng([int(seed), zlib.crc32(split.encode()), int(index)])


def is_empty_frame(seed: int, split: str, index: int, fraction: float) -> bool:
    """Whether frame ``index`` has no satellite (the low-discrepancy rule of the package docstring)."""
    if fraction <= 0.0:
        return False
    if fraction >= 1.0:
        return True
    u = np.random.default_rng([int(seed), zlib.crc32(split.encode()), 0x5EED]).random()
    return math.floor((index + 1) * fraction + u) > math.floor(index * fraction + u)
