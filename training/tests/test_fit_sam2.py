"""Training a SAM 2 model: ``fit --base tiny-sam2`` with SAM 2's ``--base-config`` keys,
checkpoints, exact resume, fine-tuning a SAM 2 checkpoint, and ``tune-threshold`` /
``evaluate`` / ``pipeline`` on the result. ``fit --base tiny`` keeps its own
initialisation (runs started before SAM 2 existed stay reproducible).

Runs use E = 64 (patches of 256 resized to 64, as the Detector does), one thread.
"""

import json

import numpy as np
import pytest
import torch
from _fitdata import make_coco_dir, make_patch_dir, one_torch_thread  # noqa: F401 (autouse fixture)
from satsam_training.cli import main
from satsam_training.fit import build_model, fit
from satsam_training.fit_config import FitConfig, FitError, parse_base_config
from satsam_training.train_state import load_training_state
from satsam_training.validation import detector_for

from satsam_ros.core.synthetic import synthetic_frame
from satsam_ros.model import load_model
from satsam_ros.runtime import open_detector


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("fitsam2")
    return {
        "train": make_patch_dir(root / "train", 12, seed=0, negatives=4),
        "val": make_patch_dir(root / "val", 3, seed=1, negatives=1, split="val"),
        "frames": make_coco_dir(root / "coco", splits=("val", "test"), count=3, empty=1, height=96, width=120),
    }


def _cfg(data, out, **kw):
    base = dict(patches=str(data["train"]), val=str(data["val"]), out=str(out), base="tiny-sam2",
                encoder_size=64, epochs=2, batch_size=4, lr=2e-3, progress=False)
    base.update(kw)
    return FitConfig(**base)


# --------------------------------------------------------------------------- --base-config


def test_base_config_syntax():
    words = ["widths=48,96,192,384", "blocks=1,2,4,2", "heads=1,2,4,8", "fpn=96"]
    want = {"widths": [48, 96, 192, 384], "blocks": [1, 2, 4, 2], "heads": [1, 2, 4, 8], "fpn": 96}
    assert parse_base_config(words) == want
    assert parse_base_config([",".join(words)]) == want  # one word, keys separated by commas
    assert parse_base_config(["widths=48", "96", "192", "384", "fpn=96"]) == {"widths": [48, 96, 192, 384],
                                                                            "fpn": 96}
    # the SAM keys parse as before
    assert parse_base_config(["hidden=192", "layers=6,decoder_hidden=128"]) == {
        "hidden": 192, "layers": 6, "decoder_hidden": 128}


@pytest.mark.parametrize("words, message", [
    (["hidden=192,6"], r"'6' after hidden=192: expected KEY=INT \(only widths, blocks, heads take"),
    (["96"], r"'96': expected KEY=INT"),
    (["widths=48,x"], r"'x' is not an integer"),
    (["fpn=0"], "must be positive"),
    (["fpn=64", "fpn=32"], "fpn given twice"),
    (["depth=3"], "expected KEY=INT with KEY in hidden, layers, decoder_hidden, patch, widths, blocks, heads, fpn"),
])
def test_base_config_syntax_errors_name_the_word(words, message):
    with pytest.raises(FitError, match=message):
        parse_base_config(words)


@pytest.mark.parametrize("base, config, message", [
    ("tiny-sam2", {"hidden": 96}, "hidden is a key of --base tiny, not of --base tiny-sam2 .which takes widths"),
    ("tiny", {"heads": [1, 2, 4, 8]}, "heads is a key of --base tiny-sam2, not of --base tiny"),
    ("tiny-sam2", {"widths": [32, 64, 128]}, r"widths=32,64,128: expected 4 comma-separated integers"),
    ("tiny-sam2", {"fpn": [64, 64]}, "fpn=64,64: expected one integer"),
    ("vit-b", {"fpn": 64}, r"only applies to a from-scratch base \(tiny, tiny-sam2, tiny-edgetam\), not 'vit-b'"),
])
def test_base_config_keys_belong_to_their_base(data, tmp_path, base, config, message):
    with pytest.raises(FitError, match=message):
        _cfg(data, tmp_path / "x", base=base, base_config=config).resolved()


def test_sam2_sizes_are_checked(data, tmp_path):
    with pytest.raises(FitError, match="tiny-sam2.* multiple of 32 .*got 48"):
        _cfg(data, tmp_path / "x", encoder_size=48).resolved()
    with pytest.raises(FitError, match="base-config: SAM 2 blocks .* at least 2 blocks"):
        build_model(_cfg(data, tmp_path / "x", base_config={"blocks": [1, 1, 1, 1]}).resolved())


def test_base_config_sizes_the_sam2_model(data, tmp_path):
    cfg = _cfg(data, tmp_path / "x", base_config=parse_base_config(
        ["widths=16,32,64,128", "blocks=1,1,3,1", "heads=1,2,2,4", "fpn=32"])).resolved()
    assert (cfg.train, cfg.encoder_size) == ("all", 64)
    model, meta = build_model(cfg)
    backbone = model.config.vision_config.backbone_config
    assert type(model).__name__ == "Sam2Model" and meta.encoder_input_size == 64
    assert list(backbone.embed_dim_per_stage) == [16, 32, 64, 128] and list(backbone.blocks_per_stage) == [1, 1, 3, 1]
    assert list(backbone.num_attention_heads_per_stage) == [1, 2, 2, 4]
    assert model.config.vision_config.fpn_hidden_size == 32 == model.config.mask_decoder_config.hidden_size
    assert list(backbone.global_attention_blocks) == [4]  # the last block of stage 3
    # seeded, fan-in initialised: the same seed gives the same model, logits of order 1
    again, _ = build_model(cfg)
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), again.state_dict().values()))
    assert float(model.mask_decoder.conv_s0.weight.detach().std()) > 0.1  # N(0, 1/fan_in), not transformers' 0.02


def test_fit_base_tiny_keeps_transformers_initialisation(data, tmp_path):
    """`fit --base tiny` builds exactly what it built before the SAM 2 family: SamModel
    of tiny_config, torch seeded with --seed, transformers' own initialisation."""
    from transformers import SamModel

    from satsam_ros.model import tiny_config

    cfg = _cfg(data, tmp_path / "x", base="tiny", seed=5, base_config={"hidden": 64, "layers": 2}).resolved()
    model, meta = build_model(cfg)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(5)
        expected = SamModel(tiny_config(image_size=64, hidden=64, layers=2))
    assert meta.encoder_input_size == 64
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), expected.state_dict().values()))


# --------------------------------------------------------------------------- fit and resume


@pytest.fixture(scope="module")
def trained(data, tmp_path_factory):
    out = tmp_path_factory.mktemp("sam2run") / "run"
    res = fit(_cfg(data, out, epochs=3, val_frames=str(data["frames"]), command="satsam-train fit (sam2 test)"))
    return out, res


def test_fit_trains_a_sam2_and_writes_a_sam2_checkpoint(trained):
    out, res = trained
    losses = [h["train_loss"] for h in res.history]
    assert len(losses) == 3 and losses[-1] < losses[0], losses
    assert res.history[-1]["val_loss"] < res.history[0]["val_loss"]
    assert "val_frame_accuracy" in res.history[0]
    config = json.loads((out / "model" / "config.json").read_text())
    assert config["model_type"] == "sam2" and config["mask_decoder_config"]["dynamic_multimask_via_stability"] is False
    meta = json.loads((out / "model" / "satsam.json").read_text())
    assert meta["encoder_input_size"] == 64 and meta["size"] == 512 and meta["prompt_policy"] == "full_box"
    assert meta["provenance"]["base"] == "tiny-sam2" and meta["provenance"]["train"] == "all"
    # the checkpoint, loaded as the node loads it, gives what the in-memory model gives
    frame, _ = synthetic_frame(7, 200, 240)
    in_memory = detector_for(res.model, res.meta, 512, 0.5).detect(frame)
    loaded = open_detector(str(out / "model"), backend="torch", device="cpu", size=512, threshold=0.5).detect(frame)
    np.testing.assert_array_equal(loaded.probability, in_memory.probability)
    assert np.array_equal(loaded.mask, in_memory.mask)


def test_resume_after_interrupt_gives_the_same_sam2_weights(data, tmp_path):
    kw = dict(epochs=2, batch_size=5, augment=True, schedule="cosine", warmup_steps=3, clip_grad=1.0,
              optimizer="adamw", weight_decay=0.01, val=None,
              base_config={"widths": [16, 32, 64, 128], "fpn": 32})
    full = fit(_cfg(data, tmp_path / "full", **kw))

    def interrupt(step):
        if step == 6:  # mid epoch 2
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        fit(_cfg(data, tmp_path / "cut", **kw), on_step=interrupt)
    saved = load_training_state(tmp_path / "cut" / "last")
    assert (saved["epoch"], saved["step"], saved["step_in_epoch"]) == (1, 6, 2)
    with pytest.raises(FitError, match="settings changed: base_config"):
        fit(_cfg(data, tmp_path / "cut", resume=True, **dict(kw, base_config={"fpn": 32})))
    resumed = fit(_cfg(data, tmp_path / "cut", resume=True, **kw))

    assert resumed.steps == full.steps == 8
    a = load_training_state(tmp_path / "full" / "last")["model"]
    b = load_training_state(tmp_path / "cut" / "last")["model"]
    assert a.keys() == b.keys() and any(k.startswith("vision_encoder.backbone.blocks.") for k in a)
    worst = max(float((a[k].float() - b[k].float()).abs().max()) for k in a)
    assert worst <= 1e-6, worst
    assert [round(h["train_loss"], 6) for h in full.history] == [round(h["train_loss"], 6) for h in resumed.history]


def test_fine_tuning_a_sam2_checkpoint_trains_only_the_decoder(trained, data, tmp_path):
    out, _ = trained
    res = fit(_cfg(data, tmp_path / "ft", base=str(out / "model"), encoder_size=None, epochs=1, lr=1e-3))
    base, _ = load_model(str(out / "model"))
    tuned = res.model.state_dict()
    changed = {k for k, v in base.state_dict().items() if not torch.equal(v, tuned[k])}
    assert changed and all(k.startswith("mask_decoder.") for k in changed), sorted(changed)[:5]
    assert res.meta.encoder_input_size == 64


# --------------------------------------------------------------------------- the commands after fit


def test_tune_threshold_and_evaluate_take_a_sam2_checkpoint(trained, data, tmp_path, capsys):
    out, _ = trained
    run = tmp_path / "run"
    import shutil

    shutil.copytree(out, run)
    assert main(["tune-threshold", str(run / "model"), "--data", str(data["frames"]), "--thresholds", "0.3", "0.5",
                 "0.7", "--json", "--no-progress"]) == 0
    tuned = json.loads(capsys.readouterr().out)
    meta = json.loads((run / "model" / "satsam.json").read_text())
    assert meta["threshold"] == tuned["threshold"] and len(tuned["rows"]) == 3
    assert main(["evaluate", str(run), "--data", str(data["frames"]), "--json", "--out", str(tmp_path / "e"),
                 "--no-progress", "--examples", "0"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["frames"] == 3 and result["threshold"] == tuned["threshold"]
    assert result["encoder_input_size"] == 64 and result["model_trained_size"] == 512


def test_pipeline_trains_and_evaluates_a_tiny_sam2(tmp_path):
    out = tmp_path / "pipe"
    argv = ["pipeline", "--sizes", "512", "--out", str(out), "--base", "tiny-sam2", "--base-config", "fpn=32",
            "widths=16,32,64,128", "--synth-train", "3", "--synth-val", "2", "--synth-test", "2", "--encoder-size",
            "64", "--epochs", "1", "--lr", "1e-3", "--no-progress", "--synth-args", "--height", "96", "--width",
            "128", "--empty-fraction", "0.34"]
    assert main(argv) == 0
    config = json.loads((out / "S512" / "run" / "model" / "config.json").read_text())
    assert config["model_type"] == "sam2" and config["vision_config"]["fpn_hidden_size"] == 32
    meta = json.loads((out / "S512" / "run" / "model" / "satsam.json").read_text())
    assert meta["provenance"]["base_config"] == {"fpn": 32, "widths": [16, 32, 64, 128]}
    metrics = json.loads((out / "S512" / "eval" / "metrics.json").read_text())
    assert metrics["threshold"] == meta["threshold"] and metrics["frames"] == 2
