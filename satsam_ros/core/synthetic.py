"""A few quick synthetic frames for the demo, the benchmark and tests.

Deliberately small: smooth "terrain" noise with a bright, rotated rectangular
satellite body and two panels, plus its exact mask. The full training-data generator
(coastlines, clouds, varied geometry, shadows) lives in ``satsam_training.synth``; the
runtime package does not depend on it.
"""

from __future__ import annotations

from typing import List, Tuple

import cv2
import numpy as np


def _terrain(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    img = np.zeros((height, width), np.float32)
    for scale, amp in ((64, 0.5), (16, 0.3), (4, 0.2)):
        small = rng.random((height // scale + 2, width // scale + 2)).astype(np.float32)
        img += amp * cv2.resize(small, (width, height), interpolation=cv2.INTER_CUBIC)
    return 40.0 + 120.0 * np.clip(img, 0, 1)


def synthetic_frame(
    seed: int, height: int = 512, width: int = 641, with_satellite: bool = True
) -> Tuple[np.ndarray, np.ndarray]:
    """One H x W uint8 grayscale frame and its H x W uint8 0/255 satellite mask."""
    rng = np.random.default_rng(seed)
    img = _terrain(rng, height, width)
    mask = np.zeros((height, width), np.uint8)
    if with_satellite:
        cx, cy = rng.uniform(0.2, 0.8) * width, rng.uniform(0.2, 0.8) * height
        body = rng.uniform(12, 40)
        angle = rng.uniform(0, 180)
        shapes = [((cx, cy), (body, body * 0.8), angle)]
        theta = np.deg2rad(angle)
        for side in (-1, 1):
            off = side * body * 1.4
            shapes.append(((cx + off * np.cos(theta), cy + off * np.sin(theta)), (body * 1.6, body * 0.5), angle))
        for rect in shapes:
            cv2.fillPoly(mask, [np.round(cv2.boxPoints(rect)).astype(np.int32)], 255)
        img[mask > 0] = rng.uniform(200, 250)
    img += rng.normal(0, 3, img.shape).astype(np.float32)
    return np.clip(img, 0, 255).astype(np.uint8), mask


def demo_frames(count: int = 3, seed: int = 0) -> List[Tuple[np.ndarray, np.ndarray]]:
    """``count`` frames (the last one empty when count > 2) with their masks."""
    return [synthetic_frame(seed + i, with_satellite=not (count > 2 and i == count - 1)) for i in range(count)]
