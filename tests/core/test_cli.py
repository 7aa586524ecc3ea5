"""The real command: `python -m sdl_core ...` in a subprocess."""
import json
import os
import subprocess
import sys

import pytest

from sdl_core.checkpoint import save_checkpoint
from tests.conftest import REFERENCE, ROOT, make_photo, make_sdl_model, make_vocab, needs_reference


def run_cli(*args, cwd=ROOT):
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.run([sys.executable, "-m", "sdl_core", *map(str, args)], capture_output=True, text=True,
                          cwd=cwd, env=env, timeout=300)


@pytest.fixture(scope="module")
def toy_ckpt(tmp_path_factory):
    folder = tmp_path_factory.mktemp("cli")
    path = save_checkpoint(make_sdl_model(), make_vocab(), folder / "toy.safetensors")
    for i in range(3):
        make_photo(seed=i).save(folder / f"img{i}.jpg")
    (folder / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated")
    return path


def test_tag_human_output_stars_unseen(toy_ckpt):
    img = toy_ckpt.parent / "img0.jpg"
    out = run_cli("tag", img, "--model", toy_ckpt, "--top-k", "0")
    assert out.returncode == 0, out.stderr
    lines = out.stdout.strip().splitlines()
    assert len(lines) == 8
    tags = [line.split()[0] for line in lines]
    assert "*boat*" in tags and "*house*" in tags and "cat" in tags


def test_tag_json_schema_and_errors(toy_ckpt):
    folder = toy_ckpt.parent
    out = run_cli("tag", folder / "img0.jpg", folder / "broken.jpg", folder / "img1.jpg", "--model", toy_ckpt,
                  "--tags", "sky, zebra", "--top-k", "3", "--json", "--batch-size", "2")
    assert out.returncode == 1  # some images failed
    data = json.loads(out.stdout)
    assert data["model"] == "toy_test_resnet_k3"
    assert [r["image"] for r in data["results"]] == [str(folder / "img0.jpg"), str(folder / "img1.jpg")]
    first = data["results"][0]
    assert len(first["tags"]) == 3 and set(first["tags"][0]) >= {"tag", "score", "seen", "principal"}
    assert first["not_in_vocabulary"] == ["zebra"]
    assert data["errors"][0]["image"] == str(folder / "broken.jpg") and data["errors"][0]["error"]


def test_tag_csv(toy_ckpt):
    out = run_cli("tag", toy_ckpt.parent / "img2.jpg", "--model", toy_ckpt, "--top-k", "2", "--csv")
    assert out.returncode == 0
    rows = out.stdout.strip().splitlines()
    assert rows[0] == "image,rank,tag,score,seen,principal,typed,approximate,in_top_k" and len(rows) == 3


def test_typed_tags_outside_the_top_k_are_reported_with_their_rank(toy_ckpt):
    img = toy_ckpt.parent / "img1.jpg"
    out = run_cli("tag", img, "--model", toy_ckpt, "--tags", "sky, zebra, cat", "--top-k", "0", "--json")
    everything = [t["tag"] for t in json.loads(out.stdout)["results"][0]["tags"]]
    out = run_cli("tag", img, "--model", toy_ckpt, "--tags", "sky, zebra, cat", "--top-k", "1", "--json")
    result = json.loads(out.stdout)["results"][0]
    assert [t["tag"] for t in result["typed"]] == ["sky", "cat"] and result["not_in_vocabulary"] == ["zebra"]
    assert [t["rank"] for t in result["typed"]] == [everything.index("sky") + 1, everything.index("cat") + 1]
    outside = [t for t in result["typed"] if not t["in_top_k"]]
    assert len(outside) >= 1 and all(t["rank"] > 1 for t in outside)
    human = run_cli("tag", img, "--model", toy_ckpt, "--tags", "sky, zebra, cat", "--top-k", "1")
    assert human.returncode == 0, human.stderr
    line = next(x for x in human.stdout.splitlines() if x.startswith("your tags outside the top 1 (of 8): "))
    assert all(f"{t['tag']} (#{t['rank']}, {t['score']:.4f})" in line for t in outside)
    rows = run_cli("tag", img, "--model", toy_ckpt, "--tags", "sky, cat", "--top-k", "1", "--csv").stdout
    assert all(f",{t['rank']},{t['tag']},{t['score']:.6f},1,{t['principal']},1,0,0" in rows for t in outside)


def test_default_model_reports_typed_tags_with_rank_and_score(tmp_path):
    """The command of issue 12: both typed tags come back, shown or not."""
    photo = ROOT / "demo" / "examples" / "coffee.jpg"
    out = run_cli("tag", photo, "--tags", "pagoda, skyscraper", "--top-k", "3", "--json")
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)["results"][0]
    typed = result["typed"]
    assert [t["tag"] for t in typed] == ["pagoda", "skyscraper"]
    last_shown = result["tags"][-1]["score"]
    for t in typed:
        assert set(t) >= {"tag", "score", "rank", "seen", "principal"} and 1 <= t["rank"] <= result["ranked"]
        assert t["in_top_k"] == (t["tag"] in {x["tag"] for x in result["tags"]})
        assert t["in_top_k"] or (t["rank"] > 3 and t["score"] <= last_shown)
    human = run_cli("tag", photo, "--tags", "pagoda, skyscraper", "--top-k", "1")
    assert human.returncode == 0, human.stderr
    assert "your tags outside the top 1" in human.stdout
    for t in typed:
        assert t["tag"] in human.stdout and f"(#{t['rank']}, " in human.stdout


def test_only_tags_and_vocab_file(toy_ckpt, tmp_path):
    vocab = tmp_path / "v.txt"
    vocab.write_text("cat\nboat\n")
    out = run_cli("tag", toy_ckpt.parent / "img0.jpg", "--model", toy_ckpt, "--vocab", vocab, "--top-k", "0",
                  "--json")
    assert sorted(t["tag"] for t in json.loads(out.stdout)["results"][0]["tags"]) == ["boat", "cat"]
    out = run_cli("tag", toy_ckpt.parent / "img0.jpg", "--model", toy_ckpt, "--tags", "sky", "--only-tags",
                  "--json")
    assert [t["tag"] for t in json.loads(out.stdout)["results"][0]["tags"]] == ["sky"]


def test_usage_errors_exit_2_with_one_line(toy_ckpt):
    out = run_cli("tag", toy_ckpt.parent / "img0.jpg", "--model", "no-such-model")
    assert out.returncode == 2 and out.stderr.startswith("error: ") and "Traceback" not in out.stderr
    out = run_cli("tag", toy_ckpt.parent / "img0.jpg", "--model", toy_ckpt, "--top-k", "-1")
    assert out.returncode == 2
    bad = toy_ckpt.parent / "bad.safetensors"
    bad.write_bytes(b"garbage")
    out = run_cli("tag", toy_ckpt.parent / "img0.jpg", "--model", bad)
    assert out.returncode == 2 and "safetensors" in out.stderr and "Traceback" not in out.stderr


def test_all_images_failing_exits_1(toy_ckpt):
    out = run_cli("tag", toy_ckpt.parent / "broken.jpg", "--model", toy_ckpt)
    assert out.returncode == 1 and "broken.jpg" in out.stderr


@needs_reference
def test_import_official_command(tmp_path):
    from tests.core.test_checkpoint import _authors_checkpoint
    _authors_checkpoint(tmp_path / "NUS_mtresnet_224.pth")
    out_path = tmp_path / "nus.safetensors"
    out = run_cli("import-official", tmp_path / "NUS_mtresnet_224.pth", REFERENCE / "NUS_WIDE", out_path)
    assert out.returncode == 0, out.stderr
    assert "K=7, D=300, 1006 tags (81 unseen)" in out.stdout
    img = tmp_path / "x.jpg"
    make_photo().save(img)
    out = run_cli("tag", img, "--model", out_path, "--top-k", "0", "--tags", "dog, qwzx", "--json")
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)["results"][0]
    typed = {t["tag"]: t for t in result["tags"] if t["typed"]}
    assert result["not_in_vocabulary"] == [] and set(typed) == {"dog", "qwzx"}  # no fastText: the bridge
    assert typed["qwzx"]["approximate"] is True and typed["dog"]["approximate"] is False


def test_import_official_missing_file_is_exit_2(tmp_path):
    out = run_cli("import-official", tmp_path / "nope.pth", tmp_path, tmp_path / "o.safetensors")
    assert out.returncode == 2 and "no such file" in out.stderr


def test_default_batch_size_follows_the_device():
    from argparse import Namespace

    from sdl_core.cli.tag import CPU_BATCH_SIZE, DEVICE_BATCH_SIZE, default_batch_size

    assert default_batch_size(Namespace(batch_size=None, device="cpu")) == CPU_BATCH_SIZE
    assert default_batch_size(Namespace(batch_size=None, device="cuda:1")) == DEVICE_BATCH_SIZE
    assert default_batch_size(Namespace(batch_size=7, device="cpu")) == 7
