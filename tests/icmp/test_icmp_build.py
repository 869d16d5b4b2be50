"""The C of gprocket's cffi modules, beside their builders; the builders setup.py lists.

Three builders, each reading its C from a .c/.h beside it: the ICMP loop
(icmp/_build: _loop.c, .h), the packet layer's hot loops (packet/_build:
_speed.c, .h) and the broker channel's receive and check
(_channel/fdpass_build: _fdpass_speed.c, .h). Each is held to the helper's standard
(C11, -Wall -Wextra -Werror) by both compilers. The sanitizer runs are in
tests/privileged/test_icmp_sanitized.py, tests/privileged/test_packet_sanitized.py
and tests/channel/test_fdpass_build.py (with the reply fuzzer).
"""

from __future__ import annotations

import ast
import re
import shutil
import subprocess
import sysconfig
from pathlib import Path
from types import ModuleType

import pytest

import gprocket
from gprocket._channel import fdpass_build as _fdpass_build
from gprocket.icmp import _build as _icmp_build
from gprocket.packet import _build as _packet_build

REPO = Path(__file__).resolve().parents[2]
STANDARD = ["-std=c11", "-Wall", "-Wextra", "-Werror"]
COMPILERS = [cc for cc in ("gcc", "clang") if shutil.which(cc)]
BUILDERS = [_icmp_build, _packet_build, _fdpass_build]
# What the Python side calls in each module (and nothing it does not).
FUNCTIONS = {
    _icmp_build: {"gpi_new", "gpi_free", "gpi_step", "gpi_seq"},
    _packet_build: {"gpk_walk_block", "gpk_block_meta", "gpk_block_to_pcap",
                    "gpk_block_write", "gpk_send_batch", "gpk_tx_fill"},
    _fdpass_build: {"gpf_receive", "gpf_parse_control", "gpf_check_inet", "gpf_cpu"},
}
builders = pytest.mark.parametrize("builder", BUILDERS,
                                   ids=lambda b: b.__name__.removeprefix("gprocket."))


@builders
def test_the_installed_package_ships_the_c_beside_its_builder(builder: ModuleType) -> None:
    assert builder.SOURCE_FILE.parent == builder.HEADER_FILE.parent == builder.HERE
    assert Path(builder.__file__).resolve().parent == builder.HERE
    assert builder.SOURCE_FILE.is_file() and builder.HEADER_FILE.is_file()
    source = builder.read_source(builder.SOURCE_FILE)
    assert f'#include "{builder.HEADER_FILE.name}"' in source


def test_cffi_sees_the_public_fields_and_functions_only() -> None:
    cdef = _icmp_build.cdef_from_header(_icmp_build.read_source(_icmp_build.HEADER_FILE))
    for declared in ("int status;", "int32_t *tsent;", "int gpi_step(gpi_ctx *c);",
                     "void gpi_free(gpi_ctx *c);", "...;\n} gpi_ctx;"):
        assert declared in cdef
    for private in ("cookies", "tpending", "#define", "#endif"):
        assert private not in cdef


@builders
def test_cffi_declares_exactly_the_c_files_exported_functions(builder: ModuleType) -> None:
    cdef = builder.cdef_from_header(builder.read_source(builder.HEADER_FILE))
    source = builder.read_source(builder.SOURCE_FILE)
    defined = set(re.findall(r"^\w[\w ]*?[ *](gp[ikf]_\w+)\(", source, re.MULTILINE))
    declared = set(re.findall(r"\b(gp[ikf]_\w+)\(", cdef))
    assert defined == declared == FUNCTIONS[builder]
    for preprocessor in ("#include", "#ifndef", "#endif"):
        assert preprocessor not in cdef
    builder.make_builder()  # cffi parses the declarations (raises CDefError if it cannot)


def test_the_packet_cdef_declares_struct_iovec_as_the_system_does() -> None:
    cdef = _packet_build.cdef_from_header(_packet_build.read_source(_packet_build.HEADER_FILE))
    assert cdef.startswith("struct iovec { void *iov_base; size_t iov_len; };")


@builders
def test_builder_compiles_with_the_helper_standard(builder: ModuleType) -> None:
    assert set(STANDARD) <= set(builder.CFLAGS)
    kwds = builder.ffibuilder._assigned_source[3]  # cffi keeps set_source's arguments
    assert kwds["extra_compile_args"] == builder.CFLAGS
    assert kwds["include_dirs"] == [str(builder.HERE)]


@builders
@pytest.mark.parametrize("cc", COMPILERS)
def test_the_c_alone_passes_the_standard(builder: ModuleType, cc: str) -> None:
    proc = subprocess.run([cc, *STANDARD, "-fsyntax-only", str(builder.SOURCE_FILE)],
                          capture_output=True, text=True, check=False, timeout=120)
    assert proc.returncode == 0, proc.stderr


@builders
@pytest.mark.parametrize("cc", COMPILERS)
def test_cffi_translation_unit_passes_the_standard(builder: ModuleType, cc: str,
                                                   tmp_path: Path) -> None:
    wrapper = tmp_path / "wrapper.c"
    builder.make_builder().emit_c_code(str(wrapper))
    assert builder.read_source(builder.SOURCE_FILE) in wrapper.read_text()
    proc = subprocess.run(
        [cc, *STANDARD, "-fsyntax-only", f"-I{sysconfig.get_path('include')}",
         f"-I{builder.HERE}", str(wrapper)],
        capture_output=True, text=True, check=False, timeout=120)
    assert proc.returncode == 0, proc.stderr


@builders
def test_a_warning_fails_the_build(builder: ModuleType, tmp_path: Path) -> None:
    # -Werror really is in force: the same flags turn an unused variable into an error.
    bad = tmp_path / "bad.c"
    bad.write_text("int f(void) { int unused; return 0; }\n")
    proc = subprocess.run([COMPILERS[0], *builder.CFLAGS, "-c", str(bad), "-o",
                           str(tmp_path / "bad.o")], capture_output=True, text=True,
                          check=False)
    assert proc.returncode != 0 and "unused" in proc.stderr


def test_setup_lists_every_cffi_builder() -> None:
    tree = ast.parse((REPO / "setup.py").read_text())
    listed = next(ast.literal_eval(node.value) for node in tree.body
                  if isinstance(node, ast.Assign)
                  and getattr(node.targets[0], "id", None) == "CFFI_MODULES")
    found = sorted(str(p.relative_to(REPO)) for p in (REPO / "gprocket").rglob("*_build.py")
                   if p.name != "_cffi_build.py")
    assert sorted(entry.split(":")[0] for entry in listed) == found
    assert all(entry.endswith(":ffibuilder") for entry in listed)
    assert len(listed) == len(BUILDERS)


def test_the_sdist_takes_the_c_of_every_builder() -> None:
    # MANIFEST.in takes the C wherever a builder sits in the package; with
    # include-package-data the wheel takes what the sdist has.
    manifest = (REPO / "MANIFEST.in").read_text().splitlines()
    assert "recursive-include gprocket *.c *.h" in manifest
    installed = Path(gprocket.__file__).resolve().parent
    for builder in BUILDERS:
        for path in (builder.SOURCE_FILE, builder.HEADER_FILE):
            assert (REPO / "gprocket" / path.relative_to(installed)).is_file(), path
