"""Command line: ``python -m sdl_core <command> ...``.

Exit codes: 0 success; 1 some inputs failed (reported, the rest processed);
2 usage errors (bad flags, unknown model, bad tags or checkpoint).
"""
from __future__ import annotations

import argparse
import csv
import importlib
import json
import logging
import sys
from dataclasses import replace
from pathlib import Path
from typing import Callable, Sequence

from .cli_xmp import XmpOutput, add_xmp_args, print_written
from .errors import SDLError
from .registry import DEFAULT_MODEL, get_model, list_models
from .tags import parse_tags

EXIT_OK, EXIT_SOME_FAILED, EXIT_USAGE = 0, 1, 2
#: Tags per image when neither --top-k nor --min-score is given.
DEFAULT_TOP_K = 10

#: Modules that add sub-commands: each has ``add_commands(subparsers)`` that sets
#: ``func`` on its parsers. Kept as names so ``tag`` never pays for their imports.
COMMAND_MODULES: tuple[str, ...] = ("sdl_core.evaluate", "sdl_core.search")


def _add_model_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", default=DEFAULT_MODEL,
                        help="registered model name, our .safetensors checkpoint, or the authors' .pth "
                             f"(with --data-dir); default: {DEFAULT_MODEL}")
    parser.add_argument("--data-dir", help="the authors' data folder, for their .pth checkpoint")
    parser.add_argument("--word-space", help="'wordllama', or the fastText .bin/.vec the model was trained with "
                                             "(lets typed tags outside the vocabulary be embedded)")
    parser.add_argument("--device", default="cpu", help="torch device, e.g. cpu, cuda, cuda:1, mps")


def load_tagger(args: argparse.Namespace):
    from .tagger import Tagger  # heavy imports only when a command needs a model
    return Tagger.from_pretrained(args.model, data_dir=args.data_dir, word_space=args.word_space,
                                  device=args.device)


def _read_vocab(tagger, path: str | None):
    if not path:
        return None
    from .vocab import Vocabulary
    return Vocabulary.from_text_file(path, tagger.word_space, seen=tagger.vocabulary.seen_tags)


#: On the CPU a batch costs the same per image at any size (ONNX Runtime), so small
#: batches win: the next one is read while this one runs and the pipeline fills sooner
#: (64 photos: 43 img/s at 4, 37 img/s at 16; benchmarks/bench.py section 3).
CPU_BATCH_SIZE = 4
DEVICE_BATCH_SIZE = 16


def default_batch_size(args: argparse.Namespace) -> int:
    if args.batch_size is not None:
        return args.batch_size
    return CPU_BATCH_SIZE if str(args.device).startswith("cpu") else DEVICE_BATCH_SIZE


def cmd_tag(args: argparse.Namespace) -> int:
    extra = parse_tags(args.tags)
    xmp = XmpOutput(args) if args.write_xmp else None  # bad XMP options fail before the model loads
    inputs = expand_inputs(args.images, exclude=xmp.excluded() if xmp else ())
    from .optimize import configure_threads
    configure_threads(args.threads)
    tagger = load_tagger(args)
    vocab = _read_vocab(tagger, args.vocab)
    quiet = args.json or args.csv
    results, errors = [], []
    for path, result in tagger.tag_files(list(inputs), extra_tags=extra, top_k=_top_k(args), vocabulary=vocab,
                                         only_extra=args.only_tags, batch_size=default_batch_size(args)):
        record = None
        if not isinstance(result, SDLError):
            result = above(result, args.min_score)
            result, record = _write_xmp(xmp, path, inputs[path], result)
        if isinstance(result, SDLError):
            errors.append({"image": path, "error": str(result)})
            if not quiet:
                print(f"error: {result}", file=sys.stderr)
            continue
        results.append((result, record))
        for note in (record or {}).get("notes", ()):
            print(f"note: {note}", file=sys.stderr)
        if quiet:
            continue
        if record is not None:
            print_written(path, record, result)
            _print_missing(result, "  ")
        else:
            _print_human(result, len(inputs) > 1)
    if args.json:
        json.dump({"model": tagger.name, "results": [_result_dict(r, x) for r, x in results], "errors": errors},
                  sys.stdout, ensure_ascii=False, indent=2)
        print()
    elif args.csv:
        writer = csv.writer(sys.stdout)
        writer.writerow(["image", "rank", "tag", "score", "seen", "principal", "typed"])
        for r, _ in results:
            for rank, t in enumerate(r.tags, 1):
                writer.writerow([r.image, rank, t.tag, f"{t.score:.6f}", int(t.seen), t.principal, int(t.typed)])
        for e in errors:
            print(f"error: {e['image']}: {e['error']}", file=sys.stderr)
    return EXIT_SOME_FAILED if errors else EXIT_OK


def _top_k(args: argparse.Namespace) -> int:
    """--top-k as given; else every tag when --min-score filters, else the default."""
    if args.top_k is not None:
        return args.top_k
    return 0 if args.min_score is not None else DEFAULT_TOP_K


def _write_xmp(xmp: XmpOutput | None, path: str, base: Path, result):
    """(result, what was written) or, when writing failed, (the error, None)."""
    if xmp is None:
        return result, None
    try:
        return result, xmp.write(path, base, result.tags)
    except SDLError as exc:
        return exc, None


def _result_dict(result, xmp_record: dict | None) -> dict:
    data = result.to_dict()
    if xmp_record is not None:
        data["xmp"] = xmp_record
    return data


def above(result, min_score: float | None):
    """The result with only the tags scoring at least ``min_score`` (all when None)."""
    if min_score is None:
        return result
    return replace(result, tags=[t for t in result.tags if t.score >= min_score])


def expand_inputs(items: Sequence[str], exclude: Sequence[Path] = ()) -> dict[str, Path]:
    """Photos of the command line, each with the folder it was given under: a folder's photos
    (recursive, like ``index``; hidden files and ``exclude`` skipped) and files as given."""
    from .search import IMAGE_SUFFIXES, scan_folder
    skipped = [Path(e).absolute() for e in exclude]
    out: dict[str, Path] = {}
    for item in items:
        path = Path(item)
        if not path.is_dir():
            out[str(item)] = path.absolute().parent
            continue
        found = [path / e.path for e in scan_folder(path)]
        found = [p for p in found if not any(p.absolute().is_relative_to(s) for s in skipped)]
        if not found:
            raise SDLError(f"{item}: no photos in this folder ({', '.join(sorted(IMAGE_SUFFIXES))})")
        out.update((str(p), path.absolute()) for p in found)
    return out


def _print_human(result, with_header: bool) -> None:
    if with_header:
        print(f"{result.image}:")
    indent = "  " if with_header else ""
    width = max((len(t.display) for t in result.tags), default=0)
    for t in result.tags:
        note = "  (typed)" if t.typed else ""
        print(f"{indent}{t.display:<{width}}  {t.score:8.4f}{note}")
    _print_missing(result, indent)


def _print_missing(result, indent: str) -> None:
    if result.not_in_vocabulary:
        print(f"{indent}not in vocabulary: {', '.join(result.not_in_vocabulary)}")


def cmd_import_official(args: argparse.Namespace) -> int:
    from .checkpoint import import_official
    model, vocab = import_official(args.checkpoint, args.data_dir, args.out)
    print(f"wrote {args.out}: {model.config.backbone}, K={model.config.k}, D={model.config.d}, "
          f"{len(vocab)} tags ({int((~vocab.seen).sum())} unseen)")
    return EXIT_OK


def cmd_download_official(args: argparse.Namespace) -> int:
    from .checkpoint import import_official
    from .download import download_official, sha256_of
    model_path, data_dir = download_official(args.folder)
    print(f"downloaded {model_path} (sha256 {sha256_of(model_path)}) and the vocabulary files into {data_dir}")
    if args.out:
        model, vocab = import_official(model_path, data_dir, args.out)
        print(f"wrote {args.out}: K={model.config.k}, D={model.config.d}, {len(vocab)} tags")
    return EXIT_OK


def cmd_models(args: argparse.Namespace) -> int:
    for name in list_models():
        entry = get_model(name)
        alias = f" (alias of {entry.name})" if entry.name != name else ""
        print(f"{name}{alias}: {entry.description}")
    return EXIT_OK


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m sdl_core",
                                     description="Zero-shot multi-label image tagging (Semantic Diversity Learning).")
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress to stderr")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    tag = sub.add_parser("tag", help="tag images", description="Rank tags for images; unseen tags print as *tag*.")
    tag.add_argument("images", nargs="+", metavar="IMAGE_OR_FOLDER",
                     help="photos, or folders (their photos, recursively)")
    _add_model_args(tag)
    tag.add_argument("--tags", default="", help='extra tags, comma-separated: "hot dog, espresso"')
    tag.add_argument("--only-tags", action="store_true", help="rank only the --tags, not the model's vocabulary")
    tag.add_argument("--vocab", help="text file of tags (one per line) to rank instead of the model's vocabulary")
    tag.add_argument("--top-k", type=_non_negative, default=None,
                     help=f"tags per image; 0 = all (default {DEFAULT_TOP_K}, or all with --min-score)")
    tag.add_argument("--min-score", type=float, default=None, metavar="S",
                     help="only tags scoring at least S (scores are the model's; see a --json run for their range)")
    fmt = tag.add_mutually_exclusive_group()
    fmt.add_argument("--json", action="store_true", help="print one JSON object")
    fmt.add_argument("--csv", action="store_true", help="print CSV rows")
    tag.add_argument("--batch-size", type=_positive, default=None,
                     help=f"images per forward pass (default {CPU_BATCH_SIZE} on the CPU, {DEVICE_BATCH_SIZE} on a GPU)")
    tag.add_argument("--threads", type=_positive, default=None,
                     help="CPU threads for the model (default: the cores this process may use; "
                          "on a busy shared machine 1 can be much faster)")
    add_xmp_args(tag)
    tag.set_defaults(func=cmd_tag)

    imp = sub.add_parser("import-official", help="convert the authors' NUS_mtresnet_224.pth to our format")
    imp.add_argument("checkpoint", help="the authors' .pth file")
    imp.add_argument("data_dir", help="their data folder (classes.pickle, unseen_classes.pickle, wordvec_array.pickle)")
    imp.add_argument("out", help="output .safetensors path")
    imp.set_defaults(func=cmd_import_official)

    dl = sub.add_parser("download-official", help="download the authors' NUS-WIDE model and data (needs a network)")
    dl.add_argument("folder", help="where to put NUS_mtresnet_224.pth and the three .pickle files")
    dl.add_argument("--out", help="also convert to this .safetensors checkpoint")
    dl.set_defaults(func=cmd_download_official)

    models = sub.add_parser("models", help="list registered model names")
    models.set_defaults(func=cmd_models)

    for module in COMMAND_MODULES:
        importlib.import_module(module).add_commands(sub)
    return parser


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be >= 1")
    return value


def _non_negative(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError("must be >= 0")
    return value


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(message)s")
    return run_command(args.func, args)


def run_command(func: Callable[[argparse.Namespace], int], args: argparse.Namespace) -> int:
    """Run a sub-command with the exit-code contract shared by every command line of the
    project: an SDLError is one line on stderr and exit 2, Ctrl-C exits 130."""
    try:
        return func(args)
    except SDLError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # e.g. `| head`
        return EXIT_OK
