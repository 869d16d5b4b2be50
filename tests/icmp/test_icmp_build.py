"""The ICMP loop's C (gprocket/icmp/_loop.c, .h) and its cffi builder; the builders setup.py lists.

The C is held to the helper's standard (C11, -Wall -Wextra -Werror) by both
compilers; the sanitizer run is in tests/privileged/test_icmp_sanitized.py.
"""

from __future__ import annotations

import ast
import shutil
import subprocess
import sysconfig
from pathlib import Path

import pytest

from gprocket.icmp import _build

REPO = Path(__file__).resolve().parents[2]
STANDARD = ["-std=c11", "-Wall", "-Wextra", "-Werror"]
COMPILERS = [cc for cc in ("gcc", "clang") if shutil.which(cc)]


def test_the_installed_package_ships_the_c_beside_its_builder() -> None:
    assert _build.SOURCE_FILE.parent == _build.HERE
    assert _build.SOURCE_FILE.is_file() and _build.HEADER_FILE.is_file()
    assert '#include "_loop.h"' in _build.read_source(_build.SOURCE_FILE)


def test_cffi_sees_the_public_fields_and_functions_only() -> None:
    cdef = _build.cdef_from_header(_build.read_source(_build.HEADER_FILE))
    for declared in ("int status;", "int32_t *tsent;", "int gpi_step(gpi_ctx *c);",
                     "void gpi_free(gpi_ctx *c);", "...;\n} gpi_ctx;"):
        assert declared in cdef
    for private in ("cookies", "tpending", "#define", "#endif"):
        assert private not in cdef


def test_builder_compiles_with_the_helper_standard() -> None:
    assert set(STANDARD) <= set(_build.CFLAGS)
    kwds = _build.ffibuilder._assigned_source[3]  # cffi keeps set_source's arguments
    assert kwds["extra_compile_args"] == _build.CFLAGS


@pytest.mark.parametrize("cc", COMPILERS)
def test_the_c_alone_passes_the_standard(cc: str) -> None:
    proc = subprocess.run([cc, *STANDARD, "-fsyntax-only", str(_build.SOURCE_FILE)],
                          capture_output=True, text=True, check=False, timeout=120)
    assert proc.returncode == 0, proc.stderr


@pytest.mark.parametrize("cc", COMPILERS)
def test_cffi_translation_unit_passes_the_standard(cc: str, tmp_path: Path) -> None:
    wrapper = tmp_path / "_icmp_speed.c"
    _build.make_builder().emit_c_code(str(wrapper))
    assert _build.read_source(_build.SOURCE_FILE) in wrapper.read_text()
    proc = subprocess.run(
        [cc, *STANDARD, "-fsyntax-only", f"-I{sysconfig.get_path('include')}",
         f"-I{_build.HERE}", str(wrapper)],
        capture_output=True, text=True, check=False, timeout=120)
    assert proc.returncode == 0, proc.stderr


def test_a_warning_fails_the_build(tmp_path: Path) -> None:
    # -Werror really is in force: the same flags turn an unused variable into an error.
    bad = tmp_path / "bad.c"
    bad.write_text("int f(void) { int unused; return 0; }\n")
    proc = subprocess.run([COMPILERS[0], *_build.CFLAGS, "-c", str(bad), "-o",
                           str(tmp_path / "bad.o")], capture_output=True, text=True,
                          check=False)
    assert proc.returncode != 0 and "unused" in proc.stderr


def test_setup_lists_every_cffi_builder() -> None:
    tree = ast.parse((REPO / "setup.py").read_text())
    listed = next(ast.literal_eval(node.value) for node in tree.body
                  if isinstance(node, ast.Assign)
                  and getattr(node.targets[0], "id", None) == "CFFI_MODULES")
    builders = sorted(str(p.relative_to(REPO / "gprocket"))
                      for p in (REPO / "gprocket").rglob("*_build.py")
                      if p.name != "_cffi_build.py")
    assert sorted(entry.split(":")[0].removeprefix("gprocket/") for entry in listed) == builders
    assert all(entry.endswith(":ffibuilder") for entry in listed)
