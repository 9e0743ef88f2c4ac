"""Print the model search's table (docs/model-search.md) from the candidates' run folders.

usage: python scripts/search_table.py SEARCH_DIR NAME [NAME ...]

Each NAME folder holds fit.json (from ``satsam-train fit``), tune-{512,1024,2048}.json
(``satsam-train tune-threshold --json`` on style a's validation frames: the accuracy of the
chosen setting on the frames it was chosen on) and b-{512,1024,2048}.json
(``satsam-train evaluate --json`` on style b's validation frames). The score is the mean
accuracy on the independent generator (b) over the three sizes.
Missing pieces print as "-".
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

SIZES = (512, 1024, 2048)


def _read(path: Path):
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _pct(value) -> str:
    return "-" if value is None else f"{100 * value:.1f}"


def row(folder: Path) -> dict:
    fit = _read(folder / "fit.json") or {}
    meta = _read(folder / "model" / "satsam.json") or {}
    out = {"name": folder.name, "steps": fit.get("steps"), "minutes": fit.get("seconds"),
           "best_epoch": fit.get("best_epoch"), "val_loss": (fit.get("best") or {}).get("val_loss"),
           "threshold": meta.get("threshold"), "min_area": meta.get("min_area")}
    prov = meta.get("provenance", {})
    out["params"] = prov.get("parameters")
    for size in SIZES:
        m = _read(folder / f"b-{size}.json")
        out[f"b{size}"] = None if m is None else m["accuracy"]
        out[f"b{size}_fa"] = None if m is None else m["false_alarm_rate"]
        out[f"b{size}_s"] = None if m is None else m["seconds_median"]
        tuned = _read(folder / f"tune-{size}.json")
        out[f"a{size}"] = None if tuned is None else tuned["best"]["accuracy"]
    b = [out[f"b{s}"] for s in SIZES]
    out["score"] = None if None in b else sum(b) / len(b)
    return out


def table(rows) -> str:
    head = ("| candidate | steps | best epoch | val loss | thr / min_area | b 512 | b 1024 | b 2048 | b false alarms "
            "(512/1024/2048) | **b mean** | a val 512 | a val 1024 | a val 2048 | s/frame at 512 |")
    lines = [head, "|" + " --- |" * (head.count("|") - 1)]
    for r in sorted(rows, key=lambda r: -(r["score"] or -1)):
        thr = "-" if r["threshold"] is None else f"{r['threshold']:.2f} / {r['min_area']}"
        fas = "/".join(_pct(r[f"b{s}_fa"]) for s in SIZES)
        sec = "-" if r["b512_s"] is None else f"{r['b512_s']:.3f}"
        loss = "-" if r["val_loss"] is None else f"{r['val_loss']:.3f}"
        lines.append(f"| {r['name']} | {r['steps'] or '-'} | {r['best_epoch'] or '-'} | {loss} | {thr} | "
                     f"{_pct(r['b512'])} | {_pct(r['b1024'])} | {_pct(r['b2048'])} | {fas} | "
                     f"**{_pct(r['score'])}** | {_pct(r['a512'])} | {_pct(r['a1024'])} | {_pct(r['a2048'])} | {sec} |")
    return "\n".join(lines)


def main(argv) -> int:
    if len(argv) < 2:
        print(__doc__, file=sys.stderr)
        return 2
    root = Path(argv[0])
    print(table([row(root / name) for name in argv[1:]]))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
