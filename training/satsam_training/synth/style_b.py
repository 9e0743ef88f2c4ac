"""Style ``b``: an independent generator, for evaluation only.

Written apart from style ``a`` and sharing none of its code, so that a model trained on
``a`` meets frames it has not seen the like of. Nothing here is used to train a model
or to choose a threshold: accuracy on these frames is the project's estimate of how a
model generalises.

Different primitives throughout:

* noise: spectral synthesis (white noise shaped by a power-law spectrum in the Fourier
  domain) and cellular (Worley) noise from distance transforms, instead of value noise;
* scenes: hill-shaded relief (a height field lit by a sun at an azimuth and elevation)
  with water below a sea level, billowy cellular cloud decks, sea ice with leads,
  city lights at night, a planet disc with a terminator against stars;
* satellites: unions of signed-distance shapes (boxes, capsules, discs, rings) sampled
  on a 4 x 4 sub-pixel grid, each part lit as a 3-D surface (Lambert plus a specular
  lobe, normals per part, a sphere's per pixel), sometimes in eclipse or back-lit;
* sensor: a two-Gaussian point spread function, Poisson photon counts, column
  fixed-pattern gain, dark offset, a soft (tanh) saturation, 10- or 12-bit
  quantisation scaled to 8 bits and Pillow's JPEG encoder.

Labels are the same kind as style ``a``: the mask is where the shapes cover at least
half a pixel.
"""

from __future__ import annotations

import io
import zlib

import cv2
import numpy as np

from .split import is_empty_frame

SALT = 0xB5EED  # mixed into every frame's seed: style b frames never equal style a frames


def frame_rng(seed: int, split: str, index: int) -> np.random.Generator:
    return np.random.default_rng([SALT, int(seed), zlib.crc32(split.encode()), int(index)])


# --------------------------------------------------------------------------- noise


def spectral(rng: np.random.Generator, h: int, w: int, beta: float) -> np.ndarray:
    """Gaussian noise with power spectrum ~ 1 / f**beta, scaled to zero mean, unit std."""
    fy = np.fft.fftfreq(h)[:, None]
    fx = np.fft.rfftfreq(w)[None, :]
    f = np.sqrt(fy * fy + fx * fx)
    f[0, 0] = 1.0
    amp = f ** (-beta / 2.0)
    amp[0, 0] = 0.0
    spec = (rng.standard_normal((h, w // 2 + 1)) + 1j * rng.standard_normal((h, w // 2 + 1))) * amp
    field = np.fft.irfft2(spec, s=(h, w))
    field -= field.mean()
    return (field / max(field.std(), 1e-9)).astype(np.float32)


def worley(rng: np.random.Generator, h: int, w: int, cells: int) -> np.ndarray:
    """Distance to the nearest of ``cells`` random points, scaled to [0, 1]."""
    seeds = np.full((h, w), 255, np.uint8)
    ys = rng.integers(0, h, cells)
    xs = rng.integers(0, w, cells)
    seeds[ys, xs] = 0
    dist = cv2.distanceTransform(seeds, cv2.DIST_L2, 5)
    return (dist / max(float(dist.max()), 1e-6)).astype(np.float32)


def squash(x: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """Linear ramp from 0 at ``lo`` to 1 at ``hi``, clipped."""
    return np.clip((x - np.float32(lo)) / np.float32(max(hi - lo, 1e-6)), 0, 1).astype(np.float32)


# --------------------------------------------------------------------------- scenes


def relief(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """Hill-shaded terrain with water below a sea level and sun glint on the water."""
    height = spectral(rng, h, w, rng.uniform(2.6, 3.8))
    gy, gx = np.gradient(height * np.float32(rng.uniform(2, 12)))
    az, el = rng.uniform(0, 2 * np.pi), rng.uniform(0.2, 1.2)
    sun = np.array([np.cos(az) * np.cos(el), np.sin(az) * np.cos(el), np.sin(el)])
    norm = np.sqrt(gx * gx + gy * gy + 1.0)
    shade = np.clip((-gx * sun[0] - gy * sun[1] + sun[2]) / norm, 0, 1)
    albedo = 0.35 + 0.15 * np.tanh(spectral(rng, h, w, rng.uniform(1.5, 2.5)))
    land = albedo * (0.3 + 0.7 * shade)
    level = np.quantile(height[::7, ::7], rng.choice([0.0, rng.uniform(0.2, 0.8)], p=[0.3, 0.7]))
    water = rng.uniform(0.02, 0.15) + 0.01 * spectral(rng, h, w, 1.0)
    if rng.random() < 0.4:
        cy, cx = rng.uniform(0, h), rng.uniform(0, w)
        yy, xx = np.ogrid[:h, :w]
        water = water + rng.uniform(0.1, 0.5) * np.exp(-(((yy - cy) ** 2 + (xx - cx) ** 2) /
                                                         (rng.uniform(0.05, 0.4) * w) ** 2))
    img = np.where(height > level, land, water)
    if rng.random() < 0.5:
        img = clouds(rng, img)
    return img.astype(np.float32)


def clouds(rng: np.random.Generator, ground: np.ndarray) -> np.ndarray:
    """Billowy cellular clouds over ``ground``, with shadows."""
    h, w = ground.shape
    billow = 1.0 - worley(rng, h, w, int(rng.integers(8, 80)))
    detail = spectral(rng, h, w, rng.uniform(1.6, 2.6))
    density = billow + 0.25 * detail
    cut = np.quantile(density[::7, ::7], rng.uniform(0.2, 0.9))
    alpha = squash(density, cut, cut + rng.uniform(0.02, 0.3))
    shift = rng.integers(-10, 11, size=2)
    shadow = np.roll(alpha, tuple(int(s) for s in shift), axis=(0, 1))
    top = rng.uniform(0.65, 1.0) + 0.05 * detail
    return (ground * (1 - 0.4 * shadow) * (1 - alpha) + alpha * top).astype(np.float32)


def cloud_deck(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    base = np.full((h, w), rng.uniform(0.1, 0.4), np.float32)
    return clouds(rng, base)


def sea_ice(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """Bright floes separated by dark leads (the borders between Voronoi cells)."""
    seeds = np.full((h, w), 255, np.uint8)
    n = int(rng.integers(20, 300))
    seeds[rng.integers(0, h, n), rng.integers(0, w, n)] = 0
    _, labels = cv2.distanceTransformWithLabels(seeds, cv2.DIST_L2, 5, labelType=cv2.DIST_LABEL_PIXEL)
    border = np.zeros((h, w), np.uint8)
    border[:, 1:] |= (labels[:, 1:] != labels[:, :-1]).astype(np.uint8)
    border[1:, :] |= (labels[1:, :] != labels[:-1, :]).astype(np.uint8)
    width = int(rng.integers(1, 6))
    leads = cv2.dilate(border, np.ones((width, width), np.uint8)).astype(np.float32)
    floe = rng.uniform(0.55, 0.95, n + 1).astype(np.float32)[np.clip(labels, 0, n)]
    ice = floe + 0.04 * spectral(rng, h, w, 2.0)
    return (ice * (1 - rng.uniform(0.5, 0.9) * leads)).astype(np.float32)


def city_lights(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """Night side: dark ground, clustered points of light along roads."""
    img = np.full((h, w), rng.uniform(0.0, 0.05), np.float32) + 0.01 * spectral(rng, h, w, 2.5)
    for _ in range(int(rng.integers(2, 12))):
        cy, cx, r = rng.uniform(0, h), rng.uniform(0, w), rng.uniform(5, 60)
        n = int(rng.integers(20, 400))
        ys = np.clip(rng.normal(cy, r, n), 0, h - 1).astype(int)
        xs = np.clip(rng.normal(cx, r, n), 0, w - 1).astype(int)
        np.add.at(img, (ys, xs), rng.uniform(0.1, 0.8, n).astype(np.float32))
    return cv2.GaussianBlur(img, (0, 0), 0.7)


def planet(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """A planet disc (lit hemisphere, terminator) against stars; often only its edge in view."""
    img = starfield(rng, h, w)
    r = rng.uniform(0.4, 4.0) * max(h, w)
    ang = rng.uniform(0, 2 * np.pi)
    reach = rng.uniform(-0.3, 0.6) * max(h, w)
    cy = h / 2 + np.sin(ang) * (r - reach)
    cx = w / 2 + np.cos(ang) * (r - reach)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    dy, dx = (yy - cy) / r, (xx - cx) / r
    rho2 = dx * dx + dy * dy
    inside = rho2 < 1.0
    nz = np.sqrt(np.clip(1.0 - rho2, 0, 1))
    sa = rng.uniform(0, 2 * np.pi)
    sun = np.array([np.cos(sa) * 0.8, np.sin(sa) * 0.8, rng.uniform(-0.3, 0.9)])
    sun /= np.linalg.norm(sun)
    lit = np.clip(dx * sun[0] + dy * sun[1] + nz * sun[2], 0, 1)
    surface = relief(rng, h, w) * (0.2 + 0.8 * lit)
    rim = np.exp(-np.abs(np.sqrt(rho2) - 1.0) * r / rng.uniform(2, 10)) * rng.uniform(0.1, 0.5) * (lit > 0)
    return (np.where(inside, surface, img) + rim).astype(np.float32)


def starfield(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    img = np.full((h, w), rng.uniform(0.0, 0.04), np.float32)
    n = int(rng.integers(20, 2000))
    flux = rng.pareto(1.5, n).astype(np.float32) * 0.05
    np.add.at(img, (rng.integers(0, h, n), rng.integers(0, w, n)), np.minimum(flux, 3.0))
    return img


def ice_or_desert_flat(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """Featureless bright or mid-grey terrain (salt flats, snow fields, haze)."""
    return (rng.uniform(0.3, 0.9) + 0.03 * spectral(rng, h, w, rng.uniform(2.5, 3.5))).astype(np.float32)


SCENES = {"relief": relief, "cloud_deck": cloud_deck, "sea_ice": sea_ice, "city_lights": city_lights,
          "planet": planet, "starfield": starfield, "flat": ice_or_desert_flat}
SCENE_WEIGHTS = {"relief": 0.35, "cloud_deck": 0.15, "sea_ice": 0.08, "city_lights": 0.07, "planet": 0.15,
                 "starfield": 0.12, "flat": 0.08}


def scene(rng: np.random.Generator, h: int, w: int) -> tuple:
    names = list(SCENES)
    name = str(rng.choice(names, p=[SCENE_WEIGHTS[n] for n in names]))
    return SCENES[name](rng, h, w), name


# --------------------------------------------------------------------------- satellites (SDF)


def sd_box(px, py, cx, cy, hx, hy, ang):
    c, s = np.cos(ang), np.sin(ang)
    x = (px - cx) * c + (py - cy) * s
    y = -(px - cx) * s + (py - cy) * c
    qx, qy = np.abs(x) - hx, np.abs(y) - hy
    outside = np.sqrt(np.maximum(qx, 0) ** 2 + np.maximum(qy, 0) ** 2)
    return outside + np.minimum(np.maximum(qx, qy), 0)


def sd_capsule(px, py, ax, ay, bx, by, r):
    bax, bay = bx - ax, by - ay
    t = np.clip(((px - ax) * bax + (py - ay) * bay) / max(bax * bax + bay * bay, 1e-9), 0, 1)
    return np.sqrt((px - ax - t * bax) ** 2 + (py - ay - t * bay) ** 2) - r


def sd_disc(px, py, cx, cy, r):
    return np.sqrt((px - cx) ** 2 + (py - cy) ** 2) - r


def sd_ring(px, py, cx, cy, r, thick):
    return np.abs(sd_disc(px, py, cx, cy, r)) - thick


def _unit(v) -> np.ndarray:
    v = np.asarray(v, np.float64)
    return v / max(np.linalg.norm(v), 1e-9)


def design(rng: np.random.Generator) -> list:
    """A satellite as a list of (kind, params, normal, albedo, pattern) in units of its size."""
    parts = []
    kind = str(rng.choice(["arrays", "capsule", "lattice", "sphere", "sail", "drum"]))
    body_n = _unit(rng.normal(0, 1, 3) + [0, 0, 2])
    alb = rng.uniform(0.4, 0.95)
    if kind == "arrays":
        bw, bh = rng.uniform(0.08, 0.2), rng.uniform(0.06, 0.15)
        parts.append(("box", (0.0, 0.0, bw, bh, 0.0), body_n, alb, "none"))
        tilt_n = _unit(rng.normal(0, 1, 3) + [0, 0, 1.5])
        span, pw = rng.uniform(0.2, 0.42), rng.uniform(0.05, 0.14)
        for s in (-1, 1) if rng.random() < 0.8 else (1,):
            x0 = s * (bw + rng.uniform(0.01, 0.06))
            parts.append(("capsule", (s * bw, 0.0, x0, 0.0, 0.006), body_n, alb * 0.8, "none"))
            parts.append(("box", (x0 + s * span / 2, 0.0, span / 2, pw, 0.0), tilt_n, rng.uniform(0.1, 0.35),
                          "hatch"))
    elif kind == "capsule":
        length, r = rng.uniform(0.2, 0.45), rng.uniform(0.05, 0.12)
        parts.append(("capsule", (-length / 2, 0.0, length / 2, 0.0, r), body_n, alb, "bands"))
        parts.append(("ring", (length / 2 + r * 0.6, 0.0, r * 0.8, r * 0.2), body_n, alb * 0.7, "none"))
        for s in (-1, 1):
            parts.append(("box", (-length / 2, s * r * 1.3, r * 0.6, r * 0.25, s * 0.4), body_n, alb * 0.6,
                          "none"))
    elif kind == "lattice":
        length = rng.uniform(0.5, 0.9)
        n = int(rng.integers(4, 12))
        xs = np.linspace(-length / 2, length / 2, n)
        dz = rng.uniform(0.015, 0.04)
        for i in range(n - 1):
            ya, yb = (dz, -dz) if i % 2 else (-dz, dz)
            parts.append(("capsule", (xs[i], ya, xs[i + 1], yb, 0.004), body_n, alb, "none"))
        parts.append(("capsule", (xs[0], dz, xs[-1], dz, 0.004), body_n, alb, "none"))
        parts.append(("capsule", (xs[0], -dz, xs[-1], -dz, 0.004), body_n, alb, "none"))
        pn = _unit(rng.normal(0, 1, 3) + [0, 0, 1.5])
        for x in (xs[0], xs[-1]):
            parts.append(("box", (x, 0.0, rng.uniform(0.04, 0.08), rng.uniform(0.12, 0.25), 0.0), pn,
                          rng.uniform(0.1, 0.3), "hatch"))
    elif kind == "sphere":
        r = rng.uniform(0.08, 0.16)
        parts.append(("sphere", (0.0, 0.0, r), None, alb, "none"))
        for _ in range(int(rng.integers(2, 5))):
            a = rng.uniform(0, 2 * np.pi)
            ln = rng.uniform(0.2, 0.45)
            parts.append(("capsule", (r * np.cos(a), r * np.sin(a), ln * np.cos(a), ln * np.sin(a), 0.004),
                          body_n, alb * 0.8, "none"))
    elif kind == "sail":
        half = rng.uniform(0.2, 0.4)
        parts.append(("box", (0.0, 0.0, half, half, np.pi / 4), body_n, rng.uniform(0.6, 1.0), "none"))
        for a in (0.0, np.pi / 2):
            parts.append(("capsule", (-half * 1.4 * np.cos(a), -half * 1.4 * np.sin(a), half * 1.4 * np.cos(a),
                                      half * 1.4 * np.sin(a), 0.006), body_n, alb * 0.5, "none"))
        parts.append(("box", (0.0, 0.0, 0.04, 0.04, 0.0), body_n, alb, "none"))
    else:  # drum: a squat cylinder with body-mounted cells and a top dish
        r = rng.uniform(0.1, 0.2)
        parts.append(("box", (0.0, 0.0, r, r * rng.uniform(0.5, 1.0), 0.0), body_n, rng.uniform(0.15, 0.4),
                      "hatch"))
        parts.append(("disc", (0.0, -r * 1.2, r * 0.7), _unit([0, -1, 1]), alb, "none"))
        parts.append(("capsule", (0.0, -r, 0.0, -r * 1.2, 0.005), body_n, alb, "none"))
    return parts


def _sdf(kind, params, px, py):
    if kind == "box":
        return sd_box(px, py, *params)
    if kind == "capsule":
        return sd_capsule(px, py, *params)
    if kind in ("disc", "sphere"):
        return sd_disc(px, py, *params)
    return sd_ring(px, py, *params)


def _footprint(parts, rot: float, fore: float) -> tuple:
    """Centre (object units) and pixel span per object unit of the union of ``parts``."""
    u = np.linspace(-1.5, 1.5, 301, dtype=np.float32)
    uy, ux = np.meshgrid(u, u, indexing="ij")
    d = np.min([_sdf(kind, params, ux, uy) for kind, params, *_ in parts], axis=0)
    inside = d < 0
    if not inside.any():
        return (0.0, 0.0), 1.0
    px, py = ux[inside], uy[inside] * fore
    c, s = np.cos(rot), np.sin(rot)
    gx, gy = px * c - py * s, px * s + py * c
    span = max(float(np.ptp(gx)), float(np.ptp(gy)), 1e-3)
    return (float(px.mean()), float(uy[inside].mean())), span


def render(rng: np.random.Generator, extent: float) -> tuple:
    """(coverage, radiance, mode) of a satellite whose larger extent is about ``extent`` px."""
    parts = design(rng)
    rot = rng.uniform(0, 2 * np.pi)
    fore = rng.uniform(0.5, 1.0)
    (ucx, ucy), span = _footprint(parts, rot, fore)
    scale = extent / span  # px per object unit
    size = int(np.ceil(extent * 1.05)) + 6
    sub = 4
    g = (np.arange(size * sub, dtype=np.float32) + 0.5) / sub - size / 2  # sub-pixel centres, px
    gy, gx = np.meshgrid(g, g, indexing="ij")
    c, s = np.cos(rot), np.sin(rot)
    ux = (gx * c + gy * s) / scale + ucx  # object coordinates
    uy = (-gx * s + gy * c) / scale / fore + ucy
    sun = _unit(rng.normal(0, 1, 3) + [0, 0, 0.8])
    view = np.array([0.0, 0.0, 1.0])
    mode = str(rng.choice(["lit", "eclipse", "backlit"], p=[0.8, 0.1, 0.1]))
    best = np.full(gx.shape, np.inf, np.float32)
    radiance = np.zeros(gx.shape, np.float32)
    for kind, params, normal, alb, pattern in parts:
        d = _sdf(kind, params, ux, uy).astype(np.float32)
        hit = d < best
        best = np.minimum(best, d)
        if kind == "sphere":
            cx, cy, r = params
            nx, ny = (ux - cx) / r, (uy - cy) / r
            nz = np.sqrt(np.clip(1 - nx * nx - ny * ny, 0, 1))
            lam = np.clip(nx * sun[0] + ny * sun[1] + nz * sun[2], 0, 1)
            spec = 0.0
        else:
            lam = max(0.0, float(np.dot(normal, sun)))
            refl = 2 * np.dot(normal, sun) * normal - sun
            spec = max(0.0, float(np.dot(refl, view))) ** 30 * rng.uniform(0, 1.5)
        value = alb * (0.08 + 0.92 * lam) + spec
        if pattern == "hatch":
            period = rng.uniform(0.015, 0.05)
            value = value * (0.75 + 0.25 * (np.sin(ux / period * 2 * np.pi) > 0.8) +
                             0.25 * (np.sin(uy / period * 2 * np.pi) > 0.8))
        elif pattern == "bands":
            value = value * (0.85 + 0.15 * np.sign(np.sin(ux * rng.uniform(20, 60))))
        radiance = np.where(hit, value, radiance)
    inside = (best < 0).astype(np.float32)
    cov = inside.reshape(size, sub, size, sub).mean(axis=(1, 3))
    rad = (radiance * inside).reshape(size, sub, size, sub).sum(axis=(1, 3)) / np.maximum(
        inside.reshape(size, sub, size, sub).sum(axis=(1, 3)), 1)
    if mode == "eclipse":
        rad = rad * rng.uniform(0.02, 0.15)
    elif mode == "backlit":
        rad = rad * rng.uniform(0.02, 0.1) + rng.uniform(0.0, 0.3) * (cov < 1) * (cov > 0)
    return cov.astype(np.float32), rad.astype(np.float32) * np.float32(rng.uniform(0.6, 1.4)), mode


# --------------------------------------------------------------------------- sensor


def sensor(rng: np.random.Generator, radiance: np.ndarray, bit_depth: int) -> np.ndarray:
    h, w = radiance.shape
    core, halo = rng.uniform(0.4, 1.5), rng.uniform(3.0, 10.0)
    share = rng.uniform(0.0, 0.1)
    img = (1 - share) * cv2.GaussianBlur(radiance, (0, 0), core) + share * cv2.GaussianBlur(radiance, (0, 0), halo)
    exposure = float(np.exp(rng.uniform(np.log(300), np.log(30000))))
    prnu = 1.0 + rng.normal(0, rng.uniform(0, 0.02), (1, w)).astype(np.float32)
    electrons = rng.poisson(np.clip(img * prnu, 0, None) * exposure).astype(np.float32)
    dark = rng.uniform(0, 0.05) * exposure
    read = rng.uniform(1, 30)
    signal = (electrons + dark + rng.normal(0, read, (h, w)).astype(np.float32)) / np.float32(exposure)
    knee = rng.uniform(0.8, 1.6)
    signal = np.tanh(np.clip(signal, 0, None) / knee) * knee  # soft saturation
    bits = int(rng.choice([10, 12]))
    top = (1 << bits) - 1
    counts = np.round(np.clip(signal / max(knee * np.tanh(1.0 / knee) * 1.05, 1e-6), 0, 1) * top)
    if bit_depth == 16:
        return (counts * (65535.0 / top)).astype(np.uint16)
    out = np.round(counts * (255.0 / top)).astype(np.uint8)
    if rng.random() < 0.3:
        from PIL import Image

        buf = io.BytesIO()
        Image.fromarray(out).save(buf, format="JPEG", quality=int(rng.integers(30, 95)))
        out = np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert("L"))
    return out


# --------------------------------------------------------------------------- frames


def _visible(rng: np.random.Generator, rad: np.ndarray, cov: np.ndarray, behind: np.ndarray) -> np.ndarray:
    """Rescale the satellite's radiance when it would barely differ from what lies behind it
    (as a camera exposing for its target would show it): at least a drawn 8-20 % contrast."""
    weight = float(cov.sum())
    if weight <= 0:
        return rad
    sat = float((rad * cov).sum()) / weight
    bg = float((behind * cov).sum()) / weight
    need = rng.uniform(0.08, 0.2)
    if abs(sat - bg) >= need:
        return rad
    target = bg + need if bg < 0.5 else max(bg - need, 0.01)
    return rad * np.float32(target / max(sat, 1e-3))


def generate_frame(config, seed: int, split: str, index: int) -> tuple:
    """One style-b frame: (H x W uint8/uint16 image, H x W uint8 0/255 mask, info)."""
    rng = frame_rng(seed, split, index)
    h, w = config.height, config.width
    radiance, name = scene(rng, h, w)
    radiance = radiance * np.float32(rng.uniform(0.5, 1.3)) + np.float32(rng.uniform(-0.05, 0.1))
    mask = np.zeros((h, w), np.uint8)
    info = {"empty": True, "background": name}
    if not is_empty_frame(seed, split, index, config.empty_fraction):
        lo = config.min_extent
        hi = config.max_extent_frac * min(h, w)
        extent = float(np.clip(np.exp(rng.normal(np.log(np.sqrt(lo * hi)), 0.7)), lo, hi))
        cov, rad, mode = render(rng, extent)
        sz = cov.shape[0]
        cy = int(rng.integers(-sz // 4, h - 3 * sz // 4 + 1)) if h > sz // 2 else 0
        cx = int(rng.integers(-sz // 4, w - 3 * sz // 4 + 1)) if w > sz // 2 else 0
        ys, xs = slice(max(0, cy), min(h, cy + sz)), slice(max(0, cx), min(w, cx + sz))
        c = cov[ys.start - cy:ys.stop - cy, xs.start - cx:xs.stop - cx]
        r = rad[ys.start - cy:ys.stop - cy, xs.start - cx:xs.stop - cx]
        r = _visible(rng, r, c, radiance[ys, xs])
        radiance[ys, xs] = radiance[ys, xs] * (1 - c) + r * c
        mask[ys, xs] = np.where(c >= 0.5, 255, 0).astype(np.uint8)
        if mask.any():
            info = {"empty": False, "background": name, "mode": mode, "extent": round(extent, 2)}
    return sensor(rng, np.clip(radiance, 0, None).astype(np.float32), config.bit_depth), mask, info
