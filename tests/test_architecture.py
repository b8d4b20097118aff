"""The import rules of ARCHITECTURE.md ("What must never import what"), checked against the code.

Every ``import`` and ``from ... import`` in the package is read with ``ast``,
including the lazy ones inside functions, and checked against the table.
"""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "codex_logging"
FOLDERS = ("_write", "_redaction", "_mirror", "_sqlite", "_postgres", "_otlp", "_viewer", "_cli")
VIEWER = "codex_logging._viewer"

#: Part -> modules (dotted prefixes) it must never import.
FORBIDDEN: dict[str, tuple[str, ...]] = {
    "ground": (*(f"codex_logging.{f}" for f in FOLDERS), "psycopg"),
    "api": (VIEWER,),
    "_write": (
        "codex_logging._mirror",
        "codex_logging._otlp",
        "codex_logging._sqlite",
        "codex_logging._postgres",
        "codex_logging._cli",
        VIEWER,
        "sqlite3",
        "psycopg",
    ),
    "_redaction": (
        "codex_logging._write",
        "codex_logging._otlp",
        "codex_logging._mirror",
        "codex_logging._sqlite",
        "codex_logging._postgres",
        "codex_logging._cli",
        VIEWER,
        "psycopg",
    ),
    "_mirror": (
        "codex_logging._write",
        "codex_logging._otlp",
        "codex_logging._sqlite",
        "codex_logging._postgres",
        "codex_logging._cli",
        VIEWER,
        "psycopg",
    ),
    "_sqlite": (
        "codex_logging._write",
        "codex_logging._otlp",
        "codex_logging._postgres",
        "codex_logging._cli",
        VIEWER,
        "psycopg",
    ),
    "_postgres": (
        "codex_logging._write",
        "codex_logging._sqlite",
        "codex_logging._otlp",
        "codex_logging._cli",
        VIEWER,
    ),
    "_otlp": (
        "codex_logging._write",
        "codex_logging._sqlite",
        "codex_logging._postgres",
        "codex_logging._cli",
        VIEWER,
        "psycopg",
    ),
    "_viewer": ("codex_logging._write", "codex_logging._otlp", "codex_logging._cli", "psycopg"),
    "_cli": ("codex_logging._write", "psycopg"),
}


def part_of(path: Path, root: Path = PACKAGE) -> str:
    relative = path.relative_to(root)
    if len(relative.parts) == 1:
        return (
            "ground" if relative.name.startswith("_") and relative.name != "__init__.py" else "api"
        )
    return relative.parts[0]


def imported(path: Path, root: Path = PACKAGE) -> list[tuple[int, str]]:
    """Every module ``path`` imports, absolute, with its line."""
    tree = ast.parse(path.read_text(), str(path))
    package = ".".join(("codex_logging", *path.relative_to(root).parent.parts))
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.extend((node.lineno, alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.rstrip(".").split(".")
                base = ".".join(parts[: len(parts) - node.level + 1] + ([base] if base else []))
            found.append((node.lineno, base))
            # "from codex_logging._mirror import filters" imports a submodule
            found.extend((node.lineno, f"{base}.{alias.name}") for alias in node.names)
    return found


def violations(root: Path = PACKAGE) -> list[str]:
    """One entry per import statement that reaches a forbidden part."""
    broken = {
        f"{path.relative_to(root.parent)}:{line} imports {prefix}"
        for path in root.rglob("*.py")
        for line, name in imported(path, root)
        for prefix in FORBIDDEN.get(part_of(path, root), ())
        if name == prefix or name.startswith(prefix + ".")
    }
    return sorted(broken)


def test_every_folder_is_in_the_table() -> None:
    """A new folder gets its own rules: the table and the tree list the same parts."""
    folders = {p.name for p in PACKAGE.iterdir() if p.is_dir() and (p / "__init__.py").exists()}
    assert folders == set(FOLDERS)
    assert set(FORBIDDEN) == {"ground", "api", *FOLDERS}


def test_no_part_imports_what_it_must_not() -> None:
    """Each part imports only what ARCHITECTURE.md allows, lazy imports included."""
    assert violations() == []


def test_the_check_bites(tmp_path: Path) -> None:
    """A forbidden import, absolute or relative, lazy or not, in a copy of the tree is found."""
    fake = tmp_path / "codex_logging"
    (fake / "_write").mkdir(parents=True)
    (fake / "_write" / "__init__.py").write_text("")
    (fake / "_write" / "bad.py").write_text(
        "import sqlite3\n"
        "def f():\n    from codex_logging._sqlite import db\n    from .._cli import main\n"
    )
    found = violations(fake)
    assert len(found) == 3, found
    assert any("imports sqlite3" in v for v in found)
    assert any("imports codex_logging._sqlite" in v for v in found)
    assert any("imports codex_logging._cli" in v for v in found)


def test_psycopg_only_in_postgres() -> None:
    """psycopg is imported in _postgres/ alone."""
    users = {
        str(path.relative_to(PACKAGE))
        for path in PACKAGE.rglob("*.py")
        for _line, name in imported(path)
        if name == "psycopg" or name.startswith("psycopg.")
    }
    assert all(user.startswith("_postgres/") for user in users), users


def test_a_wheel_carries_every_file_of_the_package(tmp_path: Path) -> None:
    """A wheel (a non-editable install) holds every module and every file the viewer serves.

    Built from a copy of the sources, as pip builds one: a ``build/`` left in
    the checkout by an earlier build could hold files that are gone.
    """
    root = PACKAGE.parent
    source = tmp_path / "source"
    source.mkdir()
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy(root / name, source / name)
    shutil.copytree(PACKAGE, source / PACKAGE.name, ignore=shutil.ignore_patterns("__pycache__"))
    dist = tmp_path / "dist"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "--wheel-dir", str(dist), str(source)],
        check=True, capture_output=True, timeout=600,
    )  # fmt: skip
    (wheel,) = dist.glob("*.whl")
    with zipfile.ZipFile(wheel) as archive:
        packed = {name for name in archive.namelist() if name.startswith(f"{PACKAGE.name}/")}
    files = {
        path.relative_to(root).as_posix()
        for path in PACKAGE.rglob("*")
        if path.is_file() and "__pycache__" not in path.parts
    }
    assert packed == files
