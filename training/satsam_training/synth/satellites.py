"""Satellites of the training generator (style ``a``): families of shapes built from
parts, rendered with supersampling into coverage and albedo.

A satellite is a list of parts in *local units* (the bus about 1 unit from its centre):
polygons (bus faces, solar panels), lines (booms, struts, antennas, trusses) and
ellipses (dishes). Families:

* ``classic``: box, prism or cylinder bus with 0-2 wings of 1-4 panels on booms,
  antenna rods and dishes (communication and Earth-observation satellites);
* ``flatpanel``: a flat slab with one long panel (constellation satellites);
* ``cubesat``: a small box, optionally with 2-4 deployed petal panels;
* ``station``: a long truss with panel pairs and a few modules;
* ``telescope``: a long cylinder with two side panels (Hubble-like);
* ``crosswing``: a bus with three or four wings;
* ``boomy``: a small bus with long thin booms (magnetometers, antennas, tethers);
* ``dish``: a large reflector with a small bus and feed struts;
* ``rocket``: a plain cylinder with a nozzle (a spent upper stage);
* ``cluster``: a few overlapping convex pieces (anything else in orbit).

Rendering: the parts are scaled (larger pixel extent = ``extent``), foreshortened,
rotated, drawn at 2-4x supersampling into a coverage canvas and an albedo canvas and
area-averaged down. ``detail`` decides how they are shaded: ``plain`` (one albedo for
the whole object: a flat silhouette), ``parts`` (one albedo per part) or ``detailed``
(foil texture, panel cell grids, a lighting gradient and the bus's shadow on the
panels). Albedo is relative (about 0..1); the frame decides how bright that is
against the background it lands on.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

FAMILIES = ("classic", "flatpanel", "cubesat", "station", "telescope", "crosswing", "boomy", "dish", "rocket",
            "cluster")
FAMILY_WEIGHTS = (0.34, 0.08, 0.08, 0.07, 0.07, 0.07, 0.08, 0.07, 0.07, 0.07)
DETAILS = ("plain", "parts", "detailed")
DETAIL_WEIGHTS = (0.2, 0.3, 0.5)


@dataclass
class Part:
    kind: str  # "poly" | "line" | "ellipse"
    points: np.ndarray  # poly: N x 2; line: 2 x 2; ellipse: center (1 x 2)
    shade: float
    texture: str = "plain"  # "plain" | "foil" | "cells"
    width: float = 0.0  # line width (local units)
    axes: tuple = (0.0, 0.0)  # ellipse half-axes
    angle: float = 0.0  # ellipse angle (degrees, local frame)
    cells: tuple = (0, 0)  # panel cell grid (along, across)


@dataclass
class Satellite:
    """A rendered satellite: coverage and albedo on its own canvas, placed at (y0, x0)."""

    coverage: np.ndarray  # h x w float32 in [0, 1]
    albedo: np.ndarray  # h x w float32, relative brightness where covered
    y0: int
    x0: int
    extent: float
    angle: float
    family: str
    detail: str


def rect(cx, cy, hx, hy) -> np.ndarray:
    return np.array([[cx - hx, cy - hy], [cx + hx, cy - hy], [cx + hx, cy + hy], [cx - hx, cy + hy]], np.float64)


def _rotated(points: np.ndarray, angle: float) -> np.ndarray:
    c, s = np.cos(angle), np.sin(angle)
    return points @ np.array([[c, s], [-s, c]])


def _extruded(rng, face: np.ndarray, shade: float) -> list:
    """A prism seen at an angle: a darker side face behind the front face."""
    tilt = rng.uniform(0, 2 * np.pi)
    depth = rng.uniform(0.05, 0.45) * np.array([np.cos(tilt), np.sin(tilt)])
    side = cv2.convexHull(np.concatenate([face, face + depth]).astype(np.float32))[:, 0, :].astype(np.float64)
    return [Part("poly", side, shade * rng.uniform(0.35, 0.75), "foil"), Part("poly", face, shade, "foil")]


def _bus(rng, kind: str = "") -> np.ndarray:
    kind = kind or str(rng.choice(["box", "prism", "cylinder"], p=[0.55, 0.25, 0.2]))
    if kind == "box":
        return rect(0, 0, 1.0, rng.uniform(0.4, 1.0))
    if kind == "prism":
        n = int(rng.choice([6, 8]))
        t = np.arange(n) * 2 * np.pi / n + rng.uniform(0, np.pi / n)
        return np.stack([np.cos(t), np.sin(t) * rng.uniform(0.7, 1.0)], axis=1)
    ry = rng.uniform(0.35, 0.7)
    t = np.linspace(-np.pi / 2, np.pi / 2, 9)
    right = np.stack([1.0 - ry + ry * np.cos(t), ry * np.sin(t)], axis=1)
    return np.concatenate([right, -right], axis=0)


def _panel_shade(rng) -> float:
    return rng.uniform(0.08, 0.4) if rng.random() < 0.8 else rng.uniform(0.6, 1.0)  # dark cells or a glint


def _wing(rng, start: float, direction: float, n_panels: int, panel_len: float, panel_w: float, shade: float,
          boom_shade: float, boom_w: float) -> list:
    """A wing along the local angle ``direction`` (radians) from radius ``start``: boom + panels."""
    parts = []
    boom = rng.uniform(0.05, 0.7)
    gap = rng.uniform(0.0, 0.12)
    cells = (int(rng.integers(2, 8)), int(rng.integers(1, 5)))
    parts.append(Part("line", _rotated(np.array([[start * 0.9, 0.0], [start + boom, 0.0]]), direction),
                      boom_shade, width=boom_w))
    x0 = start + boom
    for k in range(n_panels):
        panel = rect(x0 + panel_len / 2, 0.0, panel_len / 2, panel_w / 2)
        parts.append(Part("poly", _rotated(panel, direction), shade, "cells", cells=cells))
        if k + 1 < n_panels and gap > 0.03:
            hinge = np.array([[x0 + panel_len, 0.0], [x0 + panel_len + gap, 0.0]])
            parts.append(Part("line", _rotated(hinge, direction), min(1.0, shade * 1.5), width=0.05))
        x0 += panel_len + gap
    return parts


def _rods(rng, half_w: float, half_h: float, count: int, length=(0.5, 2.2), width=(0.02, 0.1)) -> list:
    parts = []
    for _ in range(count):
        ang = rng.uniform(0, 2 * np.pi)
        d = np.array([np.cos(ang), np.sin(ang)])
        edge = np.array([half_w * d[0], half_h * d[1]]) * 0.95
        parts.append(Part("line", np.array([edge, edge + d * rng.uniform(*length)]), rng.uniform(0.4, 1.0),
                          width=rng.uniform(*width)))
    return parts


def _dish(rng, center: np.ndarray, r: float, ang: float) -> Part:
    return Part("ellipse", center[None, :], rng.uniform(0.55, 0.95), "plain",
                axes=(r, r * rng.uniform(0.25, 1.0)), angle=float(np.degrees(ang) + 90.0))


def classic(rng):
    shade = rng.uniform(0.45, 1.0)
    bus = _bus(rng)
    parts = _extruded(rng, bus, shade)
    half_h, half_w = float(np.abs(bus[:, 1]).max()), float(np.abs(bus[:, 0]).max())
    wings = int(rng.choice([0, 1, 2], p=[0.12, 0.18, 0.7]))
    sides = [0.0, np.pi] if wings == 2 else ([float(rng.choice([0.0, np.pi]))] if wings == 1 else [])
    p_shade, n, plen = _panel_shade(rng), int(rng.integers(1, 5)), rng.uniform(0.6, 1.8)
    pw = rng.uniform(0.5, 1.6) * rng.uniform(0.3, 1.0)
    for side in sides:
        parts += _wing(rng, half_w, side, n, plen, pw, p_shade, shade * 0.8, rng.uniform(0.03, 0.12))
    for _ in range(int(rng.choice([0, 1, 2], p=[0.45, 0.4, 0.15]))):
        ang = rng.uniform(0, 2 * np.pi)
        if wings and abs(np.cos(ang)) > 0.8:
            ang = np.pi / 2 * rng.choice([1, -1]) + rng.uniform(-0.5, 0.5)
        d = np.array([np.cos(ang), np.sin(ang)])
        edge = np.array([half_w * d[0], half_h * d[1]])
        r = rng.uniform(0.3, 0.9)
        center = edge + d * (rng.uniform(0.1, 0.5) + r * 0.6)
        parts.append(Part("line", np.array([edge, center]), shade * 0.7, width=rng.uniform(0.04, 0.12)))
        parts.append(_dish(rng, center, r, ang))
    parts += _rods(rng, half_w, half_h, int(rng.choice([0, 1, 2, 3], p=[0.3, 0.35, 0.25, 0.1])))
    return parts, bus


def flatpanel(rng):
    shade = rng.uniform(0.4, 1.0)
    bus = rect(0, 0, 1.0, rng.uniform(0.15, 0.5))
    parts = _extruded(rng, bus, shade)
    plen = rng.uniform(2.5, 6.0)
    parts += _wing(rng, 1.0, 0.0, 1, plen, rng.uniform(0.6, 1.4), _panel_shade(rng), shade * 0.8, 0.08)
    return parts, bus


def cubesat(rng):
    shade = rng.uniform(0.4, 1.0)
    u = rng.choice([1.0, 1.5, 2.0])
    bus = rect(0, 0, u, 1.0)
    parts = _extruded(rng, bus, shade)
    petals = int(rng.choice([0, 2, 4], p=[0.35, 0.35, 0.3]))
    p_shade = _panel_shade(rng)
    for k in range(petals):
        ang = k * (2 * np.pi / petals) if petals else 0.0
        reach = u if abs(np.cos(ang)) > 0.5 else 1.0
        plen = rng.uniform(1.5, 2.5) * reach
        panel = rect(reach + plen / 2, 0.0, plen / 2, rng.uniform(0.6, 1.0))
        parts.append(Part("poly", _rotated(panel, ang), p_shade, "cells", cells=(int(rng.integers(2, 5)), 2)))
    parts += _rods(rng, u, 1.0, int(rng.choice([0, 1, 2, 4], p=[0.4, 0.2, 0.2, 0.2])), (1.0, 3.0), (0.02, 0.06))
    return parts, bus


def station(rng):
    shade = rng.uniform(0.5, 1.0)
    length = rng.uniform(4.0, 9.0)
    truss_w = rng.uniform(0.08, 0.3)
    parts = [Part("poly", rect(0, 0, length / 2, truss_w / 2), shade * 0.8, "plain")]
    modules = []
    for _ in range(int(rng.integers(1, 4))):
        ang = rng.choice([np.pi / 2, -np.pi / 2])
        mlen, mr = rng.uniform(0.8, 2.0), rng.uniform(0.25, 0.5)
        cx = rng.uniform(-0.3, 0.3) * length
        module = _rotated(rect(mlen / 2 + truss_w, 0, mlen / 2, mr), ang) + np.array([cx, 0.0])
        modules.append(module)
        parts.append(Part("poly", module, shade, "foil"))
    pairs = int(rng.integers(1, 5))
    p_shade = _panel_shade(rng)
    plen, pw = rng.uniform(1.2, 3.0), rng.uniform(0.4, 0.9)
    for k in range(pairs):
        x = (k + 0.5) / pairs * length / 2 * rng.choice([1, -1]) if pairs > 1 else length / 2 * 0.8
        for side in (1, -1):
            panel = rect(x, side * (truss_w / 2 + plen / 2), pw / 2, plen / 2)
            parts.append(Part("poly", panel, p_shade, "cells", cells=(2, int(rng.integers(3, 8)))))
    return parts, modules[0] if modules else rect(0, 0, 1.0, truss_w)


def telescope(rng):
    shade = rng.uniform(0.5, 1.0)
    length, r = rng.uniform(2.0, 3.5), rng.uniform(0.45, 0.8)
    bus = rect(0, 0, length / 2, r)
    parts = _extruded(rng, bus, shade)
    p_shade = _panel_shade(rng)
    plen, pw = rng.uniform(1.2, 2.5), rng.uniform(0.4, 0.8)
    for side in (1, -1):
        panel = rect(rng.uniform(-0.3, 0.3), side * (r + rng.uniform(0.05, 0.4) + pw / 2), plen / 2, pw / 2)
        parts.append(Part("poly", panel, p_shade, "cells", cells=(int(rng.integers(2, 6)), 1)))
    if rng.random() < 0.6:  # aperture door
        door = rect(length / 2 + 0.05, r * 0.6, 0.05, r * 0.6)
        parts.append(Part("poly", _rotated(door - np.array([length / 2, 0]), rng.uniform(-1.2, 0)) +
                          np.array([length / 2, 0]), shade * 0.9, "plain"))
    return parts, bus


def crosswing(rng):
    shade = rng.uniform(0.45, 1.0)
    bus = _bus(rng, "box" if rng.random() < 0.6 else "prism")
    parts = _extruded(rng, bus, shade)
    half_w = float(np.abs(bus).max())
    k = int(rng.choice([3, 4]))
    p_shade, plen, pw = _panel_shade(rng), rng.uniform(0.8, 2.0), rng.uniform(0.4, 1.0)
    n = int(rng.integers(1, 3))
    base = rng.uniform(0, 2 * np.pi)
    for i in range(k):
        parts += _wing(rng, half_w, base + i * 2 * np.pi / k, n, plen, pw, p_shade, shade * 0.8, 0.06)
    return parts, bus


def boomy(rng):
    shade = rng.uniform(0.45, 1.0)
    bus = _bus(rng)
    parts = _extruded(rng, bus, shade)
    half_h, half_w = float(np.abs(bus[:, 1]).max()), float(np.abs(bus[:, 0]).max())
    for part in _rods(rng, half_w, half_h, int(rng.integers(2, 5)), (2.0, 6.0), (0.015, 0.06)):
        parts.append(part)
        if rng.random() < 0.4:  # a sensor box at the tip
            tip = part.points[1]
            parts.append(Part("poly", rect(tip[0], tip[1], 0.15, 0.15), shade, "plain"))
    if rng.random() < 0.5:
        parts += _wing(rng, half_w, 0.0, 1, rng.uniform(0.6, 1.2), rng.uniform(0.4, 0.9), _panel_shade(rng),
                       shade * 0.8, 0.05)
    return parts, bus


def dish(rng):
    shade = rng.uniform(0.45, 1.0)
    bus = _bus(rng, "box")
    parts = _extruded(rng, bus, shade)
    ang = rng.uniform(0, 2 * np.pi)
    d = np.array([np.cos(ang), np.sin(ang)])
    r = rng.uniform(1.3, 2.5)
    center = d * (1.0 + r * 0.5)
    parts.append(_dish(rng, center, r, ang))
    for s in (-1, 1):  # feed struts
        side = np.array([-d[1], d[0]]) * s * r * 0.5
        parts.append(Part("line", np.array([center + side, center + d * r * 0.8]), shade * 0.7, width=0.04))
    if rng.random() < 0.5:
        parts += _wing(rng, 1.0, ang + np.pi, int(rng.integers(1, 3)), rng.uniform(0.8, 1.5), 0.8,
                       _panel_shade(rng), shade * 0.8, 0.06)
    return parts, bus


def rocket(rng):
    shade = rng.uniform(0.5, 1.0)
    length, r = rng.uniform(2.5, 5.0), rng.uniform(0.4, 0.7)
    body = rect(0, 0, length / 2, r)
    nozzle = np.array([[length / 2, -r * 0.5], [length / 2 + r, -r * 0.8], [length / 2 + r, r * 0.8],
                       [length / 2, r * 0.5]])
    parts = [Part("poly", body, shade, "foil"), Part("poly", nozzle, shade * rng.uniform(0.3, 0.8), "plain")]
    if rng.random() < 0.5:  # stripes / interstage ring
        x = rng.uniform(-length / 3, length / 3)
        parts.append(Part("poly", rect(x, 0, 0.1, r), shade * rng.uniform(0.3, 0.7), "plain"))
    return parts, body


def cluster(rng):
    parts = []
    for _ in range(int(rng.integers(2, 6))):
        n = int(rng.integers(3, 8))
        t = np.sort(rng.uniform(0, 2 * np.pi, n))
        r = rng.uniform(0.4, 1.2)
        poly = np.stack([np.cos(t), np.sin(t) * rng.uniform(0.3, 1.0)], 1) * r + rng.normal(0, 0.6, 2)
        parts.append(Part("poly", _rotated(poly, rng.uniform(0, np.pi)), rng.uniform(0.3, 1.0), "foil"))
    return parts, parts[0].points


_FAMILY_FUNCS = {"classic": classic, "flatpanel": flatpanel, "cubesat": cubesat, "station": station,
                 "telescope": telescope, "crosswing": crosswing, "boomy": boomy, "dish": dish, "rocket": rocket,
                 "cluster": cluster}


def _ellipse_points(p: Part, n: int = 40) -> np.ndarray:
    t = np.linspace(0, 2 * np.pi, n, endpoint=False)
    a = np.radians(p.angle)
    e = np.stack([p.axes[0] * np.cos(t), p.axes[1] * np.sin(t)], 1)
    return e @ np.array([[np.cos(a), np.sin(a)], [-np.sin(a), np.cos(a)]]) + p.points[0]


def render_satellite(rng: np.random.Generator, extent: float, family: str = "", detail: str = "") -> Satellite:
    """Render a random satellite whose larger pixel extent is about ``extent``."""
    family = family or str(rng.choice(FAMILIES, p=FAMILY_WEIGHTS))
    detail = detail or str(rng.choice(DETAILS, p=DETAIL_WEIGHTS))
    parts, bus = _FAMILY_FUNCS[family](rng)
    if detail == "plain":
        flat_shade = rng.uniform(0.5, 1.0)
        for p in parts:
            p.shade, p.texture = flat_shade, "plain"
    angle = rng.uniform(0, 360)
    squash = rng.uniform(0.45, 1.0)
    th = np.radians(angle)
    rot = np.array([[np.cos(th), -np.sin(th)], [np.sin(th), np.cos(th)]]) @ np.diag([1.0, squash])

    pts = np.concatenate([_ellipse_points(p, 16) if p.kind == "ellipse" else p.points for p in parts]) @ rot.T
    span = float(max(np.ptp(pts[:, 0]), np.ptp(pts[:, 1])))
    scale = extent / span  # px per local unit
    ss = 4 if extent < 96 else 2
    k = scale * ss
    pad = 3 * ss
    origin = np.floor(pts.min(axis=0) * k / ss) * ss - pad
    size = np.ceil((pts.max(axis=0) * k - origin + pad) / ss).astype(int) * ss
    cw, ch = int(size[0]), int(size[1])
    alpha = np.zeros((ch, cw), np.uint8)
    color = np.zeros((ch, cw), np.float32)
    shift = 4
    one = 1 << shift

    def to_canvas(p: np.ndarray) -> np.ndarray:
        return np.round(((p @ rot.T) * k - origin) * one).astype(np.int32)

    for p in parts:
        if p.kind == "poly":
            poly = to_canvas(p.points)
            cv2.fillPoly(alpha, [poly], 255, cv2.LINE_8, shift)
            cv2.fillPoly(color, [poly], float(p.shade), cv2.LINE_8, shift)
            if detail == "detailed" and p.texture == "cells" and p.cells[0] > 1:
                _draw_cells(color, p, to_canvas, k, shift)
        elif p.kind == "line":
            a, b = to_canvas(p.points)
            thick = max(int(round(p.width * k)), int(rng.uniform(1.0, 1.6) * ss))
            cv2.line(alpha, tuple(a), tuple(b), 255, thick, cv2.LINE_8, shift)
            cv2.line(color, tuple(a), tuple(b), float(p.shade), thick, cv2.LINE_8, shift)
        else:
            e = _ellipse_points(p)
            cv2.fillPoly(alpha, [to_canvas(e)], 255, cv2.LINE_8, shift)
            cv2.fillPoly(color, [to_canvas(e)], float(p.shade), cv2.LINE_8, shift)
            if detail != "plain":
                inner = p.points[0] + (e - p.points[0]) * 0.55
                cv2.fillPoly(color, [to_canvas(inner)], float(p.shade) * 0.8, cv2.LINE_8, shift)

    if detail == "detailed" and alpha.any():
        _light(rng, color, ch, cw, ss, to_canvas, bus, shift)
    oh, ow = ch // ss, cw // ss
    cov = cv2.resize(alpha.astype(np.float32) / 255.0, (ow, oh), interpolation=cv2.INTER_AREA)
    weighted = cv2.resize(color * (alpha > 0), (ow, oh), interpolation=cv2.INTER_AREA)
    albedo = weighted / np.maximum(cov, 1e-6)
    return Satellite(cov, albedo, int(origin[1] // ss), int(origin[0] // ss), float(extent), float(angle),
                     family, detail)


def _light(rng, color, ch, cw, ss, to_canvas, bus, shift) -> None:
    """Foil texture, a lighting gradient, the bus's shadow on the panels (in place)."""
    tex = cv2.resize(rng.random((ch // (2 * ss) + 2, cw // (2 * ss) + 2), dtype=np.float32), (cw, ch),
                     interpolation=cv2.INTER_LINEAR)
    color *= np.float32(1.0) + np.float32(rng.uniform(0.05, 0.35)) * (tex - np.float32(0.5))
    light = rng.uniform(0, 2 * np.pi)
    ldir = np.array([np.cos(light), np.sin(light)])
    yy, xx = np.mgrid[0:ch, 0:cw].astype(np.float32)
    grad = ((xx - cw / 2.0) * ldir[0] + (yy - ch / 2.0) * ldir[1]) / max(ch, cw)
    color *= np.float32(1.0) + np.float32(rng.uniform(0.2, 0.9)) * grad
    shadow = np.zeros((ch, cw), np.uint8)
    cv2.fillPoly(shadow, [to_canvas(bus + ldir * rng.uniform(0.2, 0.8))], 1, cv2.LINE_8, shift)
    color[shadow > 0] *= np.float32(rng.uniform(0.3, 0.8))


def _draw_cells(color, part: Part, to_canvas, k: float, shift: int) -> None:
    """Cell grid lines across a solar panel (a rectangle, possibly rotated, in local units)."""
    p0, p1, _, p3 = part.points[:4]
    line_shade = float(min(1.0, part.shade * 1.8 + 0.1))
    thick = max(1, int(round(0.02 * k)))
    along, across = part.cells
    for i in range(1, along):
        a = p0 + (p1 - p0) * i / along
        b = p3 + (part.points[2] - p3) * i / along
        cv2.line(color, *[tuple(v) for v in to_canvas(np.array([a, b]))], line_shade, thick, cv2.LINE_8, shift)
    for j in range(1, across):
        a = p0 + (p3 - p0) * j / across
        b = p1 + (part.points[2] - p1) * j / across
        cv2.line(color, *[tuple(v) for v in to_canvas(np.array([a, b]))], line_shade, thick, cv2.LINE_8, shift)
