"""The unchanged `fit` command under `accelerate launch` with two CPU processes (gloo).

Two processes with batch 2 each see the same global batches (accelerate shards the
seeded permutation) as one process with batch 4, and DDP averages their gradients,
so both runs must reach the same weights (up to float rounding).
"""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from _fitdata import make_patch_dir, one_torch_thread  # noqa: F401 (autouse fixture)
from satsam_training.fit import fit
from satsam_training.fit_config import FitConfig
from satsam_training.train_state import load_training_state

from satsam_ros.runtime import open_detector

ACCELERATE = Path(sys.executable).with_name("accelerate")


@pytest.mark.skipif(not ACCELERATE.exists() and shutil.which("accelerate") is None,
                    reason="the accelerate launcher is not installed in this environment")
def test_two_cpu_processes_train_like_one(tmp_path):
    patches = make_patch_dir(tmp_path / "p", 6, seed=0, negatives=2)
    out = tmp_path / "ddp"
    launcher = str(ACCELERATE) if ACCELERATE.exists() else shutil.which("accelerate")
    env = dict(os.environ, HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1", CUDA_VISIBLE_DEVICES="")
    cmd = [launcher, "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1", "--mixed_precision",
           "no", "--dynamo_backend", "no", "--main_process_port", "0",
           "-m", "satsam_training.cli", "fit", "--patches", str(patches), "--out", str(out), "--base", "tiny",
           "--encoder-size", "64", "--epochs", "2", "--batch-size", "2", "--lr", "2e-3", "--no-progress"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads((out / "fit.json").read_text())
    assert summary["processes"] == 2 and summary["steps"] == 4  # 8 patches / (2 x 2) per step, 2 epochs

    # a valid checkpoint: the Detector loads it and runs
    det = open_detector(str(out / "model"), backend="torch", device="cpu", size=512)
    assert det.backend.input_size == 64
    assert det.detect(torch.zeros(64, 80, dtype=torch.uint8).numpy()).mask.shape == (64, 80)

    single = fit(FitConfig(patches=str(patches), out=str(tmp_path / "one"), base="tiny", encoder_size=64, epochs=2,
                           batch_size=4, lr=2e-3, progress=False))
    assert single.steps == 4
    a = load_training_state(out / "last")["model"]
    b = load_training_state(tmp_path / "one" / "last")["model"]
    # Weights after 4 AdamW steps, two processes (DDP all-reduces two half-batch
    # gradients) against one (one batch of 4): the same maths with the gradients summed
    # in another order. An AdamW step moves a weight by about lr (2e-3) at most, and the
    # two runs' steps differ by the float32 relative error of the gradients (the 1e-3 of
    # satsam_ros.core.parity): 4 steps x 2e-3 x 1e-3 = 8e-6; 1e-4 leaves 12x for Adam's
    # division by sqrt(v), which magnifies the relative error of small gradients.
    # Measured 4e-7. A real bug (a shard seen twice, a batch dropped) moves weights by
    # about lr per step.
    worst = max(float((a[k].float() - b[k].float()).abs().max()) for k in a)
    assert worst < 1e-4, worst
    # epoch losses: means of per-patch losses (about 1.6) summed in another order,
    # relative error ~1e-7; measured equal to the last digit
    assert [h["train_loss"] for h in summary["history"]] == pytest.approx(
        [h["train_loss"] for h in single.history], abs=1e-5)
