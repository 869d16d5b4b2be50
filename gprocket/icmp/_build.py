"""cffi API-mode build of multiping's send/receive/match loop (``gprocket.icmp._speed``).

setup.py lists this builder; the C is in ``_loop.c`` and ``_loop.h``
beside it. In a development tree, build in place with::

    python -m gprocket.icmp._build      # in a checkout, for tests run from the tree

Without the compiled module ``gprocket.icmp`` uses its pure-Python engine
(same matching, same results, slower).

The C side owns every probe of one run: it sends when the window has room,
drains the socket (and, for datagram sockets, the error queue) without ever
blocking, and matches exactly like the Python engine: an echo reply counts
only with our identifier, a sequence we sent, the target's address as
source and the whole payload (cookie first) echoed byte for byte. Each call
does a bounded slice of work and returns what happened as events; the
Python side waits on the gevent hub between calls.
"""

from __future__ import annotations

from pathlib import Path

import cffi

HERE = Path(__file__).resolve().parent
# The C lives beside this file as C (gevent's _corecffi_build.py does the same),
# so compilers, sanitizers and C tools read it directly.
SOURCE_FILE = HERE / "_loop.c"
HEADER_FILE = HERE / "_loop.h"
PRIVATE_FIELDS = "/* The loop's own. */"
# The helper's standard: any warning fails the build.
CFLAGS = ["-std=c11", "-Wall", "-Wextra", "-Werror", "-O2"]


def read_source(path: Path) -> str:
    """The text of a C file beside this builder (raises OSError naming it if missing)."""
    return path.read_text(encoding="utf-8")


def cdef_from_header(header: str) -> str:
    """The header's declarations for cffi: the struct's public fields and the functions.

    Fields from "The loop's own" on stay hidden behind cffi's ``...``: the
    compiler, not this file, knows the struct's layout.
    """
    start = header.index("typedef struct {")
    private = header.index(PRIVATE_FIELDS, start)
    end = header.index("} gpi_ctx;", private)
    return header[start:private] + "    ...;\n" + header[end:header.index("#endif", end)]


def make_builder(extra_compile_args: list[str] | None = None) -> cffi.FFI:
    """An FFI for gprocket.icmp._speed compiled with ``extra_compile_args`` (CFLAGS)."""
    builder = cffi.FFI()
    builder.cdef(cdef_from_header(read_source(HEADER_FILE)))
    builder.set_source("gprocket.icmp._speed", read_source(SOURCE_FILE),
                       include_dirs=[str(HERE)], depends=[str(HEADER_FILE)],
                       extra_compile_args=CFLAGS if extra_compile_args is None
                       else extra_compile_args)
    return builder


ffibuilder = make_builder()


if __name__ == "__main__":
    from gprocket._cffi_build import build_in_place

    print(build_in_place(ffibuilder))
