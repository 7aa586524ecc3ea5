"""Soak the demo server as a public demo meets it (numbers and goals, not a unit test).

    python benchmarks/soak.py --minutes 20 --clients 50 [--json] [--models-dir DIR]
                              [--cache-max-age 900] [--seed 0] [--keep DIR]

Starts ``python -m demo`` on a free loopback port with two models (the default and a
toy checkpoint it writes into ``--models-dir``) and a ``--search-dir`` of generated
photos, in its own temporary folders (``GRADIO_TEMP_DIR``, ``TMPDIR``) so they can be
measured. N concurrent visitors (benchmarks/soak_clients.py) then send a random mix of
good and bad uploads, typed tags, model switches, tag-map re-renders, searches and
requests they abandon half-way, until the time is up.

Reported: requests/s; p50/p95/p99 latency of answered requests; failed good requests
(goal 0) and bad requests not answered with their message; the server's resident
memory over time (goal: growth after warm-up < 200 MB); the size of the server's
temporary folders over time and the age of the oldest file left (goal: bounded, old
files removed). ``--json`` prints one JSON report last. Exit code 1 when a goal is
missed. The machine's load average is recorded with the numbers.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import stat
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # a benchmark run from a checkout: sdl_core, demo and the clients

from benchmarks.soak_clients import Outcome, Visitor, write_inputs  # noqa: E402

MAX_RSS_GROWTH_MB = 200
SAMPLE_EVERY_S = 5.0
STARTUP_TIMEOUT_S = 300
#: Seconds a sweep may run late on a busy machine (the sweeps are timers in a loaded server);
#: on a machine loaded beyond its cores it stretches by the load per core (see sweep_slack).
SWEEP_SLACK_S = 20


def sweep_slack(load_1min: list[float], cores: int) -> float:
    """The lateness allowed to a sweep: SWEEP_SLACK_S, times the highest 1-minute load per core
    seen in the run when that is above 1. Gradio's scheduled deletion waits for a thread and the
    GIL like any request: at a load of 4.3 on 2 cores an old file was seen 56 s after it was made."""
    per_core = max(load_1min, default=0.0) / max(1, cores)
    return round(SWEEP_SLACK_S * max(1.0, per_core), 1)


def free_port() -> int:
    import socket
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def write_toy_checkpoint(path: Path) -> Path:
    """A random-weight SDL model (timm's tiny test_resnet, K=3) whose tags live in WordLlama."""
    import torch

    from sdl_core.checkpoint import save_checkpoint
    from sdl_core.config import ModelConfig, PreprocessConfig
    from sdl_core.model import SDLModel
    from sdl_core.vocab import Vocabulary
    from sdl_core.wordvec import WORDLLAMA, load_word_space
    words = ["cat", "dog", "car", "tree", "sky", "water", "boat", "house", "street", "beach"]
    vocab = Vocabulary.from_tags(words, load_word_space("wordllama"), seen=words[:7])
    torch.manual_seed(0)
    config = ModelConfig(kind="sdl", backbone="test_resnet", k=3, word_space=WORDLLAMA,
                         preprocess=PreprocessConfig(size=64), name="soak_toy")
    return save_checkpoint(SDLModel(config).eval(), vocab, path)


def _files(folder: Path):
    """(path, lstat) of the files under ``folder``; files and folders that vanish meanwhile
    (the server deletes old ones while we look) are skipped."""
    for dirpath, _dirs, names in os.walk(folder):  # os.walk ignores folders that vanish
        for name in names:
            path = os.path.join(dirpath, name)
            try:
                st = os.lstat(path)
            except OSError:
                continue
            if stat.S_ISREG(st.st_mode):
                yield path, st


def folder_stats(folder: Path, now: float, at_start: frozenset[str] = frozenset()) -> dict:
    """Files, bytes and the age of the oldest file under ``folder`` made after the start
    (files there at the start, e.g. the example photos the page shows, are kept for good)."""
    files = size = 0
    oldest = 0.0
    for path, st in _files(folder):
        files += 1
        size += st.st_size
        if path not in at_start:
            oldest = max(oldest, now - st.st_ctime)
    return {"files": files, "bytes": size, "oldest_s": round(oldest, 1)}


def files_under(*folders: Path) -> frozenset[str]:
    return frozenset(path for folder in folders for path, _ in _files(folder))


class Server:
    """``python -m demo DEMO_ARGS`` on a free loopback port, in its own process and temporary
    folders (``work/gradio-tmp`` for Gradio, ``work/tmp`` for the rest), its log in ``work``."""

    def __init__(self, work: Path, demo_args: list[str]) -> None:
        import psutil
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/"
        self.gradio_tmp, self.tmp = work / "gradio-tmp", work / "tmp"
        self.gradio_tmp.mkdir(parents=True, exist_ok=True)
        self.tmp.mkdir(exist_ok=True)
        env = {**os.environ, "PYTHONPATH": str(ROOT), "GRADIO_TEMP_DIR": str(self.gradio_tmp), "TMPDIR": str(self.tmp),
               "GRADIO_ANALYTICS_ENABLED": "False", "HF_HUB_OFFLINE": "1", "PYTHONIOENCODING": "utf-8"}
        self.log_path = work / "server.log"
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "demo", *demo_args, "--host", "127.0.0.1", "--port", str(self.port),
             "--log-level", "WARNING"], cwd=work, env=env, stdout=self._log, stderr=subprocess.STDOUT)
        self.process = psutil.Process(self.proc.pid)

    def healthy(self) -> bool:
        try:
            with urllib.request.urlopen(self.url + "config", timeout=10) as resp:
                return resp.status == 200
        except OSError:
            return False

    def wait_ready(self, timeout: float = STARTUP_TIMEOUT_S) -> float:
        """Seconds until the page is served; RuntimeError (with the log) if it never is."""
        start = time.monotonic()
        while time.monotonic() - start < timeout:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the demo exited with {self.proc.returncode}:\n{self.log()[-3000:]}")
            if self.healthy():
                return time.monotonic() - start
            time.sleep(0.5)
        raise RuntimeError(f"the demo did not come up in {timeout} s:\n{self.log()[-3000:]}")

    def rss_mb(self) -> float:
        import psutil
        total = 0
        for proc in [self.process, *self.process.children(recursive=True)]:
            try:
                total += proc.memory_info().rss
            except psutil.Error:
                pass
        return total / 2**20

    def log(self) -> str:
        self._log.flush()
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=20)
        self._log.close()


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))], 3)


def sample_loop(server: Server, start: float, stop: threading.Event, samples: list[dict]) -> None:
    at_start = files_under(server.gradio_tmp, server.tmp)
    while True:
        now = time.time()
        try:
            samples.append({"t_s": round(time.monotonic() - start, 1), "rss_mb": round(server.rss_mb(), 1),
                            "gradio_temp": folder_stats(server.gradio_tmp, now, at_start),
                            "other_temp": folder_stats(server.tmp, now, at_start),
                            "load_1min": round(os.getloadavg()[0], 2)})
        except Exception as exc:  # noqa: BLE001 - one lost sample must not end the sampling
            print(f"sample lost: {type(exc).__name__}: {exc}", file=sys.stderr)
        if stop.wait(SAMPLE_EVERY_S):
            return


def drive(server: Server, args: argparse.Namespace, models: list[str], search_dir: Path, inputs) -> dict:
    """Warm up, run the visitors until the time is up while sampling, and build the report."""
    good, bad = inputs
    warm = Visitor(-1, server.url, models, str(search_dir), good, bad, args.seed)
    for action in ["tag", "tag_other_model", "search", "re_render", "about", "bad_upload"]:
        getattr(warm, action)(time.monotonic() + 300)
    outcomes: list[Outcome] = []
    lock = threading.Lock()

    def record(outcome: Outcome) -> None:
        with lock:
            outcomes.append(outcome)

    samples: list[dict] = []
    stop = threading.Event()
    start = time.monotonic()
    deadline = start + args.minutes * 60
    sampler = threading.Thread(target=sample_loop, args=(server, start, stop, samples), daemon=True)
    sampler.start()
    visitors = [Visitor(i, server.url, models, str(search_dir), good, bad, args.seed) for i in range(args.clients)]
    threads = [threading.Thread(target=v.run_until, args=(deadline, record), daemon=True) for v in visitors]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=max(0.0, deadline - time.monotonic()) + 300)
    elapsed = time.monotonic() - start
    stop.set()
    sampler.join(timeout=30)
    healthy = server.healthy() and server.proc.poll() is None
    after = Visitor(-2, server.url, models, str(search_dir), good, bad, args.seed).tag(time.monotonic() + 120)
    return report(args, outcomes, samples, elapsed, start, healthy and after[1], server.log())


def report(args: argparse.Namespace, outcomes: list[Outcome], samples: list[dict], elapsed: float, start: float,
           healthy: bool, log: str) -> dict:
    answered = [o for o in outcomes if o.good is not None]
    good = [o for o in answered if o.good]
    bad = [o for o in answered if not o.good]
    warmup_s = min(120.0, 0.25 * args.minutes * 60)
    after_warmup = [s for s in samples if s["t_s"] >= warmup_s] or samples[-1:]
    rss_base = after_warmup[0]["rss_mb"]
    failures: dict[str, int] = {}
    for o in answered:
        if not o.ok:
            key = f"{o.action}: {o.detail[:120]}"
            failures[key] = failures.get(key, 0) + 1
    temp_bytes = [s["gradio_temp"]["bytes"] + s["other_temp"]["bytes"] for s in samples]
    last = samples[-1]
    sweep = max(5, args.cache_max_age // 4)
    result = {
        "minutes": args.minutes, "clients": args.clients, "seed": args.seed, "cache_max_age_s": args.cache_max_age,
        "load_average_start_end": [samples[0]["load_1min"], last["load_1min"]] if samples else None,
        "requests": len(outcomes), "requests_per_s": round(len(outcomes) / elapsed, 2),
        "latency_s": {"p50": percentile([o.seconds for o in answered], 0.50),
                      "p95": percentile([o.seconds for o in answered], 0.95),
                      "p99": percentile([o.seconds for o in answered], 0.99)},
        "good_requests": len(good), "failed_good_requests": sum(not o.ok for o in good),
        "bad_requests": len(bad), "bad_requests_without_their_message": sum(not o.ok for o in bad),
        "abandoned_requests": sum(o.good is None for o in outcomes),
        "by_action": {a: sum(o.action == a for o in outcomes) for a in sorted({o.action for o in outcomes})},
        "failures": dict(sorted(failures.items(), key=lambda kv: -kv[1])[:20]),
        "rss_mb": {"after_warmup": rss_base, "max_after_warmup": max(s["rss_mb"] for s in after_warmup),
                   "end": last["rss_mb"]},
        "rss_growth_mb": round(max(s["rss_mb"] for s in after_warmup) - rss_base, 1),
        "temp_dir_bytes": {"max": max(temp_bytes), "end": temp_bytes[-1]},
        "temp_dir_files_end": last["gradio_temp"]["files"] + last["other_temp"]["files"],
        "temp_oldest_file_s": max(last["gradio_temp"]["oldest_s"], last["other_temp"]["oldest_s"]),
        # the cache age, plus one sweep period and scheduling slack on a loaded machine
        "temp_files_age_limit_s": args.cache_max_age + sweep + sweep_slack([s["load_1min"] for s in samples],
                                                                            os.cpu_count() or 1),
        "server_healthy_after": healthy,
        "tracebacks_in_server_log": log.count("Traceback"),
        "tracebacks_other_than_client_disconnects": unexpected_tracebacks(log),
        "samples": samples,
    }
    result["goals_met"] = {
        "no_failed_good_requests": result["failed_good_requests"] == 0,
        "bad_requests_answered_with_their_message": result["bad_requests_without_their_message"] == 0,
        "rss_growth_under_200_mb": result["rss_growth_mb"] < MAX_RSS_GROWTH_MB,
        "temp_files_removed_when_old": result["temp_oldest_file_s"] <= result["temp_files_age_limit_s"]
        or args.minutes * 60 < result["temp_files_age_limit_s"],
        "server_healthy_after": healthy,
        "no_unexpected_tracebacks": result["tracebacks_other_than_client_disconnects"] == 0,
    }
    return result


def unexpected_tracebacks(log: str) -> int:
    """Tracebacks in the server log other than Starlette's ClientDisconnect, which Gradio logs
    when a client hangs up half-way through an upload (the soak's own hang-ups)."""
    chunks = log.split("Traceback (most recent call last)")[1:]
    return sum("starlette.requests.ClientDisconnect" not in chunk.split("ERROR:")[0] for chunk in chunks)


def print_human(result: dict) -> None:
    lat = result["latency_s"]
    print(f"{result['minutes']} min, {result['clients']} clients, load {result['load_average_start_end']}: "
          f"{result['requests']} requests, {result['requests_per_s']}/s; latency p50 {lat['p50']} s, "
          f"p95 {lat['p95']} s, p99 {lat['p99']} s")
    print(f"good {result['good_requests']} (failed {result['failed_good_requests']}), bad {result['bad_requests']} "
          f"(without their message {result['bad_requests_without_their_message']}), abandoned "
          f"{result['abandoned_requests']}")
    print(f"RSS {result['rss_mb']} MB, growth after warm-up {result['rss_growth_mb']} MB; temp folders "
          f"{result['temp_dir_bytes']} bytes, oldest file {result['temp_oldest_file_s']} s "
          f"(limit {result['temp_files_age_limit_s']} s)")
    for t_s, rss, temp in [(s["t_s"], s["rss_mb"], s["gradio_temp"]["bytes"]) for s in result["samples"][::12]]:
        print(f"  t={t_s:7.1f} s  rss {rss:8.1f} MB  gradio temp {temp / 2**20:8.2f} MB")
    for failure, count in result["failures"].items():
        print(f"  failure x{count}: {failure}")
    print("goals: " + ", ".join(f"{k}={'yes' if v else 'NO'}" for k, v in result["goals_met"].items()))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=20.0)
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--json", action="store_true", help="print one JSON report last")
    parser.add_argument("--models-dir", type=Path, help="where the toy checkpoint is written (default: a temp folder)")
    parser.add_argument("--cache-max-age", type=int, default=900, help="the demo's --cache-max-age (seconds)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--keep", type=Path, help="keep the work folder (server log, temp folders) here")
    args = parser.parse_args(argv)
    logging.getLogger("httpx").setLevel(logging.WARNING)  # gradio_client logs every HTTP request at INFO
    work = Path(tempfile.mkdtemp(prefix="sdl-soak-"))
    models_dir = args.models_dir or work / "models"
    models_dir.mkdir(parents=True, exist_ok=True)
    toy = models_dir / "soak_toy.safetensors"
    if not toy.is_file():
        write_toy_checkpoint(toy)
    inputs = write_inputs(work / "inputs")
    search_dir = work / "search"
    for i, path in enumerate(inputs[0][:4] * 2):
        search_dir.mkdir(exist_ok=True)
        shutil.copy(path, search_dir / f"photo{i}{path.suffix}")
    from sdl_core.registry import DEFAULT_MODEL, resolve_name
    server = Server(work, ["--model", "default", "--models-dir", str(models_dir), "--search-dir", str(search_dir),
                           "--cache-max-age", str(args.cache_max_age)])
    try:
        startup_s = server.wait_ready()
        result = {"startup_s": round(startup_s, 1),
                  **drive(server, args, [resolve_name(DEFAULT_MODEL), str(toy.resolve())], search_dir, inputs)}
    finally:
        server.stop()
        if args.keep:
            shutil.copytree(work, args.keep, dirs_exist_ok=True)
        shutil.rmtree(work, ignore_errors=True)
    print_human(result)
    if args.json:
        print(json.dumps(result))
    return 0 if all(result["goals_met"].values()) else 1


if __name__ == "__main__":
    raise SystemExit(main())
