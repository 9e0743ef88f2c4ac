"""Inference backends: one small interface, several engines.

A backend runs the *patch model*: a batch of normalised patches at the encoder's
input size goes in, SAM's low-resolution mask logits for the fixed prompt policy come
out. Everything before (tiling, normalisation) and after (upsampling, stitching,
thresholding) is shared code in :mod:`satsam_ros.detector`, so every backend produces
results through the same path.

Backends are imported lazily by name so that a machine without TensorRT (or without
torch, using ONNX Runtime) can still import this package.
"""

from __future__ import annotations

import abc
from typing import Tuple

import numpy as np

BACKENDS = ("auto", "torch", "onnxruntime", "tensorrt")
DEVICES = ("auto", "cpu", "cuda")


class Backend(abc.ABC):
    """The patch model behind one engine.

    Attributes: ``name`` (the engine), ``device`` (where it runs), ``input_size``
    (E, the square encoder input), ``low_res_size`` (m, the side of the logits grid
    per patch, E / 4 for SAM).
    """

    name = "base"
    device = "cpu"
    input_size = 0
    low_res_size = 0

    @abc.abstractmethod
    def infer(self, batch: np.ndarray) -> np.ndarray:
        """N x 3 x E x E float32 normalised patches -> N x m x m float32 logits."""

    def describe(self) -> str:
        return f"{self.name} on {self.device} (encoder input {self.input_size})"

    def check_batch(self, batch: np.ndarray) -> None:
        """Raise ValueError unless batch is N x 3 x E x E float32 for this backend."""
        want: Tuple[int, int, int] = (3, self.input_size, self.input_size)
        if batch.ndim != 4 or tuple(batch.shape[1:]) != want or batch.dtype != np.float32:
            raise ValueError(
                f"{self.name} backend expects N x 3 x {self.input_size} x {self.input_size} float32, "
                f"got {batch.shape} {batch.dtype}"
            )


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
