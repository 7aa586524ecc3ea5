"""The SDL network: shapes, the authors' D-major head reading, exact attention maps, scoring."""
import pytest
import torch

from sdl_core.config import ModelConfig, WordSpaceInfo
from sdl_core.model import SDLModel
from sdl_core.scoring import score_tags, top_k_indices
from tests.conftest import make_sdl_model


def test_principal_vectors_have_shape_b_k_d(sdl_model):
    with torch.inference_mode():
        enc = sdl_model.encode(torch.rand(2, 3, 64, 64))
    assert enc.vectors.shape == (2, 3, 16)
    assert enc.local is None


def test_head_is_read_d_major_like_the_authors(sdl_model):
    """Column k of the authors' view(B, D, K) is principal vector k."""
    x = torch.rand(2, 3, 64, 64)
    with torch.inference_mode():
        pooled = sdl_model.backbone.forward_features(x).mean((2, 3))
        flat = torch.nn.functional.linear(pooled, sdl_model.head.weight)  # (B, K*D)
        authors = flat.view(2, 16, 3)  # (B, D, K)
        ours = sdl_model.encode(x).vectors
    for k in range(3):
        torch.testing.assert_close(ours[:, k, :], authors[:, :, k])
    # row index of the Linear weight is d*K + k
    d, k = 5, 2
    with torch.inference_mode():
        expected = pooled @ sdl_model.head.weight[d * 3 + k]
    torch.testing.assert_close(ours[:, k, d], expected)


def test_head_has_no_bias(sdl_model):
    assert sdl_model.head.bias is None


@pytest.mark.parametrize("backbone,size", [("test_resnet", 64), ("test_efficientnet", 96)])
def test_attention_map_mean_equals_score_exactly(backbone, size):
    model = make_sdl_model(k=4, d=12, backbone=backbone, size=size, seed=3)
    x = torch.rand(2, 3, size, size)
    tags = torch.nn.functional.normalize(torch.randn(5, 12), dim=1)
    with torch.inference_mode():
        enc = model.encode(x, with_maps=True)
        maps = model.tag_maps(enc, tags)  # (B, K, N, h, w)
        per_k = torch.einsum("bkd,nd->bkn", enc.vectors, tags)
    assert maps.shape[:3] == (2, 4, 5) and maps.shape[3] > 1
    torch.testing.assert_close(maps.mean(dim=(-2, -1)), per_k, atol=1e-5, rtol=0)


def test_maps_do_not_change_the_vectors(sdl_model):
    x = torch.rand(1, 3, 64, 64)
    with torch.inference_mode():
        a = sdl_model.encode(x).vectors
        b = sdl_model.encode(x, with_maps=True).vectors
    torch.testing.assert_close(a, b)


def test_principal_map_mean_is_vector_norm(sdl_model):
    x = torch.rand(1, 3, 64, 64)
    with torch.inference_mode():
        enc = sdl_model.encode(x, with_maps=True)
        maps = sdl_model.principal_maps(enc)
    torch.testing.assert_close(maps.mean((-2, -1)), enc.vectors.norm(dim=-1), atol=1e-5, rtol=0)


def test_maps_need_with_maps(sdl_model):
    with torch.inference_mode():
        enc = sdl_model.encode(torch.rand(1, 3, 64, 64))
    with pytest.raises(ValueError, match="with_maps"):
        sdl_model.tag_maps(enc, torch.randn(2, 16))


def test_score_is_max_over_principal_vectors_with_winner():
    vectors = torch.tensor([[[1.0, 0.0], [0.0, 1.0]]])  # B=1, K=2, D=2
    tags = torch.tensor([[1.0, 0.0], [0.6, 0.8], [0.0, -1.0]])
    scores, winner = score_tags(vectors, tags, "max")
    torch.testing.assert_close(scores, torch.tensor([[1.0, 0.8, 0.0]]))
    assert winner.tolist() == [[0, 1, 0]]
    mean, _ = score_tags(vectors, tags, "mean")
    torch.testing.assert_close(mean, torch.tensor([[0.5, 0.7, -0.5]]))


def test_score_rejects_wrong_dimension():
    with pytest.raises(ValueError, match="tag vectors"):
        score_tags(torch.randn(1, 2, 4), torch.randn(3, 5))


def test_top_k_indices_zero_means_all_sorted():
    s = torch.tensor([0.1, 0.9, 0.5])
    assert top_k_indices(s, 0).tolist() == [1, 2, 0]
    assert top_k_indices(s, 2).tolist() == [1, 2]
    assert top_k_indices(s, 10).tolist() == [1, 2, 0]


def test_unknown_backbone_is_a_clear_error():
    from sdl_core.errors import CheckpointError
    cfg = ModelConfig(kind="sdl", backbone="no_such_net", k=2, word_space=WordSpaceInfo("x", 4))
    with pytest.raises(CheckpointError, match="unknown timm backbone"):
        SDLModel(cfg)


def test_k_must_be_positive():
    with pytest.raises(ValueError, match="K"):
        ModelConfig(kind="sdl", backbone="test_resnet", k=0, word_space=WordSpaceInfo("x", 4))
