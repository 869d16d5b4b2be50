"""cffi API-mode build of the broker channel's hot path (``gprocket._channel._fdpass_speed``).

setup.py lists this builder (CFFI_MODULES); the C is in ``_fdpass_speed.c``
and ``_fdpass_speed.h`` beside it.
In a development tree, build in place with::

    python -m gprocket._channel.fdpass_build    # in a checkout, for tests run from the tree

Without the compiled module ``gprocket._channel.fdpass`` does the same in Python
(same checks, same results, slower).

Two calls, both non-blocking and neither trusting the peer:

- ``gpf_receive`` reads one reply, polling for up to ``spin_ns`` first (and
  giving up early when it loses its CPU meanwhile), and hands back its
  bytes, every descriptor it carried (close-on-exec from the first instant),
  the flags that say whether anything was cut, and how the poll went. It
  does not judge: ``fdpass`` applies the same rules to both paths. Its walk
  of the control messages (``gpf_parse_control``) is pure, so
  helper/fuzz/fuzz_reply.c fuzzes it with the helper's parsers.
- ``gpf_check_inet`` answers "is this exactly the IPv4/IPv6 socket that was
  asked for?" with one call instead of six Python ones. It only ever says
  yes or no; on no, ``fdpass`` runs its Python checks, which name what
  differs.
"""

from __future__ import annotations

from pathlib import Path

import cffi

HERE = Path(__file__).resolve().parent
# The C lives beside this file as C (gevent's _corecffi_build.py does the same),
# so compilers, sanitizers, fuzzers and C tools read it directly.
SOURCE_FILE = HERE / "_fdpass_speed.c"
HEADER_FILE = HERE / "_fdpass_speed.h"
DECLARATIONS = "/* cffi reads from here. */"
# The helper's standard: any warning fails the build.
CFLAGS = ["-std=c11", "-Wall", "-Wextra", "-Werror", "-O2"]


def read_source(path: Path) -> str:
    """The text of a C file beside this builder (raises OSError naming it if missing)."""
    return path.read_text(encoding="utf-8")


def cdef_from_header(header: str) -> str:
    """The header's declarations for cffi (its constants and functions)."""
    start = header.index(DECLARATIONS) + len(DECLARATIONS)
    return header[start:header.rindex("#endif")]


def make_builder(extra_compile_args: list[str] | None = None) -> cffi.FFI:
    """An FFI for gprocket._channel._fdpass_speed compiled with ``extra_compile_args`` (CFLAGS)."""
    builder = cffi.FFI()
    builder.cdef(cdef_from_header(read_source(HEADER_FILE)))
    builder.set_source("gprocket._channel._fdpass_speed", read_source(SOURCE_FILE),
                       include_dirs=[str(HERE)], depends=[str(HEADER_FILE)],
                       extra_compile_args=CFLAGS if extra_compile_args is None
                       else extra_compile_args)
    return builder


ffibuilder = make_builder()


if __name__ == "__main__":
    from gprocket._cffi_build import build_in_place

    print(build_in_place(ffibuilder))
