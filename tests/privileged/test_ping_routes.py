"""ICMP errors from a router, and link-local targets with a scope.

Topology, all made here: the client namespace (the test user pings from it)
and a router namespace joined by a veth pair, and behind the router a far
host (for traceroute). The router holds `unreachable` and `prohibit` routes
and answers with the ICMP errors iputils reports too.

    client 10.99.0.2 ── 10.99.0.1 router 10.100.0.1 ── 10.100.0.2 far
           fd00:99::2 ── fd00:99::1        fd00:100::1 ── fd00:100::2
"""

from __future__ import annotations

import re
import secrets
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from support import privileged as priv
from support.ping_output import mask

pytestmark = pytest.mark.privileged

# These tests use raw ICMP sockets as their descriptor; the defaults grant none.
RAW_POLICY = "allow * bind any 1-1023\nallow * raw icmp,icmpv6\n"

OPEN_RANGE = "0 2147483647"


@dataclass
class Lab:
    client: priv.Netns
    router: priv.Netns
    client_if: str


@pytest.fixture
def lab() -> Iterator[Lab]:
    with priv.make_netns("gpi") as client, priv.make_netns("gpi") as router, \
            priv.make_netns("gpi") as remote:
        tag = secrets.token_hex(3)
        near, far = f"gpic{tag}", f"gpir{tag}"
        subprocess.run(["ip", "link", "add", near, "netns", client.name, "type", "veth",
                        "peer", "name", far, "netns", router.name], check=True)
        back, end = f"gpib{tag}", f"gpie{tag}"
        subprocess.run(["ip", "link", "add", back, "netns", router.name, "type", "veth",
                        "peer", "name", end, "netns", remote.name], check=True)
        router.sysctl("net.ipv4.ip_forward", "1")
        router.sysctl("net.ipv6.conf.all.forwarding", "1")
        # The router answers every probe of every test case, not one a second:
        # no per-destination limit, and no ICMP type in the masks of the
        # per-namespace token bucket (icmp_msgs_per_sec) either, which a
        # fresh namespace may start empty (it dropped a witness ping's error).
        router.sysctl("net.ipv4.icmp_ratelimit", "0")
        router.sysctl("net.ipv6.icmp.ratelimit", "0")
        router.sysctl("net.ipv4.icmp_ratemask", "0")
        router.sysctl("net.ipv6.icmp.ratemask", "127")
        for ns, dev, v4, v6, ll in ((client, near, "10.99.0.2/24", "fd00:99::2/64", "fe80::2/64"),
                                    (router, far, "10.99.0.1/24", "fd00:99::1/64", "fe80::1/64")):
            ns.exec(["ip", "addr", "add", v4, "dev", dev])
            ns.exec(["ip", "-6", "addr", "add", v6, "dev", dev, "nodad"])
            ns.exec(["ip", "-6", "addr", "add", ll, "dev", dev, "nodad"])
            ns.exec(["ip", "link", "set", dev, "up"])
        for ns, dev, v4, v6 in ((router, back, "10.100.0.1/24", "fd00:100::1/64"),
                                (remote, end, "10.100.0.2/24", "fd00:100::2/64")):
            ns.exec(["ip", "addr", "add", v4, "dev", dev])
            ns.exec(["ip", "-6", "addr", "add", v6, "dev", dev, "nodad"])
            ns.exec(["ip", "link", "set", dev, "up"])
        remote.exec(["ip", "route", "add", "default", "via", "10.100.0.1"])
        remote.exec(["ip", "-6", "route", "add", "default", "via", "fd00:100::1"])
        client.exec(["ip", "route", "add", "default", "via", "10.99.0.1"])
        client.exec(["ip", "-6", "route", "add", "default", "via", "fd00:99::1"])
        router.exec(["ip", "route", "add", "unreachable", "198.51.100.0/24"])
        router.exec(["ip", "route", "add", "prohibit", "203.0.113.0/24"])
        router.exec(["ip", "-6", "route", "add", "unreachable", "2001:db8:dead::/48"])
        router.exec(["ip", "-6", "route", "add", "prohibit", "2001:db8:beef::/48"])
        # Resolve neighbours both ways first: a probe that waits on neighbour
        # discovery may see its error dropped with the first queued packet.
        for peer in ("10.99.0.1", "fd00:99::1", "10.100.0.2", "fd00:100::2"):
            client.exec(["ping", "-c", "1", "-W", "2", peer], check=False)
        yield Lab(client, router, near)


@pytest.fixture(params=["c", "python"])
def helper_env(installed_helper: Callable[..., Path],
               request: pytest.FixtureRequest) -> dict[str, str]:
    # Every test runs on both engines: the compiled one and the pure-Python fallback.
    return {"GPROCKET_HELPER": str(installed_helper(policy=RAW_POLICY)),
            "GPROCKET_ICMP_ENGINE": request.param}


def _from_lines(output: str) -> list[str]:
    # "From 10.99.0.1 icmp_seq=1 Destination Host Unreachable" (iputils' shape)
    return [line.strip() for line in output.splitlines() if line.startswith("From ")]


CASES = [
    (["198.51.100.7"], "From 10.99.0.1 icmp_seq=1 Destination Host Unreachable"),
    (["203.0.113.7"], "From 10.99.0.1 icmp_seq=1 Packet filtered"),
    (["2001:db8:dead::7"], "From fd00:99::1 icmp_seq=1 Destination unreachable: No route"),
    (["2001:db8:beef::7"],
     "From fd00:99::1 icmp_seq=1 Destination unreachable: Administratively prohibited"),
    (["-t", "1", "10.100.0.2"], "From 10.99.0.1 icmp_seq=1 Time to live exceeded"),
    (["-t", "1", "fd00:100::2"], "From fd00:99::1 icmp_seq=1 Time exceeded: Hop limit"),
]


@pytest.mark.parametrize("group_range", ["1 0", OPEN_RANGE], ids=["raw", "datagram"])
def test_router_errors_reported_like_iputils(unpriv_user: priv.User, lab: Lab,
                                             helper_env: dict[str, str],
                                             group_range: str) -> None:
    lab.client.sysctl("net.ipv4.ping_group_range", group_range)
    for args, expected in CASES:
        proc = priv.run_argv(unpriv_user, [priv.VENV_PYTHON, "-m", "gprocket.cli", "ping",
                                           "-c", "1", "-W", "1", *args],
                             netns=lab.client, env=helper_env)
        assert proc.returncode == 1, proc.stdout + proc.stderr
        assert _from_lines(proc.stdout) == [expected], proc.stdout
        assert re.search(r"1 packets transmitted, 0 received, \+1 errors, 100% packet loss",
                         proc.stdout), proc.stdout
        # The real ping, as the same user: every line the same but the times.
        for _ in range(2):
            witness = priv.run_argv(unpriv_user, ["ping", "-c", "1", "-W", "1", *args],
                                    netns=lab.client)
            # An error the router's per-source limit (net.ipv4.route.error_cost, one
            # a second after a burst of five, host-wide) swallowed: the network's
            # doing, not the tool's, so the reference gets one more try.
            if _from_lines(witness.stdout):
                break
            time.sleep(1)
        assert _from_lines(witness.stdout) == [expected], witness.stdout
        assert (proc.returncode, mask(proc.stdout), mask(proc.stderr)) == \
            (witness.returncode, mask(witness.stdout), mask(witness.stderr))


@pytest.mark.parametrize("group_range", ["1 0", OPEN_RANGE], ids=["raw", "datagram"])
def test_router_errors_in_many_like_fping(unpriv_user: priv.User, lab: Lab,
                                          helper_env: dict[str, str],
                                          group_range: str) -> None:
    lab.client.sysctl("net.ipv4.ping_group_range", group_range)
    for argv in (["-t", "300", "-r", "0", "198.51.100.7", "10.99.0.1"],
                 ["-c", "2", "-p", "300", "-t", "300", "203.0.113.7", "10.99.0.1"]):
        proc = priv.run_argv(unpriv_user, [priv.VENV_PYTHON, "-m", "gprocket.cli", "ping",
                                           "--many", *argv], netns=lab.client, env=helper_env)
        witness = priv.run_argv(unpriv_user, ["fping", *argv], netns=lab.client)
        assert (proc.returncode, mask(proc.stdout), mask(proc.stderr)) == \
            (witness.returncode, mask(witness.stdout), mask(witness.stderr)), \
            f"--- fping\n{witness.stdout}{witness.stderr}--- gprocket\n{proc.stdout}{proc.stderr}"


def test_library_reports_error_type_code_and_router(unpriv_user: priv.User, lab: Lab,
                                                    helper_env: dict[str, str]) -> None:
    result = priv.run_json(unpriv_user, """
import json
from gprocket import icmp
out = {}
for target in ("198.51.100.7", "2001:db8:beef::7"):
    h = icmp.ping(target, count=1, timeout=1)
    out[target] = [h.received, [[e.reporter, e.type, e.code, e.seq] for e in h.errors]]
print(json.dumps(out))
""", netns=lab.client, env=helper_env)
    assert result["198.51.100.7"] == [0, [["10.99.0.1", 3, 1, 1]]]
    assert result["2001:db8:beef::7"] == [0, [["fd00:99::1", 1, 1, 1]]]


@pytest.mark.parametrize("group_range", ["1 0", OPEN_RANGE], ids=["raw", "datagram"])
def test_link_local_target_with_scope(unpriv_user: priv.User, lab: Lab,
                                      helper_env: dict[str, str], group_range: str) -> None:
    lab.client.sysctl("net.ipv4.ping_group_range", group_range)
    target = f"fe80::1%{lab.client_if}"
    # Neighbour discovery first (iputils as the witness), so no probe waits on it.
    warm = lab.client.exec(["ping", "-c", "1", "-W", "2", target], check=False)
    assert warm.returncode == 0, warm.stdout + warm.stderr
    result = priv.run_json(unpriv_user, f"""
import json
from gprocket import icmp
h = icmp.ping({target!r}, count=2, interval=0.1, timeout=1)
print(json.dumps([h.address, h.sent, h.received, [r.source for r in h.replies]]))
""", netns=lab.client, env=helper_env)
    assert result == [target, 2, 2, [target, target]]


@pytest.mark.parametrize("group_range", ["1 0", OPEN_RANGE], ids=["raw", "datagram"])
def test_traceroute_finds_the_router_then_the_target(unpriv_user: priv.User, lab: Lab,
                                                     helper_env: dict[str, str],
                                                     group_range: str) -> None:
    lab.client.sysctl("net.ipv4.ping_group_range", group_range)
    result = priv.run_json(unpriv_user, """
import json
from gprocket import icmp
out = {}
for target in ("10.100.0.2", "fd00:100::2"):
    trace = icmp.traceroute(target, max_hops=8, count=2, timeout=1)
    out[target] = [trace.reached, trace.transport,
                   [[h.ttl, h.sent, list(h.addresses), h.reached, len(h.rtts)]
                    for h in trace.hops]]
print(json.dumps(out))
""", netns=lab.client, env=helper_env)
    transport = "raw" if group_range == "1 0" else "datagram"
    assert result["10.100.0.2"] == [True, transport, [
        [1, 2, ["10.99.0.1"], False, 2], [2, 2, ["10.100.0.2"], True, 2]]]
    assert result["fd00:100::2"] == [True, transport, [
        [1, 2, ["fd00:99::1"], False, 2], [2, 2, ["fd00:100::2"], True, 2]]]


@pytest.mark.parametrize("target", ["10.100.0.2", "fd00:100::2"])
def test_traceroute_command_prints_each_hop(unpriv_user: priv.User, lab: Lab,
                                            helper_env: dict[str, str], target: str) -> None:
    proc = priv.run_argv(unpriv_user, [priv.VENV_PYTHON, "-m", "gprocket.cli", "ping",
                                       "--traceroute", "-c", "2", "-W", "1", "--max-hops",
                                       "8", target], netns=lab.client, env=helper_env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0] == f"traceroute to {target} ({target}), 8 hops max, 56 byte packets"
    router = "10.99.0.1" if "." in target else "fd00:99::1"
    hops = [re.fullmatch(r" *(\d+)  (\S+)  ([\d.]+) ms  ([\d.]+) ms", line)
            for line in lines[1:]]
    assert all(hops), proc.stdout
    assert [(h[1], h[2]) for h in hops] == [("1", router), ("2", target)]  # type: ignore[index]


def test_traceroute_command_exits_1_when_the_target_is_not_reached(
        unpriv_user: priv.User, lab: Lab, helper_env: dict[str, str]) -> None:
    # One hop is not enough for the far host: only the router answers.
    proc = priv.run_argv(unpriv_user, [priv.VENV_PYTHON, "-m", "gprocket.cli", "ping",
                                       "--traceroute", "-c", "2", "-W", "0.5",
                                       "--max-hops", "1", "10.100.0.2"],
                         netns=lab.client, env=helper_env)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    hops = proc.stdout.splitlines()[1:]
    assert len(hops) == 1, proc.stdout
    assert re.fullmatch(r" 1  10\.99\.0\.1  [\d.]+ ms  [\d.]+ ms", hops[0]), proc.stdout
