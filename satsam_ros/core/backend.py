"""The interface the Detector runs: the patch model behind one engine.

A backend takes a batch of SAM-normalised patches at the encoder's input size and
returns SAM's low-resolution mask logits for the fixed prompt policy (``infer``), and,
where the model has an object-score head (SAM 2, EdgeTAM: ``has_presence``), also one
presence logit per patch (``infer_scored``). Everything before
(tiling, normalisation) and after (upsampling, stitching, thresholding) is core code,
so every engine produces results through the same path. The engines themselves
(torch, ONNX Runtime, TensorRT) live in :mod:`satsam_ros.backends`; the core only knows
this interface, so it imports none of them.
"""

from __future__ import annotations

import abc
from typing import Optional, Tuple

import numpy as np

#: Reduced precisions a backend may compute in (torch autocast; fast mode only).
#: TensorRT *engine* precisions are another thing: ``satsam_ros.artefacts.ENGINE_PRECISIONS``.
AUTOCAST_PRECISIONS = ("fp32", "bf16", "fp16")


class Backend(abc.ABC):
    """The patch model behind one engine.

    Attributes: ``name`` (the engine), ``device`` (where it runs), ``input_size``
    (E, the square encoder input), ``low_res_size`` (m, the side of the logits grid
    per patch, E / 4 for SAM), ``has_presence`` (whether :meth:`infer_scored` gives
    object scores: the model has the head and, for an export, the graph its output).
    """

    name = "base"
    device = "cpu"
    input_size = 0
    low_res_size = 0
    has_presence = False
    closed = False

    @abc.abstractmethod
    def infer(self, batch: np.ndarray) -> np.ndarray:
        """N x 3 x E x E float32 normalised patches -> N x m x m float32 logits."""

    def infer_scored(self, batch: np.ndarray) -> Tuple[np.ndarray, Optional[np.ndarray]]:
        """N x 3 x E x E float32 normalised patches -> (N x m x m float32 logits, N float32
        object-score logits or None).

        The scores are the mask decoder's presence logits (``sigmoid``: the probability
        that the patch holds a satellite); None when the model has no such head (SAM, an
        export made without the output). This default runs :meth:`infer` and gives None;
        engines whose model has the head override it (one forward for both).
        """
        return self.infer(batch), None

    def infer_overridden(self, engine: type) -> bool:
        """True when this object's class derives from the engine class ``engine`` and
        overrides its ``infer`` but not its ``infer_scored`` (a wrapper or a stand-in that
        changes the logits): then the engine's ``infer_scored`` must go through that
        ``infer`` (and give no scores) so what the Detector gets is what ``infer`` gives."""
        cls = type(self)
        return cls.infer is not engine.infer and cls.infer_scored is engine.infer_scored

    def describe(self) -> str:
        """One line for logs: engine, device, encoder input."""
        return f"{self.name} on {self.device} (encoder input {self.input_size})"

    def preferred_batch(self, max_batch: int) -> int:
        """Patches per forward this engine runs best with (never more than ``max_batch``)."""
        return int(max_batch)

    def close(self) -> None:
        """Let go of the model and the memory it holds (GPU memory included); the
        backend cannot infer afterwards. Engines holding a model extend it."""
        self.closed = True

    def check_batch(self, batch: np.ndarray) -> None:
        """Raise ValueError unless batch is N x 3 x E x E float32 for this backend
        (RuntimeError once it is closed)."""
        if self.closed:
            raise RuntimeError(f"the {self.name} backend was closed (its model was released)")
        want: Tuple[int, int, int] = (3, self.input_size, self.input_size)
        if batch.ndim != 4 or tuple(batch.shape[1:]) != want or batch.dtype != np.float32:
            raise ValueError(
                f"{self.name} backend expects N x 3 x {self.input_size} x {self.input_size} float32, "
                f"got {batch.shape} {batch.dtype}"
            )
