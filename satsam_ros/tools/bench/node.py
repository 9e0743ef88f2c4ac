"""The live-node benchmark (``satsam bench --node`` and the ``node`` section of ``satsam bench``).

The installed ``detect_node`` runs as a real process; synthetic 512 x 641 mono8 frames
are published to it over loopback DDS at fixed input rates, and every output is
matched to its input by header stamp (this is :func:`satsam_ros.tools.bag.evaluate.run_bag_eval` on
a generated bag, so the figures mean exactly what ``satsam bag eval`` reports).

Per input rate it records frames sent / answered / dropped, the output rate, and the
end-to-end latency (arrival of ``/satsam/detections_json`` minus the publish time)
percentiles. ``step`` sends the next frame as soon as the previous one is answered
(lock-step), which measures the highest rate the node sustains without dropping
frames (a flood of a finite bag would not: the node keeps only the newest waiting
frame and drops the rest within milliseconds).

The **baseline**, measured in the same run on the same frames, is the in-process
``Detector`` with the same model, size and backend: ``node p50 / detector p50`` is
what the ROS transport, the image conversion and the message publishing add.

"Sustains R frames/s" is read as: at an input of R frames/s, every frame is answered
(no drop) and the output rate is R within 5 % (the first and last frames set the span,
so a short run reads a little under R even when the node keeps up).
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np

NODE_TARGET_FPS = 10.0
NODE_TARGET_P95_MS = 200.0
#: per S: (frames/s the node must sustain, p95 latency ms): issue 8's at 512, issue 22's at 2048 (and 1024)
NODE_TARGETS = {512: (NODE_TARGET_FPS, NODE_TARGET_P95_MS), 1024: (5.0, 400.0), 2048: (5.0, 400.0)}
RATE_TOLERANCE = 0.05  # the output rate may read this much under the input rate and still "sustain" it
#: issue 21: the shipped model's lock-step capacity over today's, in the same run, so that a
#: host slower than the developers' (7.3 against 15.5 frames/s with the old model) keeps the target
NODE_CAPACITY_RATIO = 1.5


def parse_rates(values: Sequence[Union[str, float]]) -> List[Union[float, str]]:
    """Input rates in frames/s (positive numbers) or ``step``; ValueError naming a bad one."""
    out: List[Union[float, str]] = []
    for v in values:
        if isinstance(v, str) and v.strip().lower() == "step":
            out.append("step")
            continue
        try:
            rate = float(v)
        except (TypeError, ValueError):
            raise ValueError(f"node rate must be a positive number of frames/s or 'step'; got {v!r}") from None
        if not (rate > 0 and np.isfinite(rate)):
            raise ValueError(f"node rate must be a positive number of frames/s or 'step'; got {v!r}")
        out.append(rate)
    if not out:
        raise ValueError("node rates: give at least one rate")
    return out


@dataclass
class NodeBenchOptions:
    """Settings of :func:`bench_node`. ``model`` None: the shipped model (``builtin``, else ``tiny``)."""

    rates: Sequence[Union[float, str]] = (10.0, 20.0, "step")
    frames: int = 100  # frames per rate
    size: int = 512
    model: Optional[str] = None
    backend: Optional[str] = None
    device: Optional[str] = None
    seed: int = 1000
    warmup: int = 3
    baseline_frames: int = 20
    startup_timeout: float = 180.0
    node_params: Dict[str, str] = field(default_factory=dict)
    cascade: Optional[str] = None  # the node's `cascade` parameter (None: its default, auto)
    cascade_max_patches: Optional[int] = None  # the node's `cascade_max_patches` (None: its default, the checkpoint's)
    reference: Optional[str] = None  # a second model run lock-step right after each lock-step run of ``model``

    def validate(self) -> NodeBenchOptions:
        from ...core.tiling import check_size

        self.rates = parse_rates(self.rates)
        check_size(self.size)
        if int(self.frames) < 2:
            raise ValueError(f"node frames must be >= 2 per rate; got {self.frames}")
        if int(self.baseline_frames) < 1:
            raise ValueError(f"baseline frames must be >= 1; got {self.baseline_frames}")
        if int(self.warmup) < 0:
            raise ValueError(f"node warm-up must be >= 0 frames; got {self.warmup}")
        if self.cascade_max_patches is not None and int(self.cascade_max_patches) < 0:
            raise ValueError(f"cascade max patches must be >= 0 (0 = no cap); got {self.cascade_max_patches}")
        if self.reference and "step" not in self.rates:
            raise ValueError(f"node reference model {self.reference!r}: its capacity is the lock-step rate; "
                             "add 'step' to the node rates")
        return self


def rate_name(rate: Union[float, str]) -> str:
    return "step" if rate == "step" else f"{float(rate):g}hz"


def detector_baseline(model: str, size: int, backend: Optional[str], device: Optional[str], frames: int,
                      seed: int, cascade: Optional[str] = None,
                      cascade_max_patches: Optional[int] = None) -> Dict[str, Any]:
    """In-process Detector latency on the benchmark's frames (same model, size, backend, cascade)."""
    from ...core.detector import parse_cascade
    from ...core.stats import summary_ms
    from ...core.synthetic import synthetic_frame
    from ...runtime import DEFAULT_BACKEND, DEFAULT_DEVICE, open_detector

    det = open_detector(model, backend=backend or DEFAULT_BACKEND, device=device or DEFAULT_DEVICE, size=size,
                        cascade=parse_cascade(cascade), cascade_max_patches=cascade_max_patches)
    images = [synthetic_frame(seed + i)[0] for i in range(int(frames))]
    det.detect(images[0])  # warm-up
    det.detect(images[-1])
    totals, pre, post = [], 0.0, 0.0
    for image in images:
        res = det.detect(image)
        totals.append(res.timings["total"])
        pre += res.timings.get("pre", 0.0)
        post += res.timings.get("post", 0.0)
    ms = summary_ms(totals)
    return {"frames": len(images), "backend": det.backend.describe(), "cascade": det.describe_cascade(),
            "p50_ms": ms["p50"],
            "p95_ms": ms["p95"], "mean_ms": ms["mean"],
            "pre_post_share": (pre + post) / float(sum(totals)) if sum(totals) > 0 else None}


def _run_summary(rate: Union[float, str], summary: Dict[str, Any]) -> Dict[str, Any]:
    lat = summary["latency_ms"]
    sent, answered = summary["frames_sent"], summary["frames_answered"]
    row = {
        "rate": rate,
        "input_fps": summary.get("send_rate_hz"),
        "frames_sent": sent,
        "frames_answered": answered,
        "frames_dropped": summary["frames_dropped"],
        "output_fps": summary.get("throughput_fps"),
        "latency_ms": lat,
        "accuracy": summary.get("accuracy"),
        "dropped_breakdown": summary.get("dropped_breakdown"),
    }
    inp = row["input_fps"]
    row["sustained"] = bool(
        rate != "step" and sent > 0 and answered == sent and inp is not None and row["output_fps"] is not None
        and row["output_fps"] >= (1.0 - RATE_TOLERANCE) * inp)
    return row


def bench_node(opts: NodeBenchOptions, work: Path, progress: bool = False,
               log: Optional[Callable[[str], None]] = None) -> Dict[str, Any]:
    """Run the live node at each input rate of ``opts``; return the ``node`` report section.

    Bags go to ``work/bags`` (cached: the same frames, count and rate are reused), the
    per-rate ``satsam bag eval`` reports to ``work/<rate>``. Raises BagError when the
    node cannot be found or started (the message says what to build or pass).
    """
    from ...model import shipped_model
    from ..bag.evaluate import run_bag_eval
    from ..bag.launch import find_node_executable
    from ..bag.make import make_synthetic_bag

    opts.validate()
    say = log or (lambda _text: None)
    exe = find_node_executable(None)
    model = opts.model or shipped_model()[0]
    work = Path(work)
    started = time.time()
    say(f"node bench: in-process baseline ({model}, S={opts.size}, {opts.baseline_frames} frames)")
    baseline = detector_baseline(model, opts.size, opts.backend, opts.device, opts.baseline_frames, opts.seed,
                                 opts.cascade, opts.cascade_max_patches)
    node_params = dict(opts.node_params)
    if opts.cascade_max_patches is not None:
        node_params["cascade_max_patches"] = str(int(opts.cascade_max_patches))
    runs: List[Dict[str, Any]] = []
    reference_runs: List[Dict[str, Any]] = []
    for rate in opts.rates:
        bag_rate = 10.0 if rate == "step" else float(rate)  # lock-step ignores the recorded timing
        bag = work / "bags" / f"synthetic-{opts.frames}-seed{opts.seed}-{bag_rate:g}hz"
        if not (bag / "metadata.yaml").is_file():
            import shutil

            shutil.rmtree(bag, ignore_errors=True)
            make_synthetic_bag(bag, count=int(opts.frames), seed=int(opts.seed), rate=bag_rate)
        say(f"node bench: {opts.frames} frames at {rate_name(rate)} through {exe}")
        summary = run_bag_eval(bag, work / rate_name(rate), model=model, size=opts.size, backend=opts.backend,
                               device=opts.device, rate=1.0 if rate != "step" else "step", warmup=int(opts.warmup),
                               startup_timeout=opts.startup_timeout, node_params=dict(node_params),
                               cascade=opts.cascade,
                               node_exe=str(exe), progress=progress, examples=0)
        runs.append(_run_summary(rate, summary))
        if rate == "step" and opts.reference:  # right after, on the same bag: the capacity ratio
            say(f"node bench: reference {opts.reference}, {opts.frames} frames lock-step through {exe}")
            summary = run_bag_eval(bag, work / f"reference-{rate_name(rate)}", model=opts.reference, size=opts.size,
                                   backend=opts.backend, device=opts.device, rate="step", warmup=int(opts.warmup),
                                   startup_timeout=opts.startup_timeout, node_params=dict(node_params),
                                   cascade=opts.cascade, node_exe=str(exe), progress=progress, examples=0)
            reference_runs.append(_run_summary(rate, summary))
    report = {
        "options": {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(opts).items()},
        "model": model,
        "node_exe": str(exe),
        "frame": "512 x 641 mono8 (satsam_ros.synthetic)",
        "size": int(opts.size),
        "baseline": baseline,
        "runs": runs,
        "duration_s": time.time() - started,
    }
    report["target"] = node_target(report)
    if opts.reference:
        report["reference"] = {"model": opts.reference, "runs": reference_runs}
        report["capacity_target"] = capacity_target(report)
    return report


def capacity_target(node: Dict[str, Any]) -> Dict[str, Any]:
    """Lock-step capacity of the node's model over the reference model's, measured in the
    same run on the same bag (NODE_CAPACITY_RATIO)."""
    mine = next((r["output_fps"] for r in node["runs"] if r["rate"] == "step"), None)
    ref = next((r["output_fps"] for r in node["reference"]["runs"] if r["rate"] == "step"), None)
    goal = f">= {NODE_CAPACITY_RATIO:g}x {node['reference']['model']}'s"
    if not mine or not ref:
        return {"passed": None, "measured": None, "goal": goal, "detail": "a lock-step run answered no frame"}
    ratio = mine / ref
    return {"passed": bool(ratio >= NODE_CAPACITY_RATIO), "measured": ratio, "goal": goal,
            "detail": f"lock-step {mine:.1f} fps ({node['model']}) vs {ref:.1f} fps ({node['reference']['model']})"}


def node_goal(size: int) -> Tuple[float, float]:
    """(frames/s, p95 ms) the live node must meet at frame size ``size`` (NODE_TARGETS)."""
    return NODE_TARGETS.get(int(size), (NODE_TARGET_FPS, NODE_TARGET_P95_MS))


def node_target(node: Dict[str, Any]) -> Dict[str, Any]:
    """The live-node target from a ``node`` section (:func:`node_goal` of its size: at
    512 issue 8's >= 10 frames/s sustained with p95 end-to-end latency <= 200 ms; at 2048
    issue 22's 5 frames/s and 400 ms). Passes when some run at an input rate >= the goal
    was sustained (every frame answered, output rate within 5 % of the input) with that
    p95. ``goal``: the (fps, p95 ms) judged."""
    fps_goal, p95_goal = node_goal(node.get("size", 512))
    good = [r for r in node["runs"] if r["rate"] != "step" and float(r["rate"]) >= fps_goal]
    best = None
    for r in good:
        p95 = r["latency_ms"]["p95"]
        ok = r["sustained"] and p95 is not None and p95 <= p95_goal
        if best is None or (ok and not best[1]) or (ok == best[1] and float(r["rate"]) > float(best[0]["rate"])):
            best = (r, ok)
    step = next((r for r in node["runs"] if r["rate"] == "step"), None)
    capacity = step["output_fps"] if step else None
    if best is None:
        return {"passed": None, "measured": capacity, "goal": [fps_goal, p95_goal],
                "detail": f"no run at an input rate >= {fps_goal:g} frames/s"}
    r, ok = best
    detail = (f"input {r['input_fps']:.1f} fps: {r['frames_answered']}/{r['frames_sent']} answered, output "
              f"{r['output_fps']:.1f} fps, latency p50 {r['latency_ms']['p50']:.0f} / p95 "
              f"{r['latency_ms']['p95']:.0f} / p99 {r['latency_ms']['p99']:.0f} ms")
    if capacity is not None:
        detail += f"; lock-step (capacity): {capacity:.1f} fps"
    return {"passed": bool(ok), "measured": capacity if capacity is not None else r["output_fps"],
            "detail": detail, "rate": r["rate"], "goal": [fps_goal, p95_goal]}
