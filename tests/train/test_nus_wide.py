"""NUS-WIDE as distributed: file formats, missing and corrupt images, the paper's split
(checked against the authors' files), the generator, the recipe and the authors' Cutout."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

from tests.conftest import REFERENCE, needs_reference
from train.augment import CutoutBox
from train.cli import main
from train.data import DataSpec
from train.datasets import train_transform
from train.errors import DataError, RunError
from train.fit import FitOptions
from train.nus_wide import parse_spec, read_binary_matrix, read_nus_wide
from train.nus_wide_prepare import authors_differences, prepare_nus_wide
from train.nus_wide_synth import DUPLICATED, make_nus_wide
from train.recipe import load_recipe

AUTHORS = REFERENCE / "NUS_WIDE"


def _column(data, tag: str) -> np.ndarray:
    return data.images.targets[:, data.images.tags.index(tag)]


@pytest.mark.parametrize("split", ["train", "test"])
def test_reader_gives_back_what_the_files_say(nus_tree, split):
    truth = nus_tree.splits[split]
    data = read_nus_wide(nus_tree.root, split)
    assert data.image_dir == nus_tree.root / "Flickr"
    assert [p.relative_to(data.image_dir).as_posix() for p in data.images.paths] == truth.names
    assert data.counts == {"listed": len(truth.names), "missing": len(truth.missing)}
    assert sorted(n for n, e in zip(truth.names, data.exists) if not e) == sorted(truth.missing)
    concepts = set(nus_tree.concepts)
    for j, tag in enumerate(nus_tree.tags_1k):
        if tag not in concepts:  # a seen tag: the user tags
            assert np.array_equal(_column(data, tag), truth.tags[:, j]), tag
    for k, concept in enumerate(nus_tree.concepts):  # unseen: the ground truth, never the user tag
        assert np.array_equal(_column(data, concept), truth.labels[:, k]), concept
    assert sorted(data.split.duplicates) == sorted(DUPLICATED)
    assert list(data.split.tags) == sorted(set(nus_tree.tags_1k) | concepts)
    assert int(data.split.seen.sum()) == len(nus_tree.tags_1k) - len(DUPLICATED)
    usable = data.usable("any")
    assert len(usable) == int((data.exists & data.images.targets.any(axis=1)).sum())
    assert data.counts["no_any_label"] == int((data.exists & ~data.images.targets.any(axis=1)).sum()) > 0


def test_user_tag_of_a_concept_is_not_its_label(nus_tree):
    """The duplicated tags' user columns are dropped: the concept's column is the ground truth."""
    truth = nus_tree.splits["test"]
    j, k = nus_tree.tags_1k.index("azure"), nus_tree.concepts.index("azure")
    assert (truth.tags[:, j] != truth.labels[:, k]).any()  # the generator's users tag unreliably
    data = read_nus_wide(nus_tree.root, "test")
    assert np.array_equal(_column(data, "azure"), truth.labels[:, k])


def test_all_image_files_and_flat_image_folder_read_the_same(nus_tree, tmp_path):
    alt = make_nus_wide(tmp_path / "all", images=40, size=48, seed=0, labels="all")
    assert not (alt.root / "NUS_WID_Tags" / "Test_Tags1k.dat").exists()
    assert not any((alt.root / "Groundtruth" / "TrainTestLabels").iterdir())
    flat = tmp_path / "all" / "images"
    flat.mkdir()
    for image in (alt.root / "Flickr").rglob("*.jpg"):
        image.rename(flat / image.name)
    shutil.rmtree(alt.root / "Flickr")
    for split in ("train", "test"):
        ours, theirs = read_nus_wide(nus_tree.root, split), read_nus_wide(alt.root, split)
        assert np.array_equal(ours.images.targets, theirs.images.targets)
        assert theirs.image_dir == flat and [p.parent for p in theirs.images.paths] == [flat] * len(theirs.images)
        assert theirs.counts == ours.counts
    moved = tmp_path / "elsewhere"
    flat.rename(moved)
    assert read_nus_wide(alt.root, "test", images_root=moved).image_dir == moved


def test_formats_and_specs(tmp_path):
    tab, space = tmp_path / "tab.dat", tmp_path / "space.txt"
    tab.write_bytes(b"0\t1\t0\t\r\n1\t1\t0\t\r\n")
    space.write_text("0 1 0\n1 1.0 0\n")
    assert np.array_equal(read_binary_matrix(tab, 2, 3), read_binary_matrix(space, 2, 3))
    with pytest.raises(DataError, match="tab.dat: 6 values, but 3 images x 3 columns"):
        read_binary_matrix(tab, 3, 3)
    (tmp_path / "bad.txt").write_text("0\nyes\n")
    with pytest.raises(DataError, match="not a matrix of numbers"):
        read_binary_matrix(tmp_path / "bad.txt", 2, 1)
    assert parse_spec(f"nus-wide:{tmp_path}", "train").split == "train"
    assert parse_spec(f"NUS-WIDE:{tmp_path}:test", "train") == parse_spec(f"nus-wide:{tmp_path}", "test")
    for bad, message in (("nus-wide:", "give the NUS-WIDE folder"), (f"nus-wide:{tmp_path}/nope", "not a folder")):
        with pytest.raises(DataError, match=message):
            parse_spec(bad, "test")


def _broken_copy(nus_tree, tmp_path, name):
    root = tmp_path / name
    shutil.copytree(nus_tree.root / "NUS_WID_Tags", root / "NUS_WID_Tags")
    for folder in ("ImageList", "ConceptsList", "Groundtruth"):
        shutil.copytree(nus_tree.root / folder, root / folder)
    return root


def test_broken_trees_are_one_line_errors(nus_tree, tmp_path, capsys):
    no_concepts = _broken_copy(nus_tree, tmp_path, "a")
    shutil.rmtree(no_concepts / "ConceptsList")
    short = _broken_copy(nus_tree, tmp_path, "b")
    rows = (short / "NUS_WID_Tags" / "Test_Tags1k.dat").read_text().splitlines()
    (short / "NUS_WID_Tags" / "Test_Tags1k.dat").write_text("\n".join(rows[:-1]) + "\n")
    no_label = _broken_copy(nus_tree, tmp_path, "c")
    (no_label / "Groundtruth" / "TrainTestLabels" / "Labels_ruby_Test.txt").unlink()
    (no_label / "Groundtruth" / "AllLabels" / "Labels_ruby.txt").unlink()
    cases = [(no_concepts, "Concepts81.txt"), (short, "Test_Tags1k.dat"), (no_label, "concept 'ruby'")]
    for root, message in cases:
        assert main(["evaluate", "--checkpoint", "default", "--data", f"nus-wide:{root}"]) == 2
        err = capsys.readouterr().err
        assert err.startswith("error:") and message in err and len(err.strip().splitlines()) == 1, err
    assert main(["fit", "--data", f"nus-wide:{nus_tree.root}", "--unseen", "ruby", "--out", str(tmp_path / "r")]) == 2
    assert "the split is the paper's" in capsys.readouterr().err


def test_images_missing_everywhere_are_counted_not_fatal(nus_tree, tmp_path, caplog):
    root = _broken_copy(nus_tree, tmp_path, "metadata_only")
    data = read_nus_wide(root, "test")
    assert data.counts["missing"] == data.counts["listed"] and "missing" in caplog.text
    with pytest.raises(DataError, match="no training image is present"):
        prepare_nus_wide(DataSpec(f"nus-wide:{root}", "wordllama"))


@needs_reference
def test_split_equals_the_authors_files(tmp_path, caplog):
    """Real tag names: the reader's 925/81 split and order are the authors' classes.pickle."""
    from sdl_core.vocab import Vocabulary
    tree = make_nus_wide(tmp_path / "real", images=16, size=32, real_names=AUTHORS, missing=1, corrupt=1)
    assert len(tree.tags_1k) == 1000 and len(tree.concepts) == 81
    split = read_nus_wide(tree.root, "test").split
    authors = Vocabulary.from_authors_folder(AUTHORS)
    assert list(split.tags) == authors.tags and np.array_equal(split.seen, authors.seen)
    assert (int(split.seen.sum()), len(split.duplicates)) == (925, 75)
    assert authors_differences(split, AUTHORS) == []
    prepared = prepare_nus_wide(DataSpec(f"nus-wide:{tree.root}", str(AUTHORS), val_fraction=0))
    assert prepared.vocab.tags == authors.tags and prepared.summary()["split_warnings"] == []

    tag_file = tree.root / "NUS_WID_Tags" / "TagList1k.txt"
    tag_file.write_text(tag_file.read_text().replace("abandoned\n", "abandonned\n"))
    concept_file = tree.root / "ConceptsList" / "Concepts81.txt"
    moved = next(c for c in tree.concepts if c in tree.tags_1k)  # now a seen tag here, unseen for the authors
    concept_file.write_bytes(concept_file.read_bytes().replace(f"{moved}\r\n".encode(), b""))
    problems = authors_differences(read_nus_wide(tree.root, "test").split, AUTHORS)
    text = " ".join(problems)
    assert "'abandonned'" in text and "'abandoned'" in text and f"'{moved}'" in text and "seen here" in text
    caplog.clear()
    prepare_nus_wide(DataSpec(f"nus-wide:{tree.root}", str(AUTHORS), val_fraction=0))
    assert "abandonned" in caplog.text and "split vs the authors' files" in caplog.text


def test_synth_nus_wide_command(tmp_path, capsys):
    assert main(["synth-nus-wide", str(tmp_path / "t"), "--images", "12", "--missing", "1", "--corrupt", "1"]) == 0
    assert "1 missing, 1 corrupt" in capsys.readouterr().out
    data = read_nus_wide(tmp_path / "t", "train")
    assert data.counts["listed"] + read_nus_wide(tmp_path / "t", "test").counts["listed"] == 12
    first = (tmp_path / "t" / "ImageList" / "TrainImagelist.txt").read_bytes().splitlines(keepends=True)[0]
    assert b"\\" in first and first.endswith(b"\r\n")
    assert main(["synth-nus-wide", str(tmp_path / "u"), "--images", "4"]) == 2
    assert main(["synth-nus-wide", str(tmp_path / "v"), "--real-names", str(tmp_path)]) == 2
    assert "no classes.pickle" in capsys.readouterr().err


def test_cutout_box_is_one_colour_of_half_the_side():
    img = Image.new("RGB", (40, 20), (0, 0, 0))
    full = 0
    for seed in range(12):
        torch.manual_seed(seed)
        out = np.asarray(CutoutBox(0.5)(img))
        changed = np.argwhere(out.any(axis=2))
        if not len(changed):
            continue  # a box of colour (0, 0, 0)
        (y0, x0), (y1, x1) = changed.min(0), changed.max(0)
        box = out[y0:y1 + 1, x0:x1 + 1].reshape(-1, 3)
        assert (box == box[0]).all() and x1 - x0 + 1 <= 21 and y1 - y0 + 1 <= 11
        full += (x1 - x0 + 1, y1 - y0 + 1) == (21, 11)
    assert full > 0  # unclipped boxes are 20 x 10 (+1: the rectangle includes its far edge)
    assert np.asarray(img).max() == 0  # the input is not painted on
    from sdl_core.config import PreprocessConfig
    steps = [type(t).__name__ for t in train_transform(PreprocessConfig(size=32), 1.0, 9, 0.0, False, 0.5).transforms]
    assert steps[:2] == ["Resize", "CutoutBox"] and "RandomHorizontalFlip" not in steps and "RandomErasing" not in steps


def test_recipe_is_the_papers_and_flags_win(tmp_path, monkeypatch, capsys):
    recipe = load_recipe("sdl_nus_wide", set(FitOptions.__dataclass_fields__))
    paper = {"backbone": "tresnet_m", "image_size": 224, "k": 7, "lam": 0.01, "lr": 2.5e-5, "weight_decay": 3e-4,
             "epochs": 10, "batch_size": 32, "amp": "on", "best_metric": "gzsl_F1@3", "flip": False,
             "cutout_box": 0.5, "crop_scale": 1.0}
    assert {k: recipe[k] for k in paper} == paper and recipe["ema"] > 0 and recipe["randaugment"] > 0
    seen = {}

    def capture(options):
        seen["opts"] = options
        raise RunError("captured")
    monkeypatch.setattr("train.fit.fit", capture)
    assert main(["fit", "--recipe", "sdl_nus_wide", "--data", "x", "--out", str(tmp_path), "--lr", "1e-3"]) == 2
    opts = seen["opts"]
    capsys.readouterr()
    assert opts.lr == 1e-3 and opts.k == 7 and opts.backbone == "tresnet_m" and opts.cutout_box == 0.5
    assert opts.flip is False and opts.recipe == "sdl_nus_wide"
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"lr": 1e-4, "data": "elsewhere", "learning_rate": 2}))
    assert main(["fit", "--recipe", str(bad), "--data", "x", "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "'data'" in err and "'learning_rate'" in err and len(err.strip().splitlines()) == 1
    with pytest.raises(RunError, match="named: sdl_nus_wide"):
        load_recipe("nope", set())


def test_smoke_runs_the_recipe(tmp_path):
    """What gpu_smoke.sh runs (the recipe: EMA, inference and loader rates), tiny, on the CPU."""
    out = tmp_path / "smoke.json"
    assert main(["smoke", "--recipe", "sdl_nus_wide", "--backbone", "test_resnet", "--image-size", "32", "--steps", "2",
                 "--warmup", "1", "--batch-size", "2", "--tags", "20", "--dim", "16", "--device", "cpu", "--amp", "off",
                 "--loader-workers", "1", "--json", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["ema"] == 0.9997 and result["batch_size"] == 2 and result["backbone"] == "test_resnet"
    assert result["eval_images_per_s"] > 0 and result["loader_images_per_s"] > 0 and result["loader_workers"] == 1
