"""The demo's Search tab: pick a folder the app was started with (or upload photos),
type tags, see the best-matching photos and, for each, the heat map of the principal
vector that matched.

Indexing and ranking are sdl_core.search; the heat maps are Tagger.analyze's exact
maps, drawn with demo.render. Indexes live in memory per folder and model: the first
search of a folder encodes its photos (progress shown), later searches only encode
new or changed ones. If the folder holds an index built by ``python -m sdl_core index``
with the same model, it is used as the starting point; the tab never writes to the folder.
"""
from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Sequence

import gradio as gr
from PIL import Image

from sdl_core.images import load_image
from sdl_core.tags import parse_tags

from .errors import user_errors
from .render import OVERLAY_SIDE, model_view, normalize, overlay

if TYPE_CHECKING:  # sdl_core.search imports torch: loaded by the first search, not while the page starts
    from sdl_core.search import SearchIndex, SearchResult
    from sdl_core.tagger import Tagger

log = logging.getLogger(__name__)

#: Most photos one search may show.
MAX_TOP_N = 48
DEFAULT_TOP_N = 12
#: Heat maps cost one forward pass each: only the best results get one.
MAX_MAPS = 12
#: Most photos one upload may hold.
MAX_UPLOADS = 100
UPLOADS = "Uploaded photos"


class SearchState:
    """In-memory indexes, one per (folder, model); updated, never rebuilt, on each search."""

    def __init__(self, get_tagger: Callable[[], Tagger], folders: Sequence[Path]) -> None:
        self.get_tagger = get_tagger
        self.folders = {str(Path(f)): Path(f) for f in folders}
        self._indexes: dict[tuple[str, str], SearchIndex] = {}
        self._lock = threading.Lock()

    def _seed(self, folder: Path, tagger: Tagger) -> SearchIndex | None:
        """The CLI's index in the folder, when it was built by this model for this folder."""
        from sdl_core.search import DEFAULT_INDEX_NAME, SearchIndexError, check_compatible, load_index, model_identity
        path = folder / DEFAULT_INDEX_NAME
        if not path.is_file():
            return None
        try:
            index = load_index(path)
            check_compatible(index, model_identity(tagger), folder.resolve())
            return index
        except SearchIndexError as exc:
            log.info("not using %s: %s", path, exc)
            return None

    def folder_index(self, choice: str, tagger: Tagger, progress: Callable[[int, int], None]
                     ) -> tuple[SearchIndex, list[tuple[str, str]]]:
        from sdl_core.search import SearchIndexError, model_identity, update_index
        folder = self.folders.get(choice)
        if folder is None:
            raise SearchIndexError(f"{choice!r} is not one of the folders this app was started with")
        if not folder.is_dir():
            raise SearchIndexError(f"{folder} is no longer a folder")
        key = (str(folder.resolve()), model_identity(tagger).fingerprint)
        with self._lock:  # one update per folder at a time; the rest wait and reuse it
            old = self._indexes.get(key) or self._seed(folder, tagger)
            index, report = update_index(folder, tagger, old, progress=progress)
            self._indexes[key] = index
        return index, report.failed

    @staticmethod
    def upload_index(files: Sequence[str], tagger: Tagger, progress: Callable[[int, int], None]
                     ) -> tuple[SearchIndex, list[tuple[str, str]]]:
        from sdl_core.search import SearchIndexError, entries_for_files, update_index
        if len(files) > MAX_UPLOADS:
            raise SearchIndexError(f"{len(files)} photos uploaded; the limit is {MAX_UPLOADS}")
        root, entries = entries_for_files(files)
        index, report = update_index(root, tagger, files=entries, progress=progress)
        return index, report.failed

    def run(self, folder: str | None, uploads: Sequence[Any] | None, tags_text: str | None, mode: str,
            top_n: Any, progress: gr.Progress = gr.Progress()) -> tuple[list, list, str]:
        """One search: (matches gallery, heat-map gallery, notes in Markdown)."""
        from sdl_core.search import MODES, search
        tags = parse_tags(tags_text or "")
        if not tags:
            raise gr.Error("Type at least one tag, e.g. \"dog, beach\".", print_exception=False)
        if mode not in MODES:
            raise gr.Error(f"mode must be one of {', '.join(MODES)}", print_exception=False)
        top_n = _check_top_n(top_n)
        files = [_upload_path(u) for u in (uploads or [])]
        tagger = self.get_tagger()

        def report(done: int, total: int) -> None:
            progress((done, total), desc="indexing photos", unit="photos")

        if files:
            index, failed = self.upload_index(files, tagger, report)
        elif folder:
            index, failed = self.folder_index(folder, tagger, report)
        else:
            raise gr.Error("Choose a folder or upload some photos first.", print_exception=False)
        result = search(index, tags, tagger.word_space, top_n=top_n, mode=mode)  # the index's own model
        names = [Path(hit.path).name if files else hit.path for hit in result.hits]  # uploads: no temp folders
        matches = [(_thumbnail(hit.full_path), f"{hit.score:.4f} · {name}") for hit, name in zip(result.hits, names)]
        maps = [heat_map(tagger, hit.full_path, hit.tag, name) for hit, name in zip(result.hits[:MAX_MAPS], names)]
        return matches, maps, notes_markdown(result, failed)


def _check_top_n(value: Any) -> int:
    try:
        top_n = int(value)
    except (TypeError, ValueError):
        raise gr.Error(f"number of results must be a whole number from 1 to {MAX_TOP_N}",
                       print_exception=False) from None
    if not 1 <= top_n <= MAX_TOP_N:
        raise gr.Error(f"number of results must be from 1 to {MAX_TOP_N}, got {top_n}", print_exception=False)
    return top_n


def _upload_path(upload: Any) -> str:
    return str(getattr(upload, "name", None) or getattr(upload, "path", None) or upload)


def _thumbnail(path: Path) -> Image.Image:
    img = load_image(path)
    img.thumbnail((OVERLAY_SIDE, OVERLAY_SIDE), Image.Resampling.BILINEAR)
    return img


def heat_map(tagger: Tagger, path: Path, tag: str, name: str) -> tuple[Image.Image, str]:
    """The exact map of the principal vector that wins ``tag`` on this photo, over the photo."""
    analysis = tagger.analyze(path, extra_tags=[tag], top_k=1, only_extra=True)
    best = analysis.tags[0]
    heat = analysis.tag_maps[best.tag][best.principal]
    photo = model_view(analysis.image, tagger.config.preprocess)
    image = overlay(photo, normalize(heat, float(heat.min()), float(heat.max())))
    return image, f"{name} · {best.display} · principal vector k={best.principal}"


def notes_markdown(result: SearchResult, failed: Sequence[tuple[str, str]]) -> str:
    """What was searched, and what could not be used (user text escaped)."""
    lines = [f"Searched {result.searched} photos for {', '.join(_md(t) for t in result.tags)} "
             f"(mode **{result.mode}**: " + ("every tag must fit" if result.mode == "all" else "any tag may fit")
             + f"); showing {len(result.hits)}."]
    if result.approximate:
        lines.append(f"Large collection: the approximate index named {result.scored} candidates, scored exactly.")
    if result.not_in_vocabulary:
        lines.append("Not in vocabulary (no word vector, ignored): "
                     + ", ".join(_md(t) for t in result.not_in_vocabulary))
    if failed:
        lines.append(f"Unreadable, skipped ({len(failed)}): " + ", ".join(_md(p) for p, _ in failed[:20]))
    return "\n\n".join(lines)


def _md(text: str) -> str:
    """Plain text inside a Markdown line: escape what Markdown or HTML would interpret there."""
    out = "".join("\\" + ch if ch in "\\`*_[]<>&#|~" else ch for ch in text)
    return out.replace("\n", " ")


def build_search_tab(get_tagger: Callable[[], Tagger], folders: Sequence[Path]) -> None:
    """Build the Search tab's components inside the current Blocks/Tab context."""
    state = SearchState(get_tagger, folders)
    choices = list(state.folders)
    gr.Markdown("Find photos by typing tags. The first search of a folder indexes it (once); later searches "
                "only index new or changed photos.")
    with gr.Row():
        with gr.Column(scale=1):
            folder = gr.Dropdown(choices=choices, value=choices[0] if choices else None, label="Folder",
                                 info=None if choices else "No folder given: start the app with --search-dir "
                                                           "DIR, or upload photos below.",
                                 interactive=True, elem_id="sdl-search-folder")
            uploads = gr.File(file_count="multiple", file_types=["image"], type="filepath",
                              label=f"...or upload photos (up to {MAX_UPLOADS}; these are searched instead)",
                              elem_id="sdl-search-uploads")
            tags = gr.Textbox(label="Tags (comma-separated)", placeholder="e.g. dog, beach", max_lines=2,
                              elem_id="sdl-search-tags")
            with gr.Row():
                mode = gr.Radio(choices=[("any tag", "any"), ("all tags", "all")], value="any",
                                label="Match", elem_id="sdl-search-mode")
                top_n = gr.Slider(1, MAX_TOP_N, value=DEFAULT_TOP_N, step=1, label="Results",
                                  elem_id="sdl-search-topn")
            run = gr.Button("Search", variant="primary", elem_id="sdl-search-run")
        with gr.Column(scale=2):
            notes = gr.Markdown("", elem_id="sdl-search-notes")
            matches = gr.Gallery(label="Best matches (caption: score · photo)", columns=4, height="auto",
                                 format="jpeg", object_fit="contain", elem_id="sdl-search-matches")
    maps = gr.Gallery(label=f"Where the matching principal vector looks (best {MAX_MAPS})", columns=4,
                      height="auto", format="jpeg", object_fit="contain", elem_id="sdl-search-maps")
    inputs = [folder, uploads, tags, mode, top_n]
    outputs = [matches, maps, notes]
    fn = user_errors(state.run)
    run.click(fn, inputs, outputs, api_name="search", concurrency_id="model")
    tags.submit(fn, inputs, outputs, api_visibility="private", concurrency_id="model")
