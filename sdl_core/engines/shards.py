"""The Parquet shards a job writes, its manifest, and reading the shards back.

A job's folder holds ``part-<hash>.parquet`` shards and ``_job.json`` (the settings they were
made with). A shard is named by a hash of the photos it holds and written whole or not at all
(temporary file + rename): a worker retried after a crash rewrites the same file, never a second
copy, and a job run again skips the photos its finished shards hold. Readers take each photo
once (:func:`read_results`), so a photo that two shards hold is never counted twice.

Columns: ``image`` (the photo's name), ``size`` and ``mtime_ns`` (-1 for URIs), ``error`` (null
when it loaded), ``vectors`` (its K x D principal vectors, float32, null on error); ``tag`` jobs
add ``tags`` and ``typed`` (as ``tag --json`` prints them), ``not_in_vocabulary`` and ``ranked``.
"""
from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path
from typing import Sequence

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from ..files import atomic_write, write_bytes
from . import EngineError
from .sources import Item

SHARD_GLOB = "part-*.parquet"
MANIFEST = "_job.json"
JOB_FORMAT = "sdl-ray-job"
JOB_VERSION = 1
#: Photos per shard at most (when not given): what a crash costs again, and what a resume skips.
MAX_SHARD_SIZE = 256
#: Shards per worker at least (when not given), so the pool stays busy to the end.
SHARDS_PER_WORKER = 4

_TAG_FIELDS = [("tag", pa.string()), ("score", pa.float64()), ("seen", pa.bool_()), ("principal", pa.int32()),
               ("typed", pa.bool_()), ("approximate", pa.bool_())]
TAG_TYPE = pa.struct(_TAG_FIELDS)
TYPED_TYPE = pa.struct(_TAG_FIELDS + [("rank", pa.int32()), ("in_top_k", pa.bool_())])


# --- planning ---------------------------------------------------------------------

def shard_name(keys: Sequence[str]) -> str:
    """The same photos always make the same name: a retried shard replaces itself."""
    digest = hashlib.blake2b(digest_size=10)
    for key in keys:
        digest.update(key.encode("utf-8", "surrogateescape") + b"\0")
    return f"part-{digest.hexdigest()}.parquet"


def shard_size(total: int, workers: int, requested: int | None = None) -> int:
    """``requested``, else enough shards for every worker to take several, at most MAX_SHARD_SIZE photos each."""
    if requested is not None:
        return requested
    return max(1, min(MAX_SHARD_SIZE, math.ceil(total / (max(1, workers) * SHARDS_PER_WORKER))))


def plan(items: Sequence[Item], size: int) -> list[dict]:
    """The job's input rows, one per shard: its name and its photos' keys, locations, sizes, mtimes."""
    rows = []
    for start in range(0, len(items), size):
        chunk = items[start:start + size]
        keys = [item.key for item in chunk]
        rows.append({"shard": shard_name(keys), "keys": keys, "locations": [item.location for item in chunk],
                     "sizes": [item.size for item in chunk], "mtimes": [item.mtime_ns for item in chunk]})
    return rows


# --- writing ----------------------------------------------------------------------

def schema(k: int, d: int, with_tags: bool) -> pa.Schema:
    fields = [pa.field("image", pa.string(), nullable=False), pa.field("size", pa.int64()),
              pa.field("mtime_ns", pa.int64()), pa.field("error", pa.string()),
              pa.field("vectors", pa.fixed_shape_tensor(pa.float32(), [k, d]))]
    if with_tags:
        fields += [pa.field("tags", pa.list_(TAG_TYPE)), pa.field("typed", pa.list_(TYPED_TYPE)),
                   pa.field("not_in_vocabulary", pa.list_(pa.string())), pa.field("ranked", pa.int32())]
    return pa.schema(fields, metadata={"sdl.k": str(k), "sdl.d": str(d)})


def shard_table(rows: list[dict], vectors: np.ndarray, with_tags: bool) -> pa.Table:
    """``rows``: image, size, mtime_ns, error (and the ``tag --json`` fields of a result);
    ``vectors``: (len(rows), K, D), any values where a row has an error."""
    n, k, d = vectors.shape
    out = schema(k, d, with_tags)
    failed = pa.array([row["error"] is not None for row in rows], pa.bool_())
    storage = pa.FixedSizeListArray.from_arrays(pa.array(np.ascontiguousarray(vectors, np.float32).reshape(-1)),
                                                k * d, mask=failed)
    columns = {name: pa.array([row.get(name) for row in rows], out.field(name).type)
               for name in out.names if name != "vectors"}
    columns["vectors"] = pa.ExtensionArray.from_storage(out.field("vectors").type, storage)
    return pa.table([columns[name] for name in out.names], schema=out)


def write_shard(folder: Path, name: str, table: pa.Table) -> Path:
    """Whole or not at all, under its one name."""
    path = folder / name
    with atomic_write(path, "result shard") as tmp:
        pq.write_table(table, tmp)
    return path


# --- the job's manifest -----------------------------------------------------------

def open_job(folder: Path, settings: dict, *, discard_other: bool) -> None:
    """Start or resume the job in ``folder``. Shards made with other settings are deleted when
    ``discard_other`` (a private work folder), else refused (a results folder the user named)."""
    path = folder / MANIFEST
    want = json.loads(json.dumps({"format": JOB_FORMAT, "version": JOB_VERSION, **settings}))
    have = _read_manifest(path)
    if have == want:
        return
    if shard_files(folder) and not discard_other:
        changed = sorted(key for key in want if (have or {}).get(key) != want[key]) if have else ["no _job.json"]
        raise EngineError(f"{folder} holds the results of another job (differs in: {', '.join(changed)}): "
                          "give another --out, or delete the folder to start over")
    for shard in shard_files(folder):
        shard.unlink()
    write_bytes(path, json.dumps(want, indent=2, sort_keys=True).encode(), "job manifest")


def _read_manifest(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


# --- reading ----------------------------------------------------------------------

def shard_files(folder: Path) -> list[Path]:
    return sorted(Path(folder).glob(SHARD_GLOB))


def _read(path: Path, columns: list[str] | None) -> pa.Table:
    try:
        return pq.read_table(path, columns=columns)
    except (OSError, pa.ArrowException) as exc:
        raise EngineError(f"{path}: not a readable result shard ({exc}); delete it and run the job again") from None


def finished(folder: Path) -> set[tuple[str, int, int]]:
    """(image, size, mtime_ns) of every photo the finished shards hold."""
    done: set[tuple[str, int, int]] = set()
    for path in shard_files(folder):
        table = _read(path, ["image", "size", "mtime_ns"])
        done.update(zip(*(table.column(c).to_pylist() for c in ("image", "size", "mtime_ns"))))
    return done


def pending(items: Sequence[Item], folder: Path) -> list[Item]:
    """The photos no finished shard holds (in the version on disk now)."""
    done = finished(folder)
    return [item for item in items if (item.key, item.size, item.mtime_ns) not in done]


def read_results(folder: str | Path, items: Sequence[Item] | None = None, columns: list[str] | None = None
                 ) -> pa.Table:
    """Every photo of a job's folder once. With ``items``: their rows, in their order, each in
    the version given (size, mtime); without: each photo's newest version, by name."""
    folder = Path(folder)
    wanted = None if columns is None else list(dict.fromkeys(["image", "size", "mtime_ns", *columns]))
    tables = [_read(path, wanted) for path in shard_files(folder)]
    if not tables:
        raise EngineError(f"{folder}: no result shards (part-*.parquet) here")
    table = pa.concat_tables(tables, promote_options="none")
    keys = list(zip(*(table.column(c).to_pylist() for c in ("image", "size", "mtime_ns"))))
    return table.take(pa.array(_rows_once(keys, items), pa.int64()))


def _rows_once(keys: list[tuple[str, int, int]], items: Sequence[Item] | None) -> list[int]:
    """Row numbers taking each photo once (the first copy of a version; a photo's newest version)."""
    if items is not None:
        first: dict[tuple[str, int, int], int] = {}
        for i, key in enumerate(keys):
            first.setdefault(key, i)
        wanted = ((item.key, item.size, item.mtime_ns) for item in items)
        return [first[key] for key in wanted if key in first]
    newest: dict[str, int] = {}
    for i, (image, _, mtime) in enumerate(keys):
        j = newest.get(image)
        if j is None or mtime > keys[j][2]:
            newest[image] = i
    return sorted(newest.values(), key=lambda i: keys[i][0])


def vectors_of(table: pa.Table) -> np.ndarray:
    """(N, K, D) float32 principal vectors of rows that loaded (every row of ``table`` must have them)."""
    column = table.column("vectors").combine_chunks()
    if column.null_count:
        raise ValueError("rows with errors have no vectors: select the rows without an error first")
    k, d = column.type.shape
    if not len(column):
        return np.zeros((0, k, d), np.float32)
    return np.array(column.to_numpy_ndarray(), np.float32)  # a copy: Arrow's buffers are read-only
