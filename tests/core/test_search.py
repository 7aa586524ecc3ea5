"""Photo search: indexing, incremental updates, ranking, the index file, the CLI.

A toy "colour" model makes the right answer known by construction: principal vector 0
of a photo is its mean (R, G, B) in dimensions 0..2, vector 1 a fixed small vector on
dimension 3; the tags red/green/blue/grey are the unit vectors e0..e3. So a photo's
score for "red" is its mean red, and the expected order follows from the pixels.
"""
from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from sdl_core import cli
from sdl_core.checkpoint import save_checkpoint
from sdl_core.config import ModelConfig, PreprocessConfig, WordSpaceInfo
from sdl_core.errors import TagInputError
from sdl_core.model import Encoded, PrincipalVectorModel
from sdl_core.search import (DEFAULT_INDEX_NAME, SearchIndexError, load_index, model_identity, query_space, search,
                             update_index)
from sdl_core.tagger import Tagger
from sdl_core.vocab import Vocabulary
from tests.conftest import ROOT, make_photo, make_sdl_model, make_vocab

COLOR_SPACE = WordSpaceInfo("toy-colors-8", 8)
COLOR_TAGS = ["red", "green", "blue", "grey"]
GREY_LEVEL = 0.2  # vector 1's value on the "grey" axis


class ColorModel(PrincipalVectorModel):
    """K=2: A_0 = mean RGB (dims 0..2), A_1 = GREY_LEVEL * e3. Maps: the pixels themselves."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config

    def encode(self, pixels: torch.Tensor, with_maps: bool = False) -> Encoded:
        local = torch.zeros(pixels.shape[0], 2, self.config.d, 4, 4)
        local[:, 0, :3] = torch.nn.functional.adaptive_avg_pool2d(pixels, 4)
        local[:, 1, 3] = GREY_LEVEL
        return Encoded(vectors=local.mean(dim=(3, 4)), local=local if with_maps else None)

    def tag_maps(self, encoded: Encoded, tag_vectors: torch.Tensor) -> torch.Tensor:
        return torch.einsum("bkdhw,nd->bknhw", encoded.local, tag_vectors)

    def principal_maps(self, encoded: Encoded) -> torch.Tensor:
        return encoded.local.norm(dim=2)


def color_tagger(reduction: str = "max", name: str = "toy_colors") -> Tagger:
    cfg = ModelConfig(kind="toy-colors", backbone="none", k=2, word_space=COLOR_SPACE, reduction=reduction,
                      preprocess=PreprocessConfig(size=32), name=name)
    vocab = Vocabulary(COLOR_TAGS, np.eye(len(COLOR_TAGS), COLOR_SPACE.dim, dtype=np.float32),
                       np.array([True, True, True, False]))
    return Tagger(ColorModel(cfg), vocab)


def solid(path: Path, rgb: tuple[int, int, int]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (40, 30), rgb).save(path)
    return path


COLORS = {"a.png": (250, 10, 10), "b.png": (120, 200, 30), "c.png": (30, 60, 240),
          "sub/d.png": (180, 180, 20), "sub/e.png": (60, 10, 200)}


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    root = tmp_path / "photos"
    for name, rgb in COLORS.items():
        solid(root / name, rgb)
    (root / "broken.jpg").write_bytes(b"not a jpeg at all")
    (root / "notes.txt").write_text("not a photo")
    return root


def counting(tagger: Tagger) -> list[int]:
    """Record how many images each forward pass gets."""
    calls: list[int] = []
    encode = tagger._encode_pixels

    def wrapped(pixels, with_maps=False):
        calls.append(pixels.shape[0])
        return encode(pixels, with_maps=with_maps)

    tagger._encode_pixels = wrapped  # type: ignore[method-assign]
    return calls


def expected_order(colors: dict[str, tuple[int, int, int]], score) -> list[str]:
    return sorted(colors, key=lambda p: (-score(np.array(colors[p]) / 255.0), p))


def test_index_update_only_changed_and_search_order(folder: Path, tmp_path: Path) -> None:
    tagger = color_tagger()
    calls = counting(tagger)
    index, report = update_index(folder, tagger, batch_size=2)
    assert sorted(report.added) == sorted(COLORS) and report.unchanged == 0
    assert [p for p, _ in report.failed] == ["broken.jpg"] and "not an image" in report.failed[0][1]
    assert [e.path for e in index.entries] == sorted(COLORS)
    assert sum(calls) == 5  # the unreadable file never reached the model
    out = index.save(tmp_path / "idx" / "photos.safetensors")
    assert not [p for p in out.parent.iterdir() if p != out]  # atomic: no temporary file left

    space = query_space(load_index(out))
    result = search(load_index(out), ["red"], space, top_n=10)
    assert [h.path for h in result.hits] == expected_order(COLORS, lambda c: c[0])
    assert result.hits[0].score == pytest.approx(250 / 255, abs=2e-3)
    assert result.hits[0].principal == 0 and result.hits[0].tag == "red"

    # modify one photo, add one, delete one: exactly two photos go through the model
    solid(folder / "b.png", (5, 5, 250))
    os.utime(folder / "b.png", ns=(1, 1_000_000_000))
    solid(folder / "sub" / "new.png", (200, 90, 90))
    (folder / "c.png").unlink()
    calls.clear()
    index2, report2 = update_index(folder, tagger, load_index(out))
    assert sum(calls) == 2
    assert report2.added == ["sub/new.png"] and report2.updated == ["b.png"] and report2.removed == ["c.png"]
    assert report2.unchanged == 3
    colors = {**{k: v for k, v in COLORS.items() if k != "c.png"}, "b.png": (5, 5, 250), "sub/new.png": (200, 90, 90)}
    assert [e.path for e in index2.entries] == sorted(colors)
    for mode, combine in (("any", max), ("all", min)):
        got = search(index2, ["blue", "red"], space, top_n=3, mode=mode)
        assert [h.path for h in got.hits] == expected_order(colors, lambda c: combine(c[2], c[0]))[:3]
    index2.save(out)
    calls.clear()
    _, report3 = update_index(folder, tagger, load_index(out))
    assert sum(calls) == 0 and report3.unchanged == len(colors) and not report3.added


def test_search_modes_vocabulary_and_errors(folder: Path) -> None:
    tagger = color_tagger()
    index, _ = update_index(folder, tagger)
    space = query_space(index)
    result = search(index, ["Grey", "purple", "red"], space, mode="all", top_n=2)
    assert result.tags == ["grey", "red"] and result.not_in_vocabulary == ["purple"]
    # all = min over tags: grey is GREY_LEVEL for every photo, so it binds for red-ish photos
    assert result.hits[0].path == "a.png" and result.hits[0].tag == "grey" and result.hits[0].principal == 1
    assert result.hits[0].score == pytest.approx(GREY_LEVEL, abs=1e-3)
    assert result.hits[0].tag_scores["red"] == pytest.approx(250 / 255, abs=2e-3)
    with pytest.raises(TagInputError, match="none of the tags"):
        search(index, ["purple", "teal"], space)
    with pytest.raises(TagInputError, match="no tags"):
        search(index, [" ", ""], space)
    with pytest.raises(TagInputError, match="mode"):
        search(index, ["red"], space, mode="some")


@pytest.mark.parametrize("reduction", ["max", "mean"])
def test_scores_agree_with_the_tagger(tmp_path: Path, reduction: str) -> None:
    """An SDL model with random weights: index scores equal Tagger.tag's scores (float16 storage)."""
    model = make_sdl_model(k=3, size=32, seed=3)
    model.config = dataclasses.replace(model.config, reduction=reduction)
    tagger = Tagger(model, make_vocab())
    root = tmp_path / "p"
    root.mkdir()
    for i in range(6):
        make_photo(48, 40, seed=i).save(root / f"{i}.png")
    index, _ = update_index(root, tagger)
    index.save(tmp_path / "i.safetensors")
    index = load_index(tmp_path / "i.safetensors")
    got = search(index, ["cat", "sky"], query_space(index), top_n=6, mode="all")
    ref = {}
    for i in range(6):
        tags = tagger.tag(root / f"{i}.png", extra_tags=["cat", "sky"], only_extra=True, top_k=0)
        ref[f"{i}.png"] = min(t.score for t in tags)
    for hit in got.hits:
        assert hit.score == pytest.approx(ref[hit.path], rel=1e-2, abs=1e-3)
    assert [h.path for h in got.hits] == sorted(ref, key=lambda p: -ref[p])


def test_other_model_folder_and_corrupt_index(folder: Path, tmp_path: Path) -> None:
    tagger = color_tagger()
    index, _ = update_index(folder, tagger)
    path = index.save(folder / DEFAULT_INDEX_NAME)
    with pytest.raises(SearchIndexError, match="built with model 'toy_colors'.*--rebuild"):
        update_index(folder, color_tagger(reduction="mean", name="other"), load_index(folder))
    other = tmp_path / "elsewhere"
    solid(other / "x.png", (1, 2, 3))
    with pytest.raises(SearchIndexError, match="belongs to folder"):
        update_index(other, tagger, load_index(path))
    assert model_identity(tagger).fingerprint == load_index(path).identity.fingerprint

    data = path.read_bytes()
    cases = {
        "truncated.safetensors": data[: len(data) // 2],
        "random.safetensors": os.urandom(4000),
        "empty.safetensors": b"",
    }
    for name, payload in cases.items():
        (tmp_path / name).write_bytes(payload)
        with pytest.raises(SearchIndexError, match="not a readable index"):
            load_index(tmp_path / name)
    ckpt = save_checkpoint(make_sdl_model(), make_vocab(), tmp_path / "model.safetensors")
    with pytest.raises(SearchIndexError, match="not a photo search index"):
        load_index(ckpt)
    # a well-formed file whose manifest disagrees with its tensors
    from safetensors.torch import load_file, save_file
    from safetensors import safe_open
    with safe_open(str(path), "pt") as fh:
        meta = fh.metadata()
    tensors = load_file(str(path))
    tensors["sizes"] = tensors["sizes"][:-1]
    save_file(tensors, str(tmp_path / "short.safetensors"), metadata=meta)
    with pytest.raises(SearchIndexError, match="invalid"):
        load_index(tmp_path / "short.safetensors")
    with pytest.raises(SearchIndexError, match="no such index"):
        load_index(tmp_path / "missing.safetensors")


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "sdl_core", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=240)


def test_cli_index_and_search(tmp_path: Path, capsys) -> None:
    """``index`` through a real subprocess on a saved checkpoint; the rest in-process (each
    interpreter start costs seconds)."""
    ckpt = save_checkpoint(make_sdl_model(k=3, size=32, seed=5), make_vocab(), tmp_path / "toy.safetensors")
    root = tmp_path / "photos"
    root.mkdir()
    for i in range(5):
        make_photo(40, 40, seed=10 + i).save(root / f"p{i}.jpg")
    (root / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    proc = _run("index", str(root), "--model", str(ckpt))
    assert proc.returncode == 1, proc.stderr  # one unreadable file: reported, the rest indexed
    assert "unreadable: bad.png" in proc.stderr and "5 photos (5 added" in proc.stdout
    assert "indexing" in proc.stderr and "indexing" not in proc.stdout  # the progress bar stays on stderr
    assert cli.main(["search", str(root), "dog, spaceship", "--json", "--top-n", "3"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["not_in_vocabulary"] == ["spaceship"] and data["tags"] == ["dog"]
    tagger = Tagger.from_pretrained(str(ckpt))
    ref = {f"p{i}.jpg": tagger.tag(root / f"p{i}.jpg", extra_tags=["dog"], only_extra=True)[0].score
           for i in range(5)}
    assert [r["relative_path"] for r in data["results"]] == sorted(ref, key=lambda p: -ref[p])[:3]

    # re-running reuses the model recorded in the index and encodes nothing
    assert cli.main(["index", str(root), "--no-progress"]) == 1
    assert "0 added, 0 updated, 0 removed, 5 unchanged, 1 unreadable" in capsys.readouterr().out
    assert cli.main(["search", str(root / DEFAULT_INDEX_NAME), "cat", "--top-n", "2"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 2 and all(str(root) in line for line in lines)
    assert cli.main(["search", str(root), "spaceship, moonbase"]) == 2
    assert "none of the tags" in capsys.readouterr().err
    assert cli.main(["search", str(root), "cat", "--model", str(ckpt)]) == 0
    capsys.readouterr()
    other = save_checkpoint(make_sdl_model(k=3, size=32, seed=6), make_vocab(), tmp_path / "other.safetensors")
    assert cli.main(["search", str(root), "cat", "--model", str(other)]) == 2
    assert "built with" in capsys.readouterr().err
    assert cli.main(["index", str(root), "--model", str(other), "--no-progress"]) == 2
    assert "--rebuild" in capsys.readouterr().err
    assert cli.main(["index", str(root), "--model", str(other), "--rebuild", "--no-progress"]) == 1
    assert "5 added" in capsys.readouterr().out
    (root / DEFAULT_INDEX_NAME).write_bytes(b"garbage")
    assert cli.main(["search", str(root), "cat"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "not a readable index" in err and "Traceback" not in err
