"""The resumable state of a training run (``last/state.pt``): written atomically, read
back, and checked against the settings of the run that continues it."""

from __future__ import annotations

import dataclasses
import json
import os
import random
import shutil
from pathlib import Path
from typing import Any, Dict

import numpy as np

from .fit_config import FitConfig, FitError

STATE_FILE = "state.pt"
STATE_FORMAT = 1
# Settings a resumed run must share with the run it continues (others may change).
RESUME_LOCKED = (
    "patches", "base", "base_config", "encoder_size", "train", "batch_size", "lr", "optimizer",
    "weight_decay", "schedule", "warmup_steps", "seed", "loss_resolution", "augment", "steps_per_epoch", "loss",
    "teacher", "distill_weight",
)


def rng_states() -> Dict[str, Any]:
    import torch

    states = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def set_rng_states(states: Dict[str, Any]) -> None:
    import torch

    random.setstate(states["python"])
    np.random.set_state(states["numpy"])
    torch.set_rng_state(states["torch"])
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])


def save_training_state(directory: Path, state: Dict[str, Any]) -> Path:
    """Write ``state`` (torch-serialisable) to ``directory/state.pt`` atomically: a fresh
    directory is built beside it, then renamed over the old one."""
    import tempfile

    import torch

    directory = Path(directory)
    directory.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{directory.name}.tmp-", dir=str(directory.parent)))
    old = directory.parent / f".{directory.name}.old-{os.getpid()}"
    try:
        torch.save(state, tmp / STATE_FILE)
        summary = {k: state[k] for k in ("epoch", "step", "step_in_epoch", "complete_epochs", "format")}
        (tmp / "trainer.json").write_text(json.dumps(summary, indent=2) + "\n")
        if directory.exists():
            os.replace(directory, old)
        os.replace(tmp, directory)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
        if old.exists():
            shutil.rmtree(old, ignore_errors=True)
    return directory


def load_training_state(directory: Path) -> Dict[str, Any]:
    import torch

    path = Path(directory) / STATE_FILE
    if not path.is_file():
        raise FitError(f"--resume: no training state at {path} (nothing to resume)")
    state = torch.load(path, map_location="cpu", weights_only=False)
    if int(state.get("format", 0)) != STATE_FORMAT:
        raise FitError(f"--resume: {path} has state format {state.get('format')}, expected {STATE_FORMAT}")
    return state


def check_resume(saved: Dict[str, Any], cfg: FitConfig, processes: int) -> None:
    # a setting added after the run was saved has its default there (a run saved before
    # --teacher existed trained without one)
    config = {**{f.name: f.default for f in dataclasses.fields(FitConfig) if f.name in RESUME_LOCKED
                 and f.default is not dataclasses.MISSING}, **saved["config"]}
    diffs = [
        f"{key}: saved {config.get(key)!r}, now {getattr(cfg, key)!r}"
        for key in RESUME_LOCKED
        if config.get(key) != getattr(cfg, key)
    ]
    if cfg.schedule == "cosine" and config.get("epochs") != cfg.epochs:
        diffs.append(f"epochs: saved {config.get('epochs')}, now {cfg.epochs} (the cosine schedule depends on it)")
    if saved.get("processes", processes) != processes:
        diffs.append(f"processes: saved {saved.get('processes')}, now {processes} (the global batch depends on it)")
    if diffs:
        raise FitError("--resume: the run's settings changed: " + "; ".join(diffs))
