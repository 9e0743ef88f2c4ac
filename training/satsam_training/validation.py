"""Validation during training, and choosing the best epoch.

Patches are scored like frames (:class:`satsam_ros.core.metrics.MetricAccumulator`);
frames go through a Detector around the model in memory (the node's code path, opened
by :func:`satsam_ros.runtime.detector_for_model`).
"""

from __future__ import annotations

from typing import Any, Dict, Tuple

from .fit_config import FitConfig
from .patch_data import PatchDataset


def logits_for_loss(logits, target_size: int):
    """N x m x m logits -> N x 1 x T x T (bilinear, as the Detector upsamples them)."""
    import torch.nn.functional as F

    x = logits[:, None].float()
    if x.shape[-1] != target_size:
        x = F.interpolate(x, size=(target_size, target_size), mode="bilinear", align_corners=False)
    return x


def detector_for(model, meta, size: int, threshold: float, device: str = "cpu"):
    """A Detector around an in-memory SamModel or Sam2Model (the node's code path, no file round trip)."""
    from satsam_ros.core.detector import DetectorConfig
    from satsam_ros.runtime import detector_for_model

    cfg = DetectorConfig(size=int(size), patch_size=int(meta.patch_size), threshold=float(threshold))
    return detector_for_model(model, meta, device, cfg)


# ---------------------------------------------------------------------- validation


def validate_patches(module, dataset: PatchDataset, loss_fn, threshold: float, batch_size: int, device) -> Dict:
    """Loss and patch-level metrics on the validation patches (no augmentation).

    Each patch is scored like a frame (IoU > 0.5 on the P x P probability map
    thresholded at ``threshold``; an empty patch is correct only if nothing is predicted).
    """
    import torch

    from satsam_ros.core import postprocess
    from satsam_ros.core.metrics import MetricAccumulator

    acc = MetricAccumulator()
    total, count = 0.0, 0
    p = dataset.patch_size
    was_training = module.training
    module.eval()
    with torch.no_grad():
        for start in range(0, len(dataset), batch_size):
            idx = range(start, min(start + batch_size, len(dataset)))
            x = torch.stack([dataset[i][0] for i in idx]).to(device)
            y = torch.stack([dataset[i][1] for i in idx]).to(device)
            logits = module(x)
            loss = loss_fn(logits_for_loss(logits, y.shape[-1]), y)
            total += float(loss) * len(idx)
            count += len(idx)
            prob = postprocess.sigmoid(logits_for_loss(logits, p)[:, 0].cpu().numpy())
            for j, i in enumerate(idx):
                acc.add(postprocess.threshold(prob[j], threshold), dataset.masks[i], frame_id=i)
    module.train(was_training)
    s = acc.summary()
    return {
        "val_loss": total / max(1, count),
        "val_patch_accuracy": s["accuracy"],
        "val_patch_mean_iou": s["mean_iou"],
        "val_patch_false_alarm_rate": s["false_alarm_rate"],
    }


def validate_frames(model, meta, frames, size: int, threshold: float, device, progress: bool = False) -> Dict:
    """Frame metrics on COCO frames through the Detector built around ``model``."""
    from tqdm import tqdm

    from satsam_ros.core.metrics import MetricAccumulator

    was_training = model.training
    detector = detector_for(model, meta, size, threshold, device)
    acc = MetricAccumulator()
    for frame in tqdm(frames, desc="val frames", unit="frame", leave=False, disable=not progress):
        res = detector.detect(frame.image())
        acc.add(res.mask, frame.mask(), seconds=res.timings["total"], frame_id=frame.id)
    model.train(was_training)
    s = acc.summary()
    return {
        "val_frame_accuracy": s["accuracy"],
        "val_frame_mean_iou": s["mean_iou"],
        "val_frame_false_alarm_rate": s["false_alarm_rate"],
        "val_frame_miss_rate": s["miss_rate"],
    }


def score(entry: Dict[str, Any], select: str) -> Tuple[float, float, float]:
    """Sort key (higher is better) for choosing the best epoch: the selected accuracy,
    then the mean IoU of the same validation (frames or patches), then the lower loss."""
    loss = entry.get("val_loss")
    loss_key = -loss if loss is not None else -entry["train_loss"]
    if select == "val_loss":
        return (loss_key, 0.0, 0.0)
    value = entry.get(select)
    miou = entry.get(select.replace("_accuracy", "_mean_iou"))
    return (-1.0 if value is None else float(value), -1.0 if miou is None else float(miou), loss_key)


def auto_select(cfg: FitConfig) -> str:
    if cfg.select != "auto":
        return cfg.select
    if cfg.val_frames:
        return "val_frame_accuracy"
    if cfg.val:
        # Not patch accuracy: most validation patches are empty, so early in a from-scratch
        # run the model that predicts nothing everywhere scores best and would be kept.
        return "val_loss"
    return "train_loss"
