"""Pixel evidence in word-space dimensions of its own: colours and people.

Some tags a photo's pixels prove better than a classifier's word associations do:
its colours (:mod:`sdl_core.colour`) and whether a person is in it (:mod:`sdl_core.faces`).
The default model carries that evidence in extra dimensions of its word space, keeping
the one contract ``score = reduce_k <A_k, w_t>``:

* :class:`EvidenceSpace` is a base word space plus one dimension per channel: a word that
  reads a channel ("blue", "grey", "person", "face") is that channel's axis; every other
  tag is its base vector with zeros there, so its score is exactly what it was without;
* each principal vector carries the image's evidence in those dimensions, so the channel
  words score their evidence, search ranks photos by it, and the per-cell evidence gives
  them a real heat map.
"""
from __future__ import annotations

import functools
from typing import Sequence

import numpy as np

from .colour import CHANNEL_OF_WORD, CHANNELS
from .config import WordSpaceInfo
from .tags import normalize_tag
from .wordvec import WORDLLAMA, WordSpace, load_word_space

#: The person channel's words: what a visible face proves (not "man" or "people": one
#: face tells neither gender nor a crowd).
PERSON_WORDS = {"person": "person", "human": "person", "face": "person", "someone": "person"}

#: The channel layouts a word space can have, by the suffix of its name. "+colour13" is
#: the layout of models made before the person channel (still loadable).
LAYOUTS: dict[str, tuple[str, ...]] = {
    f"+colour{len(CHANNELS)}": CHANNELS,
    f"+colour{len(CHANNELS)}+person1": CHANNELS + ("person",),
}
#: The default model's layout.
DEFAULT_LAYOUT = f"+colour{len(CHANNELS)}+person1"

_WORDS = {**CHANNEL_OF_WORD, **PERSON_WORDS}


def evidence_info(base: WordSpaceInfo, layout: str = DEFAULT_LAYOUT) -> WordSpaceInfo:
    """The augmented space's identity: the base space plus one dimension per channel."""
    return WordSpaceInfo(f"{base.name}{layout}", base.dim + len(LAYOUTS[layout]))


def channel_name(tag: str) -> str | None:
    """The evidence channel a tag reads ("grey" -> "gray", "face" -> "person"), or None."""
    return _WORDS.get(normalize_tag(tag))


def channel_index(tag: str, channels: Sequence[str]) -> int | None:
    """The index among ``channels`` of the channel a tag reads, or None for a plain word."""
    name = channel_name(tag)
    return channels.index(name) if name in channels else None


class EvidenceSpace(WordSpace):
    """A base word space plus one dimension per evidence channel (see the module docstring).

    Channel words get their channel's axis and no base part: a word space's idea of
    "blue" is the company the word keeps, not the colour."""

    def __init__(self, base: WordSpace, layout: str = DEFAULT_LAYOUT) -> None:
        super().__init__(evidence_info(base.info, layout))
        self.base = base
        self.channels = LAYOUTS[layout]

    def _embed_new(self, tags: list[str]) -> np.ndarray:
        out = np.zeros((len(tags), self.dim), dtype=np.float32)
        channels = [channel_index(t, self.channels) for t in tags]
        plain = [i for i, c in enumerate(channels) if c is None]
        if plain:
            vectors, found = self.base.embed([tags[i] for i in plain])
            out[np.asarray(plain)[found], :self.base.dim] = vectors[found]
        for i, channel in enumerate(channels):
            if channel is not None:
                out[i, self.base.dim + channel] = 1.0
        return out

    def approximate(self, tags: Sequence[str]) -> np.ndarray:
        flags = self.base.approximate(tags)
        return np.array([bool(f) and channel_index(t, self.channels) is None for t, f in zip(tags, flags)],
                        dtype=bool)


@functools.lru_cache(maxsize=None)
def evidence_wordllama(layout: str = DEFAULT_LAYOUT) -> EvidenceSpace:
    """WordLlama plus evidence channels (the default model's space), one per process and layout."""
    return EvidenceSpace(load_word_space("wordllama"), layout)


def packaged_space(info: WordSpaceInfo) -> WordSpace | None:
    """The word space a model in ``info`` gets without a file: the ones that ship in pip
    wheels (WordLlama, with or without evidence channels); None for any other."""
    if info == WORDLLAMA:
        return load_word_space("wordllama")
    for layout in LAYOUTS:
        if info == evidence_info(WORDLLAMA, layout):
            return evidence_wordllama(layout)
    return None
