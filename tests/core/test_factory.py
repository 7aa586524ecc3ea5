"""The factory: what a name or path means (resolve), and building it (load_model)."""
from __future__ import annotations

import pytest

from sdl_core import factory
from sdl_core.checkpoint import save_checkpoint
from sdl_core.errors import ModelNotFoundError
from sdl_core.factory import LoadedModel, ModelSource, load_model, resolve
from sdl_core.registry import DEFAULT_ENTRY, DEFAULT_MODEL
from sdl_core.tagger import Tagger
from tests.conftest import make_sdl_model, make_vocab


@pytest.fixture
def toy_checkpoint(tmp_path):
    return save_checkpoint(make_sdl_model(k=2, size=32), make_vocab(), tmp_path / "toy.safetensors")


def test_registered_names_and_aliases_resolve_to_their_entry():
    for name in (DEFAULT_MODEL, DEFAULT_ENTRY.name, None):
        source = resolve(name)
        assert (source.kind, source.value, source.is_file, source.entry) == ("registered", DEFAULT_ENTRY.name, False,
                                                                             DEFAULT_ENTRY)


def test_an_existing_file_wins_over_a_registered_name(tmp_path, monkeypatch):
    (tmp_path / DEFAULT_MODEL).write_bytes(b"")
    monkeypatch.chdir(tmp_path)
    source = resolve(DEFAULT_MODEL)
    assert (source.kind, source.value, source.is_file) == ("checkpoint", str(tmp_path / DEFAULT_MODEL), True)
    (tmp_path / "theirs.pth").write_bytes(b"")
    assert resolve("theirs.pth").kind == "official"


def test_unknown_names_and_the_authors_pth_without_data_are_clear_errors(tmp_path):
    with pytest.raises(ModelNotFoundError, match=r"'nope' is neither a registered model nor an existing file "
                                                 r"\(registered: .*default.*python -m sdl_core models"):
        resolve("nope")
    (tmp_path / "NUS_mtresnet_224.pth").write_bytes(b"")
    with pytest.raises(ModelNotFoundError, match="looks like the authors' checkpoint: give their data folder"):
        load_model(tmp_path / "NUS_mtresnet_224.pth")


def test_a_checkpoint_loads_with_its_source_and_no_quality(toy_checkpoint):
    loaded = load_model(str(toy_checkpoint))
    assert isinstance(loaded, LoadedModel) and loaded.model.config.k == 2 and len(loaded.vocabulary) == 8
    assert loaded.word_space is None  # the vocabulary is its only words
    assert loaded.source == ModelSource("checkpoint", str(toy_checkpoint.resolve()), is_file=True)
    assert loaded.quality is None and loaded.name == "toy_test_resnet_k2"
    tagger = Tagger.from_pretrained(str(toy_checkpoint))
    assert tagger.source == loaded.source


def test_a_new_kind_of_source_plugs_in_with_a_resolver_and_a_loader(toy_checkpoint, monkeypatch):
    """How a pretrained download or ``hf-hub:`` joins: recognise the name, then load what it names."""
    def hub(name: str) -> ModelSource | None:
        return ModelSource("hub", name) if name.startswith("hub:") else None

    def from_hub(source: ModelSource, data_dir):
        return factory.load_checkpoint_file(ModelSource("checkpoint", str(toy_checkpoint)))

    monkeypatch.setattr(factory, "RESOLVERS", [*factory.RESOLVERS, hub])
    monkeypatch.setitem(factory.LOADERS, "hub", from_hub)
    loaded = load_model("hub:someone/toy")
    assert loaded.source.value == "hub:someone/toy" and not loaded.source.is_file
    assert loaded.model.config.k == 2
