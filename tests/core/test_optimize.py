"""Inference optimisations: the optimised path gives the unoptimised path's tags, scores
and maps; the model itself (and its checkpoints) never changes; threads respect quotas."""
import numpy as np
import pytest
import torch
from torch import nn

from sdl_core import cli
from sdl_core.checkpoint import load_checkpoint, save_checkpoint
from sdl_core.optimize import (InferenceOptions, InferenceRunner, available_cores, configure_threads,
                               fold_batchnorm, inference_copy)
from sdl_core.scoring import score_tags
from sdl_core.tagger import Tagger
from tests.conftest import make_photo, make_sdl_model, make_vocab

OFF = InferenceOptions(fold_bn=False, channels_last=False)


def bn_model(seed: int = 0):
    """The toy SDL model with non-trivial BatchNorm statistics (init stats fold to identity)."""
    model = make_sdl_model(seed=seed)
    gen = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.copy_(torch.rand(m.num_features, generator=gen) - 0.5)
                m.running_var.copy_(torch.rand(m.num_features, generator=gen) + 0.5)
                m.weight.copy_(torch.rand(m.num_features, generator=gen) + 0.5)
                m.bias.copy_(torch.rand(m.num_features, generator=gen) - 0.5)
    return model.eval()


def count_bn(module):
    return sum(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in module.modules())


def test_every_batchnorm_of_the_backbone_is_folded():
    model = bn_model()
    before = count_bn(model)
    fast = inference_copy(model, InferenceOptions(runtime="torch"))
    assert before > 0 and count_bn(fast) == 0
    assert count_bn(model) == before  # the original is untouched
    assert fast.backbone.conv1[0].weight.is_contiguous(memory_format=torch.channels_last)


def test_tags_scores_and_maps_equal_the_unoptimised_path():
    model, vocab = bn_model(), make_vocab()
    fast, plain = Tagger(model, vocab), Tagger(model, vocab, optimize=False)
    for seed in range(3):
        photo = make_photo(seed=seed)
        a, b = fast.tag(photo, top_k=0), plain.tag(photo, top_k=0)
        assert [t.tag for t in a] == [t.tag for t in b]
        assert [t.principal for t in a] == [t.principal for t in b]
        np.testing.assert_allclose([t.score for t in a], [t.score for t in b], atol=1e-4, rtol=0)
    fa, pa = fast.analyze(make_photo(), top_k=0), plain.analyze(make_photo(), top_k=0)
    scale = float(np.abs(pa.principal_maps).max())
    np.testing.assert_allclose(fa.principal_maps, pa.principal_maps, atol=1e-4 * max(1.0, scale), rtol=0)
    assert fa.tag_maps.keys() == pa.tag_maps.keys()
    for tag, maps in pa.tag_maps.items():
        np.testing.assert_allclose(fa.tag_maps[tag], maps, atol=1e-4 * max(1.0, float(np.abs(maps).max())), rtol=0)
    # the maps stay exact: each tag map's spatial mean is that vector's score
    best = {t.tag: t for t in fa.tags}
    for tag, maps in fa.tag_maps.items():
        assert maps.mean(axis=(1, 2)).max() == pytest.approx(best[tag].score, abs=1e-4)


def test_batched_equals_one_by_one():
    tagger = Tagger(bn_model(), make_vocab())
    photos = [make_photo(seed=s) for s in range(4)]
    batched = tagger.tag(photos, top_k=0, batch_size=4)
    for photo, got in zip(photos, batched):
        alone = tagger.tag(photo, top_k=0)
        assert [t.tag for t in got] == [t.tag for t in alone]
        np.testing.assert_allclose([t.score for t in got], [t.score for t in alone], atol=1e-4)


def test_checkpoint_of_the_model_keeps_its_format(tmp_path):
    model, vocab = bn_model(), make_vocab()
    keys = set(model.state_dict())
    tagger = Tagger(model, vocab)
    tagger.tag(make_photo())
    assert tagger.model is model and set(model.state_dict()) == keys
    path = save_checkpoint(tagger.model, vocab, tmp_path / "m.safetensors")
    loaded, _ = load_checkpoint(path)
    assert set(loaded.state_dict()) == keys
    a = Tagger(loaded, vocab, optimize=False).tag(make_photo(), top_k=0)
    b = tagger.tag(make_photo(), top_k=0)
    np.testing.assert_allclose([t.score for t in a], [t.score for t in b], atol=1e-4)


def test_changed_weights_are_never_run_stale():
    model, vocab = bn_model(), make_vocab()
    tagger = Tagger(model, vocab)
    before = tagger.tag(make_photo(), top_k=0)
    with torch.no_grad():
        model.head.weight.mul_(2.0)  # doubles every score (max over k commutes with a positive scale)
    after = {t.tag: t.score for t in tagger.tag(make_photo(), top_k=0)}
    for t in before:
        assert after[t.tag] == pytest.approx(2.0 * t.score, abs=1e-4)


class SharedConv(nn.Module):
    """A conv whose output feeds a BatchNorm *and* a skip path: folding it would be wrong."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)
        self.conv2 = nn.Conv2d(4, 4, 1)
        self.bn2 = nn.BatchNorm2d(4)

    def forward(self, x):
        y = self.conv(x)
        return self.bn(y) + y + self.bn2(self.conv2(y))


def test_only_exact_pairs_are_folded():
    model = SharedConv().eval()
    with torch.no_grad():
        for bn in (model.bn, model.bn2):
            bn.running_mean.uniform_(-1, 1)
            bn.running_var.uniform_(0.5, 2)
    x = torch.rand(2, 3, 8, 8)
    with torch.inference_mode():
        expected = model(x)
    fast = inference_copy(model, InferenceOptions(channels_last=False))
    assert isinstance(fast.bn, nn.BatchNorm2d) and not isinstance(fast.bn2, nn.BatchNorm2d)
    with torch.inference_mode():
        torch.testing.assert_close(fast(x), expected, atol=1e-5, rtol=1e-5)
    assert fold_batchnorm(SharedConv().train()) == 0  # training-mode norms use batch statistics


def test_uncopyable_model_runs_unoptimised():
    class NoCopy(nn.Module):
        def __deepcopy__(self, memo):
            raise TypeError("no copies")

    model = NoCopy()
    assert inference_copy(model) is model
    runner = InferenceRunner(model)
    assert runner.get() is model and not runner.channels_last


def test_score_tags_matches_the_definition():
    gen = torch.Generator().manual_seed(0)
    vectors, tags = torch.randn(3, 4, 8, generator=gen), torch.randn(11, 8, generator=gen)
    per_k = torch.einsum("bkd,nd->bkn", vectors, tags)
    scores, winners = score_tags(vectors, tags, "max")
    torch.testing.assert_close(scores, per_k.max(dim=1).values)
    assert torch.equal(winners, per_k.max(dim=1).indices)
    torch.testing.assert_close(score_tags(vectors, tags, "mean")[0], per_k.mean(dim=1))
    assert score_tags(vectors, tags[:0])[0].shape == (3, 0)
    with pytest.raises(ValueError):
        score_tags(vectors, tags, "median")


@pytest.mark.parametrize("content, expected", [("150000 100000", 2), ("50000 100000", 1), ("max 100000", None)])
def test_available_cores_respects_a_cgroup_quota(tmp_path, content, expected):
    (tmp_path / "cpu.max").write_text(content + "\n")
    affinity = len(__import__("os").sched_getaffinity(0))
    assert available_cores(str(tmp_path)) == (min(expected, affinity) if expected else affinity)


def test_configure_threads_and_the_cli_flag(tmp_path, capsys):
    before = torch.get_num_threads()
    try:
        assert configure_threads(1) == 1 and torch.get_num_threads() == 1
        assert configure_threads() <= available_cores()
        with pytest.raises(ValueError):
            configure_threads(0)
        ckpt = save_checkpoint(bn_model(), make_vocab(), tmp_path / "toy.safetensors")
        make_photo().save(tmp_path / "a.jpg")
        assert cli.main(["tag", str(tmp_path / "a.jpg"), "--model", str(ckpt), "--threads", "1", "--json"]) == 0
        assert torch.get_num_threads() == 1 and '"tags"' in capsys.readouterr().out
        with pytest.raises(SystemExit) as exc:
            cli.main(["tag", str(tmp_path / "a.jpg"), "--threads", "0"])
        assert exc.value.code == 2
    finally:
        torch.set_num_threads(before)


def test_default_model_optimised_equals_unoptimised():
    from sdl_core.factory import load_model
    loaded = load_model("default")
    model, vocab, space = loaded.model, loaded.vocabulary, loaded.word_space
    fast, plain = Tagger(model, vocab, space), Tagger(model, vocab, space, optimize=False)
    assert fast._runner.runtime == "onnxruntime" and count_bn(model) > 0
    photo = make_photo(224, 160, seed=3)
    a = fast.analyze(photo, extra_tags=["espresso", "red bicycle"], top_k=20)
    b = plain.analyze(photo, extra_tags=["espresso", "red bicycle"], top_k=20)
    assert [t.tag for t in a.tags] == [t.tag for t in b.tags]
    np.testing.assert_allclose([t.score for t in a.tags], [t.score for t in b.tags], atol=1e-4, rtol=0)
    np.testing.assert_allclose(a.principal_maps, b.principal_maps, atol=1e-4, rtol=0)


# --- ONNX Runtime for the trunk ---------------------------------------------------

def assert_same_tags(a, b, atol=1e-4):
    assert [t.tag for t in a] == [t.tag for t in b]
    assert [t.principal for t in a] == [t.principal for t in b]
    np.testing.assert_allclose([t.score for t in a], [t.score for t in b], atol=atol, rtol=0)


@pytest.fixture
def own_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("SDL_TAGGER_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache" / "onnx"


@pytest.mark.parametrize("runtime", ["auto", "torch"])
def test_both_runtimes_equal_the_unoptimised_path(runtime):
    model, vocab = bn_model(seed=4), make_vocab()
    fast = Tagger(model, vocab, optimize=InferenceOptions(runtime=runtime))
    plain = Tagger(model, vocab, optimize=False)
    assert fast._runner.runtime == ("onnxruntime" if runtime == "auto" else "torch")
    assert plain._runner.runtime == "torch"
    photos = [make_photo(seed=s) for s in range(3)]
    for got, expected in zip(fast.tag(photos, top_k=0, batch_size=3), plain.tag(photos, top_k=0)):
        assert_same_tags(got, expected)
    fa, pa = fast.analyze(photos[0], top_k=5), plain.analyze(photos[0], top_k=5)
    np.testing.assert_allclose(fa.principal_maps, pa.principal_maps, atol=1e-4, rtol=0)
    for tag, maps in pa.tag_maps.items():
        np.testing.assert_allclose(fa.tag_maps[tag], maps, atol=1e-4, rtol=0)


def test_the_exported_graph_is_cached_and_reused(own_cache, monkeypatch):
    from sdl_core import onnx_backend

    model, vocab = bn_model(seed=5), make_vocab()
    first = Tagger(model, vocab)
    graphs = list(own_cache.glob("*.onnx"))
    assert first._runner.runtime == "onnxruntime" and len(graphs) == 1
    monkeypatch.setattr(onnx_backend, "export_graph", lambda *a, **k: pytest.fail("exported again"))
    second = Tagger(model, vocab)
    assert second._runner.runtime == "onnxruntime"
    assert_same_tags(second.tag(make_photo(), top_k=0), first.tag(make_photo(), top_k=0), atol=1e-6)


def test_a_damaged_cached_graph_is_exported_again(own_cache):
    model, vocab = bn_model(seed=6), make_vocab()
    expected = Tagger(model, vocab, optimize=False).tag(make_photo(), top_k=0)
    Tagger(model, vocab)
    (graph,) = own_cache.glob("*.onnx")
    graph.write_bytes(b"not an onnx graph")
    again = Tagger(model, vocab)
    assert again._runner.runtime == "onnxruntime"
    assert_same_tags(again.tag(make_photo(), top_k=0), expected)
    assert graph.stat().st_size > 1000  # rewritten with a real graph


def test_an_unwritable_cache_still_runs_in_onnx_runtime(tmp_path, monkeypatch):
    blocker = tmp_path / "file"
    blocker.write_text("a file where the cache folder should be")
    monkeypatch.setenv("SDL_TAGGER_CACHE", str(blocker))
    model, vocab = bn_model(seed=7), make_vocab()
    tagger = Tagger(model, vocab)
    assert tagger._runner.runtime == "onnxruntime"
    assert_same_tags(tagger.tag(make_photo(), top_k=0), Tagger(model, vocab, optimize=False).tag(make_photo(), top_k=0))


def test_without_onnxruntime_the_model_runs_on_torch(monkeypatch):
    from sdl_core import onnx_backend

    monkeypatch.setattr(onnx_backend, "available", lambda: False)
    model, vocab = bn_model(seed=8), make_vocab()
    tagger = Tagger(model, vocab)
    assert tagger._runner.runtime == "torch" and tagger._runner.channels_last
    assert_same_tags(tagger.tag(make_photo(), top_k=0), Tagger(model, vocab, optimize=False).tag(make_photo(), top_k=0))


def test_a_graph_that_disagrees_with_torch_is_refused(own_cache, monkeypatch, caplog):
    from sdl_core import onnx_backend

    real_export = onnx_backend.export_graph

    def wrong_export(trunk, size):  # a graph of other weights: runs fine, gives other features
        other = bn_model(seed=99).backbone
        return real_export(other, size)

    monkeypatch.setattr(onnx_backend, "export_graph", wrong_export)
    model, vocab = bn_model(seed=9), make_vocab()
    with caplog.at_level("WARNING", logger="sdl_core.onnx_backend"):
        tagger = Tagger(model, vocab)
    assert tagger._runner.runtime == "torch"
    assert "other features" in caplog.text
    assert not list(own_cache.glob("*.onnx"))  # a refused graph is never cached
    assert_same_tags(tagger.tag(make_photo(), top_k=0), Tagger(model, vocab, optimize=False).tag(make_photo(), top_k=0))


def test_other_input_sizes_run_on_the_torch_trunk():
    model = bn_model(seed=10)
    fast = InferenceRunner(model).get()
    assert fast.external_features is not None
    for size in (64, 96):  # the graph is exported for the config's size (64 in tests)
        x = torch.rand(2, 3, size, size)
        with torch.inference_mode():
            torch.testing.assert_close(fast.encode(x).vectors, model.encode(x).vectors, atol=1e-4, rtol=0)


def test_changed_trunk_weights_get_a_new_graph(own_cache):
    model, vocab = bn_model(seed=11), make_vocab()
    tagger = Tagger(model, vocab)
    before = tagger.tag(make_photo(), top_k=0)
    with torch.no_grad():
        for p in model.backbone.parameters():
            p.mul_(1.1)
    after = tagger.tag(make_photo(), top_k=0)
    expected = Tagger(model, vocab, optimize=False).tag(make_photo(), top_k=0)
    assert len(list(own_cache.glob("*.onnx"))) == 2
    assert_same_tags(after, expected)
    assert [t.score for t in after] != pytest.approx([t.score for t in before], abs=1e-3)


def test_the_cache_keeps_the_most_recently_used_graphs(own_cache, monkeypatch):
    import os
    import time

    from sdl_core import onnx_backend

    monkeypatch.setattr(onnx_backend, "MAX_CACHED_GRAPHS", 2)
    vocab = make_vocab()
    models = [bn_model(seed=20 + i) for i in range(3)]
    Tagger(models[0], vocab)
    first = next(own_cache.glob("*.onnx"))
    past = time.time() - 100
    os.utime(first, (past, past))
    Tagger(models[1], vocab)
    Tagger(models[0], vocab)  # a cache hit makes the first graph the most recently used again
    Tagger(models[2], vocab)
    kept = set(own_cache.glob("*.onnx"))
    assert len(kept) == 2 and first in kept


def trunk_pointers(model) -> set[int]:
    return {t.data_ptr() for t in model.trunk.state_dict().values() if t.numel()}


def test_the_onnx_copy_shares_the_trunk_weights_and_leaves_the_model_alone():
    model = bn_model(seed=11)
    before = {n: t.clone() for n, t in model.state_dict().items()}
    grads = [p.requires_grad for p in model.parameters()]
    fast = InferenceRunner(model).get()
    assert fast.external_features is not None
    assert trunk_pointers(fast) == trunk_pointers(model)  # no second torch copy of the trunk
    assert fast.head.weight.data_ptr() != model.head.weight.data_ptr()
    assert [p.requires_grad for p in model.parameters()] == grads
    for name, tensor in model.state_dict().items():
        assert torch.equal(tensor, before[name]), name
    x = torch.rand(2, 3, 96, 96)  # another size: the shared torch trunk runs it
    with torch.inference_mode():
        torch.testing.assert_close(fast.encode(x).vectors, model.encode(x).vectors, atol=1e-4, rtol=0)


def test_when_onnx_runtime_refuses_the_copy_keeps_real_folded_weights(monkeypatch):
    from sdl_core import onnx_backend

    monkeypatch.setattr(onnx_backend, "onnx_features", lambda *a, **k: None)
    model = bn_model(seed=12)
    before = {n: t.clone() for n, t in model.state_dict().items()}
    fast = InferenceRunner(model).get()
    assert fast.external_features is None and count_bn(fast) < count_bn(model)
    assert not trunk_pointers(fast) & trunk_pointers(model)
    for name, tensor in model.state_dict().items():
        assert torch.equal(tensor, before[name]), name
    x = torch.rand(2, 3, 64, 64)
    with torch.inference_mode():
        torch.testing.assert_close(fast.encode(x).vectors, model.encode(x).vectors, atol=1e-4, rtol=0)
