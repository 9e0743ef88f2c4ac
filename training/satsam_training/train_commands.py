"""The ``fit``, ``tune-threshold``, ``evaluate`` and ``pipeline`` subcommands of
``satsam-train`` (registered by ``satsam_training.cli.make_parser``)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def _err(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _sizes():
    from satsam_ros.core.tiling import ALLOWED_SIZES

    return ALLOWED_SIZES


def _add_fit_options(p: argparse.ArgumentParser, data_required: bool = True) -> None:
    """The training options shared by ``fit`` and ``pipeline``."""
    from .fit_config import (
        LOSS_RESOLUTIONS,
        LOSSES,
        MIXED_PRECISION,
        OPTIMIZERS,
        SCHEDULES,
        SELECT_METRICS,
        TRAIN_PARTS,
    )

    g = p.add_argument_group("model and training")
    g.add_argument("--base", default="tiny",
                   help="tiny (random small SAM, trained from scratch), tiny-sam2 (random small SAM 2, trained "
                        "from scratch), tiny-edgetam (random small EdgeTAM: a timm backbone, trained from scratch), "
                        "vit-b, builtin, a checkpoint or transformers SAM / SAM 2 / EdgeTAM directory, or a hub "
                        "id (default tiny)")
    g.add_argument("--base-config", nargs="*", default=None, metavar="KEY=INT",
                   help="from-scratch architecture. tiny: hidden=96 layers=4 decoder_hidden=64 patch=16 (its "
                        "defaults; patch = encoder token size, 8 for a finer mask grid). tiny-sam2: "
                        "widths=32,64,128,256 blocks=1,1,2,1 heads=1,1,2,4 fpn=64 (its defaults: per Hiera stage "
                        "the width, blocks and heads; fpn = FPN and decoder width, a multiple of 8). tiny-edgetam: "
                        "a JSON object, e.g. '{\"backbone\": \"repvit_m0_9\", \"model_args\": {\"embed_dim\": "
                        "[32, 64, 128, 256], \"depth\": [1, 1, 4, 1]}, \"fpn_hidden\": 64}' (defaults: backbone "
                        "efficientvit_b0, fpn_hidden 64, decoder_heads 4, mlp_ratio 4; the backbone needs features at "
                        "strides 4, 8, 16, 32)")
    g.add_argument("--encoder-size", type=int, default=None, metavar="E",
                   help="encoder input E (patches are resized to E x E); default 256 from scratch, the base's own "
                        "otherwise (a pretrained encoder is resized to E); a multiple of 32 for SAM 2")
    g.add_argument("--train", choices=TRAIN_PARTS, default=None,
                   help="which parameters train: mask_decoder (default for pretrained bases) or all "
                        "(default for tiny)")
    g.add_argument("--epochs", type=int, default=25, help="default 25 (the reference)")
    g.add_argument("--steps-per-epoch", type=int, default=None, metavar="N",
                   help="an epoch is N steps drawn from an endless shuffled stream of the patches (default: one "
                        "pass over them); a budget of epochs x N steps independent of the data's size")
    g.add_argument("--batch-size", type=int, default=4, help="patches per step and process (default 4)")
    g.add_argument("--lr", type=float, default=1e-5, help="peak learning rate (default 1e-5, the reference)")
    g.add_argument("--optimizer", choices=OPTIMIZERS, default="adam")
    g.add_argument("--weight-decay", type=float, default=0.0)
    g.add_argument("--schedule", choices=SCHEDULES, default="constant",
                   help="constant (default) or cosine decay to 0 after the warm-up")
    g.add_argument("--warmup-steps", type=int, default=0, help="linear warm-up steps (default 0)")
    g.add_argument("--clip-grad", type=float, default=0.0, help="max gradient norm, 0 = off (default)")
    g.add_argument("--loss-resolution", choices=LOSS_RESOLUTIONS, default="patch",
                   help="patch: loss on logits upsampled to P x P as the Detector does (default); low: on the "
                        "E/4 logits against an area-downsampled soft mask")
    g.add_argument("--loss", choices=LOSSES, default="dicece",
                   help="dicece: monai DiceCELoss, the reference's (default); dicefocal: Dice + focal; "
                        "dicece-pos: DiceCE with the Dice term on satellite patches only (empty ones: CE)")
    g.add_argument("--presence-weight", type=float, default=None, metavar="W",
                   help="weight of the BCE on the decoder's object score (a satellite in the patch or not), "
                        "added to the mask loss on every patch (default 1 for SAM 2 and EdgeTAM, which have "
                        "the head; 0 = off)")
    g.add_argument("--teacher", default=None, metavar="DIR",
                   help="distil: a trained checkpoint (directory or builtin) whose mask probabilities on the same "
                        "augmented patches this model also learns (soft BCE), beside the labels' loss; same "
                        "encoder input E as the model trained")
    g.add_argument("--distill-weight", type=float, default=1.0, metavar="W",
                   help="weight of the distillation term with --teacher (default 1)")
    g.add_argument("--compile", action="store_true",
                   help="torch.compile the model for training (a one-off compile of minutes; faster steps)")
    g.add_argument("--augment", action="store_true", help="random flips / 90-degree rotations / brightness gain")
    g.add_argument("--seed", type=int, default=0, help="model init, data order and augmentation (default 0)")
    g.add_argument("--threshold", type=float, default=None,
                   help="threshold for validation metrics and the saved checkpoint (default 0.65)")
    g.add_argument("--select", choices=SELECT_METRICS, default="auto",
                   help="best-epoch metric; auto: val frame accuracy with --val-frames, else val loss (val patch "
                        "accuracy rewards a model that predicts nothing while most val patches are empty)")
    g.add_argument("--mixed-precision", choices=MIXED_PRECISION, default="auto",
                   help="auto: fp16 on a GPU, none on the CPU")
    g.add_argument("--cpu", action="store_true", help="train on the CPU even when a GPU is present")
    g.add_argument("--workers", type=int, default=0, help="data loader worker processes (default 0)")
    g.add_argument("--threads", type=int, default=None,
                   help="torch CPU threads per process (default: torch's choice; 1 is far faster when other jobs "
                        "share the cores)")
    g.add_argument("--no-progress", action="store_true", help="no progress bars")


def _fit_config(args, patches, val=None, val_frames=None, out: str = ""):
    """The FitConfig of the training options (``fit`` and ``pipeline``)."""
    from .fit_config import FitConfig, parse_base_config

    return FitConfig(
        patches=patches, out=out, val=val, val_frames=val_frames,
        val_frames_split=getattr(args, "val_frames_split", "val"),
        base=args.base, base_config=parse_base_config(args.base_config), encoder_size=args.encoder_size,
        train=args.train, epochs=args.epochs, steps_per_epoch=args.steps_per_epoch, batch_size=args.batch_size,
        lr=args.lr, optimizer=args.optimizer,
        weight_decay=args.weight_decay, schedule=args.schedule, warmup_steps=args.warmup_steps,
        clip_grad=args.clip_grad, loss_resolution=args.loss_resolution, loss=args.loss, compile=args.compile,
        presence_weight=args.presence_weight, teacher=args.teacher, distill_weight=args.distill_weight,
        augment=args.augment, seed=args.seed,
        threshold=args.threshold, select=args.select, mixed_precision=args.mixed_precision, cpu=args.cpu,
        workers=args.workers, threads=args.threads, resume=getattr(args, "resume", False),
        progress=not args.no_progress, command=args.command_line,
    )


# ----------------------------------------------------------------------------- fit


def add_fit(sub) -> None:
    p = sub.add_parser(
        "fit",
        help="fine-tune (or train from scratch) a SAM or SAM 2 model on patches",
        description="Train a SamModel or Sam2Model on patches from `satsam-train patches`. Writes OUT/model (the best "
                    "checkpoint), OUT/last (resumable state), OUT/train_log.csv, OUT/curves.png. Runs unchanged "
                    "under `accelerate launch` (several GPUs, nodes, or CPU processes).",
    )
    p.add_argument("--patches", required=True, nargs="+", metavar="DIR",
                   help="training patches (patches.json); several directories (e.g. one per S) are concatenated")
    p.add_argument("--val", nargs="+", metavar="DIR",
                   help="validation patches (loss and patch metrics every epoch)")
    p.add_argument("--val-frames", metavar="DIR",
                   help="COCO dataset directory: frame accuracy via the Detector every epoch")
    p.add_argument("--val-frames-split", default="val", help="split of --val-frames (default val)")
    p.add_argument("--out", required=True, metavar="DIR", help="run directory (the checkpoint is OUT/model)")
    p.add_argument("--resume", action="store_true", help="continue the run in OUT from OUT/last")
    _add_fit_options(p)
    p.set_defaults(func=cmd_fit)


def cmd_fit(args) -> int:
    from .fit import fit
    from .fit_config import FitError

    try:
        cfg = _fit_config(args, args.patches, args.val, args.val_frames, args.out)
        result = fit(cfg, log=_err)
    except FitError as exc:
        raise SystemExit(f"satsam-train {exc}") from exc
    except KeyboardInterrupt:
        _err("satsam-train fit: interrupted")
        return 130
    if result.best_metric:
        _err(f"satsam-train fit: best epoch {result.best_epoch}; checkpoint {result.checkpoint}")
    return 0


# -------------------------------------------------------------------- tune-threshold


def add_tune_threshold(sub) -> None:
    from satsam_ros.runtime import BACKENDS, DEFAULT_BACKEND, DEFAULT_DEVICE, DEVICES

    p = sub.add_parser(
        "tune-threshold",
        help="choose the probability threshold on validation frames and store it in satsam.json",
        description="Run the Detector once per frame of DATA/SPLIT.json, sweep thresholds over the probability "
                    "maps, store the most accurate one in CKPT/satsam.json (atomically) and write "
                    "threshold_curve.csv / .png.",
    )
    p.add_argument("checkpoint", metavar="CKPT", help="checkpoint directory (or a fit run directory)")
    p.add_argument("--data", required=True, metavar="DIR", help="COCO dataset directory")
    p.add_argument("--split", default="val", help="split to tune on (default val)")
    p.add_argument("--size", type=int, choices=_sizes(), default=None,
                   help="frame resize S (default: the size the checkpoint was trained for)")
    p.add_argument("--thresholds", type=float, nargs="+", default=None,
                   help="thresholds to try (default 0.05, 0.10, ..., 0.95)")
    p.add_argument("--min-area", type=int, nargs="+", default=[0], metavar="PIXELS",
                   help="min_area values to sweep with the thresholds (as the node's min_area: components smaller "
                        "than this are dropped); the best pair is stored (default 0)")
    p.add_argument("--max-objects", type=int, nargs="+", default=[0], metavar="K",
                   help="keep only the K best-scoring objects (0 = all): values to sweep (default 0)")
    p.add_argument("--min-score", type=float, nargs="+", default=[0.0], metavar="P",
                   help="drop objects whose mean probability is under P: values to sweep (default 0)")
    p.add_argument("--group-gap", type=int, nargs="+", default=[0], metavar="PIXELS",
                   help="components closer than this form one object: values to sweep (default 0)")
    p.add_argument("--min-object-score", type=float, nargs="+", default=[0.0], metavar="P",
                   help="presence gates to sweep: a patch whose object score (sigmoid) is under P publishes "
                        "nothing (models with the head: SAM 2, EdgeTAM; default 0 = off)")
    p.add_argument("--cascade", nargs="+", default=None, choices=("off", "on", "512", "1024"),
                   help="coarse to fine (S above the coarse size): settings to sweep with the rest, e.g. off on "
                        "(full tiling against 512 first); the chosen one is stored for the size (default: not swept, "
                        "the size keeps what satsam.json says). The coarse pass uses the checkpoint's tuned "
                        "post-processing for the coarse size: tune that size first")
    p.add_argument("--cascade-margin", type=int, nargs="+", default=[32], metavar="PIXELS",
                   help="with --cascade: input-frame margins around the coarse proposals to sweep (default 32)")
    p.add_argument("--cascade-max-patches", type=int, default=None, metavar="N",
                   help="tune under this cap on the S patches a cascaded frame runs (strongest coarse proposals "
                        "first; 0: no cap) and store it with the rest (default: the checkpoint's cap, else none)")
    p.add_argument("--backend", default=DEFAULT_BACKEND, choices=BACKENDS,
                   help=f"default {DEFAULT_BACKEND}: the engine the node would pick")
    p.add_argument("--device", default=DEFAULT_DEVICE, choices=DEVICES)
    p.add_argument("--out", metavar="DIR", default=None, help="where the curve goes (default: CKPT)")
    p.add_argument("--dry-run", action="store_true", help="do not change satsam.json")
    p.add_argument("--json", action="store_true", help="print the result as JSON on stdout")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=cmd_tune_threshold)


def cmd_tune_threshold(args) -> int:
    from satsam_ros.core.detector import parse_cascade

    from .evaluate import DetectorChoice, EvaluationError
    from .threshold import Grid, tune_threshold

    cascades = None if args.cascade is None else [parse_cascade(c) for c in args.cascade]
    try:
        result = tune_threshold(
            DetectorChoice(args.checkpoint, size=args.size, backend=args.backend, device=args.device,
                           cascade_max_patches=args.cascade_max_patches), args.data,
            split=args.split,
            grid=Grid(args.thresholds, args.min_area, args.max_objects, args.min_score, args.group_gap,
                      args.min_object_score, cascades, args.cascade_margin), out=args.out,
            write=not args.dry_run,
            progress=not args.no_progress, log=_err, command=args.command_line,
        )
    except (EvaluationError, FileNotFoundError, ValueError) as exc:
        raise SystemExit(f"satsam-train tune-threshold: {exc}") from exc
    best = result["best"]
    chosen = ", ".join(f"{k} {v:g}" if v is not None else f"{k} -" for k, v in result["postprocess"].items())
    _err(f"satsam-train tune-threshold: S = {result['size']}: {chosen} (threshold was "
         f"{result['previous_threshold']:.3f}): accuracy {100 * best['accuracy']:.1f} % on {result['frames']} frames")
    from satsam_ros.core.metrics import budget_markdown

    _err("error budget of the chosen setting:\n" + budget_markdown(best["error_budget"]))
    if args.json:
        print(json.dumps({k: v for k, v in result.items()}, indent=2))
    return 0


# ---------------------------------------------------------------------------- evaluate


def add_evaluate(sub) -> None:
    from satsam_ros.core.detector import MODES
    from satsam_ros.runtime import BACKENDS, DEFAULT_BACKEND, DEFAULT_DEVICE, DEVICES

    p = sub.add_parser(
        "evaluate",
        help="accuracy, mean IoU, false alarms, misses and runtime on labelled frames",
        description="Run the Detector on every frame of DATA/SPLIT.json (COCO) and score it: a frame is correct "
                    "when IoU(pred, true) > 0.5, an empty frame only when nothing is predicted. Writes "
                    "metrics.json, per_frame.csv, table.md (the reference's Table 1 layout) and examples.png.",
    )
    p.add_argument("checkpoint", metavar="CKPT",
                   help="checkpoint directory (SAM or SAM 2), fit run directory, builtin, or a random-weights spec: "
                        "tiny, tiny-sam2, vit-b, sam2-hiera-tiny")
    p.add_argument("--data", required=True, metavar="DIR", help="COCO dataset directory")
    p.add_argument("--split", default="test", help="split to evaluate (default test)")
    p.add_argument("--size", type=int, choices=_sizes(), default=None,
                   help="frame resize S (default: the size the checkpoint was trained for, else 512)")
    p.add_argument("--threshold", type=float, default=None, help="default: the checkpoint's tuned threshold")
    p.add_argument("--min-area", type=int, default=None,
                   help="as the node's min_area (default: the checkpoint's tuned value)")
    p.add_argument("--max-objects", type=int, default=None,
                   help="keep the K best objects, 0 = all (default: the checkpoint's value for this size)")
    p.add_argument("--min-score", type=float, default=None,
                   help="drop objects with a mean probability under this (default: the checkpoint's value)")
    p.add_argument("--group-gap", type=int, default=None,
                   help="components closer than this (pixels) are one object (default: the checkpoint's value)")
    p.add_argument("--min-object-score", type=float, default=None,
                   help="presence gate: patches whose object score is under this publish nothing (0 = off; "
                        "default: the checkpoint's value for this size)")
    p.add_argument("--overlap", type=int, default=0, help="patch overlap in pixels (default 0)")
    p.add_argument("--mode", default="fast", choices=MODES)
    _add_cascade_option(p)
    p.add_argument("--backend", default=DEFAULT_BACKEND, choices=BACKENDS,
                   help=f"default {DEFAULT_BACKEND}: the engine the node would pick")
    p.add_argument("--device", default=DEFAULT_DEVICE, choices=DEVICES)
    p.add_argument("--out", metavar="DIR", default=None,
                   help="output directory (default runs/evaluate/<model>-<split>-<S>)")
    p.add_argument("--examples", type=int, default=8, help="frames in examples.png (default 8)")
    p.add_argument("--json", action="store_true", help="print the metrics as JSON on stdout")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=cmd_evaluate)


def _add_cascade_option(p: argparse.ArgumentParser) -> None:
    from satsam_ros.core.detector import CASCADE_CHOICES, DEFAULT_COARSE_SIZE

    p.add_argument("--cascade", default="auto", choices=CASCADE_CHOICES,
                   help="coarse to fine for S above the coarse size (auto: the checkpoint's setting for this size, "
                        f"else off; off: full tiling; on: {DEFAULT_COARSE_SIZE} first; or the coarse size)")
    p.add_argument("--cascade-margin", type=int, default=None, metavar="PIXELS",
                   help="input-frame pixels around each coarse proposal (default: the checkpoint's, else 32)")
    p.add_argument("--cascade-max-patches", type=int, default=None, metavar="N",
                   help="most S patches a cascaded frame runs, those under the strongest coarse proposals first "
                        "(0: no cap; default: the checkpoint's, else 0)")


def cmd_evaluate(args) -> int:
    from satsam_ros.core.detector import parse_cascade

    from .evaluate import DetectorChoice, EvaluationError, evaluate, summary_line

    choice = DetectorChoice(args.checkpoint, size=args.size, threshold=args.threshold, min_area=args.min_area,
                            max_objects=args.max_objects, min_score=args.min_score, group_gap=args.group_gap,
                            min_object_score=args.min_object_score, mode=args.mode, overlap=args.overlap,
                            backend=args.backend, device=args.device, cascade=parse_cascade(args.cascade),
                            cascade_margin=args.cascade_margin, cascade_max_patches=args.cascade_max_patches)
    try:
        out = args.out
        if out is None:
            name = Path(args.checkpoint.rstrip("/")).name or "model"
            tail = "" if args.cascade == "auto" else f"-cascade-{args.cascade}"
            out = str(Path("runs") / "evaluate" / f"{name}-{args.split}-{choice.frame_size()}{tail}")
        result = evaluate(choice, args.data, split=args.split, out=out, examples=args.examples,
                          progress=not args.no_progress, log=_err)
    except (EvaluationError, FileNotFoundError, ValueError) as exc:
        raise SystemExit(f"satsam-train evaluate: {exc}") from exc
    from satsam_ros.core.metrics import budget_markdown

    _err("satsam-train evaluate: " + summary_line(result))
    _err("error budget (frames per category and satellite size):\n" + budget_markdown(result["error_budget"]))
    if args.json:
        print(json.dumps(result, indent=2, sort_keys=True))
    return 0


# ---------------------------------------------------------------------------- mine


def add_mine(sub) -> None:
    from satsam_ros.runtime import BACKENDS, DEVICES

    p = sub.add_parser(
        "mine",
        help="write the training patches a model gets wrong (hard negatives and misses) as a patches directory",
        description="Run CKPT through the Detector at size S (its tuned post-processing) on DATA/SPLIT.json, cut "
                    "each frame into the detector's patch grid and keep the patches with at least --min-pixels "
                    "wrongly published pixels (false) or missed satellite pixels: OUT/patches.json, as "
                    "`satsam-train patches` writes it, to pass to `fit --patches` beside the random patches. "
                    "Mine training frames only, never validation or test frames.",
    )
    p.add_argument("checkpoint", metavar="CKPT", help="checkpoint directory, fit run directory or builtin")
    p.add_argument("--data", required=True, metavar="DIR", help="COCO dataset directory with masks")
    p.add_argument("--split", default="train", help="split to mine (default train)")
    p.add_argument("--size", type=int, choices=_sizes(), required=True, help="frame resize S")
    p.add_argument("--out", required=True, metavar="DIR", help="patches directory to write (empty)")
    p.add_argument("--min-pixels", type=int, default=20,
                   help="wrong pixels (in the S x S frame) that make a patch hard (default 20)")
    p.add_argument("--backend", default="torch", choices=BACKENDS, help="default torch")
    p.add_argument("--device", default="cpu", choices=DEVICES, help="default cpu")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=cmd_mine)


def cmd_mine(args) -> int:
    from .evaluate import DetectorChoice, EvaluationError
    from .mining import mine_patches

    choice = DetectorChoice(args.checkpoint, size=args.size, backend=args.backend, device=args.device)
    try:
        index = mine_patches(choice.open(), args.data, args.out, split=args.split, min_pixels=args.min_pixels,
                             progress=not args.no_progress, model=args.checkpoint, command=args.command_line)
    except (EvaluationError, FileNotFoundError, ValueError) as exc:
        raise SystemExit(f"satsam-train mine: {exc}") from exc
    st = index["stats"]
    _err(f"satsam-train mine: S = {index['size']}: {st['frames']} frames, {st['kept']} of {st['patches_total']} "
         f"patches kept ({st['false']} with false pixels, {st['missed']} with missed pixels) in "
         f"{Path(args.out) / 'patches.json'}")
    return 0


# ---------------------------------------------------------------------------- pipeline


def add_pipeline(sub) -> None:
    p = sub.add_parser(
        "pipeline",
        help="synth -> pseudo-label -> patches -> fit -> tune-threshold -> evaluate for each size, one report",
        description="The whole method for each S in --sizes, with one report comparing the sizes beside the "
                    "reference's numbers (marked as measured on different data and hardware).",
    )
    p.add_argument("--sizes", type=int, nargs="+", choices=_sizes(), default=[512, 1024, 2048])
    p.add_argument("--out", required=True, metavar="DIR", help="pipeline directory")
    p.add_argument("--data", metavar="DIR", default=None,
                   help="an existing COCO dataset (train/val/test) instead of generating one")
    s = p.add_argument_group("synthetic data (when --data is not given)")
    s.add_argument("--synth-train", type=int, default=300, help="train frames (default 300)")
    s.add_argument("--synth-val", type=int, default=60, help="val frames (default 60)")
    s.add_argument("--synth-test", type=int, default=100, help="test frames (default 100)")
    s.add_argument("--synth-seed", type=int, default=1, help="seed of the generated data (default 1)")
    s.add_argument("--synth-args", nargs=argparse.REMAINDER, default=None,
                   help="further arguments passed to `satsam-train synth` (must come last)")
    p.add_argument("--pseudo-label", default="grabcut",
                   help="pseudo-mask method for the train/val frames (default grabcut; 'none' keeps the given "
                        "masks)")
    p.add_argument("--patch-size", type=int, default=256)
    p.add_argument("--keep-empty", type=float, default=0.0,
                   help="probability of keeping a patch without satellite pixels (`patches --keep-empty`; "
                        "default 0, as the reference; from-scratch models need some to learn to stay quiet)")
    p.add_argument("--val-frames", action="store_true",
                   help="also score val frames through the Detector every epoch (slower)")
    p.add_argument("--eval-split", default="test")
    p.add_argument("--resume", action="store_true", help="skip steps whose outputs exist; resume fits")
    _add_fit_options(p)
    p.set_defaults(func=cmd_pipeline)


def cmd_pipeline(args) -> int:
    from .evaluate import EvaluationError
    from .fit_config import FitError
    from .pipeline import PipelineError, run_pipeline

    try:
        result = run_pipeline(pipeline_config(args), log=_err)
    except (PipelineError, FitError, EvaluationError, FileNotFoundError) as exc:
        raise SystemExit(f"satsam-train pipeline: {exc}") from exc
    except KeyboardInterrupt:
        _err("satsam-train pipeline: interrupted (rerun with --resume to continue)")
        return 130
    _err(f"satsam-train pipeline: report {result['report']}")
    return 0


def pipeline_config(args):
    """The PipelineConfig of the parsed ``pipeline`` arguments (``--synth-args`` parsed
    with the ``synth`` command's own options)."""
    from .pipeline import PipelineConfig, SynthPlan

    synth = None
    if not args.data:
        from .data_commands import add_synth_options, synth_config, synth_counts

        sp = argparse.ArgumentParser(prog="satsam-train pipeline --synth-args")
        add_synth_options(sp)
        given = ["--n-train", str(args.synth_train), "--n-val", str(args.synth_val), "--n-test",
                 str(args.synth_test), "--seed", str(args.synth_seed)] + list(args.synth_args or [])
        sargs = sp.parse_args(given)
        out = str(Path(args.out) / "data")
        synth = SynthPlan(synth_counts(sargs), sargs.seed, synth_config(sargs),
                          command=" ".join(["satsam-train", "synth", "--out", out] + given), workers=sargs.workers)
    return PipelineConfig(
        out=args.out, sizes=args.sizes, fit=_fit_config(args, patches=[]), data=args.data, synth=synth,
        pseudo_label=args.pseudo_label, patch_size=args.patch_size, keep_empty=args.keep_empty,
        val_frames=args.val_frames, eval_split=args.eval_split, resume=args.resume,
        progress=not args.no_progress, command=args.command_line,
    )
