"""Fixtures for the training tests: a synthetic zero-shot dataset and its word vectors.

The word vectors are WordLlama's (the pip wheel's own weights, offline), written once
to a small ``.vec`` table so that subprocesses load them in milliseconds.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from train.synthetic import SEEN_COLOURS, UNSEEN_COLOURS, make_colour_dataset

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def colour_data(tmp_path_factory) -> dict[str, Path]:
    return make_colour_dataset(tmp_path_factory.mktemp("colours"), images=200, size=64, seed=0)


def write_wordllama_vec(words: list[str], path: Path) -> Path:
    """WordLlama vectors of ``words`` as a small .vec table (loads in milliseconds)."""
    from sdl_core.wordvec import WordLlamaSpace
    vectors, found = WordLlamaSpace().embed(words)
    assert found.all()
    lines = [f"{len(words)} {vectors.shape[1]}"] + [w + " " + " ".join(f"{x:.6f}" for x in v)
                                                   for w, v in zip(words, vectors)]
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture(scope="session")
def colour_vec(tmp_path_factory) -> Path:
    return write_wordllama_vec(list(SEEN_COLOURS) + list(UNSEEN_COLOURS),
                               tmp_path_factory.mktemp("space") / "colours.vec")


def run_cli(*args: str, timeout: int = 240, env: dict | None = None):
    """Run a real ``python -m ...`` command from the repository root."""
    import subprocess
    full_env = {**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}
    return subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout,
                          env=full_env)


@pytest.fixture(scope="session")
def nus_tree(tmp_path_factory):
    """A miniature NUS-WIDE tree (40 listed images, 3 missing, 2 corrupt) and what was written."""
    from train.nus_wide_synth import make_nus_wide
    return make_nus_wide(tmp_path_factory.mktemp("nus") / "NUS-WIDE", images=40, size=48, seed=0)


@pytest.fixture(scope="session")
def nus_vec(tmp_path_factory, nus_tree) -> Path:
    """WordLlama vectors of the miniature tree's tags and concepts."""
    return write_wordllama_vec(sorted(set(nus_tree.tags_1k) | set(nus_tree.concepts)),
                               tmp_path_factory.mktemp("nus_space") / "nus.vec")
