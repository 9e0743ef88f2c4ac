"""Command-line options several ``satsam`` commands share (no command imports another for them)."""

from __future__ import annotations


def add_cascade_args(p, default: str = "auto") -> None:
    """``--cascade``, ``--cascade-margin`` and ``--cascade-max-patches`` (satsam detect,
    satsam demo; parse the first
    with :func:`satsam_ros.core.detector.parse_cascade`)."""
    from ..core.detector import CASCADE_CHOICES, DEFAULT_CASCADE_MARGIN, DEFAULT_COARSE_SIZE

    p.add_argument("--cascade", default=default, choices=CASCADE_CHOICES,
                   help="coarse to fine for S above the coarse size: run the coarse grid first and only the S "
                        "patches under what it finds (auto: the checkpoint's setting for this size, else off; off: "
                        f"full tiling; on: {DEFAULT_COARSE_SIZE} first; or the coarse size; default {default})")
    p.add_argument("--cascade-margin", type=int, default=None, metavar="PIXELS",
                   help="input-frame pixels added around each coarse proposal (default: the checkpoint's, else "
                        f"{DEFAULT_CASCADE_MARGIN})")
    p.add_argument("--cascade-max-patches", type=int, default=None, metavar="N",
                   help="most S patches a cascaded frame runs, those under the strongest coarse proposals first "
                        "(0: no cap; default: the checkpoint's, else 0)")
