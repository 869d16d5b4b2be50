"""TUN/TAP without the helper: an unprivileged user whose interpreter holds
CAP_NET_ADMIN in its permitted set only (file capabilities) gets the device
from the capabilities rung, configured in-process, and loses the capability
again right after.

CAP_NET_ADMIN does not open a file: the user must be able to open
/dev/net/tun, which udev makes 0666 but some containers (this CI's) leave
0600. The test therefore runs the user in a private mount namespace where a
0666 node 10:200 is bound over /dev/net/tun, leaving the host's node alone.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import stat
import subprocess
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from support import privileged as priv

pytestmark = pytest.mark.privileged

CODE = textwrap.dedent("""
    import json, socket
    from gprocket import tuntap
    from gprocket._ladder.caps import read_sets, CAP_NET_ADMIN
    with tuntap.open("gpt0", up=True, mtu=1280, address="10.9.0.1/24",
                     strategies="plain,capabilities") as dev:
        effective_after = read_sets().has_effective(CAP_NET_ADMIN)
        rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        rx.sendto(b"seen", ("10.9.0.2", 9))
        while True:
            packet = dev.read(timeout=10)
            if packet[0] >> 4 == 4 and packet[9] == 17:
                break
        print(json.dumps({"name": dev.name, "rung": dev.rung, "mtu": dev.mtu,
                          "effective_after": effective_after,
                          "payload": packet[28:].decode()}))
""")


@contextlib.contextmanager
def open_tun_node() -> Iterator[Path]:
    """A world-usable TUN clone node in a root-owned directory of its own."""
    directory = priv.INSTALL_ROOT / f"tun-{secrets.token_hex(4)}"
    directory.mkdir(parents=True, mode=0o755)
    node = directory / "tun"
    try:
        os.mknod(node, stat.S_IFCHR | 0o600, os.makedev(10, 200))
        os.chmod(node, 0o666)
        yield node
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def test_capabilities_rung_creates_and_configures(
    netns: priv.Netns, unpriv_user: priv.User, caps_python: Callable[..., str],
) -> None:
    python = caps_python("cap_net_admin+p")
    with open_tun_node() as node:
        user_argv = priv.as_user_argv(unpriv_user, [python, "-c", CODE], netns=netns)
        proc = subprocess.run(
            ["unshare", "--mount", "--propagation", "private", "--",
             "sh", "-c", 'mount --bind "$0" /dev/net/tun && exec "$@"', str(node), *user_argv],
            env=priv.user_env(), capture_output=True, text=True, timeout=60, check=False,
        )
    assert proc.returncode == 0, proc.stderr
    got = json.loads(proc.stdout.splitlines()[-1])
    assert got == {"name": "gpt0", "rung": "capabilities", "mtu": 1280,
                   "effective_after": False, "payload": "seen"}


def test_without_any_privilege_every_rung_is_explained(
    netns: priv.Netns, unpriv_user: priv.User,
) -> None:
    code = textwrap.dedent("""
        import errno, json
        import gprocket
        from gprocket import tuntap
        try:
            tuntap.open("gpt0", strategies="plain,capabilities")
        except gprocket.PrivilegeError as err:
            print(json.dumps({"rungs": [a.rung for a in err.attempts], "fix": err.fix}))
    """)
    got = priv.run_json(unpriv_user, code, netns=netns)
    assert got["rungs"] == ["plain", "capabilities"]
    assert got["fix"]
    state = netns.exec(["ip", "link", "show", "gpt0"], check=False)
    assert state.returncode != 0, "nothing may be left behind"
