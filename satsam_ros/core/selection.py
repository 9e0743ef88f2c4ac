"""Which patches of a grid run: regions of the input frame -> patch indices.

One mechanism for every caller that runs part of a frame's patch grid:

* ROI tracking (:mod:`.roi`): the last frame's detections, grown by a margin;
* the coarse-to-fine cascade (:class:`.detector.Detector`): the objects the coarse
  grid published and the coarse patches it scored present, grown by a margin, at most
  a set number of patches per frame (those under the strongest coarse evidence).

A region is ``(x0, y0, x1, y1)`` in **input-frame pixels** (half-open, floats
allowed), the same frame the published boxes are in; a margin is input-frame pixels
added on every side. A grid's patches live in the frame resized to S x S, so a region
is scaled by ``S / W`` and ``S / H`` before it is compared with the patches. A patch is
selected when its square overlaps a grown region by more than a touch (shared edges do
not count).

Pure numpy, no state.
"""

from __future__ import annotations

from typing import Iterable, List, Optional, Sequence, Tuple

import numpy as np

from .tiling import PatchGrid

Region = Tuple[float, float, float, float]  # x0, y0, x1, y1: input-frame pixels, half-open

#: Slack (resized pixels) for the float error of scaling a region into S x S and back:
#: a coarse patch's edge mapped through the input frame onto the fine grid lands within
#: 1e-12 of a fine patch edge; true overlaps of integer boxes are at least 1 / W > 1e-6.
EDGE_SLACK = 1e-7


def box_regions(boxes: Iterable) -> List[Region]:
    """Regions of :class:`~satsam_ros.core.postprocess.Box` objects (their XYXY pixels)."""
    return [(float(b.x0), float(b.y0), float(b.x1), float(b.y1)) for b in boxes]


def patch_regions(grid: PatchGrid, indices: Iterable[int], frame_shape: Tuple[int, int]) -> List[Region]:
    """The input-frame rectangle each patch ``indices`` of ``grid`` covers (floats)."""
    height, width = int(frame_shape[0]), int(frame_shape[1])
    sx, sy, p = width / float(grid.size), height / float(grid.size), grid.patch
    out: List[Region] = []
    for i in indices:
        y, x = grid.origins[int(i)]
        out.append((x * sx, y * sy, (x + p) * sx, (y + p) * sy))
    return out


def select_patches(grid: PatchGrid, regions: Iterable[Sequence[float]], frame_shape: Tuple[int, int],
                   margin: float = 0.0, scores: Optional[Sequence[float]] = None, limit: int = 0) -> List[int]:
    """Sorted indices (``grid.origins`` order) of the patches that overlap at least one
    of ``regions`` grown by ``margin`` input-frame pixels on every side.

    ``frame_shape`` is the input frame's (H, W). No regions: no patches. ``limit`` > 0
    keeps at most that many: the patches whose best overlapping region has the highest
    of ``scores`` (one per region; None: all equal), ties in grid order (a frame's cost
    bounded, the strongest evidence kept).
    """
    if int(limit) < 0:
        raise ValueError(f"limit must be >= 0 patches (0 = all); got {limit}")
    hit = _hits(grid, regions, frame_shape, margin)
    if hit is None:
        return []
    chosen = np.flatnonzero(hit.any(axis=1))
    if int(limit) and len(chosen) > int(limit):
        weight = np.ones(hit.shape[1]) if scores is None else np.asarray(list(scores), dtype=np.float64)
        if weight.shape != (hit.shape[1],):
            raise ValueError(f"scores must give one value per region ({hit.shape[1]}); got {weight.shape[0]}")
        best = np.where(hit[chosen], weight[None, :], -np.inf).max(axis=1)
        order = np.lexsort((chosen, -best))  # highest score first, then grid order
        chosen = np.sort(chosen[order[:int(limit)]])
    return [int(i) for i in chosen]


def _hits(grid: PatchGrid, regions: Iterable[Sequence[float]], frame_shape: Tuple[int, int],
          margin: float) -> Optional[np.ndarray]:
    """N patches x K regions: whether the patch overlaps the grown region (None: no regions)."""
    items = [tuple(float(v) for v in r[:4]) for r in regions]
    if not items:
        return None
    if float(margin) < 0:
        raise ValueError(f"margin must be >= 0 pixels; got {margin}")
    height, width = int(frame_shape[0]), int(frame_shape[1])
    if height <= 0 or width <= 0:
        raise ValueError(f"frame_shape must be positive (H, W); got {frame_shape}")
    r = np.asarray(items, dtype=np.float64)  # K x 4
    m = float(margin)
    sx, sy = grid.size / float(width), grid.size / float(height)
    x0 = (r[:, 0] - m) * sx + EDGE_SLACK
    y0 = (r[:, 1] - m) * sy + EDGE_SLACK
    x1 = (r[:, 2] + m) * sx - EDGE_SLACK
    y1 = (r[:, 3] + m) * sy - EDGE_SLACK
    origins = np.asarray(grid.origins, dtype=np.float64).reshape(-1, 2)  # N x (y, x)
    py, px, p = origins[:, :1], origins[:, 1:], float(grid.patch)
    return (px < x1) & (px + p > x0) & (py < y1) & (py + p > y0)  # N x K

