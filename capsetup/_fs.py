"""Filesystem safety checks and atomic writes.

A privileged file is only as safe as every directory above it: whoever can
write to any of them can rename the file away and put another in its place.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "Mount",
    "atomic_write",
    "chain_problems",
    "fsync_dir",
    "mount_of",
    "nearest_existing",
    "parse_mountinfo",
    "path_problems",
]


def path_problems(path: Path) -> list[str]:
    """Why ``path`` itself could be changed by someone other than root.

    Owner must be root; no write bit for group or others, even group root, as
    the helper's own policy check demands; a sticky directory is refused too
    (/tmp-like directories let others create names).
    """
    st = os.lstat(path)
    problems = []
    if stat.S_ISLNK(st.st_mode):
        problems.append(f"{path} is a symbolic link")
    if st.st_uid != 0:
        problems.append(f"{path} is owned by uid {st.st_uid}, not root")
    if st.st_mode & stat.S_IWGRP:
        problems.append(f"{path} is group-writable (mode {stat.S_IMODE(st.st_mode):04o})")
    if st.st_mode & stat.S_IWOTH:
        problems.append(f"{path} is writable by others (mode {stat.S_IMODE(st.st_mode):04o})")
    if stat.S_ISDIR(st.st_mode) and st.st_mode & stat.S_ISVTX:
        problems.append(f"{path} has the sticky bit (a shared directory like /tmp)")
    return problems


def chain_problems(path: Path) -> list[str]:
    """Problems of ``path`` and of every directory from it up to ``/``.

    ``path`` must be absolute and exist.
    """
    if not path.is_absolute():
        raise ValueError(f"{path} is not an absolute path")
    problems: list[str] = []
    current = path
    while True:
        problems.extend(path_problems(current))
        if current.parent == current:
            return problems
        current = current.parent


def nearest_existing(path: Path) -> Path:
    """``path`` or its closest ancestor that exists."""
    current = path
    while not os.path.lexists(current):
        current = current.parent
    return current


@dataclass(frozen=True)
class Mount:
    """One line of /proc/self/mountinfo (the parts an installer needs)."""

    mount_point: str
    options: frozenset[str]
    fstype: str
    source: str
    super_options: frozenset[str]

    @property
    def nosuid(self) -> bool:
        """True when set-user-id bits and file capabilities are ignored here."""
        return "nosuid" in self.options

    @property
    def read_only(self) -> bool:
        """True when the mount is read-only."""
        return "ro" in self.options


def _unescape(field: str) -> str:
    # mountinfo escapes space, tab, newline and backslash as \ooo octal.
    out = []
    i = 0
    while i < len(field):
        if field[i] == "\\" and field[i + 1 : i + 4].isdigit() and i + 3 < len(field):
            out.append(chr(int(field[i + 1 : i + 4], 8)))
            i += 4
        else:
            out.append(field[i])
            i += 1
    return "".join(out)


def parse_mountinfo(text: str) -> list[Mount]:
    """Parse /proc/self/mountinfo text; lines that do not parse are skipped."""
    mounts = []
    for line in text.splitlines():
        fields = line.split()
        if "-" not in fields:
            continue
        sep = fields.index("-")
        if sep < 6 or len(fields) < sep + 4:
            continue
        mounts.append(
            Mount(
                mount_point=_unescape(fields[4]),
                options=frozenset(fields[5].split(",")),
                fstype=fields[sep + 1],
                source=_unescape(fields[sep + 2]),
                super_options=frozenset(fields[sep + 3].split(",")),
            )
        )
    return mounts


def mount_of(path: Path, mountinfo: str | None = None) -> Mount:
    """The mount that holds ``path`` (the last, longest matching mount point).

    Raises LookupError when no mount matches (cannot happen for a real path).
    """
    if mountinfo is None:
        mountinfo = Path("/proc/self/mountinfo").read_text()
    real = os.path.realpath(nearest_existing(path))
    best: Mount | None = None
    for mount in parse_mountinfo(mountinfo):
        point = mount.mount_point
        inside = real == point or real.startswith(point.rstrip("/") + "/")
        # Later lines over-mount earlier ones at the same point.
        if inside and (best is None or len(point) >= len(best.mount_point)):
            best = mount
    if best is None:
        raise LookupError(f"no mount holds {path}")
    return best


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
