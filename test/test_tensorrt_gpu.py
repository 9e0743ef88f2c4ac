"""TensorRT on a real GPU: build, cache, run, compare with ONNX Runtime.

Runs only where `import tensorrt` works and torch sees a CUDA GPU; skipped elsewhere
(the development and CI machines have neither). Everything around these tests
(version dispatch, cache keys, rebuild decisions, builder calls) is covered without a
GPU in test_tensorrt_backend.py.
"""

import numpy as np
import pytest

from satsam_ros.backends import module_available
from satsam_ros.runtime import open_detector


def _why_skip():
    if not module_available("tensorrt"):
        return "the tensorrt Python module is not installed"
    import torch

    if not torch.cuda.is_available():
        return "torch sees no CUDA GPU"
    return None


SKIP = _why_skip()
pytestmark = pytest.mark.skipif(SKIP is not None, reason=f"needs TensorRT and a CUDA GPU: {SKIP}")


@pytest.fixture(scope="module")
def tiny_onnx(tmp_path_factory):
    from satsam_ros.deploy.onnx_export import export_model

    return export_model("tiny", tmp_path_factory.mktemp("trt") / "tiny.onnx", size=1024).path


@pytest.fixture()
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("SATSAM_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache"


def test_fp32_engine_matches_onnxruntime_and_is_cached(tiny_onnx, cache):
    import tensorrt as trt

    from satsam_ros.backends import tensorrt_backend as trtb
    from satsam_ros.backends.onnxruntime_backend import OnnxRuntimeBackend
    from satsam_ros.deploy.tensorrt_build import build_engine

    build = build_engine(tiny_onnx, "fp32")
    assert build.built and build.path.parent == cache / "tensorrt"
    assert build.key["profile"]["max"] == [16, 3, 256, 256]
    assert not build_engine(tiny_onnx, "fp32").built
    engine = trtb.TensorRTBackend(build.path)
    assert engine.api == trtb.execution_api(trt) and engine.max_batch == 16
    reference = OnnxRuntimeBackend(tiny_onnx, "cpu")
    x = np.random.default_rng(0).normal(0, 1, (19, 3, 256, 256)).astype(np.float32)  # > max batch: split
    got, want = engine.infer(x), reference.infer(x)
    assert got.shape == want.shape == (19, 64, 64)
    assert np.abs(got - want).max() <= 1e-3


def test_fp16_engine_is_validated(tiny_onnx, cache):
    from satsam_ros.artefacts import read_record
    from satsam_ros.deploy.tensorrt_build import build_engine

    build = build_engine(tiny_onnx, "fp16", size=512)
    assert build.validation["reference"].endswith("fp32")
    v = build.validation
    assert v["ok"] == (v["finite"] and v["mask_iou"] >= v["min_iou"]) and v["min_iou"] == 0.9
    record = read_record(build.path)
    assert record["validation"] == build.validation


def test_detector_on_tensorrt(tiny_onnx, cache):
    from satsam_ros.core.synthetic import synthetic_frame

    det = open_detector(str(tiny_onnx), backend="tensorrt", device="cuda", size=512)
    assert det.backend.name == "tensorrt" and "tensorrt requested" in det.backend_reason
    frame, _ = synthetic_frame(3)
    res = det.detect(frame)
    assert res.mask.shape == frame.shape
    auto = open_detector(str(tiny_onnx), backend="auto", device="cuda", size=512)
    assert auto.backend.name == "tensorrt" and "loaded from cache" in auto.backend_reason


def test_sam2_engine_matches_onnxruntime(tmp_path, cache):
    """A SAM 2 export (tiny-sam2) builds and runs like SAM's: fp32 engine against ONNX
    Runtime on the same batch, and the Detector's masks on a frame."""
    from satsam_ros.backends import tensorrt_backend as trtb
    from satsam_ros.backends.onnxruntime_backend import OnnxRuntimeBackend
    from satsam_ros.core.detector import Detector, DetectorConfig
    from satsam_ros.core.synthetic import synthetic_frame
    from satsam_ros.deploy.onnx_export import export_model
    from satsam_ros.deploy.tensorrt_build import build_engine

    onnx_path = export_model("tiny-sam2", tmp_path / "tiny-sam2.onnx", size=512).path
    build = build_engine(onnx_path, "fp32")
    engine, reference = trtb.TensorRTBackend(build.path), OnnxRuntimeBackend(onnx_path, "cpu")
    x = np.random.default_rng(1).normal(0, 1, (5, 3, 256, 256)).astype(np.float32)  # > max batch 4: split
    assert np.abs(engine.infer(x) - reference.infer(x)).max() <= 1e-3
    frame, _ = synthetic_frame(3)
    got = Detector(engine, DetectorConfig(size=512)).detect(frame)
    want = Detector(reference, DetectorConfig(size=512)).detect(frame)
    decided = np.abs(want.probability - want.threshold) > 1e-3
    assert want.mask.any() and np.array_equal(got.mask[decided], want.mask[decided])
