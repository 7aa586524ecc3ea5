"""Import hygiene: what a fresh interpreter loads for the light paths.

torch and timm cost seconds to import; ``import sdl_core``, name lookups, the demo's
page and ``python -m sdl_core search`` must not pay for what they do not use. Each
check runs in a fresh interpreter (this test process has long imported everything).
"""
from __future__ import annotations

from pathlib import Path

import pytest

import sdl_core
from sdl_core.checkpoint import save_checkpoint
from sdl_core.search import update_index
from tests.conftest import json_from_fresh_interpreter, make_photo, make_sdl_model, make_vocab

HEAVY = ("torch", "timm", "torchvision")

REPORT = f"""
import json, sys
print(json.dumps(sorted(m for m in {HEAVY!r} if m in sys.modules)))
"""


def heavy_modules_after(code: str) -> list[str]:
    """Run ``code`` in a fresh interpreter; the heavy modules it left loaded."""
    return json_from_fresh_interpreter(code + REPORT)


def test_import_sdl_core_and_light_names_load_neither_torch_nor_timm():
    code = """
import sdl_core
from sdl_core import DEFAULT_MODEL, SDLError, ModelNotFoundError, parse_tags, normalize_tag, list_models
from sdl_core.registry import get_model, resolve_name
from sdl_core.images import MAX_IMAGE_BYTES
assert resolve_name(DEFAULT_MODEL) in list_models() and get_model(DEFAULT_MODEL).description
assert parse_tags("Hot Dog, espresso") == ["hot dog", "espresso"]
"""
    assert heavy_modules_after(code) == []


def test_the_demo_builds_its_page_without_torch_or_timm():
    """The page is served before the model loads: building the app must not import them."""
    code = """
from demo.app import build_app
app = build_app("default", None)
assert app.tagger_cache.startup is None  # nothing loads before launch
"""
    assert heavy_modules_after(code) == []


def test_public_names_still_resolve_lazily():
    for name in sdl_core.__all__:
        assert getattr(sdl_core, name) is not None, name
    from sdl_core import Tagger
    from sdl_core.tagger import Tagger as Direct
    assert Tagger is Direct and "Tagger" in dir(sdl_core)
    with pytest.raises(AttributeError, match="no attribute 'Nope'"):
        sdl_core.Nope  # noqa: B018 - the attribute access is the test


def test_search_command_loads_torch_but_not_timm(tmp_path: Path):
    ckpt = save_checkpoint(make_sdl_model(k=3, size=32), make_vocab(), tmp_path / "toy.safetensors")
    root = tmp_path / "photos"
    root.mkdir()
    for i in range(3):
        make_photo(40, 40, seed=i).save(root / f"p{i}.jpg")
    index, _ = update_index(root, sdl_core.Tagger.from_pretrained(str(ckpt)), source=str(ckpt.resolve()))
    index.save(root / "sdl-index.safetensors")
    code = f"""
import contextlib, io
from sdl_core.cli import main
out = io.StringIO()
with contextlib.redirect_stdout(out):
    assert main(["search", {str(root)!r}, "dog, cat", "--json", "--model", {str(ckpt)!r}]) == 0
assert len(json.loads(out.getvalue())["results"]) == 3
"""
    assert heavy_modules_after("import json\n" + code) == ["torch"]
