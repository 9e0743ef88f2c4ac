"""Backgrounds and distractors of the training generator (style ``a``).

A background is an H x W float32 radiance field in about [0, 1] drawn from one of
several *families* (what an orbital camera looks at), then given a random global
contrast and level:

* ``earth``: land and water from a low-frequency elevation field, coastlines sharp or
  soft, terrain rich or poor in texture, field patchwork, sun glint, cloud layers with
  cirrus streaks and shadows, haze (the generator's original scene);
* ``ocean``: open water with swell, glint and a few islands or cloud fragments;
* ``clouds``: a cloud deck, thick or broken, cellular or streaky;
* ``desert``: warped dune ridges;
* ``patchwork``: agricultural fields, roads and rivers;
* ``space``: black sky, stars of all brightnesses, sometimes airglow or a nebula-like haze;
* ``limb``: an Earth scene cut by the limb, with atmospheric glow, against space;
* ``flat``: a nearly uniform field with a gradient (texture-poor);
* ``texture``: abstract textures (noise of any scale, stripes, blobs);
* ``files``: random crops of the user's own images (``SynthConfig.backgrounds``).

Distractors are things that are *not* satellites but look a little like them: specular
glints and star-like crosses, small cloud fragments, islands and coastline corners,
roads and rivers. Every frame may get a few; empty frames of the hard-negative kind
get many.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from functools import lru_cache
from pathlib import Path

import cv2
import numpy as np

from .noise import fbm, irregular_polygon, normalise, smoothstep, value_noise, warp

FAMILIES = ("earth", "ocean", "clouds", "desert", "patchwork", "space", "limb", "flat", "texture")
FAMILY_WEIGHTS = (0.27, 0.08, 0.12, 0.05, 0.08, 0.11, 0.11, 0.06, 0.12)


def background(rng: np.random.Generator, h: int, w: int, family: str = "") -> tuple:
    """(H x W float32 radiance, family name): a random scene, contrast and level applied."""
    if not family:
        family = str(rng.choice(FAMILIES, p=FAMILY_WEIGHTS))
    img = _FAMILY_FUNCS[family](rng, h, w)
    if family not in ("space",):
        img = _contrast(rng, img)
    return img.astype(np.float32), family


def _contrast(rng: np.random.Generator, img: np.ndarray) -> np.ndarray:
    """Random global contrast (from washed out to harsh) and mean level."""
    mean = float(img[::4, ::4].mean())
    c = float(np.exp(rng.uniform(np.log(0.2), np.log(1.4))))
    level = rng.uniform(0.08, 0.85)
    return (img - np.float32(mean)) * np.float32(c) + np.float32(level)


def _half(fn, rng, h, w):
    """Build a scene at half resolution (the optics carry little detail at pixel scale)."""
    hh, hw = -(-h // 2), -(-w // 2)
    return cv2.resize(fn(rng, hh, hw), (w, h), interpolation=cv2.INTER_LINEAR)


# --------------------------------------------------------------------------- families


def earth(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    return _half(_earth_scene, rng, h, w)


def _earth_scene(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    scale = max(h, w)
    elev = fbm(rng, h, w, cell=scale * rng.uniform(0.2, 0.8), octaves=int(rng.integers(4, 8)),
               persistence=rng.uniform(0.45, 0.65))
    land_share = rng.choice([0.0, rng.uniform(0.2, 0.8), 1.0], p=[0.12, 0.63, 0.25])
    sea = np.quantile(elev[::8, ::8], 1.0 - land_share) if 0.0 < land_share < 1.0 else (-1.0 if land_share else 2.0)
    soft = rng.choice([0.003, 0.01, 0.04])  # coastline sharpness
    land = smoothstep(sea - soft, sea + soft, elev)

    texture = rng.choice([0.2, 1.0, 2.0], p=[0.3, 0.45, 0.25])  # poor, normal, rich
    albedo = rng.uniform(0.2, 0.5) + rng.uniform(0.1, 0.35) * fbm(rng, h, w, scale * 0.25, 4)
    ridge = 1.0 - np.abs(2.0 * fbm(rng, h, w, scale * rng.uniform(0.05, 0.2), 4) - 1.0)
    terrain = albedo * (1.0 + texture * (0.35 * ridge**3 - 0.25))
    terrain += (texture * rng.uniform(0.03, 0.15) * (fbm(rng, h, w, rng.uniform(2, 8), 3) - 0.5)).astype(np.float32)
    if rng.random() < 0.3:
        terrain = _mix_fields(rng, terrain, h, w, scale)

    water = rng.uniform(0.03, 0.25) + 0.04 * (fbm(rng, h, w, scale * 0.2, 3) - 0.5)
    if rng.random() < 0.3:
        water = water + _glint(rng, h, w, scale)
    shallow = smoothstep(sea - 0.06, sea, elev) * (1 - land)
    img = land * terrain + (1 - land) * (water + rng.uniform(0, 0.15) * shallow)
    cover = rng.choice([0.0, rng.uniform(0.05, 0.35), rng.uniform(0.35, 0.8)], p=[0.3, 0.45, 0.25])
    if cover > 0:
        img = _add_clouds(rng, img, cover, scale)
    img = img * (1 - rng.uniform(0, 0.3)) + rng.uniform(0, 0.3) * rng.uniform(0.4, 0.7)
    return _gradient(rng, img)


def ocean(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    scale = max(h, w)
    img = rng.uniform(0.03, 0.3) + rng.uniform(0.01, 0.06) * (fbm(rng, h, w, scale * 0.3, 4) - 0.5)
    if rng.random() < 0.6:  # swell: fine oriented ripples
        stretch = rng.uniform(2, 6)
        img = img + rng.uniform(0.005, 0.04) * (fbm(rng, h, w, rng.uniform(3, 10), 2, aspect=stretch) - 0.5)
    if rng.random() < 0.5:
        img = img + _glint(rng, h, w, scale)
    if rng.random() < 0.5:
        img = _add_clouds(rng, img, rng.uniform(0.02, 0.3), scale)
    return _gradient(rng, img.astype(np.float32))


def clouds(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    scale = max(h, w)
    ground = _earth_scene(rng, -(-h // 2), -(-w // 2))
    ground = cv2.resize(ground, (w, h), interpolation=cv2.INTER_LINEAR)
    return _add_clouds(rng, ground, rng.uniform(0.5, 1.0), scale)


def desert(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    th = rng.uniform(0, np.pi)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    u = xx * np.float32(np.cos(th)) + yy * np.float32(np.sin(th))
    period = rng.uniform(6, 40)
    phase = warp(rng, u, amount=rng.uniform(2, 25), cell=rng.uniform(30, 150))
    ridge = np.float32(0.5) + np.float32(0.5) * np.sin(phase * np.float32(2 * np.pi / period))
    ridge = ridge ** np.float32(rng.uniform(1, 4))  # sharp crests
    base = rng.uniform(0.35, 0.7) + rng.uniform(0.05, 0.2) * (fbm(rng, h, w, max(h, w) * 0.3, 4) - 0.5)
    return _gradient(rng, base + rng.uniform(0.03, 0.2) * ridge)


def patchwork(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    scale = max(h, w)
    img = rng.uniform(0.25, 0.5) + rng.uniform(0.05, 0.2) * (fbm(rng, h, w, scale * 0.3, 4) - 0.5)
    img = _mix_fields(rng, img.astype(np.float32), h, w, scale, strength=rng.uniform(0.3, 0.8))
    canvas = img.copy()
    for _ in range(int(rng.integers(0, 6))):  # roads and rivers: long thin curves
        _draw_curve(rng, canvas, width=int(rng.integers(1, 4)), shade=rng.uniform(0.05, 0.9))
    return _gradient(rng, canvas)


def space(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    img = np.full((h, w), rng.uniform(0.0, 0.06), np.float32)
    if rng.random() < 0.4:  # airglow / scattered light gradient
        img = _gradient(rng, img + rng.uniform(0.02, 0.15) * value_noise(rng, h, w, max(h, w) * 0.7))
    if rng.random() < 0.15:  # faint nebula-like haze
        img += np.float32(rng.uniform(0.02, 0.12)) * fbm(rng, h, w, max(h, w) * 0.3, 5) ** 2
    _stars(rng, img, density=float(np.exp(rng.uniform(np.log(2e-5), np.log(3e-3)))))
    return img


def limb(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    img = _half(_earth_scene, rng, h, w)
    radius = rng.uniform(1.0, 6.0) * max(h, w)
    angle = rng.uniform(0, 2 * np.pi)
    depth = rng.uniform(0.1, 0.9)  # how far into the frame the limb lies
    cy = h / 2 + np.sin(angle) * (radius - (depth - 0.5) * h)
    cx = w / 2 + np.cos(angle) * (radius - (depth - 0.5) * w)
    yy, xx = np.ogrid[:h, :w]
    dist = np.sqrt((yy - cy) ** 2 + (xx - cx) ** 2).astype(np.float32) - np.float32(radius)  # < 0: Earth
    sharp = rng.uniform(0.7, 4.0)
    earth_part = 1.0 - smoothstep(-sharp, sharp, dist)
    glow = np.exp(-np.maximum(dist, 0) / rng.uniform(2, 20)).astype(np.float32) * rng.uniform(0.1, 0.7)
    # darker towards the terminator / limb on one side
    img = img * (1.0 - rng.uniform(0, 0.6) * smoothstep(-radius * 0.02, 0, dist))
    sky = space(rng, h, w)
    return earth_part * img + (1 - earth_part) * (sky + glow)


def flat(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    img = np.full((h, w), rng.uniform(0.05, 0.9), np.float32)
    img += np.float32(rng.uniform(0.0, 0.05)) * (value_noise(rng, h, w, max(h, w) * rng.uniform(0.2, 1.0)) - 0.5)
    return _gradient(rng, img, strength=0.6)


def texture(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    kind = rng.choice(["noise", "stripes", "blobs", "cells"])
    if kind == "noise":
        img = fbm(rng, h, w, float(np.exp(rng.uniform(np.log(2), np.log(max(h, w))))), int(rng.integers(1, 7)),
                  persistence=rng.uniform(0.3, 0.8), aspect=float(np.exp(rng.uniform(-1, 1))))
    elif kind == "stripes":
        th = rng.uniform(0, np.pi)
        yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
        u = warp(rng, xx * np.float32(np.cos(th)) + yy * np.float32(np.sin(th)), rng.uniform(0, 20), 80)
        img = np.float32(0.5) + np.float32(0.5) * np.sin(u * np.float32(2 * np.pi / rng.uniform(4, 60)))
    elif kind == "blobs":
        img = np.full((h, w), rng.uniform(0.2, 0.6), np.float32)
        for _ in range(int(rng.integers(5, 40))):
            r = float(np.exp(rng.uniform(np.log(4), np.log(max(h, w) / 4))))
            poly = irregular_polygon(rng, rng.uniform(0, w), rng.uniform(0, h), r, roughness=rng.uniform(0, 0.6))
            cv2.fillPoly(img, [np.round(poly).astype(np.int32)], float(rng.uniform(0, 1)), cv2.LINE_AA)
        img = cv2.GaussianBlur(img, (0, 0), rng.uniform(0.5, 6))
    else:  # cells: smooth patches with sharp borders
        cells = rng.random((int(rng.integers(3, 30)), int(rng.integers(3, 30))), dtype=np.float32)
        img = cv2.resize(cells, (w, h), interpolation=cv2.INTER_NEAREST)
        img = warp(rng, img, rng.uniform(2, 30), rng.uniform(20, 120))
    return img.astype(np.float32)


class BackgroundFiles:
    """Random crops of the user's background images (grayscale, cached)."""

    def __init__(self, directory, suffixes, cache: int = 8):
        directory = Path(directory)
        if not directory.is_dir():
            raise FileNotFoundError(f"backgrounds directory {directory} does not exist")
        self.files = sorted(p for p in directory.rglob("*") if p.is_file() and p.suffix.lower() in suffixes)
        if not self.files:
            raise FileNotFoundError(f"backgrounds directory {directory} has no images ({', '.join(suffixes)})")
        self._cache: OrderedDict = OrderedDict()
        self._size = cache

    def _gray(self, path: Path) -> np.ndarray:
        if path in self._cache:
            self._cache.move_to_end(path)
            return self._cache[path]
        from satsam_ros.core.imaging import to_sam_rgb

        from ..coco import read_image

        img = to_sam_rgb(read_image(path))
        gray = (img @ np.asarray([0.299, 0.587, 0.114], np.float32)) / np.float32(255.0)
        self._cache[path] = gray
        if len(self._cache) > self._size:
            self._cache.popitem(last=False)
        return gray

    def crop(self, rng: np.random.Generator, h: int, w: int) -> np.ndarray:
        gray = self._gray(self.files[int(rng.integers(len(self.files)))])
        k = int(rng.integers(4))
        if k:
            gray = np.rot90(gray, k)
        if rng.random() < 0.5:
            gray = gray[:, ::-1]
        zoom = max(h / gray.shape[0], w / gray.shape[1]) * max(1.0, rng.uniform(0.8, 1.5))
        if zoom > 1.0:
            gray = cv2.resize(np.ascontiguousarray(gray), (math.ceil(gray.shape[1] * zoom),
                                                           math.ceil(gray.shape[0] * zoom)))
        y = int(rng.integers(0, gray.shape[0] - h + 1))
        x = int(rng.integers(0, gray.shape[1] - w + 1))
        out = np.ascontiguousarray(gray[y:y + h, x:x + w], dtype=np.float32)
        gain, offset = rng.uniform(0.7, 1.3), rng.uniform(-0.1, 0.1)
        return out * np.float32(gain) + np.float32(offset)


@lru_cache(maxsize=4)
def background_files(directory: str, suffixes: tuple) -> BackgroundFiles:
    return BackgroundFiles(directory, suffixes)


# --------------------------------------------------------------------------- pieces


def _gradient(rng: np.random.Generator, img: np.ndarray, strength: float = 0.3) -> np.ndarray:
    h, w = img.shape
    gy, gx = rng.normal(0, strength, size=2)
    yy = np.linspace(-0.5, 0.5, h, dtype=np.float32)[:, None]
    xx = np.linspace(-0.5, 0.5, w, dtype=np.float32)[None, :]
    return (img * (1 + np.float32(gy) * yy + np.float32(gx) * xx)).astype(np.float32)


def _glint(rng: np.random.Generator, h: int, w: int, scale: float) -> np.ndarray:
    gy, gx = rng.uniform(0, h), rng.uniform(0, w)
    yy, xx = np.ogrid[:h, :w]
    r2 = ((yy - gy) ** 2 + (xx - gx) ** 2) / (rng.uniform(0.1, 0.6) * scale) ** 2
    return (rng.uniform(0.2, 0.6) * np.exp(-r2)).astype(np.float32)


def _mix_fields(rng, terrain, h, w, scale, strength=None):
    """Agricultural patchwork: rectangles of random brightness, faded in by a mask."""
    fy, fx = rng.uniform(3, 14, size=2)
    cells = rng.random((int(h / fy) + 2, int(w / fx) + 2), dtype=np.float32)
    fields = cv2.resize(cells, (w + 16, h + 16), interpolation=cv2.INTER_NEAREST)
    if rng.random() < 0.5:  # rotated field grid
        rot = cv2.getRotationMatrix2D(((w + 16) / 2, (h + 16) / 2), rng.uniform(0, 90), 1.3)
        fields = cv2.warpAffine(fields, rot, (w + 16, h + 16), flags=cv2.INTER_NEAREST,
                                borderMode=cv2.BORDER_REFLECT)
    k = int(rng.integers(0, 16))
    fields = fields[k:k + h, k:k + w]
    where = smoothstep(0.4, 0.6, fbm(rng, h, w, scale * 0.3, 2))
    mix = np.float32(strength if strength is not None else rng.uniform(0.1, 0.3)) * where
    return terrain * (1 - mix) + mix * (0.15 + 0.6 * fields)


def _add_clouds(rng: np.random.Generator, img: np.ndarray, cover: float, scale: float) -> np.ndarray:
    h, w = img.shape
    c = fbm(rng, h, w, scale * rng.uniform(0.08, 0.5), 6, persistence=rng.uniform(0.4, 0.65))
    t = np.quantile(c[::8, ::8], 1.0 - cover)
    alpha = smoothstep(t, t + rng.uniform(0.01, 0.3), c)
    if rng.random() < 0.35:  # cirrus streaks
        stretch = rng.uniform(3, 8)
        if rng.random() < 0.5:
            streak = fbm(rng, h, w, scale * 0.05, 3, aspect=stretch)
        else:
            streak = fbm(rng, h, w, scale * 0.05 * stretch, 3, aspect=1.0 / stretch)
        alpha = np.maximum(alpha, rng.uniform(0.2, 0.6) * smoothstep(0.5, 0.9, streak))
    dy, dx = (int(v) for v in rng.integers(-8, 9, size=2))
    shadow = np.roll(alpha, (dy, dx), axis=(0, 1))
    img = img * (1 - rng.uniform(0.1, 0.5) * shadow)
    detail = rng.uniform(0.05, 0.3)
    brightness = rng.uniform(0.7, 1.0) - detail * fbm(rng, h, w, scale * rng.uniform(0.02, 0.1), 4)
    return (img * (1 - alpha) + alpha * brightness).astype(np.float32)


def _stars(rng: np.random.Generator, img: np.ndarray, density: float) -> None:
    h, w = img.shape
    n = rng.poisson(density * h * w)
    if n == 0:
        return
    ys = rng.integers(0, h, n)
    xs = rng.integers(0, w, n)
    flux = np.exp(rng.uniform(np.log(0.05), np.log(1.0), n)).astype(np.float32)
    np.add.at(img, (ys, xs), flux)
    bright = flux > 0.6
    if bright.any():  # the brightest spread over a few pixels
        spot = np.zeros_like(img)
        spot[ys[bright], xs[bright]] = flux[bright]
        img += cv2.GaussianBlur(spot, (0, 0), 0.8) * np.float32(2.0)


def _draw_curve(rng: np.random.Generator, img: np.ndarray, width: int, shade: float) -> None:
    h, w = img.shape
    n = int(rng.integers(4, 12))
    pts = [np.array([rng.uniform(0, w), rng.uniform(0, h)])]
    heading = rng.uniform(0, 2 * np.pi)
    step = max(h, w) / n * rng.uniform(0.5, 1.5)
    for _ in range(n):
        heading += rng.normal(0, 0.4)
        pts.append(pts[-1] + step * np.array([np.cos(heading), np.sin(heading)]))
    cv2.polylines(img, [np.round(np.array(pts)).astype(np.int32)], False, float(shade), width, cv2.LINE_AA)


_FAMILY_FUNCS = {"earth": earth, "ocean": ocean, "clouds": clouds, "desert": desert, "patchwork": patchwork,
                 "space": space, "limb": limb, "flat": flat, "texture": texture}


# --------------------------------------------------------------------------- distractors

DISTRACTORS = ("glint", "cross", "cloudlet", "island", "curve", "speckle")


def add_distractors(rng: np.random.Generator, img: np.ndarray, count: int) -> list:
    """Draw ``count`` satellite-like non-satellites into ``img`` (in place); returns their kinds."""
    h, w = img.shape
    kinds = []
    for _ in range(count):
        kind = str(rng.choice(DISTRACTORS, p=(0.25, 0.1, 0.25, 0.2, 0.1, 0.1)))
        kinds.append(kind)
        cy, cx = rng.uniform(0, h), rng.uniform(0, w)
        local = float(img[int(cy), int(cx)])
        if kind == "glint":  # a specular spot: small, bright, soft
            spot = np.zeros_like(img)
            spot[int(cy), int(cx)] = 1.0
            sigma = rng.uniform(0.6, 4.0)
            spot = cv2.GaussianBlur(spot, (0, 0), sigma)
            img += spot * np.float32(rng.uniform(0.3, 1.2) / max(spot.max(), 1e-6))
        elif kind == "cross":  # star-like diffraction cross
            length = int(rng.integers(3, 20))
            th = rng.uniform(0, np.pi)
            for a in (th, th + np.pi / 2):
                d = np.array([np.cos(a), np.sin(a)]) * length
                p0 = np.round(np.array([cx, cy]) - d).astype(int)
                p1 = np.round(np.array([cx, cy]) + d).astype(int)
                cv2.line(img, tuple(int(v) for v in p0), tuple(int(v) for v in p1),
                         float(min(1.0, local + rng.uniform(0.2, 0.7))), 1, cv2.LINE_AA)
        elif kind == "cloudlet":  # a small bright cloud fragment
            r = float(np.exp(rng.uniform(np.log(4), np.log(40))))
            poly = irregular_polygon(rng, cx, cy, r, points=32, roughness=rng.uniform(0.3, 0.7))
            blob = np.zeros_like(img)
            cv2.fillPoly(blob, [np.round(poly).astype(np.int32)], 1.0, cv2.LINE_AA)
            blob = cv2.GaussianBlur(blob, (0, 0), rng.uniform(0.5, 3.0))
            target = rng.uniform(0.6, 1.0)
            img[:] = img * (1 - blob) + blob * np.float32(target)
        elif kind == "island":  # a coastline corner / island: sharp-edged patch, brighter or darker
            r = float(np.exp(rng.uniform(np.log(6), np.log(60))))
            poly = irregular_polygon(rng, cx, cy, r, points=40, roughness=rng.uniform(0.3, 0.8))
            shade = float(np.clip(local + rng.choice([-1, 1]) * rng.uniform(0.1, 0.5), 0, 1))
            cv2.fillPoly(img, [np.round(poly * 16).astype(np.int32)], shade, cv2.LINE_AA, 4)
        elif kind == "curve":
            _draw_curve(rng, img, width=int(rng.integers(1, 3)), shade=rng.uniform(0, 1))
        else:  # speckle: a cluster of tiny bright dots (ships, buildings, hot pixels)
            n = int(rng.integers(3, 15))
            ys = np.clip(cy + rng.normal(0, 6, n), 0, h - 1).astype(int)
            xs = np.clip(cx + rng.normal(0, 6, n), 0, w - 1).astype(int)
            img[ys, xs] += np.float32(rng.uniform(0.2, 0.6))
    return kinds


def local_level(img: np.ndarray, y0: int, x0: int, y1: int, x1: int) -> float:
    """Mean radiance of ``img`` in a window (clipped to the frame)."""
    h, w = img.shape
    y0, x0 = max(0, y0), max(0, x0)
    y1, x1 = min(h, y1), min(w, x1)
    if y1 <= y0 or x1 <= x0:
        return float(img.mean())
    return float(img[y0:y1, x0:x1].mean())


__all__ = ["FAMILIES", "background", "add_distractors", "local_level", "background_files", "BackgroundFiles",
           "normalise"]
