"""Opening a Detector: a model spec and a backend choice in, a ready Detector out.

This is the one place where the run-time defaults live (model, backend, device) and
where ``auto`` is decided. The node (and the launch file's choices, through the node's
parameter table), the ``satsam`` command, bag evaluation, the benchmark and the
training side's evaluation all open their Detector here.

``auto`` picks, in order: TensorRT when it imports, the device is a GPU and an engine
loads or builds; ONNX Runtime with its CUDA provider on a GPU; torch on a GPU; on the
CPU, ONNX Runtime when installed (measured faster than torch there, docs/deploy.md),
else torch. An explicitly requested backend fails loudly; ``auto`` records each
failure in the reason it gives and moves on.

Artefacts: an ONNX export or a TensorRT engine that is already in the cache is used
as it is (:mod:`satsam_ros.artefacts`). One that is missing is made here and now by
:mod:`satsam_ros.deploy`, which is imported only then: the running path (core,
backends, ROS shell) never imports it.
"""

from __future__ import annotations

import logging
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, List, Optional

from . import artefacts, backends
from .artefacts import EngineBuild, is_engine_spec, is_onnx_spec
from .backends import tensorrt_backend as trt_run
from .core.detector import FAITHFUL_ENCODER_SIZE, Detector, DetectorConfig
from .core.meta import SatsamMeta

LOG = logging.getLogger("satsam_ros.runtime")

DEFAULT_MODEL = "builtin"
DEFAULT_BACKEND = "auto"
DEFAULT_DEVICE = "auto"
BACKENDS = ("auto",) + backends.NAMES
DEVICES = ("auto", "cpu", "cuda")
TRT_PRECISION_ENV = "SATSAM_TRT_PRECISION"  # auto | fp16 | fp32: the engine auto and tensorrt run
TRT_PRECISIONS = ("auto",) + artefacts.ENGINE_PRECISIONS
DEFAULT_MIN_IOU = 0.9  # an fp16 engine whose mask IoU against fp32 is below this is not run by auto
#: Measured on the 2-core development machine (docs/deploy.md, "Choosing a backend"):
#: ONNX Runtime (CPU EP, graph optimisation ALL) against PyTorch 2.13 CPU, per patch.
CPU_CHOICE_NOTE = "onnxruntime measured faster than torch on the CPU (see docs/deploy.md)"


def resolve_device(device: str) -> str:
    """'auto' -> 'cuda' when torch sees a GPU, else 'cpu'; other values are checked."""
    if device not in DEVICES:
        raise ValueError(f"device must be one of {', '.join(DEVICES)}; got {device!r}")
    if device != "auto":
        return device
    try:
        import torch
    except ImportError:
        return "cpu"
    return "cuda" if torch.cuda.is_available() else "cpu"


def detector_config(config: Optional[DetectorConfig] = None, **overrides: Any) -> DetectorConfig:
    """A validated DetectorConfig: ``config`` (or the defaults) with ``overrides`` set.

    Raises TypeError for a field DetectorConfig does not have, ValueError for a bad value.
    """
    cfg = config or DetectorConfig()
    for key, value in overrides.items():
        if not hasattr(cfg, key):
            raise TypeError(f"unknown detector setting {key!r}")
        setattr(cfg, key, value)
    return cfg.validate()


def open_detector(
    model: str = DEFAULT_MODEL,
    backend: str = DEFAULT_BACKEND,
    device: str = DEFAULT_DEVICE,
    config: Optional[DetectorConfig] = None,
    **overrides: Any,
) -> Detector:
    """The Detector for ``model`` on ``backend`` (see the module docstring for ``auto``).

    ``model``: a spec for :func:`satsam_ros.model.load_model`, a .onnx export (or a
    directory holding one) or a TensorRT .engine. ``overrides`` are DetectorConfig
    fields (size=1024, mode="faithful", ...). ``Detector.backend_reason`` says which
    engine runs and why.
    """
    cfg = detector_config(config, **overrides)
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {', '.join(BACKENDS)}; got {backend!r}")
    device = resolve_device(device)
    choice = choose_backend(str(model), backend, device, cfg)
    if choice.backend is None:  # torch, on its own path
        engine, meta = open_torch(str(model), device, cfg)
        choice = BackendChoice(engine, meta, choice.reason)
    det = Detector(choice.backend, cfg, choice.meta)
    det.backend_reason = choice.reason
    return det


def detector_for_model(model, meta: SatsamMeta, device: str = "cpu", config: Optional[DetectorConfig] = None,
                       fused_attention: bool = False) -> Detector:
    """A Detector around a model already in memory (training validation, the benchmark).

    ``model`` is a loaded model (:func:`satsam_ros.model.load_model`), run by the torch
    backend as it is (no encoder resizing); ``config.precision`` selects autocast.
    """
    from .backends.torch_backend import TorchBackend

    cfg = (config or DetectorConfig(patch_size=int(meta.patch_size))).validate()
    engine = TorchBackend(model, meta.prompt_policy, device, precision=cfg.precision,
                          fused_attention=fused_attention)
    det = Detector(engine, cfg, meta)
    det.backend_reason = f"torch on {device}, model in memory"
    return det


def open_torch(model: str, device: str, config: DetectorConfig):
    """(TorchBackend, SatsamMeta) for a model spec: faithful mode at E = 1024 with
    transformers' stock modules; fast mode at ``config.encoder_size`` (or the model's
    own E) with fused attention where the family has it (SAM; same outputs, less time
    and memory; SAM 2 runs its own attention)."""
    from .backends.torch_backend import TorchBackend
    from .model import load_model, resize_encoder

    sam, meta = load_model(model, device=device)
    size = FAITHFUL_ENCODER_SIZE if config.mode == "faithful" else config.encoder_size
    if size is not None:  # e.g. a 1024-trained encoder run natively at 256
        sam = resize_encoder(sam, int(size))
    fast = config.mode == "fast"
    return TorchBackend(sam, meta.prompt_policy, device, precision=config.precision, fused_attention=fast), meta


# --------------------------------------------------------------------------- the choice


@dataclass
class BackendChoice:
    """What :func:`choose_backend` decided.

    ``backend`` None means "the torch backend": :func:`open_detector` opens it (on its
    own path: it loads weights, not an export). ``reason`` is one line for the node's
    log: which engine, on what, and why.
    """

    backend: Any
    meta: Optional[SatsamMeta]
    reason: str


def choose_backend(model: str, backend: str, device: str, config: Optional[DetectorConfig] = None) -> BackendChoice:
    """Open the engine for ``backend`` ("torch", "onnxruntime", "tensorrt" or "auto").

    ``device`` is already resolved ("cpu" or "cuda"). Model specs are exported to the
    ONNX cache first for ONNX Runtime and TensorRT (the encoder resized to 1024 in
    faithful mode, else to ``config.encoder_size`` when set; an .onnx file keeps its
    own E).
    """
    cfg = config or DetectorConfig()
    if backend == "torch":
        if is_onnx_spec(model) or is_engine_spec(model):
            raise ValueError(f"backend 'torch' runs checkpoints, not {model!r}: use onnxruntime or tensorrt")
        return BackendChoice(None, None, f"torch requested, on {device}")
    if backend == "onnxruntime":
        be = backends.engine_class("onnxruntime")(_onnx_for(model, cfg), device=device)
        return BackendChoice(be, be.meta, f"onnxruntime requested: {be.describe()}")
    if backend == "tensorrt":
        if device != "cuda":
            raise ValueError("backend 'tensorrt' needs a CUDA GPU; device resolved to 'cpu' (torch sees no GPU)")
        return _open_tensorrt(model, cfg, "tensorrt requested")
    if backend != "auto":
        raise ValueError(f"backend must be one of {', '.join(BACKENDS)}; got {backend!r}")
    return _choose_gpu(model, cfg) if device == "cuda" else _choose_cpu(model, cfg)


def _choose_gpu(model: str, cfg: DetectorConfig) -> BackendChoice:
    """auto on a GPU: TensorRT, else ONNX Runtime's CUDA provider, else torch."""
    notes: List[str] = []
    if backends.module_available("tensorrt"):
        try:
            return _open_tensorrt(model, cfg, "auto: TensorRT imports and a GPU is present")
        except Exception as exc:  # noqa: BLE001 - auto moves on, naming the failure
            notes.append(f"TensorRT failed ({type(exc).__name__}: {exc})")
    else:
        notes.append("tensorrt is not installed")
    if _ort_has_cuda():
        try:
            be = backends.engine_class("onnxruntime")(_onnx_for(model, cfg), device="cuda")
            return BackendChoice(be, be.meta, f"auto: {be.describe()} ({'; '.join(notes)})")
        except (ValueError, RuntimeError, OSError) as exc:  # e.g. CUDA/cuDNN libraries not found
            notes.append(f"onnxruntime CUDA failed ({exc})")
    else:
        notes.append("onnxruntime has no CUDA provider")
    return _torch_fallback(model, "cuda", notes)


def _choose_cpu(model: str, cfg: DetectorConfig) -> BackendChoice:
    """auto on the CPU: ONNX Runtime when installed, else torch."""
    if backends.module_available("onnxruntime"):
        be = backends.engine_class("onnxruntime")(_onnx_for(model, cfg), device="cpu")
        return BackendChoice(be, be.meta, f"auto: {be.describe()}: no GPU; {CPU_CHOICE_NOTE}")
    return _torch_fallback(model, "cpu", ["no GPU and onnxruntime is not installed"])


def _torch_fallback(model: str, device: str, notes: List[str]) -> BackendChoice:
    if is_onnx_spec(model) or is_engine_spec(model):
        raise ValueError(
            f"backend auto fell back to torch ({'; '.join(notes)}), which cannot run {model!r}: "
            "give a checkpoint or install onnxruntime"
        )
    return BackendChoice(None, None, f"auto: torch on {device} ({'; '.join(notes)})")


def _ort_has_cuda() -> bool:
    if not backends.module_available("onnxruntime"):
        return False
    import onnxruntime as ort

    return "CUDAExecutionProvider" in ort.get_available_providers()


# --------------------------------------------------------------------------- artefacts


def onnx_for(model: str, size: int, encoder_size: Optional[int] = None) -> Path:
    """The ONNX export to run for a model spec: the spec itself when it is an .onnx
    (file or directory), else the cached export, made now when missing."""
    if is_engine_spec(model):
        raise ValueError(f"model {model!r} is a TensorRT engine; only the tensorrt backend on a GPU can run it")
    if is_onnx_spec(model):
        return artefacts.resolve_onnx_file(model)
    found = artefacts.cached_onnx(model, size, encoder_size)
    if found is not None:
        return found
    from .deploy.onnx_export import export_into_cache

    return export_into_cache(model, size, encoder_size)


def _onnx_for(model: str, cfg: DetectorConfig) -> Path:
    encoder = FAITHFUL_ENCODER_SIZE if cfg.mode == "faithful" else cfg.encoder_size
    return onnx_for(model, cfg.size, encoder)


def _open_tensorrt(model: str, cfg: DetectorConfig, why: str) -> BackendChoice:
    engine_cls = backends.engine_class("tensorrt")
    if is_engine_spec(model):
        be = engine_cls(model)
        return BackendChoice(be, be.meta, f"{why}: {be.describe()} (given engine)")
    build = engine_for(_onnx_for(model, cfg), _trt_precision(), size=cfg.size, patch_size=cfg.patch_size)
    be = engine_cls(build.path)
    return BackendChoice(be, be.meta, f"{why}: {be.describe()}; {build.summary()}")


def _trt_precision() -> str:
    value = os.environ.get(TRT_PRECISION_ENV, "auto")
    if value not in TRT_PRECISIONS:
        raise ValueError(f"{TRT_PRECISION_ENV} must be one of {', '.join(TRT_PRECISIONS)}; got {value!r}")
    return value


def engine_for(onnx_path, precision: str = "auto", size: Optional[int] = None, patch_size: Optional[int] = None,
               min_iou: float = DEFAULT_MIN_IOU) -> EngineBuild:
    """The TensorRT engine to run for an ONNX export: current in the cache, or built now.

    ``precision`` "auto": fp16 when the GPU has fast fp16 and the fp16 engine passed
    its validation against fp32 (mask IoU >= ``min_iou``), else fp32; the returned
    build's ``note`` says why.
    """
    if precision not in TRT_PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(TRT_PRECISIONS)}; got {precision!r}")
    if precision != "auto":
        return _engine(onnx_path, precision, size, patch_size, min_iou)
    trt = trt_run.import_tensorrt()
    if not trt_run.fast_fp16(trt):
        build = _engine(onnx_path, "fp32", size, patch_size, min_iou)
        build.note = ("fp32 because this GPU has no fast fp16" if trt_run.fp16_flag_supported(trt)
                      else f"fp32 because TensorRT {trt.__version__} has no FP16 builder flag")
        return build
    fp16 = _engine(onnx_path, "fp16", size, patch_size, min_iou)
    if fp16.validation.get("ok", True):
        return fp16
    fp32 = _engine(onnx_path, "fp32", size, patch_size, min_iou)
    fp32.note = (f"fp16 rejected: mask IoU {fp16.validation.get('mask_iou')} vs "
                 f"{fp16.validation.get('reference')} below {min_iou}")
    LOG.warning("using the fp32 engine: %s", fp32.note)
    return fp32


def _engine(onnx_path, precision: str, size: Optional[int], patch_size: Optional[int],
            min_iou: float) -> EngineBuild:
    """One precision's engine: the cached one when current, else built now (satsam_ros.deploy)."""
    env = trt_run.environment(trt_run.import_tensorrt())
    found = artefacts.current_engine(artefacts.engine_target(onnx_path, precision, env, size, patch_size))
    if found is not None:
        return found
    from .deploy.tensorrt_build import build_engine

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a failed fp16 check is reported in the build's note
        return build_engine(onnx_path, precision, size=size, patch_size=patch_size, min_iou=min_iou)

