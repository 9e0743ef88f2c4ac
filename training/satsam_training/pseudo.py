"""Pseudo-masks from bounding boxes: the reference method's labelling step.

The input is a COCO dataset whose annotations may be boxes only. For every labelled
box a mask is produced by one of these methods:

* ``auto``: SAM's automatic masks. The frame is encoded once per checkpoint; a grid
  of ``points_per_side`` x ``points_per_side`` single-point prompts (over the whole
  frame, as SAM's automatic mask generator does, or over the labelled box with
  ``grid="box"``) each yields SAM's three multimask candidates; candidates whose
  predicted IoU is below ``pred_iou_thresh`` or whose stability score (area at logit
  > +1 over area at logit > -1) is below ``stability_thresh`` are discarded, and the
  selection rule below picks the satellite's mask among the rest.
* ``box``: SAM prompted with the labelled box (single-mask output), one candidate
  per checkpoint; the same rule accepts or rejects it. Cheaper, usually better.
* ``grabcut``: OpenCV's GrabCut initialised with the labelled box (no weights), the
  same rule accepts or rejects its mask.
* ``boxfill``: the filled box itself (the trivial baseline; always accepted).

**Selection rule** (:func:`select_candidate`). A candidate mask *qualifies* for a
labelled box when it is non-empty and at least ``min_inside`` (default 0.9) of its
pixels lie inside the box grown by ``margin`` (default 2) pixels on every side.
Among qualifying candidates the one whose own tight bounding box has the highest IoU
with the labelled box wins (ties: the larger mask, then the earlier candidate). If
that IoU is below ``min_box_iou`` (default 0.5) there is no match. With several
checkpoints, each checkpoint's winner competes again under the same rule (highest
box IoU wins).

A frame is kept when every one of its boxes found a match and dropped (and counted)
otherwise; empty frames (no box) are kept as empty frames.

Preparing a frame for SAM (``SamPrompter``): any stored frame (uint8, uint16, RGB)
becomes SAM RGB on the 0..255 scale (``satsam_ros.imaging.to_sam_rgb``), is resized
so its long side is the encoder input size E, normalised (``normalize``) and
zero-padded to E x E at the bottom/right. Prompts are mapped to that frame by the
same scale. SAM's low-resolution logits (E/4 x E/4) are upsampled to E x E
(bilinear), cropped to the resized frame and resized to the original H x W; the mask
is logit > 0.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Optional, Sequence

import cv2
import numpy as np

from .coco import Frame, available_splits, encode_mask, load_split, place_image, write_coco, write_json_atomic

METHODS = ("auto", "box", "grabcut", "boxfill")
SAM_METHODS = ("auto", "box")


# --------------------------------------------------------------------------- selection rule


@dataclass(frozen=True)
class SelectionRule:
    """Parameters of the selection rule (see the module docstring)."""

    min_inside: float = 0.9
    min_box_iou: float = 0.5
    margin: float = 2.0

    def validate(self) -> SelectionRule:
        if not 0.0 <= self.min_inside <= 1.0:
            raise ValueError(f"min_inside must be in [0, 1], got {self.min_inside}")
        if not 0.0 <= self.min_box_iou <= 1.0:
            raise ValueError(f"min_box_iou must be in [0, 1], got {self.min_box_iou}")
        if self.margin < 0:
            raise ValueError(f"margin must be >= 0 pixels, got {self.margin}")
        return self


@dataclass(frozen=True)
class Selection:
    """The outcome of the rule: the winning candidate's index (None: no match) and its scores."""

    index: Optional[int]
    box_iou: float
    inside: float


def box_iou_xywh(a: Sequence[float], b: Sequence[float]) -> float:
    """IoU of two COCO ``[x, y, w, h]`` boxes (continuous coordinates)."""
    ax1, ay1 = a[0] + a[2], a[1] + a[3]
    bx1, by1 = b[0] + b[2], b[1] + b[3]
    iw = max(0.0, min(ax1, bx1) - max(a[0], b[0]))
    ih = max(0.0, min(ay1, by1) - max(a[1], b[1]))
    inter = iw * ih
    union = a[2] * a[3] + b[2] * b[3] - inter
    return float(inter / union) if union > 0 else 0.0


def candidate_scores(masks: np.ndarray, box: Sequence[float], margin: float = 2.0):
    """Per-candidate ``(area, inside_fraction, box_iou)`` for N x H x W masks and a COCO box.

    A pixel counts as inside when it lies entirely within the box grown by
    ``margin`` pixels. ``box_iou`` is the IoU of the candidate's tight pixel box
    (pixel edges, as :func:`satsam_training.coco.mask_bbox`) with the labelled box.
    Returns three float64 arrays of length N (inside and box IoU are 0 for empty masks).
    """
    m = np.asarray(masks) > 0
    if m.ndim == 2:
        m = m[None]
    n, h, w = m.shape
    x, y, bw, bh = (float(v) for v in box)
    x0 = min(max(0, math.floor(x - margin + 1e-9)), w)
    y0 = min(max(0, math.floor(y - margin + 1e-9)), h)
    x1 = min(max(0, math.ceil(x + bw + margin - 1e-9)), w)
    y1 = min(max(0, math.ceil(y + bh + margin - 1e-9)), h)
    area = m.reshape(n, -1).sum(axis=1).astype(np.float64)
    inside = m[:, y0:y1, x0:x1].reshape(n, -1).sum(axis=1).astype(np.float64)
    frac = np.divide(inside, area, out=np.zeros(n), where=area > 0)
    rows = m.any(axis=2)
    cols = m.any(axis=1)
    ious = np.zeros(n)
    for i in np.flatnonzero(area > 0):
        r = np.flatnonzero(rows[i])
        c = np.flatnonzero(cols[i])
        cand = (float(c[0]), float(r[0]), float(c[-1] + 1 - c[0]), float(r[-1] + 1 - r[0]))
        ious[i] = box_iou_xywh(cand, (x, y, bw, bh))
    return area, frac, ious


def select_candidate(masks, box: Sequence[float], rule: SelectionRule = SelectionRule()) -> Selection:
    """Apply the selection rule (module docstring) to N x H x W candidate masks for one COCO box."""
    m = np.asarray(masks)
    if m.ndim == 2:
        m = m[None]
    if m.shape[0] == 0:
        return Selection(None, 0.0, 0.0)
    area, inside, ious = candidate_scores(m, box, rule.margin)
    return _pick(area, inside, ious, rule)


def _pick(area: np.ndarray, inside: np.ndarray, ious: np.ndarray, rule: SelectionRule) -> Selection:
    ok = (area > 0) & (inside >= rule.min_inside)
    if not ok.any():
        best = int(np.argmax(ious)) if len(ious) else 0
        return Selection(None, float(ious[best]) if len(ious) else 0.0, float(inside[best]) if len(ious) else 0.0)
    idx = np.flatnonzero(ok)
    # highest box IoU, then larger area, then earlier index (lexsort: last key is primary)
    order = np.lexsort((idx, -area[idx], -ious[idx]))
    best = int(idx[order[0]])
    if ious[best] < rule.min_box_iou:
        return Selection(None, float(ious[best]), float(inside[best]))
    return Selection(best, float(ious[best]), float(inside[best]))


# --------------------------------------------------------------------------- box-only methods


def boxfill_mask(height: int, width: int, box: Sequence[float]) -> np.ndarray:
    """The trivial baseline: H x W uint8 0/255 with the pixels of a COCO box filled.

    A pixel is filled when its centre lies inside the box.
    """
    x, y, w, h = (float(v) for v in box)
    out = np.zeros((height, width), np.uint8)
    x0, y0 = max(0, int(round(x))), max(0, int(round(y)))
    x1, y1 = min(width, int(round(x + w))), min(height, int(round(y + h)))
    out[y0:y1, x0:x1] = 255
    return out


def grabcut_mask(
    image: np.ndarray,
    box: Sequence[float],
    iterations: int = 5,
    context: float = 0.5,
    work_size: int = 128,
    features: str = "detail",
) -> np.ndarray:
    """GrabCut initialised with a COCO box: H x W uint8 0/255.

    ``image`` is any stored frame (grayscale, uint16 or RGB; converted to 8-bit gray).
    GrabCut runs on a crop around the box (the box grown by ``context`` times its
    size, at least 12 px, on every side) so its background model sees the local
    surroundings; pixels outside the box (grown by 1 px) are fixed background. The
    crop is resized so the box's longer side is ``work_size`` px (small satellites
    are enlarged, large ones shrunk: GrabCut's cost grows with the pixel count and
    its edge term works at a fixed pixel scale) and the result resized back (linear
    interpolation of the 0/1 result, threshold 0.5). ``features`` chooses the three
    channels GrabCut's colour models see: ``"gray"`` (the gray level three times) or
    ``"detail"`` (gray, lightly smoothed gray, and the local contrast = gray minus
    its blur, which separates the sharp-edged satellite from smoother terrain).
    """
    from satsam_ros.core.imaging import to_uint8_gray

    gray = to_uint8_gray(image)
    hgt, wid = gray.shape
    x, y, w, h = (float(v) for v in box)
    out = np.zeros((hgt, wid), np.uint8)
    grow = max(12.0, context * max(w, h))
    cx0, cy0 = max(0, int(math.floor(x - grow))), max(0, int(math.floor(y - grow)))
    cx1, cy1 = min(wid, int(math.ceil(x + w + grow))), min(hgt, int(math.ceil(y + h + grow)))
    if cx1 - cx0 < 2 or cy1 - cy0 < 2:
        return out
    bx0, by0 = max(0, int(math.floor(x - 1))), max(0, int(math.floor(y - 1)))
    bx1, by1 = min(wid, int(math.ceil(x + w + 1))), min(hgt, int(math.ceil(y + h + 1)))
    if bx0 <= cx0 and by0 <= cy0 and bx1 >= cx1 and by1 >= cy1:
        # the box covers the whole crop: GrabCut has no background sample; keep the box
        return boxfill_mask(hgt, wid, box)
    crop = gray[cy0:cy1, cx0:cx1]
    f = max(0.25, min(4.0, work_size / max(w, h, 1.0)))
    ch, cw = max(2, int(round(crop.shape[0] * f))), max(2, int(round(crop.shape[1] * f)))
    fy, fx = ch / crop.shape[0], cw / crop.shape[1]
    work = cv2.resize(crop, (cw, ch), interpolation=cv2.INTER_AREA if f < 1 else cv2.INTER_LINEAR)
    if features == "gray":
        stack = np.dstack([work, work, work])
    elif features == "detail":
        g = work.astype(np.float32)
        smooth = cv2.GaussianBlur(g, (0, 0), 1.0)
        detail = np.clip(128.0 + 2.0 * (g - cv2.GaussianBlur(g, (0, 0), 3.5)), 0, 255)
        stack = np.dstack([work, np.clip(smooth, 0, 255), detail]).astype(np.uint8)
    else:
        raise ValueError(f"grabcut features must be 'gray' or 'detail', got {features!r}")
    rx0, ry0 = int(math.floor((bx0 - cx0) * fx)), int(math.floor((by0 - cy0) * fy))
    rx1, ry1 = min(cw, int(math.ceil((bx1 - cx0) * fx))), min(ch, int(math.ceil((by1 - cy0) * fy)))
    rect = (rx0, ry0, max(1, rx1 - rx0), max(1, ry1 - ry0))
    gc = np.zeros((ch, cw), np.uint8)
    bgd = np.zeros((1, 65), np.float64)
    fgd = np.zeros((1, 65), np.float64)
    cv2.setRNGSeed(0)
    try:
        cv2.grabCut(stack, gc, rect, bgd, fgd, int(iterations), cv2.GC_INIT_WITH_RECT)
    except cv2.error:
        return out  # degenerate input (e.g. a constant crop): no mask, the rule rejects it
    fg = ((gc == cv2.GC_FGD) | (gc == cv2.GC_PR_FGD)).astype(np.float32)
    back = cv2.resize(fg, (crop.shape[1], crop.shape[0]), interpolation=cv2.INTER_LINEAR)
    out[cy0:cy1, cx0:cx1] = np.where(back >= 0.5, 255, 0).astype(np.uint8)
    # nothing outside the labelled box (grown by 1 px)
    out[:by0] = 0
    out[by1:] = 0
    out[:, :bx0] = 0
    out[:, bx1:] = 0
    return out


# --------------------------------------------------------------------------- SAM


@dataclass
class AutoMaskConfig:
    """Settings of the ``auto`` method (SAM automatic masks)."""

    points_per_side: int = 32
    grid: str = "frame"  # "frame": grid over the whole frame (SAM's AMG); "box": over each labelled box
    pred_iou_thresh: float = 0.88
    stability_thresh: float = 0.95
    stability_offset: float = 1.0
    points_per_batch: int = 64

    def validate(self) -> AutoMaskConfig:
        if self.points_per_side < 1:
            raise ValueError(f"points per side must be >= 1, got {self.points_per_side}")
        if self.grid not in ("frame", "box"):
            raise ValueError(f"grid must be 'frame' or 'box', got {self.grid!r}")
        if self.points_per_batch < 1:
            raise ValueError(f"points per batch must be >= 1, got {self.points_per_batch}")
        return self


@dataclass(frozen=True)
class SamGeometry:
    """How a H x W frame maps into SAM's E x E input: scaled by ``scale`` to rh x rw, padded."""

    height: int
    width: int
    rh: int
    rw: int
    size: int  # E
    scale: float


def grid_points(n: int, x0: float, y0: float, w: float, h: float) -> np.ndarray:
    """n x n point prompts (N x 2, x/y pixels) at cell centres of the rectangle (x0, y0, w, h)."""
    t = (np.arange(n, dtype=np.float64) + 0.5) / n
    xs, ys = np.meshgrid(x0 + t * w, y0 + t * h)
    return np.stack([xs.ravel(), ys.ravel()], axis=1)


class SamPrompter:
    """One SAM checkpoint: encode a frame once, then prompt it with points or boxes.

    ``spec`` is anything :func:`satsam_ros.model.load_model` understands ("tiny",
    a checkpoint directory, a hub id where there is network).
    """

    def __init__(self, spec: str, device: str = "cpu"):
        import torch

        from satsam_ros.model import encoder_input_size, load_model

        self._torch = torch
        self.spec = str(spec)
        self.device = device
        self.model, _meta = load_model(self.spec, device)
        self.size = encoder_input_size(self.model)

    def prepare(self, image: np.ndarray):
        """Stored frame -> (1 x 3 x E x E float32 tensor, SamGeometry); see the module docstring."""
        from satsam_ros.core.imaging import normalize, to_sam_rgb
        from satsam_ros.core.tiling import resize

        rgb = to_sam_rgb(image)
        h, w = rgb.shape[:2]
        e = self.size
        scale = e / float(max(h, w))
        rh, rw = min(e, int(h * scale + 0.5)), min(e, int(w * scale + 0.5))
        norm = normalize(resize(rgb, rh, rw))
        pixels = np.zeros((e, e, 3), np.float32)
        pixels[:rh, :rw] = norm
        tensor = self._torch.from_numpy(np.ascontiguousarray(pixels.transpose(2, 0, 1))[None]).to(self.device)
        return tensor, SamGeometry(h, w, rh, rw, e, scale)

    def embed(self, image: np.ndarray):
        """(image embeddings, SamGeometry) of a stored frame."""
        pixels, geom = self.prepare(image)
        with self._torch.inference_mode():
            emb = self.model.get_image_embeddings(pixels)
        return emb, geom

    def prompt_points(self, emb, geom: SamGeometry, points_xy: np.ndarray):
        """Single-point prompts (N x 2 frame pixels) -> (N x 3 x m x m logits, N x 3 predicted IoU)."""
        torch = self._torch
        pts = torch.as_tensor(points_xy * geom.scale, dtype=torch.float32, device=self.device)[None, :, None, :]
        labels = torch.ones(pts.shape[:3], dtype=torch.int64, device=self.device)
        with torch.inference_mode():
            out = self.model(image_embeddings=emb, input_points=pts, input_labels=labels, multimask_output=True)
        return out.pred_masks[0].float(), out.iou_scores[0].float()

    def prompt_boxes(self, emb, geom: SamGeometry, boxes_xywh: Sequence[Sequence[float]]):
        """Box prompts (COCO boxes in frame pixels) -> (B x 1 x m x m logits, B x 1 predicted IoU)."""
        torch = self._torch
        xyxy = np.asarray([[x, y, x + w, y + h] for x, y, w, h in boxes_xywh], np.float64) * geom.scale
        boxes = torch.as_tensor(xyxy, dtype=torch.float32, device=self.device)[None]
        with torch.inference_mode():
            out = self.model(image_embeddings=emb, input_boxes=boxes, multimask_output=False)
        return out.pred_masks[0].float(), out.iou_scores[0].float()

    def to_frame(self, low_res, geom: SamGeometry, chunk: int = 16) -> np.ndarray:
        """N x m x m low-resolution logits -> N x H x W bool masks (logit > 0) in frame pixels."""
        torch = self._torch
        import torch.nn.functional as F

        outs = []
        with torch.inference_mode():
            for i in range(0, low_res.shape[0], chunk):
                x = low_res[i:i + chunk, None]
                x = F.interpolate(x, size=(geom.size, geom.size), mode="bilinear", align_corners=False)
                x = x[:, :, :geom.rh, :geom.rw]
                x = F.interpolate(x, size=(geom.height, geom.width), mode="bilinear", align_corners=False)
                outs.append((x[:, 0] > 0).cpu().numpy())
        if not outs:
            return np.zeros((0, geom.height, geom.width), bool)
        return np.concatenate(outs)

    def auto_select(self, image: np.ndarray, boxes, auto: AutoMaskConfig, rule: SelectionRule):
        """Automatic masks + selection for each COCO box of a frame.

        Returns one ``(mask H x W bool or None, Selection)`` per box.
        """
        emb, geom = self.embed(image)
        if auto.grid == "frame":
            points = grid_points(auto.points_per_side, 0, 0, geom.width, geom.height)
            pools = self._auto_candidates(emb, geom, points, auto, boxes, rule)
        else:
            pools = []
            for box in boxes:
                points = grid_points(auto.points_per_side, *box)
                pools += self._auto_candidates(emb, geom, points, auto, [box], rule)
        return [self._select_full(pool, geom, box, rule) for pool, box in zip(pools, boxes)]

    def _auto_candidates(self, emb, geom: SamGeometry, points: np.ndarray, auto: AutoMaskConfig, boxes, rule):
        """Per box, the low-res logits (K x m x m) of the candidates that may match it.

        A candidate must pass SAM's quality filters (predicted IoU, stability score on
        the valid, unpadded part of the low-res grid) and a cheap low-resolution
        version of the selection rule with its thresholds relaxed by 0.25 (so that
        only plausible candidates are upsampled to the frame and kept in memory).
        """
        torch = self._torch
        pools: list = [[] for _ in boxes]
        for i in range(0, len(points), auto.points_per_batch):
            logits, iou = self.prompt_points(emb, geom, points[i:i + auto.points_per_batch])
            m = logits.shape[-1]
            logits = logits.reshape(-1, m, m)
            iou = iou.reshape(-1)
            vh = max(1, math.ceil(geom.rh * m / geom.size))
            vw = max(1, math.ceil(geom.rw * m / geom.size))
            valid = logits[:, :vh, :vw]
            hi = (valid > auto.stability_offset).flatten(1).sum(1).float()
            lo = (valid > -auto.stability_offset).flatten(1).sum(1).float()
            stability = torch.where(lo > 0, hi / lo.clamp(min=1), torch.zeros_like(hi))
            keep = (iou >= auto.pred_iou_thresh) & (stability >= auto.stability_thresh) & (lo > 0)
            if not keep.any():
                continue
            logits = logits[keep]
            low = (logits[:, :vh, :vw] > 0).cpu().numpy()
            f = m / float(geom.size) * geom.scale  # frame px -> low-res px
            for b, box in enumerate(boxes):
                area, inside, ious = candidate_scores(low, [v * f for v in box], rule.margin * f + 1.5)
                maybe = (area > 0) & (inside >= rule.min_inside - 0.25) & (ious >= rule.min_box_iou - 0.25)
                if maybe.any():
                    pools[b].append(logits[torch.from_numpy(maybe).to(logits.device)])
        return [torch.cat(p) if p else None for p in pools]

    def _select_full(self, pool, geom: SamGeometry, box, rule: SelectionRule):
        """The rule on a candidate pool for one box, evaluated at frame resolution."""
        if pool is None or pool.shape[0] == 0:
            return None, Selection(None, 0.0, 0.0)
        full = self.to_frame(pool, geom)
        sel = select_candidate(full, box, rule)
        return (full[sel.index] if sel.index is not None else None), sel

    def box_select(self, image: np.ndarray, boxes, rule: SelectionRule):
        """SAM box prompts + the rule for each COCO box: list of ``(mask or None, Selection)``."""
        emb, geom = self.embed(image)
        logits, _iou = self.prompt_boxes(emb, geom, boxes)
        masks = self.to_frame(logits[:, 0], geom)
        results = []
        for mask, box in zip(masks, boxes):
            sel = select_candidate(mask[None], box, rule)
            results.append((mask if sel.index is not None else None, sel))
        return results


# --------------------------------------------------------------------------- dataset


@dataclass
class _Pick:
    """Per (frame, annotation): the chosen mask as RLE and its box IoU (None: no match)."""

    rle: Optional[dict]
    box_iou: float


@dataclass
class PseudoLabelReport:
    """What :func:`pseudo_label_dataset` did: counts per split and the IoU table rows."""

    method: str
    checkpoints: list
    splits: dict = field(default_factory=dict)  # split -> {"frames", "empty", "kept", "dropped"}
    rows: list = field(default_factory=list)  # IoU table rows (dicts), see iou_table_markdown
    per_frame: list = field(default_factory=list)  # written masks: {"split", "image_id", "iou"}
    has_truth: bool = False
    out_dir: str = ""

    def to_dict(self) -> dict:
        return asdict(self)


def _union(masks: list, height: int, width: int) -> np.ndarray:
    out = np.zeros((height, width), bool)
    for m in masks:
        out |= m
    return out


def _decode(rle: dict) -> np.ndarray:
    from .coco import decode_segmentation

    return decode_segmentation(rle, rle["size"][0], rle["size"][1]) > 0


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    from satsam_ros.core.postprocess import mask_iou

    return mask_iou(a.astype(np.uint8), b.astype(np.uint8))


def pseudo_label_dataset(
    data_dir,
    out_dir,
    method: str = "auto",
    checkpoints: Sequence[str] = (),
    splits: Optional[Sequence[str]] = None,
    device: str = "cpu",
    rule: SelectionRule = SelectionRule(),
    auto: Optional[AutoMaskConfig] = None,
    link: bool = True,
    progress: bool = False,
) -> PseudoLabelReport:
    """Pseudo-label a COCO dataset (``data_dir``) into a new one (``out_dir``).

    ``out_dir`` gets the same layout: ``<split>.json`` with the input's images (same
    ids and file names; hard links where possible, else copies, or always copies with
    ``link=False``), the labelled boxes unchanged and each annotation's segmentation
    replaced by its pseudo-mask (compressed RLE). Frames without a match are left out.

    When the input carries masks for every labelled frame, each pseudo-mask is
    compared with the true mask (the union over a frame's annotations), and the
    report's ``rows`` hold one row per (method, checkpoint): ``frames`` (labelled
    frames with a true mask), ``matched``, ``dropped`` and ``mean_iou`` over the
    matched frames; the row with ``written: true`` describes the masks written to
    ``out_dir`` and a ``boxfill`` baseline row gives the IoU of the filled boxes.
    ``pseudo_iou.json`` and ``pseudo_iou.md`` in ``out_dir`` hold the same.
    """
    checkpoints = [str(c) for c in checkpoints]
    _check_method(method, checkpoints)
    rule = rule.validate()
    auto = (auto or AutoMaskConfig()).validate()
    data_dir, out_dir = Path(data_dir), Path(out_dir)
    if out_dir.resolve() == data_dir.resolve():
        raise ValueError(f"output directory {out_dir} must differ from the input dataset directory")
    splits = list(splits) if splits else available_splits(data_dir)
    if not splits:
        raise FileNotFoundError(f"{data_dir}: no train.json, val.json or test.json found")
    frames = {s: load_split(data_dir, s) for s in splits}
    labelled = [(s, f) for s in splits for f in frames[s] if not f.is_empty]
    # picks[source][(split, frame id)] -> list of _Pick per annotation
    if method in SAM_METHODS:
        sources = checkpoints
        picks = {ckpt: _sam_picks(ckpt, method, labelled, device, auto, rule, progress) for ckpt in checkpoints}
    else:
        sources = [method]
        picks = {method: _classic_picks(method, labelled, rule, progress)}
    combined = _combine(labelled, picks, sources)

    report = PseudoLabelReport(method=method, checkpoints=checkpoints, out_dir=str(out_dir))
    out_dir.mkdir(parents=True, exist_ok=True)
    for split in splits:
        info = {"description": "satsam_training pseudo-masks", "source": str(data_dir), "method": method,
                "checkpoints": checkpoints, "rule": asdict(rule), "split": split}
        if method == "auto":
            info["auto"] = asdict(auto)
        report.splits[split] = _write_split(out_dir, split, frames[split], combined, link, info)
    _iou_rows(report, frames, labelled, picks, combined, sources, progress)
    if report.has_truth:
        write_json_atomic(out_dir / "pseudo_iou.json", report.to_dict(), indent=1)
        (out_dir / "pseudo_iou.md").write_text(iou_table_markdown(report))
    else:  # no stale table from an earlier run into the same directory
        for name in ("pseudo_iou.json", "pseudo_iou.md"):
            (out_dir / name).unlink(missing_ok=True)
    return report


def _check_method(method: str, checkpoints: Sequence[str]) -> None:
    if method not in METHODS:
        raise ValueError(f"method must be one of {', '.join(METHODS)}; got {method!r}")
    if method in SAM_METHODS and not checkpoints:
        raise ValueError(f"method {method!r} needs at least one SAM checkpoint (--checkpoints)")
    if method not in SAM_METHODS and checkpoints:
        raise ValueError(f"method {method!r} uses no SAM checkpoint; got --checkpoints {' '.join(checkpoints)}")


def _sam_picks(ckpt: str, method: str, labelled, device: str, auto: AutoMaskConfig, rule: SelectionRule,
               progress: bool) -> dict:
    """One SAM checkpoint's pick for every annotation of the labelled frames."""
    from tqdm import tqdm

    prompter = SamPrompter(ckpt, device)
    picks = {}
    for split, frame in tqdm(labelled, desc=f"{method} {Path(ckpt).name}", unit="frame", disable=not progress):
        image = frame.image()
        if method == "auto":
            res = prompter.auto_select(image, frame.boxes, auto, rule)
        else:
            res = prompter.box_select(image, frame.boxes, rule)
        picks[(split, frame.id)] = [_Pick(encode_mask(m) if m is not None else None, sel.box_iou) for m, sel in res]
    return picks


def _classic_picks(method: str, labelled, rule: SelectionRule, progress: bool) -> dict:
    """GrabCut's (judged by the rule) or the filled box's mask for every annotation."""
    from tqdm import tqdm

    picks = {}
    for split, frame in tqdm(labelled, desc=method, unit="frame", disable=not progress):
        image = frame.image() if method == "grabcut" else None
        res = []
        for box in frame.boxes:
            if method == "grabcut":
                mask = grabcut_mask(image, box) > 0
            else:
                mask = boxfill_mask(frame.height, frame.width, box) > 0
            sel = select_candidate(mask[None], box, rule) if method == "grabcut" else Selection(0, 1.0, 1.0)
            res.append(_Pick(encode_mask(mask) if sel.index is not None else None, sel.box_iou))
        picks[(split, frame.id)] = res
    return picks


def _combine(labelled, picks: dict, sources: Sequence[str]) -> dict:
    """Per annotation, the accepted pick with the highest box IoU over the sources (None: no match)."""
    combined: dict = {}
    for split, frame in labelled:
        chosen = []
        for a in range(len(frame.boxes)):
            cands = [picks[src][(split, frame.id)][a] for src in sources]
            cands = [p for p in cands if p.rle is not None]
            chosen.append(max(cands, key=lambda p: p.box_iou) if cands else None)
        combined[(split, frame.id)] = chosen
    return combined


def _write_split(out_dir: Path, split: str, frames, combined: dict, link: bool, info: dict) -> dict:
    """``out_dir/<split>.json`` with the kept frames (images linked or copied); the split's counts."""
    kept_frames = []
    stats = {"frames": len(frames), "empty": 0, "kept": 0, "dropped": 0}
    for frame in frames:
        if frame.is_empty:
            stats["empty"] += 1
            new_segs = []
        else:
            chosen = combined[(split, frame.id)]
            if any(p is None for p in chosen):
                stats["dropped"] += 1
                continue
            new_segs = [p.rle for p in chosen]
        stats["kept"] += 1
        rel = frame.file_name or Path(frame.path).name
        if Path(rel).is_absolute() or ".." in Path(rel).parts:
            rel = f"images/{split}/{Path(frame.path).name}"
        dst = out_dir / rel
        place_image(frame.path, dst, link=link)
        kept_frames.append(Frame(id=frame.id, path=dst.resolve(), width=frame.width, height=frame.height,
                                 boxes=list(frame.boxes), segmentations=new_segs, file_name=rel))
    write_coco(out_dir / f"{split}.json", kept_frames, info=info)
    return stats


def _iou_rows(report, frames, labelled, picks, combined, sources, progress) -> None:
    """Fill the report's IoU table when every labelled frame has a true mask."""
    truth_frames = [(s, f) for s, f in labelled if f.has_masks]
    if not labelled or len(truth_frames) != len(labelled):
        report.has_truth = False
        return
    report.has_truth = True
    truths = {(s, f.id): f.mask() > 0 for s, f in truth_frames}
    shape = {(s, f.id): (f.height, f.width) for s, f in truth_frames}
    n = len(truth_frames)

    def row(method, checkpoint, per_key, written=False):
        ious = []
        for s, f in truth_frames:
            chosen = per_key.get((s, f.id))
            if chosen is None or any(p is None or p.rle is None for p in chosen):
                continue
            pred = _union([_decode(p.rle) for p in chosen], *shape[(s, f.id)])
            ious.append(((s, f.id), _iou(pred, truths[(s, f.id)])))
        values = [v for _, v in ious]
        entry = {"method": method, "checkpoint": checkpoint, "frames": n, "matched": len(values),
                 "dropped": n - len(values), "mean_iou": float(np.mean(values)) if values else None,
                 "written": written}
        return entry, ious

    if report.method in SAM_METHODS:
        for ckpt in sources:
            entry, _ = row(report.method, ckpt, picks[ckpt])
            report.rows.append(entry)
        label = "all" if len(sources) > 1 else sources[0]
    else:
        label = "-"
    entry, ious = row(report.method, label, combined, written=True)
    report.rows.append(entry)
    report.per_frame = [{"split": s, "image_id": i, "iou": v} for (s, i), v in ious]
    if report.method != "boxfill":
        base = {}
        for s, f in truth_frames:
            base[(s, f.id)] = [_Pick(encode_mask(boxfill_mask(f.height, f.width, b)), 1.0) for b in f.boxes]
        entry, _ = row("boxfill", "-", base)
        report.rows.append(entry)


def iou_table_markdown(report: PseudoLabelReport) -> str:
    """The IoU table as Markdown (one row per method and checkpoint)."""
    lines = [
        f"# Pseudo-mask IoU against the true masks (method {report.method})",
        "",
        "| method | checkpoint | labelled frames | matched | dropped | mean IoU | written |",
        "|---|---|---:|---:|---:|---:|---|",
    ]
    for r in report.rows:
        miou = "-" if r["mean_iou"] is None else f"{r['mean_iou']:.4f}"
        lines.append(f"| {r['method']} | {r['checkpoint']} | {r['frames']} | {r['matched']} | {r['dropped']} | "
                     f"{miou} | {'yes' if r['written'] else ''} |")
    lines.append("")
    lines.append("Mean IoU is over the matched frames (those a mask was found for); empty frames are not counted.")
    return "\n".join(lines) + "\n"
