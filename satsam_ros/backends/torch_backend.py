"""PyTorch backend: the model's patch module (:func:`satsam_ros.model.make_patch_module`).

Two ways to run the same weights:

* stock (``fused_attention=False``): transformers' own SAM modules, exactly as the
  reference pipeline ran them. Faithful mode uses this.
* fast (``fused_attention=True``): the image encoder's attention blocks are swapped for
  :class:`satsam_ros.backends.fused_attention.FusedRelPosAttention`, which computes the
  same function with less memory traffic (see its docstring). The weights are shared,
  not copied, and the outputs agree with the stock modules to float rounding
  (``test/test_fastpath.py``). This is SAM's ViT only: a SAM 2 model (Hiera, with its
  own windowed attention) runs its stock modules either way, and ``fused_attention``
  then reads False.

``precision`` selects autocast: ``fp32`` (no autocast), ``bf16`` (CPU or GPU) or
``fp16`` (GPU only). Reduced precision changes the logits by more than float noise,
so it is opt-in, and the benchmark reports how far the masks move.
"""

from __future__ import annotations

import os
from typing import Dict, Optional, Tuple

import numpy as np

from ..core.backend import AUTOCAST_PRECISIONS, Backend

# Patches per forward on a CPU: about this many token-channels (tokens x hidden size)
# per batch. Measured on a 2-core AMD EPYC (AVX-512): ViT-B at E = 256 (256 tokens x
# 768) is fastest at 4 patches per forward (16: 22 % slower per patch), ViT-B at
# E = 1024 at 1, the 96-wide tiny model at 16 and above. Big batches only add cache
# misses once the matrix products are large; GPUs take the full max_batch.
CPU_BATCH_TOKEN_CHANNELS = 1024 * 768


def cpu_batch(tokens_per_patch: int, hidden_size: int, max_batch: int) -> int:
    """Patches per forward on a CPU for an encoder of this size (1 .. max_batch)."""
    per_patch = max(1, int(tokens_per_patch) * int(hidden_size))
    return max(1, min(int(max_batch), CPU_BATCH_TOKEN_CHANNELS // per_patch))


def check_precision(precision: str, device: str) -> str:
    """Raise ValueError unless ``precision`` is usable on ``device``; return it."""
    if precision not in AUTOCAST_PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(AUTOCAST_PRECISIONS)}; got {precision!r}")
    if precision == "fp16" and not str(device).startswith("cuda"):
        raise ValueError("precision 'fp16' needs a CUDA device (float16 matmuls are slow on the CPU); use 'bf16'")
    return precision


def configure_threads(
    torch_threads: Optional[int] = None,
    interop_threads: Optional[int] = None,
    opencv_threads: Optional[int] = None,
) -> Dict[str, object]:
    """Set the thread pools the detector uses; ``None`` leaves a pool as it is.

    Returns the settings in force afterwards (and the OpenMP wait policy, which can
    only be chosen through the ``OMP_WAIT_POLICY`` environment variable before torch
    is first imported: ``PASSIVE`` keeps idle OpenMP workers from spinning, which
    matters a great deal when other processes, or the node's own DDS threads, share
    the cores). PyTorch allows setting the inter-op pool only once per process, before
    any inter-op work; a later attempt is reported in ``"interop_error"``.
    """
    import cv2
    import torch

    info: Dict[str, object] = {}
    for name, value in (("torch_threads", torch_threads), ("interop_threads", interop_threads),
                        ("opencv_threads", opencv_threads)):
        if value is not None and int(value) < 1:
            raise ValueError(f"{name} must be >= 1; got {value}")
    if torch_threads is not None:
        torch.set_num_threads(int(torch_threads))
    if interop_threads is not None and int(interop_threads) != torch.get_num_interop_threads():
        try:
            torch.set_num_interop_threads(int(interop_threads))
        except RuntimeError as exc:
            info["interop_error"] = str(exc)
    if opencv_threads is not None:
        cv2.setNumThreads(int(opencv_threads))
    info.update({
        "torch_threads": torch.get_num_threads(),
        "interop_threads": torch.get_num_interop_threads(),
        "opencv_threads": cv2.getNumThreads(),
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY", "(unset: libgomp default, spinning)"),
        "cpu_count": os.cpu_count(),
    })
    return info


def release_cuda_memory(torch) -> None:
    """Collect garbage, then hand PyTorch's cached CUDA blocks back to the driver (what
    ``nvidia-smi`` shows falls; memory still referenced stays)."""
    import gc

    gc.collect()
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.empty_cache()


class TorchBackend(Backend):
    """Runs the patch model with PyTorch on the CPU or a CUDA GPU.

    ``fused_attention``: run the encoder with :class:`FusedRelPosAttention` (same
    weights, same outputs to float rounding, less time and memory) where the model's
    family has it (SAM; not SAM 2). ``precision``:
    ``fp32``, ``bf16`` or ``fp16`` (autocast; fp16 only on CUDA). A model with an
    object-score head (SAM 2, EdgeTAM) runs its patch module ``with_score``, so
    :meth:`infer_scored` gives the presence logits of the same forward.
    """

    name = "torch"

    def __init__(self, sam_model, prompt_policy: str = "full_box", device: str = "cpu",
                 precision: str = "fp32", fused_attention: bool = False):
        import torch

        from ..model import (
            encoder_geometry,
            encoder_input_size,
            has_presence,
            make_patch_module,
            supports_fused_attention,
        )

        self._torch = torch
        self.device = device
        self.precision = check_precision(precision, device)
        self.fused_attention = bool(fused_attention) and supports_fused_attention(sam_model)
        model = sam_model
        if self.fused_attention:
            from .fused_attention import with_fused_attention

            model = with_fused_attention(sam_model)
        self.has_presence = has_presence(sam_model)
        self.module = make_patch_module(model, prompt_policy, with_score=self.has_presence).to(device).eval()
        self.input_size = encoder_input_size(sam_model)
        self.low_res_size = self.input_size // 4
        self._tokens, self._hidden = encoder_geometry(sam_model)
        self._autocast_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(self.precision)

    def preferred_batch(self, max_batch: int) -> int:
        """Patches per forward for the Detector: ``max_batch`` on a GPU; on a CPU
        what :func:`cpu_batch` finds for this encoder (never more than max_batch)."""
        if not str(self.device).startswith("cpu"):
            return int(max_batch)
        return cpu_batch(self._tokens, self._hidden, max_batch)

    def describe(self) -> str:
        extra = ", fused attention" if self.fused_attention else ""
        return f"{self.name} on {self.device} (encoder input {self.input_size}, {self.precision}{extra})"

    def close(self) -> None:
        """Drop the patch module; on CUDA, return the cached blocks to the driver."""
        self.module = None
        if str(self.device).startswith("cuda"):
            release_cuda_memory(self._torch)
        super().close()

    def infer(self, batch: np.ndarray) -> np.ndarray:
        return self._forward(batch)[0]

    def infer_scored(self, batch: np.ndarray) -> Tuple[np.ndarray, Optional[np.ndarray]]:
        """N x 3 x E x E -> (N x m x m logits, N object-score logits or None without the head)."""
        if self.infer_overridden(TorchBackend):
            return self.infer(batch), None
        return self._forward(batch)

    def _forward(self, batch: np.ndarray) -> Tuple[np.ndarray, Optional[np.ndarray]]:
        self.check_batch(batch)
        torch = self._torch
        with torch.inference_mode():
            x = torch.from_numpy(np.ascontiguousarray(batch)).to(self.device)
            if self._autocast_dtype is None:
                out = self.module(x)
            else:
                with torch.autocast(torch.device(self.device).type, dtype=self._autocast_dtype):
                    out = self.module(x)
            logits, scores = out if self.has_presence else (out, None)
            return logits.float().cpu().numpy(), None if scores is None else scores.float().cpu().numpy()
