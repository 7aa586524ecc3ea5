"""``python -m demo``: flags, environment defaults, one-line errors, and a real start."""
from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.request

import pytest

from demo.cli import EXIT_USAGE, build_parser, main
from tests.conftest import ROOT
from tests.demo.conftest import free_port


def test_host_and_port_come_from_flags_or_gradio_environment():
    args = build_parser({}).parse_args([])
    assert (args.host, args.port, args.model, args.models_dir, args.search_dir) == (
        "127.0.0.1", 7860, "default", "models", [])
    env = {"GRADIO_SERVER_NAME": "0.0.0.0", "GRADIO_SERVER_PORT": "8080"}
    args = build_parser(env).parse_args(["--search-dir", "a", "b", "--search-dir", "c"])
    assert (args.host, args.port, args.search_dir) == ("0.0.0.0", 8080, ["a", "b", "c"])
    assert build_parser(env).parse_args(["--port", "9000", "--host", "::1"]).port == 9000


@pytest.mark.parametrize("argv", [["--port", "http"], ["--port", "70000"]])
def test_bad_port_is_a_usage_error(argv, capsys):
    with pytest.raises(SystemExit) as info:
        build_parser({}).parse_args(argv)
    assert info.value.code == 2 and "port" in capsys.readouterr().err


def test_unusable_model_or_folder_is_one_line_and_exit_2(tmp_path, models_dir, capsys):
    assert main(["--model", str(tmp_path / "nope.safetensors")], env={}) == EXIT_USAGE
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "neither a registered model nor an existing file" in err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert main(["--model", str(models_dir / "broken.safetensors")], env={}) == EXIT_USAGE
    assert "not a readable safetensors checkpoint" in capsys.readouterr().err
    assert main(["--search-dir", str(tmp_path / "absent")], env={}) == EXIT_USAGE
    assert "no such folder" in capsys.readouterr().err


def test_python_m_demo_serves_the_page(toy_checkpoint, tmp_path):
    port = free_port()
    env = dict(os.environ, GRADIO_SERVER_PORT=str(port), GRADIO_SERVER_NAME="127.0.0.1")
    proc = subprocess.Popen([sys.executable, "-m", "demo", "--model", str(toy_checkpoint),
                             "--models-dir", str(tmp_path)], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline, page = time.monotonic() + 120, None
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5) as resp:
                    page = resp.read().decode("utf-8", "replace")
                break
            except OSError:
                time.sleep(0.5)
        assert proc.poll() is None, proc.stdout.read()
        assert page is not None and "SDL zero-shot image tagger" in page
        assert "fonts.googleapis" not in page and "cdn.jsdelivr" not in page
    finally:
        proc.terminate()
        proc.wait(timeout=30)
