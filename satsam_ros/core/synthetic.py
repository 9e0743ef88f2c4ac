"""A few quick synthetic frames for the demo, the benchmark and tests.

Deliberately small: smooth "terrain" noise with a bright, rotated rectangular
satellite body and two panels, plus its exact mask. The full training-data generator
(coastlines, clouds, varied geometry, shadows) lives in ``satsam_training.synth``; the
runtime package does not depend on it.
"""

from __future__ import annotations

import math
from typing import List, Tuple

import cv2
import numpy as np

FRAME_HEIGHT, FRAME_WIDTH = 512, 641  # the reference data's frame size


def _terrain(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    img = np.zeros((height, width), np.float32)
    for scale, amp in ((64, 0.5), (16, 0.3), (4, 0.2)):
        small = rng.random((height // scale + 2, width // scale + 2)).astype(np.float32)
        img += amp * cv2.resize(small, (width, height), interpolation=cv2.INTER_CUBIC)
    return 40.0 + 120.0 * np.clip(img, 0, 1)


def draw_satellite(mask: np.ndarray, cx: float, cy: float, body: float, angle: float) -> None:
    """Fill a satellite into the H x W uint8 ``mask`` (255 inside): a square-ish body of
    side ``body`` pixels centred at (cx, cy) and two panels along ``angle`` degrees."""
    theta = np.deg2rad(angle)
    rects = [((cx, cy), (body, body * 0.8), angle)]
    for side in (-1, 1):
        off = side * body * 1.4
        rects.append(((cx + off * np.cos(theta), cy + off * np.sin(theta)), (body * 1.6, body * 0.5), angle))
    for rect in rects:
        cv2.fillPoly(mask, [np.round(cv2.boxPoints(rect)).astype(np.int32)], 255)


def synthetic_frame(
    seed: int, height: int = FRAME_HEIGHT, width: int = FRAME_WIDTH, with_satellite: bool = True
) -> Tuple[np.ndarray, np.ndarray]:
    """One H x W uint8 grayscale frame and its H x W uint8 0/255 satellite mask."""
    rng = np.random.default_rng(seed)
    img = _terrain(rng, height, width)
    mask = np.zeros((height, width), np.uint8)
    if with_satellite:
        cx, cy = rng.uniform(0.2, 0.8) * width, rng.uniform(0.2, 0.8) * height
        body = rng.uniform(12, 40)
        angle = rng.uniform(0, 180)
        draw_satellite(mask, cx, cy, body, angle)
        img[mask > 0] = rng.uniform(200, 250)
    img += rng.normal(0, 3, img.shape).astype(np.float32)
    return np.clip(img, 0, 255).astype(np.uint8), mask


def demo_frames(count: int = 3, seed: int = 0) -> List[Tuple[np.ndarray, np.ndarray]]:
    """``count`` frames (the last one empty when count > 2) with their masks."""
    return [synthetic_frame(seed + i, with_satellite=not (count > 2 and i == count - 1)) for i in range(count)]


def moving_sequence(
    count: int, seed: int = 0, height: int = FRAME_HEIGHT, width: int = FRAME_WIDTH, speed: float = 6.0
) -> List[Tuple[np.ndarray, np.ndarray]]:
    """``count`` gray frames (H x W uint8) of one satellite drifting over fixed terrain.

    Returns (frame, truth mask H x W uint8 0/255) pairs. The satellite moves ``speed``
    pixels per frame on a straight line with a slow spin, bouncing off the borders;
    terrain from :func:`synthetic_frame` (its empty variant).
    """
    if count < 1:
        raise ValueError(f"count must be >= 1; got {count}")
    rng = np.random.default_rng(seed)
    terrain, _ = synthetic_frame(seed, height, width, with_satellite=False)
    body = float(rng.uniform(14, 24))
    reach = body * 2.4
    x, y = float(rng.uniform(reach, width - reach)), float(rng.uniform(reach, height - reach))
    heading = float(rng.uniform(0, 2 * math.pi))
    vx, vy = speed * math.cos(heading), speed * math.sin(heading)
    angle = float(rng.uniform(0, 180))
    brightness = float(rng.uniform(205, 245))
    out = []
    for _ in range(count):
        truth = np.zeros((height, width), np.uint8)
        draw_satellite(truth, x, y, body, angle)
        frame = terrain.astype(np.float32)
        frame[truth > 0] = brightness
        frame += rng.normal(0, 3, frame.shape).astype(np.float32)
        out.append((np.clip(frame, 0, 255).astype(np.uint8), truth))
        x, y, angle = x + vx, y + vy, angle + 2.0
        if not reach <= x <= width - reach:
            vx = -vx
        if not reach <= y <= height - reach:
            vy = -vy
    return out
