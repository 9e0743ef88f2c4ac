"""Shared pieces of the training commands' outputs: provenance, atomic files, CSV,
plots, markdown tables, and the reference report's numbers.

Plots use matplotlib's Agg backend (no display needed). Everything here is library
code: no printing, no argparse.
"""

from __future__ import annotations

import csv
import json
import os
import platform
import shlex
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, Iterable, List, Optional, Sequence

import numpy as np

# The reference report's Table 1: THEIR data (512 x 641 grayscale frames, their
# pseudo-masks), SAM ViT-B with the mask decoder fine-tuned, an RTX 4080 Super.
REFERENCE_RESULTS = {
    512: {"accuracy": 0.619, "seconds": 0.55},
    1024: {"accuracy": 0.540, "seconds": 2.10},
    2048: {"accuracy": 0.397, "seconds": 8.26},
}
REFERENCE_NOTE = (
    "Reference numbers: the reference report's Table 1, measured on its own data "
    "(512 x 641 grayscale frames, 200 test frames) with SAM ViT-B on an NVIDIA RTX 4080 Super. "
    "They are not comparable one-to-one with numbers measured here on other data and hardware."
)


# ----------------------------------------------------------------------------- files


def atomic_write_text(path: Path, text: str) -> Path:
    """Write ``text`` to ``path`` via a temporary file in the same directory + rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=str(path.parent))
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def write_json(path: Path, data: Any) -> Path:
    """JSON (indent 2, sorted keys) written atomically."""
    return atomic_write_text(path, json.dumps(data, indent=2, sort_keys=True, default=_json_default) + "\n")


def _json_default(obj):
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (np.floating,)):
        return float(obj)
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def write_csv(path: Path, rows: Sequence[Dict[str, Any]], columns: Optional[Sequence[str]] = None) -> Path:
    """Rows of dicts -> CSV (atomically); columns default to the union, in first-seen order."""
    if columns is None:
        columns = []
        for row in rows:
            for key in row:
                if key not in columns:
                    columns.append(key)
    lines: List[List[str]] = []
    for row in rows:
        lines.append(["" if row.get(c) is None else _fmt_csv(row.get(c)) for c in columns])
    import io

    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(columns)
    writer.writerows(lines)
    return atomic_write_text(path, buf.getvalue())


def _fmt_csv(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


# ------------------------------------------------------------------------ provenance


def git_commit(start: Optional[Path] = None) -> Optional[str]:
    """The commit of the git work tree holding ``start`` (this package by default), with
    ``-dirty`` appended when tracked files are modified; None when git is unavailable."""
    where = Path(start or Path(__file__).resolve().parent)
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=where, capture_output=True, text=True, timeout=10, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=where, capture_output=True, text=True, timeout=10, check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return commit + ("-dirty" if dirty else "") if commit else None


def versions() -> Dict[str, str]:
    """Versions of Python and the libraries that shape a trained model."""
    out = {"python": platform.python_version()}
    for name in ("torch", "transformers", "monai", "accelerate", "numpy", "cv2", "satsam_ros", "satsam_training"):
        try:
            module = __import__(name)
            out[name] = str(getattr(module, "__version__", "unknown"))
        except ImportError:
            continue
    return out


def command_line(argv: Sequence[str]) -> str:
    """``argv`` as the user typed it (``satsam-train ...``), shell-quoted; the program
    name is shown as ``satsam-train`` whatever path ran it."""
    argv = list(argv)
    if argv and argv[0].endswith(("cli.py", "satsam-train")):
        argv[0] = "satsam-train"
    return " ".join(shlex.quote(a) for a in argv)


#: the repository this package lies in (training/satsam_training -> the repository root)
REPO_ROOT = Path(__file__).resolve().parents[2]


def repo_path(path) -> str:
    """``path`` as provenance records it: relative to the repository when it lies inside
    it (``runs/p512``, the same on every machine), else absolute."""
    resolved = Path(path).expanduser().resolve()
    try:
        return str(resolved.relative_to(REPO_ROOT))
    except ValueError:
        return str(resolved)


def now_iso() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")


# ----------------------------------------------------------------------------- plots


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def plot_training_curves(history: Sequence[Dict[str, Any]], path: Path, title: str = "") -> Path:
    """Loss (train/val) and validation metrics per epoch -> PNG."""
    plt = _pyplot()
    epochs = [h["epoch"] for h in history]
    fig, (ax_loss, ax_metric) = plt.subplots(1, 2, figsize=(11, 4))
    for key, label in (("train_loss", "train loss"), ("val_loss", "val loss")):
        values = [h.get(key) for h in history]
        if any(v is not None for v in values):
            ax_loss.plot(epochs, [np.nan if v is None else v for v in values], marker="o", ms=3, label=label)
    ax_loss.set_xlabel("epoch")
    ax_loss.set_ylabel("DiceCE loss")
    ax_loss.grid(alpha=0.3)
    ax_loss.legend()
    metric_keys = (
        ("val_patch_accuracy", "val patch accuracy"),
        ("val_patch_mean_iou", "val patch mean IoU"),
        ("val_patch_accuracy_gated", "val patch accuracy, presence-gated"),
        ("val_presence_auc", "val presence AUC"),
        ("val_frame_accuracy", "val frame accuracy"),
        ("val_frame_mean_iou", "val frame mean IoU"),
        ("val_frame_false_alarm_rate", "val false-alarm rate"),
    )
    for key, label in metric_keys:
        values = [h.get(key) for h in history]
        if any(v is not None for v in values):
            ax_metric.plot(epochs, [np.nan if v is None else v for v in values], marker="o", ms=3, label=label)
    ax_metric.set_xlabel("epoch")
    ax_metric.set_ylim(-0.02, 1.02)
    ax_metric.grid(alpha=0.3)
    if ax_metric.get_legend_handles_labels()[0]:
        ax_metric.legend(fontsize=8)
    else:
        ax_metric.text(0.5, 0.5, "no validation set", ha="center", va="center", transform=ax_metric.transAxes)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return _save_fig(fig, path)


def plot_threshold_curve(rows: Sequence[Dict[str, Any]], best: float, path: Path, title: str = "") -> Path:
    """Accuracy / mean IoU / false-alarm and miss rates against the threshold -> PNG."""
    plt = _pyplot()
    thr = [r["threshold"] for r in rows]
    fig, ax = plt.subplots(figsize=(7, 4))
    for key, label in (
        ("accuracy", "accuracy"),
        ("mean_iou", "mean IoU (non-empty frames)"),
        ("false_alarm_rate", "false-alarm rate (empty frames)"),
        ("miss_rate", "miss rate"),
    ):
        values = [r.get(key) for r in rows]
        if any(v is not None for v in values):
            ax.plot(thr, [np.nan if v is None else v for v in values], marker="o", ms=3, label=label)
    ax.axvline(best, color="k", ls="--", lw=1, label=f"chosen {best:.2f}")
    ax.set_xlabel("threshold on the probability")
    ax.set_ylim(-0.02, 1.02)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title(title or "threshold sweep")
    fig.tight_layout()
    return _save_fig(fig, path)


def outline_image(gray: np.ndarray, true: Optional[np.ndarray], pred: Optional[np.ndarray]) -> np.ndarray:
    """H x W uint8 gray frame -> H x W x 3 uint8 RGB with the true mask outlined in green
    and the predicted mask outlined in red (1 px contours, satsam_ros.core.overlay)."""
    from satsam_ros.core.overlay import draw_outline

    rgb = np.repeat(gray[:, :, None], 3, axis=2).copy()
    draw_outline(rgb, true, (0, 255, 0), thickness=1)
    return draw_outline(rgb, pred, (255, 0, 0), thickness=1)


def plot_examples(examples: Sequence[Dict[str, Any]], path: Path, title: str = "", columns: int = 4) -> Path:
    """Example frames (dicts with ``image`` H x W uint8, ``true``/``pred`` masks or None,
    ``caption``) in a grid, true outline green, prediction red -> PNG."""
    plt = _pyplot()
    n = max(1, len(examples))
    cols = min(columns, n)
    rows = (n + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(3.6 * cols, 3.5 * rows), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for ax, ex in zip(axes.ravel(), examples):
        ax.imshow(outline_image(ex["image"], ex.get("true"), ex.get("pred")))
        ax.set_title(ex.get("caption", ""), fontsize=8)
    fig.suptitle((title + "\n" if title else "") + "green: true mask, red: prediction", fontsize=9)
    fig.tight_layout()
    return _save_fig(fig, path)


def _save_fig(fig, path: Path) -> Path:
    from satsam_ros.figures import save_figure

    return save_figure(fig, path, dpi=110)


# ---------------------------------------------------------------------------- tables


def _pct(value: Optional[float]) -> str:
    return "n/a" if value is None else f"{100.0 * value:.1f} %"


def _secs(value: Optional[float]) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def table1_markdown(rows: Iterable[Dict[str, Any]], with_reference: bool = False) -> str:
    """A markdown table in the layout of the reference's Table 1.

    ``rows``: dicts with ``size``, ``accuracy`` (0..1) and ``seconds_median``.
    With ``with_reference``, the reference's numbers stand beside ours, marked as such.
    """
    if with_reference:
        lines = [
            "| Image size | Accuracy (here) | Runtime (s/frame, here) "
            "| Accuracy (reference*) | Runtime (s/frame, reference*) |",
            "| --- | --- | --- | --- | --- |",
        ]
    else:
        lines = ["| Image size | Accuracy | Runtime (s/frame) |", "| --- | --- | --- |"]
    for row in rows:
        size = int(row["size"])
        cells = [f"{size} x {size}", _pct(row.get("accuracy")), _secs(row.get("seconds_median"))]
        if with_reference:
            ref = REFERENCE_RESULTS.get(size)
            cells += [_pct(ref["accuracy"]) if ref else "n/a", f"{ref['seconds']:.2f}" if ref else "n/a"]
        lines.append("| " + " | ".join(cells) + " |")
    text = "\n".join(lines) + "\n"
    if with_reference:
        text += "\n\\* " + REFERENCE_NOTE + "\n"
    return text


def metrics_markdown(summary: Dict[str, Any]) -> str:
    """All metrics of one evaluation as a two-column markdown table."""
    rows = [
        ("frames", summary.get("frames")),
        ("accuracy (IoU > 0.5; empty frame correct only if prediction empty)", _pct(summary.get("accuracy"))),
        ("mean IoU (non-empty frames)", "n/a" if summary.get("mean_iou") is None else f"{summary['mean_iou']:.3f}"),
        ("false-alarm rate (empty frames)", _pct(summary.get("false_alarm_rate"))),
        ("miss rate (non-empty frames, empty prediction)", _pct(summary.get("miss_rate"))),
        ("empty / non-empty frames", f"{summary.get('empty_frames')} / {summary.get('nonempty_frames')}"),
        ("seconds per frame, median", _secs(summary.get("seconds_median"))),
        ("seconds per frame, p95", _secs(summary.get("seconds_p95"))),
    ]
    lines = ["| metric | value |", "| --- | --- |"] + [f"| {k} | {v} |" for k, v in rows]
    return "\n".join(lines) + "\n"
