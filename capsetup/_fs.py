"""Atomic writes of privileged files.

The safety checks of where such a file may live are the library's
(gprocket/admin/locations.py), shared with doctor and the helper's rules.
"""

from __future__ import annotations

import contextlib
import errno
import os
from collections.abc import Callable
from pathlib import Path

__all__ = ["atomic_write", "fsync_dir"]


def atomic_write(
    path: Path,
    data: bytes,
    *,
    mode: int,
    uid: int = 0,
    gid: int = 0,
    before_close: Callable[[int], None] | None = None,
    check: Callable[[Path], None] | None = None,
) -> None:
    """Write ``data`` to ``path`` so readers see the old file or the new, never half.

    The temporary file is created in the same directory (so rename is
    atomic), owned and moded before any content is visible under ``path``.
    ``before_close`` runs on its still-open descriptor after owner and mode
    are set (to set capabilities on this very inode); ``check`` runs on the
    finished temporary file before the rename. Either may raise: the
    temporary file is then removed and ``path`` left untouched.
    """
    tmp = _write_temp(path, data, mode=mode, uid=uid, gid=gid, before_close=before_close)
    try:
        if check is not None:
            check(tmp)
        os.rename(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    fsync_dir(path.parent)


def _write_temp(
    path: Path,
    data: bytes,
    *,
    mode: int,
    uid: int,
    gid: int,
    before_close: Callable[[int], None] | None,
) -> Path:
    for attempt in range(100):
        tmp = path.with_name(f".{path.name}.capsetup-{os.getpid()}-{attempt}")
        try:
            # O_EXCL also refuses a symlink planted at this name.
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        except FileExistsError:
            continue
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            # chown clears set-id bits and capabilities, so it comes first.
            os.fchown(fd, uid, gid)
            os.fchmod(fd, mode)
            if before_close is not None:
                before_close(fd)
            os.fsync(fd)
        except BaseException:
            os.close(fd)
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise
        os.close(fd)
        return tmp
    raise FileExistsError(errno.EEXIST, f"cannot create a temporary file beside {path}")


def fsync_dir(path: Path) -> None:
    """Make a rename or unlink in ``path`` durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
