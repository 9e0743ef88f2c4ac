"""The ``satsam`` command: detect on files, run the demo (more subcommands follow)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Iterable, List, Optional

import numpy as np

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".pgm", ".ppm")


def _add_detector_args(p: argparse.ArgumentParser, default_model: str = "builtin") -> None:
    from ..core.detector import MODES
    from ..core.tiling import ALLOWED_SIZES
    from ..runtime import BACKENDS, DEFAULT_BACKEND, DEFAULT_DEVICE, DEVICES

    p.add_argument("--model", default=default_model,
                   help="tiny, builtin, vit-b, a checkpoint dir, a hub id, a .onnx export or a TensorRT .engine")
    p.add_argument("--size", type=int, default=512, choices=ALLOWED_SIZES, help="frame resize S (default 512)")
    p.add_argument("--backend", default=DEFAULT_BACKEND, choices=BACKENDS)
    p.add_argument("--device", default=DEFAULT_DEVICE, choices=DEVICES)
    p.add_argument("--mode", default="fast", choices=MODES)
    p.add_argument("--patch-size", type=int, default=256)
    p.add_argument("--overlap", type=int, default=0, help="patch overlap in pixels (blended)")
    p.add_argument("--threshold", type=float, default=None, help="default: the checkpoint's tuned threshold")
    p.add_argument("--min-area", type=int, default=None,
                   help="drop components smaller than this (input pixels); default: the checkpoint's tuned value")


def build_detector(args):
    """Detector from the common CLI arguments (errors surface as SystemExit)."""
    from ..runtime import open_detector

    try:
        return open_detector(
            model=args.model,
            backend=args.backend,
            device=args.device,
            size=args.size,
            mode=args.mode,
            patch_size=args.patch_size,
            overlap=args.overlap,
            threshold=args.threshold,
            min_area=args.min_area,
        )
    except (ValueError, FileNotFoundError, ImportError, RuntimeError) as exc:
        raise SystemExit(f"satsam: {exc}") from exc


def _collect_inputs(items: Iterable[str]) -> List[Path]:
    files: List[Path] = []
    for item in items:
        path = Path(item)
        if path.is_dir():
            files.extend(sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES))
        else:
            files.append(path)
    return files


def read_image(path: Path):
    """Read an image file as (array, channel order); raises ValueError naming the file."""
    import cv2

    if not path.is_file():
        raise ValueError(f"{path}: no such file")
    img = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if img is None:
        raise ValueError(f"{path}: not a readable image (supported: {', '.join(IMAGE_SUFFIXES)})")
    order = "bgra" if img.ndim == 3 and img.shape[2] == 4 else "bgr"
    return img, order


def overlay_image(frame: np.ndarray, mask: np.ndarray, boxes, order: str = "rgb") -> np.ndarray:
    """H x W x 3 uint8 BGR picture: the frame in gray, the mask tinted, boxes drawn."""
    import cv2

    from ..core.imaging import to_uint8_gray

    gray = to_uint8_gray(frame, order)
    out = cv2.cvtColor(gray, cv2.COLOR_GRAY2BGR)
    sel = mask > 0
    out[sel] = (0.5 * out[sel] + 0.5 * np.array([0, 0, 255])).astype(np.uint8)
    for b in boxes:
        cv2.rectangle(out, (b.x0, b.y0), (b.x1 - 1, b.y1 - 1), (0, 255, 0), 1)
        cv2.putText(out, f"{b.score:.2f}", (b.x0, max(b.y0 - 3, 10)), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (0, 255, 0), 1)
    return out


def cmd_detect(args) -> int:
    import cv2
    from tqdm import tqdm

    from ..core.imaging import FrameError

    files = _collect_inputs(args.inputs)
    if not files:
        raise SystemExit("satsam detect: no input images found in " + " ".join(args.inputs))
    detector = build_detector(args)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    failures = 0
    for path in tqdm(files, desc="detect", unit="frame", disable=len(files) < 2 or None):
        try:
            img, order = read_image(path)
            res = detector.detect(img, order)
        except (ValueError, FrameError) as exc:
            failures += 1
            print(f"satsam detect: skipped {path}: {exc}", file=sys.stderr)
            continue
        stem = path.stem
        cv2.imwrite(str(out / f"{stem}.mask.png"), res.mask)
        cv2.imwrite(str(out / f"{stem}.prob.png"), np.round(res.probability * 65535.0).astype(np.uint16))
        cv2.imwrite(str(out / f"{stem}.overlay.png"), overlay_image(img, res.mask, res.boxes, order))
        info = res.to_dict()
        info.update({"input": str(path), "model": args.model, "backend": detector.backend.name})
        (out / f"{stem}.json").write_text(json.dumps(info, indent=2) + "\n")
    done = len(files) - failures
    print(f"satsam detect: {done} of {len(files)} image(s) written to {out}")
    return 0 if done > 0 else 1


def cmd_demo(args) -> int:
    """The main job on built-in defaults: synthetic frames through the detector at every
    size (latency table), then a synthetic rosbag replayed through the live node
    (the bag evaluation's summary table)."""
    import statistics

    from ..core.postprocess import mask_iou
    from ..core.synthetic import demo_frames
    from ..runtime import open_detector

    frames = demo_frames(args.frames, seed=args.seed)
    print(f"satsam demo: {len(frames)} synthetic {frames[0][0].shape[0]} x {frames[0][0].shape[1]} frames, "
          f"model {args.model!r}, {args.mode} mode")
    rows = []
    for size in args.sizes:
        det = open_detector(args.model, backend=args.backend, device=args.device, size=size, mode=args.mode)
        det.detect(frames[0][0])  # warm-up
        lat, ious = [], []
        for frame, truth in frames:
            res = det.detect(frame)
            lat.append(res.timings["total"])
            ious.append(mask_iou(res.mask, truth))
        rows.append((size, res.patches, statistics.median(lat), max(lat), statistics.mean(ious)))
    print(f"{'size':>6} {'patches':>8} {'median s/frame':>15} {'max s/frame':>12} {'mean IoU':>9}")
    for size, n, med, worst, iou in rows:
        print(f"{size:>6} {n:>8} {med:>15.3f} {worst:>12.3f} {iou:>9.3f}")
    if args.model == "tiny":
        print("(model 'tiny' has random weights: the IoU column is meaningless; the default 'builtin' is trained)")
    if args.no_bag:
        return 0
    return _demo_bag(args)


def _demo_bag(args) -> int:
    """Replay a cached synthetic bag through the installed node; print the summary."""
    import shutil

    from .bag.io import BagError, make_bag, make_synthetic_bag, run_bag_eval, summary_table

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


def cmd_export_onnx(args) -> int:
    """satsam export onnx: the patch model as one ONNX graph + satsam.json."""
    from ..deploy.onnx_export import export_model

    print(f"satsam export onnx: exporting {args.model!r} (S={args.size}, E={args.encoder_size or 'native'}, "
          f"opset {args.opset}); ViT-B takes 15-60 s on 2 CPU cores", file=sys.stderr)
    try:
        res = export_model(args.model, args.out, size=args.size, encoder_size=args.encoder_size, opset=args.opset,
                           device=args.device, verify=not args.no_verify)
    except (ValueError, FileNotFoundError) as exc:
        raise SystemExit(f"satsam export onnx: {exc}") from exc
    export = res.meta.provenance["export"]
    print(f"wrote {res.path} (sha256 {res.sha256[:16]}...) and {res.path.parent / 'satsam.json'}")
    print(f"  input {export['input']}; output {export['output']}")
    print(f"  S={args.size} ({export['patches_per_frame']} patches per frame), threshold {res.meta.threshold}, "
          f"onnx checker: ok, max |onnxruntime - torch| = {res.max_abs_diff:.2e}")
    return 0


def cmd_export_tensorrt(args) -> int:
    """satsam export tensorrt: build (or reuse) a cached TensorRT engine from an export."""
    from ..deploy.tensorrt_build import build_engine

    try:
        build = build_engine(args.onnx, args.precision, size=args.size, max_batch=args.max_batch, out=args.out,
                             workspace_mb=args.workspace_mb, min_iou=args.min_iou, force=args.force)
    except (ValueError, FileNotFoundError, ImportError, RuntimeError) as exc:
        raise SystemExit(f"satsam export tensorrt: {exc}") from exc
    print(f"{build.path}: {build.summary()}")
    print(f"  profile {build.key['profile']}, TensorRT {build.key['tensorrt']}, GPU {build.key['gpu']}")
    if build.validation and not build.validation.get("ok", True):
        print(f"  WARNING: fp16 masks diverge from fp32 (IoU {build.validation['mask_iou']:.3f})", file=sys.stderr)
    return 0


def add_export_commands(sub) -> None:
    """Register `satsam export onnx` and `satsam export tensorrt`."""
    from ..artefacts import DEFAULT_OPSET
    from ..core.tiling import ALLOWED_SIZES

    p = sub.add_parser("export", help="export the patch model to ONNX or build a TensorRT engine")
    kinds = p.add_subparsers(dest="kind", metavar="KIND")
    kinds.required = True
    q = kinds.add_parser("onnx", help="one ONNX graph (encoder + prompt + decoder), dynamic patch batch")
    q.add_argument("--model", required=True, help="tiny, builtin, vit-b, a checkpoint dir or a hub id")
    q.add_argument("--size", type=int, default=512, choices=ALLOWED_SIZES, help="frame size S it is for")
    q.add_argument("--out", required=True, help="output .onnx file (satsam.json is written beside it)")
    q.add_argument("--encoder-size", type=int, default=None,
                   help="resize the encoder to E first (1024 for faithful mode; default: the model's own)")
    q.add_argument("--opset", type=int, default=DEFAULT_OPSET, help=f"ONNX opset (default {DEFAULT_OPSET})")
    q.add_argument("--device", default="cpu", choices=("cpu", "cuda"), help="where to trace (default cpu)")
    q.add_argument("--no-verify", action="store_true", help="skip the onnxruntime-vs-torch parity check")
    q.set_defaults(func=cmd_export_onnx)
    q = kinds.add_parser("tensorrt", help="build a TensorRT engine from an ONNX export (needs a GPU)")
    q.add_argument("--onnx", required=True, help="the .onnx export (or its directory)")
    q.add_argument("--precision", default="fp16", choices=("fp16", "fp32"))
    q.add_argument("--size", type=int, default=None, choices=ALLOWED_SIZES,
                   help="frame size S for the batch profile (default: the export's)")
    q.add_argument("--max-batch", type=int, default=None, help="cap the profile's batch (default: patches/frame)")
    q.add_argument("--out", default=None, help="engine path (default: the engine cache)")
    q.add_argument("--workspace-mb", type=int, default=1024, help="builder workspace limit (MiB)")
    q.add_argument("--min-iou", type=float, default=0.9, help="fp16 check: warn below this mask IoU")
    q.add_argument("--force", action="store_true", help="rebuild even when a current engine exists")
    q.set_defaults(func=cmd_export_tensorrt)


def cmd_bag_make(args) -> int:
    """satsam bag make: a COCO split or an image folder -> rosbag2 (+ ground-truth masks)."""
    from .bag.io import BagError, make_bag

    try:
        res = make_bag(args.data, args.out, storage=args.storage, rate=args.rate, topic=args.topic, split=args.split,
                       frame_id=args.frame_id, start=int(round(args.start * 1e9)), progress=True)
    except (BagError, OSError, ImportError) as exc:
        raise SystemExit(f"satsam bag make: {exc}") from exc
    encodings = ", ".join(f"{n} {e}" for e, n in res.encodings.items())
    print(f"satsam bag make: wrote {res.path} ({res.storage}): {res.frames} frames on {res.topic} ({encodings}), "
          f"{res.truth_frames} ground-truth masks on {res.truth_topic} ({res.empty_frames} empty)")
    for note in res.notes:
        print(f"  {note}")
    return 0


def cmd_bag_info(args) -> int:
    """satsam bag info: the topics of a bag."""
    from .bag.io import BagError, bag_topics, describe_topics

    try:
        topics = bag_topics(args.bag)
    except (BagError, ImportError) as exc:
        raise SystemExit(f"satsam bag info: {exc}") from exc
    print(f"{args.bag}:\n{describe_topics(topics)}")
    return 0


def cmd_bag_eval(args) -> int:
    """satsam bag eval: replay a bag through the detector node; report in --out."""
    from .bag.io import BagError, EvalOptions, parse_node_params, run_bag_eval, summary_table

    try:
        opts = EvalOptions(
            topic=args.topic, truth_topic=args.truth_topic, size=args.size, model=args.model, backend=args.backend,
            device=args.device, mode=args.mode, threshold=args.threshold, rate=args.rate, attach=args.attach,
            namespace=args.namespace, input_topic=args.input_topic, timeout=args.timeout,
            startup_timeout=args.startup_timeout, warmup=args.warmup, node_params=parse_node_params(args.node_param),
            node_exe=args.node_exe, restamp=args.restamp, storage=args.storage, examples=args.examples,
            progress=not args.no_progress,
        )
        summary = run_bag_eval(args.bag, args.out, opts, log=lambda text: print(text, file=sys.stderr))
    except (BagError, OSError, ImportError) as exc:
        raise SystemExit(f"satsam bag eval: {exc}") from exc
    print(summary_table(summary))
    print(f"report: {Path(args.out) / 'report.md'}")
    return 0


def add_bag_commands(sub) -> None:
    """Register `satsam bag make`, `satsam bag info` and `satsam bag eval`."""
    from ..core.detector import MODES
    from ..core.tiling import ALLOWED_SIZES
    from ..runtime import BACKENDS, DEVICES
    from .bag.io import (
        DEFAULT_FRAME_ID,
        DEFAULT_NAMESPACE,
        DEFAULT_START_NS,
        DEFAULT_TOPIC,
        GROUND_TRUTH_TOPIC,
        STORAGES,
    )

    p = sub.add_parser("bag", help="make rosbag2 files; evaluate the node by replaying a bag through it")
    kinds = p.add_subparsers(dest="bag_command", metavar="ACTION")
    kinds.required = True
    q = kinds.add_parser("make", help="COCO dataset (or image folder) -> rosbag2 with images and ground-truth masks")
    q.add_argument("data", help="COCO dataset dir (DATA/<split>.json), a COCO .json file, or a folder of images")
    q.add_argument("--out", required=True, help="the bag directory to create (must not exist)")
    q.add_argument("--storage", default="mcap", choices=STORAGES)
    q.add_argument("--rate", type=float, default=10.0, help="frames per second: stamps 1/rate apart (default 10)")
    q.add_argument("--topic", default=DEFAULT_TOPIC, help=f"image topic (default {DEFAULT_TOPIC})")
    q.add_argument("--split", default="test", help="COCO split to read (default test)")
    q.add_argument("--frame-id", default=DEFAULT_FRAME_ID, help=f"header.frame_id (default {DEFAULT_FRAME_ID})")
    q.add_argument("--start", type=float, default=DEFAULT_START_NS / 1e9,
                   help="stamp of the first frame, seconds since the epoch (default %(default).0f)")
    q.set_defaults(func=cmd_bag_make)
    q = kinds.add_parser("info", help="list the topics of a bag")
    q.add_argument("bag")
    q.set_defaults(func=cmd_bag_info)
    q = kinds.add_parser("eval", help="replay a bag through detect_node and report accuracy, latency, drops")
    q.add_argument("bag", help="rosbag2 directory (MCAP or sqlite3)")
    q.add_argument("--out", required=True, help="report directory")
    q.add_argument("--topic", default=None, help="image topic in the bag (default: its only image topic)")
    q.add_argument("--truth-topic", default=GROUND_TRUTH_TOPIC,
                   help=f"ground-truth masks (default {GROUND_TRUTH_TOPIC})")
    q.add_argument("--rate", default="1.0",
                   help="replay speed: factor on the recorded timing (1.0), 'max' (flood: back to back, no waiting) "
                        "or 'step' (next frame once the previous one is answered or --timeout passed)")
    q.add_argument("--size", type=int, default=512, choices=ALLOWED_SIZES)
    q.add_argument("--model", default=None, help="node parameter model (default: the node's default)")
    q.add_argument("--backend", default=None, choices=BACKENDS)
    q.add_argument("--device", default=None, choices=DEVICES)
    q.add_argument("--mode", default=None, choices=MODES)
    q.add_argument("--threshold", type=float, default=None, help="default: the checkpoint's tuned threshold")
    q.add_argument("--node-param", action="append", default=[], metavar="NAME:=VALUE",
                   help="extra node parameter, repeatable (e.g. qos_reliability:=reliable)")
    q.add_argument("--attach", action="store_true",
                   help="use a node that is already running (same ROS_DOMAIN_ID) instead of starting one")
    q.add_argument("--namespace", default=DEFAULT_NAMESPACE, help="the node's namespace (default %(default)s)")
    q.add_argument("--input-topic", default=None, help="topic to publish frames on (default: the bag's topic)")
    q.add_argument("--timeout", type=float, default=30.0, help="seconds to wait for an answer (default 30)")
    q.add_argument("--startup-timeout", type=float, default=180.0, help="seconds for the node to come up")
    q.add_argument("--warmup", type=int, default=1, help="warm-up frames before the replay (default 1)")
    q.add_argument("--restamp", action="store_true", help="send with unique stamps (for bags with repeated stamps)")
    q.add_argument("--node-exe", default=None, help="detect_node executable (default: found in the colcon install)")
    q.add_argument("--storage", default="mcap", choices=STORAGES, help="storage of the output bag")
    q.add_argument("--examples", type=int, default=6, help="frames in examples.png (default 6)")
    q.add_argument("--no-progress", action="store_true", help="no progress bar")
    q.set_defaults(func=cmd_bag_eval)


def cmd_bench(args) -> int:
    """Benchmark the detector; print a table, write bench.json and bench.md (docs/bench.md)."""
    import os

    # Before torch loads: idle OpenMP workers sleep instead of spinning (see docs/bench.md).
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    if args.node:
        return _bench_node_only(args)
    from .bench.detector import Options, format_table, run_benchmark, table_rows, to_markdown

    flags = [f"--models {' '.join(args.models)}", f"--sizes {' '.join(map(str, args.sizes))}",
             f"--modes {' '.join(args.modes)}", f"--frames {args.frames}", f"--warmup {args.warmup}",
             f"--budget {args.budget:g}", f"--native-encoder {args.native_encoder}", f"--device {args.device}"]
    flags += [f"--backends {' '.join(args.backends)}"] if args.backends else []
    flags += ["--ablation"] * args.ablation + ["--include-slow"] * args.include_slow
    flags += ["--no-roi"] if args.no_roi else [f"--roi-frames {args.roi_frames}"]
    flags += [f"--threads {args.threads}"] if args.threads else []
    flags += ["--no-node"] if args.no_node else [f"--node-rates {' '.join(args.node_rates)}",
                                                 f"--node-frames {args.node_frames}"]
    opts = Options(models=args.models, sizes=args.sizes, backends=args.backends, modes=args.modes,
                   device=args.device, frames=args.frames, warmup=args.warmup, budget=args.budget,
                   ablation=args.ablation, include_slow=args.include_slow,
                   native_encoder=args.native_encoder or None, roi=not args.no_roi, roi_frames=args.roi_frames,
                   roi_sizes=args.sizes, threads=args.threads, seed=args.seed,
                   command="satsam bench " + " ".join(flags), node=not args.no_node,
                   node_rates=args.node_rates, node_frames=args.node_frames)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    partial = out / "bench.partial.json"
    try:
        opts.validate()
        resume = json.loads(Path(args.resume).read_text()) if args.resume else None
        report = run_benchmark(opts, progress=not args.no_progress, resume=resume, work=str(out / "node"),
                               checkpoint=lambda r: partial.write_text(json.dumps(r, indent=2) + "\n"))
    except (ValueError, FileNotFoundError, OSError) as exc:
        raise SystemExit(f"satsam bench: {exc}") from exc
    partial.unlink(missing_ok=True)
    (out / "bench.json").write_text(json.dumps(report, indent=2) + "\n")
    (out / "bench.md").write_text(to_markdown(report))
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    print(format_table(*table_rows(report)))
    for t in report["targets"]:
        verdict = {True: "PASS", False: "MISS", None: "----"}[t["passed"]]
        value = "-" if t["measured"] is None else f"{t['measured']:.2f}"
        print(f"{verdict}  {t['target']}: {value} (goal {t['goal']}); {t['detail']}")
    for s in report["skipped"]:
        print(f"skipped {s['model']} S={s['size']} {s['row']}: {s['reason']}")
    print(f"satsam bench: wrote {out / 'bench.json'} and {out / 'bench.md'}")
    return 0


def _bench_node_only(args) -> int:
    """``satsam bench --node``: only the live-node section; writes node-bench.json / .md."""
    from .bag.io import BagError
    from .bench.detector import format_table
    from .bench.node import NODE_HEAD, NodeBenchOptions, bench_node, node_markdown, node_rows

    out = Path(args.out)
    try:
        opts = NodeBenchOptions(rates=args.node_rates, frames=args.node_frames, size=512,
                                model=None if args.models[0] == "shipped" else args.models[0],
                                backend=args.backends[0] if args.backends else None,
                                device=None if args.device == "auto" else args.device, seed=1000 + args.seed)
        opts.validate()
        out.mkdir(parents=True, exist_ok=True)
        node = bench_node(opts, out / "node", progress=not args.no_progress,
                          log=None if args.json else (lambda text: print(text, file=sys.stderr)))
    except (ValueError, OSError, BagError) as exc:
        raise SystemExit(f"satsam bench --node: {exc}") from exc
    node["command"] = (f"satsam bench --node --node-rates {' '.join(args.node_rates)} --node-frames "
                       f"{args.node_frames}" + (f" --models {opts.model}" if opts.model else ""))
    (out / "node-bench.json").write_text(json.dumps(node, indent=2) + "\n")
    (out / "node-bench.md").write_text("\n".join(node_markdown(node)) + "\n")
    if args.json:
        print(json.dumps(node, indent=2))
        return 0
    print(format_table(NODE_HEAD, node_rows(node)))
    t = node["target"]
    verdict = {True: "PASS", False: "MISS", None: "----"}[t["passed"]]
    print(f"{verdict}  live node >= 10 fps sustained, p95 <= 200 ms: {t['detail']}")
    print(f"satsam bench --node: wrote {out / 'node-bench.json'} and {out / 'node-bench.md'}")
    return 0


def add_bench_commands(sub) -> None:
    """``satsam bench``: latency, throughput, stage shares, memory (satsam_ros.bench)."""
    from ..core.detector import MODES
    from ..core.tiling import ALLOWED_SIZES

    p = sub.add_parser("bench", help="benchmark the detector (latency, fast path, ROI tracking)")
    p.add_argument("--models", nargs="+", default=["shipped", "vit-b"],
                   help="model specs; 'shipped' = builtin when a model ships, else tiny (default: shipped vit-b)")
    p.add_argument("--sizes", type=int, nargs="+", default=list(ALLOWED_SIZES), choices=ALLOWED_SIZES)
    p.add_argument("--backends", nargs="+", default=None, help="default: every backend available here")
    p.add_argument("--modes", nargs="+", default=list(MODES), choices=MODES)
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    p.add_argument("--frames", type=int, default=10, help="measured frames per row (default 10)")
    p.add_argument("--warmup", type=int, default=2, help="warm-up rounds (1 when a round is slow; default 2)")
    p.add_argument("--budget", type=float, default=900.0, help="seconds per model/size group; frames are cut to fit")
    p.add_argument("--ablation", action="store_true", help="also measure each fast-path step on its own")
    p.add_argument("--include-slow", action="store_true", help="also run ViT-B at E=1024 for S=1024/2048")
    p.add_argument("--native-encoder", type=int, default=256, help="E of the native-resolution rows (0: none)")
    p.add_argument("--no-roi", action="store_true", help="skip the ROI-tracking measurement")
    p.add_argument("--roi-frames", type=int, default=30, help="frames of the moving-satellite sequence")
    p.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: usable cores)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", action="store_true", help="print the JSON report instead of the table")
    p.add_argument("--out", default="bench-results", help="directory for bench.json and bench.md")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument("--resume", default=None, metavar="JSON",
                   help="take over the groups already measured in this (partial) report, e.g. OUT/bench.partial.json")
    p.add_argument("--node", action="store_true",
                   help="only the live-node section: the installed node over loopback DDS at --node-rates")
    p.add_argument("--no-node", action="store_true", help="skip the live-node section")
    p.add_argument("--node-rates", nargs="+", default=["10", "20", "step"], metavar="RATE",
                   help="input frame rates of the live-node section, frames/s, or 'step' (the next frame as soon "
                        "as the last is answered: the node's capacity); default 10 20 step")
    p.add_argument("--node-frames", type=int, default=100, help="frames per input rate (default 100)")
    p.set_defaults(func=cmd_bench)


def make_parser() -> argparse.ArgumentParser:
    from ..core.detector import MODES
    from ..core.tiling import ALLOWED_SIZES
    from ..runtime import BACKENDS, DEFAULT_BACKEND, DEFAULT_DEVICE, DEFAULT_MODEL, DEVICES

    parser = argparse.ArgumentParser(prog="satsam", description="Patch-tiled SAM satellite detection.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    p = sub.add_parser("detect", help="detect satellites in image files or directories")
    p.add_argument("inputs", nargs="+", help="image files and/or directories of images")
    p.add_argument("--out", required=True, help="output directory")
    _add_detector_args(p)
    p.set_defaults(func=cmd_detect)

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
    p.set_defaults(func=cmd_demo)
    add_export_commands(sub)
    add_bag_commands(sub)
    add_bench_commands(sub)
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    args = make_parser().parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
