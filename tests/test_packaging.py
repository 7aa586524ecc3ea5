"""Packaging: the wheel carries what the code reads, an installed copy works from any folder,
and the Space's entry point runs from the checkout without an install."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tomllib
import venv
import zipfile
from pathlib import Path

import pytest

from demo.app import EXAMPLES_DIR
from sdl_core import default_model
from tests.conftest import ROOT

#: Files the installed code opens at run time.
PACKAGE_DATA = ("sdl_core/assets/default/class_vectors.safetensors", "sdl_core/assets/default/vocabulary.txt",
                "sdl_core/assets/default/unseen.txt", "demo/examples/coffee.jpg")


def requirement_lines(path: Path) -> list[str]:
    lines = (line.split("#", 1)[0].strip() for line in path.read_text(encoding="utf-8").splitlines())
    return [line for line in lines if line]


def test_pyproject_pins_are_requirements_txt():
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    assert pyproject["project"]["dependencies"] == requirement_lines(ROOT / "requirements.txt")


def test_code_reads_data_from_inside_its_packages():
    for folder, package in ((default_model.ASSETS, ROOT / "sdl_core"), (EXAMPLES_DIR, ROOT / "demo")):
        assert folder.is_dir() and folder.resolve().is_relative_to(package), folder


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """The wheel, built from a copy of what the build reads (a build leaves files where it runs)."""
    source, out = tmp_path_factory.mktemp("source"), tmp_path_factory.mktemp("wheel")
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy2(ROOT / name, source / name)
    for package in ("sdl_core", "demo", "train"):
        shutil.copytree(ROOT / package, source / package, ignore=shutil.ignore_patterns("__pycache__"))
    proc = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                           "-w", str(out), str(source)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (path,) = out.glob("sdl_tagger-*.whl")
    return path


def test_the_wheel_holds_the_packages_and_their_data(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    assert set(PACKAGE_DATA) <= names
    assert {"sdl_core/cli/__init__.py", "sdl_core/search/query.py", "demo/app.py", "train/fit.py"} <= names
    assert not any(name.startswith(("tests/", "benchmarks/", "tools/")) for name in names)


def test_installed_copy_tags_a_photo_from_another_folder(wheel, tmp_path):
    """``pip install`` into a fresh environment (its dependencies come from this one), then
    ``python -m sdl_core tag`` run outside the checkout uses the installed package and its data."""
    env_dir = tmp_path / "venv"
    venv.create(env_dir, system_site_packages=True)  # pip too comes from this environment
    python = env_dir / "bin" / "python"
    clean = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    install = subprocess.run([str(python), "-m", "pip", "install", "--no-deps", "-q", str(wheel)],
                             capture_output=True, text=True, timeout=300, env=clean)
    assert install.returncode == 0, install.stderr[-3000:]
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    proc = subprocess.run([str(python), "-m", "sdl_core", "tag", str(EXAMPLES_DIR / "coffee.jpg"), "--json",
                           "--top-k", "3"], cwd=elsewhere, capture_output=True, text=True, timeout=600, env=clean)
    assert proc.returncode == 0, proc.stderr[-3000:]
    data = json.loads(proc.stdout)
    assert data["errors"] == [] and len(data["results"][0]["tags"]) == 3
    where = subprocess.run([str(python), "-c", "import sdl_core; print(sdl_core.__file__)"], cwd=elsewhere,
                           capture_output=True, text=True, timeout=60, env=clean)
    assert Path(where.stdout.strip()).resolve().is_relative_to(env_dir.resolve())


def test_the_spaces_entry_point_runs_from_the_checkout_without_an_install():
    clean = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    proc = subprocess.run([sys.executable, "app.py", "--help"], cwd=ROOT, capture_output=True, text=True,
                          timeout=120, env=clean)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.startswith("usage: python -m demo") and "--search-dir" in proc.stdout
    front_matter = (ROOT / "README.md").read_text(encoding="utf-8").split("---")[1]
    assert "app_file: app.py" in front_matter.splitlines()
