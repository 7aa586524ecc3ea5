"""The one place a name or path becomes a loaded model (what the Tagger, the demo and search call).

Two steps, so callers that only need to know *what* a name means pay for nothing:

1. :func:`resolve` turns a name or path into a :class:`ModelSource` without loading
   anything (no torch, no timm): each resolver in :data:`RESOLVERS` is asked in turn, and
   the first that recognises the name wins. An existing file comes first (a file named
   like a registered model is that file), then registered names and aliases.
2. :func:`load_model` builds it with the loader of its kind (:data:`LOADERS`) and returns a
   :class:`LoadedModel`: the model, its vocabulary, the word space typed tags are embedded
   in, and the source it came from.

Adding a kind of source is one resolver and one loader. A pretrained name
(:mod:`sdl_core.pretrained`) resolves to ``ModelSource("pretrained", name)`` and
``hf-hub:OWNER/REPO`` (:mod:`sdl_core.hub`) to ``ModelSource("hf-hub", name)``; both load
the ``.safetensors`` their download returns (cached after the first use) with
:func:`load_checkpoint_file`. Resolvers must stay cheap (a table look-up, a file test, no
network): the demo resolves its startup model before it serves its page.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable

from .errors import ModelNotFoundError
from .registry import DEFAULT_MODEL, ModelEntry, Quality, get_model, list_models, resolve_name

if TYPE_CHECKING:  # loading a model imports torch and timm; resolving a name does not
    from .model import PrincipalVectorModel
    from .vocab import Vocabulary
    from .wordvec import WordSpace

#: File endings of the authors' PyTorch checkpoints (read with their data folder).
OFFICIAL_SUFFIXES = (".pth", ".pt", ".tar", ".ckpt")


@dataclass(frozen=True)
class ModelSource:
    """What a name or path refers to. ``value`` is what to record to find it again: the
    canonical registered name, or a file's absolute path."""

    kind: str  # a key of LOADERS
    value: str
    is_file: bool = False
    entry: ModelEntry | None = None


@dataclass(frozen=True)
class LoadedModel:
    """A built model with what inference needs. ``word_space``: where typed tags are
    embedded (a table model's own table, bridged from WordLlama when it is big enough);
    None: the model's vocabulary is its only words."""

    model: PrincipalVectorModel
    vocabulary: Vocabulary
    word_space: WordSpace | None
    source: ModelSource
    data_dir: str | None = None

    @property
    def name(self) -> str:
        return self.model.config.name or self.model.config.backbone

    @property
    def quality(self) -> Quality | None:
        return self.source.entry.quality if self.source.entry is not None else None


Parts = tuple["PrincipalVectorModel", "Vocabulary", "WordSpace | None"]
Resolver = Callable[[str], "ModelSource | None"]
Loader = Callable[[ModelSource, "str | Path | None"], Parts]


def _existing_file(name: str) -> ModelSource | None:
    path = Path(name)
    if not path.exists():
        return None
    kind = "official" if path.suffix in OFFICIAL_SUFFIXES else "checkpoint"
    return ModelSource(kind, str(path.resolve()), is_file=True)


def _registered(name: str) -> ModelSource | None:
    canonical = resolve_name(name)
    if canonical is None:
        return None
    return ModelSource("registered", canonical, entry=get_model(canonical))


def _pretrained(name: str) -> ModelSource | None:
    from .pretrained import resolve_pretrained
    entry = resolve_pretrained(name)
    return None if entry is None else ModelSource("pretrained", entry.name)


def _hub(name: str) -> ModelSource | None:
    from .hub import is_hub_name, parse_hub_name
    if not is_hub_name(name):
        return None
    parse_hub_name(name)  # a malformed name is refused before anything loads
    return ModelSource("hf-hub", name)


#: Asked in order; the first to recognise a name wins.
RESOLVERS: list[Resolver] = [_existing_file, _registered, _pretrained, _hub]


def resolve(name_or_path: str | Path | None = None) -> ModelSource:
    """What ``name_or_path`` (default: the default model) refers to, loading nothing."""
    name = str(name_or_path) if name_or_path is not None else DEFAULT_MODEL
    for resolver in RESOLVERS:
        source = resolver(name)
        if source is not None:
            return source
    from .pretrained import list_pretrained
    raise ModelNotFoundError(f"{name!r} is neither a registered model nor an existing file (registered: "
                             f"{', '.join(list_models())}; pretrained: {', '.join(list_pretrained())}; "
                             "or hf-hub:OWNER/REPO; see `python -m sdl_core models`)")


def _build_registered(source: ModelSource, data_dir: str | Path | None) -> Parts:
    module, _, function = source.entry.builder.partition(":")
    return getattr(importlib.import_module(module), function)()


def load_checkpoint_file(source: ModelSource, data_dir: str | Path | None = None) -> Parts:
    """One of our ``.safetensors`` checkpoints (its word space is its vocabulary's table)."""
    from .checkpoint import load_checkpoint
    model, vocab = load_checkpoint(source.value)
    return model, vocab, None


def _import_official(source: ModelSource, data_dir: str | Path | None) -> Parts:
    if data_dir is None:
        raise ModelNotFoundError(f"{Path(source.value).name} looks like the authors' checkpoint: give their data "
                                 "folder too (classes.pickle, unseen_classes.pickle, wordvec_array.pickle)")
    from .official import import_official
    model, vocab = import_official(source.value, data_dir)
    return model, vocab, None


def _fetched_checkpoint(source: ModelSource, data_dir: str | Path | None) -> Parts:
    """A pretrained or ``hf-hub:`` name: its checkpoint file, downloaded on first use."""
    from .pretrained import checkpoint_for
    path = checkpoint_for(source.value)
    return load_checkpoint_file(ModelSource("checkpoint", str(path), is_file=True))


#: How each kind of source is built.
LOADERS: dict[str, Loader] = {
    "registered": _build_registered,
    "checkpoint": load_checkpoint_file,
    "official": _import_official,
    "pretrained": _fetched_checkpoint,
    "hf-hub": _fetched_checkpoint,
}


def load_model(name_or_path: str | Path | None = None, *, data_dir: str | Path | None = None,
               word_space: str | Path | WordSpace | None = None) -> LoadedModel:
    """Build a registered name (default: the offline default model), a pretrained name or
    ``hf-hub:OWNER/REPO`` (downloaded once, then cached), one of our ``.safetensors``
    checkpoints, or the authors' ``.pth`` with their data folder.

    ``word_space``: ``"wordllama"``, a fastText ``.bin``/``.vec`` path, or a
    :class:`WordSpace`; it must be the space the model was trained in (the Tagger checks).
    Without one, a registered model keeps its own, a WordLlama checkpoint gets WordLlama
    (it ships in its pip wheel, so typed tags work offline), others their vocabulary's
    table bridged from WordLlama (:mod:`sdl_core.bridge`: typed tags get approximate vectors;
    a table under MIN_BRIDGE_TAGS tags stays the vocabulary alone).
    """
    from .evidence import packaged_space
    from .wordvec import load_word_space
    source = resolve(name_or_path)
    space = load_word_space(word_space) if isinstance(word_space, (str, Path)) else word_space
    model, vocab, own_space = LOADERS[source.kind](source, data_dir)
    space = space or own_space
    if space is None:
        space = packaged_space(model.config.word_space)
    from .bridge import MIN_BRIDGE_TAGS, bridge_table_space
    if space is None and len(vocab) >= MIN_BRIDGE_TAGS:  # a fixed table (the authors' fastText vectors)
        from .wordvec import TableSpace
        space = bridge_table_space(vocab, TableSpace(model.config.word_space, vocab.tags, vocab.vectors))
    return LoadedModel(model, vocab, space, source, None if data_dir is None else str(data_dir))
