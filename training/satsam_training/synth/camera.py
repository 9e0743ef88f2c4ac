"""Camera effects of the training generator (style ``a``): optics, sensor, encoding.

Applied to the composed radiance (H x W float32, about [0, 1]); each effect is drawn
with its own probability so frames range from clean to badly degraded:

* optics: Gaussian blur, motion blur or defocus (a disc), or none; bloom around
  saturated spots; vignetting;
* sensor: gain (over 1 it saturates and clips bright areas) and gamma, shot and read
  noise, row/column banding, hot pixels, salt and pepper;
* resolution loss (down- and up-sampling), quantisation to 8 or 16 bits and JPEG
  compression (8-bit only).
"""

from __future__ import annotations

import cv2
import numpy as np


def optics(rng: np.random.Generator, img: np.ndarray) -> np.ndarray:
    h, w = img.shape
    r = rng.random()
    if r < 0.5:
        img = cv2.GaussianBlur(img, (0, 0), rng.uniform(0.3, 2.0))
    elif r < 0.62:  # motion blur
        length = int(rng.integers(3, 12))
        kernel = np.zeros((length, length), np.float32)
        cv2.line(kernel, (0, length // 2), (length - 1, length // 2), 1.0, 1)
        rot = cv2.getRotationMatrix2D((length / 2 - 0.5, length / 2 - 0.5), rng.uniform(0, 180), 1.0)
        kernel = cv2.warpAffine(kernel, rot, (length, length))
        img = cv2.filter2D(img, -1, kernel / max(kernel.sum(), 1e-6))
    elif r < 0.7:  # defocus: a uniform disc
        radius = rng.uniform(1.0, 3.5)
        size = 2 * int(np.ceil(radius)) + 1
        kernel = np.zeros((size, size), np.float32)
        cv2.circle(kernel, (size // 2, size // 2), int(round(radius)), 1.0, -1, cv2.LINE_AA)
        img = cv2.filter2D(img, -1, kernel / kernel.sum())
    if rng.random() < 0.15:  # bloom: light spilling around the brightest areas
        hot = np.clip(img - np.float32(0.85), 0, None)
        img = img + cv2.GaussianBlur(hot, (0, 0), rng.uniform(2, 8)) * np.float32(rng.uniform(1, 4))
    yy = np.linspace(-1, 1, h, dtype=np.float32)[:, None]
    xx = np.linspace(-1, 1, w, dtype=np.float32)[None, :]
    return img * (np.float32(1.0) - np.float32(rng.uniform(0, 0.5)) * (yy * yy + xx * xx) / 2)


def sensor(rng: np.random.Generator, img: np.ndarray) -> np.ndarray:
    h, w = img.shape
    gain = float(np.exp(rng.uniform(np.log(0.7), np.log(1.7)))) if rng.random() < 0.4 else rng.uniform(0.85, 1.15)
    gamma = float(np.exp(rng.uniform(np.log(0.5), np.log(2.0)))) if rng.random() < 0.3 else rng.uniform(0.85, 1.2)
    img = np.clip(img * np.float32(gain), 0, 1) ** np.float32(gamma)
    full_well = float(np.exp(rng.uniform(np.log(200), np.log(20000))))
    read = float(np.exp(rng.uniform(np.log(0.001), np.log(0.05))))
    noise = rng.standard_normal((h, w), dtype=np.float32)
    img = img + noise * np.sqrt(img / np.float32(full_well) + np.float32(read * read))
    if rng.random() < 0.1:  # banding: per-row or per-column offsets
        if rng.random() < 0.5:
            img = img + rng.normal(0, rng.uniform(0.003, 0.02), (h, 1)).astype(np.float32)
        else:
            img = img + rng.normal(0, rng.uniform(0.003, 0.02), (1, w)).astype(np.float32)
    if rng.random() < 0.2:  # hot pixels
        n = int(rng.integers(1, 40))
        img[rng.integers(0, h, n), rng.integers(0, w, n)] += np.float32(rng.uniform(0.2, 1.0))
    if rng.random() < 0.05:  # salt and pepper
        n = int(h * w * rng.uniform(1e-4, 2e-3))
        img[rng.integers(0, h, n), rng.integers(0, w, n)] = rng.choice([0.0, 1.0], n).astype(np.float32)
    return np.clip(img, 0.0, 1.0)


def encode(rng: np.random.Generator, img: np.ndarray, bit_depth: int) -> np.ndarray:
    """float32 [0, 1] -> uint8 / uint16, with optional resolution loss and JPEG artefacts."""
    h, w = img.shape
    if rng.random() < 0.12:
        f = rng.uniform(1.3, 3.0)
        small = cv2.resize(img, (max(8, int(w / f)), max(8, int(h / f))), interpolation=cv2.INTER_AREA)
        img = cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR)
    if bit_depth == 16:
        return np.round(np.clip(img, 0, 1) * 65535.0).astype(np.uint16)
    out = np.round(np.clip(img, 0, 1) * 255.0).astype(np.uint8)
    if rng.random() < 0.25:
        ok, buf = cv2.imencode(".jpg", out, [cv2.IMWRITE_JPEG_QUALITY, int(rng.integers(20, 96))])
        if ok:
            out = cv2.imdecode(buf, cv2.IMREAD_GRAYSCALE)
    return out


def camera(rng: np.random.Generator, img: np.ndarray, bit_depth: int = 8) -> np.ndarray:
    """Radiance (H x W float32) -> the stored frame (H x W uint8 or uint16)."""
    return encode(rng, sensor(rng, optics(rng, np.clip(img, 0, None).astype(np.float32))), bit_depth)
