"""Pictures of a result: the frame in gray with the mask and boxes drawn on it.

One implementation for the node's ``overlay`` topic, ``satsam detect``'s overlay files,
the bag evaluation's examples and the training reports' example figures.
"""

from __future__ import annotations

from typing import Iterable, Optional, Tuple

import cv2
import numpy as np

from .imaging import to_uint8_gray
from .postprocess import Box

MASK_TINT_BGR = (0, 0, 255)  # red
BOX_BGR = (0, 255, 0)  # green


def overlay_image(frame: np.ndarray, mask: np.ndarray, boxes: Iterable[Box], order: str = "rgb") -> np.ndarray:
    """H x W x 3 uint8 BGR picture: the frame in gray, the mask tinted red, boxes (with
    their scores) in green. ``frame`` is any supported frame (see core.imaging),
    ``mask`` H x W (nonzero = satellite), ``order`` the frame's channel order."""
    gray = to_uint8_gray(frame, order)
    out = cv2.cvtColor(gray, cv2.COLOR_GRAY2BGR)
    sel = mask > 0
    out[sel] = (0.5 * out[sel] + 0.5 * np.array(MASK_TINT_BGR)).astype(np.uint8)
    for b in boxes:
        cv2.rectangle(out, (b.x0, b.y0), (b.x1 - 1, b.y1 - 1), BOX_BGR, 1)
        cv2.putText(out, f"{b.score:.2f}", (b.x0, max(b.y0 - 3, 10)), cv2.FONT_HERSHEY_SIMPLEX, 0.4, BOX_BGR, 1)
    return out


def draw_outline(image: np.ndarray, mask: Optional[np.ndarray], colour: Tuple[int, int, int],
                 thickness: Optional[int] = None) -> np.ndarray:
    """Draw the outer contours of ``mask`` (H x W, nonzero = inside) onto the H x W x 3
    uint8 ``image`` in place and return it. ``thickness`` None: about 1 px per 300 px
    of the image's longer side (at least 1). An empty or None mask draws nothing."""
    if mask is None or not np.any(mask):
        return image
    if thickness is None:
        thickness = max(1, int(round(max(image.shape[:2]) / 300)))
    contours, _ = cv2.findContours((np.asarray(mask) > 0).astype(np.uint8), cv2.RETR_EXTERNAL,
                                   cv2.CHAIN_APPROX_NONE)
    cv2.drawContours(image, contours, -1, colour, int(thickness))
    return image
