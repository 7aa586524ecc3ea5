"""Normalising and validating tag words typed by people.

One normalisation everywhere (vocabularies, typed tags, word-space caches):
Unicode NFC, control and format characters removed (including bidi overrides)
except the zero-width (non-)joiners that emoji and some scripts need, surrounding
``*`` and spaces stripped, inner whitespace collapsed, lower case. Text is kept as
text: HTML such as ``<b>`` is neither stripped nor escaped here (renderers escape).
Limits are named constants so the README, the CLI and the demo can quote them.
"""
from __future__ import annotations

import re
import unicodedata
from typing import Iterable

from .errors import TagInputError

#: Most typed tags accepted in one request.
MAX_TAGS = 500
#: Longest typed tag, in characters (after normalisation).
MAX_TAG_LENGTH = 100
#: Longest raw tag text accepted before splitting, in characters.
MAX_TAG_TEXT = 100_000

_SEPARATORS = re.compile(r"[,;\n\r\t]+")
_SPACES = re.compile(r"\s+")
#: Format characters kept inside a tag: zero-width non-joiner and joiner (emoji
#: sequences such as the technologist, Persian and Indic spelling).
_KEPT_FORMAT = "\u200c\u200d"
#: Lone surrogates: what Python makes of bytes that are not UTF-8 (command-line
#: arguments, file names); they cannot be shown or embedded.
_SURROGATES = re.compile("[\ud800-\udfff]")


def normalize_tag(tag: str) -> str:
    """Canonical form of a tag: NFC, no control characters, collapsed spaces, lower case."""
    text = str(tag)
    if not (text.isascii() and text.isprintable()):  # printable ASCII is already NFC, control-free
        text = unicodedata.normalize("NFC", text)
        text = "".join(ch for ch in text if unicodedata.category(ch)[0] != "C" or ch in " \t" + _KEPT_FORMAT)
    # one strip of spaces, stars and joiners together: stripping them in turn is not idempotent
    # ("\u0301* *" -> "\u0301*" -> "\u0301"; found by tests/core/test_fuzz_text.py)
    text = _SPACES.sub(" ", text).strip(" *" + _KEPT_FORMAT)
    return text.lower()


def clean_tags(tags: Iterable[str], max_tags: int = MAX_TAGS) -> list[str]:
    """Normalise, drop empties, merge duplicates (first wins) and enforce the limits."""
    out: dict[str, None] = {}
    for raw in tags:
        if _SURROGATES.search(str(raw)):
            raise TagInputError(f"tag {str(raw)[:20]!r} is not valid UTF-8 text (undecodable bytes); "
                                "type it again or check your terminal's encoding")
        tag = normalize_tag(raw)
        if not tag:
            continue
        if len(tag) > MAX_TAG_LENGTH:
            raise TagInputError(f"tag {tag[:20]!r}... is {len(tag)} characters long; "
                                f"the limit is {MAX_TAG_LENGTH}")
        out[tag] = None
        if len(out) > max_tags:
            raise TagInputError(f"too many tags: the limit is {max_tags} per request")
    return list(out)


def parse_tags(text: str | None, max_tags: int = MAX_TAGS) -> list[str]:
    """Split a comma/semicolon/newline separated string of tags and clean it.

    Multi-word tags ("hot dog") stay whole: only the separators split.
    """
    if not text:
        return []
    if len(text) > MAX_TAG_TEXT:
        raise TagInputError(f"tag text is {len(text):,} characters long; the limit is {MAX_TAG_TEXT:,}")
    return clean_tags(_SEPARATORS.split(text), max_tags=max_tags)


def inflections(word: str) -> list[str]:
    """English singular and plural candidates of a one-word tag (crude rules: callers use only
    the forms they find in a list they trust: a word table, a model's trained names)."""
    if len(word) < 3 or not word.isalpha():
        return []
    forms = []
    if word.endswith("ies"):
        forms.append(word[:-3] + "y")
    if word.endswith(("ses", "xes", "zes", "ches", "shes")):
        forms.append(word[:-2])
    if word.endswith("s") and not word.endswith("ss"):
        forms.append(word[:-1])
    if word.endswith("y") and word[-2] not in "aeiou":
        forms.append(word[:-1] + "ies")
    elif word.endswith(("s", "x", "z", "ch", "sh")):
        forms.append(word + "es")
    else:
        forms.append(word + "s")
    return forms
