"""The Ray actor's callable: one model per actor, one shard per call.

Ray Data keeps a pool of these (``map_batches`` with a callable class). Each loads the Tagger
once; per shard it reads the photos (in batches, read ahead, as the local engine does), writes
the shard (atomically, under its one name) and only then returns the shard's counts. A worker
killed at any point is restarted by Ray and the shard done again: the file it writes replaces
any earlier copy, so no photo is lost or counted twice.
"""
from __future__ import annotations

import os
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

import numpy as np

from ..errors import SDLError
from ..files import one_line
from .shards import shard_table, write_shard
from .sources import Item, fetch, is_uri

if TYPE_CHECKING:
    import pyarrow as pa

    from ..model import Encoded

#: Tests only: make workers fail on purpose. ``exit-once:NAME:MARKER`` ends the worker's process
#: right after it wrote the shard holding the photo NAME, once (whoever creates MARKER first);
#: ``raise:NAME`` fails the shard holding NAME with an error, so the job stops part-way.
FAULT_ENV = "SDL_RAY_TEST_FAULT"


@dataclass(frozen=True)
class JobSpec:
    """What every worker of a job needs: the model and, for ``tag`` jobs, the request.
    ``kind``: ``"index"`` (principal vectors) or ``"tag"`` (vectors and ranked tags)."""

    kind: str
    model: str
    data_dir: str | None = None
    word_space: str | None = None
    batch_size: int = 16
    extra_tags: tuple[str, ...] = ()
    only_extra: bool = False
    top_k: int = 10
    min_score: float | None = None
    vocab_tags: tuple[str, ...] | None = None
    fault: str | None = None

    def settings(self, fingerprint: str) -> dict:
        """What finished shards must share with a job that resumes them (not how it is run)."""
        data = asdict(self)
        for name in ("model", "data_dir", "batch_size", "fault"):
            del data[name]
        return {**data, "model_fingerprint": fingerprint}


class ShardWorker:
    """Encodes (``index``) or tags (``tag``) one shard per call and writes it to ``folder``."""

    def __init__(self, spec: JobSpec, folder: str, device: str = "cpu", threads: int = 1) -> None:
        from ..optimize import configure_threads
        from ..tagger import Tagger
        from ..vocab import Vocabulary
        configure_threads(threads)
        self.spec, self.folder = spec, Path(folder)
        self.tagger = Tagger.from_pretrained(spec.model, data_dir=spec.data_dir, word_space=spec.word_space,
                                             device=device)
        self.vocab = None
        if spec.vocab_tags is not None:
            self.vocab = Vocabulary.from_tags(list(spec.vocab_tags), self.tagger.word_space,
                                              seen=self.tagger.vocabulary.seen_tags)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, list]:
        """Per shard: its name, its photos, how many failed to load, and ``failure`` ("" when it
        was written), so the driver can name what went wrong in one line."""
        out: dict[str, list] = {"shard": [], "photos": [], "errors": [], "failure": []}
        for i, name in enumerate(batch["shard"]):
            fields = zip(batch["keys"][i], batch["locations"][i], batch["sizes"][i], batch["mtimes"][i])
            items = [Item(str(key), str(location), int(size), int(mtime)) for key, location, size, mtime in fields]
            errors, failure = 0, ""
            try:
                trip(self.spec.fault, items, written=False)
                table = self.shard(items)
                write_shard(self.folder, str(name), table)
                errors = table.num_rows - table.column("error").null_count
            except SDLError as exc:  # e.g. the shard cannot be written: the job fails with this line
                failure = str(exc)
            except Exception as exc:  # noqa: BLE001 - a bug: reported with its type, the job fails
                failure = f"{type(exc).__name__}: {one_line(exc)}"
            trip(self.spec.fault, items, written=not failure)
            out["shard"].append(str(name))
            out["photos"].append(len(items))
            out["errors"].append(errors)
            out["failure"].append(failure)
        return out

    def shard(self, items: Sequence[Item]) -> pa.Table:
        """The shard's table: every photo once, in order, with its vectors (and tags) or its error."""
        cfg = self.tagger.config
        rows = [{"image": item.key, "size": item.size, "mtime_ns": item.mtime_ns, "error": None} for item in items]
        vectors = np.zeros((len(items), cfg.k, cfg.d), np.float32)
        with tempfile.TemporaryDirectory(prefix="sdl-fetch-") as scratch:
            paths: list[str] = []
            at: list[int] = []  # the row of each path
            for i, item in enumerate(items):
                try:
                    paths.append(str(fetch(item.location, Path(scratch) / str(i))) if is_uri(item.location)
                                 else item.location)
                    at.append(i)
                except SDLError as exc:
                    rows[i]["error"] = str(exc)
            done = 0
            for entries, encoded in self.tagger.encode_files(paths, self.spec.batch_size):
                loaded = []
                for j, (path, error) in zip(at[done:done + len(entries)], entries):
                    if error is not None:
                        rows[j]["error"] = _as_named(str(error), path, items[j].key)
                    else:
                        loaded.append(j)
                done += len(entries)
                if encoded is not None:
                    vectors[loaded] = encoded.vectors.float().cpu().numpy()
                    self._add_tags(rows, loaded, encoded)
        return shard_table(rows, vectors, self.spec.kind == "tag")

    def _add_tags(self, rows: list[dict], loaded: list[int], encoded: Encoded) -> None:
        """A tag job's ranked tags, as ``tag --json`` prints them (``--min-score`` applied)."""
        if self.spec.kind != "tag":
            return
        spec = self.spec
        results = self.tagger.tag_encoded(encoded, [rows[j]["image"] for j in loaded], spec.extra_tags,
                                          spec.top_k, self.vocab, spec.only_extra)
        for j, result in zip(loaded, results):
            data = result.above(spec.min_score).to_dict()
            rows[j].update((name, data[name]) for name in ("tags", "typed", "not_in_vocabulary", "ranked"))


def _as_named(message: str, path: str, key: str) -> str:
    """The local CLI's message: a message naming the absolute path names the photo as given."""
    return key + message[len(path):] if message.startswith(path) else message


def trip(fault: str | None, items: Sequence[Item], written: bool) -> None:
    """The test fault of :data:`FAULT_ENV`, when this shard holds its photo."""
    if not fault:
        return
    kind, _, rest = fault.partition(":")
    name, _, marker = rest.partition(":")
    if not any(item.key.endswith(name) for item in items):
        return
    if kind == "raise" and not written:
        raise RuntimeError(f"test fault on {name}")
    if kind == "exit-once" and written:
        try:
            Path(marker).open("x").close()
        except FileExistsError:
            return
        os._exit(1)
