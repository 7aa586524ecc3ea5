"""Untrusted files never run code; broken or mismatched ones give one clear message.

Malicious files carry a pickle ``__reduce__`` payload that would create a marker file.
Each test first proves the payload works (plain pickle / ``weights_only=False`` creates
its marker), then that every loading path of ours refuses it and the marker never
appears: ``safe_load_pickle``, ``Vocabulary.from_authors_folder``, ``import_official``,
``Tagger.from_pretrained`` and the CLI.
"""
from __future__ import annotations

import json
import os
import pickle
import random
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from sdl_core import cli
from sdl_core.checkpoint import load_checkpoint, save_checkpoint
from sdl_core.official import import_official
from sdl_core.errors import CheckpointError, ModelNotFoundError, SDLError, VocabularyError
from sdl_core.safe_pickle import safe_load_pickle
from sdl_core.tagger import Tagger
from sdl_core.vocab import Vocabulary
from tests.conftest import REFERENCE, make_photo, make_sdl_model, make_vocab, needs_reference

N_CLASSES, D = 8, 16
TAGS = [f"tag{i}" for i in range(N_CLASSES)]


class ExecPayload:
    """Unpickling this runs ``exec``: it would write the marker file."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return exec, (f"open({self.marker!r}, 'w').write('code ran')",)


class SystemPayload(ExecPayload):
    """Unpickling this runs a shell command (``os.system``)."""

    def __reduce__(self):
        return os.system, (f"touch '{self.marker}'",)


class NumpyGadget(ExecPayload):
    """A numpy function that evaluates a string: a known gadget, not allowed either."""

    def __reduce__(self):
        from numpy.testing._private.utils import runstring
        return runstring, (f"open({self.marker!r}, 'w').write('code ran')", {})


PAYLOADS = [ExecPayload, SystemPayload, NumpyGadget]


def write_authors_folder(folder: Path, **override) -> Path:
    """A fake data folder in the authors' formats (dict of classes, list, word-vector array)."""
    folder.mkdir(parents=True, exist_ok=True)
    vectors = np.random.default_rng(0).normal(size=(D, N_CLASSES)).astype(np.float32)
    files = {"classes.pickle": dict(enumerate(TAGS)), "unseen_classes.pickle": TAGS[-2:],
             "wordvec_array.pickle": {"wordvec_array": vectors}}
    files.update(override)
    for name, obj in files.items():
        (folder / name).write_bytes(obj if isinstance(obj, bytes) else pickle.dumps(obj, protocol=4))
    return folder


@pytest.fixture
def data_dir(tmp_path) -> Path:
    return write_authors_folder(tmp_path / "data")


@pytest.fixture
def marker(tmp_path) -> Path:
    return tmp_path / "MARKER_code_ran"


def prove_payload_works(payload: ExecPayload, load) -> None:
    """The control: the same payload, loaded unsafely, does create its marker."""
    control = Path(payload.marker)
    assert not control.exists()
    try:
        load()
    except Exception:  # noqa: BLE001 - the object the payload returns need not fit the container
        pass
    assert control.exists(), "the payload is not a real test: it did not run"
    control.unlink()


# --- the restricted unpickler -----------------------------------------------------------
@pytest.mark.parametrize("protocol", [0, 2, 4, 5])
@pytest.mark.parametrize("payload", PAYLOADS, ids=lambda p: p.__name__)
def test_safe_load_pickle_refuses_code(tmp_path, marker, payload, protocol):
    evil = tmp_path / "classes.pickle"
    evil.write_bytes(pickle.dumps({0: "cat", 1: payload(marker)}, protocol=protocol))
    prove_payload_works(payload(tmp_path / "control"),
                        lambda: pickle.loads(pickle.dumps(payload(tmp_path / "control"), protocol=protocol)))
    with pytest.raises(VocabularyError, match=r"classes.pickle: unsafe or invalid pickle: refusing to load"):
        safe_load_pickle(evil)
    assert not marker.exists()


def test_payload_hidden_in_a_numpy_object_array(tmp_path, marker):
    arr = np.array([1.0, ExecPayload(marker)], dtype=object)
    evil = tmp_path / "wordvec_array.pickle"
    evil.write_bytes(pickle.dumps({"wordvec_array": arr}, protocol=2))
    with pytest.raises(VocabularyError, match="refusing to load builtins.exec"):
        safe_load_pickle(evil)
    assert not marker.exists()


def test_safe_load_pickle_reads_plain_data(tmp_path):
    data = {"a": [1, 2.5, "x", None, True], "b": np.arange(6, dtype=np.float16).reshape(2, 3),
            "c": {1, 2}, "d": np.float32(3.0), "e": b"bytes"}
    for protocol in (2, 4, 5):
        path = tmp_path / f"ok{protocol}.pickle"
        path.write_bytes(pickle.dumps(data, protocol=protocol))
        got = safe_load_pickle(path)
        assert got["a"] == data["a"] and got["c"] == {1, 2} and got["e"] == b"bytes"
        np.testing.assert_array_equal(got["b"], data["b"])


@needs_reference
def test_safe_load_pickle_reads_the_authors_files():
    files = sorted(REFERENCE.rglob("*.pickle"))
    assert files
    for path in files:
        assert safe_load_pickle(path) is not None


def test_damaged_pickles_are_clear_errors(tmp_path):
    """Fuzzed pickles (bytes changed, cut, inserted): always VocabularyError, nothing else."""
    rng = random.Random(0)
    seed = pickle.dumps({"wordvec_array": np.ones((3, 4), np.float32), "names": ["a", "b"]}, protocol=4)
    path = tmp_path / "fuzz.pickle"
    kinds = set()
    for _ in range(300):
        data = bytearray(seed)
        for _ in range(rng.randint(1, 3)):
            if not data:
                break
            at = rng.randrange(len(data))
            if rng.random() < 0.6:
                data[at] = rng.randrange(256)
            else:
                data = data[:at]
        path.write_bytes(bytes(data) or b"\x80")
        try:
            safe_load_pickle(path)
        except VocabularyError as exc:
            kinds.add(str(exc).split("(")[0])
    assert kinds  # most mutations break the file; none may escape as another exception
    for junk in (b"", b"\x80\x05", b"not a pickle at all", b"\x80\x04\x95" + b"\xff" * 8):
        path.write_bytes(junk)
        with pytest.raises(VocabularyError, match="fuzz.pickle"):
            safe_load_pickle(path)
    with pytest.raises(VocabularyError, match="cannot read"):
        safe_load_pickle(tmp_path / "missing.pickle")


@pytest.mark.parametrize("name", ["classes.pickle", "unseen_classes.pickle", "wordvec_array.pickle"])
def test_authors_folder_with_a_malicious_file(tmp_path, marker, name):
    folder = write_authors_folder(tmp_path / "data", **{name: pickle.dumps(ExecPayload(marker), protocol=4)})
    with pytest.raises(VocabularyError, match=f"{name}: unsafe or invalid pickle"):
        Vocabulary.from_authors_folder(folder)
    assert not marker.exists()


def test_authors_folder_good_and_malformed(tmp_path, data_dir):
    vocab = Vocabulary.from_authors_folder(data_dir)
    assert vocab.tags == TAGS and vocab.unseen_tags == TAGS[-2:] and vocab.dim == D
    bad_shape = write_authors_folder(tmp_path / "shape", **{"wordvec_array.pickle": np.ones((3, 5), np.float32)})
    with pytest.raises(VocabularyError, match=r"shape \(3, 5\) do not fit 8 classes"):
        Vocabulary.from_authors_folder(bad_shape)
    bad_type = write_authors_folder(tmp_path / "type", **{"classes.pickle": ["a", "b"]})
    with pytest.raises(VocabularyError, match="classes.pickle must be a dict"):
        Vocabulary.from_authors_folder(bad_type)
    (data_dir / "unseen_classes.pickle").unlink()
    with pytest.raises(VocabularyError, match="missing the authors' data files"):
        Vocabulary.from_authors_folder(data_dir)


# --- the authors' .pth: weights_only=True ---------------------------------------------------
def evil_pth(path: Path, marker: Path, legacy: bool = False, payload=ExecPayload) -> Path:
    obj = {"model": {"embedding.weight": payload(marker), "conv1.weight": torch.zeros(2)},
           "num_classes": N_CLASSES}
    torch.save(obj, str(path), _use_new_zipfile_serialization=not legacy)
    return path


@pytest.mark.parametrize("legacy", [False, True], ids=["zip", "legacy"])
@pytest.mark.parametrize("payload", [ExecPayload, SystemPayload], ids=lambda p: p.__name__)
def test_import_official_refuses_code(tmp_path, data_dir, marker, legacy, payload):
    control = evil_pth(tmp_path / "control.pth", tmp_path / "control", legacy, payload)
    prove_payload_works(payload(tmp_path / "control"),
                        lambda: torch.load(str(control), map_location="cpu", weights_only=False))
    evil = evil_pth(tmp_path / "NUS_mtresnet_224.pth", marker, legacy, payload)
    out = tmp_path / "out.safetensors"
    with pytest.raises(CheckpointError, match=r"NUS_mtresnet_224.pth: refused or unreadable with weights_only=True"):
        import_official(evil, data_dir, out)
    assert not marker.exists() and not out.exists()


def test_import_official_asks_for_weights_only(tmp_path, data_dir, monkeypatch):
    calls = []
    real_load = torch.load

    def spy(*args, **kwargs):
        calls.append(kwargs.get("weights_only"))
        return real_load(*args, **kwargs)

    monkeypatch.setattr(torch, "load", spy)
    path = tmp_path / "plain.pth"
    torch.save({"model": {"embedding.weight": torch.zeros(5, 4)}, "num_classes": N_CLASSES}, str(path))
    with pytest.raises(CheckpointError):
        import_official(path, data_dir)
    assert calls == [True]


def test_tagger_from_pretrained_refuses_code(tmp_path, data_dir, marker):
    evil = evil_pth(tmp_path / "model.pth", marker)
    with pytest.raises(CheckpointError, match="weights_only=True"):
        Tagger.from_pretrained(evil, data_dir=data_dir)
    with pytest.raises(ModelNotFoundError, match="give their data folder"):
        Tagger.from_pretrained(evil)
    raw = pickle.dumps(ExecPayload(marker))
    for name in ("model.pickle", "model.safetensors", "model.bin", "model.ckpt"):
        path = tmp_path / name
        path.write_bytes(raw)
        with pytest.raises(SDLError):
            Tagger.from_pretrained(path, data_dir=data_dir)
    assert not marker.exists()


def test_cli_refuses_code_in_one_line(tmp_path, data_dir, marker, capsys):
    evil = evil_pth(tmp_path / "NUS_mtresnet_224.pth", marker)
    photo = tmp_path / "photo.jpg"
    make_photo().save(photo)
    out = tmp_path / "converted.safetensors"
    for argv in (["tag", str(photo), "--model", str(evil), "--data-dir", str(data_dir)],
                 ["import-official", str(evil), str(data_dir), str(out)]):
        assert cli.main(argv) == cli.EXIT_USAGE
        captured = capsys.readouterr()
        assert captured.out == "" and captured.err.count("\n") == 1
        assert captured.err.startswith("error: NUS_mtresnet_224.pth: refused or unreadable with weights_only=True")
    bad_folder = write_authors_folder(tmp_path / "evil-data", **{"classes.pickle": pickle.dumps(ExecPayload(marker))})
    plain = tmp_path / "plain.pth"
    torch.save({"model": {"embedding.weight": torch.zeros(2 * D, 4)}}, str(plain))
    assert cli.main(["import-official", str(plain), str(bad_folder), str(out)]) == cli.EXIT_USAGE
    assert "classes.pickle: unsafe or invalid pickle" in capsys.readouterr().err
    assert not marker.exists() and not out.exists()


# --- the authors' .pth: broken or mismatched ------------------------------------------------
def authors_pth(path: Path, state: dict | None = None, **extra) -> Path:
    state = state if state is not None else {"embedding.weight": torch.zeros(3 * D, 2048)}
    torch.save({"model": state, "num_classes": N_CLASSES, **extra}, str(path))
    return path


@pytest.mark.parametrize("make,message", [
    (lambda p: p.write_bytes(b""), "refused or unreadable"),
    (lambda p: p.write_bytes(authors_pth(p).read_bytes()[:300]), "refused or unreadable"),
    (lambda p: p.write_bytes(pickle.dumps({"model": {}})), "refused or unreadable"),  # not torch's format
    (lambda p: torch.save([1, 2, 3], str(p)), "expected the authors' dict"),
    (lambda p: torch.save({"state_dict": {}}, str(p)), "expected the authors' dict"),
    (lambda p: authors_pth(p, {"embedding.weight": [1.0, 2.0]}), "embedding.weight is not a tensor"),
    (lambda p: authors_pth(p, {"embedding.weight": torch.zeros(3 * D, 2048), "conv1.weight": "x"}),
     "conv1.weight is not a tensor"),
    (lambda p: authors_pth(p, {"embedding.weight": torch.zeros(7 * 300, 2048)}), r"not a multiple of D=16"),
    (lambda p: authors_pth(p, num_classes=1006), "trained on 1006 classes"),
    (lambda p: authors_pth(p, num_classes="many"), "num_classes"),
], ids=["empty", "truncated", "plain_pickle", "list", "no_model_key", "tensor_is_list", "value_is_str",
        "wrong_D", "wrong_class_count", "num_classes_not_int"])
def test_broken_authors_checkpoints(tmp_path, data_dir, make, message):
    path = tmp_path / "NUS_mtresnet_224.pth"
    make(path)
    out = tmp_path / "out.safetensors"
    with pytest.raises(CheckpointError, match=message):
        import_official(path, data_dir, out)
    assert not out.exists()


def test_authors_checkpoint_of_another_architecture(tmp_path, data_dir):
    """A ResNet state dict with an SDL head: refused with what is missing, no model returned."""
    state = {"embedding.weight": torch.zeros(3 * D, 2048), "conv1.weight": torch.zeros(64, 3, 7, 7),
             "layer1.0.conv1.weight": torch.zeros(64, 64, 1, 1), "fc.weight": torch.zeros(1000, 2048)}
    path = authors_pth(tmp_path / "resnet.pth", state)
    with pytest.raises(CheckpointError, match=r"weights do not fit the tresnet_m SDL model: \d+ missing"):
        import_official(path, data_dir, tmp_path / "out.safetensors")
    with pytest.raises(CheckpointError, match=r"expected K\*D = 64"):
        import_official(authors_pth(tmp_path / "k.pth"), data_dir, k=4)
    assert not (tmp_path / "out.safetensors").exists()


# --- our safetensors checkpoints: broken or mismatched --------------------------------------
@pytest.fixture(scope="module")
def good_ckpt(tmp_path_factory) -> Path:
    return save_checkpoint(make_sdl_model(), make_vocab(), tmp_path_factory.mktemp("good") / "good.safetensors")


def rewrite(src: Path, dst: Path, config=None, tensors=None, meta=None) -> Path:
    """Copy a checkpoint, changing its config (dict edits), tensors or metadata (None drops a key)."""
    with safe_open(str(src), "pt") as fh:
        metadata = dict(fh.metadata())
    state = load_file(str(src))
    if config is not None:
        cfg = json.loads(metadata["config"])
        cfg.update(config)
        metadata["config"] = json.dumps(cfg)
    if tensors is not None:
        state = tensors(state)
    metadata.update(meta or {})
    save_file(state, str(dst), metadata={k: v for k, v in metadata.items() if v is not None})
    return dst


MISMATCHES = [
    ("other_backbone", dict(config={"backbone": "resnet18"}),
     r"good.safetensors: weights do not fit the sdl model 'resnet18'"),
    ("unknown_backbone", dict(config={"backbone": "no_such_net_v9"}), r"unknown timm backbone 'no_such_net_v9'"),
    ("wrong_k", dict(config={"k": 4}), r"K=4.*another shape"),
    ("wrong_d", dict(config={"word_space": {"name": "toy-space-32", "dim": 32}}), r"vocabulary is 16-d but the config "
                                                                                  r"says D=32"),
    ("unknown_kind", dict(config={"kind": "vit-magic"}), r"unknown model kind 'vit-magic'"),
    ("k_zero", dict(config={"k": 0}), r"metadata is incomplete or invalid.*K"),
    ("bad_input_size", dict(config={"preprocess": {"size": 5}}), r"metadata is incomplete or invalid.*input size"),
    ("unknown_config_field", dict(config={"layers": 3}), r"metadata is incomplete or invalid"),
    ("config_not_json", dict(meta={"config": "{not json"}), r"metadata is incomplete or invalid"),
    ("config_missing", dict(meta={"config": None}), r"metadata is incomplete or invalid"),
    ("tags_not_list", dict(meta={"vocab_tags": "7"}), r"metadata is incomplete or invalid"),
    ("tag_count_differs", dict(meta={"vocab_tags": json.dumps(["cat", "dog"])}),
     r"good.safetensors: its vocabulary is invalid: vocabulary parts disagree"),
    ("duplicate_tags", dict(meta={"vocab_tags": json.dumps(["cat"] * 8)}), r"vocabulary has duplicate tags"),
    ("newer_format", dict(meta={"format_version": "9"}), r"format version '9'"),
    ("not_ours", dict(meta={"format": "something-else"}), r"not an SDL tagger checkpoint"),
    ("missing_tensor", dict(tensors=lambda s: {k: v for k, v in s.items() if k != "model.head.weight"}),
     r"1 missing \(e.g. \['head.weight'\]\)"),
    ("extra_tensor", dict(tensors=lambda s: {**s, "model.secret": torch.zeros(1)}), r"1 unexpected"),
    ("no_vocab_vectors", dict(tensors=lambda s: {k: v for k, v in s.items() if k != "vocab.vectors"}),
     r"metadata is incomplete or invalid"),
]


@pytest.mark.parametrize("changes,message", [m[1:] for m in MISMATCHES], ids=[m[0] for m in MISMATCHES])
def test_mismatched_checkpoints_one_clear_message(tmp_path, good_ckpt, changes, message):
    path = rewrite(good_ckpt, tmp_path / "good.safetensors", **changes)
    with pytest.raises(CheckpointError, match=message):
        load_checkpoint(path)
    with pytest.raises(CheckpointError, match=message):
        Tagger.from_pretrained(path)


def test_truncated_and_corrupt_checkpoints(tmp_path, good_ckpt):
    data = good_ckpt.read_bytes()
    header = struct.unpack("<Q", data[:8])[0]
    path = tmp_path / "cut.safetensors"
    for at in (0, 4, 8, 8 + header // 2, 8 + header, 8 + header + 100, len(data) - 1):
        path.write_bytes(data[:at])
        with pytest.raises(CheckpointError, match=r"cut.safetensors: (not a readable|.*empty)"):
            load_checkpoint(path)
    path.write_bytes(struct.pack("<Q", 2**40) + data[8:])  # header length says 1 TB
    with pytest.raises(CheckpointError, match="not a readable safetensors checkpoint"):
        load_checkpoint(path)
    rng = random.Random(1)
    for _ in range(100):  # header bytes changed at random: never another exception type
        damaged = bytearray(data)
        damaged[rng.randrange(8, 8 + header)] = rng.randrange(256)
        path.write_bytes(bytes(damaged))
        try:
            load_checkpoint(path)
        except CheckpointError:
            pass
    (tmp_path / "folder.safetensors").mkdir()
    with pytest.raises(CheckpointError, match="no such checkpoint file"):
        load_checkpoint(tmp_path / "folder.safetensors")


def test_checkpoints_are_read_without_pickle(good_ckpt, monkeypatch):
    """Loading our format never reaches pickle or torch.load."""
    def forbidden(*args, **kwargs):
        raise AssertionError("pickle used while loading a safetensors checkpoint")

    monkeypatch.setattr(pickle, "load", forbidden)
    monkeypatch.setattr(pickle, "loads", forbidden)
    monkeypatch.setattr(pickle, "Unpickler", forbidden)
    monkeypatch.setattr(torch, "load", forbidden)
    model, vocab = load_checkpoint(good_ckpt)
    assert len(vocab) == 8 and model.config.k == 3


def test_cli_mismatched_checkpoint_one_line(tmp_path, good_ckpt, capsys):
    path = rewrite(good_ckpt, tmp_path / "k4.safetensors", config={"k": 4})
    photo = tmp_path / "photo.jpg"
    make_photo().save(photo)
    assert cli.main(["tag", str(photo), "--model", str(path)]) == cli.EXIT_USAGE
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err.count("\n") == 1
    assert captured.err.startswith("error: k4.safetensors: weights do not fit the sdl model 'test_resnet' (K=4, D=16)")
