"""ROI tracking for streams: once the satellite is found, look only where it was.

A :class:`RoiTracker` wraps a :class:`~satsam_ros.detector.Detector` and has the same
one-call API (``tracker.detect(frame, order) -> Result``). Per frame it decides:

* **full scan** (every patch; with the Detector's coarse-to-fine cascade on, the
  patches the cascade chooses) on the first frame, after the target was lost, when the
  frame size changes, and at least every ``full_scan_every`` frames (so a second
  object, or a target that jumped, is found again within that many frames);
* otherwise an **ROI frame**: only the patches that intersect the last detection's box
  grown by ``margin`` input pixels on each side are run through the model
  (:func:`satsam_ros.core.selection.select_patches`, the selection the cascade uses
  too). The other patches get probability 0 (so mask, probability and boxes are zero
  there).
* When an ROI frame finds nothing, the target is considered lost; with
  ``rescan_on_loss`` the same frame is scanned again in full at once (the Result then
  reports the summed timings of both passes), otherwise the next frame is.

The region tracked is the bounding rectangle of *all* boxes of the last frame (the
satellite's body and panels can come out as separate components). A false alarm far
from the satellite therefore widens the region; that costs speed, never recall.

Pure core: no ROS imports. The node is to expose it as a parameter, off by default.
"""

from __future__ import annotations

from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from . import selection
from .detector import Detector, Result
from .postprocess import Box

SCAN_KINDS = ("full", "roi", "rescan")


def union_box(boxes: Sequence[Box]) -> Optional[Tuple[int, int, int, int]]:
    """Bounding rectangle (x0, y0, x1, y1), half-open pixels, of all boxes; None if none."""
    if not boxes:
        return None
    return (min(b.x0 for b in boxes), min(b.y0 for b in boxes), max(b.x1 for b in boxes), max(b.y1 for b in boxes))


def patches_for_region(
    detector: Detector, region: Tuple[int, int, int, int], frame_shape: Tuple[int, int], margin: int
) -> List[int]:
    """Indices of the detector's patches that intersect ``region`` grown by ``margin``.

    ``region`` is (x0, y0, x1, y1) in input-frame pixels (half-open), ``frame_shape``
    is (H, W) of the input frame. The one patch-selection mechanism,
    :func:`satsam_ros.core.selection.select_patches` (the cascade uses it too).
    """
    return selection.select_patches(detector.grid, [region], frame_shape, margin)


class RoiTracker:
    """Runs a Detector on streams, restricting it to the target's neighbourhood.

    ``margin``: pixels of the input frame added on every side of the last box (how far
    the satellite may move between frames, plus its growth). ``full_scan_every``: a
    full scan at least every this many frames (1 = always full, i.e. tracking off).
    ``rescan_on_loss``: rescan the same frame in full when an ROI frame finds nothing.

    After each call, ``last_scan`` is "full", "roi" or "rescan", ``last_patches`` the
    patch indices run (all of them for full scans), ``stats`` the running counters.
    """

    def __init__(self, detector: Detector, margin: int = 48, full_scan_every: int = 10, rescan_on_loss: bool = True):
        if int(margin) < 0:
            raise ValueError(f"margin must be >= 0 pixels; got {margin}")
        if int(full_scan_every) < 1:
            raise ValueError(f"full_scan_every must be >= 1 frame; got {full_scan_every}")
        self.detector = detector
        self.margin = int(margin)
        self.full_scan_every = int(full_scan_every)
        self.rescan_on_loss = bool(rescan_on_loss)
        self.reset()

    def reset(self) -> None:
        """Forget the target: the next frame gets a full scan."""
        self._region: Optional[Tuple[int, int, int, int]] = None
        self._shape: Optional[Tuple[int, int]] = None
        self._since_full = 0
        self.last_scan: Optional[str] = None
        self.last_patches: List[int] = []
        self.stats: Dict[str, int] = {"frames": 0, "full": 0, "roi": 0, "rescan": 0, "patches_run": 0}

    @property
    def region(self) -> Optional[Tuple[int, int, int, int]]:
        """The tracked region (x0, y0, x1, y1) in input pixels, or None when searching."""
        return self._region

    def detect(self, frame: np.ndarray, order: str = "rgb") -> Result:
        """Detect in one frame of a stream; same formats and Result as Detector.detect."""
        shape = (int(np.shape(frame)[0]), int(np.shape(frame)[1]))
        all_patches = list(range(len(self.detector.grid)))
        full = (
            self._region is None
            or shape != self._shape
            or self._since_full + 1 >= self.full_scan_every
        )
        if full:
            kind, chosen = "full", all_patches
            result = self.detector.detect(frame, order)
        else:
            kind = "roi"
            chosen = patches_for_region(self.detector, self._region, shape, self.margin)
            result = self.detector.detect(frame, order, only_patches=chosen)
            if not result.boxes and self.rescan_on_loss:
                first = result
                kind, chosen = "rescan", all_patches
                result = self.detector.detect(frame, order)
                result.timings = {k: result.timings[k] + first.timings.get(k, 0.0) for k in result.timings}
                result.patches += first.patches
        self._shape = shape
        self._region = union_box(result.boxes)
        self._since_full = 0 if kind != "roi" else self._since_full + 1
        self.last_scan = kind
        self.last_patches = list(chosen)
        self.stats["frames"] += 1
        self.stats[kind] += 1
        self.stats["patches_run"] += int(result.patches_run)
        return result
