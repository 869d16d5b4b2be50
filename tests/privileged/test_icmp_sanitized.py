"""multiping's compiled loop (gprocket/icmp/_loop.c) under ASan/UBSan, pinging for real.

The loop is rebuilt with clang's address and undefined-behaviour sanitizers
into a copy of the installed package, and the compiled engine runs through it
as root in a throwaway network namespace: raw and datagram sockets, IPv4 and
IPv6, replies, requests that time out (a blackhole route) and sends that fail
(no route). Any sanitizer report aborts the child. Root: raw sockets and a
namespace whose ping_group_range the test sets.
"""

from __future__ import annotations

import json
import shutil
import sys
import textwrap
from pathlib import Path

import pytest
from support import privileged as priv
from support.sanitized import build_sanitized, sanitized_env

from gprocket.icmp import _build as _icmp_build

COUNT = 40
TARGETS = {
    "127.0.0.1": "answers",
    "::1": "answers",
    "192.0.2.1": "times out",     # blackhole route: sent, never answered
    "198.51.100.1": "fails",      # no route: the send itself fails
    "2001:db8::1": "fails",
}

CHILD = """
import json, sys
import gprocket.icmp._speed as speed
from gprocket import icmp
assert speed.__file__.startswith(sys.argv[1]), speed.__file__
out = {}
for kind in ("raw", "datagram"):
    hosts = icmp.multiping(sys.argv[3:], count=int(sys.argv[2]), interval=0.002, timeout=0.3,
                           socket_kind=kind)
    out[kind] = {h.address: [h.sent, h.received, h.transport] for h in hosts}
print(json.dumps(out))
"""


@pytest.mark.skipif(shutil.which("clang") is None, reason="clang is part of the CI image")
def test_compiled_loop_runs_clean_under_asan_and_ubsan(tmp_path: Path,
                                                       netns: priv.Netns) -> None:
    build_sanitized(_icmp_build, tmp_path)
    netns.sysctl("net.ipv4.ping_group_range", "0 2147483647")
    netns.exec(["ip", "route", "add", "blackhole", "192.0.2.0/24"])
    env = sanitized_env(str(tmp_path), {"GPROCKET_ICMP_ENGINE": "c",
                                        "GPROCKET_STRATEGIES": "plain"})
    proc = netns.exec([sys.executable, "-P", "-c", textwrap.dedent(CHILD), str(tmp_path),
                       str(COUNT), *TARGETS], check=False, env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert "Sanitizer" not in proc.stderr and "runtime error" not in proc.stderr, proc.stderr
    got = json.loads(proc.stdout)
    for kind in ("raw", "datagram"):
        for address, fate in TARGETS.items():
            sent, received, transport = got[kind][address]
            assert transport == kind, (kind, address)
            expected = COUNT if fate == "answers" else 0
            assert (sent, received) == (COUNT, expected), (kind, address, fate)
