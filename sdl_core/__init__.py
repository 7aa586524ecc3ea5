"""sdl_core: zero-shot multi-label image tagging with Semantic Diversity Learning.

    from sdl_core import Tagger
    tagger = Tagger.from_pretrained()            # the offline default model
    for t in tagger.tag("photo.jpg", extra_tags=["espresso", "latte"], top_k=5):
        print(t.display, t.score)

The public names load their submodule on first use (PEP 562): ``import sdl_core`` and
the light names (errors, tags, the registry) do not import torch or timm, which cost
seconds of start-up (the web demo serves its page before the model is needed).
"""
from __future__ import annotations

import importlib
import os as _os
from typing import TYPE_CHECKING, Any

# OpenMP threads that spin while waiting steal the cores they wait for: with any other
# load on a small machine, torch's default (active) wait made inference 10x+ slower
# (benchmarks/bench.py). Passive waiting must be chosen before torch loads OpenMP;
# an explicit OMP_WAIT_POLICY in the environment wins.
_os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

#: Public name -> the submodule that defines it.
_EXPORTS: dict[str, str] = {
    **dict.fromkeys(("ModelConfig", "PreprocessConfig", "WordSpaceInfo"), "config"),
    **dict.fromkeys(("CheckpointError", "ImageError", "ModelNotFoundError", "SDLError", "TagInputError",
                     "VocabularyError", "WordSpaceError"), "errors"),
    "load_image": "images",
    **dict.fromkeys(("LoadedModel", "load_model"), "factory"),
    **dict.fromkeys(("Encoded", "PrincipalVectorModel", "SDLModel"), "model"),
    **dict.fromkeys(("DEFAULT_MODEL", "list_models"), "registry"),
    "score_tags": "scoring",
    **dict.fromkeys(("Analysis", "ImageTags", "TagResult", "Tagger", "TypedTag"), "tagger"),
    **dict.fromkeys(("normalize_tag", "parse_tags"), "tags"),
    "Vocabulary": "vocab",
    **dict.fromkeys(("FastTextSpace", "TableSpace", "WordLlamaSpace", "WordSpace", "load_word_space"), "wordvec"),
}

__all__ = sorted(_EXPORTS)
__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    """Import the submodule of a public name on first use, then keep the name here."""
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))


if TYPE_CHECKING:  # static checkers and IDEs see the eager imports
    from .config import ModelConfig, PreprocessConfig, WordSpaceInfo
    from .errors import (CheckpointError, ImageError, ModelNotFoundError, SDLError, TagInputError, VocabularyError,
                         WordSpaceError)
    from .factory import LoadedModel, load_model
    from .images import load_image
    from .model import Encoded, PrincipalVectorModel, SDLModel
    from .registry import DEFAULT_MODEL, list_models
    from .scoring import score_tags
    from .tagger import Analysis, ImageTags, TagResult, Tagger, TypedTag
    from .tags import normalize_tag, parse_tags
    from .vocab import Vocabulary
    from .wordvec import FastTextSpace, TableSpace, WordLlamaSpace, WordSpace, load_word_space
