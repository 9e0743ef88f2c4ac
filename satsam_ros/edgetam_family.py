"""The EdgeTAM family: transformers' ``EdgeTamModel`` (SAM 2's prompt encoder and mask
decoder, with its object-score head, on a timm CNN backbone).

What is specific to EdgeTAM sits here behind :class:`EdgeTamFamily`, which
:mod:`satsam_ros.model` registers under transformers' ``model_type`` ``edgetam``.
These models are trained from scratch here (no weights are downloaded): the backbone
is any timm architecture that gives features at strides 4, 8, 16 and 32, built through
transformers' ``TimmWrapperConfig`` (a config object, not a dict: a plain dict fails
on ``num_labels``), so ``save_pretrained`` / ``from_pretrained`` round-trip it.

Shapes are those of the SAM family: ``pixel_values`` N x 3 x E x E float32
(SAM-normalised RGB), logits N x m x m with m = E / 4, and the object-score logit N
(the decoder's ``object_score_logits[:, 0, 0]``: is there an object in the patch).

* **E.** A CNN takes any size that its strides divide, so running at another E changes
  no weight: only ``backbone_feature_sizes`` (E/4, E/8, E/16, used to reshape the FPN
  maps) and the prompt encoder's ``image_size`` follow E. E must be a multiple of 32
  (the stride-32 feature feeds the FPN's top-down path into the stride-16 level).
* **The single-mask policy** is SAM 2's (:func:`satsam_ros.sam2_family.single_mask_policy`):
  ``multimask_output=False`` means mask token 0 in train and eval mode alike.
* **Feature levels.** ``backbone_channel_list`` is the reversed channels of the four
  features (stride 32 first); the FPN feeds the decoder the stride-16 level as image
  embedding and the stride-4 and stride-8 levels as its high-resolution inputs.

torch, transformers and timm are imported inside the functions (this module is
imported by :mod:`satsam_ros.model`, which the ONNX Runtime and TensorRT backends import).
"""

from __future__ import annotations

import copy
from typing import Any, Dict, List, Optional, Tuple

from .sam2_family import _first, _full_box, decode_features, hiera_feature_sizes, single_mask_policy

#: transformers ``model_type`` values of this family (``EdgeTamConfig.model_type``)
EDGETAM_MODEL_TYPES = ("edgetam",)
#: the strides of the four features the FPN takes, finest first
FEATURE_STRIDES = (4, 8, 16, 32)
#: timm arguments the family sets itself (the features the FPN needs)
OWN_TIMM_ARGS = ("features_only", "out_indices", "in_chans")
DEFAULT_BACKBONE = "efficientvit_b0"


def check_image_size(image_size: int) -> int:
    """E, or ValueError unless it is a positive multiple of 32."""
    if int(image_size) < 32 or int(image_size) % 32:
        raise ValueError(f"EdgeTAM encoder input size {image_size}: must be a positive multiple of 32 "
                         "(the backbone's stride-32 feature feeds the FPN)")
    return int(image_size)


def _plain(value: Any) -> Any:
    """Tuples -> lists, recursively (what config.json gives back, so a built and a loaded
    config say the same thing)."""
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    return value


def backbone_features(backbone: str, model_args: Optional[Dict[str, Any]] = None) -> Tuple[List[int], List[int]]:
    """(out_indices, channels) of the timm architecture ``backbone``'s features at strides
    4, 8, 16 and 32, finest first, found by building it once (``features_only``, random
    weights, ``model_args`` passed on) and reading ``feature_info``.

    Most backbones' first feature is at stride 4 (``efficientvit_b0``, ``repvit_m0_9``:
    indices 0-3); some start at stride 2 (``mobilenetv4_conv_small``, ``resnet10t``:
    1-4). Where two features share a stride the deeper one is taken. Raises ValueError
    naming the backbone when timm does not know it, it does not take ``model_args``, or
    it lacks one of the strides.
    """
    import timm

    args = _plain(dict(model_args or {}))
    own = sorted(set(args) & set(OWN_TIMM_ARGS))
    if own:
        raise ValueError(f"EdgeTAM backbone {backbone!r}: model_args may not set {', '.join(own)} "
                         "(the family chooses the features itself)")
    try:
        net = timm.create_model(str(backbone), pretrained=False, features_only=True, in_chans=3, **args)
    except RuntimeError as exc:  # timm: "Unknown model (...)"
        raise ValueError(f"EdgeTAM backbone {backbone!r}: {exc}") from exc
    except (TypeError, ValueError, AssertionError) as exc:  # e.g. a model_args key it does not take
        raise ValueError(f"EdgeTAM backbone {backbone!r} with model_args {args}: {type(exc).__name__}: {exc}") from exc
    info = net.feature_info
    indices, reductions, channels = list(info.out_indices), list(info.reduction()), list(info.channels())
    chosen: Dict[int, Tuple[int, int]] = {}
    for index, stride, width in zip(indices, reductions, channels):
        if int(stride) in FEATURE_STRIDES:
            chosen[int(stride)] = (int(index), int(width))  # a later (deeper) one wins
    missing = [s for s in FEATURE_STRIDES if s not in chosen]
    if missing:
        raise ValueError(f"EdgeTAM backbone {backbone!r} has features at strides {sorted(set(reductions))}, "
                         f"not at {', '.join(map(str, missing))}: it needs strides "
                         f"{', '.join(map(str, FEATURE_STRIDES))} (a CNN-style feature pyramid)")
    return [chosen[s][0] for s in FEATURE_STRIDES], [chosen[s][1] for s in FEATURE_STRIDES]


def edgetam_config(backbone: str = DEFAULT_BACKBONE, image_size: int = 256, fpn_hidden: int = 64,
                   model_args: Optional[Dict[str, Any]] = None, decoder_heads: int = 4, mlp_ratio: int = 4):
    """An EdgeTamConfig for training from scratch (about 0.90 M parameters at the defaults).

    ``backbone``: a timm architecture name with features at strides 4, 8, 16, 32
    (:func:`backbone_features` finds them); ``model_args``: timm keyword arguments for
    it, e.g. ``{"embed_dim": [32, 64, 128, 256], "depth": [1, 1, 4, 1]}`` for a small
    ``repvit_m0_9``. ``fpn_hidden``: the FPN width, also the prompt encoder's and the
    mask decoder's hidden size (a multiple of 8, at least 16: the decoder's
    high-resolution convolutions output fpn/8 and fpn/4 channels);
    ``decoder_heads`` its attention heads (fpn/2 must be a multiple of them: the
    decoder's cross-attention halves the width); ``mlp_ratio`` the decoder MLP's width
    over ``fpn_hidden``. Raises ValueError naming the bad value.
    """
    from transformers import EdgeTamConfig, TimmWrapperConfig

    image_size = check_image_size(image_size)
    fpn, heads = int(fpn_hidden), int(decoder_heads)
    if fpn < 16 or fpn % 8:
        raise ValueError(f"EdgeTAM fpn_hidden {fpn_hidden}: must be a multiple of 8, at least 16")
    if heads < 1 or (fpn // 2) % heads:
        raise ValueError(f"EdgeTAM decoder_heads {decoder_heads}: fpn_hidden / 2 = {fpn // 2} must be a multiple of it")
    if int(mlp_ratio) < 1:
        raise ValueError(f"EdgeTAM mlp_ratio {mlp_ratio}: must be a positive integer")
    args = _plain(dict(model_args or {}))
    indices, channels = backbone_features(backbone, args)
    timm_args = dict(args, in_chans=3, features_only=True, out_indices=indices)
    backbone_config = TimmWrapperConfig(architecture=str(backbone), model_args=timm_args, do_pooling=False,
                                        num_labels=1)
    vision = {
        "backbone_config": backbone_config,
        "backbone_channel_list": list(reversed(channels)),
        "backbone_feature_sizes": hiera_feature_sizes(image_size),  # E/4, E/8, E/16 as for SAM 2
        "fpn_hidden_size": fpn,
    }
    prompt = {"hidden_size": fpn, "image_size": image_size, "patch_size": 16}
    decoder = {"hidden_size": fpn, "mlp_dim": fpn * int(mlp_ratio), "num_attention_heads": heads,
               "iou_head_hidden_dim": fpn, "dynamic_multimask_via_stability": False}
    return EdgeTamConfig(vision_config=vision, prompt_encoder_config=prompt, mask_decoder_config=decoder)


def tiny_edgetam_config(image_size: int = 256):
    """``tiny-edgetam``: ``efficientvit_b0`` (channels 16/32/64/128), FPN 64: 901,393 parameters."""
    return edgetam_config(DEFAULT_BACKBONE, image_size=image_size, fpn_hidden=64)


def aligned_tensors(model, alignment: int = 64):
    """Give every parameter and buffer that does not start on an ``alignment``-byte boundary
    a fresh (aligned) copy of itself (in place; returns ``model``).

    ``from_pretrained`` may leave tensors at any offset of the checkpoint file's bytes, and
    some CPU kernels take another path for unaligned data: a timm CNN's 1 x 1 convolutions
    on 1 x 1 maps (RepViT's squeeze-excite) and the object-score head's last layer then
    round differently from the model that was saved. Aligned, a loaded checkpoint computes
    bit for bit what the saved model computed. Values are unchanged.
    """
    import torch

    with torch.no_grad():
        for module in model.modules():
            for param in list(module.parameters(recurse=False)):
                if param.data_ptr() % alignment:
                    param.data = param.data.clone()
            for name, buf in list(module.named_buffers(recurse=False)):
                if buf is not None and buf.data_ptr() % alignment:
                    module._buffers[name] = buf.clone()
    return model


def calibrate_batchnorm(model, seed: int = 0, batch: int = 8):
    """Set the backbone's BatchNorm statistics from one seeded batch of N(0, 1) pixels (in
    place; returns ``model``, in eval mode). Deterministic: the batch comes from a
    generator of its own, not torch's global one, and only the BatchNorm layers run in
    train mode (no dropout or drop-path draws).

    A randomly initialised timm CNN in eval mode normalises with the initial statistics
    (mean 0, variance 1), so its activations shrink layer after layer (``efficientvit_b0``
    at transformers' init: feature std 0.06 at stride 4, 0.002 at stride 32) and the
    decoder sees almost the same embedding for every image: flat, empty masks and one
    object score for all patches. Statistics measured on a batch give features of order
    1 that follow the image (masks with a few per cent foreground, scores that differ
    between patches), so random EdgeTAM models can be compared by their masks.
    """
    import torch

    backbone = model.vision_encoder.backbone
    norms = [m for m in backbone.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    e = EdgeTamFamily.encoder_input_size(model)
    gen = torch.Generator().manual_seed(int(seed))
    device = next(model.parameters()).device
    pixels = torch.randn(int(batch), 3, e, e, generator=gen).to(device)
    model.eval()
    momenta = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # a cumulative average: after one batch, that batch's statistics
        m.train()
    try:
        with torch.no_grad():
            backbone(pixels)
    finally:
        for m, momentum in zip(norms, momenta):
            m.momentum = momentum
        model.eval()
    return model


def backbone_name(model_or_config) -> str:
    """The timm architecture of an EdgeTAM model (or config)."""
    config = getattr(model_or_config, "config", model_or_config)
    return str(config.vision_config.backbone_config.architecture)


def _patch_module_class():
    """The patch module's class (defined on use: torch is imported inside)."""
    import torch

    class EdgeTamPatchModel(torch.nn.Module):
        """``pixel_values N x 3 x E x E -> logits N x m x m`` (or ``(logits, score logits N)``)."""

        def __init__(self, model, with_score: bool):
            super().__init__()
            self.sam = model
            self.with_score = bool(with_score)
            self.register_buffer("box", _full_box(EdgeTamFamily.encoder_input_size(model)), persistent=False)

        def forward(self, pixel_values):
            boxes = self.box.expand(pixel_values.shape[0], 1, 4)
            out = self.sam(pixel_values=pixel_values, input_boxes=boxes, multimask_output=False)
            logits = out.pred_masks[:, 0, 0]
            if self.with_score:
                return logits, out.object_score_logits[:, 0, 0]
            return logits

    return EdgeTamPatchModel


class EdgeTamFamily:
    """transformers' ``EdgeTamModel``: what is specific to EdgeTAM's architecture."""

    name = "edgetam"
    configs = {"tiny-edgetam": tiny_edgetam_config}
    #: the fused relative-position attention is SAM's ViT; a CNN backbone has none
    fused_attention = False
    #: the mask decoder has an object-score head (a presence logit per patch)
    has_presence = True

    @staticmethod
    def model_class():
        from transformers import EdgeTamModel

        return EdgeTamModel

    @staticmethod
    def prepare(model):
        """What every loaded or built EdgeTAM model gets: SAM 2's single-mask policy, and
        aligned tensors (:func:`aligned_tensors`: a loaded checkpoint computes what was saved)."""
        return aligned_tensors(single_mask_policy(model))

    @staticmethod
    def encoder_input_size(model) -> int:
        return _first(model.config.prompt_encoder_config.image_size)

    @staticmethod
    def encoder_geometry(model) -> Tuple[int, int]:
        """(positions of the stride-4 feature map per patch, its channels): the widest map."""
        e = EdgeTamFamily.encoder_input_size(model)
        return (e // 4) ** 2, int(model.config.vision_config.backbone_channel_list[-1])

    @staticmethod
    def resize_encoder(model, new_size: int):
        """An EdgeTamModel that runs at ``new_size`` x ``new_size``, sharing ``model``'s weights.

        No weight changes (see the module docstring): the new model is built on the meta
        device and takes ``model``'s tensors as they are (same storage and device), so an
        update to one is an update to the other; ``copy.deepcopy`` first for a copy.
        Raises ValueError unless ``new_size`` is a positive multiple of 32.
        """
        import torch

        if int(new_size) == EdgeTamFamily.encoder_input_size(model):
            return model
        new_size = check_image_size(new_size)
        config = copy.deepcopy(model.config)
        config.vision_config.backbone_feature_sizes = hiera_feature_sizes(new_size)
        config.prompt_encoder_config.image_size = new_size
        with torch.device("meta"):
            resized = EdgeTamFamily.model_class()(config)
        resized.load_state_dict(model.state_dict(), strict=True, assign=True)
        left = [name for name, t in list(resized.named_parameters()) + list(resized.named_buffers()) if t.is_meta]
        if left:  # a backbone with non-persistent buffers (none of the tested ones has any)
            raise ValueError(f"EdgeTAM backbone {backbone_name(model)!r}: cannot resize the encoder, tensors "
                             f"{left[:3]} are not in the state dict")
        return single_mask_policy(resized).eval()

    @staticmethod
    def patch_module(model, prompt_policy: str, with_score: bool = False):
        """``module(pixel_values N x 3 x E x E) -> logits N x m x m`` through ``EdgeTamModel.forward``;
        with ``with_score``, ``-> (logits N x m x m, object-score logits N)``.

        ``full_box``: one box (0, 0, E - 1, E - 1) in encoder pixels, mask token 0 (as SAM 2).
        The prompt encoder runs in the module, so ``--train all`` trains it too. Applies
        the single-mask policy to ``model``.
        """
        single_mask_policy(model)
        return _patch_module_class()(model, with_score)

    @staticmethod
    def export_module(model, prompt_policy: str) -> Any:
        """The patch module for ONNX export: ``pixel_values -> (logits N x m x m, object-score
        logits N)``, what :meth:`patch_module` with ``with_score`` computes, with everything
        that does not depend on the pixels held as constants (the box's sparse embedding,
        the no-mask dense embedding, the image-wide positional grid). The graph is the timm
        backbone's features, the FPN neck and the mask decoder (``conv_s0`` / ``conv_s1``
        on FPN levels 0 and 1, ``no_memory_embedding`` added to the E/16 level), as
        ``EdgeTamModel.forward`` computes them.
        """
        import torch

        sam = single_mask_policy(model)
        e = EdgeTamFamily.encoder_input_size(sam)
        with torch.no_grad():
            sparse, dense = sam.get_prompt_embeddings(input_boxes=_full_box(e).to(sam.device))
            positional = sam.get_image_wide_positional_embeddings()

        class EdgeTamPatchExport(torch.nn.Module):
            def __init__(self):
                super().__init__()
                self.backbone = sam.vision_encoder.backbone.timm_model  # timm FeatureListNet
                self.neck = sam.vision_encoder.neck
                self.levels = int(sam.vision_encoder.num_feature_levels)
                self.mask_decoder = sam.mask_decoder
                self.no_memory_embedding = sam.no_memory_embedding  # 1 x 1 x C
                self.register_buffer("sparse", sparse.detach().clone(), persistent=False)
                self.register_buffer("dense", dense.detach().clone(), persistent=False)
                self.register_buffer("positional", positional.detach().clone(), persistent=False)

            def forward(self, pixel_values):
                n = pixel_values.shape[0]
                features = [f.permute(0, 2, 3, 1) for f in self.backbone(pixel_values)]  # the neck takes NHWC
                return decode_features(self, features, n)

        return EdgeTamPatchExport().eval()
