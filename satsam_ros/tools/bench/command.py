"""``satsam bench`` (and ``satsam bench --node``): parse, run, print and write the report."""

from __future__ import annotations

import json
import sys
from pathlib import Path


def cmd_bench(args) -> int:
    """Benchmark the detector; print a table, write bench.json and bench.md (docs/bench.md)."""
    import os

    # Before torch loads: idle OpenMP workers sleep instead of spinning (see docs/bench.md).
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    if args.node:
        return _bench_node_only(args)
    from .options import Options
    from .report import format_table, ratio_rows, table_rows, to_markdown
    from .run import run_benchmark

    flags = [f"--models {' '.join(args.models)}", f"--sizes {' '.join(map(str, args.sizes))}",
             f"--modes {' '.join(args.modes)}", f"--frames {args.frames}", f"--warmup {args.warmup}",
             f"--budget {args.budget:g}", f"--native-encoder {args.native_encoder}", f"--device {args.device}"]
    flags += [f"--backends {' '.join(args.backends)}"] if args.backends else []
    flags += ["--ablation"] * args.ablation + ["--include-slow"] * args.include_slow
    flags += ["--no-roi"] if args.no_roi else [f"--roi-frames {args.roi_frames}"]
    flags += [f"--threads {args.threads}"] if args.threads else []
    flags += [f"--reference-model {args.reference_model or repr('')}"]
    flags += ["--no-node"] if args.no_node else [f"--node-rates {' '.join(args.node_rates)}",
                                                 f"--node-frames {args.node_frames}", f"--node-size {args.node_size}"]
    flags += [f"--node-cascade {args.node_cascade}"] if args.node_cascade and not args.no_node else []
    flags += ["--no-cascade"] if args.no_cascade else [f"--cascade {args.cascade}"]
    flags += [f"--cascade-margin {args.cascade_margin}"] if args.cascade_margin is not None else []
    flags += [f"--cascade-max-patches {args.cascade_max_patches}"] if args.cascade_max_patches is not None else []
    flags += [f"--cascade-data {' '.join(args.cascade_data)} --cascade-split {args.cascade_split}"] \
        if args.cascade_data else [f"--cascade-frames {args.cascade_frames}"]
    flags += [f"--cascade-limit {args.cascade_limit}"] if args.cascade_limit else []
    opts = Options(models=args.models, reference_model=args.reference_model or None, sizes=args.sizes,
                   backends=args.backends, modes=args.modes,
                   device=args.device, frames=args.frames, warmup=args.warmup, budget=args.budget,
                   ablation=args.ablation, include_slow=args.include_slow,
                   native_encoder=args.native_encoder or None, roi=not args.no_roi, roi_frames=args.roi_frames,
                   roi_sizes=args.sizes, threads=args.threads, seed=args.seed,
                   command="satsam bench " + " ".join(flags), node=not args.no_node,
                   node_rates=args.node_rates, node_frames=args.node_frames, node_size=args.node_size,
                   node_cascade=args.node_cascade, cascade_section=not args.no_cascade, cascade=args.cascade,
                   cascade_margin=args.cascade_margin, cascade_max_patches=args.cascade_max_patches,
                   cascade_data=args.cascade_data or (),
                   cascade_split=args.cascade_split, cascade_limit=args.cascade_limit,
                   cascade_frames=args.cascade_frames)
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
    if report["model_ratios"]:
        print(format_table(*ratio_rows(report)))
    if report.get("cascade"):
        from .cascade import CASCADE_HEAD, cascade_rows

        print(format_table(CASCADE_HEAD, cascade_rows(report["cascade"])))
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
    from ..bag.io import BagError
    from .node import NodeBenchOptions, bench_node
    from .report import NODE_HEAD, format_table, node_markdown, node_rows

    out = Path(args.out)
    try:
        opts = NodeBenchOptions(rates=args.node_rates, frames=args.node_frames, size=args.node_size,
                                model=None if args.models[0] == "shipped" else args.models[0],
                                backend=args.backends[0] if args.backends else None,
                                device=None if args.device == "auto" else args.device, seed=1000 + args.seed,
                                cascade=args.node_cascade, cascade_max_patches=args.cascade_max_patches,
                                reference=args.node_reference)
        opts.validate()
        out.mkdir(parents=True, exist_ok=True)
        node = bench_node(opts, out / "node", progress=not args.no_progress,
                          log=None if args.json else (lambda text: print(text, file=sys.stderr)))
    except (ValueError, OSError, BagError) as exc:
        raise SystemExit(f"satsam bench --node: {exc}") from exc
    node["command"] = (f"satsam bench --node --node-rates {' '.join(args.node_rates)} --node-frames "
                       f"{args.node_frames} --node-size {args.node_size}" + (f" --models {opts.model}" if opts.model
                                                                             else "")
                       + (f" --backends {opts.backend}" if opts.backend else "")
                       + (f" --node-cascade {args.node_cascade}" if args.node_cascade else "")
                       + (f" --cascade-max-patches {args.cascade_max_patches}"
                          if args.cascade_max_patches is not None else "")
                       + (f" --node-reference {args.node_reference}" if args.node_reference else ""))
    (out / "node-bench.json").write_text(json.dumps(node, indent=2) + "\n")
    (out / "node-bench.md").write_text("\n".join(node_markdown(node)) + "\n")
    if args.json:
        print(json.dumps(node, indent=2))
        return 0
    print(format_table(NODE_HEAD, node_rows(node)))
    t = node["target"]
    verdict = {True: "PASS", False: "MISS", None: "----"}[t["passed"]]
    fps, p95 = t.get("goal", (10, 200))
    print(f"{verdict}  live node >= {fps:g} fps sustained, p95 <= {p95:g} ms (S={args.node_size}): {t['detail']}")
    c = node.get("capacity_target")
    if c:
        measured = "-" if c["measured"] is None else f"{c['measured']:.2f}x"
        verdict = {True: "PASS", False: "MISS", None: "----"}[c["passed"]]
        print(f"{verdict}  lock-step capacity {c['goal']}: {measured} ({c['detail']})")
    print(f"satsam bench --node: wrote {out / 'node-bench.json'} and {out / 'node-bench.md'}")
    return 0


def add_bench_commands(sub) -> None:
    """``satsam bench``: latency, throughput, stage shares, memory (satsam_ros.bench)."""
    from ...core.detector import CASCADE_CHOICES, MODES
    from ...core.tiling import ALLOWED_SIZES

    p = sub.add_parser("bench", help="benchmark the detector (latency, fast path, ROI tracking)")
    p.add_argument("--models", nargs="+", default=["shipped", "vit-b", "sam2-hiera-tiny"],
                   help="model specs; 'shipped' = builtin when a model ships, else tiny (default: shipped vit-b "
                        "sam2-hiera-tiny)")
    p.add_argument("--reference-model", default="vit-b",
                   help="every other model's rows are timed against this model's rows of the same size, backend "
                        "and row (the speed-up column; default vit-b; '' for none)")
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
    p.add_argument("--node-size", type=int, default=512, choices=ALLOWED_SIZES,
                   help="the live node's size parameter (default 512; the target: 10 frames/s and p95 200 ms at "
                        "512, 5 frames/s and 400 ms at 1024 / 2048)")
    p.add_argument("--node-cascade", default=None, choices=CASCADE_CHOICES,
                   help="the live node's cascade parameter (default: the node's own, auto)")
    p.add_argument("--node-reference", default=None, metavar="MODEL",
                   help="with --node: a second model (e.g. builtin) run lock-step right after the first on the same "
                        "bag; reports the capacity ratio (goal >= 1.5x)")
    p.add_argument("--no-cascade", action="store_true",
                   help="skip the coarse-to-fine section (S = 512, full tiling and the cascade at each larger S)")
    p.add_argument("--cascade", default="auto", choices=CASCADE_CHOICES,
                   help="the cascade rows' setting (auto: the checkpoint's for each S, else 512 first)")
    p.add_argument("--cascade-margin", type=int, default=None, metavar="PIXELS",
                   help="the cascade rows' margin (default: the checkpoint's, else 32)")
    p.add_argument("--cascade-max-patches", type=int, default=None, metavar="N",
                   help="the most S patches a cascaded frame runs, strongest coarse proposals first, in the cascade "
                        "rows and the live node (0: no cap; default: the checkpoint's, else 0)")
    p.add_argument("--cascade-data", nargs="+", default=None, metavar="DIR",
                   help="COCO datasets (e.g. satsam-train synth style a and style b) whose --cascade-split the "
                        "cascade section times and scores (accuracy, false alarms); default: synthetic frames")
    p.add_argument("--cascade-split", default="test", help="split of --cascade-data (default test)")
    p.add_argument("--cascade-limit", type=int, default=None, metavar="N", help="first N frames per dataset")
    p.add_argument("--cascade-frames", type=int, default=8,
                   help="synthetic frames of the cascade section without --cascade-data (every second empty)")
    p.set_defaults(func=cmd_bench)
