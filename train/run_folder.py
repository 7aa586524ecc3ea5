"""The files of one training run, written by rank 0 only.

``config.json`` (the resolved options, model config and data summary), ``log.csv`` and
``log.jsonl`` (one row per epoch), ``best.safetensors`` / ``last.safetensors`` (our
checkpoint format, loadable by ``sdl_core``) and ``state.pt`` (everything to resume).
Every file is written whole or not at all (``sdl_core.files``): a full or read-only disk
stops the run with one ``StorageError`` line and leaves the files already written intact.
"""
from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import torch

from sdl_core.checkpoint import save_checkpoint
from sdl_core.errors import StorageError
from sdl_core.files import atomic_write, load_torch_weights, os_error_reason, write_bytes
from sdl_core.model import SDLModel
from sdl_core.vocab import Vocabulary

from .distributed import Dist
from .errors import RunError

STATE_FILE = "state.pt"
BEST_FILE = "best.safetensors"
LAST_FILE = "last.safetensors"


class RunFolder:
    """Files of one run. Every write is a no-op outside rank 0."""

    def __init__(self, out: Path, ctx: Dist) -> None:
        self.out, self.ctx = out, ctx

    def path(self, name: str) -> Path:
        """Where the run's file ``name`` goes."""
        return self.out / name

    def existing(self, name: str) -> Path | None:
        """The file ``name`` in the run folder, when it is there."""
        return self.path(name) if self.path(name).is_file() else None

    def prepare(self, resume: bool) -> None:
        """Refuse to overwrite a run (or to resume a missing one), then make the folder."""
        has_state = self.path(STATE_FILE).is_file()
        if resume and not has_state:
            raise RunError(f"--resume: {self.out} has no {STATE_FILE} to resume from")
        if not resume and (has_state or self.path(LAST_FILE).exists()):
            raise RunError(f"{self.out} already holds a run: add --resume to continue it, or pick another --out")
        if self.ctx.main:
            try:
                self.out.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise StorageError(f"cannot create the run folder {self.out}: {os_error_reason(exc)}") from None

    def write_json(self, name: str, data: dict) -> None:
        """``data`` as indented, sorted JSON, written whole (temporary file, then rename)."""
        if self.ctx.main:
            with atomic_write(self.path(name), "run file") as tmp:
                tmp.write_text(json.dumps(data, indent=2, sort_keys=True, default=str) + "\n")

    def write_log(self, history: list[dict]) -> None:
        """The whole history as ``log.csv`` (columns: every key any row has) and ``log.jsonl``."""
        if not self.ctx.main:
            return
        columns = list(dict.fromkeys(k for row in history for k in row))
        table = io.StringIO(newline="")
        writer = csv.DictWriter(table, fieldnames=columns)
        writer.writeheader()
        writer.writerows({k: _csv_cell(row.get(k)) for k in columns} for row in history)
        write_bytes(self.path("log.csv"), table.getvalue().encode(), "training log")
        lines = "".join(json.dumps(row) + "\n" for row in history)
        write_bytes(self.path("log.jsonl"), lines.encode(), "training log")

    def save_model(self, name: str, model: SDLModel, vocab: Vocabulary) -> Path:
        """A checkpoint ``sdl_core`` loads; its path (on every rank, for the result)."""
        if self.ctx.main:
            save_checkpoint(model, vocab, self.path(name))
        return self.path(name)

    def save_state(self, state: dict) -> None:
        """``state.pt``, written whole so an interrupted write cannot spoil a resume."""
        if self.ctx.main:
            buffer = io.BytesIO()  # torch.save on a full disk fails with a cryptic RuntimeError and half a file
            torch.save(state, buffer)
            write_bytes(self.path(STATE_FILE), buffer.getvalue(), "training state")

    def load_state(self) -> dict:
        """``state.pt``, read without unpickling code (``weights_only``)."""
        return load_torch_weights(self.path(STATE_FILE), f"{self.path(STATE_FILE)}: cannot resume from it", RunError)

    def resume_state(self, config_json: str, tags: list[str]) -> dict:
        """``state.pt``, refused when it was written for another model config or vocabulary."""
        state = self.load_state()
        if state.get("config") != config_json or state.get("tags") != tags:
            raise RunError(f"--resume: {self.out} was trained with another model config or vocabulary")
        return state


def _csv_cell(value: object) -> object:
    """A log value as a CSV cell: empty for a missing metric."""
    return "" if value is None else value
