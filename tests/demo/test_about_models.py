"""The about panel (shipped quality numbers, escaping) and the model menu / cache."""
from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from demo.about import about_markdown, measured_quality
from demo.models import TaggerCache, folder_choices, model_choices
from sdl_core import DEFAULT_MODEL, ModelNotFoundError, Tagger
from sdl_core.registry import get_model, resolve_name
from tests.conftest import make_sdl_model, make_vocab

ROOT = Path(__file__).resolve().parents[2]


def readme_default_row() -> list[str]:
    """The README's quality row of the default model (its 'How good it is' table)."""
    for line in (ROOT / "README.md").read_text(encoding="utf-8").splitlines():
        if line.startswith("| default (`"):
            return [cell.strip() for cell in line.strip("|").split("|")][1:]
    raise AssertionError("README.md has no quality row for the default model")


def test_quality_ships_with_the_default_entry_and_matches_the_readme():
    default = resolve_name(DEFAULT_MODEL)
    text = measured_quality(default)
    assert text.startswith("On the 12-photo dev set")
    quality = get_model(default).quality
    shipped = list(quality.rows[0][1])
    assert [float(v) for v in readme_default_row()] == shipped  # one set of numbers, README and app
    assert f"| this model (`{default}`) | " + " | ".join(f"{v:.3f}" for v in shipped) + " |" in text
    assert "seeded random scores" in text and "weakest point" in text


def test_measured_quality_is_shown_for_registered_models_only():
    assert "Not measured" in measured_quality("/some/checkpoint.safetensors")
    assert "Not measured" in measured_quality("no-such-model")


def test_about_counts_vocabulary_and_escapes_checkpoint_text():
    model = make_sdl_model()
    model.config = dataclasses.replace(model.config, description="<script>x</script> *bold*")
    tagger = Tagger(model, make_vocab())
    text = about_markdown(tagger, "toy.safetensors", "quality here")
    assert "6 seen tags, 2 unseen tags (8 in all)" in text
    assert "<script>" not in text and r"\<script\>" in text and r"\*bold\*" in text
    assert "`test_resnet`" in text and "K = 3 principal vectors" in text and "quality here" in text and "unseen" in text


def test_model_menu_offers_startup_model_folder_checkpoints_and_the_default(toy_checkpoint, models_dir):
    choices = model_choices(str(toy_checkpoint), models_dir)
    values = [c.value for c in choices]
    assert values[0] == str(toy_checkpoint.resolve())
    assert str((models_dir / "table_k2.safetensors").resolve()) in values
    assert resolve_name(DEFAULT_MODEL) in values
    assert len(values) == len(set(values))
    assert [c.label for c in folder_choices(models_dir)] == [f"{models_dir.name}/broken.safetensors",
                                                            f"{models_dir.name}/table_k2.safetensors"]
    assert folder_choices(models_dir / "absent") == [] and folder_choices(None) == []


def test_unknown_startup_model_is_a_clear_error(tmp_path):
    with pytest.raises(ModelNotFoundError, match="neither a registered model nor an existing file"):
        model_choices(str(tmp_path / "nope.safetensors"), None)


def test_cache_loads_once_refuses_unoffered_values_and_drops_the_oldest(toy_checkpoint, models_dir):
    choices = [c for c in model_choices(str(toy_checkpoint), models_dir) if "broken" not in c.value
               and c.value != resolve_name(DEFAULT_MODEL)]
    cache = TaggerCache(choices, max_loaded=1)
    first = cache.get()
    assert cache.get(choices[0].value) is first
    with pytest.raises(ModelNotFoundError, match="not one this app offers"):
        cache.get("/etc/passwd")
    second = cache.get(choices[1].value)
    assert second is not first and second.config.k == 2
    assert cache.get() is not first  # the first was dropped (max_loaded=1) and loaded again

