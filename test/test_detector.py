"""The Detector end to end: geometry with a transparent fake backend, then the tiny SAM."""

import cv2
import numpy as np
import pytest

from satsam_ros.core.backend import Backend
from satsam_ros.core.detector import Detector, DetectorConfig
from satsam_ros.core.imaging import FrameError
from satsam_ros.core.postprocess import mask_iou
from satsam_ros.core.synthetic import synthetic_frame
from satsam_ros.runtime import open_detector


class BrightnessBackend(Backend):
    """A stand-in model whose logits are the patch's own brightness: the detector must
    put every patch's output back exactly where the patch came from."""

    name = "fake"

    def __init__(self, input_size=256, low_res_size=None):
        self.input_size = input_size
        self.low_res_size = low_res_size or input_size
        self.calls = []

    def infer(self, batch):
        self.check_batch(batch)
        self.calls.append(batch.shape[0])
        m = self.low_res_size
        red = batch[:, 0]  # normalised: bright (> ~200) is > 1.2
        small = np.stack([cv2.resize(p, (m, m), interpolation=cv2.INTER_AREA) for p in red])
        return (small - 1.2) * 20.0


@pytest.fixture(scope="module")
def frame_and_truth():
    return synthetic_frame(seed=5)


@pytest.mark.parametrize("size", [512, 1024, 2048])
@pytest.mark.parametrize("overlap", [0, 32])
def test_geometry_is_exact_with_transparent_model(frame_and_truth, size, overlap):
    frame, truth = frame_and_truth
    det = Detector(BrightnessBackend(), DetectorConfig(size=size, overlap=overlap, threshold=0.5))
    res = det.detect(frame)
    assert res.mask.shape == frame.shape and res.mask.dtype == np.uint8
    assert set(np.unique(res.mask)) == {0, 255}
    assert mask_iou(res.mask, truth) > 0.85
    assert res.boxes, "the satellite must give at least one box"
    ys, xs = np.nonzero(truth)
    # the boxes together span the satellite (body and panels may come out as parts)
    assert abs(min(b.x0 for b in res.boxes) - xs.min()) <= 3
    assert abs(max(b.x1 for b in res.boxes) - (xs.max() + 1)) <= 3
    assert abs(min(b.y0 for b in res.boxes) - ys.min()) <= 3
    assert abs(max(b.y1 for b in res.boxes) - (ys.max() + 1)) <= 3


def test_low_resolution_logits_cost_some_iou_on_small_targets(frame_and_truth):
    """SAM's decoder gives E/4 logits per patch; the detector upsamples them. The
    geometry still holds, at the price of edge accuracy on a small satellite."""
    frame, truth = frame_and_truth
    res = Detector(BrightnessBackend(256, 64), DetectorConfig(size=1024, threshold=0.5)).detect(frame)
    assert 0.6 < mask_iou(res.mask, truth) < 1.0


def test_batches_fast_and_one_by_one_faithful(frame_and_truth):
    frame, truth = frame_and_truth
    fast = BrightnessBackend(256)
    Detector(fast, DetectorConfig(size=1024, max_batch=6, threshold=0.5)).detect(frame)
    assert fast.calls == [6, 6, 4]
    faithful = BrightnessBackend(1024)
    res = Detector(faithful, DetectorConfig(size=512, mode="faithful", threshold=0.5)).detect(frame)
    assert faithful.calls == [1, 1, 1, 1]
    assert mask_iou(res.mask, truth) > 0.85


def test_faithful_needs_1024_encoder():
    with pytest.raises(ValueError, match="faithful mode needs an encoder input of 1024"):
        Detector(BrightnessBackend(256), DetectorConfig(mode="faithful"))


@pytest.mark.parametrize(
    "kwargs, words",
    [
        ({"size": 300}, "size must be one of 512, 1024, 2048; got 300"),
        ({"mode": "turbo"}, "mode must be one of fast, faithful"),
        ({"threshold": 1.2}, "threshold must be in"),
        ({"patch_size": 100}, "patch_size"),
        ({"overlap": 200}, "overlap"),
        ({"min_area": -1}, "min_area"),
        ({"max_batch": 0}, "max_batch"),
    ],
)
def test_bad_settings_name_the_setting(kwargs, words):
    with pytest.raises(ValueError, match=words):
        DetectorConfig(**kwargs).validate()


def test_bad_backend_name_and_unknown_setting():
    with pytest.raises(ValueError, match="backend must be one of"):
        open_detector("tiny", backend="cuda-magic")
    with pytest.raises(TypeError, match="unknown detector setting"):
        open_detector("tiny", backend="torch", colour="blue")


@pytest.fixture(scope="module")
def tiny_detectors():
    return {s: open_detector("tiny", backend="torch", device="cpu", size=s) for s in (512, 1024, 2048)}


@pytest.mark.parametrize("size, patches", [(512, 4), (1024, 16), (2048, 64)])
def test_tiny_sam_end_to_end(tiny_detectors, frame_and_truth, size, patches):
    frame, _ = frame_and_truth
    det = tiny_detectors[size]
    res = det.detect(frame)
    assert res.patches == patches and res.size == size
    assert res.mask.shape == frame.shape and res.mask.dtype == np.uint8
    assert res.probability.shape == frame.shape and res.probability.dtype == np.float32
    assert 0.0 <= res.probability.min() <= res.probability.max() <= 1.0
    assert set(np.unique(res.mask)) <= {0, 255}
    assert res.threshold == 0.65
    assert set(res.timings) == {"pre", "model", "post", "total"}
    assert res.timings["total"] >= res.timings["model"] > 0
    again = det.detect(frame)
    np.testing.assert_array_equal(again.probability, res.probability)
    np.testing.assert_array_equal(again.mask, res.mask)
    # the mask is exactly the thresholded probability
    np.testing.assert_array_equal(res.mask > 0, res.probability > res.threshold)


@pytest.mark.parametrize(
    "frame",
    [
        np.zeros((100, 120), np.uint8),
        np.zeros((100, 120), np.uint16),
        np.zeros((100, 120), np.float32),
        np.zeros((100, 120, 1), np.uint8),
        np.zeros((100, 120, 3), np.uint8),
        np.zeros((100, 120, 4), np.uint8),
    ],
)
def test_every_layout_gives_input_sized_outputs(tiny_detectors, frame):
    res = tiny_detectors[512].detect(frame)
    assert res.mask.shape == (100, 120) and res.probability.shape == (100, 120)


def test_colour_order_matters_only_through_conversion(tiny_detectors):
    rgb = np.random.default_rng(3).integers(0, 256, (64, 80, 3), dtype=np.uint8)
    det = tiny_detectors[512]
    a = det.detect(rgb, "rgb")
    b = det.detect(np.ascontiguousarray(rgb[:, :, ::-1]), "bgr")
    np.testing.assert_array_equal(a.probability, b.probability)


@pytest.mark.parametrize(
    "frame, words",
    [
        (np.zeros((0, 10), np.uint8), "empty"),
        (np.zeros((4, 4, 4, 4), np.uint8), "H x W"),
        (np.full((4, 4), np.nan, np.float32), "NaN"),
    ],
)
def test_bad_frames_raise(tiny_detectors, frame, words):
    with pytest.raises(FrameError, match=words):
        tiny_detectors[512].detect(frame)


def test_threshold_override_and_min_area(frame_and_truth):
    frame, _ = frame_and_truth
    det = open_detector("tiny", backend="torch", device="cpu", threshold=0.0, min_area=10**9)
    res = det.detect(frame)
    assert res.threshold == 0.0
    assert res.boxes == [] and res.mask.max() == 0  # every component is below min_area


def test_min_area_comes_from_the_checkpoint_unless_overridden(frame_and_truth, tmp_path):
    from satsam_ros.model import SatsamMeta, load_model, save_checkpoint

    frame, _ = frame_and_truth
    sam, meta = load_model("tiny")
    ckpt = save_checkpoint(sam, SatsamMeta(encoder_input_size=meta.encoder_input_size, threshold=0.0,
                                           min_area=10**9), tmp_path / "ckpt")
    tuned = open_detector(str(ckpt), backend="torch", device="cpu")
    assert tuned.min_area == 10**9 and not tuned.detect(frame).mask.any()
    plain = open_detector(str(ckpt), backend="torch", device="cpu", min_area=0)
    assert plain.min_area == 0 and plain.detect(frame).mask.all()
    with pytest.raises(ValueError, match="min_area must be >= 0"):
        SatsamMeta(min_area=-1).validate()


def test_faithful_mode_runs_tiny_at_1024(frame_and_truth):
    frame, _ = frame_and_truth
    det = open_detector("tiny", backend="torch", device="cpu", mode="faithful")
    assert det.backend.input_size == 1024 and det.batch == 1
    res = det.detect(frame)
    assert res.mask.shape == frame.shape and res.patches == 4


def test_close_releases_the_model_and_detect_then_refuses():
    """What a lifecycle node's cleanup relies on: after close() nothing holds the model."""
    import gc
    import weakref

    det = open_detector(model="tiny", backend="torch", device="cpu", size=512)
    frame = synthetic_frame(0)[0]
    det.detect(frame, "mono")
    module = weakref.ref(det.backend.module)
    det.close()
    gc.collect()
    assert module() is None, "the patch model is still referenced after close()"
    assert det.backend.closed
    with pytest.raises(RuntimeError, match="torch backend was closed"):
        det.detect(frame, "mono")
    det.close()  # twice is fine
