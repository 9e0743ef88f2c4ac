"""``fit --base tiny-edgetam``: EdgeTAM's ``--base-config`` (a JSON object: the timm
backbone, its keyword arguments, the FPN width) reaches
``satsam_ros.edgetam_family.edgetam_config``; a short run writes an EdgeTAM checkpoint
that loads and runs in the Detector with its presence scores.

Runs use E = 64 (patches of 256 resized to 64, as the Detector does), one thread.
"""

import json

import numpy as np
import pytest
import torch
from _fitdata import make_patch_dir, one_torch_thread  # noqa: F401 (autouse fixture)
from satsam_training.fit import build_model, fit
from satsam_training.fit_config import FitConfig, FitError, parse_base_config

from satsam_ros.core.synthetic import synthetic_frame
from satsam_ros.model import load_model
from satsam_ros.runtime import open_detector

REPVIT = '{"backbone": "repvit_m0_9", "model_args": {"embed_dim": [16, 32, 64, 128], "depth": [1, 1, 2, 1]}, ' \
         '"fpn_hidden": 32}'


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("fitedgetam")
    return {"train": make_patch_dir(root / "train", 8, seed=0, negatives=2),
            "val": make_patch_dir(root / "val", 2, seed=1, negatives=1, split="val")}


def _cfg(data, out, **kw):
    base = dict(patches=str(data["train"]), val=str(data["val"]), out=str(out), base="tiny-edgetam",
                encoder_size=64, epochs=2, batch_size=4, lr=2e-3, progress=False)
    base.update(kw)
    return FitConfig(**base)


def test_base_config_takes_a_json_object():
    assert parse_base_config([REPVIT]) == {"backbone": "repvit_m0_9", "fpn_hidden": 32,
                                           "model_args": {"embed_dim": [16, 32, 64, 128], "depth": [1, 1, 2, 1]}}
    assert parse_base_config(['{"fpn_hidden": 48}', "decoder_heads=4"]) == {"fpn_hidden": 48, "decoder_heads": 4}
    assert parse_base_config(["backbone=resnet10t", "fpn_hidden=32"]) == {"backbone": "resnet10t", "fpn_hidden": 32}
    with pytest.raises(FitError, match="not a valid JSON object"):
        parse_base_config(['{"backbone": '])
    with pytest.raises(FitError, match="key 'depth' unknown"):
        parse_base_config(['{"depth": 3}'])
    with pytest.raises(FitError, match="fpn_hidden given twice"):
        parse_base_config(['{"fpn_hidden": 48}', "fpn_hidden=32"])


@pytest.mark.parametrize("config, message", [
    ({"widths": [16, 32, 64, 128]}, "widths is a key of --base tiny-sam2, not of --base tiny-edgetam"),
    ({"backbone": 3}, "backbone=3: expected a timm architecture name"),
    ({"model_args": [1, 2]}, "model_args=1,2: expected a JSON object"),
    ({"fpn_hidden": 0}, "fpn_hidden=0: must be positive"),
])
def test_edgetam_keys_and_their_shapes(data, tmp_path, config, message):
    with pytest.raises(FitError, match=message):
        _cfg(data, tmp_path / "x", base_config=config).resolved()


def test_sizes_and_backbones_are_checked(data, tmp_path):
    with pytest.raises(FitError, match="tiny-edgetam.* multiple of 32 .*got 48"):
        _cfg(data, tmp_path / "x", encoder_size=48).resolved()
    cfg = _cfg(data, tmp_path / "x", base_config={"backbone": "vit_tiny_patch16_224"}).resolved()
    with pytest.raises(FitError, match="base-config: EdgeTAM backbone 'vit_tiny_patch16_224' has features at strides"):
        build_model(cfg)


def test_base_config_builds_the_edgetam_it_names(data, tmp_path):
    cfg = _cfg(data, tmp_path / "x", base_config=parse_base_config([REPVIT]), seed=3).resolved()
    assert (cfg.train, cfg.encoder_size) == ("all", 64)
    model, meta = build_model(cfg)
    vision = model.config.vision_config
    assert type(model).__name__ == "EdgeTamModel" and meta.encoder_input_size == 64
    assert vision.backbone_config.architecture == "repvit_m0_9"
    assert vision.backbone_config.model_args["embed_dim"] == [16, 32, 64, 128]
    assert list(vision.backbone_channel_list) == [128, 64, 32, 16]
    assert vision.fpn_hidden_size == 32 == model.config.mask_decoder_config.hidden_size
    again, _ = build_model(cfg)  # seeded
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), again.state_dict().values()))
    default, _ = build_model(_cfg(data, tmp_path / "y").resolved())
    assert default.config.vision_config.backbone_config.architecture == "efficientvit_b0"


def test_fit_trains_an_edgetam_and_writes_an_edgetam_checkpoint(data, tmp_path):
    out = tmp_path / "run"
    res = fit(_cfg(data, out, command="satsam-train fit (edgetam test)"))
    losses = [h["train_loss"] for h in res.history]
    assert len(losses) == 2 and all(np.isfinite(losses))
    config = json.loads((out / "model" / "config.json").read_text())
    assert config["model_type"] == "edgetam"
    assert config["vision_config"]["backbone_config"]["architecture"] == "efficientvit_b0"
    model, meta = load_model(str(out / "model"))
    assert type(model).__name__ == "EdgeTamModel" and meta.encoder_input_size == 64
    det = open_detector(str(out / "model"), backend="torch", device="cpu", size=512)
    result = det.detect(synthetic_frame(4)[0])
    assert result.scores is not None and result.scores.shape == (4,) and np.isfinite(result.scores).all()
