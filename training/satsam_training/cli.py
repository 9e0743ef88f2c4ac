"""The ``satsam-train`` command."""

from __future__ import annotations

import argparse
import sys
from typing import List, Optional


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="satsam-train", description="Training side of satsam_ros.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    args = make_parser().parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
