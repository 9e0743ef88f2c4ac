"""The fast path computes what the faithful path computes, only faster.

"Same" is defined precisely here. Faithful mode resizes every 256 patch to 1024 and
runs it alone through transformers' stock SAM modules; fast mode batches patches and
swaps in the fused attention. For a model whose native encoder input E is 1024 the two
run the same function on the same inputs with other kernels and another batch, so
their float32 sums run in other orders: their logits must agree to
satsam_ros.core.parity's bound (1e-3 of the largest |logit|), their probabilities to a
quarter of it, and their masks must be identical at every pixel whose probability is
not within that probability bound of the threshold (ties, counted: a small share of
the frame). (For a model with E = 256, faithful mode is a *different* computation
(the encoder resized to 1024), which the benchmark compares on speed only.)
"""

import cv2
import numpy as np
import pytest
import torch
from numerics import assert_logits_close, assert_masks_equal_except_ties, assert_probabilities_close

from satsam_ros.backends.fused_attention import with_fused_attention
from satsam_ros.backends.torch_backend import (
    TorchBackend,
    check_precision,
    configure_threads,
    cpu_batch,
)
from satsam_ros.core import imaging, postprocess, tiling
from satsam_ros.core.backend import Backend
from satsam_ros.core.detector import Detector, DetectorConfig
from satsam_ros.core.preprocess import resize_patches
from satsam_ros.core.synthetic import synthetic_frame
from satsam_ros.model import SatsamMeta, load_model, random_model, save_checkpoint, tiny_config
from satsam_ros.runtime import open_detector


def loud(model, seed=0, gain=1.0):
    """Random relative-position tables (SAM initialises them to zero, which would hide
    the bias maths) and the mask logits scaled by ``gain`` (transformers' init gives
    ~1e-4: 3000 brings them to order 1; the ``tiny`` spec's are of order 1 already)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "rel_pos" in name:
                p.copy_(torch.randn(p.shape, generator=gen) * 0.5)
        last = model.mask_decoder.output_hypernetworks_mlps[0].proj_out
        last.weight.mul_(gain)
        last.bias.mul_(gain)
    return model


@pytest.fixture(scope="module")
def tiny_loud():
    return loud(load_model("tiny")[0])


def test_fused_attention_is_the_same_function_and_shares_weights(tiny_loud):
    x = np.random.default_rng(0).standard_normal((3, 3, 256, 256)).astype(np.float32)
    stock = TorchBackend(tiny_loud)
    fused = TorchBackend(tiny_loud, fused_attention=True)
    a, b = stock.infer(x), fused.infer(x)
    assert np.abs(a).max() > 0.1  # logits of order 1, so the tolerance below means something
    # one function, two kernels (fused scaled-dot-product vs stock attention): other
    # float32 summation orders, so the parity bound, not bit equality
    assert_logits_close(b, a, "fused vs stock attention")
    # the swap touched a copy of the module tree; the weights are the same tensors
    layers = fused.module.sam.vision_encoder.layers
    assert layers[0].window_size == 7 and layers[1].window_size == 0  # windowed (padded 16 -> 21) and global
    assert {type(x).__name__ for x in layers} == {"FusedVisionLayer"}
    layer = layers[1]
    assert type(layer.attn).__name__ == "FusedRelPosAttention"
    assert type(tiny_loud.vision_encoder.layers[1].attn).__name__ != "FusedRelPosAttention"
    assert layer.attn.qkv.weight is tiny_loud.vision_encoder.layers[1].attn.qkv.weight
    assert layer.attn.rel_pos_h is tiny_loud.vision_encoder.layers[1].attn.rel_pos_h


def test_fused_attention_splits_big_biases_into_blocks(tiny_loud, monkeypatch):
    """Force one query block per few tokens: the blocked result is still the same."""
    import satsam_ros.backends.fused_attention as fa

    x = np.random.default_rng(1).standard_normal((2, 3, 256, 256)).astype(np.float32)
    want = TorchBackend(tiny_loud).infer(x)
    monkeypatch.setattr(fa, "ATTENTION_BIAS_BUDGET", 256 * 256 * 4 // 3)  # < one head of the global layers
    got = TorchBackend(tiny_loud, fused_attention=True).infer(x)
    assert_logits_close(got, want, "blocked fused vs stock attention")  # blocks: another summation order


def test_with_fused_attention_rejects_other_models():
    with pytest.raises(ValueError, match="no vision_encoder.layers"):
        with_fused_attention(torch.nn.Linear(2, 2))


@pytest.fixture(scope="module")
def e1024_checkpoint(tmp_path_factory):
    """A 2-layer tiny SAM whose native encoder input is 1024, saved as a checkpoint."""
    model = loud(random_model(tiny_config(image_size=1024, layers=2), seed=1), seed=1, gain=3000.0)
    out = tmp_path_factory.mktemp("e1024") / "ckpt"
    save_checkpoint(model, SatsamMeta(), out)
    return str(out)


class Keep(Backend):
    """Passes batches to a real backend and keeps the logits it returns."""

    def __init__(self, inner):
        self.inner, self.name, self.device = inner, inner.name, inner.device
        self.input_size, self.low_res_size = inner.input_size, inner.low_res_size
        self.kept = []

    def infer(self, batch):
        out = self.inner.infer(batch)
        self.kept.append(out)
        return out


def test_fast_equals_faithful_when_the_model_is_native_1024(e1024_checkpoint):
    """Float noise: |logit diff| within satsam_ros.core.parity's bound, 1e-3 x the largest
    |logit| (float32 sums over thousands of terms, blocked differently for a batch of 4
    than for 1, and fused against stock attention)."""
    frame = synthetic_frame(7)[0]
    fast = open_detector(e1024_checkpoint, backend="torch", device="cpu", size=512, mode="fast")
    faithful = open_detector(e1024_checkpoint, backend="torch", device="cpu", size=512, mode="faithful")
    assert fast.backend.fused_attention and fast.batch == fast.backend.preferred_batch(16) == 2
    assert not faithful.backend.fused_attention and faithful.batch == 1
    assert fast.backend.input_size == faithful.backend.input_size == 1024
    ka, kb = Keep(faithful.backend), Keep(fast.backend)
    a = Detector(ka, DetectorConfig(size=512, mode="faithful")).detect(frame)
    b = Detector(kb, DetectorConfig(size=512, mode="fast")).detect(frame)
    assert [x.shape[0] for x in ka.kept] == [1, 1, 1, 1] and [x.shape[0] for x in kb.kept] == [4]
    la, lb = np.concatenate(ka.kept), np.concatenate(kb.kept)
    scale = np.abs(la).max()
    assert scale > 0.5  # logits of order 1
    assert_logits_close(lb, la, "fast vs faithful logits")
    assert_probabilities_close(b.probability, a.probability, scale, "fast vs faithful")
    # masks: identical wherever the probability is not within the probability bound of
    # the threshold; at the default threshold and at the median (half the pixels on);
    # ties at most 1 % of the frame (measured 0.24 % and 0.37 %)
    for thr, ma, mb in [(a.threshold, a.mask, b.mask)] + [
        (t, postprocess.threshold(a.probability, t), postprocess.threshold(b.probability, t))
        for t in [float(np.median(a.probability))]
    ]:
        assert (ma > 0).any()
        assert_masks_equal_except_ties(a.probability, thr, ma, mb, scale, sides="reference",
                                       what=f"fast vs faithful at threshold {thr:.3f}")
    assert 0.4 < (ma > 0).mean() < 0.6


def test_cpu_batch_follows_the_encoder_size():
    """Measured: ViT-B at E = 256 is fastest at 4 patches per forward, at E = 1024 at 1,
    the tiny model at 16; a GPU takes max_batch."""
    assert cpu_batch(16 * 16, 768, 16) == 4
    assert cpu_batch(64 * 64, 768, 16) == 1
    assert cpu_batch(16 * 16, 96, 16) == 16 and cpu_batch(16 * 16, 96, 8) == 8
    det = open_detector("tiny", backend="torch", device="cpu", size=1024)
    assert det.batch == 16
    det = open_detector("tiny", backend="torch", device="cpu", size=512, max_batch=3)
    assert det.batch == 3


def test_bf16_runs_close_and_fp16_needs_a_gpu(tiny_loud):
    x = np.random.default_rng(2).standard_normal((2, 3, 256, 256)).astype(np.float32)
    ref = TorchBackend(tiny_loud, fused_attention=True).infer(x)
    low = TorchBackend(tiny_loud, precision="bf16", fused_attention=True).infer(x)
    assert low.dtype == np.float32 and low.shape == ref.shape
    # rounded, not broken. (Random weights make bf16 look worse than it is: their
    # logits are small differences of large terms.)
    assert np.abs(low - ref).max() > 0
    assert np.corrcoef(ref.ravel(), low.ravel())[0, 1] > 0.9
    assert ((ref > 0) == (low > 0)).mean() > 0.85
    with pytest.raises(ValueError, match="precision 'fp16' needs a CUDA device"):
        check_precision("fp16", "cpu")
    with pytest.raises(ValueError, match="precision must be one of fp32, bf16, fp16; got 'int4'"):
        TorchBackend(tiny_loud, precision="int4")


@pytest.mark.parametrize(
    "kwargs, words",
    [
        ({"precision": "fp8"}, "precision must be one of"),
        ({"mode": "faithful", "precision": "bf16"}, "precision 'bf16' needs mode 'fast'"),
        ({"encoder_size": 100}, "encoder_size must be a multiple of 16"),
        ({"mode": "faithful", "encoder_size": 256}, "encoder_size needs mode 'fast'"),
    ],
)
def test_new_settings_are_checked(kwargs, words):
    with pytest.raises(ValueError, match=words):
        DetectorConfig(**kwargs).validate()


def test_encoder_size_runs_the_encoder_at_that_size():
    det = open_detector("tiny", backend="torch", device="cpu", size=512, encoder_size=128)
    assert det.backend.input_size == 128 and det.backend.low_res_size == 32
    res = det.detect(synthetic_frame(0)[0])
    assert res.mask.shape == (512, 641) and res.patches == 4


class Capture(Backend):
    name = "capture"

    def __init__(self, size=256):
        self.input_size = size
        self.low_res_size = 64
        self.seen = []

    def infer(self, batch):
        self.check_batch(batch)
        self.seen.append(batch.copy())
        return np.zeros((batch.shape[0], 64, 64), np.float32)


def frames_of_every_kind():
    gray = synthetic_frame(2)[0]
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (300, 420, 3), dtype=np.uint8)
    return [
        (gray, "rgb"),
        (gray[:, :, None], "rgb"),
        ((gray.astype(np.uint16) * 257), "rgb"),
        (rgb, "rgb"),
        (rgb, "bgr"),
        (np.dstack([rgb, rgb[:, :, :1]]), "bgra"),
        (gray.astype(np.float32) / 255.0, "rgb"),
    ]


@pytest.mark.parametrize("size", [512, 1024])
@pytest.mark.parametrize("overlap", [0, 32])
def test_preprocessing_matches_the_plain_pipeline(size, overlap):
    """Normalisation in place on the patch copy, gray frames resized as one channel:
    the model sees exactly what resize -> normalise -> cut -> transpose would give."""
    for frame, order in frames_of_every_kind():
        cap = Capture()
        Detector(cap, DetectorConfig(size=size, overlap=overlap, max_batch=64)).detect(frame, order)
        got = np.concatenate(cap.seen)
        grid = tiling.PatchGrid(size, 256, overlap)
        plain = imaging.normalize(tiling.resize(imaging.to_sam_rgb(frame, order), size, size))
        want = np.ascontiguousarray(grid.extract(plain).transpose(0, 3, 1, 2))
        np.testing.assert_array_equal(got, want)


def test_patch_resize_matches_one_cv2_call_per_patch():
    patches = np.random.default_rng(3).standard_normal((5, 3, 64, 64)).astype(np.float32)
    got = resize_patches(patches, 256)
    want = np.stack([cv2.resize(p.transpose(1, 2, 0), (256, 256), interpolation=cv2.INTER_LINEAR).transpose(2, 0, 1)
                     for p in patches])
    np.testing.assert_array_equal(got, want)
    assert resize_patches(patches, 64) is patches


@pytest.mark.parametrize("blobs", [3, 80])
def test_component_scores_match_a_full_frame_bincount(blobs):
    rng = np.random.default_rng(blobs)
    mask = np.zeros((200, 300), np.uint8)
    for _ in range(blobs):
        y, x = rng.integers(0, 195), rng.integers(0, 295)
        mask[y:y + rng.integers(1, 5), x:x + rng.integers(1, 5)] = 255
    prob = rng.random((200, 300)).astype(np.float32)
    boxes = postprocess.boxes_from_mask(mask.copy(), prob)
    count, labels, stats, _ = cv2.connectedComponentsWithStats((mask > 0).astype(np.uint8), connectivity=8)
    sums = np.bincount(labels.ravel(), weights=prob.ravel().astype(np.float64), minlength=count)
    want = sorted(sums[1:] / stats[1:, cv2.CC_STAT_AREA], reverse=True)
    assert len(boxes) == count - 1
    np.testing.assert_allclose([b.score for b in boxes], want, rtol=1e-12)


def test_configure_threads_sets_and_reports():
    before = torch.get_num_threads(), cv2.getNumThreads()
    try:
        info = configure_threads(torch_threads=1, opencv_threads=1)
        assert info["torch_threads"] == 1 == torch.get_num_threads()
        assert info["opencv_threads"] == 1 and "omp_wait_policy" in info
        with pytest.raises(ValueError, match="torch_threads must be >= 1; got 0"):
            configure_threads(torch_threads=0)
    finally:
        torch.set_num_threads(before[0])
        cv2.setNumThreads(before[1])
