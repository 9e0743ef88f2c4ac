"""The benchmark's report as text: the terminal table and the markdown page (BENCHMARKS.md)."""

from __future__ import annotations

from typing import Any, Dict, List, Optional, Sequence, Tuple

from .node import RATE_TOLERANCE, rate_name


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


def ratio_rows(report: Dict[str, Any]) -> Tuple[List[str], List[List[str]]]:
    """Header and rows of the model-against-reference table (``report["model_ratios"]``)."""
    ratios = report.get("model_ratios") or []
    ref = ratios[0]["reference"] if ratios else "reference"
    head = ["model", "S", "backend", "row", "E", "median s", f"{ref} median s", f"x {ref}"]
    rows = [[r["model"], str(r["size"]), r["backend"], r["row"], str(r.get("encoder_input") or "-"),
             _fmt(r["model_s"]), _fmt(r["reference_s"]), _fmt(r["speedup"], ".2f")] for r in ratios]
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
    out: List[str] = []
    for section in (_md_head, _md_targets, _md_latency, _md_ratios, _md_ablation, _md_roi, _md_cascade,
                    _md_skipped_and_node):
        out += section(report)
    return "\n".join(out)


def _md_head(report: Dict[str, Any]) -> List[str]:
    """Title, machine, threads, load and the shipped model; the targets heading."""
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
    return out


def _md_targets(report: Dict[str, Any]) -> List[str]:
    """The targets table."""
    out: List[str] = []
    trows = []
    for tg in report["targets"]:
        verdict = {True: "PASS", False: "MISS", None: "not measured"}[tg["passed"]]
        trows.append([tg["target"], tg["goal"], _fmt(tg["measured"], ".2f"), verdict, tg["detail"]])
    out += [_md_table(["target", "goal", "measured", "verdict", "detail"], trows), ""]
    return out


def _md_latency(report: Dict[str, Any]) -> List[str]:
    """The latency table, what each row is, cut and resumed groups."""
    out: List[str] = []
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
    return out


def _md_ratios(report: Dict[str, Any]) -> List[str]:
    """Each model against the reference model, row for row (same size, backend and row)."""
    ratios = report.get("model_ratios") or []
    if not ratios:
        return []
    ref = ratios[0]["reference"]
    return [f"## Against {ref}", "",
            f"Each row against {ref}'s row of the same S, backend and name, measured in this run (the models' "
            f"groups of one S ran back to back, not interleaved, so a load change between them shows here; ratios "
            f"within a group are fairer). `x {ref}` = {ref}'s median / this row's median: above 1 is faster.", "",
            _md_table(*ratio_rows(report)), ""]


def _md_ablation(report: Dict[str, Any]) -> List[str]:
    """Pre/post styles, no_grad vs inference_mode, thread settings."""
    out: List[str] = []
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
    return out


def _md_roi(report: Dict[str, Any]) -> List[str]:
    """The ROI tracking table."""
    out: List[str] = []
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
    return out


def _md_cascade(report: Dict[str, Any]) -> List[str]:
    """The coarse-to-fine table (tools/bench/cascade.py)."""
    from .cascade import CASCADE_HEAD, cascade_rows

    c = report.get("cascade")
    if not c:
        return []
    frames = (f"the {c['split']} split of {', '.join(c['datasets'])}" if c.get("split") else
              "synthetic 512 x 641 frames, every second one empty")
    notes = sorted({r["note"] for r in c["rows"] if r["note"]})
    return ["## Coarse to fine", "",
            f"Model `{c['model']}` on {c['backend']}: S = 512, full tiling and the cascade at each larger S, "
            f"every frame through every row in turn (one run), on {frames}. Accuracy and false alarms as "
            "`satsam-train evaluate` scores them; seconds are `Result.timings['total']` after a warm-up; "
            "`empty` = frames without a satellite; pre+post = share of the frame time outside the model; "
            "patches/frame counts the cascade's coarse patches too; stopped = frames the cascade ended at the "
            "coarse pass." + (" " + "; ".join(notes) + "." if notes else ""), "",
            _md_table(CASCADE_HEAD, cascade_rows(c)), ""]


def _md_skipped_and_node(report: Dict[str, Any]) -> List[str]:
    """Rows skipped (with the reason) and the live-node section."""
    out: List[str] = []
    if report["skipped"]:
        out += ["## Skipped", "", _md_table(["model", "S", "row", "why"],
                                           [[s["model"], s["size"], s["row"], s["reason"]] for s in report["skipped"]]),
                ""]
    if report.get("node"):
        out += node_markdown(report["node"])
    return out


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


def node_rows(node: Dict[str, Any]) -> List[List[str]]:
    """Table rows (one per rate) for the terminal and markdown."""
    def f(value: Optional[float], spec: str = ".1f") -> str:
        return "-" if value is None else format(value, spec)

    rows = []
    for r in node["runs"]:
        lat = r["latency_ms"]
        rows.append([rate_name(r["rate"]), f(r["input_fps"]), str(r["frames_sent"]), str(r["frames_answered"]),
                     str(r["frames_dropped"]), f(r["output_fps"]), f(lat["p50"]), f(lat["p95"]), f(lat["p99"]),
                     f(lat["p50"] / node["baseline"]["p50_ms"] if lat["p50"] else None, ".2f"),
                     "-" if r["rate"] == "step" else ("yes" if r["sustained"] else "no")])
    return rows


NODE_HEAD = ["input", "input fps", "sent", "answered", "dropped", "output fps", "p50 ms", "p95 ms", "p99 ms",
             "p50 / detector", "sustained"]


def node_markdown(node: Dict[str, Any]) -> List[str]:
    """The markdown lines of the node section."""
    b = node["baseline"]
    out = ["## Live node over loopback DDS", "",
           f"Model `{node['model']}`, S = {node['options']['size']}"
           + (f" (cascade {b['cascade']})" if b.get("cascade") else "")
           + f", {node['options']['frames']} synthetic "
           f"{node['frame']} frames per input rate through the installed `detect_node` (a separate process, "
           "Fast DDS on loopback). Latency = arrival of `/satsam/detections_json` minus the publish time. "
           f"Baseline in the same run: the in-process Detector ({b['backend']}) on the same frames, p50 "
           f"{b['p50_ms']:.1f} ms, p95 {b['p95_ms']:.1f} ms, pre + post {100 * (b['pre_post_share'] or 0):.1f} % "
           "of its frame time. `step` sends each frame as soon as the previous one is answered, so its output "
           "rate is the most the node sustains without drops (transport included, no pipelining). "
           "Sustained = every frame answered and the output "
           f"rate within {100 * RATE_TOLERANCE:.0f} % of the input rate.", "",
           _md_table(NODE_HEAD, node_rows(node)), ""]
    c = node.get("capacity_target")
    if c:
        ref = node["reference"]
        measured = "-" if c["measured"] is None else f"{c['measured']:.2f}x"
        verdict = {True: "PASS", False: "MISS", None: "----"}[c["passed"]]
        out += [f"Reference `{ref['model']}`, lock-step on the same bag right after: "
                + ", ".join(f"{r['output_fps']:.1f} fps (p95 {r['latency_ms']['p95']:.0f} ms)"
                            for r in ref["runs"] if r["output_fps"] is not None)
                + f". Capacity {c['goal']}: **{measured}** {verdict} ({c['detail']}).", ""]
    return out

