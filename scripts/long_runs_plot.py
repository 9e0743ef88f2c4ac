"""Plot the long runs of the shipped model one after the other (docs/long-runs.png).

    python scripts/long_runs_plot.py OUT.png RUN_DIR [RUN_DIR ...]

Each RUN_DIR is a `satsam-train fit` run with a train_log.csv; a run that starts from
the previous one's checkpoint is drawn after it on one step axis, so the figure shows
where the loss and the validation metrics stall across runs.
"""

from __future__ import annotations

import csv
import sys
from pathlib import Path


def read_log(run: Path):
    """The rows of RUN/train_log.csv as dicts of floats (empty fields dropped)."""
    with open(run / "train_log.csv", newline="") as f:
        return [{k: float(v) for k, v in row.items() if v not in ("", None)} for row in csv.DictReader(f)]


def main(argv) -> int:
    if len(argv) < 2:
        print(__doc__, file=sys.stderr)
        return 2
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out, runs = Path(argv[0]), [Path(a) for a in argv[1:]]
    panels = (("val_loss", "validation loss (DiceCE)"), ("train_loss", "training loss (epoch mean)"),
              ("val_patch_mean_iou", "validation patch mean IoU"))
    fig, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 3.8))
    offset = 0.0
    for run in runs:
        rows = read_log(run)
        if not rows:
            raise SystemExit(f"{run}/train_log.csv: no epochs")
        steps = [offset + r["step"] for r in rows]
        for ax, (key, _) in zip(axes, panels):
            ax.plot(steps, [r.get(key, float("nan")) for r in rows], marker="o", ms=3, label=run.name)
        offset = steps[-1]
    for ax, (_, title) in zip(axes, panels):
        ax.set_title(title)
        ax.set_xlabel("optimizer steps (batch 8), runs end to end")
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
