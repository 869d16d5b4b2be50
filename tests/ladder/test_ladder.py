"""The ladder: order, overrides, what stops it, what it reports (in-process, any user).

The rungs that need root (capabilities, the helper, namespaces) are exercised
in tests/privileged/test_ladder_root.py.
"""

from __future__ import annotations

import errno
import os
import socket

import gevent
import pytest
from gevent.server import DatagramServer, StreamServer

import gprocket
from gprocket._errors import HelperError, RungRefused, RungUnavailable
from gprocket._ladder import DEFAULT_ORDER, resolve
from gprocket._spec import Request, SocketRequest


class Recorder:
    """A strategy that records calls and serves a plain UDP socket."""

    name = "recorder"

    def __init__(self) -> None:
        self.calls: list[Request] = []

    def acquire(self, request: Request) -> int:
        self.calls.append(request)
        return socket.socket(socket.AF_INET, socket.SOCK_DGRAM).detach()


class Unavailable:
    name = "nothing"

    def acquire(self, request: Request) -> int:
        raise RungUnavailable("nothing installed", "join group lab: the helper is root:lab 0750")


class Refused:
    name = "refuser"

    def acquire(self, request: Request) -> int:
        raise RungRefused("the kernel refused: Permission denied", errno.EACCES)


def test_default_order_and_names() -> None:
    names = [strategy.name for strategy in resolve(None)]
    assert names == list(DEFAULT_ORDER)
    assert [s.name for s in resolve("plain, helper,sudo")] == ["plain", "helper", "sudo"]


@pytest.mark.parametrize("bad", ["", "plain,,", ["plain", "magic"]])
def test_bad_strategy_lists(bad: object) -> None:
    with pytest.raises(ValueError, match=r"is empty|has an empty name|unknown strategy"):
        gprocket.open_fd(0, protocol="udp", strategies=bad)  # type: ignore[arg-type]


def test_failed_rungs_are_recorded_on_success() -> None:
    recorder = Recorder()
    got = gprocket.acquire(SocketRequest(53, protocol="udp"),
                           strategies=[Unavailable(), Refused(), recorder])
    os.close(got.fd)
    assert got.rung == "recorder"
    assert got.attempts == (
        gprocket.Attempt("nothing", "nothing installed", None),
        gprocket.Attempt("refuser", "the kernel refused: Permission denied", errno.EACCES),
    )
    assert len(recorder.calls) == 1


def test_privilege_error_lists_every_attempt_and_the_fix() -> None:
    with pytest.raises(gprocket.PrivilegeError) as info:
        gprocket.open(53, protocol="udp", strategies=[Unavailable(), Refused()])
    err = info.value
    assert isinstance(err, PermissionError)
    assert err.errno == errno.EPERM
    assert [a.rung for a in err.attempts] == ["nothing", "refuser"]
    assert err.fix == "join group lab: the helper is root:lab 0750"
    text = str(err)
    assert "cannot open udp port 53 on 0.0.0.0 (inet)" in text
    assert "refuser: the kernel refused: Permission denied (EACCES)" in text
    assert text.endswith("fix: join group lab: the helper is root:lab 0750")


@pytest.mark.parametrize(
    ("options", "err"),
    [
        ({"ip": "192.0.2.55"}, errno.EADDRNOTAVAIL),
        ({"interface": "gpnone0"}, errno.ENODEV),
        ({"ip": "127.0.0.1", "port": "busy"}, errno.EADDRINUSE),
    ],
)
def test_kernel_errors_stop_the_ladder(options: dict[str, object], err: int) -> None:
    busy = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    busy.bind(("127.0.0.1", 0))
    if options.get("port") == "busy":
        options["port"] = busy.getsockname()[1]
    recorder = Recorder()
    try:
        with pytest.raises(OSError) as info:
            gprocket.open(protocol="udp", strategies=["plain", recorder], **options)  # type: ignore[arg-type]
        assert info.value.errno == err
        assert not isinstance(info.value, gprocket.PrivilegeError)
        assert recorder.calls == []
    finally:
        busy.close()


def test_helper_errors_stop_the_ladder() -> None:
    class Broken:
        name = "broken"

        def acquire(self, request: Request) -> int:
            raise HelperError("the helper broke the protocol")

    recorder = Recorder()
    with pytest.raises(HelperError, match="broke the protocol"):
        gprocket.open_fd(0, protocol="udp", strategies=[Broken(), recorder])
    assert recorder.calls == []


def test_acquired_is_frozen() -> None:
    got = gprocket.acquire(SocketRequest(0, protocol="udp"), strategies="plain")
    os.close(got.fd)
    with pytest.raises(AttributeError):
        got.rung = "other"  # type: ignore[misc]
    with pytest.raises(TypeError, match="not str"):
        gprocket.acquire("udp 53")  # type: ignore[arg-type]


def test_socket_drops_into_stream_server() -> None:
    sock = gprocket.open(0, ip="127.0.0.1", strategies="plain")
    assert isinstance(sock, gevent.socket.socket)

    def echo(conn: gevent.socket.socket, _address: object) -> None:
        conn.sendall(conn.recv(100).upper())

    server = StreamServer(sock, echo)
    server.start()
    try:
        client = gevent.socket.create_connection(sock.getsockname())
        client.sendall(b"ping")
        assert client.recv(100) == b"PING"
        client.close()
    finally:
        server.stop()
    assert sock.rung == "plain"


def test_socket_drops_into_datagram_server() -> None:
    sock = gprocket.open(0, protocol="udp", ip="127.0.0.1", strategies="plain")

    def upper(data: bytes, address: object) -> None:
        server.sendto(data.upper(), address)

    server = DatagramServer(sock, upper)
    server.start()
    try:
        client = gevent.socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        client.settimeout(10)
        client.sendto(b"dns", sock.getsockname())
        assert client.recv(100) == b"DNS"
        client.close()
    finally:
        server.stop()
