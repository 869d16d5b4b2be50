"""gprocket.icmp._socket: argument checks and the error that explains the choice.

Opening real sockets (datagram when ping_group_range allows, else raw through
the helper) is shown by an unprivileged user in tests/privileged/test_ping_*.py.
"""

from __future__ import annotations

import contextlib
import errno
import os
import socket
import sys

import pytest

import gprocket
from gprocket.icmp import _socket as isock


@pytest.mark.parametrize(("family", "expected"), [
    ("inet", (socket.AF_INET, socket.IPPROTO_ICMP)),
    (4, (socket.AF_INET, socket.IPPROTO_ICMP)),
    (socket.AF_INET6, (socket.AF_INET6, socket.IPPROTO_ICMPV6)),
    ("inet6", (socket.AF_INET6, socket.IPPROTO_ICMPV6)),
])
def test_family_names(family: object, expected: tuple[int, int]) -> None:
    assert isock.family_and_protocol(family) == expected  # type: ignore[arg-type]


def test_other_families_are_refused() -> None:
    with pytest.raises(ValueError, match="inet or inet6"):
        isock.open_icmp_socket("packet")


def test_ladder_error_gains_the_datagram_attempt_and_its_fix() -> None:
    ladder = gprocket.PrivilegeError(
        "raw icmp socket (inet)",
        (gprocket.Attempt("plain", "the kernel refused", errno.EPERM),),
        "install the helper with: capsetup install")
    refusal = PermissionError(errno.EACCES, "Permission denied")
    err = isock.with_datagram_attempt(ladder, refusal)
    assert isinstance(err, gprocket.PrivilegeError)
    assert [a.rung for a in err.attempts] == ["datagram", "plain"]
    assert err.attempts[0].errno == errno.EACCES
    assert "ping_group_range" in err.attempts[0].reason
    assert err.fix.startswith("install the helper with: capsetup install; or allow ping")
    assert "datagram: ICMP datagram socket refused" in str(err)


def test_icmp4_filter_drops_every_type_but_the_passing_ones() -> None:
    mask = int.from_bytes(isock.icmp4_filter({0, 3, 11}), sys.byteorder)
    assert mask == 0xFFFFFFFF & ~(1 << 0 | 1 << 3 | 1 << 11)
    assert mask & (1 << 8)  # echo requests (ours, seen on loopback) are dropped
    with pytest.raises(ValueError, match=r"0\.\.31"):
        isock.icmp4_filter({128})


def _is_open(fd: int) -> bool:
    try:
        os.fstat(fd)
    except OSError as err:
        if err.errno == errno.EBADF:
            return False
        raise
    return True


def test_raw_descriptor_is_closed_when_wrapping_it_fails(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Any real socket will do as the rung's descriptor: no privilege needed.
    given = socket.socket(socket.AF_INET, socket.SOCK_DGRAM).detach()

    class Handing:
        name = "handing"

        def acquire(self, request: object) -> int:
            return given

    class Interrupted(socket.socket):
        # Ctrl-C (or MemoryError) arriving while the descriptor is wrapped.
        def __init__(self, *args: object, **kwargs: object) -> None:
            raise KeyboardInterrupt

    monkeypatch.setattr(socket, "socket", Interrupted)
    try:
        with pytest.raises(KeyboardInterrupt):
            isock.open_icmp_socket("inet", kind="raw",
                                   strategies=[Handing()])  # type: ignore[list-item]
        monkeypatch.undo()
        assert not _is_open(given), f"descriptor {given} leaked"
    finally:
        with contextlib.suppress(OSError):
            os.close(given)
