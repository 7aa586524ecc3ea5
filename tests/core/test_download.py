"""Fetching one file: checksums, mirror and offline settings, timeouts, and one clear error
for every way a server can fail, with nothing left under the file's name (loopback only)."""
import hashlib
import socket
import time

import pytest

from sdl_core.download import RemoteFile, fetch, fetch_file, source_url
from sdl_core.errors import CacheError, DownloadError, OfflineError
from tests.mirror import MirrorServer, Route

DATA = b"\x80\x04hello, pickled world" * 100
GOOD = hashlib.sha256(DATA).hexdigest()


@pytest.fixture
def server():
    with MirrorServer() as srv:
        srv.routes["a.bin"] = Route(DATA)
        yield srv


@pytest.fixture(autouse=True)
def no_settings(monkeypatch):
    for name in ("SDL_TAGGER_MIRROR", "SDL_TAGGER_OFFLINE", "SDL_TAGGER_TIMEOUT"):
        monkeypatch.delenv(name, raising=False)


def remote(server: MirrorServer, name: str = "a.bin", sha: str | None = GOOD) -> RemoteFile:
    return RemoteFile(f"{server.url}/{name}", name, sha, len(DATA))


def leftovers(folder):
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


def test_fetch_verifies_checksum_and_skips_a_verified_copy(server, tmp_path):
    out = fetch_file(remote(server), tmp_path / "dl", progress=False)
    assert out.read_bytes() == DATA
    assert fetch_file(remote(server), tmp_path / "dl", progress=False) == out
    assert server.requests == ["a.bin"]  # the second call found the verified copy


def test_progress_bar_names_the_file(server, tmp_path, capfd):
    fetch_file(remote(server), tmp_path / "dl", progress=True)
    assert "a.bin" in capfd.readouterr().err


@pytest.mark.parametrize("case, expected", [
    ("checksum", "checksum mismatch"),
    ("404", "HTTP 404"),
    ("500", "HTTP 500"),
    ("html", "web page or error document"),
    ("xml", "web page or error document"),
    ("cut", "broke off before the whole file arrived"),
])
def test_each_server_failure_is_one_clear_line_and_leaves_nothing(server, tmp_path, case, expected):
    routes = {"checksum": Route(DATA[:-1] + b"!"), "404": Route(status=404), "500": Route(status=500),
              "html": Route(b"\n<!DOCTYPE html><html><body>Not Found</body></html>"),
              "xml": Route(b'<?xml version="1.0"?><Error><Code>AccessDenied</Code></Error>'),
              "cut": Route(DATA, cut_at=len(DATA) // 2)}
    server.routes["a.bin"] = routes[case]
    with pytest.raises(DownloadError, match=expected) as info:
        fetch_file(remote(server), tmp_path / "dl", progress=False)
    assert "\n" not in str(info.value)
    assert leftovers(tmp_path / "dl") == []


def test_a_server_that_never_answers_times_out(server, tmp_path, monkeypatch):
    server.routes["a.bin"] = Route(hang=True)
    monkeypatch.setenv("SDL_TAGGER_TIMEOUT", "1.5")
    start = time.monotonic()
    with pytest.raises(DownloadError, match=r"no answer from 127\.0\.0\.1:\d+ within 1.5 s"):
        fetch_file(remote(server), tmp_path / "dl", progress=False)
    assert time.monotonic() - start < 20
    assert leftovers(tmp_path / "dl") == []


def test_unreachable_host_is_a_clear_error(tmp_path):
    with socket.socket() as s:  # a closed port on loopback
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(DownloadError, match="cannot connect to 127.0.0.1.*download it elsewhere"):
        fetch(RemoteFile(f"http://127.0.0.1:{port}/x.pth", "x.pth", None), tmp_path / "dl")
    assert leftovers(tmp_path / "dl") == []


def test_mirror_replaces_the_host_and_keeps_the_file_name(server, tmp_path, monkeypatch):
    official = RemoteFile("https://example.invalid/some/where/a.bin", "a.bin", GOOD)
    monkeypatch.setenv("SDL_TAGGER_MIRROR", server.url + "/")
    assert source_url(official) == f"{server.url}/a.bin"
    assert fetch_file(official, tmp_path / "dl", progress=False).read_bytes() == DATA


def test_mirror_can_be_a_local_folder(tmp_path, monkeypatch):
    folder = tmp_path / "copy"
    folder.mkdir()
    (folder / "a.bin").write_bytes(DATA)
    official = RemoteFile("https://example.invalid/a.bin", "a.bin", GOOD)
    monkeypatch.setenv("SDL_TAGGER_MIRROR", str(folder))
    assert fetch_file(official, tmp_path / "dl").read_bytes() == DATA
    monkeypatch.setenv("SDL_TAGGER_MIRROR", (folder / "elsewhere").as_uri())
    with pytest.raises(DownloadError, match="no such file in the mirror folder"):
        fetch_file(official, tmp_path / "dl2")


def test_offline_never_touches_the_network(server, tmp_path, monkeypatch):
    monkeypatch.setenv("SDL_TAGGER_OFFLINE", "1")
    with pytest.raises(OfflineError, match="SDL_TAGGER_OFFLINE is set"):
        fetch_file(remote(server), tmp_path / "dl")
    assert server.requests == []


def test_bad_timeout_setting_is_named(server, tmp_path, monkeypatch):
    monkeypatch.setenv("SDL_TAGGER_TIMEOUT", "soon")
    with pytest.raises(DownloadError, match="SDL_TAGGER_TIMEOUT='soon'"):
        fetch_file(remote(server), tmp_path / "dl")


def test_unwritable_folder_is_a_cache_error(server, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises((CacheError, DownloadError)) as info:
        fetch_file(remote(server), blocker / "dl", progress=False)
    assert "\n" not in str(info.value)
