"""The SAM 2 family (transformers' Sam2Model): specs, loading by family, the single-mask
policy, encoder resizing, the patch module and the Detector's torch path.

Every model here is ``tiny-sam2`` (1.4 M parameters, seconds on the CPU) or built from
its configuration; ``sam2-hiera-tiny`` is only built, never run.
"""

import copy
import json

import numpy as np
import pytest
import torch
from numerics import LogitRecorder, assert_logits_close, assert_masks_equal_except_ties, assert_probabilities_close

from satsam_ros.backends.torch_backend import TorchBackend
from satsam_ros.core import postprocess
from satsam_ros.core.backend import Backend
from satsam_ros.core.detector import Detector, DetectorConfig
from satsam_ros.core.synthetic import synthetic_frame
from satsam_ros.model import (
    META_FILE,
    directory_family,
    encoder_geometry,
    encoder_input_size,
    family_of,
    load_model,
    make_patch_module,
    random_model,
    resize_encoder,
    save_checkpoint,
)
from satsam_ros.runtime import open_detector
from satsam_ros.sam2_family import single_mask_policy, tiny_sam2_config

TINY_SAM2_PARAMETERS = 1_405_473  # widths 32/64/128/256, blocks 1/1/2/1, FPN 64
HIERA_TINY_PARAMETERS = 31_440_721  # Sam2Model of sam2.1-hiera-tiny (the hub's 38.9 M add the video memory)


@pytest.fixture(scope="module")
def tiny2():
    return load_model("tiny-sam2")


def _state_equal(a, b) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def _pixels(n, e, seed=0):
    return np.random.default_rng(seed).standard_normal((n, 3, e, e)).astype(np.float32)


# --------------------------------------------------------------------------- specs


def test_tiny_sam2_is_small_deterministic_and_single_mask(tiny2):
    model, meta = tiny2
    assert type(model).__name__ == "Sam2Model" and family_of(model) is family_of(model.config)
    assert family_of(model).name == "sam2"
    assert meta.encoder_input_size == 256 == encoder_input_size(model)
    assert meta.prompt_policy == "full_box" and "fan-in" in meta.provenance["source"]
    assert sum(p.numel() for p in model.parameters()) == TINY_SAM2_PARAMETERS
    assert not model.mask_decoder.dynamic_multimask_via_stability
    assert not model.config.mask_decoder_config.dynamic_multimask_via_stability
    assert _state_equal(model, load_model("tiny-sam2")[0])


def test_tiny_sam2_output_depends_on_the_image_with_order_one_logits(tiny2):
    """transformers' std-0.02 init gives logits of ~1e-4 (every mask empty, every image
    alike); the spec's fan-in init must not."""
    model, _ = tiny2
    out = TorchBackend(model).infer(_pixels(2, 256))
    assert out.shape == (2, 64, 64) and np.isfinite(out).all()
    assert out.std() > 0.3 and np.abs(out[0] - out[1]).mean() > 0.3
    stock = TorchBackend(random_model(tiny_sam2_config(), seed=0)).infer(_pixels(2, 256))
    assert np.abs(stock).max() < 0.01  # what the spec avoids


def test_sam2_hiera_tiny_is_the_real_architecture():
    model, meta = load_model("sam2-hiera-tiny")
    backbone = model.config.vision_config.backbone_config
    assert meta.encoder_input_size == 1024 == encoder_input_size(model)
    assert list(backbone.embed_dim_per_stage) == [96, 192, 384, 768]
    assert list(backbone.blocks_per_stage) == [1, 2, 7, 2] and list(backbone.global_attention_blocks) == [5, 7, 9]
    assert model.config.vision_config.fpn_hidden_size == 256
    assert sum(p.numel() for p in model.parameters()) == HIERA_TINY_PARAMETERS
    assert not model.mask_decoder.dynamic_multimask_via_stability
    assert encoder_geometry(model) == (256 * 256, 96)


@pytest.mark.parametrize("kwargs, words", [
    (dict(image_size=250), "multiple of 32"),
    (dict(widths=(32, 64, 128)), "widths must be 4 positive"),
    (dict(blocks=(1, 1, 1, 1)), "stage 3 .* at least 2 blocks"),
    (dict(widths=(32, 64, 96, 256), heads=(1, 1, 5, 4)), "width 96 is not a multiple of its heads 5"),
    (dict(fpn=60), "fpn 60: must be a multiple of 8"),
])
def test_bad_sam2_configurations_are_named(kwargs, words):
    with pytest.raises(ValueError, match=words):
        tiny_sam2_config(**kwargs)


# --------------------------------------------------------------------------- loading


def _write_config(directory, model_type):
    directory.mkdir()
    (directory / "config.json").write_text(json.dumps({"model_type": model_type}))
    return directory


def test_the_family_comes_from_config_json(tmp_path):
    assert directory_family(_write_config(tmp_path / "a", "sam")).name == "sam"
    assert directory_family(_write_config(tmp_path / "b", "sam2")).name == "sam2"
    assert directory_family(_write_config(tmp_path / "c", "sam2_video")).name == "sam2"
    with pytest.raises(ValueError, match=r"config.json: model type 'clip' is not supported; supported: sam, sam2"):
        load_model(str(_write_config(tmp_path / "d", "clip")))


def test_checkpoint_round_trip_keeps_the_family_and_the_outputs(tiny2, tmp_path):
    model, meta = tiny2
    meta = copy.deepcopy(meta)
    meta.threshold, meta.size = 0.4, 1024
    out = save_checkpoint(model, meta, tmp_path / "ckpt")
    config = json.loads((out / "config.json").read_text())
    assert config["model_type"] == "sam2" and config["mask_decoder_config"]["dynamic_multimask_via_stability"] is False
    loaded, meta2 = load_model(str(out))
    assert type(loaded).__name__ == "Sam2Model" and meta2.threshold == 0.4 and meta2.encoder_input_size == 256
    assert json.loads((out / META_FILE).read_text())["encoder_input_size"] == 256
    assert _state_equal(model, loaded)
    x = _pixels(2, 256)
    np.testing.assert_array_equal(TorchBackend(model).infer(x), TorchBackend(loaded).infer(x))


def test_a_hub_style_sam2_video_directory_loads_into_sam2model(tmp_path):
    """The hub's facebook/sam2.1-hiera-* folders are the video model (``sam2_video``) with
    the multimask switch on: the image path loads, the memory weights are left out,
    and the single-mask policy is applied."""
    from transformers import Sam2VideoConfig, Sam2VideoModel

    small = tiny_sam2_config()
    config = Sam2VideoConfig(
        vision_config=small.vision_config.to_dict(), prompt_encoder_config=small.prompt_encoder_config.to_dict(),
        mask_decoder_config=dict(small.mask_decoder_config.to_dict(), dynamic_multimask_via_stability=True),
        memory_attention_hidden_size=64, memory_encoder_hidden_size=64, memory_encoder_output_channels=16,
        mem_dim=16)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(3)
        video = Sam2VideoModel(config)
    video.save_pretrained(str(tmp_path / "hub"))
    assert json.loads((tmp_path / "hub" / "config.json").read_text())["model_type"] == "sam2_video"
    model, meta = load_model(str(tmp_path / "hub"))
    assert type(model).__name__ == "Sam2Model" and meta.encoder_input_size == 256
    assert not model.mask_decoder.dynamic_multimask_via_stability
    video_state = video.state_dict()
    image_state = model.state_dict()
    assert all(torch.equal(v, video_state[k]) for k, v in image_state.items())
    assert any(k.startswith("memory_attention.") for k in video_state)
    assert not any(k.startswith("memory_attention.") for k in image_state)


# --------------------------------------------------------------------------- patch module


def test_patch_module_is_sam2_forward_with_a_full_box_and_token_zero(tiny2):
    model, _ = tiny2
    module = make_patch_module(model)
    assert module.box.tolist() == [[[0.0, 0.0, 255.0, 255.0]]]
    x = torch.from_numpy(_pixels(3, 256, seed=1))
    with torch.no_grad():
        got = module(x)
        ref = model(pixel_values=x, input_boxes=torch.tensor([[[0.0, 0.0, 255.0, 255.0]]] * 3),
                    multimask_output=False).pred_masks[:, 0, 0]
        one = torch.cat([module(x[i:i + 1]) for i in range(3)])
    assert torch.equal(got, ref)  # the same kernels on the same batch: bit-equal
    # a batch computes what single patches do, summed in another order: the float32 bound
    assert_logits_close(got.numpy(), one.numpy(), "tiny-sam2 batch of 3 vs one at a time")


def test_single_mask_policy_makes_train_and_eval_the_same_function(tmp_path):
    """With SAM 2's dynamic multimask switch on (every released checkpoint), eval mode
    swaps in another mask token when the stability score is low; train mode never."""
    model = random_model(tiny_sam2_config(), seed=0, fan_in=True)
    model.mask_decoder.dynamic_multimask_via_stability = True  # as a hub checkpoint ships
    x = torch.from_numpy(_pixels(4, 256, seed=2))
    box = torch.tensor([[[0.0, 0.0, 255.0, 255.0]]] * 4)

    def both(m):
        with torch.no_grad():
            m.train()
            trained = m(pixel_values=x, input_boxes=box, multimask_output=False).pred_masks
            m.eval()
            evaluated = m(pixel_values=x, input_boxes=box, multimask_output=False).pred_masks
        return trained, evaluated

    a, b = both(model)
    assert not torch.allclose(a, b)  # the switch changes what eval computes
    a, b = both(single_mask_policy(model))
    assert torch.equal(a, b)


def test_resize_encoder_shares_the_weights_and_round_trips(tiny2):
    model, _ = tiny2
    big = resize_encoder(model, 1024)
    assert encoder_input_size(big) == 1024 and big.config.vision_config.backbone_feature_sizes[0] == [256, 256]
    assert big.vision_encoder.backbone.pos_embed.data_ptr() == model.vision_encoder.backbone.pos_embed.data_ptr()
    assert not any(t.is_meta for t in list(big.parameters()) + list(big.buffers()))
    out = TorchBackend(big).infer(_pixels(1, 1024))
    assert out.shape == (1, 256, 256) and np.isfinite(out).all() and out.std() > 0.3
    back = resize_encoder(big, 256)
    x = _pixels(2, 256)
    np.testing.assert_array_equal(TorchBackend(back).infer(x), TorchBackend(model).infer(x))
    assert resize_encoder(model, 256) is model
    with pytest.raises(ValueError, match="encoder input size 1000: must be a positive multiple of 32"):
        resize_encoder(model, 1000)


# --------------------------------------------------------------------------- the Detector


def test_fast_mode_batches_at_the_model_e_without_sam_attention(tiny2):
    frame = synthetic_frame(1)[0]
    det = open_detector("tiny-sam2", backend="torch", device="cpu", size=512)
    assert det.backend.input_size == 256 and det.backend.low_res_size == 64
    assert not det.backend.fused_attention  # Hiera has its own attention
    # (E/4)^2 tokens x stage-0 width 32 per patch: 6 patches per forward on a CPU
    assert det.batch == det.backend.preferred_batch(16) == 6
    res = det.detect(frame)
    assert res.mask.shape == frame.shape[:2] and res.patches == 4
    assert 0 < np.count_nonzero(res.mask) < res.mask.size and res.boxes
    # the Detector's probability is the patch module's logits, stitched and resized
    model, meta = tiny2
    ref = Detector(TorchBackend(model), DetectorConfig(size=512), meta).detect(frame)
    np.testing.assert_array_equal(res.probability, ref.probability)


def test_faithful_mode_runs_each_patch_alone_at_1024(tiny2):
    frame = synthetic_frame(1)[0]
    det = open_detector("tiny-sam2", backend="torch", device="cpu", size=512, mode="faithful")
    assert det.backend.input_size == 1024 and det.batch == 1
    res = det.detect(frame)
    assert res.patches == 4 and np.count_nonzero(res.mask) > 0
    # what it ran: the same weights at E = 1024, on each patch resized to 1024
    model, meta = tiny2
    kept = []

    class Keep(TorchBackend):
        def infer(self, batch):
            kept.append(batch.shape[0])
            return super().infer(batch)

    ref = Detector(Keep(resize_encoder(model, 1024)), DetectorConfig(size=512, mode="faithful"), meta).detect(frame)
    assert kept == [1, 1, 1, 1]
    # the same weights, kernels and batches (1) on the same input: equal but for the
    # last bit (no summation-order bound needed)
    np.testing.assert_allclose(res.probability, ref.probability, atol=1e-6)


def test_fast_equals_faithful_for_a_native_1024_sam2(tmp_path):
    """A SAM 2 whose own E is 1024: fast (batched) and faithful (one at a time) compute
    the same function in other summation orders: probabilities within the parity bound
    (a quarter of 1e-3 of the largest |logit|), masks equal except at ties (probability
    within that bound of the threshold; a small share of the frame)."""
    model = random_model(tiny_sam2_config(image_size=1024, widths=(16, 32, 64, 128), fpn=32), seed=1, fan_in=True)
    ckpt = save_checkpoint(model, load_model("tiny-sam2")[1], tmp_path / "e1024")
    frame = synthetic_frame(3)[0]
    fast = open_detector(str(ckpt), backend="torch", device="cpu", size=512, threshold=0.5)
    faithful = open_detector(str(ckpt), backend="torch", device="cpu", size=512, mode="faithful", threshold=0.5)
    assert fast.backend.input_size == faithful.backend.input_size == 1024 == faithful.backend.input_size
    batches = []

    class Batched(Backend):  # the fast backend without its CPU batch preference: all 4 patches at once
        name, device, input_size, low_res_size = "torch", "cpu", 1024, 256

        def infer(self, batch):
            batches.append(batch.shape[0])
            return fast.backend.infer(batch)

    faithful.backend = recorder = LogitRecorder(faithful.backend)  # the scale of the bound
    a = faithful.detect(frame)
    b = Detector(Batched(), DetectorConfig(size=512, threshold=0.5), fast.meta).detect(frame)
    assert batches == [4] and faithful.batch == 1
    assert_probabilities_close(b.probability, a.probability, recorder.scale, "sam2 fast vs faithful")
    assert_masks_equal_except_ties(a.probability, 0.5, a.mask, b.mask, recorder.scale, sides="reference",
                                   what="sam2 fast vs faithful")
    assert postprocess.mask_iou(a.mask, b.mask) > 0.99


def test_fast_mode_runs_a_sam2_at_another_encoder_size(tiny2):
    """--encoder-size: the same weights at E = 512 (Hiera's feature sizes and the prompt
    encoder follow E; no weight changes), on torch and on an export at that E."""
    frame = synthetic_frame(1)[0]
    det = open_detector("tiny-sam2", backend="torch", device="cpu", size=512, encoder_size=512)
    assert (det.backend.input_size, det.backend.low_res_size) == (512, 128)
    det.backend = recorder = LogitRecorder(det.backend)  # the scale of the probability bound
    res = det.detect(frame)
    ort = open_detector("tiny-sam2", backend="onnxruntime", device="cpu", size=512, encoder_size=512)
    assert ort.backend.input_size == 512
    got = ort.detect(frame)
    # two engines, two summation orders: the parity bound (measured 1e-6)
    assert_probabilities_close(got.probability, res.probability, recorder.scale, "sam2 E=512 onnxruntime vs torch")
    assert np.count_nonzero(res.mask) > 0
    with pytest.raises(ValueError, match="encoder input size 240: must be a positive multiple of 32"):
        open_detector("tiny-sam2", backend="torch", device="cpu", size=512, encoder_size=240)
