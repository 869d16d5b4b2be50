"""Compile one of gprocket's cffi API-mode modules in place, for a checkout.

setup.py builds each builder it lists (CFFI_MODULES: ``icmp/_build.py``,
``packet/_build.py``, ``_channel/fdpass_build.py``); ``python -m`` on one of
them calls this to put the same module next to its sources, for tests run
from the tree.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import cffi

__all__ = ["build_in_place"]


def build_in_place(builder: cffi.FFI) -> Path:
    """Compile ``builder``'s module into its package's directory; return its path."""
    top = Path(__file__).resolve().parent.parent
    with tempfile.TemporaryDirectory() as tmp:
        built = Path(builder.compile(tmpdir=tmp, verbose=False)).resolve()
        # cffi lays a dotted module out in folders (gprocket/icmp/_speed...so).
        target = top / built.relative_to(Path(tmp).resolve())
        # A rename, not a rewrite: a process that has the old module mapped
        # keeps its pages instead of running into a half-written file.
        staged = target.with_name(f".{target.name}.{os.getpid()}")
        shutil.copyfile(built, staged)
        os.replace(staged, target)
    return target
