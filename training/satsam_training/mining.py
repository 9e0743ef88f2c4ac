"""Hard-example mining: the training patches a model gets wrong.

A model trained on randomly kept patches sees few of the patches that decide a frame:
at S = 2048 a frame has 64 patches, and one that fires on a cloud edge turns the whole
frame into a false alarm. :func:`mine_patches` runs a checkpoint through the Detector
(its tuned post-processing for the size, exactly what the node publishes) on labelled
frames, compares the published mask with the true one patch by patch, and writes the
patches where they disagree as an ordinary patches directory (``patches.json`` as
:mod:`.patches` writes it), to be trained on beside the random patches:

* ``false`` - at least ``min_pixels`` published pixels outside the satellite (a hard
  negative when the patch holds no satellite);
* ``missed`` - at least ``min_pixels`` satellite pixels not published.

Each item also records ``false_pixels`` and ``missed_pixels``. The frames must not be
validation or test frames of the model that will be trained on the result.
"""

from __future__ import annotations

from typing import Any, Dict

import numpy as np

from .coco import load_split, write_json_atomic
from .patches import frame_patches, prepare_patch_dir, write_patch


def patch_errors(pred_patches: np.ndarray, true_patches: np.ndarray):
    """(false pixels, missed pixels) per patch of two N x P x P 0/255 stacks."""
    pred, true = pred_patches > 0, true_patches > 0
    false = np.count_nonzero(pred & ~true, axis=(1, 2))
    missed = np.count_nonzero(true & ~pred, axis=(1, 2))
    return false, missed


def mine_patches(detector, data_dir, out_dir, split: str = "train", min_pixels: int = 20,
                 progress: bool = False, model: str = "", command: str = "") -> Dict[str, Any]:
    """Write the patches of ``data_dir``/``split`` that ``detector`` gets wrong to ``out_dir``.

    The frames are resized to the detector's S and cut into its P x P grid (the same cut
    as ``satsam-train patches``). Returns the index written to ``patches.json``; its
    ``stats`` count ``frames``, ``skipped_no_mask``, ``patches_total``, ``false``
    (patches kept for false pixels), ``missed`` (kept for missed pixels; a patch with
    both counts in both) and ``kept``.
    """
    from tqdm import tqdm

    from satsam_ros.core.tiling import PatchGrid, resize

    if int(min_pixels) < 1:
        raise ValueError(f"min_pixels must be >= 1, got {min_pixels}")
    size, patch_size = int(detector.config.size), int(detector.config.patch_size)
    frames = load_split(data_dir, split)
    out = prepare_patch_dir(out_dir)
    grid = PatchGrid(size=size, patch=patch_size)
    items = []
    stats = {"frames": len(frames), "skipped_no_mask": 0, "patches_total": 0, "false": 0, "missed": 0, "kept": 0}
    for frame in tqdm(frames, desc=f"mine {split} S={size}", unit="frame", disable=not progress):
        mask = frame.mask()
        if mask is None:
            stats["skipped_no_mask"] += 1
            continue
        image = frame.image()
        imgs, masks, origins = frame_patches(image, mask, size, patch_size)
        pred = resize(detector.detect(image).mask, size, size, nearest=True)
        false, missed = patch_errors(grid.extract(pred), masks)
        stats["patches_total"] += len(origins)
        for k, (y, x) in enumerate(origins):
            is_false, is_missed = false[k] >= min_pixels, missed[k] >= min_pixels
            if not (is_false or is_missed):
                continue
            item = write_patch(out, len(items), imgs[k], masks[k], frame.id, y, x)
            item.update(false_pixels=int(false[k]), missed_pixels=int(missed[k]))
            items.append(item)
            stats["false"] += int(is_false)
            stats["missed"] += int(is_missed)
    stats["kept"] = len(items)
    post = detector.post.to_dict()
    index = {"size": size, "patch_size": patch_size, "source": str(data_dir), "split": split,
             "count": len(items), "mined_with": {"model": str(model),
                                                 "threshold": float(detector.threshold), "postprocess": post,
                                                 "min_pixels": int(min_pixels)},
             "command": command, "stats": stats, "items": items}
    write_json_atomic(out / "patches.json", index)
    return index
