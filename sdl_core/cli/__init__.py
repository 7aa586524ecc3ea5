"""Command line: ``python -m sdl_core <command> ...``, one module per command group.

Exit codes: 0 success; 1 some inputs failed (reported, the rest processed);
2 usage errors (bad flags, unknown model, bad tags or checkpoint); 130 interrupted.
Command modules import the library inside their commands, so ``--help`` and usage
errors never pay for torch.
"""
from __future__ import annotations

import argparse
import logging
from typing import Sequence

from . import evaluate, models, official, search, tag
from .common import EXIT_INTERRUPTED, EXIT_OK, EXIT_SOME_FAILED, EXIT_USAGE, add_model_args, run_command

__all__ = ["EXIT_INTERRUPTED", "EXIT_OK", "EXIT_SOME_FAILED", "EXIT_USAGE", "add_model_args", "build_parser",
           "main", "run_command"]

#: Each adds its sub-commands with ``add_commands(subparsers)``, in this order.
COMMAND_GROUPS = (tag, official, models, evaluate, search)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m sdl_core",
                                     description="Zero-shot multi-label image tagging (Semantic Diversity Learning).")
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress to stderr")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for group in COMMAND_GROUPS:
        group.add_commands(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(message)s")
    return run_command(args.func, args)
