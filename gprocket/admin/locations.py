"""Where a privileged file may live: the checks the helper applies, in one place.

Doctor, ``capsetup status`` and ``capsetup install`` use these, so they say
"ok" exactly where the helper would serve. Two sets of rules:

- the helper's own (helper/helper.c ``unsafe()`` and ``load_policy()``):
  every directory from ``/`` down to the helper's real directory owned by
  root and not group/other-writable, else it denies every request with
  "a directory above it is not root-only"; the policy file beside it the
  same, regular, at most 64 KiB (``helper_directory_refusal``,
  ``policy_file_refusal``);
- the installer's stricter ones (``path_problems``, ``chain_problems``): no
  symbolic link and no sticky shared directory either.

A privileged file is only as safe as every directory above it: whoever can
write to any of them can rename the file away and put another in its place.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "DIRECTORY_REFUSAL",
    "POLICY_MAX",
    "Mount",
    "chain_problems",
    "directory_refusal",
    "mount_of",
    "nearest_existing",
    "parse_mountinfo",
    "path_problems",
    "policy_file_refusal",
    "root_only",
]

# The helper's words (helper.c load_policy), so every report quotes it exactly.
DIRECTORY_REFUSAL = "a directory above it is not root-only"
UNCHECKABLE = "cannot check the helper's directory"
FILE_REFUSAL = "file not root-only, not regular or > 64 KiB"
OPEN_REFUSAL = "cannot open the policy file"
POLICY_MAX = 64 * 1024


def root_only(st: os.stat_result) -> bool:
    """The helper's ``unsafe()`` negated: owner root, no group or other write bit."""
    return st.st_uid == 0 and not st.st_mode & (stat.S_IWGRP | stat.S_IWOTH)


def _why_not_root_only(path: str, st: os.stat_result) -> str:
    mode = stat.S_IMODE(st.st_mode)
    if st.st_uid != 0:
        return f"{path} is owned by uid {st.st_uid}, not root"
    if mode & stat.S_IWOTH:
        return f"{path} is writable by others (mode {mode:04o})"
    return f"{path} is group-writable (mode {mode:04o})"


def directory_refusal(directory: Path | str) -> str | None:
    """Why a helper in ``directory`` would deny every request because of where it is.

    The helper reads its own path from /proc/self/exe (symbolic links
    resolved) and walks from ``/`` down to its directory; so does this (the
    policy file is the one beside the helper). None when every directory
    passes; else the helper's words plus the directory at fault.
    """
    directory = os.path.realpath(directory)
    current = "/"
    parts = [part for part in directory.split("/") if part]
    for index in range(len(parts) + 1):
        if index:
            current = os.path.join(current, parts[index - 1])
        try:
            st = os.lstat(current)
        except OSError as err:
            what = UNCHECKABLE if index == 0 else DIRECTORY_REFUSAL
            return f"{what}: {current}: {err.strerror}"
        if not stat.S_ISDIR(st.st_mode):
            return f"{DIRECTORY_REFUSAL}: {current} is not a directory"
        if not root_only(st):
            what = UNCHECKABLE if index == 0 else DIRECTORY_REFUSAL
            return f"{what}: {_why_not_root_only(current, st)}"
    return None


def policy_file_refusal(policy: Path | str) -> str | None:
    """Why the helper would refuse an existing policy file itself (None: it reads it).

    Mirrors the helper: opened without following a link, then owner root,
    not group/other-writable, a regular file, at most 64 KiB.
    """
    try:
        st = os.lstat(policy)
    except OSError as err:
        return f"{OPEN_REFUSAL}: {policy}: {err.strerror}"
    if stat.S_ISLNK(st.st_mode):
        return f"{OPEN_REFUSAL}: {policy} is a symbolic link"
    if not root_only(st):
        return f"{FILE_REFUSAL}: {_why_not_root_only(str(policy), st)}"
    if not stat.S_ISREG(st.st_mode):
        return f"{FILE_REFUSAL}: {policy} is not a regular file"
    if st.st_size > POLICY_MAX:
        return f"{FILE_REFUSAL}: {policy} is {st.st_size} bytes"
    return None


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


