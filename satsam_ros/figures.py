"""Figures shared by the `satsam` tools and the training side (the error budget): plain
plotting of JSON-ready dicts, importing nothing of the package (training may use it; it
uses no tool).

matplotlib's Agg backend (no display); imported inside the functions, so the runtime
imports none of it until a figure is drawn.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Dict, Sequence, Tuple

#: one colour per error-budget category (satsam_ros.core.metrics.CATEGORIES)
CATEGORY_COLOURS = {
    "correct": "#2ca02c",
    "missed": "#7f7f7f",
    "extra_objects": "#ff7f0e",
    "poor_mask": "#d62728",
    "correct_empty": "#98df8a",
    "false_alarm": "#9467bd",
}


def plot_error_budget(budget: Dict[str, Any], path, title: str = "") -> Path:
    """The error budget (:func:`satsam_ros.core.metrics.error_budget`) as stacked bars ->
    PNG: one bar per satellite size bucket and one for the empty frames, each split into
    its categories as shares of the bar's frames (the count above each bar); a black
    tick marks the share of the bucket's frames whose grid ceiling fails."""
    return plot_error_budgets([(title, budget)], path, columns=1)


def plot_error_budgets(panels: Sequence[Tuple[str, Dict[str, Any]]], path, columns: int = 3,
                       title: str = "") -> Path:
    """Several error budgets side by side -> PNG, one panel per (title, budget) as
    :func:`plot_error_budget` draws it (e.g. one test set at three sizes per row)."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    cols = max(1, min(int(columns), len(panels)))
    rows = (len(panels) + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(6.2 * cols + 1.6, 3.9 * rows), squeeze=False)
    for ax in axes.ravel()[len(panels):]:
        ax.axis("off")
    for ax, (name, budget) in zip(axes.ravel(), panels):
        _budget_axes(ax, budget, name)
    handles, labels = axes.ravel()[0].get_legend_handles_labels()
    for ax in axes.ravel()[1:len(panels)]:  # the union of the panels' legend entries
        for h, lab in zip(*ax.get_legend_handles_labels()):
            if lab not in labels:
                handles.append(h)
                labels.append(lab)
    fig.legend(handles, labels, fontsize=8, loc="center right")
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout(rect=(0, 0, 1 - 1.5 / (6.2 * cols + 1.6), 1))
    return save_figure(fig, path, dpi=100)


def save_figure(fig, path, dpi: int = 110) -> Path:
    """Write ``fig`` to ``path`` (PNG) through a temporary file renamed into place, so an
    interrupted write never leaves half a figure; close it; return the path."""
    import matplotlib.pyplot as plt

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=dpi)
    plt.close(fig)
    os.replace(tmp, path)
    return path


def _budget_axes(ax, budget: Dict[str, Any], title: str) -> None:
    """One error budget's stacked bars on ``ax``."""
    bars = [(f"{label} px", budget["buckets"][label]) for label in budget["size_buckets"]]
    bars.append(("empty", budget["empty"]))
    drawn = set()
    for x, (_name, block) in enumerate(bars):
        bottom = 0.0
        for category in budget["categories"]:
            if category not in block["counts"]:
                continue
            count, share = block["counts"][category], block["shares"][category] or 0.0
            label = category.replace("_", " ") if category not in drawn and count else None
            if count:
                drawn.add(category)
            ax.bar(x, share, bottom=bottom, color=CATEGORY_COLOURS[category], width=0.7, label=label)
            bottom += share
        ax.text(x, 1.02, f"{block['frames']}", ha="center", va="bottom", fontsize=8)
        fail = block.get("ceiling_fail_share")
        if fail:
            ax.plot([x - 0.35, x + 0.35], [fail, fail], color="black", lw=2,
                    label="grid ceiling fails" if "ceiling" not in drawn else None)
            drawn.add("ceiling")
    ax.set_xticks(range(len(bars)))
    ax.set_xticklabels([name for name, _ in bars], fontsize=8)
    ax.set_xlabel("true satellite extent (frame pixels); frames per bar above it", fontsize=8)
    ax.set_ylabel("share of the bar's frames", fontsize=8)
    ax.set_ylim(0, 1.1)
    ax.set_title((title + "\n" if title else "") + "error budget", fontsize=9)
