"""ONNX Runtime backend: the exported patch model (see :mod:`satsam_ros.artefacts`).

Runs on the CPU execution provider, or on a GPU through the CUDA provider (and,
when asked for, ONNX Runtime's TensorRT provider in front of it). Needs neither
torch nor transformers: a Jetson or a slim container can run an exported .onnx with
``onnxruntime`` alone.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import List, Optional, Tuple

import numpy as np

from ..artefacts import ONNX_SCORE_OUTPUT, meta_from_metadata, resolve_onnx_file
from ..core.backend import Backend

CPU_EP = "CPUExecutionProvider"
CUDA_EP = "CUDAExecutionProvider"
TRT_EP = "TensorrtExecutionProvider"
ORT_TRT_ENV = "SATSAM_ORT_TENSORRT"  # "1": put ORT's TensorRT provider first on a GPU
#: "0": intra-op worker threads block instead of spinning between runs (ORT's
#: session.intra_op.allow_spinning; unset: ORT's default, spinning). Spinning workers keep a
#: core busy after each run, which the Detector's pre / post-processing on the same cores
#: then lacks (docs/bench.md, "Coarse to fine").
ORT_SPIN_ENV = "SATSAM_ORT_SPINNING"


def providers_for(device: str, available: List[str], tensorrt_ep: bool = False) -> List[str]:
    """Execution providers, best first, for ``device`` ("cpu" or "cuda").

    Raises ValueError when ``cuda`` is asked for and this ONNX Runtime build has no
    CUDA provider (no silent fallback to the CPU). The CPU provider always comes
    last so operators a GPU provider lacks still run.
    """
    if device == "cpu":
        return [CPU_EP]
    if device != "cuda":
        raise ValueError(f"onnxruntime backend: device must be 'cpu' or 'cuda'; got {device!r}")
    if CUDA_EP not in available:
        raise ValueError(
            f"onnxruntime backend: device 'cuda' asked for, but this onnxruntime offers only "
            f"{', '.join(available)} (install onnxruntime-gpu)"
        )
    chosen = [CUDA_EP, CPU_EP]
    if tensorrt_ep and TRT_EP in available:
        chosen.insert(0, TRT_EP)
    return chosen


def _static_dim(value, what: str, path: Path) -> int:
    if not isinstance(value, int) or value <= 0:
        raise ValueError(f"{path}: the graph's {what} must be a fixed positive size, got {value!r}")
    return value


class OnnxRuntimeBackend(Backend):
    """Runs an exported patch model: N x 3 x E x E float32 -> N x m x m float32 logits
    (and, from a graph with the second output ``object_score``, N object-score logits:
    ``has_presence``; exports of SAM and those made before it have one output).

    ``path``: a .onnx file or a directory holding one. ``device``: "cpu" or "cuda".
    ``threads``: intra-op threads on the CPU (0: ONNX Runtime's default, all cores).
    ``tensorrt_ep``: on a GPU, put ONNX Runtime's TensorRT provider first (default:
    ``$SATSAM_ORT_TENSORRT == "1"``). ``meta`` is the export's SatsamMeta.
    """

    name = "onnxruntime"

    def __init__(self, path, device: str = "cpu", threads: int = 0, tensorrt_ep: Optional[bool] = None):
        import onnxruntime as ort

        self.path = resolve_onnx_file(path)
        if tensorrt_ep is None:
            tensorrt_ep = os.environ.get(ORT_TRT_ENV, "") == "1"
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if threads:
            options.intra_op_num_threads = int(threads)
        spinning = os.environ.get(ORT_SPIN_ENV, "")
        if spinning in ("0", "1"):
            options.add_session_config_entry("session.intra_op.allow_spinning", spinning)
        elif spinning:
            raise ValueError(f"{ORT_SPIN_ENV} must be 0 or 1 (or unset); got {spinning!r}")
        providers = providers_for(device, ort.get_available_providers(), bool(tensorrt_ep))
        if device == "cuda" and hasattr(ort, "preload_dlls"):
            # onnxruntime-gpu >= 1.21: load CUDA / cuDNN from the nvidia-* wheels torch installed
            ort.preload_dlls()
        try:
            self.session = ort.InferenceSession(str(self.path), options, providers=providers)
        except Exception as exc:  # ORT raises its own exception types (InvalidGraph, Fail, ...)
            raise ValueError(f"{self.path}: onnxruntime cannot load this model ({exc})") from exc
        self.device = device
        self.providers = self.session.get_providers()
        if device == "cuda" and CUDA_EP not in self.providers and TRT_EP not in self.providers:
            raise ValueError(f"onnxruntime could not start a GPU provider for {self.path} (active: {self.providers})")

        inputs, outputs = self.session.get_inputs(), self.session.get_outputs()
        if len(inputs) != 1 or len(outputs) not in (1, 2):
            raise ValueError(
                f"{self.path}: expected one input and one output (logits) or two (logits, {ONNX_SCORE_OUTPUT}) "
                f"(a satsam patch model), got {[i.name for i in inputs]} -> {[o.name for o in outputs]}"
            )
        score = None
        if len(outputs) == 2:  # logits and the object score, in either order
            outputs = sorted(outputs, key=lambda o: len(o.shape) != 3)
            score = outputs[1]
            if len(score.shape) != 1:
                raise ValueError(f"{self.path}: outputs {[o.name for o in outputs]} have shapes "
                                 f"{[o.shape for o in outputs]}, expected N x m x m logits and N object scores")
        shape = inputs[0].shape
        if len(shape) != 4 or shape[1] != 3:
            raise ValueError(f"{self.path}: input {inputs[0].name} has shape {shape}, expected N x 3 x E x E")
        self.input_size = _static_dim(shape[2], "input height", self.path)
        if _static_dim(shape[3], "input width", self.path) != self.input_size:
            raise ValueError(f"{self.path}: input must be square, got {shape}")
        out_shape = outputs[0].shape
        if len(out_shape) != 3:
            raise ValueError(f"{self.path}: output {outputs[0].name} has shape {out_shape}, expected N x m x m")
        # m is declared by satsam exports; graphs from elsewhere may leave it symbolic (SAM: E / 4)
        self.low_res_size = out_shape[1] if isinstance(out_shape[1], int) else self.input_size // 4
        _static_dim(self.low_res_size, "output side", self.path)
        self._in, self._out = inputs[0].name, outputs[0].name
        self._score = None if score is None else score.name
        self.has_presence = score is not None
        props = dict(self.session.get_modelmeta().custom_metadata_map)
        self.meta = meta_from_metadata(props, self.path, self.input_size)

    def describe(self) -> str:
        return f"onnxruntime on {self.device} via {self.providers[0]} (encoder input {self.input_size})"

    def close(self) -> None:
        """Drop the inference session (ONNX Runtime frees its memory, GPU arena included)."""
        self.session = None
        super().close()

    def infer(self, batch: np.ndarray) -> np.ndarray:
        """N x 3 x E x E float32 normalised patches -> N x m x m float32 logits."""
        return self._run(batch, False)[0]

    def infer_scored(self, batch: np.ndarray) -> Tuple[np.ndarray, Optional[np.ndarray]]:
        """N x 3 x E x E -> (N x m x m logits, N object-score logits, or None from a one-output graph)."""
        if self.infer_overridden(OnnxRuntimeBackend):
            return self.infer(batch), None
        return self._run(batch, self.has_presence)

    def _run(self, batch: np.ndarray, scores: bool) -> Tuple[np.ndarray, Optional[np.ndarray]]:
        self.check_batch(batch)
        names = [self._out, self._score] if scores else [self._out]
        got = self.session.run(names, {self._in: np.ascontiguousarray(batch)})
        out, n, m = got[0], batch.shape[0], self.low_res_size
        if out.shape != (n, m, m):
            raise ValueError(f"{self.path}: the graph returned {out.shape}, expected {(n, m, m)}")
        if not scores:
            return np.asarray(out, dtype=np.float32), None
        if got[1].shape != (n,):
            raise ValueError(f"{self.path}: the graph returned {self._score} of shape {got[1].shape}, expected {(n,)}")
        return np.asarray(out, dtype=np.float32), np.asarray(got[1], dtype=np.float32)
