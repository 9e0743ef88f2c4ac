"""The Detector: one frame in, mask + probability + boxes out.

This is the one inference path. The ROS node, the ``satsam`` CLI, bag evaluation and
the training side's evaluation all call :meth:`Detector.detect`, so the numbers
training reports are the numbers the node delivers.

One frame, step by step (shapes for an H x W input, S x S resize, P x P patches,
encoder input E, low-res logits m = E / 4):

1. ``imaging.to_sam_rgb``: H x W (x C) -> H x W x 3 float32 RGB, 0..255.
2. resize to S x S; SAM normalisation, once for the whole frame.
3. ``PatchGrid.extract``: N x P x P x 3; resized to E x E when E != P.
4. backend: N x 3 x E x E -> N x m x m logits (``fast``: up to ``max_batch`` patches
   per forward; ``faithful``: one patch per forward at E = 1024, as the reference
   pipeline's SamProcessor does).
5. logits upsampled to P x P, stitched (blended where patches overlap) to S x S,
   sigmoid, resized to H x W, thresholded, connected components -> boxes.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Dict, List, Optional

import cv2
import numpy as np

from . import imaging, postprocess, tiling
from .backends import Backend
from .postprocess import Box

MODES = ("fast", "faithful")
FAITHFUL_ENCODER_SIZE = 1024  # SamProcessor resizes every input to 1024 on its long side


@dataclass
class Result:
    """What the detector found in one frame.

    mask: H x W uint8, 0 or 255. probability: H x W float32 in [0, 1].
    boxes: connected components (XYXY pixels of the input frame), best score first.
    timings: seconds per stage ("pre", "model", "post", "total").
    """

    mask: np.ndarray
    probability: np.ndarray
    boxes: List[Box]
    timings: Dict[str, float]
    patches: int
    size: int
    threshold: float

    def to_dict(self) -> Dict[str, object]:
        """JSON-ready summary (no pixel arrays)."""
        return {
            "boxes": [b.to_dict() for b in self.boxes],
            "threshold": self.threshold,
            "size": self.size,
            "patches": self.patches,
            "timings": dict(self.timings),
            "height": int(self.mask.shape[0]),
            "width": int(self.mask.shape[1]),
        }


@dataclass
class DetectorConfig:
    """Settings of a Detector; every field is checked by :meth:`validate`."""

    size: int = 512
    patch_size: int = 256
    overlap: int = 0
    mode: str = "fast"
    threshold: Optional[float] = None  # None: the checkpoint's tuned threshold
    min_area: int = 0
    max_batch: int = 16

    def validate(self) -> DetectorConfig:
        tiling.check_size(self.size)
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {', '.join(MODES)}; got {self.mode!r}")
        if not 16 <= int(self.patch_size) <= int(self.size) or int(self.patch_size) % 16:
            raise ValueError(f"patch_size must be a multiple of 16 in [16, size={self.size}]; got {self.patch_size}")
        if not 0 <= int(self.overlap) < int(self.patch_size) // 2 + 1:
            raise ValueError(f"overlap must be in [0, patch_size / 2]; got {self.overlap}")
        if self.threshold is not None and not 0.0 <= float(self.threshold) <= 1.0:
            raise ValueError(f"threshold must be in [0, 1]; got {self.threshold}")
        if int(self.min_area) < 0:
            raise ValueError(f"min_area must be >= 0; got {self.min_area}")
        if int(self.max_batch) < 1:
            raise ValueError(f"max_batch must be >= 1; got {self.max_batch}")
        return self


def _resize_patches(patches: np.ndarray, size: int) -> np.ndarray:
    """N x P x P x C float32 -> N x size x size x C, bilinear (as SamProcessor)."""
    if patches.shape[1] == size:
        return patches
    return np.stack([cv2.resize(p, (size, size), interpolation=cv2.INTER_LINEAR) for p in patches])


def _upsample_logits(logits: np.ndarray, size: int) -> np.ndarray:
    """N x m x m logits -> N x size x size, bilinear, all patches in one cv2 call."""
    n, m = logits.shape[0], logits.shape[1]
    if m == size:
        return logits
    out = np.empty((n, size, size), dtype=np.float32)
    for start in range(0, n, 500):  # cv2 handles at most 512 channels per call
        chunk = np.ascontiguousarray(logits[start:start + 500].transpose(1, 2, 0))
        up = cv2.resize(chunk, (size, size), interpolation=cv2.INTER_LINEAR)
        out[start:start + 500] = up.reshape(size, size, -1).transpose(2, 0, 1)
    return out


class Detector:
    """Patch-tiled SAM satellite detector around one :class:`Backend`.

    Build one with :meth:`from_model` (loads a model spec) or directly from a backend.
    ``threshold`` defaults to the checkpoint's tuned value.
    """

    def __init__(self, backend: Backend, config: Optional[DetectorConfig] = None, meta=None):
        from .model import SatsamMeta

        self.backend = backend
        self.config = (config or DetectorConfig()).validate()
        self.meta = meta if meta is not None else SatsamMeta(encoder_input_size=backend.input_size)
        if self.config.mode == "faithful" and backend.input_size != FAITHFUL_ENCODER_SIZE:
            raise ValueError(
                f"faithful mode needs an encoder input of {FAITHFUL_ENCODER_SIZE}, the backend has "
                f"{backend.input_size} (Detector.from_model resizes the encoder for you)"
            )
        self.threshold = float(self.config.threshold if self.config.threshold is not None else self.meta.threshold)
        self.grid = tiling.PatchGrid(self.config.size, self.config.patch_size, self.config.overlap)
        self.batch = 1 if self.config.mode == "faithful" else int(self.config.max_batch)
        self.backend_reason = f"{backend.name} given directly"  # from_model: which engine and why

    @classmethod
    def from_model(
        cls,
        model: str = "tiny",
        backend: str = "torch",
        device: str = "auto",
        config: Optional[DetectorConfig] = None,
        **overrides,
    ) -> Detector:
        """Load ``model`` (a spec for :func:`satsam_ros.model.load_model`) on a backend.

        ``overrides`` are DetectorConfig fields (size=1024, mode="faithful", ...).
        """
        from .backends import BACKENDS, resolve_device

        cfg = config or DetectorConfig()
        for key, value in overrides.items():
            if not hasattr(cfg, key):
                raise TypeError(f"unknown detector setting {key!r}")
            setattr(cfg, key, value)
        cfg.validate()
        if backend not in BACKENDS:
            raise ValueError(f"backend must be one of {', '.join(BACKENDS)}; got {backend!r}")
        device = resolve_device(device)
        reason = f"torch requested, on {device}"
        if backend != "torch":  # onnxruntime, tensorrt, auto: see satsam_ros.export.choose_backend
            from .export import choose_backend

            choice = choose_backend(str(model), backend, device, cfg.size, cfg.mode, cfg.patch_size)
            if choice.backend is not None:
                det = cls(choice.backend, cfg, choice.meta)
                det.backend_reason = choice.reason
                return det
            reason = choice.reason  # auto chose torch
        if backend in ("auto", "torch"):
            from .backends.torch_backend import TorchBackend
            from .model import load_model, resize_encoder

            sam, meta = load_model(model, device=device)
            if cfg.mode == "faithful":
                sam = resize_encoder(sam, FAITHFUL_ENCODER_SIZE)
            det = cls(TorchBackend(sam, meta.prompt_policy, device), cfg, meta)
            det.backend_reason = reason
            return det
        raise ValueError(f"backend {backend!r} is not available in this build; use 'torch'")

    def detect(self, frame: np.ndarray, order: str = "rgb") -> Result:
        """Run the detector on one frame (see :mod:`satsam_ros.imaging` for formats).

        ``order`` is the channel order of colour frames ("rgb", "bgr", "rgba", "bgra").
        Raises :class:`satsam_ros.imaging.FrameError` for frames it cannot use.
        """
        t0 = time.perf_counter()
        rgb = imaging.to_sam_rgb(frame, order)
        height, width = rgb.shape[:2]
        size, e = self.config.size, self.backend.input_size
        normed = imaging.normalize(tiling.resize(rgb, size, size))
        patches = self.grid.extract(normed)  # N x P x P x 3
        t1 = time.perf_counter()

        low_res = []
        prep = 0.0
        for start in range(0, len(patches), self.batch):
            tp = time.perf_counter()
            chunk = _resize_patches(patches[start:start + self.batch], e)
            chunk = np.ascontiguousarray(chunk.transpose(0, 3, 1, 2))
            prep += time.perf_counter() - tp
            low_res.append(self.backend.infer(chunk))
        t2 = time.perf_counter()

        logits = _upsample_logits(np.concatenate(low_res), self.config.patch_size)
        prob = postprocess.sigmoid(self.grid.stitch(logits))
        prob = np.clip(tiling.resize(prob, height, width), 0.0, 1.0)
        mask = postprocess.threshold(prob, self.threshold)
        boxes = postprocess.boxes_from_mask(mask, prob, int(self.config.min_area))
        t3 = time.perf_counter()
        timings = {
            "pre": (t1 - t0) + prep,
            "model": (t2 - t1) - prep,
            "post": t3 - t2,
            "total": t3 - t0,
        }
        return Result(mask, prob, boxes, timings, len(patches), size, self.threshold)
