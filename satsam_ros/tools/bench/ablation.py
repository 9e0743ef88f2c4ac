"""The fast-path ablation: each step of the Detector's fast path taken away on its own.

Pre/post-processing the straightforward way next to the Detector's vectorised one,
``no_grad`` next to ``inference_mode``, and thread / OpenMP wait-policy settings, each
in a child process (the OpenMP wait policy is fixed when torch loads).
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Any, Dict, List, Optional, Sequence, Tuple

import cv2
import numpy as np

from ...core import imaging, postprocess, tiling
from ...core.backend import Backend
from ...core.detector import Detector, DetectorConfig
from ...core.preprocess import resize_patches
from ...core.stats import percentile
from ...runtime import open_detector
from .detector import bench_frames


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
    patches = resize_patches(patches, e)
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
                code = ("import sys; from satsam_ros.tools.bench.ablation import _probe_child; "
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
                     "median_ms": 1e3 * statistics.median(vals), "p95_ms": 1e3 * percentile(vals, 95),
                     "frames": len(vals), "threads": settings[probe["name"]]})
    return rows
