"""Pseudo-labelling: the selection rule, GrabCut vs box-fill, SAM frame geometry."""

from __future__ import annotations

import numpy as np
import pytest
from satsam_training.pseudo import (
    SamGeometry,
    SelectionRule,
    box_iou_xywh,
    boxfill_mask,
    candidate_scores,
    grabcut_mask,
    grid_points,
    pseudo_label_dataset,
    select_candidate,
)
from satsam_training.synth import SynthConfig, generate_frame

from satsam_ros.core.postprocess import mask_iou

H, W = 100, 120
BOX = (20.0, 30.0, 60.0, 40.0)  # x, y, w, h -> columns 20..79, rows 30..69


def _rect(x0, y0, x1, y1):
    m = np.zeros((H, W), bool)
    m[y0:y1, x0:x1] = True
    return m


def test_box_iou():
    assert box_iou_xywh(BOX, BOX) == 1.0
    assert box_iou_xywh((0, 0, 10, 10), (5, 0, 10, 10)) == pytest.approx(50 / 150)
    assert box_iou_xywh((0, 0, 10, 10), (20, 20, 5, 5)) == 0.0


def test_scores_of_constructed_candidates():
    exact = _rect(20, 30, 80, 70)
    half = _rect(20, 30, 50, 70)  # left half of the box: box IoU 0.5
    spill = _rect(0, 0, 80, 70)  # covers the box and much more
    cands = np.stack([exact, half, spill, np.zeros((H, W), bool)])
    area, inside, ious = candidate_scores(cands, BOX, margin=0.0)
    assert area.tolist() == [2400, 1200, 5600, 0]
    assert inside[:2].tolist() == [1.0, 1.0]
    assert inside[2] == pytest.approx(2400 / 5600)
    # the margin grows the box: rows 28..71 and columns 18..79 of the spill count as inside
    assert candidate_scores(cands, BOX, margin=2.0)[1][2] == pytest.approx(42 * 62 / 5600)
    assert ious[0] == 1.0 and ious[1] == pytest.approx(0.5) and ious[3] == 0.0


def test_rule_picks_the_inside_candidate_whose_box_matches_best():
    body = _rect(40, 40, 60, 60)  # the bus only: inside, box IoU 400/2400
    sat = _rect(20, 30, 80, 70) & ~_rect(20, 30, 30, 40)  # whole satellite, a corner missing: IoU 1
    spill = _rect(15, 25, 85, 75)  # a bit larger than the box: only 2400/4900 inside
    frame_seg = np.ones((H, W), bool)  # the whole frame (a background segment)
    cands = np.stack([body, frame_seg, sat, spill])
    sel = select_candidate(cands, BOX)
    assert sel.index == 2 and sel.box_iou == 1.0 and sel.inside == 1.0
    # without the satellite, the bus alone is too poor a match: no match
    sel = select_candidate(cands[[0, 1, 3]], BOX)
    assert sel.index is None
    # lowering the bar lets the bus through
    assert select_candidate(cands[[0, 1, 3]], BOX, SelectionRule(min_box_iou=0.1)).index == 0
    # a candidate that spills over is accepted once the inside requirement allows it
    assert select_candidate(spill[None], BOX, SelectionRule(min_inside=0.4)).index == 0
    assert select_candidate(np.zeros((0, H, W), bool), BOX).index is None


def test_rule_ties_go_to_the_larger_mask_then_the_earlier():
    outline = _rect(20, 30, 80, 70) & ~_rect(22, 32, 78, 68)  # same box as the filled one, smaller area
    filled = _rect(20, 30, 80, 70)
    assert select_candidate(np.stack([outline, filled]), BOX).index == 1
    assert select_candidate(np.stack([filled, filled]), BOX).index == 0


def test_margin_tolerates_a_slightly_tight_label():
    over = _rect(18, 28, 82, 72)  # 2 px beyond the box on every side
    assert select_candidate(over[None], BOX).index == 0  # margin 2 (default)
    strict = SelectionRule(margin=0.0)
    assert select_candidate(over[None], BOX, strict).index is None


def test_boxfill_fills_the_box():
    m = boxfill_mask(H, W, BOX)
    assert m.dtype == np.uint8 and m.max() == 255
    assert np.array_equal(m > 0, _rect(20, 30, 80, 70))


def test_grabcut_beats_box_fill_on_synthetic_frames():
    # the procedural backgrounds this was measured on (real_share 0: the generator before
    # real Earth backgrounds joined it; over real terrain GrabCut's colour model separates less)
    config = SynthConfig(height=192, width=240, min_extent=40.0, empty_fraction=0.0, real_share=0.0)
    gc, fill = [], []
    for i in range(8):
        img, mask, _ = generate_frame(config, 11, "train", i)
        ys, xs = np.nonzero(mask)
        box = (float(xs.min()), float(ys.min()), float(np.ptp(xs) + 1), float(np.ptp(ys) + 1))
        gc.append(mask_iou(grabcut_mask(img, box), mask))
        fill.append(mask_iou(boxfill_mask(192, 240, box), mask))
    assert np.mean(gc) > np.mean(fill) + 0.15, (np.mean(gc), np.mean(fill))
    # and the mask never leaves the labelled box (grown by 1 px)
    m = grabcut_mask(img, box)
    x, y, w, h = (int(v) for v in box)
    outside = np.ones_like(m, bool)
    outside[max(0, y - 1):y + h + 1, max(0, x - 1):x + w + 1] = False
    assert not (m[outside] > 0).any()


def test_grid_points_cover_the_rectangle():
    pts = grid_points(4, 10, 20, 40, 80)
    assert pts.shape == (16, 2)
    assert pts[:, 0].min() == 15 and pts[:, 0].max() == 45
    assert pts[:, 1].min() == 30 and pts[:, 1].max() == 90


@pytest.fixture(scope="module")
def tiny_prompter():
    from satsam_training.pseudo import SamPrompter

    return SamPrompter("tiny")


def test_sam_input_is_resized_long_side_first_and_padded(tiny_prompter):
    from satsam_ros.core.imaging import normalize

    img = np.full((96, 128), 200, np.uint8)
    pixels, geom = tiny_prompter.prepare(img)
    e = tiny_prompter.size
    assert geom == SamGeometry(96, 128, 192, 256, e, e / 128)
    assert tuple(pixels.shape) == (1, 3, e, e)
    p = pixels[0].numpy()
    expected = normalize(np.full((1, 1, 3), 200.0, np.float32))[0, 0]
    assert np.allclose(p[:, :192, :].reshape(3, -1).T, expected, atol=1e-5)
    assert np.all(p[:, 192:, :] == 0)  # padding below the resized frame


def test_low_res_logits_map_back_onto_the_frame(tiny_prompter):
    """A rectangle drawn in SAM's padded input space comes back where it is in the frame."""
    import cv2
    import torch

    geom = SamGeometry(96, 128, 192, 256, 256, 2.0)
    truth = np.zeros((96, 128), np.uint8)
    truth[20:60, 30:90] = 1
    big = np.full((256, 256), -10.0, np.float32)
    big[40:120, 60:180] = 10.0  # the same rectangle at scale 2 in the padded input
    low = cv2.resize(big, (64, 64), interpolation=cv2.INTER_AREA)
    masks = tiny_prompter.to_frame(torch.from_numpy(low)[None], geom)
    assert masks.shape == (1, 96, 128)
    assert mask_iou(masks[0].astype(np.uint8), truth) > 0.95


def test_pseudo_label_argument_errors(tmp_path):
    with pytest.raises(ValueError, match="method 'auto' needs at least one SAM checkpoint"):
        pseudo_label_dataset(tmp_path, tmp_path / "o", method="auto")
    with pytest.raises(ValueError, match="uses no SAM checkpoint"):
        pseudo_label_dataset(tmp_path, tmp_path / "o", method="grabcut", checkpoints=["tiny"])
    with pytest.raises(ValueError, match="method must be one of"):
        pseudo_label_dataset(tmp_path, tmp_path / "o", method="magic")
    with pytest.raises(FileNotFoundError, match="no train.json"):
        pseudo_label_dataset(tmp_path, tmp_path / "o", method="grabcut")
    with pytest.raises(ValueError, match="min_box_iou"):
        pseudo_label_dataset(tmp_path, tmp_path / "o", method="grabcut", rule=SelectionRule(min_box_iou=2))
