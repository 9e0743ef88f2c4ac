"""scripts/train_gpu.sh on the CPU with a tiny budget (SMOKE=1): every step of the GPU
recipe runs (data on all cores, the step probe, training the EdgeTAM family with the
presence BCE, per-size tuning with the presence gate and the cascade, the latency bench)
and OUT holds what the GPU run sends back, each file under 16 MiB. Beside it, the other
recipe scripts: every one executable, the search's missing cost run named, and
scripts/train_v3.sh's commands (DRY=1) for MINE, the winner's presence weight and TEACHER."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

from satsam_ros.core.meta import SatsamMeta

REPO = Path(__file__).resolve().parents[2]


def test_gpu_script_runs_end_to_end_with_a_tiny_budget(tmp_path):
    out = tmp_path / "out"
    env = dict(os.environ, SMOKE="1", MINUTES="0.05", PY=sys.executable, WORK=str(tmp_path / "work"),
               WHEELS=str(tmp_path / "no-wheels"), OMP_NUM_THREADS="1")
    proc = subprocess.run(["bash", str(REPO / "scripts" / "train_gpu.sh"), str(out)], env=env, cwd=str(tmp_path),
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    files = sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file())
    assert files == ["bench.json", "bench.md", "curves.png", "model/config.json", "model/model.safetensors",
                     "model/satsam.json", "train_gpu.log", "train_log.csv"]
    assert len(files) <= 8 and all((out / f).stat().st_size < 16 * 2**20 for f in files)
    meta = SatsamMeta.read(out / "model")
    assert sorted(meta.postprocess) == ["1024", "2048", "512"]  # tuned at every size
    # the presence gate tuned at every size, the cascade (on or off) above the coarse size
    assert all("min_object_score" in meta.postprocess[s] for s in ("512", "1024", "2048"))
    assert "cascade" not in meta.postprocess["512"] and all("cascade" in meta.postprocess[s] for s in ("1024", "2048"))
    # the search v3 winner's family: EdgeTAM on a timm backbone, trained with the presence BCE
    assert json.loads((out / "model" / "config.json").read_text())["model_type"] == "edgetam"
    log = (out / "train_gpu.log").read_text()
    steps = re.search(r"training (\d+) steps", log)
    assert steps and int(steps.group(1)) >= 20 and "done:" in log, log[-2000:]  # 20 is the floor of the step count
    rows = (out / "train_log.csv").read_text().strip().splitlines()
    assert len(rows) == 1 + 8  # header + 8 epochs
    bench = json.loads((out / "bench.json").read_text())
    row = bench["rows"]["tiny-sam2/512/torch/fast"]  # the latency report of the bench command, for the asked model
    assert row["frames"] == 1 and row["latency_s"]["median"] > 0 and row["patches"] > 0


def test_every_shell_script_is_committed_executable():
    # the docs call them as `scripts/NAME.sh ...`; a 644 file answers "Permission denied"
    listing = subprocess.run(["git", "ls-files", "-s", "scripts"], cwd=str(REPO), capture_output=True, text=True,
                             check=True).stdout.splitlines()
    scripts = {line.split()[-1]: line.split()[0] for line in listing if line.endswith(".sh")}
    assert "scripts/model_search_v3.sh" in scripts and "scripts/train_gpu.sh" in scripts
    assert {name: mode for name, mode in scripts.items() if mode != "100755"} == {}


def test_search_run_without_a_cost_run_names_what_is_missing(tmp_path):
    env = dict(os.environ, WORK=str(tmp_path / "work"), PY=sys.executable)
    env.update(STEPS="5000")  # train_v3.sh's long-run length, inherited: not the search budget
    env.pop("BUDGET_STEPS", None)
    proc = subprocess.run([str(REPO / "scripts" / "model_search_v3.sh"), "run", "v3-repvit"], env=env,
                          cwd=str(REPO), capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and "cost.json" in proc.stderr and "BUDGET_STEPS=N" in proc.stderr, proc.stderr


def _v3_commands(tmp_path, presence_weight, **env_extra):
    """scripts/train_v3.sh with DRY=1: the commands it would run, one per line."""
    work = tmp_path / "work"
    (work / "search" / "v3-x" / "model").mkdir(parents=True, exist_ok=True)
    (work / "search" / "v3-x" / "model" / "satsam.json").write_text(
        json.dumps({"provenance": {"presence_weight": presence_weight}}))
    env = dict(os.environ, DRY="1", WORK=str(work), WINNER="v3-x", STEPS="60", EPOCHS="6", PY=sys.executable)
    for key in ("MINE", "TEACHER", "DISTILL_WEIGHT", "LONG", "LONG2_STEPS", "SHIP", "FROM", "LOSS", "LR",
                "PRESENCE_WEIGHT"):
        env.pop(key, None)
    env.update(env_extra)
    proc = subprocess.run(["bash", str(REPO / "scripts" / "train_v3.sh")], env=env, cwd=str(REPO),
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return work, proc.stdout.splitlines()


def test_v3_recipe_long_run_takes_the_winners_presence_weight_and_mine_0(tmp_path):
    work, lines = _v3_commands(tmp_path, 0.0, MINE="0")
    fits = [line for line in lines if line.startswith("satsam-train fit ")]
    assert len(fits) == 1 and not any(" mine " in line for line in lines)
    fit = fits[0]
    assert f"--out {work}/long " in fit and f"--base {work}/search/v3-x/model " in fit
    assert "--presence-weight 0.0" in fit and "hard512" not in fit and "--teacher" not in fit
    assert "--epochs 6 --steps-per-epoch 10 " in fit
    evals = [line for line in lines if line.startswith("satsam-train evaluate ")]
    assert len(evals) == 9 and all(f"{work}/long/model" in line for line in evals)
    assert not (work / "long").exists()  # nothing ran


def test_v3_recipe_distils_into_its_own_directory_with_the_mined_patches(tmp_path):
    partial = tmp_path / "work" / "hard512" / "partial.png"  # what an interrupted mining run left
    partial.parent.mkdir(parents=True)
    partial.write_bytes(b"x")
    work, lines = _v3_commands(tmp_path, 1.0, TEACHER="builtin", DISTILL_WEIGHT="2", LONG="student")
    assert partial.exists()  # DRY=1 touches nothing (a real run clears it and mines again)
    mines = [line for line in lines if line.startswith("satsam-train mine ")]
    assert [line.split("--size ")[1].split()[0] for line in mines] == ["512", "1024", "2048"]
    fit = next(line for line in lines if line.startswith("satsam-train fit "))
    assert f"{work}/hard512 {work}/hard1024 {work}/hard2048 --val" in fit
    assert "--presence-weight 1.0" in fit and "--teacher builtin --distill-weight 2" in fit
    assert f"--out {work}/student " in fit
    evals = [line for line in lines if line.startswith("satsam-train evaluate ")]
    assert len(evals) == 9 and all(f"{work}/student/model" in line for line in evals)


def test_v3_recipe_from_a_model_skips_search_tuning_and_mining_and_takes_its_loss(tmp_path):
    base = tmp_path / "base"
    base.mkdir()
    (base / "satsam.json").write_text(json.dumps({"provenance": {"presence_weight": 0.0}}))
    work, lines = _v3_commands(tmp_path, 1.0, FROM=str(base), LOSS="dicece-pos", LONG="pos", LR="2e-4")
    assert not any(" mine " in line or "search/v3-x" in line for line in lines)  # no search run, tuning, mining
    fits = [line for line in lines if line.startswith("satsam-train fit ")]
    assert len(fits) == 1
    fit = fits[0]
    assert f"--base {base} " in fit and f"--out {work}/pos " in fit and "hard512" not in fit
    assert "--presence-weight 0.0" in fit  # the base's, not the winner's 1.0
    assert "--loss dicece-pos" in fit and "--lr 2e-4 " in fit
    evals = [line for line in lines if line.startswith("satsam-train evaluate ")]
    assert len(evals) == 9 and all(f"{work}/pos/model" in line for line in evals)
    _, default = _v3_commands(tmp_path, 1.0, MINE="0")
    assert "--loss dicece " in next(line for line in default if line.startswith("satsam-train fit "))


def test_v3_recipe_from_a_model_mines_with_that_model_into_the_runs_own_directories(tmp_path):
    base = tmp_path / "base"
    base.mkdir()
    (base / "satsam.json").write_text(json.dumps({"provenance": {"presence_weight": 0.0}}))
    work, lines = _v3_commands(tmp_path, 1.0, FROM=str(base), MINE="1", PRESENCE_WEIGHT="1", LOSS="dicece-pos",
                               LONG="pres")
    mines = [line for line in lines if line.startswith("satsam-train mine ")]
    assert len(mines) == 3 and all(line.startswith(f"satsam-train mine {base} ") for line in mines)
    assert [line.split("--out ")[1].split()[0] for line in mines] == [
        f"{work}/pres-hard512", f"{work}/pres-hard1024", f"{work}/pres-hard2048"]  # not the winner's hardS
    assert not any("search/v3-x" in line for line in lines)  # still no search run or its tuning
    fit = next(line for line in lines if line.startswith("satsam-train fit "))
    assert f"{work}/pres-hard512 {work}/pres-hard1024 {work}/pres-hard2048 --val" in fit
    assert "--presence-weight 1 " in fit and f"--base {base} " in fit  # the override, not the base's 0.0
