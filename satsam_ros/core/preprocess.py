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
    all. A gray frame is resized as one channel and broadcast to three in the one copy
    the patches are cut into. Raises FrameError for frames that cannot be used.
    """
    rgb = imaging.to_sam_rgb(frame, order)
    single = np.ndim(frame) == 2 or np.shape(frame)[2] == 1
    resized = tiling.resize(rgb[:, :, :1] if single else rgb, grid.size, grid.size)
    patches = grid.extract_chw(resized, 3, chosen)  # our own copy: normalised in place
    return normalize_patches(patches), (rgb.shape[0], rgb.shape[1])


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
