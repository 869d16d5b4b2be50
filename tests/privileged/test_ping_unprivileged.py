"""gprocket ping as a real unprivileged user in a fresh network namespace.

With ping_group_range closed the only way to ICMP is the helper (raw
socket, granted by an explicit `raw` rule: the defaults grant none); with it
open the datagram socket is used and no helper runs. A default install's
ping-socket path is shown in test_capsetup_ping.py.
iputils ping, run for the same target, is the witness for the statistics.
"""

from __future__ import annotations

import re
import signal
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from support import privileged as priv

pytestmark = pytest.mark.privileged

STATS = re.compile(r"(\d+) packets transmitted, (\d+) received,(?: \+\d+ \w+,)* "
                   r"([\d.]+)% packet loss")
RTT = re.compile(r"rtt min/avg/max/mdev = ([\d.]+)/([\d.]+)/([\d.]+)/([\d.]+) ms")
OPEN_RANGE = "0 2147483647"
# These tests exercise the raw path, which needs its own rule.
RAW_POLICY = "allow * bind any 1-1023\nallow * raw icmp,icmpv6\n"


@pytest.fixture
def gpi_ns() -> Iterator[priv.Netns]:
    with priv.make_netns("gpi") as ns:
        # A whole /64 answered locally: the kernel accepts and answers echo for
        # every address of a "local" route (AnyIP), like 127.0.0.0/8 for IPv4.
        ns.exec(["ip", "-6", "route", "add", "local", "2001:db8::/64", "dev", "lo"])
        yield ns


@pytest.fixture(params=["c", "python"])
def engine(request: pytest.FixtureRequest) -> str:
    """Every test runs on both engines: the compiled one and the pure-Python fallback."""
    return str(request.param)


@pytest.fixture
def helper_env(installed_helper: Callable[..., Path], engine: str) -> dict[str, str]:
    return {"GPROCKET_HELPER": str(installed_helper(policy=RAW_POLICY)),
            "GPROCKET_ICMP_ENGINE": engine}


def _cli(user: priv.User, ns: priv.Netns, env: dict[str, str], *args: str,
         timeout: float = 60, stdin: str | None = None) -> tuple[int, str, str]:
    proc = priv.run_argv(user, [priv.VENV_PYTHON, "-m", "gprocket.cli", "ping", *args],
                         netns=ns, env=env, timeout=timeout, input=stdin)
    return proc.returncode, proc.stdout, proc.stderr


def _stats(output: str) -> tuple[int, int, float]:
    match = STATS.search(output)
    assert match, output
    return int(match[1]), int(match[2]), float(match[3])


@pytest.mark.parametrize("target", ["127.0.0.1", "::1"])
def test_ping_through_helper_agrees_with_iputils(unpriv_user: priv.User, gpi_ns: priv.Netns,
                                                 helper_env: dict[str, str],
                                                 target: str) -> None:
    code, out, err = _cli(unpriv_user, gpi_ns, helper_env, "-c", "3", "-i", "0.2", target)
    assert code == 0, out + err
    witness = gpi_ns.exec(["ping", "-c", "3", "-i", "0.2", target], check=False)
    assert witness.returncode == 0, witness.stdout + witness.stderr
    assert _stats(out) == _stats(witness.stdout) == (3, 3, 0.0)
    replies = [line for line in out.splitlines() if " bytes from " in line]
    assert [re.search(r"icmp_seq=(\d+)", r)[1] for r in replies] == ["1", "2", "3"]  # type: ignore[index]
    assert all(f"from {target}:" in r for r in replies), out
    rtt = RTT.search(out)
    assert rtt, out
    low, avg, high, _ = map(float, rtt.groups())
    assert 0 < low <= avg <= high < 1000


@pytest.mark.parametrize("target", ["127.0.0.1", "::1"])
def test_ctrl_c_prints_the_statistics_so_far_like_iputils(
        unpriv_user: priv.User, gpi_ns: priv.Netns, helper_env: dict[str, str],
        target: str) -> None:
    proc = priv.popen_argv(unpriv_user, [priv.VENV_PYTHON, "-m", "gprocket.cli", "ping",
                                         "-c", "1000", "-i", "0.05", target],
                           netns=gpi_ns, env=helper_env)
    try:
        assert proc.stdout is not None
        lines: list[str] = []
        while sum(" bytes from " in line for line in lines) < 3:
            line = proc.stdout.readline()
            assert line, "".join(lines) + proc.communicate()[1]
            lines.append(line)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    out = "".join(lines) + out
    assert proc.returncode == 0, out + err
    sent, received, _ = _stats(out)
    assert 3 <= received <= sent < 1000
    assert sent - received <= 1  # at most the request in flight when interrupted
    assert sum(" bytes from " in line for line in out.splitlines()) == received
    assert RTT.search(out), out


def test_library_uses_raw_socket_from_helper_when_datagram_is_closed(
        unpriv_user: priv.User, gpi_ns: priv.Netns, helper_env: dict[str, str]) -> None:
    result = priv.run_json(unpriv_user, """
import json, gevent
from gprocket import icmp
ticks = []
def ticker():
    while True:
        ticks.append(1)
        gevent.sleep(0.01)
t = gevent.spawn(ticker)
out = []
for target in ("127.0.0.1", "::1"):
    h = icmp.ping(target, count=3, interval=0.2, timeout=1)
    out.append([h.transport, h.rung, h.sent, h.received, h.duplicates, len(h.errors),
                [r.seq for r in h.replies], [r.ttl for r in h.replies],
                [r.size for r in h.replies]])
t.kill()
print(json.dumps({"hosts": out, "ticks": len(ticks)}))
""", netns=gpi_ns, env=helper_env)
    for transport, rung, sent, received, dups, errors, seqs, ttls, sizes in result["hosts"]:
        assert transport == "raw"
        assert rung in ("broker", "helper")
        assert (sent, received, dups, errors) == (3, 3, 0, 0)
        assert seqs == [1, 2, 3]
        assert ttls == [64, 64, 64]
        assert sizes == [64, 64, 64]
    # The ticker greenlet kept running while both pings waited (0.8 s of waiting
    # at 10 ms a tick would be ~80 ticks; a blocked hub would give 1).
    assert result["ticks"] > 10


def test_datagram_socket_when_group_range_open_and_no_helper_runs(
        unpriv_user: priv.User, gpi_ns: priv.Netns, helper_env: dict[str, str]) -> None:
    gpi_ns.sysctl("net.ipv4.ping_group_range", OPEN_RANGE)
    result = priv.run_json(unpriv_user, """
import json, os
from gprocket import icmp
out = []
for target in ("127.0.0.1", "::1"):
    h = icmp.ping(target, count=2, interval=0.1, timeout=1)
    out.append([h.transport, h.rung, h.received])
children = open(f"/proc/{os.getpid()}/task/{os.getpid()}/children").read().split()
print(json.dumps({"hosts": out, "children": children}))
""", netns=gpi_ns, env=helper_env)
    assert result["hosts"] == [["datagram", "plain", 2], ["datagram", "plain", 2]]
    assert result["children"] == []


@pytest.mark.parametrize("group_range", ["1 0", OPEN_RANGE], ids=["raw", "datagram"])
def test_echo_ignored_gives_full_loss_and_exit_1(unpriv_user: priv.User, gpi_ns: priv.Netns,
                                                 helper_env: dict[str, str],
                                                 group_range: str) -> None:
    gpi_ns.sysctl("net.ipv4.ping_group_range", group_range)
    gpi_ns.sysctl("net.ipv4.icmp_echo_ignore_all", "1")
    gpi_ns.sysctl("net.ipv6.icmp.echo_ignore_all", "1")
    for target in ("127.0.0.1", "::1"):
        code, out, err = _cli(unpriv_user, gpi_ns, helper_env, "-c", "2", "-i", "0.1",
                              "-W", "0.3", target)
        assert code == 1, out + err
        assert _stats(out) == (2, 0, 100.0)
        assert "bytes from" not in out
        witness = gpi_ns.exec(["ping", "-c", "2", "-i", "0.1", "-W", "0.3", target],
                              check=False)
        assert witness.returncode == 1
        assert _stats(witness.stdout) == (2, 0, 100.0)


def test_raw_socket_sees_its_own_requests_and_counts_none(
        unpriv_user: priv.User, gpi_ns: priv.Netns, helper_env: dict[str, str],
        engine: str) -> None:
    result = priv.run_json(unpriv_user, """
import json, socket
from gprocket.icmp._fast import choose_engine
from gprocket.icmp._socket import open_icmp_socket
from gprocket.icmp._state import Options, State
out = {}
for filtered in (False, True):
    isock = open_icmp_socket(socket.AF_INET, kind="raw", kernel_filter=filtered)
    done = []
    state = State(0, "127.0.0.1", "127.0.0.1", ("127.0.0.1", 0), 3)
    engine = choose_engine(isock, Options(count=3, interval=0.1, timeout=1, size=56),
                           done.append, [state])
    engine.run([state])
    isock.close()
    c = engine.counters
    out["filtered" if filtered else "unfiltered"] = [
        isock.kind, state.sent, len(state.replies), state.duplicates, c.own_requests,
        c.mismatched, len(done), type(engine).__name__]
print(json.dumps(out))
""", netns=gpi_ns, env=helper_env)
    for case, (kind, sent, received, dups, own, mismatched, done, used) in result.items():
        assert kind == "raw"
        assert used == {"c": "_FastEngine", "python": "Engine"}[engine]
        assert (sent, received, dups, done) == (3, 3, 0, 1)
        assert mismatched == 0
        if case == "unfiltered":
            assert own >= 3  # every request came back to the raw socket, none was counted
        else:
            assert own == 0  # ICMP_FILTER: the kernel keeps echo requests away


MULTIPING = """
import json, ipaddress, gevent
from gprocket import icmp
if {v6}:
    targets = [str(ipaddress.IPv6Address("2001:db8::") + i) for i in range(1, 10001)]
else:
    targets = [str(ipaddress.IPv4Address("127.0.0.0") + i) for i in range(1, 10001)]
ticks = []
def ticker():
    while True:
        ticks.append(1)
        gevent.sleep(0)
t = gevent.spawn(ticker)
seen = []
for host in icmp.multiping_iter(targets, timeout=2):
    seen.append((host.address, host.sent, host.received, host.duplicates, host.transport))
during = len(ticks)
hosts = icmp.multiping(targets, timeout=2)
t.kill()
alive = sum(1 for s in seen if s[2] == 1)
print(json.dumps({{"n": len(seen), "distinct": len({{s[0] for s in seen}}), "alive": alive,
                  "ticks": [during, len(ticks) - during],
                  "list": [len(hosts), sum(h.received for h in hosts),
                           [h.address for h in hosts] == targets],
                  "sent": sum(s[1] for s in seen), "dups": sum(s[3] for s in seen),
                  "transports": sorted({{s[4] for s in seen}}),
                  "all": sorted(s[0] for s in seen) == sorted(targets)}}))
"""


@pytest.mark.parametrize("v6", [False, True], ids=["ipv4", "ipv6"])
@pytest.mark.parametrize("group_range", ["1 0", OPEN_RANGE], ids=["raw", "datagram"])
def test_multiping_10000_targets_all_alive(unpriv_user: priv.User, gpi_ns: priv.Netns,
                                          helper_env: dict[str, str], v6: bool,
                                          group_range: str) -> None:
    gpi_ns.sysctl("net.ipv4.ping_group_range", group_range)
    result = priv.run_json(unpriv_user, MULTIPING.format(v6=v6), netns=gpi_ns,
                           env=helper_env, timeout=120)
    assert result["n"] == result["distinct"] == 10000
    assert result["all"]
    assert result["sent"] == 10000
    assert result["alive"] == 10000
    assert result["dups"] == 0
    assert result["transports"] == (["raw"] if group_range == "1 0" else ["datagram"])
    # multiping(): the same, as a list in input order.
    assert result["list"] == [10000, 10000, True]
    # Other greenlets kept running through both sweeps: the engine never held the hub.
    assert min(result["ticks"]) > 3


FLOW = """
import json, socket
from gprocket.icmp._fast import choose_engine
from gprocket.icmp._socket import open_icmp_socket
from gprocket.icmp._state import Options, State
targets = [f"127.1.{i >> 8}.{i & 255}" for i in range(2000)]
out = {}
for paced in (True, False):
    isock = open_icmp_socket(socket.AF_INET, kind="raw", rcvbuf=16384)
    states = [State(i, t, t, (t, 0), 1) for i, t in enumerate(targets)]
    engine = choose_engine(isock, Options(count=1, interval=1, timeout=0.5, size=56),
                           lambda state: None, states)
    if not paced:
        engine.window = engine.batch = 10**6  # no flow control: send everything first
    engine.run(states)
    isock.close()
    out["paced" if paced else "unpaced"] = [engine.window, sum(len(s.replies) for s in states)]
print(json.dumps(out))
"""


def test_flow_control_keeps_every_reply_with_a_small_receive_buffer(
        unpriv_user: priv.User, gpi_ns: priv.Netns, helper_env: dict[str, str]) -> None:
    result = priv.run_json(unpriv_user, FLOW, netns=gpi_ns, env=helper_env)
    window, received = result["paced"]
    assert window < 2000
    assert received == 2000
    # The control: the same buffer without pacing overflows and replies are lost.
    assert result["unpaced"][1] < 2000


RING = """
import json, socket
from gprocket.icmp._fast import _FastEngine
from gprocket.icmp._socket import open_icmp_socket
from gprocket.icmp._state import Options, State
isock = open_icmp_socket(socket.AF_INET, kind="raw")
targets = ["127.0.0.1", "127.0.0.2", "127.0.0.3"]
states = [State(i, t, t, (t, 0), 5) for i, t in enumerate(targets)]
engine = _FastEngine(isock, Options(count=5, interval=0, timeout=0.2, size=56),
                     None)
engine.ring = 4  # 15 requests through 4 probe slots: sending waits for slots to free
engine.run(states)
isock.close()
print(json.dumps([[s.sent, [r.seq for r in s.replies], s.duplicates] for s in states]))
"""


def test_compiled_engine_reuses_its_probe_slots(unpriv_user: priv.User, gpi_ns: priv.Netns,
                                                installed_helper: Callable[..., Path]) -> None:
    env = {"GPROCKET_HELPER": str(installed_helper(policy=RAW_POLICY))}
    result = priv.run_json(unpriv_user, RING, netns=gpi_ns, env=env)
    # Every request answered, in send order (sequences go round the three targets).
    assert result == [[5, [1, 4, 7, 10, 13], 0], [5, [2, 5, 8, 11, 14], 0],
                      [5, [3, 6, 9, 12, 15], 0]]


FORGE = """
import json, socket, struct, gevent
from gevent.socket import wait_read
from gprocket.icmp import _wire as wire
from gprocket.icmp._fast import choose_engine
from gprocket.icmp._socket import open_icmp_socket
from gprocket.icmp._state import Options, State

isock = open_icmp_socket(socket.AF_INET, kind="raw")
state = State(0, "127.0.0.2", "127.0.0.2", ("127.0.0.2", 0), 2)
engine = choose_engine(isock, Options(count=2, interval=0.3, timeout=0.6, size=56),
                       lambda state: None, [state])
forger = open_icmp_socket(socket.AF_INET, kind="raw", source="127.0.0.2",
                          kernel_filter=False)  # it must see the engine's requests

def request(seq):
    # The forger's raw socket sees the engine's requests: learn their cookies there.
    while True:
        wait_read(forger.sock.fileno())
        try:
            data = forger.sock.recv(65535)
        except BlockingIOError:
            continue
        if data[20] == wire.ICMP_ECHO and data[16:20] == socket.inet_aton("127.0.0.2") \\
                and struct.unpack("!HH", data[24:28]) == (engine.ident, seq):
            return data[28:]

def reply(seq, payload, *, bad_sum=False):
    packet = bytearray(wire.build_echo(socket.AF_INET, engine.ident, seq, payload))
    packet[0] = wire.ICMP_ECHOREPLY
    packet[2:4] = b"\\0\\0"
    packet[2:4] = wire.checksum(bytes(packet)).to_bytes(2, "big")
    if bad_sum:
        packet[-1] ^= 0xFF
    forger.sock.sendto(bytes(packet), ("127.0.0.1", 0))

def forge():
    first = request(1)
    reply(1, first, bad_sum=True)                # corrupted
    reply(1, b"WRONGCKE" + first[8:])            # somebody else's cookie
    reply(1, first[:20])                         # truncated payload
    second = request(2)
    reply(2, second)                             # the real thing
    reply(2, second)                             # and a duplicate

g = gevent.spawn(forge)
gevent.sleep(0)
engine.run([state])
g.join()
c = engine.counters
print(json.dumps({"sent": state.sent, "seqs": [r.seq for r in state.replies],
                  "dups": state.duplicates, "rejected": c.reasons, "mismatched": c.mismatched}))
"""


def test_forged_corrupted_and_truncated_replies_never_count(
        unpriv_user: priv.User, gpi_ns: priv.Netns, helper_env: dict[str, str]) -> None:
    # The kernel answers nothing: every reply the engine sees is forged here.
    gpi_ns.sysctl("net.ipv4.icmp_echo_ignore_all", "1")
    result = priv.run_json(unpriv_user, FORGE, netns=gpi_ns, env=helper_env)
    assert result["sent"] == 2
    assert result["seqs"] == [2]
    assert result["dups"] == 1
    assert result["rejected"] == {"bad ICMP checksum": 1}
    assert result["mismatched"] == 2


OTHERS = """
import json, socket, subprocess
from gprocket.icmp._fast import choose_engine
from gprocket.icmp._socket import open_icmp_socket
from gprocket.icmp._state import Options, State
other = subprocess.Popen(["ping", "-q", "-i", "0.01", "127.0.0.1"], stdout=subprocess.DEVNULL)
isock = open_icmp_socket(socket.AF_INET, kind="raw")
state = State(0, "127.0.0.1", "127.0.0.1", ("127.0.0.1", 0), 4)
engine = choose_engine(isock, Options(count=4, interval=0.1, timeout=1, size=56),
                       lambda state: None, [state])
engine.run([state])
other.terminate()
other.wait()
print(json.dumps([state.sent, len(state.replies), state.duplicates, engine.counters.foreign]))
"""


def test_other_processes_replies_never_count(unpriv_user: priv.User, gpi_ns: priv.Netns,
                                             helper_env: dict[str, str]) -> None:
    # iputils ping (file capability cap_net_raw) runs beside us on the same target.
    gpi_ns.sysctl("net.ipv4.ping_group_range", OPEN_RANGE)
    sent, received, dups, foreign = priv.run_json(unpriv_user, OTHERS, netns=gpi_ns,
                                                  env=helper_env)
    assert (sent, received, dups) == (4, 4, 0)
    assert foreign > 0  # iputils' replies reached our raw socket and were refused


def test_many_from_file_like_fping(unpriv_user: priv.User, gpi_ns: priv.Netns,
                                   helper_env: dict[str, str]) -> None:
    # 192.0.2.1 has no route in the namespace: sendto fails, the host is unreachable.
    text = "127.0.0.1\n::1\n# a comment\n127.0.0.9\n2001:db8::7\n192.0.2.1\n"
    code, out, err = _cli(unpriv_user, gpi_ns, helper_env, "--many", "-t", "500", "-f", "-",
                          stdin=text)
    assert code == 1, out + err
    # Two families answer at once: the "alive" lines may come in either order.
    assert sorted(out.splitlines()) == ["127.0.0.1 is alive", "127.0.0.9 is alive",
                                        "192.0.2.1 is unreachable", "2001:db8::7 is alive",
                                        "::1 is alive"]
    witness = priv.run_argv(unpriv_user, ["fping", "-t", "500", "-f", "-"], netns=gpi_ns,
                            input=text)
    assert sorted(witness.stdout.splitlines()) == sorted(out.splitlines())
    assert (witness.returncode, witness.stderr) == (code, err)


def test_no_route_is_an_error_like_iputils(unpriv_user: priv.User, gpi_ns: priv.Netns,
                                           helper_env: dict[str, str]) -> None:
    code, out, err = _cli(unpriv_user, gpi_ns, helper_env, "-c", "2", "-i", "0.1",
                          "192.0.2.1")
    assert code == 2, out + err
    assert "Network is unreachable" in err
    witness = gpi_ns.exec(["ping", "-c", "2", "-i", "0.1", "192.0.2.1"], check=False)
    assert witness.returncode == 2
    assert "Network is unreachable" in witness.stderr


def test_setuid_helper_serves_ping_too(unpriv_user: priv.User, gpi_ns: priv.Netns,
                                       installed_helper: Callable[..., Path]) -> None:
    env = {"GPROCKET_HELPER": str(installed_helper(mode="setuid", policy=RAW_POLICY))}
    code, out, err = _cli(unpriv_user, gpi_ns, env, "-c", "2", "-i", "0.1", "::1")
    assert code == 0, out + err
    assert _stats(out) == (2, 2, 0.0)


def test_other_user_without_the_helper_group_gets_a_clear_error(
        other_user: priv.User, gpi_ns: priv.Netns, helper_env: dict[str, str]) -> None:
    # Not in group "gprocket": cannot run the helper, and ping_group_range is closed.
    code, out, err = _cli(other_user, gpi_ns, helper_env, "-c", "1", "127.0.0.1")
    assert code == 2, out + err
    # Every rung is explained, the datagram socket first, and both fixes are named.
    assert "datagram: ICMP datagram socket refused: net.ipv4.ping_group_range is '1 0'" in err
    assert "broker:" in err
    assert "fix:" in err
    assert "sysctl -w net.ipv4.ping_group_range=" in err


ON_SEND = """
import json, socket
from gprocket.icmp._fast import choose_engine
from gprocket.icmp._plan import make_job, prepare
sends, replies = [], []
job = make_job(3, 0.05, 0.5, 56, None, None, None, None, "auto", None, None,
               lambda name, reply, dup: replies.append((name, reply.seq)), None,
               on_send=sends.append)
for plan, isock in prepare(["127.0.0.1", "::1", "192.0.2.1"], job):
    try:
        choose_engine(isock, job.options, None, plan.states).run(plan.states)
    finally:
        isock.close()
print(json.dumps({"sends": sorted(sends), "replies": len(replies)}))
"""


def test_engines_report_every_request_sent(unpriv_user: priv.User, gpi_ns: priv.Netns,
                                           helper_env: dict[str, str]) -> None:
    # iputils' "time" ends at the last request: the CLI learns of each from on_send,
    # answered, unanswered or refused by the routing table (192.0.2.1: no route).
    result = priv.run_json(unpriv_user, ON_SEND, netns=gpi_ns, env=helper_env)
    assert result["sends"] == ["127.0.0.1"] * 3 + ["192.0.2.1"] * 3 + ["::1"] * 3
    assert result["replies"] == 6
