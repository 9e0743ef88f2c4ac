"""How close two float32 runs of the same patch model must be: one definition, used by
the library (the ONNX export's self-check, :mod:`satsam_ros.deploy.onnx_export`) and by
every numerical test that compares engines, kernels or batch sizes.

Why two runs differ at all. Two engines (PyTorch, ONNX Runtime, TensorRT), two kernels
(stock and fused attention), or one engine at another thread count or batch size
compute the same function with float32 sums taken in another order (oneDNN / MLAS
blocking, the ISA the kernel dispatches to, how a batch is split over threads). Each
order rounds differently, so the results follow the order, not only the maths: bit
equality holds only where both sides run the same kernels on the same input (a
save / load round trip, the same module on the same batch).

The bound. A float32 sum of n terms carries a relative error of about ``k * sqrt(n) * u``
(u = 2^-24 the unit roundoff; sqrt(n) for rounding errors that behave like a random
walk, Higham's probabilistic bound; k a small constant). The patch model chains a few
hundred such reductions at most (patch embedding, two matrix products and a softmax
per attention, two per MLP, the LayerNorm statistics, the decoder's two-way
transformer and hypernetwork), the longest over n = 4096 terms (global attention over
64 x 64 tokens at E = 1024); errors mostly add, and where the logits are differences of
larger terms (random weights) they grow relative to the logits. With D = 200 reductions
of n = 4096, ``D * sqrt(n) * u`` = 7.6e-4 of the logit scale. So two runs' logits must
agree to ``LOGIT_RELATIVE`` = 1e-3 of the reference's scale ``max(1, max |logit|)``
(the 1 keeps the bound meaningful when every logit is near 0): measured on 2 cores
(AMD EPYC, AVX2) the worst was 4.4e-5 of the scale (``tiny``, torch at batch 4 against
batch 1), more than 20x below the bound, while a real bug moves logits by far more: a
channel swap or a block skipped by 0.8 of the scale or more, a precomputed constant
10 % off by 1e-2 (``test/test_numerics.py``).

Probabilities follow: the Detector resamples the logits bilinearly (a convex
combination, which does not enlarge the largest difference), takes the sigmoid (slope
at most 1/4) and resamples again, so probabilities agree to a quarter of the logit
bound, plus ``PROBABILITY_ROUNDING`` for float32 rounding of those steps themselves.

Masks follow from probabilities: a pixel may flip only where the reference probability
lies within the probability bound of the threshold (a *tie*); :func:`mask_ties` counts
those pixels and the flips, and a comparison is degenerate when ties are more than a
small share of the frame (``MAX_TIE_SHARE``) or when a mask is all foreground or all
background.

numpy only, no torch: the core imports no engine.
"""

from __future__ import annotations

import math
from typing import NamedTuple, Union

import numpy as np

#: float32 unit roundoff, 2^-24
UNIT_ROUNDOFF = 2.0 ** -24
#: logits of two runs agree to this fraction of the reference's scale max(1, max |logit|)
LOGIT_RELATIVE = 1e-3
#: the sigmoid's largest slope (at 0)
SIGMOID_MAX_SLOPE = 0.25
#: float32 rounding of the resampling and the sigmoid themselves (a few ulps of 1)
PROBABILITY_ROUNDING = 1e-6
#: a mask comparison is degenerate when more pixels than this share of the frame are ties
MAX_TIE_SHARE = 0.01

ArrayOrScale = Union[float, int, np.ndarray]


def reduction_error(n: int, k: float = 1.0) -> float:
    """Typical relative rounding error ``k * sqrt(n) * 2^-24`` of a float32 sum of n terms."""
    return float(k) * math.sqrt(int(n)) * UNIT_ROUNDOFF


def logit_scale(reference: ArrayOrScale) -> float:
    """``max(1, max |logit|)`` of the reference logits (an array) or of a given largest |logit|."""
    largest = float(np.max(np.abs(reference))) if np.size(reference) else 0.0
    return max(1.0, largest) if not math.isnan(largest) else math.nan


def logit_tolerance(reference: ArrayOrScale) -> float:
    """The largest |logit difference| allowed between two float32 runs of one model:
    ``LOGIT_RELATIVE * max(1, max |reference logit|)`` (see the module docstring)."""
    return LOGIT_RELATIVE * logit_scale(reference)


def probability_tolerance(reference: ArrayOrScale) -> float:
    """The largest |probability difference| allowed, for reference logits (or their
    largest |logit|): a quarter of the logit bound (sigmoid slope <= 1/4, resampling a
    convex combination) plus ``PROBABILITY_ROUNDING``."""
    return SIGMOID_MAX_SLOPE * logit_tolerance(reference) + PROBABILITY_ROUNDING


def max_abs_diff(a: np.ndarray, b: np.ndarray) -> float:
    """Largest |a - b| in float64; inf when the shapes differ, NaN when either holds a NaN."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if a.shape != b.shape:
        return math.inf
    return float(np.max(np.abs(a - b))) if a.size else 0.0


class MaskTies(NamedTuple):
    """A mask comparison: ``pixels`` in the frame, ``ties`` (reference probability
    within the tolerance of the threshold), ``flipped`` (the masks differ) and
    ``flipped_outside_ties`` (they differ where the reference decided: a real
    difference, never float rounding)."""

    pixels: int
    ties: int
    flipped: int
    flipped_outside_ties: int

    @property
    def tie_share(self) -> float:
        return self.ties / self.pixels if self.pixels else 0.0


def mask_ties(reference_probability: np.ndarray, threshold: float, reference_mask: np.ndarray,
              other_mask: np.ndarray, tolerance: float) -> MaskTies:
    """Count ties and flips between two masks (``> 0`` is foreground) of one frame.

    A tie is a pixel whose reference probability lies within ``tolerance`` of
    ``threshold``: there the other run's probability, within ``tolerance`` of the
    reference, may fall on either side. Elsewhere both runs decide alike.
    """
    prob = np.asarray(reference_probability, np.float64)
    a, b = np.asarray(reference_mask) > 0, np.asarray(other_mask) > 0
    if not prob.shape == a.shape == b.shape:
        raise ValueError(f"shapes differ: probability {prob.shape}, masks {a.shape} and {b.shape}")
    tie = np.abs(prob - float(threshold)) <= float(tolerance)
    flip = a != b
    return MaskTies(int(prob.size), int(np.count_nonzero(tie)), int(np.count_nonzero(flip)),
                    int(np.count_nonzero(flip & ~tie)))
