"""A loopback stand-in for the authors' download servers, and a random-weight ``.pth`` in their layout.

``MirrorServer`` serves files by name from 127.0.0.1 and can misbehave per file: answer
404/500, serve other bytes, hang after accepting, cut the body short, or send slowly.
It counts requests, so a test can show that a cached model needs no network.
"""
from __future__ import annotations

import http.server
import json
import math
import threading
import time
from dataclasses import dataclass
from pathlib import Path

REFERENCE = Path(__file__).resolve().parents[1].parent / "shared" / "reference" / "zs_sdl"
NUS_WIDE = REFERENCE / "NUS_WIDE"
KEYS_JSON = REFERENCE / "official_sdl_tresnet_m_keys.json"
DATA_FILES = ("classes.pickle", "unseen_classes.pickle", "wordvec_array.pickle")
PTH = "NUS_mtresnet_224.pth"


@dataclass
class Route:
    """How one file is served: ``body`` (a path or bytes), or ``status`` (an error code),
    ``hang`` (accept, never answer), ``cut_at`` (announce the full length, send this many
    bytes, close), ``bytes_per_s`` (throttle)."""

    body: Path | bytes | None = None
    status: int = 200
    hang: bool = False
    cut_at: int | None = None
    bytes_per_s: float | None = None


class MirrorServer:
    def __init__(self) -> None:
        self.routes: dict[str, Route] = {}
        self.requests: list[str] = []
        self.sent: dict[str, int] = {}
        self._stop = threading.Event()
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:
                pass

            def do_GET(self) -> None:  # noqa: N802 - http.server's naming
                name = self.path.lstrip("/").split("?")[0]
                server.requests.append(name)
                route = server.routes.get(name)
                if route is None:
                    self.send_error(404)
                    return
                if route.hang:
                    server._stop.wait(60)
                    return
                if route.status != 200:
                    self.send_error(route.status)
                    return
                server._send(self, name, route)

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self._thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def _send(self, handler: http.server.BaseHTTPRequestHandler, name: str, route: Route) -> None:
        data = route.body.read_bytes() if isinstance(route.body, Path) else (route.body or b"")
        handler.send_response(200)
        handler.send_header("Content-Type", "application/octet-stream")
        handler.send_header("Content-Length", str(len(data)))
        handler.end_headers()
        end = len(data) if route.cut_at is None else route.cut_at
        step = 1 << 16
        for start in range(0, end, step):
            if self._stop.is_set():
                return
            try:
                handler.wfile.write(data[start:min(end, start + step)])
            except OSError:
                return
            self.sent[name] = self.sent.get(name, 0) + min(end, start + step) - start
            if route.bytes_per_s:
                time.sleep(step / route.bytes_per_s)
        handler.close_connection = True

    def serve_official(self, pth: Path, data_dir: Path = NUS_WIDE) -> "MirrorServer":
        """The authors' four files, as published (the ``.pth`` given)."""
        self.routes = {PTH: Route(pth), **{n: Route(data_dir / n) for n in DATA_FILES}}
        return self

    def __enter__(self) -> "MirrorServer":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self.httpd.shutdown()
        self.httpd.server_close()


def write_random_official_pth(out: Path, seed: int = 0) -> Path:
    """A ``.pth`` in the authors' layout (their keys and shapes, random weights scaled so
    activations stay finite): ``{'model': state_dict, 'num_classes': 1006, 'idx_to_class': ...}``."""
    import torch

    from sdl_core.safe_pickle import safe_load_pickle

    keys = json.loads(KEYS_JSON.read_text())["keys"]
    gen = torch.Generator().manual_seed(seed)
    state = {}
    for key, shape, _dtype in keys:
        if key.endswith("running_var"):
            tensor = torch.ones(shape)
        elif key.endswith("running_mean") or key.endswith("bias"):
            tensor = torch.zeros(shape)
        elif len(shape) == 1:  # norm weights
            tensor = torch.ones(shape)
        else:
            fan_in = math.prod(shape[1:])
            tensor = torch.randn(shape, generator=gen) * math.sqrt(1.0 / fan_in)
        state[key] = tensor
    classes = safe_load_pickle(NUS_WIDE / "classes.pickle")
    torch.save({"model": state, "num_classes": len(classes), "idx_to_class": dict(classes)}, out)
    return out
