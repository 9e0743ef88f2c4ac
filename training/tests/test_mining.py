"""Hard-example mining: which patches are kept, their content, the command."""

from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pytest
from satsam_training.mining import mine_patches, patch_errors
from satsam_training.patches import frame_patches, load_patch, read_patch_index
from test_patches import _dataset


class _FixedDetector:
    """Publishes the same blob (bottom-right corner) on every frame, never the satellite."""

    def __init__(self, size=512, patch_size=256):
        self.config = SimpleNamespace(size=size, patch_size=patch_size)
        self.threshold = 0.4
        self.post = SimpleNamespace(to_dict=lambda: {"threshold": 0.4, "min_area": 0})
        self.calls = 0

    def detect(self, image):
        self.calls += 1
        mask = np.zeros(image.shape[:2], np.uint8)
        mask[250:290, 330:390] = 255
        return SimpleNamespace(mask=mask)


def test_patch_errors_counts_false_and_missed_pixels():
    pred = np.zeros((2, 4, 4), np.uint8)
    true = np.zeros((2, 4, 4), np.uint8)
    pred[0, :2, :2] = 255  # 4 published, 1 of them true
    true[0, 0, 0] = 255
    true[1, 3, :] = 255  # 4 missed
    false, missed = patch_errors(pred, true)
    assert false.tolist() == [3, 0] and missed.tolist() == [0, 4]


def test_keeps_exactly_the_wrong_patches(tmp_path):
    data = tmp_path / "data"
    masks = _dataset(data)
    det = _FixedDetector()
    index = mine_patches(det, data, tmp_path / "h", split="train", min_pixels=20, model="fixed", command="c")
    # frame 10: satellite top-left missed, blob bottom-right false; frame 11: the satellite
    # spans all four patches (all missed), the blob adds false pixels bottom-right; frame 12
    # (empty): the blob; frame 13 has no mask and is skipped (never run).
    got = [(it["frame_id"], it["y"], it["x"]) for it in index["items"]]
    assert got == [(10, 0, 0), (10, 256, 256), (11, 0, 0), (11, 0, 256), (11, 256, 0), (11, 256, 256),
                   (12, 256, 256)]
    assert index["stats"] == {"frames": 4, "skipped_no_mask": 1, "patches_total": 12, "false": 3, "missed": 5,
                              "kept": 7}
    assert det.calls == 3
    assert index["mined_with"] == {"model": "fixed", "threshold": 0.4,
                                   "postprocess": {"threshold": 0.4, "min_area": 0}, "min_pixels": 20}
    by_key = {(it["frame_id"], it["y"], it["x"]): it for it in index["items"]}
    assert by_key[(12, 256, 256)]["false_pixels"] > 0 and by_key[(12, 256, 256)]["missed_pixels"] == 0
    assert by_key[(12, 256, 256)]["positive"] is False
    assert by_key[(10, 0, 0)]["false_pixels"] == 0 and by_key[(10, 0, 0)]["missed_pixels"] > 20
    assert by_key[(11, 256, 256)]["false_pixels"] > 0 and by_key[(11, 256, 256)]["missed_pixels"] > 0

    # the directory reads as ordinary patches, with the frame's cut as content
    read = read_patch_index(tmp_path / "h")
    assert read["count"] == 7 and read["size"] == 512 and read["patch_size"] == 256
    import cv2

    frame_img = cv2.imread(str(data / "images" / "train" / "000000.png"), cv2.IMREAD_UNCHANGED)
    imgs, ms, origins = frame_patches(frame_img, masks[0], 512, 256)
    img, mask = load_patch(tmp_path / "h", index["items"][0], 256)
    assert np.array_equal(img, imgs[origins.index((0, 0))]) and np.array_equal(mask, ms[origins.index((0, 0))])


def test_min_pixels_filters_and_is_checked(tmp_path):
    data = tmp_path / "data"
    _dataset(data)
    index = mine_patches(_FixedDetector(), data, tmp_path / "h", min_pixels=10 ** 6)
    assert index["count"] == 0 and index["stats"]["patches_total"] == 12
    with pytest.raises(ValueError, match="min_pixels"):
        mine_patches(_FixedDetector(), data, tmp_path / "h2", min_pixels=0)
    with pytest.raises(ValueError, match="already holds patches"):
        mine_patches(_FixedDetector(), data, tmp_path / "h", min_pixels=20)


def test_mine_command_with_the_builtin_model(tmp_path, capsys):
    from satsam_training.cli import main

    data = tmp_path / "data"
    _dataset(data)
    out = tmp_path / "hard"
    assert main(["mine", "builtin", "--data", str(data), "--size", "512", "--out", str(out), "--min-pixels", "5",
                 "--no-progress"]) == 0
    assert "satsam-train mine: S = 512: 4 frames" in capsys.readouterr().err
    index = json.loads((out / "patches.json").read_text())
    assert index["mined_with"]["model"] == "builtin" and index["mined_with"]["min_pixels"] == 5
    assert index["stats"]["skipped_no_mask"] == 1 and index["stats"]["patches_total"] == 12
    assert index["count"] == index["stats"]["kept"] == len(index["items"])
    for item in index["items"]:  # every kept patch is wrong by at least 5 pixels
        assert max(item["false_pixels"], item["missed_pixels"]) >= 5
    with pytest.raises(SystemExit, match="satsam-train mine: .*already holds patches"):
        main(["mine", "builtin", "--data", str(data), "--size", "512", "--out", str(out), "--no-progress"])
