"""The whole method, once per input size S, and one report comparing the sizes.

Layout of a pipeline directory (``out``)::

    data/              the COCO dataset: generated (``satsam-train synth``), or the given one
    pseudo/            train/val pseudo-labelled from their boxes (grabcut by default); the
                       test split is scored against data/'s own masks
    S512/patches-train, S512/patches-val    patches at S = 512
    S512/run/          the training run (run/model is the checkpoint)
    S512/eval/         the evaluation on the test split
    report.md, report.json   all sizes side by side, next to the reference's numbers

Every step calls the library function behind the corresponding ``satsam-train``
subcommand (:func:`satsam_training.synth.generate_dataset`,
:func:`satsam_training.pseudo.pseudo_label_dataset`,
:func:`satsam_training.patches.extract_patches`, :func:`satsam_training.fit.fit`,
:func:`satsam_training.threshold.tune_threshold`,
:func:`satsam_training.evaluate.evaluate`). With ``resume`` a step whose output is
complete is skipped and an interrupted fit continues from its ``last/`` state.
"""

from __future__ import annotations

import copy
import json
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence

from . import report
from .fit_config import FitConfig

Say = Callable[[str], None]


class PipelineError(ValueError):
    """A pipeline setting or state that cannot be used; the message names it."""


@dataclass
class SynthPlan:
    """The synthetic dataset to generate when no dataset is given."""

    counts: Dict[str, int]  # frames per split: train, val, test
    seed: int
    config: Any  # satsam_training.synth.SynthConfig
    command: str = ""  # the equivalent `satsam-train synth` command (provenance)
    workers: int = 1  # processes generating frames (the frames do not depend on it)


@dataclass
class PipelineConfig:
    """Every setting of a pipeline run.

    ``fit`` is the training template: each size fills in its patches, validation,
    run directory and resume flag. Exactly one of ``data`` (an existing COCO dataset
    with train, val and ``eval_split``) and ``synth`` says where the frames come from.
    """

    out: str
    sizes: Sequence[int]
    fit: FitConfig
    data: Optional[str] = None
    synth: Optional[SynthPlan] = None
    pseudo_label: str = "grabcut"  # method for train/val masks; "none" keeps the given masks
    patch_size: int = 256
    keep_empty: float = 0.0
    val_frames: bool = False  # also score val frames through the Detector every epoch
    eval_split: str = "test"
    resume: bool = False
    progress: bool = True
    command: Optional[str] = None


@dataclass
class _Steps:
    """The log of a run: messages, and each step with its duration (for the report)."""

    say: Say
    done: List[Dict[str, Any]] = field(default_factory=list)

    def run(self, name: str, fn, *args, **kwargs):
        """Run one step, log it and record its duration."""
        t0 = time.time()
        self.say(f"pipeline: {name}")
        value = fn(*args, **kwargs)
        self.done.append({"step": name, "seconds": round(time.time() - t0, 1)})
        return value


def run_pipeline(cfg: PipelineConfig, log: Optional[Say] = None) -> Dict[str, Any]:
    """Run the pipeline; returns ``{"report": path of report.md, "sizes": {S: {...}}}``."""
    steps = _Steps(log or (lambda _msg: None))
    out = Path(cfg.out)
    if out.exists() and any(out.iterdir()) and not cfg.resume:
        raise PipelineError(f"{out} is not empty: pass --resume to continue it, or choose a new --out")
    out.mkdir(parents=True, exist_ok=True)
    started = time.time()
    data, data_recipe = _data(cfg, out, steps)
    labelled = _pseudo_labels(cfg, out, data, steps)
    sizes: Dict[int, Dict[str, Any]] = {}
    for size in cfg.sizes:
        steps.say(f"pipeline: ---- S = {size} ----")
        sizes[size] = _one_size(cfg, out / f"S{size}", int(size), data, labelled, steps)
    summary = {
        "sizes": sizes,
        "data": data_recipe,
        "labelled": str(labelled),
        "pseudo_label": cfg.pseudo_label,
        "keep_empty": float(cfg.keep_empty),
        "command": cfg.command,
        "git_commit": report.git_commit(),
        "versions": report.versions(),
        "steps": steps.done,
        "seconds": round(time.time() - started, 1),
        "finished": report.now_iso(),
    }
    report.write_json(out / "report.json", summary)
    path = report.atomic_write_text(out / "report.md", render_report(summary))
    return {"report": str(path), "sizes": sizes}


def _data(cfg: PipelineConfig, out: Path, steps: _Steps):
    """(the dataset directory, how it was made): the given one, or generated now."""
    from .coco import available_splits

    if cfg.data:
        data = Path(cfg.data)
        missing = [s for s in ("train", "val", cfg.eval_split) if s not in available_splits(data)]
        if missing:
            raise PipelineError(f"--data {data}: missing split file(s) {', '.join(s + '.json' for s in missing)}")
        return data, {"given": str(data.resolve())}
    if cfg.synth is None:
        raise PipelineError("pipeline: give a dataset (--data) or a synthetic data plan")
    data = out / "data"
    if not (cfg.resume and all((data / f"{s}.json").is_file() for s in ("train", "val", "test"))):
        from .synth import generate_dataset

        plan = cfg.synth
        steps.run("synth", generate_dataset, data, plan.counts, seed=plan.seed, config=plan.config,
                  progress=cfg.progress, workers=plan.workers)
    return data, {"command": cfg.synth.command}


def _pseudo_labels(cfg: PipelineConfig, out: Path, data: Path, steps: _Steps) -> Path:
    """The dataset whose train/val masks training uses (pseudo-labelled, or ``data``)."""
    if cfg.pseudo_label == "none":
        return data
    labelled = out / "pseudo"
    if not (cfg.resume and all((labelled / f"{s}.json").is_file() for s in ("train", "val"))):
        from .pseudo import pseudo_label_dataset

        steps.run("pseudo-label", pseudo_label_dataset, data, labelled, method=cfg.pseudo_label,
              splits=["train", "val"], progress=cfg.progress)
    return labelled


def _one_size(cfg: PipelineConfig, base: Path, size: int, data: Path, labelled: Path, steps: _Steps) -> Dict[str, Any]:
    """Patches, training, threshold tuning and evaluation at one S; its report row."""
    patch_dirs = {split: _patches(cfg, base, size, labelled, split, steps) for split in ("train", "val")}
    val_count = json.loads((patch_dirs["val"] / "patches.json").read_text())["count"]
    if not val_count:
        steps.say(f"pipeline: S={size}: the val split gave no patches; training without validation patches")
    run = base / "run"
    if not (cfg.resume and (run / "fit.json").is_file()):
        from .fit import fit

        fit_cfg = _fit_config(cfg, patch_dirs, bool(val_count), labelled, run)
        steps.run(f"fit S={size}", fit, fit_cfg, log=steps.say)
    choice = _detector_choice(cfg, run / "model", size)
    tunings = json.loads((run / "model" / "satsam.json").read_text()).get("provenance", {}).get("threshold_tuning")
    tuning = (tunings or {}).get(str(size))  # one record per frame size tuned at
    if not (cfg.resume and tuning):
        from .threshold import tune_threshold

        tuned = steps.run(f"tune-threshold S={size}", tune_threshold, choice, labelled, split="val",
                      progress=cfg.progress, log=steps.say, command=cfg.command)
        tuning = {"accuracy": tuned["best"]["accuracy"]}
    metrics_file = base / "eval" / "metrics.json"
    if cfg.resume and metrics_file.is_file():
        result = json.loads(metrics_file.read_text())
    else:
        from .evaluate import evaluate

        result = steps.run(f"evaluate S={size}", evaluate, choice, data, split=cfg.eval_split,
                       out=base / "eval", progress=cfg.progress, log=steps.say)
    steps.say(f"pipeline: S={size}: test accuracy {100 * (result['accuracy'] or 0):.1f} %, "
        f"{result['seconds_median']:.3f} s/frame")
    return {"val_accuracy": tuning["accuracy"], **result}


def _patches(cfg: PipelineConfig, base: Path, size: int, labelled: Path, split: str, steps: _Steps) -> Path:
    """One split's patches at S (made now unless a resumed run has them)."""
    from .patches import extract_patches

    pdir = base / f"patches-{split}"
    if not (cfg.resume and (pdir / "patches.json").is_file()):
        if pdir.exists():
            shutil.rmtree(pdir)
        steps.run(f"patches S={size} {split}", extract_patches, labelled, pdir, size=size, split=split,
              patch_size=cfg.patch_size, keep_empty=float(cfg.keep_empty), seed=cfg.fit.seed,
              progress=cfg.progress)
    return pdir


def _fit_config(cfg: PipelineConfig, patch_dirs: Dict[str, Path], with_val: bool, labelled: Path,
                run: Path) -> FitConfig:
    """The training template filled in for one size."""
    fit_cfg = copy.deepcopy(cfg.fit)
    fit_cfg.patches = str(patch_dirs["train"])
    fit_cfg.val = str(patch_dirs["val"]) if with_val else None
    fit_cfg.val_frames = str(labelled) if cfg.val_frames else None
    fit_cfg.out = str(run)
    fit_cfg.resume = bool(cfg.resume and (run / "last" / "state.pt").is_file())
    fit_cfg.progress = cfg.progress
    fit_cfg.command = cfg.command
    return fit_cfg


def _detector_choice(cfg: PipelineConfig, checkpoint: Path, size: int):
    from .evaluate import DetectorChoice

    return DetectorChoice(str(checkpoint), size=size)


def render_report(summary: Dict[str, Any]) -> str:
    """report.md: Table 1 with the reference beside ours, then the details per size."""
    sizes = summary["sizes"]
    rows = [dict(size=int(s), **{k: v for k, v in r.items() if k != "size"}) for s, r in sorted(sizes.items())]
    lines = [
        "# satsam pipeline report",
        "",
        f"Command: `{summary['command']}`  ",
        f"Data: {summary['data'].get('command') or summary['data'].get('given')}  ",
        f"Train/val masks: {summary['pseudo_label']} pseudo-labels ({summary['labelled']}); "
        f"empty patches kept with probability {summary['keep_empty']}  ",
        f"Commit: {summary['git_commit']}; total {summary['seconds'] / 60:.1f} min",
        "",
        "## Accuracy and runtime per input size",
        "",
        report.table1_markdown(rows, with_reference=True),
        "",
        "## Details (test split, this machine)",
        "",
        "| S | frames | accuracy | mean IoU | false alarms | misses | threshold | s/frame median | s/frame p95 "
        "| device |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]

    def pct(v):
        return "n/a" if v is None else f"{100 * v:.1f} %"

    def num(v, fmt):
        return "n/a" if v is None else format(v, fmt)

    for r in rows:
        lines.append(
            f"| {r['size']} | {r['frames']} | {pct(r['accuracy'])} | {num(r['mean_iou'], '.3f')} | "
            f"{pct(r['false_alarm_rate'])} | {pct(r['miss_rate'])} | {r['threshold']:.2f} | "
            f"{num(r['seconds_median'], '.3f')} | {num(r['seconds_p95'], '.3f')} | {r['device']} |"
        )
    lines += ["", "## Steps", "", "| step | seconds |", "| --- | --- |"]
    lines += [f"| {s['step']} | {s['seconds']} |" for s in summary["steps"]]
    lines.append("")
    return "\n".join(lines)
