"""The approximate index of large collections (sdl_core.search.ann) against exact search.

Synthetic principal vectors from benchmarks/search_data.py (photos whose vectors point at
their tags' word vectors) stand in for a large collection; the toy colour model of
test_search.py runs the real update path with the size threshold lowered.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from benchmarks import search_data
from sdl_core.search import SearchIndexError, load_index, search, update_index
from sdl_core.search.ann import ANN_VERSION, MIN_PHOTOS_ENV, ApproxIndex, min_photos, sidecar_path
from sdl_core.search.calibrate import TARGET, calibrate, exact_best
from tests.core.test_search import color_tagger, solid

WORLD = search_data.world(64, scenes=4)  # dense: every scene has hundreds of photos, as in a large collection


def recall(got, exact) -> float:
    return len({h.path for h in got.hits} & {h.path for h in exact.hits}) / len(exact.hits)


@pytest.fixture(scope="module", params=[(3, "mean"), (5, "max")], ids=["K3-mean", "K5-max"])
def synthetic(request):
    k, reduction = request.param
    index = search_data.search_index(search_data.principal_vectors(12_000, k, WORLD), WORLD, reduction)
    index.ann = ApproxIndex.build(index.vectors, index.ids, reduction)
    return index


@pytest.mark.parametrize("size, mode", [(1, "any"), (3, "any"), (3, "all")])
def test_recall_and_exact_scores(synthetic, size: int, mode: str, monkeypatch) -> None:
    import faiss
    monkeypatch.setattr(synthetic.ann, "scan", 3000)  # so that a query scans only some lists of this small index
    space = search_data.query_space(synthetic)
    exact_index = dataclasses.replace(synthetic, ann=None)
    recalls = []
    for tags in search_data.queries(WORLD, 15, size):
        got = search(synthetic, tags, space, top_n=20, mode=mode)
        exact = search(exact_index, tags, space, top_n=20, mode=mode)
        assert got.approximate and not exact.approximate and got.scored < len(synthetic) // 2
        recalls.append(recall(got, exact))
        truth = {h.path: h for h in exact.hits}
        for hit in got.hits:  # candidates are scored exactly, with the same rule
            combined = min(hit.tag_scores.values()) if mode == "all" else max(hit.tag_scores.values())
            assert hit.score == pytest.approx(combined, abs=1e-6)
            if hit.path in truth:
                assert hit.score == pytest.approx(truth[hit.path].score, abs=1e-5)
                assert hit.principal == truth[hit.path].principal
        assert [h.score for h in got.hits] == sorted((h.score for h in got.hits), reverse=True)
    lists = faiss.extract_index_ivf(synthetic.ann.index)
    assert lists.nprobe <= lists.nlist // 3
    assert np.mean(recalls) >= 0.95, recalls


@pytest.mark.parametrize("kind, raised", [("tagged", False), ("isotropic", True)])
def test_calibration_scans_more_where_vectors_do_not_cluster(kind: str, raised: bool) -> None:
    index = search_data.search_index(search_data.principal_vectors(12_000, 3, WORLD, kind), WORLD, "max")
    approx = ApproxIndex.build(index.vectors, index.ids, "max")
    approx.scan = 3000
    share = calibrate(approx, index.vectors, index.ids, WORLD.vectors)
    assert share >= TARGET and (approx.scan > 3000) == raised and approx.pays() != raised
    index.ann = approx  # vectors that do not cluster: search reads every vector instead
    assert search(index, [WORLD.tags[0]], search_data.query_space(index)).approximate != raised
    sample = WORLD.vectors[:5]
    for found, best in zip((set(approx.candidates(w[None], 20, "any").tolist()) for w in sample),
                           exact_best(index.vectors, index.ids, sample, "max")):
        assert len(found & best) >= 15


def photo_ids(approx: ApproxIndex) -> set[int]:
    """The photos the inverted file(s) hold (a mean model's two must agree)."""
    import faiss

    def held(index) -> np.ndarray:
        lists = faiss.extract_index_ivf(index).invlists
        return np.concatenate([faiss.rev_swig_ptr(lists.get_ids(i), lists.list_size(i)).copy()
                               for i in range(lists.nlist)])

    photos = set((held(approx.index) // approx.k).tolist())
    assert approx.means is None or set(held(approx.means).tolist()) == photos
    return photos


COLORS = [(250, 10, 10), (10, 250, 10), (10, 10, 250), (200, 200, 20), (20, 200, 200), (120, 30, 160),
          (90, 90, 90), (240, 120, 0), (0, 120, 240), (60, 200, 60), (230, 230, 230), (30, 30, 30)]


@pytest.fixture
def folder(tmp_path: Path, monkeypatch) -> Path:
    monkeypatch.setenv(MIN_PHOTOS_ENV, "4")
    root = tmp_path / "photos"
    for i, rgb in enumerate(COLORS):
        solid(root / f"p{i:02d}.png", rgb)
    return root


def same_as_exact(index, queries=("red", "blue, green", "grey, red")) -> None:
    space = search_data.query_space(index)
    for tags in queries:
        for mode in ("any", "all"):
            got = search(index, tags.split(", "), space, top_n=5, mode=mode)
            exact = search(dataclasses.replace(index, ann=None), tags.split(", "), space, top_n=5, mode=mode)
            assert got.approximate and [(h.path, h.score) for h in got.hits] == [(h.path, h.score) for h in exact.hits]


@pytest.mark.parametrize("reduction", ["max", "mean"])
def test_updates_and_removals_keep_ids(folder: Path, tmp_path: Path, reduction: str) -> None:
    tagger = color_tagger(reduction=reduction)
    index, _ = update_index(folder, tagger)
    assert index.ann is not None and (index.ann.means is not None) == (reduction == "mean")
    assert photo_ids(index.ann) == set(index.ids.tolist()) == set(range(12))
    same_as_exact(index)
    out = index.save(tmp_path / "idx.safetensors")
    assert sidecar_path(out).is_file()

    solid(folder / "p01.png", (255, 0, 0))  # changed: a new id; p03 removed; one new photo
    os.utime(folder / "p01.png", ns=(1, 1_000_000_000))
    (folder / "p03.png").unlink()
    solid(folder / "zz.png", (0, 0, 255))
    old = load_index(out)
    approx = old.ann
    updated, report = update_index(folder, tagger, old)
    assert report.updated == ["p01.png"] and report.removed == ["p03.png"] and report.added == ["zz.png"]
    assert updated.ann is approx  # updated in place, not rebuilt
    by_path = dict(zip((e.path for e in updated.entries), updated.ids.tolist()))
    assert by_path["p01.png"] == 12 and by_path["zz.png"] == 13 and by_path["p00.png"] == 0
    assert photo_ids(updated.ann) == set(updated.ids.tolist()) and 1 not in photo_ids(updated.ann)
    same_as_exact(updated)
    space = search_data.query_space(updated)
    assert [h.path for h in search(updated, ["red"], space, top_n=2).hits] == ["p01.png", "p00.png"]
    assert search(updated, ["blue"], space, top_n=1).hits[0].path == "zz.png"

    updated.save(out)
    again = load_index(out)
    assert again.next_id == 14 and photo_ids(again.ann) == photo_ids(updated.ann)
    assert again.ann.scan == updated.ann.scan
    stamp = sidecar_path(out).stat().st_mtime_ns
    again.save(out)  # nothing changed: the sidecar is not written again
    assert sidecar_path(out).stat().st_mtime_ns == stamp

    for name in ("p00.png", "p02.png", "p04.png", "p05.png"):  # many removals: the lists are learnt again
        (folder / name).unlink()
    smaller, _ = update_index(folder, tagger, again)
    assert smaller.ann is not again.ann and photo_ids(smaller.ann) == set(smaller.ids.tolist())
    same_as_exact(smaller)


def test_small_indexes_stay_exact(folder: Path, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv(MIN_PHOTOS_ENV, "100")
    index, _ = update_index(folder, color_tagger())
    assert index.ann is None
    out = tmp_path / "i.safetensors"
    sidecar_path(out).write_bytes(b"left from a larger index")
    index.save(out)
    assert not sidecar_path(out).exists() and not search(load_index(out), ["red"],
                                                           search_data.query_space(index)).approximate
    assert index.vectors.dtype == load_index(out).vectors.dtype == torch.float32  # what an exact scan reads fastest
    for bad in ("0", "-3", "many", "1e5"):
        monkeypatch.setenv(MIN_PHOTOS_ENV, bad)
        with pytest.raises(SearchIndexError, match=MIN_PHOTOS_ENV):
            min_photos()


def test_stale_corrupt_or_foreign_sidecars_are_not_used(folder: Path, tmp_path: Path, caplog) -> None:
    tagger = color_tagger()
    index, _ = update_index(folder, tagger)
    first = index.save(tmp_path / "a.safetensors")
    solid(folder / "new.png", (1, 2, 3))
    other, _ = update_index(folder, tagger, load_index(first))
    second = other.save(tmp_path / "b.safetensors")
    good = sidecar_path(first).read_bytes()
    header_end = good.index(b"}") + 1
    cases = {
        "another index's": sidecar_path(second).read_bytes(),
        "truncated": good[: len(good) // 2],
        "garbage after the header": good[:header_end] + os.urandom(200),
        "not a sidecar": b"\x00" * 100,
        "newer format": good.replace(f'"format_version": "{ANN_VERSION}"'.encode(), b'"format_version": "9"', 1),
    }
    for case, data in cases.items():
        sidecar_path(first).write_bytes(data)
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="sdl_core.search.index"):
            loaded = load_index(first)
        assert loaded.ann is None, case
        assert "approximate index not used" in caplog.text and "sdl_core index" in caplog.text, case
        result = search(loaded, ["red"], search_data.query_space(loaded), top_n=3)  # exact, still right
        assert not result.approximate and result.hits[0].path == "p00.png"
        rebuilt, _ = update_index(folder, tagger, loaded)  # the next update builds it again
        assert rebuilt.ann is not None and photo_ids(rebuilt.ann) == set(rebuilt.ids.tolist())
    assert "format version '9'" in caplog.text or "stale" in caplog.text
    with pytest.raises(SearchIndexError, match="built with model 'toy_colors'.*--rebuild"):  # as for any index
        update_index(folder, color_tagger(reduction="mean", name="other"), load_index(second))


def rewrite(src: Path, dst: Path, drop: tuple[str, ...] = (), **meta: str) -> Path:
    with safe_open(str(src), "pt") as fh:
        metadata = {**fh.metadata(), **meta}
    tensors = {k: v for k, v in load_file(str(src)).items() if k not in drop}
    save_file(tensors, str(dst), metadata={k: v for k, v in metadata.items() if k not in drop})
    return dst


def test_index_format_versions(folder: Path, tmp_path: Path) -> None:
    index, _ = update_index(folder, color_tagger())
    path = index.save(tmp_path / "v2.safetensors")
    v1 = rewrite(path, tmp_path / "v1.safetensors", drop=("ids", "next_id", "ann"), format_version="1")
    old = load_index(v1)  # written before photo ids: numbered by row, no approximate part
    assert old.ann is None and old.ids.tolist() == list(range(12)) and old.next_id == 12
    assert load_index(path).vectors.dtype == torch.float16  # as stored
    with pytest.raises(SearchIndexError, match="format version '9'.*--rebuild"):
        load_index(rewrite(path, tmp_path / "v9.safetensors", format_version="9"))
    twice = rewrite(path, tmp_path / "dup.safetensors")
    tensors = load_file(str(twice))
    tensors["ids"][1] = tensors["ids"][0]
    with safe_open(str(path), "pt") as fh:
        save_file(tensors, str(twice), metadata=fh.metadata())
    with pytest.raises(SearchIndexError, match="ids repeat"):
        load_index(twice)
    assert json.loads(load_index(path).identity.to_json())["name"] == "toy_colors"
