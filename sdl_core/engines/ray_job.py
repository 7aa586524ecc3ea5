"""The driver of a distributed job: connect to Ray, plan the shards, run them on Ray Data.

:func:`run_job` runs ``tag --engine ray`` and, through :func:`index_encoder`, the encoding step
of ``index --engine ray`` (the index itself is built by :func:`sdl_core.search.update_index`,
exactly as the local engine builds it). Ray retries a shard whose worker died (Ray Data's actor
pool restarts actors and retries their tasks); the shards already written survive an
interrupted or failed job, and the next run skips their photos.
"""
from __future__ import annotations

import logging
import os
import re
import socket
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Sequence

import torch

from ..files import one_line
from . import EngineError, require_ray
from .shards import open_job, pending, plan, read_results, shard_files, shard_size, vectors_of
from .sources import Item
from .worker import JobSpec, ShardWorker

if TYPE_CHECKING:
    from ..search import FileEntry, UpdateReport
    from ..search.update import EncodeFn

log = logging.getLogger(__name__)

ProgressFn = Callable[[int, int], None]


@dataclass(frozen=True)
class Pool:
    """The actors of a job: how many, and what each reserves (a GPU each when the cluster has GPUs)."""

    workers: int
    cpus: int
    gpus: int

    @property
    def device(self) -> str:
        return "cuda" if self.gpus else "cpu"

    def describe(self) -> str:
        return f"{self.workers} worker{'s' * (self.workers != 1)} ({self.device})"


@dataclass
class JobReport:
    """What one run of a job did: ``reused`` photos were in finished shards, ``encoded`` ran now."""

    photos: int
    reused: int
    encoded: int = 0
    shards: int = 0
    pool: Pool | None = None
    interrupted: bool = False
    seconds: float = 0.0  # the job on the cluster: actors starting, then the shards

    def describe(self) -> str:
        how = f" on {self.pool.describe()}" if self.pool else ""
        return (f"{self.photos} photos{how}: {self.reused} from finished shards, {self.encoded} encoded "
                f"in {self.shards} new shards ({self.seconds:.1f} s)")


def connect(address: str | None, workers: int | None = None, threads: int = 1, verbose: bool = False) -> Pool:
    """Join the cluster at ``address`` (default: ``$RAY_ADDRESS``, else start one on this machine)
    and size the pool: ``workers`` actors, else one per GPU, else one per ``threads`` CPUs."""
    ray = require_ray()
    level = logging.INFO if verbose else logging.ERROR  # Ray logs each start and execution: shown with -v
    logging.getLogger("ray.data").setLevel(logging.INFO if verbose else logging.CRITICAL)  # its errors: ours
    if not ray.is_initialized():
        check_reachable(address or os.environ.get("RAY_ADDRESS"))
        try:
            ray.init(address=address, include_dashboard=False, logging_level=level)
        except (ConnectionError, ValueError, RuntimeError) as exc:
            where = f" at {address}" if address else ""
            raise EngineError(f"cannot start or reach the Ray cluster{where}: {one_line(exc)}") from None
    resources = ray.cluster_resources()
    gpus = int(resources.get("GPU", 0))
    if gpus:
        return Pool(workers or gpus, 1, 1)
    return Pool(workers or max(1, int(resources.get("CPU", 1)) // threads), threads, 0)


_HOST_PORT = re.compile(r"^(?:ray://)?\[?([^\]/]+?)\]?:(\d+)$")
#: Seconds to wait for a cluster's port before saying it is not there (Ray itself retries for minutes).
CONNECT_TIMEOUT_S = 10.0


def check_reachable(address: str | None) -> None:
    """A ``host:port`` that nothing answers on is one clear line now, not minutes of Ray's retries."""
    found = _HOST_PORT.match(address or "")
    if not found:  # none (a cluster started here), "auto", "local"
        return
    try:
        socket.create_connection((found.group(1), int(found.group(2))), timeout=CONNECT_TIMEOUT_S).close()
    except OSError as exc:
        raise EngineError(f"cannot reach the Ray cluster at {address}: {exc.strerror or exc}; is `ray start --head` "
                          "running there, and is the port open?") from None


def run_job(items: Sequence[Item], spec: JobSpec, folder: Path, fingerprint: str, pool: Pool, *,
            shard_photos: int | None = None, discard_other: bool = False,
            progress: ProgressFn | None = None) -> JobReport:
    """Make sure every item has a row in ``folder``'s shards, running only what no finished shard
    holds. Ctrl-C stops early (``interrupted``): the shards written so far stay."""
    folder.mkdir(parents=True, exist_ok=True)
    open_job(folder, spec.settings(fingerprint), discard_other=discard_other)
    todo = pending(items, folder)
    report = JobReport(len(items), len(items) - len(todo), pool=pool)
    if not todo:
        return report
    ray = require_ray()
    ray.data.DataContext.get_current().enable_progress_bars = False
    rows = plan(todo, shard_size(len(todo), pool.workers, shard_photos))
    pool = report.pool = replace(pool, workers=min(pool.workers, len(rows)))  # no idle actors to load
    dataset = ray.data.from_items(rows, override_num_blocks=len(rows))  # a task per shard: what a retry redoes
    worker = {"spec": spec, "folder": str(folder.resolve()), "device": pool.device, "threads": pool.cpus}
    results = dataset.map_batches(ShardWorker, batch_size=1, batch_format="numpy", fn_constructor_kwargs=worker,
                                  compute=ray.data.ActorPoolStrategy(size=pool.workers), num_cpus=pool.cpus,
                                  num_gpus=pool.gpus or None)
    failures: list[str] = []
    start = time.perf_counter()
    try:
        for row in results.iter_rows():
            if row["failure"]:
                failures.append(str(row["failure"]))
                continue
            report.shards += 1
            report.encoded += int(row["photos"])
            if progress is not None:
                progress(report.encoded, len(todo))
    except KeyboardInterrupt:
        report.interrupted = True
    except ray.exceptions.RayError as exc:
        failures.append(_cause(exc))
    report.seconds = time.perf_counter() - start
    if failures:
        raise EngineError(f"the Ray job failed ({len(failures)} shard{'s' * (len(failures) > 1)}): {failures[0]}. "
                          f"{len(shard_files(folder))} finished shards are kept in {folder}: run the same command "
                          "again to resume")
    log.info("%s", report.describe())
    return report


_RAISED = re.compile(r"^(?!ray\.)[\w.]*(?:Error|Exception): .+$", re.MULTILINE)


def _cause(exc: BaseException) -> str:
    """What failed on a worker (e.g. its model did not load), not Ray's wrapping: the first error line
    of the remote traceback Ray's message carries."""
    found = _RAISED.search(str(exc))
    return found.group(0).strip() if found else one_line(exc)


def index_encoder(spec: JobSpec, folder: Path, fingerprint: str, start: Callable[[], Pool],
                  on_report: Callable[[JobReport], None] = lambda report: None, **job_options) -> EncodeFn:
    """The encoding step of :func:`sdl_core.search.update_index` on Ray: the photos to (re)encode
    go through :func:`run_job` into ``folder`` and come back as the local engine returns them.
    ``start`` connects (called only when there is work)."""
    from ..search.index import as_stored

    def encode(root: Path, todo: list[FileEntry], report: UpdateReport, progress: ProgressFn | None
               ) -> tuple[list[FileEntry], list[torch.Tensor]]:
        if not todo:
            return [], []
        items = [Item(e.path, str(root / Path(*e.path.split("/"))), e.size, e.mtime_ns) for e in todo]
        job = run_job(items, spec, folder, fingerprint, start(), discard_other=True, progress=progress,
                      **job_options)
        report.interrupted = job.interrupted
        on_report(job)
        if not shard_files(folder):  # interrupted before the first shard
            return [], []
        table = read_results(folder, items)
        by_key = {e.path: e for e in todo}
        errors = table.column("error").to_pylist()
        report.failed += [(image, error) for image, error in zip(table.column("image").to_pylist(), errors) if error]
        loaded = table.filter(table.column("error").is_null())
        vectors = torch.from_numpy(vectors_of(loaded))
        return [by_key[key] for key in loaded.column("image").to_pylist()], [as_stored(vectors).float()]

    return encode
