"""Fused attention for SAM's image encoder: the same function as transformers' modules,
with less memory traffic (the torch backend's fast mode).

This module imports torch; the torch backend imports it only when it builds a fast
model, so importing :mod:`satsam_ros.backends` stays cheap.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F

# Largest attention-bias block (bytes) the fused attention materialises at once. A
# global-attention layer of ViT-B at E = 1024 has 12 heads x 4096 x 4096 scores per
# patch (805 MB in float32); 16 MB blocks (1024 queries of one head) stay in the
# last-level cache and are reused, instead of faulting in fresh pages every layer.
ATTENTION_BIAS_BUDGET = 16 * 2**20


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
    for i, layer in enumerate(fast.vision_encoder.layers):
        fast.vision_encoder.layers[i] = FusedVisionLayer(layer)
    return fast
