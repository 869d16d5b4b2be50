"""The public surface (trio's test_exports): what ``__all__`` promises is there.

Every name in ``gprocket.__all__`` imports; the lazy submodule table in
gprocket/__init__.py names exactly the package's public modules, so a new
public module cannot be left out of ``gprocket.<name>`` (or an old one kept in
the table after it is gone); ``import gprocket`` stays cheap. A module that
needs an optional dependency (``scapy``) is in the table but not in
``__all__``, so ``from gprocket import *`` works without it.
"""

from __future__ import annotations

import importlib
import pkgutil
import subprocess
import sys
from types import ModuleType

import pytest

import gprocket

# The command line (``gprocket ...``, python -m gprocket.cli) is a program,
# not part of the import API.
NOT_IMPORT_API = frozenset({"cli"})
# Public, lazy, but left out of __all__: each imports the optional dependency
# of its name (pip install gprocket[scapy]).
OPTIONAL = frozenset({"scapy"})


def public_modules() -> set[str]:
    return {info.name for info in pkgutil.iter_modules(gprocket.__path__)
            if not info.name.startswith("_") and info.name not in NOT_IMPORT_API}


def test_lazy_table_matches_the_public_modules() -> None:
    assert public_modules() == gprocket._SUBMODULES


def test_every_public_module_is_in_all() -> None:
    assert public_modules() >= OPTIONAL
    assert public_modules() - OPTIONAL <= set(gprocket.__all__)
    assert OPTIONAL.isdisjoint(gprocket.__all__)


def test_star_import_works_without_the_optional_dependencies() -> None:
    blocked = "".join(f"sys.modules[{name!r}] = None; " for name in sorted(OPTIONAL))
    code = (f"import sys; {blocked}import gprocket; from gprocket import *; "
            "print(len([n for n in gprocket.__all__ if n in globals()]), len(gprocket.__all__))")
    proc = subprocess.run([sys.executable, "-P", "-c", code],
                          capture_output=True, text=True, check=False, timeout=60)
    assert proc.returncode == 0, proc.stderr
    found, promised = proc.stdout.split()
    assert found == promised


@pytest.mark.parametrize("name", gprocket.__all__)
def test_every_name_in_all_imports(name: str) -> None:
    namespace: dict[str, object] = {}
    exec(f"from gprocket import {name}", namespace)  # noqa: S102 - the import statement is the test
    assert namespace[name] is getattr(gprocket, name)
    if name in gprocket._SUBMODULES:
        assert isinstance(namespace[name], ModuleType)
        assert namespace[name] is sys.modules[f"gprocket.{name}"]


@pytest.mark.parametrize("module", sorted(public_modules()))
def test_every_name_in_a_public_module_all_exists(module: str) -> None:
    mod = importlib.import_module(f"gprocket.{module}")
    names = getattr(mod, "__all__", None)
    assert names is not None, f"gprocket.{module} has no __all__"
    missing = [name for name in names if not hasattr(mod, name)]
    assert missing == []


def test_unknown_attribute_names_itself() -> None:
    with pytest.raises(AttributeError, match="module 'gprocket' has no attribute 'nosuch'"):
        _ = gprocket.nosuch  # type: ignore[attr-defined]


def test_import_gprocket_leaves_the_submodules_unloaded() -> None:
    code = ("import sys, gprocket; "
            "print(' '.join(sorted(n for n in gprocket._SUBMODULES "
            "if 'gprocket.' + n in sys.modules)))")
    proc = subprocess.run([sys.executable, "-P", "-c", code], capture_output=True, text=True,
                          check=True, timeout=60)
    assert proc.stdout.strip() == ""


@pytest.mark.parametrize("package", ["admin", "packet"])
def test_subpackage_lazy_tables_match_their_public_modules(package: str) -> None:
    mod = importlib.import_module(f"gprocket.{package}")
    public = {info.name for info in pkgutil.iter_modules(mod.__path__)
              if not info.name.startswith("_")}
    assert public == mod._SUBMODULES == set(mod.__all__)
