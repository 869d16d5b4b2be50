"""gprocket.servers: address parsing and listeners inside gevent servers.

These run as the test process's own user on loopback with kernel-chosen
ports (the plain rung); privileged ports as an unprivileged user are shown
in tests/privileged/test_servers_lowport.py.
"""

from __future__ import annotations

import errno
import socket
from pathlib import Path
from typing import Any

import gevent
import pytest
from gevent.server import DatagramServer, StreamServer

from gprocket import Socket
from gprocket.servers import (
    ListenAddress,
    datagram_server,
    listener,
    needs_privilege,
    parse_address,
    stream_server,
)

INET, INET6 = socket.AF_INET, socket.AF_INET6


@pytest.mark.parametrize(("address", "expected"), [
    (53, ListenAddress(INET, "", 53)),
    ("53", ListenAddress(INET, "", 53)),
    (":53", ListenAddress(INET, "", 53)),
    ("*:80", ListenAddress(INET, "", 80)),
    ("127.0.0.1:53", ListenAddress(INET, "127.0.0.1", 53)),
    ("[::]:53", ListenAddress(INET6, "::", 53)),
    ("[::1]:8053", ListenAddress(INET6, "::1", 8053)),
    ("[fe80::1%1]:53", ListenAddress(INET6, "fe80::1", 53, 1)),
    ("[fe80::1%lo]:53", ListenAddress(INET6, "fe80::1", 53, socket.if_nametoindex("lo"))),
    (("::1", 53), ListenAddress(INET6, "::1", 53)),
    (("::1", 53, 0, 7), ListenAddress(INET6, "::1", 53, 7)),
    (("", 0), ListenAddress(INET, "", 0)),
])
def test_parse_address(address: Any, expected: ListenAddress) -> None:
    assert parse_address(address) == expected


def test_parse_address_resolves_names_now() -> None:
    parsed = parse_address("localhost:53")
    assert parsed.port == 53
    assert parsed.ip in ("127.0.0.1", "::1")


@pytest.mark.parametrize(("address", "message"), [
    ("::1:53", "brackets"),
    ("[::1]53", "look like"),
    ("[127.0.0.1]:53", "brackets are for IPv6"),
    (":http", "not a number"),
    (":65536", "out of range"),
    (70000, "out of range"),
    ("127.0.0.1%eth0:53", "scope"),
    (("127.0.0.1", 53, 0, 3), "scope_id"),
    (("127.0.0.1",), "must be"),
    ("no-such-host.invalid:53", "cannot resolve"),
])
def test_parse_address_refuses(address: Any, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_address(address)


def test_parse_address_type_errors() -> None:
    with pytest.raises(TypeError):
        parse_address(True)
    with pytest.raises(TypeError):
        parse_address(5.3)  # type: ignore[arg-type]


def test_str_round_trips() -> None:
    for text in ("[::1]:53", "127.0.0.1:8080", "[fe80::1%2]:53"):
        assert str(parse_address(text)) == text
    assert str(parse_address(":53")) == "0.0.0.0:53"


def test_needs_privilege_follows_the_namespace_sysctl() -> None:
    start = int(Path("/proc/sys/net/ipv4/ip_unprivileged_port_start").read_text())
    assert needs_privilege(0) is False
    assert needs_privilege(start) is False
    assert needs_privilege(start - 1) is (start > 1)


def test_tcp_listener_drops_into_stream_server() -> None:
    sock = listener("127.0.0.1:0", "tcp")
    assert isinstance(sock, Socket)
    assert sock.rung == "plain"
    port = sock.getsockname()[1]

    def handle(conn: Any, _address: Any) -> None:
        conn.sendall(conn.recv(100).upper())

    server = StreamServer(sock, handle)
    server.start()
    try:
        client = gevent.socket.create_connection(("127.0.0.1", port))
        client.sendall(b"hello")
        assert client.recv(100) == b"HELLO"
        client.close()
    finally:
        server.stop()


def test_udp_listener_drops_into_datagram_server() -> None:
    server: DatagramServer

    def handle(data: bytes, address: Any) -> None:
        server.sendto(data[::-1], address)

    server = datagram_server("[::1]:0", handle)
    assert server.socket.rung == "plain"
    server.start()
    try:
        port = server.address[1]
        client = gevent.socket.socket(INET6, socket.SOCK_DGRAM)
        client.sendto(b"abc", ("::1", port))
        assert client.recvfrom(100)[0] == b"cba"
        client.close()
    finally:
        server.stop()


def test_dualstack_listener_accepts_ipv4_and_ipv6() -> None:
    peers = []

    def handle(conn: Any, address: Any) -> None:
        peers.append(address[0])
        conn.sendall(b"ok")

    server = stream_server("[::]:0", handle, dualstack=True)
    server.start()
    try:
        port = server.address[1]
        for host in ("127.0.0.1", "::1"):
            client = gevent.socket.create_connection((host, port))
            assert client.recv(2) == b"ok"
            client.close()
    finally:
        server.stop()
    assert peers == ["::ffff:127.0.0.1", "::1"]


def test_listener_refuses_bad_options() -> None:
    with pytest.raises(ValueError, match="protocol"):
        listener(":0", "icmp")
    with pytest.raises(ValueError, match="dualstack"):
        listener("127.0.0.1:0", "tcp", dualstack=True)
    with pytest.raises(ValueError, match="dualstack"):
        listener("[::1]:0", "tcp", dualstack=True)
    with pytest.raises(ValueError, match="backlog"):
        listener(":0", "udp", backlog=5)
    with pytest.raises(ValueError, match="tcp or sctp"):
        stream_server(":0", print, protocol="udp")


def test_kernel_errors_keep_their_errno() -> None:
    first = listener("127.0.0.1:0", "udp")
    try:
        with pytest.raises(OSError) as info:
            listener(f"127.0.0.1:{first.getsockname()[1]}", "udp")
        assert info.value.errno == errno.EADDRINUSE  # from the plain rung, unchanged
    finally:
        first.close()
