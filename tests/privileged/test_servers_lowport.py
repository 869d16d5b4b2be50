"""gprocket.servers as an unprivileged user: port 53 through the ladder into
gevent's servers, port 8080 by a plain bind with no helper started, and a
clear PrivilegeError when nothing can bind."""

from __future__ import annotations

import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest
from support import privileged as priv

pytestmark = pytest.mark.privileged

SERVE = textwrap.dedent("""
    import json, os, sys
    import gevent, gevent.socket, socket
    from gprocket.servers import datagram_server, stream_server
    port = int(sys.argv[1])
    def handle_tcp(conn, address):
        conn.sendall(conn.recv(100).upper()); conn.close()
    tcp = stream_server(f"[::]:{port}", handle_tcp, dualstack=True)
    udp = datagram_server(f"127.0.0.1:{port}", lambda data, peer: udp.sendto(data[::-1], peer))
    rungs = [tcp.socket.rung, udp.socket.rung]
    tcp.start(); udp.start()
    answers = []
    for host in ("127.0.0.1", "::1"):
        c = gevent.socket.create_connection((host, port)); c.sendall(b"low port")
        answers.append(c.recv(100).decode()); c.close()
    c = gevent.socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    c.sendto(b"abc", ("127.0.0.1", port)); answers.append(c.recv(100).decode())
    me = os.getpid()
    children = open(f"/proc/{me}/task/{me}/children").read().split()
    helpers = [pid for pid in children if "gprocket-helper" in open(f"/proc/{pid}/cmdline").read()]
    print(json.dumps({"rungs": rungs, "answers": answers, "helpers": len(helpers)}))
""")


def test_port_53_through_the_ladder(unpriv_user: priv.User, netns: priv.Netns,
                                    installed_helper: Callable[..., Path]) -> None:
    helper = installed_helper(mode="caps")
    got = priv.run_json(unpriv_user, SERVE.replace("int(sys.argv[1])", "53"), netns=netns,
                        env={"GPROCKET_HELPER": str(helper)})
    assert got == {"rungs": ["broker", "broker"], "answers": ["LOW PORT", "LOW PORT", "cba"],
                   "helpers": 1}


def test_port_8080_binds_plainly_without_a_helper(
        unpriv_user: priv.User, netns: priv.Netns,
        installed_helper: Callable[..., Path]) -> None:
    helper = installed_helper(mode="caps")
    got = priv.run_json(unpriv_user, SERVE.replace("int(sys.argv[1])", "8080"), netns=netns,
                        env={"GPROCKET_HELPER": str(helper)})
    assert got == {"rungs": ["plain", "plain"], "answers": ["LOW PORT", "LOW PORT", "cba"],
                   "helpers": 0}


def test_no_rung_gives_a_privilege_error_naming_each(unpriv_user: priv.User,
                                                     netns: priv.Netns) -> None:
    code = textwrap.dedent("""
        import json
        from gprocket import PrivilegeError
        from gprocket.servers import listener
        try:
            listener(":53", "udp", strategies="inherited,plain,capabilities")
        except PrivilegeError as err:
            print(json.dumps({"rungs": [a.rung for a in err.attempts],
                              "permission": isinstance(err, PermissionError),
                              "fix": bool(err.fix)}))
    """)
    assert priv.run_json(unpriv_user, code, netns=netns) == {
        "rungs": ["inherited", "plain", "capabilities"], "permission": True, "fix": True}
