"""The presence output of SAM 2 (its mask decoder's object-score head) through every
engine: ``make_patch_module(..., with_score=True)``, the torch backend's
``infer_scored``, the export's second output ``object_score`` checked against torch,
ONNX Runtime; SAM (no head) and one-output graphs (SAM's, and exports made before the
score output) run as before with no scores; a stand-in that overrides ``infer`` is what
the Detector runs.
"""

import numpy as np
import onnx
import pytest
import torch

from satsam_ros.backends.onnxruntime_backend import OnnxRuntimeBackend
from satsam_ros.backends.torch_backend import TorchBackend
from satsam_ros.core import parity
from satsam_ros.core.detector import Detector, DetectorConfig
from satsam_ros.core.synthetic import synthetic_frame
from satsam_ros.deploy.onnx_export import export_model
from satsam_ros.model import has_presence, load_model, make_patch_module


@pytest.fixture(scope="module")
def sam2_export(tmp_path_factory):
    return export_model("tiny-sam2", tmp_path_factory.mktemp("sam2score") / "tiny-sam2.onnx", size=512)


def _pixels(n, seed=0):
    return np.random.default_rng(seed).standard_normal((n, 3, 256, 256)).astype(np.float32)


def test_sam2_patch_module_with_score_is_the_decoders_object_score():
    model, _ = load_model("tiny-sam2")
    assert has_presence(model)
    x = torch.from_numpy(_pixels(3, seed=1))
    with torch.no_grad():
        logits, scores = make_patch_module(model, with_score=True)(x)
        plain = make_patch_module(model)(x)
        ref = model(pixel_values=x, input_boxes=torch.tensor([[[0.0, 0.0, 255.0, 255.0]]] * 3),
                    multimask_output=False)
    assert scores.shape == (3,) and torch.equal(scores, ref.object_score_logits[:, 0, 0])
    assert torch.equal(logits, plain) and torch.equal(logits, ref.pred_masks[:, 0, 0])
    backend = TorchBackend(model)
    got, got_scores = backend.infer_scored(x.numpy())
    assert backend.has_presence
    np.testing.assert_array_equal(got, logits.numpy())
    np.testing.assert_array_equal(got_scores, scores.numpy())
    np.testing.assert_array_equal(backend.infer(x.numpy()), got)


def test_sam_has_no_head():
    model, _ = load_model("tiny")
    assert not has_presence(model) and not TorchBackend(model).has_presence
    with pytest.raises(ValueError, match="with_score: a SAM model .*'sam'.* has no object-score head"):
        make_patch_module(model, with_score=True)
    logits, scores = TorchBackend(model).infer_scored(_pixels(1))
    assert scores is None and logits.shape == (1, 64, 64)


def test_the_sam2_export_has_the_score_output_and_onnxruntime_matches(sam2_export):
    graph = onnx.load(str(sam2_export.path)).graph
    assert [o.name for o in graph.output] == ["logits", "object_score"]
    assert [d.dim_param for d in graph.output[1].type.tensor_type.shape.dim] == ["patches"]
    export = sam2_export.meta.provenance["export"]
    assert export["outputs"] == ["logits", "object_score"] and sam2_export.has_score
    assert export["export_format"] == 2
    assert 0 <= sam2_export.max_score_diff <= parity.logit_tolerance(1.0)
    model, _ = load_model("tiny-sam2")
    ort = OnnxRuntimeBackend(sam2_export.path, "cpu")
    assert ort.has_presence
    x = _pixels(5, seed=3)
    (a, sa), (b, sb) = TorchBackend(model).infer_scored(x), ort.infer_scored(x)
    assert parity.max_abs_diff(a, b) <= parity.logit_tolerance(a)
    assert parity.max_abs_diff(sa, sb) <= parity.logit_tolerance(sa)
    res = Detector(ort, DetectorConfig(size=512, min_object_score=1.0)).detect(synthetic_frame(2)[0])
    assert res.gated == 4 and not res.mask.any()


def test_one_output_graphs_run_with_no_scores(tmp_path, sam2_export):
    sam = export_model("tiny", tmp_path / "tiny.onnx", size=512, verify=False)
    assert [o.name for o in onnx.load(str(sam.path)).graph.output] == ["logits"] and not sam.has_score
    backend = OnnxRuntimeBackend(sam.path, "cpu")
    assert not backend.has_presence
    res = Detector(backend, DetectorConfig(size=512, min_object_score=0.9)).detect(synthetic_frame(1)[0])
    assert res.scores is None and res.gated == 0 and res.mask.any()
    old = onnx.load(str(sam2_export.path))
    old.graph.output.pop()  # an export of format 1: the logits only
    onnx.save(old, str(tmp_path / "old.onnx"))
    legacy = OnnxRuntimeBackend(tmp_path / "old.onnx", "cpu")
    x = _pixels(2, seed=4)
    logits, scores = legacy.infer_scored(x)
    assert not legacy.has_presence and scores is None
    np.testing.assert_array_equal(logits, OnnxRuntimeBackend(sam2_export.path, "cpu").infer(x))


def test_a_stand_in_that_overrides_infer_is_what_the_detector_runs(sam2_export):
    """The fp16 check's stand-ins subclass an engine and change ``infer`` only; the
    Detector (which calls ``infer_scored``) must see their logits."""

    class Shifted(OnnxRuntimeBackend):
        def infer(self, batch):
            return super().infer(batch) + np.float32(50.0)

    res = Detector(Shifted(sam2_export.path, "cpu"), DetectorConfig(size=512, min_object_score=1.0)).detect(
        synthetic_frame(2)[0])
    assert res.mask.all() and res.scores is None and res.gated == 0
