"""Soak test: the real demo server (``python -m demo``) under 20 concurrent API clients.

20 gradio_client clients x 25 requests each, mixed good and bad inputs, on 127.0.0.1.
Every good request must succeed, every bad one must come back with its own message,
the server must stay healthy, and its resident memory growth after warm-up is
reported (target: < 200 MB). Bounded in time: the load phase stops at a deadline and
the server is always stopped. Run it alone with ``python -m pytest -m soak -s``;
SOAK_CLIENTS, SOAK_REQUESTS and SOAK_DEADLINE_S tune it, SOAK_REPORT=file.json keeps
the numbers.
"""
from __future__ import annotations

import json
import os
import re
import threading
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import pytest

from benchmarks.soak import Server
from benchmarks.soak_clients import shown_rows
from demo.app import MAX_TOP_K
from sdl_core.tags import MAX_TAGS
from tests.core.test_bad_images import CASES, write_case
from tests.demo.conftest import make_toy_checkpoint

pytestmark = pytest.mark.soak

CLIENTS = int(os.environ.get("SOAK_CLIENTS", 20))
REQUESTS_PER_CLIENT = int(os.environ.get("SOAK_REQUESTS", 25))
#: The load phase must end by then (seconds); the test fails on requests left over.
LOAD_DEADLINE_S = float(os.environ.get("SOAK_DEADLINE_S", 240))
WARMUP_DEADLINE_S = 90
STARTUP_TIMEOUT_S = 120
#: Resident memory the server may gain over the load phase, after warm-up.
MAX_RSS_GROWTH_MB = 200
HTML = "<script>alert(1)</script>"

#: Image cases of the bad-image corpus used here (huge and 50 MB files are left to
#: the core tests: they would measure upload bandwidth, not the server).
GOOD_IMAGES = ["plain_jpeg", "plain_png", "cmyk_jpeg", "png_16bit_gray", "png_palette_transparency", "png_rgba",
               "gif_animated", "webp_animated", "tiff_multipage", "bmp", "exif_orientation_6", "tall_3x20000",
               "one_by_one"]
BAD_IMAGES = ["zero_byte", "random_bytes", "text_named_jpg", "truncated_jpeg", "bomb_png_30000x30000",
              "bomb_png_9000x9000", "svg", "heic", "eps"]


@dataclass(frozen=True)
class Request:
    name: str
    image: str  # a case name of the corpus
    tags: str = ""
    only: bool = False
    top_k: int = 5
    model: str | None = None  # None: the server's own model
    error: str | None = None  # regex of the message a bad request must get


def requests() -> list[Request]:
    cases = {c.name: c for c in CASES}
    good = [Request(f"image:{n}", n, top_k=3 + i % 5) for i, n in enumerate(GOOD_IMAGES)]
    good += [
        Request("typed_tags", "plain_jpeg", "espresso, red car, Boat, boat", top_k=10),
        Request("only_typed", "cmyk_jpeg", "sky, water, dog", only=True, top_k=MAX_TOP_K),
        Request("html_tag", "plain_png", f"{HTML}, cat", only=True, top_k=5),
        Request("emoji_rtl", "bmp", "\U0001F431, חתול, قطة", top_k=8),
        Request("control_and_bidi", "gif_animated", "ca\x00t, \u202edog, \x1b[31msky", only=True, top_k=5),
        Request("max_tags", "plain_png", ",".join(f"w{i}" for i in range(MAX_TAGS)), top_k=MAX_TOP_K),
    ]
    bad = [Request(f"image:{n}", n, error=cases[n].refused) for n in BAD_IMAGES]
    bad += [
        Request("too_many_tags", "plain_jpeg", ",".join(f"t{i}" for i in range(10_000)), error="too many tags"),
        Request("tag_too_long", "plain_jpeg", "x" * 500, error="500 characters long; the limit is 100"),
        Request("only_typed_without_tags", "plain_jpeg", " , ;", only=True, error="no tags to rank"),
        Request("top_k_zero", "plain_jpeg", top_k=0, error=f"top-k must be from 1 to {MAX_TOP_K}"),
        Request("model_not_offered", "plain_jpeg", model="/etc/passwd", error="is not one this app offers"),
    ]
    return good + bad


@dataclass
class Outcome:
    request: Request
    ok: bool  # the expected outcome happened
    seconds: float
    detail: str = ""


def run_one(client, req: Request, files: dict[str, Path], model: str, deadline: float) -> Outcome:
    from gradio_client import handle_file
    start = time.perf_counter()
    try:
        job = client.submit(handle_file(str(files[req.image])), req.tags, req.only, req.top_k,
                            req.model if req.model is not None else model, api_name="/tag")
        result = job.result(timeout=max(1.0, deadline - time.monotonic()))
    except Exception as exc:  # noqa: BLE001 - the outcome is judged below
        seconds = time.perf_counter() - start
        message = str(exc)
        if req.error:
            return Outcome(req, re.search(req.error, message) is not None, seconds, message[:300])
        return Outcome(req, False, seconds, f"{type(exc).__name__}: {message[:300]}")
    seconds = time.perf_counter() - start
    if req.error:
        return Outcome(req, False, seconds, "a bad request was answered as if it were good")
    problem = check_result(req, result)
    return Outcome(req, problem == "", seconds, problem)


def check_result(req: Request, result) -> str:
    """'' if the answer of a good request is right, else what is wrong."""
    table, _json_file, maps, choice, tag_maps, _xmp_file = result
    rows = shown_rows(table)
    if not 1 <= rows <= req.top_k:
        return f"table has {rows} rows for top-k {req.top_k}"
    if HTML in table:
        return "typed HTML reached the page unescaped"
    if req.name == "html_tag" and "&lt;script&gt;" not in table:
        return "typed HTML is missing from the page"
    if not maps or not tag_maps:
        return "no attention maps"
    return ""


def client_loop(index: int, url: str, schedule: list[Request], files, model, deadline, out: list) -> None:
    from gradio_client import Client
    try:
        client = Client(url, verbose=False, download_files=False)
    except Exception as exc:  # noqa: BLE001
        out.extend(Outcome(r, False, 0.0, f"client could not connect: {exc}") for r in schedule)
        return
    for req in schedule:
        if time.monotonic() > deadline:
            out.append(Outcome(req, False, 0.0, "not sent: load deadline passed"))
            continue
        out.append(run_one(client, req, files, model, deadline))


def test_soak_demo_server(tmp_path):
    start_all = time.perf_counter()
    model = make_toy_checkpoint(tmp_path / "toy.safetensors")
    folder = tmp_path / "images"
    folder.mkdir()
    cases = {c.name: c for c in CASES}
    files = {name: write_case(cases[name], folder) for name in GOOD_IMAGES + BAD_IMAGES}
    reqs = requests()
    n_bad = sum(r.error is not None for r in reqs)
    (tmp_path / "models").mkdir()
    server = Server(tmp_path, ["--model", str(model), "--models-dir", str(tmp_path / "models")])
    try:
        startup_s = server.wait_ready(STARTUP_TIMEOUT_S)
        model_value = str(model.resolve())

        # warm-up: every kind of request once, from one client
        warm: list[Outcome] = []
        client_loop(-1, server.url, reqs, files, model_value, time.monotonic() + WARMUP_DEADLINE_S, warm)
        failed_warm = [(o.request.name, o.detail) for o in warm if not o.ok]
        assert not failed_warm, failed_warm
        time.sleep(1.0)
        rss_before = server.rss_mb()

        # load: CLIENTS threads, each its own client, requests interleaved good/bad
        peak = [rss_before]
        stop_sampling = threading.Event()

        def sample() -> None:
            while not stop_sampling.wait(0.5):
                peak[0] = max(peak[0], server.rss_mb())

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        deadline = time.monotonic() + LOAD_DEADLINE_S
        results: list[list[Outcome]] = [[] for _ in range(CLIENTS)]
        threads = []
        load_start = time.perf_counter()
        for c in range(CLIENTS):
            schedule = [reqs[(c * 7 + i * 3) % len(reqs)] for i in range(REQUESTS_PER_CLIENT)]
            t = threading.Thread(target=client_loop, args=(c, server.url, schedule, files, model_value, deadline,
                                                           results[c]), daemon=True)
            t.start()
            threads.append(t)
        for t in threads:
            t.join(timeout=max(0.0, deadline - time.monotonic()) + 30)
        load_s = time.perf_counter() - load_start
        stop_sampling.set()
        sampler.join(timeout=5)
        time.sleep(1.0)
        rss_after = server.rss_mb()

        outcomes = [o for r in results for o in r]
        good = [o for o in outcomes if o.request.error is None]
        bad = [o for o in outcomes if o.request.error is not None]
        failed = Counter((o.request.name, o.detail[:120]) for o in outcomes if not o.ok)
        times = sorted(o.seconds for o in outcomes if o.seconds)
        healthy_after = server.healthy() and server.proc.poll() is None
        after: list[Outcome] = []
        client_loop(-2, server.url, [reqs[0]], files, model_value, time.monotonic() + 60, after)
        log = server.log()
        report = {
            "clients": CLIENTS, "requests_per_client": REQUESTS_PER_CLIENT, "sent": len(outcomes),
            "good": len(good), "good_failed": sum(not o.ok for o in good),
            "bad": len(bad), "bad_answered_with_message": sum(o.ok for o in bad),
            "kinds": {"good": len(reqs) - n_bad, "bad": n_bad},
            "startup_s": round(startup_s, 1), "load_s": round(load_s, 1),
            "requests_per_s": round(len(outcomes) / load_s, 2),
            "latency_s": {"p50": round(times[len(times) // 2], 2), "p95": round(times[int(len(times) * 0.95)], 2),
                          "max": round(times[-1], 2)} if times else {},
            "rss_mb": {"after_warmup": round(rss_before, 1), "peak": round(peak[0], 1),
                       "after_load": round(rss_after, 1), "growth": round(rss_after - rss_before, 1)},
            "healthy_after": healthy_after and bool(after) and after[0].ok,
            "tracebacks_in_server_log": log.count("Traceback"),
            "total_s": round(time.perf_counter() - start_all, 1),
        }
        print("\nSOAK " + json.dumps(report))
        out_path = os.environ.get("SOAK_REPORT")
        if out_path:
            Path(out_path).write_text(json.dumps(report, indent=2))
        assert len(outcomes) == CLIENTS * REQUESTS_PER_CLIENT
        assert not failed, dict(failed)
        assert report["healthy_after"], "server unhealthy after the load"
        assert report["tracebacks_in_server_log"] == 0, log[-4000:]
        assert rss_after - rss_before < MAX_RSS_GROWTH_MB, report["rss_mb"]
    finally:
        server.stop()
