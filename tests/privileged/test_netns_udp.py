"""namespace=NAME on gprocket.open(): the socket lives in that namespace only.

An unprivileged user gets a UDP socket bound inside a namespace made for the
test (through the helper, which alone may enter it); a datagram sent inside
that namespace arrives, one sent to the same port in the root namespace
does not.
"""

from __future__ import annotations

import json
import socket
import subprocess
import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest
from support import privileged as priv

pytestmark = pytest.mark.privileged

PORT = 40007

RECEIVER = """
import json, sys
import gprocket
sock = gprocket.open(PORT, protocol="udp", ip="127.0.0.1", namespace=NAMESPACE, helper=HELPER)
print(json.dumps({"rung": sock.rung, "address": list(sock.getsockname())}), flush=True)
sys.stdin.readline()  # the test has sent every datagram
sock.settimeout(30)
got = [sock.recv(100).decode() for _ in range(2)]
sock.close()
print(json.dumps({"got": got}), flush=True)
"""

SENDER = """
import socket, sys
socket.socket(socket.AF_INET, socket.SOCK_DGRAM).sendto(sys.argv[1].encode(), ("127.0.0.1", PORT))
"""


def send_inside(netns: priv.Netns, payload: str) -> None:
    code = SENDER.replace("PORT", str(PORT))
    netns.exec([priv.VENV_PYTHON, "-c", code, payload])


def test_udp_socket_in_named_namespace_sees_only_its_traffic(
    netns: priv.Netns, installed_helper: Callable[..., Path], unpriv_user: priv.User,
) -> None:
    policy = (f"allow group:{priv.TEST_GROUP} bind udp 40000-40100\n"
              f"allow group:{priv.TEST_GROUP} netns {netns.name}\n")
    helper = installed_helper("caps", policy)
    code = (RECEIVER.replace("PORT", str(PORT)).replace("NAMESPACE", repr(netns.name))
            .replace("HELPER", repr(str(helper))))
    proc = priv.popen_argv(unpriv_user, [priv.VENV_PYTHON, "-c", textwrap.dedent(code)],
                           stdin=subprocess.PIPE)
    try:
        assert proc.stdout is not None and proc.stdin is not None
        line = proc.stdout.readline()
        assert line, proc.communicate(timeout=30)[1]
        ready = json.loads(line)
        assert ready["rung"] in ("broker", "helper")
        assert ready["address"] == ["127.0.0.1", PORT]
        # Sent first, to the same address and port, but in the root namespace.
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as root_sock:
            root_sock.sendto(b"root", ("127.0.0.1", PORT))
        send_inside(netns, "lab-1")
        send_inside(netns, "lab-2")
        out, err = proc.communicate(input="go\n", timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    # Datagrams queue in order: had "root" arrived it would come first.
    assert json.loads(out.splitlines()[-1]) == {"got": ["lab-1", "lab-2"]}


def test_udp_socket_namespace_must_be_granted(
    netns: priv.Netns, installed_helper: Callable[..., Path], unpriv_user: priv.User,
) -> None:
    helper = installed_helper("caps", f"allow group:{priv.TEST_GROUP} bind udp 40000-40100\n")
    outcome = priv.run_json(unpriv_user, textwrap.dedent(f"""
        import errno, json
        import gprocket
        try:
            gprocket.open({PORT}, protocol="udp", ip="127.0.0.1", namespace={netns.name!r},
                          helper={str(helper)!r})
        except gprocket.PrivilegeError as err:
            print(json.dumps({{"errnos": [errno.errorcode.get(a.errno or 0) for a in err.attempts],
                              "message": str(err)}}))
    """))
    assert "EPERM" in outcome["errnos"], outcome
    assert netns.name in outcome["message"]
