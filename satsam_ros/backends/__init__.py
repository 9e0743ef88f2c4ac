"""Inference engines behind the core's :class:`~satsam_ros.core.backend.Backend`: running only.

One registry (:data:`ENGINES`): the engine's name -> where its class lives. Classes are
imported on use, so a machine without TensorRT (or without torch, running ONNX Runtime)
still imports this package. Opening an engine for a model spec (exports, caches, the
``auto`` choice) is :mod:`satsam_ros.runtime`'s job; making artefacts is
:mod:`satsam_ros.deploy`'s.
"""

from __future__ import annotations

import importlib
import importlib.util
from typing import Dict, Tuple

#: engine name -> "module:class" (relative to this package)
ENGINES: Dict[str, str] = {
    "torch": "torch_backend:TorchBackend",
    "onnxruntime": "onnxruntime_backend:OnnxRuntimeBackend",
    "tensorrt": "tensorrt_backend:TensorRTBackend",
}
NAMES: Tuple[str, ...] = tuple(ENGINES)


def engine_class(name: str) -> type:
    """The Backend class of engine ``name`` (imported now); ValueError naming the engines."""
    if name not in ENGINES:
        raise ValueError(f"engine must be one of {', '.join(NAMES)}; got {name!r}")
    module, cls = ENGINES[name].split(":")
    return getattr(importlib.import_module(f"{__name__}.{module}"), cls)


def module_available(name: str) -> bool:
    """True when ``import name`` would find the module (without importing it)."""
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False
