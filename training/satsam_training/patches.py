"""Training patches: frames resized to S x S and cut into P x P patches.

Layout of a patches directory (one per split)::

    OUT/patches.json     {"size": S, "patch_size": P, "source": DATA, "split": "train",
                          "count": N, "items": [{"image": "images/000000.png",
                          "mask": "masks/000000.png", "frame_id": 12, "y": 0, "x": 256,
                          "positive": true}, ...], "stats": {...}, ...}
    OUT/images/NNNNNN.png   P x P uint8 grayscale patch of the frame resized to S x S
    OUT/masks/NNNNNN.png    P x P uint8 0/255 mask patch (mask resized nearest-neighbour)

``y, x`` are the patch's top-left corner in the S x S frame. Each frame is resized
with ``satsam_ros.tiling.resize`` (area averaging when shrinking, bilinear when
enlarging; the mask nearest-neighbour) and cut with ``satsam_ros.tiling.PatchGrid``,
the same code the detector runs, so training patches match inference patches.

Keep rule: a patch with at least one satellite pixel (positive) is always kept; a
patch without one is kept with probability ``keep_empty`` (the reference keeps none),
drawn from a generator seeded by ``(seed, frame id)`` so the choice is reproducible.
Frames whose mask is unknown (an annotation without segmentation) are skipped and
counted. Frames are stored as 8-bit grayscale (``satsam_ros.imaging.to_uint8_gray``:
16-bit frames are divided by 257, colour frames converted to luma).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import cv2
import numpy as np

from .coco import load_split, write_json_atomic


def frame_patches(image: np.ndarray, mask: np.ndarray, size: int, patch_size: int = 256):
    """Resize a frame and its mask to S x S and cut both into patches.

    ``image``: any stored frame (H x W uint8/uint16 or H x W x 3); ``mask``: H x W
    uint8 0/255. Returns ``(images N x P x P uint8, masks N x P x P uint8 0/255,
    origins [(y, x), ...])`` in the grid's row-major order.
    """
    from satsam_ros.core.imaging import to_uint8_gray
    from satsam_ros.core.tiling import PatchGrid, resize

    gray = to_uint8_gray(image)
    if mask.shape != gray.shape:
        raise ValueError(f"mask shape {mask.shape} differs from the frame's {gray.shape}")
    grid = PatchGrid(size=int(size), patch=int(patch_size))
    img_s = resize(gray, size, size)
    mask_s = resize(np.where(mask > 0, 255, 0).astype(np.uint8), size, size, nearest=True)
    return grid.extract(img_s), grid.extract(mask_s), list(grid.origins)


def _frame_job(job):
    """The kept patches of one frame (a worker's job): (frame id, status, patches total,
    [(image, mask, y, x, positive), ...]); status "no_mask", "empty" or "ok"."""
    frame, size, patch_size, keep_empty, seed = job
    mask = frame.mask()
    if mask is None:
        return frame.id, "no_mask", 0, []
    imgs, masks, origins = frame_patches(frame.image(), mask, size, patch_size)
    draws = np.random.default_rng([int(seed), int(frame.id)]).random(len(origins))
    kept = []
    for img, m, (y, x), draw in zip(imgs, masks, origins, draws):
        positive = bool(m.any())
        if positive or draw < keep_empty:
            kept.append((img, m, int(y), int(x), positive))
    return frame.id, "empty" if frame.is_empty else "ok", len(origins), kept


def _frame_results(jobs, workers: int):
    """Results of :func:`_frame_job` in the frames' order, from ``workers`` processes."""
    if workers <= 1:
        yield from map(_frame_job, jobs)
        return
    import multiprocessing as mp

    with mp.get_context("spawn").Pool(workers) as pool:
        yield from pool.imap(_frame_job, jobs, chunksize=8)


def extract_patches(
    data_dir,
    out_dir,
    size: int,
    split: str = "train",
    patch_size: int = 256,
    keep_empty: float = 0.0,
    seed: int = 0,
    progress: bool = False,
    workers: int = 1,
) -> dict:
    """Write the patches of one split of a COCO dataset to ``out_dir`` (layout above).

    Returns the index written to ``patches.json``; its ``stats`` hold the counts:
    ``frames`` (read), ``skipped_no_mask``, ``empty_frames``, ``patches_total``
    (all patches of the used frames), ``positive`` (kept, with satellite pixels) and
    ``kept_empty`` (kept without). Raises ValueError for bad sizes and for an output
    directory that already holds patches of another run.
    """
    from tqdm import tqdm

    size, patch_size = int(size), int(patch_size)
    if size <= 0 or patch_size <= 0 or patch_size > size:
        raise ValueError(f"need 0 < patch size <= size, got size {size}, patch size {patch_size}")
    if not 0.0 <= keep_empty <= 1.0:
        raise ValueError(f"keep_empty must be in [0, 1], got {keep_empty}")
    frames = load_split(data_dir, split)
    out = prepare_patch_dir(out_dir)

    if int(workers) < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    items = []
    stats = {"frames": len(frames), "skipped_no_mask": 0, "empty_frames": 0, "patches_total": 0,
             "positive": 0, "kept_empty": 0}
    jobs = [(frame, size, patch_size, float(keep_empty), int(seed)) for frame in frames]
    results = _frame_results(jobs, int(workers))
    for frame_id, status, total, kept in tqdm(results, total=len(jobs), desc=f"patches {split} S={size}",
                                              unit="frame", disable=not progress):
        if status == "no_mask":
            stats["skipped_no_mask"] += 1
            continue
        stats["empty_frames"] += status == "empty"
        stats["patches_total"] += total
        for img, m, y, x, positive in kept:
            items.append(write_patch(out, len(items), img, m, frame_id, y, x))
            stats["positive" if positive else "kept_empty"] += 1
    index = {"size": size, "patch_size": patch_size, "source": str(data_dir), "split": split,
             "count": len(items), "keep_empty": keep_empty, "seed": int(seed), "stats": stats, "items": items}
    write_json_atomic(out / "patches.json", index)
    return index


def prepare_patch_dir(out_dir) -> Path:
    """``out_dir`` with empty images/ and masks/ folders; ValueError if it already holds patches."""
    out = Path(out_dir)
    if (out / "patches.json").exists() or ((out / "images").exists() and any((out / "images").iterdir())):
        raise ValueError(f"output directory {out} already holds patches; choose an empty directory")
    (out / "images").mkdir(parents=True, exist_ok=True)
    (out / "masks").mkdir(parents=True, exist_ok=True)
    return out


def write_patch(out: Path, number: int, image: np.ndarray, mask: np.ndarray, frame_id: int, y: int, x: int) -> dict:
    """Write patch ``number`` (image and 0/255 mask PNGs) under ``out``; its index item."""
    name = f"{int(number):06d}.png"
    for sub, arr in (("images", image), ("masks", mask)):
        path = out / sub / name
        if not cv2.imwrite(str(path), arr):
            raise OSError(f"could not write {path}")
    return {"image": f"images/{name}", "mask": f"masks/{name}", "frame_id": int(frame_id), "y": int(y),
            "x": int(x), "positive": bool(mask.any())}


def read_patch_index(patches_dir) -> dict:
    """Read and check ``patches.json`` of a patches directory; errors name the file and entry."""
    path = Path(patches_dir) / "patches.json"
    try:
        index = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: not valid JSON ({exc})") from exc
    for key in ("size", "patch_size", "count", "items"):
        if key not in index:
            raise ValueError(f"{path}: missing {key!r}")
    if index["count"] != len(index["items"]):
        raise ValueError(f"{path}: count {index['count']} but {len(index['items'])} items")
    for i, item in enumerate(index["items"]):
        for key in ("image", "mask", "frame_id", "y", "x", "positive"):
            if key not in item:
                raise ValueError(f"{path}: items[{i}] missing {key!r}")
    return index


def load_patch(patches_dir, item: dict, patch_size: Optional[int] = None):
    """(image P x P uint8, mask P x P uint8 0/255) of one index item."""
    root = Path(patches_dir)
    img = cv2.imread(str(root / item["image"]), cv2.IMREAD_UNCHANGED)
    mask = cv2.imread(str(root / item["mask"]), cv2.IMREAD_UNCHANGED)
    if img is None or mask is None:
        raise FileNotFoundError(f"{root}: cannot read patch {item['image']} / {item['mask']}")
    if patch_size is not None and (img.shape != (patch_size, patch_size) or mask.shape != img.shape):
        raise ValueError(f"{root}: patch {item['image']} is {img.shape}, expected {patch_size} x {patch_size}")
    return img, mask
