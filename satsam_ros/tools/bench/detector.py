"""The latency rows of the benchmark: one (model, size) group of detector variants,
measured interleaved.

For each model x size x backend x variant: per-frame latency (median, p95, mean over N
frames after warm-up), patches per second, the share of time in pre-processing / model
/ post-processing (from ``Result.timings``), peak memory and, for rows that should
compute the same function as the faithful row, the largest logit difference to it.
Variants of one group run **interleaved** (frame 1 of every variant, then frame 2,
...), so a load change on the machine hits all of them alike.

Memory: ``rss_peak_mb`` is the highest resident set size seen by a psutil sampler
thread (every 5 ms) while that row's frames ran; ``rss_before_mb`` is the RSS just
before them, so ``rss_delta_mb`` is what the row itself added. Rows share one process,
so the model weights loaded earlier stay counted in ``rss_before_mb``. GPU memory is
``torch.cuda.max_memory_allocated`` over the row's frames where CUDA is used.
"""

from __future__ import annotations

import statistics
import threading
import time
from dataclasses import asdict, dataclass
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from ...core import postprocess
from ...core.backend import Backend
from ...core.detector import FAITHFUL_ENCODER_SIZE, Detector, DetectorConfig
from ...core.stats import percentile
from ...runtime import open_detector
from .options import Options

# Encoder inputs at 1024 of a ViT-B-sized model cost about 12 s per patch on a 2-core
# CPU (SAM 2.1 hiera-tiny: 296 against 976 GFLOP, a few seconds), so such rows run only
# at S = 512 unless asked (16 / 64 patches at 1024 / 2048). Slow: a SAM encoder this
# wide, or a SAM 2 whose last Hiera stage is (hiera-tiny: 768; tiny-sam2: 256).
SLOW_HIDDEN_SIZE = 512
SLOW_ROUND_SECONDS = 30.0  # a warm-up round longer than this ends the warm-up
REWARM_SECONDS = 3.0  # rows faster than this get an unmeasured frame before each measured one


def bench_frames(count: int = 4, seed: int = 100) -> List[np.ndarray]:
    """``count`` 512 x 641 gray frames with a satellite each (what the rows run on)."""
    from ...core.synthetic import synthetic_frame

    return [synthetic_frame(seed + i)[0] for i in range(count)]


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


def _is_slow(sam) -> bool:
    from ...model import family_of

    vision = sam.config.vision_config
    if family_of(sam).name == "sam2":
        return int(vision.backbone_config.embed_dim_per_stage[-1]) >= SLOW_HIDDEN_SIZE
    if family_of(sam).name == "edgetam":  # a timm CNN: its widest (stride-32) feature
        return int(vision.backbone_channel_list[0]) >= SLOW_HIDDEN_SIZE
    return int(vision.hidden_size) >= SLOW_HIDDEN_SIZE


def plan_variants(
    model: str, sam, size: int, backends: Sequence[str], opts: Options, device: str
) -> Tuple[List[Variant], List[Dict[str, str]]]:
    """The rows for one (model, size) group and the rows skipped, with the reason."""
    from ...model import encoder_input_size, supports_fused_attention

    e_model = encoder_input_size(sam)
    rows: List[Variant] = []
    skipped: List[Dict[str, str]] = []
    slow = _is_slow(sam)
    fused = supports_fused_attention(sam)
    patches = (size // 256) ** 2

    def skip(name: str, why: str) -> None:
        skipped.append({"model": model, "size": str(size), "row": name, "reason": why})

    big_e_ok = not slow or size == 512 or opts.include_slow
    big_e_why = (
        f"{patches} encoder passes at E = 1024 with a ViT-B- or hiera-tiny-sized model (ViT-B about 12 s each on a "
        "2-core CPU): pass --include-slow to run it"
    )
    fast_step = ("fast path: batched (CPU: the backend's preferred batch), fused attention, fp32" if fused else
                 "fast path: batched (CPU: the backend's preferred batch), SAM 2's own attention, fp32")
    for backend in backends:
        for mode in opts.modes:
            e_row = FAITHFUL_ENCODER_SIZE if mode == "faithful" else e_model
            if e_row >= FAITHFUL_ENCODER_SIZE and not big_e_ok:
                skip(f"{backend} {mode}", big_e_why)
                continue
            if backend != "torch" and slow and not opts.include_slow:
                skip(f"{backend} {mode}", "ONNX export of a ViT-B- or hiera-tiny-sized model takes minutes: pass "
                     "--include-slow")
                continue
            rows.append(Variant(mode, model, size, backend, mode, fused_attention=(mode == "fast" and fused),
                                max_batch=1 if mode == "faithful" else 16,
                                step="reference pipeline: E = 1024, one patch per forward" if mode == "faithful"
                                else fast_step))
        if backend != "torch":
            continue
        native = opts.native_encoder
        if native is not None and "fast" in opts.modes and native != e_model:
            rows.append(Variant(f"native E={native}", model, size, backend, "fast", fused_attention=fused,
                                encoder_size=int(native),
                                step=f"encoder run at the patch's own {native} (position embeddings resized); "
                                "a different model until trained at that size"))
        if opts.ablation and "fast" in opts.modes and (e_model < FAITHFUL_ENCODER_SIZE or big_e_ok):
            rows.append(Variant("fast, 1 patch/forward", model, size, backend, "fast", fused_attention=fused,
                                max_batch=1, step="fast path without batching"))
            rows.append(Variant("fast, 16 patches/forward", model, size, backend, "fast", fused_attention=fused,
                                cpu_batching=False,
                                step="fast path with the full batch of 16 even on a CPU"))
            if not fused:
                skip("fast, stock attention", "SAM 2 runs its own (Hiera) attention in every row: there is no "
                     "fused variant to remove")
            elif e_model < FAITHFUL_ENCODER_SIZE:
                rows.append(Variant("fast, stock attention", model, size, backend, "fast", fused_attention=False,
                                    step="fast path without the fused attention"))
            else:
                skip("fast, stock attention", "transformers' stock attention on a batch of E = 1024 patches "
                     "materialises the relative-position bias twice, 805 MB per patch and global layer (GBs for "
                     "a batch); the fused-attention step shows as faithful vs 'fast, 1 patch/forward' instead")
            low = "fp16" if device == "cuda" else "bf16"
            rows.append(Variant(f"fast {low}", model, size, backend, "fast", fused_attention=fused, precision=low,
                                step=f"fast path with {low} autocast (changes logits beyond float noise)"))
        elif opts.ablation and "fast" in opts.modes:
            skip("fast ablation rows", big_e_why)
    return rows, skipped


class _Recording(Backend):
    """Delegates to a backend; keeps the logits of the calls made while ``on``."""

    def __init__(self, inner: Backend):
        self.inner = inner
        self.name = inner.name
        self.device = inner.device
        self.input_size = inner.input_size
        self.low_res_size = inner.low_res_size
        self.has_presence = inner.has_presence
        self.on = False
        self.kept: List[np.ndarray] = []

    def infer(self, batch: np.ndarray) -> np.ndarray:
        return self.infer_scored(batch)[0]

    def infer_scored(self, batch: np.ndarray):
        out, scores = self.inner.infer_scored(batch)
        if self.on:
            self.kept.append(out)
        return out, scores

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
    cfg = DetectorConfig(size=variant.size, mode=variant.mode, max_batch=variant.max_batch, cascade=0,  # full tiling
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


def summarise(timings: Sequence[Dict[str, float]], patches: int) -> Dict[str, Any]:
    """Latency statistics of one row from its per-frame ``Result.timings``."""
    totals = [t["total"] for t in timings]
    median = statistics.median(totals)
    sums = {k: sum(t[k] for t in timings) for k in ("pre", "model", "post", "total")}
    return {
        "frames": len(totals),
        "latency_s": {
            "median": median,
            "p95": percentile(totals, 95),
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


class _GroupRunner:
    """Runs single frames of one group's rows and keeps what a row needs: patches, the
    first measured frame's outputs (for the comparison), GPU peaks."""

    def __init__(self, detectors: Dict[str, Detector], sampler: _RssSampler):
        self.detectors = detectors
        self.sampler = sampler
        self.cuda = any(str(d.backend.device).startswith("cuda") for d in detectors.values())
        self.patches: Dict[str, int] = {}
        self.first: Dict[str, Dict[str, Any]] = {}
        self.gpu_peak: Dict[str, int] = {}

    def one(self, key: str, frame: np.ndarray, keep: bool = False) -> Dict[str, float]:
        """Run row ``key`` on one frame; its timings plus process CPU seconds. ``keep``:
        remember its probability, mask and raw logits (the group's first measured frame)."""
        import torch

        det = self.detectors[key]
        rec = det.backend if isinstance(det.backend, _Recording) else None
        if rec is not None:
            rec.on, rec.kept = keep, []
        if self.cuda:
            torch.cuda.reset_peak_memory_stats()
        self.sampler.active = key
        cpu0 = time.process_time()
        res = det.detect(frame)
        cpu = time.process_time() - cpu0
        self.sampler.active = None
        if self.cuda:
            self.gpu_peak[key] = max(self.gpu_peak.get(key, 0), int(torch.cuda.max_memory_allocated()))
        self.patches[key] = res.patches
        if keep:
            logits = np.concatenate(rec.kept) if rec is not None and rec.kept else np.zeros((0,))
            self.first[key] = {"prob": res.probability.copy(), "mask": res.mask.copy(), "logits": logits}
            if rec is not None:
                rec.on, rec.kept = False, []
        return dict(res.timings, cpu=cpu)


def measure_group(
    variants: Sequence[Variant],
    detectors: Dict[str, Detector],
    frames: Sequence[np.ndarray],
    opts: Options,
    sampler: _RssSampler,
    progress: bool = False,
) -> Tuple[Dict[str, Dict[str, Any]], Dict[str, Any]]:
    """Run the rows of one group interleaved; return (per-row results, group notes)."""
    runner = _GroupRunner(detectors, sampler)
    keys = [v.key for v in variants]
    label = f"{variants[0].model} S={variants[0].size}"
    row_time, round_time, rounds = _warm_up(runner, keys, frames, int(opts.warmup), label, progress)
    # A cheap row measured right after a heavy one pays for the caches and the
    # allocator the heavy row left behind. Rows up to REWARM_SECONDS per frame get one
    # unmeasured frame just before each measured one (the steady state of a stream,
    # where the node runs one detector back to back); the order rotates every round.
    rewarm = {k for k in keys if row_time.get(k, float("inf")) <= REWARM_SECONDS}
    notes: Dict[str, Any] = {"rewarmed_rows": sorted(rewarm)}
    n = int(opts.frames)
    if round_time > 0 and round_time * n > opts.budget:
        n = max(1, int(opts.budget // round_time))
        notes["frames_cut"] = f"{opts.frames} -> {n} frames to fit the {opts.budget:.0f} s budget of this group"
    notes["warmup_rounds"] = rounds
    notes["frames"] = n
    rss_before = {key: sampler.rss() for key in keys}
    samples = _measured_rounds(runner, keys, frames, n, rewarm, label, progress)
    results = {v.key: _row(v, runner, samples[v.key], rss_before[v.key]) for v in variants}
    _compare_with_reference(variants, runner, results)
    return results, notes


def _warm_up(runner: _GroupRunner, keys: List[str], frames: Sequence[np.ndarray], rounds: int, label: str,
             progress: bool) -> Tuple[Dict[str, float], float, int]:
    """Warm-up rounds over every row (the first slow round ends them); returns (each
    row's last frame time, the last round's time, rounds run)."""
    from tqdm import tqdm

    row_time: Dict[str, float] = {}
    round_time, done = 0.0, 0
    for r in range(rounds):
        t0 = time.perf_counter()
        for key in tqdm(keys, desc=f"{label} warm-up {r + 1}", leave=False, disable=not progress):
            row_time[key] = runner.one(key, frames[r % len(frames)])["total"]
        round_time = time.perf_counter() - t0
        done += 1
        if round_time > SLOW_ROUND_SECONDS:
            break
    return row_time, round_time, done


def _measured_rounds(runner: _GroupRunner, keys: List[str], frames: Sequence[np.ndarray], n: int, rewarm: set,
                     label: str, progress: bool) -> Dict[str, List[Dict[str, float]]]:
    """``n`` rounds over every row in a rotating order; each row's per-frame timings."""
    from tqdm import tqdm

    samples: Dict[str, List[Dict[str, float]]] = {k: [] for k in keys}
    for r in tqdm(range(n), desc=f"{label} ({len(keys)} rows)", leave=False, disable=not progress):
        for key in keys[r % len(keys):] + keys[:r % len(keys)]:
            frame = frames[r % len(frames)]
            if key in rewarm:
                runner.one(key, frame)
            samples[key].append(runner.one(key, frame, keep=(r == 0)))
    return samples


def _row(v: Variant, runner: _GroupRunner, samples: List[Dict[str, float]], rss_before: int) -> Dict[str, Any]:
    """One row of the report: the variant, its backend, latency statistics and memory."""
    det = runner.detectors[v.key]
    row: Dict[str, Any] = dict(asdict(v))
    row.update({
        "key": v.key,
        "backend_description": det.backend.describe(),
        "device": str(det.backend.device),
        "encoder_input": int(det.backend.input_size),
        "batch": int(det.batch),
        "patches": runner.patches[v.key],
    })
    row.update(summarise(samples, runner.patches[v.key]))
    peak = runner.sampler.peaks.get(v.key, rss_before)
    row["rss_before_mb"] = rss_before / 2**20
    row["rss_peak_mb"] = peak / 2**20
    row["rss_delta_mb"] = max(0, peak - rss_before) / 2**20
    row["gpu_peak_mb"] = runner.gpu_peak[v.key] / 2**20 if v.key in runner.gpu_peak else None
    row["same_function_as_faithful"] = bool(row["encoder_input"] == FAITHFUL_ENCODER_SIZE and v.precision == "fp32")
    return row


def _compare_with_reference(variants: Sequence[Variant], runner: _GroupRunner,
                            results: Dict[str, Dict[str, Any]]) -> None:
    """Each row against the group's torch faithful row (else the first): output
    agreement, and the speed-up when the reference is faithful."""
    ref_key = next((v.key for v in variants if v.mode == "faithful" and v.backend == "torch"), variants[0].key)
    for key, row in results.items():
        row["reference"] = ref_key
        row["vs_reference"] = _compare(runner.first[ref_key], runner.first[key]) if key != ref_key else None
    if results[ref_key]["mode"] == "faithful":
        base = results[ref_key]["latency_s"]["median"]
        for row in results.values():
            row["speedup_vs_faithful"] = base / row["latency_s"]["median"]
