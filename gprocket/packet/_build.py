"""cffi API-mode build of the packet layer's hot loops (``gprocket.packet._speed``).

setup.py lists this builder (CFFI_MODULES); the C is in ``_speed.c``
and ``_speed.h`` beside it. In a development tree, build in place with::

    python -m gprocket.packet._build    # in a checkout, for tests run from the tree

Without the compiled module the packet layer falls back to pure Python
(same results, slower).
"""

from __future__ import annotations

from pathlib import Path

import cffi

HERE = Path(__file__).resolve().parent
# The C lives beside this file as C (gevent's _corecffi_build.py does the same),
# so compilers, sanitizers and C tools read it directly.
SOURCE_FILE = HERE / "_speed.c"
HEADER_FILE = HERE / "_speed.h"
DECLARATIONS = "/* cffi reads from here. */"
# cffi parses no system header: the one system type the calls take, as <sys/uio.h> has it.
SYSTEM_TYPES = "struct iovec { void *iov_base; size_t iov_len; };\n"
# The helper's standard: any warning fails the build.
CFLAGS = ["-std=c11", "-Wall", "-Wextra", "-Werror", "-O2"]


def read_source(path: Path) -> str:
    """The text of a C file beside this builder (raises OSError naming it if missing)."""
    return path.read_text(encoding="utf-8")


def cdef_from_header(header: str) -> str:
    """The header's declarations for cffi, after the system types it includes."""
    start = header.index(DECLARATIONS) + len(DECLARATIONS)
    return SYSTEM_TYPES + header[start:header.rindex("#endif")]


def make_builder(extra_compile_args: list[str] | None = None) -> cffi.FFI:
    """An FFI for gprocket.packet._speed compiled with ``extra_compile_args`` (CFLAGS)."""
    builder = cffi.FFI()
    builder.cdef(cdef_from_header(read_source(HEADER_FILE)))
    builder.set_source("gprocket.packet._speed", read_source(SOURCE_FILE),
                       include_dirs=[str(HERE)], depends=[str(HEADER_FILE)],
                       extra_compile_args=CFLAGS if extra_compile_args is None
                       else extra_compile_args)
    return builder


ffibuilder = make_builder()


if __name__ == "__main__":
    from gprocket._cffi_build import build_in_place

    print(build_in_place(ffibuilder))
