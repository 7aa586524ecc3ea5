"""Which models the page offers, and loading each one once per process.

The dropdown offers the registered models, the pretrained downloads (labelled with
their download size until they are cached), the ``--model`` the app was started with,
and the ``.safetensors`` checkpoints in ``--models-dir``. A request can only pick one of
those: a value sent by a client is checked against the list, so no request can make the
server open an arbitrary path.

A startup model that is fetched (a pretrained name, ``hf-hub:``) and cannot be (no
network, server down, full disk) does not stop the app: the offline default model
takes its place, and :attr:`TaggerCache.notice` says why, for the page to show.

Nothing here imports torch or timm until a model is loaded: the app is built from
names and file headers, served, and the startup model loads in a background thread
(``TaggerCache.preload``); a request that arrives first waits for that load.
"""
from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

from sdl_core.errors import CheckpointError, ModelNotFoundError, SDLError, WordSpaceError
from sdl_core.factory import resolve
from sdl_core.pretrained import describe, list_pretrained, resolve_pretrained
from sdl_core.registry import DEFAULT_MODEL, get_model, list_models, resolve_name

if TYPE_CHECKING:
    from sdl_core.tagger import Tagger

log = logging.getLogger(__name__)

#: Checkpoint files the models folder is scanned for.
CHECKPOINT_SUFFIXES = (".safetensors",)
#: Models kept loaded at once; the least recently used is dropped beyond this.
MAX_LOADED_MODELS = 3


#: Source kinds that are downloaded on first use (see sdl_core.factory).
FETCHED_KINDS = ("pretrained", "hf-hub")


@dataclass(frozen=True)
class ModelChoice:
    label: str  # shown in the dropdown
    value: str  # registered or pretrained name, hf-hub: name, or absolute checkpoint path
    fetched: bool = False  # downloaded on first use: a failure at start-up falls back to the default


def registered_choice(name: str) -> ModelChoice:
    """A registered model by its canonical name; the default says so in its label."""
    canonical = get_model(name).name
    label = f"{canonical} (default)" if canonical == resolve_name(DEFAULT_MODEL) else canonical
    return ModelChoice(label, canonical)


def registered_choices() -> list[ModelChoice]:
    """Registered models, each once (aliases fold into their model; the default first)."""
    choices = {c.value: c for c in map(registered_choice, list_models())}
    default = resolve_name(DEFAULT_MODEL)
    return sorted(choices.values(), key=lambda c: (c.value != default, c.label))


def pretrained_choice(name: str) -> ModelChoice:
    """A pretrained download, labelled with its size until it is cached."""
    return ModelChoice(describe(name), resolve(name).value, fetched=True)


def pretrained_choices() -> list[ModelChoice]:
    return [pretrained_choice(name) for name in list_pretrained()]


def folder_choices(folder: str | Path | None) -> list[ModelChoice]:
    """Checkpoint files directly in ``folder`` (none if it does not exist)."""
    if folder is None or not Path(folder).is_dir():
        return []
    files = sorted(p for p in Path(folder).iterdir() if p.is_file() and p.suffix in CHECKPOINT_SUFFIXES)
    return [ModelChoice(f"{Path(folder).name}/{p.name}", str(p.resolve())) for p in files]


def check_checkpoint_header(path: Path) -> None:
    """Refuse a ``.safetensors`` file whose header cannot be read, in milliseconds and
    without torch, so ``python -m demo --model broken.safetensors`` fails before serving.
    (The full check is the load itself, in the background.)"""
    from safetensors import SafetensorError, safe_open
    try:
        with safe_open(str(path), framework="numpy") as fh:
            fh.metadata()
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(f"{path.name}: not a readable safetensors checkpoint "
                              f"(corrupt, truncated or another format): {exc}") from None


def startup_choice(model: str) -> ModelChoice:
    """The ``--model`` value as a choice, resolved as ``Tagger.from_pretrained`` resolves it
    (an existing path wins over a registered name)."""
    source = resolve(model)
    if source.entry is not None:
        return registered_choice(source.value)
    if source.kind == "pretrained":
        return pretrained_choice(source.value)
    if source.kind in FETCHED_KINDS:
        return ModelChoice(source.value, source.value, fetched=True)
    path = Path(source.value)
    if source.is_file and path.is_file() and path.suffix in CHECKPOINT_SUFFIXES:
        check_checkpoint_header(path)
    return ModelChoice(Path(model).name if source.is_file else source.value, source.value)


def model_choices(model: str, models_dir: str | Path | None) -> list[ModelChoice]:
    """Everything the dropdown offers; the startup model first."""
    first = startup_choice(model)
    out = [first]
    for choice in registered_choices() + folder_choices(models_dir) + pretrained_choices():
        if choice.value not in {c.value for c in out}:
            out.append(choice)
    return out


class TaggerCache:
    """Loads each offered model once and keeps the most recently used few.

    Thread-safe: two requests for a model being loaded wait for the one load (a request
    that arrives while ``preload`` loads the startup model waits for it too).
    """

    def __init__(self, choices: Sequence[ModelChoice], device: str = "cpu",
                 max_loaded: int = MAX_LOADED_MODELS, word_space: str | None = None) -> None:
        self.choices = list(choices)
        self.word_space = word_space
        self._allowed = {c.value: c for c in self.choices}
        self.device = device
        self.max_loaded = max(1, max_loaded)
        self._loaded: OrderedDict[str, Tagger] = OrderedDict()
        self._lock = threading.Lock()
        self._load_locks: dict[str, threading.Lock] = {v: threading.Lock() for v in self._allowed}
        #: The background load of the startup model, once ``preload`` has started it.
        self.startup: Future | None = None
        #: What runs when a request names no model: the startup model, or the default after a fallback.
        self._current = self.choices[0].value
        #: Why the page runs another model than it was started with ("" when it does not).
        self.notice = ""

    def _load(self, value: str) -> Tagger:
        """Load with the user's word space (``--word-space``) where it is the model's own.

        The startup model must accept it (a mismatch is the user's error); other
        models of another space keep their own."""
        from sdl_core.fast_import import import_timm
        import_timm()  # torch and timm load here, off the page's critical path (timm without torchvision's zoo)
        from sdl_core.tagger import Tagger
        if self.word_space is not None:
            try:
                return Tagger.from_pretrained(value, device=self.device, word_space=self.word_space)
            except WordSpaceError as exc:
                if value == self.default:
                    raise
                log.info("model %s keeps its own word space: %s", self.label(value), exc)
        return Tagger.from_pretrained(value, device=self.device)

    @property
    def default(self) -> str:
        return self._current

    def labels(self) -> list[tuple[str, str]]:
        """(label, value) for the dropdown, a pretrained model's label telling whether it is
        cached now (a download since start-up changes it)."""
        return [(describe(c.value) if resolve_pretrained(c.value) else c.label, c.value) for c in self.choices]

    def label(self, value: str) -> str:
        choice = self._allowed.get(value)
        return choice.label if choice else str(value)

    def get(self, value: str | None = None) -> Tagger:
        """The Tagger of an offered model (the startup model when ``value`` is empty)."""
        value = value or self.default
        if not isinstance(value, str) or value not in self._allowed:
            raise ModelNotFoundError(f"model {str(value)[:200]!r} is not one this app offers")
        with self._lock:
            if value in self._loaded:
                self._loaded.move_to_end(value)
                return self._loaded[value]
        with self._load_locks[value]:
            with self._lock:
                if value in self._loaded:
                    return self._loaded[value]
            log.info("loading model %s", self.label(value))
            tagger = self._load(value)
            with self._lock:
                self._loaded[value] = tagger
                while len(self._loaded) > self.max_loaded:
                    dropped, _ = self._loaded.popitem(last=False)
                    log.info("unloaded model %s (keeping %d)", self.label(dropped), self.max_loaded)
            return tagger

    def preload(self) -> Future:
        """Load the startup model in a background thread, once; the returned Future holds
        the Tagger or the load's exception. A failed load is logged and tried again by
        the next request that needs the model, which then shows its message. A fetched
        startup model that fails falls back to the default model (see :meth:`_fall_back`)."""
        with self._lock:
            if self.startup is not None:
                return self.startup
            self.startup = future = Future()

        def work() -> None:
            try:
                future.set_result(self.get())
            except SDLError as exc:
                fallback = self._fall_back(exc)
                if fallback is None:
                    log.error("loading model %s failed: %s", self.label(self.default), exc)
                    future.set_exception(exc)
                else:
                    future.set_result(fallback)
            except BaseException as exc:  # noqa: BLE001 - handed to whoever waits on the Future
                log.error("loading model %s failed: %s", self.label(self.default), exc, exc_info=True)
                future.set_exception(exc)

        threading.Thread(target=work, name="sdl-preload", daemon=True).start()
        return future

    def _fall_back(self, exc: SDLError) -> Tagger | None:
        """Run the default model instead of a fetched startup model that could not be had,
        and say so in :attr:`notice`; None when the startup model is not fetched (its error
        is the user's to fix) or is already the default."""
        failed = self._allowed[self.choices[0].value]
        fallback = resolve_name(DEFAULT_MODEL)
        if not failed.fetched or fallback not in self._allowed or fallback == failed.value:
            return None
        log.warning("model %s could not be loaded (%s); running %s instead", failed.value, exc, fallback)
        tagger = self.get(fallback)  # the offline default: its failure is a real error, raised
        self._current = fallback
        self.notice = (f"{failed.value} could not be loaded, so this page runs the offline default model "
                       f"{fallback} instead. Reason: {exc}")
        return tagger
