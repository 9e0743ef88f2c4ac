"""Pre-processing: a frame (or one training patch) -> the N x 3 x E x E batch a backend takes.

One implementation for the Detector and for training: ``satsam_training``'s patch
dataset calls :func:`patch_pixels`, which runs the same functions the Detector runs
(:func:`normalize_patches` and :func:`resize_patches`), so a model is trained on
exactly the kind of input it sees at inference time.

Shapes: a frame is H x W (x C), any supported dtype (:mod:`satsam_ros.core.imaging`);
S is the frame resize, P the patch side, E the encoder input. Values after
normalisation are SAM's ``(x - mean) / std`` of RGB on the 0..255 scale.
"""

from __future__ import annotations

from typing import List, Optional, Tuple

import cv2
import numpy as np

from . import imaging, tiling

_MEAN = np.asarray(imaging.SAM_PIXEL_MEAN, dtype=np.float32)
_STD = np.asarray(imaging.SAM_PIXEL_STD, dtype=np.float32)


def normalize_patches(patches: np.ndarray) -> np.ndarray:
    """SAM normalisation of N x 3 x P x P float32 RGB (0..255) patches, in place; returns them."""
    for c in range(3):
        plane = patches[:, c]
        np.subtract(plane, _MEAN[c], out=plane)
        np.divide(plane, _STD[c], out=plane)
    return patches


def frame_patches(frame: np.ndarray, order: str, grid: tiling.PatchGrid,
                  chosen: Optional[List[int]] = None) -> Tuple[np.ndarray, Tuple[int, int]]:
    """A frame -> (N x 3 x P x P float32 normalised patches of it resized to S x S, (H, W)).

    ``grid`` is the S x S patch layout; ``chosen`` selects patches (grid order), default
    all. Raises FrameError for frames that cannot be used. (:func:`imaging.to_sam_planes`
    then :func:`grid_patches`; the cascade converts a frame once for both its grids.)
    """
    planes = imaging.to_sam_planes(frame, order)
    return grid_patches(planes, grid, chosen), (planes.shape[0], planes.shape[1])


def grid_patches(planes: np.ndarray, grid: tiling.PatchGrid, chosen: Optional[List[int]] = None) -> np.ndarray:
    """H x W x C float32 SAM planes (:func:`imaging.to_sam_planes`: C = 1 for a gray frame,
    else 3) -> N x 3 x P x P float32 patches of the frame resized to S x S, normalised.

    The frame is resized once (one channel for a gray frame); each patch's three planes
    are normalised straight from that image into the output (``(x - mean) / std`` per
    channel: the arithmetic of :func:`normalize_patches`, without a copy first). Only
    the ``chosen`` patches (grid order; default all) are cut; none: an empty batch.
    """
    order = range(len(grid.origins)) if chosen is None else list(chosen)
    p = grid.patch
    out = np.empty((len(order), 3, p, p), dtype=np.float32)
    if not len(out):
        return out
    bands = _row_bands([grid.origins[i][0] for i in order], p) if len(order) < len(grid.origins) else None
    if bands is None:
        slabs = [(0, tiling.resize(planes, grid.size, grid.size))]
    else:  # the rows of the chosen patches only (bit-identical cuts of the whole resize)
        slabs = [(a, tiling.resize_rows(planes, grid.size, grid.size, a, b)) for a, b in bands]
    slabs = [(a, s[:, :, None] if s.ndim == 2 else s) for a, s in slabs]
    gray = slabs[0][1].shape[2] == 1
    for k, i in enumerate(order):
        y, x = grid.origins[i]
        top, slab = next((a, s) for a, s in slabs if a <= y and y + p <= a + s.shape[0])
        window = slab[y - top:y - top + p, x:x + p]
        for c in range(3):
            plane = out[k, c]
            np.subtract(window[:, :, 0 if gray else c], _MEAN[c], out=plane)
            np.divide(plane, _STD[c], out=plane)
    return out


def _row_bands(tops: List[int], patch: int) -> List[Tuple[int, int]]:
    """Patch rows (their top rows) -> the disjoint row bands [a, b) of the S x S image they
    cover, merged where they touch or overlap."""
    bands: List[Tuple[int, int]] = []
    for y in sorted(set(tops)):
        if bands and y <= bands[-1][1]:
            bands[-1] = (bands[-1][0], max(bands[-1][1], y + patch))
        else:
            bands.append((y, y + patch))
    return bands


def resize_patches(patches: np.ndarray, size: int) -> np.ndarray:
    """N x C x P x P float32 -> N x C x size x size, bilinear (as SamProcessor).

    One cv2 call per patch on its P x P x C view: the same arithmetic whatever the
    batch size, so fast (batched) and faithful (one by one) feed identical inputs.
    Returns the input itself when P already equals ``size``.
    """
    n, c, p = patches.shape[0], patches.shape[1], patches.shape[2]
    if p == size:
        return patches
    out = np.empty((n, c, size, size), dtype=np.float32)
    for i in range(n):
        up = cv2.resize(np.ascontiguousarray(patches[i].transpose(1, 2, 0)), (size, size),
                        interpolation=cv2.INTER_LINEAR)
        out[i] = up.reshape(size, size, c).transpose(2, 0, 1)
    return out


def patch_pixels(patch: np.ndarray, encoder_size: int, order: str = "rgb") -> np.ndarray:
    """One P x P (x C) patch image -> 3 x E x E float32: what the Detector hands its
    backend for that patch (SAM RGB, normalised, resized to E x E)."""
    rgb = imaging.to_sam_rgb(patch, order)
    chw = np.ascontiguousarray(rgb.transpose(2, 0, 1))[None]
    return resize_patches(normalize_patches(chw), int(encoder_size))[0]
