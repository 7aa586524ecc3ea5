"""``python -m sdl_core models``: the registered and pretrained model names (no model is
loaded, nothing is downloaded; a pretrained model says whether it is cached)."""
from __future__ import annotations

import argparse

from ..pretrained import describe, get_pretrained, list_pretrained
from ..registry import get_model, list_models
from .common import EXIT_OK


def cmd_models(args: argparse.Namespace) -> int:
    for name in list_models():
        entry = get_model(name)
        alias = f" (alias of {entry.name})" if entry.name != name else ""
        print(f"{name}{alias}: {entry.description}")
    for name in list_pretrained():
        entry = get_pretrained(name)
        aliases = f" (alias {', '.join(entry.aliases)})" if entry.aliases else ""
        print(f"{describe(name)}{aliases}: {entry.description}")
    print("hf-hub:OWNER/REPO: a checkpoint of ours on the Hugging Face Hub")
    return EXIT_OK


def add_commands(sub: argparse._SubParsersAction) -> None:
    models = sub.add_parser("models", help="list model names (registered, pretrained downloads)")
    models.set_defaults(func=cmd_models)
