"""``satsam bag make``, ``satsam bag info`` and ``satsam bag eval``: parse and call."""

from __future__ import annotations

import sys
from pathlib import Path


def cmd_bag_make(args) -> int:
    """satsam bag make: a COCO split or an image folder -> rosbag2 (+ ground-truth masks)."""
    from .io import BagError
    from .make import make_bag

    try:
        res = make_bag(args.data, args.out, storage=args.storage, rate=args.rate, topic=args.topic, split=args.split,
                       frame_id=args.frame_id, start=int(round(args.start * 1e9)), progress=True,
                       compress=args.compress, jpeg_quality=args.jpeg_quality)
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
    from .io import BagError, bag_topics, describe_topics

    try:
        topics = bag_topics(args.bag)
    except (BagError, ImportError) as exc:
        raise SystemExit(f"satsam bag info: {exc}") from exc
    print(f"{args.bag}:\n{describe_topics(topics)}")
    return 0


def cmd_bag_eval(args) -> int:
    """satsam bag eval: replay a bag through the detector node; report in --out."""
    from .evaluate import EvalOptions, parse_node_params, run_bag_eval
    from .io import BagError
    from .report import summary_table

    try:
        opts = EvalOptions(
            topic=args.topic, truth_topic=args.truth_topic, size=args.size, model=args.model, backend=args.backend,
            device=args.device, mode=args.mode, threshold=args.threshold, cascade=args.cascade,
            cascade_margin=args.cascade_margin, rate=args.rate, attach=args.attach,
            namespace=args.namespace, input_topic=args.input_topic, timeout=args.timeout,
            startup_timeout=args.startup_timeout, warmup=args.warmup, node_params=parse_node_params(args.node_param),
            node_exe=args.node_exe, restamp=args.restamp, storage=args.storage, examples=args.examples,
            progress=not args.no_progress,
        )
        summary = run_bag_eval(args.bag, args.out, opts, log=lambda text: print(text, file=sys.stderr))
    except (BagError, OSError, ImportError) as exc:
        raise SystemExit(f"satsam bag eval: {exc}") from exc
    print(summary_table(summary))
    if summary.get("error_budget"):
        from ...core.metrics import budget_markdown

        print("Error budget (scored frames per category and satellite size):\n")
        print(budget_markdown(summary["error_budget"]))
    print(f"report: {Path(args.out) / 'report.md'}")
    return 0


def add_bag_commands(sub) -> None:
    """Register `satsam bag make`, `satsam bag info` and `satsam bag eval`."""
    from ...core.compressed import CODECS, DEFAULT_JPEG_QUALITY
    from ...core.detector import CASCADE_CHOICES, MODES
    from ...core.tiling import ALLOWED_SIZES
    from ...runtime import BACKENDS, DEVICES
    from .evaluate import DEFAULT_NAMESPACE
    from .io import DEFAULT_FRAME_ID, DEFAULT_START_NS, DEFAULT_TOPIC, GROUND_TRUTH_TOPIC, STORAGES

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
    q.add_argument("--compress", default=None, choices=CODECS,
                   help="write sensor_msgs/CompressedImage on <topic>/compressed, as image_transport records it: "
                        "png (lossless, 16-bit kept) or jpeg (lossy, 8-bit); default: raw sensor_msgs/Image")
    q.add_argument("--jpeg-quality", type=int, default=DEFAULT_JPEG_QUALITY,
                   help="JPEG quality 1..100 with --compress jpeg (default %(default)s, image_transport's)")
    q.set_defaults(func=cmd_bag_make)
    q = kinds.add_parser("info", help="list the topics of a bag")
    q.add_argument("bag")
    q.set_defaults(func=cmd_bag_info)
    q = kinds.add_parser("eval", help="replay a bag through detect_node and report accuracy, latency, drops")
    q.add_argument("bag", help="rosbag2 directory (MCAP or sqlite3)")
    q.add_argument("--out", required=True, help="report directory")
    q.add_argument("--topic", default=None,
                   help="camera topic in the bag, Image or CompressedImage (default: its only one)")
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
    q.add_argument("--cascade", default=None, choices=CASCADE_CHOICES,
                   help="node parameter cascade: coarse to fine (default: the node's, auto)")
    q.add_argument("--cascade-margin", type=int, default=None, metavar="PIXELS",
                   help="node parameter cascade_margin (default: the node's, -1 = the checkpoint's)")
    q.add_argument("--node-param", action="append", default=[], metavar="NAME:=VALUE",
                   help="extra node parameter, repeatable (e.g. qos_reliability:=reliable)")
    q.add_argument("--attach", action="store_true",
                   help="use a node that is already running (same ROS_DOMAIN_ID) instead of starting one")
    q.add_argument("--namespace", default=DEFAULT_NAMESPACE, help="the node's namespace (default %(default)s)")
    q.add_argument("--input-topic", default=None,
                   help="topic to publish frames on (default: the bag's topic; compressed frames go to a topic "
                        "ending in /compressed, appended when missing)")
    q.add_argument("--timeout", type=float, default=30.0, help="seconds to wait for an answer (default 30)")
    q.add_argument("--startup-timeout", type=float, default=180.0, help="seconds for the node to come up")
    q.add_argument("--warmup", type=int, default=1, help="warm-up frames before the replay (default 1)")
    q.add_argument("--restamp", action="store_true", help="send with unique stamps (for bags with repeated stamps)")
    q.add_argument("--node-exe", default=None, help="detect_node executable (default: found in the colcon install)")
    q.add_argument("--storage", default="mcap", choices=STORAGES, help="storage of the output bag")
    q.add_argument("--examples", type=int, default=6, help="frames in examples.png (default 6)")
    q.add_argument("--no-progress", action="store_true", help="no progress bar")
    q.set_defaults(func=cmd_bag_eval)
