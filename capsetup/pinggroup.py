"""ICMP echo for the helper's group: net.ipv4.ping_group_range, set and undone.

The defaults grant no raw socket (its holder can send any packet from any
source); ICMP echo goes through the kernel's datagram "ping" sockets, open to
the groups whose gid lies in net.ipv4.ping_group_range. ``capsetup install``
widens that range to cover the helper's group, never narrowing it: the new
range is the smallest one covering both the old range and the gid. It is
applied now (/proc/sys, which is per network namespace) and persisted in a
file under /etc/sysctl.d; the manifest records the previous range so
``capsetup remove`` restores exactly it.

The range is one setting for the whole host (per network namespace), and
several installs (prefixes) may rely on it. So every install's file says, on
a line of its own, which gid it needs and which range was found before the
first install, and every install's file holds the same value, the range that
covers them all (sysctl applies the files at boot in name order, the last
one winning): an install widens the others' files too, and a remove narrows
the range only to what the remaining installs still need.
"""

from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass
from pathlib import Path

from capsetup._fs import atomic_write
from capsetup._layout import DEFAULT_PREFIX, Layout, SetupError

__all__ = [
    "PING_SYSCTL",
    "SYSCTL_DIR",
    "PingState",
    "apply_range",
    "conf_file",
    "disable",
    "enable",
    "merged_range",
    "read_range",
    "render_conf",
]

PING_SYSCTL = Path("/proc/sys/net/ipv4/ping_group_range")
SYSCTL_DIR = Path("/etc/sysctl.d")
KEY = "net.ipv4.ping_group_range"
GLOB = "60-gprocket-ping*.conf"
# The machine-readable line of each install's file: its gid, and the range
# found before the first install.
_NEED = re.compile(r"^# gprocket-ping: gid=(\d+) original=(\d+) (\d+)$", re.MULTILINE)
_VALUE = re.compile(rf"^{re.escape(KEY)} = (\d+) (\d+)$", re.MULTILINE)


def conf_file(layout: Layout, sysctl_dir: Path = SYSCTL_DIR) -> Path:
    """The persisted setting for this prefix; one per prefix, like the sudoers drop-in."""
    if layout.prefix == DEFAULT_PREFIX:
        return sysctl_dir / "60-gprocket-ping.conf"
    digest = hashlib.sha256(str(layout.prefix).encode()).hexdigest()[:12]
    return sysctl_dir / f"60-gprocket-ping-{digest}.conf"


def read_range(path: Path = PING_SYSCTL) -> tuple[int, int]:
    """The range in force in this network namespace; raises SetupError if unreadable."""
    try:
        low, high = path.read_text().split()
        return int(low), int(high)
    except (OSError, ValueError) as err:
        raise SetupError(f"cannot read {path}: {err}") from err


def merged_range(current: tuple[int, int], gid: int) -> tuple[int, int] | None:
    """The smallest range covering ``current`` and ``gid``; None when it already does.

    An empty range (low > high, the kernel's "1 0") becomes ``gid gid``.
    """
    low, high = current
    if low > high:
        return gid, gid
    if low <= gid <= high:
        return None
    return min(low, gid), max(high, gid)


def apply_range(value: tuple[int, int], path: Path = PING_SYSCTL) -> None:
    """Write ``value`` to the running kernel (this network namespace)."""
    try:
        path.write_text(f"{value[0]}\t{value[1]}\n")
    except OSError as err:
        raise SetupError(f"cannot set {KEY} to {value[0]} {value[1]}: {err}") from err


def render_conf(value: tuple[int, int], group: str, gid: int, previous: tuple[int, int]) -> str:
    """The sysctl.d file's text."""
    return (
        f"# Written by capsetup install: members of group {group} (gid {gid}) may use\n"
        f"# ICMP echo (ping) sockets. capsetup remove deletes this file and restores\n"
        f"# the previous range {previous[0]} {previous[1]}, or what other installs still need.\n"
        f"# gprocket-ping: gid={gid} original={previous[0]} {previous[1]}\n"
        f"{KEY} = {value[0]} {value[1]}\n"
    )


@dataclass(frozen=True)
class PingState:
    """What the manifest records of the ping group set-up (all None: nothing done)."""

    conf: str | None = None
    previous: tuple[int, int] | None = None
    applied: tuple[int, int] | None = None


@dataclass(frozen=True)
class _Peer:
    """Another install's file: what it needs (None: a file without the need line)."""

    path: Path
    gid: int | None
    original: tuple[int, int] | None
    value: tuple[int, int] | None


def _peers(sysctl_dir: Path, ours: Path) -> list[_Peer]:
    """The other installs' files in ``sysctl_dir``."""
    peers = []
    for path in sorted(sysctl_dir.glob(GLOB)):
        if path == ours or not path.is_file():
            continue
        try:
            text = path.read_text()
        except OSError:
            continue
        need, value = _NEED.search(text), _VALUE.search(text)
        peers.append(_Peer(
            path,
            int(need[1]) if need else None,
            (int(need[2]), int(need[3])) if need else None,
            (int(value[1]), int(value[2])) if value else None,
        ))
    return peers


def _covering(original: tuple[int, int], peers: list[_Peer]) -> tuple[int, int]:
    """The smallest range covering ``original`` and every peer's need (its gid, or
    for a file without the need line its whole value)."""
    wanted = original
    for peer in peers:
        for gid in ((peer.gid,) if peer.gid is not None else peer.value or ()):
            wanted = merged_range(wanted, gid) or wanted
    return wanted


def _rewrite_value(path: Path, value: tuple[int, int]) -> bool:
    """Set the value line of another install's file; whether it changed."""
    text = path.read_text()
    new = _VALUE.sub(f"{KEY} = {value[0]} {value[1]}", text, count=1)
    if new == text:
        return False
    atomic_write(path, new.encode(), mode=0o644)
    return True


def enable(
    layout: Layout, state: PingState, *, group: str, gid: int, sysctl_dir: Path = SYSCTL_DIR
) -> tuple[PingState, list[str]]:
    """Cover ``gid`` in the range, persisted; return the new record and what changed."""
    current = read_range()
    wanted = merged_range(current, gid)
    conf = conf_file(layout, sysctl_dir)
    peers = _peers(sysctl_dir, conf)  # none when the directory is missing
    # Covered already: by the administrator's own range (nothing to record), by
    # this install (nothing to do), or by another install, whose remove must
    # then know this one still needs the gid.
    if wanted is None and (state.conf is not None or not peers):
        return state, []
    if not conf.parent.is_dir():
        raise SetupError(f"{conf.parent} does not exist: cannot persist {KEY} "
                         "(or pass --no-ping-group)")  # fmt: skip
    # The range found before the first install: ours, or another install's.
    originals = [peer.original for peer in peers if peer.original is not None]
    previous = state.previous or (originals[0] if originals else current)
    value = wanted or current
    atomic_write(conf, render_conf(value, group, gid, previous).encode(), mode=0o644)
    changes = []
    if wanted is not None:
        apply_range(wanted)
        changes.append(
            f"set {KEY} from {current[0]} {current[1]} to {wanted[0]} {wanted[1]} "
            f"(group {group} gid {gid} may ping without privilege; --no-ping-group opts out)")
    changes.append(f"wrote {conf} (root:root 0644)")
    changes.extend(f"set {peer.path} to {value[0]} {value[1]}"
                   for peer in peers if _rewrite_value(peer.path, value))
    return PingState(str(conf), previous, value), changes


def disable(state: PingState) -> list[str]:
    """Undo ``enable``: delete the file, and narrow the range back to what was
    found before the first install plus what other installs still need, if
    nobody changed it since."""
    changes: list[str] = []
    last = state.applied
    peers: list[_Peer] = []
    if state.conf is not None:
        conf = Path(state.conf)
        try:
            found = _VALUE.search(conf.read_text())
        except OSError:
            found = None
        if found:  # another install may have widened it since this one's record
            last = (int(found[1]), int(found[2]))
        try:
            os.unlink(conf)
        except FileNotFoundError:
            pass
        else:
            changes.append(f"removed {conf}")
        peers = _peers(conf.parent, conf)
    if last is None or state.previous is None:
        return changes
    try:
        current = read_range()
    except SetupError as err:
        return [*changes, f"kept {KEY}: {err}"]
    if current != last:
        changes.append(f"kept {KEY} {current[0]} {current[1]}: changed since install "
                       f"(capsetup had set {last[0]} {last[1]})")  # fmt: skip
        return changes
    wanted = _covering(state.previous, peers)
    if wanted != current:
        apply_range(wanted)
        changes.append(f"restored {KEY} to {wanted[0]} {wanted[1]}" + (
            " (what the other installs still need)" if wanted != state.previous else ""))
    changes.extend(f"set {peer.path} to {wanted[0]} {wanted[1]}"
                   for peer in peers if _rewrite_value(peer.path, wanted))
    return changes
