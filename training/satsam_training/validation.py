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


def presence_targets(y):
    """N x 1 x T x T targets -> N float targets of the object score: 1 where the patch
    holds any satellite pixel (coverage > 0), else 0."""
    return (y.flatten(1).amax(dim=1) > 0).float()


def patch_loss(out, y, loss_fn, presence_weight: float = 0.0):
    """The training objective of one batch: (total, mask loss, presence BCE or None).

    ``out``: the patch module's output, logits N x m x m, or (logits, object-score
    logits N) from a module made ``with_score``; the mask loss is ``loss_fn`` on the
    logits upsampled to the target's T x T; with scores and ``presence_weight`` > 0,
    ``presence_weight`` x BCE(score, :func:`presence_targets`) is added, on every patch
    (empty ones included: the score is what gates a patch at inference).
    """
    import torch.nn.functional as F

    logits, scores = out if isinstance(out, tuple) else (out, None)
    mask_loss = loss_fn(logits_for_loss(logits, y.shape[-1]), y.float())
    if scores is None or not presence_weight:
        return mask_loss, mask_loss, None
    bce = F.binary_cross_entropy_with_logits(scores.float(), presence_targets(y))
    return mask_loss + float(presence_weight) * bce, mask_loss, bce


def distill_loss(student_logits, teacher_logits, target_size: int):
    """Soft BCE of the student's mask logits against the teacher's probabilities, both
    upsampled to the loss's T x T as :func:`logits_for_loss` does (their mask grids may
    differ), averaged over every pixel of the batch."""
    import torch
    import torch.nn.functional as F

    with torch.no_grad():
        target = torch.sigmoid(logits_for_loss(teacher_logits, target_size))
    return F.binary_cross_entropy_with_logits(logits_for_loss(student_logits, target_size), target)


def ranking_auc(scores, labels) -> float:
    """Area under the ROC curve of ``scores`` for binary ``labels`` (ties count half);
    None when one class is absent."""
    import numpy as np

    scores, labels = np.asarray(scores, dtype=np.float64), np.asarray(labels, dtype=bool)
    pos, neg = scores[labels], scores[~labels]
    if not len(pos) or not len(neg):
        return None
    order = np.argsort(np.concatenate([pos, neg]), kind="mergesort")
    ranks = np.empty(len(order))
    values = np.concatenate([pos, neg])[order]
    # average ranks over ties
    _, start, counts = np.unique(values, return_index=True, return_counts=True)
    for s0, c in zip(start, counts):
        ranks[order[s0:s0 + c]] = s0 + (c + 1) / 2.0
    return float((ranks[:len(pos)].sum() - len(pos) * (len(pos) + 1) / 2.0) / (len(pos) * len(neg)))


def detector_for(model, meta, size: int, threshold: float, device: str = "cpu"):
    """A Detector around an in-memory model (the node's code path, no file round trip),
    full tiling: a fine-tuned base's cascade setting was tuned for the base, not for the
    model being trained."""
    from satsam_ros.core.detector import DetectorConfig
    from satsam_ros.runtime import detector_for_model

    cfg = DetectorConfig(size=int(size), patch_size=int(meta.patch_size), threshold=float(threshold), cascade=0)
    return detector_for_model(model, meta, device, cfg)


# ---------------------------------------------------------------------- validation


def validate_patches(module, dataset: PatchDataset, loss_fn, threshold: float, batch_size: int, device,
                     presence_weight: float = 0.0) -> Dict:
    """Loss and patch-level metrics on the validation patches (no augmentation).

    Each patch is scored like a frame (IoU > 0.5 on the P x P probability map
    thresholded at ``threshold``; an empty patch is correct only if nothing is predicted).
    ``val_loss`` is the training objective (:func:`patch_loss`). A module with an
    object score also gives the presence BCE, accuracy and ROC AUC, and the patch
    accuracy with the gate at 0.5 (a patch scored absent publishes nothing), as the
    Detector would apply it with ``min_object_score`` 0.5.
    """
    import numpy as np
    import torch

    from satsam_ros.core import postprocess
    from satsam_ros.core.metrics import MetricAccumulator

    acc, gated = MetricAccumulator(), MetricAccumulator()
    total, mask_total, bce_total, count = 0.0, 0.0, 0.0, 0
    presence, present = [], []
    p = dataset.patch_size
    was_training = module.training
    module.eval()
    with torch.no_grad():
        for start in range(0, len(dataset), batch_size):
            idx = range(start, min(start + batch_size, len(dataset)))
            x = torch.stack([dataset[i][0] for i in idx]).to(device)
            y = torch.stack([dataset[i][1] for i in idx]).to(device)
            out = module(x)
            loss, mask_loss, bce = patch_loss(out, y, loss_fn, presence_weight)
            total += float(loss) * len(idx)
            mask_total += float(mask_loss) * len(idx)
            count += len(idx)
            logits = out[0] if isinstance(out, tuple) else out
            prob = postprocess.sigmoid(logits_for_loss(logits, p)[:, 0].cpu().numpy())
            score = None
            if isinstance(out, tuple):
                score = torch.sigmoid(out[1].float()).cpu().numpy()
                presence.extend(score.tolist())
                present.extend(presence_targets(y).cpu().numpy().astype(bool).tolist())
                if bce is not None:
                    bce_total += float(bce) * len(idx)
            for j, i in enumerate(idx):
                mask = postprocess.threshold(prob[j], threshold)
                acc.add(mask, dataset.masks[i], frame_id=i)
                if score is not None:
                    gated.add(mask if score[j] >= 0.5 else np.zeros_like(mask), dataset.masks[i], frame_id=i)
    module.train(was_training)
    s = acc.summary(budget=False)
    out_metrics = {
        "val_loss": total / max(1, count),
        "val_mask_loss": mask_total / max(1, count),
        "val_patch_accuracy": s["accuracy"],
        "val_patch_mean_iou": s["mean_iou"],
        "val_patch_false_alarm_rate": s["false_alarm_rate"],
    }
    if presence:
        g = gated.summary(budget=False)
        labels = np.asarray(present)
        out_metrics.update({
            "val_presence_bce": bce_total / max(1, count) if presence_weight else None,
            "val_presence_accuracy": float(np.mean((np.asarray(presence) >= 0.5) == labels)),
            "val_presence_auc": ranking_auc(presence, labels),
            "val_patch_accuracy_gated": g["accuracy"],
            "val_patch_false_alarm_rate_gated": g["false_alarm_rate"],
        })
    return out_metrics


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
