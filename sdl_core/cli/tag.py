"""``python -m sdl_core tag``: rank tags for images (human lines, ``--json`` or ``--csv``)."""
from __future__ import annotations

import argparse
import csv
import json
import sys
from typing import TYPE_CHECKING

from ..errors import SDLError
from ..tags import parse_tags
from .common import EXIT_OK, EXIT_SOME_FAILED, add_model_args, load_tagger, non_negative, positive

if TYPE_CHECKING:
    from ..tagger import ImageTags, Tagger
    from ..vocab import Vocabulary

#: On the CPU a batch costs the same per image at any size (ONNX Runtime), so small
#: batches win: the next one is read while this one runs and the pipeline fills sooner
#: (64 photos: 43 img/s at 4, 37 img/s at 16; benchmarks/bench.py section 3).
CPU_BATCH_SIZE = 4
DEVICE_BATCH_SIZE = 16


def default_batch_size(args: argparse.Namespace) -> int:
    if args.batch_size is not None:
        return args.batch_size
    return CPU_BATCH_SIZE if str(args.device).startswith("cpu") else DEVICE_BATCH_SIZE


def _read_vocab(tagger: Tagger, path: str | None) -> Vocabulary | None:
    if not path:
        return None
    from ..vocab import Vocabulary
    return Vocabulary.from_text_file(path, tagger.word_space, seen=tagger.vocabulary.seen_tags)


def cmd_tag(args: argparse.Namespace) -> int:
    extra = parse_tags(args.tags)
    from ..optimize import configure_threads
    configure_threads(args.threads)
    tagger = load_tagger(args)
    vocab = _read_vocab(tagger, args.vocab)
    human = not (args.json or args.csv)
    results, errors = [], []
    for path, result in tagger.tag_files(args.images, extra_tags=extra, top_k=args.top_k, vocabulary=vocab,
                                         only_extra=args.only_tags, batch_size=default_batch_size(args)):
        if isinstance(result, SDLError):
            errors.append({"image": path, "error": str(result)})
            if human:
                print(f"error: {result}", file=sys.stderr)
        else:
            results.append(result)
            if human:
                _print_human(result, len(args.images) > 1)
    if args.json:
        json.dump({"model": tagger.name, "results": [r.to_dict() for r in results], "errors": errors},
                  sys.stdout, ensure_ascii=False, indent=2)
        print()
    elif args.csv:
        _print_csv(results, errors)
    return EXIT_SOME_FAILED if errors else EXIT_OK


def _print_csv(results: list[ImageTags], errors: list[dict]) -> None:
    writer = csv.writer(sys.stdout)
    writer.writerow(["image", "rank", "tag", "score", "seen", "principal", "typed", "approximate"])
    for r in results:
        for rank, t in enumerate(r.tags, 1):
            writer.writerow([r.image, rank, t.tag, f"{t.score:.6f}", int(t.seen), t.principal, int(t.typed),
                             int(t.approximate)])
    for e in errors:
        print(f"error: {e['image']}: {e['error']}", file=sys.stderr)


def _print_human(result: ImageTags, with_header: bool) -> None:
    if with_header:
        print(f"{result.image}:")
    indent = "  " if with_header else ""
    width = max((len(t.display) for t in result.tags), default=0)
    for t in result.tags:
        note = "  (typed)" if t.typed else ""
        if t.approximate:
            note += "  (approximate vector)"
        print(f"{indent}{t.display:<{width}}  {t.score:8.4f}{note}")
    if result.not_in_vocabulary:
        print(f"{indent}not in vocabulary: {', '.join(result.not_in_vocabulary)}")


def add_commands(sub: argparse._SubParsersAction) -> None:
    tag = sub.add_parser("tag", help="tag images", description="Rank tags for images; unseen tags print as *tag*.")
    tag.add_argument("images", nargs="+", metavar="IMAGE")
    add_model_args(tag)
    tag.add_argument("--tags", default="", help='extra tags, comma-separated: "hot dog, espresso"')
    tag.add_argument("--only-tags", action="store_true", help="rank only the --tags, not the model's vocabulary")
    tag.add_argument("--vocab", help="text file of tags (one per line) to rank instead of the model's vocabulary")
    tag.add_argument("--top-k", type=non_negative, default=10, help="tags per image; 0 = all (default 10)")
    fmt = tag.add_mutually_exclusive_group()
    fmt.add_argument("--json", action="store_true", help="print one JSON object")
    fmt.add_argument("--csv", action="store_true", help="print CSV rows")
    tag.add_argument("--batch-size", type=positive, default=None,
                     help=f"images per forward pass (default {CPU_BATCH_SIZE} on the CPU, "
                          f"{DEVICE_BATCH_SIZE} on a GPU)")
    tag.add_argument("--threads", type=positive, default=None,
                     help="CPU threads for the model (default: the cores this process may use; "
                          "on a busy shared machine 1 can be much faster)")
    tag.set_defaults(func=cmd_tag)
