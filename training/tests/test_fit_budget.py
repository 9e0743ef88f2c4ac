"""Step budgets (epochs of N steps drawn from a stream), the loss choice and the encoder's
token size: what the model search uses to compare candidates at the same budget."""

import json

import numpy as np
import pytest
import torch
from _fitdata import make_patch_dir, one_torch_thread  # noqa: F401 (autouse fixture)
from satsam_training.fit import fit, make_loss
from satsam_training.fit_config import FitConfig, FitError
from satsam_training.patch_data import StreamPermutation
from satsam_training.train_state import load_training_state

from satsam_ros.model import random_model, tiny_config


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("budgetdata")
    return {"train": make_patch_dir(root / "train", 7, seed=3, negatives=3)}


def _cfg(data, out, **kw):
    base = dict(patches=str(data["train"]), out=str(out), base="tiny", encoder_size=64, epochs=2, batch_size=4,
                lr=2e-3, progress=False)
    base.update(kw)
    return FitConfig(**base)


def test_stream_epochs_have_n_samples_and_cover_the_data_evenly():
    sampler = StreamPermutation(10, seed=5, samples_per_epoch=7)
    epochs = []
    for e in range(10):  # 70 samples = 7 whole passes over 10 items
        sampler.set_epoch(e)
        epochs.append(list(sampler))
        assert len(epochs[-1]) == len(sampler) == 7
    stream = [i for ep in epochs for i in ep]
    for k in range(7):
        assert sorted(stream[10 * k:10 * (k + 1)]) == list(range(10)), k
    again = StreamPermutation(10, seed=5, samples_per_epoch=7)
    again.set_epoch(3)
    assert list(again) == epochs[3]
    other = StreamPermutation(10, seed=6, samples_per_epoch=7)
    other.set_epoch(3)
    assert list(other) != epochs[3]


def test_steps_per_epoch_sets_the_budget_and_resumes_exactly(data, tmp_path):
    kw = dict(epochs=3, steps_per_epoch=2, augment=True, schedule="cosine", warmup_steps=1, clip_grad=1.0,
              optimizer="adamw")
    full = fit(_cfg(data, tmp_path / "full", **kw))
    assert full.steps == 6 and [h["step"] for h in full.history] == [2, 4, 6]

    def interrupt(step):
        if step == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        fit(_cfg(data, tmp_path / "cut", **kw), on_step=interrupt)
    with pytest.raises(FitError, match="steps_per_epoch"):
        fit(_cfg(data, tmp_path / "cut", resume=True, **dict(kw, steps_per_epoch=3)))
    resumed = fit(_cfg(data, tmp_path / "cut", resume=True, **kw))
    assert resumed.steps == 6
    a = load_training_state(tmp_path / "full" / "last")["model"]
    b = load_training_state(tmp_path / "cut" / "last")["model"]
    assert max(float((a[k].float() - b[k].float()).abs().max()) for k in a) <= 1e-6


def test_loss_choice(data, tmp_path):
    logits = torch.tensor([[[[4.0, -4.0], [-1.0, 0.5]]]])
    target = torch.tensor([[[[1.0, 0.0], [1.0, 0.0]]]])
    dicece, dicefocal = float(make_loss("dicece")(logits, target)), float(make_loss("dicefocal")(logits, target))
    assert np.isfinite(dicece) and np.isfinite(dicefocal) and abs(dicece - dicefocal) > 1e-3
    res = fit(_cfg(data, tmp_path / "focal", epochs=1, loss="dicefocal"))
    assert np.isfinite(res.history[0]["train_loss"])
    with pytest.raises(FitError, match="--loss must be one of"):
        fit(_cfg(data, tmp_path / "bad", loss="l2"))


def test_positive_dice_leaves_the_dice_cliff_of_empty_patches_out(data, tmp_path):
    import torch.nn.functional as F

    torch.manual_seed(0)
    logits = torch.randn(3, 1, 16, 16) * 3
    target = (torch.rand(3, 1, 16, 16) > 0.8).float()
    dicece, pos = make_loss("dicece"), make_loss("dicece-pos")
    # every patch holds a satellite: the same loss as DiceCELoss
    assert abs(float(pos(logits, target)) - float(dicece(logits, target))) < 1e-6
    # an empty patch: DiceCELoss charges it about 1 (the eps cliff) for any output short of
    # p < 1e-5 everywhere; dicece-pos charges its cross-entropy only, in the batch's mean
    target[1] = 0
    ce = float(F.binary_cross_entropy_with_logits(logits, target))
    from monai.losses import DiceLoss

    per_patch = DiceLoss(sigmoid=True, squared_pred=True, reduction="none")(logits, target).reshape(3)
    assert float(per_patch[1]) > 0.99
    assert abs(float(pos(logits, target)) - (float(per_patch[0] + per_patch[2]) / 3 + ce)) < 1e-6
    assert abs(float(dicece(logits, target)) - float(pos(logits, target)) - float(per_patch[1]) / 3) < 1e-6
    # an all-empty batch: the cross-entropy alone, and it still pushes the logits down
    empty = torch.zeros_like(target)
    x = logits.clone().requires_grad_(True)
    loss = pos(x, empty)
    assert abs(float(loss.detach()) - float(F.binary_cross_entropy_with_logits(logits, empty))) < 1e-6
    loss.backward()
    assert bool((x.grad > 0).all())
    res = fit(_cfg(data, tmp_path / "pos", epochs=1, loss="dicece-pos"))
    assert np.isfinite(res.history[0]["train_loss"])
    assert json.loads((res.checkpoint / "satsam.json").read_text())["provenance"]["settings"]["loss"] == "dicece-pos"


def test_finer_encoder_tokens_give_a_finer_mask_grid():
    from satsam_ros.model import make_patch_module

    x = torch.zeros(1, 3, 64, 64)
    coarse = make_patch_module(random_model(tiny_config(image_size=64), seed=0))
    fine = make_patch_module(random_model(tiny_config(image_size=64, patch=8), seed=0))
    with torch.no_grad():
        assert coarse(x).shape[-1] == 16 and fine(x).shape[-1] == 32
