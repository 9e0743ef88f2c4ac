"""TensorRT backend without TensorRT: import laziness, version dispatch, builder API
use, profile shapes, cache keys and the stale/foreign-engine rebuild decision.

A fake ``tensorrt`` module object stands in for the real one: it records every call,
exposes ``__version__``, and has only the API of the version it pretends to be, so a
wrong dispatch fails with AttributeError. The GPU tests are in test_tensorrt_gpu.py.
"""

import json
import subprocess
import sys
import textwrap
import types

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

import satsam_ros.artefacts as art
import satsam_ros.backends.tensorrt_backend as trtb
import satsam_ros.deploy.tensorrt_build as trt_build
import satsam_ros.runtime as runtime
from satsam_ros.artefacts import META_KEY
from satsam_ros.model import SatsamMeta

# --------------------------------------------------------------------------- fakes


class Recorder:
    def __init__(self):
        self.calls = []

    def __call__(self, name, *args, **kwargs):
        self.calls.append((name, args, kwargs))

    def names(self):
        return [c[0] for c in self.calls]


def fake_trt(version, fast_fp16=True, parse_ok=True, build_result=b"serialized-engine"):
    """A stand-in for the tensorrt module of a given version (builder side)."""
    rec = Recorder()
    major_minor = tuple(int(x) for x in version.split(".")[:2])
    mod = types.ModuleType("tensorrt")
    mod.__version__ = version
    mod.calls = rec

    class Logger:
        WARNING = "warning"

        def __init__(self, level):
            rec("Logger", level)

    class Network:
        num_inputs = 1

        def get_input(self, i):
            return types.SimpleNamespace(name="pixel_values")

    class Parser:
        num_errors = 0 if parse_ok else 1

        def __init__(self, network, logger):
            rec("OnnxParser")

        def parse_from_file(self, path):
            rec("parse_from_file", path)
            return parse_ok

        def get_error(self, i):
            return "Unsupported op: Foo"

    class Config:
        def __init__(self):
            self.flags = []

        def set_flag(self, flag):
            rec("set_flag", flag)

        def clear_flag(self, flag):
            rec("clear_flag", flag)

        def add_optimization_profile(self, profile):
            rec("add_optimization_profile")

        def __setattr__(self, name, value):
            if name == "max_workspace_size":
                if major_minor >= (10, 0):
                    raise AttributeError("max_workspace_size was removed in TensorRT 10")
                rec("max_workspace_size", value)
            object.__setattr__(self, name, value)

    if major_minor >= (8, 4):
        def set_memory_pool_limit(self, pool, size):
            rec("set_memory_pool_limit", pool, size)

        Config.set_memory_pool_limit = set_memory_pool_limit

    class Profile:
        def set_shape(self, name, lo, opt, hi):
            rec("set_shape", name, tuple(lo), tuple(opt), tuple(hi))

    class Builder:
        platform_has_fast_fp16 = fast_fp16

        def __init__(self, logger):
            rec("Builder")

        def create_network(self, flags):
            rec("create_network", flags)
            return Network()

        def create_builder_config(self):
            return Config()

        def create_optimization_profile(self):
            return Profile()

        def build_serialized_network(self, network, config):
            rec("build_serialized_network")
            return build_result

    class Runtime:
        def __init__(self, logger):
            rec("Runtime")

        def deserialize_cuda_engine(self, data):
            rec("deserialize_cuda_engine")
            return None

    mod.Logger, mod.Builder, mod.OnnxParser, mod.Runtime = Logger, Builder, Parser, Runtime
    mod.NetworkDefinitionCreationFlag = types.SimpleNamespace(EXPLICIT_BATCH=0)
    mod.MemoryPoolType = types.SimpleNamespace(WORKSPACE="workspace-pool")
    mod.BuilderFlag = types.SimpleNamespace(TF32="tf32-flag")
    if major_minor < (11, 0):  # TensorRT 11 removed weak typing: no FP16 flag
        mod.BuilderFlag.FP16 = "fp16-flag"
    mod.TensorIOMode = types.SimpleNamespace(INPUT="in", OUTPUT="out")
    mod.DataType = types.SimpleNamespace(FLOAT="float", HALF="half")
    return mod


class TensorEngine:
    """TensorRT >= 8.5 engine: name-based I/O only."""

    num_io_tensors = 2

    def get_tensor_name(self, i):
        return ["pixel_values", "logits"][i]

    def get_tensor_mode(self, name):
        return "in" if name == "pixel_values" else "out"

    def get_tensor_dtype(self, name):
        return "float"


class BindingEngine:
    """TensorRT 8.0 - 8.4 engine: index-based bindings only (output first, on purpose)."""

    num_bindings = 2

    def binding_is_input(self, i):
        return i == 1

    def get_binding_name(self, i):
        return ["logits", "pixel_values"][i]

    def get_binding_dtype(self, i):
        return "float"


class Context:
    def __init__(self, accept=True):
        self.rec = Recorder()
        self.accept = accept
        self.shape = None

    def __getattr__(self, name):
        def call(*args, **kwargs):
            self.rec(name, *args, **kwargs)
            if name in ("set_input_shape", "set_binding_shape"):
                self.shape = args[1]
                return self.accept
            if name in ("get_tensor_shape", "get_binding_shape"):
                return (self.shape[0], self.shape[2] // 4, self.shape[3] // 4)
            return True

        return call


def tiny_onnx(path, e=256, size=1024):
    """A small valid ONNX graph carrying satsam metadata (what build_engine reads)."""
    inp = helper.make_tensor_value_info("pixel_values", TensorProto.FLOAT, ["patches", 3, e, e])
    out = helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["patches", 3, e, e])
    graph = helper.make_graph([helper.make_node("Identity", ["pixel_values"], ["logits"])], "g", [inp], [out])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    meta = SatsamMeta(encoder_input_size=e, provenance={"export": {"size": size}})
    entry = model.metadata_props.add()
    entry.key, entry.value = META_KEY, meta.to_json()
    onnx.save(model, str(path))
    return path


# --------------------------------------------------------------------------- import


def test_importing_the_module_imports_no_tensorrt_and_no_torch(tmp_path):
    """Even where a `tensorrt` package exists, importing the backend must not touch it."""
    poison = tmp_path / "poison" / "tensorrt"
    poison.mkdir(parents=True)
    (poison / "__init__.py").write_text("raise RuntimeError('tensorrt was imported at module load')\n")
    code = textwrap.dedent("""
        import sys
        import satsam_ros.artefacts as a
        import satsam_ros.backends.tensorrt_backend as m
        import satsam_ros.deploy.onnx_export
        import satsam_ros.deploy.tensorrt_build
        import satsam_ros.runtime
        assert "tensorrt" not in sys.modules, "tensorrt imported"
        assert "torch" not in sys.modules, "torch imported"
        print(a.profile_shapes(2048, 256).max, m.execution_api(type("T", (), {"__version__": "8.2.1"})))
    """)
    import os

    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(tmp_path / "poison"), os.environ.get("PYTHONPATH", "")]))
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "(64, 3, 256, 256) binding"


def test_missing_tensorrt_gives_a_clear_import_error():
    from satsam_ros.backends import module_available

    if module_available("tensorrt"):
        pytest.skip("tensorrt is installed here; the missing-module message cannot be shown")
    with pytest.raises(ImportError, match="needs the TensorRT Python bindings.*JetPack"):
        trtb.import_tensorrt()


# --------------------------------------------------------------------------- versions


@pytest.mark.parametrize("version,api", [
    ("8.0.1.6", "binding"), ("8.2.1.8", "binding"), ("8.4.1.5", "binding"),
    ("8.5.2.2", "tensor"), ("8.6.1", "tensor"), ("10.3.0", "tensor"), ("10.13.0.35", "tensor"),
])
def test_execution_api_by_version(version, api):
    assert trtb.execution_api(types.SimpleNamespace(__version__=version)) == api


def test_too_old_or_unreadable_version():
    with pytest.raises(ValueError, match="7.2.3 is too old"):
        trtb.execution_api(types.SimpleNamespace(__version__="7.2.3"))
    with pytest.raises(ValueError, match="cannot read a TensorRT version from 'unknown'"):
        trtb.parse_version("unknown")


def test_make_runner_dispatches_by_version():
    assert isinstance(trtb.make_runner(fake_trt("10.3.0"), TensorEngine()), trtb.TensorApiRunner)
    assert isinstance(trtb.make_runner(fake_trt("8.2.1"), BindingEngine()), trtb.BindingApiRunner)
    with pytest.raises(AttributeError):  # a binding engine has no tensor API: dispatch matters
        trtb.make_runner(fake_trt("10.3.0"), BindingEngine())


def test_tensor_api_runner_calls():
    runner = trtb.make_runner(fake_trt("10.3.0"), TensorEngine())
    ctx = Context()
    assert runner.set_batch(ctx, (4, 3, 256, 256)) == (4, 64, 64)
    runner.execute(ctx, 1000, 2000, 77)
    assert ctx.rec.calls == [
        ("set_input_shape", ("pixel_values", (4, 3, 256, 256)), {}),
        ("get_tensor_shape", ("logits",), {}),
        ("set_tensor_address", ("pixel_values", 1000), {}),
        ("set_tensor_address", ("logits", 2000), {}),
        ("execute_async_v3", (77,), {}),
    ]


def test_binding_api_runner_calls():
    runner = trtb.make_runner(fake_trt("8.2.1.8"), BindingEngine())
    assert (runner.io.input_index, runner.io.output_index) == (1, 0)
    ctx = Context()
    assert runner.set_batch(ctx, (16, 3, 256, 256)) == (16, 64, 64)
    runner.execute(ctx, 1000, 2000, 77)
    assert ctx.rec.calls == [
        ("set_binding_shape", (1, (16, 3, 256, 256)), {}),
        ("get_binding_shape", (0,), {}),
        ("execute_async_v2", (), {"bindings": [2000, 1000], "stream_handle": 77}),
    ]


def test_shape_outside_profile_is_an_error():
    runner = trtb.make_runner(fake_trt("10.3.0"), TensorEngine())
    with pytest.raises(RuntimeError, match="rejected input shape"):
        runner.set_batch(Context(accept=False), (65, 3, 256, 256))


@pytest.mark.parametrize("version,flags,workspace_call", [
    ("8.2.1.8", 1, "max_workspace_size"),
    ("8.5.2.2", 1, "set_memory_pool_limit"),
    ("10.3.0", 0, "set_memory_pool_limit"),
])
def test_builder_api_per_version(tmp_path, version, flags, workspace_call):
    trt = fake_trt(version)
    profile = art.profile_shapes(1024, 256)
    out = trt_build.serialize_network(trt, tmp_path / "m.onnx", "fp16", profile, workspace_mb=512)
    assert out == b"serialized-engine"
    calls = {c[0]: c for c in trt.calls.calls}
    assert calls["create_network"][1] == (flags,)
    assert workspace_call in calls
    if workspace_call == "set_memory_pool_limit":
        assert calls[workspace_call][1] == ("workspace-pool", 512 << 20)
    assert calls["set_flag"][1] == ("fp16-flag",) and "clear_flag" not in calls
    assert calls["set_shape"][1] == ("pixel_values", (1, 3, 256, 256), (16, 3, 256, 256), (16, 3, 256, 256))


def test_tensorrt_11_has_no_fp16_flag(tmp_path, monkeypatch):
    trt = fake_trt("11.4.0.106")
    assert not trtb.fp16_flag_supported(trt) and trtb.fp16_flag_supported(fake_trt("10.3.0"))
    with pytest.raises(ValueError, match="11.4.0.106 has no FP16 builder flag.*--precision fp32"):
        trt_build.serialize_network(trt, tmp_path / "m.onnx", "fp16", art.profile_shapes(512, 256), 256)
    assert trt_build.serialize_network(trt, tmp_path / "m.onnx", "fp32", art.profile_shapes(512, 256), 256)
    monkeypatch.setattr(trtb, "import_tensorrt", lambda: trt)
    monkeypatch.setattr(runtime, "_engine", lambda onnx_path, precision, *args: art.EngineBuild(
        tmp_path / "e.engine", make_key(precision=precision), False, "cache hit"))
    build = runtime.engine_for("m.onnx", "auto")
    assert build.key["precision"] == "fp32" and "has no FP16 builder flag" in build.summary()


def test_fp32_builds_turn_tf32_off(tmp_path):
    trt = fake_trt("10.3.0")
    trt_build.serialize_network(trt, tmp_path / "m.onnx", "fp32", art.profile_shapes(512, 256), 256)
    assert ("clear_flag", ("tf32-flag",), {}) in trt.calls.calls and "set_flag" not in trt.calls.names()


def test_builder_errors_are_named(tmp_path):
    with pytest.raises(RuntimeError, match="cannot parse .*Unsupported op: Foo"):
        trt_build.serialize_network(fake_trt("10.3.0", parse_ok=False), tmp_path / "m.onnx", "fp32",
                               art.profile_shapes(512, 256), 256)
    with pytest.raises(RuntimeError, match="failed to build an engine"):
        trt_build.serialize_network(fake_trt("10.3.0", build_result=None), tmp_path / "m.onnx", "fp32",
                               art.profile_shapes(512, 256), 256)


# --------------------------------------------------------------------------- profile & key


@pytest.mark.parametrize("size,n", [(512, 4), (1024, 16), (2048, 64)])
@pytest.mark.parametrize("e", [256, 1024])
def test_profile_shapes_per_size(size, n, e):
    p = art.profile_shapes(size, e)
    assert p.min == (1, 3, e, e) and p.opt == p.max == (n, 3, e, e)


def test_profile_cap_and_errors():
    assert art.profile_shapes(2048, 256, max_batch=16).max == (16, 3, 256, 256)
    assert art.profile_shapes(512, 256, max_batch=16).max == (4, 3, 256, 256)
    assert art.profile_shapes(1024, 256, overlap=32).max[0] == 25  # 5 x 5 overlapping patches
    with pytest.raises(ValueError, match="max_batch must be >= 1"):
        art.profile_shapes(512, 256, max_batch=0)
    with pytest.raises(ValueError, match="multiple of 16"):
        art.profile_shapes(512, 250)
    with pytest.raises(ValueError, match="size must be one of"):
        art.profile_shapes(640, 256)


SHA = "a" * 64


def make_key(**changes):
    fields = dict(onnx_sha256=SHA, tensorrt_version="10.3.0", gpu="Orin", compute_capability="8.7",
                  precision="fp16", profile=art.profile_shapes(512, 256))
    fields.update(changes)
    return art.engine_key(**fields)


def test_engine_key_covers_every_field():
    base = art.key_digest(make_key())
    assert art.key_digest(make_key()) == base
    variants = [dict(onnx_sha256="b" * 64), dict(tensorrt_version="8.5.2.2"), dict(gpu="NVIDIA Tegra X2"),
                dict(compute_capability="6.2"), dict(precision="fp32"), dict(profile=art.profile_shapes(1024, 256))]
    digests = {art.key_digest(make_key(**v)) for v in variants}
    assert base not in digests and len(digests) == len(variants)
    with pytest.raises(ValueError, match="precision must be one of fp16, fp32; got 'int8'"):
        make_key(precision="int8")
    with pytest.raises(ValueError, match="64 hex digits"):
        make_key(onnx_sha256="abc")


# --------------------------------------------------------------------------- cache decisions


@pytest.fixture()
def fake_env(monkeypatch, tmp_path):
    """build_engine against a fake TensorRT: counts builds, environment switchable."""
    state = {"env": {"tensorrt": "8.5.2.2", "gpu": "Orin", "compute_capability": "8.7"}, "builds": 0}
    monkeypatch.setenv("SATSAM_CACHE_DIR", str(tmp_path / "cache"))

    def serialize(trt, onnx_path, precision, profile, workspace_mb):
        state["builds"] += 1
        return f"engine {state['builds']} {precision} {profile.max}".encode()

    state["trt"] = fake_trt(state["env"]["tensorrt"])
    monkeypatch.setattr(trtb, "import_tensorrt", lambda: state["trt"])
    monkeypatch.setattr(trtb, "environment", lambda trt: dict(state["env"]))
    monkeypatch.setattr(trt_build, "serialize_network", serialize)
    state["onnx"] = tiny_onnx(tmp_path / "m.onnx")
    return state


def test_cache_builds_once_then_hits(fake_env, tmp_path):
    first = trt_build.build_engine(fake_env["onnx"], "fp32")
    assert first.built and fake_env["builds"] == 1
    assert first.path.parent == tmp_path / "cache" / "tensorrt"
    assert first.path.name == art.key_digest(first.key) + ".engine"
    record = json.loads(art.key_path(first.path).read_text())
    assert record["key"]["profile"]["max"] == [16, 3, 256, 256]  # S=1024 from the export's metadata
    assert record["key"]["tensorrt"] == "8.5.2.2" and record["meta"]["encoder_input_size"] == 256
    second = trt_build.build_engine(fake_env["onnx"], "fp32")
    assert not second.built and second.reason == "cache hit" and fake_env["builds"] == 1
    assert trt_build.build_engine(fake_env["onnx"], "fp32", size=2048).key["profile"]["max"][0] == 64
    assert fake_env["builds"] == 2


def test_runtime_runs_the_cached_engine_and_builds_only_what_is_missing(fake_env, tmp_path):
    """The runtime's engine choice: a current engine in the cache is run as it is; a
    missing one is built (once) by satsam_ros.deploy."""
    assert fake_env["builds"] == 0
    made = runtime.engine_for(fake_env["onnx"], "fp32")
    assert made.built and fake_env["builds"] == 1
    again = runtime.engine_for(fake_env["onnx"], "fp32")
    assert not again.built and again.reason == "cache hit" and again.path == made.path
    assert fake_env["builds"] == 1


@pytest.mark.parametrize("change,reason", [
    (lambda env, path: env.update(tensorrt="10.3.0"), "stale: built for tensorrt '8.5.2.2' != '10.3.0'"),
    (lambda env, path: env.update(gpu="NVIDIA Tegra X2"), "stale: built for gpu 'Orin' != 'NVIDIA Tegra X2'"),
    (lambda env, path: path.write_bytes(b"someone else's engine"), "do not match its key file"),
    (lambda env, path: art.key_path(path).unlink(), "a foreign engine"),
    (lambda env, path: art.key_path(path).write_text("{"), "unreadable key file"),
])
def test_stale_or_foreign_engine_is_rebuilt_not_loaded(fake_env, tmp_path, change, reason):
    out = tmp_path / "deploy" / "satsam.engine"
    trt_build.build_engine(fake_env["onnx"], "fp32", out=out)
    change(fake_env["env"], out)
    again = trt_build.build_engine(fake_env["onnx"], "fp32", out=out)
    assert again.built and reason in again.reason and fake_env["builds"] == 2
    ok, why = art.engine_status(out, again.key)
    assert ok and why == "current"


def test_changed_onnx_is_stale(fake_env, tmp_path):
    out = tmp_path / "e.engine"
    trt_build.build_engine(fake_env["onnx"], "fp32", out=out)
    tiny_onnx(fake_env["onnx"], size=2048)  # same E, other content
    again = trt_build.build_engine(fake_env["onnx"], "fp32", out=out, size=1024)
    assert again.built and "onnx_sha256" in again.reason


def test_backend_refuses_a_stale_engine_before_deserialising(fake_env, tmp_path):
    trt = fake_env["trt"]
    out = tmp_path / "e.engine"
    trt_build.build_engine(fake_env["onnx"], "fp32", out=out)
    fake_env["env"]["tensorrt"] = "10.3.0"
    with pytest.raises(trtb.StaleEngineError, match="not loaded: stale: built for tensorrt"):
        trtb.TensorRTBackend(out)
    assert "deserialize_cuda_engine" not in trt.calls.names()
    with pytest.raises(ValueError, match="runs on 'cuda' only"):
        trtb.TensorRTBackend(out, device="cpu")


# --------------------------------------------------------------------------- fp16 check


def result(mask, prob):
    return types.SimpleNamespace(mask=mask, probability=prob)


def test_compare_results():
    prob = np.linspace(0, 1, 100, dtype=np.float32).reshape(10, 10)
    mask = np.where(prob > 0.5, 255, 0).astype(np.uint8)
    same = trt_build.compare_results(result(mask, prob), result(mask, prob), 0.9)
    assert same["ok"] and same["mask_iou"] == 1.0 and same["max_prob_diff"] == 0.0
    half = mask.copy()
    half[:7] = 0
    worse = trt_build.compare_results(result(half, prob), result(mask, prob), 0.9)
    assert not worse["ok"] and worse["mask_iou"] == pytest.approx(0.6)
    bad = prob.copy()
    bad[0, 0] = np.nan
    overflow = trt_build.compare_results(result(mask, bad), result(mask, prob), 0.9)
    assert not overflow["ok"] and not overflow["finite"]


@pytest.fixture(scope="module")
def real_tiny_onnx(tmp_path_factory):
    from satsam_ros.deploy.onnx_export import export_model

    return export_model("tiny", tmp_path_factory.mktemp("val") / "tiny.onnx", size=512, verify=False).path


def onnx_stand_in(offset):
    """A TensorRTBackend stand-in: ONNX Runtime with ``offset`` added to the logits
    (a large offset mimics an fp16 engine whose logits went wrong)."""
    from satsam_ros.backends.onnxruntime_backend import OnnxRuntimeBackend

    class Perturbed(OnnxRuntimeBackend):
        name = "tensorrt"

        def infer(self, batch):
            return super().infer(batch) + np.float32(offset)

    return Perturbed


def test_fp16_validation_passes_when_masks_agree(real_tiny_onnx, monkeypatch):
    monkeypatch.setattr(trtb, "TensorRTBackend", onnx_stand_in(0.0))
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        res = trt_build.validate_fp16(real_tiny_onnx, real_tiny_onnx, 512)
    # the stand-in is the reference itself (ONNX Runtime, the same file, session options
    # and frame): the same kernels in the same order, so bit-equal masks, IoU exactly 1
    assert res["ok"] and res["mask_iou"] == 1.0 and res["reference"] == "onnxruntime-cpu fp32"


def test_fp16_validation_warns_naming_the_iou_drop(real_tiny_onnx, monkeypatch):
    monkeypatch.setattr(trtb, "TensorRTBackend", onnx_stand_in(3.0))
    with pytest.warns(RuntimeWarning, match=r"masks diverge .* IoU \d\.\d{3} \(a drop of \d\.\d{3}"):
        res = trt_build.validate_fp16(real_tiny_onnx, real_tiny_onnx, 512)
    assert not res["ok"] and res["mask_iou"] < 0.9


def test_auto_precision_falls_back_to_fp32_when_fp16_diverges(monkeypatch, tmp_path):
    monkeypatch.setattr(trtb, "import_tensorrt", lambda: fake_trt("10.3.0"))
    asked = []

    def fake_build(onnx_path, precision, *args):
        asked.append(precision)
        validation = {"ok": False, "mask_iou": 0.41, "reference": "onnxruntime-cpu fp32"} if precision == "fp16" else {}
        return art.EngineBuild(tmp_path / f"{precision}.engine", make_key(precision=precision), True, "new",
                                validation)

    monkeypatch.setattr(runtime, "_engine", fake_build)
    build = runtime.engine_for("m.onnx", "auto")
    assert asked == ["fp16", "fp32"] and build.key["precision"] == "fp32"
    assert "fp16 rejected: mask IoU 0.41" in build.summary()
    monkeypatch.setattr(trtb, "import_tensorrt", lambda: fake_trt("10.3.0", fast_fp16=False))
    asked.clear()
    assert runtime.engine_for("m.onnx", "auto").key["precision"] == "fp32" and asked == ["fp32"]


# --------------------------------------------------------------------------- SAM 2


@pytest.fixture(scope="module")
def real_sam2_onnx(tmp_path_factory):
    from satsam_ros.deploy.onnx_export import export_model

    return export_model("tiny-sam2", tmp_path_factory.mktemp("val2") / "tiny-sam2.onnx", size=512).path


def _op_types(path):
    return {node.op_type for node in onnx.load(str(path)).graph.node}


def test_sam2_graph_adds_only_ops_tensorrt_parses(real_sam2_onnx, real_tiny_onnx):
    """What TensorRT's parser meets in a SAM 2 export beyond the SAM export it already
    builds: Hiera's query pooling (MaxPool) and a Neg, both in the parser's operator
    list since TensorRT 7; Resize only in nearest mode (the FPN's top-down path): the
    bicubic resampling of Hiera's position embedding is folded into a constant."""
    assert _op_types(real_sam2_onnx) - _op_types(real_tiny_onnx) <= {"MaxPool", "Neg"}
    modes = {a.s.decode() for node in onnx.load(str(real_sam2_onnx)).graph.node if node.op_type == "Resize"
             for a in node.attribute if a.name == "mode"}
    assert modes <= {"nearest", "linear"}


def test_sam2_engine_builds_from_its_export_like_sam(fake_env, real_sam2_onnx, tmp_path):
    build = trt_build.build_engine(real_sam2_onnx, "fp32")
    assert build.built and fake_env["builds"] == 1
    record = json.loads(art.key_path(build.path).read_text())
    assert record["key"]["profile"]["max"] == [4, 3, 256, 256]  # S = 512 from the export's metadata
    assert record["meta"]["encoder_input_size"] == 256 and "SAM 2" in record["meta"]["provenance"]["source"]
    assert not trt_build.build_engine(real_sam2_onnx, "fp32").built  # then a cache hit


def test_sam2_fp16_validation_compares_real_masks(real_sam2_onnx, monkeypatch):
    from satsam_ros.backends.onnxruntime_backend import OnnxRuntimeBackend
    from satsam_ros.core.detector import Detector, DetectorConfig
    from satsam_ros.core.synthetic import synthetic_frame

    reference = Detector(OnnxRuntimeBackend(real_sam2_onnx, "cpu"), DetectorConfig(size=trt_build.VALIDATION_SIZE))
    mask = reference.detect(synthetic_frame(trt_build.VALIDATION_SEED)[0]).mask
    assert mask.any(), "the check must compare masks with foreground"
    monkeypatch.setattr(trtb, "TensorRTBackend", onnx_stand_in(0.0))  # the reference itself: bit-equal
    assert trt_build.validate_fp16(real_sam2_onnx, real_sam2_onnx, 512)["mask_iou"] == 1.0
    monkeypatch.setattr(trtb, "TensorRTBackend", onnx_stand_in(-3.0))  # an engine whose logits went wrong
    with pytest.warns(RuntimeWarning, match="masks diverge"):
        assert not trt_build.validate_fp16(real_sam2_onnx, real_sam2_onnx, 512)["ok"]
