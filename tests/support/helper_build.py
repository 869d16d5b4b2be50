"""Building the C helper in the checkout and running that build, for the helper's tests."""

from __future__ import annotations

import contextlib
import os
import struct
import subprocess
from collections.abc import Iterator
from pathlib import Path

from support import privileged as priv

REPO = Path(__file__).resolve().parents[2]
HELPER_DIR = REPO / "helper"
BINARY = REPO / "gprocket" / "_bin" / "gprocket-helper"


def make(*targets: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    """`make -C helper targets`, failing the test with make's output."""
    proc = subprocess.run(["make", "-C", str(HELPER_DIR), *targets], capture_output=True,
                          text=True, timeout=timeout, check=False)
    assert proc.returncode == 0, f"make {' '.join(targets)} failed:\n{proc.stdout}{proc.stderr}"
    return proc


@contextlib.contextmanager
def runnable(binary: Path) -> Iterator[Path]:
    """`binary`, built in the checkout, as a test may run it: from a root-only prefix.

    The helper rightly refuses to serve when a directory above it is
    writable by others, which the checkout's may be (a clone under /tmp).
    """
    if os.geteuid() != 0:
        # Only root can make the prefix; unprivileged, the helper serves no
        # privilege either, and runs where it was built.
        yield binary
        return
    with priv.install_helper("plain", source=binary) as copy:
        yield copy


def hello() -> bytes:
    """A version request (kind 4, id 42): every mode answers it."""
    return struct.pack("<4sHHIH", b"GPRQ", 1, 192, 42, 4).ljust(192, b"\0")
