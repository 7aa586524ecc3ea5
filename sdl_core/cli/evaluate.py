"""``python -m sdl_core evaluate-dev``: a model's tag quality on the labelled dev photos."""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Mapping

from .common import EXIT_OK, add_model_args, load_tagger

#: Where the dev set is looked for when ``--eval-dir`` is not given: this variable, else
#: ``../shared/eval`` from the current folder (the checkout's root, as in the README).
EVAL_DIR_VARIABLE = "SDL_EVAL_DIR"


def default_eval_dir(env: Mapping[str, str] = os.environ) -> Path:
    return Path(env.get(EVAL_DIR_VARIABLE) or Path("..") / "shared" / "eval")


def cmd_evaluate_dev(args: argparse.Namespace) -> int:
    from ..evaluate import load_dev_set, predict, score
    dev = load_dev_set(args.eval_dir)  # fail fast, before loading a model
    tagger = load_tagger(args)
    _, report = score(dev, predict(tagger, dev), args.out, args.per_concept)
    print(f"model: {tagger.name}")
    sys.stdout.write(report)
    if args.out:
        print(f"predictions written to {args.out}")
    return EXIT_OK


def add_commands(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("evaluate-dev", help="score a model on the labelled dev photos (../shared/eval)",
                            description="Tag the dev photos with the NUS-81 concepts and all typed tags, "
                                        "then print the dev set's own metrics (mAP, F1@3, typed AUCs).")
    add_model_args(parser)
    parser.add_argument("--eval-dir", type=Path, default=default_eval_dir(),
                        help=f"the dev evaluation folder (default: ${EVAL_DIR_VARIABLE}, else ../shared/eval "
                             "from the current folder)")
    parser.add_argument("--out", help="also write the predictions JSON here")
    parser.add_argument("--per-concept", action="store_true", help="print the AP of each NUS-81 concept")
    parser.set_defaults(func=cmd_evaluate_dev)
