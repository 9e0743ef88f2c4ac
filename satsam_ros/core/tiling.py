"""Resize to S x S, cut into P x P patches, and stitch patch outputs back.

The grid is regular: patch origins step by ``stride = P - overlap`` and the last
patch in each direction is moved flush with the far border, so every pixel is
covered and no patch leaves the image. With ``overlap = 0`` and S a multiple of P
the patches tile the image exactly (4 / 16 / 64 patches for S = 512 / 1024 / 2048
at P = 256) and ``stitch(extract(x)) == x`` bit for bit.

With overlap, stitching is a weighted average: each patch contributes with a
separable "tent" weight that is 1 in the patch's interior and ramps down linearly
over the ``overlap`` pixels at borders shared with a neighbour (borders on the
image edge keep full weight). The weights of overlapping patches sum to a smooth
field, so values blend across the seam instead of jumping at it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import List, Tuple

import cv2
import numpy as np

ALLOWED_SIZES = (512, 1024, 2048)


def resize(image: np.ndarray, height: int, width: int, nearest: bool = False) -> np.ndarray:
    """Resize an H x W or H x W x C array (any cv2 dtype) to ``height x width``.

    Bilinear by default (area averaging when shrinking, which avoids aliasing),
    nearest neighbour for label masks. Returns the input unchanged when the size
    already matches.
    """
    if image.shape[0] == height and image.shape[1] == width:
        return image
    if nearest:
        interp = cv2.INTER_NEAREST
    elif height < image.shape[0] and width < image.shape[1]:
        interp = cv2.INTER_AREA
    else:
        interp = cv2.INTER_LINEAR
    out = cv2.resize(image, (int(width), int(height)), interpolation=interp)
    if image.ndim == 3 and out.ndim == 2:  # cv2 drops a single channel axis
        out = out[:, :, None]
    return out


def _axis_origins(size: int, patch: int, stride: int) -> List[int]:
    if size <= patch:
        return [0]
    origins = list(range(0, size - patch + 1, stride))
    if origins[-1] != size - patch:
        origins.append(size - patch)
    return origins


def _ramp_weights(patch: int, overlap: int, ramp_start: bool, ramp_end: bool) -> np.ndarray:
    """1-D weight of length ``patch`` ramping over ``overlap`` pixels at chosen ends."""
    w = np.ones(patch, dtype=np.float32)
    if overlap > 0:
        ramp = (np.arange(overlap, dtype=np.float32) + 0.5) / overlap
        if ramp_start:
            w[:overlap] = np.minimum(w[:overlap], ramp)
        if ramp_end:
            w[patch - overlap:] = np.minimum(w[patch - overlap:], ramp[::-1])
    return w


@dataclass
class PatchGrid:
    """The patch layout of an S x S image.

    ``origins`` lists (y, x) of every patch's top-left corner, row-major.
    """

    size: int
    patch: int = 256
    overlap: int = 0
    origins: List[Tuple[int, int]] = field(init=False)

    def __post_init__(self) -> None:
        if self.patch <= 0 or self.size <= 0:
            raise ValueError(f"size and patch must be positive, got size={self.size}, patch={self.patch}")
        if self.patch > self.size:
            raise ValueError(f"patch size {self.patch} is larger than the image size {self.size}")
        if not 0 <= self.overlap < self.patch:
            raise ValueError(f"overlap must be in [0, patch size {self.patch}), got {self.overlap}")
        stride = self.patch - self.overlap
        ys = _axis_origins(self.size, self.patch, stride)
        self.origins = [(y, x) for y in ys for x in ys]
        self._weights = self._make_weights(ys) if self.overlap > 0 else None

    def __len__(self) -> int:
        return len(self.origins)

    def _make_weights(self, axis: List[int]) -> np.ndarray:
        last = axis[-1]
        per_axis = {
            o: _ramp_weights(self.patch, self.overlap, ramp_start=o > 0, ramp_end=o < last)
            for o in axis
        }
        return np.stack([np.outer(per_axis[y], per_axis[x]) for y, x in self.origins])

    def extract(self, image: np.ndarray) -> np.ndarray:
        """S x S (x C) image -> N x P x P (x C) patches (a copy, C order)."""
        if image.shape[0] != self.size or image.shape[1] != self.size:
            raise ValueError(f"image is {image.shape[:2]}, grid expects {self.size} x {self.size}")
        p = self.patch
        if self.overlap == 0 and self.size % p == 0:
            n = self.size // p
            rest = image.shape[2:]
            blocks = image.reshape((n, p, n, p) + rest).swapaxes(1, 2)
            return np.ascontiguousarray(blocks.reshape((n * n, p, p) + rest))
        return np.stack([image[y:y + p, x:x + p] for y, x in self.origins])

    def extract_chw(self, image: np.ndarray, channels: int = 0, indices=None) -> np.ndarray:
        """S x S x C (or S x S x 1 broadcast to ``channels``) image -> N x C x P x P patches.

        The channels-first layout the backends take, in one copy (no N x P x P x C
        intermediate). ``channels`` > C broadcasts a single-channel image (a gray
        frame) to that many identical planes. ``indices`` selects patches (in
        ``origins`` order); default all. Returns a new C-ordered float array.
        """
        if image.ndim != 3 or image.shape[0] != self.size or image.shape[1] != self.size:
            raise ValueError(f"image is {image.shape}, grid expects {self.size} x {self.size} x C")
        c_in = image.shape[2]
        c_out = max(int(channels), c_in)
        if c_out != c_in and c_in != 1:
            raise ValueError(f"can only broadcast a 1-channel image, got {c_in} channels to {c_out}")
        order = range(len(self.origins)) if indices is None else list(indices)
        p = self.patch
        out = np.empty((len(order), c_out, p, p), dtype=image.dtype)
        planes = image.transpose(2, 0, 1)  # C x S x S view
        for k, i in enumerate(order):
            y, x = self.origins[i]
            out[k] = planes[:, y:y + p, x:x + p]
        return out

    def stitch(self, patches: np.ndarray) -> np.ndarray:
        """N x P x P float patches -> S x S float32 image (exact inverse when overlap = 0)."""
        p = self.patch
        if patches.shape[:3] != (len(self.origins), p, p):
            raise ValueError(f"expected {len(self.origins)} x {p} x {p} patches, got {patches.shape}")
        if self.overlap == 0 and self.size % p == 0:
            n = self.size // p
            grid = patches.reshape((n, n, p, p) + patches.shape[3:]).swapaxes(1, 2)
            return np.ascontiguousarray(grid.reshape((self.size, self.size) + patches.shape[3:]), dtype=np.float32)
        out = np.zeros((self.size, self.size) + patches.shape[3:], dtype=np.float32)
        norm = np.zeros((self.size, self.size), dtype=np.float32)
        weights = self._weights if self._weights is not None else np.ones((len(self.origins), p, p), np.float32)
        for (y, x), patch_values, w in zip(self.origins, patches, weights):
            ww = w if patch_values.ndim == 2 else w[:, :, None]
            out[y:y + p, x:x + p] += patch_values * ww
            norm[y:y + p, x:x + p] += w
        if out.ndim == 3:
            norm = norm[:, :, None]
        return out / norm


def check_size(size: int) -> int:
    """Raise ValueError unless ``size`` is one of the supported S values."""
    if int(size) not in ALLOWED_SIZES:
        raise ValueError(f"size must be one of {', '.join(map(str, ALLOWED_SIZES))}; got {size}")
    return int(size)
