"""``python -m sdl_core tag``: rank tags for images (human lines, ``--json`` or ``--csv``)."""
from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

from ..engines import EngineError
from ..errors import SDLError
from ..tags import parse_tags
from . import engine
from .common import (EXIT_INTERRUPTED, EXIT_OK, EXIT_SOME_FAILED, Progress, add_model_args, load_tagger, non_negative,
                     positive)
from .xmp import XmpOutput, add_xmp_args, print_written

if TYPE_CHECKING:
    from ..tagger import ImageTags, Tagger
    from ..vocab import Vocabulary

#: On the CPU a batch costs the same per image at any size (ONNX Runtime), so small
#: batches win: the next one is read while this one runs and the pipeline fills sooner
#: (64 photos: 43 img/s at 4, 37 img/s at 16; benchmarks/bench.py section 3).
CPU_BATCH_SIZE = 4
DEVICE_BATCH_SIZE = 16
#: Tags per image when neither --top-k nor --min-score is given.
DEFAULT_TOP_K = 10


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
    engine.check_engine_args(args, {"--json": args.json, "--csv": args.csv, "--write-xmp": args.write_xmp},
                             engine.RAY_OPTIONS + (("out", "--out"),))
    if args.engine == "ray":
        return cmd_tag_ray(args)
    extra = parse_tags(args.tags)
    xmp = XmpOutput(args) if args.write_xmp else None  # bad XMP options fail before the model loads
    inputs = expand_inputs(args.images, exclude=xmp.excluded() if xmp else ())
    from ..optimize import configure_threads
    configure_threads(args.threads)
    tagger = load_tagger(args)
    vocab = _read_vocab(tagger, args.vocab)
    human = not (args.json or args.csv)
    results, errors = [], []
    for path, result in tagger.tag_files(list(inputs), extra_tags=extra, top_k=_top_k(args), vocabulary=vocab,
                                         only_extra=args.only_tags, batch_size=default_batch_size(args)):
        record = None
        if not isinstance(result, SDLError):
            result = above(result, args.min_score)
            result, record = _write_xmp(xmp, path, inputs[path], result)
        if isinstance(result, SDLError):
            errors.append({"image": path, "error": str(result)})
            if human:
                print(f"error: {result}", file=sys.stderr)
            continue
        results.append((result, record))
        for note in (record or {}).get("notes", ()):
            print(f"note: {note}", file=sys.stderr)
        if human and record is not None:
            print_written(path, record, result)
            _print_missing(result, "  ")
        elif human:
            _print_human(result, len(inputs) > 1)
    if args.json:
        json.dump({"model": tagger.name, "results": [_result_dict(r, x) for r, x in results], "errors": errors},
                  sys.stdout, ensure_ascii=False, indent=2)
        print()
    elif args.csv:
        _print_csv([r for r, _ in results], errors)
    return EXIT_SOME_FAILED if errors else EXIT_OK


def cmd_tag_ray(args: argparse.Namespace) -> int:
    """``tag SOURCE... --engine ray --out DIR``: Parquet shards of every photo's vectors and tags
    (or error); the errors and a summary are printed, with the local engine's exit codes."""
    if not args.out:
        raise EngineError("--engine ray writes Parquet shards: name their folder with --out DIR")
    from ..engines.ray_job import run_job
    from ..engines.shards import read_results, shard_files
    from ..engines.sources import tag_items
    items = list({item.key: item for source in args.images for item in tag_items(source)}.values())
    extra = parse_tags(args.tags)
    tagger = load_tagger(args)
    vocab = _read_vocab(tagger, args.vocab)
    next(tagger.tag_files([], extra_tags=extra, vocabulary=vocab, only_extra=args.only_tags), None)  # bad tags
    pool = engine.connect(args, args.threads or 1)
    batch = args.batch_size or (DEVICE_BATCH_SIZE if pool.gpus else CPU_BATCH_SIZE)
    spec = engine.job_spec("tag", args, tagger, batch, extra_tags=tuple(extra), only_extra=args.only_tags,
                           top_k=_top_k(args), min_score=args.min_score,
                           vocab_tags=tuple(vocab.tags) if vocab is not None else None)
    out, progress = Path(args.out), Progress("tagging", enabled=sys.stderr.isatty())
    try:
        job = run_job(items, spec, out, engine.fingerprint(tagger), pool, shard_photos=args.shard_size,
                      progress=progress)
    finally:
        progress.close()
    engine.print_job(job)
    if job.interrupted:
        print(f"interrupted: {len(shard_files(out))} finished shards are kept in {out}; run the same command "
              "again to resume", file=sys.stderr)
        return EXIT_INTERRUPTED
    errors = [e for e in read_results(out, items, columns=["error"]).column("error").to_pylist() if e]
    for error in errors:
        print(f"error: {error}", file=sys.stderr)
    print(f"{out}: {len(items)} photos, {len(items) - len(errors)} tagged, {len(errors)} failed")
    return EXIT_SOME_FAILED if errors else EXIT_OK


def _top_k(args: argparse.Namespace) -> int:
    """--top-k as given; else every tag when --min-score filters, else the default."""
    if args.top_k is not None:
        return args.top_k
    return 0 if args.min_score is not None else DEFAULT_TOP_K


def _write_xmp(xmp: XmpOutput | None, path: str, base: Path, result: ImageTags) -> tuple:
    """(result, what was written) or, when writing failed, (the error, None)."""
    if xmp is None:
        return result, None
    try:
        return result, xmp.write(path, base, result.tags)
    except SDLError as exc:
        return exc, None


def _result_dict(result: ImageTags, xmp_record: dict | None) -> dict:
    data = result.to_dict()
    if xmp_record is not None:
        data["xmp"] = xmp_record
    return data


def above(result: ImageTags, min_score: float | None) -> ImageTags:
    """The result with only the tags scoring at least ``min_score`` (all when None)."""
    return result.above(min_score)


def expand_inputs(items: Sequence[str], exclude: Sequence[Path] = ()) -> dict[str, Path]:
    """Photos of the command line, each with the folder it was given under: a folder's photos
    (recursive, like ``index``; hidden files and ``exclude`` skipped) and files as given."""
    from ..search import IMAGE_SUFFIXES, scan_folder
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


def _print_csv(results: list[ImageTags], errors: list[dict]) -> None:
    """The shown tags (in_top_k 1, rank = place in the list), then the typed tags outside
    them (in_top_k 0, rank = place among all ranked tags)."""
    writer = csv.writer(sys.stdout)
    writer.writerow(["image", "rank", "tag", "score", "seen", "principal", "typed", "approximate", "in_top_k"])
    for r in results:
        rows = [(rank, t, 1) for rank, t in enumerate(r.tags, 1)] + [(t.rank, t, 0) for t in r.typed_outside]
        for rank, t, shown in rows:
            writer.writerow([r.image, rank, t.tag, f"{t.score:.6f}", int(t.seen), t.principal, int(t.typed),
                             int(t.approximate), shown])
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
    _print_missing(result, indent)


def _print_missing(result: ImageTags, indent: str) -> None:
    """The typed tags the list does not show: outside the top-k (with rank and score), or without a vector."""
    outside = result.typed_outside
    if outside:
        listed = ", ".join(f"{t.display} (#{t.rank}, {t.score:.4f})" for t in outside)
        print(f"{indent}your tags outside the top {len(result.tags)} (of {result.ranked}): {listed}")
    if result.not_in_vocabulary:
        print(f"{indent}not in vocabulary: {', '.join(result.not_in_vocabulary)}")


def add_commands(sub: argparse._SubParsersAction) -> None:
    tag = sub.add_parser("tag", help="tag images", description="Rank tags for images; unseen tags print as *tag*.")
    tag.add_argument("images", nargs="+", metavar="IMAGE_OR_FOLDER",
                     help="photos, or folders (their photos, recursively)")
    add_model_args(tag)
    tag.add_argument("--tags", default="", help='extra tags, comma-separated: "hot dog, espresso"')
    tag.add_argument("--only-tags", action="store_true", help="rank only the --tags, not the model's vocabulary")
    tag.add_argument("--vocab", help="text file of tags (one per line) to rank instead of the model's vocabulary")
    tag.add_argument("--top-k", type=non_negative, default=None,
                     help=f"tags per image; 0 = all (default {DEFAULT_TOP_K}, or all with --min-score)")
    tag.add_argument("--min-score", type=float, default=None, metavar="S",
                     help="only tags scoring at least S (scores are the model's; see a --json run for their range)")
    fmt = tag.add_mutually_exclusive_group()
    fmt.add_argument("--json", action="store_true", help="print one JSON object")
    fmt.add_argument("--csv", action="store_true", help="print CSV rows")
    tag.add_argument("--batch-size", type=positive, default=None,
                     help=f"images per forward pass (default {CPU_BATCH_SIZE} on the CPU, "
                          f"{DEVICE_BATCH_SIZE} on a GPU)")
    tag.add_argument("--threads", type=positive, default=None,
                     help="CPU threads for the model (default: the cores this process may use; "
                          "on a busy shared machine 1 can be much faster)")
    add_xmp_args(tag)
    engine.add_engine_args(tag, results=True)
    tag.set_defaults(func=cmd_tag)
