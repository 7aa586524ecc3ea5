"""``hf-hub:OWNER/REPO`` through huggingface_hub, against a loopback stand-in for the Hub."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from sdl_core import hub
from sdl_core.checkpoint import save_checkpoint
from sdl_core.errors import ModelNotFoundError
from tests.conftest import ROOT, make_photo, make_sdl_model, make_vocab
from tests.hub_standin import HubStandIn, Repo


@pytest.fixture
def standin(tmp_path):
    checkpoint = save_checkpoint(make_sdl_model(), make_vocab(), tmp_path / "toy.safetensors")
    with HubStandIn() as server:
        server.repos["alice/toy"] = Repo({hub.CHECKPOINT_FILE: checkpoint.read_bytes()}, commit="a" * 40)
        server.repos["alice/empty"] = Repo({}, commit="b" * 40)
        yield server


def run_tag(env: dict[str, str], image, model: str):
    command = [sys.executable, "-m", "sdl_core", "tag", str(image), "--model", model, "--json", "--top-k", "3"]
    return subprocess.run(command, capture_output=True, text=True, cwd=ROOT, env=env, timeout=300)


def test_tag_loads_from_the_hub_once_then_offline(standin, tmp_path):
    image = tmp_path / "photo.jpg"
    make_photo().save(image)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_ENDPOINT": standin.url, "HF_HOME": str(tmp_path / "hf")}
    first = run_tag(env, image, "hf-hub:alice/toy")
    assert first.returncode == 0, first.stderr
    assert json.loads(first.stdout)["model"] == "toy_test_resnet_k3"
    downloads = [r for r in standin.requests if "/resolve/" in r]
    assert downloads == [f"HEAD /alice/toy/resolve/main/{hub.CHECKPOINT_FILE}",
                         f"GET /alice/toy/resolve/main/{hub.CHECKPOINT_FILE}"]
    assert list((tmp_path / "hf").rglob(hub.CHECKPOINT_FILE))  # in huggingface_hub's own cache
    for offline in ({"HF_HUB_OFFLINE": "1"}, {"SDL_TAGGER_OFFLINE": "1"}):
        again = run_tag({**env, **offline}, image, "hf-hub:alice/toy")
        assert again.returncode == 0, again.stderr
        assert json.loads(again.stdout)["results"] == json.loads(first.stdout)["results"]
    assert [r for r in standin.requests if "/resolve/" in r] == downloads  # no network when offline


ERRORS = {  # name -> (error class, message)
    "hf-hub:alice/missing": ("ModelNotFoundError", "no such repository on the Hub"),
    "hf-hub:alice/empty": ("ModelNotFoundError", "has no sdl_tagger.safetensors"),
    "hf-hub:alice/toy@v9": ("ModelNotFoundError", "no revision 'v9'"),
    "hf-hub:alice": ("ModelNotFoundError", "expected hf-hub:OWNER/REPO"),
    "hf-hub:../etc/passwd": ("ModelNotFoundError", "expected hf-hub:OWNER/REPO"),
}
#: Resolves each name in a fresh interpreter (huggingface_hub reads HF_ENDPOINT at import)
#: and prints {name: [error class, message] or path}.
PROBE = """
import json, sys
from sdl_core.errors import SDLError
from sdl_core.hub import hub_checkpoint
out = {}
for name in sys.argv[1:]:
    try:
        out[name] = str(hub_checkpoint(name, progress=False))
    except SDLError as exc:
        out[name] = [type(exc).__name__, str(exc)]
print(json.dumps(out))
"""


def probe(standin, tmp_path, names, **env):
    full = {**os.environ, "PYTHONPATH": str(ROOT), "HF_ENDPOINT": standin.url, "HF_HOME": str(tmp_path / "hf"), **env}
    out = subprocess.run([sys.executable, "-c", PROBE, *names], capture_output=True, text=True, cwd=ROOT, env=full,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def test_hub_errors_are_one_line_and_a_revision_can_be_pinned(standin, tmp_path):
    pinned = "hf-hub:alice/toy@" + "a" * 40
    results = probe(standin, tmp_path, [*ERRORS, pinned])
    assert results[pinned].endswith(hub.CHECKPOINT_FILE)
    for name, (kind, message) in ERRORS.items():
        assert results[name][0] == kind and message in results[name][1], (name, results[name])
        assert "\n" not in results[name][1]


def test_offline_and_not_cached(standin, tmp_path):
    (kind, message), = probe(standin, tmp_path, ["hf-hub:alice/toy"], SDL_TAGGER_OFFLINE="1").values()
    assert kind == "OfflineError" and "not in the Hugging Face cache" in message
    assert not [r for r in standin.requests if "/resolve/" in r]


def test_parse_hub_name():
    assert hub.parse_hub_name("hf-hub:alice/toy") == ("alice/toy", None)
    assert hub.parse_hub_name("hf-hub:alice/toy@v1.0") == ("alice/toy", "v1.0")
    assert hub.is_hub_name("hf-hub:a/b") and not hub.is_hub_name("a/b.safetensors")
    with pytest.raises(ModelNotFoundError):
        hub.parse_hub_name("hf-hub:")
