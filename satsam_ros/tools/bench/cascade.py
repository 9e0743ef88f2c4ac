"""Coarse to fine in the benchmark (issue 22): S = 512, full tiling and the cascade at
each larger S, measured interleaved on the same frames in one run.

Rows: ``512`` (the coarse size's own detector), and for every larger S ``S full``
(cascade off: the reference's full tiling) and ``S cascade`` (the cascade as
``--cascade`` says; ``auto`` falls back to 512 first where the checkpoint has none for
S, and the row says so). Every row is a Detector opened by
:func:`satsam_ros.runtime.open_detector` on the same backend, so it is what the node
runs. Frames: the test split of each ``--cascade-data`` COCO dataset (e.g. style a and
style b of ``satsam-train synth``), else synthetic 512 x 641 frames, half of them empty.
Frame by frame, every row runs the frame (rotating order), so load changes hit all rows
alike.

Per row and dataset: accuracy, false alarms, mean IoU and the error budget's counts
(:mod:`satsam_ros.core.metrics`, the one metric), median / p95 seconds over all frames,
over the frames with a satellite and over the empty ones, the pre + post share of the
frame time, patches run per frame and the share of frames the cascade stopped at the
coarse pass. The targets of the issue are judged per S and dataset.
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from ...core.detector import DEFAULT_COARSE_SIZE, parse_cascade
from ...core.stats import percentile

COST_RATIO_GOAL = 2.0  # cascade median seconds per frame <= this x S = 512's
EMPTY_RATIO_GOAL = 1.2  # cascade median seconds on an empty frame <= this x S = 512's
SHARE_GOAL = 0.10  # pre + post < this share of the frame time, every row


def synthetic_set(count: int, seed: int) -> Tuple[str, List[Tuple[Any, np.ndarray, Optional[np.ndarray]]]]:
    """("synthetic", [(id, frame, truth)]): ``count`` 512 x 641 frames of
    :mod:`satsam_ros.core.synthetic`, every second one empty."""
    from ...core.synthetic import synthetic_frame

    out = []
    for i in range(int(count)):
        frame, truth = synthetic_frame(seed + i, with_satellite=i % 2 == 0)
        out.append((i, frame, truth if truth.any() else None))
    return "synthetic", out


def dataset_set(path, split: str = "test", limit: Optional[int] = None):
    """(name, [(id, frame, truth or None)]) of a COCO dataset's split (the first ``limit``)."""
    from ...dataset import load_split

    frames = load_split(path, split)[: limit or None]
    if not frames:
        raise ValueError(f"{path}: split {split!r} has no frames")
    out = []
    for f in frames:
        truth = f.mask()
        out.append((f.id, f.image(), truth if truth is not None and truth.any() else None))
    return Path(path).name, out


def open_rows(model: str, sizes: Sequence[int], backend: str, device: str, cascade: str = "auto",
              margin: Optional[int] = None, max_patches: Optional[int] = None) -> List[Dict[str, Any]]:
    """The rows (name, size, Detector, note): 512, then per larger S full and cascade."""
    from ...runtime import open_detector

    rows = [{"name": "512", "size": 512, "detector": open_detector(model, backend=backend, device=device,
                                                                     size=512, cascade=0), "note": ""}]
    wanted = parse_cascade(cascade)
    for size in sorted(s for s in sizes if int(s) > 512):
        full = open_detector(model, backend=backend, device=device, size=size, cascade=0)
        cas = open_detector(model, backend=backend, device=device, size=size, cascade=wanted, cascade_margin=margin,
                            cascade_max_patches=max_patches)
        note = ""
        if not cas.cascade_size:
            note = f"the checkpoint has no cascade for S = {size} ({cascade}): {DEFAULT_COARSE_SIZE} first"
            cas = open_detector(model, backend=backend, device=device, size=size, cascade=DEFAULT_COARSE_SIZE,
                                cascade_margin=margin, cascade_max_patches=max_patches)
        rows.append({"name": f"{size} full", "size": size, "detector": full, "note": ""})
        rows.append({"name": f"{size} cascade", "size": size, "detector": cas, "note": note})
    return rows


def bench_cascade(model: str, sizes: Sequence[int], backend: str = "auto", device: str = "auto",
                  cascade: str = "auto", margin: Optional[int] = None, max_patches: Optional[int] = None,
                  data: Sequence[str] = (),
                  split: str = "test", limit: Optional[int] = None, synthetic_frames: int = 8, seed: int = 0,
                  warmup: int = 1, progress: bool = False) -> Dict[str, Any]:
    """The ``cascade`` section of the report (see the module docstring)."""
    from tqdm import tqdm

    from ...core.metrics import MaskGrid, MetricAccumulator

    sets = [dataset_set(d, split, limit) for d in data] if data else [synthetic_set(synthetic_frames, 300 + seed)]
    rows = open_rows(model, sizes, backend, device, cascade, margin, max_patches)
    for row in rows:  # warm-up: lazy initialisation is no runtime
        for _ in range(max(0, int(warmup))):
            row["detector"].detect(sets[0][1][0][1])
    records: Dict[Tuple[str, str], Dict[str, Any]] = {}
    for name, _ in sets:
        for row in rows:
            records[(row["name"], name)] = {"acc": MetricAccumulator(grid=MaskGrid.of_detector(row["detector"])),
                                            "frames": []}
    total = sum(len(f) for _, f in sets)
    bar = tqdm(total=total * len(rows), desc="cascade", leave=False, disable=not progress)
    k = 0
    for name, frames in sets:
        for frame_id, frame, truth in frames:
            order = rows[k % len(rows):] + rows[:k % len(rows)]
            k += 1
            for row in order:
                res = row["detector"].detect(frame)
                rec = records[(row["name"], name)]
                rec["acc"].add(res.mask, truth, seconds=res.timings["total"], frame_id=frame_id,
                               probability=res.probability, threshold=res.threshold)
                rec["frames"].append((dict(res.timings), res.patches_run, res.cascade, truth is None))
                bar.update(1)
    bar.close()
    out_rows = []
    for name, _ in sets:
        for row in rows:
            out_rows.append(_row(row, name, records[(row["name"], name)]))
    section = {"model": model, "backend": rows[0]["detector"].backend.describe(), "sizes": sorted(set(sizes)),
               "cascade": cascade, "margin": margin, "max_patches": max_patches, "datasets": [n for n, _ in sets],
               "data": [str(Path(d).resolve()) for d in data], "split": split if data else None,
               "rows": out_rows, "measured": time.strftime("%Y-%m-%d %H:%M:%S %Z")}
    section["targets"] = cascade_targets(section)
    return section


def _row(row: Dict[str, Any], dataset: str, rec: Dict[str, Any]) -> Dict[str, Any]:
    det = row["detector"]
    summary = rec["acc"].summary()
    frames = rec["frames"]
    totals = [t["total"] for t, _, _, _ in frames]
    sat = [t["total"] for t, _, _, empty in frames if not empty]
    empty = [t["total"] for t, _, _, e in frames if e]
    stopped = [t["total"] for t, _, c, _ in frames if c == "stopped"]
    outside = sum(t["pre"] + t["post"] for t, _, _, _ in frames)
    cascaded = [c for _, _, c, _ in frames if c is not None]
    return {
        "dataset": dataset, "row": row["name"], "size": row["size"], "note": row["note"],
        "cascade": det.describe_cascade(), "cascade_size": det.cascade_size, "cascade_margin": det.cascade_margin,
        "cascade_max_patches": det.cascade_max_patches,
        "backend": det.backend.name, "frames": len(frames),
        "accuracy": summary["accuracy"], "false_alarm_rate": summary["false_alarm_rate"],
        "false_alarms": summary["false_alarms"], "empty_frames": summary["empty_frames"],
        "mean_iou": summary["mean_iou"], "miss_rate": summary["miss_rate"],
        "error_budget": summary["error_budget"]["counts"],
        "median_s": percentile(totals, 50.0), "p95_s": percentile(totals, 95.0),
        "satellite_median_s": percentile(sat, 50.0), "empty_median_s": percentile(empty, 50.0),
        "empty_p95_s": percentile(empty, 95.0), "stopped_median_s": percentile(stopped, 50.0),
        "pre_post_share": outside / sum(totals) if sum(totals) > 0 else None,
        "pre_median_ms": 1e3 * statistics.median(t["pre"] for t, _, _, _ in frames),
        "post_median_ms": 1e3 * statistics.median(t["post"] for t, _, _, _ in frames),
        "patches_mean": statistics.fmean(n for _, n, _, _ in frames),
        "stopped_share": (sum(c == "stopped" for c in cascaded) / len(cascaded)) if cascaded else None,
        "capped_share": (sum(c == "capped" for c in cascaded) / len(cascaded)) if cascaded else None,
    }


def cascade_targets(section: Dict[str, Any]) -> List[Dict[str, Any]]:
    """The issue's targets per S (> 512) and dataset: accuracy at least full tiling's and
    S = 512's, false alarms at most S = 512's, median cost <= 2x and empty frames <= 1.2x
    S = 512's; and pre + post under 10 % in every row."""
    rows = {(r["dataset"], r["row"]): r for r in section["rows"]}
    out: List[Dict[str, Any]] = []

    def add(name: str, goal: str, measured: Optional[float], passed: Optional[bool], detail: str) -> None:
        out.append({"target": name, "goal": goal, "measured": measured, "passed": passed, "detail": detail})

    for dataset in section["datasets"]:
        base = rows[(dataset, "512")]
        for size in [s for s in section["sizes"] if s > 512]:
            full, cas = rows.get((dataset, f"{size} full")), rows.get((dataset, f"{size} cascade"))
            if full is None or cas is None:
                continue
            where = f"S={size} cascade ({cas['cascade']}), {dataset}"
            if cas["accuracy"] is not None:
                ok = cas["accuracy"] >= full["accuracy"] and cas["accuracy"] >= base["accuracy"]
                add(f"accuracy, {where}", ">= full tiling and >= S=512", cas["accuracy"], bool(ok),
                    f"cascade {cas['accuracy']:.3f}, full {full['accuracy']:.3f}, S=512 {base['accuracy']:.3f}")
            if cas["false_alarm_rate"] is not None and base["false_alarm_rate"] is not None:
                add(f"false alarms, {where}", "<= S=512", cas["false_alarm_rate"],
                    bool(cas["false_alarm_rate"] <= base["false_alarm_rate"]),
                    f"cascade {cas['false_alarms']}/{cas['empty_frames']}, full {full['false_alarms']}, S=512 "
                    f"{base['false_alarms']}")
            ratio = cas["median_s"] / base["median_s"] if base["median_s"] else None
            add(f"median cost, {where}", f"<= {COST_RATIO_GOAL:g}x S=512", ratio,
                None if ratio is None else bool(ratio <= COST_RATIO_GOAL),
                f"{cas['median_s']:.3f} s vs {base['median_s']:.3f} s (full tiling {full['median_s']:.3f} s)")
            if cas["empty_median_s"] is not None and base["empty_median_s"]:
                ratio = cas["empty_median_s"] / base["empty_median_s"]
                add(f"empty frame, {where}", f"<= {EMPTY_RATIO_GOAL:g}x S=512", ratio, bool(ratio <= EMPTY_RATIO_GOAL),
                    f"frames without a satellite: {cas['empty_median_s']:.3f} s vs {base['empty_median_s']:.3f} s "
                    "(where S=512 raises a false alarm the cascade runs S patches there too)")
            if cas.get("stopped_median_s") is not None and base["median_s"]:
                ratio = cas["stopped_median_s"] / base["median_s"]
                add(f"empty coarse frame, {where}", f"<= {EMPTY_RATIO_GOAL:g}x S=512", ratio,
                    bool(ratio <= EMPTY_RATIO_GOAL), f"frames the coarse pass found empty (the coarse pass only): "
                    f"{cas['stopped_median_s']:.3f} s vs S=512's {base['median_s']:.3f} s")
    shares = [r for r in section["rows"] if r["pre_post_share"] is not None]
    if shares:
        worst = max(shares, key=lambda r: r["pre_post_share"])
        add("pre + post share, every S, cascade on and off", f"< {100 * SHARE_GOAL:.0f} %",
            100 * worst["pre_post_share"], bool(worst["pre_post_share"] < SHARE_GOAL),
            "; ".join(f"{r['row']} ({r['dataset']}): {100 * r['pre_post_share']:.1f} %" for r in shares))
    return out


CASCADE_HEAD = ["dataset", "row", "cascade", "frames", "accuracy", "false alarms", "mean IoU", "median s", "p95 s",
                "empty median s", "stopped median s", "pre+post %", "patches/frame", "stopped %"]


def cascade_rows(section: Dict[str, Any]) -> List[List[str]]:
    """The section as table rows (plain strings)."""
    def f(v, spec=".3f"):
        return "-" if v is None else format(v, spec)

    out = []
    for r in section["rows"]:
        fa = "-" if r["false_alarm_rate"] is None else f"{r['false_alarms']}/{r['empty_frames']}"
        out.append([r["dataset"], r["row"], r["cascade"], str(r["frames"]), f(r["accuracy"]), fa, f(r["mean_iou"]),
                    f(r["median_s"]), f(r["p95_s"]), f(r["empty_median_s"]), f(r.get("stopped_median_s")),
                    f(None if r["pre_post_share"] is None else 100 * r["pre_post_share"], ".1f"),
                    f(r["patches_mean"], ".1f"),
                    f(None if r["stopped_share"] is None else 100 * r["stopped_share"], ".0f")])
    return out
