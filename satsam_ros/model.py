"""Loading, saving and reshaping SAM models, and the checkpoint metadata.

A *project checkpoint* is a directory holding what transformers writes with
``SamModel.save_pretrained`` (``config.json`` + ``model.safetensors``) plus a
``satsam.json`` (:class:`SatsamMeta`): the input size S it was trained for, the patch
size P, the encoder input size E, the prompt policy, the tuned threshold, the pixel
normalisation and where it came from (command, seed, data).

Model specs understood by :func:`load_model`:

* ``tiny``: a small random SAM (seeded, identical every time) for tests and demos;
* ``vit-b``: the ViT-B architecture with random weights (for speed measurements);
* ``builtin``: the model shipped inside this package, once one ships;
* a directory: a project checkpoint, or a plain transformers SAM directory (such as
  a local copy of ``facebook/sam-vit-base``), which gets default metadata;
* anything else is passed to ``SamModel.from_pretrained`` as a hub id (this needs a
  network connection, which tests never have).

torch and transformers are imported lazily, inside the functions, so that importing
this module stays cheap for the ONNX Runtime and TensorRT backends.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Dict, Optional, Tuple

from .imaging import SAM_PIXEL_MEAN, SAM_PIXEL_STD

META_FILE = "satsam.json"
META_FORMAT = 1
PROMPT_POLICIES = ("full_box",)
DEFAULT_THRESHOLD = 0.65
BUILTIN_DIR = Path(__file__).resolve().parent / "models" / "builtin"


@dataclass
class SatsamMeta:
    """What a checkpoint needs to be used the way it was trained (``satsam.json``)."""

    size: Optional[int] = None  # S the model was trained for (None: not tied to one)
    patch_size: int = 256
    encoder_input_size: int = 1024  # E: patches are resized to E x E for the encoder
    prompt_policy: str = "full_box"  # one box covering the whole patch
    threshold: float = DEFAULT_THRESHOLD
    min_area: int = 0  # tuned with the threshold: components smaller than this (input pixels) are dropped
    normalization: Dict[str, Any] = field(
        default_factory=lambda: {"scale": "0..255", "mean": list(SAM_PIXEL_MEAN), "std": list(SAM_PIXEL_STD)}
    )
    provenance: Dict[str, Any] = field(default_factory=dict)
    format: int = META_FORMAT

    def validate(self) -> SatsamMeta:
        if self.prompt_policy not in PROMPT_POLICIES:
            raise ValueError(f"satsam.json: prompt_policy {self.prompt_policy!r} unknown; known: {PROMPT_POLICIES}")
        if not 0.0 <= float(self.threshold) <= 1.0:
            raise ValueError(f"satsam.json: threshold must be in [0, 1], got {self.threshold}")
        if int(self.min_area) < 0:
            raise ValueError(f"satsam.json: min_area must be >= 0, got {self.min_area}")
        if int(self.patch_size) <= 0 or int(self.encoder_input_size) <= 0:
            raise ValueError("satsam.json: patch_size and encoder_input_size must be positive")
        if int(self.format) > META_FORMAT:
            raise ValueError(f"satsam.json: format {self.format} is newer than this satsam_ros ({META_FORMAT})")
        return self

    @classmethod
    def from_dict(cls, data: Dict[str, Any]) -> SatsamMeta:
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        return cls(**known).validate()

    @classmethod
    def read(cls, directory: Path) -> SatsamMeta:
        path = Path(directory) / META_FILE
        try:
            data = json.loads(path.read_text())
        except json.JSONDecodeError as exc:
            raise ValueError(f"{path}: not valid JSON ({exc})") from exc
        return cls.from_dict(data)

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True) + "\n"


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


def encoder_input_size(model) -> int:
    """E of a SamModel: the square input its image encoder takes."""
    size = model.config.vision_config.image_size
    return int(size[0] if isinstance(size, (list, tuple)) else size)


def _random_model(config, seed: int):
    import torch
    from transformers import SamModel

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = SamModel(config)
    return model.eval()


def load_model(spec: str, device: str = "cpu") -> Tuple[Any, SatsamMeta]:
    """Load a SAM model and its metadata from a spec (see the module docstring).

    Returns ``(SamModel in eval mode on device, SatsamMeta)``. Raises ValueError or
    FileNotFoundError with a message naming the spec when it cannot be loaded.
    """
    spec = str(spec)
    if spec == "tiny":
        model = _random_model(tiny_config(), seed=0)
        meta = SatsamMeta(encoder_input_size=256, provenance={"source": "tiny random config, seed 0"})
        return model.to(device), meta
    if spec == "vit-b":
        model = _random_model(vit_b_config(), seed=0)
        meta = SatsamMeta(encoder_input_size=1024, provenance={"source": "ViT-B architecture, random weights"})
        return model.to(device), meta
    if spec == "builtin":
        if not (BUILTIN_DIR / META_FILE).is_file():
            raise FileNotFoundError(
                f"model 'builtin': no shipped model found at {BUILTIN_DIR}; use model 'tiny' or a checkpoint path"
            )
        return load_model(str(BUILTIN_DIR), device)

    from transformers import SamModel

    path = Path(spec).expanduser()
    if path.exists():
        if not (path / "config.json").is_file():
            raise FileNotFoundError(
                f"model {spec!r}: directory has no config.json (expected a project checkpoint or a "
                "transformers SAM directory)"
            )
        model = SamModel.from_pretrained(str(path))
        if (path / META_FILE).is_file():
            meta = SatsamMeta.read(path)
        else:
            meta = SatsamMeta(provenance={"source": str(path)})
        meta.encoder_input_size = encoder_input_size(model)
        return model.eval().to(device), meta
    if spec.startswith((".", "/", "~")) or spec.count("/") != 1:
        raise FileNotFoundError(f"model {spec!r}: no such directory")
    try:
        model = SamModel.from_pretrained(spec)
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


def resize_encoder(model, new_size: int):
    """A copy of ``model`` whose encoder takes ``new_size`` x ``new_size`` inputs.

    SAM's absolute position embedding (a grid of E/16 x E/16 vectors) and the
    relative position tables of the global-attention blocks are resampled
    bilinearly/linearly to the new grid; all other weights are shared unchanged.
    This is how a 1024-trained encoder runs natively at a patch's 256 resolution,
    and how a 256-trained encoder runs on patches upsampled to 1024 (faithful mode).
    """
    import copy

    import torch.nn.functional as F
    from transformers import SamModel

    old_size = encoder_input_size(model)
    if new_size == old_size:
        return model
    patch = model.config.vision_config.patch_size
    patch = int(patch[0] if isinstance(patch, (list, tuple)) else patch)
    if new_size % patch:
        raise ValueError(f"encoder input size {new_size} is not a multiple of the patch size {patch}")
    config = copy.deepcopy(model.config)
    config.vision_config.image_size = new_size
    config.prompt_encoder_config.image_size = new_size
    config.prompt_encoder_config.image_embedding_size = new_size // patch
    grid = new_size // patch
    state = model.state_dict()
    new_state = {}
    for key, value in state.items():
        if key.endswith("pos_embed") and value.dim() == 4:  # 1 x g x g x C
            v = value.permute(0, 3, 1, 2).float()
            v = F.interpolate(v, size=(grid, grid), mode="bicubic", align_corners=False)
            value = v.permute(0, 2, 3, 1).to(value.dtype)
        elif (key.endswith("rel_pos_h") or key.endswith("rel_pos_w")) and value.shape[0] == 2 * (old_size // patch) - 1:
            v = value.t().unsqueeze(0).float()  # 1 x C x L
            v = F.interpolate(v, size=2 * grid - 1, mode="linear", align_corners=False)
            value = v.squeeze(0).t().to(value.dtype)
        new_state[key] = value
    new_model = SamModel(config)
    new_model.load_state_dict(new_state, strict=True)
    device = next(model.parameters()).device
    return new_model.to(device).eval()
