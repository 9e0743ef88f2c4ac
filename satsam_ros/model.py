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
* ``builtin``: the model shipped inside this package (:func:`shipped_model`);
* a directory: a project checkpoint, or a plain transformers SAM directory (such as
  a local copy of ``facebook/sam-vit-base``), which gets default metadata;
* anything else is passed to ``from_pretrained`` as a hub id (this needs a network
  connection, which tests never have).

**Model families.** What depends on the architecture sits behind one small object per
family (:class:`SamFamily`, registered in :data:`FAMILIES` under transformers'
``model_type``): its configurations (``tiny``, ``vit-b``), the encoder input size E,
resizing the encoder to another E, and the *patch module* that bakes the prompt policy
in. Everything else (metadata, loading, saving, the backends, export, training) goes
through the module-level functions, which pick the family from the model's config, so
a second family (SAM 2) is an addition here, not a change elsewhere.

torch and transformers are imported lazily, inside the functions, so that importing
this module stays cheap for the ONNX Runtime and TensorRT backends.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Dict, Tuple

from .core.meta import META_FILE, PROMPT_POLICIES, SatsamMeta

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

    @staticmethod
    def model_class():
        from transformers import SamModel

        return SamModel

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
    def patch_module(model, prompt_policy: str):
        """``module(pixel_values N x 3 x E x E) -> logits N x m x m`` with the prompt baked in.

        ``full_box``: one box (0, 0, E - 1, E - 1) in encoder pixels, i.e. the whole
        patch; single-mask output.
        """
        import torch

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


#: model families by transformers' ``config.model_type``
FAMILIES: Dict[str, Any] = {"sam": SamFamily()}
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


def make_patch_module(model, prompt_policy: str = "full_box"):
    """Wrap a model as ``module(pixel_values N x 3 x E x E) -> logits N x m x m``.

    The prompt policy is applied inside, so training, inference and ONNX export all
    see the same prompt (see the family's ``patch_module``).
    """
    if prompt_policy not in PROMPT_POLICIES:
        raise ValueError(f"prompt policy {prompt_policy!r} unknown; known: {PROMPT_POLICIES}")
    return family_of(model).patch_module(model, prompt_policy)


def random_model(config, seed: int):
    """A model of ``config``'s family with seeded random weights, in eval mode."""
    import torch

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = family_of(config).model_class()(config)
    return model.eval()


def shipped_model() -> Tuple[str, str]:
    """(spec, note): ``builtin`` when a model ships with the package, else ``tiny``."""
    if (BUILTIN_DIR / META_FILE).is_file():
        return "builtin", "the model shipped in satsam_ros/models/builtin"
    return "tiny", "no model ships yet: 'tiny' (random weights, 0.8 M parameters) stands in for it"


def _pretrained_class(path: Path):
    """The model class of a transformers directory, by the model_type in its config.json."""
    try:
        kind = json.loads((path / "config.json").read_text()).get("model_type", DEFAULT_FAMILY)
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path / 'config.json'}: not valid JSON ({exc})") from exc
    if kind not in FAMILIES:
        raise ValueError(f"model {str(path)!r}: model type {kind!r} is not supported; supported: "
                         f"{', '.join(FAMILIES)}")
    return FAMILIES[kind].model_class()


def load_model(spec: str, device: str = "cpu") -> Tuple[Any, SatsamMeta]:
    """Load a SAM model and its metadata from a spec (see the module docstring).

    Returns ``(model in eval mode on device, SatsamMeta)``. Raises ValueError or
    FileNotFoundError with a message naming the spec when it cannot be loaded.
    """
    spec = str(spec)
    if spec == "tiny":
        model = random_model(tiny_config(), seed=0)
        meta = SatsamMeta(encoder_input_size=256, provenance={"source": "tiny random config, seed 0"})
        return model.to(device), meta
    if spec == "vit-b":
        model = random_model(vit_b_config(), seed=0)
        meta = SatsamMeta(encoder_input_size=1024, provenance={"source": "ViT-B architecture, random weights"})
        return model.to(device), meta
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
                "transformers SAM directory)"
            )
        model = _pretrained_class(path).from_pretrained(str(path))
        if (path / META_FILE).is_file():
            meta = SatsamMeta.read(path)
        else:
            meta = SatsamMeta(provenance={"source": str(path)})
        meta.encoder_input_size = encoder_input_size(model)
        return model.eval().to(device), meta
    if spec.startswith((".", "/", "~")) or spec.count("/") != 1:
        raise FileNotFoundError(f"model {spec!r}: no such directory")
    try:
        model = FAMILIES[DEFAULT_FAMILY].model_class().from_pretrained(spec)
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
