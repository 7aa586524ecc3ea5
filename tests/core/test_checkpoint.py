"""Our safetensors checkpoints (round trip, strictness, corrupt files) and the authors' importer."""
import json

import numpy as np
import pytest
import torch

from sdl_core.checkpoint import load_checkpoint, read_checkpoint, save_checkpoint
from sdl_core.official import import_official, official_key_to_timm
from sdl_core.errors import CheckpointError
from sdl_core.tagger import Tagger
from tests.conftest import REFERENCE, make_photo, make_sdl_model, make_vocab, needs_reference


def test_round_trip_gives_identical_scores(tmp_path, sdl_model, toy_vocab):
    path = save_checkpoint(sdl_model, toy_vocab, tmp_path / "toy.safetensors")
    model, vocab = load_checkpoint(path)
    assert model.config == sdl_model.config
    assert vocab.tags == toy_vocab.tags and vocab.seen.tolist() == toy_vocab.seen.tolist()
    photo = make_photo()
    a = Tagger(sdl_model, toy_vocab).tag(photo, top_k=0)
    b = Tagger(model, vocab).tag(photo, top_k=0)
    assert [t.tag for t in a] == [t.tag for t in b]
    np.testing.assert_allclose([t.score for t in a], [t.score for t in b], atol=1e-6)


def test_checkpoint_is_self_describing(tmp_path, sdl_model, toy_vocab):
    path = save_checkpoint(sdl_model, toy_vocab, tmp_path / "toy.safetensors")
    config, state, vocab = read_checkpoint(path)
    assert config.backbone == "test_resnet" and config.k == 3 and config.d == 16
    assert config.preprocess.size == 64 and config.word_space.name == "toy-space-16"
    assert "head.weight" in state and len(vocab) == len(toy_vocab)


def test_truncated_file_is_a_clear_error(tmp_path, sdl_model, toy_vocab):
    path = save_checkpoint(sdl_model, toy_vocab, tmp_path / "toy.safetensors")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="not a readable safetensors"):
        load_checkpoint(path)


def test_other_files_are_clear_errors(tmp_path):
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"\x00" * 100)
    with pytest.raises(CheckpointError):
        load_checkpoint(junk)
    with pytest.raises(CheckpointError, match="no such"):
        load_checkpoint(tmp_path / "missing.safetensors")
    from safetensors.torch import save_file
    other = tmp_path / "other.safetensors"
    save_file({"w": torch.zeros(2)}, str(other))
    with pytest.raises(CheckpointError, match="not an SDL tagger checkpoint"):
        load_checkpoint(other)


def test_mismatched_weights_name_the_problem(tmp_path, toy_vocab):
    """A checkpoint whose config says K=3 but whose head is K=4 is refused, not half-loaded."""
    from safetensors.torch import load_file, save_file
    from safetensors import safe_open
    path = save_checkpoint(make_sdl_model(k=3), toy_vocab, tmp_path / "a.safetensors")
    with safe_open(str(path), "pt") as fh:
        meta = fh.metadata()
    tensors = load_file(str(path))
    tensors["model.head.weight"] = torch.zeros(4 * 16, tensors["model.head.weight"].shape[1])
    save_file(tensors, str(path), metadata=meta)
    with pytest.raises(CheckpointError, match="another shape"):
        load_checkpoint(path)


def test_vocab_of_wrong_dimension_is_refused(tmp_path):
    with pytest.raises(CheckpointError, match="16-d"):
        save_checkpoint(make_sdl_model(d=16), make_vocab(d=8), tmp_path / "x.safetensors")


def test_key_renames_match_timm_tresnet():
    assert official_key_to_timm("conv1.0.weight") == "body.conv1.conv.weight"
    assert official_key_to_timm("layer2.0.conv1.0.1.running_var") == "body.layer2.0.conv1.bn.running_var"
    assert official_key_to_timm("layer3.0.downsample.1.0.weight") == "body.layer3.0.downsample.1.conv.weight"
    assert official_key_to_timm("layer1.0.se.fc1.bias") == "body.layer1.0.se.fc1.bias"


def _authors_checkpoint(path, seed=0):
    """A random-weight file with exactly the authors' keys and shapes, in their dict layout."""
    spec = json.loads((REFERENCE / "official_sdl_tresnet_m_keys.json").read_text())["keys"]
    gen = torch.Generator().manual_seed(seed)
    state = {}
    for key, shape, _ in spec:
        if key.endswith("running_var"):
            state[key] = torch.rand(shape, generator=gen) + 0.5
        elif key.endswith(("running_mean", "bias")):
            state[key] = torch.randn(shape, generator=gen) * 0.05
        elif len(shape) == 1:  # InPlaceABN weights can be negative: the importer takes abs() + 1e-5
            state[key] = torch.randn(shape, generator=gen)
        else:
            fan_in = int(np.prod(shape[1:]))
            state[key] = torch.randn(shape, generator=gen) * (1.0 / fan_in) ** 0.5
    torch.save({"model": state, "num_classes": 1006, "idx_to_class": {i: str(i) for i in range(1006)}}, path)
    return state


@needs_reference
def test_import_official_consumes_every_key_strictly(tmp_path):
    state = _authors_checkpoint(tmp_path / "NUS_mtresnet_224.pth")
    out = tmp_path / "official.safetensors"
    model, vocab = import_official(tmp_path / "NUS_mtresnet_224.pth", REFERENCE / "NUS_WIDE", out)
    assert model.config.k == 7 and model.config.d == 300 and model.config.backbone == "tresnet_m"
    assert model.config.preprocess.mean == (0.0, 0.0, 0.0) and model.config.preprocess.std == (1.0, 1.0, 1.0)
    assert model.config.preprocess.resize == "squash" and model.config.preprocess.size == 224
    assert len(vocab) == 1006
    ours = model.state_dict()
    # every authors' key landed somewhere (373 keys -> 372 backbone tensors + the head)
    assert len([k for k in ours if not k.endswith("num_batches_tracked")]) == len(state)
    torch.testing.assert_close(ours["head.weight"], state["embedding.weight"])
    bn = ours["backbone.body.conv1.bn.weight"]
    torch.testing.assert_close(bn, state["conv1.1.weight"].abs() + 1e-5)
    # principal vector k == column k of the authors' view(B, D, K)
    x = torch.rand(1, 3, 224, 224)
    with torch.inference_mode():
        pooled = model.backbone.forward_features(x).mean((2, 3))
        authors = torch.nn.functional.linear(pooled, state["embedding.weight"]).view(1, 300, 7)
        vectors = model.encode(x).vectors
    for k in range(7):
        torch.testing.assert_close(vectors[0, k], authors[0, :, k])
    # and the converted file loads on its own, strictly, giving the same model
    model2, _ = load_checkpoint(out)
    with torch.inference_mode():
        torch.testing.assert_close(model2.encode(x).vectors, vectors)


@needs_reference
def test_import_official_refuses_a_missing_key(tmp_path):
    state = _authors_checkpoint(tmp_path / "ok.pth")
    del state["layer4.2.conv3.1.running_var"]
    torch.save({"model": state, "num_classes": 1006}, tmp_path / "broken.pth")
    with pytest.raises(CheckpointError, match="1 missing"):
        import_official(tmp_path / "broken.pth", REFERENCE / "NUS_WIDE")


def test_import_official_refuses_other_layouts(tmp_path):
    torch.save({"state_dict": {"w": torch.zeros(1)}}, tmp_path / "x.pth")
    with pytest.raises(CheckpointError, match="embedding.weight"):
        import_official(tmp_path / "x.pth", tmp_path)
