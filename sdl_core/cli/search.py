"""``index`` and ``search``: build or update a folder's search index, and query it.

:mod:`sdl_core.search` (torch) is imported by these commands only: other commands and
the demo's flags (which share :mod:`sdl_core.cli.common`) start without it.
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

from ..errors import TagInputError
from ..files import exclusive
from ..registry import DEFAULT_MODEL
from ..tags import parse_tags
from . import engine
from .common import (EXIT_INTERRUPTED, EXIT_OK, EXIT_SOME_FAILED, Progress, add_model_args, load_tagger,
                     positive)

log = logging.getLogger(__name__)


def add_commands(sub: argparse._SubParsersAction) -> None:
    """``index`` and ``search``."""
    from ..search import DEFAULT_INDEX_NAME, MODES
    from ..search.ann import DEFAULT_MIN_PHOTOS, MIN_PHOTOS_ENV
    idx = sub.add_parser("index", help="index a folder of photos for tag search",
                         description="Compute every photo's principal vectors once and store them in an index. "
                                     "Re-running updates only new or changed photos; removed photos drop out. "
                                     f"From {DEFAULT_MIN_PHOTOS:,} photos on (${MIN_PHOTOS_ENV} sets another "
                                     "number) it also writes an approximate index beside it (INDEX.ann), which "
                                     "`search` then uses: only its candidates are scored.")
    idx.add_argument("folder", metavar="SOURCE", help="a folder of photos (recursive), or a list file: one "
                                                      "photo path per line (relative to the list file)")
    add_model_args(idx)
    idx.set_defaults(model=None)
    idx.add_argument("--out", help=f"index file (default: FOLDER/{DEFAULT_INDEX_NAME})")
    idx.add_argument("--batch-size", type=positive, default=16, help="photos per forward pass (default 16)")
    idx.add_argument("--rebuild", action="store_true",
                     help="start a fresh index even if one exists (e.g. built with another model)")
    idx.add_argument("--no-progress", action="store_true", help="no progress bar")
    engine.add_engine_args(idx)
    idx.set_defaults(func=cmd_index)

    srch = sub.add_parser("search", help="find indexed photos by typed tags",
                          description="Rank indexed photos by the model's tag score reduce_k <A_k, w_tag>. "
                                      "--mode any: a photo's score is its best tag (max over tags); "
                                      "--mode all: its weakest tag (min over tags), so every tag must fit.")
    srch.add_argument("index", metavar="INDEX", help=f"index file, or a folder holding {DEFAULT_INDEX_NAME}")
    srch.add_argument("tags", metavar="TAGS", help='comma-separated tags: "dog, beach"')
    srch.add_argument("--top-n", type=positive, default=20, help="photos to list (default 20)")
    srch.add_argument("--mode", choices=MODES, default="any", help="combine several tags (default any)")
    srch.add_argument("--json", action="store_true", help="print one JSON object")
    srch.add_argument("--model", help="check that the index was built with this model (registered name or "
                                      "checkpoint path); never loads the image backbone")
    srch.add_argument("--word-space", help="'wordllama', or the fastText .bin/.vec of the model's word space "
                                           "(embeds tags outside the model's vocabulary)")
    srch.set_defaults(func=cmd_search)


def cmd_index(args: argparse.Namespace) -> int:
    from ..engines.sources import index_source
    from ..search import DEFAULT_INDEX_NAME, SearchIndexError
    engine.check_engine_args(args, {})
    folder, files = index_source(args.folder)
    out = Path(args.out) if args.out else folder / DEFAULT_INDEX_NAME
    with exclusive(out, "search index", SearchIndexError):  # a second `index` run on it fails clearly
        return _index_locked(args, folder, out, files)


def _index_locked(args: argparse.Namespace, folder: Path, out: Path, files: list | None) -> int:
    """``index`` while holding the index's lock: read the old index, update, write.
    ``files``: the photos of a list file (None: the folder's)."""
    from ..search import load_index, update_index
    old = None if args.rebuild or not out.exists() else load_index(out)
    if args.model is None:  # re-running: the model that built the index
        args.model = (old.identity.source if old is not None and old.identity.source else DEFAULT_MODEL)
        args.data_dir = args.data_dir or (old.identity.data_dir if old is not None else None)
    tagger = load_tagger(args)
    data_dir = str(Path(args.data_dir).resolve()) if args.data_dir and tagger.source.is_file else None
    space_source = str(Path(args.word_space).resolve()) if args.word_space and args.word_space != "wordllama" else None
    encode = engine.index_encoder(args, tagger, out) if args.engine == "ray" else None
    progress = Progress("indexing", enabled=not args.no_progress)
    try:
        index, report = update_index(folder, tagger, old, files=files, batch_size=args.batch_size,
                                     source=tagger.source.value, data_dir=data_dir, word_space_source=space_source,
                                     progress=progress, encode=encode)
    finally:
        progress.close()
    index.save(out)
    engine.drop_work_folder(out)
    for path, message in report.failed:
        print(f"unreadable: {path}: {message}", file=sys.stderr)
    print(f"{out}: {len(index)} photos ({len(report.added)} added, {len(report.updated)} updated, "
          f"{len(report.removed)} removed, {report.unchanged} unchanged, {len(report.failed)} unreadable)")
    if index.ann is not None:
        from ..search.ann import sidecar_path
        print(f"{sidecar_path(out)}: approximate index of {index.ann.entries} vectors (searches score only its "
              "candidates)")
    if report.interrupted:
        print("interrupted: the photos done so far are saved; run the same command again to finish",
              file=sys.stderr)
        return EXIT_INTERRUPTED
    return EXIT_SOME_FAILED if report.failed else EXIT_OK


def cmd_search(args: argparse.Namespace) -> int:
    from ..search import load_index, query_space, search, verify_model
    tags = parse_tags(args.tags)
    if not tags:
        raise TagInputError("no tags to search for: type at least one tag, e.g. \"dog, beach\"")
    index = load_index(args.index)
    if args.model:
        verify_model(index, args.model)
    space = query_space(index, args.word_space)
    start = time.perf_counter()
    result = search(index, tags, space, top_n=args.top_n, mode=args.mode)
    log.info("searched %d photos (%s, %d scored) in %.1f ms", result.searched,
             "approximate" if result.approximate else "exact", result.scored, 1000 * (time.perf_counter() - start))
    if args.json:
        json.dump(result.to_dict(), sys.stdout, ensure_ascii=False, indent=2)
        print()
        return EXIT_OK
    for hit in result.hits:
        print(f"{hit.score:9.4f}  {hit.full_path}")
    if not result.hits:
        print("no photos in the index", file=sys.stderr)
    if result.not_in_vocabulary:
        print(f"not in vocabulary: {', '.join(result.not_in_vocabulary)}")
    return EXIT_OK
