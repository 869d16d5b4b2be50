"""The environment variables that choose code or paths, read as secure_getenv(3) would.

GPROCKET_HELPER names the program the ladder runs and GPROCKET_STRATEGIES
which rungs run: in a process that holds privilege they would let whoever
sets its environment (a caller of a setuid or capability-carrying program, a
unit file's drop-in) choose what runs with that privilege. So they are
ignored when the process runs with effective uid 0, holds any effective or
permitted capability, or was started with AT_SECURE set (a set-id or
file-capability exec: glibc's secure_getenv follows the same flag); the
callers then pass ``helper=`` / ``strategies=`` explicitly. Doctor reports
what was ignored and why (``ignored()``).

GPROCKET_ICMP_ENGINE is not among them: it chooses between the package's own
two ICMP engines, never a path.
"""

from __future__ import annotations

import functools
import os
import struct

__all__ = ["GUARDED", "ignored", "privilege_reason", "trusted_getenv"]

GUARDED = ("GPROCKET_HELPER", "GPROCKET_STRATEGIES")

_AT_NULL = 0
_AT_SECURE = 23


@functools.cache
def _at_secure() -> bool:
    """AT_SECURE from the auxiliary vector (fixed for the process's life)."""
    try:
        with open("/proc/self/auxv", "rb") as auxv:
            data = auxv.read()
    except OSError:
        # Unreadable (a set-id process's /proc/self may be root-only): assume the worst.
        return True
    word = struct.calcsize("@L")
    for offset in range(0, len(data) - 2 * word + 1, 2 * word):
        key, value = struct.unpack_from("@LL", data, offset)
        if key == _AT_NULL:
            break
        if key == _AT_SECURE:
            return bool(value)
    return False


def _capability_sets(path: str) -> tuple[int, int]:
    effective = permitted = 0
    with open(path, encoding="ascii") as status:
        for line in status:
            if line.startswith("CapEff:"):
                effective = int(line.split()[1], 16)
            elif line.startswith("CapPrm:"):
                permitted = int(line.split()[1], 16)
    return effective, permitted


def privilege_reason() -> str | None:
    """Why this process counts as privileged (None: it does not).

    Effective uid 0, any effective or permitted capability of the process or
    the calling thread, or AT_SECURE set at exec.
    """
    if os.geteuid() == 0:
        return "it runs with effective uid 0"
    if _at_secure():
        return "it was started set-id or with file capabilities (AT_SECURE)"
    for path in ("/proc/self/status", "/proc/thread-self/status"):
        try:
            effective, permitted = _capability_sets(path)
        except OSError:
            return f"cannot read its capability sets from {path}"
        if effective:
            return f"it holds effective capabilities (CapEff {effective:016x})"
        if permitted:
            return f"it holds permitted capabilities (CapPrm {permitted:016x})"
    return None


def trusted_getenv(name: str) -> str | None:
    """``os.environ[name]`` unless this process is privileged (then None).

    Cheap when the variable is unset: the privilege check runs only for a
    value that would otherwise be used.
    """
    value = os.environ.get(name)
    if not value or not value.strip():
        return None
    if privilege_reason() is not None:
        return None
    return value


def ignored() -> tuple[str, ...]:
    """One line per guarded variable that is set but ignored here, with the reason."""
    present = [name for name in GUARDED if os.environ.get(name, "").strip()]
    if not present:
        return ()
    reason = privilege_reason()
    if reason is None:
        return ()
    hint = {"GPROCKET_HELPER": "helper=", "GPROCKET_STRATEGIES": "strategies="}
    return tuple(f"{name}={os.environ[name]!r} ignored because {reason}: pass {hint[name]} "
                 "explicitly" for name in present)  # fmt: skip
