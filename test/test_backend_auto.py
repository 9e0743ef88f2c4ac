"""backend="auto": which engine is chosen on which machine, and the reason given."""

import pytest

import satsam_ros.backends as backends
import satsam_ros.runtime as runtime
from satsam_ros.backends import onnxruntime_backend
from satsam_ros.core.detector import DetectorConfig
from satsam_ros.runtime import open_detector


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("cache")  # one per module: tiny is exported once


@pytest.fixture(autouse=True)
def cache(cache_dir, monkeypatch):
    monkeypatch.setenv("SATSAM_CACHE_DIR", str(cache_dir))


def hide(monkeypatch, *modules):
    """Make module_available() report ``modules`` as not installed."""
    real = backends.module_available
    monkeypatch.setattr(backends, "module_available", lambda name: name not in modules and real(name))


def test_cpu_with_onnxruntime_picks_onnxruntime():
    det = open_detector("tiny", backend="auto", device="cpu", size=512)
    assert det.backend.name == "onnxruntime" and det.backend.device == "cpu"
    assert det.backend_reason.startswith("auto: onnxruntime on cpu")
    assert "no GPU" in det.backend_reason and "measured faster than torch" in det.backend_reason


def test_auto_is_the_default_everywhere():
    """One default: open_detector, the node's parameter and the satsam command agree."""
    from satsam_ros.ros.params import PARAM_SPECS
    from satsam_ros.tools.cli import make_parser

    assert runtime.DEFAULT_BACKEND == "auto"
    assert open_detector.__defaults__[:2] == (runtime.DEFAULT_MODEL, runtime.DEFAULT_BACKEND)
    assert PARAM_SPECS["backend"].default == runtime.DEFAULT_BACKEND
    assert PARAM_SPECS["model"].default == runtime.DEFAULT_MODEL
    args = make_parser().parse_args(["detect", "x.png", "--out", "o"])
    assert (args.backend, args.device, args.model) == (runtime.DEFAULT_BACKEND, runtime.DEFAULT_DEVICE,
                                                       runtime.DEFAULT_MODEL)


def test_cpu_without_onnxruntime_falls_back_to_torch(monkeypatch):
    hide(monkeypatch, "onnxruntime")
    det = open_detector("tiny", backend="auto", device="cpu", size=512)
    assert det.backend.name == "torch"
    assert det.backend_reason == "auto: torch on cpu (no GPU and onnxruntime is not installed)"


def test_torch_fallback_cannot_run_an_onnx_file(monkeypatch, tmp_path):
    hide(monkeypatch, "onnxruntime")
    onnx_file = tmp_path / "m.onnx"
    onnx_file.write_bytes(b"")
    with pytest.raises(ValueError, match="fell back to torch .* cannot run .*m.onnx"):
        runtime.choose_backend(str(onnx_file), "auto", "cpu")


def test_explicit_torch_keeps_its_own_path():
    det = open_detector("tiny", backend="torch", device="cpu", size=512)
    assert det.backend.name == "torch" and det.backend_reason == "torch requested, on cpu"


def test_gpu_prefers_tensorrt(monkeypatch):
    monkeypatch.setattr(backends, "module_available", lambda name: True)  # tensorrt "installed"
    sentinel = runtime.BackendChoice("trt-backend", None, "auto: TensorRT imports and a GPU is present: ...")
    seen = []

    def fake_open(model, cfg, why):
        seen.append((model, cfg.size, cfg.mode, cfg.patch_size))
        return sentinel

    monkeypatch.setattr(runtime, "_open_tensorrt", fake_open)
    assert runtime.choose_backend("tiny", "auto", "cuda", DetectorConfig(size=2048)) is sentinel
    assert seen == [("tiny", 2048, "fast", 256)]


def test_gpu_tensorrt_failure_then_onnxruntime_cuda(monkeypatch, tmp_path):
    monkeypatch.setattr(backends, "module_available", lambda name: True)

    def broken(*args):
        raise RuntimeError("engine build ran out of memory")

    class FakeOrt:
        def __init__(self, path, device):
            self.path, self.device, self.meta = path, device, None

        def describe(self):
            return f"onnxruntime on {self.device} via CUDAExecutionProvider"

    monkeypatch.setattr(runtime, "_open_tensorrt", broken)
    monkeypatch.setattr(runtime, "_ort_has_cuda", lambda: True)
    monkeypatch.setattr(onnxruntime_backend, "OnnxRuntimeBackend", FakeOrt)
    choice = runtime.choose_backend("tiny", "auto", "cuda")
    assert choice.backend.device == "cuda" and choice.backend.path.name == "model.onnx"
    assert choice.reason == ("auto: onnxruntime on cuda via CUDAExecutionProvider "
                             "(TensorRT failed (RuntimeError: engine build ran out of memory))")


def test_gpu_onnxruntime_cuda_failure_then_torch(monkeypatch):
    hide(monkeypatch, "tensorrt")

    class NoCudnn:
        def __init__(self, path, device):
            raise ValueError("onnxruntime could not start a GPU provider (libcudnn.so.9 not found)")

    monkeypatch.setattr(runtime, "_ort_has_cuda", lambda: True)
    monkeypatch.setattr(onnxruntime_backend, "OnnxRuntimeBackend", NoCudnn)
    choice = runtime.choose_backend("tiny", "auto", "cuda")
    assert choice.backend is None and choice.reason.startswith("auto: torch on cuda (tensorrt is not installed; "
                                                               "onnxruntime CUDA failed (")
    assert "libcudnn.so.9" in choice.reason


def test_gpu_without_tensorrt_or_ort_cuda_is_torch_cuda(monkeypatch):
    hide(monkeypatch, "tensorrt")
    monkeypatch.setattr(runtime, "_ort_has_cuda", lambda: False)
    choice = runtime.choose_backend("tiny", "auto", "cuda")
    assert choice.backend is None  # open_detector opens the torch backend itself
    assert choice.reason == "auto: torch on cuda (tensorrt is not installed; onnxruntime has no CUDA provider)"


def test_explicit_backends_fail_loudly(tmp_path):
    with pytest.raises(ValueError, match="'tensorrt' needs a CUDA GPU"):
        open_detector("tiny", backend="tensorrt", device="cpu")
    engine = tmp_path / "m.engine"
    engine.write_bytes(b"")
    with pytest.raises(ValueError, match="is a TensorRT engine; only the tensorrt backend on a GPU"):
        open_detector(str(engine), backend="onnxruntime", device="cpu")
    with pytest.raises(ValueError, match="backend must be one of"):
        open_detector("tiny", backend="openvino", device="cpu")
    with pytest.raises(ValueError, match="backend 'torch' runs checkpoints, not .*m.engine"):
        open_detector(str(engine), backend="torch", device="cpu")


def test_a_cached_export_is_used_without_importing_deploy(tmp_path):
    """The running path finds a cached export through satsam_ros.artefacts alone:
    with the cache warm, opening an ONNX Runtime detector imports nothing of deploy."""
    import subprocess
    import sys

    code = (
        "import sys\n"
        "from satsam_ros.runtime import open_detector\n"
        "det = open_detector('tiny', backend='onnxruntime', device='cpu', size=512)\n"
        "print(det.backend.name, any(m.startswith('satsam_ros.deploy') for m in sys.modules))\n"
    )
    env = dict(__import__("os").environ, SATSAM_CACHE_DIR=str(tmp_path / "cache"))
    first = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=600)
    assert first.returncode == 0, first.stderr
    assert first.stdout.split() == ["onnxruntime", "True"]  # cold cache: deploy made the export
    second = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=600)
    assert second.returncode == 0, second.stderr
    assert second.stdout.split() == ["onnxruntime", "False"]  # warm cache: deploy never imported
