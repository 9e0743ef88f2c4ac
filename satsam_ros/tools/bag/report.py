"""The report of a bag evaluation: the summary table, report.md, per_frame.csv, figures."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence

import numpy as np

from ...core.imaging import to_uint8_gray
from ...core.metrics import FrameRecord, budget_markdown, pick_examples
from ...core.overlay import draw_outline
from ...figures import plot_error_budget
from .io import format_stamp, read_images
from .replay import Answer, ReplayRun
from .score import iter_truth


def _pct(value: Optional[float]) -> str:
    return "n/a" if value is None else f"{100.0 * value:.1f} %"


def _num(value: Optional[float], fmt: str = ".1f", unit: str = "") -> str:
    return "n/a" if value is None else f"{value:{fmt}}{unit}"


def summary_table(summary: Dict[str, Any]) -> str:
    """The report's summary as a markdown table (what ``satsam bag eval`` prints)."""
    lat = summary["latency_ms"]
    rows = [
        ("Frames sent / answered / dropped",
         f"{summary['frames_sent']} / {summary['frames_answered']} / {summary['frames_dropped']}"),
    ]
    metrics = summary.get("metrics")
    if metrics is not None:
        rows += [
            ("Accuracy (IoU > 0.5)", f"{_pct(summary['accuracy'])} ({metrics['correct']} of {metrics['frames']} "
                                     "scored frames)"),
            ("Mean IoU (frames with a satellite)", _num(summary["mean_iou"], ".3f")),
            ("False alarms on empty frames",
             f"{summary['false_alarms']} of {summary['empty_frames']} ({_pct(summary['false_alarm_rate'])})"),
        ]
    else:
        rows.append(("Accuracy", "n/a (no ground truth in the bag)"))
    rows += [
        ("Latency p50 / p95 / p99 (send -> mask)",
         f"{_num(lat['p50'])} / {_num(lat['p95'])} / {_num(lat['p99'])} ms"),
        ("Throughput", _num(summary["throughput_fps"], ".2f", " frames/s")),
    ]
    width = max(len(r[0]) for r in rows)
    vwidth = max(len(r[1]) for r in rows)
    lines = [f"| {'Metric':<{width}} | {'Value':<{vwidth}} |", f"|{'-' * (width + 2)}|{'-' * (vwidth + 2)}|"]
    lines += [f"| {a:<{width}} | {b:<{vwidth}} |" for a, b in rows]
    return "\n".join(lines) + "\n"


def _figure(width: float, height: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=100)
    FigureCanvasAgg(fig)
    return fig


def plot_latency(summary: Dict[str, Any], sends: Sequence[Optional[float]], answers: Dict[int, Answer],
                 hist_path: Path, time_path: Path) -> None:
    """Latency histogram (with p50/p95/p99 lines) and latency over replay time (drops
    marked along the bottom) as PNGs."""
    t0 = min(s for s in sends if s is not None)
    xs = [sends[i] - t0 for i in sorted(answers)]
    ys = [(answers[i].arrival - sends[i]) * 1000.0 for i in sorted(answers)]
    lat = summary["latency_ms"]
    title = f"{summary['image_topic']}, rate {summary['rate']}"

    fig = _figure(7, 4)
    ax = fig.add_subplot(1, 1, 1)
    if ys:
        ax.hist(ys, bins=min(50, max(5, len(ys) // 2)), color="#4878a8")
        for q, style in (("p50", "-"), ("p95", "--"), ("p99", ":")):
            ax.axvline(lat[q], color="k", linestyle=style, label=f"{q} {lat[q]:.1f} ms")
        ax.legend()
    else:
        ax.text(0.5, 0.5, "no frame was answered", ha="center", va="center", transform=ax.transAxes)
    ax.set_xlabel("end-to-end latency (send -> mask arrival), ms")
    ax.set_ylabel("frames")
    ax.set_title(f"Latency, {len(ys)} answered frames ({title})")
    fig.tight_layout()
    fig.savefig(str(hist_path))

    fig = _figure(8, 4)
    ax = fig.add_subplot(1, 1, 1)
    ax.plot(xs, ys, ".-", color="#4878a8", markersize=4, linewidth=0.8, label="answered")
    dropped = [sends[i] - t0 for i in range(len(sends)) if sends[i] is not None and i not in answers]
    if dropped:
        ax.plot(dropped, [0.0] * len(dropped), "x", color="#c03030", clip_on=False,
                label=f"dropped ({len(dropped)})")
    ax.set_xlabel("send time since the first frame, s")
    ax.set_ylabel("latency, ms")
    ax.set_ylim(bottom=0)
    ax.set_title(f"Latency over time ({title})")
    ax.legend()
    fig.tight_layout()
    fig.savefig(str(time_path))


def _pick_examples(records: Dict[int, FrameRecord], answered: Sequence[int], count: int) -> List[int]:
    """Up to ``count`` answered frames: hits, misses, correct empty frames and false
    alarms in rotation when scored (:func:`satsam_ros.core.metrics.pick_examples`),
    else evenly spaced."""
    if count <= 0 or not answered:
        return []
    if records:
        return pick_examples(records, count)
    pos = np.linspace(0, len(answered) - 1, min(count, len(answered)))
    return sorted({answered[int(round(p))] for p in pos})


def plot_examples(bag: Path, topic: str, picks: List[int], answers: Dict[int, Answer],
                  truths: Dict[int, Optional[np.ndarray]], records: Dict[int, Any], path: Path, title: str) -> bool:
    """A strip of example frames: prediction outlined red, ground truth green."""
    if not picks:
        return False
    import cv2

    wanted = set(picks)
    images: Dict[int, np.ndarray] = {}
    for item in read_images(bag, topic, decode=False):
        if item.index in wanted:
            arr, order = item.array()
            images[item.index] = cv2.cvtColor(to_uint8_gray(arr, order), cv2.COLOR_GRAY2RGB)
        if len(images) == len(wanted):
            break
    fig = _figure(3.2 * len(picks), 3.2)
    for n, i in enumerate(picks):
        rgb = images[i]
        truth = truths.get(i)
        if truth is not None:
            draw_outline(rgb, truth, (40, 220, 40))
        draw_outline(rgb, answers[i].mask(), (230, 40, 40))
        ax = fig.add_subplot(1, len(picks), n + 1)
        ax.imshow(rgb)
        ax.set_axis_off()
        rec = records.get(i)
        if rec is not None:
            verdict = (rec.category or ("correct" if rec.correct else "wrong")).replace("_", " ")
            caption = f"#{i}: {'empty, ' if rec.true_empty else ''}IoU {rec.iou:.2f}, {verdict}"
        else:
            caption = f"#{i}: {int(answers[i].mask().sum())} px detected"
        ax.set_title(caption, fontsize=8)
    fig.suptitle(title + "  (red: prediction, green: ground truth)", fontsize=9)
    fig.tight_layout()
    fig.savefig(str(path))
    return True


def write_report(out: Path, summary: Dict[str, Any], run: ReplayRun, opts, records: Dict[int, FrameRecord],
                 say: Callable[[str], None]) -> None:
    """report.md, metrics.json, per_frame.csv and the figures of one replay into ``out``."""
    files = {"report": "report.md", "metrics": "metrics.json", "per_frame": "per_frame.csv",
             "latency_histogram": "latency_histogram.png", "latency_over_time": "latency_over_time.png",
             "examples": "examples.png", "output_bag": "outputs"}
    if not opts.attach:
        files["node_log"] = "node.log"
    write_per_frame(out / files["per_frame"], run, records)
    plot_latency(summary, run.sends, run.answers, out / files["latency_histogram"], out / files["latency_over_time"])
    if summary.get("error_budget"):
        plot_error_budget(summary["error_budget"], out / "error_budget.png", title=f"{run.bag.name} {run.topic}")
        files["error_budget"] = "error_budget.png"
    picks = _pick_examples(records, sorted(run.answers), opts.examples)
    truth_masks: Dict[int, Optional[np.ndarray]] = {}
    if picks and summary["ground_truth"]:
        truth_masks = dict(iter_truth(run.bag, opts.truth_topic, run.stamps, only=picks))
    if not plot_examples(run.bag, run.topic, picks, run.answers, truth_masks, records, out / files["examples"],
                         f"{run.bag.name} {run.topic}"):
        files.pop("examples")
    summary["files"] = dict(files)
    (out / files["metrics"]).write_text(json.dumps(summary, indent=2, default=str) + "\n")
    (out / files["report"]).write_text(report_markdown(summary, files))
    say(f"wrote {out}/report.md, metrics.json, per_frame.csv, figures and the output bag {out}/outputs")


def write_per_frame(path: Path, run: ReplayRun, records: Dict[int, FrameRecord]) -> None:
    """per_frame.csv: one row per frame of the bag (sent, answered, latency, score)."""
    sent = [s for s in run.sends if s is not None]
    t0 = min(sent) if sent else 0.0
    stamps = run.stamps
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["index", "stamp", "bag_stamp", "sent_s", "answered", "latency_ms", "boxes", "scored", "iou",
                    "correct", "true_empty", "pred_empty", "true_area", "pred_area", "category", "extent",
                    "ceiling_iou"])
        for i, send in enumerate(run.sends):
            ans = run.answers.get(i)
            rec = records.get(i)
            w.writerow([i, format_stamp(run.send_stamps[i]), format_stamp(stamps[i]),
                        "" if send is None else f"{send - t0:.6f}", int(ans is not None),
                        "" if ans is None else f"{(ans.arrival - send) * 1000.0:.3f}", run.boxes.get(i, ""),
                        int(rec is not None),
                        *([""] * 9 if rec is None else
                          [f"{rec.iou:.6f}", int(rec.correct), int(rec.true_empty), int(rec.pred_empty),
                           rec.true_area, rec.pred_area, rec.category or "", rec.extent or "",
                           "" if rec.ceiling_iou is None else f"{rec.ceiling_iou:.6f}"])])


def report_markdown(summary: Dict[str, Any], files: Dict[str, str]) -> str:
    """The text of ``report.md``."""
    node = summary["node"]
    settings = ", ".join(f"{k} {node[k]}" for k in ("model", "backend", "device", "size", "mode", "threshold")
                         if k in node)
    lines = [
        f"# Bag evaluation: {Path(summary['bag']).name}",
        "",
        f"Bag `{summary['bag']}`, topic `{summary['image_topic']}` ({summary['frames_in_bag']} frames), "
        f"replayed on `{summary['input_topic']}` at rate `{summary['rate']}`"
        + (" (attached to a running node)" if summary["attach"] else
           f" (node started for this run, ROS_DOMAIN_ID {summary['ros_domain_id']})") + ".",
        "",
        f"Node: {settings or 'settings unknown (no diagnostics received)'}.",
        "",
        summary_table(summary),
    ]
    if summary["ground_truth"]:
        m = summary["metrics"]
        lines += [
            f"Accuracy counts the answered frames that have a ground-truth mask ({m['frames']} of "
            f"{m['frames_with_truth']} such frames; {m['unanswered_with_truth']} were not answered). A frame is "
            "correct when IoU > 0.5; an empty frame only when the prediction is empty (`satsam_ros.metrics`, "
            "as in training evaluation).",
            "",
            "| Metric | Value |",
            "|---|---|",
            f"| frames scored | {m['frames']} ({m['nonempty_frames']} with a satellite, {m['empty_frames']} empty) |",
            f"| accuracy | {_pct(m['accuracy'])} |",
            f"| accuracy on frames with a satellite | {_pct(m['accuracy_nonempty'])} |",
            f"| accuracy on empty frames | {_pct(m['accuracy_empty'])} |",
            f"| mean / median IoU (frames with a satellite) | {_num(m['mean_iou'], '.3f')} / "
            f"{_num(m['median_iou'], '.3f')} |",
            f"| false alarms | {m['false_alarms']} ({_pct(m['false_alarm_rate'])} of empty frames) |",
            f"| misses (empty prediction) | {m['misses']} ({_pct(m['miss_rate'])}) |",
            "",
            "Error budget (`satsam_ros.core.metrics`): every scored frame in one category, by the size of "
            "the true satellite; the grid ceiling is what a perfect model on the node's mask grid would score"
            + ("" if summary["error_budget"]["grid"] else " (unknown here: the node's model was not reported)")
            + (f"; figure `{files['error_budget']}`." if "error_budget" in files else "."),
            "",
            budget_markdown(summary["error_budget"]),
        ]
    else:
        lines += ["The bag has no ground truth: timing figures only.", ""]
    b = summary["dropped_breakdown"]
    if b is not None:
        lines += [
            "Where the dropped frames went (from the node's `/diagnostics` counters):",
            "",
            "| | frames |",
            "|---|---|",
            f"| lost before the node (transport, QoS) | {b['lost_before_node']} |",
            f"| replaced in the node's one-slot queue (newest frame wins) | {b['dropped_in_node']} |",
            f"| rejected by the node (bad frame) | {b['rejected_by_node']} |",
            f"| failed in the node | {b['node_errors']} |",
            f"| processed, but the mask did not arrive here | {b['outputs_not_received']} |",
            "",
        ]
    else:
        lines += ["(The node's diagnostics were not received, so the drops are not broken down.)", ""]
    lat = summary["latency_ms"]
    lines += [
        f"Latency is mask arrival here minus the send time of its frame: mean {_num(lat['mean'])} ms, "
        f"min {_num(lat['min'])} ms, max {_num(lat['max'])} ms. Throughput: answered frames / (last arrival - "
        f"first send) = {_num(summary['throughput_fps'], '.2f')} frames/s; frames were sent at "
        f"{_num(summary['send_rate_hz'], '.2f')} Hz.",
        "",
    ]
    if summary["unmatched_outputs"] or summary["duplicate_outputs"]:
        lines += [f"Outputs with a stamp that was not sent: {summary['unmatched_outputs']}; repeated outputs: "
                  f"{summary['duplicate_outputs']}.", ""]
    if summary["problems"]:
        lines += ["Problems seen:", ""] + [f"- {p}" for p in summary["problems"][:20]] + [""]
    lines += [f"![latency histogram]({files['latency_histogram']})", "",
              f"![latency over time]({files['latency_over_time']})", ""]
    if "examples" in files:
        lines += [f"![examples]({files['examples']})", ""]
    lines += ["Files: " + ", ".join(f"`{v}`" for v in files.values()) + ". The output bag holds the node's "
              "mask, detections_json and diagnostics messages as received (bag time = arrival time).", ""]
    return "\n".join(lines)

