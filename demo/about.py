"""The "About this model" panel: what the model is, its vocabularies, its measured
quality (read from the README's default-model section) and what "unseen" means."""
from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING

from sdl_core.registry import DEFAULT_MODEL, resolve_name

if TYPE_CHECKING:
    from sdl_core.tagger import Tagger

README = Path(__file__).resolve().parents[1] / "README.md"

_HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")
#: A metric name: "mAP" exactly (so "feature map" is not one), the others in any case.
_METRIC = re.compile(r"\bmAP\b|(?i:\b(F1|AUC|precision|recall|accuracy|[PR]@\d))")
_MD_SPECIAL = re.compile(r"([\\`*_{}\[\]<>()#+!|])")

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


def readme_section(text: str, title_pattern: str = r"default model") -> list[str]:
    """Lines of the first README section whose heading matches ``title_pattern``
    (up to the next heading of the same or a higher level)."""
    lines = text.splitlines()
    for i, line in enumerate(lines):
        match = _HEADING.match(line)
        if match and re.search(title_pattern, match.group(2), re.IGNORECASE):
            level = len(match.group(1))
            body = []
            for nxt in lines[i + 1:]:
                head = _HEADING.match(nxt)
                if head and len(head.group(1)) <= level:
                    break
                body.append(nxt)
            return body
    return []


def quality_from_readme(text: str) -> str | None:
    """The measured-quality part of the README's default-model section: each table with
    the paragraph before it (what was measured) and after it (what it means), and any
    paragraph that names a metric. None when there is none."""
    blocks, current = [], []
    for line in readme_section(text) + [""]:
        if line.strip():
            current.append(line)
        elif current:
            blocks.append("\n".join(current))
            current = []
    is_table = [b.lstrip().startswith("|") for b in blocks]
    keep = set()
    for i, block in enumerate(blocks):
        if is_table[i]:
            keep.update(j for j in (i - 1, i, i + 1) if 0 <= j < len(blocks) and not _HEADING.match(blocks[j]))
        elif _METRIC.search(block):
            keep.add(i)
    return "\n\n".join(blocks[i] for i in sorted(keep)) or None


def measured_quality(model_value: str, readme: Path = README) -> str:
    """Markdown for the quality line of the panel."""
    if resolve_name(DEFAULT_MODEL) != model_value:
        return "Not measured by this app: see the evaluation report that came with this checkpoint."
    try:
        found = quality_from_readme(readme.read_text(encoding="utf-8"))
    except OSError:
        found = None
    return found if found else "See README.md (section on the default model)."


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
