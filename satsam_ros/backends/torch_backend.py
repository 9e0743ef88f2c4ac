"""PyTorch backend: the HF SamModel with the prompt policy baked in."""

from __future__ import annotations

import numpy as np

from . import Backend


def make_patch_module(sam_model, prompt_policy: str = "full_box"):
    """Wrap a SamModel as ``module(pixel_values N x 3 x E x E) -> logits N x m x m``.

    The prompt policy is applied inside, so training, inference and ONNX export all
    see the same prompt. ``full_box``: one box (0, 0, E - 1, E - 1) in encoder
    pixels, i.e. the whole patch; single-mask output.
    """
    import torch

    from ..model import PROMPT_POLICIES, encoder_input_size

    if prompt_policy not in PROMPT_POLICIES:
        raise ValueError(f"prompt policy {prompt_policy!r} unknown; known: {PROMPT_POLICIES}")

    class SamPatchModel(torch.nn.Module):
        def __init__(self, sam):
            super().__init__()
            self.sam = sam
            e = float(encoder_input_size(sam) - 1)
            self.register_buffer("box", torch.tensor([[[0.0, 0.0, e, e]]]), persistent=False)

        def forward(self, pixel_values):
            boxes = self.box.expand(pixel_values.shape[0], 1, 4)
            out = self.sam(pixel_values=pixel_values, input_boxes=boxes, multimask_output=False)
            return out.pred_masks[:, 0, 0]

    return SamPatchModel(sam_model)


class TorchBackend(Backend):
    """Runs the patch model with PyTorch on the CPU or a CUDA GPU."""

    name = "torch"

    def __init__(self, sam_model, prompt_policy: str = "full_box", device: str = "cpu"):
        import torch

        from ..model import encoder_input_size

        self._torch = torch
        self.device = device
        self.module = make_patch_module(sam_model, prompt_policy).to(device).eval()
        self.input_size = encoder_input_size(sam_model)
        self.low_res_size = self.input_size // 4

    def infer(self, batch: np.ndarray) -> np.ndarray:
        self.check_batch(batch)
        torch = self._torch
        with torch.inference_mode():
            x = torch.from_numpy(np.ascontiguousarray(batch)).to(self.device)
            logits = self.module(x)
            return logits.float().cpu().numpy()
