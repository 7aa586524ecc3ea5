"""The performance benchmark: ``python benchmarks/bench.py [--quick] [--json] [--demo]``.

Every number is a median over repeated runs after warm-up, and every case is timed
*interleaved* with its baseline in the same process (round-robin, the order rotated
each round), so machine load hits both alike. The ratio is the median of the per-round
ratios baseline / case (a speed-up: > 1 is faster). Sections (issue 6):

1. SDL TResNet-M @224, K=7, D=300, random weights: ``Tagger.tag`` vs an authors'-style
   baseline written here (eager, autograd on, float32, NCHW, model run twice per image,
   numpy scoring), plus which optimisation bought what;
2. the offline default model, one image end to end (decode -> 1,000-tag vocabulary +
   10 new typed tags -> attention maps), with and without maps, median and p90;
3. ``python -m sdl_core tag`` over 64 photos, batched vs one by one (images/s);
4. scoring 100k tags against K principal vectors; embedding 1,000 new typed tags
   (and the same again, cached);
5. the demo (``--demo`` runs ``benchmarks/bench_demo.py``): cold start to first page,
   request -> response, RSS after 50 requests; ``--search`` runs ``benchmarks/bench_search.py``.
"""
from __future__ import annotations

import argparse
import contextlib
import inspect
import io
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Sequence

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import sdl_core  # noqa: E402,F401 - first, as in the CLI and the demo: it sets OpenMP's wait policy before torch loads
import numpy as np  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402

from sdl_core import cli  # noqa: E402
from sdl_core.config import ModelConfig  # noqa: E402
from sdl_core.model import SDLModel  # noqa: E402
from sdl_core.official import OFFICIAL_PREPROCESS  # noqa: E402
from sdl_core.scoring import (LOW_PRECISION_FROM_ROWS, LowPrecision, fast_bfloat16, score_tags,  # noqa: E402
                              top_k_indices, top_tags)
from sdl_core.tagger import Tagger  # noqa: E402
from sdl_core.vocab import Vocabulary  # noqa: E402
from sdl_core.wordvec import AUTHORS_FASTTEXT, load_word_space, unit_rows  # noqa: E402

try:  # absent before the optimisations existed: the benchmark still runs, without ablation rows
    from sdl_core.optimize import InferenceOptions
except ImportError:  # pragma: no cover
    InferenceOptions = None  # type: ignore[assignment,misc]

EXAMPLES = ROOT / "demo" / "examples"
PHOTO = EXAMPLES / "rocket.jpg"
ADJECTIVES = ("red", "small", "old", "wooden", "shiny", "wet", "striped", "frozen", "broken", "golden",
              "quiet", "tall", "round", "dusty", "bright", "narrow", "soft", "busy", "empty", "ancient")


@dataclass
class Row:
    """One line of the table. ``ratio`` = baseline time / this time (speed-up) when a baseline exists."""

    section: str
    case: str
    median: float
    unit: str = "ms"
    p90: float | None = None
    baseline: str | None = None
    ratio: float | None = None
    target: str = ""
    met: bool | None = None
    key: str = ""  # stable name for scripts, e.g. "scoring.k3_d256.score_tags.median_ms"


# --- measuring -----------------------------------------------------------------------

#: Pause after each call where a numpy baseline runs beside torch: OpenBLAS's worker
#: threads spin for a while after a numpy product and made the torch call that followed
#: 3x slower (score_tags: 30 ms right after numpy, 11 ms after a 0.2 s pause).
BLAS_SETTLE_S = 0.2


def interleaved(cases: dict[str, Callable[[int], object]], repeats: int, warmup: int = 1,
                settle_s: float = 0.0, cpu: dict[str, list[float]] | None = None) -> dict[str, list[float]]:
    """Seconds per call of each case, rounds interleaved and the order rotated every round.

    Each call gets the round index (negative during warm-up) so it can use fresh inputs;
    ``settle_s`` is slept (untimed) after each call. ``cpu``, if given, gets the process CPU
    seconds (all threads) of each call: on a machine whose cores are all busy, work is what counts.
    """
    names = list(cases)
    for w in range(warmup):
        for name in names:
            cases[name](-1 - w)
    times: dict[str, list[float]] = {n: [] for n in names}
    for i in range(repeats):
        shift = i % len(names)
        for name in names[shift:] + names[:shift]:
            start, start_cpu = time.perf_counter(), time.process_time()
            cases[name](i)
            times[name].append(time.perf_counter() - start)
            if cpu is not None:
                cpu.setdefault(name, []).append(time.process_time() - start_cpu)
            if settle_s:
                time.sleep(settle_s)
    return times


def p90(values: Sequence[float]) -> float:
    return float(np.percentile(np.asarray(values), 90))


def paired_ratio(base: Sequence[float], case: Sequence[float]) -> float:
    """Median over rounds of base_i / case_i: robust to load that drifts between rounds."""
    return float(statistics.median(b / c for b, c in zip(base, case)))


def rows_from(section: str, times: dict[str, list[float]], baseline: str | None, targets: dict[str, tuple[str, Callable[[float, float | None], bool]]] | None = None,
              with_p90: Sequence[str] = ()) -> list[Row]:
    """Rows in ms for each case, with ratio against ``baseline`` and optional targets
    (a target is checked on (median ms, ratio))."""
    rows = []
    targets = targets or {}
    for name, values in times.items():
        med = statistics.median(values) * 1e3
        ratio = paired_ratio(times[baseline], values) if baseline and name != baseline else None
        target, check = targets.get(name, ("", None))
        rows.append(Row(section, name, med, "ms", p90(values) * 1e3 if name in with_p90 else None,
                        baseline if ratio is not None else None, ratio, target,
                        check(med, ratio) if check else None))
    return rows


def tagger_with(model, vocab, space=None, options=None) -> Tagger:
    """A Tagger with the given optimisation options (plain Tagger on code without them)."""
    if options is None or "optimize" not in inspect.signature(Tagger).parameters:
        return Tagger(model, vocab, space)
    return Tagger(model, vocab, space, optimize=options)


def typed_tags(round_index: int, variant: int, n: int, nouns: Sequence[str]) -> list[str]:
    """``n`` typed tags never used before in this process (fresh: not in any cache)."""
    base = (round_index + 100) * 7919 + variant * 104729
    return [f"{ADJECTIVES[(base + j) % len(ADJECTIVES)]} {nouns[(base * 31 + j * 17) % len(nouns)]} {base + j}"
            for j in range(n)]


# --- section 1: SDL TResNet-M vs the authors' style -----------------------------------

def sdl_tresnet_m(k: int = 7) -> SDLModel:
    torch.manual_seed(0)
    cfg = ModelConfig(kind="sdl", backbone="tresnet_m", k=k, word_space=AUTHORS_FASTTEXT,
                      preprocess=OFFICIAL_PREPROCESS, name="bench_sdl_tresnet_m_random")
    return SDLModel(cfg).eval()


def random_vocab(n: int, d: int, unseen: int, seed: int = 0) -> Vocabulary:
    rng = np.random.default_rng(seed)
    flags = np.ones(n, bool)
    flags[rng.choice(n, unseen, replace=False)] = False
    return Vocabulary([f"tag{i:05d}" for i in range(n)], unit_rows(rng.normal(size=(n, d))), flags)


def authors_style(model: SDLModel, wordvecs: np.ndarray, tags: list[str], path: Path, top_k: int = 10) -> list[str]:
    """The authors' inference, as their script does it: PIL squash-resize, /255, no
    no_grad, NCHW float32, the model run twice, the head output read as (D, K), numpy scoring."""
    im = Image.open(path).convert("RGB")
    im_resize = im.resize((224, 224))
    np_img = np.array(im_resize, dtype=np.uint8)
    tensor = torch.from_numpy(np_img).permute(2, 0, 1).float() / 255.0
    batch = tensor.unsqueeze(0)

    def raw(x: torch.Tensor) -> torch.Tensor:  # GAP -> bias-free Linear(C, K*D), autograd on
        return model.head(model.backbone.forward_features(x).mean(dim=(2, 3)))

    raw(batch)
    output = raw(batch)
    a = output.detach().numpy().reshape(model.d, model.k)  # column k = principal vector k
    scores = (wordvecs @ a).max(axis=1)
    return [tags[i] for i in np.argsort(-scores)[:top_k]]


def section_sdl(repeats: int) -> list[Row]:
    model = sdl_tresnet_m()
    vocab = random_vocab(1006, 300, 81)
    variants: dict[str, object] = {"Tagger, unoptimised (inference_mode, 1 forward, torch scoring)": "off"}
    if InferenceOptions is not None:
        variants["Tagger + BN folded"] = torch_options(fold_bn=True, channels_last=False)
        variants["Tagger + channels_last only"] = torch_options(fold_bn=False, channels_last=True)
        if torch_runtime() is not None:
            variants["Tagger, torch only (BN folded + channels_last)"] = torch_runtime()
            variants["Tagger (default: ONNX Runtime trunk)"] = InferenceOptions()
        else:
            variants["Tagger (default: BN folded + channels_last)"] = InferenceOptions()
    taggers = {}
    for name, opt in variants.items():
        off = torch_options(fold_bn=False, channels_last=False) if InferenceOptions else None
        taggers[name] = tagger_with(model, vocab, options=off if opt == "off" else opt)
    default_name = list(variants)[-1]
    expected = authors_style(model, vocab.vectors, vocab.tags, PHOTO)
    for name, tagger in taggers.items():
        got = [t.tag for t in tagger.tag(PHOTO, top_k=10)]
        if got != expected:
            raise SystemExit(f"section 1: {name} ranks {got} but the authors' style ranks {expected}")
    base = "authors' style (eager, autograd, NCHW, 2 forwards, numpy)"
    cases: dict[str, Callable[[int], object]] = {base: lambda i: authors_style(model, vocab.vectors, vocab.tags, PHOTO)}
    for name, tagger in taggers.items():
        cases[name] = lambda i, t=tagger: t.tag(PHOTO, top_k=10)
    one = taggers[default_name]
    cases["Tagger (default), torch threads = 1"] = lambda i: _with_threads(1, lambda: one.tag(PHOTO, top_k=10))
    times = interleaved(cases, repeats, settle_s=BLAS_SETTLE_S)
    targets = {default_name: (">= 3x", lambda m, r: r is not None and r >= 3.0)}
    return rows_from("1 SDL TResNet-M 224 K=7 D=300, 1 image", times, base, targets)


def torch_runtime():
    """Options for the torch-only optimised path (None before ONNX Runtime existed here)."""
    try:
        return InferenceOptions(runtime="torch")
    except TypeError:
        return None


def torch_options(**flags):
    """InferenceOptions that keep the trunk on torch (where the runtime option exists)."""
    try:
        return InferenceOptions(runtime="torch", **flags)
    except TypeError:
        return InferenceOptions(**flags)


def _with_threads(n: int, fn: Callable[[], object]) -> object:
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        return fn()
    finally:
        torch.set_num_threads(before)


# --- section 2: the default model end to end -------------------------------------------

def default_parts():
    from sdl_core.factory import load_model
    loaded = load_model("default")
    return loaded.model, loaded.vocabulary, loaded.word_space


def section_default(repeats: int) -> list[Row]:
    model, full_vocab, space = default_parts()
    vocab = full_vocab.select(full_vocab.tags[:1000])
    nouns = full_vocab.tags
    fast = tagger_with(model, full_vocab, space, InferenceOptions() if InferenceOptions else None)
    plain = tagger_with(model, full_vocab, space,
                        torch_options(fold_bn=False, channels_last=False) if InferenceOptions else None)
    torch_only = tagger_with(model, full_vocab, space, torch_runtime()) if torch_runtime() is not None else None
    renderer = _demo_renderer()

    def analyze(tagger: Tagger, i: int, variant: int):
        return tagger.analyze(PHOTO, extra_tags=typed_tags(i, variant, 10, nouns), top_k=10, vocabulary=vocab)

    base = "analyze (tags + maps), unoptimised model"
    cases: dict[str, Callable[[int], object]] = {
        base: lambda i: analyze(plain, i, 0),
        "analyze (tags + maps)": lambda i: analyze(fast, i, 1),
        "tag (no maps)": lambda i: fast.tag(PHOTO, extra_tags=typed_tags(i, 2, 10, nouns), top_k=10, vocabulary=vocab),
    }
    if torch_only is not None:
        cases["analyze (tags + maps), torch only (BN folded + channels_last)"] = lambda i: analyze(torch_only, i, 4)
    if renderer is not None:
        cases["analyze + render K principal + K tag overlays (demo.render)"] = \
            lambda i: renderer(analyze(fast, i, 3), fast.config.preprocess)
    times = interleaved(cases, repeats, warmup=2)
    within = (lambda m, r: m <= 40.0)
    targets = {"analyze (tags + maps)": ("<= 40 ms", within), "tag (no maps)": ("<= 40 ms", within)}
    return rows_from("2 default model, 1 image, 1,000 tags + 10 new typed", times, base, targets,
                     with_p90=list(cases))


def _demo_renderer() -> Callable | None:
    """The demo's overlay rendering, when the demo's render module is there."""
    try:
        from demo.render import model_view, overlay, overlays_each
    except Exception:  # noqa: BLE001 - the demo is optional for this benchmark
        return None

    def render(analysis, preprocess):
        photo = model_view(analysis.image, preprocess)
        overlays_each(photo, analysis.principal_maps)
        first = next(iter(analysis.tag_maps.values()))
        lo, hi = float(first.min()), float(first.max())
        return [overlay(photo, np.clip((m - lo) / max(hi - lo, 1e-12), 0, 1)) for m in first]

    return render


# --- section 3: the CLI over a folder --------------------------------------------------

def make_photos(folder: Path, n: int = 64, seed: int = 0) -> list[Path]:
    """``n`` JPEG photos (640x480 crops of the shipped examples, flipped or not)."""
    rng = np.random.default_rng(seed)
    sources = [Image.open(p).convert("RGB") for p in sorted(EXAMPLES.glob("*.jpg"))]
    paths = []
    for i in range(n):
        src = sources[i % len(sources)]
        scale = 700 / min(src.size)
        big = src.resize((round(src.width * scale), round(src.height * scale)), Image.Resampling.BILINEAR)
        x, y = int(rng.integers(0, big.width - 640 + 1)), int(rng.integers(0, big.height - 480 + 1))
        img = big.crop((x, y, x + 640, y + 480))
        if i % 2:
            img = img.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        path = folder / f"photo_{i:03d}.jpg"
        img.save(path, quality=90)
        paths.append(path)
    return paths


def run_cli(argv: list[str]) -> None:
    with contextlib.redirect_stdout(io.StringIO()):
        code = cli.main(argv)
    if code != 0:
        raise SystemExit(f"`python -m sdl_core {' '.join(argv[:3])} ...` exited with {code}")


CLI_SECTION = "3 `sdl_core tag` over 64 photos (in-process, model built)"


def model_rate_case(paths: list[str], batch: int) -> Callable[[int], object]:
    """The model's own rate: the optimised trunk + head + scoring of the default model on
    already decoded and preprocessed tensors, in the CLI's batches."""
    from sdl_core.images import load_image, to_tensor
    model, vocab, space = default_parts()
    tagger = tagger_with(model, vocab, space, InferenceOptions() if InferenceOptions else None)
    pixels = [to_tensor([load_image(p) for p in paths[s:s + batch]], tagger.config.preprocess)
              for s in range(0, len(paths), batch)]

    def run(i: int) -> None:
        for chunk in pixels:
            encoded = tagger._encode_pixels(chunk)
            score_tags(encoded.vectors, tagger._vocab_tensor, tagger.config.reduction)
    return run


def section_cli(repeats: int, folder: Path, cold: bool) -> list[Row]:
    from sdl_core.cli.tag import CPU_BATCH_SIZE
    paths = [str(p) for p in make_photos(folder)]
    default_parts()  # the model is built once per process, as in one CLI run
    one = "one by one (--batch-size 1)"
    batched = f"batched (default: --batch-size {CPU_BATCH_SIZE} on the CPU)"
    own = f"the model's own rate: preprocessed tensors, batches of {CPU_BATCH_SIZE} (no decode/resize)"
    cases = {one: lambda i: run_cli(["tag", *paths, "--json", "--batch-size", "1"]),
             batched: lambda i: run_cli(["tag", *paths, "--json"]),
             own: model_rate_case(paths, CPU_BATCH_SIZE)}
    cpu: dict[str, list[float]] = {}
    times = interleaved(cases, repeats, cpu=cpu)
    rows = []
    keys = {one: "cli.one_by_one.img_per_s", batched: "cli.batched.img_per_s", own: "cli.model_rate.img_per_s"}
    for name, values in times.items():
        ratio = paired_ratio(times[one], values) if name == batched else None
        rows.append(Row(CLI_SECTION, name, len(paths) / statistics.median(values), "img/s", None,
                        one if ratio else None, ratio, ">= 1.5x" if ratio else "", (ratio >= 1.5) if ratio else None,
                        keys[name]))
    share = paired_ratio(times[own], times[batched])  # (model time / folder time) = folder rate / model rate
    rows.append(Row(CLI_SECTION, "folder rate / model rate (batched CLI vs preprocessed tensors)", share * 100,
                    "%", target=">= 85 %", met=share >= 0.85, key="cli.folder_vs_model.percent"))
    work = paired_ratio(cpu[own], cpu[batched])
    rows.append(Row(CLI_SECTION, "model CPU / folder CPU (process CPU seconds: the rate ratio when every core is "
                    "busy)", work * 100, "%", key="cli.folder_vs_model.cpu_percent"))
    rows.append(Row(CLI_SECTION, "the model's CPU per photo (preprocessed tensors)",
                    statistics.median(cpu[own]) / len(paths) * 1e3, "ms", key="cli.model.cpu_ms_per_photo"))
    rows.append(Row(CLI_SECTION, "decode + resize + rank + output: CPU per photo beyond the model's",
                    (statistics.median(cpu[batched]) - statistics.median(cpu[own])) / len(paths) * 1e3, "ms",
                    key="cli.beyond_model.cpu_ms_per_photo"))
    if cold:
        start = time.perf_counter()
        subprocess.run([sys.executable, "-m", "sdl_core", "tag", *paths, "--json"], cwd=ROOT, check=True,
                       stdout=subprocess.DEVNULL)
        rows.append(Row(CLI_SECTION, "cold subprocess, whole command (imports + model + 64 photos), 1 run",
                        (time.perf_counter() - start) * 1e3))
    return rows


# --- section 4: scoring and embedding --------------------------------------------------

SCORING_TARGET_MS = {(3, 256): 6.0, (7, 300): 8.0}
SEARCH_TARGET_MS = 40.0
SEARCH_SHAPE = (100_000, 7, 300)


def section_scoring(repeats: int) -> list[Row]:
    rows = []
    rng = np.random.default_rng(0)
    fast_low = fast_bfloat16()
    for k, d in ((3, 256), (7, 300)):
        tags = torch.from_numpy(unit_rows(rng.normal(size=(100_000, d))))
        tags_np = tags.numpy()
        low = LowPrecision.of(tags, require_fast=False)
        vectors = torch.from_numpy(rng.normal(size=(1, k, d)).astype(np.float32))
        a_np = vectors[0].numpy().T.copy()  # (D, K), the authors' layout
        expected = top_k_indices(score_tags(vectors, tags, "max")[0][0], 10)
        for name, matrix in (("float32", None), ("bfloat16", low)):
            if not torch.equal(top_tags(vectors, tags, 10, "max", matrix)[0][0], expected):
                raise SystemExit(f"section 4: top_tags ({name} pass) does not rank as the float32 path")

        def every_score(i: int) -> None:
            with torch.inference_mode():
                scores, _ = score_tags(vectors, tags, "max")
                top_k_indices(scores[0], 10)

        def numpy_style(i: int) -> None:
            np.argsort(-(tags_np @ a_np).max(axis=1))[:10]

        base = f"numpy (N,D)@(D,K), max, argsort; K={k}, D={d}"
        names = {"numpy": base,
                 "score_tags": f"score_tags + top-10 (every score and winner, float32); K={k}, D={d}",
                 "top_tags_f32": f"top_tags (float32 scores, winners for the top 10 only); K={k}, D={d}",
                 "top_tags_bf16": f"top_tags given the bfloat16 copy (its pass from B*K >= {LOW_PRECISION_FROM_ROWS}, "
                                  f"candidates in float32); K={k}, D={d}",
                 "read_matrix": f"memory bound: read the float32 matrix once (sum); K={k}, D={d}",
                 "read_bf16": f"read its bfloat16 copy once (sum); K={k}, D={d}"}
        cases = {names["numpy"]: numpy_style, names["score_tags"]: every_score,
                 names["top_tags_f32"]: lambda i: top_tags(vectors, tags, 10),
                 names["top_tags_bf16"]: lambda i: top_tags(vectors, tags, 10, low=low),
                 names["read_matrix"]: lambda i: tags.sum(), names["read_bf16"]: lambda i: low.matrix.sum()}
        times = interleaved(cases, repeats * 4, warmup=2, settle_s=BLAS_SETTLE_S)
        limit = SCORING_TARGET_MS[(k, d)]
        targeted = names["top_tags_bf16"] if fast_low else names["top_tags_f32"]
        found = rows_from("4 scoring 100k tags", times, base,
                          {targeted: (f"<= {limit:g} ms", lambda m, r, lim=limit: m <= lim)}, with_p90=list(times))
        for row, key in zip(found, names):
            row.key = f"scoring.k{k}_d{d}.{key}.median_ms"
        rows += found
    rows += section_search(repeats)
    space = load_word_space("wordllama")
    _, vocab, _ = default_parts()
    nouns = vocab.tags
    same = typed_tags(-50, 9, 1000, nouns)
    space.embed(same)
    fresh_name = "embed 1,000 new typed tags (WordLlama)"
    times = interleaved({fresh_name: lambda i: space.embed(typed_tags(i, 8, 1000, nouns)),
                         "the same 1,000 again (cached)": lambda i: space.embed(same)}, repeats * 2, warmup=1)
    rows += rows_from("4 typed tags", times, fresh_name,
                      {fresh_name: ("< 20 ms", lambda m, r: m < 20.0),
                       "the same 1,000 again (cached)": ("~ 0", None)}, with_p90=list(times))
    return rows


def section_search(repeats: int) -> list[Row]:
    """One typed tag against a 100,000-photo index (K=7, D=300, stored as float16 like a real
    index): the float32 scan (a first query) and the bfloat16 pass (every query after)."""
    from sdl_core.search import query
    n, k, d = SEARCH_SHAPE
    gen = torch.Generator().manual_seed(0)
    vectors = torch.nn.functional.normalize(torch.randn(n, k, d, generator=gen), dim=-1).half().float()
    w = torch.nn.functional.normalize(torch.randn(1, d, generator=gen), dim=-1)
    full = (lambda i: query.top_rows(query.combine(query.tag_scores(vectors, w, "max"), "any")[0], 20))
    query.low_precision_of(vectors)  # the first query only registers the index...
    low = query.low_precision_of(vectors)  # ...the second makes the bfloat16 copy (None where it would not pay)
    fast = (lambda i: query.best_rows(vectors, w, "max", "any", 20))
    if not torch.equal(full(0), fast(0)):
        raise SystemExit("section 4: the bfloat16 search pass does not find the float32 scan's photos")
    second = ("1 tag, bfloat16 pass + candidates in float32 (every query after the first)" if low is not None
              else "1 tag, every query after the first (no native bfloat16 here: float32 again)")
    names = {"float32": "1 tag, float32 scan of every photo (a first query)", "bf16": second,
             "read_index": "memory bound: read the float32 vectors once (840 MB, sum)"}
    cases = {names["float32"]: full, names["bf16"]: fast, names["read_index"]: lambda i: vectors.sum()}
    if low is not None:
        names["read_bf16"] = "read the bfloat16 copy once (420 MB, sum)"
        cases[names["read_bf16"]] = lambda i: low.matrix.sum()
    times = interleaved(cases, repeats * 2, warmup=1)
    targeted = names["bf16"]
    found = rows_from("4 search 100k photos, K=7, D=300", times, names["float32"],
                      {targeted: (f"<= {SEARCH_TARGET_MS:g} ms", lambda m, r: m <= SEARCH_TARGET_MS)},
                      with_p90=list(times))
    for row, key in zip(found, names):
        row.key = f"search.n100k_k7_d300.{key}.median_ms"
    return found


# --- section 5 and search: the other helpers' benchmarks -------------------------------

def run_other(script: str, args: Sequence[str] = ()) -> str:
    """Run ``benchmarks/<script>`` (owned by the demo / search work) and return what it prints."""
    path = Path(__file__).with_name(script)
    if not path.is_file():
        return f"{script} is not there: nothing measured"
    out = subprocess.run([sys.executable, str(path), *args], cwd=ROOT, capture_output=True, text=True)
    text = out.stdout.strip()
    if out.returncode != 0:
        text += f"\n{script} exited with {out.returncode}: {out.stderr.strip()[-400:]}"
    return text


def demo_rows(text: str) -> list[Row]:
    """bench_demo.py --json's rows (one row saying why, when it did not finish)."""
    start = text.find("{")
    try:
        found = json.loads(text[start:]) if start >= 0 else None
    except json.JSONDecodeError:
        found = None
    if found is None:
        return [Row("5 demo (bench_demo.py)", f"did not finish: {text[-300:]}", float("nan"), "", key="demo.failed")]
    return [Row(**{**r, "median": float(r["median"])}) for r in found["rows"]]


# --- output ----------------------------------------------------------------------------

def _onnxruntime_version() -> str | None:
    try:
        import onnxruntime
    except ImportError:
        return None
    return onnxruntime.__version__


def machine() -> dict:
    return {"cpu_cores": os.cpu_count(), "torch_threads": torch.get_num_threads(), "torch": torch.__version__,
            "python": platform.python_version(), "platform": platform.platform(),
            "processor": platform.processor() or platform.machine(),
            "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),
            "onnxruntime": _onnxruntime_version(),
            "load_average_1m": round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None}


def row_key(row: Row) -> str:
    """A stable name for a row without one: section number, case words, unit."""
    words = "".join(c if c.isalnum() else " " for c in row.case.lower()).split()
    unit = {"ms": "median_ms", "img/s": "per_s", "%": "percent"}.get(row.unit, row.unit)
    return f"s{row.section.split()[0]}.{'_'.join(words[:8])}.{unit}"


def machine_line(info: dict) -> str:
    return " ".join(f"{k}={v}" for k, v in info.items())


def format_table(rows: list[Row]) -> str:
    lines = ["| section | case | median | p90 | vs baseline | target |", "|---|---|---|---|---|---|"]
    for r in rows:
        num = (lambda v: "" if v is None else f"{v:,.1f} {r.unit}" if v >= 10 else f"{v:.3g} {r.unit}")
        ratio = f"{r.ratio:.2f}x" if r.ratio is not None else ("baseline" if any(x.baseline == r.case for x in rows) else "")
        mark = "" if r.met is None else (" ✓" if r.met else " ✗")
        lines.append(f"| {r.section} | {r.case} | {num(r.median)} | {num(r.p90)} | {ratio} | {r.target}{mark} |")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer repeats (a smoke run, noisier)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of the table")
    parser.add_argument("--sections", default="1,2,3,4", help="comma-separated sections to run (default 1,2,3,4; "
                                                               "5 = the demo, also turned on by --demo)")
    parser.add_argument("--demo", action="store_true", help="also run section 5: benchmarks/bench_demo.py "
                                                                 "(starts the demo server and Chromium)")
    parser.add_argument("--search", action="store_true", help="also run benchmarks/bench_search.py")
    parser.add_argument("--repeats", type=int, help="rounds per section (default 7, --quick 3)")
    parser.add_argument("--cold-cli", action="store_true", help="section 3: also time one cold CLI subprocess")
    parser.add_argument("--table-from", type=Path, metavar="JSON",
                        help="print the machine line and table of a saved --json run (the README's), measure nothing")
    args = parser.parse_args(argv)
    if args.table_from:
        saved = json.loads(args.table_from.read_text(encoding="utf-8"))
        print(machine_line(saved["machine"]))
        print(format_table([Row(**r) for r in saved["rows"]]))
        return 0
    repeats = args.repeats or (3 if args.quick else 7)
    sections = {s.strip() for s in args.sections.split(",") if s.strip()} | ({"5"} if args.demo else set())
    rows: list[Row] = []
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="sdl-bench-") as tmp:
        steps = [("1", lambda: section_sdl(repeats)), ("2", lambda: section_default(repeats * 3)),
                 ("3", lambda: section_cli(max(2, repeats // 2), Path(tmp), args.cold_cli)),
                 ("4", lambda: section_scoring(repeats))]
        for key, step in steps:
            if key in sections:
                t0 = time.perf_counter()
                rows += step()
                print(f"section {key} done in {time.perf_counter() - t0:.0f} s", file=sys.stderr)
    others = {}
    if "5" in sections:
        rows += demo_rows(run_other("bench_demo.py", ["--requests", "20", "--json"]))
    if args.search:
        others["search (benchmarks/bench_search.py)"] = run_other("bench_search.py")
    for row in rows:
        row.key = row.key or row_key(row)
    info = {**machine(), "repeats": repeats, "wall_s": round(time.perf_counter() - started, 1)}
    if args.json:
        json.dump({"machine": info, "rows": [asdict(r) for r in rows], "other": others}, sys.stdout, indent=2)
        print()
    else:
        print(machine_line(info))
        print("Medians after warm-up; each case interleaved with its baseline; ratio = median of per-round "
              "baseline/case (speed-up).")
        print(format_table(rows))
        for name, text in others.items():
            print(f"\n{name}:\n{text}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
