"""PyTorch backend: the model's patch module (:func:`satsam_ros.model.make_patch_module`).

Two ways to run the same weights:

* stock (``fused_attention=False``): transformers' own SAM modules, exactly as the
  reference pipeline ran them. Faithful mode uses this.
* fast (``fused_attention=True``): the image encoder's attention blocks are swapped for
  :class:`FusedRelPosAttention`, which computes the same function with less memory
  traffic (see its docstring). The weights are shared, not copied, and the outputs
  agree with the stock modules to float rounding (``test/test_fastpath.py``).

``precision`` selects autocast: ``fp32`` (no autocast), ``bf16`` (CPU or GPU) or
``fp16`` (GPU only). Reduced precision changes the logits by more than float noise,
so it is opt-in, and the benchmark reports how far the masks move.
"""

from __future__ import annotations

import copy
import os
from typing import Dict, Optional

import numpy as np

from ..core.backend import AUTOCAST_PRECISIONS, Backend

# Largest attention-bias block (bytes) the fused attention materialises at once. A
# global-attention layer of ViT-B at E = 1024 has 12 heads x 4096 x 4096 scores per
# patch (805 MB in float32); 16 MB blocks (1024 queries of one head) stay in the
# last-level cache and are reused, instead of faulting in fresh pages every layer.
ATTENTION_BIAS_BUDGET = 16 * 2**20


_CLASSES: Dict[str, type] = {}


def _fused_classes() -> Dict[str, type]:
    """The fused modules (defined lazily: torch is imported only when they are used)."""
    if _CLASSES:
        return _CLASSES
    import torch
    import torch.nn.functional as F

    class FusedRelPosAttention(torch.nn.Module):
        """SAM's image-encoder attention (decomposed relative positions), leaner.

        Input B x h x w x C tokens (one window or the whole token grid), output the
        same shape. The maths is transformers' ``SamVisionAttention``:
        ``softmax(q k^T / sqrt(d) + rel_h[q, k_row] + rel_w[q, k_col]) v``, with the
        same weights (shared with the wrapped module). What differs is how it runs:

        * the relative-position bias is built contiguous, straight in the layout
          ``scaled_dot_product_attention`` reads (the stock SDPA path builds it with
          permuted strides, then pays a full strided copy of B x heads x N x N floats,
          805 MB per ViT-B global layer at E = 1024);
        * it is built and consumed in blocks of at most ``ATTENTION_BIAS_BUDGET``
          bytes (many windows, or a slice of the queries of one head), into one
          reused buffer that stays in the cache, so neither the batch size nor the
          token count multiplies the peak memory;
        * under autocast the attention core runs in float32 (bf16 SDPA on the CPU is
          slower than float32 here; the projections still take the reduced precision).
        """

        def __init__(self, stock):
            super().__init__()
            self.qkv = stock.qkv
            self.proj = stock.proj
            self.num_attention_heads = int(stock.num_attention_heads)
            self.use_rel_pos = bool(stock.use_rel_pos)
            if self.use_rel_pos:
                self.rel_pos_h = stock.rel_pos_h
                self.rel_pos_w = stock.rel_pos_w
            # transformers' own resampling of the tables, so both paths index alike
            self._get_rel_pos = type(stock).get_rel_pos

        def forward(self, hidden_states, output_attentions=None):
            """B x h x w x C -> (B x h x w x C, None), as the stock module."""
            return self.proj(self._attend(self.qkv(hidden_states))), None

        def windowed(self, hidden_states, window: int):
            """Attention within ``window`` x ``window`` windows of B x H x W x C tokens.

            Same result as the stock layer's pad -> partition -> attention -> merge ->
            crop, without its wasted work: the stock layer pads the *input* with zeros
            and projects every padded token (qkv of a zero token is just the qkv bias)
            and projects the padded outputs it then crops. Here qkv runs on the real
            tokens only, the padding is filled with the bias, and the output
            projection runs after the crop. (At E = 256 ViT-B's 14-token windows pad
            the 16 x 16 grid to 28 x 28: three times the tokens.)
            """
            batch, height, width, _ = hidden_states.shape
            qkv = self.qkv(hidden_states)  # B x H x W x 3C
            pad_h, pad_w = (-height) % window, (-width) % window
            if pad_h or pad_w:
                full = qkv.new_empty(batch, height + pad_h, width + pad_w, qkv.shape[-1])
                if self.qkv.bias is None:
                    full.zero_()
                else:
                    full[:] = self.qkv.bias.to(qkv.dtype)
                full[:, :height, :width] = qkv
                qkv = full
            hp, wp = height + pad_h, width + pad_w
            wins = qkv.view(batch, hp // window, window, wp // window, window, -1).permute(0, 1, 3, 2, 4, 5)
            out = self._attend(wins.reshape(-1, window, window, qkv.shape[-1]))  # (B * nW) x w x w x C
            out = out.view(batch, hp // window, wp // window, window, window, -1).permute(0, 1, 3, 2, 4, 5)
            out = out.reshape(batch, hp, wp, -1)[:, :height, :width]
            return self.proj(out)

        def _attend(self, qkv):
            """B x h x w x 3C projected tokens -> B x h x w x C attention output (pre-proj)."""
            batch, height, width, three_c = qkv.shape
            channels = three_c // 3
            heads = self.num_attention_heads
            head_dim = channels // heads
            tokens = height * width
            rows = batch * heads
            qkv = qkv.reshape(batch, tokens, 3, heads, head_dim).permute(2, 0, 3, 1, 4)
            qkv = qkv.reshape(3, rows, tokens, head_dim)  # one copy into (sample, head)-major rows
            device_type = qkv.device.type
            with torch.autocast(device_type, enabled=False):
                if qkv.dtype != torch.float32 and device_type == "cpu":
                    qkv = qkv.float()
                query, key, value = qkv.unbind(0)  # each (B * heads) x N x d
                if not self.use_rel_pos:
                    out = F.scaled_dot_product_attention(query[None], key[None], value[None])[0]
                else:
                    out = torch.empty_like(query)
                    table_h = self._get_rel_pos(self, height, height, self.rel_pos_h).to(query.dtype)
                    table_w = self._get_rel_pos(self, width, width, self.rel_pos_w).to(query.dtype)
                    grid_q = query.view(rows, height, width, head_dim)
                    rel_h = torch.einsum("bhwc,hkc->bhwk", grid_q, table_h).contiguous()
                    rel_w = torch.einsum("bhwc,wkc->bhwk", grid_q, table_w).contiguous()
                    # bias[r, t, kh, kw] = rel_h[r, t, kh] + rel_w[r, t, kw], built one block
                    # of (rows x query tokens) at a time into one reused buffer
                    rel_h = rel_h.view(rows, tokens, height, 1)
                    rel_w = rel_w.view(rows, tokens, 1, width)
                    row_bytes = tokens * tokens * query.element_size()
                    if row_bytes <= ATTENTION_BIAS_BUDGET:
                        row_step, token_step = ATTENTION_BIAS_BUDGET // row_bytes, tokens
                    else:
                        row_step = 1
                        token_step = max(1, ATTENTION_BIAS_BUDGET // (tokens * query.element_size()))
                    reuse = not torch.is_grad_enabled()
                    buffer = None
                    for r0 in range(0, rows, row_step):
                        r1 = min(rows, r0 + row_step)
                        for t0 in range(0, tokens, token_step):
                            t1 = min(tokens, t0 + token_step)
                            shape = (r1 - r0, t1 - t0, height, width)
                            if not reuse:
                                bias = rel_h[r0:r1, t0:t1] + rel_w[r0:r1, t0:t1]
                            else:
                                if buffer is None or tuple(buffer.shape) != shape:
                                    buffer = torch.empty(shape, dtype=query.dtype, device=query.device)
                                bias = torch.add(rel_h[r0:r1, t0:t1], rel_w[r0:r1, t0:t1], out=buffer)
                            # 4-D operands: the CPU flash kernel only takes B x heads x N x d
                            out[r0:r1, t0:t1] = F.scaled_dot_product_attention(
                                query[None, r0:r1, t0:t1], key[None, r0:r1], value[None, r0:r1],
                                attn_mask=bias.view(1, r1 - r0, t1 - t0, tokens),
                            )[0]
            out = out.view(batch, heads, height, width, head_dim).permute(0, 2, 3, 1, 4)
            return out.reshape(batch, height, width, channels)

    class FusedVisionLayer(torch.nn.Module):
        """transformers' ``SamVisionLayer`` (pre-norm attention + MLP, residuals) with
        :class:`FusedRelPosAttention`; windowed layers use its ``windowed`` path.
        Shares every submodule with the wrapped layer."""

        def __init__(self, stock):
            super().__init__()
            self.layer_norm1 = stock.layer_norm1
            self.attn = FusedRelPosAttention(stock.attn)
            self.layer_norm2 = stock.layer_norm2
            self.mlp = stock.mlp
            self.window_size = int(stock.window_size)

        def forward(self, hidden_states):
            normed = self.layer_norm1(hidden_states)
            if self.window_size > 0:
                attended = self.attn.windowed(normed, self.window_size)
            else:
                attended = self.attn(normed)[0]
            hidden_states = hidden_states + attended
            return hidden_states + self.mlp(self.layer_norm2(hidden_states))

    _CLASSES.update(attention=FusedRelPosAttention, layer=FusedVisionLayer)
    return _CLASSES


def with_fused_attention(sam_model):
    """A SamModel sharing ``sam_model``'s weights whose encoder uses fused attention.

    Every encoder layer becomes a ``FusedVisionLayer`` (same submodules, same maths,
    see :class:`FusedRelPosAttention`). The module tree is copied (cheap) while every
    parameter and buffer is shared, so the stock model stays usable as it was and no
    weight memory is duplicated. Returns the new model; ``sam_model`` is unchanged.
    """
    layers = getattr(getattr(sam_model, "vision_encoder", None), "layers", None)
    if layers is None:
        raise ValueError("with_fused_attention: the model has no vision_encoder.layers (not a SamModel?)")
    memo = {id(t): t for t in list(sam_model.parameters()) + list(sam_model.buffers())}
    fast = copy.deepcopy(sam_model, memo)
    fused = _fused_classes()["layer"]
    for i, layer in enumerate(fast.vision_encoder.layers):
        fast.vision_encoder.layers[i] = fused(layer)
    return fast


# Patches per forward on a CPU: about this many token-channels (tokens x hidden size)
# per batch. Measured on a 2-core AMD EPYC (AVX-512): ViT-B at E = 256 (256 tokens x
# 768) is fastest at 4 patches per forward (16: 22 % slower per patch), ViT-B at
# E = 1024 at 1, the 96-wide tiny model at 16 and above. Big batches only add cache
# misses once the matrix products are large; GPUs take the full max_batch.
CPU_BATCH_TOKEN_CHANNELS = 1024 * 768


def cpu_batch(tokens_per_patch: int, hidden_size: int, max_batch: int) -> int:
    """Patches per forward on a CPU for an encoder of this size (1 .. max_batch)."""
    per_patch = max(1, int(tokens_per_patch) * int(hidden_size))
    return max(1, min(int(max_batch), CPU_BATCH_TOKEN_CHANNELS // per_patch))


def check_precision(precision: str, device: str) -> str:
    """Raise ValueError unless ``precision`` is usable on ``device``; return it."""
    if precision not in AUTOCAST_PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(AUTOCAST_PRECISIONS)}; got {precision!r}")
    if precision == "fp16" and not str(device).startswith("cuda"):
        raise ValueError("precision 'fp16' needs a CUDA device (float16 matmuls are slow on the CPU); use 'bf16'")
    return precision


def configure_threads(
    torch_threads: Optional[int] = None,
    interop_threads: Optional[int] = None,
    opencv_threads: Optional[int] = None,
) -> Dict[str, object]:
    """Set the thread pools the detector uses; ``None`` leaves a pool as it is.

    Returns the settings in force afterwards (and the OpenMP wait policy, which can
    only be chosen through the ``OMP_WAIT_POLICY`` environment variable before torch
    is first imported: ``PASSIVE`` keeps idle OpenMP workers from spinning, which
    matters a great deal when other processes, or the node's own DDS threads, share
    the cores). PyTorch allows setting the inter-op pool only once per process, before
    any inter-op work; a later attempt is reported in ``"interop_error"``.
    """
    import cv2
    import torch

    info: Dict[str, object] = {}
    for name, value in (("torch_threads", torch_threads), ("interop_threads", interop_threads),
                        ("opencv_threads", opencv_threads)):
        if value is not None and int(value) < 1:
            raise ValueError(f"{name} must be >= 1; got {value}")
    if torch_threads is not None:
        torch.set_num_threads(int(torch_threads))
    if interop_threads is not None and int(interop_threads) != torch.get_num_interop_threads():
        try:
            torch.set_num_interop_threads(int(interop_threads))
        except RuntimeError as exc:
            info["interop_error"] = str(exc)
    if opencv_threads is not None:
        cv2.setNumThreads(int(opencv_threads))
    info.update({
        "torch_threads": torch.get_num_threads(),
        "interop_threads": torch.get_num_interop_threads(),
        "opencv_threads": cv2.getNumThreads(),
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY", "(unset: libgomp default, spinning)"),
        "cpu_count": os.cpu_count(),
    })
    return info


class TorchBackend(Backend):
    """Runs the patch model with PyTorch on the CPU or a CUDA GPU.

    ``fused_attention``: run the encoder with :class:`FusedRelPosAttention` (same
    weights, same outputs to float rounding, less time and memory). ``precision``:
    ``fp32``, ``bf16`` or ``fp16`` (autocast; fp16 only on CUDA).
    """

    name = "torch"

    def __init__(self, sam_model, prompt_policy: str = "full_box", device: str = "cpu",
                 precision: str = "fp32", fused_attention: bool = False):
        import torch

        from ..model import encoder_geometry, encoder_input_size, make_patch_module

        self._torch = torch
        self.device = device
        self.precision = check_precision(precision, device)
        self.fused_attention = bool(fused_attention)
        model = with_fused_attention(sam_model) if fused_attention else sam_model
        self.module = make_patch_module(model, prompt_policy).to(device).eval()
        self.input_size = encoder_input_size(sam_model)
        self.low_res_size = self.input_size // 4
        self._tokens, self._hidden = encoder_geometry(sam_model)
        self._autocast_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(self.precision)

    def preferred_batch(self, max_batch: int) -> int:
        """Patches per forward for the Detector: ``max_batch`` on a GPU; on a CPU
        what :func:`cpu_batch` finds for this encoder (never more than max_batch)."""
        if not str(self.device).startswith("cpu"):
            return int(max_batch)
        return cpu_batch(self._tokens, self._hidden, max_batch)

    def describe(self) -> str:
        extra = ", fused attention" if self.fused_attention else ""
        return f"{self.name} on {self.device} (encoder input {self.input_size}, {self.precision}{extra})"

    def infer(self, batch: np.ndarray) -> np.ndarray:
        self.check_batch(batch)
        torch = self._torch
        with torch.inference_mode():
            x = torch.from_numpy(np.ascontiguousarray(batch)).to(self.device)
            if self._autocast_dtype is None:
                logits = self.module(x)
            else:
                with torch.autocast(torch.device(self.device).type, dtype=self._autocast_dtype):
                    logits = self.module(x)
            return logits.float().cpu().numpy()
