"""The demo as a public service: one test per point of README's "Limits and safety".

A real server (toy model, a models folder, one search folder) is driven through raw
HTTP, as a hostile client would, and through gradio_client. Points: what a client can
make the server read or write (paths, models, search folders, served files), upload
limits, HTML escaping, error messages without paths or tracebacks, queue limits.
"""
from __future__ import annotations

import json
import re
import threading
import urllib.error
import urllib.request
import uuid
from pathlib import Path
from typing import Iterator

import pytest

from demo.app import MODEL_CONCURRENCY, QUEUE_SIZE, SESSIONS_KEPT, build_app, launch
from demo.errors import GENERIC_ERROR, without_folders
from sdl_core.images import MAX_IMAGE_BYTES
from tests.conftest import make_photo
from tests.demo.conftest import free_port

XSS = '<img src=x onerror="alert(1)">'


class Site:
    def __init__(self, app, url: str, model: str, photos: Path, json_root: Path) -> None:
        self.app, self.url, self.model, self.photos, self.json_root = app, url, model, photos, json_root

    def call(self, api: str, data: list, timeout: float = 120) -> tuple[str, object]:
        """POST /gradio_api/call/<api> and read its event stream: ('complete'|'error', payload)."""
        request = urllib.request.Request(f"{self.url}gradio_api/call/{api}", json.dumps({"data": data}).encode(),
                                         {"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=30) as resp:
            event_id = json.loads(resp.read())["event_id"]
        with urllib.request.urlopen(f"{self.url}gradio_api/call/{api}/{event_id}", timeout=timeout) as resp:
            text = resp.read().decode()
        event = data_line = None
        for line in text.splitlines():  # the last event wins (heartbeats and progress come first)
            if line.startswith("event: "):
                event = line[7:].strip()
            elif line.startswith("data: "):
                data_line = line[6:]
        return event or "", json.loads(data_line) if data_line else None

    def upload(self, name: str, data: bytes) -> dict:
        """A file uploaded the way the browser does it: its server-side FileData."""
        boundary = uuid.uuid4().hex
        body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"files\"; filename=\"{name}\"\r\n"
                "Content-Type: application/octet-stream\r\n\r\n").encode() + data + f"\r\n--{boundary}--\r\n".encode()
        request = urllib.request.Request(f"{self.url}gradio_api/upload", body,
                                         {"Content-Type": f"multipart/form-data; boundary={boundary}"})
        with urllib.request.urlopen(request, timeout=60) as resp:
            (path,) = json.loads(resp.read())
        return {"path": path, "orig_name": name, "meta": {"_type": "gradio.FileData"}}

    def tag(self, image: dict, tags: str = "", only: bool = False, top_k: int = 5, model: str | None = None,
            timeout: float = 120):
        return self.call("tag", [image, tags, only, top_k, model or self.model], timeout)


@pytest.fixture(scope="module")
def site(toy_checkpoint: Path, models_dir: Path, tmp_path_factory) -> Iterator[Site]:
    tmp = tmp_path_factory.mktemp("public")
    photos = tmp / "photos"
    photos.mkdir()
    for i in range(3):
        make_photo(64, 48, seed=i).save(photos / f"p{i}.jpg")
    app = build_app(str(toy_checkpoint), models_dir, [photos], json_root=tmp / "json")
    _, url, _ = launch(app, port=free_port(), prevent_thread_lock=True, quiet=True)
    app.tagger_cache.startup.result(timeout=300)
    yield Site(app, url, str(toy_checkpoint.resolve()), photos, tmp / "json")
    app.close()


def jpeg(seed: int = 0) -> bytes:
    import io
    out = io.BytesIO()
    make_photo(64, 48, seed=seed).save(out, "JPEG")
    return out.getvalue()


# --- what a client can make the server read or write --------------------------------------

def test_client_cannot_name_a_server_file_as_its_upload(site: Site, toy_checkpoint: Path) -> None:
    """Only files that were uploaded can be inputs: a path to any other server file (system
    files, the search folder's photos, a checkpoint) is refused before the handler runs."""
    for path in ["/etc/hostname", str(site.photos / "p0.jpg"), str(toy_checkpoint), "../../etc/passwd"]:
        event, payload = site.tag({"path": path, "meta": {"_type": "gradio.FileData"}})
        assert event == "error", (path, payload)
        event, payload = site.call("search", [None, [{"path": path, "meta": {"_type": "gradio.FileData"}}],
                                              "cat", "any", 3])
        assert event == "error", (path, payload)
    assert site.tag(site.upload("ok.jpg", jpeg()))[0] == "complete"


def test_client_can_only_choose_an_offered_model(site: Site, tmp_path: Path) -> None:
    """A model value is checked against the menu: no path, even of a valid checkpoint, is loaded."""
    from sdl_core.checkpoint import save_checkpoint
    from tests.conftest import make_sdl_model, make_vocab
    other = save_checkpoint(make_sdl_model(), make_vocab(), tmp_path / "elsewhere.safetensors")
    upload = site.upload("a.jpg", jpeg())
    for value in [str(other), "/etc/passwd", "../models/x.safetensors", "resnet50", "a" * 10_000]:
        event, payload = site.tag(upload, model=value)
        assert event == "error" and "is not one this app offers" in payload["error"], (value, payload)
        event, payload = site.call("about", [value])
        assert event == "error", (value, payload)
    assert str(other) not in {c.value for c in site.app.tagger_cache.choices}


def test_client_can_only_search_an_offered_folder(site: Site) -> None:
    for folder in ["/etc", str(site.photos.parent), str(site.photos / ".."), "photos"]:
        event, payload = site.call("search", [folder, None, "cat", "any", 3])
        assert event == "error", (folder, payload)
    event, payload = site.call("search", [str(site.photos), None, "cat", "any", 3])
    assert event == "complete" and len(payload[0]) == 3


def test_no_server_file_is_served_except_results(site: Site, toy_checkpoint: Path) -> None:
    """The file route serves uploads and results only: not the search photos, the models,
    the JSON folder, the sources or system files."""
    event, payload = site.tag(site.upload("b.jpg", jpeg(1)))
    assert event == "complete"
    json_url = payload[1]["url"]
    with urllib.request.urlopen(json_url, timeout=30) as resp:  # the result itself is downloadable
        assert json.loads(resp.read())["image"] == "b.jpg"
    own_json = next(site.json_root.rglob("*.json"))
    for path in ["/etc/passwd", str(site.photos / "p0.jpg"), str(toy_checkpoint), str(own_json),
                 str(Path(__file__).resolve()), "../../../../etc/passwd"]:
        with pytest.raises(urllib.error.HTTPError) as info:
            urllib.request.urlopen(f"{site.url}gradio_api/file={path}", timeout=30)
        assert info.value.code in (403, 404), path


def test_uploaded_file_names_cannot_steer_where_results_are_written(site: Site) -> None:
    event, payload = site.tag(site.upload("../../evil<x>.jpg", jpeg(2)))
    assert event == "complete"
    written = [p for p in site.json_root.rglob("*") if p.is_file()]
    assert all(p.resolve().is_relative_to(site.json_root.resolve()) for p in written)
    assert not any("<" in p.name or ".." in p.name for p in written)


# --- upload limits -------------------------------------------------------------------------

def test_uploads_above_the_limit_are_refused(site: Site) -> None:
    with pytest.raises(urllib.error.HTTPError) as info:
        site.upload("huge.jpg", b"\xff" * (MAX_IMAGE_BYTES + 1))
    assert info.value.code == 413
    assert site.upload("edge.jpg", jpeg() + b"\0" * 1000)["path"]


# --- HTML escaping ---------------------------------------------------------------------------

def test_user_text_is_escaped_everywhere(site: Site) -> None:
    upload = site.upload(f"{XSS}.jpg", jpeg(3))
    event, payload = site.tag(upload, f"{XSS}, cat", only=True)
    assert event == "complete"
    table = payload[0]
    assert "<img" not in table and "&lt;img src=x onerror=" in table
    event, payload = site.tag(upload, XSS + "x" * 200)  # refused: too long; the message quotes it
    assert event == "error" and "<img" not in payload["error"] and "&lt;img" in payload["error"]
    event, payload = site.call("search", [str(site.photos), None, f"{XSS}, cat", "any", 3])
    assert event == "complete" and re.search(r"(?<!\\)<", payload[2]) is None  # Markdown: every < escaped


# --- error messages --------------------------------------------------------------------------

def test_error_messages_name_no_server_folder(site: Site) -> None:
    event, payload = site.tag(site.upload("broken.jpg", b"\xff\xd8\xff\xe0 not really a jpeg"))
    assert event == "error" and payload["error"].startswith("broken.jpg: ")
    assert "/tmp" not in payload["error"] and "gradio" not in payload["error"]
    assert without_folders("/tmp/gradio/3fa9/photo.jpg: no such file") == "photo.jpg: no such file"
    assert without_folders("ac/dc, 1/2 and https://x.org/a") == "ac/dc, 1/2 and https://x.org/a"


def test_unexpected_errors_show_a_generic_message(site: Site, monkeypatch) -> None:
    """A bug's message (which may hold paths and internals) stays in the log; the page gets
    GENERIC_ERROR and no traceback."""
    cache = site.app.tagger_cache

    def broken(value=None):
        raise RuntimeError("/srv/secret/internal.py line 3: KeyError('x')")

    monkeypatch.setattr(cache, "get", broken)
    event, payload = site.tag(site.upload("c.jpg", jpeg(4)))
    assert event == "error" and payload["error"] == GENERIC_ERROR
    assert "secret" not in json.dumps(payload) and "Traceback" not in json.dumps(payload)


# --- queue limits ----------------------------------------------------------------------------

def test_queue_limits_refuse_a_flood(site: Site) -> None:
    """One client sending far more requests than the queue holds: the excess is refused at
    once ('queue is full'), every accepted one is answered, and the server keeps serving."""
    queue = site.app._queue
    assert queue.max_size == QUEUE_SIZE and queue.default_concurrency_limit == MODEL_CONCURRENCY
    model_fns = {fn.api_name: fn for fn in site.app.fns.values() if fn.concurrency_id == "model"}
    assert {"tag", "about", "search"} <= set(model_fns)  # one model run at a time, whichever the event
    assert all(fn.concurrency_limit in (MODEL_CONCURRENCY, "default") for fn in model_fns.values())
    assert site.app.state_holder.capacity == SESSIONS_KEPT  # sessions invented by a client cannot pile up
    upload = site.upload("flood.jpg", jpeg(5))
    results: list[tuple[str, object]] = []
    lock = threading.Lock()

    def one() -> None:
        try:
            outcome = site.tag(upload, top_k=3, timeout=300)
        except urllib.error.HTTPError as exc:  # refused when joining
            outcome = ("http", exc.code)
        with lock:
            results.append(outcome)

    threads = [threading.Thread(target=one) for _ in range(QUEUE_SIZE + 32)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=400)
    full = [r for r in results if r[0] != "complete"]
    assert len(results) == len(threads)
    assert full, "the queue never refused anything"
    assert all("queue is full" in json.dumps(r[1]).lower() or r[0] == "http" for r in full), full[:3]
    assert sum(r[0] == "complete" for r in results) >= QUEUE_SIZE // 2
    assert site.tag(upload)[0] == "complete"  # still serving
