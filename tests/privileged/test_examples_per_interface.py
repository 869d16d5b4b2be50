"""examples/per_interface.py: one UDP server per interface on port 7, as an
unprivileged user. A second namespace, joined by two veth pairs, sends to
each interface's address and must be answered by that interface's server."""

from __future__ import annotations

import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from support import privileged as priv

pytestmark = pytest.mark.privileged

EXAMPLE = str(priv.EXAMPLES / "per_interface.py")
CLIENT = (
    "import socket, sys\n"
    "s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
    "s.settimeout(10)\n"
    "s.sendto(b'hi', (sys.argv[1], 7))\n"
    "sys.stdout.write(s.recv(100).decode())\n"
)


@pytest.fixture
def peer(netns: priv.Netns) -> Iterator[priv.Netns]:
    """A client namespace linked to `netns` by gpsa0-gpsb0 and gpsa1-gpsb1."""
    with priv.make_netns("gps") as client:
        for index in (0, 1):
            subprocess.run(["ip", "link", "add", f"gpsa{index}", "netns", netns.name, "type",
                            "veth", "peer", "name", f"gpsb{index}", "netns", client.name],
                           check=True)
            netns.exec(["ip", "addr", "add", f"10.77.{index}.1/24", "dev", f"gpsa{index}"])
            client.exec(["ip", "addr", "add", f"10.77.{index}.2/24", "dev", f"gpsb{index}"])
            netns.exec(["ip", "link", "set", f"gpsa{index}", "up"])
            client.exec(["ip", "link", "set", f"gpsb{index}", "up"])
        yield client


def ask(ns: priv.Netns, address: str) -> str:
    got = ns.exec([priv.VENV_PYTHON, "-c", CLIENT, address], env=priv.user_env(), check=False)
    assert got.returncode == 0, got.stderr
    return got.stdout


def test_one_server_per_interface_on_port_7(unpriv_user: priv.User, netns: priv.Netns,
                                            peer: priv.Netns,
                                            installed_helper: Callable[..., Path]) -> None:
    helper = installed_helper(mode="caps")
    proc = priv.popen_argv(unpriv_user, [priv.VENV_PYTHON, EXAMPLE], netns=netns,
                           stderr=subprocess.STDOUT, env={"GPROCKET_HELPER": str(helper)})
    assert proc.stdout is not None
    try:
        lines = sorted(proc.stdout.readline().strip() for _ in range(3))
        assert lines == [f"udp 0.0.0.0:7 on {name} via broker"
                         for name in ("gpsa0", "gpsa1", "lo")], (lines, proc.poll())
        assert ask(peer, "10.77.0.1") == "gpsa0: hi"
        assert ask(peer, "10.77.1.1") == "gpsa1: hi"
        assert ask(netns, "127.0.0.1") == "lo: hi"
        sockets = netns.exec(["ss", "-Hlnup", "sport = :7"]).stdout.splitlines()
        assert len(sockets) == 3
        assert all(f"pid={proc.pid}," in line for line in sockets)
    finally:
        proc.terminate()
        proc.communicate(timeout=30)
