"""``python -m sdl_core models``: the registered model names (no model is loaded)."""
from __future__ import annotations

import argparse

from ..registry import get_model, list_models
from .common import EXIT_OK


def cmd_models(args: argparse.Namespace) -> int:
    for name in list_models():
        entry = get_model(name)
        alias = f" (alias of {entry.name})" if entry.name != name else ""
        print(f"{name}{alias}: {entry.description}")
    return EXIT_OK


def add_commands(sub: argparse._SubParsersAction) -> None:
    models = sub.add_parser("models", help="list registered model names")
    models.set_defaults(func=cmd_models)
