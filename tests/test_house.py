"""The house rules, checked on the source: no import cycle, argparse only in the CLI,
short files and lines, no chained conditional expressions.

Imports are read with ``ast`` (never executed), including imports inside functions and
``TYPE_CHECKING`` blocks: a loop is a loop even when Python happens to tolerate it.
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("sdl_core", "demo", "train")
MAX_FILE_LINES = 400
MAX_LINE_LENGTH = 120


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def source_files() -> dict[str, Path]:
    """Module name -> file, for every module of the three packages."""
    return {module_name(p): p for package in PACKAGES for p in sorted((ROOT / package).rglob("*.py"))}


def imported_modules(name: str, path: Path, known: set[str]) -> set[str]:
    """The project modules ``name`` imports anywhere in its file (relative imports resolved)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            # ``from pkg import mod`` imports the module; ``from pkg import name`` the package's __init__
            found.update(f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in node.names)
    return {m for m in found if m in known and m != name}


def import_graph() -> dict[str, set[str]]:
    files = source_files()
    return {name: imported_modules(name, path, set(files)) for name, path in files.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as [a, b, ..., a], or None (depth-first search, colours)."""
    state: dict[str, int] = {}  # 1 = on the current path, 2 = done
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state:
                cycle = visit(nxt)
                if cycle:
                    return cycle
        stack.pop()
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state:
            cycle = visit(start)
            if cycle:
                return cycle
    return None


def test_the_import_reader_resolves_relative_and_function_level_imports():
    graph = import_graph()
    assert "sdl_core.factory" in graph["sdl_core.tagger"]  # from .factory import ...
    assert "sdl_core.search.index" in graph["sdl_core.search.query"]  # from .index import ...
    assert "sdl_core.checkpoint" in graph["sdl_core.factory"]  # inside a function
    assert "sdl_core.cli.common" in graph["demo.cli"]  # absolute, across packages
    assert "sdl_core.search.query" in graph["sdl_core.search"] and "sdl_core" not in graph["sdl_core.cli"]
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_no_import_cycle():
    cycle = find_cycle(import_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_argparse_only_in_the_command_line_package():
    offenders = [name for name, path in source_files().items()
                 if name.startswith("sdl_core.") and not name.startswith("sdl_core.cli")
                 and "argparse" in {m.split(".")[0] for m in _all_imports(path)}]
    assert offenders == [], f"library modules importing argparse: {offenders}"


def _all_imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
            names.add(node.module)
    return names


def is_chained(node: ast.AST) -> bool:
    return isinstance(node, ast.IfExp) and (isinstance(node.body, ast.IfExp) or isinstance(node.orelse, ast.IfExp))


def shape_problems(text: str, rel: str) -> list[str]:
    """Too long, lines too long, chained conditional expressions (``a if x else b if y else c``)."""
    lines = text.splitlines()
    problems = [f"{rel}: {len(lines)} lines (max {MAX_FILE_LINES})"] if len(lines) > MAX_FILE_LINES else []
    problems += [f"{rel}:{i}: {len(line)} characters (max {MAX_LINE_LENGTH})"
                 for i, line in enumerate(lines, 1) if len(line) > MAX_LINE_LENGTH]
    problems += [f"{rel}:{node.lineno}: chained conditional expression"
                 for node in ast.walk(ast.parse(text)) if is_chained(node)]
    return problems


def file_problems(rel: str) -> list[str]:
    return shape_problems((ROOT / rel).read_text(encoding="utf-8"), rel)


def test_shape_problems_are_found():
    text = ("x = 1 if a else 2 if b else 3\ny = (1 if a else 2) if b else 3\nz = 1 if a else 2\n"
            + "#" * (MAX_LINE_LENGTH + 1) + "\n" + "pass\n" * MAX_FILE_LINES)
    problems = shape_problems(text, "sample.py")
    assert problems[:2] == [f"sample.py: {MAX_FILE_LINES + 4} lines (max {MAX_FILE_LINES})",
                            f"sample.py:4: {MAX_LINE_LENGTH + 1} characters (max {MAX_LINE_LENGTH})"]
    assert sorted(problems[2:]) == ["sample.py:1: chained conditional expression",
                                    "sample.py:2: chained conditional expression"]
    assert shape_problems("z = 1 if a else 2\n", "ok.py") == []


def package_files(package: str) -> list[str]:
    return [p.relative_to(ROOT).as_posix() for p in sorted((ROOT / package).rglob("*.py"))]


@pytest.mark.parametrize("package", PACKAGES)
def test_files_are_short_with_short_lines_and_no_chained_conditionals(package):
    problems = [p for rel in package_files(package) for p in file_problems(rel)]
    assert problems == [], "\n".join(problems)


# --- the README's layout tables -------------------------------------------------------------

def readme_table_paths(after: str) -> list[str]:
    """The backticked names in the first column of the first table after the line ``after``."""
    lines = (ROOT / "README.md").read_text(encoding="utf-8").splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(after))
    rows = []
    for line in lines[start + 1:]:
        if line.startswith("|"):
            rows.append(line)
        elif rows:
            break
    cells = [row.split("|")[1] for row in rows[2:]]  # past the header and its rule
    return [name for cell in cells for name in cell.split("`")[1::2]]


def test_the_readme_layout_table_matches_the_tree():
    listed = readme_table_paths("## What is inside")
    assert [p for p in listed if not (ROOT / p).exists()] == []
    folders = [p.name + "/" for p in ROOT.iterdir()
               if p.is_dir() and not p.name.startswith((".", "build", "dist")) and any(p.rglob("*.py"))]
    assert sorted(set(folders) - set(listed)) == []


def test_the_readme_names_every_module_of_the_library():
    listed = set(readme_table_paths("Inside `sdl_core/`"))
    library = ROOT / "sdl_core"
    modules = {p.name for p in library.glob("*.py") if p.stem not in ("__init__", "__main__")}
    modules |= {p.name + "/" for p in library.iterdir() if (p / "__init__.py").is_file()}
    assert sorted(modules - listed) == [] and sorted(listed - modules) == []
