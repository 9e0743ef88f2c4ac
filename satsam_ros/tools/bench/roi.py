"""ROI tracking in the benchmark: full scans against the tracker on a moving satellite."""

from __future__ import annotations

import statistics
from typing import Any, Dict, Optional

import cv2
import numpy as np

from ...core import postprocess
from ...core.backend import Backend
from ...core.detector import Detector, DetectorConfig
from ...core.synthetic import moving_sequence
from .detector import _Models


class _BrightnessStandIn(Backend):
    """Runs the real backend (for its cost) but answers with patch brightness.

    A random-weight model finds nothing, so tracking would never engage; this
    transparent stand-in marks bright pixels (the synthetic satellite) instead, so the
    tracker's logic, speed-up and accuracy cost can be measured with real model cost.
    """

    def __init__(self, real: Backend):
        self.real = real
        self.name = f"{real.name}+brightness"
        self.device = real.device
        self.input_size = real.input_size
        self.low_res_size = real.low_res_size

    def infer(self, batch: np.ndarray) -> np.ndarray:
        self.real.infer(batch)
        m = self.low_res_size
        red = batch[:, 0]  # normalised red: the satellite (> 200 gray) is above 1.3
        small = np.stack([cv2.resize(p, (m, m), interpolation=cv2.INTER_AREA) for p in red])
        return (small - 1.0) * 20.0


def bench_roi(model: str, size: int, device: str, frames: int = 30, margin: int = 48, full_scan_every: int = 10,
              speed: float = 6.0, seed: int = 0, standin: Optional[bool] = None,
              models: Optional[_Models] = None) -> Dict[str, Any]:
    """Full scans against ROI tracking on a moving-satellite sequence, frame by frame."""
    from ...backends.torch_backend import TorchBackend
    from ...core.roi import RoiTracker
    from ...model import RANDOM_SPECS

    models = models or _Models(device)
    sam, meta = models.get(model)
    real = TorchBackend(sam, meta.prompt_policy, device, fused_attention=True)
    if standin is None:
        standin = model in RANDOM_SPECS  # random weights (tiny, vit-b, tiny-sam2, sam2-hiera-tiny)
    backend: Backend = _BrightnessStandIn(real) if standin else real
    det = Detector(backend, DetectorConfig(size=size, threshold=0.5 if standin else None, cascade=0), meta)
    tracker = RoiTracker(det, margin=margin, full_scan_every=full_scan_every)
    seq = moving_sequence(frames + 1, seed=seed, speed=speed)
    det.detect(seq[0][0])  # warm-up
    full_t, roi_t, iou_full, iou_roi, agree, patches_run = [], [], [], [], [], []
    lost = 0
    for frame, truth in seq[1:]:
        a = det.detect(frame)
        b = tracker.detect(frame)
        full_t.append(a.timings["total"])
        roi_t.append(b.timings["total"])
        patches_run.append(b.patches)
        iou_full.append(postprocess.mask_iou(a.mask, truth))
        iou_roi.append(postprocess.mask_iou(b.mask, truth))
        agree.append(postprocess.mask_iou(b.mask, a.mask))
        if a.boxes and not b.boxes:
            lost += 1
    return {
        "model": model, "size": size, "frames": frames, "margin_px": margin, "full_scan_every": full_scan_every,
        "speed_px_per_frame": speed, "stand_in": bool(standin),
        "patches_per_frame_full": len(det.grid), "patches_per_frame_roi_mean": statistics.fmean(patches_run),
        "full_median_s": statistics.median(full_t), "roi_median_s": statistics.median(roi_t),
        "full_mean_s": statistics.fmean(full_t), "roi_mean_s": statistics.fmean(roi_t),
        "speedup_mean": statistics.fmean(full_t) / statistics.fmean(roi_t),
        "iou_truth_full_mean": statistics.fmean(iou_full), "iou_truth_roi_mean": statistics.fmean(iou_roi),
        "agreement_iou_mean": statistics.fmean(agree), "agreement_iou_min": min(agree),
        "frames_lost": lost, "scans": dict(tracker.stats),
    }
