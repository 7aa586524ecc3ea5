"""Command line: ``python -m train {fit,evaluate,synth,synth-nus-wide,smoke,push} ...``.

Exit codes: 0 success; 2 bad input (one ``error:`` line, no traceback); 130 interrupted.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
from pathlib import Path
from typing import Sequence

from sdl_core.cli import run_command
from sdl_core.errors import SDLError

EXIT_OK = 0


def _add_data_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--images-root", help="folder the COCO file_name paths are relative to (default: the JSON's folder)")
    p.add_argument("--split", help="split.json {seen, unseen}, the authors' cls_ids.pickle, a text file of unseen "
                                   "tags, or unseen tags inline: 'crimson,azure'")


def _add_fit(sub: argparse._SubParsersAction, recipe: dict | None = None) -> None:
    p = sub.add_parser("fit", help="train an SDL model (full fine-tuning, or --head-only on a CPU)",
                       description="Train an SDL model. Writes config.json, log.csv/log.jsonl, best.safetensors "
                                   "(best validation GZSL F1@3), last.safetensors and state.pt (for --resume) "
                                   "into --out. Under torchrun, trains with DDP.")
    p.add_argument("--data", required=True, help="a folder with tags.csv (image,tags; tags split by | or ;), "
                                                 "a COCO .json, a zs_split folder, or nus-wide:ROOT (NUS-WIDE as "
                                                 "distributed: its training list, the paper's 925/81 split)")
    p.add_argument("--recipe", help="a JSON file of these options, or a named recipe (sdl_nus_wide: the paper's); "
                                    "flags given here win")
    p.add_argument("--out", required=True, help="run folder")
    p.add_argument("--val-data", help="validation data in the same format (default: hold out --val-fraction); "
                                      "nus-wide:ROOT = its test list, as the authors chose their checkpoint")
    p.add_argument("--val-fraction", type=float, default=0.1,
                   help="share of --data held out for validation when there is no --val-data (default 0.1; 0 = none)")
    _add_data_args(p)
    p.add_argument("--unseen", dest="split", help="alias of --split: unseen tags (file or comma list)")
    vec = p.add_mutually_exclusive_group()
    vec.add_argument("--word-space", dest="vectors", help="'wordllama' (default), a fastText .bin or a .vec table")
    vec.add_argument("--tag-vectors", dest="vectors", help="the authors' data folder, or a .pickle table whose "
                                                          "columns follow the category order")
    p.add_argument("--word-space-name", dest="space_name", help="name to record for the word space")
    p.add_argument("--backbone", default="tf_efficientnet_lite0", help="timm model name (default tf_efficientnet_lite0;"
                                                                      " the paper: tresnet_m)")
    p.add_argument("--k", type=int, default=7, help="principal vectors per image (default 7)")
    p.add_argument("--pretrained", default="auto", help="backbone ImageNet weights: a .pth file, 'packaged' (weights "
                                                        "shipped in pip packages: tf_efficientnet_lite0/2), 'none', "
                                                        "or 'auto' (packaged when available; default)")
    p.add_argument("--image-size", type=int, help="input size (default: the backbone's, e.g. 224)")
    p.add_argument("--resize", choices=["squash", "shorter_side_crop"], default="squash",
                   help="inference resize recorded in the checkpoint (default squash, as the authors)")
    p.add_argument("--head-only", action="store_true", help="freeze the backbone, cache its pooled features, train "
                                                            "only the head (minutes on a CPU)")
    p.add_argument("--epochs", type=int, help="default 10 (full) / 30 (head-only)")
    p.add_argument("--batch-size", type=int, help="default 32 (full) / 64 (head-only)")
    p.add_argument("--lr", type=float, help="peak OneCycle learning rate, default 2.5e-5 (full) / 2e-3 (head-only)")
    p.add_argument("--weight-decay", type=float, default=3e-4, help="Adam weight decay, not on bias/norm (3e-4)")
    p.add_argument("--lam", type=float, default=0.01, help="weight of the principal-vector variance term (0.01)")
    p.add_argument("--ema", type=float, default=0.0, help="EMA decay of the weights, e.g. 0.9997 (0 = off)")
    p.add_argument("--clip-grad", type=float, default=0.0, help="max gradient norm (0 = off)")
    p.add_argument("--amp", choices=["auto", "on", "off"], default="auto", help="mixed precision (auto = on CUDA)")
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:1, ... (auto = cuda when available)")
    p.add_argument("--workers", type=int, default=2, help="data-loading processes (default 2)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--steps-per-epoch", type=int, help="cap on steps per epoch (quick trials)")
    p.add_argument("--crop-scale", type=float, default=0.5, help="random resized crop min area (1 = plain resize)")
    p.add_argument("--randaugment", type=int, default=9, help="RandAugment magnitude (0 = off)")
    p.add_argument("--cutout", type=float, default=0.5, help="probability of random erasing (0 = off)")
    p.add_argument("--cutout-box", type=float, default=0.0, help="the authors' Cutout: a random-colour box of this "
                                                                 "share of the side on every image (0 = off; 0.5)")
    p.add_argument("--no-flip", dest="flip", action="store_false", help="no random horizontal flip (the authors')")
    p.add_argument("--cache-dir", help="feature cache for --head-only (default: features/ under "
                                       "$SDL_TAGGER_CACHE or ~/.cache/sdl-tagger)")
    p.add_argument("--save-every", type=int, help="write last.safetensors and state.pt every N epochs (and at the "
                                                  "end); default 1 (full) / 10 (head-only)")
    p.add_argument("--best-metric", default="gzsl_F1@3", help="validation metric that picks best.safetensors: "
                                                             "{gzsl,zsl}_{F1@3,F1@5,mAP,P@3,...} (default gzsl_F1@3, "
                                                             "as the authors)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its state.pt")
    p.add_argument("--name", default="", help="model name recorded in the checkpoint")
    p.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bars")
    p.set_defaults(func=cmd_fit, vectors="wordllama")
    if recipe:
        p.set_defaults(**recipe)


def cmd_fit(args: argparse.Namespace) -> int:
    from .fit import FitOptions, fit
    fields = FitOptions.__dataclass_fields__
    options = FitOptions(**{k: v for k, v in vars(args).items() if k in fields})
    result = fit(options)
    last = result.history[-1] if result.history else {}
    summary = {k: last[k] for k in ("epoch", "train_loss", "val_gzsl_mAP", "val_gzsl_F1@3", "val_zsl_mAP",
                                    "val_zsl_F1@3") if k in last}
    if int(os.environ.get("RANK", "0")) == 0:
        print(f"wrote {result.out}: best {result.best.name if result.best else '-'}, "
              f"last {result.last.name if result.last else '-'}; last epoch {json.dumps(summary)}")
    return EXIT_OK


def _add_evaluate(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("evaluate", help="ZSL/GZSL mAP and P/R/F1@3,5 of a model on labelled data (NUS-WIDE: "
                                        "the paper's protocol)",
                       description="Rank the model's tags on every image of --data; ZSL ranks only unseen tags on "
                                   "images with an unseen label, GZSL ranks all tags. With --data nus-wide:ROOT: "
                                   "any model sdl_core loads, the paper's 925/81 split on the test list, the paper's "
                                   "numbers beside, backbone outputs cached.")
    p.add_argument("--checkpoint", required=True, help="one of our .safetensors checkpoints; with nus-wide data, any "
                                                       "model name or path sdl_core loads")
    p.add_argument("--data", required=True, help="a folder with tags.csv, a COCO .json, a zs_split folder (val), "
                                                 "or nus-wide:ROOT[:test|:train]")
    _add_data_args(p)
    p.add_argument("--out", help="JSON results file (default: <checkpoint>.eval.json; nus-wide: none)")
    p.add_argument("--random-baseline", action="store_true", help="also report random scores (mean of 10 draws)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--device", default="auto", help="cpu, cuda, ... (auto = cuda when available)")
    p.add_argument("--workers", type=int, help="image-decoding processes (default: 0; nus-wide on a GPU: up to 8)")
    p.add_argument("--amp", choices=["auto", "on", "off"], default="auto", help="nus-wide: mixed precision "
                                                                               "(auto = on CUDA)")
    p.add_argument("--cache-dir", help="nus-wide: feature cache (default: features/ under $SDL_TAGGER_CACHE or "
                                       "~/.cache/sdl-tagger)")
    p.add_argument("--word-space", help="nus-wide: the model's word space for tags its vocabulary lacks "
                                        "('wordllama', a fastText .bin/.vec)")
    p.add_argument("--authors-data", help="the authors' data folder (classes.pickle...): to load their .pth, and to "
                                          "check the split against their files")
    p.add_argument("--no-progress", dest="progress", action="store_false")
    p.set_defaults(func=cmd_evaluate)


def cmd_evaluate(args: argparse.Namespace) -> int:
    if args.data.lower().startswith("nus-wide:"):
        return cmd_evaluate_nus_wide(args)
    from .evaluate import evaluate_checkpoint, report, write_json
    evaluation = evaluate_checkpoint(args.checkpoint, args.data, args.images_root, args.split, args.batch_size,
                                     args.device, args.workers or 0, args.random_baseline, args.progress)
    print(report(evaluation))
    out = Path(args.out) if args.out else Path(args.checkpoint).with_suffix(".eval.json")
    write_json(evaluation, out, {"checkpoint": str(args.checkpoint), "data": str(args.data)})
    print(f"wrote {out}")
    return EXIT_OK


def cmd_evaluate_nus_wide(args: argparse.Namespace) -> int:
    from .nus_wide_eval import evaluate_nus_wide, report_nus_wide, write_nus_json
    if args.split or args.random_baseline:
        raise SDLError("--split and --random-baseline do not apply to nus-wide data (the split is the paper's)")
    evaluation = evaluate_nus_wide(args.checkpoint, args.data, args.images_root, args.batch_size, args.device,
                                   args.workers, args.progress, args.cache_dir, args.amp, args.word_space,
                                   args.authors_data)
    print(report_nus_wide(evaluation))
    if args.out:
        print(f"wrote {write_nus_json(evaluation, args.out)}")
    return EXIT_OK


def _add_synth(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("synth", help="write a synthetic zero-shot dataset (coloured shapes; unseen colour words)")
    p.add_argument("out", help="folder to create (train/, val/, test/, unseen.txt)")
    p.add_argument("--images", type=int, default=200, help="images in all (default 200)")
    p.add_argument("--size", type=int, default=96, help="image side in pixels (default 96)")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=cmd_synth)


def cmd_synth(args: argparse.Namespace) -> int:
    from .synthetic import make_colour_dataset
    if args.images < 4 or not 16 <= args.size <= 2048:
        raise SDLError("--images must be >= 4 and --size within 16..2048")
    paths = make_colour_dataset(args.out, args.images, args.size, args.seed)
    print(" ".join(f"{k}={v}" for k, v in paths.items()))
    return EXIT_OK


def _add_synth_nus_wide(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("synth-nus-wide", help="write a miniature NUS-WIDE tree in the distributed file formats",
                       description="Coloured-shape images with the NUS-WIDE folder layout and file formats: "
                                   "user tags, concepts (some also tags), images missing or corrupt.")
    p.add_argument("out", help="folder to create")
    p.add_argument("--images", type=int, default=40, help="listed images in all (default 40)")
    p.add_argument("--size", type=int, default=48, help="image side in pixels (default 48)")
    p.add_argument("--missing", type=int, default=3, help="listed images not written (default 3)")
    p.add_argument("--corrupt", type=int, default=2, help="images written broken (default 2)")
    p.add_argument("--labels", choices=["split", "all"], default="split",
                   help="split: Train/Test tag and label files (+ the all-image ones); all: only AllTags1k.txt "
                        "and Groundtruth/AllLabels")
    p.add_argument("--real-names", help="the authors' data folder: use their 1006 tag names (random labels)")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=cmd_synth_nus_wide)


def cmd_synth_nus_wide(args: argparse.Namespace) -> int:
    from .nus_wide_synth import make_nus_wide
    if args.images < 8 or not 16 <= args.size <= 2048 or min(args.missing, args.corrupt) < 0 \
            or args.missing + args.corrupt > args.images // 2:
        raise SDLError("--images must be >= 8, --size within 16..2048, and --missing + --corrupt at most half "
                       "the images")
    if args.real_names and not (Path(args.real_names) / "classes.pickle").is_file():
        raise SDLError(f"--real-names {args.real_names}: no classes.pickle there (the authors' NUS_WIDE folder)")
    made = make_nus_wide(args.out, args.images, args.size, args.seed, args.missing, args.corrupt, args.labels,
                         args.real_names)
    listed = sum(len(t.names) for t in made.splits.values())
    print(f"wrote {made.root}: {len(made.tags_1k)} tags, {len(made.concepts)} concepts, {listed} listed images "
          f"({sum(len(t.missing) for t in made.splits.values())} missing, "
          f"{sum(len(t.corrupt) for t in made.splits.values())} corrupt); use --data nus-wide:{made.root}")
    return EXIT_OK


def _add_smoke(sub: argparse._SubParsersAction, recipe: dict | None = None) -> None:
    p = sub.add_parser("smoke", help="throughput check of full training on synthetic batches (see gpu_smoke.sh)")
    p.add_argument("--recipe", help="take backbone, K, batch, image size, AMP, EMA, lr, lambda, weight decay and the "
                                    "augmentation from a recipe (e.g. sdl_nus_wide); flags given here win")
    p.add_argument("--backbone", default="tresnet_m")
    p.add_argument("--k", type=int, default=7)
    p.add_argument("--dim", type=int, default=300)
    p.add_argument("--tags", type=int, default=925)
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--warmup", type=int, default=10)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--image-size", type=int, default=224)
    p.add_argument("--device", default="auto")
    p.add_argument("--amp", choices=["auto", "on", "off"], default="auto")
    p.add_argument("--ema", type=float, default=0.0, help="EMA decay (0 = off)")
    p.add_argument("--lr", type=float, default=1e-4)
    p.add_argument("--lam", type=float, default=0.01)
    p.add_argument("--weight-decay", type=float, default=3e-4)
    p.add_argument("--loader-workers", type=int, default=0, help="also measure decoding + the training "
                                                                 "augmentation with this many processes (0 = skip)")
    p.add_argument("--json", help="also write the result to this JSON file")
    p.set_defaults(func=cmd_smoke)
    if recipe:
        p.set_defaults(**recipe)


def cmd_smoke(args: argparse.Namespace) -> int:
    from .errors import RunError
    from .smoke import loader_rate, run_smoke
    if min(args.steps, args.batch_size, args.k, args.dim, args.tags) < 1 or args.warmup < 0:
        raise RunError("--steps, --batch-size, --k, --dim and --tags must be >= 1")
    if args.amp == "on" and not args.device.startswith("cuda"):
        raise RunError("--amp on needs --device cuda")
    result = run_smoke(args.backbone, args.steps, args.batch_size, args.image_size, args.k, args.dim, args.tags,
                       args.device, args.amp, args.warmup, args.lr, ema=args.ema, lam=args.lam,
                       weight_decay=args.weight_decay)
    if args.loader_workers > 0:
        from .backbones import preprocess_for
        from .datasets import train_transform
        from .fit import FitOptions
        aug = {k: getattr(args, k, FitOptions.__dataclass_fields__[k].default)
               for k in ("crop_scale", "randaugment", "cutout", "flip", "cutout_box")}
        transform = train_transform(preprocess_for(args.backbone, args.image_size), **aug)
        result.loader_images_per_s = loader_rate(transform, args.loader_workers, args.batch_size)
        result.loader_workers = args.loader_workers
    text = json.dumps(result.to_dict())
    print(text)
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(text + "\n")
    return EXIT_OK


def _add_push(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("push", help="upload a run's best checkpoint to the Hugging Face Hub, with a model card",
                       description="Upload RUN_DIR/best.safetensors as sdl_tagger.safetensors with a generated "
                                   "README.md (model, vocabulary, measured quality) in one commit; load it back "
                                   "with --model hf-hub:OWNER/REPO. Needs a write token (HF_TOKEN or "
                                   "`hf auth login`); HF_ENDPOINT names another Hub.")
    p.add_argument("run_dir", help="a run folder written by `python -m train fit`")
    p.add_argument("repo", help="OWNER/REPO on the Hub (created if missing)")
    p.add_argument("--checkpoint", default="best.safetensors", help="file in RUN_DIR to push (default best)")
    p.add_argument("--private", action="store_true", help="create the repository private")
    p.add_argument("--message", help="commit message")
    p.set_defaults(func=cmd_push)


def cmd_push(args: argparse.Namespace) -> int:
    from .push import push_run
    url = push_run(args.run_dir, args.repo, private=args.private, checkpoint=args.checkpoint, message=args.message)
    print(f"pushed {Path(args.run_dir) / args.checkpoint} to {args.repo}: {url}")
    print(f"load it with: python -m sdl_core tag photo.jpg --model hf-hub:{args.repo}")
    return EXIT_OK


def build_parser(recipe: dict | None = None) -> argparse.ArgumentParser:
    """Every ``python -m train`` command and its flags; ``recipe`` (fit options) becomes the
    defaults of ``fit`` and ``smoke``."""
    parser = argparse.ArgumentParser(prog="python -m train", description="Train and evaluate SDL zero-shot taggers.")
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress to stderr")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_fit(sub, recipe)
    for add in (_add_evaluate, _add_synth, _add_synth_nus_wide, _add_push):
        add(sub)
    _add_smoke(sub, recipe)
    return parser


def _with_recipe(args: argparse.Namespace, argv: Sequence[str] | None) -> int:
    """Parse again with the recipe's options as defaults (so typed flags still win), then run."""
    if getattr(args, "recipe", None):
        from .fit import FitOptions
        from .recipe import load_recipe
        args = build_parser(load_recipe(args.recipe, set(FitOptions.__dataclass_fields__))).parse_args(argv)
    return args.func(args)


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; bad input is one ``error:`` line and exit code 2 (see ``sdl_core.cli.run_command``)."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(message)s")
    return run_command(lambda parsed: _with_recipe(parsed, argv), args)
