"""The folder pipeline: the pixel table gives the floats the model always got, JPEG draft
decoding keeps the model's input close, and the reader threads keep order and stop early."""
from __future__ import annotations

import io
import threading

import numpy as np
import pytest
import torch
from PIL import Image

from sdl_core.config import PreprocessConfig
from sdl_core.images import DRAFT_MARGIN, load_image, model_pixels, stack_pixels, to_tensor
from sdl_core.official import OFFICIAL_PREPROCESS
from sdl_core.tagger import READ_AHEAD, READ_THREADS, Tagger
from tests.conftest import ROOT, make_photo

IMAGENET = PreprocessConfig(size=16, resize="squash", interpolation="bicubic",
                            mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))


def normalised_directly(arrays: list[np.ndarray], cfg: PreprocessConfig) -> torch.Tensor:
    """What to_tensor computed before the table: x / 255, then (x - mean) / std, per pixel."""
    batch = torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).float().div_(255.0)
    if any(m != 0.0 for m in cfg.mean) or any(s != 1.0 for s in cfg.std):
        batch = (batch - torch.tensor(cfg.mean).view(1, 3, 1, 1)) / torch.tensor(cfg.std).view(1, 3, 1, 1)
    return batch.contiguous()


@pytest.mark.parametrize("cfg", [IMAGENET, OFFICIAL_PREPROCESS, PreprocessConfig(size=16)], ids=str)
def test_the_pixel_table_gives_exactly_the_floats_of_normalising_each_pixel(cfg):
    levels = np.arange(256, dtype=np.uint8)
    arrays = [np.stack([levels.reshape(16, 16), levels[::-1].reshape(16, 16), np.roll(levels, 7).reshape(16, 16)],
                       axis=-1) for _ in range(2)]
    got = stack_pixels(arrays, cfg)
    assert got.dtype == torch.float32 and got.shape == (2, 3, 16, 16) and got.is_contiguous()
    assert torch.equal(got, normalised_directly(arrays, cfg))


def test_to_tensor_is_resize_then_the_table():
    images = [make_photo(40, 30, seed=1), make_photo(20, 50, seed=2)]
    expected = normalised_directly([model_pixels(i, IMAGENET) for i in images], IMAGENET)
    assert torch.equal(to_tensor(images, IMAGENET), expected)
    assert model_pixels(images[0], IMAGENET).shape == (16, 16, 3)


def jpeg(width: int, height: int) -> bytes:
    buf = io.BytesIO()
    make_photo(width, height, seed=3).save(buf, "JPEG", quality=90)
    return buf.getvalue()


@pytest.mark.parametrize(("draft_side", "size"), [(None, (1000, 800)), (300, (500, 400)), (200, (250, 200)),
                                                   (450, (1000, 800)), (90, (125, 100))])
def test_draft_decodes_at_the_smallest_dct_scale_that_keeps_both_sides(draft_side, size):
    assert load_image(jpeg(1000, 800), draft_side=draft_side).size == size


def test_draft_leaves_other_formats_alone():
    buf = io.BytesIO()
    make_photo(400, 300).save(buf, "PNG")
    assert load_image(buf.getvalue(), draft_side=100).size == (400, 300)


def detailed_photo(scale: int) -> bytes:
    """A camera-sized JPEG with detail at every scale: a shipped photo enlarged, plus sensor-like noise."""
    src = Image.open(ROOT / "demo" / "examples" / "coffee.jpg").convert("RGB")
    big = np.asarray(src.resize((src.width * scale, src.height * scale), Image.Resampling.BICUBIC), np.float32)
    noisy = big + np.random.default_rng(0).normal(0, 6, big.shape)
    buf = io.BytesIO()
    Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8)).save(buf, "JPEG", quality=92)
    return buf.getvalue()


@pytest.mark.parametrize("scale", [3, 6])
def test_a_drafted_photo_gives_the_model_nearly_the_same_input(scale):
    """At DRAFT_MARGIN x the model's side the input moves well under one grey level on average
    (less than re-saving the JPEG at quality 95 moves it); at 1x it would move twice as much."""
    cfg = PreprocessConfig(size=224, resize="squash", interpolation="bicubic")
    data = detailed_photo(scale)
    exact = model_pixels(load_image(data), cfg).astype(np.float32)
    drafted = model_pixels(load_image(data, draft_side=DRAFT_MARGIN * cfg.size), cfg).astype(np.float32)
    assert load_image(data, draft_side=DRAFT_MARGIN * cfg.size).size != load_image(data).size  # it did draft
    assert float(np.abs(drafted - exact).mean()) < 0.4  # 0.24 here; 0.62 with a margin of 1
    assert float(np.abs(drafted - exact).mean()) > 0.0


def test_reader_threads_keep_order_and_stop_when_the_caller_does(sdl_model, toy_vocab, tmp_path, monkeypatch):
    paths = []
    for i in range(40):
        path = tmp_path / f"p{i:02d}.jpg"
        make_photo(48, 40, seed=i).save(path)
        paths.append(str(path))
    tagger = Tagger(sdl_model, toy_vocab)
    read, lock = [], threading.Lock()
    original = Tagger._read_file

    def counting(self, path):
        with lock:
            read.append(path)
        return original(self, path)

    monkeypatch.setattr(Tagger, "_read_file", counting)
    batches = tagger.encode_files(paths, batch_size=2)
    entries, encoded = next(batches)
    assert [p for p, _ in entries] == paths[:2] and encoded.vectors.shape[0] == 2
    batches.close()  # the caller stops: queued reads are dropped
    assert len(read) <= 2 * (READ_AHEAD + 2) + READ_THREADS
    everything = [p for entries, _ in tagger.encode_files(paths, batch_size=3) for p, _ in entries]
    assert everything == paths
