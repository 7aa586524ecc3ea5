"""The opt-in downloader: checksums, atomic files and clear errors (loopback server only)."""
import functools
import hashlib
import http.server
import socket
import threading

import pytest

from sdl_core.download import DownloadError, RemoteFile, fetch


@pytest.fixture
def server(tmp_path):
    root = tmp_path / "served"
    root.mkdir()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(root))
    handler.log_message = lambda *a, **k: None
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield root, f"http://127.0.0.1:{httpd.server_address[1]}/"
    httpd.shutdown()


def test_fetch_verifies_checksum(server, tmp_path):
    root, base = server
    (root / "a.bin").write_bytes(b"hello")
    good = hashlib.sha256(b"hello").hexdigest()
    out = fetch(RemoteFile(base + "a.bin", "a.bin", good), tmp_path / "dl")
    assert out.read_bytes() == b"hello"


def test_checksum_mismatch_leaves_no_file(server, tmp_path):
    root, base = server
    (root / "a.bin").write_bytes(b"tampered")
    with pytest.raises(DownloadError, match="checksum mismatch"):
        fetch(RemoteFile(base + "a.bin", "a.bin", "0" * 64), tmp_path / "dl")
    assert list((tmp_path / "dl").iterdir()) == []


def test_unreachable_host_is_a_clear_error(tmp_path):
    with socket.socket() as s:  # a closed port on loopback
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(DownloadError, match="download it elsewhere"):
        fetch(RemoteFile(f"http://127.0.0.1:{port}/x.pth", "x.pth", None), tmp_path / "dl", timeout=5)
    assert not (tmp_path / "dl" / "x.pth.part").exists()


def test_missing_file_is_a_clear_error(server, tmp_path):
    _, base = server
    with pytest.raises(DownloadError, match="404"):
        fetch(RemoteFile(base + "nope.bin", "nope.bin", None), tmp_path / "dl")
