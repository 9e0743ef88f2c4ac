"""Building TensorRT engines of an exported patch model, and checking fp16 ones.

An engine is built from a satsam ONNX export for one precision and one optimisation
profile (batch 1 .. patches per frame) and written with its key record into the
layout :mod:`satsam_ros.artefacts` reads (the cache by default). An engine at the
target path whose record matches exactly is reused, never rebuilt.

FP16 engines are checked once, when built, against an fp32 reference (ONNX Runtime
on the CPU, or an fp32 engine where ONNX Runtime is missing) on a synthetic
validation frame through the :class:`~satsam_ros.core.detector.Detector`; when the
masks diverge (IoU below ``min_iou``) a warning names the IoU drop. SAM's attention
softmax inputs and LayerNorm statistics can leave the fp16 range, which is what this
catches. Which engine the runtime then runs (``auto``: fp16 when it passes, else
fp32) is :func:`satsam_ros.runtime.engine_for`.
"""

from __future__ import annotations

import datetime
import json
import logging
import os
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any, Dict, Optional

import numpy as np

from .. import artefacts
from ..artefacts import EngineBuild, ProfileShapes, key_path
from ..backends import tensorrt_backend as trt_run

LOG = logging.getLogger("satsam_ros.deploy.tensorrt")

DEFAULT_MIN_IOU = 0.9
DEFAULT_WORKSPACE_MB = 1024
VALIDATION_SIZE = 512
VALIDATION_SEED = 7

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
    version = trt_run.parse_version(trt.__version__)
    if precision == "fp16" and not trt_run.fp16_flag_supported(trt):
        raise ValueError(
            f"TensorRT {trt.__version__} has no FP16 builder flag (strongly typed networks only); "
            "build with --precision fp32, or use TensorRT 8.x - 10.x for fp16"
        )
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    flags = 0
    if version[:2] < trt_run.NO_EXPLICIT_BATCH_FLAG_SINCE:
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
    if version[:2] >= trt_run.MEMORY_POOL_SINCE:
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, workspace)
    else:
        config.max_workspace_size = workspace
    if precision == "fp32" and hasattr(trt.BuilderFlag, "TF32"):
        config.clear_flag(trt.BuilderFlag.TF32)  # TF32 (on by default on Ampere+) is not fp32
    if precision == "fp16":
        if not trt_run.fast_fp16(trt, builder):
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
    if precision not in artefacts.ENGINE_PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(artefacts.ENGINE_PRECISIONS)}; got {precision!r}")
    trt = trt_run.import_tensorrt()
    target = artefacts.engine_target(onnx_path, precision, trt_run.environment(trt), size, patch_size, max_batch,
                                     out)
    out = target.path
    out.parent.mkdir(parents=True, exist_ok=True)
    current = artefacts.current_engine(target)
    if current is not None and not force:
        return current
    reason = "forced" if current is not None else artefacts.engine_status(out, target.key)[1]
    LOG.info("building TensorRT %s engine %s from %s (%s); this takes minutes", precision, out, target.onnx_path,
             reason)
    t0 = time.perf_counter()
    profile = ProfileShapes(*(tuple(target.key["profile"][k]) for k in ("min", "opt", "max")))
    serialized = serialize_network(trt, target.onnx_path, precision, profile, workspace_mb)
    if key_path(out).exists():
        key_path(out).unlink()  # never leave an old key next to new bytes
    _atomic_write(out, lambda fh: fh.write(serialized))
    seconds = time.perf_counter() - t0
    record = {
        "key": target.key,
        "engine_sha256": artefacts.sha256_file(out),
        "onnx_path": str(target.onnx_path.resolve()),
        "meta": json.loads(target.meta.to_json()),
        "built": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "build_seconds": round(seconds, 1),
        "size": target.size,
    }
    write_record(out, record)
    build = EngineBuild(out, target.key, True, reason, {}, seconds)
    if precision == "fp16" and validate:
        build.validation = validate_fp16(out, target.onnx_path, target.size, min_iou, workspace_mb)
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
    from ..backends import module_available
    from ..core.detector import Detector, DetectorConfig
    from ..core.synthetic import synthetic_frame

    test_backend = trt_run.TensorRTBackend(engine_path)
    meta = test_backend.meta
    if module_available("onnxruntime"):
        from ..backends.onnxruntime_backend import OnnxRuntimeBackend

        ref_backend, reference = OnnxRuntimeBackend(onnx_path, device="cpu"), "onnxruntime-cpu fp32"
    else:
        fp32 = build_engine(onnx_path, "fp32", size=size, workspace_mb=workspace_mb, validate=False)
        ref_backend, reference = trt_run.TensorRTBackend(fp32.path), "tensorrt fp32"
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
