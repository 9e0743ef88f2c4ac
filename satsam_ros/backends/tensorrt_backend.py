"""TensorRT backend: build, cache and run engines of the exported patch model.

Importing this module imports nothing of TensorRT (nor torch): both are imported
inside the functions that need them, so the package loads on machines without them.

Two execution APIs, chosen by the TensorRT version (:func:`execution_api`):

* ``binding`` (TensorRT 8.0 - 8.4: JetPack 4.6 ships 8.2, JetPack 5.0 ships 8.4):
  ``set_binding_shape`` + ``execute_async_v2(bindings, stream_handle)``;
* ``tensor`` (TensorRT 8.5 and newer, the only API left in 10.x):
  ``set_input_shape`` + ``set_tensor_address`` + ``execute_async_v3(stream_handle)``.

Device buffers are torch CUDA tensors (no pycuda); the engine runs on a torch CUDA
stream of its own.

Engines are cached. The cache key (:func:`engine_key`) is the ONNX file's sha256,
the TensorRT version, the GPU (name and compute capability), the precision and the
optimisation profile; it is stored beside the engine (``<engine>.json``) together
with the engine's own sha256. An engine whose key file is missing (a foreign
engine), does not match its bytes (replaced or corrupt) or names another TensorRT
or GPU (stale) is rebuilt or refused, never deserialised.

FP16 engines are checked once, when built, against an fp32 reference (ONNX Runtime
on the CPU, or an fp32 engine where ONNX Runtime is missing) on a synthetic
validation frame through the :class:`~satsam_ros.detector.Detector`; when the masks
diverge (IoU below ``min_iou``) a warning names the IoU drop. SAM's attention
softmax inputs and LayerNorm statistics can leave the fp16 range, which is what this
catches.
"""

from __future__ import annotations

import datetime
import json
import logging
import os
import re
import tempfile
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import numpy as np

from . import Backend

LOG = logging.getLogger("satsam_ros.tensorrt")

PRECISIONS = ("fp16", "fp32")
KEY_FORMAT = 1
TENSOR_API_SINCE = (8, 5)  # set_input_shape / set_tensor_address / execute_async_v3
MEMORY_POOL_SINCE = (8, 4)  # IBuilderConfig.set_memory_pool_limit replaces max_workspace_size
NO_EXPLICIT_BATCH_FLAG_SINCE = (10, 0)  # networks are always explicit-batch; the flag is deprecated
WEAK_TYPING_REMOVED_SINCE = (11, 0)  # BuilderFlag.FP16 and platform_has_fast_fp16 are gone in 11.x
OLDEST_SUPPORTED = (8, 0)
DEFAULT_MIN_IOU = 0.9
DEFAULT_WORKSPACE_MB = 1024
VALIDATION_SIZE = 512
VALIDATION_SEED = 7
ENV_FIELDS = ("tensorrt", "gpu", "compute_capability")

Shape = Tuple[int, int, int, int]


class StaleEngineError(RuntimeError):
    """An engine that must not be loaded here (foreign, replaced, other TensorRT or GPU)."""


def import_tensorrt():
    """The ``tensorrt`` module, or ImportError saying where to get it."""
    try:
        import tensorrt as trt
    except ImportError as exc:
        raise ImportError(
            f"backend 'tensorrt' needs the TensorRT Python bindings and `import tensorrt` failed ({exc}); "
            "on a Jetson they come with JetPack (python3-libnvinfer), on a desktop `pip install tensorrt`"
        ) from exc
    return trt


def parse_version(text) -> Tuple[int, int, int]:
    """'8.2.1.8' -> (8, 2, 1); ValueError naming the text when it has no number."""
    parts = re.findall(r"\d+", str(text))
    if not parts:
        raise ValueError(f"cannot read a TensorRT version from {text!r}")
    nums = [int(p) for p in parts[:3]] + [0, 0]
    return nums[0], nums[1], nums[2]


def execution_api(trt) -> str:
    """"tensor" for TensorRT >= 8.5, "binding" for 8.0 - 8.4 (from ``trt.__version__``).

    Raises ValueError for TensorRT older than 8.0 (no ``build_serialized_network``).
    """
    version = parse_version(getattr(trt, "__version__", ""))
    if version[:2] < OLDEST_SUPPORTED:
        raise ValueError(f"TensorRT {trt.__version__} is too old: satsam_ros needs 8.0 or newer")
    return "tensor" if version[:2] >= TENSOR_API_SINCE else "binding"


def fp16_flag_supported(trt) -> bool:
    """True where FP16 is a builder flag (TensorRT 8.x - 10.x).

    TensorRT 11 builds strongly typed networks only: an fp16 engine there needs an
    fp16 ONNX graph, which this package does not export (yet).
    """
    version = parse_version(getattr(trt, "__version__", ""))
    return version[:2] < WEAK_TYPING_REMOVED_SINCE and hasattr(trt.BuilderFlag, "FP16")


def fast_fp16(trt, builder=None) -> bool:
    """Whether an fp16 build is possible and worth it on this GPU."""
    if not fp16_flag_supported(trt):
        return False
    builder = builder if builder is not None else trt.Builder(trt.Logger(trt.Logger.WARNING))
    return bool(getattr(builder, "platform_has_fast_fp16", True))


# --------------------------------------------------------------------------- profile & key


@dataclass(frozen=True)
class ProfileShapes:
    """Optimisation profile of the ``pixel_values`` input: min / opt / max N x 3 x E x E."""

    min: Shape
    opt: Shape
    max: Shape

    def to_dict(self) -> Dict[str, List[int]]:
        return {"min": list(self.min), "opt": list(self.opt), "max": list(self.max)}


def profile_shapes(
    size: int, encoder_size: int, patch_size: int = 256, overlap: int = 0, max_batch: Optional[int] = None
) -> ProfileShapes:
    """Batch 1 .. patches per frame (4 / 16 / 64 for S = 512 / 1024 / 2048 at P = 256).

    ``opt`` = ``max``: the detector sends whole frames' worth of patches (up to its
    ``max_batch``). ``max_batch`` caps both, e.g. to save memory on a small Jetson.
    """
    from ..deploy.onnx_export import patches_per_frame

    e = int(encoder_size)
    if e <= 0 or e % 16:
        raise ValueError(f"encoder input size must be a positive multiple of 16; got {encoder_size}")
    n = patches_per_frame(size, patch_size, overlap)
    if max_batch is not None:
        if int(max_batch) < 1:
            raise ValueError(f"max_batch must be >= 1; got {max_batch}")
        n = min(n, int(max_batch))
    return ProfileShapes((1, 3, e, e), (n, 3, e, e), (n, 3, e, e))


def engine_key(
    onnx_sha256: str,
    tensorrt_version: str,
    gpu: str,
    compute_capability: str,
    precision: str,
    profile: ProfileShapes,
) -> Dict[str, Any]:
    """Everything an engine depends on; engines are reused only on an exact match."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}; got {precision!r}")
    if not re.fullmatch(r"[0-9a-f]{64}", str(onnx_sha256)):
        raise ValueError(f"onnx_sha256 must be 64 hex digits; got {onnx_sha256!r}")
    return {
        "key_format": KEY_FORMAT,
        "onnx_sha256": str(onnx_sha256),
        "tensorrt": str(tensorrt_version),
        "gpu": str(gpu),
        "compute_capability": str(compute_capability),
        "precision": precision,
        "profile": profile.to_dict(),
    }


def key_digest(key: Dict[str, Any]) -> str:
    """Short stable name of a key (the cached engine's file name)."""
    import hashlib

    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:24]


def key_path(engine_path) -> Path:
    """Where an engine's key record lives: ``<engine>.json``."""
    p = Path(engine_path)
    return p.with_name(p.name + ".json")


def read_record(engine_path) -> Dict[str, Any]:
    """The key record beside an engine (ValueError / FileNotFoundError when unusable)."""
    kp = key_path(engine_path)
    try:
        record = json.loads(kp.read_text())
    except json.JSONDecodeError as exc:
        raise ValueError(f"{kp}: not valid JSON ({exc})") from exc
    if not isinstance(record, dict) or not isinstance(record.get("key"), dict):
        raise ValueError(f"{kp}: no 'key' object")
    return record


def engine_status(engine_path, expected: Dict[str, Any]) -> Tuple[bool, str]:
    """Whether the engine at ``engine_path`` may be loaded for ``expected``, and why.

    ``expected`` is a full key (:func:`engine_key`) or any subset of its fields, e.g.
    only the environment (:data:`ENV_FIELDS`) when no ONNX is at hand. Returns
    ``(True, "current")`` or ``(False, reason)``: no engine, no key file (foreign),
    engine bytes not the ones the key file was written for, or fields that differ.
    """
    from ..deploy.onnx_export import sha256_file

    engine_path = Path(engine_path)
    if not engine_path.is_file():
        return False, "no engine file"
    if not key_path(engine_path).is_file():
        return False, f"no key file {key_path(engine_path).name} beside it (a foreign engine)"
    try:
        record = read_record(engine_path)
    except ValueError as exc:
        return False, f"unreadable key file ({exc})"
    if record.get("engine_sha256") != sha256_file(engine_path):
        return False, "the engine's bytes do not match its key file (replaced or corrupt)"
    key = record["key"]
    diffs = [f"{name} {key.get(name)!r} != {want!r}" for name, want in expected.items() if key.get(name) != want]
    if diffs:
        return False, "stale: built for " + "; ".join(diffs)
    return True, "current"


def gpu_identity(device_index: int = 0) -> Dict[str, str]:
    """{"gpu": name, "compute_capability": "8.7"} of a CUDA device (through torch)."""
    import torch

    if not torch.cuda.is_available():
        raise RuntimeError("TensorRT needs a CUDA GPU and torch sees none")
    major, minor = torch.cuda.get_device_capability(device_index)
    return {"gpu": torch.cuda.get_device_name(device_index), "compute_capability": f"{major}.{minor}"}


def environment(trt) -> Dict[str, str]:
    """The fields of a key that describe this machine: TensorRT version and GPU."""
    env = {"tensorrt": str(trt.__version__)}
    env.update(gpu_identity())
    return env


# --------------------------------------------------------------------------- execution


@dataclass
class IoNames:
    """The engine's one input and one output, by name and (binding API) index."""

    input: str
    output: str
    input_index: int = -1
    output_index: int = -1
    num_bindings: int = 2
    output_dtype: Any = None


class TensorApiRunner:
    """TensorRT >= 8.5: tensors addressed by name, ``execute_async_v3``."""

    api = "tensor"

    def __init__(self, trt, engine):
        names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
        inputs = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        outputs = [n for n in names if n not in inputs]
        if len(inputs) != 1 or len(outputs) != 1:
            raise ValueError(f"engine has inputs {inputs} and outputs {outputs}; expected one of each")
        self.io = IoNames(inputs[0], outputs[0], output_dtype=engine.get_tensor_dtype(outputs[0]))

    def set_batch(self, context, shape: Shape) -> Tuple[int, ...]:
        """Set the input shape; return the output shape TensorRT derives from it."""
        if not context.set_input_shape(self.io.input, tuple(shape)):
            raise RuntimeError(f"TensorRT rejected input shape {tuple(shape)} (outside the optimisation profile?)")
        return tuple(context.get_tensor_shape(self.io.output))

    def execute(self, context, input_ptr: int, output_ptr: int, stream_handle: int) -> None:
        context.set_tensor_address(self.io.input, int(input_ptr))
        context.set_tensor_address(self.io.output, int(output_ptr))
        if not context.execute_async_v3(int(stream_handle)):
            raise RuntimeError("TensorRT execute_async_v3 failed (see the TensorRT log)")


class BindingApiRunner:
    """TensorRT 8.0 - 8.4: binding indices, ``execute_async_v2``."""

    api = "binding"

    def __init__(self, trt, engine):
        count = engine.num_bindings
        inputs = [i for i in range(count) if engine.binding_is_input(i)]
        outputs = [i for i in range(count) if i not in inputs]
        if len(inputs) != 1 or len(outputs) != 1:
            raise ValueError(f"engine has {len(inputs)} input and {len(outputs)} output bindings; expected one each")
        i, o = inputs[0], outputs[0]
        self.io = IoNames(
            engine.get_binding_name(i), engine.get_binding_name(o), i, o, count, engine.get_binding_dtype(o)
        )

    def set_batch(self, context, shape: Shape) -> Tuple[int, ...]:
        if not context.set_binding_shape(self.io.input_index, tuple(shape)):
            raise RuntimeError(f"TensorRT rejected input shape {tuple(shape)} (outside the optimisation profile?)")
        return tuple(context.get_binding_shape(self.io.output_index))

    def execute(self, context, input_ptr: int, output_ptr: int, stream_handle: int) -> None:
        bindings = [0] * self.io.num_bindings
        bindings[self.io.input_index] = int(input_ptr)
        bindings[self.io.output_index] = int(output_ptr)
        if not context.execute_async_v2(bindings=bindings, stream_handle=int(stream_handle)):
            raise RuntimeError("TensorRT execute_async_v2 failed (see the TensorRT log)")


def make_runner(trt, engine):
    """The runner for this TensorRT's API (see :func:`execution_api`)."""
    return TensorApiRunner(trt, engine) if execution_api(trt) == "tensor" else BindingApiRunner(trt, engine)


def torch_dtype(trt, dtype):
    """torch dtype of a TensorRT output dtype (FLOAT or HALF)."""
    import torch

    if dtype == trt.DataType.FLOAT:
        return torch.float32
    if dtype == trt.DataType.HALF:
        return torch.float16
    raise ValueError(f"engine output dtype {dtype} is not float32 or float16")


class TensorRTBackend(Backend):
    """Runs a serialized engine on a CUDA GPU: N x 3 x E x E float32 -> N x m x m.

    The engine's key record (``<engine>.json``) must match this machine's TensorRT
    and GPU and the engine's bytes, else :class:`StaleEngineError` is raised before
    anything is deserialised. Batches larger than the profile's maximum are split.
    """

    name = "tensorrt"

    def __init__(self, engine_path, device: str = "cuda"):
        if device != "cuda":
            raise ValueError(f"backend 'tensorrt' runs on 'cuda' only; got device {device!r}")
        trt = import_tensorrt()
        import torch

        from ..model import SatsamMeta

        self.path = Path(engine_path)
        env = environment(trt)
        ok, why = engine_status(self.path, env)
        if not ok:
            raise StaleEngineError(
                f"{self.path}: not loaded: {why}; rebuild it with `satsam export tensorrt --onnx <model.onnx>`"
            )
        record = read_record(self.path)
        key = record["key"]
        self.record = record
        self.precision = key["precision"]
        self.meta = SatsamMeta.from_dict(record["meta"]) if record.get("meta") else SatsamMeta()
        profile_max = key["profile"]["max"]
        self.max_batch = int(profile_max[0])
        self.input_size = int(profile_max[2])
        self.low_res_size = self.input_size // 4
        self.device = "cuda"
        self._trt, self._torch = trt, torch
        self._logger = trt.Logger(trt.Logger.WARNING)
        self._runtime = trt.Runtime(self._logger)
        self.engine = self._runtime.deserialize_cuda_engine(self.path.read_bytes())
        if self.engine is None:
            raise RuntimeError(f"{self.path}: TensorRT could not deserialise the engine (see the TensorRT log)")
        self.runner = make_runner(trt, self.engine)
        self.api = self.runner.api
        self.context = self.engine.create_execution_context()
        self._out_dtype = torch_dtype(trt, self.runner.io.output_dtype)
        self._stream = torch.cuda.Stream()

    def describe(self) -> str:
        return (f"tensorrt {self._trt.__version__} {self.precision} on {torch_device_name(self._torch)} "
                f"({self.api} API, encoder input {self.input_size}, batch 1..{self.max_batch})")

    def infer(self, batch: np.ndarray) -> np.ndarray:
        """N x 3 x E x E float32 normalised patches -> N x m x m float32 logits."""
        self.check_batch(batch)
        torch = self._torch
        results = []
        for start in range(0, batch.shape[0], self.max_batch):
            chunk = np.ascontiguousarray(batch[start:start + self.max_batch])
            with torch.cuda.stream(self._stream):
                x = torch.from_numpy(chunk).to("cuda")
                out_shape = self.runner.set_batch(self.context, tuple(x.shape))
                m = self.low_res_size
                if tuple(out_shape) != (x.shape[0], m, m):
                    raise RuntimeError(f"{self.path}: engine output shape {out_shape}, expected {(x.shape[0], m, m)}")
                out = torch.empty(out_shape, dtype=self._out_dtype, device="cuda")
                self.runner.execute(self.context, x.data_ptr(), out.data_ptr(), self._stream.cuda_stream)
            self._stream.synchronize()
            results.append(out.float().cpu().numpy())
        return np.concatenate(results) if len(results) > 1 else results[0]


def torch_device_name(torch) -> str:
    return torch.cuda.get_device_name(torch.cuda.current_device())


# --------------------------------------------------------------------------- building


@dataclass
class EngineBuild:
    """Outcome of :func:`build_engine`: the engine, its key, and what happened."""

    path: Path
    key: Dict[str, Any]
    built: bool
    reason: str
    validation: Dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0
    note: str = ""  # why this precision, when chosen automatically

    def summary(self) -> str:
        what = f"built in {self.seconds:.0f} s ({self.reason})" if self.built else "loaded from cache"
        text = f"engine {self.path.name}: {self.key['precision']}, {what}"
        if self.validation.get("mask_iou") is not None:
            text += f"; fp16 check vs {self.validation['reference']}: mask IoU {self.validation['mask_iou']:.3f}"
        return text + (f"; {self.note}" if self.note else "")


def _atomic_write(path: Path, write) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.tmp-", dir=str(path.parent))
    try:
        with os.fdopen(fd, "wb") as fh:
            write(fh)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def write_record(engine_path, record: Dict[str, Any]) -> None:
    """Write ``<engine>.json`` atomically."""
    data = (json.dumps(record, indent=2, sort_keys=True) + "\n").encode()
    _atomic_write(key_path(engine_path), lambda fh: fh.write(data))


def serialize_network(trt, onnx_path: Path, precision: str, profile: ProfileShapes, workspace_mb: int):
    """Parse the ONNX file and build a serialized engine (TensorRT's IHostMemory).

    Uses the explicit-batch flag before TensorRT 10, the memory-pool workspace limit
    from 8.4 (``max_workspace_size`` before), FP16 when asked for.
    """
    version = parse_version(trt.__version__)
    if precision == "fp16" and not fp16_flag_supported(trt):
        raise ValueError(
            f"TensorRT {trt.__version__} has no FP16 builder flag (strongly typed networks only); "
            "build with --precision fp32, or use TensorRT 8.x - 10.x for fp16"
        )
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    flags = 0
    if version[:2] < NO_EXPLICIT_BATCH_FLAG_SINCE:
        flags = 1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if hasattr(parser, "parse_from_file"):
        parsed = parser.parse_from_file(str(onnx_path))
    else:
        parsed = parser.parse(Path(onnx_path).read_bytes())
    if not parsed:
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise RuntimeError(f"TensorRT cannot parse {onnx_path}: {errors or 'no detail'}")
    if network.num_inputs != 1:
        raise ValueError(f"{onnx_path}: expected one input (pixel_values), the network has {network.num_inputs}")
    input_name = network.get_input(0).name
    config = builder.create_builder_config()
    workspace = int(workspace_mb) << 20
    if version[:2] >= MEMORY_POOL_SINCE:
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, workspace)
    else:
        config.max_workspace_size = workspace
    if precision == "fp32" and hasattr(trt.BuilderFlag, "TF32"):
        config.clear_flag(trt.BuilderFlag.TF32)  # TF32 (on by default on Ampere+) is not fp32
    if precision == "fp16":
        if not fast_fp16(trt, builder):
            LOG.warning("this GPU has no fast fp16: the fp16 engine may be no faster than fp32")
        config.set_flag(trt.BuilderFlag.FP16)
    opt_profile = builder.create_optimization_profile()
    opt_profile.set_shape(input_name, profile.min, profile.opt, profile.max)
    config.add_optimization_profile(opt_profile)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise RuntimeError(f"TensorRT failed to build an engine from {onnx_path} (see the TensorRT log)")
    return serialized


def build_engine(
    onnx_path,
    precision: str = "fp16",
    size: Optional[int] = None,
    max_batch: Optional[int] = None,
    out=None,
    patch_size: Optional[int] = None,
    workspace_mb: int = DEFAULT_WORKSPACE_MB,
    validate: bool = True,
    min_iou: float = DEFAULT_MIN_IOU,
    force: bool = False,
) -> EngineBuild:
    """Build (or reuse) the engine of an exported patch model.

    ``onnx_path``: a satsam .onnx export (file or directory). ``size``: the frame size
    S the profile is made for (default: the export's own S, else 512); the batch
    axis gets min 1, opt = max = patches per frame (capped by ``max_batch``).
    ``out``: the engine path (default: the cache, ``<cache>/tensorrt/<key>.engine``).
    An engine at ``out`` is reused only when its key record matches exactly (and
    ``force`` is off); otherwise it is rebuilt in place. FP16 builds are validated
    (see the module docstring) and warn when the mask IoU is below ``min_iou``.
    """
    from ..deploy.onnx_export import cache_dir, export_size, read_onnx_meta, resolve_onnx_file, sha256_file

    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}; got {precision!r}")
    trt = import_tensorrt()
    onnx_path = resolve_onnx_file(onnx_path)
    meta = read_onnx_meta(onnx_path)
    size = int(size) if size else export_size(meta)
    profile = profile_shapes(size, meta.encoder_input_size, patch_size or meta.patch_size, 0, max_batch)
    env = environment(trt)
    key = engine_key(sha256_file(onnx_path), env["tensorrt"], env["gpu"], env["compute_capability"], precision,
                     profile)
    out = Path(out) if out else cache_dir("tensorrt") / f"{key_digest(key)}.engine"
    out.parent.mkdir(parents=True, exist_ok=True)
    ok, why = engine_status(out, key)
    if ok and not force:
        return EngineBuild(out, key, False, "cache hit", read_record(out).get("validation") or {})
    reason = "forced" if ok else why
    LOG.info("building TensorRT %s engine %s from %s (%s); this takes minutes", precision, out, onnx_path, reason)
    t0 = time.perf_counter()
    serialized = serialize_network(trt, onnx_path, precision, profile, workspace_mb)
    if key_path(out).exists():
        key_path(out).unlink()  # never leave an old key next to new bytes
    _atomic_write(out, lambda fh: fh.write(serialized))
    seconds = time.perf_counter() - t0
    record = {
        "key": key,
        "engine_sha256": sha256_file(out),
        "onnx_path": str(Path(onnx_path).resolve()),
        "meta": json.loads(meta.to_json()),
        "built": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "build_seconds": round(seconds, 1),
        "size": size,
    }
    write_record(out, record)
    build = EngineBuild(out, key, True, reason, {}, seconds)
    if precision == "fp16" and validate:
        build.validation = validate_fp16(out, onnx_path, size, min_iou, workspace_mb)
        record["validation"] = build.validation
        write_record(out, record)
    return build


def compare_results(test, reference, min_iou: float) -> Dict[str, Any]:
    """Mask IoU and largest probability difference of two Detector results.

    ``ok`` is False when the IoU is below ``min_iou`` or the tested probabilities are
    not finite (fp16 overflow gives inf/NaN logits).
    """
    from ..core.postprocess import mask_iou

    finite = bool(np.isfinite(test.probability).all())
    iou = mask_iou(test.mask, reference.mask)
    diff = float(np.nanmax(np.abs(test.probability - reference.probability))) if finite else float("inf")
    return {"mask_iou": round(float(iou), 4), "max_prob_diff": diff, "finite": finite,
            "min_iou": float(min_iou), "ok": bool(finite and iou >= min_iou)}


def validate_fp16(engine_path, onnx_path, size: int, min_iou: float = DEFAULT_MIN_IOU,
                  workspace_mb: int = DEFAULT_WORKSPACE_MB) -> Dict[str, Any]:
    """Run the fp16 engine and an fp32 reference on one synthetic frame; compare masks.

    Reference: ONNX Runtime on the CPU when installed, else an fp32 engine built for
    the same ONNX. Warns (RuntimeWarning and the log), naming the IoU drop, when the
    masks diverge.
    """
    from ..core.detector import Detector, DetectorConfig
    from ..core.synthetic import synthetic_frame
    from ..deploy.onnx_export import module_available

    test_backend = TensorRTBackend(engine_path)
    meta = test_backend.meta
    if module_available("onnxruntime"):
        from .onnxruntime_backend import OnnxRuntimeBackend

        ref_backend, reference = OnnxRuntimeBackend(onnx_path, device="cpu"), "onnxruntime-cpu fp32"
    else:
        fp32 = build_engine(onnx_path, "fp32", size=size, workspace_mb=workspace_mb, validate=False)
        ref_backend, reference = TensorRTBackend(fp32.path), "tensorrt fp32"
    frame, _ = synthetic_frame(VALIDATION_SEED)
    config = dict(size=VALIDATION_SIZE, patch_size=meta.patch_size, threshold=meta.threshold)
    test = Detector(test_backend, DetectorConfig(**config), meta).detect(frame)
    ref = Detector(ref_backend, DetectorConfig(**config), meta).detect(frame)
    result = compare_results(test, ref, min_iou)
    result.update({"reference": reference, "frame": f"synthetic_frame({VALIDATION_SEED}) at S={VALIDATION_SIZE}"})
    if not result["ok"]:
        message = (
            f"FP16 engine {Path(engine_path).name}: masks diverge from {reference} on the validation frame: "
            f"IoU {result['mask_iou']:.3f} (a drop of {1.0 - result['mask_iou']:.3f}; finite: {result['finite']}); "
            "SAM's attention/LayerNorm may overflow fp16: consider --precision fp32"
        )
        LOG.warning(message)
        warnings.warn(message, RuntimeWarning, stacklevel=2)
    return result


def ensure_engine(
    onnx_path, precision: str = "auto", size: Optional[int] = None, patch_size: Optional[int] = None,
    min_iou: float = DEFAULT_MIN_IOU,
) -> EngineBuild:
    """The engine the detector should run: cached, or built now.

    ``precision`` "auto": fp16 when the GPU has fast fp16 and the fp16 engine passes
    its validation, else fp32 (the reason says why).
    """
    if precision != "auto":
        return build_engine(onnx_path, precision, size=size, patch_size=patch_size, min_iou=min_iou)
    trt = import_tensorrt()
    if not fast_fp16(trt):
        build = build_engine(onnx_path, "fp32", size=size, patch_size=patch_size)
        build.note = ("fp32 because this GPU has no fast fp16" if fp16_flag_supported(trt)
                      else f"fp32 because TensorRT {trt.__version__} has no FP16 builder flag")
        return build
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # reported below, in the reason
        fp16 = build_engine(onnx_path, "fp16", size=size, patch_size=patch_size, min_iou=min_iou)
    if fp16.validation.get("ok", True):
        return fp16
    fp32 = build_engine(onnx_path, "fp32", size=size, patch_size=patch_size)
    fp32.note = (f"fp16 rejected: mask IoU {fp16.validation.get('mask_iou')} vs "
                   f"{fp16.validation.get('reference')} below {min_iou}")
    LOG.warning("using the fp32 engine: %s", fp32.note)
    return fp32
