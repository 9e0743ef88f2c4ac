"""Assertions for numerical comparisons in the tests, on the bounds of
:mod:`satsam_ros.core.parity` (its docstring derives them), and deliberately broken
patch modules that those assertions must reject.

* :func:`assert_logits_close`: two float32 runs' logits within ``logit_tolerance``.
* :func:`assert_probabilities_close`: Detector probabilities within ``probability_tolerance``.
* :func:`assert_masks_equal_except_ties`: masks equal except at ties, ties a small
  share of the frame, foreground and background present.
* :class:`LogitRecorder`: a backend wrapper keeping the reference's largest |logit|
  (the scale the bounds are relative to) when only Detector results are compared.
* :func:`torch_threads`: run under another torch thread count, restored afterwards.
* :data:`MUTATIONS` / :func:`broken_export_module`: export modules with a real bug.
"""

from __future__ import annotations

import contextlib
import copy
import json
import os
from typing import Callable, Dict, Iterator, List, Optional

import numpy as np

from satsam_ros.core.backend import Backend
from satsam_ros.core.parity import (
    MAX_TIE_SHARE,
    MaskTies,
    logit_scale,
    logit_tolerance,
    mask_ties,
    max_abs_diff,
    probability_tolerance,
)

#: the model specs every order-sensitivity and mutation test runs on; a new family's
#: small spec is added here (and only here)
PARITY_SPECS: List[str] = ["tiny", "tiny-sam2", "tiny-edgetam"]


def _log(**fields) -> None:
    """With SATSAM_NUMERICS_LOG set, append one JSON line per comparison to that file
    (how the measured differences in the docstrings were collected)."""
    path = os.environ.get("SATSAM_NUMERICS_LOG")
    if path:
        with open(path, "a") as fh:
            fh.write(json.dumps({k: v if isinstance(v, str) else float(v) for k, v in fields.items()}) + "\n")


def assert_logits_close(got: np.ndarray, reference: np.ndarray, what: str = "logits") -> float:
    """``got`` agrees with ``reference`` to ``logit_tolerance(reference)``; returns the
    largest difference (for reports)."""
    diff, tol = max_abs_diff(got, reference), logit_tolerance(reference)
    _log(kind="logits", what=what, diff=diff, tolerance=tol, scale=logit_scale(reference))
    assert diff <= tol, (f"{what}: max |logit difference| {diff:.3g} > {tol:.3g} "
                         f"(1e-3 of the scale {logit_scale(reference):.3g}): more than float32 rounding")
    return diff


def assert_probabilities_close(got: np.ndarray, reference: np.ndarray, scale: float,
                               what: str = "probabilities") -> float:
    """Probabilities agree to ``probability_tolerance(scale)``, ``scale`` the reference
    run's largest |logit| (:class:`LogitRecorder`); returns the largest difference."""
    diff, tol = max_abs_diff(got, reference), probability_tolerance(scale)
    _log(kind="probabilities", what=what, diff=diff, tolerance=tol, scale=scale)
    assert diff <= tol, f"{what}: max |probability difference| {diff:.3g} > {tol:.3g} (logit scale {scale:.3g})"
    return diff


def assert_masks_equal_except_ties(reference_probability: np.ndarray, threshold: float, reference_mask: np.ndarray,
                                   other_mask: np.ndarray, scale: float, max_tie_share: float = MAX_TIE_SHARE,
                                   sides: str = "both", what: str = "masks") -> MaskTies:
    """The masks are equal wherever the reference probability is farther from the
    threshold than the probability bound; flips (only at ties) are counted, ties are
    at most ``max_tie_share`` of the frame, and both masks (``sides="both"``), the
    reference only (``"reference"``) or neither (``"none"``, for a frame that is meant
    to be empty) hold foreground and background (the reference also away from ties),
    else the comparison means nothing."""
    counts = mask_ties(reference_probability, threshold, reference_mask, other_mask, probability_tolerance(scale))
    _log(kind="masks", what=what, scale=scale, **counts._asdict())
    masks = {"both": (reference_mask, other_mask), "reference": (reference_mask,), "none": ()}[sides]
    for mask in masks:
        assert 0 < np.count_nonzero(mask) < np.size(mask), f"{what}: the comparison needs foreground and background"
    if masks:  # ... and away from ties too, where the masks must agree
        decided = np.asarray(reference_mask)[np.abs(np.asarray(reference_probability, np.float64) - threshold)
                                             > probability_tolerance(scale)] > 0
        assert decided.any() and not decided.all(), f"{what}: no foreground or no background away from ties"
    assert counts.flipped_outside_ties == 0, f"{what}: {counts.flipped_outside_ties} pixels differ away from ties"
    assert counts.flipped <= counts.ties
    assert counts.tie_share <= max_tie_share, (
        f"{what}: {counts.ties} of {counts.pixels} pixels are ties ({counts.tie_share:.2%}): a degenerate comparison")
    return counts


def assert_results_agree(ref, got, scale: float, threshold: Optional[float] = None, what: str = "results",
                         max_tie_share: float = MAX_TIE_SHARE, sides: str = "both") -> MaskTies:
    """Two Detector Results of one frame: probabilities within the bound, masks equal except at ties."""
    thr = ref.threshold if threshold is None else threshold
    assert_probabilities_close(got.probability, ref.probability, scale, what)
    return assert_masks_equal_except_ties(ref.probability, thr, ref.mask, got.mask, scale, max_tie_share,
                                          sides, what)


class LogitRecorder(Backend):
    """Passes batches to a real backend and keeps the largest |logit| it returned."""

    def __init__(self, inner: Backend):
        self.inner, self.name, self.device = inner, inner.name, inner.device
        self.input_size, self.low_res_size = inner.input_size, inner.low_res_size
        self.largest = 0.0

    def preferred_batch(self, max_batch: int) -> int:
        return self.inner.preferred_batch(max_batch)

    def infer(self, batch: np.ndarray) -> np.ndarray:
        out = self.inner.infer(batch)
        self.largest = max(self.largest, float(np.max(np.abs(out))))
        return out

    @property
    def scale(self) -> float:
        return logit_scale(self.largest)


@contextlib.contextmanager
def torch_threads(n: int) -> Iterator[None]:
    """torch's intra-op thread count set to ``n`` inside, the previous one restored."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(int(n))
    try:
        yield
    finally:
        torch.set_num_threads(before)


def batched(infer: Callable[[np.ndarray], np.ndarray], x: np.ndarray, batch: int) -> np.ndarray:
    """``infer`` over ``x`` in batches of ``batch`` (the last one shorter), concatenated."""
    return np.concatenate([infer(x[i:i + batch]) for i in range(0, len(x), batch)])


def module_outputs(module, x: np.ndarray, batch: Optional[int] = None) -> List[np.ndarray]:
    """A patch / export module's outputs on ``x`` (in batches of ``batch``) as float32
    arrays: logits first, then whatever else it returns (an object score, say)."""
    import torch

    chunks: List[List[np.ndarray]] = []
    step = len(x) if batch is None else int(batch)
    with torch.inference_mode():
        for i in range(0, len(x), step):
            out = module(torch.from_numpy(np.ascontiguousarray(x[i:i + step])))
            chunks.append([o.float().cpu().numpy() for o in (out if isinstance(out, (tuple, list)) else (out,))])
    return [np.concatenate(parts) for parts in zip(*chunks)]


def export_check_scale(sam) -> float:
    """The largest |logit| of ``sam``'s patch module on the batch ``export_patch_model``
    checks the ONNX graph on (2 patches of torch.randn with seed 0): the scale of the
    bound that check applied."""
    import torch

    from satsam_ros.model import encoder_input_size, make_patch_module

    e = encoder_input_size(sam)
    dummy = torch.randn(2, 3, e, e, generator=torch.Generator().manual_seed(0)).numpy()
    return float(np.max(np.abs(module_outputs(make_patch_module(sam).eval(), dummy)[0])))


def random_patches(n: int, e: int = 256, seed: int = 0) -> np.ndarray:
    """n x 3 x e x e N(0, 1) float32: SAM-normalised pixels no generator makes."""
    return np.random.default_rng(seed).standard_normal((n, 3, e, e)).astype(np.float32)


# --------------------------------------------------------------------------- mutations


def _swap_channels(module):
    """RGB read as BGR: the input's channels reversed before the model."""
    import torch

    class SwappedChannels(torch.nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, pixel_values):
            return self.inner(pixel_values.flip(1))

    return SwappedChannels(module)


def _skip_a_block(module):
    """The first encoder block whose output has its input's shape replaced by the
    identity (a forward hook returning the block's input): a missing layer."""
    import torch

    blocks = [m for lst in module.modules() if isinstance(lst, torch.nn.ModuleList) for m in lst]
    seen: Dict[int, bool] = {}

    def probe(m, args, out):
        first = out[0] if isinstance(out, (tuple, list)) else out
        seen.setdefault(id(m), bool(args) and torch.is_tensor(first) and tuple(first.shape) == tuple(args[0].shape))

    handles = [b.register_forward_hook(probe) for b in blocks]
    with torch.no_grad():
        module(torch.zeros(1, 3, *_input_hw(module)))
    for h in handles:
        h.remove()
    block = next(b for b in blocks if seen.get(id(b)))

    def identity(m, args, out):
        return (args[0],) + tuple(out[1:]) if isinstance(out, tuple) else args[0]

    block.register_forward_hook(identity)
    return module


def _scale_a_constant(module):
    """A precomputed constant 10 % off: the image-wide positional embedding the export
    module holds as a buffer (``positional``; else its first own buffer) scaled by 1.1."""
    import torch

    name = "positional" if "positional" in module._buffers else next(iter(module._buffers))
    with torch.no_grad():
        module._buffers[name].mul_(1.1)
    return module


def _input_hw(module):
    return (module.input_size, module.input_size)


#: name -> function(export module) -> broken export module (on a deep copy of the model)
MUTATIONS: Dict[str, Callable] = {
    "channels swapped": _swap_channels,
    "one block skipped": _skip_a_block,
    "a constant 10% off": _scale_a_constant,
}


def broken_export_module(sam, mutation: str):
    """(broken export module, reference patch module): the export module of a deep copy
    of ``sam`` with the bug, the patch module of ``sam`` itself, untouched."""
    from satsam_ros.deploy.onnx_export import make_export_module
    from satsam_ros.model import encoder_input_size

    _, reference = make_export_module(sam)
    module, _ = make_export_module(copy.deepcopy(sam))
    module.input_size = encoder_input_size(sam)
    return MUTATIONS[mutation](module).eval(), reference
