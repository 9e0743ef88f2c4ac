"""The float32 bounds of :mod:`satsam_ros.core.parity`, exercised.

* The bound holds under other summation orders: torch at 1 and 2 threads, ONNX Runtime
  at 1 and 2 intra-op threads, the export module against the patch module, each at
  batch 1 and 4, against one reference (torch, 1 thread, batch 1) on random patches,
  for every spec of ``PARITY_SPECS``. Batch size moves the order most (measured on 2
  AMD EPYC cores: ``tiny`` 3.1e-5 of the logit scale at batch 4, ``tiny-sam2`` 6e-7;
  threads and engines a few 1e-6 of the scale), the bound is 1e-3 of the scale.
* The bound catches real bugs: an export module with its input channels swapped, one
  encoder block skipped, or a precomputed constant 10 % off is rejected by the same
  assertion (measured 1.4 / 0.85 / 1.7e-2 of the scale for ``tiny``, 1.0 / 0.82 /
  9.3e-3 for ``tiny-sam2``: 17x and 9x the bound for the last), and
  ``export_patch_model`` refuses to write the last, subtlest one.
* The mask-tie count on hand-made arrays.
"""

from __future__ import annotations

import math
import types

import numpy as np
import pytest
import torch
from numerics import (
    MUTATIONS,
    PARITY_SPECS,
    assert_logits_close,
    assert_masks_equal_except_ties,
    batched,
    broken_export_module,
    module_outputs,
    random_patches,
    torch_threads,
)

from satsam_ros.backends.onnxruntime_backend import OnnxRuntimeBackend
from satsam_ros.backends.torch_backend import TorchBackend
from satsam_ros.core.parity import (
    LOGIT_RELATIVE,
    UNIT_ROUNDOFF,
    MaskTies,
    logit_scale,
    logit_tolerance,
    mask_ties,
    max_abs_diff,
    probability_tolerance,
    reduction_error,
)
from satsam_ros.deploy.onnx_export import export_model, export_patch_model, make_export_module
from satsam_ros.model import encoder_input_size, load_model

THREADS = [1, 2]
BATCHES = [1, 4]
PATCHES = 8


@pytest.fixture(scope="module", params=PARITY_SPECS)
def parity(request, tmp_path_factory):
    """One spec: its model, its ONNX export (which verified itself), random patches and
    the reference logits (torch, 1 thread, batch 1)."""
    spec = request.param
    sam, meta = load_model(spec)
    exported = export_model(spec, tmp_path_factory.mktemp("parity") / f"{spec}.onnx", size=512)
    backend = TorchBackend(sam, meta.prompt_policy, "cpu")
    x = random_patches(PATCHES, encoder_input_size(sam), seed=21)
    with torch_threads(1):
        reference = batched(backend.infer, x, 1)
    assert np.abs(reference).std() > 0.1, "logits of order 1, so the bound means something"
    return types.SimpleNamespace(spec=spec, sam=sam, meta=meta, onnx=exported.path, torch=backend, x=x,
                                 reference=reference)


@pytest.mark.parametrize("batch", BATCHES)
@pytest.mark.parametrize("threads", THREADS)
def test_torch_logits_under_other_summation_orders(parity, threads, batch):
    with torch_threads(threads):
        got = batched(parity.torch.infer, parity.x, batch)
    if (threads, batch) == (1, 1):  # the reference's own kernels on the same input: bit-equal
        np.testing.assert_array_equal(got, parity.reference)
    assert_logits_close(got, parity.reference, f"{parity.spec}: torch, {threads} threads, batch {batch}")


@pytest.mark.parametrize("batch", BATCHES)
@pytest.mark.parametrize("threads", THREADS)
def test_onnxruntime_logits_under_other_summation_orders(parity, threads, batch):
    backend = OnnxRuntimeBackend(parity.onnx, "cpu", threads=threads)
    got = batched(backend.infer, parity.x, batch)
    assert_logits_close(got, parity.reference, f"{parity.spec}: onnxruntime, {threads} threads, batch {batch}")


@pytest.mark.parametrize("batch", BATCHES)
@pytest.mark.parametrize("threads", THREADS)
def test_export_module_computes_the_patch_module_in_any_order(parity, threads, batch):
    """The export module holds the pixel-independent parts as precomputed constants:
    the same function as the patch module, not the same kernels."""
    module, reference = make_export_module(parity.sam, parity.meta.prompt_policy)
    with torch_threads(threads):
        got, want = module_outputs(module, parity.x, batch), module_outputs(reference, parity.x, batch)
    assert_logits_close(got[0], want[0], f"{parity.spec}: export module, {threads} threads, batch {batch}")
    assert_logits_close(got[0], parity.reference, f"{parity.spec}: export module vs the reference")
    for i, (a, b) in enumerate(zip(got[1:], want[1:]), 1):  # further outputs (an object score): the same bound
        assert_logits_close(a, b, f"{parity.spec}: export module output {i}")


def test_torch_threads_restores_the_previous_count():
    before = torch.get_num_threads()
    with torch_threads(1 if before != 1 else 2):
        assert torch.get_num_threads() != before
    assert torch.get_num_threads() == before


# --------------------------------------------------------------------------- real bugs


@pytest.mark.parametrize("mutation", list(MUTATIONS))
def test_a_real_bug_fails_the_parity_assertion(parity, mutation):
    module, reference = broken_export_module(parity.sam, mutation)
    got, want = module_outputs(module, parity.x[:4])[0], module_outputs(reference, parity.x[:4])[0]
    # a bug is well clear of the bound (at least 2x; float noise stays under 1/20 of it):
    # measured 17x (tiny) and 9x (tiny-sam2) for the subtlest, a constant 10 % off
    assert max_abs_diff(got, want) > 2 * logit_tolerance(want)
    with pytest.raises(AssertionError, match="more than float32 rounding"):
        assert_logits_close(got, want, f"{parity.spec}: {mutation}")


def test_the_export_refuses_to_write_a_subtly_wrong_graph(parity, tmp_path, monkeypatch):
    import satsam_ros.deploy.onnx_export as export

    broken = broken_export_module(parity.sam, "a constant 10% off")
    monkeypatch.setattr(export, "make_export_module", lambda sam, policy="full_box": broken)
    out = tmp_path / "bad" / "m.onnx"
    with pytest.raises(ValueError, match=r"disagrees with the PyTorch patch model: max \|logit difference\| "):
        export_patch_model(parity.sam, parity.meta, out, size=512, source=parity.spec)
    assert list(out.parent.iterdir()) == [], "nothing may be left behind"


# --------------------------------------------------------------------------- the definitions


def test_tolerances_follow_the_scale():
    assert UNIT_ROUNDOFF == 2.0 ** -24 and reduction_error(4096) == pytest.approx(64 * UNIT_ROUNDOFF)
    assert logit_scale(np.array([0.2, -0.5])) == 1.0 and logit_scale(np.array([3.0, -8.0])) == 8.0
    assert logit_tolerance(np.array([-8.0])) == pytest.approx(8 * LOGIT_RELATIVE) == logit_tolerance(8.0)
    assert logit_tolerance(0.01) == LOGIT_RELATIVE  # near-zero logits: the bound of scale 1
    assert probability_tolerance(8.0) == pytest.approx(8 * LOGIT_RELATIVE / 4 + 1e-6)
    assert math.isnan(logit_tolerance(np.array([1.0, np.nan])))
    assert max_abs_diff(np.zeros(3), np.ones(3)) == 1.0 and max_abs_diff(np.zeros(3), np.zeros(4)) == math.inf
    assert math.isnan(max_abs_diff(np.zeros(2), np.array([0.0, np.nan])))



def test_mask_ties_counts_ties_and_flips():
    prob = np.array([[0.10, 0.4999, 0.5, 0.5001, 0.9]], np.float32)
    ref = np.where(prob > 0.5, 255, 0).astype(np.uint8)
    other = ref.copy()
    other[0, 2] = 255  # a tie flipped
    assert mask_ties(prob, 0.5, ref, other, 2e-4) == MaskTies(5, 3, 1, 0)
    other[0, 0] = 255  # a real difference
    counts = mask_ties(prob, 0.5, ref, other, 2e-4)
    assert counts == MaskTies(5, 3, 2, 1) and counts.tie_share == pytest.approx(0.6)
    with pytest.raises(ValueError, match="shapes differ"):
        mask_ties(prob, 0.5, ref, other[:, :3], 2e-4)


def test_mask_assertion_rejects_flips_degenerate_ties_and_trivial_masks():
    prob = np.linspace(0.0, 1.0, 10001, dtype=np.float32).reshape(1, -1)
    ref = np.where(prob > 0.5, 255, 0).astype(np.uint8)
    tol = probability_tolerance(1.0)  # 2.5e-4 + 1e-6: about 5 pixels each side of 0.5 here
    near = np.abs(prob - 0.5) <= tol
    other = np.where(near, 255 - ref, ref).astype(np.uint8)  # every tie flipped: allowed
    counts = assert_masks_equal_except_ties(prob, 0.5, ref, other, 1.0)
    assert counts.flipped == counts.ties == int(near.sum()) > 0
    far = other.copy()
    far[0, 0] = 255
    with pytest.raises(AssertionError, match="1 pixels differ away from ties"):
        assert_masks_equal_except_ties(prob, 0.5, ref, far, 1.0)
    with pytest.raises(AssertionError, match="a degenerate comparison"):
        assert_masks_equal_except_ties(prob, 0.5, ref, ref, 1000.0)  # a bound of 0.25: half the pixels tie
    with pytest.raises(AssertionError, match="needs foreground and background"):
        assert_masks_equal_except_ties(prob, 1.0, np.zeros_like(ref), np.zeros_like(ref), 1.0)
