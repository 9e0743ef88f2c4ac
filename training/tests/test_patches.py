"""Patch extraction: counts, the keep rule, content, skipped frames."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
from pycocotools.coco import COCO
from satsam_training.coco import Frame, encode_mask, mask_bbox, write_coco
from satsam_training.patches import extract_patches, load_patch, read_patch_index

H, W = 300, 400


def _dataset(root):
    """Four frames: satellite top-left, satellite across the centre, empty, and bbox-only."""
    rng = np.random.default_rng(0)
    masks = []
    m = np.zeros((H, W), np.uint8)
    m[20:60, 30:90] = 255  # top-left quadrant only
    masks.append(m)
    m = np.zeros((H, W), np.uint8)
    m[130:170, 180:220] = 255  # straddles the centre: all four quadrants
    masks.append(m)
    masks.append(np.zeros((H, W), np.uint8))
    masks.append(None)
    frames = []
    for i, mask in enumerate(masks):
        path = root / "images" / "train" / f"{i:06d}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        img = rng.integers(0, 120, (H, W), dtype=np.uint8)
        frame = Frame(id=10 + i, path=path, width=W, height=H)
        if mask is None:
            frame.boxes.append((5.0, 5.0, 20.0, 20.0))
            frame.segmentations.append(None)
        elif mask.any():
            img[mask > 0] = 250
            frame.boxes.append(mask_bbox(mask))
            frame.segmentations.append(encode_mask(mask))
        cv2.imwrite(str(path), img)
        frames.append(frame)
    write_coco(root / "train.json", frames)
    return masks


def test_counts_keep_rule_and_content(tmp_path):
    from satsam_ros.core.imaging import to_uint8_gray
    from satsam_ros.core.tiling import PatchGrid, resize

    data = tmp_path / "data"
    masks = _dataset(data)
    index = extract_patches(data, tmp_path / "p", size=512, split="train", patch_size=256)
    st = index["stats"]
    assert st == {"frames": 4, "skipped_no_mask": 1, "empty_frames": 1, "patches_total": 12, "positive": 5,
                  "kept_empty": 0}
    assert index["count"] == 5 and index["size"] == 512 and index["patch_size"] == 256
    assert index["split"] == "train" and index["source"] == str(data)
    assert [(it["frame_id"], it["y"], it["x"]) for it in index["items"]] == [
        (10, 0, 0), (11, 0, 0), (11, 0, 256), (11, 256, 0), (11, 256, 256)]
    assert all(it["positive"] for it in index["items"])
    # the files on disk are the frame resized to S x S and cut, and the nearest-neighbour mask
    on_disk = json.loads((tmp_path / "p" / "patches.json").read_text())
    assert on_disk == read_patch_index(tmp_path / "p")
    frame_img = cv2.imread(str(data / "images/train/000001.png"), cv2.IMREAD_UNCHANGED)
    grid = PatchGrid(512, 256)
    expected_img = grid.extract(resize(to_uint8_gray(frame_img), 512, 512))
    expected_mask = grid.extract(resize(masks[1], 512, 512, nearest=True))
    for k, item in enumerate(index["items"][1:]):
        img, mask = load_patch(tmp_path / "p", item, patch_size=256)
        assert img.dtype == np.uint8 and img.shape == (256, 256)
        assert np.array_equal(img, expected_img[k])
        assert np.array_equal(mask, expected_mask[k]) and set(np.unique(mask)) <= {0, 255}


def test_keep_empty_keeps_every_patch_at_one_and_a_reproducible_share_between(tmp_path):
    data = tmp_path / "data"
    _dataset(data)
    everything = extract_patches(data, tmp_path / "all", size=512, keep_empty=1.0)
    assert everything["count"] == 12 and everything["stats"]["kept_empty"] == 7
    assert sum(not it["positive"] for it in everything["items"]) == 7
    half_a = extract_patches(data, tmp_path / "a", size=512, keep_empty=0.5, seed=3)
    half_b = extract_patches(data, tmp_path / "b", size=512, keep_empty=0.5, seed=3)
    assert half_a["items"] == half_b["items"]
    assert half_a["stats"]["positive"] == 5 and 0 <= half_a["stats"]["kept_empty"] <= 7
    # patches without satellite pixels have all-zero masks; with, some 255
    for it in everything["items"]:
        _, mask = load_patch(tmp_path / "all", it)
        assert bool(mask.any()) == it["positive"]


def test_patch_size_and_sizes_are_checked(tmp_path):
    data = tmp_path / "data"
    _dataset(data)
    with pytest.raises(ValueError, match="patch size"):
        extract_patches(data, tmp_path / "x", size=128, patch_size=256)
    with pytest.raises(ValueError, match="keep_empty"):
        extract_patches(data, tmp_path / "x", size=512, keep_empty=2.0)
    extract_patches(data, tmp_path / "x", size=512)
    with pytest.raises(ValueError, match="already holds patches"):
        extract_patches(data, tmp_path / "x", size=512)
    # a non-multiple size still tiles the whole frame (last patch flush with the border)
    index = extract_patches(data, tmp_path / "y", size=384, patch_size=256, keep_empty=1.0)
    assert {(it["y"], it["x"]) for it in index["items"]} == {(0, 0), (0, 128), (128, 0), (128, 128)}


def test_the_dataset_written_for_patches_loads_with_pycocotools(tmp_path):
    _dataset(tmp_path)
    coco = COCO(str(tmp_path / "train.json"))
    assert len(coco.getImgIds()) == 4 and len(coco.getAnnIds()) == 3


def test_workers_cut_the_same_patches(tmp_path):
    from satsam_training.synth import SynthConfig, generate_dataset

    generate_dataset(tmp_path / "data", {"train": 6}, seed=3,
                     config=SynthConfig(height=160, width=200, min_extent=12.0, empty_fraction=0.2))
    one = extract_patches(tmp_path / "data", tmp_path / "one", size=512, keep_empty=0.3, seed=1)
    two = extract_patches(tmp_path / "data", tmp_path / "two", size=512, keep_empty=0.3, seed=1, workers=2)
    assert one["items"] == two["items"] and one["stats"] == two["stats"] and one["count"] > 6
    for item in one["items"]:
        for key in ("image", "mask"):
            assert (tmp_path / "one" / item[key]).read_bytes() == (tmp_path / "two" / item[key]).read_bytes()
    with pytest.raises(ValueError, match="workers"):
        extract_patches(tmp_path / "data", tmp_path / "bad", size=512, workers=0)
