"""Reading datasets, splits and tag vectors."""
from __future__ import annotations

import json
import pickle

import numpy as np
import pytest
import torch
from PIL import Image

from sdl_core.config import PreprocessConfig
from sdl_core.wordvec import AUTHORS_FASTTEXT
from tests.conftest import REFERENCE, make_photo, needs_reference
from train.annotations import TaggedImages, read_coco, read_tags_csv
from train.data import DataSpec, prepare_data
from train.datasets import EvalTransform, ImageTagDataset, train_transform
from train.splits import read_split
from train.vectors import tag_vectors
from train.errors import DataError


def _photos(folder, names):
    folder.mkdir(parents=True, exist_ok=True)
    for i, name in enumerate(names):
        make_photo(40, 32, seed=i).save(folder / name)


def _vec(path, words, dim=8, seed=0):
    rng = np.random.default_rng(seed)
    rows = [f"{len(words)} {dim}"] + [w + " " + " ".join(f"{x:.5f}" for x in rng.normal(size=dim)) for w in words]
    path.write_text("\n".join(rows) + "\n")
    return path


def test_tags_csv_separators_duplicates_and_missing_files(tmp_path):
    _photos(tmp_path, ["a.jpg", "b.jpg"])
    (tmp_path / "tags.csv").write_text('image,tags\na.jpg,Beach|sunset;sea\nb.jpg,"dog; cat"\na.jpg,dog\n'
                                       "gone.jpg,cat\n")
    data = read_tags_csv(tmp_path)
    assert data.tags == ["beach", "cat", "dog", "sea", "sunset"]
    rows = {p.name: {t for t, on in zip(data.tags, r) if on} for p, r in zip(data.paths, data.targets)}
    assert rows["a.jpg"] == {"beach", "sunset", "sea", "dog"} and rows["b.jpg"] == {"dog", "cat"}
    assert [p.name for p in data.existing().paths] == ["a.jpg", "b.jpg"]


@pytest.mark.parametrize("text,match", [("", "empty"), ("file,labels\na.jpg,x\n", "image' and 'tags'"),
                                        ("image,tags\n,x\n", "empty image name")])
def test_tags_csv_errors(tmp_path, text, match):
    (tmp_path / "tags.csv").write_text(text)
    with pytest.raises(DataError, match=match):
        read_tags_csv(tmp_path)


def _coco(path, names, labels):
    data = {"images": [{"id": i + 10, "file_name": f"img{i}.jpg"} for i in range(len(labels))],
            "categories": [{"id": 100 - j, "name": n} for j, n in enumerate(names)],  # ids descending: order by id
            "annotations": [{"image_id": i + 10, "category_id": 100 - names.index(n)}
                            for i, tags in enumerate(labels) for n in tags]}
    path.write_text(json.dumps(data))
    return path


def test_coco_reading_orders_categories_by_id(tmp_path):
    data = read_coco(_coco(tmp_path / "a.json", ["cat", "dog", "car"], [["cat"], ["car", "dog"]]))
    assert data.tags == ["car", "dog", "cat"]
    assert data.targets.tolist() == [[False, False, True], [True, True, False]]
    assert data.paths[0] == tmp_path / "img0.jpg"


def test_split_formats(tmp_path):
    tags = ["car", "dog", "cat", "bus"]
    (tmp_path / "split.json").write_text(json.dumps({"seen": ["car", "dog"], "unseen": ["cat"]}))
    assert read_split(tmp_path / "split.json", tags).unseen == ("cat",)
    (tmp_path / "cls.json").write_text(json.dumps({"train": [0, 1, 3], "test": [2], "val": []}))
    assert read_split(tmp_path / "cls.json", tags).seen == ("car", "dog", "bus")
    with (tmp_path / "cls_ids.pickle").open("wb") as fh:
        pickle.dump({"train": {3, 0}, "test": {1}, "val": set()}, fh)
    split = read_split(tmp_path / "cls_ids.pickle", tags)
    assert split.seen == ("car", "bus") and split.unseen == ("dog",)
    assert read_split("cat, bus", tags).seen == ("car", "dog")
    (tmp_path / "bad.json").write_text(json.dumps({"train": [0, 9], "test": [1]}))
    with pytest.raises(DataError, match="outside"):
        read_split(tmp_path / "bad.json", tags)
    (tmp_path / "both.json").write_text(json.dumps({"seen": ["car"], "unseen": ["car"]}))
    with pytest.raises(DataError, match="both seen and unseen"):
        read_split(tmp_path / "both.json", tags)


def test_zs_split_folder_takes_seen_from_training_annotations(tmp_path):
    names = ["car", "dog", "cat", "bus"]
    zs = tmp_path / "zs_split"
    zs.mkdir()
    _coco(zs / "train_1_2.json", names, [["car"], ["dog", "car"]])
    _coco(zs / "val_1_2.json", names, [["cat", "car"], ["dog"]])
    _photos(tmp_path / "images", ["img0.jpg", "img1.jpg"])
    vec = _vec(tmp_path / "w.vec", names)
    data = prepare_data(DataSpec(str(zs), str(vec), images_root=str(tmp_path / "images")))
    assert data.vocab.seen_tags == ["dog", "car"] and data.vocab.unseen_tags == ["cat"]
    assert data.val is not None and len(data.val) == 2 and data.val.tags == data.vocab.tags


def test_prepare_folder_data_holds_out_validation_and_drops_tags_without_vectors(tmp_path, caplog):
    names = [f"p{i}.jpg" for i in range(10)]
    _photos(tmp_path, names)
    (tmp_path / "tags.csv").write_text("image,tags\n" + "".join(f"{n},cat|dog;zzqx\n" for n in names))
    vec = _vec(tmp_path / "w.vec", ["cat", "dog", "lion"])
    data = prepare_data(DataSpec(str(tmp_path), str(vec), split="lion", val_fraction=0.2, seed=1))
    assert data.vocab.tags == ["cat", "dog", "lion"] and data.vocab.unseen_tags == ["lion"]
    assert (len(data.train), len(data.val)) == (8, 2)
    assert not set(data.train.paths) & set(data.val.paths)
    assert "zzqx" in caplog.text
    assert data.summary()["unseen_tags"] == 1


def test_prepare_errors(tmp_path):
    with pytest.raises(DataError, match="no such file"):
        prepare_data(DataSpec(str(tmp_path / "nope"), "wordllama"))
    _photos(tmp_path, ["a.jpg"])
    (tmp_path / "tags.csv").write_text("image,tags\na.jpg,cat\n")
    vec = _vec(tmp_path / "w.vec", ["cat"])
    with pytest.raises(DataError, match="tag vectors"):
        prepare_data(DataSpec(str(tmp_path), str(tmp_path / "vectors.npy")))
    with pytest.raises(DataError, match="nothing to train on"):
        prepare_data(DataSpec(str(tmp_path), str(vec), split="cat", val_fraction=0))


def test_table_pickle_columns_follow_categories(tmp_path):
    table = np.arange(12, dtype=np.float32).reshape(1, 4, 3) + 1  # (1, D=4, N=3) like the authors' COCO file
    with (tmp_path / "wv.pickle").open("wb") as fh:
        pickle.dump({"wordvec_array": table}, fh)
    vecs = tag_vectors(tmp_path / "wv.pickle", ["a", "b", "c"])
    expected = table[0].T / np.linalg.norm(table[0].T, axis=1, keepdims=True)
    np.testing.assert_allclose(vecs.vectors["b"], expected[1], rtol=1e-6)
    assert vecs.info.name == "table:wv" and vecs.info.dim == 4
    with pytest.raises(DataError, match="does not fit"):
        tag_vectors(tmp_path / "wv.pickle", ["a", "b"])


@needs_reference
def test_authors_coco_files():
    """cls_ids.pickle indexes the 80 COCO categories; wordvec_array.pickle has their vectors."""
    names = [f"cat{i}" for i in range(80)]  # the file carries no names: columns follow the category order
    split = read_split(REFERENCE / "COCO" / "cls_ids.pickle", names)
    assert (len(split.seen), len(split.unseen)) == (48, 17) and "cat4" in split.unseen  # airplane is unseen
    vecs = tag_vectors(REFERENCE / "COCO" / "wordvec_array.pickle", names)
    assert vecs.info == AUTHORS_FASTTEXT
    assert np.allclose(np.linalg.norm(np.stack(list(vecs.vectors.values())), axis=1), 1.0, atol=1e-3)


@needs_reference
def test_authors_nus_folder_gives_vectors_and_split():
    vecs = tag_vectors(REFERENCE / "NUS_WIDE", ["sky", "clouds"])
    assert vecs.split is not None and len(vecs.split.unseen) == 81 and len(vecs.split.seen) == 925
    assert vecs.info.dim == 300 and not vecs.missing


def test_transforms_and_unreadable_images(tmp_path):
    _photos(tmp_path, ["ok.jpg"])
    (tmp_path / "bad.jpg").write_bytes(b"not an image")
    data = TaggedImages([tmp_path / "ok.jpg", tmp_path / "bad.jpg"], ["a", "b"], np.array([[1, 0], [1, 1]]))
    cfg = PreprocessConfig(size=32, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))
    pixels, target = ImageTagDataset(data, EvalTransform(cfg), 32)[0]
    assert pixels.shape == (3, 32, 32) and target.tolist() == [True, False]
    pixels, target = ImageTagDataset(data, EvalTransform(cfg), 32)[1]
    assert not target.any() and float(pixels.abs().sum()) == 0.0  # left out of the loss, counted as skipped
    aug = train_transform(cfg, crop_scale=0.5, randaugment=9, cutout=1.0)
    out = aug(Image.open(tmp_path / "ok.jpg").convert("RGB"))
    assert out.shape == (3, 32, 32) and out.dtype == torch.float32 and out.min() >= -1.0 - 1e-6
