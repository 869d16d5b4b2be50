"""The compiled descriptor check (gprocket._channel._fdpass_speed) against the Python one.

The compiled check may only shorten the way to an acceptance: for real
sockets of several kinds and requests of several kinds it must say yes
exactly where the Python checks accept. Raw sockets: needs root.
"""

from __future__ import annotations

import os
import socket

import pytest

from gprocket._channel import fdpass
from gprocket._errors import HelperError
from gprocket._spec import SocketRequest


@pytest.mark.parametrize("family", [socket.AF_INET, socket.AF_INET6])
def test_compiled_check_accepts_exactly_what_the_python_check_accepts(family: int) -> None:
    """Sockets of several kinds against requests of several kinds: the compiled
    yes must never be given where the Python checks refuse, and must be given
    where they accept (else the fast path would be dead code)."""
    assert fdpass._speed is not None, "build it: python -m gprocket._channel.fdpass_build"
    loop = "127.0.0.1" if family == socket.AF_INET else "::1"
    fam = "inet" if family == socket.AF_INET else "inet6"
    requests = [
        SocketRequest(0, family=fam, protocol="udp"),
        SocketRequest(0, family=fam, protocol="udp", ip=loop),
        SocketRequest(5399, family=fam, protocol="udp", ip=loop),
        SocketRequest(0, family=fam, protocol="tcp", ip=loop),
        SocketRequest(0, family=fam, protocol="udp", interface="lo"),
        SocketRequest(family=fam, protocol="icmp" if family == socket.AF_INET else "icmpv6"),
    ]

    def made(kind: int, proto: int, port: int | None, device: bool, listen: bool) -> socket.socket:
        sock = socket.socket(family, kind, proto)
        if family == socket.AF_INET6 and kind != socket.SOCK_RAW:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        if device:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, b"lo")
        if port is not None:
            sock.bind((loop, port))
        if listen:
            sock.listen(1)
        return sock

    icmp = socket.IPPROTO_ICMP if family == socket.AF_INET else socket.IPPROTO_ICMPV6
    sockets = [
        made(socket.SOCK_DGRAM, 0, None, False, False),
        made(socket.SOCK_DGRAM, 0, 0, False, False),
        made(socket.SOCK_DGRAM, 0, 5399, False, False),
        made(socket.SOCK_STREAM, 0, 0, False, True),
        made(socket.SOCK_STREAM, 0, 0, False, False),
        made(socket.SOCK_DGRAM, 0, None, True, False),
        made(socket.SOCK_RAW, icmp, None, False, False),
    ]
    accepted = 0
    for sock in sockets:
        for request in requests:
            expect = fdpass._expect(request)
            fast = fdpass._compiled_check(sock.fileno(), expect)
            try:
                fdpass._verify_socket(sock.fileno(), request)
                slow = not os.get_inheritable(sock.fileno())
            except HelperError:
                slow = False
            assert fast == slow, (sock, request)
            accepted += fast
    for sock in sockets:
        sock.close()
    assert accepted >= 6
