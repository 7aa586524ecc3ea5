"""Turning sdl_core results into what the page shows: heat-map overlays, the tag
table (HTML built with ``html.escape`` only), the JSON download and the XMP sidecar.

Pure functions over PIL images, numpy arrays and sdl_core dataclasses: no model
math, no Gradio. Overlays use a colormap lookup table from matplotlib and a PIL
blend (no pyplot figure per map: that is ~50x slower).
"""
from __future__ import annotations

import functools
import html
import json
import re
import shutil
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

import numpy as np
from PIL import Image

from sdl_core.config import PreprocessConfig
from sdl_core.errors import StorageError
from sdl_core.files import os_error_reason, write_bytes
from sdl_core.images import centre_square

if TYPE_CHECKING:  # the tagger's module imports torch and timm: the page is served before they load
    from sdl_core.tagger import ImageTags, TagResult

#: Longest side of the photo under the heat maps (pixels): small pages, fast encoding.
OVERLAY_SIDE = 320
#: Weight of the heat map against the photo.
OVERLAY_ALPHA = 0.55
COLORMAP = "inferno"


@functools.lru_cache(maxsize=4)
def colormap_lut(name: str = COLORMAP) -> np.ndarray:
    """(256, 3) uint8 RGB lookup table of a matplotlib colormap (imported here, on the
    first map, not while the page starts)."""
    from matplotlib import colormaps
    rgba = colormaps[name](np.linspace(0.0, 1.0, 256))
    return (rgba[:, :3] * 255.0 + 0.5).astype(np.uint8)


def model_view(photo: Image.Image, preprocess: PreprocessConfig, max_side: int = OVERLAY_SIDE) -> Image.Image:
    """The part of the photo the model saw, at display size.

    A squashing model sees the whole photo (its maps stretch back to the photo's
    aspect); a centre-cropping one sees the central square only.
    """
    img = photo.convert("RGB")
    if preprocess.resize == "shorter_side_crop":
        img = centre_square(img)
    scale = max_side / max(img.size)
    if scale < 1.0:
        img = img.resize((max(1, round(img.width * scale)), max(1, round(img.height * scale))),
                         Image.Resampling.BILINEAR)
    return img


def normalize(heat: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """Map values in [lo, hi] to [0, 1]; a flat map becomes all zeros."""
    heat = np.asarray(heat, dtype=np.float32)
    if not np.isfinite(lo) or not np.isfinite(hi) or hi <= lo:
        return np.zeros_like(heat)
    return np.clip((heat - lo) / (hi - lo), 0.0, 1.0)


def overlay(photo: Image.Image, unit_heat: np.ndarray, alpha: float = OVERLAY_ALPHA,
            cmap: str = COLORMAP) -> Image.Image:
    """Blend a [0, 1] heat map (any grid size) over ``photo`` with a colormap."""
    grey = Image.fromarray(np.round(np.nan_to_num(unit_heat) * 255.0).astype(np.uint8), "L")
    grey = grey.resize(photo.size, Image.Resampling.BILINEAR)
    colored = Image.fromarray(colormap_lut(cmap)[np.asarray(grey)], "RGB")
    return Image.blend(photo.convert("RGB"), colored, alpha)


def overlays_each(photo: Image.Image, maps: np.ndarray) -> list[Image.Image]:
    """One overlay per map, each on its own scale (where each vector looks)."""
    return [overlay(photo, normalize(m, float(np.min(m)), float(np.max(m)))) for m in maps]


def overlays_shared(photo: Image.Image, maps: np.ndarray) -> list[Image.Image]:
    """One overlay per map on one shared scale, so the K maps of a tag compare."""
    lo, hi = float(np.min(maps)), float(np.max(maps))
    return [overlay(photo, normalize(m, lo, hi)) for m in maps]


def principal_captions(principal_tags: Sequence[Sequence[str]]) -> list[str]:
    """'k=0 · wins: cat, *boat*' for each principal vector (tags as displayed)."""
    return [f"k={k} · wins: {', '.join(tags)}" if tags else f"k={k} · wins none of the shown tags"
            for k, tags in enumerate(principal_tags)]


def tag_captions(result: TagResult, k: int) -> list[str]:
    """Captions of the K maps of one tag; the winning vector is marked."""
    return [f"k={i} · {result.display}" + (" · wins this tag" if i == result.principal else "")
            for i in range(k)]


@dataclass(frozen=True)
class Shown:
    """What the page keeps between events (in ``gr.State``): the photo as the model saw
    it at display size, the shown tags and each tag's K maps. Choosing a tag reads
    this; the model never runs again."""

    photo: Image.Image
    tags: tuple[TagResult, ...]
    tag_maps: dict[str, np.ndarray]

    def result(self, display_or_tag: str) -> TagResult | None:
        for t in self.tags:
            if display_or_tag in (t.display, t.tag):
                return t
        return None

    def tag_gallery(self, display_or_tag: str) -> list[tuple[Image.Image, str]]:
        """(overlay, caption) for each principal vector's map of one tag."""
        result = self.result(display_or_tag)
        if result is None or result.tag not in self.tag_maps:
            return []
        maps = self.tag_maps[result.tag]
        return list(zip(overlays_shared(self.photo, maps), tag_captions(result, len(maps))))


TABLE_STYLE = """
<style>
.sdl-tags { border-collapse: collapse; width: 100%; font-size: 0.95rem; }
.sdl-tags th, .sdl-tags td, .sdl-outside th, .sdl-outside td {
  padding: 4px 8px; border-bottom: 1px solid rgba(127,127,127,0.25); text-align: left; }
.sdl-tags td.num, .sdl-outside td.num { text-align: right; font-variant-numeric: tabular-nums; }
.sdl-outside { border-collapse: collapse; width: 100%; font-size: 0.95rem; margin-top: 4px; }
.sdl-outside-title { margin-top: 12px; font-weight: 600; }
.sdl-tags tr.unseen td.tag, .sdl-outside tr.unseen td.tag { color: #7c3aed; font-style: italic; font-weight: 600; }
.sdl-badge { display: inline-block; font-size: 0.75rem; padding: 0 6px; border-radius: 8px; margin-left: 6px;
             font-style: normal; font-weight: 500; }
.sdl-badge.unseen { background: #ede9fe; color: #5b21b6; }
.sdl-badge.typed { background: #dcfce7; color: #166534; }
.sdl-badge.approx { background: #fef3c7; color: #92400e; }
.sdl-missing { margin-top: 8px; color: #b45309; }
</style>
"""


def _row(rank: str, t: TagResult) -> str:
    """One table row: rank, tag (escaped, with its badges), score, winning k."""
    badges = ""
    if not t.seen:
        badges += '<span class="sdl-badge unseen">unseen</span>'
    if t.typed:
        badges += '<span class="sdl-badge typed">typed</span>'
    if t.approximate:
        badges += ('<span class="sdl-badge approx" title="vector bridged from WordLlama; the model\'s fastText '
                   'model gives the exact one">\u2248 approximate</span>')
    return (f'<tr class="{"seen" if t.seen else "unseen"}"><td class="num">{rank}</td>'
            f'<td class="tag">{html.escape(t.display)}{badges}</td>'
            f'<td class="num">{t.score:.4f}</td><td class="num">{t.principal}</td></tr>')


def outside_html(result: ImageTags) -> str:
    """The typed tags that missed the top-k, with their ranks among all ranked tags ('' if none)."""
    outside = result.typed_outside
    if not outside:
        return ""
    rows = "".join(_row(f"#{t.rank}", t) for t in outside)
    return (f'<p class="sdl-outside-title">Your tags outside the top {len(result.tags)} '
            f'(rank among all {result.ranked} tags):</p>'
            '<table class="sdl-outside"><thead><tr><th>rank</th><th>tag</th><th>score</th><th>k</th></tr>'
            f'</thead><tbody>{rows}</tbody></table>')


def tags_table_html(result: ImageTags, model_name: str) -> str:
    """The ranked tags as an HTML table, then the typed tags outside it. Every piece of
    user or model text is escaped."""
    rows = [_row(str(rank), t) for rank, t in enumerate(result.tags, 1)]
    parts = [TABLE_STYLE, f'<div class="sdl-result"><p>Top {len(result.tags)} tags from '
                          f'<b>{html.escape(model_name)}</b>. <i>*starred*</i> = unseen in training.</p>',
             '<table class="sdl-tags"><thead><tr><th>#</th><th>tag</th><th>score</th><th>k</th></tr></thead>'
             f'<tbody>{"".join(rows)}</tbody></table>', outside_html(result)]
    if result.not_in_vocabulary:
        missing = ", ".join(html.escape(t) for t in result.not_in_vocabulary)
        parts.append(f'<p class="sdl-missing">Not in the model\'s word space, so not ranked: {missing}</p>')
    parts.append("</div>")
    return "".join(parts)


def result_json(result: ImageTags, model_name: str, image_name: str | None, top_k: int, only_typed: bool) -> dict:
    """The downloadable result: sdl_core's dict plus the request that produced it."""
    data = result.to_dict()
    data["image"] = Path(image_name).name if image_name else None  # never a server path
    return {"model": model_name, "top_k": top_k, "only_typed_tags": only_typed, **data}


def safe_stem(name: str | None, fallback: str = "photo") -> str:
    """A file-name-safe stem from an uploaded file's name."""
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", Path(name).stem if name else "").strip("._")[:60]
    return stem or fallback


def safe_file_name(name: str | None, fallback: str = "photo") -> str:
    """A file-name-safe name that keeps the uploaded file's extension: ``Mon été.JPG`` -> ``Mon_t.JPG``."""
    suffix = re.sub(r"[^A-Za-z0-9]+", "", Path(name).suffix if name else "")[:10]
    return safe_stem(name, fallback) + (f".{suffix}" if suffix else "")


def write_xmp_sidecar(photo: str | Path, name: str | None, tags: Sequence[TagResult], folder: Path
                      ) -> tuple[Path, tuple[str, ...]]:
    """The tags as an XMP sidecar for the uploaded photo (``photo.jpg.xmp``, the name digiKam and
    darktable look for beside ``photo.jpg``), merged with the photo's own keywords; and its notes."""
    from sdl_core.xmp import write_xmp  # exiv2 loads with the first download, not with the page
    written = write_xmp(photo, tags, target=folder / f"{safe_file_name(name)}.xmp")
    return written.target, written.notes


def _made_ns(folder: Path) -> int:
    """When a download folder was made (its name starts with the time in ns; 0 if not ours)."""
    stamp = folder.name.split("-", 1)[0]
    return int(stamp) if stamp.isdigit() else 0


#: JSON downloads kept on the server (the newest; each is a few KB).
KEEP_JSON = 200


def write_json(data: dict, root: Path, name: str, keep: int = KEEP_JSON, max_age_s: float | None = None) -> Path:
    """Write ``data`` as ``root/<unique>/name`` (so downloads keep a readable name and
    requests never overwrite each other), keeping only the newest ``keep`` folders, and
    none older than ``max_age_s``.

    Whole or not at all: a full or read-only disk raises ``StorageError`` and leaves no
    empty folder or partial file."""
    try:
        root.mkdir(parents=True, exist_ok=True)
        folders = sorted((p for p in root.iterdir() if p.is_dir()), key=lambda p: p.name)
    except OSError as exc:
        raise StorageError(f"cannot write the JSON download: {os_error_reason(exc)}") from None
    now_ns = time.time_ns()
    for i, old in enumerate(folders):
        if i < len(folders) - keep + 1 or (max_age_s is not None and now_ns - _made_ns(old) > max_age_s * 1e9):
            shutil.rmtree(old, ignore_errors=True)
    folder = root / f"{time.time_ns():020d}-{uuid.uuid4().hex[:8]}"  # names sort by age
    try:
        return write_bytes(folder / name, json.dumps(data, ensure_ascii=False, indent=2).encode(),
                                      "JSON download")
    except StorageError:
        shutil.rmtree(folder, ignore_errors=True)
        raise
