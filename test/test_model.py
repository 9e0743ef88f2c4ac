"""Model loading, checkpoints and encoder resizing."""

import json
import os

import numpy as np
import pytest
import torch

from satsam_ros.backends.torch_backend import TorchBackend
from satsam_ros.core.parity import logit_tolerance
from satsam_ros.model import (
    META_FILE,
    SatsamMeta,
    encoder_input_size,
    load_model,
    resize_encoder,
    save_checkpoint,
)


def test_tiny_is_deterministic_and_small():
    a, meta = load_model("tiny")
    b, _ = load_model("tiny")
    assert meta.encoder_input_size == 256 == encoder_input_size(a)
    assert sum(p.numel() for p in a.parameters()) < 2_000_000
    for (ka, va), (kb, vb) in zip(a.state_dict().items(), b.state_dict().items()):
        assert ka == kb and torch.equal(va, vb)


def test_checkpoint_round_trip(tmp_path):
    model, meta = load_model("tiny")
    with torch.no_grad():  # make it differ from a fresh tiny model
        model.mask_decoder.iou_token.weight.add_(1.0)
    meta.threshold = 0.42
    meta.size = 1024
    meta.provenance = {"command": "test", "seed": 3}
    out = save_checkpoint(model, meta, tmp_path / "ckpt")
    assert sorted(os.listdir(out)) == ["config.json", "model.safetensors", META_FILE]
    loaded, meta2 = load_model(str(out))
    assert meta2.threshold == 0.42 and meta2.size == 1024 and meta2.provenance["seed"] == 3
    assert meta2.encoder_input_size == 256
    for (k, v), (k2, v2) in zip(model.state_dict().items(), loaded.state_dict().items()):
        assert k == k2 and torch.equal(v, v2), k
    x = np.random.default_rng(0).standard_normal((2, 3, 256, 256)).astype(np.float32)
    # the same weights through the same kernels on the same batch: bit-equal, no float bound
    np.testing.assert_array_equal(TorchBackend(model).infer(x), TorchBackend(loaded).infer(x))


def test_save_replaces_atomically_and_leaves_no_temp(tmp_path):
    model, meta = load_model("tiny")
    save_checkpoint(model, meta, tmp_path / "ckpt")
    meta.threshold = 0.3
    save_checkpoint(model, meta, tmp_path / "ckpt")
    assert json.loads((tmp_path / "ckpt" / META_FILE).read_text())["threshold"] == 0.3
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt"]


def test_save_failure_keeps_the_old_checkpoint(tmp_path, monkeypatch):
    model, meta = load_model("tiny")
    save_checkpoint(model, meta, tmp_path / "ckpt")

    def boom(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(type(model), "save_pretrained", boom)
    with pytest.raises(RuntimeError, match="disk full"):
        save_checkpoint(model, meta, tmp_path / "ckpt")
    assert (tmp_path / "ckpt" / "model.safetensors").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt"]


def test_plain_transformers_directory_gets_default_meta(tmp_path):
    model, _ = load_model("tiny")
    model.save_pretrained(str(tmp_path / "hf"))
    _, meta = load_model(str(tmp_path / "hf"))
    assert meta.threshold == 0.65 and meta.prompt_policy == "full_box" and meta.encoder_input_size == 256


@pytest.mark.parametrize(
    "spec, words",
    [("/nonexistent/model", "no such directory"), ("./relative/missing", "no such directory")],
)
def test_bad_specs_are_named(spec, words):
    with pytest.raises(FileNotFoundError, match=words):
        load_model(spec)


def test_directory_without_config(tmp_path):
    with pytest.raises(FileNotFoundError, match="config.json"):
        load_model(str(tmp_path))


def test_meta_validation(tmp_path):
    with pytest.raises(ValueError, match="prompt_policy"):
        SatsamMeta(prompt_policy="points").validate()
    with pytest.raises(ValueError, match="threshold"):
        SatsamMeta(threshold=2).validate()
    (tmp_path / META_FILE).write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        SatsamMeta.read(tmp_path)
    meta = SatsamMeta.from_dict({"threshold": 0.5, "unknown_future_key": 1})
    assert meta.threshold == 0.5


def test_resize_encoder_runs_at_new_size():
    model, _ = load_model("tiny")
    with torch.no_grad():  # a position field that interpolation must carry over: a smooth ramp
        ramp = torch.linspace(-1, 1, 16)
        model.vision_encoder.pos_embed.copy_((ramp[None, :, None, None] + 2 * ramp[None, None, :, None]).expand(
            1, 16, 16, model.vision_encoder.pos_embed.shape[-1]))
    big = resize_encoder(model, 512)
    assert encoder_input_size(big) == 512
    pos = big.vision_encoder.pos_embed.detach()
    assert tuple(pos.shape[1:3]) == (32, 32)
    # corners keep their values (ramp ends), the field stays monotone along both axes
    assert float(pos[0, 0, 0, 0].detach()) == pytest.approx(-3.0, abs=0.1)
    assert float(pos[0, -1, -1, 0].detach()) == pytest.approx(3.0, abs=0.1)
    assert (torch.diff(pos[0, :, 5, 0]) > 0).all() and (torch.diff(pos[0, 5, :, 0]) > 0).all()
    global_layer = big.vision_encoder.layers[1].attn
    assert global_layer.rel_pos_h.shape[0] == 2 * 32 - 1
    out = TorchBackend(big).infer(np.zeros((1, 3, 512, 512), np.float32))
    assert out.shape == (1, 128, 128) and np.isfinite(out).all()
    assert resize_encoder(model, 256) is model
    with pytest.raises(ValueError, match="multiple of the patch size"):
        resize_encoder(model, 250)


def test_tiny_model_output_depends_on_its_input():
    """A random model that ignores its input would make every mask-equality test moot."""
    model, _ = load_model("tiny")
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 3, 256, 256)).astype(np.float32)
    out = TorchBackend(model).infer(x)
    # the two outputs differ by more than float32 rounding could explain
    # (satsam_ros.core.parity's bound: 1e-3 x max(1, largest |logit|))
    assert np.abs(out[0] - out[1]).max() > logit_tolerance(out)
