"""Fine-tuning (or training from scratch) a SAM or SAM 2 model on satellite patches.

The model sees exactly what the Detector feeds it at inference time:

* patch (P x P uint8 grayscale, from ``satsam-train patches``) -> optional augmentation
  (flips / 90-degree rotations of image and mask together, brightness/contrast gain on
  the image) -> ``satsam_ros.core.preprocess.patch_pixels``: the functions the Detector
  runs (SAM RGB, normalisation, resized to the encoder input E x E);
* the prompt policy of the checkpoint, baked in by
  ``satsam_ros.model.make_patch_module`` -> N x m x m logits (m = E/4);
* the loss (monai ``DiceCELoss(sigmoid=True, squared_pred=True)``) is computed either
  on the logits upsampled bilinearly to P x P against the full-resolution mask
  (``loss_resolution="patch"``, the default: it scores exactly the probability map
  the Detector thresholds) or on the m x m logits against the mask area-downsampled to
  a soft m x m target (``"low"``, cheaper when P >> m).

Hugging Face Accelerate runs the loop, so the same code runs on one CPU, one GPU with
fp16 mixed precision, or several processes under ``accelerate launch``. Validation
runs on the main process only.

The parts: :mod:`.fit_config` (settings), :mod:`.patch_data` (patches, order),
:mod:`.validation` (validation, the best epoch), :mod:`.train_state` (``last/``), and
here the model set-up and the :class:`Trainer` loop.

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
import math
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence

from . import report
from .fit_config import (  # noqa: F401 (FitConfig, FitError, FitResult: this module's API)
    LOSSES,
    TRAIN_PARTS,
    FitConfig,
    FitError,
    FitResult,
)
from .patch_data import EpochPermutation, PatchDataset, StreamPermutation
from .train_state import check_resume, load_training_state, rng_states, save_training_state, set_rng_states
from .validation import (
    auto_select,
    distill_loss,
    patch_loss,
    presence_targets,
    score,
    validate_frames,
    validate_patches,
)

Say = Callable[[str], None]


# -------------------------------------------------------------------------- the model


def build_model(cfg: FitConfig):
    """The model to train (SamModel or Sam2Model) and its SatsamMeta (encoder resized to E when asked).

    From scratch: ``tiny`` is a SamModel with transformers' initialisation;
    ``tiny-sam2`` a Sam2Model with the fan-in initialisation (transformers' std-0.02
    init leaves SAM 2's logits at ~1e-4, a flat start); ``tiny-edgetam`` an
    EdgeTamModel (a timm backbone, ``satsam_ros.edgetam_family.edgetam_config``) with
    the fan-in init and its BatchNorm statistics set from one seeded batch; all seeded
    by ``cfg.seed`` and sized by ``cfg.base_config``.
    """
    from satsam_ros.core.meta import SatsamMeta
    from satsam_ros.model import encoder_input_size, load_model, random_model, resize_encoder, tiny_config
    from satsam_ros.sam2_family import tiny_sam2_config

    e = cfg.encoder_size
    if cfg.base == "tiny":
        model = random_model(tiny_config(image_size=int(e), **cfg.base_config), seed=cfg.seed)
        return model, SatsamMeta(encoder_input_size=int(e))
    if cfg.base == "tiny-sam2":
        try:
            config = tiny_sam2_config(image_size=int(e), **cfg.base_config)
        except ValueError as exc:
            raise FitError(f"fit: --base tiny-sam2 --base-config: {exc}") from exc
        model = random_model(config, seed=cfg.seed, fan_in=True)
        return model, SatsamMeta(encoder_input_size=int(e))
    if cfg.base == "tiny-edgetam":  # as the tiny-edgetam spec: fan-in init, BatchNorm statistics from a batch
        from satsam_ros.edgetam_family import calibrate_batchnorm, edgetam_config

        try:
            config = edgetam_config(image_size=int(e), **cfg.base_config)
        except (TypeError, ValueError) as exc:
            raise FitError(f"fit: --base tiny-edgetam --base-config: {exc}") from exc
        model = calibrate_batchnorm(random_model(config, seed=cfg.seed, fan_in=True), seed=cfg.seed)
        return model, SatsamMeta(encoder_input_size=int(e))
    try:
        model, meta = load_model(cfg.base, device="cpu")
    except (OSError, ValueError) as exc:
        raise FitError(f"fit: --base {cfg.base!r}: {exc}") from exc
    if e is not None and e != encoder_input_size(model):
        try:
            model = resize_encoder(model, int(e))
        except ValueError as exc:
            raise FitError(f"fit: --encoder-size {e} for --base {cfg.base!r}: {exc}") from exc
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


class PositiveDiceCE:
    """The ``dicece-pos`` loss: monai's Dice (sigmoid, squared denominator) on the patches
    that hold a satellite, summed and divided by the batch size, plus the binary
    cross-entropy on every pixel of every patch.

    ``DiceCELoss`` computes the Dice of an empty patch as ``1 - eps / (sum p^2 + eps)``
    (eps 1e-5): about 1 for any output until every one of the P x P probabilities is
    under about 1e-5 (logits under -11), then 0. That cliff rewards a patch-wide off
    switch; the shipped model learnt it (the median maximum logit on its empty val patches
    is -11.5) and throws it on satellite patches too (a tenth of them have a maximum logit
    near -12: the satellite gets probability 0 and no threshold finds it). Here an empty
    patch is scored by the cross-entropy alone, which asks for low probabilities without
    a reward for the last decades; a satellite patch gets the Dice term ``DiceCELoss``
    gives it.
    """

    def __init__(self):
        from monai.losses import DiceLoss

        self.dice = DiceLoss(sigmoid=True, squared_pred=True, reduction="none")

    def __call__(self, logits, target):
        import torch.nn.functional as F

        dice = self.dice(logits, target).reshape(logits.shape[0], -1).mean(dim=1)
        positive = presence_targets(target).to(dice.dtype)  # 1 where the patch holds satellite pixels
        return (dice * positive).sum() / logits.shape[0] + F.binary_cross_entropy_with_logits(logits, target)


def make_loss(name: str):
    """The training loss on (logits N x 1 x T x T, target N x 1 x T x T in [0, 1]):
    ``dicece``: monai DiceCELoss (sigmoid, squared denominator), the reference's loss;
    ``dicefocal``: monai DiceFocalLoss (sigmoid, squared denominator, focal gamma 2), which
    weights the hard pixels (thin panels, edges, bright distractors) over the easy
    background; ``dicece-pos``: :class:`PositiveDiceCE`, the same Dice and CE with the
    Dice term left out on patches without a satellite."""
    if name == "dicece":
        from monai.losses import DiceCELoss

        return DiceCELoss(sigmoid=True, squared_pred=True)
    if name == "dicece-pos":
        return PositiveDiceCE()
    if name == "dicefocal":
        from monai.losses import DiceFocalLoss

        return DiceFocalLoss(sigmoid=True, squared_pred=True, gamma=2.0)
    raise FitError(f"fit: --loss must be one of {LOSSES}; got {name!r}")


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
    log: Optional[Say] = None,
    on_step: Optional[Callable[[int], None]] = None,
) -> FitResult:
    """Train a model on patches; see the module docstring for what is written.

    ``log`` receives one-line progress messages (main process only); ``on_step`` is
    called after every optimizer step with the global step number (tests use it to
    simulate an interrupt by raising KeyboardInterrupt).
    Raises FitError for unusable settings or data, KeyboardInterrupt after saving
    ``last/`` when interrupted.
    """
    trainer = Trainer(config.resolved(), log)
    trainer.train(on_step)
    return trainer.finish()


class Trainer:
    """One training run, in the order it happens: set up (:meth:`__init__`: the
    accelerator, the run directory, a resumed state, the model, the data, the
    optimiser), :meth:`train` (epochs of :meth:`_train_epoch` and :meth:`_end_epoch`),
    :meth:`finish` (the best weights, ``fit.json``)."""

    def __init__(self, cfg: FitConfig, log: Optional[Say] = None):
        import torch
        from accelerate import Accelerator
        from accelerate.utils import DistributedDataParallelKwargs

        self.cfg = cfg
        if cfg.threads:
            torch.set_num_threads(int(cfg.threads))
        self.accelerator = Accelerator(
            mixed_precision=_mixed_precision(cfg),
            # without a GPU, processes started by `accelerate launch` / torchrun join as MULTI_CPU (gloo)
            cpu=cfg.cpu or not torch.cuda.is_available(),
            kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=True)],
        )
        self.main = self.accelerator.is_main_process
        self._log = log
        self.out = Path(cfg.out)
        self.ckpt_dir, self.last_dir = self.out / "model", self.out / "last"
        self.saved = self._saved_state()
        self.model, self.meta = build_model(cfg)
        self._load_data()
        self.select = auto_select(cfg)
        self._prepare_optimisation()
        self._restore_progress()

    def say(self, message: str) -> None:
        if self.main and self._log is not None:
            self._log(message)

    # ---- set-up ---------------------------------------------------------------------
    def _saved_state(self) -> Optional[Dict[str, Any]]:
        """The state to resume (checked against these settings), or None for a new run."""
        if self.main:
            self.out.mkdir(parents=True, exist_ok=True)
        saved = None
        if self.cfg.resume:
            saved = load_training_state(self.last_dir)
            check_resume(saved, self.cfg, self.accelerator.num_processes)
        elif self.last_dir.exists():
            raise FitError(f"fit: {self.out} already holds a training run (last/); use --resume, or a new --out")
        self.accelerator.wait_for_everyone()
        return saved

    def _load_data(self) -> None:
        """Train and val patches, val frames; the checkpoint metadata they imply."""
        from satsam_ros.core.meta import DEFAULT_THRESHOLD
        from satsam_ros.model import encoder_input_size

        cfg = self.cfg
        e = encoder_input_size(self.model)
        self.encoder_size = e
        self.train_set = PatchDataset(cfg.patches, e, cfg.loss_resolution, cfg.augment, cfg.seed)
        self.val_set = PatchDataset(cfg.val, e, cfg.loss_resolution, False, cfg.seed) if cfg.val else None
        size = self.train_set.size
        if self.val_set is not None and self.val_set.patch_size != self.train_set.patch_size:
            raise FitError(f"fit: train patches are {self.train_set.patch_size} px, val patches "
                           f"{self.val_set.patch_size} px")
        self.size = size
        self.meta.size = int(size) if size else None
        self.meta.patch_size = self.train_set.patch_size
        self.meta.threshold = float(cfg.threshold if cfg.threshold is not None else DEFAULT_THRESHOLD)
        self.val_frames = None
        if cfg.val_frames:
            if not size:
                raise FitError(f"fit: --val-frames needs one frame size S; the patches have S = "
                               f"{self.train_set.sizes}")
            from .coco import load_split

            self.val_frames = load_split(cfg.val_frames, cfg.val_frames_split)

    def _prepare_optimisation(self) -> None:
        """Trainable parameters, the patch module, optimiser, loader, schedule, loss."""
        import torch

        from satsam_ros.model import has_presence, make_patch_module

        cfg = self.cfg
        self.params = set_trainable(self.model, cfg.train)
        head = has_presence(self.model)
        self.presence_weight = float(cfg.presence_weight if cfg.presence_weight is not None else (1.0 if head else 0))
        if self.presence_weight and not head:
            raise FitError(f"fit: --presence-weight {cfg.presence_weight}: this model ({cfg.base}) has no "
                           "object-score head (SAM 2 and EdgeTAM have one)")
        module = make_patch_module(self.model, self.meta.prompt_policy, with_score=self.presence_weight > 0)
        opt_cls = torch.optim.Adam if cfg.optimizer == "adam" else torch.optim.AdamW
        optimizer = opt_cls(self.params, lr=cfg.lr, weight_decay=cfg.weight_decay)
        if cfg.steps_per_epoch:  # epochs of N steps from an endless shuffled stream
            sampler = StreamPermutation(len(self.train_set), cfg.seed, cfg.steps_per_epoch * cfg.batch_size)
        else:
            sampler = EpochPermutation(len(self.train_set), cfg.seed)
        loader = torch.utils.data.DataLoader(self.train_set, batch_size=cfg.batch_size, sampler=sampler,
                                             num_workers=cfg.workers, drop_last=False)
        if self.saved is not None:  # weights and random state before prepare, as when they were saved
            self.model.load_state_dict(self.saved["model"])
            set_rng_states(self.saved["rng"])
        if cfg.compile:
            self.say("fit: compiling the training module (a one-off wait of a few minutes)")
            module.compile()
        self.module, self.optimizer, self.loader = self.accelerator.prepare(module, optimizer, loader)
        self.steps_per_epoch = len(self.loader)
        total_steps = self.steps_per_epoch * cfg.epochs
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer.optimizer if hasattr(self.optimizer, "optimizer") else self.optimizer,
            lambda s: lr_factor(s, cfg.warmup_steps, total_steps, cfg.schedule),
        )
        self.loss_fn = make_loss(cfg.loss)
        self.raw = self.accelerator.unwrap_model(self.module)
        self.teacher = self._teacher()

    def _teacher(self):
        """With --teacher: its patch module (eval mode, frozen, on the training device), else None."""
        cfg = self.cfg
        if not cfg.teacher:
            return None
        from satsam_ros.model import encoder_input_size, load_model, make_patch_module

        try:
            model, meta = load_model(cfg.teacher, device="cpu")
        except (OSError, ValueError) as exc:
            raise FitError(f"fit: --teacher {cfg.teacher!r}: {exc}") from exc
        e = encoder_input_size(model)
        if e != self.encoder_size:
            raise FitError(f"fit: --teacher {cfg.teacher!r} takes encoder input E = {e}, the model trained "
                           f"E = {self.encoder_size}: distil between models of the same E")
        model.eval().requires_grad_(False)
        module = make_patch_module(model, meta.prompt_policy).to(self.accelerator.device)
        self.say(f"fit: distilling from {cfg.teacher} (weight {cfg.distill_weight:g})")
        return module.eval()

    def _restore_progress(self) -> None:
        """Where training stands: from the saved state, or at the start."""
        self.history: List[Dict[str, Any]] = []
        self.epoch = self.start_epoch = self.step = self.step_in_epoch = 0
        self.loss_sum, self.loss_count = 0.0, 0
        self.best: Optional[Dict[str, Any]] = None
        self.best_state: Optional[Dict[str, Any]] = None
        saved = self.saved
        if saved is None:
            return
        self.start_epoch, self.step, self.step_in_epoch = saved["epoch"], saved["step"], saved["step_in_epoch"]
        self.loss_sum, self.loss_count = saved["loss_sum"], saved["loss_count"]
        # epochs after the saved position (interrupted between validation and saving) run again
        self.history = [h for h in saved["history"] if h["epoch"] <= self.start_epoch]
        self.best, self.best_state = saved["best"], saved.get("best_state")
        # after the scheduler exists: its constructor rewrites the lr, the optimizer state restores it
        self.optimizer.load_state_dict(saved["optimizer"])
        self.scheduler.load_state_dict(saved["scheduler"])
        self.say(f"fit: resuming at epoch {self.start_epoch + 1}, step {self.step} ({self.step_in_epoch} "
                 "into the epoch)")

    # ---- training ---------------------------------------------------------------------
    def train(self, on_step: Optional[Callable[[int], None]] = None) -> None:
        """Every remaining epoch; on KeyboardInterrupt the state is saved, then re-raised."""
        cfg, acc = self.cfg, self.accelerator
        writer = _tensorboard(self.out / "tensorboard", self.say) if self.main else None
        self.started = time.time()
        self.say(
            f"fit: {len(self.train_set)} train patches ({int(self.train_set.positive.sum())} with satellite), "
            f"{len(self.val_set) if self.val_set else 0} val patches, {self.steps_per_epoch} steps/epoch on "
            f"{acc.num_processes} process(es), device {acc.device}, E={self.encoder_size}, train={cfg.train}, "
            f"{sum(p.numel() for p in self.params) / 1e6:.2f} M trainable parameters, select by {self.select}"
        )
        self.epoch = self.start_epoch
        try:
            for epoch in range(self.start_epoch, cfg.epochs):
                self.epoch = epoch
                t_epoch = time.time()
                self._train_epoch(writer, on_step)
                self._end_epoch(t_epoch, writer)
        except KeyboardInterrupt:
            if acc.num_processes == 1:
                save_training_state(self.last_dir, self.state_dict(self.epoch, self.step_in_epoch))
                self.say(f"fit: interrupted at step {self.step}; state saved to {self.last_dir}; continue with "
                         "--resume")
            else:
                self.say("fit: interrupted; the last complete epoch's state is in last/; continue with --resume")
            raise
        finally:
            if writer is not None:
                writer.close()

    def _train_epoch(self, writer, on_step: Optional[Callable[[int], None]]) -> None:
        """The optimizer steps of one epoch (from where an interrupted epoch stopped)."""
        from tqdm import tqdm

        cfg, acc = self.cfg, self.accelerator
        self.loader.set_epoch(self.epoch)
        self.train_set.set_epoch(self.epoch)
        self.module.train()
        batches = acc.skip_first_batches(self.loader, self.step_in_epoch) if self.step_in_epoch else self.loader
        bar = tqdm(batches, desc=f"epoch {self.epoch + 1}/{cfg.epochs}", total=self.steps_per_epoch,
                   initial=self.step_in_epoch, unit="step", disable=not (self.main and cfg.progress), leave=False)
        for x, y in bar:
            value = self._step(x, y)
            bar.set_postfix(loss=f"{value:.4f}", lr=f"{self.scheduler.get_last_lr()[0]:.2e}")
            if writer is not None:
                writer.add_scalar("train/loss_step", value, self.step)
            if on_step is not None:
                on_step(self.step)
        bar.close()

    def _step(self, x, y) -> float:
        """One optimizer step on a batch; the loss averaged over processes."""
        cfg, acc = self.cfg, self.accelerator
        out = self.module(x)
        loss, _mask_loss, _bce = patch_loss(out, y, self.loss_fn, self.presence_weight)
        if self.teacher is not None and self.cfg.distill_weight:
            import torch

            with torch.no_grad():
                teacher_logits = self.teacher(x)
            logits = out[0] if isinstance(out, tuple) else out
            loss = loss + float(self.cfg.distill_weight) * distill_loss(logits, teacher_logits, y.shape[-1])
        self.optimizer.zero_grad(set_to_none=True)
        acc.backward(loss)
        if cfg.clip_grad > 0:
            acc.clip_grad_norm_(self.params, cfg.clip_grad)
        self.optimizer.step()
        self.scheduler.step()
        self.step += 1
        self.step_in_epoch += 1
        value = float(acc.reduce(loss.detach(), reduction="mean"))
        if not math.isfinite(value):
            raise FitError(f"fit: the loss became {value} at step {self.step} (epoch {self.epoch + 1}); lower "
                           "--lr, add --warmup-steps and --clip-grad")
        self.loss_sum += value
        self.loss_count += 1
        return value

    def _end_epoch(self, t_epoch: float, writer) -> None:
        """Validate (main process), keep the best checkpoint, write logs and last/."""
        acc = self.accelerator
        entry: Dict[str, Any] = {
            "epoch": self.epoch + 1,
            "step": self.step,
            "lr": self.scheduler.get_last_lr()[0],
            "train_loss": self.loss_sum / max(1, self.loss_count),
            "seconds_per_step": (time.time() - t_epoch) / max(1, self.loss_count),
        }
        acc.wait_for_everyone()
        if self.main:
            entry.update(self._validate())
            entry["seconds"] = time.time() - t_epoch
            self.history.append(entry)
            improved = self.best is None or score(entry, self.select) > score(self.best, self.select)
            if improved:
                self._keep_best(entry)
            _write_logs(self.out, self.history, writer, entry)
            self.say(_epoch_line(entry, self.cfg.epochs, improved))
        self.step_in_epoch, self.loss_sum, self.loss_count = 0, 0.0, 0
        acc.wait_for_everyone()
        if self.main:
            save_training_state(self.last_dir, self.state_dict(self.epoch + 1, 0))
        acc.wait_for_everyone()

    def _validate(self) -> Dict[str, Any]:
        """Validation metrics of this epoch: patches and/or frames, as configured."""
        out: Dict[str, Any] = {}
        threshold, device = self.meta.threshold, self.accelerator.device
        if self.val_set is not None:
            out.update(validate_patches(self.raw, self.val_set, self.loss_fn, threshold, self.cfg.batch_size,
                                        device, self.presence_weight))
        if self.val_frames is not None:
            out.update(validate_frames(self.raw.sam, self.meta, self.val_frames, int(self.size), threshold,
                                       str(device), self.cfg.progress))
        return out

    def _keep_best(self, entry: Dict[str, Any]) -> None:
        """Remember this epoch's trainable weights and write the checkpoint."""
        from satsam_ros.model import save_checkpoint

        self.best = dict(entry)
        self.best_state = {n: p.detach().cpu().clone() for n, p in self.raw.sam.named_parameters()
                           if p.requires_grad}
        self.meta.provenance = self.provenance(entry)
        save_checkpoint(self.raw.sam, self.meta, self.ckpt_dir)

    # ---- records ------------------------------------------------------------------------
    def state_dict(self, epoch: int, in_epoch: int) -> Dict[str, Any]:
        """Everything ``last/state.pt`` holds to continue at (``epoch``, ``in_epoch``)."""
        from .train_state import STATE_FORMAT

        return {
            "format": STATE_FORMAT,
            "config": asdict(self.cfg),
            "processes": self.accelerator.num_processes,
            "model": {k: v.detach().cpu().clone() for k, v in self.raw.sam.state_dict().items()},
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "rng": rng_states(),
            "epoch": epoch,
            "step": self.step,
            "step_in_epoch": in_epoch,
            "complete_epochs": epoch,
            "loss_sum": self.loss_sum,
            "loss_count": self.loss_count,
            "history": self.history,
            "best": self.best,
            "best_state": self.best_state,
        }

    def provenance(self, entry: Dict[str, Any]) -> Dict[str, Any]:
        """The checkpoint's ``satsam.json`` provenance for the epoch ``entry``."""
        cfg, train_set = self.cfg, self.train_set
        return {
            "command": cfg.command,
            "seed": cfg.seed,
            "base": cfg.base,
            "base_config": cfg.base_config,
            "train": cfg.train,
            "presence_weight": self.presence_weight,
            # a checkpoint directory relative to the repository, a spec (builtin) as given
            "teacher": ({"model": report.repo_path(cfg.teacher) if Path(cfg.teacher).is_dir() else cfg.teacher,
                         "weight": cfg.distill_weight} if cfg.teacher else None),
            "data": {
                "patches": [report.repo_path(d) for d in cfg.patches],
                "patches_source": [ix.get("source") for ix in train_set.indexes],
                "patches_split": [ix.get("split") for ix in train_set.indexes],
                "patches_size": train_set.sizes,
                "patches_count": len(train_set),
                "val": [report.repo_path(d) for d in cfg.val] if cfg.val else None,
                "val_frames": report.repo_path(cfg.val_frames) if cfg.val_frames else None,
            },
            "settings": {k: v for k, v in asdict(cfg).items() if k not in ("command", "progress", "resume")},
            "epoch": entry["epoch"],
            "steps": self.step,
            "validation": {k: v for k, v in entry.items() if k.startswith("val_")},
            "selected_by": self.select,
            "git_commit": report.git_commit(),
            "versions": report.versions(),
            "saved": report.now_iso(),
        }

    def finish(self) -> FitResult:
        """The model with the best epoch's weights, ``fit.json``, and the result."""
        import torch

        self.accelerator.wait_for_everyone()
        sam = self.raw.sam
        if self.best_state is not None:
            with torch.no_grad():
                named = dict(sam.named_parameters())
                for name, value in self.best_state.items():
                    named[name].copy_(value.to(named[name].device))
        sam.eval()
        if self.best is not None:
            self.meta.provenance = self.provenance(self.best)
        summary = {
            "checkpoint": str(self.ckpt_dir),
            "best_epoch": self.best["epoch"] if self.best else None,
            "best": self.best,
            "selected_by": self.select,
            "epochs": self.cfg.epochs,
            "steps": self.step,
            "steps_per_epoch": self.steps_per_epoch,
            "processes": self.accelerator.num_processes,
            "seconds": time.time() - self.started,
            "history": self.history,
            "provenance": self.meta.provenance,
        }
        if self.main:
            report.write_json(self.out / "fit.json", summary)
            self.say(f"fit: done; best epoch {summary['best_epoch']} ({self.select}); checkpoint {self.ckpt_dir}")
        return FitResult(self.out, self.ckpt_dir, summary["best_epoch"] or 0, self.best or {}, self.history, sam,
                         self.meta, self.step)


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
        ("val_presence_accuracy", "val presence acc"),
        ("val_presence_auc", "val presence AUC"),
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
