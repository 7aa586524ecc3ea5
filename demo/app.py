"""The Gradio app: upload a photo, type tags, see seen and *unseen* tags and where
each principal vector looks.

``build_app(...)`` returns the Blocks (tests launch it in-process); ``launch(app)``
starts it with the offline theme; ``python -m demo`` (or the Space's ``app.py`` at the
repository's root) is the command line. Every number shown comes from ``sdl_core`` (one
``Tagger.analyze`` call per request); this module only wires inputs to it and results to
components.

Start-up is fast because the page needs no model: it is built from names and
examples, served, and only then is the startup model loaded, in a background thread
(torch, timm and the weights take seconds). A request sent before the model is ready
waits for it, showing Gradio's usual progress.
"""
from __future__ import annotations

import os

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # before gradio is imported

import atexit  # noqa: E402
import logging  # noqa: E402
import shutil  # noqa: E402
import tempfile  # noqa: E402
from concurrent.futures import wait  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any, Sequence  # noqa: E402

import gradio as gr  # noqa: E402

from sdl_core.errors import SDLError, StorageError  # noqa: E402
from sdl_core.images import MAX_IMAGE_BYTES  # noqa: E402
from sdl_core.registry import DEFAULT_MODEL  # noqa: E402
from sdl_core.tags import MAX_TAGS, parse_tags  # noqa: E402

from .about import about_markdown, md_escape, measured_quality  # noqa: E402
from .cache import CACHE_MAX_AGE_S, start_sweeper, sweep_every  # noqa: E402
from .errors import user_errors  # noqa: E402
from .models import TaggerCache, model_choices  # noqa: E402
from .render import (Shown, model_view, overlays_each, principal_captions, result_json, safe_stem,  # noqa: E402
                     tags_table_html, write_json, write_xmp_sidecar)
from .search_tab import build_search_tab  # noqa: E402

log = logging.getLogger(__name__)

#: The example photos, shipped inside the package (so an installed demo has them too).
EXAMPLES_DIR = Path(__file__).resolve().parent / "examples"
#: Typed tags suggested with each shipped example photo (by file stem).
EXAMPLE_TAGS = {
    "coffee": "espresso, latte art, saucer",
    "chelsea": "tabby cat, whiskers",
    "astronaut": "space suit, american flag",
    "rocket": "rocket launch, smoke",
}
EXAMPLE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp")

DEFAULT_TOP_K = 10
MAX_TOP_K = 50
#: Most heat maps side by side (one per principal vector). Fewer maps than this
#: (K < 4) fill the row anyway (Gallery's fit_columns), so no model is needed to lay out the page.
MAX_MAP_COLUMNS = 4
#: The about panel until the startup model has loaded.
ABOUT_LOADING = "*Loading the model…*"
#: Requests waiting beyond this are refused at once ("queue full") instead of piling up. It must
#: hold one request of each of 50+ concurrent visitors plus requests whose visitors hung up
#: (benchmarks/soak.py: 32 refused a third of 50 visitors' requests); full, it is ~40 s of work.
QUEUE_SIZE = 128
#: Model forward passes run one at a time: torch already uses every core for one.
MODEL_CONCURRENCY = 1
#: Re-rendering a tag's maps needs no model; a few can run side by side.
RENDER_CONCURRENCY = 4
#: Sessions whose state the server keeps; the oldest is dropped beyond this. Gradio keeps a copy
#: of the page's config per session (~80 KB) plus our kept result (~250 KB), for 10,000 sessions
#: by default: a client inventing session ids could make that ~3 GB. (A session's kept result
#: is also dropped once the cache age has passed: its files are gone by then too.)
SESSIONS_KEPT = 500

CSS = """
#sdl-title h1 { margin-bottom: 0; }
#sdl-maps .caption-label, #sdl-tag-maps .caption-label { white-space: normal; }
#sdl-notice { border: 1px solid #d97706; background: #fffbeb; color: #78350f; padding: 0.4em 1em; border-radius: 6px; }
"""


def offline_theme() -> gr.themes.Base:
    """Gradio's default look with system fonts only: the page needs no font download."""
    return gr.themes.Default(font=[gr.themes.Font("ui-sans-serif"), "system-ui", "sans-serif"],
                             font_mono=[gr.themes.Font("ui-monospace"), "Menlo", "monospace"])


def upload_path(image: Any) -> tuple[str, str]:
    """(path on the server, the uploader's file name) of the image input.

    The main event runs with ``preprocess=False``: Gradio has already moved the upload
    into its cache and checked the path, but has not opened it, so an unreadable file
    reaches ``sdl_core.load_image`` and the user reads its message.
    """
    if isinstance(image, (str, Path)):
        return str(image), Path(image).name
    path = image.get("path") if isinstance(image, dict) else getattr(image, "path", None)
    if not path:
        raise gr.Error("The uploaded image did not arrive; please upload it again.", print_exception=False)
    name = (image.get("orig_name") if isinstance(image, dict) else getattr(image, "orig_name", None))
    return str(path), name or Path(path).name


def check_top_k(value: Any) -> int:
    try:
        top_k = int(value)
    except (TypeError, ValueError):
        raise gr.Error(f"top-k must be a whole number from 1 to {MAX_TOP_K}", print_exception=False) from None
    if not 1 <= top_k <= MAX_TOP_K:
        raise gr.Error(f"top-k must be from 1 to {MAX_TOP_K}, got {top_k}", print_exception=False)
    return top_k


class Handlers:
    """The event functions; state lives in the TaggerCache (models) and gr.State (results)."""

    def __init__(self, cache: TaggerCache, json_root: Path, json_max_age_s: float | None = None) -> None:
        self.cache = cache
        self.json_root = json_root
        self.json_max_age_s = json_max_age_s

    def tag(self, image: dict | str | None, tags_text: str | None, only_typed: bool, top_k: Any, model: str | None
            ) -> tuple:
        """One request: one forward pass, then the table, the JSON and the maps."""
        if not image:
            raise gr.Error("Upload a photo first (or click one of the examples).", print_exception=False)
        path, name = upload_path(image)
        top_k = check_top_k(top_k)
        typed = parse_tags(str(tags_text or ""))
        tagger = self.cache.get(model)
        analysis = tagger.analyze(path, extra_tags=typed, top_k=top_k, only_extra=bool(only_typed))
        photo = model_view(analysis.image, tagger.config.preprocess)
        principal = list(zip(overlays_each(photo, analysis.principal_maps),
                             principal_captions(analysis.principal_tags)))
        shown = Shown(photo, tuple(analysis.tags.tags), analysis.tag_maps)
        data = result_json(analysis.tags, tagger.name, name, top_k, bool(only_typed))
        json_path = self.json_download(data, name)
        choices = [t.display for t in shown.tags]
        first = choices[0] if choices else None
        return (tags_table_html(analysis.tags, tagger.name), json_path, principal,
                gr.Dropdown(choices=choices, value=first, interactive=True),
                shown.tag_gallery(first) if first else [], shown, self.sidecar(path, name, shown, json_path))

    def sidecar(self, path: str, name: str, shown: Shown, json_path: str | None) -> str | None:
        """The XMP sidecar download, beside the JSON one (none where that could not be saved); a photo
        whose keywords cannot be read is a warning, not a failed request."""
        if json_path is None:
            return None
        try:
            sidecar, notes = write_xmp_sidecar(path, name, shown.tags, Path(json_path).parent)
        except SDLError as exc:
            gr.Warning(f"No XMP sidecar: {exc}")
            return None
        for note in notes:
            gr.Warning(note)
        return str(sidecar)

    def json_download(self, data: dict, name: str) -> str | None:
        """The JSON file to offer; when it cannot be written (full or read-only disk) the tags
        are still shown, without a download, and the page says why."""
        try:
            return str(write_json(data, self.json_root, f"tags-{safe_stem(name)}.json",
                                  max_age_s=self.json_max_age_s))
        except StorageError as exc:
            log.warning("%s", exc)
            gr.Warning("The tags are shown, but the JSON download could not be saved on the server "
                       "(its disk is full or read-only).")
            return None

    def show_tag(self, choice: str | None, shown: Shown | None) -> list:
        """The K maps of the chosen tag, from the kept result (no model run)."""
        if not choice or shown is None:
            return []
        return shown.tag_gallery(choice)

    def startup_state(self) -> tuple:
        """Once the startup load is over: the notice (shown when the page runs another model
        than it was started with, and why) and the model menu (labels refreshed: a download
        since start-up is now cached; the value: the model that runs)."""
        if self.cache.startup is not None:
            wait([self.cache.startup])  # a failure's own message reaches whoever uses that model
        notice = self.cache.notice
        shown = gr.Markdown(f"⚠️ {md_escape(notice)}", visible=True) if notice else gr.Markdown(visible=False)
        return shown, gr.Dropdown(choices=self.cache.labels(), value=self.cache.default)

    def about(self, model: str | None) -> str:
        tagger = self.cache.get(model)
        value = model or self.cache.default
        return about_markdown(tagger, self.cache.label(value), measured_quality(value))


def example_rows(folder: Path) -> list[list[str]]:
    """[photo path, suggested tags] for every example photo shipped in ``folder``."""
    if not folder.is_dir():
        return []
    photos = sorted(p for p in folder.iterdir() if p.suffix.lower() in EXAMPLE_SUFFIXES)
    return [[str(p), EXAMPLE_TAGS.get(p.stem, "")] for p in photos]


def build_app(model: str = DEFAULT_MODEL, models_dir: str | Path | None = "models",
              search_dirs: Sequence[str | Path] = (), *, device: str = "cpu", word_space: str | None = None,
              examples_dir: Path = EXAMPLES_DIR,
              json_root: Path | None = None, cache_max_age_s: int = CACHE_MAX_AGE_S) -> gr.Blocks:
    """Build the app without loading a model (``launch`` starts that in the background).

    A ``model`` that is neither registered nor an existing file, or a checkpoint whose
    header cannot be read, fails now (an SDLError with a readable message); any other
    load error reaches the page as that model's message. Uploads and results in Gradio's
    cache are deleted once ``cache_max_age_s`` old (demo/cache.py)."""
    cache = TaggerCache(model_choices(model, models_dir), device=device, word_space=word_space)
    if json_root is None:
        json_root = Path(tempfile.mkdtemp(prefix="sdl-demo-json-"))
        atexit.register(shutil.rmtree, json_root, ignore_errors=True)
    handlers = Handlers(cache, json_root, json_max_age_s=cache_max_age_s)
    examples = example_rows(examples_dir)

    with gr.Blocks(title="SDL zero-shot image tagger", analytics_enabled=False,
                   delete_cache=(sweep_every(cache_max_age_s), cache_max_age_s)) as app:
        gr.Markdown("# Zero-shot image tagger\nUpload a photo and type any tags: the model ranks its own "
                    "vocabulary and your words together. *Starred* tags were never seen in training.",
                    elem_id="sdl-title")
        notice = gr.Markdown(visible=False, elem_id="sdl-notice")  # why another model runs, if it does
        with gr.Tab("Tag a photo"):
            with gr.Row():
                with gr.Column(scale=1):
                    image = gr.Image(type="filepath", image_mode=None, label="Photo (drop, paste or click to upload)",
                                     height=320, sources=["upload", "clipboard"], elem_id="sdl-photo")
                    tags = gr.Textbox(label="Your tags (comma-separated, several words allowed)",
                                      placeholder="e.g. espresso, latte art, wooden table",
                                      info=f"Up to {MAX_TAGS} tags; tags the model already knows keep "
                                           "their seen/unseen flag.",
                                      max_lines=3, elem_id="sdl-tags-input")
                    with gr.Row():
                        only_typed = gr.Checkbox(label="Rank only my tags", value=False, elem_id="sdl-only")
                        top_k = gr.Slider(1, MAX_TOP_K, value=DEFAULT_TOP_K, step=1, label="Top-k",
                                          elem_id="sdl-topk")
                    model_box = gr.Dropdown(choices=[(c.label, c.value) for c in cache.choices],
                                            value=cache.default, label="Model", elem_id="sdl-model")
                    run = gr.Button("Tag this photo", variant="primary", elem_id="sdl-run")
                    example_block = (gr.Examples(examples=examples, inputs=[image, tags],
                                                 label="Example photos (click one)", cache_examples=False)
                                     if examples else None)
                with gr.Column(scale=1):
                    table = gr.HTML(value="<p>Tags appear here.</p>", label="Ranked tags", elem_id="sdl-table")
                    download = gr.File(label="Result as JSON", interactive=False, elem_id="sdl-json")
                    sidecar = gr.File(label="Tags as an XMP sidecar (put it beside the photo: digiKam, darktable)",
                                      interactive=False, elem_id="sdl-xmp")
                    with gr.Accordion("About this model", open=False):
                        about = gr.Markdown(ABOUT_LOADING, label="About this model", elem_id="sdl-about")
            maps = gr.Gallery(label="Where each principal vector looks (caption: the tags it wins)",
                              columns=MAX_MAP_COLUMNS, height="auto", format="jpeg",
                              object_fit="contain", elem_id="sdl-maps")
            tag_choice = gr.Dropdown(choices=[], label="Show one tag's map for each principal vector",
                                     interactive=True, elem_id="sdl-tag-choice")
            tag_maps = gr.Gallery(label="Maps of the chosen tag (one scale for all K)",
                                  columns=MAX_MAP_COLUMNS, height="auto", format="jpeg",
                                  object_fit="contain", elem_id="sdl-tag-maps")
            shown = gr.State(None, time_to_live=cache_max_age_s)

            inputs = [image, tags, only_typed, top_k, model_box]
            outputs = [table, download, maps, tag_choice, tag_maps, shown, sidecar]
            # preprocess=False: uploads are opened by sdl_core (its limits, its messages); every
            # input is checked in Handlers.tag (top-k range, model offered, tag limits).
            tag_event = dict(fn=user_errors(handlers.tag), inputs=inputs, outputs=outputs, preprocess=False,
                             concurrency_id="model", concurrency_limit=MODEL_CONCURRENCY)
            run.click(**tag_event, api_name="tag")
            tags.submit(**tag_event, api_visibility="private")
            if example_block is not None:
                example_block.load_input_event.then(**tag_event, api_visibility="private")
            tag_choice.input(user_errors(handlers.show_tag), [tag_choice, shown], tag_maps, api_name="tag_maps",
                             concurrency_limit=RENDER_CONCURRENCY)
            model_box.change(user_errors(handlers.about), model_box, about, api_name="about",
                             concurrency_id="model", concurrency_limit=MODEL_CONCURRENCY)
            # when the page opens: wait for the startup load, say if another model runs, then fill
            # the panel of the chosen model
            app.load(handlers.startup_state, None, [notice, model_box], api_name="startup", show_progress="hidden",
                     concurrency_limit=RENDER_CONCURRENCY
                     ).then(user_errors(handlers.about), model_box, about, api_visibility="private",
                            concurrency_limit=RENDER_CONCURRENCY)
        with gr.Tab("Search"):
            build_search_tab(cache.get, [Path(d) for d in search_dirs])
    app.queue(max_size=QUEUE_SIZE, default_concurrency_limit=MODEL_CONCURRENCY)
    app.tagger_cache = cache  # in-process users (tests, benchmarks) reach the loaded models here
    app.cache_max_age_s = cache_max_age_s
    return app


def launch(app: gr.Blocks, host: str = "127.0.0.1", port: int | None = 7860, **kwargs: Any) -> tuple:
    """Start the server with the offline theme and the upload size limit of sdl_core,
    then load the startup model in the background (``app.tagger_cache.startup``).

    Blocks like ``Blocks.launch`` unless ``prevent_thread_lock=True``."""
    options = dict(server_name=host, server_port=port, theme=offline_theme(), css=CSS,
                   max_file_size=MAX_IMAGE_BYTES, footer_links=["api"], show_error=False,
                   state_session_capacity=SESSIONS_KEPT)
    options.update(kwargs)
    block = not options.pop("prevent_thread_lock", False)
    served = app.launch(prevent_thread_lock=True, **options)
    upload_dir = getattr(getattr(app, "server_app", None), "uploaded_file_dir", None)
    if upload_dir:  # uploads abandoned half-way are not Gradio's to delete
        start_sweeper(Path(upload_dir), getattr(app, "cache_max_age_s", CACHE_MAX_AGE_S))
    cache = getattr(app, "tagger_cache", None)
    if cache is not None:
        cache.preload()
    if block:
        app.block_thread()
    return served

