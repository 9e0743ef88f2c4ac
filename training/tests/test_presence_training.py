"""The presence decision on the training side: the BCE on the decoder's object score
(``fit --presence-weight``), its validation metrics, and the presence gate tuned with
the other post-processing (``tune-threshold --min-object-score``) and stored per size.

Runs use E = 64 and one thread.
"""

import json

import numpy as np
import pytest
import torch
from _fitdata import make_coco_dir, make_patch_dir, one_torch_thread  # noqa: F401 (autouse fixture)
from satsam_training.fit import fit
from satsam_training.fit_config import FitConfig, FitError
from satsam_training.validation import patch_loss, presence_targets, ranking_auc

from satsam_ros.core.meta import SatsamMeta
from satsam_ros.model import random_model, save_checkpoint
from satsam_ros.runtime import open_detector
from satsam_ros.sam2_family import tiny_sam2_config


def test_presence_targets_and_loss():
    y = torch.zeros(3, 1, 8, 8)
    y[1, 0, 2, 3] = 0.25  # one partly covered pixel makes a patch positive
    y[2, 0] = 1.0
    assert presence_targets(y).tolist() == [0.0, 1.0, 1.0]
    logits = torch.zeros(3, 4, 4)
    scores = torch.tensor([-3.0, 2.0, 0.0])

    def mask_loss(a, b):
        return (a - b).abs().mean()

    total, mask, bce = patch_loss((logits, scores), y, mask_loss, presence_weight=2.0)
    want_bce = torch.nn.functional.binary_cross_entropy_with_logits(scores, torch.tensor([0.0, 1.0, 1.0]))
    assert float(bce) == pytest.approx(float(want_bce))
    assert float(total) == pytest.approx(float(mask) + 2.0 * float(want_bce))
    assert float(mask) == pytest.approx(float(y.mean()))  # zero logits, upsampled to the target's 8 x 8
    # weight 0, or a module without scores: the mask loss alone
    for out, w in (((logits, scores), 0.0), (logits, 1.0)):
        total, mask, bce = patch_loss(out, y, mask_loss, w)
        assert bce is None and float(total) == float(mask)


def test_ranking_auc_matches_the_pairwise_definition():
    rng = np.random.default_rng(0)
    scores = np.round(rng.random(60), 1)  # many ties
    labels = rng.random(60) < 0.4
    pos, neg = scores[labels], scores[~labels]
    pairs = [(p > n) + 0.5 * (p == n) for p in pos for n in neg]
    assert ranking_auc(scores, labels) == pytest.approx(np.mean(pairs))
    assert ranking_auc([0.1, 0.2], [True, True]) is None


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("presence")
    return {"train": make_patch_dir(root / "train", 16, seed=0, negatives=16),
            "val": make_patch_dir(root / "val", 6, seed=1, negatives=6, split="val")}


def _cfg(data, out, **kw):
    base = dict(patches=str(data["train"]), val=str(data["val"]), out=str(out), base="tiny-sam2",
                base_config={"widths": [16, 32, 64, 128], "blocks": [1, 1, 2, 1], "heads": [1, 1, 2, 2],
                             "fpn": 32},
                encoder_size=64, epochs=3, batch_size=8, lr=3e-3, warmup_steps=4, clip_grad=1.0,
                optimizer="adamw", progress=False, augment=True)
    base.update(kw)
    return FitConfig(**base)


def test_fit_trains_the_object_score_by_default_for_sam2(data, tmp_path):
    """A tiny SAM 2 on patches where half hold a bright rectangle: with the BCE term (the
    default for a model with the head) the object score learns to tell them apart on
    the validation patches; the run records the weight and the presence metrics."""
    res = fit(_cfg(data, tmp_path / "run", epochs=6))
    last = res.history[-1]
    assert last["val_presence_auc"] > 0.9, [h.get("val_presence_auc") for h in res.history]
    assert last["val_presence_accuracy"] >= 0.75
    assert last["val_loss"] == pytest.approx(last["val_mask_loss"] + last["val_presence_bce"], rel=1e-5)
    meta = json.loads((tmp_path / "run" / "model" / "satsam.json").read_text())
    assert meta["provenance"]["presence_weight"] == 1.0
    assert not meta["provenance"]["data"]["patches"][0].startswith("/work/main/")  # outside the repo: absolute
    det = open_detector(str(tmp_path / "run" / "model"), backend="torch", device="cpu", size=512)
    assert det.backend.has_presence


def test_presence_weight_zero_trains_masks_only_and_sam_has_no_head(data, tmp_path):
    res = fit(_cfg(data, tmp_path / "off", presence_weight=0.0, epochs=1))
    assert "val_presence_auc" not in res.history[-1] and res.history[-1]["val_loss"] > 0
    with pytest.raises(FitError, match="has no object-score head"):
        fit(FitConfig(patches=str(data["train"]), out=str(tmp_path / "sam"), base="tiny", encoder_size=64,
                      epochs=1, presence_weight=1.0, progress=False))
    with pytest.raises(FitError, match="--presence-weight must be >= 0"):
        fit(_cfg(data, tmp_path / "neg", presence_weight=-1.0))


def test_repo_relative_provenance_paths():
    from satsam_training.report import REPO_ROOT, repo_path

    assert repo_path(REPO_ROOT / "runs" / "p512") == "runs/p512"
    assert repo_path("/tmp/elsewhere") == "/tmp/elsewhere"


def test_tune_threshold_sweeps_the_presence_gate_and_stores_it(tmp_path, capsys):
    """A random tiny SAM 2 (its presence probabilities lie between 0.61 and 0.74 on these
    frames): the sweep tries every gate, a gate above all scores silences every patch
    (nothing published anywhere), the chosen gate is stored for the size, and the
    Detector then applies it exactly as the sweep scored it."""
    from satsam_training.cli import main

    model = random_model(tiny_sam2_config(image_size=64, widths=(16, 32, 64, 128), blocks=(1, 1, 2, 1),
                                          heads=(1, 1, 2, 2), fpn=32), seed=3, fan_in=True)
    ckpt = save_checkpoint(model, SatsamMeta(threshold=0.5), tmp_path / "ckpt")
    data = make_coco_dir(tmp_path / "coco", splits=("val",), count=6, empty=2, height=96, width=120)
    assert main(["tune-threshold", str(ckpt), "--data", str(data), "--size", "512", "--backend", "torch",
                 "--min-object-score", "0", "0.65", "0.7", "0.8", "--json", "--no-progress"]) == 0
    result = json.loads(capsys.readouterr().out)
    gates = sorted({r["min_object_score"] for r in result["rows"]})
    assert gates == [0.0, 0.65, 0.7, 0.8]
    silenced = [r for r in result["rows"] if r["min_object_score"] == 0.8]
    assert all(r["false_alarms"] == 0 and r["misses"] == 4 for r in silenced)  # every patch gated
    open_gate = [r for r in result["rows"] if r["min_object_score"] == 0.0 and r["threshold"] == 0.05]
    assert open_gate and open_gate[0]["misses"] < 4  # without the gate the low threshold finds something
    best = result["best"]
    stored = json.loads((ckpt / "satsam.json").read_text())["postprocess"]["512"]
    assert stored["min_object_score"] == best["min_object_score"] and stored["threshold"] == best["threshold"]
    # the Detector with the stored setting scores what the sweep said
    from satsam_training.evaluate import DetectorChoice, evaluate

    got = evaluate(DetectorChoice(str(ckpt), size=512, backend="torch", device="cpu"), data, split="val",
                   progress=False, warmup=0, examples=0)
    assert got["accuracy"] == best["accuracy"] and got["false_alarms"] == best["false_alarms"]
    assert got["postprocess"]["min_object_score"] == best["min_object_score"]
    assert sum(best["error_budget"]["counts"].values()) == 6
