"""The Detector: one frame in, mask + probability + boxes out.

This is the one inference path. The ROS node, the ``satsam`` CLI, bag evaluation and
the training side's evaluation all call :meth:`Detector.detect`, so the numbers
training reports are the numbers the node delivers.

One frame, step by step (shapes for an H x W input, S x S resize, P x P patches,
encoder input E, low-res logits m = E / 4):

1. :func:`preprocess.frame_patches`: H x W (x C) -> SAM RGB (0..255; a gray frame is
   resized as one channel and broadcast to three in the next copy), resized to S x S
   (when only some patches run, the cascade's or ROI tracking's, only the rows under
   them: :func:`tiling.resize_rows`, bit-identical), copied once into the backends'
   N x 3 x P x P layout, SAM-normalised in place;
   :func:`preprocess.resize_patches` to E x E when E != P (per batch).
3. backend: N x 3 x E x E -> N x m x m logits (``fast``: up to ``max_batch`` patches
   per forward (fewer on a CPU when the backend prefers it), fused attention (SAM),
   optional bf16/fp16; ``faithful``: one patch per
   forward at E = 1024 through transformers' stock modules, as the reference
   pipeline's SamProcessor does). Fast and faithful compute the same function when
   the model's own E is 1024 (``test/test_fastpath.py``; SAM 2: ``test/test_sam2.py``).
4. presence (models with an object-score head, SAM 2 and EdgeTAM): a patch whose
   ``sigmoid(score)`` is under ``min_object_score`` gets the logit of a skipped patch
   everywhere (probability 0: it publishes nothing); ``Result.scores`` holds every run
   patch's presence probability and ``Result.gated`` how many were gated.
5. :func:`postprocess.stitch_logits`: logits upsampled to P x P straight into the
   S x S frame (blended where patches overlap; when only some patches ran, into the
   band of rows under them); sigmoid, resized to H x W (from that band alone:
   :func:`tiling.resize_band`), thresholded, connected components -> boxes
   (:mod:`.postprocess`).

``detect(..., only_patches=[...])`` runs a subset of the patches (ROI tracking,
:mod:`satsam_ros.roi`); the others get probability 0.

**Coarse to fine** (``cascade``, S above the coarse size): the frame first runs on the
coarse grid (the same backend, the checkpoint's post-processing for the coarse size:
what the node would publish there); the objects it publishes and, where the coarse
size has a presence gate, the coarse patches it scores present, grown by
``cascade_margin`` input-frame pixels, choose the S patches that run
(:mod:`.selection`, the mechanism ROI tracking uses); every other S patch publishes
nothing. Patches are computed independently, so a cascaded frame equals full tiling
with the unselected patches given the skipped-patch logit. A frame the coarse pass
finds empty costs the coarse pass only (``Result.cascade == "stopped"``).
``cascade_max_patches`` (0: no cap) bounds a frame's cost: where the proposals cover
more S patches, those under the strongest coarse evidence run (an object's mean
probability, a present patch's presence probability; ``Result.cascade == "capped"``).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from typing import Dict, List, Optional, Sequence

import numpy as np

from . import imaging, postprocess, preprocess, selection, tiling
from .backend import AUTOCAST_PRECISIONS, Backend
from .meta import SatsamMeta
from .postprocess import Box, PostConfig

MODES = ("fast", "faithful")
FAITHFUL_ENCODER_SIZE = 1024  # SamProcessor resizes every input to 1024 on its long side
#: the cascade as users write it (CLI, node parameter): auto = the checkpoint's setting for
#: the size (else off), off = full tiling, on = DEFAULT_COARSE_SIZE first, or a coarse size
CASCADE_CHOICES = ("auto", "off", "on", "512", "1024")
DEFAULT_COARSE_SIZE = 512
DEFAULT_CASCADE_MARGIN = 32  # input-frame pixels around each coarse proposal, when the checkpoint has none
# Result.cascade: no S patch ran / some did / some did, and the patch cap left others out
CASCADE_STOPPED, CASCADE_REFINED, CASCADE_CAPPED = "stopped", "refined", "capped"


def parse_cascade(value) -> Optional[int]:
    """A cascade setting as written (``CASCADE_CHOICES``, an int or None) -> the
    DetectorConfig value: None (auto: the checkpoint's), 0 (off) or a coarse size.
    Raises ValueError naming the allowed values."""
    if value is None or (isinstance(value, str) and value.strip().lower() == "auto") or \
            (not isinstance(value, (str, bool)) and value == -1):
        return None
    text = str(value).strip().lower()
    if isinstance(value, bool):
        text = "on" if value else "off"
    if text in ("off", "0"):
        return 0
    if text == "on":
        return DEFAULT_COARSE_SIZE
    if text in CASCADE_CHOICES[3:]:
        return int(text)
    raise ValueError(f"cascade must be one of {', '.join(CASCADE_CHOICES)}; got {value!r}")


@dataclass
class Result:
    """What the detector found in one frame.

    mask: H x W uint8, 0 or 255. probability: H x W float32 in [0, 1].
    boxes: connected components (XYXY pixels of the input frame), best score first.
    timings: seconds per stage ("pre", "model", "post", "total").
    scores: the presence probability (sigmoid of the object-score logit) of each patch
    run, float32, in the order of the patches run (``grid.origins`` order, or the
    sorted ``only_patches``); None when the model has no object-score head (SAM).
    gated: how many of those patches were under ``min_object_score`` (published nothing).
    patches: S-grid patches run; coarse_patches: coarse-grid patches the cascade ran
    first (0 without it); cascade: None (no cascade ran: off, or ``only_patches``
    given), ``"stopped"`` (the coarse pass proposed nothing: no S patch ran),
    ``"refined"`` or ``"capped"`` (refined, and ``cascade_max_patches`` left some
    proposed patches out). ``patches_run`` is both together, the frame's cost in patches.
    """

    mask: np.ndarray
    probability: np.ndarray
    boxes: List[Box]
    timings: Dict[str, float]
    patches: int
    size: int
    threshold: float
    scores: Optional[np.ndarray] = None
    gated: int = 0
    coarse_patches: int = 0
    cascade: Optional[str] = None

    @property
    def patches_run(self) -> int:
        """Patches run for this frame: the S grid's and the coarse pass's."""
        return int(self.patches) + int(self.coarse_patches)

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
            "object_scores": None if self.scores is None else [round(float(v), 6) for v in self.scores],
            "gated_patches": int(self.gated),
            "coarse_patches": int(self.coarse_patches),
            "cascade": self.cascade,
        }


@dataclass
class RawPatches:
    """The model's output for one frame before the gate and the threshold
    (:meth:`Detector.run_patches`).

    logits: N x m x m float32 of the patches run; score_logits: N object-score logits
    or None (no presence head); chosen: the patch indices run (None: all); height,
    width: the input frame's size; patches: N; pre_seconds / model_seconds: timings
    (the coarse pass's included); coarse: what the cascade's coarse pass found (None:
    no cascade ran).
    """

    logits: np.ndarray
    score_logits: Optional[np.ndarray]
    chosen: Optional[List[int]]
    height: int
    width: int
    patches: int
    pre_seconds: float
    model_seconds: float
    coarse: Optional[CoarsePass] = None

    def select(self, indices: Sequence[int], coarse: Optional[CoarsePass] = None) -> RawPatches:
        """These patches of a full frame's output (``chosen`` None) only, as if only they
        had run (``only_patches``): what a cascade choosing them gives (patches are
        computed independently). ``coarse``: the coarse pass to record."""
        if self.chosen is not None:
            raise ValueError("select needs the output of every patch (run_patches with cascade=False)")
        keep = sorted({int(i) for i in indices})
        total = len(self.logits)
        chosen = None if len(keep) == total else keep
        idx = np.asarray(keep, dtype=np.int64)
        return RawPatches(self.logits if chosen is None else self.logits[idx],
                          None if self.score_logits is None else
                          (self.score_logits if chosen is None else self.score_logits[idx]),
                          chosen, self.height, self.width, len(keep), self.pre_seconds, self.model_seconds, coarse)


@dataclass
class CoarsePass:
    """What the cascade's coarse pass found in one frame (:meth:`Detector.coarse_pass`).

    size: the coarse S; boxes: the objects it published (its checkpoint post-processing);
    present: coarse patch indices its presence gate scored present (empty without a
    gate); patches: coarse patches run; pre / model / post: its seconds;
    present_scores: the presence probability of each ``present`` patch; proposed: the S
    patches its proposals covered (set by the cascade; more than it ran when capped).
    """

    size: int
    boxes: List[Box]
    present: List[int]
    patches: int
    pre_seconds: float
    model_seconds: float
    post_seconds: float
    present_scores: List[float] = field(default_factory=list)
    proposed: int = 0


@dataclass
class DetectorConfig:
    """Settings of a Detector; every field is checked by :meth:`validate`."""

    size: int = 512
    patch_size: int = 256
    overlap: int = 0
    mode: str = "fast"
    threshold: Optional[float] = None  # None: the checkpoint's tuned threshold
    min_area: Optional[int] = None  # None: the checkpoint's tuned value (satsam.json min_area)
    max_objects: Optional[int] = None  # None: the checkpoint's value for this size (0 = keep all)
    min_score: Optional[float] = None  # None: the checkpoint's value for this size
    group_gap: Optional[int] = None  # None: the checkpoint's value for this size
    min_object_score: Optional[float] = None  # None: the checkpoint's value for this size (0 = no presence gate)
    max_batch: int = 16
    precision: str = "fp32"  # torch backend autocast: fp32, bf16, fp16 (CUDA); fast mode only
    encoder_size: Optional[int] = None  # fast mode: run the encoder at this E (None: the model's own)
    # coarse to fine: the coarse size S_c run first (0 = off, full tiling; None = the checkpoint's
    # setting for this size, else off); it applies when S_c < size (parse_cascade reads "auto"/"on"...)
    cascade: Optional[int] = None
    cascade_margin: Optional[int] = None  # input-frame pixels around each coarse proposal (None: checkpoint's)
    cascade_max_patches: Optional[int] = None  # most S patches a cascaded frame runs (0: no cap; None: checkpoint's)

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
        if self.min_area is not None and int(self.min_area) < 0:
            raise ValueError(f"min_area must be >= 0; got {self.min_area}")
        if self.max_objects is not None and int(self.max_objects) < 0:
            raise ValueError(f"max_objects must be >= 0 (0 = all); got {self.max_objects}")
        if self.min_score is not None and not 0.0 <= float(self.min_score) <= 1.0:
            raise ValueError(f"min_score must be in [0, 1]; got {self.min_score}")
        if self.group_gap is not None and int(self.group_gap) < 0:
            raise ValueError(f"group_gap must be >= 0 pixels; got {self.group_gap}")
        if self.min_object_score is not None and not 0.0 <= float(self.min_object_score) <= 1.0:
            raise ValueError(f"min_object_score must be in [0, 1]; got {self.min_object_score}")
        if int(self.max_batch) < 1:
            raise ValueError(f"max_batch must be >= 1; got {self.max_batch}")
        if self.precision not in AUTOCAST_PRECISIONS:
            raise ValueError(f"precision must be one of {', '.join(AUTOCAST_PRECISIONS)}; got {self.precision!r}")
        if self.mode == "faithful" and self.precision != "fp32":
            raise ValueError(f"precision {self.precision!r} needs mode 'fast' (faithful mode runs in fp32)")
        if self.encoder_size is not None:
            if int(self.encoder_size) < 64 or int(self.encoder_size) % 16:
                raise ValueError(f"encoder_size must be a multiple of 16, at least 64; got {self.encoder_size}")
            if self.mode == "faithful":
                raise ValueError("encoder_size needs mode 'fast' (faithful mode always runs the encoder at 1024)")
        if self.cascade is not None:
            coarse = self.cascade
            if isinstance(coarse, bool) or coarse != int(coarse) or (int(coarse) != 0 and
                                                                       str(int(coarse)) not in CASCADE_CHOICES):
                raise ValueError(f"cascade must be 0 (off), {', '.join(CASCADE_CHOICES[3:])} (the coarse size) or "
                                 f"None (the checkpoint's); got {coarse!r}")
            if int(coarse) and int(self.patch_size) > int(coarse):
                raise ValueError(f"cascade {coarse}: the coarse grid needs patch_size <= {coarse}; "
                                 f"got {self.patch_size}")
        if self.cascade_margin is not None and int(self.cascade_margin) < 0:
            raise ValueError(f"cascade_margin must be >= 0 input pixels; got {self.cascade_margin}")
        if self.cascade_max_patches is not None and int(self.cascade_max_patches) < 0:
            raise ValueError(f"cascade_max_patches must be >= 0 patches (0 = no cap); got {self.cascade_max_patches}")
        return self


class Detector:
    """Patch-tiled SAM satellite detector around one :class:`Backend`.

    Open one for a model spec with :func:`satsam_ros.runtime.open_detector`, or build
    it directly around a backend. ``threshold`` defaults to the checkpoint's tuned value.
    ``cascade_size`` is the coarse size run first (0: full tiling) and ``coarse`` the
    Detector of that grid (same backend; None without a cascade).
    """

    def __init__(self, backend: Backend, config: Optional[DetectorConfig] = None,
                 meta: Optional[SatsamMeta] = None):
        self.backend = backend
        self.config = (config or DetectorConfig()).validate()
        self.meta = meta if meta is not None else SatsamMeta(encoder_input_size=backend.input_size)
        if self.config.mode == "faithful" and backend.input_size != FAITHFUL_ENCODER_SIZE:
            raise ValueError(
                f"faithful mode needs an encoder input of {FAITHFUL_ENCODER_SIZE}, the backend has "
                f"{backend.input_size} (satsam_ros.runtime.open_detector resizes the encoder for you)"
            )
        self.post = self._resolve_post()
        self.grid = tiling.PatchGrid(self.config.size, self.config.patch_size, self.config.overlap)
        self.batch = 1 if self.config.mode == "faithful" else int(self.config.max_batch)
        if self.config.mode == "fast":  # e.g. smaller batches on a CPU
            self.batch = max(1, min(self.batch, int(backend.preferred_batch(self.batch))))
        self.backend_reason = f"{backend.name} given directly"  # open_detector: which engine and why
        self.cascade_size, self.cascade_margin, self.cascade_max_patches = self._resolve_cascade()
        self.coarse: Optional[Detector] = None
        if self.cascade_size:  # the coarse grid as the node would run it at that size: the checkpoint's post
            plain = {name: None for name in self.POST_FIELDS}
            self.coarse = Detector(backend, replace(self.config, size=self.cascade_size, cascade=0,
                                                    cascade_margin=None, cascade_max_patches=None, **plain),
                                   self.meta)

    def _resolve_cascade(self):
        """(coarse size or 0, margin in input pixels, patch cap or 0): the config's, else
        the checkpoint's for this size, else off, DEFAULT_CASCADE_MARGIN and no cap. A
        coarse size not below S is off."""
        tuned_size, tuned_margin, tuned_cap = self.meta.cascade_for(self.config.size)
        coarse = self.config.cascade if self.config.cascade is not None else (tuned_size or 0)
        if self.config.cascade is None and self.config.patch_size > coarse:  # tuned for other patches
            coarse = 0
        margin = self.config.cascade_margin if self.config.cascade_margin is not None else tuned_margin
        coarse = int(coarse) if 0 < int(coarse) < self.config.size else 0
        cap = self.config.cascade_max_patches if self.config.cascade_max_patches is not None else tuned_cap
        return coarse, int(DEFAULT_CASCADE_MARGIN if margin is None else margin), int(cap or 0)

    def describe_cascade(self) -> str:
        """One line: ``off``, ``512 first, margin 32 px`` or ``512 first, margin 32 px,
        at most 16 patches``."""
        if not self.cascade_size:
            return "off"
        n = self.cascade_max_patches
        cap = f", at most {n} patch{'es' if n != 1 else ''}" if n else ""
        return f"{self.cascade_size} first, margin {self.cascade_margin} px{cap}"

    POST_FIELDS = ("threshold", "min_area", "max_objects", "min_score", "group_gap", "min_object_score")

    def _resolve_post(self) -> PostConfig:
        """The checkpoint's post-processing for this size, with the config's overrides."""
        tuned = self.meta.post_for(self.config.size).to_dict()
        for name in self.POST_FIELDS:
            value = getattr(self.config, name)
            if value is not None:
                tuned[name] = value
        return PostConfig(**tuned).validate()

    def set_post(self, **values) -> PostConfig:
        """Change post-processing settings live (``None``: back to the checkpoint's value).
        Raises ValueError naming a bad value; nothing changes then."""
        unknown = set(values) - set(self.POST_FIELDS)
        if unknown:
            raise ValueError(f"unknown post-processing settings {sorted(unknown)}; known: {self.POST_FIELDS}")
        config = replace(self.config, **values).validate()
        old, self.config = self.config, config
        try:
            self.post = self._resolve_post()
        except ValueError:
            self.config = old
            raise
        return self.post

    @property
    def threshold(self) -> float:
        return self.post.threshold

    @threshold.setter
    def threshold(self, value: float) -> None:
        self.post = replace(self.post, threshold=float(value)).validate()

    @property
    def min_area(self) -> int:
        return self.post.min_area

    @min_area.setter
    def min_area(self, value: int) -> None:
        self.post = replace(self.post, min_area=int(value)).validate()

    def close(self) -> None:
        """Release the backend's model and memory (GPU memory included); ``detect``
        raises RuntimeError afterwards."""
        self.backend.close()

    def detect(self, frame: np.ndarray, order: str = "rgb", only_patches: Optional[Sequence[int]] = None) -> Result:
        """Run the detector on one frame (see :mod:`satsam_ros.imaging` for formats).

        ``order`` is the channel order of colour frames ("rgb", "bgr", "rgba", "bgra").
        ``only_patches`` (indices into ``self.grid.origins``) runs the model on those
        patches only, without the cascade; every other patch gets probability 0 (ROI
        tracking, see :mod:`satsam_ros.roi`). Otherwise the cascade, when on, chooses
        the patches (module docstring). ``Result.patches`` counts the S patches actually
        run, ``Result.coarse_patches`` the cascade's coarse ones, ``Result.scores`` holds
        the S patches' presence probabilities (None without an object-score head) and
        ``Result.gated`` how many of them the presence gate (``min_object_score``) silenced.
        Raises :class:`satsam_ros.imaging.FrameError` for frames it cannot use.
        """
        t0 = time.perf_counter()
        raw = self.run_patches(frame, order, only_patches)
        prob, scores, gated = self.probability(raw)
        mask = postprocess.threshold(prob, self.post.threshold)
        boxes = postprocess.apply_post(mask, prob, self.post) if raw.patches else []
        t3 = time.perf_counter()
        timings = {  # post: everything that is not pre-processing or the model, so the parts add up
            "pre": raw.pre_seconds,
            "model": raw.model_seconds,
            "post": (t3 - t0) - raw.pre_seconds - raw.model_seconds,
            "total": t3 - t0,
        }
        coarse = raw.coarse
        stage = None
        if coarse is not None:
            stage = (CASCADE_STOPPED if not raw.patches else
                     CASCADE_CAPPED if coarse.proposed > raw.patches else CASCADE_REFINED)
        return Result(mask, prob, boxes, timings, raw.patches, self.config.size, self.threshold, scores, gated,
                      coarse.patches if coarse is not None else 0, stage)

    def run_patches(self, frame: np.ndarray, order: str = "rgb",
                    only_patches: Optional[Sequence[int]] = None, cascade: bool = True) -> RawPatches:
        """The model's part of :meth:`detect`: the frame's patches (all, those the
        cascade chooses, or ``only_patches``) through the backend -> :class:`RawPatches`
        (logits and object-score logits), before any gate or threshold. :meth:`probability`
        turns it into the probability map; the threshold tuner keeps it to try several
        gates. ``cascade=False``: every patch (or ``only_patches``) even when the
        cascade is on (the tuner runs the full grid once and selects from it)."""
        t0 = time.perf_counter()
        total = len(self.grid)
        chosen: Optional[List[int]] = None
        if only_patches is not None:
            chosen = sorted({int(i) for i in only_patches})
            if chosen and not 0 <= chosen[0] <= chosen[-1] < total:
                raise ValueError(f"only_patches must be indices in [0, {total}); got {list(only_patches)}")
        planes = imaging.to_sam_planes(frame, order)  # validates; converted once for both grids
        height, width = int(planes.shape[0]), int(planes.shape[1])
        coarse = None
        if only_patches is None and cascade and self.coarse is not None:
            coarse = self._coarse_pass(planes)
            chosen, coarse.proposed = self._cascade_choice(coarse, (height, width))
        if chosen is not None and len(chosen) == total:
            chosen = None
        pre = time.perf_counter() - t0 - (coarse.pre_seconds + coarse.model_seconds + coarse.post_seconds
                                          if coarse is not None else 0.0)
        raw = self._run_grid(planes, chosen, pre)
        if coarse is not None:
            raw.coarse = coarse
            raw.pre_seconds += coarse.pre_seconds
            raw.model_seconds += coarse.model_seconds
        return raw

    def _run_grid(self, planes: np.ndarray, chosen: Optional[List[int]], pre: float = 0.0) -> RawPatches:
        """SAM planes (:func:`imaging.to_sam_planes`) -> RawPatches of this grid's
        ``chosen`` patches (None: all; none: nothing is resized or run). ``pre``: seconds
        of pre-processing already spent on this frame."""
        t0 = time.perf_counter()
        height, width = int(planes.shape[0]), int(planes.shape[1])
        patches = preprocess.grid_patches(planes, self.grid, chosen)  # N x 3 x P x P
        e = self.backend.input_size
        t1 = time.perf_counter()
        low_res, score_chunks = [], []
        prep = 0.0
        for start in range(0, len(patches), self.batch):
            tp = time.perf_counter()
            chunk = preprocess.resize_patches(patches[start:start + self.batch], e)
            prep += time.perf_counter() - tp
            chunk_logits, chunk_scores = self.backend.infer_scored(chunk)
            low_res.append(chunk_logits)
            score_chunks.append(chunk_scores)
        t2 = time.perf_counter()
        m = int(self.backend.low_res_size or 1)
        logits = np.concatenate(low_res) if low_res else np.empty((0, m, m), np.float32)
        score_logits = None
        if score_chunks and all(c is not None for c in score_chunks):
            score_logits = np.concatenate([np.asarray(c, np.float32).reshape(-1) for c in score_chunks])
        return RawPatches(logits, score_logits, chosen, height, width, len(patches),
                          pre + (t1 - t0) + prep, (t2 - t1) - prep)

    def coarse_pass(self, frame: np.ndarray, order: str = "rgb") -> Optional[CoarsePass]:
        """The cascade's coarse pass on one frame (None when the cascade is off)."""
        if self.coarse is None:
            return None
        return self._coarse_pass(imaging.to_sam_planes(frame, order))

    def _coarse_pass(self, planes: np.ndarray) -> CoarsePass:
        """The coarse grid's Detector on the frame: its published objects, and the coarse
        patches scored present where that size has a presence gate."""
        det = self.coarse
        t0 = time.perf_counter()
        raw = det._run_grid(planes, None)
        prob, _, _ = det.probability(raw)
        mask = postprocess.threshold(prob, det.post.threshold)
        boxes = postprocess.apply_post(mask, prob, det.post)
        present: List[int] = []
        present_scores: List[float] = []
        if raw.score_logits is not None and det.post.min_object_score > 0:
            prob_present, off = postprocess.presence_gate(raw.score_logits, det.post.min_object_score)
            present = [int(i) for i in np.flatnonzero(~off)]
            present_scores = [float(prob_present[i]) for i in present]
        post = time.perf_counter() - t0 - raw.pre_seconds - raw.model_seconds
        return CoarsePass(det.config.size, boxes, present, raw.patches, raw.pre_seconds, raw.model_seconds, post,
                          present_scores)

    def cascade_select(self, coarse: CoarsePass, frame_shape, margin: Optional[int] = None,
                       limit: Optional[int] = None) -> List[int]:
        """The S patches the coarse pass ``coarse`` chooses: those under its boxes and
        present patches grown by ``margin`` (default ``cascade_margin``) input-frame
        pixels (:func:`selection.select_patches`, the mechanism ROI tracking uses), at
        most ``limit`` (default ``cascade_max_patches``; 0: all) of them, those under the
        strongest proposals (a box's mean probability, a present patch's presence
        probability) first."""
        return self._cascade_choice(coarse, frame_shape, margin, limit)[0]

    def _cascade_choice(self, coarse: CoarsePass, frame_shape, margin: Optional[int] = None,
                        limit: Optional[int] = None):
        """(:meth:`cascade_select`'s patches, how many the proposals covered before the cap)."""
        if self.coarse is None:
            raise ValueError("cascade_select needs a Detector with the cascade on")
        regions = selection.box_regions(coarse.boxes)
        scores = [float(b.score) for b in coarse.boxes]
        regions += selection.patch_regions(self.coarse.grid, coarse.present, frame_shape)
        scores += [float(v) for v in coarse.present_scores] or [1.0] * len(coarse.present)
        m = self.cascade_margin if margin is None else int(margin)
        cap = self.cascade_max_patches if limit is None else int(limit)
        proposed = selection.select_patches(self.grid, regions, frame_shape, m)
        if cap and len(proposed) > cap:
            return selection.select_patches(self.grid, regions, frame_shape, m, scores, cap), len(proposed)
        return proposed, len(proposed)

    def probability(self, raw: RawPatches, min_object_score: Optional[float] = None):
        """(H x W float32 probability in [0, 1], presence probabilities of the run patches
        or None, patches gated) of :meth:`run_patches`' output: patches under the presence
        gate (``min_object_score``, default this Detector's) get the skipped-patch logit
        (probability 0, they publish nothing), the logits are stitched into the S x S
        frame, sigmoid, resized to the input's H x W. Only the patches that run and pass
        the gate are upsampled and put through the sigmoid; a frame with none of them is
        all zeros at once (a cascade that stopped at the coarse pass)."""
        gate = self.post.min_object_score if min_object_score is None else float(min_object_score)
        scores, gated, off = None, 0, None
        if raw.score_logits is not None:
            scores, off = postprocess.presence_gate(raw.score_logits, gate)
            gated = int(np.count_nonzero(off))
        if raw.patches == 0 or gated == raw.patches:
            return np.zeros((raw.height, raw.width), dtype=np.float32), scores, gated
        if raw.chosen is None:
            prob = postprocess.stitch_probability(self.grid, raw.logits, None, off if gated else None)
            prob = tiling.resize(prob, raw.height, raw.width)
        else:  # zero outside the rows of the patches run: stitch and resize that band only (bit-identical)
            tops = [self.grid.origins[i][0] for i in raw.chosen]
            band = (min(tops), max(tops) + self.grid.patch)
            prob = postprocess.stitch_probability(self.grid, raw.logits, raw.chosen, off if gated else None, band)
            prob = tiling.resize_band(prob, raw.height, raw.width, band[0], band[1],
                                      shape=(self.grid.size, self.grid.size))
        np.clip(prob, 0.0, 1.0, out=prob)
        return prob, scores, gated
