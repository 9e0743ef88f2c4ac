"""Print a model search's table (docs/model-search.md) from the candidates' run folders.

usage: python scripts/search_table.py SEARCH_DIR NAME [NAME ...]

Each NAME folder holds fit.json (from ``satsam-train fit``), tune-{512,1024,2048}.json
(``satsam-train tune-threshold --json`` on style a's validation frames: the accuracy of the
chosen setting on the frames it was chosen on) and, per scored generator G (b: the
independent procedural generator; r, search v3: real backgrounds from the held-out band of
longitudes), G-{512,1024,2048}.json (``satsam-train evaluate --json`` on G's validation
frames). SEARCH_DIR/cost.json (scripts/search_cost.py), where present, gives each
candidate's ONNX Runtime milliseconds per S = 512 frame against the shipped model's in the
same run. The score is the mean accuracy over the scored generators and the three sizes.
A second table gives each candidate's error budget summed over those evaluations.
Missing pieces print as "-".
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

SIZES = (512, 1024, 2048)
GENERATORS = ("b", "r")
BUDGET = ("correct", "missed", "extra_objects", "poor_mask", "false_alarm")


def _read(path: Path):
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _pct(value) -> str:
    return "-" if value is None else f"{100 * value:.1f}"


def row(folder: Path, cost: dict) -> dict:
    fit = _read(folder / "fit.json") or {}
    best = fit.get("best") or {}
    out = {"name": folder.name, "steps": fit.get("steps"), "best_epoch": fit.get("best_epoch"),
           "val_loss": best.get("val_loss"), "auc": best.get("val_presence_auc"), "gens": [], "budget": {}}
    for g in GENERATORS:
        for size in SIZES:
            m = _read(folder / f"{g}-{size}.json")
            out[f"{g}{size}"] = None if m is None else m["accuracy"]
            out[f"{g}{size}_fa"] = None if m is None else m["false_alarm_rate"]
            if m is not None:
                if g not in out["gens"]:
                    out["gens"].append(g)
                for k, v in (m.get("error_budget") or {}).get("counts", {}).items():
                    out["budget"][k] = out["budget"].get(k, 0) + v
    for size in SIZES:
        tuned = _read(folder / f"tune-{size}.json")
        out[f"a{size}"] = None if tuned is None else tuned["best"]["accuracy"]
        out[f"gate{size}"] = None if tuned is None else tuned["best"].get("min_object_score")
    scored = [out[f"{g}{s}"] for g in out["gens"] for s in SIZES]
    out["score"] = None if not scored or None in scored else sum(scored) / len(scored)
    c = cost.get(folder.name) or {}
    out["ms"], out["vs"] = c.get("ort_ms_per_frame"), c.get("vs_builtin")
    out["params"] = c.get("parameters")
    return out


def table(rows) -> str:
    gens = [g for g in GENERATORS if any(g in r["gens"] for r in rows)] or ["b"]
    head = ["candidate", "parameters", "steps", "best epoch", "val loss", "presence AUC"]
    head += [f"{g} {s}" for g in gens for s in SIZES]
    head += [f"{g} false alarms ({'/'.join(map(str, SIZES))})" for g in gens]
    head += ["**mean**", "a val 512 / 1024 / 2048 (tuned on)", "gate 512 / 1024 / 2048", "ORT ms / frame (x builtin)"]
    lines = ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    for r in sorted(rows, key=lambda r: -(r["score"] or -1)):
        cells = [r["name"], "-" if r["params"] is None else f"{r['params'] / 1e6:.2f} M", str(r["steps"] or "-"),
                 str(r["best_epoch"] or "-"), "-" if r["val_loss"] is None else f"{r['val_loss']:.3f}",
                 "-" if r["auc"] is None else f"{r['auc']:.3f}"]
        cells += [_pct(r.get(f"{g}{s}")) for g in gens for s in SIZES]
        cells += ["/".join(_pct(r.get(f"{g}{s}_fa")) for s in SIZES) for g in gens]
        cells += [f"**{_pct(r['score'])}**", " / ".join(_pct(r[f"a{s}"]) for s in SIZES),
                  " / ".join("-" if r[f"gate{s}"] is None else f"{r[f'gate{s}']:g}" for s in SIZES),
                  "-" if r["ms"] is None else f"{r['ms']:.1f} ({r['vs']:.2f})"]
        lines.append("| " + " | ".join(cells) + " |")
    budget = ["", "Error budget summed over the scored evaluations (frames):", "",
              "| candidate | frames | " + " | ".join(k.replace("_", " ") for k in BUDGET) + " |",
              "|" + " --- |" * (len(BUDGET) + 2)]
    for r in sorted(rows, key=lambda r: -(r["score"] or -1)):
        b = r["budget"]
        n = sum(b.values())
        cells = [f"{b.get(k, 0)} ({100.0 * b.get(k, 0) / n:.0f} %)" if n else "-" for k in BUDGET]
        budget.append(f"| {r['name']} | {n or '-'} | " + " | ".join(cells) + " |")
    return "\n".join(lines + budget)


def main(argv) -> int:
    if len(argv) < 2:
        print(__doc__, file=sys.stderr)
        return 2
    root = Path(argv[0])
    cost = {c["name"]: c for c in (_read(root / "cost.json") or {}).get("rows", [])}
    print(table([row(root / name, cost) for name in argv[1:]]))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
