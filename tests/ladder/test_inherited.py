"""The inherited rung: sd_listen_fds semantics and matching by what the socket is.

Each scenario runs in a fresh interpreter that puts real sockets at
descriptors 3, 4, ... and sets LISTEN_* as systemd would, because the pool
is taken once per process and the test process's own descriptor 3 is busy.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap
from typing import Any

import pytest
from support import privileged as priv

from gprocket._errors import RungUnavailable
from gprocket._ladder.inherited import (
    InheritedSocket,
    InheritedStrategy,
    _mismatch,
    take_listen_fds,
)
from gprocket._spec import SocketRequest, TunRequest

PRELUDE = textwrap.dedent("""
    import json, os, socket, fcntl
    # Occupy 3..5 first so the sockets get other numbers and dup2 moves them.
    placeholders = [os.open("/dev/null", os.O_RDONLY) for _ in range(3)]
    tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    tcp.bind(("127.0.0.1", 0)); tcp.listen(8)
    udp = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    udp.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
    udp.bind(("::1", 0))
    r, w = os.pipe()
    passed = [tcp, udp]
    for target, sock in zip((3, 4), passed):
        os.dup2(sock.fileno(), target, inheritable=True)
    os.dup2(r, 5, inheritable=True)
    TCP_PORT, UDP_PORT = tcp.getsockname()[1], udp.getsockname()[1]
    for sock in passed:
        sock.close()
    os.environ["LISTEN_FDS"] = "3"
    os.environ["LISTEN_FDNAMES"] = "web:dns:pipe"
""")


def run_scenario(body: str, *, listen_pid: str = "os.getpid()") -> Any:
    code = PRELUDE + f"os.environ['LISTEN_PID'] = str({listen_pid})\n" + textwrap.dedent(body)
    env = dict(os.environ, PYTHONPATH=priv.python_path())
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env=env, timeout=60, check=False)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.splitlines()[-1])


def test_takes_sockets_skips_the_pipe_and_unsets_the_environment() -> None:
    got = run_scenario("""
        from gprocket._ladder.inherited import take_listen_fds
        found = take_listen_fds()
        cloexec = [bool(fcntl.fcntl(s.fd, fcntl.F_GETFD) & fcntl.FD_CLOEXEC) for s in found]
        print(json.dumps({
            "found": [[s.fd, s.name, s.family, s.type, s.protocol, s.address, s.port]
                      for s in found],
            "ports": [TCP_PORT, UDP_PORT], "cloexec": cloexec,
            "env": [k for k in os.environ if k.startswith("LISTEN_")]}))
    """)
    tcp_port, udp_port = got["ports"]
    assert got["found"] == [
        [3, "web", socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP, "127.0.0.1", tcp_port],
        [4, "dns", socket.AF_INET6, socket.SOCK_DGRAM, socket.IPPROTO_UDP, "::1", udp_port],
    ]
    assert got["cloexec"] == [True, True]
    assert got["env"] == []


def test_probing_a_passed_pipe_leaves_no_descriptor_behind() -> None:
    got = run_scenario("""
        from gprocket._ladder.inherited import take_listen_fds
        before = sorted(os.listdir("/proc/self/fd"))
        found = take_listen_fds()
        print(json.dumps({"found": len(found), "before": before,
                          "after": sorted(os.listdir("/proc/self/fd"))}))
    """)
    assert got["found"] == 2  # the pipe at fd 5 is probed and skipped
    assert got["after"] == got["before"]


def test_sockets_meant_for_another_pid_are_not_taken() -> None:
    got = run_scenario("""
        from gprocket._ladder.inherited import take_listen_fds
        print(json.dumps({"found": len(take_listen_fds()),
                          "env": sorted(k for k in os.environ if k.startswith("LISTEN_"))}))
    """, listen_pid="os.getppid()")
    # sd_listen_fds(unset_environment=1) drops the variables either way:
    # they can never be meant for a child of ours.
    assert got == {"found": 0, "env": []}


def test_open_matches_by_family_type_address_and_port() -> None:
    got = run_scenario("""
        import gprocket
        from gprocket._errors import PrivilegeError
        tcp = gprocket.open(TCP_PORT, protocol="tcp", ip="127.0.0.1", strategies="inherited")
        udp = gprocket.open(UDP_PORT, protocol="udp", ip="::1", strategies="inherited")
        again = gprocket.open(TCP_PORT, protocol="tcp", ip="127.0.0.1", strategies="inherited")
        client = socket.create_connection(("127.0.0.1", TCP_PORT))
        conn, _ = tcp.accept()
        client.sendall(b"ping"); echoed = conn.recv(4)
        misses = []
        for kwargs in ({"protocol": "udp", "ip": "127.0.0.1"},
                       {"protocol": "tcp", "family": "unspec"},
                       {"protocol": "tcp", "ip": "127.0.0.2"},
                       {"protocol": "tcp", "ip": "127.0.0.1", "interface": "lo"}):
            try:
                gprocket.open(TCP_PORT, strategies="inherited", **kwargs)
            except PrivilegeError as err:
                misses.append(err.attempts[0].reason)
        try:  # the kernel makes a socket bound to ::1 IPv6-only: refused before any rung
            gprocket.SocketRequest(UDP_PORT, family="inet6", protocol="udp", ip="::1",
                                   dualstack=True)
        except ValueError as err:
            misses.append(str(err))
        print(json.dumps({
            "rungs": [tcp.rung, udp.rung, again.rung],
            "fds": [tcp.fileno(), udp.fileno(), again.fileno()],
            "udp": list(udp.getsockname()[:2]), "echoed": echoed.decode(),
            "misses": misses, "ports": [TCP_PORT, UDP_PORT]}))
    """)
    assert got["rungs"] == ["inherited"] * 3
    # Each match is a fresh duplicate: the inherited descriptors stay put.
    assert not {3, 4} & set(got["fds"])
    assert len(set(got["fds"])) == 3
    assert got["udp"] == ["::1", got["ports"][1]]
    assert got["echoed"] == "ping"
    assert len(got["misses"]) == 5
    assert "type differs" in got["misses"][0]
    assert "family differs" in got["misses"][1]
    assert "address differs" in got["misses"][2]
    assert "bound device differs" in got["misses"][3]
    assert "dualstack needs the wildcard" in got["misses"][4]


def test_a_v6only_wildcard_does_not_serve_a_dual_stack_request() -> None:
    v6only = InheritedSocket(3, "dns", socket.AF_INET6, socket.SOCK_DGRAM, socket.IPPROTO_UDP,
                             "::", 53, None, v6only=True)
    dual = SocketRequest(53, family="unspec", protocol="udp")
    assert _mismatch(v6only, dual) == "IPv6-only, dual-stack wanted"
    assert _mismatch(v6only, SocketRequest(53, family="inet6", protocol="udp")) is None


def test_nothing_passed_is_unavailable_with_the_reason() -> None:
    assert "LISTEN_PID" not in os.environ
    with pytest.raises(RungUnavailable, match="no sockets passed"):
        InheritedStrategy().acquire(SocketRequest(53, protocol="udp"))


def test_devices_and_namespaces_are_never_served() -> None:
    strategy = InheritedStrategy()
    assert strategy.name == "inherited"
    with pytest.raises(RungUnavailable, match="sockets only"):
        strategy.acquire(TunRequest("gps0"))
    with pytest.raises(RungUnavailable, match="namespace"):
        strategy.acquire(SocketRequest(53, protocol="udp", namespace="gps-x"))


def test_take_listen_fds_ignores_garbage_and_other_pids() -> None:
    env = {"LISTEN_PID": "not-a-pid", "LISTEN_FDS": "2"}
    assert take_listen_fds(env) == ()
    env = {"LISTEN_PID": str(os.getpid() + 1), "LISTEN_FDS": "2", "LISTEN_FDNAMES": "a:b"}
    assert take_listen_fds(env) == ()
    assert env == {}
