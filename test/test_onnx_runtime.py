"""ONNX Runtime backend: parity with the torch backend, Detector and CLI integration."""

import json

import cv2
import numpy as np
import pytest
from numerics import LogitRecorder, assert_logits_close, assert_masks_equal_except_ties, assert_results_agree

from satsam_ros.backends.onnxruntime_backend import OnnxRuntimeBackend, providers_for
from satsam_ros.backends.torch_backend import TorchBackend
from satsam_ros.core.detector import Detector, DetectorConfig
from satsam_ros.core.parity import probability_tolerance
from satsam_ros.deploy.onnx_export import export_model
from satsam_ros.model import load_model
from satsam_ros.runtime import open_detector


@pytest.fixture(scope="module")
def tiny_onnx(tmp_path_factory):
    return export_model("tiny", tmp_path_factory.mktemp("ort") / "tiny.onnx", size=512).path


@pytest.fixture(scope="module")
def backends(tiny_onnx):
    sam, meta = load_model("tiny")
    return TorchBackend(sam, meta.prompt_policy, "cpu"), OnnxRuntimeBackend(tiny_onnx, "cpu")


def random_frames(seed, count=3):
    """Frames this project never generates: uniform noise, odd sizes, three encodings."""
    rng = np.random.default_rng(seed)
    return [
        (rng.integers(0, 256, (300, 417), dtype=np.uint8), "rgb"),
        (rng.integers(0, 65536, (512, 641), dtype=np.uint16), "rgb"),
        (rng.integers(0, 256, (389, 700, 3), dtype=np.uint8), "bgr"),
    ][:count]


def test_backend_interface(backends):
    _, ort_backend = backends
    assert ort_backend.name == "onnxruntime" and ort_backend.device == "cpu"
    assert (ort_backend.input_size, ort_backend.low_res_size) == (256, 64)
    assert ort_backend.providers == ["CPUExecutionProvider"]
    assert ort_backend.meta.encoder_input_size == 256
    with pytest.raises(ValueError, match="expects N x 3 x 256 x 256 float32"):
        ort_backend.infer(np.zeros((1, 3, 128, 128), np.float32))


def test_logits_match_torch_in_fp32(backends):
    torch_backend, ort_backend = backends
    rng = np.random.default_rng(11)
    for n in (1, 4, 7):
        x = rng.normal(0.0, 1.0, (n, 3, 256, 256)).astype(np.float32)
        a, b = torch_backend.infer(x), ort_backend.infer(x)
        assert a.shape == b.shape == (n, 64, 64)
        # two engines, two summation orders: satsam_ros.core.parity's float32 bound,
        # 1e-3 of the largest |logit| (measured 5e-6 here; test_numerics.py varies the order)
        assert_logits_close(b, a, f"onnxruntime vs torch, batch {n}")


@pytest.mark.parametrize("size", [512, 1024])
def test_detector_masks_identical_on_random_frames(backends, size):
    """At the model's own threshold (0.65), the ``tiny`` spec's masks hold foreground.

    Probabilities agree to satsam_ros.core.parity's bound (a quarter of the logit bound,
    1e-3 of the torch run's largest |logit|; measured 2.1e-5 against about 5e-4); masks
    are equal except at ties (reference probability within that bound of 0.65), which
    are counted and must stay a small share of the frame."""
    torch_backend, ort_backend = backends
    for frame, order in random_frames(seed=size):
        recorder = LogitRecorder(torch_backend)
        ref = Detector(recorder, DetectorConfig(size=size)).detect(frame, order)
        got = Detector(ort_backend, DetectorConfig(size=size)).detect(frame, order)
        assert ref.threshold == got.threshold == 0.65
        assert_results_agree(ref, got, recorder.scale, what=f"{size}: {frame.shape} {frame.dtype}")
        if np.array_equal(ref.mask, got.mask):  # no tie flipped: the same components, scores to float noise
            # (listed best score first: components whose scores differ by float noise may swap places)
            a = {(b.x0, b.y0, b.x1, b.y1, b.area): b.score for b in ref.boxes}
            b = {(b.x0, b.y0, b.x1, b.y1, b.area): b.score for b in got.boxes}
            assert a.keys() == b.keys() and len(a) == len(ref.boxes)
            # a score is a mean of probabilities, each within the probability bound
            tolerance = probability_tolerance(recorder.scale)
            assert [b[k] for k in a] == pytest.approx(list(a.values()), abs=tolerance)


def test_close_drops_the_session(tiny_onnx):
    import gc
    import weakref

    backend = OnnxRuntimeBackend(tiny_onnx, "cpu")
    batch = np.zeros((1, 3, 256, 256), np.float32)
    assert backend.infer(batch).shape == (1, 64, 64)
    session = weakref.ref(backend.session)
    backend.close()
    gc.collect()
    assert session() is None and backend.closed
    with pytest.raises(RuntimeError, match="onnxruntime backend was closed"):
        backend.infer(batch)


def test_spinning_workers_can_be_turned_off(tiny_onnx, monkeypatch):
    from satsam_ros.backends.onnxruntime_backend import ORT_SPIN_ENV

    key = "session.intra_op.allow_spinning"
    for value in ("0", "1"):
        monkeypatch.setenv(ORT_SPIN_ENV, value)
        backend = OnnxRuntimeBackend(tiny_onnx, "cpu")
        assert backend.session.get_session_options().get_session_config_entry(key) == value
        assert backend.infer(np.zeros((1, 3, 256, 256), np.float32)).shape == (1, 64, 64)
    monkeypatch.setenv(ORT_SPIN_ENV, "off")
    with pytest.raises(ValueError, match=ORT_SPIN_ENV):
        OnnxRuntimeBackend(tiny_onnx, "cpu")


def test_from_model_with_onnx_file_and_directory(tiny_onnx):
    for spec in (tiny_onnx, tiny_onnx.parent):
        det = open_detector(str(spec), backend="onnxruntime", device="cpu", size=512)
        assert det.backend.name == "onnxruntime" and det.threshold == pytest.approx(0.65)
        assert "onnxruntime requested" in det.backend_reason
    with pytest.raises(ValueError, match="faithful mode needs an encoder input of 1024"):
        open_detector(str(tiny_onnx), backend="onnxruntime", device="cpu", mode="faithful")


def test_from_model_exports_a_spec_once_into_the_cache(tmp_path, monkeypatch):
    import satsam_ros.deploy.onnx_export as export

    monkeypatch.setenv("SATSAM_CACHE_DIR", str(tmp_path / "cache"))
    det = open_detector("tiny", backend="onnxruntime", device="cpu", size=512)
    cached = list((tmp_path / "cache" / "onnx").glob("*/model.onnx"))
    assert len(cached) == 1 and (cached[0].parent / "satsam.json").is_file()
    assert det.backend.path == cached[0]

    def no_export(*args, **kwargs):
        raise AssertionError("a cache hit must not export again")

    monkeypatch.setattr(export, "export_model", no_export)
    again = open_detector("tiny", backend="onnxruntime", device="cpu", size=512)
    assert again.backend.path == cached[0]
    with pytest.raises(AssertionError, match="must not export"):  # another S is another export
        open_detector("tiny", backend="onnxruntime", device="cpu", size=1024)


def test_cuda_without_cuda_provider_is_an_error(tiny_onnx):
    assert providers_for("cuda", ["CUDAExecutionProvider", "CPUExecutionProvider"]) == [
        "CUDAExecutionProvider", "CPUExecutionProvider"]
    assert providers_for("cuda", ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"],
                         tensorrt_ep=True)[0] == "TensorrtExecutionProvider"
    import onnxruntime as ort

    if "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("this onnxruntime has a CUDA provider; the refusal cannot be shown here")
    with pytest.raises(ValueError, match="offers only .*CPUExecutionProvider.*onnxruntime-gpu"):
        OnnxRuntimeBackend(tiny_onnx, device="cuda")


def test_broken_onnx_file_is_named(tmp_path):
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not a protobuf")
    with pytest.raises(ValueError, match="bad.onnx: onnxruntime cannot load"):
        OnnxRuntimeBackend(bad)


def test_cli_detect_onnxruntime_matches_torch(tiny_onnx, tmp_path):
    from satsam_ros.tools.cli import main

    frames = tmp_path / "frames"
    frames.mkdir()
    probe = open_detector("tiny", backend="torch", device="cpu", size=512)
    probe.backend = recorder = LogitRecorder(probe.backend)  # the scale of the probabilities' bound
    probs = []
    for i, (frame, order) in enumerate(random_frames(seed=3, count=2)):
        cv2.imwrite(str(frames / f"r{i}.png"), frame)  # the files hold the same pixels as the frames
        probs.append(probe.detect(frame, order).probability)
    base = ["detect", str(frames), "--device", "cpu"]  # the model's own threshold
    assert main(base + ["--out", str(tmp_path / "t"), "--backend", "torch", "--model", "tiny"]) == 0
    assert main(base + ["--out", str(tmp_path / "o"), "--backend", "onnxruntime", "--model", str(tiny_onnx)]) == 0
    for i in range(2):
        a = cv2.imread(str(tmp_path / "t" / f"r{i}.mask.png"), cv2.IMREAD_UNCHANGED)
        b = cv2.imread(str(tmp_path / "o" / f"r{i}.mask.png"), cv2.IMREAD_UNCHANGED)
        assert set(np.unique(a)) == {0, 255}
        assert_masks_equal_except_ties(probs[i], probe.threshold, a, b, recorder.scale, what=f"r{i}.mask.png")
        info = json.loads((tmp_path / "o" / f"r{i}.json").read_text())
        assert info["backend"] == "onnxruntime"


def test_spec_exported_at_the_requested_encoder_size(tmp_path, monkeypatch):
    from satsam_ros.core.detector import DetectorConfig
    from satsam_ros.runtime import choose_backend

    monkeypatch.setenv("SATSAM_CACHE_DIR", str(tmp_path / "cache"))
    choice = choose_backend("tiny", "onnxruntime", "cpu", DetectorConfig(size=512, encoder_size=128))
    assert (choice.backend.input_size, choice.backend.low_res_size) == (128, 32)
    assert choice.meta.encoder_input_size == 128
