"""ROI tracking logic, with a transparent stand-in model so every decision is visible.

The stand-in's logits are the patch's own brightness (the synthetic satellite is the
only bright thing), so a full scan finds it exactly and an ROI frame finds it exactly
when, and only when, it lies inside the patches the tracker chose.
"""

import math

import cv2
import numpy as np
import pytest

from satsam_ros.core.backend import Backend
from satsam_ros.core.detector import Detector, DetectorConfig
from satsam_ros.core.postprocess import mask_iou
from satsam_ros.core.roi import RoiTracker, patches_for_region, union_box
from satsam_ros.core.synthetic import moving_sequence, synthetic_frame


class SeeingBackend(Backend):
    """Brightness in, logits out; records how many patches each call got."""

    name = "seeing"

    def __init__(self, size=256):
        self.input_size = size
        self.low_res_size = size
        self.calls = []

    def infer(self, batch):
        self.check_batch(batch)
        self.calls.append(batch.shape[0])
        return (batch[:, 0] - 1.0) * 20.0  # normalised red > 1.3 on the satellite


def make(size=1024, **kw):
    backend = SeeingBackend()
    det = Detector(backend, DetectorConfig(size=size, threshold=0.5))
    return backend, det, RoiTracker(det, **kw)


def expected_patches(det, truth, margin):
    """Patches touching the truth's bounding box grown by margin, computed independently."""
    ys, xs = np.nonzero(truth)
    h, w = truth.shape
    s, p = det.config.size, det.config.patch_size
    x0, x1 = (xs.min() - margin) * s / w, (xs.max() + 1 + margin) * s / w
    y0, y1 = (ys.min() - margin) * s / h, (ys.max() + 1 + margin) * s / h
    out = []
    for i, (py, px) in enumerate(det.grid.origins):
        if px < x1 and px + p > x0 and py < y1 and py + p > y0:
            out.append(i)
    return out


@pytest.fixture(scope="module")
def sequence():
    return moving_sequence(8, seed=3, speed=5.0)


def test_first_frame_is_a_full_scan_then_only_the_roi_runs(sequence):
    backend, det, tracker = make(margin=40, full_scan_every=10)
    (f0, t0), (f1, t1) = sequence[0], sequence[1]
    r0 = tracker.detect(f0)
    assert tracker.last_scan == "full" and sum(backend.calls) == 16 and r0.patches == 16
    assert mask_iou(r0.mask, t0) > 0.85
    backend.calls.clear()
    r1 = tracker.detect(f1)
    assert tracker.last_scan == "roi"
    want = expected_patches(det, t0, 40)  # the region comes from the previous frame
    assert tracker.last_patches == want and sum(backend.calls) == len(want) < 16 and r1.patches == len(want)
    # same answer as a full scan (the satellite is inside the ROI) ...
    full = det.detect(f1)
    assert np.array_equal(r1.mask, full.mask) and mask_iou(r1.mask, t1) > 0.85
    # ... and exactly zero outside the chosen patches
    h, w = f1.shape
    covered = np.zeros((det.config.size,) * 2, np.uint8)
    p = det.config.patch_size
    for i in want:
        y, x = det.grid.origins[i]
        covered[y:y + p, x:x + p] = 1
    inside = cv2.resize(covered, (w, h), interpolation=cv2.INTER_NEAREST) > 0
    assert not inside.all()
    assert (r1.probability[~inside] == 0.0).all() and (r1.mask[~inside] == 0).all()


def test_full_scan_every_n_frames(sequence):
    _, _, tracker = make(margin=40, full_scan_every=3)
    kinds = []
    for frame, _ in sequence[:7]:
        tracker.detect(frame)
        kinds.append(tracker.last_scan)
    assert kinds == ["full", "roi", "roi", "full", "roi", "roi", "full"]
    assert tracker.stats["full"] == 3 and tracker.stats["roi"] == 4 and tracker.stats["frames"] == 7
    _, _, always = make(full_scan_every=1)
    for frame, _ in sequence[:3]:
        always.detect(frame)
        assert always.last_scan == "full"


def jumped_frame(base, dx, dy):
    """base frame with its satellite cut out and pasted (dx, dy) pixels away."""
    frame, truth = base
    out = synthetic_frame(3, with_satellite=False)[0]
    moved = np.roll(np.roll(truth, dy, axis=0), dx, axis=1)
    out[moved > 0] = frame[truth > 0].mean()
    return out, moved


def test_lost_target_is_rescanned_in_the_same_frame(sequence):
    backend, det, tracker = make(margin=16, full_scan_every=10)
    frame, truth = synthetic_frame(3)
    tracker.detect(frame)
    ys, xs = np.nonzero(truth)
    dx = 300 if xs.mean() < 320 else -300
    dy = 200 if ys.mean() < 256 else -200
    far, far_truth = jumped_frame((frame, truth), dx, dy)
    backend.calls.clear()
    res = tracker.detect(far)
    assert tracker.last_scan == "rescan"
    assert backend.calls[-1] == 16 and sum(backend.calls) > 16  # the ROI pass, then the full one
    assert mask_iou(res.mask, far_truth) > 0.85
    assert set(res.timings) == {"pre", "model", "post", "total"}
    # without rescans the frame comes back empty and the next frame is a full scan
    _, _, lazy = make(margin=16, rescan_on_loss=False)
    lazy.detect(frame)
    res = lazy.detect(far)
    assert lazy.last_scan == "roi" and not res.boxes and lazy.region is None
    lazy.detect(far)
    assert lazy.last_scan == "full"


def test_empty_frames_keep_searching_and_size_change_rescans(sequence):
    _, _, tracker = make()
    empty = synthetic_frame(4, with_satellite=False)[0]
    for _ in range(2):
        res = tracker.detect(empty)
        assert tracker.last_scan == "full" and not res.boxes
    tracker.detect(sequence[0][0])
    tracker.detect(sequence[1][0])
    assert tracker.last_scan == "roi"
    bigger = cv2.resize(sequence[2][0], (800, 640))
    tracker.detect(bigger)
    assert tracker.last_scan == "full"
    tracker.reset()
    tracker.detect(sequence[3][0])
    assert tracker.last_scan == "full" and tracker.stats["frames"] == 1


def test_region_maps_through_the_frame_resize():
    _, det, _ = make(size=2048)
    # a 10 x 10 box in the top-left corner of a 512 x 641 frame, no margin: patch 0 only
    assert patches_for_region(det, (5, 5, 15, 15), (512, 641), 0) == [0]
    # the bottom-right corner: the last patch only
    assert patches_for_region(det, (630, 500, 641, 512), (512, 641), 0) == [len(det.grid) - 1]
    # a margin reaching across a patch border in x adds the right neighbour
    x_border = math.ceil(256 * 641 / 2048)  # first input column in patch column 1
    assert patches_for_region(det, (x_border - 12, 5, x_border - 2, 15), (512, 641), 4) == [0, 1]
    assert union_box([]) is None


def test_bad_settings_and_bad_patch_indices():
    _, det, _ = make()
    with pytest.raises(ValueError, match="margin must be >= 0"):
        RoiTracker(det, margin=-1)
    with pytest.raises(ValueError, match="full_scan_every must be >= 1"):
        RoiTracker(det, full_scan_every=0)
    frame = synthetic_frame(1)[0]
    with pytest.raises(ValueError, match=r"only_patches must be indices in \[0, 16\)"):
        det.detect(frame, only_patches=[3, 16])
    backend = det.backend
    backend.calls.clear()
    res = det.detect(frame, only_patches=[])
    assert backend.calls == [] and res.patches == 0
    assert (res.probability == 0.0).all() and not res.mask.any() and not res.boxes
