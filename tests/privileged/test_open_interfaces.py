"""procket's "bind to one or more interfaces": two UDP port-53 sockets, two veths.

Namespace A holds two veth ends (each with its own subnet) whose peers live
in namespace B. The unprivileged user, inside A, opens udp/53 twice through
the helper, each bound to one interface (wildcard address: without the
device binding the second bind would fail). B sends datagrams to both
addresses; each socket must see exactly its own interface's datagrams.
"""

from __future__ import annotations

import json
import sys

import pytest
from support import privileged as priv

pytestmark = pytest.mark.privileged

USER = r"""
import json, sys, gprocket
socks = {name: gprocket.open(53, protocol='udp', interface=name) for name in ('gpa0', 'gpa1')}
print(json.dumps({'ready': {n: s.rung for n, s in socks.items()}}), flush=True)
seen = {}
for name, sock in socks.items():
    sock.settimeout(20)
    got = []
    while not got or not got[-1].startswith('end'):
        got.append(sock.recv(100).decode())
    seen[name] = got
print(json.dumps(seen), flush=True)
"""

SENDER = r"""
import socket
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
for tag, ip in (('0', '10.71.0.1'), ('1', '10.72.0.1')):
    for _ in range(3):
        s.sendto(f'via{tag}'.encode(), (ip, 53))
for tag, ip in (('0', '10.71.0.1'), ('1', '10.72.0.1')):
    s.sendto(f'end{tag}'.encode(), (ip, 53))
"""


def test_two_udp_53_sockets_on_two_interfaces_get_only_their_own(
    unpriv_user: priv.User, netns: priv.Netns, installed_helper
) -> None:  # type: ignore[no-untyped-def]
    helper = installed_helper("caps")
    with priv.make_netns("gpcore") as peer:
        for i in (0, 1):
            netns.exec(["ip", "link", "add", f"gpa{i}", "type", "veth", "peer", "name",
                        f"gpb{i}", "netns", peer.name])
            netns.exec(["ip", "addr", "add", f"10.7{i + 1}.0.1/24", "dev", f"gpa{i}"])
            netns.exec(["ip", "link", "set", f"gpa{i}", "up"])
            peer.exec(["ip", "addr", "add", f"10.7{i + 1}.0.2/24", "dev", f"gpb{i}"])
            peer.exec(["ip", "link", "set", f"gpb{i}", "up"])
        user = priv.popen_argv(unpriv_user, [priv.VENV_PYTHON, "-c", USER], netns=netns,
                               env={"GPROCKET_HELPER": str(helper)})
        try:
            assert user.stdout is not None
            ready = json.loads(user.stdout.readline() or "{}")
            assert ready == {"ready": {"gpa0": "broker", "gpa1": "broker"}}, user.stderr.read()
            peer.exec([sys.executable, "-c", SENDER])
            out, err = user.communicate(timeout=30)
        finally:
            if user.poll() is None:
                user.kill()
                user.wait()
        assert user.returncode == 0, err
        seen = json.loads(out.splitlines()[-1])
        assert seen == {"gpa0": ["via0"] * 3 + ["end0"], "gpa1": ["via1"] * 3 + ["end1"]}
