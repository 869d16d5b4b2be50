"""The layers of docs/ARCHITECTURE.md, read from the source: what each folder imports.

Nothing imports upwards: the core imports nothing else of gprocket, the
channel to the helper only the core, the ladder the channel and the core;
icmp/_results imports nothing of the package (the results <-> state cycle
stays broken); the library never imports the installer. Across folders only
names without a leading underscore are imported: a folder's private names
stay its own (ruff's PLC2701 draws that line at the top-level package only).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import gprocket

PACKAGE = Path(gprocket.__file__).resolve().parent
CORE = {"_errors", "_spec", "_environ", "_socket", "_fdio"}
# What each layer may import besides itself (a layer: a folder, or "core").
ALLOWED = {
    "core": set(),
    "_channel": {"core", "_cffi_build"},
    "_ladder": {"core", "_channel"},
    "admin": {"core", "_channel", "_ladder"},
}


def _module(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> set[str]:
    """Every gprocket (or capsetup) module ``path`` imports, anywhere in it."""
    name = _module(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            found.add(target)
            found.update(f"{target}.{alias.name}" for alias in node.names
                         if (PACKAGE.parent / f"{target}.{alias.name}".replace(".", "/")).is_dir()
                         or (PACKAGE.parent / (f"{target}.{alias.name}".replace(".", "/") + ".py"))
                         .is_file())
    return {module for module in found if module.split(".")[0] in ("gprocket", "capsetup")}


def _layer(module: str) -> str:
    parts = module.split(".")
    if len(parts) == 1:
        return parts[0]
    return "core" if parts[1] in CORE else parts[1]


SOURCES = sorted(PACKAGE.rglob("*.py"))


@pytest.mark.parametrize("path", SOURCES, ids=_module)
def test_no_module_imports_against_the_layers(path: Path) -> None:
    layer = _layer(_module(path))
    imported = {_layer(module) for module in _imports(path)} - {layer}
    assert "capsetup" not in imported
    if layer in ALLOWED:
        assert imported <= ALLOWED[layer], sorted(imported - ALLOWED[layer])


def _private_names_from_other_layers(path: Path) -> list[str]:
    name = _module(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if not isinstance(node, ast.ImportFrom):
            continue
        if node.level:
            base = package.split(".")[: len(package.split(".")) - node.level + 1]
            target = ".".join(base + ([node.module] if node.module else []))
        else:
            target = node.module or ""
        if not target.startswith("gprocket") or _layer(target) == _layer(name):
            continue
        where = PACKAGE.parent / target.replace(".", "/")
        found += [f"{target}.{alias.name}" for alias in node.names
                  if alias.name.startswith("_") and not (where / f"{alias.name}.py").is_file()
                  and not (where / alias.name).is_dir()]
    return found


@pytest.mark.parametrize("path", SOURCES, ids=_module)
def test_no_module_imports_another_folders_private_names(path: Path) -> None:
    assert _private_names_from_other_layers(path) == []


def test_icmp_results_import_nothing_of_the_package() -> None:
    assert _imports(PACKAGE / "icmp" / "_results.py") == set()


def test_the_top_level_stays_small() -> None:
    top = list(PACKAGE.glob("*.py"))
    assert len(top) <= 20, sorted(path.name for path in top)
