"""examples/echo.py: TCP and UDP echo over IPv6 on port 7, as an unprivileged
user; socat is the client."""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
from support import privileged as priv

pytestmark = pytest.mark.privileged

EXAMPLE = str(priv.EXAMPLES / "echo.py")
UDP_CLIENT = (
    "import socket, sys\n"
    "s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM); s.settimeout(10)\n"
    "s.sendto(b'hello over udp', ('::1', 7))\n"
    "sys.stdout.write(s.recv(100).decode())\n"
)


def test_echo_example_on_port_7(unpriv_user: priv.User, netns: priv.Netns,
                                installed_helper: Callable[..., Path]) -> None:
    helper = installed_helper(mode="caps")
    proc = priv.popen_argv(unpriv_user, [priv.VENV_PYTHON, EXAMPLE, "--ip", "::1"],
                           netns=netns, stderr=subprocess.STDOUT,
                           env={"GPROCKET_HELPER": str(helper)})
    assert proc.stdout is not None
    try:
        lines = [proc.stdout.readline().strip() for _ in range(2)]
        assert lines == ["echo tcp on [::1]:7 via broker", "echo udp on [::1]:7 via broker"], (
            lines, proc.poll())
        tcp = netns.exec(["socat", "-t", "5", "-", "TCP6:[::1]:7"], input="hello over tcp\n")
        assert tcp.stdout == "hello over tcp\n", tcp.stderr
        # UDP has no end of stream: a client that stops at the first reply.
        udp = netns.exec([priv.VENV_PYTHON, "-c", UDP_CLIENT], env=priv.user_env())
        assert udp.stdout == "hello over udp", udp.stderr
        owner = netns.exec(["ss", "-Hlnp", "sport = :7"]).stdout
        assert f"pid={proc.pid}," in owner
    finally:
        proc.terminate()
        proc.communicate(timeout=30)
