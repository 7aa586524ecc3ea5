"""Training recipes: a JSON file of ``train fit`` options (``--recipe NAME_OR_PATH``).

A recipe fills the options' defaults; flags given on the command line win. Keys are
:class:`train.fit.FitOptions` fields (``lr``, ``batch_size``...); keys starting with
``_`` are comments. Named recipes live in ``train/recipes/`` (``sdl_nus_wide``: the
paper's NUS-WIDE recipe).
"""
from __future__ import annotations

import json
from pathlib import Path

from .errors import RunError

RECIPES_DIR = Path(__file__).resolve().parent / "recipes"
#: Options a recipe may not set: where the data and the run are, and resuming.
NOT_IN_RECIPES = frozenset({"data", "out", "resume"})


def available_recipes() -> list[str]:
    return sorted(p.stem for p in RECIPES_DIR.glob("*.json"))


def recipe_path(name_or_path: str) -> Path:
    path = Path(name_or_path)
    if path.is_file():
        return path
    named = RECIPES_DIR / f"{name_or_path}.json"
    if named.is_file():
        return named
    raise RunError(f"--recipe {name_or_path!r}: no such file or named recipe (named: {', '.join(available_recipes())})")


def load_recipe(name_or_path: str, allowed: frozenset[str] | set[str]) -> dict:
    """The recipe's options (comments dropped), checked against ``allowed`` option names."""
    path = recipe_path(name_or_path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise RunError(f"{path}: cannot read the recipe ({exc})") from None
    except json.JSONDecodeError as exc:
        raise RunError(f"{path.name}: not valid JSON ({exc})") from None
    if not isinstance(data, dict):
        raise RunError(f"{path.name}: a recipe is a JSON object of option: value")
    options = {k: v for k, v in data.items() if not k.startswith("_")}
    allowed = set(allowed) - NOT_IN_RECIPES
    unknown = sorted(set(options) - allowed)
    if unknown:
        raise RunError(f"{path.name}: not options a recipe can set: {unknown} (allowed: {sorted(allowed)})")
    return options
