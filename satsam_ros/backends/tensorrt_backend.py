"""TensorRT backend: run serialized engines of the exported patch model.

Importing this module imports nothing of TensorRT (nor torch): both are imported
inside the functions that need them, so the package loads on machines without them.

Two execution APIs, chosen by the TensorRT version (:func:`execution_api`):

* ``binding`` (TensorRT 8.0 - 8.4: JetPack 4.6 ships 8.2, JetPack 5.0 ships 8.4):
  ``set_binding_shape`` + ``execute_async_v2(bindings, stream_handle)``;
* ``tensor`` (TensorRT 8.5 and newer, the only API left in 10.x):
  ``set_input_shape`` + ``set_tensor_address`` + ``execute_async_v3(stream_handle)``.

Device buffers are torch CUDA tensors (no pycuda); the engine runs on a torch CUDA
stream of its own. An engine built from an export with presence (SAM 2, EdgeTAM) has a
second output, ``object_score`` (N object-score logits); the runners find the logits
(N x m x m) and the score (N) by name or rank, and every output gets a buffer. An
engine is loaded only when its key record matches this machine's TensorRT and GPU and
the engine's bytes (:func:`satsam_ros.artefacts.engine_status`).
Building engines (and checking fp16 ones) is :mod:`satsam_ros.deploy.tensorrt_build`.
"""

from __future__ import annotations

import contextlib
import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import numpy as np

from ..artefacts import ONNX_OUTPUT, ONNX_SCORE_OUTPUT, engine_status, read_record
from ..core.backend import Backend

LOG = logging.getLogger("satsam_ros.tensorrt")

TENSOR_API_SINCE = (8, 5)  # set_input_shape / set_tensor_address / execute_async_v3
MEMORY_POOL_SINCE = (8, 4)  # IBuilderConfig.set_memory_pool_limit replaces max_workspace_size
NO_EXPLICIT_BATCH_FLAG_SINCE = (10, 0)  # networks are always explicit-batch; the flag is deprecated
WEAK_TYPING_REMOVED_SINCE = (11, 0)  # BuilderFlag.FP16 and platform_has_fast_fp16 are gone in 11.x
OLDEST_SUPPORTED = (8, 0)

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
    """The engine's input, its logits output and (an export with presence) its
    object-score output, by name and (binding API) index."""

    input: str
    output: str
    input_index: int = -1
    output_index: int = -1
    num_bindings: int = 2
    output_dtype: Any = None
    score: Optional[str] = None
    score_index: int = -1
    score_dtype: Any = None


def _logits_and_score(names: List[str], ranks: List[int]) -> Tuple[int, Optional[int]]:
    """Positions (in ``names``) of the logits output and of the object-score output (None
    when there is one output): by their export names (``logits``, ``object_score``),
    else by rank (3 and 1). ValueError for anything else."""
    if len(names) == 1:
        return 0, None
    if len(names) == 2:
        if set(names) == {ONNX_OUTPUT, ONNX_SCORE_OUTPUT}:
            return names.index(ONNX_OUTPUT), names.index(ONNX_SCORE_OUTPUT)
        if sorted(ranks) == [1, 3]:
            return ranks.index(3), ranks.index(1)
    raise ValueError(f"engine has outputs {names} (ranks {ranks}); expected {ONNX_OUTPUT} (N x m x m) and "
                     f"optionally {ONNX_SCORE_OUTPUT} (N)")


class TensorApiRunner:
    """TensorRT >= 8.5: tensors addressed by name, ``execute_async_v3``."""

    api = "tensor"

    def __init__(self, trt, engine):
        names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
        inputs = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        outputs = [n for n in names if n not in inputs]
        if len(inputs) != 1 or len(outputs) not in (1, 2):
            raise ValueError(f"engine has inputs {inputs} and outputs {outputs}; expected one input and one "
                             f"output ({ONNX_OUTPUT}) or two ({ONNX_OUTPUT}, {ONNX_SCORE_OUTPUT})")
        ranks = [len(engine.get_tensor_shape(n)) for n in outputs] if len(outputs) > 1 else [3]
        o, sc = _logits_and_score(outputs, ranks)
        self.io = IoNames(inputs[0], outputs[o], output_dtype=engine.get_tensor_dtype(outputs[o]))
        if sc is not None:
            self.io.score, self.io.score_dtype = outputs[sc], engine.get_tensor_dtype(outputs[sc])

    def set_batch(self, context, shape: Shape) -> Tuple[int, ...]:
        """Set the input shape; return the logits' shape TensorRT derives from it."""
        if not context.set_input_shape(self.io.input, tuple(shape)):
            raise RuntimeError(f"TensorRT rejected input shape {tuple(shape)} (outside the optimisation profile?)")
        return tuple(context.get_tensor_shape(self.io.output))

    def score_shape(self, context) -> Tuple[int, ...]:
        """The object score's shape for the input shape set last (with a score output)."""
        return tuple(context.get_tensor_shape(self.io.score))

    def execute(self, context, input_ptr: int, output_ptr: int, stream_handle: int,
                score_ptr: Optional[int] = None) -> None:
        context.set_tensor_address(self.io.input, int(input_ptr))
        context.set_tensor_address(self.io.output, int(output_ptr))
        if self.io.score is not None:
            if score_ptr is None:
                raise ValueError(f"the engine's {self.io.score} output needs a buffer")
            context.set_tensor_address(self.io.score, int(score_ptr))
        if not context.execute_async_v3(int(stream_handle)):
            raise RuntimeError("TensorRT execute_async_v3 failed (see the TensorRT log)")


class BindingApiRunner:
    """TensorRT 8.0 - 8.4: binding indices, ``execute_async_v2``."""

    api = "binding"

    def __init__(self, trt, engine):
        count = engine.num_bindings
        inputs = [i for i in range(count) if engine.binding_is_input(i)]
        outputs = [i for i in range(count) if i not in inputs]
        if len(inputs) != 1 or len(outputs) not in (1, 2):
            raise ValueError(f"engine has {len(inputs)} input and {len(outputs)} output bindings; expected one "
                             f"input and one output ({ONNX_OUTPUT}) or two ({ONNX_OUTPUT}, {ONNX_SCORE_OUTPUT})")
        names = [engine.get_binding_name(b) for b in outputs]
        ranks = [len(engine.get_binding_shape(b)) for b in outputs] if len(outputs) > 1 else [3]
        o, sc = _logits_and_score(names, ranks)
        i = inputs[0]
        self.io = IoNames(engine.get_binding_name(i), names[o], i, outputs[o], count,
                          engine.get_binding_dtype(outputs[o]))
        if sc is not None:
            self.io.score, self.io.score_index = names[sc], outputs[sc]
            self.io.score_dtype = engine.get_binding_dtype(outputs[sc])

    def set_batch(self, context, shape: Shape) -> Tuple[int, ...]:
        if not context.set_binding_shape(self.io.input_index, tuple(shape)):
            raise RuntimeError(f"TensorRT rejected input shape {tuple(shape)} (outside the optimisation profile?)")
        return tuple(context.get_binding_shape(self.io.output_index))

    def score_shape(self, context) -> Tuple[int, ...]:
        """The object score's shape for the input shape set last (with a score output)."""
        return tuple(context.get_binding_shape(self.io.score_index))

    def execute(self, context, input_ptr: int, output_ptr: int, stream_handle: int,
                score_ptr: Optional[int] = None) -> None:
        bindings = [0] * self.io.num_bindings
        bindings[self.io.input_index] = int(input_ptr)
        bindings[self.io.output_index] = int(output_ptr)
        if self.io.score is not None:
            if score_ptr is None:
                raise ValueError(f"the engine's {self.io.score} output needs a buffer")
            bindings[self.io.score_index] = int(score_ptr)
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
    """Runs a serialized engine on a CUDA GPU: N x 3 x E x E float32 -> N x m x m (and, an
    engine with the ``object_score`` output, N object-score logits: ``has_presence``).

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
        self.has_presence = self.runner.io.score is not None
        self._score_dtype = torch_dtype(trt, self.runner.io.score_dtype) if self.has_presence else None
        self._stream = torch.cuda.Stream()
        self._cuda = "cuda"  # where the buffers live

    def describe(self) -> str:
        return (f"tensorrt {self._trt.__version__} {self.precision} on {torch_device_name(self._torch)} "
                f"({self.api} API, encoder input {self.input_size}, batch 1..{self.max_batch})")

    def close(self) -> None:
        """Destroy the execution context, then the engine and the runtime (in that
        order, as TensorRT requires), and return PyTorch's cached CUDA blocks."""
        from .torch_backend import release_cuda_memory

        self.context = None
        self.runner = None
        self.engine = None
        self._runtime = None
        release_cuda_memory(self._torch)
        super().close()

    def infer(self, batch: np.ndarray) -> np.ndarray:
        """N x 3 x E x E float32 normalised patches -> N x m x m float32 logits."""
        return self._run(batch)[0]

    def infer_scored(self, batch: np.ndarray) -> Tuple[np.ndarray, Optional[np.ndarray]]:
        """N x 3 x E x E -> (N x m x m logits, N object-score logits, or None without that output)."""
        if self.infer_overridden(TensorRTBackend):
            return self.infer(batch), None
        return self._run(batch)

    def _on_stream(self):
        """The context that puts torch's work on the engine's stream."""
        stream = self._stream
        return self._torch.cuda.stream(stream) if self._cuda == "cuda" else contextlib.nullcontext()

    def _run(self, batch: np.ndarray) -> Tuple[np.ndarray, Optional[np.ndarray]]:
        """Both outputs of the engine, batches over the profile's maximum split; the score
        output (when the engine has one) is always bound, as TensorRT requires."""
        self.check_batch(batch)
        torch, cuda = self._torch, self._cuda
        results, scores = [], []
        for start in range(0, batch.shape[0], self.max_batch):
            chunk = np.ascontiguousarray(batch[start:start + self.max_batch])
            with self._on_stream():
                x = torch.from_numpy(chunk).to(cuda)
                n = x.shape[0]
                out_shape = self.runner.set_batch(self.context, tuple(x.shape))
                m = self.low_res_size
                if tuple(out_shape) != (n, m, m):
                    raise RuntimeError(f"{self.path}: engine output shape {out_shape}, expected {(n, m, m)}")
                out = torch.empty(out_shape, dtype=self._out_dtype, device=cuda)
                score = None
                if self.has_presence:
                    score_shape = self.runner.score_shape(self.context)
                    if tuple(score_shape) != (n,):
                        raise RuntimeError(f"{self.path}: engine {self.runner.io.score} shape {score_shape}, "
                                           f"expected {(n,)}")
                    score = torch.empty(score_shape, dtype=self._score_dtype, device=cuda)
                self.runner.execute(self.context, x.data_ptr(), out.data_ptr(), self._stream.cuda_stream,
                                    None if score is None else score.data_ptr())
            self._stream.synchronize()
            results.append(out.float().cpu().numpy())
            if score is not None:
                scores.append(score.float().cpu().numpy())
        logits = np.concatenate(results) if len(results) > 1 else results[0]
        return logits, (np.concatenate(scores) if scores else None)


def torch_device_name(torch) -> str:
    return torch.cuda.get_device_name(torch.cuda.current_device())
