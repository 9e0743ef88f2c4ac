"""``satsam demo``: the main job on built-in defaults, end to end.

Synthetic frames through the Detector at every size (a latency table), then a cached
synthetic rosbag replayed through the live node over loopback DDS (the bag
evaluation's summary table). A command module: it prints; the work is library code.
"""

from __future__ import annotations

import sys
from pathlib import Path


def cmd_demo(args) -> int:
    """The main job on built-in defaults: synthetic frames through the detector at every
    size (latency table), then a synthetic rosbag replayed through the live node
    (the bag evaluation's summary table)."""
    import statistics

    from ..core.detector import parse_cascade
    from ..core.postprocess import mask_iou
    from ..core.synthetic import demo_frames
    from ..model import RANDOM_SPECS
    from ..runtime import open_detector

    frames = demo_frames(args.frames, seed=args.seed)
    print(f"satsam demo: {len(frames)} synthetic {frames[0][0].shape[0]} x {frames[0][0].shape[1]} frames, "
          f"model {args.model!r}, {args.mode} mode")
    rows = []
    for size in args.sizes:
        det = open_detector(args.model, backend=args.backend, device=args.device, size=size, mode=args.mode,
                            cascade=parse_cascade(args.cascade), cascade_margin=args.cascade_margin,
                            cascade_max_patches=args.cascade_max_patches)
        det.detect(frames[0][0])  # warm-up
        lat, ious, patches = [], [], []
        for frame, truth in frames:
            res = det.detect(frame)
            lat.append(res.timings["total"])
            ious.append(mask_iou(res.mask, truth))
            patches.append(res.patches_run)
        rows.append((size, statistics.median(patches), statistics.median(lat), max(lat), statistics.mean(ious),
                     det.describe_cascade()))
    print(f"{'size':>6} {'patches':>8} {'median s/frame':>15} {'max s/frame':>12} {'mean IoU':>9}  cascade")
    for size, n, med, worst, iou, cascade in rows:
        print(f"{size:>6} {n:>8g} {med:>15.3f} {worst:>12.3f} {iou:>9.3f}  {cascade}")
    if args.model in RANDOM_SPECS:
        print(f"(model {args.model!r} has random weights: the IoU column is meaningless; the default 'builtin' is "
              "trained)")
    if args.no_bag:
        return 0
    return _demo_bag(args)


def _demo_bag(args) -> int:
    """Replay a cached synthetic bag through the installed node; print the summary."""
    import shutil

    from .bag.evaluate import run_bag_eval
    from .bag.io import BagError
    from .bag.make import make_bag, make_synthetic_bag
    from .bag.report import summary_table

    work = Path(args.work)
    try:  # the training data's generator (what the shipped model learnt from), when installed
        from satsam_training.synth import SynthConfig, generate_dataset
    except ImportError:
        generate_dataset = None
    kind = "synth" if generate_dataset is not None else "synthetic"
    bag = work / f"{kind}-{args.bag_frames}.bag"
    if not (bag / "metadata.yaml").is_file():
        shutil.rmtree(bag, ignore_errors=True)  # an interrupted earlier write
        if generate_dataset is not None:
            data = work / f"synth-{args.bag_frames}"
            shutil.rmtree(data, ignore_errors=True)
            # seed 2024 + the demo seed: not a seed of the shipped model's recipe (1, 2, 999)
            generate_dataset(data, {"test": int(args.bag_frames)}, seed=2024 + int(args.seed),
                             config=SynthConfig(empty_fraction=0.25))
            make_bag(data, bag, split="test", progress=False)
            what = "frames of satsam_training's generator (the shipped model's kind of data)"
        else:
            make_synthetic_bag(bag, count=args.bag_frames, seed=args.seed)
            what = ("simple runtime frames (satsam_ros.synthetic); install the training package for frames "
                    "like the shipped model's training data")
        print(f"satsam demo: wrote {bag} ({args.bag_frames} {what}, with ground truth)")
    else:
        print(f"satsam demo: reusing {bag}")
    out = work / "bag-eval"
    print(f"satsam demo: replaying {bag} through the live node (model {args.model!r}, size 512, "
          "DDS on loopback) ...")
    try:
        summary = run_bag_eval(bag, out, model=args.model, size=512, rate="step", backend=args.backend,
                               device=args.device, progress=sys.stderr.isatty())
    except BagError as exc:
        raise SystemExit(f"satsam demo: bag evaluation failed: {exc}") from exc
    print(summary_table(summary))
    print(f"satsam demo: full report in {out / 'report.md'}")
    return 0


def add_demo_command(sub) -> None:
    """Register `satsam demo`."""
    from ..core.detector import MODES
    from ..core.tiling import ALLOWED_SIZES
    from ..runtime import BACKENDS, DEFAULT_BACKEND, DEFAULT_DEVICE, DEFAULT_MODEL, DEVICES

    p = sub.add_parser("demo", help="run the detector on generated frames and print latencies")
    p.add_argument("--model", default=DEFAULT_MODEL)
    p.add_argument("--backend", default=DEFAULT_BACKEND, choices=BACKENDS)
    p.add_argument("--device", default=DEFAULT_DEVICE, choices=DEVICES)
    p.add_argument("--mode", default="fast", choices=MODES)
    p.add_argument("--frames", type=int, default=3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--sizes", type=int, nargs="+", default=list(ALLOWED_SIZES), choices=ALLOWED_SIZES)
    p.add_argument("--bag-frames", type=int, default=12, help="frames in the synthetic demo bag (default 12)")
    p.add_argument("--work", default="runs/demo", help="where the demo bag and its report go (default runs/demo)")
    p.add_argument("--no-bag", action="store_true", help="skip the replay through the live node")
    from .args import add_cascade_args

    add_cascade_args(p)
    p.set_defaults(func=cmd_demo)
