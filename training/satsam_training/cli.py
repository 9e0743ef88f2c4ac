"""The ``satsam-train`` command."""

from __future__ import annotations

import argparse
import sys
from typing import List, Optional


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="satsam-train", description="Training side of satsam_ros.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    _add_training_commands(sub)
    return parser


def _add_training_commands(sub) -> None:
    """fit, tune-threshold, evaluate, pipeline (defined in train_commands.py)."""
    from . import train_commands

    train_commands.add_fit(sub)
    train_commands.add_tune_threshold(sub)
    train_commands.add_evaluate(sub)
    train_commands.add_pipeline(sub)


def main(argv: Optional[List[str]] = None) -> int:
    args = make_parser().parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
