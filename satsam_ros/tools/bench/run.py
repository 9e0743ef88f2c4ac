"""One benchmark run (``satsam bench``): every section, the targets, the report dict.

Library only: every function returns plain, JSON-ready dicts; ``satsam bench``
(:mod:`.command`) prints the table and writes JSON and markdown (:mod:`.report`).
Sections: the latency rows (:mod:`.detector`), the fast-path ablation
(:mod:`.ablation`), ROI tracking (:mod:`.roi`), the live node (:mod:`.node`), and the
targets of issue 8, each with the measured ratio and pass / fail.

Random weights are fine for speed (``vit-b`` is the ViT-B architecture), but not for
accuracy: accuracy figures here are agreement between variants, or use a transparent
stand-in (see :mod:`.roi`).
"""

from __future__ import annotations

import os
import platform
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

import cv2

from ...core.detector import Detector
from ...model import shipped_model
from ...runtime import open_detector
from .ablation import bench_grad_modes, bench_prepost, bench_threads
from .detector import (
    Variant,
    _Models,
    _Recording,
    _RssSampler,
    bench_frames,
    build_detector,
    measure_group,
    plan_variants,
)
from .node import node_goal
from .options import FORMAT, Options
from .roi import bench_roi

# Encoder inputs at 1024 of a ViT-B-sized model cost about 12 s per patch on a 2-core
# CPU, so such rows run only at S = 512 unless asked (16 / 64 patches at 1024 / 2048).
SLOW_HIDDEN_SIZE = 512
SLOW_ROUND_SECONDS = 30.0  # a warm-up round longer than this ends the warm-up
REWARM_SECONDS = 3.0  # rows faster than this get an unmeasured frame before each measured one


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
        "ort_spinning": os.environ.get("SATSAM_ORT_SPINNING"),  # unset: ONNX Runtime's default (spinning)
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


def _row(report: Dict[str, Any], model: str, size: int, name: str, backend: str = "torch") -> Optional[Dict]:
    return report["rows"].get(f"{model}/{size}/{backend}/{name}")


def model_ratios(report: Dict[str, Any], reference: Optional[str]) -> List[Dict[str, Any]]:
    """Each model's rows against the reference model's row of the same size, backend and
    name (e.g. sam2-hiera-tiny's fast row at S = 1024 against ViT-B's), measured in this
    run: both medians and ``speedup`` = reference median / model median (> 1: faster than
    the reference). The model's row gets ``speedup_vs_<reference>`` too."""
    out: List[Dict[str, Any]] = []
    if not reference:
        return out
    for row in report["rows"].values():
        if row["model"] == reference:
            continue
        ref = _row(report, reference, row["size"], row["name"], row["backend"])
        if ref is None:
            continue
        a, b = ref["latency_s"]["median"], row["latency_s"]["median"]
        speedup = a / b if b > 0 else None
        row[f"speedup_vs_{reference}"] = speedup
        out.append({"model": row["model"], "reference": reference, "size": row["size"], "backend": row["backend"],
                    "row": row["name"], "encoder_input": row.get("encoder_input"), "model_s": b, "reference_s": a,
                    "speedup": speedup, "frames": [row.get("frames"), ref.get("frames")]})
    return out


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
    ship = any(_row(report, shipped, 512, "fast", b) for b in report.get("backends", ["torch"]))
    if ship:
        # every backend's fast row: the node runs whichever `auto` picks (ONNX Runtime on a CPU)
        rows = [(b, _row(report, shipped, 512, "fast", b)) for b in report.get("backends", ["torch"])]
        per_backend = [(b, r) for b, r in rows if r]
        shares = [(b, 100 * ((r["share"]["pre"] or 0.0) + (r["share"]["post"] or 0.0)), r) for b, r in per_backend]
        worst = max(shares, key=lambda x: x[1])
        others = []
        for s in (1024, 2048):
            for b, r in ((b, _row(report, shipped, s, "fast", b)) for b in report.get("backends", ["torch"])):
                if r:
                    others.append(f"S={s} {b}: {100 * ((r['share']['pre'] or 0) + (r['share']['post'] or 0)):.1f} %")
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
    size = int((node or {}).get("size", report["options"].get("node_size", 512)))
    fps, p95 = node_goal(size)
    goal = f">= {fps:g} fps, p95 <= {p95:g} ms"
    name = f"live node: {goal.replace('fps', 'frames/s sustained')} (S={size}, 512 x 641, shipped model {shipped})"
    if node:
        t = node["target"]
        add(name, goal, t["measured"], t["passed"], t["detail"])
    else:
        why = next((s["reason"] for s in report.get("skipped", []) if s["row"] == "live node"),
                   "not run (--no-node)")
        add(name, goal, None, None, why)
    out += (report.get("cascade") or {}).get("targets", [])
    return out


@dataclass
class _Run:
    """One benchmark run's state, shared by its sections."""

    opts: Options
    device: str
    report: Dict[str, Any]
    old: Dict[str, Any]  # the resumed report ({} when not resuming)
    frames: List[Any]
    models: _Models
    progress: bool
    checkpoint: Optional[Callable[[Dict], None]]
    on_row: Optional[Callable[[Dict], None]]

    @property
    def shipped(self) -> str:
        return self.report["shipped_model"]

    def save(self) -> None:
        if self.checkpoint:
            self.checkpoint(self.report)

    def skip(self, model: str, size: Any, row: str, reason: str) -> None:
        self.report["skipped"].append({"model": model, "size": str(size), "row": row, "reason": reason})


def run_benchmark(opts: Options, progress: bool = False, on_row: Optional[Callable[[Dict], None]] = None,
                  checkpoint: Optional[Callable[[Dict], None]] = None, resume: Optional[Dict[str, Any]] = None,
                  work: Optional[str] = None) -> Dict[str, Any]:
    """Run everything ``opts`` asks for; return the report (a JSON-ready dict).

    ``checkpoint(report)`` is called with the partial report after every group and
    section, so a run that dies (a full run takes an hour on 2 cores) loses little.
    ``work``: directory for the live-node section's bags and reports (default: a
    temporary directory). ``resume``: a (partial) report of an earlier run with the same
    settings; its groups and sections are taken over instead of measured again, and
    marked so (ratios within a group stay fair; comparisons across groups then mix two
    runs).
    """
    from ...runtime import resolve_device

    opts.validate()
    started = time.time()
    device = resolve_device(opts.device)
    run = _Run(opts, device, _new_report(opts, device, started, resume), resume or {},
               bench_frames(4, seed=100 + opts.seed), _Models(device), progress, checkpoint, on_row)
    models_req = [run.shipped if m == "shipped" else m for m in opts.models]
    with _RssSampler() as sampler:
        # size by size, so that the groups of the models compared at one S run back to back
        unloadable = set()
        for size in opts.sizes:
            for model in models_req:
                if model not in unloadable and not _measure_group(run, model, size, sampler):
                    unloadable.add(model)  # the model does not load: no size will
        for model in models_req:
            if opts.ablation and model == run.shipped and model not in unloadable:
                run.report["ablation"]["grad_mode"] = run.old.get("ablation", {}).get("grad_mode") or \
                    bench_grad_modes(open_detector(model, backend="torch", device=device, size=512), run.frames)
            if model != run.shipped:
                run.models.drop(model)
        if opts.ablation:
            _ablation_section(run, "vit-b" in models_req)
        if opts.roi:
            _roi_section(run)
        if opts.cascade_section and any(int(s) > 512 for s in opts.sizes):
            _cascade_section(run)
    run.models = None
    if opts.node:
        run.report["node"] = run.old.get("node") or run_node_section(opts, run.shipped, work, progress,
                                                                     run.report["skipped"])
        run.save()
    run.report["model_ratios"] = model_ratios(run.report, opts.reference_model)
    run.report["targets"] = evaluate_targets(run.report)
    run.report["machine"]["load_average_end"] = list(os.getloadavg()) if hasattr(os, "getloadavg") else None
    run.report["duration_s"] = time.time() - started
    return run.report


def _new_report(opts: Options, device: str, started: float, resume: Optional[Dict[str, Any]]) -> Dict[str, Any]:
    """The report's head (machine, threads, settings) and its empty sections."""
    from ...backends.torch_backend import configure_threads

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    shipped, shipped_note = shipped_model()
    report: Dict[str, Any] = {
        "format": FORMAT,
        "command": opts.command,
        "started": time.strftime("%Y-%m-%d %H:%M:%S %Z", time.localtime(started)),
        "machine": machine_info(),
        "threads": configure_threads(int(opts.threads or cores)),
        "device": device,
        "shipped_model": shipped,
        "shipped_model_note": shipped_note,
        "options": {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(opts).items()},
        "backends": list(opts.backends) if opts.backends else available_backends(device),
        "rows": {},
        "groups": {},
        "skipped": [],
        "ablation": {},
        "roi": [],
        "resumed_from": None,
    }
    if resume:
        report["resumed_from"] = {"started": resume.get("started"), "command": resume.get("command"),
                                  "machine": resume.get("machine")}
    return report


def _measure_group(run: _Run, model: str, size: int, sampler: _RssSampler) -> bool:
    """Measure (or take over from the resumed report) one (model, size) group; False
    when the model cannot be loaded at all."""
    report, group = run.report, f"{model}/{size}"
    if group in run.old.get("groups", {}):
        prefix = group + "/"
        report["rows"].update({k: v for k, v in run.old["rows"].items() if k.startswith(prefix)})
        report["groups"][group] = dict(run.old["groups"][group], resumed=True)
        report["skipped"].extend(x for x in run.old.get("skipped", [])
                                 if x["model"] == model and x["size"] == str(size))
        return True
    try:
        sam, _ = run.models.get(model)
    except (ValueError, FileNotFoundError) as exc:
        run.skip(model, "*", "*", str(exc))
        return False
    variants, skipped = plan_variants(model, sam, size, report["backends"], run.opts, run.device)
    report["skipped"].extend(skipped)
    detectors = _open_detectors(run, variants)
    if not detectors:
        return True
    kept = [v for v in variants if v.key in detectors]
    rows, notes = measure_group(kept, detectors, run.frames, run.opts, sampler, run.progress)
    report["rows"].update(rows)
    report["groups"][group] = notes
    if run.on_row:
        for row in rows.values():
            run.on_row(row)
    run.save()
    return True


def _open_detectors(run: _Run, variants: List[Variant]) -> Dict[str, Detector]:
    """The Detector of each row, its backend wrapped to record logits; a row whose
    detector cannot be opened is skipped with the reason."""
    detectors: Dict[str, Detector] = {}
    for v in variants:
        try:
            det = build_detector(v, run.models, run.device)
        except (ValueError, FileNotFoundError, RuntimeError, ImportError) as exc:
            run.skip(v.model, v.size, f"{v.backend} {v.name}", f"{type(exc).__name__}: {exc}")
            continue
        if not isinstance(det.backend, _Recording):
            det.backend = _Recording(det.backend)
        detectors[v.key] = det
    return detectors


def _ablation_section(run: _Run, with_vit_b: bool) -> None:
    """Pre/post-processing styles and (on the CPU) thread settings."""
    old = run.old.get("ablation", {})
    run.report["ablation"]["prepost"] = old.get("prepost") or bench_prepost(run.opts.sizes, run.frames)
    run.save()
    if run.device != "cpu":
        return
    probes = old.get("threads")
    if not probes:
        probes = bench_threads(run.shipped, 512, frames=max(5, int(run.opts.frames)), warmup=2)
        if with_vit_b and run.opts.native_encoder:
            probes += bench_threads("vit-b", 512, frames=2, warmup=1, passes=1,
                                    encoder_size=int(run.opts.native_encoder))
    run.report["ablation"]["threads"] = probes
    run.save()


def _roi_section(run: _Run) -> None:
    """Full scans against ROI tracking at each of the ROI sizes."""
    from tqdm import tqdm

    done = {r["size"]: r for r in run.old.get("roi", []) if r.get("model") == run.shipped}
    for size in tqdm(run.opts.roi_sizes, desc="ROI tracking", leave=False, disable=not run.progress):
        run.report["roi"].append(done.get(size) or bench_roi(
            run.shipped, size, run.device, frames=int(run.opts.roi_frames), seed=run.opts.seed, models=run.models))
        run.save()


def _cascade_section(run: _Run) -> None:
    """S = 512, full tiling and the cascade at each larger S, interleaved (tools/bench/cascade.py)."""
    from .cascade import bench_cascade

    opts = run.opts
    if run.old.get("cascade"):
        run.report["cascade"] = run.old["cascade"]
        return
    backend = opts.backends[0] if opts.backends else "auto"
    try:
        run.report["cascade"] = bench_cascade(
            run.shipped, opts.sizes, backend=backend, device=run.device, cascade=opts.cascade,
            margin=opts.cascade_margin, max_patches=opts.cascade_max_patches, data=opts.cascade_data,
            split=opts.cascade_split, limit=opts.cascade_limit,
            synthetic_frames=opts.cascade_frames, seed=opts.seed, warmup=max(1, int(opts.warmup)),
            progress=run.progress)
    except (ValueError, FileNotFoundError, RuntimeError, ImportError) as exc:
        run.skip(run.shipped, "*", "cascade", f"{type(exc).__name__}: {exc}")
    run.save()


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
