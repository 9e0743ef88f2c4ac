"""The synthetic generator: determinism, label correctness, empty share, options."""

from __future__ import annotations

import hashlib

import cv2
import numpy as np
import pytest
from satsam_training.coco import decode_segmentation, load_split
from satsam_training.synth import SynthConfig, generate_dataset, generate_frame, is_empty_frame

SMALL = SynthConfig(height=128, width=160, min_extent=12.0)


def _digest(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_same_seed_same_frames_and_frames_independent_of_count(tmp_path):
    generate_dataset(tmp_path / "a", {"train": 3, "val": 2}, seed=5, config=SMALL)
    generate_dataset(tmp_path / "b", {"train": 6}, seed=5, config=SMALL)
    generate_dataset(tmp_path / "c", {"train": 3}, seed=6, config=SMALL)
    for i in range(3):
        name = f"images/train/{i:06d}.png"
        assert _digest(tmp_path / "a" / name) == _digest(tmp_path / "b" / name)
        assert _digest(tmp_path / "a" / name) != _digest(tmp_path / "c" / name)
    a = {f.id: f for f in load_split(tmp_path / "a", "train")}
    b = {f.id: f for f in load_split(tmp_path / "b", "train")}
    for i in a:
        assert a[i].boxes == b[i].boxes and a[i].segmentations == b[i].segmentations
    # the val split is not a copy of train
    assert _digest(tmp_path / "a/images/val/000000.png") != _digest(tmp_path / "a/images/train/000000.png")


def test_labels_are_exact_masks_with_tight_boxes(tmp_path):
    config = SynthConfig(height=192, width=240, min_extent=12.0, empty_fraction=0.1)
    generate_dataset(tmp_path, {"train": 30}, seed=1, config=config)
    frames = load_split(tmp_path, "train")
    assert len(frames) == 30
    labelled = [f for f in frames if not f.is_empty]
    assert len(labelled) >= 25
    extents = []
    for f in labelled:
        assert len(f.boxes) == 1 and f.width == 240 and f.height == 192
        mask = f.mask() > 0
        x, y, w, h = (int(v) for v in f.boxes[0])
        assert f.boxes[0] == (float(x), float(y), float(w), float(h))
        inside = np.zeros_like(mask)
        inside[y:y + h, x:x + w] = True
        assert not (mask & ~inside).any(), f"frame {f.id}: mask outside its box"
        # tight: the mask touches all four sides of the box
        assert mask[y, x:x + w].any() and mask[y + h - 1, x:x + w].any()
        assert mask[y:y + h, x].any() and mask[y:y + h, x + w - 1].any()
        assert decode_segmentation(f.segmentations[0], 192, 240).sum() == mask.sum()
        extents.append(max(w, h))
        img = f.image()
        assert img.dtype == np.uint8 and img.shape == (192, 240)
    # sizes span small to large: within the configured range (geometry vs pixel rounding: a few px)
    assert min(extents) >= 0.5 * config.min_extent
    assert max(extents) <= config.max_extent_frac * 192 + 4
    assert max(extents) > 3 * min(extents)


def test_masked_pixels_stand_out_from_their_surroundings():
    """The mask marks what was drawn: its pixels differ from the ring of background around it."""
    contrast = []
    for i in range(8):
        img, mask, info = generate_frame(SMALL, 3, "train", i)
        if info["empty"]:
            assert not mask.any()
            continue
        ring = cv2.dilate(mask, np.ones((9, 9), np.uint8)) > 0
        ring &= cv2.dilate(mask, np.ones((3, 3), np.uint8)) == 0
        contrast.append(abs(float(img[mask > 0].mean()) - float(img[ring].mean())))
    assert contrast, "no labelled frame among the first eight"
    assert np.mean(contrast) > 5.0


@pytest.mark.parametrize("fraction, n", [(0.0, 20), (0.1, 50), (0.25, 41), (1.0, 7)])
def test_empty_share_is_exact_to_one_frame(fraction, n):
    empties = [is_empty_frame(0, "train", i, fraction) for i in range(n)]
    assert abs(sum(empties) - fraction * n) <= 1.0
    # and it holds for every prefix (independent of how many frames are generated)
    for k in (n // 3, n // 2):
        assert abs(sum(empties[:k]) - fraction * k) <= 1.0


def test_empty_frames_have_no_annotation(tmp_path):
    config = SynthConfig(height=96, width=120, min_extent=12.0, empty_fraction=0.5)
    generate_dataset(tmp_path, {"test": 10}, seed=2, config=config)
    frames = load_split(tmp_path, "test")
    assert sum(f.is_empty for f in frames) == 5
    for f in frames:
        if f.is_empty:
            assert not f.mask().any()


def test_backgrounds_directory_is_used(tmp_path):
    """Frames drawn over a dark user image are darker than the same frames over a bright one
    (same seed and index: the same random choices, clouds included), and neither is the
    procedural scene. With ``real_share`` 1 every frame is drawn over the user's images."""
    dirs = {}
    for name, level in (("dark", 15), ("bright", 235)):
        dirs[name] = tmp_path / name
        dirs[name].mkdir()
        cv2.imwrite(str(dirs[name] / "bg.png"), np.full((300, 300), level, np.uint8))
    common = dict(height=96, width=120, min_extent=12.0, empty_fraction=1.0, hard_negatives=0.0)
    for i in range(6):
        dark, _, info = generate_frame(SynthConfig(backgrounds=str(dirs["dark"]), real_share=1.0, **common),
                                       0, "train", i)
        bright, _, _ = generate_frame(SynthConfig(backgrounds=str(dirs["bright"]), real_share=1.0, **common),
                                      0, "train", i)
        procedural, _, proc_info = generate_frame(SynthConfig(real_share=0.0, **common), 0, "train", i)
        assert info["background"] == "files" and proc_info["background"] not in ("files", "real")
        diff = bright.astype(np.int16) - dark.astype(np.int16)
        assert diff.mean() > 20, f"frame {i}"  # the ground shows through (clouds cover some of it)
        assert (diff < -10).mean() < 0.01, f"frame {i}"  # and hardly anywhere darker (shot noise grows with level)
        assert not np.array_equal(procedural, dark)
    (tmp_path / "bg2").mkdir()
    with pytest.raises(FileNotFoundError, match="has no images"):
        generate_dataset(tmp_path / "o", {"train": 1}, config=SynthConfig(backgrounds=str(tmp_path / "bg2")))


def test_sixteen_bit_frames(tmp_path):
    config = SynthConfig(height=64, width=80, min_extent=12.0, bit_depth=16, empty_fraction=0.0)
    generate_dataset(tmp_path, {"train": 2}, seed=0, config=config)
    img = load_split(tmp_path, "train")[0].image()
    assert img.dtype == np.uint16 and img.max() > 255


@pytest.mark.parametrize(
    "kwargs, expected",
    [
        (dict(height=16), "at least 32 x 32"),
        (dict(empty_fraction=1.5), "empty fraction"),
        (dict(min_extent=1000.0), "min extent"),
        (dict(bit_depth=12), "bit depth"),
        (dict(style="c"), "style"),
        (dict(hard_negatives=1.5), "hard-negative"),
        (dict(style="b", backgrounds="somewhere"), "style a only"),
        (dict(style="r", backgrounds="somewhere"), "held-out band"),
        (dict(real_share=1.5), "real share"),
    ],
)
def test_bad_config_is_rejected(kwargs, expected):
    with pytest.raises(ValueError, match=expected):
        SynthConfig(**kwargs).validate()


def test_default_size_frames():
    """Full 512 x 641 frames of every style (their speed is printed by `satsam-train synth`)."""
    for style in ("a", "b", "r"):
        img, mask, info = generate_frame(SynthConfig(style=style), 0, "train", 1)
        assert img.shape == (512, 641) and mask.shape == (512, 641) and img.dtype == np.uint8
        assert info["empty"] == (not mask.any())
