"""The about panel (README quality section, escaping) and the model menu / cache."""
from __future__ import annotations

import dataclasses

import pytest

from demo.about import about_markdown, measured_quality, quality_from_readme
from demo.models import TaggerCache, folder_choices, model_choices
from sdl_core import DEFAULT_MODEL, ModelNotFoundError, Tagger
from sdl_core.registry import resolve_name
from tests.conftest import make_sdl_model, make_vocab

README = """# Project
Intro mentions F1 but is not the section.

## The default model
An architecture paragraph about its last feature map (a map, not a metric).

**How good it is.** On the dev set:

| protocol | mAP | F1@3 |
|---|---|---|
| dev set | 41.0 | 38.2 |

Typed tags are its weakest point.

Unrelated prose.

### Details
- recall@5: 0.40

## Training
| other | 1 |
"""


def test_quality_comes_from_the_default_model_section_only():
    text = quality_from_readme(README)
    assert text.startswith("**How good it is.** On the dev set:")
    assert "| dev set | 41.0 | 38.2 |" in text and "weakest point" in text
    assert "recall@5: 0.40" in text  # a sub-section belongs to the section
    assert "feature map" not in text and "Unrelated" not in text
    assert "| other | 1 |" not in text and "Intro" not in text
    assert quality_from_readme("# Nothing\n## Default model\nno numbers here\n") is None
    assert quality_from_readme("") is None


def test_measured_quality_reads_the_readme_for_the_default_only(tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text(README)
    default = resolve_name(DEFAULT_MODEL)
    assert "41.0" in measured_quality(default, readme)
    assert "See README.md" in measured_quality(default, tmp_path / "missing.md")
    assert "Not measured" in measured_quality("/some/checkpoint.safetensors", readme)


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

