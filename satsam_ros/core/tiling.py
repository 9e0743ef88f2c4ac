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

import math
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Tuple

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


#: (S rows, S cols, H, W) -> the vertical area weights of that geometry, or None where the
#: band resize does not reproduce cv2's (then the whole image is resized)
_BAND_WEIGHTS: Dict[Tuple[int, int, int, int], Optional[Tuple[np.ndarray, np.ndarray, int]]] = {}


def _area_rows(src_rows: int, dst_rows: int) -> Tuple[np.ndarray, np.ndarray, int]:
    """cv2's INTER_AREA weights along one axis (``src_rows`` -> ``dst_rows``), read off
    cv2 itself (the resize of an identity): per output row its source rows ascending
    (``index``, padded with ``src_rows``, a zero row) and weights (``weight``, padded with
    0), and the number of taps."""
    beta = cv2.resize(np.eye(src_rows, dtype=np.float32), (src_rows, dst_rows), interpolation=cv2.INTER_AREA)
    taps = int(max(1, (beta != 0).sum(axis=1).max()))
    index = np.full((dst_rows, taps), src_rows, dtype=np.intp)
    weight = np.zeros((dst_rows, taps), dtype=np.float32)
    for dy in range(dst_rows):
        rows = np.flatnonzero(beta[dy])
        index[dy, :len(rows)] = rows
        weight[dy, :len(rows)] = beta[dy, rows]
    return index, weight, taps


def _band(rows_in: np.ndarray, src_rows: int, height: int, width: int, r0: int, weights) -> np.ndarray:
    """The INTER_AREA resize of an image of ``src_rows`` rows that is zero outside its rows
    [r0, r0 + len(rows_in)) (``rows_in``) as cv2 computes it: its horizontal pass on the
    band alone (cv2, rows unchanged), then its vertical pass (each output row the
    weighted sum of its source rows, in cv2's order) on the output rows the band reaches;
    every other output row is 0."""
    index, weight, taps = weights
    r1 = r0 + rows_in.shape[0]
    reach = np.flatnonzero(((index >= r0) & (index < r1)).any(axis=1))
    out = np.zeros((height, width), dtype=np.float32)
    if not len(reach):
        return out
    d0, d1 = int(reach[0]), int(reach[-1]) + 1
    rows = np.zeros((r1 - r0 + 1, width), dtype=np.float32)  # the band's rows, then a zero row
    rows[:-1] = cv2.resize(rows_in, (width, r1 - r0), interpolation=cv2.INTER_AREA)
    local = index[d0:d1] - r0
    local[(index[d0:d1] < r0) | (index[d0:d1] >= r1) | (index[d0:d1] == src_rows)] = r1 - r0
    acc = out[d0:d1]
    for j in range(taps):
        acc += weight[d0:d1, j:j + 1] * rows[local[:, j]]
    return out


def _band_weights(shape: Tuple[int, int], height: int, width: int):
    """The geometry's vertical weights once :func:`_band` was checked to give cv2's own
    resize bit for bit on random bands (top, middle, bottom); None where it does not."""
    key = (int(shape[0]), int(shape[1]), int(height), int(width))
    if key not in _BAND_WEIGHTS:
        weights = _area_rows(key[0], key[2])
        rng = np.random.default_rng(0)
        ok = True
        for r0, r1 in ((0, key[0] // 4), (key[0] // 3, key[0] // 2 + 7), (key[0] - key[0] // 5, key[0])):
            test = np.zeros(shape, dtype=np.float32)
            test[r0:r1] = rng.random((r1 - r0, key[1]), dtype=np.float32)
            want = cv2.resize(test, (width, height), interpolation=cv2.INTER_AREA)
            ok = ok and np.array_equal(_band(test[r0:r1], key[0], height, width, r0, weights), want)
        _BAND_WEIGHTS[key] = weights if ok else None
    return _BAND_WEIGHTS[key]


def resize_band(image: np.ndarray, height: int, width: int, r0: int, r1: int,
                shape: Optional[Tuple[int, int]] = None) -> np.ndarray:
    """:func:`resize` of an H' x W' float32 image that is zero outside rows [r0, r1),
    bit-identical to it, at the cost of the band: where the resize shrinks both axes
    (INTER_AREA), cv2's horizontal pass runs on the band only and its vertical pass on the
    output rows the band reaches (the weights read off cv2 and checked against it once per
    geometry); otherwise :func:`resize` itself. ``shape`` (H', W'): ``image`` holds the
    band's rows only (r1 - r0 of them), so that the zeros around it need not exist. (The
    cascade's and ROI tracking's probability maps: a few patches of a 2048 frame.)"""
    banded = shape is not None
    if banded:
        shape = (int(shape[0]), int(shape[1]))
        if not 0 <= r0 < r1 <= shape[0] or image.shape[:2] != (r1 - r0, shape[1]):
            raise ValueError(f"rows [{r0}, {r1}) of a {shape[0]} x {shape[1]} image are {r1 - r0} x {shape[1]} "
                             f"values; got {' x '.join(str(n) for n in image.shape)}")
        band = image
    else:
        shape, band = image.shape[:2], image[r0:r1]
    shrink = height < shape[0] and width < shape[1]
    ok = image.dtype == np.float32 and image.ndim == 2 and shrink and 0 <= r0 < r1 <= shape[0]
    weights = _band_weights(shape, height, width) if ok else None
    if weights is not None:
        return _band(band, shape[0], height, width, int(r0), weights)
    if banded:  # the zeros around the band, for cv2
        whole = np.zeros(shape + image.shape[2:], dtype=image.dtype)
        whole[r0:r1] = band
        return resize(whole, height, width)
    return resize(image, height, width)


#: (H, W, C, height, width, dtype) -> whether :func:`_linear_rows` reproduces cv2's resize
#: of that geometry bit for bit (checked once on random images)
_ROWS_EXACT: Dict[Tuple[int, ...], bool] = {}


def _row_period(src: int, dst: int) -> Tuple[int, int]:
    """(source rows, output rows) of the smallest block that maps one onto the other
    exactly: output row ``k * dst_step`` starts where source row ``k * src_step`` does."""
    g = math.gcd(int(src), int(dst))
    return int(src) // g, int(dst) // g


def _linear_rows(image: np.ndarray, height: int, width: int, r0: int, r1: int) -> np.ndarray:
    """Output rows [r0, r1) of the INTER_LINEAR resize of ``image`` to ``height x width``,
    from cv2 on a horizontal slab of the source: the slab starts and ends on the period
    of :func:`_row_period` (so its rows sit where they sit in the whole image) one period
    outside the rows asked for (so cv2's border rule at the slab's edges never reaches
    them), and its output rows are those of the whole resize. Whether that is bit for
    bit cv2's own is for :func:`_rows_exact` to say."""
    src_step, dst_step = _row_period(image.shape[0], height)
    d0 = max(0, (r0 // dst_step - 1) * dst_step)
    d1 = min(height, (-(-r1 // dst_step) + 1) * dst_step)
    s0, s1 = d0 // dst_step * src_step, d1 // dst_step * src_step
    slab = cv2.resize(image[s0:s1], (int(width), d1 - d0), interpolation=cv2.INTER_LINEAR)
    if image.ndim == 3 and slab.ndim == 2:
        slab = slab[:, :, None]
    return slab[r0 - d0:r1 - d0]


def _rows_exact(image: np.ndarray, height: int, width: int) -> bool:
    """Whether :func:`_linear_rows` gives cv2's whole resize bit for bit in this geometry:
    checked once per geometry on a random image of its shape and dtype, bands at the
    top, in the middle and at the bottom."""
    key = tuple(image.shape) + (int(height), int(width), image.dtype.str)
    if key not in _ROWS_EXACT:
        rng = np.random.default_rng(0)
        test = (rng.random(image.shape) * 255).astype(image.dtype)
        want = resize(test, height, width)
        ok = want.shape[:2] == (height, width)
        for r0, r1 in ((0, height // 8 + 1), (height // 3, height // 2 + 5), (height - height // 7 - 1, height)):
            ok = ok and np.array_equal(_linear_rows(test, height, width, r0, r1), want[r0:r1])
        _ROWS_EXACT[key] = bool(ok)
    return _ROWS_EXACT[key]


def resize_rows(image: np.ndarray, height: int, width: int, r0: int, r1: int) -> np.ndarray:
    """Rows [r0, r1) of :func:`resize` of ``image`` to ``height x width``, bit-identical to
    them, at the cost of those rows where the resize is bilinear (an upscale: the
    cascade's and ROI tracking's few patches of an S = 2048 frame): cv2 on the source rows
    they need (:func:`_linear_rows`, checked against cv2 once per geometry); otherwise the
    whole resize cut."""
    if not 0 <= r0 < r1 <= height:
        raise ValueError(f"rows [{r0}, {r1}) are not inside an image of {height} rows")
    if image.shape[0] == height and image.shape[1] == width:
        return image[r0:r1]
    area = height < image.shape[0] and width < image.shape[1]
    if area or not _rows_exact(image, height, width):
        return resize(image, height, width)[r0:r1]
    return _linear_rows(image, height, width, r0, r1)


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
