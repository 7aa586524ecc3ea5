"""``--engine ray``: the options ``tag`` and ``index`` share, and their Ray paths' common steps.

Ray and pyarrow load only when ``--engine ray`` runs (:mod:`sdl_core.engines`); without them
that one option fails with a line naming ``requirements-ray.txt``, and the local engine, the
default, never needs them.
"""
from __future__ import annotations

import argparse
import os
import shutil
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from ..engines import ENGINES, RAY_REQUIREMENTS, EngineError
from .common import positive

if TYPE_CHECKING:
    from ..engines.ray_job import JobReport, Pool
    from ..engines.worker import JobSpec
    from ..search.update import EncodeFn
    from ..tagger import Tagger

#: The options only the Ray engine reads (dest, flag).
RAY_OPTIONS = (("address", "--address"), ("workers", "--workers"), ("shard_size", "--shard-size"))


def add_engine_args(parser: argparse.ArgumentParser, results: bool = False) -> None:
    """``--engine``, ``--address``, ``--workers``, ``--shard-size`` (and ``--out DIR`` with ``results``)."""
    group = parser.add_argument_group(f"distributed engine (needs: pip install -r {RAY_REQUIREMENTS})")
    group.add_argument("--engine", choices=ENGINES, default="local",
                       help="local: this process (default); ray: a pool of Ray actors, one model each, "
                            "writing Parquet shards (a killed worker is retried, a rerun resumes)")
    group.add_argument("--address", help="the Ray cluster to run on, e.g. 10.0.0.5:6379 (`ray start --head` "
                                         "prints it); default: $RAY_ADDRESS, else a cluster on this machine")
    group.add_argument("--workers", type=positive, help="Ray actors, one model each (default: one per GPU of "
                                                        "the cluster, else one per CPU core)")
    group.add_argument("--shard-size", type=positive, metavar="N",
                       help="photos per Parquet shard, the unit of retry and resume (default: at most 256, "
                            "and at least 4 shards per worker)")
    if results:
        group.add_argument("--out", metavar="DIR", help="with --engine ray: the folder of Parquet result shards")


def check_engine_args(args: argparse.Namespace, local_only: dict[str, object],
                      ray_only: tuple[tuple[str, str], ...] = RAY_OPTIONS) -> None:
    """Refuse options of the other engine: ``local_only`` maps a local option's flag to its value,
    ``ray_only`` lists (dest, flag) of the Ray engine's."""
    if args.engine == "ray":
        used = [flag for flag, value in local_only.items() if value]
        if used:
            raise EngineError(f"{', '.join(used)}: only with the local engine (--engine ray writes Parquet "
                              "shards; read them with sdl_core.engines.shards.read_results)")
        return
    used = [flag for dest, flag in ray_only if getattr(args, dest, None) is not None]
    if used:
        raise EngineError(f"{', '.join(used)}: only with --engine ray")


def worker_path(value: str | None) -> str | None:
    """A path given on this machine as workers must read it (absolute); names stay as given."""
    return str(Path(value).resolve()) if value and Path(value).exists() else value


def job_spec(kind: str, args: argparse.Namespace, tagger: Tagger, batch_size: int, **request) -> JobSpec:
    """What the workers load: the driver's model, by the name or absolute path that found it."""
    from ..engines.worker import FAULT_ENV, JobSpec
    source = tagger.source.value if tagger.source is not None else args.model
    return JobSpec(kind, source, data_dir=worker_path(args.data_dir), word_space=worker_path(args.word_space),
                   batch_size=batch_size, fault=os.environ.get(FAULT_ENV) or None, **request)


def connect(args: argparse.Namespace, threads: int = 1) -> Pool:
    from ..engines.ray_job import connect as ray_connect
    return ray_connect(args.address, args.workers, threads, verbose=args.verbose)


def fingerprint(tagger: Tagger) -> str:
    from ..search import model_identity
    return model_identity(tagger).fingerprint


def print_job(job: JobReport) -> None:
    print(f"ray: {job.describe()}", file=sys.stderr)


def work_folder(index: Path) -> Path:
    """Where ``index --engine ray`` keeps its shards until the index is written (hidden: scans skip it)."""
    return index.parent / f".{index.name}.shards"


def index_encoder(args: argparse.Namespace, tagger: Tagger, out: Path) -> EncodeFn:
    """The encoding step of ``index --engine ray`` (connects only when there are photos to encode)."""
    from ..engines.ray_job import index_encoder as encoder
    spec = job_spec("index", args, tagger, args.batch_size)
    return encoder(spec, work_folder(out), fingerprint(tagger), start=lambda: connect(args), on_report=print_job,
                   shard_photos=args.shard_size)


def drop_work_folder(out: Path) -> None:
    """The index holds every finished photo now: its shards are no longer needed."""
    shutil.rmtree(work_folder(out), ignore_errors=True)


__all__ = ["RAY_OPTIONS", "add_engine_args", "check_engine_args", "connect", "drop_work_folder", "fingerprint",
           "index_encoder", "job_spec", "print_job", "work_folder", "worker_path"]
