"""Compile one of gprocket's cffi API-mode modules in place, for a checkout.

setup.py builds each ``gprocket/_*_build.py`` it lists (CFFI_MODULES);
``python -m gprocket._<name>_build`` calls this to put the same module next
to the sources, for tests run from the tree.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import cffi

__all__ = ["build_in_place"]


def build_in_place(builder: cffi.FFI) -> Path:
    """Compile ``builder``'s module into the package directory; return its path."""
    here = Path(__file__).resolve().parent
    with tempfile.TemporaryDirectory() as tmp:
        built = Path(builder.compile(tmpdir=tmp, verbose=False))
        target = here / built.name
        # A rename, not a rewrite: a process that has the old module mapped
        # keeps its pages instead of running into a half-written file.
        staged = target.with_name(f".{target.name}.{os.getpid()}")
        shutil.copyfile(built, staged)
        os.replace(staged, target)
    return target
