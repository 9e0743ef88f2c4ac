"""The EdgeTAM family (transformers' EdgeTamModel: SAM 2's prompt encoder and mask decoder
on a timm CNN): the configuration builder and its backbones, the seeded ``tiny-edgetam``
spec, loading by family, save / load, encoder resizing, the patch module with its
presence score, the Detector's torch path with the presence gate, and the bench row.

Every model run here is ``tiny-edgetam`` (0.9 M parameters, ``efficientvit_b0``) or a
smaller one built from the same builder; other backbones are only inspected.
"""

import copy
import json

import numpy as np
import pytest
import torch

from satsam_ros.backends.torch_backend import TorchBackend
from satsam_ros.core import parity
from satsam_ros.core.detector import Detector, DetectorConfig
from satsam_ros.core.synthetic import synthetic_frame
from satsam_ros.edgetam_family import backbone_features, calibrate_batchnorm, edgetam_config
from satsam_ros.model import (
    META_FILE,
    directory_family,
    encoder_geometry,
    encoder_input_size,
    family_of,
    has_presence,
    load_model,
    make_export_module,
    make_patch_module,
    random_model,
    resize_encoder,
    save_checkpoint,
)
from satsam_ros.runtime import open_detector

TINY_EDGETAM_PARAMETERS = 901_393  # efficientvit_b0 (channels 16/32/64/128), FPN 64


@pytest.fixture(scope="module")
def tiny_et():
    return load_model("tiny-edgetam")


def _state_equal(a, b) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def _pixels(n, e, seed=0):
    return np.random.default_rng(seed).standard_normal((n, 3, e, e)).astype(np.float32)


def _frame_patches(det, frame):
    from satsam_ros.core import preprocess

    patches, _ = preprocess.frame_patches(frame, "rgb", det.grid, None)
    return preprocess.resize_patches(patches, det.backend.input_size)


# --------------------------------------------------------------------------- the builder


@pytest.mark.parametrize("backbone, args, indices, channels", [
    ("efficientvit_b0", {}, [0, 1, 2, 3], [16, 32, 64, 128]),
    ("repvit_m0_9", {"embed_dim": [32, 64, 128, 256], "depth": [1, 1, 4, 1]}, [0, 1, 2, 3], [32, 64, 128, 256]),
    # first feature at stride 2: indices 1-4
    ("mobilenetv4_conv_small", {}, [1, 2, 3, 4], [32, 64, 96, 960]),
    ("resnet10t", {}, [1, 2, 3, 4], [64, 128, 256, 512]),
])
def test_backbone_features_pick_strides_4_to_32(backbone, args, indices, channels):
    assert backbone_features(backbone, args) == (indices, channels)


def test_config_builder_derives_levels_and_widths():
    config = edgetam_config("repvit_m0_9", image_size=128, fpn_hidden=32,
                            model_args={"embed_dim": (32, 64, 128, 256), "depth": (1, 1, 4, 1)})
    assert config.model_type == "edgetam"
    vision = config.vision_config
    assert type(vision.backbone_config).__name__ == "TimmWrapperConfig"
    assert vision.backbone_config.architecture == "repvit_m0_9"
    assert vision.backbone_config.model_args == {"embed_dim": [32, 64, 128, 256], "depth": [1, 1, 4, 1],
                                                 "in_chans": 3, "features_only": True, "out_indices": [0, 1, 2, 3]}
    assert list(vision.backbone_channel_list) == [256, 128, 64, 32]  # stride 32 first
    assert [list(s) for s in vision.backbone_feature_sizes] == [[32, 32], [16, 16], [8, 8]]
    assert vision.fpn_hidden_size == 32 == config.mask_decoder_config.hidden_size
    assert config.prompt_encoder_config.image_size == 128
    assert config.mask_decoder_config.dynamic_multimask_via_stability is False
    model = random_model(config, seed=1, fan_in=True)
    assert 1_000_000 < sum(p.numel() for p in model.parameters()) < 1_500_000
    logits, scores = make_patch_module(model, with_score=True)(torch.from_numpy(_pixels(2, 128)))
    assert logits.shape == (2, 32, 32) and scores.shape == (2,)


@pytest.mark.parametrize("kwargs, words", [
    (dict(backbone="vit_tiny_patch16_224"), r"'vit_tiny_patch16_224' has features at strides \[16\], not at 4, 8, 32"),
    (dict(backbone="no_such_net"), r"EdgeTAM backbone 'no_such_net'.*Unknown model"),
    (dict(model_args={"out_indices": [0, 1]}), "model_args may not set out_indices"),
    (dict(model_args={"no_such_argument": 3}), "'efficientvit_b0' with model_args"),
    (dict(image_size=250), "encoder input size 250: must be a positive multiple of 32"),
    (dict(fpn_hidden=60), "fpn_hidden 60: must be a multiple of 8"),
    (dict(fpn_hidden=48, decoder_heads=5), "decoder_heads 5"),
])
def test_bad_configurations_are_named(kwargs, words):
    with pytest.raises(ValueError, match=words):
        edgetam_config(**kwargs)


# --------------------------------------------------------------------------- the spec


def test_tiny_edgetam_is_small_deterministic_single_mask_with_presence(tiny_et):
    model, meta = tiny_et
    assert type(model).__name__ == "EdgeTamModel" and model.config.model_type == "edgetam"
    family = family_of(model)
    assert family.name == "edgetam" and family.has_presence and has_presence(model) and not family.fused_attention
    assert meta.encoder_input_size == 256 == encoder_input_size(model) and meta.prompt_policy == "full_box"
    assert "efficientvit_b0" in meta.provenance["source"] and "BatchNorm" in meta.provenance["source"]
    assert sum(p.numel() for p in model.parameters()) == TINY_EDGETAM_PARAMETERS
    assert not model.mask_decoder.dynamic_multimask_via_stability
    assert encoder_geometry(model) == (64 * 64, 16)
    assert _state_equal(model, load_model("tiny-edgetam")[0])


def test_presence_flags_of_the_three_families():
    assert not has_presence(load_model("tiny")[0]) and has_presence(load_model("tiny-sam2")[0])
    with pytest.raises(ValueError, match="SAM model .*has no object-score head"):
        make_patch_module(load_model("tiny")[0], with_score=True)


def test_masks_and_scores_follow_the_image(tiny_et):
    """What the spec's init is for: transformers' init plus eval-mode BatchNorm with its
    initial statistics gives one flat output for every image (the BatchNorm
    calibration is what gives masks with foreground and scores that differ)."""
    model, meta = tiny_et
    det = Detector(TorchBackend(model), DetectorConfig(size=512), meta)
    a, b = det.detect(synthetic_frame(1)[0]), det.detect(synthetic_frame(2)[0])
    for res in (a, b):
        assert 0 < np.count_nonzero(res.mask) < res.mask.size, "masks need foreground and background"
    assert postprocess_iou(a.mask, b.mask) < 0.9
    module = make_patch_module(model, with_score=True)
    x = torch.from_numpy(_frame_patches(det, synthetic_frame(1)[0]))
    with torch.no_grad():
        logits, scores = module(x)
        other = module(torch.from_numpy(_pixels(4, 256, seed=5)))[1]
    assert logits.std() > 0.3 and float(logits.abs().max()) < 50
    prob = torch.sigmoid(scores)
    assert float(prob.max() - prob.min()) > 1e-3  # patches of one frame: different scores
    assert float((other - scores).abs().max()) > 1e-2  # other pixels, other scores
    # the scores of the Detector's result are these, as probabilities
    np.testing.assert_allclose(a.scores, prob.numpy(), rtol=0, atol=parity.probability_tolerance(scores.numpy()))
    # without the calibration the object score barely sees the image (measured: 0.002
    # between two noise patches, against 0.37 with it)
    pair = torch.from_numpy(_pixels(2, 256, seed=1))
    with torch.no_grad():
        flat = make_patch_module(random_model(edgetam_config(), seed=0, fan_in=True), with_score=True)(pair)[1]
        calibrated = module(pair)[1]
    assert float((flat[0] - flat[1]).abs()) < 0.02 < 0.1 < float((calibrated[0] - calibrated[1]).abs())


def postprocess_iou(a, b):
    from satsam_ros.core.postprocess import mask_iou

    return mask_iou(a, b)


def test_calibration_is_deterministic_and_leaves_the_global_generator(tiny_et):
    model, _ = tiny_et
    state = torch.random.get_rng_state()
    again = calibrate_batchnorm(copy.deepcopy(model), seed=0)
    assert torch.equal(torch.random.get_rng_state(), state)
    assert _state_equal(model, again) and not again.training


# --------------------------------------------------------------------------- loading


def test_the_family_comes_from_config_json(tmp_path):
    directory = tmp_path / "a"
    directory.mkdir()
    (directory / "config.json").write_text(json.dumps({"model_type": "edgetam"}))
    assert directory_family(directory).name == "edgetam"


@pytest.mark.parametrize("spec", ["tiny-edgetam", "repvit"])
def test_checkpoint_round_trip_gives_identical_outputs(tiny_et, tmp_path, spec):
    if spec == "tiny-edgetam":
        model, meta = tiny_et
    else:  # timm keyword arguments (tuples) survive config.json as the same architecture
        model = random_model(edgetam_config("repvit_m0_9", fpn_hidden=32, model_args={
            "embed_dim": (16, 32, 64, 128), "depth": (1, 1, 2, 1)}), seed=2, fan_in=True)
        meta = tiny_et[1]
    meta = copy.deepcopy(meta)
    meta.threshold, meta.postprocess = 0.4, {"512": {"threshold": 0.5, "min_object_score": 0.3}}
    out = save_checkpoint(model, meta, tmp_path / "ckpt")
    config = json.loads((out / "config.json").read_text())
    assert config["model_type"] == "edgetam"
    assert config["mask_decoder_config"]["dynamic_multimask_via_stability"] is False
    assert config["vision_config"]["backbone_config"]["model_type"] == "timm_wrapper"
    loaded, meta2 = load_model(str(out))
    assert type(loaded).__name__ == "EdgeTamModel" and meta2.threshold == 0.4 and meta2.encoder_input_size == 256
    assert meta2.post_for(512).min_object_score == 0.3 and meta2.post_for(1024).min_object_score == 0.0
    assert json.loads((out / META_FILE).read_text())["encoder_input_size"] == 256
    assert _state_equal(model, loaded)
    x = _pixels(3, 256)
    (a, sa), (b, sb) = TorchBackend(model).infer_scored(x), TorchBackend(loaded).infer_scored(x)
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(sa, sb)


# --------------------------------------------------------------------------- patch module


def test_patch_module_is_edgetam_forward_with_a_full_box_and_token_zero(tiny_et):
    model, _ = tiny_et
    module = make_patch_module(model, with_score=True)
    assert module.box.tolist() == [[[0.0, 0.0, 255.0, 255.0]]]
    x = torch.from_numpy(_pixels(3, 256, seed=1))
    with torch.no_grad():
        logits, scores = module(x)
        ref = model(pixel_values=x, input_boxes=torch.tensor([[[0.0, 0.0, 255.0, 255.0]]] * 3),
                    multimask_output=False)
        plain = make_patch_module(model)(x)
        one = [module(x[i:i + 1]) for i in range(3)]
    assert torch.equal(logits, ref.pred_masks[:, 0, 0]) and torch.equal(scores, ref.object_score_logits[:, 0, 0])
    assert torch.equal(plain, logits)  # without the score: the same logits
    assert parity.max_abs_diff(torch.cat([o[0] for o in one]).numpy(), logits.numpy()) <= parity.logit_tolerance(
        logits.numpy())  # a batch computes what single patches do
    assert parity.max_abs_diff(torch.cat([o[1] for o in one]).numpy(), scores.numpy()) <= parity.logit_tolerance(
        scores.numpy())


def test_export_module_computes_the_patch_module(tiny_et):
    model, _ = tiny_et
    x = torch.from_numpy(_pixels(3, 256, seed=4))
    with torch.no_grad():
        logits, scores = make_export_module(model)(x)
        ref_logits, ref_scores = make_patch_module(model, with_score=True)(x)
    # the same function; the export's tensors are laid out differently (its FPN maps are
    # not reshaped through HW x N x C), so the float sums may round differently
    assert parity.max_abs_diff(logits.numpy(), ref_logits.numpy()) <= parity.logit_tolerance(ref_logits.numpy())
    assert parity.max_abs_diff(scores.numpy(), ref_scores.numpy()) <= parity.logit_tolerance(ref_scores.numpy())


def test_resize_encoder_shares_the_weights_and_round_trips(tiny_et):
    model, _ = tiny_et
    big = resize_encoder(model, 512)
    assert encoder_input_size(big) == 512 and big.config.vision_config.backbone_feature_sizes[0] == [128, 128]
    assert big.mask_decoder.conv_s0.weight.data_ptr() == model.mask_decoder.conv_s0.weight.data_ptr()
    assert not any(t.is_meta for t in list(big.parameters()) + list(big.buffers()))
    logits, scores = TorchBackend(big).infer_scored(_pixels(1, 512))
    assert logits.shape == (1, 128, 128) and scores.shape == (1,) and np.isfinite(logits).all()
    back = resize_encoder(big, 256)
    x = _pixels(2, 256)
    np.testing.assert_array_equal(TorchBackend(back).infer(x), TorchBackend(model).infer(x))
    assert resize_encoder(model, 256) is model
    with pytest.raises(ValueError, match="encoder input size 1000: must be a positive multiple of 32"):
        resize_encoder(model, 1000)


# --------------------------------------------------------------------------- the Detector


def test_detector_scores_and_the_presence_gate(tiny_et):
    frame = synthetic_frame(1)[0]
    det = open_detector("tiny-edgetam", backend="torch", device="cpu", size=512)
    assert det.backend.has_presence and det.backend.input_size == 256 and det.post.min_object_score == 0.0
    res = det.detect(frame)
    assert res.scores.shape == (4,) and res.gated == 0 and np.count_nonzero(res.mask) > 0
    assert res.to_dict()["gated_patches"] == 0 and len(res.to_dict()["object_scores"]) == 4
    # a gate between the patches' scores: the patches under it publish nothing
    cut = float(np.sort(res.scores)[1]) + 1e-6
    det.set_post(min_object_score=cut)
    gated = det.detect(frame)
    off = res.scores < cut
    assert gated.gated == int(off.sum()) == 2
    np.testing.assert_array_equal(gated.scores, res.scores)
    assert np.count_nonzero(gated.mask) < np.count_nonzero(res.mask)
    det.set_post(min_object_score=1.0)
    none = det.detect(frame)
    assert none.gated == 4 and not none.mask.any() and not none.boxes and float(none.probability.max()) == 0.0
    det.set_post(min_object_score=None)  # back to the checkpoint's: none given, so off
    assert det.detect(frame).gated == 0


def test_a_torch_backend_whose_infer_is_replaced_is_what_the_detector_runs(tiny_et):
    """A stand-in overriding only ``infer`` (as the fp16 check's stand-ins do): the
    Detector's ``infer_scored`` goes through it (and gets no scores)."""
    model, meta = tiny_et
    calls = []

    class Keep(TorchBackend):
        def infer(self, batch):
            calls.append(batch.shape[0])
            return super().infer(batch) + np.float32(50.0)

    res = Detector(Keep(model), DetectorConfig(size=512, min_object_score=1.0), meta).detect(synthetic_frame(1)[0])
    assert calls and res.scores is None and res.gated == 0 and res.mask.all()


def test_faithful_mode_runs_each_patch_alone_at_1024(tiny_et):
    det = open_detector("tiny-edgetam", backend="torch", device="cpu", size=512, mode="faithful")
    assert det.backend.input_size == 1024 and det.batch == 1
    res = det.detect(synthetic_frame(1)[0])
    assert res.patches == 4 and res.scores.shape == (4,)


# --------------------------------------------------------------------------- the bench


def test_bench_runs_a_tiny_edgetam_row_beside_tiny_sam2(tmp_path):
    from satsam_ros.tools.cli import main

    out = tmp_path / "b"
    assert main(["bench", "--models", "tiny-edgetam", "tiny-sam2", "--reference-model", "tiny-sam2", "--sizes",
                 "512", "--backends", "torch", "--modes", "fast", "--frames", "1", "--warmup", "0", "--no-roi",
                 "--no-node", "--out", str(out), "--no-progress", "--json"]) == 0
    data = json.loads((out / "bench.json").read_text())
    row = data["rows"]["tiny-edgetam/512/torch/fast"]
    assert row["encoder_input"] == 256 and not row["fused_attention"] and row["latency_s"]["median"] > 0
    ratios = {(r["model"], r["row"]) for r in data["model_ratios"]}
    assert ("tiny-edgetam", "fast") in ratios
    assert "| tiny-edgetam | 512 | torch | fast | 256 |" in (out / "bench.md").read_text()
