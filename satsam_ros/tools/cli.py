"""The ``satsam`` command: the parser, ``satsam detect`` and ``satsam export``.

Each tool registers its own subcommands (:mod:`.demo`, :mod:`.bag.command`,
:mod:`.bench.command`); every command parses its arguments and calls library code.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Iterable, List, Optional

import numpy as np


def _add_detector_args(p: argparse.ArgumentParser, default_model: str = "builtin") -> None:
    from ..core.detector import MODES
    from ..core.tiling import ALLOWED_SIZES
    from ..runtime import BACKENDS, DEFAULT_BACKEND, DEFAULT_DEVICE, DEVICES

    p.add_argument("--model", default=default_model,
                   help="builtin, tiny, tiny-sam2, tiny-edgetam, vit-b, sam2-hiera-tiny, a checkpoint or transformers "
                        "SAM / SAM 2 / EdgeTAM dir, a hub id, a .onnx export or a TensorRT .engine")
    p.add_argument("--size", type=int, default=512, choices=ALLOWED_SIZES, help="frame resize S (default 512)")
    p.add_argument("--backend", default=DEFAULT_BACKEND, choices=BACKENDS)
    p.add_argument("--device", default=DEFAULT_DEVICE, choices=DEVICES)
    p.add_argument("--mode", default="fast", choices=MODES)
    p.add_argument("--patch-size", type=int, default=256)
    p.add_argument("--overlap", type=int, default=0, help="patch overlap in pixels (blended)")
    p.add_argument("--threshold", type=float, default=None, help="default: the checkpoint's tuned threshold")
    p.add_argument("--min-area", type=int, default=None,
                   help="drop components smaller than this (input pixels); default: the checkpoint's tuned value")
    p.add_argument("--max-objects", type=int, default=None,
                   help="keep the K best-scoring objects, 0 = all (default: the checkpoint's value for this size)")
    p.add_argument("--min-score", type=float, default=None,
                   help="drop objects with a mean probability under this (default: the checkpoint's value)")
    p.add_argument("--group-gap", type=int, default=None,
                   help="components closer than this (pixels) are one object (default: the checkpoint's value)")
    from .args import add_cascade_args

    add_cascade_args(p)


def build_detector(args):
    """Detector from the common CLI arguments (errors surface as SystemExit)."""
    from ..core.detector import parse_cascade
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
            max_objects=args.max_objects,
            min_score=args.min_score,
            group_gap=args.group_gap,
            cascade=parse_cascade(args.cascade),
            cascade_margin=args.cascade_margin,
            cascade_max_patches=args.cascade_max_patches,
        )
    except (ValueError, FileNotFoundError, ImportError, RuntimeError) as exc:
        raise SystemExit(f"satsam: {exc}") from exc


def _collect_inputs(items: Iterable[str]) -> List[Path]:
    """Files given, and the image files (by suffix) of directories given, in name order."""
    from ..core.imaging import IMAGE_SUFFIXES

    files: List[Path] = []
    for item in items:
        path = Path(item)
        if path.is_dir():
            files.extend(sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES))
        else:
            files.append(path)
    return files


def cmd_detect(args) -> int:
    import cv2
    from tqdm import tqdm

    from ..core.imaging import FrameError, read_image_file
    from ..core.overlay import overlay_image

    files = _collect_inputs(args.inputs)
    if not files:
        raise SystemExit("satsam detect: no input images found in " + " ".join(args.inputs))
    detector = build_detector(args)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    failures = 0
    for path in tqdm(files, desc="detect", unit="frame", disable=len(files) < 2 or None):
        try:
            img, order = read_image_file(path)
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
    if res.has_score:
        print(f"  second output {export['score_output']}; max |onnxruntime - torch| = {res.max_score_diff:.2e}")
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
    q.add_argument("--model", required=True, help="builtin, tiny, tiny-sam2, tiny-edgetam, vit-b, sam2-hiera-tiny, a "
                   "checkpoint or transformers SAM / SAM 2 / EdgeTAM dir, or a hub id")
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


def make_parser() -> argparse.ArgumentParser:
    from .bag.command import add_bag_commands
    from .bench.command import add_bench_commands
    from .demo import add_demo_command

    parser = argparse.ArgumentParser(prog="satsam", description="Patch-tiled SAM satellite detection.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    p = sub.add_parser("detect", help="detect satellites in image files or directories")
    p.add_argument("inputs", nargs="+", help="image files and/or directories of images")
    p.add_argument("--out", required=True, help="output directory")
    _add_detector_args(p)
    p.set_defaults(func=cmd_detect)

    add_demo_command(sub)
    add_export_commands(sub)
    add_bag_commands(sub)
    add_bench_commands(sub)
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    args = make_parser().parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
