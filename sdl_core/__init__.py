"""sdl_core: zero-shot multi-label image tagging with Semantic Diversity Learning.

    from sdl_core import Tagger
    tagger = Tagger.from_pretrained()            # the offline default model
    for t in tagger.tag("photo.jpg", extra_tags=["espresso", "latte"], top_k=5):
        print(t.display, t.score)
"""
import os as _os

# OpenMP threads that spin while waiting steal the cores they wait for: with any other
# load on a small machine, torch's default (active) wait made inference 10x+ slower
# (benchmarks/bench.py). Passive waiting must be chosen before torch loads OpenMP;
# an explicit OMP_WAIT_POLICY in the environment wins.
_os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from .config import ModelConfig, PreprocessConfig, WordSpaceInfo
from .errors import (CheckpointError, ImageError, ModelNotFoundError, SDLError, TagInputError, VocabularyError,
                     WordSpaceError)
from .images import load_image
from .model import Encoded, PrincipalVectorModel, SDLModel
from .registry import DEFAULT_MODEL, list_models
from .scoring import score_tags
from .tagger import Analysis, ImageTags, TagResult, Tagger
from .tags import normalize_tag, parse_tags
from .vocab import Vocabulary
from .wordvec import FastTextSpace, TableSpace, WordLlamaSpace, WordSpace, load_word_space

__all__ = [
    "Analysis", "CheckpointError", "DEFAULT_MODEL", "Encoded", "FastTextSpace", "ImageError", "ImageTags",
    "ModelConfig", "ModelNotFoundError", "PreprocessConfig", "PrincipalVectorModel", "SDLError", "SDLModel",
    "TableSpace", "TagInputError", "TagResult", "Tagger", "Vocabulary", "VocabularyError", "WordLlamaSpace",
    "WordSpace", "WordSpaceError", "WordSpaceInfo", "list_models", "load_image", "load_word_space",
    "normalize_tag", "parse_tags", "score_tags",
]
__version__ = "0.1.0"
