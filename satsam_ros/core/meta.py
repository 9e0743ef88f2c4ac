"""What a patch model needs to be used the way it was trained: ``satsam.json``.

:class:`SatsamMeta` travels with every checkpoint (``satsam.json``), every ONNX export
(its metadata) and every TensorRT engine (its key record). The Detector reads its tuned
``threshold`` and ``min_area``; loading and saving checkpoints is
:mod:`satsam_ros.model`. Pure data: no torch, no transformers.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Dict, Optional, Tuple

from .imaging import SAM_PIXEL_MEAN, SAM_PIXEL_STD
from .postprocess import PostConfig

META_FILE = "satsam.json"
META_FORMAT = 1
PROMPT_POLICIES = ("full_box",)
DEFAULT_THRESHOLD = 0.65
#: the coarse-to-fine cascade's keys of ``postprocess[S]`` (besides the PostConfig fields):
#: ``cascade`` the coarse size run first (0 = off: full tiling), ``cascade_margin`` input-frame
#: pixels around each coarse proposal, ``cascade_max_patches`` the most S patches a frame runs
#: (0 = no cap) (:class:`satsam_ros.core.detector.Detector`)
CASCADE_KEYS = ("cascade", "cascade_margin", "cascade_max_patches")


@dataclass
class SatsamMeta:
    """What a checkpoint needs to be used the way it was trained (``satsam.json``)."""

    size: Optional[int] = None  # S the model was trained for (None: not tied to one)
    patch_size: int = 256
    encoder_input_size: int = 1024  # E: patches are resized to E x E for the encoder
    prompt_policy: str = "full_box"  # one box covering the whole patch
    threshold: float = DEFAULT_THRESHOLD
    min_area: int = 0  # tuned with the threshold: components smaller than this (input pixels) are dropped
    # per frame size S ("512", ...): post-processing tuned at that size (PostConfig fields: threshold,
    # min_area, max_objects, min_score, group_gap, min_object_score) and the cascade tuned with it
    # (CASCADE_KEYS: cascade, cascade_margin, cascade_max_patches); sizes without an entry use
    # threshold / min_area above and no other prior (min_object_score 0: no presence gate; no cascade: full tiling)
    postprocess: Dict[str, Dict[str, Any]] = field(default_factory=dict)
    normalization: Dict[str, Any] = field(
        default_factory=lambda: {"scale": "0..255", "mean": list(SAM_PIXEL_MEAN), "std": list(SAM_PIXEL_STD)}
    )
    provenance: Dict[str, Any] = field(default_factory=dict)
    format: int = META_FORMAT

    def validate(self) -> SatsamMeta:
        """Check every field; raise ValueError naming the bad one. Returns self."""
        if self.prompt_policy not in PROMPT_POLICIES:
            raise ValueError(f"satsam.json: prompt_policy {self.prompt_policy!r} unknown; known: {PROMPT_POLICIES}")
        if not 0.0 <= float(self.threshold) <= 1.0:
            raise ValueError(f"satsam.json: threshold must be in [0, 1], got {self.threshold}")
        if int(self.min_area) < 0:
            raise ValueError(f"satsam.json: min_area must be >= 0, got {self.min_area}")
        if int(self.patch_size) <= 0 or int(self.encoder_input_size) <= 0:
            raise ValueError("satsam.json: patch_size and encoder_input_size must be positive")
        for size, values in (self.postprocess or {}).items():
            if not str(size).isdigit():
                raise ValueError(f"satsam.json: postprocess keys are frame sizes S, got {size!r}")
            unknown = set(values) - set(PostConfig.__dataclass_fields__) - set(CASCADE_KEYS)
            if unknown:
                raise ValueError(f"satsam.json: postprocess[{size!r}] has unknown keys {sorted(unknown)}")
            try:
                self.post_for(int(size))
                self.cascade_for(int(size))
            except (TypeError, ValueError) as exc:
                raise ValueError(f"satsam.json: postprocess[{size!r}]: {exc}") from exc
        if int(self.format) > META_FORMAT:
            raise ValueError(f"satsam.json: format {self.format} is newer than this satsam_ros ({META_FORMAT})")
        return self

    def post_for(self, size: Optional[int]) -> PostConfig:
        """The post-processing tuned for frame size ``size`` (validated): its
        ``postprocess`` entry, else ``threshold`` / ``min_area`` with no other prior."""
        values: Dict[str, Any] = {"threshold": float(self.threshold), "min_area": int(self.min_area)}
        values.update((self.postprocess or {}).get(str(size), {}) if size is not None else {})
        return PostConfig(**{k: v for k, v in values.items() if k not in CASCADE_KEYS}).validate()

    def cascade_for(self, size: Optional[int]) -> Tuple[Optional[int], Optional[int], Optional[int]]:
        """(coarse size, margin in input-frame pixels, most S patches per frame) of the
        cascade tuned for frame size ``size``; None for what its ``postprocess`` entry does
        not say. A coarse size is 0 (off: full tiling) or a frame size S below ``size``;
        the patch cap 0 (none) or more."""
        values = (self.postprocess or {}).get(str(size), {}) if size is not None else {}
        coarse, margin = values.get("cascade"), values.get("cascade_margin")
        cap = values.get("cascade_max_patches")
        if cap is not None and (isinstance(cap, bool) or int(cap) != cap or int(cap) < 0):
            raise ValueError(f"cascade_max_patches must be an integer >= 0 (0 = no cap); got {cap!r}")
        if coarse is not None and (isinstance(coarse, bool) or int(coarse) != coarse or
                                   (int(coarse) != 0 and not 0 < int(coarse) < int(size))):
            raise ValueError(f"cascade must be 0 (off) or a frame size below {size}; got {coarse!r}")
        if margin is not None and (isinstance(margin, bool) or int(margin) != margin or int(margin) < 0):
            raise ValueError(f"cascade_margin must be an integer >= 0 (input pixels); got {margin!r}")
        return ((None if coarse is None else int(coarse)), (None if margin is None else int(margin)),
                (None if cap is None else int(cap)))

    @classmethod
    def from_dict(cls, data: Dict[str, Any]) -> SatsamMeta:
        """From a satsam.json document (unknown keys ignored), validated."""
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        return cls(**known).validate()

    @classmethod
    def read(cls, directory: Path) -> SatsamMeta:
        """``directory/satsam.json``, validated; ValueError naming the file when it is not JSON."""
        path = Path(directory) / META_FILE
        try:
            data = json.loads(path.read_text())
        except json.JSONDecodeError as exc:
            raise ValueError(f"{path}: not valid JSON ({exc})") from exc
        return cls.from_dict(data)

    def to_json(self) -> str:
        """The satsam.json text (sorted keys, indent 2, trailing newline)."""
        return json.dumps(asdict(self), indent=2, sort_keys=True) + "\n"
