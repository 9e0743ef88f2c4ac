"""Knowledge distillation in ``fit`` (``--teacher DIR --distill-weight W``): the model
trained learns a trained checkpoint's mask probabilities on the same augmented patches
beside the labels' loss, the way to a cheaper student of the shipped model.

Runs use E = 64 and one thread.
"""

import json

import pytest
import torch
from _fitdata import make_patch_dir, one_torch_thread  # noqa: F401 (autouse fixture)
from satsam_training.cli import main
from satsam_training.fit import fit
from satsam_training.fit_config import FitConfig, FitError
from satsam_training.patch_data import PatchDataset
from satsam_training.validation import distill_loss

from satsam_ros.core.meta import SatsamMeta
from satsam_ros.model import make_patch_module, random_model, save_checkpoint
from satsam_ros.sam2_family import tiny_sam2_config

SMALL = {"widths": [16, 32, 64, 128], "blocks": [1, 1, 2, 1], "heads": [1, 1, 2, 2], "fpn": 32}


def test_distill_loss_is_least_where_the_student_agrees_with_the_teacher():
    teacher = torch.tensor([[[4.0, -4.0], [0.0, 2.0]]])  # N x m x m, upsampled to the loss's T x T
    same = distill_loss(teacher.clone(), teacher, 4)
    for other in (torch.zeros_like(teacher), -teacher, teacher + 1.0):
        assert float(distill_loss(other, teacher, 4)) > float(same)
    # soft BCE against the teacher's probabilities, averaged over every pixel
    p = torch.sigmoid(teacher)
    want = torch.nn.functional.binary_cross_entropy_with_logits(torch.zeros(1, 1, 2, 2), p[:, None])
    assert float(distill_loss(torch.zeros(1, 2, 2), teacher, 2)) == pytest.approx(float(want))
    # the gradient reaches the student only
    student = torch.zeros(1, 2, 2, requires_grad=True)
    t = teacher.clone().requires_grad_(True)
    distill_loss(student, t, 4).backward()
    assert student.grad.abs().sum() > 0 and t.grad is None


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("distill")
    teacher = random_model(tiny_sam2_config(image_size=64, **{k: tuple(v) if isinstance(v, list) else v
                                                             for k, v in SMALL.items()}), seed=3, fan_in=True)
    return {"train": make_patch_dir(root / "train", 12, seed=0, negatives=4),
            "teacher": save_checkpoint(teacher, SatsamMeta(threshold=0.5), root / "teacher"), "model": teacher}


def _cfg(setup, out, **kw):
    base = dict(patches=str(setup["train"]), out=str(out), base="tiny-sam2", base_config=SMALL, encoder_size=64,
                epochs=4, batch_size=8, lr=3e-3, warmup_steps=2, clip_grad=1.0, optimizer="adamw", progress=False,
                presence_weight=0.0, seed=1)
    base.update(kw)
    return FitConfig(**base)


def _gap(model, teacher, patches) -> float:
    """Mean |p_student - p_teacher| over the training patches' inputs."""
    x = torch.stack([PatchDataset(patches, encoder_size=64)[i][0] for i in range(16)])
    with torch.no_grad():
        s = make_patch_module(model.eval())(x)
        t = make_patch_module(teacher.eval())(x)
    return float((torch.sigmoid(s) - torch.sigmoid(t)).abs().mean())


def test_a_distilled_student_moves_toward_its_teacher(setup, tmp_path):
    """Same seed, data and steps: the run with the teacher ends closer to the teacher's
    probabilities than the run on the labels alone, and records its teacher."""
    plain = fit(_cfg(setup, tmp_path / "plain"))
    taught = fit(_cfg(setup, tmp_path / "taught", teacher=str(setup["teacher"]), distill_weight=20.0))
    gap_plain = _gap(plain.model, setup["model"], setup["train"])
    gap_taught = _gap(taught.model, setup["model"], setup["train"])
    assert gap_taught < 0.7 * gap_plain, (gap_taught, gap_plain)
    prov = json.loads((taught.checkpoint / "satsam.json").read_text())["provenance"]
    assert prov["teacher"]["weight"] == 20.0 and prov["teacher"]["model"].endswith("teacher")
    assert json.loads((plain.checkpoint / "satsam.json").read_text())["provenance"]["teacher"] is None


def test_a_teacher_of_another_encoder_size_is_refused_by_name(setup, tmp_path):
    with pytest.raises(FitError, match=r"--teacher .*E = 64, the model trained E = 128"):
        fit(_cfg(setup, tmp_path / "run", encoder_size=128, teacher=str(setup["teacher"]), epochs=1))
    with pytest.raises(FitError, match="--teacher 'no-such-model'"):
        fit(_cfg(setup, tmp_path / "run2", teacher="no-such-model", epochs=1))
    with pytest.raises(FitError, match="--distill-weight must be >= 0; got -1"):
        _cfg(setup, tmp_path / "run3", teacher=str(setup["teacher"]), distill_weight=-1.0).resolved()


def test_fit_command_takes_the_teacher(setup, tmp_path, capsys):
    out = tmp_path / "cli"
    assert main(["fit", "--patches", str(setup["train"]), "--out", str(out), "--base", "tiny-sam2",
                 "--base-config", "widths=16,32,64,128", "blocks=1,1,2,1", "heads=1,1,2,2", "fpn=32",
                 "--encoder-size", "64", "--epochs", "1", "--batch-size", "8", "--presence-weight", "0",
                 "--teacher", str(setup["teacher"]), "--distill-weight", "2", "--no-progress"]) == 0
    prov = json.loads((out / "model" / "satsam.json").read_text())["provenance"]
    assert prov["teacher"]["weight"] == 2.0 and "--teacher" in prov["command"]


def test_resume_checks_the_teacher_and_keeps_runs_saved_before_it(setup, tmp_path):
    from satsam_training.train_state import check_resume

    cfg = _cfg(setup, tmp_path / "r").resolved()
    old = {k: v for k, v in vars(cfg).items() if k not in ("teacher", "distill_weight")}  # saved before --teacher
    check_resume({"config": old}, cfg, 1)  # resumes: no teacher then, none now
    with pytest.raises(FitError, match="teacher: saved None, now '.*teacher'"):
        check_resume({"config": old}, _cfg(setup, tmp_path / "r", teacher=str(setup["teacher"])).resolved(), 1)
    taught = dict(vars(cfg), teacher=str(setup["teacher"]), distill_weight=2.0)
    with pytest.raises(FitError, match="distill_weight: saved 2.0, now 1.0"):
        check_resume({"config": taught}, _cfg(setup, tmp_path / "r", teacher=str(setup["teacher"])).resolved(), 1)


def test_a_builtin_teacher_is_recorded_by_its_name(tmp_path):
    """builtin (E = 256) teaching a tiny SAM 2 at E = 256: provenance names the spec, not a path."""
    data = make_patch_dir(tmp_path / "train", 4, seed=0, negatives=2)
    res = fit(FitConfig(patches=str(data), out=str(tmp_path / "run"), base="tiny-sam2", base_config=SMALL,
                        encoder_size=256, epochs=1, steps_per_epoch=1, batch_size=2, lr=1e-3, progress=False,
                        presence_weight=0.0, teacher="builtin"))
    prov = json.loads((res.checkpoint / "satsam.json").read_text())["provenance"]
    assert prov["teacher"] == {"model": "builtin", "weight": 1.0}
