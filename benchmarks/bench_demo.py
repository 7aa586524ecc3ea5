"""Benchmark the demo as a user meets it (numbers, not a test).

    python benchmarks/bench_demo.py [--model default] [--requests 10] [--memory-requests 50]

Prints: cold start of ``python -m demo`` to the first served page; request -> result
shown in a real browser (Debian Chromium via Playwright; median of N); resident memory
of the server process after M more requests through gradio_client. The machine is
shared and noisy: the load average is printed with the numbers.
"""
from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "assets" / "examples"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--no-first-run"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_server(model: str, port: int) -> tuple[subprocess.Popen, float, float]:
    """Start ``python -m demo``; return the process, wall seconds to the first page served
    and the CPU seconds the server had used by then (a floor for the wall time on an idle
    machine, since start-up is mostly single-threaded imports)."""
    import psutil
    env = dict(os.environ, GRADIO_SERVER_PORT=str(port), GRADIO_SERVER_NAME="127.0.0.1")
    start = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "demo", "--model", model], cwd=ROOT, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    while proc.poll() is None:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5) as resp:
                if resp.status == 200 and resp.read():
                    wall = time.perf_counter() - start
                    cpu = psutil.Process(proc.pid).cpu_times()
                    return proc, wall, cpu.user + cpu.system
        except OSError:
            time.sleep(0.1)
    raise SystemExit(f"the demo exited with code {proc.returncode} before serving a page")


def browser_requests(url: str, n: int) -> list[float]:
    """Seconds from clicking "Tag" to the new table and all K new heat maps being shown.

    The example photos take turns, so every result differs from the one before; the
    upload finishes before the clock starts.
    """
    from playwright.sync_api import sync_playwright
    photos = sorted(EXAMPLES.glob("*.jpg"))
    times = []
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        page.set_default_timeout(120_000)
        page.goto(url)
        page.locator("#sdl-tags-input textarea").fill("espresso, latte art, saucer")
        for i in range(n + 1):  # the first request warms the page up and is not counted
            shown = page.evaluate("() => document.querySelector('#sdl-photo img')?.src || ''")
            page.locator("#sdl-photo input[type=file]").set_input_files(str(photos[i % len(photos)]))
            page.wait_for_function("""(old) => { const im = document.querySelector('#sdl-photo img');
                return im && im.src !== old && im.complete && im.naturalWidth > 0; }""", arg=shown, polling=20)
            table = page.evaluate("() => document.querySelector('#sdl-table').innerText")
            maps = page.evaluate("() => [...document.querySelectorAll('#sdl-maps img')].map(i => i.src)")
            start = time.perf_counter()
            page.locator("#sdl-run").click()
            page.wait_for_function(
                """([table, maps]) => {
                    const t = document.querySelector('#sdl-table');
                    const imgs = [...document.querySelectorAll('#sdl-maps img')];
                    return t.innerText !== table && t.querySelector('table.sdl-tags') && imgs.length > 0
                        && imgs.every(i => i.complete && i.naturalWidth > 0 && !maps.includes(i.src));
                }""", arg=[table, maps], polling=20)
            if i:
                times.append(time.perf_counter() - start)
        browser.close()
    return times


def memory_after(url: str, pid: int, n: int) -> tuple[float, float]:
    """Server RSS (MiB) before and after ``n`` requests through gradio_client."""
    import psutil
    from gradio_client import Client, handle_file
    proc = psutil.Process(pid)
    client = Client(url, verbose=False, download_files=tempfile.mkdtemp(prefix="bench-demo-"))
    model = client.view_api(print_info=False, return_format="dict")["named_endpoints"]["/tag"]["parameters"][4][
        "parameter_default"]
    photos = sorted(EXAMPLES.glob("*.jpg"))
    before = proc.memory_info().rss / 2**20
    for i in range(n):
        client.predict(handle_file(str(photos[i % len(photos)])), f"tag number {i}, espresso", False, 10, model,
                       api_name="/tag")
    return before, proc.memory_info().rss / 2**20


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="default")
    parser.add_argument("--requests", type=int, default=10)
    parser.add_argument("--memory-requests", type=int, default=50)
    args = parser.parse_args()
    port = free_port()
    load = os.getloadavg()
    proc, cold, cold_cpu = start_server(args.model, port)
    url = f"http://127.0.0.1:{port}/"
    try:
        print(f"cold start to first served page: {cold:.2f} s wall, {cold_cpu:.2f} s CPU of the server "
              f"(load average {load[0]:.1f} on {os.cpu_count()} cores)")
        times = browser_requests(url, args.requests)
        print(f"request -> result shown in Chromium: median {statistics.median(times):.3f} s over {len(times)} "
              f"(min {min(times):.3f}, max {max(times):.3f})")
        before, after = memory_after(url, proc.pid, args.memory_requests)
        print(f"server resident memory: {before:.0f} MiB after the browser requests, "
              f"{after:.0f} MiB after {args.memory_requests} more requests")
        print(f"load average at the end: {os.getloadavg()[0]:.1f}")
    finally:
        proc.terminate()
        proc.wait(timeout=30)


if __name__ == "__main__":
    main()
