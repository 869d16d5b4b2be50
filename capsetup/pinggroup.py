"""ICMP echo for the helper's group: net.ipv4.ping_group_range, set and undone.

The defaults grant no raw socket (its holder can send any packet from any
source); ICMP echo goes through the kernel's datagram "ping" sockets, open to
the groups whose gid lies in net.ipv4.ping_group_range. ``capsetup install``
widens that range to cover the helper's group, never narrowing it: the new
range is the smallest one covering both the old range and the gid. It is
applied now (/proc/sys, which is per network namespace) and persisted in a
file under /etc/sysctl.d; the manifest records the previous range so
``capsetup remove`` restores exactly it.
"""

from __future__ import annotations

import hashlib
import os
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
        f"# the previous range {previous[0]} {previous[1]}.\n"
        f"{KEY} = {value[0]} {value[1]}\n"
    )


@dataclass(frozen=True)
class PingState:
    """What the manifest records of the ping group set-up (all None: nothing done)."""

    conf: str | None = None
    previous: tuple[int, int] | None = None
    applied: tuple[int, int] | None = None


def enable(
    layout: Layout, state: PingState, *, group: str, gid: int, sysctl_dir: Path = SYSCTL_DIR
) -> tuple[PingState, list[str]]:
    """Cover ``gid`` in the range, persisted; return the new record and what changed."""
    current = read_range()
    wanted = merged_range(current, gid)
    if wanted is None:
        return state, []
    conf = conf_file(layout, sysctl_dir)
    if not conf.parent.is_dir():
        raise SetupError(f"{conf.parent} does not exist: cannot persist {KEY} "
                         "(or pass --no-ping-group)")  # fmt: skip
    # A second install keeps the range found before the first one.
    previous = state.previous if state.previous is not None else current
    atomic_write(conf, render_conf(wanted, group, gid, previous).encode(), mode=0o644)
    apply_range(wanted)
    changes = [
        f"set {KEY} from {current[0]} {current[1]} to {wanted[0]} {wanted[1]} "
        f"(group {group} gid {gid} may ping without privilege; --no-ping-group opts out)",
        f"wrote {conf} (root:root 0644)",
    ]
    return PingState(str(conf), previous, wanted), changes


def disable(state: PingState) -> list[str]:
    """Undo ``enable``: delete the file, restore the previous range if still ours."""
    changes: list[str] = []
    if state.conf is not None:
        try:
            os.unlink(state.conf)
        except FileNotFoundError:
            pass
        else:
            changes.append(f"removed {state.conf}")
    if state.applied is None or state.previous is None:
        return changes
    try:
        current = read_range()
    except SetupError as err:
        return [*changes, f"kept {KEY}: {err}"]
    if current != state.applied:
        changes.append(f"kept {KEY} {current[0]} {current[1]}: changed since install "
                       f"(capsetup had set {state.applied[0]} {state.applied[1]})")  # fmt: skip
        return changes
    apply_range(state.previous)
    changes.append(f"restored {KEY} to {state.previous[0]} {state.previous[1]}")
    return changes
