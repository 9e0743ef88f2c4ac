"""The settings of a training run (:class:`FitConfig`, checked by ``resolved``) and its result."""

from __future__ import annotations

import copy
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

TRAIN_PARTS = ("mask_decoder", "all")
LOSS_RESOLUTIONS = ("patch", "low")
SCHEDULES = ("constant", "cosine")
OPTIMIZERS = ("adam", "adamw")
SELECT_METRICS = ("auto", "val_loss", "val_patch_accuracy", "val_frame_accuracy")
MIXED_PRECISION = ("auto", "no", "fp16", "bf16")
FROM_SCRATCH = ("tiny", "tiny-sam2", "tiny-edgetam")
#: ``--base-config`` keys of each from-scratch base: integers, or lists of integers
#: (one per Hiera stage) for SAM 2's widths, blocks and heads; EdgeTAM's are the
#: arguments of ``satsam_ros.edgetam_family.edgetam_config``: ``backbone`` (a timm
#: architecture name), ``model_args`` (a JSON object of timm keyword arguments) and
#: integers ``fpn_hidden``, ``decoder_heads``, ``mlp_ratio``
SCRATCH_CONFIG_KEYS = {
    "tiny": ("hidden", "layers", "decoder_hidden", "patch"),
    "tiny-sam2": ("widths", "blocks", "heads", "fpn"),
    "tiny-edgetam": ("backbone", "model_args", "fpn_hidden", "decoder_heads", "mlp_ratio"),
}
LIST_KEYS = ("widths", "blocks", "heads")
STRING_KEYS = ("backbone",)
OBJECT_KEYS = ("model_args",)
HIERA_STAGES = 4
BASE_CONFIG_KEYS = tuple(k for keys in SCRATCH_CONFIG_KEYS.values() for k in keys)
LOSSES = ("dicece", "dicefocal", "dicece-pos")


class FitError(ValueError):
    """A fit setting or input that cannot be used; the message names it."""


@dataclass
class FitConfig:
    """Every setting of a training run (the CLI's ``fit`` options map 1:1 onto these)."""

    patches: Any = ""  # patches directory (patches.json), or a list of them (e.g. one per size S)
    out: str = ""  # run directory
    val: Any = None  # patches directory/directories of the val split (loss + patch metrics)
    val_frames: Optional[str] = None  # COCO dataset directory: frame metrics via the Detector
    val_frames_split: str = "val"
    base: str = "tiny"  # tiny | tiny-sam2 | tiny-edgetam | vit-b | builtin | checkpoint dir | hub id
    # from-scratch sizes: tiny: hidden, layers, decoder_hidden, patch (ints); tiny-sam2: widths, blocks,
    # heads (4 ints each, one per Hiera stage), fpn (int); tiny-edgetam: backbone (timm name),
    # model_args (timm kwargs), fpn_hidden, decoder_heads, mlp_ratio (ints)
    base_config: Dict[str, Any] = field(default_factory=dict)
    encoder_size: Optional[int] = None  # E; default 256 from scratch, the base's own otherwise
    train: Optional[str] = None  # mask_decoder | all; default all from scratch, mask_decoder otherwise
    epochs: int = 25
    steps_per_epoch: Optional[int] = None  # None: an epoch is one pass over the patches; N: N steps (a stream)
    batch_size: int = 4
    lr: float = 1e-5
    optimizer: str = "adam"
    weight_decay: float = 0.0
    schedule: str = "constant"
    warmup_steps: int = 0
    clip_grad: float = 0.0  # max gradient norm; 0 = off
    loss_resolution: str = "patch"
    loss: str = "dicece"  # dicece: monai DiceCELoss; dicefocal: monai DiceFocalLoss; dicece-pos: fit.PositiveDiceCE
    # weight of the BCE on the decoder's object-score logit (positive: any satellite pixel in the
    # patch); None: 1.0 for a model with a presence head (SAM 2, EdgeTAM), 0 for SAM; 0 = off
    presence_weight: Optional[float] = None
    # knowledge distillation: a trained checkpoint (dir or builtin) whose mask probabilities on the same
    # (augmented) patches the model also learns, weight distill_weight x soft BCE, beside the labels' loss
    teacher: Optional[str] = None
    distill_weight: float = 1.0
    augment: bool = False
    seed: int = 0
    threshold: Optional[float] = None  # threshold for validation metrics and the saved meta
    select: str = "auto"
    mixed_precision: str = "auto"
    cpu: bool = False
    workers: int = 0
    threads: Optional[int] = None  # torch CPU threads per process (None: torch's default)
    compile: bool = False  # torch.compile the training module (a one-off compile; faster steps)
    resume: bool = False
    progress: bool = True
    command: Optional[str] = None  # recorded in provenance (the CLI passes the command line)

    def resolved(self) -> FitConfig:
        """A checked copy with the defaults that depend on the base filled in."""
        cfg = copy.deepcopy(self)
        cfg.patches = dir_list(cfg.patches)
        cfg.val = dir_list(cfg.val) or None
        if not cfg.patches:
            raise FitError("fit: --patches DIR is required")
        if not cfg.out:
            raise FitError("fit: --out DIR is required")
        scratch = cfg.base in FROM_SCRATCH
        if cfg.train is None:
            cfg.train = "all" if scratch else "mask_decoder"
        if cfg.train not in TRAIN_PARTS:
            raise FitError(f"fit: --train must be one of {', '.join(TRAIN_PARTS)}; got {cfg.train!r}")
        if cfg.encoder_size is None and scratch:
            cfg.encoder_size = 256
        if cfg.encoder_size is not None and (cfg.encoder_size < 32 or cfg.encoder_size % 16):
            raise FitError(f"fit: --encoder-size must be a multiple of 16 and >= 32; got {cfg.encoder_size}")
        if cfg.base == "tiny-sam2" and cfg.encoder_size % 32:
            raise FitError(f"fit: --encoder-size of a SAM 2 (tiny-sam2) must be a multiple of 32 (patch stride 4 "
                           f"x stage-0 window 8); got {cfg.encoder_size}")
        if cfg.base == "tiny-edgetam" and cfg.encoder_size % 32:
            raise FitError(f"fit: --encoder-size of an EdgeTAM (tiny-edgetam) must be a multiple of 32 (the "
                           f"backbone's stride-32 feature); got {cfg.encoder_size}")
        unknown = set(cfg.base_config) - set(BASE_CONFIG_KEYS)
        if unknown:
            raise FitError(f"fit: --base-config keys {sorted(unknown)} unknown; known: {', '.join(BASE_CONFIG_KEYS)}")
        if cfg.base_config and not scratch:
            raise FitError(f"fit: --base-config only applies to a from-scratch base ({', '.join(FROM_SCRATCH)}), "
                           f"not {cfg.base!r}")
        if scratch:
            check_base_config(cfg.base, cfg.base_config)
        checks = [
            (cfg.epochs >= 1, f"--epochs must be >= 1; got {cfg.epochs}"),
            (cfg.steps_per_epoch is None or cfg.steps_per_epoch >= 1,
             f"--steps-per-epoch must be >= 1; got {cfg.steps_per_epoch}"),
            (cfg.loss in LOSSES, f"--loss must be one of {LOSSES}; got {cfg.loss!r}"),
            (cfg.batch_size >= 1, f"--batch-size must be >= 1; got {cfg.batch_size}"),
            (cfg.lr > 0, f"--lr must be > 0; got {cfg.lr}"),
            (cfg.presence_weight is None or cfg.presence_weight >= 0,
             f"--presence-weight must be >= 0; got {cfg.presence_weight}"),
            (cfg.distill_weight >= 0, f"--distill-weight must be >= 0; got {cfg.distill_weight}"),
            (cfg.teacher is None or cfg.teacher != "", "--teacher needs a checkpoint directory or builtin"),
            (cfg.weight_decay >= 0, f"--weight-decay must be >= 0; got {cfg.weight_decay}"),
            (cfg.warmup_steps >= 0, f"--warmup-steps must be >= 0; got {cfg.warmup_steps}"),
            (cfg.clip_grad >= 0, f"--clip-grad must be >= 0; got {cfg.clip_grad}"),
            (cfg.workers >= 0, f"--workers must be >= 0; got {cfg.workers}"),
            (cfg.threads is None or cfg.threads >= 1, f"--threads must be >= 1; got {cfg.threads}"),
            (cfg.optimizer in OPTIMIZERS, f"--optimizer must be one of {OPTIMIZERS}; got {cfg.optimizer!r}"),
            (cfg.schedule in SCHEDULES, f"--schedule must be one of {SCHEDULES}; got {cfg.schedule!r}"),
            (cfg.loss_resolution in LOSS_RESOLUTIONS,
             f"--loss-resolution must be one of {LOSS_RESOLUTIONS}; got {cfg.loss_resolution!r}"),
            (cfg.select in SELECT_METRICS, f"--select must be one of {SELECT_METRICS}; got {cfg.select!r}"),
            (cfg.mixed_precision in MIXED_PRECISION,
             f"--mixed-precision must be one of {MIXED_PRECISION}; got {cfg.mixed_precision!r}"),
            (cfg.threshold is None or 0.0 <= cfg.threshold <= 1.0,
             f"--threshold must be in [0, 1]; got {cfg.threshold}"),
        ]
        for ok, message in checks:
            if not ok:
                raise FitError("fit: " + message)
        if cfg.select == "val_frame_accuracy" and not cfg.val_frames:
            raise FitError("fit: --select val_frame_accuracy needs --val-frames DIR")
        if cfg.select in ("val_loss", "val_patch_accuracy") and not cfg.val:
            raise FitError(f"fit: --select {cfg.select} needs --val DIR (validation patches)")
        return cfg


@dataclass
class FitResult:
    """What :func:`fit` returns: where things went, the history, and the best model."""

    out: Path
    checkpoint: Path
    best_epoch: int
    best_metric: Dict[str, Any]
    history: List[Dict[str, Any]]
    model: Any  # the SamModel or Sam2Model with the best weights, in memory (eval mode, CPU or the training device)
    meta: Any  # its SatsamMeta (as written to checkpoint/satsam.json)
    steps: int


def dir_list(value) -> List[str]:
    """A directory or a list of them -> list of str (empty for None / "")."""
    if not value:
        return []
    if isinstance(value, (str, os.PathLike)):
        return [str(value)]
    return [str(v) for v in value]


def check_base_config(base: str, config: Dict[str, Any]) -> None:
    """FitError unless every key of ``config`` belongs to the from-scratch ``base`` and
    has its shape: an int > 0, or for SAM 2's widths / blocks / heads 4 of them, for
    EdgeTAM's ``backbone`` a name and its ``model_args`` an object."""
    keys = SCRATCH_CONFIG_KEYS[base]
    for key, value in config.items():
        if key not in keys:
            other = next(b for b, ks in SCRATCH_CONFIG_KEYS.items() if key in ks)
            raise FitError(f"fit: --base-config {key} is a key of --base {other}, not of --base {base} "
                           f"(which takes {', '.join(keys)})")
        if key in LIST_KEYS:
            ok = isinstance(value, (list, tuple)) and len(value) == HIERA_STAGES and all(
                isinstance(v, int) and not isinstance(v, bool) for v in value)
            what = f"{HIERA_STAGES} comma-separated integers (one per Hiera stage), e.g. {key}=1,1,2,1"
        elif key in STRING_KEYS:
            ok = isinstance(value, str) and bool(value.strip())
            what = "a timm architecture name, e.g. backbone=repvit_m0_9"
        elif key in OBJECT_KEYS:
            ok = isinstance(value, dict)
            what = 'a JSON object of timm keyword arguments, e.g. {"model_args": {"depth": [1, 1, 4, 1]}}'
        else:
            ok = isinstance(value, int) and not isinstance(value, bool)
            what = "one integer"
        if not ok:
            raise FitError(f"fit: --base-config {key}={_show(value)}: expected {what}")
        if key not in STRING_KEYS + OBJECT_KEYS and min(value if isinstance(value, (list, tuple)) else [value]) <= 0:
            raise FitError(f"fit: --base-config {key}={_show(value)}: must be positive")


def _show(value) -> str:
    if isinstance(value, dict):
        return json.dumps(value)
    return ",".join(str(v) for v in value) if isinstance(value, (list, tuple)) else str(value)


def _json_words(item: str, out: Dict[str, Any]) -> None:
    """A ``--base-config`` word that is a JSON object: its keys into ``out`` (FitError
    if malformed, unknown or given twice)."""
    try:
        data = json.loads(item)
    except json.JSONDecodeError as exc:
        raise FitError(f"fit: --base-config {item!r}: not a valid JSON object ({exc})") from exc
    if not isinstance(data, dict):
        raise FitError(f"fit: --base-config {item!r}: a JSON word must be an object of KEY: value")
    for key, value in data.items():
        key = str(key).replace("-", "_")
        if key not in BASE_CONFIG_KEYS:
            raise FitError(f"fit: --base-config key {key!r} unknown; known: {', '.join(BASE_CONFIG_KEYS)}")
        if key in out:
            raise FitError(f"fit: --base-config {key} given twice")
        out[key] = list(value) if isinstance(value, tuple) else value


def parse_base_config(items: Optional[Sequence[str]]) -> Dict[str, Any]:
    """``--base-config`` words -> the from-scratch sizes (FitError if malformed).

    Words are ``KEY=INT`` or, for SAM 2's per-stage keys, ``KEY=INT,INT,INT,INT``;
    several may share one word separated by commas: an integer without ``KEY=``
    continues the list of the key before it. So ``["hidden=192", "layers=6"]``,
    ``["hidden=192,layers=6"]`` -> ``{"hidden": 192, "layers": 6}``, and
    ``["widths=48,96,192,384", "blocks=1,2,4,2", "fpn=96"]`` (or the same words
    joined by commas) -> ``{"widths": [48, 96, 192, 384], "blocks": [1, 2, 4, 2],
    "fpn": 96}``. A word that starts with ``{`` is a JSON object of keys and values
    (EdgeTAM's ``backbone`` name and ``model_args`` object need it, e.g.
    ``'{"backbone": "repvit_m0_9", "model_args": {"embed_dim": [32, 64, 128, 256],
    "depth": [1, 1, 4, 1]}, "fpn_hidden": 64}'``); KEY=INT words may follow it, and
    ``backbone=NAME`` is also understood as a word. Whether the keys suit the base is
    :func:`check_base_config`'s job.
    """
    out: Dict[str, Any] = {}
    key: Optional[str] = None
    for item in items or []:
        if item.strip().startswith("{"):
            _json_words(item, out)
            key = None
            continue
        name, sep, value = item.partition("=")
        if sep and name.strip().replace("-", "_") in STRING_KEYS:
            key = name.strip().replace("-", "_")
            if key in out:
                raise FitError(f"fit: --base-config {key} given twice")
            out[key] = value.strip()
            key = None
            continue
        for part in item.split(","):
            part = part.strip()
            if not part:
                continue
            name, sep, value = part.partition("=")
            if sep:
                key = name.strip().replace("-", "_")
                if key not in BASE_CONFIG_KEYS:
                    raise FitError(f"fit: --base-config {part!r}: expected KEY=INT with KEY in "
                                   f"{', '.join(BASE_CONFIG_KEYS)}")
                if key in out:
                    raise FitError(f"fit: --base-config {key} given twice")
            elif key is None or key not in LIST_KEYS:
                after = f" after {key}={_show(out[key])}" if key else ""
                raise FitError(f"fit: --base-config {part!r}{after}: expected KEY=INT (only "
                               f"{', '.join(LIST_KEYS)} take a comma-separated list)")
            try:
                number = int(value if sep else name)
            except ValueError as exc:
                raise FitError(f"fit: --base-config {part!r}: {(value if sep else name)!r} is not an integer") from exc
            if number <= 0:
                raise FitError(f"fit: --base-config {part!r}: must be positive")
            if key in LIST_KEYS:
                out.setdefault(key, []).append(number)
            else:
                out[key] = number
    return out
