"""The two generators: style a spans what it promises (domain randomisation, hard
negatives), style b is independent of it and labels its frames as exactly."""

from __future__ import annotations

import ast
import hashlib
import json
from collections import Counter
from pathlib import Path

import cv2
import numpy as np
import pytest
from satsam_training.coco import load_split
from satsam_training.synth import SynthConfig, generate_dataset, generate_frame, satellites, scenes

SYNTH_DIR = Path(__file__).resolve().parents[1] / "satsam_training" / "synth"


def _infos(config: SynthConfig, n: int, seed: int = 3) -> list:
    return [generate_frame(config, seed, "train", i)[2] for i in range(n)]


def test_style_a_spans_its_families_scales_and_polarities():
    config = SynthConfig(height=160, width=200, min_extent=8.0, empty_fraction=0.2)
    infos = _infos(config, 400)
    full = [i for i in infos if not i["empty"]]
    assert set(scenes.FAMILIES) <= {i["background"] for i in infos}
    assert set(satellites.FAMILIES) == {i["family"] for i in full}
    assert set(satellites.DETAILS) == {i["detail"] for i in full}
    assert {"bright", "dark", "natural", "faint"} == {i["polarity"] for i in full}
    extents = [i["extent"] for i in full]
    assert min(extents) < 12 and max(extents) > 0.6 * 160
    # hard negatives: empty, and crowded with distractors of several kinds
    hard = [i for i in infos if i["hard_negative"]]
    assert len(hard) >= 0.4 * sum(i["empty"] for i in infos)
    assert all(i["empty"] and len(i["distractors"]) >= 4 for i in hard)
    assert len(Counter(k for i in hard for k in i["distractors"])) == len(scenes.DISTRACTORS)


def test_style_a_satellites_are_bright_or_dark_against_their_surroundings():
    """Both polarities really occur in the pixels: the mask is brighter than the ring
    around it in some frames and darker in others."""
    config = SynthConfig(height=160, width=200, min_extent=24.0, empty_fraction=0.0)
    signs = Counter()
    for i in range(40):
        img, mask, info = generate_frame(config, 11, "train", i)
        if not mask.any():
            continue
        ring = (cv2.dilate(mask, np.ones((9, 9), np.uint8)) > 0) & (cv2.dilate(mask, np.ones((3, 3), np.uint8)) == 0)
        diff = float(img[mask > 0].mean()) - float(img[ring].mean())
        if info["polarity"] in ("bright", "dark") and abs(diff) > 8:
            signs[(info["polarity"], diff > 0)] += 1
    assert signs[("bright", True)] >= 5 and signs[("dark", False)] >= 3
    assert signs[("bright", False)] + signs[("dark", True)] <= 0.2 * sum(signs.values())


def test_style_b_shares_no_code_with_style_a():
    """style_b imports nothing from style a's modules (only the shared empty-frame rule in split)."""
    tree = ast.parse((SYNTH_DIR / "style_b.py").read_text())
    local = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.level > 0:
            local.add((node.module or "", tuple(a.name for a in node.names)))
    assert local == {("split", ("is_empty_frame",))}, local
    for name in ("noise", "scenes", "satellites", "camera"):
        assert f"from .{name}" not in (SYNTH_DIR / "style_b.py").read_text()


def test_style_b_frames_are_labelled_exactly_and_differ_from_style_a(tmp_path):
    config = SynthConfig(style="b", height=192, width=240, min_extent=10.0, empty_fraction=0.2)
    generate_dataset(tmp_path, {"val": 25}, seed=4, config=config)
    frames = load_split(tmp_path, "val")
    assert sum(f.is_empty for f in frames) in (5, 6)  # the shared low-discrepancy rule (+1 if a satellite fell out)
    for f in frames:
        img = f.image()
        assert img.dtype == np.uint8 and img.shape == (192, 240)
        if f.is_empty:
            continue
        mask = f.mask() > 0
        x, y, w, h = (int(v) for v in f.boxes[0])
        assert mask[y:y + h, x:x + w].sum() == mask.sum()
        assert mask[y, x:x + w].any() and mask[y + h - 1, x:x + w].any()
    a_img = generate_frame(SynthConfig(height=192, width=240, min_extent=10.0), 4, "val", 0)[0]
    assert not np.array_equal(a_img, frames[0].image())
    lines = [json.loads(line) for line in (tmp_path / "val.frames.jsonl").read_text().splitlines()]
    assert [line["id"] for line in lines] == [f.id for f in frames]
    assert all(line["empty"] == f.is_empty for line, f in zip(lines, frames))


def test_style_b_satellites_stand_out():
    """Style b makes its targets visible (a camera exposing for them): the satellite's mean
    differs from the ring around it by several grey levels."""
    config = SynthConfig(style="b", height=192, width=240, min_extent=16.0, empty_fraction=0.0)
    diffs = []
    for i in range(20):
        img, mask, info = generate_frame(config, 9, "test", i)
        if info["empty"]:
            continue
        ring = (cv2.dilate(mask, np.ones((9, 9), np.uint8)) > 0) & (cv2.dilate(mask, np.ones((3, 3), np.uint8)) == 0)
        diffs.append(abs(float(img[mask > 0].mean()) - float(img[ring].mean())))
    assert len(diffs) >= 15
    assert np.median(diffs) > 10


@pytest.mark.parametrize("style", ["a", "b"])
def test_workers_write_the_same_frames(tmp_path, style):
    config = SynthConfig(style=style, height=96, width=120, min_extent=10.0)
    generate_dataset(tmp_path / "one", {"test": 6}, seed=2, config=config, workers=1)
    generate_dataset(tmp_path / "two", {"test": 6}, seed=2, config=config, workers=2)
    for i in range(6):
        name = f"images/test/{i:06d}.png"
        assert hashlib.sha256((tmp_path / "one" / name).read_bytes()).digest() == \
            hashlib.sha256((tmp_path / "two" / name).read_bytes()).digest()
    assert (tmp_path / "one/test.json").read_text() != ""
    one = {f.id: f.segmentations for f in load_split(tmp_path / "one", "test")}
    two = {f.id: f.segmentations for f in load_split(tmp_path / "two", "test")}
    assert one == two
    with pytest.raises(ValueError, match="workers"):
        generate_dataset(tmp_path / "bad", {"test": 1}, config=config, workers=0)
