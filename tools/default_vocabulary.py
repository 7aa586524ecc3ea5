"""The default model's vocabulary: words people tag photos with (used by build_class_vectors.py).

The source is the 1,006 NUS-WIDE tag words (Flickr users' own tags; the words of the
authors' ``NUS_WIDE/classes.pickle``, kept in ``tools/nus_wide_tags.txt``). A tag of
the default vocabulary must be something a person could see in a photo and would
type, so the list is cleaned in this order, each step for a reason measured in
docs/quality/NOTES.md:

1. place names and nationalities (georgia, poland), words that say nothing visible
   (excellence, best, photo, july) and ambiguous words whose first reading is not the
   photo's (craft, construction, cubs, booby) are dropped;
2. British spellings give way to American ones, and plural duplicates are merged
   (the NUS-81 form wins, else the singular: car/cars -> cars, bridge/bridges -> bridge);
3. a word whose WordLlama vector is a bag of 3 or more sub-word tokens (gi-ra-ffe,
   pe-bb-les, ele-ph-ant) is dropped: such vectors sit near words that share spelling
   pieces, not meaning, and rank by pun;
4. an *unseen* word that is among the 10 nearest tags of more than ``HUB_SHARE`` of
   the 1,000 ImageNet class vectors is dropped: a hub scores high on any photo
   (petals after pet, pups after every dog). Repeated on what is left until none is.

Seen stays what the classifier was trained on: a tag is *seen* when it (or its singular)
names an ImageNet class (church, tiger) or its first WordNet noun sense is an ImageNet
class or one of their hypernyms (dog, flowers, vehicle; not wind, whose first sense is
moving air although "wind instrument" is a hypernym of harmonica). Every other tag
(sky, lake, fog) is unseen.
"""
from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

WORDS = Path(__file__).resolve().parent / "nus_wide_tags.txt"

PLACES = frozenset("""
africa alaska alberta america amsterdam argentina arizona asia atlanta austin australia austria barcelona belgium
berlin boston brasil brazil brighton britain brooklyn burma california canada chicago chile china colorado
deutschland egypt england europa europe finland florida france georgia germany greece hawaii holland iceland
illinois india indonesia iran iraq ireland israel istanbul italia italy japan kauai kuwait london madrid malaysia
maldives manhattan maryland massachusetts maui melbourne mexico michigan minnesota missouri montreal nederland
netherlands nevada norway nsw oahu ohio ontario oregon pacific pakistan paris pennsylvania philadelphia philippines
poland portland portugal quebec roma rome scotland seattle singapore spain sweden switzerland sydney taiwan texas
thailand tokyo toronto turkey utah vancouver victoria vietnam virginia wales washington wisconsin york
african american asian british chinese french indian italians japanese muslim islam buddhism
east west north south united national international
""".split())

#: Nothing a person could see: judgements, photo-making words, camera brands, dates,
#: occasions away from the camera, and abstract ideas.
NOT_VISIBLE = frozenset("""
action adorable amazing awesome beautiful beauty best big bravo breathtaking cool copyright creative cute delete
dramatic dream dynamic excellence explore fab fabulous fantastic favorite free freedom fun funny gorgeous great
happiness happy hope interesting interestingness joy little live long look love lovely magic magical nice perfect
pretty quality save self stunning style sweet time wonder wonderful world wow
image images photo photograph photography photos picture pictures portfolio shot composition exposure flash lens
fisheye film polaroid raw analog digital graphic illustration perspective documentary photojournalism candid
wallpaper model display figures collage charts maps design designs cubism surreal fantasy
eos sigma olympus mac bleu agua mar
april august december july june march october day holiday holidays vacation trip tour tourism travel adventure
new old small giant wide high little big
kit host agent guest individual social state county capital center public entertainment health science business
work power peace life death sad lonely environment atmosphere movement speed geometry poverty paradise news rebel
politics politicians democrat election president pope god religion culture heritage history historic historical
formula fan friend mother family pair color natural soft interior decoration structure relief range line circle
square post court club bar bank star land earth space outdoor outdoors outside close view
""".split())

#: Words whose first reading is not the photo tag a person means (craft = handicraft,
#: cubs = a baseball team on Flickr) or that name a part too vaguely (head, trunk).
AMBIGUOUS = frozenset("""
craft crafts construction fall game head rays trunk ties pole suits tanks nets frame cross track tracks booby cubs
mare judge hot heart country shade play run fly walk swim dive
""".split())

#: British spelling -> the American one kept.
SPELLING = {"colour": "color", "colours": "colors", "colourful": "colorful", "harbour": "harbor", "grey": "gray"}

#: Plurals with a meaning of their own (not merged with the singular).
DISTINCT_PLURALS = frozenset({"woods", "glasses"})
#: Words with more sub-word tokens than this are dropped (step 3).
MAX_TOKENS = 2
#: Unseen words among the 10 nearest tags of more than this share of classes are hubs (step 4).
HUB_SHARE = 0.10
HUB_TOP = 10


@dataclass
class CleanedVocabulary:
    """Tags in source order, which are seen, and what each step dropped (for the notes)."""

    tags: list[str]
    seen: set[str]
    dropped: dict[str, list[str]] = field(default_factory=dict)


def read_words(path: Path = WORDS) -> list[str]:
    """The source words, one a line (``#`` comments)."""
    lines = path.read_text(encoding="utf-8").splitlines()
    return [w for w in (line.split("#", 1)[0].strip().lower() for line in lines) if w]


def read_noun_senses(folder: Path) -> dict[str, list[str]]:
    """Noun lemma (spaces, lower case) -> offsets of all its senses, most frequent first (``index.noun``)."""
    senses = {}
    with (folder / "index.noun").open(encoding="utf-8", errors="replace") as fh:
        for line in fh:
            if line.startswith("  "):
                continue  # licence header
            fields = line.split()
            senses[fields[0].replace("_", " ")] = fields[-int(fields[2]):]
    return senses


def read_first_senses(folder: Path) -> dict[str, str]:
    """Noun lemma (spaces, lower case) -> offset of its first (most frequent) WordNet sense."""
    return {lemma: offsets[0] for lemma, offsets in read_noun_senses(folder).items() if offsets}


def merge_plurals(words: Sequence[str], preferred: Iterable[str],
                  forms: Callable[[str], list[str]]) -> list[str]:
    """One form per word: a plural whose singular is also listed is merged with it; the form in
    ``preferred`` (the NUS-81 concepts) wins, else the singular. Source order is kept."""
    preferred = set(preferred)
    listed = set(words)
    singular_of = {w: None if w in DISTINCT_PLURALS else next((f for f in forms(w)[1:] if f in listed and f != w), None)
                   for w in words}
    plurals_of: dict[str, list[str]] = {}
    for w, single in singular_of.items():
        if single is not None:
            plurals_of.setdefault(single, []).append(w)
    out = []
    for w in words:
        if singular_of[w] is not None:
            continue  # written where its singular stands
        group = [w] + plurals_of.get(w, [])
        out.append(next((g for g in group if g in preferred), w))
    return list(dict.fromkeys(out))


def clean_words(words: Sequence[str], preferred: Iterable[str], forms: Callable[[str], list[str]]
                ) -> tuple[list[str], dict[str, list[str]]]:
    """Steps 1 and 2: (kept words, {reason: dropped words})."""
    dropped: dict[str, list[str]] = {"place": [], "not visible": [], "ambiguous": [], "spelling": []}
    kept = []
    for w in words:
        if w in PLACES:
            dropped["place"].append(w)
        elif w in NOT_VISIBLE:
            dropped["not visible"].append(w)
        elif w in AMBIGUOUS:
            dropped["ambiguous"].append(w)
        elif w in SPELLING:
            dropped["spelling"].append(w)
        else:
            kept.append(w)
    merged = merge_plurals(kept, preferred, forms)
    dropped["plural"] = [w for w in kept if w not in set(merged)]
    return merged, dropped


def seen_tags(tags: Iterable[str], class_names: set[str], first_sense: dict[str, str], covered: set[str],
              forms: Callable[[str], list[str]]) -> set[str]:
    """Tags that (in one of their noun forms) name a class, or whose first noun sense is in
    ``covered`` (the ImageNet class synsets and all their hypernyms)."""
    return {t for t in tags if any(f in class_names or first_sense.get(f) in covered for f in forms(t))}


def hub_share(class_vectors: np.ndarray, tag_vectors: np.ndarray, top: int = HUB_TOP) -> np.ndarray:
    """For each tag, the share of classes that have it among their ``top`` nearest tags."""
    scores = class_vectors @ tag_vectors.T  # (classes, tags)
    top = min(top, tag_vectors.shape[0])
    nearest = np.argpartition(-scores, top - 1, axis=1)[:, :top]
    return np.bincount(nearest.ravel(), minlength=tag_vectors.shape[0]) / class_vectors.shape[0]


def filter_vectors(tags: Sequence[str], seen: set[str], token_counts: Sequence[int], tag_vectors: np.ndarray,
                   class_vectors: np.ndarray, pixel_words: frozenset[str] = frozenset()
                   ) -> tuple[list[str], dict[str, list[str]]]:
    """Step 3 (every tag), then step 4 (unseen tags: the classifier's hierarchy vouches for seen
    ones), repeated until no unseen tag of what is left is a hub (dropping a hub hands its
    places among the nearest tags to others). ``pixel_words`` (monochrome, blue) are scored
    from the pixels (sdl_core.colour), not by their word vectors, so both steps spare them."""
    keep = [i for i, tokens in enumerate(token_counts) if tokens <= MAX_TOKENS or tags[i] in pixel_words]
    dropped = {"sub-word vector": [tags[i] for i in range(len(tags))
                                   if token_counts[i] > MAX_TOKENS and tags[i] not in pixel_words], "hub": []}
    while True:
        shares = hub_share(class_vectors, tag_vectors[keep])
        hubs = {i for i, share in zip(keep, shares)
                if share > HUB_SHARE and tags[i] not in seen and tags[i] not in pixel_words}
        if not hubs:
            return [tags[i] for i in keep], dropped
        dropped["hub"] += [tags[i] for i in keep if i in hubs]
        keep = [i for i in keep if i not in hubs]
