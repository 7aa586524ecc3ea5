"""The clients of ``benchmarks/soak.py``: what each simulated visitor does, and how an
answer is judged.

Every action is one request with a known right answer: a good request must come back
with a result that fits it; a bad one must come back with its own message. Clients
that disconnect (half-way through an upload, or while their request waits or runs) use
raw sockets: they hang up, and only the server's health afterwards is judged.
"""
from __future__ import annotations

import html
import json
import random
import re
import socket
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Callable
from urllib.parse import urlsplit

import numpy as np
from PIL import Image

#: Relative weights of the actions a client picks from.
ACTIONS = {"tag": 30, "tag_typed": 15, "tag_other_model": 10, "bad_upload": 12, "bad_input": 8,
           "re_render": 10, "about": 5, "search": 6, "disconnect_upload": 2, "disconnect_request": 2,
           "new_visitor": 3}
HTML = "<b onmouseover=alert(1)>x</b>"


@dataclass
class Outcome:
    action: str
    good: bool  # a request that must succeed (False: must be refused with a message; None-like for hang-ups)
    ok: bool
    seconds: float
    end: float  # time.monotonic() when answered
    detail: str = ""


# --- inputs ---------------------------------------------------------------------------------

def _photo(width: int, height: int, seed: int) -> Image.Image:
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 255, size=(height // 8 + 1, width // 8 + 1, 3), dtype=np.uint8)
    return Image.fromarray(base).resize((width, height), Image.Resampling.BILINEAR)


def write_inputs(folder: Path) -> tuple[list[Path], dict[Path, str]]:
    """(good images, {bad file: regex of its message}) written into ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    good = []
    for i, (fmt, size, mode) in enumerate([("JPEG", (640, 480), "RGB"), ("PNG", (300, 200), "RGBA"),
                                           ("WEBP", (500, 500), "RGB"), ("GIF", (120, 90), "P"),
                                           ("JPEG", (2600, 1800), "RGB"), ("PNG", (1, 1), "L")]):
        path = folder / f"good{i}.{fmt.lower()}"
        _photo(*size, seed=i).convert(mode).save(path, fmt)
        good.append(path)
    jpeg = good[0].read_bytes()
    bad = {
        folder / "empty.jpg": (b"", r"empty"),
        folder / "noise.png": (bytes(np.random.default_rng(9).integers(0, 256, 5000, dtype=np.uint8)),
                               r"not an image|unsupported"),
        folder / "cut.jpg": (jpeg[: len(jpeg) // 3], r"corrupt or truncated|[Tt]runcated"),
        folder / "drawing.svg": (b"<svg xmlns='http://www.w3.org/2000/svg'></svg>", r"unsupported format SVG"),
    }
    for path, (data, _) in bad.items():
        path.write_bytes(data)
    return good, {path: pattern for path, (_, pattern) in bad.items()}


# --- judging answers ------------------------------------------------------------------------

def first_tag(table: str) -> str | None:
    """The first tag of the result table, as the page shows it (the tag menu's value)."""
    match = re.search(r'<td class="tag">(.*?)(?:<span|</td>)', table)
    return html.unescape(match.group(1)) if match else None


def shown_rows(table: str) -> int:
    """Rows of the top-k table (the typed tags outside the top k follow in a table of their own)."""
    return table.split('<p class="sdl-outside-title"')[0].count('<td class="tag">')


def check_table(result, top_k: int) -> str:
    """'' when a /tag result fits its request, else what is wrong."""
    table, json_file, maps, *_rest, sidecar = result
    rows = shown_rows(table)
    if not 1 <= rows <= top_k:
        return f"{rows} rows for top-k {top_k}"
    if HTML in table:
        return "typed HTML reached the page unescaped"
    if not maps:
        return "no heat maps"
    if json_file and not sidecar:
        return "no XMP sidecar beside the JSON download"
    return ""


# --- one client -------------------------------------------------------------------------------

class Visitor:
    """One simulated visitor: its own gradio_client session, a seeded random walk over ACTIONS."""

    def __init__(self, index: int, url: str, models: list[str], folder: str, good: list[Path],
                 bad: dict[Path, str], seed: int) -> None:
        from gradio_client import Client
        self.index, self.url, self.models, self.folder = index, url, models, folder
        self.good, self.bad = good, bad
        self.rng = random.Random(seed * 1000 + index)
        self.client = Client(url, verbose=False, download_files=False)
        self.last_table: str | None = None

    def run_until(self, deadline: float, record: Callable[[Outcome], None]) -> None:
        names, weights = zip(*ACTIONS.items())
        while time.monotonic() < deadline:
            action = self.rng.choices(names, weights)[0]
            start = time.perf_counter()
            good, ok, detail = getattr(self, action)(deadline)
            record(Outcome(action, good, ok, time.perf_counter() - start, time.monotonic(), detail[:300]))

    def _tag(self, image: Path, tags: str, top_k: int, model: str, deadline: float):
        from gradio_client import handle_file
        job = self.client.submit(handle_file(str(image)), tags, False, top_k, model, api_name="/tag")
        return job.result(timeout=max(5.0, deadline - time.monotonic() + 120))

    def _good(self, deadline: float, tags: str = "", model: str | None = None) -> tuple[bool, bool, str]:
        top_k = self.rng.randint(1, 20)
        try:
            result = self._tag(self.rng.choice(self.good), tags, top_k, model or self.models[0], deadline)
        except Exception as exc:  # noqa: BLE001 - judged here
            return True, False, f"{type(exc).__name__}: {exc}"
        self.last_table = result[0]
        return True, (problem := check_table(result, top_k)) == "", problem

    def tag(self, deadline: float):
        return self._good(deadline)

    def tag_typed(self, deadline: float):
        words = ["espresso", "red car", "sunset over the sea", "🐱", "ca\u202et", HTML, "chat noir", "x" * 100]
        return self._good(deadline, ", ".join(self.rng.sample(words, 3)))

    def tag_other_model(self, deadline: float):
        return self._good(deadline, model=self.rng.choice(self.models[1:] or self.models))

    def _refused(self, deadline: float, pattern: str, image: Path | None = None, tags: str = "",
                 top_k: int = 5, model: str | None = None) -> tuple[bool, bool, str]:
        try:
            self._tag(image or self.good[0], tags, top_k, model or self.models[0], deadline)
        except Exception as exc:  # noqa: BLE001 - the message is judged
            message = str(exc)
            ok = re.search(pattern, message) is not None and "Traceback" not in message
            return False, ok, "" if ok else f"unexpected message: {message}"
        return False, False, "a bad request was answered as if it were good"

    def bad_upload(self, deadline: float):
        path = self.rng.choice(sorted(self.bad))
        return self._refused(deadline, self.bad[path], image=path)

    def bad_input(self, deadline: float):
        case = self.rng.randrange(4)
        if case == 0:
            return self._refused(deadline, "characters long; the limit is", tags="y" * 300)
        if case == 1:
            return self._refused(deadline, "too many tags", tags=",".join(f"t{i}" for i in range(700)))
        if case == 2:
            return self._refused(deadline, "top-k must be", top_k=0)
        return self._refused(deadline, "is not one this app offers", model="/etc/passwd")

    def re_render(self, deadline: float):
        """Choose another tag of this session's last result: its K maps, from the kept state."""
        if self.last_table is None:
            return self.tag(deadline)
        choice = first_tag(self.last_table)
        try:
            gallery = self.client.predict(choice, api_name="/tag_maps")
        except Exception as exc:  # noqa: BLE001
            return True, False, f"{type(exc).__name__}: {exc}"
        return True, bool(gallery), "" if gallery else f"no maps for {choice!r}"

    def about(self, deadline: float):
        model = self.rng.choice(self.models)
        try:
            text = self.client.predict(model, api_name="/about")
        except Exception as exc:  # noqa: BLE001
            return True, False, f"{type(exc).__name__}: {exc}"
        return True, "principal vectors" in text, "" if "principal vectors" in text else text[:200]

    def search(self, deadline: float):
        tags = self.rng.choice(["dog, beach", "sunset", "cat", "red car, street", "🐱, ☕"])
        try:
            matches, _maps, notes = self.client.predict(self.folder, None, tags, self.rng.choice(["any", "all"]),
                                                        self.rng.randint(1, 8), api_name="/search")
        except Exception as exc:  # noqa: BLE001
            return True, False, f"{type(exc).__name__}: {exc}"
        ok = bool(matches) and notes.startswith("Searched")
        return True, ok, "" if ok else f"{len(matches)} matches; notes {notes[:100]!r}"

    def new_visitor(self, deadline: float):
        """This visitor leaves and a new one arrives: a fresh session (the server keeps each
        session's state for a while; memory must stay bounded as sessions come and go)."""
        from gradio_client import Client
        try:
            self.client = Client(self.url, verbose=False, download_files=False)
        except Exception as exc:  # noqa: BLE001
            return True, False, f"{type(exc).__name__}: {exc}"
        self.last_table = None
        return True, True, ""

    def disconnect_upload(self, deadline: float):
        """Hang up half-way through sending a 2 MB upload."""
        boundary = uuid.uuid4().hex
        head = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"files\"; filename=\"half.jpg\"\r\n"
                "Content-Type: image/jpeg\r\n\r\n").encode()
        total = len(head) + 2_000_000 + len(boundary) + 8
        with _connect(self.url) as sock:
            sock.sendall(_request_head("POST", self.url, "gradio_api/upload", total,
                                       f"multipart/form-data; boundary={boundary}"))
            sock.sendall(head + b"\xff" * 700_000)
        return None, True, ""

    def disconnect_request(self, deadline: float):
        """Send a /tag request, read its first event, hang up while it waits or runs."""
        try:
            image = {"path": _upload(self.url, self.rng.choice(self.good)), "meta": {"_type": "gradio.FileData"}}
            payload = {"data": [image, "", False, 5, self.models[0]]}
            event_id = _post_json(self.url, "gradio_api/call/tag", payload)["event_id"]
            with _connect(self.url) as sock:
                sock.sendall(_request_head("GET", self.url, f"gradio_api/call/tag/{event_id}", 0, None))
                sock.recv(64)
        except OSError as exc:
            return None, True, f"hang-up itself failed: {exc}"
        return None, True, ""


# --- raw HTTP for the clients that hang up -------------------------------------------------

def _connect(url: str) -> socket.socket:
    parts = urlsplit(url)
    return socket.create_connection((parts.hostname, parts.port), timeout=30)


def _request_head(method: str, url: str, path: str, length: int, content_type: str | None) -> bytes:
    parts = urlsplit(url)
    lines = [f"{method} /{path} HTTP/1.1", f"Host: {parts.hostname}:{parts.port}", "Connection: close"]
    if content_type:
        lines += [f"Content-Type: {content_type}", f"Content-Length: {length}"]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def _post_json(url: str, path: str, payload: dict) -> dict:
    import urllib.request
    request = urllib.request.Request(url + path, json.dumps(payload).encode(), {"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=60) as resp:
        return json.loads(resp.read())


def _upload(url: str, image: Path) -> str:
    import urllib.request
    boundary = uuid.uuid4().hex
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"files\"; filename=\"{image.name}\"\r\n"
            "Content-Type: application/octet-stream\r\n\r\n").encode() + image.read_bytes() \
        + f"\r\n--{boundary}--\r\n".encode()
    request = urllib.request.Request(url + "gradio_api/upload", body,
                                     {"Content-Type": f"multipart/form-data; boundary={boundary}"})
    with urllib.request.urlopen(request, timeout=60) as resp:
        return json.loads(resp.read())[0]

