"""The SAM 2 family: transformers' ``Sam2Model`` (SAM 2 and SAM 2.1, Hiera encoder).

What is specific to SAM 2 sits here behind :class:`Sam2Family`, which
:mod:`satsam_ros.model` registers under the ``model_type`` values ``sam2`` and
``sam2_video`` (the hub's ``facebook/sam2.1-hiera-*`` folders are ``sam2_video``: the
video model's memory weights are ignored by ``Sam2Model.from_pretrained``).

Shapes are those of the SAM family: ``pixel_values`` N x 3 x E x E float32
(SAM-normalised RGB), logits N x m x m with m = E / 4. Two things differ from SAM:

* **E and the configuration.** Hiera resamples its 7 x 7 background position
  embedding to the token grid in every forward, so running at another E changes no
  weight: only ``backbone_feature_sizes`` (E/4, E/8, E/16, used to reshape the FPN
  maps) and the prompt encoder's ``image_size`` follow E. E must be a multiple of 32
  (patch stride 4 x stage-0 window 8).
* **The single-mask policy.** With ``multimask_output=False`` in eval mode SAM 2's
  decoder swaps mask token 0 for the best multimask output when its stability score
  is under 0.98 (``dynamic_multimask_via_stability``, on in every released
  checkpoint); in train mode it never does. :func:`single_mask_policy` turns it off,
  so training, inference and the ONNX graph compute one function (token 0, as SAM's
  single mask). It is stored in ``config.json``, so checkpoints keep it.

torch and transformers are imported inside the functions (this module is imported
by :mod:`satsam_ros.model`, which the ONNX Runtime and TensorRT backends import).
"""

from __future__ import annotations

import copy
from typing import Any, List, Sequence, Tuple

#: transformers ``model_type`` values of this family
SAM2_MODEL_TYPES = ("sam2", "sam2_video")
HIERA_STAGES = 4


def _first(value) -> int:
    """An int from a size that transformers may store as an int or a pair."""
    return int(value[0] if isinstance(value, (list, tuple)) else value)


def hiera_feature_sizes(image_size: int) -> List[List[int]]:
    """``backbone_feature_sizes`` of a 4-stage Hiera (patch stride 4) at E: E/4, E/8, E/16."""
    return [[image_size // 4] * 2, [image_size // 8] * 2, [image_size // 16] * 2]


def _check_stages(name: str, values: Sequence[int]) -> List[int]:
    out = [int(v) for v in values]
    if len(out) != HIERA_STAGES or min(out) < 1:
        raise ValueError(f"SAM 2 {name} must be {HIERA_STAGES} positive integers (one per Hiera stage); "
                         f"got {list(values)}")
    return out


def _check_image_size(image_size: int) -> int:
    if int(image_size) < 32 or int(image_size) % 32:
        raise ValueError(f"SAM 2 encoder input size {image_size}: must be a positive multiple of 32 "
                         "(patch stride 4 x stage-0 window 8)")
    return int(image_size)


def tiny_sam2_config(image_size: int = 256, widths: Sequence[int] = (32, 64, 128, 256),
                     blocks: Sequence[int] = (1, 1, 2, 1), heads: Sequence[int] = (1, 1, 2, 4), fpn: int = 64):
    """A small Sam2Config (1.41 M parameters at the defaults) for tests and from-scratch training.

    ``widths``, ``blocks``, ``heads``: per Hiera stage (4 each), the channel width, the
    number of blocks and the attention heads (each width a multiple of its heads).
    ``fpn``: the FPN width, which is also the prompt encoder's and the mask decoder's
    hidden size (a multiple of 8: the decoder's high-resolution convolutions output
    fpn/8 and fpn/4 channels). Windows 8/4/8/4 (at E = 256 stage 2 is a 16 x 16 grid:
    two 8-windows a side instead of padding to SAM 2's 14); one global-attention
    block, the last block of stage 2, which therefore needs at least 2 blocks (a global
    block at the first block of a pooling stage has window 0, and the query pooling's
    padding divides by it). Raises ValueError naming the bad value.
    """
    from transformers import Sam2Config

    image_size = _check_image_size(image_size)
    widths, blocks, heads = (_check_stages(n, v) for n, v in (("widths", widths), ("blocks", blocks),
                                                              ("heads", heads)))
    for w, h in zip(widths, heads):
        if w % h:
            raise ValueError(f"SAM 2 widths {widths}: width {w} is not a multiple of its heads {h} (heads {heads})")
    if blocks[2] < 2:
        raise ValueError(f"SAM 2 blocks {blocks}: stage 3 (the global-attention stage) needs at least 2 blocks")
    if int(fpn) < 16 or int(fpn) % 8:
        raise ValueError(f"SAM 2 fpn {fpn}: must be a multiple of 8, at least 16")
    fpn = int(fpn)
    backbone = {
        "model_type": "sam2_hiera_det_model",
        "hidden_size": widths[0],
        "embed_dim_per_stage": widths,
        "blocks_per_stage": blocks,
        "num_attention_heads_per_stage": heads,
        "num_attention_heads": heads[0],
        "window_size_per_stage": [8, 4, 8, 4],
        "global_attention_blocks": [sum(blocks[:3]) - 1],
        "window_positional_embedding_background_size": [7, 7],
        "image_size": [image_size, image_size],
    }
    vision = {
        "backbone_config": backbone,
        "backbone_channel_list": list(reversed(widths)),
        "backbone_feature_sizes": hiera_feature_sizes(image_size),
        "fpn_hidden_size": fpn,
    }
    prompt = {"hidden_size": fpn, "image_size": image_size, "patch_size": 16}
    decoder = {"hidden_size": fpn, "mlp_dim": fpn * 4, "num_attention_heads": 4, "iou_head_hidden_dim": fpn,
               "dynamic_multimask_via_stability": False}
    return Sam2Config(vision_config=vision, prompt_encoder_config=prompt, mask_decoder_config=decoder)


def sam2_hiera_tiny_config(image_size: int = 1024):
    """The SAM 2.1 hiera-tiny architecture (``facebook/sam2.1-hiera-tiny``), image path only.

    transformers' own conversion script builds hiera-tiny from ``Sam2HieraDetConfig()``'s
    defaults (widths 96/192/384/768, blocks 1/2/7/2, heads 1/2/4/8, windows 8/4/14/7,
    global blocks 5/7/9) with FPN 256 and the default prompt encoder and decoder:
    31.4 M parameters in ``Sam2Model`` (the hub's 38.9 M include the video memory).
    Only E (and the feature sizes that follow it) and the single-mask policy are set.
    """
    from transformers import Sam2Config

    image_size = _check_image_size(image_size)
    vision = {
        "backbone_config": {"model_type": "sam2_hiera_det_model", "image_size": [image_size, image_size]},
        "backbone_channel_list": [768, 384, 192, 96],
        "backbone_feature_sizes": hiera_feature_sizes(image_size),
    }
    return Sam2Config(vision_config=vision, prompt_encoder_config={"image_size": image_size},
                      mask_decoder_config={"dynamic_multimask_via_stability": False})


def single_mask_policy(model):
    """Make ``multimask_output=False`` mean mask token 0, always (in place; returns ``model``).

    See the module docstring: off, training and inference compute the same function.
    """
    model.config.mask_decoder_config.dynamic_multimask_via_stability = False
    model.mask_decoder.dynamic_multimask_via_stability = False
    return model


def _full_box(e: int):
    """The ``full_box`` prompt: (0, 0, E - 1, E - 1), XYXY pixels of the E x E encoder input, 1 x 1 x 4."""
    import torch

    return torch.tensor([[[0.0, 0.0, float(e - 1), float(e - 1)]]])


def decode_features(export, features, n: int):
    """The tail both SAM 2 style export modules share: the backbone's features (low to
    high stride order as the neck takes them) -> FPN -> mask decoder with the constant
    prompt -> (mask token 0's logits N x m x m, its object-score logit N).

    ``export`` holds ``neck``, ``levels``, ``mask_decoder``, ``no_memory_embedding``
    and the buffers ``positional``, ``sparse``, ``dense`` (1 x ...: expanded to ``n``).
    The neck gives its levels low -> high resolution; the decoder takes the E/16 level
    as image embedding (plus ``no_memory_embedding``, as ``Sam2Model.forward`` adds it)
    and the E/4 and E/8 levels through ``conv_s0`` / ``conv_s1`` as its
    high-resolution inputs.
    """
    fpn, _ = export.neck(features)
    fpn = fpn[-export.levels:][::-1]  # high -> low: E/4, E/8, E/16
    high_res = [export.mask_decoder.conv_s0(fpn[0]), export.mask_decoder.conv_s1(fpn[1])]
    embeddings = fpn[2] + export.no_memory_embedding.reshape(1, -1, 1, 1)
    out = export.mask_decoder(
        image_embeddings=embeddings,
        image_positional_embeddings=export.positional.expand(n, -1, -1, -1),
        sparse_prompt_embeddings=export.sparse.expand(n, -1, -1, -1),
        dense_prompt_embeddings=export.dense.expand(n, -1, -1, -1),
        multimask_output=False,
        high_resolution_features=high_res,
    )
    return out[0][:, 0, 0], out[3][:, 0, 0]


class Sam2Family:
    """transformers' ``Sam2Model``: what is specific to SAM 2's architecture."""

    name = "sam2"
    configs = {"tiny-sam2": tiny_sam2_config, "sam2-hiera-tiny": sam2_hiera_tiny_config}
    #: the fused relative-position attention is SAM's ViT; Hiera runs its own attention
    fused_attention = False
    #: the mask decoder has an object-score head (a presence logit per patch)
    has_presence = True

    @staticmethod
    def model_class():
        from transformers import Sam2Model

        return Sam2Model

    @staticmethod
    def prepare(model):
        """What every loaded or built SAM 2 model gets: the single-mask policy."""
        return single_mask_policy(model)

    @staticmethod
    def encoder_input_size(model) -> int:
        return _first(model.config.prompt_encoder_config.image_size)

    @staticmethod
    def encoder_geometry(model) -> Tuple[int, int]:
        """(tokens per patch at the model's E, stage-0 width): Hiera's widest token grid."""
        e = Sam2Family.encoder_input_size(model)
        backbone = model.config.vision_config.backbone_config
        stride = _first(backbone.patch_stride)
        return (e // stride) ** 2, int(backbone.embed_dim_per_stage[0])

    @staticmethod
    def resize_encoder(model, new_size: int):
        """A Sam2Model that runs at ``new_size`` x ``new_size``, sharing ``model``'s weights.

        No weight changes (see the module docstring); the new model is built on the meta
        device and takes ``model``'s tensors as they are (same storage, same device), so
        an update to one is an update to the other; ``copy.deepcopy`` first for a copy.
        Raises ValueError unless ``new_size`` is a positive multiple of 32.
        """
        import torch

        if int(new_size) == Sam2Family.encoder_input_size(model):
            return model
        new_size = _check_image_size(new_size)
        config = copy.deepcopy(model.config)
        config.vision_config.backbone_config.image_size = [new_size, new_size]
        config.vision_config.backbone_feature_sizes = hiera_feature_sizes(new_size)
        config.prompt_encoder_config.image_size = new_size
        with torch.device("meta"):
            resized = Sam2Family.model_class()(config)
        resized.load_state_dict(model.state_dict(), strict=True, assign=True)
        return single_mask_policy(resized).eval()

    @staticmethod
    def patch_module(model, prompt_policy: str, with_score: bool = False):
        """``module(pixel_values N x 3 x E x E) -> logits N x m x m`` through ``Sam2Model.forward``;
        with ``with_score``, ``-> (logits N x m x m, object-score logits N)``
        (``object_score_logits[:, 0, 0]``).

        ``full_box``: one box (0, 0, E - 1, E - 1) in encoder pixels (SAM 2's prompt
        encoder adds 0.5 and divides by E, as SAM's does), mask token 0. The prompt
        encoder runs in the module, so ``--train all`` trains it too. Applies the
        single-mask policy to ``model`` (it is part of what the prompt means).
        """
        import torch

        single_mask_policy(model)

        class Sam2PatchModel(torch.nn.Module):
            def __init__(self, sam):
                super().__init__()
                self.sam = sam
                self.with_score = bool(with_score)
                self.register_buffer("box", _full_box(Sam2Family.encoder_input_size(sam)), persistent=False)

            def forward(self, pixel_values):
                boxes = self.box.expand(pixel_values.shape[0], 1, 4)
                out = self.sam(pixel_values=pixel_values, input_boxes=boxes, multimask_output=False)
                if self.with_score:
                    return out.pred_masks[:, 0, 0], out.object_score_logits[:, 0, 0]
                return out.pred_masks[:, 0, 0]

        return Sam2PatchModel(model)

    @staticmethod
    def export_module(model, prompt_policy: str) -> Any:
        """The patch module for ONNX export, ``pixel_values -> (logits N x m x m, object-score
        logits N)``, everything that does not depend on the pixels held as constants;
        computes what :meth:`patch_module` with ``with_score`` computes.

        Buffers: the box's sparse embedding (1 x 1 x 3 x C: two corners and SAM 2's
        padding point), the no-mask dense embedding and the image-wide positional grid
        (1 x C x E/16 x E/16 each), and Hiera's position embedding at this E
        (1 x E/4 x E/4 x C0). The last one matters for TensorRT: computed in the graph it
        is a bicubic Resize plus Tile / If over shapes, which TensorRT's ONNX parser does
        not take. The graph is Hiera's patch embedding and blocks, the FPN neck and the
        mask decoder (high-resolution inputs ``conv_s0`` / ``conv_s1`` of FPN levels 0 and
        1, ``no_memory_embedding`` added to the E/16 level, as ``Sam2Model.forward`` does).
        """
        import torch

        sam = single_mask_policy(model)
        e = Sam2Family.encoder_input_size(sam)
        backbone = sam.vision_encoder.backbone
        stride = _first(backbone.config.patch_stride)
        with torch.no_grad():
            sparse, dense = sam.get_prompt_embeddings(input_boxes=_full_box(e).to(sam.device))
            positional = sam.get_image_wide_positional_embeddings()
            hiera_pos = backbone._get_pos_embed((e // stride, e // stride))

        class Sam2PatchExport(torch.nn.Module):
            def __init__(self):
                super().__init__()
                self.patch_embed = backbone.patch_embed
                self.blocks = backbone.blocks
                self.stage_ends = tuple(int(i) for i in backbone.stage_ends)
                self.neck = sam.vision_encoder.neck
                self.levels = int(sam.vision_encoder.num_feature_levels)
                self.mask_decoder = sam.mask_decoder
                self.no_memory_embedding = sam.no_memory_embedding  # 1 x 1 x C
                self.register_buffer("hiera_pos", hiera_pos.detach().clone(), persistent=False)
                self.register_buffer("sparse", sparse.detach().clone(), persistent=False)
                self.register_buffer("dense", dense.detach().clone(), persistent=False)
                self.register_buffer("positional", positional.detach().clone(), persistent=False)

            def forward(self, pixel_values):
                n = pixel_values.shape[0]
                hidden = self.patch_embed(pixel_values) + self.hiera_pos  # N x E/4 x E/4 x C0
                stages = []
                for i, block in enumerate(self.blocks):
                    hidden = block(hidden)
                    if i in self.stage_ends:
                        stages.append(hidden)
                return decode_features(self, tuple(stages), n)

        return Sam2PatchExport().eval()
