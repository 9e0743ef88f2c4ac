"""Fine-tuning (or training from scratch) a SamModel on satellite patches.

The model sees exactly what the Detector feeds it at inference time:

* patch (P x P uint8 grayscale, from ``satsam-train patches``) -> optional augmentation
  (flips / 90-degree rotations of image and mask together, brightness/contrast gain on
  the image) -> ``satsam_ros.imaging.to_sam_rgb`` -> ``imaging.normalize`` -> resized to
  the encoder input E x E with the Detector's own ``_resize_patches``;
* the prompt policy of the checkpoint, baked in by
  ``satsam_ros.backends.torch_backend.make_patch_module`` -> N x m x m logits (m = E/4);
* the loss (monai ``DiceCELoss(sigmoid=True, squared_pred=True)``) is computed either
  on the logits upsampled bilinearly to P x P against the full-resolution mask
  (``loss_resolution="patch"``, the default: it scores exactly the probability map
  the Detector thresholds) or on the m x m logits against the mask area-downsampled to
  a soft m x m target (``"low"``, cheaper when P >> m).

Hugging Face Accelerate runs the loop, so the same code runs on one CPU, one GPU with
fp16 mixed precision, or several processes under ``accelerate launch``. Validation
runs on the main process only.

Outputs under ``out`` (a *run directory*)::

    model/            the best checkpoint by the validation metric (save_checkpoint, atomic)
    last/             training state: weights, optimizer, scheduler, RNG, epoch, step (atomic)
    train_log.csv     one row per epoch (losses, validation metrics, lr, seconds)
    curves.png        loss and metric curves
    tensorboard/      the same scalars, when the tensorboard package is installed
    fit.json          summary: best epoch, metrics, settings, provenance

Data order and augmentation are functions of (seed, epoch, index), and ``last/`` is
written every epoch and on KeyboardInterrupt (mid-epoch, with the position in the
epoch), so ``resume=True`` continues to the same weights an uninterrupted run reaches.
"""

from __future__ import annotations

import copy
import json
import math
import os
import random
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

from . import report

TRAIN_PARTS = ("mask_decoder", "all")
LOSS_RESOLUTIONS = ("patch", "low")
SCHEDULES = ("constant", "cosine")
OPTIMIZERS = ("adam", "adamw")
SELECT_METRICS = ("auto", "val_loss", "val_patch_accuracy", "val_frame_accuracy")
MIXED_PRECISION = ("auto", "no", "fp16", "bf16")
FROM_SCRATCH = ("tiny",)
BASE_CONFIG_KEYS = ("hidden", "layers", "decoder_hidden", "patch")
LOSSES = ("dicece", "dicefocal")
STATE_FILE = "state.pt"
STATE_FORMAT = 1
# Settings a resumed run must share with the run it continues (others may change).
RESUME_LOCKED = (
    "patches", "base", "base_config", "encoder_size", "train", "batch_size", "lr", "optimizer",
    "weight_decay", "schedule", "warmup_steps", "seed", "loss_resolution", "augment", "steps_per_epoch", "loss",
)


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
    base: str = "tiny"  # tiny | vit-b | builtin | checkpoint dir | hub id
    base_config: Dict[str, int] = field(default_factory=dict)  # tiny only: hidden, layers, decoder_hidden
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
    loss: str = "dicece"  # dicece: monai DiceCELoss; dicefocal: monai DiceFocalLoss
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
        cfg.patches = _dir_list(cfg.patches)
        cfg.val = _dir_list(cfg.val) or None
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
        unknown = set(cfg.base_config) - set(BASE_CONFIG_KEYS)
        if unknown:
            raise FitError(f"fit: --base-config keys {sorted(unknown)} unknown; known: {', '.join(BASE_CONFIG_KEYS)}")
        if cfg.base_config and not scratch:
            raise FitError(f"fit: --base-config only applies to a from-scratch base (tiny), not {cfg.base!r}")
        checks = [
            (cfg.epochs >= 1, f"--epochs must be >= 1; got {cfg.epochs}"),
            (cfg.steps_per_epoch is None or cfg.steps_per_epoch >= 1,
             f"--steps-per-epoch must be >= 1; got {cfg.steps_per_epoch}"),
            (cfg.loss in LOSSES, f"--loss must be one of {LOSSES}; got {cfg.loss!r}"),
            (cfg.batch_size >= 1, f"--batch-size must be >= 1; got {cfg.batch_size}"),
            (cfg.lr > 0, f"--lr must be > 0; got {cfg.lr}"),
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
    model: Any  # the SamModel with the best weights, in memory (eval mode, CPU or the training device)
    meta: Any  # its SatsamMeta (as written to checkpoint/satsam.json)
    steps: int


# --------------------------------------------------------------------------- the data


def _dir_list(value) -> List[str]:
    """A directory or a list of them -> list of str (empty for None / "")."""
    if not value:
        return []
    if isinstance(value, (str, os.PathLike)):
        return [str(value)]
    return [str(v) for v in value]


def read_patch_index(directory) -> Dict[str, Any]:
    """``DIR/patches.json`` read and checked by ``satsam_training.patches``; FitError if unusable."""
    from .patches import read_patch_index as _read

    if not (Path(directory) / "patches.json").is_file():
        raise FitError(f"{directory}: no patches.json (make one with `satsam-train patches`)")
    try:
        index = _read(directory)
    except ValueError as exc:
        raise FitError(str(exc)) from exc
    if not index["items"]:
        raise FitError(f"{directory}/patches.json: no patches listed")
    return index


class PatchDataset:
    """The patches of one or more ``patches.json`` directories as model inputs and loss
    targets (several directories, e.g. one per S, are concatenated in the given order;
    their patch sizes must agree, ``size`` is None when their S differ).

    ``dataset[i]`` -> ``(pixels 3 x E x E float32, target 1 x T x T float32 in [0, 1])``
    with T = P (``loss_resolution="patch"``) or E / 4 (``"low"``, area-averaged, so a
    target pixel holds the satellite's coverage fraction). Images and masks are read
    once and kept in memory (P x P uint8 each). Augmentation, when on, draws from a
    generator seeded by (seed, epoch, index), so it is the same in every run and on
    every process; set :attr:`epoch` before each epoch.
    """

    def __init__(
        self,
        directory,
        encoder_size: int,
        loss_resolution: str = "patch",
        augment: bool = False,
        seed: int = 0,
    ):
        from .patches import load_patch

        self.directories = [Path(d) for d in _dir_list(directory)]
        if not self.directories:
            raise FitError("fit: no patches directory given")
        self.indexes = [read_patch_index(d) for d in self.directories]
        self.index = self.indexes[0]
        sizes = {int(ix["patch_size"]) for ix in self.indexes}
        if len(sizes) > 1:
            raise FitError(f"fit: the patches directories mix patch sizes {sorted(sizes)}")
        self.patch_size = sizes.pop()
        frame_sizes = {ix.get("size") for ix in self.indexes}
        self.size = frame_sizes.pop() if len(frame_sizes) == 1 else None
        self.sizes = [ix.get("size") for ix in self.indexes]
        self.encoder_size = int(encoder_size)
        self.loss_resolution = loss_resolution
        self.augment = bool(augment)
        self.seed = int(seed)
        self.epoch = 0
        self.images: List[np.ndarray] = []
        self.masks: List[np.ndarray] = []
        p = self.patch_size
        for directory, index in zip(self.directories, self.indexes):
            for item in index["items"]:
                try:
                    img, mask = load_patch(directory, item, p)
                except (OSError, ValueError) as exc:
                    raise FitError(f"fit: {exc}") from exc
                self.images.append(img)
                self.masks.append(mask)
        self.positive = np.array([bool(np.any(m)) for m in self.masks])

    def __len__(self) -> int:
        return len(self.images)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def _augmented(self, index: int) -> Tuple[np.ndarray, np.ndarray]:
        img, mask = self.images[index], self.masks[index]
        if not self.augment:
            return img, mask
        rng = np.random.default_rng([self.seed, self.epoch, index])
        k = int(rng.integers(4))
        flip = bool(rng.integers(2))
        gain = float(rng.uniform(0.8, 1.2))
        offset = float(rng.uniform(-20.0, 20.0))
        img = np.rot90(img, k)
        mask = np.rot90(mask, k)
        if flip:
            img, mask = img[:, ::-1], mask[:, ::-1]
        img = np.clip(img.astype(np.float32) * gain + offset, 0, 255).round().astype(np.uint8)
        return np.ascontiguousarray(img), np.ascontiguousarray(mask)

    def pixels(self, img: np.ndarray) -> np.ndarray:
        """P x P uint8 patch -> 3 x E x E float32, the Detector's preprocessing:
        ``to_sam_rgb`` + ``normalize``, then each channel resized to E x E bilinearly
        (cv2 INTER_LINEAR, the Detector's patch resize). A test pins this to the batch
        the Detector hands its backend."""
        import cv2

        from satsam_ros import imaging

        normed = imaging.normalize(imaging.to_sam_rgb(img))  # P x P x 3 float32
        chw = np.ascontiguousarray(normed.transpose(2, 0, 1))
        e = self.encoder_size
        if chw.shape[1] == e:
            return chw
        return np.stack([cv2.resize(plane, (e, e), interpolation=cv2.INTER_LINEAR) for plane in chw])

    def target(self, mask: np.ndarray) -> np.ndarray:
        """P x P 0/255 mask -> 1 x T x T float32 in [0, 1]."""
        import cv2

        t = (mask > 0).astype(np.float32)
        if self.loss_resolution == "low":
            m = self.encoder_size // 4
            t = cv2.resize(t, (m, m), interpolation=cv2.INTER_AREA)
        return t[None]

    def __getitem__(self, index: int):
        import torch

        img, mask = self._augmented(int(index))
        return torch.from_numpy(self.pixels(img)), torch.from_numpy(self.target(mask))


class EpochPermutation:
    """A sampler whose order is a permutation drawn from (seed, epoch): reproducible
    across runs, resumes and process counts (accelerate shards it per process)."""

    def __init__(self, length: int, seed: int, shuffle: bool = True):
        self.length = int(length)
        self.seed = int(seed)
        self.shuffle = shuffle
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return self.length

    def __iter__(self):
        import torch

        if not self.shuffle:
            return iter(range(self.length))
        gen = torch.Generator()
        gen.manual_seed(self.seed * 1_000_003 + self.epoch)
        return iter(torch.randperm(self.length, generator=gen).tolist())


class StreamPermutation:
    """A sampler for epochs of a fixed number of samples, drawn from an endless stream:
    the concatenation of permutations of the dataset, one per pass, each drawn from
    (seed, pass). Epoch ``e`` is samples ``[e * n, (e + 1) * n)`` of the stream, so an
    epoch can be shorter or longer than the dataset, and the order is reproducible
    across runs and resumes."""

    def __init__(self, length: int, seed: int, samples_per_epoch: int):
        self.length = int(length)
        self.seed = int(seed)
        self.samples = int(samples_per_epoch)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return self.samples

    def _pass(self, k: int) -> List[int]:
        import torch

        gen = torch.Generator()
        gen.manual_seed(self.seed * 1_000_003 + 7_919 * k + 1)
        return torch.randperm(self.length, generator=gen).tolist()

    def __iter__(self):
        start = self.epoch * self.samples
        k, offset = divmod(start, self.length)
        out: List[int] = []
        while len(out) < self.samples:
            out.extend(self._pass(k)[offset:])
            k, offset = k + 1, 0
        return iter(out[: self.samples])


# -------------------------------------------------------------------------- the model


def build_model(cfg: FitConfig):
    """The SamModel to train and its SatsamMeta (encoder resized to E when asked)."""
    from satsam_ros.model import SatsamMeta, _random_model, encoder_input_size, load_model, resize_encoder, tiny_config

    if cfg.base == "tiny":
        model = _random_model(tiny_config(image_size=int(cfg.encoder_size), **cfg.base_config), seed=cfg.seed)
        meta = SatsamMeta(encoder_input_size=int(cfg.encoder_size))
        return model, meta
    try:
        model, meta = load_model(cfg.base, device="cpu")
    except (OSError, ValueError) as exc:
        raise FitError(f"fit: --base {cfg.base!r}: {exc}") from exc
    if cfg.encoder_size is not None and cfg.encoder_size != encoder_input_size(model):
        model = resize_encoder(model, int(cfg.encoder_size))
    meta = copy.deepcopy(meta)
    meta.encoder_input_size = encoder_input_size(model)
    return model, meta


def set_trainable(model, train: str) -> List[Any]:
    """Freeze everything except the parts named by ``train``; returns the trainable params."""
    if train not in TRAIN_PARTS:
        raise FitError(f"train must be one of {TRAIN_PARTS}; got {train!r}")
    for name, param in model.named_parameters():
        param.requires_grad = train == "all" or name.startswith("mask_decoder.")
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise FitError(f"train={train!r} selects no parameters of this model")
    return params


def lr_factor(step: int, warmup_steps: int, total_steps: int, schedule: str) -> float:
    """Learning-rate multiplier at optimizer step ``step`` (0-based): linear warm-up over
    ``warmup_steps``, then constant or a cosine decay to 0 at ``total_steps``."""
    if warmup_steps > 0 and step < warmup_steps:
        return float(step + 1) / float(warmup_steps)
    if schedule == "cosine":
        span = max(1, total_steps - warmup_steps)
        progress = min(1.0, max(0.0, (step - warmup_steps) / span))
        return 0.5 * (1.0 + math.cos(math.pi * progress))
    return 1.0


def logits_for_loss(logits, target_size: int):
    """N x m x m logits -> N x 1 x T x T (bilinear, as the Detector upsamples them)."""
    import torch.nn.functional as F

    x = logits[:, None].float()
    if x.shape[-1] != target_size:
        x = F.interpolate(x, size=(target_size, target_size), mode="bilinear", align_corners=False)
    return x


def detector_for(model, meta, size: int, threshold: float, device: str = "cpu"):
    """A Detector around an in-memory SamModel (the node's code path, no file round trip)."""
    from satsam_ros.backends.torch_backend import TorchBackend
    from satsam_ros.detector import Detector, DetectorConfig

    cfg = DetectorConfig(size=int(size), patch_size=int(meta.patch_size), threshold=float(threshold))
    return Detector(TorchBackend(model, meta.prompt_policy, device), cfg, meta)


def make_loss(name: str):
    """The training loss on (logits N x 1 x T x T, target N x 1 x T x T in [0, 1]):
    ``dicece``: monai DiceCELoss (sigmoid, squared denominator), the reference's loss;
    ``dicefocal``: monai DiceFocalLoss (sigmoid, squared denominator, focal gamma 2), which
    weights the hard pixels (thin panels, edges, bright distractors) over the easy
    background."""
    if name == "dicece":
        from monai.losses import DiceCELoss

        return DiceCELoss(sigmoid=True, squared_pred=True)
    if name == "dicefocal":
        from monai.losses import DiceFocalLoss

        return DiceFocalLoss(sigmoid=True, squared_pred=True, gamma=2.0)
    raise FitError(f"fit: --loss must be one of {LOSSES}; got {name!r}")


# ---------------------------------------------------------------------- validation


def validate_patches(module, dataset: PatchDataset, loss_fn, threshold: float, batch_size: int, device) -> Dict:
    """Loss and patch-level metrics on the validation patches (no augmentation).

    Each patch is scored like a frame (IoU > 0.5 on the P x P probability map
    thresholded at ``threshold``; an empty patch is correct only if nothing is predicted).
    """
    import torch

    from satsam_ros import postprocess
    from satsam_ros.metrics import MetricAccumulator

    acc = MetricAccumulator()
    total, count = 0.0, 0
    p = dataset.patch_size
    was_training = module.training
    module.eval()
    with torch.no_grad():
        for start in range(0, len(dataset), batch_size):
            idx = range(start, min(start + batch_size, len(dataset)))
            x = torch.stack([dataset[i][0] for i in idx]).to(device)
            y = torch.stack([dataset[i][1] for i in idx]).to(device)
            logits = module(x)
            loss = loss_fn(logits_for_loss(logits, y.shape[-1]), y)
            total += float(loss) * len(idx)
            count += len(idx)
            prob = postprocess.sigmoid(logits_for_loss(logits, p)[:, 0].cpu().numpy())
            for j, i in enumerate(idx):
                acc.add(postprocess.threshold(prob[j], threshold), dataset.masks[i], frame_id=i)
    module.train(was_training)
    s = acc.summary()
    return {
        "val_loss": total / max(1, count),
        "val_patch_accuracy": s["accuracy"],
        "val_patch_mean_iou": s["mean_iou"],
        "val_patch_false_alarm_rate": s["false_alarm_rate"],
    }


def validate_frames(model, meta, frames, size: int, threshold: float, device, progress: bool = False) -> Dict:
    """Frame metrics on COCO frames through the Detector built around ``model``."""
    from tqdm import tqdm

    from satsam_ros.metrics import MetricAccumulator

    was_training = model.training
    detector = detector_for(model, meta, size, threshold, device)
    acc = MetricAccumulator()
    for frame in tqdm(frames, desc="val frames", unit="frame", leave=False, disable=not progress):
        res = detector.detect(frame.image())
        acc.add(res.mask, frame.mask(), seconds=res.timings["total"], frame_id=frame.id)
    model.train(was_training)
    s = acc.summary()
    return {
        "val_frame_accuracy": s["accuracy"],
        "val_frame_mean_iou": s["mean_iou"],
        "val_frame_false_alarm_rate": s["false_alarm_rate"],
        "val_frame_miss_rate": s["miss_rate"],
    }


def _score(entry: Dict[str, Any], select: str) -> Tuple[float, float, float]:
    """Sort key (higher is better) for choosing the best epoch: the selected accuracy,
    then the mean IoU of the same validation (frames or patches), then the lower loss."""
    loss = entry.get("val_loss")
    loss_key = -loss if loss is not None else -entry["train_loss"]
    if select == "val_loss":
        return (loss_key, 0.0, 0.0)
    value = entry.get(select)
    miou = entry.get(select.replace("_accuracy", "_mean_iou"))
    return (-1.0 if value is None else float(value), -1.0 if miou is None else float(miou), loss_key)


def _auto_select(cfg: FitConfig) -> str:
    if cfg.select != "auto":
        return cfg.select
    if cfg.val_frames:
        return "val_frame_accuracy"
    if cfg.val:
        # Not patch accuracy: most validation patches are empty, so early in a from-scratch
        # run the model that predicts nothing everywhere scores best and would be kept.
        return "val_loss"
    return "train_loss"


# ------------------------------------------------------------------ training state


def _rng_states() -> Dict[str, Any]:
    import torch

    states = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def _set_rng_states(states: Dict[str, Any]) -> None:
    import torch

    random.setstate(states["python"])
    np.random.set_state(states["numpy"])
    torch.set_rng_state(states["torch"])
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])


def save_training_state(directory: Path, state: Dict[str, Any]) -> Path:
    """Write ``state`` (torch-serialisable) to ``directory/state.pt`` atomically: a fresh
    directory is built beside it, then renamed over the old one."""
    import tempfile

    import torch

    directory = Path(directory)
    directory.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{directory.name}.tmp-", dir=str(directory.parent)))
    old = directory.parent / f".{directory.name}.old-{os.getpid()}"
    try:
        torch.save(state, tmp / STATE_FILE)
        summary = {k: state[k] for k in ("epoch", "step", "step_in_epoch", "complete_epochs", "format")}
        (tmp / "trainer.json").write_text(json.dumps(summary, indent=2) + "\n")
        if directory.exists():
            os.replace(directory, old)
        os.replace(tmp, directory)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
        if old.exists():
            shutil.rmtree(old, ignore_errors=True)
    return directory


def load_training_state(directory: Path) -> Dict[str, Any]:
    import torch

    path = Path(directory) / STATE_FILE
    if not path.is_file():
        raise FitError(f"--resume: no training state at {path} (nothing to resume)")
    state = torch.load(path, map_location="cpu", weights_only=False)
    if int(state.get("format", 0)) != STATE_FORMAT:
        raise FitError(f"--resume: {path} has state format {state.get('format')}, expected {STATE_FORMAT}")
    return state


def _check_resume(saved: Dict[str, Any], cfg: FitConfig, processes: int) -> None:
    config = saved["config"]
    diffs = [
        f"{key}: saved {config.get(key)!r}, now {getattr(cfg, key)!r}"
        for key in RESUME_LOCKED
        if config.get(key) != getattr(cfg, key)
    ]
    if cfg.schedule == "cosine" and config.get("epochs") != cfg.epochs:
        diffs.append(f"epochs: saved {config.get('epochs')}, now {cfg.epochs} (the cosine schedule depends on it)")
    if saved.get("processes", processes) != processes:
        diffs.append(f"processes: saved {saved.get('processes')}, now {processes} (the global batch depends on it)")
    if diffs:
        raise FitError("--resume: the run's settings changed: " + "; ".join(diffs))


# ----------------------------------------------------------------------------- fit


def _mixed_precision(cfg: FitConfig) -> str:
    import torch

    if cfg.mixed_precision != "auto":
        return cfg.mixed_precision
    return "fp16" if (torch.cuda.is_available() and not cfg.cpu) else "no"


def _tensorboard(directory: Path, log: Callable[[str], None]):
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        log("fit: the tensorboard package is not installed: logging to train_log.csv only")
        return None
    return SummaryWriter(str(directory))


def fit(
    config: FitConfig,
    log: Optional[Callable[[str], None]] = None,
    on_step: Optional[Callable[[int], None]] = None,
) -> FitResult:
    """Train a SamModel on patches; see the module docstring for what is written.

    ``log`` receives one-line progress messages (main process only); ``on_step`` is
    called after every optimizer step with the global step number (tests use it to
    simulate an interrupt by raising KeyboardInterrupt).
    Raises FitError for unusable settings or data, KeyboardInterrupt after saving
    ``last/`` when interrupted.
    """
    import torch
    from accelerate import Accelerator
    from accelerate.utils import DistributedDataParallelKwargs
    from tqdm import tqdm

    from satsam_ros.backends.torch_backend import make_patch_module
    from satsam_ros.model import DEFAULT_THRESHOLD, save_checkpoint

    cfg = config.resolved()
    if cfg.threads:
        torch.set_num_threads(int(cfg.threads))
    accelerator = Accelerator(
        mixed_precision=_mixed_precision(cfg),
        # without a GPU, processes started by `accelerate launch` / torchrun join as MULTI_CPU (gloo)
        cpu=cfg.cpu or not torch.cuda.is_available(),
        kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=True)],
    )
    main = accelerator.is_main_process

    def say(message: str) -> None:
        if main and log is not None:
            log(message)

    out = Path(cfg.out)
    ckpt_dir, last_dir = out / "model", out / "last"
    if main:
        out.mkdir(parents=True, exist_ok=True)
    saved = None
    if cfg.resume:
        saved = load_training_state(last_dir)
        _check_resume(saved, cfg, accelerator.num_processes)
    elif last_dir.exists():
        raise FitError(f"fit: {out} already holds a training run (last/); use --resume, or a new --out")
    accelerator.wait_for_everyone()

    model, meta = build_model(cfg)
    from satsam_ros.model import encoder_input_size

    e = encoder_input_size(model)
    train_set = PatchDataset(cfg.patches, e, cfg.loss_resolution, cfg.augment, cfg.seed)
    val_set = PatchDataset(cfg.val, e, cfg.loss_resolution, False, cfg.seed) if cfg.val else None
    size = train_set.size
    if val_set is not None and val_set.patch_size != train_set.patch_size:
        raise FitError(f"fit: train patches are {train_set.patch_size} px, val patches {val_set.patch_size} px")
    meta.size = int(size) if size else None
    meta.patch_size = train_set.patch_size
    meta.threshold = float(cfg.threshold if cfg.threshold is not None else DEFAULT_THRESHOLD)
    val_frames = None
    if cfg.val_frames:
        if not size:
            raise FitError(f"fit: --val-frames needs one frame size S; the patches have S = {train_set.sizes}")
        from .coco import load_split

        val_frames = load_split(cfg.val_frames, cfg.val_frames_split)
    select = _auto_select(cfg)

    params = set_trainable(model, cfg.train)
    module = make_patch_module(model, meta.prompt_policy)
    if cfg.optimizer == "adam":
        optimizer = torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    else:
        optimizer = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    if cfg.steps_per_epoch:
        sampler = StreamPermutation(len(train_set), cfg.seed, cfg.steps_per_epoch * cfg.batch_size)
    else:
        sampler = EpochPermutation(len(train_set), cfg.seed)
    loader = torch.utils.data.DataLoader(
        train_set, batch_size=cfg.batch_size, sampler=sampler, num_workers=cfg.workers, drop_last=False
    )
    history: List[Dict[str, Any]] = []
    start_epoch, step, step_in_epoch, loss_sum, loss_count = 0, 0, 0, 0.0, 0
    best: Optional[Dict[str, Any]] = None
    best_state: Optional[Dict[str, Any]] = None
    if saved is not None:
        model.load_state_dict(saved["model"])
        start_epoch, step, step_in_epoch = saved["epoch"], saved["step"], saved["step_in_epoch"]
        loss_sum, loss_count = saved["loss_sum"], saved["loss_count"]
        # epochs after the saved position (interrupted between validation and saving) run again
        history = [h for h in saved["history"] if h["epoch"] <= start_epoch]
        best = saved["best"]
        best_state = saved.get("best_state")
        _set_rng_states(saved["rng"])
        say(f"fit: resuming at epoch {start_epoch + 1}, step {step} ({step_in_epoch} into the epoch)")

    if cfg.compile:
        say("fit: compiling the training module (a one-off wait of a few minutes)")
        module.compile()
    module, optimizer, loader = accelerator.prepare(module, optimizer, loader)
    steps_per_epoch = len(loader)
    total_steps = steps_per_epoch * cfg.epochs
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer.optimizer if hasattr(optimizer, "optimizer") else optimizer,
        lambda s: lr_factor(s, cfg.warmup_steps, total_steps, cfg.schedule),
    )
    if saved is not None:
        # after the scheduler exists: its constructor rewrites the lr, the optimizer state restores it
        optimizer.load_state_dict(saved["optimizer"])
        scheduler.load_state_dict(saved["scheduler"])
    loss_fn = make_loss(cfg.loss)
    writer = _tensorboard(out / "tensorboard", say) if main else None
    raw = accelerator.unwrap_model(module)
    device = accelerator.device
    started = time.time()
    say(
        f"fit: {len(train_set)} train patches ({int(train_set.positive.sum())} with satellite), "
        f"{len(val_set) if val_set else 0} val patches, {steps_per_epoch} steps/epoch on "
        f"{accelerator.num_processes} process(es), device {device}, E={e}, train={cfg.train}, "
        f"{sum(p.numel() for p in params) / 1e6:.2f} M trainable parameters, select by {select}"
    )

    def state_dict(epoch: int, in_epoch: int) -> Dict[str, Any]:
        return {
            "format": STATE_FORMAT,
            "config": asdict(cfg),
            "processes": accelerator.num_processes,
            "model": {k: v.detach().cpu().clone() for k, v in raw.sam.state_dict().items()},
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "rng": _rng_states(),
            "epoch": epoch,
            "step": step,
            "step_in_epoch": in_epoch,
            "complete_epochs": epoch,
            "loss_sum": loss_sum,
            "loss_count": loss_count,
            "history": history,
            "best": best,
            "best_state": best_state,
        }

    def provenance(entry: Dict[str, Any]) -> Dict[str, Any]:
        return {
            "command": cfg.command or report.command_line(),
            "seed": cfg.seed,
            "base": cfg.base,
            "base_config": cfg.base_config,
            "train": cfg.train,
            "data": {
                "patches": [str(Path(d).resolve()) for d in cfg.patches],
                "patches_source": [ix.get("source") for ix in train_set.indexes],
                "patches_split": [ix.get("split") for ix in train_set.indexes],
                "patches_size": train_set.sizes,
                "patches_count": len(train_set),
                "val": [str(Path(d).resolve()) for d in cfg.val] if cfg.val else None,
                "val_frames": str(Path(cfg.val_frames).resolve()) if cfg.val_frames else None,
            },
            "settings": {k: v for k, v in asdict(cfg).items() if k not in ("command", "progress", "resume")},
            "epoch": entry["epoch"],
            "steps": step,
            "validation": {k: v for k, v in entry.items() if k.startswith("val_")},
            "selected_by": select,
            "git_commit": report.git_commit(),
            "versions": report.versions(),
            "saved": report.now_iso(),
        }

    epoch = start_epoch
    try:
        for epoch in range(start_epoch, cfg.epochs):
            t_epoch = time.time()
            loader.set_epoch(epoch)
            train_set.set_epoch(epoch)
            module.train()
            batches = loader
            if step_in_epoch:
                batches = accelerator.skip_first_batches(loader, step_in_epoch)
            bar = tqdm(
                batches,
                desc=f"epoch {epoch + 1}/{cfg.epochs}",
                total=steps_per_epoch,
                initial=step_in_epoch,
                unit="step",
                disable=not (main and cfg.progress),
                leave=False,
            )
            for x, y in bar:
                logits = module(x)
                loss = loss_fn(logits_for_loss(logits, y.shape[-1]), y.float())
                optimizer.zero_grad(set_to_none=True)
                accelerator.backward(loss)
                if cfg.clip_grad > 0:
                    accelerator.clip_grad_norm_(params, cfg.clip_grad)
                optimizer.step()
                scheduler.step()
                step += 1
                step_in_epoch += 1
                value = float(accelerator.reduce(loss.detach(), reduction="mean"))
                if not math.isfinite(value):
                    raise FitError(
                        f"fit: the loss became {value} at step {step} (epoch {epoch + 1}); lower --lr, "
                        "add --warmup-steps and --clip-grad"
                    )
                loss_sum += value
                loss_count += 1
                bar.set_postfix(loss=f"{value:.4f}", lr=f"{scheduler.get_last_lr()[0]:.2e}")
                if writer is not None:
                    writer.add_scalar("train/loss_step", value, step)
                if on_step is not None:
                    on_step(step)
            bar.close()
            train_seconds = time.time() - t_epoch

            entry: Dict[str, Any] = {
                "epoch": epoch + 1,
                "step": step,
                "lr": scheduler.get_last_lr()[0],
                "train_loss": loss_sum / max(1, loss_count),
                "seconds_per_step": train_seconds / max(1, loss_count),
            }
            accelerator.wait_for_everyone()
            if main:
                threshold = meta.threshold
                if val_set is not None:
                    entry.update(validate_patches(raw, val_set, loss_fn, threshold, cfg.batch_size, device))
                if val_frames is not None:
                    entry.update(validate_frames(raw.sam, meta, val_frames, int(size), threshold, str(device),
                                                 cfg.progress))
                entry["seconds"] = time.time() - t_epoch
                history.append(entry)
                improved = best is None or _score(entry, select) > _score(best, select)
                if improved:
                    best = dict(entry)
                    best_state = {n: p.detach().cpu().clone() for n, p in raw.sam.named_parameters()
                                  if p.requires_grad}
                    meta.provenance = provenance(entry)
                    save_checkpoint(raw.sam, meta, ckpt_dir)
                _write_logs(out, history, writer, entry)
                say(_epoch_line(entry, cfg.epochs, improved))
            step_in_epoch, loss_sum, loss_count = 0, 0.0, 0
            accelerator.wait_for_everyone()
            if main:
                save_training_state(last_dir, state_dict(epoch + 1, 0))
            accelerator.wait_for_everyone()
    except KeyboardInterrupt:
        if accelerator.num_processes == 1:
            save_training_state(last_dir, state_dict(epoch, step_in_epoch))
            say(f"fit: interrupted at step {step}; state saved to {last_dir}; continue with --resume")
        else:
            say("fit: interrupted; the last complete epoch's state is in last/; continue with --resume")
        raise
    finally:
        if writer is not None:
            writer.close()

    accelerator.wait_for_everyone()
    sam = raw.sam
    if best_state is not None:
        with torch.no_grad():
            named = dict(sam.named_parameters())
            for name, value in best_state.items():
                named[name].copy_(value.to(named[name].device))
    sam.eval()
    if best is not None:
        meta.provenance = provenance(best)
    summary = {
        "checkpoint": str(ckpt_dir),
        "best_epoch": best["epoch"] if best else None,
        "best": best,
        "selected_by": select,
        "epochs": cfg.epochs,
        "steps": step,
        "steps_per_epoch": steps_per_epoch,
        "processes": accelerator.num_processes,
        "seconds": time.time() - started,
        "history": history,
        "provenance": meta.provenance,
    }
    if main:
        report.write_json(out / "fit.json", summary)
        say(f"fit: done; best epoch {summary['best_epoch']} ({select}); checkpoint {ckpt_dir}")
    return FitResult(out, ckpt_dir, summary["best_epoch"] or 0, best or {}, history, sam, meta, step)


def _write_logs(out: Path, history: Sequence[Dict[str, Any]], writer, entry: Dict[str, Any]) -> None:
    report.write_csv(out / "train_log.csv", history)
    title = f"training run {out.resolve().parent.name}/{out.name}"
    report.plot_training_curves(history, out / "curves.png", title=title)
    if writer is not None:
        for key, value in entry.items():
            if key not in ("epoch", "step") and isinstance(value, (int, float)) and value is not None:
                writer.add_scalar(key.replace("val_", "val/").replace("train_", "train/"), value, entry["epoch"])
        writer.flush()


def _epoch_line(entry: Dict[str, Any], epochs: int, improved: bool) -> str:
    parts = [f"epoch {entry['epoch']}/{epochs}", f"train loss {entry['train_loss']:.4f}"]
    for key, label in (
        ("val_loss", "val loss"),
        ("val_patch_accuracy", "val patch acc"),
        ("val_patch_mean_iou", "val patch mIoU"),
        ("val_frame_accuracy", "val frame acc"),
        ("val_frame_mean_iou", "val frame mIoU"),
        ("val_frame_false_alarm_rate", "val false alarms"),
    ):
        if entry.get(key) is not None:
            parts.append(f"{label} {entry[key]:.4f}")
    parts.append(f"{entry.get('seconds', 0.0):.0f} s ({entry['seconds_per_step']:.2f} s/step)")
    if improved:
        parts.append("(best, saved)")
    return ", ".join(parts)


def parse_base_config(items: Optional[Sequence[str]]) -> Dict[str, int]:
    """``["hidden=192", "layers=6"]`` -> ``{"hidden": 192, "layers": 6}`` (FitError if malformed)."""
    out: Dict[str, int] = {}
    for item in items or []:
        for part in item.split(","):
            if not part:
                continue
            key, sep, value = part.partition("=")
            key = key.strip().replace("-", "_")
            if not sep or key not in BASE_CONFIG_KEYS:
                raise FitError(
                    f"fit: --base-config {part!r}: expected KEY=INT with KEY in {', '.join(BASE_CONFIG_KEYS)}"
                )
            try:
                out[key] = int(value)
            except ValueError as exc:
                raise FitError(f"fit: --base-config {part!r}: {value!r} is not an integer") from exc
            if out[key] <= 0:
                raise FitError(f"fit: --base-config {part!r}: must be positive")
    return out
