"""Models: loading, saving and reshaping them, and the checkpoint metadata.

A *project checkpoint* is a directory holding what transformers writes with
``save_pretrained`` (``config.json`` + ``model.safetensors``) plus a ``satsam.json``
(:class:`satsam_ros.core.meta.SatsamMeta`: the input size S it was trained for, the
patch size P, the encoder input size E, the prompt policy, the tuned threshold, the
pixel normalisation and where it came from). The metadata class lives in the core
because the Detector needs it (threshold, min_area) without loading any weights.

Model specs understood by :func:`load_model`:

* ``tiny``: a small random SAM (seeded, identical every time) for tests and demos;
* ``vit-b``: the ViT-B architecture with random weights (for speed measurements);
* ``tiny-sam2``: a small random SAM 2 (seeded, identical every time) for tests;
* ``sam2-hiera-tiny``: the SAM 2.1 hiera-tiny architecture with random weights (speed);
* ``tiny-edgetam``: a small random EdgeTAM (``efficientvit_b0`` backbone; seeded) for tests;
* ``builtin``: the model shipped inside this package (:func:`shipped_model`);
* a directory: a project checkpoint, or a plain transformers SAM or SAM 2 / 2.1
  directory (such as a local copy of ``facebook/sam-vit-base`` or
  ``facebook/sam2.1-hiera-tiny``), which gets default metadata;
* anything else is passed to ``from_pretrained`` as a hub id (this needs a network
  connection, which tests never have).

**Model families.** What depends on the architecture sits behind one small object per
family (:class:`SamFamily`, registered in :data:`FAMILIES` under transformers'
``model_type``): its configurations (``tiny``, ``vit-b``), the encoder input size E,
resizing the encoder to another E, and the *patch module* that bakes the prompt policy
in. Everything else (metadata, loading, saving, the backends, export, training) goes
through the module-level functions, which pick the family from the model's config.
The second family, SAM 2 (:class:`satsam_ros.sam2_family.Sam2Family`), is registered
here under ``sam2`` and ``sam2_video``, the third, EdgeTAM
(:class:`satsam_ros.edgetam_family.EdgeTamFamily`, a timm CNN backbone under SAM 2's
decoder), under ``edgetam``; the family of a directory is read from its
``config.json``, so one loader and one ``satsam.json`` serve all three.

**Presence.** SAM 2's and EdgeTAM's mask decoders also give an object-score logit per
mask (``has_presence``; SAM's has no such head): ``make_patch_module(model,
with_score=True)`` returns ``(logits N x m x m, score logits N)``, the export module
returns both, and the Detector gates patches on ``sigmoid(score) >= min_object_score``.

torch and transformers are imported lazily, inside the functions, so that importing
this module stays cheap for the ONNX Runtime and TensorRT backends.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, Optional, Tuple

from .core.meta import META_FILE, PROMPT_POLICIES, SatsamMeta
from .edgetam_family import EDGETAM_MODEL_TYPES, EdgeTamFamily, calibrate_batchnorm
from .sam2_family import SAM2_MODEL_TYPES, Sam2Family

BUILTIN_DIR = Path(__file__).resolve().parent / "models" / "builtin"


# --------------------------------------------------------------------------- SAM


def tiny_config(image_size: int = 256, hidden: int = 96, layers: int = 4, decoder_hidden: int = 64, patch: int = 16):
    """A small SamConfig (about 0.8 M parameters at the defaults) for tests and demos.

    ``patch``: the encoder's token size in pixels; the mask decoder's output grid is
    E / patch * 4 a side (64 at E = 256 with 16 px tokens, 128 with 8 px tokens)."""
    from transformers import SamConfig, SamMaskDecoderConfig, SamPromptEncoderConfig, SamVisionConfig

    vision = SamVisionConfig(
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=4,
        image_size=image_size,
        patch_size=patch,
        window_size=7,
        global_attn_indexes=[i for i in range(layers) if i % 2 == 1],
        output_channels=decoder_hidden,
        num_pos_feats=decoder_hidden // 2,
        mlp_ratio=4.0,
        # transformers initialises SAM's encoder with std 1e-10, which makes a random
        # encoder ignore its input; a usual std keeps random outputs input-dependent.
        initializer_range=0.02,
    )
    prompt = SamPromptEncoderConfig(hidden_size=decoder_hidden, image_size=image_size, patch_size=patch)
    decoder = SamMaskDecoderConfig(
        hidden_size=decoder_hidden,
        mlp_dim=decoder_hidden * 4,
        num_attention_heads=4,
        iou_head_hidden_dim=decoder_hidden,
    )
    return SamConfig(vision_config=vision, prompt_encoder_config=prompt, mask_decoder_config=decoder)


def vit_b_config(image_size: int = 1024):
    """The ViT-B SAM architecture (93.7 M parameters at E = 1024), random weights."""
    from transformers import SamConfig, SamPromptEncoderConfig, SamVisionConfig

    vision = SamVisionConfig(image_size=image_size)  # transformers' defaults are ViT-B
    prompt = SamPromptEncoderConfig(image_size=image_size)
    return SamConfig(vision_config=vision, prompt_encoder_config=prompt)


def _first(value) -> int:
    """An int from a size that transformers may store as an int or a pair."""
    return int(value[0] if isinstance(value, (list, tuple)) else value)


class SamFamily:
    """transformers' ``SamModel``: what is specific to SAM's architecture."""

    name = "sam"
    configs = {"tiny": tiny_config, "vit-b": vit_b_config}
    #: the encoder's attention can run as :mod:`satsam_ros.backends.fused_attention`
    fused_attention = True
    #: SAM's mask decoder has no object-score head
    has_presence = False

    @staticmethod
    def model_class():
        from transformers import SamModel

        return SamModel

    @staticmethod
    def prepare(model):
        """What every loaded or built SAM model gets: nothing (its single mask is token 0)."""
        return model

    @staticmethod
    def encoder_input_size(model) -> int:
        return _first(model.config.vision_config.image_size)

    @staticmethod
    def encoder_geometry(model) -> Tuple[int, int]:
        """(tokens per patch at the model's E, hidden size): what a forward costs."""
        vision = model.config.vision_config
        side = _first(vision.image_size) // _first(vision.patch_size)
        return side * side, int(vision.hidden_size)

    @staticmethod
    def resize_encoder(model, new_size: int):
        """A copy whose encoder takes ``new_size`` x ``new_size`` inputs.

        SAM's absolute position embedding (a grid of E/16 x E/16 vectors) and the
        relative position tables of the global-attention blocks are resampled
        bilinearly/linearly to the new grid; all other weights are shared unchanged.
        """
        import copy

        import torch.nn.functional as F

        old_size = SamFamily.encoder_input_size(model)
        if new_size == old_size:
            return model
        patch = _first(model.config.vision_config.patch_size)
        if new_size % patch:
            raise ValueError(f"encoder input size {new_size} is not a multiple of the patch size {patch}")
        config = copy.deepcopy(model.config)
        config.vision_config.image_size = new_size
        config.prompt_encoder_config.image_size = new_size
        config.prompt_encoder_config.image_embedding_size = new_size // patch
        grid = new_size // patch
        new_state = {}
        for key, value in model.state_dict().items():
            if key.endswith("pos_embed") and value.dim() == 4:  # 1 x g x g x C
                v = value.permute(0, 3, 1, 2).float()
                v = F.interpolate(v, size=(grid, grid), mode="bicubic", align_corners=False)
                value = v.permute(0, 2, 3, 1).to(value.dtype)
            elif (key.endswith("rel_pos_h") or key.endswith("rel_pos_w")) and value.shape[0] == 2 * (
                    old_size // patch) - 1:
                v = value.t().unsqueeze(0).float()  # 1 x C x L
                v = F.interpolate(v, size=2 * grid - 1, mode="linear", align_corners=False)
                value = v.squeeze(0).t().to(value.dtype)
            new_state[key] = value
        new_model = SamFamily.model_class()(config)
        new_model.load_state_dict(new_state, strict=True)
        device = next(model.parameters()).device
        return new_model.to(device).eval()

    @staticmethod
    def patch_module(model, prompt_policy: str, with_score: bool = False):
        """``module(pixel_values N x 3 x E x E) -> logits N x m x m`` with the prompt baked in.

        ``full_box``: one box (0, 0, E - 1, E - 1) in encoder pixels, i.e. the whole
        patch; single-mask output. ``with_score``: SAM has no object-score head (ValueError).
        """
        import torch

        if with_score:
            raise ValueError("a SAM model (model type 'sam') has no object-score head: no presence score "
                             "(SAM 2 and EdgeTAM have one)")

        class SamPatchModel(torch.nn.Module):
            def __init__(self, sam):
                super().__init__()
                self.sam = sam
                e = float(SamFamily.encoder_input_size(sam) - 1)
                self.register_buffer("box", torch.tensor([[[0.0, 0.0, e, e]]]), persistent=False)

            def forward(self, pixel_values):
                boxes = self.box.expand(pixel_values.shape[0], 1, 4)
                out = self.sam(pixel_values=pixel_values, input_boxes=boxes, multimask_output=False)
                return out.pred_masks[:, 0, 0]

        return SamPatchModel(model)

    @staticmethod
    def export_module(model, prompt_policy: str):
        """The patch module for ONNX export: what :meth:`patch_module` computes, with the
        prompt's embeddings (and the image-wide positional embedding) evaluated once and
        stored as constants. The prompt never changes, so the graph keeps only encoder and
        decoder and none of the prompt encoder's data-dependent ops (Where / ScatterND /
        OneHot over the batch), which TensorRT parses poorly."""
        import torch

        box = SamFamily.patch_module(model, prompt_policy).box.to(next(model.parameters()).device)
        with torch.no_grad():
            sparse, dense = model.get_prompt_embeddings(input_boxes=box)
            positional = model.get_image_wide_positional_embeddings()

        class SamPatchExport(torch.nn.Module):
            def __init__(self):
                super().__init__()
                self.vision_encoder = model.vision_encoder
                self.mask_decoder = model.mask_decoder
                self.register_buffer("sparse", sparse.detach().clone(), persistent=False)
                self.register_buffer("dense", dense.detach().clone(), persistent=False)
                self.register_buffer("positional", positional.detach().clone(), persistent=False)

            def forward(self, pixel_values):
                n = pixel_values.shape[0]
                embeddings = self.vision_encoder(pixel_values)[0]
                low_res, _ = self.mask_decoder(
                    image_embeddings=embeddings,
                    image_positional_embeddings=self.positional.expand(n, -1, -1, -1),
                    sparse_prompt_embeddings=self.sparse.expand(n, -1, -1, -1),
                    dense_prompt_embeddings=self.dense.expand(n, -1, -1, -1),
                    multimask_output=False,
                )
                return low_res[:, 0, 0]

        return SamPatchExport().eval()


#: model families by transformers' ``config.model_type`` (a SAM 2 checkpoint is
#: ``sam2``; the hub's SAM 2 / 2.1 folders are the video model, ``sam2_video``, whose
#: image path loads into the same ``Sam2Model``)
FAMILIES: Dict[str, Any] = {"sam": SamFamily(), **{kind: Sam2Family() for kind in SAM2_MODEL_TYPES},
                             **{kind: EdgeTamFamily() for kind in EDGETAM_MODEL_TYPES}}
DEFAULT_FAMILY = "sam"


def family_of(model_or_config) -> Any:
    """The family object of a model (or a config), by its ``model_type``."""
    config = getattr(model_or_config, "config", model_or_config)
    kind = getattr(config, "model_type", None)
    if kind not in FAMILIES:
        raise ValueError(f"model type {kind!r} is not supported; supported: {', '.join(FAMILIES)}")
    return FAMILIES[kind]


# --------------------------------------------------------------------------- any family


def encoder_input_size(model) -> int:
    """E of a model: the square input its image encoder takes."""
    return family_of(model).encoder_input_size(model)


def encoder_geometry(model) -> Tuple[int, int]:
    """(tokens per patch, hidden size) of a model's image encoder."""
    return family_of(model).encoder_geometry(model)


def resize_encoder(model, new_size: int):
    """A copy of ``model`` whose encoder takes ``new_size`` x ``new_size`` inputs.

    This is how a 1024-trained encoder runs natively at a patch's 256 resolution,
    and how a 256-trained encoder runs on patches upsampled to 1024 (faithful mode).
    Returns ``model`` itself when the size already matches.
    """
    return family_of(model).resize_encoder(model, int(new_size))


def has_presence(model_or_config) -> bool:
    """Whether the model's mask decoder gives an object-score (presence) logit per patch:
    True for SAM 2 and EdgeTAM, False for SAM."""
    return bool(family_of(model_or_config).has_presence)


def make_patch_module(model, prompt_policy: str = "full_box", with_score: bool = False):
    """Wrap a model as ``module(pixel_values N x 3 x E x E) -> logits N x m x m``.

    ``with_score``: ``-> (logits N x m x m, score_logits N)``, the second the decoder's
    object-score logit of mask token 0 (``object_score_logits[:, 0, 0]``; probability
    ``sigmoid``: a satellite in the patch). Only families with :func:`has_presence`
    (SAM 2, EdgeTAM); ValueError for SAM.

    The prompt policy is applied inside, so training, inference and ONNX export all
    see the same prompt (see the family's ``patch_module``).
    """
    if prompt_policy not in PROMPT_POLICIES:
        raise ValueError(f"prompt policy {prompt_policy!r} unknown; known: {PROMPT_POLICIES}")
    family = family_of(model)
    if not with_score:
        return family.patch_module(model, prompt_policy)
    if not family.has_presence:
        raise ValueError(f"with_score: a {family.name.upper()} model (model type "
                         f"{getattr(model.config, 'model_type', '?')!r}) has no object-score head; "
                         "SAM 2 and EdgeTAM models have one")
    return family.patch_module(model, prompt_policy, with_score=True)


def make_export_module(model, prompt_policy: str = "full_box"):
    """The patch module for ONNX export (``pixel_values N x 3 x E x E -> logits N x m x m``,
    and for a family with presence ``-> (logits, score_logits N)``): what
    :func:`make_patch_module` (``with_score`` = :func:`has_presence`) computes, with
    everything that does not depend on the pixels (the prompt's embeddings, ...) held
    as constants (the family's ``export_module``)."""
    if prompt_policy not in PROMPT_POLICIES:
        raise ValueError(f"prompt policy {prompt_policy!r} unknown; known: {PROMPT_POLICIES}")
    return family_of(model).export_module(model, prompt_policy)


def supports_fused_attention(model) -> bool:
    """Whether the model's encoder can run the fused attention of the torch backend (SAM's ViT)."""
    return bool(family_of(model).fused_attention)


def fan_in_init(model):
    """Redraw every Linear / Conv2d / ConvTranspose2d weight from N(0, 1 / fan_in) (LeCun
    normal; biases unchanged), with torch's current random generator. In place; returns
    ``model``.

    transformers draws these weights with std 0.02 whatever their fan-in, which leaves a
    random SAM 2's logits (and those of the small SAM) at about 1e-3: a sigmoid of 0.5
    everywhere, every mask empty at the usual threshold, and an output that barely
    depends on the image. With the fan-in scale the logits are of order 1 and follow
    the image, so random models give masks that tests can compare.
    """
    import torch

    kinds = (torch.nn.Linear, torch.nn.Conv2d, torch.nn.ConvTranspose2d)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, kinds):
                torch.nn.init.kaiming_normal_(module.weight, mode="fan_in", nonlinearity="linear")
    return model


def random_model(config, seed: int, fan_in: bool = False):
    """A model of ``config``'s family with seeded random weights, in eval mode.

    ``fan_in``: then redraw the weights with :func:`fan_in_init` (the same seeded
    generator, continued); without it the weights are transformers' own
    initialisation. The family's ``prepare`` (SAM 2's single-mask policy) is applied.
    """
    import torch

    family = family_of(config)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = family.model_class()(config)
        if fan_in:
            fan_in_init(model)
    return family.prepare(model).eval()


def blob_masks(model, gain: float = 3.0):
    """Make a fan-in initialised random SAM draw masks as blobs (in place; returns ``model``).

    Two things make a random SAM's mask speckled noise: its mask decoder upscales the
    E/16 embedding with two 2 x 2 transposed convolutions whose four kernel taps differ
    (a fixed checkerboard in every 4 x 4 block), and with the fan-in init its logits sit
    just under the usual threshold. Giving each transposed convolution one tap for all
    four positions (nearest-neighbour upscaling with random channel mixing) and the
    mask head's last layer a ``gain`` leaves masks of a few token-sized blobs that
    follow the image, with a few per cent of the pixels over 0.65.
    """
    import torch

    with torch.no_grad():
        for module in model.mask_decoder.modules():
            if isinstance(module, torch.nn.ConvTranspose2d):
                module.weight.copy_(module.weight[:, :, :1, :1].expand_as(module.weight))
        head = model.mask_decoder.output_hypernetworks_mlps[0].proj_out
        head.weight.mul_(gain)
        head.bias.mul_(gain)
    return model


@dataclass(frozen=True)
class RandomSpec:
    """A model spec that builds a seeded random model: its configuration, init and E.

    ``fan_in``: :func:`random_model`'s fan-in init; ``adjust``: applied to the model
    afterwards (deterministic: no draws from torch's global generator).
    """

    config: Callable[[], Any]
    encoder_input_size: int
    fan_in: bool
    source: str
    adjust: Optional[Callable[[Any], Any]] = None
    seed: int = 0

    def build(self):
        model = random_model(self.config(), seed=self.seed, fan_in=self.fan_in)
        return self.adjust(model) if self.adjust is not None else model


#: the specs that :func:`load_model` builds rather than reads; the two small ones are
#: initialised so that their masks hold foreground that depends on the image (tests
#: compare masks), the two real architectures keep transformers' init (speed only)
RANDOM_SPECS: Dict[str, RandomSpec] = {
    "tiny": RandomSpec(tiny_config, 256, True, "tiny random config, seed 0, fan-in init, blob masks",
                       adjust=blob_masks),
    "vit-b": RandomSpec(vit_b_config, 1024, False, "ViT-B architecture, random weights"),
    "tiny-sam2": RandomSpec(Sam2Family.configs["tiny-sam2"], 256, True,
                            "tiny random SAM 2 config, seed 0, fan-in init"),
    "sam2-hiera-tiny": RandomSpec(Sam2Family.configs["sam2-hiera-tiny"], 1024, False,
                                  "SAM 2.1 hiera-tiny architecture, random weights"),
    "tiny-edgetam": RandomSpec(EdgeTamFamily.configs["tiny-edgetam"], 256, True,
                               "tiny random EdgeTAM config (efficientvit_b0, FPN 64), seed 0, fan-in init, "
                               "BatchNorm statistics from a seeded batch", adjust=calibrate_batchnorm),
}


def shipped_model() -> Tuple[str, str]:
    """(spec, note): ``builtin`` when a model ships with the package, else ``tiny``."""
    if (BUILTIN_DIR / META_FILE).is_file():
        return "builtin", "the model shipped in satsam_ros/models/builtin"
    return "tiny", "no model ships yet: 'tiny' (random weights, 0.8 M parameters) stands in for it"


def directory_family(path) -> Any:
    """The family of a transformers directory, by the ``model_type`` in its config.json
    (``sam``; ``sam2`` or ``sam2_video`` for SAM 2 / 2.1; ``edgetam``). Raises ValueError naming the
    file and the type when it is not supported."""
    config = Path(path) / "config.json"
    try:
        kind = json.loads(config.read_text()).get("model_type", DEFAULT_FAMILY)
    except json.JSONDecodeError as exc:
        raise ValueError(f"{config}: not valid JSON ({exc})") from exc
    if kind not in FAMILIES:
        raise ValueError(f"{config}: model type {kind!r} is not supported; supported: {', '.join(FAMILIES)}")
    return FAMILIES[kind]


def load_model(spec: str, device: str = "cpu") -> Tuple[Any, SatsamMeta]:
    """Load a SAM, SAM 2 or EdgeTAM model and its metadata from a spec (see the module docstring).

    Returns ``(model in eval mode on device, SatsamMeta)``. Raises ValueError or
    FileNotFoundError with a message naming the spec when it cannot be loaded.
    """
    spec = str(spec)
    if spec in RANDOM_SPECS:
        made = RANDOM_SPECS[spec]
        meta = SatsamMeta(encoder_input_size=made.encoder_input_size, provenance={"source": made.source})
        return made.build().to(device), meta
    if spec == "builtin":
        if not (BUILTIN_DIR / META_FILE).is_file():
            raise FileNotFoundError(
                f"model 'builtin': no shipped model found at {BUILTIN_DIR}; use model 'tiny' or a checkpoint path"
            )
        return load_model(str(BUILTIN_DIR), device)

    path = Path(spec).expanduser()
    if path.exists():
        if not (path / "config.json").is_file():
            raise FileNotFoundError(
                f"model {spec!r}: directory has no config.json (expected a project checkpoint or a "
                "transformers SAM or SAM 2 directory)"
            )
        family = directory_family(path)
        model = family.prepare(family.model_class().from_pretrained(str(path)))
        if (path / META_FILE).is_file():
            meta = SatsamMeta.read(path)
        else:
            meta = SatsamMeta(provenance={"source": str(path)})
        meta.encoder_input_size = encoder_input_size(model)
        return model.eval().to(device), meta
    if spec.startswith((".", "/", "~")) or spec.count("/") != 1:
        raise FileNotFoundError(f"model {spec!r}: no such directory")
    try:
        from transformers import AutoConfig

        kind = AutoConfig.from_pretrained(spec).model_type
        if kind not in FAMILIES:
            raise ValueError(f"model {spec!r}: model type {kind!r} is not supported; supported: "
                             f"{', '.join(FAMILIES)}")
        family = FAMILIES[kind]
        model = family.prepare(family.model_class().from_pretrained(spec))
    except OSError as exc:
        raise FileNotFoundError(
            f"model {spec!r}: not a local directory and could not be loaded as a hub id ({exc})"
        ) from exc
    meta = SatsamMeta(encoder_input_size=encoder_input_size(model), provenance={"source": spec})
    return model.eval().to(device), meta


def save_checkpoint(model, meta: SatsamMeta, out_dir) -> Path:
    """Write a project checkpoint atomically: build it beside ``out_dir``, then rename.

    A crash at any moment leaves either the old checkpoint or the new one, never a
    half-written directory under ``out_dir``'s name.
    """
    out = Path(out_dir)
    out.parent.mkdir(parents=True, exist_ok=True)
    meta.encoder_input_size = encoder_input_size(model)
    meta.validate()
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=str(out.parent)))
    try:
        model.save_pretrained(str(tmp), safe_serialization=True)
        (tmp / META_FILE).write_text(meta.to_json())
        old = None
        if out.exists():
            old = out.parent / f".{out.name}.old-{os.getpid()}"
            os.replace(out, old)
        os.replace(tmp, out)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return out
