"""Training smoke test, checkpoint round trip, resume after an interrupt, atomic state.

All runs use the tiny random SAM with a 64 x 64 encoder input (patches of 256 are
resized to 64, as the Detector would), so a step takes a fraction of a second.
"""

import json

import cv2
import numpy as np
import pytest
import torch
from _fitdata import make_coco_dir, make_patch_dir, one_torch_thread  # noqa: F401 (autouse fixture)
from satsam_training.fit import fit, lr_factor
from satsam_training.fit_config import FitConfig, FitError, parse_base_config
from satsam_training.patch_data import PatchDataset
from satsam_training.train_state import load_training_state, save_training_state
from satsam_training.validation import auto_select, detector_for, score

from satsam_ros.core.backend import Backend
from satsam_ros.core.detector import Detector
from satsam_ros.core.parity import MAX_TIE_SHARE, mask_ties, probability_tolerance
from satsam_ros.core.synthetic import synthetic_frame
from satsam_ros.model import load_model
from satsam_ros.runtime import open_detector


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("fitdata")
    return {
        "train": make_patch_dir(root / "train", 12, seed=0, negatives=4),
        "val": make_patch_dir(root / "val", 3, seed=1, negatives=1, split="val"),
        "frames": make_coco_dir(root / "coco", splits=("val",), count=2, empty=1),
    }


def _cfg(data, out, **kw):
    base = dict(patches=str(data["train"]), val=str(data["val"]), out=str(out), base="tiny", encoder_size=64,
                epochs=2, batch_size=4, lr=2e-3, progress=False)
    base.update(kw)
    return FitConfig(**base)


def test_smoke_loss_decreases_and_checkpoint_matches_memory(data, tmp_path):
    out = tmp_path / "run"
    lines = []
    res = fit(_cfg(data, out, epochs=3, val_frames=str(data["frames"]), command="satsam-train fit (smoke test)"),
              log=lines.append)
    losses = [h["train_loss"] for h in res.history]
    assert len(losses) == 3 and losses[-1] < losses[0], losses
    assert res.history[-1]["val_loss"] < res.history[0]["val_loss"]
    for key in ("val_patch_accuracy", "val_frame_accuracy", "val_frame_mean_iou"):
        assert key in res.history[0]
    assert any("tensorboard" in line for line in lines) or (out / "tensorboard").is_dir()
    for name in ("model/config.json", "model/model.safetensors", "model/satsam.json", "last/state.pt",
                 "train_log.csv", "curves.png", "fit.json"):
        assert (out / name).is_file(), name
    assert len((out / "train_log.csv").read_text().strip().splitlines()) == 4  # header + 3 epochs

    meta = json.loads((out / "model" / "satsam.json").read_text())
    assert meta["size"] == 512 and meta["patch_size"] == 256 and meta["encoder_input_size"] == 64
    assert meta["prompt_policy"] == "full_box" and meta["threshold"] == pytest.approx(0.65)
    prov = meta["provenance"]
    assert prov["seed"] == 0 and prov["epoch"] == res.best_epoch and prov["data"]["patches_count"] == 16
    assert prov["data"]["patches"] == [str(data["train"].resolve())] and prov["data"]["patches_size"] == [512]
    assert "torch" in prov["versions"] and prov["command"] == "satsam-train fit (smoke test)"

    # The saved checkpoint, loaded the way the node loads it, gives what the in-memory model gives.
    frame, _ = synthetic_frame(7, 200, 240)
    detector = detector_for(res.model, res.meta, 512, 0.5)
    largest = _record_largest_logit(detector)
    in_memory = detector.detect(frame)
    loaded = open_detector(str(out / "model"), backend="torch", device="cpu", size=512, threshold=0.5).detect(frame)
    # The node's Detector may run a fused attention kernel (another float32 summation
    # order): probabilities agree to satsam_ros.core.parity's bound (a quarter of 1e-3 of
    # the largest |logit|), masks are equal except at ties (probability within that bound
    # of the threshold), and ties are a small share of the frame.
    tolerance = probability_tolerance(largest[0])
    np.testing.assert_allclose(loaded.probability, in_memory.probability, atol=tolerance, rtol=0)
    counts = mask_ties(in_memory.probability, 0.5, in_memory.mask, loaded.mask, tolerance)
    assert counts.flipped_outside_ties == 0 and counts.tie_share <= MAX_TIE_SHARE, counts  # measured 13 of 48,000
    assert 0 < np.count_nonzero(in_memory.mask) < in_memory.mask.size, "the comparison needs foreground and background"


def _record_largest_logit(detector):
    """Keep (in a one-element list) the largest |logit| the detector's backend returns:
    the scale of the parity bounds."""
    largest = [0.0]
    infer = detector.backend.infer

    def recording(batch):
        out = infer(batch)
        largest[0] = max(largest[0], float(np.abs(out).max()))
        return out

    detector.backend.infer = recording
    return largest


def _state(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def test_resume_after_interrupt_gives_the_same_weights(data, tmp_path):
    # 16 patches / batch 5 -> 4 steps per epoch (last batch short); augmentation and a
    # warm-up + cosine schedule with clipping, so every piece of state matters.
    kw = dict(epochs=2, batch_size=5, augment=True, schedule="cosine", warmup_steps=3, clip_grad=1.0,
              optimizer="adamw", weight_decay=0.01, val=None)
    full = fit(_cfg(data, tmp_path / "full", **kw))

    def interrupt(step):
        if step == 6:  # mid epoch 2
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        fit(_cfg(data, tmp_path / "cut", **kw), on_step=interrupt)
    saved = load_training_state(tmp_path / "cut" / "last")
    assert (saved["epoch"], saved["step"], saved["step_in_epoch"]) == (1, 6, 2)

    with pytest.raises(FitError, match="already holds a training run"):
        fit(_cfg(data, tmp_path / "cut", **kw))
    with pytest.raises(FitError, match="settings changed: lr"):
        fit(_cfg(data, tmp_path / "cut", resume=True, **dict(kw, lr=1e-3)))
    with pytest.raises(FitError, match="epochs: saved 2, now 3 .the cosine schedule"):
        fit(_cfg(data, tmp_path / "cut", resume=True, **dict(kw, epochs=3)))
    resumed = fit(_cfg(data, tmp_path / "cut", resume=True, **kw))

    assert resumed.steps == full.steps == 8
    a = load_training_state(tmp_path / "full" / "last")["model"]
    b = load_training_state(tmp_path / "cut" / "last")["model"]
    assert a.keys() == b.keys()
    worst = max(float((a[k].float() - b[k].float()).abs().max()) for k in a)
    assert worst <= 1e-6, worst
    assert [round(h["train_loss"], 6) for h in full.history] == [round(h["train_loss"], 6) for h in resumed.history]
    sa, sb = _state(full.model), _state(resumed.model)
    assert all(torch.allclose(sa[k], sb[k], atol=1e-6) for k in sa)


def test_state_write_is_atomic(tmp_path, monkeypatch):
    last = tmp_path / "last"
    save_training_state(last, {"format": 1, "epoch": 1, "step": 4, "step_in_epoch": 0, "complete_epochs": 1,
                               "x": torch.ones(3)})

    def broken_save(obj, path, *a, **k):
        with open(path, "wb") as fh:
            fh.write(b"half")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        save_training_state(last, {"format": 1, "epoch": 2, "step": 8, "step_in_epoch": 0, "complete_epochs": 2})
    monkeypatch.undo()
    state = load_training_state(last)
    assert state["epoch"] == 1 and torch.equal(state["x"], torch.ones(3))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last"]  # no temporary leftovers


class _Recorder(Backend):
    """A backend that records the batches the Detector hands it and returns zero logits."""

    name, device, low_res_size = "recorder", "cpu", 16

    def __init__(self, e):
        self.input_size = e
        self.batches = []

    def infer(self, batch):
        self.batches.append(batch.copy())
        return np.zeros((len(batch), self.low_res_size, self.low_res_size), np.float32)


def test_dataset_feeds_the_model_exactly_what_the_detector_does(data, tmp_path):
    from satsam_ros.core import tiling
    from satsam_ros.core.detector import DetectorConfig
    from satsam_ros.model import SatsamMeta

    frame, mask = synthetic_frame(3, 512, 512)
    grid = tiling.PatchGrid(512, 256)
    pdir = tmp_path / "patches"
    (pdir / "images").mkdir(parents=True)
    (pdir / "masks").mkdir()
    items = []
    for i, (y, x) in enumerate(grid.origins):
        cv2.imwrite(str(pdir / "images" / f"{i}.png"), frame[y:y + 256, x:x + 256])
        cv2.imwrite(str(pdir / "masks" / f"{i}.png"), mask[y:y + 256, x:x + 256])
        items.append({"image": f"images/{i}.png", "mask": f"masks/{i}.png", "frame_id": 0, "y": y, "x": x,
                      "positive": bool(mask[y:y + 256, x:x + 256].any())})
    (pdir / "patches.json").write_text(json.dumps({"size": 512, "patch_size": 256, "source": "t", "split": "train",
                                                   "count": 4, "items": items}))
    for e in (64, 256):
        rec = _Recorder(e)
        Detector(rec, DetectorConfig(size=512), SatsamMeta(encoder_input_size=e)).detect(frame)
        fed = np.concatenate(rec.batches)
        ds = PatchDataset(pdir, encoder_size=e)
        ours = np.stack([ds[i][0].numpy() for i in range(4)])
        assert ours.shape == fed.shape == (4, 3, e, e)
        np.testing.assert_allclose(ours, fed, atol=1e-4)


def test_dataset_targets_and_deterministic_augmentation(data):
    from satsam_ros.core import tiling

    ds = PatchDataset(data["train"], encoder_size=64, loss_resolution="low")
    x, y = ds[0]
    assert x.shape == (3, 64, 64) and y.shape == (1, 16, 16)
    # the soft target is the mask's coverage per low-res pixel
    cover = tiling.resize((ds.masks[0] > 0).astype(np.float32), 16, 16)
    np.testing.assert_allclose(y[0].numpy(), cover, atol=1e-6)
    assert 0 < float(y.max()) <= 1.0
    full = PatchDataset(data["train"], encoder_size=64)[0][1]
    assert full.shape == (1, 256, 256) and set(np.unique(full.numpy())) <= {0.0, 1.0}

    aug = PatchDataset(data["train"], encoder_size=64, augment=True, seed=3)
    aug.set_epoch(1)
    a1 = aug[2]
    aug.set_epoch(2)
    a2 = aug[2]
    aug.set_epoch(1)
    assert torch.equal(aug[2][0], a1[0]) and torch.equal(aug[2][1], a1[1])
    assert not torch.equal(a1[0], a2[0])
    assert float(a1[1].sum()) == float((ds.masks[2] > 0).sum())  # flips/rotations keep the mask's area


def test_settings_are_checked(data, tmp_path):
    with pytest.raises(FitError, match="--train"):
        fit(_cfg(data, tmp_path / "x", train="encoder"))
    with pytest.raises(FitError, match="--encoder-size"):
        fit(_cfg(data, tmp_path / "x", encoder_size=100))
    with pytest.raises(FitError, match="no patches.json"):
        fit(_cfg(data, tmp_path / "x", patches=str(tmp_path)))
    with pytest.raises(FitError, match="--resume: no training state"):
        fit(_cfg(data, tmp_path / "x", resume=True))
    with pytest.raises(FitError, match="--base-config only applies"):
        fit(_cfg(data, tmp_path / "x", base="vit-b", base_config={"hidden": 32}))
    assert parse_base_config(["hidden=192", "layers=6,decoder_hidden=128"]) == {
        "hidden": 192, "layers": 6, "decoder_hidden": 128}
    with pytest.raises(FitError, match="depth=4"):
        parse_base_config(["depth=4"])
    # heads is SAM 2's key (tiny-sam2): --base tiny refuses it, naming both
    with pytest.raises(FitError, match="heads is a key of --base tiny-sam2, not of --base tiny"):
        fit(_cfg(data, tmp_path / "x", base_config=parse_base_config(["heads=1,1,2,4"])))


def test_lr_schedule_shape():
    assert [lr_factor(s, 4, 20, "cosine") for s in range(4)] == [0.25, 0.5, 0.75, 1.0]
    assert lr_factor(4, 4, 20, "cosine") == pytest.approx(1.0)
    assert lr_factor(12, 4, 20, "cosine") == pytest.approx(0.5)
    assert lr_factor(20, 4, 20, "cosine") == pytest.approx(0.0)
    assert lr_factor(15, 0, 20, "constant") == 1.0


def test_mask_decoder_training_leaves_the_encoder_unchanged(data, tmp_path):
    import copy

    from satsam_ros.model import SatsamMeta, save_checkpoint

    base, _ = load_model("tiny")
    save_checkpoint(copy.deepcopy(base), SatsamMeta(encoder_input_size=256), tmp_path / "base")
    res = fit(_cfg(data, tmp_path / "run", base=str(tmp_path / "base"), encoder_size=64, epochs=1, val=None))
    before = dict(base.named_parameters())
    changed = {n for n, p in res.model.named_parameters() if n.startswith("mask_decoder.")
               and not torch.equal(p, before[n])}
    assert changed  # the decoder learned
    for name, p in res.model.named_parameters():
        resampled = "pos_embed" in name or "rel_pos" in name  # resize_encoder 256 -> 64 resamples these
        if not name.startswith("mask_decoder.") and not resampled:
            assert torch.equal(p, before[name]), name
    meta = json.loads((tmp_path / "run" / "model" / "satsam.json").read_text())
    assert meta["encoder_input_size"] == 64 and meta["provenance"]["train"] == "mask_decoder"


def test_several_patch_directories_are_concatenated(data, tmp_path):
    big = make_patch_dir(tmp_path / "p1024", 3, seed=5, size=1024)
    ds = PatchDataset([data["train"], big], encoder_size=64)
    assert len(ds) == 16 + 3 and ds.size is None and ds.sizes == [512, 1024]
    assert np.array_equal(ds.images[16], PatchDataset(big, encoder_size=64).images[0])
    assert PatchDataset([data["train"], data["val"]], encoder_size=64).size == 512
    with pytest.raises(FitError, match="one frame size S; the patches have S = .512, 1024."):
        fit(_cfg(data, tmp_path / "x", patches=[str(data["train"]), str(big)], val_frames=str(data["frames"])))
    odd = make_patch_dir(tmp_path / "p128", 1, seed=6, patch=128)
    with pytest.raises(FitError, match="mix patch sizes"):
        PatchDataset([data["train"], odd], encoder_size=64)


def test_best_epoch_rule():
    a = {"train_loss": 1.0, "val_loss": 0.9, "val_frame_accuracy": 0.1, "val_frame_mean_iou": 0.0}
    b = {"train_loss": 1.0, "val_loss": 1.2, "val_frame_accuracy": 0.1, "val_frame_mean_iou": 0.2}
    c = {"train_loss": 1.0, "val_loss": 1.5, "val_frame_accuracy": 0.2, "val_frame_mean_iou": 0.1}
    assert max([a, b, c], key=lambda e: score(e, "val_frame_accuracy")) is c
    assert max([a, b], key=lambda e: score(e, "val_frame_accuracy")) is b  # tie: higher mean IoU
    assert max([a, b, c], key=lambda e: score(e, "val_loss")) is a


def test_auto_selection_does_not_reward_predicting_nothing():
    assert auto_select(FitConfig(patches=["p"], out="o", val=["v"])) == "val_loss"
    assert auto_select(FitConfig(patches=["p"], out="o", val=["v"], val_frames="f")) == "val_frame_accuracy"
    # a real run's epochs 1 and 12 (docs/training.md): "all empty" wins on patch accuracy only
    empty = {"train_loss": 1.18, "val_loss": 1.085, "val_patch_accuracy": 0.368, "val_patch_mean_iou": 0.0}
    learnt = {"train_loss": 0.73, "val_loss": 0.722, "val_patch_accuracy": 0.287, "val_patch_mean_iou": 0.319}
    assert max([empty, learnt], key=lambda e: score(e, "val_patch_accuracy")) is empty
    assert max([empty, learnt], key=lambda e: score(e, "val_loss")) is learnt
