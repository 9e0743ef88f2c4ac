"""ONNX export of an EdgeTAM model (tiny-edgetam) with its second output, ``object_score``;
ONNX Runtime against torch (logits, scores, masks, the presence gate); ``satsam export
onnx`` / ``satsam detect`` with ``--model tiny-edgetam``; what TensorRT's parser meets in
the graph. (One-output graphs and SAM 2's score output: test_sam2_presence.py.)

Engines agree within :mod:`satsam_ros.core.parity`'s bounds: logits and score logits to
``logit_tolerance`` of the reference, masks equal outside ties.
"""

import json

import cv2
import numpy as np
import onnx
import pytest

from satsam_ros.artefacts import BATCH_AXIS, ONNX_OUTPUT, ONNX_SCORE_OUTPUT, read_onnx_meta
from satsam_ros.backends.onnxruntime_backend import OnnxRuntimeBackend
from satsam_ros.backends.torch_backend import TorchBackend
from satsam_ros.core import parity
from satsam_ros.core.detector import Detector, DetectorConfig
from satsam_ros.deploy.onnx_export import export_model
from satsam_ros.model import load_model
from satsam_ros.runtime import open_detector


@pytest.fixture(scope="module")
def et_export(tmp_path_factory):
    return export_model("tiny-edgetam", tmp_path_factory.mktemp("etonnx") / "tiny-edgetam.onnx", size=512)


@pytest.fixture(scope="module")
def et_backends(et_export):
    model, meta = load_model("tiny-edgetam")
    return TorchBackend(model, meta.prompt_policy, "cpu"), OnnxRuntimeBackend(et_export.path, "cpu")


def unseen_frames(seed):
    """Frames this project never generates: smoothed noise with a bright blob, odd sizes."""
    rng = np.random.default_rng(seed)
    out = []
    for shape, dtype, top in (((300, 417), np.uint8, 255), ((512, 641), np.uint16, 65535)):
        noise = cv2.GaussianBlur(rng.random(shape).astype(np.float32), (0, 0), 6)
        noise = (noise - noise.min()) / (noise.max() - noise.min())
        cy, cx = rng.integers(60, shape[0] - 60), rng.integers(60, shape[1] - 60)
        cv2.circle(noise, (int(cx), int(cy)), 25, 1.0, -1)
        out.append((noise * top).astype(dtype))
    return out


def frame_logits(backend, frame, size=512):
    """The logits the Detector's backend computes for a frame's patches (their scale
    sets the parity bound)."""
    from satsam_ros.core import preprocess
    from satsam_ros.core.tiling import PatchGrid

    patches, _ = preprocess.frame_patches(frame, "mono", PatchGrid(size, 256, 0), None)
    return backend.infer(preprocess.resize_patches(patches, backend.input_size))


def assert_same_masks(ref, got, threshold, logits_scale):
    tol = parity.probability_tolerance(logits_scale)
    ties = parity.mask_ties(ref.probability, threshold, ref.mask, got.mask, tol)
    assert ties.tie_share <= parity.MAX_TIE_SHARE and ties.flipped_outside_ties == 0, ties
    for res in (ref, got):
        assert 0 < np.count_nonzero(res.mask) < res.mask.size, "the comparison needs foreground and background"
    assert parity.max_abs_diff(ref.probability, got.probability) <= tol


def test_the_graph_has_logits_and_object_score_outputs(et_export):
    model = onnx.load(str(et_export.path))
    onnx.checker.check_model(model, full_check=True)
    (inp,) = model.graph.input
    logits, score = model.graph.output
    assert (logits.name, score.name) == (ONNX_OUTPUT, ONNX_SCORE_OUTPUT) == ("logits", "object_score")
    assert inp.type.tensor_type.shape.dim[0].dim_param == BATCH_AXIS
    assert [d.dim_value for d in inp.type.tensor_type.shape.dim[1:]] == [3, 256, 256]
    assert [d.dim_param or d.dim_value for d in logits.type.tensor_type.shape.dim] == [BATCH_AXIS, 64, 64]
    assert [d.dim_param or d.dim_value for d in score.type.tensor_type.shape.dim] == [BATCH_AXIS]
    assert score.type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    assert "object_score" in model.doc_string
    meta = read_onnx_meta(et_export.path)
    export = meta.provenance["export"]
    assert export["outputs"] == ["logits", "object_score"] and export["score_output"].startswith("object_score: N")
    assert meta.encoder_input_size == 256 and "EdgeTAM" in meta.provenance["source"]
    # the export's own check compared both outputs with the torch patch module
    assert et_export.has_score and export["verify_max_score_diff"] == et_export.max_score_diff
    assert 0 <= et_export.max_abs_diff <= parity.logit_tolerance(1.0)
    assert 0 <= et_export.max_score_diff <= parity.logit_tolerance(1.0)


def test_onnxruntime_logits_and_scores_match_torch_for_any_batch(et_backends):
    torch_backend, ort_backend = et_backends
    assert ort_backend.has_presence and torch_backend.has_presence
    rng = np.random.default_rng(11)
    for n in (1, 5):
        x = rng.normal(0.0, 1.0, (n, 3, 256, 256)).astype(np.float32)
        (a, sa), (b, sb) = torch_backend.infer_scored(x), ort_backend.infer_scored(x)
        assert a.shape == b.shape == (n, 64, 64) and sa.shape == sb.shape == (n,) and a.std() > 0.3
        assert parity.max_abs_diff(a, b) <= parity.logit_tolerance(a)
        assert parity.max_abs_diff(sa, sb) <= parity.logit_tolerance(sa)
        np.testing.assert_array_equal(ort_backend.infer(x), b)  # infer: the same logits, no scores


def test_detector_masks_scores_and_gate_are_the_same_on_unseen_frames(et_backends):
    torch_backend, ort_backend = et_backends
    for frame in unseen_frames(seed=5):
        ref = Detector(torch_backend, DetectorConfig(size=512)).detect(frame, "mono")
        got = Detector(ort_backend, DetectorConfig(size=512)).detect(frame, "mono")
        scale = frame_logits(torch_backend, frame)
        assert_same_masks(ref, got, ref.threshold, scale)
        assert parity.max_abs_diff(ref.scores, got.scores) <= parity.probability_tolerance(scale)
        # a gate between two patches' scores, away from both: both engines gate the same patches
        order = np.sort(ref.scores)
        cut = float(order[1] + order[2]) / 2.0
        assert order[2] - order[1] > 1e-3
        a = Detector(torch_backend, DetectorConfig(size=512, min_object_score=cut)).detect(frame, "mono")
        b = Detector(ort_backend, DetectorConfig(size=512, min_object_score=cut)).detect(frame, "mono")
        assert a.gated == b.gated == 2
        assert np.array_equal(a.scores < cut, b.scores < cut)


def test_a_graph_with_a_wrong_second_output_is_refused(tmp_path):
    from onnx import TensorProto, helper

    inp = helper.make_tensor_value_info("pixel_values", TensorProto.FLOAT, ["patches", 3, 64, 64])
    outs = [helper.make_tensor_value_info(name, TensorProto.FLOAT, ["patches", 64, 64])
            for name in ("logits", "object_score")]
    nodes = [helper.make_node("ReduceMean", ["pixel_values"], [o.name], axes=[1], keepdims=0) for o in outs]
    graph = helper.make_graph(nodes, "two_maps", [inp], outs)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(tmp_path / "bad.onnx"))
    with pytest.raises(ValueError, match="expected N x m x m logits and N object scores"):
        OnnxRuntimeBackend(tmp_path / "bad.onnx", "cpu")


def _op_types(path):
    return {node.op_type for node in onnx.load(str(path)).graph.node}


def test_edgetam_graph_adds_one_op_to_sams_for_tensorrt(tmp_path, et_export):
    """What TensorRT's ONNX parser meets in an EdgeTAM export beyond the SAM export it
    already builds: efficientvit's HardSwish (in the parser's operator list); Resize only
    in nearest mode (the FPN's top-down path)."""
    sam = export_model("tiny", tmp_path / "tiny.onnx", size=512, verify=False)
    assert _op_types(et_export.path) - _op_types(sam.path) == {"HardSwish"}
    modes = {a.s.decode() for node in onnx.load(str(et_export.path)).graph.node if node.op_type == "Resize"
             for a in node.attribute if a.name == "mode"}
    assert modes <= {"nearest", "linear"}


def test_satsam_export_and_detect_with_tiny_edgetam(tmp_path, capsys):
    from satsam_ros.tools.cli import main

    out = tmp_path / "cli" / "tiny-edgetam.onnx"
    assert main(["export", "onnx", "--model", "tiny-edgetam", "--size", "512", "--out", str(out)]) == 0
    assert "onnx checker: ok" in capsys.readouterr().out and out.is_file()
    assert [o.name for o in onnx.load(str(out)).graph.output] == ["logits", "object_score"]

    frames = tmp_path / "frames"
    frames.mkdir()
    probe = open_detector("tiny-edgetam", backend="torch", device="cpu", size=512)
    probs, scales = {}, {}
    for i, frame in enumerate(unseen_frames(seed=9)):
        cv2.imwrite(str(frames / f"u{i}.png"), frame)
        probs[f"u{i}"] = probe.detect(frame, "mono").probability
        scales[f"u{i}"] = frame_logits(probe.backend, frame)
    base = ["detect", str(frames), "--device", "cpu", "--model", "tiny-edgetam"]
    assert main(base + ["--out", str(tmp_path / "t"), "--backend", "torch"]) == 0
    assert main(base + ["--out", str(tmp_path / "o"), "--backend", "onnxruntime"]) == 0
    for stem, prob in probs.items():
        tol = parity.probability_tolerance(scales[stem])
        a = cv2.imread(str(tmp_path / "t" / f"{stem}.mask.png"), cv2.IMREAD_UNCHANGED)
        b = cv2.imread(str(tmp_path / "o" / f"{stem}.mask.png"), cv2.IMREAD_UNCHANGED)
        assert set(np.unique(a)) == {0, 255}, "the comparison needs foreground and background"
        decided = np.abs(prob - probe.threshold) > tol
        assert np.array_equal(a[decided], b[decided])
        info = json.loads((tmp_path / "o" / f"{stem}.json").read_text())
        assert info["backend"] == "onnxruntime"
