"""A restricted unpickler for the authors' data files.

Plain ``pickle.load`` runs whatever code a file asks for. The authors' vocabulary
files only hold dicts, lists, strings, numbers and numpy arrays, so we allow the
handful of globals that numpy needs to rebuild an array and refuse everything else.
"""
from __future__ import annotations

import _compat_pickle
import io
import pickle
from pathlib import Path
from typing import Any

from .errors import VocabularyError
from .files import read_bytes

_ALLOWED_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "scalar"),
    ("numpy.core.numeric", "_frombuffer"),  # arrays under pickle protocol 5
    ("numpy._core.numeric", "_frombuffer"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("_codecs", "encode"),  # how numpy pickles raw bytes under protocol 2
    ("builtins", "set"),
    ("builtins", "frozenset"),
    ("collections", "OrderedDict"),
}


class _RestrictedUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        # Python 2 names (protocols 0-2, e.g. "__builtin__.set") are checked as Python 3 names.
        module, name = _compat_pickle.NAME_MAPPING.get((module, name), (module, name))
        module = _compat_pickle.IMPORT_MAPPING.get(module, module)
        if (module, name) in _ALLOWED_GLOBALS:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name}: only numpy arrays, "
                                     "lists, dicts, strings and numbers are allowed")


def safe_load_pickle(path: str | Path) -> Any:
    """Load a pickle file that may only contain plain data and numpy arrays."""
    path = Path(path)
    data = read_bytes(path, VocabularyError)
    try:
        return _RestrictedUnpickler(io.BytesIO(data), encoding="latin1").load()
    except pickle.UnpicklingError as exc:
        raise VocabularyError(f"{path.name}: unsafe or invalid pickle: {exc}") from None
    except Exception as exc:  # noqa: BLE001 - damaged pickles raise many types (Overflow, Memory, Lookup...)
        raise VocabularyError(f"{path.name}: corrupt pickle ({type(exc).__name__}: {exc})") from None
