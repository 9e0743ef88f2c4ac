"""The coarse-to-fine cascade (issue 22) and the one patch-selection mechanism.

A transparent stand-in model (logits from the patch's own brightness, as in
test_roi.py) that records every patch it is given, so each test can say exactly which
patches of which grid ran.
"""

import cv2
import numpy as np
import pytest

from satsam_ros.core import preprocess, selection
from satsam_ros.core.backend import Backend
from satsam_ros.core.detector import (
    CASCADE_CAPPED,
    CASCADE_REFINED,
    CASCADE_STOPPED,
    Detector,
    DetectorConfig,
    parse_cascade,
)
from satsam_ros.core.imaging import to_sam_planes
from satsam_ros.core.meta import SatsamMeta
from satsam_ros.core.postprocess import mask_iou
from satsam_ros.core.roi import RoiTracker
from satsam_ros.core.synthetic import moving_sequence, synthetic_frame
from satsam_ros.core.tiling import PatchGrid


class SeeingBackend(Backend):
    """Brightness in, logits out (the synthetic satellite is the only bright thing);
    keeps a copy of every patch it ran. ``presence``: also an object score per patch,
    +4 where the patch holds anything brighter than the terrain's ceiling, else -4."""

    name, device, input_size, low_res_size = "seeing", "cpu", 256, 64

    def __init__(self, presence: bool = False):
        self.has_presence = presence
        self.seen = []

    def infer(self, batch):
        return self.infer_scored(batch)[0]

    def infer_scored(self, batch):
        self.check_batch(batch)
        self.seen.extend(np.array(p) for p in batch)
        red = batch[:, 0]
        small = np.stack([cv2.resize(p, (64, 64), interpolation=cv2.INTER_AREA) for p in red])
        logits = ((small - 1.0) * 20.0).astype(np.float32)
        if not self.has_presence:
            return logits, None
        return logits, np.where(red.reshape(len(red), -1).max(axis=1) > 0.3, 4.0, -4.0).astype(np.float32)


def ran(backend, grid, frame):
    """Indices of ``grid``'s patches of ``frame`` that the backend ran (each patch's
    pixels are unique on these frames), in the order they ran."""
    every = preprocess.grid_patches(to_sam_planes(frame), grid)
    out = []
    for patch in backend.seen:
        hits = [i for i in range(len(every)) if np.array_equal(every[i], patch)]
        out.extend(hits[:1])
    return out


def make(size, cascade=512, margin=None, meta=None, presence=False, cap=None):
    backend = SeeingBackend(presence)
    cfg = DetectorConfig(size=size, threshold=0.5, cascade=cascade, cascade_margin=margin, cascade_max_patches=cap)
    return backend, Detector(backend, cfg, meta)


@pytest.fixture(scope="module")
def with_satellite():
    return synthetic_frame(3)


@pytest.fixture(scope="module")
def empty_frame():
    return synthetic_frame(4, with_satellite=False)[0]


# ---- the one selection mechanism ---------------------------------------------------------


def test_regions_select_the_patches_they_overlap_scaled_to_the_grid():
    grid = PatchGrid(1024)  # 4 x 4 patches of 256 in the 1024 x 1024 resize of a 512 x 641 frame
    shape = (512, 641)
    # x 300..310 of 641 -> 479..495 of 1024 (patch column 1); y 10..20 of 512 -> 20..40 (row 0)
    assert selection.select_patches(grid, [(300, 10, 310, 20)], shape) == [1]
    # a margin of 40 input pixels: x 260..350 -> 415..559 (columns 1, 2), y 0..60 -> 0..120 (row 0)
    assert selection.select_patches(grid, [(300, 10, 310, 20)], shape, margin=40) == [1, 2]
    # 150: x 150..460 -> 240..735 (columns 0..2), y -140..170 -> up to 340 (rows 0, 1)
    assert selection.select_patches(grid, [(300, 10, 310, 20)], shape, margin=150) == [0, 1, 2, 4, 5, 6]
    # a region ending exactly on a patch edge does not touch the next patch: 641 * 256 / 1024 = 160.25
    assert selection.select_patches(grid, [(0, 0, 160.25, 128)], shape) == [0]
    assert selection.select_patches(grid, [(0, 0, 160.3, 128)], shape) == [0, 1]
    # several regions: the union; none: nothing
    assert selection.select_patches(grid, [(0, 0, 10, 10), (630, 500, 641, 512)], shape) == [0, 15]
    assert selection.select_patches(grid, [], shape) == []
    with pytest.raises(ValueError, match="margin"):
        selection.select_patches(grid, [(0, 0, 1, 1)], shape, margin=-1)


@pytest.mark.parametrize("shape", [(512, 641), (480, 640), (1000, 333)])
def test_a_coarse_patch_covers_exactly_the_fine_patches_under_it(shape):
    coarse, fine = PatchGrid(512), PatchGrid(2048)
    for i, (y, x) in enumerate(coarse.origins):
        under = selection.select_patches(fine, selection.patch_regions(coarse, [i], shape), shape)
        expect = [j for j, (fy, fx) in enumerate(fine.origins) if y * 4 <= fy < (y + 256) * 4 and
                  x * 4 <= fx < (x + 256) * 4]
        assert under == expect and len(under) == 16, (shape, i)
    # one input pixel of margin reaches the neighbours
    assert len(selection.select_patches(fine, selection.patch_regions(coarse, [0], shape), shape, margin=1)) == 25


def test_roi_tracking_and_the_cascade_share_the_selection_function(monkeypatch):
    calls = []
    real = selection.select_patches

    def spy(grid, regions, frame_shape, margin=0.0):
        calls.append(grid.size)
        return real(grid, regions, frame_shape, margin)

    monkeypatch.setattr(selection, "select_patches", spy)
    seq = moving_sequence(3, seed=3, speed=5.0)
    _, det = make(1024, cascade=0)
    tracker = RoiTracker(det, margin=40)
    tracker.detect(seq[0][0])
    tracker.detect(seq[1][0])
    assert tracker.last_scan == "roi" and calls == [1024]  # the ROI frame chose its patches through it
    _, cas = make(2048)
    cas.detect(seq[2][0])
    assert calls == [1024, 2048]  # and so did the cascade


# ---- the cascade ---------------------------------------------------------------------------


@pytest.mark.parametrize("size", [1024, 2048])
def test_an_empty_coarse_frame_costs_the_coarse_pass_only(empty_frame, size):
    backend, det = make(size)
    res = det.detect(empty_frame)
    assert len(backend.seen) == 4 and ran(backend, PatchGrid(512), empty_frame) == [0, 1, 2, 3]
    assert (res.cascade, res.patches, res.coarse_patches, res.patches_run) == (CASCADE_STOPPED, 0, 4, 4)
    assert not res.boxes and not res.mask.any() and not res.probability.any()
    assert res.mask.shape == res.probability.shape == empty_frame.shape
    assert res.to_dict()["cascade"] == "stopped" and res.to_dict()["coarse_patches"] == 4
    assert set(res.timings) == {"pre", "model", "post", "total"}
    assert abs(sum(res.timings[k] for k in ("pre", "model", "post")) - res.timings["total"]) < 1e-9
    # full tiling (cascade off) runs every patch of the grid
    backend, full = make(size, cascade=0)
    res = full.detect(empty_frame)
    assert len(backend.seen) == (size // 256) ** 2 and res.cascade is None and res.coarse_patches == 0


@pytest.mark.parametrize("size,margin", [(1024, 0), (2048, 0), (2048, 48)])
def test_the_cascade_equals_full_tiling_on_the_patches_it_selects(with_satellite, size, margin):
    frame, truth = with_satellite
    backend, det = make(size, margin=margin)
    res = det.detect(frame)
    # the coarse pass: the 512 grid as a Detector of that size would publish it
    coarse_backend, at_512 = make(512, cascade=0)
    coarse = at_512.detect(frame)
    assert len(coarse.boxes) >= 1
    want = selection.select_patches(det.grid, selection.box_regions(coarse.boxes), frame.shape, margin)
    grid = det.grid
    assert ran(backend, PatchGrid(512), frame)[:4] == [0, 1, 2, 3]  # the coarse patches first
    assert ran(backend, grid, frame) == want and 0 < len(want) < len(grid)  # then exactly the chosen ones
    assert (res.cascade, res.patches, res.coarse_patches) == (CASCADE_REFINED, len(want), 4)
    # the same function as full tiling with the unselected patches skipped ...
    _, full = make(size, cascade=0)
    only = full.detect(frame, only_patches=want)
    assert np.array_equal(res.mask, only.mask) and np.array_equal(res.probability, only.probability)
    assert [b.to_dict() for b in res.boxes] == [b.to_dict() for b in only.boxes]
    # ... which here finds the satellite as the full grid does
    everything = full.detect(frame)
    assert np.array_equal(res.mask, everything.mask) and mask_iou(res.mask, truth) > 0.8
    assert det.describe_cascade() == f"512 first, margin {margin} px"


def test_the_coarse_patches_scored_present_choose_the_fine_patches_under_them():
    """A dim blob the mask does not show but the presence head sees: with a presence gate
    at the coarse size, the S patches under that coarse patch run."""
    yy, xx = np.mgrid[0:512, 0:512]
    frame = (40 + (yy * 7 + xx * 3) % 17).astype(np.uint8)  # dark terrain, every patch unique
    frame[400:420, 300:330] = 160  # coarse patch 3 (y >= 256, x >= 256): present, below the mask threshold
    meta = SatsamMeta(encoder_input_size=256, postprocess={"512": {"min_object_score": 0.5, "threshold": 0.5}})
    backend, det = make(1024, margin=0, meta=meta, presence=True)
    res = det.detect(frame)
    assert ran(backend, det.grid, frame) == [10, 11, 14, 15]  # the fine patches under coarse patch 3
    assert res.cascade == CASCADE_REFINED and res.patches == 4 and not res.boxes
    # without the gate at the coarse size the patches it scores are no proposals: nothing runs
    backend, det = make(1024, margin=0, presence=True)
    assert det.detect(frame).cascade == CASCADE_STOPPED and len(backend.seen) == 4


def test_only_patches_bypass_the_cascade_and_run_patches_can_run_the_full_grid(with_satellite):
    frame, _ = with_satellite
    backend, det = make(2048)
    res = det.detect(frame, only_patches=[0, 63])
    assert res.cascade is None and res.coarse_patches == 0 and len(backend.seen) == 2
    backend.seen.clear()
    raw = det.run_patches(frame, cascade=False)
    assert raw.patches == 64 and raw.chosen is None and raw.coarse is None and len(backend.seen) == 64
    # a cascade chosen from the full grid's output (the tuner's way) equals the real one
    coarse = det.coarse_pass(frame)
    picked = raw.select(det.cascade_select(coarse, frame.shape), coarse)
    real = det.run_patches(frame)
    assert picked.chosen == real.chosen and np.allclose(picked.logits, real.logits, atol=1e-5)
    assert np.array_equal(det.probability(picked)[0] > 0.5, det.probability(real)[0] > 0.5)


# ---- configuration ---------------------------------------------------------------------------


def test_the_cascade_setting_as_written():
    assert [parse_cascade(v) for v in ("auto", None, -1, "off", "0", 0, "on", True, False, "512", "1024", 1024)] == \
        [None, None, None, 0, 0, 0, 512, 512, 0, 512, 1024, 1024]
    for bad in ("256", "2048", "yes", 300):
        with pytest.raises(ValueError, match="cascade must be one of"):
            parse_cascade(bad)
    for kwargs, words in [({"cascade": 256}, "cascade must be"), ({"cascade": 512, "patch_size": 1024,
                                                                   "size": 2048}, "patch_size <= 512"),
                          ({"cascade_margin": -1}, "cascade_margin")]:
        with pytest.raises(ValueError, match=words):
            DetectorConfig(**kwargs).validate()


def test_the_checkpoint_says_per_size_and_the_config_overrides():
    meta = SatsamMeta(encoder_input_size=256, postprocess={"1024": {"cascade": 0},
                                                           "2048": {"cascade": 512, "cascade_margin": 16,
                                                                    "threshold": 0.4}})
    meta = SatsamMeta.from_dict(__import__("json").loads(meta.to_json()))  # stored and read back
    assert meta.cascade_for(2048) == (512, 16, None) and meta.cascade_for(1024) == (0, None, None)
    assert meta.cascade_for(512) == (None, None, None) and meta.post_for(2048).threshold == 0.4
    backend = SeeingBackend()
    auto = Detector(backend, DetectorConfig(size=2048), meta)
    assert (auto.cascade_size, auto.cascade_margin) == (512, 16) and auto.coarse.config.size == 512
    assert auto.coarse.post == meta.post_for(512) and auto.post.threshold == 0.4
    assert Detector(backend, DetectorConfig(size=1024), meta).cascade_size == 0  # the checkpoint: off
    assert Detector(backend, DetectorConfig(size=1024, cascade=512), meta).cascade_size == 512  # overridden
    off = Detector(backend, DetectorConfig(size=2048, cascade=0, cascade_margin=8), meta)
    assert (off.cascade_size, off.coarse, off.describe_cascade()) == (0, None, "off")
    assert Detector(backend, DetectorConfig(size=2048, cascade=1024), meta).coarse.config.size == 1024
    assert Detector(backend, DetectorConfig(size=512, cascade=512), meta).cascade_size == 0  # nothing coarser
    assert Detector(backend, DetectorConfig(size=2048), SatsamMeta()).cascade_size == 0  # not tuned: off
    with pytest.raises(ValueError, match="cascade"):
        SatsamMeta(postprocess={"1024": {"cascade": 1024}}).validate()
    with pytest.raises(ValueError, match="cascade_margin"):
        SatsamMeta(postprocess={"1024": {"cascade": 512, "cascade_margin": -3}}).validate()


def test_the_selection_keeps_the_patches_under_the_strongest_regions_up_to_a_limit():
    grid, shape = PatchGrid(2048), (512, 641)
    weak, strong = (0, 0, 10, 10), (600, 480, 641, 512)  # top-left and bottom-right corners
    wide = (0, 200, 641, 210)  # a band across the frame: the 8 patches of row 3
    assert selection.select_patches(grid, [weak, strong, wide], shape) == [0] + list(range(24, 32)) + [63]
    # at most 3: the strong corner first, then the band's patches in grid order
    assert selection.select_patches(grid, [weak, strong, wide], shape, scores=[0.1, 0.9, 0.5], limit=3) == \
        [24, 25, 63]
    assert selection.select_patches(grid, [weak, strong, wide], shape, scores=[0.95, 0.9, 0.5], limit=2) == \
        [0, 63]
    # equal scores (None): grid order; a limit above the count changes nothing
    assert selection.select_patches(grid, [weak, strong, wide], shape, limit=2) == [0, 24]
    assert selection.select_patches(grid, [weak, strong], shape, scores=[0.1, 0.9], limit=5) == [0, 63]
    with pytest.raises(ValueError, match="limit must be >= 0"):
        selection.select_patches(grid, [weak], shape, limit=-1)
    with pytest.raises(ValueError, match="one value per region"):
        selection.select_patches(grid, [weak, strong, wide], shape, scores=[1.0], limit=2)


def test_the_patch_cap_bounds_a_frame_and_keeps_the_strongest_proposal(with_satellite):
    """A coarse pass with a false alarm: capped at the satellite's patch count, the cascade
    runs the S patches under the satellite (its mean probability is the higher) and
    publishes what full tiling publishes there."""
    frame, truth = with_satellite
    _, uncapped = make(2048, margin=0)
    sat = uncapped.cascade_select(uncapped.coarse_pass(frame), frame.shape)  # the satellite's S patches
    frame = frame.copy()
    frame[20:110, 300:630] = np.maximum(frame[20:110, 300:630], 190)  # a wide, dimmer blob above it
    boxes = uncapped.coarse_pass(frame).boxes
    assert len(boxes) == 2 and boxes[0].score > boxes[1].score and boxes[1].y1 < 120  # the satellite first
    backend, det = make(2048, margin=0)
    both = det.detect(frame)
    assert both.cascade == CASCADE_REFINED and both.patches > len(sat)  # the blob adds patches
    capped_backend, capped = make(2048, margin=0, cap=len(sat))
    res = capped.detect(frame)
    assert (res.cascade, res.patches, res.coarse_patches) == (CASCADE_CAPPED, len(sat), 4)
    assert ran(capped_backend, capped.grid, frame) == sat  # the satellite's patches, not the blob's
    only = make(2048, cascade=0)[1].detect(frame, only_patches=sat)
    assert np.array_equal(res.mask, only.mask) and mask_iou(res.mask, truth) > 0.8
    assert capped.describe_cascade() == f"512 first, margin 0 px, at most {len(sat)} patches"
    assert res.to_dict()["cascade"] == "capped"
    # a cap the proposals fit under changes nothing
    roomy = make(2048, margin=0, cap=64)[1].detect(frame)
    assert roomy.cascade == CASCADE_REFINED and np.array_equal(roomy.mask, both.mask)


def test_the_patch_cap_from_the_checkpoint_and_its_checks():
    meta = SatsamMeta.from_dict(__import__("json").loads(SatsamMeta(encoder_input_size=256, postprocess={
        "2048": {"cascade": 512, "cascade_margin": 0, "cascade_max_patches": 12}}).to_json()))
    assert meta.cascade_for(2048) == (512, 0, 12)
    backend = SeeingBackend()
    assert Detector(backend, DetectorConfig(size=2048), meta).cascade_max_patches == 12
    assert Detector(backend, DetectorConfig(size=2048, cascade_max_patches=0), meta).cascade_max_patches == 0
    assert Detector(backend, DetectorConfig(size=2048, cascade_max_patches=5), meta).cascade_max_patches == 5
    assert Detector(backend, DetectorConfig(size=2048), SatsamMeta()).cascade_max_patches == 0
    for bad in (-1, 2.5, True):
        with pytest.raises(ValueError, match="cascade_max_patches"):
            SatsamMeta(postprocess={"2048": {"cascade": 512, "cascade_max_patches": bad}}).validate()
    with pytest.raises(ValueError, match="cascade_max_patches must be >= 0"):
        DetectorConfig(size=2048, cascade_max_patches=-2).validate()


def test_roi_tracking_over_a_cascading_detector():
    """The tracker's full scans go through the cascade (the coarse pass first); its ROI
    frames run their own selection only; ``patches_run`` counts both grids."""
    seq = moving_sequence(3, seed=3, speed=5.0)
    backend, det = make(2048, margin=16)
    tracker = RoiTracker(det, margin=40, full_scan_every=10)
    first = tracker.detect(seq[0][0])
    assert tracker.last_scan == "full" and first.cascade == CASCADE_REFINED and first.coarse_patches == 4
    assert 0 < first.patches < 64 and first.boxes
    second = tracker.detect(seq[1][0])
    assert tracker.last_scan == "roi" and second.cascade is None and second.coarse_patches == 0
    assert tracker.stats["patches_run"] == first.patches_run + second.patches_run == len(backend.seen)


@pytest.mark.parametrize("size, shape", [(2048, (512, 641)), (1024, (512, 641)), (2048, (480, 640)),
                                         (2048, (1080, 1920)), (1024, (300, 417)), (512, (512, 641))])
def test_the_band_resize_is_the_full_resize_bit_for_bit(size, shape):
    """The probability of a few patches is resized on their rows only, giving exactly the
    full-frame resize (INTER_AREA where both axes shrink; otherwise the full resize runs)."""
    from satsam_ros.core import postprocess, tiling

    rng = np.random.default_rng(size + shape[1])
    grid = PatchGrid(size)
    for count in (1, 2, 3, len(grid)):
        chosen = sorted(rng.choice(len(grid), size=min(count, len(grid)), replace=False).tolist())
        prob = postprocess.stitch_probability(grid, rng.normal(0, 5, (len(chosen), 64, 64)).astype(np.float32),
                                              chosen)
        rows = [grid.origins[i][0] for i in chosen]
        band = tiling.resize_band(prob, shape[0], shape[1], min(rows), max(rows) + grid.patch)
        assert np.array_equal(band, tiling.resize(prob, shape[0], shape[1]))
    if size > shape[0] and size > shape[1]:
        assert tiling._BAND_WEIGHTS[(size, size) + shape] is not None  # checked against cv2 and used


@pytest.mark.parametrize("size, shape", [(2048, (512, 641)), (1024, (512, 641)), (2048, (480, 640)),
                                         (2048, (1080, 1920)), (2048, (333, 517)), (1024, (1536, 2048))])
def test_the_band_is_stitched_and_resized_without_the_frame_around_it(size, shape):
    """The probability of a few patches is stitched into their rows only and resized from
    them (``shape``: the band stands for the whole S x S map), equal bit for bit to the
    whole map's stitch and resize; a band that leaves a patch out is refused."""
    from satsam_ros.core import postprocess, tiling

    rng = np.random.default_rng(size + shape[0])
    grid = PatchGrid(size)
    for count in (1, 3, len(grid) // 2):
        chosen = sorted(rng.choice(len(grid), size=count, replace=False).tolist())
        logits = rng.normal(0, 5, (len(chosen), 64, 64)).astype(np.float32)
        silent = rng.random(len(chosen)) < 0.3
        whole = postprocess.stitch_probability(grid, logits, chosen, silent)
        tops = [grid.origins[i][0] for i in chosen]
        a, b = min(tops), max(tops) + grid.patch
        band = postprocess.stitch_probability(grid, logits, chosen, silent, (a, b))
        assert band.shape == (b - a, size) and np.array_equal(band, whole[a:b])
        got = tiling.resize_band(band, shape[0], shape[1], a, b, shape=(size, size))
        assert np.array_equal(got, tiling.resize(whole, shape[0], shape[1]))
    with pytest.raises(ValueError, match="must hold every patch run"):
        postprocess.stitch_probability(grid, logits, chosen, None, (a + grid.patch, b))
    with pytest.raises(ValueError, match=r"rows \[0, 256\)"):
        tiling.resize_band(band[:10], shape[0], shape[1], 0, 256, shape=(size, size))


@pytest.mark.parametrize("size, shape", [(2048, (512, 641)), (1024, (512, 641)), (2048, (480, 640)),
                                         (2048, (1080, 1920)), (2048, (333, 517)), (1024, (1536, 2048)),
                                         (2048, (2048, 2048)), (1024, (1080, 1920))])
def test_the_chosen_patches_are_cut_from_their_rows_of_the_resized_frame(size, shape):
    """A few patches of a large S are cut from the rows of the S x S resize they need
    (cv2 on the source rows under them), equal bit for bit to the patches of the whole
    resize, in every geometry: where the row resize is not cv2's own the whole frame is
    resized as before (a shrink, an unchecked geometry)."""
    from satsam_ros.core import preprocess, tiling

    rng = np.random.default_rng(size + shape[1])
    planes = (rng.random(shape + (3,)) * 255).astype(np.float32)
    grid = PatchGrid(size)
    full = preprocess.grid_patches(planes, grid)
    for chosen in ([0], [len(grid) - 1], [1, len(grid) // 2], sorted(rng.choice(len(grid), 5, replace=False).tolist())):
        assert np.array_equal(preprocess.grid_patches(planes, grid, chosen), full[chosen])
    gray = planes[:, :, :1].copy()
    assert np.array_equal(preprocess.grid_patches(gray, grid, [len(grid) - 1]),
                          preprocess.grid_patches(gray, grid)[[len(grid) - 1]])
    for r0, r1 in ((0, 7), (size // 3, size // 3 + 256), (size - 300, size)):
        assert np.array_equal(tiling.resize_rows(planes, size, size, r0, r1), tiling.resize(planes, size, size)[r0:r1])
    if size > shape[0] and 2048 % shape[0] == 0:  # upscale with a short row period: the rows path ran, checked
        assert tiling._ROWS_EXACT[shape + (3, size, size, planes.dtype.str)] is True
    with pytest.raises(ValueError, match=r"rows \[5, 5\)"):
        tiling.resize_rows(planes, size, size, 5, 5)
