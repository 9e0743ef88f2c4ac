"""The benchmark behind ``satsam bench``: how fast the Detector is, and why.

Library only: every function returns plain, JSON-ready dicts; the ``satsam bench``
command (:mod:`satsam_ros.cli`) prints the table and writes JSON and markdown.

What one run measures (all in this one process, so ratios are fair):

* **latency rows**: for each model x size x backend x variant, per-frame latency
  (median, p95, mean over N frames after warm-up), patches per second, the share of
  time in pre-processing / model / post-processing (from ``Result.timings``), peak
  memory and, for rows that should compute the same function as the faithful row,
  the largest logit difference to it. Variants of one (model, size) group are run
  **interleaved** (frame 1 of every variant, then frame 2, ...), so a load change on
  the machine hits all of them alike.
* **fast-path ablation** (``ablation=True``): the same group with one step of the fast
  path taken away at a time (batching, fused attention), reduced precision, a
  reference-style pre/post-processing next to the vectorised one, ``no_grad`` next to
  ``inference_mode``, and thread settings (each in a child process, because the
  OpenMP wait policy is fixed when torch loads).
* **ROI tracking**: a replayed synthetic sequence with a moving satellite, full scans
  against :class:`satsam_ros.roi.RoiTracker`, frame by frame.
* **targets** of issue 8, each with the measured ratio and pass/fail.
* **the live node** over loopback DDS (:mod:`satsam_ros.node_bench`): sustained frames
  per second and end-to-end latency percentiles at given input rates, with the
  in-process Detector on the same frames as the baseline (``satsam bench --node`` runs
  this section alone).

Memory: ``rss_peak_mb`` is the highest resident set size seen by a psutil sampler
thread (every 5 ms) while that row's frames ran; ``rss_before_mb`` is the RSS just
before them, so ``rss_delta_mb`` is what the row itself added. Rows share one process,
so the model weights loaded earlier stay counted in ``rss_before_mb``. GPU memory is
``torch.cuda.max_memory_allocated`` over the row's frames where CUDA is used.

Random weights are fine for speed (``tiny`` stands in for the shipped model until one
ships, ``vit-b`` is the ViT-B architecture), but not for accuracy: accuracy figures
here are agreement between variants, or use a transparent stand-in (see ROI).
"""

from __future__ import annotations

import json
import math
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import cv2
import numpy as np

from ...core import imaging, postprocess, tiling
from ...core.backend import Backend
from ...core.detector import FAITHFUL_ENCODER_SIZE, Detector, DetectorConfig
from ...model import shipped_model
from ...runtime import open_detector

FORMAT = 1
DEFAULT_SIZES = (512, 1024, 2048)
DEFAULT_MODES = ("fast", "faithful")
# Encoder inputs at 1024 of a ViT-B-sized model cost about 12 s per patch on a 2-core
# CPU, so such rows run only at S = 512 unless asked (16 / 64 patches at 1024 / 2048).
SLOW_HIDDEN_SIZE = 512
SLOW_ROUND_SECONDS = 30.0  # a warm-up round longer than this ends the warm-up
REWARM_SECONDS = 3.0  # rows faster than this get an unmeasured frame before each measured one
FRAME_HEIGHT, FRAME_WIDTH = 512, 641  # the reference data's frame size


# --------------------------------------------------------------------------- frames


def _draw_satellite(mask: np.ndarray, cx: float, cy: float, body: float, angle: float) -> None:
    """Fill a satellite (square-ish body, two panels along ``angle``) into ``mask``."""
    theta = math.radians(angle)
    rects = [((cx, cy), (body, body * 0.8), angle)]
    for side in (-1, 1):
        off = side * body * 1.4
        rects.append(((cx + off * math.cos(theta), cy + off * math.sin(theta)), (body * 1.6, body * 0.5), angle))
    for rect in rects:
        cv2.fillPoly(mask, [np.round(cv2.boxPoints(rect)).astype(np.int32)], 255)


def moving_sequence(
    count: int, seed: int = 0, height: int = FRAME_HEIGHT, width: int = FRAME_WIDTH, speed: float = 6.0
) -> List[Tuple[np.ndarray, np.ndarray]]:
    """``count`` gray frames (H x W uint8) of one satellite drifting over fixed terrain.

    Returns (frame, truth mask H x W uint8 0/255) pairs. The satellite moves ``speed``
    pixels per frame on a straight line with a slow spin, bouncing off the borders;
    terrain from :func:`satsam_ros.synthetic.synthetic_frame` (its empty variant).
    """
    from ...core.synthetic import synthetic_frame

    if count < 1:
        raise ValueError(f"count must be >= 1; got {count}")
    rng = np.random.default_rng(seed)
    terrain, _ = synthetic_frame(seed, height, width, with_satellite=False)
    body = float(rng.uniform(14, 24))
    reach = body * 2.4
    x, y = float(rng.uniform(reach, width - reach)), float(rng.uniform(reach, height - reach))
    heading = float(rng.uniform(0, 2 * math.pi))
    vx, vy = speed * math.cos(heading), speed * math.sin(heading)
    angle = float(rng.uniform(0, 180))
    brightness = float(rng.uniform(205, 245))
    out = []
    for _ in range(count):
        truth = np.zeros((height, width), np.uint8)
        _draw_satellite(truth, x, y, body, angle)
        frame = terrain.astype(np.float32)
        frame[truth > 0] = brightness
        frame += rng.normal(0, 3, frame.shape).astype(np.float32)
        out.append((np.clip(frame, 0, 255).astype(np.uint8), truth))
        x, y, angle = x + vx, y + vy, angle + 2.0
        if not reach <= x <= width - reach:
            vx = -vx
        if not reach <= y <= height - reach:
            vy = -vy
    return out


def bench_frames(count: int = 4, seed: int = 100) -> List[np.ndarray]:
    """``count`` 512 x 641 gray frames with a satellite each (what the rows run on)."""
    from ...core.synthetic import synthetic_frame

    return [synthetic_frame(seed + i)[0] for i in range(count)]


# --------------------------------------------------------------------------- machine


def machine_info() -> Dict[str, Any]:
    """What the figures were measured on (CPU, cores, memory, versions, load)."""
    import psutil
    import torch
    import transformers

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    info: Dict[str, Any] = {
        "cpu": cpu,
        "logical_cpus": os.cpu_count(),
        "usable_cpus": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "memory_gib": round(psutil.virtual_memory().total / 2**30, 1),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "opencv": cv2.__version__,
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),
    }
    try:
        import onnxruntime

        info["onnxruntime"] = onnxruntime.__version__
    except ImportError:
        info["onnxruntime"] = None
    return info


def available_backends(device: str) -> List[str]:
    """Backends this machine can run: torch, plus onnxruntime / tensorrt when importable."""
    from ...backends import module_available

    out = ["torch"]
    if module_available("onnxruntime"):
        out.append("onnxruntime")
    if device == "cuda" and module_available("tensorrt"):
        out.append("tensorrt")
    return out


# --------------------------------------------------------------------------- variants


@dataclass
class Variant:
    """One benchmark row: a detector configuration.

    ``encoder_size`` None means the model's own E (faithful: always 1024).
    ``step`` says which part of the fast path the row adds or removes.
    """

    name: str
    model: str
    size: int
    backend: str = "torch"
    mode: str = "fast"
    fused_attention: bool = True
    precision: str = "fp32"
    encoder_size: Optional[int] = None
    max_batch: int = 16
    step: str = ""
    cpu_batching: bool = True  # False: ignore the backend's smaller CPU batch, run max_batch

    @property
    def key(self) -> str:
        return f"{self.model}/{self.size}/{self.backend}/{self.name}"


@dataclass
class Options:
    """Settings of one benchmark run (the ``satsam bench`` flags)."""

    models: Sequence[str] = ("shipped", "vit-b")
    sizes: Sequence[int] = DEFAULT_SIZES
    backends: Optional[Sequence[str]] = None  # None: every backend available
    modes: Sequence[str] = DEFAULT_MODES
    device: str = "auto"
    frames: int = 10
    warmup: int = 2
    budget: float = 900.0  # seconds per (model, size) group; frames are cut to fit
    ablation: bool = False
    include_slow: bool = False
    native_encoder: Optional[int] = 256  # E of the native-resolution rows (None: no such rows)
    roi: bool = True
    roi_frames: int = 30
    roi_sizes: Sequence[int] = (512, 1024, 2048)
    threads: Optional[int] = None  # torch intra-op threads (None: usable cores)
    seed: int = 0
    command: str = ""
    node: bool = True  # the live-node section (needs the colcon-installed detect_node)
    node_rates: Sequence[Any] = (10.0, 20.0, "max")
    node_frames: int = 100

    def validate(self) -> Options:
        from ...core.detector import MODES

        for s in self.sizes:
            tiling.check_size(s)
        for s in self.roi_sizes:
            tiling.check_size(s)
        for m in self.modes:
            if m not in MODES:
                raise ValueError(f"modes: each must be one of {', '.join(MODES)}; got {m!r}")
        if int(self.frames) < 1 or int(self.warmup) < 0 or int(self.roi_frames) < 2:
            raise ValueError("frames must be >= 1, warmup >= 0 and roi_frames >= 2")
        if float(self.budget) <= 0:
            raise ValueError(f"budget must be > 0 seconds; got {self.budget}")
        if self.threads is not None and int(self.threads) < 1:
            raise ValueError(f"threads must be >= 1; got {self.threads}")
        if self.node:
            self.node_options().validate()
        return self

    def node_options(self):
        from .node import NodeBenchOptions

        return NodeBenchOptions(rates=self.node_rates, frames=int(self.node_frames), size=512,
                                device=None if self.device == "auto" else self.device)


def _is_slow(sam) -> bool:
    return int(sam.config.vision_config.hidden_size) >= SLOW_HIDDEN_SIZE


def plan_variants(
    model: str, sam, size: int, backends: Sequence[str], opts: Options, device: str
) -> Tuple[List[Variant], List[Dict[str, str]]]:
    """The rows for one (model, size) group and the rows skipped, with the reason."""
    from ...model import encoder_input_size

    e_model = encoder_input_size(sam)
    rows: List[Variant] = []
    skipped: List[Dict[str, str]] = []
    slow = _is_slow(sam)
    patches = (size // 256) ** 2

    def skip(name: str, why: str) -> None:
        skipped.append({"model": model, "size": str(size), "row": name, "reason": why})

    big_e_ok = not slow or size == 512 or opts.include_slow
    big_e_why = (
        f"{patches} encoder passes at E = 1024 with a ViT-B-sized model (about 12 s each on a 2-core CPU): "
        "pass --include-slow to run it"
    )
    for backend in backends:
        for mode in opts.modes:
            e_row = FAITHFUL_ENCODER_SIZE if mode == "faithful" else e_model
            if e_row >= FAITHFUL_ENCODER_SIZE and not big_e_ok:
                skip(f"{backend} {mode}", big_e_why)
                continue
            if backend != "torch" and slow and not opts.include_slow:
                skip(f"{backend} {mode}", "ONNX export of a ViT-B-sized model takes minutes: pass --include-slow")
                continue
            rows.append(Variant(mode, model, size, backend, mode, fused_attention=(mode == "fast"),
                                max_batch=1 if mode == "faithful" else 16,
                                step="reference pipeline: E = 1024, one patch per forward" if mode == "faithful"
                                else "fast path: batched (CPU: the backend's preferred batch), fused attention, "
                                "fp32"))
        if backend != "torch":
            continue
        native = opts.native_encoder
        if native is not None and "fast" in opts.modes and native != e_model:
            rows.append(Variant(f"native E={native}", model, size, backend, "fast", encoder_size=int(native),
                                step=f"encoder run at the patch's own {native} (position embeddings resized); "
                                "a different model until trained at that size"))
        if opts.ablation and "fast" in opts.modes and (e_model < FAITHFUL_ENCODER_SIZE or big_e_ok):
            rows.append(Variant("fast, 1 patch/forward", model, size, backend, "fast", max_batch=1,
                                step="fast path without batching"))
            rows.append(Variant("fast, 16 patches/forward", model, size, backend, "fast", cpu_batching=False,
                                step="fast path with the full batch of 16 even on a CPU"))
            if e_model < FAITHFUL_ENCODER_SIZE:
                rows.append(Variant("fast, stock attention", model, size, backend, "fast", fused_attention=False,
                                    step="fast path without the fused attention"))
            else:
                skip("fast, stock attention", "transformers' stock attention on a batch of E = 1024 patches "
                     "materialises the relative-position bias twice, 805 MB per patch and global layer (GBs for "
                     "a batch); the fused-attention step shows as faithful vs 'fast, 1 patch/forward' instead")
            low = "fp16" if device == "cuda" else "bf16"
            rows.append(Variant(f"fast {low}", model, size, backend, "fast", precision=low,
                                step=f"fast path with {low} autocast (changes logits beyond float noise)"))
        elif opts.ablation and "fast" in opts.modes:
            skip("fast ablation rows", big_e_why)
    return rows, skipped


# --------------------------------------------------------------------------- measuring


class _Recording(Backend):
    """Delegates to a backend; keeps the logits of the calls made while ``on``."""

    def __init__(self, inner: Backend):
        self.inner = inner
        self.name = inner.name
        self.device = inner.device
        self.input_size = inner.input_size
        self.low_res_size = inner.low_res_size
        self.on = False
        self.kept: List[np.ndarray] = []

    def infer(self, batch: np.ndarray) -> np.ndarray:
        out = self.inner.infer(batch)
        if self.on:
            self.kept.append(out)
        return out

    def describe(self) -> str:
        return self.inner.describe()


class _RssSampler:
    """Samples this process's RSS every ``interval`` s; keeps the peak per active key."""

    def __init__(self, interval: float = 0.005):
        import psutil

        self._proc = psutil.Process()
        self.interval = interval
        self.active: Optional[str] = None
        self.peaks: Dict[str, int] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rss-sampler", daemon=True)

    def rss(self) -> int:
        return int(self._proc.memory_info().rss)

    def _run(self) -> None:
        while not self._stop.is_set():
            key = self.active
            if key is not None:
                value = self.rss()
                if value > self.peaks.get(key, 0):
                    self.peaks[key] = value
            self._stop.wait(self.interval)

    def __enter__(self) -> _RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(timeout=1.0)


class _Models:
    """Loads each model spec once; derived encoder sizes are cached too."""

    def __init__(self, device: str):
        self.device = device
        self._cache: Dict[Tuple[str, Optional[int]], Any] = {}

    def get(self, spec: str, encoder: Optional[int] = None):
        from ...model import encoder_input_size, load_model, resize_encoder

        if (spec, None) not in self._cache:
            self._cache[(spec, None)] = load_model(spec, device=self.device)
        sam, meta = self._cache[(spec, None)]
        if encoder is None or encoder == encoder_input_size(sam):
            return sam, meta
        if (spec, encoder) not in self._cache:
            self._cache[(spec, encoder)] = (resize_encoder(sam, encoder), meta)
        return self._cache[(spec, encoder)]

    def drop(self, spec: str) -> None:
        for key in [k for k in self._cache if k[0] == spec]:
            del self._cache[key]


def build_detector(variant: Variant, models: _Models, device: str) -> Detector:
    """The Detector of one row (torch rows share the loaded weights between rows)."""
    cfg = DetectorConfig(size=variant.size, mode=variant.mode, max_batch=variant.max_batch,
                         precision=variant.precision if variant.backend == "torch" else "fp32",
                         encoder_size=variant.encoder_size if variant.backend == "torch" else None)
    if variant.backend != "torch":
        return open_detector(variant.model, backend=variant.backend, device=device, config=cfg)
    from ...backends.torch_backend import TorchBackend

    encoder = FAITHFUL_ENCODER_SIZE if variant.mode == "faithful" else variant.encoder_size
    sam, meta = models.get(variant.model, encoder)
    backend = TorchBackend(sam, meta.prompt_policy, device, precision=variant.precision,
                           fused_attention=variant.fused_attention)
    if not variant.cpu_batching:  # hide the backend's batch preference from the Detector
        return Detector(_Recording(backend), cfg, meta)
    return Detector(backend, cfg, meta)


def _percentile(values: Sequence[float], q: float) -> float:
    return float(np.percentile(np.asarray(values, dtype=np.float64), q))


def summarise(timings: Sequence[Dict[str, float]], patches: int) -> Dict[str, Any]:
    """Latency statistics of one row from its per-frame ``Result.timings``."""
    totals = [t["total"] for t in timings]
    median = statistics.median(totals)
    sums = {k: sum(t[k] for t in timings) for k in ("pre", "model", "post", "total")}
    return {
        "frames": len(totals),
        "latency_s": {
            "median": median,
            "p95": _percentile(totals, 95),
            "mean": statistics.fmean(totals),
            "min": min(totals),
            "max": max(totals),
        },
        "patches_per_s": patches / median if median > 0 else None,
        # process CPU time per frame (all threads): less inflated than wall time when
        # other work competes for the cores
        "cpu_s": statistics.median([t["cpu"] for t in timings]) if all("cpu" in t for t in timings) else None,
        "stages_s": {k: statistics.median(t[k] for t in timings) for k in ("pre", "model", "post")},
        "share": {k: (sums[k] / sums["total"] if sums["total"] > 0 else None) for k in ("pre", "model", "post")},
    }


def _compare(ref: Dict[str, Any], got: Dict[str, Any]) -> Dict[str, Any]:
    """Agreement of one row's first-frame output with the reference row's."""
    # Random weights put almost every probability near 0.5, below the threshold, so
    # both masks are often empty (IoU 1 by definition). The masks thresholded at the
    # reference's median probability (half the pixels on) show real agreement.
    median = float(np.median(ref["prob"]))
    out: Dict[str, Any] = {
        "max_abs_prob_diff": float(np.max(np.abs(ref["prob"] - got["prob"]))),
        "mask_iou": postprocess.mask_iou(got["mask"], ref["mask"]),
        "masks_equal": bool(np.array_equal(got["mask"], ref["mask"])),
        "reference_mask_fraction": float(np.count_nonzero(ref["mask"])) / ref["mask"].size,
        "mask_iou_at_median": postprocess.mask_iou(got["prob"] > median, ref["prob"] > median),
        "max_abs_logit_diff": None,
    }
    if ref["logits"].shape == got["logits"].shape:
        out["max_abs_logit_diff"] = float(np.max(np.abs(ref["logits"] - got["logits"])))
        out["logit_scale"] = float(np.max(np.abs(ref["logits"])))
    return out


def measure_group(
    variants: Sequence[Variant],
    detectors: Dict[str, Detector],
    frames: Sequence[np.ndarray],
    opts: Options,
    sampler: _RssSampler,
    progress: bool = False,
) -> Tuple[Dict[str, Dict[str, Any]], Dict[str, Any]]:
    """Run the rows of one group interleaved; return (per-row results, group notes)."""
    import torch
    from tqdm import tqdm

    cuda = any(str(d.backend.device).startswith("cuda") for d in detectors.values())
    keys = [v.key for v in variants]
    samples: Dict[str, List[Dict[str, float]]] = {k: [] for k in keys}
    patches: Dict[str, int] = {}
    first: Dict[str, Dict[str, Any]] = {}
    rss_before: Dict[str, int] = {}
    gpu_peak: Dict[str, int] = {}
    notes: Dict[str, Any] = {}

    def one(key: str, frame: np.ndarray, keep: bool) -> Dict[str, float]:
        det = detectors[key]
        rec = det.backend if isinstance(det.backend, _Recording) else None
        if rec is not None:
            rec.on, rec.kept = keep, []
        if cuda:
            torch.cuda.reset_peak_memory_stats()
        sampler.active = key
        cpu0 = time.process_time()
        res = det.detect(frame)
        cpu = time.process_time() - cpu0
        sampler.active = None
        if cuda:
            gpu_peak[key] = max(gpu_peak.get(key, 0), int(torch.cuda.max_memory_allocated()))
        patches[key] = res.patches
        if keep:
            logits = np.concatenate(rec.kept) if rec is not None and rec.kept else np.zeros((0,))
            first[key] = {"prob": res.probability.copy(), "mask": res.mask.copy(), "logits": logits}
            if rec is not None:
                rec.on, rec.kept = False, []
        return dict(res.timings, cpu=cpu)

    # warm-up rounds (one only when a round is slow), then size the measured rounds
    warm_rounds = 0
    round_time = 0.0
    row_time: Dict[str, float] = {}
    label = f"{variants[0].model} S={variants[0].size}"
    for r in range(int(opts.warmup)):
        t0 = time.perf_counter()
        for key in tqdm(keys, desc=f"{label} warm-up {r + 1}", leave=False, disable=not progress):
            row_time[key] = one(key, frames[r % len(frames)], keep=False)["total"]
        round_time = time.perf_counter() - t0
        warm_rounds += 1
        if round_time > SLOW_ROUND_SECONDS:
            break
    # A cheap row measured right after a heavy one pays for the caches and the
    # allocator the heavy row left behind. Rows up to REWARM_SECONDS per frame get one
    # unmeasured frame just before each measured one (the steady state of a stream,
    # where the node runs one detector back to back); the order rotates every round.
    rewarm = {k for k in keys if row_time.get(k, float("inf")) <= REWARM_SECONDS}
    notes["rewarmed_rows"] = sorted(rewarm)
    n = int(opts.frames)
    if round_time > 0 and round_time * n > opts.budget:
        n = max(1, int(opts.budget // round_time))
        notes["frames_cut"] = f"{opts.frames} -> {n} frames to fit the {opts.budget:.0f} s budget of this group"
    notes["warmup_rounds"] = warm_rounds
    notes["frames"] = n
    for key in keys:
        rss_before[key] = sampler.rss()
    for r in tqdm(range(n), desc=f"{label} ({len(keys)} rows)", leave=False, disable=not progress):
        for key in keys[r % len(keys):] + keys[:r % len(keys)]:
            frame = frames[r % len(frames)]
            if key in rewarm:
                one(key, frame, keep=False)
            samples[key].append(one(key, frame, keep=(r == 0)))

    results: Dict[str, Dict[str, Any]] = {}
    ref_key = next((v.key for v in variants if v.mode == "faithful" and v.backend == "torch"), keys[0])
    for v in variants:
        det = detectors[v.key]
        row: Dict[str, Any] = {k: val for k, val in asdict(v).items()}
        row.update({
            "key": v.key,
            "backend_description": det.backend.describe(),
            "device": str(det.backend.device),
            "encoder_input": int(det.backend.input_size),
            "batch": int(det.batch),
            "patches": patches[v.key],
        })
        row.update(summarise(samples[v.key], patches[v.key]))
        peak = sampler.peaks.get(v.key, rss_before[v.key])
        row["rss_before_mb"] = rss_before[v.key] / 2**20
        row["rss_peak_mb"] = peak / 2**20
        row["rss_delta_mb"] = max(0, peak - rss_before[v.key]) / 2**20
        row["gpu_peak_mb"] = gpu_peak[v.key] / 2**20 if v.key in gpu_peak else None
        row["same_function_as_faithful"] = bool(
            row["encoder_input"] == FAITHFUL_ENCODER_SIZE and v.precision == "fp32"
        )
        row["reference"] = ref_key
        row["vs_reference"] = _compare(first[ref_key], first[v.key]) if v.key != ref_key else None
        results[v.key] = row
    if ref_key in results and results[ref_key]["mode"] == "faithful":
        base = results[ref_key]["latency_s"]["median"]
        for row in results.values():
            row["speedup_vs_faithful"] = base / row["latency_s"]["median"]
    return results, notes


# --------------------------------------------------------------------------- ablations


class _NullBackend(Backend):
    """Returns zero logits instantly: a frame's time is then pre + post only."""

    name = "null"

    def __init__(self, input_size: int = 256, low_res_size: int = 64):
        self.input_size = input_size
        self.low_res_size = low_res_size

    def infer(self, batch: np.ndarray) -> np.ndarray:
        return np.zeros((batch.shape[0], self.low_res_size, self.low_res_size), np.float32)


def reference_prepost(frame: np.ndarray, size: int, patch: int = 256, low_res: int = 64,
                      threshold: float = 0.65) -> Tuple[np.ndarray, float, float]:
    """Pre/post-processing done the straightforward way, for the ablation.

    Per patch, as a SamProcessor-style pipeline would: normalise each patch on its
    own, transpose it, (the model: zero logits), upsample each patch's logits with its
    own cv2 call, place the patches into the frame one by one, then sigmoid, resize,
    threshold and label components with a full-frame ``bincount``. Returns (mask,
    pre seconds, post seconds); the mask equals the Detector's for the same logits.
    """
    t0 = time.perf_counter()
    rgb = imaging.to_sam_rgb(frame, "rgb")
    height, width = rgb.shape[:2]
    resized = tiling.resize(rgb, size, size)
    grid = tiling.PatchGrid(size, patch)
    batch = []
    for y, x in grid.origins:
        batch.append(np.ascontiguousarray(imaging.normalize(resized[y:y + patch, x:x + patch]).transpose(2, 0, 1)))
    batch = np.stack(batch)
    t1 = time.perf_counter()
    logits = np.zeros((len(batch), low_res, low_res), np.float32)
    t2 = time.perf_counter()
    stitched = np.zeros((size, size), np.float32)
    for (y, x), lg in zip(grid.origins, logits):
        stitched[y:y + patch, x:x + patch] = cv2.resize(lg, (patch, patch), interpolation=cv2.INTER_LINEAR)
    prob = np.clip(tiling.resize(postprocess.sigmoid(stitched), height, width), 0.0, 1.0)
    mask = postprocess.threshold(prob, threshold)
    binary = (mask > 0).astype(np.uint8)
    count, labels, stats, _ = cv2.connectedComponentsWithStats(binary, connectivity=8)
    np.bincount(labels.ravel(), weights=prob.ravel().astype(np.float64), minlength=count)
    t3 = time.perf_counter()
    return mask, t1 - t0, t3 - t2


def bench_prepost(sizes: Sequence[int], frames: Sequence[np.ndarray], rounds: int = 20) -> List[Dict[str, Any]]:
    """Reference-style pre/post-processing against the Detector's, interleaved."""
    rows = []
    for size in sizes:
        det = Detector(_NullBackend(), DetectorConfig(size=size, threshold=0.65))
        ref_pre, ref_post, cur_pre, cur_post = [], [], [], []
        for r in range(rounds + 2):
            frame = frames[r % len(frames)]
            _, a, b = reference_prepost(frame, size)
            res = det.detect(frame)
            if r >= 2:
                ref_pre.append(a)
                ref_post.append(b)
                cur_pre.append(res.timings["pre"])
                cur_post.append(res.timings["post"])
        med = statistics.median
        rows.append({
            "size": size,
            "reference_pre_ms": 1e3 * med(ref_pre), "reference_post_ms": 1e3 * med(ref_post),
            "detector_pre_ms": 1e3 * med(cur_pre), "detector_post_ms": 1e3 * med(cur_post),
            "speedup": (med(ref_pre) + med(ref_post)) / max(med(cur_pre) + med(cur_post), 1e-9),
            "frames": rounds,
        })
    return rows


def bench_grad_modes(detector: Detector, frames: Sequence[np.ndarray], rounds: int = 10) -> Dict[str, Any]:
    """Model time of one frame's patches under ``no_grad`` vs ``inference_mode``."""
    import torch

    backend = detector.backend
    module = getattr(backend, "module", None)
    if module is None:
        return {"skipped": f"backend {backend.name} has no torch module"}
    size, e = detector.config.size, backend.input_size
    rgb = imaging.to_sam_rgb(frames[0], "rgb")
    patches = detector.grid.extract_chw(imaging.normalize(tiling.resize(rgb, size, size)))
    if e != patches.shape[2]:
        from ...core.detector import _resize_patches

        patches = _resize_patches(patches, e)
    x = torch.from_numpy(np.ascontiguousarray(patches[: detector.batch])).to(backend.device)
    times: Dict[str, List[float]] = {"no_grad": [], "inference_mode": []}
    for r in range(rounds + 1):
        for name, ctx in (("no_grad", torch.no_grad), ("inference_mode", torch.inference_mode)):
            t0 = time.perf_counter()
            with ctx():
                module(x)
            if r:
                times[name].append(time.perf_counter() - t0)
    med = {k: statistics.median(v) for k, v in times.items()}
    return {"batch": int(x.shape[0]), "no_grad_ms": 1e3 * med["no_grad"],
            "inference_mode_ms": 1e3 * med["inference_mode"],
            "speedup": med["no_grad"] / max(med["inference_mode"], 1e-12), "rounds": rounds}


THREAD_PROBES = (
    {"name": "all cores, OpenMP default (spinning)", "threads": 0, "wait": None},
    {"name": "all cores, OMP_WAIT_POLICY=PASSIVE", "threads": 0, "wait": "PASSIVE"},
    {"name": "1 thread, OMP_WAIT_POLICY=PASSIVE", "threads": 1, "wait": "PASSIVE"},
    {"name": "all cores, PASSIVE, OpenCV 1 thread", "threads": 0, "wait": "PASSIVE", "opencv": 1},
)


def _probe_child(spec_json: str, out_path: str) -> None:
    """Child-process side of :func:`bench_threads` (writes its result to out_path)."""
    spec = json.loads(spec_json)
    from ...backends.torch_backend import configure_threads

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    settings = configure_threads(spec["threads"] or cores, None, spec.get("opencv"))
    det = open_detector(spec["model"], backend="torch", device="cpu", size=spec["size"],
                              encoder_size=spec.get("encoder_size"))
    frames = bench_frames(2)
    for i in range(spec["warmup"]):
        det.detect(frames[i % 2])
    totals = []
    for i in range(spec["frames"]):
        totals.append(det.detect(frames[i % 2]).timings["total"])
    with open(out_path, "w") as fh:
        json.dump({"totals": totals, "settings": settings}, fh)


def bench_threads(model: str, size: int, frames: int = 10, warmup: int = 2, passes: int = 2,
                  encoder_size: Optional[int] = None) -> List[Dict[str, Any]]:
    """Thread and OpenMP wait-policy settings, each in a fresh child process.

    The probes run round-robin ``passes`` times (so a load change on the machine is
    shared); each row reports the median over all its frames.
    """
    results: Dict[str, List[float]] = {p["name"]: [] for p in THREAD_PROBES}
    settings: Dict[str, Any] = {}
    for _ in range(passes):
        for probe in THREAD_PROBES:
            env = dict(os.environ)
            env.pop("OMP_WAIT_POLICY", None)
            if probe["wait"]:
                env["OMP_WAIT_POLICY"] = probe["wait"]
            spec = {"model": model, "size": size, "threads": probe["threads"], "opencv": probe.get("opencv"),
                    "frames": frames, "warmup": warmup, "encoder_size": encoder_size}
            with tempfile.TemporaryDirectory() as tmp:
                out = os.path.join(tmp, "probe.json")
                code = ("import sys; from satsam_ros.tools.bench.detector import _probe_child; "
                        "_probe_child(sys.argv[1], sys.argv[2])")
                proc = subprocess.run([sys.executable, "-c", code, json.dumps(spec), out], env=env,
                                      capture_output=True, text=True, timeout=1800)
                if proc.returncode != 0:
                    raise RuntimeError(f"thread probe {probe['name']!r} failed: {proc.stderr[-2000:]}")
                with open(out) as fh:
                    data = json.load(fh)
            results[probe["name"]].extend(data["totals"])
            settings[probe["name"]] = data["settings"]
    rows = []
    for probe in THREAD_PROBES:
        vals = results[probe["name"]]
        rows.append({"setting": probe["name"], "model": model, "size": size, "encoder_size": encoder_size,
                     "median_ms": 1e3 * statistics.median(vals), "p95_ms": 1e3 * _percentile(vals, 95),
                     "frames": len(vals), "threads": settings[probe["name"]]})
    return rows


# --------------------------------------------------------------------------- ROI


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

    models = models or _Models(device)
    sam, meta = models.get(model)
    real = TorchBackend(sam, meta.prompt_policy, device, fused_attention=True)
    if standin is None:
        standin = model in ("tiny", "vit-b")
    backend: Backend = _BrightnessStandIn(real) if standin else real
    det = Detector(backend, DetectorConfig(size=size, threshold=0.5 if standin else None), meta)
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


# --------------------------------------------------------------------------- targets


def _row(report: Dict[str, Any], model: str, size: int, name: str, backend: str = "torch") -> Optional[Dict]:
    return report["rows"].get(f"{model}/{size}/{backend}/{name}")


def evaluate_targets(report: Dict[str, Any]) -> List[Dict[str, Any]]:
    """Issue 8's targets, each with the measured figure and pass / fail / not measured."""
    out: List[Dict[str, Any]] = []
    shipped = report["shipped_model"]
    native = report["options"].get("native_encoder")
    faith = _row(report, "vit-b", 512, "faithful")
    fast = _row(report, "vit-b", 512, "fast")

    def add(name: str, goal: str, measured: Optional[float], passed: Optional[bool], detail: str) -> None:
        out.append({"target": name, "goal": goal, "measured": measured, "passed": passed, "detail": detail})

    if faith and fast:
        ratio = faith["latency_s"]["median"] / fast["latency_s"]["median"]
        diff = (fast["vs_reference"] or {}).get("max_abs_logit_diff")
        same = diff is not None and diff <= 1e-3 * max(1.0, (fast["vs_reference"] or {}).get("logit_scale", 1.0))
        detail = (f"faithful {faith['latency_s']['median']:.1f} s vs fast {fast['latency_s']['median']:.1f} s per "
                  f"frame; max |logit diff| {diff:.2e}" if diff is not None else "no logit comparison")
        low = next((r for k, r in report["rows"].items()
                    if k.startswith("vit-b/512/torch/fast ") and r["precision"] != "fp32"), None)
        if low:
            low_ratio = faith["latency_s"]["median"] / low["latency_s"]["median"]
            detail += (f"; with {low['precision']} autocast {low_ratio:.2f}x (IoU@median vs faithful "
                       f"{low['vs_reference']['mask_iou_at_median']:.3f}, not the same function)")
        add("fast vs faithful, ViT-B, S=512, same model", ">= 2.0x", ratio, bool(ratio >= 2.0 and same), detail)
    else:
        add("fast vs faithful, ViT-B, S=512, same model", ">= 2.0x", None, None, "ViT-B rows at 512 not measured")
    nat = _row(report, "vit-b", 512, f"native E={native}") if native else None
    if faith and nat:
        ratio = faith["latency_s"]["median"] / nat["latency_s"]["median"]
        add(f"native E={native} encoder vs faithful, ViT-B, S=512", ">= 10x (speed; accuracy within 2 points "
            "needs a checkpoint trained at that size)", ratio, bool(ratio >= 10.0),
            f"{nat['latency_s']['median']:.2f} s per frame; accuracy comparison pending a trained model")
    else:
        add("native encoder vs faithful, ViT-B, S=512", ">= 10x", None, None, "rows not measured")
    ship = _row(report, shipped, 512, "fast")
    if ship:
        # every backend's fast row: the node runs whichever `auto` picks (ONNX Runtime on a CPU)
        rows = [(b, _row(report, shipped, 512, "fast", b)) for b in report.get("backends", ["torch"])]
        per_backend = [(b, r) for b, r in rows if r]
        shares = [(b, 100 * ((r["share"]["pre"] or 0.0) + (r["share"]["post"] or 0.0)), r) for b, r in per_backend]
        worst = max(shares, key=lambda x: x[1])
        others = []
        for s in (1024, 2048):
            r = _row(report, shipped, s, "fast")
            if r:
                others.append(f"S={s} torch: {100 * ((r['share']['pre'] or 0) + (r['share']['post'] or 0)):.1f} %")
        detail = "; ".join(f"{b}: {v:.1f} % of {1e3 * r['latency_s']['median']:.1f} ms per frame (pre "
                           f"{1e3 * r['stages_s']['pre']:.1f} ms, post {1e3 * r['stages_s']['post']:.1f} ms)"
                           if r.get("stages_s") else f"{b}: {v:.1f} %" for b, v, r in shares)
        add(f"pre + post share of frame time, shipped model ({shipped}), S=512, every backend", "< 10 %", worst[1],
            bool(worst[1] < 10.0), detail + (f"; {', '.join(others)}" if others else ""))
    else:
        add("pre + post share, shipped model", "< 10 %", None, None, "row not measured")
    for model in [shipped, "vit-b"]:
        name = "fast" if model == shipped else f"native E={native}"
        a, b = _row(report, model, 512, name), _row(report, model, 2048, name)
        if a and b:
            t_ratio = b["latency_s"]["median"] / a["latency_s"]["median"]
            p_ratio = b["patches"] / a["patches"]
            add(f"cost growth 512 -> 2048, {model} {name}", f"<= patch growth ({p_ratio:.0f}x)", t_ratio,
                bool(t_ratio <= p_ratio), f"{a['latency_s']['median']:.3f} s -> {b['latency_s']['median']:.3f} s")
    node = report.get("node")
    name = f"live node: >= 10 frames/s sustained, p95 <= 200 ms (512 x 641, shipped model {shipped})"
    if node:
        t = node["target"]
        add(name, ">= 10 fps, p95 <= 200 ms", t["measured"], t["passed"], t["detail"])
    else:
        why = next((s["reason"] for s in report.get("skipped", []) if s["row"] == "live node"),
                   "not run (--no-node)")
        add(name, ">= 10 fps, p95 <= 200 ms", None, None, why)
    return out


# --------------------------------------------------------------------------- the run


def run_benchmark(opts: Options, progress: bool = False, on_row: Optional[Callable[[Dict], None]] = None,
                  checkpoint: Optional[Callable[[Dict], None]] = None, resume: Optional[Dict[str, Any]] = None,
                  work: Optional[str] = None) -> Dict[str, Any]:
    """Run everything ``opts`` asks for; return the report (a JSON-ready dict).

    ``checkpoint(report)`` is called with the partial report after every group and
    section, so a run that dies (a full run takes an hour on 2 cores) loses little.
    ``work``: directory for the live-node section's bags and reports (default: a
    temporary directory). ``resume``: a (partial) report of an earlier run with the same settings; its
    groups and sections are taken over instead of measured again, and marked so
    (ratios within a group stay fair; comparisons across groups then mix two runs).
    """
    from tqdm import tqdm

    from ...backends.torch_backend import configure_threads
    from ...runtime import resolve_device

    opts.validate()
    device = resolve_device(opts.device)
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    threads = configure_threads(int(opts.threads or cores))
    started = time.time()
    shipped, shipped_note = shipped_model()
    models_req = [shipped if m == "shipped" else m for m in opts.models]
    backends = list(opts.backends) if opts.backends else available_backends(device)
    report: Dict[str, Any] = {
        "format": FORMAT,
        "command": opts.command,
        "started": time.strftime("%Y-%m-%d %H:%M:%S %Z", time.localtime(started)),
        "machine": machine_info(),
        "threads": threads,
        "device": device,
        "shipped_model": shipped,
        "shipped_model_note": shipped_note,
        "options": {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(opts).items()},
        "backends": backends,
        "rows": {},
        "groups": {},
        "skipped": [],
        "ablation": {},
        "roi": [],
        "resumed_from": None,
    }
    old = resume or {}
    if resume:
        report["resumed_from"] = {"started": old.get("started"), "command": old.get("command"),
                                  "machine": old.get("machine")}

    def save() -> None:
        if checkpoint:
            checkpoint(report)

    frames = bench_frames(4, seed=100 + opts.seed)
    models = _Models(device)
    with _RssSampler() as sampler:
        for model in models_req:
            for size in opts.sizes:
                group = f"{model}/{size}"
                if group in old.get("groups", {}):
                    prefix = group + "/"
                    report["rows"].update({k: v for k, v in old["rows"].items() if k.startswith(prefix)})
                    report["groups"][group] = dict(old["groups"][group], resumed=True)
                    report["skipped"].extend(x for x in old.get("skipped", [])
                                             if x["model"] == model and x["size"] == str(size))
                    continue
                try:
                    sam, _ = models.get(model)
                except (ValueError, FileNotFoundError) as exc:
                    report["skipped"].append({"model": model, "size": "*", "row": "*", "reason": str(exc)})
                    break
                variants, skipped = plan_variants(model, sam, size, backends, opts, device)
                report["skipped"].extend(skipped)
                detectors: Dict[str, Detector] = {}
                kept: List[Variant] = []
                for v in variants:
                    try:
                        det = build_detector(v, models, device)
                    except (ValueError, FileNotFoundError, RuntimeError, ImportError) as exc:
                        report["skipped"].append({"model": model, "size": str(size), "row": f"{v.backend} {v.name}",
                                                  "reason": f"{type(exc).__name__}: {exc}"})
                        continue
                    if not isinstance(det.backend, _Recording):
                        det.backend = _Recording(det.backend)
                    detectors[v.key] = det
                    kept.append(v)
                if not kept:
                    continue
                rows, notes = measure_group(kept, detectors, frames, opts, sampler, progress)
                report["rows"].update(rows)
                report["groups"][group] = notes
                if on_row:
                    for row in rows.values():
                        on_row(row)
                del detectors
                save()
            if opts.ablation and model == shipped:
                report["ablation"]["grad_mode"] = old.get("ablation", {}).get("grad_mode") or bench_grad_modes(
                    open_detector(model, backend="torch", device=device, size=512), frames)
            if model != shipped:
                models.drop(model)
        if opts.ablation:
            report["ablation"]["prepost"] = old.get("ablation", {}).get("prepost") or bench_prepost(opts.sizes, frames)
            save()
            if device == "cpu":
                probes = old.get("ablation", {}).get("threads")
                if not probes:
                    probes = bench_threads(shipped, 512, frames=max(5, int(opts.frames)), warmup=2)
                    if "vit-b" in models_req and opts.native_encoder:
                        probes += bench_threads("vit-b", 512, frames=2, warmup=1, passes=1,
                                                encoder_size=int(opts.native_encoder))
                report["ablation"]["threads"] = probes
                save()
        if opts.roi:
            done = {r["size"]: r for r in old.get("roi", []) if r.get("model") == shipped}
            for size in tqdm(opts.roi_sizes, desc="ROI tracking", leave=False, disable=not progress):
                report["roi"].append(done.get(size) or bench_roi(
                    shipped, size, device, frames=int(opts.roi_frames), seed=opts.seed, models=models))
                save()
    del models
    if opts.node:
        report["node"] = old.get("node") or run_node_section(opts, shipped, work, progress, report["skipped"])
        save()
    report["targets"] = evaluate_targets(report)
    report["machine"]["load_average_end"] = list(os.getloadavg()) if hasattr(os, "getloadavg") else None
    report["duration_s"] = time.time() - started
    return report


def run_node_section(opts: Options, model: str, work: Optional[str], progress: bool,
                     skipped: List[Dict[str, str]]) -> Optional[Dict[str, Any]]:
    """The live-node section, or None with a ``skipped`` entry when the node is not installed."""
    from ..bag.io import BagError
    from .node import bench_node

    nopts = opts.node_options()
    nopts.model = model
    try:
        if work:
            return bench_node(nopts, Path(work), progress=progress)
        with tempfile.TemporaryDirectory(prefix="satsam-node-bench-") as tmp:
            return bench_node(nopts, Path(tmp), progress=progress)
    except BagError as exc:
        skipped.append({"model": model, "size": "512", "row": "live node", "reason": str(exc)})
        return None


# --------------------------------------------------------------------------- output


def _fmt(value: Optional[float], spec: str = ".3f", none: str = "-") -> str:
    return none if value is None else format(value, spec)


def table_rows(report: Dict[str, Any]) -> Tuple[List[str], List[List[str]]]:
    """Header and rows of the main latency table (plain strings)."""
    head = ["model", "S", "backend", "row", "E", "batch", "frames", "median s", "p95 s", "cpu s", "x faithful",
            "patch/s", "pre %", "model %", "post %", "peak RSS MB", "+RSS MB", "max |dlogit|", "IoU@median"]
    rows = []
    for r in report["rows"].values():
        cmp_ = r.get("vs_reference") or {}
        rows.append([
            r["model"], str(r["size"]), r["backend"], r["name"], str(r["encoder_input"]), str(r["batch"]),
            str(r["frames"]), _fmt(r["latency_s"]["median"]), _fmt(r["latency_s"]["p95"]), _fmt(r.get("cpu_s")),
            _fmt(r.get("speedup_vs_faithful"), ".2f"), _fmt(r["patches_per_s"], ".2f"),
            _fmt(100 * r["share"]["pre"], ".1f"), _fmt(100 * r["share"]["model"], ".1f"),
            _fmt(100 * r["share"]["post"], ".1f"), _fmt(r["rss_peak_mb"], ".0f"), _fmt(r["rss_delta_mb"], ".0f"),
            _fmt(cmp_.get("max_abs_logit_diff"), ".1e"), _fmt(cmp_.get("mask_iou_at_median"), ".3f"),
        ])
    return head, rows


def format_table(head: List[str], rows: List[List[str]]) -> str:
    """Fixed-width text table."""
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(head)]
    lines = ["  ".join(h.rjust(w) for h, w in zip(head, widths))]
    lines += ["  ".join(c.rjust(w) for c, w in zip(r, widths)) for r in rows]
    return "\n".join(lines)


def _md_table(head: List[str], rows: List[List[str]]) -> str:
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def to_markdown(report: Dict[str, Any]) -> str:
    """The report as a markdown page (what BENCHMARKS.md is made of)."""
    m = report["machine"]
    t = report["threads"]
    out = [
        "# satsam bench",
        "",
        f"Run {report['started']}, {report['duration_s'] / 60:.1f} min. Command: `{report['command']}`",
        "",
        "## Machine",
        "",
        f"- CPU: {m['cpu']}, {m['usable_cpus']} usable of {m['logical_cpus']} logical CPUs; "
        f"{m['memory_gib']} GiB RAM; GPU: {m['cuda'] or 'none'}",
        f"- Python {m['python']}, torch {m['torch']}, transformers {m['transformers']}, "
        f"OpenCV {m['opencv']}, onnxruntime {m['onnxruntime'] or '-'}; {m['platform']}",
        f"- Threads: torch {t['torch_threads']} intra-op / {t['interop_threads']} inter-op, OpenCV "
        f"{t['opencv_threads']}, OMP_WAIT_POLICY={t['omp_wait_policy']}",
        f"- Load average (1/5/15 min) at start {_loads(m.get('load_average'))}, at the end "
        f"{_loads(m.get('load_average_end'))} (other work on the machine inflates absolute times; "
        "rows of one group ran interleaved, so their ratios are fair)",
        f"- Shipped model: `{report['shipped_model']}`: {report['shipped_model_note']}",
        "",
        "## Targets",
        "",
    ]
    trows = []
    for tg in report["targets"]:
        verdict = {True: "PASS", False: "MISS", None: "not measured"}[tg["passed"]]
        trows.append([tg["target"], tg["goal"], _fmt(tg["measured"], ".2f"), verdict, tg["detail"]])
    out += [_md_table(["target", "goal", "measured", "verdict", "detail"], trows), ""]
    head, rows = table_rows(report)
    out += [
        "## Latency per frame",
        "",
        "Median and p95 over the measured frames (512 x 641 gray synthetic frames) after warm-up; the rows "
        "of a group run interleaved in a rotating order, and rows under 3 s per frame run one unmeasured "
        "frame right before each measured one (a stream's steady state); "
        "`x faithful` is the faithful row's median over this row's; stage shares are of the summed frame "
        "time; `peak RSS` is the process's peak while the row ran, `+RSS` what the row added on top; "
        "`max |dlogit|` compares the first frame's low-resolution logits with the faithful row's "
        "(same encoder input only); `IoU@median` is the IoU of the two probability maps thresholded at "
        "the faithful row's median probability (half the pixels on: with random weights the real "
        "threshold leaves both masks empty). With few frames, p95 is close to the maximum.",
        "",
        _md_table(head, rows),
        "",
    ]
    steps = [[r["model"], str(r["size"]), r["name"], r["step"]] for r in report["rows"].values() if r["step"]]
    if steps:
        out += ["What each row is:", "", _md_table(["model", "row", "what"], _unique(steps)), ""]
    groups = report.get("groups") or {}
    cut = [[g, n["frames_cut"]] for g, n in groups.items() if "frames_cut" in n]
    if cut:
        out += ["Frames cut to the time budget:", "", _md_table(["group", "frames"], cut), ""]
    resumed = [g for g, n in groups.items() if n.get("resumed")]
    if resumed:
        src = report.get("resumed_from") or {}
        out += [f"Groups taken over from the earlier run of {src.get('started')} (`--resume`): "
                f"{', '.join(resumed)}. Ratios within a group come from one run; comparisons across groups "
                "mix the two runs.", ""]
    ab = report.get("ablation") or {}
    if ab.get("prepost"):
        out += ["## Pre/post-processing: reference style vs the Detector", "",
                "Zero-cost model (the frame time is pre + post only); reference style = per-patch "
                "normalisation and transposes, per-patch logit upsampling and placement, full-frame "
                "component sums.", ""]
        out.append(_md_table(["S", "reference pre ms", "reference post ms", "detector pre ms", "detector post ms",
                              "speed-up"],
                             [[str(r["size"]), _fmt(r["reference_pre_ms"], ".2f"), _fmt(r["reference_post_ms"], ".2f"),
                               _fmt(r["detector_pre_ms"], ".2f"), _fmt(r["detector_post_ms"], ".2f"),
                               _fmt(r["speedup"], ".2f")] for r in ab["prepost"]]))
        out.append("")
    if ab.get("grad_mode") and "skipped" not in ab["grad_mode"]:
        g = ab["grad_mode"]
        out += ["## no_grad vs inference_mode", "",
                f"Shipped model, one forward of {g['batch']} patches: no_grad {g['no_grad_ms']:.2f} ms, "
                f"inference_mode {g['inference_mode_ms']:.2f} ms ({g['speedup']:.2f}x).", ""]
    if ab.get("threads"):
        out += ["## Thread settings", "",
                "Each setting in a fresh child process (the OpenMP wait policy is read when torch loads), "
                "round-robin, median over all frames.", ""]
        out.append(_md_table(["model", "S", "setting", "median ms", "p95 ms", "frames"],
                             [[r["model"] + (f" E={r['encoder_size']}" if r.get("encoder_size") else ""),
                               str(r["size"]), r["setting"], _fmt(r["median_ms"], ".1f"), _fmt(r["p95_ms"], ".1f"),
                               str(r["frames"])] for r in ab["threads"]]))
        out.append("")
    if report.get("roi"):
        out += ["## ROI tracking", "",
                "A replayed synthetic sequence (one satellite drifting over fixed terrain); each frame is run "
                "as a full scan and through the tracker, interleaved. Accuracy = mean IoU with the true mask "
                "and with the full scan's mask. Stand-in = the real model runs (its cost is measured) but the "
                "masks come from a transparent brightness stand-in, because random weights detect nothing.", ""]
        out.append(_md_table(
            ["model", "S", "stand-in", "frames", "patches full / ROI", "full median s", "ROI median s",
             "speed-up (mean)", "IoU truth full", "IoU truth ROI", "agreement IoU mean / min", "lost", "scans"],
            [[r["model"], str(r["size"]), "yes" if r["stand_in"] else "no", str(r["frames"]),
              f"{r['patches_per_frame_full']} / {r['patches_per_frame_roi_mean']:.1f}",
              _fmt(r["full_median_s"], ".4f"), _fmt(r["roi_median_s"], ".4f"), _fmt(r["speedup_mean"], ".2f"),
              _fmt(r["iou_truth_full_mean"], ".3f"), _fmt(r["iou_truth_roi_mean"], ".3f"),
              f"{r['agreement_iou_mean']:.3f} / {r['agreement_iou_min']:.3f}", str(r["frames_lost"]),
              ", ".join(f"{k} {v}" for k, v in r["scans"].items() if k in ("full", "roi", "rescan"))]
             for r in report["roi"]]))
        out.append("")
    if report["skipped"]:
        out += ["## Skipped", "", _md_table(["model", "S", "row", "why"],
                                           [[s["model"], s["size"], s["row"], s["reason"]] for s in report["skipped"]]),
                ""]
    if report.get("node"):
        from .node import node_markdown

        out += node_markdown(report["node"])
    return "\n".join(out)


def _loads(values: Optional[Sequence[float]]) -> str:
    return "/".join(f"{v:.1f}" for v in values) if values else "-"


def _unique(rows: List[List[str]]) -> List[List[str]]:
    """(model, row, what) once per model and row name (the sizes repeat them)."""
    seen, out = set(), []
    for r in rows:
        if (r[0], r[2]) not in seen:
            seen.add((r[0], r[2]))
            out.append([r[0], r[2], r[3]])
    return out
