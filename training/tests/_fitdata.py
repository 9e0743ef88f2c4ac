"""Small generated data in the formats of ``satsam-train patches`` (patches.json + PNGs)
and of the COCO dataset directories, for the training-side tests.

Patches: a smooth noisy background with one bright rotated rectangle (the mask) or
nothing (an empty patch). Frames: ``satsam_ros.synthetic.synthetic_frame``.
"""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from satsam_training.coco import Frame, encode_mask, write_coco

from satsam_ros.core.synthetic import synthetic_frame


def make_patch(rng: np.random.Generator, p: int, positive: bool):
    """One P x P uint8 image and its 0/255 mask."""
    small = rng.random((p // 32 + 2, p // 32 + 2)).astype(np.float32)
    img = 60.0 + 80.0 * cv2.resize(small, (p, p), interpolation=cv2.INTER_CUBIC)
    mask = np.zeros((p, p), np.uint8)
    if positive:
        cx, cy = rng.uniform(0.25, 0.75, size=2) * p
        w, h = rng.uniform(0.12, 0.3, size=2) * p
        rect = ((float(cx), float(cy)), (float(w), float(h)), float(rng.uniform(0, 180)))
        cv2.fillPoly(mask, [np.round(cv2.boxPoints(rect)).astype(np.int32)], 255)
        img[mask > 0] = rng.uniform(210, 245)
    img += rng.normal(0, 3, img.shape)
    return np.clip(img, 0, 255).astype(np.uint8), mask


def make_patch_dir(root, count: int, seed: int = 0, patch: int = 256, size: int = 512, negatives: int = 0,
                   split: str = "train") -> Path:
    """``count`` positive + ``negatives`` empty patches under ``root`` (patches.json format)."""
    root = Path(root)
    (root / "images").mkdir(parents=True, exist_ok=True)
    (root / "masks").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    items = []
    for i in range(count + negatives):
        positive = i < count
        img, mask = make_patch(rng, patch, positive)
        name = f"{i:06d}.png"
        cv2.imwrite(str(root / "images" / name), img)
        cv2.imwrite(str(root / "masks" / name), mask)
        items.append({"image": f"images/{name}", "mask": f"masks/{name}", "frame_id": i, "y": 0, "x": 0,
                      "positive": positive})
    index = {"size": size, "patch_size": patch, "source": "test fixture", "split": split, "count": len(items),
             "items": items}
    (root / "patches.json").write_text(json.dumps(index))
    return root


def make_coco_dir(root, splits=("val",), count: int = 3, empty: int = 1, seed: int = 100,
                  height: int = 128, width: int = 160) -> Path:
    """A COCO dataset directory with ``count`` frames per split (the last ``empty`` ones empty)."""
    root = Path(root)
    for k, split in enumerate(splits):
        frames = []
        for i in range(count):
            img, mask = synthetic_frame(seed + 1000 * k + i, height, width, with_satellite=i < count - empty)
            path = root / "images" / split / f"{i:06d}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            cv2.imwrite(str(path), img)
            frame = Frame(id=i + 1, path=path, width=width, height=height)
            ys, xs = np.nonzero(mask)
            if len(xs):
                frame.boxes.append((float(xs.min()), float(ys.min()), float(np.ptp(xs) + 1), float(np.ptp(ys) + 1)))
                frame.segmentations.append(encode_mask(mask))
            frames.append(frame)
        write_coco(root / f"{split}.json", frames)
    return root


@pytest.fixture(autouse=True, scope="module")
def one_torch_thread():
    """Run a test module's torch work on one thread, then restore the setting.

    On a machine whose cores are shared with other jobs, OpenMP's spinning workers make
    tiny-model steps 10-20x slower with two threads than with one (measured: a 2-epoch
    fit took 38 s with 2 threads and 1.8 s with 1 under a load of 6 on 2 cores).
    """
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
