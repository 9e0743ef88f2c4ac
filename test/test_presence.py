"""The presence decision per patch, in the core (no model): ``Backend.infer_scored``,
``PostConfig.min_object_score`` and the Detector's gate, its settings (per size from
``satsam.json``, live through ``set_post``), ``Result.scores`` / ``Result.gated``,
``only_patches``, and backends without scores (SAM).

A fake backend gives every patch the logits of its mean brightness and a fixed
object-score logit per patch (by its position in the batch, so each patch of a 2 x 2
frame has its own).
"""

import numpy as np
import pytest

from satsam_ros.core import postprocess
from satsam_ros.core.backend import Backend
from satsam_ros.core.detector import Detector, DetectorConfig
from satsam_ros.core.meta import SatsamMeta
from satsam_ros.core.postprocess import PostConfig

#: object-score logits of the four patches of an S = 512 frame (grid order): presence
#: probabilities 0.12, 0.5, 0.73, 0.95
SCORE_LOGITS = np.array([-2.0, 0.0, 1.0, 3.0], np.float32)


class ScoredBackend(Backend):
    """Logits +4 where a patch pixel is bright, -4 elsewhere; the object-score logit of
    the patch at origin index i is SCORE_LOGITS[i] (the origin read from a marker the
    test frames carry: the patch's top-left pixel value)."""

    name, device, input_size, low_res_size = "fake", "cpu", 256, 64
    has_presence = True

    def __init__(self):
        self.calls = 0

    def infer(self, batch):
        return self.infer_scored(batch)[0]

    def infer_scored(self, batch):
        self.check_batch(batch)
        self.calls += 1
        gray = batch[:, 0, ::4, ::4]
        logits = np.where(gray > 0.0, 4.0, -4.0).astype(np.float32)
        index = np.clip(np.rint(batch[:, 1, 0, 0] * 10.0), 0, 3).astype(int)  # the marker
        return logits, SCORE_LOGITS[index]


class Unscored(ScoredBackend):
    """The same logits, no head (as SAM): the base class's infer_scored."""

    has_presence = False

    def infer(self, batch):
        return ScoredBackend.infer_scored(self, batch)[0]

    infer_scored = Backend.infer_scored


def frame_with_blobs():
    """A 512 x 512 gray frame with one bright square in each 256 patch (S = 512: no
    resizing, so every patch maps to its own quarter), and each patch's index written
    into its top-left pixel's green channel as a marker the fake backend reads."""
    from satsam_ros.core.imaging import SAM_PIXEL_MEAN, SAM_PIXEL_STD

    frame = np.full((512, 512, 3), 20, np.uint8)
    for i, (y, x) in enumerate([(0, 0), (0, 256), (256, 0), (256, 256)]):
        frame[y + 100:y + 140, x + 100:x + 140] = 230
        # green so that the normalised value is i / 10 at the patch's (0, 0)
        frame[y, x, 1] = int(round(SAM_PIXEL_MEAN[1] + SAM_PIXEL_STD[1] * i / 10.0))
    return frame


def quarters(img):
    return [img[y:y + 256, x:x + 256] for y, x in [(0, 0), (0, 256), (256, 0), (256, 256)]]


def test_the_marker_gives_each_patch_its_score():
    res = Detector(ScoredBackend(), DetectorConfig(size=512, threshold=0.5)).detect(frame_with_blobs())
    np.testing.assert_allclose(res.scores, postprocess.sigmoid(SCORE_LOGITS), atol=1e-7)
    assert res.gated == 0 and len(res.boxes) == 4


def test_gated_patches_publish_nothing_and_the_others_are_untouched():
    frame = frame_with_blobs()
    free = Detector(ScoredBackend(), DetectorConfig(size=512, threshold=0.5)).detect(frame)
    det = Detector(ScoredBackend(), DetectorConfig(size=512, threshold=0.5, min_object_score=0.6))
    res = det.detect(frame)
    assert res.gated == 2 and res.to_dict()["gated_patches"] == 2
    np.testing.assert_array_equal(res.scores, free.scores)  # all scores are reported, gated or not
    for k, (prob, mask, free_prob) in enumerate(zip(quarters(res.probability), quarters(res.mask),
                                                    quarters(free.probability))):
        if postprocess.sigmoid(SCORE_LOGITS[k]) < 0.6:
            assert float(prob.max()) == 0.0 and not mask.any(), f"patch {k} is gated"
        else:
            np.testing.assert_array_equal(prob, free_prob)
            assert mask.any()
    assert len(res.boxes) == 2 and all(b.x0 >= 0 and b.y0 >= 256 for b in res.boxes)  # the lower two


def test_zero_is_off_and_equals_a_backend_without_scores():
    frame = frame_with_blobs()
    scored = Detector(ScoredBackend(), DetectorConfig(size=512, threshold=0.5, min_object_score=0.0)).detect(frame)
    plain = Detector(Unscored(), DetectorConfig(size=512, threshold=0.5, min_object_score=0.99)).detect(frame)
    assert scored.gated == 0 and plain.gated == 0 and plain.scores is None
    assert plain.to_dict()["object_scores"] is None
    np.testing.assert_array_equal(scored.probability, plain.probability)
    np.testing.assert_array_equal(scored.mask, plain.mask)


def test_only_patches_scores_the_patches_run():
    det = Detector(ScoredBackend(), DetectorConfig(size=512, threshold=0.5, min_object_score=0.6))
    res = det.detect(frame_with_blobs(), only_patches=[3, 1])
    assert res.patches == 2 and res.gated == 1
    np.testing.assert_allclose(res.scores, postprocess.sigmoid(SCORE_LOGITS[[1, 3]]), atol=1e-7)  # sorted order
    probs = quarters(res.probability)
    assert float(probs[0].max()) == float(probs[2].max()) == 0.0  # not run
    assert float(probs[1].max()) == 0.0 and float(probs[3].max()) > 0.9  # gated / kept


def test_the_checkpoints_value_per_size_and_live_changes():
    meta = SatsamMeta(encoder_input_size=256, postprocess={"512": {"threshold": 0.5, "min_object_score": 0.6},
                                                           "1024": {"threshold": 0.5}})
    det = Detector(ScoredBackend(), DetectorConfig(size=512), meta)
    assert det.post.min_object_score == 0.6 and det.detect(frame_with_blobs()).gated == 2
    det.set_post(min_object_score=0.9)
    assert det.post.min_object_score == 0.9 and det.detect(frame_with_blobs()).gated == 3
    det.set_post(min_object_score=0.0)
    assert det.detect(frame_with_blobs()).gated == 0
    det.set_post(min_object_score=None)  # back to the checkpoint's value for this size
    assert det.post.min_object_score == 0.6
    with pytest.raises(ValueError, match=r"min_object_score must be in \[0, 1\]; got 1.5"):
        det.set_post(min_object_score=1.5)
    assert det.post.min_object_score == 0.6  # a refused change changes nothing
    other = Detector(ScoredBackend(), DetectorConfig(size=1024), meta)
    assert other.post.min_object_score == 0.0  # no value for 1024: off


def test_settings_are_validated_everywhere():
    with pytest.raises(ValueError, match="min_object_score must be in"):
        PostConfig(min_object_score=-0.1).validate()
    with pytest.raises(ValueError, match="min_object_score must be in"):
        DetectorConfig(min_object_score=2.0).validate()
    with pytest.raises(ValueError, match=r"postprocess\['512'\]: min_object_score must be in"):
        SatsamMeta(postprocess={"512": {"min_object_score": 7}}).validate()
    assert "min_object_score" in Detector.POST_FIELDS
    assert PostConfig(0.5, 0, 1, 0.8, 4).min_object_score == 0.0  # positional use keeps its meaning


def test_presence_gate_function():
    prob, gated = postprocess.presence_gate(np.array([-10.0, 0.0, 10.0]), 0.5)
    np.testing.assert_allclose(prob, 1.0 / (1.0 + np.exp([10.0, 0.0, -10.0])), rtol=0, atol=1e-7)
    assert gated.tolist() == [True, False, False]
    assert not postprocess.presence_gate(np.array([-50.0]), 0.0)[1].any()  # 0: off, even for a sure "no"


def test_the_default_infer_scored_has_no_scores():
    backend = Unscored()
    batch = np.zeros((2, 3, 256, 256), np.float32)
    logits, scores = backend.infer_scored(batch)
    assert scores is None and logits.shape == (2, 64, 64) and not backend.has_presence
