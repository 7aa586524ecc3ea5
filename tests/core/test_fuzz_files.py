"""Fuzzing the two safetensors readers: checkpoints (``read_checkpoint``/``load_checkpoint``)
and search indexes (``load_index``).

Mutations are structured (a lying header length, truncation, absurd shapes and dtypes,
lying data offsets, metadata replaced by any JSON, byte flips in the header) and
explicit worst cases (deep JSON, a config declaring a huge K, D or class count). Each
file must load, or be refused with the reader's own ``SDLError``; a separate process
under an address-space cap proves the worst cases allocate nothing big.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, strategies as st

from sdl_core.checkpoint import load_checkpoint, save_checkpoint
from sdl_core.config import ModelConfig, PreprocessConfig, WordSpaceInfo
from sdl_core.errors import CheckpointError
from sdl_core.search import FileEntry, ModelIdentity, SearchIndex, SearchIndexError, load_index
from tests.conftest import ROOT, make_sdl_model, make_vocab
from tests.fuzzing import (DTYPES, FUZZ, deep_json, expect_sdl_error_or_value, join_safetensors, json_values,
                           shapes, split_safetensors)


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, bytes]:
    """The bytes of a good checkpoint (tiny SDL model) and of a good index (3 photos)."""
    folder = tmp_path_factory.mktemp("fuzz-files")
    ckpt = save_checkpoint(make_sdl_model(k=2, d=8, size=32), make_vocab(d=8), folder / "good.safetensors")
    cfg = ModelConfig(kind="sdl", backbone="test_resnet", k=2, word_space=WordSpaceInfo("toy-space-8", 8),
                      preprocess=PreprocessConfig(size=32), name="toy")
    identity = ModelIdentity("toy", cfg.to_json(), "0" * 32, str(ckpt))
    entries = [FileEntry(f"p{i}.jpg", 100 + i, 10**18 + i) for i in range(3)]
    vectors = torch.from_numpy(np.random.default_rng(0).normal(size=(3, 2, 8)).astype(np.float32))
    index = SearchIndex(folder, identity, entries, vectors, make_vocab(d=8)).save(folder / "index.safetensors")
    return {"checkpoint": ckpt.read_bytes(), "index": index.read_bytes()}


def load_bytes(kind: str, data: bytes, folder: Path) -> None:
    """Read ``data`` as a checkpoint (and build its model) or as an index: loaded, or the reader's SDLError."""
    path = folder / f"fuzz-{kind}.safetensors"
    path.write_bytes(data)
    if kind == "checkpoint":
        expect_sdl_error_or_value(lambda: load_checkpoint(path), CheckpointError)
    else:
        expect_sdl_error_or_value(lambda: load_index(path), SearchIndexError)


def test_good_files_load(files, tmp_path) -> None:
    """The fuzzed files start from files that load (else every mutation would be 'refused')."""
    (tmp_path / "c.safetensors").write_bytes(files["checkpoint"])
    (tmp_path / "i.safetensors").write_bytes(files["index"])
    assert load_checkpoint(tmp_path / "c.safetensors")[0].config.k == 2
    assert len(load_index(tmp_path / "i.safetensors")) == 3


kinds = st.sampled_from(["checkpoint", "index"])


@FUZZ
@given(kind=kinds, cut=st.integers(min_value=0, max_value=10**6), declared=st.integers(0, 2**64 - 1))
def test_truncated_or_lying_header_length(files, tmp_path_factory, kind, cut, declared) -> None:
    raw = files[kind]
    folder = tmp_path_factory.getbasetemp()
    load_bytes(kind, raw[:cut % (len(raw) + 1)], folder)
    load_bytes(kind, declared.to_bytes(8, "little") + raw[8:], folder)


@FUZZ
@given(kind=kinds, data=st.data())
def test_lying_tensor_entries(files, tmp_path_factory, kind, data) -> None:
    """One tensor's dtype, shape or data offsets replaced by something that does not add up."""
    header, body = split_safetensors(files[kind])
    name = data.draw(st.sampled_from(sorted(k for k in header if k != "__metadata__")))
    field = data.draw(st.sampled_from(["dtype", "shape", "data_offsets", "all"]))
    entry = dict(header[name])
    if field in ("dtype", "all"):
        entry["dtype"] = data.draw(st.sampled_from(DTYPES) | json_values)
    if field in ("shape", "all"):
        entry["shape"] = data.draw(shapes)
    if field in ("data_offsets", "all"):
        entry["data_offsets"] = data.draw(st.lists(st.integers(-2, 2**64 - 1), max_size=3) | json_values)
    header[name] = entry
    load_bytes(kind, join_safetensors(header, body), tmp_path_factory.getbasetemp())


@FUZZ
@given(kind=kinds, data=st.data())
def test_consistent_but_wrong_dtype_or_shape(files, tmp_path_factory, kind, data) -> None:
    """A tensor re-declared with another dtype and a shape that fits its bytes: safetensors accepts
    the file, so our reader must judge the contents."""
    header, body = split_safetensors(files[kind])
    name = data.draw(st.sampled_from(sorted(k for k in header if k != "__metadata__")))
    start, end = header[name]["data_offsets"]
    dtype, size = data.draw(st.sampled_from([("U8", 1), ("BOOL", 1), ("I16", 2), ("F16", 2), ("BF16", 2),
                                             ("I32", 4), ("F32", 4), ("I64", 8), ("F64", 8), ("F8_E4M3", 1)]))
    count = (end - start) // size
    if (end - start) % size:
        return
    shape = data.draw(st.sampled_from([[count], [], [1, count], [count, 1, 1]] if count else [[0], [0, 5]]))
    if int(np.prod(shape)) != count:
        return
    header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [start, end]}
    load_bytes(kind, join_safetensors(header, body), tmp_path_factory.getbasetemp())


@FUZZ
@given(kind=kinds, data=st.data())
def test_metadata_replaced(files, tmp_path_factory, kind, data) -> None:
    """A metadata value (config, model identity, vocabulary, failed list...) replaced by any JSON
    or text, or one field of the config or identity JSON replaced."""
    header, body = split_safetensors(files[kind])
    meta = dict(header["__metadata__"])
    key = data.draw(st.sampled_from(sorted(meta)))
    how = data.draw(st.sampled_from(["json", "text", "field", "drop"]))
    if how == "json":
        meta[key] = json.dumps(data.draw(json_values))
    elif how == "text":
        meta[key] = data.draw(st.text(max_size=50))
    elif how == "drop":
        del meta[key]
    else:
        key = "config" if kind == "checkpoint" else "model"
        value = json.loads(meta[key])
        target = value if kind == "checkpoint" else value["config"]
        field = data.draw(st.sampled_from(sorted(target) + ["word_space.dim", "preprocess.size", "extra.num_classes"]))
        new = data.draw(json_values | st.integers(min_value=-1, max_value=2**40))
        outer, _, inner = field.partition(".")
        if inner:
            target[outer] = {**(target.get(outer) or {}), inner: new} if isinstance(target.get(outer), dict) else new
        else:
            target[outer] = new
        meta[key] = json.dumps(value)
    header["__metadata__"] = meta
    load_bytes(kind, join_safetensors(header, body), tmp_path_factory.getbasetemp())


@FUZZ
@given(kind=kinds, flips=st.lists(st.tuples(st.integers(0, 10**6), st.integers(1, 255)), min_size=1, max_size=8))
def test_header_byte_flips(files, tmp_path_factory, kind, flips) -> None:
    raw = bytearray(files[kind])
    (n,) = np.frombuffer(raw[:8], "<u8")
    for at, xor in flips:
        raw[8 + at % int(n)] ^= xor
    load_bytes(kind, bytes(raw), tmp_path_factory.getbasetemp())


# --- explicit worst cases, with memory measured in a capped process ----------------------------

def worst_cases(raw_ckpt: bytes, raw_index: bytes) -> dict[str, tuple[str, bytes]]:
    """name -> (kind, bytes): the files a hostile uploader or a broken disk would make."""
    ckpt_header, ckpt_body = split_safetensors(raw_ckpt)
    index_header, index_body = split_safetensors(raw_index)

    def with_config(**changes) -> bytes:
        header = json.loads(json.dumps(ckpt_header))
        config = json.loads(header["__metadata__"]["config"])
        for key, value in changes.items():
            config[key] = value
        header["__metadata__"]["config"] = json.dumps(config)
        return join_safetensors(header, ckpt_body)

    def with_meta(header: dict, body: bytes, key: str, value: str) -> bytes:
        header = json.loads(json.dumps(header))
        header["__metadata__"][key] = value
        return join_safetensors(header, body)

    name = sorted(k for k in index_header if k != "__metadata__")[0]
    huge_shape = json.loads(json.dumps(index_header))
    huge_shape[name]["shape"] = [2**20, 2**20, 2**10]
    return {
        "ckpt_10gb_head": ("checkpoint", with_config(k=3_300_000)),  # 96 features x K*D=26.4M floats
        "ckpt_huge_dim": ("checkpoint", with_config(word_space={"name": "x", "dim": 10**8})),
        "ckpt_conse_huge_classes": ("checkpoint", with_config(kind="conse", extra={"num_classes": 2_000_000})),
        "ckpt_deep_config": ("checkpoint", with_meta(ckpt_header, ckpt_body, "config", deep_json(100_000))),
        "ckpt_deep_tags": ("checkpoint", with_meta(ckpt_header, ckpt_body, "vocab_tags", deep_json(100_000, "dict"))),
        "ckpt_header_length_10gb": ("checkpoint", (10 * 2**30).to_bytes(8, "little") + raw_ckpt[8:]),
        "ckpt_deep_header": ("checkpoint", join_safetensors(b"[" * 100_000 + b"]" * 100_000, b"")),
        "index_deep_model": ("index", with_meta(index_header, index_body, "model", deep_json(100_000))),
        "index_deep_failed": ("index", with_meta(index_header, index_body, "failed", deep_json(100_000))),
        "index_huge_shape": ("index", join_safetensors(huge_shape, index_body)),
        "index_huge_declared_header": ("index", (2**63).to_bytes(8, "little") + raw_index[8:]),
    }


MEMORY_PROBE = textwrap.dedent("""
    import json, resource, sys
    from pathlib import Path
    sys.path.insert(0, sys.argv[1])
    from sdl_core.checkpoint import load_checkpoint
    from sdl_core.errors import SDLError
    from sdl_core.search import load_index
    import torch, timm  # loaded before the cap: their own size is not what is measured

    def rss_mb():
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    def vm_bytes():
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmSize:"):
                return int(line.split()[1]) * 1024
    cap = vm_bytes() + 2 * 2**30  # a 10 GB allocation fails here instead of swapping the machine
    resource.setrlimit(resource.RLIMIT_AS, (cap, resource.getrlimit(resource.RLIMIT_AS)[1]))
    out = {}
    for path in sorted(Path(sys.argv[2]).iterdir()):
        kind = path.name.split("-", 1)[0]
        before = rss_mb()
        try:
            (load_checkpoint if kind == "checkpoint" else load_index)(path)
            outcome = "loaded"
        except SDLError as exc:
            outcome = "SDLError: " + str(exc)[:200]
        except BaseException as exc:
            outcome = "OTHER " + type(exc).__name__ + ": " + str(exc)[:200]
        out[path.name] = {"outcome": outcome, "peak_growth_mb": rss_mb() - before}
    print(json.dumps(out))
""")


@pytest.mark.skipif(not Path("/proc/self/status").is_file(), reason="needs Linux /proc to measure memory")
def test_worst_cases_refused_without_big_allocations(files, tmp_path) -> None:
    """Each worst case is refused with the reader's own error, and the peak resident memory
    of the process grows by less than 200 MB while reading it (an address-space cap of
    +2 GB turns any runaway allocation into a failure instead of a frozen machine)."""
    folder = tmp_path / "cases"
    folder.mkdir()
    for name, (kind, data) in worst_cases(files["checkpoint"], files["index"]).items():
        (folder / f"{kind}-{name}.safetensors").write_bytes(data)
    proc = subprocess.run([sys.executable, "-c", MEMORY_PROBE, str(ROOT), str(folder)], capture_output=True,
                          text=True, timeout=240, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert len(report) == len(worst_cases(files["checkpoint"], files["index"]))
    wrong = {name: result for name, result in report.items()
             if not result["outcome"].startswith("SDLError: ") or result["peak_growth_mb"] >= 200}
    assert not wrong, wrong
