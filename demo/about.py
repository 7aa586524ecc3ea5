"""The "About this model" panel: what the model is, its vocabularies, its measured
quality (shipped in its registry entry) and what "unseen" means."""
from __future__ import annotations

import re
from typing import TYPE_CHECKING

from sdl_core.registry import Quality, get_model, resolve_name

if TYPE_CHECKING:
    from sdl_core.tagger import Tagger

_MD_SPECIAL = re.compile(r"([\\`*_{}\[\]<>()#+!|])")

NOT_MEASURED = "Not measured by this app: see the evaluation report that came with this checkpoint."
UNSEEN_TEXT = ("**What \"unseen\" means.** Every tag is a word vector, and the model scores a tag by comparing "
               "its principal vectors with that word vector. *Seen* tags were among the labels the model was "
               "trained on; *unseen* tags (shown as `*tag*`) never were: they are scored zero-shot, from their "
               "word vectors alone, just like any tag you type.")


def md_escape(text: str) -> str:
    """Escape Markdown/HTML specials in text that comes from a checkpoint file."""
    return _MD_SPECIAL.sub(r"\\\1", str(text))


def md_code(text: str) -> str:
    """Checkpoint text as an inline code span (backticks removed: nothing to escape inside)."""
    return "`" + str(text).replace("`", "'") + "`"


def quality_markdown(quality: Quality, model_name: str) -> str:
    """A registry entry's measured quality: what was measured, the table, what it means."""
    header = "| model | " + " | ".join(quality.columns) + " |"
    rule = "|---" * (len(quality.columns) + 1) + "|"
    rows = []
    for i, (label, values) in enumerate(quality.rows):
        name = f"{label} (`{model_name}`)" if i == 0 else label
        cells = ["—" if v is None else f"{v:.3f}" for v in values]
        rows.append(f"| {name} | " + " | ".join(cells) + " |")
    parts = [f"On {quality.measured_on}:", "\n".join([header, rule, *rows])]
    return "\n\n".join(parts + ([quality.note] if quality.note else []))


def measured_quality(model_value: str) -> str:
    """Markdown for the quality part of the panel: a registered model's shipped numbers."""
    name = resolve_name(model_value)
    quality = get_model(name).quality if name is not None else None
    return quality_markdown(quality, name) if quality is not None else NOT_MEASURED


def about_markdown(tagger: Tagger, label: str, quality: str) -> str:
    """The panel's Markdown for one loaded model."""
    cfg = tagger.config
    vocab = tagger.vocabulary
    seen, unseen = int(vocab.seen.sum()), int(len(vocab) - vocab.seen.sum())
    lines = [
        f"### {md_escape(tagger.name)}",
        md_escape(cfg.description) if cfg.description else "",
        "",
        f"- **Chosen as:** {md_escape(label)}",
        f"- **Architecture:** {md_escape(cfg.kind)} model on {md_code(cfg.backbone)}, "
        f"K = {cfg.k} principal vectors in the word space {md_code(cfg.word_space.name)} "
        f"(D = {cfg.d}); a tag's score is the {cfg.reduction} over the K vectors of "
        "⟨principal vector, tag vector⟩.",
        f"- **Vocabulary:** {seen:,} seen tags, {unseen:,} unseen tags ({len(vocab):,} in all); typed tags are "
        "embedded in the same word space (a typed word the space cannot embed is listed as not in vocabulary).",
        f"- **Input:** {cfg.preprocess.size}×{cfg.preprocess.size}, {cfg.preprocess.resize.replace('_', ' ')}.",
        "",
        "**Measured quality**",
        "",
        quality,
        "",
        UNSEEN_TEXT,
    ]
    return "\n".join(lines)
