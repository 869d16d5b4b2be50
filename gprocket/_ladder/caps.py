"""Linux capabilities of the calling thread: read, raise around one call, drop.

Capabilities are per thread; gevent runs every greenlet on one OS thread and
a greenlet cannot be switched out in the middle of a non-blocking syscall,
so raising a capability around ``socket()``/``bind()`` exposes it to no
other code. The sets are always left exactly as they were found.

``drop_effective`` uses python-prctl. The raise/lower around one call uses
capget(2)/capset(2) from libc through cffi: python-prctl's ``set_caps`` goes
through libcap (cap_get_proc/cap_set_proc: two syscalls and an allocation
per change), which made the capabilities rung cost three times a plain bind
instead of about two (two real capset(2) calls are the floor).
"""

from __future__ import annotations

import functools
import os
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import _prctl  # type: ignore[import-not-found,unused-ignore]  # noqa: PLC2701 - python-prctl's C module
import cffi

__all__ = [
    "CAP_NET_ADMIN",
    "CAP_NET_BIND_SERVICE",
    "CAP_NET_RAW",
    "CAP_SYS_ADMIN",
    "CapSets",
    "MissingCapability",
    "cap_name",
    "drop_effective",
    "effective_among",
    "raised",
    "read_sets",
]

CAP_NET_BIND_SERVICE = 10
CAP_NET_ADMIN = 12
CAP_NET_RAW = 13
CAP_SYS_ADMIN = 21

_NAMES = {
    CAP_NET_BIND_SERVICE: "CAP_NET_BIND_SERVICE",
    CAP_NET_ADMIN: "CAP_NET_ADMIN",
    CAP_NET_RAW: "CAP_NET_RAW",
    CAP_SYS_ADMIN: "CAP_SYS_ADMIN",
}


def cap_name(cap: int) -> str:
    """The capability's name as in capabilities(7)."""
    return _NAMES.get(cap, f"CAP_{cap}")


@dataclass(frozen=True)
class CapSets:
    """A thread's capability sets as bit masks (bit N = capability N)."""

    permitted: int
    effective: int
    inheritable: int
    ambient: int
    bounding: int

    def has_permitted(self, cap: int) -> bool:
        """True when ``cap`` may be raised into the effective set."""
        return bool(self.permitted >> cap & 1)

    def has_effective(self, cap: int) -> bool:
        """True when ``cap`` is in force right now."""
        return bool(self.effective >> cap & 1)


def read_sets(pid: int | None = None) -> CapSets:
    """The capability sets of this thread (or of process ``pid``) from /proc."""
    path = "/proc/thread-self/status" if pid is None else f"/proc/{pid}/status"
    values: dict[str, int] = {}
    with open(path, encoding="ascii") as status:
        for line in status:
            if line.startswith("Cap"):
                key, _, value = line.partition(":")
                values[key] = int(value, 16)
    return CapSets(
        permitted=values["CapPrm"],
        effective=values["CapEff"],
        inheritable=values["CapInh"],
        ambient=values["CapAmb"],
        bounding=values["CapBnd"],
    )


class MissingCapability(PermissionError):
    """A capability needed for the call is not in the permitted set."""

    def __init__(self, missing: tuple[int, ...]) -> None:
        names = ", ".join(cap_name(cap) for cap in missing)
        super().__init__(f"{names} not in the permitted set")
        self.missing = missing


class raised:
    """Make ``caps`` effective on this thread for the ``with`` body only.

    Capabilities that were already effective (ambient ones, for example)
    are left effective; only those raised here are lowered afterwards, so
    the thread's sets end exactly as they started. Raises MissingCapability
    before changing anything if one is not permitted. A failure to lower
    is an OSError: holding privilege by accident is worse than failing.
    The body must not change capabilities itself.
    """

    __slots__ = ("_data", "_header", "_raised", "_wanted")

    def __init__(self, caps: Iterable[int]) -> None:
        self._wanted = _mask(tuple(caps))
        self._raised = (0, 0)

    def __enter__(self) -> None:
        want_lo, want_hi = self._wanted
        if not want_lo | want_hi:
            return
        header, data = _buffers()
        _capget(header, data)
        # data is two (effective, permitted, inheritable) triples: bits 0-31, 32-63.
        missing = (want_lo & ~data[1]) | (want_hi & ~data[4]) << 32
        if missing:
            raise MissingCapability(tuple(cap for cap in range(64) if missing >> cap & 1))
        up_lo = want_lo & ~data[0]
        up_hi = want_hi & ~data[3]
        if up_lo | up_hi:
            data[0] |= up_lo
            data[3] |= up_hi
            _capset(header, data)
            self._raised = (up_lo, up_hi)
            self._header, self._data = header, data

    def __exit__(self, *exc: object) -> None:
        up_lo, up_hi = self._raised
        if up_lo | up_hi:
            data = self._data
            data[0] &= ~up_lo
            data[3] &= ~up_hi
            _capset(self._header, data)
            self._raised = (0, 0)


@functools.lru_cache(maxsize=64)
def _mask(caps: tuple[int, ...]) -> tuple[int, int]:
    bits = 0
    for cap in caps:
        bits |= 1 << cap
    return bits & 0xFFFFFFFF, bits >> 32


# capget/capset straight from libc (cffi, ABI mode): python-prctl's
# set_caps goes through libcap's cap_get_proc/cap_set_proc, two syscalls and
# an allocation per change, which doubled the cost of the capabilities rung.
_ffi = cffi.FFI()
_ffi.cdef(
    """
    typedef struct { uint32_t version; int pid; } gp_cap_header;
    int capget(gp_cap_header *hdrp, uint32_t *datap);
    int capset(gp_cap_header *hdrp, const uint32_t *datap);
    """
)
_libc = _ffi.dlopen(None)
_LINUX_CAPABILITY_VERSION_3 = 0x20080522
_local = threading.local()


def _buffers() -> tuple[Any, Any]:
    """This thread's capget/capset buffers (capabilities are per thread)."""
    try:
        return _local.buffers  # type: ignore[no-any-return]
    except AttributeError:
        header = _ffi.new("gp_cap_header *", {"version": _LINUX_CAPABILITY_VERSION_3})
        _local.buffers = (header, _ffi.new("uint32_t[6]"))
        return _local.buffers  # type: ignore[no-any-return]


def _capget(header: Any, data: Any) -> None:
    if _libc.capget(header, data) != 0:
        err = _ffi.errno
        raise OSError(err, f"capget: {os.strerror(err)}")


def _capset(header: Any, data: Any) -> None:
    if _libc.capset(header, data) != 0:
        err = _ffi.errno
        raise OSError(err, f"capset: {os.strerror(err)}")


def effective_among(caps: Iterable[int]) -> tuple[int, ...]:
    """Those of ``caps`` that are effective on this thread now."""
    wanted_lo, wanted_hi = _mask(tuple(caps))
    if not wanted_lo | wanted_hi:
        return ()
    header, data = _buffers()
    _capget(header, data)
    held = (wanted_lo & data[0]) | (wanted_hi & data[3]) << 32
    return tuple(cap for cap in range(64) if held >> cap & 1)


def drop_effective() -> None:
    """Lower every effective capability of the calling thread (iputils' hygiene).

    The permitted set is kept, so gprocket's capabilities rung can still
    raise what one call needs. Ambient capabilities stay ambient (they are
    re-applied only at execve). Threads started later inherit the empty
    effective set. Raises OSError if the kernel refuses.
    """
    everything = list(range(_prctl.CAP_LAST_CAP + 1))
    _prctl.set_caps([], [], [], everything, [], [])
    if read_sets().effective:
        raise OSError(f"capabilities still effective after dropping them (pid {os.getpid()})")
