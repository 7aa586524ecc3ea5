#!/usr/bin/env python3
"""Regenerate the default model's shipped assets from WordNet, timm and WordLlama.

    python tools/build_class_vectors.py [--wordnet /usr/share/wordnet] [--out sdl_core/assets/default]

Writes into ``--out``:

* ``class_vectors.safetensors`` — one unit vector per ImageNet-1k class (float16,
  1000 x 256, WordLlama space): the unit mean of the class's own name and of one
  vector per WordNet hypernym level (e.g. tabby -> domestic cat -> cat -> feline),
  each level the unit mean of its synsets' names. Metadata: the recipe and names.
* ``vocabulary.txt`` — the default vocabulary: the NUS-WIDE tag words people give photos
  (``tools/nus_wide_tags.txt``), cleaned as ``tools/default_vocabulary.py`` explains.
* ``unseen.txt`` — the vocabulary tags the classifier does not cover. A tag is
  *seen* when its first WordNet noun sense (or its singular's) is an ImageNet class or
  one of their hypernyms (dog, flowers, vehicle). Unseen tags (sky, lake, fog) are
  reached only through the word space.

WordNet (Debian's ``wordnet-base``) is needed only here, never at run time.
"""
from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tools"))

import default_vocabulary as dv  # noqa: E402
from sdl_core.colour import channel_of  # noqa: E402
from sdl_core.evidence import channel_name  # noqa: E402
from sdl_core.wordvec import WORDLLAMA, WordLlamaSpace, unit_rows  # noqa: E402

NUS81 = ("airport animal beach bear birds boats book bridge buildings cars castle cat cityscape clouds "
         "computer coral cow dancing dog earthquake elk fire fish flags flowers food fox frost garden "
         "glacier grass harbor horses house lake leaf map military moon mountain nighttime ocean person "
         "plane plants police protest railroad rainbow reflection road rocks running sand sign sky snow "
         "soccer sports statue street sun sunset surf swimmers tattoo temple tiger tower town toy train "
         "tree valley vehicle water waterfall wedding whales window zebra").split()

#: Hypernym levels that enter a class vector (the class's own name is level 0).
LEVELS = 3


@dataclass
class Synset:
    offset: str
    lemmas: list[str]
    hypernyms: list[str]


def read_wordnet_nouns(folder: Path) -> dict[str, Synset]:
    """Parse ``data.noun``: offset -> lemmas (spaces, not underscores) and hypernym offsets."""
    synsets: dict[str, Synset] = {}
    with (folder / "data.noun").open(encoding="utf-8", errors="replace") as fh:
        for line in fh:
            if line.startswith("  "):
                continue  # licence header
            fields = line.split(" | ")[0].split()
            offset, n_words = fields[0], int(fields[3], 16)
            words = [fields[4 + 2 * i].replace("_", " ") for i in range(n_words)]
            pos = 4 + 2 * n_words
            n_ptrs = int(fields[pos])
            hypernyms = []
            for i in range(n_ptrs):
                symbol, target, target_pos = fields[pos + 1 + 4 * i: pos + 4 + 4 * i]
                if symbol in ("@", "@i") and target_pos == "n":
                    hypernyms.append(target)
            synsets[offset] = Synset(offset, words, hypernyms)
    return synsets


def hypernym_levels(synsets: dict[str, Synset], offset: str, levels: int) -> list[list[str]]:
    """Offsets of the hypernyms 1..levels above a synset (each level de-duplicated)."""
    out, frontier = [], [offset]
    for _ in range(levels):
        frontier = list(dict.fromkeys(h for s in frontier for h in synsets[s].hypernyms))
        if not frontier:
            break
        out.append(frontier)
    return out


def ancestors(synsets: dict[str, Synset], offset: str) -> dict[str, int]:
    """Every hypernym above a synset with its smallest distance."""
    dist, frontier, depth = {}, [offset], 0
    while frontier:
        depth += 1
        frontier = [h for s in frontier for h in synsets[s].hypernyms if h not in dist]
        for h in frontier:
            dist.setdefault(h, depth)
    return dist


def imagenet_synsets() -> list[str]:
    """WordNet noun offsets of the 1000 ImageNet classes, in the classifier's order (from timm)."""
    from timm.data import ImageNetInfo
    info = ImageNetInfo()
    return [info.index_to_label_name(i)[1:] for i in range(info.num_classes())]


def class_vectors(space: WordLlamaSpace, synsets: dict[str, Synset], classes: list[str],
                  first_sense: dict[str, str], levels: int = LEVELS) -> np.ndarray:
    """u_c = unit(mean(v(name_c), unit-mean names of hypernym level 1, ..., level L)).

    A hypernym enters by a name only where that name first means it (:func:`sense_name`):
    bubble's hypernym "ball" (a globule) would otherwise bring every ball game to a water drop."""
    rows = []
    for offset in classes:
        parts = [embed_names(space, [synsets[offset].lemmas[0]])]
        for level in hypernym_levels(synsets, offset, levels):
            names = [name for name in (sense_name(synsets[h], first_sense) for h in level) if name]
            if names:
                parts.append(embed_names(space, names))
        rows.append(unit_rows(np.mean(parts, axis=0)[None])[0])
    return np.stack(rows)


def sense_name(synset: Synset, first_sense: dict[str, str]) -> str | None:
    """The first lemma of a synset whose most frequent noun sense is that synset, or None
    (ball.n.03 "a globule" has none: "ball" first means the game's ball)."""
    return next((lemma for lemma in synset.lemmas if first_sense.get(lemma.lower()) == synset.offset), None)


def embed_names(space: WordLlamaSpace, names: list[str]) -> np.ndarray:
    vectors, found = space.embed(names)
    if not found.any():
        raise SystemExit(f"WordLlama has no vector for {names}")
    return unit_rows(vectors[found].mean(0, keepdims=True))[0]


#: WordNet's detachment rules for nouns (morphy): plural suffix -> singular suffix.
NOUN_SUFFIXES = (("s", ""), ("ses", "s"), ("xes", "x"), ("zes", "z"), ("ches", "ch"), ("shes", "sh"),
                 ("men", "man"), ("ies", "y"))


def read_noun_exceptions(folder: Path) -> dict[str, str]:
    """Irregular plurals from ``noun.exc`` (geese -> goose)."""
    out = {}
    with (folder / "noun.exc").open(encoding="utf-8", errors="replace") as fh:
        for line in fh:
            parts = line.split()
            if len(parts) >= 2:
                out[parts[0].replace("_", " ")] = parts[1].replace("_", " ")
    return out


def noun_forms(tag: str, exceptions: dict[str, str]) -> list[str]:
    """The tag and its candidate singulars (the last word of a phrase is inflected)."""
    head, _, last = tag.rpartition(" ")
    prefix = head + " " if head else ""
    forms = [tag] + ([prefix + exceptions[last]] if last in exceptions else [])
    forms += [prefix + last[: -len(old)] + new for old, new in NOUN_SUFFIXES if last.endswith(old) and len(last) > len(old) + 1]
    return forms


def build_vocabulary(synsets: dict[str, Synset], classes: list[str], first_sense: dict[str, str],
                     exceptions: dict[str, str], vectors: np.ndarray, words: list[str]
                     ) -> dv.CleanedVocabulary:
    """The cleaned vocabulary, its seen tags and what was dropped (see default_vocabulary.py)."""
    def forms(tag: str) -> list[str]:
        return noun_forms(tag, exceptions)

    tags, dropped = dv.clean_words(words, NUS81, forms)
    covered = set(classes) | {h for c in classes for h in ancestors(synsets, c)}
    names = {lemma.lower() for c in classes for lemma in synsets[c].lemmas[:1]}
    seen = dv.seen_tags(tags, names, first_sense, covered, forms)
    tag_vectors, _ = WordLlamaSpace().embed(tags)
    pixel_words = frozenset(t for t in tags if channel_of(t) is not None)
    kept, more = dv.filter_vectors(tags, seen, token_counts(tags), tag_vectors, vectors, pixel_words)
    # an evidence channel is listed once, by its own name: "face" and "human" read the person
    # channel just as "person" does (typed, they still do)
    more["channel synonym"] = [t for t in kept if channel_name(t) not in (None, t)]
    kept = [t for t in kept if t not in more["channel synonym"]]
    # a colour word is scored from the pixels, never by the classifier (orange the fruit is a class)
    return dv.CleanedVocabulary(kept, (seen - pixel_words) & set(kept), {**dropped, **more})


def evidence_classes(tags: list[str], seen: set[str], synsets: dict[str, Synset], classes: list[str],
                     senses: dict[str, list[str]], exceptions: dict[str, str]) -> dict[str, list[int]]:
    """For each seen tag, the classifier's classes that are evidence for it: the classes it (in a
    noun form) names, and the classes under any of its noun senses ("plants" the flora, not only
    the factory). Words that read a pixel channel (colours, person) are left out: the channel is
    their evidence."""
    below = [set(ancestors(synsets, c)) | {c} for c in classes]
    names = [synsets[c].lemmas[0].lower() for c in classes]
    out = {}
    for tag in tags:
        if tag not in seen or channel_name(tag) is not None:
            continue
        found: set[int] = set()
        for form in noun_forms(tag, exceptions):
            found |= {i for i, name in enumerate(names) if name == form}
            found |= {i for i, above in enumerate(below) if above.intersection(senses.get(form, []))}
        out[tag] = sorted(found)
    return out


def token_counts(tags: list[str]) -> list[int]:
    """WordLlama (Llama-2) tokens of each tag."""
    import wordllama
    from wordllama import WordLlama
    model = WordLlama.load(dim=WORDLLAMA.dim, cache_dir=Path(wordllama.__file__).parent, disable_download=True)
    return [len(model.tokenizer.encode(t, add_special_tokens=False).ids) for t in tags]


def write_vocabulary(out: Path, vocab: dv.CleanedVocabulary) -> None:
    header = ("# The default model's vocabulary: NUS-WIDE tag words people give photos, cleaned by\n"
              "# tools/default_vocabulary.py. Regenerate with tools/build_class_vectors.py.\n")
    (out / "vocabulary.txt").write_text(header + "\n".join(vocab.tags) + "\n", encoding="utf-8")
    unseen = [t for t in vocab.tags if t not in vocab.seen]
    unseen_header = ("# Vocabulary tags the ImageNet classifier does not cover (no class name, and their first\n"
                     "# WordNet sense is no class or hypernym): shown as *unseen*.\n"
                     "# Regenerate with tools/build_class_vectors.py.\n")
    (out / "unseen.txt").write_text(unseen_header + "\n".join(unseen) + "\n", encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--wordnet", type=Path, default=Path("/usr/share/wordnet"), help="WordNet 3.0 dict folder")
    parser.add_argument("--out", type=Path, default=ROOT / "sdl_core" / "assets" / "default")
    parser.add_argument("--levels", type=int, default=LEVELS, help="hypernym levels in a class vector")
    parser.add_argument("--words", type=Path, default=dv.WORDS, help="source tag words, one a line")
    args = parser.parse_args(argv)
    if not (args.wordnet / "data.noun").is_file():
        raise SystemExit(f"{args.wordnet}: no WordNet data.noun (apt-get install wordnet-base)")
    from safetensors.numpy import save_file

    synsets = read_wordnet_nouns(args.wordnet)
    classes = imagenet_synsets()
    first_sense = dv.read_first_senses(args.wordnet)
    vectors = class_vectors(WordLlamaSpace(), synsets, classes, first_sense, args.levels).astype(np.float16)
    vocab = build_vocabulary(synsets, classes, first_sense,
                             read_noun_exceptions(args.wordnet), vectors.astype(np.float32), dv.read_words(args.words))
    args.out.mkdir(parents=True, exist_ok=True)
    meta = {"word_space": WORDLLAMA.name, "dim": str(WORDLLAMA.dim),
            "recipe": f"unit(mean(name, hypernym levels 1..{args.levels})), WordNet 3.0: the first lemma "
                      "that first means the hypernym",
            "synsets": json.dumps(["n" + c for c in classes]),
            "names": json.dumps([synsets[c].lemmas[0] for c in classes])}
    save_file({"class_vectors": vectors}, str(args.out / "class_vectors.safetensors"), metadata=meta)
    write_vocabulary(args.out, vocab)
    evidence = evidence_classes(vocab.tags, vocab.seen, synsets, classes, dv.read_noun_senses(args.wordnet),
                                read_noun_exceptions(args.wordnet))
    (args.out / "seen_classes.json").write_text(json.dumps(evidence, separators=(",", ":")) + "\n", encoding="utf-8")
    for reason, dropped in vocab.dropped.items():
        print(f"dropped ({reason}, {len(dropped)}): {' '.join(dropped)}")
    print(f"wrote {args.out}: {len(classes)} class vectors, {len(vocab.tags)} vocabulary tags "
          f"({len(vocab.seen)} seen, {len(vocab.tags) - len(vocab.seen)} unseen)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
