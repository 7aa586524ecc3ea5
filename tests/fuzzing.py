"""Shared pieces of the fuzz tests: hypothesis settings that are the same on every run,
and the safetensors layout (8-byte little-endian header length, JSON header, data).

Every fuzz test asserts one property: the input is accepted, or refused with an
``SDLError`` subclass (the library's own message), within the example deadline.
"""
from __future__ import annotations

import json
import struct
from typing import Any, Callable

from hypothesis import HealthCheck, settings, strategies as st

#: Derandomized, no example database: CI and every machine run the same examples.
#: The deadline is generous (a shared 2-core machine), but bounds each example.
FUZZ = settings(derandomize=True, database=None, deadline=10_000, print_blob=True,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                       HealthCheck.function_scoped_fixture])

#: Every dtype name safetensors knows, and some it does not.
DTYPES = ["F64", "F32", "F16", "BF16", "F8_E4M3", "F8_E5M2", "I64", "I32", "I16", "I8", "U64", "U32", "U16", "U8",
          "BOOL", "F4", "C64", "X99", "", "f32"]


def split_safetensors(raw: bytes) -> tuple[dict[str, Any], bytes]:
    """(header as a dict, data bytes) of a well-formed safetensors file."""
    (n,) = struct.unpack("<Q", raw[:8])
    return json.loads(raw[8:8 + n]), raw[8 + n:]


def join_safetensors(header: dict[str, Any] | bytes, data: bytes, declared: int | None = None) -> bytes:
    """A safetensors file from a header (dict or raw bytes) and data; ``declared`` lies about the header length."""
    blob = header if isinstance(header, bytes) else json.dumps(header).encode()
    return struct.pack("<Q", len(blob) if declared is None else declared) + blob + data


def deep_json(depth: int, kind: str = "list") -> str:
    """JSON nested ``depth`` levels deep (Python's json gives up long before 100,000)."""
    if kind == "dict":
        return '{"a":' * depth + "1" + "}" * depth
    return "[" * depth + "]" * depth


#: JSON values of every kind, nested a little (deep nesting has its own explicit cases).
json_values = st.recursive(
    st.none() | st.booleans() | st.integers(min_value=-2**70, max_value=2**70)
    | st.floats(allow_nan=True, allow_infinity=True) | st.text(max_size=30),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12)

#: Shapes, most of them absurd: huge, negative, empty, nested wrong.
shapes = st.one_of(
    st.lists(st.integers(min_value=0, max_value=2**64 - 1), max_size=5),
    st.lists(st.integers(min_value=-5, max_value=40), max_size=4),
    json_values)


def expect_sdl_error_or_value(fn: Callable[[], Any], error: type[Exception]) -> Any:
    """Call ``fn``: it may return, or raise ``error``; anything else fails the test with the cause."""
    try:
        return fn()
    except error:
        return None
