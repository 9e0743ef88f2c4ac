"""Noise primitives of the training generator (style ``a``): value noise and its
multi-octave sum, smoothstep, and a few shapes built on them.

Everything here is float32, H x W, and draws only from the generator it is given.
"""

from __future__ import annotations

import cv2
import numpy as np


def value_noise(rng: np.random.Generator, h: int, w: int, cell: float, aspect: float = 1.0) -> np.ndarray:
    """Smooth random field in [0, 1] with features about ``cell`` px (x stretched by ``aspect``).

    A random grid with one value per cell, sampled bicubically at a random sub-cell
    offset straight into the H x W output (one warp, no oversized intermediate).
    """
    cx = cell * aspect
    gh = max(2, int(h / cell) + 4)
    gw = max(2, int(w / cx) + 4)
    grid = rng.random((gh, gw), dtype=np.float32)
    oy, ox = rng.random(2) + 1.0
    # inverse map: output pixel (x, y) samples grid point (x / cx + ox, y / cell + oy)
    m = np.array([[1.0 / cx, 0.0, ox], [0.0, 1.0 / cell, oy]], np.float64)
    return cv2.warpAffine(grid, m, (w, h), flags=cv2.INTER_CUBIC | cv2.WARP_INVERSE_MAP,
                          borderMode=cv2.BORDER_REFLECT)


def fbm(rng, h, w, cell, octaves, persistence=0.5, aspect=1.0) -> np.ndarray:
    """Multi-octave value noise, normalised to about [0, 1] (1st-99th percentile).

    Coarse octaves are computed at a reduced resolution (at least 4 px per cell)
    and upsampled once per resolution level, which keeps a frame well under 0.1 s.
    """
    levels: dict = {}
    amp, total = 1.0, 0.0
    for _ in range(octaves):
        if cell < 1.5:
            break
        r = 1
        while r < 8 and cell / (2 * r) >= 4:
            r *= 2
        lh, lw = -(-h // r), -(-w // r)
        acc = levels.setdefault(r, np.zeros((lh, lw), np.float32))
        acc += np.float32(amp) * value_noise(rng, lh, lw, cell / r, aspect)
        total += amp
        amp *= persistence
        cell /= 2.0
    out = np.zeros((h, w), np.float32)
    for r, acc in levels.items():
        out += acc if r == 1 else cv2.resize(acc, (w, h), interpolation=cv2.INTER_LINEAR)
    out /= np.float32(max(total, 1e-6))
    return normalise(out)


def normalise(img: np.ndarray, lo_q: float = 1.0, hi_q: float = 99.0) -> np.ndarray:
    """Stretch ``img`` so its ``lo_q``-th..``hi_q``-th percentiles span [0, 1] (in place, clipped)."""
    lo, hi = np.percentile(img[::8, ::8], (lo_q, hi_q))
    img -= np.float32(lo)
    img *= np.float32(1.0 / max(hi - lo, 1e-6))
    return np.clip(img, 0.0, 1.0, out=img)


def smoothstep(edge0: float, edge1: float, x: np.ndarray) -> np.ndarray:
    t = np.clip((x - np.float32(edge0)) / np.float32(max(edge1 - edge0, 1e-6)), 0.0, 1.0)
    return t * t * (np.float32(3.0) - np.float32(2.0) * t)


def warp(rng: np.random.Generator, img: np.ndarray, amount: float, cell: float) -> np.ndarray:
    """Displace ``img`` by a smooth random field of up to ``amount`` px (domain warping)."""
    h, w = img.shape
    dx = (value_noise(rng, h, w, cell) - np.float32(0.5)) * np.float32(2 * amount)
    dy = (value_noise(rng, h, w, cell) - np.float32(0.5)) * np.float32(2 * amount)
    gx, gy = np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32))
    return cv2.remap(img, gx + dx, gy + dy, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)


def irregular_polygon(rng: np.random.Generator, cx: float, cy: float, radius: float, points: int = 24,
                      roughness: float = 0.35) -> np.ndarray:
    """A star-shaped blob outline (N x 2 float) with a fractal-ish radius profile."""
    t = np.sort(rng.uniform(0, 2 * np.pi, points))
    r = np.ones(points)
    for k, amp in ((2, 0.5), (4, 0.25), (8, 0.12)):
        r += roughness * amp * np.sin(k * t + rng.uniform(0, 2 * np.pi)) * rng.uniform(0.5, 1.5)
    r += roughness * 0.15 * rng.standard_normal(points)
    r = np.clip(r, 0.25, None) * radius
    return np.stack([cx + r * np.cos(t), cy + r * np.sin(t)], 1)
