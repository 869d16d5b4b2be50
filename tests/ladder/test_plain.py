"""In-process socket creation (the plain rung's code) on what any user may open.

What needs root (interface binding, packet sockets, TUN) is in
tests/privileged/test_kernel_root.py.
"""

from __future__ import annotations

import errno
import os
import socket
from collections.abc import Iterator

import pytest

from gprocket._ladder.caps import CAP_NET_ADMIN, CAP_NET_BIND_SERVICE, CAP_NET_RAW
from gprocket._ladder.plain import needed_caps, open_socket
from gprocket._spec import SocketRequest, TunRequest


def _fds() -> set[str]:
    return set(os.listdir("/proc/self/fd"))


def _free_port() -> int:
    with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as probe:
        probe.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        probe.bind(("::", 0))
        return int(probe.getsockname()[1])


@pytest.fixture
def sock_of() -> Iterator[object]:
    opened: list[socket.socket] = []

    def wrap(req: SocketRequest) -> socket.socket:
        sock = socket.socket(fileno=open_socket(req))
        opened.append(sock)
        return sock

    yield wrap
    for sock in opened:
        sock.close()


def test_udp_low_port_bound_and_cloexec(sock_of) -> None:  # type: ignore[no-untyped-def]
    sock = sock_of(SocketRequest(0, protocol="udp", ip="127.0.0.1"))
    assert (sock.family, sock.type, sock.proto) == (socket.AF_INET, socket.SOCK_DGRAM, 17)
    assert sock.getsockname()[0] == "127.0.0.1"
    assert not os.get_inheritable(sock.fileno())


def test_tcp_is_listening_with_reuseaddr(sock_of) -> None:  # type: ignore[no-untyped-def]
    sock = sock_of(SocketRequest(0, ip="127.0.0.1", backlog=7))
    assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN) == 1
    assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR) == 1
    client = socket.create_connection(sock.getsockname())
    conn, _ = sock.accept()
    client.sendall(b"hi")
    assert conn.recv(2) == b"hi"
    conn.close()
    client.close()


def test_dual_stack_accepts_ipv4_and_ipv6(sock_of) -> None:  # type: ignore[no-untyped-def]
    port = _free_port()
    sock = sock_of(SocketRequest(port, family="unspec", protocol="udp"))
    assert sock.getsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY) == 0
    assert sock.getsockname()[:2] == ("::", port)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as c4:
        c4.sendto(b"four", ("127.0.0.1", port))
    with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as c6:
        c6.sendto(b"six", ("::1", port))
    assert {sock.recv(10), sock.recv(10)} == {b"four", b"six"}


def test_inet6_without_dualstack_is_v6only(sock_of) -> None:  # type: ignore[no-untyped-def]
    sock = sock_of(SocketRequest(0, family="inet6", protocol="udp", ip="::1"))
    assert sock.getsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY) == 1




@pytest.mark.parametrize(
    ("req", "err"),
    [
        (SocketRequest(0, protocol="udp", ip="192.0.2.77"), errno.EADDRNOTAVAIL),
        (SocketRequest(0, protocol="udp", interface="gpnosuch0"), errno.ENODEV),
    ],
)
def test_failures_keep_errno_and_close_the_descriptor(req: SocketRequest, err: int) -> None:
    before = _fds()
    with pytest.raises(OSError) as info:
        open_socket(req)
    assert info.value.errno == err
    assert _fds() == before


def test_address_in_use_names_the_address() -> None:
    first = open_socket(SocketRequest(0, protocol="udp", ip="127.0.0.1"))
    try:
        with socket.socket(fileno=os.dup(first)) as view:
            port = view.getsockname()[1]
        before = _fds()
        with pytest.raises(OSError, match=rf"cannot bind \('127.0.0.1', {port}\)") as info:
            open_socket(SocketRequest(port, protocol="udp", ip="127.0.0.1"))
        assert info.value.errno == errno.EADDRINUSE
        assert _fds() == before
    finally:
        os.close(first)


@pytest.mark.parametrize(
    ("req", "caps"),
    [
        (SocketRequest(53, protocol="udp"), (CAP_NET_BIND_SERVICE,)),
        (SocketRequest(0, protocol="icmp"), (CAP_NET_RAW,)),
        (SocketRequest(family="packet"), (CAP_NET_RAW,)),
        (SocketRequest(0, protocol="icmp", type="dgram"), ()),
        (SocketRequest(8080, protocol="tcp"), ()),
        (TunRequest("gp0"), (CAP_NET_ADMIN,)),
    ],
)
def test_needed_caps(req: SocketRequest, caps: tuple[int, ...]) -> None:
    assert needed_caps(req) == caps


