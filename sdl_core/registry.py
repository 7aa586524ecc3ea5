"""Named models, like timm's ``arch.tag`` names: a name -> a builder.

A builder returns ``(model, vocabulary, word_space)``; it must work offline on what
``pip install -r requirements.txt`` brings. Random-weight models are never registered.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from .errors import ModelNotFoundError

#: The model used when none is named (CLI, demo, ``Tagger.from_pretrained()``).
DEFAULT_MODEL = "default"


@dataclass(frozen=True)
class RegisteredModel:
    name: str
    description: str
    builder: Callable[[], tuple]


_MODELS: dict[str, RegisteredModel] = {}
_ALIASES: dict[str, str] = {}


def register_model(name: str, description: str, builder: Callable[[], tuple], aliases: tuple[str, ...] = ()) -> None:
    _MODELS[name] = RegisteredModel(name, description, builder)
    for alias in aliases:
        _ALIASES[alias] = name


def _load_builtin() -> None:
    from . import default_model  # noqa: F401 - registers the offline default on import


def resolve_name(name: str) -> str | None:
    _load_builtin()
    name = _ALIASES.get(name, name)
    return name if name in _MODELS else None


def get_model(name: str) -> RegisteredModel:
    resolved = resolve_name(name)
    if resolved is None:
        raise ModelNotFoundError(f"no model named {name!r}; registered: {', '.join(list_models())}")
    return _MODELS[resolved]


def list_models() -> list[str]:
    _load_builtin()
    return sorted(_MODELS) + sorted(_ALIASES)
