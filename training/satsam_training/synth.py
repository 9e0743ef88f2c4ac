"""Synthetic training frames: a satellite over Earth-like imagery, with exact labels.

Each frame is an H x W grayscale image (512 x 641 by default) made of

* a background: procedural Earth imagery seen from orbit (multi-octave value-noise
  terrain with ridges and field patchwork, water bodies with coastlines and sun
  glint, cloud layers with cirrus streaks and cloud shadows, haze, sometimes the
  Earth's limb against black space), or a random crop of one of the user's own
  images (``backgrounds`` directory, e.g. USGS tiles), randomly flipped/rotated and
  contrast-jittered;
* one satellite (except in empty frames) assembled from parts: a bus (box, hexagonal
  or octagonal prism, or cylinder, drawn as an extruded prism with a darker side
  face and foil texture), 0-2 solar-panel wings of 1-4 panels with cell grids on
  booms, 0-3 antenna rods and 0-2 dishes. It is scaled so its larger extent is
  log-uniform between ``min_extent`` px and ``max_extent_frac`` of the smaller frame
  side, rotated, foreshortened, lit from a random direction (brightness gradient,
  dark side, the bus's shadow cast on the panels);
* camera effects: optical blur (sometimes motion blur), shot and read noise, gain
  and gamma, vignetting, quantisation to uint8 (or uint16).

Labels: the satellite is rendered at 2-4x supersampling; its *coverage* (fraction
of each pixel covered by the geometry) blends it into the background, and the mask
is ``coverage >= 0.5``; the box is the mask's tight box. Blur and noise act on the
image only, so the mask is the object's true outline.

Determinism: frame ``i`` of split ``s`` uses its own generator seeded from
``(seed, crc32(s), i)``, so it is identical whatever the number of frames generated
before or after it. Which frames are empty is decided by a low-discrepancy rule
(frame ``i`` is empty when ``floor((i + 1) f + u) > floor(i f + u)`` for the
empty fraction ``f`` and a per-split offset ``u``), so every prefix of a split has
``n * f`` empty frames, give or take one.
"""

from __future__ import annotations

import math
import zlib
from collections import OrderedDict
from dataclasses import asdict, dataclass
from functools import lru_cache
from pathlib import Path
from typing import Optional

import cv2
import numpy as np

from .coco import IMAGE_SUFFIXES, Frame, encode_mask, mask_bbox, read_image, write_coco

DEFAULT_HEIGHT = 512
DEFAULT_WIDTH = 641


@dataclass
class SynthConfig:
    """Parameters of the generator (all frames of a dataset share them)."""

    height: int = DEFAULT_HEIGHT
    width: int = DEFAULT_WIDTH
    empty_fraction: float = 0.1
    min_extent: float = 24.0  # smallest satellite extent, pixels
    max_extent_frac: float = 0.8  # largest extent, as a fraction of min(height, width)
    bit_depth: int = 8  # 8 or 16
    backgrounds: Optional[str] = None  # directory of background images (None: procedural)

    def validate(self) -> SynthConfig:
        if self.height < 32 or self.width < 32:
            raise ValueError(f"frame size must be at least 32 x 32, got {self.height} x {self.width}")
        if not 0.0 <= self.empty_fraction <= 1.0:
            raise ValueError(f"empty fraction must be in [0, 1], got {self.empty_fraction}")
        if not 0.0 < self.max_extent_frac <= 1.0:
            raise ValueError(f"max extent fraction must be in (0, 1], got {self.max_extent_frac}")
        if not 4.0 <= self.min_extent <= self.max_extent_frac * min(self.height, self.width):
            raise ValueError(
                f"min extent {self.min_extent} px must be >= 4 and <= max extent "
                f"{self.max_extent_frac * min(self.height, self.width):.0f} px"
            )
        if self.bit_depth not in (8, 16):
            raise ValueError(f"bit depth must be 8 or 16, got {self.bit_depth}")
        return self


def frame_rng(seed: int, split: str, index: int) -> np.random.Generator:
    """The generator of frame ``index`` of ``split``: independent of any other frame."""
    return np.random.default_rng([int(seed), zlib.crc32(split.encode()), int(index)])


def is_empty_frame(seed: int, split: str, index: int, fraction: float) -> bool:
    """Whether frame ``index`` has no satellite (low-discrepancy rule, see module docstring)."""
    if fraction <= 0.0:
        return False
    if fraction >= 1.0:
        return True
    u = np.random.default_rng([int(seed), zlib.crc32(split.encode()), 0x5EED]).random()
    return math.floor((index + 1) * fraction + u) > math.floor(index * fraction + u)


# --------------------------------------------------------------------------- noise


def _value_noise(rng: np.random.Generator, h: int, w: int, cell: float, aspect: float = 1.0) -> np.ndarray:
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


def _fbm(rng, h, w, cell, octaves, persistence=0.5, aspect=1.0) -> np.ndarray:
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
        acc += np.float32(amp) * _value_noise(rng, lh, lw, cell / r, aspect)
        total += amp
        amp *= persistence
        cell /= 2.0
    out = np.zeros((h, w), np.float32)
    for r, acc in levels.items():
        out += acc if r == 1 else cv2.resize(acc, (w, h), interpolation=cv2.INTER_LINEAR)
    out /= np.float32(total)
    lo, hi = np.percentile(out[::8, ::8], (1, 99))
    out -= np.float32(lo)
    out *= np.float32(1.0 / max(hi - lo, 1e-6))
    return np.clip(out, 0.0, 1.0, out=out)


def _smoothstep(edge0: float, edge1: float, x: np.ndarray) -> np.ndarray:
    t = np.clip((x - np.float32(edge0)) / np.float32(max(edge1 - edge0, 1e-6)), 0.0, 1.0)
    return t * t * (np.float32(3.0) - np.float32(2.0) * t)


# --------------------------------------------------------------------------- backgrounds


def earth_background(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """Procedural Earth imagery seen from orbit: H x W float32 radiance in about [0, 1].

    The scene is built at half resolution (Earth seen through the optics carries
    little detail at the pixel scale; the camera adds the pixel-level noise) and
    upsampled; the limb, when present, is drawn at full resolution.
    """
    hh, hw = -(-h // 2), -(-w // 2)
    img = cv2.resize(_earth_scene(rng, hh, hw), (w, h), interpolation=cv2.INTER_LINEAR)
    if rng.random() < 0.15:  # the Earth's limb against black space
        img = _add_limb(rng, img)
    return img


def _earth_scene(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    scale = max(h, w)
    # land / water from a low-frequency elevation field
    elev = _fbm(rng, h, w, cell=scale * rng.uniform(0.3, 0.8), octaves=6, persistence=0.55)
    land_share = rng.choice([0.0, rng.uniform(0.2, 0.8), 1.0], p=[0.15, 0.6, 0.25])
    sea = np.quantile(elev[::8, ::8], 1.0 - land_share) if 0.0 < land_share < 1.0 else (-1.0 if land_share else 2.0)
    land = _smoothstep(sea - 0.01, sea + 0.01, elev)

    # land texture: albedo zones, ridged mountains, fine detail, field patchwork
    albedo = rng.uniform(0.2, 0.5) + rng.uniform(0.1, 0.35) * _fbm(rng, h, w, scale * 0.25, 4)
    ridge = 1.0 - np.abs(2.0 * _fbm(rng, h, w, scale * rng.uniform(0.08, 0.2), 4) - 1.0)
    terrain = albedo * (0.75 + 0.35 * ridge**3)
    terrain += (rng.uniform(0.05, 0.15) * (_fbm(rng, h, w, rng.uniform(3, 8), 3) - 0.5)).astype(np.float32)
    if rng.random() < 0.3:  # agricultural patchwork
        fy, fx = rng.uniform(3, 10, size=2)
        cells = rng.random((int(h / fy) + 2, int(w / fx) + 2), dtype=np.float32)
        fields = cv2.resize(cells, (w + 12, h + 12), interpolation=cv2.INTER_NEAREST)
        k = int(rng.integers(0, 12))
        fields = fields[k:k + h, k:k + w]
        where = _smoothstep(0.4, 0.6, _fbm(rng, h, w, scale * 0.3, 2))
        mix = np.float32(rng.uniform(0.1, 0.3)) * where
        terrain = terrain * (1 - mix) + mix * (0.2 + 0.5 * fields)

    # water: dark, smooth, a little texture and sometimes sun glint
    water = rng.uniform(0.05, 0.22) + 0.04 * (_fbm(rng, h, w, scale * 0.2, 3) - 0.5)
    if rng.random() < 0.3:
        gy, gx = rng.uniform(0, h), rng.uniform(0, w)
        yy, xx = np.ogrid[:h, :w]
        r2 = ((yy - gy) ** 2 + (xx - gx) ** 2) / (rng.uniform(0.2, 0.6) * scale) ** 2
        water = water + rng.uniform(0.2, 0.5) * np.exp(-r2).astype(np.float32)
    shallow = _smoothstep(sea - 0.06, sea, elev) * (1 - land)  # lighter shallow water along coasts
    img = land * terrain + (1 - land) * (water + 0.1 * shallow)

    # clouds: cumulus fields and cirrus streaks, with shadows on the ground
    cover = rng.choice([0.0, rng.uniform(0.05, 0.35), rng.uniform(0.35, 0.8)], p=[0.25, 0.45, 0.3])
    if cover > 0:
        c = _fbm(rng, h, w, scale * rng.uniform(0.15, 0.5), 6, persistence=rng.uniform(0.45, 0.6))
        t = np.quantile(c[::8, ::8], 1.0 - cover)
        alpha = _smoothstep(t, t + rng.uniform(0.05, 0.25), c)
        if rng.random() < 0.35:
            stretch = rng.uniform(3, 8)
            if rng.random() < 0.5:  # streaks along x
                streak = _fbm(rng, h, w, scale * 0.05, 3, aspect=stretch)
            else:  # along y
                streak = _fbm(rng, h, w, scale * 0.05 * stretch, 3, aspect=1.0 / stretch)
            alpha = np.maximum(alpha, rng.uniform(0.2, 0.5) * _smoothstep(0.5, 0.9, streak))
        dy, dx = (int(v) for v in rng.integers(-6, 7, size=2))
        shadow = np.roll(alpha, (dy, dx), axis=(0, 1))
        img = img * (1 - rng.uniform(0.2, 0.5) * shadow)
        brightness = rng.uniform(0.75, 1.0) - 0.15 * _fbm(rng, h, w, scale * 0.1, 3)
        img = img * (1 - alpha) + alpha * brightness

    # haze, illumination gradient
    img = img * (1 - rng.uniform(0, 0.3)) + rng.uniform(0, 0.3) * rng.uniform(0.4, 0.7)
    gy, gx = rng.normal(0, 0.3, size=2)
    yy = np.linspace(-0.5, 0.5, h, dtype=np.float32)[:, None]
    xx = np.linspace(-0.5, 0.5, w, dtype=np.float32)[None, :]
    img = img * (1 + np.float32(gy) * yy + np.float32(gx) * xx)
    return img.astype(np.float32)


def _add_limb(rng: np.random.Generator, img: np.ndarray) -> np.ndarray:
    h, w = img.shape
    radius = rng.uniform(2.0, 6.0) * max(h, w)
    angle = rng.uniform(0, 2 * np.pi)
    depth = rng.uniform(0.2, 0.8)  # how far into the frame the limb lies
    cy = h / 2 + np.sin(angle) * (radius - (depth - 0.5) * h)
    cx = w / 2 + np.cos(angle) * (radius - (depth - 0.5) * w)
    yy, xx = np.ogrid[:h, :w]
    dist = np.sqrt((yy - cy) ** 2 + (xx - cx) ** 2).astype(np.float32) - np.float32(radius)  # < 0: Earth
    earth = 1.0 - _smoothstep(-1.5, 1.5, dist)
    glow = np.exp(-np.maximum(dist, 0) / rng.uniform(3, 12)).astype(np.float32) * rng.uniform(0.3, 0.7)
    space = np.full_like(img, rng.uniform(0.0, 0.03))
    stars = rng.random(img.shape, dtype=np.float32) > 0.9995
    space[stars] = rng.uniform(0.3, 1.0)
    return earth * img + (1 - earth) * (space + glow)


class _BackgroundFiles:
    """Random crops of the user's background images (grayscale, cached)."""

    def __init__(self, directory, cache: int = 8):
        directory = Path(directory)
        if not directory.is_dir():
            raise FileNotFoundError(f"backgrounds directory {directory} does not exist")
        self.files = sorted(p for p in directory.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
        if not self.files:
            raise FileNotFoundError(
                f"backgrounds directory {directory} has no images ({', '.join(IMAGE_SUFFIXES)})"
            )
        self._cache: OrderedDict = OrderedDict()
        self._size = cache

    def _gray(self, path: Path) -> np.ndarray:
        if path in self._cache:
            self._cache.move_to_end(path)
            return self._cache[path]
        from satsam_ros.core.imaging import to_sam_rgb

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
        # scale so the crop fits, with some random zoom
        zoom = max(h / gray.shape[0], w / gray.shape[1]) * max(1.0, rng.uniform(0.8, 1.5))
        if zoom > 1.0:
            gray = cv2.resize(np.ascontiguousarray(gray), (math.ceil(gray.shape[1] * zoom),
                                                           math.ceil(gray.shape[0] * zoom)))
        y = int(rng.integers(0, gray.shape[0] - h + 1))
        x = int(rng.integers(0, gray.shape[1] - w + 1))
        out = np.array(gray[y:y + h, x:x + w], dtype=np.float32)
        gain, offset = rng.uniform(0.7, 1.3), rng.uniform(-0.1, 0.1)
        return out * np.float32(gain) + np.float32(offset)


@lru_cache(maxsize=4)
def _background_files(directory: str) -> _BackgroundFiles:
    return _BackgroundFiles(directory)


# --------------------------------------------------------------------------- satellites


@dataclass
class _Part:
    kind: str  # "poly" | "line" | "ellipse"
    points: np.ndarray  # poly: N x 2; line: 2 x 2; ellipse: center (1 x 2)
    shade: float
    texture: str = "plain"  # "plain" | "foil" | "cells"
    width: float = 0.0  # line width (local units) / ellipse axes in `axes`
    axes: tuple = (0.0, 0.0)
    angle: float = 0.0  # ellipse angle (degrees, local frame)
    cells: tuple = (0, 0)  # panel cell grid (along, across)


def _rect(cx, cy, hx, hy) -> np.ndarray:
    return np.array([[cx - hx, cy - hy], [cx + hx, cy - hy], [cx + hx, cy + hy], [cx - hx, cy + hy]], np.float64)


def _satellite_parts(rng: np.random.Generator) -> tuple[list[_Part], np.ndarray]:
    """A random satellite in local units (bus half-length 1). Returns (parts, bus polygon)."""
    parts: list[_Part] = []
    bus_shade = rng.uniform(0.45, 1.0)
    kind = rng.choice(["box", "prism", "cylinder"], p=[0.55, 0.25, 0.2])
    if kind == "box":
        bus = _rect(0, 0, 1.0, rng.uniform(0.5, 1.0))
    elif kind == "prism":
        n = int(rng.choice([6, 8]))
        t = np.arange(n) * 2 * np.pi / n + rng.uniform(0, np.pi / n)
        bus = np.stack([np.cos(t), np.sin(t) * rng.uniform(0.7, 1.0)], axis=1)
    else:
        ry = rng.uniform(0.35, 0.7)
        t = np.linspace(-np.pi / 2, np.pi / 2, 9)
        right = np.stack([1.0 - ry + ry * np.cos(t), ry * np.sin(t)], axis=1)
        bus = np.concatenate([right, -right], axis=0)
    # extrusion: side face, offset in a random direction, darker
    tilt = rng.uniform(0, 2 * np.pi)
    depth = rng.uniform(0.1, 0.45) * np.array([np.cos(tilt), np.sin(tilt)])
    side = cv2.convexHull(np.concatenate([bus, bus + depth]).astype(np.float32))[:, 0, :].astype(np.float64)
    parts.append(_Part("poly", side, bus_shade * rng.uniform(0.35, 0.7), "foil"))
    parts.append(_Part("poly", bus, bus_shade, "foil"))
    half_h = float(np.abs(bus[:, 1]).max())
    half_w = float(np.abs(bus[:, 0]).max())

    # solar-panel wings along +/- x
    wings = int(rng.choice([0, 1, 2], p=[0.12, 0.18, 0.7]))
    sides = [1, -1] if wings == 2 else ([int(rng.choice([1, -1]))] if wings == 1 else [])
    panel_shade = rng.uniform(0.12, 0.4) if rng.random() < 0.85 else rng.uniform(0.6, 0.95)  # glint
    n_panels = int(rng.integers(1, 5))
    panel_len = rng.uniform(0.7, 1.6)
    panel_w = rng.uniform(0.6, 1.5) * rng.uniform(0.35, 1.0)  # foreshortened by the panel's tilt
    gap = rng.uniform(0.02, 0.12)
    boom = rng.uniform(0.1, 0.7)
    cells = (int(rng.integers(2, 7)), int(rng.integers(1, 5)))
    for s in sides:
        start = half_w + boom
        parts.append(_Part("line", np.array([[s * half_w * 0.9, 0.0], [s * start, 0.0]]), bus_shade * 0.8,
                           width=rng.uniform(0.05, 0.12)))
        for k in range(n_panels):
            x0 = start + k * (panel_len + gap)
            cx = s * (x0 + panel_len / 2)
            parts.append(_Part("poly", _rect(cx, 0.0, panel_len / 2, panel_w / 2), panel_shade, "cells",
                               cells=cells))
            if k + 1 < n_panels:
                parts.append(_Part("line", np.array([[s * (x0 + panel_len), 0.0], [s * (x0 + panel_len + gap), 0.0]]),
                                   panel_shade * 1.5, width=0.06))

    # dishes on booms
    for _ in range(int(rng.choice([0, 1, 2], p=[0.45, 0.4, 0.15]))):
        ang = rng.uniform(0, 2 * np.pi)
        if wings and abs(np.cos(ang)) > 0.8:  # keep dishes off the panel axis
            ang = np.pi / 2 * rng.choice([1, -1]) + rng.uniform(-0.5, 0.5)
        direction = np.array([np.cos(ang), np.sin(ang)])
        edge = np.array([half_w * direction[0], half_h * direction[1]])
        r = rng.uniform(0.3, 0.9)
        center = edge + direction * (rng.uniform(0.1, 0.5) + r * 0.6)
        parts.append(_Part("line", np.array([edge, center]), bus_shade * 0.7, width=rng.uniform(0.06, 0.12)))
        parts.append(_Part("ellipse", center[None, :], rng.uniform(0.55, 0.95), "plain",
                           axes=(r, r * rng.uniform(0.3, 1.0)), angle=float(np.degrees(ang) + 90.0)))

    # antenna rods
    for _ in range(int(rng.choice([0, 1, 2, 3], p=[0.3, 0.35, 0.25, 0.1]))):
        ang = rng.uniform(0, 2 * np.pi)
        direction = np.array([np.cos(ang), np.sin(ang)])
        edge = np.array([half_w * direction[0], half_h * direction[1]]) * 0.95
        parts.append(_Part("line", np.array([edge, edge + direction * rng.uniform(0.5, 2.2)]),
                           rng.uniform(0.5, 1.0), width=rng.uniform(0.04, 0.1)))
    return parts, bus


@dataclass
class Satellite:
    """A rendered satellite: coverage and intensity on its own canvas, placed at (y0, x0)."""

    coverage: np.ndarray  # h x w float32 in [0, 1]
    intensity: np.ndarray  # h x w float32 radiance where covered
    y0: int
    x0: int
    extent: float
    angle: float


def render_satellite(rng: np.random.Generator, extent: float) -> Satellite:
    """Render a random satellite whose larger pixel extent is about ``extent``.

    The parts are transformed local -> pixels by scale, foreshortening and rotation,
    drawn at ``ss``x supersampling into a coverage canvas (0/1) and an intensity
    canvas, and area-averaged down: coverage becomes the fraction of each pixel
    covered; intensity is the coverage-weighted mean radiance.
    """
    parts, bus = _satellite_parts(rng)
    angle = rng.uniform(0, 360)
    squash = rng.uniform(0.55, 1.0)
    th = np.radians(angle)
    rot = np.array([[np.cos(th), -np.sin(th)], [np.sin(th), np.cos(th)]]) @ np.diag([1.0, squash])

    def extent_points(p: _Part) -> np.ndarray:
        if p.kind == "ellipse":
            t = np.linspace(0, 2 * np.pi, 16, endpoint=False)
            a = np.radians(p.angle)
            e = np.stack([p.axes[0] * np.cos(t), p.axes[1] * np.sin(t)], 1)
            e = e @ np.array([[np.cos(a), np.sin(a)], [-np.sin(a), np.cos(a)]])
            return e + p.points[0]
        return p.points

    pts = np.concatenate([extent_points(p) for p in parts]) @ rot.T
    span = float(max(np.ptp(pts[:, 0]), np.ptp(pts[:, 1])))
    scale = extent / span  # px per local unit
    ss = 4 if extent < 96 else 2
    k = scale * ss
    lo = pts.min(axis=0) * k
    pad = 3 * ss
    origin = np.floor(lo / ss) * ss - pad  # canvas origin in supersampled px, aligned to whole output px
    size = np.ceil((pts.max(axis=0) * k - origin + pad) / ss).astype(int) * ss
    cw, ch = int(size[0]), int(size[1])
    alpha = np.zeros((ch, cw), np.uint8)
    color = np.zeros((ch, cw), np.float32)
    shift = 4
    one = 1 << shift

    def to_canvas(p: np.ndarray) -> np.ndarray:
        return np.round(((p @ rot.T) * k - origin) * one).astype(np.int32)

    light = rng.uniform(0, 2 * np.pi)
    ldir = np.array([np.cos(light), np.sin(light)])
    for p in parts:
        if p.kind == "poly":
            poly = to_canvas(p.points)
            cv2.fillPoly(alpha, [poly], 255, cv2.LINE_8, shift)
            cv2.fillPoly(color, [poly], float(p.shade), cv2.LINE_8, shift)
            if p.texture == "cells" and p.cells[0] > 1:
                _draw_cells(color, p, to_canvas, k, shift)
        elif p.kind == "line":
            a, b = to_canvas(p.points)
            thick = max(int(round(p.width * k)), int(1.4 * ss))
            cv2.line(alpha, tuple(a), tuple(b), 255, thick, cv2.LINE_8, shift)
            cv2.line(color, tuple(a), tuple(b), float(p.shade), thick, cv2.LINE_8, shift)
        else:  # ellipse: polygon approximation in local units, transformed
            t = np.linspace(0, 2 * np.pi, 40, endpoint=False)
            a = np.radians(p.angle)
            e = np.stack([p.axes[0] * np.cos(t), p.axes[1] * np.sin(t)], 1)
            e = e @ np.array([[np.cos(a), np.sin(a)], [-np.sin(a), np.cos(a)]]) + p.points[0]
            poly = to_canvas(e)
            cv2.fillPoly(alpha, [poly], 255, cv2.LINE_8, shift)
            cv2.fillPoly(color, [poly], float(p.shade), cv2.LINE_8, shift)
            # dish: radial shading (bright rim, darker centre), a feed at the centre
            inner = to_canvas(e * 0.0 + p.points[0] + (e - p.points[0]) * 0.55)
            cv2.fillPoly(color, [inner], float(p.shade) * 0.8, cv2.LINE_8, shift)

    covered = alpha > 0
    # foil texture and lighting on the supersampled canvas
    if covered.any():
        tex = cv2.resize(rng.random((ch // (2 * ss) + 2, cw // (2 * ss) + 2), dtype=np.float32), (cw, ch),
                         interpolation=cv2.INTER_LINEAR)
        color *= np.float32(1.0) + np.float32(rng.uniform(0.05, 0.3)) * (tex - np.float32(0.5))
        yy, xx = np.mgrid[0:ch, 0:cw].astype(np.float32)
        cy, cx = ch / 2.0, cw / 2.0
        grad = ((xx - cx) * ldir[0] + (yy - cy) * ldir[1]) / max(ch, cw)
        color *= np.float32(1.0) + np.float32(rng.uniform(0.2, 0.9)) * grad
        # the bus casts a shadow on the panels
        off = ldir * rng.uniform(0.2, 0.8)
        shadow = np.zeros((ch, cw), np.uint8)
        cv2.fillPoly(shadow, [to_canvas(bus + off)], 1, cv2.LINE_8, shift)
        color[shadow > 0] *= np.float32(rng.uniform(0.3, 0.8))
        if rng.random() < 0.1:  # in eclipse or back-lit: faint
            color *= np.float32(rng.uniform(0.15, 0.4))
    oh, ow = ch // ss, cw // ss
    cov = cv2.resize(alpha.astype(np.float32) / 255.0, (ow, oh), interpolation=cv2.INTER_AREA)
    weighted = cv2.resize(color * (alpha > 0), (ow, oh), interpolation=cv2.INTER_AREA)
    intensity = weighted / np.maximum(cov, 1e-6)
    return Satellite(cov, intensity, int(origin[1] // ss), int(origin[0] // ss), float(extent), float(angle))


def _draw_cells(color, part: _Part, to_canvas, k: float, shift: int) -> None:
    """Cell grid lines across a solar panel (a rectangle in local units)."""
    pts = part.points
    x0, x1 = pts[:, 0].min(), pts[:, 0].max()
    y0, y1 = pts[:, 1].min(), pts[:, 1].max()
    line_shade = float(min(1.0, part.shade * 1.8 + 0.1))
    thick = max(1, int(round(0.02 * k)))
    along, across = part.cells
    for i in range(1, along):
        x = x0 + (x1 - x0) * i / along
        a, b = to_canvas(np.array([[x, y0], [x, y1]]))
        cv2.line(color, tuple(a), tuple(b), line_shade, thick, cv2.LINE_8, shift)
    for j in range(1, across):
        y = y0 + (y1 - y0) * j / across
        a, b = to_canvas(np.array([[x0, y], [x1, y]]))
        cv2.line(color, tuple(a), tuple(b), line_shade, thick, cv2.LINE_8, shift)


# --------------------------------------------------------------------------- frames


def _camera(rng: np.random.Generator, img: np.ndarray) -> np.ndarray:
    """Optics and sensor: blur, vignetting, gain/gamma, shot and read noise. float32 in [0, 1]."""
    h, w = img.shape
    r = rng.random()
    if r < 0.6:
        sigma = rng.uniform(0.3, 1.6)
        img = cv2.GaussianBlur(img, (0, 0), sigma)
    elif r < 0.75:  # motion blur
        length = int(rng.integers(3, 9))
        kernel = np.zeros((length, length), np.float32)
        cv2.line(kernel, (0, length // 2), (length - 1, length // 2), 1.0, 1)
        rot = cv2.getRotationMatrix2D((length / 2 - 0.5, length / 2 - 0.5), rng.uniform(0, 180), 1.0)
        kernel = cv2.warpAffine(kernel, rot, (length, length))
        img = cv2.filter2D(img, -1, kernel / max(kernel.sum(), 1e-6))
    yy = np.linspace(-1, 1, h, dtype=np.float32)[:, None]
    xx = np.linspace(-1, 1, w, dtype=np.float32)[None, :]
    img = img * (np.float32(1.0) - np.float32(rng.uniform(0, 0.25)) * (yy * yy + xx * xx) / 2)
    img = np.clip(img * np.float32(rng.uniform(0.8, 1.2)), 0, None) ** np.float32(rng.uniform(0.8, 1.25))
    full_well = rng.uniform(300, 5000)  # electrons at full scale: shot noise
    read = rng.uniform(0.002, 0.015)
    noise = rng.standard_normal((h, w), dtype=np.float32)
    img = img + noise * np.sqrt(img / np.float32(full_well) + np.float32(read * read))
    return np.clip(img, 0.0, 1.0)


def generate_frame(
    config: SynthConfig, seed: int, split: str, index: int, backgrounds: Optional[_BackgroundFiles] = None
) -> tuple[np.ndarray, np.ndarray, dict]:
    """One frame: (H x W uint8/uint16 image, H x W uint8 0/255 mask, info dict).

    The mask is all zeros for an empty frame. ``info`` records the satellite's
    extent (px), angle (degrees) and whether the frame is empty.
    """
    rng = frame_rng(seed, split, index)
    h, w = config.height, config.width
    if backgrounds is None and config.backgrounds:
        backgrounds = _background_files(config.backgrounds)
    bg = backgrounds.crop(rng, h, w) if backgrounds is not None else earth_background(rng, h, w)
    mask = np.zeros((h, w), np.uint8)
    info = {"empty": True}
    if not is_empty_frame(seed, split, index, config.empty_fraction):
        lo = config.min_extent
        hi = config.max_extent_frac * min(h, w)
        extent = float(np.exp(rng.uniform(np.log(lo), np.log(hi))))
        sat = render_satellite(rng, extent)
        sh, sw = sat.coverage.shape
        # place it so the canvas lies inside the frame where possible
        y0 = int(rng.integers(0, max(1, h - sh + 1)))
        x0 = int(rng.integers(0, max(1, w - sw + 1)))
        ys, xs = slice(max(0, y0), min(h, y0 + sh)), slice(max(0, x0), min(w, x0 + sw))
        cov = sat.coverage[ys.start - y0:ys.stop - y0, xs.start - x0:xs.stop - x0]
        col = sat.intensity[ys.start - y0:ys.stop - y0, xs.start - x0:xs.stop - x0]
        bg[ys, xs] = bg[ys, xs] * (1 - cov) + col * cov
        mask[ys, xs] = np.where(cov >= 0.5, 255, 0).astype(np.uint8)
        info = {"empty": False, "extent": round(sat.extent, 2), "angle": round(sat.angle, 2)}
        if not mask.any():  # a satellite too thin to cover half a pixel anywhere: render it as empty
            info = {"empty": True}
    img = _camera(rng, np.clip(bg, 0, 1))
    if config.bit_depth == 16:
        out = np.round(img * 65535.0).astype(np.uint16)
    else:
        out = np.round(img * 255.0).astype(np.uint8)
    return out, mask, info


def generate_dataset(
    out_dir,
    counts: dict,
    seed: int = 0,
    config: Optional[SynthConfig] = None,
    progress: bool = False,
) -> dict:
    """Write a COCO dataset of synthetic frames to ``out_dir``.

    ``counts`` maps split name -> number of frames (e.g. ``{"train": 100, "val": 20}``).
    Writes ``out_dir/images/<split>/NNNNNN.png`` (image id = index + 1) and
    ``out_dir/<split>.json`` with one annotation per satellite: tight ``bbox``,
    compressed-RLE ``segmentation`` and its ``area``. Returns per-split statistics
    ``{split: {"frames", "empty", "seconds"}}``.
    """
    import time

    from tqdm import tqdm

    config = (config or SynthConfig()).validate()
    out = Path(out_dir)
    backgrounds = _BackgroundFiles(config.backgrounds) if config.backgrounds else None  # fresh listing
    stats = {}
    for split, n in counts.items():
        if int(n) < 0:
            raise ValueError(f"number of {split} frames must be >= 0, got {n}")
        if int(n) == 0:
            continue
        img_dir = out / "images" / split
        img_dir.mkdir(parents=True, exist_ok=True)
        frames = []
        empty = 0
        t0 = time.perf_counter()
        for i in tqdm(range(int(n)), desc=f"synth {split}", unit="frame", disable=not progress):
            img, mask, info = generate_frame(config, seed, split, i, backgrounds)
            path = img_dir / f"{i:06d}.png"
            if not cv2.imwrite(str(path), img, [cv2.IMWRITE_PNG_COMPRESSION, 1]):
                raise OSError(f"could not write {path}")
            frame = Frame(id=i + 1, path=path.resolve(), width=config.width, height=config.height)
            if info["empty"]:
                empty += 1
            else:
                frame.boxes.append(mask_bbox(mask))
                frame.segmentations.append(encode_mask(mask))
            frames.append(frame)
        meta = {"description": "satsam_training synthetic satellite frames", "seed": int(seed), "split": split,
                "generator": asdict(config)}
        write_coco(out / f"{split}.json", frames, info=meta)
        stats[split] = {"frames": int(n), "empty": empty, "seconds": round(time.perf_counter() - t0, 3)}
    return stats
