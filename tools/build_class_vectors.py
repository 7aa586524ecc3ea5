#!/usr/bin/env python3
"""Regenerate the default model's shipped assets from WordNet, timm and WordLlama.

    python tools/build_class_vectors.py [--wordnet /usr/share/wordnet] [--out sdl_core/assets/default]

Writes into ``--out``:

* ``class_vectors.safetensors`` — one unit vector per ImageNet-1k class (float16,
  1000 x 256, WordLlama space): the unit mean of the class's own name and of one
  vector per WordNet hypernym level (e.g. tabby -> domestic cat -> cat -> feline),
  each level the unit mean of its synsets' names. Metadata: the recipe and names.
* ``vocabulary.txt`` — the default vocabulary: the 81 NUS-WIDE concepts, the
  ImageNet class names, and common WordNet hypernyms of the classes.
* ``unseen.txt`` — the vocabulary tags the classifier does not cover. A tag is
  *seen* when it (or its singular, by WordNet's noun rules) is a lemma of an ImageNet
  class synset or of one of its WordNet hypernyms — a word the classifier's label
  hierarchy names (tabby, cat, dog, vehicle). Unseen tags (sky, beach, sunset) are
  reached only through the word space.

WordNet (Debian's ``wordnet-base``) is needed only here, never at run time.
"""
from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from sdl_core.wordvec import WORDLLAMA, WordLlamaSpace, unit_rows  # noqa: E402

NUS81 = ("airport animal beach bear birds boats book bridge buildings cars castle cat cityscape clouds "
         "computer coral cow dancing dog earthquake elk fire fish flags flowers food fox frost garden "
         "glacier grass harbor horses house lake leaf map military moon mountain nighttime ocean person "
         "plane plants police protest railroad rainbow reflection road rocks running sand sign sky snow "
         "soccer sports statue street sun sunset surf swimmers tattoo temple tiger tower town toy train "
         "tree valley vehicle water waterfall wedding whales window zebra").split()

#: Hypernym levels that enter a class vector (the class's own name is level 0).
LEVELS = 3
#: A hypernym joins the vocabulary when it lies within this many levels above a
#: class and its name is common (SemCor sense count) or it groups many classes.
VOCAB_MAX_DEPTH = 3
VOCAB_MIN_SEMCOR = 3
VOCAB_MIN_CLASSES = 10
#: Hypernyms too abstract to read as an image tag, even when common.
ABSTRACT = {"entity", "physical entity", "abstraction", "object", "whole", "thing", "matter", "unit",
            "artifact", "instrumentality", "organism", "living thing", "causal agent", "part", "group",
            "structure", "device", "covering", "commodity", "container", "implement", "system",
            "equipment", "material", "substance", "solid", "relation", "attribute", "measure",
            "psychological feature", "event", "act", "state", "location", "region", "geological formation",
            "formation", "natural object", "creation", "product", "merchandise", "article", "way",
            "conveyance", "mechanism", "mechanical device", "protective covering", "surface", "line",
            "point", "body", "being", "person", "individual", "someone", "somebody", "mortal", "soul",
            # WordNet-internal or ambiguous words that read badly as a photo tag
            "agent", "associate", "area", "communication", "design", "feed", "medium", "nutriment",
            "obstruction", "piece", "transducer", "restraint", "reflector", "work", "craft", "produce",
            "durables", "establishment", "oscine", "passerine", "placental", "saurian", "diapsid",
            "chordate", "peer", "connection", "concoction", "explorer", "drygoods", "blind", "shade",
            "spring", "bar", "board", "disk", "case", "stick", "weight", "game", "medicine", "drug",
            "fluid", "liquid", "shield", "filter", "trap", "pump", "emblem", "plaything", "shelter"}


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


def read_semcor_counts(folder: Path) -> dict[str, int]:
    """Synset offset -> SemCor count of its first lemma in that sense (0 when untagged)."""
    senses: dict[str, list[str]] = {}
    with (folder / "index.noun").open(encoding="utf-8", errors="replace") as fh:
        for line in fh:
            if line.startswith("  "):
                continue
            fields = line.split()
            n_synsets = int(fields[2])
            senses[fields[0]] = fields[-n_synsets:]
    counts: dict[str, int] = defaultdict(int)
    with (folder / "cntlist.rev").open(encoding="utf-8", errors="replace") as fh:
        for line in fh:
            key, sense_number, count = line.split()
            lemma, rest = key.split("%", 1)
            if not rest.startswith("1:"):
                continue  # nouns only
            offsets = senses.get(lemma, [])
            n = int(sense_number)
            if 1 <= n <= len(offsets):
                counts[(lemma, offsets[n - 1])] += int(count)
    return {offset: c for (lemma, offset), c in counts.items()}


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
                  levels: int = LEVELS) -> np.ndarray:
    """u_c = unit(mean(v(name_c), unit-mean names of hypernym level 1, ..., level L))."""
    rows = []
    for offset in classes:
        parts = [embed_names(space, [synsets[offset].lemmas[0]])]
        for level in hypernym_levels(synsets, offset, levels):
            parts.append(embed_names(space, [synsets[h].lemmas[0] for h in level]))
        rows.append(unit_rows(np.mean(parts, axis=0)[None])[0])
    return np.stack(rows)


def embed_names(space: WordLlamaSpace, names: list[str]) -> np.ndarray:
    vectors, found = space.embed(names)
    if not found.any():
        raise SystemExit(f"WordLlama has no vector for {names}")
    return unit_rows(vectors[found].mean(0, keepdims=True))[0]


def build_vocabulary(synsets: dict[str, Synset], classes: list[str], semcor: dict[str, int],
                     exceptions: dict[str, str]) -> tuple[list[str], set[str]]:
    """(vocabulary tags, seen tags). See the module docstring for the definitions."""
    class_names = [synsets[c].lemmas[0].lower() for c in classes]
    covered: dict[str, set[int]] = defaultdict(set)
    depth: dict[str, int] = {}
    for i, c in enumerate(classes):
        for h, d in ancestors(synsets, c).items():
            covered[h].add(i)
            depth[h] = min(d, depth.get(h, d))
    lemmas = {lemma.lower() for c in classes for lemma in synsets[c].lemmas}
    lemmas |= {lemma.lower() for h in covered for lemma in synsets[h].lemmas}
    hypernym_tags = []
    for h, members in covered.items():
        name = synsets[h].lemmas[0].lower()
        if name in ABSTRACT or depth[h] > VOCAB_MAX_DEPTH:
            continue
        common = semcor.get(h, 0) >= (VOCAB_MIN_SEMCOR if " " not in name else 2 * VOCAB_MIN_SEMCOR)
        if common or (len(members) >= VOCAB_MIN_CLASSES and " " not in name):
            hypernym_tags.append(name)
    tags = list(dict.fromkeys(NUS81 + class_names + sorted(hypernym_tags)))
    return tags, {t for t in tags if any(form in lemmas for form in noun_forms(t, exceptions))}


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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--wordnet", type=Path, default=Path("/usr/share/wordnet"), help="WordNet 3.0 dict folder")
    parser.add_argument("--out", type=Path, default=ROOT / "sdl_core" / "assets" / "default")
    parser.add_argument("--levels", type=int, default=LEVELS, help="hypernym levels in a class vector")
    args = parser.parse_args(argv)
    if not (args.wordnet / "data.noun").is_file():
        raise SystemExit(f"{args.wordnet}: no WordNet data.noun (apt-get install wordnet-base)")
    from safetensors.numpy import save_file

    synsets = read_wordnet_nouns(args.wordnet)
    classes = imagenet_synsets()
    space = WordLlamaSpace()
    vectors = class_vectors(space, synsets, classes, args.levels)
    tags, seen = build_vocabulary(synsets, classes, read_semcor_counts(args.wordnet),
                                  read_noun_exceptions(args.wordnet))
    args.out.mkdir(parents=True, exist_ok=True)
    meta = {"word_space": WORDLLAMA.name, "dim": str(WORDLLAMA.dim),
            "recipe": f"unit(mean(name, hypernym levels 1..{args.levels})), WordNet 3.0 first lemmas",
            "synsets": json.dumps(["n" + c for c in classes]),
            "names": json.dumps([synsets[c].lemmas[0] for c in classes])}
    save_file({"class_vectors": vectors.astype(np.float16)}, str(args.out / "class_vectors.safetensors"),
              metadata=meta)
    header = ("# The default model's vocabulary: NUS-81 concepts, ImageNet-1k class names and common\n"
              "# WordNet hypernyms of them. Regenerate with tools/build_class_vectors.py.\n")
    (args.out / "vocabulary.txt").write_text(header + "\n".join(tags) + "\n", encoding="utf-8")
    unseen = [t for t in tags if t not in seen]
    unseen_header = ("# Vocabulary tags the ImageNet classifier does not cover (not a lemma of its classes or\n"
                     "# of their WordNet hypernyms): shown as *unseen*. Regenerate with tools/build_class_vectors.py.\n")
    (args.out / "unseen.txt").write_text(unseen_header + "\n".join(unseen) + "\n", encoding="utf-8")
    print(f"wrote {args.out}: {len(classes)} class vectors, {len(tags)} vocabulary tags "
          f"({len(tags) - len(unseen)} seen, {len(unseen)} unseen)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
