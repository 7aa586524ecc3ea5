"""Shared fixtures: tiny random-weight models, tiny fastText models, generated images.

Nothing here downloads: models are random, fastText models are trained in the test.
"""
from __future__ import annotations

import functools
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
import torch
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
# Exported ONNX graphs go to a cache of this test session (subprocesses inherit it), never
# to the user's ~/.cache; tests that need their own cache set SDL_TAGGER_CACHE themselves.
os.environ["SDL_TAGGER_CACHE"] = tempfile.mkdtemp(prefix="sdl-tagger-test-cache-")
# Gradio names its output files by content and deletes them when a server closes: a shared
# /tmp/gradio lets another test run (same photo, same seeded toy model) delete this run's files.
os.environ["GRADIO_TEMP_DIR"] = tempfile.mkdtemp(prefix="sdl-gradio-test-")

from sdl_core.config import ModelConfig, PreprocessConfig, WordSpaceInfo  # noqa: E402
from sdl_core.model import SDLModel  # noqa: E402
from sdl_core.vocab import Vocabulary  # noqa: E402
from sdl_core.wordvec import unit_rows  # noqa: E402

SHARED = ROOT.parent / "shared"
REFERENCE = SHARED / "reference" / "zs_sdl"
EVAL = SHARED / "eval"
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")

needs_reference = pytest.mark.skipif(not REFERENCE.is_dir(),
                                     reason="../shared/reference/zs_sdl (the authors' data files) is not present")
needs_eval = pytest.mark.skipif(not EVAL.is_dir(), reason="../shared/eval (the labelled dev photos) is not present")



@functools.cache
def load_tool(name: str) -> ModuleType:
    """``tools/<name>.py``, loaded from its file (tools/ is not a package) under its own name,
    so a tool that imports another (``import default_vocabulary``) gets the same module."""
    spec = importlib.util.spec_from_file_location(name, ROOT / "tools" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def json_from_fresh_interpreter(code: str, timeout: float = 240):
    """Run ``code`` in a fresh interpreter at the repository's root; the JSON its last line prints
    (import checks: this test process has long imported everything)."""
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


TOY_SPACE = WordSpaceInfo("toy-space-16", 16)
TOY_TAGS = ["cat", "dog", "car", "tree", "sky", "water", "boat", "house"]


def make_sdl_model(k: int = 3, d: int = 16, backbone: str = "test_resnet", size: int = 64, seed: int = 0,
                   space: WordSpaceInfo | None = None) -> SDLModel:
    torch.manual_seed(seed)
    cfg = ModelConfig(kind="sdl", backbone=backbone, k=k, word_space=space or WordSpaceInfo(f"toy-space-{d}", d),
                      preprocess=PreprocessConfig(size=size, resize="squash", interpolation="bicubic"),
                      name=f"toy_{backbone}_k{k}")
    return SDLModel(cfg).eval()


def make_vocab(tags=TOY_TAGS, d: int = 16, unseen=("boat", "house"), seed: int = 0) -> Vocabulary:
    rng = np.random.default_rng(seed)
    vectors = unit_rows(rng.normal(size=(len(tags), d)))
    return Vocabulary(list(tags), vectors, np.array([t not in unseen for t in tags]))


def make_photo(width: int = 96, height: int = 80, seed: int = 0, mode: str = "RGB") -> Image.Image:
    rng = np.random.default_rng(seed)
    arr = rng.integers(0, 256, size=(height, width, 3), dtype=np.uint8)
    return Image.fromarray(arr, "RGB").convert(mode)


@pytest.fixture
def sdl_model() -> SDLModel:
    return make_sdl_model()


@pytest.fixture
def toy_vocab() -> Vocabulary:
    return make_vocab()


@pytest.fixture
def photo_path(tmp_path: Path) -> Path:
    path = tmp_path / "photo.jpg"
    make_photo().save(path, quality=92)
    return path


FASTTEXT_CORPUS = (
    "the cat sat on the mat with another cat and a kitten . "
    "a dog ran after the cat and the puppy barked at the dog . "
    "the car drove on the road next to a truck and a bus . "
    "a tree grew by the river and the forest had many trees . "
    "the sky was blue with clouds and the sun above the sea . "
    "the boat sailed on the water of the lake near the harbor . "
)


@pytest.fixture(scope="session")
def fasttext_bin(tmp_path_factory) -> Path:
    """A tiny fastText model with subwords, trained here in about a second."""
    import fasttext
    folder = tmp_path_factory.mktemp("fasttext")
    corpus = folder / "corpus.txt"
    corpus.write_text((FASTTEXT_CORPUS + "\n") * 200)
    model = fasttext.train_unsupervised(str(corpus), model="skipgram", dim=16, epoch=3, minCount=1,
                                        minn=2, maxn=4, thread=1, verbose=0)
    path = folder / "toy-ft.bin"
    model.save_model(str(path))
    return path
