"""The ``satsam-train`` command: the parser and the entry point.

The subcommands live in :mod:`.data_commands` and :mod:`.train_commands`; each parses
its arguments and calls library functions. The command line as typed is handed to
them as ``args.command_line`` (it goes into provenance).
"""

from __future__ import annotations

import argparse
import sys
from typing import List, Optional


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="satsam-train", description="Training side of satsam_ros.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    _add_data_commands(sub)
    _add_training_commands(sub)
    return parser


def _add_data_commands(sub) -> None:
    """synth, pseudo-label, patches, import-yolo (defined in data_commands.py)."""
    from . import data_commands

    data_commands.add_synth(sub)
    data_commands.add_pseudo_label(sub)
    data_commands.add_patches(sub)
    data_commands.add_import_yolo(sub)


def _add_training_commands(sub) -> None:
    """fit, tune-threshold, evaluate, mine, pipeline (defined in train_commands.py)."""
    from . import train_commands

    train_commands.add_fit(sub)
    train_commands.add_tune_threshold(sub)
    train_commands.add_evaluate(sub)
    train_commands.add_mine(sub)
    train_commands.add_pipeline(sub)


def main(argv: Optional[List[str]] = None) -> int:
    """Run ``satsam-train`` with ``argv`` (default: the process's arguments)."""
    from .report import command_line

    args = make_parser().parse_args(argv)
    args.command_line = command_line(sys.argv if argv is None else ["satsam-train", *argv])
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
