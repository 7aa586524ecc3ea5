"""Import timm without torchvision's model zoo and ``torch._dynamo``: 0.5 s instead of 1.8 s.

timm imports torchvision for one class (``torchvision.ops.misc.FrozenBatchNorm2d``), and
torchvision's package import loads its whole model zoo and, through it, ``torch._dynamo``
(sympy and friends); timm's own model files call ``torch.compiler.disable`` at import,
which loads ``torch._dynamo`` too. On a 2-core VM that is 1.3 s of timm's 1.8 s import,
paid on the way to a demo's first result and every cold ``python -m sdl_core tag``.

:func:`import_timm` imports timm with, for the time of that import only:

- ``torchvision`` and ``torchvision.ops`` as empty package shells, so the submodules timm
  reads (``ops.misc``, ``utils``, ``transforms``) load without the packages' ``__init__``;
  the shells are removed afterwards, and a later ``import torchvision`` runs the real
  package around the submodules already loaded (the same classes);
- ``torchvision.models`` refused: timm's FX feature extraction is then off for the
  process (timm's own fallback without torchvision);
- ``torch.compiler.disable`` deferred: the real one wraps each function on its first call.

Only the entry points of processes this project owns call it (the demo, the CLI); the
library itself imports timm plainly, so its users keep timm whole. Anything unexpected
(another torchvision layout) falls back to the plain import.
"""
from __future__ import annotations

import functools
import importlib
import importlib.util
import logging
import sys
import threading
from types import ModuleType
from typing import Any, Callable

log = logging.getLogger(__name__)

#: The torchvision packages whose ``__init__`` is skipped while timm imports.
_SHELLS = ("torchvision", "torchvision.ops")
#: The torchvision package refused while timm imports (its import loads torch._dynamo).
_REFUSED = "torchvision.models"
_lock = threading.Lock()


class _Refuse:
    """A meta-path finder that refuses one package and its submodules."""

    def __init__(self, name: str) -> None:
        self.name = name

    def find_spec(self, name: str, path: Any = None, target: Any = None) -> None:
        if name == self.name or name.startswith(self.name + "."):
            raise ImportError(f"{name} is not loaded while timm imports (sdl_core.fast_import)", name=name)
        return None


def _shell(name: str, locations: list[str]) -> ModuleType:
    """An empty package whose submodules import from ``locations``."""
    spec = importlib.util.spec_from_loader(name, loader=None, is_package=True)
    if spec is None:
        raise ImportError(f"no spec for {name}")
    spec.submodule_search_locations = list(locations)
    return importlib.util.module_from_spec(spec)


def _deferred(real: Callable) -> Callable:
    """``torch.compiler.disable`` that applies ``real`` on a function's first call."""

    def disable(fn: Callable | None = None, recursive: bool = True, **kwargs: Any) -> Callable:
        if fn is None:
            return functools.partial(disable, recursive=recursive, **kwargs)
        wrapped: list[Callable] = []

        @functools.wraps(fn)
        def call(*args: Any, **kw: Any) -> Any:
            if not wrapped:
                wrapped.append(real(fn, recursive, **kwargs))
            return wrapped[0](*args, **kw)
        return call
    return disable


def _shells() -> dict[str, ModuleType]:
    spec = importlib.util.find_spec("torchvision")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("torchvision is not an importable package here")
    root = list(spec.submodule_search_locations)
    return {"torchvision": _shell("torchvision", root),
            "torchvision.ops": _shell("torchvision.ops", [f"{p}/ops" for p in root])}


def _light() -> None:
    """Import timm under the shells, the refusal and the deferred compiler.disable."""
    import torch
    shells = _shells()
    refuse = _Refuse(_REFUSED)
    real = torch.compiler.disable
    sys.modules.update(shells)
    sys.meta_path.insert(0, refuse)
    torch.compiler.disable = _deferred(real)
    try:
        importlib.import_module("timm")
    finally:
        torch.compiler.disable = real
        sys.meta_path.remove(refuse)
        for name, shell in shells.items():
            if sys.modules.get(name) is shell:
                del sys.modules[name]


def import_timm() -> ModuleType:
    """timm, imported the light way where it is not imported yet (see the module's doc)."""
    with _lock:
        if "timm" in sys.modules or "torchvision" in sys.modules:
            return importlib.import_module("timm")
        before = set(sys.modules)
        try:
            _light()
        except Exception as exc:  # noqa: BLE001 - any surprise: forget what loaded, import plainly
            log.debug("light timm import failed (%s); importing it whole", exc)
            for name in set(sys.modules) - before:
                if name.split(".")[0] in ("timm", "torchvision"):
                    del sys.modules[name]
        return importlib.import_module("timm")
