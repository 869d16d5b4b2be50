"""gprocket.monkey: what patch() replaces, how unpatch() restores it, and the
descriptor swap that keeps the program's socket object.

The refusal paths (EACCES on a low port, EPERM for raw sockets) need a real
unprivileged process: tests/privileged/test_run_patch.py shows them.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from typing import Any

import gevent.socket
import pytest
from support import privileged as priv

from gprocket import monkey
from gprocket._spec import SocketRequest

STDLIB = socket.socket


@pytest.fixture
def patched() -> Iterator[None]:
    monkey.patch()
    try:
        yield
    finally:
        monkey.unpatch()


def snapshot() -> dict[str, Any]:
    return {name: (cls, cls.__dict__.get(attr))
            for name, (cls, attr) in monkey._targets().items()}


def test_patch_and_unpatch_restore_exactly() -> None:
    before = snapshot()
    assert not monkey.is_patched()
    monkey.patch()
    try:
        assert monkey.is_patched()
        during = snapshot()
        for name in monkey.patched_names():
            assert during[name][1] is not before[name][1], name
        monkey.patch()  # idempotent: the originals are not lost
        assert snapshot() == during
    finally:
        monkey.unpatch()
    assert not monkey.is_patched()
    assert snapshot() == before
    # The stdlib class had no bind of its own: unpatch removes ours again.
    assert "bind" not in STDLIB.__dict__
    monkey.unpatch()
    assert snapshot() == before


def test_get_original_names_the_unpatched_callables(patched: None) -> None:
    assert monkey.get_original("bind") is socket.SocketType.bind
    assert monkey.get_original("socket.socket.__init__") is STDLIB.__dict__["__init__"].__wrapped__
    assert monkey.get_original("gevent.socket.socket.bind").__qualname__ == "SocketMixin.bind"
    assert getattr(STDLIB.bind, "__wrapped__", None) is monkey.get_original("bind")
    with pytest.raises(ValueError, match="not patched"):
        monkey.get_original("connect")


def test_get_original_when_not_patched() -> None:
    assert monkey.get_original("bind") is STDLIB.bind
    assert monkey.get_original("gevent.socket.socket.__init__") is gevent.socket.socket.__init__


def test_binds_the_kernel_allows_are_untouched(patched: None) -> None:
    plain = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    green = gevent.socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    with plain, green:
        fds = (plain.fileno(), green.fileno())
        plain.bind(("::1", 0))
        green.bind(("127.0.0.1", 0))
        assert (plain.fileno(), green.fileno()) == fds
        assert plain.getsockname()[0] == "::1"
        assert green.getsockname()[0] == "127.0.0.1"
    with socket.socket() as taken, socket.socket() as again:
        taken.bind(("127.0.0.1", 0))
        with pytest.raises(OSError) as info:
            again.bind(taken.getsockname())
        assert info.type is OSError  # EADDRINUSE stays the kernel's own error


def test_bind_request_reads_the_options_set_before_bind() -> None:
    sock = socket.socket(socket.AF_INET6, socket.SOCK_STREAM | socket.SOCK_NONBLOCK)
    with sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, b"lo")
        request = monkey._bind_request(sock, ("", 80))
    assert request == SocketRequest(
        80, family=socket.AF_INET6, type=socket.SOCK_STREAM, protocol="tcp",
        interface="lo", backlog=0, reuseaddr=True, reuseport=True, dualstack=True)


def test_bind_request_asks_dual_stack_only_where_the_kernel_keeps_it() -> None:
    # http.server --bind ::1, dnslib --address ::1, gunicorn -b [::1]:443 leave
    # IPV6_V6ONLY at 0; bind() to ::1 makes the kernel set it, and so must the request.
    def request_for(host: str, v6only: int) -> SocketRequest | None:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as sock:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, v6only)
            return monkey._bind_request(sock, (host, 443))

    specific = request_for("::1", 0)
    assert specific is not None
    assert (str(specific.ip), specific.dualstack) == ("::1", False)
    wildcard = request_for("::", 0)
    assert wildcard is not None and wildcard.dualstack
    mapped = request_for("::ffff:127.0.0.1", 0)
    assert mapped is not None and mapped.dualstack
    # IPv6-only and v4-mapped: the kernel's EINVAL, no ladder request.
    assert request_for("::ffff:127.0.0.1", 1) is None


def test_bind_request_only_for_privileged_ip_ports() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        v4only = monkey._bind_request(sock, ("localhost", 53))
        assert v4only is not None
        assert str(v4only.ip) == "127.0.0.1"
        assert v4only.backlog is None
        assert v4only.dualstack is False
        assert monkey._bind_request(sock, ("127.0.0.1", 8080)) is None
        assert monkey._bind_request(sock, ("127.0.0.1", 0)) is None
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as unix:
        assert monkey._bind_request(unix, "/tmp/x") is None


def test_create_request_only_for_raw_and_packet() -> None:
    err = PermissionError(1, "Operation not permitted")
    raw = monkey._create_request(err, socket.AF_INET, socket.SOCK_RAW | socket.SOCK_CLOEXEC,
                                 socket.IPPROTO_ICMP, None)
    assert raw == SocketRequest(0, family="inet", type="raw", protocol="icmp")
    packet = monkey._create_request(err, socket.AF_PACKET, socket.SOCK_RAW,
                                    socket.htons(0x0806), None)
    assert packet == SocketRequest(0, family="packet", type="raw", protocol=0x0806)
    assert monkey._create_request(err, socket.AF_INET, socket.SOCK_DGRAM, 0, None) is None
    assert monkey._create_request(err, socket.AF_INET, socket.SOCK_RAW, 1, 7) is None
    eacces = PermissionError(13, "Permission denied")
    assert monkey._create_request(eacces, socket.AF_INET, socket.SOCK_RAW, 1, None) is None


def test_replace_descriptor_keeps_number_mode_and_options() -> None:
    program = gevent.socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    bound = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    with program, bound:
        program.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
        program.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
        wanted_rcvbuf = program.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)
        fd = program.fileno()
        bound.bind(("127.0.0.1", 0))
        address = bound.getsockname()
        monkey._replace_descriptor(program, bound.detach())
        assert program.fileno() == fd
        assert program.getsockname() == address
        assert fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_NONBLOCK  # gevent's mode survived
        assert not os.get_inheritable(fd)
        assert program.getsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST) == 1
        assert program.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF) == wanted_rcvbuf
        # The program's object still works cooperatively on the swapped descriptor.
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as peer:
            peer.sendto(b"swap", address)
            assert program.recvfrom(10)[0] == b"swap"


def test_ladder_calls_see_the_original_behaviour(patched: None) -> None:
    seen = []
    with monkey._ladder_call():
        seen.append(monkey._inside_ladder.get())
    seen.append(monkey._inside_ladder.get())
    assert seen == [True, False]


@pytest.mark.parametrize("order", ["gevent-first", "gprocket-first"])
def test_composes_with_gevent_patch_all(order: str) -> None:
    code = textwrap.dedent(f"""
        import json, socket, _socket
        import gevent.monkey, gevent.socket
        from gprocket import monkey
        stdlib = socket.socket
        if {order!r} == "gevent-first":
            gevent.monkey.patch_all()
            monkey.patch()
        else:
            monkey.patch()
            gevent.monkey.patch_all()
        result = {{
            "socket_is_gevent": socket.socket is gevent.socket.socket,
            "gevent_bind_patched": socket.socket.bind is not gevent.socket.SocketMixin.bind,
            "stdlib_bind_patched": stdlib.bind is not _socket.socket.bind,
        }}
        s = socket.socket(); s.bind(("127.0.0.1", 0)); s.close()
        monkey.unpatch()
        result["restored"] = (socket.socket.bind is gevent.socket.SocketMixin.bind
                              and stdlib.bind is _socket.socket.bind
                              and not monkey.is_patched())
        print(json.dumps(result))
    """)
    env = dict(os.environ, PYTHONPATH=priv.python_path())
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env=env, timeout=60, check=False)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == {"socket_is_gevent": True, "gevent_bind_patched": True,
                                       "stdlib_bind_patched": True, "restored": True}
